/* range — read part of a pack: one ranged GET, then, on a worker, its
 * frames decompressed (each once, as far as its chunks reach) and every
 * chunk's id checked. Pull (ranges in store order), oread (units in file
 * order) and check --deep (whole packs in pack order) read packs this way
 * only, so they agree on what a damaged or missing pack is. */
#include "core.h"
#include "crypt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* ---------------------------------------------------------------- the GET */

void ss_range_prep(struct ss_range *g, const uint8_t id[16], uint64_t off, uint64_t len,
		   uint8_t *buf, ss_op_fn done, void *user)
{
	ss_pack_key(id, g->key);
	ss_err_clear(&g->err);
	memset(&g->req, 0, sizeof(g->req));
	g->req.op.done = done;
	g->req.kind = SS_REQ_GET;
	g->req.key = g->key;
	g->req.off = off;
	g->req.len = len;
	g->req.buf = buf;
	g->req.err = &g->err;
	g->req.user = user;
}

int ss_range_submit(struct ss_backend *b, struct ss_range *g, uint64_t *requests)
{
	int r = ss_backend_submit(b, &g->req);
	if (r == 0 && requests)
		(*requests)++;
	return r;
}

bool ss_range_retry(struct ss_range *g)
{
	if (!g->req.cached || (g->req.flags & SS_GET_FRESH))
		return false;
	g->req.flags |= SS_GET_FRESH;
	ss_err_clear(&g->err);
	return true;
}

enum ss_range_res ss_range_result(const struct ss_range *g, int res)
{
	if (res >= 0)
		return (uint64_t)res == g->req.len ? SS_RANGE_OK : SS_RANGE_SHORT;
	if (res == -ENOENT)
		return SS_RANGE_MISSING;
	/* The store answered with fewer bytes than it said it holds (a torn
	 * object): a property of the pack, not of the store. */
	if (res == -EBADMSG)
		return SS_RANGE_SHORT;
	return SS_RANGE_FAILED;
}

int ss_range_explain(const struct ss_range *g, int res, const char *where, struct ss_err *err)
{
	switch (ss_range_result(g, res)) {
	case SS_RANGE_OK:
		return 0;
	case SS_RANGE_MISSING:
		return ss_err_set(err, -EBADMSG,
				  "%spack %s is missing from the store (was it deleted?)", where,
				  g->key);
	case SS_RANGE_SHORT:
		if (res >= 0)
			return ss_err_set(err, -EBADMSG,
					  "%spack %s is shorter than the manifest says (truncated "
					  "or replaced)",
					  where, g->key);
		break;
	case SS_RANGE_FAILED:
		break;
	}
	if (g->err.code)
		return ss_err_set(err, res, "%s", g->err.msg);
	return ss_err_set(err, res, "%scannot read pack %s: %s", where, g->key, strerror(-res));
}

/* ---------------------------------------------------------------- workers */

static void rdec_destroy(void *wp)
{
	struct ss_rdec *w = wp;
	if (!w)
		return;
	ZSTD_freeDCtx(w->dc);
	ss_aead_free(w->aead);
	if (w->scratch)
		ss_map_free(w->scratch, SS_FRAME_MAX_LIMIT + 1);
	ss_bufpool_put(w->out_pool, w->out, w->out_cap);
	free(w);
}

static void *rdec_create(void *arg)
{
	struct ss_rdec *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->dc = ZSTD_createDCtx();
	/* Mapped, so only what frames really fill is ever touched. */
	if (arg)
		w->scratch = ss_map_alloc(SS_FRAME_MAX_LIMIT + 1);
	/* All or nothing: a worker without its context would take every
	 * frame for undecodable, i.e. report out of memory as corruption. */
	if (!w->dc || (arg && !w->scratch)) {
		rdec_destroy(w);
		return NULL;
	}
	return w;
}

int ss_rdec_aead(struct ss_rdec *w, const struct ss_crypt *c, const uint8_t pack_id[16],
		 struct ss_aead **out)
{
	*out = NULL;
	if (!c)
		return 0;
	int r = 0;
	if (!w->aead && (r = ss_aead_new(ss_crypt_cipher(c), &w->aead)))
		return r;
	/* Consecutive ranges mostly come from one pack: derive its key once. */
	if (!w->aead_keyed || memcmp(w->aead_pack, pack_id, 16)) {
		w->aead_keyed = false;
		if ((r = ss_crypt_pack_key(c, pack_id, w->aead)))
			return r;
		memcpy(w->aead_pack, pack_id, 16);
		w->aead_keyed = true;
	}
	*out = w->aead;
	return 0;
}

uint8_t *ss_rdec_out(struct ss_rdec *w, size_t cap, struct ss_buffers *pool)
{
	if (w->out_cap >= cap)
		return w->out;
	/* Filled front to back on every range; a local store's ranges (2 MiB)
	 * would otherwise fault it in 4 KiB at a time. */
	cap = ss_map_huge_len(cap);
	ss_bufpool_put(w->out_pool, w->out, w->out_cap);
	w->out_cap = 0;
	w->out_pool = pool;
	if (!(w->out = ss_bufpool_get(pool, cap, false)))
		return NULL;
	w->out_cap = cap;
	return w->out;
}

const struct ss_worker_ctx_ops ss_rdec_ops = {.create = rdec_create, .destroy = rdec_destroy};
const struct ss_worker_ctx_ops ss_rdec_scratch_ops = {
	.create = rdec_create, .destroy = rdec_destroy, .arg = (void *)&ss_rdec_scratch_ops};

/* ---------------------------------------------------------------- decoding */

const char *ss_range_why(enum ss_range_bad why)
{
	return why == SS_RANGE_UNDECODABLE ? "cannot be decompressed to its recorded size"
	       : why == SS_RANGE_FORGED
		       ? "does not authenticate (altered, moved, or from another store)"
		       : "does not match its checksum";
}

size_t ss_range_frame(const struct ss_rdec *w, const uint8_t *src, uint32_t stored_len,
		      uint8_t *dst, size_t need, size_t cap)
{
	return w && w->dc ? ss_frame_prefix(w->dc, src, stored_len, dst, need, cap) : 0;
}

bool ss_range_chunk_ok(const struct ss_idkey *ids, const uint8_t *p, const struct ss_rchunk *c)
{
	uint8_t h[16];
	ss_chunk_id(ids, p, c->raw_len, h);
	return memcmp(h, c->id, 16) == 0;
}

int ss_range_decode(const struct ss_rdec *w, const struct ss_rrun *run)
{
	size_t pos = 0;   /* end of what is kept in run->dec */
	int r = 0;
	for (uint32_t i = 0; i < run->n;) {
		struct ss_rchunk c;
		run->at(run->arg, i, &c);
		const uint8_t *src = run->in + (c.offset - run->base);
		/* The chunks of one frame: those that follow at its offset. */
		uint32_t j = i + 1;
		size_t need = (size_t)c.frame_off + c.raw_len;
		struct ss_rchunk d;
		while (j < run->n && (run->at(run->arg, j, &d), d.offset == c.offset &&
				      d.codec == c.codec &&
				      (c.codec == SS_CODEC_ZSTD || run->aead))) {
			need = SS_MAX(need, (size_t)d.frame_off + d.raw_len);
			j++;
		}
		const uint8_t *frame = src;
		uint32_t flen = c.stored_len;
		if (run->aead) {
			/* Sealed (raw chunks too, a frame at a time): opened
			 * once, in place, before a byte of it is trusted. */
			if (ss_crypt_frame_open(run->aead, c.offset, c.codec, (uint8_t *)src,
						c.stored_len) ||
			    (c.codec != SS_CODEC_ZSTD && need > c.stored_len - SS_SEAL_TAG)) {
				r = -EBADMSG;
				for (uint32_t k = i; k < j; k++)
					if (!run->bad(run->arg, k, SS_RANGE_FORGED))
						return r;
				i = j;
				continue;
			}
			flen = c.stored_len - SS_SEAL_TAG;
		}
		if (c.codec == SS_CODEC_ZSTD) {
			/* Kept one after another in dec, or each in turn in the
			 * worker's scratch when the caller needs only verdicts. */
			uint8_t *dst = run->dec ? run->dec + pos : w ? w->scratch : NULL;
			size_t cap = run->dec ? run->dec_cap - pos : SS_FRAME_MAX_LIMIT + 1;
			if (!dst || need > cap || !ss_range_frame(w, src, flen, dst, need, cap)) {
				r = -EBADMSG;
				for (uint32_t k = i; k < j; k++)
					if (!run->bad(run->arg, k, SS_RANGE_UNDECODABLE))
						return r;
				i = j;
				continue;
			}
			frame = dst;
			if (run->dec)
				pos += need;
		}
		for (uint32_t k = i; k < j; k++) {
			if (k > i)
				run->at(run->arg, k, &c);
			const uint8_t *p = frame + c.frame_off;
			if (run->ptr)
				run->ptr[k] = p;
			if (!ss_range_chunk_ok(run->ids, p, &c)) {
				r = -EBADMSG;
				if (!run->bad(run->arg, k, SS_RANGE_MISMATCH))
					return r;
			}
			if (run->checked)
				run->checked(run->arg, k);
		}
		i = j;
	}
	return r;
}
