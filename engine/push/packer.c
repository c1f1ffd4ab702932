/* The pack writer shared by ss_push and ss_push_fd: stored frames are
 * copied into the current pack buffer, full packs are uploaded while the
 * next one fills, and each stored pack is recorded in the store for the
 * index object that will list it (docs/DESIGN.md, "Store layout"). */
#include "push.h"
#include "crypt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

struct packbuf {
	struct ss_packer *pk;
	struct ss_req req;
	struct iovec iov[2];
	uint8_t *data, *tail;
	size_t len, cap, tail_cap;
	struct ss_pack_entry *e;
	uint32_t n;
	size_t ecap;
	uint8_t id[16];
	uint32_t idx;
	bool open, busy;
	char key[64];
	struct ss_err perr;
	/* A sealed store's: keyed with this pack's key when it is opened. */
	struct ss_aead *aead;
};

struct ss_packer {
	struct ss_store *store;
	struct ss_dedup *dedup;
	struct ss_stats *st;
	uint32_t pack_size;
	ss_packer_done_fn done;
	void *arg;
	struct packbuf pb[SS_NPACKBUF];
	struct packbuf *cur;
	unsigned puts;
	struct ss_claims *claims;
	struct ss_buffers *bufs;    /* where the pack buffers come from */
};

void ss_packer_set_claims(struct ss_packer *pk, struct ss_claims *claims)
{
	pk->claims = claims;
}

int ss_packer_new(struct ss_store *store, struct ss_dedup *dedup, const struct ss_cfg *cfg,
		  struct ss_stats *st, ss_packer_done_fn done, void *arg,
		  struct ss_packer **out)
{
	struct ss_packer *pk = calloc(1, sizeof(*pk));
	if (!pk)
		return -ENOMEM;
	pk->store = store;
	pk->dedup = dedup;
	pk->st = st;
	pk->pack_size = cfg->pack_size ? cfg->pack_size : ss_pack_size_for(store, 0);
	pk->done = done;
	pk->arg = arg;
	pk->bufs = cfg->bufs;
	for (unsigned i = 0; i < SS_NPACKBUF; i++) {
		struct packbuf *pb = &pk->pb[i];
		pb->pk = pk;
		/* A pack is flushed before a frame would take it past
		 * pack_size, so it never holds more than that plus a frame. */
		pb->cap = pk->pack_size + ZSTD_compressBound(cfg->frame_max) + SS_SEAL_TAG;
		if (!(pb->data = ss_bufpool_get(pk->bufs, pb->cap, false))) {
			ss_packer_free(pk);
			return -ENOMEM;
		}
		int r;
		if (store->ids->crypt &&
		    (r = ss_aead_new(ss_crypt_cipher(store->ids->crypt), &pb->aead))) {
			ss_packer_free(pk);
			return r;
		}
	}
	*out = pk;
	return 0;
}

uint32_t ss_pack_size_for(const struct ss_store *store, uint64_t data)
{
	bool local = ss_backend_local(store->b);
	uint32_t max = local ? SS_LOCAL_PACK_SIZE : SS_DEFAULT_PACK_SIZE;
	if (!data)
		return max;
	/* Both pack buffers are faulted in fresh on each run, and a push
	 * stores at most its data: a 64 MiB image staged its ~20 MiB of new
	 * frames in 2 x 8 MiB buffers, 16 of its 67 MiB peak RSS. A 32nd of
	 * the data (an 8th into an object store, where a pack also costs a
	 * request) keeps packs large enough that their count stays small;
	 * measured no slower into a local store (docs/DESIGN.md, "Memory"),
	 * not yet measured into an object store. */
	uint32_t min = local ? (2u << 20) : (8u << 20);
	uint64_t want = data / (local ? 32 : 8);
	uint32_t sz = min;
	while (sz < max && sz < want)
		sz *= 2;
	return sz;
}

void ss_packer_free(struct ss_packer *pk)
{
	if (!pk)
		return;
	for (unsigned i = 0; i < SS_NPACKBUF; i++) {
		ss_bufpool_put(pk->bufs, pk->pb[i].data, pk->pb[i].cap);
		free(pk->pb[i].e);
		free(pk->pb[i].tail);
		ss_aead_free(pk->pb[i].aead);
	}
	free(pk);
}

unsigned ss_packer_inflight(const struct ss_packer *pk)
{
	return pk ? pk->puts : 0;
}

static void put_done(struct ss_op *op, int res)
{
	struct ss_req *req = (struct ss_req *)op;
	struct packbuf *pb = req->user;
	struct ss_packer *pk = pb->pk;
	char msg[sizeof(pb->perr.msg) + 128];
	pk->puts--;
	pb->busy = false;
	if (res < 0) {
		snprintf(msg, sizeof(msg), "cannot store pack %s: %s", pb->key,
			 pb->perr.code ? pb->perr.msg : strerror(-res));
		pk->done(pk->arg, res, msg);
		return;
	}
	/* Pushes on this host waiting for these chunks may now name them. */
	for (uint32_t i = 0; pk->claims && i < pb->n; i++) {
		const struct ss_pack_entry *pe = &pb->e[i];
		struct ss_claim_loc loc = {.offset = pe->offset,
					   .stored_len = pe->stored_len,
					   .frame_off = pe->frame_off,
					   .codec = pe->codec};
		memcpy(loc.pack_id, pb->id, 16);
		ss_claims_landed(pk->claims, pe->id, &loc);
	}
	/* The store's next index object lists this pack; the entries move. */
	struct ss_pack_entry *e = malloc(sizeof(*e) * (pb->n ? pb->n : 1));
	if (!e || (memcpy(e, pb->e, sizeof(*e) * pb->n),
		   ss_store_note_unindexed(pk->store, pb->id, pk->store->pack_sizes[pb->idx], e,
					   pb->n))) {
		snprintf(msg, sizeof(msg), "cannot record a stored pack: %s", strerror(ENOMEM));
		pk->done(pk->arg, -ENOMEM, msg);
		return;
	}
	pk->done(pk->arg, 0, NULL);
}

static int pack_open(struct ss_packer *pk, struct packbuf *pb)
{
	int r = ss_random_id(pb->id);
	/* Each pack its own key, so a frame's offset is a nonce never used
	 * twice under it (docs/SECURITY.md, "Nonces never repeat"). */
	if (!r && pb->aead)
		r = ss_crypt_pack_key(pk->store->ids->crypt, pb->id, pb->aead);
	if (!r)
		r = ss_store_pack_index(pk->store, pb->id, 0, &pb->idx);
	if (r)
		return r;
	pb->len = 0;
	pb->n = 0;
	pb->open = true;
	return 0;
}

static int pack_put(struct ss_packer *pk, struct packbuf *pb)
{
	unsigned flags = pb->aead ? SS_PACK_SEALED : 0;
	size_t need = (size_t)ss_pack_tail_size(pb->n, flags);
	if (need > pb->tail_cap) {
		uint8_t *t = realloc(pb->tail, need);
		if (!t)
			return -ENOMEM;
		pb->tail = t;
		pb->tail_cap = need;
	}
	size_t tl = ss_pack_write_index(pb->tail, pb->e, pb->n, pb->len);
	if (pb->aead) {
		if (ss_crypt_index_seal(pb->aead, pb->len, pb->tail, tl))
			return -EIO;
		ss_pack_write_footer(pb->tail + tl + SS_SEAL_TAG, tl + SS_SEAL_TAG);
		tl += SS_SEAL_TAG + SS_PACK_FOOTER_SIZE;
	}
	pk->store->pack_sizes[pb->idx] = pb->len + tl;
	ss_pack_key(pb->id, pb->key);
	pb->iov[0] = (struct iovec){.iov_base = pb->data, .iov_len = pb->len};
	pb->iov[1] = (struct iovec){.iov_base = pb->tail, .iov_len = tl};
	memset(&pb->req, 0, sizeof(pb->req));
	ss_err_clear(&pb->perr);
	pb->req.op.done = put_done;
	pb->req.kind = SS_REQ_PUT;
	pb->req.key = pb->key;
	pb->req.iov = pb->iov;
	pb->req.iovcnt = 2;
	pb->req.err = &pb->perr;
	pb->req.user = pb;
	pb->open = false;
	pb->busy = true;
	int r = ss_backend_submit(pk->store->b, &pb->req);
	if (r) {
		pb->busy = false;
		return r;
	}
	pk->puts++;
	pk->st->requests++;
	pk->st->packs++;
	pk->st->transferred_bytes += pb->len + tl;
	return 0;
}

/* The pack being filled, opening a free buffer if needed. -EAGAIN: every
 * buffer is uploading. */
static int pack_current(struct ss_packer *pk, struct packbuf **out, struct ss_err *err)
{
	if (pk->cur && pk->cur->open) {
		*out = pk->cur;
		return 0;
	}
	for (unsigned i = 0; i < SS_NPACKBUF; i++) {
		struct packbuf *pb = &pk->pb[i];
		if (!pb->busy && !pb->open) {
			int r = pack_open(pk, pb);
			if (r)
				return ss_err_set(err, r, "cannot start a pack: %s", strerror(-r));
			pk->cur = pb;
			*out = pb;
			return 0;
		}
	}
	return -EAGAIN;
}

int ss_packer_add(struct ss_packer *pk, const uint8_t *stored, uint32_t stored_len,
		  uint8_t codec, const struct ss_packer_chunk *c, uint32_t n,
		  struct ss_err *err)
{
	struct packbuf *pb;
	int r = pack_current(pk, &pb, err);
	if (r)
		return r;
	uint32_t slen = stored_len + (pb->aead ? SS_SEAL_TAG : 0);
	if (pb->n && pb->len + slen > pk->pack_size) {
		if ((r = pack_put(pk, pb)))
			return ss_err_set(err, r, "cannot store a pack: %s", strerror(-r));
		if ((r = pack_current(pk, &pb, err)))
			return r;
	}
	/* Room for every entry first: a frame is added whole or not at all. */
	if (SS_GROW(pb->e, pb->ecap, (size_t)pb->n + n, 1024))
		return ss_err_set(err, -ENOMEM, "cannot grow a pack index: %s", strerror(ENOMEM));
	uint32_t at = (uint32_t)pb->len;
	if (stored)
		memcpy(pb->data + pb->len, stored, stored_len);
	for (uint32_t i = 0; i < n; i++)
		if (c[i].raw)
			memcpy(pb->data + at + c[i].frame_off, c[i].raw,
			       ss_dedup_entry(pk->dedup, c[i].slot)->raw_len);
	/* Sealed in place, a frame at a time, raw ones too (their chunks
	 * then share the frame as a zstd frame's do). */
	if (pb->aead && ss_crypt_frame_seal(pb->aead, at, codec, pb->data + at, stored_len))
		return ss_err_set(err, -EIO, "cannot seal a frame (OpenSSL failed)");
	pb->len += slen;
	pk->st->new_stored_bytes += slen;
	bool z = codec == SS_CODEC_ZSTD || pb->aead;
	for (uint32_t i = 0; i < n; i++) {
		struct ss_dentry *de = ss_dedup_entry(pk->dedup, c[i].slot);
		struct ss_pack_entry *pe = &pb->e[pb->n++];
		memcpy(pe->id, de->id, 16);
		pe->offset = z ? at : at + c[i].frame_off;
		pe->stored_len = z ? slen : de->raw_len;
		pe->raw_len = de->raw_len;
		pe->codec = codec;
		pe->frame_off = z ? c[i].frame_off : 0;
		de->pack = pb->idx;
		de->offset = pe->offset;
		de->stored_len = pe->stored_len;
		de->codec = pe->codec;
		de->frame_off = pe->frame_off;
		pk->st->new_raw_bytes += de->raw_len;
		pk->st->new_chunks++;
	}
	return 0;
}

int ss_packer_flush(struct ss_packer *pk, struct ss_err *err)
{
	if (!pk->cur || !pk->cur->open || !pk->cur->n)
		return 0;
	int r = pack_put(pk, pk->cur);
	if (r)
		return ss_err_set(err, r, "cannot store a pack: %s", strerror(-r));
	return 1;
}
