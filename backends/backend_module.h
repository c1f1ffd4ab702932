/* backend_module — for backend authors. A backend is a table of operations,
 * validated when opened and listed in one explicit registry (backend.c). */
#ifndef SS_BACKEND_MODULE_H
#define SS_BACKEND_MODULE_H

#include "backend.h"

struct ss_backend_ops {
	const char *name;
	const char *scheme;
	/* Objects are files on this host: a request costs a system call,
	 * not a round trip (ss_backend_local). */
	bool local;
	/* Set up b->priv for the location (the part after "scheme://" or the
	 * absolute path). Returns 0 or -errno with err set. */
	int (*open)(struct ss_backend *b, const char *location, struct ss_err *err);
	/* Start r; never block. 0 queued, -EAGAIN full, -errno malformed. */
	int (*submit)(struct ss_backend *b, struct ss_req *r);
	/* Optional: ss_backend_identity. NULL: the objects are private to
	 * this process. */
	int (*identity)(const struct ss_backend *b, char *buf, size_t n);
	/* Free b->priv; no request is in flight. */
	void (*destroy)(struct ss_backend *b);
};

struct ss_backend {
	const struct ss_backend_ops *ops;
	struct ss_loop *loop;
	struct ss_backend_opts opts;
	unsigned max_inflight;
	unsigned inflight;
	/* ops->local, or for a backend stacked on another (the node cache)
	 * the other's: what its requests mostly cost (ss_backend_local). */
	bool local;
	/* Directory fsyncs that completed after a rename into place (local
	 * store): what makes an object's name survive a crash. Tests read it;
	 * nothing else does. */
	uint64_t dir_syncs;
	void *priv;
};

extern const struct ss_backend_ops ss_local_ops;
extern const struct ss_backend_ops ss_mem_ops;
extern const struct ss_backend_ops ss_s3_ops;
extern const struct ss_backend_ops ss_gs_ops;

/* Finish r with res (loop thread): keeps the in-flight count. */
void ss_backend_complete(struct ss_backend *b, struct ss_req *r, int res);

#endif
