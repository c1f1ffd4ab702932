/* fuzz_crypt — libFuzzer target for opening sealed frames and manifests
 * (engine/core/crypt.c), whose bytes come from the store and are
 * untrusted.
 *
 * Input: a flags byte, 8 bytes of offset, then a body. Two properties:
 * opening the body as a sealed frame, pack index, manifest or index
 * object never crashes and returns -EBADMSG (a forged tag: an accepted
 * forgery aborts), and as a sealed manifest envelope or index object its
 * clear header parses within the input; and the body sealed, then changed by the input's own mask (the
 * body's second half xored into its first), opens again exactly when the
 * mask changed nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ss_crypt *crypt_of(enum ss_cipher cipher)
{
	static struct ss_crypt *c[3];
	static const uint8_t key[32] = {1, 2, 3}, sid[16] = {4, 5, 6};
	if (!c[cipher] && ss_crypt_new(key, sizeof(key), sid, cipher, &c[cipher], NULL))
		abort();
	return c[cipher];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 9)
		return 0;
	uint8_t flags = data[0];
	uint64_t off = 0;
	memcpy(&off, data + 1, 8);
	data += 9;
	size -= 9;
	enum ss_cipher cipher = flags & 1 ? SS_CIPHER_CHACHA20POLY1305 : SS_CIPHER_AES256GCM;
	struct ss_crypt *c = crypt_of(cipher);
	uint8_t pid[16] = {0}, k[SS_SEAL_KEY];
	struct ss_aead *a;
	if (ss_crypt_objkey(c, SS_OBJ_PACK, pid, k) || ss_aead_new(cipher, &a) || ss_aead_key(a, k))
		abort();
	uint8_t codec = (flags >> 1) & 1;
	uint8_t *buf = malloc(size + SS_SEAL_TAG + 1);
	if (!buf)
		abort();

	/* 1. Hostile bytes as a sealed frame and as a sealed manifest. */
	memcpy(buf, data, size);
	int r = ss_crypt_frame_open(a, off, codec, buf, size);
	if (r != -EBADMSG)
		abort();   /* a forgery, or an unexpected error */
	memcpy(buf, data, size);
	r = ss_crypt_manifest_open(c, pid, data, size < 64 ? size : 64, "fuzz", buf, size);
	if (r != -EBADMSG)
		abort();

	/* The same bytes as a sealed manifest envelope: peek parses the plain
	 * header of hostile input; unwrap never accepts a forgery. */
	struct ss_sealed_hdr h;
	const uint8_t *body;
	size_t blen;
	struct ss_err err = {0};
	r = ss_sealed_peek(data, size, &h, &body, &blen, &err);
	if (r != 0 && r != -ENOMSG && r != -EBADMSG)
		abort();
	if (r == 0 && (body < data || blen > size || body + blen != data + size))
		abort();
	uint8_t *inner = NULL;
	size_t ilen = 0;
	ss_err_clear(&err);
	r = ss_sealed_unwrap(c, "fuzz", data, size, &inner, &ilen, &err);
	if (r == 0 || inner || (r != -EBADMSG && r != -EKEYREJECTED))
		abort();
	if (ss_sealed_peek(data, size, &h, &body, &blen, &err) == 0 &&
	    (uint8_t *)(h.packs + h.npacks) > data + size)
		abort();   /* the clear pack list lies inside the input */

	/* As a pack's sealed index, and as a sealed index object. */
	memcpy(buf, data, size);
	r = ss_crypt_index_open(a, off, buf, size);
	if (r != -EBADMSG)
		abort();
	uint8_t oid[16];
	const uint8_t(*pids)[16] = NULL;
	uint32_t np = 0;
	ss_err_clear(&err);
	r = ss_sealed_index_peek(data, size, oid, &pids, &np, &err);
	if (r != 0 && r != -ENOMSG && r != -EBADMSG)
		abort();
	if (r == 0 && (uint8_t *)(pids + np) > data + size - SS_SEAL_TAG)
		abort();
	ss_err_clear(&err);
	r = ss_sealed_index_unwrap(c, data, size, &inner, &ilen, &err);
	if (r != -EBADMSG || inner)
		abort();

	/* 2. Seal the first half, damage it by the second, open. */
	size_t half = size / 2;
	memcpy(buf, data, half);
	if (ss_crypt_frame_seal(a, off, codec, buf, half))
		abort();
	bool changed = false;
	for (size_t i = 0; i < half + SS_SEAL_TAG && half + i < size; i++) {
		buf[i] ^= data[half + i];
		changed |= data[half + i] != 0;
	}
	size_t cut = flags & 4 ? (flags >> 3) % (half + SS_SEAL_TAG + 1) : 0;
	r = ss_crypt_frame_open(a, off, codec, buf, half + SS_SEAL_TAG - cut);
	if (changed || cut ? r != -EBADMSG : (r != 0 || memcmp(buf, data, half)))
		abort();
	free(buf);
	ss_aead_free(a);
	explicit_bzero(k, sizeof(k));
	return 0;
}
