/* Sealed keyed stores' key schedule and AEAD (engine/core/crypt.c): the
 * derivation is pinned by known answers computed independently (Python's
 * hmac, RFC 5869 by hand), so changing it — which would orphan every
 * sealed store — fails here; seal/open round trips under both ciphers; and
 * every change to a sealed object or to what it is bound to (a byte of
 * ciphertext or tag, its length, offset, codec, pack, manifest location,
 * header, salt, store, key) makes opening fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypt.h"
#include "manifest.h"
#include "core.h"
#include "frame.h"
#include <zstd.h>
#include "testutil.h"

static uint8_t key[32], sid[16];

static void hexeq(const uint8_t *p, size_t n, const char *want, const char *what)
{
	char h[2 * 64 + 1];
	ss_hex(p, n, h);
	REQUIRE(!strcmp(h, want), "%s: %s, want %s", what, h, want);
}

static void test_known_answers(void)
{
	struct ss_crypt *c;
	struct ss_err e = {0};
	REQUIRE(ss_crypt_new(key, sizeof(key), sid, SS_CIPHER_AES256GCM, &c, &e) == 0, "new: %s",
		e.msg);
	hexeq(ss_crypt_check(c), 16, "f15a2d0e12b21c50c83fdb788da94222", "key check");
	hexeq(ss_crypt_idsecret(c) + SS_CRYPT_IDSECRET - 16, 16,
	      "67dfd15e7fb4847ca95ed0f86aea2987", "id secret tail");
	uint8_t pid[16], k[SS_SEAL_KEY];
	memset(pid, 7, sizeof(pid));
	REQUIRE(ss_crypt_objkey(c, SS_OBJ_PACK, pid, k) == 0, "pack key");
	hexeq(k, sizeof(k), "172c3317a2fae1feea09c5cd1cf4d19a131ce805bca60860723d0740f0ae5ecb",
	      "pack key");
	/* Distinct labels, distinct keys. */
	uint8_t k2[SS_SEAL_KEY];
	REQUIRE(ss_crypt_objkey(c, SS_OBJ_MANIFEST, pid, k2) == 0 && memcmp(k, k2, sizeof(k)),
		"manifest key differs from pack key");
	REQUIRE(ss_crypt_objkey(c, SS_OBJ_INDEX, pid, k2) == 0 && memcmp(k, k2, sizeof(k)),
		"index key differs from pack key");
	/* Another store id (same key file): unrelated keys and check. */
	struct ss_crypt *o;
	uint8_t sid2[16];
	memcpy(sid2, sid, 16);
	sid2[15] ^= 1;
	REQUIRE(ss_crypt_new(key, sizeof(key), sid2, SS_CIPHER_AES256GCM, &o, &e) == 0, "new 2");
	REQUIRE(memcmp(ss_crypt_check(c), ss_crypt_check(o), 16), "check depends on the store");
	REQUIRE(ss_crypt_objkey(o, SS_OBJ_PACK, pid, k2) == 0 && memcmp(k, k2, sizeof(k)),
		"pack key depends on the store");
	ss_crypt_free(o);
	ss_crypt_free(c);
	REQUIRE(ss_crypt_new(key, 15, sid, SS_CIPHER_AES256GCM, &c, &e) == -EINVAL, "short key");
	REQUIRE(ss_crypt_new(key, 32, sid, 9, &c, &e) == -EINVAL, "unknown cipher");
	REQUIRE(ss_cipher_parse("aes-256-gcm") == SS_CIPHER_AES256GCM &&
			ss_cipher_parse("chacha20-poly1305") == SS_CIPHER_CHACHA20POLY1305 &&
			!ss_cipher_parse("aes-128-gcm") && ss_crypt_pick(),
		"cipher names");
}

/* A plaintext with a recognisable marker, to see it is gone once sealed. */
static void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)("MARKER-snapstream-"[i % 18]);
}

static void test_frames(enum ss_cipher cipher)
{
	struct ss_crypt *c;
	struct ss_err e = {0};
	REQUIRE(ss_crypt_new(key, sizeof(key), sid, cipher, &c, &e) == 0, "new: %s", e.msg);
	uint8_t pid[16] = {1}, pk[SS_SEAL_KEY], ok2[SS_SEAL_KEY];
	REQUIRE(!ss_crypt_objkey(c, SS_OBJ_PACK, pid, pk), "key");
	pid[0] = 2;
	REQUIRE(!ss_crypt_objkey(c, SS_OBJ_PACK, pid, ok2), "key 2");
	struct ss_aead *a;
	REQUIRE(ss_aead_new(cipher, &a) == 0 && ss_aead_key(a, pk) == 0, "aead");

	enum { N = 3000 };
	uint8_t plain[N], buf[N + SS_SEAL_TAG], t[N + SS_SEAL_TAG];
	fill(plain, N);
	memcpy(buf, plain, N);
	REQUIRE(ss_crypt_frame_seal(a, 4096, 1, buf, N) == 0, "seal");
	REQUIRE(!memmem(buf, sizeof(buf), "MARKER-snapstream", 17), "plaintext visible");
	memcpy(t, buf, sizeof(t));
	REQUIRE(ss_crypt_frame_open(a, 4096, 1, t, sizeof(t)) == 0 && !memcmp(t, plain, N),
		"round trip");
	/* Same key, nonce and plaintext: same bytes (a retried upload). */
	memcpy(t, plain, N);
	REQUIRE(ss_crypt_frame_seal(a, 4096, 1, t, N) == 0 && !memcmp(t, buf, sizeof(t)),
		"deterministic per (pack, offset)");
	/* Every byte flipped, one at a time. */
	for (size_t i = 0; i < sizeof(buf); i += (i < 64 || i > N - 64) ? 1 : 97) {
		memcpy(t, buf, sizeof(t));
		t[i] ^= 0x20;
		REQUIRE(ss_crypt_frame_open(a, 4096, 1, t, sizeof(t)) == -EBADMSG, "flip %zu", i);
	}
	/* Bound to offset, codec and length. */
	memcpy(t, buf, sizeof(t));
	REQUIRE(ss_crypt_frame_open(a, 4097, 1, t, sizeof(t)) == -EBADMSG, "other offset");
	memcpy(t, buf, sizeof(t));
	REQUIRE(ss_crypt_frame_open(a, 4096, 0, t, sizeof(t)) == -EBADMSG, "other codec");
	memcpy(t, buf, sizeof(t));
	REQUIRE(ss_crypt_frame_open(a, 4096, 1, t, sizeof(t) - 1) == -EBADMSG, "truncated");
	REQUIRE(ss_crypt_frame_open(a, 4096, 1, t, SS_SEAL_TAG - 1) == -EBADMSG, "no tag");
	/* Bound to the pack. */
	REQUIRE(ss_aead_key(a, ok2) == 0, "rekey");
	memcpy(t, buf, sizeof(t));
	REQUIRE(ss_crypt_frame_open(a, 4096, 1, t, sizeof(t)) == -EBADMSG, "other pack");
	/* An empty frame still has a tag that binds it. */
	uint8_t z[SS_SEAL_TAG];
	REQUIRE(ss_crypt_frame_seal(a, 0, 0, z, 0) == 0 && ss_crypt_frame_open(a, 0, 0, z, 16) == 0,
		"empty");
	REQUIRE(ss_crypt_frame_open(a, 1, 0, z, 16) == -EBADMSG, "empty, other offset");
	ss_aead_free(a);
	ss_crypt_free(c);
}

static void test_manifest(enum ss_cipher cipher)
{
	struct ss_crypt *c, *o;
	struct ss_err e = {0};
	REQUIRE(ss_crypt_new(key, sizeof(key), sid, cipher, &c, &e) == 0, "new: %s", e.msg);
	uint8_t key2[32];
	memcpy(key2, key, 32);
	key2[0] ^= 1;
	REQUIRE(ss_crypt_new(key2, sizeof(key2), sid, cipher, &o, &e) == 0, "new: %s", e.msg);
	uint8_t salt[16] = {9}, hdr[40] = "SSMANIFEST header";
	enum { N = 500 };
	uint8_t plain[N], buf[N + SS_SEAL_TAG], t[N + SS_SEAL_TAG];
	fill(plain, N);
	memcpy(buf, plain, N);
	const char *loc = "s3://bucket/snaps/job-1";
	REQUIRE(ss_crypt_manifest_seal(c, salt, hdr, sizeof(hdr), loc, buf, N) == 0, "seal");
	REQUIRE(!memmem(buf, sizeof(buf), "MARKER-snapstream", 17), "plaintext visible");
#define OPEN(cc, s, h, hl, l, len)                                                   \
	(memcpy(t, buf, sizeof(t)), ss_crypt_manifest_open(cc, s, h, hl, l, t, len))
	REQUIRE(OPEN(c, salt, hdr, sizeof(hdr), loc, sizeof(t)) == 0 && !memcmp(t, plain, N),
		"round trip");
	REQUIRE(OPEN(c, salt, hdr, sizeof(hdr), "s3://bucket/snaps/job-2", sizeof(t)) == -EBADMSG,
		"another snapshot's name");
	REQUIRE(OPEN(o, salt, hdr, sizeof(hdr), loc, sizeof(t)) == -EBADMSG, "another key");
	uint8_t salt2[16] = {8}, hdr2[40] = "SSMANIFEST headeR";
	REQUIRE(OPEN(c, salt2, hdr, sizeof(hdr), loc, sizeof(t)) == -EBADMSG, "another salt");
	REQUIRE(OPEN(c, salt, hdr2, sizeof(hdr2), loc, sizeof(t)) == -EBADMSG, "another header");
	/* Header and location are length-delimited: moving a byte from one
	 * to the other is another ad. */
	REQUIRE(OPEN(c, salt, hdr, sizeof(hdr) - 1, loc, sizeof(t)) == -EBADMSG, "shifted ad");
	REQUIRE(OPEN(c, salt, hdr, sizeof(hdr), loc, sizeof(t) - 1) == -EBADMSG, "truncated");
#undef OPEN
	ss_crypt_free(o);
	ss_crypt_free(c);
}

/* The format 4 envelope: wrap, peek without a key, unwrap; an old
 * reader's decoder refuses it by its major; every tamper and every
 * mismatch of location, store or key fails. */
static void test_envelope(void)
{
	struct ss_crypt *c, *other_key, *other_store;
	struct ss_err e = {0};
	uint8_t key2[32], sid2[16];
	memcpy(key2, key, 32);
	key2[31] ^= 1;
	memcpy(sid2, sid, 16);
	sid2[0] ^= 1;
	REQUIRE(!ss_crypt_new(key, 32, sid, SS_CIPHER_AES256GCM, &c, &e) &&
			!ss_crypt_new(key2, 32, sid, SS_CIPHER_AES256GCM, &other_key, &e) &&
			!ss_crypt_new(key, 32, sid2, SS_CIPHER_AES256GCM, &other_store, &e),
		"new: %s", e.msg);
	enum { N = 700 };
	uint8_t inner[N];
	fill(inner, N);
	const char *loc = "/snaps/job-1";
	uint8_t *env, *env2, *out;
	size_t elen, elen2, olen;
	uint8_t packs[3][16];
	for (size_t i = 0; i < sizeof(packs); i++)
		packs[i / 16][i % 16] = (uint8_t)i;
	REQUIRE(ss_sealed_wrap(c, loc, (const uint8_t(*)[16])packs, 3, inner, N, &env, &elen) == 0,
		"wrap");
	REQUIRE(!memmem(env, elen, "MARKER-snapstream", 17), "plaintext visible");
	REQUIRE(ss_sealed_wrap(c, loc, (const uint8_t(*)[16])packs, 3, inner, N, &env2, &elen2) ==
				0 &&
			elen2 == elen && memcmp(env, env2, elen),
		"each seal has its own salt");
	free(env2);
	struct ss_sealed_hdr h;
	const uint8_t *body;
	size_t blen;
	REQUIRE(ss_sealed_peek(env, elen, &h, &body, &blen, &e) == 0 &&
			!memcmp(h.store_id, sid, 16) && !memcmp(h.check, ss_crypt_check(c), 16) &&
			h.cipher == SS_CIPHER_AES256GCM && h.npacks == 3 &&
			!memcmp(h.packs, packs, sizeof(packs)),
		"peek (header and pack list, without a key): %s", e.msg);
	REQUIRE(ss_sealed_peek(inner, N, &h, &body, &blen, &e) == -ENOMSG, "plain is not sealed");
	REQUIRE(ss_sealed_unwrap(c, loc, env, elen, &out, &olen, &e) == 0 && olen == N &&
			!memcmp(out, inner, N),
		"unwrap: %s", e.msg);
	free(out);
	/* The plain decoder refuses it, naming it sealed (readers of format 3
	 * and older refused it as newer, by its major). */
	struct ss_manifest *m = NULL;
	ss_err_clear(&e);
	REQUIRE(ss_manifest_decode(env, elen, &m, &e) == -EBADMSG && strstr(e.msg, "sealed"),
		"plain decoder: %s", e.msg);
	/* Another snapshot's name, another store, another key. */
	ss_err_clear(&e);
	REQUIRE(ss_sealed_unwrap(c, "/snaps/job-2", env, elen, &out, &olen, &e) == -EBADMSG,
		"other name");
	ss_err_clear(&e);
	REQUIRE(ss_sealed_unwrap(other_store, loc, env, elen, &out, &olen, &e) == -EBADMSG,
		"other store");
	ss_err_clear(&e);
	REQUIRE(ss_sealed_unwrap(other_key, loc, env, elen, &out, &olen, &e) == -EKEYREJECTED,
		"other key");
	/* Every byte changed, and every truncation: refused, never a crash. */
	uint8_t *t = malloc(elen);
	for (size_t i = 0; i < elen; i++) {
		memcpy(t, env, elen);
		t[i] ^= 0x01;
		ss_err_clear(&e);
		int r = ss_sealed_unwrap(c, loc, t, elen, &out, &olen, &e);
		REQUIRE(r == -EBADMSG || r == -EKEYREJECTED, "flip %zu: %d", i, r);
	}
	for (size_t n = 0; n < elen; n += n < 80 ? 1 : 61) {
		ss_err_clear(&e);
		int r = ss_sealed_unwrap(c, loc, env, n, &out, &olen, &e);
		REQUIRE(r == -EBADMSG, "cut to %zu: %d", n, r);
	}
	free(t);
	free(env);
	ss_crypt_free(c);
	ss_crypt_free(other_key);
	ss_crypt_free(other_store);
}

/* A pack's index seals under the pack's key at its offset, with a nonce
 * no frame uses; sealed index objects open under their own id only, and
 * list their packs in the clear. */
static void test_index_seals(void)
{
	struct ss_crypt *c, *other;
	struct ss_err e = {0};
	uint8_t sid2[16];
	memcpy(sid2, sid, 16);
	sid2[5] ^= 1;
	REQUIRE(!ss_crypt_new(key, 32, sid, SS_CIPHER_CHACHA20POLY1305, &c, &e) &&
			!ss_crypt_new(key, 32, sid2, SS_CIPHER_CHACHA20POLY1305, &other, &e),
		"new");
	struct ss_aead *a;
	uint8_t pid[16] = {9}, pid2[16] = {10};
	REQUIRE(!ss_aead_new(SS_CIPHER_CHACHA20POLY1305, &a) && !ss_crypt_pack_key(c, pid, a), "key");
	uint8_t buf[96 + SS_SEAL_TAG], orig[96], frame[96 + SS_SEAL_TAG];
	fill(orig, sizeof(orig));
	memcpy(buf, orig, 96);
	REQUIRE(!ss_crypt_index_seal(a, 4096, buf, 96), "seal index");
	/* The same bytes sealed as a frame at that offset differ: another nonce. */
	memcpy(frame, orig, 96);
	REQUIRE(!ss_crypt_frame_seal(a, 4096, 0, frame, 96), "seal frame");
	CHECK(memcmp(frame, buf, 96), "index and frame nonces differ");
	uint8_t t[sizeof(buf)];
	memcpy(t, buf, sizeof(buf));
	CHECK(ss_crypt_index_open(a, 4096, t, sizeof(t)) == 0 && !memcmp(t, orig, 96), "open index");
	memcpy(t, buf, sizeof(buf));
	CHECK(ss_crypt_index_open(a, 4097, t, sizeof(t)) == -EBADMSG, "index at another offset");
	memcpy(t, buf, sizeof(buf));
	CHECK(ss_crypt_frame_open(a, 4096, 0, t, sizeof(t)) == -EBADMSG, "index opened as a frame");
	REQUIRE(!ss_crypt_pack_key(c, pid2, a), "key 2");
	memcpy(t, buf, sizeof(buf));
	CHECK(ss_crypt_index_open(a, 4096, t, sizeof(t)) == -EBADMSG, "another pack's key");
	ss_aead_free(a);

	uint8_t oid[16] = {7, 7}, packs[2][16];
	for (size_t i = 0; i < sizeof(packs); i++)
		packs[i / 16][i % 16] = (uint8_t)(0x80 + i);
	uint8_t inner[300];
	fill(inner, sizeof(inner));
	uint8_t *obj, *out;
	size_t olen, ilen;
	REQUIRE(!ss_sealed_index_wrap(c, oid, (const uint8_t(*)[16])packs, 2, inner, sizeof(inner),
				      &obj, &olen),
		"wrap index object");
	CHECK(!memmem(obj, olen, "MARKER-snapstream", 17), "index object plaintext visible");
	uint8_t id[16];
	const uint8_t(*pids)[16];
	uint32_t np;
	CHECK(ss_sealed_index_peek(obj, olen, id, &pids, &np, &e) == 0 && np == 2 &&
		      !memcmp(id, oid, 16) && !memcmp(pids, packs, sizeof(packs)),
	      "peek: %s", e.msg);
	CHECK(ss_sealed_index_peek(inner, sizeof(inner), id, &pids, &np, &e) == -ENOMSG,
	      "plain is not sealed");
	CHECK(ss_sealed_index_unwrap(c, obj, olen, &out, &ilen, &e) == 0 && ilen == sizeof(inner) &&
		      !memcmp(out, inner, ilen),
	      "unwrap: %s", e.msg);
	free(out);
	ss_err_clear(&e);
	CHECK(ss_sealed_index_unwrap(other, obj, olen, &out, &ilen, &e) == -EBADMSG && !out,
	      "another store's keys");
	for (size_t i = 0; i < olen; i++) {
		obj[i] ^= 0x20;
		ss_err_clear(&e);
		int r = ss_sealed_index_unwrap(c, obj, olen, &out, &ilen, &e);
		obj[i] ^= 0x20;
		REQUIRE(r == -EBADMSG && !out, "index object flip %zu: %d", i, r);
	}
	for (size_t n = 0; n < olen; n++) {
		int r = ss_sealed_index_unwrap(c, obj, n, &out, &ilen, &e);
		REQUIRE(r == -EBADMSG && !out, "index object cut to %zu: %d", n, r);
	}
	free(obj);
	ss_crypt_free(c);
	ss_crypt_free(other);
}

/* ss_range_decode on a sealed pack: a zstd frame and a frame of two raw
 * chunks, each sealed at its offset, decode and verify; a flipped byte in
 * either, a frame read at another offset, or a pack opened with another
 * pack's key fails that frame's chunks as forged, not the others'. */
struct rtest {
	struct ss_rchunk c[4];
	int bad[4];
	int why[4];
};

static void rt_at(void *arg, uint32_t k, struct ss_rchunk *c)
{
	*c = ((struct rtest *)arg)->c[k];
}

static bool rt_bad(void *arg, uint32_t k, enum ss_range_bad why)
{
	struct rtest *t = arg;
	t->bad[k]++;
	t->why[k] = (int)why;
	return true;
}

static void test_range(void)
{
	struct ss_crypt *c;
	struct ss_err e = {0};
	REQUIRE(!ss_crypt_new(key, 32, sid, SS_CIPHER_AES256GCM, &c, &e), "new: %s", e.msg);
	uint8_t pid[16] = {5}, pk[SS_SEAL_KEY], other[SS_SEAL_KEY];
	REQUIRE(!ss_crypt_objkey(c, SS_OBJ_PACK, pid, pk), "key");
	pid[0] = 6;
	REQUIRE(!ss_crypt_objkey(c, SS_OBJ_PACK, pid, other), "key");
	struct ss_aead *a;
	REQUIRE(!ss_aead_new(SS_CIPHER_AES256GCM, &a) && !ss_aead_key(a, pk), "aead");

	/* Four chunks: a1, a2 compressed together; b1, b2 raw together. */
	static uint8_t raw[4][1500];
	uint32_t len[4] = {1500, 700, 300, 200};
	uint8_t ids[4][16];
	for (int i = 0; i < 4; i++) {
		for (uint32_t j = 0; j < len[i]; j++)
			raw[i][j] = i < 2 ? (uint8_t)("MARKER-snapstream-"[j % 18]) : (uint8_t)rnd();
		ss_chunk_id(&ss_idkey_plain, raw[i], len[i], ids[i]);
	}
	static uint8_t pack[8192], orig[8192];
	uint8_t plain[2200];
	memcpy(plain, raw[0], 1500);
	memcpy(plain + 1500, raw[1], 700);
	ZSTD_CCtx *cc = ss_frame_cctx(1);
	size_t za = ZSTD_compress2(cc, pack, 4096, plain, 2200);
	REQUIRE(!ZSTD_isError(za) && za < 2200, "compress");
	ZSTD_freeCCtx(cc);
	REQUIRE(!ss_crypt_frame_seal(a, 0, SS_CODEC_ZSTD, pack, za), "seal a");
	uint32_t sa = (uint32_t)(za + SS_SEAL_TAG), ob = sa;
	memcpy(pack + ob, raw[2], 300);
	memcpy(pack + ob + 300, raw[3], 200);
	REQUIRE(!ss_crypt_frame_seal(a, ob, SS_CODEC_RAW, pack + ob, 500), "seal b");
	uint32_t sb = 500 + SS_SEAL_TAG, total = ob + sb;
	REQUIRE(!memmem(pack, total, "MARKER-snapstream", 17), "plaintext visible");
	memcpy(orig, pack, total);

	struct ss_rdec *w = ss_rdec_ops.create(ss_rdec_ops.arg);
	REQUIRE(w, "rdec");
	static uint8_t dec[1 << 16];
	const uint8_t *ptr[4];
	for (int round = 0; round < 5; round++) {
		struct rtest t = {{
			{ids[0], 0, sa, 1500, 0, SS_CODEC_ZSTD},
			{ids[1], 0, sa, 700, 1500, SS_CODEC_ZSTD},
			{ids[2], ob, sb, 300, 0, SS_CODEC_RAW},
			{ids[3], ob, sb, 200, 300, SS_CODEC_RAW},
		}};
		memcpy(pack, orig, total);
		int bad_frame = -1;
		if (round == 1)
			pack[3] ^= 1, bad_frame = 0;             /* in frame a */
		if (round == 2)
			pack[ob + sb - 1] ^= 1, bad_frame = 1;   /* frame b's tag */
		if (round == 3) {                                /* b read as if at ob + 1 */
			memmove(pack + ob + 1, pack + ob, sb);
			for (int k = 2; k < 4; k++)
				t.c[k].offset = ob + 1;
			bad_frame = 1;
		}
		if (round == 4)
			REQUIRE(!ss_aead_key(a, other), "other pack's key");
		struct ss_rrun run = {.ids = &ss_idkey_plain, .in = pack, .aead = a, .base = 0, .n = 4,
				      .at = rt_at, .dec = dec, .dec_cap = sizeof(dec), .ptr = ptr,
				      .bad = rt_bad, .arg = &t};
		int r = ss_range_decode(w, &run);
		for (int k = 0; k < 4; k++) {
			bool want_bad = round == 4 || bad_frame == k / 2;
			REQUIRE(t.bad[k] == (want_bad ? 1 : 0) && (!want_bad || t.why[k] == SS_RANGE_FORGED),
				"round %d chunk %d: bad %d why %d", round, k, t.bad[k], t.why[k]);
			if (!want_bad)
				REQUIRE(!memcmp(ptr[k], raw[k], len[k]), "round %d chunk %d bytes", round, k);
		}
		REQUIRE(r == (round ? -EBADMSG : 0), "round %d: %d", round, r);
	}
	ss_rdec_ops.destroy(w);
	ss_aead_free(a);
	ss_crypt_free(c);
}

int main(void)
{
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 16; i++)
		sid[i] = (uint8_t)(100 + i);
	test_known_answers();
	test_frames(SS_CIPHER_AES256GCM);
	test_frames(SS_CIPHER_CHACHA20POLY1305);
	test_manifest(SS_CIPHER_AES256GCM);
	test_manifest(SS_CIPHER_CHACHA20POLY1305);
	test_envelope();
	test_index_seals();
	test_range();
	printf("crypt: ok\n");
	return 0;
}
