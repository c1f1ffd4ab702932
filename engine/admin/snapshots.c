/* Inspecting and removing snapshots: info, ls, rm, and the read-only
 * helpers they share with verify, cat and gc.
 *
 * Read-only commands must not change anything, so local locations are
 * checked with stat before a backend is opened on them (the local backend
 * creates its root directory, which a push wants and `info` does not). */
#include "admin.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REF_MAX (8u << 10)   /* a ref is one URI */

/* ---------------------------------------------------------------- helpers */

/* ---------------------------------------------------------------- info */

static char *xstrdup(const char *s, bool *oom)
{
	char *d = strdup(s ? s : "");
	if (!d)
		*oom = true;
	return d;
}

static void info_clear(struct ss_snapshot_info *in)
{
	if (!in)
		return;
	free(in->uri);
	free(in->store);
	free(in->tool_version);
	for (size_t i = 0; i < in->nlabels; i++) {
		free((char *)in->labels[i].key);
		free((char *)in->labels[i].value);
	}
	free(in->labels);
	for (size_t i = 0; i < in->nparents; i++)
		free(in->parents[i]);
	free(in->parents);
	for (size_t i = 0; i < in->nfiles_v; i++)
		free(in->files_v[i].name);
	free(in->files_v);
	free(in->error);
	memset(in, 0, sizeof(*in));
}

void ss_info_free(struct ss_snapshot_info *info)
{
	info_clear(info);
	free(info);
}

static int info_fill(const struct ss_manifest *m, const char *uri, uint64_t mlen,
		     bool with_files, struct ss_snapshot_info *in)
{
	bool oom = false;
	memset(in, 0, sizeof(*in));
	in->uri = xstrdup(uri, &oom);
	in->store = xstrdup(m->store_uri, &oom);
	in->tool_version = xstrdup(m->tool_version, &oom);
	in->format_major = m->format_major;
	in->format_minor = m->format_minor;
	in->created_unix_ns = m->created_unix_ns;
	in->root_is_dir = m->root_is_dir;
	in->chunk_min = m->chunk_min;
	in->chunk_avg = m->chunk_avg;
	in->chunk_max = m->chunk_max;
	in->chunk_seg = m->chunk_seg;
	in->frame_max = m->frame_max;
	in->keyed_ids = m->keyed_ids;
	if (m->keyed_ids)
		ss_hex(m->key_check, sizeof(m->key_check), in->key_check);
	in->files = m->nfiles;
	in->chunks = m->nchunks;
	in->packs = m->npacks;
	in->manifest_bytes = mlen;
	/* The manifest's own stats say what the push saw; sizes and extents
	 * are recounted from the file table, which is what a pull restores. */
	for (size_t i = 0; i < m->nfiles; i++) {
		in->logical_bytes += m->files[i].size;
		for (size_t e = 0; e < m->files[i].next; e++)
			if (m->files[i].ext[e].chunk)
				in->extents++;
	}
	in->zero_bytes = m->stats.zero_bytes;
	in->chunk_bytes = m->stats.chunk_bytes;
	in->unique_bytes = m->stats.unique_bytes;
	in->stored_bytes = ss_manifest_stored_bytes(m);
	in->new_raw_bytes = m->stats.new_raw_bytes;
	in->new_stored_bytes = m->stats.new_stored_bytes;
	in->dedup_bytes = in->chunk_bytes > in->new_raw_bytes ? in->chunk_bytes - in->new_raw_bytes
							      : 0;
	if (m->nlabels && (in->labels = calloc(m->nlabels, sizeof(*in->labels)))) {
		for (size_t i = 0; i < m->nlabels; i++) {
			in->labels[i].key = xstrdup(m->labels[i].key, &oom);
			in->labels[i].value = xstrdup(m->labels[i].value, &oom);
			in->nlabels++;
		}
	} else if (m->nlabels) {
		oom = true;
	}
	if (m->nparents && (in->parents = calloc(m->nparents, sizeof(*in->parents)))) {
		for (size_t i = 0; i < m->nparents; i++)
			in->parents[in->nparents++] = xstrdup(m->parents[i], &oom);
	} else if (m->nparents) {
		oom = true;
	}
	if (with_files && m->nfiles) {
		in->files_v = calloc(m->nfiles, sizeof(*in->files_v));
		if (!in->files_v)
			oom = true;
		for (size_t i = 0; in->files_v && i < m->nfiles; i++) {
			const struct ss_mfile *f = &m->files[i];
			struct ss_file_info *fi = &in->files_v[in->nfiles_v++];
			fi->name = xstrdup(f->name, &oom);
			fi->size = f->size;
			fi->mode = f->mode;
			fi->mtime_ns = f->mtime_ns;
			ss_hex(f->digest, 16, fi->digest);
			for (size_t e = 0; e < f->next; e++) {
				if (f->ext[e].chunk)
					fi->extents++;
				else
					fi->zero_bytes += f->ext[e].len;
			}
		}
	}
	if (oom) {
		info_clear(in);
		return -ENOMEM;
	}
	return 0;
}

static void copy_err(const struct ss_err *e, int r, char *buf, size_t len)
{
	if (r && buf && len)
		snprintf(buf, len, "%s", e->msg[0] ? e->msg : strerror(-r));
}

int ss_info(const char *snapshot, const struct ss_config *config, struct ss_snapshot_info **out,
	    char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cfg cfg;
	struct ss_loop *l = NULL;
	struct ss_manifest *m = NULL;
	struct ss_snaploc loc = {0};
	struct ss_snapshot_info *in = NULL;
	uint64_t mlen = 0;
	int r;
	if (!snapshot || !out) {
		r = ss_err_set(&err, -EINVAL, "info needs a snapshot");
		goto out;
	}
	if ((r = ss_cfg_resolve(config, &cfg, &err)) || (r = ss_snaploc_parse(snapshot, &loc, &err)))
		goto out;
	if ((r = ss_loop_new(64, &l))) {
		ss_err_set(&err, r, "cannot set up io_uring: %s", strerror(-r));
		goto out;
	}
	if ((r = ss_manifest_load(snapshot, l, &cfg, &m, &mlen, NULL, &err)))
		goto out;
	if (!(in = calloc(1, sizeof(*in))) || info_fill(m, loc.canonical, mlen, true, in)) {
		free(in);
		in = NULL;
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	*out = in;
out:
	ss_manifest_free(m);
	ss_loop_free(l);
	ss_snaploc_free(&loc);
	copy_err(&err, r, errbuf, errlen);
	return r;
}

/* ---------------------------------------------------------------- ls */

struct urilist {
	char **v;
	size_t n, cap;
};

static int urilist_add(struct urilist *u, const char *s, size_t len)
{
	if (u->n == u->cap) {
		size_t ncap = u->cap ? u->cap * 2 : 32;
		void *a = realloc(u->v, sizeof(*u->v) * ncap);
		if (!a)
			return -ENOMEM;
		u->v = a;
		u->cap = ncap;
	}
	char *d = strndup(s, len);
	if (!d)
		return -ENOMEM;
	u->v[u->n++] = d;
	return 0;
}

static void urilist_free(struct urilist *u)
{
	for (size_t i = 0; i < u->n; i++)
		free(u->v[i]);
	free(u->v);
	memset(u, 0, sizeof(*u));
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Which URIs ls shows: the prefix itself, what lies below it as a
 * directory, or (prefixes that are no directory) names starting with it. */
struct matcher {
	char canon[PATH_MAX + 16];
	bool dir;
};

static bool matches(const struct matcher *mt, const char *uri)
{
	size_t n = strlen(mt->canon);
	if (strncmp(uri, mt->canon, n) != 0)
		return false;
	return !mt->dir || uri[n] == '\0' || uri[n] == '/' || (n && mt->canon[n - 1] == '/');
}

/* Local prefixes: every directory below holding a manifest, so that
 * snapshots whose refs live in another store are listed too. */
static int scan_dir(const char *dir, int depth, int max_depth, struct urilist *out)
{
	char p[PATH_MAX];
	struct stat st;
	if (snprintf(p, sizeof(p), "%s/%s", dir, SS_MANIFEST_KEY) < (int)sizeof(p) &&
	    stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
		char uri[PATH_MAX + 8];
		snprintf(uri, sizeof(uri), "file://%s", dir);
		int r = urilist_add(out, uri, strlen(uri));
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
	return urilist_add(arg, key, strlen(key));
}

#define REF_BATCH 256

int ss_read_refs(struct ss_backend *b, struct ss_loop *l, bool strict, char ***uris,
		 char ***keys, size_t *n, uint64_t *requests, struct ss_err *err)
{
	struct urilist k = {0}, u = {0}, kk = {0};
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
			if ((r = urilist_add(&u, s, len)) ||
			    (r = urilist_add(&kk, k.v[base + i], strlen(k.v[base + i]))))
				ss_err_set(err, r, "out of memory");
		}
	}
	if (r)
		goto fail;
	free(reqs);
	free(bufs);
	urilist_free(&k);
	*uris = u.v;
	*keys = kk.v;
	*n = u.n;
	return 0;
fail:
	free(reqs);
	free(bufs);
	urilist_free(&k);
	urilist_free(&u);
	urilist_free(&kk);
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
	struct urilist u = {0};
	int r = scan_dir(dir, 0, depth, &u);
	if (r) {
		urilist_free(&u);
		return r;
	}
	*uris = u.v;
	*n = u.n;
	return 0;
}

void ss_ls_free(struct ss_snapshot_info *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		info_clear(&v[i]);
	free(v);
}

int ss_ls(const struct ss_ls_opts *opts, const struct ss_config *config,
	  struct ss_snapshot_info **out, size_t *nout, char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cfg cfg;
	struct ss_loop *l = NULL;
	struct ss_backend *sb = NULL;
	struct urilist found = {0};
	struct ss_snapshot_info *v = NULL;
	size_t nv = 0;
	char *path = NULL;
	char **ruris = NULL, **rkeys = NULL;
	size_t nrefs = 0;
	struct ss_snaploc loc = {0};
	struct matcher mt = {0};
	int r;
	if (!opts || !opts->prefix || !out || !nout) {
		r = ss_err_set(&err, -EINVAL, "ls needs a prefix");
		goto out;
	}
	if ((r = ss_cfg_resolve(config, &cfg, &err)))
		goto out;
	const char *scheme;
	if ((r = ss_location_parse(opts->prefix, &scheme, &path, &err)))
		goto out;
	bool local = strcmp(scheme, "file") == 0;
	struct stat st;
	bool is_dir = local ? stat(path, &st) == 0 && S_ISDIR(st.st_mode) : false;
	snprintf(mt.canon, sizeof(mt.canon), "%s://%s", scheme, path);
	/* A bucket, or an object prefix ending in '/', is a directory; other
	 * object prefixes and local non-directories match names. */
	size_t pl = strlen(opts->prefix);
	mt.dir = local ? is_dir : (!strchr(path, '/') || opts->prefix[pl - 1] == '/');
	if (!local && mt.dir && !strchr(path, '/'))
		strcat(mt.canon, "/");
	/* The default store of snapshots below the prefix. */
	char probe[PATH_MAX + 32];
	snprintf(probe, sizeof(probe), "%s%s", opts->prefix,
		 mt.dir ? (opts->prefix[pl - 1] == '/' ? "x" : "/x") : "");
	if (!opts->store && (r = ss_snaploc_parse(probe, &loc, &err)))
		goto out;
	const char *store = opts->store ? opts->store : loc.default_store;
	if ((r = ss_loop_new(64, &l))) {
		ss_err_set(&err, r, "cannot set up io_uring: %s", strerror(-r));
		goto out;
	}
	r = ss_store_backend_open(store, l, &cfg, &sb, &err);
	if (r == -ENOENT && !opts->store) {
		ss_err_clear(&err);   /* no store yet: only the scan can find anything */
		r = 0;
	} else if (r) {
		goto out;
	} else if ((r = ss_read_refs(sb, l, false, &ruris, &rkeys, &nrefs, NULL, &err))) {
		goto out;
	}
	for (size_t i = 0; !r && i < nrefs; i++)
		if (matches(&mt, ruris[i]))
			r = urilist_add(&found, ruris[i], strlen(ruris[i]));
	if (!r && local) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%s", path);
		if (!is_dir) {
			char *slash = strrchr(dir, '/');
			if (slash && slash != dir)
				*slash = '\0';
			else
				snprintf(dir, sizeof(dir), "/");
		}
		struct urilist scanned = {0};
		/* Below a directory, a few levels; beside a name prefix, one. */
		r = scan_dir(dir, 0, is_dir ? 6 : 1, &scanned);
		for (size_t i = 0; !r && i < scanned.n; i++)
			if (matches(&mt, scanned.v[i]))
				r = urilist_add(&found, scanned.v[i], strlen(scanned.v[i]));
		urilist_free(&scanned);
	}
	if (r) {
		ss_err_set(&err, r, "out of memory");
		goto out;
	}
	if (found.n)
		qsort(found.v, found.n, sizeof(*found.v), cmp_str);
	v = calloc(found.n ? found.n : 1, sizeof(*v));
	if (!v) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < found.n; i++) {
		if (i && strcmp(found.v[i], found.v[i - 1]) == 0)
			continue;
		struct ss_manifest *m = NULL;
		struct ss_err me = {0};
		uint64_t mlen = 0;
		int mr = ss_manifest_load(found.v[i], l, &cfg, &m, &mlen, NULL, &me);
		if (mr == -ENOENT)
			continue;   /* a ref whose snapshot is gone */
		struct ss_snapshot_info *in = &v[nv];
		if (mr) {
			in->uri = strdup(found.v[i]);
			in->error = strdup(me.msg[0] ? me.msg : strerror(-mr));
			in->error_code = mr;
			nv++;
			if (!in->uri || !in->error) {
				r = ss_err_set(&err, -ENOMEM, "out of memory");
				goto out;
			}
			continue;
		}
		r = info_fill(m, found.v[i], mlen, false, in);
		ss_manifest_free(m);
		if (r) {
			ss_err_set(&err, r, "out of memory");
			goto out;
		}
		nv++;
	}
	*out = v;
	*nout = nv;
	v = NULL;
out:
	ss_ls_free(v, nv);
	ss_refs_free(ruris, rkeys, nrefs);
	urilist_free(&found);
	ss_backend_free(sb);
	ss_loop_free(l);
	ss_snaploc_free(&loc);
	free(path);
	copy_err(&err, r, errbuf, errlen);
	return r;
}

/* ---------------------------------------------------------------- rm */

/* (Re)write the record of a removal, timed now. */
static int put_tombstone(struct ss_backend *sb, struct ss_loop *l, const struct ss_manifest *m,
			 char *canonical, const char *key, struct ss_err *err)
{
	struct ss_tombstone t = {.snapshot = canonical, .removed_ns = ss_wall_ns(),
				 .packs = m->pack_ids, .npacks = m->npacks};
	uint8_t *buf = NULL;
	size_t len = 0;
	int r = ss_tombstone_encode(&t, &buf, &len);
	if (!r)
		r = ss_put_object(sb, l, key, buf, len, 0, NULL, err);
	free(buf);
	return r;
}

int ss_rm(const struct ss_rm_opts *opts, const struct ss_config *config, char *errbuf,
	  size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cfg cfg;
	struct ss_loop *l = NULL;
	struct ss_manifest *m = NULL;
	struct ss_backend *snapb = NULL, *sb = NULL;
	struct ss_snaploc loc = {0};
	int r;
	if (!opts || !opts->snapshot) {
		r = ss_err_set(&err, -EINVAL, "rm needs a snapshot");
		goto out;
	}
	if ((r = ss_cfg_resolve(config, &cfg, &err)) ||
	    (r = ss_snaploc_parse(opts->snapshot, &loc, &err)))
		goto out;
	if ((r = ss_loop_new(64, &l))) {
		ss_err_set(&err, r, "cannot set up io_uring: %s", strerror(-r));
		goto out;
	}
	struct ss_err merr = {0};
	int mr = ss_manifest_load(opts->snapshot, l, &cfg, &m, NULL, NULL, &merr);
	/* An unreadable manifest is still removed: it is no one's parent. */
	bool have_manifest = mr != -ENOENT;
	if (mr && mr != -ENOENT && mr != -EBADMSG && mr != -EPROTONOSUPPORT) {
		r = ss_err_set(&err, mr, "%s", merr.msg);
		goto out;
	}
	char refkey[64];
	ss_ref_key(loc.canonical, refkey);
	const char *store = ss_store_for(opts->store, m, &loc);
	r = ss_store_backend_open(store, l, &cfg, &sb, &err);
	if (r == -ENOENT && have_manifest) {
		ss_err_clear(&err);   /* no store: only the manifest to remove */
		r = 0;
	} else if (r == -ENOENT) {
		ss_err_clear(&err);
		r = ss_err_set(&err, -ENOENT, "no snapshot at %s", opts->snapshot);
		goto out;
	} else if (r) {
		goto out;
	}
	if (!have_manifest) {
		/* Gone already (deleted by hand): drop its ref if it has one. */
		struct ss_req d = {.kind = SS_REQ_DELETE, .key = refkey, .err = &err};
		struct ss_req s = {.kind = SS_REQ_STAT, .key = refkey, .err = &err};
		r = ss_call(sb, l, &s, NULL);
		if (r == 0)
			r = ss_call(sb, l, &d, NULL);
		if (r == -ENOENT) {
			ss_err_clear(&err);
			r = ss_err_set(&err, -ENOENT, "no snapshot at %s", opts->snapshot);
		} else if (r) {
			ss_err_set(&err, r, "cannot remove %s/%s: %s", store, refkey, strerror(-r));
		}
		goto out;
	}
	char tkey[64] = "";
	if (sb && m && m->npacks) {
		/* First the record gc honours for the grace period: a push using
		 * this snapshot as its parent may still refer to these packs. */
		uint8_t id[16];
		char hex[33];
		if ((r = ss_random_id(id))) {
			ss_err_set(&err, r, "cannot record the removal: %s", strerror(-r));
			goto out;
		}
		ss_hex(id, 16, hex);
		snprintf(tkey, sizeof(tkey), SS_GC_REMOVED_PREFIX "%s", hex);
		if ((r = put_tombstone(sb, l, m, loc.canonical, tkey, &err))) {
			ss_err_set(&err, r, "cannot record the removal in %s: %s", store, strerror(-r));
			goto out;
		}
	}
	if ((r = ss_backend_open(loc.backend_uri, l, &cfg.bopts, &snapb, &err)))
		goto out;
	struct ss_req dm = {.kind = SS_REQ_DELETE, .key = loc.key, .err = &err};
	r = ss_call(snapb, l, &dm, NULL);
	if (r && r != -ENOENT) {
		ss_err_set(&err, r, "cannot delete the manifest of %s: %s", opts->snapshot,
			   strerror(-r));
		goto out;
	}
	ss_err_clear(&err);
	/* Again, timed after the manifest went: a push may have read it until
	 * then, and the grace period counts from its last chance. */
	if (tkey[0])
		put_tombstone(sb, l, m, loc.canonical, tkey, NULL);
	{
		/* A local snapshot is a directory holding only its manifest; object
		 * stores have no directories to leave behind. */
		const char *scheme;
		char *path = NULL;
		if (ss_location_parse(opts->snapshot, &scheme, &path, NULL) == 0 &&
		    strcmp(scheme, "file") == 0)
			rmdir(path);
		free(path);
	}
	r = 0;
	if (sb) {
		struct ss_req dr = {.kind = SS_REQ_DELETE, .key = refkey, .err = &err};
		r = ss_call(sb, l, &dr, NULL);
		if (r == -ENOENT) {
			ss_err_clear(&err);
			r = 0;
		} else if (r) {
			ss_err_set(&err, r, "removed %s but not its ref %s/%s: %s", opts->snapshot,
				   store, refkey, strerror(-r));
		}
	}
out:
	ss_manifest_free(m);
	ss_backend_free(snapb);
	ss_backend_free(sb);
	ss_loop_free(l);
	ss_snaploc_free(&loc);
	copy_err(&err, r, errbuf, errlen);
	return r;
}
