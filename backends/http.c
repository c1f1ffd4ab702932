/* http — libcurl's multi interface on the engine's io_uring loop. See
 * http.h for the model; the comments here explain the edge cases. */
#include "http.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define BACKOFF_BASE_NS 100000000ull     /* first retry waits up to 100 ms */
#define BACKOFF_CAP_NS 20000000000ull    /* no single wait above 20 s */

#define CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* One socket curl asked us to watch. It lives until curl lets go of it
 * (CURL_POLL_REMOVE) and no poll on it is left in the ring, because the
 * ring's completion still points here. */
struct hsock {
	struct ss_op op;
	struct ss_http *h;
	curl_socket_t fd;
	unsigned want;          /* POLLIN/POLLOUT that curl wants */
	unsigned armed_mask;
	bool armed;             /* a POLL_ADD is in the ring */
	bool cancel_sent;       /* and a POLL_REMOVE for it */
	bool dead;              /* curl let go */
	bool dispatching;       /* inside curl_multi_socket_action for it */
	struct hsock *prev, *next;
};

struct ss_http {
	struct ss_loop *loop;
	CURLM *multi;
	struct ss_http_opts o;

	/* curl's single timer: the deadline it wants and the one armed. */
	struct ss_op timer_op;
	struct __kernel_timespec timer_ts;
	bool timer_armed, timer_cancel_sent;
	uint64_t deadline_ns, armed_deadline_ns;
	struct ss_op kick_op;   /* a zero timeout: run curl on the next turn */
	bool kick_pending;
	/* Completions of POLL_REMOVE and TIMEOUT_REMOVE carry no state. */
	struct ss_op noop_op;
	unsigned ring_ops;      /* our SQEs whose CQE has not been reaped */
	unsigned deferred;      /* our ops on the loop's deferred list */

	CURL **easy_free;
	unsigned neasy_free;
	unsigned active;
	struct ss_http_xfer *qhead, *qtail;
	struct hsock *socks;
	uint64_t rng;
	bool closing;
	/* Transfers that are active or waiting for a retry, for teardown. */
	struct ss_http_xfer **live;
	unsigned nlive;
	size_t live_cap;
};

uint64_t ss_http_now_ns(void)
{
	return ss_now_ns();
}

void ss_http_log(struct ss_http *h, const char *fmt, ...)
{
	if (!h->o.log)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	h->o.log(h->o.log_arg, msg);
}

static uint64_t rng_next(struct ss_http *h)
{
	/* xorshift64*: jitter only needs to be uncorrelated across clients. */
	uint64_t x = h->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	h->rng = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static struct io_uring_sqe *sqe_for(struct ss_http *h, struct ss_op *op)
{
	h->ring_ops++;
	return ss_loop_sqe(h->loop, op);
}

static void noop_done(struct ss_op *op, int res)
{
	struct ss_http *h = CONTAINER(op, struct ss_http, noop_op);
	(void)res;
	h->ring_ops--;
}

/* --- live transfer set ------------------------------------------------ */

static int live_add(struct ss_http *h, struct ss_http_xfer *x)
{
	if (SS_GROW(h->live, h->live_cap, h->nlive + 1, 64))
		return -ENOMEM;
	h->live[h->nlive++] = x;
	return 0;
}

static void live_del(struct ss_http *h, struct ss_http_xfer *x)
{
	for (unsigned i = 0; i < h->nlive; i++)
		if (h->live[i] == x) {
			h->live[i] = h->live[--h->nlive];
			return;
		}
}

/* --- sockets ---------------------------------------------------------- */

static void sock_event(struct ss_op *op, int res);

static void sock_free(struct hsock *s)
{
	struct ss_http *h = s->h;
	if (s->prev)
		s->prev->next = s->next;
	else
		h->socks = s->next;
	if (s->next)
		s->next->prev = s->prev;
	free(s);
}

/* Bring the ring in line with what curl wants for s: arm a poll, ask the
 * kernel to drop one whose mask is stale, or free s once curl and the
 * ring are both done with it. */
static void sock_settle(struct hsock *s)
{
	struct ss_http *h = s->h;
	if (s->dispatching)
		return;   /* sock_event settles after curl returns */
	if (s->armed) {
		if ((s->dead || s->armed_mask != s->want) && !s->cancel_sent) {
			struct io_uring_sqe *sqe = sqe_for(h, &h->noop_op);
			io_uring_prep_poll_remove(sqe, (__u64)(uintptr_t)&s->op);
			s->cancel_sent = true;
		}
		return;   /* its completion comes back to sock_event */
	}
	if (s->dead) {
		sock_free(s);
		return;
	}
	if (s->want && !h->closing) {
		struct io_uring_sqe *sqe = sqe_for(h, &s->op);
		io_uring_prep_poll_add(sqe, s->fd, s->want);
		s->armed = true;
		s->armed_mask = s->want;
	}
}

static void check_done(struct ss_http *h);

static void sock_event(struct ss_op *op, int res)
{
	struct hsock *s = CONTAINER(op, struct hsock, op);
	struct ss_http *h = s->h;
	h->ring_ops--;
	s->armed = false;
	s->cancel_sent = false;
	if (!s->dead && !h->closing && res != -ECANCELED) {
		int ev = 0;
		unsigned r = res < 0 ? POLLERR : (unsigned)res;
		/* An error or hang-up is reported as readiness for what curl
		 * waits for, so that it reads the EOF or the error itself. */
		if ((r & POLLIN) || ((r & (POLLERR | POLLHUP)) && (s->want & POLLIN)))
			ev |= CURL_CSELECT_IN;
		if ((r & POLLOUT) || ((r & (POLLERR | POLLHUP)) && (s->want & POLLOUT)))
			ev |= CURL_CSELECT_OUT;
		if (r & POLLERR)
			ev |= CURL_CSELECT_ERR;
		int running;
		s->dispatching = true;
		ss_curl()->multi_socket_action(h->multi, s->fd, ev, &running);
		s->dispatching = false;
	}
	sock_settle(s);
	check_done(h);
}

static int socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct ss_http *h = userp;
	struct hsock *s = socketp;
	(void)e;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			s->dead = true;
			s->want = 0;
			ss_curl()->multi_assign(h->multi, fd, NULL);
			sock_settle(s);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->h = h;
		s->fd = fd;
		s->op.done = sock_event;
		s->next = h->socks;
		if (h->socks)
			h->socks->prev = s;
		h->socks = s;
		ss_curl()->multi_assign(h->multi, fd, s);
	}
	s->want = ((what & CURL_POLL_IN) ? POLLIN : 0) | ((what & CURL_POLL_OUT) ? POLLOUT : 0);
	sock_settle(s);
	return 0;
}

/* --- curl's timer ----------------------------------------------------- */

static void timer_arm(struct ss_http *h)
{
	uint64_t now = ss_now_ns();
	uint64_t d = h->deadline_ns > now ? h->deadline_ns - now : 0;
	h->timer_ts.tv_sec = (long long)(d / 1000000000ull);
	h->timer_ts.tv_nsec = (long long)(d % 1000000000ull);
	struct io_uring_sqe *sqe = sqe_for(h, &h->timer_op);
	io_uring_prep_timeout(sqe, &h->timer_ts, 0, 0);
	h->timer_armed = true;
	h->armed_deadline_ns = h->deadline_ns;
}

static void timer_fired(struct ss_op *op, int res)
{
	struct ss_http *h = CONTAINER(op, struct ss_http, timer_op);
	(void)res;
	h->ring_ops--;
	h->timer_armed = false;
	h->timer_cancel_sent = false;
	if (h->closing)
		return;
	/* The armed timeout may be one curl has since replaced: act only
	 * when the deadline curl wants now has passed. */
	if (h->deadline_ns && ss_now_ns() >= h->deadline_ns) {
		h->deadline_ns = 0;
		int running;
		ss_curl()->multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	if (h->deadline_ns && !h->timer_armed)
		timer_arm(h);
	check_done(h);
}

static void kick_run(struct ss_op *op, int res)
{
	struct ss_http *h = CONTAINER(op, struct ss_http, kick_op);
	(void)res;
	h->kick_pending = false;
	h->deferred--;
	if (h->closing)
		return;
	int running;
	ss_curl()->multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(h);
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
	struct ss_http *h = userp;
	(void)m;
	if (ms < 0) {
		/* A stale armed timeout fires once and finds nothing to do. */
		h->deadline_ns = 0;
		return 0;
	}
	if (ms == 0) {
		/* curl forbids calling it back from inside this callback. */
		h->deadline_ns = 0;
		if (!h->kick_pending) {
			h->kick_pending = true;
			h->deferred++;
			ss_loop_defer(h->loop, &h->kick_op, 0);
		}
		return 0;
	}
	h->deadline_ns = ss_now_ns() + (uint64_t)ms * 1000000ull;
	if (!h->timer_armed) {
		timer_arm(h);
	} else if (h->armed_deadline_ns > h->deadline_ns && !h->timer_cancel_sent) {
		/* Too late: cancel it; its completion re-arms for the deadline.
		 * An armed timeout that is too early simply re-arms on firing. */
		struct io_uring_sqe *sqe = sqe_for(h, &h->noop_op);
		io_uring_prep_timeout_remove(sqe, (__u64)(uintptr_t)&h->timer_op, 0);
		h->timer_cancel_sent = true;
	}
	return 0;
}

/* --- transfer plumbing ------------------------------------------------ */

static void cursor_seek(struct ss_http_xfer *x, uint64_t rel)
{
	uint64_t abs = x->body_off + rel;
	unsigned i = 0;
	while (i < x->iovcnt && abs >= x->iov[i].iov_len) {
		abs -= x->iov[i].iov_len;
		i++;
	}
	x->rd_idx = i;
	x->rd_in = abs;
	x->rd_pos = rel;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
	struct ss_http_xfer *x = ud;
	size_t want = size * n, got = 0;
	uint64_t left = x->body_len - x->rd_pos;
	if (want > left)
		want = (size_t)left;
	while (got < want && x->rd_idx < x->iovcnt) {
		const struct iovec *v = &x->iov[x->rd_idx];
		size_t k = SS_MIN(want - got, v->iov_len - x->rd_in);
		memcpy(buf + got, (const uint8_t *)v->iov_base + x->rd_in, k);
		got += k;
		x->rd_in += k;
		if (x->rd_in == v->iov_len) {
			x->rd_idx++;
			x->rd_in = 0;
		}
	}
	x->rd_pos += got;
	return got;
}

/* curl rewinds the body when it replays a request on a fresh connection
 * (a kept-alive one that the server had closed). */
static int on_seek(void *ud, curl_off_t off, int origin)
{
	struct ss_http_xfer *x = ud;
	if (origin != SEEK_SET || off < 0 || (uint64_t)off > x->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	cursor_seek(x, (uint64_t)off);
	return CURL_SEEKFUNC_OK;
}

static bool is_2xx(long s)
{
	return s >= 200 && s < 300;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
	struct ss_http_xfer *x = ud;
	size_t len = size * n;
	if (is_2xx(x->status) && x->sink) {
		uint64_t pos = x->recv_len, lo = x->sink_skip, hi = x->sink_skip + x->sink_cap;
		x->recv_len += len;
		uint64_t a = SS_MAX(pos, lo), b = SS_MIN(pos + len, hi);
		if (a < b) {
			memcpy(x->sink + (a - lo), p + (a - pos), (size_t)(b - a));
			x->sink_len = SS_MAX(x->sink_len, b - lo);
		}
		if (pos + len > hi && !x->sink_excess_ok) {
			snprintf(x->errmsg, sizeof(x->errmsg),
				 "%s: the server sent more bytes than were asked for", x->what);
			x->abort_res = -EBADMSG;
			return 0;
		}
		return len;
	}
	if (is_2xx(x->status)) {
		x->recv_len += len;
		if (x->discard_body)
			return len;
	}
	if (ss_buf_append(&x->body, p, len)) {
		if (!is_2xx(x->status))
			return len;   /* an error document: the start is enough */
		snprintf(x->errmsg, sizeof(x->errmsg), "%s: response larger than %zu bytes",
			 x->what, x->body_cap);
		x->abort_res = -EFBIG;
		return 0;
	}
	return len;
}

static void parse_range(struct ss_http_xfer *x, const char *v)
{
	unsigned long long a, b, t;
	if (strncasecmp(v, "bytes ", 6) != 0)
		return;
	v += 6;
	int n = sscanf(v, "%llu-%llu/%llu", &a, &b, &t);
	if (n == 3 && a <= b && b < t) {
		x->range_total = (int64_t)t;
	} else if (n == 3 && t == 0) {
		/* No range of an empty object exists; say only its size. */
		x->range_total = 0;
		x->has_range = false;
		return;
	} else if (sscanf(v, "%llu-%llu/*", &a, &b) == 2 && a <= b) {
		x->range_total = -1;
	} else if (sscanf(v, "*/%llu", &t) == 1) {
		x->range_total = (int64_t)t;
		x->has_range = false;
		return;
	} else {
		return;
	}
	x->has_range = true;
	x->range_start = a;
	x->range_end = b;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	struct ss_http_xfer *x = ud;
	size_t len = size * n;
	if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
		/* A new response (after "100 Continue", say): start over. */
		const char *sp = memchr(p, ' ', len);
		long st = 0;
		if (sp && (size_t)(sp - p) + 4 <= len)
			for (int i = 1; i <= 3; i++)
				if (sp[i] >= '0' && sp[i] <= '9')
					st = st * 10 + (sp[i] - '0');
		x->status = st;
		x->content_length = -1;
		x->has_range = false;
		x->range_total = -1;
		x->etag[0] = '\0';
		x->captured[0] = '\0';
		return len;
	}
	if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
		if (x->status >= 200 && x->on_headers) {
			int r = x->on_headers(x);
			if (r) {
				x->abort_res = r;
				return 0;
			}
		}
		return len;
	}
	const char *colon = memchr(p, ':', len);
	if (!colon)
		return len;
	size_t nl = (size_t)(colon - p);
	char val[256];
	const char *v = colon + 1;
	size_t vl = len - nl - 1;
	while (vl && (*v == ' ' || *v == '\t')) {
		v++;
		vl--;
	}
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		vl--;
	if (vl >= sizeof(val))
		return len;   /* none of the headers we read is this long */
	memcpy(val, v, vl);
	val[vl] = '\0';
	if (nl == 14 && strncasecmp(p, "Content-Length", nl) == 0) {
		char *end;
		unsigned long long cl = strtoull(val, &end, 10);
		if (end != val && !*end)
			x->content_length = (int64_t)cl;
	} else if (nl == 13 && strncasecmp(p, "Content-Range", nl) == 0) {
		parse_range(x, val);
	} else if (nl == 4 && strncasecmp(p, "ETag", nl) == 0) {
		if (vl < sizeof(x->etag))
			memcpy(x->etag, val, vl + 1);
	} else if (x->capture_name && nl == strlen(x->capture_name) &&
		   strncasecmp(p, x->capture_name, nl) == 0) {
		if (vl < sizeof(x->captured))
			memcpy(x->captured, val, vl + 1);
	}
	return len;
}

static CURL *easy_get(struct ss_http *h)
{
	if (h->neasy_free)
		return h->easy_free[--h->neasy_free];
	return ss_curl()->easy_init();
}

static void easy_put(struct ss_http *h, CURL *e)
{
	if (h->neasy_free < h->o.max_xfers)
		h->easy_free[h->neasy_free++] = e;
	else
		ss_curl()->easy_cleanup(e);
}

static void deferred_finish(struct ss_op *op, int res)
{
	struct ss_http_xfer *x = CONTAINER(op, struct ss_http_xfer, timer_op);
	struct ss_http *h = x->h;
	h->deferred--;
	x->waiting = false;
	live_del(h, x);
	if (h->closing)
		return;
	x->done(x, res);
}

/* Finish x on the next loop turn (never inside the caller's call). */
static void finish_later(struct ss_http_xfer *x, int res)
{
	x->timer_op.done = deferred_finish;
	x->waiting = true;
	x->h->deferred++;
	ss_loop_defer(x->h->loop, &x->timer_op, res);
}

static void submit(struct ss_http *h, struct ss_http_xfer *x);

#define SETOPT(e, opt, val)                                   \
	do {                                                  \
		if (ss_curl()->easy_setopt((e), (opt), (val)) != CURLE_OK) \
			goto setopt_fail;                     \
	} while (0)

static void attempt_start(struct ss_http *h, struct ss_http_xfer *x)
{
	x->status = 0;
	x->content_length = -1;
	x->has_range = false;
	x->range_total = -1;
	x->etag[0] = '\0';
	x->captured[0] = '\0';
	x->sink_len = 0;
	x->recv_len = 0;
	x->body.len = 0;
	x->body.cap = x->body_cap ? x->body_cap : 64 * 1024;
	x->abort_res = 0;
	x->errmsg[0] = '\0';
	x->curl_err[0] = '\0';
	cursor_seek(x, 0);
	CURL *e = easy_get(h);
	if (!e) {
		snprintf(x->errmsg, sizeof(x->errmsg), "%s: out of memory", x->what);
		finish_later(x, -ENOMEM);
		return;
	}
	ss_curl()->easy_reset(e);
	x->attempts++;
	SETOPT(e, CURLOPT_PRIVATE, x);
	SETOPT(e, CURLOPT_NOSIGNAL, 1L);
	SETOPT(e, CURLOPT_WRITEFUNCTION, on_write);
	SETOPT(e, CURLOPT_WRITEDATA, x);
	SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
	SETOPT(e, CURLOPT_HEADERDATA, x);
	SETOPT(e, CURLOPT_ERRORBUFFER, x->curl_err);
	SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->o.ca_bundle)
		SETOPT(e, CURLOPT_CAINFO, h->o.ca_bundle);
	SETOPT(e, CURLOPT_CONNECTTIMEOUT, (long)h->o.connect_seconds);
	/* A stalled attempt (no byte either way) is abandoned and retried. */
	SETOPT(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
	SETOPT(e, CURLOPT_LOW_SPEED_TIME, (long)h->o.stall_seconds);
	SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(e, CURLOPT_BUFFERSIZE, 256L * 1024);
	SETOPT(e, CURLOPT_UPLOAD_BUFFERSIZE, 1024L * 1024);
	SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	if (x->attempts > 1) {
		/* Retries must not outlive the budget, so that a request that
		 * keeps failing stops within the bound the user configured. */
		uint64_t now = ss_now_ns(), end = x->first_ns + (uint64_t)h->o.retry_seconds * 1000000000ull;
		uint64_t left_ms = end > now ? (end - now) / 1000000ull : 0;
		SETOPT(e, CURLOPT_TIMEOUT_MS, (long)SS_MAX(left_ms, 1000ull));
	}
	switch (x->method) {
	case SS_HTTP_GET:
		SETOPT(e, CURLOPT_HTTPGET, 1L);
		break;
	case SS_HTTP_HEAD:
		SETOPT(e, CURLOPT_NOBODY, 1L);
		break;
	case SS_HTTP_DELETE:
		SETOPT(e, CURLOPT_CUSTOMREQUEST, "DELETE");
		break;
	case SS_HTTP_PUT:
		SETOPT(e, CURLOPT_UPLOAD, 1L);
		SETOPT(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->body_len);
		break;
	case SS_HTTP_POST:
		SETOPT(e, CURLOPT_POST, 1L);
		SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
		break;
	}
	if (x->method == SS_HTTP_PUT || x->method == SS_HTTP_POST) {
		SETOPT(e, CURLOPT_READFUNCTION, on_read);
		SETOPT(e, CURLOPT_READDATA, x);
		SETOPT(e, CURLOPT_SEEKFUNCTION, on_seek);
		SETOPT(e, CURLOPT_SEEKDATA, x);
	}
	int r = x->prepare(x, e);
	if (r) {
		ss_curl()->slist_free_all(x->headers);
		x->headers = NULL;
		easy_put(h, e);
		if (!x->errmsg[0])
			snprintf(x->errmsg, sizeof(x->errmsg), "%.240s: %s", x->what, strerror(-r));
		finish_later(x, r);
		return;
	}
	SETOPT(e, CURLOPT_HTTPHEADER, x->headers);
	if (ss_curl()->multi_add_handle(h->multi, e) != CURLM_OK)
		goto setopt_fail;
	x->easy = e;
	x->active = true;
	h->active++;
	return;
setopt_fail:
	ss_curl()->slist_free_all(x->headers);
	x->headers = NULL;
	ss_curl()->easy_cleanup(e);
	snprintf(x->errmsg, sizeof(x->errmsg), "%s: cannot set up the request", x->what);
	finish_later(x, -ENOMEM);
}

static void start_queued(struct ss_http *h)
{
	while (h->qhead && h->active < h->o.max_xfers && !h->closing) {
		struct ss_http_xfer *x = h->qhead;
		h->qhead = x->qnext;
		if (!h->qhead)
			h->qtail = NULL;
		x->queued = false;
		attempt_start(h, x);
	}
}

static void submit(struct ss_http *h, struct ss_http_xfer *x)
{
	if (h->active < h->o.max_xfers && !h->qhead) {
		attempt_start(h, x);
		return;
	}
	x->qnext = NULL;
	x->queued = true;
	if (h->qtail)
		h->qtail->qnext = x;
	else
		h->qhead = x;
	h->qtail = x;
}

static void retry_fire(struct ss_op *op, int res)
{
	struct ss_http_xfer *x = CONTAINER(op, struct ss_http_xfer, timer_op);
	struct ss_http *h = x->h;
	(void)res;
	h->ring_ops--;
	x->waiting = false;
	if (h->closing)
		return;
	submit(h, x);
}

int ss_http_retry(struct ss_http_xfer *x, const char *why)
{
	struct ss_http *h = x->h;
	if (h->closing || x->attempts >= h->o.retry_max)
		return -EAGAIN;
	uint64_t now = ss_now_ns();
	uint64_t budget = (uint64_t)h->o.retry_seconds * 1000000000ull;
	unsigned shift = SS_MIN(x->attempts - 1, 40u);
	uint64_t cap = BACKOFF_BASE_NS << shift;
	if (cap > BACKOFF_CAP_NS || (cap >> shift) != BACKOFF_BASE_NS)
		cap = BACKOFF_CAP_NS;
	/* Full jitter: a uniform wait in [0, cap] spreads the retries of many
	 * clients instead of synchronizing them. */
	uint64_t wait = rng_next(h) % (cap + 1);
	if (now - x->first_ns + wait >= budget)
		return -EAGAIN;
	ss_http_log(h, "%s: %s; retrying in %llu ms (attempt %u of %u)", x->what, why,
		    (unsigned long long)(wait / 1000000ull), x->attempts + 1, h->o.retry_max);
	x->ts.tv_sec = (long long)(wait / 1000000000ull);
	x->ts.tv_nsec = (long long)(wait % 1000000000ull);
	x->timer_op.done = retry_fire;
	x->waiting = true;
	struct io_uring_sqe *sqe = sqe_for(h, &x->timer_op);
	io_uring_prep_timeout(sqe, &x->ts, 0, 0);
	if (live_add(h, x)) {
		/* Cannot track it for teardown; the timer still completes. */
		return 0;
	}
	return 0;
}

static bool status_retryable(long s)
{
	return s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

static int curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
		return -EKEYREJECTED;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static bool curl_retryable(const struct ss_http_xfer *x, CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
		return !x->fail_fast_dns;
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static void attempt_over(struct ss_http *h, struct ss_http_xfer *x, CURLcode cc)
{
	CURL *e = x->easy;
	ss_curl()->multi_remove_handle(h->multi, e);
	easy_put(h, e);
	x->easy = NULL;
	x->active = false;
	h->active--;
	live_del(h, x);
	ss_curl()->slist_free_all(x->headers);
	x->headers = NULL;
	int res = 0;
	if (cc == CURLE_OK) {
		if (status_retryable(x->status)) {
			char why[32];
			snprintf(why, sizeof(why), "HTTP %ld", x->status);
			if (ss_http_retry(x, why) == 0)
				return;
		}
	} else if (x->abort_res) {
		res = x->abort_res;
	} else {
		const char *why = x->curl_err[0] ? x->curl_err : ss_curl()->easy_strerror(cc);
		snprintf(x->errmsg, sizeof(x->errmsg), "%.240s: %.250s", x->what, why);
		res = curl_errno(cc);
		if (curl_retryable(x, cc) && ss_http_retry(x, why) == 0)
			return;
		if (curl_retryable(x, cc) && x->attempts > 1) {
			size_t l = strlen(x->errmsg);
			snprintf(x->errmsg + l, sizeof(x->errmsg) - l, " (after %u attempts)",
				 x->attempts);
		}
	}
	x->done(x, res);
}

static void check_done(struct ss_http *h)
{
	CURLMsg *m;
	int left;
	while ((m = ss_curl()->multi_info_read(h->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		/* The message dies with remove_handle: copy it first. */
		CURL *e = m->easy_handle;
		CURLcode cc = m->data.result;
		struct ss_http_xfer *x = NULL;
		ss_curl()->easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
		attempt_over(h, x, cc);
	}
	start_queued(h);
}

/* --- public ----------------------------------------------------------- */

int ss_http_new(struct ss_loop *l, const struct ss_http_opts *o, struct ss_http **out,
		struct ss_err *err)
{
	struct ss_http *h = calloc(1, sizeof(*h));
	if (!h)
		return ss_err_set(err, -ENOMEM, "out of memory");
	h->loop = l;
	h->o = *o;
	if (!h->o.max_xfers)
		h->o.max_xfers = 16;
	if (!h->o.retry_max)
		h->o.retry_max = 1;
	if (!h->o.connect_seconds)
		h->o.connect_seconds = 10;
	if (!h->o.stall_seconds)
		h->o.stall_seconds = 30;
	h->timer_op.done = timer_fired;
	h->kick_op.done = kick_run;
	h->noop_op.done = noop_done;
	if (getrandom(&h->rng, sizeof(h->rng), GRND_NONBLOCK) != sizeof(h->rng))
		h->rng = ss_now_ns() ^ (uint64_t)(uintptr_t)h;
	h->rng |= 1;
	h->easy_free = calloc(h->o.max_xfers, sizeof(*h->easy_free));
	if (!h->easy_free) {
		ss_http_free(h);
		return ss_err_set(err, -ENOMEM, "out of memory");
	}
	*out = h;
	return 0;
}

/* libcurl is loaded and the multi handle made at the first transfer, not
 * at ss_http_new: loading libcurl and its libraries costs ~10 ms, which
 * a pull served from the node cache never needs to wait for (its
 * manifest is checked against the store's beside the pull's own work,
 * docs/DESIGN.md, "The node cache"). */
static int start(struct ss_http *h, struct ss_http_xfer *x)
{
	if (h->multi)
		return 0;
	struct ss_err e = {0};
	int r = ss_curl_load(&e);
	if (r) {
		snprintf(x->errmsg, sizeof(x->errmsg), "%.200s: %.300s", x->what, e.msg);
		return r;
	}
	if (!(h->multi = ss_curl()->multi_init())) {
		snprintf(x->errmsg, sizeof(x->errmsg), "%.200s: out of memory", x->what);
		return -ENOMEM;
	}
	ss_curl()->multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	ss_curl()->multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	ss_curl()->multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	ss_curl()->multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	/* Keep a connection for every transfer that can be in flight, so the
	 * next request to the same host reuses one instead of handshaking. */
	ss_curl()->multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)h->o.max_xfers + 4);
	return 0;
}

void ss_http_free(struct ss_http *h)
{
	if (!h)
		return;
	h->closing = true;
	for (unsigned i = 0; i < h->nlive; i++) {
		struct ss_http_xfer *x = h->live[i];
		if (x->active) {
			ss_curl()->multi_remove_handle(h->multi, x->easy);
			ss_curl()->easy_cleanup(x->easy);
			ss_curl()->slist_free_all(x->headers);
			x->headers = NULL;
			x->easy = NULL;
			x->active = false;
		} else if (x->waiting && x->timer_op.done == retry_fire) {
			struct io_uring_sqe *sqe = sqe_for(h, &h->noop_op);
			io_uring_prep_timeout_remove(sqe, (__u64)(uintptr_t)&x->timer_op, 0);
		}
	}
	if (h->multi)
		ss_curl()->multi_cleanup(h->multi);   /* closes the cached connections */
	h->multi = NULL;
	for (struct hsock *s = h->socks, *n; s; s = n) {
		n = s->next;
		s->dead = true;
		s->want = 0;
		sock_settle(s);
	}
	if (h->timer_armed && !h->timer_cancel_sent) {
		struct io_uring_sqe *sqe = sqe_for(h, &h->noop_op);
		io_uring_prep_timeout_remove(sqe, (__u64)(uintptr_t)&h->timer_op, 0);
	}
	/* The ring still points at our polls and timers: wait until the
	 * kernel has handed every one back (cancellations complete at once). */
	while (h->ring_ops || h->deferred)
		if (ss_loop_turn(h->loop, true) < 0)
			break;
	for (struct hsock *s = h->socks, *n; s; s = n) {
		n = s->next;
		free(s);
	}
	for (unsigned i = 0; i < h->neasy_free; i++)
		ss_curl()->easy_cleanup(h->easy_free[i]);
	free(h->easy_free);
	free(h->live);
	free(h);
}

void ss_http_run(struct ss_http *h, struct ss_http_xfer *x)
{
	x->h = h;
	if (!x->first_ns)
		x->first_ns = ss_now_ns();
	int r = start(h, x);
	if (!r && (r = live_add(h, x)))
		snprintf(x->errmsg, sizeof(x->errmsg), "%s: out of memory", x->what);
	if (r) {
		x->timer_op.done = deferred_finish;
		x->waiting = true;
		h->deferred++;
		ss_loop_defer(h->loop, &x->timer_op, r);
		return;
	}
	submit(h, x);
}

void ss_http_xfer_reset(struct ss_http_xfer *x)
{
	ss_buf_free(&x->body);
	if (x->headers)   /* none before libcurl was first loaded */
		ss_curl()->slist_free_all(x->headers);
	x->headers = NULL;
	x->attempts = 0;
	x->first_ns = 0;
	x->status = 0;
	x->errmsg[0] = '\0';
}

int ss_http_header(struct ss_http_xfer *x, const char *fmt, ...)
{
	char line[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -E2BIG;
	struct curl_slist *l = ss_curl()->slist_append(x->headers, line);
	/* The stack copy may hold a token: do not leave it behind. */
	explicit_bzero(line, sizeof(line));
	if (!l)
		return -ENOMEM;
	x->headers = l;
	return 0;
}
