/* s3 — Amazon S3 (s3://) and Google Cloud Storage through its XML API
 * (gs://): the same S3-shaped requests, told apart by endpoint and auth.
 *
 * Requests are signed by libcurl (CURLOPT_AWS_SIGV4) for S3 and for GCS
 * HMAC keys, or carry a GCS OAuth2 token (gauth.c). libcurl 7.88 leaves
 * x-amz-content-sha256 to us and signs with whatever value it carries, so
 * bodies up to 1 MiB (manifests, indexes, CompleteMultipartUpload) are
 * hashed with OpenSSL, while packs and parts go as UNSIGNED-PAYLOAD:
 * hashing 32 MiB would stall the loop for tens of milliseconds, and the
 * engine verifies every chunk by its own hash anyway. libcurl 7.88 also
 * signs the query string as given, so every URL here is built already in
 * canonical form: parameters sorted, values encoded as SigV4 wants.
 *
 * Objects above the multipart threshold are uploaded in parts, in
 * parallel, and the upload is aborted if any part fails for good. GETs are
 * ranged (suffix ranges too), LIST is ListObjectsV2 with continuation
 * tokens, STAT is HEAD. Every response body is bounded and parsed as
 * hostile (s3xml.c).
 */
#include "backend_module.h"
#include "cryptofn.h"
#include "gauth.h"
#include "http.h"
#include "s3xml.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define HASH_LIMIT (1u << 20)          /* bodies hashed for the signature */
#define LIST_BODY_MAX (16u << 20)
#define SMALL_BODY_MAX (256u << 10)
#define MAX_PARTS 10000u
#define MIN_PART (5ull << 20)
#define MAX_PART (5ull << 30)

struct s3 {
	struct ss_backend *b;
	bool gcs;
	const char *svc;              /* "S3" or "GCS", for messages */
	char *bucket;
	char *root;                   /* "" or "prefix/" */
	char *base;                   /* URL of the bucket, no trailing '/' */
	char *list_base;              /* base for bucket-level requests */
	/* SigV4 (S3, GCS HMAC). */
	char sigv4[160];
	char *access_key, *secret_key, *session_token;
	struct gauth *ga;             /* GCS OAuth2 instead */
	char *ca_bundle;
	struct ss_http *http;
	uint64_t part_size, mp_threshold;
	unsigned list_page;
	unsigned window;              /* parts in flight per upload */
	/* Request states are reused, not allocated per request. */
	struct s3req *free_reqs;
	unsigned nfree_reqs;
};

/* The metadata header naming a multipart upload's tag. */
#define S3_TAG_HEADER "x-amz-meta-snapstream-upload"
#define GCS_TAG_HEADER "x-goog-meta-snapstream-upload"

enum stage {
	ST_HEAD_CHECK = 1,   /* PUT IF_ABSENT: is it there? */
	ST_PUT,
	ST_MP_INIT,
	ST_MP_PARTS,
	ST_MP_COMPLETE,
	ST_MP_ABORT,
	ST_CHECK_LOST,       /* HEAD after a Complete or conditional PUT whose answer was lost */
	ST_GET,
	ST_GET_EXACT,        /* suffix range again, spelled out */
	ST_GET_SIZE,         /* HEAD after an empty or unsatisfiable GET */
	ST_STAT,
	ST_DELETE,
	ST_LIST,
	ST_ERR_PROBE,        /* GET after a failed HEAD, for the error code */
};

struct s3req;

struct s3call {
	struct ss_http_xfer x;
	struct s3req *q;
	char *url;
	const char *sha;              /* x-amz-content-sha256 */
	char shabuf[65];
	char range[64];
	const char *ctype;
	bool if_absent;
	const char *if_none_match;    /* a GET's condition (ss_req) */
	const char *upload_tag;       /* sent as object metadata (initiate) */
	unsigned part;                /* 1-based part number, 0 if none */
	bool used_token;
	unsigned token_gen;
	bool auth_retried;            /* a 401 already led to a new token */
};

struct s3req {
	struct ss_op op;              /* completion, run from the loop */
	struct s3 *s;
	struct ss_req *r;
	enum stage stage;
	char what[1300];
	char *objpath;                /* encoded bucket-relative object path */
	struct s3call c;
	uint64_t total;
	uint64_t part;                /* multipart: this upload's part size */
	long head_status;             /* a failed HEAD's status, for the probe */
	uint8_t probe_byte;
	/* GET */
	uint64_t size;
	bool size_known;
	bool refetch;
	bool empty;          /* a GET's answer said the object is empty */
	/* LIST */
	char *full_prefix;
	struct s3xml_page page;
	char prev_token[1100];
	unsigned pages;
	bool stopped;
	int stop_res;
	int list_err;
	/* Multipart */
	char upload_id[1100];
	char *upload_id_enc;
	uint8_t *cbody;               /* the CompleteMultipartUpload document */
	struct iovec civ;
	unsigned nparts, next_part, parts_inflight, parts_ok;
	char (*etags)[130];
	struct s3call *slots;
	bool *slot_busy;
	int mp_res;
	/* A random tag stored as the object's metadata: when a Complete's
	 * (or a conditional PUT's) answer is lost and the retry finds the
	 * upload gone (or the object there), a HEAD showing our tag proves
	 * the first attempt won. */
	char tag[33];
	struct s3req *next_free;
};

static void call_done(struct ss_http_xfer *x, int res);
static int call_prepare(struct ss_http_xfer *x, CURL *e);
static void req_finish(struct s3req *q, int res);

/* --- small helpers ---------------------------------------------------- */

static struct s3 *S(struct ss_backend *b)
{
	return b->priv;
}

static void wipe_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* SigV4 URI encoding: unreserved characters stay, '/' stays in paths,
 * everything else is %XX in upper case. */
static char *uri_encode(const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1);
	if (!out)
		return NULL;
	char *o = out;
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (isalnum(*c) || *c == '-' || *c == '_' || *c == '.' || *c == '~' ||
		    (keep_slash && *c == '/')) {
			*o++ = (char)*c;
		} else {
			*o++ = '%';
			*o++ = hex[*c >> 4];
			*o++ = hex[*c & 15];
		}
	}
	*o = '\0';
	return out;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return n < 0 ? NULL : s;
}

static int sha256_hex(const struct iovec *iov, unsigned iovcnt, uint64_t off, uint64_t len,
		      char out[65])
{
	uint8_t md[32];
	unsigned mdlen = 0;
	/* Loaded by the PUT's submit (s3_submit). */
	const struct ss_cryptofn *C = ss_crypto();
	EVP_MD_CTX *c = C->md_ctx_new();
	if (!c || C->digest_init_ex(c, C->sha256(), NULL) != 1) {
		C->md_ctx_free(c);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < iovcnt && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t k = (size_t)SS_MIN(len, iov[i].iov_len - off);
		C->digest_update(c, (const uint8_t *)iov[i].iov_base + off, k);
		len -= k;
		off = 0;
	}
	C->digest_final_ex(c, md, &mdlen);
	C->md_ctx_free(c);
	ss_hex(md, 32, out);
	return 0;
}

/* A server's message may quote what we sent: never let a credential or a
 * token through, and keep it to printable text. */
static void scrub(const struct s3 *s, char *msg)
{
	for (char *c = msg; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
			*c = '?';
	if ((s->access_key && strstr(msg, s->access_key)) ||
	    (s->secret_key && strstr(msg, s->secret_key)) ||
	    (s->session_token && strstr(msg, s->session_token)) || strstr(msg, "Signature=") ||
	    strstr(msg, "Bearer") || (s->ga && gauth_leaks(s->ga, msg)))
		snprintf(msg, 64, "(message withheld: it quoted credentials)");
}

static int status_errno(long st)
{
	switch (st) {
	case 404:
		return -ENOENT;
	case 401:
	case 403:
		return -EACCES;
	case 412:
		return -EEXIST;
	case 400:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* Fail with a message naming the service, the method, bucket and key, the
 * HTTP status and the server's error code. */
static int http_error(struct s3req *q, const struct s3call *c)
{
	char code[64] = "", msg[200] = "";
	if (c->x.body.len)
		s3xml_error(c->x.body.data, c->x.body.len, code, sizeof(code), msg, sizeof(msg));
	scrub(q->s, code);
	scrub(q->s, msg);
	int res = status_errno(c->x.status);
	char tries[40] = "";
	if (c->x.attempts > 1)
		snprintf(tries, sizeof(tries), " (after %u attempts)", c->x.attempts);
	return ss_err_set(q->r->err, res, "%s %s: HTTP %ld%s%s%s%s%s%s", q->s->svc, q->what,
			  c->x.status, code[0] ? " " : "", code, msg[0] ? " (" : "", msg,
			  msg[0] ? ")" : "", tries);
}

static int transport_error(struct s3req *q, const struct s3call *c, int res)
{
	char msg[sizeof(c->x.errmsg)];
	snprintf(msg, sizeof(msg), "%s", c->x.errmsg[0] ? c->x.errmsg : strerror(-res));
	scrub(q->s, msg);
	return ss_err_set(q->r->err, res, "%s %s", q->s->svc, msg);
}

/* --- calls ------------------------------------------------------------ */

static void call_init(struct s3call *c, struct s3req *q, enum ss_http_method m, char *url)
{
	ss_http_xfer_reset(&c->x);
	free(c->url);
	memset(&c->x, 0, sizeof(c->x));
	c->x.prepare = call_prepare;
	c->x.done = call_done;
	c->x.owner = c;
	c->x.what = q->what;
	c->x.method = m;
	c->x.body_cap = SMALL_BODY_MAX;
	c->q = q;
	c->url = url;
	c->sha = EMPTY_SHA256;
	c->range[0] = '\0';
	c->ctype = NULL;
	c->if_absent = false;
	c->if_none_match = NULL;
	c->upload_tag = NULL;
	c->used_token = false;
	c->auth_retried = false;
}

static void call_free(struct s3call *c)
{
	ss_http_xfer_reset(&c->x);
	free(c->url);
	c->url = NULL;
}

static void call_start(struct s3call *c)
{
	struct s3 *s = c->q->s;
	if (s->ga && !gauth_token(s->ga)) {
		gauth_wait(s->ga, &c->x);
		return;
	}
	ss_http_run(s->http, &c->x);
}

static int call_prepare(struct ss_http_xfer *x, CURL *e)
{
	struct s3call *c = x->owner;
	struct s3 *s = c->q->s;
	int r = 0;
	if (ss_curl()->easy_setopt(e, CURLOPT_URL, c->url) != CURLE_OK)
		return -EINVAL;
	if (s->ga) {
		const char *tok = gauth_token_any(s->ga, &c->token_gen);
		if (!tok)
			return -EACCES;
		c->used_token = true;
		r = ss_http_header(x, "Authorization: Bearer %s", tok);
	} else {
		if (ss_curl()->easy_setopt(e, CURLOPT_AWS_SIGV4, s->sigv4) != CURLE_OK ||
		    ss_curl()->easy_setopt(e, CURLOPT_USERNAME, s->access_key) != CURLE_OK ||
		    ss_curl()->easy_setopt(e, CURLOPT_PASSWORD, s->secret_key) != CURLE_OK)
			return -EINVAL;
		r = ss_http_header(x, "x-amz-content-sha256: %s", c->sha);
		if (!r && s->session_token)
			r = ss_http_header(x, "x-amz-security-token: %s", s->session_token);
	}
	if (!r && c->range[0])
		r = ss_http_header(x, "Range: %s", c->range);
	if (!r && c->ctype)
		r = ss_http_header(x, "Content-Type: %s", c->ctype);
	if (!r && c->if_absent)
		r = s->gcs ? ss_http_header(x, "x-goog-if-generation-match: 0")
			   : ss_http_header(x, "If-None-Match: *");
	if (!r && c->if_none_match)
		r = ss_http_header(x, "If-None-Match: %s", c->if_none_match);
	if (!r && c->upload_tag)
		r = ss_http_header(x, "%s: %s", s->gcs ? GCS_TAG_HEADER : S3_TAG_HEADER,
				   c->upload_tag);
	return r;
}

static char *obj_url(struct s3req *q, const char *query)
{
	struct s3 *s = q->s;
	return xasprintf("%s/%s%s%s", s->base, q->objpath, query ? "?" : "", query ? query : "");
}

/* --- completion ------------------------------------------------------- */

static struct s3req *req_alloc(struct s3 *s)
{
	struct s3req *q = s->free_reqs;
	if (!q)
		return calloc(1, sizeof(*q));
	s->free_reqs = q->next_free;
	s->nfree_reqs--;
	return q;
}

static void req_free(struct s3req *q)
{
	struct s3 *s = q->s;
	call_free(&q->c);
	if (q->slots)
		for (unsigned i = 0; i < s->window; i++)
			call_free(&q->slots[i]);
	free(q->slots);
	free(q->slot_busy);
	free(q->etags);
	free(q->cbody);
	free(q->upload_id_enc);
	free(q->objpath);
	free(q->full_prefix);
	if (s->nfree_reqs >= s->window) {
		free(q);
		return;
	}
	memset(q, 0, sizeof(*q));
	q->next_free = s->free_reqs;
	s->free_reqs = q;
	s->nfree_reqs++;
}

static void req_complete(struct ss_op *op, int res)
{
	struct s3req *q = (struct s3req *)op;
	struct ss_backend *b = q->s->b;
	struct ss_req *r = q->r;
	req_free(q);
	ss_backend_complete(b, r, res);
}

/* Complete on the next loop turn: the caller's done() may free the
 * backend, which must not happen inside curl's bookkeeping. */
static void req_finish(struct s3req *q, int res)
{
	q->op.done = req_complete;
	ss_loop_defer(q->s->b->loop, &q->op, res);
}

/* --- PUT -------------------------------------------------------------- */

static void mp_abort(struct s3req *q);
static void mp_pump(struct s3req *q);


/* A fresh random tag for this upload (see tag); on failure the
 * request is finished with the error. */
static int new_tag(struct s3req *q)
{
	uint8_t raw[16];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		req_finish(q, ss_err_set(q->r->err, -EIO, "%s %s: no random bytes for the upload tag",
					 q->s->svc, q->what));
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(q->tag + 2 * i, 3, "%02x", raw[i]);
	return 0;
}

static void put_single(struct s3req *q)
{
	struct ss_req *r = q->r;
	struct s3call *c = &q->c;
	char *url = obj_url(q, NULL);
	call_init(c, q, SS_HTTP_PUT, url);
	if (!url) {
		req_finish(q, ss_err_set(r->err, -ENOMEM, "out of memory"));
		return;
	}
	q->stage = ST_PUT;
	c->x.iov = r->iov;
	c->x.iovcnt = r->iovcnt;
	c->x.body_len = q->total;
	c->if_absent = (r->flags & SS_PUT_IF_ABSENT) != 0;
	/* A conditional put whose answer is lost is refused (412) on retry,
	 * by its own object: the tag tells the two apart. */
	if (c->if_absent) {
		if (new_tag(q))
			return;
		c->upload_tag = q->tag;
	}
	c->sha = "UNSIGNED-PAYLOAD";
	if (q->total <= HASH_LIMIT) {
		sha256_hex(r->iov, r->iovcnt, 0, q->total, c->shabuf);
		c->sha = c->shabuf;
	}
	call_start(c);
}

static void mp_init(struct s3req *q)
{
	struct s3 *s = q->s;
	uint64_t part = s->part_size;
	/* At most 10,000 parts: grow them for huge objects. */
	if ((q->total + part - 1) / part > MAX_PARTS)
		part = (q->total + MAX_PARTS - 1) / MAX_PARTS;
	q->nparts = (unsigned)((q->total + part - 1) / part);
	q->etags = calloc(q->nparts, sizeof(*q->etags));
	q->slots = calloc(s->window, sizeof(*q->slots));
	q->slot_busy = calloc(s->window, sizeof(*q->slot_busy));
	char *url = obj_url(q, "uploads=");
	call_init(&q->c, q, SS_HTTP_POST, url);
	if (!q->etags || !q->slots || !q->slot_busy || !url) {
		req_finish(q, ss_err_set(q->r->err, -ENOMEM, "out of memory"));
		return;
	}
	if (new_tag(q))
		return;
	q->part = part;
	q->stage = ST_MP_INIT;
	q->c.ctype = "application/octet-stream";
	q->c.upload_tag = q->tag;
	call_start(&q->c);
}

static void mp_part_done(struct s3call *c, int res)
{
	struct s3req *q = c->q;
	unsigned slot = (unsigned)(c - q->slots);
	q->slot_busy[slot] = false;
	q->parts_inflight--;
	if (res < 0) {
		if (!q->mp_res)
			q->mp_res = transport_error(q, c, res);
	} else if (c->x.status / 100 != 2 || !c->x.etag[0]) {
		if (!q->mp_res)
			q->mp_res = c->x.status / 100 == 2
					    ? ss_err_set(q->r->err, -EBADMSG,
							 "%s %s: part %u came back without an ETag",
							 q->s->svc, q->what, c->part)
					    : http_error(q, c);
	} else {
		memcpy(q->etags[c->part - 1], c->x.etag, sizeof(q->etags[0]));
		q->parts_ok++;
	}
	call_free(c);
	mp_pump(q);
}

static void mp_complete(struct s3req *q)
{
	/* <Part><PartNumber>n</PartNumber><ETag>"…"</ETag></Part> each, the
	 * ETag XML-escaped: it comes from the server. */
	struct ss_buf b = {.cap = (size_t)q->nparts * 400 + 256};
	int r = ss_buf_append(&b, "<CompleteMultipartUpload>", 25);
	for (unsigned i = 0; !r && i < q->nparts; i++) {
		char head[64];
		int n = snprintf(head, sizeof(head), "<Part><PartNumber>%u</PartNumber><ETag>", i + 1);
		r = ss_buf_append(&b, head, (size_t)n);
		for (const char *e = q->etags[i]; !r && *e; e++) {
			const char *rep = *e == '"' ? "&quot;" : *e == '&' ? "&amp;"
				      : *e == '<' ? "&lt;" : *e == '>' ? "&gt;" : NULL;
			r = rep ? ss_buf_append(&b, rep, strlen(rep)) : ss_buf_append(&b, e, 1);
		}
		if (!r)
			r = ss_buf_append(&b, "</ETag></Part>", 14);
	}
	if (!r)
		r = ss_buf_append(&b, "</CompleteMultipartUpload>", 26);
	char *query = xasprintf("uploadId=%s", q->upload_id_enc);
	char *url = query ? obj_url(q, query) : NULL;
	free(query);
	call_init(&q->c, q, SS_HTTP_POST, url);
	if (r || !url) {
		ss_buf_free(&b);
		q->mp_res = ss_err_set(q->r->err, -ENOMEM, "out of memory");
		mp_abort(q);
		return;
	}
	q->cbody = b.data;
	q->civ.iov_base = b.data;
	q->civ.iov_len = b.len;
	q->stage = ST_MP_COMPLETE;
	q->c.x.iov = &q->civ;
	q->c.x.iovcnt = 1;
	q->c.x.body_len = b.len;
	q->c.ctype = "application/xml";
	q->c.if_absent = (q->r->flags & SS_PUT_IF_ABSENT) != 0;
	sha256_hex(&q->civ, 1, 0, b.len, q->c.shabuf);
	q->c.sha = q->c.shabuf;
	call_start(&q->c);
}

/* Keep up to `window` parts in flight; when none is left, complete or
 * abort. */
static void mp_pump(struct s3req *q)
{
	struct s3 *s = q->s;
	uint64_t part = q->part;
	while (!q->mp_res && q->next_part < q->nparts && q->parts_inflight < s->window) {
		unsigned slot = 0;
		while (q->slot_busy[slot])
			slot++;
		struct s3call *c = &q->slots[slot];
		unsigned n = q->next_part++;
		char *query = xasprintf("partNumber=%u&uploadId=%s", n + 1, q->upload_id_enc);
		char *url = query ? obj_url(q, query) : NULL;
		free(query);
		call_init(c, q, SS_HTTP_PUT, url);
		if (!url) {
			q->mp_res = ss_err_set(q->r->err, -ENOMEM, "out of memory");
			break;
		}
		c->part = n + 1;
		c->x.iov = q->r->iov;
		c->x.iovcnt = q->r->iovcnt;
		c->x.body_off = (uint64_t)n * part;
		c->x.body_len = SS_MIN(part, q->total - c->x.body_off);
		c->sha = "UNSIGNED-PAYLOAD";
		if (c->x.body_len <= HASH_LIMIT) {
			sha256_hex(q->r->iov, q->r->iovcnt, c->x.body_off, c->x.body_len, c->shabuf);
			c->sha = c->shabuf;
		}
		q->slot_busy[slot] = true;
		q->parts_inflight++;
		call_start(c);
	}
	if (q->parts_inflight)
		return;
	if (q->mp_res)
		mp_abort(q);
	else if (q->parts_ok == q->nparts)
		mp_complete(q);
}

static void mp_abort(struct s3req *q)
{
	if (!q->upload_id[0]) {
		req_finish(q, q->mp_res);
		return;
	}
	char *query = xasprintf("uploadId=%s", q->upload_id_enc);
	char *url = query ? obj_url(q, query) : NULL;
	free(query);
	call_init(&q->c, q, SS_HTTP_DELETE, url);
	if (!url) {
		req_finish(q, q->mp_res);
		return;
	}
	ss_http_log(q->s->http, "%s %s: aborting the multipart upload", q->s->svc, q->what);
	q->stage = ST_MP_ABORT;
	call_start(&q->c);
}

/* A Complete or a conditional PUT failed after more than one attempt. An
 * earlier attempt may have done the work with its answer lost on the way
 * back (reset, stall); the retries then find no upload (NoSuchUpload, or
 * a 500 from some servers) or the object present (412). HEAD the object:
 * our tag on it, at our size, means the upload is done. Otherwise the
 * error stands. */
static void check_lost_answer(struct s3req *q, int res)
{
	q->mp_res = res;
	char *url = obj_url(q, NULL);
	call_init(&q->c, q, SS_HTTP_HEAD, url);
	if (!url) {
		mp_abort(q);
		return;
	}
	ss_http_log(q->s->http, "%s %s: failed after a retry; did an earlier attempt succeed?",
		    q->s->svc, q->what);
	q->stage = ST_CHECK_LOST;
	q->c.x.capture_name = q->s->gcs ? GCS_TAG_HEADER : S3_TAG_HEADER;
	call_start(&q->c);
}

static void lost_answer_checked(struct s3req *q, struct s3call *c, int res)
{
	if (res == 0 && c->x.status == 200 && c->x.content_length >= 0 &&
	    (uint64_t)c->x.content_length == q->total && strcmp(c->x.captured, q->tag) == 0) {
		ss_http_log(q->s->http, "%s %s: an earlier attempt had succeeded", q->s->svc,
			    q->what);
		ss_err_clear(q->r->err);
		req_finish(q, 0);
		return;
	}
	mp_abort(q);
}

/* --- HEAD failures ---------------------------------------------------- */

/* A HEAD answer has no body, so a refusal (403) comes without the code
 * that says why (AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch…).
 * Ask for one byte to get the error document; this costs a request only
 * on the way to failing. */
static void head_failed(struct s3req *q, struct s3call *c)
{
	if (c->x.status == 404 || c->x.status / 100 == 2 || c->x.status == 0) {
		req_finish(q, http_error(q, c));
		return;
	}
	q->head_status = c->x.status;
	char *url = obj_url(q, NULL);
	call_init(c, q, SS_HTTP_GET, url);
	if (!url) {
		req_finish(q, ss_err_set(q->r->err, -ENOMEM, "out of memory"));
		return;
	}
	q->stage = ST_ERR_PROBE;
	snprintf(c->range, sizeof(c->range), "bytes=0-0");
	c->x.sink = &q->probe_byte;
	c->x.sink_cap = 1;
	c->x.sink_excess_ok = true;
	call_start(c);
}

static void probe_done(struct s3req *q, struct s3call *c)
{
	if (c->x.status / 100 != 2) {
		req_finish(q, http_error(q, c));
		return;
	}
	/* The GET went through where the HEAD did not: report the HEAD. */
	req_finish(q, ss_err_set(q->r->err, status_errno(q->head_status), "%s %s: HTTP %ld",
				 q->s->svc, q->what, q->head_status));
}

/* --- GET -------------------------------------------------------------- */

static void get_size(struct s3req *q)
{
	char *url = obj_url(q, NULL);
	call_init(&q->c, q, SS_HTTP_HEAD, url);
	if (!url) {
		req_finish(q, ss_err_set(q->r->err, -ENOMEM, "out of memory"));
		return;
	}
	q->stage = ST_GET_SIZE;
	call_start(&q->c);
}

static int get_headers(struct ss_http_xfer *x)
{
	struct s3call *c = x->owner;
	struct s3req *q = c->q;
	struct ss_req *r = q->r;
	bool suffix = (r->flags & SS_GET_SUFFIX) && q->stage == ST_GET;
	if (x->status == 206 && !x->has_range && x->range_total == 0) {
		/* No range of an empty object exists (S3 answers 416); s3rver
		 * answers 206 "bytes 0-0/0" and a Content-Length of 1 it never
		 * sends. The object is empty: stop here (call_done). */
		q->empty = true;
		return -ECANCELED;
	}
	if (x->status == 206) {
		if (!x->has_range || x->range_total < 0) {
			snprintf(x->errmsg, sizeof(x->errmsg), "%s: 206 without a usable Content-Range",
				 x->what);
			return -EBADMSG;
		}
		uint64_t total = (uint64_t)x->range_total;
		uint64_t want = suffix ? (total > r->len ? total - r->len : 0) : r->off;
		if (q->stage == ST_GET_EXACT)
			want = total > r->len ? total - r->len : 0;
		q->size = total;
		q->size_known = true;
		if (x->range_start != want) {
			if (suffix) {
				/* Some servers (s3rver) read "bytes=-N" as "bytes=0-N":
				 * now that the size is known, ask again exactly. */
				q->refetch = true;
				x->sink = NULL;
				x->discard_body = true;
				return 0;
			}
			snprintf(x->errmsg, sizeof(x->errmsg),
				 "%s: the server sent bytes from %llu, not %llu", x->what,
				 (unsigned long long)x->range_start, (unsigned long long)want);
			return -EBADMSG;
		}
		x->sink_skip = 0;
	} else if (x->status == 200) {
		/* The whole object despite the Range header: keep our part. */
		if (x->content_length < 0) {
			snprintf(x->errmsg, sizeof(x->errmsg), "%s: no Content-Length", x->what);
			return -EBADMSG;
		}
		uint64_t total = (uint64_t)x->content_length;
		q->size = total;
		q->size_known = true;
		bool sfx = (r->flags & SS_GET_SUFFIX) != 0;
		x->sink_skip = sfx ? (total > r->len ? total - r->len : 0) : r->off;
		x->sink_excess_ok = true;
	}
	return 0;
}

static void get_start(struct s3req *q, enum stage st)
{
	struct ss_req *r = q->r;
	char *url = obj_url(q, NULL);
	call_init(&q->c, q, SS_HTTP_GET, url);
	if (!url) {
		req_finish(q, ss_err_set(r->err, -ENOMEM, "out of memory"));
		return;
	}
	q->stage = st;
	q->refetch = false;
	q->empty = false;
	struct s3call *c = &q->c;
	if (st == ST_GET && (r->flags & SS_GET_SUFFIX)) {
		snprintf(c->range, sizeof(c->range), "bytes=-%llu", (unsigned long long)r->len);
	} else if (st == ST_GET_EXACT) {
		uint64_t from = q->size > r->len ? q->size - r->len : 0;
		snprintf(c->range, sizeof(c->range), "bytes=%llu-%llu", (unsigned long long)from,
			 (unsigned long long)(q->size - 1));
	} else {
		snprintf(c->range, sizeof(c->range), "bytes=%llu-%llu", (unsigned long long)r->off,
			 (unsigned long long)(r->off + r->len - 1));
	}
	/* The condition goes with the first GET only: a second (the suffix
	 * spelled out) follows one that sent the object. */
	c->if_none_match = st == ST_GET ? r->if_none_match : NULL;
	c->x.on_headers = get_headers;
	c->x.sink = r->buf;
	c->x.sink_cap = r->len;
	call_start(c);
}

static void get_done(struct s3req *q, struct s3call *c)
{
	struct ss_req *r = q->r;
	long st = c->x.status;
	if (st == 416) {
		/* Past the end: no bytes, but the caller wants the size. */
		get_size(q);
		return;
	}
	if ((st == 304 || st == 412) && c->if_none_match) {
		/* The ETag still matches (304; 412 from a server that answers
		 * a GET as it would a write). */
		req_finish(q, SS_NOT_MODIFIED);
		return;
	}
	if (st != 200 && st != 206) {
		req_finish(q, http_error(q, c));
		return;
	}
	if (q->refetch) {
		if (q->size == 0) {
			r->size = 0;
			req_finish(q, 0);
			return;
		}
		get_start(q, ST_GET_EXACT);
		return;
	}
	bool sfx = (r->flags & SS_GET_SUFFIX) != 0;
	uint64_t start = sfx ? (q->size > r->len ? q->size - r->len : 0) : r->off;
	uint64_t want = start >= q->size ? 0 : SS_MIN(r->len, q->size - start);
	if (c->x.sink_len != want) {
		req_finish(q, ss_err_set(r->err, -EBADMSG, "%s %s: got %llu bytes, expected %llu",
					 q->s->svc, q->what, (unsigned long long)c->x.sink_len,
					 (unsigned long long)want));
		return;
	}
	r->size = q->size;
	snprintf(r->etag, sizeof(r->etag), "%s", c->x.etag);
	req_finish(q, (int)want);
}

/* --- LIST ------------------------------------------------------------- */

static int list_obj(void *arg, const char *key, uint64_t size)
{
	struct s3req *q = arg;
	size_t rl = strlen(q->s->root);
	if (strncmp(key, q->full_prefix, strlen(q->full_prefix)) != 0 || !key[rl]) {
		q->list_err = ss_err_set(q->r->err, -EBADMSG,
					 "%s %s: the listing holds a key outside the prefix",
					 q->s->svc, q->what);
		return 1;
	}
	int r = q->r->on_key(q->r->arg, key + rl, size);
	if (r) {
		q->stopped = true;
		q->stop_res = r;
		return 1;
	}
	return 0;
}

static void list_page(struct s3req *q)
{
	struct s3 *s = q->s;
	char *pfx = uri_encode(q->full_prefix, false);
	char *tok = q->page.token[0] ? uri_encode(q->page.token, false) : NULL;
	char *url = NULL;
	/* Parameters in sorted order: libcurl 7.88 signs the query as is. */
	if (pfx && (tok || !q->page.token[0]))
		url = xasprintf("%s?%s%s%slist-type=2&max-keys=%u&prefix=%s", s->list_base,
				tok ? "continuation-token=" : "", tok ? tok : "", tok ? "&" : "",
				s->list_page, pfx);
	free(pfx);
	free(tok);
	call_init(&q->c, q, SS_HTTP_GET, url);
	if (!url) {
		req_finish(q, ss_err_set(q->r->err, -ENOMEM, "out of memory"));
		return;
	}
	q->stage = ST_LIST;
	q->c.x.body_cap = LIST_BODY_MAX;
	call_start(&q->c);
}

static void list_done(struct s3req *q, struct s3call *c)
{
	if (c->x.status != 200) {
		req_finish(q, http_error(q, c));
		return;
	}
	snprintf(q->prev_token, sizeof(q->prev_token), "%s", q->page.token);
	int r = s3xml_list(c->x.body.data, c->x.body.len, list_obj, q, &q->page);
	if (q->list_err) {
		req_finish(q, q->list_err);
		return;
	}
	if (q->stopped) {
		req_finish(q, q->stop_res);
		return;
	}
	if (r) {
		req_finish(q, ss_err_set(q->r->err, -EBADMSG, "%s %s: malformed listing (page %u)",
					 q->s->svc, q->what, q->pages + 1));
		return;
	}
	q->pages++;
	if (!q->page.truncated) {
		req_finish(q, 0);
		return;
	}
	if (strcmp(q->page.token, q->prev_token) == 0 || q->pages >= 10000000) {
		req_finish(q, ss_err_set(q->r->err, -EBADMSG,
					 "%s %s: the listing does not advance", q->s->svc, q->what));
		return;
	}
	list_page(q);
}

/* --- the state machine ------------------------------------------------ */

static void call_done(struct ss_http_xfer *x, int res)
{
	struct s3call *c = x->owner;
	struct s3req *q = c->q;
	struct s3 *s = q->s;
	if (res == 0 && x->status == 401 && s->ga && c->used_token && !c->auth_retried) {
		/* The token was refused (revoked, or expired early): fetch a
		 * new one and try once more. */
		c->auth_retried = true;
		gauth_invalidate(s->ga, c->token_gen);
		ss_http_log(s->http, "%s %s: token refused, fetching a new one", s->svc, q->what);
		call_start(c);
		return;
	}
	if (c->part) {
		mp_part_done(c, res);
		return;
	}
	if (q->stage == ST_CHECK_LOST) {
		lost_answer_checked(q, c, res);
		return;
	}
	if (q->stage == ST_MP_ABORT) {
		/* Best effort: the upload failed already; a lifecycle rule
		 * reaps what an abort could not. */
		if (res < 0 || x->status / 100 != 2)
			ss_http_log(s->http, "%s %s: abort failed (HTTP %ld)", s->svc, q->what,
				    x->status);
		req_finish(q, q->mp_res);
		return;
	}
	if (q->empty && (q->stage == ST_GET || q->stage == ST_GET_EXACT)) {
		q->r->size = 0;
		req_finish(q, 0);
		return;
	}
	if (res < 0) {
		res = transport_error(q, c, res);
		if (q->stage == ST_PUT && c->upload_tag && x->attempts > 1) {
			check_lost_answer(q, res);
			return;
		}
		if (q->stage == ST_MP_COMPLETE) {
			if (x->attempts > 1) {
				check_lost_answer(q, res);
				return;
			}
			q->mp_res = res;
			mp_abort(q);
			return;
		}
		req_finish(q, res);
		return;
	}
	struct ss_req *r = q->r;
	switch (q->stage) {
	case ST_HEAD_CHECK:
		if (x->status == 200) {
			req_finish(q, ss_err_set(r->err, -EEXIST, "%s %s: object exists", s->svc,
						 q->what));
		} else if (x->status == 404) {
			if (q->total > s->mp_threshold)
				mp_init(q);
			else
				put_single(q);
		} else {
			head_failed(q, c);
		}
		return;
	case ST_ERR_PROBE:
		probe_done(q, c);
		return;
	case ST_PUT:
		if (x->status / 100 == 2) {
			snprintf(r->etag, sizeof(r->etag), "%s", x->etag);
			req_finish(q, 0);
		} else if (x->status == 412 && x->attempts > 1 && c->upload_tag) {
			check_lost_answer(q, ss_err_set(r->err, -EEXIST, "%s %s: object exists", s->svc,
						q->what));
		} else if (x->status == 412) {
			req_finish(q, ss_err_set(r->err, -EEXIST, "%s %s: object exists", s->svc,
						 q->what));
		} else {
			req_finish(q, http_error(q, c));
		}
		return;
	case ST_MP_INIT:
		if (x->status / 100 != 2) {
			req_finish(q, http_error(q, c));
			return;
		}
		if (s3xml_upload_id(x->body.data, x->body.len, q->upload_id,
				    sizeof(q->upload_id)) ||
		    !(q->upload_id_enc = uri_encode(q->upload_id, false))) {
			q->upload_id[0] = '\0';
			req_finish(q, ss_err_set(r->err, -EBADMSG,
						 "%s %s: malformed InitiateMultipartUpload answer",
						 s->svc, q->what));
			return;
		}
		q->stage = ST_MP_PARTS;
		call_free(c);
		mp_pump(q);
		return;
	case ST_MP_COMPLETE: {
		if (x->status == 412) {
			int e = ss_err_set(r->err, -EEXIST, "%s %s: object exists", s->svc, q->what);
			if (x->attempts > 1) {
				check_lost_answer(q, e);
				return;
			}
			q->mp_res = e;
			mp_abort(q);
			return;
		}
		if (x->status / 100 != 2) {
			int e = http_error(q, c);
			if (x->attempts > 1) {
				check_lost_answer(q, e);
				return;
			}
			q->mp_res = e;
			mp_abort(q);
			return;
		}
		char code[64];
		int k = s3xml_complete(x->body.data, x->body.len, code, sizeof(code));
		if (k == 0) {
			req_finish(q, 0);
			return;
		}
		/* S3 can answer 200 and still fail, with an <Error> body;
		 * internal errors and slow-downs are worth another try. */
		if (k == 1 && (strcmp(code, "InternalError") == 0 || strcmp(code, "SlowDown") == 0 ||
			       strcmp(code, "ServiceUnavailable") == 0)) {
			if (ss_http_retry(x, code) == 0)
				return;
		}
		scrub(s, code);
		int e = ss_err_set(r->err, k == 1 ? -EIO : -EBADMSG,
				   "%s %s: CompleteMultipartUpload failed: %s", s->svc, q->what,
				   k == 1 ? code : "malformed answer");
		if (x->attempts > 1) {
			check_lost_answer(q, e);
			return;
		}
		q->mp_res = e;
		mp_abort(q);
		return;
	}
	case ST_GET:
	case ST_GET_EXACT:
		get_done(q, c);
		return;
	case ST_GET_SIZE:
		if (x->status == 200 && x->content_length >= 0) {
			r->size = (uint64_t)x->content_length;
			req_finish(q, 0);
		} else {
			head_failed(q, c);
		}
		return;
	case ST_STAT:
		if (x->status == 200 && x->content_length >= 0) {
			r->size = (uint64_t)x->content_length;
			req_finish(q, 0);
		} else if (x->status == 200) {
			req_finish(q, ss_err_set(r->err, -EBADMSG, "%s %s: no Content-Length",
						 s->svc, q->what));
		} else {
			head_failed(q, c);
		}
		return;
	case ST_DELETE:
		if (x->status / 100 == 2)
			req_finish(q, 0);
		else
			req_finish(q, http_error(q, c));
		return;
	case ST_LIST:
		list_done(q, c);
		return;
	case ST_MP_PARTS:
	case ST_MP_ABORT:
	case ST_CHECK_LOST:
		break;
	}
	req_finish(q, ss_err_set(r->err, -EIO, "%s %s: internal state error", s->svc, q->what));
}

static int s3_submit(struct ss_backend *b, struct ss_req *r)
{
	struct s3 *s = S(b);
	if (r->kind == SS_REQ_GET && (r->len > (uint64_t)INT32_MAX || (r->len && !r->buf)))
		return -EINVAL;
	if (r->kind < SS_REQ_PUT || r->kind > SS_REQ_STAT ||
	    (r->kind == SS_REQ_LIST && !r->on_key))
		return -EINVAL;
	struct s3req *q = req_alloc(s);
	if (!q)
		return -ENOMEM;
	q->s = s;
	q->r = r;
	const char *key = r->key ? r->key : "";
	static const char *const names[] = {[SS_REQ_PUT] = "PUT", [SS_REQ_GET] = "GET",
					    [SS_REQ_LIST] = "LIST", [SS_REQ_DELETE] = "DELETE",
					    [SS_REQ_STAT] = "HEAD"};
	snprintf(q->what, sizeof(q->what), "%s %s/%s%s", names[r->kind], s->bucket, s->root, key);
	char *full = xasprintf("%s%s", s->root, key);
	if (!full) {
		req_free(q);
		return -ENOMEM;
	}
	if (r->kind == SS_REQ_LIST) {
		q->full_prefix = full;
		list_page(q);
		return 0;
	}
	q->objpath = uri_encode(full, true);
	free(full);
	if (!q->objpath) {
		req_free(q);
		return -ENOMEM;
	}
	switch (r->kind) {
	case SS_REQ_PUT: {
		/* Payload digests (sha256_hex). libcrypto is loaded by the first
		 * request with a body, not when the store is opened: a pull only
		 * GETs, and the load would hold up its start by ~2 ms. */
		int cr = ss_crypto_load(r->err);
		if (cr) {
			req_free(q);
			return cr;
		}
		for (unsigned i = 0; i < r->iovcnt; i++)
			q->total += r->iov[i].iov_len;
		if (r->flags & SS_PUT_IF_ABSENT) {
			/* Servers that ignore conditional writes (s3rver) still
			 * get a check; S3 and GCS also enforce it atomically. */
			char *url = obj_url(q, NULL);
			call_init(&q->c, q, SS_HTTP_HEAD, url);
			if (!url) {
				req_free(q);
				return -ENOMEM;
			}
			q->stage = ST_HEAD_CHECK;
			call_start(&q->c);
		} else if (q->total > s->mp_threshold) {
			mp_init(q);
		} else {
			put_single(q);
		}
		return 0;
	}
	case SS_REQ_GET:
		if (r->len == 0)
			get_size(q);
		else
			get_start(q, ST_GET);
		return 0;
	case SS_REQ_STAT:
	case SS_REQ_DELETE: {
		char *url = obj_url(q, NULL);
		call_init(&q->c, q, r->kind == SS_REQ_STAT ? SS_HTTP_HEAD : SS_HTTP_DELETE, url);
		if (!url) {
			req_free(q);
			return -ENOMEM;
		}
		q->stage = r->kind == SS_REQ_STAT ? ST_STAT : ST_DELETE;
		call_start(&q->c);
		return 0;
	}
	case SS_REQ_LIST:
		break;
	}
	req_free(q);
	return -EINVAL;
}

/* --- configuration ---------------------------------------------------- */

/* A variable of the caller's environment block (never the process's:
 * backend.h, ss_backend_opts.env). */
static const char *env(const struct s3 *s, const char *name)
{
	return ss_env_get(s->b->opts.env, name);
}

/* A size or count from the environment: digits with an optional K, M, G
 * or T (binary; ss_parse_bytes). 0 when unset. */
static int env_u64(const struct s3 *s, const char *name, uint64_t min, uint64_t max,
		   uint64_t *out, struct ss_err *err)
{
	const char *v = env(s, name);
	*out = 0;
	if (!v)
		return 0;
	if (!ss_parse_bytes(v, min, max, out))
		return ss_err_set(err, -EINVAL, "%s=%s: want a number in %llu..%llu", name, v,
				  (unsigned long long)min, (unsigned long long)max);
	return 0;
}

static int pick_u(const struct s3 *s, unsigned opt, const char *name, unsigned min,
		  unsigned max, unsigned dflt, unsigned *out, struct ss_err *err)
{
	uint64_t v;
	int r = env_u64(s, name, min, max, &v, err);
	if (r)
		return r;
	*out = opt ? opt : v ? (unsigned)v : dflt;
	return 0;
}

/* One value from an INI-style AWS file: `key` in section `section`. */
static char *ini_get(const char *path, const char *section, const char *key)
{
	uint8_t *buf;
	size_t len;
	if (ss_read_small_file(path, 1 << 20, &buf, &len))
		return NULL;
	char *out = NULL;
	bool in = false;
	char *save = NULL;
	char *text = realloc(buf, len + 1);
	if (!text) {
		explicit_bzero(buf, len);
		free(buf);
		return NULL;
	}
	text[len] = '\0';
	for (char *line = strtok_r(text, "\n", &save); line && !out;
	     line = strtok_r(NULL, "\n", &save)) {
		while (*line == ' ' || *line == '\t')
			line++;
		size_t n = strlen(line);
		while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
			line[--n] = '\0';
		if (line[0] == '#' || line[0] == ';' || !n)
			continue;
		if (line[0] == '[') {
			char *close = strchr(line, ']');
			if (close) {
				*close = '\0';
				char *name = line + 1;
				while (*name == ' ')
					name++;
				size_t nl = strlen(name);
				while (nl && name[nl - 1] == ' ')
					name[--nl] = '\0';
				in = strcmp(name, section) == 0;
			}
			continue;
		}
		char *eq = strchr(line, '=');
		if (!in || !eq)
			continue;
		char *k = line, *v = eq + 1;
		*eq = '\0';
		size_t kl = strlen(k);
		while (kl && (k[kl - 1] == ' ' || k[kl - 1] == '\t'))
			k[--kl] = '\0';
		while (*v == ' ' || *v == '\t')
			v++;
		if (strcmp(k, key) == 0 && *v)
			out = strdup(v);
	}
	explicit_bzero(text, len);
	free(text);
	return out;
}

static char *aws_file(const struct s3 *s, const char *envname, const char *leaf)
{
	const char *p = env(s, envname);
	if (p)
		return strdup(p);
	const char *home = env(s, "HOME");
	return home ? xasprintf("%s/.aws/%s", home, leaf) : NULL;
}

static int aws_setup(struct s3 *s, char *region, size_t regcap, struct ss_err *err)
{
	const char *profile = env(s, "AWS_PROFILE");
	if (!profile)
		profile = env(s, "AWS_DEFAULT_PROFILE");
	if (!profile)
		profile = "default";
	const char *ak = env(s, "AWS_ACCESS_KEY_ID"), *sk = env(s, "AWS_SECRET_ACCESS_KEY");
	if (ak && sk) {
		s->access_key = strdup(ak);
		s->secret_key = strdup(sk);
		const char *st = env(s, "AWS_SESSION_TOKEN");
		if (st)
			s->session_token = strdup(st);
	} else {
		char *path = aws_file(s, "AWS_SHARED_CREDENTIALS_FILE", "credentials");
		if (path) {
			s->access_key = ini_get(path, profile, "aws_access_key_id");
			s->secret_key = ini_get(path, profile, "aws_secret_access_key");
			s->session_token = ini_get(path, profile, "aws_session_token");
		}
		free(path);
		if (!s->access_key || !s->secret_key)
			return ss_err_set(err, -EACCES,
					  "no AWS credentials: set AWS_ACCESS_KEY_ID and "
					  "AWS_SECRET_ACCESS_KEY, or add the profile [%s] to "
					  "~/.aws/credentials",
					  profile);
	}
	const char *reg = env(s, "AWS_REGION");
	if (!reg)
		reg = env(s, "AWS_DEFAULT_REGION");
	char *from_file = NULL;
	if (!reg) {
		char *path = aws_file(s, "AWS_CONFIG_FILE", "config");
		char sect[300];
		snprintf(sect, sizeof(sect), strcmp(profile, "default") == 0 ? "%s" : "profile %s",
			 profile);
		from_file = path ? ini_get(path, sect, "region") : NULL;
		free(path);
		reg = from_file;
	}
	snprintf(region, regcap, "%s", reg ? reg : "us-east-1");
	free(from_file);
	for (const char *c = region; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '-')
			return ss_err_set(err, -EINVAL, "AWS region '%s' is not a region name", region);
	if (!s->access_key || !s->secret_key || (env(s, "AWS_SESSION_TOKEN") && !s->session_token))
		return ss_err_set(err, -ENOMEM, "out of memory");
	if (strchr(s->access_key, ':'))
		return ss_err_set(err, -EINVAL, "AWS access key id has a ':'");
	return 0;
}

static int endpoint_ok(const char *url)
{
	if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
		return -EINVAL;
	for (const char *c = url; *c; c++)
		if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || *c == '?' || *c == '#')
			return -EINVAL;
	return 0;
}

static int s3_setup_urls(struct s3 *s, const char *endpoint, bool path_style,
			 struct ss_err *err)
{
	char *ep = strdup(endpoint);
	if (!ep)
		return ss_err_set(err, -ENOMEM, "out of memory");
	size_t n = strlen(ep);
	while (n && ep[n - 1] == '/')
		ep[--n] = '\0';
	if (path_style) {
		s->base = xasprintf("%s/%s", ep, s->bucket);
		s->list_base = s->base ? strdup(s->base) : NULL;
	} else {
		/* scheme://bucket.host… */
		char *host = strstr(ep, "://") + 3;
		s->base = xasprintf("%.*s%s.%s", (int)(host - ep), ep, s->bucket, host);
		s->list_base = s->base ? xasprintf("%s/", s->base) : NULL;
	}
	free(ep);
	if (!s->base || !s->list_base)
		return ss_err_set(err, -ENOMEM, "out of memory");
	return 0;
}

static bool bucket_ok(const char *b, size_t n)
{
	if (n < 3 || n > 222)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = b[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		      c == '_'))
			return false;
		if (c == '.' && i && b[i - 1] == '.')
			return false;
	}
	return isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]);
}

static void s3_destroy(struct ss_backend *b);

static int objstore_open(struct ss_backend *b, const char *location, bool gcs,
			 struct ss_err *err)
{
	struct s3 *s = calloc(1, sizeof(*s));
	if (!s)
		return ss_err_set(err, -ENOMEM, "out of memory");
	s->b = b;
	s->gcs = gcs;
	s->svc = gcs ? "GCS" : "S3";
	b->priv = s;
	const struct ss_backend_opts *o = &b->opts;
	int r;
	const char *slash = strchr(location, '/');
	size_t bl = slash ? (size_t)(slash - location) : strlen(location);
	if (!bucket_ok(location, bl)) {
		r = ss_err_set(err, -EINVAL, "'%.*s' is not a bucket name", (int)SS_MIN(bl, 300),
			       location);
		goto fail;
	}
	s->bucket = strndup(location, bl);
	if (slash && slash[1] && !ss_key_ok(slash + 1)) {
		r = ss_err_set(err, -EINVAL, "'%s' is not a valid key prefix", slash + 1);
		goto fail;
	}
	s->root = slash && slash[1] ? xasprintf("%s/", slash + 1) : strdup("");
	if (!s->bucket || !s->root) {
		r = ss_err_set(err, -ENOMEM, "out of memory");
		goto fail;
	}

	struct ss_http_opts ho = {0};
	unsigned inflight = o->max_inflight ? o->max_inflight : 32;
	uint64_t v;
	if ((r = pick_u(s, o->retry_max, "SNAPSTREAM_RETRY_MAX", 1, 100, 8, &ho.retry_max, err)) ||
	    (r = pick_u(s, o->retry_seconds, "SNAPSTREAM_RETRY_SECONDS", 1, 86400, 300,
			&ho.retry_seconds, err)) ||
	    (r = pick_u(s, o->stall_seconds, "SNAPSTREAM_STALL_SECONDS", 1, 3600, 30,
			&ho.stall_seconds, err)) ||
	    (r = pick_u(s, o->list_page, "SNAPSTREAM_LIST_PAGE", 1, 1000, 1000, &s->list_page, err)))
		goto fail;
	if ((r = env_u64(s, "SNAPSTREAM_PART_SIZE", MIN_PART, MAX_PART, &v, err)))
		goto fail;
	s->part_size = o->part_size ? o->part_size : v ? v : 16ull << 20;
	if ((r = env_u64(s, "SNAPSTREAM_MULTIPART_THRESHOLD", 1, UINT64_MAX >> 1, &v, err)))
		goto fail;
	s->mp_threshold = o->multipart_threshold ? o->multipart_threshold : v ? v : 64ull << 20;
	if (s->part_size < MIN_PART || s->part_size > MAX_PART) {
		r = ss_err_set(err, -EINVAL, "part size must be 5 MiB .. 5 GiB");
		goto fail;
	}
	ho.max_xfers = inflight;
	ho.log = o->log;
	ho.log_arg = o->log_arg;
	const char *ca = env(s, "SNAPSTREAM_CA_BUNDLE");
	if (!ca && !gcs)
		ca = env(s, "AWS_CA_BUNDLE");
	if (ca && !(s->ca_bundle = strdup(ca))) {
		r = ss_err_set(err, -ENOMEM, "out of memory");
		goto fail;
	}
	ho.ca_bundle = s->ca_bundle;
	s->window = inflight;
	b->max_inflight = inflight;

	if ((r = ss_http_new(b->loop, &ho, &s->http, err)))
		goto fail;

	if (gcs) {
		const char *ep = env(s, "SNAPSTREAM_GCS_ENDPOINT");
		if (!ep)
			ep = "https://storage.googleapis.com";
		if (endpoint_ok(ep)) {
			r = ss_err_set(err, -EINVAL, "SNAPSTREAM_GCS_ENDPOINT is not an http(s) URL");
			goto fail;
		}
		if ((r = s3_setup_urls(s, ep, true, err)))
			goto fail;
		const char *hid = env(s, "SNAPSTREAM_GCS_HMAC_ACCESS_ID");
		const char *hsec = env(s, "SNAPSTREAM_GCS_HMAC_SECRET");
		if (hid && hsec) {
			/* GCS takes S3's SigV4 with HMAC keys, region "auto". */
			s->access_key = strdup(hid);
			s->secret_key = strdup(hsec);
			snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:auto:s3");
			if (!s->access_key || !s->secret_key) {
				r = ss_err_set(err, -ENOMEM, "out of memory");
				goto fail;
			}
		} else if ((r = gauth_new(s->http, o->env, &s->ga, err))) {
			goto fail;
		}
	} else {
		char region[64];
		if ((r = aws_setup(s, region, sizeof(region), err)))
			goto fail;
		snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", region);
		const char *ep = env(s, "AWS_ENDPOINT_URL_S3");
		if (!ep)
			ep = env(s, "AWS_ENDPOINT_URL");
		if (ep && endpoint_ok(ep)) {
			r = ss_err_set(err, -EINVAL, "AWS_ENDPOINT_URL is not an http(s) URL");
			goto fail;
		}
		const char *style = env(s, "SNAPSTREAM_S3_ADDRESSING");
		bool path_style;
		if (!style || strcmp(style, "auto") == 0) {
			/* Custom endpoints (MinIO, s3rver) want paths; dotted
			 * bucket names would not match the TLS wildcard. */
			path_style = ep || strchr(s->bucket, '.');
		} else if (strcmp(style, "path") == 0) {
			path_style = true;
		} else if (strcmp(style, "virtual") == 0) {
			path_style = false;
		} else {
			r = ss_err_set(err, -EINVAL,
				       "SNAPSTREAM_S3_ADDRESSING must be path, virtual or auto");
			goto fail;
		}
		char dflt[128];
		snprintf(dflt, sizeof(dflt), "https://s3.%s.amazonaws.com", region);
		if ((r = s3_setup_urls(s, ep ? ep : dflt, path_style, err)))
			goto fail;
	}
	return 0;
fail:
	s3_destroy(b);
	b->priv = NULL;
	return r;
}

static int s3_open(struct ss_backend *b, const char *location, struct ss_err *err)
{
	return objstore_open(b, location, false, err);
}

static int gs_open(struct ss_backend *b, const char *location, struct ss_err *err)
{
	return objstore_open(b, location, true, err);
}

static void s3_destroy(struct ss_backend *b)
{
	struct s3 *s = S(b);
	if (!s)
		return;
	gauth_free(s->ga);
	ss_http_free(s->http);
	while (s->free_reqs) {
		struct s3req *q = s->free_reqs;
		s->free_reqs = q->next_free;
		free(q);
	}
	free(s->bucket);
	free(s->root);
	free(s->base);
	free(s->list_base);
	free(s->ca_bundle);
	wipe_free(s->access_key);
	wipe_free(s->secret_key);
	wipe_free(s->session_token);
	explicit_bzero(s, sizeof(*s));
	free(s);
}

static int s3_identity(const struct ss_backend *b, char *buf, size_t n)
{
	/* The bucket's URL names the endpoint and the bucket. */
	const struct s3 *s = b->priv;
	int k = snprintf(buf, n, "%s %s/%s", s->gcs ? "gs" : "s3", s->base, s->root);
	return k < 0 || (size_t)k >= n ? -ENOSPC : 0;
}

const struct ss_backend_ops ss_s3_ops = {
	.name = "s3",
	.scheme = "s3",
	.open = s3_open,
	.identity = s3_identity,
	.submit = s3_submit,
	.destroy = s3_destroy,
};

const struct ss_backend_ops ss_gs_ops = {
	.name = "gcs",
	.scheme = "gs",
	.open = gs_open,
	.identity = s3_identity,
	.submit = s3_submit,
	.destroy = s3_destroy,
};
