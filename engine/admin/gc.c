/* gc — delete the packs no snapshot references, without pulling one out
 * from under a push, pull or verify that is running (docs/DESIGN.md,
 * "Garbage collection").
 *
 * A pack is deleted in two steps, at least the grace period G apart:
 *
 *   1. hide: a gc finds it unreferenced and records it in gc/state with the
 *      time. Pushes that load the store from then on skip hidden packs, so
 *      nothing new comes to refer to them.
 *   2. delete: a later gc, started at least G after the hide, finds it still
 *      unreferenced. Every operation that could have known the pack before
 *      it was hidden has finished by then (G exceeds the longest one), so
 *      any manifest that refers to it is visible to this gc's mark, which
 *      starts after G; a pack referenced again is un-hidden ("rescued").
 *
 * A push that takes a snapshot as --parent learns packs from its manifest,
 * not from the store; `snapstream rm` therefore leaves a record of the
 * removed snapshot's packs (gc/removed/), which count as referenced for G
 * after the removal. Index objects that list a pack are rewritten without
 * it before the pack goes, and a pack leaves gc/state only once it is gone.
 * One gc runs at a time (gc/lock): two would undo each other's rescues. */
#include "admin.h"
#include "crypt.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECORD_MAX (256u << 20)

enum fate {
	KEEP = 0,       /* referenced */
	PENDING,        /* hidden; deleted by a gc after the grace period */
	DELETE,         /* hidden long enough and still unreferenced */
};

struct gpack {
	uint8_t id[16];
	uint64_t size;
	int64_t since;     /* hidden since (0: not hidden before this run) */
	uint8_t fate;
	bool deleted;
	bool fresh;        /* hidden by this run */
};

struct gc {
	struct ss_cfg cfg;
	const struct ss_gc_opts *opts;
	struct ss_loop *loop;
	struct ss_backend *b;
	struct ss_gc_stats *st;
	struct ss_err *err;
	bool no_grace;
	bool sealed;                /* the store's config is version 2 */
	int64_t grace_ns;
	int64_t t0;                 /* start of this run, before the mark */
	bool locked;
	uint8_t (*refd)[16];        /* referenced pack ids, sorted after the mark */
	size_t nrefd, refd_cap;
	struct gpack *packs;
	size_t npacks, packs_cap;
	struct ss_gcstate old;
	char **expired;             /* gc/removed/ records past the grace period */
	size_t nexpired, expired_cap;
	struct ss_progress prog;
	struct ss_ticker ticker;
};

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static int add_refd(struct gc *G, const uint8_t id[16])
{
	if (SS_GROW(G->refd, G->refd_cap, G->nrefd + 1, 256))
		return -ENOMEM;
	memcpy(G->refd[G->nrefd++], id, 16);
	return 0;
}

static bool is_refd(const struct gc *G, const uint8_t id[16])
{
	return G->nrefd && bsearch(id, G->refd, G->nrefd, 16, cmp_id);
}

/* ---------------------------------------------------------------- config */

/* A sealed store: gc runs with its key (manifests and index objects are
 * opened and checked, index objects rewritten) or without (each sealed
 * manifest and index object judged by the packs it lists in the clear). */
static int read_config(struct gc *G)
{
	uint8_t *p = NULL;
	size_t n = 0;
	struct ss_store_config c;
	int r = ss_get_object(G->b, G->loop, SS_STORE_CONFIG_KEY, 4096, &p, &n, &G->st->requests,
			      G->err);
	if (r == -ENOENT) {
		ss_err_clear(G->err);
		return 0;
	}
	if (!r && !(r = ss_store_config_parse(p, n, &c, G->err)) && c.sealed) {
		G->sealed = true;
		if (G->cfg.ids.keyed)
			r = ss_idkey_check_store(&G->cfg.ids, p, n, G->opts->store, NULL, G->err);
	}
	free(p);
	return r;
}

/* ---------------------------------------------------------------- lock */

static int lock_take(struct gc *G)
{
	int r = ss_gclock_take(G->b, G->loop, G->opts->store, "gc", G->opts->break_lock,
			       &G->st->requests, G->err);
	G->locked = r == 0;
	return r;
}

static void lock_drop(struct gc *G)
{
	if (!G->locked)
		return;
	ss_gclock_drop(G->b, G->loop, &G->st->requests);
	G->locked = false;
}

/* ---------------------------------------------------------------- mark */

/* Keep every pack snapshot `uri` references. A snapshot that cannot be
 * read stops gc: what it references is unknown. */
static int mark_snapshot(struct gc *G, const char *uri, const char *via, bool *found)
{
	struct ss_manifest *m = NULL;
	struct ss_err me = {0};
	/* Without the key a sealed manifest still lists its packs. */
	int r = ss_manifest_load_ex(uri, G->loop, &G->cfg, SS_MLOAD_HEADER, &m, NULL,
				    &G->st->requests, &me);
	*found = r == 0;
	if (r == -ENOENT) {
		/* A snapshot removed by hand leaves its directory; a directory
		 * that is gone altogether was more likely moved, with snapshots
		 * whose packs must not go. */
		const char *scheme;
		char *path = NULL;
		struct stat sb;
		bool moved = false;
		if (ss_location_parse(uri, &scheme, &path, NULL) == 0 && !strcmp(scheme, "file")) {
			char *slash = strrchr(path, '/');
			if (slash && slash != path) {
				*slash = '\0';
				moved = stat(path, &sb) != 0;
			}
		}
		if (moved)
			ss_err_set(G->err, -ESTALE,
				   "snapshot %s (%s) is gone and so is its directory %s: was it "
				   "moved? gc deletes nothing; if it was deleted, run 'snapstream rm "
				   "%s' to drop its ref",
				   uri, via, path, uri);
		free(path);
		return moved ? -ESTALE : 0;
	}
	if (r)
		return ss_err_set(G->err, r,
				  "%s (%s); gc deletes nothing while a snapshot cannot be read: "
				  "repair it, or remove it with 'snapstream rm %s'",
				  me.msg, via, uri);
	for (size_t p = 0; !r && p < m->npacks; p++)
		r = add_refd(G, m->pack_ids[p]);
	ss_manifest_free(m);
	if (r)
		return ss_err_set(G->err, r, "out of memory");
	return 0;
}

static int stop_at_first(void *arg, const char *key, uint64_t size)
{
	(void)key;
	(void)size;
	*(bool *)arg = true;
	return 1;
}

/* Whether anything lies under prefix (one LIST page at most). */
static int any_under(struct gc *G, const char *prefix, bool *found)
{
	struct ss_err e = {0};
	*found = false;
	struct ss_req r = {.kind = SS_REQ_LIST, .key = prefix, .on_key = stop_at_first,
			   .arg = found, .err = &e};
	int res = ss_call(G->b, G->loop, &r, &G->st->requests);
	if (res < 0)
		return ss_err_set(G->err, res, "cannot list %s/%s: %s", G->opts->store, prefix,
				  e.msg[0] ? e.msg : strerror(-res));
	return 0;
}

static int list(struct gc *G, const char *prefix, struct ss_keylist *kv)
{
	return ss_list_keys(G->b, G->loop, G->opts->store, prefix, kv, &G->st->requests, G->err);
}

static int expired_add(struct gc *G, char *key)
{
	if (SS_GROW(G->expired, G->expired_cap, G->nexpired + 1, 16))
		return -ENOMEM;
	G->expired[G->nexpired++] = key;
	return 0;
}

/* Records of removed snapshots: their packs stay referenced for G. */
static int mark_removed(struct gc *G)
{
	struct ss_keylist kv = {0};
	int r = list(G, SS_GC_REMOVED_PREFIX, &kv);
	for (size_t i = 0; !r && i < kv.n; i++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		struct ss_err e = {0};
		r = ss_get_object(G->b, G->loop, kv.keys[i], RECORD_MAX, &buf, &len, &G->st->requests,
				  &e);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		struct ss_tombstone t;
		if (!r)
			r = ss_tombstone_decode(buf, len, &t, &e);
		free(buf);
		if (r) {
			ss_err_set(G->err, r,
				   "cannot read %s/%s: %s; gc deletes nothing while it cannot tell "
				   "what a removed snapshot used (delete that record by hand once no "
				   "push uses the removed snapshot as its parent)",
				   G->opts->store, kv.keys[i], e.msg);
			break;
		}
		if (!G->no_grace && t.removed_ns + G->grace_ns > G->t0) {
			G->st->tombstones++;
			for (size_t p = 0; !r && p < t.npacks; p++)
				r = add_refd(G, t.packs[p]);
			if (r)
				ss_err_set(G->err, r, "out of memory");
		} else if ((r = expired_add(G, kv.keys[i]))) {
			ss_err_set(G->err, r, "out of memory");
		} else {
			kv.keys[i] = NULL;
		}
		ss_tombstone_free(&t);
	}
	ss_keylist_free(&kv);
	return r;
}

/* Keep what every live snapshot references (live.c), and what removed
 * ones did for the grace period. */
static int mark(struct gc *G)
{
	struct ss_live lv;
	int r = ss_live_read(G->b, G->loop, G->opts->store, true, &lv, &G->st->requests, G->err);
	if (r)
		return r;
	G->prog.phase = "mark";
	G->prog.items_total = lv.n;
	for (size_t i = 0; !r && i < lv.n; i++) {
		bool found;
		char via[96];
		snprintf(via, sizeof(via), "named by %s", lv.keys[i]);
		r = mark_snapshot(G, lv.uris[i], via, &found);
		if (found)
			G->st->snapshots++;
		else if (!r)
			G->st->refs_dangling++;
		G->prog.items_done = i + 1;
		ss_tick(&G->cfg, &G->ticker, &G->prog, false);
	}
	/* Beside a local .snapstream: a directory moved with its store, whose
	 * refs name the old place, keeps its packs. */
	for (size_t i = 0; !r && i < lv.ns; i++) {
		bool found;
		if (!(r = mark_snapshot(G, lv.sib[i], "found beside the store", &found)) && found)
			G->st->snapshots++;
	}
	ss_live_free(&lv);
	if (!r)
		r = mark_removed(G);
	if (G->nrefd)
		qsort(G->refd, G->nrefd, 16, cmp_id);
	return r;
}

/* ---------------------------------------------------------------- sweep */

static int list_packs(struct gc *G)
{
	struct ss_keylist kv = {0};
	int r = list(G, "packs/", &kv);
	for (size_t i = 0; !r && i < kv.n; i++) {
		const char *base = strrchr(kv.keys[i], '/');
		uint8_t id[16];
		if (!base || ss_unhex(base + 1, id, 16))
			continue;   /* not a pack */
		if (SS_GROW(G->packs, G->packs_cap, G->npacks + 1, 256)) {
			r = ss_err_set(G->err, -ENOMEM, "out of memory");
			break;
		}
		G->packs[G->npacks++] = (struct gpack){.size = kv.sizes[i]};
		memcpy(G->packs[G->npacks - 1].id, id, 16);
	}
	ss_keylist_free(&kv);
	if (G->npacks)   /* id is the first member: sort and search by it */
		qsort(G->packs, G->npacks, sizeof(*G->packs), cmp_id);
	return r;
}

static struct gpack *find_pack(const struct gc *G, const uint8_t id[16])
{
	return G->npacks ? bsearch(id, G->packs, G->npacks, sizeof(*G->packs), cmp_id) : NULL;
}

/* Hidden earlier, gone from packs/ now (a gc stopped after deleting it),
 * and not referenced: its index entries still have to go. */
static bool hidden_gone(const struct gc *G, const struct ss_gc_hidden *h)
{
	return !find_pack(G, h->id) && !is_refd(G, h->id);
}

/* Decide each pack's fate; returns the number to delete. */
static size_t judge(struct gc *G)
{
	size_t ndel = 0;
	for (size_t i = 0; i < G->npacks; i++) {
		struct gpack *p = &G->packs[i];
		const struct ss_gc_hidden *h = ss_gcstate_find(&G->old, p->id);
		G->st->packs++;
		G->st->pack_bytes += p->size;
		if (is_refd(G, p->id)) {
			p->fate = KEEP;
			G->st->packs_referenced++;
			if (h)
				G->st->packs_rescued++;
			continue;
		}
		p->since = h ? h->since_ns : 0;
		if (G->no_grace || (h && h->since_ns + G->grace_ns <= G->t0)) {
			p->fate = DELETE;
			ndel++;
		} else {
			p->fate = PENDING;
			G->st->packs_pending++;
			G->st->bytes_pending += p->size;
			int64_t when = (h ? h->since_ns : G->t0) + G->grace_ns;
			if (!G->st->next_unix_ns || when < G->st->next_unix_ns)
				G->st->next_unix_ns = when;
		}
	}
	return ndel;
}

/* gc/state: every unreferenced pack still present, and (until this run
 * has removed them from the index) those it deletes or found gone. */
static int write_state(struct gc *G, bool final)
{
	struct ss_gcstate ns = {0};
	int64_t now = ss_wall_ns();
	int r = 0;
	for (size_t i = 0; !r && i < G->npacks; i++) {
		struct gpack *p = &G->packs[i];
		if (p->fate == KEEP || (final && p->deleted))
			continue;
		if (!p->since) {
			p->since = now;   /* hidden from now on */
			p->fresh = true;
		}
		r = ss_gcstate_add(&ns, p->id, p->since);
	}
	/* Hidden packs already gone stay hidden until no index lists them. */
	for (size_t i = 0; !final && !r && i < G->old.n; i++)
		if (hidden_gone(G, &G->old.packs[i]))
			r = ss_gcstate_add(&ns, G->old.packs[i].id, G->old.packs[i].since_ns);
	uint8_t *buf = NULL;
	size_t len = 0;
	struct ss_err e = {0};
	if (!r)
		r = ss_gcstate_encode(&ns, &buf, &len);
	if (!r)
		r = ss_put_object(G->b, G->loop, SS_GC_STATE_KEY, buf, len, 0, &G->st->requests, &e);
	free(buf);
	ss_gcstate_free(&ns);
	if (r)
		return ss_err_set(G->err, r, "cannot write %s/%s: %s", G->opts->store,
				  SS_GC_STATE_KEY, e.msg[0] ? e.msg : strerror(-r));
	/* A push that loaded the store while the write was in flight may still
	 * have seen these packs: the grace period counts from now, when the
	 * hide is surely visible (the final write records it). */
	if (!final) {
		now = ss_wall_ns();
		for (size_t i = 0; i < G->npacks; i++)
			if (G->packs[i].fresh)
				G->packs[i].since = now;
	}
	return 0;
}

/* Whether id is being removed: deleted now, or hidden and already gone. */
static bool going(const struct gc *G, const uint8_t id[16])
{
	const struct gpack *p = find_pack(G, id);
	if (p)
		return p->fate == DELETE;
	const struct ss_gc_hidden *h = ss_gcstate_find(&G->old, id);
	return h && hidden_gone(G, h);
}

/* No index object may list a pack once it is deleted: rewrite those that
 * do without it (new object first, then the old one goes). A damaged index
 * is deleted: index objects only save reading packs' own trailers. */
static int rewrite_index(struct gc *G)
{
	struct ss_keylist kv = {0};
	int r = list(G, "index/", &kv);
	for (size_t i = 0; !r && i < kv.n; i++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		struct ss_err e = {0};
		r = ss_get_object(G->b, G->loop, kv.keys[i], SS_INDEX_MAX_SIZE, &buf, &len,
				  &G->st->requests, &e);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		if (r) {
			ss_err_set(G->err, r, "cannot read %s/%s: %s", G->opts->store, kv.keys[i],
				   e.msg[0] ? e.msg : strerror(-r));
			break;
		}
		struct ss_index_pack *ip = NULL;
		uint32_t np = 0;
		bool damaged;
		if (G->sealed && !G->cfg.ids.crypt) {
			/* Without the key a sealed object cannot be rewritten,
			 * only kept or deleted whole by the packs it lists in the
			 * clear: the packs of a deleted one that stay describe
			 * themselves, and the next push's index object lists
			 * them again. */
			uint8_t id[16];
			const uint8_t(*pids)[16] = NULL;
			uint32_t n = 0;
			damaged = ss_sealed_index_peek(buf, len, id, &pids, &n, &e) != 0;
			bool hit = false;
			for (uint32_t p = 0; !damaged && !hit && p < n; p++)
				hit = going(G, pids[p]);
			free(buf);
			if (!damaged && !hit)
				continue;
			G->st->index_deleted++;
			struct ss_req d = {.kind = SS_REQ_DELETE, .key = kv.keys[i], .err = &e};
			r = ss_call(G->b, G->loop, &d, &G->st->requests);
			if (r == -ENOENT)
				r = 0;
			if (r)
				ss_err_set(G->err, r, "cannot delete %s/%s: %s", G->opts->store,
					   kv.keys[i], e.msg[0] ? e.msg : strerror(-r));
			continue;
		}
		damaged = ss_index_read(&G->cfg.ids, kv.keys[i], buf, len, &ip, &np, &e) != 0;
		free(buf);
		uint32_t keep = 0;
		for (uint32_t p = 0; p < np; p++)
			if (!going(G, ip[p].pack_id))
				ip[keep++] = ip[p];
			else
				free(ip[p].entries);
		if (!damaged && keep == np) {
			ss_index_free(ip, np);
			continue;
		}
		if (keep) {
			r = ss_index_put(G->b, G->loop, &G->cfg.ids, ip, keep, &G->st->requests, &e);
			if (r) {
				ss_index_free(ip, keep);
				ss_err_set(G->err, r, "cannot rewrite %s/%s: %s", G->opts->store,
					   kv.keys[i], e.msg[0] ? e.msg : strerror(-r));
				break;
			}
			G->st->index_rewritten++;
		} else {
			G->st->index_deleted++;
		}
		ss_index_free(ip, keep);
		struct ss_req d = {.kind = SS_REQ_DELETE, .key = kv.keys[i], .err = &e};
		r = ss_call(G->b, G->loop, &d, &G->st->requests);
		if (r == -ENOENT)
			r = 0;
		if (r)
			ss_err_set(G->err, r, "cannot delete %s/%s: %s", G->opts->store, kv.keys[i],
				   e.msg[0] ? e.msg : strerror(-r));
	}
	ss_keylist_free(&kv);
	return r;
}

static int delete_packs(struct gc *G, size_t ndel)
{
	struct ss_req *reqs = calloc(ndel ? ndel : 1, sizeof(*reqs));
	char (*keys)[64] = calloc(ndel ? ndel : 1, sizeof(*keys));
	size_t *idx = calloc(ndel ? ndel : 1, sizeof(*idx));
	if (!reqs || !keys || !idx) {
		free(reqs);
		free(keys);
		free(idx);
		return ss_err_set(G->err, -ENOMEM, "out of memory");
	}
	size_t n = 0;
	uint64_t bytes = 0;
	for (size_t i = 0; i < G->npacks; i++)
		if (G->packs[i].fate == DELETE) {
			ss_pack_key(G->packs[i].id, keys[n]);
			reqs[n] = (struct ss_req){.kind = SS_REQ_DELETE, .key = keys[n]};
			bytes += G->packs[i].size;
			idx[n++] = i;
		}
	G->prog.phase = "sweep";
	G->prog.items_done = 0;
	G->prog.items_total = n;
	G->prog.bytes_done = 0;
	G->prog.bytes_total = bytes;
	ss_tick(&G->cfg, &G->ticker, &G->prog, true);
	int r = 0;
	/* In slices, so progress moves and an error stops early. */
	for (size_t base = 0; !r && base < n; base += 256) {
		size_t cnt = SS_MIN(n - base, (size_t)256);
		r = ss_call_many(G->b, G->loop, reqs + base, cnt, &G->st->requests);
		if (r) {
			ss_err_set(G->err, r, "event loop failed: %s", strerror(-r));
			break;
		}
		for (size_t k = base; k < base + cnt; k++) {
			int res = reqs[k].op.res;
			struct gpack *p = &G->packs[idx[k]];
			if (res == 0 || res == -ENOENT) {
				p->deleted = true;
				G->st->packs_deleted++;
				G->st->bytes_deleted += p->size;
				G->prog.bytes_done += p->size;
			} else if (!r) {
				r = ss_err_set(G->err, res, "cannot delete %s/%s: %s", G->opts->store,
					       keys[k], strerror(-res));
			}
		}
		G->prog.items_done = base + cnt;
		ss_tick(&G->cfg, &G->ticker, &G->prog, false);
	}
	free(reqs);
	free(keys);
	free(idx);
	return r;
}

static void delete_expired(struct gc *G)
{
	/* Best effort: an expired record left behind only protects a little
	 * longer, and the next gc removes it. */
	for (size_t i = 0; i < G->nexpired; i++) {
		struct ss_req d = {.kind = SS_REQ_DELETE, .key = G->expired[i]};
		ss_call(G->b, G->loop, &d, &G->st->requests);
	}
}

int ss_gc_impl(const struct ss_gc_opts *opts, const struct ss_config_in *config, struct ss_gc_stats *st,
	  char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_gc_stats local_st;
	struct gc *G = calloc(1, sizeof(*G));
	uint64_t t0 = ss_now_ns();
	int r;
	st = ss_stats_init(st, &local_st, sizeof(*st));
	if (!G) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	G->opts = opts;
	G->st = st;
	G->err = &err;
	if (!opts || !opts->store || !*opts->store) {
		r = ss_err_set(&err, -EINVAL, "gc needs a store");
		goto out;
	}
	if ((r = ss_cfg_resolve(config, &G->cfg, &err)))
		goto out;
	G->no_grace = opts->grace_seconds < 0;
	G->grace_ns = (opts->grace_seconds ? opts->grace_seconds : SS_GC_GRACE_DEFAULT_SECONDS) *
		      (int64_t)1000000000;
	if ((r = ss_loop_open(256, &G->loop, &err)))
		goto out;
	if ((r = ss_store_backend_open(opts->store, G->loop, &G->cfg, &G->b, &err)))
		goto out;
	/* No packs and no index: nothing to collect, and nothing is written
	 * (a --store that names some other directory stays untouched). */
	bool packs = false, index = false;
	if ((r = any_under(G, "packs/", &packs)) || (!packs && (r = any_under(G, "index/", &index))))
		goto out;
	if (!packs && !index)
		goto out;
	if ((r = read_config(G)))
		goto out;
	if (!opts->dry_run && (r = lock_take(G)))
		goto out;
	G->t0 = ss_wall_ns();
	if ((r = ss_gcstate_load(G->b, G->loop, opts->store, &G->old, &st->requests, &err)))
		goto out;
	if ((r = mark(G)) || (r = list_packs(G)))
		goto out;
	size_t ndel = judge(G);
	if (opts->dry_run) {
		for (size_t i = 0; i < G->npacks; i++)
			if (G->packs[i].fate == DELETE) {
				st->packs_deleted++;
				st->bytes_deleted += G->packs[i].size;
			}
		goto out;
	}
	/* Hide first: from here on no push offers these packs for dedup. */
	if ((r = write_state(G, false)))
		goto out;
	bool gone = false;
	for (size_t i = 0; !gone && i < G->old.n; i++)
		gone = hidden_gone(G, &G->old.packs[i]);
	if ((ndel || gone) && (r = rewrite_index(G)))
		goto out;
	if (ndel && (r = delete_packs(G, ndel)))
		goto out;
	if ((r = write_state(G, true)))
		goto out;
	delete_expired(G);
out:
	if (G) {
		if (G->b)
			lock_drop(G);
		for (size_t i = 0; i < G->nexpired; i++)
			free(G->expired[i]);
		free(G->expired);
		free(G->refd);
		free(G->packs);
		ss_gcstate_free(&G->old);
		ss_backend_free(G->b);
		ss_loop_free(G->loop);
		ss_cfg_wipe(&G->cfg);
		free(G);
	}
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}
