/* Chunk ids: plain or keyed XXH3-128, key checks, the store config object. */
#include "chunkid.h"
#include "snapstream.h"
#include "cryptofn.h"
#include "crypt.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>


const struct ss_idkey ss_idkey_plain;

/* Labels bind each derived value to its use, so that the key check (which
 * is public) says nothing about the secret (which is not). */
static const char SECRET_LABEL[] = "snapstream chunk-id secret v1";
static const char CHECK_LABEL[] = "snapstream key check v1";

static int hmac256(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
		   uint8_t out[32])
{
	unsigned int olen = 0;
	if (ss_crypto_load(NULL))
		return -ENOENT;
	const struct ss_cryptofn *C = ss_crypto();
	if (!C->hmac(C->sha256(), key, (int)klen, msg, mlen, out, &olen) || olen != 32)
		return -EIO;
	return 0;
}

/* The key and the version 1 secret, in a mapping of their own: out of
 * core dumps, locked in memory when the limit allows, wiped and unmapped
 * by ss_idkey_wipe. */
struct ss_keyhold {
	size_t len;
	uint8_t key[SS_KEY_MAX];
	uint8_t secret[SS_IDKEY_SECRET_SIZE];
};
#define HOLD_MAP (2u * 4096u)
_Static_assert(sizeof(struct ss_keyhold) <= HOLD_MAP, "ss_keyhold fits its mapping");

static void hold_free(struct ss_keyhold *h)
{
	if (!h)
		return;
	explicit_bzero(h, HOLD_MAP);
	munlock(h, HOLD_MAP);
	munmap(h, HOLD_MAP);
}

int ss_idkey_init(struct ss_idkey *k, const uint8_t *key, size_t len, struct ss_err *err)
{
	memset(k, 0, sizeof(*k));
	if (len < SS_KEY_MIN || len > SS_KEY_MAX)
		return ss_err_set(err, -EINVAL,
				  "a store key must be %d..%d bytes (got %zu); make one with "
				  "`head -c 32 /dev/urandom > store.key`",
				  SS_KEY_MIN, SS_KEY_MAX, len);
	struct ss_keyhold *h = mmap(NULL, HOLD_MAP, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h == MAP_FAILED)
		return ss_err_set(err, -ENOMEM, "cannot map memory for the store key");
	madvise(h, HOLD_MAP, MADV_DONTDUMP);
	(void)mlock(h, HOLD_MAP);
	memcpy(h->key, key, len);
	h->len = len;

	/* HKDF-SHA256 (RFC 5869): extract with a fixed salt, then expand
	 * to the 192 bytes XXH3 takes as its secret. */
	static const uint8_t salt[] = "snapstream";
	uint8_t prk[32], t[32], msg[32 + sizeof(SECRET_LABEL) + 1];
	int rc = hmac256(salt, sizeof(salt) - 1, key, len, prk);
	size_t done = 0, tlen = 0;
	for (uint8_t i = 1; !rc && done < sizeof(h->secret); i++) {
		memcpy(msg, t, tlen);
		memcpy(msg + tlen, SECRET_LABEL, sizeof(SECRET_LABEL) - 1);
		msg[tlen + sizeof(SECRET_LABEL) - 1] = i;
		rc = hmac256(prk, sizeof(prk), msg, tlen + sizeof(SECRET_LABEL), t);
		tlen = sizeof(t);
		size_t n = SS_MIN(sizeof(t), sizeof(h->secret) - done);
		memcpy(h->secret + done, t, n);
		done += n;
	}
	uint8_t chk[32];
	if (!rc)
		rc = hmac256(key, len, (const uint8_t *)CHECK_LABEL, sizeof(CHECK_LABEL) - 1, chk);
	explicit_bzero(prk, sizeof(prk));
	explicit_bzero(t, sizeof(t));
	explicit_bzero(msg, sizeof(msg));
	if (rc) {
		hold_free(h);
		return ss_err_set(err, rc, "deriving the chunk-id secret failed (OpenSSL)");
	}
	memcpy(k->check, chk, sizeof(k->check));
	k->hold = h;
	k->secret = h->secret;
	k->keyed = true;
	return 0;
}

int ss_idkey_derive(const struct ss_idkey *k, const uint8_t store_id[16], uint8_t cipher,
		    struct ss_crypt **out, struct ss_err *err)
{
	*out = NULL;
	if (!k || !k->keyed || !k->hold)
		return ss_err_set(err, -ENOKEY, "no key given");
	return ss_crypt_new(k->hold->key, k->hold->len, store_id, cipher, out, err);
}

int ss_idkey_seal(struct ss_idkey *k, const uint8_t store_id[16], uint8_t cipher,
		  struct ss_err *err)
{
	if (k->crypt) {
		if (!memcmp(ss_crypt_store_id(k->crypt), store_id, 16) &&
		    ss_crypt_cipher(k->crypt) == cipher)
			return 0;
		char a[33], b[33];
		ss_hex(ss_crypt_store_id(k->crypt), 16, a);
		ss_hex(store_id, 16, b);
		return ss_err_set(err, -EXDEV,
				  "this operation's keys are those of store id %s, not of store id %s",
				  a, b);
	}
	struct ss_crypt *c;
	int r = ss_idkey_derive(k, store_id, cipher, &c, err);
	if (r)
		return r;
	k->crypt = c;
	memcpy(k->check, ss_crypt_check(c), 16);
	k->secret = ss_crypt_idsecret(c);
	k->bound = true;
	return 0;
}

void ss_idkey_wipe(struct ss_idkey *k)
{
	ss_crypt_free(k->crypt);
	hold_free(k->hold);
	explicit_bzero(k, sizeof(*k));
}

int ss_idkey_for_manifest(const struct ss_idkey *k, bool manifest_keyed,
			  const uint8_t manifest_check[16], const char *what,
			  const struct ss_idkey **out, struct ss_err *err)
{
	*out = &ss_idkey_plain;
	if (!manifest_keyed)
		return 0;
	char hex[33];
	ss_hex(manifest_check, 16, hex);
	if (!k || !k->keyed)
		return ss_err_set(err, -ENOKEY,
				  "%s uses keyed chunk ids (key check %s): give its store's key "
				  "(--key-file or SNAPSTREAM_KEY_FILE)",
				  what, hex);
	if (memcmp(k->check, manifest_check, 16)) {
		char mine[33];
		ss_hex(k->check, 16, mine);
		return ss_err_set(err, -EKEYREJECTED,
				  "%s was made with another key (key check %s; this key's is %s)",
				  what, hex, mine);
	}
	*out = k;
	return 0;
}

/* The next '\n'-terminated line of p[*off..n) into line (NUL-terminated),
 * or -EBADMSG when there is none or it is too long or not printable. */
static int next_line(const uint8_t *p, size_t n, size_t *off, char *line, size_t cap)
{
	size_t i = *off, j = 0;
	for (; i < n && p[i] != '\n'; i++) {
		if (p[i] < 0x20 || p[i] >= 0x7f || j + 1 >= cap)
			return -EBADMSG;
		line[j++] = (char)p[i];
	}
	if (i >= n)
		return -EBADMSG;
	line[j] = '\0';
	*off = i + 1;
	return 0;
}

/* Exactly the lower-case hex of 16 bytes: one spelling per key check. */
static bool lower_hex16(const char *s, uint8_t out[16])
{
	if (strlen(s) != 32 || strspn(s, "0123456789abcdef") != 32)
		return false;
	return ss_unhex(s, out, 16) == 0;
}

int ss_store_config_parse(const uint8_t *p, size_t n, struct ss_store_config *c,
			  struct ss_err *err)
{
	static const char HEAD[] = "snapstream-store ", KEYED[] = "chunk-ids xxh3-128-keyed ",
			  SEAL[] = "seal ";
	char line[128];
	size_t off = 0;

	memset(c, 0, sizeof(*c));
	/* The version: decimal digits, no sign, no leading zero. */
	const char *v = line + sizeof(HEAD) - 1;
	size_t nd = 0;
	if (n > 4096 || next_line(p, n, &off, line, sizeof(line)) ||
	    strncmp(line, HEAD, sizeof(HEAD) - 1) || !(nd = strspn(v, "0123456789")) ||
	    v[nd] || v[0] == '0' || nd > 9)
		return ss_err_set(err, -EBADMSG, "store config damaged: bad first line");
	unsigned long version = strtoul(v, NULL, 10);
	if (version > 2)
		return ss_err_set(err, -EPROTONOSUPPORT,
				  "store config version %lu was made by a newer snapstream", version);
	c->version = (unsigned)version;
	if (next_line(p, n, &off, line, sizeof(line)))
		return ss_err_set(err, -EBADMSG, "store config damaged: no chunk-ids line");
	if (!strcmp(line, "chunk-ids xxh3-128")) {
		/* plain */
	} else if (!strncmp(line, KEYED, sizeof(KEYED) - 1) &&
		   lower_hex16(line + sizeof(KEYED) - 1, c->check)) {
		c->keyed = true;
	} else {
		return ss_err_set(err, -EBADMSG, "store config damaged: unknown chunk-ids \"%.60s\"",
				  line);
	}
	/* Version 2: sealed (docs/SECURITY.md, "Encryption at rest in keyed
	 * stores"), which only a keyed store is. */
	if (version == 2) {
		char *sp;
		if (!c->keyed || next_line(p, n, &off, line, sizeof(line)) ||
		    strncmp(line, SEAL, sizeof(SEAL) - 1) ||
		    !(sp = strchr(line + sizeof(SEAL) - 1, ' ')))
			return ss_err_set(err, -EBADMSG, "store config damaged: no seal line");
		*sp = '\0';
		c->cipher = ss_cipher_parse(line + sizeof(SEAL) - 1);
		if (!c->cipher || !lower_hex16(sp + 1, c->store_id))
			return ss_err_set(err, -EBADMSG, "store config damaged: bad seal line");
		c->sealed = true;
	}
	if (off != n)
		return ss_err_set(err, -EBADMSG, "store config damaged: trailing data");
	return 0;
}

size_t ss_store_config_format(const struct ss_store_config *c, char *buf, size_t cap)
{
	char hex[33], sid[33];
	int n;
	if (c->sealed) {
		ss_hex(c->check, 16, hex);
		ss_hex(c->store_id, 16, sid);
		n = snprintf(buf, cap, "snapstream-store 2\nchunk-ids xxh3-128-keyed %s\nseal %s %s\n",
			     hex, ss_cipher_name(c->cipher), sid);
	} else if (c->keyed) {
		ss_hex(c->check, 16, hex);
		n = snprintf(buf, cap, "snapstream-store 1\nchunk-ids xxh3-128-keyed %s\n", hex);
	} else {
		n = snprintf(buf, cap, "snapstream-store 1\nchunk-ids xxh3-128\n");
	}
	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

int ss_idkey_check_store(struct ss_idkey *k, const uint8_t *p, size_t n, const char *store,
			 struct ss_store_config *out, struct ss_err *err)
{
	struct ss_store_config c = {.version = 1};
	if (p) {
		int rc = ss_store_config_parse(p, n, &c, err);
		if (rc)
			return rc;
	}
	if (out)
		*out = c;
	bool have = k && k->keyed;
	char hex[33], mine[33];
	ss_hex(c.check, 16, hex);
	if (c.sealed) {
		if (!have)
			return ss_err_set(err, -ENOKEY,
					  "store %s is keyed (key check %s): give its key "
					  "(--key-file or SNAPSTREAM_KEY_FILE)",
					  store, hex);
		int rc = ss_idkey_seal(k, c.store_id, c.cipher, err);
		if (rc)
			return rc;
		if (memcmp(k->check, c.check, 16)) {
			ss_hex(k->check, 16, mine);
			return ss_err_set(err, -EKEYREJECTED,
					  "store %s was made with another key (key check %s; this "
					  "key's is %s)",
					  store, hex, mine);
		}
		return 0;
	}
	if (k && k != &ss_idkey_plain)
		k->bound = true;
	if (!c.keyed && have)
		return ss_err_set(err, -EKEYREJECTED,
				  "store %s uses plain chunk ids, but a key was given (keyed stores "
				  "are made empty, by `snapstream init --key-file`)",
				  store);
	const struct ss_idkey *ids;
	char what[600];
	snprintf(what, sizeof(what), "store %s", store);
	return ss_idkey_for_manifest(k, c.keyed, c.check, what, &ids, err);
}

int ss_key_read(const char *path, uint8_t *buf, size_t cap, size_t *len, char *err,
		size_t errlen)
{
	int r = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	ssize_t n = -1;
	char extra;
	if (fd < 0 || fstat(fd, &sb)) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	} else if (!S_ISREG(sb.st_mode) || (sb.st_mode & S_IROTH)) {
		r = -EPERM;
		snprintf(err, errlen, "%s: must be a regular file that others cannot read (chmod 600)",
			 path);
	} else if ((n = read(fd, buf, SS_MIN(cap, (size_t)SS_KEY_MAX))) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
	} else if (n < SS_KEY_MIN || (n == SS_KEY_MAX && read(fd, &extra, 1) > 0) ||
		   cap < SS_KEY_MAX) {
		r = -EINVAL;
		snprintf(err, errlen,
			 "%s: a key is %d..%d bytes (make one with `head -c 32 /dev/urandom > %s`)",
			 path, SS_KEY_MIN, SS_KEY_MAX, path);
	}
	if (fd >= 0)
		close(fd);
	if (r && n > 0)
		explicit_bzero(buf, (size_t)n);
	*len = r ? 0 : (size_t)n;
	return r;
}
