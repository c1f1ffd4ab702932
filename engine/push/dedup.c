#include "dedup.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NSHARDS 256
#define BLOCK_SHIFT 14                 /* 16384 entries per block */
#define BLOCK_SIZE (1u << BLOCK_SHIFT)

struct shard {
	pthread_mutex_t mu;
	uint32_t *slots;       /* open addressing, SS_SLOT_NONE = empty */
	uint32_t cap;          /* power of two */
	uint32_t used;
};

struct ss_dedup {
	struct shard shards[NSHARDS];
	struct ss_dentry **blocks;     /* fixed array of block pointers */
	uint32_t nblocks_max;
	pthread_mutex_t grow_mu;       /* only to allocate a new block */
	_Atomic uint32_t count;
	uint32_t max_entries;
};

static uint64_t id_hash(const uint8_t id[16])
{
	/* Ids are XXH3 outputs: any 8 bytes are already uniformly spread. */
	uint64_t h;
	memcpy(&h, id + 8, sizeof(h));
	return h;
}

int ss_dedup_new(uint32_t max_entries, struct ss_dedup **out)
{
	struct ss_dedup *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->max_entries = max_entries;
	d->nblocks_max = (max_entries + BLOCK_SIZE - 1) / BLOCK_SIZE;
	d->blocks = calloc(d->nblocks_max ? d->nblocks_max : 1, sizeof(*d->blocks));
	if (!d->blocks) {
		free(d);
		return -ENOMEM;
	}
	pthread_mutex_init(&d->grow_mu, NULL);
	for (unsigned i = 0; i < NSHARDS; i++)
		pthread_mutex_init(&d->shards[i].mu, NULL);
	*out = d;
	return 0;
}

void ss_dedup_free(struct ss_dedup *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < NSHARDS; i++) {
		free(d->shards[i].slots);
		pthread_mutex_destroy(&d->shards[i].mu);
	}
	/* Slots are handed out in order, so only the blocks below the count
	 * were ever allocated: the array has room for 2^31 entries (1 MiB of
	 * pointers), and walking all of it faulted in 256 untouched pages, a
	 * tenth of the CPU of a push of one small file. */
	uint32_t used = atomic_load(&d->count);
	if (used > d->max_entries)
		used = d->max_entries;
	for (uint32_t i = 0; i < (used + BLOCK_SIZE - 1) / BLOCK_SIZE; i++)
		free(d->blocks[i]);
	free(d->blocks);
	pthread_mutex_destroy(&d->grow_mu);
	free(d);
}

struct ss_dentry *ss_dedup_entry(struct ss_dedup *d, uint32_t slot)
{
	return &d->blocks[slot >> BLOCK_SHIFT][slot & (BLOCK_SIZE - 1)];
}

uint32_t ss_dedup_count(const struct ss_dedup *d)
{
	return atomic_load(&d->count);
}

/* A fresh slot in the entry blocks. */
static int new_slot(struct ss_dedup *d, uint32_t *slot)
{
	uint32_t s = atomic_fetch_add(&d->count, 1);
	if (s >= d->max_entries) {
		atomic_fetch_sub(&d->count, 1);
		return -ENOSPC;
	}
	uint32_t b = s >> BLOCK_SHIFT;
	pthread_mutex_lock(&d->grow_mu);
	if (!d->blocks[b])
		d->blocks[b] = malloc(sizeof(struct ss_dentry) * BLOCK_SIZE);
	struct ss_dentry *blk = d->blocks[b];
	pthread_mutex_unlock(&d->grow_mu);
	if (!blk)
		return -ENOMEM;
	*slot = s;
	return 0;
}

static int shard_grow(struct ss_dedup *d, struct shard *sh)
{
	uint32_t ncap = sh->cap ? sh->cap * 2 : 64;
	uint32_t *ns = malloc(sizeof(*ns) * ncap);
	if (!ns)
		return -ENOMEM;
	memset(ns, 0xff, sizeof(*ns) * ncap);
	for (uint32_t i = 0; i < sh->cap; i++) {
		uint32_t s = sh->slots[i];
		if (s == SS_SLOT_NONE)
			continue;
		uint64_t h = id_hash(ss_dedup_entry(d, s)->id) >> 8;
		uint32_t j = (uint32_t)h & (ncap - 1);
		while (ns[j] != SS_SLOT_NONE)
			j = (j + 1) & (ncap - 1);
		ns[j] = s;
	}
	free(sh->slots);
	sh->slots = ns;
	sh->cap = ncap;
	return 0;
}

/* Find id in its shard (locked by the caller); returns the probe index. */
static uint32_t shard_find(struct ss_dedup *d, struct shard *sh, const uint8_t id[16], uint64_t h,
			   bool *found)
{
	uint32_t j = (uint32_t)(h >> 8) & (sh->cap - 1);
	for (;;) {
		uint32_t s = sh->slots[j];
		if (s == SS_SLOT_NONE) {
			*found = false;
			return j;
		}
		if (memcmp(ss_dedup_entry(d, s)->id, id, 16) == 0) {
			*found = true;
			return j;
		}
		j = (j + 1) & (sh->cap - 1);
	}
}

static int insert(struct ss_dedup *d, const uint8_t id[16], const struct ss_dentry *init,
		  uint32_t *slot, bool *is_new)
{
	uint64_t h = id_hash(id);
	struct shard *sh = &d->shards[h & (NSHARDS - 1)];
	int r = 0;
	pthread_mutex_lock(&sh->mu);
	/* Keep the load under one half so probes stay short. */
	if ((sh->used + 1) * 2 > sh->cap && (r = shard_grow(d, sh)))
		goto out;
	bool found;
	uint32_t j = shard_find(d, sh, id, h, &found);
	if (found) {
		*slot = sh->slots[j];
		*is_new = false;
		goto out;
	}
	uint32_t s;
	if ((r = new_slot(d, &s)))
		goto out;
	struct ss_dentry *e = ss_dedup_entry(d, s);
	*e = *init;
	memcpy(e->id, id, 16);
	sh->slots[j] = s;
	sh->used++;
	*slot = s;
	*is_new = true;
out:
	pthread_mutex_unlock(&sh->mu);
	return r;
}

int ss_dedup_claim(struct ss_dedup *d, const uint8_t id[16], uint32_t raw_len, uint32_t *slot,
		   bool *is_new)
{
	struct ss_dentry init = {
		.pack = SS_PACK_PENDING,
		.raw_len = raw_len,
		.snap_idx = SS_SLOT_NONE,
	};
	return insert(d, id, &init, slot, is_new);
}

int ss_dedup_add(struct ss_dedup *d, const uint8_t id[16], uint32_t pack, uint32_t offset,
		 uint32_t stored_len, uint32_t raw_len, uint8_t codec, uint32_t frame_off)
{
	struct ss_dentry init = {
		.pack = pack,
		.offset = offset,
		.stored_len = stored_len,
		.raw_len = raw_len,
		.snap_idx = SS_SLOT_NONE,
		.frame_off = frame_off,
		.codec = codec,
	};
	uint32_t slot;
	bool is_new;
	return insert(d, id, &init, &slot, &is_new);
}
