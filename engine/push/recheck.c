/* Follow mode's last step: the files re-read and re-hashed once their
 * writer is done (docs/DESIGN.md, "Following a checkpointer"). */
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
#include "xxh.h"
#include <zstd.h>

/* Follow mode: the reads raced a writer, so each file is hashed once more
 * now that it is final; a file rewritten behind the reader fails the push
 * instead of producing a snapshot of bytes that never existed together. */
/* Re-reading a followed image after its writer exited, to prove that what
 * was chunked is what the file now holds: every chunk extent must hash to
 * its id again and every zero run must still be zero (its holes are not
 * read: they are zero). Extents never cross
 * segments, so the segments are checked in parallel, which halves the tail
 * of a push that follows a checkpointer (the whole image is re-read). */
struct recheck_item {
	uint32_t file;
	uint32_t seq;
	uint64_t off;
	uint64_t len;
};

struct recheck {
	struct push *P;
	struct recheck_item *items;
	size_t n;
	atomic_size_t next;
	atomic_size_t bad;      /* 1 + index of the first file found changed */
	atomic_int err;         /* -errno of a failed read */
};

/* Read exactly len bytes at off: 0, 1 when the file is now shorter, or
 * -errno. */
static int read_full(const struct pfile *f, uint8_t *buf, uint64_t len, uint64_t off)
{
	for (uint64_t got = 0; got < len;) {
		ssize_t n = pread(f->fd, buf + got, (size_t)(len - got), (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 1;   /* shorter than it was */
		got += (uint64_t)n;
	}
	return 0;
}

/* Whether [off, off + len) of f is still all zero: 0 yes, 1 no, or
 * -errno. Only its data is read (through buf, cap bytes at a time): a
 * hole is zero, whatever its length. */
static int still_zero(const struct pfile *f, uint64_t off, uint64_t len, uint8_t *buf, size_t cap)
{
	const uint64_t end = off + len;
	while (off < end) {
		uint64_t d = off, h = end;
		if (!f->dense) {
			off_t x = lseek(f->fd, (off_t)off, SEEK_DATA);
			if (x < 0 && errno == ENXIO)
				return 0;   /* a hole to the end of the file */
			if (x >= 0) {
				off_t y = lseek(f->fd, x, SEEK_HOLE);
				d = SS_MAX((uint64_t)x, off);
				h = y > x ? (uint64_t)y : end;
			}
		}
		if (d >= end)
			return 0;
		h = SS_MIN(h, end);
		for (uint64_t pos = d; pos < h;) {
			size_t n = (size_t)SS_MIN((uint64_t)cap, h - pos);
			int r = read_full(f, buf, n, pos);
			if (r)
				return r;
			if (!ss_is_zero(buf, n))
				return 1;
			pos += n;
		}
		off = h;
	}
	return 0;
}

static int recheck_segment(struct recheck *rc, const struct recheck_item *it, uint8_t *buf)
{
	struct push *P = rc->P;
	const struct pfile *f = P->files[it->file];
	const size_t cap = P->b.cfg.chunk.seg_size;
	const struct segext *se = &P->seg_ext[it->seq];
	uint64_t at = 0;
	for (uint32_t k = 0; k < se->n;) {
		const struct sext *e = &se->ext[k];
		int r;
		if (e->slot == SS_SLOT_NONE) {
			if ((r = still_zero(f, it->off + at, e->len, buf, cap)))
				return r;
			at += e->len;
			k++;
			continue;
		}
		/* Neighbouring chunks are read at once (a chunk is at most
		 * max_size <= seg_size bytes). */
		uint32_t k2 = k;
		uint64_t n = 0;
		while (k2 < se->n && se->ext[k2].slot != SS_SLOT_NONE && n + se->ext[k2].len <= cap)
			n += se->ext[k2++].len;
		if (k2 == k)
			return 1;   /* a chunk larger than a segment: not ours */
		if ((r = read_full(f, buf, n, it->off + at)))
			return r;
		for (uint64_t b = 0; k < k2; k++) {
			uint8_t id[16];
			ss_chunk_id(&P->b.cfg.ids, buf + b, se->ext[k].len, id);
			if (memcmp(id, ss_dedup_entry(P->b.dedup, se->ext[k].slot)->id, 16) != 0)
				return 1;
			b += se->ext[k].len;
		}
		at += n;
	}
	return at == it->len ? 0 : 1;
}

static void *recheck_main(void *arg)
{
	struct recheck *rc = arg;
	uint8_t *buf = ss_map_alloc(rc->P->b.cfg.chunk.seg_size);
	if (!buf) {
		atomic_store(&rc->err, -ENOMEM);
		return NULL;
	}
	for (;;) {
		size_t i = atomic_fetch_add(&rc->next, 1);
		if (i >= rc->n || atomic_load(&rc->bad) || atomic_load(&rc->err))
			break;
		int r = recheck_segment(rc, &rc->items[i], buf);
		if (r < 0) {
			int zero = 0;
			atomic_compare_exchange_strong(&rc->err, &zero, r);
		} else if (r > 0) {
			size_t none = 0;
			atomic_compare_exchange_strong(&rc->bad, &none, rc->items[i].file + 1);
		}
	}
	ss_map_free(buf, rc->P->b.cfg.chunk.seg_size);
	return NULL;
}

int push_check_followed(struct push *P)
{
	struct recheck rc = {.P = P};
	size_t cap = 0;
	for (size_t i = 0; i < P->nfiles; i++)
		cap += P->files[i]->nseqs;
	rc.items = malloc(sizeof(*rc.items) * (cap ? cap : 1));
	if (!rc.items)
		return ss_err_set(P->pipe.err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		uint64_t size;
		uint32_t mode;
		int64_t mtime;
		int r = push_pfile_stat(f, &size, &mode, &mtime);
		if (r) {
			free(rc.items);
			return ss_err_set(P->pipe.err, r, "cannot re-read %s: %s", f->path, strerror(-r));
		}
		if (size != f->size) {
			free(rc.items);
			return ss_err_set(P->pipe.err, -EAGAIN,
					  "%s changed size after its writer finished (no snapshot "
					  "written)",
					  f->path);
		}
		/* A state file pushed inflated was read from its inflated form,
		 * which only its decoder writes, and only by appending: the
		 * decoder checks the file itself (gvpush.c). A writer that only
		 * appends leaves nothing to read again either. */
		const bool again = !f->gv && !P->opts->writer_appends;
		uint64_t off = 0;
		for (size_t q = 0; q < f->nseqs; q++) {
			const struct segext *se = &P->seg_ext[f->seqs[q]];
			uint64_t len = 0;
			for (uint32_t k = 0; k < se->n; k++)
				len += se->ext[k].len;
			if (len && again)
				rc.items[rc.n++] = (struct recheck_item){(uint32_t)i, (uint32_t)f->seqs[q],
									 off, len};
			off += len;
		}
		if (off != f->size) {
			free(rc.items);
			return ss_err_set(P->pipe.err, -EIO, "%s: read %llu of %llu bytes (a bug)", f->path,
					  (unsigned long long)off, (unsigned long long)f->size);
		}
	}
	atomic_init(&rc.next, 0);
	atomic_init(&rc.bad, 0);
	atomic_init(&rc.err, 0);
	pthread_t th[SS_MAX_THREADS];
	unsigned nth = 0, want = (unsigned)SS_MIN((size_t)P->b.cfg.threads, rc.n);
	while (nth + 1 < want && pthread_create(&th[nth], NULL, recheck_main, &rc) == 0)
		nth++;
	recheck_main(&rc);
	for (unsigned t = 0; t < nth; t++)
		pthread_join(th[t], NULL);
	free(rc.items);
	size_t bad = atomic_load(&rc.bad);
	int e = atomic_load(&rc.err);
	if (bad)
		return ss_err_set(P->pipe.err, -EAGAIN,
				  "%s was rewritten behind the reader while it was being written "
				  "(no snapshot written)",
				  P->files[bad - 1]->path);
	if (e)
		return ss_err_set(P->pipe.err, e, "cannot re-read the image: %s", strerror(-e));
	return 0;
}

/* Files must be what they were when the push started. */
int push_check_unchanged(struct push *P)
{
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		struct stat st;
		if (f->gv) {
			int r = push_gv_unchanged(P, f);
			if (r)
				return r;
			continue;
		}
		if (fstat(f->fd, &st) < 0)
			return ss_err_set(P->pipe.err, -errno, "cannot stat %s: %s", f->path,
					  strerror(errno));
		int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
		if ((uint64_t)st.st_size != f->size || mt != f->mtime_ns)
			return ss_err_set(P->pipe.err, -EAGAIN,
					  "%s changed while it was being pushed (no snapshot written); "
					  "push it again once it is stable",
					  f->path);
	}
	return 0;
}
