/* workload.c — run, checkpoint and restore one gVisor sandbox.
 *
 * Work directory layout (one sandbox at a time, see docs/ATEOM.md):
 *   <work-dir>/sandbox-XXXXXX/console.log   stdout+stderr of every runsc
 *                                           command and of the workload
 *   <work-dir>/sandbox-XXXXXX/checkpoint/   runsc checkpoint --image-path
 *   <work-dir>/sandbox-XXXXXX/restore/      the pulled snapshot (removed
 *                                           once runsc restore returned)
 * The directory goes when the sandbox goes, except when a checkpoint image
 * could not be uploaded: it then stays, so that nothing is lost.
 */
#include "workload.h"

#include "bundle.h"
#include "fusefile.h"
#include "runsc.h"
#include "runtime.h"
#include "trash.h"
#include "snapstream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WL_MAX_CONTAINERS 16
#define WL_MAX_NAME 128
#define WL_KEY_MAP 4096u   /* the key's mapping: SS_KEY_MAX bytes */
#define LABEL_RUNSC_VERSION "runsc.version"
#define LABEL_RUNSC_SHA256 "runsc.sha256"

struct deleter;

struct wl {
	/* configuration, owned copies */
	char *bundle_root, *work_dir, *runsc, *store;
	char *cache_dir;        /* the node cache, or NULL */
	uint64_t cache_size;
	struct ss_buffers *buffers;  /* wl_config.buffers */
	struct reaper *reaper;  /* main's, or NULL */
	/* A keyed store's key (key_len 0: none), in a mapping of its own: out
	 * of core dumps, locked when the limit allows, wiped when freed. */
	uint8_t *key;
	size_t key_len;
	const char *const *env;  /* the engine's environment block (wl_config.env) */
	char **runsc_args;
	size_t nrunsc_args;
	bool follow;
	bool stream_restore;    /* restore while pulling (fusefile.h) */
	uint64_t restore_memory;   /* fusepull_opts.memory_max */

	/* the sandbox, when executing */
	bool executing;
	bool image_pending;     /* checkpoint written, upload not done yet */
	bool deleted;           /* runsc delete done: only the image is left */
	struct deleter *cleanup;        /* delete still running after a checkpoint */
	struct unmounter *unmounter;    /* a restore's file system still being torn down */
	char *ids[WL_MAX_CONTAINERS];  /* runsc container ids; ids[0] is the sandbox root */
	char *names[WL_MAX_CONTAINERS];
	size_t nids;            /* containers runsc has: the first nids of names */
	size_t nnames;          /* containers of the workload (a restored sandbox
				 * has only its root in runsc: see wl_checkpoint) */
	char *runsc_path;       /* the runsc that started it: it must checkpoint it too */
	char *ns, *name, *actor_id;
	char *restored_from;    /* snapshot it was restored from: the next push's parent */
	char *dir;              /* <work-dir>/sandbox-XXXXXX */
	int log_fd;
	/* The sandbox process (runsc's --pid-file), as a pidfd so that a
	 * signal can never reach a process that reused its pid; -1 when
	 * unknown. See sandbox_gone. */
	int sandbox_pidfd;
	pid_t sandbox_pid;
	struct trash *trash;    /* removes images after the reply; NULL: inline */
	struct rt *rt;          /* runsc binaries in the store and the local cache */

	/* The last runsc asked for its version. Spawning runsc costs tens of
	 * milliseconds on every checkpoint and restore; the answer only
	 * changes when the binary does. */
	struct {
		char path[PATH_MAX];
		dev_t dev;
		ino_t ino;
		off_t size;
		struct timespec mtime;
		char version[256];
	} vcache;
};

/* runsc_version, remembered while the binary at `path` is unchanged. */
static int cached_version(struct wl *w, const char *path, char *buf, size_t len,
			  struct runsc_out *out)
{
	struct stat st;
	bool known = stat(path, &st) == 0 && strcmp(w->vcache.path, path) == 0 &&
		     w->vcache.dev == st.st_dev && w->vcache.ino == st.st_ino &&
		     w->vcache.size == st.st_size && w->vcache.mtime.tv_sec == st.st_mtim.tv_sec &&
		     w->vcache.mtime.tv_nsec == st.st_mtim.tv_nsec;
	if (known && strlen(w->vcache.version) < len) {
		snprintf(buf, len, "%s", w->vcache.version);
		return 0;
	}
	int r = runsc_version(path, w->reaper, buf, len, out);
	if (r == 0 && stat(path, &st) == 0 && strlen(path) < sizeof(w->vcache.path) &&
	    strlen(buf) < sizeof(w->vcache.version)) {
		snprintf(w->vcache.path, sizeof(w->vcache.path), "%s", path);
		snprintf(w->vcache.version, sizeof(w->vcache.version), "%s", buf);
		w->vcache.dev = st.st_dev;
		w->vcache.ino = st.st_ino;
		w->vcache.size = st.st_size;
		w->vcache.mtime = st.st_mtim;
	}
	return r;
}

static void reap(struct wl *w, struct wl_result *res);
static void settle(struct wl *w);

/* ---- small helpers ---- */

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static void add_phase(struct wl_result *res, const char *name, double ms)
{
	if (res->nphases < WL_MAX_PHASES) {
		res->phase[res->nphases].name = name;
		res->phase[res->nphases].ms = ms;
		res->nphases++;
	}
}

static void phase(struct wl_result *res, const char *name, const struct timespec *t0)
{
	add_phase(res, name, ms_since(t0));
}

static void now(struct timespec *t)
{
	clock_gettime(CLOCK_MONOTONIC, t);
}

__attribute__((format(printf, 3, 4)))
static void fail(struct wl_result *res, enum wl_code code, const char *fmt, ...)
{
	va_list ap;
	res->code = code;
	va_start(ap, fmt);
	vsnprintf(res->msg, sizeof(res->msg), fmt, ap);
	va_end(ap);
}

static void set_stats(struct wl_result *res, const struct ss_stats *st)
{
	res->have_stats = true;
	res->logical_bytes = st->logical_bytes;
	res->zero_bytes = st->zero_bytes;
	res->dedup_bytes = st->dedup_bytes;
	res->new_stored_bytes = st->new_stored_bytes;
	res->transferred_bytes = st->transferred_bytes;
}

static char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Names become path components and runsc container ids: keep them to the
 * characters runsc accepts in an id, and never "." or "..". */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > WL_MAX_NAME || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

/* A snapshot URI: scheme://rest with a lower-case scheme, or an absolute
 * path. Checked before anything irreversible happens (runsc checkpoint
 * stops the sandbox); the engine validates the rest. A relative path would
 * depend on the server's working directory, which no client can know. */
static bool uri_ok(const char *s)
{
	if (!*s)
		return false;
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == ' ')
			return false;
	const char *sep = strstr(s, "://");
	if (!sep)
		return s[0] == '/';
	if (sep == s || sep[3] == '\0')
		return false;
	for (const char *p = s; p < sep; p++)
		if (!((*p >= 'a' && *p <= 'z') || (p > s && ((*p >= '0' && *p <= '9') ||
							    *p == '+' || *p == '-' || *p == '.'))))
			return false;
	return true;
}

/* The request's snapshot_uri_prefix: given, and a URI (uri_ok). False,
 * with res failed, when not. */
static bool snapshot_uri_ok(const struct wl_req *q, struct wl_result *res)
{
	if (!q->snapshot_uri || !*q->snapshot_uri) {
		fail(res, WL_INVALID_ARGUMENT, "snapshot_uri_prefix is required");
		return false;
	}
	if (!uri_ok(q->snapshot_uri)) {
		fail(res, WL_INVALID_ARGUMENT,
		     "snapshot_uri_prefix '%s' is not a URI (scheme://...) or an absolute path",
		     q->snapshot_uri);
		return false;
	}
	return true;
}

/* The engine's -errno, as the failure class a client can act on. */
static enum wl_code engine_code(int r)
{
	switch (r) {
	case -ENOENT:
		return WL_NOT_FOUND;
	case -EINVAL:
		return WL_INVALID_ARGUMENT;
	case -EEXIST:
		return WL_ALREADY_EXISTS;
	case -EBADMSG:
		return WL_DATA_LOSS;
	case -EPROTONOSUPPORT:
		return WL_FAILED_PRECONDITION;  /* written by a newer snapstream */
	case -EACCES:
	case -EPERM:
	case -EKEYREJECTED:
	case -ENOKEY:
		return WL_PERMISSION_DENIED;   /* a keyed store, and not our key */
	case -EXDEV:
		return WL_FAILED_PRECONDITION; /* sealed in another store than ours */
	case -ENOSPC:
	case -EDQUOT:
		return WL_RESOURCE_EXHAUSTED;
	case -ECONNREFUSED:
	case -ECONNRESET:
	case -ECONNABORTED:
	case -EHOSTUNREACH:
	case -ENETUNREACH:
	case -ETIMEDOUT:
	case -EAGAIN:
	case -EPIPE:
	case -EIO:
		/* the backends retry these before giving up */
		return WL_UNAVAILABLE;
	default:
		return WL_INTERNAL;
	}
}

static const char *runsc_for(const struct wl *w, const struct wl_req *q)
{
	return q->runsc_path && *q->runsc_path ? q->runsc_path : w->runsc;
}

static struct runsc runsc_with(const struct wl *w, const char *path)
{
	return (struct runsc){path, (const char *const *)w->runsc_args, w->nrunsc_args, w->reaper};
}

/* ---- lifecycle ---- */

struct wl *wl_new(const struct wl_config *cfg)
{
	struct wl *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->log_fd = -1;
	w->sandbox_pidfd = -1;
	w->follow = !cfg->no_follow;
	w->stream_restore = !cfg->no_stream_restore;
	w->restore_memory = cfg->restore_memory == WL_RESTORE_MEMORY_AUTO ? FUSEPULL_MEMORY_AUTO
									 : cfg->restore_memory;
	w->bundle_root = xstrdup(cfg->bundle_root);
	w->work_dir = xstrdup(cfg->work_dir);
	w->runsc = xstrdup(cfg->runsc ? cfg->runsc : "runsc");
	w->store = xstrdup(cfg->store);
	w->cache_dir = xstrdup(cfg->cache_dir);
	w->cache_size = cfg->cache_size;
	w->buffers = cfg->buffers;
	w->reaper = cfg->reaper;
	w->env = cfg->env;
	if (cfg->key && cfg->key_len && cfg->key_len <= WL_KEY_MAP) {
		void *p = mmap(NULL, WL_KEY_MAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (p == MAP_FAILED)
			goto fail;
		madvise(p, WL_KEY_MAP, MADV_DONTDUMP);
		(void)mlock(p, WL_KEY_MAP);
		w->key = p;
		memcpy(w->key, cfg->key, cfg->key_len);
		w->key_len = cfg->key_len;
	}
	w->runsc_args = calloc(cfg->nrunsc_args + 1, sizeof(char *));
	if (!w->bundle_root || !w->work_dir || !w->runsc || !w->runsc_args ||
	    (cfg->store && !w->store) || (cfg->cache_dir && !w->cache_dir))
		goto fail;
	for (size_t i = 0; i < cfg->nrunsc_args; i++) {
		if (!(w->runsc_args[i] = strdup(cfg->runsc_args[i])))
			goto fail;
		w->nrunsc_args++;
	}
	if (mkdir(w->work_dir, 0700) < 0 && errno != EEXIST)
		goto fail;
	if (trash_new(w->work_dir, &w->trash) < 0)
		w->trash = NULL;
	struct rt_config rc = {.work_dir = w->work_dir, .store = w->store, .env = w->env,
			       .key = w->key_len ? w->key : NULL, .key_len = w->key_len};
	if (!(w->rt = rt_new(&rc)))
		goto fail;
	return w;
fail:;
	int e = errno ? errno : ENOMEM;
	wl_free(w, NULL, 0);
	errno = e;
	return NULL;
}

/* The parent pid of pid from /proc (the comm field may hold spaces and
 * parentheses: the fields after the last ')' are fixed), or -1. */
static pid_t parent_of(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	char *p = strrchr(buf, ')');
	char state;
	int ppid;
	if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2)
		return -1;
	return (pid_t)ppid;
}

/* The sandbox's process, from the pid file runsc run/restore wrote into
 * the sandbox directory. It is ateom's child by then (reaper.h): the
 * pidfd is kept only if the process it holds is, so it is the sandbox
 * and not whatever might have reused a pid. Without one (no reaper, an
 * old kernel) deletes work as before, only slower. */
static void note_sandbox(struct wl *w, const char *pid_file)
{
	char buf[32] = "";
	int fd = open(pid_file, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	unlink(pid_file);
	char *end;
	long pid = n > 0 ? strtol(buf, &end, 10) : 0;
	if (pid <= 1 || pid > INT32_MAX || (*end && *end != '\n'))
		return;
	int pfd = pidfd_open((pid_t)pid, 0);
	if (pfd < 0)
		return;
	if (parent_of((pid_t)pid) != getpid()) {
		/* Not ateom's child (no reaper: init adopted it), or not the
		 * sandbox at all: never signal it. */
		close(pfd);
		return;
	}
	if (w->sandbox_pidfd >= 0)
		close(w->sandbox_pidfd);
	w->sandbox_pidfd = pfd;
	w->sandbox_pid = (pid_t)pid;
}

static void forget_sandbox(struct wl *w)
{
	if (w->sandbox_pidfd >= 0)
		close(w->sandbox_pidfd);
	w->sandbox_pidfd = -1;
	w->sandbox_pid = 0;
}

/* Kill the sandbox process and wait until it is reaped, before runsc
 * delete. delete polls kill(pid, 0) every 100 ms until the process is
 * gone, and a checkpointed sandbox is still exiting when runsc checkpoint
 * returns: strace showed delete's first poll find it alive, then a 100 ms
 * sleep (120-140 ms per delete of the 256 MiB sandbox, 18-26 ms once it
 * was gone first). delete -force kills it anyway. The pidfd says when it
 * exited; ateom's reaper then reaps it at once, which the short poll of
 * its pid waits for (bounded: without a reaper init reaps it). */
static void sandbox_gone(int pidfd, pid_t pid)
{
	if (pidfd < 0)
		return;
	if (pidfd_send_signal(pidfd, SIGKILL, NULL, 0) < 0 && errno != ESRCH)
		return;
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	if (poll(&p, 1, 2000) <= 0)
		return;
	for (int i = 0; i < 200 && kill(pid, 0) == 0; i++)
		nanosleep(&(struct timespec){0, 1000000}, NULL);
}

/* runsc delete -force each of ids, the last (sub-containers) first,
 * once the sandbox process (pidfd, -1 if unknown) is gone.
 * Returns 0 or the first failure, whose tail is in out (if not NULL). */
static int delete_ids(const struct runsc *rs, char *const *ids, size_t nids, int log_fd,
		      int pidfd, pid_t pid, struct runsc_out *out)
{
	int ret = 0;
	sandbox_gone(pidfd, pid);
	for (size_t i = nids; i-- > 0;) {
		const char *cmd[] = {"delete", "-force", ids[i], NULL};
		int r = runsc_call(rs, cmd, log_fd >= 0 ? log_fd : STDERR_FILENO, out);
		if (r < 0 && !ret)
			ret = r;
	}
	return ret;
}

static int delete_containers(const struct wl *w, struct runsc_out *out)
{
	if (w->deleted)
		return 0;
	struct runsc rs = runsc_with(w, w->runsc_path ? w->runsc_path : w->runsc);
	return delete_ids(&rs, w->ids, w->nids, w->log_fd, w->sandbox_pidfd, w->sandbox_pid, out);
}

/* Forget the sandbox: delete its containers, close its log, remove its
 * directory unless an image awaits upload. Returns delete_containers'. */
static int teardown(struct wl *w, struct runsc_out *out)
{
	int ret = delete_containers(w, out);
	for (size_t i = 0; i < WL_MAX_CONTAINERS; i++) {
		free(w->ids[i]);
		free(w->names[i]);
		w->ids[i] = w->names[i] = NULL;
	}
	w->nids = w->nnames = 0;
	forget_sandbox(w);
	if (w->log_fd >= 0)
		close(w->log_fd);
	w->log_fd = -1;
	if (!w->image_pending)
		rm_tree(w->dir);
	free(w->dir);
	free(w->runsc_path);
	free(w->ns);
	free(w->name);
	free(w->actor_id);
	free(w->restored_from);
	w->dir = w->runsc_path = w->ns = w->name = w->actor_id = w->restored_from = NULL;
	w->executing = false;
	w->image_pending = false;
	w->deleted = false;
	return ret;
}

void wl_free(struct wl *w, char *msg, size_t msglen)
{
	if (!w)
		return;
	if (msg && msglen)
		msg[0] = '\0';
	settle(w);
	reap(w, NULL);
	if (w->executing || w->nids) {
		if (msg && w->image_pending)
			snprintf(msg, msglen, "checkpoint image of actor %s not uploaded; kept in %s/checkpoint",
				 w->actor_id, w->dir);
		else if (msg)
			snprintf(msg, msglen, "deleted the sandbox of actor %s, which was never checkpointed",
				 w->actor_id);
		teardown(w, NULL);
	}
	trash_free(w->trash);
	rt_free(w->rt);
	free(w->bundle_root);
	free(w->work_dir);
	free(w->runsc);
	free(w->store);
	free(w->cache_dir);
	if (w->key) {
		explicit_bzero(w->key, WL_KEY_MAP);
		munlock(w->key, WL_KEY_MAP);
		munmap(w->key, WL_KEY_MAP);
	}
	for (size_t i = 0; i < w->nrunsc_args; i++)
		free(w->runsc_args[i]);
	free(w->runsc_args);
	free(w);
}

const char *wl_state(const struct wl *w)
{
	return w->executing ? "executing" : "available";
}

/* ---- request checks shared by run and restore ---- */

/* Validate identity and containers, and find every bundle. bundles[i] is
 * malloc'd. Returns false with res filled. */
static bool check_start(const struct wl *w, const struct wl_req *q, struct wl_result *res,
			char **bundles)
{
	if (w->executing) {
		fail(res, WL_FAILED_PRECONDITION,
		     "a workload is executing (actor %s); CheckpointWorkload it first", w->actor_id);
		return false;
	}
	static const char *const what[] = {"actor_template_namespace", "actor_template_name",
					   "actor_id"};
	const char *val[] = {q->ns, q->name, q->actor_id};
	for (size_t i = 0; i < 3; i++) {
		if (!val[i] || !*val[i]) {
			fail(res, WL_INVALID_ARGUMENT, "%s is required", what[i]);
			return false;
		}
		if (!name_ok(val[i])) {
			fail(res, WL_INVALID_ARGUMENT,
			     "%s '%s' must be 1-%d characters of [A-Za-z0-9._-], not '.' or '..'",
			     what[i], val[i], WL_MAX_NAME);
			return false;
		}
	}
	if (q->ncontainers == 0) {
		fail(res, WL_INVALID_ARGUMENT, "spec.containers is empty: name at least one container");
		return false;
	}
	if (q->ncontainers > WL_MAX_CONTAINERS) {
		fail(res, WL_INVALID_ARGUMENT, "spec.containers has %zu entries; at most %d",
		     q->ncontainers, WL_MAX_CONTAINERS);
		return false;
	}
	for (size_t i = 0; i < q->ncontainers; i++) {
		if (!name_ok(q->containers[i])) {
			fail(res, WL_INVALID_ARGUMENT,
			     "spec.containers[%zu].name '%s' must be 1-%d characters of [A-Za-z0-9._-]",
			     i, q->containers[i], WL_MAX_NAME);
			return false;
		}
		for (size_t j = 0; j < i; j++)
			if (!strcmp(q->containers[i], q->containers[j])) {
				fail(res, WL_INVALID_ARGUMENT, "container name '%s' appears twice",
				     q->containers[i]);
				return false;
			}
	}
	for (size_t i = 0; i < q->ncontainers; i++) {
		struct stat st;
		char cfgpath[PATH_MAX];
		if (asprintf(&bundles[i], "%s/%s/%s/%s", w->bundle_root, q->ns, q->name,
			     q->containers[i]) < 0) {
			bundles[i] = NULL;
			fail(res, WL_INTERNAL, "out of memory");
			return false;
		}
		snprintf(cfgpath, sizeof(cfgpath), "%s/config.json", bundles[i]);
		if (stat(cfgpath, &st) < 0 || !S_ISREG(st.st_mode)) {
			fail(res, WL_NOT_FOUND, "no OCI bundle for container '%s': %s: %s",
			     q->containers[i], cfgpath, strerror(errno ? errno : EINVAL));
			return false;
		}
	}
	return true;
}

/* Make the sandbox directory and its console log; record identity. */
static int begin_sandbox(struct wl *w, const struct wl_req *q, const char *runsc,
			 struct wl_result *res)
{
	if (asprintf(&w->dir, "%s/sandbox-XXXXXX", w->work_dir) < 0) {
		w->dir = NULL;
		fail(res, WL_INTERNAL, "out of memory");
		return -ENOMEM;
	}
	if (!mkdtemp(w->dir)) {
		int e = errno;
		fail(res, WL_INTERNAL, "cannot create a directory in --work-dir %s: %s", w->work_dir,
		     strerror(e));
		free(w->dir);
		w->dir = NULL;
		return -e;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/console.log", w->dir);
	/* Read as well as appended to: runsc_call reads each command's tail. */
	w->log_fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (w->log_fd < 0) {
		int e = errno;
		fail(res, WL_INTERNAL, "cannot create %s: %s", path, strerror(e));
		return -e;
	}
	w->runsc_path = strdup(runsc);
	w->ns = strdup(q->ns);
	w->name = strdup(q->name);
	w->actor_id = strdup(q->actor_id);
	for (size_t i = 0; i < q->ncontainers; i++) {
		w->names[i] = strdup(q->containers[i]);
		w->nnames = i + 1;
		/* The first container is the sandbox root and carries the actor's
		 * id; the others are "+<name>+<actor id>". runsc takes any id
		 * that no other id in its root starts with as that container
		 * (and refuses ids that match two), so no id may start with
		 * another: names and actor ids have no '+', so none of these
		 * does. */
		if (i == 0)
			w->ids[i] = strdup(q->actor_id);
		else if (asprintf(&w->ids[i], "+%s+%s", q->containers[i], q->actor_id) < 0)
			w->ids[i] = NULL;
	}
	/* ids are counted only once runsc has been asked to create them. */
	if (!w->runsc_path || !w->ns || !w->name || !w->actor_id) {
		fail(res, WL_INTERNAL, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < q->ncontainers; i++)
		if (!w->ids[i] || !w->names[i]) {
			fail(res, WL_INTERNAL, "out of memory");
			return -ENOMEM;
		}
	return 0;
}

/* Undo a start that failed: delete what runsc created, drop the rest.
 * begin_sandbox filled ids[] past nids; free those too. */
static void abort_start(struct wl *w, size_t ncreated, size_t nalloc)
{
	for (size_t i = ncreated; i < nalloc; i++) {
		free(w->ids[i]);
		free(w->names[i]);
		w->ids[i] = w->names[i] = NULL;
	}
	w->nids = ncreated;
	w->image_pending = false;
	teardown(w, NULL);
}

static void free_bundles(char **b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(b[i]);
}

/* ---- RunWorkload ---- */

/* The bundles runsc starts the sub-containers (all but the first) from:
 * copies of the operator's config.json that name the root's sandbox
 * (bundle.h), in <sandbox dir>/bundles/<name>. derived[i] is malloc'd,
 * NULL for the root. False, with res failed, when one cannot be made. */
static bool derive_bundles(struct wl *w, const struct wl_req *q, char *const *bundles,
			   char **derived, struct wl_result *res)
{
	char dir[PATH_MAX], err[1024];
	if (q->ncontainers < 2)
		return true;
	snprintf(dir, sizeof(dir), "%s/bundles", w->dir);
	if (mkdir(dir, 0700) < 0) {
		fail(res, WL_INTERNAL, "cannot create %s: %s", dir, strerror(errno));
		return false;
	}
	for (size_t i = 1; i < q->ncontainers; i++) {
		if (asprintf(&derived[i], "%s/%s", dir, q->containers[i]) < 0) {
			derived[i] = NULL;
			fail(res, WL_INTERNAL, "out of memory");
			return false;
		}
		int r = bundle_derive_subcontainer(bundles[i], derived[i], w->ids[0], err,
						   sizeof(err));
		if (r < 0) {
			fail(res, r == -EBADMSG || r == -EFBIG ? WL_INVALID_ARGUMENT : WL_INTERNAL,
			     "container '%s': %s", q->containers[i], err);
			return false;
		}
	}
	return true;
}

void wl_run(struct wl *w, const struct wl_req *q, struct wl_result *res)
{
	char *bundles[WL_MAX_CONTAINERS] = {0}, *derived[WL_MAX_CONTAINERS] = {0};
	struct timespec t0;
	struct runsc_out out;
	const char *runsc = runsc_for(w, q);
	size_t created = 0;

	res->code = WL_OK;
	settle(w);
	if (!check_start(w, q, res, bundles))
		goto done;
	if (begin_sandbox(w, q, runsc, res) < 0 || !derive_bundles(w, q, bundles, derived, res)) {
		abort_start(w, 0, q->ncontainers);
		goto done;
	}
	reap(w, res);
	struct runsc rs = runsc_with(w, runsc);
	char pid_file[PATH_MAX];
	snprintf(pid_file, sizeof(pid_file), "%s/sandbox.pid", w->dir);
	now(&t0);
	for (size_t i = 0; i < q->ncontainers; i++) {
		const char *b = derived[i] ? derived[i] : bundles[i];
		const char *cmd[] = {"run", "--detach", "--bundle", b, w->ids[i], NULL};
		/* The root's pid file gives the sandbox's pid (sandbox_gone). */
		const char *cmd0[] = {"run", "--detach", "--pid-file", pid_file, "--bundle", b,
				      w->ids[i], NULL};
		/* Counted before the call: a run that fails half-way may leave a
		 * container behind, and delete -force cleans it up. */
		created = i + 1;
		if (runsc_call(&rs, i ? cmd : cmd0, w->log_fd, &out) < 0) {
			phase(res, "runsc_run", &t0);
			fail(res, WL_INTERNAL, "runsc run of container '%s' (bundle %s) failed (exit %d): %.1000s",
			     q->containers[i], bundles[i], out.status, out.tail);
			abort_start(w, created, q->ncontainers);
			goto done;
		}
		if (i == 0)
			note_sandbox(w, pid_file);
	}
	phase(res, "runsc_run", &t0);
	w->nids = q->ncontainers;
	w->executing = true;
done:
	free_bundles(bundles, q->ncontainers < WL_MAX_CONTAINERS ? q->ncontainers : WL_MAX_CONTAINERS);
	free_bundles(derived, WL_MAX_CONTAINERS);
	res->state = wl_state(w);
}

/* ---- CheckpointWorkload ---- */

/* runsc delete of a checkpointed sandbox takes a second or two (it waits
 * for the sandbox and gofer processes to go), while the image it left is
 * all the push needs. So the delete runs on a thread of its own, beside
 * the push, and if the push finishes first the reply goes out at once:
 * the sandbox is stopped for good either way. The call that starts the
 * next sandbox (and wl_free) reaps the delete just before runsc creates
 * it, so a new sandbox never starts before the old one is gone, and a
 * restore pulls its image meanwhile. */
struct deleter {
	pthread_t th;
	/* Copies of what the delete needs: the sandbox is forgotten (and the
	 * next call prepares its own) while the delete still runs. */
	struct runsc rs;
	char *runsc_path;
	char *ids[WL_MAX_CONTAINERS];
	size_t nids;
	int log_fd;
	int pidfd;              /* a copy of the sandbox's, or -1 */
	pid_t pid;
	struct runsc_out out;
	int r;
};

static void deleter_free(struct deleter *d)
{
	for (size_t i = 0; i < d->nids; i++)
		free(d->ids[i]);
	free(d->runsc_path);
	if (d->log_fd >= 0)
		close(d->log_fd);
	if (d->pidfd >= 0)
		close(d->pidfd);
	free(d);
}

static void *deleter_main(void *arg)
{
	struct deleter *d = arg;
	d->r = delete_ids(&d->rs, d->ids, d->nids, d->log_fd, d->pidfd, d->pid, &d->out);
	return NULL;
}

/* Start deleting w's containers on a thread. NULL if it cannot start:
 * then the caller deletes them inline. */
static struct deleter *deleter_start(const struct wl *w)
{
	struct deleter *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->log_fd = w->log_fd >= 0 ? fcntl(w->log_fd, F_DUPFD_CLOEXEC, 0) : -1;
	/* Without the copy the delete only takes longer. */
	d->pidfd = w->sandbox_pidfd >= 0 ? fcntl(w->sandbox_pidfd, F_DUPFD_CLOEXEC, 0) : -1;
	d->pid = w->sandbox_pid;
	d->runsc_path = strdup(w->runsc_path ? w->runsc_path : w->runsc);
	bool ok = d->runsc_path && (w->log_fd < 0 || d->log_fd >= 0);
	for (; ok && d->nids < w->nids; d->nids++)
		ok = (d->ids[d->nids] = strdup(w->ids[d->nids])) != NULL;
	d->rs = runsc_with(w, d->runsc_path);
	if (!ok || pthread_create(&d->th, NULL, deleter_main, d) != 0) {
		deleter_free(d);
		return NULL;
	}
	return d;
}

/* Finish a delete left running by the last checkpoint. Its time goes
 * into res as phase "previous_delete". Called before runsc creates a
 * sandbox, which reuses the ids. */
static void reap(struct wl *w, struct wl_result *res)
{
	struct timespec t0;
	if (!w->cleanup)
		return;
	now(&t0);
	pthread_join(w->cleanup->th, NULL);
	if (res)
		phase(res, "previous_delete", &t0);
	deleter_free(w->cleanup);
	w->cleanup = NULL;
}

/* A restore that read its image through the FUSE file system (fusefile.h)
 * replies once the pull verified; unmounting it waits ~15 ms for the
 * kernel (measured: 12-18 ms of a 30-50 ms wait after runsc restore), so
 * that, and trashing the mount point, run on a thread of their own. Every
 * call settles it first: the next one reuses the image's path. */
struct unmounter {
	pthread_t th;
	struct fusepull *fp;
	struct trash *trash;
	char img[PATH_MAX];
};

static void *unmounter_main(void *arg)
{
	struct unmounter *u = arg;
	fusepull_free(u->fp);
	trash_put(u->trash, u->img);
	return NULL;
}

/* Tear fp down and trash img, on a thread when one starts. */
static void unmount_later(struct wl *w, struct fusepull *fp, const char *img)
{
	struct unmounter *u = calloc(1, sizeof(*u));
	if (u) {
		*u = (struct unmounter){.fp = fp, .trash = w->trash};
		snprintf(u->img, sizeof(u->img), "%s", img);
		if (pthread_create(&u->th, NULL, unmounter_main, u) == 0) {
			w->unmounter = u;
			return;
		}
		free(u);
	}
	fusepull_free(fp);
	trash_put(w->trash, img);
}

static void settle(struct wl *w)
{
	if (!w->unmounter)
		return;
	pthread_join(w->unmounter->th, NULL);
	free(w->unmounter);
	w->unmounter = NULL;
}

/* The node cache for a call on snapshot_uri: w's, unless the store is on
 * this node's own file system (a path or file://, whether --store or the
 * default beside the snapshot). Such a store is read directly: a cache
 * there would keep a second copy of bytes the node's disk already holds,
 * and writing it through cost a checkpoint of 269 MB on disk ~4,100
 * files and 0.3-0.6 CPU-s (docs/ATEOM.md, "Checkpoint cost"). */
static const char *cache_for(const struct wl *w, const char *snapshot_uri)
{
	const char *uri = w->store ? w->store : snapshot_uri;
	const char *sep = uri ? strstr(uri, "://") : NULL;
	if (!sep || !strncmp(uri, "file://", 7))
		return NULL;
	return w->cache_dir;
}

/* The upload of one checkpoint image directory, on a thread of its own.
 * In follow mode (the default) it starts before runsc checkpoint: the
 * engine reads the image files behind runsc as they grow, and
 * upload_finish tells it whether runsc succeeded (read the tails, verify,
 * commit the snapshot) or failed (the push fails: no snapshot). Without
 * follow mode the same thread pushes the finished image. */
struct upload {
	struct ss_push_opts opts;
	struct ss_config cfg;
	struct ss_stats st;
	char err[512];
	pthread_t th;
	bool threaded;
	atomic_int writer;      /* 0: runsc still writing; 1: it exited 0; <0: it failed */
	int result;
};

static int upload_writer_status(void *arg)
{
	struct upload *u = arg;
	return atomic_load(&u->writer);
}

static void *upload_main(void *arg)
{
	struct upload *u = arg;
	u->result = ss_push(&u->opts, &u->cfg, &u->st, u->err, sizeof(u->err));
	return NULL;
}

/* follow: start pushing opts->source now, while it is still being
 * written (until upload_finish says how the writer ended). Otherwise, or
 * when no thread can be had, upload_finish pushes the finished source. */
static void upload_start(struct upload *u, const struct wl *w, const struct ss_push_opts *opts,
			 bool follow)
{
	memset(u, 0, sizeof(*u));
	u->opts = *opts;
	u->cfg.size = sizeof(u->cfg);
	u->cfg.env = w->env;
	u->cfg.cache_dir = cache_for(w, opts->snapshot);
	u->cfg.cache_size = w->cache_size;
	u->cfg.buffers = w->buffers;
	u->st.size = sizeof(u->st);
	if (w->key_len) {
		u->cfg.key = w->key;
		u->cfg.key_len = w->key_len;
	}
	atomic_init(&u->writer, 0);
	if (!follow)
		return;
	u->opts.writer_status = upload_writer_status;
	u->opts.writer_arg = u;
	u->threaded = pthread_create(&u->th, NULL, upload_main, u) == 0;
	if (!u->threaded)
		u->opts.writer_status = NULL;
}

/* Report the writer's outcome and wait for the push. Returns 0 when the
 * snapshot is committed, else -errno with u->err set (-ECANCELED when the
 * writer failed and nothing was pushed). */
static int upload_finish(struct upload *u, bool writer_ok)
{
	atomic_store(&u->writer, writer_ok ? 1 : -ECANCELED);
	if (u->threaded) {
		pthread_join(u->th, NULL);
		return u->result;
	}
	if (!writer_ok)
		return -ECANCELED;
	return ss_push(&u->opts, &u->cfg, &u->st, u->err, sizeof(u->err));
}

/* Keeping the runsc binary that writes a checkpoint in the store, so that
 * a restore elsewhere can run the same one (runtime.h). A binary the store
 * does not have yet (the first checkpoint into a store) is 24 MB to push:
 * on a thread of its own beside runsc checkpoint rather than before it,
 * and joined before the snapshot is committed, so that no snapshot is ever
 * visible without its runsc. Once a store is known to have it this is a
 * table lookup. The worker thread does not touch w->rt meanwhile. */
struct keeper {
	pthread_t th;
	bool threaded;
	struct rt *rt;
	const char *path, *digest, *version, *uri;
	char err[768];
	int r;
};

static void *keeper_main(void *arg)
{
	struct keeper *k = arg;
	k->r = rt_keep(k->rt, k->path, k->digest, k->version, k->uri, k->err, sizeof(k->err));
	return NULL;
}

static void keeper_start(struct keeper *k, struct wl *w, const struct wl_req *q,
			 const char *version, const char *digest)
{
	*k = (struct keeper){.rt = w->rt, .path = w->runsc_path, .digest = digest,
			     .version = version, .uri = q->snapshot_uri};
	k->threaded = pthread_create(&k->th, NULL, keeper_main, k) == 0;
}

/* Returns rt_keep's result (k->err says why it failed). */
static int keeper_join(struct keeper *k)
{
	if (k->threaded)
		pthread_join(k->th, NULL);
	else
		keeper_main(k);
	k->threaded = false;
	return k->r;
}

/* runsc checkpoints a sandbox as a whole (all its containers stop), but
 * Debian's runsc (0.0~20221219) cannot restore a sandbox in which a
 * sub-container was still running: restore reconnects the root's file
 * systems only, and the sub-container's root fails with "cannot allocate
 * memory" (tried: separate and shared rootfs, with and without shared
 * mounts). A sandbox whose sub-containers have all exited restores. So a
 * checkpoint waits for them, and until then is refused before anything is
 * stopped. False, with res failed, while one still runs. */
static bool subcontainers_done(const struct wl *w, const struct runsc *rs,
			       struct wl_result *res)
{
	for (size_t i = 1; i < w->nids; i++) {
		char st[64];
		if (runsc_state(rs, w->ids[i], st, sizeof(st)) < 0 || !*st || !strcmp(st, "stopped"))
			continue;
		fail(res, WL_FAILED_PRECONDITION,
		     "container '%s' is %s: runsc cannot restore a sandbox checkpointed while a "
		     "container other than the first runs (it reconnects only the first one's "
		     "file systems); checkpoint once '%s' has exited. Nothing was stopped: the "
		     "workload still runs",
		     w->names[i], st, w->names[i]);
		return false;
	}
	return true;
}

/* A label of a pulled snapshot, or "" when it has none. */
static const char *label_of(const struct ss_snapshot_info *in, const char *key)
{
	for (size_t i = 0; in && i < in->nlabels; i++)
		if (!strcmp(in->labels[i].key, key))
			return in->labels[i].value;
	return "";
}

void wl_checkpoint(struct wl *w, const struct wl_req *q, struct wl_result *res)
{
	char img[PATH_MAX], version[256], containers[WL_MAX_CONTAINERS * (WL_MAX_NAME + 1)];
	char digest[RT_SHA256_HEX + 1], err[768];
	struct timespec t0;
	struct runsc_out out;
	struct upload up;
	struct keeper kp;
	struct deleter *del = NULL;
	int r, keep_r = 0;

	res->code = WL_OK;
	settle(w);
	reap(w, res);
	if (!w->executing) {
		fail(res, WL_FAILED_PRECONDITION,
		     "no workload is executing: RunWorkload or RestoreWorkload first");
		goto done;
	}
	if (!snapshot_uri_ok(q, res))
		goto done;
	if (q->actor_id && *q->actor_id && strcmp(q->actor_id, w->actor_id)) {
		fail(res, WL_FAILED_PRECONDITION, "actor %s is executing, not %s", w->actor_id,
		     q->actor_id);
		goto done;
	}
	struct runsc rs = runsc_with(w, w->runsc_path);
	if (!w->image_pending && !subcontainers_done(w, &rs, res))
		goto done;
	now(&t0);
	r = cached_version(w, w->runsc_path, version, sizeof(version), &out);
	if (r < 0) {
		fail(res, WL_INTERNAL, "%s --version failed: %.1000s", w->runsc_path, out.tail);
		goto done;
	}
	if ((r = rt_digest(w->rt, w->runsc_path, digest, err, sizeof(err))) < 0) {
		fail(res, WL_INTERNAL, "%s", err);
		goto done;
	}
	containers[0] = '\0';
	for (size_t i = 0; i < w->nnames; i++) {
		strcat(containers, i ? "," : "");
		strcat(containers, w->names[i]);
	}
	const struct ss_label_kv labels[] = {
		{LABEL_RUNSC_VERSION, version},
		{LABEL_RUNSC_SHA256, digest},
		{"ateom.actor_template_namespace", w->ns},
		{"ateom.actor_template_name", w->name},
		{"ateom.actor_id", w->actor_id},
		{"ateom.containers", containers},
	};
	const char *parents[] = {w->restored_from};
	snprintf(img, sizeof(img), "%s/checkpoint", w->dir);
	struct ss_push_opts po = {
		.size = sizeof(po),
		.source = img,
		.snapshot = q->snapshot_uri,
		.store = w->store,
		.parents = parents,
		.nparents = w->restored_from ? 1 : 0,
		.labels = labels,
		.nlabels = sizeof(labels) / sizeof(labels[0]),
		/* runsc deflates checkpoint.img: stored inflated, consecutive
		 * checkpoints share ~90% of their bytes instead of ~1%; restore
		 * needs runsc to read the image, not its sha256 (docs/ATEOM.md). */
		.inflate_gvisor = true,
		/* runsc opens checkpoint.img O_EXCL and only ever appends to
		 * it: what follow mode read behind it is final, and is not
		 * read again once runsc exits (docs/ATEOM.md). */
		.writer_appends = true,
	};

	if (!w->image_pending) {
		/* The path is cut so that a long one leaves room for the cause.
		 * What restore checks travels as the snapshot's labels. */
		r = mkdir(img, 0700) < 0 ? -errno : 0;
		if (r < 0) {
			fail(res, WL_INTERNAL, "cannot prepare %.1000s: %s", img, strerror(-r));
			goto done;
		}
		keeper_start(&kp, w, q, version, digest);
		upload_start(&up, w, &po, w->follow);
		const char *cmd[] = {"checkpoint", "--image-path", img, w->ids[0], NULL};
		r = runsc_call(&rs, cmd, w->log_fd, &out);
		phase(res, "runsc_checkpoint", &t0);
		if (r < 0) {
			keeper_join(&kp);
			upload_finish(&up, false);
			rm_tree(img);
			char st[64];
			if (runsc_state(&rs, w->ids[0], st, sizeof(st)) == 0 && !strcmp(st, "running")) {
				fail(res, WL_INTERNAL,
				     "runsc checkpoint failed (exit %d); the sandbox still runs: %.1000s",
				     out.status, out.tail);
			} else {
				fail(res, WL_INTERNAL,
				     "runsc checkpoint failed (exit %d) and the sandbox did not survive "
				     "(state '%s'); it was deleted, the server is available: %.1000s",
				     out.status, st, out.tail);
				teardown(w, NULL);
			}
			goto done;
		}
		/* From here the sandbox is stopped and the image is all that
		 * holds the workload: keep it until a push succeeds. */
		w->image_pending = true;
		/* runsc delete of a stopped sandbox takes seconds (it waits for
		 * the sandbox and gofer processes to go): overlap it with the
		 * push, which needs only the image. */
		if (!(del = deleter_start(w)))
			delete_containers(w, NULL);
		now(&t0);
		if (kp.threaded && (keep_r = keeper_join(&kp)) == 0)
			phase(res, "runsc_keep", &t0);
	} else {
		upload_start(&up, w, &po, false);
		keeper_start(&kp, w, q, version, digest);
		keep_r = keeper_join(&kp);
	}
	/* Without its runsc in the store the snapshot is not committed. */
	r = keep_r < 0 ? upload_finish(&up, false), keep_r : upload_finish(&up, true);
	/* In follow mode most of the push overlapped runsc: this is the rest. */
	phase(res, w->follow ? "push_tail" : "push", &t0);
	if (r < 0) {
		if (del) {
			pthread_join(del->th, NULL);
			deleter_free(del);
		}
		/* The sandbox is gone: only the image holds the workload now. */
		w->deleted = true;
		if (keep_r < 0)
			fail(res, engine_code(keep_r),
			     "%s; the checkpoint of %s was not committed without it; the image is "
			     "kept in %s and the next CheckpointWorkload retries the upload",
			     kp.err, q->snapshot_uri, img);
		else
			fail(res, engine_code(r),
			     "pushing the checkpoint to %s failed: %s; the image is kept in %s and "
			     "the next CheckpointWorkload retries the upload",
			     q->snapshot_uri, up.err, img);
		goto done;
	}
	set_stats(res, &up.st);
	w->image_pending = false;
	/* In the store now; the rest goes with the sandbox. */
	trash_put(w->trash, img);
	/* The snapshot is committed and the sandbox stopped for good: the
	 * state is available. A delete still running goes on with its own
	 * copies, and the next call reaps it just before runsc creates a
	 * sandbox, so a restore pulls meanwhile. A delete that fails does
	 * not undo a committed checkpoint. */
	w->cleanup = del;
	w->deleted = true;
	teardown(w, NULL);
done:
	res->state = wl_state(w);
}

/* ---- RestoreWorkload ---- */

/* Which runsc restores the snapshot: `runsc` (the request's, else
 * --runsc, whose version is `version`) when it is the version the
 * checkpoint recorded, else the checkpoint's own binary from the store,
 * fetched into the runtime cache by the digest the snapshot records (and
 * only by that). Snapshots that record no version restore with `runsc`.
 * Writes the path to use into path; false, with res failed, when no runsc
 * fits. */
static bool resolve_runsc(struct wl *w, const struct wl_req *q,
			  const struct ss_snapshot_info *info, const char *runsc,
			  const char *version, char *path, size_t pathlen, struct wl_result *res)
{
	const char *recorded = label_of(info, LABEL_RUNSC_VERSION);
	if (!*recorded || !strcmp(recorded, version)) {
		snprintf(path, pathlen, "%s", runsc);
		return true;
	}
	const char *digest = label_of(info, LABEL_RUNSC_SHA256);
	if (!rt_digest_ok(digest)) {
		fail(res, WL_FAILED_PRECONDITION,
		     "snapshot %s was written by runsc %s, but %s is runsc %s, and the snapshot "
		     "records no runsc binary to fetch: restore with runsc_path naming a runsc %s",
		     q->snapshot_uri, recorded, runsc, version, recorded);
		return false;
	}
	char err[1024];
	int r = rt_fetch(w->rt, digest, q->snapshot_uri, path, pathlen, err, sizeof(err));
	if (r < 0) {
		enum wl_code code = r == -EBADMSG ? WL_DATA_LOSS : engine_code(r);
		fail(res, code,
		     "snapshot %s needs runsc %s (%s is runsc %s) and its binary could not be "
		     "used: %s",
		     q->snapshot_uri, recorded, runsc, version, err);
		return false;
	}
	return true;
}

/* fusepull_opts.release_fd: a restore's backing file is closed by the
 * trash's thread, off the reply's path. */
static void close_later(void *arg, int fd)
{
	trash_close(arg, fd);
}

void wl_restore(struct wl *w, const struct wl_req *q, struct wl_result *res)
{
	char *bundles[WL_MAX_CONTAINERS] = {0};
	char img[PATH_MAX], version[256], runsc_buf[PATH_MAX];
	struct ss_snapshot_info *info = NULL;
	struct fusepull *fp = NULL;     /* restoring while pulling (fusefile.h) */
	struct timespec t0;
	struct runsc_out out;
	const char *runsc = runsc_for(w, q);
	int r;

	res->code = WL_OK;
	settle(w);
	if (!check_start(w, q, res, bundles))
		goto done;
	if (!snapshot_uri_ok(q, res))
		goto done;
	now(&t0);
	if ((r = cached_version(w, runsc, version, sizeof(version), &out)) < 0) {
		fail(res, WL_INTERNAL, "%s --version failed: %.1000s", runsc, out.tail);
		goto done;
	}
	if (begin_sandbox(w, q, runsc, res) < 0) {
		abort_start(w, 0, q->ncontainers);
		goto done;
	}
	snprintf(img, sizeof(img), "%s/restore", w->dir);

	/* The pulled image is scratch: if the machine dies the sandbox dies
	 * with it, so fsync would only slow the restore down. */
	struct ss_config cfg = {.size = sizeof(cfg), .env = w->env, .no_fsync = true,
				.key = w->key_len ? w->key : NULL,
				.key_len = w->key_len,
				.cache_dir = cache_for(w, q->snapshot_uri),
				.cache_size = w->cache_size,
				.buffers = w->buffers};
	struct ss_pull_opts po = {.size = sizeof(po), .snapshot = q->snapshot_uri, .dest = img,
				  .store = w->store, .info = &info};
	struct ss_stats st = SS_STATS_INIT;
	char err[512];
	/* ---- restore while pulling (fusefile.h): runsc reads the image
	 * from a FUSE file system while the pull fills it. */
	r = -ENOTSUP;
	if (w->stream_restore && mkdir(img, 0700) == 0) {
		struct fusepull_opts fo = {.snapshot = q->snapshot_uri, .store = w->store,
					   .cfg = &cfg, .mountpoint = img, .spool_dir = w->dir,
					   .memory_max = w->restore_memory,
					   .reaper = w->reaper, .release_fd = close_later,
					   .release_arg = w->trash};
		r = fusepull_start(&fo, &fp, &info, err, sizeof(err));
		if (!r)
			res->restore_spool = fusepull_in_memory(fp) ? "memory" : "file";
		if (r == -ENOTSUP)
			rmdir(img);   /* pulled whole below */
	}
	if (r == -ENOTSUP)
	/* ---- */
		r = ss_pull(&po, &cfg, &st, err, sizeof(err));
	phase(res, fp ? "stream_start" : "pull", &t0);
	if (r < 0) {
		if (r == -ENOENT)
			fail(res, WL_NOT_FOUND, "%s", *err ? err : "no snapshot there");
		else
			fail(res, engine_code(r), "pulling %s failed: %s", q->snapshot_uri, err);
		abort_start(w, 0, q->ncontainers);
		goto done;
	}
	if (!fp)
		set_stats(res, &st);

	/* The checkpoint recorded these as labels (wl_checkpoint). */
	now(&t0);
	if (!resolve_runsc(w, q, info, runsc, version, runsc_buf, sizeof(runsc_buf), res)) {
		fusepull_free(fp);
		fp = NULL;
		abort_start(w, 0, q->ncontainers);
		goto done;
	}
	if (strcmp(runsc_buf, runsc)) {
		phase(res, "runsc_fetch", &t0);
		runsc = runsc_buf;
		free(w->runsc_path);
		if (!(w->runsc_path = strdup(runsc))) {
			fail(res, WL_INTERNAL, "out of memory");
			abort_start(w, 0, q->ncontainers);
			goto done;
		}
	}
	const char *rec_containers = label_of(info, "ateom.containers");
	char names[WL_MAX_CONTAINERS * (WL_MAX_NAME + 1)] = "";
	for (size_t i = 0; i < q->ncontainers; i++) {
		strcat(names, i ? "," : "");
		strcat(names, q->containers[i]);
	}
	if (*rec_containers && strcmp(rec_containers, names)) {
		fail(res, WL_FAILED_PRECONDITION,
		     "snapshot %s holds containers '%s'; the request names '%s'", q->snapshot_uri,
		     rec_containers, names);
		fusepull_free(fp);
		fp = NULL;
		abort_start(w, 0, q->ncontainers);
		goto done;
	}

	/* The last checkpoint's delete ran beside the pull; the sandbox
	 * about to start reuses its ids. */
	reap(w, res);
	struct runsc rs = runsc_with(w, runsc);
	char pid_file[PATH_MAX];
	snprintf(pid_file, sizeof(pid_file), "%s/sandbox.pid", w->dir);
	now(&t0);
	const char *cmd[] = {"restore", "--detach", "--image-path", img, "--pid-file", pid_file,
			     "--bundle", bundles[0], w->ids[0], NULL};
	r = runsc_call(&rs, cmd, w->log_fd, &out);
	phase(res, "runsc_restore", &t0);
	note_sandbox(w, pid_file);
	/* ---- restore while pulling: the pull must have delivered every
	 * byte verified, else the sandbox goes whatever runsc said. */
	if (fp) {
		double pull_ms = 0;
		char perr[1024];
		now(&t0);
		int pr = fusepull_finish(fp, &st, &pull_ms, perr, sizeof(perr));
		if (pr < 0 || r < 0) {
			/* Torn down before the sandbox is stopped, as it
			 * always was. */
			fusepull_free(fp);
			fp = NULL;
		}
		phase(res, "pull_wait", &t0);
		add_phase(res, "pull", pull_ms);
		set_stats(res, &st);
		if (pr < 0) {
			if (pr == -EBADMSG)
				fail(res, WL_INTERNAL,
				     "restoring from %s failed: the image did not verify while "
				     "runsc read it, so the restoring sandbox was stopped: %.1000s",
				     q->snapshot_uri, perr);
			else
				fail(res, engine_code(pr), "pulling %s failed while runsc restored "
				     "from it, so the restoring sandbox was stopped: %.1000s",
				     q->snapshot_uri, perr);
			abort_start(w, 1, q->ncontainers);
			goto done;
		}
	}
	/* ---- */
	if (r < 0) {
		fail(res, WL_INTERNAL, "runsc restore from %s (bundle %s) failed (exit %d): %.1000s",
		     q->snapshot_uri, bundles[0], out.status, out.tail);
		abort_start(w, 1, q->ncontainers);
		goto done;
	}
	/* runsc hands the opened image files to the sandbox, so the copy on
	 * disk is no longer needed (the work dir may well be tmpfs). */
	if (fp)
		unmount_later(w, fp, img);
	else
		trash_put(w->trash, img);
	fp = NULL;
	/* The other containers had exited when it was checkpointed
	 * (subcontainers_done): the restored sandbox holds the root only. */
	w->nids = 1;
	w->restored_from = strdup(q->snapshot_uri);
	w->executing = true;
done:
	fusepull_free(fp);
	ss_info_free(info);
	free_bundles(bundles, q->ncontainers < WL_MAX_CONTAINERS ? q->ncontainers : WL_MAX_CONTAINERS);
	res->state = wl_state(w);
}
