/* ncmanifest — snapshots' manifests kept in the node cache (ncache.h;
 * docs/DESIGN.md, "The node cache").
 *
 * A manifest is kept as blocks like a pack's, under two names:
 *
 *   its bytes     blocks 0.. of the pseudo-pack XXH3-128(domain, digest),
 *                 digest being XXH3-128 of the bytes: content-addressed,
 *                 so written once and never changed, like pack blocks;
 *   its name      block 0 of the pseudo-pack XXH3-128(domain, object
 *                 key): magic, digest and length of what was last seen
 *                 there, and the ETag the store gave those bytes when it
 *                 gave one (then the check asks for the manifest only if
 *                 its ETag changed: a 304 and no bytes, not the whole
 *                 manifest again). Names change (a snapshot may be pushed
 *                 again under its name); a newer one replaces the block.
 *
 * Both are in the store's space (the store's identity hash), so two
 * stores never share one. What a name points to is only a guess: a pull
 * that starts from it checks the store's manifest against the digest
 * before anything it wrote is published (pull.c). The bytes are checked
 * against the digest when read, so a damaged or torn copy is a miss. */
#include "core.h"
#include "ncache.h"

#include <stdlib.h>
#include <string.h>
#include "xxh.h"

#define B ((uint64_t)ss_ncache_block(c))   /* the cache's block size */
#define NAME_MAGIC "ssncnam1"
#define NAME_LEN 32u   /* magic 8, digest 16, length 8 */
/* The same, then the ETag (1 to SS_ETAG_MAX - 1 bytes, no NUL). */
#define NAME_MAGIC_ETAG "ssncnam2"
#define NAME_MAX_LEN (NAME_LEN + SS_ETAG_MAX - 1)

/* An ETag fit to send back in a header: printable ASCII, no more than
 * fits. What the cache holds is only as good as its disk. */
static bool etag_ok(const uint8_t *p, size_t n)
{
	if (!n || n >= SS_ETAG_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] > 0x7e)
			return false;
	return true;
}

/* A name block: 0 with *n the length and etag filled ("" in a record
 * without one), or -ENOENT when it is no record. */
static int name_parse(const uint8_t *rec, uint32_t blen, uint64_t *n, char etag[SS_ETAG_MAX])
{
	bool plain = blen == NAME_LEN && !memcmp(rec, NAME_MAGIC, 8);
	bool tagged = blen > NAME_LEN && blen <= NAME_MAX_LEN && !memcmp(rec, NAME_MAGIC_ETAG, 8) &&
		      etag_ok(rec + NAME_LEN, blen - NAME_LEN);
	if (!plain && !tagged)
		return -ENOENT;
	*n = ss_get_le64(rec + 24);
	if (!*n || *n > SS_NCACHE_MANIFEST_MAX)
		return -ENOENT;
	size_t el = tagged ? blen - NAME_LEN : 0;
	memcpy(etag, rec + NAME_LEN, el);
	etag[el] = '\0';
	return 0;
}

/* XXH3-128 of (domain, XXH3-128 of p): names in their own domain. */
static void hash2(const char *domain, const void *p, size_t n, uint8_t out[16])
{
	uint8_t buf[64 + 16];
	size_t dl = strlen(domain);
	memcpy(buf, domain, dl);
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)(buf + dl), XXH3_128bits(p, n));
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)out, XXH3_128bits(buf, dl + 16));
}

int ss_ncache_store_id(const struct ss_backend *b, uint8_t out[16])
{
	/* XXH3-128 of the domain (with its NUL) then the identity: the
	 * names blocks have had since the cache began, so that a cache
	 * filled by an earlier build keeps serving. */
	static const char domain[] = "snapstream node cache 1";
	char buf[sizeof(domain) + 4200];
	memcpy(buf, domain, sizeof(domain));
	int r = ss_backend_identity(b, buf + sizeof(domain), sizeof(buf) - sizeof(domain));
	if (r)
		return r;
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)out,
				 XXH3_128bits(buf, sizeof(domain) + strlen(buf + sizeof(domain))));
	return 0;
}

void ss_ncache_manifest_digest(const uint8_t *p, size_t n, uint8_t out[16])
{
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)out, XXH3_128bits(p, n));
}

/* The cache cfg names and the block names of b's object key. */
static int open_for(const struct ss_cfg *cfg, const struct ss_backend *b, const char *key,
		    bool must_exist, struct ss_ncache **c, uint8_t store[16],
		    uint8_t name[16])
{
	if (!cfg->cache_dir || ss_ncache_store_id(b, store))
		return -ENOENT;
	struct ss_err e = {0};
	if (ss_ncache_open(cfg->cache_dir, cfg->cache_size, must_exist, c, &e))
		return -ENOENT;
	uint8_t pseudo[16];
	hash2("snapstream manifest name 1", key, strlen(key), pseudo);
	ss_ncache_key(store, pseudo, 0, name);
	return 0;
}

static void content_key(const uint8_t store[16], const uint8_t digest[16], uint64_t k,
			uint8_t key[16])
{
	uint8_t pseudo[16];
	hash2("snapstream manifest 1", digest, 16, pseudo);
	ss_ncache_key(store, pseudo, k, key);
}

int ss_ncache_manifest_get(const struct ss_cfg *cfg, const struct ss_backend *b,
			   const char *key, uint8_t **out, size_t *len, uint8_t digest[16],
			   char etag[SS_ETAG_MAX])
{
	struct ss_ncache *c = NULL;
	uint8_t store[16], name[16], rec[NAME_MAX_LEN];
	uint32_t blen = 0;
	uint64_t n = 0;
	char tag[SS_ETAG_MAX];
	if (open_for(cfg, b, key, true, &c, store, name))
		return -ENOENT;
	int r = ss_ncache_get(c, name, 0, rec, sizeof(rec), &blen);
	if (!r)
		r = name_parse(rec, blen, &n, tag);
	uint8_t *p = r ? NULL : malloc(n);
	if (!r && !p)
		r = -ENOMEM;
	for (uint64_t k = 0; !r && k * B < n; k++) {
		uint8_t ck[16];
		uint32_t want = (uint32_t)SS_MIN(B, n - k * B);
		content_key(store, rec + 8, k, ck);
		if (!(r = ss_ncache_get(c, ck, 0, p + k * B, want, &blen)) && blen != want)
			r = -ENOENT;
	}
	uint8_t d[16];
	if (!r) {
		ss_ncache_manifest_digest(p, n, d);
		if (memcmp(d, rec + 8, 16)) {
			/* Changed on disk: never a guess worth starting from. The
			 * bytes go too, or the next keeper would find them there
			 * and leave them as they are. */
			for (uint64_t k = 0; k * B < n; k++) {
				uint8_t ck[16];
				content_key(store, rec + 8, k, ck);
				ss_ncache_drop(c, ck);
			}
			ss_ncache_drop(c, name);
			r = -ENOENT;
		}
	}
	ss_ncache_free(c);
	if (r) {
		free(p);
		return r;
	}
	memcpy(digest, d, 16);
	if (etag)
		memcpy(etag, tag, strlen(tag) + 1);
	*out = p;
	*len = n;
	return 0;
}

void ss_ncache_manifest_put(const struct ss_cfg *cfg, const struct ss_backend *b,
			    const char *key, const uint8_t *p, size_t n, const char *etag)
{
	struct ss_ncache *c = NULL;
	uint8_t store[16], name[16], d[16], rec[NAME_MAX_LEN];
	size_t el = etag ? strlen(etag) : 0;
	if (!etag_ok((const uint8_t *)etag, el))
		el = 0;
	if (!n || n > SS_NCACHE_MANIFEST_MAX || open_for(cfg, b, key, false, &c, store, name))
		return;
	ss_ncache_manifest_digest(p, n, d);
	/* The bytes first, then the name: a name never points at bytes that
	 * were not there when it was written. Blocks already there (the same
	 * manifest seen before) are left as they are. */
	for (uint64_t k = 0; k * B < n; k++) {
		uint8_t ck[16];
		content_key(store, d, k, ck);
		if (ss_ncache_has(c, ck))
			continue;
		struct iovec v = {(void *)(p + k * B), (size_t)SS_MIN(B, n - k * B)};
		int r = ss_ncache_put(c, ck, &v, 1, (uint32_t)v.iov_len);
		if (r == 0)
			ss_ncache_count(c, SS_NC_WRITTEN_BYTES, v.iov_len);
		else if (r != -EEXIST)
			goto out;   /* no room: the cache simply does not keep it */
	}
	memcpy(rec, el ? NAME_MAGIC_ETAG : NAME_MAGIC, 8);
	memcpy(rec + 8, d, 16);
	ss_put_le64(rec + 24, n);
	memcpy(rec + NAME_LEN, etag ? etag : "", el);
	uint32_t rlen = (uint32_t)(NAME_LEN + el);
	uint8_t old[NAME_MAX_LEN];
	uint32_t olen = 0;
	if (!ss_ncache_get(c, name, 0, old, sizeof(old), &olen) && olen == rlen &&
	    !memcmp(old, rec, rlen))
		goto out;   /* already names these bytes, by this ETag */
	struct iovec v = {rec, rlen};
	if (ss_ncache_put(c, name, &v, 1, rlen) == -EEXIST) {
		ss_ncache_drop(c, name);
		ss_ncache_put(c, name, &v, 1, rlen);
	}
out:
	ss_ncache_free(c);
}
