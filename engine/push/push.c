/* Push: files → segments read through io_uring → workers (zero pages,
 * FastCDC, XXH3-128, dedup, zstd) → packs → store → manifest, last.
 *
 * The loop thread reads fixed-size segments with many reads in flight
 * (only their data: holes of a sparse source are never read), hashes each
 * file's bytes in order for its whole-file digest, and hands each segment
 * to a worker. Segments are independent units of chunking
 * (extents never cross a segment boundary), so workers need no carry-over
 * between them. A worker returns the segment's extents and its new chunks,
 * already compressed; the loop copies those into the current pack and
 * uploads full packs. Memory is bounded by the segment pool and the pack
 * buffers: a slow store parks finished segments, which stops reads.
 */
#include "filepush.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "xxh.h"
#include <zstd.h>

/* Reads of a file on tmpfs up to this size are done on the loop thread
 * (read_submit); larger ones go through the ring, to io_uring's workers,
 * which copy them alongside the loop. */
#define SYNC_READ_MAX (1u << 20)

/* ---------------------------------------------------------------- packs */

/* Move a segment's new chunks into packs, a frame at a time (a raw
 * frame's chunks gathered from the segment). Returns false when it had to
 * stop for a free pack buffer (the segment stays parked and resumes at a
 * frame boundary). */
static bool seg_pack(struct push *P, struct seg *s)
{
	while (s->nc_done < s->nnc) {
		const struct newc *c = &s->nc[s->nc_done];
		uint32_t n = 1;
		while (s->nc_done + n < s->nnc && !c[n].first)
			n++;
		if (SS_GROW(P->fc, P->fc_cap, n, 64)) {
			ss_pipe_fail(&P->pipe, -ENOMEM, "cannot pack a frame");
			return true;
		}
		bool raw = c->codec == SS_CODEC_RAW;
		uint32_t len = raw ? 0 : c->stored_len;
		for (uint32_t i = 0; i < n; i++) {
			P->fc[i] = (struct ss_packer_chunk){.slot = c[i].slot,
							    .frame_off = c[i].frame_off,
							    .raw = raw ? c[i].raw : NULL};
			len += raw ? c[i].raw_len : 0;
		}
		struct ss_err e = {0};
		int r = ss_packer_add(P->packer, raw ? NULL : c->stored, len, c->codec, P->fc, n, &e);
		if (r == -EAGAIN)
			return false;   /* every pack buffer is uploading */
		if (r) {
			ss_pipe_fail_msg(&P->pipe, r, e.msg);
			return true;
		}
		s->nc_done += n;
	}
	return true;
}

static void seg_release(struct push *P, struct seg *s)
{
	/* The extents now belong to the snapshot being built. */
	P->seg_ext[s->seq] = (struct segext){.ext = s->ext, .n = s->next};
	s->ext = NULL;
	s->next = s->ext_cap = 0;
	s->next_free = P->free_segs;
	P->free_segs = s;
}

static bool seg_pack_parked(void *arg, struct ss_parked *it)
{
	return seg_pack(arg, (struct seg *)((char *)it - offsetof(struct seg, parked)));
}

static void seg_release_parked(void *arg, struct ss_parked *it)
{
	seg_release(arg, (struct seg *)((char *)it - offsetof(struct seg, parked)));
}

static void seg_done(struct ss_op *op, int res)
{
	(void)res;
	struct seg *s = (struct seg *)((char *)op - offsetof(struct ss_task, op));
	struct push *P = s->P;
	P->tasks_inflight--;
	if (s->err) {
		if (!P->pipe.failed) {
			P->pipe.failed = true;
			ss_err_set(P->pipe.err, s->err, "%s", s->werr.msg);
		}
		seg_release(P, s);
		return;
	}
	struct pfile *f = s->pf;
	ss_fdacc_add(&f->dacc, &s->dacc);
	f->summed += s->len;
	/* Outside follow mode a file's size is final (a change is caught by
	 * push_check_unchanged). */
	if (!P->follow && f->summed == f->size) {
		ss_fdacc_final(&f->dacc, f->size, f->digest);
		f->digested = true;
	}
	P->st->zero_bytes += s->zero_bytes;
	P->st->chunks += s->chunks;
	P->chunk_bytes += s->chunk_bytes;
	P->prog.zero_bytes += s->zero_bytes;
	ss_pipe_park(&P->pipe, &s->parked);
}

/* ---------------------------------------------------------------- reads */

/* Whole files of a memory file system up to this size are read, chunked
 * and compressed on the loop thread rather than handed to a worker: a
 * handoff wakes a worker and then the loop again, which for a file of a
 * few KiB costs more than the work. Measured (2 cores, tmpfs, cold push):
 * 2,000 CRIU-style files (median 1.3 KB) 0.090 -> 0.077 s; 15,000 files of
 * 3 KB 0.36 -> 0.24 s; 10,000 of 8 KB 0.29 -> 0.27 s. Larger files go to
 * the workers: with 16 KiB, 8,000 files of 12 KiB took 0.10 s against
 * 0.096, and with 64 KiB 3,000 of 60 KiB 0.38 s against 0.27, the loop
 * doing serially what two workers did side by side. */
#define INLINE_MAX (8u << 10)

static void dispatch_ready(struct push *P)
{
	for (;;) {
		struct seg **slot = &P->hold[P->next_hash_seq % P->nsegs];
		struct seg *s = *slot;
		if (!s || s->seq != P->next_hash_seq)
			return;
		*slot = NULL;
		P->prog.bytes_done += s->len;
		P->next_hash_seq++;
		P->tasks_inflight++;
		if (s->nwin && s->wread && s->len <= INLINE_MAX &&
		    (P->lwctx || (P->lwctx = push_wctx_ops.create(P)))) {
			/* A tiny file: chunked here (see INLINE_MAX). */
			s->task.run(&s->task, P->lwctx);
			s->task.op.done(&s->task.op, s->task.op.res);
		} else if (s->nwin) {
			ss_pool_submit(P->pool, &s->task);
		} else {
			/* All hole: one zero run, no worker needed. */
			push_seg_work(&s->task, NULL);
			seg_done(&s->task.op, 0);
		}
	}
}

static void read_done(struct ss_op *op, int res);

static void read_submit(struct push *P, struct seg *s)
{
	struct pfile *f = s->pf;
	const struct swin *w = &s->win[s->rwin];
	uint32_t at = w->off + s->got, len = w->len - s->got;
	if (push_gv_ring(f)) {
		/* A followed state file: a copy out of its decoder's ring. */
		P->reads_inflight++;
		read_done(&s->rop, push_gv_read(f, s->buf + at, len, s->off + at));
		return;
	}
	if (P->src_memfs && len <= SYNC_READ_MAX) {
		/* io_uring hands every read of tmpfs to one of its worker
		 * threads (tmpfs cannot read without blocking, RWF_NOWAIT),
		 * a wakeup and a context switch each: 2,000 small files
		 * were 2,000 of them. A copy of this size is cheaper here. */
		ssize_t n;
		do
			n = pread(f->fd, s->buf + at, len, (off_t)(s->off + at));
		while (n < 0 && errno == EINTR);
		P->reads_inflight++;
		read_done(&s->rop, n < 0 ? -errno : (int)n);
		return;
	}
	struct io_uring_sqe *sqe = ss_loop_sqe(P->b.loop, &s->rop);
	if (P->fixed_bufs)
		io_uring_prep_read_fixed(sqe, f->fd, s->buf + at, len, s->off + at, (int)s->idx);
	else
		io_uring_prep_read(sqe, f->fd, s->buf + at, len, s->off + at);
	P->reads_inflight++;
}

static void read_done(struct ss_op *op, int res)
{
	struct seg *s = (struct seg *)((char *)op - offsetof(struct seg, rop));
	struct push *P = s->P;
	P->reads_inflight--;
	struct pfile *f = s->pf;
	if (res < 0 || res == 0) {
		if (!P->pipe.failed) {
			P->pipe.failed = true;
			if (res < 0)
				ss_err_set(P->pipe.err, res, "cannot read %s: %s", f->path, strerror(-res));
			else
				ss_err_set(P->pipe.err, -EIO,
					   "%s shrank while it was being pushed (no snapshot written)",
					   f->path);
		}
		s->next_free = P->free_segs;
		P->free_segs = s;
		return;
	}
	s->got += (uint32_t)res;
	if (P->pipe.failed) {
		/* Draining after a failure: nothing more is read or chunked. */
		s->next_free = P->free_segs;
		P->free_segs = s;
		return;
	}
	if (s->got == s->win[s->rwin].len && s->rwin + 1 < s->nwin) {
		s->rwin++;
		s->got = 0;
	}
	if (s->got < s->win[s->rwin].len) {
		read_submit(P, s);
		return;
	}
	P->hold[s->seq % P->nsegs] = s;
	dispatch_ready(P);
}

static int note_seq(struct push *P, struct pfile *f, uint64_t seq)
{
	size_t had = P->seg_ext_cap;   /* what lies past it starts empty */
	if (SS_GROW(P->seg_ext, P->seg_ext_cap, seq + 1, 256))
		return -ENOMEM;
	memset(P->seg_ext + had, 0, sizeof(*P->seg_ext) * (P->seg_ext_cap - had));
	if (SS_GROW(f->seqs, f->seqs_cap, f->nseqs + 1, 16))
		return -ENOMEM;
	f->seqs[f->nseqs++] = seq;
	return 0;
}

/* A whole small file of a memory file system: its worker reads and
 * digests it (seg.c, seg_read), beside the loop opening the next ones. */
static bool worker_reads(const struct push *P, const struct pfile *f, const struct seg *s)
{
	return P->src_memfs && !P->follow && !f->gv && s->nwin && s->off == 0 &&
	       s->len == f->size && f->size <= SYNC_READ_MAX;
}

/* Start reads for free segments: files in order, each front to back. A
 * segment is a whole seg_size unit, or the end of a file whose size is
 * final, or a run of units that are all hole (push_plan_seg). */
static void issue_reads(struct push *P)
{
	uint64_t ss = P->b.cfg.chunk.seg_size;
	for (size_t i = P->rd_file; !P->pipe.failed && P->free_segs && i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		while (!P->pipe.failed && P->free_segs &&
		       (f->read_off + ss <= f->avail ||
			(P->writer_done && f->read_off < f->size))) {
			struct seg *s = P->free_segs;
			uint64_t seq = P->next_seq;
			if (note_seq(P, f, seq)) {
				ss_pipe_fail(&P->pipe, -ENOMEM, "cannot track segments");
				return;
			}
			P->next_seq++;
			P->free_segs = s->next_free;
			s->pf = f;
			push_plan_seg(P, f, s, P->writer_done ? f->size : f->avail, P->writer_done);
			s->rwin = s->got = 0;
			s->wread = worker_reads(P, f, s);
			s->seq = seq;
			s->err = 0;
			ss_err_clear(&s->werr);
			f->read_off += s->len;
			if (s->nwin && !s->wread) {
				read_submit(P, s);
			} else {
				P->hold[seq % P->nsegs] = s;
				dispatch_ready(P);
			}
		}
		/* Outside follow mode a file is done once all of it is issued. */
		if (P->writer_done && i == P->rd_file && f->read_off >= f->size)
			P->rd_file++;
	}
}

static bool all_issued(const struct push *P)
{
	if (!P->writer_done)
		return false;
	for (size_t i = P->rd_file; i < P->nfiles; i++)
		if (P->files[i]->read_off < P->files[i]->size)
			return false;
	return true;
}

static void tick_done(struct ss_op *op, int res)
{
	(void)res;
	struct push *P = (struct push *)((char *)op - offsetof(struct push, tick));
	P->tick_armed = false;
}

/* ---------------------------------------------------------------- setup */

static int pools_init(struct push *P)
{
	/* Enough segments for the reads in flight plus two per worker (one
	 * being chunked, one queued), so neither side starves the other. */
	P->nsegs = P->b.cfg.read_depth + 2 * P->b.cfg.threads;
	size_t ss = P->b.cfg.chunk.seg_size;
	bool sparse = false;
	/* Two segments per worker (one being chunked, one queued) and two
	 * being read keep both sides busy from tmpfs, the page cache or a
	 * fast disk: measured on 64 MiB-1 GiB images and on 2,000 small
	 * files, a deeper pool was no faster, while every segment is 4 MiB
	 * faulted in fresh on each run, which on a VM costs about as much as
	 * reading it. Following a writer the reads are of what it just wrote
	 * (the page cache, or the state file decoder's memfd): the same.
	 * From tmpfs or ramfs a read is a copy that finishes as soon as a
	 * worker frees a segment, and two per worker are enough: 64 MiB to
	 * 1 GiB images and 2,000 small files pushed as fast with 4 as with
	 * 6 segments, with 14-16 MiB less peak RSS; from a disk whose pages
	 * were dropped, a 1 GiB push took 1.9-2.3 s with 4 against 1.35 s
	 * with 6. */
	const uint64_t floor = 2 * (uint64_t)P->b.cfg.threads + (P->src_memfs && !P->follow ? 0 : 2);
	P->nsegs = (unsigned)SS_MIN((uint64_t)P->nsegs, floor);
	/* No more than the files have segments: a small image must not
	 * fault in (and pin, registered) a pool sized for a large one.
	 * Following a writer, the files' final sizes are unknown. */
	if (!P->follow) {
		/* Segments the files' data fills. A sparse file reads only
		 * its data (walk.c). */
		uint64_t segs = 0, data = 0;
		for (size_t i = 0; i < P->nfiles; i++) {
			uint64_t d = SS_MIN(P->files[i]->size, P->files[i]->alloc);
			segs += (d + ss - 1) / ss;
			data += d;
		}
		P->nsegs = (unsigned)SS_MAX(1, SS_MIN((uint64_t)P->nsegs, segs));
		/* Small files fill a sliver of their segments (2,000 files of
		 * ~21 KB: 0.5 %): back the pool with 4 KiB pages, touched only
		 * as far as reads reach, and leave it unregistered, since
		 * registering pins, and so faults in, every page. */
		sparse = segs && data / segs < ss / 4;
		if (!P->b.cfg.pack_size)
			P->b.cfg.pack_size = ss_pack_size_for(P->b.store, data);
		/* A small push leaves the claims table sparse (claims_populate). */
		P->claims_populate = P->b.claims && data >= (32u << 20);
	}
	/* Output holds at most the segment's bytes (a chunk is never stored
	 * larger than raw), plus zstd's worst-case slack for the last one;
	 * each starts on a huge page, so that a segment's output touches as
	 * few as its size needs. */
	size_t os = SS_ALIGN_UP(ss + ZSTD_compressBound(P->b.cfg.frame_max) - P->b.cfg.frame_max,
				sparse ? (size_t)4096 : SS_HUGE_PAGE);
	P->seg_mem_len = ss * P->nsegs;
	P->out_mem_len = os * P->nsegs;
	P->seg_mem = ss_bufpool_get(P->b.cfg.bufs, P->seg_mem_len, sparse);
	/* A segment's output is filled front to back to its compressed size
	 * (a third of it on a memory image): huge pages unless the segments
	 * themselves are sparse. Faulting it 4 KiB at a time cost ~3,000
	 * faults per 256 MiB push, each as dear as copying a page on a VM
	 * that backs guest memory lazily; huge pages cost at most ~2 MiB
	 * more per segment of RSS. */
	P->out_mem = ss_bufpool_get(P->b.cfg.bufs, P->out_mem_len, sparse);
	P->segs = calloc(P->nsegs, sizeof(*P->segs));
	P->hold = calloc(P->nsegs, sizeof(*P->hold));
	if (!P->seg_mem || !P->out_mem || !P->segs || !P->hold)
		return -ENOMEM;
	P->seg_sparse = sparse;
	for (unsigned i = 0; i < P->nsegs; i++) {
		struct seg *s = &P->segs[i];
		s->P = P;
		s->idx = i;
		s->buf = P->seg_mem + ss * i;
		s->out = P->out_mem + os * i;
		s->task.run = push_seg_work;
		s->task.op.done = seg_done;
		s->rop.done = read_done;
		s->next_free = P->free_segs;
		P->free_segs = s;
	}
	return ss_pushbase_packer(&P->b, P->st, &P->pipe, &P->packer);
}

/* Registered buffers spare the kernel a page walk per read. Registering
 * pins, and so faults in, every page of the segments: done after the
 * page count, whose threads have read into them (push_scan_pages), so
 * that the first touch of that memory, dear on a VM, is shared by the
 * scanning threads instead of taken by the loop thread alone. */
static void pools_register(struct push *P)
{
	if (P->seg_sparse || P->fixed_bufs)
		return;
	struct iovec *iov = calloc(P->nsegs, sizeof(*iov));
	if (!iov)
		return;
	for (unsigned i = 0; i < P->nsegs; i++)
		iov[i] = (struct iovec){.iov_base = P->segs[i].buf,
					.iov_len = P->b.cfg.chunk.seg_size};
	P->fixed_bufs = io_uring_register_buffers(ss_loop_ring(P->b.loop), iov, P->nsegs) == 0;
	free(iov);
}

/* 32 MiB of data, when new, is ~4,000 claims at 8 KiB chunks, which
 * touch 98 % of the claims table's pages: populated in one call, a
 * 64 MiB push spent 14-27 ms less CPU (a fault per page is dear on a
 * VM). Done on a thread of its own while the pages are counted, which
 * the table is not needed for. */
static void *claims_populate(void *arg)
{
	ss_claims_populate(arg);
	return NULL;
}

/* Stop the workers, and free the loop's own context for tiny files. */
static void workers_stop(struct push *P)
{
	ss_pool_free(P->pool);
	P->pool = NULL;
	if (P->lwctx)
		push_wctx_ops.destroy(P->lwctx);
	P->lwctx = NULL;
}

static void pools_free(struct push *P)
{
	if (P->fixed_bufs)
		io_uring_unregister_buffers(ss_loop_ring(P->b.loop));
	P->fixed_bufs = false;
	ss_bufpool_put(P->b.cfg.bufs, P->seg_mem, P->seg_mem_len);
	ss_bufpool_put(P->b.cfg.bufs, P->out_mem, P->out_mem_len);
	P->seg_mem = P->out_mem = NULL;
	if (P->segs)
		for (unsigned i = 0; i < P->nsegs; i++) {
			free(P->segs[i].ext);
			free(P->segs[i].nc);
			free(P->segs[i].pcls);
			free(P->segs[i].pid);
		}
	free(P->segs);
	P->segs = NULL;
	free(P->hold);
	P->hold = NULL;
	ss_packer_free(P->packer);
	P->packer = NULL;
}

static bool busy(const void *arg)
{
	const struct push *P = arg;
	return P->reads_inflight || P->tasks_inflight || ss_packer_inflight(P->packer);
}

void push_progress(struct push *P, bool force)
{
	P->prog.phase = "push";
	P->prog.bytes_total = P->total_bytes;
	P->prog.dedup_bytes = P->chunk_bytes - P->st->new_raw_bytes;
	P->prog.stored_bytes = P->st->new_stored_bytes;
	ss_tick(&P->b.cfg, &P->ticker, &P->prog, force);
}

/* Run the pipeline until every byte is chunked and every pack stored. */
static int run_pipeline(struct push *P)
{
	static const struct __kernel_timespec tick = {.tv_nsec = 5000000};
	for (;;) {
		if (P->follow && !P->pipe.failed) {
			int r = push_follow_poll(P);
			if (r) {
				P->pipe.failed = true;
				continue;
			}
		}
		issue_reads(P);
		if (!busy(P) && (P->pipe.failed || (all_issued(P) && !P->pipe.head))) {
			if (P->pipe.failed)
				break;
			/* Everything chunked: store the last, partial pack. */
			if (ss_pipe_flush(&P->pipe, P->packer))
				continue;
			break;
		}
		/* While following a writer, wake up regularly to look again. */
		if (P->follow && !P->writer_done && !P->tick_armed) {
			P->tick.done = tick_done;
			io_uring_prep_timeout(ss_loop_sqe(P->b.loop, &P->tick), (struct __kernel_timespec *)&tick,
					      0, 0);
			P->tick_armed = true;
		}
		if (ss_pipe_turn(&P->pipe, P->b.loop) < 0)
			/* Nothing more will complete; do not wait for it. */
			return P->pipe.err->code;
		push_progress(P, false);
	}
	return P->pipe.failed ? P->pipe.err->code : 0;
}

/* ---------------------------------------------------------------- manifest */

static int build_manifest(struct push *P, struct ss_manifest **out, struct ss_err *err)
{
	struct ss_mbuild *b = NULL;
	int r = ss_mbuild_new(&P->b.cfg, P->opts, P->b.store, P->b.dedup, P->root_is_dir, &b);
	for (size_t i = 0; !r && i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		size_t next = 0;
		for (size_t q = 0; q < f->nseqs; q++)
			next += P->seg_ext[f->seqs[q]].n;
		r = ss_mbuild_file(b, f->name, f->size, f->mode, f->mtime_ns, f->digest, next);
		if (!r && f->gv)
			r = ss_mbuild_transform(b, SS_TRANSFORM_GVISOR, push_gv_source_size(f));
		for (size_t q = 0; !r && q < f->nseqs; q++) {
			struct segext *se = &P->seg_ext[f->seqs[q]];
			for (uint32_t k = 0; !r && k < se->n; k++)
				r = ss_mbuild_extent(b, se->ext[k].len, se->ext[k].slot);
			/* Free as we go: this is the largest metadata of a push. */
			free(se->ext);
			se->ext = NULL;
		}
	}
	if (!r)
		r = ss_mbuild_finish(b, P->total_bytes, P->st, out);
	ss_mbuild_free(b);
	if (r)
		ss_err_set(err, r, "cannot build the manifest: %s", strerror(-r));
	return r;
}

/* Pair each file with the guide's file of the same name (or the only file
 * of two one-file snapshots) and index the guide's extent offsets. */
static int map_guide(struct push *P)
{
	struct ss_manifest *g = P->guide;
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		const struct ss_mfile *gf = NULL;
		if (!P->root_is_dir && !g->root_is_dir && g->nfiles == 1)
			gf = &g->files[0];
		for (size_t j = 0; !gf && P->root_is_dir && g->root_is_dir && j < g->nfiles; j++)
			if (strcmp(g->files[j].name, f->name) == 0)
				gf = &g->files[j];
		if (!gf || !gf->next)
			continue;
		f->gstart = malloc(sizeof(*f->gstart) * gf->next);
		if (!f->gstart)
			return ss_err_set(P->pipe.err, -ENOMEM, "out of memory");
		uint64_t at = 0;
		for (size_t e = 0; e < gf->next; e++) {
			f->gstart[e] = at;
			at += gf->ext[e].len;
		}
		f->gf = gf;
	}
	return 0;
}

static int load_parents(struct push *P)
{
	int r = ss_load_parents(P->opts, P->b.loop, &P->b.cfg, P->b.store, P->b.dedup, &P->guide,
				&P->st->requests, P->pipe.err);
	if (!r && P->guide)
		r = map_guide(P);
	return r;
}

static int push_run(const struct ss_push_opts *opts, const struct ss_config_in *config,
		    struct ss_stats *st, char *errbuf, size_t errlen, bool *gv_fallback)
{
	struct ss_err err = {0};
	struct push *P = calloc(1, sizeof(*P));
	struct ss_stats local_st;
	struct ss_manifest *m = NULL;
	uint64_t t0 = ss_now_ns();
	int r;
	st = ss_stats_init(st, &local_st, sizeof(*st));
	if (!P) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	P->pipe = (struct ss_pipe){.err = &err, .pack = seg_pack_parked,
				   .release = seg_release_parked, .arg = P};
	P->st = st;
	pthread_mutex_init(&P->foreign_mu, NULL);
	if (!opts || !opts->source || !opts->snapshot) {
		r = ss_err_set(&err, -EINVAL, "push needs a source and a snapshot location");
		goto out;
	}
	P->opts = opts;
	P->follow = opts->writer_status != NULL;
	P->writer_done = !P->follow;
	if ((r = ss_pushbase_open(&P->b, opts, config, &st->requests, &err)))
		goto out;
	ss_chunker_init(&P->chunker, &P->b.cfg.chunk);
	if ((r = push_collect_files(P)))
		goto out;
	/* The store is opened, and its chunks learnt, only for a source that
	 * can be read: a bad path leaves no store behind. */
	P->prog.phase = "index";
	ss_tick(&P->b.cfg, &P->ticker, &P->prog, true);
	if ((r = ss_pushbase_store(&P->b, opts, &err)))
		goto out;
	if ((r = load_parents(P)))
		goto out;
	struct ss_worker_ctx_ops wops = push_wctx_ops;
	wops.arg = P;
	if ((r = pools_init(P)) || (r = ss_pool_new(P->b.loop, P->b.cfg.threads, &wops, &P->pool))) {
		ss_err_set(&err, r, "cannot allocate the push pipeline: %s", strerror(-r));
		goto out;
	}
	/* A growing file cannot be counted ahead: it makes no page chunks
	 * (docs/DESIGN.md, "Repeated pages"). */
	pthread_t pop;
	bool populating = P->claims_populate &&
			  pthread_create(&pop, NULL, claims_populate, P->b.claims) == 0;
	if (P->claims_populate && !populating)
		ss_claims_populate(P->b.claims);
	r = P->follow ? 0 : push_scan_pages(P);
	if (populating)
		pthread_join(pop, NULL);
	if (r) {
		ss_err_set(&err, r, "cannot count the pages: %s", strerror(-r));
		goto out;
	}
	pools_register(P);
	if ((r = run_pipeline(P)) || (r = push_resolve_foreign(P)))
		goto out;
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		if (f->digested)
			continue;
		/* Empty files, and every file followed. */
		ss_fdacc_final(&f->dacc, f->size, f->digest);
		f->digested = true;
	}
	if ((r = P->follow ? push_check_followed(P) : push_check_unchanged(P)))
		goto out;
	/* Files found while following are in discovery order; a manifest
	 * lists them by name, as a push of the finished directory would. */
	if (P->follow && P->nfiles > 1)
		qsort(P->files, P->nfiles, sizeof(*P->files), push_cmp_pfile);
	/* The pipeline is done: give its buffers back before the manifest. */
	workers_stop(P);
	pools_free(P);

	P->prog.phase = "commit";
	push_progress(P, true);
	if (!(r = build_manifest(P, &m, &err)))
		r = ss_pushbase_commit(&P->b, opts, m, st, &err);
out:
	if (P) {
		if (!ss_pushbase_settle(&P->b, busy, P)) {
			/* Reads or puts stay in flight on a failed loop: leave
			 * the memory they use allocated rather than free it under
			 * them. */
			P->seg_mem = P->out_mem = NULL;
			P->segs = NULL;
			P->packer = NULL;
			P->fixed_bufs = false;   /* the ring's exit drops them */
			free(P->hold);
			P->hold = NULL;
		}
		workers_stop(P);
		if (P->segs || P->seg_mem)
			pools_free(P);
		st->files = P->nfiles;
		st->logical_bytes = P->total_bytes;
		st->dedup_bytes = P->total_bytes - st->zero_bytes - st->new_raw_bytes;
		if (P->seg_ext)
			for (uint64_t i = 0; i < P->next_seq; i++)
				free(P->seg_ext[i].ext);
		free(P->seg_ext);
		free(P->fc);
		free(P->foreign);
		pthread_mutex_destroy(&P->foreign_mu);
		for (size_t i = 0; i < P->nfiles; i++)
			push_pfile_free(P->files[i]);
		free(P->files);
		*gv_fallback = P->gv_fallback;
		ss_manifest_free(P->guide);
		free(P->pieces);
		free(P->prep);
		free(P->pzero);
		ss_pushbase_close(&P->b, st);
	}
	ss_manifest_free(m);
	free(P);
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}

/* The writer's status, asked no more once it said it finished: gvpush.c
 * asks again while it inflates the last bytes, and a second run after a
 * fallback starts over. */
struct writer_memo {
	int (*fn)(void *arg);
	void *arg;
	bool done;
};

static int memo_status(void *arg)
{
	struct writer_memo *w = arg;
	if (w->done)
		return 1;
	int st = w->fn(w->arg);
	w->done = st > 0;
	return st;
}

int ss_push_impl(const struct ss_push_opts *opts, const struct ss_config_in *config,
		 struct ss_stats *st, char *errbuf, size_t errlen)
{
	if (!opts || !opts->inflate_gvisor)
		return push_run(opts, config, st, errbuf, errlen, &(bool){false});
	struct ss_push_opts o = *opts;
	struct writer_memo memo = {opts->writer_status, opts->writer_arg, false};
	if (o.writer_status) {
		o.writer_status = memo_status;
		o.writer_arg = &memo;
	}
	bool fallback = false;
	int r = push_run(&o, config, st, errbuf, errlen, &fallback);
	if (!fallback)
		return r;
	/* A followed file looked like a gVisor state file and then stopped
	 * parsing (gvpush.c): push everything again as it is. Chunks the
	 * first run stored are in packs the second finds and reuses. */
	o.inflate_gvisor = false;
	return push_run(&o, config, st, errbuf, errlen, &fallback);
}
