/* ateom — the Ateom gRPC service (ateom.proto) over gRPC core.
 *
 * Threads:
 *   main     drives the one completion queue: accepts calls, answers
 *            health checks and unknown methods itself, hands Ateom calls
 *            to the worker, releases calls whose reply went out. gRPC core
 *            makes I/O progress only while someone polls the queue, so this
 *            thread never blocks on anything else.
 *   worker   runs Ateom calls one at a time, in arrival order (that is
 *            the serialization the contract asks for), and starts each
 *            reply batch itself (grpc_call_start_batch is thread-safe).
 *   signals  sigwait()s for SIGTERM/SIGINT, which every thread blocks:
 *            the first begins a graceful shutdown, a second cancels calls
 *            still waiting. No signal handler runs, so there is no global
 *            state at all.
 *
 * Each call is one struct call, used as its own completion tag; it has at
 * most one batch outstanding at a time, and c->stage says which.
 */
#include "log.h"
#include "reaper.h"
#include "workload.h"

#include "ateom.pb-c.h"
#include "health.pb-c.h"
#include "snapstream.h"
#include "util.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_RUNSC_ARGS 32
/* Resident buffers (--buffers): what one checkpoint's push of a few
 * hundred MiB takes at once (segments, their output, pack buffers, the
 * state file decoder's); a restore takes less. */
#define DEFAULT_BUFFERS (128ull << 20)
#define MAX_BUFFERS (4ull << 30)
#define MAX_REQUEST_BYTES (1 << 20)

enum method { M_RUN, M_CHECKPOINT, M_RESTORE, M_HEALTH, M_NMETHODS, M_UNKNOWN = M_NMETHODS };

static const char *const method_path[M_NMETHODS] = {
	[M_RUN] = "/ateom.Ateom/RunWorkload",
	[M_CHECKPOINT] = "/ateom.Ateom/CheckpointWorkload",
	[M_RESTORE] = "/ateom.Ateom/RestoreWorkload",
	[M_HEALTH] = "/grpc.health.v1.Health/Check",
};
static const char *const method_name[M_NMETHODS + 1] = {
	"RunWorkload", "CheckpointWorkload", "RestoreWorkload", "Health.Check", "unknown",
};

enum stage { ST_REQUESTED, ST_REPLYING };

struct server;

struct call {
	struct server *srv;
	enum method m;
	enum stage stage;
	grpc_call *call;
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_call_details details;      /* unknown methods only */
	grpc_byte_buffer *payload;      /* request, read with the call */
	grpc_byte_buffer *reply;
	grpc_slice status_details;
	int cancelled;
	struct timespec queued_at;      /* when the worker queue took it */
	struct call *next;              /* worker queue */
};

struct server {
	grpc_server *server;
	grpc_completion_queue *cq;
	void *registered[M_NMETHODS];
	struct wl *wl;
	int shutdown_tag;               /* its address is the shutdown completion tag */

	pthread_mutex_t mu;             /* guards everything below */
	pthread_cond_t cv;
	struct call *head, *tail;       /* calls waiting for the worker */
	bool stopping;                  /* shutdown began: no new work starts */
	bool worker_exit;
	bool main_done;                 /* tells the signal thread to leave */
	unsigned signals;
};

/* ---- JSON log: one line per RPC (log.c) ---- */

static void log_rpc(enum method m, const struct wl_req *q, const struct wl_result *res,
		    double total_ms, double queued_ms)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int r = log_rpc_line(stdout, method_name[m], q, res, total_ms, queued_ms, &now);
	if (r)
		fprintf(stderr, "ateom: cannot write the log line of %s: %s\n", method_name[m],
			strerror(-r));
}

/* ---- calls ---- */

static void call_free(struct call *c)
{
	if (!c)
		return;
	if (c->call)
		grpc_call_unref(c->call);
	grpc_metadata_array_destroy(&c->md);
	if (c->m == M_UNKNOWN)
		grpc_call_details_destroy(&c->details);
	if (c->payload)
		grpc_byte_buffer_destroy(c->payload);
	if (c->reply)
		grpc_byte_buffer_destroy(c->reply);
	grpc_slice_unref(c->status_details);
	free(c);
}

/* Ask gRPC for the next call of method m (or of any unregistered method).
 * Returns 0, or -1 once the server no longer takes requests. */
static int request_call(struct server *s, enum method m)
{
	struct call *c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	c->srv = s;
	c->m = m;
	c->stage = ST_REQUESTED;
	c->status_details = grpc_empty_slice();
	grpc_metadata_array_init(&c->md);
	grpc_call_error e;
	if (m == M_UNKNOWN) {
		grpc_call_details_init(&c->details);
		e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
					     c);
	} else {
		e = grpc_server_request_registered_call(s->server, s->registered[m], &c->call,
							&c->deadline, &c->md, &c->payload, s->cq,
							s->cq, c);
	}
	if (e != GRPC_CALL_OK) {
		call_free(c);
		return -1;
	}
	return 0;
}

/* Send the reply (message when code is OK) and the status in one batch;
 * the completion comes back to the main thread, which frees the call. */
static void reply(struct call *c, int code, const char *msg, const ProtobufCMessage *resp)
{
	grpc_op ops[4];
	size_t n = 0;
	memset(ops, 0, sizeof(ops));

	ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
	n++;
	if (code == 0 && resp) {
		size_t len = protobuf_c_message_get_packed_size(resp);
		grpc_slice sl = grpc_slice_malloc(len);
		protobuf_c_message_pack(resp, GRPC_SLICE_START_PTR(sl));
		c->reply = grpc_raw_byte_buffer_create(&sl, 1);
		grpc_slice_unref(sl);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = c->reply;
		n++;
	}
	c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)code;
	ops[n].data.send_status_from_server.status_details = &c->status_details;
	n++;
	ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
	n++;
	c->stage = ST_REPLYING;
	grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
	if (e != GRPC_CALL_OK) {
		fprintf(stderr, "ateom: cannot reply to %s: %s\n", method_name[c->m],
			grpc_call_error_to_string(e));
		call_free(c);
	}
}

/* The request payload as one contiguous buffer (malloc'd, *len bytes). */
static uint8_t *payload_bytes(grpc_byte_buffer *bb, size_t *len)
{
	grpc_byte_buffer_reader rd;
	*len = 0;
	if (!bb)
		return calloc(1, 1); /* an empty message is valid proto3 */
	if (!grpc_byte_buffer_reader_init(&rd, bb))
		return NULL;
	grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
	grpc_byte_buffer_reader_destroy(&rd);
	size_t n = GRPC_SLICE_LENGTH(all);
	uint8_t *p = n <= MAX_REQUEST_BYTES ? malloc(n ? n : 1) : NULL;
	if (p) {
		memcpy(p, GRPC_SLICE_START_PTR(all), n);
		*len = n;
	}
	grpc_slice_unref(all);
	return p;
}

static void handle_health(struct call *c)
{
	size_t len;
	uint8_t *buf = payload_bytes(c->payload, &len);
	Grpc__Health__V1__HealthCheckRequest *q =
		buf ? grpc__health__v1__health_check_request__unpack(NULL, len, buf) : NULL;
	free(buf);
	if (!q) {
		reply(c, GRPC_STATUS_INVALID_ARGUMENT, "cannot parse HealthCheckRequest", NULL);
		return;
	}
	/* "" is the server as a whole; the one service it serves is ateom.Ateom. */
	bool known = !*q->service || !strcmp(q->service, "ateom.Ateom");
	grpc__health__v1__health_check_request__free_unpacked(q, NULL);
	if (!known) {
		reply(c, GRPC_STATUS_NOT_FOUND, "unknown service", NULL);
		return;
	}
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	reply(c, GRPC_STATUS_OK, NULL, &resp.base);
}

/* Decode any of the three Ateom requests into a wl_req. They share field
 * numbers 1-5 (6 only on checkpoint and restore), but each has its own
 * descriptor, so unpack with the right one and read through its struct. */
static ProtobufCMessage *decode(enum method m, const uint8_t *buf, size_t len, struct wl_req *q,
				const char **names, size_t maxnames)
{
	const Ateom__WorkloadSpec *spec = NULL;
	ProtobufCMessage *msg = NULL;
	memset(q, 0, sizeof(*q));
	switch (m) {
	case M_RUN: {
		Ateom__RunWorkloadRequest *r = ateom__run_workload_request__unpack(NULL, len, buf);
		if (!r)
			return NULL;
		*q = (struct wl_req){r->actor_template_namespace, r->actor_template_name,
				     r->actor_id, r->runsc_path, NULL, 0, ""};
		spec = r->spec;
		msg = &r->base;
		break;
	}
	case M_CHECKPOINT: {
		Ateom__CheckpointWorkloadRequest *r =
			ateom__checkpoint_workload_request__unpack(NULL, len, buf);
		if (!r)
			return NULL;
		*q = (struct wl_req){r->actor_template_namespace, r->actor_template_name,
				     r->actor_id, r->runsc_path, NULL, 0, r->snapshot_uri_prefix};
		spec = r->spec;
		msg = &r->base;
		break;
	}
	case M_RESTORE: {
		Ateom__RestoreWorkloadRequest *r =
			ateom__restore_workload_request__unpack(NULL, len, buf);
		if (!r)
			return NULL;
		*q = (struct wl_req){r->actor_template_namespace, r->actor_template_name,
				     r->actor_id, r->runsc_path, NULL, 0, r->snapshot_uri_prefix};
		spec = r->spec;
		msg = &r->base;
		break;
	}
	default:
		return NULL;
	}
	if (spec) {
		size_t n = spec->n_containers;
		/* More than the workload layer takes is its error to report:
		 * pass the count, keep the first names. */
		for (size_t i = 0; i < n && i < maxnames; i++)
			names[i] = spec->containers[i]->name;
		q->containers = names;
		q->ncontainers = n;
	}
	return msg;
}

static double ms_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static void handle_ateom(struct server *s, struct call *c, const struct timespec *queued_at)
{
	struct timespec t0, t1;
	struct wl_result res;
	struct wl_req q;
	const char *names[64];
	size_t len;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	memset(&res, 0, sizeof(res));
	uint8_t *buf = payload_bytes(c->payload, &len);
	ProtobufCMessage *msg = buf ? decode(c->m, buf, len, &q, names, 64) : NULL;
	free(buf);
	if (!msg) {
		res.code = WL_INVALID_ARGUMENT;
		snprintf(res.msg, sizeof(res.msg), "cannot parse the %s request", method_name[c->m]);
		res.state = wl_state(s->wl);
	} else if (q.ncontainers > 64) {
		res.code = WL_INVALID_ARGUMENT;
		snprintf(res.msg, sizeof(res.msg), "spec.containers has %zu entries", q.ncontainers);
		res.state = wl_state(s->wl);
	} else if (c->m == M_RUN) {
		wl_run(s->wl, &q, &res);
	} else if (c->m == M_CHECKPOINT) {
		wl_checkpoint(s->wl, &q, &res);
	} else {
		wl_restore(s->wl, &q, &res);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	log_rpc(c->m, msg ? &q : NULL, &res, ms_between(queued_at, &t1),
		ms_between(queued_at, &t0));

	/* The three responses are empty messages: their encoding is zero
	 * bytes, whichever descriptor packs them. */
	Ateom__RunWorkloadResponse empty = ATEOM__RUN_WORKLOAD_RESPONSE__INIT;
	reply(c, (int)res.code, res.msg, &empty.base);
	if (msg)
		protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- the worker thread ---- */

static void *worker_main(void *arg)
{
	struct server *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (!s->head && !s->worker_exit)
			pthread_cond_wait(&s->cv, &s->mu);
		struct call *c = s->head;
		if (!c) {
			pthread_mutex_unlock(&s->mu);
			return NULL;
		}
		s->head = c->next;
		if (!s->head)
			s->tail = NULL;
		bool stopping = s->stopping;
		pthread_mutex_unlock(&s->mu);

		if (stopping) {
			/* A call that had not started when shutdown began is
			 * refused; the client may retry it elsewhere. The one in
			 * progress (a checkpoint, say) always runs to the end. */
			struct wl_result res = {.code = WL_UNAVAILABLE, .state = wl_state(s->wl)};
			snprintf(res.msg, sizeof(res.msg), "ateom is shutting down");
			log_rpc(c->m, NULL, &res, 0, 0);
			reply(c, WL_UNAVAILABLE, res.msg, NULL);
			continue;
		}
		handle_ateom(s, c, &c->queued_at);
	}
}

static void enqueue(struct server *s, struct call *c)
{
	/* The client's deadline is not enforced once a call is queued: a
	 * sandbox operation cannot be abandoned half-way, and the client
	 * learns the outcome from the state either way. */
	clock_gettime(CLOCK_MONOTONIC, &c->queued_at);
	c->next = NULL;
	pthread_mutex_lock(&s->mu);
	if (s->tail)
		s->tail->next = c;
	else
		s->head = c;
	s->tail = c;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* ---- the signal thread ---- */

struct sigthread {
	struct server *s;
	sigset_t set;
};

static void *signal_main(void *arg)
{
	struct sigthread *st = arg;
	struct server *s = st->s;
	for (;;) {
		int sig;
		if (sigwait(&st->set, &sig) != 0)
			continue;
		pthread_mutex_lock(&s->mu);
		bool done = s->main_done;
		unsigned n = ++s->signals;
		s->stopping = true;
		pthread_mutex_unlock(&s->mu);
		if (done)
			return NULL;
		if (n == 1) {
			fprintf(stderr, "ateom: %s: finishing the call in progress, then exiting\n",
				strsignal(sig));
			grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
		} else {
			fprintf(stderr, "ateom: %s again: cancelling calls\n", strsignal(sig));
			grpc_server_cancel_all_calls(s->server);
		}
	}
}

/* ---- main loop ---- */

static void dispatch(struct server *s, struct call *c)
{
	switch (c->m) {
	case M_HEALTH:
		handle_health(c);
		break;
	case M_UNKNOWN: {
		char msg[300];
		char *method = grpc_slice_to_c_string(c->details.method);
		snprintf(msg, sizeof(msg), "ateom does not serve %s", method);
		gpr_free(method);
		reply(c, GRPC_STATUS_UNIMPLEMENTED, msg, NULL);
		break;
	}
	default:
		enqueue(s, c);
	}
}

static void serve(struct server *s)
{
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME),
							   NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			return;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (ev.tag == &s->shutdown_tag) {
			/* Every call has completed; what is left in the queue are
			 * failed requests, drained until GRPC_QUEUE_SHUTDOWN. */
			grpc_completion_queue_shutdown(s->cq);
			continue;
		}
		struct call *c = ev.tag;
		if (c->stage == ST_REPLYING) {
			call_free(c);
			continue;
		}
		if (!ev.success) {
			/* a request the shutting-down server will not fill */
			call_free(c);
			continue;
		}
		/* Keep one request outstanding per method. */
		request_call(s, c->m);
		dispatch(s, c);
	}
}

/* ---- flags ---- */

static const char usage[] =
	"Usage: ateom [options]\n"
	"Serve the Ateom gRPC service: run, checkpoint and restore one gVisor sandbox.\n"
	"\n"
	"  --listen ADDR        host:port or unix:PATH (default 127.0.0.1:50051)\n"
	"  --bundle-root DIR    OCI bundles: DIR/<namespace>/<template>/<container>/\n"
	"                       (default /var/lib/ateom/bundles)\n"
	"  --work-dir DIR       checkpoint and restore images, console logs\n"
	"                       (default /var/lib/ateom/work)\n"
	"  --runsc PATH         runsc when a request leaves runsc_path empty (default runsc)\n"
	"  --runsc-arg ARG      global runsc flag, repeatable (--root=..., --platform=ptrace, ...)\n"
	"  --store URI          snapstream store (default: .snapstream beside each snapshot)\n"
	"  --key-file FILE      key of a keyed store (snapstream init --key-file); mode 600\n"
	"  --no-follow          push the checkpoint after runsc wrote it, not while it writes\n"
	"  --no-stream-restore  pull the whole image before runsc restore, not while it reads\n"
	"  --cache DIR          node cache shared with the node's other snapstream processes,\n"
	"                       for stores in object storage (default WORK-DIR/cache)\n"
	"  --cache-size SIZE    its bound, e.g. 20G (default 10G, at least 16M)\n"
	"  --no-cache           checkpoint and restore without the node cache\n"
	"  --buffers SIZE       memory kept resident for the buffers of checkpoints and\n"
	"                       restores, faulted in once at start instead of on every\n"
	"                       call (default 128M; 0: map them afresh per call)\n"
	"  --restore-memory SIZE\n"
	"                       restoring while pulling, keep an image of up to SIZE in\n"
	"                       memory, a larger one in an unlinked file in the work dir\n"
	"                       (default auto: a quarter of the memory left; 0: always\n"
	"                       a file)\n"
	"  --help               this text\n"
	"\n"
	"Logs one JSON line per RPC on stdout. SIGTERM/SIGINT: finish the call in\n"
	"progress, refuse queued ones, delete a sandbox that is still executing, exit.\n";

struct flags {
	const char *listen, *bundle_root, *work_dir, *runsc, *store, *key_file;
	const char *runsc_args[MAX_RUNSC_ARGS];
	size_t nrunsc_args;
	bool no_follow;
	bool no_stream_restore;
	const char *cache;      /* NULL: WORK-DIR/cache */
	uint64_t cache_size;
	bool no_cache;
	uint64_t buffers;       /* bytes of resident buffers; 0: none */
	uint64_t restore_memory;  /* WL_RESTORE_MEMORY_AUTO: auto */
};

static int parse_flags(int argc, char **argv, struct flags *f)
{
	enum { O_LISTEN = 1000, O_BUNDLE, O_WORK, O_RUNSC, O_RUNSC_ARG, O_STORE, O_KEY, O_NO_FOLLOW,
	       O_NO_STREAM, O_CACHE, O_CACHE_SIZE, O_NO_CACHE, O_BUFFERS, O_RESTORE_MEMORY, O_HELP };
	static const struct option opts[] = {
		{"listen", required_argument, NULL, O_LISTEN},
		{"bundle-root", required_argument, NULL, O_BUNDLE},
		{"work-dir", required_argument, NULL, O_WORK},
		{"runsc", required_argument, NULL, O_RUNSC},
		{"runsc-arg", required_argument, NULL, O_RUNSC_ARG},
		{"store", required_argument, NULL, O_STORE},
		{"key-file", required_argument, NULL, O_KEY},
		{"no-follow", no_argument, NULL, O_NO_FOLLOW},
		{"no-stream-restore", no_argument, NULL, O_NO_STREAM},
		{"cache", required_argument, NULL, O_CACHE},
		{"cache-size", required_argument, NULL, O_CACHE_SIZE},
		{"no-cache", no_argument, NULL, O_NO_CACHE},
		{"buffers", required_argument, NULL, O_BUFFERS},
		{"restore-memory", required_argument, NULL, O_RESTORE_MEMORY},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	*f = (struct flags){.listen = "127.0.0.1:50051",
			    .bundle_root = "/var/lib/ateom/bundles",
			    .work_dir = "/var/lib/ateom/work",
			    .runsc = "runsc",
			    .buffers = DEFAULT_BUFFERS,
			    .restore_memory = WL_RESTORE_MEMORY_AUTO};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case O_LISTEN: f->listen = optarg; break;
		case O_BUNDLE: f->bundle_root = optarg; break;
		case O_WORK: f->work_dir = optarg; break;
		case O_RUNSC: f->runsc = optarg; break;
		case O_STORE: f->store = optarg; break;
		case O_KEY: f->key_file = optarg; break;
		case O_NO_FOLLOW: f->no_follow = true; break;
		case O_NO_STREAM: f->no_stream_restore = true; break;
		case O_CACHE: f->cache = optarg; break;
		case O_NO_CACHE: f->no_cache = true; break;
		case O_BUFFERS:
			if (!strcmp(optarg, "0")) {
				f->buffers = 0;
			} else if (!ss_parse_bytes(optarg, SS_CACHE_SIZE_MIN, MAX_BUFFERS, &f->buffers)) {
				fprintf(stderr, "ateom: --buffers takes 0 or a size from 16M to 4G "
					"(suffix K, M, G), got '%s'\n", optarg);
				return 2;
			}
			break;
		case O_RESTORE_MEMORY:
			if (!strcmp(optarg, "auto")) {
				f->restore_memory = WL_RESTORE_MEMORY_AUTO;
			} else if (!strcmp(optarg, "0")) {
				f->restore_memory = 0;
			} else if (!ss_parse_bytes(optarg, 1, WL_RESTORE_MEMORY_AUTO - 1,
						   &f->restore_memory)) {
				fprintf(stderr, "ateom: --restore-memory takes auto, 0 or a size "
					"(suffix K, M, G or T), got '%s'\n", optarg);
				return 2;
			}
			break;
		case O_CACHE_SIZE:
			if (!ss_parse_bytes(optarg, SS_CACHE_SIZE_MIN, UINT64_MAX >> 14, &f->cache_size)) {
				fprintf(stderr, "ateom: --cache-size takes a size from 16M up (suffix K, "
					"M, G or T), got '%s'\n", optarg);
				return 2;
			}
			break;
		case O_RUNSC_ARG:
			if (f->nrunsc_args == MAX_RUNSC_ARGS) {
				fprintf(stderr, "ateom: more than %d --runsc-arg\n", MAX_RUNSC_ARGS);
				return 2;
			}
			f->runsc_args[f->nrunsc_args++] = optarg;
			break;
		case O_HELP:
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ateom: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (f->bundle_root[0] != '/' || f->work_dir[0] != '/') {
		/* Both end up in runsc command lines and in messages to the
		 * control plane; relative paths would mean nothing there. */
		fprintf(stderr, "ateom: --bundle-root and --work-dir must be absolute paths\n");
		return 2;
	}
	if (f->cache && f->cache[0] != '/') {
		fprintf(stderr, "ateom: --cache must be an absolute path\n");
		return 2;
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct flags f;
	int rc = parse_flags(argc, argv, &f);
	if (rc >= 0)
		return rc;

	/* Block the shutdown signals before any thread exists (gRPC starts its
	 * own in grpc_init), so that only the signal thread receives them. */
	struct sigthread st;
	sigemptyset(&st.set);
	sigaddset(&st.set, SIGTERM);
	sigaddset(&st.set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &st.set, NULL);
	/* SIGCHLD too, for the reaper thread's sigtimedwait (reaper.h). */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, NULL);
	/* A client that hangs up must not kill the server. */
	signal(SIGPIPE, SIG_IGN);
	/* A restore's pull keeps each file of the image open until it is
	 * verified: take the whole descriptor limit the system allows (the
	 * library never changes process-wide limits itself). */
	ss_prepare_fds(8192);

	/* Read the key before anything starts, so that a bad key file stops
	 * the server at once instead of failing every checkpoint. */
	uint8_t key[4096];
	size_t key_len = 0;
	if (f.key_file) {
		char err[600];
		if (ss_key_read(f.key_file, key, sizeof(key), &key_len, err, sizeof(err))) {
			fprintf(stderr, "ateom: --key-file %s\n", err);
			return 2;
		}
	}
	struct reaper *reaper = NULL;
	int rr = reaper_start(&reaper);
	if (rr < 0)
		fprintf(stderr, "ateom: cannot become the sandboxes' subreaper (%s): runsc delete "
			"and checkpoint wait for init to reap them\n", strerror(-rr));
	/* The node cache is on unless asked not to be: restores of related
	 * snapshots and of this node's own checkpoints then fetch what the
	 * node already has only once (docs/DESIGN.md, "The node cache"). */
	char cache_dir[4096];
	if (!f.no_cache && !f.cache &&
	    snprintf(cache_dir, sizeof(cache_dir), "%s/cache", f.work_dir) < (int)sizeof(cache_dir))
		f.cache = cache_dir;
	struct wl_config wc = {f.bundle_root, f.work_dir, f.runsc, f.runsc_args, f.nrunsc_args,
			       f.store, f.no_follow, f.key_file ? key : NULL, key_len, reaper,
			       (const char *const *)environ};
	wc.no_stream_restore = f.no_stream_restore;
	wc.restore_memory = f.restore_memory;
	wc.cache_dir = f.no_cache ? NULL : f.cache;
	wc.cache_size = f.cache_size;
	/* Faulted in now, while nothing waits, rather than on every call:
	 * on a VM that backs guest memory lazily, faulting a checkpoint's
	 * ~100 MiB of fresh buffers cost as much CPU as the push itself,
	 * beside a runsc checkpoint that needs both cores (docs/ATEOM.md). */
	struct ss_buffers *bufs = NULL;
	if (f.buffers) {
		int br = ss_buffers_new((size_t)f.buffers, &bufs);
		if (br < 0)
			fprintf(stderr, "ateom: cannot keep %llu MiB of buffers resident (%s): "
				"calls map their own\n", (unsigned long long)(f.buffers >> 20),
				strerror(-br));
	}
	wc.buffers = bufs;
	struct server s;
	memset(&s, 0, sizeof(s));
	s.wl = wl_new(&wc);
	explicit_bzero(key, sizeof(key));   /* the workload keeps its own copy */
	if (!s.wl) {
		fprintf(stderr, "ateom: cannot use --work-dir %s: %s\n", f.work_dir, strerror(errno));
		ss_buffers_free(bufs);
		reaper_stop(reaper);
		return 1;
	}
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);

	grpc_init();
	s.cq = grpc_completion_queue_create_for_next(NULL);
	s.server = grpc_server_create(NULL, NULL);
	grpc_server_register_completion_queue(s.server, s.cq, NULL);
	for (int m = 0; m < M_NMETHODS; m++)
		s.registered[m] = grpc_server_register_method(
			s.server, method_path[m], NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
	int port = grpc_server_add_http2_port(s.server, f.listen, creds);
	grpc_server_credentials_release(creds);
	if (port == 0) {
		fprintf(stderr, "ateom: cannot listen on %s\n", f.listen);
		rc = 1;
		goto out_grpc;
	}
	grpc_server_start(s.server);
	for (int m = 0; m <= M_UNKNOWN; m++)
		request_call(&s, (enum method)m);

	pthread_t worker, sigthr;
	pthread_create(&worker, NULL, worker_main, &s);
	st.s = &s;
	pthread_create(&sigthr, NULL, signal_main, &st);
	fprintf(stderr, "ateom: serving on %s (port %d), snapstream %s, bundles in %s\n", f.listen,
		port, ss_version(), f.bundle_root);

	serve(&s);

	pthread_mutex_lock(&s.mu);
	s.worker_exit = true;
	s.main_done = true;
	pthread_cond_signal(&s.cv);
	pthread_mutex_unlock(&s.mu);
	pthread_join(worker, NULL);
	pthread_kill(sigthr, SIGTERM);
	pthread_join(sigthr, NULL);
	rc = 0;
out_grpc:
	if (rc != 0) {
		grpc_server_shutdown_and_notify(s.server, s.cq, &s.shutdown_tag);
		grpc_completion_queue_shutdown(s.cq);
		while (grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
		       GRPC_QUEUE_SHUTDOWN)
			;
	}
	grpc_server_destroy(s.server);
	grpc_completion_queue_destroy(s.cq);
	grpc_shutdown();

	char note[512];
	wl_free(s.wl, note, sizeof(note));
	if (note[0])
		fprintf(stderr, "ateom: %s\n", note);
	ss_buffers_free(bufs);   /* no call runs any more */
	pthread_cond_destroy(&s.cv);
	pthread_mutex_destroy(&s.mu);
	reaper_stop(reaper);
	return rc;
}
