/* Chunks another push on this host claimed (claims.h): waited for, or,
 * when their claimer died, gave up or takes too long, stored by this push
 * after all from its own source.
 *
 * All of it runs on the loop without blocking it: the loop polls the
 * claims on a timer (a timeout SQE), and a chunk stored here is read
 * again, checked and compressed by a worker; the loop only packs it. So
 * the loop keeps serving its other requests (pack puts, the store's own)
 * for as long as another push takes to land what it claimed. */
#include "filepush.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

/* How long a push waits for another push on the host to land a chunk it
 * claimed before storing the chunk itself. */
#define FOREIGN_WAIT_NS (30ull * 1000000000ull)

/* How often the claims are polled while chunks are waited for. */
#define FOREIGN_POLL_NS 1000000

struct fres;

/* A chunk stored by this push after all: read again and compressed on a
 * worker, then packed on the loop. */
struct fjob {
	struct ss_task task;        /* worker: fjob_work; loop: fjob_done */
	struct fres *R;
	struct foreign f;
	uint8_t *buf, *zbuf;        /* max_size, ZSTD_compressBound(max_size) */
	uint32_t stored_len;
	uint8_t codec;
	int err;
	struct ss_err werr;
	struct fjob *next;          /* free list, or the queue to pack */
};

struct fres {
	struct push *P;
	struct fjob *jobs;
	unsigned njobs, busy;       /* busy: tasks in flight */
	struct fjob *free_jobs;
	struct fjob *pack_head, *pack_tail;   /* done, in order, to pack */
	bool stored;                /* a chunk went into a pack */
	struct ss_op tick;
	bool tick_armed;
};

/* pread of the source again, errno set. A followed state file's inflated
 * form is a ring the pipeline already read this from: usually gone
 * (ESTALE), and the push fails rather than store what it cannot check. */
static ssize_t reread(const struct pfile *pf, uint8_t *buf, size_t len, uint64_t off)
{
	if (!push_gv_ring(pf))
		return pread(pf->fd, buf, len, (off_t)off);
	int r = push_gv_read(pf, buf, len, off);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return r;
}

static void fjob_work(struct ss_task *t, void *wctx)
{
	struct fjob *j = (struct fjob *)t;
	struct push *P = j->R->P;
	const struct foreign *f = &j->f;
	const struct pfile *pf = f->pf;
	j->err = 0;
	for (uint32_t got = 0; got < f->len;) {
		ssize_t n = reread(pf, j->buf + got, f->len - got, f->off + got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			j->err = n < 0 ? -errno : -EAGAIN;
			ss_err_set(&j->werr, j->err, "cannot read %s again: %s (no snapshot written)",
				   pf->path, n < 0 ? strerror(errno) : "it shrank");
			return;
		}
		got += (uint32_t)n;
	}
	uint8_t id[16];
	ss_chunk_id(&P->b.cfg.ids, j->buf, f->len, id);
	if (memcmp(id, ss_dedup_entry(P->b.dedup, f->slot)->id, 16) != 0) {
		j->err = ss_err_set(&j->werr, -EAGAIN,
				    "%s changed while it was being pushed (no snapshot written)",
				    pf->path);
		return;
	}
	size_t z = push_wctx_compress(wctx, j->zbuf, j->buf, f->len);
	j->codec = z ? SS_CODEC_ZSTD : SS_CODEC_RAW;
	j->stored_len = z ? (uint32_t)z : f->len;
}

/* Pack finished jobs in order, while a pack buffer takes them. */
static void pack_jobs(struct fres *R)
{
	struct push *P = R->P;
	while (R->pack_head && !P->pipe.failed) {
		struct fjob *j = R->pack_head;
		struct ss_packer_chunk pc = {.slot = j->f.slot, .frame_off = 0};
		struct ss_err e = {0};
		int r = ss_packer_add(P->packer, j->codec == SS_CODEC_ZSTD ? j->zbuf : j->buf,
				      j->stored_len, j->codec, &pc, 1, &e);
		if (r == -EAGAIN)
			return;   /* every pack buffer is uploading */
		if (r) {
			ss_pipe_fail_msg(&P->pipe, r, e.msg);
			return;
		}
		R->stored = true;
		R->pack_head = j->next;
		if (!R->pack_head)
			R->pack_tail = NULL;
		j->next = R->free_jobs;
		R->free_jobs = j;
	}
}

static void fjob_done(struct ss_op *op, int res)
{
	(void)res;
	struct fjob *j = (struct fjob *)((char *)op - offsetof(struct ss_task, op));
	struct fres *R = j->R;
	struct push *P = R->P;
	R->busy--;
	if (j->err) {
		ss_pipe_fail_msg(&P->pipe, j->err, j->werr.msg);
		j->next = R->free_jobs;
		R->free_jobs = j;
		return;
	}
	j->next = NULL;
	if (R->pack_tail)
		R->pack_tail->next = j;
	else
		R->pack_head = j;
	R->pack_tail = j;
	pack_jobs(R);
}

static void tick_done(struct ss_op *op, int res)
{
	(void)res;
	struct fres *R = (struct fres *)((char *)op - offsetof(struct fres, tick));
	R->tick_armed = false;
}

static int jobs_init(struct fres *R)
{
	struct push *P = R->P;
	uint32_t max = P->b.cfg.chunk.max_size;
	/* One per worker, and one being packed. */
	R->njobs = P->b.cfg.threads + 1;
	R->jobs = calloc(R->njobs, sizeof(*R->jobs));
	if (!R->jobs)
		return -ENOMEM;
	for (unsigned i = 0; i < R->njobs; i++) {
		struct fjob *j = &R->jobs[i];
		j->R = R;
		j->task.run = fjob_work;
		j->task.op.done = fjob_done;
		j->buf = malloc(max);
		j->zbuf = malloc(ZSTD_compressBound(max));
		if (!j->buf || !j->zbuf)
			return -ENOMEM;
		j->next = R->free_jobs;
		R->free_jobs = j;
	}
	return 0;
}

static void jobs_free(struct fres *R)
{
	for (unsigned i = 0; R->jobs && i < R->njobs; i++) {
		free(R->jobs[i].buf);
		free(R->jobs[i].zbuf);
	}
	free(R->jobs);
}

/* A location another push landed, taken for our dedup entry. Shared
 * memory is input too: it must make sense (pull verifies the chunk's
 * bytes against its id). Returns 0, 1 when it does not make sense, or
 * -ENOMEM. */
static int take_location(struct push *P, struct ss_dentry *de, const struct ss_claim_loc *loc)
{
	/* A sealed store's raw chunks share sealed frames as zstd ones do. */
	bool sealed = P->b.store->ids->crypt != NULL;
	bool ok = loc->codec == SS_CODEC_ZSTD
			  ? loc->stored_len != 0 && loc->frame_off <= SS_FRAME_MAX_LIMIT
		  : sealed ? loc->codec == SS_CODEC_RAW &&
				     (uint64_t)loc->frame_off + de->raw_len + SS_PACK_SEAL_TAG <=
					     loc->stored_len
			   : loc->codec == SS_CODEC_RAW && loc->stored_len == de->raw_len &&
				     !loc->frame_off;
	if (!ok)
		return 1;
	uint32_t idx;
	if (ss_store_pack_index(P->b.store, loc->pack_id, 0, &idx))
		return -ENOMEM;
	de->pack = idx;
	de->offset = loc->offset;
	de->stored_len = loc->stored_len;
	de->codec = loc->codec;
	de->frame_off = loc->frame_off;
	return 0;
}

/* One look at every chunk still waited for. Those landed take their
 * location; those to store here go to a free job (or wait for one).
 * Returns how many are still waited for or queued, or -errno. */
static ssize_t poll_claims(struct fres *R, bool expired)
{
	struct push *P = R->P;
	size_t k = 0;
	for (size_t i = 0; i < P->nforeign; i++) {
		struct foreign f = P->foreign[i];
		struct ss_dentry *de = ss_dedup_entry(P->b.dedup, f.slot);
		if (!f.mine) {
			struct ss_claim_loc loc;
			int pr = ss_claims_poll(P->b.claims, f.ref, de->id, &loc);
			bool bad = false;
			if (pr == 0) {
				int t = take_location(P, de, &loc);
				if (t < 0)
					return ss_err_set(P->pipe.err, t, "out of memory");
				if (!t)
					continue;
				bad = true;
			}
			if (pr == -EAGAIN && !expired) {
				P->foreign[k++] = f;
				continue;
			}
			uint32_t ref;
			if (!expired && !bad &&
			    ss_claims_claim(P->b.claims, de->id, &ref) == SS_CLAIM_THEIRS) {
				f.ref = ref;    /* another push took it over first */
				P->foreign[k++] = f;
				continue;
			}
			f.mine = true;
		}
		struct fjob *j = R->free_jobs;
		if (!j) {
			P->foreign[k++] = f;    /* stored once a job is free */
			continue;
		}
		R->free_jobs = j->next;
		j->f = f;
		R->busy++;
		ss_pool_submit(P->pool, &j->task);
	}
	P->nforeign = k;
	return (ssize_t)k;
}

static bool fres_busy(const void *arg)
{
	const struct fres *R = arg;
	return R->busy || R->tick_armed || ss_packer_inflight(R->P->packer);
}

/* The chunks other pushes on this host claimed (claims.h). Runs once this
 * push's own packs have all landed, so pushes waiting for each other only
 * ever wait for what is being stored or already is. A chunk whose
 * claimer lands it gets the claimer's location; one whose claimer died,
 * gave up or takes too long is claimed again and stored here. */
int push_resolve_foreign(struct push *P)
{
	if (!P->nforeign)
		return 0;
	struct fres R = {.P = P};
	R.tick.done = tick_done;
	static const struct __kernel_timespec tick = {.tv_nsec = FOREIGN_POLL_NS};
	uint64_t deadline = ss_now_ns() + FOREIGN_WAIT_NS;
	int r = jobs_init(&R);
	if (r)
		ss_pipe_fail(&P->pipe, r, "cannot store chunks other pushes claimed");
	while (!P->pipe.failed) {
		ssize_t left = P->nforeign ? poll_claims(&R, ss_now_ns() > deadline) : 0;
		if (left < 0) {
			P->pipe.failed = true;
			break;
		}
		pack_jobs(&R);
		if (!left && !R.busy && !R.pack_head)
			break;
		/* Wake up to poll again while chunks are waited for; task
		 * completions and puts wake the loop by themselves. */
		if (left && !R.tick_armed) {
			io_uring_prep_timeout(ss_loop_sqe(P->b.loop, &R.tick),
					      (struct __kernel_timespec *)&tick, 0, 0);
			R.tick_armed = true;
		}
		if (ss_pipe_turn(&P->pipe, P->b.loop) < 0)
			break;
		push_progress(P, false);
	}
	/* Store the last, partial pack, and let it land. */
	if (!P->pipe.failed && R.stored && ss_pipe_flush(&P->pipe, P->packer) >= 0)
		while (!P->pipe.failed && fres_busy(&R))
			if (ss_pipe_turn(&P->pipe, P->b.loop) < 0)
				break;
	P->nforeign = 0;
	/* Nothing in flight may outlive R, failed or not. */
	if (ss_pushbase_settle(&P->b, fres_busy, &R))
		jobs_free(&R);
	return P->pipe.failed ? P->pipe.err->code : 0;
}
