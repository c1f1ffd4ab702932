/* admin — the maintenance commands' private header (docs/DESIGN.md,
 * "Module map"): ls, info and rm (snapshots.c), gc (gc.c), check and
 * --repair (check*.c), and what they share: the store's gc/lock
 * (gclock.c) and which snapshots are live (live.c). Builds on core. */
#ifndef SS_ENGINE_ADMIN_H
#define SS_ENGINE_ADMIN_H

#include "core.h"

/* --- refs and snapshots (live.c) --------------------------------------- */

/* Every ref in a store: uris[i] is the snapshot URI recorded under
 * keys[i]. Arrays and strings malloc'd (ss_refs_free). strict: an object
 * under refs/ that is not a URI is -EBADMSG (gc must know every
 * snapshot), else it is skipped (ls). */
int ss_read_refs(struct ss_backend *b, struct ss_loop *l, bool strict, char ***uris,
		 char ***keys, size_t *n, uint64_t *requests, struct ss_err *err);
void ss_refs_free(char **uris, char **keys, size_t n);

/* Local snapshots at or below dir (at most depth levels down;
 * dot-directories such as stores are skipped), as file:// URIs. *uris
 * malloc'd, each string too. */
int ss_scan_manifests(const char *dir, int depth, char ***uris, size_t *n);

/* --- gc/lock (gclock.c) -------------------------------------------------

 * One gc, or one `check --repair`, changes a store's records at a time
 * (docs/DESIGN.md, "Garbage collection" and "Checking and repairing a
 * store"). Two of them at once could undo each other's work with a stale
 * gc/state or index. Pushes, pulls and verifies never take it. */

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
