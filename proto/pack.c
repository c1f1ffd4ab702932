/* pack — pack index/trailer and store index objects (see pack.h).
 *
 * Every parser here reads untrusted bytes: each length is checked against
 * what is left of the buffer (in 64-bit arithmetic) before it is used, and
 * allocation sizes are bounded by the input length.
 */
#include "pack.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xxh.h"

#define PACK_MAGIC "SSPACK01"
#define INDEX_MAGIC "SSINDX01"
#define SEALED_MAGIC "SSPACK02"
#define PACK_VERSION 1u
#define CODEC_ZSTD 1u                /* 0 = raw, 1 = zstd */
#define CODEC_MAX CODEC_ZSTD
#define INDEX_HDR_SIZE 16u           /* magic, npacks, reserved */
#define INDEX_REC_SIZE 32u           /* pack_id, pack_size, count, reserved */
#define INDEX_SUM_SIZE 8u

static void put_entry(uint8_t *p, const struct ss_pack_entry *e)
{
	memcpy(p, e->id, 16);
	ss_put_le32(p + 16, e->offset);
	ss_put_le32(p + 20, e->stored_len);
	ss_put_le32(p + 24, e->raw_len);
	p[28] = e->codec;
	p[29] = (uint8_t)e->frame_off;
	p[30] = (uint8_t)(e->frame_off >> 8);
	p[31] = (uint8_t)(e->frame_off >> 16);
}

/* Check one entry on its own, then against the previous entry (prev, NULL
 * for the first) and the data bounds. Each entry names the stored frame
 * [offset, offset + stored_len) holding its chunk: it either starts a new
 * frame at or after the end of the previous one, or continues the previous
 * entry's zstd frame (same offset and stored length, the chunk further on
 * in the decompressed frame without overlapping the previous chunk).
 * `what` names the table for messages ("pack index", "index object pack 3"). */
static int check_entry(const struct ss_pack_entry *e, const struct ss_pack_entry *prev,
		       uint32_t i, uint32_t count, uint64_t data_end, unsigned flags,
		       const char *what, struct ss_err *err)
{
	bool sealed = flags & SS_PACK_SEALED;
	if (e->codec > CODEC_MAX)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": unknown codec %u (corrupt, or written by a newer snapstream)",
				  what, i, count, (unsigned)e->codec);
	if (e->raw_len == 0 || e->stored_len == 0)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": empty chunk (raw %" PRIu32 ", stored %" PRIu32 " bytes; corrupt)",
				  what, i, count, e->raw_len, e->stored_len);
	if (e->frame_off > SS_FRAME_MAX_LIMIT)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": frame offset %" PRIu32 " does not fit in 24 bits (corrupt)",
				  what, i, count, e->frame_off);
	if (sealed && e->stored_len <= SS_PACK_SEAL_TAG)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": sealed frame of %" PRIu32 " bytes cannot hold its %u-byte tag (corrupt)",
				  what, i, count, e->stored_len, SS_PACK_SEAL_TAG);
	/* A sealed store seals raw chunks a frame at a time too: they share
	 * the frame's offset and stored length, and lie inside it. */
	if (sealed && e->codec == 0 &&
	    (uint64_t)e->frame_off + e->raw_len > e->stored_len - SS_PACK_SEAL_TAG)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": uncompressed chunk [%" PRIu32 ", %" PRIu64 ") runs past its "
				  "sealed frame of %" PRIu32 " bytes (corrupt)",
				  what, i, count, e->frame_off, (uint64_t)e->frame_off + e->raw_len,
				  e->stored_len - SS_PACK_SEAL_TAG);
	if (!sealed && e->codec == 0 && e->stored_len != e->raw_len)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": uncompressed chunk stores %" PRIu32 " bytes for %" PRIu32 " (corrupt)",
				  what, i, count, e->stored_len, e->raw_len);
	if (!sealed && e->codec == 0 && e->frame_off != 0)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": uncompressed chunk has frame offset %" PRIu32
				  ", not 0 (only zstd frames hold several chunks; corrupt)",
				  what, i, count, e->frame_off);
	uint64_t fend = (uint64_t)e->frame_off + e->raw_len;
	if (fend > SS_FRAME_MAX_LIMIT)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": chunk occupies bytes [%" PRIu32 ", %" PRIu64
				  ") of its decompressed frame, past the frame limit of %u bytes (corrupt)",
				  what, i, count, e->frame_off, fend, SS_FRAME_MAX_LIMIT);
	uint64_t prev_end = prev ? (uint64_t)prev->offset + prev->stored_len : 0;
	if (prev && e->offset == prev->offset) {
		/* Continues the previous entry's frame. */
		if (sealed ? e->codec != prev->codec
			   : e->codec != CODEC_ZSTD || prev->codec != CODEC_ZSTD)
			return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
					  ": %s chunk shares the frame at offset %" PRIu32
					  " with the previous %s one (only zstd frames hold several chunks; corrupt)",
					  what, i, count, e->codec ? "compressed" : "uncompressed",
					  e->offset, prev->codec ? "compressed" : "uncompressed");
		if (e->stored_len != prev->stored_len)
			return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
					  ": continues the frame at offset %" PRIu32
					  " but gives its stored length as %" PRIu32 ", not %" PRIu32 " (corrupt)",
					  what, i, count, e->offset, e->stored_len, prev->stored_len);
		if (e->frame_off <= prev->frame_off)
			return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
					  ": frame offset %" PRIu32 " in the frame at offset %" PRIu32
					  " does not increase past the previous entry's %" PRIu32
					  " (entries out of order; corrupt)",
					  what, i, count, e->frame_off, e->offset, prev->frame_off);
		uint64_t pfend = (uint64_t)prev->frame_off + prev->raw_len;
		if (e->frame_off < pfend)
			return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
					  ": chunk at frame offset %" PRIu32 " in the frame at offset %" PRIu32
					  " overlaps the previous chunk of that frame, which ends at %" PRIu64
					  " (corrupt)", what, i, count, e->frame_off, e->offset, pfend);
	} else if (e->offset < prev_end) {
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": frame at offset %" PRIu32 " overlaps the previous one, which ends at %"
				  PRIu64 " (entries out of order or overlapping; corrupt)",
				  what, i, count, e->offset, prev_end);
	}
	uint64_t end = (uint64_t)e->offset + e->stored_len;
	if (end > data_end)
		return ss_err_set(err, -EBADMSG, "%s entry %" PRIu32 " of %" PRIu32
				  ": frame [%" PRIu32 ", %" PRIu64 ") runs past the chunk data, which ends at %"
				  PRIu64 " (corrupt)", what, i, count, e->offset, end, data_end);
	return 0;
}

/* Parse and check count entries at p (count * 32 bytes, already bounded). */
static int parse_entries(const uint8_t *p, uint32_t count, uint64_t data_end, unsigned flags,
			 struct ss_pack_entry *out, const char *what, struct ss_err *err)
{
	for (uint32_t i = 0; i < count; i++, p += SS_PACK_ENTRY_SIZE) {
		struct ss_pack_entry *e = &out[i];
		memcpy(e->id, p, 16);
		e->offset = ss_get_le32(p + 16);
		e->stored_len = ss_get_le32(p + 20);
		e->raw_len = ss_get_le32(p + 24);
		e->codec = p[28];
		e->frame_off = (uint32_t)p[29] | (uint32_t)p[30] << 8 | (uint32_t)p[31] << 16;
		int r = check_entry(e, i ? &out[i - 1] : NULL, i, count, data_end, flags, what, err);
		if (r)
			return r;
	}
	return 0;
}

size_t ss_pack_write_index(uint8_t *out, const struct ss_pack_entry *e, uint32_t n,
			   uint64_t index_offset)
{
	uint8_t *p = out;
	for (uint32_t i = 0; i < n; i++, p += SS_PACK_ENTRY_SIZE)
		put_entry(p, &e[i]);
	memcpy(p, PACK_MAGIC, 8);
	ss_put_le32(p + 8, PACK_VERSION);
	ss_put_le32(p + 12, n);
	ss_put_le64(p + 16, index_offset);
	/* The index and the first 24 trailer bytes are contiguous here. */
	size_t covered = (size_t)n * SS_PACK_ENTRY_SIZE + 24;
	ss_put_le64(p + 24, XXH3_64bits(out, covered));
	return (size_t)n * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE;
}

int ss_pack_parse_trailer(const uint8_t *trailer, uint64_t pack_size, uint32_t *count,
			  uint64_t *index_offset, struct ss_err *err)
{
	if (!trailer || !count || !index_offset)
		return ss_err_set(err, -EINVAL, "no pack trailer");
	if (pack_size < SS_PACK_TRAILER_SIZE)
		return ss_err_set(err, -EBADMSG,
				  "pack is %" PRIu64 " bytes, too short to hold a trailer (truncated)",
				  pack_size);
	if (pack_size > SS_PACK_MAX_SIZE)
		return ss_err_set(err, -EBADMSG,
				  "pack is %" PRIu64 " bytes, more than the %u MiB limit (corrupt)",
				  pack_size, SS_PACK_MAX_SIZE >> 20);
	if (memcmp(trailer, PACK_MAGIC, 8) != 0)
		return ss_err_set(err, -EBADMSG,
				  "pack trailer has no SSPACK01 magic (not a snapstream pack, or truncated)");
	uint32_t version = ss_get_le32(trailer + 8);
	if (version != PACK_VERSION)
		return ss_err_set(err, -EBADMSG,
				  "pack format version %" PRIu32 " is not supported (this snapstream reads version %u)",
				  version, PACK_VERSION);
	uint32_t n = ss_get_le32(trailer + 12);
	uint64_t off = ss_get_le64(trailer + 16);
	if (n > SS_PACK_MAX_ENTRIES)
		return ss_err_set(err, -EBADMSG,
				  "pack trailer claims %" PRIu32 " chunks, more than the limit of %u (corrupt)",
				  n, SS_PACK_MAX_ENTRIES);
	uint64_t tail = (uint64_t)n * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE;
	if (off > pack_size || pack_size - off != tail)
		return ss_err_set(err, -EBADMSG,
				  "pack trailer says the index of %" PRIu32 " entries starts at %" PRIu64
				  ", which does not fit a %" PRIu64 "-byte pack (corrupt or truncated)",
				  n, off, pack_size);
	*count = n;
	*index_offset = off;
	return 0;
}

uint64_t ss_pack_tail_size(uint32_t count, unsigned flags)
{
	uint64_t t = (uint64_t)count * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE;
	return flags & SS_PACK_SEALED ? t + SS_PACK_SEAL_TAG + SS_PACK_FOOTER_SIZE : t;
}

void ss_pack_write_footer(uint8_t *out, uint64_t sealed_len)
{
	memcpy(out, SEALED_MAGIC, 8);
	ss_put_le64(out + 8, sealed_len);
}

int ss_pack_parse_footer(const uint8_t *footer, uint64_t pack_size, uint32_t *count,
			 uint64_t *index_offset, struct ss_err *err)
{
	if (pack_size < SS_PACK_FOOTER_SIZE)
		return ss_err_set(err, -EBADMSG,
				  "pack is %" PRIu64 " bytes, too short to hold a footer (truncated)",
				  pack_size);
	if (pack_size > SS_PACK_MAX_SIZE)
		return ss_err_set(err, -EBADMSG,
				  "pack is %" PRIu64 " bytes, more than the %u MiB limit (corrupt)",
				  pack_size, SS_PACK_MAX_SIZE >> 20);
	if (memcmp(footer, SEALED_MAGIC, 8) != 0)
		return ss_err_set(err, -EBADMSG,
				  "pack has no SSPACK02 footer (not a sealed snapstream pack, or "
				  "truncated)");
	uint64_t sl = ss_get_le64(footer + 8);
	uint64_t plain = SS_PACK_TRAILER_SIZE + SS_PACK_SEAL_TAG;
	if (sl < plain || (sl - plain) % SS_PACK_ENTRY_SIZE ||
	    (sl - plain) / SS_PACK_ENTRY_SIZE > SS_PACK_MAX_ENTRIES ||
	    sl > pack_size - SS_PACK_FOOTER_SIZE)
		return ss_err_set(err, -EBADMSG,
				  "pack footer gives a sealed index of %" PRIu64
				  " bytes, impossible in a %" PRIu64 "-byte pack (corrupt or truncated)",
				  sl, pack_size);
	*count = (uint32_t)((sl - plain) / SS_PACK_ENTRY_SIZE);
	*index_offset = pack_size - SS_PACK_FOOTER_SIZE - sl;
	return 0;
}

int ss_pack_parse_index(const uint8_t *index, uint32_t count, uint64_t index_offset,
			const uint8_t *trailer, unsigned flags, struct ss_pack_entry **out,
			struct ss_err *err)
{
	if (!out || !trailer || (count && !index))
		return ss_err_set(err, -EINVAL, "no pack index");
	*out = NULL;
	if (count > SS_PACK_MAX_ENTRIES)
		return ss_err_set(err, -EBADMSG, "pack index of %" PRIu32 " entries is over the limit",
				  count);
	/* The trailer must be the one that described this index. */
	if (memcmp(trailer, PACK_MAGIC, 8) != 0 || ss_get_le32(trailer + 8) != PACK_VERSION ||
	    ss_get_le32(trailer + 12) != count || ss_get_le64(trailer + 16) != index_offset)
		return ss_err_set(err, -EBADMSG,
				  "pack trailer does not match its index (corrupt)");
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return ss_err_set(err, -ENOMEM, "out of memory checking a pack index");
	XXH3_64bits_reset(st);
	if (count)
		XXH3_64bits_update(st, index, (size_t)count * SS_PACK_ENTRY_SIZE);
	XXH3_64bits_update(st, trailer, 24);
	uint64_t sum = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	if (sum != ss_get_le64(trailer + 24))
		return ss_err_set(err, -EBADMSG, "pack index checksum mismatch (corrupted pack)");

	struct ss_pack_entry *e = calloc(count ? count : 1, sizeof(*e));
	if (!e)
		return ss_err_set(err, -ENOMEM, "out of memory reading a pack index");
	int r = parse_entries(index, count, index_offset, flags, e, "pack index", err);
	if (r) {
		free(e);
		return r;
	}
	*out = e;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Store index objects                                                 */

int ss_index_encode(const struct ss_index_pack *packs, uint32_t npacks, unsigned flags,
		    uint8_t **out, size_t *outlen)
{
	if (!out || !outlen || (npacks && !packs))
		return -EINVAL;
	*out = NULL;
	*outlen = 0;
	uint64_t total = INDEX_HDR_SIZE + INDEX_SUM_SIZE;
	for (uint32_t i = 0; i < npacks; i++) {
		const struct ss_index_pack *pk = &packs[i];
		if (pk->count > SS_PACK_MAX_ENTRIES || (pk->count && !pk->entries))
			return -EINVAL;
		uint64_t tail = ss_pack_tail_size(pk->count, flags);
		if (pk->pack_size > SS_PACK_MAX_SIZE || pk->pack_size < tail)
			return -EINVAL;
		/* Refuse to write what ss_index_decode would refuse. */
		for (uint32_t j = 0; j < pk->count; j++)
			if (check_entry(&pk->entries[j], j ? &pk->entries[j - 1] : NULL, j,
					pk->count, pk->pack_size - tail, flags, "", NULL))
				return -EINVAL;
		total += INDEX_REC_SIZE + (uint64_t)pk->count * SS_PACK_ENTRY_SIZE;
		if (total > SS_INDEX_MAX_SIZE)
			return -EFBIG;
	}
	uint8_t *buf = malloc((size_t)total);
	if (!buf)
		return -ENOMEM;
	uint8_t *p = buf;
	memcpy(p, INDEX_MAGIC, 8);
	ss_put_le32(p + 8, npacks);
	ss_put_le32(p + 12, 0);
	p += INDEX_HDR_SIZE;
	for (uint32_t i = 0; i < npacks; i++) {
		const struct ss_index_pack *pk = &packs[i];
		memcpy(p, pk->pack_id, 16);
		ss_put_le64(p + 16, pk->pack_size);
		ss_put_le32(p + 24, pk->count);
		ss_put_le32(p + 28, 0);
		p += INDEX_REC_SIZE;
		for (uint32_t j = 0; j < pk->count; j++, p += SS_PACK_ENTRY_SIZE)
			put_entry(p, &pk->entries[j]);
	}
	ss_put_le64(p, XXH3_64bits(buf, (size_t)(p - buf)));
	*out = buf;
	*outlen = (size_t)total;
	return 0;
}

int ss_index_decode(const uint8_t *buf, size_t len, unsigned flags, struct ss_index_pack **out,
		    uint32_t *npacks, struct ss_err *err)
{
	if (!out || !npacks || (len && !buf))
		return ss_err_set(err, -EINVAL, "no index object");
	*out = NULL;
	*npacks = 0;
	if (len > SS_INDEX_MAX_SIZE)
		return ss_err_set(err, -EBADMSG,
				  "index object is %zu bytes, more than the %u MiB limit (corrupt)",
				  len, SS_INDEX_MAX_SIZE >> 20);
	if (len < INDEX_HDR_SIZE + INDEX_SUM_SIZE)
		return ss_err_set(err, -EBADMSG,
				  "index object is %zu bytes, too short (truncated)", len);
	if (memcmp(buf, INDEX_MAGIC, 8) != 0)
		return ss_err_set(err, -EBADMSG,
				  "index object has no SSINDX01 magic (not a snapstream index, or corrupt)");
	size_t body = len - INDEX_SUM_SIZE;
	if (XXH3_64bits(buf, body) != ss_get_le64(buf + body))
		return ss_err_set(err, -EBADMSG,
				  "index object checksum mismatch (corrupted or truncated)");
	uint32_t n = ss_get_le32(buf + 8);
	if (ss_get_le32(buf + 12) != 0)
		return ss_err_set(err, -EBADMSG,
				  "index object header has non-zero reserved bytes (corrupt, or written by a newer snapstream)");
	uint64_t pos = INDEX_HDR_SIZE;
	/* Every pack record takes at least INDEX_REC_SIZE bytes: this bounds
	 * the allocation by the input size. */
	if ((uint64_t)n * INDEX_REC_SIZE > body - pos)
		return ss_err_set(err, -EBADMSG,
				  "index object claims %" PRIu32 " packs but has room for at most %" PRIu64
				  " (corrupt or truncated)", n, (body - pos) / INDEX_REC_SIZE);
	struct ss_index_pack *packs = calloc(n ? n : 1, sizeof(*packs));
	if (!packs)
		return ss_err_set(err, -ENOMEM, "out of memory reading an index object");
	int r = 0;
	char what[48];
	uint32_t done = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct ss_index_pack *pk = &packs[i];
		if (body - pos < INDEX_REC_SIZE) {
			r = ss_err_set(err, -EBADMSG, "index object pack %" PRIu32
				       " is truncated (corrupt)", i);
			break;
		}
		const uint8_t *p = buf + pos;
		memcpy(pk->pack_id, p, 16);
		pk->pack_size = ss_get_le64(p + 16);
		uint32_t count = ss_get_le32(p + 24);
		if (ss_get_le32(p + 28) != 0) {
			r = ss_err_set(err, -EBADMSG, "index object pack %" PRIu32
				       " has non-zero reserved bytes (corrupt)", i);
			break;
		}
		pos += INDEX_REC_SIZE;
		if (count > SS_PACK_MAX_ENTRIES ||
		    (uint64_t)count * SS_PACK_ENTRY_SIZE > body - pos) {
			r = ss_err_set(err, -EBADMSG, "index object pack %" PRIu32 " claims %" PRIu32
				       " chunks but only %" PRIu64 " bytes remain (corrupt or truncated)",
				       i, count, body - pos);
			break;
		}
		uint64_t tail = ss_pack_tail_size(count, flags);
		if (pk->pack_size > SS_PACK_MAX_SIZE || pk->pack_size < tail) {
			r = ss_err_set(err, -EBADMSG, "index object pack %" PRIu32 " has size %" PRIu64
				       ", impossible for %" PRIu32 " chunks (corrupt)",
				       i, pk->pack_size, count);
			break;
		}
		pk->entries = calloc(count ? count : 1, sizeof(*pk->entries));
		if (!pk->entries) {
			r = ss_err_set(err, -ENOMEM, "out of memory reading an index object");
			break;
		}
		done = i + 1;
		snprintf(what, sizeof(what), "index object pack %" PRIu32, i);
		r = parse_entries(buf + pos, count, pk->pack_size - tail, flags, pk->entries, what, err);
		if (r)
			break;
		pk->count = count;
		pos += (uint64_t)count * SS_PACK_ENTRY_SIZE;
	}
	if (!r && pos != body)
		r = ss_err_set(err, -EBADMSG,
			       "index object has %" PRIu64 " unexpected bytes after its last pack (corrupt)",
			       body - pos);
	if (r) {
		ss_index_free(packs, done);
		return r;
	}
	*out = packs;
	*npacks = n;
	return 0;
}

void ss_index_free(struct ss_index_pack *packs, uint32_t npacks)
{
	if (!packs)
		return;
	for (uint32_t i = 0; i < npacks; i++)
		free(packs[i].entries);
	free(packs);
}

bool ss_pack_entries_equal(const struct ss_pack_entry *a, const struct ss_pack_entry *b,
			   uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(a[i].id, b[i].id, 16) || a[i].offset != b[i].offset ||
		    a[i].stored_len != b[i].stored_len || a[i].raw_len != b[i].raw_len ||
		    a[i].codec != b[i].codec || a[i].frame_off != b[i].frame_off)
			return false;
	return true;
}
