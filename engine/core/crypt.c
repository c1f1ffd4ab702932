/* Sealed keyed stores: key schedule and AEAD (docs/SECURITY.md,
 * "Encryption at rest in keyed stores"). */
#include "crypt.h"
#include "chunkid.h"
#include "cryptofn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

static const char SALT_PREFIX[] = "snapstream v2";
static const char L_IDSECRET[] = "snapstream chunk-id secret v2";
static const char L_CHECK[] = "snapstream key check v2";
static const char L_PACK[] = "snapstream frame key v2";
static const char L_MANIFEST[] = "snapstream manifest key v2";
static const char L_INDEX[] = "snapstream index key v2";

struct ss_crypt {
	uint8_t prk[32];
	uint8_t idsecret[SS_CRYPT_IDSECRET];
	uint8_t check[16];
	uint8_t store_id[16];
	enum ss_cipher cipher;
};

/* One page: the secrets' own mapping. */
#define CRYPT_MAP 4096u
_Static_assert(sizeof(struct ss_crypt) <= CRYPT_MAP, "ss_crypt fits its page");

enum ss_cipher ss_crypt_pick(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul"))
		return SS_CIPHER_AES256GCM;
#elif defined(__aarch64__) && defined(HWCAP_AES) && defined(HWCAP_PMULL)
	unsigned long hw = getauxval(AT_HWCAP);
	if ((hw & HWCAP_AES) && (hw & HWCAP_PMULL))
		return SS_CIPHER_AES256GCM;
#endif
	return SS_CIPHER_CHACHA20POLY1305;
}

const char *ss_cipher_name(enum ss_cipher c)
{
	return c == SS_CIPHER_AES256GCM		  ? "aes-256-gcm"
	       : c == SS_CIPHER_CHACHA20POLY1305 ? "chacha20-poly1305"
						 : "?";
}

enum ss_cipher ss_cipher_parse(const char *name)
{
	if (!strcmp(name, "aes-256-gcm"))
		return SS_CIPHER_AES256GCM;
	if (!strcmp(name, "chacha20-poly1305"))
		return SS_CIPHER_CHACHA20POLY1305;
	return 0;
}

static int hmac256(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen, uint8_t out[32])
{
	unsigned int olen = 0;
	const struct ss_cryptofn *C = ss_crypto();
	if (!C->hmac(C->sha256(), key, (int)klen, msg, mlen, out, &olen) || olen != 32)
		return -EIO;
	return 0;
}

/* HKDF-Expand (RFC 5869) of prk with info = label || ctx (ctx may be
 * NULL) into out[0, n), n <= 255 * 32. */
static int expand(const uint8_t prk[32], const char *label, const uint8_t *ctx, size_t ctxlen,
		  uint8_t *out, size_t n)
{
	uint8_t t[32], msg[32 + 64 + 16 + 1];
	size_t llen = strlen(label), tlen = 0, done = 0;
	int rc = 0;
	if (llen + ctxlen > 64 + 16)
		return -EINVAL;
	for (uint8_t i = 1; !rc && done < n; i++) {
		size_t m = 0;
		memcpy(msg, t, tlen);
		m += tlen;
		memcpy(msg + m, label, llen);
		m += llen;
		if (ctxlen)
			memcpy(msg + m, ctx, ctxlen);
		m += ctxlen;
		msg[m++] = i;
		rc = hmac256(prk, 32, msg, m, t);
		tlen = sizeof(t);
		size_t k = SS_MIN(sizeof(t), n - done);
		memcpy(out + done, t, k);
		done += k;
	}
	explicit_bzero(t, sizeof(t));
	explicit_bzero(msg, sizeof(msg));
	return rc;
}

void ss_crypt_free(struct ss_crypt *c)
{
	if (!c)
		return;
	explicit_bzero(c, CRYPT_MAP);
	munlock(c, CRYPT_MAP);
	munmap(c, CRYPT_MAP);
}

int ss_crypt_new(const uint8_t *key, size_t len, const uint8_t store_id[16], enum ss_cipher cipher,
		 struct ss_crypt **out, struct ss_err *err)
{
	*out = NULL;
	if (len < SS_KEY_MIN || len > SS_KEY_MAX)
		return ss_err_set(err, -EINVAL, "a store key must be %d..%d bytes (got %zu)",
				  SS_KEY_MIN, SS_KEY_MAX, len);
	if (!ss_cipher_parse(ss_cipher_name(cipher)))
		return ss_err_set(err, -EINVAL, "unknown cipher %d", (int)cipher);
	int rc = ss_crypto_load(err);
	if (rc)
		return rc;
	struct ss_crypt *c = mmap(NULL, CRYPT_MAP, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED)
		return ss_err_set(err, -ENOMEM, "cannot map memory for the store's keys");
	/* Out of core dumps; out of swap when RLIMIT_MEMLOCK allows (the
	 * default 8 MiB does; failing that the keys are still wiped). */
	madvise(c, CRYPT_MAP, MADV_DONTDUMP);
	(void)mlock(c, CRYPT_MAP);
	memcpy(c->store_id, store_id, 16);
	c->cipher = cipher;

	uint8_t salt[sizeof(SALT_PREFIX) - 1 + 16];
	memcpy(salt, SALT_PREFIX, sizeof(SALT_PREFIX) - 1);
	memcpy(salt + sizeof(SALT_PREFIX) - 1, store_id, 16);
	rc = hmac256(salt, sizeof(salt), key, len, c->prk);
	if (!rc)
		rc = expand(c->prk, L_IDSECRET, NULL, 0, c->idsecret, sizeof(c->idsecret));
	if (!rc)
		rc = expand(c->prk, L_CHECK, NULL, 0, c->check, sizeof(c->check));
	if (rc) {
		ss_crypt_free(c);
		return ss_err_set(err, rc, "deriving the store's keys failed (OpenSSL)");
	}
	*out = c;
	return 0;
}

enum ss_cipher ss_crypt_cipher(const struct ss_crypt *c) { return c->cipher; }
const uint8_t *ss_crypt_store_id(const struct ss_crypt *c) { return c->store_id; }
const uint8_t *ss_crypt_check(const struct ss_crypt *c) { return c->check; }
const uint8_t *ss_crypt_idsecret(const struct ss_crypt *c) { return c->idsecret; }

int ss_crypt_objkey(const struct ss_crypt *c, enum ss_objkind kind, const uint8_t id[16],
		    uint8_t key[SS_SEAL_KEY])
{
	const char *label = kind == SS_OBJ_PACK ? L_PACK : kind == SS_OBJ_MANIFEST ? L_MANIFEST : L_INDEX;
	return expand(c->prk, label, id, 16, key, SS_SEAL_KEY);
}

/* ------------------------------------------------------------------ AEAD */

struct ss_aead;
static int aead_key(struct ss_aead *a, const uint8_t key[SS_SEAL_KEY]);


struct ss_aead {
	EVP_CIPHER_CTX *ctx;
	enum ss_cipher cipher;
	bool keyed;
};

static const EVP_CIPHER *evp_cipher(enum ss_cipher c)
{
	const struct ss_cryptofn *C = ss_crypto();
	return c == SS_CIPHER_AES256GCM ? C->aes_256_gcm() : C->chacha20_poly1305();
}

int ss_aead_new(enum ss_cipher cipher, struct ss_aead **out)
{
	*out = NULL;
	if (!ss_cipher_parse(ss_cipher_name(cipher)))
		return -EINVAL;
	int rc = ss_crypto_load(NULL);
	if (rc)
		return rc;
	struct ss_aead *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->cipher = cipher;
	if (!(a->ctx = ss_crypto()->cipher_ctx_new())) {
		free(a);
		return -ENOMEM;
	}
	*out = a;
	return 0;
}

void ss_aead_free(struct ss_aead *a)
{
	if (!a)
		return;
	/* EVP_CIPHER_CTX_free cleanses the key schedule. */
	ss_crypto()->cipher_ctx_free(a->ctx);
	free(a);
}

int ss_crypt_pack_key(const struct ss_crypt *c, const uint8_t pack_id[16], struct ss_aead *a)
{
	uint8_t key[SS_SEAL_KEY];
	int r = ss_crypt_objkey(c, SS_OBJ_PACK, pack_id, key);
	if (!r)
		r = aead_key(a, key);
	explicit_bzero(key, sizeof(key));
	return r;
}

int ss_aead_key(struct ss_aead *a, const uint8_t key[SS_SEAL_KEY])
{
	return aead_key(a, key);
}

static int aead_key(struct ss_aead *a, const uint8_t key[SS_SEAL_KEY])
{
	const struct ss_cryptofn *C = ss_crypto();
	/* Set the key once; each seal/open then sets only its nonce. The
	 * direction is chosen again per call (EncryptInit/DecryptInit with a
	 * NULL cipher and key keep the schedule). */
	a->keyed = C->encrypt_init_ex(a->ctx, evp_cipher(a->cipher), NULL, key, NULL) == 1;
	return a->keyed ? 0 : -EIO;
}

static bool int_ok(size_t n) { return n <= (size_t)INT32_MAX; }

int ss_aead_seal(struct ss_aead *a, const uint8_t nonce[12], const void *ad, size_t adlen,
		 uint8_t *buf, size_t len)
{
	const struct ss_cryptofn *C = ss_crypto();
	int adn = 0, n = 0, f = 0;
	if (!a->keyed || !int_ok(len) || !int_ok(adlen))
		return -EIO;
	if (C->encrypt_init_ex(a->ctx, NULL, NULL, NULL, nonce) != 1 ||
	    (adlen && C->encrypt_update(a->ctx, NULL, &adn, ad, (int)adlen) != 1) ||
	    (len && C->encrypt_update(a->ctx, buf, &n, buf, (int)len) != 1) ||
	    C->encrypt_final_ex(a->ctx, buf + n, &f) != 1 || (size_t)(n + f) != len ||
	    C->cipher_ctx_ctrl(a->ctx, EVP_CTRL_AEAD_GET_TAG, SS_SEAL_TAG, buf + len) != 1)
		return -EIO;
	return 0;
}

int ss_aead_open(struct ss_aead *a, const uint8_t nonce[12], const void *ad, size_t adlen,
		 uint8_t *buf, size_t sealed)
{
	const struct ss_cryptofn *C = ss_crypto();
	int adn = 0, n = 0, f = 0;
	if (sealed < SS_SEAL_TAG || !int_ok(sealed) || !int_ok(adlen))
		return -EBADMSG;
	size_t len = sealed - SS_SEAL_TAG;
	uint8_t tag[SS_SEAL_TAG];
	memcpy(tag, buf + len, SS_SEAL_TAG);
	if (!a->keyed || C->decrypt_init_ex(a->ctx, NULL, NULL, NULL, nonce) != 1)
		return -EIO;
	if ((adlen && C->decrypt_update(a->ctx, NULL, &adn, ad, (int)adlen) != 1) ||
	    (len && C->decrypt_update(a->ctx, buf, &n, buf, (int)len) != 1) ||
	    C->cipher_ctx_ctrl(a->ctx, EVP_CTRL_AEAD_SET_TAG, SS_SEAL_TAG, tag) != 1 ||
	    C->decrypt_final_ex(a->ctx, buf + n, &f) != 1 || (size_t)(n + f) != len)
		return -EBADMSG;
	return 0;
}

/* ---------------------------------------------------------------- objects */

static void frame_nonce(uint64_t off, uint8_t nonce[12])
{
	memset(nonce, 0, 12);
	for (int i = 0; i < 8; i++)
		nonce[i] = (uint8_t)(off >> (8 * i));
}

static void frame_ad(uint8_t codec, size_t len, uint8_t ad[8])
{
	memcpy(ad, "SF", 2);
	ad[2] = codec;
	ad[3] = 0;
	for (int i = 0; i < 4; i++)
		ad[4 + i] = (uint8_t)((uint64_t)len >> (8 * i));
}

int ss_crypt_frame_seal(struct ss_aead *a, uint64_t off, uint8_t codec, uint8_t *buf, size_t len)
{
	uint8_t nonce[12], ad[8];
	if (len > UINT32_MAX)
		return -EINVAL;
	frame_nonce(off, nonce);
	frame_ad(codec, len, ad);
	return ss_aead_seal(a, nonce, ad, sizeof(ad), buf, len);
}

int ss_crypt_frame_open(struct ss_aead *a, uint64_t off, uint8_t codec, uint8_t *buf, size_t sealed)
{
	uint8_t nonce[12], ad[8];
	if (sealed < SS_SEAL_TAG || sealed - SS_SEAL_TAG > UINT32_MAX)
		return -EBADMSG;
	frame_nonce(off, nonce);
	frame_ad(codec, sealed - SS_SEAL_TAG, ad);
	return ss_aead_open(a, nonce, ad, sizeof(ad), buf, sealed);
}

/* A pack's index and trailer: the frame nonce's offset is the index's,
 * with the top bit of the last word set, which no frame's has. */
static void index_nonce_ad(uint64_t index_off, size_t len, uint8_t nonce[12], uint8_t ad[20])
{
	frame_nonce(index_off, nonce);
	nonce[11] = 0x80;
	memcpy(ad, "SSPACK02", 8);
	for (int i = 0; i < 8; i++)
		ad[8 + i] = (uint8_t)(index_off >> (8 * i));
	uint64_t count = len >= 32 ? (len - 32) / 32 : 0;
	for (int i = 0; i < 4; i++)
		ad[16 + i] = (uint8_t)(count >> (8 * i));
}

int ss_crypt_index_seal(struct ss_aead *a, uint64_t index_off, uint8_t *buf, size_t len)
{
	uint8_t nonce[12], ad[20];
	index_nonce_ad(index_off, len, nonce, ad);
	return ss_aead_seal(a, nonce, ad, sizeof(ad), buf, len);
}

int ss_crypt_index_open(struct ss_aead *a, uint64_t index_off, uint8_t *buf, size_t sealed)
{
	uint8_t nonce[12], ad[20];
	if (sealed < SS_SEAL_TAG)
		return -EBADMSG;
	index_nonce_ad(index_off, sealed - SS_SEAL_TAG, nonce, ad);
	return ss_aead_open(a, nonce, ad, sizeof(ad), buf, sealed);
}

/* The manifest's ad: its header, then the location, length-prefixed so
 * that no two (header, location) pairs give the same bytes. */
static int manifest_crypt(const struct ss_crypt *c, const uint8_t salt[16], const uint8_t *hdr,
			  size_t hdrlen, const char *loc, uint8_t *buf, size_t n, bool seal)
{
	size_t loclen = strlen(loc);
	if (hdrlen > SS_SEALED_HDR + 16 * (size_t)SS_SEALED_MAX_PACKS || loclen > 8192)
		return -EINVAL;
	uint8_t *ad = malloc(8 + hdrlen + loclen);
	uint8_t key[SS_SEAL_KEY], nonce[12] = {0};
	struct ss_aead *a = NULL;
	int rc = ad ? ss_aead_new(c->cipher, &a) : -ENOMEM;
	if (!rc)
		rc = ss_crypt_objkey(c, SS_OBJ_MANIFEST, salt, key);
	if (!rc)
		rc = ss_aead_key(a, key);
	if (!rc) {
		for (int i = 0; i < 8; i++)
			ad[i] = (uint8_t)((uint64_t)hdrlen >> (8 * i));
		memcpy(ad + 8, hdr, hdrlen);
		memcpy(ad + 8 + hdrlen, loc, loclen);
		rc = seal ? ss_aead_seal(a, nonce, ad, 8 + hdrlen + loclen, buf, n)
			  : ss_aead_open(a, nonce, ad, 8 + hdrlen + loclen, buf, n);
	}
	explicit_bzero(key, sizeof(key));
	ss_aead_free(a);
	free(ad);
	return rc;
}

int ss_crypt_manifest_seal(const struct ss_crypt *c, const uint8_t salt[16], const uint8_t *hdr,
			   size_t hdrlen, const char *loc, uint8_t *buf, size_t len)
{
	return manifest_crypt(c, salt, hdr, hdrlen, loc, buf, len, true);
}

int ss_crypt_manifest_open(const struct ss_crypt *c, const uint8_t salt[16], const uint8_t *hdr,
			   size_t hdrlen, const char *loc, uint8_t *buf, size_t sealed)
{
	return manifest_crypt(c, salt, hdr, hdrlen, loc, buf, sealed, false);
}

/* ------------------------------------------------------ sealed envelope */

static const uint8_t SEAL_MAGIC[8] = "SSSEAL01";
/* field 1 (format_major) = 4, field 3 (body_codec) = 2, field 5 (body). */
static const uint8_t ENV_HEAD[] = {0x08, SS_SEALED_MAJOR, 0x18, 0x02, 0x2a};

static void hdr_encode(const struct ss_sealed_hdr *h, uint8_t out[SS_SEALED_HDR])
{
	memset(out, 0, SS_SEALED_HDR);
	memcpy(out, SEAL_MAGIC, 8);
	memcpy(out + 8, h->store_id, 16);
	memcpy(out + 24, h->check, 16);
	out[40] = (uint8_t)h->cipher;
	for (int i = 0; i < 4; i++)
		out[44 + i] = (uint8_t)(h->npacks >> (8 * i));
	memcpy(out + 48, h->salt, 16);
}

int ss_sealed_peek(const uint8_t *buf, size_t len, struct ss_sealed_hdr *h, const uint8_t **body,
		   size_t *bodylen, struct ss_err *err)
{
	if (len < sizeof(ENV_HEAD) || memcmp(buf, ENV_HEAD, sizeof(ENV_HEAD)))
		return -ENOMSG;
	/* The body's length: a minimal varint of at most 5 bytes. */
	size_t i = sizeof(ENV_HEAD);
	uint64_t v = 0;
	unsigned shift = 0;
	for (;; shift += 7) {
		if (i >= len || shift > 28)
			return ss_err_set(err, -EBADMSG, "sealed manifest damaged: bad body length");
		uint8_t b = buf[i++];
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			if (!b && shift)
				return ss_err_set(err, -EBADMSG,
						  "sealed manifest damaged: bad body length");
			break;
		}
	}
	if (v != len - i)
		return ss_err_set(err, -EBADMSG,
				  "sealed manifest damaged: body of %llu bytes in %zu (truncated?)",
				  (unsigned long long)v, len - i);
	if (v < SS_SEALED_HDR + SS_SEAL_TAG || memcmp(buf + i, SEAL_MAGIC, 8))
		return ss_err_set(err, -EBADMSG, "sealed manifest damaged: bad header");
	const uint8_t *p = buf + i;
	static const uint8_t zero[3];
	memcpy(h->store_id, p + 8, 16);
	memcpy(h->check, p + 24, 16);
	h->cipher = p[40];
	h->npacks = (uint32_t)p[44] | (uint32_t)p[45] << 8 | (uint32_t)p[46] << 16 |
		    (uint32_t)p[47] << 24;
	memcpy(h->salt, p + 48, 16);
	if (!ss_cipher_parse(ss_cipher_name(h->cipher)) || memcmp(p + 41, zero, 3))
		return ss_err_set(err, -EBADMSG,
				  "sealed manifest damaged: unknown cipher %u or flags", p[40]);
	if (h->npacks > SS_SEALED_MAX_PACKS ||
	    (v - SS_SEALED_HDR - SS_SEAL_TAG) / 16 < h->npacks)
		return ss_err_set(err, -EBADMSG,
				  "sealed manifest damaged: %u packs do not fit its %llu bytes",
				  h->npacks, (unsigned long long)v);
	h->packs = (const uint8_t(*)[16])(p + SS_SEALED_HDR);
	*body = p;
	*bodylen = (size_t)v;
	return 0;
}

int ss_sealed_wrap(const struct ss_crypt *c, const char *loc, const uint8_t (*packs)[16],
		   uint32_t npacks, const uint8_t *inner, size_t n, uint8_t **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	if (npacks > SS_SEALED_MAX_PACKS)
		return -EFBIG;
	struct ss_sealed_hdr h = {.cipher = c->cipher, .npacks = npacks};
	memcpy(h.store_id, c->store_id, 16);
	memcpy(h.check, c->check, 16);
	/* A fresh salt, so a fresh key, for every manifest written. */
	if (getrandom(h.salt, sizeof(h.salt), 0) != (ssize_t)sizeof(h.salt))
		return -EIO;
	size_t plen = SS_SEALED_HDR + 16 * (size_t)npacks;
	size_t blen = plen + n + SS_SEAL_TAG;
	if (blen > UINT32_MAX)
		return -EFBIG;
	uint8_t *b = malloc(sizeof(ENV_HEAD) + 5 + blen);
	if (!b)
		return -ENOMEM;
	size_t i = 0;
	memcpy(b, ENV_HEAD, sizeof(ENV_HEAD));
	i += sizeof(ENV_HEAD);
	for (uint64_t v = blen;; v >>= 7) {
		b[i++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		if (v <= 0x7f)
			break;
	}
	uint8_t *hdr = b + i;
	hdr_encode(&h, hdr);
	if (npacks)
		memcpy(hdr + SS_SEALED_HDR, packs, 16 * (size_t)npacks);
	memcpy(hdr + plen, inner, n);
	/* The plain part (header and pack list) is the associated data. */
	int r = ss_crypt_manifest_seal(c, h.salt, hdr, plen, loc, hdr + plen, n);
	if (r) {
		free(b);
		return r;
	}
	*out = b;
	*outlen = i + blen;
	return 0;
}

int ss_sealed_unwrap(const struct ss_crypt *c, const char *loc, const uint8_t *buf, size_t len,
		     uint8_t **inner, size_t *innerlen, struct ss_err *err)
{
	*inner = NULL;
	*innerlen = 0;
	struct ss_sealed_hdr h;
	const uint8_t *body;
	size_t blen;
	int r = ss_sealed_peek(buf, len, &h, &body, &blen, err);
	if (r == -ENOMSG)
		return ss_err_set(err, -EBADMSG, "not a sealed manifest");
	if (r)
		return r;
	if (memcmp(h.store_id, c->store_id, 16) || h.cipher != c->cipher)
		return ss_err_set(err, -EBADMSG,
				  "sealed manifest names another store or cipher than its keys");
	if (memcmp(h.check, c->check, 16))
		return ss_err_set(err, -EKEYREJECTED, "sealed manifest was made with another key");
	size_t plen = SS_SEALED_HDR + 16 * (size_t)h.npacks;
	size_t n = blen - plen;
	uint8_t *p = malloc(n ? n : 1);
	if (!p)
		return ss_err_set(err, -ENOMEM, "out of memory");
	memcpy(p, body + plen, n);
	r = ss_crypt_manifest_open(c, h.salt, body, plen, loc, p, n);
	if (r) {
		free(p);
		return ss_err_set(err, -EBADMSG,
				  "sealed manifest does not authenticate (altered, truncated, "
				  "or moved from another snapshot or store)");
	}
	*inner = p;
	*innerlen = n - SS_SEAL_TAG;
	return 0;
}

/* ------------------------------------------------------ sealed index objects */

static const uint8_t INDEX_MAGIC2[8] = "SSINDX02";

int ss_sealed_index_peek(const uint8_t *buf, size_t len, uint8_t id[16],
			 const uint8_t (**packs)[16], uint32_t *npacks, struct ss_err *err)
{
	if (len < 8 || memcmp(buf, INDEX_MAGIC2, 8))
		return -ENOMSG;
	if (len < SS_SEALED_INDEX_HDR + SS_SEAL_TAG)
		return ss_err_set(err, -EBADMSG, "sealed index object is %zu bytes, too short", len);
	uint32_t n = (uint32_t)buf[24] | (uint32_t)buf[25] << 8 | (uint32_t)buf[26] << 16 |
		     (uint32_t)buf[27] << 24;
	if (buf[28] | buf[29] | buf[30] | buf[31])
		return ss_err_set(err, -EBADMSG, "sealed index object: non-zero reserved bytes");
	if (n > SS_SEALED_MAX_PACKS || (len - SS_SEALED_INDEX_HDR - SS_SEAL_TAG) / 16 < n)
		return ss_err_set(err, -EBADMSG,
				  "sealed index object: %u packs do not fit its %zu bytes", n, len);
	memcpy(id, buf + 8, 16);
	*packs = (const uint8_t(*)[16])(buf + SS_SEALED_INDEX_HDR);
	*npacks = n;
	return 0;
}

static int index_crypt(const struct ss_crypt *c, const uint8_t id[16], const uint8_t *ad,
		       size_t adlen, uint8_t *buf, size_t n, bool seal)
{
	uint8_t key[SS_SEAL_KEY], nonce[12] = {0};
	struct ss_aead *a = NULL;
	int rc = ss_aead_new(c->cipher, &a);
	if (!rc)
		rc = ss_crypt_objkey(c, SS_OBJ_INDEX, id, key);
	if (!rc)
		rc = ss_aead_key(a, key);
	if (!rc)
		rc = seal ? ss_aead_seal(a, nonce, ad, adlen, buf, n)
			  : ss_aead_open(a, nonce, ad, adlen, buf, n);
	explicit_bzero(key, sizeof(key));
	ss_aead_free(a);
	return rc;
}

int ss_sealed_index_wrap(const struct ss_crypt *c, const uint8_t id[16],
			 const uint8_t (*packs)[16], uint32_t npacks, const uint8_t *inner, size_t n,
			 uint8_t **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	if (npacks > SS_SEALED_MAX_PACKS)
		return -EFBIG;
	size_t plen = SS_SEALED_INDEX_HDR + 16 * (size_t)npacks;
	uint8_t *b = malloc(plen + n + SS_SEAL_TAG);
	if (!b)
		return -ENOMEM;
	memcpy(b, INDEX_MAGIC2, 8);
	memcpy(b + 8, id, 16);
	for (int i = 0; i < 4; i++)
		b[24 + i] = (uint8_t)(npacks >> (8 * i));
	memset(b + 28, 0, 4);
	if (npacks)
		memcpy(b + SS_SEALED_INDEX_HDR, packs, 16 * (size_t)npacks);
	memcpy(b + plen, inner, n);
	int r = index_crypt(c, id, b, plen, b + plen, n, true);
	if (r) {
		free(b);
		return r;
	}
	*out = b;
	*outlen = plen + n + SS_SEAL_TAG;
	return 0;
}

int ss_sealed_index_unwrap(const struct ss_crypt *c, const uint8_t *buf, size_t len,
			   uint8_t **inner, size_t *innerlen, struct ss_err *err)
{
	*inner = NULL;
	*innerlen = 0;
	uint8_t id[16];
	const uint8_t(*packs)[16];
	uint32_t np;
	int r = ss_sealed_index_peek(buf, len, id, &packs, &np, err);
	if (r == -ENOMSG)
		return ss_err_set(err, -EBADMSG, "not a sealed index object");
	if (r)
		return r;
	size_t plen = SS_SEALED_INDEX_HDR + 16 * (size_t)np;
	size_t n = len - plen;
	uint8_t *p = malloc(n);
	if (!p)
		return ss_err_set(err, -ENOMEM, "out of memory");
	memcpy(p, buf + plen, n);
	if (index_crypt(c, id, buf, plen, p, n, false)) {
		free(p);
		return ss_err_set(err, -EBADMSG,
				  "sealed index object does not authenticate (altered, or from "
				  "another store)");
	}
	*inner = p;
	*innerlen = n - SS_SEAL_TAG;
	return 0;
}
