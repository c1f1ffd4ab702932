/* Whole-file digests (engine/core/fdigest.h): format 5 (a sum of leaves)
 * against the definition, in order, in pieces in any order from several
 * threads, and with split leaves read back; format 2 against a plain
 * reference built from the definition, whatever pieces the bytes come in
 * and whether zeros come as bytes or as lengths; a zero run of 2^62 bytes
 * costs what one page does (a linear fold would never finish); format 1
 * is XXH3-128 of every byte. Exit 0 pass, 1 fail. */
#include <pthread.h>
#include <sys/uio.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "fdigest.h"

#include "testutil.h"

#include <errno.h>

/* tests/fdigest.py of an empty file, and of a 4 KiB hole then "abc". */
#define KNOWN5_EMPTY "10e45c7ce2292320743df94ee4c78a2a"
#define KNOWN5_ABC "1abc231078093410501bd05be4b60abe"

#define PAGE 4096u

/* The stream of fdigest.h's definition, built the obvious way. */
struct stream {
	uint8_t *b;
	size_t n, cap;
};

static void put(struct stream *s, const void *p, size_t n)
{
	if (s->n + n > s->cap) {
		s->cap = (s->n + n) * 2;
		s->b = realloc(s->b, s->cap);
		REQUIRE(s->b, "out of memory");
	}
	memcpy(s->b + s->n, p, n);
	s->n += n;
}

static void trailer(struct stream *s, uint64_t run, bool zero)
{
	uint8_t t[8];
	uint64_t v = run << 1 | zero;
	for (int i = 0; i < 8; i++)
		t[i] = (uint8_t)(v >> (8 * i));
	put(s, t, 8);
}

static void reference(const uint8_t *f, size_t size, uint8_t out[16])
{
	struct stream s = {0};
	uint64_t run = 0;
	bool zero = false;
	for (size_t at = 0; at < size; at += PAGE) {
		size_t n = size - at < PAGE ? size - at : PAGE;
		bool z = true;
		for (size_t i = 0; i < n; i++)
			z &= f[at + i] == 0;
		if (run && z != zero) {
			trailer(&s, run, zero);
			run = 0;
		}
		zero = z;
		if (!z)
			put(&s, f + at, n);
		run += n;
	}
	if (run)
		trailer(&s, run, zero);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(s.b, s.n));
	memcpy(out, c.digest, 16);
	free(s.b);
}

/* A file of random, text-like and zero pages, with zero runs that start
 * and end inside pages too, and a partial last page. */
static uint8_t *make_file(size_t size)
{
	uint8_t *f = calloc(1, size);
	REQUIRE(f, "out of memory");
	for (size_t at = 0; at < size;) {
		size_t n = 1 + rnd() % (3 * PAGE);
		if (n > size - at)
			n = size - at;
		int kind = (int)(rnd() % 3);
		for (size_t i = 0; i < n; i++)
			f[at + i] = kind == 0 ? 0 : kind == 1 ? (uint8_t)rnd() : (uint8_t)"page "[i % 5];
		at += n;
	}
	return f;
}

/* Feed f in random pieces; each all-zero piece as a length when
 * zero_as_len. */
static void feed(struct ss_fdigest *d, const uint8_t *f, size_t size, bool zero_as_len)
{
	for (size_t at = 0; at < size;) {
		size_t n = rnd() % 4 == 0 ? rnd() % 64 : rnd() % (5 * PAGE);
		if (n > size - at)
			n = size - at;
		bool z = true;
		for (size_t i = 0; i < n && z; i++)
			z = f[at + i] == 0;
		if (zero_as_len && z)
			ss_fdigest_zero(d, n);
		else
			ss_fdigest_data(d, f + at, n);
		at += n;
	}
}

static void test_pieces(void)
{
	struct ss_fdigest *d = ss_fdigest_new(2), *p = ss_fdigest_new(1);
	REQUIRE(d && p, "out of memory");
	size_t sizes[] = {0, 1, 100, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, 1u << 20, (1u << 20) + 77};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t size = sizes[k];
		for (int round = 0; round < 20; round++) {
			uint8_t *f = make_file(size);
			uint8_t want[16], got[16], plain[16];
			reference(f, size, want);
			XXH128_canonical_t c;
			XXH128_canonicalFromHash(&c, XXH3_128bits(f, size));
			memcpy(plain, c.digest, 16);
			ss_fdigest_reset(d);
			ss_fdigest_data(d, f, size);
			ss_fdigest_final(d, got);
			CHECK(!memcmp(got, want, 16), "size %zu round %d: whole", size, round);
			for (int zl = 0; zl < 2; zl++) {
				ss_fdigest_reset(d);
				feed(d, f, size, zl);
				ss_fdigest_final(d, got);
				CHECK(!memcmp(got, want, 16), "size %zu round %d: pieces (zeros as %s)",
				      size, round, zl ? "lengths" : "bytes");
				ss_fdigest_reset(p);
				feed(p, f, size, zl);
				ss_fdigest_final(p, got);
				CHECK(!memcmp(got, plain, 16), "size %zu round %d: format 1 is XXH3-128",
				      size, round);
			}
			free(f);
		}
	}
	ss_fdigest_free(d);
	ss_fdigest_free(p);
}

/* Known answers: what tests/fdigest.py piped into xxh128sum gives. */
static void test_known(void)
{
	struct ss_fdigest *d = ss_fdigest_new(2);
	REQUIRE(d, "out of memory");
	uint8_t got[16], want[16];
	struct stream s = {0};
	/* A page of zeros, then "abc". */
	ss_fdigest_zero(d, PAGE);
	ss_fdigest_data(d, "abc", 3);
	ss_fdigest_final(d, got);
	trailer(&s, PAGE, true);
	put(&s, "abc", 3);
	trailer(&s, 3, false);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(s.b, s.n));
	CHECK(!memcmp(got, c.digest, 16), "zero page + abc");
	/* The empty file is the empty stream. */
	ss_fdigest_reset(d);
	ss_fdigest_final(d, got);
	XXH128_canonicalFromHash(&c, XXH3_128bits("", 0));
	CHECK(!memcmp(got, c.digest, 16), "empty file");
	/* A page, 2^62 zero bytes as holes and as a zero run that follows
	 * (one run), another page: O(1) however long the run. */
	uint8_t pg[PAGE];
	memset(pg, 'p', sizeof(pg));
	ss_fdigest_reset(d);
	ss_fdigest_data(d, pg, PAGE);
	ss_fdigest_zero(d, 1ull << 61);
	memset(pg, 0, sizeof(pg));
	ss_fdigest_data(d, pg, PAGE);   /* a zero page as bytes: the same run */
	ss_fdigest_zero(d, (1ull << 61) - PAGE);
	memset(pg, 'q', sizeof(pg));
	ss_fdigest_data(d, pg, 10);
	ss_fdigest_final(d, got);
	s.n = 0;
	memset(pg, 'p', sizeof(pg));
	put(&s, pg, PAGE);
	trailer(&s, PAGE, false);
	trailer(&s, 1ull << 62, true);
	memset(pg, 'q', sizeof(pg));
	put(&s, pg, 10);
	trailer(&s, 10, false);
	XXH128_canonicalFromHash(&c, XXH3_128bits(s.b, s.n));
	memcpy(want, c.digest, 16);
	CHECK(!memcmp(got, want, 16), "2^62 zero bytes");
	free(s.b);
	ss_fdigest_free(d);
}

/* ---------------------------------------------------------- format 5 */

#define LEAF SS_FDIGEST_LEAF

/* The definition, the obvious way. */
static void reference5(const uint8_t *f, size_t size, uint8_t out[16])
{
	uint64_t lo = 0, hi = 0;
	for (size_t at = 0, i = 0; at < size; at += LEAF, i++) {
		size_t n = size - at < LEAF ? size - at : LEAF;
		bool z = true;
		for (size_t k = 0; k < n; k++)
			z &= f[at + k] == 0;
		if (z)
			continue;
		XXH128_hash_t h = XXH3_128bits_withSeed(f + at, n, i);
		lo += h.low64;
		hi += h.high64 + (lo < h.low64);
	}
	uint8_t b[24];
	uint64_t v[3] = {size, lo, hi};
	for (int w = 0; w < 3; w++)
		for (int k = 0; k < 8; k++)
			b[8 * w + k] = (uint8_t)(v[w] >> (8 * k));
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(b, sizeof(b)));
	memcpy(out, c.digest, 16);
}

struct piece {
	size_t off, len;
};

/* Cut [0, size) into pieces of 1 byte to a few leaves, some whole runs of
 * zeros left out (holes), in a random order. */
static struct piece *cut(const uint8_t *f, size_t size, size_t *np, bool shuffle)
{
	struct piece *pc = NULL;
	size_t n = 0, cap = 0;
	for (size_t at = 0; at < size;) {
		size_t len = rnd() % 4 == 0 ? 1 + rnd() % 40 : 1 + rnd() % (3 * LEAF);
		if (len > size - at)
			len = size - at;
		bool z = true;
		for (size_t i = 0; i < len && z; i++)
			z = f[at + i] == 0;
		if (!(z && rnd() % 2)) {
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				pc = realloc(pc, cap * sizeof(*pc));
				REQUIRE(pc, "out of memory");
			}
			pc[n++] = (struct piece){at, len};
		}
		at += len;
	}
	for (size_t i = n; shuffle && i > 1; i--) {
		size_t j = rnd() % i;
		struct piece t = pc[i - 1];
		pc[i - 1] = pc[j];
		pc[j] = t;
	}
	*np = n;
	return pc;
}

struct feeder {
	struct ss_fdsum *s;
	const uint8_t *f;
	const struct piece *pc;
	size_t from, to;
	int err;
};

static void *feed_sum(void *arg)
{
	struct feeder *fd = arg;
	struct ss_fdacc local = {0, 0};
	for (size_t i = fd->from; i < fd->to && !fd->err; i++)
		fd->err = ss_fdsum_data(fd->s, fd->pc[i].off, fd->f + fd->pc[i].off, fd->pc[i].len,
					&local);
	ss_fdsum_add(fd->s, &local);
	return NULL;
}

struct rb {
	const uint8_t *f;
	size_t size, reads;
};

static int read_back(void *arg, uint64_t off, void *buf, size_t n)
{
	struct rb *r = arg;
	if (off + n > r->size)
		return -EIO;
	memcpy(buf, r->f + off, n);
	r->reads++;
	return 0;
}

static void test_sum(void)
{
	struct ss_fdigest *d = ss_fdigest_new(SS_FDIGEST_SUM_MAJOR);
	REQUIRE(d, "out of memory");
	size_t sizes[] = {0, 1, 100, LEAF - 1, LEAF, LEAF + 1, 3 * PAGE, 1u << 20, (1u << 20) + 77};
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t size = sizes[k];
		for (int round = 0; round < 20; round++) {
			uint8_t *f = make_file(size);
			uint8_t want[16], got[16];
			reference5(f, size, want);
			ss_fdigest_reset(d);
			ss_fdigest_data(d, f, size);
			ss_fdigest_final(d, got);
			CHECK(!memcmp(got, want, 16), "sum, size %zu round %d: whole", size, round);
			for (int zl = 0; zl < 2; zl++) {
				feed(d, f, size, zl);
				ss_fdigest_final(d, got);
				CHECK(!memcmp(got, want, 16), "sum, size %zu round %d: in order (zeros as %s)",
				      size, round, zl ? "lengths" : "bytes");
			}
			/* Out of order, from 1 and from 3 threads. */
			size_t np;
			struct piece *pc = cut(f, size, &np, true);
			for (int nt = 1; nt <= 3; nt += 2) {
				struct ss_fdsum *s = ss_fdsum_new(size);
				REQUIRE(s, "out of memory");
				struct feeder fd[3];
				pthread_t th[3];
				for (int t = 0; t < nt; t++) {
					fd[t] = (struct feeder){s, f, pc, np * t / nt, np * (t + 1) / nt, 0};
					REQUIRE(!pthread_create(&th[t], NULL, feed_sum, &fd[t]), "thread");
				}
				for (int t = 0; t < nt; t++) {
					pthread_join(th[t], NULL);
					CHECK(!fd[t].err, "feed: %d", fd[t].err);
				}
				struct rb r = {f, size, 0};
				CHECK(!ss_fdsum_final(s, read_back, &r, got), "final");
				CHECK(!memcmp(got, want, 16), "sum, size %zu round %d: %zu pieces in any order, %d thread(s)",
				      size, round, np, nt);
				ss_fdsum_free(s);
			}
			free(pc);
			/* Runs of pieces consecutive in the file, each piece in a
			 * buffer of its own (as a pull's writes), the runs in any
			 * order. */
			pc = cut(f, size, &np, false);
			struct ss_fdsum *s = ss_fdsum_new(size);
			REQUIRE(s, "out of memory");
			struct iovec *iov = calloc(np ? np : 1, sizeof(*iov));
			struct piece *runs = calloc(np ? np : 1, sizeof(*runs));   /* [first, end) */
			size_t nruns = 0;
			REQUIRE(iov && runs, "out of memory");
			for (size_t i = 0; i < np; i++) {
				iov[i].iov_base = malloc(pc[i].len);
				REQUIRE(iov[i].iov_base, "out of memory");
				memcpy(iov[i].iov_base, f + pc[i].off, pc[i].len);
				iov[i].iov_len = pc[i].len;
				/* A run ends at a hole, or at random. */
				if (i == 0 || pc[i - 1].off + pc[i - 1].len != pc[i].off || rnd() % 4 == 0)
					runs[nruns++] = (struct piece){i, i};
				runs[nruns - 1].len = i + 1;
			}
			for (size_t i = nruns; i > 1; i--) {
				size_t j = rnd() % i;
				struct piece t = runs[i - 1];
				runs[i - 1] = runs[j];
				runs[j] = t;
			}
			struct ss_fdacc local = {0, 0};
			for (size_t q = 0; q < nruns; q++) {
				size_t first = runs[q].off, end = runs[q].len;
				CHECK(!ss_fdsum_datav(s, pc[first].off, iov + first, end - first, &local),
				      "datav");
			}
			ss_fdsum_add(s, &local);
			struct rb r = {f, size, 0};
			CHECK(!ss_fdsum_final(s, read_back, &r, got), "final");
			CHECK(!memcmp(got, want, 16), "sum, size %zu round %d: %zu runs of separate buffers",
			      size, round, nruns);
			ss_fdsum_free(s);
			for (size_t i = 0; i < np; i++)
				free(iov[i].iov_base);
			free(iov);
			free(runs);
			free(pc);
			/* A changed byte, or a byte moved, changes the digest. */
			if (size > 2 * LEAF) {
				size_t at = rnd() % size;
				f[at] ^= 0x40;
				ss_fdigest_data(d, f, size);
				ss_fdigest_final(d, got);
				CHECK(memcmp(got, want, 16), "a flipped bit changes the digest");
				f[at] ^= 0x40;
				uint8_t t = f[0];
				memmove(f, f + 1, size - 1);
				f[size - 1] = t;
				reference5(f, size, got);
				bool same = !memcmp(got, want, 16);
				bool flat = true;
				for (size_t i = 1; i < size && flat; i++)
					flat = f[i] == f[0];
				CHECK(!same || flat, "rotated bytes change the digest");
			}
			free(f);
		}
	}
	ss_fdigest_free(d);
}

/* More split leaves than are kept: the rest are read back, the digest is
 * the same. Pieces of 1000 bytes, every other one first, split ~all the
 * leaves of a 16 MiB file at once. */
static void test_read_back(void)
{
	size_t size = 16u << 20;
	uint8_t *f = malloc(size);
	REQUIRE(f, "out of memory");
	for (size_t i = 0; i < size; i++)
		f[i] = (uint8_t)rnd();
	uint8_t want[16], got[16];
	reference5(f, size, want);
	struct ss_fdsum *s = ss_fdsum_new(size);
	REQUIRE(s, "out of memory");
	struct ss_fdacc local = {0, 0};
	for (int pass = 0; pass < 2; pass++)
		for (size_t at = (size_t)pass * 1000; at < size; at += 2000)
			CHECK(!ss_fdsum_data(s, at, f + at, at + 1000 > size ? size - at : 1000, &local),
			      "feed");
	ss_fdsum_add(s, &local);
	struct rb r = {f, size, 0};
	CHECK(!ss_fdsum_final(s, read_back, &r, got), "final");
	CHECK(!memcmp(got, want, 16), "with leaves read back");
	CHECK(r.reads > 0, "some leaves were read back (%zu)", r.reads);
	ss_fdsum_free(s);
	/* A read-back error is the final's. */
	s = ss_fdsum_new(size);
	REQUIRE(s, "out of memory");
	for (int pass = 0; pass < 2; pass++)
		for (size_t at = (size_t)pass * 1000; at < size; at += 2000)
			ss_fdsum_data(s, at, f + at, at + 1000 > size ? size - at : 1000, &local);
	r = (struct rb){f, 0, 0};
	CHECK(ss_fdsum_final(s, read_back, &r, got) == -EIO, "read-back error returned");
	ss_fdsum_free(s);
	free(f);
}

/* Known answers: what tests/fdigest.py prints. */
static void test_known5(void)
{
	struct ss_fdigest *d = ss_fdigest_new(SS_FDIGEST_SUM_MAJOR);
	REQUIRE(d, "out of memory");
	uint8_t got[16];
	char hex[33];
	/* The empty file. */
	ss_fdigest_final(d, got);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", got[i]);
	CHECK(!strcmp(hex, KNOWN5_EMPTY), "empty file: %s", hex);
	/* A page of zeros as a hole, then "abc". */
	ss_fdigest_zero(d, PAGE);
	ss_fdigest_data(d, "abc", 3);
	ss_fdigest_final(d, got);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", got[i]);
	CHECK(!strcmp(hex, KNOWN5_ABC), "zero page + abc: %s", hex);
	/* 2^62 zero bytes cost nothing. */
	ss_fdigest_data(d, "x", 1);
	ss_fdigest_zero(d, 1ull << 62);
	ss_fdigest_data(d, "y", 1);
	ss_fdigest_final(d, got);
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", got[i]);
	CHECK(strlen(hex) == 32, "2^62 zero bytes");
	ss_fdigest_free(d);
}

int main(void)
{
	test_known5();
	test_sum();
	test_read_back();
	test_known();
	test_pieces();
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("fdigest: all checks passed\n");
	return 0;
}
