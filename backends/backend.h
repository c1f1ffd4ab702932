/* backend — object storage as seen by the engine: put, ranged get, list,
 * delete, stat, all asynchronous on the engine's event loop.
 *
 * A backend instance is rooted at a location (a local directory, a bucket
 * and prefix) and addresses objects by relative keys ("packs/ab/ab12…").
 * Requests are submitted from the loop thread and complete on it through
 * req->op.done(op, res) with res >= 0 on success (bytes for get, 0 for the
 * others) or -errno: -ENOENT for a missing object, -EEXIST for a put with
 * SS_PUT_IF_ABSENT on an existing key, -EAGAIN from submit when the
 * backend has as many requests in flight as it allows (retry after a
 * completion). A human-readable reason for a failure goes into req->err.
 */
#ifndef SS_BACKEND_H
#define SS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "loop.h"
#include "util.h"

enum ss_req_kind {
	SS_REQ_PUT = 1,
	SS_REQ_GET,
	SS_REQ_LIST,
	SS_REQ_DELETE,
	SS_REQ_STAT,
};

#define SS_PUT_IF_ABSENT 0x1u   /* fail with -EEXIST if the key exists */
#define SS_GET_SUFFIX 0x2u      /* get the last `len` bytes of the object */
/* A GET with if_none_match whose object still has that ETag. */
#define SS_NOT_MODIFIED (-EALREADY)
/* Room for an ETag as servers send it, quotes included, and its NUL. */
#define SS_ETAG_MAX 130
/* For a cache stacked on a backend (engine/core/ncache.h): the bytes an
 * earlier GET of this range returned were bad; drop what is cached for it
 * and read the store. Backends of their own ignore it. */
#define SS_GET_FRESH 0x4u
/* ss_req.slack a caller offers at least: a node cache's block
 * (engine/core/ncache.h) fits in it when it is a 64 KiB one; larger
 * blocks need more, else the cache fetches them into a buffer of its own. */
#define SS_GET_SLACK (64u << 10)

/* Called for each object a LIST finds (loop thread). Return non-zero to
 * stop the listing early; that value becomes the request's result. */
typedef int (*ss_list_fn)(void *arg, const char *key, uint64_t size);

struct ss_req {
	struct ss_op op;           /* op.done(op, res): completion */
	enum ss_req_kind kind;
	uint32_t flags;
	const char *key;           /* PUT/GET/DELETE/STAT; LIST: prefix */
	/* PUT: the object's bytes, which must stay valid until done. */
	const struct iovec *iov;
	unsigned iovcnt;
	/* GET: [off, off + len) into buf (len bytes room). A GET past the end
	 * returns the bytes that exist. SS_GET_SUFFIX: the last len bytes. */
	uint64_t off;
	uint64_t len;
	void *buf;
	/* GET: bytes before buf and past buf + len that the caller lets a
	 * backend overwrite (0, or SS_GET_SLACK or more): a cache stacked on the store
	 * fetches whole blocks around the range straight into the caller's
	 * buffer instead of into one of its own and copying. */
	uint32_t slack;
	/* LIST */
	ss_list_fn on_key;
	void *arg;
	/* Out: the object's size (GET, STAT). */
	uint64_t size;
	/* Out: why it failed (may be NULL). */
	struct ss_err *err;
	/* Out (GET): a cache stacked on the backend served some of the bytes. */
	bool cached;
	/* GET: send the object only if its ETag is no longer this one; when
	 * it still is, the GET completes with SS_NOT_MODIFIED and no bytes
	 * (object stores; backends without ETags ignore it and send). */
	const char *if_none_match;
	/* Out (GET, and a PUT in one request): the object's ETag as the
	 * server sent it; "" if none. */
	char etag[SS_ETAG_MAX];
	/* The caller's own pointer, untouched by backends. */
	void *user;
	/* Backend-private state while in flight. */
	void *priv;
};

struct ss_backend;

/* A diagnostic line from a backend (retries, token refreshes). Runs on the
 * loop thread. Messages never contain credentials, tokens or signatures. */
typedef void (*ss_log_fn)(void *arg, const char *msg);

struct ss_backend_opts {
	unsigned max_inflight;     /* 0 = backend default */
	bool no_fsync;             /* local: skip fsync (tests, tmpfs) */
	bool read_only;            /* local: a missing root is -ENOENT, not created */
	struct ss_memstore *mem;   /* the store that mem:// URIs name */
	/* Object stores (s3://, gs://): credentials, endpoints and tuning
	 * come from this environment block ("NAME=value" strings ending with
	 * NULL; NULL: no variable set), never from the process environment
	 * (snapstream.h, ss_config.env, lists the names). Borrowed until
	 * the open returns. */
	const char *const *env;
	/* Zero fields take the environment block's value
	 * (SNAPSTREAM_RETRY_MAX, SNAPSTREAM_RETRY_SECONDS,
	 * SNAPSTREAM_STALL_SECONDS, SNAPSTREAM_PART_SIZE,
	 * SNAPSTREAM_MULTIPART_THRESHOLD, SNAPSTREAM_LIST_PAGE), else the
	 * default in parentheses. */
	unsigned retry_max;        /* attempts per request, first included (8) */
	unsigned retry_seconds;    /* time budget for retrying one request (300) */
	unsigned stall_seconds;    /* an attempt moving no byte this long fails (30) */
	uint64_t part_size;        /* multipart part size (16 MiB; >= 5 MiB on S3) */
	uint64_t multipart_threshold; /* larger puts go multipart (64 MiB) */
	unsigned list_page;        /* keys per LIST page (1000) */
	ss_log_fn log;             /* NULL: silent */
	void *log_arg;
};

/* Parse a location: "file:///abs", "/abs", "rel/path", "mem://name".
 * Sets *scheme ("file", "mem") and *path (malloc'd; absolute for file).
 * Returns 0 or -EINVAL with a message. */
int ss_location_parse(const char *uri, const char **scheme, char **path, struct ss_err *err);

/* Object stores: split "s3://bucket/a/b/snap" into the bucket's URI
 * "s3://bucket" and the key "a/b/snap" ("" when the URI names the bucket
 * alone). Both are malloc'd and written only on success. Returns 0,
 * -EINVAL for a malformed bucket or key, or -EPROTONOSUPPORT for a URI
 * that is not an object store's (a path, file://, mem://). */
int ss_objuri_split(const char *uri, char **bucket_uri, char **key, struct ss_err *err);

/* The value of variable name in an environment block (see
 * ss_backend_opts.env), or NULL when env is NULL, the variable is not in
 * it, or its value is empty. The first entry of that name wins, as with
 * getenv. */
const char *ss_env_get(const char *const *env, const char *name);

/* True when uri names an object store (s3://, gs://). */
bool ss_uri_is_object_store(const char *uri);

/* Open the backend for uri on loop l. Returns 0 or -errno with err set. */
int ss_backend_open(const char *uri, struct ss_loop *l, const struct ss_backend_opts *o,
		    struct ss_backend **out, struct ss_err *err);
void ss_backend_free(struct ss_backend *b);
const char *ss_backend_name(const struct ss_backend *b);
/* Where the backend's objects live, as one string that every process
 * opening the same place gets, however it was named: the resolved
 * directory of a local store, the endpoint URL, bucket and prefix of an
 * object store. Processes that coordinate through the host (engine/
 * claims.h) key on it. Returns 0, -ENOSPC for a too small buffer, or
 * -EOPNOTSUPP where the place is private to the process (mem://). */
int ss_backend_identity(const struct ss_backend *b, char *buf, size_t n);
/* Whether objects are files on this host (a local directory, memory):
 * requests cost a system call rather than a round trip, so nothing is
 * gained by making them large. */
bool ss_backend_local(const struct ss_backend *b);
/* Requests the backend allows in flight at once. */
unsigned ss_backend_max_inflight(const struct ss_backend *b);

/* Submit (loop thread). Returns 0 when queued, -EAGAIN when full, or
 * another -errno for a request that is malformed (then done() is not
 * called). */
int ss_backend_submit(struct ss_backend *b, struct ss_req *r);

/* A key a backend accepts: relative, no "..", no empty components, no
 * control characters, at most 1024 bytes. */
bool ss_key_ok(const char *key);

/* In-memory object store, the test double behind mem:// URIs. Survives
 * the backends opened on it; not thread-safe (loop thread only). */
struct ss_memstore;
struct ss_memstore *ss_memstore_new(void);
void ss_memstore_free(struct ss_memstore *m);
/* Fault injection for tests: of the requests of `kind` (0 = any) whose key
 * starts with `prefix` (NULL = any), let `skip` through, then fail the next
 * `n` with `res`. */
void ss_memstore_fail(struct ss_memstore *m, enum ss_req_kind kind, const char *prefix,
		      unsigned skip, unsigned n, int res);
/* Objects and bytes held. */
void ss_memstore_usage(const struct ss_memstore *m, uint64_t *objects, uint64_t *bytes);

/* Run one request to completion on loop l, turning the loop (helper for
 * metadata steps and tests). Returns the request's result. */
int ss_backend_call(struct ss_backend *b, struct ss_loop *l, struct ss_req *r);

#endif
