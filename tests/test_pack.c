/* test_pack — pack index/trailer and store index objects: round trips and
 * refusal of damaged or lying input. Exit 0 pass, 1 fail. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "pack.h"
#include "util.h"

#define TEST_SEED 0x2545f4914f6cdd1dull
#include "testutil.h"

/* n entries laid out back to back (with small gaps) from offset 0: raw
 * chunks, and zstd frames of 1..5 chunks (sharing offset and stored
 * length, at increasing frame offsets, sometimes with gaps in the frame);
 * returns the end of the chunk data. */
static uint64_t make_entries(struct ss_pack_entry *e, uint32_t n)
{
	uint64_t off = 0;
	for (uint32_t i = 0; i < n;) {
		uint8_t codec = (uint8_t)(rnd() % 2);
		uint32_t k = codec ? 1 + (uint32_t)(rnd() % 5) : 1;
		if (k > n - i)
			k = n - i;
		off += rnd() % 3; /* gaps are allowed */
		uint32_t foff = 0;
		for (uint32_t j = i; j < i + k; j++) {
			for (int b = 0; b < 16; b++)
				e[j].id[b] = (uint8_t)rnd();
			e[j].raw_len = 1000 + (uint32_t)(rnd() % 200000);
			e[j].codec = codec;
			e[j].offset = (uint32_t)off;
			e[j].frame_off = foff;
			foff += e[j].raw_len + (rnd() % 4 == 0 ? (uint32_t)(rnd() % 100) : 0);
		}
		uint32_t stored = codec ? 1 + (uint32_t)(rnd() % foff) : e[i].raw_len;
		for (uint32_t j = i; j < i + k; j++)
			e[j].stored_len = stored;
		off += stored;
		i += k;
	}
	return off + rnd() % 5;
}

/* An entry that continues the previous entry's frame (k >= 1), or one that
 * starts a frame (k >= 1), or a raw one; n if there is none. */
static uint32_t find_cont(const struct ss_pack_entry *e, uint32_t n)
{
	for (uint32_t k = 1; k < n; k++)
		if (e[k].offset == e[k - 1].offset)
			return k;
	return n;
}

static uint32_t find_start(const struct ss_pack_entry *e, uint32_t n)
{
	for (uint32_t k = 1; k < n; k++)
		if (e[k].offset != e[k - 1].offset)
			return k;
	return n;
}

static uint32_t find_raw(const struct ss_pack_entry *e, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++)
		if (e[k].codec == 0)
			return k;
	return n;
}

static uint32_t find_zstd(const struct ss_pack_entry *e, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++)
		if (e[k].codec == 1)
			return k;
	return n;
}

static void put_le24(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
}

/* A whole pack image: chunk bytes (random) || index || trailer. */
struct pack {
	uint8_t *buf;
	size_t len;
	uint64_t index_offset;
	uint32_t n;
	struct ss_pack_entry *e;
};

static void pack_build(struct pack *p, uint32_t n)
{
	p->n = n;
	p->e = calloc(n ? n : 1, sizeof(*p->e));
	REQUIRE(p->e, "oom");
	p->index_offset = make_entries(p->e, n);
	p->len = (size_t)p->index_offset + (size_t)n * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE;
	p->buf = malloc(p->len);
	REQUIRE(p->buf, "oom");
	for (size_t i = 0; i < p->index_offset; i++)
		p->buf[i] = (uint8_t)i;
	size_t w = ss_pack_write_index(p->buf + p->index_offset, p->e, n, p->index_offset);
	REQUIRE(w == (size_t)n * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE, "written %zu", w);
}

static void pack_free(struct pack *p)
{
	free(p->buf);
	free(p->e);
}

/* Parse a pack image the way a reader would: trailer, then index. */
static int parse_pack(const uint8_t *buf, size_t len, struct ss_pack_entry **out, uint32_t *count,
		      struct ss_err *err)
{
	*out = NULL;
	*count = 0;
	if (len < SS_PACK_TRAILER_SIZE)
		return ss_err_set(err, -EBADMSG, "short");
	const uint8_t *tr = buf + len - SS_PACK_TRAILER_SIZE;
	uint32_t n;
	uint64_t off;
	int r = ss_pack_parse_trailer(tr, len, &n, &off, err);
	if (r)
		return r;
	if (off > len || len - off < (uint64_t)n * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE) {
		CHECK(0, "trailer accepted an index that does not fit");
		return -EBADMSG;
	}
	r = ss_pack_parse_index(buf + off, n, off, tr, 0, out, err);
	if (!r)
		*count = n;
	return r;
}

/* Swap index entries i and j. */
static void swap_entries(uint8_t *index, uint32_t i, uint32_t j)
{
	uint8_t t[SS_PACK_ENTRY_SIZE];
	memcpy(t, index + (size_t)i * SS_PACK_ENTRY_SIZE, SS_PACK_ENTRY_SIZE);
	memcpy(index + (size_t)i * SS_PACK_ENTRY_SIZE, index + (size_t)j * SS_PACK_ENTRY_SIZE,
	       SS_PACK_ENTRY_SIZE);
	memcpy(index + (size_t)j * SS_PACK_ENTRY_SIZE, t, SS_PACK_ENTRY_SIZE);
}

/* Re-seal a damaged index so the checksum is right and the semantic
 * checks are what refuse it. */
static void reseal(uint8_t *index, uint32_t n)
{
	uint8_t *tr = index + (size_t)n * SS_PACK_ENTRY_SIZE;
	ss_put_le64(tr + 24, XXH3_64bits(index, (size_t)n * SS_PACK_ENTRY_SIZE + 24));
}

static void expect_pack_refused(const char *what, const uint8_t *buf, size_t len,
				const char *needle)
{
	struct ss_err err = { 0 };
	struct ss_pack_entry *e = NULL;
	uint32_t n = 0;
	int r = parse_pack(buf, len, &e, &n, &err);
	CHECK(r == -EBADMSG, "%s: got %d (%s)", what, r, err.msg);
	CHECK(e == NULL, "%s: output on failure", what);
	if (needle)
		CHECK(strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"", what, err.msg,
		      needle);
	printf("  refused %-30s %s\n", what, err.msg);
	free(e);
}

static void test_pack_round_trip(void)
{
	printf("pack round trip\n");
	uint32_t sizes[] = { 0, 1, 2, 17, 1000 };
	for (size_t s = 0; s < SS_ARRAY_SIZE(sizes); s++) {
		struct pack p;
		pack_build(&p, sizes[s]);
		struct ss_err err = { 0 };
		struct ss_pack_entry *e = NULL;
		uint32_t n = 0;
		int r = parse_pack(p.buf, p.len, &e, &n, &err);
		CHECK(r == 0, "%u entries: %s", sizes[s], err.msg);
		CHECK(n == p.n && e && ss_pack_entries_equal(e, p.e, n), "%u entries differ", sizes[s]);
		free(e);
		pack_free(&p);
	}
	/* The trailer layout is as documented. */
	struct pack p;
	pack_build(&p, 3);
	const uint8_t *tr = p.buf + p.len - SS_PACK_TRAILER_SIZE;
	CHECK(memcmp(tr, "SSPACK01", 8) == 0, "magic");
	CHECK(ss_get_le32(tr + 8) == 1 && ss_get_le32(tr + 12) == 3 &&
	      ss_get_le64(tr + 16) == p.index_offset, "trailer fields");
	const uint8_t *ent = p.buf + p.index_offset;
	CHECK(memcmp(ent, p.e[0].id, 16) == 0 && ss_get_le32(ent + 16) == p.e[0].offset &&
	      ss_get_le32(ent + 20) == p.e[0].stored_len && ss_get_le32(ent + 24) == p.e[0].raw_len &&
	      ent[28] == p.e[0].codec && !ent[29] && !ent[30] && !ent[31], "entry layout");
	pack_free(&p);

	/* frame_off is the 24-bit little-endian bytes 29..31; a frame of two
	 * chunks, the second one far into the frame, round-trips. */
	struct ss_pack_entry fe[3] = {
		{ .offset = 0, .stored_len = 100, .raw_len = 0x10000, .codec = 1, .frame_off = 0 },
		{ .offset = 0, .stored_len = 100, .raw_len = 5, .codec = 1, .frame_off = 0x123456 },
		{ .offset = 100, .stored_len = 7, .raw_len = 7, .codec = 0, .frame_off = 0 },
	};
	fe[0].id[0] = 1;
	fe[1].id[0] = 2;
	fe[2].id[0] = 3;
	uint8_t img[107 + 3 * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE];
	memset(img, 0xaa, 107);
	ss_pack_write_index(img + 107, fe, 3, 107);
	CHECK(img[107 + 32 + 29] == 0x56 && img[107 + 32 + 30] == 0x34 &&
	      img[107 + 32 + 31] == 0x12, "frame_off layout");
	struct ss_err err = { 0 };
	struct ss_pack_entry *e = NULL;
	uint32_t n = 0;
	int r = parse_pack(img, sizeof(img), &e, &n, &err);
	CHECK(r == 0 && n == 3 && ss_pack_entries_equal(e, fe, 3), "frame round trip: %s", err.msg);
	free(e);
}

static void test_pack_refusals(void)
{
	printf("pack refusals\n");
	struct pack p;
	pack_build(&p, 20);
	uint32_t kc = find_cont(p.e, p.n), ks = find_start(p.e, p.n);
	uint32_t kr = find_raw(p.e, p.n), kz = find_zstd(p.e, p.n);
	REQUIRE(kc < p.n && ks < p.n && kr < p.n && kz < p.n,
		"test pack lacks a frame continuation, a frame start, a raw or a zstd entry");
	size_t ilen = (size_t)p.n * SS_PACK_ENTRY_SIZE;
	uint8_t *b = malloc(p.len);
	REQUIRE(b, "oom");
	uint8_t *idx = b + p.index_offset;
	uint8_t *tr = b + p.len - SS_PACK_TRAILER_SIZE;
	(void)ilen;

#define FRESH() memcpy(b, p.buf, p.len)
	FRESH();
	memcpy(tr, "SSPACK02", 8);
	expect_pack_refused("bad magic", b, p.len, "magic");
	FRESH();
	ss_put_le32(tr + 8, 2);
	expect_pack_refused("version 2", b, p.len, "version 2");
	FRESH();
	ss_put_le32(tr + 8, 0);
	expect_pack_refused("version 0", b, p.len, "version");
	FRESH();
	ss_put_le32(tr + 12, p.n + 1);
	expect_pack_refused("count + 1", b, p.len, "does not fit");
	FRESH();
	ss_put_le32(tr + 12, p.n - 1);
	expect_pack_refused("count - 1", b, p.len, "does not fit");
	FRESH();
	ss_put_le32(tr + 12, UINT32_MAX);
	expect_pack_refused("count 2^32-1", b, p.len, "limit");
	FRESH();
	ss_put_le64(tr + 16, p.index_offset + 1);
	expect_pack_refused("index_offset + 1", b, p.len, "does not fit");
	FRESH();
	ss_put_le64(tr + 16, p.index_offset - 32);
	expect_pack_refused("index_offset - 32", b, p.len, "does not fit");
	FRESH();
	ss_put_le64(tr + 16, UINT64_MAX - 8);
	expect_pack_refused("index_offset 2^64-9", b, p.len, "does not fit");
	/* count and offset both shifted consistently: the trailer parses, but
	 * the checksum (which covers them) does not match. */
	FRESH();
	ss_put_le32(tr + 12, p.n - 1);
	ss_put_le64(tr + 16, p.index_offset + 32);
	expect_pack_refused("count/offset shifted", b, p.len, "checksum");
	FRESH();
	idx[5] ^= 1;
	expect_pack_refused("flipped id byte", b, p.len, "checksum");
	FRESH();
	tr[24] ^= 0x80;
	expect_pack_refused("flipped checksum", b, p.len, "checksum");
	FRESH();
	/* Truncated packs: the trailer is read from the (wrong) end. */
	expect_pack_refused("truncated by 1", b, p.len - 1, NULL);
	expect_pack_refused("truncated to trailer", b + p.len - 32, 32, NULL);
	expect_pack_refused("truncated to 31 bytes", b, 31, NULL);
	{
		struct ss_err err = { 0 };
		uint32_t n;
		uint64_t off;
		CHECK(ss_pack_parse_trailer(tr, 20, &n, &off, &err) == -EBADMSG, "pack_size 20");
		ss_err_clear(&err);
		CHECK(ss_pack_parse_trailer(tr, (uint64_t)SS_PACK_MAX_SIZE + 1, &n, &off, &err) ==
		      -EBADMSG, "pack_size over limit");
		printf("  refused %-30s %s\n", "pack over 1 GiB", err.msg);
		ss_err_clear(&err);
		CHECK(ss_pack_parse_trailer(tr, UINT64_MAX, &n, &off, &err) == -EBADMSG,
		      "pack_size 2^64-1");
	}

	/* Semantic damage with a valid checksum. */
	FRESH();
	ss_put_le32(idx + 1 * 32 + 16, p.e[0].offset + 1); /* entry 1 inside entry 0 */
	reseal(idx, p.n);
	expect_pack_refused("overlapping entries", b, p.len, "overlaps");
	FRESH();
	swap_entries(idx, ks - 1, ks);   /* before and at a frame start: out of order */
	reseal(idx, p.n);
	expect_pack_refused("entries out of order", b, p.len, "overlaps");
	FRESH();
	ss_put_le32(idx + 19 * 32 + 16, (uint32_t)p.index_offset); /* last entry past data */
	reseal(idx, p.n);
	expect_pack_refused("entry past the data", b, p.len, "runs past");
	FRESH();
	ss_put_le32(idx + 19 * 32 + 16, UINT32_MAX - 2); /* offset + len overflows u32 */
	reseal(idx, p.n);
	expect_pack_refused("entry offset near 2^32", b, p.len, "runs past");
	FRESH();
	idx[4 * 32 + 28] = 7;
	reseal(idx, p.n);
	expect_pack_refused("unknown codec", b, p.len, "codec");
	FRESH();
	put_le24(idx + kr * 32 + 29, 1);
	reseal(idx, p.n);
	expect_pack_refused("raw entry with frame_off 1", b, p.len, "frame offset 1, not 0");
	FRESH();
	put_le24(idx + kz * 32 + 29, SS_FRAME_MAX_LIMIT - p.e[kz].raw_len + 1);
	reseal(idx, p.n);
	expect_pack_refused("frame_off + raw_len > limit", b, p.len, "past the frame limit");
	FRESH();
	put_le24(idx + kz * 32 + 29, SS_FRAME_MAX_LIMIT);
	reseal(idx, p.n);
	expect_pack_refused("frame_off 2^24-1", b, p.len, "past the frame limit");
	FRESH();
	ss_put_le32(idx + kc * 32 + 20, p.e[kc].stored_len + 1);
	reseal(idx, p.n);
	expect_pack_refused("frame with two stored lengths", b, p.len, "stored length");
	FRESH();
	put_le24(idx + kc * 32 + 29, p.e[kc - 1].frame_off);
	reseal(idx, p.n);
	expect_pack_refused("frame_off repeated", b, p.len, "does not increase");
	FRESH();
	swap_entries(idx, kc - 1, kc);   /* two chunks of one frame: frame offsets decrease */
	reseal(idx, p.n);
	expect_pack_refused("frame_off decreasing", b, p.len, "does not increase");
	FRESH();
	put_le24(idx + kc * 32 + 29, p.e[kc - 1].frame_off + p.e[kc - 1].raw_len - 1);
	reseal(idx, p.n);
	expect_pack_refused("chunks overlap in a frame", b, p.len, "previous chunk of that frame");
	FRESH();
	/* A raw entry that continues a zstd frame: consistent on its own
	 * (stored == raw, frame_off 0, same offset and stored length). */
	idx[kc * 32 + 28] = 0;
	ss_put_le32(idx + kc * 32 + 24, p.e[kc].stored_len);
	put_le24(idx + kc * 32 + 29, 0);
	reseal(idx, p.n);
	expect_pack_refused("raw entry continuing a frame", b, p.len, "only zstd frames");
	FRESH();
	{
		/* A zstd entry at the offset of the raw one before it, past its
		 * bytes: consistent on its own. */
		uint32_t r0 = find_raw(p.e, p.n - 1), a = r0 + 1;
		REQUIRE(a < p.n, "no entry after a raw one");
		ss_put_le32(idx + a * 32 + 16, p.e[r0].offset);
		ss_put_le32(idx + a * 32 + 20, p.e[r0].stored_len);
		idx[a * 32 + 28] = 1;
		put_le24(idx + a * 32 + 29, p.e[r0].raw_len);
		reseal(idx, p.n);
		expect_pack_refused("zstd entry continuing a raw one", b, p.len, "only zstd frames");
	}
	FRESH();
	ss_put_le32(idx + 4 * 32 + 24, 0);
	reseal(idx, p.n);
	expect_pack_refused("raw_len 0", b, p.len, "empty");
	FRESH();
	ss_put_le32(idx + 4 * 32 + 20, 0);
	reseal(idx, p.n);
	expect_pack_refused("stored_len 0", b, p.len, "empty");
	FRESH();
	{
		uint32_t k = 0;
		while (k < p.n && p.e[k].codec != 0)
			k++;
		REQUIRE(k < p.n, "no raw entry");
		ss_put_le32(idx + k * 32 + 24, p.e[k].raw_len + 1);
		reseal(idx, p.n);
		expect_pack_refused("raw codec, stored != raw", b, p.len, "uncompressed");
	}
	/* A trailer that does not describe the index it is given. */
	FRESH();
	{
		struct ss_err err = { 0 };
		struct ss_pack_entry *e = NULL;
		int r = ss_pack_parse_index(idx + 32, p.n - 1, p.index_offset + 32, tr, 0, &e, &err);
		CHECK(r == -EBADMSG && !e, "mismatched trailer accepted: %d", r);
		printf("  refused %-30s %s\n", "trailer/index mismatch", err.msg);
		free(e);
	}
#undef FRESH

	/* Random damage never crashes; damage to index or trailer is refused. */
	size_t refused = 0, ok = 0;
	for (int it = 0; it < 5000; it++) {
		memcpy(b, p.buf, p.len);
		int flips = 1 + (int)(rnd() % 3);
		for (int k = 0; k < flips; k++) {
			size_t pos = p.index_offset + rnd() % (p.len - p.index_offset);
			if (it % 4 == 0)
				pos = rnd() % p.len; /* sometimes the chunk data too */
			b[pos] ^= (uint8_t)(1u << (rnd() % 8));
		}
		/* (Two flips of one bit cancel: compare, don't count.) */
		bool in_index = memcmp(b + p.index_offset, p.buf + p.index_offset,
				       p.len - p.index_offset) != 0;
		struct ss_err err = { 0 };
		struct ss_pack_entry *e = NULL;
		uint32_t n = 0;
		int r = parse_pack(b, p.len, &e, &n, &err);
		if (r == 0)
			ok++;
		else
			refused++;
		if (in_index)
			CHECK(r != 0, "damaged index accepted (iteration %d)", it);
		free(e);
	}
	printf("  5000 damaged packs: %zu refused, %zu accepted (damage in chunk data only)\n",
	       refused, ok);
	free(b);
	pack_free(&p);
}

/* ------------------------------------------------------------------ */

static struct ss_index_pack *make_index(uint32_t npacks)
{
	struct ss_index_pack *ip = calloc(npacks ? npacks : 1, sizeof(*ip));
	REQUIRE(ip, "oom");
	for (uint32_t i = 0; i < npacks; i++) {
		for (int k = 0; k < 16; k++)
			ip[i].pack_id[k] = (uint8_t)rnd();
		ip[i].count = i == 1 ? 0 : 1 + (uint32_t)(rnd() % 40);
		ip[i].entries = calloc(ip[i].count ? ip[i].count : 1, sizeof(*ip[i].entries));
		REQUIRE(ip[i].entries, "oom");
		uint64_t end = make_entries(ip[i].entries, ip[i].count);
		ip[i].pack_size = end + (uint64_t)ip[i].count * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE;
	}
	return ip;
}

static void free_index_in(struct ss_index_pack *ip, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		free(ip[i].entries);
	free(ip);
}

static void expect_index_refused(const char *what, const uint8_t *buf, size_t len,
				 const char *needle)
{
	struct ss_err err = { 0 };
	struct ss_index_pack *out = NULL;
	uint32_t n = 12345;
	int r = ss_index_decode(buf, len, 0, &out, &n, &err);
	CHECK(r == -EBADMSG, "%s: got %d (%s)", what, r, err.msg);
	CHECK(out == NULL && n == 0, "%s: output on failure", what);
	if (needle)
		CHECK(strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"", what, err.msg,
		      needle);
	if (what[0] != '-')
		printf("  refused %-30s %s\n", what, err.msg);
	ss_index_free(out, n);
}

static void reseal_obj(uint8_t *b, size_t len)
{
	ss_put_le64(b + len - 8, XXH3_64bits(b, len - 8));
}

static void test_index_object(void)
{
	printf("store index object\n");
	uint32_t np = 6;
	struct ss_index_pack *ip = make_index(np);
	uint8_t *b = NULL;
	size_t len = 0;
	REQUIRE(ss_index_encode(ip, np, 0, &b, &len) == 0, "encode");
	struct ss_err err = { 0 };
	struct ss_index_pack *out = NULL;
	uint32_t n = 0;
	int r = ss_index_decode(b, len, 0, &out, &n, &err);
	REQUIRE(r == 0, "decode: %s", err.msg);
	CHECK(n == np, "npacks %u", n);
	for (uint32_t i = 0; i < np && i < n; i++) {
		CHECK(memcmp(out[i].pack_id, ip[i].pack_id, 16) == 0 &&
		      out[i].pack_size == ip[i].pack_size && out[i].count == ip[i].count,
		      "pack %u header", i);
		CHECK(out[i].count == ip[i].count &&
		      ss_pack_entries_equal(out[i].entries, ip[i].entries, ip[i].count), "pack %u entries", i);
	}
	ss_index_free(out, n);
	printf("  %u packs, %zu bytes: round trip ok\n", np, len);

	/* Zero packs. */
	uint8_t *b0 = NULL;
	size_t l0 = 0;
	REQUIRE(ss_index_encode(NULL, 0, 0, &b0, &l0) == 0 && l0 == 24, "empty encode %zu", l0);
	r = ss_index_decode(b0, l0, 0, &out, &n, &err);
	CHECK(r == 0 && n == 0, "empty decode: %s", err.msg);
	ss_index_free(out, n);
	free(b0);

	/* Encode refuses what decode would refuse. */
	{
		struct ss_pack_entry saved = ip[0].entries[0];
		ip[0].entries[0].codec = 9;
		CHECK(ss_index_encode(ip, np, 0, &b0, &l0) == -EINVAL, "encode of bad codec");
		ip[0].entries[0] = saved;
		ip[0].entries[0].frame_off = 1u << 24;
		CHECK(ss_index_encode(ip, np, 0, &b0, &l0) == -EINVAL, "encode of frame_off 2^24");
		ip[0].entries[0] = saved;
		uint32_t k = find_cont(ip[0].entries, ip[0].count);
		if (k < ip[0].count) {
			uint32_t fo = ip[0].entries[k].frame_off;
			ip[0].entries[k].frame_off = ip[0].entries[k - 1].frame_off;
			CHECK(ss_index_encode(ip, np, 0, &b0, &l0) == -EINVAL,
			      "encode of a repeated frame_off");
			ip[0].entries[k].frame_off = fo;
		}
		uint64_t ps = ip[0].pack_size;
		ip[0].pack_size = 10;
		CHECK(ss_index_encode(ip, np, 0, &b0, &l0) == -EINVAL, "encode of small pack_size");
		ip[0].pack_size = ps;
	}

	/* Every truncation is refused, from a buffer of exactly that size. */
	for (size_t t = 0; t < len; t++) {
		uint8_t *c = malloc(t ? t : 1);
		REQUIRE(c, "oom");
		memcpy(c, b, t);
		expect_index_refused("-truncated", c, t, NULL);
		free(c);
	}
	printf("  all %zu truncations refused\n", len);

	/* Extra bytes appended (checksum recomputed) are refused. */
	{
		uint8_t *c = malloc(len + 32);
		REQUIRE(c, "oom");
		memcpy(c, b, len - 8);
		memset(c + len - 8, 0, 32);
		reseal_obj(c, len + 32);
		expect_index_refused("trailing bytes", c, len + 32, "unexpected bytes");
		free(c);
	}

	uint8_t *c = malloc(len);
	REQUIRE(c, "oom");
#define FRESH() memcpy(c, b, len)
	FRESH();
	c[3] ^= 1;
	expect_index_refused("bad magic", c, len, "magic");
	FRESH();
	c[len / 2] ^= 4;
	expect_index_refused("flipped byte", c, len, "checksum");
	FRESH();
	ss_put_le32(c + 8, np + 1);
	reseal_obj(c, len);
	expect_index_refused("npacks + 1", c, len, NULL);
	FRESH();
	ss_put_le32(c + 8, np - 1);
	reseal_obj(c, len);
	expect_index_refused("npacks - 1", c, len, "unexpected bytes");
	FRESH();
	ss_put_le32(c + 8, UINT32_MAX);
	reseal_obj(c, len);
	expect_index_refused("npacks 2^32-1", c, len, "room");
	FRESH();
	ss_put_le32(c + 12, 1);
	reseal_obj(c, len);
	expect_index_refused("header reserved", c, len, "reserved");
	/* First pack record starts at 16. */
	FRESH();
	ss_put_le32(c + 16 + 24, ip[0].count + 1);
	reseal_obj(c, len);
	expect_index_refused("count + 1", c, len, NULL);
	FRESH();
	ss_put_le32(c + 16 + 24, UINT32_MAX);
	reseal_obj(c, len);
	expect_index_refused("count 2^32-1", c, len, "claims");
	FRESH();
	ss_put_le32(c + 16 + 28, 5);
	reseal_obj(c, len);
	expect_index_refused("record reserved", c, len, "reserved");
	FRESH();
	ss_put_le64(c + 16 + 16, 40);
	reseal_obj(c, len);
	expect_index_refused("pack_size too small", c, len, "impossible");
	FRESH();
	ss_put_le64(c + 16 + 16, UINT64_MAX);
	reseal_obj(c, len);
	expect_index_refused("pack_size 2^64-1", c, len, "impossible");
	FRESH();
	{
		/* Shrink the pack so its last chunk overlaps the index by a byte. */
		const struct ss_pack_entry *last = &ip[0].entries[ip[0].count - 1];
		uint64_t tight = (uint64_t)last->offset + last->stored_len +
				 (uint64_t)ip[0].count * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE;
		ss_put_le64(c + 16 + 16, tight - 1);
	}
	reseal_obj(c, len);
	expect_index_refused("pack_size - 1", c, len, "runs past");
	if (ip[0].count >= 2) {
		FRESH();
		ss_put_le32(c + 16 + 32 + 32 + 16, ip[0].entries[0].offset + 1); /* entry 1 inside entry 0 */
		reseal_obj(c, len);
		expect_index_refused("overlapping entries", c, len, "overlaps");
	}
	FRESH();
	c[16 + 32 + 28] = 3;
	reseal_obj(c, len);
	expect_index_refused("entry codec", c, len, "codec");
	FRESH();
	put_le24(c + 16 + 32 + 29, SS_FRAME_MAX_LIMIT);
	reseal_obj(c, len);
	expect_index_refused("entry frame_off 2^24-1", c, len, "frame");
	{
		/* Frame rules in index objects: find a continuation entry. */
		uint64_t pos = 16;
		uint32_t pi = np, k = 0;
		for (uint32_t i = 0; i < np && pi == np; i++) {
			pos += 32;
			k = find_cont(ip[i].entries, ip[i].count);
			if (k < ip[i].count)
				pi = i;
			else
				pos += (uint64_t)ip[i].count * SS_PACK_ENTRY_SIZE;
		}
		REQUIRE(pi < np, "no frame of several chunks in the index object");
		const struct ss_pack_entry *pe = ip[pi].entries;
		uint8_t *ent = c + pos + (uint64_t)k * SS_PACK_ENTRY_SIZE;
		FRESH();
		ss_put_le32(ent + 20, pe[k].stored_len - 1);
		reseal_obj(c, len);
		expect_index_refused("frame with two stored lengths", c, len, "stored length");
		FRESH();
		put_le24(ent + 29, pe[k - 1].frame_off);
		reseal_obj(c, len);
		expect_index_refused("frame_off repeated", c, len, "does not increase");
		FRESH();
		put_le24(ent + 29, pe[k - 1].frame_off + pe[k - 1].raw_len - 1);
		reseal_obj(c, len);
		expect_index_refused("chunks overlap in a frame", c, len, "previous chunk of that frame");
		FRESH();
		ent[28] = 0;
		ss_put_le32(ent + 24, pe[k].stored_len);
		put_le24(ent + 29, 0);
		reseal_obj(c, len);
		expect_index_refused("raw entry continuing a frame", c, len, "only zstd frames");
	}
#undef FRESH

	/* Random damage: never a crash; with the checksum intact, always a
	 * refusal; with it recomputed, refusal or a consistent result. */
	size_t refused = 0, ok = 0;
	for (int it = 0; it < 5000; it++) {
		memcpy(c, b, len);
		int flips = 1 + (int)(rnd() % 3);
		for (int k = 0; k < flips; k++)
			c[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
		bool resealed = it % 2;
		if (resealed)
			reseal_obj(c, len);
		struct ss_index_pack *o = NULL;
		uint32_t on = 0;
		struct ss_err e2 = { 0 };
		r = ss_index_decode(c, len, 0, &o, &on, &e2);
		if (r == 0) {
			ok++;
			CHECK(resealed, "damaged index object accepted (iteration %d)", it);
			/* Whatever was accepted re-encodes to the same bytes. */
			uint8_t *re = NULL;
			size_t rl = 0;
			CHECK(ss_index_encode(o, on, 0, &re, &rl) == 0 && rl == len &&
			      memcmp(re, c, len) == 0, "accepted object does not re-encode");
			free(re);
		} else {
			refused++;
			CHECK(o == NULL && on == 0 && e2.msg[0], "refusal state");
		}
		ss_index_free(o, on);
	}
	printf("  5000 damaged objects: %zu refused, %zu accepted (all re-sealed and consistent)\n",
	       refused, ok);
	free(c);
	free(b);
	free_index_in(ip, np);
	ss_index_free(NULL, 3);
}

int main(void)
{
	test_pack_round_trip();
	test_pack_refusals();
	test_index_object();
	if (failures) {
		fprintf(stderr, "test_pack: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_pack: ok\n");
	return 0;
}
