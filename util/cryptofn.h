/* cryptofn — OpenSSL's libcrypto, loaded on first use.
 *
 * Linking libcrypto makes every start of the program map it and process
 * its relocations and constructors: ~4 ms on a VM (measured with an empty
 * program, with and without -lcrypto), 5-10 % of a 64 MiB pull from a local
 * store, which never needs it. Keyed chunk ids, gVisor state files, S3
 * payload digests and GCS tokens do; they reach libcrypto through this
 * table, filled by dlopen on first use, while OpenSSL's headers still type
 * the calls. As with libcurl (backends/curlfn.h), the table is one per
 * process and never unloaded.
 */
#ifndef SS_CRYPTOFN_H
#define SS_CRYPTOFN_H

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/opensslv.h>
#include <openssl/pem.h>

#include "util.h"

/* OpenSSL 3 renamed EVP_PKEY_base_id (now a macro). */
#if OPENSSL_VERSION_MAJOR >= 3
#define SS_CRYPTO_PKEY_BASE_ID EVP_PKEY_get_base_id
#else
#define SS_CRYPTO_PKEY_BASE_ID EVP_PKEY_base_id
#endif

/* X(member, libcrypto symbol) */
#define SS_CRYPTO_FNS(X)                                                             \
	X(sha256, EVP_sha256) X(md_ctx_new, EVP_MD_CTX_new) X(md_ctx_free, EVP_MD_CTX_free) \
	X(digest_init_ex, EVP_DigestInit_ex) X(digest_update, EVP_DigestUpdate)             \
	X(digest_final_ex, EVP_DigestFinal_ex) X(digest_sign_init, EVP_DigestSignInit)      \
	X(digest_sign, EVP_DigestSign) X(pkey_free, EVP_PKEY_free)                          \
	X(pkey_base_id, SS_CRYPTO_PKEY_BASE_ID) X(hmac, HMAC)                              \
	X(pem_read_bio_privatekey, PEM_read_bio_PrivateKey)                                 \
	X(bio_new_mem_buf, BIO_new_mem_buf) X(bio_free, BIO_free)                           \
	X(aes_256_gcm, EVP_aes_256_gcm) X(chacha20_poly1305, EVP_chacha20_poly1305)         \
	X(cipher_ctx_new, EVP_CIPHER_CTX_new) X(cipher_ctx_free, EVP_CIPHER_CTX_free)       \
	X(cipher_ctx_ctrl, EVP_CIPHER_CTX_ctrl) X(encrypt_init_ex, EVP_EncryptInit_ex)      \
	X(encrypt_update, EVP_EncryptUpdate) X(encrypt_final_ex, EVP_EncryptFinal_ex)       \
	X(decrypt_init_ex, EVP_DecryptInit_ex) X(decrypt_update, EVP_DecryptUpdate)         \
	X(decrypt_final_ex, EVP_DecryptFinal_ex)

struct ss_cryptofn {
#define SS_CRYPTO_FN(m, sym) __typeof__(sym) *m;
	SS_CRYPTO_FNS(SS_CRYPTO_FN)
#undef SS_CRYPTO_FN
};

/* Load libcrypto, once per process (any thread). Returns 0, or -ENOENT
 * with err saying what is missing (err may be NULL). */
int ss_crypto_load(struct ss_err *err);

/* The functions; only after ss_crypto_load succeeded. */
const struct ss_cryptofn *ss_crypto(void);

#endif
