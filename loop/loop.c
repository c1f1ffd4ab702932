#include "loop.h"

#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* How long ss_loop_sqe waits for the kernel to take submissions again
 * (-EAGAIN: no memory for requests) when no completion arrives to make
 * room, in waits of STALL_WAIT_NS, before it gives up with -ENOMEM. */
#define STALL_WAITS 200
#define STALL_WAIT_NS 10000000ll

/* liburing maps a ring's SQ/CQ memory with raw syscalls that ThreadSanitizer
 * does not intercept, so a ring mapped where a freed one was looks to it
 * like a race with the freed ring's thread. The kernel orders the unmap
 * before the new mapping; these tell TSan so, through one token that every
 * ring release and acquire (a sanitizer annotation, not program state). */
#if defined(__SANITIZE_THREAD__)
#define SS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SS_TSAN 1
#endif
#endif
#ifdef SS_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
static char ring_remap_token;
#define RING_MAPPED() __tsan_acquire(&ring_remap_token)
#define RING_UNMAPPING() __tsan_release(&ring_remap_token)
#else
#define RING_MAPPED() ((void)0)
#define RING_UNMAPPING() ((void)0)
#endif

struct ss_loop {
	struct io_uring ring;
	unsigned inflight;         /* SQEs handed out, CQE not yet reaped */
	struct ss_op *defer_head, *defer_tail;
	/* Set when the ring refuses submissions for good; every later
	 * ss_loop_sqe completes its op with it and every turn returns it. */
	int err;
	struct io_uring_sqe dead_sqe;   /* handed out once err is set */

	/* Worker → loop: finished tasks and an eventfd to wake the ring. */
	pthread_mutex_t done_mu;
	struct ss_task *done_head, *done_tail;
	int efd;
	bool efd_armed;
	uint64_t efd_val;
	struct ss_op efd_op;
};

static void efd_arm(struct ss_loop *l);

static void efd_done(struct ss_op *op, int res)
{
	struct ss_loop *l = (struct ss_loop *)((char *)op - offsetof(struct ss_loop, efd_op));
	(void)res;
	l->efd_armed = false;
	efd_arm(l);
}

static void efd_arm(struct ss_loop *l)
{
	if (l->efd_armed)
		return;
	struct io_uring_sqe *sqe = ss_loop_sqe(l, &l->efd_op);
	io_uring_prep_read(sqe, l->efd, &l->efd_val, sizeof(l->efd_val), 0);
	l->efd_armed = true;
}

int ss_loop_new(unsigned entries, struct ss_loop **out)
{
	struct ss_loop *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->efd = -1;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	/* The CQ is sized generously: completions can outnumber submissions
	 * in one turn when the loop defers work. */
	p.flags = IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 4;
	int r = io_uring_queue_init_params(entries, &l->ring, &p);
	if (r < 0) {
		free(l);
		return r;
	}
	RING_MAPPED();
	pthread_mutex_init(&l->done_mu, NULL);
	l->efd = eventfd(0, EFD_CLOEXEC);
	if (l->efd < 0) {
		r = -errno;
		ss_loop_free(l);
		return r;
	}
	l->efd_op.done = efd_done;
	efd_arm(l);
	*out = l;
	return 0;
}

void ss_loop_free(struct ss_loop *l)
{
	if (!l)
		return;
	RING_UNMAPPING();
	io_uring_queue_exit(&l->ring);
	if (l->efd >= 0)
		close(l->efd);
	pthread_mutex_destroy(&l->done_mu);
	free(l);
}

struct io_uring *ss_loop_ring(struct ss_loop *l)
{
	return &l->ring;
}

void ss_loop_defer(struct ss_loop *l, struct ss_op *op, int res)
{
	op->res = res;
	op->next = NULL;
	if (l->defer_tail)
		l->defer_tail->next = op;
	else
		l->defer_head = op;
	l->defer_tail = op;
}

/* Move every CQE the ring holds to the deferred list, to run on the next
 * turn: this frees completion-ring room without running callbacks under a
 * caller that is half-way through preparing an SQE. Returns how many. */
static unsigned park_cqes(struct ss_loop *l)
{
	struct io_uring_cqe *cqe;
	unsigned head, k = 0;
	io_uring_for_each_cqe(&l->ring, head, cqe) {
		ss_loop_defer(l, io_uring_cqe_get_data(cqe), cqe->res);
		k++;
	}
	io_uring_cq_advance(&l->ring, k);
	l->inflight -= k;
	return k;
}

/* Wait up to STALL_WAIT_NS for a completion, submitting nothing. Returns
 * 0, or -errno when the ring has failed. */
static int stall_wait(struct ss_loop *l)
{
	if (l->ring.features & IORING_FEAT_EXT_ARG) {
		struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = STALL_WAIT_NS};
		struct io_uring_cqe *cqe;
		int r = io_uring_wait_cqe_timeout(&l->ring, &cqe, &ts);
		if (r >= 0 || r == -ETIME || r == -EINTR || r == -EAGAIN || r == -EBUSY)
			return 0;
		return r;   /* -EBADR: completions were lost; nothing can wait on them */
	}
	/* Without EXT_ARG a timed wait needs an SQE, and there is none. */
	struct timespec ts = {.tv_sec = 0, .tv_nsec = STALL_WAIT_NS};
	nanosleep(&ts, NULL);
	return 0;
}

struct io_uring_sqe *ss_loop_sqe(struct ss_loop *l, struct ss_op *op)
{
	struct io_uring_sqe *sqe = NULL;
	unsigned stalls = 0;
	while (!l->err && !(sqe = io_uring_get_sqe(&l->ring))) {
		int r = io_uring_submit(&l->ring);
		if (r > 0) {
			stalls = 0;
			continue;
		}
		if (r == -EINTR)
			continue;
		if (r < 0 && r != -EBUSY && r != -EAGAIN) {
			l->err = r;
			break;
		}
		/* The kernel takes nothing until completions are reaped:
		 * -EBUSY when the CQEs it holds back cannot move into a full
		 * completion ring, -EAGAIN when it has no memory for more
		 * requests. Spinning would never clear either. */
		if (park_cqes(l))
			continue;
		if (++stalls > STALL_WAITS) {
			l->err = r == -EBUSY ? -EBUSY : -ENOMEM;
			break;
		}
		if ((r = stall_wait(l)) < 0)
			l->err = r;
	}
	if (!sqe) {
		/* The ring is unusable: the caller still gets a slot to fill,
		 * one that goes nowhere, and its op completes with the error
		 * on the next turn, which also returns it. */
		sqe = &l->dead_sqe;
		memset(sqe, 0, sizeof(*sqe));
		ss_loop_defer(l, op, l->err);
		return sqe;
	}
	io_uring_sqe_set_data(sqe, op);
	l->inflight++;
	return sqe;
}

unsigned ss_loop_inflight(const struct ss_loop *l)
{
	return l->inflight;
}

static int run_deferred(struct ss_loop *l)
{
	int n = 0;
	/* Take the whole list: callbacks may defer more, which run next turn. */
	struct ss_op *op = l->defer_head;
	l->defer_head = l->defer_tail = NULL;
	while (op) {
		struct ss_op *next = op->next;
		op->done(op, op->res);
		op = next;
		n++;
	}
	return n;
}

static int run_finished_tasks(struct ss_loop *l)
{
	pthread_mutex_lock(&l->done_mu);
	struct ss_task *t = l->done_head;
	l->done_head = l->done_tail = NULL;
	pthread_mutex_unlock(&l->done_mu);
	int n = 0;
	while (t) {
		struct ss_task *next = t->next;
		t->op.done(&t->op, t->op.res);
		t = next;
		n++;
	}
	return n;
}

int ss_loop_turn(struct ss_loop *l, bool wait)
{
	int n = run_deferred(l);
	n += run_finished_tasks(l);
	if (l->err)
		return l->err;
	bool block = wait && n == 0 && !l->defer_head;
	int r;
	if (block)
		r = io_uring_submit_and_wait(&l->ring, 1);
	else
		r = io_uring_submit(&l->ring);
	/* -EBUSY and -EAGAIN clear as completions are reaped, below; when
	 * there are none yet, wait a little for one rather than return to a
	 * caller that would come straight back. */
	if ((r == -EBUSY || r == -EAGAIN) && block && !io_uring_cq_ready(&l->ring) &&
	    (r = stall_wait(l)) < 0)
		return r;
	if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN)
		return r;

	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;
	/* Copy results out before running callbacks: a callback may queue new
	 * SQEs, and the CQ must be advanced first so the kernel has room. */
	struct {
		struct ss_op *op;
		int res;
	} batch[256];
	for (;;) {
		unsigned k = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe) {
			batch[k].op = io_uring_cqe_get_data(cqe);
			batch[k].res = cqe->res;
			if (++k == SS_ARRAY_SIZE(batch))
				break;
		}
		if (k == 0)
			break;
		io_uring_cq_advance(&l->ring, k);
		l->inflight -= k;
		for (unsigned i = 0; i < k; i++)
			batch[i].op->done(batch[i].op, batch[i].res);
		seen += k;
	}
	n += (int)seen;
	n += run_finished_tasks(l);
	return n;
}

int ss_loop_reap(struct ss_loop *l, long long timeout_ns)
{
	int n = run_deferred(l);
	n += run_finished_tasks(l);
	struct io_uring_cqe *cqe;
	if (!n && !io_uring_cq_ready(&l->ring)) {
		if (l->ring.features & IORING_FEAT_EXT_ARG) {
			/* With EXT_ARG the timed wait submits nothing. */
			struct __kernel_timespec ts = {.tv_sec = timeout_ns / 1000000000ll,
						       .tv_nsec = timeout_ns % 1000000000ll};
			int r = io_uring_wait_cqe_timeout(&l->ring, &cqe, &ts);
			if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
				return r;
		} else {
			struct timespec ts = {.tv_sec = timeout_ns / 1000000000ll,
					      .tv_nsec = timeout_ns % 1000000000ll};
			nanosleep(&ts, NULL);
		}
	}
	unsigned head, k = 0;
	struct ss_op *ops[256];
	int res[256];
	do {
		k = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe) {
			ops[k] = io_uring_cqe_get_data(cqe);
			res[k] = cqe->res;
			if (++k == SS_ARRAY_SIZE(ops))
				break;
		}
		io_uring_cq_advance(&l->ring, k);
		l->inflight -= k;
		for (unsigned i = 0; i < k; i++)
			ops[i]->done(ops[i], res[i]);
		n += (int)k;
	} while (k);
	n += run_finished_tasks(l);
	return n;
}

/* --- worker pool ------------------------------------------------------ */

struct ss_worker {
	struct ss_pool *pool;
	pthread_t thread;
	void *wctx;
};

struct ss_pool {
	struct ss_loop *loop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ss_task *head, *tail;
	bool stopping;
	unsigned nthreads;         /* started, to join */
	unsigned nctx;             /* contexts created, to destroy */
	struct ss_worker_ctx_ops ops;
	struct ss_worker *workers;
};

static void task_finished(struct ss_pool *p, struct ss_task *t)
{
	struct ss_loop *l = p->loop;
	t->next = NULL;
	pthread_mutex_lock(&l->done_mu);
	bool was_empty = !l->done_head;
	if (l->done_tail)
		l->done_tail->next = t;
	else
		l->done_head = t;
	l->done_tail = t;
	pthread_mutex_unlock(&l->done_mu);
	/* One wakeup per batch: the loop drains the whole list at once. */
	if (was_empty) {
		uint64_t one = 1;
		ssize_t w = write(l->efd, &one, sizeof(one));
		(void)w;
	}
}

static void *worker_main(void *arg)
{
	struct ss_worker *w = arg;
	struct ss_pool *p = w->pool;
	void *wctx = w->wctx;
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->head && !p->stopping)
			pthread_cond_wait(&p->cv, &p->mu);
		struct ss_task *t = p->head;
		if (!t) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		p->head = t->next;
		if (!p->head)
			p->tail = NULL;
		pthread_mutex_unlock(&p->mu);
		t->run(t, wctx);
		task_finished(p, t);
	}
	return NULL;
}

int ss_pool_new(struct ss_loop *l, unsigned n, const struct ss_worker_ctx_ops *ops,
		struct ss_pool **out)
{
	if (n == 0)
		return -EINVAL;
	struct ss_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->loop = l;
	if (ops)
		p->ops = *ops;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->workers = calloc(n, sizeof(*p->workers));
	if (!p->workers) {
		ss_pool_free(p);
		return -ENOMEM;
	}
	/* Every context exists before any worker starts: a worker without
	 * one would run its tasks without their decoder or scratch space,
	 * and they would fail as if the data were corrupt. */
	for (unsigned i = 0; i < n; i++) {
		p->workers[i].pool = p;
		if (p->ops.create && !(p->workers[i].wctx = p->ops.create(p->ops.arg))) {
			ss_pool_free(p);
			return -ENOMEM;
		}
		p->nctx++;
	}
	for (unsigned i = 0; i < n; i++) {
		int r = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
		if (r) {
			ss_pool_free(p);
			return -r;
		}
		p->nthreads++;
	}
	*out = p;
	return 0;
}

void ss_pool_free(struct ss_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->workers[i].thread, NULL);
	for (unsigned i = 0; i < p->nctx; i++)
		if (p->ops.destroy && p->workers[i].wctx)
			p->ops.destroy(p->workers[i].wctx);
	free(p->workers);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void ss_pool_submit(struct ss_pool *p, struct ss_task *t)
{
	t->next = NULL;
	pthread_mutex_lock(&p->mu);
	if (p->tail)
		p->tail->next = t;
	else
		p->head = t;
	p->tail = t;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}
