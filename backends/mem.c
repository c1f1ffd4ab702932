/* mem — the in-memory backend: the smallest complete backend, the
 * template for new ones and the test double (with fault injection). Every
 * request completes on the next loop turn, never re-entrantly, so callers
 * see the same ordering contract as with real I/O. */
#include "backend_module.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mem_obj {
	char *key;
	uint8_t *data;
	size_t len;
	struct mem_obj *next;
};

#define MEM_BUCKETS 1024

struct ss_memstore {
	struct mem_obj *bucket[MEM_BUCKETS];
	uint64_t objects, bytes;
	enum ss_req_kind fail_kind;
	char fail_prefix[64];
	unsigned fail_skip;
	unsigned fail_n;
	int fail_res;
};

/* One backend's view: the shared memstore under a root prefix, so that
 * mem://a and mem://b hold different objects. */
struct mem_view {
	struct ss_memstore *m;
	char *root;
};

struct mem_done {
	struct ss_op op;
	struct ss_backend *b;
	struct ss_req *r;
};

static unsigned mem_hash(const char *k)
{
	unsigned h = 2166136261u;
	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 16777619u;
	return h % MEM_BUCKETS;
}

struct ss_memstore *ss_memstore_new(void)
{
	return calloc(1, sizeof(struct ss_memstore));
}

void ss_memstore_free(struct ss_memstore *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < MEM_BUCKETS; i++) {
		struct mem_obj *o = m->bucket[i];
		while (o) {
			struct mem_obj *n = o->next;
			free(o->key);
			free(o->data);
			free(o);
			o = n;
		}
	}
	free(m);
}

void ss_memstore_fail(struct ss_memstore *m, enum ss_req_kind kind, const char *prefix,
		      unsigned skip, unsigned n, int res)
{
	snprintf(m->fail_prefix, sizeof(m->fail_prefix), "%s", prefix ? prefix : "");
	m->fail_kind = kind;
	m->fail_skip = skip;
	m->fail_n = n;
	m->fail_res = res;
}

void ss_memstore_usage(const struct ss_memstore *m, uint64_t *objects, uint64_t *bytes)
{
	*objects = m->objects;
	*bytes = m->bytes;
}

static struct mem_obj **mem_find(struct ss_memstore *m, const char *key)
{
	struct mem_obj **p = &m->bucket[mem_hash(key)];
	while (*p && strcmp((*p)->key, key) != 0)
		p = &(*p)->next;
	return p;
}

static int mem_open(struct ss_backend *b, const char *location, struct ss_err *err)
{
	(void)location;
	if (!b->opts.mem)
		return ss_err_set(err, -EINVAL, "mem:// needs an in-memory store (tests only)");
	struct mem_view *v = calloc(1, sizeof(*v));
	if (!v || !(v->root = strdup(location))) {
		free(v);
		return ss_err_set(err, -ENOMEM, "out of memory");
	}
	v->m = b->opts.mem;
	b->priv = v;
	b->max_inflight = 64;
	return 0;
}

static void mem_finish(struct ss_op *op, int res)
{
	struct mem_done *d = (struct mem_done *)op;
	struct ss_backend *b = d->b;
	struct ss_req *r = d->r;
	free(d);
	ss_backend_complete(b, r, res);
}

static int mem_run_key(struct ss_memstore *m, const char *full, size_t rootlen,
		       struct ss_req *r);

static int mem_list(struct ss_memstore *m, const char *full, size_t rootlen, struct ss_req *r)
{
	size_t pl = strlen(full);
	for (unsigned i = 0; i < MEM_BUCKETS; i++)
		for (struct mem_obj *o = m->bucket[i]; o; o = o->next)
			if (strncmp(o->key, full, pl) == 0) {
				int s = r->on_key(r->arg, o->key + rootlen, o->len);
				if (s)
					return s;
			}
	return 0;
}

static int mem_run(struct mem_view *v, struct ss_req *r)
{
	struct ss_memstore *m = v->m;
	size_t rootlen = strlen(v->root) + 1;
	char *full = malloc(rootlen + (r->key ? strlen(r->key) : 0) + 1);
	if (!full)
		return -ENOMEM;
	sprintf(full, "%s/%s", v->root, r->key ? r->key : "");
	int res = mem_run_key(m, full, rootlen, r);
	free(full);
	return res;
}

static int mem_run_key(struct ss_memstore *m, const char *full, size_t rootlen, struct ss_req *r)
{
	bool match = m->fail_n && (!m->fail_kind || m->fail_kind == r->kind) &&
		     strncmp(r->key ? r->key : "", m->fail_prefix, strlen(m->fail_prefix)) == 0;
	if (match && m->fail_skip) {
		m->fail_skip--;
	} else if (match) {
		m->fail_n--;
		return ss_err_set(r->err, m->fail_res, "injected failure on '%s'", r->key);
	}
	struct mem_obj **p = r->kind == SS_REQ_LIST ? NULL : mem_find(m, full);
	switch (r->kind) {
	case SS_REQ_PUT: {
		if (*p && (r->flags & SS_PUT_IF_ABSENT))
			return -EEXIST;
		size_t len = 0;
		for (unsigned i = 0; i < r->iovcnt; i++)
			len += r->iov[i].iov_len;
		uint8_t *data = malloc(len ? len : 1);
		if (!data)
			return -ENOMEM;
		size_t at = 0;
		for (unsigned i = 0; i < r->iovcnt; i++) {
			memcpy(data + at, r->iov[i].iov_base, r->iov[i].iov_len);
			at += r->iov[i].iov_len;
		}
		if (!*p) {
			struct mem_obj *o = calloc(1, sizeof(*o));
			if (!o || !(o->key = strdup(full))) {
				free(o);
				free(data);
				return -ENOMEM;
			}
			*p = o;
			m->objects++;
		} else {
			m->bytes -= (*p)->len;
			free((*p)->data);
		}
		(*p)->data = data;
		(*p)->len = len;
		m->bytes += len;
		return 0;
	}
	case SS_REQ_GET: {
		if (!*p)
			return -ENOENT;
		struct mem_obj *o = *p;
		r->size = o->len;
		uint64_t off = r->off, len = r->len;
		if (r->flags & SS_GET_SUFFIX) {
			len = SS_MIN(len, o->len);
			off = o->len - len;
		}
		if (off >= o->len)
			return 0;
		len = SS_MIN(len, o->len - off);
		memcpy(r->buf, o->data + off, len);
		return (int)len;
	}
	case SS_REQ_STAT:
		if (!*p)
			return -ENOENT;
		r->size = (*p)->len;
		return 0;
	case SS_REQ_DELETE: {
		if (!*p)
			return -ENOENT;
		struct mem_obj *o = *p;
		*p = o->next;
		m->objects--;
		m->bytes -= o->len;
		free(o->key);
		free(o->data);
		free(o);
		return 0;
	}
	case SS_REQ_LIST:
		return mem_list(m, full, rootlen, r);
	}
	return -EINVAL;
}

static int mem_submit(struct ss_backend *b, struct ss_req *r)
{
	if (r->kind == SS_REQ_GET && r->len > (uint64_t)INT32_MAX)
		return -EINVAL;
	struct mem_done *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->op.done = mem_finish;
	d->b = b;
	d->r = r;
	ss_loop_defer(b->loop, &d->op, mem_run(b->priv, r));
	return 0;
}

static void mem_destroy(struct ss_backend *b)
{
	struct mem_view *v = b->priv;
	/* The memstore itself outlives its backends. */
	if (v)
		free(v->root);
	free(v);
}

const struct ss_backend_ops ss_mem_ops = {
	.name = "memory",
	.scheme = "mem",
	.local = true,
	.open = mem_open,
	.submit = mem_submit,
	.destroy = mem_destroy,
};
