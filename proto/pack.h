/* pack — the pack object format.
 *
 *   pack    := chunk data || index || trailer
 *   index   := count x entry
 *   entry   := id[16] | offset u32 | stored_len u32 | raw_len u32 |
 *              codec u8 | frame_off u24                           (32 bytes)
 *   trailer := magic "SSPACK01" | version u32 (1) | count u32 |
 *              index_offset u64 | checksum u64                     (32 bytes)
 *
 * All integers little-endian. checksum = XXH3-64 of index || the first 24
 * bytes of the trailer, so a pack describes itself and damage to its index
 * is detected. Each entry names the stored frame [offset, offset +
 * stored_len) that holds the chunk; a zstd frame may hold several
 * consecutive chunks, which then share offset and stored_len and differ in
 * frame_off (the chunk's offset in the decompressed frame). Entries are in
 * (offset, frame_off) order; distinct frames do not overlap and lie inside
 * [0, index_offset). Raw chunks have frame_off 0. Pack ids are random.
 *
 * The store-level index object (`index/<id>`) concatenates pack records:
 *   index_obj := magic "SSINDX01" | npacks u32 | reserved u32 |
 *                npacks x (pack_id[16] | pack_size u64 | count u32 |
 *                          reserved u32 | count x entry) |
 *                checksum u64 (XXH3-64 of everything before it)
 */
#ifndef SS_PACK_H
#define SS_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SS_PACK_ENTRY_SIZE 32u
#define SS_PACK_TRAILER_SIZE 32u
#define SS_PACK_MAX_SIZE (1u << 30)       /* refuse packs larger than this */
#define SS_PACK_MAX_ENTRIES (1u << 22)
#define SS_INDEX_MAX_SIZE (1u << 30)

struct ss_pack_entry {
	uint8_t id[16];
	uint32_t offset;
	uint32_t stored_len;
	uint32_t raw_len;
	uint8_t codec;
	uint32_t frame_off;   /* < 2^24 */
};

#define SS_FRAME_MAX_LIMIT ((1u << 24) - 1)

/* Write the index and trailer for n entries at out (room for
 * n * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE bytes). index_offset is the
 * length of the chunk data before it. Returns the bytes written. */
size_t ss_pack_write_index(uint8_t *out, const struct ss_pack_entry *e, uint32_t n,
			   uint64_t index_offset);

/* Parse a trailer (the last SS_PACK_TRAILER_SIZE bytes of a pack of
 * pack_size bytes). On success sets *count and *index_offset. The index
 * occupies [index_offset, pack_size - SS_PACK_TRAILER_SIZE) and must be
 * exactly count entries. Returns 0 or -EBADMSG with a message. */
int ss_pack_parse_trailer(const uint8_t *trailer, uint64_t pack_size, uint32_t *count,
			  uint64_t *index_offset, struct ss_err *err);

/* Parse and verify the index that starts at `index` (count entries,
 * followed by the trailer): checksum, offset order, bounds, codecs.
 * On success *out is a malloc'd array of count entries. */
int ss_pack_parse_index(const uint8_t *index, uint32_t count, uint64_t index_offset,
			const uint8_t *trailer, struct ss_pack_entry **out, struct ss_err *err);

/* One pack as listed in a store index object. */
struct ss_index_pack {
	uint8_t pack_id[16];
	uint64_t pack_size;
	uint32_t count;
	struct ss_pack_entry *entries;
};

/* Whether a[0..n) and b[0..n) describe the same chunks at the same
 * places, field by field. */
bool ss_pack_entries_equal(const struct ss_pack_entry *a, const struct ss_pack_entry *b,
			   uint32_t n);

/* Encode an index object. *out malloc'd. Returns 0 or -errno. */
int ss_index_encode(const struct ss_index_pack *packs, uint32_t npacks, uint8_t **out,
		    size_t *outlen);
/* Decode an index object; every field bounded and checked. *out is a
 * malloc'd array (free with ss_index_free). Returns 0 or -EBADMSG. */
int ss_index_decode(const uint8_t *buf, size_t len, struct ss_index_pack **out,
		    uint32_t *npacks, struct ss_err *err);
void ss_index_free(struct ss_index_pack *packs, uint32_t npacks);

#endif
