/* Engine internals shared by push.c, pull.c, store.c and snapshot.c. */
#ifndef SS_ENGINE_INTERNAL_H
#define SS_ENGINE_INTERNAL_H

#include "backend.h"
#include "chunker.h"
#include "dedup.h"
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
};

int ss_cfg_resolve(const struct ss_config *in, struct ss_cfg *out, struct ss_err *err);

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

/* Fetch and decode a snapshot's manifest. -ENOENT when there is none. */
int ss_manifest_load(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
		     struct ss_manifest **out, uint64_t *requests, struct ss_err *err);

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
};

int ss_store_open(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
		  struct ss_store **out, struct ss_err *err);
void ss_store_free(struct ss_store *s);

/* Load every index object and every unindexed pack's own index into d. */
int ss_store_load(struct ss_store *s, struct ss_loop *l, struct ss_dedup *d, struct ss_err *err);

/* The index of pack id in s, adding it if new. -ENOMEM on failure. */
int ss_store_pack_index(struct ss_store *s, const uint8_t id[16], uint64_t size, uint32_t *idx);
/* Find a known pack; returns -ENOENT when unknown. */
int ss_store_pack_find(const struct ss_store *s, const uint8_t id[16], uint32_t *idx);

/* Record a pack written by this operation (takes ownership of entries). */
int ss_store_note_unindexed(struct ss_store *s, const uint8_t id[16], uint64_t size,
			    struct ss_pack_entry *entries, uint32_t count);

/* Write one index object covering every unindexed pack. */
int ss_store_write_index(struct ss_store *s, struct ss_loop *l, struct ss_err *err);

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

/* Like ss_manifest_load, but never creates a directory looking for a
 * local snapshot, and reports the manifest's encoded size (mlen may be
 * NULL). -ENOENT names the URI. */
int ss_manifest_fetch(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
		      struct ss_manifest **out, uint64_t *mlen, uint64_t *requests,
		      struct ss_err *err);

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

#endif
