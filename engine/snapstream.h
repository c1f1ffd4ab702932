/* snapstream.h — the public API of libsnapstream.
 *
 * snapstream moves sandbox checkpoint images (a file or a directory of
 * files) between local disk and a store, storing each unique chunk once:
 *
 *   ss_push  files → content-defined chunks → zstd → packs → store, then
 *            the snapshot's manifest, written last and atomically;
 *   ss_pull  manifest → parallel ranged reads of packs → verify → sparse
 *            files, renamed into place only when every byte verified.
 *
 * Locations are URIs: a local path or file:///abs/path (and mem:// for
 * tests). A snapshot lives at its URI as <uri>/manifest; packs live in a
 * store, by default <parent of the snapshot>/.snapstream.
 *
 * Every call is blocking and self-contained: it creates its own event
 * loop and worker threads and frees them before returning. Calls may run
 * concurrently from different threads. Errors are -errno with a message
 * in *err: -ENOENT (no such snapshot or object), -EEXIST (snapshot exists
 * and force is not set), -EBADMSG (integrity: corrupted or tampered
 * data), -EPROTONOSUPPORT (a newer format), -EINVAL (bad arguments).
 */
#ifndef SNAPSTREAM_H
#define SNAPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SNAPSTREAM_VERSION "0.1.0"

struct ss_memstore;

/* Progress, reported on the calling thread about ten times a second. */
struct ss_progress {
	const char *phase;          /* "index", "push", "commit", "pull", "verify" */
	uint64_t bytes_done;        /* logical bytes read (push) or written (pull) */
	uint64_t bytes_total;
	uint64_t zero_bytes;        /* so far: skipped as zero pages */
	uint64_t dedup_bytes;       /* so far: found already stored */
	uint64_t stored_bytes;      /* so far: uploaded (push) or fetched (pull) */
	double seconds;
};

typedef void (*ss_progress_fn)(void *arg, const struct ss_progress *p);

/* Tuning. Zero fields take the defaults, which were chosen by measurement
 * (docs/DESIGN.md). */
struct ss_config {
	unsigned threads;           /* worker threads; default: online CPUs */
	uint32_t chunk_min;         /* FastCDC sizes; default 16/64/256 KiB */
	uint32_t chunk_avg;
	uint32_t chunk_max;
	int zstd_level;             /* default 2; negative = faster levels */
	uint32_t pack_size;         /* target pack size; default 32 MiB */
	unsigned read_depth;        /* file reads (push) / pack reads (pull) in flight */
	unsigned io_depth;          /* store requests in flight */
	bool no_fsync;              /* skip fsync (tmpfs, tests) */
	ss_progress_fn progress;
	void *progress_arg;
	struct ss_memstore *mem;    /* the store behind mem:// URIs (tests) */
};

struct ss_label_kv {
	const char *key;
	const char *value;
};

struct ss_push_opts {
	const char *source;         /* a regular file or a directory */
	const char *snapshot;       /* snapshot URI; must not exist unless force */
	const char *store;          /* store URI, or NULL for the default */
	const char *const *parents; /* snapshot URIs to deduplicate against */
	size_t nparents;
	const struct ss_label_kv *labels;
	size_t nlabels;
	bool force;                 /* replace an existing snapshot */
	/* Follow mode, for pushing while a checkpointer still writes the
	 * source (a directory whose files may appear and grow). Called on the
	 * pushing thread every few milliseconds: return 0 while the writer is
	 * running, 1 once it finished successfully, or -errno if it failed
	 * (the push then fails and writes no snapshot). Files are read behind
	 * the writer, whole segments at a time, and must be written front to
	 * back: each is hashed again at the end, and one rewritten behind the
	 * reader fails the push. NULL: the source is complete. */
	int (*writer_status)(void *arg);
	void *writer_arg;
};

struct ss_pull_opts {
	const char *snapshot;
	const char *dest;           /* file (one-file snapshot) or directory */
	const char *store;          /* NULL: as recorded in the manifest, else default */
	bool force;                 /* replace an existing destination */
};

struct ss_stats {
	uint64_t files;
	uint64_t logical_bytes;     /* sum of file sizes */
	uint64_t zero_bytes;        /* in zero-page runs: never stored or moved */
	uint64_t dedup_bytes;       /* in chunks the store already had (or repeats) */
	uint64_t new_raw_bytes;     /* raw bytes of chunks this push stored */
	uint64_t new_stored_bytes;  /* bytes uploaded for them (compressed) */
	uint64_t transferred_bytes; /* pack bytes read (pull) or written (push) */
	uint64_t chunks;            /* chunk extents */
	uint64_t unique_chunks;     /* distinct chunks in the snapshot */
	uint64_t new_chunks;
	uint64_t packs;             /* packs written (push) or read from (pull) */
	uint64_t requests;          /* store requests issued */
	uint64_t manifest_bytes;
	double seconds;
};

/* Push opts->source to opts->snapshot. Returns 0 or -errno (err set). */
int ss_push(const struct ss_push_opts *opts, const struct ss_config *cfg, struct ss_stats *st,
	    char *err, size_t errlen);

/* Pull opts->snapshot to opts->dest. Returns 0 or -errno (err set). */
int ss_pull(const struct ss_pull_opts *opts, const struct ss_config *cfg, struct ss_stats *st,
	    char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
