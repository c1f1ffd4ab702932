/* admin — the maintenance commands' private header (docs/DESIGN.md,
 * "Module map"): ls, info and rm (snapshots.c), gc (gc.c), check and
 * --repair (check*.c), and what they share: the store's gc/lock
 * (gclock.c) and which snapshots are live (live.c). Builds on core. */
#ifndef SS_ENGINE_ADMIN_H
#define SS_ENGINE_ADMIN_H

#include "core.h"

/* --- which snapshots are live (live.c) ---------------------------------- */

/* The snapshots whose packs stay: every snapshot a ref names, and, for a
 * local store named .snapstream, every snapshot beside it (one level
 * down) that no ref names, so that a directory moved with its store (whose
 * refs name the old place) keeps its packs. gc keeps what they reference
 * (and what gc/removed/ records list, for the grace period); check checks
 * exactly these. */
struct ss_live {
	char **uris, **keys;        /* named by refs: uris[i] under keys[i] */
	size_t n;
	char **sib;                 /* beside the store, named by no ref */
	size_t ns;
};

/* strict as for ss_read_refs. Returns 0 or -errno with err set; *out is
 * empty after an error. */
int ss_live_read(struct ss_backend *b, struct ss_loop *l, const char *store, bool strict,
		 struct ss_live *out, uint64_t *requests, struct ss_err *err);
void ss_live_free(struct ss_live *lv);

/* A growing array of strings. */
struct ss_strvec {
	char **v;
	size_t n, cap;
};
/* Append a copy of s[0..len). Returns 0 or -ENOMEM. */
int ss_strvec_add(struct ss_strvec *u, const char *s, size_t len);
void ss_strvec_free(struct ss_strvec *u);

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
