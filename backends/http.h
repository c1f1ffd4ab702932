/* http — libcurl's multi interface driven by the engine's io_uring loop
 * (private to the object-store backends).
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * to call it back (CURLMOPT_TIMERFUNCTION); each watched socket becomes a
 * one-shot IORING_OP_POLL_ADD, re-armed after every event and removed with
 * IORING_OP_POLL_REMOVE when curl lets go of it, and curl's timer becomes
 * one IORING_OP_TIMEOUT. Nothing here blocks the loop: name resolution runs
 * on curl's resolver thread, bodies stream from and to the caller's memory.
 *
 * A transfer (struct ss_http_xfer) is one logical HTTP exchange, which may
 * take several attempts: timeouts, connection failures and HTTP 429, 500,
 * 502, 503, 504 are retried with exponential backoff and full jitter,
 * bounded in attempts and in time, the waits being io_uring timeouts.
 * Transfers beyond the configured number in flight wait in a FIFO queue,
 * so connections (kept in the multi handle's cache) are reused rather
 * than multiplied.
 *
 * Everything runs on the loop thread. Nothing here logs a header: the
 * Authorization header, signatures and tokens stay inside libcurl.
 */
#ifndef SS_HTTP_H
#define SS_HTTP_H

#include "curlfn.h"

#include "backend.h"

struct ss_http;

struct ss_http_opts {
	unsigned max_xfers;        /* attempts in flight at once (>= 1) */
	unsigned retry_max;        /* attempts per transfer, first included (>= 1) */
	unsigned retry_seconds;    /* budget for retrying, from the first attempt */
	unsigned stall_seconds;    /* an attempt moving no byte this long fails */
	unsigned connect_seconds;
	const char *ca_bundle;     /* NULL: libcurl's default (the system's bundle) */
	ss_log_fn log;
	void *log_arg;
};

struct ss_http_xfer;
/* Called before each attempt: set the URL, the method and the headers on
 * easy (which comes reset, with the transfer plumbing in place). Headers
 * go in x->headers, which is freed after the attempt. Return 0 or -errno
 * to fail the transfer. */
typedef int (*ss_http_prepare_fn)(struct ss_http_xfer *x, CURL *easy);
/* The transfer is over. res == 0: a response arrived, see x->status and
 * the captured fields (after retries, the last response). res < 0: no
 * usable response (-ETIMEDOUT, -ECONNRESET, -EIO, -EFBIG, ...) with the
 * reason in x->errmsg. The transfer may be restarted from here with
 * ss_http_retry() or ss_http_run(). */
typedef void (*ss_http_done_fn)(struct ss_http_xfer *x, int res);
/* Optional: the final response's headers are in (x->status set). Return 0
 * to go on, or -errno to abort the attempt without retrying. May change
 * x->sink_skip, x->sink, x->sink_cap for the body that follows. */
typedef int (*ss_http_headers_fn)(struct ss_http_xfer *x);

enum ss_http_method {
	SS_HTTP_GET = 1,
	SS_HTTP_HEAD,
	SS_HTTP_PUT,
	SS_HTTP_POST,
	SS_HTTP_DELETE,
};

struct ss_http_xfer {
	/* Set by the owner. */
	ss_http_prepare_fn prepare;
	ss_http_done_fn done;
	ss_http_headers_fn on_headers;
	void *owner;
	struct ss_http_xfer *owner_next;   /* free for the owner's lists */
	const char *what;              /* "PUT bucket/key", for messages */
	enum ss_http_method method;
	/* Request body (PUT, POST): streamed from these bytes, never copied
	 * into a staging buffer; they must stay valid until done. */
	const struct iovec *iov;
	unsigned iovcnt;
	uint64_t body_off;             /* the body starts this far into iov */
	uint64_t body_len;
	/* Response body of a 2xx answer: bytes [sink_skip, sink_skip +
	 * sink_cap) go to sink (a GET's buffer); more is an error. Without a
	 * sink, and for every non-2xx answer, the body is collected in
	 * x->body up to body_cap bytes (an error document, an XML listing). */
	uint8_t *sink;
	uint64_t sink_cap;
	uint64_t sink_skip;
	bool sink_excess_ok;           /* drop 2xx bytes past the sink silently */
	bool discard_body;             /* no sink: drop a 2xx body */
	size_t body_cap;
	bool fail_fast_dns;            /* a name that does not resolve is final */
	/* Optional: the value of this response header (case-insensitive
	 * name) goes to x->captured, if it fits. */
	const char *capture_name;

	/* Per attempt, owned by the transfer. */
	struct curl_slist *headers;

	/* Results. */
	long status;                   /* last final HTTP status, 0 if none */
	int64_t content_length;        /* -1 when absent */
	bool has_range;                /* Content-Range: bytes a-b/total */
	uint64_t range_start, range_end;
	int64_t range_total;           /* -1 for "*" */
	char etag[130];
	char captured[130];
	uint64_t sink_len;             /* body bytes stored into sink */
	uint64_t recv_len;             /* 2xx body bytes seen */
	struct ss_buf body;
	unsigned attempts;
	char errmsg[512];

	/* Private to http.c. */
	struct ss_http *h;
	CURL *easy;
	struct ss_http_xfer *qnext;
	uint64_t first_ns;
	int abort_res;
	bool in_final_headers;
	bool active, queued, waiting;
	/* Body read cursor. */
	uint64_t rd_pos;
	unsigned rd_idx;
	uint64_t rd_in;
	struct ss_op timer_op;
	struct __kernel_timespec ts;
	char curl_err[CURL_ERROR_SIZE];
};

/* A client bound to loop l (loop thread). Its first transfer loads and
 * initializes libcurl once per process (curl_global_init through
 * pthread_once: it is not thread-safe, and cleaning it up would race with
 * other users, so it is never undone) and makes the multi handle; a
 * libcurl that cannot be loaded fails that transfer, naming why. Returns
 * 0 or -errno with err set. */
int ss_http_new(struct ss_loop *l, const struct ss_http_opts *o, struct ss_http **out,
		struct ss_err *err);
/* Abort whatever is in flight (their done() is not called), wait for the
 * loop to hand back every poll and timer, and free. NULL ok. */
void ss_http_free(struct ss_http *h);

/* Start x (zeroing its results, keeping its attempt count and clock if it
 * ran before). Its done() always runs later from the loop, never from
 * inside this call. */
void ss_http_run(struct ss_http *h, struct ss_http_xfer *x);
/* From done(): try x again after a backoff, if the bounds allow. Returns
 * 0 when scheduled, or -EAGAIN when attempts or time are used up. */
int ss_http_retry(struct ss_http_xfer *x, const char *why);
/* Release what x holds (body, headers). x may be run again after. */
void ss_http_xfer_reset(struct ss_http_xfer *x);

/* Append a header line ("Name: value") to x->headers; -ENOMEM. */
int ss_http_header(struct ss_http_xfer *x, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Log through the opts' callback (loop thread). */
void ss_http_log(struct ss_http *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Monotonic time used for deadlines, in ns (tests may not fake it). */
uint64_t ss_http_now_ns(void);

#endif
