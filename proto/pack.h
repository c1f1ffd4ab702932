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
 * A sealed store's packs (docs/SECURITY.md, "Encryption at rest in keyed
 * stores") seal each frame (ciphertext || tag[16], the entry's stored
 * length covering both) and the index and trailer together:
 *
 *   sealed pack := chunk data || sealed(index || trailer) || tag[16] || footer
 *   footer      := magic "SSPACK02" | sealed_len u64 (index, trailer, tag)
 *
 * Their entries follow the rules above with SS_PACK_SEALED: raw chunks
 * share a sealed frame as zstd ones do (same offset and stored length,
 * frame_off their place in it), and every frame is longer than its tag.
 *
 * The store-level index object (`index/<id>`) concatenates pack records:
 *   index_obj := magic "SSINDX01" | npacks u32 | reserved u32 |
 *                npacks x (pack_id[16] | pack_size u64 | count u32 |
 *                          reserved u32 | count x entry) |
 *                checksum u64 (XXH3-64 of everything before it)
 * A sealed store's (engine/core/crypt.h, ss_sealed_index_wrap) lists its
 * packs in the clear, for gc, and seals the rest:
 *   sealed_obj := magic "SSINDX02" | object id[16] | npacks u32 |
 *                 reserved u32 | npacks x pack_id[16] |
 *                 sealed(index_obj with SS_PACK_SEALED entries) || tag[16]
 */
#ifndef SS_PACK_H
#define SS_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SS_PACK_ENTRY_SIZE 32u
#define SS_PACK_TRAILER_SIZE 32u
#define SS_PACK_FOOTER_SIZE 16u
#define SS_PACK_SEAL_TAG 16u
/* Flags of the parsers below: the entries of a sealed store's pack. */
#define SS_PACK_SEALED 1u
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
 * followed by the trailer): checksum, offset order, bounds, codecs
 * (flags: SS_PACK_SEALED for a sealed pack's, once opened). On success
 * *out is a malloc'd array of count entries. */
int ss_pack_parse_index(const uint8_t *index, uint32_t count, uint64_t index_offset,
			const uint8_t *trailer, unsigned flags, struct ss_pack_entry **out,
			struct ss_err *err);

/* The bytes a pack of count chunks spends after its chunk data: index and
 * trailer, and with SS_PACK_SEALED the tag and footer. */
uint64_t ss_pack_tail_size(uint32_t count, unsigned flags);
/* A sealed pack's footer (SS_PACK_FOOTER_SIZE bytes) for a sealed index of
 * sealed_len bytes (index, trailer and tag). */
void ss_pack_write_footer(uint8_t *out, uint64_t sealed_len);
/* Parse the footer of a sealed pack of pack_size bytes: *count entries,
 * whose sealed index starts at *index_offset (the end of the chunk data)
 * and ends at the footer. 0 or -EBADMSG with a message. */
int ss_pack_parse_footer(const uint8_t *footer, uint64_t pack_size, uint32_t *count,
			 uint64_t *index_offset, struct ss_err *err);

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

/* Encode an index object (flags: SS_PACK_SEALED when it lists a sealed
 * store's packs; the object is then sealed whole, engine/core/crypt.h).
 * *out malloc'd. Returns 0 or -errno. */
int ss_index_encode(const struct ss_index_pack *packs, uint32_t npacks, unsigned flags,
		    uint8_t **out, size_t *outlen);
/* Decode an index object; every field bounded and checked. *out is a
 * malloc'd array (free with ss_index_free). Returns 0 or -EBADMSG. */
int ss_index_decode(const uint8_t *buf, size_t len, unsigned flags, struct ss_index_pack **out,
		    uint32_t *npacks, struct ss_err *err);
void ss_index_free(struct ss_index_pack *packs, uint32_t npacks);

#endif
