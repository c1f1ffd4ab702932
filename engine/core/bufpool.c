/* A resident pool of 2 MiB blocks lent to push and pull (bufpool.h). */
#include "bufpool.h"
#include "snapstream.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define BLOCK SS_HUGE_PAGE

struct ss_buffers {
	pthread_mutex_t mu;
	uint8_t *base;          /* 2 MiB aligned */
	size_t nblocks;
	uint8_t *map;           /* what mmap returned, for munmap */
	size_t map_len;
	uint8_t *used;          /* per block: 0 free, 1 lent */
};

int ss_buffers_new(size_t bytes, struct ss_buffers **out)
{
	*out = NULL;
	if (bytes < BLOCK || bytes > ((size_t)1 << 40))
		return -EINVAL;
	struct ss_buffers *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->nblocks = bytes / BLOCK;
	b->used = calloc(b->nblocks, 1);
	/* One block more, to align the pool to a huge page. */
	b->map_len = (b->nblocks + 1) * BLOCK;
	b->map = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!b->used || b->map == MAP_FAILED) {
		int e = b->map == MAP_FAILED ? -errno : -ENOMEM;
		if (b->map != MAP_FAILED)
			munmap(b->map, b->map_len);
		free(b->used);
		free(b);
		return e;
	}
	b->base = (uint8_t *)SS_ALIGN_UP((uintptr_t)b->map, BLOCK);
	madvise(b->base, b->nblocks * BLOCK, MADV_HUGEPAGE);
	/* The point of the pool: every page is faulted in now, once, not on
	 * each call that uses it. */
	if (madvise(b->base, b->nblocks * BLOCK, MADV_POPULATE_WRITE) < 0)
		memset(b->base, 0, b->nblocks * BLOCK);
	pthread_mutex_init(&b->mu, NULL);
	*out = b;
	return 0;
}

void ss_buffers_free(struct ss_buffers *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->mu);
	munmap(b->map, b->map_len);
	free(b->used);
	free(b);
}

void *ss_bufpool_get(struct ss_buffers *b, size_t n, bool sparse)
{
	if (b && n) {
		size_t k = (n + BLOCK - 1) / BLOCK;
		void *p = NULL;
		pthread_mutex_lock(&b->mu);
		/* First fit: a call takes a handful of buffers. */
		for (size_t i = 0, run = 0; i < b->nblocks; i++) {
			run = b->used[i] ? 0 : run + 1;
			if (run == k) {
				memset(b->used + i + 1 - k, 1, k);
				p = b->base + (i + 1 - k) * BLOCK;
				break;
			}
		}
		pthread_mutex_unlock(&b->mu);
		if (p)
			return p;
	}
	return sparse ? ss_map_alloc_sparse(n) : ss_map_alloc(n);
}

void ss_bufpool_put(struct ss_buffers *b, void *p, size_t n)
{
	if (!p)
		return;
	uint8_t *q = p;
	if (b && q >= b->base && q < b->base + b->nblocks * BLOCK) {
		size_t i = (size_t)(q - b->base) / BLOCK, k = (n + BLOCK - 1) / BLOCK;
		pthread_mutex_lock(&b->mu);
		memset(b->used + i, 0, SS_MIN(k, b->nblocks - i));
		pthread_mutex_unlock(&b->mu);
		return;
	}
	ss_map_free(p, n);
}
