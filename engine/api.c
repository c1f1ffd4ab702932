/* api.c — libsnapstream's ABI boundary: every public function of
 * snapstream.h that takes a struct is defined here.
 *
 * Each checks the caller's size-tagged structs and copies them into
 * zeroed ones of this build's size (the rule at the top of snapstream.h),
 * calls the entry point behind it (core.h, "entry points") on those, and
 * copies outputs back only as far as the caller's struct reaches. The
 * entry points can therefore read every field of the structs they get,
 * whatever header the caller was built with. */
#include "core.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ss_config.h"

const char *ss_version(void)
{
	return SS_VERSION;
}

void ss_prepare_fds(unsigned reserve)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 && getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return;
	}
	rlim_t n = SS_MIN((rlim_t)reserve, rl.rlim_cur);
	if (n < 2)
		return;
	/* One descriptor at n - 1 grows the table to cover it in one step. */
	int src = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return;
	int hi = fcntl(src, F_DUPFD_CLOEXEC, (int)(n - 1));
	if (hi >= 0)
		close(hi);
	close(src);
}

/* The end of a field: the size of a struct's first version is the end of
 * its last field then, and stays so when fields are appended. */
#define END_OF(tag, field) (offsetof(struct tag, field) + sizeof(((struct tag *)0)->field))

/* Sizes of the first version of each struct: anything smaller is a
 * caller that did not set `size`. */
#define V1_CONFIG END_OF(ss_config, env)
#define V1_PUSH END_OF(ss_push_opts, writer_arg)
#define V1_PULL END_OF(ss_pull_opts, info)
#define V1_CAT END_OF(ss_cat_opts, fd)
#define V1_VERIFY END_OF(ss_verify_opts, quick)
#define V1_LS END_OF(ss_ls_opts, store)
#define V1_RM END_OF(ss_rm_opts, store)
#define V1_GC END_OF(ss_gc_opts, break_lock)
#define V1_INIT END_OF(ss_init_opts, store)
#define V1_CHECK END_OF(ss_check_opts, arg)
#define V1_STATS END_OF(ss_stats, seconds)
#define V1_GC_STATS END_OF(ss_gc_stats, seconds)
#define V1_CHECK_STATS END_OF(ss_check_stats, seconds)
#define V1_CACHE END_OF(ss_cache_opts, prune_to)
#define V1_CACHE_STATS END_OF(ss_cache_stats, seconds)

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
						       const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* Check the size-tagged struct at src (NULL passes: the entry point
 * decides what NULL means) against the sizes this build knows. An output
 * (out) only needs its first version's size: what lies beyond is written,
 * never read. */
static int check_in(const void *src, size_t full, size_t v1, bool out, const char *what,
		    char *err, size_t errlen)
{
	if (!src)
		return 0;
	size_t n;
	memcpy(&n, src, sizeof(n));
	if (n < v1)
		return fail(err, errlen, -EINVAL,
			    "struct %s: size %zu is less than its first version's %zu (set it "
			    "with its SS_..._INIT)",
			    what, n, v1);
	/* Fields this library does not know may be left zero (not used);
	 * anything else asks for what it cannot do. */
	for (size_t i = full; !out && i < n; i++)
		if (((const unsigned char *)src)[i])
			return fail(err, errlen, -E2BIG,
				    "struct %s: the caller's %zu bytes set fields this library "
				    "(%zu bytes) does not know: it is older than the caller's "
				    "snapstream.h",
				    what, n, full);
	return 0;
}

/* Copy a checked struct into dst (full bytes, zeroed first). */
static void copy_in(void *dst, size_t full, const void *src)
{
	memset(dst, 0, full);
	if (!src)
		return;
	size_t n;
	memcpy(&n, src, sizeof(n));
	memcpy(dst, src, n < full ? n : full);
	memcpy(dst, &full, sizeof(full));
}

/* Copy an output struct back as far as the caller's reaches, leaving its
 * size as the caller set it and zero beyond what this library fills. */
static void copy_out(void *dst, const void *src, size_t full)
{
	if (!dst)
		return;
	size_t n;
	memcpy(&n, dst, sizeof(n));
	size_t k = n < full ? n : full;
	memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
	       k - sizeof(size_t));
	if (n > full)
		memset((char *)dst + full, 0, n - full);
}

#define CHECK_SIZE(p, tag, v1, out)                                                      \
	do {                                                                             \
		int r_ = check_in(p, sizeof(struct tag), v1, out, #tag, err, errlen);    \
		if (r_)                                                                  \
			return r_;                                                       \
	} while (0)
#define CHECK_IN(p, tag, v1) CHECK_SIZE(p, tag, v1, false)
#define CHECK_OUT(p, tag, v1) CHECK_SIZE(p, tag, v1, true)

/* The caller's configuration, checked and copied; NULL stays all defaults. */
static int config_in(const struct ss_config *cfg, struct ss_config_in *in, char *err,
		     size_t errlen)
{
	memset(in, 0, sizeof(*in));
	CHECK_IN(cfg, ss_config, V1_CONFIG);
	copy_in(&in->pub, sizeof(in->pub), cfg);
	return 0;
}

/* What every entry point that takes options and fills statistics does
 * first: check the caller's opts (struct otag) and st (struct stag), and
 * copy them with cfg into this build's o, s and c, or return the error
 * from the entry point when a size is wrong. After the call, copy_out(st,
 * &s, sizeof(s)) hands the statistics back. */
#define ENTER(otag, ov1, o, stag, sv1, s, c)                                            \
	do {                                                                            \
		CHECK_IN(opts, otag, ov1);                                              \
		CHECK_OUT(st, stag, sv1);                                               \
		int r_ = config_in(cfg, &(c), err, errlen);                             \
		if (r_)                                                                 \
			return r_;                                                      \
		copy_in(&(o), sizeof(o), opts);                                         \
		copy_in(&(s), sizeof(s), NULL);                                         \
	} while (0)

/* The entry points that take options and fill statistics and nothing
 * else: name(opts, cfg, st, err, errlen) around name_impl, as snapstream.h
 * declares them (which holds each definition to its prototype). */
#define OPTS_STATS_ENTRY(name, otag, ov1, stag, sv1)                                    \
	int name(const struct otag *opts, const struct ss_config *cfg, struct stag *st,  \
		 char *err, size_t errlen)                                               \
	{                                                                                \
		struct ss_config_in c;                                                   \
		struct otag o;                                                           \
		struct stag s;                                                           \
		ENTER(otag, ov1, o, stag, sv1, s, c);                                    \
		int r = name##_impl(opts ? &o : NULL, &c, &s, err, errlen);             \
		copy_out(st, &s, sizeof(s));                                             \
		return r;                                                                \
	}

OPTS_STATS_ENTRY(ss_push, ss_push_opts, V1_PUSH, ss_stats, V1_STATS)

int ss_push_fd(const struct ss_push_opts *opts, int fd, const char *name,
	       const struct ss_config *cfg, struct ss_stats *st, char *err, size_t errlen)
{
	struct ss_config_in c;
	struct ss_push_opts o;
	struct ss_stats s;
	ENTER(ss_push_opts, V1_PUSH, o, ss_stats, V1_STATS, s, c);
	int r = ss_push_fd_impl(opts ? &o : NULL, fd, name, &c, &s, err, errlen);
	copy_out(st, &s, sizeof(s));
	return r;
}

OPTS_STATS_ENTRY(ss_pull, ss_pull_opts, V1_PULL, ss_stats, V1_STATS)
OPTS_STATS_ENTRY(ss_cat, ss_cat_opts, V1_CAT, ss_stats, V1_STATS)
OPTS_STATS_ENTRY(ss_verify, ss_verify_opts, V1_VERIFY, ss_stats, V1_STATS)

/* Entries and their files carry this build's struct sizes. */
static void stamp_info(struct ss_snapshot_info *in)
{
	in->size = sizeof(*in);
	for (size_t i = 0; i < in->nfiles_v; i++)
		in->files_v[i]->size = sizeof(*in->files_v[i]);
}

int ss_info(const char *snapshot, const char *store, const struct ss_config *cfg,
	    struct ss_snapshot_info **out, char *err, size_t errlen)
{
	struct ss_config_in c;
	int r;
	if ((r = config_in(cfg, &c, err, errlen)))
		return r;
	r = ss_info_impl(snapshot, store, &c, out, err, errlen);
	if (!r)
		stamp_info(*out);
	return r;
}

int ss_ls(const struct ss_ls_opts *opts, const struct ss_config *cfg,
	  struct ss_snapshot_info ***out, size_t *n, char *err, size_t errlen)
{
	struct ss_config_in c;
	struct ss_ls_opts o;
	struct ss_snapshot_info *v = NULL;
	size_t nv = 0;
	int r;
	CHECK_IN(opts, ss_ls_opts, V1_LS);
	if ((r = config_in(cfg, &c, err, errlen)))
		return r;
	if (!out || !n)
		return fail(err, errlen, -EINVAL, "ls needs out and n");
	copy_in(&o, sizeof(o), opts);
	if ((r = ss_ls_impl(opts ? &o : NULL, &c, &v, &nv, err, errlen)))
		return r;
	/* Pointers, so that the entries' size may grow; the array itself is
	 * kept in the slot after the last (ss_ls_free). */
	struct ss_snapshot_info **p = malloc((nv + 1) * sizeof(*p));
	if (!p) {
		ss_ls_free_impl(v, nv);
		return fail(err, errlen, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < nv; i++) {
		p[i] = &v[i];
		stamp_info(p[i]);
	}
	p[nv] = v;
	*out = p;
	*n = nv;
	return 0;
}

void ss_ls_free(struct ss_snapshot_info **v, size_t n)
{
	if (!v)
		return;
	ss_ls_free_impl(v[n], n);
	free(v);
}

int ss_rm(const struct ss_rm_opts *opts, const struct ss_config *cfg, char *err, size_t errlen)
{
	struct ss_config_in c;
	struct ss_rm_opts o;
	int r;
	CHECK_IN(opts, ss_rm_opts, V1_RM);
	if ((r = config_in(cfg, &c, err, errlen)))
		return r;
	copy_in(&o, sizeof(o), opts);
	return ss_rm_impl(opts ? &o : NULL, &c, err, errlen);
}

OPTS_STATS_ENTRY(ss_gc, ss_gc_opts, V1_GC, ss_gc_stats, V1_GC_STATS)

int ss_init(const struct ss_init_opts *opts, const struct ss_config *cfg, char *err,
	    size_t errlen)
{
	struct ss_config_in c;
	struct ss_init_opts o;
	int r;
	CHECK_IN(opts, ss_init_opts, V1_INIT);
	if ((r = config_in(cfg, &c, err, errlen)))
		return r;
	copy_in(&o, sizeof(o), opts);
	return ss_init_impl(opts ? &o : NULL, &c, err, errlen);
}

/* Findings reach the caller with their size set. */
struct check_relay {
	ss_check_fn fn;
	void *arg;
};

static void relay_finding(void *arg, const struct ss_check_finding *f)
{
	const struct check_relay *x = arg;
	struct ss_check_finding g = *f;
	g.size = sizeof(g);
	x->fn(x->arg, &g);
}

int ss_check(const struct ss_check_opts *opts, const struct ss_config *cfg,
	     struct ss_check_stats *st, char *err, size_t errlen)
{
	struct ss_config_in c;
	struct ss_check_opts o;
	struct ss_check_stats s;
	struct check_relay x = {0};
	ENTER(ss_check_opts, V1_CHECK, o, ss_check_stats, V1_CHECK_STATS, s, c);
	if (o.on_finding) {
		x.fn = o.on_finding;
		x.arg = o.arg;
		o.on_finding = relay_finding;
		o.arg = &x;
	}
	int r = ss_check_impl(opts ? &o : NULL, &c, &s, err, errlen);
	copy_out(st, &s, sizeof(s));
	return r;
}

int ss_cache(const struct ss_cache_opts *opts, struct ss_cache_stats *st, char *err,
	     size_t errlen)
{
	struct ss_cache_opts o;
	struct ss_cache_stats s;
	CHECK_IN(opts, ss_cache_opts, V1_CACHE);
	CHECK_OUT(st, ss_cache_stats, V1_CACHE_STATS);
	copy_in(&o, sizeof(o), opts);
	copy_in(&s, sizeof(s), NULL);
	int r = ss_cache_impl(opts ? &o : NULL, &s, err, errlen);
	copy_out(st, &s, sizeof(s));
	return r;
}
