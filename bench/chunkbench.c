/* chunkbench — chunker throughput and chunk-size distribution.
 *
 *   chunkbench [--mib N] [--min B] [--avg B] [--max B] [--seg B]
 *              [--data random|memory] [--iters K] [--read B] [--seed S]
 *   chunkbench --sweep [--mib N] [--iters K]
 *
 * Sizes take a K/M/G suffix. The data is generated in memory (so the figure
 * is the chunker alone, no I/O) and chunked segment by segment, as the
 * engine's workers do; --read B feeds it through the streaming front end in
 * B-byte reads instead. "memory" data imitates a checkpoint image: runs of
 * zero pages, text-like pages, sparse pages and random pages. Throughput is
 * input bytes per second of this thread's CPU time (the per-core figure,
 * robust on a shared machine) and of wall time, best of --iters runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunker.h"
#include "util.h"

#define PAGE ((size_t)SS_PAGE_SIZE)

/* CPU time of this thread: on a shared machine it measures the chunker,
 * not the other tenants. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct stats {
	uint64_t chunks, chunk_bytes, zero_runs, zero_bytes;
	uint64_t min, max, at_max, below_min;
	uint32_t *lens;     /* chunk lengths, for percentiles */
	size_t nlens, cap;
};

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

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
				       "error: ", "ok ", "{\"id\": ", "}, ", "/usr/lib/" };
	size_t i = 0;
	while (i < n) {
		const char *w = words[splitmix64(seed) % SS_ARRAY_SIZE(words)];
		for (; *w && i < n; w++)
			p[i++] = (uint8_t)*w;
	}
}

/* Runs of 1..32 pages of one kind, as in process memory (heaps, mapped
 * files and untouched regions come in stretches): 35% zero, 20% text,
 * 10% sparse (a few words set in a zero page), 35% random. */
static void fill_memory(uint8_t *p, size_t n, uint64_t *seed)
{
	size_t q = 0;
	while (q < n) {
		unsigned kind = (unsigned)(splitmix64(seed) % 20);
		size_t run = (size_t)(1 + splitmix64(seed) % 32) * PAGE;
		size_t end = SS_MIN(n, q + run);
		for (; q < end; q += PAGE) {
			size_t len = SS_MIN(PAGE, n - q);
			if (kind < 7) {
				memset(p + q, 0, len);
			} else if (kind < 11) {
				fill_text(p + q, len, seed);
			} else if (kind < 13) {
				memset(p + q, 0, len);
				for (int j = 0; j < 4; j++) {
					uint64_t v = splitmix64(seed);
					size_t at = (size_t)(v % len) & ~(size_t)7;
					memcpy(p + q + at, &v, SS_MIN((size_t)8, len - at));
				}
			} else {
				fill_random(p + q, len, seed);
			}
		}
	}
}

static int add_extent(struct stats *st, const struct ss_extent *e, const struct ss_chunk_params *p)
{
	if (e->kind == SS_EXTENT_ZERO) {
		st->zero_runs++;
		st->zero_bytes += e->len;
		return 0;
	}
	st->chunks++;
	st->chunk_bytes += e->len;
	st->min = SS_MIN(st->min, e->len);
	st->max = SS_MAX(st->max, e->len);
	st->at_max += e->len == p->max_size;
	st->below_min += e->len < p->min_size;
	if (st->nlens == st->cap) {
		size_t ncap = st->cap ? 2 * st->cap : 4096;
		uint32_t *l = realloc(st->lens, ncap * sizeof(*l));
		if (!l)
			return -ENOMEM;
		st->lens = l;
		st->cap = ncap;
	}
	st->lens[st->nlens++] = (uint32_t)e->len;
	return 0;
}

static void stats_reset(struct stats *st)
{
	uint32_t *l = st->lens;
	size_t cap = st->cap;
	memset(st, 0, sizeof(*st));
	st->lens = l;
	st->cap = cap;
	st->min = UINT64_MAX;
}

/* One pass, segment by segment, as independent workers would. */
static int run_segments(const struct ss_chunker *c, const uint8_t *buf, size_t size,
			struct stats *st)
{
	const size_t seg = c->p.seg_size;
	for (size_t s = 0; s < size; s += seg) {
		size_t end = SS_MIN(size, s + seg), off = s;
		while (off < end) {
			struct ss_extent e;
			int r = ss_chunk_next(c, buf + off, end - off, off, end == size, &e);
			if (r != 1)
				return r < 0 ? r : -EPROTO;
			if (st && (r = add_extent(st, &e, &c->p)))
				return r;
			off += e.len;
		}
	}
	return 0;
}

struct stream_ctx {
	struct stats *st;
	const struct ss_chunk_params *p;
};

static int stream_emit(void *arg, uint64_t off, const struct ss_extent *e, const uint8_t *bytes)
{
	struct stream_ctx *x = arg;
	(void)off;
	(void)bytes;
	return x->st ? add_extent(x->st, e, x->p) : 0;
}

static int run_stream(const struct ss_chunker *c, const uint8_t *buf, size_t size, size_t rd,
		      struct stats *st)
{
	struct stream_ctx x = { st, &c->p };
	struct ss_chunk_stream *s = ss_chunk_stream_new(c);
	int r = 0;
	if (!s)
		return -ENOMEM;
	for (size_t off = 0; off < size && !r; off += rd)
		r = ss_chunk_stream_feed(s, buf + off, SS_MIN(rd, size - off), stream_emit, &x);
	if (!r)
		r = ss_chunk_stream_finish(s, stream_emit, &x);
	ss_chunk_stream_free(s);
	return r;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Runs one configuration and prints one line. */
static int bench(const struct ss_chunk_params *p, const uint8_t *buf, size_t size,
		 const char *kind, int iters, size_t rd, struct stats *st)
{
	struct ss_chunker c;
	int r = ss_chunker_init(&c, p);
	if (r) {
		fprintf(stderr, "chunkbench: bad parameters min %u avg %u max %u seg %u\n",
			p->min_size, p->avg_size, p->max_size, p->seg_size);
		return r;
	}
	double best = 0, best_cpu = 0;
	for (int i = 0; i < iters; i++) {
		uint64_t t0 = ss_now_ns(), c0 = cpu_ns();
		r = rd ? run_stream(&c, buf, size, rd, NULL) : run_segments(&c, buf, size, NULL);
		uint64_t t1 = ss_now_ns(), c1 = cpu_ns();
		if (r) {
			fprintf(stderr, "chunkbench: chunking failed: %s\n", strerror(-r));
			return r;
		}
		best = SS_MAX(best, (double)size / (double)SS_MAX(t1 - t0, 1));
		best_cpu = SS_MAX(best_cpu, (double)size / (double)SS_MAX(c1 - c0, 1));
	}
	/* Statistics from a separate pass so they do not slow the timed ones. */
	stats_reset(st);
	r = rd ? run_stream(&c, buf, size, rd, st) : run_segments(&c, buf, size, st);
	if (r)
		return r;
	uint64_t p10 = 0, p50 = 0, p90 = 0;
	if (st->nlens) {
		qsort(st->lens, st->nlens, sizeof(*st->lens), cmp_u32);
		p10 = st->lens[st->nlens / 10];
		p50 = st->lens[st->nlens / 2];
		p90 = st->lens[st->nlens * 9 / 10];
	}
	printf("%-6s min %7u avg %7u max %8u seg %8u%s  %5.2f GB/s cpu (%5.2f wall)  chunks %7" PRIu64
	       " mean %7.0f min %7" PRIu64 " max %7" PRIu64 " p10/50/90 %6" PRIu64 "/%6" PRIu64
	       "/%6" PRIu64 "  at-max %5.1f%% <min %5.1f%%  zero %5.1f%%\n",
	       kind, p->min_size, p->avg_size, p->max_size, p->seg_size, rd ? " stream" : "",
	       best_cpu, best, st->chunks, st->chunks ? (double)st->chunk_bytes / (double)st->chunks : 0.0,
	       st->chunks ? st->min : 0, st->max, p10, p50, p90,
	       st->chunks ? 100.0 * (double)st->at_max / (double)st->chunks : 0.0,
	       st->chunks ? 100.0 * (double)st->below_min / (double)st->chunks : 0.0,
	       100.0 * (double)st->zero_bytes / (double)size);
	return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: chunkbench [--mib N] [--min B] [--avg B] [--max B] [--seg B]\n"
		"                  [--data random|memory] [--iters K] [--read B] [--seed S]\n"
		"       chunkbench --sweep [--mib N] [--iters K]\n");
}

int main(int argc, char **argv)
{
	struct ss_chunk_params p = { SS_CHUNK_MIN_DEFAULT, SS_CHUNK_AVG_DEFAULT,
				     SS_CHUNK_MAX_DEFAULT, SS_CHUNK_SEG_DEFAULT };
	uint64_t mib = 256, iters = 3, rd = 0, seed = 1;
	const char *data = "random";
	bool sweep = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		uint64_t v = 0;
		if (!strcmp(a, "--sweep")) {
			sweep = true;
			continue;
		}
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage();
			return 0;
		}
		if (i + 1 >= argc) {
			usage();
			return 2;
		}
		const char *val = argv[++i];
		if (!strcmp(a, "--data")) {
			data = val;
			if (strcmp(data, "random") && strcmp(data, "memory")) {
				usage();
				return 2;
			}
			continue;
		}
		if (parse_size(val, &v)) {
			fprintf(stderr, "chunkbench: bad number '%s' for %s\n", val, a);
			return 2;
		}
		if (!strcmp(a, "--mib"))
			mib = v;
		else if (!strcmp(a, "--min"))
			p.min_size = (uint32_t)v;
		else if (!strcmp(a, "--avg"))
			p.avg_size = (uint32_t)v;
		else if (!strcmp(a, "--max"))
			p.max_size = (uint32_t)v;
		else if (!strcmp(a, "--seg"))
			p.seg_size = (uint32_t)v;
		else if (!strcmp(a, "--iters"))
			iters = v ? v : 1;
		else if (!strcmp(a, "--read"))
			rd = v;
		else if (!strcmp(a, "--seed"))
			seed = v;
		else {
			usage();
			return 2;
		}
	}
	if (!mib || mib > 65536) {
		fprintf(stderr, "chunkbench: --mib must be 1 .. 65536\n");
		return 2;
	}
	struct ss_chunker probe;
	if (!sweep && ss_chunker_init(&probe, &p)) {
		fprintf(stderr, "chunkbench: bad parameters min %u avg %u max %u seg %u\n",
			p.min_size, p.avg_size, p.max_size, p.seg_size);
		return 2;
	}
	size_t size = (size_t)mib << 20;
	uint8_t *rnd = malloc(size), *mem = malloc(size);
	struct stats st = { 0 };
	int r = 0;
	if (!rnd || !mem) {
		fprintf(stderr, "chunkbench: cannot allocate 2 x %" PRIu64 " MiB\n", mib);
		return 1;
	}
	uint64_t s1 = seed, s2 = seed ^ 0x6d656d6f7279ull;
	fill_random(rnd, size, &s1);
	fill_memory(mem, size, &s2);
	printf("chunkbench: %" PRIu64 " MiB, best of %" PRIu64 "\n", mib, iters);

	if (sweep) {
		/* min = avg / 4, max = avg * 4: the FastCDC paper's shape. */
		static const uint32_t avgs[] = { 8192, 16384, 32768, 65536, 131072, 262144 };
		for (int k = 0; k < 2 && !r; k++) {
			for (size_t i = 0; i < SS_ARRAY_SIZE(avgs) && !r; i++) {
				struct ss_chunk_params q = { avgs[i] / 4, avgs[i], avgs[i] * 4,
							     SS_CHUNK_SEG_DEFAULT };
				r = bench(&q, k ? mem : rnd, size, k ? "memory" : "random",
					  (int)iters, 0, &st);
			}
		}
		if (!r)
			r = bench(&p, rnd, size, "random", (int)iters, 1u << 20, &st);
	} else {
		bool m = !strcmp(data, "memory");
		r = bench(&p, m ? mem : rnd, size, data, (int)iters, (size_t)rd, &st);
	}
	free(st.lens);
	free(rnd);
	free(mem);
	return r ? 1 : 0;
}
