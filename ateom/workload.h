/* workload.h — the Ateom state machine: one gVisor sandbox on this worker,
 * run, checkpointed to a snapshot and restored from one.
 *
 * This layer knows runsc and the snapstream engine but not gRPC: main.c
 * decodes requests into struct wl_req and sends back the code and message
 * of struct wl_result. Codes are gRPC's canonical status codes (same
 * numbers), because they are the failure classes the contract promises.
 *
 * Not thread-safe: the server calls it from one worker thread, which is
 * also what serializes concurrent RPCs.
 */
#ifndef ATEOM_WORKLOAD_H
#define ATEOM_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct reaper;

/* gRPC canonical codes (grpc/status.h), restated so this layer needs no
 * gRPC header. */
enum wl_code {
	WL_OK = 0,
	WL_INVALID_ARGUMENT = 3,
	WL_NOT_FOUND = 5,
	WL_ALREADY_EXISTS = 6,
	WL_PERMISSION_DENIED = 7,
	WL_RESOURCE_EXHAUSTED = 8,
	WL_FAILED_PRECONDITION = 9,
	WL_UNIMPLEMENTED = 12,
	WL_INTERNAL = 13,
	WL_UNAVAILABLE = 14,
	WL_DATA_LOSS = 15,
};

struct wl_config {
	const char *bundle_root;
	const char *work_dir;
	const char *runsc;              /* when a request leaves runsc_path empty */
	const char *const *runsc_args;  /* global flags before every runsc command */
	size_t nrunsc_args;
	const char *store;              /* snapstream store URI; NULL: beside the snapshot */
	bool no_follow;                 /* push after runsc checkpoint, not while it writes */
	const uint8_t *key;             /* a keyed store's key (copied), or NULL */
	size_t key_len;
	struct reaper *reaper;          /* main's; NULL when not the subreaper */
	/* The environment the engine configures object stores from
	 * (ss_config.env); borrowed for the workload's life. */
	const char *const *env;
	/* Pull the whole image before runsc restore instead of serving it
	 * to runsc as it arrives (fusefile.h). */
	bool no_stream_restore;
	/* Restoring while pulling, the largest snapshot kept in memory
	 * rather than in the work dir; WL_RESTORE_MEMORY_AUTO: a quarter of
	 * the memory left (fusepull_opts.memory_max). */
#define WL_RESTORE_MEMORY_AUTO UINT64_MAX
	uint64_t restore_memory;
	/* The node cache checkpoints and restores go through (ss_config
	 * cache_dir, copied; NULL: none), and its bound (0: the default). */
	const char *cache_dir;
	uint64_t cache_size;
	/* Resident buffers checkpoints and restores take their large
	 * buffers from (ss_config.buffers), or NULL; borrowed for the
	 * workload's life. */
	struct ss_buffers *buffers;
};

/* One request, decoded; strings are borrowed for the duration of the call.
 * Empty strings mean "not set" (proto3 has no presence for strings). */
struct wl_req {
	const char *ns;                 /* actor_template_namespace */
	const char *name;               /* actor_template_name */
	const char *actor_id;
	const char *runsc_path;
	const char *const *containers;  /* spec.containers[].name, in order */
	size_t ncontainers;
	const char *snapshot_uri;       /* snapshot_uri_prefix */
};

#define WL_MAX_PHASES 8

/* What a call did, for the reply and the server's JSON log line. */
struct wl_result {
	enum wl_code code;
	char msg[1536];
	struct {
		const char *name;       /* static string */
		double ms;
	} phase[WL_MAX_PHASES];
	size_t nphases;
	/* From the engine, when the call pushed or pulled. */
	bool have_stats;
	uint64_t logical_bytes, zero_bytes, dedup_bytes, new_stored_bytes, transferred_bytes;
	const char *state;              /* "available" or "executing" afterwards */
	/* Restoring while pulling: where the image was kept ("memory" or
	 * "file", static), else NULL. */
	const char *restore_spool;
};

struct wl;

/* Create the state machine (state "available"). Copies cfg's strings.
 * Creates work_dir if missing. Returns NULL with errno set on failure. */
struct wl *wl_new(const struct wl_config *cfg);

/* Delete a sandbox that is still there (it cannot be checkpointed once the
 * server is gone, and it would collide with the next server's), then free.
 * A checkpoint image whose upload failed is kept on disk and reported in
 * msg (if not NULL) so an operator can push it by hand. NULL is a no-op. */
void wl_free(struct wl *w, char *msg, size_t msglen);

/* The three RPCs. Each fills *res completely; none returns anything else.
 * A failed run or restore leaves the state available and no sandbox.
 * wl_checkpoint pushes while runsc writes (unless no_follow) and returns
 * once the snapshot is committed; runsc delete of the stopped sandbox may
 * still be running then, and the next call (or wl_free) waits for it. If
 * the push fails after runsc succeeded, the image stays in the work dir,
 * the state stays executing, and the next wl_checkpoint uploads it. */
void wl_run(struct wl *w, const struct wl_req *q, struct wl_result *res);
void wl_checkpoint(struct wl *w, const struct wl_req *q, struct wl_result *res);
void wl_restore(struct wl *w, const struct wl_req *q, struct wl_result *res);

/* "available" or "executing". */
const char *wl_state(const struct wl *w);

#endif
