/* Configuration, snapshot locations, and small blocking helpers over the
 * asynchronous backends for metadata steps. */
#include "core.h"
#include "crypt.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* The chunker's own bounds (ss_chunker_init): avg at most 4 MiB, a
 * segment, and so max, at most 1 GiB. */
#define SS_CHUNK_AVG_LIMIT (4u << 20)
#define SS_CHUNK_SEG_LIMIT (1u << 30)

int ss_cfg_resolve(const struct ss_config_in *cin, struct ss_cfg *out, struct ss_err *err)
{
	static const struct ss_config_in zero;
	if (!cin)
		cin = &zero;
	const struct ss_config *in = &cin->pub;
	memset(out, 0, sizeof(*out));
	out->threads = in->threads ? in->threads : ss_cpu_count();
	if (out->threads > SS_MAX_THREADS)
		return ss_err_set(err, -EINVAL, "--threads must be 1..%d", SS_MAX_THREADS);
	/* Bound the sizes before any arithmetic on them: avg * 4 and the
	 * segment doubling below would wrap past 2^31 and loop forever. The
	 * chunker checks the rest (ss_chunker_init). */
	if (in->chunk_avg > SS_CHUNK_AVG_LIMIT || in->chunk_min > SS_CHUNK_SEG_LIMIT ||
	    in->chunk_max > SS_CHUNK_SEG_LIMIT)
		return ss_err_set(err, -EINVAL,
				  "invalid chunk sizes min=%u avg=%u max=%u (avg at most %u, min and "
				  "max at most %u)",
				  in->chunk_min, in->chunk_avg, in->chunk_max, SS_CHUNK_AVG_LIMIT,
				  SS_CHUNK_SEG_LIMIT);
	out->chunk.avg_size = in->chunk_avg ? in->chunk_avg : SS_CHUNK_AVG_DEFAULT;
	out->chunk.min_size = in->chunk_min ? in->chunk_min
			      : (in->chunk_avg ? in->chunk_avg / 4 : SS_CHUNK_MIN_DEFAULT);
	out->chunk.max_size = in->chunk_max ? in->chunk_max
			      : (in->chunk_avg ? in->chunk_avg * 4 : SS_CHUNK_MAX_DEFAULT);
	out->chunk.seg_size = SS_CHUNK_SEG_DEFAULT;
	while (out->chunk.seg_size < out->chunk.max_size)
		out->chunk.seg_size *= 2;
	struct ss_chunker c;
	if (ss_chunker_init(&c, &out->chunk))
		return ss_err_set(err, -EINVAL,
				  "invalid chunk sizes min=%u avg=%u max=%u (need 64 <= min < avg < "
				  "max, avg a power of two)",
				  out->chunk.min_size, out->chunk.avg_size, out->chunk.max_size);
	out->frame_max = SS_MAX(SS_FRAME_TARGET, out->chunk.max_size);
	out->zstd_level = in->zstd_level ? in->zstd_level : SS_DEFAULT_ZSTD_LEVEL;
	if (out->zstd_level < -7 || out->zstd_level > 19)
		return ss_err_set(err, -EINVAL, "zstd level must be -7..19");
	/* 0: the store's default, chosen when it is opened (packer.c). */
	out->pack_size = in->pack_size;
	if (out->pack_size && (out->pack_size < (1u << 20) || out->pack_size > (256u << 20)))
		return ss_err_set(err, -EINVAL, "pack size must be 1 MiB .. 256 MiB");
	out->read_depth = in->read_depth ? in->read_depth : SS_DEFAULT_READ_DEPTH;
	if (out->read_depth > 256)
		return ss_err_set(err, -EINVAL, "read depth must be 1..256");
	out->io_depth = in->io_depth;
	out->bopts.max_inflight = in->io_depth;
	out->bopts.no_fsync = in->no_fsync;
	out->bopts.mem = cin->mem;
	out->v1_push = cin->v1_push;
	out->verify_keep_none = cin->verify_keep_none;
	out->bopts.env = in->env;
	out->cache_dir = in->cache_dir && *in->cache_dir ? in->cache_dir : NULL;
	out->cache_size = in->cache_size;
	out->bufs = in->buffers;
	if (out->cache_dir && in->cache_size && in->cache_size < SS_CACHE_SIZE_MIN)
		return ss_err_set(err, -EINVAL, "the cache size must be at least %llu MiB",
				  SS_CACHE_SIZE_MIN >> 20);
	out->progress = in->progress;
	out->progress_arg = in->progress_arg;
	if (in->key || in->key_len)
		return ss_idkey_init(&out->ids, in->key, in->key ? in->key_len : 0, err);
	return 0;
}

void ss_cfg_wipe(struct ss_cfg *cfg)
{
	ss_idkey_wipe(&cfg->ids);
}

int ss_call(struct ss_backend *b, struct ss_loop *l, struct ss_req *r, uint64_t *requests)
{
	if (requests)
		(*requests)++;
	return ss_backend_call(b, l, r);
}

/* What ss_get_object asks for first: the whole of most objects it reads
 * (configs, refs, index objects, the manifests of images up to ~512 MiB),
 * so that one round trip suffices where a size query and a GET took two. */
#define GET_FIRST ((size_t)1 << 20)

int ss_get_object(struct ss_backend *b, struct ss_loop *l, const char *key, size_t max,
		  uint8_t **out, size_t *outlen, uint64_t *requests, struct ss_err *err)
{
	return ss_get_object_if(b, l, key, max, NULL, out, outlen, NULL, requests, err);
}

int ss_get_object_if(struct ss_backend *b, struct ss_loop *l, const char *key, size_t max,
		     const char *if_none_match, uint8_t **out, size_t *outlen,
		     char etag[SS_ETAG_MAX], uint64_t *requests, struct ss_err *err)
{
	/* The first GET answers with the object's size too. A larger object
	 * is read on from where it stopped; one replaced in between (a gc
	 * rewrites its state by rename) shows as a size or an ETag that
	 * differs between the two answers: read it again. */
	for (int attempt = 0;; attempt++) {
		size_t cap = SS_MIN(SS_MAX(max, (size_t)1), GET_FIRST);
		uint8_t *buf = malloc(cap);
		if (!buf)
			return ss_err_set(err, -ENOMEM, "out of memory");
		struct ss_req g = {.kind = SS_REQ_GET, .key = key, .off = 0, .len = cap,
				   .buf = buf, .err = err, .if_none_match = if_none_match};
		int r = ss_call(b, l, &g, requests);
		if (r < 0) {
			free(buf);
			return r;   /* SS_NOT_MODIFIED among them */
		}
		uint64_t size = g.size;
		if (size > max) {
			free(buf);
			return ss_err_set(err, -EFBIG,
					  "object '%s' is %llu bytes, more than the %zu allowed", key,
					  (unsigned long long)size, max);
		}
		bool whole = (uint64_t)r == size;
		if (!whole && (uint64_t)r == cap && size > cap) {
			uint8_t *nb = realloc(buf, (size_t)size);
			if (!nb) {
				free(buf);
				return ss_err_set(err, -ENOMEM, "out of memory");
			}
			buf = nb;
			struct ss_req g2 = {.kind = SS_REQ_GET, .key = key, .off = cap,
					    .len = size - cap, .buf = buf + cap, .err = err};
			r = ss_call(b, l, &g2, requests);
			if (r < 0) {
				free(buf);
				return r;
			}
			/* An ETag that differs says so too; one missing from
			 * either answer says nothing. */
			whole = g2.size == size && (uint64_t)r == size - cap &&
				(!g.etag[0] || !g2.etag[0] || strcmp(g2.etag, g.etag) == 0);
		}
		if (!whole) {
			free(buf);
			if (attempt < 8)
				continue;
			return ss_err_set(err, -EBADMSG, "object '%s' kept changing while reading",
					  key);
		}
		if (etag)
			memcpy(etag, g.etag, SS_ETAG_MAX);
		*out = buf;
		*outlen = (size_t)size;
		return 0;
	}
}

int ss_put_object(struct ss_backend *b, struct ss_loop *l, const char *key, const void *p,
		  size_t n, uint32_t flags, uint64_t *requests, struct ss_err *err)
{
	return ss_put_object_tagged(b, l, key, p, n, flags, NULL, requests, err);
}

int ss_put_object_tagged(struct ss_backend *b, struct ss_loop *l, const char *key,
			 const void *p, size_t n, uint32_t flags, char etag[SS_ETAG_MAX],
			 uint64_t *requests, struct ss_err *err)
{
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
	struct ss_req r = {.kind = SS_REQ_PUT, .key = key, .flags = flags, .iov = &iov,
			   .iovcnt = 1, .err = err};
	int res = ss_call(b, l, &r, requests);
	if (etag)
		memcpy(etag, r.etag, sizeof(r.etag));
	return res;
}

int ss_snaploc_parse(const char *uri, struct ss_snaploc *out, struct ss_err *err)
{
	memset(out, 0, sizeof(*out));
	const char *scheme;
	char *path;
	int r = ss_location_parse(uri, &scheme, &path, err);
	if (r)
		return r;
	char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	/* Object stores: "s3://bucket/dir/name"; the bucket alone is no snapshot. */
	bool obj = ss_uri_is_object_store(uri);
	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 || (obj && !slash) ||
	    (slash == path && strcmp(scheme, "file") == 0 && !slash[1])) {
		ss_err_set(err, -EINVAL, "snapshot location '%s' does not name a snapshot", uri);
		free(path);
		return -EINVAL;
	}
	char parent[PATH_MAX];
	if (slash)
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - path), path);
	else
		parent[0] = '\0';
	if (strcmp(scheme, "file") == 0 && !parent[0])
		snprintf(parent, sizeof(parent), "/");
	char buf[PATH_MAX + 64];
	char pfx[16];
	snprintf(pfx, sizeof(pfx), "%s", strcmp(scheme, "file") == 0 ? "" : scheme);
	if (pfx[0])
		strcat(pfx, "://");
	r = -ENOMEM;
	snprintf(buf, sizeof(buf), "%s%s", pfx, parent[0] ? parent : "root");
	if (!(out->backend_uri = strdup(buf)))
		goto fail;
	snprintf(buf, sizeof(buf), "%s/%s", name, SS_MANIFEST_KEY);
	if (!(out->key = strdup(buf)))
		goto fail;
	snprintf(buf, sizeof(buf), "%s%s%s.snapstream", pfx, parent[0] ? parent : "root",
		 strcmp(parent, "/") == 0 ? "" : "/");
	if (obj)   /* one store per bucket, so all its snapshots share chunks */
		snprintf(buf, sizeof(buf), "%s%.*s/.snapstream", pfx, (int)strcspn(path, "/"), path);
	if (!(out->default_store = strdup(buf)))
		goto fail;
	snprintf(buf, sizeof(buf), "%s%s", strcmp(scheme, "file") == 0 ? "file://" : pfx, path);
	if (!(out->canonical = strdup(buf)))
		goto fail;
	free(path);
	return 0;
fail:
	free(path);
	ss_snaploc_free(out);
	return ss_err_set(err, r, "out of memory");
}

void ss_snaploc_free(struct ss_snaploc *s)
{
	free(s->backend_uri);
	free(s->key);
	free(s->default_store);
	free(s->canonical);
	memset(s, 0, sizeof(*s));
}

char *ss_snaploc_sealed(const struct ss_snaploc *loc)
{
	char *dir = ss_location_canon(loc->backend_uri);
	size_t klen = strlen(loc->key), mlen = strlen("/" SS_MANIFEST_KEY);
	char *out = NULL;
	if (dir && klen > mlen &&
	    asprintf(&out, "%s%s%.*s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
		     (int)(klen - mlen), loc->key) < 0)
		out = NULL;
	free(dir);
	return out;
}

/* A manifest sealed in another store than the one ids were bound to
 * (bound: a store's config was read; c: its keys, when sealed): whose key
 * was given (-EXDEV) or not (-EBADMSG). */
static int other_store(const struct ss_idkey *ids, const struct ss_sealed_hdr *h,
		       const char *uri, struct ss_err *err)
{
	struct ss_crypt *t = NULL;
	char sid[33], mine[33] = "none: not sealed";
	ss_hex(h->store_id, 16, sid);
	if (ids->crypt)
		ss_hex(ss_crypt_store_id(ids->crypt), 16, mine);
	int r = ss_idkey_derive(ids, h->store_id, h->cipher, &t, err);
	if (r)
		return r;
	bool ours = !memcmp(ss_crypt_check(t), h->check, 16);
	ss_crypt_free(t);
	if (ours)
		return ss_err_set(err, -EXDEV,
				  "snapshot %s was sealed in another store (id %s) whose key this is; "
				  "read it with --store of that store",
				  uri, sid);
	return ss_err_set(err, -EBADMSG,
			  "snapshot %s was sealed in another store (id %s) than its store (id %s), "
			  "with another key: moved from another store?",
			  uri, sid, mine);
}

/* Open the sealed envelope buf of the snapshot at uri with cfg's key, or
 * (SS_MLOAD_HEADER, no key) describe it by its clear header only. */
static int load_sealed(const char *uri, const struct ss_snaploc *loc, const struct ss_cfg *cfg,
		       unsigned flags, const uint8_t *buf, size_t len,
		       const struct ss_sealed_hdr *h, struct ss_manifest **out, struct ss_err *err)
{
	const struct ss_idkey *ids = &cfg->ids;
	char chk[33], mine[33];
	ss_hex(h->check, 16, chk);
	if (!ids->keyed) {
		if (!(flags & SS_MLOAD_HEADER))
			return ss_err_set(err, -ENOKEY,
					  "snapshot %s is sealed (key check %s): give its store's key "
					  "(--key-file or SNAPSTREAM_KEY_FILE)",
					  uri, chk);
		struct ss_manifest *m = calloc(1, sizeof(*m));
		if (!m || !(m->pack_ids = malloc(16 * (size_t)(h->npacks ? h->npacks : 1)))) {
			ss_manifest_free(m);
			return ss_err_set(err, -ENOMEM, "out of memory");
		}
		memcpy(m->pack_ids, h->packs, 16 * (size_t)h->npacks);
		m->npacks = h->npacks;
		m->sealed = m->unopened = m->keyed_ids = true;
		memcpy(m->key_check, h->check, 16);
		m->format_major = SS_SEALED_MAJOR;
		*out = m;
		return 0;
	}
	const struct ss_crypt *c = ids->crypt;
	struct ss_crypt *tmp = NULL;
	if (c ? memcmp(ss_crypt_store_id(c), h->store_id, 16) || ss_crypt_cipher(c) != h->cipher
	      : ids->bound)
		return other_store(ids, h, uri, err);
	int r;
	if (!c) {
		/* Nobody read the store's config: the header names the
		 * store, and the key must be that store's. */
		if ((r = ss_idkey_derive(ids, h->store_id, h->cipher, &tmp, err)))
			return r;
		c = tmp;
		if (memcmp(ss_crypt_check(c), h->check, 16)) {
			ss_hex(ss_crypt_check(c), 16, mine);
			ss_crypt_free(tmp);
			return ss_err_set(err, -EKEYREJECTED,
					  "snapshot %s was sealed with another key (key check %s; this "
					  "key's is %s)",
					  uri, chk, mine);
		}
	} else if (memcmp(ss_crypt_check(c), h->check, 16)) {
		/* The store's config took this key: a header saying otherwise
		 * was not written with it. */
		return ss_err_set(err, -EBADMSG,
				  "snapshot %s: its manifest's header names another key check (%s) "
				  "than its store's (altered?)",
				  uri, chk);
	}
	char *where = ss_snaploc_sealed(loc);
	uint8_t *inner = NULL;
	size_t ilen = 0;
	struct ss_err derr = {0};
	r = where ? ss_sealed_unwrap(c, where, buf, len, &inner, &ilen, &derr)
		  : ss_err_set(&derr, -ENOMEM, "out of memory");
	free(where);
	struct ss_manifest *m = NULL;
	if (!r)
		r = ss_manifest_decode_ex(inner, ilen, true, &m, &derr);
	free(inner);
	/* What the clear header says must be what was sealed. */
	if (!r && (m->npacks != h->npacks ||
		   (m->npacks && memcmp(m->pack_ids, h->packs, 16 * m->npacks)) ||
		   !m->keyed_ids || memcmp(m->key_check, h->check, 16)))
		r = ss_err_set(&derr, -EBADMSG,
			       "its clear header disagrees with its sealed body");
	ss_crypt_free(tmp);
	if (r) {
		ss_manifest_free(m);
		return ss_err_set(err, r, "snapshot %s: %s", uri, derr.msg);
	}
	*out = m;
	return 0;
}

int ss_manifest_load(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
		     struct ss_manifest **out, uint64_t *mlen, uint64_t *requests,
		     struct ss_err *err)
{
	return ss_manifest_load_ex(uri, l, cfg, 0, out, mlen, requests, err);
}

int ss_manifest_fetch(const char *uri, const struct ss_snaploc *loc, struct ss_loop *l,
		      const struct ss_cfg *cfg, uint8_t **buf, size_t *len, uint64_t *requests,
		      struct ss_err *err)
{
	return ss_manifest_fetch_if(uri, loc, l, cfg, NULL, buf, len, NULL, requests, err);
}

int ss_manifest_fetch_if(const char *uri, const struct ss_snaploc *loc, struct ss_loop *l,
			 const struct ss_cfg *cfg, const char *if_none_match, uint8_t **buf,
			 size_t *len, char etag[SS_ETAG_MAX], uint64_t *requests,
			 struct ss_err *err)
{
	struct ss_backend *b = NULL;
	struct ss_backend_opts ro = cfg->bopts;
	ro.read_only = true;
	int r = ss_backend_open(loc->backend_uri, l, &ro, &b, err);
	if (!r)
		r = ss_get_object_if(b, l, loc->key, SS_MANIFEST_MAX_SIZE, if_none_match, buf, len,
				     etag, requests, err);
	if (r == -ENOENT) {
		ss_err_clear(err);
		ss_err_set(err, -ENOENT, "no snapshot at %s", uri);
	}
	ss_backend_free(b);
	return r;
}

int ss_manifest_parse(const char *uri, const struct ss_snaploc *loc, const struct ss_cfg *cfg,
		      unsigned flags, const uint8_t *buf, size_t len, struct ss_manifest **out,
		      struct ss_err *err)
{
	struct ss_err derr = {0};
	struct ss_sealed_hdr h;
	const uint8_t *body;
	size_t blen;
	int r = ss_sealed_peek(buf, len, &h, &body, &blen, &derr);
	if (r == 0)
		return load_sealed(uri, loc, cfg, flags, buf, len, &h, out, err);
	if (r != -ENOMSG)
		return ss_err_set(err, r, "snapshot %s: %s", uri, derr.msg);
	if (cfg->ids.crypt)
		/* Every manifest of a sealed store is sealed: a readable one
		 * was not written by a holder of its key. */
		return ss_err_set(err, -EBADMSG,
				  "snapshot %s is not sealed, but its store is: it was not written "
				  "with the store's key (replaced?)",
				  uri);
	r = ss_manifest_decode(buf, len, out, &derr);
	if (r)
		ss_err_set(err, r, "snapshot %s: %s", uri, derr.msg);
	return r;
}

int ss_manifest_load_ex(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
			unsigned flags, struct ss_manifest **out, uint64_t *mlen,
			uint64_t *requests, struct ss_err *err)
{
	struct ss_snaploc loc;
	int r = ss_snaploc_parse(uri, &loc, err);
	if (r)
		return r;
	uint8_t *buf = NULL;
	size_t len = 0;
	r = ss_manifest_fetch(uri, &loc, l, cfg, &buf, &len, requests, err);
	if (!r)
		r = ss_manifest_parse(uri, &loc, cfg, flags, buf, len, out, err);
	if (!r && mlen)
		*mlen = len;
	free(buf);
	ss_snaploc_free(&loc);
	return r;
}

int ss_random_id(uint8_t id[16])
{
	size_t got = 0;
	while (got < 16) {
		ssize_t k = getrandom(id + got, 16 - got, 0);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)k;
	}
	return 0;
}

void ss_pack_key(const uint8_t id[16], char *out)
{
	char hex[33];
	ss_hex(id, 16, hex);
	/* Two hex digits of the id first: object stores partition by key
	 * prefix, and random prefixes spread the load. */
	snprintf(out, 64, "packs/%.2s/%s", hex, hex);
}

int ss_loop_open(unsigned entries, struct ss_loop **out, struct ss_err *err)
{
	int r = ss_loop_new(entries, out);
	if (r)
		ss_err_set(err, r, "cannot set up io_uring: %s", strerror(-r));
	return r;
}

void *ss_stats_init(void *st, void *local, size_t size)
{
	if (!st)
		st = local;
	memset(st, 0, size);
	return st;
}

int ss_err_out(const struct ss_err *e, int r, char *buf, size_t len)
{
	if (r && buf && len)
		snprintf(buf, len, "%s", e->msg[0] ? e->msg : strerror(-r));
	return r;
}

int ss_op_end(const struct ss_err *e, int r, uint64_t t0, double *seconds, char *buf,
	      size_t len)
{
	*seconds = (double)(ss_now_ns() - t0) / 1e9;
	return ss_err_out(e, r, buf, len);
}

void ss_tick(const struct ss_cfg *cfg, struct ss_ticker *t, struct ss_progress *p, bool force)
{
	if (!cfg->progress)
		return;
	uint64_t now = ss_now_ns();
	if (!t->start_ns)
		t->start_ns = t->last_ns = now;
	if (!force && now - t->last_ns < 100000000ull)
		return;
	t->last_ns = now;
	p->size = sizeof(*p);
	p->seconds = (double)(now - t->start_ns) / 1e9;
	cfg->progress(cfg->progress_arg, p);
}

struct frame_key {
	uint32_t pack;
	uint32_t stored_len;
	uint64_t offset;
};

static int cmp_frame(const void *a, const void *b)
{
	const struct frame_key *x = a, *y = b;
	if (x->pack != y->pack)
		return x->pack < y->pack ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

uint64_t ss_manifest_stored_bytes(const struct ss_manifest *m)
{
	/* Chunks of one frame share its stored bytes; count each frame once,
	 * wherever its chunks sit in the table. */
	struct frame_key *k = malloc(sizeof(*k) * (m->nchunks ? m->nchunks : 1));
	if (!k)
		return m->stats.stored_bytes;
	for (size_t i = 0; i < m->nchunks; i++)
		k[i] = (struct frame_key){m->chunks[i].pack, m->chunks[i].stored_len,
					  m->chunks[i].offset};
	qsort(k, m->nchunks, sizeof(*k), cmp_frame);
	uint64_t sum = 0;
	for (size_t i = 0; i < m->nchunks; i++)
		if (!i || cmp_frame(&k[i], &k[i - 1]))
			sum += k[i].stored_len;
	free(k);
	return sum;
}

static void many_done(struct ss_op *op, int res)
{
	struct ss_req *r = (struct ss_req *)op;
	op->res = res;
	(*(size_t *)r->user)++;
}

int ss_call_many(struct ss_backend *b, struct ss_loop *l, struct ss_req *reqs, size_t n,
		 uint64_t *requests)
{
	size_t done = 0, next = 0;
	while (done < n) {
		while (next < n) {
			struct ss_req *q = &reqs[next];
			q->op.done = many_done;
			q->user = &done;
			int s = ss_backend_submit(b, q);
			if (s == -EAGAIN)
				break;
			next++;
			if (s) {
				q->op.res = s;
				done++;
				continue;
			}
			if (requests)
				(*requests)++;
		}
		if (done == n)
			break;
		int t = ss_loop_turn(l, true);
		if (t < 0)
			return t;
	}
	return 0;
}
