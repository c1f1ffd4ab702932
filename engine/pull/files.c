/* ss_pull's output files: created beside the destination at full size,
 * hashed in order as their written prefix grows, verified, fsynced and
 * renamed into place (or removed after a failure). */
#include "filepull.h"
#include "gvstate.h"

/* Bytes read back per call: page multiples, so the digest copies none,
 * and small enough to be hashed from L2 right after the copy and to keep
 * each worker's scratch at 256 KiB touched (4 MiB pieces: 10 % more wall
 * time on a 256 MiB pull, every first touch of a page costing on a VM). */
#define HASH_PIECE (256u << 10)
/* A file whose last unhashed part is no larger is hashed on the loop
 * thread when its last write lands: handing it to a worker costs more
 * than the hash (2,000 small files, 2,000 tasks). */
#define INLINE_HASH_MAX (256u << 10)
_Static_assert(HASH_PIECE <= SS_FRAME_MAX_LIMIT, "hash pieces fit in a worker's scratch");

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "xxh.h"

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	/* Best effort: remove what can be removed; rm_tree reports the rest. */
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* Remove a tree (or a file) without recursing on this stack and without
 * following symlinks: the old destination a --force pull replaces is the
 * caller's and may be nested arbitrarily deep. Returns 0 when path is
 * gone, else -errno. */
int pull_rm_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return -errno;
	if (lstat(path, &st) == 0)
		return -ENOTEMPTY;
	return errno == ENOENT ? 0 : -errno;
}

/* Where file i of the snapshot is assembled before the rename. */
static int out_path(const struct pull *P, size_t i, char *path, size_t len)
{
	int n = P->m->root_is_dir ? snprintf(path, len, "%s/%s", P->tmp, P->m->files[i].name)
				  : snprintf(path, len, "%s", P->tmp);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* A gVisor state file stored inflated (docs/DESIGN.md, "gVisor state
 * files") is pulled, hashed and verified in that form in an unnamed file
 * beside its output (memory when the file system has no O_TMPFILE), and
 * rebuilt into the output once it verified. */
static int gv_open(struct pull *P, size_t i)
{
	char path[PATH_MAX];
	int r = out_path(P, i, path, sizeof(path));
	if (r)
		return ss_err_set(P->err, r, "path too long: %s", P->m->files[i].name);
	char *slash = strrchr(path, '/');
	if (slash)
		*slash = '\0';
	int fd = open(slash ? (*path ? path : "/") : ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = memfd_create("snapstream-gvstate", MFD_CLOEXEC);
	if (fd < 0)
		return ss_err_set(P->err, -errno, "cannot create a file for %s: %s",
				  P->m->files[i].name, strerror(errno));
	close(P->files[i].fd);
	P->files[i].fd = fd;
	return 0;
}

static int gv_rebuild(struct pull *P)
{
	for (size_t i = 0; i < P->m->nfiles; i++) {
		const struct ss_mfile *f = &P->m->files[i];
		if (!f->transform)
			continue;
		char path[PATH_MAX];
		int r = out_path(P, i, path, sizeof(path));
		int fd = r ? -1 : open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return ss_err_set(P->err, r ? r : -errno, "cannot write %s: %s", f->name,
					  strerror(r ? -r : errno));
		r = ss_gvs_rebuild_fd(P->files[i].fd, f->size, fd);
		if (!r && !P->cfg.bopts.no_fsync && fsync(fd) < 0)
			r = -errno;
		close(P->files[i].fd);
		P->files[i].fd = fd;
		if (r == -EBADMSG)
			return ss_err_set(P->err, r,
					  "'%s' is stored as an inflated gVisor state file, but its "
					  "stored bytes have no state file header (corrupt or forged "
					  "snapshot)",
					  f->name);
		if (r)
			return ss_err_set(P->err, r, "cannot write %s: %s", f->name, strerror(-r));
	}
	return 0;
}

int pull_create_outputs(struct pull *P)
{
	struct ss_manifest *m = P->m;
	const char *dest = P->opts->dest;
	struct stat st;
	bool exists = lstat(dest, &st) == 0;
	char final[PATH_MAX];
	/* The manifest validator (proto/manifest.c) saw to it that a one-file
	 * snapshot holds exactly one file, whose name has no '/'. */
	if (!m->root_is_dir) {
		/* Pulling a file snapshot into an existing directory puts it there. */
		if (exists && S_ISDIR(st.st_mode)) {
			snprintf(final, sizeof(final), "%s/%s", dest, m->files[0].name);
			exists = lstat(final, &st) == 0;
		} else {
			snprintf(final, sizeof(final), "%s", dest);
		}
	} else {
		snprintf(final, sizeof(final), "%s", dest);
	}
	if (exists && !P->opts->force) {
		bool empty_dir = false;
		if (m->root_is_dir && S_ISDIR(st.st_mode)) {
			DIR *d = opendir(final);
			empty_dir = d != NULL;
			struct dirent *de;
			while (d && (de = readdir(d)))
				if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
					empty_dir = false;
			if (d)
				closedir(d);
		}
		if (!empty_dir)
			return ss_err_set(P->err, -EEXIST,
					  "%s already exists (use --force to replace it)", final);
	}
	if (!(P->final = strdup(final)))
		return -ENOMEM;
	size_t tl = strlen(final) + 32;
	if (!(P->tmp = malloc(tl)))
		return -ENOMEM;
	snprintf(P->tmp, tl, "%s.ss-tmp-XXXXXX", final);
	P->files = calloc(m->nfiles ? m->nfiles : 1, sizeof(*P->files));
	if (!P->files)
		return -ENOMEM;
	for (size_t i = 0; i < m->nfiles; i++) {
		P->files[i].fd = -1;
		P->files[i].done = calloc(m->files[i].next ? m->files[i].next : 1, 1);
		if (!P->files[i].done)
			return -ENOMEM;
		if (m->format_major >= SS_FDIGEST_SUM_MAJOR &&
		    !(P->files[i].sum = ss_fdsum_new(m->files[i].size)))
			return -ENOMEM;
	}
	if (!m->root_is_dir) {
		int fd = mkostemp(P->tmp, O_CLOEXEC);
		if (fd < 0) {
			int e = -errno;
			P->tmp[0] = '\0';
			return ss_err_set(P->err, e, "cannot create a file beside %s: %s", final,
					  strerror(-e));
		}
		P->files[0].fd = fd;
	} else {
		if (!mkdtemp(P->tmp)) {
			int e = -errno;
			P->tmp[0] = '\0';
			return ss_err_set(P->err, e, "cannot create a directory beside %s: %s", final,
					  strerror(-e));
		}
		P->tmp_is_dir = true;
	}
	/* Every file stays open until it is verified. The library lives with
	 * the descriptor limit its caller set (the CLI and ateom raise it at
	 * startup) and says so when the snapshot needs more. */
	/* Files of one directory usually come one after another: make each
	 * directory once, not once per file. */
	char made[PATH_MAX] = "";
	for (size_t i = 0; i < m->nfiles; i++) {
		struct ss_mfile *f = &m->files[i];
		if (m->root_is_dir) {
			char path[PATH_MAX];
			if (snprintf(path, sizeof(path), "%s/%s", P->tmp, f->name) >= (int)sizeof(path))
				return ss_err_set(P->err, -ENAMETOOLONG, "path too long: %s", f->name);
			char *slash = strrchr(path, '/');
			*slash = '\0';
			int r = strcmp(path, made) ? ss_mkdir_p(path, 0755) : 0;
			if (!r)
				memcpy(made, path, (size_t)(slash - path) + 1);
			*slash = '/';
			if (r)
				return ss_err_set(P->err, r, "cannot create %s: %s", path, strerror(-r));
			/* O_EXCL and O_NOFOLLOW: names were validated, but never follow
			 * anything into place. */
			P->files[i].fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
					      0600);
			if (P->files[i].fd < 0 && (errno == EMFILE || errno == ENFILE))
				return ss_err_set(P->err, -errno,
						  "cannot create %s: %s (a pull keeps each of the "
						  "snapshot's %zu files open until it is verified: "
						  "raise the limit on open files)",
						  path, strerror(errno), m->nfiles);
			if (P->files[i].fd < 0)
				return ss_err_set(P->err, -errno, "cannot create %s: %s", path,
						  strerror(errno));
		}
		if (f->transform) {
			int r = gv_open(P, i);
			if (r)
				return r;
		}
		if (ftruncate(P->files[i].fd, (off_t)f->size) < 0)
			return ss_err_set(P->err, -errno, "cannot size %s (%llu bytes): %s", f->name,
					  (unsigned long long)f->size, strerror(errno));
	}
	return 0;
}

/* Split leaves a pull that writes nothing keeps at once, all its files
 * together (1 KiB each): past them, verify reads the snapshot in order
 * instead (pull.h). */
#define DISCARD_KEEP (1u << 16)

int pull_create_sums(struct pull *P)
{
	struct ss_manifest *m = P->m;
	P->files = calloc(m->nfiles ? m->nfiles : 1, sizeof(*P->files));
	if (!P->files)
		return ss_err_set(P->err, -ENOMEM, "out of memory");
	atomic_init(&P->keep_pool, P->cfg.verify_keep_none ? 0 : DISCARD_KEEP);
	for (size_t i = 0; i < m->nfiles; i++) {
		struct ofile *o = &P->files[i];
		o->fd = -1;
		o->done = calloc(m->files[i].next ? m->files[i].next : 1, 1);
		o->sum = ss_fdsum_new(m->files[i].size);
		if (!o->done || !o->sum)
			return ss_err_set(P->err, -ENOMEM, "out of memory");
		ss_fdsum_keep(o->sum, &P->keep_pool);
	}
	return 0;
}

/* Hash extents [from, to) of a file: zero runs by their length, the rest
 * read back from the file, so the digest proves what is on disk. Only
 * chunks are read: a hole is never read back. The reads go into the
 * worker's scratch buffer (huge pages, reused): mapping the file instead
 * cost one TLB miss and a fault per few pages, 4x the time on a VM. */
static void hash_work(struct ss_task *task, void *wp)
{
	const struct ss_rdec *w = wp;
	struct htask *h = (struct htask *)task;
	struct pull *P = h->P;
	struct ss_mfile *f = &P->m->files[h->file];
	struct ofile *o = &P->files[h->file];
	uint64_t off = h->off;
	h->err = 0;
	for (size_t e = h->from; e < h->to && !h->err;) {
		uint64_t len = f->ext[e].len;
		if (!f->ext[e].chunk) {
			ss_fdigest_zero(o->hs, len);
			off += len;
			e++;
			continue;
		}
		uint64_t at = off;
		while (e < h->to && f->ext[e].chunk)
			off += f->ext[e++].len;
		while (at < off) {
			size_t want = (size_t)SS_MIN((uint64_t)HASH_PIECE, off - at);
			ssize_t n = pread(o->fd, w->scratch, want, (off_t)at);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				h->err = n < 0 ? -errno : -EIO;
				break;
			}
			ss_fdigest_data(o->hs, w->scratch, (size_t)n);
			at += (uint64_t)n;
		}
	}
	if (!h->err && h->to == f->next) {
		uint8_t d[16];
		ss_fdigest_final(o->hs, d);
		if (memcmp(d, f->digest, 16) != 0)
			h->err = -EBADMSG;
	}
	h->off = off;
}

static void hash_done(struct ss_op *op, int res)
{
	(void)res;
	struct htask *h = (struct htask *)((char *)op - offsetof(struct ss_task, op));
	struct pull *P = h->P;
	struct ofile *o = &P->files[h->file];
	P->tasks_inflight--;
	o->hashing = false;
	if (h->err) {
		if (!P->failed) {
			P->failed = true;
			if (h->err == -EBADMSG)
				ss_err_set(P->err, h->err,
					   "corrupted data: file '%s' does not match its recorded digest",
					   P->m->files[h->file].name);
			else
				ss_err_set(P->err, h->err, "cannot read back '%s': %s",
					   P->m->files[h->file].name, strerror(-h->err));
		}
		return;
	}
	o->hashed = h->to;
	o->hashed_off = h->off;
	if (o->hashed == P->m->files[h->file].next) {
		o->verified = true;
		ss_fdigest_free(o->hs);
		o->hs = NULL;
	}
	pull_advance(P, h->file);
}

/* Move a file's written frontier forward and hash what it uncovered. */
void pull_advance(struct pull *P, uint32_t file)
{
	struct ss_mfile *f = &P->m->files[file];
	struct ofile *o = &P->files[file];
	if (o->sum)
		return;   /* summed as written; checked by verify_files */
	while (o->frontier < f->next && (!f->ext[o->frontier].chunk || o->done[o->frontier]))
		o->frontier++;
	if (P->failed || o->hashing || o->verified)
		return;
	/* Hash in steps of at least 8 MiB (or the rest) so tasks stay few. */
	if (o->frontier < f->next && o->frontier - o->hashed < 128)
		return;
	if (o->frontier == o->hashed && f->next)
		return;
	/* A file's digest exists from its first step to its last: 2,000
	 * small files hold a few at a time, not 2,000 of ~5 KiB each. */
	if (!o->hs && !(o->hs = ss_fdigest_new(P->m->format_major))) {
		P->failed = true;
		ss_err_set(P->err, -ENOMEM, "out of memory");
		return;
	}
	struct htask *h = &o->ht;
	h->P = P;
	h->file = file;
	h->from = o->hashed;
	/* At most 16 MiB of file per step: the mapping counts towards RSS. */
	uint64_t span = 0;
	h->to = h->from;
	while (h->to < o->frontier && (h->to == h->from || span + f->ext[h->to].len <= (16u << 20)))
		span += f->ext[h->to++].len;
	h->off = o->hashed_off;
	h->task.run = hash_work;
	h->task.op.done = hash_done;
	o->hashing = true;
	P->tasks_inflight++;
	if (h->to == f->next && span <= INLINE_HASH_MAX) {
		if (!P->lscratch)
			P->lscratch = malloc(INLINE_HASH_MAX);
		if (P->lscratch) {
			struct ss_rdec w = {.scratch = P->lscratch};
			hash_work(&h->task, &w);
			hash_done(&h->task.op, 0);
			return;
		}
	}
	ss_pool_submit(P->pool, &h->task);
}

/* A leaf the sum did not keep, read back from the file; a pull that
 * writes nothing has none to read it from. */
static int read_leaf(void *arg, uint64_t off, void *buf, size_t n)
{
	const struct ofile *o = arg;
	return o->fd < 0 ? -E2BIG : ss_pread_all(o->fd, buf, n, off);
}

/* Format 5: every piece was summed as it was written (pull.c, range_write). */
int pull_verify_sums(struct pull *P)
{
	for (size_t i = 0; i < P->m->nfiles; i++) {
		struct ofile *o = &P->files[i];
		const struct ss_mfile *f = &P->m->files[i];
		uint8_t d[16];
		int r = ss_fdsum_final(o->sum, read_leaf, o, d);
		if (r == -E2BIG)
			return r;
		if (r)
			return ss_err_set(P->err, r, "cannot read back '%s': %s", f->name,
					  strerror(-r));
		if (memcmp(d, f->digest, 16) != 0)
			return ss_err_set(P->err, -EBADMSG,
					  "corrupted data: file '%s' does not match its recorded digest",
					  f->name);
		o->verified = true;
	}
	return 0;
}

static int verify_files(struct pull *P)
{
	if (P->m->format_major >= SS_FDIGEST_SUM_MAJOR)
		return P->failed ? P->err->code : pull_verify_sums(P);
	/* Start the files that had nothing to write (all zero, or empty). */
	for (size_t i = 0; i < P->m->nfiles; i++)
		pull_advance(P, (uint32_t)i);
	while (P->tasks_inflight && ss_loop_turn(P->loop, true) >= 0)
		;
	for (size_t i = 0; !P->failed && i < P->m->nfiles; i++)
		if (!P->files[i].verified)
			return ss_err_set(P->err, -EIO, "internal error: '%s' was not verified",
					  P->m->files[i].name);
	return P->failed ? P->err->code : 0;
}

/* Make the rename into place durable: fsync the directory holding it. */
static int sync_parent(struct pull *P)
{
	if (P->cfg.bopts.no_fsync)
		return 0;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", P->final);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = slash == dir ? (slash[1] = '\0', '/') : '\0';
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = dfd < 0 || fsync(dfd) < 0 ? -errno : 0;
	if (dfd >= 0)
		close(dfd);
	if (r)
		return ss_err_set(P->err, r, "pulled into %s, but cannot make that durable "
					     "(fsync of its directory): %s",
				  P->final, strerror(-r));
	return 0;
}

/* The destination replaced the old way, for file systems without
 * RENAME_EXCHANGE: the old tree moves aside, the new one in, and back
 * when that fails. Not atomic: the destination is missing in between. */
static int replace_by_moving(struct pull *P, char *old, size_t oldlen)
{
	snprintf(old, oldlen, "%s.ss-old-XXXXXX", P->final);
	if (!mkdtemp(old))
		return ss_err_set(P->err, -errno, "cannot replace %s: %s", P->final,
				  strerror(errno));
	if (rename(P->final, old) < 0) {
		int e = -errno;
		rmdir(old);
		old[0] = '\0';
		return ss_err_set(P->err, e, "cannot replace %s: %s", P->final, strerror(-e));
	}
	if (rename(P->tmp, P->final) < 0) {
		int e = -errno;
		if (rename(old, P->final) < 0)
			return ss_err_set(P->err, e,
					  "cannot move the result into %s: %s; the old %s is "
					  "left in %s (cannot move it back: %s)",
					  P->final, strerror(-e), P->final, old, strerror(errno));
		old[0] = '\0';
		return ss_err_set(P->err, e, "cannot move the result into %s: %s", P->final,
				  strerror(-e));
	}
	return 0;
}

/* Into place. A new destination is renamed in; an existing one (with
 * --force, or an empty directory) is exchanged with the result in one
 * step, so that whoever looks sees the old tree or the new one and never
 * neither, and removed afterwards. A one-file pull renames its file over
 * the old one, which is as atomic. */
static int install(struct pull *P)
{
	struct stat st;
	bool exists = lstat(P->final, &st) == 0;
	if (!exists && errno != ENOENT)
		return ss_err_set(P->err, -errno, "cannot replace %s: %s", P->final,
				  strerror(errno));
	char old[PATH_MAX + 32] = "";
	if (exists && P->tmp_is_dir) {
		if (renameat2(AT_FDCWD, P->tmp, AT_FDCWD, P->final, RENAME_EXCHANGE) == 0) {
			/* P->tmp now holds the old destination. */
			snprintf(old, sizeof(old), "%s", P->tmp);
		} else if (errno == EINVAL || errno == ENOSYS) {
			int r = replace_by_moving(P, old, sizeof(old));
			if (r)
				return r;
		} else {
			return ss_err_set(P->err, -errno, "cannot replace %s: %s", P->final,
					  strerror(errno));
		}
	} else if (rename(P->tmp, P->final) < 0) {
		return ss_err_set(P->err, -errno, "cannot move the result into %s: %s", P->final,
				  strerror(errno));
	}
	P->tmp[0] = '\0';
	int r = sync_parent(P);
	int rr = old[0] ? pull_rm_tree(old) : 0;
	if (!r && rr)
		r = ss_err_set(P->err, rr, "pulled into %s, but cannot remove what it replaced "
					   "(now %s): %s",
			       P->final, old, strerror(-rr));
	return r;
}

struct syncop {
	struct ss_op op;
	int *pending, *err;
	size_t *failed_file;
	size_t file;
};

static void sync_done(struct ss_op *op, int res)
{
	struct syncop *s = (struct syncop *)op;
	(*s->pending)--;
	if (res < 0 && !*s->err) {
		*s->err = res;
		*s->failed_file = s->file;
	}
}

/* fsync every file, all at once through the ring: one after another,
 * 2,000 small files on a disk wait for 2,000 flushes in turn. */
static int sync_files(struct pull *P)
{
	struct ss_manifest *m = P->m;
	struct syncop *ops = calloc(m->nfiles ? m->nfiles : 1, sizeof(*ops));
	if (!ops)
		return ss_err_set(P->err, -ENOMEM, "out of memory");
	int pending = 0, err = 0, r = 0;
	size_t failed = 0;
	for (size_t i = 0; i < m->nfiles; i++) {
		/* A transformed file is made durable once rebuilt. */
		if (m->files[i].transform)
			continue;
		ops[i] = (struct syncop){.op.done = sync_done, .pending = &pending, .err = &err,
					 .failed_file = &failed, .file = i};
		io_uring_prep_fsync(ss_loop_sqe(P->loop, &ops[i].op), P->files[i].fd, 0);
		pending++;
	}
	while (pending && (r = ss_loop_turn(P->loop, true)) >= 0)
		;
	/* The ring failed: collect what the kernel still holds before the
	 * ops go; ops that never complete keep their memory. */
	while (pending && ss_loop_reap(P->loop, 1000000000LL) > 0)
		;
	if (!err && r < 0)
		err = r;
	if (!pending)
		free(ops);
	if (err)
		return ss_err_set(P->err, err, "cannot fsync %s: %s", m->files[failed].name,
				  strerror(-err));
	return 0;
}

int pull_finish_files(struct pull *P)
{
	struct ss_manifest *m = P->m;
	int r;
	if (!P->cfg.bopts.no_fsync && (r = sync_files(P)))
		return r;
	P->prog.phase = "verify";
	ss_tick(&P->cfg, &P->ticker, &P->prog, true);
	r = verify_files(P);
	if (r || (r = gv_rebuild(P)))
		return r;
	for (size_t i = 0; i < m->nfiles; i++) {
		struct ss_mfile *f = &m->files[i];
		struct timespec ts[2] = {
			{.tv_sec = 0, .tv_nsec = UTIME_OMIT},
			{.tv_sec = f->mtime_ns / 1000000000, .tv_nsec = f->mtime_ns % 1000000000},
		};
		if (f->mtime_ns < 0)
			ts[1].tv_nsec = UTIME_OMIT;
		if (fchmod(P->files[i].fd, f->mode & 07777) < 0 || futimens(P->files[i].fd, ts) < 0)
			return ss_err_set(P->err, -errno, "cannot set attributes of %s: %s", f->name,
					  strerror(errno));
		close(P->files[i].fd);
		P->files[i].fd = -1;
	}
	return install(P);
}
