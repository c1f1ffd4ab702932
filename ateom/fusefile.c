/* fusefile — a snapshot's files served through FUSE while they are pulled
 * (see fusefile.h). */
#define FUSE_USE_VERSION 34
#include "fusefile.h"

#include "reaper.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Reads may wait for bytes still on their way: enough workers that a
 * stat or an open is never stuck behind them. */
#define FP_WORKERS 8
/* The file system never changes while mounted. */
#define FP_TIMEOUT 3600.0

struct ffile {
	char *name;
	bool transform;             /* a state file stored inflated: size known late */
	uint64_t bytes;             /* the snapshot's size of it (inflated form) */
	int64_t mtime_ns;
	int fd;                     /* backing file, -1 before it is made */
	uint8_t *map;               /* [0, total) of fd, once sized */
	uint64_t map_len;
	bool sized;
	uint64_t total, done;       /* bytes [0, done) are final */
};

struct fusepull {
	struct ss_config cfg;
	char *snapshot, *store, *mnt;
	struct reaper *reaper;
	void (*release_fd)(void *arg, int fd);
	void *release_arg;
	struct timespec t0;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ffile *f;
	size_t nf;
	int failed;                 /* -errno once the pull failed or was stopped */
	bool finished;              /* the pull thread is done (see result) */
	atomic_bool stop;
	size_t cur;                 /* the file being pulled */

	/* The pull's outcome, written by its thread before finished. */
	int result;
	char err[1024];
	struct ss_stats st;
	double pull_ms;

	pthread_t puller;
	bool puller_started;
	bool in_memory;             /* backing files are memfds */

	struct fuse_session *se;
	bool mounted;
	int exit_fd;                /* eventfd: the workers stop */
	pthread_t workers[FP_WORKERS];
	unsigned nworkers;

	pid_t guard;                /* unmounts if ateom dies; -1: none */
	int guard_fd;
};

__attribute__((format(printf, 3, 4)))
static int set_err(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return 0;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- the file system (FUSE worker threads) ---- */

/* Inode 1 is the root; file i is inode i + 2. */
static struct ffile *file_of(struct fusepull *P, fuse_ino_t ino)
{
	return ino >= 2 && ino - 2 < P->nf ? &P->f[ino - 2] : NULL;
}

static void fill_attr(struct fusepull *P, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return;
	}
	const struct ffile *f = file_of(P, ino);
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)f->total;
	st->st_blksize = 1 << 20;
	st->st_blocks = (blkcnt_t)((f->total + 511) / 512);
	st->st_mtim.tv_sec = f->mtime_ns / 1000000000;
	st->st_mtim.tv_nsec = f->mtime_ns % 1000000000;
	st->st_ctim = st->st_atim = st->st_mtim;
}

/* Wait until f's size is known (a rebuilt state file: once its header
 * arrived). Returns 0 or the pull's -errno. Called with mu held. */
static int wait_sized(struct fusepull *P, struct ffile *f)
{
	while (!f->sized && !P->failed)
		pthread_cond_wait(&P->cv, &P->mu);
	return f->sized ? 0 : P->failed;
}

static void fp_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fusepull *P = fuse_req_userdata(req);
	size_t i = 0;
	if (parent == FUSE_ROOT_ID)
		while (i < P->nf && strcmp(P->f[i].name, name))
			i++;
	if (parent != FUSE_ROOT_ID || i == P->nf) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct fuse_entry_param e = {.ino = i + 2, .attr_timeout = FP_TIMEOUT,
				     .entry_timeout = FP_TIMEOUT};
	pthread_mutex_lock(&P->mu);
	int r = wait_sized(P, &P->f[i]);
	if (!r)
		fill_attr(P, e.ino, &e.attr);
	pthread_mutex_unlock(&P->mu);
	if (r)
		fuse_reply_err(req, EIO);
	else
		fuse_reply_entry(req, &e);
}

static void fp_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct fusepull *P = fuse_req_userdata(req);
	struct ffile *f = file_of(P, ino);
	if (ino != FUSE_ROOT_ID && !f) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat st;
	pthread_mutex_lock(&P->mu);
	int r = f ? wait_sized(P, f) : 0;
	if (!r)
		fill_attr(P, ino, &st);
	pthread_mutex_unlock(&P->mu);
	if (r)
		fuse_reply_err(req, EIO);
	else
		fuse_reply_attr(req, &st, FP_TIMEOUT);
}

static void fp_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fusepull *P = fuse_req_userdata(req);
	if (!file_of(P, ino)) {
		fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* Direct I/O: each read of the file comes here and the reply is
	 * copied straight into the reader's buffer. Through the page cache
	 * every byte was copied into new pages of the FUSE file first (a
	 * third copy of the image in memory) and then out again; runsc
	 * reads each chunk of checkpoint.img with one read of up to 1 MiB
	 * (and two of a few bytes for its framing), so there is no readahead
	 * to lose. runsc restore from a mount whose pull had finished, cold,
	 * 6 alternating restores of the 256 MiB sandbox: 0.44 s against
	 * 0.48 s (medians; 0.38 s from a plain file). */
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

static void fp_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)fi;
	struct fusepull *P = fuse_req_userdata(req);
	struct ffile *f = file_of(P, ino);
	if (!f || off < 0) {
		fuse_reply_err(req, f ? EINVAL : EISDIR);
		return;
	}
	pthread_mutex_lock(&P->mu);
	int r = wait_sized(P, f);
	uint64_t end = 0;
	if (!r && (uint64_t)off < f->total) {
		end = (uint64_t)off + size < f->total ? (uint64_t)off + size : f->total;
		while (f->done < end && !P->failed)
			pthread_cond_wait(&P->cv, &P->mu);
		if (f->done < end)
			r = P->failed;
	}
	pthread_mutex_unlock(&P->mu);
	if (r)
		fuse_reply_err(req, EIO);
	else if (!end)
		fuse_reply_buf(req, NULL, 0);   /* at or past the end */
	else
		/* Final bytes of a mapping that stays until the workers are
		 * gone: no lock needed to copy them out. */
		fuse_reply_buf(req, (const char *)f->map + off, (size_t)(end - (uint64_t)off));
}

static void fp_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	struct fusepull *P = fuse_req_userdata(req);
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	/* Entries: ".", "..", then the files; off is the next one's index. */
	for (size_t i = (size_t)off; off >= 0 && i < P->nf + 2; i++) {
		struct stat st = {.st_ino = i < 2 ? FUSE_ROOT_ID : i, .st_mode = i < 2 ? S_IFDIR
										   : S_IFREG};
		const char *name = i == 0 ? "." : i == 1 ? ".." : P->f[i - 2].name;
		size_t n = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)i + 1);
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static const struct fuse_lowlevel_ops fp_ops = {
	.lookup = fp_lookup,
	.getattr = fp_getattr,
	.open = fp_open,
	.read = fp_read,
	.opendir = NULL,
	.readdir = fp_readdir,
};

/* Every worker polls the session's descriptor, so a request wakes them
 * all and the first to get a core takes it; the rest find nothing
 * (EAGAIN) and wait again. Waking one per request (an epoll instance each,
 * EPOLLEXCLUSIVE) made restores beside a busy runsc slower, probably
 * because the worker woken was often not one that could run soon
 * (docs/ATEOM.md, "The restore on a host where runsc restores fast"). */
static void *worker(void *arg)
{
	struct fusepull *P = arg;
	struct fuse_buf buf = {0};
	int fd = fuse_session_fd(P->se);
	for (;;) {
		struct pollfd pf[2] = {{.fd = fd, .events = POLLIN}, {.fd = P->exit_fd, .events = POLLIN}};
		if (poll(pf, 2, -1) < 0 && errno != EINTR)
			break;
		if (pf[1].revents || fuse_session_exited(P->se))
			break;
		if (!(pf[0].revents & POLLIN)) {
			if (pf[0].revents & (POLLERR | POLLHUP | POLLNVAL))
				break;   /* the connection is gone */
			continue;
		}
		/* Non-blocking: another worker may have taken the request. */
		int r = fuse_session_receive_buf(P->se, &buf);
		if (r == -EAGAIN || r == -EINTR)
			continue;
		if (r <= 0)
			break;
		fuse_session_process_buf(P->se, &buf);
	}
	free(buf.mem);
	return NULL;
}

/* ---- the pull (its own thread) ---- */

struct cur {
	struct fusepull *P;
	struct ffile *f;
};

/* Map [0, total) of f's backing file; called with mu held. */
static int size_file(struct ffile *f, uint64_t total)
{
	if (total && total != f->map_len) {
		void *m = mmap(NULL, (size_t)total, PROT_READ, MAP_SHARED, f->fd, 0);
		if (m == MAP_FAILED)
			return -errno;
		f->map = m;
		f->map_len = total;
	}
	f->total = total;
	f->sized = true;
	return 0;
}

static int on_written(void *arg, uint64_t done, uint64_t total)
{
	struct cur *c = arg;
	struct fusepull *P = c->P;
	int r = 0;
	pthread_mutex_lock(&P->mu);
	if (!c->f->sized && total)
		r = size_file(c->f, total);
	if (!r && c->f->sized && done <= c->f->total)
		c->f->done = done;
	pthread_cond_broadcast(&P->cv);
	pthread_mutex_unlock(&P->mu);
	return r ? r : atomic_load(&P->stop) ? -ECANCELED : 0;
}

static void add_stats(struct ss_stats *to, const struct ss_stats *s)
{
	to->files += s->files;
	to->logical_bytes += s->logical_bytes;
	to->zero_bytes += s->zero_bytes;
	to->transferred_bytes += s->transferred_bytes;
	to->chunks += s->chunks;
	to->unique_chunks += s->unique_chunks;
	to->packs += s->packs;
	to->requests += s->requests;
	to->manifest_bytes += s->manifest_bytes;
	to->seconds += s->seconds;
}

static void *puller(void *arg)
{
	struct fusepull *P = arg;
	int r = 0;
	char err[sizeof(P->err)] = "";
	for (size_t i = 0; !r && i < P->nf; i++) {
		struct ffile *f = &P->f[i];
		struct cur c = {.P = P, .f = f};
		struct ss_cat_opts co = SS_CAT_OPTS_INIT;
		co.snapshot = P->snapshot;
		co.store = P->store;
		co.file = f->name;
		co.fd = f->fd;
		co.on_written = on_written;
		co.on_written_arg = &c;
		struct ss_stats st = SS_STATS_INIT;
		pthread_mutex_lock(&P->mu);
		P->cur = i;
		pthread_mutex_unlock(&P->mu);
		r = ss_cat(&co, &P->cfg, &st, err, sizeof(err));
		add_stats(&P->st, &st);
		pthread_mutex_lock(&P->mu);
		/* Every byte reported must be all there is: a file shorter
		 * than its size would leave runsc waiting. */
		if (!r && (!f->sized ? f->bytes != 0 : f->done != f->total)) {
			r = -EBADMSG;
			snprintf(err, sizeof(err), "snapshot %s: file '%s' ended at %llu of %llu bytes",
				 P->snapshot, f->name, (unsigned long long)f->done,
				 (unsigned long long)f->total);
		}
		if (!r && !f->sized)
			size_file(f, 0);
		pthread_mutex_unlock(&P->mu);
	}
	pthread_mutex_lock(&P->mu);
	P->result = r;
	snprintf(P->err, sizeof(P->err), "%s", err);
	P->pull_ms = ms_since(&P->t0);
	if (r && !P->failed)
		P->failed = r;
	P->finished = true;
	pthread_cond_broadcast(&P->cv);
	pthread_mutex_unlock(&P->mu);
	return NULL;
}

/* ---- mount, guard, teardown ---- */

/* A process that unmounts mnt (lazily) when the pipe it reads from
 * closes without "ok": when ateom dies with the file system mounted, the
 * mount would otherwise stay, answering every access with ENOTCONN. */
static int start_guard(struct fusepull *P)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], 0);
	char *argv[] = {"/bin/sh", "-c", "read -r x; [ \"$x\" = ok ] || exec umount -l -- \"$1\"",
			"ateom-fuse-guard", P->mnt, NULL};
	reaper_spawn_begin(P->reaper);
	int r = posix_spawn(&P->guard, "/bin/sh", &fa, NULL, argv, environ);
	reaper_spawn_end(P->reaper, r ? 0 : P->guard);
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (r) {
		close(p[1]);
		P->guard = -1;
		return -r;
	}
	P->guard_fd = p[1];
	return 0;
}

static void stop_guard(struct fusepull *P)
{
	if (P->guard < 0)
		return;
	/* Unmounted already: tell it so, and let it go. */
	if (write(P->guard_fd, "ok\n", 3) != 3) {
		/* It then unmounts what is no longer mounted, harmlessly. */
	}
	close(P->guard_fd);
	while (waitpid(P->guard, NULL, 0) < 0 && errno == EINTR)
		;
	reaper_waited(P->reaper, P->guard);
	P->guard = -1;
}

static void unmount(struct fusepull *P)
{
	if (!P->mounted)
		return;
	/* Lazily: the sandbox may still hold checkpoint.img open. */
	if (umount2(P->mnt, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		fuse_session_unmount(P->se);
	P->mounted = false;
}

/* Stop everything: the pull (reads of what did not arrive get EIO), the
 * mount, the workers. */
static void shutdown_all(struct fusepull *P)
{
	atomic_store(&P->stop, true);
	pthread_mutex_lock(&P->mu);
	if (!P->failed)
		P->failed = -ECANCELED;
	pthread_cond_broadcast(&P->cv);
	pthread_mutex_unlock(&P->mu);
	if (P->puller_started) {
		pthread_join(P->puller, NULL);
		P->puller_started = false;
	}
	unmount(P);
	stop_guard(P);
	if (P->exit_fd >= 0) {
		uint64_t one = 1;
		if (write(P->exit_fd, &one, sizeof(one)) != sizeof(one)) {
			/* An eventfd write cannot fail below its maximum. */
		}
	}
	for (unsigned i = 0; i < P->nworkers; i++)
		pthread_join(P->workers[i], NULL);
	P->nworkers = 0;
}

void fusepull_free(struct fusepull *P)
{
	if (!P)
		return;
	shutdown_all(P);
	if (P->se) {
		/* Already unmounted (lazily, above), but only this frees the
		 * session's copy of the mount point: its umount2 fails
		 * harmlessly. The workers are gone, so its closing the
		 * session's descriptor races with nothing. */
		fuse_session_unmount(P->se);
		fuse_session_destroy(P->se);
	}
	if (P->exit_fd >= 0)
		close(P->exit_fd);
	for (size_t i = 0; i < P->nf; i++) {
		if (P->f[i].map)
			munmap(P->f[i].map, (size_t)P->f[i].map_len);
		if (P->f[i].fd >= 0 && P->release_fd)
			P->release_fd(P->release_arg, P->f[i].fd);
		else if (P->f[i].fd >= 0)
			close(P->f[i].fd);
		free(P->f[i].name);
	}
	free(P->f);
	free(P->snapshot);
	free(P->store);
	free(P->mnt);
	pthread_mutex_destroy(&P->mu);
	pthread_cond_destroy(&P->cv);
	free(P);
}

int fusepull_finish(struct fusepull *P, struct ss_stats *st, double *pull_ms, char *err,
		    size_t errlen)
{
	pthread_mutex_lock(&P->mu);
	while (!P->finished)
		pthread_cond_wait(&P->cv, &P->mu);
	pthread_mutex_unlock(&P->mu);
	pthread_join(P->puller, NULL);
	P->puller_started = false;
	if (st)
		*st = P->st;
	if (pull_ms)
		*pull_ms = P->pull_ms;
	if (P->result)
		set_err(err, errlen, "%s", P->err);
	return P->result;
}

/* A snapshot this file system can serve: a directory of plain names. */
static bool servable(const struct ss_snapshot_info *in, char *err, size_t errlen)
{
	if (!in->root_is_dir || !in->nfiles_v || in->nfiles_v > FUSEPULL_MAX_FILES) {
		set_err(err, errlen, "not a directory of 1..%d files", FUSEPULL_MAX_FILES);
		return false;
	}
	for (size_t i = 0; i < in->nfiles_v; i++) {
		const char *n = in->files_v[i]->name;
		if (!*n || strchr(n, '/') || !strcmp(n, ".") || !strcmp(n, "..") ||
		    strlen(n) > 255) {
			set_err(err, errlen, "file name '%.200s' is not served", n);
			return false;
		}
	}
	return true;
}

/* Where the backing files live: in memory (memfd) when the snapshot is
 * small against the memory left (1/SPOOL_MEM_SHARE of it: the restored
 * sandbox takes about as much again, and the FUSE file's own page cache
 * a third copy for a while) or under max when the operator set one, else
 * unlinked files in dir. Written through a file system's page cache,
 * each page costs what that file system charges for a buffered write: on
 * ext4, with delayed allocation, the pull of a 269 MB image beside runsc
 * restore took 0.37-0.64 s against 0.21-0.31 s into memory (docs/ATEOM.md,
 * "Restore while pulling"). Only a file system's pages can be written
 * back when memory runs short, so large snapshots keep them. */
#define SPOOL_MEM_SHARE 4
static bool spool_in_memory(uint64_t bytes, uint64_t max)
{
	return bytes <= (max == FUSEPULL_MEMORY_AUTO ? ss_memory_left() / SPOOL_MEM_SHARE : max);
}

bool fusepull_in_memory(const struct fusepull *p)
{
	return p->in_memory;
}

/* An unlinked file in dir, or memory (see spool_in_memory; also when dir
 * cannot hold one, and then *memory is set). */
static int backing_file(const char *dir, bool *memory)
{
	int fd = *memory ? -1 : open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		fd = memfd_create("ateom-restore", MFD_CLOEXEC);
		*memory = true;
	}
	return fd < 0 ? -errno : fd;
}

static int mount_fs(struct fusepull *P, char *err, size_t errlen)
{
	/* allow_other: the sandbox reads as another user. ro, and no
	 * default_permissions: the files are 0444 and everybody may read. */
	char *argv[] = {"ateom", "-o", "allow_other,ro,fsname=snapstream,subtype=snapstream", NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	P->se = fuse_session_new(&args, &fp_ops, sizeof(fp_ops), P);
	fuse_opt_free_args(&args);
	if (!P->se) {
		set_err(err, errlen, "cannot set up a FUSE session");
		return -ENOTSUP;
	}
	if (fuse_session_mount(P->se, P->mnt) != 0) {
		set_err(err, errlen, "cannot mount a FUSE file system on %s (is /dev/fuse there?)",
			P->mnt);
		return -ENOTSUP;
	}
	P->mounted = true;
	int r = start_guard(P);
	if (r) {
		set_err(err, errlen, "cannot start the unmount guard: %s", strerror(-r));
		return r;
	}
	int fd = fuse_session_fd(P->se);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    (P->exit_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
		r = -errno;
		set_err(err, errlen, "cannot set up the FUSE workers: %s", strerror(-r));
		return r;
	}
	/* The workers must not take the signals ateom waits for. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (unsigned i = 0; i < FP_WORKERS; i++) {
		if ((r = pthread_create(&P->workers[i], NULL, worker, P)))
			break;
		P->nworkers++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		set_err(err, errlen, "cannot start the FUSE workers: %s", strerror(r));
		return -r;
	}
	return 0;
}

int fusepull_start(const struct fusepull_opts *o, struct fusepull **out,
		   struct ss_snapshot_info **info, char *err, size_t errlen)
{
	struct ss_snapshot_info *in = NULL;
	int r = ss_info(o->snapshot, o->store, o->cfg, &in, err, errlen);
	if (r)
		return r;
	if (!servable(in, err, errlen)) {
		ss_info_free(in);
		return -ENOTSUP;
	}
	struct fusepull *P = calloc(1, sizeof(*P));
	if (!P) {
		ss_info_free(in);
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	clock_gettime(CLOCK_MONOTONIC, &P->t0);
	pthread_mutex_init(&P->mu, NULL);
	pthread_cond_init(&P->cv, NULL);
	P->exit_fd = -1;
	P->guard = -1;
	P->guard_fd = -1;
	P->cfg = *o->cfg;
	P->reaper = o->reaper;
	P->release_fd = o->release_fd;
	P->release_arg = o->release_arg;
	P->st = (struct ss_stats)SS_STATS_INIT;
	P->snapshot = strdup(o->snapshot);
	P->store = o->store ? strdup(o->store) : NULL;
	P->mnt = strdup(o->mountpoint);
	P->f = calloc(in->nfiles_v, sizeof(*P->f));
	if (!P->snapshot || (o->store && !P->store) || !P->mnt || !P->f) {
		r = -ENOMEM;
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	uint64_t total = 0;
	for (size_t i = 0; i < in->nfiles_v; i++)
		total = total + in->files_v[i]->bytes < total ? UINT64_MAX
							       : total + in->files_v[i]->bytes;
	P->in_memory = spool_in_memory(total, o->memory_max);
	for (size_t i = 0; i < in->nfiles_v; i++) {
		const struct ss_file_info *fi = in->files_v[i];
		struct ffile *f = &P->f[P->nf++];
		f->fd = -1;
		f->name = strdup(fi->name);
		f->transform = SS_HAS(ss_file_info, fi, transform) && fi->transform;
		f->bytes = fi->bytes;
		f->mtime_ns = fi->mtime_ns;
		if (!f->name) {
			r = -ENOMEM;
			set_err(err, errlen, "out of memory");
			goto fail;
		}
		if ((f->fd = backing_file(o->spool_dir, &P->in_memory)) < 0) {
			r = f->fd;
			set_err(err, errlen, "cannot create a file in %s: %s", o->spool_dir,
				strerror(-r));
			goto fail;
		}
		/* Stored as it is: its size is known now. Full size at once, so
		 * the mapping covers what arrives (holes are written, see
		 * ss_cat_opts.on_written). */
		if (!f->transform && ((f->bytes && ftruncate(f->fd, (off_t)f->bytes) < 0) ||
				      (r = size_file(f, f->bytes)))) {
			r = r ? r : -errno;
			set_err(err, errlen, "cannot size a file in %s: %s", o->spool_dir,
				strerror(-r));
			goto fail;
		}
	}
	if ((r = mount_fs(P, err, errlen)))
		goto fail;
	if ((r = pthread_create(&P->puller, NULL, puller, P))) {
		r = -r;
		set_err(err, errlen, "cannot start the pull: %s", strerror(-r));
		goto fail;
	}
	P->puller_started = true;
	*out = P;
	*info = in;
	return 0;
fail:
	fusepull_free(P);
	ss_info_free(in);
	return r;
}
