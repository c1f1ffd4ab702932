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
 * moves a pack a snapshot references (see repair() below). */
#include "admin.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PACK_BATCH 64
/* One suffix GET this long holds the trailer and index of a pack of up to
 * ~2000 chunks (a 32 MiB pack of 64 KiB chunks has ~500). */
#define TAIL_GUESS (64u << 10)
#define CONFIG_MAX 4096
#define RECORD_MAX (256u << 20)
/* Packs set aside under damaged/ are copied through memory. */
#define QUARANTINE_MAX (256u << 20)
/* A fresh index object lists at most this many packs, so that it stays
 * far below SS_INDEX_MAX_SIZE. */
#define INDEX_PACKS_MAX 4096
#define SNAPS_NAMED 3

enum pstate {
	P_OK = 0,      /* own trailer and index parse */
	P_DAMAGED,     /* they do not */
	P_MISSING,     /* named by a snapshot or an index object, not in the store */
};

struct cpack {
	uint8_t id[16];                 /* first: sorted and searched by it */
	uint64_t size;
	uint64_t data_end;              /* index_offset: chunk data ends here */
	uint32_t count;
	struct ss_pack_entry *entries;  /* P_OK: the pack's own index */
	uint8_t *bad;                   /* deep: 1 for each entry that failed */
	char *why;                      /* P_DAMAGED, or the first deep failure */
	uint64_t bad_chunks;            /* deep */
	uint8_t state;
	bool listed;                    /* in the packs/ listing */
	bool in_index;                  /* listed by some readable index object */
	bool indexed;                   /* listed by an index object that is kept */
	bool hidden;                    /* in gc/state */
	bool tomb;                      /* listed by a gc/removed/ record */
	uint32_t nrefs;                 /* snapshots referencing it */
	uint32_t snaps[SNAPS_NAMED];    /* the first of them (C->snaps) */
	size_t finding;                 /* its finding + 1, or 0 */
};

struct cfinding {
	struct ss_check_finding f;
	char *object, *snapshot, *message;
};

struct cindex {
	char *key;
	size_t finding;                 /* + 1 when damaged or stale, else 0 */
};

struct check {
	struct ss_cfg cfg;
	const struct ss_check_opts *opts;
	struct ss_check_stats *st;
	struct ss_err *err;
	struct ss_loop *loop;
	struct ss_backend *b;
	const char *store;
	bool locked;
	/* config */
	bool config_ok;                 /* readable (or absent: plain ids) */
	bool keyed;
	uint8_t key_check[16];
	const struct ss_idkey *ids;     /* how this store's chunk ids are made */
	/* gc records */
	struct ss_gcstate hidden;
	size_t state_finding;           /* + 1 when gc/state is damaged */
	char **tomb_bad;                /* keys of damaged gc/removed/ records */
	size_t *tomb_bad_finding;
	size_t ntomb_bad;
	/* packs, sorted by id */
	struct cpack *packs;
	size_t npacks, packs_cap;
	struct cindex *idx;
	size_t nidx;
	/* snapshots checked, for messages */
	char **snaps;
	size_t nsnaps, snaps_cap;
	char **ref_missing;             /* snapshots beside the store without a ref */
	size_t *ref_missing_finding;
	size_t nref_missing;
	size_t unindexed_finding;       /* + 1 */
	struct cfinding *f;
	size_t nf, fcap;
	struct ss_progress prog;
	struct ss_ticker ticker;
};

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static void pack_name(const uint8_t id[16], char *out)
{
	ss_pack_key(id, out);
}

/* ---------------------------------------------------------------- findings */

static int oom(struct check *C)
{
	return ss_err_set(C->err, -ENOMEM, "out of memory");
}

/* Record a finding; returns its number + 1 (for repair to mark), or 0 when
 * memory ran out (C->err set). */
static size_t finding(struct check *C, enum ss_check_kind kind, bool problem, const char *object,
		      const char *snapshot, uint64_t chunks, uint64_t bytes, const char *fmt, ...)
	__attribute__((format(printf, 8, 9)));

static size_t finding(struct check *C, enum ss_check_kind kind, bool problem, const char *object,
		      const char *snapshot, uint64_t chunks, uint64_t bytes, const char *fmt, ...)
{
	if (C->nf == C->fcap) {
		size_t ncap = C->fcap ? C->fcap * 2 : 32;
		void *a = realloc(C->f, sizeof(*C->f) * ncap);
		if (!a) {
			oom(C);
			return 0;
		}
		C->f = a;
		C->fcap = ncap;
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
		oom(C);
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

/* Mark finding fi (+1) repaired, saying how. */
static void repaired(struct check *C, size_t fi, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void repaired(struct check *C, size_t fi, const char *fmt, ...)
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
	if (asprintf(&m, "%s; repaired: %s", x->message, how) >= 0) {
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

/* ---------------------------------------------------------------- helpers */

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

/* ---------------------------------------------------------------- pack table */

static struct cpack *pack_find(const struct check *C, const uint8_t id[16])
{
	return C->npacks ? bsearch(id, C->packs, C->npacks, sizeof(*C->packs), cmp_id) : NULL;
}

static int pack_append(struct check *C, const uint8_t id[16], uint64_t size)
{
	if (C->npacks == C->packs_cap) {
		size_t ncap = C->packs_cap ? C->packs_cap * 2 : 256;
		void *a = realloc(C->packs, sizeof(*C->packs) * ncap);
		if (!a)
			return -ENOMEM;
		C->packs = a;
		C->packs_cap = ncap;
	}
	struct cpack *p = &C->packs[C->npacks++];
	memset(p, 0, sizeof(*p));
	memcpy(p->id, id, 16);
	p->size = size;
	p->hidden = ss_gcstate_find(&C->hidden, id) != NULL;
	return 0;
}

static void pack_clear(struct cpack *p)
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
	pack_clear(p);
	p->state = P_DAMAGED;
	p->why = strdup(why);
}

/* Judge a pack from the tail of it that a GET returned: got bytes ending
 * at its end, of size bytes in all. Returns 1 when the index lies further
 * back than got reaches (read it with a second GET), else 0. */
static int pack_tail(struct cpack *p, const uint8_t *buf, size_t got, uint64_t size)
{
	struct ss_err e = {0};
	p->size = size;
	if (got < SS_PACK_TRAILER_SIZE) {
		char why[128];
		snprintf(why, sizeof(why), "%" PRIu64 " bytes, too short for a pack trailer "
			 "(truncated)", size);
		pack_damaged(p, why);
		return 0;
	}
	const uint8_t *trailer = buf + got - SS_PACK_TRAILER_SIZE;
	uint64_t ioff;
	if (ss_pack_parse_trailer(trailer, size, &p->count, &ioff, &e)) {
		pack_damaged(p, e.msg);
		return 0;
	}
	p->data_end = ioff;
	size_t ilen = (size_t)p->count * SS_PACK_ENTRY_SIZE;
	if (got < ilen + SS_PACK_TRAILER_SIZE)
		return 1;
	if (ss_pack_parse_index(trailer - ilen, p->count, ioff, trailer, &p->entries, &e)) {
		pack_damaged(p, e.msg);
		return 0;
	}
	p->state = P_OK;
	return 0;
}

/* What a GET of pack p answered (tail: the suffix GET, else the second
 * one for its index). Returns 1 when a second GET is needed, 0 when p is
 * judged, or -errno when the store could not be read. */
static int pack_answer(struct check *C, struct cpack *p, const struct ss_req *q, const uint8_t *buf,
		       bool tail)
{
	int res = q->op.res;
	if (res == -ENOENT) {
		/* Gone since the listing (a gc), or never there. */
		pack_clear(p);
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
	if (tail)
		return pack_tail(p, buf, (size_t)res, q->size);
	struct ss_err e = {0};
	if ((uint64_t)res != q->len || q->size != p->size)
		pack_damaged(p, "changed while being read");
	else if (ss_pack_parse_index(buf, p->count, p->data_end, buf + res - SS_PACK_TRAILER_SIZE,
				     &p->entries, &e))
		pack_damaged(p, e.msg);
	else
		p->state = P_OK;
	return 0;
}

/* Read the trailer and index of packs v[0..n): a suffix GET each that
 * usually holds both, then a second GET for the indexes it did not. */
static int read_packs(struct check *C, struct cpack **v, size_t n)
{
	struct ss_req *reqs = calloc(n ? n : 1, sizeof(*reqs));
	uint8_t **bufs = calloc(n ? n : 1, sizeof(*bufs));
	char (*keys)[64] = calloc(n ? n : 1, sizeof(*keys));
	size_t *again = calloc(n ? n : 1, sizeof(*again));
	size_t nagain = 0;
	int r = 0;
	if (!reqs || !bufs || !keys || !again) {
		r = oom(C);
		goto out;
	}
	for (size_t i = 0; !r && i < n; i++) {
		size_t len = (size_t)SS_MIN(SS_MAX(v[i]->size, (uint64_t)SS_PACK_TRAILER_SIZE),
					    (uint64_t)TAIL_GUESS);
		pack_name(v[i]->id, keys[i]);
		if (!(bufs[i] = malloc(len)))
			r = oom(C);
		reqs[i] = (struct ss_req){.kind = SS_REQ_GET, .flags = SS_GET_SUFFIX, .key = keys[i],
					  .len = len, .buf = bufs[i]};
	}
	if (!r && (r = ss_call_many(C->b, C->loop, reqs, n, &C->st->requests)))
		ss_err_set(C->err, r, "event loop failed: %s", strerror(-r));
	for (size_t i = 0; !r && i < n; i++) {
		int a = pack_answer(C, v[i], &reqs[i], bufs[i], true);
		if (a < 0)
			r = a;
		else if (a)
			again[nagain++] = i;
	}
	/* The indexes larger than the tail read: exactly them, at their offset. */
	for (size_t k = 0; !r && k < nagain; k++) {
		size_t i = again[k];
		size_t ilen = (size_t)v[i]->count * SS_PACK_ENTRY_SIZE + SS_PACK_TRAILER_SIZE;
		free(bufs[i]);
		if (!(bufs[i] = malloc(ilen)))
			r = oom(C);
		reqs[k] = (struct ss_req){.kind = SS_REQ_GET, .key = keys[i], .off = v[i]->data_end,
					  .len = ilen, .buf = bufs[i]};
	}
	if (!r && nagain && (r = ss_call_many(C->b, C->loop, reqs, nagain, &C->st->requests)))
		ss_err_set(C->err, r, "event loop failed: %s", strerror(-r));
	for (size_t k = 0; !r && k < nagain; k++) {
		int a = pack_answer(C, v[again[k]], &reqs[k], bufs[again[k]], false);
		r = a < 0 ? a : 0;
	}
out:
	for (size_t i = 0; bufs && i < n; i++)
		free(bufs[i]);
	free(bufs);
	free(reqs);
	free(keys);
	free(again);
	return r;
}

/* Make sure every id in ids has a row, reading the packs the listing did
 * not show (written since, or missing). Pointers into C->packs do not
 * survive this call. */
static int ensure_packs(struct check *C, const uint8_t (*ids)[16], size_t n)
{
	size_t first = C->npacks;
	int r = 0;
	for (size_t i = 0; !r && i < n; i++) {
		if (pack_find(C, ids[i]))
			continue;
		bool dup = false;
		for (size_t k = first; !dup && k < C->npacks; k++)
			dup = memcmp(C->packs[k].id, ids[i], 16) == 0;
		if (!dup && pack_append(C, ids[i], TAIL_GUESS))
			r = oom(C);
	}
	size_t added = C->npacks - first;
	if (!r && added) {
		struct cpack **v = malloc(sizeof(*v) * added);
		if (!v)
			return oom(C);
		for (size_t k = 0; k < added; k++)
			v[k] = &C->packs[first + k];
		for (size_t base = 0; !r && base < added; base += PACK_BATCH)
			r = read_packs(C, v + base, SS_MIN(added - base, (size_t)PACK_BATCH));
		free(v);
	}
	if (added)
		qsort(C->packs, C->npacks, sizeof(*C->packs), cmp_id);
	return r;
}

/* ---------------------------------------------------------------- records */

static int read_config(struct check *C)
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
		if (!r)
			r = ss_store_config_decode(p, n, &C->keyed, C->key_check, &e);
		if (r == -EPROTONOSUPPORT) {
			ss_err_set(C->err, r, "store %s: %s", C->store, e.msg);
		} else if (r) {
			r = finding(C, SS_CHECK_RECORD_DAMAGED, true, SS_STORE_CONFIG_KEY, NULL, 0, n,
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
	 * operation refuses it; no key is fine until chunks are hashed. */
	if (!r && C->config_ok && (C->keyed || have_key)) {
		r = ss_idkey_check_store(&C->cfg.ids, p, n, C->store, C->err);
		if (r == -ENOKEY && !C->opts->deep) {
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
static int read_gc_state(struct check *C)
{
	struct ss_req lk = {.kind = SS_REQ_STAT, .key = SS_GC_LOCK_KEY};
	int r = ss_call(C->b, C->loop, &lk, &C->st->requests);
	if (r == 0 && !C->locked &&
	    !finding(C, SS_CHECK_GC_RUNNING, false, SS_GC_LOCK_KEY, NULL, 0, 0,
		     "a gc (or check --repair) holds the store's lock: packs it deletes while "
		     "check runs may be reported missing; check again once it is done"))
		return -ENOMEM;
	struct ss_err e = {0};
	r = ss_gcstate_load(C->b, C->loop, C->store, &C->hidden, &C->st->requests, &e);
	if (r == -EBADMSG || r == -EFBIG) {
		C->state_finding = finding(C, SS_CHECK_RECORD_DAMAGED, true, SS_GC_STATE_KEY, NULL, 0,
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
static int read_tombstones(struct check *C)
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
			size_t fi = finding(C, SS_CHECK_RECORD_DAMAGED, true, keys.keys[i], NULL, 0, len,
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
				r = oom(C);
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
			struct cpack *cp = pack_find(C, t.packs[p]);
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
		pack_name(id, want);
		if (!strcmp(want, key))
			return pack_append(C, id, size) ? (ls->err = -ENOMEM) : 0;
	}
	/* Not a pack's name: pushes and gc ignore it, and so does repair. */
	if (!finding(C, SS_CHECK_PACK_FOREIGN, false, key, NULL, 0, size,
		     "not a pack name (packs/<2 hex>/<32 hex>): ignored by push, pull and gc"))
		return ls->err = -ENOMEM;
	return 0;
}

static int read_all_packs(struct check *C)
{
	struct listing ls = {.C = C};
	int r = list_keys(C, "packs/", collect_pack, &ls);
	if (ls.err)
		return oom(C);
	if (r)
		return r;
	if (C->npacks)
		qsort(C->packs, C->npacks, sizeof(*C->packs), cmp_id);
	/* Two listings of one pack (a retried LIST page): keep one row. */
	size_t k = 0;
	for (size_t i = 0; i < C->npacks; i++)
		if (!k || memcmp(C->packs[k - 1].id, C->packs[i].id, 16))
			C->packs[k++] = C->packs[i];
	C->npacks = k;
	struct cpack **v = malloc(sizeof(*v) * (C->npacks ? C->npacks : 1));
	if (!v)
		return oom(C);
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
		r = ss_index_decode(buf, len, &ip, &np, &e);
	free(buf);
	if (r == -EBADMSG || r == -EFBIG) {
		C->st->index_damaged++;
		x->finding = finding(C, SS_CHECK_INDEX_DAMAGED, true, x->key, NULL, 0, len,
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
		return oom(C);
	}
	for (uint32_t p = 0; p < np; p++)
		memcpy(ids[p], ip[p].pack_id, 16);
	r = ensure_packs(C, (const uint8_t(*)[16])ids, np);
	free(ids);
	const char *why = NULL;
	char hex[33] = "";
	for (uint32_t p = 0; !r && p < np; p++) {
		struct cpack *cp = pack_find(C, ip[p].pack_id);
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
		x->finding = finding(C, SS_CHECK_INDEX_STALE, true, x->key, NULL, 0, len,
				     "index object %s (pack %s, and maybe more): pushes would "
				     "reuse chunks that cannot be read; the packs describe "
				     "themselves, so it can be rebuilt",
				     why, hex);
		if (!x->finding)
			r = -ENOMEM;
	} else if (!r) {
		C->st->index_ok++;
		for (uint32_t p = 0; p < np; p++)
			pack_find(C, ip[p].pack_id)->indexed = true;
	}
	ss_index_free(ip, np);
	return r;
}

/* Every index object not read yet: all of them the first time, and
 * again before packs are judged, since a push that committed while
 * snapshots were read wrote its index object after the first listing. */
static int read_all_index(struct check *C)
{
	struct ss_keylist keys = {0};
	int r = ss_list_keys(C->b, C->loop, C->store, "index/", &keys, &C->st->requests, C->err);
	void *a = r ? NULL : realloc(C->idx, sizeof(*C->idx) * (C->nidx + keys.n + 1));
	if (!r && !a)
		r = oom(C);
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

/* ---------------------------------------------------------------- deep */

/* Every chunk of every readable pack fetched in ranges of neighbouring
 * frames, decompressed and hashed by workers; memory is SLOTS ranges plus
 * one frame buffer per worker. */
#define RANGE_MAX (8u << 20)
#define RANGE_GAP (256u << 10)
/* The largest stored frame a pack may hold: zstd's bound for the largest
 * decompressed frame. Anything longer is damage, not a frame. */
#define FRAME_STORED_MAX (SS_FRAME_MAX_LIMIT + (1u << 17))
#define IN_CAP (RANGE_MAX + FRAME_STORED_MAX)

struct dslot {
	struct ss_task task;       /* first: the pool hands it back as a task */
	struct ss_range g;         /* the GET */
	struct check *C;
	struct deep *D;
	size_t pack;               /* row in C->packs */
	uint32_t e0, e1;           /* its entries [e0, e1) */
	uint8_t *in;
	bool busy, queued;
	uint64_t bad, verified, raw;
	char why[200];
};

struct deep {
	struct check *C;
	struct ss_pool *pool;
	struct dslot *slots;
	size_t nslots;
	size_t pack;               /* next range starts at entry `entry` of this row */
	uint32_t entry;
	int failed;
	struct ss_err ferr;
};

static void slot_bad(struct dslot *s, struct cpack *p, uint32_t e, const char *why)
{
	if (!p->bad[e]) {
		p->bad[e] = 1;
		s->bad++;
	}
	if (!s->why[0]) {
		char hex[33];
		ss_hex(p->entries[e].id, 16, hex);
		snprintf(s->why, sizeof(s->why), "chunk %s at offset %" PRIu32 " %s", hex,
			 p->entries[e].offset, why);
	}
}

static void deep_chunk(void *arg, uint32_t k, struct ss_rchunk *out)
{
	struct dslot *s = arg;
	const struct ss_pack_entry *e = &s->C->packs[s->pack].entries[s->e0 + k];
	*out = (struct ss_rchunk){.id = e->id, .offset = e->offset, .stored_len = e->stored_len,
				  .raw_len = e->raw_len, .frame_off = e->frame_off,
				  .codec = e->codec};
}

static bool deep_bad(void *arg, uint32_t k, enum ss_range_bad why)
{
	struct dslot *s = arg;
	slot_bad(s, &s->C->packs[s->pack], s->e0 + k,
		 why == SS_RANGE_MISMATCH ? "does not match its id" : ss_range_why(why));
	return true;   /* every damaged chunk is counted */
}

static void deep_checked(void *arg, uint32_t k)
{
	struct dslot *s = arg;
	s->verified++;
	s->raw += s->C->packs[s->pack].entries[s->e0 + k].raw_len;
}

/* Worker: every chunk of the range, each frame decompressed once into the
 * worker's scratch. Entries were validated by the pack parser: frames lie
 * inside the data and chunks inside SS_FRAME_MAX_LIMIT. */
static void deep_work(struct ss_task *task, void *wp)
{
	struct dslot *s = (struct dslot *)task;
	struct cpack *p = &s->C->packs[s->pack];
	struct ss_rrun run = {.ids = s->C->ids, .in = s->in, .base = p->entries[s->e0].offset,
			      .n = s->e1 - s->e0, .at = deep_chunk, .bad = deep_bad,
			      .checked = deep_checked, .arg = s};
	ss_range_decode(wp, &run);
}

static void deep_free_slot(struct dslot *s)
{
	s->busy = false;
}

static void deep_task_done(struct ss_op *op, int res)
{
	(void)res;
	struct dslot *s = (struct dslot *)((char *)op - offsetof(struct ss_task, op));
	struct check *C = s->C;
	struct cpack *p = &C->packs[s->pack];
	C->st->chunks_verified += s->verified;
	C->st->bytes_verified += s->raw;
	C->st->chunks_damaged += s->bad;
	p->bad_chunks += s->bad;
	if (s->why[0] && !p->why)
		p->why = strdup(s->why);
	C->prog.bytes_done += s->g.req.len;
	deep_free_slot(s);
}

static void deep_get_done(struct ss_op *op, int res)
{
	struct ss_req *r = (struct ss_req *)op;
	struct dslot *s = r->user;
	struct deep *D = s->D;
	struct cpack *p = &s->C->packs[s->pack];
	enum ss_range_res rr = ss_range_result(&s->g, res);
	if (rr == SS_RANGE_MISSING) {
		/* Removed since it was read: a gc, with nothing referencing it. */
		pack_clear(p);
		p->state = P_MISSING;
	} else if (rr == SS_RANGE_FAILED) {
		if (!D->failed)
			ss_err_set(&D->ferr, res, "cannot read %s/%s: %s", s->C->store, s->g.key,
				   strerror(-res));
		D->failed = res;
	} else if (rr == SS_RANGE_SHORT) {
		for (uint32_t k = s->e0; k < s->e1; k++)
			slot_bad(s, p, k, "lies past the end of the pack (truncated)");
		s->C->st->chunks_damaged += s->bad;
		p->bad_chunks += s->bad;
		if (!p->why)
			p->why = strdup(s->why);
	} else {
		ss_pool_submit(D->pool, &s->task);
		return;
	}
	deep_free_slot(s);
}

/* Mark the chunks of a frame no snapshot can have written (longer than
 * any frame is) damaged without reading it. */
static void deep_oversized(struct deep *D, struct dslot *s, uint32_t j)
{
	struct check *C = D->C;
	struct cpack *p = &C->packs[D->pack];
	s->pack = D->pack;
	s->bad = 0;
	s->why[0] = '\0';
	for (uint32_t k = D->entry; k < j; k++)
		slot_bad(s, p, k, "is in a frame longer than any snapstream writes");
	C->st->chunks_damaged += s->bad;
	p->bad_chunks += s->bad;
	if (!p->why)
		p->why = strdup(s->why);
	D->entry = j;
}

/* The next range: whole frames of one pack, at most RANGE_MAX in all and
 * RANGE_GAP apart. Returns false when none is left. */
static bool deep_next(struct deep *D, struct dslot *s)
{
	struct check *C = D->C;
	while (D->pack < C->npacks) {
		struct cpack *p = &C->packs[D->pack];
		if (p->state != P_OK || D->entry >= p->count || !p->bad) {
			D->pack++;
			D->entry = 0;
			continue;
		}
		uint32_t i = D->entry;
		uint64_t off = p->entries[i].offset, end = off;
		while (i < p->count) {
			const struct ss_pack_entry *e = &p->entries[i];
			uint64_t fend = (uint64_t)e->offset + e->stored_len;
			uint32_t j = i + 1;   /* the chunks of one frame stay together */
			while (j < p->count && p->entries[j].offset == e->offset)
				j++;
			if (i > D->entry && (e->stored_len > FRAME_STORED_MAX ||
					     e->offset > end + RANGE_GAP || fend - off > RANGE_MAX))
				break;
			if (e->stored_len > FRAME_STORED_MAX) {
				deep_oversized(D, s, j);
				break;
			}
			end = SS_MAX(end, fend);
			i = j;
		}
		if (i == D->entry)
			continue;   /* an oversized frame, marked already */
		s->pack = D->pack;
		s->e0 = D->entry;
		s->e1 = i;
		D->entry = i;
		ss_range_prep(&s->g, p->id, off, end - off, s->in, deep_get_done, s);
		return true;
	}
	return false;
}

static int deep_check(struct check *C)
{
	struct deep D = {.C = C};
	int r = 0;
	uint64_t total = 0;
	for (size_t i = 0; i < C->npacks; i++) {
		struct cpack *p = &C->packs[i];
		if (p->state != P_OK)
			continue;
		if (p->count && !(p->bad = calloc(p->count, 1)))
			return oom(C);
		total += p->data_end;
	}
	D.nslots = C->cfg.threads + 2;
	D.slots = calloc(D.nslots, sizeof(*D.slots));
	if (!D.slots)
		return oom(C);
	if ((r = ss_pool_new(C->loop, C->cfg.threads, &ss_rdec_scratch_ops, &D.pool))) {
		ss_err_set(C->err, r, "cannot start workers: %s", strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < D.nslots; i++) {
		struct dslot *s = &D.slots[i];
		s->C = C;
		s->D = &D;
		s->task.run = deep_work;
		s->task.op.done = deep_task_done;
		if (!(s->in = ss_map_alloc(IN_CAP))) {
			r = oom(C);
			goto out;
		}
	}
	C->prog.phase = "deep";
	C->prog.items_total = 0;
	C->prog.bytes_total = total;
	C->prog.bytes_done = 0;
	bool more = true;
	for (;;) {
		size_t busy = 0;
		for (size_t i = 0; i < D.nslots; i++) {
			struct dslot *s = &D.slots[i];
			if (!s->busy && more && !D.failed) {
				s->bad = s->verified = s->raw = 0;
				s->why[0] = '\0';
				more = deep_next(&D, s);
				s->busy = s->queued = more;
			}
			if (s->busy && s->queued) {
				int sr = ss_range_submit(C->b, &s->g, &C->st->requests);
				if (sr == 0) {
					s->queued = false;
				} else if (sr != -EAGAIN) {
					D.failed = sr;
					ss_err_set(&D.ferr, sr, "cannot read %s/%s: %s", C->store, s->g.key,
						   strerror(-sr));
					s->busy = s->queued = false;
				}
			}
			busy += s->busy;
		}
		if (!busy)
			break;
		int t = ss_loop_turn(C->loop, true);
		if (t < 0) {
			r = ss_err_set(C->err, t, "event loop failed: %s", strerror(-t));
			break;
		}
		ss_tick(&C->cfg, &C->ticker, &C->prog, false);
	}
	if (!r && D.failed)
		r = ss_err_set(C->err, D.failed, "%s", D.ferr.msg);
out:
	ss_pool_free(D.pool);
	for (size_t i = 0; i < D.nslots; i++)
		if (D.slots[i].in)
			ss_map_free(D.slots[i].in, IN_CAP);
	free(D.slots);
	C->prog.bytes_total = 0;
	return r;
}

/* ---------------------------------------------------------------- snapshots */

static int snap_add(struct check *C, const char *uri, uint32_t *idx)
{
	if (C->nsnaps == C->snaps_cap) {
		size_t ncap = C->snaps_cap ? C->snaps_cap * 2 : 32;
		void *a = realloc(C->snaps, sizeof(*C->snaps) * ncap);
		if (!a)
			return oom(C);
		C->snaps = a;
		C->snaps_cap = ncap;
	}
	if (!(C->snaps[C->nsnaps] = strdup(uri)))
		return oom(C);
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
			return finding(C, SS_CHECK_REF_DANGLING, false, via, uri, 0, 0,
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
		return finding(C, SS_CHECK_SNAPSHOT_UNREADABLE, true, from_ref ? via : NULL, uri, 0, 0,
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
		return finding(C, SS_CHECK_SNAPSHOT_ELSEWHERE, false, NULL, uri, 0, 0,
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
		r = finding(C, SS_CHECK_SNAPSHOT_UNREADABLE, true, NULL, uri, 0, 0,
			    "its manifest's chunk ids (%s) are not its store's (%s): it was pushed "
			    "with another key, or the store's config was replaced",
			    m->keyed_ids ? "keyed" : "plain", C->keyed ? "keyed" : "plain") ? 0
											     : -ENOMEM;
		goto out;
	}
	if ((r = ensure_packs(C, (const uint8_t(*)[16])m->pack_ids, m->npacks)))
		goto out;
	struct cpack **pp = malloc(sizeof(*pp) * (m->npacks ? m->npacks : 1));
	if (!pp) {
		r = oom(C);
		goto out;
	}
	for (size_t p = 0; p < m->npacks; p++) {
		pp[p] = pack_find(C, m->pack_ids[p]);
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
	r = finding(C, SS_CHECK_SNAPSHOT_INCOMPLETE, true, NULL, uri, bad, 0,
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
 * refs/ that is no ref becomes a finding (and the others are read anyway),
 * else it is skipped. */
static int live_read(struct check *C, bool report, struct ss_live *lv)
{
	struct ss_err e = {0};
	int r = ss_live_read(C->b, C->loop, C->store, report, lv, &C->st->requests, &e);
	if (r == -EBADMSG && report) {
		if (!finding(C, SS_CHECK_REF_BAD, true, NULL, NULL, 0, 0,
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
	int r = live_read(C, true, &lv);
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
		size_t fi = finding(C, SS_CHECK_REF_MISSING, true, key, sib[i], 0, 0,
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
			r = oom(C);
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
		pack_name(p->id, key);
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
			p->finding = finding(C, SS_CHECK_PACK_MISSING, true, key, NULL, 0, 0,
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
			p->finding = finding(
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
			p->finding = finding(
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
			return oom(C);
	}
	if (unindexed &&
	    !(C->unindexed_finding = finding(
		      C, SS_CHECK_PACKS_UNINDEXED, true, NULL, NULL, 0, 0,
		      "%" PRIu64 " pack(s) that snapshots reference (%s...) are listed by no "
		      "index object: every push reads their trailers one by one, and dedups "
		      "against them only then; an index object can be rebuilt from them",
		      unindexed, first)))
		return oom(C);
	return 0;
}

/* ---------------------------------------------------------------- repair */

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
		return oom(C);
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
		r = ss_index_put(C->b, C->loop, v, n, &C->st->requests, &e);
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
	repaired(C, C->unindexed_finding, "a new index object lists them");
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
		repaired(C, x->finding, "deleted; a new index object lists its readable packs");
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
		repaired(C, C->ref_missing_finding[i], "ref written");
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
		repaired(C, C->state_finding,
			 "deleted; gc hides unreferenced packs again, with a fresh grace period");
	}
	if (!C->ntomb_bad)
		return 0;
	struct ss_tombstone t = {
		.snapshot = (char *)"(unknown: a damaged record replaced by snapstream check --repair)",
		.removed_ns = ss_wall_ns()};
	if (!(t.packs = malloc(16 * (C->npacks ? C->npacks : 1))))
		return oom(C);
	/* Not damaged packs: gc would un-hide one that repair hides. */
	for (size_t i = 0; i < C->npacks; i++)
		if (C->packs[i].listed && C->packs[i].state == P_OK && !C->packs[i].bad_chunks)
			memcpy(t.packs[t.npacks++], C->packs[i].id, 16);
	uint8_t *buf = NULL;
	size_t len = 0;
	r = ss_tombstone_encode(&t, &buf, &len);
	free(t.packs);
	if (r)
		return oom(C);
	for (size_t i = 0; !r && i < C->ntomb_bad; i++) {
		struct ss_err e = {0};
		r = ss_put_object(C->b, C->loop, C->tomb_bad[i], buf, len, 0, &C->st->requests, &e);
		if (r) {
			ss_err_set(C->err, r, "cannot rewrite %s/%s: %s", C->store, C->tomb_bad[i],
				   e.msg[0] ? e.msg : strerror(-r));
			break;
		}
		C->st->records_repaired++;
		repaired(C, C->tomb_bad_finding[i],
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
	int r = live_read(C, false, &lv);
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
			struct cpack *cp = pack_find(C, m->pack_ids[p]);
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
	pack_name(p->id, key);
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
	repaired(C, p->finding, "moved to %s", dst);
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
			r = oom(C);
	if (!r) {
		ss_gcstate_sort(&state);
		if ((r = ss_gcstate_encode(&state, &buf, &len)))
			oom(C);
	}
	if (!r && (r = ss_put_object(C->b, C->loop, SS_GC_STATE_KEY, buf, len, 0,
				     &C->st->requests, &e)))
		ss_err_set(C->err, r, "cannot write %s/%s: %s", C->store, SS_GC_STATE_KEY,
			   e.msg[0] ? e.msg : strerror(-r));
	free(buf);
	ss_gcstate_free(&state);
	for (size_t i = 0; !r && i < n; i++) {
		C->st->packs_hidden_now++;
		repaired(C, hide[i]->finding,
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
		r = oom(C);
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

static int repair(struct check *C)
{
	int r;
	C->prog.phase = "repair";
	C->prog.items_total = C->prog.items_done = 0;
	ss_tick(&C->cfg, &C->ticker, &C->prog, true);
	if ((r = repair_records(C)) || (r = repair_index(C)) || (r = repair_refs(C)))
		return r;
	return repair_packs(C);
}

/* ---------------------------------------------------------------- entry */

static void check_free(struct check *C)
{
	for (size_t i = 0; i < C->npacks; i++)
		pack_clear(&C->packs[i]);
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
	if ((r = ss_loop_new(256, &C->loop)))
		return ss_err_set(C->err, r, "cannot set up io_uring: %s", strerror(-r));
	if ((r = ss_store_backend_open(o->store, C->loop, &C->cfg, &C->b, C->err)))
		return r;
	if (o->repair) {
		if ((r = ss_gclock_take(C->b, C->loop, o->store, "check --repair", o->break_lock,
					&C->st->requests, C->err)))
			return r;
		C->locked = true;
	}
	if ((r = read_config(C)) || (r = read_gc_state(C)) || (r = read_all_packs(C)) ||
	    (r = read_tombstones(C)) || (r = read_all_index(C)))
		return r;
	if (o->deep && (r = deep_check(C)))
		return r;
	if ((r = check_snapshots(C)) || (r = read_all_index(C)) || (r = judge_packs(C)))
		return r;
	if (o->repair && (r = repair(C)))
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
	if (!st)
		st = &local_st;
	memset(st, 0, sizeof(*st));
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
				       opts->store, left, opts->repair ? " that repair cannot fix" : "");
	}
out:
	check_free(&C);
	st->seconds = (double)(ss_now_ns() - t0) / 1e9;
	if (r && errbuf && errlen)
		snprintf(errbuf, errlen, "%s", err.msg[0] ? err.msg : strerror(-r));
	return r;
}
