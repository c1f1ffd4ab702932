/* Inspecting and removing snapshots: info, ls, rm.
 *
 * Read-only commands must not change anything, so local locations are
 * checked with stat before a backend is opened on them
 * (ss_store_backend_open: the local backend creates its root directory,
 * which a push wants and `info` does not). */
#include "admin.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What info and rm begin with: the configuration, the snapshot's location
 * and a loop. */
static int begin(const struct ss_config_in *config, const char *snapshot, struct ss_cfg *cfg,
		 struct ss_snaploc *loc, struct ss_loop **l, struct ss_err *err)
{
	int r;
	if ((r = ss_cfg_resolve(config, cfg, err)) || (r = ss_snaploc_parse(snapshot, loc, err)))
		return r;
	return ss_loop_open(64, l, err);
}

/* ---------------------------------------------------------------- info */

int ss_info_impl(const char *snapshot, const char *store, const struct ss_config_in *config,
		 struct ss_snapshot_info **out, char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cfg cfg = {0};
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
	if ((r = begin(config, snapshot, &cfg, &loc, &l, &err)))
		goto out;
	const char *used;
	if ((r = ss_manifest_load_ex(snapshot, l, &cfg, SS_MLOAD_HEADER, &m, &mlen, NULL, &err)) ||
	    (r = ss_store_for(store, m, &loc, snapshot, &used, &err)))
		goto out;
	if (!(in = calloc(1, sizeof(*in))) || ss_info_fill(m, loc.canonical, mlen, true, in)) {
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
	ss_cfg_wipe(&cfg);
	return ss_err_out(&err, r, errbuf, errlen);
}

/* ---------------------------------------------------------------- ls */

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

void ss_ls_free_impl(struct ss_snapshot_info *v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		ss_info_clear(&v[i]);
	free(v);
}

int ss_ls_impl(const struct ss_ls_opts *opts, const struct ss_config_in *config,
	  struct ss_snapshot_info **out, size_t *nout, char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cfg cfg = {0};
	struct ss_loop *l = NULL;
	struct ss_backend *sb = NULL;
	struct ss_strvec found = {0};
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
	if ((r = ss_loop_open(64, &l, &err)))
		goto out;
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
			r = ss_strvec_add(&found, ruris[i], strlen(ruris[i]));
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
		struct ss_strvec scanned = {0};
		/* Below a directory, a few levels; beside a name prefix, one. */
		r = ss_scan_manifests(dir, is_dir ? 6 : 1, &scanned.v, &scanned.n);
		for (size_t i = 0; !r && i < scanned.n; i++)
			if (matches(&mt, scanned.v[i]))
				r = ss_strvec_add(&found, scanned.v[i], strlen(scanned.v[i]));
		ss_strvec_free(&scanned);
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
		int mr = ss_manifest_load_ex(found.v[i], l, &cfg, SS_MLOAD_HEADER, &m, &mlen, NULL,
					     &me);
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
		r = ss_info_fill(m, found.v[i], mlen, false, in);
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
	ss_ls_free_impl(v, nv);
	ss_refs_free(ruris, rkeys, nrefs);
	ss_strvec_free(&found);
	ss_backend_free(sb);
	ss_loop_free(l);
	ss_snaploc_free(&loc);
	free(path);
	ss_cfg_wipe(&cfg);
	return ss_err_out(&err, r, errbuf, errlen);
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

int ss_rm_impl(const struct ss_rm_opts *opts, const struct ss_config_in *config, char *errbuf,
	  size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cfg cfg = {0};
	struct ss_loop *l = NULL;
	struct ss_manifest *m = NULL;
	struct ss_backend *snapb = NULL, *sb = NULL;
	struct ss_snaploc loc = {0};
	int r;
	if (!opts || !opts->snapshot) {
		r = ss_err_set(&err, -EINVAL, "rm needs a snapshot");
		goto out;
	}
	if ((r = begin(config, opts->snapshot, &cfg, &loc, &l, &err)))
		goto out;
	struct ss_err merr = {0};
	int mr = ss_manifest_load_ex(opts->snapshot, l, &cfg, SS_MLOAD_HEADER, &m, NULL, NULL,
				     &merr);
	/* An unreadable manifest is still removed: it is no one's parent. */
	bool have_manifest = mr != -ENOENT;
	if (mr && mr != -ENOENT && mr != -EBADMSG && mr != -EPROTONOSUPPORT) {
		r = ss_err_set(&err, mr, "%s", merr.msg);
		goto out;
	}
	char refkey[64];
	ss_ref_key(loc.canonical, refkey);
	const char *store;
	if ((r = ss_store_for(opts->store, m, &loc, opts->snapshot, &store, &err)))
		goto out;
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
	ss_cfg_wipe(&cfg);
	return ss_err_out(&err, r, errbuf, errlen);
}
