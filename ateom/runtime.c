/* runtime.c — runsc binaries by digest: in the store and in the local cache
 * (see runtime.h). */
#include "runtime.h"

#include "snapstream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Distinct binaries remembered; a worker sees one or two in its life, so
 * a small table that forgets the oldest is plenty. */
#define RT_SLOTS 8

struct ident {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct rt {
	char *work_dir, *store;
	const uint8_t *key;
	size_t key_len;
	const char *const *env;
	/* rt_digest's answers, by path and file identity. */
	struct {
		char path[PATH_MAX];
		struct ident id;
		char hex[RT_SHA256_HEX + 1];
	} dig[RT_SLOTS];
	unsigned dig_next;
	/* (store, digest) pairs the store is known to hold. */
	struct {
		char store[PATH_MAX];
		char hex[RT_SHA256_HEX + 1];
	} kept[RT_SLOTS];
	unsigned kept_next;
};

struct rt *rt_new(const struct rt_config *cfg)
{
	struct rt *rt = calloc(1, sizeof(*rt));
	if (!rt)
		return NULL;
	rt->work_dir = strdup(cfg->work_dir);
	rt->store = cfg->store ? strdup(cfg->store) : NULL;
	rt->key = cfg->key;
	rt->key_len = cfg->key_len;
	rt->env = cfg->env;
	if (!rt->work_dir || (cfg->store && !rt->store)) {
		rt_free(rt);
		errno = ENOMEM;
		return NULL;
	}
	return rt;
}

void rt_free(struct rt *rt)
{
	if (!rt)
		return;
	free(rt->work_dir);
	free(rt->store);
	free(rt);
}

bool rt_digest_ok(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	return n == RT_SHA256_HEX;
}

static struct ident ident_of(const struct stat *st)
{
	return (struct ident){st->st_dev, st->st_ino, st->st_size, st->st_mtim};
}

static bool ident_eq(const struct ident *a, const struct ident *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* SHA-256 of what fd holds from its start, as hex. Returns 0 or -errno. */
static int hash_fd(int fd, char hex[RT_SHA256_HEX + 1])
{
	static const char digits[] = "0123456789abcdef";
	enum { BUF = 1 << 20 };
	unsigned char md[32];
	unsigned int mdlen = 0;
	int r = -ENOMEM;
	char *buf = malloc(BUF);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!buf || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		goto out;
	for (off_t off = 0;;) {
		ssize_t n = pread(fd, buf, BUF, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0)
			break;
		if (!EVP_DigestUpdate(ctx, buf, (size_t)n))
			goto out;
		off += n;
	}
	if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != sizeof(md))
		goto out;
	for (size_t i = 0; i < sizeof(md); i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[RT_SHA256_HEX] = '\0';
	r = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return r;
}

/* Open the regular file path names (following symlinks: runsc is often
 * one) for reading. Returns the fd or -errno, *st filled. */
static int open_file(const char *path, struct stat *st)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		int e = S_ISREG(st->st_mode) ? errno : EINVAL;
		close(fd);
		return -e;
	}
	return fd;
}

static void remember(struct rt *rt, const char *path, const struct stat *st, const char *hex)
{
	if (strlen(path) >= sizeof(rt->dig[0].path))
		return;
	unsigned slot = rt->dig_next++ % RT_SLOTS;
	snprintf(rt->dig[slot].path, sizeof(rt->dig[slot].path), "%s", path);
	rt->dig[slot].id = ident_of(st);
	memcpy(rt->dig[slot].hex, hex, RT_SHA256_HEX + 1);
}

/* rt_digest on an open file: the remembered answer for (path, identity),
 * else hash it and remember. */
static int digest_fd(struct rt *rt, const char *path, int fd, const struct stat *st,
		     char hex[RT_SHA256_HEX + 1])
{
	struct ident id = ident_of(st);
	for (unsigned i = 0; i < RT_SLOTS; i++)
		if (rt->dig[i].hex[0] && !strcmp(rt->dig[i].path, path) &&
		    ident_eq(&rt->dig[i].id, &id)) {
			memcpy(hex, rt->dig[i].hex, RT_SHA256_HEX + 1);
			return 0;
		}
	int r = hash_fd(fd, hex);
	if (r == 0)
		remember(rt, path, st, hex);
	return r;
}

int rt_digest(struct rt *rt, const char *path, char hex[RT_SHA256_HEX + 1], char *err,
	      size_t errlen)
{
	struct stat st;
	int fd = open_file(path, &st);
	if (fd < 0) {
		snprintf(err, errlen, "cannot read runsc binary %s: %s", path, strerror(-fd));
		return fd;
	}
	int r = digest_fd(rt, path, fd, &st, hex);
	close(fd);
	if (r < 0)
		snprintf(err, errlen, "cannot hash runsc binary %s: %s", path, strerror(-r));
	return r;
}

/* The store that holds snapshot_uri's chunks: --store, else the engine's
 * default (docs/DESIGN.md, "Store layout"): <bucket>/.snapstream for
 * s3:// and gs://, <parent directory>/.snapstream otherwise. */
static int store_of(const struct rt *rt, const char *uri, char *buf, size_t len)
{
	if (rt->store)
		return snprintf(buf, len, "%s", rt->store) < (int)len ? 0 : -ENAMETOOLONG;
	size_t n = strlen(uri);
	while (n > 1 && uri[n - 1] == '/')
		n--;
	const char *sep = strstr(uri, "://");
	if (sep && (!strncmp(uri, "s3://", 5) || !strncmp(uri, "gs://", 5))) {
		const char *bucket = sep + 3;
		size_t blen = strcspn(bucket, "/");
		return snprintf(buf, len, "%.*s/.snapstream", (int)(bucket - uri + blen), uri) <
			       (int)len ? 0 : -ENAMETOOLONG;
	}
	const char *path = sep ? sep + 3 : uri;
	const char *slash = NULL;
	for (const char *p = path; p < uri + n; p++)
		if (*p == '/')
			slash = p;
	if (!slash)
		return -EINVAL;
	/* "/snap" -> "/.snapstream"; "/a/snap" -> "/a/.snapstream" */
	return snprintf(buf, len, "%.*s/.snapstream", (int)(slash - uri), uri) < (int)len ?
		       0 : -ENAMETOOLONG;
}

/* <store>/runsc/sha256-<hex>: the binary's snapshot. */
static int object_of(const struct rt *rt, const char *hex, const char *snapshot_uri,
		     char *store, size_t slen, char *obj, size_t olen)
{
	int r = store_of(rt, snapshot_uri, store, slen);
	if (r < 0)
		return r;
	return snprintf(obj, olen, "%s/runsc/sha256-%s", store, hex) < (int)olen ? 0
										: -ENAMETOOLONG;
}

static struct ss_config config_of(const struct rt *rt)
{
	/* What is lost in a crash is fetched again: every cached binary is
	 * hashed before its first use by a server (rt_fetch). */
	return (struct ss_config){.size = sizeof(struct ss_config), .env = rt->env,
				  .key = rt->key_len ? rt->key : NULL, .key_len = rt->key_len};
}

int rt_keep(struct rt *rt, const char *path, const char *hex, const char *version,
	    const char *snapshot_uri, char *err, size_t errlen)
{
	char store[PATH_MAX], obj[PATH_MAX + 96];
	int r = object_of(rt, hex, snapshot_uri, store, sizeof(store), obj, sizeof(obj));
	if (r < 0) {
		snprintf(err, errlen, "no store for the runsc binary of %s: %s", snapshot_uri,
			 strerror(-r));
		return r;
	}
	for (unsigned i = 0; i < RT_SLOTS; i++)
		if (!strcmp(rt->kept[i].hex, hex) && !strcmp(rt->kept[i].store, store))
			return 0;

	struct ss_config cfg = config_of(rt);
	struct ss_snapshot_info *info = NULL;
	char e[512] = "";
	r = ss_info(obj, store, &cfg, &info, e, sizeof(e));
	ss_info_free(info);
	if (r == -ENOENT) {
		/* Pushed from the descriptor that was hashed, so that what is
		 * stored under the digest's name is what was hashed, even if
		 * the path is replaced meanwhile. */
		struct stat st;
		int fd = open_file(path, &st);
		char now[RT_SHA256_HEX + 1];
		if (fd < 0) {
			snprintf(err, errlen, "cannot read runsc binary %s: %s", path, strerror(-fd));
			return fd;
		}
		r = digest_fd(rt, path, fd, &st, now);
		if (r == 0 && strcmp(now, hex))
			r = -ESTALE;
		if (r < 0) {
			close(fd);
			snprintf(err, errlen, "runsc binary %s changed while it was stored: %s", path,
				 strerror(-r));
			return r;
		}
		const struct ss_label_kv labels[] = {{"runsc.sha256", hex}, {"runsc.version", version}};
		struct ss_push_opts po = {.size = sizeof(po), .snapshot = obj, .store = store,
					  .labels = labels, .nlabels = 2};
		struct ss_stats st2 = SS_STATS_INIT;
		r = ss_push_fd(&po, fd, "runsc", &cfg, &st2, e, sizeof(e));
		close(fd);
		if (r == -EEXIST)   /* another server stored it meanwhile */
			r = 0;
	}
	if (r < 0) {
		snprintf(err, errlen, "storing runsc binary %s as %s failed: %s", path, obj, e);
		return r;
	}
	unsigned slot = rt->kept_next++ % RT_SLOTS;
	snprintf(rt->kept[slot].store, sizeof(rt->kept[slot].store), "%s", store);
	memcpy(rt->kept[slot].hex, hex, RT_SHA256_HEX + 1);
	return 0;
}

/* Is the file at path a copy of hex? (hashed unless rt_digest saw this
 * very file before). */
static bool cached_ok(struct rt *rt, const char *path, const char *hex)
{
	struct stat st;
	char got[RT_SHA256_HEX + 1];
	int fd = open_file(path, &st);
	if (fd < 0)
		return false;
	bool ok = (st.st_mode & 0777) == 0755 && digest_fd(rt, path, fd, &st, got) == 0 &&
		  !strcmp(got, hex);
	close(fd);
	return ok;
}

int rt_fetch(struct rt *rt, const char *hex, const char *snapshot_uri, char *path,
	     size_t pathlen, char *err, size_t errlen)
{
	char dir[PATH_MAX], final[PATH_MAX], tmp[PATH_MAX], store[PATH_MAX], obj[PATH_MAX + 96];
	int r;
	if (!rt_digest_ok(hex)) {
		snprintf(err, errlen, "'%.80s' is not a SHA-256 digest", hex);
		return -EINVAL;
	}
	if (snprintf(dir, sizeof(dir), "%s/runsc", rt->work_dir) >= (int)sizeof(dir) ||
	    snprintf(final, sizeof(final), "%s/%s", dir, hex) >= (int)sizeof(final) ||
	    snprintf(tmp, sizeof(tmp), "%s/.fetch-%s-%d", dir, hex, (int)getpid()) >=
		    (int)sizeof(tmp) ||
	    strlen(final) >= pathlen) {
		snprintf(err, errlen, "work dir path too long for the runsc cache");
		return -ENAMETOOLONG;
	}
	if (cached_ok(rt, final, hex))
		goto done;
	if ((r = object_of(rt, hex, snapshot_uri, store, sizeof(store), obj, sizeof(obj))) < 0) {
		snprintf(err, errlen, "no store for the runsc binary of %s: %s", snapshot_uri,
			 strerror(-r));
		return r;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	unlink(tmp);
	struct ss_config cfg = config_of(rt);
	cfg.no_fsync = true;
	struct ss_pull_opts po = {.size = sizeof(po), .snapshot = obj, .dest = tmp, .store = store,
				  .force = true};
	struct ss_stats st = SS_STATS_INIT;
	char e[512] = "";
	r = ss_pull(&po, &cfg, &st, e, sizeof(e));
	if (r < 0) {
		unlink(tmp);
		snprintf(err, errlen, "cannot fetch runsc %s from %s: %s", hex, obj, e);
		return r;
	}
	/* The engine verified every chunk against the manifest; the digest
	 * says whether the manifest is the binary the checkpoint names. */
	struct stat sb;
	char got[RT_SHA256_HEX + 1] = "";
	int fd = open_file(tmp, &sb);
	r = fd < 0 ? fd : hash_fd(fd, got);
	if (r == 0 && strcmp(got, hex))
		r = -EBADMSG;
	if (r == 0 && fchmod(fd, 0755) < 0)
		r = -errno;
	if (r == 0 && fstat(fd, &sb) < 0)
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r == 0 && rename(tmp, final) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		if (r == -EBADMSG)
			snprintf(err, errlen, "runsc fetched from %s has SHA-256 %s, not %s: not used",
				 obj, got, hex);
		else
			snprintf(err, errlen, "cannot keep runsc %s in %s: %s", hex, dir, strerror(-r));
		return r;
	}
	/* Hashed just now: the next restore with it need not (rename keeps
	 * the identity). */
	remember(rt, final, &sb, hex);
done:
	snprintf(path, pathlen, "%s", final);
	return 0;
}
