/* reaper.h — ateom as the child subreaper of the sandboxes it starts.
 *
 * `runsc run --detach` and `runsc restore --detach` start the sandbox and
 * gofer processes and exit, so those processes are reparented to the
 * nearest subreaper, by default the machine's init. When they exit, runsc
 * checkpoint and runsc delete wait for them to be gone by polling kill(pid,
 * 0) every 100 ms: a zombie still counts, so each command takes as long as
 * init takes to reap. In containers whose init reaps late that was 0.3 s
 * of every checkpoint and 1.3–1.9 s of every delete, as strace showed.
 * Becoming the subreaper (PR_SET_CHILD_SUBREAPER) and reaping orphans at
 * once is what container shims do; it brings a delete down to ~0.1 s
 * (and to ~20 ms when ateom kills the sandbox first: sandbox_gone in
 * workload.c).
 *
 * The reaper must never take the exit status of a child that a thread
 * waits for itself (runsc_call): such children are registered while they
 * are spawned, under the reaper's lock, and left alone until their owner
 * has waited. A NULL reaper makes every function a no-op.
 */
#ifndef ATEOM_REAPER_H
#define ATEOM_REAPER_H

#include <sys/types.h>

struct reaper;

/* Become the subreaper and start the reaping thread. SIGCHLD must be
 * blocked in every thread (main does that before any thread exists).
 * Returns 0 or -errno (*out NULL: then orphans go to init as before). */
int reaper_start(struct reaper **out);

/* Stop the thread and free; NULL is a no-op. */
void reaper_stop(struct reaper *r);

/* Around spawning a child the caller will wait for: begin takes the lock,
 * end registers pid (if > 0) and releases it, waited unregisters it once
 * the caller's waitpid returned. */
void reaper_spawn_begin(struct reaper *r);
void reaper_spawn_end(struct reaper *r, pid_t pid);
void reaper_waited(struct reaper *r, pid_t pid);

#endif
