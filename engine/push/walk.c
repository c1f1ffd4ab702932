/* ss_push's sources: walking a directory (or taking one file) into the
 * file table, and in follow mode rescanning it while a writer adds to it. */
#include "filepush.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

/* ---------------------------------------------------------------- files */

static int add_file(struct push *P, const char *path, const char *name, const struct stat *st)
{
	for (size_t i = 0; P->follow && i < P->nfiles; i++)
		if (strcmp(P->files[i]->name, name) == 0)
			return 0;   /* a rescan found it again */
	if (P->nfiles == P->files_cap) {
		size_t ncap = P->files_cap ? P->files_cap * 2 : 16;
		void *a = realloc(P->files, sizeof(*P->files) * ncap);
		if (!a)
			return -ENOMEM;
		P->files = a;
		P->files_cap = ncap;
	}
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
	f->hs = XXH3_createState();
	if (!f->hs)
		return -ENOMEM;
	XXH3_128bits_reset(f->hs);
	/* Tell the kernel we read each file once, front to back. */
	posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return 0;
}

void push_pfile_free(struct pfile *f)
{
	if (!f)
		return;
	if (f->fd >= 0)
		close(f->fd);
	XXH3_freeState(f->hs);
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
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			char **a = realloc(names, sizeof(*names) * cap);
			if (!a) {
				r = -ENOMEM;
				break;
			}
			names = a;
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
	int st = P->opts->writer_status(P->opts->writer_arg);
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
		struct stat sb;
		if (fstat(f->fd, &sb) < 0)
			return ss_err_set(P->pipe.err, -errno, "cannot stat %s: %s", f->path,
					  strerror(errno));
		if ((uint64_t)sb.st_size < f->read_off)
			return ss_err_set(P->pipe.err, -EIO, "%s shrank while it was being written",
					  f->path);
		f->avail = (uint64_t)sb.st_size;
		if (done) {
			f->size = f->avail;
			f->mode = sb.st_mode & 07777;
			f->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
		}
		P->total_bytes += f->avail;
	}
	P->writer_done = done;
	return 0;
}
