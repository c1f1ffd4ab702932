/* gclock — the store's gc/lock: one gc, or one `check --repair`, changes a
 * store's records at a time (docs/DESIGN.md, "Garbage collection" and
 * "Checking and repairing a store"). Two of them at once could undo each
 * other's work with a stale gc/state or index. Pushes, pulls and verifies
 * never take it. */
#ifndef SS_GCLOCK_H
#define SS_GCLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "loop.h"
#include "util.h"

/* Create gc/lock (create-if-absent) holding host, pid and start time.
 * break_lock: remove a lock left by a run that died, then take it. Returns
 * 0, -EBUSY (held; err says by whom and how long, and that `what
 * --break-lock` removes it) or another -errno. store names the store in
 * messages; what names the command ("gc", "check --repair"). Loop thread. */
int ss_gclock_take(struct ss_backend *b, struct ss_loop *l, const char *store, const char *what,
		   bool break_lock, uint64_t *requests, struct ss_err *err);

/* Remove the lock (best effort: a lock left behind is reported by the
 * next run, which may break it). */
void ss_gclock_drop(struct ss_backend *b, struct ss_loop *l, uint64_t *requests);

#endif
