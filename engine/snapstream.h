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
 * and around them: ss_push_fd and ss_cat for pipes, ss_verify, ss_info,
 * ss_ls, ss_rm and ss_gc for inspecting and cleaning up a store.
 *
 * Locations are URIs: a local path or file:///abs/path, s3://bucket/key,
 * gs://bucket/key. A snapshot lives at its URI as
 * <uri>/manifest; packs live in a store, by default <parent of the
 * snapshot>/.snapstream (for buckets: <bucket>/.snapstream).
 *
 * Every call is blocking and self-contained: it creates its own event
 * loop and worker threads and frees them before returning. Calls may run
 * concurrently from different threads. Errors are -errno with a message
 * in *err: -ENOENT (no such snapshot or object), -EEXIST (snapshot exists
 * and force is not set), -EBADMSG (integrity: corrupted or tampered
 * data), -EPROTONOSUPPORT (a newer format), -EINVAL (bad arguments),
 * -ENOKEY / -EKEYREJECTED (a keyed store or snapshot, and no key or
 * another key than its own: see ss_config.key), -EXDEV (a sealed
 * snapshot of another store, whose key was given: read it with that
 * store), -EPERM (the snapshot's
 * manifest names another store than the one given, or than the default
 * beside it: a manifest never chooses which store is read, see
 * docs/SECURITY.md).
 *
 * The library reads no environment variable: credentials, endpoints and
 * object-store tuning come from the environment block the caller passes in
 * ss_config.env (the CLI passes its environ).
 *
 * Growing without breaking programs (the ABI rule)
 * -------------------------------------------------
 * libsnapstream.so keeps its ABI within a SONAME (libsnapstream.so.1):
 * a program built against this header runs with any later library of the
 * same SONAME. To let structs gain fields:
 *
 *  - Every struct the caller allocates and passes in (ss_config, the
 *    ss_*_opts, ss_stats, ss_gc_stats, ss_check_stats) begins with
 *    `size_t size`, which the caller sets to sizeof the struct as its
 *    header declares it, with the matching initializer:
 *
 *        struct ss_config cfg = SS_CONFIG_INIT;
 *        struct ss_push_opts o = SS_PUSH_OPTS_INIT;
 *        o.source = "img";  ...
 *
 *    The library copies what `size` covers into a zeroed struct of its own
 *    size, so fields the caller's header did not have read as zero (their
 *    default). A size below the struct's first version is refused with
 *    -EINVAL; a larger size than the library knows is accepted when the
 *    bytes it does not know are zero, else refused with -E2BIG (the
 *    caller asks for something this library cannot do). Output structs
 *    (the stats) are written only up to `size`, and what lies between
 *    the library's size and the caller's is zeroed.
 *  - Structs the library allocates or fills (ss_progress,
 *    ss_check_finding, ss_snapshot_info, ss_file_info) also begin with
 *    `size_t size`, set by the library: a field is there when
 *    SS_HAS(tag, ptr, field), e.g. SS_HAS(ss_progress, p, items_total).
 *    They are handed out one at a time or as
 *    arrays of pointers, never as arrays of structs, so their size may
 *    grow. ss_label_kv (two strings) is fixed and never grows.
 *  - New fields are added only at the end; no field is removed, reordered
 *    or retyped; new behaviour is off when its field is zero. Anything
 *    else changes the SONAME.
 *
 * ss_version() says which library is loaded.
 */
#ifndef SNAPSTREAM_H
#define SNAPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* C++ has designated initializers only from C++20: a value-initialized
 * struct (all zero) with its size set. */
template <typename T> static inline T ss_sized_(void)
{
	T t = T();
	t.size = sizeof(T);
	return t;
}
extern "C" {
#endif

/* Initializers for the size-tagged structs (see the ABI rule above). */
#ifdef __cplusplus
#define SS_INIT(tag) ss_sized_<struct tag>()
#else
#define SS_INIT(tag) { .size = sizeof(struct tag) }
#endif
#define SS_CONFIG_INIT SS_INIT(ss_config)
#define SS_PUSH_OPTS_INIT SS_INIT(ss_push_opts)
#define SS_PULL_OPTS_INIT SS_INIT(ss_pull_opts)
#define SS_CAT_OPTS_INIT SS_INIT(ss_cat_opts)
#define SS_VERIFY_OPTS_INIT SS_INIT(ss_verify_opts)
#define SS_LS_OPTS_INIT SS_INIT(ss_ls_opts)
#define SS_RM_OPTS_INIT SS_INIT(ss_rm_opts)
#define SS_GC_OPTS_INIT SS_INIT(ss_gc_opts)
#define SS_INIT_OPTS_INIT SS_INIT(ss_init_opts)
#define SS_CHECK_OPTS_INIT SS_INIT(ss_check_opts)
#define SS_STATS_INIT SS_INIT(ss_stats)
#define SS_GC_STATS_INIT SS_INIT(ss_gc_stats)
#define SS_CHECK_STATS_INIT SS_INIT(ss_check_stats)
#define SS_CACHE_OPTS_INIT SS_INIT(ss_cache_opts)
#define SS_CACHE_STATS_INIT SS_INIT(ss_cache_stats)

/* True when the struct *ptr, which the library filled, has `field` (a
 * library older than the caller's header may not have it). */
#define SS_HAS(tag, ptr, field) \
	((ptr)->size >= offsetof(struct tag, field) + sizeof(((struct tag *)0)->field))

/* The library's version ("1.2.3"), as meson's project version. Static
 * string; any thread. */
const char *ss_version(void);

/* For a program's start, while it still has a single thread: raise the
 * soft limit on open files to the hard one (a pull keeps each file of a
 * snapshot open until it is verified; the library never changes process
 * limits itself) and size the descriptor table for `reserve` descriptors
 * now. The kernel grows the table by doubling, and once a process has
 * threads each doubling waits for an RCU grace period: a push opening
 * 2,000 files spent 50 ms in open() that way instead of 12. Best effort;
 * since ABI 1.2. */
void ss_prepare_fds(unsigned reserve);

/* A pool of `bytes` (rounded down to 2 MiB, at least 2 MiB) of memory
 * mapped and faulted in now, for ss_config.buffers: a long-running
 * program that pushes and pulls repeatedly keeps its buffers resident
 * instead of faulting ~100 MiB in on each call, which on hosts where
 * first touching memory is expensive costs as much as the work. The
 * memory stays resident until ss_buffers_free. 0 or -errno (-EINVAL for
 * a size out of range, -ENOMEM). Since ABI 1.3. */
struct ss_buffers;
int ss_buffers_new(size_t bytes, struct ss_buffers **out);
/* Only once no call uses it any more. NULL is a no-op. */
void ss_buffers_free(struct ss_buffers *b);

/* Progress, reported on the calling thread about ten times a second. */
struct ss_progress {
	size_t size;                /* set by the library */
	const char *phase;          /* "index", "push", "commit", "pull", "verify" */
	uint64_t bytes_done;        /* logical bytes read (push) or written (pull) */
	uint64_t bytes_total;
	uint64_t zero_bytes;        /* so far: skipped as zero pages */
	uint64_t dedup_bytes;       /* so far: found already stored */
	uint64_t stored_bytes;      /* so far: uploaded (push) or fetched (pull) */
	double seconds;
	/* Phases that count things rather than bytes (gc: snapshots read,
	 * packs deleted); 0 when the phase counts bytes only. */
	uint64_t items_done;
	uint64_t items_total;
};

typedef void (*ss_progress_fn)(void *arg, const struct ss_progress *p);

/* Tuning. Zero fields take the defaults, which were chosen by measurement
 * (docs/DESIGN.md). */
struct ss_config {
	size_t size;                /* SS_CONFIG_INIT */
	unsigned threads;           /* worker threads; default: online CPUs */
	uint32_t chunk_min;         /* FastCDC sizes; default 16/64/256 KiB */
	uint32_t chunk_avg;
	uint32_t chunk_max;
	int zstd_level;             /* default 2; negative = faster levels */
	uint32_t pack_size;         /* target pack size; default 32 MiB, 8 MiB
	                               in a local store, less for a push of
	                               less than 256 MiB of data */
	unsigned read_depth;        /* file reads (push) / pack reads (pull) in flight */
	unsigned io_depth;          /* store requests in flight */
	bool no_fsync;              /* skip fsync (tmpfs, tests) */
	ss_progress_fn progress;
	void *progress_arg;
	/* The secret key of a keyed store (ss_init), 16..4096 bytes, or NULL.
	 * In a keyed store chunk ids are XXH3-128 with a secret derived from
	 * the key, so nobody without it can craft data that collides with
	 * another tenant's chunks (docs/SECURITY.md, "Keyed chunk ids"), and
	 * in a sealed one (every keyed store made now) frames, pack indexes,
	 * index objects and manifests are encrypted and authenticated with
	 * keys derived from it ("Encryption at rest in keyed stores").
	 * Operations on keyed stores and snapshots need it and refuse another
	 * key; a key given for a plain store is refused too. Copied; the
	 * caller may wipe it once the call returns. */
	const uint8_t *key;
	size_t key_len;
	/* The environment the object stores are configured from, as
	 * "NAME=value" strings ending with NULL (the CLI passes environ). The
	 * library never reads the process environment: NULL means none of
	 * these variables is set. Consulted for s3:// and gs:// only:
	 *   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
	 *   AWS_PROFILE, AWS_DEFAULT_PROFILE, AWS_SHARED_CREDENTIALS_FILE,
	 *   AWS_CONFIG_FILE, HOME (for ~/.aws), AWS_REGION, AWS_DEFAULT_REGION,
	 *   AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_CA_BUNDLE;
	 *   GOOGLE_APPLICATION_CREDENTIALS, GCE_METADATA_HOST;
	 *   SNAPSTREAM_CA_BUNDLE, SNAPSTREAM_S3_ADDRESSING,
	 *   SNAPSTREAM_GCS_ENDPOINT, SNAPSTREAM_GCS_HMAC_ACCESS_ID,
	 *   SNAPSTREAM_GCS_HMAC_SECRET, SNAPSTREAM_RETRY_MAX,
	 *   SNAPSTREAM_RETRY_SECONDS, SNAPSTREAM_STALL_SECONDS,
	 *   SNAPSTREAM_PART_SIZE, SNAPSTREAM_MULTIPART_THRESHOLD,
	 *   SNAPSTREAM_LIST_PAGE (README.md, "Object stores", says what each
	 *   does). And by a push with inflate_gvisor, for a state file found
	 *   complete: SNAPSTREAM_GVISOR_MEMORY (bytes of their inflated forms
	 *   kept in memory, all together; default a quarter of the memory left to the process,
	 *   at most 1 GiB)
	 *   and TMPDIR (where the rest goes; default /var/tmp). Read during
	 *   the call only; not copied. */
	const char *const *env;
	/* The node cache (docs/DESIGN.md, "The node cache"): a directory
	 * where ss_pull, ss_cat and ss_verify keep the pack bytes they fetch
	 * and ss_push the packs it stores, shared by every process of this
	 * user on the node; created mode 0700 if missing. NULL: no cache.
	 * Other operations ignore it. */
	const char *cache_dir;
	/* Its bound in bytes, least recently used blocks evicted past it;
	 * 0: SS_CACHE_SIZE_DEFAULT. At least SS_CACHE_SIZE_MIN. */
	uint64_t cache_size;
	/* Resident buffers (ss_buffers_new) the call takes its large
	 * buffers from instead of mapping them fresh; NULL: none. For
	 * programs that push and pull again and again (ateom): the pool is
	 * faulted in once, not on every call. Calls may share one pool at
	 * once; what does not fit in it is mapped as without. */
	struct ss_buffers *buffers;
};

#define SS_CACHE_SIZE_DEFAULT (10ull << 30)
#define SS_CACHE_SIZE_MIN (16ull << 20)

struct ss_label_kv {
	const char *key;
	const char *value;
};

struct ss_push_opts {
	size_t size;                /* SS_PUSH_OPTS_INIT */
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
	/* Store gVisor state files (runsc's checkpoint.img) inflated, so
	 * that consecutive checkpoints deduplicate: a file is taken for one
	 * only when all of it parses (else it is stored as it is). Pull and
	 * cat then write a file runsc restores whose header is the pushed
	 * one byte for byte and whose body is framed anew: not the same
	 * bytes as the pushed file (docs/DESIGN.md, "gVisor state files").
	 * Works in follow mode; not for ss_push_fd. */
	bool inflate_gvisor;
	/* Follow mode: the writer only ever appends to each file and never
	 * rewrites a byte it wrote (runsc checkpoint, which writes its image
	 * sequentially), so what was read behind it is final and the files
	 * are not read a second time at the end; only their sizes are
	 * checked. A writer that does rewrite then yields a snapshot of
	 * bytes that never existed together: leave it false unless the
	 * writer is known. */
	bool writer_appends;
};

struct ss_snapshot_info;

struct ss_pull_opts {
	size_t size;                /* SS_PULL_OPTS_INIT */
	const char *snapshot;
	const char *dest;           /* file (one-file snapshot) or directory */
	const char *store;          /* NULL: the default beside the snapshot */
	bool force;                 /* replace an existing destination */
	/* NULL, or where a successful pull puts the snapshot's description
	 * (as ss_info gives it: labels, parents, sizes, without the file
	 * list), so that what a pusher recorded comes back with the files.
	 * Owned by the caller (ss_info_free); untouched on failure. */
	struct ss_snapshot_info **info;
};

struct ss_stats {
	size_t size;                /* SS_STATS_INIT */
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
	/* Pack bytes the node cache served (ss_config.cache_dir) instead of
	 * the store; transferred_bytes counts only what came from the store. */
	uint64_t cache_bytes;
};

/* Push opts->source to opts->snapshot. Returns 0 or -errno (err set);
 * -ENOTSUP when the source is or holds a symlink, FIFO or device. */
int ss_push(const struct ss_push_opts *opts, const struct ss_config *cfg, struct ss_stats *st,
	    char *err, size_t errlen);

/* Pull opts->snapshot to opts->dest. Returns 0 or -errno (err set). */
int ss_pull(const struct ss_pull_opts *opts, const struct ss_config *cfg, struct ss_stats *st,
	    char *err, size_t errlen);

/* --- streams ------------------------------------------------------------
 *
 * For piping: a snapshot's file to a descriptor in order, and a stream
 * (stdin) into a one-file snapshot, chunked as it arrives. */

/* Push everything read from fd until end of file as a one-file snapshot
 * whose file is called `name` (mode 0644, modified now). opts->source is
 * ignored; every other field of opts applies as for ss_push (parents are
 * used for dedup only). The input is never spooled to disk: memory is
 * bounded by configuration plus about 16 bytes per extent. Returns 0 or
 * -errno (err set). */
int ss_push_fd(const struct ss_push_opts *opts, int fd, const char *name,
	       const struct ss_config *cfg, struct ss_stats *st, char *err, size_t errlen);

struct ss_cat_opts {
	size_t size;                /* SS_CAT_OPTS_INIT */
	const char *snapshot;
	const char *store;          /* NULL: the default beside the snapshot */
	const char *file;           /* name in the snapshot; NULL: its only file */
	int fd;                     /* written in file order (a pipe, a file) */
	/* NULL, or called on the calling thread whenever more of the file is
	 * written: bytes [0, done) of it are in fd, every chunk under them
	 * verified (and, once done == total, the whole file's digest).
	 * total is the size the file will have: the snapshot's size of it,
	 * or for a gVisor state file stored inflated the rebuilt size,
	 * known once its header arrived (0 before). Return 0 to go on or
	 * -errno to stop the cat with that code. With it set, zero runs are
	 * written rather than left as holes, so that every byte reported
	 * can be read back at once (a reader serving the file as it
	 * arrives). */
	int (*on_written)(void *arg, uint64_t done, uint64_t total);
	void *on_written_arg;
};

/* Write one file of a snapshot to opts->fd, in order. Every chunk is
 * verified before any of its bytes are written, and the whole file's
 * digest at the end; after an error part of the file may have been
 * written already (the caller must report the failure). When fd is a
 * regular file positioned at its end, zero runs are left as holes.
 * Returns 0, -ENOENT (no snapshot, or no such file in it), -EISDIR (file
 * NULL but the snapshot holds several files), -EBADMSG (integrity), -EPIPE
 * (the reader went away) or another -errno. */
int ss_cat(const struct ss_cat_opts *opts, const struct ss_config *cfg, struct ss_stats *st,
	   char *err, size_t errlen);

/* --- inspection and maintenance ----------------------------------------- */

struct ss_verify_opts {
	size_t size;                /* SS_VERIFY_OPTS_INIT */
	const char *snapshot;
	const char *store;          /* NULL: the default beside the snapshot */
	bool quick;                 /* only check that every referenced pack exists */
};

/* Fetch every chunk of a snapshot, check its XXH3-128 and every file's
 * digest, writing nothing (quick: stat each referenced pack and check it is
 * long enough). Returns 0, -ENOENT (no snapshot), -EBADMSG with the file
 * and offset in err (integrity), or another -errno. st: files,
 * logical_bytes, zero_bytes, transferred_bytes, chunks (extents checked),
 * unique_chunks, packs, requests, seconds. */
int ss_verify(const struct ss_verify_opts *opts, const struct ss_config *cfg,
	      struct ss_stats *st, char *err, size_t errlen);

struct ss_file_info {
	size_t size;                /* set by the library */
	char *name;
	uint64_t bytes;             /* the file's size */
	uint32_t mode;
	int64_t mtime_ns;
	/* The file's digest, hex, as the manifest's format defines it
	 * (docs/DESIGN.md "File digests"): from format 5 a sum of leaves
	 * (tests/fdigest.py prints it), in formats 2 and 3 XXH3-128 with zero
	 * pages folded, in format 1 of every byte (what xxh128sum prints). */
	char digest[33];
	uint64_t zero_bytes;
	uint64_t extents;
	/* 1: a gVisor state file stored inflated (ss_push_opts.inflate_gvisor):
	 * bytes, digest and zero_bytes describe the inflated form (its header
	 * and inflated body), which verify checks; a pull restores the header
	 * byte for byte and the body framed anew, source_bytes long only by
	 * chance. 0: stored as pushed. */
	uint32_t transform;
	uint64_t source_bytes;      /* transform 1: the pushed file's size */
};

/* What a manifest says about a snapshot. Byte counts come from the push
 * that made it: dedup_bytes are chunk bytes it did not store anew (repeats
 * within the image, or chunks the store or a parent already had). */
struct ss_snapshot_info {
	size_t size;                /* set by the library */
	char *uri;                  /* canonical snapshot URI */
	char *store;                /* store recorded in the manifest ("" if none) */
	char *tool_version;
	uint32_t format_major, format_minor;
	int64_t created_unix_ns;
	bool root_is_dir;           /* pushed from a directory */
	uint32_t chunk_min, chunk_avg, chunk_max, chunk_seg, frame_max;
	bool keyed_ids;             /* chunk ids keyed by the store's key */
	char key_check[33];         /* then: which key (hex), never the key */
	uint64_t files;
	uint64_t logical_bytes;     /* sum of file sizes */
	uint64_t zero_bytes;        /* in zero-page runs: never stored */
	uint64_t chunk_bytes;       /* in chunk extents, repeats counted */
	uint64_t unique_bytes;      /* raw bytes of distinct chunks */
	uint64_t stored_bytes;      /* stored (compressed) bytes of those chunks */
	uint64_t new_raw_bytes;     /* raw bytes the push added to the store */
	uint64_t new_stored_bytes;  /* stored bytes the push added */
	uint64_t dedup_bytes;       /* chunk_bytes - new_raw_bytes */
	uint64_t extents;           /* chunk extents over all files */
	uint64_t chunks;            /* distinct chunks */
	uint64_t packs;             /* packs referenced */
	uint64_t manifest_bytes;
	struct ss_label_kv *labels; /* strings owned by the info */
	size_t nlabels;
	char **parents;
	size_t nparents;
	struct ss_file_info **files_v;  /* ss_info only; NULL from ss_ls */
	size_t nfiles_v;
	char *error;                /* ss_ls only: why this snapshot is unreadable */
	int error_code;             /* its -errno */
	/* Sealed: encrypted and authenticated in a sealed keyed store
	 * (docs/SECURITY.md). Read without the key (unopened), only uri,
	 * format, keyed_ids, key_check, packs and manifest_bytes are known. */
	bool sealed;
	bool unopened;
};

/* Describe a snapshot whose store is `store` (NULL: the default beside
 * it). *out is owned by the caller (ss_info_free). Returns 0, -ENOENT,
 * -EBADMSG (unreadable manifest), -EPERM (its manifest names another
 * store) or another -errno. Reads only the manifest. */
int ss_info(const char *snapshot, const char *store, const struct ss_config *cfg,
	    struct ss_snapshot_info **out, char *err, size_t errlen);
void ss_info_free(struct ss_snapshot_info *info);

struct ss_ls_opts {
	size_t size;                /* SS_LS_OPTS_INIT */
	const char *prefix;         /* a directory, bucket/dir, or a name prefix */
	const char *store;          /* whose refs/ to read; NULL: the default store
				     * of snapshots under prefix */
};

/* The snapshots under a prefix, sorted by URI: those the store's refs/
 * records name, plus (local prefixes) every <dir>/manifest below the prefix
 * directory. Entries whose manifest cannot be read carry `error`. *out is
 * an array of *n pointers to entries (ss_ls_free). Returns 0 or -errno. */
int ss_ls(const struct ss_ls_opts *opts, const struct ss_config *cfg,
	  struct ss_snapshot_info ***out, size_t *n, char *err, size_t errlen);
void ss_ls_free(struct ss_snapshot_info **v, size_t n);

struct ss_rm_opts {
	size_t size;                /* SS_RM_OPTS_INIT */
	const char *snapshot;
	const char *store;          /* NULL: the default beside the snapshot */
};

/* Delete a snapshot: its manifest and its ref in the store. Its packs
 * stay until gc finds nothing references them. Before deleting, a record
 * of the packs it used is left in the store for gc (a push that is still
 * using the snapshot as its --parent keeps them for the grace period).
 * Returns 0, -ENOENT when there is neither a manifest nor a ref, or
 * another -errno. */
int ss_rm(const struct ss_rm_opts *opts, const struct ss_config *cfg, char *err, size_t errlen);

/* Default time an unreferenced pack stays hidden before gc deletes it: it
 * must exceed the longest push, pull or verify (docs/DESIGN.md, "Garbage
 * collection"). */
#define SS_GC_GRACE_DEFAULT_SECONDS (24 * 3600)

struct ss_gc_opts {
	size_t size;                /* SS_GC_OPTS_INIT */
	const char *store;          /* the store's URI */
	/* 0: SS_GC_GRACE_DEFAULT_SECONDS; negative: no grace at all (only
	 * safe when nothing else uses the store). */
	int64_t grace_seconds;
	bool dry_run;               /* report, change nothing */
	bool break_lock;            /* remove a lock left by a gc that died */
};

struct ss_gc_stats {
	size_t size;                /* SS_GC_STATS_INIT */
	uint64_t snapshots;         /* live snapshots whose packs were kept */
	uint64_t refs_dangling;     /* refs whose manifest is gone (left alone) */
	uint64_t tombstones;        /* records of removed snapshots still in grace */
	uint64_t packs;             /* packs in the store */
	uint64_t pack_bytes;
	uint64_t packs_referenced;
	uint64_t packs_pending;     /* unreferenced, hidden, deleted by a later gc */
	uint64_t bytes_pending;
	uint64_t packs_rescued;     /* hidden earlier, referenced again */
	uint64_t packs_deleted;
	uint64_t bytes_deleted;
	uint64_t index_rewritten;   /* index objects rewritten without deleted packs */
	uint64_t index_deleted;
	int64_t next_unix_ns;       /* when the next pending pack may go; 0: none */
	uint64_t requests;
	double seconds;
};

/* Collect garbage in a store: delete packs no snapshot references, in two
 * phases separated by the grace period so that no concurrent push, pull or
 * verify loses a pack it is about to use (docs/DESIGN.md, "Garbage
 * collection"). One gc runs at a time per store (a lock object). Returns
 * 0, -ENOENT (no store there), -EBUSY (another gc holds the lock),
 * -EBADMSG (a snapshot or gc record cannot be read: nothing is deleted),
 * or another -errno. */
int ss_gc(const struct ss_gc_opts *opts, const struct ss_config *cfg, struct ss_gc_stats *st,
	  char *err, size_t errlen);

struct ss_init_opts {
	size_t size;                /* SS_INIT_OPTS_INIT */
	const char *store;          /* the store's URI */
	/* A keyed store's cipher, "aes-256-gcm" or "chacha20-poly1305";
	 * NULL: AES-256-GCM where the CPU has AES instructions, else
	 * ChaCha20-Poly1305. */
	const char *cipher;
};

/* Create a store's configuration object: with cfg->key set, a sealed
 * keyed store (keyed chunk ids; every frame, pack index, index object and
 * manifest encrypted and authenticated under keys derived from the key
 * and a random store id: docs/SECURITY.md), else plain chunk ids (what a
 * store without the object uses too). A key
 * can only be given to a store that holds no packs yet, since chunks
 * already stored keep their ids. Returns 0, -EEXIST (the store already
 * has a configuration, or holds packs and a key was given), or another
 * -errno. */
int ss_init(const struct ss_init_opts *opts, const struct ss_config *cfg, char *err,
	    size_t errlen);

/* Read a store key from a file: its bytes are the key (16..4096 of them,
 * into buf of cap >= 4096 bytes). A file that others may read, or not a
 * regular file, is refused (-EPERM): such a key protects nothing.
 * Returns 0 with *len set, or -errno with a message in err. */
int ss_key_read(const char *path, uint8_t *buf, size_t cap, size_t *len, char *err,
		size_t errlen);

/* --- checking and repairing a store (docs/DESIGN.md, "Checking and
 * repairing a store") --------------------------------------------------- */

/* What ss_check found. A problem is damage or an inconsistency that a
 * user would notice (a pull that fails, gc refusing to run, pushes
 * re-reading every pack); a note is a normal state worth knowing (packs
 * left by an interrupted push, a ref whose push may still be running). */
enum ss_check_kind {
	SS_CHECK_PACK_DAMAGED = 1,  /* trailer or index unreadable, or (deep) chunks
				     * that do not match their ids */
	SS_CHECK_PACK_MISSING,      /* a snapshot references it; not in the store */
	SS_CHECK_PACK_ORPHAN,       /* note: no snapshot references it */
	SS_CHECK_PACK_FOREIGN,      /* note: an object under packs/ that is no pack */
	SS_CHECK_SNAPSHOT_INCOMPLETE, /* chunks missing, damaged or misplaced */
	SS_CHECK_SNAPSHOT_UNREADABLE, /* its manifest cannot be read, or has
				     * another store's chunk ids */
	SS_CHECK_SNAPSHOT_ELSEWHERE, /* note: beside the store, uses another one */
	SS_CHECK_INDEX_DAMAGED,     /* an index object that does not decode */
	SS_CHECK_INDEX_STALE,       /* an index object listing a missing or damaged
				     * pack, or disagreeing with a pack's own index */
	SS_CHECK_PACKS_UNINDEXED,   /* referenced packs no index object lists */
	SS_CHECK_REF_MISSING,       /* a snapshot beside the store without a ref */
	SS_CHECK_REF_DANGLING,      /* note: a ref whose snapshot has no manifest */
	SS_CHECK_REF_BAD,           /* an object under refs/ that is no ref */
	SS_CHECK_RECORD_DAMAGED,    /* gc/state, a gc/removed/ record, config */
	SS_CHECK_GC_RUNNING,        /* note: gc/lock is held */
};

struct ss_check_finding {
	size_t size;                /* set by the library */
	enum ss_check_kind kind;
	bool problem;               /* false: a note */
	bool repairable;            /* --repair can fix it */
	bool repaired;              /* --repair fixed it (then it is no problem) */
	const char *object;         /* the store key concerned ("packs/ab/ab...",
				     * "index/...", "refs/...", "gc/state"), or NULL */
	const char *snapshot;       /* the snapshot concerned, or NULL */
	uint64_t chunks;            /* chunks concerned (missing, damaged), or 0 */
	uint64_t bytes;             /* the object's size where known, or 0 */
	const char *message;        /* one line: what, what it means, what to do */
};

/* Called once per finding on the calling thread, after the check (and the
 * repair) finished: problems first, then notes. Strings live until the
 * callback returns. */
typedef void (*ss_check_fn)(void *arg, const struct ss_check_finding *f);

struct ss_check_opts {
	size_t size;                /* SS_CHECK_OPTS_INIT */
	const char *store;          /* the store's URI */
	/* Rebuild what the packs themselves describe (index objects, refs of
	 * snapshots beside the store, damaged gc records), set damaged packs
	 * no snapshot references aside under damaged/ or hide them from
	 * pushes; never deletes or moves a pack a snapshot references. Takes
	 * gc/lock. */
	bool repair;
	/* Also fetch and decompress every chunk of every pack and check its id
	 * (a keyed store needs its key in ss_config.key). */
	bool deep;
	bool break_lock;            /* repair: remove a lock left by a run that died */
	ss_check_fn on_finding;     /* may be NULL */
	void *arg;
};

struct ss_check_stats {
	size_t size;                /* SS_CHECK_STATS_INIT */
	uint64_t packs;             /* packs in the store */
	uint64_t pack_bytes;
	uint64_t packs_ok;          /* own index readable (and, deep, every chunk) */
	uint64_t packs_damaged;
	uint64_t packs_missing;     /* referenced, not in the store */
	uint64_t packs_orphaned;    /* readable, referenced by no snapshot */
	uint64_t packs_hidden;      /* hidden by gc, waiting for deletion */
	uint64_t index_objects;
	uint64_t index_ok;
	uint64_t index_damaged;     /* damaged or stale */
	uint64_t snapshots;         /* snapshots whose chunks were checked */
	uint64_t snapshots_incomplete;
	uint64_t snapshots_unreadable;
	uint64_t refs_missing;
	uint64_t refs_dangling;
	uint64_t chunks;            /* chunk references checked, over all snapshots */
	uint64_t chunks_missing;    /* of those: missing, damaged or misplaced */
	uint64_t chunks_verified;   /* deep: chunks decompressed and hashed */
	uint64_t bytes_verified;    /* deep: raw bytes of those */
	uint64_t chunks_damaged;    /* deep: chunks failing their id */
	uint64_t problems;          /* found (repaired ones included) */
	uint64_t repaired;
	uint64_t index_written;     /* repair: index objects written */
	uint64_t index_deleted;     /* repair: damaged or stale ones removed */
	uint64_t refs_written;
	uint64_t packs_quarantined; /* moved to damaged/ */
	uint64_t packs_hidden_now;  /* damaged ones hidden from pushes for gc */
	uint64_t records_repaired;
	uint64_t requests;
	double seconds;
};

/* Check a store: every pack's own index, every index object against the
 * packs, every chunk of every snapshot the store knows against the pack it
 * names (deep: every chunk's bytes too), gc's records and refs. Each
 * finding goes to opts->on_finding. Returns 0 when no problem is left
 * (repair: after repairing), -EBADMSG when problems were found that are
 * not (or could not be) repaired (err summarises), or another -errno when
 * the store could not be checked: -ENOENT (no store), -EBUSY (repair: a
 * gc or repair holds gc/lock), -ENOKEY / -EKEYREJECTED (deep check of a
 * keyed store without its key, or a wrong key). Blocking; any thread. */
int ss_check(const struct ss_check_opts *opts, const struct ss_config *cfg,
	     struct ss_check_stats *st, char *err, size_t errlen);

/* --- the node cache (docs/DESIGN.md, "The node cache") ------------------ */

struct ss_cache_opts {
	size_t size;                /* SS_CACHE_OPTS_INIT */
	const char *dir;            /* the cache directory (ss_config.cache_dir) */
	bool prune;                 /* evict least recently used blocks ... */
	uint64_t prune_to;          /* ... until at most this many bytes remain */
};

struct ss_cache_stats {
	size_t size;                /* SS_CACHE_STATS_INIT */
	uint64_t bytes;             /* held now, blocks and their headers */
	uint64_t entries;           /* blocks held */
	uint64_t bound;             /* the bound of the last process that opened it */
	uint64_t hits;              /* blocks served from the cache */
	uint64_t misses;            /* blocks fetched from a store into it */
	uint64_t hit_bytes;         /* bytes served: what stores did not send again */
	uint64_t fetched_bytes;     /* bytes fetched from stores through it */
	uint64_t written_bytes;     /* bytes pushes wrote through into it */
	uint64_t evicted;           /* blocks evicted to stay within the bound */
	uint64_t evicted_bytes;
	uint64_t pruned;            /* this call: blocks removed by prune */
	uint64_t pruned_bytes;
	double seconds;
	uint64_t block_bytes;       /* bytes per block (its file has 32 more) */
};

/* Report a node cache's figures (counted since it was created), pruning
 * it first when asked. A directory that is no cache is -ENOENT. Any
 * thread; safe while other processes use the cache. */
int ss_cache(const struct ss_cache_opts *opts, struct ss_cache_stats *st, char *err,
	     size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
