/* ncache — the node cache: pack bytes kept on local disk and shared by
 * every process of one user on the node (docs/DESIGN.md, "The node
 * cache").
 *
 * A cache is a directory of blocks: block k of pack P of store S holds
 * bytes [k * B, (k + 1) * B) of P (fewer at its end; B is the cache's
 * block size, ss_ncache_block), named by XXH3-128 of (S's identity, P, k). Packs are immutable
 * and their ids random, so a block never changes once written; every
 * chunk read out of one is still verified by its id by whoever decodes it
 * (the range reader), and a range whose chunks fail is dropped and read
 * again from the store (ss_range_retry).
 *
 * The cache is used through a backend stacked on a store's backend
 * (ss_ncache_wrap, ncstore.c): ranged GETs of packs are served from
 * blocks; a missing block is fetched once for the whole node (an OFD
 * lock per block says who fetches it, and the others wait for it to
 * appear); packs a push PUTs are written through. Every other request
 * passes through.
 *
 * Snapshots' manifests are kept as blocks too, of pseudo-packs
 * (ncmanifest.c), for pulls that start before the store answers.
 *
 * ncache.c is the directory: blocks, the locks, the shared counters (a
 * small mapped file updated with atomics), the bound and eviction. Loop
 * thread only, like every backend; processes and threads with their own
 * ss_ncache share a directory safely.
 */
#ifndef SS_NCACHE_H
#define SS_NCACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "backend.h"
#include "snapstream.h"
#include "util.h"

/* Block size of new caches: the unit of caching, locking and eviction
 * (docs/DESIGN.md, "The node cache", says why 256 KiB): 256 KiB less the
 * header, so that a block's file is 256 KiB, whole pages and file system
 * blocks. A cache keeps the size it was made with (ss_ncache_block):
 * caches made before hold 64 KiB blocks. */
/* magic 8, name 16, length 4, zero 4 */
#define SS_NCACHE_HEADER 32u
#define SS_NCACHE_BLOCK ((256u << 10) - SS_NCACHE_HEADER)

struct ss_ncache;
struct ss_cfg;

/* Open (creating it, mode 0700, when missing) the cache directory dir,
 * kept within bound bytes (0: SS_CACHE_SIZE_DEFAULT; less than
 * SS_CACHE_SIZE_MIN is -EINVAL). A directory that another user owns or
 * that others may write is refused (-EPERM): its blocks would be theirs
 * to read or replace. With must_exist, a directory that holds no cache is
 * -ENOENT and nothing is created. Returns 0 or -errno with err set. */
int ss_ncache_open(const char *dir, uint64_t bound, bool must_exist, struct ss_ncache **out,
		   struct ss_err *err);
void ss_ncache_free(struct ss_ncache *c);

/* Stack the cache cfg names (cfg->cache_dir; nothing when NULL) on store
 * backend *b: on success *b is the caching backend, which owns the old
 * one. A store whose objects are private to this process (mem://) is
 * left as it is. Returns 0 or -errno with err set (*b unchanged). */
int ss_ncache_wrap(const struct ss_cfg *cfg, struct ss_backend **b, struct ss_err *err);

/* When b is a caching backend: what it did for the operation whose
 * statistics st are, into st->cache_bytes (served from the cache) and
 * st->transferred_bytes (fetched from the store: every GET of a pack goes
 * through it). Any other backend leaves st alone. */
void ss_ncache_stats(const struct ss_backend *b, struct ss_stats *st);

/* When b is a caching backend: into *bytes, how many of the bytes
 * [off, off + len) of pack `pack` lie in blocks the cache does not hold.
 * -EOPNOTSUPP for any other backend. */
int ss_ncache_absent(const struct ss_backend *b, const uint8_t pack[16], uint64_t off,
		     uint64_t len, uint64_t *bytes);

/* Whether a read of [off, off + len) of pack `pack` through b costs no
 * fetch beyond what the caller asked for: b is no cache, or the cache
 * holds every block of it. Plans read through a gap between frames only
 * then: an uncached gap would be fetched from the store only to be
 * thrown away. */
bool ss_ncache_holds(const struct ss_backend *b, const uint8_t pack[16], uint64_t off,
		     uint64_t len);

/* The directory's figures into st; with prune, least recently used blocks
 * are evicted first until at most prune_to bytes remain. */
int ss_ncache_report(struct ss_ncache *c, bool prune, uint64_t prune_to,
		     struct ss_cache_stats *st, struct ss_err *err);

/* --- manifests (ncmanifest.c) --------------------------------------------
 *
 * A snapshot's manifest as last seen on this node, for pulls that start
 * from it while the store's copy is fetched to check it (pull.c). Kept in
 * blocks within the cache's bound, in the space of store backend b (the
 * one holding the snapshot's directory), under b's object key. */

/* Manifests larger than this are not kept. */
#define SS_NCACHE_MANIFEST_MAX (64u << 20)

/* The manifest last kept for key in the cache cfg names (malloc'd into
 * *out, with its XXH3-128 digest and, if etag is not NULL, the ETag the
 * store gave it, "" if none), checked against that digest. -ENOENT:
 * none, no cache, or a damaged copy (dropped). */
int ss_ncache_manifest_get(const struct ss_cfg *cfg, const struct ss_backend *b,
			   const char *key, uint8_t **out, size_t *len, uint8_t digest[16],
			   char etag[SS_ETAG_MAX]);
/* Keep p (n bytes: what key holds now, with ETag etag, or NULL or "" when
 * the store gave none), as far as the bound and the disk allow; failures
 * only leave it out. */
void ss_ncache_manifest_put(const struct ss_cfg *cfg, const struct ss_backend *b,
			    const char *key, const uint8_t *p, size_t n, const char *etag);
/* XXH3-128 of a manifest's bytes, as ss_ncache_manifest_get gives it. */
void ss_ncache_manifest_digest(const uint8_t *p, size_t n, uint8_t out[16]);
/* The hash that names store backend b in the cache: XXH3-128 of its
 * identity. -EOPNOTSUPP: a store private to this process (mem://). */
int ss_ncache_store_id(const struct ss_backend *b, uint8_t out[16]);

/* --- blocks (for ncstore.c) ----------------------------------------------- */

/* A block's name: XXH3-128 over the store's identity hash, the pack id
 * and the block's index. */
void ss_ncache_key(const uint8_t store[16], const uint8_t pack[16], uint64_t k,
		   uint8_t key[16]);

/* Read bytes [from, from + n) of block key into dst, as far as the block
 * reaches; *blen is the block's length. 0: a hit; -ENOENT: no such block
 * (a damaged one is removed and is a miss too). */
int ss_ncache_get(struct ss_ncache *c, const uint8_t key[16], uint64_t from, void *dst, size_t n,
		  uint32_t *blen);
/* Whether block key is there, as far as the directory's table of
 * fingerprints, else one stat, can tell: for plans, which a wrong answer
 * only makes slower (a block found missing or bad when read is fetched
 * again), never wrong. No hit is counted, and no recency noted. */
bool ss_ncache_has(struct ss_ncache *c, const uint8_t key[16]);
/* Publish block key (len bytes in iov) if the bound leaves room: temp
 * file, then rename, so no other process ever sees it half written.
 * Returns 0, -ENOSPC (no room: the bound, or the disk) or -errno. */
int ss_ncache_put(struct ss_ncache *c, const uint8_t key[16], const struct iovec *iov,
		  int iovcnt, uint32_t len);
/* Remove block key (its bytes were bad). */
void ss_ncache_drop(struct ss_ncache *c, const uint8_t key[16]);

/* The fetch lock of block key: held by one ss_ncache at a time on the
 * node, released when it unlocks or its process ends however it ends.
 * Returns 0 (ours) or -EAGAIN (another holds it). */
int ss_ncache_lock(struct ss_ncache *c, const uint8_t key[16]);
void ss_ncache_unlock(struct ss_ncache *c, const uint8_t key[16]);

/* The cache's bytes per block (B above). */
uint32_t ss_ncache_block(const struct ss_ncache *c);

/* Add to the shared counters. */
enum ss_ncache_counter {
	SS_NC_HITS,
	SS_NC_MISSES,
	SS_NC_HIT_BYTES,
	SS_NC_FETCHED_BYTES,
	SS_NC_WRITTEN_BYTES,
};
void ss_ncache_count(struct ss_ncache *c, enum ss_ncache_counter what, uint64_t n);

#endif
