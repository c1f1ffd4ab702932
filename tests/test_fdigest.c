/* Whole-file digests (engine/core/fdigest.h): format 2 against a plain
 * reference built from the definition, whatever pieces the bytes come in
 * and whether zeros come as bytes or as lengths; a zero run of 2^62 bytes
 * costs what one page does (a linear fold would never finish); format 1
 * is XXH3-128 of every byte. Exit 0 pass, 1 fail. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "fdigest.h"

#include "testutil.h"

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

int main(void)
{
	test_known();
	test_pieces();
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("fdigest: all checks passed\n");
	return 0;
}
