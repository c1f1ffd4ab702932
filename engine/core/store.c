/* The store: packs, the index objects that list them, and snapshot refs.
 *
 *   packs/<2 hex>/<32 hex>   immutable packs (chunk data + own index)
 *   index/<32 hex>           which chunks each pack holds, written by each
 *                            push after its packs and before its manifest
 *   refs/<32 hex>            one record per snapshot pushed here (for gc)
 *   config                   how the store's chunk ids are made (ss_init)
 *
 * A push loads what the store holds through push/storeload.c.
 *
 * Read-only commands must not change anything, so local locations are
 * checked with stat before a backend is opened on them (the local backend
 * creates its root directory, which a push wants and `info` does not). */
#include "core.h"
#include "crypt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include "xxh.h"

int ss_store_open(const char *uri, struct ss_loop *l, struct ss_cfg *cfg,
		  struct ss_store **out, struct ss_err *err)
{
	struct ss_store *s = calloc(1, sizeof(*s));
	if (!s)
		return ss_err_set(err, -ENOMEM, "out of memory");
	int r = ss_backend_open(uri, l, &cfg->bopts, &s->b, err);
	if (r) {
		free(s);
		return r;
	}
	/* A push's packs go through the node cache too (write-through). */
	if ((r = ss_ncache_wrap(cfg, &s->b, err))) {
		ss_store_free(s);
		return r;
	}
	if (!(s->uri = strdup(uri))) {
		ss_store_free(s);
		return ss_err_set(err, -ENOMEM, "out of memory");
	}
	s->ids = &cfg->ids;
	s->v1_push = cfg->v1_push;
	*out = s;
	return 0;
}

void ss_store_free(struct ss_store *s)
{
	if (!s)
		return;
	ss_backend_free(s->b);
	free(s->uri);
	free(s->pack_ids);
	free(s->pack_sizes);
	free(s->pack_map);
	ss_index_free(s->unindexed, s->nunindexed);
	ss_gcstate_free(&s->hidden);
	free(s);
}

static uint32_t pack_hash(const uint8_t id[16])
{
	uint32_t h;
	memcpy(&h, id, sizeof(h));
	return h;
}

static int pack_map_grow(struct ss_store *s)
{
	uint32_t ncap = s->pack_map_cap ? s->pack_map_cap * 2 : 256;
	uint32_t *m = malloc(sizeof(*m) * ncap);
	if (!m)
		return -ENOMEM;
	memset(m, 0xff, sizeof(*m) * ncap);
	for (uint32_t i = 0; i < s->npacks; i++) {
		uint32_t j = pack_hash(s->pack_ids[i]) & (ncap - 1);
		while (m[j] != UINT32_MAX)
			j = (j + 1) & (ncap - 1);
		m[j] = i;
	}
	free(s->pack_map);
	s->pack_map = m;
	s->pack_map_cap = ncap;
	return 0;
}

int ss_store_pack_find(const struct ss_store *s, const uint8_t id[16], uint32_t *idx)
{
	if (!s->pack_map_cap)
		return -ENOENT;
	uint32_t j = pack_hash(id) & (s->pack_map_cap - 1);
	while (s->pack_map[j] != UINT32_MAX) {
		if (memcmp(s->pack_ids[s->pack_map[j]], id, 16) == 0) {
			*idx = s->pack_map[j];
			return 0;
		}
		j = (j + 1) & (s->pack_map_cap - 1);
	}
	return -ENOENT;
}

int ss_store_pack_index(struct ss_store *s, const uint8_t id[16], uint64_t size, uint32_t *idx)
{
	if (ss_store_pack_find(s, id, idx) == 0)
		return 0;
	/* Two arrays of one capacity: the ids grow on a copy of it, so that
	 * packs_cap grows only once both have. */
	size_t ids_cap = s->packs_cap;
	if (SS_GROW(s->pack_ids, ids_cap, s->npacks + 1, 64) ||
	    SS_GROW(s->pack_sizes, s->packs_cap, s->npacks + 1, 64))
		return -ENOMEM;
	if ((s->npacks + 1) * 2 > s->pack_map_cap && pack_map_grow(s))
		return -ENOMEM;
	uint32_t i = s->npacks++;
	memcpy(s->pack_ids[i], id, 16);
	s->pack_sizes[i] = size;
	uint32_t j = pack_hash(id) & (s->pack_map_cap - 1);
	while (s->pack_map[j] != UINT32_MAX)
		j = (j + 1) & (s->pack_map_cap - 1);
	s->pack_map[j] = i;
	*idx = i;
	return 0;
}

int ss_store_note_unindexed(struct ss_store *s, const uint8_t id[16], uint64_t size,
			    struct ss_pack_entry *entries, uint32_t count)
{
	if (SS_GROW(s->unindexed, s->unindexed_cap, s->nunindexed + 1, 16)) {
		free(entries);
		return -ENOMEM;
	}
	struct ss_index_pack *p = &s->unindexed[s->nunindexed++];
	memcpy(p->pack_id, id, 16);
	p->pack_size = size;
	p->count = count;
	p->entries = entries;
	return 0;
}

void ss_keylist_free(struct ss_keylist *kl)
{
	for (size_t i = 0; i < kl->n; i++)
		free(kl->keys[i]);
	free(kl->keys);
	free(kl->sizes);
	memset(kl, 0, sizeof(*kl));
}

static int collect_key(void *arg, const char *key, uint64_t size)
{
	struct ss_keylist *kl = arg;
	size_t keys_cap = kl->cap;   /* as for pack_ids and pack_sizes */
	if (SS_GROW(kl->keys, keys_cap, kl->n + 1, 64) ||
	    SS_GROW(kl->sizes, kl->cap, kl->n + 1, 64))
		return -ENOMEM;
	if (!(kl->keys[kl->n] = strdup(key)))
		return -ENOMEM;
	kl->sizes[kl->n++] = size;
	return 0;
}

int ss_list_keys(struct ss_backend *b, struct ss_loop *l, const char *store, const char *prefix,
		 struct ss_keylist *kl, uint64_t *requests, struct ss_err *err)
{
	struct ss_err e = {0};
	struct ss_req r = {.kind = SS_REQ_LIST, .key = prefix, .on_key = collect_key, .arg = kl,
			   .err = &e};
	int res = ss_call(b, l, &r, requests);
	if (res < 0)
		return ss_err_set(err, res, "cannot list %s/%s: %s", store, prefix,
				  e.msg[0] ? e.msg : strerror(-res));
	return 0;
}

/* The store's config object, or *p = NULL when it has none. */
static int load_config(struct ss_backend *b, struct ss_loop *l, const char *uri, uint8_t **p,
		       size_t *n, uint64_t *requests, struct ss_err *err)
{
	*p = NULL;
	*n = 0;
	int r = ss_get_object(b, l, SS_STORE_CONFIG_KEY, 4096, p, n, requests, err);
	if (r == -ENOENT) {
		ss_err_clear(err);
		return 0;
	}
	if (r)
		return ss_err_set(err, r, "cannot read the config of store %s", uri);
	return 0;
}

int ss_store_check_ids(struct ss_store *s, struct ss_loop *l, struct ss_err *err)
{
	uint8_t *p;
	size_t n;
	struct ss_store_config c;
	int r = load_config(s->b, l, s->uri, &p, &n, &s->requests, err);
	if (!r)
		r = ss_idkey_check_store(s->ids, p, n, s->uri, &c, err);
	free(p);
	/* A version 1 keyed store stays readable, but gets no new snapshot:
	 * a store never mixes sealed and readable ones. */
	if (!r && c.keyed && !c.sealed && !s->v1_push)
		r = ss_err_set(err, -EPERM,
			       "store %s has keyed ids but no encryption (config version 1); make "
			       "a sealed store with `snapstream init --key-file` and push there "
			       "(docs/SECURITY.md, \"Rekeying\")",
			       s->uri);
	return r;
}

static int local_exists(const char *uri, const char *suffix, bool *exists, struct ss_err *err);

int ss_store_bind(const char *uri, struct ss_loop *l, struct ss_cfg *cfg, uint64_t *requests,
		  struct ss_err *err)
{
	struct ss_backend *b = NULL;
	uint8_t *p = NULL;
	size_t n = 0;
	struct ss_backend_opts ro = cfg->bopts;
	ro.read_only = true;
	bool exists;
	int r = local_exists(uri, "", &exists, err);
	if (r || !exists)
		return r;
	r = ss_backend_open(uri, l, &ro, &b, err);
	if (r == -ENOENT) {
		ss_err_clear(err);
		return 0;
	}
	if (!r)
		r = load_config(b, l, uri, &p, &n, requests, err);
	/* A keyed version 1 or plain config leaves the manifest to say
	 * which ids it uses, as before sealing. */
	struct ss_store_config c;
	if (!r && p && !(r = ss_store_config_parse(p, n, &c, err)) && c.sealed)
		r = ss_idkey_check_store(&cfg->ids, p, n, uri, NULL, err);
	else if (!r && cfg->ids.keyed)
		cfg->ids.bound = true;
	free(p);
	ss_backend_free(b);
	return r;
}

int ss_init_impl(const struct ss_init_opts *opts, const struct ss_config_in *config, char *errbuf,
	    size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cfg cfg;
	struct ss_loop *l = NULL;
	struct ss_store *s = NULL;
	uint8_t *p = NULL;
	size_t n = 0;
	int r;

	if (!opts || !opts->store) {
		r = ss_err_set(&err, -EINVAL, "init needs a store URI");
		goto out;
	}
	if ((r = ss_cfg_resolve(config, &cfg, &err)))
		goto out;
	if ((r = ss_loop_open(16, &l, &err)))
		goto out;
	if ((r = ss_store_open(opts->store, l, &cfg, &s, &err)) ||
	    (r = load_config(s->b, l, s->uri, &p, &n, &s->requests, &err)))
		goto out;
	if (p) {
		struct ss_store_config c;
		r = ss_store_config_parse(p, n, &c, &err);
		if (!r)
			r = ss_err_set(&err, -EEXIST, "store %s already exists, with %s chunk ids",
				       s->uri, c.sealed ? "keyed (sealed)" : c.keyed ? "keyed" : "plain");
		goto out;
	}
	struct ss_store_config c = {.version = 1};
	if (cfg.ids.keyed) {
		/* Chunks already stored keep their plain ids, and would let
		 * the keyed store's dedup be probed with known data. */
		struct ss_keylist packs = {0};
		r = ss_list_keys(s->b, l, s->uri, "packs/", &packs, &s->requests, &err);
		size_t np = packs.n;
		ss_keylist_free(&packs);
		if (r)
			goto out;
		if (np) {
			r = ss_err_set(&err, -EEXIST,
				       "store %s already holds %zu packs with plain chunk ids; a "
				       "keyed store must start empty",
				       s->uri, np);
			goto out;
		}
		/* Sealed (docs/SECURITY.md, "Encryption at rest in keyed
		 * stores"): a random id salts every key of this store. */
		c = (struct ss_store_config){.version = 2, .keyed = true, .sealed = true,
					     .cipher = opts->cipher ? ss_cipher_parse(opts->cipher)
								    : ss_crypt_pick()};
		if (!c.cipher) {
			r = ss_err_set(&err, -EINVAL,
				       "unknown cipher \"%s\" (aes-256-gcm or chacha20-poly1305)",
				       opts->cipher);
			goto out;
		}
		if ((r = ss_random_id(c.store_id)) ||
		    (r = ss_idkey_seal(&cfg.ids, c.store_id, c.cipher, &err)))
			goto out;
		memcpy(c.check, cfg.ids.check, 16);
	} else if (opts->cipher) {
		r = ss_err_set(&err, -EINVAL, "a cipher is chosen for a keyed store only");
		goto out;
	}
	char text[256];
	size_t len = ss_store_config_format(&c, text, sizeof(text));
	r = ss_put_object(s->b, l, SS_STORE_CONFIG_KEY, text, len, SS_PUT_IF_ABSENT, &s->requests,
			  &err);
	if (r == -EEXIST)
		ss_err_set(&err, r, "store %s was initialised by someone else meanwhile", s->uri);
	else if (r)
		ss_err_set(&err, r, "cannot write the config of store %s: %s", s->uri, strerror(-r));
out:
	free(p);
	ss_store_free(s);
	ss_loop_free(l);
	ss_cfg_wipe(&cfg);
	if (r && errbuf && errlen)
		snprintf(errbuf, errlen, "%s", err.msg);
	return r;
}

int ss_index_put(struct ss_backend *b, struct ss_loop *l, const struct ss_idkey *ids,
		 const struct ss_index_pack *packs, uint32_t n, uint64_t *requests,
		 struct ss_err *err)
{
	const struct ss_crypt *c = ids ? ids->crypt : NULL;
	uint8_t *buf = NULL, *sealed = NULL;
	uint8_t(*pids)[16] = NULL;
	size_t len = 0;
	uint8_t id[16];
	char hex[33], key[64];
	int r = ss_index_encode(packs, n, c ? SS_PACK_SEALED : 0, &buf, &len);
	if (!r)
		r = ss_random_id(id);
	if (!r && c) {
		/* Sealed under the key of its own id (its name), its packs
		 * listed in the clear for gc. */
		if (!(pids = malloc(16 * (size_t)(n ? n : 1))))
			r = -ENOMEM;
		for (uint32_t i = 0; !r && i < n; i++)
			memcpy(pids[i], packs[i].pack_id, 16);
		if (!r)
			r = ss_sealed_index_wrap(c, id, (const uint8_t(*)[16])pids, n, buf, len,
						 &sealed, &len);
		free(buf);
		buf = sealed;
	}
	if (!r) {
		ss_hex(id, 16, hex);
		snprintf(key, sizeof(key), "index/%s", hex);
		r = ss_put_object(b, l, key, buf, len, SS_PUT_IF_ABSENT, requests, err);
	}
	free(pids);
	free(buf);
	return r;
}

int ss_store_write_index(struct ss_store *s, struct ss_loop *l, struct ss_err *err)
{
	if (!s->nunindexed)
		return 0;
	int r = ss_index_put(s->b, l, s->ids, s->unindexed, s->nunindexed, &s->requests, err);
	if (r)
		return ss_err_set(err, r, "cannot write the store index to %s: %s", s->uri,
				  strerror(-r));
	ss_index_free(s->unindexed, s->nunindexed);
	s->unindexed = NULL;
	s->nunindexed = s->unindexed_cap = 0;
	return 0;
}

void ss_ref_key(const char *snapshot_uri, char *out)
{
	XXH128_hash_t h = XXH3_128bits(snapshot_uri, strlen(snapshot_uri));
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	char hex[33];
	ss_hex(c.digest, 16, hex);
	snprintf(out, 64, "refs/%s", hex);
}

int ss_store_write_ref(struct ss_store *s, struct ss_loop *l, const char *snapshot_uri,
		       struct ss_err *err)
{
	char key[64];
	ss_ref_key(snapshot_uri, key);
	int r = ss_put_object(s->b, l, key, snapshot_uri, strlen(snapshot_uri), 0, &s->requests,
			      err);
	if (r)
		return ss_err_set(err, r, "cannot write the snapshot reference: %s", strerror(-r));
	return 0;
}

/* For a local location, whether path exists; object stores: assume so. */
static int local_exists(const char *uri, const char *suffix, bool *exists, struct ss_err *err)
{
	const char *scheme;
	char *path;
	*exists = true;
	int r = ss_location_parse(uri, &scheme, &path, err);
	if (r)
		return r;
	if (strcmp(scheme, "file") == 0) {
		char p[PATH_MAX];
		struct stat st;
		snprintf(p, sizeof(p), "%s%s", path, suffix);
		*exists = stat(p, &st) == 0;
	}
	free(path);
	return 0;
}

int ss_store_backend_open(const char *uri, struct ss_loop *l, const struct ss_cfg *cfg,
			  struct ss_backend **out, struct ss_err *err)
{
	bool exists;
	int r = local_exists(uri, "", &exists, err);
	if (r)
		return r;
	if (!exists)
		return ss_err_set(err, -ENOENT, "no store at %s", uri);
	return ss_backend_open(uri, l, &cfg->bopts, out, err);
}

/* One spelling of a store location: scheme and path as
 * ss_location_parse gives them (file:// dropped, relative paths made
 * absolute, no trailing slash), local paths also without "." and ".."
 * components or repeated slashes, and through realpath when they exist
 * (a symlink to a store is that store). NULL when unparsable or out of
 * memory. */
char *ss_location_canon(const char *uri)
{
	const char *scheme;
	char *path = NULL;
	if (ss_location_parse(uri, &scheme, &path, NULL))
		return NULL;
	if (strcmp(scheme, "file") == 0) {
		/* Lexically first: "a/../b" names b whether or not a exists. */
		size_t n = 0;
		for (const char *c = path; *c;) {
			while (*c == '/')
				c++;
			const char *e = c + strcspn(c, "/");
			size_t len = (size_t)(e - c);
			if (len == 0 || (len == 1 && c[0] == '.')) {
				/* nothing */
			} else if (len == 2 && c[0] == '.' && c[1] == '.') {
				while (n > 0 && path[n - 1] != '/')
					n--;
				if (n > 0)
					n--;
			} else {
				path[n++] = '/';
				memmove(path + n, c, len);
				n += len;
			}
			c = e;
		}
		if (n == 0)
			path[n++] = '/';
		path[n] = '\0';
		char real[PATH_MAX];
		if (realpath(path, real)) {
			free(path);
			path = strdup(real);
		}
	}
	char *out = NULL;
	if (path && asprintf(&out, "%s://%s", scheme, path) < 0)
		out = NULL;
	free(path);
	return out;
}

bool ss_same_store(const char *a, const char *b)
{
	char *ca = a ? ss_location_canon(a) : NULL, *cb = b ? ss_location_canon(b) : NULL;
	bool same = ca && cb && strcmp(ca, cb) == 0;
	free(ca);
	free(cb);
	return same;
}

int ss_store_for(const char *explicit_store, const struct ss_manifest *m,
		 const struct ss_snaploc *loc, const char *snapshot, const char **out,
		 struct ss_err *err)
{
	const char *store = explicit_store ? explicit_store : loc->default_store;
	if (m && m->store_uri && *m->store_uri && !ss_same_store(m->store_uri, store))
		return ss_err_set(err, -EPERM,
				  "snapshot %s: its manifest names the store %s, but its store is "
				  "%s (%s); a manifest does not choose which store is read: name "
				  "its store explicitly if you trust it",
				  snapshot, m->store_uri, store,
				  explicit_store ? "as given" : "the default beside it");
	*out = store;
	return 0;
}
