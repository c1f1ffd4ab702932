/* oread — a snapshot's files in file order, every chunk verified (see
 * pull.h). */
#include "pull.h"
#include "crypt.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "xxh.h"
#include <zstd.h>

#define OR_RANGE (4u << 20)     /* stored bytes per GET (one frame may overrun) */
#define OR_RAW (4u << 20)       /* decompressed bytes per unit (likewise) */
#define OR_GAP (256u << 10)     /* read through gaps up to this size */
#define OR_MAX_EXT 4096u        /* extents per unit */
#define OR_FRAME_LOOKBACK 8     /* frames searched for a repeat within a unit */
#define OR_MAX_UNITS 16u
/* Decoded frames kept for the units that follow (see dc_get). */
#define OR_DCACHE 32u

struct oframe {
	uint64_t off;
	uint32_t stored;
	uint32_t need;              /* decompress the frame this far */
	uint32_t dec_off;           /* where, in the unit's dec buffer */
	uint8_t codec;
	bool copy;                  /* an earlier frame's, decoded again */
	bool from_dc;               /* copied out of the decoded-frame cache */
	uint32_t have;              /* bytes of it decoded at dec_off (>= need) */
};

/* A decoded frame prefix, kept for the next units. */
struct dframe {
	uint32_t pack;
	uint64_t off;
	uint32_t stored, len;
	uint64_t used;              /* for LRU */
	uint8_t *buf;               /* dc_cap bytes, or NULL until first kept */
	bool busy;                  /* being decoded by the worker that claimed it */
};

struct ounit {
	struct ss_task task;        /* worker: decode and verify */
	struct ss_range g;          /* the GET */
	struct ss_oread *R;
	uint64_t seq;
	struct ss_ounit_view v;
	bool has_range;
	uint32_t pack;
	uint64_t rs, re;            /* stored range [rs, re) of the pack */
	struct oframe *frames;
	uint32_t nframes;
	uint32_t *fidx;             /* per extent: its frame, or UINT32_MAX */
	const uint8_t **ptr;
	uint8_t *in, *dec;
	uint32_t dec_len;
	bool ready;
	bool again;                 /* read its range again, from the store */
	bool retried;               /* ...and so trusts no kept frame */
	int err;
	struct ss_err werr;
	struct ounit *next_free;
};

struct ss_oread {
	const struct ss_oread_opts *o;
	const struct ss_manifest *m;
	struct ss_err *err;
	bool failed;
	struct ss_pool *pool;
	struct ounit *units;
	unsigned nunits;
	struct ounit *free_units;
	struct ounit *retry;        /* units whose cached bytes were bad */
	struct ounit **by_seq;      /* nunits slots: seq % nunits */
	uint8_t *mem;
	size_t mem_len, in_cap, dec_cap;
	uint64_t next_seq, deliver_seq;
	unsigned gets, tasks, held, max_gets;
	struct ounit *pending;      /* built, its GET refused with -EAGAIN */
	/* Cursor: the next extent to put in a unit. */
	uint32_t cf;
	size_t ce;
	uint64_t coff;
	bool cursor_done;
	/* The digest of the file being delivered. */
	struct ss_fdigest *hs;
	uint32_t hfile;
	/* Decoded frames shared by the workers (dc_get, dc_fill). */
	pthread_mutex_t dmu;
	pthread_cond_t dcv;
	struct dframe dc[OR_DCACHE];
	size_t dc_cap;
	uint64_t dc_tick;
};

void ss_oread_fail(struct ss_oread *R, int code, const char *fmt, ...)
{
	if (R->failed)
		return;
	R->failed = true;
	if (R->err->code)
		return;
	R->err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(R->err->msg, sizeof(R->err->msg), fmt, ap);
	va_end(ap);
}

bool ss_oread_failed(const struct ss_oread *R)
{
	return R->failed;
}

struct ss_oread *ss_oread_of(void *unit)
{
	return ((struct ounit *)unit)->R;
}

/* ---------------------------------------------------------------- units */

/* The decoded-frame cache. Units follow the file, and a unit ends where
 * the next extent lies in another pack or far from its range: a chunk
 * stored earlier (a repeated page, a region copied from elsewhere in the
 * image) takes a unit of its own, and the unit after it resumes the frame
 * the one before had decoded, decoding it again from its start (zstd
 * frames decode from their start; oread decodes a frame whole when it
 * fits). A 256 MiB memory-like image, 14 % of it such repeats, made 1,232
 * units that decoded 1,343 frames, 641 MB for its 145 MB of distinct
 * chunks: `verify` and `cat` took 0.5 s and 0.75 CPU-s where a pull,
 * which decodes each frame once, took 0.1 s. So each unit's last frame,
 * the one the units after it are likely to resume, is kept here once
 * decoded (a copy of at most a frame), and a unit needing a kept frame
 * copies the bytes it needs instead of decoding them; a frame another
 * worker is decoding for the cache is waited for, not decoded twice (the
 * next unit is often on the other worker at the same time). A worker
 * that waits holds no entry of its own, so waits cannot form a cycle.
 * Every chunk is still checked against its id wherever its bytes came
 * from; kept bytes that fail the check are dropped and the frame decoded
 * from the unit's own bytes, and a unit read again from the store (bad
 * bytes from the node cache) uses none. */
static struct dframe *dc_find(struct ss_oread *R, uint32_t pack, const struct oframe *fr)
{
	for (unsigned i = 0; i < OR_DCACHE; i++) {
		struct dframe *d = &R->dc[i];
		if ((d->busy || d->len) && d->pack == pack && d->off == fr->off &&
		    d->stored == fr->stored)
			return d;
	}
	return NULL;
}

/* Copy fr's first fr->need bytes to dst if they are kept (waiting while
 * another worker decodes them): true. Otherwise false, and with claim,
 * *mine is an entry this worker must fill (dc_fill) or give up
 * (dc_fill with src NULL), or NULL when every entry is being filled. */
static bool dc_get(struct ss_oread *R, uint32_t pack, const struct oframe *fr, uint8_t *dst,
		   bool claim, struct dframe **mine)
{
	*mine = NULL;
	pthread_mutex_lock(&R->dmu);
	struct dframe *d;
	while ((d = dc_find(R, pack, fr)) && d->busy)
		pthread_cond_wait(&R->dcv, &R->dmu);
	bool hit = d && d->len >= fr->need;
	if (hit) {
		memcpy(dst, d->buf, fr->need);
		d->used = ++R->dc_tick;
	} else if (claim && fr->need <= R->dc_cap) {
		/* The frame's shorter entry, else the least recently used. */
		struct dframe *v = d;
		if (!v)
			for (unsigned i = 0; i < OR_DCACHE; i++) {
				struct dframe *x = &R->dc[i];
				if (!x->busy && (!v || x->used < v->used))
					v = x;
			}
		if (v) {
			v->busy = true;
			v->pack = pack;
			v->off = fr->off;
			v->stored = fr->stored;
			v->len = 0;
			v->used = ++R->dc_tick;
			*mine = v;
		}
	}
	pthread_mutex_unlock(&R->dmu);
	return hit;
}

/* Fill the entry dc_get gave: n bytes from src (NULL: the frame did not
 * decode, or its chunks did not check), and wake whoever waits for it. */
static void dc_fill(struct ss_oread *R, struct dframe *d, const uint8_t *src, size_t n)
{
	if (!d)
		return;
	/* Only this worker touches a busy entry's bytes. */
	if (src && n <= R->dc_cap && !d->buf)
		d->buf = malloc(R->dc_cap);
	bool ok = src && n <= R->dc_cap && d->buf;
	if (ok)
		memcpy(d->buf, src, n);
	pthread_mutex_lock(&R->dmu);
	d->len = ok ? (uint32_t)n : 0;
	d->busy = false;
	pthread_cond_broadcast(&R->dcv);
	pthread_mutex_unlock(&R->dmu);
}

static void dc_drop(struct ss_oread *R, uint32_t pack, const struct oframe *fr)
{
	pthread_mutex_lock(&R->dmu);
	struct dframe *d = dc_find(R, pack, fr);
	if (d && !d->busy)
		d->len = 0;
	pthread_mutex_unlock(&R->dmu);
}

static uint64_t file_off_of(const struct ss_mfile *f, size_t e)
{
	uint64_t off = 0;
	for (size_t i = 0; i < e; i++)
		off += f->ext[i].len;
	return off;
}

/* Fill u with the extents from the cursor on: same file, one pack range,
 * within the budgets. Always takes at least one extent (or the empty
 * file). */
static void build_unit(struct ss_oread *R, struct ounit *u)
{
	const struct ss_manifest *m = R->m;
	const struct ss_mfile *f = &m->files[R->cf];
	u->v.file = R->cf;
	u->v.e0 = R->ce;
	u->v.off = R->coff;
	u->v.len = 0;
	u->has_range = false;
	u->nframes = 0;
	u->dec_len = 0;
	u->ready = false;
	u->retried = false;
	u->err = 0;
	ss_err_clear(&u->werr);
	uint64_t raw = 0;
	size_t e = R->ce;
	for (; e < f->next && e - u->v.e0 < OR_MAX_EXT; e++) {
		const struct ss_mextent *x = &f->ext[e];
		size_t i = e - u->v.e0;
		if (!x->chunk) {
			u->fidx[i] = UINT32_MAX;
			/* A unit of zero runs only is never decoded (unit_work
			 * sets the others): this slot may hold a pointer from
			 * the unit's previous use. */
			u->ptr[i] = NULL;
			u->v.len += x->len;
			continue;
		}
		const struct ss_chunk_ref *c = &m->chunks[x->chunk - 1];
		uint64_t fend = c->offset + c->stored_len;
		/* The frame, if this unit already holds it. */
		uint32_t fi = UINT32_MAX;
		/* A sealed frame is opened in place, once: it must be found
		 * however far back it is. */
		for (uint32_t k = u->nframes;
		     k > 0 && (m->sealed || u->nframes - k < OR_FRAME_LOOKBACK); k--) {
			const struct oframe *fr = &u->frames[k - 1];
			if (fr->off == c->offset && fr->stored == c->stored_len && fr->codec == c->codec) {
				fi = k - 1;
				break;
			}
		}
		uint64_t rs = u->rs, re = u->re;
		if (u->has_range) {
			if (c->pack != u->pack)
				break;
			/* The gap to this frame, before or after the range. */
			uint64_t gs = c->offset >= re ? re : fend, ge = c->offset >= re ? c->offset : rs;
			if ((c->offset >= re || fend <= rs) &&
			    (ge - gs > OR_GAP ||
			     !ss_ncache_holds(R->o->store, m->pack_ids[c->pack], gs, ge - gs)))
				break;
			rs = SS_MIN(rs, c->offset);
			re = SS_MAX(re, fend);
			if (re - rs > OR_RANGE)
				break;
		}
		uint32_t need = c->codec == SS_CODEC_ZSTD ? c->frame_off + c->raw_len : 0;
		uint32_t grow = 0;
		if (c->codec == SS_CODEC_ZSTD)
			grow = fi == UINT32_MAX ? need
			       : need > u->frames[fi].need ? need - u->frames[fi].need : 0;
		if (raw && (u->dec_len + grow > OR_RAW || raw + c->raw_len > 2 * OR_RAW))
			break;
		if (fi == UINT32_MAX && u->nframes == OR_MAX_EXT)
			break;
		/* Take it. */
		if (!u->has_range) {
			u->has_range = true;
			u->pack = c->pack;
			rs = c->offset;
			re = fend;
		}
		u->rs = rs;
		u->re = re;
		if (fi == UINT32_MAX) {
			fi = u->nframes++;
			u->frames[fi] = (struct oframe){.off = c->offset, .stored = c->stored_len,
							.codec = c->codec};
		}
		struct oframe *fr = &u->frames[fi];
		if (c->codec == SS_CODEC_ZSTD && need > fr->need) {
			/* Frames grow in place only at the end of dec; an earlier
			 * frame needing more is decoded again as a new frame. */
			if (fr->need && fi != u->nframes - 1) {
				fi = u->nframes++;
				fr = &u->frames[fi];
				*fr = (struct oframe){.off = c->offset, .stored = c->stored_len,
						      .codec = c->codec, .dec_off = u->dec_len,
						      .copy = true};
				grow = need;
			} else if (!fr->need) {
				fr->dec_off = u->dec_len;
			}
			fr->need = need;
			u->dec_len += grow;
		}
		u->fidx[i] = fi;
		raw += c->raw_len;
		u->v.len += x->len;
	}
	u->v.e1 = e;
	R->ce = e;
	R->coff += u->v.len;
	if (e == f->next) {
		R->cf++;
		R->ce = 0;
		R->coff = 0;
		if (R->cf >= R->o->file_end)
			R->cursor_done = true;
	}
}

/* Name the first extent of u that needs frame k, in err. */
static int frame_fail(struct ounit *u, uint32_t k, enum ss_range_bad why)
{
	struct ss_oread *R = u->R;
	const struct ss_manifest *m = R->m;
	const struct ss_mfile *f = &m->files[u->v.file];
	size_t i = 0;
	while (u->fidx[i] != k)
		i++;
	const struct ss_chunk_ref *c = &m->chunks[f->ext[u->v.e0 + i].chunk - 1];
	char hex[33];
	ss_hex(c->id, 16, hex);
	return ss_err_set(&u->werr, -EBADMSG,
			  "snapshot %s: file '%s' at offset %llu: chunk %s %s (pack %s)",
			  R->o->snapshot, f->name,
			  (unsigned long long)(u->v.off + file_off_of(f, u->v.e0 + i) -
					       file_off_of(f, u->v.e0)),
			  hex, ss_range_why(why), u->g.key);
}

static void unit_work(struct ss_task *task, void *wp)
{
	struct ounit *u = (struct ounit *)task;
	struct ss_oread *R = u->R;
	const struct ss_manifest *m = R->m;
	const struct ss_mfile *f = &m->files[u->v.file];
	u->err = 0;
	/* A sealed store's frames are opened in place, each once, before a
	 * byte of them is used. */
	struct ss_aead *a = NULL;
	int r = ss_rdec_aead(wp, R->o->cfg->ids.crypt, m->pack_ids[u->pack], &a);
	if (r) {
		u->err = ss_err_set(&u->werr, r, "cannot open pack %s: %s", u->g.key, strerror(-r));
		return;
	}
	uint32_t tag = a ? SS_SEAL_TAG_BYTES : 0;
	for (uint32_t k = 0; a && k < u->nframes; k++) {
		const struct oframe *fr = &u->frames[k];
		if (!fr->copy && ss_crypt_frame_open(a, fr->off, fr->codec, u->in + (fr->off - u->rs),
						     fr->stored)) {
			u->err = frame_fail(u, k, SS_RANGE_FORGED);
			return;
		}
	}
	/* The unit's last frame is the one units after it may resume. */
	uint32_t last = UINT32_MAX;
	for (uint32_t k = 0; k < u->nframes; k++)
		if (u->frames[k].codec == SS_CODEC_ZSTD && u->frames[k].need)
			last = k;
	struct dframe *mine = NULL;
	for (uint32_t k = 0; k < u->nframes; k++) {
		struct oframe *fr = &u->frames[k];
		fr->from_dc = false;
		if (fr->codec != SS_CODEC_ZSTD || !fr->need)
			continue;
		struct dframe *claimed = NULL;
		if (!u->retried &&
		    dc_get(R, u->pack, fr, u->dec + fr->dec_off, k == last, &claimed)) {
			fr->from_dc = true;
			continue;
		}
		mine = claimed;
		size_t got = ss_range_frame(wp, u->in + (fr->off - u->rs), fr->stored - tag,
					    u->dec + fr->dec_off, fr->need, R->dec_cap - fr->dec_off);
		if (!got) {
			dc_fill(R, mine, NULL, 0);
			u->err = frame_fail(u, k, SS_RANGE_UNDECODABLE);
			return;
		}
		fr->have = (uint32_t)SS_MIN(got, (size_t)UINT32_MAX);
	}
	uint64_t off;
check:
	off = u->v.off;
	for (size_t e = u->v.e0; e < u->v.e1; e++) {
		size_t i = e - u->v.e0;
		const struct ss_mextent *x = &f->ext[e];
		u->ptr[i] = NULL;
		if (x->chunk) {
			const struct ss_chunk_ref *c = &m->chunks[x->chunk - 1];
			const struct oframe *fr = &u->frames[u->fidx[i]];
			const uint8_t *p = c->codec == SS_CODEC_RAW
						   ? u->in + (c->offset - u->rs) + c->frame_off
						   : u->dec + fr->dec_off + c->frame_off;
			struct ss_rchunk rc = {.id = c->id, .raw_len = c->raw_len};
			bool ok = ss_range_chunk_ok(R->o->ids, p, &rc);
			if (!ok && fr->from_dc) {
				/* Kept bytes that do not check: drop them, decode
				 * the frame from this unit's own bytes (exactly its
				 * need: a whole frame would run into the frames after
				 * it), and check every chunk again, those taken from
				 * the kept bytes included. */
				struct oframe *w = &u->frames[u->fidx[i]];
				dc_drop(R, u->pack, w);
				w->from_dc = false;
				if (ss_range_frame(wp, u->in + (w->off - u->rs), w->stored - tag,
						   u->dec + w->dec_off, w->need, w->need))
					goto check;
			}
			if (!ok) {
				dc_fill(R, mine, NULL, 0);
				char hex[33];
				ss_hex(c->id, 16, hex);
				u->err = ss_err_set(&u->werr, -EBADMSG,
						    "snapshot %s: file '%s' at offset %llu: chunk %s %s "
						    "(pack %s)",
						    R->o->snapshot, f->name, (unsigned long long)off, hex,
						    ss_range_why(SS_RANGE_MISMATCH), u->g.key);
				return;
			}
			u->ptr[i] = p;
		}
		off += x->len;
	}
	/* Kept only once its chunks checked. */
	if (mine)
		dc_fill(R, mine, u->dec + u->frames[last].dec_off, u->frames[last].have);
}

static void try_deliver(struct ss_oread *R);

static void unit_done(struct ss_op *op, int res)
{
	(void)res;
	struct ounit *u = (struct ounit *)((char *)op - offsetof(struct ss_task, op));
	struct ss_oread *R = u->R;
	R->tasks--;
	if (u->err && !R->failed && ss_range_retry(&u->g)) {
		u->err = 0;
		ss_err_clear(&u->werr);
		u->again = true;
		u->retried = true;
		u->next_free = R->retry;
		R->retry = u;
		return;
	}
	if (u->err)
		ss_oread_fail(R, u->err, "%s", u->werr.msg);
	u->ready = true;
}

static void get_done(struct ss_op *op, int res)
{
	struct ss_req *req = (struct ss_req *)op;
	struct ounit *u = req->user;
	struct ss_oread *R = u->R;
	R->gets--;
	if (ss_range_result(&u->g, res) != SS_RANGE_OK) {
		const struct ss_mfile *f = &R->m->files[u->v.file];
		char where[PATH_MAX + 128];
		snprintf(where, sizeof(where), "snapshot %s: file '%s' at offset %llu: ",
			 R->o->snapshot, f->name, (unsigned long long)u->v.off);
		struct ss_err e = {0};
		int code = ss_range_explain(&u->g, res, where, &e);
		ss_oread_fail(R, code, "%s", e.msg);
		u->ready = true;
		return;
	}
	R->o->st->transferred_bytes += (uint64_t)res;
	R->o->prog->stored_bytes += (uint64_t)res;
	if (R->failed) {
		u->ready = true;
		return;
	}
	R->tasks++;
	ss_pool_submit(R->pool, &u->task);
}

static int submit_get(struct ss_oread *R, struct ounit *u)
{
	if (!u->again)   /* a retry submits its GET as ss_range_retry left it */
		ss_range_prep(&u->g, R->m->pack_ids[u->pack], u->rs, u->re - u->rs, u->in,
			      get_done, u);
	int r = ss_range_submit(R->o->store, &u->g, &R->o->st->requests);
	if (r == 0) {
		R->gets++;
		u->again = false;
	}
	return r;
}

/* Start units while there are free ones and room for GETs. */
static void fill(struct ss_oread *R)
{
	while (!R->failed) {
		struct ounit *u = R->pending;
		if (!u && R->retry) {
			u = R->retry;
			R->retry = u->next_free;
		}
		if (!u) {
			if (R->cursor_done || !R->free_units)
				return;
			u = R->free_units;
			R->free_units = u->next_free;
			u->seq = R->next_seq++;
			R->by_seq[u->seq % R->nunits] = u;
			build_unit(R, u);
			if (!u->has_range) {
				u->ready = true;   /* zero runs only: nothing to fetch */
				continue;
			}
		}
		if (R->gets >= R->max_gets) {
			R->pending = u;
			return;
		}
		int r = submit_get(R, u);
		if (r == -EAGAIN) {
			R->pending = u;
			return;
		}
		R->pending = NULL;
		if (r) {
			ss_oread_fail(R, r, "snapshot %s: cannot request pack %s: %s", R->o->snapshot,
				      u->g.key, strerror(-r));
			u->ready = true;
			return;
		}
	}
}

void ss_oread_release(struct ss_oread *R, void *unit)
{
	struct ounit *u = unit;
	R->held--;
	u->next_free = R->free_units;
	R->free_units = u;
}

/* Hash the unit into its file's digest; check it at the file's end. */
static int hash_unit(struct ss_oread *R, struct ounit *u)
{
	const struct ss_mfile *f = &R->m->files[u->v.file];
	if (u->v.e0 == 0) {
		ss_fdigest_reset(R->hs);
		R->hfile = u->v.file;
	}
	for (size_t e = u->v.e0; e < u->v.e1;) {
		const uint8_t *p = u->ptr[e - u->v.e0];
		uint64_t len = f->ext[e++].len;
		if (!p) {
			R->o->prog->zero_bytes += len;
			ss_fdigest_zero(R->hs, len);
			continue;
		}
		R->o->st->chunks++;
		/* Chunks that lie side by side in memory in one call. */
		while (e < u->v.e1 && u->ptr[e - u->v.e0] == p + len) {
			len += f->ext[e++].len;
			R->o->st->chunks++;
		}
		ss_fdigest_data(R->hs, p, (size_t)len);
	}
	R->o->prog->bytes_done += u->v.len;
	if (u->v.e1 < f->next)
		return 0;
	uint8_t d[16];
	ss_fdigest_final(R->hs, d);
	if (memcmp(d, f->digest, 16) != 0) {
		ss_oread_fail(R, -EBADMSG,
			      "snapshot %s: file '%s' (%llu bytes, from offset 0) does not match its "
			      "recorded digest although every chunk did (tampered manifest?)",
			      R->o->snapshot, f->name, (unsigned long long)f->size);
		return -EBADMSG;
	}
	return 0;
}

static void try_deliver(struct ss_oread *R)
{
	while (R->deliver_seq < R->next_seq) {
		struct ounit *u = R->by_seq[R->deliver_seq % R->nunits];
		if (!u->ready || u == R->pending)
			return;
		R->deliver_seq++;
		int keep = 0;
		if (!R->failed && hash_unit(R, u) == 0) {
			u->v.ptr = u->ptr;
			u->v.unit = u;
			keep = R->o->sink(R->o->sink_arg, &u->v);
		}
		R->held++;
		if (keep != 1)
			ss_oread_release(R, u);
	}
}

static int setup(struct ss_oread *R)
{
	const struct ss_manifest *m = R->m;
	const struct ss_cfg *cfg = R->o->cfg;
	uint32_t fmax = SS_MAX(m->frame_max, m->chunk_max);
	R->in_cap = SS_ALIGN_UP((size_t)OR_RANGE + ZSTD_compressBound(fmax), 4096);
	R->dec_cap = SS_ALIGN_UP((size_t)OR_RAW + fmax, 4096);
	R->dc_cap = fmax;
	R->nunits = SS_MIN(cfg->threads * 2 + 2, OR_MAX_UNITS);
	R->max_gets = R->o->store ? SS_MIN(R->nunits, ss_backend_max_inflight(R->o->store)) : 1;
	size_t per = R->in_cap + R->dec_cap;
	R->mem_len = per * R->nunits;
	R->mem = ss_bufpool_get(R->o->cfg->bufs, R->mem_len, false);
	R->units = calloc(R->nunits, sizeof(*R->units));
	R->by_seq = calloc(R->nunits, sizeof(*R->by_seq));
	R->hs = ss_fdigest_new(R->m->format_major);
	if (!R->mem || !R->units || !R->by_seq || !R->hs)
		return -ENOMEM;
	for (unsigned i = 0; i < R->nunits; i++) {
		struct ounit *u = &R->units[i];
		u->R = R;
		u->in = R->mem + per * i;
		u->dec = u->in + R->in_cap;
		u->frames = malloc(sizeof(*u->frames) * OR_MAX_EXT);
		u->fidx = malloc(sizeof(*u->fidx) * OR_MAX_EXT);
		u->ptr = malloc(sizeof(*u->ptr) * OR_MAX_EXT);
		if (!u->frames || !u->fidx || !u->ptr)
			return -ENOMEM;
		u->task.run = unit_work;
		u->task.op.done = unit_done;
		u->next_free = R->free_units;
		R->free_units = u;
	}
	return ss_pool_new(R->o->loop, cfg->threads, &ss_rdec_ops, &R->pool);
}

int ss_oread_run(const struct ss_oread_opts *o, struct ss_err *err)
{
	struct ss_oread *R = calloc(1, sizeof(*R));
	if (!R)
		return ss_err_set(err, -ENOMEM, "out of memory");
	R->o = o;
	R->m = o->m;
	R->err = err;
	R->cf = o->file_first;
	R->cursor_done = o->file_first >= o->file_end;
	pthread_mutex_init(&R->dmu, NULL);
	pthread_cond_init(&R->dcv, NULL);
	int r = setup(R);
	if (r) {
		ss_err_set(err, r, "cannot set up reading: %s", strerror(-r));
		R->failed = true;
	}
	while (!R->failed || R->gets || R->tasks || R->held) {
		if (!R->failed)
			fill(R);
		try_deliver(R);
		if (R->failed && R->pending) {
			R->pending->ready = true;   /* never submitted: nothing to wait for */
			R->pending = NULL;
			try_deliver(R);
		}
		bool idle = !R->gets && !R->tasks && !R->held;
		if (idle && (R->failed || (R->cursor_done && R->deliver_seq == R->next_seq)))
			break;
		if (R->failed && idle)
			break;
		/* Units that needed no I/O (zero runs only) were delivered and
		 * freed with no completion to wait for: go round again instead
		 * of blocking on a ring with nothing in flight. */
		if (idle)
			continue;
		int t = ss_loop_turn(o->loop, true);
		if (t < 0) {
			ss_oread_fail(R, t, "event loop failed: %s", strerror(-t));
			break;
		}
		if (!R->failed)
			ss_tick(o->cfg, o->ticker, o->prog, false);
	}
	r = R->failed ? (err->code ? err->code : -EIO) : 0;
	ss_pool_free(R->pool);
	if (R->units)
		for (unsigned i = 0; i < R->nunits; i++) {
			free(R->units[i].frames);
			free(R->units[i].fidx);
			free(R->units[i].ptr);
		}
	free(R->units);
	free(R->by_seq);
	ss_bufpool_put(R->o->cfg->bufs, R->mem, R->mem_len);
	ss_fdigest_free(R->hs);
	for (unsigned i = 0; i < OR_DCACHE; i++)
		free(R->dc[i].buf);
	pthread_mutex_destroy(&R->dmu);
	pthread_cond_destroy(&R->dcv);
	free(R);
	return r;
}
