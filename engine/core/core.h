/* core — what every part of the engine shares (docs/DESIGN.md, "Module
 * map"): the effective configuration, snapshot locations, object calls,
 * the store (its packs, index objects, refs and config object), chunk ids
 * (chunkid.h), frames (frame.h), whole-file digests (fdigest.h), gc's records, and reading a range of a
 * pack (range.c). The write path (push/), the read path (pull/) and the
 * maintenance commands (admin/) build on it; it depends on none of them. */
#ifndef SS_ENGINE_CORE_H
#define SS_ENGINE_CORE_H

#include "backend.h"
#include "bufpool.h"
#include "chunker.h"
#include "chunkid.h"
#include "fdigest.h"
#include "frame.h"
#include "loop.h"
#include "manifest.h"
#include "ncache.h"
#include "pack.h"
#include "sealed.h"
#include "snapstream.h"
#include "util.h"

#define SS_DEFAULT_ZSTD_LEVEL 2
/* Packs of an object store amortize a request's round trip over 32 MiB.
 * A local store gains nothing from that, while every byte of a pack is
 * staged in one of the push's two pack buffers, faulted in fresh on each
 * run: its packs are 8 MiB (ss_config.pack_size overrides both). */
#define SS_DEFAULT_PACK_SIZE (32u << 20)
#define SS_LOCAL_PACK_SIZE (8u << 20)
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
	/* The node cache (ncache.h): its directory (NULL: none) and bound. */
	const char *cache_dir;
	uint64_t cache_size;
	struct ss_buffers *bufs; /* ss_config.buffers (bufpool.h), or NULL */
	bool v1_push;           /* ss_config_in.v1_push (tests) */
	bool verify_keep_none;  /* ss_config_in.verify_keep_none (tests) */
};

/* The caller's configuration as the entry points receive it from the ABI
 * boundary (engine/api.c): the public struct copied whole into one of this
 * build's size (zero where the caller's ended), and what only tests set,
 * which the public configuration does not carry. */
struct ss_config_in {
	struct ss_config pub;
	struct ss_memstore *mem;    /* the store behind mem:// URIs (tests) */
	/* Push into a version 1 keyed store as builds before sealing did, so
	 * that tests can make one to read. */
	bool v1_push;
	/* verify keeps no split leaf (files.c, pull_create_sums), so that it
	 * reads every snapshot in order after its pull: tests of that way. */
	bool verify_keep_none;
};

/* ss_cfg_resolve derives ids from the key; ss_cfg_wipe forgets it. in may
 * be NULL (every default). */
int ss_cfg_resolve(const struct ss_config_in *in, struct ss_cfg *out, struct ss_err *err);
void ss_cfg_wipe(struct ss_cfg *cfg);

/* --- entry points ------------------------------------------------------
 *
 * What the public functions of snapstream.h run once api.c has checked
 * and copied the caller's size-tagged structs: every struct here is full
 * size, so these read every field. Same contracts as the public ones;
 * tests call them directly to use a mem:// store. ss_ls_impl returns an
 * array of entries (ss_ls_free_impl), which api.c hands out as pointers. */
int ss_push_impl(const struct ss_push_opts *opts, const struct ss_config_in *cfg,
		 struct ss_stats *st, char *err, size_t errlen);
int ss_push_fd_impl(const struct ss_push_opts *opts, int fd, const char *name,
		    const struct ss_config_in *cfg, struct ss_stats *st, char *err,
		    size_t errlen);
int ss_pull_impl(const struct ss_pull_opts *opts, const struct ss_config_in *cfg,
		 struct ss_stats *st, char *err, size_t errlen);
int ss_cat_impl(const struct ss_cat_opts *opts, const struct ss_config_in *cfg,
		struct ss_stats *st, char *err, size_t errlen);
int ss_verify_impl(const struct ss_verify_opts *opts, const struct ss_config_in *cfg,
		   struct ss_stats *st, char *err, size_t errlen);
int ss_info_impl(const char *snapshot, const char *store, const struct ss_config_in *cfg,
		 struct ss_snapshot_info **out, char *err, size_t errlen);
int ss_ls_impl(const struct ss_ls_opts *opts, const struct ss_config_in *cfg,
	       struct ss_snapshot_info **out, size_t *n, char *err, size_t errlen);
void ss_ls_free_impl(struct ss_snapshot_info *v, size_t n);
int ss_rm_impl(const struct ss_rm_opts *opts, const struct ss_config_in *cfg, char *err,
	       size_t errlen);
int ss_gc_impl(const struct ss_gc_opts *opts, const struct ss_config_in *cfg,
	       struct ss_gc_stats *st, char *err, size_t errlen);
int ss_init_impl(const struct ss_init_opts *opts, const struct ss_config_in *cfg, char *err,
		 size_t errlen);
int ss_check_impl(const struct ss_check_opts *opts, const struct ss_config_in *cfg,
		  struct ss_check_stats *st, char *err, size_t errlen);
int ss_cache_impl(const struct ss_cache_opts *opts, struct ss_cache_stats *st, char *err,
		  size_t errlen);

/* Run one backend request to completion (metadata steps). Counts it. */
int ss_call(struct ss_backend *b, struct ss_loop *l, struct ss_req *r, uint64_t *requests);

/* GET a whole small object (at most max bytes). *out malloc'd. */
int ss_get_object(struct ss_backend *b, struct ss_loop *l, const char *key, size_t max,
		  uint8_t **out, size_t *outlen, uint64_t *requests, struct ss_err *err);
/* The same, sent only if the object's ETag is no longer if_none_match
 * (NULL: always); SS_NOT_MODIFIED, nothing read, when it still is. etag
 * (may be NULL) gets the ETag of what was read, "" when the store has
 * none. */
int ss_get_object_if(struct ss_backend *b, struct ss_loop *l, const char *key, size_t max,
		     const char *if_none_match, uint8_t **out, size_t *outlen,
		     char etag[SS_ETAG_MAX], uint64_t *requests, struct ss_err *err);
int ss_put_object(struct ss_backend *b, struct ss_loop *l, const char *key, const void *p,
		  size_t n, uint32_t flags, uint64_t *requests, struct ss_err *err);
/* The same, with the ETag the store gave the object ("" if none). */
int ss_put_object_tagged(struct ss_backend *b, struct ss_loop *l, const char *key,
			 const void *p, size_t n, uint32_t flags, char etag[SS_ETAG_MAX],
			 uint64_t *requests, struct ss_err *err);

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
 * the URI. *mlen (may be NULL) receives the manifest's encoded size.
 *
 * A sealed manifest (crypt.h) is opened with cfg's key and checked
 * against the snapshot's location and the store cfg's ids are bound to
 * (ss_idkey_seal; unbound: the store its header names): -ENOKEY (no key),
 * -EKEYREJECTED (another key), -EXDEV (sealed in another store, with this
 * key), -EBADMSG (anything that does not authenticate or agree, and a
 * manifest that is not sealed where the store is). With SS_MLOAD_HEADER
 * and no key, a sealed manifest is returned unopened: m->unopened, with
 * its packs (listed in the clear for gc) and nothing else. */
#define SS_MLOAD_HEADER 1u
int ss_manifest_load(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
		     struct ss_manifest **out, uint64_t *mlen, uint64_t *requests,
		     struct ss_err *err);
int ss_manifest_load_ex(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
			unsigned flags, struct ss_manifest **out, uint64_t *mlen,
			uint64_t *requests, struct ss_err *err);
/* The two halves of ss_manifest_load_ex: the manifest's bytes as the
 * store holds them (malloc'd into *buf; -ENOENT names uri), and their
 * decoding for the snapshot at uri (loc: its parsed location). */
int ss_manifest_fetch(const char *uri, const struct ss_snaploc *loc, struct ss_loop *l,
		      const struct ss_cfg *cfg, uint8_t **buf, size_t *len, uint64_t *requests,
		      struct ss_err *err);
/* ss_manifest_fetch under a condition, as ss_get_object_if. */
int ss_manifest_fetch_if(const char *uri, const struct ss_snaploc *loc, struct ss_loop *l,
			 const struct ss_cfg *cfg, const char *if_none_match, uint8_t **buf,
			 size_t *len, char etag[SS_ETAG_MAX], uint64_t *requests,
			 struct ss_err *err);
int ss_manifest_parse(const char *uri, const struct ss_snaploc *loc, const struct ss_cfg *cfg,
		      unsigned flags, const uint8_t *buf, size_t len, struct ss_manifest **out,
		      struct ss_err *err);
/* The location a snapshot's sealed manifest is bound to: its directory
 * normalized as store locations are (ss_location_canon), then its name.
 * malloc'd; NULL when out of memory. */
char *ss_snaploc_sealed(const struct ss_snaploc *loc);

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
	uint32_t npacks;
	size_t packs_cap;
	uint32_t *pack_map;        /* open addressing over pack_ids, for lookup */
	uint32_t pack_map_cap;
	/* Packs not yet covered by an index object (written by this push or
	 * left by an interrupted one), with their entries. */
	struct ss_index_pack *unindexed;
	uint32_t nunindexed;
	size_t unindexed_cap;
	uint32_t nindex_objects;
	uint64_t requests;
	/* Packs gc has hidden (gc/state): never offered for dedup, since gc
	 * deletes them once the grace period has passed. */
	struct ss_gcstate hidden;
	/* The chunk ids of the operation (its cfg's), checked against the
	 * store's config object before anything is loaded or written, which
	 * binds them to a sealed store's keys (ss_idkey_seal). */
	struct ss_idkey *ids;
	bool v1_push;              /* ss_cfg.v1_push (tests) */
};

int ss_store_open(const char *uri, struct ss_loop *l, struct ss_cfg *cfg,
		  struct ss_store **out, struct ss_err *err);
void ss_store_free(struct ss_store *s);

/* Refuse a store whose chunk ids are not s->ids (store.c: the config
 * object; no object means plain ids), and bind s->ids to a sealed
 * store's keys. A push's: refuses a version 1 keyed store (-EPERM). */
int ss_store_check_ids(struct ss_store *s, struct ss_loop *l, struct ss_err *err);


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
 * (create-only), as a push, gc's rewrite and check --repair do; sealed
 * when ids are a sealed store's (ids may be NULL: plain). Returns 0 or
 * -errno with err set by the put (or not, for an encoding failure). */
int ss_index_put(struct ss_backend *b, struct ss_loop *l, const struct ss_idkey *ids,
		 const struct ss_index_pack *packs, uint32_t n, uint64_t *requests,
		 struct ss_err *err);
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

/* Open a store that must exist: -ENOENT ("no store at ...") for a local
 * directory that does not, instead of creating it. */
int ss_store_backend_open(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
			  struct ss_backend **out, struct ss_err *err);

/* The store a snapshot's packs are read from: explicit_store when the
 * caller names one, else the default beside the snapshot (loc); never the
 * one its manifest records, which whoever wrote the manifest chose
 * (docs/SECURITY.md, "A manifest does not choose the store"). A manifest
 * m (may be NULL) recording any other store is refused: -EPERM with err
 * naming both. *out points into explicit_store or loc. */
int ss_store_for(const char *explicit_store, const struct ss_manifest *m,
		 const struct ss_snaploc *loc, const char *snapshot, const char **out,
		 struct ss_err *err);
/* Whether two store locations name the same store: file:// or a plain
 * path, relative or absolute, trailing slashes, "." and "..", symlinks. */
bool ss_same_store(const char *a, const char *b);
/* The one spelling of a location ss_same_store compares (malloc'd; NULL
 * when unparsable or out of memory). */
char *ss_location_canon(const char *uri);

/* For a reader: bind cfg's ids to the store at uri by its config, as
 * ss_store_check_ids does (a sealed store's keys; -ENOKEY, -EKEYREJECTED),
 * so that its snapshots are held to it. A store that does not exist, or
 * has no config, binds nothing. */
int ss_store_bind(const char *uri, struct ss_loop *l, struct ss_cfg *cfg, uint64_t *requests,
		  struct ss_err *err);

/* Every key under prefix with its size (one LIST, all pages). Free with
 * ss_keylist_free. Returns 0 or -errno with err set ("cannot list
 * store/prefix: ..."). */
struct ss_keylist {
	char **keys;
	uint64_t *sizes;
	size_t n, cap;
};
int ss_list_keys(struct ss_backend *b, struct ss_loop *l, const char *store, const char *prefix,
		 struct ss_keylist *kl, uint64_t *requests, struct ss_err *err);
void ss_keylist_free(struct ss_keylist *kl);

/* Stored bytes of the distinct frames a manifest references. */
uint64_t ss_manifest_stored_bytes(const struct ss_manifest *m);

/* Run reqs[0..n) with as many in flight as the backend allows; each
 * result lands in reqs[i].op.res (op.done and user are taken). Returns 0,
 * or -errno when the loop itself failed. */
int ss_call_many(struct ss_backend *b, struct ss_loop *l, struct ss_req *reqs, size_t n,
		 uint64_t *requests);

/* --- reading a range of a pack (range.c) --------------------------------
 *
 * "GET a range of a pack, decompress its frames, verify the chunk ids",
 * for pull, oread and check --deep alike. The GET runs on the loop thread;
 * decoding on a worker of a pool made with ss_rdec_ops. */

/* One ranged GET of a pack. */
struct ss_range {
	struct ss_req req;          /* req.user is the caller's */
	char key[64];               /* "packs/…" */
	struct ss_err err;          /* the store's message */
};

/* Prepare a GET of bytes [off, off + len) of pack id into buf; done runs
 * on the loop thread with the byte count or -errno. */
void ss_range_prep(struct ss_range *g, const uint8_t id[16], uint64_t off, uint64_t len,
		   uint8_t *buf, ss_op_fn done, void *user);
/* Start it: 0 (counted in *requests, which may be NULL), -EAGAIN (the
 * backend is full: submit again once something finished) or -errno. */
int ss_range_submit(struct ss_backend *b, struct ss_range *g, uint64_t *requests);

enum ss_range_res {
	SS_RANGE_OK = 0,            /* every byte asked for */
	SS_RANGE_MISSING,           /* no such pack */
	SS_RANGE_SHORT,             /* fewer bytes: truncated, replaced or torn */
	SS_RANGE_FAILED,            /* the store could not be read */
};
/* What a finished GET's result res means. */
enum ss_range_res ss_range_result(const struct ss_range *g, int res);
/* After the bytes a GET brought failed their chunk ids: when some came
 * from the node cache (ncache.h) and this GET was not retried yet, its
 * cached blocks are dropped and g is set to read the store; returns true
 * and the caller submits g again as it is (no ss_range_prep). Else false:
 * the store's own bytes are bad. */
bool ss_range_retry(struct ss_range *g);
/* Set err to why the GET failed, after where ("" or "snapshot S: file F
 * at offset N: "): a missing or shorter pack is -EBADMSG (integrity), any
 * other failure keeps res and the store's message. Returns the code, 0
 * when the GET brought every byte. */
int ss_range_explain(const struct ss_range *g, int res, const char *where, struct ss_err *err);

/* A decoding worker's context: a zstd decompression context, and with
 * ss_rdec_scratch_ops room for one frame of up to SS_FRAME_MAX_LIMIT
 * bytes. A worker that cannot make both fails ss_pool_new with -ENOMEM
 * (never a decode that reports corruption). */
struct ss_rdec {
	void *dc;                   /* ZSTD_DCtx */
	uint8_t *scratch;
	/* ss_rdec_out's buffer, kept for the worker's life. */
	uint8_t *out;
	size_t out_cap;
	struct ss_buffers *out_pool;   /* where out came from */
	/* A sealed store's (crypt.h): made on first use, keyed per pack. */
	struct ss_aead *aead;
	uint8_t aead_pack[16];
	bool aead_keyed;
};
extern const struct ss_worker_ctx_ops ss_rdec_ops, ss_rdec_scratch_ops;
struct ss_crypt;
/* The worker's AEAD context keyed with pack pack_id's key of c's store,
 * for ss_rrun.aead (*out NULL when c is: not sealed). 0 or -errno. On the
 * worker that owns w. */
int ss_rdec_aead(struct ss_rdec *w, const struct ss_crypt *c, const uint8_t pack_id[16],
		 struct ss_aead **out);
/* The worker's buffer of at least cap bytes (mapped on first use, kept
 * while it is large enough), or NULL when it cannot be mapped. For a
 * range decoded and consumed within one task: a buffer per worker rather
 * than per task in flight, since only the workers ever hold decoded
 * bytes. On the worker that owns w. */
uint8_t *ss_rdec_out(struct ss_rdec *w, size_t cap, struct ss_buffers *pool);

/* A chunk as the range reader sees it: from a manifest's chunk table or a
 * pack's own index. Chunks of one frame share offset and stored_len. */
struct ss_rchunk {
	const uint8_t *id;
	uint64_t offset;            /* its frame's, in the pack */
	uint32_t stored_len, raw_len, frame_off;
	uint8_t codec;
};

enum ss_range_bad {
	SS_RANGE_UNDECODABLE = 1,   /* its frame does not decompress that far */
	SS_RANGE_MISMATCH,          /* its bytes do not hash to its id */
	SS_RANGE_FORGED,            /* its sealed frame does not authenticate */
};
/* "cannot be decompressed to its recorded size", "does not match its
 * checksum": for messages that name the chunk. */
const char *ss_range_why(enum ss_range_bad why);

/* The two steps, for readers that go through frames in an order of their
 * own (oread): decompress the frame at src (stored_len bytes) into dst as
 * far as need bytes (dst has room for cap; returns the bytes of dst that
 * hold the frame's start, 0 when it cannot: see ss_frame_prefix); check a
 * chunk's bytes p against its id. */
size_t ss_range_frame(const struct ss_rdec *w, const uint8_t *src, uint32_t stored_len,
		      uint8_t *dst, size_t need, size_t cap);
bool ss_range_chunk_ok(const struct ss_idkey *ids, const uint8_t *p, const struct ss_rchunk *c);

/* A run of chunks in pack order inside one GET's bytes. */
struct ss_rrun {
	const struct ss_idkey *ids;
	const uint8_t *in;          /* the stored bytes, from pack offset base */
	/* A sealed store's: keyed with this pack's key (crypt.h). Frames are
	 * then opened in place in `in`, the caller's receive buffer, before
	 * anything else reads them; a frame's chunks share its offset. */
	struct ss_aead *aead;
	uint64_t base;
	uint32_t n;
	void (*at)(void *arg, uint32_t k, struct ss_rchunk *c);   /* chunk k */
	/* Where frames go: one after another in dec (dec_cap bytes), the
	 * bytes kept; or, dec NULL, each in the worker's scratch in turn. */
	uint8_t *dec;
	size_t dec_cap;
	const uint8_t **ptr;        /* NULL, or per chunk: its bytes */
	/* Each chunk that fails; return true to go on with the others. */
	bool (*bad)(void *arg, uint32_t k, enum ss_range_bad why);
	/* NULL, or each chunk whose id was checked (matching or not). */
	void (*checked)(void *arg, uint32_t k);
	void *arg;
};
/* Decode and verify a run (worker). Returns 0 when every chunk is intact,
 * else -EBADMSG after the bad callbacks. */
int ss_range_decode(const struct ss_rdec *w, const struct ss_rrun *run);

/* --- entry points ------------------------------------------------------ */

/* An entry point's loop of `entries` submission slots (ss_loop_new), a
 * failure said in err. Returns 0 or -errno. */
int ss_loop_open(unsigned entries, struct ss_loop **out, struct ss_err *err);

/* The statistics an operation fills: the caller's st, or local when it
 * passed none; zeroed either way. */
void *ss_stats_init(void *st, void *local, size_t size);

/* Hand an entry point's result to its caller: e's message (or
 * strerror(-r) when it has none) into buf when r failed. Returns r. */
int ss_err_out(const struct ss_err *e, int r, char *buf, size_t len);
/* The same, after setting *seconds to the time since t0 (ss_now_ns). */
int ss_op_end(const struct ss_err *e, int r, uint64_t t0, double *seconds, char *buf,
	      size_t len);

/* --- describing a snapshot (info.c) ------------------------------------ */

/* Fill in from manifest m of the snapshot at uri (mlen: the manifest's
 * encoded size), with the file list when with_files. Returns 0, or
 * -ENOMEM with in cleared. ss_info_clear frees what in holds, not in. */
int ss_info_fill(const struct ss_manifest *m, const char *uri, uint64_t mlen, bool with_files,
		 struct ss_snapshot_info *in);
void ss_info_clear(struct ss_snapshot_info *in);

/* --- progress --------------------------------------------------------- */

struct ss_ticker {
	uint64_t start_ns, last_ns;
};
/* Report p when 100 ms have passed since the last report (or force). */
void ss_tick(const struct ss_cfg *cfg, struct ss_ticker *t, struct ss_progress *p, bool force);

#endif
