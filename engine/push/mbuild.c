/* The setup, manifest builder, parent loading and commit shared by
 * ss_push and ss_push_fd (docs/DESIGN.md, "Manifest"). */
#include "push.h"
#include "crypt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ss_mbuild {
	struct ss_manifest *m;
	struct ss_store *store;
	struct ss_dedup *dedup;
	/* Store pack index → index in the manifest's pack table, or
	 * UINT32_MAX while no chunk of that pack is referenced. */
	uint32_t *pmap;
	uint32_t npmap;
	size_t files_cap, chunks_cap, ext_cap;
	uint64_t unique_bytes;
};

void ss_mbuild_free(struct ss_mbuild *b)
{
	if (!b)
		return;
	ss_manifest_free(b->m);
	free(b->pmap);
	free(b);
}

int64_t ss_mbuild_created_ns(const struct ss_mbuild *b)
{
	return b->m->created_unix_ns;
}

static int header(struct ss_manifest *m, const struct ss_cfg *cfg, const struct ss_push_opts *o,
		  const char *store_uri, bool root_is_dir)
{
	m->tool_version = strdup(ss_version());
	m->store_uri = strdup(store_uri);
	if (!m->tool_version || !m->store_uri)
		return -ENOMEM;
	m->created_unix_ns = ss_wall_ns();
	m->chunk_min = cfg->chunk.min_size;
	m->chunk_avg = cfg->chunk.avg_size;
	m->chunk_max = cfg->chunk.max_size;
	m->chunk_seg = cfg->chunk.seg_size;
	m->chunk_algorithm = 1;
	m->keyed_ids = cfg->ids.keyed;
	if (m->keyed_ids)
		memcpy(m->key_check, cfg->ids.check, sizeof(m->key_check));
	m->frame_max = cfg->frame_max;
	m->root_is_dir = root_is_dir;
	m->sealed = cfg->ids.crypt != NULL;
	if (o->nlabels) {
		if (!(m->labels = calloc(o->nlabels, sizeof(*m->labels))))
			return -ENOMEM;
		for (size_t i = 0; i < o->nlabels; i++) {
			m->labels[i].key = strdup(o->labels[i].key);
			m->labels[i].value = strdup(o->labels[i].value);
			m->nlabels++;
			if (!m->labels[i].key || !m->labels[i].value)
				return -ENOMEM;
		}
	}
	if (o->nparents) {
		if (!(m->parents = calloc(o->nparents, sizeof(*m->parents))))
			return -ENOMEM;
		/* Parents are recorded as canonical URIs, as refs name them. */
		for (size_t i = 0; i < o->nparents; i++) {
			struct ss_snaploc pl;
			if (ss_snaploc_parse(o->parents[i], &pl, NULL))
				return -EINVAL;
			m->parents[m->nparents++] = pl.canonical;
			pl.canonical = NULL;
			ss_snaploc_free(&pl);
		}
	}
	return 0;
}

int ss_mbuild_new(const struct ss_cfg *cfg, const struct ss_push_opts *opts,
		  struct ss_store *store, struct ss_dedup *dedup, bool root_is_dir,
		  struct ss_mbuild **out)
{
	struct ss_mbuild *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->store = store;
	b->dedup = dedup;
	b->npmap = store->npacks;
	b->m = calloc(1, sizeof(*b->m));
	b->pmap = malloc(sizeof(*b->pmap) * (b->npmap ? b->npmap : 1));
	b->files_cap = 16;
	b->chunks_cap = 1024;
	int r = -ENOMEM;
	if (b->m && b->pmap && (b->m->files = malloc(sizeof(*b->m->files) * b->files_cap)) &&
	    (b->m->chunks = malloc(sizeof(*b->m->chunks) * b->chunks_cap)))
		r = 0;
	if (!r) {
		memset(b->pmap, 0xff, sizeof(*b->pmap) * b->npmap);
		r = header(b->m, cfg, opts, store->uri, root_is_dir);
	}
	if (r) {
		ss_mbuild_free(b);
		return r;
	}
	*out = b;
	return 0;
}

int ss_mbuild_file(struct ss_mbuild *b, const char *name, uint64_t size, uint32_t mode,
		   int64_t mtime_ns, const uint8_t digest[16], size_t ext_hint)
{
	struct ss_manifest *m = b->m;
	if (SS_GROW(m->files, b->files_cap, m->nfiles + 1, 16))
		return -ENOMEM;
	struct ss_mfile *mf = &m->files[m->nfiles++];
	memset(mf, 0, sizeof(*mf));
	b->ext_cap = ext_hint ? ext_hint : 16;
	mf->name = strdup(name);
	mf->ext = malloc(sizeof(*mf->ext) * b->ext_cap);
	if (!mf->name || !mf->ext)
		return -ENOMEM;
	mf->size = size;
	mf->mode = mode;
	mf->mtime_ns = mtime_ns;
	memcpy(mf->digest, digest, 16);
	return 0;
}

int ss_mbuild_transform(struct ss_mbuild *b, uint32_t transform, uint64_t source_size)
{
	struct ss_mfile *mf = &b->m->files[b->m->nfiles - 1];
	mf->transform = transform;
	mf->source_size = source_size;
	return 0;
}

/* The chunk's index in the snapshot's table, adding it on first use. */
static int chunk_index(struct ss_mbuild *b, struct ss_dentry *de)
{
	struct ss_manifest *m = b->m;
	if (de->snap_idx != SS_SLOT_NONE)
		return 0;
	if (de->pack == SS_PACK_PENDING || de->pack >= b->npmap)
		return -EIO;   /* a chunk was never packed: a bug */
	if (SS_GROW(m->chunks, b->chunks_cap, m->nchunks + 1, 1024))
		return -ENOMEM;
	if (b->pmap[de->pack] == UINT32_MAX)
		b->pmap[de->pack] = (uint32_t)m->npacks++;
	struct ss_chunk_ref *c = &m->chunks[m->nchunks];
	memcpy(c->id, de->id, 16);
	c->pack = b->pmap[de->pack];
	c->offset = de->offset;
	c->stored_len = de->stored_len;
	c->raw_len = de->raw_len;
	c->codec = de->codec;
	c->frame_off = de->frame_off;
	de->snap_idx = (uint32_t)m->nchunks++;
	b->unique_bytes += de->raw_len;
	return 0;
}

int ss_mbuild_extent(struct ss_mbuild *b, uint64_t len, uint32_t slot)
{
	struct ss_mfile *mf = &b->m->files[b->m->nfiles - 1];
	if (slot == SS_SLOT_NONE && mf->next && mf->ext[mf->next - 1].chunk == 0) {
		mf->ext[mf->next - 1].len += len;
		return 0;
	}
	uint32_t chunk = 0;
	if (slot != SS_SLOT_NONE) {
		struct ss_dentry *de = ss_dedup_entry(b->dedup, slot);
		int r = chunk_index(b, de);
		if (r)
			return r;
		chunk = de->snap_idx + 1;
	}
	if (SS_GROW(mf->ext, b->ext_cap, mf->next + 1, 16))
		return -ENOMEM;
	mf->ext[mf->next++] = (struct ss_mextent){len, chunk};
	return 0;
}

int ss_mbuild_finish(struct ss_mbuild *b, uint64_t logical_bytes, struct ss_stats *st,
		     struct ss_manifest **out)
{
	struct ss_manifest *m = b->m;
	/* The digests the push made are format 5's (fdigest.h). */
	m->format_major = SS_MANIFEST_MAJOR;
	m->format_minor = 0;
	if (!(m->pack_ids = malloc(16 * (m->npacks ? m->npacks : 1))))
		return -ENOMEM;
	for (uint32_t p = 0; p < b->npmap; p++)
		if (b->pmap[p] != UINT32_MAX)
			memcpy(m->pack_ids[b->pmap[p]], b->store->pack_ids[p], 16);
	/* Each distinct frame once, wherever its chunks sit in the table. */
	m->stats.stored_bytes = ss_manifest_stored_bytes(m);
	m->stats.logical_bytes = logical_bytes;
	m->stats.zero_bytes = st->zero_bytes;
	m->stats.chunk_bytes = logical_bytes - st->zero_bytes;
	m->stats.unique_bytes = b->unique_bytes;
	m->stats.new_raw_bytes = st->new_raw_bytes;
	m->stats.new_stored_bytes = st->new_stored_bytes;
	st->unique_chunks = m->nchunks;
	*out = m;
	b->m = NULL;
	return 0;
}

/* ---------------------------------------------------------------- parents */

int ss_load_parents(const struct ss_push_opts *opts, struct ss_loop *l, const struct ss_cfg *cfg,
		    struct ss_store *store, struct ss_dedup *dedup, struct ss_manifest **guide,
		    uint64_t *requests, struct ss_err *err)
{
	for (size_t i = 0; i < opts->nparents; i++) {
		struct ss_manifest *pm = NULL;
		int r = ss_manifest_load(opts->parents[i], l, cfg, &pm, NULL, requests, err);
		if (r == -ENOENT) {
			ss_err_clear(err);
			return ss_err_set(err, r, "parent snapshot %s does not exist",
					  opts->parents[i]);
		}
		if (r)
			return r;
		/* A parent's ids must be ours to be compared with them. */
		const struct ss_idkey *ids;
		char what[600];
		snprintf(what, sizeof(what), "parent snapshot %s", opts->parents[i]);
		r = ss_idkey_for_manifest(&cfg->ids, pm->keyed_ids, pm->key_check, what, &ids, err);
		if (!r && ids != &cfg->ids && cfg->ids.keyed)
			r = ss_err_set(err, -EKEYREJECTED,
				       "parent snapshot %s uses plain chunk ids; this push's are keyed",
				       opts->parents[i]);
		if (r) {
			ss_manifest_free(pm);
			return r;
		}
		/* Only chunks whose packs live in this store can be referenced. */
		bool same_store = pm->store_uri && strcmp(pm->store_uri, store->uri) == 0;
		for (size_t c = 0; !r && c < pm->nchunks; c++) {
			struct ss_chunk_ref *cr = &pm->chunks[c];
			uint32_t idx;
			if (ss_store_pack_find(store, pm->pack_ids[cr->pack], &idx)) {
				if (!same_store)
					continue;
				if ((r = ss_store_pack_index(store, pm->pack_ids[cr->pack], 0, &idx)))
					break;
			}
			r = ss_dedup_add(dedup, cr->id, idx, (uint32_t)cr->offset, cr->stored_len,
					 cr->raw_len, cr->codec, cr->frame_off);
		}
		/* The first parent cut with our parameters guides chunking. */
		const struct ss_chunk_params *cp = &cfg->chunk;
		if (!r && guide && !*guide && pm->chunk_algorithm == 1 &&
		    pm->chunk_min == cp->min_size && pm->chunk_avg == cp->avg_size &&
		    pm->chunk_max == cp->max_size && pm->chunk_seg == cp->seg_size) {
			*guide = pm;
			pm = NULL;
		}
		ss_manifest_free(pm);
		if (r)
			return ss_err_set(err, r, "cannot load parent %s: %s", opts->parents[i],
					  strerror(-r));
	}
	return 0;
}

/* ---------------------------------------------------------------- setup */

int ss_pushbase_open(struct ss_pushbase *b, const struct ss_push_opts *opts,
		     const struct ss_config_in *config, uint64_t *requests, struct ss_err *err)
{
	memset(b, 0, sizeof(*b));
	int r;
	if ((r = ss_cfg_resolve(config, &b->cfg, err)) ||
	    (r = ss_snaploc_parse(opts->snapshot, &b->loc, err)))
		return r;
	if ((r = ss_loop_open(256, &b->loop, err)))
		return r;
	if ((r = ss_backend_open(b->loc.backend_uri, b->loop, &b->cfg.bopts, &b->snapb, err)))
		return r;
	struct ss_req sr = {.kind = SS_REQ_STAT, .key = b->loc.key, .err = err};
	r = ss_call(b->snapb, b->loop, &sr, requests);
	if (r == 0 && !opts->force)
		return ss_err_set(err, -EEXIST,
				  "snapshot %s already exists (use --force to replace it)",
				  opts->snapshot);
	if (r && r != -ENOENT)
		return r;
	ss_err_clear(err);
	return 0;
}

int ss_pushbase_store(struct ss_pushbase *b, const struct ss_push_opts *opts,
		      struct ss_err *err)
{
	const char *uri = opts->store ? opts->store : b->loc.default_store;
	int r = ss_store_open(uri, b->loop, &b->cfg, &b->store, err);
	if (r)
		return r;
	/* Without a table (no /dev/shm, mem://) the push goes on alone. */
	b->claims = ss_store_join_claims(b->store);
	if ((r = ss_dedup_new(1u << 31, &b->dedup)))
		return ss_err_set(err, r, "out of memory");
	return ss_store_load(b->store, b->loop, b->dedup, err);
}

int ss_pushbase_packer(struct ss_pushbase *b, struct ss_stats *st, struct ss_pipe *pipe,
		       struct ss_packer **out)
{
	int r = ss_packer_new(b->store, b->dedup, &b->cfg, st, ss_pipe_pack_done, pipe, out);
	if (!r && b->claims)
		ss_packer_set_claims(*out, b->claims);
	return r;
}

/* How long a failed loop may go without a completion while work is still
 * in flight before settling gives up on it. */
#define SETTLE_STUCK_NS (5ull * 1000000000ull)

bool ss_pushbase_settle(struct ss_pushbase *b, bool (*busy)(const void *arg), const void *arg)
{
	while (b->loop && busy(arg) && ss_loop_turn(b->loop, true) >= 0)
		;
	if (!b->loop || !busy(arg))
		return true;
	/* The loop failed. Nothing new goes in, but what the kernel and the
	 * workers hold still completes, into memory the caller is about to
	 * free: reap it. Work that needed more submissions to finish (a put
	 * half-way) never will; after a while without a completion, give up,
	 * and the caller leaves its buffers allocated. */
	uint64_t last = ss_now_ns();
	while (busy(arg)) {
		int n = ss_loop_reap(b->loop, 10000000ll);
		if (n < 0)
			break;
		uint64_t now = ss_now_ns();
		if (n > 0)
			last = now;
		else if (now - last > SETTLE_STUCK_NS)
			break;
	}
	return !busy(arg);
}

void ss_pushbase_close(struct ss_pushbase *b, struct ss_stats *st)
{
	if (st && b->store)
		st->requests += b->store->requests;
	ss_claims_close(b->claims);
	ss_store_free(b->store);
	ss_dedup_free(b->dedup);
	/* Backends live on the loop (object stores keep timers there). */
	ss_backend_free(b->snapb);
	ss_loop_free(b->loop);
	ss_snaploc_free(&b->loc);
	ss_cfg_wipe(&b->cfg);
	memset(b, 0, sizeof(*b));
}

/* ---------------------------------------------------------------- commit */

int ss_pushbase_commit(struct ss_pushbase *b, const struct ss_push_opts *opts,
		       const struct ss_manifest *m, struct ss_stats *st, struct ss_err *err)
{
	struct ss_store *store = b->store;
	struct ss_loop *l = b->loop;
	const struct ss_snaploc *loc = &b->loc;
	uint8_t *mbuf = NULL;
	size_t mlen = 0;
	int r = ss_manifest_encode(m, &mbuf, &mlen);
	if (r)
		return ss_err_set(err, r, "cannot encode the manifest: %s", strerror(-r));
	if (store->ids->crypt) {
		/* Sealed to this snapshot's location, so that it opens nowhere
		 * else (docs/SECURITY.md, "What each seal binds"). */
		uint8_t *sealed = NULL;
		char *where = ss_snaploc_sealed(loc);
		r = where ? ss_sealed_wrap(store->ids->crypt, where,
					   (const uint8_t(*)[16])m->pack_ids, (uint32_t)m->npacks, mbuf,
					   mlen, &sealed, &mlen)
			  : -ENOMEM;
		free(where);
		free(mbuf);
		mbuf = sealed;
		if (r)
			return ss_err_set(err, r, "cannot seal the manifest: %s", strerror(-r));
	}
	st->manifest_bytes = mlen;
	/* Order is the crash-safety protocol: packs are stored, then the index
	 * that lists them, then the ref, and the manifest last. */
	if ((r = ss_store_write_index(store, l, err)) ||
	    (r = ss_store_write_ref(store, l, loc->canonical, err)))
		goto out;
	char etag[SS_ETAG_MAX];
	r = ss_put_object_tagged(b->snapb, l, loc->key, mbuf, mlen,
				 opts->force ? 0 : SS_PUT_IF_ABSENT, etag, &st->requests, err);
	if (r == -EEXIST)
		r = ss_err_set(err, r, "snapshot %s was created by someone else meanwhile",
			       opts->snapshot);
	else if (r)
		ss_err_set(err, r, "cannot write the manifest of %s: %s", opts->snapshot,
			   strerror(-r));
	else {
		/* A pull of this snapshot on this node then starts at once
		 * from the manifest kept here (pull.c, "guess"). */
		if (!store->ids->keyed && !ss_backend_local(b->snapb))
			ss_ncache_manifest_put(&b->cfg, b->snapb, loc->key, mbuf, mlen, etag);
		ss_pushbase_warm(b, m, st);
	}
out:
	free(mbuf);
	return r;
}
