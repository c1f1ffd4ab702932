/* s3xml — S3 XML documents with expat; see s3xml.h. */
#include "s3xml.h"

#include <errno.h>
#include <expat.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define XP_DEPTH 8          /* S3 documents nest three or four deep */
#define XP_NAME 48
#define XP_TEXT 2048        /* keys are at most 1024 bytes */

struct xp;
/* An element ended; text is its character data when it had no child. */
typedef int (*xp_end_fn)(struct xp *x, int depth, const char *name, const char *text);

struct xp {
	XML_Parser p;
	int depth;
	char names[XP_DEPTH + 1][XP_NAME];
	char text[XP_TEXT + 1];
	size_t tlen;
	bool child;          /* the current element had a child */
	xp_end_fn on_end;
	void *ctx;
	int res;             /* why the parse stopped, 0 if it did not */
};

static void xp_stop(struct xp *x, int res)
{
	if (!x->res)
		x->res = res;
	XML_StopParser(x->p, XML_FALSE);
}

static const char *local_name(const char *n)
{
	const char *c = strrchr(n, ':');
	return c ? c + 1 : n;
}

static void XMLCALL xp_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct xp *x = ud;
	(void)atts;
	if (x->res)
		return;
	if (x->depth >= XP_DEPTH) {
		xp_stop(x, -EBADMSG);
		return;
	}
	const char *ln = local_name(name);
	if (strlen(ln) >= XP_NAME) {
		xp_stop(x, -EBADMSG);
		return;
	}
	x->depth++;
	strcpy(x->names[x->depth], ln);
	x->tlen = 0;
	x->child = false;
}

static void XMLCALL xp_end(void *ud, const XML_Char *name)
{
	struct xp *x = ud;
	(void)name;
	if (x->res)
		return;
	x->text[x->tlen] = '\0';
	int r = x->on_end(x, x->depth, x->names[x->depth], x->child ? "" : x->text);
	if (r) {
		xp_stop(x, r);
		return;
	}
	x->depth--;
	x->tlen = 0;
	x->child = true;   /* the parent has at least this child */
}

static void XMLCALL xp_chars(void *ud, const XML_Char *s, int len)
{
	struct xp *x = ud;
	if (x->res || len <= 0)
		return;
	if (x->tlen + (size_t)len > XP_TEXT) {
		xp_stop(x, -EBADMSG);
		return;
	}
	memcpy(x->text + x->tlen, s, (size_t)len);
	x->tlen += (size_t)len;
}

static void XMLCALL xp_doctype(void *ud, const XML_Char *name, const XML_Char *sys,
			       const XML_Char *pub, int has_internal)
{
	(void)name, (void)sys, (void)pub, (void)has_internal;
	xp_stop(ud, -EBADMSG);   /* no DTD, so no entity can expand */
}

static int xp_run(const uint8_t *p, size_t n, xp_end_fn on_end, void *ctx)
{
	if (n > INT_MAX)
		return -EBADMSG;
	struct xp *x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->p = XML_ParserCreate(NULL);
	if (!x->p) {
		free(x);
		return -ENOMEM;
	}
	x->on_end = on_end;
	x->ctx = ctx;
	XML_SetUserData(x->p, x);
	XML_SetElementHandler(x->p, xp_start, xp_end);
	XML_SetCharacterDataHandler(x->p, xp_chars);
	XML_SetStartDoctypeDeclHandler(x->p, xp_doctype);
	enum XML_Status st = XML_Parse(x->p, (const char *)p, (int)n, XML_TRUE);
	int res = x->res;
	if (!res && st != XML_STATUS_OK)
		res = -EBADMSG;
	XML_ParserFree(x->p);
	free(x);
	return res;
}

static void copy_cut(char *dst, size_t cap, const char *src)
{
	if (!cap)
		return;
	size_t n = strlen(src);
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* --- Error ------------------------------------------------------------ */

struct err_ctx {
	char *code, *msg;
	size_t codecap, msgcap;
	bool is_error, has_code;
};

static int err_end(struct xp *x, int depth, const char *name, const char *text)
{
	struct err_ctx *c = x->ctx;
	if (depth == 1) {
		c->is_error = strcmp(name, "Error") == 0;
	} else if (depth == 2 && strcmp(x->names[1], "Error") == 0) {
		if (strcmp(name, "Code") == 0) {
			copy_cut(c->code, c->codecap, text);
			c->has_code = true;
		} else if (strcmp(name, "Message") == 0) {
			copy_cut(c->msg, c->msgcap, text);
		}
	}
	return 0;
}

int s3xml_error(const uint8_t *p, size_t n, char *code, size_t codecap, char *msg,
		size_t msgcap)
{
	struct err_ctx c = {.code = code, .msg = msg, .codecap = codecap, .msgcap = msgcap};
	if (codecap)
		code[0] = '\0';
	if (msgcap)
		msg[0] = '\0';
	int r = xp_run(p, n, err_end, &c);
	if (r || !c.is_error || !c.has_code) {
		if (codecap)
			code[0] = '\0';
		if (msgcap)
			msg[0] = '\0';
		return r < 0 ? r : -EBADMSG;
	}
	return 0;
}

/* --- InitiateMultipartUploadResult ------------------------------------ */

struct id_ctx {
	char *id;
	size_t cap;
	bool found;
};

static int id_end(struct xp *x, int depth, const char *name, const char *text)
{
	struct id_ctx *c = x->ctx;
	if (depth == 1 && strcmp(name, "InitiateMultipartUploadResult") != 0)
		return -EBADMSG;
	if (depth == 2 && strcmp(name, "UploadId") == 0) {
		size_t n = strlen(text);
		if (n == 0 || n >= c->cap)
			return -EBADMSG;
		memcpy(c->id, text, n + 1);
		c->found = true;
	}
	return 0;
}

int s3xml_upload_id(const uint8_t *p, size_t n, char *id, size_t cap)
{
	struct id_ctx c = {.id = id, .cap = cap};
	int r = xp_run(p, n, id_end, &c);
	if (r)
		return r < 0 ? r : -EBADMSG;
	return c.found ? 0 : -EBADMSG;
}

/* --- CompleteMultipartUploadResult ------------------------------------ */

struct cmp_ctx {
	int kind;   /* 0 unknown, 1 result, 2 error */
	char *code;
	size_t codecap;
};

static int cmp_end(struct xp *x, int depth, const char *name, const char *text)
{
	struct cmp_ctx *c = x->ctx;
	if (depth == 1) {
		if (strcmp(name, "CompleteMultipartUploadResult") == 0)
			c->kind = 1;
		else if (strcmp(name, "Error") == 0)
			c->kind = 2;
	} else if (depth == 2 && strcmp(x->names[1], "Error") == 0 && strcmp(name, "Code") == 0) {
		copy_cut(c->code, c->codecap, text);
	}
	return 0;
}

int s3xml_complete(const uint8_t *p, size_t n, char *code, size_t codecap)
{
	struct cmp_ctx c = {.code = code, .codecap = codecap};
	if (codecap)
		code[0] = '\0';
	int r = xp_run(p, n, cmp_end, &c);
	if (r)
		return r < 0 ? r : -EBADMSG;
	if (c.kind == 1)
		return 0;
	if (c.kind == 2 && codecap && code[0])
		return 1;
	return -EBADMSG;
}

/* --- ListBucketResult ------------------------------------------------- */

struct list_ctx {
	s3xml_obj_fn fn;
	void *arg;
	struct s3xml_page *out;
	char key[XP_TEXT + 1];
	bool has_key, has_size;
	uint64_t size;
};

static int parse_u64(const char *s, uint64_t *out)
{
	if (!*s || strlen(s) > 20)
		return -EBADMSG;
	uint64_t v = 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EBADMSG;
		uint64_t d = (uint64_t)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EBADMSG;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static int list_end(struct xp *x, int depth, const char *name, const char *text)
{
	struct list_ctx *c = x->ctx;
	if (strcmp(x->names[1], "ListBucketResult") != 0)
		return -EBADMSG;
	if (depth == 3 && strcmp(x->names[2], "Contents") == 0) {
		if (strcmp(name, "Key") == 0) {
			if (!*text)
				return -EBADMSG;
			strcpy(c->key, text);
			c->has_key = true;
		} else if (strcmp(name, "Size") == 0) {
			if (parse_u64(text, &c->size))
				return -EBADMSG;
			c->has_size = true;
		}
	} else if (depth == 2) {
		if (strcmp(name, "Contents") == 0) {
			if (!c->has_key || !c->has_size)
				return -EBADMSG;
			c->out->count++;
			c->has_key = c->has_size = false;
			int r = c->fn(c->arg, c->key, c->size);
			if (r)
				return r;
		} else if (strcmp(name, "IsTruncated") == 0) {
			if (strcmp(text, "true") == 0)
				c->out->truncated = true;
			else if (strcmp(text, "false") == 0)
				c->out->truncated = false;
			else
				return -EBADMSG;
		} else if (strcmp(name, "NextContinuationToken") == 0) {
			if (strlen(text) >= sizeof(c->out->token))
				return -EBADMSG;
			strcpy(c->out->token, text);
		}
	}
	return 0;
}

int s3xml_list(const uint8_t *p, size_t n, s3xml_obj_fn fn, void *arg, struct s3xml_page *out)
{
	memset(out, 0, sizeof(*out));
	struct list_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fn = fn;
	c->arg = arg;
	c->out = out;
	int r = xp_run(p, n, list_end, c);
	free(c);
	if (!r && out->truncated && !out->token[0])
		r = -EBADMSG;   /* more to come, but no way to ask for it */
	return r;
}
