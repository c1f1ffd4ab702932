/* The push's page counts (engine/push/pageset.h): ss_pageset_add_many
 * counts exactly as ss_pageset_add one page after another does, with
 * repeats inside a batch and across batches, from several threads at
 * once, up to the set's bound; after ss_pageset_freeze, counts are read
 * without locks (TSan checks the handover), and ss_pageset_repeated_many
 * sets a bit exactly for the pages counted twice. Exit 0 pass, 1 fail. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pageset.h"

#include "testutil.h"

#define N 20000
#define ONCE UINT64_C(0x5555aaaa5555aaab)

/* Hashes with repeats: value i % 7000, so 7,000 distinct, most twice or
 * three times, some in the same batch. */
static uint64_t hash_of(size_t i)
{
	uint64_t x = (uint64_t)(i % 7000) * 0x9e3779b97f4a7c15ull;
	return x ^ (x >> 29);
}

struct job {
	struct ss_pageset *s;
	size_t from, to;
};

static void *add_range(void *arg)
{
	struct job *j = arg;
	uint64_t h[1500];
	for (size_t at = j->from; at < j->to;) {
		size_t n = 0;
		while (n < 1500 && at < j->to)
			h[n++] = hash_of(at++);
		ss_pageset_add_many(j->s, h, n);
	}
	return NULL;
}

int main(void)
{
	struct ss_pageset *one, *many;
	REQUIRE(!ss_pageset_new(1u << 20, &one) && !ss_pageset_new(1u << 20, &many), "new");
	for (size_t i = 0; i < N; i++)
		ss_pageset_add(one, hash_of(i));
	/* The same pages in batches from three threads. */
	pthread_t t[3];
	struct job j[3];
	for (int k = 0; k < 3; k++) {
		j[k] = (struct job){many, N * (size_t)k / 3, N * (size_t)(k + 1) / 3};
		REQUIRE(!pthread_create(&t[k], NULL, add_range, &j[k]), "thread");
	}
	for (int k = 0; k < 3; k++)
		pthread_join(t[k], NULL);
	ss_pageset_freeze(many);
	size_t twice = 0;
	for (size_t i = 0; i < 7000; i++) {
		unsigned a = ss_pageset_count(one, hash_of(i)), b = ss_pageset_count(many, hash_of(i));
		CHECK(a == b, "page %zu: counted %u one by one, %u in batches", i, a, b);
		twice += b == 2;
	}
	CHECK(twice == 7000, "every page met twice or more (%zu)", twice);
	CHECK(ss_pageset_count(many, 12345) == 0, "a page never added");

	/* The bits a push reads: set for pages met twice or more, whatever
	 * the count of their neighbours; 0 (a zero page) never; none set
	 * outside the n asked for. */
	ss_pageset_add(one, ONCE);   /* counted once only */
	ss_pageset_freeze(one);
	enum { M = 203 };
	uint64_t q[M];
	for (size_t i = 0; i < M; i++)
		q[i] = i % 5 == 0 ? 0 : i % 7 == 0 ? ONCE : i % 11 == 0 ? 12345 : hash_of(i);
	uint8_t rep[(M + 7) / 8 + 1];
	memset(rep, 0, sizeof(rep));
	ss_pageset_repeated_many(one, q, M, rep);
	for (size_t i = 0; i < M; i++) {
		bool want = q[i] && ss_pageset_count(one, q[i]) == 2;
		CHECK(((rep[i / 8] >> (i % 8)) & 1) == want, "page %zu: bit %d, counted %u", i,
		      (rep[i / 8] >> (i % 8)) & 1, q[i] ? ss_pageset_count(one, q[i]) : 0);
	}
	CHECK((rep[M / 8] >> (M % 8)) == 0 && rep[sizeof(rep) - 1] == 0, "bits past the pages");
	ss_pageset_free(one);
	ss_pageset_free(many);

	/* The bound: no more distinct pages than it allows, batches or not. */
	struct ss_pageset *small;
	REQUIRE(!ss_pageset_new(100, &small), "new");
	uint64_t h[1000];
	for (size_t i = 0; i < 1000; i++)
		h[i] = hash_of(i);
	ss_pageset_add_many(small, h, 1000);
	ss_pageset_freeze(small);
	size_t seen = 0;
	for (size_t i = 0; i < 1000; i++)
		seen += ss_pageset_count(small, h[i]) > 0;
	CHECK(seen == 100, "%zu distinct pages kept of a bound of 100", seen);
	ss_pageset_free(small);

	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("pageset: all checks passed\n");
	return 0;
}
