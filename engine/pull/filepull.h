/* filepull — ss_pull's own structures, shared by the files that make it
 * up (docs/DESIGN.md, "Module map"):
 *
 *   pull.c   the plan (chunks by pack, merged into ranged GETs), the GETs,
 *            the workers' decoding through core's range reader, the writes
 *            and ss_pull itself
 *   files.c  the output files: created, hashed in order, verified, renamed
 *            into place, or removed after a failure
 */
#ifndef SS_ENGINE_FILEPULL_H
#define SS_ENGINE_FILEPULL_H

#include "pull.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>
#include "xxh.h"

struct target {
	uint32_t file;
	uint32_t ext;            /* extent index within the file */
	uint64_t off;
};

struct range {
	uint32_t pack;
	uint64_t off, len;
	uint32_t first, count;   /* into P->order */
	uint64_t raw;
	uint32_t cap;            /* its budget: stored bytes, and raw */
};

struct pull;

/* One chunk's bytes for one place in a file. */
struct wpiece {
	uint32_t file, ext;
	uint32_t len;
	const uint8_t *p;
	uint64_t off;
};

/* One write: consecutive extents of a file, from iov[iov0, iov0 + niov)
 * of its task. */
struct wop {
	uint32_t file, ext0, next;  /* the extents this write completes */
	uint32_t iov0, niov;
	uint64_t off;
};

struct rtask {
	struct ss_task task;
	struct ss_range g;         /* the GET */
	struct pull *P;
	struct range *rg;
	uint8_t *in;
	const uint8_t **cptr;      /* each chunk's bytes: in the worker's decode buffer, or raw in `in` */
	struct wpiece *pc;          /* the range's writes, one per target */
	size_t pccap;
	struct wop *w;              /* ... merged where a file's extents meet */
	uint32_t nw;
	size_t wcap;
	struct iovec *iov;
	size_t iovcap;
	uint64_t written;          /* bytes the writes cover */
	int err;
	struct ss_err werr;
	struct rtask *next_free;
};

/* Formats 1 to 3: each file's digest is computed while the pull runs: a
 * worker reads back the written prefix and hashes it in order as it
 * grows, so verification does not add a serial pass over the data at the
 * end. From format 5 the digest is a sum (ofile.sum), made from the
 * pieces as they are written, and nothing is read back. */
struct htask {
	struct ss_task task;
	struct pull *P;
	uint32_t file;
	size_t from, to;           /* extents to hash */
	uint64_t off;              /* file offset of `from` */
	int err;
};

struct ofile {
	int fd;
	uint8_t *done;             /* per extent: written */
	size_t frontier;           /* extents [0, frontier) are written */
	size_t hashed;             /* extents [0, hashed) are hashed */
	uint64_t hashed_off;
	struct ss_fdigest *hs;   /* as the manifest's format defines it */
	struct ss_fdsum *sum;    /* format 5 on, instead (range_write) */
	bool hashing, verified;
	struct htask ht;
};

/* The store's manifest, fetched on a thread of its own beside a pull
 * that started from the copy the node cache kept (pull.c, "guess"). */
struct mcheck {
	pthread_t th;
	bool pending;               /* guessed: to be started (check_start) */
	bool running;
	const char *snapshot;
	const struct ss_snaploc *loc;
	struct ss_cfg cfg;          /* a shallow copy: never wiped */
	uint8_t digest[16];         /* the kept copy's */
	char etag[SS_ETAG_MAX];     /* the kept copy's ETag, "" if none */
	uint64_t requests;
	struct ss_err err;
	int res;
	bool same;                  /* the store holds what the pull used */
	/* The store's bytes, when they equal the kept ones under an ETag the
	 * kept copy lacked: to keep again with it (the next check is then a
	 * 304). */
	uint8_t *retag;
	size_t retag_len;
	char fresh[SS_ETAG_MAX];
};

struct pull {
	struct ss_cfg cfg;
	struct mcheck check;
	struct ss_backend *snapb;   /* the snapshot's directory, for the cache */
	uint8_t *mraw;              /* the manifest's bytes, to keep in the cache */
	size_t mraw_len;
	char metag[SS_ETAG_MAX];    /* and the ETag the store gave them */
	const struct ss_pull_opts *opts;
	/* verify's pull (ss_pull_verify): every chunk fetched, checked and
	 * summed into its files' digests as a pull's, nothing written. */
	bool discard;
	_Atomic size_t keep_pool;   /* its files' split leaves (files.c) */
	struct ss_loop *loop;
	struct ss_pool *pool;
	struct ss_backend *store;
	struct ss_manifest *m;
	const struct ss_idkey *ids;   /* the manifest's chunk ids */
	struct ss_err *err;
	bool failed;
	struct ss_stats *st;

	uint32_t *tstart;          /* nchunks + 1 */
	struct target *targets;
	uint32_t *order;
	struct range *ranges;
	size_t nranges, next_range;
	uint32_t max_range_chunks;
	uint32_t range_max;     /* RANGE_MAX or RANGE_MAX_LOCAL (pull.c) */
	uint32_t slack;         /* around each task's buffer: ss_req.slack */
	uint32_t range_buf;     /* the largest range budget planned */
	uint8_t *lscratch;      /* the loop thread's hash buffer (files.c) */
	size_t in_cap, out_cap;    /* a task's GET buffer; a worker's decode buffer */

	struct rtask *tasks;
	unsigned ntasks;
	struct rtask *free_tasks;
	struct rtask *retry;       /* ranges to read again from the store */
	uint8_t *mem;
	size_t mem_len;
	unsigned gets_inflight, tasks_inflight, max_gets;
	/* Workers write what they decompressed. A file takes one write at a
	 * time anyway (its inode lock), and a worker waiting for it there
	 * spins; here it sleeps. Striped by file. */
	pthread_mutex_t wlock[8];

	char *tmp;                 /* temp file or directory beside dest */
	bool tmp_is_dir;
	char *final;
	struct ofile *files;

	struct ss_progress prog;
	struct ss_ticker ticker;
};

/* files.c: create every output file beside its destination, at full size
 * (zero runs stay holes). */
int pull_create_outputs(struct pull *P);
/* The same for a pull that writes nothing: each file's digest sum alone. */
int pull_create_sums(struct pull *P);
/* Extents up to where file has been written: hash what is now contiguous
 * (loop thread). */
void pull_advance(struct pull *P, uint32_t file);
/* Once every write is done: digests checked, fsync, metadata, rename into
 * place. */
int pull_finish_files(struct pull *P);
/* Format 5 on: every file's sum against its digest. -E2BIG when a pull
 * that wrote nothing let go of split leaves it cannot read back. */
int pull_verify_sums(struct pull *P);
/* Remove a temporary tree left by a failed pull. */
int pull_rm_tree(const char *path);

#endif
