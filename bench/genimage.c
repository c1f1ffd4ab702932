/* ss-genimage — reproducible memory-like checkpoint images for benchmarks.
 *
 * A sandbox memory image is not random data: a large part is zero (unused
 * guest memory, fresh heap), some pages repeat others (a shared library
 * mapped twice, copy-on-write children), much is compressible program state
 * (strings, pointer-rich heap objects, tables of small integers) and the
 * rest is already-compressed or encrypted data. Benchmarks on /dev/urandom
 * or on all-zero files measure the wrong thing, so this tool builds images
 * with that mix at 4 KiB page granularity, deterministically from a seed,
 * and fast enough (> 1 GB/s) that a multi-GiB image costs seconds.
 *
 * Modes:
 *   ss-genimage --size 1G --seed 1 --out FILE
 *   ss-genimage --dirty 0.01 --base FILE --seed 2 --out FILE2
 *       the "next checkpoint": a copy of FILE with a fraction of its pages
 *       rewritten in clustered runs; the exact change is reported.
 *   ss-genimage --dir-layout runsc --size 1G --seed 1 --out DIR
 *       a runsc-style checkpoint directory (checkpoint.img, pages_meta.img,
 *       pages.img); pages.img is byte-identical to the single-file image.
 *   ss-genimage --class pages --size 1G --seed 1 --out FILE
 *       the page-granular class: zero, repeated (from a pool of distinct
 *       pages), text, struct and random pages mixed every few pages, as in
 *       memory a guest has used for a while.
 *
 * Only libc: the harness must build before the rest of the tree does.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define PAGE_WORDS (PAGE / 8)
/* Text generation writes whole 16-byte word slots and may run past the end
 * of a page; buffers keep this much slack so that never needs a check. */
#define SLACK 128u
/* Pages generated per write(): big enough to amortise the syscall, small
 * enough to stay in L2/L3 while pages are produced and written. */
#define BUF_PAGES 512u

static const char *prog = "ss-genimage";

/* Temporary outputs to remove if we fail or are interrupted: a half
 * written multi-GiB file left on tmpfs would eat the memory the benchmark
 * needs. At most a directory and one file in it are in flight. */
static char *volatile tmp_file, *volatile tmp_dir;
static char *tmp_dir_files[3]; /* finished files inside tmp_dir */

static void remove_tmp(void)
{
	if (tmp_file)
		unlink(tmp_file);
	if (tmp_dir) {
		for (int i = 0; i < 3; i++)
			unlink(tmp_dir_files[i]);
		rmdir(tmp_dir);
	}
}

static void on_signal(int sig)
{
	remove_tmp(); /* unlink and rmdir are async-signal-safe */
	signal(sig, SIG_DFL);
	raise(sig);
}

/* ---- failure reporting: one line on stderr, exit 2 usage / 1 failure ---- */

static void die_usage(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die_usage(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (try --help)\n");
	exit(2);
}

static void die(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	remove_tmp();
	exit(1);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n);
	if (!p)
		die("out of memory (%zu bytes)", n);
	return p;
}

/* ---- PRNG: splitmix64 to seed, xoshiro256** to draw ----
 * Not rand(): its range and sequence differ between libcs, and the images
 * must be identical on every machine for a given seed. */

typedef struct {
	uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* `stream` separates independent uses of one seed (layout, dirty pass,
 * side files) so that adding draws to one never shifts another. */
static void rng_seed(rng_t *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(rng_t *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Uniform in [0, n), n > 0 (Lemire's multiply; the bias is < n / 2^64). */
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* Log-uniform integer in [min, max], 1 <= min <= max: many short runs, a
 * few long ones, the shape of holes and mappings in an address space. */
static uint64_t rng_logrange(rng_t *r, uint64_t min, uint64_t max)
{
	int bits = 0;
	while (bits < 63 && (2ull << bits) <= max / min)
		bits++;
	int e = (int)rng_below(r, (uint64_t)bits + 1);
	uint64_t v = min * ((1ull << e) + rng_below(r, 1ull << e));
	v += rng_below(r, min); /* fill the gaps between multiples of min */
	return v > max ? max : v;
}

static uint64_t rng_loguniform(rng_t *r, uint64_t max)
{
	return rng_logrange(r, 1, max);
}

/* ---- page content classes ---- */

/* dup:   short runs (1-32 pages) copied from anywhere earlier: a library's
 *        text mapped twice, the same buffer in two processes;
 * clone: long runs (256 KiB - 8 MiB) copied from anywhere earlier, zero
 *        pages included: the heap of a forked worker, a file both in the
 *        page cache and in a process. Only these are large enough for
 *        restic's ~1 MiB chunks to deduplicate. */
enum cls { C_ZERO, C_DUP, C_CLONE, C_TEXT, C_STRUCT, C_RANDOM, C_COUNT };
static const char *const cls_name[C_COUNT] = {"zero", "dup", "clone", "text", "struct", "random"};

/* Default mix in percent of pages, tuned so that a 1 GiB image compresses
 * like a real sandbox image (see bench/README.md, "Image content"). The
 * zero pages a clone copies count as zero in the report, so the reported
 * zero share is a little above mix[C_ZERO]. */
static double mix[C_COUNT] = {
	[C_ZERO] = 28, [C_DUP] = 5, [C_CLONE] = 12, [C_TEXT] = 18, [C_STRUCT] = 16, [C_RANDOM] = 21,
};

/* Run lengths in pages, log-uniform in [min, max]. Zero runs reach 16 MiB
 * (unused guest memory). */
static const uint64_t run_min[C_COUNT] = {
	[C_ZERO] = 1, [C_DUP] = 1, [C_CLONE] = 64, [C_TEXT] = 1, [C_STRUCT] = 1, [C_RANDOM] = 1,
};
static const uint64_t run_max[C_COUNT] = {
	[C_ZERO] = 4096, [C_DUP] = 32, [C_CLONE] = 2048, [C_TEXT] = 256, [C_STRUCT] = 256, [C_RANDOM] = 512,
};

/* Fraction of text/struct pages whose tail is zero (a partly used heap or
 * slab page); in 1/256ths. */
static unsigned tail_zero_256 = 48;

/* Text is built from phrases (2-8 pseudo-words: identifiers, paths, log
 * and JSON fragments) interleaved with short numeric tokens. Phrases are
 * what makes text compress: zstd's fast levels only match runs of 6+ bytes,
 * so independent short words would leave it at ~2x, far below what real
 * program memory gives. The numbers add the entropy that keeps it from
 * compressing too well. The tables are fixed (not seed dependent), like
 * the strings of one program are the same in every checkpoint. Each phrase
 * sits in a 64-byte slot so it is copied with one fixed-size memcpy. */
#define VOCAB 4096u
#define PHRASES 4096u
#define PHRASE_SLOT 64u
static uint8_t phrase[PHRASES][PHRASE_SLOT];
static uint8_t phrase_len[PHRASES];
/* Probability (in 1/256ths) of a numeric token after a phrase: the knob
 * that sets how well text pages compress (64: ~3.4x with zstd -1). */
static unsigned text_token_256 = 64;

static void vocab_init(void)
{
	static const char cons[] = "bcdfghjklmnprstvwxz_";
	static const char vow[] = "aeiouy";
	static const char sep[] = "      \n,./:=_-\0";
	static char word[VOCAB][16];
	static uint8_t wlen[VOCAB];
	rng_t r;
	rng_seed(&r, 0x5eed, 99);
	for (unsigned i = 0; i < VOCAB; i++) {
		/* Frequent words are short, as in real text. */
		unsigned len = 2 + (unsigned)rng_below(&r, 3 + i / 512);
		if (len > 14)
			len = 14;
		for (unsigned j = 0; j < len; j++)
			word[i][j] = (j & 1) ? vow[rng_below(&r, sizeof vow - 1)]
					     : cons[rng_below(&r, sizeof cons - 1)];
		word[i][len] = sep[rng_below(&r, sizeof sep - 1)];
		wlen[i] = (uint8_t)(len + 1);
	}
	for (unsigned i = 0; i < PHRASES; i++) {
		unsigned n = 2 + (unsigned)rng_below(&r, 7), len = 0;
		for (unsigned k = 0; k < n; k++) {
			unsigned a = (unsigned)rng_below(&r, VOCAB), b = (unsigned)rng_below(&r, VOCAB);
			unsigned w = a < b ? a : b;
			if (len + wlen[w] > PHRASE_SLOT - 1)
				break;
			memcpy(phrase[i] + len, word[w], wlen[w]);
			len += wlen[w];
		}
		phrase_len[i] = (uint8_t)len;
	}
}

/* Per-run context, so pages of one run look like one program region
 * (one heap arena, one string table) rather than independent noise. */
struct region {
	unsigned word_base;   /* text: rotates which words are frequent */
	uint64_t ptr_base;    /* struct: arena address the pointers point into */
	unsigned rec_words;   /* struct: record size in 8-byte words */
	uint8_t field[8];     /* struct: kind of each record field */
	uint64_t counter;     /* struct: monotonic field (ids, offsets) */
};

enum field { F_PTR, F_SMALL, F_ZERO, F_COUNTER, F_FLAGS, F_HASH };

static void region_init(struct region *g, rng_t *r)
{
	g->word_base = (unsigned)rng_below(r, VOCAB);
	/* User-space heap (0x55..) or mmap area (0x7f..), page aligned. */
	g->ptr_base = (rng_below(r, 2) ? 0x00007f0000000000ull : 0x0000550000000000ull) |
		      (rng_next(r) & 0x000000fffffff000ull);
	g->rec_words = 2u << rng_below(r, 3); /* 16, 32 or 64-byte records */
	/* Field kinds weighted towards what heap objects hold: pointers and
	 * small integers; one full-entropy hash field is rare. */
	static const uint8_t kinds[16] = {F_PTR,   F_PTR,   F_PTR,     F_PTR,   F_SMALL, F_SMALL,
					  F_SMALL, F_SMALL, F_ZERO,    F_ZERO,  F_ZERO,  F_COUNTER,
					  F_FLAGS, F_FLAGS, F_COUNTER, F_HASH};
	for (unsigned i = 0; i < 8; i++)
		g->field[i] = kinds[rng_below(r, 16)];
	g->counter = rng_below(r, 1u << 20);
}

static void gen_random(uint8_t *p, rng_t *r)
{
	uint64_t w[PAGE_WORDS];
	for (unsigned i = 0; i < PAGE_WORDS; i++)
		w[i] = rng_next(r);
	memcpy(p, w, PAGE);
}

/* Phrases with a skewed (roughly Zipf-like) frequency -- the minimum of
 * two uniform draws favours low indexes, which the region rotates -- each
 * maybe followed by a decimal token. p must have SLACK bytes after the
 * page. */
static void gen_text(uint8_t *p, rng_t *r, const struct region *g)
{
	unsigned off = 0;
	while (off < PAGE) {
		uint64_t x = rng_next(r);
		unsigned a = (unsigned)(x & 0xfff), b = (unsigned)((x >> 12) & 0xfff);
		unsigned k = ((a < b ? a : b) + g->word_base) & (PHRASES - 1);
		memcpy(p + off, phrase[k], PHRASE_SLOT);
		off += phrase_len[k];
		if (((x >> 24) & 0xff) < text_token_256) {
			/* 1-8 digits, 3 bits of the draw each, then a space */
			unsigned nd = 1 + (unsigned)((x >> 32) & 7);
			uint64_t d = x >> 35;
			for (unsigned i = 0; i < nd; i++, d >>= 3)
				p[off + i] = (uint8_t)('0' + (d & 7) + ((d >> 2) & 2));
			p[off + nd] = ' ';
			off += nd + 1;
		}
	}
}

/* Arrays of records, 8-byte fields: pointers into one arena with small
 * deltas, small integers, counters, flag words, rare hashes. */
static void gen_struct(uint8_t *p, rng_t *r, struct region *g)
{
	uint64_t w[PAGE_WORDS];
	for (unsigned i = 0; i < PAGE_WORDS; i++) {
		uint64_t v;
		switch (g->field[i & (g->rec_words - 1) & 7]) {
		case F_PTR:
			v = g->ptr_base + ((rng_next(r) & 0xffff) << 4);
			break;
		case F_SMALL:
			v = rng_next(r) & 0xff;
			break;
		case F_ZERO:
			v = 0;
			break;
		case F_COUNTER:
			v = g->counter++;
			break;
		case F_FLAGS:
			v = 1ull << (rng_next(r) & 7);
			break;
		default:
			v = rng_next(r);
			break;
		}
		w[i] = v;
	}
	memcpy(p, w, PAGE);
}

/* A partly used page: zero from a random 8-byte aligned offset on. Never
 * zero the whole page, so the page class counts stay exact. */
static void maybe_tail_zero(uint8_t *p, rng_t *r)
{
	uint64_t x = rng_next(r);
	if ((x & 0xff) < tail_zero_256) {
		unsigned from = 512 + (unsigned)(((x >> 8) % ((PAGE - 512) / 8)) * 8);
		memset(p + from, 0, PAGE - from);
	}
}

static void gen_page(enum cls c, uint8_t *p, rng_t *r, struct region *g)
{
	switch (c) {
	case C_TEXT:
		gen_text(p, r, g);
		maybe_tail_zero(p, r);
		break;
	case C_STRUCT:
		gen_struct(p, r, g);
		maybe_tail_zero(p, r);
		break;
	case C_RANDOM:
		gen_random(p, r);
		break;
	default:
		memset(p, 0, PAGE);
		break;
	}
}

/* ---- I/O helpers ---- */

static void write_all(int fd, const void *buf, size_t n, const char *path)
{
	const uint8_t *b = buf;
	while (n) {
		ssize_t k = write(fd, b, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			die("write %s: %s", path, k < 0 ? strerror(errno) : "short write");
		b += k;
		n -= (size_t)k;
	}
}

static void pread_all(int fd, void *buf, size_t n, uint64_t off, const char *path)
{
	uint8_t *b = buf;
	while (n) {
		ssize_t k = pread(fd, b, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			die("read %s: %s", path, k < 0 ? strerror(errno) : "unexpected end of file");
		b += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
}

static void pwrite_all(int fd, const void *buf, size_t n, uint64_t off, const char *path)
{
	const uint8_t *b = buf;
	while (n) {
		ssize_t k = pwrite(fd, b, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			die("write %s: %s", path, k < 0 ? strerror(errno) : "short write");
		b += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
}

/* Output goes to "<path>.tmp.<pid>" and is renamed into place at the end,
 * so a killed run never leaves a truncated image under the final name. */
struct outfile {
	char *path, *tmp;
	int fd;
};

static void out_open(struct outfile *o, const char *path)
{
	o->path = strdup(path);
	o->tmp = xmalloc(strlen(path) + 32);
	if (!o->path)
		die("out of memory");
	sprintf(o->tmp, "%s.tmp.%ld", path, (long)getpid());
	o->fd = open(o->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o->fd < 0)
		die("create %s: %s", o->tmp, strerror(errno));
	tmp_file = o->tmp;
}

static void out_commit(struct outfile *o)
{
	if (close(o->fd) != 0)
		die("close %s: %s", o->tmp, strerror(errno));
	if (rename(o->tmp, o->path) != 0)
		die("rename %s -> %s: %s", o->tmp, o->path, strerror(errno));
	tmp_file = NULL;
	free(o->path);
	free(o->tmp);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- generation ---- */

struct stats {
	uint64_t pages[C_COUNT]; /* clone: its non-zero pages only */
};

/* A non-zero run already written, a source for duplicated pages. */
struct extent {
	uint64_t start, len;
};

/* Generation state: pages are produced into buf and written in batches;
 * copies read their source back from buf or, when already written, from
 * the file. */
struct gen {
	int fd;
	const char *path;
	uint64_t size;
	uint8_t *buf;
	uint64_t buf_start; /* page index of buf[0] */
	unsigned buf_n;     /* pages in buf */
};

static void gen_flush(struct gen *G)
{
	uint64_t bytes = (uint64_t)G->buf_n * PAGE;
	if (G->buf_start * PAGE + bytes > G->size)
		bytes = G->size - G->buf_start * PAGE; /* last, partial page */
	write_all(G->fd, G->buf, (size_t)bytes, G->path);
	G->buf_start += G->buf_n;
	G->buf_n = 0;
}

static uint8_t *gen_slot(struct gen *G)
{
	return G->buf + (size_t)G->buf_n * PAGE;
}

static void gen_copy(struct gen *G, uint8_t *p, uint64_t src)
{
	if (src >= G->buf_start)
		memcpy(p, G->buf + (size_t)(src - G->buf_start) * PAGE, PAGE);
	else
		pread_all(G->fd, p, PAGE, src * PAGE, G->path);
}

static void gen_commit_page(struct gen *G)
{
	if (++G->buf_n == BUF_PAGES)
		gen_flush(G);
}

/* Write `size` bytes of image to fd. The class of each run is chosen with
 * weights equal to how far each class lags its target share (over a
 * look-ahead window, divided by the class's mean run length), so every
 * image, small or large, hits the mix within a fraction of a percent while
 * the order of runs stays random. */
static void gen_image(int fd, const char *path, uint64_t size, uint64_t seed, struct stats *st)
{
	const uint64_t npages = (size + PAGE - 1) / PAGE;
	/* pages; smaller for small images, whose mix would otherwise drift */
	const double lookahead = npages / 16 < 64 ? 64 : npages / 16 > 4096 ? 4096 : (double)(npages / 16);
	rng_t r;
	rng_seed(&r, seed, 1);
	memset(st, 0, sizeof *st);

	struct gen G = {.fd = fd, .path = path, .size = size};
	G.buf = xmalloc((size_t)BUF_PAGES * PAGE + SLACK);
	/* One byte per page (2 MiB for 8 GiB): is the page zero? A clone
	 * copies zero pages too, and they must be reported as zero. */
	uint8_t *is_zero = xmalloc((size_t)npages + 1);

	size_t ext_cap = 1024, ext_n = 0;
	struct extent *ext = xmalloc(ext_cap * sizeof *ext);

	double total = 0;
	for (int c = 0; c < C_COUNT; c++)
		total += mix[c];

	/* sched: pages credited to each class for scheduling (a clone counts
	 * whole); st->pages: what the pages are (a clone's zero pages are
	 * zero). */
	uint64_t pos = 0, runs[C_COUNT] = {0}, sched[C_COUNT] = {0};
	while (pos < npages) {
		double wsum = 0, w[C_COUNT];
		for (int c = 0; c < C_COUNT; c++) {
			double want = mix[c] / total * ((double)pos + lookahead);
			/* Divided by the class's mean run length so far: a class of
			 * short runs must be picked more often to keep up. */
			double mean = ((double)sched[c] + (double)(run_min[c] + run_max[c]) / 8) /
				      (double)(runs[c] + 1);
			w[c] = want > (double)sched[c] ? (want - (double)sched[c]) / mean : 0;
			if ((c == C_DUP && ext_n == 0) || (c == C_CLONE && pos < run_min[C_CLONE]))
				w[c] = 0; /* nothing to copy yet */
			wsum += w[c];
		}
		enum cls c = C_RANDOM;
		if (wsum > 0) {
			double x = (double)(rng_next(&r) >> 11) / 9007199254740992.0 * wsum;
			for (int k = 0; k < C_COUNT; k++) {
				if (x < w[k] || k == C_COUNT - 1) {
					c = (enum cls)k;
					break;
				}
				x -= w[k];
			}
		}
		uint64_t len = rng_logrange(&r, run_min[c], run_max[c]);
		uint64_t src = 0;
		if (c == C_DUP) {
			/* From inside one earlier non-zero extent, so a short
			 * duplicate is never a zero page counted twice. */
			const struct extent *e = &ext[rng_below(&r, ext_n)];
			uint64_t o = rng_below(&r, e->len);
			src = e->start + o;
			if (len > e->len - o)
				len = e->len - o;
		} else if (c == C_CLONE) {
			if (len > pos)
				len = pos;
			src = rng_below(&r, pos - len + 1);
		}
		if (len > npages - pos)
			len = npages - pos;

		struct region g;
		region_init(&g, &r);
		for (uint64_t i = 0; i < len; i++) {
			uint8_t *p = gen_slot(&G);
			enum cls what = c;
			if (c == C_DUP || c == C_CLONE) {
				gen_copy(&G, p, src + i);
				if (is_zero[src + i])
					what = C_ZERO;
			} else {
				gen_page(c, p, &r, &g);
			}
			is_zero[pos + i] = what == C_ZERO;
			st->pages[what]++;
			gen_commit_page(&G);
		}
		if (c != C_ZERO && c != C_CLONE) {
			if (ext_n == ext_cap) {
				ext_cap *= 2;
				ext = realloc(ext, ext_cap * sizeof *ext);
				if (!ext)
					die("out of memory");
			}
			ext[ext_n++] = (struct extent){pos, len};
		}
		sched[c] += len;
		runs[c]++;
		pos += len;
	}
	if (G.buf_n)
		gen_flush(&G);
	free(ext);
	free(is_zero);
	free(G.buf);
}

/* ---- the page-granular class (--class pages) ----
 *
 * Memory after a guest has run for a while: classes change every few
 * pages rather than every few MiB. Zero runs are as short as one page,
 * and about a quarter of the pages are copies of a few thousand distinct
 * pages (shared libraries in several processes, page-cache copies,
 * KSM-able pages), each copy drawn on its own, so a repeated page sits
 * between unrelated neighbours wherever it lands. Content-defined chunks
 * of many KiB rarely see the same bytes twice here; only an engine that
 * looks at whole pages finds the repeats. */
enum pcls { P_ZERO, P_REPEAT, P_TEXT, P_STRUCT, P_RANDOM, P_COUNT };
static const char *const pcls_name[P_COUNT] = {"zero", "repeat", "text", "struct", "random"};

static double pmix[P_COUNT] = {
	[P_ZERO] = 30, [P_REPEAT] = 25, [P_TEXT] = 20, [P_STRUCT] = 10, [P_RANDOM] = 15,
};

/* Run lengths in pages, log-uniform in [1, max]: short, so no class holds
 * a region long enough for chunk-sized dedup or long zero extents. */
static uint64_t prun_max[P_COUNT] = {
	[P_ZERO] = 64, [P_REPEAT] = 8, [P_TEXT] = 16, [P_STRUCT] = 16, [P_RANDOM] = 16,
};

/* Distinct pages the repeated ones are drawn from; 0: the default (see
 * pool_default). */
static uint64_t pool_opt;

struct pstats {
	uint64_t pages[P_COUNT];
	uint64_t pool;            /* distinct pages in the pool */
	uint64_t repeat_distinct; /* pool pages that occur at least once */
};

/* A few thousand distinct pages, as the images have, but never so
 * many that a small image's copies are mostly first occurrences: each pool
 * page occurs about twice or more on average. */
static uint64_t pool_default(uint64_t npages)
{
	double total = 0;
	for (int c = 0; c < P_COUNT; c++)
		total += pmix[c];
	uint64_t repeats = (uint64_t)(pmix[P_REPEAT] / total * (double)npages);
	uint64_t n = repeats / 2;
	return n > 4096 ? 4096 : n < 1 ? 1 : n;
}

static enum cls pool_page_class(rng_t *r)
{
	double nz = pmix[P_TEXT] + pmix[P_STRUCT] + pmix[P_RANDOM];
	if (nz <= 0)
		return C_TEXT;
	double x = (double)(rng_next(r) >> 11) / 9007199254740992.0 * nz;
	return x < pmix[P_TEXT] ? C_TEXT : x < pmix[P_TEXT] + pmix[P_STRUCT] ? C_STRUCT : C_RANDOM;
}

static void gen_pages_image(int fd, const char *path, uint64_t size, uint64_t seed, struct pstats *st)
{
	const uint64_t npages = (size + PAGE - 1) / PAGE;
	const double lookahead = npages / 16 < 64 ? 64 : npages / 16 > 4096 ? 4096 : (double)(npages / 16);
	memset(st, 0, sizeof *st);
	/* Own streams (not the memory class's 1): the two classes share no
	 * layout by accident. */
	rng_t r, pr;
	rng_seed(&r, seed, 5);
	rng_seed(&pr, seed, 6);

	/* The pool: text/struct/random pages in the image's proportions of
	 * those classes, each its own region. */
	const uint64_t npool = pool_opt ? pool_opt : pool_default(npages);
	uint8_t *pool = xmalloc((size_t)npool * PAGE + SLACK);
	uint8_t *used = xmalloc((size_t)npool);
	for (uint64_t i = 0; i < npool; i++) {
		struct region g;
		region_init(&g, &pr);
		enum cls c = pool_page_class(&pr);
		uint8_t tmp[PAGE + SLACK];
		gen_page(c, tmp, &pr, &g);
		memcpy(pool + i * PAGE, tmp, PAGE);
	}
	st->pool = npool;

	struct gen G = {.fd = fd, .path = path, .size = size};
	G.buf = xmalloc((size_t)BUF_PAGES * PAGE + SLACK);

	double total = 0;
	for (int c = 0; c < P_COUNT; c++)
		total += pmix[c];
	uint64_t pos = 0, runs[P_COUNT] = {0};
	while (pos < npages) {
		/* As gen_image: weights are how far each class lags its share,
		 * over its mean run length. */
		double wsum = 0, w[P_COUNT];
		for (int c = 0; c < P_COUNT; c++) {
			double want = pmix[c] / total * ((double)pos + lookahead);
			double mean = ((double)st->pages[c] + (double)(1 + prun_max[c]) / 4) / (double)(runs[c] + 1);
			w[c] = want > (double)st->pages[c] ? (want - (double)st->pages[c]) / mean : 0;
			wsum += w[c];
		}
		enum pcls c = P_RANDOM;
		if (wsum > 0) {
			double x = (double)(rng_next(&r) >> 11) / 9007199254740992.0 * wsum;
			for (int k = 0; k < P_COUNT; k++) {
				if (x < w[k] || k == P_COUNT - 1) {
					c = (enum pcls)k;
					break;
				}
				x -= w[k];
			}
		}
		uint64_t len = rng_loguniform(&r, prun_max[c]);
		if (len > npages - pos)
			len = npages - pos;
		struct region g;
		region_init(&g, &r);
		static const enum cls as_cls[P_COUNT] = {
			[P_ZERO] = C_ZERO, [P_TEXT] = C_TEXT, [P_STRUCT] = C_STRUCT, [P_RANDOM] = C_RANDOM,
		};
		for (uint64_t i = 0; i < len; i++) {
			uint8_t *p = gen_slot(&G);
			if (c == P_REPEAT) {
				/* Popularity skewed towards low indexes (the minimum
				 * of two draws): some pages are everywhere, most
				 * occur a few times. */
				uint64_t a = rng_below(&r, npool), b = rng_below(&r, npool);
				uint64_t k = a < b ? a : b;
				memcpy(p, pool + k * PAGE, PAGE);
				if (!used[k]) {
					used[k] = 1;
					st->repeat_distinct++;
				}
			} else {
				gen_page(as_cls[c], p, &r, &g);
			}
			st->pages[c]++;
			gen_commit_page(&G);
		}
		runs[c]++;
		pos += len;
	}
	if (G.buf_n)
		gen_flush(&G);
	free(G.buf);
	free(used);
	free(pool);
}

/* ---- dirtying: the next checkpoint of the same sandbox ---- */

struct dirty_stats {
	uint64_t pages, dirty_pages, dirty_runs, changed_pages, changed_bytes, differing_bytes;
};

static uint64_t file_size(int fd, const char *path)
{
	struct stat sb;
	if (fstat(fd, &sb) != 0)
		die("stat %s: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode))
		die("%s: not a regular file", path);
	return (uint64_t)sb.st_size;
}

static void copy_fd(int in, int out, uint64_t size, const char *inpath, const char *outpath)
{
	/* copy_file_range keeps the copy in the kernel; fall back to
	 * read/write where it is not supported (cross-device, old kernels). */
	uint64_t done = 0;
	while (done < size) {
		ssize_t k = copy_file_range(in, NULL, out, NULL, (size_t)(size - done), 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		done += (uint64_t)k;
	}
	if (done == size)
		return;
	uint8_t *buf = xmalloc(1u << 20);
	while (done < size) {
		size_t n = size - done < (1u << 20) ? (size_t)(size - done) : (1u << 20);
		pread_all(in, buf, n, done, inpath);
		pwrite_all(out, buf, n, done, outpath);
		done += n;
	}
	free(buf);
}

/* Longest run of pages one dirty run rewrites (--dirty-run); the length is
 * geometric with mean about a quarter of it. 64 (mean ~16): a process
 * touching neighbouring pages; a few pages: writes scattered over memory. */
static uint64_t dirty_run_max = 64;

/* Copy base to out, then rewrite a fraction of its pages in clustered runs
 * (1-64 pages by default, geometric with mean ~16: a process touches
 * neighbouring pages) with fresh text/struct/random content. Every changed
 * page is compared against the old one so the reported change is exact. */
static void dirty_file(const char *base, const char *outpath, double frac, uint64_t seed,
		       uint64_t stream, struct dirty_stats *ds)
{
	int in = open(base, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		die("open %s: %s", base, strerror(errno));
	uint64_t size = file_size(in, base);
	struct outfile o;
	out_open(&o, outpath);
	copy_fd(in, o.fd, size, base, o.tmp);
	close(in);

	memset(ds, 0, sizeof *ds);
	const uint64_t npages = (size + PAGE - 1) / PAGE;
	ds->pages = npages;
	uint64_t target = (uint64_t)(frac * (double)npages + 0.5);
	if (target > npages)
		target = npages;

	rng_t r;
	rng_seed(&r, seed, stream);
	uint8_t *seen = xmalloc((size_t)((npages + 7) / 8));
	uint8_t *newp = xmalloc(PAGE + SLACK), *oldp = xmalloc(PAGE);
	double nz = mix[C_TEXT] + mix[C_STRUCT] + mix[C_RANDOM];
	if (nz <= 0)
		nz = 1;

	while (ds->dirty_pages < target) {
		/* Geometric run length, p = 4/max (1/16 by default), capped
		 * to 1..max. */
		uint64_t len = 1;
		const uint64_t odds = dirty_run_max / 4 ? dirty_run_max / 4 : 1;
		while (len < dirty_run_max && rng_below(&r, odds) != 0)
			len++;
		uint64_t start = rng_below(&r, npages);
		double x = (double)(rng_next(&r) >> 11) / 9007199254740992.0 * nz;
		enum cls c = x < mix[C_TEXT] ? C_TEXT : x < mix[C_TEXT] + mix[C_STRUCT] ? C_STRUCT : C_RANDOM;
		struct region g;
		region_init(&g, &r);
		bool counted_run = false;
		for (uint64_t p = start; p < start + len && p < npages && ds->dirty_pages < target; p++) {
			if (seen[p / 8] & (1u << (p % 8)))
				continue; /* already rewritten by an earlier run */
			seen[p / 8] |= (uint8_t)(1u << (p % 8));
			size_t n = (p + 1) * PAGE <= size ? PAGE : (size_t)(size - p * PAGE);
			gen_page(c, newp, &r, &g);
			pread_all(o.fd, oldp, n, p * PAGE, o.tmp);
			pwrite_all(o.fd, newp, n, p * PAGE, o.tmp);
			ds->dirty_pages++;
			if (!counted_run) {
				ds->dirty_runs++;
				counted_run = true;
			}
			if (memcmp(oldp, newp, n) != 0) {
				ds->changed_pages++;
				ds->changed_bytes += n;
				for (size_t i = 0; i < n; i++)
					ds->differing_bytes += oldp[i] != newp[i];
			}
		}
	}
	free(seen);
	free(newp);
	free(oldp);
	out_commit(&o);
}

/* ---- runsc directory layout ---- */

/* checkpoint.img: the serialized kernel/sandbox state, ~2 MiB of mixed
 * struct/text/random data, with an odd tail so consumers see a file that
 * is not a whole number of pages. */
static uint64_t gen_checkpoint_file(const char *path, uint64_t seed, uint64_t stream)
{
	rng_t r;
	rng_seed(&r, seed, stream);
	uint64_t size = (2u << 20) + 1 + rng_below(&r, PAGE - 1);
	uint64_t npages = (size + PAGE - 1) / PAGE;
	uint8_t *buf = xmalloc((size_t)npages * PAGE + SLACK);
	struct region g;
	enum cls c = C_STRUCT;
	for (uint64_t i = 0; i < npages; i++) {
		/* 64 KiB sections: half struct, a quarter each text and random
		 * (compressed blobs such as a saved pipe buffer or a file). */
		if (i % 16 == 0) {
			static const enum cls k[4] = {C_STRUCT, C_STRUCT, C_TEXT, C_RANDOM};
			c = k[rng_below(&r, 4)];
			region_init(&g, &r);
		}
		gen_page(c, buf + i * PAGE, &r, &g);
	}
	struct outfile o;
	out_open(&o, path);
	write_all(o.fd, buf, (size_t)size, o.tmp);
	out_commit(&o);
	free(buf);
	return size;
}

/* pages_meta.img: one 64-byte record per 32 KiB of image, i.e. size/512
 * bytes: address, file offset, length, flags, usage counters. Regular and
 * very compressible, like the real metadata. */
static uint64_t gen_meta_file(const char *path, uint64_t image_size, uint64_t seed, uint64_t stream)
{
	rng_t r;
	rng_seed(&r, seed, stream);
	uint64_t nrec = image_size / 32768 ? image_size / 32768 : 1;
	uint64_t *rec = xmalloc((size_t)nrec * 64);
	uint64_t off = 0, addr = 0x00007f0000000000ull | (rng_next(&r) & 0xfffff000ull);
	for (uint64_t i = 0; i < nrec; i++) {
		uint64_t len = PAGE * rng_loguniform(&r, 64);
		uint64_t *w = rec + i * 8;
		w[0] = addr;
		w[1] = off;
		w[2] = len;
		w[3] = 1u << rng_below(&r, 4);  /* protection/usage kind */
		w[4] = rng_below(&r, 16);       /* refcount-like */
		w[5] = 0;
		w[6] = i;
		w[7] = rng_below(&r, 3) ? 0 : rng_below(&r, 1u << 16);
		addr += len + (rng_below(&r, 4) ? 0 : PAGE * rng_loguniform(&r, 256));
		off += len;
	}
	struct outfile o;
	out_open(&o, path);
	write_all(o.fd, rec, (size_t)nrec * 64, o.tmp);
	out_commit(&o);
	free(rec);
	return nrec * 64;
}

/* ---- command line ---- */

static void usage(void)
{
	printf("usage: %s --size SIZE [--seed N] --out FILE\n"
	       "       %s --dirty FRACTION --base FILE [--seed N] --out FILE\n"
	       "       %s --dir-layout runsc (--size SIZE | --dirty F --base DIR) [--seed N] --out DIR\n"
	       "       %s --class pages --size SIZE [--seed N] [--mix ..] [--pool N] [--run-max ..] --out FILE\n"
	       "\n"
	       "Generate a reproducible memory-like checkpoint image.\n"
	       "\n"
	       "  --size SIZE         image size; K/M/G/T suffixes are binary (1G = 2^30)\n"
	       "  --seed N            seed (default 1); same seed and size, same bytes\n"
	       "  --out PATH          output file (directory with --dir-layout); written\n"
	       "                      under a temporary name and renamed into place\n"
	       "  --dirty FRACTION    copy --base and rewrite this fraction of its pages\n"
	       "                      (clustered runs of 1-64 pages, mean ~16)\n"
	       "  --base PATH         image (or runsc directory) to dirty\n"
	       "  --dir-layout runsc  write checkpoint.img, pages_meta.img, pages.img\n"
	       "  --report-json FILE  write what was generated/changed as JSON ('-' = stdout)\n"
	       "  --mix SPEC          page mix in percent (for calibration); the default is\n"
	       "                      zero=28,dup=5,clone=12,text=18,struct=16,random=21\n"
	       "                      (--class pages: zero=30,repeat=25,text=20,struct=10,random=15)\n"
	       "  --class CLASS       memory (default): classes in runs of pages to MiBs;\n"
	       "                      pages: classes mixed at 4 KiB granularity, zero runs from\n"
	       "                      one page, repeated pages drawn from a pool\n"
	       "  --pool N            --class pages: distinct pages the repeated ones are drawn\n"
	       "                      from (default: half the repeated pages, at most 4096)\n"
	       "  --run-max SPEC      --class pages: longest run per class in pages; the default\n"
	       "                      is zero=64,repeat=8,text=16,struct=16,random=16\n"
	       "  --dirty-run N       --dirty: longest run of rewritten pages (default 64;\n"
	       "                      run lengths are geometric with mean ~N/4)\n"
	       "  --quiet             no summary line on stderr\n"
	       "  --help              this text\n"
	       "\n"
	       "Exit status: 0 ok, 1 failure, 2 usage error.\n",
	       prog, prog, prog, prog);
}

static uint64_t parse_size(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0)
		die_usage("bad size '%s'", s);
	uint64_t mul = 1;
	switch (*end) {
	case 'k': case 'K': mul = 1ull << 10; end++; break;
	case 'm': case 'M': mul = 1ull << 20; end++; break;
	case 'g': case 'G': mul = 1ull << 30; end++; break;
	case 't': case 'T': mul = 1ull << 40; end++; break;
	default: break;
	}
	if (*end == 'i' && end[1] == 'B')
		end += 2;
	else if (*end == 'B')
		end++;
	if (*end || v * (double)mul > 1.8e19)
		die_usage("bad size '%s'", s);
	return (uint64_t)(v * (double)mul);
}

/* "name=value,..." against a table of names: each named value is stored
 * in vals[] and flagged in set[]; unnamed entries are left alone. */
static void parse_named(const char *opt, const char *spec, const char *const *names, int n,
			double *vals, bool *set)
{
	char *dup = strdup(spec), *save = NULL;
	if (!dup)
		die("out of memory");
	for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(t, '=');
		if (!eq)
			die_usage("bad %s item '%s'", opt, t);
		*eq = 0;
		int c = 0;
		while (c < n && strcmp(names[c], t) != 0)
			c++;
		char *end;
		double v = strtod(eq + 1, &end);
		if (c == n || end == eq + 1 || *end || !(v >= 0 && v < 1e12))
			die_usage("bad %s item '%s'", opt, t);
		vals[c] = v;
		set[c] = true;
	}
	free(dup);
}

static void parse_mix(const char *spec)
{
	double m[C_COUNT] = {0};
	bool set[C_COUNT] = {0};
	parse_named("--mix", spec, cls_name, C_COUNT, m, set);
	double total = 0;
	for (int c = 0; c < C_COUNT; c++)
		total += m[c];
	if (total <= 0 || (m[C_DUP] + m[C_CLONE] > 0 && m[C_TEXT] + m[C_STRUCT] + m[C_RANDOM] <= 0))
		die_usage("--mix needs some non-zero, non-dup content");
	memcpy(mix, m, sizeof mix);
}

static void parse_pmix(const char *spec)
{
	double m[P_COUNT] = {0};
	bool set[P_COUNT] = {0};
	parse_named("--mix", spec, pcls_name, P_COUNT, m, set);
	double total = 0;
	for (int c = 0; c < P_COUNT; c++)
		total += m[c];
	if (total <= 0)
		die_usage("--mix needs some pages");
	memcpy(pmix, m, sizeof pmix);
}

static void parse_run_max(const char *spec)
{
	double m[P_COUNT] = {0};
	bool set[P_COUNT] = {0};
	parse_named("--run-max", spec, pcls_name, P_COUNT, m, set);
	for (int c = 0; c < P_COUNT; c++) {
		if (!set[c])
			continue;
		if (m[c] < 1 || m[c] > (1u << 20) || m[c] != (double)(uint64_t)m[c])
			die_usage("bad --run-max for %s (a whole number of pages, 1..%u)", pcls_name[c], 1u << 20);
		prun_max[c] = (uint64_t)m[c];
	}
}

static FILE *report_open(const char *path)
{
	if (!path)
		return NULL;
	if (strcmp(path, "-") == 0)
		return stdout;
	FILE *f = fopen(path, "w");
	if (!f)
		die("create %s: %s", path, strerror(errno));
	return f;
}

static void report_close(FILE *f, const char *path)
{
	if (!f)
		return;
	if (f == stdout ? fflush(f) != 0 : fclose(f) != 0)
		die("write %s: %s", path, strerror(errno));
}

static char *join(const char *dir, const char *name)
{
	char *p = xmalloc(strlen(dir) + strlen(name) + 2);
	sprintf(p, "%s/%s", dir, name);
	return p;
}

/* A runsc layout is written into "<out>.tmp.<pid>/" and renamed; an
 * existing output directory of ours is replaced (its three files only). */
static const char *const dir_names[3] = {"checkpoint.img", "pages_meta.img", "pages.img"};

static char *dir_begin(const char *out)
{
	char *tmp = xmalloc(strlen(out) + 32);
	sprintf(tmp, "%s.tmp.%ld", out, (long)getpid());
	for (int i = 0; i < 3; i++)
		tmp_dir_files[i] = join(tmp, dir_names[i]);
	if (mkdir(tmp, 0755) != 0)
		die("mkdir %s: %s", tmp, strerror(errno));
	tmp_dir = tmp;
	return tmp;
}

static void dir_commit(const char *tmp, const char *out)
{
	const char *const *names = dir_names;
	struct stat sb;
	if (lstat(out, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode))
			die("%s exists and is not a directory", out);
		for (size_t i = 0; i < 3; i++) {
			char *p = join(out, names[i]);
			if (unlink(p) != 0 && errno != ENOENT)
				die("remove %s: %s", p, strerror(errno));
			free(p);
		}
		if (rmdir(out) != 0)
			die("replace %s: %s", out, strerror(errno));
	}
	if (rename(tmp, out) != 0)
		die("rename %s -> %s: %s", tmp, out, strerror(errno));
	tmp_dir = NULL;
}

int main(int argc, char **argv)
{
	const char *out = NULL, *base = NULL, *layout = NULL, *report = NULL;
	const char *mix_spec = NULL, *run_max_spec = NULL;
	uint64_t size = 0, seed = 1;
	bool have_size = false, quiet = false, pages = false, have_dirty_run = false;
	double dirty = -1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = NULL;
		char *eq = NULL;
		/* --opt=value and --opt value are both accepted */
		if (strncmp(a, "--", 2) == 0 && (eq = strchr(a, '=')) != NULL) {
			static char name[64];
			size_t n = (size_t)(eq - a);
			if (n >= sizeof name)
				die_usage("unknown option '%s'", a);
			memcpy(name, a, n);
			name[n] = 0;
			v = eq + 1;
			a = name;
		}
#define ARG() (v ? v : (i + 1 < argc ? argv[++i] : (die_usage("%s needs a value", a), "")))
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage();
			return 0;
		} else if (!strcmp(a, "--size")) {
			size = parse_size(ARG());
			have_size = true;
		} else if (!strcmp(a, "--seed")) {
			const char *s = ARG();
			char *end;
			errno = 0;
			seed = strtoull(s, &end, 0);
			if (end == s || *end || errno || *s == '-')
				die_usage("bad seed '%s'", s);
		} else if (!strcmp(a, "--out") || !strcmp(a, "-o")) {
			out = ARG();
		} else if (!strcmp(a, "--base")) {
			base = ARG();
		} else if (!strcmp(a, "--dirty")) {
			const char *s = ARG();
			char *end;
			dirty = strtod(s, &end);
			if (end == s || *end || !(dirty >= 0 && dirty <= 1))
				die_usage("bad --dirty '%s' (a fraction 0..1)", s);
		} else if (!strcmp(a, "--dir-layout")) {
			layout = ARG();
			if (strcmp(layout, "runsc") != 0)
				die_usage("unknown --dir-layout '%s' (only 'runsc')", layout);
		} else if (!strcmp(a, "--report-json")) {
			report = ARG();
		} else if (!strcmp(a, "--mix")) {
			mix_spec = ARG(); /* parsed once the class is known */
		} else if (!strcmp(a, "--class")) {
			const char *s = ARG();
			if (strcmp(s, "pages") != 0 && strcmp(s, "memory") != 0)
				die_usage("unknown --class '%s' (memory or pages)", s);
			pages = strcmp(s, "pages") == 0;
		} else if (!strcmp(a, "--pool")) {
			const char *s = ARG();
			char *end;
			errno = 0;
			pool_opt = strtoull(s, &end, 0);
			/* 2^20 pool pages: 4 GiB of pool held in memory, the limit */
			if (end == s || *end || errno || *s == '-' || pool_opt < 1 || pool_opt > (1u << 20))
				die_usage("bad --pool '%s' (1..%u pages)", s, 1u << 20);
		} else if (!strcmp(a, "--run-max")) {
			run_max_spec = ARG();
		} else if (!strcmp(a, "--dirty-run")) {
			const char *s = ARG();
			char *end;
			errno = 0;
			dirty_run_max = strtoull(s, &end, 0);
			if (end == s || *end || errno || *s == '-' || dirty_run_max < 1 || dirty_run_max > 65536)
				die_usage("bad --dirty-run '%s' (1..65536 pages)", s);
			have_dirty_run = true;
		} else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
			quiet = true;
		} else {
			die_usage("unknown argument '%s'", argv[i]);
		}
#undef ARG
	}
	if (!out)
		die_usage("--out is required");
	if ((dirty >= 0) != (base != NULL))
		die_usage("--dirty and --base go together");
	if (dirty < 0 && !have_size)
		die_usage("--size is required");
	if (dirty >= 0 && have_size)
		die_usage("--size does not apply with --dirty (the base's size is kept)");
	if (have_dirty_run && dirty < 0)
		die_usage("--dirty-run goes with --dirty");
	if (pages) {
		if (mix_spec)
			parse_pmix(mix_spec);
		if (run_max_spec)
			parse_run_max(run_max_spec);
		/* A dirty pass writes text, struct and random pages in the
		 * proportions the page-granular image has them. */
		mix[C_TEXT] = pmix[P_TEXT];
		mix[C_STRUCT] = pmix[P_STRUCT];
		mix[C_RANDOM] = pmix[P_RANDOM];
	} else {
		if (mix_spec)
			parse_mix(mix_spec);
		if (run_max_spec || pool_opt)
			die_usage("--run-max and --pool go with --class pages");
	}

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	vocab_init();
	double t0 = now();
	FILE *rep = report_open(report);

	if (dirty < 0) {
		struct stats st;
		struct pstats pst;
		uint64_t ck = 0, meta = 0;
		const char *img = out;
		char *tmpdir = NULL, *imgpath = NULL;
		if (layout) {
			tmpdir = dir_begin(out);
			char *p = join(tmpdir, "checkpoint.img");
			ck = gen_checkpoint_file(p, seed, 3);
			free(p);
			p = join(tmpdir, "pages_meta.img");
			meta = gen_meta_file(p, size, seed, 4);
			free(p);
			img = imgpath = join(tmpdir, "pages.img");
		}
		struct outfile o;
		out_open(&o, img);
		if (pages)
			gen_pages_image(o.fd, o.tmp, size, seed, &pst);
		else
			gen_image(o.fd, o.tmp, size, seed, &st);
		out_commit(&o);
		if (layout)
			dir_commit(tmpdir, out);
		double secs = now() - t0;
		uint64_t np = (size + PAGE - 1) / PAGE;
		const char *const *names = pages ? pcls_name : cls_name;
		const uint64_t *count = pages ? pst.pages : st.pages;
		const int ncls = pages ? P_COUNT : C_COUNT;
		if (!quiet) {
			fprintf(stderr, "%s: %s: %" PRIu64 " bytes, %" PRIu64 " pages:", prog, out, size, np);
			for (int c = 0; c < ncls; c++)
				fprintf(stderr, " %s %.1f%%", names[c], np ? 100.0 * (double)count[c] / (double)np : 0);
			if (pages)
				fprintf(stderr, " (%" PRIu64 " distinct of a %" PRIu64 "-page pool)",
					pst.repeat_distinct, pst.pool);
			fprintf(stderr, "; %.2f s, %.0f MB/s\n", secs, secs > 0 ? (double)size / secs / 1e6 : 0);
		}
		if (rep) {
			fprintf(rep, "{\"mode\": \"generate\", \"class\": \"%s\", \"layout\": \"%s\", \"seed\": %" PRIu64
				     ", \"size\": %" PRIu64 ", \"pages\": %" PRIu64,
				pages ? "pages" : "memory", layout ? layout : "file", seed, size, np);
			for (int c = 0; c < ncls; c++)
				fprintf(rep, ", \"%s_pages\": %" PRIu64, names[c], count[c]);
			if (pages) {
				fprintf(rep, ", \"pool\": %" PRIu64 ", \"repeat_distinct\": %" PRIu64 ", \"run_max\": {",
					pst.pool, pst.repeat_distinct);
				for (int c = 0; c < P_COUNT; c++)
					fprintf(rep, "%s\"%s\": %" PRIu64, c ? ", " : "", pcls_name[c], prun_max[c]);
				fprintf(rep, "}, \"mix\": {");
				for (int c = 0; c < P_COUNT; c++)
					fprintf(rep, "%s\"%s\": %g", c ? ", " : "", pcls_name[c], pmix[c]);
				fprintf(rep, "}");
			}
			if (layout)
				fprintf(rep, ", \"checkpoint_bytes\": %" PRIu64 ", \"pages_meta_bytes\": %" PRIu64, ck, meta);
			fprintf(rep, ", \"seconds\": %.3f}\n", secs);
		}
		free(tmpdir);
		free(imgpath);
	} else {
		struct dirty_stats ds = {0}, dm = {0};
		uint64_t ck = 0;
		char *tmpdir = NULL;
		if (layout) {
			/* checkpoint.img is rewritten whole at every checkpoint;
			 * the metadata and the pages change in the same fraction. */
			tmpdir = dir_begin(out);
			char *b, *p;
			p = join(tmpdir, "checkpoint.img");
			ck = gen_checkpoint_file(p, seed, 13);
			free(p);
			b = join(base, "pages_meta.img");
			p = join(tmpdir, "pages_meta.img");
			dirty_file(b, p, dirty, seed, 14, &dm);
			free(b);
			free(p);
			b = join(base, "pages.img");
			p = join(tmpdir, "pages.img");
			dirty_file(b, p, dirty, seed, 2, &ds);
			free(b);
			free(p);
			dir_commit(tmpdir, out);
			free(tmpdir);
		} else {
			dirty_file(base, out, dirty, seed, 2, &ds);
		}
		double secs = now() - t0;
		/* The whole checkpoint.img counts as changed: it is new every time. */
		uint64_t changed = ds.changed_bytes + dm.changed_bytes + ck;
		if (!quiet)
			fprintf(stderr,
				"%s: %s: dirtied %" PRIu64 " of %" PRIu64 " pages in %" PRIu64 " runs; "
				"changed_bytes %" PRIu64 "; %.2f s\n",
				prog, out, ds.dirty_pages, ds.pages, ds.dirty_runs, changed, secs);
		if (rep) {
			fprintf(rep,
				"{\"mode\": \"dirty\", \"layout\": \"%s\", \"seed\": %" PRIu64 ", \"fraction\": %g"
				", \"pages\": %" PRIu64 ", \"dirty_pages\": %" PRIu64 ", \"dirty_runs\": %" PRIu64
				", \"changed_pages\": %" PRIu64 ", \"changed_bytes\": %" PRIu64
				", \"differing_bytes\": %" PRIu64,
				layout ? layout : "file", seed, dirty, ds.pages, ds.dirty_pages, ds.dirty_runs,
				ds.changed_pages, changed, ds.differing_bytes + dm.differing_bytes + ck);
			fprintf(rep, ", \"dirty_run_max\": %" PRIu64, dirty_run_max);
			if (layout)
				fprintf(rep, ", \"checkpoint_bytes\": %" PRIu64 ", \"pages_meta_changed_bytes\": %" PRIu64
					     ", \"pages_changed_bytes\": %" PRIu64,
					ck, dm.changed_bytes, ds.changed_bytes);
			fprintf(rep, ", \"seconds\": %.3f}\n", secs);
		}
	}
	report_close(rep, report);
	return 0;
}
