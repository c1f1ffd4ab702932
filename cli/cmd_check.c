/* snapstream check [--repair] [--deep]: every finding on its own line (or
 * in one JSON object), then a summary; exit 0 when the store has no
 * problem left, 4 when it has. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct check_flags {
	bool repair, deep;
};

/* Findings kept until the summary is known (JSON wants them inside). */
struct found {
	struct ss_check_finding *v;
	size_t n, cap;
	bool oom;
};

static char *dup_or_null(const char *s, bool *oom)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

static void on_finding(void *arg, const struct ss_check_finding *f)
{
	struct found *fs = arg;
	if (fs->n == fs->cap) {
		size_t ncap = fs->cap ? fs->cap * 2 : 32;
		void *a = realloc(fs->v, sizeof(*fs->v) * ncap);
		if (!a) {
			fs->oom = true;
			return;
		}
		fs->v = a;
		fs->cap = ncap;
	}
	struct ss_check_finding *d = &fs->v[fs->n++];
	*d = *f;
	d->object = dup_or_null(f->object, &fs->oom);
	d->snapshot = dup_or_null(f->snapshot, &fs->oom);
	d->message = dup_or_null(f->message, &fs->oom);
}

static void found_free(struct found *fs)
{
	for (size_t i = 0; i < fs->n; i++) {
		free((char *)fs->v[i].object);
		free((char *)fs->v[i].snapshot);
		free((char *)fs->v[i].message);
	}
	free(fs->v);
}

static const char *kind_name(enum ss_check_kind k)
{
	switch (k) {
	case SS_CHECK_PACK_DAMAGED: return "damaged-pack";
	case SS_CHECK_PACK_MISSING: return "missing-pack";
	case SS_CHECK_PACK_ORPHAN: return "orphan-pack";
	case SS_CHECK_PACK_FOREIGN: return "foreign-object";
	case SS_CHECK_SNAPSHOT_INCOMPLETE: return "incomplete-snapshot";
	case SS_CHECK_SNAPSHOT_UNREADABLE: return "unreadable-snapshot";
	case SS_CHECK_SNAPSHOT_ELSEWHERE: return "snapshot-elsewhere";
	case SS_CHECK_INDEX_DAMAGED: return "damaged-index";
	case SS_CHECK_INDEX_STALE: return "stale-index";
	case SS_CHECK_PACKS_UNINDEXED: return "unindexed-packs";
	case SS_CHECK_REF_MISSING: return "missing-ref";
	case SS_CHECK_REF_DANGLING: return "dangling-ref";
	case SS_CHECK_REF_BAD: return "bad-ref";
	case SS_CHECK_RECORD_DAMAGED: return "damaged-record";
	case SS_CHECK_GC_RUNNING: return "gc-running";
	}
	return "finding";
}

/* Phases that count objects, with their unit; deep counts bytes. */
static void check_progress(void *arg, const struct ss_progress *p)
{
	struct cli *c = arg;
	if (p->bytes_total || !p->items_total) {
		cli_progress_cb(arg, p);
		return;
	}
	const char *what = !strcmp(p->phase, "index") ? "index objects" : p->phase;
	fprintf(stderr, "\r\033[K%-9s %" PRIu64 "/%" PRIu64 " %s", p->phase, p->items_done,
		p->items_total, what);
	fflush(stderr);
	c->bar.drawn = true;
}

static void print_json(const char *store, const struct check_flags *fl,
		       const struct ss_check_stats *st, const struct found *fs, int r,
		       const char *err)
{
	struct json j;
	json_begin(&j, stdout);
	json_obj(&j, NULL);
	json_bool(&j, "ok", r == 0);
	json_str(&j, "op", "check");
	if (r) {
		json_i64(&j, "exit", cli_exit_code(r));
		json_str(&j, "error", err);
	}
	json_str(&j, "store", store);
	json_bool(&j, "repair", fl->repair);
	json_bool(&j, "deep", fl->deep);
	json_u64(&j, "problems", st->problems);
	json_u64(&j, "repaired", st->repaired);
	json_u64(&j, "packs", st->packs);
	json_u64(&j, "pack_bytes", st->pack_bytes);
	json_u64(&j, "packs_ok", st->packs_ok);
	json_u64(&j, "packs_damaged", st->packs_damaged);
	json_u64(&j, "packs_missing", st->packs_missing);
	json_u64(&j, "packs_orphaned", st->packs_orphaned);
	json_u64(&j, "packs_hidden", st->packs_hidden);
	json_u64(&j, "index_objects", st->index_objects);
	json_u64(&j, "index_ok", st->index_ok);
	json_u64(&j, "index_damaged", st->index_damaged);
	json_u64(&j, "snapshots", st->snapshots);
	json_u64(&j, "snapshots_incomplete", st->snapshots_incomplete);
	json_u64(&j, "snapshots_unreadable", st->snapshots_unreadable);
	json_u64(&j, "refs_missing", st->refs_missing);
	json_u64(&j, "refs_dangling", st->refs_dangling);
	json_u64(&j, "chunks", st->chunks);
	json_u64(&j, "chunks_missing", st->chunks_missing);
	json_u64(&j, "chunks_verified", st->chunks_verified);
	json_u64(&j, "bytes_verified", st->bytes_verified);
	json_u64(&j, "chunks_damaged", st->chunks_damaged);
	json_u64(&j, "index_written", st->index_written);
	json_u64(&j, "index_deleted", st->index_deleted);
	json_u64(&j, "refs_written", st->refs_written);
	json_u64(&j, "packs_quarantined", st->packs_quarantined);
	json_u64(&j, "packs_hidden_now", st->packs_hidden_now);
	json_u64(&j, "records_repaired", st->records_repaired);
	json_u64(&j, "requests", st->requests);
	json_f64(&j, "seconds", st->seconds);
	json_arr(&j, "findings");
	for (size_t i = 0; i < fs->n; i++) {
		const struct ss_check_finding *f = &fs->v[i];
		json_obj(&j, NULL);
		json_str(&j, "kind", kind_name(f->kind));
		json_bool(&j, "problem", f->problem);
		json_bool(&j, "repairable", f->repairable);
		json_bool(&j, "repaired", f->repaired);
		if (f->object)
			json_str(&j, "object", f->object);
		if (f->snapshot)
			json_str(&j, "snapshot", f->snapshot);
		if (f->chunks)
			json_u64(&j, "chunks", f->chunks);
		if (f->bytes)
			json_u64(&j, "bytes", f->bytes);
		json_str(&j, "message", f->message);
		json_end_obj(&j);
	}
	json_end_arr(&j);
	json_end_obj(&j);
	json_finish(&j);
}

/* One line per finding: its status, kind and subject, then what it means. */
static void print_human(const struct cli *c, const char *store, const struct check_flags *fl,
			const struct ss_check_stats *st, const struct found *fs)
{
	for (size_t i = 0; i < fs->n; i++) {
		const struct ss_check_finding *f = &fs->v[i];
		if (c->quiet && !(f->problem && !f->repaired))
			continue;
		const char *tag = f->repaired ? "REPAIRED" : f->problem ? "PROBLEM" : "note";
		const char *subject = f->snapshot ? f->snapshot : f->object ? f->object : store;
		printf("%-8s %s %s: %s%s\n", tag, kind_name(f->kind), subject, f->message,
		       f->problem && f->repairable && !f->repaired ? " [--repair fixes this]" : "");
	}
	if (c->quiet)
		return;
	char b[32];
	cli_human((double)st->pack_bytes, b, sizeof(b));
	printf("%s: %" PRIu64 " pack(s) (%s), %" PRIu64 " index object(s), %" PRIu64
	       " snapshot(s), %" PRIu64 " chunk reference(s) checked",
	       store, st->packs, b, st->index_objects, st->snapshots, st->chunks);
	if (fl->deep) {
		cli_human((double)st->bytes_verified, b, sizeof(b));
		printf(", %" PRIu64 " chunk(s) (%s) decompressed and verified", st->chunks_verified, b);
	}
	printf(" in %.2fs\n", st->seconds);
	uint64_t left = st->problems - st->repaired;
	if (!st->problems)
		printf("clean: no problems (%" PRIu64 " orphan pack(s))\n", st->packs_orphaned);
	else if (fl->repair)
		printf("%" PRIu64 " problem(s) found, %" PRIu64 " repaired, %" PRIu64 " left\n",
		       st->problems, st->repaired, left);
	else
		printf("%" PRIu64 " problem(s) found\n", st->problems);
}

static int check_run(struct cli *c, const struct check_flags *fl)
{
	const char *store = c->store ? cli_store(c) : NULL;
	if (!store) {
		c->store = ".snapstream";
		store = cli_store(c);
	}
	c->subject = store;
	if (c->bar.on)
		c->cfg.progress = check_progress;
	struct found fs = {0};
	struct ss_check_opts o = {.size = sizeof(o), .store = store, .repair = fl->repair,
				  .deep = fl->deep, .break_lock = c->break_lock,
				  .on_finding = on_finding, .arg = &fs};
	struct ss_check_stats st = SS_CHECK_STATS_INIT;
	char err[1024];
	int r = ss_check(&o, &c->cfg, &st, err, sizeof(err));
	cli_progress_clear(c);
	if (!r && fs.oom) {
		r = -ENOMEM;
		snprintf(err, sizeof(err), "out of memory");
	}
	/* Problems found are a result, printed in full; anything else is a
	 * check that could not run. */
	bool problems = r == -EBADMSG && st.problems > st.repaired;
	if (r && !problems) {
		cli_error(c, r, err);
		found_free(&fs);
		return cli_exit_code(r);
	}
	if (c->json)
		print_json(store, fl, &st, &fs, r, err);
	else
		print_human(c, store, fl, &st, &fs);
	if (problems && !c->json)
		fprintf(stderr, "%s check: %s\n", c->prog, err);
	found_free(&fs);
	return cli_exit_code(r);
}

int cmd_check(struct cli *c)
{
	const struct check_flags fl = {.repair = c->repair, .deep = c->deep};
	return check_run(c, &fl);
}
