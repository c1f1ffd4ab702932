#include "backend_module.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every backend, in one explicit table (no constructor magic). */
static const struct ss_backend_ops *const registry[] = {
	&ss_local_ops,
	&ss_mem_ops,
	&ss_s3_ops,
	&ss_gs_ops,
};

static bool ops_valid(const struct ss_backend_ops *o)
{
	return o && o->name && o->scheme && o->open && o->submit && o->destroy;
}

bool ss_key_ok(const char *key)
{
	size_t n = strlen(key);
	if (n == 0 || n > 1024 || key[0] == '/')
		return false;
	const char *c = key;
	while (*c) {
		const char *slash = strchr(c, '/');
		size_t len = slash ? (size_t)(slash - c) : strlen(c);
		if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		for (size_t i = 0; i < len; i++)
			if ((unsigned char)c[i] < 0x20 || c[i] == 0x7f)
				return false;
		if (!slash)
			break;
		c = slash + 1;
		if (!*c)
			return false;   /* trailing slash */
	}
	return true;
}

static char *abs_path(const char *p)
{
	if (p[0] == '/')
		return strdup(p);
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	size_t n = strlen(cwd) + 1 + strlen(p) + 1;
	char *out = malloc(n);
	if (out)
		snprintf(out, n, "%s/%s", cwd, p);
	return out;
}

int ss_location_parse(const char *uri, const char **scheme, char **path, struct ss_err *err)
{
	if (!uri || !*uri)
		return ss_err_set(err, -EINVAL, "empty location");
	for (const char *c = uri; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return ss_err_set(err, -EINVAL, "location has a control character");
	const char *sep = strstr(uri, "://");
	const char *rest = uri;
	const char *sch = "file";
	if (sep) {
		size_t sl = (size_t)(sep - uri);
		sch = NULL;
		for (size_t i = 0; i < SS_ARRAY_SIZE(registry); i++)
			if (strlen(registry[i]->scheme) == sl &&
			    strncmp(registry[i]->scheme, uri, sl) == 0)
				sch = registry[i]->scheme;
		if (!sch)
			return ss_err_set(err, -EPROTONOSUPPORT,
					  "unsupported location '%s' (use a path, file://, s3://, "
					  "gs:// or mem://)",
					  uri);
		rest = sep + 3;
		if (!*rest)
			return ss_err_set(err, -EINVAL, "location '%s' names nothing", uri);
		if (strcmp(sch, "file") == 0 && rest[0] != '/')
			return ss_err_set(err, -EINVAL, "file:// location must be absolute: '%s'",
					  uri);
	}
	char *p = strcmp(sch, "file") == 0 ? abs_path(rest) : strdup(rest);
	if (!p)
		return ss_err_set(err, -ENOMEM, "out of memory");
	/* Strip trailing slashes (but keep "/"). */
	size_t n = strlen(p);
	while (n > 1 && p[n - 1] == '/')
		p[--n] = '\0';
	*scheme = sch;
	*path = p;
	return 0;
}

const char *ss_env_get(const char *const *env, const char *name)
{
	size_t n = strlen(name);
	for (; env && *env; env++)
		if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
			return (*env)[n + 1] ? *env + n + 1 : NULL;
	return NULL;
}

bool ss_uri_is_object_store(const char *uri)
{
	return uri && (strncmp(uri, "s3://", 5) == 0 || strncmp(uri, "gs://", 5) == 0);
}

int ss_objuri_split(const char *uri, char **bucket_uri, char **key, struct ss_err *err)
{
	if (!ss_uri_is_object_store(uri))
		return ss_err_set(err, -EPROTONOSUPPORT, "'%s' is not an s3:// or gs:// URI",
				  uri ? uri : "(null)");
	const char *scheme;
	char *path;
	int r = ss_location_parse(uri, &scheme, &path, err);
	if (r)
		return r;
	char *slash = strchr(path, '/');
	size_t bl = slash ? (size_t)(slash - path) : strlen(path);
	const char *k = slash ? slash + 1 : "";
	if (bl == 0 || (*k && !ss_key_ok(k))) {
		free(path);
		return ss_err_set(err, -EINVAL, "'%s' does not name a bucket and key", uri);
	}
	size_t n = strlen(scheme) + 3 + bl + 1;
	char *b = malloc(n);
	char *kk = strdup(k);
	if (!b || !kk) {
		free(b);
		free(kk);
		free(path);
		return ss_err_set(err, -ENOMEM, "out of memory");
	}
	snprintf(b, n, "%s://%.*s", scheme, (int)bl, path);
	free(path);
	*bucket_uri = b;
	*key = kk;
	return 0;
}

int ss_backend_open(const char *uri, struct ss_loop *l, const struct ss_backend_opts *o,
		    struct ss_backend **out, struct ss_err *err)
{
	const char *scheme;
	char *path;
	int r = ss_location_parse(uri, &scheme, &path, err);
	if (r)
		return r;
	const struct ss_backend_ops *ops = NULL;
	for (size_t i = 0; i < SS_ARRAY_SIZE(registry); i++)
		if (strcmp(registry[i]->scheme, scheme) == 0)
			ops = registry[i];
	if (!ops_valid(ops)) {
		free(path);
		return ss_err_set(err, -EPROTONOSUPPORT, "no backend for '%s'", uri);
	}
	struct ss_backend *b = calloc(1, sizeof(*b));
	if (!b) {
		free(path);
		return ss_err_set(err, -ENOMEM, "out of memory");
	}
	b->ops = ops;
	b->local = ops->local;
	b->loop = l;
	if (o)
		b->opts = *o;
	r = ops->open(b, path, err);
	free(path);
	b->opts.env = NULL;   /* borrowed for the open only */
	if (r) {
		free(b);
		return r;
	}
	if (b->opts.max_inflight)
		b->max_inflight = b->opts.max_inflight;
	if (!b->max_inflight)
		b->max_inflight = 16;
	*out = b;
	return 0;
}

void ss_backend_free(struct ss_backend *b)
{
	if (!b)
		return;
	b->ops->destroy(b);
	free(b);
}

const char *ss_backend_name(const struct ss_backend *b)
{
	return b->ops->name;
}

int ss_backend_identity(const struct ss_backend *b, char *buf, size_t n)
{
	if (!b->ops->identity)
		return -EOPNOTSUPP;
	return b->ops->identity(b, buf, n);
}

bool ss_backend_local(const struct ss_backend *b)
{
	return b->local;
}

unsigned ss_backend_max_inflight(const struct ss_backend *b)
{
	return b->max_inflight;
}

int ss_backend_submit(struct ss_backend *b, struct ss_req *r)
{
	if (r->kind != SS_REQ_LIST && (!r->key || !ss_key_ok(r->key)))
		return ss_err_set(r->err, -EINVAL, "invalid object key '%s'",
				  r->key ? r->key : "(null)");
	if (r->kind == SS_REQ_LIST && r->key && *r->key) {
		/* A prefix may end in '/': check it without. */
		char pfx[1100];
		size_t n = strlen(r->key);
		if (n >= sizeof(pfx))
			return ss_err_set(r->err, -EINVAL, "list prefix too long");
		memcpy(pfx, r->key, n + 1);
		if (n > 1 && pfx[n - 1] == '/')
			pfx[n - 1] = '\0';
		if (!ss_key_ok(pfx))
			return ss_err_set(r->err, -EINVAL, "invalid list prefix '%s'", r->key);
	}
	if (b->inflight >= b->max_inflight)
		return -EAGAIN;
	r->etag[0] = '\0';   /* set by backends that have ETags */
	int res = b->ops->submit(b, r);
	if (res == 0)
		b->inflight++;
	return res;
}

void ss_backend_complete(struct ss_backend *b, struct ss_req *r, int res)
{
	b->inflight--;
	r->op.done(&r->op, res);
}

static void call_done(struct ss_op *op, int res)
{
	struct ss_req *r = (struct ss_req *)op;
	op->res = res;
	*(bool *)r->user = true;
}

int ss_backend_call(struct ss_backend *b, struct ss_loop *l, struct ss_req *r)
{
	bool done = false;
	r->op.done = call_done;
	r->user = &done;
	int res;
	for (;;) {
		res = ss_backend_submit(b, r);
		if (res != -EAGAIN)
			break;
		int t = ss_loop_turn(l, true);
		if (t < 0)
			return t;
	}
	if (res)
		return res;
	while (!done) {
		int t = ss_loop_turn(l, true);
		if (t < 0)
			return t;
	}
	return r->op.res;
}
