/* loop — the io_uring event loop and the worker pool.
 *
 * One thread owns a struct ss_loop and is the only one that touches its
 * ring: file reads and writes, opens and renames, and (later) the sockets
 * and timers of a libcurl multi handle. Worker threads never touch the
 * ring; they finish tasks and wake the loop through an eventfd, and the
 * loop runs each task's completion on its own thread.
 *
 * Every asynchronous operation embeds a struct ss_op; its `done` callback
 * runs on the loop thread with the result (>= 0 or -errno).
 */
#ifndef SS_LOOP_H
#define SS_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ss_op;
typedef void (*ss_op_fn)(struct ss_op *op, int res);

struct ss_op {
	ss_op_fn done;
	struct ss_op *next;   /* for the loop's deferred list */
	int res;
};

struct ss_loop;

/* Create a loop with a ring of `entries` submission slots. Returns 0 or
 * -errno. Loop thread only from here on. */
int ss_loop_new(unsigned entries, struct ss_loop **out);
void ss_loop_free(struct ss_loop *l);

/* The ring, for callers that register buffers or files. */
struct io_uring *ss_loop_ring(struct ss_loop *l);

/* A submission slot for `op`; the op's done() runs when the CQE arrives.
 * When the ring is full, submits pending SQEs to make room; if the kernel
 * takes none until completions are reaped (-EBUSY, -EAGAIN), moves the
 * CQEs it holds to the next turn (no callback runs here) and waits for
 * some, for at most about two seconds. Never NULL: if the ring fails for
 * good, the slot returned goes nowhere, op completes with the error on
 * the next turn (-ENOMEM when the kernel had no memory), and every later
 * ss_loop_turn returns it. */
struct io_uring_sqe *ss_loop_sqe(struct ss_loop *l, struct ss_op *op);

/* Complete op with res on the next loop turn (never re-entrantly), for
 * operations that finish synchronously but promise async completion. */
void ss_loop_defer(struct ss_loop *l, struct ss_op *op, int res);

/* Number of SQEs submitted whose CQE has not been reaped. */
unsigned ss_loop_inflight(const struct ss_loop *l);

/* One turn: submit what is queued, wait for at least one event if `wait`
 * and nothing is deferred, run completions (CQEs, deferred ops, worker
 * wakeups). Returns the number of completions run, or -errno (after
 * running what was deferred, once ss_loop_sqe found the ring failed). */
int ss_loop_turn(struct ss_loop *l, bool wait);

/* After a turn failed: run what completes without submitting anything
 * (deferred ops, finished tasks, CQEs of SQEs the kernel already holds),
 * waiting up to timeout_ns for a CQE when there is nothing yet. A caller
 * that owns buffers the kernel or its workers may still write into calls
 * this until they are done, before freeing them. Returns the number of
 * completions run (0: none in time), or -errno when the ring cannot even
 * be waited on. */
int ss_loop_reap(struct ss_loop *l, long long timeout_ns);

/* --- worker pool ------------------------------------------------------ */

struct ss_task;
/* Runs on a worker thread; wctx is that worker's private context. */
typedef void (*ss_task_run_fn)(struct ss_task *t, void *wctx);

struct ss_task {
	ss_task_run_fn run;
	struct ss_op op;          /* op.done runs on the loop thread after run */
	struct ss_task *next;
};

/* Per-worker context (zstd contexts and scratch buffers, allocated once
 * and reused): ss_pool_new creates one per worker on the calling thread
 * before any worker starts, and ss_pool_free destroys them after the
 * workers are joined. create returns NULL only when out of memory, and
 * that fails ss_pool_new: no task ever runs without its context. A create
 * that builds several parts must return NULL unless it built them all. */
struct ss_worker_ctx_ops {
	void *(*create)(void *arg);
	void (*destroy)(void *wctx);
	void *arg;
};

struct ss_pool;

/* Start n worker threads bound to loop l. Returns 0, -ENOMEM (also when
 * a context's create returned NULL; the ones made are destroyed) or
 * -errno. */
int ss_pool_new(struct ss_loop *l, unsigned n, const struct ss_worker_ctx_ops *ops,
		struct ss_pool **out);
/* Stop and join the workers (queued tasks still run first). NULL ok. */
void ss_pool_free(struct ss_pool *p);
/* Queue a task (loop thread). Never blocks: the caller bounds how many
 * tasks it has outstanding through its own buffer pools. */
void ss_pool_submit(struct ss_pool *p, struct ss_task *t);

#endif
