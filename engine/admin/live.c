/* Which snapshots are live: the one rule gc keeps packs by and check
 * checks by (docs/DESIGN.md, "Garbage collection"), and the refs and
 * local scans it is made of, which ls uses too. */
#include "admin.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REF_MAX (8u << 10)   /* a ref is one URI */

int ss_strvec_add(struct ss_strvec *u, const char *s, size_t len)
{
	if (SS_GROW(u->v, u->cap, u->n + 1, 32))
		return -ENOMEM;
	char *d = strndup(s, len);
	if (!d)
		return -ENOMEM;
	u->v[u->n++] = d;
	return 0;
}

void ss_strvec_free(struct ss_strvec *u)
{
	for (size_t i = 0; i < u->n; i++)
		free(u->v[i]);
	free(u->v);
	memset(u, 0, sizeof(*u));
}

/* Local prefixes: every directory below holding a manifest, so that
 * snapshots whose refs live in another store are listed too. */
static int scan_dir(const char *dir, int depth, int max_depth, struct ss_strvec *out)
{
	char p[PATH_MAX];
	struct stat st;
	if (snprintf(p, sizeof(p), "%s/%s", dir, SS_MANIFEST_KEY) < (int)sizeof(p) &&
	    stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
		char uri[PATH_MAX + 8];
		snprintf(uri, sizeof(uri), "file://%s", dir);
		int r = ss_strvec_add(out, uri, strlen(uri));
		if (r)
			return r;
	}
	if (depth >= max_depth)
		return 0;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	int r = 0;
	while (!r && (de = readdir(d))) {
		if (de->d_name[0] == '.')   /* the store, temporaries, . and .. */
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", strcmp(dir, "/") ? dir : "", de->d_name) >=
		    (int)sizeof(p))
			continue;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			r = scan_dir(p, depth + 1, max_depth, out);
	}
	closedir(d);
	return r;
}

static int collect_ref_key(void *arg, const char *key, uint64_t size)
{
	(void)size;   /* checked after reading: the listing may be stale */
	return ss_strvec_add(arg, key, strlen(key));
}

#define REF_BATCH 256

int ss_read_refs(struct ss_backend *b, struct ss_loop *l, bool strict, char ***uris,
		 char ***keys, size_t *n, uint64_t *requests, struct ss_err *err)
{
	struct ss_strvec k = {0}, u = {0}, kk = {0};
	struct ss_req *reqs = NULL;
	uint8_t *bufs = NULL;
	struct ss_req lr = {.kind = SS_REQ_LIST, .key = "refs/", .on_key = collect_ref_key,
			    .arg = &k, .err = err};
	int r = ss_call(b, l, &lr, requests);
	if (r < 0) {
		ss_err_set(err, r, "cannot list refs/: %s", strerror(-r));
		goto fail;
	}
	r = 0;
	/* GETs in parallel: a store may hold thousands of refs. A GET past the
	 * end returns what exists, so no STAT is needed for the size. */
	reqs = calloc(REF_BATCH, sizeof(*reqs));
	bufs = malloc((size_t)REF_BATCH * REF_MAX);
	if (!reqs || !bufs) {
		r = ss_err_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	for (size_t base = 0; !r && base < k.n; base += REF_BATCH) {
		size_t cnt = SS_MIN(k.n - base, (size_t)REF_BATCH);
		for (size_t i = 0; i < cnt; i++)
			reqs[i] = (struct ss_req){.kind = SS_REQ_GET, .key = k.v[base + i],
						  .len = REF_MAX, .buf = bufs + i * REF_MAX};
		if ((r = ss_call_many(b, l, reqs, cnt, requests))) {
			ss_err_set(err, r, "event loop failed: %s", strerror(-r));
			break;
		}
		for (size_t i = 0; !r && i < cnt; i++) {
			int res = reqs[i].op.res;
			if (res == -ENOENT)
				continue;   /* removed meanwhile */
			/* A torn object (a server that keeps a killed upload) is no
			 * ref either: the same rule as a malformed one below. */
			if (res == -EBADMSG && !strict)
				continue;
			if (res < 0) {
				r = ss_err_set(err, res, "cannot read %s: %s", k.v[base + i],
					       strerror(-res));
				break;
			}
			const char *s = (const char *)bufs + i * REF_MAX;
			size_t len = (size_t)res;
			if (len == 0 || len >= REF_MAX || memchr(s, '\0', len)) {
				if (!strict)
					continue;   /* not a ref this version wrote */
				r = ss_err_set(err, -EBADMSG,
					       "%s is not a ref this version of snapstream "
					       "understands (one snapshot URI); gc deletes nothing "
					       "while a ref cannot be read",
					       k.v[base + i]);
				break;
			}
			if ((r = ss_strvec_add(&u, s, len)) ||
			    (r = ss_strvec_add(&kk, k.v[base + i], strlen(k.v[base + i]))))
				ss_err_set(err, r, "out of memory");
		}
	}
	if (r)
		goto fail;
	free(reqs);
	free(bufs);
	ss_strvec_free(&k);
	*uris = u.v;
	*keys = kk.v;
	*n = u.n;
	return 0;
fail:
	free(reqs);
	free(bufs);
	ss_strvec_free(&k);
	ss_strvec_free(&u);
	ss_strvec_free(&kk);
	return r;
}

void ss_refs_free(char **uris, char **keys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(uris[i]);
		free(keys[i]);
	}
	free(uris);
	free(keys);
}

int ss_scan_manifests(const char *dir, int depth, char ***uris, size_t *n)
{
	struct ss_strvec u = {0};
	int r = scan_dir(dir, 0, depth, &u);
	if (r) {
		ss_strvec_free(&u);
		return r;
	}
	*uris = u.v;
	*n = u.n;
	return 0;
}

/* For a local store named .snapstream: the directory beside it
 * (malloc'd), else NULL. */
static char *sibling_dir(const char *store)
{
	const char *scheme;
	char *path = NULL;
	if (ss_location_parse(store, &scheme, &path, NULL) || strcmp(scheme, "file")) {
		free(path);
		return NULL;
	}
	char *slash = strrchr(path, '/');
	if (!slash || strcmp(slash + 1, ".snapstream") != 0) {
		free(path);
		return NULL;
	}
	if (slash == path)
		slash[1] = '\0';   /* "/.snapstream": the root */
	else
		*slash = '\0';
	return path;
}

int ss_live_read(struct ss_backend *b, struct ss_loop *l, const char *store, bool strict,
		 struct ss_live *out, uint64_t *requests, struct ss_err *err)
{
	memset(out, 0, sizeof(*out));
	int r = ss_read_refs(b, l, strict, &out->uris, &out->keys, &out->n, requests, err);
	if (r)
		return r;
	char *dir = sibling_dir(store);
	char **sib = NULL;
	size_t ns = 0;
	/* Default stores sit beside their snapshots: one level is enough, and
	 * a store in a home directory must not make gc walk all of it. */
	if (dir && (r = ss_scan_manifests(dir, 1, &sib, &ns)))
		ss_err_set(err, r, "cannot scan beside the store: %s", strerror(-r));
	free(dir);
	if (r) {
		ss_live_free(out);
		return r;
	}
	/* Those a ref names are live through it already. */
	out->sib = sib;
	for (size_t i = 0; i < ns; i++) {
		bool known = false;
		for (size_t k = 0; !known && k < out->n; k++)
			known = strcmp(sib[i], out->uris[k]) == 0;
		if (known)
			free(sib[i]);
		else
			sib[out->ns++] = sib[i];
	}
	return 0;
}

void ss_live_free(struct ss_live *lv)
{
	ss_refs_free(lv->uris, lv->keys, lv->n);
	for (size_t i = 0; i < lv->ns; i++)
		free(lv->sib[i]);
	free(lv->sib);
	memset(lv, 0, sizeof(*lv));
}
