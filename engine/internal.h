/* Engine internals shared by push.c, pull.c, store.c and snapshot.c. */
#ifndef SS_ENGINE_INTERNAL_H
#define SS_ENGINE_INTERNAL_H

#include "backend.h"
#include "chunker.h"
#include "chunkid.h"
#include "claims.h"
#include "dedup.h"
#include "frame.h"
#include "loop.h"
#include "manifest.h"
#include "pack.h"
#include "snapstream.h"
#include "util.h"

#define SS_DEFAULT_ZSTD_LEVEL 2
#define SS_DEFAULT_PACK_SIZE (32u << 20)
/* New chunks are compressed together in frames of up to this many raw
 * bytes: zstd on 1 MiB blocks stores ~7 % less than on 64 KiB chunks, and
 * runs faster (docs/DESIGN.md, "Compression frames"). */
#define SS_FRAME_TARGET (1024u << 10)
#define SS_DEFAULT_READ_DEPTH 8
#define SS_MAX_THREADS 256
#define SS_MANIFEST_KEY "manifest"

/* Effective configuration after defaults and validation. */
struct ss_cfg {
	unsigned threads;
	struct ss_chunk_params chunk;
	uint32_t frame_max;     /* largest frame; >= chunk.max_size */
	int zstd_level;
	uint32_t pack_size;
	unsigned read_depth;
	unsigned io_depth;
	struct ss_backend_opts bopts;
	ss_progress_fn progress;
	void *progress_arg;
	/* Chunk ids this caller computes (chunkid.h): plain, or keyed when
	 * ss_config.key was set. Operations check it against the store's
	 * config object or the manifest before trusting an id. */
	struct ss_idkey ids;
};

/* ss_cfg_resolve derives ids from the key; ss_cfg_wipe forgets it. */
int ss_cfg_resolve(const struct ss_config *in, struct ss_cfg *out, struct ss_err *err);
void ss_cfg_wipe(struct ss_cfg *cfg);

/* Run one backend request to completion (metadata steps). Counts it. */
int ss_call(struct ss_backend *b, struct ss_loop *l, struct ss_req *r, uint64_t *requests);

/* GET a whole small object (at most max bytes). *out malloc'd. */
int ss_get_object(struct ss_backend *b, struct ss_loop *l, const char *key, size_t max,
		  uint8_t **out, size_t *outlen, uint64_t *requests, struct ss_err *err);
int ss_put_object(struct ss_backend *b, struct ss_loop *l, const char *key, const void *p,
		  size_t n, uint32_t flags, uint64_t *requests, struct ss_err *err);

/* --- snapshots -------------------------------------------------------- */

struct ss_snaploc {
	char *backend_uri;    /* where the snapshot's directory lives */
	char *key;            /* "<name>/manifest" relative to backend_uri */
	char *default_store;  /* <parent>/.snapstream */
	char *canonical;      /* normalized snapshot URI, for labels and refs */
};

int ss_snaploc_parse(const char *uri, struct ss_snaploc *out, struct ss_err *err);
void ss_snaploc_free(struct ss_snaploc *s);

/* Fetch and decode a snapshot's manifest, never creating anything on the
 * way (a missing local snapshot leaves no directory behind). -ENOENT names
 * the URI. *mlen (may be NULL) receives the manifest's encoded size. */
int ss_manifest_load(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
		     struct ss_manifest **out, uint64_t *mlen, uint64_t *requests,
		     struct ss_err *err);

/* --- gc records (gcrecord.c; docs/DESIGN.md, "Garbage collection") ---- */

#define SS_GC_STATE_KEY "gc/state"
#define SS_GC_LOCK_KEY "gc/lock"
#define SS_GC_REMOVED_PREFIX "gc/removed/"

/* A pack gc has hidden from pushes, and since when (wall clock, ns). */
struct ss_gc_hidden {
	uint8_t id[16];
	int64_t since_ns;
};

struct ss_gcstate {
	struct ss_gc_hidden *packs;   /* sorted by id after decode/sort */
	size_t n, cap;
};

int ss_gcstate_add(struct ss_gcstate *s, const uint8_t id[16], int64_t since_ns);
void ss_gcstate_sort(struct ss_gcstate *s);
/* Binary search; s must be sorted. NULL when absent. */
const struct ss_gc_hidden *ss_gcstate_find(const struct ss_gcstate *s, const uint8_t id[16]);
void ss_gcstate_free(struct ss_gcstate *s);
int ss_gcstate_encode(const struct ss_gcstate *s, uint8_t **out, size_t *len);
/* Refuses damaged or unknown records with -EBADMSG. */
int ss_gcstate_decode(const uint8_t *buf, size_t len, struct ss_gcstate *out,
		      struct ss_err *err);
/* Read gc/state from a store; empty (not an error) when there is none. */
int ss_gcstate_load(struct ss_backend *b, struct ss_loop *l, const char *store,
		    struct ss_gcstate *out, uint64_t *requests, struct ss_err *err);

/* What ss_rm leaves for gc: the packs a removed snapshot used. */
struct ss_tombstone {
	char *snapshot;
	int64_t removed_ns;
	uint8_t (*packs)[16];
	size_t npacks;
};
int ss_tombstone_encode(const struct ss_tombstone *t, uint8_t **out, size_t *len);
int ss_tombstone_decode(const uint8_t *buf, size_t len, struct ss_tombstone *t,
			struct ss_err *err);
void ss_tombstone_free(struct ss_tombstone *t);

/* Wall-clock time in ns (records that other hosts compare against). */
int64_t ss_wall_ns(void);

/* --- stores ----------------------------------------------------------- */

struct ss_store {
	struct ss_backend *b;
	char *uri;                 /* normalized */
	uint8_t (*pack_ids)[16];   /* every pack known; dedup entries index it */
	uint64_t *pack_sizes;
	uint32_t npacks, packs_cap;
	uint32_t *pack_map;        /* open addressing over pack_ids, for lookup */
	uint32_t pack_map_cap;
	/* Packs not yet covered by an index object (written by this push or
	 * left by an interrupted one), with their entries. */
	struct ss_index_pack *unindexed;
	uint32_t nunindexed, unindexed_cap;
	uint32_t nindex_objects;
	uint64_t requests;
	/* Packs gc has hidden (gc/state): never offered for dedup, since gc
	 * deletes them once the grace period has passed. */
	struct ss_gcstate hidden;
	/* The chunk ids of the operation (its cfg's), checked against the
	 * store's config object before anything is loaded or written. */
	const struct ss_idkey *ids;
};

int ss_store_open(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
		  struct ss_store **out, struct ss_err *err);
void ss_store_free(struct ss_store *s);

/* Refuse a store whose chunk ids are not s->ids (store.c: the config
 * object; no object means plain ids). */
int ss_store_check_ids(struct ss_store *s, struct ss_loop *l, struct ss_err *err);

/* Load every index object and every unindexed pack's own index into d,
 * after ss_store_check_ids. */
int ss_store_load(struct ss_store *s, struct ss_loop *l, struct ss_dedup *d, struct ss_err *err);
/* The host's claims on the store (claims.h), joined now; call before
 * ss_store_load. NULL where the host has none (no /dev/shm, mem://): the
 * push then goes on alone. */
struct ss_claims *ss_store_join_claims(struct ss_store *s);

/* The index of pack id in s, adding it if new. -ENOMEM on failure. */
int ss_store_pack_index(struct ss_store *s, const uint8_t id[16], uint64_t size, uint32_t *idx);
/* Find a known pack; returns -ENOENT when unknown. */
int ss_store_pack_find(const struct ss_store *s, const uint8_t id[16], uint32_t *idx);

/* Record a pack written by this operation (takes ownership of entries). */
int ss_store_note_unindexed(struct ss_store *s, const uint8_t id[16], uint64_t size,
			    struct ss_pack_entry *entries, uint32_t count);

/* Write one index object covering every unindexed pack. */
int ss_store_write_index(struct ss_store *s, struct ss_loop *l, struct ss_err *err);
/* Write packs[0..n) as a new index object under a fresh random name
 * (create-only), as a push, gc's rewrite and check --repair do. Returns 0
 * or -errno with err set by the put (or not, for an encoding failure). */
int ss_index_put(struct ss_backend *b, struct ss_loop *l, const struct ss_index_pack *packs,
		 uint32_t n, uint64_t *requests, struct ss_err *err);

/* "packs/ab/ab…" for a pack id (out: at least 64 bytes). */
void ss_pack_key(const uint8_t id[16], char *out);

/* Random 16 bytes (pack ids, temp names). */
int ss_random_id(uint8_t id[16]);

/* "refs/<32 hex>": where a snapshot's reference record lives (out: at
 * least 64 bytes); the hex is XXH3-128 of its canonical URI. */
void ss_ref_key(const char *snapshot_uri, char *out);

/* Write the snapshot's reference record under refs/ (for gc). */
int ss_store_write_ref(struct ss_store *s, struct ss_loop *l, const char *snapshot_uri,
		       struct ss_err *err);

/* --- reading snapshots without side effects (admin.c) ----------------- */

/* Stored bytes of the distinct frames a manifest references. */
uint64_t ss_manifest_stored_bytes(const struct ss_manifest *m);

/* Open a store that must exist: -ENOENT ("no store at ...") for a local
 * directory that does not, instead of creating it. */
int ss_store_backend_open(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
			  struct ss_backend **out, struct ss_err *err);

/* The store a snapshot's packs live in: the explicit one, else the one
 * its manifest records, else the default beside it. */
const char *ss_store_for(const char *explicit_store, const struct ss_manifest *m,
			 const struct ss_snaploc *loc);

/* Run reqs[0..n) with as many in flight as the backend allows; each
 * result lands in reqs[i].op.res (op.done and user are taken). Returns 0,
 * or -errno when the loop itself failed. */
int ss_call_many(struct ss_backend *b, struct ss_loop *l, struct ss_req *reqs, size_t n,
		 uint64_t *requests);

/* Every ref in a store: uris[i] is the snapshot URI recorded under
 * keys[i]. Arrays and strings malloc'd (ss_refs_free). strict: an object
 * under refs/ that is not a URI is -EBADMSG (gc must know every
 * snapshot), else it is skipped (ls). */
int ss_read_refs(struct ss_backend *b, struct ss_loop *l, bool strict, char ***uris,
		 char ***keys, size_t *n, uint64_t *requests, struct ss_err *err);
void ss_refs_free(char **uris, char **keys, size_t n);

/* Local snapshots at or below dir (at most depth levels down;
 * dot-directories such as stores are skipped), as file:// URIs. *uris
 * malloc'd, each string too. */
int ss_scan_manifests(const char *dir, int depth, char ***uris, size_t *n);

/* --- progress --------------------------------------------------------- */

struct ss_ticker {
	uint64_t start_ns, last_ns;
};
/* Report p when 100 ms have passed since the last report (or force). */
void ss_tick(const struct ss_cfg *cfg, struct ss_ticker *t, struct ss_progress *p, bool force);

/* --- writing packs (packer.c) ------------------------------------------ */

/* Fills packs with stored frames and uploads them, for ss_push and
 * ss_push_fd. It owns SS_NPACKBUF pack buffers: one is filled while the
 * others upload, and when all are uploading the caller parks its work and
 * retries once told that a put finished. Loop thread only. */
struct ss_packer;

#define SS_NPACKBUF 2

/* Called on the loop thread when a pack put finishes: res 0 once the pack
 * is stored and recorded as unindexed in the store (time to retry parked
 * work), else -errno with msg saying what failed. */
typedef void (*ss_packer_done_fn)(void *arg, int res, const char *msg);

/* One chunk of a stored frame: its dedup slot (claimed by this push), and
 * where it starts, in the decompressed zstd frame or in a block of raw
 * chunks. */
struct ss_packer_chunk {
	uint32_t slot;
	uint32_t frame_off;
};

/* Packs go to store and its pack table; chunk locations go to dedup; the
 * pack statistics to st. All must outlive the packer. Returns 0 or
 * -ENOMEM; *out is freed with ss_packer_free. */
int ss_packer_new(struct ss_store *store, struct ss_dedup *dedup, const struct ss_cfg *cfg,
		  struct ss_stats *st, ss_packer_done_fn done, void *arg,
		  struct ss_packer **out);
/* Free the buffers; NULL is a no-op. No put may be in flight. */
void ss_packer_free(struct ss_packer *pk);

/* Add one stored frame of n chunks to the current pack (a frame never
 * spans packs: a full pack is uploaded first). SS_CODEC_ZSTD: stored is
 * one zstd frame; its chunks share its offset and stored_len and differ in
 * frame_off. SS_CODEC_RAW: stored is n raw chunks back to back, each
 * recorded as its own raw entry at its frame_off in the block. The bytes
 * are copied. Returns 0 when added, -EAGAIN when no pack buffer is free
 * yet (park and retry after the done callback), else -errno with err set. */
int ss_packer_add(struct ss_packer *pk, const uint8_t *stored, uint32_t stored_len,
		  uint8_t codec, const struct ss_packer_chunk *c, uint32_t n,
		  struct ss_err *err);

/* Upload the partial pack at the end of a push. Returns 1 when a put was
 * started (wait for it), 0 when there was nothing to store, else -errno
 * with err set. */
int ss_packer_flush(struct ss_packer *pk, struct ss_err *err);

/* Pack puts in flight. */
unsigned ss_packer_inflight(const struct ss_packer *pk);
/* Report each stored pack's chunks to the host's claims (claims.h). */
void ss_packer_set_claims(struct ss_packer *pk, struct ss_claims *claims);

/* --- building manifests (mbuild.c) ------------------------------------- */

/* Builds the manifest of a push from its files' extents, after every new
 * chunk is packed. Loop thread only. */
struct ss_mbuild;

/* Start a manifest: tool version, creation time, chunk parameters, labels,
 * parents (canonicalised; -EINVAL when one does not parse), the store's
 * URI, root_is_dir. store and dedup must outlive the builder. Returns 0 or
 * -errno; *out is freed with ss_mbuild_free. */
int ss_mbuild_new(const struct ss_cfg *cfg, const struct ss_push_opts *opts,
		  struct ss_store *store, struct ss_dedup *dedup, bool root_is_dir,
		  struct ss_mbuild **out);
/* Free the builder and the manifest if not taken; NULL is a no-op. */
void ss_mbuild_free(struct ss_mbuild *b);

/* When the manifest says it was created (wall clock, ns). */
int64_t ss_mbuild_created_ns(const struct ss_mbuild *b);

/* Start the next file (files come in manifest order); ext_hint: how many
 * extents to expect, 0 if unknown. Returns 0 or -ENOMEM. */
int ss_mbuild_file(struct ss_mbuild *b, const char *name, uint64_t size, uint32_t mode,
		   int64_t mtime_ns, const uint8_t digest[16], size_t ext_hint);

/* Append an extent to the current file: len bytes of the chunk in dedup
 * slot, or a zero run for SS_SLOT_NONE (merged with a zero run before
 * it). A chunk gets its index in the snapshot on first use (through
 * ss_dentry.snap_idx). Returns 0, -ENOMEM, or -EIO for a chunk that was
 * never packed (a bug). */
int ss_mbuild_extent(struct ss_mbuild *b, uint64_t len, uint32_t slot);

/* Finish: the pack table and the statistics (logical_bytes bytes in all;
 * zero, new and chunk counts from st, whose unique_chunks is set). On
 * success *out is the manifest (the caller's) and b keeps nothing. */
int ss_mbuild_finish(struct ss_mbuild *b, uint64_t logical_bytes, struct ss_stats *st,
		     struct ss_manifest **out);

/* Load each parent named in opts into dedup: the chunks whose packs live
 * in store (or that store is the parent's own, whose index may lag).
 * guide, if not NULL, receives the first parent chunked with cfg's
 * parameters (the caller's, may stay NULL), for predicting cut points.
 * Returns 0 or -errno with err set. */
int ss_load_parents(const struct ss_push_opts *opts, struct ss_loop *l, const struct ss_cfg *cfg,
		    struct ss_store *store, struct ss_dedup *dedup, struct ss_manifest **guide,
		    uint64_t *requests, struct ss_err *err);

/* What every push holds from its setup to its commit (ss_push,
 * ss_push_fd). */
struct ss_pushbase {
	struct ss_cfg cfg;
	struct ss_snaploc loc;      /* the snapshot */
	struct ss_loop *loop;
	struct ss_backend *snapb;   /* where the manifest goes */
	struct ss_store *store;
	struct ss_claims *claims;   /* NULL: no table, the push goes on alone */
	struct ss_dedup *dedup;     /* the store's chunks, then this push's too */
};

/* Resolve the configuration, parse the snapshot's location, set up the
 * loop and open the backend that will hold the manifest, refusing a
 * snapshot that exists unless opts->force (-EEXIST with a message). b is
 * zeroed first; ss_pushbase_close frees it, also after an error. */
int ss_pushbase_open(struct ss_pushbase *b, const struct ss_push_opts *opts,
		     const struct ss_config *config, uint64_t *requests, struct ss_err *err);

/* Open the store (opts->store, or the snapshot's default), join the
 * host's claims on it, then learn its chunks into a new dedup table: in
 * that order, so only chunks that land after joining are taken from
 * other pushes. */
int ss_pushbase_store(struct ss_pushbase *b, const struct ss_push_opts *opts,
		      struct ss_err *err);

/* Store a finished push in the crash-safe order, after its packs: encode
 * m, write the index object listing every unindexed pack, the ref, and the
 * manifest last (refused if it exists, unless opts->force). Sets
 * st->manifest_bytes, counts requests. Returns 0 or -errno with err set. */
int ss_pushbase_commit(struct ss_pushbase *b, const struct ss_push_opts *opts,
		       const struct ss_manifest *m, struct ss_stats *st, struct ss_err *err);

/* Free what ss_pushbase_open and _store set up, once nothing is in flight
 * on the loop. Leaving the claims table frees what this push claimed and
 * did not land, so call it after the packs. */
void ss_pushbase_close(struct ss_pushbase *b);

#endif
