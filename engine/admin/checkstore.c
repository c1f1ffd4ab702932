/* check's reading of a store's own objects: its config and gc records,
 * every pack's trailer and index, and the index objects compared with them
 * (check.c has the order and why). */
#include "check.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int check_cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static int list_keys(struct check *C, const char *prefix, ss_list_fn fn, void *arg)
{
	struct ss_err e = {0};
	struct ss_req r = {.kind = SS_REQ_LIST, .key = prefix, .on_key = fn, .arg = arg, .err = &e};
	int res = ss_call(C->b, C->loop, &r, &C->st->requests);
	if (res < 0)
		return ss_err_set(C->err, res, "cannot list %s/%s: %s", C->store, prefix,
				  e.msg[0] ? e.msg : strerror(-res));
	return 0;
}

/* ---------------------------------------------------------------- pack table */

struct cpack *check_pack_find(const struct check *C, const uint8_t id[16])
{
	return C->npacks ? bsearch(id, C->packs, C->npacks, sizeof(*C->packs), check_cmp_id) : NULL;
}

static int pack_append(struct check *C, const uint8_t id[16], uint64_t size)
{
	if (SS_GROW(C->packs, C->packs_cap, C->npacks + 1, 256))
		return -ENOMEM;
	struct cpack *p = &C->packs[C->npacks++];
	memset(p, 0, sizeof(*p));
	memcpy(p->id, id, 16);
	p->size = size;
	p->hidden = ss_gcstate_find(&C->hidden, id) != NULL;
	return 0;
}

void check_pack_clear(struct cpack *p)
{
	free(p->entries);
	free(p->bad);
	free(p->why);
	p->entries = NULL;
	p->bad = NULL;
	p->why = NULL;
}

static void pack_damaged(struct cpack *p, const char *why)
{
	check_pack_clear(p);
	p->state = P_DAMAGED;
	p->why = strdup(why);
}

/* Judge a pack from the tail of it that a GET returned: got bytes ending
 * at its end, of size bytes in all. Returns 1 when the index lies further
 * back than got reaches (read the last *need bytes with a second GET),
 * else 0. */
static int pack_tail(struct check *C, struct cpack *p, uint8_t *buf, size_t got, uint64_t size,
		     size_t *need)
{
	struct ss_err e = {0};
	p->size = size;
	int r = ss_pack_tail_read(C->ids, p->id, buf, got, size, need, &p->count, &p->data_end,
				  &p->entries, &e);
	if (r == 1)
		return 1;
	if (r == -ENOMEM)
		return check_oom(C);
	if (r) {
		pack_damaged(p, e.msg);
		return 0;
	}
	p->state = P_OK;
	return 0;
}

/* What a GET of pack p answered (tail: the first suffix GET, else the
 * second, longer one). Returns 1 when a second GET is needed (*need
 * bytes), 0 when p is judged, or -errno when the store could not be
 * read. */
static int pack_answer(struct check *C, struct cpack *p, const struct ss_req *q, uint8_t *buf,
		       bool tail, size_t *need)
{
	int res = q->op.res;
	if (res == -ENOENT) {
		/* Gone since the listing (a gc), or never there. */
		check_pack_clear(p);
		p->state = P_MISSING;
		return 0;
	}
	if (res == -EBADMSG) {
		/* The store answered with other bytes than it said it holds
		 * (a torn object): a property of this pack, not of the store. */
		pack_damaged(p, "its trailer cannot be read: the store returns fewer bytes than "
				 "its size (a torn upload)");
		return 0;
	}
	if (res < 0)
		return ss_err_set(C->err, res, "cannot read %s/%s: %s", C->store, q->key,
				  strerror(-res));
	if (!tail && ((uint64_t)res != q->len || q->size != p->size)) {
		pack_damaged(p, "changed while being read");
		return 0;
	}
	int a = pack_tail(C, p, buf, (size_t)res, q->size, need);
	if (a == 1 && !tail) {
		pack_damaged(p, "changed while being read");
		return 0;
	}
	return a;
}

/* Read the trailer and index of packs v[0..n): a suffix GET each that
 * usually holds both, then a second GET for the indexes it did not. */
static int read_packs(struct check *C, struct cpack **v, size_t n)
{
	struct ss_req *reqs = calloc(n ? n : 1, sizeof(*reqs));
	uint8_t **bufs = calloc(n ? n : 1, sizeof(*bufs));
	char (*keys)[64] = calloc(n ? n : 1, sizeof(*keys));
	size_t *again = calloc(n ? n : 1, sizeof(*again));
	size_t *needs = calloc(n ? n : 1, sizeof(*needs));
	size_t nagain = 0;
	int r = 0;
	if (!reqs || !bufs || !keys || !again || !needs) {
		r = check_oom(C);
		goto out;
	}
	for (size_t i = 0; !r && i < n; i++) {
		size_t len = (size_t)SS_MIN(SS_MAX(v[i]->size, (uint64_t)SS_PACK_TRAILER_SIZE),
					    (uint64_t)TAIL_GUESS);
		ss_pack_key(v[i]->id, keys[i]);
		if (!(bufs[i] = malloc(len)))
			r = check_oom(C);
		reqs[i] = (struct ss_req){.kind = SS_REQ_GET, .flags = SS_GET_SUFFIX, .key = keys[i],
					  .len = len, .buf = bufs[i]};
	}
	if (!r && (r = ss_call_many(C->b, C->loop, reqs, n, &C->st->requests)))
		ss_err_set(C->err, r, "event loop failed: %s", strerror(-r));
	for (size_t i = 0; !r && i < n; i++) {
		size_t need = 0;
		int a = pack_answer(C, v[i], &reqs[i], bufs[i], true, &need);
		if (a < 0)
			r = a;
		else if (a) {
			needs[nagain] = need;
			again[nagain++] = i;
		}
	}
	/* The indexes larger than the tail read: exactly them, from the end. */
	for (size_t k = 0; !r && k < nagain; k++) {
		size_t i = again[k];
		free(bufs[i]);
		if (!(bufs[i] = malloc(needs[k])))
			r = check_oom(C);
		reqs[k] = (struct ss_req){.kind = SS_REQ_GET, .flags = SS_GET_SUFFIX, .key = keys[i],
					  .len = needs[k], .buf = bufs[i]};
	}
	if (!r && nagain && (r = ss_call_many(C->b, C->loop, reqs, nagain, &C->st->requests)))
		ss_err_set(C->err, r, "event loop failed: %s", strerror(-r));
	for (size_t k = 0; !r && k < nagain; k++) {
		size_t need = 0;
		int a = pack_answer(C, v[again[k]], &reqs[k], bufs[again[k]], false, &need);
		r = a < 0 ? a : 0;
	}
out:
	for (size_t i = 0; bufs && i < n; i++)
		free(bufs[i]);
	free(bufs);
	free(reqs);
	free(keys);
	free(again);
	free(needs);
	return r;
}

/* Make sure every id in ids has a row, reading the packs the listing did
 * not show (written since, or missing). Pointers into C->packs do not
 * survive this call. */
int check_ensure_packs(struct check *C, const uint8_t (*ids)[16], size_t n)
{
	size_t first = C->npacks;
	int r = 0;
	for (size_t i = 0; !r && i < n; i++) {
		if (check_pack_find(C, ids[i]))
			continue;
		bool dup = false;
		for (size_t k = first; !dup && k < C->npacks; k++)
			dup = memcmp(C->packs[k].id, ids[i], 16) == 0;
		if (!dup && pack_append(C, ids[i], TAIL_GUESS))
			r = check_oom(C);
	}
	size_t added = C->npacks - first;
	if (!r && added) {
		struct cpack **v = malloc(sizeof(*v) * added);
		if (!v)
			return check_oom(C);
		for (size_t k = 0; k < added; k++)
			v[k] = &C->packs[first + k];
		for (size_t base = 0; !r && base < added; base += PACK_BATCH)
			r = read_packs(C, v + base, SS_MIN(added - base, (size_t)PACK_BATCH));
		free(v);
	}
	if (added)
		qsort(C->packs, C->npacks, sizeof(*C->packs), check_cmp_id);
	return r;
}

/* ---------------------------------------------------------------- records */

int check_read_config(struct check *C)
{
	uint8_t *p = NULL;
	size_t n = 0;
	struct ss_err e = {0};
	C->ids = &ss_idkey_plain;
	int r = ss_get_object(C->b, C->loop, SS_STORE_CONFIG_KEY, CONFIG_MAX, &p, &n,
			      &C->st->requests, &e);
	if (r == -ENOENT) {
		C->config_ok = true;   /* no config: plain ids */
		r = 0;
	} else if (r == 0 || r == -EFBIG) {
		struct ss_store_config sc = {0};
		if (!r)
			r = ss_store_config_parse(p, n, &sc, &e);
		C->keyed = sc.keyed;
		memcpy(C->key_check, sc.check, 16);
		C->sealed = sc.sealed;
		if (r == -EPROTONOSUPPORT) {
			ss_err_set(C->err, r, "store %s: %s", C->store, e.msg);
		} else if (r) {
			r = check_finding(C, SS_CHECK_RECORD_DAMAGED, true, SS_STORE_CONFIG_KEY, NULL, 0, n,
				    "the store's config object is damaged (%s): pushes refuse the "
				    "store until it is rewritten (it says whether chunk ids are "
				    "keyed, which the snapshots' manifests record too)",
				    e.msg) ? 0 : -ENOMEM;
		} else {
			C->config_ok = true;
		}
	} else {
		ss_err_set(C->err, r, "cannot read %s/%s: %s", C->store, SS_STORE_CONFIG_KEY,
			   e.msg[0] ? e.msg : strerror(-r));
	}
	bool have_key = C->cfg.ids.keyed;
	/* A wrong key, or a key for a plain store, is refused as every
	 * operation refuses it; no key is fine until chunks are hashed, except
	 * in a sealed store, whose pack indexes and index objects only the
	 * key opens. */
	if (!r && C->config_ok && (C->keyed || have_key)) {
		r = ss_idkey_check_store(&C->cfg.ids, p, n, C->store, NULL, C->err);
		if (r == -ENOKEY && !C->opts->deep && !C->sealed) {
			ss_err_clear(C->err);
			r = 0;
		} else if (!r) {
			C->ids = &C->cfg.ids;
		}
	}
	free(p);
	if (r)
		return r;
	if (C->opts->deep && !C->config_ok)
		return ss_err_set(C->err, -EBADMSG,
				  "store %s: its config object is damaged, so a deep check cannot "
				  "tell how chunk ids are computed; run check without --deep",
				  C->store);
	return 0;
}

/* The lock, and gc/state (before the listing, so each row knows whether
 * gc has hidden it). */
int check_read_gc_state(struct check *C)
{
	struct ss_req lk = {.kind = SS_REQ_STAT, .key = SS_GC_LOCK_KEY};
	int r = ss_call(C->b, C->loop, &lk, &C->st->requests);
	if (r == 0 && !C->locked &&
	    !check_finding(C, SS_CHECK_GC_RUNNING, false, SS_GC_LOCK_KEY, NULL, 0, 0,
		     "a gc (or check --check_repair) holds the store's lock: packs it deletes while "
		     "check runs may be reported missing; check again once it is done"))
		return -ENOMEM;
	struct ss_err e = {0};
	r = ss_gcstate_load(C->b, C->loop, C->store, &C->hidden, &C->st->requests, &e);
	if (r == -EBADMSG || r == -EFBIG) {
		C->state_finding = check_finding(C, SS_CHECK_RECORD_DAMAGED, true, SS_GC_STATE_KEY, NULL, 0,
					   0, "%s; every push refuses the store meanwhile", e.msg);
		if (!C->state_finding)
			return -ENOMEM;
	} else if (r) {
		return ss_err_set(C->err, r, "%s", e.msg);
	}
	return 0;
}

/* Records of removed snapshots (after the listing: their packs are
 * marked on the rows). */
int check_read_tombstones(struct check *C)
{
	struct ss_err e = {0};
	struct ss_keylist keys = {0};
	int r = ss_list_keys(C->b, C->loop, C->store, SS_GC_REMOVED_PREFIX, &keys, &C->st->requests,
			     C->err);
	if (r)
		goto out;
	for (size_t i = 0; !r && i < keys.n; i++) {
		uint8_t *buf = NULL;
		size_t len = 0;
		struct ss_tombstone t;
		ss_err_clear(&e);
		r = ss_get_object(C->b, C->loop, keys.keys[i], RECORD_MAX, &buf, &len, &C->st->requests,
				  &e);
		if (r == -ENOENT) {
			r = 0;   /* expired and deleted by a gc meanwhile */
			continue;
		}
		if (!r || r == -EFBIG)
			r = r ? r : ss_tombstone_decode(buf, len, &t, &e);
		free(buf);
		if (r == -EBADMSG || r == -EFBIG) {
			size_t fi = check_finding(C, SS_CHECK_RECORD_DAMAGED, true, keys.keys[i], NULL, 0, len,
					    "%s: gc deletes nothing while it cannot tell what a "
					    "removed snapshot used",
					    e.msg);
			void *a = realloc(C->tomb_bad, sizeof(*C->tomb_bad) * (C->ntomb_bad + 1));
			void *b = a ? realloc(C->tomb_bad_finding,
					      sizeof(*C->tomb_bad_finding) * (C->ntomb_bad + 1))
				    : NULL;
			if (a)
				C->tomb_bad = a;
			if (b)
				C->tomb_bad_finding = b;
			if (!fi || !a || !b) {
				r = check_oom(C);
				break;
			}
			C->tomb_bad[C->ntomb_bad] = keys.keys[i];
			C->tomb_bad_finding[C->ntomb_bad++] = fi;
			keys.keys[i] = NULL;
			r = 0;
			continue;
		}
		if (r) {
			ss_err_set(C->err, r, "cannot read %s/%s: %s", C->store, keys.keys[i],
				   e.msg[0] ? e.msg : strerror(-r));
			break;
		}
		for (size_t p = 0; p < t.npacks; p++) {
			/* Remembered on the rows of packs in the store (the listing
			 * comes first); others are gone already. */
			struct cpack *cp = check_pack_find(C, t.packs[p]);
			if (cp)
				cp->tomb = true;
		}
		ss_tombstone_free(&t);
	}
out:
	ss_keylist_free(&keys);
	return r;
}

/* ---------------------------------------------------------------- packs */

struct listing {
	struct check *C;
	int err;
};

static int collect_pack(void *arg, const char *key, uint64_t size)
{
	struct listing *ls = arg;
	struct check *C = ls->C;
	const char *base = strrchr(key, '/');
	uint8_t id[16];
	char want[64];
	if (base && !ss_unhex(base + 1, id, 16)) {
		ss_pack_key(id, want);
		if (!strcmp(want, key))
			return pack_append(C, id, size) ? (ls->err = -ENOMEM) : 0;
	}
	/* Not a pack's name: pushes and gc ignore it, and so does repair. */
	if (!check_finding(C, SS_CHECK_PACK_FOREIGN, false, key, NULL, 0, size,
		     "not a pack name (packs/<2 hex>/<32 hex>): ignored by push, pull and gc"))
		return ls->err = -ENOMEM;
	return 0;
}

int check_read_all_packs(struct check *C)
{
	struct listing ls = {.C = C};
	int r = list_keys(C, "packs/", collect_pack, &ls);
	if (ls.err)
		return check_oom(C);
	if (r)
		return r;
	if (C->npacks)
		qsort(C->packs, C->npacks, sizeof(*C->packs), check_cmp_id);
	/* Two listings of one pack (a retried LIST page): keep one row. */
	size_t k = 0;
	for (size_t i = 0; i < C->npacks; i++)
		if (!k || memcmp(C->packs[k - 1].id, C->packs[i].id, 16))
			C->packs[k++] = C->packs[i];
	C->npacks = k;
	struct cpack **v = malloc(sizeof(*v) * (C->npacks ? C->npacks : 1));
	if (!v)
		return check_oom(C);
	for (size_t i = 0; i < C->npacks; i++) {
		C->packs[i].listed = true;
		v[i] = &C->packs[i];
	}
	C->prog.phase = "packs";
	C->prog.items_total = C->npacks;
	for (size_t base = 0; !r && base < C->npacks; base += PACK_BATCH) {
		r = read_packs(C, v + base, SS_MIN(C->npacks - base, (size_t)PACK_BATCH));
		C->prog.items_done = SS_MIN(base + PACK_BATCH, C->npacks);
		ss_tick(&C->cfg, &C->ticker, &C->prog, false);
	}
	free(v);
	return r;
}

/* ---------------------------------------------------------------- index */

/* One index object: every pack it lists must exist, be readable, and be
 * described exactly as the pack describes itself. */
static int check_index(struct check *C, struct cindex *x)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	struct ss_err e = {0};
	int r = ss_get_object(C->b, C->loop, x->key, SS_INDEX_MAX_SIZE, &buf, &len,
			      &C->st->requests, &e);
	if (r == -ENOENT)
		return 0;   /* replaced by a concurrent gc */
	C->st->index_objects++;
	struct ss_index_pack *ip = NULL;
	uint32_t np = 0;
	if (!r)
		r = ss_index_read(C->ids, x->key, buf, len, &ip, &np, &e);
	free(buf);
	if (r == -EBADMSG || r == -EFBIG) {
		C->st->index_damaged++;
		x->finding = check_finding(C, SS_CHECK_INDEX_DAMAGED, true, x->key, NULL, 0, len,
				     "index object is damaged (%s): pushes skip it and read the "
				     "packs it listed themselves; the packs describe themselves, so "
				     "it can be rebuilt",
				     e.msg);
		return x->finding ? 0 : -ENOMEM;
	}
	if (r)
		return ss_err_set(C->err, r, "cannot read %s/%s: %s", C->store, x->key,
				  e.msg[0] ? e.msg : strerror(-r));
	uint8_t(*ids)[16] = malloc(16 * (size_t)(np ? np : 1));
	if (!ids) {
		ss_index_free(ip, np);
		return check_oom(C);
	}
	for (uint32_t p = 0; p < np; p++)
		memcpy(ids[p], ip[p].pack_id, 16);
	r = check_ensure_packs(C, (const uint8_t(*)[16])ids, np);
	free(ids);
	const char *why = NULL;
	char hex[33] = "";
	for (uint32_t p = 0; !r && p < np; p++) {
		struct cpack *cp = check_pack_find(C, ip[p].pack_id);
		const char *w = NULL;
		if (cp->state == P_MISSING)
			w = "lists a pack that is not in the store";
		else if (cp->state == P_DAMAGED)
			w = "lists a damaged pack";
		else if (cp->size != ip[p].pack_size || cp->count != ip[p].count ||
			 !ss_pack_entries_equal(cp->entries, ip[p].entries, cp->count))
			w = "disagrees with the pack's own index";
		cp->in_index = true;
		if (w && !why) {
			why = w;
			ss_hex(ip[p].pack_id, 16, hex);
		}
	}
	if (!r && why) {
		C->st->index_damaged++;
		x->finding = check_finding(C, SS_CHECK_INDEX_STALE, true, x->key, NULL, 0, len,
				     "index object %s (pack %s, and maybe more): pushes would "
				     "reuse chunks that cannot be read; the packs describe "
				     "themselves, so it can be rebuilt",
				     why, hex);
		if (!x->finding)
			r = -ENOMEM;
	} else if (!r) {
		C->st->index_ok++;
		for (uint32_t p = 0; p < np; p++)
			check_pack_find(C, ip[p].pack_id)->indexed = true;
	}
	ss_index_free(ip, np);
	return r;
}

/* Every index object not read yet: all of them the first time, and
 * again before packs are judged, since a push that committed while
 * snapshots were read wrote its index object after the first listing. */
int check_read_all_index(struct check *C)
{
	struct ss_keylist keys = {0};
	int r = ss_list_keys(C->b, C->loop, C->store, "index/", &keys, &C->st->requests, C->err);
	void *a = r ? NULL : realloc(C->idx, sizeof(*C->idx) * (C->nidx + keys.n + 1));
	if (!r && !a)
		r = check_oom(C);
	if (a)
		C->idx = a;
	C->prog.phase = "index";
	C->prog.items_total = keys.n;
	for (size_t i = 0; !r && i < keys.n; i++) {
		bool seen = false;
		for (size_t k = 0; !seen && k < C->nidx; k++)
			seen = strcmp(C->idx[k].key, keys.keys[i]) == 0;
		if (seen)
			continue;
		C->idx[C->nidx] = (struct cindex){.key = keys.keys[i]};
		keys.keys[i] = NULL;
		r = check_index(C, &C->idx[C->nidx++]);
		C->prog.items_done = i + 1;
		ss_tick(&C->cfg, &C->ticker, &C->prog, false);
	}
	ss_keylist_free(&keys);
	return r;
}
