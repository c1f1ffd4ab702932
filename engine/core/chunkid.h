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
 * manifest carry a 16-byte key check, so that a wrong or missing key is
 * refused up front instead of showing up as corruption. A store made
 * now is sealed (config version 2): its id secret, key check and
 * encryption keys derive from the key and the store's random id
 * (crypt.h). Stores of version 1 (keyed ids, HMAC-SHA256(key, label) as
 * the check, nothing encrypted) are still read.
 */
#ifndef SS_CHUNKID_H
#define SS_CHUNKID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xxh.h"

#include "util.h"

#define SS_KEY_MIN 16
#define SS_KEY_MAX 4096
#define SS_IDKEY_SECRET_SIZE 192
/* The store's configuration object, beside packs/ and index/. */
#define SS_STORE_CONFIG_KEY "config"

struct ss_crypt;
struct ss_keyhold;

/* The chunk ids of an operation, and in a sealed store its keys. */
struct ss_idkey {
	bool keyed;
	/* The key check a store's config and its manifests must carry: the
	 * version 1 one until ss_idkey_seal binds the key to a sealed store,
	 * that store's after. */
	uint8_t check[16];
	/* SS_IDKEY_SECRET_SIZE bytes of XXH3 secret (keyed), in hold's or
	 * crypt's mapping, never in this struct: both are kept out of core
	 * dumps and wiped by ss_idkey_wipe. */
	const uint8_t *secret;
	/* The key itself, for as long as the operation runs: a sealed
	 * store's keys derive from it and the store's id, which is learned
	 * only from the store's config or a manifest's header. */
	struct ss_keyhold *hold;
	/* The sealed store this key is bound to (crypt.h), or NULL. */
	struct ss_crypt *crypt;
	/* Whether a store's config was read: the store is then sealed
	 * exactly when crypt is set. */
	bool bound;
};

/* Plain ids: what an ss_idkey of all zeroes means too. */
extern const struct ss_idkey ss_idkey_plain;

/* Derive the version 1 secret and key check from key (SS_KEY_MIN..
 * SS_KEY_MAX bytes), and keep a copy of the key for ss_idkey_seal.
 * Returns 0 or -EINVAL (bad length) / -ENOMEM / -EIO (crypto library
 * failure). */
int ss_idkey_init(struct ss_idkey *k, const uint8_t *key, size_t len, struct ss_err *err);

/* Bind k to the sealed store store_id using cipher: its chunk ids and key
 * check become that store's (crypt.h). Once bound, binding to the same
 * store again is a no-op and to another one -EXDEV. -ENOKEY when k holds
 * no key; -ENOMEM / -EIO / -ENOENT (libcrypto) with err said. */
int ss_idkey_seal(struct ss_idkey *k, const uint8_t store_id[16], uint8_t cipher,
		  struct ss_err *err);

/* The keys of the sealed store store_id made from k's key, without
 * binding k (*out: ss_crypt_free it). Same errors as ss_idkey_seal. */
int ss_idkey_derive(const struct ss_idkey *k, const uint8_t store_id[16], uint8_t cipher,
		    struct ss_crypt **out, struct ss_err *err);

/* Forget the key, the secret and the sealed keys (explicit_bzero, then
 * unmapped). k may be zeroed or half-built. */
void ss_idkey_wipe(struct ss_idkey *k);

static inline void ss_chunk_id(const struct ss_idkey *k, const void *p, size_t n,
			       uint8_t out[16])
{
	XXH128_hash_t h = k && k->keyed
				  ? XXH3_128bits_withSecret(p, n, k->secret, SS_IDKEY_SECRET_SIZE)
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
 * Version 2, a sealed store (docs/SECURITY.md, "Encryption at rest in
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

/* Check the caller's key k against a store's config (p, n; n == 0 and
 * p == NULL: the store has none, i.e. plain ids), and bind k to the
 * store: a sealed store's keys are derived (ss_idkey_seal). -ENOKEY: the
 * store is keyed and k is not; -EKEYREJECTED: wrong key, or a key for a
 * store of plain ids; -EBADMSG / -EPROTONOSUPPORT: the config (err says).
 * store names the store in messages. out (may be NULL): the config, also
 * when the key is refused. */
int ss_idkey_check_store(struct ss_idkey *k, const uint8_t *p, size_t n, const char *store,
			 struct ss_store_config *out, struct ss_err *err);

#endif
