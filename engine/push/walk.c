/* ss_push's sources: walking a directory (or taking one file) into the
 * file table, in follow mode rescanning it while a writer adds to it, and
 * where each file has data, so that its holes are never read. */
#include "filepush.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "xxh.h"
#include <zstd.h>

/* ---------------------------------------------------------------- files */

/* The kernel's default readahead window. */
#define FADVISE_MIN (128u << 10)

static int add_file(struct push *P, const char *path, const char *name, const struct stat *st)
{
	for (size_t i = 0; P->follow && i < P->nfiles; i++)
		if (strcmp(P->files[i]->name, name) == 0)
			return 0;   /* a rescan found it again */
	if (SS_GROW(P->files, P->files_cap, P->nfiles + 1, 16))
		return -ENOMEM;
	struct pfile *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->fd = -1;
	f->path = strdup(path);
	f->name = strdup(name);
	P->files[P->nfiles++] = f;
	if (!f->path || !f->name)
		return -ENOMEM;
	f->size = f->avail = (uint64_t)st->st_size;
	f->mode = st->st_mode & 07777;
	f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return ss_err_set(P->pipe.err, -errno, "cannot open %s: %s", path, strerror(errno));
	/* A file with as many bytes allocated as it is long has no holes to
	 * look for; a followed one is still growing. */
	f->alloc = (uint64_t)st->st_blocks * 512;
	f->dense = !P->follow && f->alloc >= f->size;
	/* Tell the kernel we read each file once, front to back: it then
	 * reads further ahead. Not for a file within one default readahead
	 * window, nor in memory (tmpfs, ramfs), where there is nothing to
	 * read ahead: a system call per file for nothing, 2,000 of them for
	 * a CRIU image directory, on the thread that opens them all. A
	 * followed file is still growing. */
	if (!P->src_memfs && (P->follow || f->size > FADVISE_MIN))
		posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return push_gv_add(P, f);
}

int push_pfile_stat(const struct pfile *f, uint64_t *size, uint32_t *mode, int64_t *mtime_ns)
{
	if (push_gv_ring(f))
		return push_gv_stat(f, size, mode, mtime_ns);
	struct stat sb;
	if (fstat(f->fd, &sb) < 0)
		return -errno;
	*size = (uint64_t)sb.st_size;
	*mode = sb.st_mode & 07777;
	*mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
	return 0;
}

void push_pfile_free(struct pfile *f)
{
	if (!f)
		return;
	if (f->fd >= 0 && !f->gv)
		close(f->fd);
	push_gv_free(f);   /* closes the file and its inflated form */
	free(f->gstart);
	free(f->seqs);
	free(f->path);
	free(f->name);
	free(f);
}

int push_cmp_pfile(const void *a, const void *b)
{
	return strcmp((*(struct pfile *const *)a)->name, (*(struct pfile *const *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walk a directory in name order so that a snapshot's file order, and so
 * its manifest, does not depend on readdir order. */
static int walk_dir(struct push *P, const char *dir, const char *rel, int depth)
{
	/* A file at depth d has d '/' in its name; a manifest holds at most
	 * SS_MANIFEST_MAX_DEPTH. */
	if (depth > SS_MANIFEST_MAX_DEPTH)
		return ss_err_set(P->pipe.err, -ELOOP, "directory tree too deep at %s", dir);
	DIR *d = opendir(dir);
	if (!d)
		return ss_err_set(P->pipe.err, -errno, "cannot open directory %s: %s", dir,
				  strerror(errno));
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (SS_GROW(names, cap, n + 1, 32)) {
			r = -ENOMEM;
			break;
		}
		if (!(names[n] = strdup(de->d_name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (!r && n)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; !r && i < n; i++) {
		char path[PATH_MAX], name[PATH_MAX];
		if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= (int)sizeof(path) ||
		    snprintf(name, sizeof(name), "%s%s%s", rel, *rel ? "/" : "", names[i]) >=
			    (int)sizeof(name)) {
			r = ss_err_set(P->pipe.err, -ENAMETOOLONG, "path too long: %s/%s", dir, names[i]);
			break;
		}
		struct stat st;
		if (lstat(path, &st) < 0) {
			r = ss_err_set(P->pipe.err, -errno, "cannot stat %s: %s", path, strerror(errno));
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			r = walk_dir(P, path, name, depth + 1);
		} else if (S_ISREG(st.st_mode)) {
			if (!ss_manifest_name_ok(name))
				r = ss_err_set(P->pipe.err, -EINVAL,
					       "cannot store file name '%s' (control characters?)",
					       name);
			else
				r = add_file(P, path, name, &st);
		} else {
			/* Not a usage error: the source holds what a snapshot
			 * cannot (a symlink, FIFO, socket or device). */
			r = ss_err_set(P->pipe.err, -ENOTSUP,
				       "%s is not a regular file or directory (snapshots hold "
				       "regular files only)",
				       path);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (r == -ENOMEM)
		ss_err_set(P->pipe.err, r, "out of memory");
	return r;
}

int push_collect_files(struct push *P)
{
	const char *src = P->opts->source;
	struct stat st;
	if (stat(src, &st) < 0)
		return ss_err_set(P->pipe.err, errno == ENOENT ? -ENOENT : -errno, "cannot read %s: %s",
				  src, strerror(errno));
	struct statfs sf;
	P->src_memfs = statfs(src, &sf) == 0 &&
		       (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC);
	int r;
	if (S_ISDIR(st.st_mode)) {
		P->root_is_dir = true;
		r = walk_dir(P, src, "", 0);
	} else if (S_ISREG(st.st_mode)) {
		const char *base = strrchr(src, '/');
		base = base ? base + 1 : src;
		if (!ss_manifest_name_ok(base))
			return ss_err_set(P->pipe.err, -EINVAL, "cannot store file name '%s'", base);
		r = add_file(P, src, base, &st);
		if (r)
			ss_err_set(P->pipe.err, r, "out of memory");
	} else {
		return ss_err_set(P->pipe.err, -ENOTSUP,
				  "%s is not a regular file or directory (snapshots hold regular "
				  "files only)",
				  src);
	}
	if (r)
		return r;
	for (size_t i = 0; i < P->nfiles; i++)
		P->total_bytes += P->files[i]->size;
	return 0;
}

/* Follow mode: pick up new files and growth. While the writer is active
 * only whole segments are read, so the cut points are those of a push of
 * the finished files; the rest is read once the writer is done. */
int push_follow_poll(struct push *P)
{
	/* The writer said it finished: the last rescan saw every file, and
	 * their sizes are final. Neither it nor the directory is asked again. */
	if (P->writer_done)
		return 0;
	uint64_t now = ss_now_ns();
	int st = push_gv_status(P);
	if (st < 0)
		return ss_err_set(P->pipe.err, st, "the checkpointer failed; no snapshot written");
	bool done = st > 0;
	if (P->root_is_dir && (done || now - P->last_scan_ns > 20000000ull)) {
		P->last_scan_ns = now;
		int r = walk_dir(P, P->opts->source, "", 0);
		if (r)
			return r;
	}
	P->total_bytes = 0;
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		uint64_t size = 0;
		uint32_t mode = 0;
		int64_t mtime = 0;
		/* -EAGAIN: a state file's decoder still running, which done
		 * rules out (push_gv_status). */
		int r = push_pfile_stat(f, &size, &mode, &mtime);
		if (r && (r != -EAGAIN || done))
			return ss_err_set(P->pipe.err, r, "cannot stat %s: %s", f->path, strerror(-r));
		if (size < f->read_off)
			return ss_err_set(P->pipe.err, -EIO, "%s shrank while it was being written",
					  f->path);
		f->avail = size;
		if (done) {
			f->size = f->avail;
			f->mode = mode;
			f->mtime_ns = mtime;
		}
		P->total_bytes += f->avail;
	}
	P->writer_done = done;
	return 0;
}

/* ---------------------------------------------------------------- holes */

/* The first data of f at or after pos, as [*d, *h) with *d >= pos; *d >=
 * end when there is none before end (what may be read now). The file
 * system tells (SEEK_DATA, SEEK_HOLE), and its answer is kept, so each
 * data extent costs two lseeks. Where it cannot tell, all is data: a file
 * system without SEEK_DATA reports the whole file as data, and an error
 * (EINVAL, EOPNOTSUPP) makes the file dense. ENXIO is no data up to end. */
static void next_data(struct pfile *f, uint64_t pos, uint64_t end, uint64_t *d, uint64_t *h)
{
	if (!f->dense && (pos < f->map_from || pos >= f->map_hole)) {
		off_t x = lseek(f->fd, (off_t)pos, SEEK_DATA);
		off_t y = x >= 0 ? lseek(f->fd, x, SEEK_HOLE) : -1;
		if (x < 0 && errno == ENXIO) {
			f->map_from = pos;
			f->map_data = f->map_hole = end;
		} else if (x < 0 || (uint64_t)x < pos || y <= x) {
			f->dense = true;
		} else {
			f->map_from = pos;
			f->map_data = (uint64_t)x;
			f->map_hole = (uint64_t)y;
		}
	}
	if (f->dense) {
		*d = pos;
		*h = UINT64_MAX;
		return;
	}
	*d = SS_MAX(pos, f->map_data);
	*h = f->map_hole;
}

/* All-hole segments stay below 2 GiB: extents and lengths are 32-bit. */
#define HOLE_SEG_MAX (1ull << 31)
/* Zero runs the page scan found that a segment does not read again. */
#define ZERO_SKIP_MIN (16u * SS_PAGE_SIZE)

/* The page scan (pagescan.c) read every page once already and knows which
 * are zero. A run of at least ZERO_SKIP_MIN of them inside a window is
 * left out of it, and the workers take it as zero as they take a hole of
 * the source: the snapshot is the same, extent for extent (docs/DESIGN.md,
 * "Sparse sources"), and the second read and zero test of those pages are
 * spared. A change in between is caught as any change while a file is
 * pushed is: by its mtime (push_check_unchanged). Within the windows a
 * segment has; where the runs would need more, the windows stay as they
 * were. */
static void skip_zero_runs(const struct push *P, const struct pfile *f, struct seg *s)
{
	struct swin w[SEG_MAX_WIN];
	uint32_t n = 0;
	for (uint32_t i = 0; i < s->nwin; i++) {
		uint64_t a = s->off + s->win[i].off, e = a + s->win[i].len, start = a;
		for (uint64_t pos = a; pos < e;) {
			uint64_t z = push_zero_scan(P, f, pos, e, false);
			if (z >= e)
				break;
			uint64_t ze = push_zero_scan(P, f, z, e, true);
			if (ze - z >= ZERO_SKIP_MIN) {
				if (z > start) {
					if (n == SEG_MAX_WIN)
						return;
					w[n++] = (struct swin){(uint32_t)(start - s->off), (uint32_t)(z - start)};
				}
				start = ze;
			}
			pos = ze;
		}
		if (e > start) {
			if (n == SEG_MAX_WIN)
				return;
			w[n++] = (struct swin){(uint32_t)(start - s->off), (uint32_t)(e - start)};
		}
	}
	memcpy(s->win, w, sizeof(*w) * n);
	s->nwin = n;
}

void push_plan_seg(struct push *P, struct pfile *f, struct seg *s, uint64_t lim, bool final)
{
	const uint64_t ss = P->b.cfg.chunk.seg_size;
	const uint64_t off = f->read_off;
	uint64_t end = off + SS_MIN(ss, lim - off);
	uint64_t d, h;
	next_data(f, off, lim, &d, &h);
	s->off = off;
	s->nwin = 0;
	/* Windows are whole pages, so a hole shorter than one is read. */
	if (d < lim)
		d &= ~(uint64_t)(SS_PAGE_SIZE - 1);
	if (d >= end) {
		/* No data in this unit: it and every whole unit the hole
		 * covers are one segment, the tail too once the size is final. */
		uint64_t hend = SS_MIN(d, lim);
		uint64_t n = final && hend == lim ? lim - off : (hend - off) / ss * ss;
		uint64_t cap = SS_MAX(HOLE_SEG_MAX / ss, 1) * ss;
		s->len = (uint32_t)SS_MIN(n, cap);
		return;
	}
	s->len = (uint32_t)(end - off);
	for (uint64_t pos = off; pos < end;) {
		if (pos != off) {
			next_data(f, pos, lim, &d, &h);
			if (d >= end)
				break;
			d &= ~(uint64_t)(SS_PAGE_SIZE - 1);
		}
		uint64_t we = h >= end ? end : SS_MIN(SS_ALIGN_UP(h, SS_PAGE_SIZE), end);
		struct swin *last = s->nwin ? &s->win[s->nwin - 1] : NULL;
		if (last && off + last->off + last->len == d) {
			last->len = (uint32_t)(we - off - last->off);
		} else if (s->nwin == SEG_MAX_WIN) {
			/* Too fragmented to read piece by piece: read the rest. */
			last->len = (uint32_t)(end - off - last->off);
			break;
		} else {
			s->win[s->nwin++] = (struct swin){(uint32_t)(d - off), (uint32_t)(we - d)};
		}
		pos = we;
	}
	if (P->pzero)
		skip_zero_runs(P, f, s);
}
