/* chunkid — how chunks are named.
 *
 * A chunk's id is XXH3-128 of its bytes. A keyed store (created by ss_init
 * with a secret key) names chunks by XXH3-128 with a 192-byte secret
 * derived from that key, so that nobody without the key can compute the
 * id a piece of data will get, and so nobody can craft data whose chunk
 * collides with another tenant's chunk in that store (docs/SECURITY.md,
 * "Keyed chunk ids"). Whole-file digests stay unkeyed (fdigest.h), so
 * anyone can compute them: they never decide what is shared.
 *
 * The key itself is never stored. A store's `config` object and every
 * manifest carry a 16-byte key check, HMAC-SHA256(key, label) cut to 16
 * bytes, so that a wrong or missing key is refused up front instead of
 * showing up as corruption.
 */
#ifndef SS_CHUNKID_H
#define SS_CHUNKID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>

#include "util.h"

#define SS_KEY_MIN 16
#define SS_KEY_MAX 4096
#define SS_IDKEY_SECRET_SIZE 192
/* The store's configuration object, beside packs/ and index/. */
#define SS_STORE_CONFIG_KEY "config"

struct ss_idkey {
	bool keyed;
	uint8_t check[16];
	uint8_t secret[SS_IDKEY_SECRET_SIZE];
};

/* Plain ids: what an ss_idkey of all zeroes means too. */
extern const struct ss_idkey ss_idkey_plain;

/* Derive the secret and key check from key (SS_KEY_MIN..SS_KEY_MAX bytes).
 * Returns 0 or -EINVAL (bad length) / -EIO (crypto library failure). */
int ss_idkey_init(struct ss_idkey *k, const uint8_t *key, size_t len, struct ss_err *err);

/* Forget the secret (explicit_bzero). */
void ss_idkey_wipe(struct ss_idkey *k);

static inline void ss_chunk_id(const struct ss_idkey *k, const void *p, size_t n,
			       uint8_t out[16])
{
	XXH128_hash_t h = k && k->keyed
				  ? XXH3_128bits_withSecret(p, n, k->secret, sizeof(k->secret))
				  : XXH3_128bits(p, n);
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)out, h);
}

/* The ids a snapshot's manifest uses, given the caller's key k (plain when
 * the caller has none): *out points at k or at ss_idkey_plain. A keyed
 * manifest needs k with the same key check: -ENOKEY (no key given) or
 * -EKEYREJECTED (another key), naming what. */
int ss_idkey_for_manifest(const struct ss_idkey *k, bool manifest_keyed,
			  const uint8_t manifest_check[16], const char *what,
			  const struct ss_idkey **out, struct ss_err *err);

/* The store configuration object: a few lines of text,
 *
 *   snapstream-store 1
 *   chunk-ids xxh3-128 | xxh3-128-keyed <32 hex: key check>
 *
 * Encode into buf (at least 128 bytes); returns the length. */
size_t ss_store_config_encode(const struct ss_idkey *k, char *buf, size_t cap);

/* Version 2, a sealed store (docs/SECURITY.md, "Encryption at rest in
 * keyed stores"), adds a third line after a keyed chunk-ids line:
 *
 *   seal aes-256-gcm | chacha20-poly1305 <32 hex: store id>
 */
struct ss_store_config {
	unsigned version;   /* 1 or 2 */
	bool keyed;
	uint8_t check[16];
	bool sealed;        /* version 2 */
	uint8_t cipher;     /* enum ss_cipher (crypt.h) */
	uint8_t store_id[16];
};

/* Parse any version (at most 4 KiB, hostile input): -EBADMSG for anything
 * malformed, -EPROTONOSUPPORT for a version newer than 2. */
int ss_store_config_parse(const uint8_t *p, size_t n, struct ss_store_config *c,
			  struct ss_err *err);
/* Its one spelling (0: buf too small). */
size_t ss_store_config_format(const struct ss_store_config *c, char *buf, size_t cap);

/* Parse one (at most 4 KiB, hostile input): sets *keyed and check.
 * -EBADMSG for anything malformed, -EPROTONOSUPPORT for a newer version
 * and for a sealed store, which this build does not use yet. */
int ss_store_config_decode(const uint8_t *p, size_t n, bool *keyed, uint8_t check[16],
			   struct ss_err *err);

/* Check the caller's key k against a store's config (p, n; n == 0 and
 * p == NULL: the store has none, i.e. plain ids). -ENOKEY: the store is
 * keyed and k is not; -EKEYREJECTED: wrong key, or a key for a store of
 * plain ids. store names the store in messages. */
int ss_idkey_check_store(const struct ss_idkey *k, const uint8_t *p, size_t n,
			 const char *store, struct ss_err *err);

#endif
