/* filepush — ss_push's own structures, shared by the files that make it
 * up (docs/DESIGN.md, "Module map"):
 *
 *   push.c     the loop: segment reads, in-order hashing, packing, setup,
 *              the manifest and ss_push itself
 *   walk.c     the sources: the file table, and follow mode's rescans
 *   seg.c      the workers: one segment each, chunked, deduplicated and
 *              compressed
 *   pagescan.c the files' pages counted before chunking (pageset.h)
 *   foreign.c  chunks another push on the host claimed and did not land
 *   recheck.c  the files read again once done (follow mode, or a source
 *              that must not have changed)
 *   gvpush.c   gVisor state files read in their inflated form
 *
 * ss_push_fd (stream.c) shares only push.h with it. */
#ifndef SS_ENGINE_FILEPUSH_H
#define SS_ENGINE_FILEPUSH_H

#include "pageset.h"
#include "push.h"

#include <pthread.h>
#include "xxh.h"

struct sext {
	uint32_t len;
	uint32_t slot;          /* SS_SLOT_NONE: zero run */
};

/* A chunk this push stores. Chunks compressed together share their stored
 * bytes and stored_len (their frame) and differ in frame_off. */
struct newc {
	uint32_t slot;
	uint32_t stored_len;
	uint32_t frame_off;
	uint32_t raw_len;
	uint8_t codec;
	bool first;             /* first chunk of its frame */
	const uint8_t *raw;     /* the chunk's bytes in the segment */
	const uint8_t *stored;  /* what goes into the pack (in out, or raw) */
};

struct push;

/* The parts of a segment that are read: the rest of it lies in holes of
 * the source (SEEK_HOLE), zero without being read (docs/DESIGN.md,
 * "Sparse sources"). Windows are page-aligned, or end at the file's end,
 * in order and apart. A segment with more data extents than it has
 * windows reads from its last window to its end, holes and all. */
#define SEG_MAX_WIN 8

struct swin {
	uint32_t off, len;      /* within the segment */
};

struct seg {
	struct ss_task task;    /* worker: seg_work; loop: seg_done */
	struct ss_op rop;       /* read completions */
	struct push *P;
	unsigned idx;           /* index in the pool (registered buffer) */
	/* Its file. Workers read the record while the loop thread, following
	 * a writer, adds files to the table, so records never move: the table
	 * holds pointers, and a worker never indexes it. */
	struct pfile *pf;
	uint64_t off;
	uint32_t len;
	struct swin win[SEG_MAX_WIN];
	uint32_t nwin;          /* 0: all hole, nothing to read */
	uint32_t rwin, got;     /* the window being read, its bytes so far */
	uint64_t seq;
	uint8_t *buf;
	uint8_t *out;
	size_t out_len;
	struct sext *ext;
	uint32_t next;
	size_t ext_cap;
	struct newc *nc;
	uint32_t nnc, nc_done;
	size_t nc_cap;
	uint32_t frame_first;   /* first newc of the frame being built */
	uint32_t frame_raw;     /* its raw bytes so far */
	uint64_t zero_bytes, chunk_bytes, chunks;
	/* Its pages' classes (enum in seg.c), learnt as chunking reaches
	 * them, and the ids of those that are repeats. */
	uint8_t *pcls;
	uint8_t (*pid)[16];
	/* A whole small file of a memory file system, read by its worker
	 * rather than the loop (push.c, read_submit). */
	bool wread;
	/* Its leaves' part of the file digest (fdigest.h, format 5), made by
	 * its worker from the bytes it chunks; the loop adds the segments'
	 * sums in any order (seg_done). */
	struct ss_fdacc dacc;
	int err;
	struct ss_err werr;
	struct seg *next_free;
	struct ss_parked parked;   /* waiting for pack space */
};

struct pfile {
	char *path;
	char *name;
	uint64_t size;
	uint32_t mode;
	int64_t mtime_ns;
	int fd;
	struct ss_fdacc dacc;    /* its segments' sums so far */
	uint64_t summed;         /* the bytes of the segments in dacc */
	bool digested;           /* digest is final */
	uint8_t digest[16];
	/* Where the file has data (SEEK_DATA, SEEK_HOLE), learnt as reads are
	 * issued: [map_from, map_data) is a hole and [map_data, map_hole)
	 * data. dense: nothing to learn (fully allocated, or a file system
	 * that cannot tell): every byte is read. */
	uint64_t map_from, map_data, map_hole;
	bool dense;
	uint64_t alloc;          /* bytes allocated when it was opened (st_blocks) */
	uint64_t *seqs;          /* the file's segments, in file order */
	size_t nseqs, seqs_cap;
	uint64_t read_off;
	uint64_t avail;          /* bytes that may be read now (follow mode) */
	/* The same file in the guide (parent) snapshot, with each extent's
	 * start offset, for predicting cut points. */
	const struct ss_mfile *gf;
	uint64_t *gstart;
	/* A gVisor state file pushed inflated (gvpush.c): fd is then its
	 * inflated form, which gv makes from the file itself, or -1 while
	 * following a writer (push_gv_ring). NULL: plain. */
	struct gvfile *gv;
	/* Its pieces in push.pieces (pagescan.c). */
	uint32_t piece0, npieces;
};

/* pagescan.c: a piece of a file's data, counted page by page, with a bit
 * per whole page in push.prep from bit0 on: set where the page repeats. */
struct ppiece {
	uint64_t off;
	uint32_t len;
	uint32_t bit0;
};

struct segext {
	struct sext *ext;
	uint32_t n;
};

/* A chunk another push on this host claimed (claims.h): where one copy of
 * it is in our source, should we have to store it after all. */
struct foreign {
	uint32_t slot;           /* our dedup entry, pack SS_PACK_PENDING */
	uint32_t ref;            /* its claims entry */
	uint32_t len;
	bool mine;               /* claimed again by us: to store here */
	struct pfile *pf;
	uint64_t off;
};

struct push {
	struct ss_pushbase b;         /* config, loop, store, claims, dedup */
	const struct ss_push_opts *opts;
	struct ss_pool *pool;
	void *lwctx;                  /* the loop's own worker context (tiny files) */
	struct ss_chunker chunker;
	/* The files' pages, counted by pagescan.c before chunking: their
	 * pieces, in file order, and a bit per page, set where it repeats. */
	struct ppiece *pieces;
	size_t npieces;
	uint8_t *prep;
	uint8_t *pzero;              /* a bit per page, as prep: set where it is zero */
	bool pages_counted;
	struct ss_manifest *guide;   /* a parent chunked with our parameters */
	struct ss_pipe pipe;          /* the first failure; parked segments */

	struct pfile **files;         /* each record its own allocation (struct seg) */
	size_t nfiles, files_cap;
	bool root_is_dir;
	bool src_memfs;          /* the source is on tmpfs or ramfs: small reads inline */
	uint64_t total_bytes;
	/* Follow mode: the files are still being written. */
	bool follow, writer_done;
	uint64_t last_scan_ns;
	struct ss_op tick;       /* a timeout, so the loop wakes to poll */
	bool tick_armed;

	struct seg *segs;
	unsigned nsegs;
	uint8_t *seg_mem, *out_mem;
	size_t seg_mem_len, out_mem_len;
	struct seg *free_segs;
	bool fixed_bufs;
	bool seg_sparse;         /* segments of 4 KiB pages, not registered */
	bool claims_populate;    /* fault the claims table in beside the page count */

	/* Reading position */
	size_t rd_file;
	uint64_t next_seq;
	unsigned reads_inflight, tasks_inflight;

	/* In-order hashing: finished reads wait here by seq. */
	struct seg **hold;
	uint64_t next_hash_seq;

	struct segext *seg_ext;  /* by seq, grown as segments are issued */
	size_t seg_ext_cap;


	struct ss_packer *packer;
	struct ss_packer_chunk *fc;   /* the frame being packed */
	size_t fc_cap;

	/* Chunks other pushes on this host claimed (P->b.claims). */
	pthread_mutex_t foreign_mu;
	struct foreign *foreign;
	size_t nforeign, foreign_cap;

	/* gvpush.c: the writer reported done (later files are inflated at
	 * once); a file taken for a state file turned out not to be one. */
	bool gv_writer_done, gv_fallback;
	/* Inflated bytes the state files found complete may still keep in
	 * memory, all of them together (gvpush.c, gv_spill); set with the
	 * first. */
	uint64_t gv_mem_left;
	bool gv_mem_set;

	struct ss_stats *st;
	uint64_t chunk_bytes;
	struct ss_progress prog;
	struct ss_ticker ticker;
};

/* walk.c: fill P->files from opts->source (-errno with P->pipe.err set); in
 * follow mode, pick up what the writer added since the last call. */
int push_collect_files(struct push *P);
int push_follow_poll(struct push *P);
/* Files in manifest order (by name), for qsort on P->files. */
int push_cmp_pfile(const void *a, const void *b);
/* Free a file record (closing its descriptor); NULL is a no-op. */
void push_pfile_free(struct pfile *f);
/* A file's size, mode and mtime now: fstat, or a followed state file's
 * decoder (push_gv_stat: -EAGAIN, size only, until it is done). */
int push_pfile_stat(const struct pfile *f, uint64_t *size, uint32_t *mode, int64_t *mtime_ns);
/* Plan s, f's next segment from f->read_off, when bytes up to lim may be
 * read (final: lim is the file's size): its offset, length and data
 * windows. A unit with data is one segment (seg_size, or the tail); a run
 * of units with none is one segment of up to 2 GiB with no window. */
void push_plan_seg(struct push *P, struct pfile *f, struct seg *s, uint64_t lim, bool final);

/* seg.c: the workers' contexts (arg: the push) and their task; a frame
 * compressed with a worker's context (ss_frame_compress). */
extern const struct ss_worker_ctx_ops push_wctx_ops;
void push_seg_work(struct ss_task *t, void *wp);
size_t push_wctx_compress(void *wctx, uint8_t *dst, const uint8_t *src, uint32_t len);

/* pagescan.c: count the files' pages (-ENOMEM); then whether the whole
 * page of f at off (a page multiple) occurs twice or more in the files. */
int push_scan_pages(struct push *P);
bool push_page_repeated(const struct push *P, const struct pfile *f, uint64_t off);
/* pagescan.c: the first offset at or after off (a page multiple), below
 * end, whose page the scan did not find zero when zero is true (found
 * zero when false); end when there is none. Pages the scan did not read
 * (a short read, a file's last partial page) count as not zero. */
uint64_t push_zero_scan(const struct push *P, const struct pfile *f, uint64_t off, uint64_t end,
			bool zero);

/* foreign.c: after the pipeline, wait for or store every chunk another
 * push claimed, on the loop without blocking it (workers store them). */
int push_resolve_foreign(struct push *P);

/* recheck.c: prove the files held, when the push read them, what they
 * hold now. */
int push_check_followed(struct push *P);
int push_check_unchanged(struct push *P);

/* gvpush.c (docs/DESIGN.md, "gVisor state files"), with
 * opts->inflate_gvisor. push_gv_add: f was just opened; when it is a
 * state file, f->fd becomes its inflated form (at once, or in follow mode
 * as the writer writes). push_gv_status: the writer's status as the files
 * need it: done only when every state file is inflated; a file that
 * stopped parsing sets P->gv_fallback and fails (the push runs again
 * without the transform). push_gv_unchanged: the file itself (not its
 * inflated form) is as it was. push_gv_free: stop and free f->gv. */
int push_gv_add(struct push *P, struct pfile *f);
int push_gv_status(struct push *P);
int push_gv_unchanged(struct push *P, const struct pfile *f);
uint64_t push_gv_source_size(const struct pfile *f);
void push_gv_free(struct pfile *f);
/* A state file followed behind its writer has no descriptor: its
 * inflated form is a ring the decoder fills (push_gv_ring). push_gv_stat:
 * its size so far, and once the decoder is done (else -EAGAIN) its mode
 * and mtime. push_gv_read: copy len bytes at off, which must be below
 * that size; the pipeline reads each byte once, in order, and the ring
 * reuses what it read: a byte asked for again may be gone (-ESTALE).
 * Returns len or -errno. */
bool push_gv_ring(const struct pfile *f);
int push_gv_stat(const struct pfile *f, uint64_t *size, uint32_t *mode, int64_t *mtime_ns);
int push_gv_read(const struct pfile *f, uint8_t *buf, size_t len, uint64_t off);

/* push.c: report progress (every 100 ms, or now). */
void push_progress(struct push *P, bool force);

#endif
