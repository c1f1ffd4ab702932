/* check --deep: every chunk of every readable pack read, decompressed and
 * hashed, through the range reader (core/range.c). */
#include "check.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	int err;                   /* the worker could not open frames at all */
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
	/* A sealed store's frames open with their pack's key (crypt.h). */
	if ((s->err = ss_rdec_aead(wp, s->C->ids->crypt, p->id, &run.aead)))
		return;   /* not the pack's fault: never counted as damage */
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
	if (s->err && !s->D->failed) {
		s->D->failed = s->err;
		ss_err_set(&s->D->ferr, s->err, "cannot open the frames of %s/%s: %s", C->store,
			   s->g.key, strerror(-s->err));
	}
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
		check_pack_clear(p);
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

int check_deep(struct check *C)
{
	struct deep D = {.C = C};
	int r = 0;
	uint64_t total = 0;
	for (size_t i = 0; i < C->npacks; i++) {
		struct cpack *p = &C->packs[i];
		if (p->state != P_OK)
			continue;
		if (p->count && !(p->bad = calloc(p->count, 1)))
			return check_oom(C);
		total += p->data_end;
	}
	D.nslots = C->cfg.threads + 2;
	D.slots = calloc(D.nslots, sizeof(*D.slots));
	if (!D.slots)
		return check_oom(C);
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
			r = check_oom(C);
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
				s->err = 0;
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
