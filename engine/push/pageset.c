#include "pageset.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NSHARDS 64
/* A slot holds the hash with its top bit used as "counted twice" and its
 * low bit set, so that 0 marks an empty slot; two bits of the hash are
 * lost, which only makes collisions (harmless, see the header) likelier. */
#define TWICE (UINT64_C(1) << 63)

struct shard {
	pthread_mutex_t mu;
	uint64_t *slots;
	size_t cap;            /* power of two, or 0 */
	size_t used;
};

struct ss_pageset {
	struct shard shards[NSHARDS];
	_Atomic size_t total;
	size_t max_pages;
	bool frozen;           /* no more adds: counts need no lock */
};

int ss_pageset_new(size_t max_pages, struct ss_pageset **out)
{
	struct ss_pageset *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->max_pages = max_pages;
	for (unsigned i = 0; i < NSHARDS; i++)
		pthread_mutex_init(&s->shards[i].mu, NULL);
	*out = s;
	return 0;
}

void ss_pageset_free(struct ss_pageset *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < NSHARDS; i++) {
		free(s->shards[i].slots);
		pthread_mutex_destroy(&s->shards[i].mu);
	}
	free(s);
}

static uint64_t key_of(uint64_t h)
{
	return (h & ~TWICE) | 1;
}

/* The low bits pick the shard, the bits above them the slot. */
static size_t home(uint64_t k, size_t cap)
{
	return (size_t)(k >> 7) & (cap - 1);
}

static bool grow(struct shard *sh)
{
	size_t ncap = sh->cap ? sh->cap * 2 : 1024;
	uint64_t *ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return false;
	for (size_t i = 0; i < sh->cap; i++) {
		uint64_t v = sh->slots[i];
		if (!v)
			continue;
		size_t j = home(v & ~TWICE, ncap);
		while (ns[j])
			j = (j + 1) & (ncap - 1);
		ns[j] = v;
	}
	free(sh->slots);
	sh->slots = ns;
	sh->cap = ncap;
	return true;
}

/* The slot holding k, or NULL (then *free_at is where it would go). */
static uint64_t *find(struct shard *sh, uint64_t k, size_t *free_at)
{
	if (!sh->cap)
		return NULL;
	size_t j = home(k, sh->cap);
	while (sh->slots[j]) {
		if ((sh->slots[j] & ~TWICE) == k)
			return &sh->slots[j];
		j = (j + 1) & (sh->cap - 1);
	}
	*free_at = j;
	return NULL;
}

static unsigned shard_of(uint64_t k)
{
	return (unsigned)(k >> 1) & (NSHARDS - 1);
}

/* Count key k in its shard, whose lock the caller holds. */
static unsigned add_locked(struct ss_pageset *s, struct shard *sh, uint64_t k)
{
	unsigned before = 0;
	size_t at = 0;
	uint64_t *v = find(sh, k, &at);
	if (v) {
		before = (*v & TWICE) ? 2 : 1;
		*v |= TWICE;
	} else if (atomic_load(&s->total) < s->max_pages) {
		/* At most half full, so probes stay short. */
		bool room = (sh->used + 1) * 2 <= sh->cap;
		if (!room && grow(sh)) {
			find(sh, k, &at);
			room = true;
		}
		if (room) {
			sh->slots[at] = k;
			sh->used++;
			atomic_fetch_add(&s->total, 1);
		}
	}
	return before;
}

unsigned ss_pageset_add(struct ss_pageset *s, uint64_t h)
{
	uint64_t k = key_of(h);
	struct shard *sh = &s->shards[shard_of(k)];
	pthread_mutex_lock(&sh->mu);
	unsigned before = add_locked(s, sh, k);
	pthread_mutex_unlock(&sh->mu);
	return before;
}

void ss_pageset_add_many(struct ss_pageset *s, const uint64_t *h, size_t n)
{
	/* Grouped by shard in one pass (a counting sort), each group added
	 * under one lock, in batches that fit the stack. */
	enum { BATCH = 1024 };
	uint64_t by[BATCH];
	while (n) {
		size_t m = n < BATCH ? n : BATCH;
		size_t start[NSHARDS + 1] = {0};
		for (size_t i = 0; i < m; i++)
			start[shard_of(key_of(h[i])) + 1]++;
		for (unsigned i = 0; i < NSHARDS; i++)
			start[i + 1] += start[i];
		size_t at[NSHARDS];
		memcpy(at, start, sizeof(at));
		for (size_t i = 0; i < m; i++) {
			uint64_t k = key_of(h[i]);
			by[at[shard_of(k)]++] = k;
		}
		for (unsigned i = 0; i < NSHARDS; i++) {
			if (start[i] == start[i + 1])
				continue;
			struct shard *sh = &s->shards[i];
			pthread_mutex_lock(&sh->mu);
			for (size_t j = start[i]; j < start[i + 1]; j++)
				add_locked(s, sh, by[j]);
			pthread_mutex_unlock(&sh->mu);
		}
		h += m;
		n -= m;
	}
}

void ss_pageset_freeze(struct ss_pageset *s)
{
	s->frozen = true;
}

unsigned ss_pageset_count(struct ss_pageset *s, uint64_t h)
{
	uint64_t k = key_of(h);
	struct shard *sh = &s->shards[shard_of(k)];
	size_t at;
	if (s->frozen) {
		const uint64_t *v = find(sh, k, &at);
		return !v ? 0 : (*v & TWICE) ? 2 : 1;
	}
	pthread_mutex_lock(&sh->mu);
	uint64_t *v = find(sh, k, &at);
	unsigned n = !v ? 0 : (*v & TWICE) ? 2 : 1;
	pthread_mutex_unlock(&sh->mu);
	return n;
}

void ss_pageset_repeated_many(struct ss_pageset *s, const uint64_t *h, size_t n,
			      uint8_t *rep)
{
	enum { AHEAD = 16 };
	for (size_t i = 0; i < n; i++) {
		if (i + AHEAD < n && h[i + AHEAD]) {
			uint64_t k = key_of(h[i + AHEAD]);
			const struct shard *sh = &s->shards[shard_of(k)];
			if (sh->cap)
				__builtin_prefetch(&sh->slots[home(k, sh->cap)]);
		}
		if (!h[i])
			continue;
		uint64_t k = key_of(h[i]);
		struct shard *sh = &s->shards[shard_of(k)];
		size_t at;
		const uint64_t *v = find(sh, k, &at);
		if (v && (*v & TWICE))
			rep[i / 8] |= (uint8_t)(1u << (i % 8));
	}
}
