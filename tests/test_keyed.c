/* Keyed chunk ids (issue 6, requirement 6): the derivation is pinned by
 * known answers (changing it would orphan every keyed store), ids differ
 * from plain ones and between keys, the store config parser refuses
 * hostile input, and the engine keeps keyed and plain id spaces apart:
 * every chunk of a keyed push is named by the keyed hash of its bytes, and
 * no push, pull, cat or verify runs with a missing or wrong key. A store
 * of version 1 (keyed ids only) is read, and refuses pushes; init makes
 * sealed stores (issue 17), tested end to end in test_sealed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypt.h"
#include "push.h"
#include "testengine.h"

static char dir[256];
static struct ss_memstore *mem;
static uint8_t key1[32], key2[32];

static struct ss_config_in cfg(const uint8_t *key)
{
	return (struct ss_config_in){
		.pub = {.threads = 2, .no_fsync = true, .key = key, .key_len = key ? 32 : 0},
		.mem = mem};
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
	ss_hex(p, n, out);
}

static void test_derivation(void)
{
	struct ss_idkey k, k2;
	struct ss_err e = {0};
	uint8_t key[32];
	for (int i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	REQUIRE(ss_idkey_init(&k, key, sizeof(key), &e) == 0, "init: %s", e.msg);
	CHECK(k.keyed, "keyed");
	char hex[65];
	hex_of(k.check, 16, hex);
	/* Known answers. The key check and the secret are HMAC-SHA256 and
	 * HKDF-SHA256 as computed independently by Python's hmac module:
	 *   hmac.new(key, b"snapstream key check v1", sha256)[:16]
	 *   HKDF(salt=b"snapstream", info=b"snapstream chunk-id secret v1")
	 * The id pins libxxhash's XXH3_128bits_withSecret on that secret. */
	CHECK(!strcmp(hex, "0c71f32d2b1614c0f546791e92b89845"), "key check %s", hex);
	hex_of(k.secret, 32, hex);
	CHECK(!strcmp(hex, "2b26c240d463ff31c3948a92451a1a101f6c424d7b13c9faeed94f477f65c05d"),
	      "secret head %s", hex);
	hex_of(k.secret + 160, 32, hex);
	CHECK(!strcmp(hex, "0b28a68e0a63d9bb97c0f673597370808e8b67c9adc973102630db7c9562c3a9"),
	      "secret tail %s", hex);
	uint8_t id[16], plain[16];
	ss_chunk_id(&k, "snapstream", 10, id);
	hex_of(id, 16, hex);
	CHECK(!strcmp(hex, "062a582ce67d433ecc5daa01273309ff"), "keyed id %s", hex);
	ss_chunk_id(&ss_idkey_plain, "snapstream", 10, plain);
	ss_chunk_id(NULL, "snapstream", 10, id);
	CHECK(!memcmp(id, plain, 16), "NULL means plain");
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits("snapstream", 10));
	CHECK(!memcmp(plain, c.digest, 16), "plain ids are XXH3-128");

	/* Other keys, other ids; the same key, the same ids. */
	key[0] ^= 1;
	REQUIRE(ss_idkey_init(&k2, key, sizeof(key), &e) == 0, "init: %s", e.msg);
	uint8_t a[16], b[16];
	size_t same = 0;
	for (int i = 0; i < 1000; i++) {
		uint64_t v[8];
		for (int j = 0; j < 8; j++)
			v[j] = rnd();
		ss_chunk_id(&k, v, sizeof(v), a);
		ss_chunk_id(&k2, v, sizeof(v), b);
		ss_chunk_id(&ss_idkey_plain, v, sizeof(v), plain);
		same += !memcmp(a, b, 16) + !memcmp(a, plain, 16);
		ss_chunk_id(&k, v, sizeof(v), b);
		CHECK(!memcmp(a, b, 16), "keyed ids are a function of key and bytes");
	}
	CHECK(same == 0, "%zu ids agreed across keys", same);
	CHECK(memcmp(k.check, k2.check, 16), "key checks differ");
	CHECK(memcmp(k.secret, k2.secret, SS_IDKEY_SECRET_SIZE), "secrets differ");

	/* The secret and the check come from one key but say nothing of
	 * each other: the check is not a prefix of the secret. */
	CHECK(memcmp(k.check, k.secret, 16), "check is independent of the secret");

	ss_idkey_wipe(&k2);
	CHECK(ss_idkey_init(&k2, key, 15, &e) == -EINVAL, "15-byte key refused");
	CHECK(ss_idkey_init(&k2, key, 4097, &e) == -EINVAL, "4097-byte key refused");
	ss_idkey_wipe(&k);
	CHECK(!k.keyed, "wiped");
}

/* A config's text, formatted (version 1 keyed when check is given). */
static size_t config_text(const uint8_t *check, char *buf, size_t cap)
{
	struct ss_store_config c = {.version = 1, .keyed = check != NULL};
	if (check)
		memcpy(c.check, check, 16);
	return ss_store_config_format(&c, buf, cap);
}

static void test_config(void)
{
	struct ss_idkey k;
	struct ss_err e = {0};
	REQUIRE(ss_idkey_init(&k, key1, sizeof(key1), &e) == 0, "init");
	char buf[160];
	size_t n = config_text(k.check, buf, sizeof(buf));
	struct ss_store_config pc;
	CHECK(ss_store_config_parse((uint8_t *)buf, n, &pc, &e) == 0 && pc.keyed && !pc.sealed &&
		      pc.version == 1 && !memcmp(pc.check, k.check, 16),
	      "keyed config round trip: %s", e.msg);
	n = config_text(NULL, buf, sizeof(buf));
	CHECK(ss_store_config_parse((uint8_t *)buf, n, &pc, &e) == 0 && !pc.keyed,
	      "plain config round trip");

	static const struct {
		const char *text;
		int want;
	} bad[] = {
		{"", -EBADMSG},
		{"snapstream-store 1", -EBADMSG},                       /* no newline */
		{"snapstream-store 1\n", -EBADMSG},                     /* no ids line */
		{"snapstream-store 0\nchunk-ids xxh3-128\n", -EBADMSG},
		{"snapstream-store 1x\nchunk-ids xxh3-128\n", -EBADMSG},
		{"snapstream-store 3\nchunk-ids sha3\n", -EPROTONOSUPPORT},
		/* Version 2 (sealed): only keyed, exactly one seal line. */
		{"snapstream-store 2\nchunk-ids xxh3-128\n", -EBADMSG},
		{"snapstream-store 2\nchunk-ids xxh3-128\nseal aes-256-gcm "
		 "00112233445566778899aabbccddeeff\n", -EBADMSG},
		{"snapstream-store 2\nchunk-ids xxh3-128-keyed 00112233445566778899aabbccddeeff\n",
		 -EBADMSG},
		{"snapstream-store 2\nchunk-ids xxh3-128-keyed 00112233445566778899aabbccddeeff\n"
		 "seal aes-128-gcm 00112233445566778899aabbccddeeff\n", -EBADMSG},
		{"snapstream-store 2\nchunk-ids xxh3-128-keyed 00112233445566778899aabbccddeeff\n"
		 "seal aes-256-gcm 00112233445566778899aabbccddeeFF\n", -EBADMSG},
		{"snapstream-store 2\nchunk-ids xxh3-128-keyed 00112233445566778899aabbccddeeff\n"
		 "seal aes-256-gcm 00112233445566778899aabbccddeeff\nx\n", -EBADMSG},
		{"snapstream-store 2\nchunk-ids xxh3-128-keyed 00112233445566778899aabbccddeeff\n"
		 "seal aes-256-gcm  00112233445566778899aabbccddeeff\n", -EBADMSG},
		{"snapstream-store 1\nchunk-ids sha256\n", -EBADMSG},
		{"snapstream-store 1\nchunk-ids xxh3-128\nmore\n", -EBADMSG},
		{"snapstream-store 1\nchunk-ids xxh3-128-keyed 00\n", -EBADMSG},
		{"snapstream-store 1\nchunk-ids xxh3-128-keyed "
		 "zz000000000000000000000000000000\n", -EBADMSG},
		{"snapstream-store 1\nchunk-ids xxh3-128-keyed "
		 "000000000000000000000000000000000\n", -EBADMSG},
		{"snapstream-store 1\x01\nchunk-ids xxh3-128\n", -EBADMSG},
		{"snapstream-store 01\nchunk-ids xxh3-128\n", -EBADMSG},
		{"snapstream-store +1\nchunk-ids xxh3-128\n", -EBADMSG},
		{"snapstream-store 1\nchunk-ids xxh3-128-keyed "
		 "153b57322ca155ca1eB87782fee73d8f\n", -EBADMSG},   /* upper case */
	};
	for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
		ss_err_clear(&e);
		int r = ss_store_config_parse((const uint8_t *)bad[i].text, strlen(bad[i].text),
					      &pc, &e);
		CHECK(r == bad[i].want && e.msg[0], "config %zu: %d (%s)", i, r, e.msg);
	}
	/* Version 2 parses and formats back to the same bytes. */
	static const char sealed[] =
		"snapstream-store 2\nchunk-ids xxh3-128-keyed 00112233445566778899aabbccddeeff\n"
		"seal chacha20-poly1305 ffeeddccbbaa99887766554433221100\n";
	struct ss_store_config sc;
	char again[256];
	CHECK(ss_store_config_parse((const uint8_t *)sealed, strlen(sealed), &sc, &e) == 0 &&
		      sc.version == 2 && sc.sealed && sc.keyed && sc.cipher == 2 &&
		      sc.store_id[0] == 0xff && sc.check[0] == 0x00 && sc.check[15] == 0xff,
	      "sealed config parse: %s", e.msg);
	CHECK(ss_store_config_format(&sc, again, sizeof(again)) == strlen(sealed) &&
		      !strcmp(again, sealed),
	      "sealed config format: %s", again);
	uint8_t big[5000];
	memset(big, 'a', sizeof(big));
	CHECK(ss_store_config_parse(big, sizeof(big), &pc, &e) == -EBADMSG, "oversized config");
	/* Store checks: plain store + key, keyed store without or with
	 * another key. */
	n = config_text(k.check, buf, sizeof(buf));
	struct ss_idkey plain = {0};
	CHECK(ss_idkey_check_store(&k, (uint8_t *)buf, n, "s", NULL, &e) == 0 && !k.crypt &&
		      k.bound,
	      "own key (version 1: nothing sealed)");
	CHECK(ss_idkey_check_store(NULL, (uint8_t *)buf, n, "s", NULL, &e) == -ENOKEY, "no key");
	CHECK(ss_idkey_check_store(&plain, NULL, 0, "s", NULL, &e) == 0, "plain, no config");
	CHECK(ss_idkey_check_store(&k, NULL, 0, "s", NULL, &e) == -EKEYREJECTED, "key for plain");
	struct ss_idkey o;
	REQUIRE(ss_idkey_init(&o, key2, sizeof(key2), &e) == 0, "init");
	ss_err_clear(&e);
	CHECK(ss_idkey_check_store(&o, (uint8_t *)buf, n, "s", NULL, &e) == -EKEYREJECTED &&
		      strstr(e.msg, "another key"),
	      "other key: %s", e.msg);
	ss_idkey_wipe(&o);

	/* A sealed store: the key is bound to its id and cipher, and its
	 * check, secret and keys are that store's, unrelated to version 1's
	 * and to another store's made from the same key. */
	uint8_t v1check[16], v1secret[SS_IDKEY_SECRET_SIZE];
	memcpy(v1check, k.check, 16);
	memcpy(v1secret, k.secret, sizeof(v1secret));
	struct ss_store_config sc2 = {.version = 2, .keyed = true, .sealed = true,
				      .cipher = SS_CIPHER_CHACHA20POLY1305};
	memset(sc2.store_id, 0x5a, 16);
	struct ss_crypt *c;
	REQUIRE(ss_idkey_derive(&k, sc2.store_id, sc2.cipher, &c, &e) == 0, "derive: %s", e.msg);
	memcpy(sc2.check, ss_crypt_check(c), 16);
	n = ss_store_config_format(&sc2, buf, sizeof(buf));
	struct ss_idkey k1;
	REQUIRE(ss_idkey_init(&k1, key1, sizeof(key1), &e) == 0, "init");
	struct ss_store_config got;
	CHECK(ss_idkey_check_store(&k1, (uint8_t *)buf, n, "s", &got, &e) == 0 && k1.crypt &&
		      got.sealed && !memcmp(k1.check, sc2.check, 16) &&
		      memcmp(k1.check, v1check, 16) &&
		      !memcmp(k1.secret, ss_crypt_idsecret(c), SS_IDKEY_SECRET_SIZE) &&
		      memcmp(k1.secret, v1secret, SS_IDKEY_SECRET_SIZE),
	      "sealed store, own key: %s", e.msg);
	CHECK(ss_idkey_check_store(&k1, (uint8_t *)buf, n, "s", NULL, &e) == 0, "bound twice");
	uint8_t other_id[16];
	memset(other_id, 0x77, 16);
	ss_err_clear(&e);
	CHECK(ss_idkey_seal(&k1, other_id, sc2.cipher, &e) == -EXDEV && e.msg[0],
	      "bound to one store, not another: %s", e.msg);
	ss_idkey_wipe(&k1);
	ss_crypt_free(c);
	ss_err_clear(&e);
	CHECK(ss_idkey_check_store(&plain, (uint8_t *)buf, n, "S1", NULL, &e) == -ENOKEY &&
		      strstr(e.msg, "store S1 is keyed") && strstr(e.msg, "--key-file"),
	      "sealed store, no key: %s", e.msg);
	REQUIRE(ss_idkey_init(&o, key2, sizeof(key2), &e) == 0, "init");
	ss_err_clear(&e);
	CHECK(ss_idkey_check_store(&o, (uint8_t *)buf, n, "S1", NULL, &e) == -EKEYREJECTED &&
		      strstr(e.msg, "store S1 was made with another key"),
	      "sealed store, other key: %s", e.msg);
	ss_idkey_wipe(&o);
	ss_idkey_wipe(&k);
}

static uint8_t *read_all(const char *path, size_t *n)
{
	int fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0, "open %s", path);
	struct stat sb;
	REQUIRE(fstat(fd, &sb) == 0, "stat");
	uint8_t *b = malloc((size_t)sb.st_size + 1);
	REQUIRE(read(fd, b, (size_t)sb.st_size) == sb.st_size, "read");
	close(fd);
	*n = (size_t)sb.st_size;
	return b;
}

static struct ss_manifest *load(const char *uri)
{
	struct ss_config_in in = cfg(NULL);
	return load_manifest(&in, uri);
}

/* Put an object into the mem:// store at uri (a store's root). */
static void mem_put(const char *uri, const char *key, const void *p, size_t n)
{
	struct ss_loop *l;
	REQUIRE(ss_loop_new(64, &l) == 0, "loop");
	struct ss_config_in in = cfg(NULL);
	struct ss_cfg c;
	REQUIRE(ss_cfg_resolve(&in, &c, NULL) == 0, "cfg");
	struct ss_backend *b;
	REQUIRE(ss_backend_open(uri, l, &c.bopts, &b, NULL) == 0, "open");
	REQUIRE(ss_put_object(b, l, key, p, n, 0, NULL, NULL) == 0, "put %s", key);
	ss_backend_free(b);
	ss_loop_free(l);
}

/* The bytes of an object of the mem:// store at uri (malloc'd). */
static uint8_t *mem_get(const char *uri, const char *key, size_t *n)
{
	struct ss_loop *l;
	REQUIRE(ss_loop_new(64, &l) == 0, "loop");
	struct ss_config_in in = cfg(NULL);
	struct ss_cfg c;
	REQUIRE(ss_cfg_resolve(&in, &c, NULL) == 0, "cfg");
	struct ss_backend *b;
	REQUIRE(ss_backend_open(uri, l, &c.bopts, &b, NULL) == 0, "open");
	uint8_t *p = NULL;
	REQUIRE(ss_get_object(b, l, key, 1u << 30, &p, n, NULL, NULL) == 0, "get %s", key);
	ss_backend_free(b);
	ss_loop_free(l);
	return p;
}

/* init --key-file makes a sealed store: config version 2, with a random
 * store id, the cipher asked for (or the CPU's), and the key check of the
 * keys derived for that id; the key itself is nowhere in it. */
static void test_init(void)
{
	char err[512];
	struct ss_config_in k1 = cfg(key1);
	struct ss_init_opts io = {.store = "mem://i/.snapstream", .cipher = "chacha20-poly1305"};
	REQUIRE(ss_init_impl(&io, &k1, err, sizeof(err)) == 0, "init: %s", err);
	CHECK(ss_init_impl(&io, &k1, err, sizeof(err)) == -EEXIST && strstr(err, "sealed"),
	      "second init: %s", err);
	size_t n;
	uint8_t *p = mem_get("mem://i/.snapstream", "config", &n);
	struct ss_store_config c;
	struct ss_err e = {0};
	REQUIRE(ss_store_config_parse(p, n, &c, &e) == 0, "parse: %s", e.msg);
	CHECK(c.version == 2 && c.sealed && c.keyed && c.cipher == SS_CIPHER_CHACHA20POLY1305,
	      "sealed config: %.*s", (int)n, (char *)p);
	struct ss_idkey k;
	REQUIRE(ss_idkey_init(&k, key1, sizeof(key1), &e) == 0, "idkey");
	struct ss_crypt *cr;
	REQUIRE(ss_idkey_derive(&k, c.store_id, c.cipher, &cr, &e) == 0, "derive");
	CHECK(!memcmp(c.check, ss_crypt_check(cr), 16), "config carries the store's key check");
	CHECK(!memmem(p, n, key1, 16), "the key is not in the config");
	ss_crypt_free(cr);
	free(p);

	/* Two stores from one key: different ids, so unrelated keys. */
	struct ss_init_opts io2 = {.store = "mem://i2/.snapstream"};
	REQUIRE(ss_init_impl(&io2, &k1, err, sizeof(err)) == 0, "init 2: %s", err);
	p = mem_get("mem://i2/.snapstream", "config", &n);
	struct ss_store_config c2;
	REQUIRE(ss_store_config_parse(p, n, &c2, &e) == 0, "parse");
	CHECK(c2.sealed && c2.cipher == ss_crypt_pick() && memcmp(c2.store_id, c.store_id, 16) &&
		      memcmp(c2.check, c.check, 16),
	      "a second store has its own id and check");
	free(p);
	struct ss_init_opts bad = {.store = "mem://i3/.snapstream", .cipher = "rot13"};
	CHECK(ss_init_impl(&bad, &k1, err, sizeof(err)) == -EINVAL && strstr(err, "cipher"),
	      "unknown cipher: %s", err);
	struct ss_config_in plain = cfg(NULL);
	CHECK(ss_init_impl(&io, &plain, err, sizeof(err)) == -EEXIST, "plain init of a sealed store");
	ss_idkey_wipe(&k);
}

static void test_engine(void)
{
	char img[300], out[300];
	snprintf(img, sizeof(img), "%s/img", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	write_image(img, (5u << 20) + 777);
	char err[512];
	struct ss_stats st;
	struct ss_config_in k1 = cfg(key1), k2 = cfg(key2), plain = cfg(NULL);

	/* A store of keyed ids made before sealing (config version 1): what
	 * snapstream wrote then is read as it is; nothing new is pushed. */
	struct ss_idkey k;
	struct ss_err e = {0};
	REQUIRE(ss_idkey_init(&k, key1, sizeof(key1), &e) == 0, "init");
	char text[160];
	size_t tl = config_text(k.check, text, sizeof(text));
	mem_put("mem://k/.snapstream", "config", text, tl);
	struct ss_init_opts io = {.store = "mem://k/.snapstream"};
	CHECK(ss_init_impl(&io, &k1, err, sizeof(err)) == -EEXIST, "second init");

	struct ss_push_opts po = {.source = img, .snapshot = "mem://k/a"};
	CHECK(ss_push_impl(&po, &plain, &st, err, sizeof(err)) == -ENOKEY, "push without key: %s", err);
	CHECK(ss_push_impl(&po, &k2, &st, err, sizeof(err)) == -EKEYREJECTED, "push, other key: %s",
	      err);
	CHECK(ss_push_impl(&po, &k1, &st, err, sizeof(err)) == -EPERM &&
		      strstr(err, "config version 1") && strstr(err, "init --key-file"),
	      "push into a version 1 store: %s", err);
	struct ss_config_in k1old = k1;
	k1old.v1_push = true;
	REQUIRE(ss_push_impl(&po, &k1old, &st, err, sizeof(err)) == 0, "push: %s", err);
	CHECK(st.new_raw_bytes > 0, "stored something");

	/* Every chunk is named by the keyed hash of its bytes, never the
	 * plain one. */
	struct ss_manifest *m = load("mem://k/a");
	CHECK(m->keyed_ids && !memcmp(m->key_check, k.check, 16), "manifest records the key");
	size_t n;
	uint8_t *data = read_all(img, &n);
	uint64_t off = 0;
	size_t checked = 0, plain_match = 0;
	const struct ss_mfile *f = &m->files[0];
	for (size_t x = 0; x < f->next; x++) {
		if (f->ext[x].chunk) {
			const struct ss_chunk_ref *c = &m->chunks[f->ext[x].chunk - 1];
			uint8_t id[16], pid[16];
			ss_chunk_id(&k, data + off, f->ext[x].len, id);
			ss_chunk_id(&ss_idkey_plain, data + off, f->ext[x].len, pid);
			CHECK(!memcmp(id, c->id, 16), "extent %zu: id is not the keyed hash", x);
			plain_match += !memcmp(pid, c->id, 16);
			checked++;
		}
		off += f->ext[x].len;
	}
	CHECK(checked > 10 && plain_match == 0, "%zu chunks checked, %zu plain ids", checked,
	      plain_match);
	ss_manifest_free(m);

	/* Dedup within the keyed store still holds. */
	po.snapshot = "mem://k/b";
	po.parents = (const char *const[]){"mem://k/a"};
	po.nparents = 1;
	REQUIRE(ss_push_impl(&po, &k1old, &st, err, sizeof(err)) == 0, "push b: %s", err);
	CHECK(st.new_raw_bytes == 0, "second push stored %llu bytes",
	      (unsigned long long)st.new_raw_bytes);

	/* Reading needs the key too. */
	struct ss_pull_opts pl = {.snapshot = "mem://k/a", .dest = out};
	CHECK(ss_pull_impl(&pl, &plain, &st, err, sizeof(err)) == -ENOKEY, "pull without key");
	CHECK(ss_pull_impl(&pl, &k2, &st, err, sizeof(err)) == -EKEYREJECTED, "pull, other key");
	CHECK(access(out, F_OK) != 0, "nothing pulled without the key");
	REQUIRE(ss_pull_impl(&pl, &k1, &st, err, sizeof(err)) == 0, "pull: %s", err);
	uint8_t *back = read_all(out, &n);
	size_t n0;
	free(read_all(img, &n0));
	CHECK(n == n0 && !memcmp(back, data, n), "pulled bytes differ");
	free(back);
	free(data);
	struct ss_verify_opts vo = {.snapshot = "mem://k/b"};
	CHECK(ss_verify_impl(&vo, &plain, &st, err, sizeof(err)) == -ENOKEY, "verify without key");
	CHECK(ss_verify_impl(&vo, &k1, &st, err, sizeof(err)) == 0, "verify: %s", err);
	int null = open("/dev/null", O_WRONLY);
	struct ss_cat_opts co = {.snapshot = "mem://k/b", .fd = null};
	CHECK(ss_cat_impl(&co, &k2, &st, err, sizeof(err)) == -EKEYREJECTED, "cat, other key");
	CHECK(ss_cat_impl(&co, &k1, &st, err, sizeof(err)) == 0, "cat: %s", err);

	/* A stream push into the keyed store dedups against the file push. */
	int fd = open(img, O_RDONLY);
	struct ss_push_opts so = {.snapshot = "mem://k/s"};
	CHECK(ss_push_fd_impl(&so, fd, "img", &plain, &st, err, sizeof(err)) == -ENOKEY,
	      "stream push without key");
	lseek(fd, 0, SEEK_SET);
	CHECK(ss_push_fd_impl(&so, fd, "img", &k1old, &st, err, sizeof(err)) == 0 &&
		      st.new_raw_bytes == 0,
	      "stream push: %s (%llu new)", err, (unsigned long long)st.new_raw_bytes);
	close(fd);

	/* Plain and keyed id spaces never mix: a plain store refuses a key
	 * and a key cannot be added to a store with packs; a plain parent
	 * cannot guide a keyed push. */
	struct ss_push_opts pp = {.source = img, .snapshot = "mem://p/a"};
	REQUIRE(ss_push_impl(&pp, &plain, &st, err, sizeof(err)) == 0, "plain push: %s", err);
	pp.snapshot = "mem://p/b";
	CHECK(ss_push_impl(&pp, &k1, &st, err, sizeof(err)) == -EKEYREJECTED, "key for a plain store");
	struct ss_init_opts pio = {.store = "mem://p/.snapstream"};
	CHECK(ss_init_impl(&pio, &k1, err, sizeof(err)) == -EEXIST && strstr(err, "packs"),
	      "keyed init of a store with packs: %s", err);
	po.snapshot = "mem://k/c";
	po.parents = (const char *const[]){"mem://p/a"};
	CHECK(ss_push_impl(&po, &k1old, &st, err, sizeof(err)) == -EKEYREJECTED &&
		      strstr(err, "parent"),
	      "plain parent for a keyed push: %s", err);
	close(null);
	unlink(out);
	unlink(img);
	ss_idkey_wipe(&k);
}

struct keys {
	char *v[4096];
	size_t n;
};

/* Every object key of the mem:// store at uri. */
static int collect(void *arg, const char *key, uint64_t size)
{
	(void)size;
	struct keys *l = arg;
	if (l->n < 4096)
		l->v[l->n++] = strdup(key);
	return 0;
}

static void mem_list(const char *uri, const char *prefix, struct keys *out)
{
	struct ss_loop *l;
	REQUIRE(ss_loop_new(64, &l) == 0, "loop");
	struct ss_config_in in = cfg(NULL);
	struct ss_cfg c;
	REQUIRE(ss_cfg_resolve(&in, &c, NULL) == 0, "cfg");
	struct ss_backend *b;
	REQUIRE(ss_backend_open(uri, l, &c.bopts, &b, NULL) == 0, "open");
	out->n = 0;
	struct ss_req r = {.kind = SS_REQ_LIST, .key = prefix, .on_key = collect, .arg = out};
	REQUIRE(ss_backend_call(b, l, &r) >= 0, "list");
	ss_backend_free(b);
	ss_loop_free(l);
}

static void keys_free(struct keys *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->v[i]);
	k->n = 0;
}

/* An image whose first 2 MiB do not compress (stored as raw frames) and
 * whose rest does, with a 32-byte marker in every 4 KiB page. */
static void write_marked(const char *path, size_t size)
{
	uint8_t *b = malloc(size);
	REQUIRE(b, "oom");
	for (size_t i = 0; i < size; i++)
		b[i] = i < (2u << 20) ? (uint8_t)rnd() : (uint8_t)"checkpoint "[i % 11];
	for (size_t i = 0; i + 32 <= size; i += 4096)
		snprintf((char *)b + i, 33, "MARKER:%024zx", i);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0 && write(fd, b, size) == (ssize_t)size, "write %s", path);
	close(fd);
	free(b);
}

/* A sealed store end to end through the engine: push, dedup, pull, cat,
 * verify, info, check --deep, gc and rm, with the key, without it and with
 * another; no object of the store shows a marker; frames, pack indexes,
 * index objects and manifests that are tampered with, moved or cut fail
 * the read and leave nothing. */
static void test_sealed(void)
{
	char img[300], out[300], err[512];
	snprintf(img, sizeof(img), "%s/simg", dir);
	snprintf(out, sizeof(out), "%s/sout", dir);
	size_t isize = (5u << 20) + 333;
	write_marked(img, isize);
	struct ss_stats st;
	struct ss_config_in k1 = cfg(key1), k2 = cfg(key2), plain = cfg(NULL);
	const char *S = "mem://s/.snapstream";
	struct ss_init_opts io = {.store = S};
	REQUIRE(ss_init_impl(&io, &k1, err, sizeof(err)) == 0, "init: %s", err);

	struct ss_push_opts po = {.source = img, .snapshot = "mem://s/a",
				  .labels = (const struct ss_label_kv[]){{"runsc.sha256", "abc"}},
				  .nlabels = 1};
	CHECK(ss_push_impl(&po, &plain, &st, err, sizeof(err)) == -ENOKEY, "push without key: %s", err);
	CHECK(ss_push_impl(&po, &k2, &st, err, sizeof(err)) == -EKEYREJECTED, "push, other key");
	REQUIRE(ss_push_impl(&po, &k1, &st, err, sizeof(err)) == 0, "push: %s", err);
	CHECK(st.new_raw_bytes > (2u << 20), "stored %llu", (unsigned long long)st.new_raw_bytes);

	/* Nothing of the image is readable in any object of the store or in
	 * the manifest; packs end with the sealed footer. */
	struct keys ks;
	mem_list(S, "", &ks);
	size_t packs = 0, index = 0;
	for (size_t i = 0; i < ks.n; i++) {
		size_t n;
		uint8_t *p = mem_get(S, ks.v[i], &n);
		CHECK(!memmem(p, n, "MARKER:", 7), "%s shows a marker", ks.v[i]);
		if (!strncmp(ks.v[i], "packs/", 6)) {
			packs++;
			CHECK(n > 16 && !memcmp(p + n - 16, "SSPACK02", 8), "%s: sealed footer", ks.v[i]);
		}
		if (!strncmp(ks.v[i], "index/", 6)) {
			index++;
			CHECK(n > 8 && !memcmp(p, "SSINDX02", 8), "%s: sealed index object", ks.v[i]);
		}
		free(p);
	}
	CHECK(packs >= 1 && index == 1, "%zu packs, %zu index objects", packs, index);
	keys_free(&ks);
	size_t mn;
	uint8_t *mp = mem_get("mem://s", "a/manifest", &mn);
	CHECK(!memmem(mp, mn, "MARKER:", 7) && !memmem(mp, mn, "simg", 4) &&
		      !memmem(mp, mn, "runsc.sha256", 12),
	      "the manifest shows no name, label or content");
	struct ss_manifest *pm = NULL;
	struct ss_err e = {0};
	/* The plain decoder refuses it as sealed (readers of format 3 and
	 * older refused it as newer, by its major). */
	CHECK(ss_manifest_decode(mp, mn, &pm, &e) == -EBADMSG && strstr(e.msg, "sealed"),
	      "the plain decoder refuses it: %s", e.msg);

	/* Read back with the key; refused without it or with another,
	 * leaving nothing. */
	struct ss_pull_opts pl = {.snapshot = "mem://s/a", .dest = out};
	CHECK(ss_pull_impl(&pl, &plain, &st, err, sizeof(err)) == -ENOKEY && strstr(err, "keyed"),
	      "pull without key: %s", err);
	CHECK(ss_pull_impl(&pl, &k2, &st, err, sizeof(err)) == -EKEYREJECTED &&
		      strstr(err, "another key"),
	      "pull, other key: %s", err);
	CHECK(access(out, F_OK) != 0, "nothing pulled without the key");
	REQUIRE(ss_pull_impl(&pl, &k1, &st, err, sizeof(err)) == 0, "pull: %s", err);
	size_t n, n0;
	uint8_t *back = read_all(out, &n), *data = read_all(img, &n0);
	CHECK(n == n0 && !memcmp(back, data, n), "pulled bytes differ");
	free(back);
	unlink(out);
	struct ss_verify_opts vo = {.snapshot = "mem://s/a"};
	CHECK(ss_verify_impl(&vo, &plain, &st, err, sizeof(err)) == -ENOKEY, "verify without key");
	CHECK(ss_verify_impl(&vo, &k1, &st, err, sizeof(err)) == 0, "verify: %s", err);
	int catfd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	struct ss_cat_opts co = {.snapshot = "mem://s/a", .fd = catfd};
	CHECK(ss_cat_impl(&co, &k2, &st, err, sizeof(err)) == -EKEYREJECTED, "cat, other key");
	CHECK(ss_cat_impl(&co, &k1, &st, err, sizeof(err)) == 0, "cat: %s", err);
	close(catfd);
	back = read_all(out, &n);
	CHECK(n == n0 && !memcmp(back, data, n), "cat bytes differ");
	free(back);
	unlink(out);

	/* The manifest opened: sealed, its labels inside. */
	struct ss_manifest *m = load_manifest(&k1, "mem://s/a");
	CHECK(m->sealed && m->keyed_ids && m->nlabels == 1 &&
		      !strcmp(m->labels[0].value, "abc"),
	      "sealed manifest");
	ss_manifest_free(m);

	/* Dedup within the store: a second push, a stream push. */
	po.snapshot = "mem://s/b";
	po.parents = (const char *const[]){"mem://s/a"};
	po.nparents = 1;
	REQUIRE(ss_push_impl(&po, &k1, &st, err, sizeof(err)) == 0, "push b: %s", err);
	CHECK(st.new_raw_bytes == 0, "push b stored %llu", (unsigned long long)st.new_raw_bytes);
	po.parents = NULL;
	po.nparents = 0;
	po.snapshot = "mem://s/c";
	REQUIRE(ss_push_impl(&po, &k1, &st, err, sizeof(err)) == 0, "push c: %s", err);
	CHECK(st.new_raw_bytes == 0, "push c (index objects only) stored %llu",
	      (unsigned long long)st.new_raw_bytes);
	int fd = open(img, O_RDONLY);
	struct ss_push_opts so = {.snapshot = "mem://s/s"};
	CHECK(ss_push_fd_impl(&so, fd, "img", &k1, &st, err, sizeof(err)) == 0 &&
		      st.new_raw_bytes == 0,
	      "stream push: %s (%llu new)", err, (unsigned long long)st.new_raw_bytes);
	close(fd);
	struct ss_pull_opts pls = {.snapshot = "mem://s/s", .dest = out};
	REQUIRE(ss_pull_impl(&pls, &k1, &st, err, sizeof(err)) == 0, "pull s: %s", err);
	back = read_all(out, &n);
	CHECK(n == n0 && !memcmp(back, data, n), "stream-pushed bytes differ");
	free(back);
	unlink(out);

	/* info without the key: the header only. */
	struct ss_snapshot_info *in = NULL;
	CHECK(ss_info_impl("mem://s/a", NULL, &plain, &in, err, sizeof(err)) == 0 && in->sealed &&
		      in->unopened && in->packs >= 1 && in->files == 0,
	      "info without key: %s", err);
	ss_info_free(in);
	in = NULL;
	CHECK(ss_info_impl("mem://s/a", NULL, &k1, &in, err, sizeof(err)) == 0 && in->sealed &&
		      !in->unopened && in->files == 1 && in->nlabels == 1,
	      "info with key: %s", err);
	ss_info_free(in);

	/* check --deep with the key; without it, a sealed store is refused. */
	struct ss_check_opts cko = {.store = S, .deep = true};
	struct ss_check_stats cs;
	CHECK(ss_check_impl(&cko, &k1, &cs, err, sizeof(err)) == 0 && cs.chunks_damaged == 0 &&
		      cs.chunks_verified > 0,
	      "check --deep: %s", err);
	cko.deep = false;
	CHECK(ss_check_impl(&cko, &plain, &cs, err, sizeof(err)) == -ENOKEY, "check without key");

	/* Tampering. A manifest copied under another name: */
	mem_put("mem://s", "x/manifest", mp, mn);
	struct ss_pull_opts px = {.snapshot = "mem://s/x", .dest = out};
	CHECK(ss_pull_impl(&px, &k1, &st, err, sizeof(err)) == -EBADMSG &&
		      strstr(err, "authenticate"),
	      "manifest under another name: %s", err);
	CHECK(access(out, F_OK) != 0, "nothing under the final name");
	/* cut short: */
	mem_put("mem://s", "x/manifest", mp, mn - 1);
	CHECK(ss_pull_impl(&px, &k1, &st, err, sizeof(err)) == -EBADMSG, "cut manifest: %s", err);
	/* a byte flipped anywhere in it (every 97th): */
	for (size_t i = 0; i < mn; i += 97) {
		mp[i] ^= 4;
		mem_put("mem://s", "a/manifest", mp, mn);
		mp[i] ^= 4;
		int r = ss_pull_impl(&pl, &k1, &st, err, sizeof(err));
		CHECK(r == -EBADMSG || r == -EXDEV || r == -EKEYREJECTED,
		      "manifest byte %zu flipped: %d %s", i, r, err);
		CHECK(access(out, F_OK) != 0, "nothing under the final name");
	}
	mem_put("mem://s", "a/manifest", mp, mn);
	/* a readable manifest planted in its place (pushed to a plain
	 * store, so well formed): */
	struct ss_push_opts pq = {.source = img, .snapshot = "mem://q/a"};
	REQUIRE(ss_push_impl(&pq, &plain, &st, err, sizeof(err)) == 0, "plain push: %s", err);
	size_t qn;
	uint8_t *qm = mem_get("mem://q", "a/manifest", &qn);
	mem_put("mem://s", "a/manifest", qm, qn);
	CHECK(ss_pull_impl(&pl, &k1, &st, err, sizeof(err)) == -EBADMSG && strstr(err, "not sealed"),
	      "a plain manifest in a sealed store: %s", err);
	CHECK(ss_pull_impl(&pl, &plain, &st, err, sizeof(err)) == -ENOKEY,
	      "... refused without the key too: %s", err);
	CHECK(access(out, F_OK) != 0, "nothing under the final name");
	free(qm);
	mem_put("mem://s", "a/manifest", mp, mn);
	/* a byte of a frame, and of a pack's sealed index: */
	mem_list(S, "packs/", &ks);
	uint8_t *pk = mem_get(S, ks.v[0], &n);
	pk[100] ^= 1;
	mem_put(S, ks.v[0], pk, n);
	CHECK(ss_pull_impl(&pl, &k1, &st, err, sizeof(err)) == -EBADMSG &&
		      strstr(err, "authenticate"),
	      "flipped frame byte: %s", err);
	CHECK(access(out, F_OK) != 0, "nothing under the final name");
	CHECK(ss_check_impl(&(struct ss_check_opts){.store = S, .deep = true}, &k1, &cs, err,
			    sizeof(err)) == -EBADMSG &&
		      cs.chunks_damaged > 0,
	      "check --deep finds the forged frame: %s", err);
	pk[100] ^= 1;
	pk[n - 40] ^= 1;
	mem_put(S, ks.v[0], pk, n);
	CHECK(ss_check_impl(&(struct ss_check_opts){.store = S}, &k1, &cs, err, sizeof(err)) ==
		      -EBADMSG,
	      "check finds the forged pack index: %s", err);
	pk[n - 40] ^= 1;
	mem_put(S, ks.v[0], pk, n);
	/* a pack under another pack's name (its key is its name's): */
	if (ks.n >= 2) {
		size_t n2;
		uint8_t *pk2 = mem_get(S, ks.v[1], &n2);
		mem_put(S, ks.v[1], pk, n);
		CHECK(ss_pull_impl(&pl, &k1, &st, err, sizeof(err)) == -EBADMSG, "pack renamed: %s",
		      err);
		mem_put(S, ks.v[1], pk2, n2);
		free(pk2);
	}
	free(pk);
	keys_free(&ks);
	REQUIRE(ss_pull_impl(&pl, &k1, &st, err, sizeof(err)) == 0, "restored: %s", err);
	unlink(out);

	/* Another store made from the same key file: its objects are
	 * unrelated. Its manifest moved here is another store's (-EXDEV,
	 * since this key opens it); its packs do not open here. */
	struct ss_init_opts io2 = {.store = "mem://t/.snapstream"};
	REQUIRE(ss_init_impl(&io2, &k1, err, sizeof(err)) == 0, "init t: %s", err);
	struct ss_push_opts pt = {.source = img, .snapshot = "mem://t/a"};
	REQUIRE(ss_push_impl(&pt, &k1, &st, err, sizeof(err)) == 0, "push t: %s", err);
	size_t tn;
	uint8_t *tm = mem_get("mem://t", "a/manifest", &tn);
	mem_put("mem://s", "y/manifest", tm, tn);
	struct ss_pull_opts py = {.snapshot = "mem://s/y", .dest = out};
	CHECK(ss_pull_impl(&py, &k1, &st, err, sizeof(err)) == -EXDEV &&
		      strstr(err, "another store"),
	      "another store's manifest: %s", err);
	free(tm);
	struct keys tk;
	mem_list("mem://t/.snapstream", "packs/", &tk);
	mem_list(S, "packs/", &ks);
	size_t sn;
	uint8_t *tp = mem_get("mem://t/.snapstream", tk.v[0], &tn);
	uint8_t *sp = mem_get(S, ks.v[0], &sn);
	mem_put(S, ks.v[0], tp, tn);
	CHECK(ss_pull_impl(&pl, &k1, &st, err, sizeof(err)) == -EBADMSG, "another store's pack: %s",
	      err);
	CHECK(access(out, F_OK) != 0, "nothing under the final name");
	mem_put(S, ks.v[0], sp, sn);
	free(tp);
	free(sp);
	keys_free(&tk);
	keys_free(&ks);

	/* gc without the key keeps what sealed manifests list in the clear. */
	struct ss_rm_opts ro = {.snapshot = "mem://s/x"};
	ss_rm_impl(&ro, &plain, err, sizeof(err));
	ro.snapshot = "mem://s/y";
	ss_rm_impl(&ro, &plain, err, sizeof(err));
	ro.snapshot = "mem://s/a";
	CHECK(ss_rm_impl(&ro, &plain, err, sizeof(err)) == 0, "rm without key: %s", err);
	struct ss_gc_opts go = {.store = S, .grace_seconds = -1};
	struct ss_gc_stats gs;
	CHECK(ss_gc_impl(&go, &plain, &gs, err, sizeof(err)) == 0 && gs.packs_deleted == 0,
	      "gc without key, packs still used: %s (%llu deleted)", err,
	      (unsigned long long)gs.packs_deleted);
	REQUIRE(ss_pull_impl(&pls, &k1, &st, err, sizeof(err)) == 0, "pull s after gc: %s", err);
	unlink(out);
	const char *rest[] = {"mem://s/b", "mem://s/c", "mem://s/s"};
	for (size_t i = 0; i < 3; i++) {
		ro.snapshot = rest[i];
		CHECK(ss_rm_impl(&ro, &plain, err, sizeof(err)) == 0, "rm %s: %s", rest[i], err);
	}
	CHECK(ss_gc_impl(&go, &plain, &gs, err, sizeof(err)) == 0 && gs.packs_deleted == packs,
	      "gc without key, nothing used: %s (%llu deleted)", err,
	      (unsigned long long)gs.packs_deleted);
	mem_list(S, "index/", &ks);
	CHECK(ks.n == 0, "%zu index objects left listing deleted packs", ks.n);
	keys_free(&ks);
	free(mp);
	free(data);
	unlink(img);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "%s/ss-keyed-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	REQUIRE(mkdtemp(dir), "mkdtemp");
	for (int i = 0; i < 32; i++) {
		key1[i] = (uint8_t)(0xa0 + i);
		key2[i] = (uint8_t)(0x50 + i);
	}
	mem = ss_memstore_new();
	test_derivation();
	test_config();
	test_init();
	test_engine();
	test_sealed();
	ss_memstore_free(mem);
	rmdir(dir);
	if (failures)
		fprintf(stderr, "%d failure(s)\n", failures);
	return failures ? 1 : 0;
}
