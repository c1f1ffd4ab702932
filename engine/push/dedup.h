/* dedup — the chunk index of one operation: every chunk id the store, the
 * parents and this push know, with where it is stored.
 *
 * Workers claim ids concurrently (ss_dedup_claim); the loop thread fills in
 * locations. Entries live in fixed blocks that never move, so a slot
 * number stays valid for the life of the table; the hash lives in 256
 * shards, each with its own lock, so claims rarely contend.
 */
#ifndef SS_DEDUP_H
#define SS_DEDUP_H

#include <stdbool.h>
#include <stdint.h>

#define SS_SLOT_NONE UINT32_MAX
#define SS_PACK_PENDING UINT32_MAX

struct ss_dentry {
	uint8_t id[16];
	uint32_t pack;        /* store pack index, SS_PACK_PENDING until packed */
	uint32_t offset;
	uint32_t stored_len;
	uint32_t raw_len;
	uint32_t snap_idx;    /* index in the snapshot's chunk table, or NONE */
	uint32_t frame_off;   /* offset of the chunk in its decompressed frame */
	uint8_t codec;
};

struct ss_dedup;

/* max_entries bounds the table (returns -ENOSPC past it). */
int ss_dedup_new(uint32_t max_entries, struct ss_dedup **out);
void ss_dedup_free(struct ss_dedup *d);

/* Look id up; if absent insert it (pack = SS_PACK_PENDING) and report
 * *is_new = true: the caller then owns storing that chunk. Thread-safe.
 * Returns 0 and the slot, or -ENOSPC / -ENOMEM. */
int ss_dedup_claim(struct ss_dedup *d, const uint8_t id[16], uint32_t raw_len, uint32_t *slot,
		   bool *is_new);

/* Insert a stored chunk (index loading; loop thread, before workers run).
 * An id already present keeps its first location. */
int ss_dedup_add(struct ss_dedup *d, const uint8_t id[16], uint32_t pack, uint32_t offset,
		 uint32_t stored_len, uint32_t raw_len, uint8_t codec, uint32_t frame_off);

/* The entry for a slot. Safe while no claim can create that slot. */
struct ss_dentry *ss_dedup_entry(struct ss_dedup *d, uint32_t slot);
uint32_t ss_dedup_count(const struct ss_dedup *d);

#endif
