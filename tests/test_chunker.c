/* test_chunker — cut rules, split invariance, streaming, stability of the
 * chunk format (gear table, masks, golden digest).
 *
 * Exit 0 pass, 1 fail. Checks stay active in release builds (no assert()).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "chunker.h"
#include "util.h"

#define PAGE ((size_t)SS_PAGE_SIZE)

#define CHECK(cond, ...)                                                    \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, \
				__LINE__, #cond);                           \
			fprintf(stderr, __VA_ARGS__);                       \
			fputc('\n', stderr);                                \
			exit(1);                                            \
		}                                                           \
	} while (0)

/* Recorded from this implementation after it matched the reference; a
 * change here is a change of the on-disk chunk format. */
#define GOLDEN_N 504
#define GOLDEN_DIGEST 0x1d0ae5a794fee5abull

static const char *g_case = "";  /* current case, for messages */
static unsigned g_files;

/* ---- helpers ---------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t *s, uint64_t n)
{
	return splitmix64(s) % n;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	CHECK(p, "out of memory (%zu bytes)", n);
	return p;
}

struct ext {
	uint64_t off, len;
	uint8_t kind;
};

struct extlist {
	struct ext *v;
	size_t n, alloc;
};

static void el_push(struct extlist *l, uint64_t off, uint64_t len, uint8_t kind)
{
	if (l->n == l->alloc) {
		l->alloc = l->alloc ? 2 * l->alloc : 256;
		l->v = realloc(l->v, l->alloc * sizeof(*l->v));
		CHECK(l->v, "out of memory");
	}
	l->v[l->n++] = (struct ext){ off, len, kind };
}

static void el_free(struct extlist *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* Adjacent zero runs merged, as callers see them. */
static struct extlist el_merged(const struct extlist *l)
{
	struct extlist m = { 0 };
	for (size_t i = 0; i < l->n; i++) {
		const struct ext *e = &l->v[i];
		if (m.n && e->kind == SS_EXTENT_ZERO && m.v[m.n - 1].kind == SS_EXTENT_ZERO &&
		    m.v[m.n - 1].off + m.v[m.n - 1].len == e->off)
			m.v[m.n - 1].len += e->len;
		else
			el_push(&m, e->off, e->len, e->kind);
	}
	return m;
}

static void el_expect_equal(const struct extlist *a, const struct extlist *b, const char *what)
{
	size_t n = a->n < b->n ? a->n : b->n;
	for (size_t i = 0; i < n; i++) {
		const struct ext *x = &a->v[i], *y = &b->v[i];
		CHECK(x->off == y->off && x->len == y->len && x->kind == y->kind,
		      "[%s] %s: extent %zu differs: off %llu len %llu kind %u vs off %llu len %llu kind %u",
		      g_case, what, i, (unsigned long long)x->off, (unsigned long long)x->len,
		      x->kind, (unsigned long long)y->off, (unsigned long long)y->len, y->kind);
	}
	CHECK(a->n == b->n, "[%s] %s: %zu vs %zu extents", g_case, what, a->n, b->n);
}

/* ---- the three ways of chunking --------------------------------------- */

/* Whole file in one window, eof set. */
static struct extlist chunk_whole(const struct ss_chunker *c, const uint8_t *buf, size_t size)
{
	struct extlist l = { 0 };
	size_t off = 0;
	while (off < size) {
		struct ss_extent e;
		int r = ss_chunk_next(c, buf + off, size - off, off, true, &e);
		CHECK(r == 1, "[%s] ss_chunk_next at %zu with eof returned %d", g_case, off, r);
		CHECK(e.len > 0 && e.len <= size - off, "[%s] bad extent length %llu at %zu",
		      g_case, (unsigned long long)e.len, off);
		el_push(&l, off, e.len, e.kind);
		off += e.len;
	}
	return l;
}

struct emit_ctx {
	struct extlist l;
	const uint8_t *file;
	uint64_t next;
	int fail_after;  /* return -EIO from this call on; < 0 never */
	int calls;
};

static int emit_cb(void *arg, uint64_t off, const struct ss_extent *e, const uint8_t *bytes)
{
	struct emit_ctx *x = arg;
	if (x->fail_after >= 0 && x->calls >= x->fail_after)
		return -EIO;
	x->calls++;
	CHECK(off == x->next, "[%s] stream emitted offset %llu, expected %llu", g_case,
	      (unsigned long long)off, (unsigned long long)x->next);
	CHECK(e->len > 0, "[%s] empty extent", g_case);
	if (e->kind == SS_EXTENT_CHUNK)
		CHECK(bytes && memcmp(bytes, x->file + off, e->len) == 0,
		      "[%s] stream chunk bytes at %llu do not match the file", g_case,
		      (unsigned long long)off);
	else
		CHECK(bytes == NULL, "[%s] zero run with bytes", g_case);
	el_push(&x->l, off, e->len, e->kind);
	x->next = off + e->len;
	return 0;
}

/* Stream with random read sizes: mostly tiny, medium or up to 1 MiB. */
static struct extlist chunk_stream(const struct ss_chunker *c, const uint8_t *buf, size_t size,
				   uint64_t seed)
{
	struct emit_ctx x = { .file = buf, .fail_after = -1 };
	struct ss_chunk_stream *s = ss_chunk_stream_new(c);
	CHECK(s, "ss_chunk_stream_new failed");
	size_t off = 0;
	while (off < size) {
		size_t rd;
		switch (rnd_below(&seed, 4)) {
		case 0: rd = 1 + rnd_below(&seed, 16); break;
		case 1: rd = 1 + rnd_below(&seed, 8192); break;
		case 2: rd = 1 + rnd_below(&seed, 128 * 1024); break;
		default: rd = 1 + rnd_below(&seed, 1024 * 1024); break;
		}
		if (rd > size - off)
			rd = size - off;
		/* An exact-size copy lets ASan see reads past the read. */
		uint8_t *piece = xmalloc(rd);
		memcpy(piece, buf + off, rd);
		int r = ss_chunk_stream_feed(s, piece, rd, emit_cb, &x);
		free(piece);
		CHECK(r == 0, "[%s] feed returned %d", g_case, r);
		off += rd;
	}
	int r = ss_chunk_stream_finish(s, emit_cb, &x);
	CHECK(r == 0, "[%s] finish returned %d", g_case, r);
	CHECK(x.next == size, "[%s] stream covered %llu of %zu bytes", g_case,
	      (unsigned long long)x.next, size);
	ss_chunk_stream_free(s);
	return x.l;
}

/* Independent reference, written from the format description: one byte per
 * step, gear table regenerated from its documented seed, masks derived by
 * the documented rule. Any change to the cut points shows up here. */
static uint64_t ref_gear[256];

static void ref_init(void)
{
	uint64_t s = 0x7373676561723031ull; /* "ssgear01" */
	for (int i = 0; i < 256; i++)
		ref_gear[i] = splitmix64(&s);
}

static uint64_t ref_mask(unsigned k)
{
	/* k bits spread evenly from bit 62 down to bit 15, rounded half up. */
	uint64_t m = 0;
	for (unsigned j = 0; j < k; j++) {
		double step = (double)j * 47.0 / (double)(k - 1);
		m |= 1ull << (62u - (unsigned)(step + 0.5));
	}
	return m;
}

static bool ref_page_zero(const uint8_t *buf, size_t size, size_t q)
{
	size_t end = q + PAGE < size ? q + PAGE : size;
	for (size_t i = q; i < end; i++)
		if (buf[i])
			return false;
	return true;
}

static struct extlist chunk_ref(const struct ss_chunk_params *p, const uint8_t *buf, size_t size)
{
	unsigned bits = 0;
	while ((1u << bits) < p->avg_size)
		bits++;
	uint64_t ms = ref_mask(bits + 2), ml = ref_mask(bits - 2);
	struct extlist l = { 0 };
	size_t off = 0;
	while (off < size) {
		size_t seg_end = (off / p->seg_size + 1) * p->seg_size;
		if (seg_end > size)
			seg_end = size;
		if (off % PAGE == 0 && ref_page_zero(buf, size, off)) {
			size_t q = off;
			while (q < seg_end && ref_page_zero(buf, size, q))
				q = q + PAGE < seg_end ? q + PAGE : seg_end;
			el_push(&l, off, q - off, SS_EXTENT_ZERO);
			off = q;
			continue;
		}
		size_t limit = off + p->max_size < seg_end ? off + p->max_size : seg_end;
		for (size_t q = (off / PAGE + 1) * PAGE; q < limit; q += PAGE)
			if (ref_page_zero(buf, size, q)) {
				limit = q;
				break;
			}
		size_t cut = limit;
		uint64_t fp = 0;
		for (size_t i = off + p->min_size - 64; i < limit; i++) {
			fp = (fp << 1) + ref_gear[buf[i]];
			size_t len = i + 1 - off;
			if (len < p->min_size)
				continue;
			if (!(fp & (len <= p->avg_size ? ms : ml))) {
				cut = i + 1;
				break;
			}
		}
		el_push(&l, off, cut - off, SS_EXTENT_CHUNK);
		off = cut;
	}
	return l;
}

/* ---- invariants --------------------------------------------------------- */

static void check_invariants(const struct ss_chunk_params *p, const struct extlist *l,
			     const uint8_t *buf, size_t size)
{
	uint64_t off = 0;
	for (size_t i = 0; i < l->n; i++) {
		const struct ext *e = &l->v[i];
		uint64_t end = e->off + e->len;
		CHECK(e->off == off, "[%s] extent %zu at %llu, expected %llu", g_case, i,
		      (unsigned long long)e->off, (unsigned long long)off);
		CHECK(e->len > 0, "[%s] empty extent %zu", g_case, i);
		CHECK(e->off / p->seg_size == (end - 1) / p->seg_size,
		      "[%s] extent %zu [%llu,%llu) crosses a segment boundary", g_case, i,
		      (unsigned long long)e->off, (unsigned long long)end);
		if (e->kind == SS_EXTENT_ZERO) {
			CHECK(e->off % PAGE == 0, "[%s] unaligned zero run at %llu", g_case,
			      (unsigned long long)e->off);
			CHECK(e->len % PAGE == 0 || end == size,
			      "[%s] zero run of %llu bytes not whole pages", g_case,
			      (unsigned long long)e->len);
			CHECK(ss_is_zero(buf + e->off, e->len), "[%s] zero run at %llu has data",
			      g_case, (unsigned long long)e->off);
		} else {
			CHECK(e->kind == SS_EXTENT_CHUNK, "[%s] bad kind %u", g_case, e->kind);
			CHECK(e->len <= p->max_size, "[%s] chunk of %llu > max", g_case,
			      (unsigned long long)e->len);
			bool forced = end == size || end % p->seg_size == 0 ||
				      (i + 1 < l->n && l->v[i + 1].kind == SS_EXTENT_ZERO);
			CHECK(e->len >= p->min_size || forced,
			      "[%s] chunk of %llu at %llu below min without a forced end", g_case,
			      (unsigned long long)e->len, (unsigned long long)e->off);
			for (uint64_t q = SS_ALIGN_UP(e->off, PAGE); q < end; q += PAGE) {
				uint64_t pe = q + PAGE < size ? q + PAGE : size;
				CHECK(!ss_is_zero(buf + q, pe - q),
				      "[%s] chunk [%llu,%llu) contains the zero page at %llu", g_case,
				      (unsigned long long)e->off, (unsigned long long)end,
				      (unsigned long long)q);
			}
		}
		off = end;
	}
	CHECK(off == size, "[%s] extents sum to %llu, file is %zu", g_case,
	      (unsigned long long)off, size);
}

/* ss_chunk_next on windows shorter than the rest of the file, eof false:
 * when it answers, the answer is the whole-file one (a zero run may be a
 * page-multiple prefix); it may say "need more" only when allowed. */
static void check_windows(const struct ss_chunker *c, const struct extlist *whole,
			  const uint8_t *buf, size_t size, uint64_t seed)
{
	const struct ss_chunk_params *p = &c->p;
	for (size_t i = 0; i < whole->n; i++) {
		const struct ext *e = &whole->v[i];
		size_t rest = size - e->off;
		for (int t = 0; t < 3; t++) {
			size_t n;
			if (t == 0)
				n = 1 + rnd_below(&seed, rest);
			else if (t == 1)
				n = 1 + rnd_below(&seed, p->max_size + PAGE);
			else
				n = p->max_size + PAGE + rnd_below(&seed, 2 * PAGE);
			if (n > rest)
				n = rest;
			struct ss_extent x;
			/* Exact-size copy of the short windows so ASan sees over-reads. */
			uint8_t *win = t ? xmalloc(n) : NULL;
			if (win)
				memcpy(win, buf + e->off, n);
			int r = ss_chunk_next(c, win ? win : buf + e->off, n, e->off, false, &x);
			free(win);
			uint64_t to_seg = p->seg_size - e->off % p->seg_size;
			if (r == 0) {
				CHECK(n < (size_t)p->max_size + PAGE && n < to_seg,
				      "[%s] need-more at %llu with n=%zu (max %u, to_seg %llu)",
				      g_case, (unsigned long long)e->off, n, p->max_size,
				      (unsigned long long)to_seg);
				continue;
			}
			CHECK(r == 1, "[%s] ss_chunk_next returned %d", g_case, r);
			CHECK(x.kind == e->kind, "[%s] window n=%zu at %llu: kind %u vs %u", g_case,
			      n, (unsigned long long)e->off, x.kind, e->kind);
			if (e->kind == SS_EXTENT_CHUNK) {
				CHECK(x.len == e->len, "[%s] window n=%zu at %llu: chunk %llu vs %llu",
				      g_case, n, (unsigned long long)e->off,
				      (unsigned long long)x.len, (unsigned long long)e->len);
			} else {
				CHECK(x.len <= e->len && (x.len % PAGE == 0 || x.len == e->len),
				      "[%s] window n=%zu at %llu: zero piece %llu of %llu", g_case, n,
				      (unsigned long long)e->off, (unsigned long long)x.len,
				      (unsigned long long)e->len);
			}
		}
	}
}

/* Everything for one file and one parameter set. */
static void check_file(const struct ss_chunk_params *p, const uint8_t *buf, size_t size,
		       uint64_t seed)
{
	struct ss_chunker c;
	CHECK(ss_chunker_init(&c, p) == 0, "[%s] init failed", g_case);
	/* Work on an exact-size copy so ASan sees reads past the end. */
	uint8_t *copy = xmalloc(size);
	memcpy(copy, buf, size);
	buf = copy;

	struct extlist whole = chunk_whole(&c, buf, size);
	check_invariants(p, &whole, buf, size);
	struct extlist mw = el_merged(&whole);

	struct extlist ref = chunk_ref(p, buf, size);
	struct extlist mr = el_merged(&ref);
	el_expect_equal(&mw, &mr, "whole vs reference");

	for (int k = 0; k < 3; k++) {
		struct extlist st = chunk_stream(&c, buf, size, seed + (uint64_t)k * 7919);
		check_invariants(p, &st, buf, size);
		struct extlist ms = el_merged(&st);
		el_expect_equal(&mw, &ms, "whole vs stream");
		el_free(&ms);
		el_free(&st);
	}
	check_windows(&c, &whole, buf, size, seed ^ 0x5a5a);

	el_free(&mr);
	el_free(&ref);
	el_free(&mw);
	el_free(&whole);
	free(copy);
}

/* ---- data --------------------------------------------------------------- */

static void fill_random(uint8_t *p, size_t n, uint64_t *seed)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v = splitmix64(seed);
		memcpy(p + i, &v, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)splitmix64(seed);
}

static void fill_text(uint8_t *p, size_t n, uint64_t *seed)
{
	static const char *words[] = { "the ", "sandbox ", "checkpoint ", "page ", "memory ",
				       "stream ", "of ", "zero ", "chunk ", "\n", "0x7fff ",
				       "error: ", "ok ", "{\"id\": ", "}, " };
	size_t i = 0;
	while (i < n) {
		const char *w = words[rnd_below(seed, SS_ARRAY_SIZE(words))];
		for (; *w && i < n; w++)
			p[i++] = (uint8_t)*w;
	}
}

/* Memory-like mix of pages plus zero spans at unaligned offsets, sparse
 * pages and a long constant stretch (no gear cuts: forces max_size). */
static void fill_mixed(uint8_t *p, size_t n, uint64_t *seed)
{
	for (size_t q = 0; q < n; q += PAGE) {
		size_t len = n - q < PAGE ? n - q : PAGE;
		switch (rnd_below(seed, 8)) {
		case 0: case 1: memset(p + q, 0, len); break;
		case 2: case 3: fill_text(p + q, len, seed); break;
		case 4: /* sparse: a few non-zero words */
			memset(p + q, 0, len);
			for (int k = 0; k < 3; k++)
				p[q + rnd_below(seed, len)] = (uint8_t)(1 + rnd_below(seed, 255));
			break;
		default: fill_random(p + q, len, seed); break;
		}
	}
	for (int k = 0; k < 8 && n > 70000; k++) {
		size_t at = rnd_below(seed, n - 70000);
		memset(p + at, 0, 1 + rnd_below(seed, 65536));
	}
	if (n > 3u * 1024 * 1024)
		memset(p + 2u * 1024 * 1024 + 77, 0xff, 700000);
	/* A long zero run across a segment boundary of the small sets. */
	if (n > 600000)
		memset(p + 300001, 0, 200000);
}

/* ---- test cases --------------------------------------------------------- */

static const struct ss_chunk_params P_DEFAULT = {
	SS_CHUNK_MIN_DEFAULT, SS_CHUNK_AVG_DEFAULT, SS_CHUNK_MAX_DEFAULT, SS_CHUNK_SEG_DEFAULT
};
/* The parameters the golden cut points and masks were recorded with (the
 * defaults until 8 KiB chunks): manifests name their parameters, so the
 * cut points of every size ever used stay format. */
static const struct ss_chunk_params P_GOLDEN = { 16u * 1024, 64u * 1024, 256u * 1024, 4u << 20 };
/* Small sizes: many chunks, many segment ends; odd min and max. */
static const struct ss_chunk_params P_SMALL = { 1001, 4096, 15001, 65536 };
/* max == seg, and max < a page. */
static const struct ss_chunk_params P_MAXSEG = { 2048, 8192, 32768, 32768 };
static const struct ss_chunk_params P_TINY = { 64, 256, 1000, 4096 };

static void test_params(void)
{
	g_case = "params";
	struct ss_chunker c;
	struct ss_chunk_params bad[] = {
		{ 63, 256, 1024, 4096 },          /* min < 64 */
		{ 256, 256, 1024, 4096 },         /* min == avg */
		{ 1024, 3000, 8192, 8192 },       /* avg not a power of two */
		{ 64, 128, 1024, 4096 },          /* avg < 256 */
		{ 1024, 8u << 20, 16u << 20, 16u << 20 }, /* avg > 4 MiB */
		{ 1024, 4096, 4096, 8192 },       /* max == avg */
		{ 1024, 4096, 16384, 8192 },      /* max > seg */
		{ 1024, 4096, 8192, 10000 },      /* seg not page multiple */
		{ 1024, 4096, 8192, (1u << 30) + 4096 }, /* seg > 1 GiB */
		{ 0, 0, 0, 0 },
	};
	for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++)
		CHECK(ss_chunker_init(&c, &bad[i]) == -EINVAL, "bad params %zu accepted", i);
	CHECK(ss_chunker_init(&c, NULL) == -EINVAL, "NULL params accepted");
	CHECK(ss_chunker_init(NULL, &P_DEFAULT) == -EINVAL, "NULL chunker accepted");

	struct ss_chunk_params good[] = {
		P_DEFAULT, P_SMALL, P_MAXSEG, P_TINY,
		{ 1u << 20, 4u << 20, 16u << 20, 1u << 30 }, /* largest */
	};
	for (size_t i = 0; i < SS_ARRAY_SIZE(good); i++)
		CHECK(ss_chunker_init(&c, &good[i]) == 0, "good params %zu rejected", i);

	/* Masks: k spread bits, the same as the reference, stable. */
	for (uint32_t avg = 256; avg <= (4u << 20); avg *= 2) {
		struct ss_chunk_params q = { 64, avg, avg * 2, avg * 2 < PAGE ? PAGE : avg * 2 };
		q.seg_size = (uint32_t)SS_ALIGN_UP(q.seg_size, PAGE);
		CHECK(ss_chunker_init(&c, &q) == 0, "avg %u rejected", avg);
		unsigned bits = (unsigned)__builtin_ctz(avg);
		CHECK(__builtin_popcountll(c.mask_s) == (int)bits + 2 &&
		      __builtin_popcountll(c.mask_l) == (int)bits - 2,
		      "avg %u: mask bit counts %d/%d", avg, __builtin_popcountll(c.mask_s),
		      __builtin_popcountll(c.mask_l));
		CHECK(c.mask_s == ref_mask(bits + 2) && c.mask_l == ref_mask(bits - 2),
		      "avg %u: masks %016llx/%016llx differ from the reference", avg,
		      (unsigned long long)c.mask_s, (unsigned long long)c.mask_l);
		CHECK(c.mask_s_ls == c.mask_s << 1 && c.mask_l_ls == c.mask_l << 1 &&
		      !(c.mask_s >> 63) && !(c.mask_l >> 63), "avg %u: shifted masks", avg);
	}
	CHECK(ss_chunker_init(&c, &P_DEFAULT) == 0, "defaults rejected");
	CHECK(ss_chunker_init(&c, &P_GOLDEN) == 0, "golden parameters rejected");
	CHECK(c.mask_s == 0x4949292524a48000ull && c.mask_l == 0x4489112224488000ull,
	      "64 KiB masks changed: %016llx %016llx", (unsigned long long)c.mask_s,
	      (unsigned long long)c.mask_l);

	/* ss_chunk_next argument checks. */
	uint8_t b[16] = { 1 };
	struct ss_extent e;
	CHECK(ss_chunk_next(&c, b, 0, 0, true, &e) == -EINVAL, "n == 0 accepted");
	CHECK(ss_chunk_next(&c, b, 0, 0, false, &e) == -EINVAL, "n == 0 accepted");
	CHECK(ss_chunk_next(&c, NULL, 16, 0, true, &e) == -EINVAL, "NULL data accepted");
	CHECK(ss_chunk_next(NULL, b, 16, 0, true, &e) == -EINVAL, "NULL chunker accepted");
	CHECK(ss_chunk_next(&c, b, 16, 0, true, NULL) == -EINVAL, "NULL extent accepted");
}

/* Small hand-checked cases. */
static void test_basic(void)
{
	g_case = "basic";
	struct ss_chunker c;
	CHECK(ss_chunker_init(&c, &P_DEFAULT) == 0, "init");
	uint8_t *b = xmalloc(3 * PAGE);
	struct ss_extent e;

	/* Size 1, zero byte: the last partial page is a zero run. */
	b[0] = 0;
	CHECK(ss_chunk_next(&c, b, 1, 0, true, &e) == 1 && e.kind == SS_EXTENT_ZERO && e.len == 1,
	      "1 zero byte: kind %u len %llu", e.kind, (unsigned long long)e.len);
	/* ... but undecided without eof. */
	CHECK(ss_chunk_next(&c, b, 1, 0, false, &e) == 0, "1 zero byte without eof decided");
	/* Non-zero byte: a chunk, undecided without eof. */
	b[0] = 7;
	CHECK(ss_chunk_next(&c, b, 1, 0, true, &e) == 1 && e.kind == SS_EXTENT_CHUNK && e.len == 1,
	      "1 byte chunk");
	CHECK(ss_chunk_next(&c, b, 1, 0, false, &e) == 0, "1 byte chunk without eof decided");

	/* Data page, zero page, data: chunk ends at the zero page even
	 * without eof, the zero run is one page. */
	memset(b, 'x', PAGE);
	memset(b + PAGE, 0, PAGE);
	memset(b + 2 * PAGE, 'y', PAGE);
	CHECK(ss_chunk_next(&c, b, 3 * PAGE, 0, false, &e) == 1 && e.kind == SS_EXTENT_CHUNK &&
	      e.len == PAGE, "chunk before zero page: len %llu", (unsigned long long)e.len);
	CHECK(ss_chunk_next(&c, b + PAGE, 2 * PAGE, PAGE, false, &e) == 1 &&
	      e.kind == SS_EXTENT_ZERO && e.len == PAGE, "zero page: len %llu",
	      (unsigned long long)e.len);
	/* Unaligned start inside the data page: chunk to the zero page. */
	CHECK(ss_chunk_next(&c, b + 100, 3 * PAGE - 100, 100, false, &e) == 1 &&
	      e.len == PAGE - 100, "unaligned chunk before zero page");
	/* The zero page only partly in the window: undecided. */
	CHECK(ss_chunk_next(&c, b, PAGE + 10, 0, false, &e) == 0, "partial zero page decided");
	/* Zero run reaching the window end: returned as a piece. */
	memset(b, 0, 3 * PAGE);
	CHECK(ss_chunk_next(&c, b, 2 * PAGE + 5, 0, false, &e) == 1 && e.kind == SS_EXTENT_ZERO &&
	      e.len == 2 * PAGE, "zero piece");
	/* Segment boundary acts as a hard end: offset just before a segment. */
	memset(b, 'z', 3 * PAGE);
	uint64_t off = SS_CHUNK_SEG_DEFAULT - 1000;
	CHECK(ss_chunk_next(&c, b, 3 * PAGE, off, false, &e) == 1 && e.kind == SS_EXTENT_CHUNK &&
	      e.len == 1000, "segment end: len %llu", (unsigned long long)e.len);
	free(b);
}

/* A file: run check_file on it with every parameter set. */
static void test_file(const char *name, const uint8_t *buf, size_t size, uint64_t seed)
{
	const struct ss_chunk_params *sets[] = { &P_DEFAULT, &P_SMALL, &P_MAXSEG, &P_TINY };
	static char label[128];
	for (size_t i = 0; i < SS_ARRAY_SIZE(sets); i++) {
		snprintf(label, sizeof(label), "%s/params%zu", name, i);
		g_case = label;
		check_file(sets[i], buf, size, seed + i);
	}
	g_files++;
}

static void test_files(void)
{
	uint64_t seed = 12345;
	const size_t big = 5u * 1024 * 1024 + 3333;
	uint8_t *b = xmalloc(big);

	fill_mixed(b, big, &seed);
	test_file("mixed", b, big, 1);

	/* Ends in zeros: whole zero pages, then an unaligned zero tail. */
	memset(b + big - 3 * PAGE - 3333, 0, 3 * PAGE + 3333);
	test_file("zero-tail", b, big, 2);
	memset(b + big - 300, 0, 300);
	b[big - 3333 - 1] = 1; /* last full page non-zero, partial page zero */
	test_file("zero-partial-tail", b, big, 3);

	size_t sizes[] = { 1, 4095, 4096, 4097, SS_CHUNK_SEG_DEFAULT, SS_CHUNK_SEG_DEFAULT + 1,
			   65536, 65537, 300000 };
	for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
		char name[64];
		size_t n = sizes[i];
		fill_random(b, n, &seed);
		snprintf(name, sizeof(name), "random-%zu", n);
		test_file(name, b, n, 10 + i);
		fill_mixed(b, n, &seed);
		snprintf(name, sizeof(name), "mixed-%zu", n);
		test_file(name, b, n, 20 + i);
		memset(b, 0, n);
		snprintf(name, sizeof(name), "zero-%zu", n);
		test_file(name, b, n, 30 + i);
	}
	/* Text only: low entropy, still content-defined. */
	fill_text(b, 2u * 1024 * 1024, &seed);
	test_file("text", b, 2u * 1024 * 1024, 40);
	free(b);
}

static double frac_bytes_shared(const struct extlist *a, const uint8_t *abuf,
				const struct extlist *b, const uint8_t *bbuf, uint64_t bsize)
{
	uint64_t *h = xmalloc(a->n * sizeof(*h));
	for (size_t i = 0; i < a->n; i++)
		h[i] = XXH3_64bits(abuf + a->v[i].off, a->v[i].len);
	uint64_t shared = 0;
	for (size_t j = 0; j < b->n; j++) {
		uint64_t x = XXH3_64bits(bbuf + b->v[j].off, b->v[j].len);
		for (size_t i = 0; i < a->n; i++)
			if (h[i] == x) {
				shared += b->v[j].len;
				break;
			}
	}
	free(h);
	return (double)shared / (double)bsize;
}

static void test_shift(void)
{
	g_case = "shift";
	const size_t n = 8u * 1024 * 1024, ins = 7;
	uint64_t seed = 777;
	uint8_t *a = xmalloc(n), *b = xmalloc(n + ins);
	fill_random(a, n, &seed);
	memcpy(b, a, 1000);
	memcpy(b + 1000, "INSERT!", ins);
	memcpy(b + 1000 + ins, a + 1000, n - 1000);

	/* Segments are fixed file ranges, so each boundary re-cuts its
	 * neighbourhood; the rest must be shared. */
	struct ss_chunker c;
	CHECK(ss_chunker_init(&c, &P_DEFAULT) == 0, "init");
	struct extlist la = chunk_whole(&c, a, n), lb = chunk_whole(&c, b, n + ins);
	double f = frac_bytes_shared(&la, a, &lb, b, n + ins);
	printf("shift (defaults): %.1f%% of bytes in unchanged chunks (%zu chunks)\n",
	       100 * f, la.n);
	CHECK(f > 0.90, "only %.1f%% of bytes shared after a %zu-byte insert", 100 * f, ins);
	el_free(&la);
	el_free(&lb);

	/* With one segment the only loss is the chunk around the insert. */
	struct ss_chunk_params p = P_SMALL;
	p.seg_size = 64u * 1024 * 1024;
	CHECK(ss_chunker_init(&c, &p) == 0, "init");
	la = chunk_whole(&c, a, n);
	lb = chunk_whole(&c, b, n + ins);
	f = frac_bytes_shared(&la, a, &lb, b, n + ins);
	printf("shift (avg 4K, one segment): %.2f%% shared (%zu chunks)\n", 100 * f, la.n);
	CHECK(f > 0.99, "only %.2f%% of bytes shared after a %zu-byte insert", 100 * f, ins);
	el_free(&la);
	el_free(&lb);
	free(a);
	free(b);
}

static void test_average(void)
{
	g_case = "average";
	const size_t n = 48u * 1024 * 1024;
	uint64_t seed = 4242;
	uint8_t *b = xmalloc(n);
	fill_random(b, n, &seed);
	const struct ss_chunk_params sets[] = {
		P_DEFAULT, P_SMALL,
		{ 4096, 16384, 65536, 4u << 20 },
		{ 8192, 32768, 131072, 4u << 20 },
	};
	for (size_t i = 0; i < SS_ARRAY_SIZE(sets); i++) {
		struct ss_chunker c;
		CHECK(ss_chunker_init(&c, &sets[i]) == 0, "init");
		struct extlist l = chunk_whole(&c, b, n);
		uint64_t sum = 0, cnt = 0;
		for (size_t k = 0; k < l.n; k++) {
			/* Chunks forced by a segment end are not representative. */
			if ((l.v[k].off + l.v[k].len) % sets[i].seg_size == 0)
				continue;
			sum += l.v[k].len;
			cnt++;
		}
		double mean = (double)sum / (double)cnt;
		printf("average: min %u avg %u max %u: mean %.0f over %llu chunks\n",
		       sets[i].min_size, sets[i].avg_size, sets[i].max_size, mean,
		       (unsigned long long)cnt);
		CHECK(mean > 0.75 * sets[i].avg_size && mean < 1.25 * sets[i].avg_size,
		      "mean chunk %.0f not within 25%% of %u", mean, sets[i].avg_size);
		el_free(&l);
	}
	free(b);
}

/* Cut points are on-disk format: a fixed input must keep its extents. */
static void test_golden(void)
{
	g_case = "golden";
	const size_t n = 6u * 1024 * 1024 + 999;
	uint64_t seed = 0x601d;
	uint8_t *b = xmalloc(n);
	fill_mixed(b, n, &seed);
	struct ss_chunker c;
	CHECK(ss_chunker_init(&c, &P_GOLDEN) == 0, "init");
	struct extlist w = chunk_whole(&c, b, n);
	struct extlist l = el_merged(&w); /* zero-run pieces are not format */
	el_free(&w);
	XXH64_hash_t h = 0;
	for (size_t i = 0; i < l.n; i++) {
		uint8_t rec[17];
		ss_put_le64(rec, l.v[i].off);
		ss_put_le64(rec + 8, l.v[i].len);
		rec[16] = l.v[i].kind;
		h = XXH3_64bits_withSeed(rec, sizeof(rec), h);
	}
	CHECK(l.n == GOLDEN_N && h == GOLDEN_DIGEST,
	      "cut points changed: %zu extents, digest %016llx (format break!)", l.n,
	      (unsigned long long)h);
	el_free(&l);
	free(b);
}

static void test_stream_errors(void)
{
	g_case = "stream-errors";
	struct ss_chunker c;
	CHECK(ss_chunker_init(&c, &P_SMALL) == 0, "init");
	size_t n = 1u << 20;
	uint64_t seed = 99;
	uint8_t *b = xmalloc(n);
	fill_random(b, n, &seed);

	/* An emit error is returned and sticks. */
	struct emit_ctx x = { .file = b, .fail_after = 3 };
	struct ss_chunk_stream *s = ss_chunk_stream_new(&c);
	CHECK(s, "new");
	CHECK(ss_chunk_stream_feed(s, b, n, emit_cb, &x) == -EIO, "emit error not returned");
	CHECK(x.calls == 3, "emit called %d times", x.calls);
	CHECK(ss_chunk_stream_feed(s, b, 10, emit_cb, &x) == -EIO, "emit error not sticky");
	CHECK(ss_chunk_stream_finish(s, emit_cb, &x) == -EIO, "emit error not sticky at finish");
	ss_chunk_stream_free(s);
	el_free(&x.l);

	/* Argument checks; empty input emits nothing. */
	s = ss_chunk_stream_new(&c);
	CHECK(s, "new");
	struct emit_ctx y = { .file = b, .fail_after = -1 };
	CHECK(ss_chunk_stream_feed(s, NULL, 5, emit_cb, &y) == -EINVAL, "NULL data accepted");
	CHECK(ss_chunk_stream_feed(s, b, 5, NULL, &y) == -EINVAL, "NULL emit accepted");
	CHECK(ss_chunk_stream_feed(s, NULL, 0, emit_cb, &y) == 0, "empty feed");
	CHECK(ss_chunk_stream_finish(s, emit_cb, &y) == 0 && y.calls == 0, "empty finish");
	CHECK(ss_chunk_stream_feed(s, b, 5, emit_cb, &y) == -EINVAL, "feed after finish");
	ss_chunk_stream_free(s);
	ss_chunk_stream_free(NULL);
	CHECK(ss_chunk_stream_new(NULL) == NULL, "new(NULL)");
	el_free(&y.l);
	free(b);
}

int main(void)
{
	ref_init();
	test_params();
	test_basic();
	test_stream_errors();
	test_shift();
	test_average();
	test_files();
	printf("split invariance: %u files x 4 parameter sets agree with the reference\n", g_files);
	test_golden();
	printf("test_chunker: all passed\n");
	return 0;
}
