/* check --repair: rebuild what the packs can rebuild, under gc/lock
 * (docs/DESIGN.md, "Checking and repairing a store"). */
#include "check.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- check_repair */

/* New index objects covering every readable pack (with no damaged chunk)
 * that no kept index object lists, written before any damaged or stale
 * object is deleted: a push listing index/ meanwhile sees the old object,
 * the new one or both, and reads the trailers of packs it finds in
 * neither, so no pack is ever hidden from it. */
static int repair_index(struct check *C)
{
	bool bad = C->unindexed_finding != 0;
	for (size_t i = 0; i < C->nidx; i++)
		bad |= C->idx[i].finding != 0;
	if (!bad)
		return 0;
	struct ss_index_pack *v = calloc(INDEX_PACKS_MAX, sizeof(*v));
	if (!v)
		return check_oom(C);
	int r = 0;
	size_t i = 0;
	while (!r && i < C->npacks) {
		uint32_t n = 0;
		for (; i < C->npacks && n < INDEX_PACKS_MAX; i++) {
			struct cpack *p = &C->packs[i];
			if (p->state != P_OK || p->bad_chunks || p->indexed)
				continue;
			v[n++] = (struct ss_index_pack){.pack_size = p->size, .count = p->count,
							.entries = p->entries};
			memcpy(v[n - 1].pack_id, p->id, 16);
		}
		if (!n)
			break;
		struct ss_err e = {0};
		r = ss_index_put(C->b, C->loop, C->ids, v, n, &C->st->requests, &e);
		if (r) {
			ss_err_set(C->err, r, "cannot write a new index object to %s: %s", C->store,
				   e.msg[0] ? e.msg : strerror(-r));
			break;
		}
		C->st->index_written++;
	}
	free(v);
	if (r)
		return r;
	check_repaired(C, C->unindexed_finding, "a new index object lists them");
	for (size_t k = 0; k < C->nidx; k++) {
		struct cindex *x = &C->idx[k];
		if (!x->finding)
			continue;
		struct ss_err e = {0};
		struct ss_req d = {.kind = SS_REQ_DELETE, .key = x->key, .err = &e};
		r = ss_call(C->b, C->loop, &d, &C->st->requests);
		if (r && r != -ENOENT)
			return ss_err_set(C->err, r, "cannot delete %s/%s: %s", C->store, x->key,
					  e.msg[0] ? e.msg : strerror(-r));
		r = 0;
		C->st->index_deleted++;
		check_repaired(C, x->finding, "deleted; a new index object lists its readable packs");
	}
	return 0;
}

static int repair_refs(struct check *C)
{
	for (size_t i = 0; i < C->nref_missing; i++) {
		char key[64];
		const char *uri = C->ref_missing[i];
		struct ss_err e = {0};
		ss_ref_key(uri, key);
		int r = ss_put_object(C->b, C->loop, key, uri, strlen(uri), 0, &C->st->requests, &e);
		if (r)
			return ss_err_set(C->err, r, "cannot write %s/%s: %s", C->store, key,
					  e.msg[0] ? e.msg : strerror(-r));
		C->st->refs_written++;
		check_repaired(C, C->ref_missing_finding[i], "ref written");
	}
	return 0;
}

/* gc/state that cannot be read is deleted: gc then hides unreferenced
 * packs afresh, and the grace period starts again (DESIGN.md). A damaged
 * record of a removed snapshot is replaced by one that keeps every intact
 * pack in the store for a grace period from now: more than the lost record
 * could have kept, for longer, so no push using that snapshot as its
 * parent loses a pack. */
static int repair_records(struct check *C)
{
	int r = 0;
	if (C->state_finding) {
		struct ss_req d = {.kind = SS_REQ_DELETE, .key = SS_GC_STATE_KEY};
		r = ss_call(C->b, C->loop, &d, &C->st->requests);
		if (r && r != -ENOENT)
			return ss_err_set(C->err, r, "cannot delete %s/%s: %s", C->store,
					  SS_GC_STATE_KEY, strerror(-r));
		ss_gcstate_free(&C->hidden);
		C->st->records_repaired++;
		check_repaired(C, C->state_finding,
			 "deleted; gc hides unreferenced packs again, with a fresh grace period");
	}
	if (!C->ntomb_bad)
		return 0;
	struct ss_tombstone t = {
		.snapshot = (char *)"(unknown: a damaged record replaced by snapstream check --check_repair)",
		.removed_ns = ss_wall_ns()};
	if (!(t.packs = malloc(16 * (C->npacks ? C->npacks : 1))))
		return check_oom(C);
	/* Not damaged packs: gc would un-hide one that check_repair hides. */
	for (size_t i = 0; i < C->npacks; i++)
		if (C->packs[i].listed && C->packs[i].state == P_OK && !C->packs[i].bad_chunks)
			memcpy(t.packs[t.npacks++], C->packs[i].id, 16);
	uint8_t *buf = NULL;
	size_t len = 0;
	r = ss_tombstone_encode(&t, &buf, &len);
	free(t.packs);
	if (r)
		return check_oom(C);
	for (size_t i = 0; !r && i < C->ntomb_bad; i++) {
		struct ss_err e = {0};
		r = ss_put_object(C->b, C->loop, C->tomb_bad[i], buf, len, 0, &C->st->requests, &e);
		if (r) {
			ss_err_set(C->err, r, "cannot rewrite %s/%s: %s", C->store, C->tomb_bad[i],
				   e.msg[0] ? e.msg : strerror(-r));
			break;
		}
		C->st->records_repaired++;
		check_repaired(C, C->tomb_bad_finding[i],
			 "replaced by a record keeping every pack for a grace period from now");
	}
	free(buf);
	return r;
}

/* Read every snapshot again and drop candidates that one references now:
 * a push that finished since the first look may have used them. */
static int remark(struct check *C, bool *cand)
{
	struct ss_live lv;
	int r = check_live_read(C, false, &lv);
	for (size_t i = 0; !r && i < lv.n + lv.ns; i++) {
		struct ss_manifest *m = NULL;
		struct ss_err e = {0};
		int mr = ss_manifest_load(i < lv.n ? lv.uris[i] : lv.sib[i - lv.n], C->loop, &C->cfg,
					  &m, NULL, &C->st->requests, &e);
		if (mr == -ENOENT)
			continue;
		if (mr) {
			/* What it references is unknown: move nothing. */
			memset(cand, 0, C->npacks * sizeof(*cand));
			break;
		}
		for (size_t p = 0; p < m->npacks; p++) {
			struct cpack *cp = check_pack_find(C, m->pack_ids[p]);
			if (cp)
				cand[cp - C->packs] = false;
		}
		ss_manifest_free(m);
	}
	if (!r)
		ss_live_free(&lv);
	return r;
}

/* Copy a pack under damaged/ and delete it from packs/. Returns 1 when
 * it was left where it is (too large to copy through memory, or gone). */
static int quarantine(struct check *C, struct cpack *p)
{
	char key[64], dst[96], hex[33];
	ss_pack_key(p->id, key);
	ss_hex(p->id, 16, hex);
	uint8_t *buf = NULL;
	size_t len = 0;
	struct ss_err e = {0};
	int r = ss_get_object(C->b, C->loop, key, QUARANTINE_MAX, &buf, &len, &C->st->requests, &e);
	if (r == -EFBIG || r == -ENOENT)
		return 1;
	if (r)
		return ss_err_set(C->err, r, "cannot read %s/%s: %s", C->store, key,
				  e.msg[0] ? e.msg : strerror(-r));
	snprintf(dst, sizeof(dst), "damaged/%s", hex);
	r = ss_put_object(C->b, C->loop, dst, buf, len, SS_PUT_IF_ABSENT, &C->st->requests, &e);
	if (r == -EEXIST) {
		/* Set aside before (then put back by hand): keep both copies. */
		uint8_t rid[16];
		char rhex[33];
		ss_err_clear(&e);
		if (!(r = ss_random_id(rid))) {
			ss_hex(rid, 4, rhex);
			snprintf(dst, sizeof(dst), "damaged/%s.%s", hex, rhex);
			r = ss_put_object(C->b, C->loop, dst, buf, len, SS_PUT_IF_ABSENT,
					  &C->st->requests, &e);
		}
	}
	free(buf);
	if (r)
		return ss_err_set(C->err, r, "cannot copy %s/%s to %s: %s", C->store, key, dst,
				  e.msg[0] ? e.msg : strerror(-r));
	/* Deleted only once the copy is stored. */
	struct ss_req d = {.kind = SS_REQ_DELETE, .key = key, .err = &e};
	r = ss_call(C->b, C->loop, &d, &C->st->requests);
	if (r && r != -ENOENT)
		return ss_err_set(C->err, r, "cannot delete %s/%s: %s", C->store, key,
				  e.msg[0] ? e.msg : strerror(-r));
	C->st->packs_quarantined++;
	check_repaired(C, p->finding, "moved to %s", dst);
	return 0;
}

/* Hide packs hide[0..n) in gc/state, as gc hides unreferenced ones. */
static int hide_packs(struct check *C, struct cpack **hide, size_t n)
{
	struct ss_gcstate state = {0};
	uint8_t *buf = NULL;
	size_t len = 0;
	struct ss_err e = {0};
	/* Read again: under the lock no gc writes it meanwhile, and a damaged
	 * one was deleted by repair_records. */
	int r = ss_gcstate_load(C->b, C->loop, C->store, &state, &C->st->requests, C->err);
	int64_t now = ss_wall_ns();
	for (size_t i = 0; !r && i < n; i++)
		if (!ss_gcstate_find(&state, hide[i]->id) && ss_gcstate_add(&state, hide[i]->id, now))
			r = check_oom(C);
	if (!r) {
		ss_gcstate_sort(&state);
		if ((r = ss_gcstate_encode(&state, &buf, &len)))
			check_oom(C);
	}
	if (!r && (r = ss_put_object(C->b, C->loop, SS_GC_STATE_KEY, buf, len, 0,
				     &C->st->requests, &e)))
		ss_err_set(C->err, r, "cannot write %s/%s: %s", C->store, SS_GC_STATE_KEY,
			   e.msg[0] ? e.msg : strerror(-r));
	free(buf);
	ss_gcstate_free(&state);
	for (size_t i = 0; !r && i < n; i++) {
		C->st->packs_hidden_now++;
		check_repaired(C, hide[i]->finding,
			 "hidden from pushes; gc deletes it after the grace period");
	}
	return r;
}

/* Damaged packs no snapshot references. One whose own index is unreadable
 * and that no readable index object lists cannot have been offered to any
 * push (a damaged index object makes pushes refuse the store), so it is
 * moved aside now. Any other one may have been offered to a push still
 * running: it is hidden in gc/state instead, so that from now on no push
 * dedups against it, and gc deletes it a grace period later if nothing
 * references it by then: gc's own protocol for unreferenced packs. */
static int repair_packs(struct check *C)
{
	bool *cand = calloc(C->npacks ? C->npacks : 1, sizeof(*cand));
	struct cpack **hide = calloc(C->npacks ? C->npacks : 1, sizeof(*hide));
	size_t ncand = 0, nhide = 0;
	int r = 0;
	if (!cand || !hide) {
		r = check_oom(C);
		goto out;
	}
	for (size_t i = 0; i < C->npacks; i++) {
		struct cpack *p = &C->packs[i];
		cand[i] = p->listed && !p->nrefs && !p->tomb && !p->hidden &&
			  (p->state == P_DAMAGED || (p->state == P_OK && p->bad_chunks));
		ncand += cand[i];
	}
	if (ncand)
		r = remark(C, cand);
	for (size_t i = 0; !r && i < C->npacks; i++) {
		struct cpack *p = &C->packs[i];
		if (!cand[i])
			continue;
		if (p->state == P_DAMAGED && !p->in_index) {
			r = quarantine(C, p);
			r = r < 0 ? r : 0;
		} else {
			hide[nhide++] = p;
		}
	}
	if (!r && nhide)
		r = hide_packs(C, hide, nhide);
out:
	free(cand);
	free(hide);
	return r;
}

int check_repair(struct check *C)
{
	int r;
	C->prog.phase = "check_repair";
	C->prog.items_total = C->prog.items_done = 0;
	ss_tick(&C->cfg, &C->ticker, &C->prog, true);
	if ((r = repair_records(C)) || (r = repair_index(C)) || (r = repair_refs(C)))
		return r;
	return repair_packs(C);
}
