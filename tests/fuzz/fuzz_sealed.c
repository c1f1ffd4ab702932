/* fuzz_sealed — libFuzzer target for what a sealed store's readers parse
 * once its objects authenticate (engine/core/sealed.c, crypt.c, and the
 * pack and manifest parsers in their sealed modes).
 *
 * A forged tag stops hostile bytes at the AEAD, so the parsers behind it
 * would see only what a key holder sealed; a key holder can still seal
 * anything. Input: a mode byte, then a body the target seals itself
 * (valid tag, right nonce and associated data) and hands to the real
 * readers, which must accept only what holds together:
 *
 *   0  the body as a pack's index and trailer, sealed behind chunk data
 *      of a length taken from the body: ss_pack_tail_read accepts only
 *      entries inside the chunk data, under the sealed rules
 *   1  the body as an SSINDX01 object, sealed as an index object listing
 *      (in the clear) the packs the body names when it decodes:
 *      ss_index_read accepts it exactly when the body decodes
 *   2  the body as a manifest sealed for a location: it opens there and
 *      decodes with the sealed rules, or is refused, never a crash; it
 *      opens nowhere else
 *
 * and every mode also passes the raw body to the same reader, which must
 * refuse it (it carries no valid tag). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypt.h"
#include "manifest.h"
#include "pack.h"
#include "sealed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ss_idkey *ids_of(void)
{
	static struct ss_idkey k;
	static const uint8_t key[32] = {9, 8, 7}, sid[16] = {1, 2, 3};
	if (!k.crypt) {
		if (ss_crypt_new(key, sizeof(key), sid, SS_CIPHER_CHACHA20POLY1305, &k.crypt, NULL))
			abort();
		k.keyed = k.bound = true;
		k.secret = ss_crypt_idsecret(k.crypt);
		memcpy(k.check, ss_crypt_check(k.crypt), 16);
	}
	return &k;
}

static void pack_tail(const struct ss_idkey *ids, const uint8_t *body, size_t n)
{
	static const uint8_t pid[16] = {0x42};
	if (n < 4)
		return;
	uint64_t data_end = (uint64_t)(body[0] | body[1] << 8 | body[2] << 16);
	body += 3;
	n -= 3;
	size_t tl = n + SS_SEAL_TAG + SS_PACK_FOOTER_SIZE;
	uint8_t *buf = malloc(tl);
	memcpy(buf, body, n);
	struct ss_aead *a;
	if (ss_aead_new(ss_crypt_cipher(ids->crypt), &a) || ss_crypt_pack_key(ids->crypt, pid, a) ||
	    ss_crypt_index_seal(a, data_end, buf, n))
		abort();
	ss_aead_free(a);
	ss_pack_write_footer(buf + n + SS_SEAL_TAG, n + SS_SEAL_TAG);
	uint8_t *copy = malloc(tl);
	memcpy(copy, buf, tl);
	struct ss_err err = {0};
	struct ss_pack_entry *e = NULL;
	size_t need = 0;
	uint32_t count = 0;
	uint64_t end = 0;
	int r = ss_pack_tail_read(ids, pid, buf, tl, data_end + tl, &need, &count, &end, &e, &err);
	if (r == 0) {
		if (end != data_end)
			abort();
		for (uint32_t i = 0; i < count; i++)
			if ((uint64_t)e[i].offset + e[i].stored_len > end ||
			    e[i].stored_len <= SS_SEAL_TAG)
				abort();
		free(e);
	} else if (r == 1 ? need <= tl : r != -EBADMSG) {
		abort();
	}
	/* The same bytes under another pack's name, or at another offset. */
	memcpy(buf, copy, tl);
	static const uint8_t other[16] = {0x43};
	r = ss_pack_tail_read(ids, other, buf, tl, data_end + tl, &need, &count, &end, &e, &err);
	if (r == 0)
		abort();
	memcpy(buf, copy, tl);
	r = ss_pack_tail_read(ids, pid, buf, tl, data_end + tl + 1, &need, &count, &end, &e, &err);
	if (r == 0)
		abort();
	free(copy);
	free(buf);
}

static void index_object(const struct ss_idkey *ids, const uint8_t *body, size_t n)
{
	static const uint8_t oid[16] = {0x17};
	struct ss_err err = {0};
	struct ss_index_pack *ip = NULL;
	uint32_t np = 0;
	bool decodes = ss_index_decode(body, n, SS_PACK_SEALED, &ip, &np, &err) == 0;
	uint8_t(*pids)[16] = calloc(np ? np : 1, 16);
	for (uint32_t i = 0; i < np; i++)
		memcpy(pids[i], ip[i].pack_id, 16);
	ss_index_free(ip, np);
	uint8_t *obj = NULL;
	size_t olen = 0;
	if (ss_sealed_index_wrap(ids->crypt, oid, (const uint8_t(*)[16])pids, np, body, n, &obj,
				 &olen))
		abort();
	char key[64] = "index/";
	ss_hex(oid, 16, key + 6);
	int r = ss_index_read(ids, key, obj, olen, &ip, &np, &err);
	if ((r == 0) != decodes || (r && r != -EBADMSG && r != -ENOMEM))
		abort();
	if (r == 0)
		ss_index_free(ip, np);
	/* Under another name, it is refused. */
	r = ss_index_read(ids, "index/00000000000000000000000000000000", obj, olen, &ip, &np, &err);
	if (r == 0)
		abort();
	free(obj);
	free(pids);
}

static void manifest(const struct ss_idkey *ids, const uint8_t *body, size_t n)
{
	uint8_t *env = NULL, *inner = NULL;
	size_t elen = 0, ilen = 0;
	if (ss_sealed_wrap(ids->crypt, "file:///snaps/a", NULL, 0, body, n, &env, &elen))
		abort();
	struct ss_err err = {0};
	if (ss_sealed_unwrap(ids->crypt, "file:///snaps/a", env, elen, &inner, &ilen, &err) ||
	    ilen != n || memcmp(inner, body, n))
		abort();
	struct ss_manifest *m = NULL;
	if (ss_manifest_decode_ex(inner, ilen, true, &m, &err) == 0) {
		if (!m->sealed)
			abort();
		/* What it accepts, it can write again. */
		uint8_t *enc = NULL;
		size_t el = 0;
		if (ss_manifest_encode(m, &enc, &el))
			abort();
		free(enc);
		ss_manifest_free(m);
	}
	free(inner);
	inner = NULL;
	if (ss_sealed_unwrap(ids->crypt, "file:///snaps/b", env, elen, &inner, &ilen, &err) !=
		    -EBADMSG ||
	    inner)
		abort();
	free(env);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const struct ss_idkey *ids = ids_of();
	const uint8_t *body = data + 1;
	size_t n = size - 1;
	switch (data[0] % 3) {
	case 0:
		pack_tail(ids, body, n);
		break;
	case 1:
		index_object(ids, body, n);
		break;
	default:
		manifest(ids, body, n);
		break;
	}
	/* Unsealed, the same bytes are refused by every sealed reader. */
	struct ss_err err = {0};
	struct ss_index_pack *ip = NULL;
	uint32_t np = 0;
	if (ss_index_read(ids, NULL, body, n, &ip, &np, &err) == 0)
		abort();
	uint8_t *buf = malloc(n ? n : 1);
	memcpy(buf, body, n);
	struct ss_pack_entry *e = NULL;
	size_t need = 0;
	uint32_t count = 0;
	uint64_t end = 0;
	static const uint8_t pid[16] = {0x42};
	int r = ss_pack_tail_read(ids, pid, buf, n, n, &need, &count, &end, &e, &err);
	if (r == 0)
		abort();
	free(buf);
	return 0;
}
