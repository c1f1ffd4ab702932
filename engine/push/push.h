/* push — the write path's private header (docs/DESIGN.md, "Module map"):
 * what ss_push (push.c and the files beside it: walk.c, seg.c, foreign.c,
 * recheck.c; filepush.h) and ss_push_fd (stream.c) share: the store's
 * chunks learnt into the dedup table (storeload.c), the packer
 * (packer.c), the running pipeline's state (pipe.c), the manifest builder
 * and the setup, commit and teardown of a push (mbuild.c); dedup.h and
 * claims.h for the tables. Builds on core. */
#ifndef SS_ENGINE_PUSH_H
#define SS_ENGINE_PUSH_H

#include "claims.h"
#include "core.h"
#include "dedup.h"

/* --- learning a store's chunks (storeload.c) ---------------------------- */

/* Load every index object and every unindexed pack's own index into d,
 * after ss_store_check_ids. */
int ss_store_load(struct ss_store *s, struct ss_loop *l, struct ss_dedup *d, struct ss_err *err);
/* The host's claims on the store (claims.h), joined now; call before
 * ss_store_load. NULL where the host has none (no /dev/shm, mem://): the
 * push then goes on alone. */
struct ss_claims *ss_store_join_claims(struct ss_store *s);

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
 * chunks; a raw chunk's bytes when they are not in the block (NULL: they
 * are), gathered into it. */
struct ss_packer_chunk {
	uint32_t slot;
	uint32_t frame_off;
	const uint8_t *raw;
};

/* Packs go to store and its pack table; chunk locations go to dedup; the
 * pack statistics to st. All must outlive the packer. Returns 0 or
 * -ENOMEM; *out is freed with ss_packer_free. */
int ss_packer_new(struct ss_store *store, struct ss_dedup *dedup, const struct ss_cfg *cfg,
		  struct ss_stats *st, ss_packer_done_fn done, void *arg,
		  struct ss_packer **out);
/* Free the buffers; NULL is a no-op. No put may be in flight. */
void ss_packer_free(struct ss_packer *pk);
/* The pack size for a push of `data` bytes (0: unknown) into store, when
 * the caller set none: the store's default, smaller for a small push. */
uint32_t ss_pack_size_for(const struct ss_store *store, uint64_t data);

/* Add one stored frame of n chunks to the current pack (a frame never
 * spans packs: a full pack is uploaded first). SS_CODEC_ZSTD: stored is
 * one zstd frame; its chunks share its offset and stored_len and differ in
 * frame_off. SS_CODEC_RAW: stored is n raw chunks back to back (or
 * NULL, each chunk's raw set), each recorded as its own raw entry at its
 * frame_off in the block; in a sealed store the block is sealed as one
 * frame, which its entries share as a zstd frame's do. The bytes are
 * copied. Returns 0 when added, -EAGAIN when no pack buffer is free
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

/* --- the pipelines' shared state (pipe.c) ------------------------------- */

/* Work a worker finished, waiting for room in a pack buffer. */
struct ss_parked {
	struct ss_parked *next;
};

/* The state ss_push and ss_push_fd keep alike while their pipelines run
 * (loop thread only). */
struct ss_pipe {
	struct ss_err *err;         /* the operation's: the first failure */
	bool failed;
	struct ss_parked *head, *tail;   /* parked, in order */
	/* Copy one parked item into packs; false when no pack buffer is free
	 * yet (it stays parked and is offered again). */
	bool (*pack)(void *arg, struct ss_parked *it);
	/* An item that is packed whole. */
	void (*release)(void *arg, struct ss_parked *it);
	void *arg;
};

/* Fail the pipeline (the first failure wins): "what: strerror(-r)", or
 * msg as it is. */
void ss_pipe_fail(struct ss_pipe *p, int r, const char *what);
void ss_pipe_fail_msg(struct ss_pipe *p, int r, const char *msg);
/* Park an item behind the others, then pack what the pack buffers take. */
void ss_pipe_park(struct ss_pipe *p, struct ss_parked *it);
void ss_pipe_drain(struct ss_pipe *p);
/* The packer's done callback (arg: the pipe): a free buffer lets parked
 * work go on; a failed put fails the pipeline. */
void ss_pipe_pack_done(void *arg, int res, const char *msg);
/* The input is done and every frame packed: upload the last, partial
 * pack (ss_packer_flush), failing the pipeline if that fails. Returns 1
 * when a put started (turn the loop until it lands), 0 when there was
 * nothing to store, else -errno. */
int ss_pipe_flush(struct ss_pipe *p, struct ss_packer *pk);
/* One turn of the loop (waiting for completions); a failed loop fails the
 * pipeline. Returns ss_loop_turn's result. */
int ss_pipe_turn(struct ss_pipe *p, struct ss_loop *l);

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

/* Record that the current file is stored transformed (enum
 * ss_transform), from a pushed file of source_size bytes. Returns 0. */
int ss_mbuild_transform(struct ss_mbuild *b, uint32_t transform, uint64_t source_size);

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
		     const struct ss_config_in *config, uint64_t *requests, struct ss_err *err);

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

/* After a commit through the node cache: fetch into the cache the frames
 * of m the node does not hold, when they are few (chunks found in packs
 * other nodes wrote), so that a restore here reads only the manifest
 * (warm.c). Best effort: nothing it fails at fails the push. */
void ss_pushbase_warm(struct ss_pushbase *b, const struct ss_manifest *m, struct ss_stats *st);

/* The packer of a push whose pipeline state is pipe (ss_packer_new with
 * ss_pipe_pack_done): packs go to b's store, chunk locations to b's dedup
 * table, the chunks of each stored pack to b's claims, statistics to st.
 * Returns 0 or -ENOMEM. */
int ss_pushbase_packer(struct ss_pushbase *b, struct ss_stats *st, struct ss_pipe *pipe,
		       struct ss_packer **out);

/* Let everything in flight on the loop finish (after a failure, before
 * anything is freed): turn it while busy(arg) says so; once a turn fails,
 * reap what the kernel and the workers still complete without submitting
 * more (ss_loop_reap). Returns false when work stayed in flight (a failed
 * loop stuck for seconds): the caller must then not free what it may
 * still use, and leaks it instead. */
bool ss_pushbase_settle(struct ss_pushbase *b, bool (*busy)(const void *arg), const void *arg);

/* Free what ss_pushbase_open and _store set up, once nothing is in flight
 * on the loop, adding the store's requests to st (may be NULL). Leaving
 * the claims table frees what this push claimed and did not land, so call
 * it after the packs. */
void ss_pushbase_close(struct ss_pushbase *b, struct ss_stats *st);

#endif
