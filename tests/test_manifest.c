/* test_manifest — manifest encode/decode round trips, size, and refusal of
 * hostile or damaged input. Exit 0 pass, 1 fail. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <protobuf-c/protobuf-c.h>
#include <xxhash.h>
#include <zstd.h>

#include "manifest.h"
#include "pack.h"
#include "snapshot.pb-c.h"
#include "util.h"

typedef Snapstream__V1__Envelope Envelope;
typedef Snapstream__V1__Snapshot Snapshot;

#include "testutil.h"

static uint64_t rnd_range(uint64_t lo, uint64_t hi) /* inclusive */
{
	return lo + rnd() % (hi - lo + 1);
}

static void *xcalloc(size_t n, size_t s)
{
	void *p = calloc(n ? n : 1, s);
	REQUIRE(p, "out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);
	REQUIRE(p, "out of memory");
	return p;
}

static double now_s(void)
{
	return (double)ss_now_ns() / 1e9;
}

/* ------------------------------------------------------------------ */
/* Building manifests                                                  */

/* Chunk table with realistic values: ids random, raw lengths 16..256 KiB,
 * mostly compressed, packed sequentially into packs of up to 32 MiB. With
 * per_frame > 0, compressed chunks come in zstd frames of up to per_frame
 * consecutive chunks (sharing pack, offset and stored length, at
 * increasing frame offsets) and frame_max is 8 * chunk_max; with 0, one
 * chunk per frame and no frame_max. */
static void make_chunks(struct ss_manifest *m, size_t n, unsigned per_frame)
{
	m->chunk_min = 16 * 1024;
	m->chunk_avg = 64 * 1024;
	m->chunk_max = 256 * 1024;
	m->chunk_seg = 4 * 1024 * 1024;
	m->chunk_algorithm = 1;
	m->frame_max = per_frame ? 8 * m->chunk_max : 0;
	m->chunks = xcalloc(n, sizeof(*m->chunks));
	m->nchunks = n;
	size_t cap_packs = n / 8 + 2;
	m->pack_ids = xcalloc(cap_packs, 16);
	size_t npacks = 0;
	uint64_t off = 0;
	for (size_t i = 0; i < n;) {
		bool zstd = rnd() % 5 != 0;
		size_t k = zstd && per_frame ? per_frame : 1;
		if (k > n - i)
			k = n - i;
		uint64_t frame_raw = 0;
		size_t j;
		for (j = i; j < i + k; j++) {
			struct ss_chunk_ref *c = &m->chunks[j];
			for (int b = 0; b < 16; b += 8) {
				uint64_t v = rnd();
				memcpy(c->id + b, &v, 8);
			}
			/* Skewed towards the average, as FastCDC produces. */
			uint32_t raw = (uint32_t)rnd_range(16 * 1024, 128 * 1024);
			if (rnd() % 8 == 0)
				raw = (uint32_t)rnd_range(128 * 1024, 256 * 1024);
			if (per_frame && frame_raw + raw > m->frame_max)
				break;
			c->raw_len = raw;
			c->codec = zstd ? SS_CODEC_ZSTD : SS_CODEC_RAW;
			c->frame_off = (uint32_t)frame_raw;
			frame_raw += raw;
		}
		k = j - i;
		uint32_t stored = zstd ? (uint32_t)rnd_range(frame_raw / 5, frame_raw)
				       : (uint32_t)frame_raw;
		if (npacks == 0 || off + stored > 32u * 1024 * 1024) {
			REQUIRE(npacks < cap_packs, "pack table");
			for (int b = 0; b < 16; b += 8) {
				uint64_t v = rnd();
				memcpy(m->pack_ids[npacks] + b, &v, 8);
			}
			npacks++;
			off = 0;
		}
		for (j = i; j < i + k; j++) {
			m->chunks[j].stored_len = stored;
			m->chunks[j].pack = (uint32_t)(npacks - 1);
			m->chunks[j].offset = off;
		}
		off += stored;
		i += k;
	}
	m->npacks = npacks;
}

static void add_ext(struct ss_mfile *f, size_t *cap, uint64_t len, uint32_t chunk)
{
	if (f->next == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		f->ext = realloc(f->ext, *cap * sizeof(*f->ext));
		REQUIRE(f->ext, "out of memory");
	}
	f->ext[f->next].len = len;
	f->ext[f->next].chunk = chunk;
	f->next++;
	f->size += len;
}

static void set_digest(struct ss_mfile *f)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(f->name, strlen(f->name)));
	memcpy(f->digest, c.digest, 16);
}

/* A realistic snapshot: a disk image using most chunks with zero runs, a
 * memory file that repeats chunks, an empty file, a zero-only file, a
 * nested file; labels and parents. */
static struct ss_manifest *make_manifest(size_t nchunks, unsigned per_frame)
{
	struct ss_manifest *m = xcalloc(1, sizeof(*m));
	m->tool_version = xstrdup("snapstream test");
	m->created_unix_ns = 1700000000123456789ll;
	m->keyed_ids = true;
	memset(m->key_check, 0x5a, sizeof(m->key_check));
	m->root_is_dir = true;
	m->store_uri = xstrdup("s3://bucket/prefix");
	m->nlabels = 3;
	m->labels = xcalloc(3, sizeof(*m->labels));
	m->labels[0].key = xstrdup("sandbox");
	m->labels[0].value = xstrdup("sbx-1234");
	m->labels[1].key = xstrdup("kernel");
	m->labels[1].value = xstrdup("6.1.0");
	m->labels[2].key = xstrdup("empty");
	m->labels[2].value = xstrdup("");
	m->nparents = 2;
	m->parents = xcalloc(2, sizeof(char *));
	m->parents[0] = xstrdup("s3://bucket/prefix/snapshots/aaaa");
	m->parents[1] = xstrdup("s3://bucket/prefix/snapshots/bbbb");
	make_chunks(m, nchunks, per_frame);
	m->stats.logical_bytes = 1;
	m->stats.zero_bytes = 2;
	m->stats.chunk_bytes = 3;
	m->stats.unique_bytes = 4;
	m->stats.new_raw_bytes = 5;
	m->stats.new_stored_bytes = 6;
	m->stats.stored_bytes = 7;

	m->nfiles = 5;
	m->files = xcalloc(5, sizeof(*m->files));
	struct ss_mfile *f;
	size_t cap;
	size_t split = nchunks * 4 / 5;

	f = &m->files[0];
	f->name = xstrdup("disk.img");
	f->mode = 0644;
	f->mtime_ns = 1699999999000000001ll;
	cap = 0;
	for (size_t i = 0; i < split; i++) {
		if (i % 7 == 3)
			add_ext(f, &cap, 4096 * rnd_range(1, 64), 0);
		add_ext(f, &cap, m->chunks[i].raw_len, (uint32_t)(i + 1));
	}
	set_digest(f);

	f = &m->files[1];
	f->name = xstrdup("mem/pages.bin");
	f->mode = 0600;
	f->mtime_ns = -5; /* before the epoch: signed */
	cap = 0;
	for (size_t i = split; i < nchunks; i++) {
		add_ext(f, &cap, m->chunks[i].raw_len, (uint32_t)(i + 1));
		if (i % 3 == 0) { /* repeated chunk references */
			size_t j = rnd() % nchunks;
			add_ext(f, &cap, m->chunks[j].raw_len, (uint32_t)(j + 1));
		}
	}
	set_digest(f);

	f = &m->files[2];
	f->name = xstrdup("empty");
	f->mode = 0;
	set_digest(f);

	f = &m->files[3];
	f->name = xstrdup("zeros.bin");
	f->mode = 04755;
	cap = 0;
	add_ext(f, &cap, 1ull << 33, 0);
	add_ext(f, &cap, 123, 0);
	set_digest(f);

	f = &m->files[4];
	f->name = xstrdup("dir/sub/f\xc3\xa9 \xe2\x9c\x93.txt");
	f->mode = 0640;
	cap = 0;
	add_ext(f, &cap, m->chunks[0].raw_len, 1);
	set_digest(f);
	return m;
}

static bool str_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static void compare(const struct ss_manifest *a, const struct ss_manifest *b)
{
	CHECK(b->format_major == SS_MANIFEST_MAJOR, "major %u", b->format_major);
	CHECK(b->format_minor == SS_MANIFEST_MINOR, "minor %u", b->format_minor);
	CHECK(str_eq(a->tool_version, b->tool_version), "tool_version");
	CHECK(a->created_unix_ns == b->created_unix_ns, "created");
	CHECK(a->chunk_min == b->chunk_min && a->chunk_avg == b->chunk_avg &&
	      a->chunk_max == b->chunk_max && a->chunk_seg == b->chunk_seg &&
	      a->chunk_algorithm == b->chunk_algorithm && a->frame_max == b->frame_max,
	      "chunk params");
	CHECK(a->keyed_ids == b->keyed_ids && a->root_is_dir == b->root_is_dir &&
		      !memcmp(a->key_check, b->key_check, 16),
	      "flags");
	CHECK(str_eq(a->store_uri, b->store_uri), "store_uri");
	CHECK(memcmp(&a->stats, &b->stats, sizeof(a->stats)) == 0, "stats");
	REQUIRE(a->nlabels == b->nlabels, "nlabels %zu %zu", a->nlabels, b->nlabels);
	for (size_t i = 0; i < a->nlabels; i++)
		CHECK(str_eq(a->labels[i].key, b->labels[i].key) &&
		      str_eq(a->labels[i].value, b->labels[i].value), "label %zu", i);
	REQUIRE(a->nparents == b->nparents, "nparents");
	for (size_t i = 0; i < a->nparents; i++)
		CHECK(str_eq(a->parents[i], b->parents[i]), "parent %zu", i);
	REQUIRE(a->npacks == b->npacks, "npacks");
	CHECK(a->npacks == 0 || memcmp(a->pack_ids, b->pack_ids, 16 * a->npacks) == 0, "pack ids");
	REQUIRE(a->nchunks == b->nchunks, "nchunks");
	for (size_t i = 0; i < a->nchunks; i++) {
		const struct ss_chunk_ref *x = &a->chunks[i], *y = &b->chunks[i];
		if (memcmp(x->id, y->id, 16) || x->pack != y->pack || x->stored_len != y->stored_len ||
		    x->raw_len != y->raw_len || x->codec != y->codec || x->offset != y->offset ||
		    x->frame_off != y->frame_off) {
			CHECK(0, "chunk %zu differs", i);
			break;
		}
	}
	REQUIRE(a->nfiles == b->nfiles, "nfiles");
	for (size_t i = 0; i < a->nfiles; i++) {
		const struct ss_mfile *x = &a->files[i], *y = &b->files[i];
		CHECK(str_eq(x->name, y->name), "file %zu name", i);
		CHECK(x->size == y->size && x->mode == y->mode && x->mtime_ns == y->mtime_ns,
		      "file %zu attrs", i);
		CHECK(memcmp(x->digest, y->digest, 16) == 0, "file %zu digest", i);
		REQUIRE(x->next == y->next, "file %zu extents %zu %zu", i, x->next, y->next);
		for (size_t j = 0; j < x->next; j++)
			if (x->ext[j].len != y->ext[j].len || x->ext[j].chunk != y->ext[j].chunk) {
				CHECK(0, "file %zu extent %zu differs", i, j);
				break;
			}
	}
}

/* ------------------------------------------------------------------ */
/* Editing encoded manifests through protobuf-c                        */

static Envelope *env_unpack(const uint8_t *buf, size_t len)
{
	Envelope *e = snapstream__v1__envelope__unpack(NULL, len, buf);
	REQUIRE(e, "envelope unpack");
	return e;
}

static uint8_t *env_pack(const Envelope *e, size_t *len)
{
	*len = snapstream__v1__envelope__get_packed_size(e);
	uint8_t *b = malloc(*len ? *len : 1);
	REQUIRE(b, "oom");
	REQUIRE(snapstream__v1__envelope__pack(e, b) == *len, "pack");
	return b;
}

static void env_rechecksum(Envelope *e)
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(e->body.data, e->body.len));
	free(e->checksum.data);
	e->checksum.data = malloc(16);
	REQUIRE(e->checksum.data, "oom");
	memcpy(e->checksum.data, c.digest, 16);
	e->checksum.len = 16;
}

/* Replace the body with zstd(raw) (one frame, content size set),
 * declare its size, re-checksum. */
static void env_set_raw_body(Envelope *e, const uint8_t *raw, size_t rlen)
{
	size_t cap = ZSTD_compressBound(rlen);
	uint8_t *c = malloc(cap);
	REQUIRE(c, "oom");
	size_t clen = ZSTD_compress(c, cap, raw, rlen, 3);
	REQUIRE(!ZSTD_isError(clen), "compress");
	free(e->body.data);
	e->body.data = c;
	e->body.len = clen;
	e->body_raw_size = rlen;
	e->body_codec = 1;
	env_rechecksum(e);
}

static Snapshot *env_snapshot(const Envelope *e)
{
	unsigned long long n = ZSTD_getFrameContentSize(e->body.data, e->body.len);
	REQUIRE(n != ZSTD_CONTENTSIZE_ERROR && n != ZSTD_CONTENTSIZE_UNKNOWN, "fcs");
	uint8_t *raw = malloc(n ? n : 1);
	REQUIRE(raw, "oom");
	size_t got = ZSTD_decompress(raw, n, e->body.data, e->body.len);
	REQUIRE(got == n, "decompress");
	Snapshot *s = snapstream__v1__snapshot__unpack(NULL, n, raw);
	REQUIRE(s, "snapshot unpack");
	free(raw);
	return s;
}

static void env_set_snapshot(Envelope *e, const Snapshot *s)
{
	size_t n = snapstream__v1__snapshot__get_packed_size(s);
	uint8_t *raw = malloc(n ? n : 1);
	REQUIRE(raw, "oom");
	snapstream__v1__snapshot__pack(s, raw);
	env_set_raw_body(e, raw, n);
	free(raw);
}

/* The number of chunk_frame_off entries an encoded manifest carries. */
static size_t encoded_frame_offs(const uint8_t *buf, size_t len, uint32_t *frame_max)
{
	Envelope *e = env_unpack(buf, len);
	Snapshot *s = env_snapshot(e);
	size_t n = s->n_chunk_frame_off;
	if (frame_max)
		*frame_max = s->chunking ? s->chunking->frame_max : 0;
	snapstream__v1__snapshot__free_unpacked(s, NULL);
	snapstream__v1__envelope__free_unpacked(e, NULL);
	return n;
}

typedef void (*snap_edit)(Snapshot *s);
typedef void (*env_edit)(Envelope *e);

static const uint8_t *g_base;
static size_t g_base_len;

/* Encode-edit-repack: apply an edit to the Snapshot and/or Envelope. */
static uint8_t *edited(snap_edit se, env_edit ee, size_t *len)
{
	Envelope *e = env_unpack(g_base, g_base_len);
	if (se) {
		Snapshot *s = env_snapshot(e);
		se(s);
		env_set_snapshot(e, s);
		snapstream__v1__snapshot__free_unpacked(s, NULL);
	}
	if (ee)
		ee(e);
	uint8_t *b = env_pack(e, len);
	snapstream__v1__envelope__free_unpacked(e, NULL);
	return b;
}

static void expect_refused(const char *what, const uint8_t *b, size_t len, int code,
			   const char *needle)
{
	struct ss_err err = { 0 };
	struct ss_manifest *m = NULL;
	int r = ss_manifest_decode(b, len, &m, &err);
	CHECK(r == code, "%s: got %d (%s), want %d", what, r, err.msg, code);
	CHECK(m == NULL, "%s: output set on failure", what);
	CHECK(r == 0 || err.code == r, "%s: err.code %d", what, err.code);
	if (needle)
		CHECK(strstr(err.msg, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
		      err.msg, needle);
	printf("  refused %-28s %s\n", what, err.msg);
	ss_manifest_free(m);
}

static void refuse_snap(const char *what, snap_edit se, const char *needle)
{
	size_t len;
	uint8_t *b = edited(se, NULL, &len);
	expect_refused(what, b, len, -EBADMSG, needle);
	free(b);
}

static void refuse_env(const char *what, env_edit ee, int code, const char *needle)
{
	size_t len;
	uint8_t *b = edited(NULL, ee, &len);
	expect_refused(what, b, len, code, needle);
	free(b);
}

static struct ss_manifest *expect_ok(const char *what, const uint8_t *b, size_t len)
{
	struct ss_err err = { 0 };
	struct ss_manifest *m = NULL;
	int r = ss_manifest_decode(b, len, &m, &err);
	CHECK(r == 0 && m, "%s: got %d (%s)", what, r, err.msg);
	return m;
}

static void accept_snap(const char *what, snap_edit se)
{
	size_t len;
	uint8_t *b = edited(se, NULL, &len);
	ss_manifest_free(expect_ok(what, b, len));
	printf("  accepted %s\n", what);
	free(b);
}

/* Snapshot file 0 is "disk.img" (chunks + zero runs), 1 "mem/pages.bin",
 * 2 "empty", 3 "zeros.bin", 4 the nested one. */
static void set_name(Snapshot *s, size_t i, const char *name)
{
	free(s->files[i]->name);
	s->files[i]->name = xstrdup(name);
}

static void e_name_dotdot(Snapshot *s) { set_name(s, 2, ".."); }
static void e_name_dotdot_mid(Snapshot *s) { set_name(s, 2, "a/../../etc/passwd"); }
static void e_name_dot(Snapshot *s) { set_name(s, 2, "./a"); }
static void e_name_abs(Snapshot *s) { set_name(s, 2, "/etc/passwd"); }
static void e_name_dslash(Snapshot *s) { set_name(s, 2, "a//b"); }
static void e_name_trail(Snapshot *s) { set_name(s, 2, "a/"); }
static void e_name_ctrl(Snapshot *s) { set_name(s, 2, "a\x1b[31mred"); }
static void e_name_del(Snapshot *s) { set_name(s, 2, "a\x7f"); }
static void e_name_empty(Snapshot *s) { set_name(s, 2, ""); }
static void e_name_long(Snapshot *s)
{
	char *n = malloc(5000);
	REQUIRE(n, "oom");
	memset(n, 'x', 4999);
	n[4999] = 0;
	set_name(s, 2, n);
	free(n);
}
static void e_name_dup(Snapshot *s) { set_name(s, 2, "disk.img"); }
static void e_name_prefix(Snapshot *s) { set_name(s, 2, "disk.img/inner"); }
static void e_name_prefix2(Snapshot *s) { set_name(s, 2, "dir/sub"); }

/* "d/d/.../d/f" with `dirs` directories: as deep as push goes (64) or one
 * more. */
static void set_deep_name(Snapshot *s, unsigned dirs)
{
	char n[2 * 80 + 2];
	REQUIRE(dirs < 80, "too deep for the buffer");
	size_t o = 0;
	for (unsigned i = 0; i < dirs; i++) {
		n[o++] = 'd';
		n[o++] = '/';
	}
	n[o++] = 'f';
	n[o] = 0;
	set_name(s, 2, n);
}
static void e_name_depth64(Snapshot *s) { set_deep_name(s, SS_MANIFEST_MAX_DEPTH); }
static void e_name_depth65(Snapshot *s) { set_deep_name(s, SS_MANIFEST_MAX_DEPTH + 1); }

/* One-file snapshots: keep only file `keep`, as push of a single file
 * writes it (root_is_dir false). */
static void one_file(Snapshot *s, size_t keep)
{
	s->root_is_dir = false;
	Snapstream__V1__File *k = s->files[keep];
	for (size_t i = 0; i < s->n_files; i++)
		if (i != keep)
			protobuf_c_message_free_unpacked(&s->files[i]->base, NULL);
	s->files[0] = k;
	s->n_files = 1;
}
static void e_one_file(Snapshot *s) { one_file(s, 0); }
static void e_one_file_slash(Snapshot *s) { one_file(s, 4); }   /* "dir/sub/f..." */
static void e_one_file_slash2(Snapshot *s)
{
	one_file(s, 0);
	set_name(s, 0, "sub/disk.img");
}
static void e_one_file_two(Snapshot *s) { s->root_is_dir = false; }   /* five files */
static void e_one_file_none(Snapshot *s)
{
	one_file(s, 0);
	protobuf_c_message_free_unpacked(&s->files[0]->base, NULL);
	s->n_files = 0;
}
static const char *g_one_name;
static void e_one_file_named(Snapshot *s)
{
	one_file(s, 0);
	set_name(s, 0, g_one_name);
}
static void e_size(Snapshot *s) { s->files[0]->size += 1; }
static void e_size_small(Snapshot *s) { s->files[3]->size -= 1; }
static void e_chunk_oor(Snapshot *s)
{
	Snapstream__V1__File *f = s->files[4];
	f->extent_chunk[0] = (uint32_t)(s->chunk_ids.len / 16 + 1);
}
static void e_chunk_len(Snapshot *s)
{
	Snapstream__V1__File *f = s->files[4];
	f->extent_len[0] += 1;
	f->size += 1;
}
static void e_pack_oor(Snapshot *s) { s->chunk_pack[7] = (uint32_t)s->n_pack_ids; }
static void e_cols(Snapshot *s) { s->n_chunk_raw_len--; }
static void e_cols_codec(Snapshot *s) { s->n_chunk_codec = 0; }
static void e_ids_len(Snapshot *s) { s->chunk_ids.len--; }
static void e_pack_id_len(Snapshot *s) { s->pack_ids[0].len = 15; }
static void e_ext_arrays(Snapshot *s) { s->files[0]->n_extent_chunk--; }
static void e_codec2(Snapshot *s) { s->chunk_codec[3] = 2; }
static void e_codec257(Snapshot *s) { s->chunk_codec[3] = 257; }
static void e_stored0(Snapshot *s) { s->chunk_stored_len[3] = 0; }
/* One past the largest stored length chunk i may have. */
static uint32_t stored_over(const Snapshot *s, size_t i)
{
	uint32_t fm = s->chunking->frame_max;
	if (s->chunk_codec[i] == 1 && fm)
		return fm + fm / 128 + 1025;
	return s->chunk_raw_len[i] + s->chunk_raw_len[i] / 128 + 1025;
}
static void e_stored_big(Snapshot *s) { s->chunk_stored_len[3] = stored_over(s, 3); }
static size_t find_codec(const Snapshot *s, uint32_t codec)
{
	for (size_t i = 0; i < s->n_chunk_codec; i++)
		if (s->chunk_codec[i] == codec)
			return i;
	REQUIRE(0, "no chunk with codec %u", codec);
	return 0;
}
static void e_stored_big_zstd(Snapshot *s)
{
	size_t i = find_codec(s, 1);
	s->chunk_stored_len[i] = stored_over(s, i);
}
static void e_stored_max_zstd(Snapshot *s) /* accepted: exactly the bound */
{
	size_t i = find_codec(s, 1);
	s->chunk_stored_len[i] = stored_over(s, i) - 1;
}
/* Frames (the base has them: 8 chunks per frame, frame_max 2 MiB). */
static void e_fo_raw(Snapshot *s)
{
	REQUIRE(s->n_chunk_frame_off, "no frame offset column");
	s->chunk_frame_off[find_codec(s, 0)] = 7;
}
static void e_fo_past(Snapshot *s)
{
	size_t i = find_codec(s, 1);
	s->chunk_frame_off[i] = s->chunking->frame_max - s->chunk_raw_len[i] + 1;
}
static void e_fo_at_end(Snapshot *s) /* accepted: ends exactly at frame_max */
{
	size_t i = find_codec(s, 1);
	s->chunk_frame_off[i] = s->chunking->frame_max - s->chunk_raw_len[i];
}
static void e_fo_wrap(Snapshot *s) { s->chunk_frame_off[find_codec(s, 1)] = UINT32_MAX; }
/* No frames, but a chunk inside one. Stored lengths are cut to what one
 * chunk per frame allows, so the frame offset is what is refused. */
static void e_fo_no_frames(Snapshot *s)
{
	s->chunking->frame_max = 0;
	bool inside = false;
	for (size_t i = 0; i < s->n_chunk_codec; i++) {
		if (s->chunk_codec[i] == 1 && s->chunk_stored_len[i] > s->chunk_raw_len[i])
			s->chunk_stored_len[i] = s->chunk_raw_len[i];
		inside |= s->chunk_frame_off[i] != 0;
	}
	REQUIRE(inside, "no chunk inside a frame");
}
static void e_fmax_small(Snapshot *s) { s->chunking->frame_max = s->chunking->max_size - 1; }
static void e_fmax_big(Snapshot *s) { s->chunking->frame_max = SS_FRAME_MAX_LIMIT + 1; }
static void e_fmax_limit(Snapshot *s) { s->chunking->frame_max = SS_FRAME_MAX_LIMIT; }
static void e_fo_cols(Snapshot *s) { s->n_chunk_frame_off--; }
/* Without frames (base without the column): a column added. */
static void add_fo_column(Snapshot *s, size_t n)
{
	REQUIRE(s->n_chunk_frame_off == 0, "column already present");
	s->chunk_frame_off = xcalloc(n, sizeof(uint32_t));
	s->n_chunk_frame_off = n;
}
static void e_plain_fo_cols(Snapshot *s) { add_fo_column(s, 1); }
static void e_plain_fo_zeros(Snapshot *s) /* accepted: an all-zero column */
{
	add_fo_column(s, s->n_chunk_codec);
}
static void e_plain_fo(Snapshot *s)
{
	add_fo_column(s, s->n_chunk_codec);
	s->chunk_frame_off[find_codec(s, 1)] = 4096;
}
static void e_raw0(Snapshot *s)
{
	s->chunk_raw_len[5] = 0;
	s->chunk_stored_len[5] = 1;
	s->chunk_codec[5] = 1;
}
static void e_raw_big(Snapshot *s) { s->chunk_raw_len[5] = s->chunking->max_size + 1; }
static void e_raw_codec(Snapshot *s)
{
	for (size_t i = 0; i < s->n_chunk_codec; i++)
		if (s->chunk_stored_len[i] < s->chunk_raw_len[i] &&
		    (!s->n_chunk_frame_off || s->chunk_frame_off[i] == 0)) {
			s->chunk_codec[i] = 0;
			return;
		}
}
static void e_offset(Snapshot *s) { s->chunk_offset[2] = UINT64_MAX - 10; }
static void e_digest(Snapshot *s) { s->files[1]->digest.len = 15; }
static void e_params_pow2(Snapshot *s) { s->chunking->avg_size = 65535; }
static void e_params_order(Snapshot *s) { s->chunking->max_size = s->chunking->seg_size + 4096; }
static void e_params_missing(Snapshot *s)
{
	snapstream__v1__chunk_params__free_unpacked(s->chunking, NULL);
	s->chunking = NULL;
}
static void e_ext_zero(Snapshot *s)
{
	Snapstream__V1__File *f = s->files[3];
	f->extent_len[1] = 0;
	f->size -= 123;
}
static void e_ext_overflow(Snapshot *s)
{
	Snapstream__V1__File *f = s->files[3];
	f->extent_len[0] = 1ull << 63;
	f->extent_len[1] = 1ull << 63;
	f->size = 0;
}
static void e_mode(Snapshot *s) { s->files[0]->mode = 0100644; }
static void e_label_ctrl(Snapshot *s)
{
	free(s->labels[0]->value);
	s->labels[0]->value = xstrdup("x\ny");
}
static void e_label_key_empty(Snapshot *s)
{
	free(s->labels[0]->key);
	s->labels[0]->key = xstrdup("");
}
static void e_parent_empty(Snapshot *s)
{
	free(s->parents[1]);
	s->parents[1] = xstrdup("");
}
static void e_many_labels(Snapshot *s)
{
	size_t n = SS_MANIFEST_MAX_LABELS + 1;
	Snapstream__V1__Label **l = realloc(s->labels, n * sizeof(*l));
	REQUIRE(l, "oom");
	for (size_t i = s->n_labels; i < n; i++) {
		l[i] = malloc(sizeof(**l));
		REQUIRE(l[i], "oom");
		snapstream__v1__label__init(l[i]);
		char k[32];
		snprintf(k, sizeof(k), "k%zu", i);
		l[i]->key = xstrdup(k);
		l[i]->value = xstrdup("v");
	}
	s->labels = l;
	s->n_labels = n;
}

static void v_major_next(Envelope *e) { e->format_major = SS_MANIFEST_MAJOR + 1; }
static void v_major_huge(Envelope *e) { e->format_major = UINT32_MAX; }
static void v_major0(Envelope *e) { e->format_major = 0; }
static void v_flip_body(Envelope *e) { e->body.data[e->body.len / 2] ^= 0x10; }
static void v_sum_short(Envelope *e) { e->checksum.len = 15; }
static void v_sum_missing(Envelope *e)
{
	free(e->checksum.data);
	e->checksum.data = NULL;
	e->checksum.len = 0;
}
static void v_raw_plus(Envelope *e) { e->body_raw_size += 1; }
static void v_raw_minus(Envelope *e) { e->body_raw_size -= 1; }
static void v_raw_huge(Envelope *e) { e->body_raw_size = (uint64_t)SS_MANIFEST_MAX_BODY + 1; }
static void v_raw_max(Envelope *e) { e->body_raw_size = UINT64_MAX; }
static void v_codec7(Envelope *e) { e->body_codec = 7; }
static void v_codec_raw_lie(Envelope *e) { e->body_codec = 0; }

/* Bombs: a body that decompresses to far more than it declares. */
static uint8_t *zeros_frame(size_t n, bool pledge, size_t *clen)
{
	uint8_t *z = calloc(n, 1);
	REQUIRE(z, "oom");
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound(n);
	uint8_t *c = malloc(cap);
	REQUIRE(cc && c, "oom");
	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 19);
	if (!pledge)
		ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	ZSTD_inBuffer in = { z, n, 0 };
	ZSTD_outBuffer out = { c, cap, 0 };
	size_t rem = ZSTD_compressStream2(cc, &out, &in, ZSTD_e_end);
	REQUIRE(rem == 0, "bomb compress");
	ZSTD_freeCCtx(cc);
	free(z);
	*clen = out.pos;
	return c;
}

static void bomb_body(Envelope *e, uint8_t *c, size_t clen, uint64_t declared)
{
	free(e->body.data);
	e->body.data = c;
	e->body.len = clen;
	e->body_raw_size = declared;
	env_rechecksum(e);
}

static void v_bomb_fcs(Envelope *e)
{
	size_t clen;
	uint8_t *c = zeros_frame(256u << 20, true, &clen);
	bomb_body(e, c, clen, 4096);
}

static void v_bomb_nofcs(Envelope *e)
{
	size_t clen;
	uint8_t *c = zeros_frame(256u << 20, false, &clen);
	bomb_body(e, c, clen, 4096);
}

/* The real frame followed by a 256 MiB frame of zeros: the first frame's
 * header matches the declared size, the data does not stop there. */
static void v_bomb_concat(Envelope *e)
{
	size_t clen;
	uint8_t *c = zeros_frame(256u << 20, true, &clen);
	uint8_t *b = malloc(e->body.len + clen);
	REQUIRE(b, "oom");
	memcpy(b, e->body.data, e->body.len);
	memcpy(b + e->body.len, c, clen);
	free(c);
	size_t total = e->body.len + clen;
	uint64_t declared = e->body_raw_size;
	free(e->body.data);
	e->body.data = NULL;
	bomb_body(e, b, total, declared);
}

/* Declared honestly, but the 64 MiB it decodes to is not a Snapshot. */
static void v_zeros_honest(Envelope *e)
{
	size_t clen;
	uint8_t *c = zeros_frame(64u << 20, true, &clen);
	bomb_body(e, c, clen, 64u << 20);
}

/* A body that is valid protobuf but 16 MiB of tiny unknown fields: each
 * would cost protobuf-c ~100 bytes; the decoder must refuse, not spend
 * gigabytes. */
static void v_unknown_flood(Envelope *e)
{
	size_t n = 16u << 20;
	uint8_t *raw = malloc(n);
	REQUIRE(raw, "oom");
	for (size_t i = 0; i + 3 <= n; i += 3) {
		raw[i] = 0xa0; /* field 100, varint */
		raw[i + 1] = 0x06;
		raw[i + 2] = 0x00;
	}
	n -= n % 3;
	env_set_raw_body(e, raw, n);
	free(raw);
}

/* Garbage that happens to be valid zstd with the right size. */
static void v_garbage_body(Envelope *e)
{
	uint8_t raw[64];
	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = 0xff;
	env_set_raw_body(e, raw, sizeof(raw));
}

/* ------------------------------------------------------------------ */

static void test_round_trip(void)
{
	printf("round trip (10k chunks, 8 per frame)\n");
	struct ss_manifest *m = make_manifest(10000, 8);
	struct ss_err err = { 0 };
	int r = ss_manifest_validate(m, &err);
	REQUIRE(r == 0, "validate source: %s", err.msg);
	uint8_t *b1 = NULL, *b2 = NULL;
	size_t l1 = 0, l2 = 0;
	REQUIRE(ss_manifest_encode(m, &b1, &l1) == 0, "encode");
	struct ss_manifest *d = NULL;
	r = ss_manifest_decode(b1, l1, &d, &err);
	REQUIRE(r == 0, "decode: %d %s", r, err.msg);
	compare(m, d);
	REQUIRE(ss_manifest_encode(d, &b2, &l2) == 0, "re-encode");
	CHECK(l1 == l2 && memcmp(b1, b2, l1) == 0, "re-encode differs (%zu vs %zu bytes)", l1, l2);
	printf("  %zu bytes, %.1f bytes/chunk\n", l1, (double)l1 / 10000);
	{
		size_t shared = 0;
		for (size_t i = 1; i < m->nchunks; i++)
			shared += m->chunks[i].frame_off != 0;
		CHECK(shared > m->nchunks / 2, "only %zu chunks inside frames", shared);
		uint32_t fm = 0;
		CHECK(encoded_frame_offs(b1, l1, &fm) == m->nchunks && fm == m->frame_max,
		      "frame offset column or frame_max not encoded");
	}

	/* Without frames: no chunk_frame_off column, and it decodes as 0. */
	{
		struct ss_manifest *pm = make_manifest(1000, 0);
		uint8_t *pb = NULL;
		size_t pl = 0;
		REQUIRE(ss_manifest_encode(pm, &pb, &pl) == 0, "encode without frames");
		uint32_t fm = 1;
		CHECK(encoded_frame_offs(pb, pl, &fm) == 0 && fm == 0,
		      "manifest without frames encodes a frame offset column");
		struct ss_manifest *pd = expect_ok("no frames", pb, pl);
		if (pd)
			compare(pm, pd);
		ss_manifest_free(pd);
		free(pb);
		/* frame_max set, yet every frame holds one chunk: no column either. */
		pm->frame_max = 4 * pm->chunk_max;
		REQUIRE(ss_manifest_encode(pm, &pb, &pl) == 0, "encode with single-chunk frames");
		CHECK(encoded_frame_offs(pb, pl, &fm) == 0 && fm == pm->frame_max,
		      "all-zero frame offsets encoded");
		pd = expect_ok("single-chunk frames", pb, pl);
		if (pd)
			compare(pm, pd);
		ss_manifest_free(pd);
		free(pb);
		ss_manifest_free(pm);
	}

	/* A manifest keeps its format through decode and encode: one of
	 * format 1 (digests over every byte) is written as format 1 again;
	 * a format newer than this build's is never written. */
	{
		struct ss_manifest *om = make_manifest(100, 4);
		om->format_major = 1;
		uint8_t *ob = NULL;
		size_t ol = 0;
		REQUIRE(ss_manifest_encode(om, &ob, &ol) == 0, "encode format 1");
		struct ss_manifest *od = expect_ok("format 1", ob, ol);
		CHECK(od && od->format_major == 1 && od->format_minor == 0, "format 1 became %u.%u",
		      od ? od->format_major : 0, od ? od->format_minor : 0);
		ss_manifest_free(od);
		free(ob);
		ob = NULL;
		om->format_major = SS_MANIFEST_MAJOR + 1;
		CHECK(ss_manifest_encode(om, &ob, &ol) == -EINVAL && !ob, "encode of a newer format");
		ss_manifest_free(om);
	}

	/* The envelope assembled by hand equals protobuf-c's own packing. */
	Envelope *e = env_unpack(b1, l1);
	size_t l3;
	uint8_t *b3 = env_pack(e, &l3);
	CHECK(l3 == l1 && memcmp(b1, b3, l1) == 0, "envelope differs from protobuf-c's packing");
	CHECK(e->format_major == SS_MANIFEST_MAJOR && e->body_codec == 1 && e->checksum.len == 16,
	      "envelope fields");
	free(b3);

	/* A newer minor and a raw (codec 0) body are both accepted. */
	e->format_minor = 7;
	{
		unsigned long long n = ZSTD_getFrameContentSize(e->body.data, e->body.len);
		uint8_t *raw = malloc(n);
		REQUIRE(raw && ZSTD_decompress(raw, n, e->body.data, e->body.len) == n, "dec");
		free(e->body.data);
		e->body.data = raw;
		e->body.len = n;
		e->body_codec = 0;
		env_rechecksum(e);
	}
	b3 = env_pack(e, &l3);
	struct ss_manifest *d2 = expect_ok("raw body, minor 7", b3, l3);
	if (d2) {
		CHECK(d2->format_minor == 7, "minor %u", d2->format_minor);
		d2->format_minor = SS_MANIFEST_MINOR;
		compare(m, d2);
	}
	ss_manifest_free(d2);
	free(b3);
	snapstream__v1__envelope__free_unpacked(e, NULL);

	/* Unknown fields (a newer minor's additions) are ignored. */
	e = env_unpack(b1, l1);
	{
		Snapshot *s = env_snapshot(e);
		size_t n = snapstream__v1__snapshot__get_packed_size(s);
		uint8_t *raw = malloc(n + 32);
		REQUIRE(raw, "oom");
		snapstream__v1__snapshot__pack(s, raw);
		/* field 99 varint 5; field 98 bytes "abc" */
		const uint8_t extra[] = { 0x98, 0x06, 0x05, 0x92, 0x06, 0x03, 'a', 'b', 'c' };
		memcpy(raw + n, extra, sizeof(extra));
		env_set_raw_body(e, raw, n + sizeof(extra));
		free(raw);
		snapstream__v1__snapshot__free_unpacked(s, NULL);
	}
	b3 = env_pack(e, &l3);
	d2 = expect_ok("unknown fields", b3, l3);
	if (d2)
		compare(m, d2);
	ss_manifest_free(d2);
	free(b3);
	snapstream__v1__envelope__free_unpacked(e, NULL);

	/* An empty manifest (an empty directory: no files, no chunks)
	 * round-trips too. */
	struct ss_manifest *em = xcalloc(1, sizeof(*em));
	em->root_is_dir = true;
	REQUIRE(ss_manifest_encode(em, &b3, &l3) == 0, "encode empty");
	d2 = expect_ok("empty manifest", b3, l3);
	if (d2)
		CHECK(d2->nfiles == 0 && d2->nchunks == 0 && d2->tool_version, "empty fields");
	ss_manifest_free(d2);
	ss_manifest_free(em);
	free(b3);

	ss_manifest_free(d);
	ss_manifest_free(m);
	free(b1);
	free(b2);
}

static void test_encode_refuses_invalid(void)
{
	printf("encode refuses invalid manifests\n");
	struct ss_manifest *m = make_manifest(50, 8);
	uint8_t *b = NULL;
	size_t l = 0;
	{
		/* A raw chunk inside a frame. */
		size_t i = 0;
		while (i < m->nchunks && m->chunks[i].codec != SS_CODEC_RAW)
			i++;
		REQUIRE(i < m->nchunks, "no raw chunk");
		m->chunks[i].frame_off = 1;
		CHECK(ss_manifest_encode(m, &b, &l) == -EINVAL && !b, "encode of raw frame_off");
		m->chunks[i].frame_off = 0;
		uint32_t fm = m->frame_max;
		m->frame_max = m->chunk_max - 1;
		CHECK(ss_manifest_encode(m, &b, &l) == -EINVAL && !b, "encode of small frame_max");
		m->frame_max = fm;
	}
	free(m->files[2].name);
	m->files[2].name = xstrdup("../escape");
	CHECK(ss_manifest_encode(m, &b, &l) == -EINVAL && !b, "encode of bad name");
	struct ss_err err = { 0 };
	CHECK(ss_manifest_validate(m, &err) == -EBADMSG && strstr(err.msg, "../escape"),
	      "validate message: %s", err.msg);
	ss_manifest_free(m);
}

static void test_names(void)
{
	printf("name rules\n");
	const char *good[] = { "a", "a/b", "a.b", "..a", "a..", ".a/b.", "a/.../b",
			       "f\xc3\xa9", "a b", "a\\b" };
	const char *bad[] = { "", ".", "..", "/", "/a", "a/", "a//b", "./a", "a/.", "a/./b",
			      "a/../b", "../a", "a/..", "a\nb", "\x01", "a\x7f", "a\tb" };
	for (size_t i = 0; i < SS_ARRAY_SIZE(good); i++)
		CHECK(ss_manifest_name_ok(good[i]), "good name \"%s\" refused", good[i]);
	for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++)
		CHECK(!ss_manifest_name_ok(bad[i]), "bad name \"%s\" accepted", bad[i]);
	CHECK(!ss_manifest_name_ok(NULL), "NULL name accepted");
	{
		/* Depth: 64 directories as push allows, not 65. */
		char d[2 * (SS_MANIFEST_MAX_DEPTH + 1) + 2];
		size_t o = 0;
		for (unsigned i = 0; i < SS_MANIFEST_MAX_DEPTH; i++) {
			d[o++] = 'd';
			d[o++] = '/';
		}
		d[o] = 'f';
		d[o + 1] = 0;
		CHECK(ss_manifest_name_ok(d), "name 64 directories deep refused");
		d[o++] = 'd';
		d[o++] = '/';
		d[o] = 'f';
		d[o + 1] = 0;
		CHECK(!ss_manifest_name_ok(d), "name 65 directories deep accepted");
	}
	char *n = malloc(SS_MANIFEST_MAX_NAME + 2);
	REQUIRE(n, "oom");
	memset(n, 'x', SS_MANIFEST_MAX_NAME);
	n[SS_MANIFEST_MAX_NAME] = 0;
	CHECK(ss_manifest_name_ok(n), "4096-byte name refused");
	n[SS_MANIFEST_MAX_NAME] = 'x';
	n[SS_MANIFEST_MAX_NAME + 1] = 0;
	CHECK(!ss_manifest_name_ok(n), "4097-byte name accepted");
	free(n);
}

static void test_free_partial(void)
{
	printf("free of half-built manifests\n");
	ss_manifest_free(NULL);
	struct ss_manifest *m = xcalloc(1, sizeof(*m));
	m->nfiles = 3; /* counts without arrays */
	m->nlabels = 2;
	m->nparents = 4;
	ss_manifest_free(m);
	m = xcalloc(1, sizeof(*m));
	m->files = xcalloc(3, sizeof(*m->files));
	m->nfiles = 3;
	m->files[1].name = xstrdup("x");
	m->labels = xcalloc(2, sizeof(*m->labels));
	m->nlabels = 2;
	m->labels[0].key = xstrdup("k");
	m->parents = xcalloc(2, sizeof(char *));
	m->nparents = 2;
	ss_manifest_free(m);
}

static void test_size(unsigned per_frame)
{
	const size_t n = 100000;
	printf("size (%zu chunks, %u per frame)\n", n, per_frame);
	struct ss_manifest *m = make_manifest(n, per_frame);
	uint8_t *b = NULL;
	size_t l = 0;
	double t0 = now_s();
	REQUIRE(ss_manifest_encode(m, &b, &l) == 0, "encode");
	double t1 = now_s();
	struct ss_manifest *d = NULL;
	struct ss_err err = { 0 };
	REQUIRE(ss_manifest_decode(b, l, &d, &err) == 0, "decode: %s", err.msg);
	double t2 = now_s();
	size_t next = 0;
	for (size_t i = 0; i < m->nfiles; i++)
		next += m->files[i].next;
	double per = (double)l / (double)n;
	printf("  %zu chunks, %zu extents, %zu packs: %zu bytes = %.2f bytes/chunk "
	       "(encode %.0f ms, decode %.0f ms)\n", n, next, m->npacks, l, per,
	       (t1 - t0) * 1e3, (t2 - t1) * 1e3);
	CHECK(per <= 40.0, "%.2f bytes/chunk is more than 40", per);
	CHECK(encoded_frame_offs(b, l, NULL) == (per_frame ? n : 0), "frame offset column");
	compare(m, d);
	ss_manifest_free(d);
	ss_manifest_free(m);
	free(b);
}

/* Many small files: the decoder's memory budget must not refuse them. */
static void test_many_files(void)
{
	const size_t n = SS_MANIFEST_MAX_FILES;
	printf("many files (%zu)\n", n);
	struct ss_manifest *m = xcalloc(1, sizeof(*m));
	m->root_is_dir = true;
	m->files = xcalloc(n, sizeof(*m->files));
	m->nfiles = n;
	for (size_t i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "f%zu", i);
		m->files[i].name = xstrdup(name);
		m->files[i].mode = 0644;
		m->files[i].mtime_ns = 1700000000000000000ll + (int64_t)i;
		set_digest(&m->files[i]);
	}
	uint8_t *b = NULL;
	size_t l = 0;
	double t0 = now_s();
	REQUIRE(ss_manifest_encode(m, &b, &l) == 0, "encode");
	double t1 = now_s();
	struct ss_manifest *d = NULL;
	struct ss_err err = { 0 };
	int r = ss_manifest_decode(b, l, &d, &err);
	double t2 = now_s();
	CHECK(r == 0, "decode of %zu files: %s", n, err.msg);
	printf("  %zu bytes (encode %.0f ms, decode %.0f ms)\n", l, (t1 - t0) * 1e3,
	       (t2 - t1) * 1e3);
	if (d)
		compare(m, d);
	ss_manifest_free(d);
	ss_manifest_free(m);
	free(b);
}

/* A file name holding a NUL byte, which protobuf-c would pass on cut
 * short ("disk.img\0/../x" read as "disk.img"): written on the wire, since
 * protobuf-c packs C strings. */
static void refuse_nul_name(void)
{
	static const char mark[] = "empty-NUL-HERE";
	Envelope *e = env_unpack(g_base, g_base_len);
	Snapshot *s = env_snapshot(e);
	set_name(s, 2, mark);
	size_t n = snapstream__v1__snapshot__get_packed_size(s);
	uint8_t *raw = malloc(n);
	REQUIRE(raw, "oom");
	snapstream__v1__snapshot__pack(s, raw);
	uint8_t *at = memmem(raw, n, mark, sizeof(mark) - 1);
	REQUIRE(at, "marker not in the packed snapshot");
	at[5] = 0;   /* "empty\0NUL-HERE" */
	env_set_raw_body(e, raw, n);
	size_t len;
	uint8_t *b = env_pack(e, &len);
	expect_refused("name holding a NUL", b, len, -EBADMSG, "NUL byte");
	free(b);
	free(raw);
	snapstream__v1__snapshot__free_unpacked(s, NULL);
	snapstream__v1__envelope__free_unpacked(e, NULL);
}

static void test_refusals(void)
{
	printf("refusals\n");
	struct ss_manifest *m = make_manifest(200, 8);
	uint8_t *base = NULL, *plain = NULL;
	size_t base_len = 0, plain_len = 0;
	REQUIRE(ss_manifest_encode(m, &base, &base_len) == 0, "encode");
	ss_manifest_free(m);
	m = make_manifest(200, 0);
	REQUIRE(ss_manifest_encode(m, &plain, &plain_len) == 0, "encode");
	ss_manifest_free(m);
	g_base = base;
	g_base_len = base_len;

	/* Sanity: an unedited re-pack decodes. */
	size_t l;
	uint8_t *b = edited(NULL, NULL, &l);
	ss_manifest_free(expect_ok("unedited", b, l));
	free(b);

	refuse_env("newer major", v_major_next, -EPROTONOSUPPORT, "newer snapstream");
	refuse_env("major 4294967295", v_major_huge, -EPROTONOSUPPORT, "newer snapstream");
	refuse_env("major 0", v_major0, -EBADMSG, "format version 0");
	refuse_env("flipped body byte", v_flip_body, -EBADMSG, "checksum mismatch");
	refuse_env("15-byte checksum", v_sum_short, -EBADMSG, "checksum");
	refuse_env("no checksum", v_sum_missing, -EBADMSG, "checksum");
	refuse_env("raw size +1", v_raw_plus, -EBADMSG, "decompresses to");
	refuse_env("raw size -1", v_raw_minus, -EBADMSG, "decompresses to");
	refuse_env("raw size over limit", v_raw_huge, -EFBIG, "limit");
	refuse_env("raw size 2^64-1", v_raw_max, -EFBIG, "limit");
	refuse_env("unknown body codec", v_codec7, -EBADMSG, "codec");
	refuse_env("codec 0 size lie", v_codec_raw_lie, -EBADMSG, "envelope says");
	refuse_env("bomb (frame size)", v_bomb_fcs, -EBADMSG, "decompresses to");
	refuse_env("bomb (no frame size)", v_bomb_nofcs, -EBADMSG, "declare");
	refuse_env("bomb (second frame)", v_bomb_concat, -EBADMSG, "decompress");
	refuse_env("64 MiB of zeros", v_zeros_honest, -EBADMSG, "does not parse");
	refuse_env("unknown-field flood", v_unknown_flood, -EBADMSG, "memory");
	refuse_env("garbage body", v_garbage_body, -EBADMSG, "parse");

	/* The newer-major check happens even when nothing else parses. */
	{
		const uint8_t future[] = { 0x08, SS_MANIFEST_MAJOR + 1, 0x2a, 0x7f, 0x01 };
		char fx[16];
		snprintf(fx, sizeof(fx), "%u.x", SS_MANIFEST_MAJOR + 1);
		expect_refused("newer major, odd body", future, sizeof(future), -EPROTONOSUPPORT, fx);
		const uint8_t junk[] = "this is not a manifest";
		expect_refused("text", junk, sizeof(junk) - 1, -EBADMSG, NULL);
		expect_refused("empty buffer", junk, 0, -EBADMSG, "empty");
		/* Length bound checked before anything is read. */
		expect_refused("over 1 GiB", junk, (size_t)SS_MANIFEST_MAX_SIZE + 1, -EFBIG,
			       "limit");
	}

	refuse_snap("name ..", e_name_dotdot, "\"..\"");
	refuse_snap("name a/../../etc/passwd", e_name_dotdot_mid, "'..'");
	refuse_snap("name ./a", e_name_dot, "'.'");
	refuse_snap("absolute name", e_name_abs, "absolute");
	refuse_snap("name a//b", e_name_dslash, "empty component");
	refuse_snap("name a/", e_name_trail, "ends with");
	refuse_snap("name with ESC", e_name_ctrl, "a\\x1b[31mred");
	refuse_snap("name with DEL", e_name_del, "control");
	refuse_snap("empty name", e_name_empty, "empty");
	refuse_snap("5000-byte name", e_name_long, "longer than");
	refuse_snap("duplicate name", e_name_dup, "twice");
	refuse_snap("file inside a file", e_name_prefix, "disk.img/inner");
	refuse_snap("dir prefix of a file", e_name_prefix2, "dir/sub");
	accept_snap("name 64 directories deep", e_name_depth64);
	refuse_snap("name 65 directories deep", e_name_depth65, "more than 64 directories deep");
	refuse_nul_name();

	/* One-file snapshots: one file, named as push names it. */
	accept_snap("one-file snapshot", e_one_file);
	refuse_snap("one-file name with '/'", e_one_file_slash, "with a '/'");
	refuse_snap("one-file name sub/disk.img", e_one_file_slash2, "\"sub/disk.img\"");
	refuse_snap("one-file snapshot of 5 files", e_one_file_two, "lists 5 files");
	refuse_snap("one-file snapshot of 0 files", e_one_file_none, "lists 0 files");
	{
		/* Every other name push refuses, in a one-file snapshot too. */
		static const char *bad[] = { "", ".", "..", "/", "/etc/passwd", "a\nb", "a\x7f" };
		for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
			g_one_name = bad[i];
			refuse_snap("one-file bad name", e_one_file_named, NULL);
		}
		char *n = malloc(SS_MANIFEST_MAX_NAME + 2);
		REQUIRE(n, "oom");
		memset(n, 'x', SS_MANIFEST_MAX_NAME + 1);
		n[SS_MANIFEST_MAX_NAME + 1] = 0;
		g_one_name = n;
		refuse_snap("one-file 4097-byte name", e_one_file_named, "longer than");
		free(n);
	}
	refuse_snap("extents > size", e_size, "disk.img");
	refuse_snap("extents < size", e_size_small, "zeros.bin");
	refuse_snap("chunk index out of range", e_chunk_oor, "refers to chunk");
	refuse_snap("extent != chunk length", e_chunk_len, "holds");
	refuse_snap("pack index out of range", e_pack_oor, "refers to pack");
	refuse_snap("column length mismatch", e_cols, "inconsistent");
	refuse_snap("codec column missing", e_cols_codec, "inconsistent");
	refuse_snap("chunk ids not 16n", e_ids_len, "multiple of 16");
	refuse_snap("15-byte pack id", e_pack_id_len, "not 16");
	refuse_snap("extent arrays differ", e_ext_arrays, "extent chunks");
	refuse_snap("chunk codec 2", e_codec2, "codec");
	refuse_snap("chunk codec 257", e_codec257, "codec 257");
	refuse_snap("stored length 0", e_stored0, "stored length");
	refuse_snap("stored length too big", e_stored_big, "stored length");
	refuse_snap("raw length 0", e_raw0, "raw length");
	refuse_snap("raw length > max", e_raw_big, "raw length");
	refuse_snap("raw codec, stored != raw", e_raw_codec, "uncompressed");
	refuse_snap("offset past any pack", e_offset, "offset");
	refuse_snap("15-byte digest", e_digest, "digest");
	refuse_snap("avg not a power of two", e_params_pow2, "chunking parameters");
	refuse_snap("max > segment", e_params_order, "chunking parameters");
	refuse_snap("no chunk params", e_params_missing, "chunking parameters");
	refuse_snap("empty extent", e_ext_zero, "empty");
	refuse_snap("extent sum overflow", e_ext_overflow, "overflow");
	refuse_snap("mode with type bits", e_mode, "mode");
	refuse_snap("label with newline", e_label_ctrl, "control");
	refuse_snap("empty label key", e_label_key_empty, "empty key");
	refuse_snap("empty parent", e_parent_empty, "parent");
	refuse_snap("1025 labels", e_many_labels, "labels");

	/* Frames. */
	refuse_snap("zstd stored > frame bound", e_stored_big_zstd, "frame maximum");
	accept_snap("zstd stored = frame bound", e_stored_max_zstd);
	refuse_snap("raw chunk with frame_off 7", e_fo_raw, "frame offset 7, not 0");
	refuse_snap("frame_off + raw > frame_max", e_fo_past, "past the frame maximum");
	accept_snap("frame_off + raw = frame_max", e_fo_at_end);
	refuse_snap("frame_off 2^32-1", e_fo_wrap, "past the frame maximum");
	refuse_snap("frame_off, frame_max 0", e_fo_no_frames, "no frames");
	refuse_snap("frame_max < chunk_max", e_fmax_small, "below the chunk maximum");
	refuse_snap("frame_max over the limit", e_fmax_big, "over the limit");
	accept_snap("frame_max at the limit", e_fmax_limit);
	refuse_snap("frame_off column short", e_fo_cols, "199 frame offsets");
	g_base = plain;
	g_base_len = plain_len;
	accept_snap("no frames, zero column", e_plain_fo_zeros);
	refuse_snap("no frames, column of 1", e_plain_fo_cols, "1 frame offsets");
	refuse_snap("no frames, frame_off 4096", e_plain_fo, "no frames");
	g_base = base;
	g_base_len = base_len;

	free(base);
	free(plain);
}

static void test_truncation_and_flips(void)
{
	printf("truncation and random damage\n");
	struct ss_manifest *m = make_manifest(40, 4);
	uint8_t *b = NULL;
	size_t l = 0;
	REQUIRE(ss_manifest_encode(m, &b, &l) == 0, "encode");
	ss_manifest_free(m);
	size_t accepted = 0;
	for (size_t n = 0; n < l; n++) {
		/* A fresh allocation of exactly n bytes, so ASan sees overreads. */
		uint8_t *t = malloc(n ? n : 1);
		REQUIRE(t, "oom");
		memcpy(t, b, n);
		struct ss_manifest *d = NULL;
		struct ss_err err = { 0 };
		int r = ss_manifest_decode(t, n, &d, &err);
		if (r == 0) {
			accepted++;
			ss_manifest_free(d);
		} else {
			CHECK(err.code == r && err.msg[0], "no message for truncation at %zu", n);
		}
		free(t);
	}
	CHECK(accepted == 0, "%zu truncated manifests accepted", accepted);
	printf("  all %zu truncations refused\n", l);

	size_t ok = 0, refused = 0;
	for (int it = 0; it < 4000; it++) {
		uint8_t *t = malloc(l);
		REQUIRE(t, "oom");
		memcpy(t, b, l);
		int flips = 1 + (int)(rnd() % 4);
		for (int k = 0; k < flips; k++) {
			size_t pos = rnd() % l;
			if (it % 3 == 0 && pos > 32)
				pos = rnd() % 32; /* hit the envelope header often */
			t[pos] ^= (uint8_t)(1u << (rnd() % 8));
		}
		struct ss_manifest *d = NULL;
		struct ss_err err = { 0 };
		int r = ss_manifest_decode(t, l, &d, &err);
		if (r == 0) {
			ok++;
			struct ss_err e2 = { 0 };
			CHECK(ss_manifest_validate(d, &e2) == 0, "accepted but invalid: %s", e2.msg);
			ss_manifest_free(d);
		} else {
			refused++;
			CHECK(d == NULL && err.msg[0], "refusal without message");
		}
		free(t);
	}
	printf("  4000 damaged copies: %zu refused, %zu still valid\n", refused, ok);

	/* The same for damage inside the body, re-checksummed so it reaches
	 * the decompressor and the parser. */
	g_base = b;
	g_base_len = l;
	Envelope *e0 = env_unpack(b, l);
	Snapshot *s0 = env_snapshot(e0);
	size_t rl = snapstream__v1__snapshot__get_packed_size(s0);
	uint8_t *raw = malloc(rl);
	REQUIRE(raw, "oom");
	snapstream__v1__snapshot__pack(s0, raw);
	snapstream__v1__snapshot__free_unpacked(s0, NULL);
	ok = refused = 0;
	for (int it = 0; it < 3000; it++) {
		uint8_t *r2 = malloc(rl);
		REQUIRE(r2, "oom");
		memcpy(r2, raw, rl);
		int flips = 1 + (int)(rnd() % 3);
		for (int k = 0; k < flips; k++)
			r2[rnd() % rl] ^= (uint8_t)(1u << (rnd() % 8));
		Envelope *e = env_unpack(b, l);
		if (it % 2)
			env_set_raw_body(e, r2, rl);
		else {
			/* Damage the compressed bytes instead. */
			env_set_raw_body(e, raw, rl);
			e->body.data[rnd() % e->body.len] ^= (uint8_t)(1u << (rnd() % 8));
			env_rechecksum(e);
		}
		size_t el;
		uint8_t *eb = env_pack(e, &el);
		snapstream__v1__envelope__free_unpacked(e, NULL);
		struct ss_manifest *d = NULL;
		struct ss_err err = { 0 };
		int r = ss_manifest_decode(eb, el, &d, &err);
		if (r == 0) {
			ok++;
			struct ss_err e2 = { 0 };
			CHECK(ss_manifest_validate(d, &e2) == 0, "accepted but invalid: %s", e2.msg);
			ss_manifest_free(d);
		} else {
			refused++;
		}
		free(eb);
		free(r2);
	}
	printf("  3000 damaged bodies (checksum fixed): %zu refused, %zu still valid\n", refused,
	       ok);
	free(raw);
	snapstream__v1__envelope__free_unpacked(e0, NULL);
	free(b);
}

int main(int argc, char **argv)
{
	(void)argv;
	bool quick = argc > 1;
	test_names();
	test_free_partial();
	test_round_trip();
	test_encode_refuses_invalid();
	test_refusals();
	test_truncation_and_flips();
	test_size(0);
	test_size(8);
	if (!quick)
		test_many_files();
	if (failures) {
		fprintf(stderr, "test_manifest: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_manifest: ok\n");
	return 0;
}
