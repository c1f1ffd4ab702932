/* check — verify a store, and repair what its packs can rebuild
 * (docs/DESIGN.md, "Checking and repairing a store").
 *
 * What it reads, in this order:
 *
 *   config, gc/lock, gc/state, gc/removed/   records, each decoded as gc would
 *   packs/                                   listed; every pack's trailer and
 *                                            index read (one suffix GET each,
 *                                            usually) and parsed
 *   index/                                   every index object, compared with
 *                                            the packs' own indexes
 *   (deep) every chunk of every readable pack, decompressed and hashed
 *   refs/ + snapshots beside the store       every snapshot gc would mark; each
 *                                            chunk looked up in the index of
 *                                            the pack its manifest names
 *
 * Packs are read before snapshots, so a snapshot is judged against packs
 * that existed when it was read; a pack that a snapshot or an index object
 * names but the listing did not show (a concurrent push wrote it since) is
 * looked up then. A snapshot that looks incomplete is confirmed to still
 * exist before it is reported: one removed (and its packs collected) while
 * check ran is not damage.
 *
 * Repair holds gc/lock, writes before it deletes, and never deletes or
 * moves a pack a snapshot references (see check_repair() in repair.c). */
#include "check.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- findings */

int check_oom(struct check *C)
{
	return ss_err_set(C->err, -ENOMEM, "out of memory");
}

size_t check_finding(struct check *C, enum ss_check_kind kind, bool problem, const char *object,
		      const char *snapshot, uint64_t chunks, uint64_t bytes, const char *fmt, ...)
{
	if (SS_GROW(C->f, C->fcap, C->nf + 1, 32)) {
		check_oom(C);
		return 0;
	}
	struct cfinding *x = &C->f[C->nf];
	memset(x, 0, sizeof(*x));
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&x->message, fmt, ap);
	va_end(ap);
	if (n < 0 || (object && !(x->object = strdup(object))) ||
	    (snapshot && !(x->snapshot = strdup(snapshot)))) {
		if (n >= 0)
			free(x->message);
		free(x->object);
		check_oom(C);
		return 0;
	}
	x->f = (struct ss_check_finding){.kind = kind, .problem = problem, .chunks = chunks,
					 .bytes = bytes};
	/* What the packs themselves, or a scan beside the store, describe. */
	x->f.repairable = problem && (kind == SS_CHECK_INDEX_DAMAGED || kind == SS_CHECK_INDEX_STALE ||
				      kind == SS_CHECK_PACKS_UNINDEXED || kind == SS_CHECK_REF_MISSING ||
				      (kind == SS_CHECK_RECORD_DAMAGED &&
				       strcmp(object, SS_STORE_CONFIG_KEY) != 0));
	if (problem)
		C->st->problems++;
	return ++C->nf;
}

void check_repaired(struct check *C, size_t fi, const char *fmt, ...)
{
	if (!fi)
		return;
	struct cfinding *x = &C->f[fi - 1];
	if (x->f.repaired)
		return;
	x->f.repaired = true;
	if (x->f.problem)
		C->st->repaired++;
	char how[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(how, sizeof(how), fmt, ap);
	va_end(ap);
	char *m = NULL;
	if (asprintf(&m, "%s; check_repaired: %s", x->message, how) >= 0) {
		free(x->message);
		x->message = m;
	}
}

static void findings_emit(struct check *C)
{
	/* Problems first, each group in the order found. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < C->nf; i++) {
			struct cfinding *x = &C->f[i];
			bool first = x->f.problem && !x->f.repaired;
			if (first != (pass == 0) || !C->opts->on_finding)
				continue;
			x->f.object = x->object;
			x->f.snapshot = x->snapshot;
			x->f.message = x->message;
			C->opts->on_finding(C->opts->arg, &x->f);
		}
}

/* Whether two store URIs name the same place. */
static bool same_store(const char *a, const char *b)
{
	const char *sa, *sb;
	char *pa = NULL, *pb = NULL;
	bool same = a && b && ss_location_parse(a, &sa, &pa, NULL) == 0 &&
		    ss_location_parse(b, &sb, &pb, NULL) == 0 && sa == sb && strcmp(pa, pb) == 0;
	free(pa);
	free(pb);
	return same;
}

/* ---------------------------------------------------------------- snapshots */

static int snap_add(struct check *C, const char *uri, uint32_t *idx)
{
	if (SS_GROW(C->snaps, C->snaps_cap, C->nsnaps + 1, 32))
		return check_oom(C);
	if (!(C->snaps[C->nsnaps] = strdup(uri)))
		return check_oom(C);
	*idx = (uint32_t)C->nsnaps++;
	return 0;
}

/* Whether the manifest at uri still exists (errors: assume so). */
static bool manifest_exists(struct check *C, const char *uri)
{
	struct ss_snaploc loc;
	struct ss_backend *b = NULL;
	if (ss_snaploc_parse(uri, &loc, NULL))
		return true;
	struct ss_backend_opts ro = C->cfg.bopts;
	ro.read_only = true;
	int r = ss_backend_open(loc.backend_uri, C->loop, &ro, &b, NULL);
	if (!r) {
		struct ss_req s = {.kind = SS_REQ_STAT, .key = loc.key};
		r = ss_call(b, C->loop, &s, &C->st->requests);
	}
	ss_backend_free(b);
	ss_snaploc_free(&loc);
	return r != -ENOENT;
}

static const struct ss_pack_entry *entry_at(const struct cpack *p, uint64_t offset,
					    uint32_t frame_off)
{
	size_t lo = 0, hi = p->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct ss_pack_entry *e = &p->entries[mid];
		if (e->offset < offset || (e->offset == offset && e->frame_off < frame_off))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < p->count && p->entries[lo].offset == offset &&
	    p->entries[lo].frame_off == frame_off)
		return &p->entries[lo];
	return NULL;
}

struct snapcount {
	uint64_t missing, damaged, misplaced;
	char pack_missing[33], pack_damaged[33];
};

/* One chunk reference against the pack it names. */
static void check_chunk(const struct ss_chunk_ref *c, const struct cpack *p,
			struct snapcount *n)
{
	if (p->state == P_MISSING) {
		n->missing++;
		if (!n->pack_missing[0])
			ss_hex(p->id, 16, n->pack_missing);
		return;
	}
	const struct ss_pack_entry *e = p->state == P_OK ? entry_at(p, c->offset, c->frame_off)
							  : NULL;
	if (p->state == P_DAMAGED || (e && p->bad && p->bad[e - p->entries])) {
		n->damaged++;
		if (!n->pack_damaged[0])
			ss_hex(p->id, 16, n->pack_damaged);
		return;
	}
	if (!e || memcmp(e->id, c->id, 16) || e->stored_len != c->stored_len ||
	    e->raw_len != c->raw_len || e->codec != c->codec)
		n->misplaced++;
}

/* Check one snapshot. from_ref: named by a ref (else found beside the
 * store, where a snapshot pushed to another store may sit too). */
static int check_snapshot(struct check *C, const char *uri, const char *via, bool from_ref)
{
	struct ss_manifest *m = NULL;
	struct ss_err me = {0};
	int r = ss_manifest_load(uri, C->loop, &C->cfg, &m, NULL, &C->st->requests, &me);
	if (r == -ENOENT) {
		if (from_ref) {
			C->st->refs_dangling++;
			return check_finding(C, SS_CHECK_REF_DANGLING, false, via, uri, 0, 0,
				       "names %s, which has no manifest: a push still running, or a "
				       "snapshot deleted by hand ('snapstream rm %s' drops the ref)",
				       uri, uri)
				       ? 0
				       : -ENOMEM;
		}
		return 0;
	}
	if (r == -EBADMSG || r == -EPROTONOSUPPORT || r == -EFBIG) {
		C->st->snapshots_unreadable++;
		return check_finding(C, SS_CHECK_SNAPSHOT_UNREADABLE, true, from_ref ? via : NULL, uri, 0, 0,
			       "%s: pull, verify and gc fail on it; restore its manifest, or "
			       "remove it with 'snapstream rm %s'",
			       me.msg, uri)
			       ? 0
			       : -ENOMEM;
	}
	if (r)
		return ss_err_set(C->err, r, "%s", me.msg);
	if (!from_ref && m->store_uri && *m->store_uri && !same_store(m->store_uri, C->store)) {
		ss_manifest_free(m);
		return check_finding(C, SS_CHECK_SNAPSHOT_ELSEWHERE, false, NULL, uri, 0, 0,
			       "beside the store but pushed to another one; not checked here")
			       ? 0
			       : -ENOMEM;
	}
	uint32_t si = 0;
	if ((r = snap_add(C, uri, &si)))
		goto out;
	C->st->snapshots++;
	if (C->config_ok &&
	    (m->keyed_ids != C->keyed || (C->keyed && memcmp(m->key_check, C->key_check, 16)))) {
		C->st->snapshots_unreadable++;
		r = check_finding(C, SS_CHECK_SNAPSHOT_UNREADABLE, true, NULL, uri, 0, 0,
			    "its manifest's chunk ids (%s) are not its store's (%s): it was pushed "
			    "with another key, or the store's config was replaced",
			    m->keyed_ids ? "keyed" : "plain", C->keyed ? "keyed" : "plain") ? 0
											     : -ENOMEM;
		goto out;
	}
	if ((r = check_ensure_packs(C, (const uint8_t(*)[16])m->pack_ids, m->npacks)))
		goto out;
	struct cpack **pp = malloc(sizeof(*pp) * (m->npacks ? m->npacks : 1));
	if (!pp) {
		r = check_oom(C);
		goto out;
	}
	for (size_t p = 0; p < m->npacks; p++) {
		pp[p] = check_pack_find(C, m->pack_ids[p]);
		if (pp[p]->nrefs < SNAPS_NAMED)
			pp[p]->snaps[pp[p]->nrefs] = si;
		pp[p]->nrefs++;
	}
	struct snapcount n = {0};
	for (size_t c = 0; c < m->nchunks; c++)
		check_chunk(&m->chunks[c], pp[m->chunks[c].pack], &n);
	free(pp);
	C->st->chunks += m->nchunks;
	uint64_t bad = n.missing + n.damaged + n.misplaced;
	if (!bad || !manifest_exists(C, uri))
		goto out;   /* fine, or removed while check ran */
	C->st->chunks_missing += bad;
	C->st->snapshots_incomplete++;
	char what[400];
	int k = snprintf(what, sizeof(what), "%" PRIu64 " of its %zu chunks are not intact", bad,
			 m->nchunks);
	if (n.missing)
		k += snprintf(what + k, sizeof(what) - (size_t)k, "%s %" PRIu64
			      " in missing packs (%s...)", k ? ":" : "", n.missing, n.pack_missing);
	if (n.damaged)
		k += snprintf(what + k, sizeof(what) - (size_t)k, "%s %" PRIu64
			      " in damaged packs (%s...)", n.missing ? "," : ":", n.damaged,
			      n.pack_damaged);
	if (n.misplaced)
		snprintf(what + k, sizeof(what) - (size_t)k, "%s %" PRIu64
			 " not where its manifest says", n.missing || n.damaged ? "," : ":",
			 n.misplaced);
	/* A pack whose own index is damaged may still hold intact frames,
	 * which pull finds by the manifest's offsets: verify says. */
	bool lost = n.missing || n.misplaced || C->opts->deep;
	r = check_finding(C, SS_CHECK_SNAPSHOT_INCOMPLETE, true, NULL, uri, bad, 0,
		    "%s; %s; restore the packs from a backup, or remove it with 'snapstream rm %s'",
		    what,
		    lost ? "pulling it fails"
			 : "pulling it may fail ('snapstream verify' reads those chunks)",
		    uri) ? 0 : -ENOMEM;
out:
	ss_manifest_free(m);
	return r;
}

/* Every live snapshot (live.c: those gc marks). report: an object under
 * refs/ that is no ref becomes a check_finding (and the others are read anyway),
 * else it is skipped. */
int check_live_read(struct check *C, bool report, struct ss_live *lv)
{
	struct ss_err e = {0};
	int r = ss_live_read(C->b, C->loop, C->store, report, lv, &C->st->requests, &e);
	if (r == -EBADMSG && report) {
		if (!check_finding(C, SS_CHECK_REF_BAD, true, NULL, NULL, 0, 0,
			     "%s (remove it by hand if it is no snapshot's)", e.msg))
			return -ENOMEM;
		ss_err_clear(&e);
		r = ss_live_read(C->b, C->loop, C->store, false, lv, &C->st->requests, &e);
	}
	if (r)
		return ss_err_set(C->err, r, "%s", e.msg);
	return 0;
}

/* Check every snapshot; those beside the store that no ref names lack a
 * ref. */
static int check_snapshots(struct check *C)
{
	struct ss_live lv;
	int r = check_live_read(C, true, &lv);
	if (r)
		return r;
	size_t n = lv.n, ns = lv.ns;
	char **sib = lv.sib;
	C->prog.phase = "snapshots";
	C->prog.items_total = n + ns;
	C->prog.items_done = 0;
	for (size_t i = 0; !r && i < n; i++) {
		r = check_snapshot(C, lv.uris[i], lv.keys[i], true);
		C->prog.items_done = i + 1;
		ss_tick(&C->cfg, &C->ticker, &C->prog, false);
	}
	for (size_t i = 0; !r && i < ns; i++) {
		C->prog.items_done = n + i + 1;
		size_t before = C->nsnaps;
		if ((r = check_snapshot(C, sib[i], NULL, false)) || C->nsnaps == before)
			continue;   /* failed, gone, elsewhere or unreadable */
		char key[64];
		ss_ref_key(sib[i], key);
		/* A push writes its ref just before its manifest: one that
		 * committed after the refs were listed has its ref now. */
		struct ss_req rs = {.kind = SS_REQ_STAT, .key = key};
		if (ss_call(C->b, C->loop, &rs, &C->st->requests) == 0)
			continue;
		C->st->refs_missing++;
		size_t fi = check_finding(C, SS_CHECK_REF_MISSING, true, key, sib[i], 0, 0,
				    "a snapshot beside the store has no ref: gc keeps its packs "
				    "only while it stays beside the store, and ls through the store "
				    "does not show it");
		char **a = realloc(C->ref_missing, sizeof(*a) * (C->nref_missing + 1));
		if (a)
			C->ref_missing = a;
		size_t *b = realloc(C->ref_missing_finding, sizeof(*b) * (C->nref_missing + 1));
		if (b)
			C->ref_missing_finding = b;
		if (!fi || !a || !b || !(C->ref_missing[C->nref_missing] = strdup(sib[i]))) {
			r = check_oom(C);
			break;
		}
		C->ref_missing_finding[C->nref_missing++] = fi;
	}
	ss_live_free(&lv);
	return r;
}

/* ---------------------------------------------------------------- packs' verdicts */

static void name_snaps(const struct check *C, const struct cpack *p, char *out, size_t n)
{
	int k = snprintf(out, n, "referenced by %" PRIu32 " snapshot(s): ", p->nrefs);
	for (uint32_t i = 0; i < p->nrefs && i < SNAPS_NAMED && k > 0 && (size_t)k < n; i++)
		k += snprintf(out + k, n - (size_t)k, "%s%s", i ? ", " : "", C->snaps[p->snaps[i]]);
	if (p->nrefs > SNAPS_NAMED && k > 0 && (size_t)k < n)
		snprintf(out + k, n - (size_t)k, " and %" PRIu32 " more", p->nrefs - SNAPS_NAMED);
}

static int judge_packs(struct check *C)
{
	uint64_t unindexed = 0;
	char first[33] = "";
	for (size_t i = 0; i < C->npacks; i++) {
		struct cpack *p = &C->packs[i];
		char key[64], refs[1200];
		ss_pack_key(p->id, key);
		name_snaps(C, p, refs, sizeof(refs));
		if (p->listed) {
			C->st->packs++;
			C->st->pack_bytes += p->size;
			C->st->packs_hidden += p->hidden;
		}
		if (p->state == P_MISSING) {
			if (!p->nrefs)
				continue;   /* gone with its snapshots, or listed by a stale index */
			C->st->packs_missing++;
			p->finding = check_finding(C, SS_CHECK_PACK_MISSING, true, key, NULL, 0, 0,
					     "is missing from the store; %s; only a backup of the pack "
					     "brings them back",
					     refs);
		} else if (p->state == P_DAMAGED || p->bad_chunks) {
			C->st->packs_damaged++;
			char what[120] = "";
			if (p->bad_chunks)
				snprintf(what, sizeof(what), "%" PRIu64 " of its %" PRIu32
					 " chunks fail verification, first: ", p->bad_chunks, p->count);
			/* Unreferenced and hidden: gc deletes it, no push uses it. */
			bool on_its_way = !p->nrefs && p->hidden;
			p->finding = check_finding(
				C, SS_CHECK_PACK_DAMAGED, !on_its_way, key, NULL, p->bad_chunks, p->size,
				"is damaged (%s%s); %s", what, p->why ? p->why : "?",
				p->nrefs ? refs
				: on_its_way ? "no snapshot references it and gc has hidden it: gc "
					       "deletes it after the grace period"
					     : "no snapshot references it");
			if (p->finding && !p->nrefs && !p->tomb && !on_its_way)
				C->f[p->finding - 1].f.repairable = true;
		} else {
			C->st->packs_ok += p->listed;
			if (p->nrefs && !p->indexed && ++unindexed == 1)
				ss_hex(p->id, 16, first);
			if (p->nrefs || !p->listed)
				continue;
			C->st->packs_orphaned++;
			p->finding = check_finding(
				C, SS_CHECK_PACK_ORPHAN, false, key, NULL, 0, p->size, "%s",
				p->hidden ? "no snapshot references it; gc has hidden it and deletes it "
					    "after the grace period"
				: p->tomb ? "no snapshot references it but a removed one did: gc "
					    "deletes it once that removal is a grace period old"
					  : "no snapshot references it: left by an interrupted push, "
					    "or by removed snapshots; gc hides it, and deletes it a "
					    "grace period later");
		}
		if (!p->finding)
			return check_oom(C);
	}
	if (unindexed &&
	    !(C->unindexed_finding = check_finding(
		      C, SS_CHECK_PACKS_UNINDEXED, true, NULL, NULL, 0, 0,
		      "%" PRIu64 " pack(s) that snapshots reference (%s...) are listed by no "
		      "index object: every push reads their trailers one by one, and dedups "
		      "against them only then; an index object can be rebuilt from them",
		      unindexed, first)))
		return check_oom(C);
	return 0;
}

/* ---------------------------------------------------------------- entry */

static void check_free(struct check *C)
{
	for (size_t i = 0; i < C->npacks; i++)
		check_pack_clear(&C->packs[i]);
	free(C->packs);
	for (size_t i = 0; i < C->nidx; i++)
		free(C->idx[i].key);
	free(C->idx);
	for (size_t i = 0; i < C->nsnaps; i++)
		free(C->snaps[i]);
	free(C->snaps);
	for (size_t i = 0; i < C->nref_missing; i++)
		free(C->ref_missing[i]);
	free(C->ref_missing);
	free(C->ref_missing_finding);
	for (size_t i = 0; i < C->ntomb_bad; i++)
		free(C->tomb_bad[i]);
	free(C->tomb_bad);
	free(C->tomb_bad_finding);
	for (size_t i = 0; i < C->nf; i++) {
		free(C->f[i].object);
		free(C->f[i].snapshot);
		free(C->f[i].message);
	}
	free(C->f);
	ss_gcstate_free(&C->hidden);
	ss_backend_free(C->b);
	ss_loop_free(C->loop);
	ss_cfg_wipe(&C->cfg);
}

static int run(struct check *C)
{
	const struct ss_check_opts *o = C->opts;
	int r;
	if ((r = ss_loop_open(256, &C->loop, C->err)))
		return r;
	if ((r = ss_store_backend_open(o->store, C->loop, &C->cfg, &C->b, C->err)))
		return r;
	if (o->repair) {
		if ((r = ss_gclock_take(C->b, C->loop, o->store, "check --check_repair", o->break_lock,
					&C->st->requests, C->err)))
			return r;
		C->locked = true;
	}
	if ((r = check_read_config(C)) || (r = check_read_gc_state(C)) ||
	    (r = check_read_all_packs(C)) || (r = check_read_tombstones(C)) ||
	    (r = check_read_all_index(C)))
		return r;
	if (o->deep && (r = check_deep(C)))
		return r;
	if ((r = check_snapshots(C)) || (r = check_read_all_index(C)) || (r = judge_packs(C)))
		return r;
	if (o->repair && (r = check_repair(C)))
		return r;
	ss_tick(&C->cfg, &C->ticker, &C->prog, true);
	return 0;
}

int ss_check_impl(const struct ss_check_opts *opts, const struct ss_config_in *config,
	     struct ss_check_stats *st, char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_check_stats local_st;
	struct check C = {0};
	uint64_t t0 = ss_now_ns();
	int r;
	st = ss_stats_init(st, &local_st, sizeof(*st));
	C.st = st;
	C.err = &err;
	C.opts = opts;
	if (!opts || !opts->store || !*opts->store) {
		r = ss_err_set(&err, -EINVAL, "check needs a store");
		goto out;
	}
	C.store = opts->store;
	if ((r = ss_cfg_resolve(config, &C.cfg, &err)))
		goto out;
	r = run(&C);
	if (C.locked)
		ss_gclock_drop(C.b, C.loop, &st->requests);
	if (!r) {
		findings_emit(&C);
		uint64_t left = st->problems - st->repaired;
		if (left)
			r = ss_err_set(&err, -EBADMSG, "store %s has %" PRIu64 " problem(s)%s",
				       opts->store, left, opts->repair ? " that check_repair cannot fix" : "");
	}
out:
	check_free(&C);
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}
