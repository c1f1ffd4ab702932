/* Shared by the test programs: checks that count failures (and keep
 * working in release builds, unlike assert), and a seeded generator so
 * every run sees the same data. Each test is its own program, so the
 * state below is per test. */
#ifndef SS_TESTUTIL_H
#define SS_TESTUTIL_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			failures++;                                             \
		}                                                               \
	} while (0)

#define REQUIRE(cond, ...)                                                      \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "FATAL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			exit(1);                                                \
		}                                                               \
	} while (0)

#ifndef TEST_SEED
#define TEST_SEED 0x9e3779b97f4a7c15ull
#endif

static uint64_t rng_state = TEST_SEED;

/* xorshift64: fast, deterministic, good enough for test data. */
static inline uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

/* A memory-like image of size bytes at path: a mix of zero, random and
 * text-like pages from rnd(). Text-like pages carry their offset, so no
 * page repeats (push makes repeated pages chunks of their own, which only
 * some tests want). */
static inline void write_image(const char *path, size_t size)
{
	uint8_t *b = calloc(1, size);
	REQUIRE(b, "out of memory");
	for (size_t i = 0; i < size; i += 4096) {
		int kind = (int)(rnd() % 3);   /* zero, random, text-like pages */
		for (size_t j = 0; j < 4096 && i + j < size; j++)
			b[i + j] = kind == 1   ? (uint8_t)rnd()
				   : kind == 2 ? (j % 64 < 8 ? (uint8_t)(i >> (j % 8 * 8)) : (uint8_t)"page "[j % 5])
					       : 0;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0 && write(fd, b, size) == (ssize_t)size, "write %s", path);
	close(fd);
	free(b);
}

#endif
