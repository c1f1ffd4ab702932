/* crypt — encryption at rest in a sealed keyed store.
 *
 * docs/SECURITY.md, "Encryption at rest in keyed stores", is the
 * specification. From the store's key file and its random store id this
 * derives (HKDF-SHA256, one label per purpose) the chunk-id secret, the
 * public key check, and one AEAD key per pack, per manifest and per index
 * object, so that no key ever seals two things under one nonce without
 * any coordination between pushes or hosts: a pack's frames are sealed
 * under the pack's key with their offset in the pack as the nonce, and a
 * manifest or index object under a key of its own with nonce 0.
 *
 * Sealed objects are `ciphertext || tag[16]`, the ciphertext exactly as
 * long as the plaintext; seal and open work in place. The cipher is
 * AES-256-GCM, or ChaCha20-Poly1305 where the CPU has no AES
 * instructions; a store records which, and uses only that one.
 */
#ifndef SS_CRYPT_H
#define SS_CRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SS_SEAL_TAG 16u
#define SS_SEAL_KEY 32u
#define SS_CRYPT_IDSECRET 192u

enum ss_cipher {
	SS_CIPHER_AES256GCM = 1,
	SS_CIPHER_CHACHA20POLY1305 = 2,
};

/* The cipher a new store should use on this CPU. */
enum ss_cipher ss_crypt_pick(void);
/* Its name in a store's config ("aes-256-gcm", "chacha20-poly1305"),
 * and back (0: unknown). */
const char *ss_cipher_name(enum ss_cipher c);
enum ss_cipher ss_cipher_parse(const char *name);

/* The derived secrets of one sealed store. They live in a mapping of
 * their own, kept out of core dumps (MADV_DONTDUMP) and locked in memory
 * when the limit allows; ss_crypt_free wipes and unmaps it. */
struct ss_crypt;

/* Derive everything from key (SS_KEY_MIN..SS_KEY_MAX bytes; the caller
 * wipes its copy) for the store store_id using cipher. Returns 0, -EINVAL
 * (length, cipher), -ENOMEM, or -ENOENT / -EIO (libcrypto missing or
 * failing), with err said. */
int ss_crypt_new(const uint8_t *key, size_t len, const uint8_t store_id[16], enum ss_cipher cipher,
		 struct ss_crypt **out, struct ss_err *err);
void ss_crypt_free(struct ss_crypt *c);

enum ss_cipher ss_crypt_cipher(const struct ss_crypt *c);
const uint8_t *ss_crypt_store_id(const struct ss_crypt *c);
/* The public key check (16 bytes); says nothing about the secrets. */
const uint8_t *ss_crypt_check(const struct ss_crypt *c);
/* The XXH3 secret of chunk ids (SS_CRYPT_IDSECRET bytes). */
const uint8_t *ss_crypt_idsecret(const struct ss_crypt *c);

/* Object keys: a pack's (its frames and index), a manifest's (from the
 * salt in its header), an index object's (from its id). */
enum ss_objkind { SS_OBJ_PACK, SS_OBJ_MANIFEST, SS_OBJ_INDEX };
int ss_crypt_objkey(const struct ss_crypt *c, enum ss_objkind kind, const uint8_t id[16],
		    uint8_t key[SS_SEAL_KEY]);

/* One AEAD context (per thread): keyed once per object, then used for
 * any number of seals/opens with distinct nonces. */
struct ss_aead;
int ss_aead_new(enum ss_cipher cipher, struct ss_aead **out);
void ss_aead_free(struct ss_aead *a);
int ss_aead_key(struct ss_aead *a, const uint8_t key[SS_SEAL_KEY]);

/* Key a with the key of pack pack_id of c's store (its frames and index). */
int ss_crypt_pack_key(const struct ss_crypt *c, const uint8_t pack_id[16], struct ss_aead *a);

/* Seal buf[0, len) in place and write the tag at buf + len (room for
 * SS_SEAL_TAG more bytes), binding nonce and ad. Returns 0 or -EIO. */
int ss_aead_seal(struct ss_aead *a, const uint8_t nonce[12], const void *ad, size_t adlen,
		 uint8_t *buf, size_t len);
/* Open buf[0, sealed) in place (sealed >= SS_SEAL_TAG): on success the
 * plaintext is buf[0, sealed - SS_SEAL_TAG). -EBADMSG when the tag,
 * nonce, ad or length do not match (buf then holds garbage). */
int ss_aead_open(struct ss_aead *a, const uint8_t nonce[12], const void *ad, size_t adlen,
		 uint8_t *buf, size_t sealed);

/* A frame of a pack: the nonce is its offset in the pack, the ad its
 * codec and plaintext length. The aead holds the pack's key. */
int ss_crypt_frame_seal(struct ss_aead *a, uint64_t off, uint8_t codec, uint8_t *buf, size_t len);
int ss_crypt_frame_open(struct ss_aead *a, uint64_t off, uint8_t codec, uint8_t *buf,
			size_t sealed);

/* A pack's index and trailer (len bytes, written at index_off, the end of
 * its chunk data): sealed under the pack's key with a nonce no frame has,
 * binding the offset and entry count. */
int ss_crypt_index_seal(struct ss_aead *a, uint64_t index_off, uint8_t *buf, size_t len);
int ss_crypt_index_open(struct ss_aead *a, uint64_t index_off, uint8_t *buf, size_t sealed);

/* A manifest body sealed for the snapshot at the normalized location loc:
 * the key from salt, nonce 0, ad = hdr (the envelope's plain header,
 * which holds the salt) || loc. Opening under another location, in
 * another store or with another header fails (-EBADMSG). */
int ss_crypt_manifest_seal(const struct ss_crypt *c, const uint8_t salt[16], const uint8_t *hdr,
			   size_t hdrlen, const char *loc, uint8_t *buf, size_t len);
int ss_crypt_manifest_open(const struct ss_crypt *c, const uint8_t salt[16], const uint8_t *hdr,
			   size_t hdrlen, const char *loc, uint8_t *buf, size_t sealed);

/* The sealed manifest envelope (manifest format 4, docs/DESIGN.md,
 * "Sealed keyed stores"): a protobuf Envelope of exactly
 *
 *   format_major = 4 | body_codec = 2 | body = hdr || packs || sealed inner
 *   hdr   := "SSSEAL01" | store id[16] | key check[16] | cipher u8 |
 *            3 zero bytes | npacks u32 | salt[16]               (64 bytes)
 *   packs := npacks x pack id[16]
 *
 * where inner is the snapshot's manifest as ss_manifest_encode writes it,
 * whose pack table is exactly `packs`. hdr and packs are in the clear (gc
 * keeps a snapshot's packs without the key) and are the associated data,
 * with the snapshot's location. A reader of format 3 or older refuses it
 * by its major ("made by a newer snapstream"). */
#define SS_SEALED_MAJOR 4u   /* SS_MANIFEST_SEALED_MAJOR, reserved there */
#define SS_SEALED_HDR 64u
#define SS_SEALED_MAX_PACKS (1u << 22)

struct ss_sealed_hdr {
	uint8_t store_id[16];
	uint8_t check[16];
	enum ss_cipher cipher;
	uint8_t salt[16];
	uint32_t npacks;
	const uint8_t (*packs)[16];   /* within the buffer peeked */
};

/* Whether buf is a sealed envelope, and its plain header (needs no key):
 * 0; -ENOMSG: not a sealed envelope (read it as a plain manifest);
 * -EBADMSG: a damaged one (err says how). *body, *bodylen: the sealed
 * inner manifest, within buf. */
int ss_sealed_peek(const uint8_t *buf, size_t len, struct ss_sealed_hdr *h, const uint8_t **body,
		   size_t *bodylen, struct ss_err *err);

/* Seal inner[0, n), whose packs are packs[0, npacks), for the snapshot at
 * loc under a fresh salt: *out is a malloc'd envelope. 0, -ENOMEM, -EIO,
 * -EFBIG. */
int ss_sealed_wrap(const struct ss_crypt *c, const char *loc, const uint8_t (*packs)[16],
		   uint32_t npacks, const uint8_t *inner, size_t n, uint8_t **out, size_t *outlen);

/* Open an envelope (after ss_sealed_peek said it is one, and c was made
 * for its header's store id and cipher): *inner malloc'd. -EKEYREJECTED
 * when the header's key check is not c's; -EBADMSG (err: "does not
 * authenticate") for anything else. */
int ss_sealed_unwrap(const struct ss_crypt *c, const char *loc, const uint8_t *buf, size_t len,
		     uint8_t **inner, size_t *innerlen, struct ss_err *err);

/* Sealed index objects (proto/pack.h, sealed_obj): the object id and the
 * pack ids in the clear, as associated data; an SSINDX01 object sealed
 * under the object's key. peek: 0, -ENOMSG (not sealed), -EBADMSG (a
 * damaged header); *packs points into buf. */
#define SS_SEALED_INDEX_HDR 32u
int ss_sealed_index_peek(const uint8_t *buf, size_t len, uint8_t id[16],
			 const uint8_t (**packs)[16], uint32_t *npacks, struct ss_err *err);
int ss_sealed_index_wrap(const struct ss_crypt *c, const uint8_t id[16],
			 const uint8_t (*packs)[16], uint32_t npacks, const uint8_t *inner, size_t n,
			 uint8_t **out, size_t *outlen);
/* *inner malloc'd; -EBADMSG when it does not authenticate. */
int ss_sealed_index_unwrap(const struct ss_crypt *c, const uint8_t *buf, size_t len,
			   uint8_t **inner, size_t *innerlen, struct ss_err *err);

#endif
