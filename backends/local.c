/* local — a store in a local directory, driven through io_uring.
 *
 * Puts write a temporary name, fsync, and rename into place (with
 * RENAME_NOREPLACE for SS_PUT_IF_ABSENT), then fsync the directory, so an
 * object is either absent or complete, even across a crash. Every path is
 * opened beneath the root with RESOLVE_BENEATH: a key, or a symlink planted
 * in the store, cannot reach outside it. Listing walks directories
 * synchronously (io_uring has no getdents); it is used for metadata only.
 *
 * A large page-aligned object (a pack) is written with O_DIRECT up to its
 * last whole block, the rest through the page cache. Written buffered,
 * every byte of a pack is copied into the page cache and written back by
 * kernel workers: on a two-core VM that was a third of what a checkpoint's
 * push cost beside the sandbox being checkpointed (docs/ATEOM.md). The
 * price is that a pull on the same node reads those packs from the disk.
 * A store in memory (tmpfs, ramfs) has no writeback to spare: written
 * through the page cache as before.
 */
#include "backend_module.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define TMP_MARK ".tmp-"
/* O_DIRECT's alignment: the page size covers every logical block size a
 * file system here uses; a file system that wants more answers EINVAL and
 * the write goes through the page cache. */
#define DIO_ALIGN 4096u
/* Below this, a direct write saves too little to be worth a second open
 * mode: manifests, refs and small packs go through the page cache. */
#define DIO_MIN ((size_t)1 << 20)

struct local {
	char *root;
	int rootfd;
	bool direct;                /* packs may be written with O_DIRECT */
	uint64_t seq;
	int pid;
};

enum lstate {
	L_OPEN = 1,
	L_STATX,
	L_READ,
	L_WRITE,
	L_FSYNC,
	L_CLOSE,
	L_RENAME,
	L_DIROPEN,
	L_DIRFSYNC,
	L_DIRCLOSE,
	L_SIMPLE,   /* stat, delete: one op */
};

struct lreq {
	struct ss_op op;
	struct ss_backend *b;
	struct ss_req *r;
	enum lstate st;
	int fd;
	int result;                 /* first error, or the GET byte count */
	bool retried_mkdir;
	bool placed;                /* renamed into place: nothing to unlink */
	bool direct;                /* the fd is O_DIRECT: writing [0, dio_end) */
	uint64_t dio_end;
	struct iovec dio;
	/* The temporary's name, then the directory to sync. io_uring reads a
	 * path when the ring is submitted, not when the SQE is prepared: it
	 * must stay intact until the op completes. */
	char tmp[PATH_MAX];
	struct open_how how;
	struct statx stx;
	/* PUT progress */
	struct iovec *iov;
	unsigned iovcnt, iov_idx;
	uint64_t woff;              /* bytes of the object written so far */
	/* GET progress */
	uint64_t off, want, got;
};

static void lreq_step(struct ss_op *op, int res);

static struct local *L(struct ss_backend *b)
{
	return b->priv;
}

static int local_open(struct ss_backend *b, const char *location, struct ss_err *err)
{
	/* Readers must not leave directories behind for what does not exist. */
	int r = b->opts.read_only ? 0 : ss_mkdir_p(location, 0755);
	if (r)
		return ss_err_set(err, r, "cannot create store directory '%s': %s", location,
				  strerror(-r));
	struct local *l = calloc(1, sizeof(*l));
	if (!l)
		return ss_err_set(err, -ENOMEM, "out of memory");
	l->root = strdup(location);
	l->rootfd = open(location, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!l->root || l->rootfd < 0) {
		r = l->root ? -errno : -ENOMEM;
		if (l->rootfd >= 0)
			close(l->rootfd);
		free(l->root);
		free(l);
		return ss_err_set(err, r, "cannot open '%s': %s", location, strerror(-r));
	}
	/* In memory the page cache is the file: there is no writeback to
	 * spare, and a direct write there only adds work. */
	struct statfs sf;
	l->direct = !b->opts.no_fsync && fstatfs(l->rootfd, &sf) == 0 &&
		    sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC;
	l->pid = (int)getpid();
	b->priv = l;
	b->max_inflight = 32;
	return 0;
}

static void local_destroy(struct ss_backend *b)
{
	struct local *l = L(b);
	if (!l)
		return;
	close(l->rootfd);
	free(l->root);
	free(l);
}

static struct io_uring_sqe *sqe_for(struct lreq *q, enum lstate st)
{
	q->st = st;
	return ss_loop_sqe(q->b->loop, &q->op);
}

static void prep_open(struct lreq *q, const char *path, int flags, unsigned mode)
{
	memset(&q->how, 0, sizeof(q->how));
	q->how.flags = (uint64_t)(flags | O_CLOEXEC);
	q->how.mode = (flags & O_CREAT) ? mode : 0;
	q->how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
	io_uring_prep_openat2(sqe_for(q, L_OPEN), L(q->b)->rootfd, path, &q->how);
}

static void finish(struct lreq *q, int res)
{
	struct ss_backend *b = q->b;
	struct ss_req *r = q->r;
	if (q->fd >= 0)
		close(q->fd);
	if (res < 0 && r->kind == SS_REQ_PUT && !q->placed && q->tmp[0])
		unlinkat(L(b)->rootfd, q->tmp, 0);
	free(q->iov);
	free(q);
	ss_backend_complete(b, r, res);
}

static int fail(struct lreq *q, int res, const char *what)
{
	ss_err_set(q->r->err, res, "%s %s/%s: %s", what, L(q->b)->root, q->r->key,
		   strerror(-res));
	finish(q, res);
	return 0;
}

static int parent_mkdir(struct lreq *q)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s/%s", L(q->b)->root, q->r->key);
	if (n < 0 || n >= (int)sizeof(path))
		return -ENAMETOOLONG;
	char *slash = strrchr(path, '/');
	*slash = '\0';
	return ss_mkdir_p(path, 0755);
}

/* Explicit offsets, never -1 ("the file position"): after a short write
 * (a full disk) io_uring can leave the position where it was, so the rest
 * would overwrite the start and a truncated object would count as whole
 * (seen on Linux 6.18 with tmpfs; tests/diskfull.sh). */
static void put_write(struct lreq *q)
{
	if (q->direct && (q->woff >= q->dio_end || q->woff % DIO_ALIGN ||
			  (uintptr_t)q->iov[q->iov_idx].iov_base % DIO_ALIGN)) {
		/* The aligned part is written (or a short write left it
		 * misaligned): the rest goes through the page cache. */
		int fl = fcntl(q->fd, F_GETFL);
		if (fl < 0 || fcntl(q->fd, F_SETFL, fl & ~O_DIRECT) < 0) {
			(void)fail(q, -errno, "cannot leave direct I/O on");
			return;
		}
		q->direct = false;
	}
	if (q->direct) {
		q->dio.iov_base = q->iov[q->iov_idx].iov_base;
		q->dio.iov_len = (size_t)SS_MIN((uint64_t)q->iov[q->iov_idx].iov_len,
						 q->dio_end - q->woff);
		io_uring_prep_writev(sqe_for(q, L_WRITE), q->fd, &q->dio, 1, q->woff);
		return;
	}
	io_uring_prep_writev(sqe_for(q, L_WRITE), q->fd, q->iov + q->iov_idx,
			     SS_MIN(q->iovcnt - q->iov_idx, (unsigned)IOV_MAX), q->woff);
}

static int put_flags(const struct lreq *q)
{
	return O_WRONLY | O_CREAT | O_EXCL | (q->direct ? O_DIRECT : 0);
}

/* Whether a PUT's first buffer is large and aligned enough to be written
 * with O_DIRECT, and up to where. */
static void plan_direct(struct lreq *q)
{
	if (q->iovcnt == 0 || !L(q->b)->direct)
		return;
	const struct iovec *v = &q->iov[0];
	size_t n = v->iov_len & ~(size_t)(DIO_ALIGN - 1);
	if ((uintptr_t)v->iov_base % DIO_ALIGN || n < DIO_MIN)
		return;
	q->direct = true;
	q->dio_end = n;
}

static void put_after_write(struct lreq *q)
{
	if (q->b->opts.no_fsync)
		io_uring_prep_close(sqe_for(q, L_CLOSE), q->fd);
	else
		io_uring_prep_fsync(sqe_for(q, L_FSYNC), q->fd, 0);
}

static void get_read(struct lreq *q)
{
	io_uring_prep_read(sqe_for(q, L_READ), q->fd, (uint8_t *)q->r->buf + q->got,
			   (unsigned)SS_MIN(q->want - q->got, (uint64_t)1 << 30), q->off + q->got);
}

static void dir_sync_failed(struct lreq *q, const char *what, int res)
{
	const struct ss_backend_opts *o = &q->b->opts;
	if (!o->log)
		return;
	char msg[PATH_MAX + 128];
	snprintf(msg, sizeof(msg), "cannot %s directory %s/%s to sync it (%s): %s may not survive a crash",
		 what, L(q->b)->root, q->tmp, strerror(-res), q->r->key);
	o->log(o->log_arg, msg);
}

static void dir_of_key(const char *key, char *out, size_t n)
{
	const char *slash = strrchr(key, '/');
	if (!slash) {
		snprintf(out, n, ".");
		return;
	}
	snprintf(out, n, "%.*s", (int)(slash - key), key);
}

static void lreq_step(struct ss_op *op, int res)
{
	struct lreq *q = (struct lreq *)op;
	struct ss_req *r = q->r;
	struct local *l = L(q->b);

	switch (q->st) {
	case L_OPEN:
		if (res == -ENOENT && r->kind == SS_REQ_PUT && !q->retried_mkdir) {
			q->retried_mkdir = true;
			int m = parent_mkdir(q);
			if (m)
				(void)fail(q, m, "cannot create directory for");
			else
				prep_open(q, q->tmp, put_flags(q), 0644);
			return;
		}
		if (res == -EINVAL && q->direct) {
			/* A file system without O_DIRECT; Linux may have
			 * created the name before refusing the flag. */
			q->direct = false;
			unlinkat(l->rootfd, q->tmp, 0);
			prep_open(q, q->tmp, put_flags(q), 0644);
			return;
		}
		if (res < 0) {
			if (res == -ENOENT && r->kind == SS_REQ_GET) {
				finish(q, -ENOENT);
				return;
			}
			(void)fail(q, res, "cannot open");
			return;
		}
		q->fd = res;
		if (r->kind == SS_REQ_PUT) {
			if (q->iovcnt)
				put_write(q);
			else
				put_after_write(q);
		} else {
			io_uring_prep_statx(sqe_for(q, L_STATX), q->fd, "", AT_EMPTY_PATH,
					    STATX_SIZE, &q->stx);
		}
		return;
	case L_STATX:
		if (res < 0) {
			(void)fail(q, res, "cannot stat");
			return;
		}
		r->size = q->stx.stx_size;
		q->off = r->off;
		q->want = r->len;
		if (r->flags & SS_GET_SUFFIX) {
			q->want = SS_MIN(r->len, r->size);
			q->off = r->size - q->want;
		}
		if (q->off >= r->size)
			q->want = 0;
		else
			q->want = SS_MIN(q->want, r->size - q->off);
		if (q->want == 0) {
			finish(q, 0);
			return;
		}
		get_read(q);
		return;
	case L_READ:
		if (res < 0) {
			(void)fail(q, res, "cannot read");
			return;
		}
		q->got += (uint64_t)res;
		if (res > 0 && q->got < q->want) {
			get_read(q);
			return;
		}
		if (q->got < q->want) {
			(void)fail(q, -EIO, "object shrank while reading");
			return;
		}
		finish(q, (int)q->got);
		return;
	case L_WRITE: {
		if (res == -EINVAL && q->direct) {
			/* Alignment this file system does not take: write
			 * the same range again through the page cache. */
			q->dio_end = 0;
			put_write(q);
			return;
		}
		if (res < 0) {
			(void)fail(q, res, "cannot write");
			return;
		}
		q->woff += (uint64_t)res;
		size_t left = (size_t)res;
		while (q->iov_idx < q->iovcnt && left >= q->iov[q->iov_idx].iov_len)
			left -= q->iov[q->iov_idx++].iov_len;
		if (q->iov_idx < q->iovcnt) {
			q->iov[q->iov_idx].iov_base = (uint8_t *)q->iov[q->iov_idx].iov_base + left;
			q->iov[q->iov_idx].iov_len -= left;
			if (res == 0) {
				(void)fail(q, -EIO, "short write to");
				return;
			}
			put_write(q);
			return;
		}
		put_after_write(q);
		return;
	}
	case L_FSYNC:
		if (res < 0) {
			(void)fail(q, res, "cannot fsync");
			return;
		}
		io_uring_prep_close(sqe_for(q, L_CLOSE), q->fd);
		return;
	case L_CLOSE:
		q->fd = -1;
		if (res < 0) {
			(void)fail(q, res, "cannot close");
			return;
		}
		if (r->kind != SS_REQ_PUT) {
			finish(q, q->result);
			return;
		}
		io_uring_prep_renameat(sqe_for(q, L_RENAME), l->rootfd, q->tmp, l->rootfd, r->key,
				       (r->flags & SS_PUT_IF_ABSENT) ? RENAME_NOREPLACE : 0);
		return;
	case L_RENAME:
		if (res == -EEXIST) {
			finish(q, -EEXIST);
			return;
		}
		if (res < 0) {
			(void)fail(q, res, "cannot rename into place");
			return;
		}
		q->placed = true;   /* nothing to clean up from here on */
		if (q->b->opts.no_fsync) {
			finish(q, 0);
			return;
		}
		dir_of_key(r->key, q->tmp, sizeof(q->tmp));
		memset(&q->how, 0, sizeof(q->how));
		q->how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
		q->how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		io_uring_prep_openat2(sqe_for(q, L_DIROPEN), l->rootfd, q->tmp, &q->how);
		return;
	case L_DIROPEN:
		if (res < 0) {
			/* The object is in place; only its name's durability is
			 * in doubt. Say so rather than fail the write. */
			dir_sync_failed(q, "open", res);
			finish(q, 0);
			return;
		}
		q->fd = res;
		io_uring_prep_fsync(sqe_for(q, L_DIRFSYNC), q->fd, 0);
		return;
	case L_DIRFSYNC:
		if (res < 0)
			dir_sync_failed(q, "fsync", res);
		else
			q->b->dir_syncs++;
		io_uring_prep_close(sqe_for(q, L_DIRCLOSE), q->fd);
		return;
	case L_DIRCLOSE:
		q->fd = -1;
		finish(q, 0);
		return;
	case L_SIMPLE:
		if (res >= 0 && r->kind == SS_REQ_STAT)
			r->size = q->stx.stx_size;
		if (res < 0 && res != -ENOENT)
			ss_err_set(r->err, res, "%s/%s: %s", l->root, r->key, strerror(-res));
		finish(q, res < 0 ? res : 0);
		return;
	}
}

/* Walk dir (relative to the root) and report regular files whose key
 * starts with prefix. Depth is bounded: a store is at most a few levels. */
static int list_walk(struct local *l, struct ss_req *r, const char *rel, int depth)
{
	if (depth > 8)
		return 0;
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s%s%s", l->root, *rel ? "/" : "", rel);
	if (n < 0 || n >= (int)sizeof(path))
		return -ENAMETOOLONG;
	DIR *d = opendir(path);
	if (!d)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	const char *prefix = r->key ? r->key : "";
	size_t pl = strlen(prefix);
	int res = 0;
	struct dirent *de;
	while (!res && (de = readdir(d))) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
			continue;
		char key[PATH_MAX];
		n = snprintf(key, sizeof(key), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		if (n < 0 || n >= (int)sizeof(key))
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		size_t kl = strlen(key);
		if (S_ISDIR(st.st_mode)) {
			/* Descend only where the prefix can still match. */
			size_t m = SS_MIN(kl, pl);
			if (strncmp(key, prefix, m) == 0)
				res = list_walk(l, r, key, depth + 1);
		} else if (S_ISREG(st.st_mode) && kl >= pl && strncmp(key, prefix, pl) == 0 &&
			   !strstr(de->d_name, TMP_MARK)) {
			res = r->on_key(r->arg, key, (uint64_t)st.st_size);
		}
	}
	closedir(d);
	return res;
}

static int local_submit(struct ss_backend *b, struct ss_req *r)
{
	struct local *l = L(b);
	if (r->kind == SS_REQ_GET && (!r->buf || r->len > (uint64_t)INT32_MAX))
		return -EINVAL;
	struct lreq *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->op.done = lreq_step;
	q->b = b;
	q->r = r;
	q->fd = -1;
	switch (r->kind) {
	case SS_REQ_PUT: {
		int n = snprintf(q->tmp, sizeof(q->tmp), "%s" TMP_MARK "%d-%llu", r->key, l->pid,
				 (unsigned long long)++l->seq);
		if (n < 0 || n >= (int)sizeof(q->tmp)) {
			free(q);
			return -ENAMETOOLONG;
		}
		q->iovcnt = r->iovcnt;
		q->iov = calloc(r->iovcnt ? r->iovcnt : 1, sizeof(*q->iov));
		if (!q->iov) {
			free(q);
			return -ENOMEM;
		}
		memcpy(q->iov, r->iov, r->iovcnt * sizeof(*q->iov));
		plan_direct(q);
		prep_open(q, q->tmp, put_flags(q), 0644);
		return 0;
	}
	case SS_REQ_GET:
		prep_open(q, r->key, O_RDONLY, 0);
		return 0;
	case SS_REQ_STAT:
		io_uring_prep_statx(sqe_for(q, L_SIMPLE), l->rootfd, r->key, AT_SYMLINK_NOFOLLOW,
				    STATX_SIZE, &q->stx);
		return 0;
	case SS_REQ_DELETE:
		io_uring_prep_unlinkat(sqe_for(q, L_SIMPLE), l->rootfd, r->key, 0);
		return 0;
	case SS_REQ_LIST: {
		/* Start at the deepest directory the prefix names. */
		char rel[PATH_MAX] = "";
		const char *slash = r->key ? strrchr(r->key, '/') : NULL;
		if (slash)
			snprintf(rel, sizeof(rel), "%.*s", (int)(slash - r->key), r->key);
		int res = list_walk(l, r, rel, 0);
		q->st = L_SIMPLE;
		if (res < 0)
			ss_err_set(r->err, res, "cannot list %s/%s: %s", l->root, rel, strerror(-res));
		ss_loop_defer(b->loop, &q->op, res);
		return 0;
	}
	}
	free(q);
	return -EINVAL;
}

static int local_identity(const struct ss_backend *b, char *buf, size_t n)
{
	/* The directory itself, whatever path or symlink named it. */
	struct stat st;
	if (fstat(((const struct local *)b->priv)->rootfd, &st) < 0)
		return -errno;
	int k = snprintf(buf, n, "file dev %llu ino %llu", (unsigned long long)st.st_dev,
			 (unsigned long long)st.st_ino);
	return k < 0 || (size_t)k >= n ? -ENOSPC : 0;
}

const struct ss_backend_ops ss_local_ops = {
	.name = "local",
	.scheme = "file",
	.local = true,
	.open = local_open,
	.identity = local_identity,
	.submit = local_submit,
	.destroy = local_destroy,
};
