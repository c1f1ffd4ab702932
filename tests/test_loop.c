/* test_loop — the event loop and the worker pool under pressure: a pool
 * whose worker context cannot be made fails with -ENOMEM instead of
 * running tasks without it; a ring flooded with more operations than its
 * completion queue holds completes every one, also when the kernel
 * refuses submissions until completions are reaped (-EBUSY, -EAGAIN), and
 * a ring that fails for good fails its operations instead of spinning.
 * Exit 0 pass, 1 fail; a hang ends in SIGALRM.
 *
 * The kernel's refusals are injected: this program defines
 * io_uring_submit, which the loop's calls resolve to, and passes through
 * to liburing's (dlsym RTLD_NEXT) unless a test asks for an error. Modern
 * kernels keep overflowing completions on a list instead of answering
 * -EBUSY, and -EAGAIN needs the kernel to run out of memory. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"
#include "util.h"

#include "testutil.h"

/* --------------------------------------------------- submit injection */

enum inject {
	INJ_NONE,
	INJ_BUSY,     /* -EBUSY while the completion ring is full, as kernels
		       * before 5.x's overflow list did */
	INJ_AGAIN,    /* -EAGAIN for the next `again_left` calls */
	INJ_HARD,     /* a fixed error on every call */
};

static enum inject inj;
static unsigned again_left;
static int hard_err;
static unsigned injected;

int io_uring_submit(struct io_uring *ring)
{
	static int (*real)(struct io_uring *);
	if (!real) {
		real = (int (*)(struct io_uring *))dlsym(RTLD_NEXT, "io_uring_submit");
		REQUIRE(real, "dlsym io_uring_submit: %s", dlerror());
	}
	switch (inj) {
	case INJ_BUSY:
		if (io_uring_cq_ready(ring) >= ring->cq.ring_entries) {
			injected++;
			return -EBUSY;
		}
		break;
	case INJ_AGAIN:
		if (again_left) {
			again_left--;
			injected++;
			return -EAGAIN;
		}
		break;
	case INJ_HARD:
		injected++;
		return hard_err;
	case INJ_NONE:
		break;
	}
	return real(ring);
}

/* ------------------------------------------------------------ flooding */

struct nop {
	struct ss_op op;
	int res;
	unsigned calls;
};

static unsigned nops_done;

static void nop_done(struct ss_op *op, int res)
{
	struct nop *n = (struct nop *)op;
	n->res = res;
	n->calls++;
	nops_done++;
}

/* Queue n NOPs in one go, as a loop turn's callbacks may, without a turn
 * in between to reap. */
static void flood(struct ss_loop *l, struct nop *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		v[i].op.done = nop_done;
		v[i].res = 1;
		v[i].calls = 0;
		io_uring_prep_nop(ss_loop_sqe(l, &v[i].op));
	}
}

/* Turn until all n have completed; every one exactly once, with res 0. */
static void drain(const char *what, struct ss_loop *l, struct nop *v, unsigned n)
{
	unsigned turns = 0;
	while (nops_done < n && turns < 100000) {
		int r = ss_loop_turn(l, true);
		REQUIRE(r >= 0, "%s: turn: %s", what, strerror(-r));
		turns++;
	}
	CHECK(nops_done == n, "%s: %u of %u completed", what, nops_done, n);
	for (unsigned i = 0; i < n; i++)
		if (v[i].calls != 1 || v[i].res != 0) {
			CHECK(false, "%s: nop %u completed %u times, res %d", what, i, v[i].calls,
			      v[i].res);
			break;
		}
	CHECK(ss_loop_inflight(l) == 1, "%s: %u in flight, want 1 (the wakeup read)", what,
	      ss_loop_inflight(l));
}

#define FLOOD 5000

static void test_flood(enum inject mode, const char *what)
{
	printf("%s\n", what);
	struct ss_loop *l;
	/* 2 submission slots, 8 completion slots: the flood overruns both. */
	REQUIRE(ss_loop_new(2, &l) == 0, "loop");
	REQUIRE(ss_loop_turn(l, false) >= 0, "first turn");
	struct nop *v = calloc(FLOOD, sizeof(*v));
	REQUIRE(v, "oom");
	nops_done = 0;
	injected = 0;
	inj = mode;
	again_left = mode == INJ_AGAIN ? 5 : 0;
	flood(l, v, FLOOD);
	drain(what, l, v, FLOOD);
	inj = INJ_NONE;
	if (mode != INJ_NONE)
		CHECK(injected > 0, "%s: nothing injected", what);
	printf("  %u completions, %u refusals injected\n", nops_done, injected);
	free(v);
	ss_loop_free(l);
}

/* A ring that refuses for good (-ENXIO, or -EAGAIN that never clears):
 * ss_loop_sqe returns, the ops it could not place complete with the error
 * (-ENOMEM for memory), and the turn reports it. */
static void test_ring_fails(enum inject mode, int err, int want)
{
	printf("ring that keeps answering %s\n", strerror(-err));
	struct ss_loop *l;
	REQUIRE(ss_loop_new(2, &l) == 0, "loop");
	REQUIRE(ss_loop_turn(l, false) >= 0, "first turn");
	enum { N = 6 };
	struct nop v[N];
	nops_done = 0;
	inj = mode;
	hard_err = err;
	again_left = ~0u;
	flood(l, v, N);
	int r = ss_loop_turn(l, true);
	CHECK(r == want, "turn returned %d, want %d", r, want);
	/* The 2 slots were filled before the ring refused; the rest failed. */
	unsigned failed = 0;
	for (unsigned i = 0; i < N; i++)
		if (v[i].calls == 1 && v[i].res == want)
			failed++;
	CHECK(failed == N - 2, "%u ops failed with %d, want %d", failed, want, N - 2);
	CHECK(ss_loop_turn(l, false) == want, "the error sticks");
	inj = INJ_NONE;
	ss_loop_free(l);
}

/* ---------------------------------------------------------------- pool */

struct ctxs {
	pthread_mutex_t mu;
	unsigned created, destroyed, fail_at;   /* fail_at: 1-based; 0 never */
};

struct wctx {
	struct ctxs *c;
	unsigned tasks;
};

static void *ctx_create(void *arg)
{
	struct ctxs *c = arg;
	pthread_mutex_lock(&c->mu);
	unsigned k = ++c->created;
	pthread_mutex_unlock(&c->mu);
	if (k == c->fail_at)
		return NULL;   /* as a calloc or ZSTD_createDCtx that fails */
	struct wctx *w = calloc(1, sizeof(*w));
	if (w)
		w->c = c;
	return w;
}

static void ctx_destroy(void *p)
{
	struct wctx *w = p;
	if (!w)
		return;
	pthread_mutex_lock(&w->c->mu);
	w->c->destroyed++;
	pthread_mutex_unlock(&w->c->mu);
	free(w);
}

struct job {
	struct ss_task task;
	bool had_ctx;
	bool done;
};

static unsigned jobs_done;

static void job_run(struct ss_task *t, void *wctx)
{
	struct job *j = (struct job *)t;
	struct wctx *w = wctx;
	j->had_ctx = w != NULL;
	if (w)
		w->tasks++;
}

static void job_done(struct ss_op *op, int res)
{
	(void)res;
	struct job *j = (struct job *)((char *)op - offsetof(struct ss_task, op));
	j->done = true;
	jobs_done++;
}

static void test_pool_ctx_fails(void)
{
	printf("pool whose third worker context cannot be made\n");
	struct ss_loop *l;
	REQUIRE(ss_loop_new(8, &l) == 0, "loop");
	struct ctxs c = {.fail_at = 3};
	pthread_mutex_init(&c.mu, NULL);
	struct ss_worker_ctx_ops ops = {.create = ctx_create, .destroy = ctx_destroy, .arg = &c};
	struct ss_pool *p = (struct ss_pool *)&c;   /* must stay untouched */
	int r = ss_pool_new(l, 4, &ops, &p);
	CHECK(r == -ENOMEM, "ss_pool_new returned %d, want -ENOMEM", r);
	CHECK(p == (struct ss_pool *)&c, "output written on failure");
	if (r == 0) {
		/* The old behaviour: tasks run on a worker without a context. */
		struct job j[32] = {0};
		jobs_done = 0;
		for (unsigned i = 0; i < 32; i++) {
			j[i].task.run = job_run;
			j[i].task.op.done = job_done;
			ss_pool_submit(p, &j[i].task);
		}
		while (jobs_done < 32)
			REQUIRE(ss_loop_turn(l, true) >= 0, "turn");
		ss_pool_free(p);
	}
	pthread_mutex_lock(&c.mu);
	CHECK(c.destroyed + 1 == c.created, "%u contexts made, %u destroyed", c.created,
	      c.destroyed);
	pthread_mutex_unlock(&c.mu);
	pthread_mutex_destroy(&c.mu);
	ss_loop_free(l);
}

static void test_pool_ok(void)
{
	printf("pool: every task runs with its worker's context\n");
	struct ss_loop *l;
	REQUIRE(ss_loop_new(8, &l) == 0, "loop");
	struct ctxs c = {0};
	pthread_mutex_init(&c.mu, NULL);
	struct ss_worker_ctx_ops ops = {.create = ctx_create, .destroy = ctx_destroy, .arg = &c};
	struct ss_pool *p;
	REQUIRE(ss_pool_new(l, 4, &ops, &p) == 0, "pool");
	pthread_mutex_lock(&c.mu);
	CHECK(c.created == 4, "%u contexts when ss_pool_new returned, want 4", c.created);
	pthread_mutex_unlock(&c.mu);
	enum { N = 500 };
	struct job *j = calloc(N, sizeof(*j));
	REQUIRE(j, "oom");
	jobs_done = 0;
	for (unsigned i = 0; i < N; i++) {
		j[i].task.run = job_run;
		j[i].task.op.done = job_done;
		ss_pool_submit(p, &j[i].task);
	}
	while (jobs_done < N)
		REQUIRE(ss_loop_turn(l, true) >= 0, "turn");
	unsigned without = 0;
	for (unsigned i = 0; i < N; i++)
		without += !j[i].had_ctx || !j[i].done;
	CHECK(without == 0, "%u tasks ran without a context", without);
	ss_pool_free(p);
	CHECK(c.destroyed == 4, "%u contexts destroyed, want 4", c.destroyed);
	free(j);
	pthread_mutex_destroy(&c.mu);
	ss_loop_free(l);
}

/* `test_loop [name]` runs only the tests whose name holds `name`. */
static const char *only;

static bool want(const char *name)
{
	return !only || strstr(name, only);
}

int main(int argc, char **argv)
{
	only = argc > 1 ? argv[1] : NULL;
	/* A spinning loop is the failure some of these tests look for: say
	 * which test hangs before SIGALRM ends it. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(60);
	if (want("pool-ok"))
		test_pool_ok();
	if (want("pool-ctx-fails"))
		test_pool_ctx_fails();
	if (want("flood"))
		test_flood(INJ_NONE, "flood of NOPs, 2-entry ring");
	if (want("flood-eagain"))
		test_flood(INJ_AGAIN, "flood of NOPs, kernel answers -EAGAIN 5 times");
	if (want("flood-ebusy"))
		test_flood(INJ_BUSY, "flood of NOPs, kernel answers -EBUSY while the CQ is full");
	if (want("ring-fails-enxio"))
		test_ring_fails(INJ_HARD, -ENXIO, -ENXIO);
	if (want("ring-fails-eagain"))
		test_ring_fails(INJ_AGAIN, -EAGAIN, -ENOMEM);
	if (failures) {
		fprintf(stderr, "test_loop: %d failure(s)\n", failures);
		return 1;
	}
	printf("test_loop: ok\n");
	return 0;
}
