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

/* Write the snapshot's reference record under refs/ (for gc). */
int ss_store_write_ref(struct ss_store *s, struct ss_loop *l, const char *snapshot_uri,
		       struct ss_err *err);

/* --- progress --------------------------------------------------------- */

struct ss_ticker {
	uint64_t start_ns, last_ns;
};
/* Report p when 100 ms have passed since the last report (or force). */
void ss_tick(const struct ss_cfg *cfg, struct ss_ticker *t, struct ss_progress *p, bool force);

#endif
