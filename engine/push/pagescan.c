/* Count the pages of a push's files before they are chunked (pageset.h):
 * the threads read each file's data in pieces and hash its non-zero pages.
 *
 * This reads the data twice, but the first pass costs little next to
 * chunking and compressing: it reads 4 MiB pieces into a buffer of huge
 * pages (the push's segment buffers, before the pipeline uses them) and
 * hashes with XXH3-64, ~0.17 CPU-s per GiB from tmpfs (mapping
 * the file instead cost 4x that on a VM, one TLB miss per 4 KiB page, each
 * a nested page walk). In exchange a repeated page is a
 * page chunk at every occurrence, the first included, so it is stored
 * exactly once, and where pages become chunks depends on the image alone,
 * not on which worker met a page first: the same image chunks the same
 * way twice, which incremental pushes without a parent rely on. Holes are
 * skipped (SEEK_DATA). */
#include "filepush.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define PIECE (4u << 20)
/* A piece fits a segment buffer: segments are never smaller. */
_Static_assert(PIECE <= SS_CHUNK_SEG_DEFAULT, "pagescan piece");

struct piece {
	int fd;
	uint64_t off, len;
};

struct scan {
	struct ss_pageset *set;
	struct piece *p;
	size_t n, cap;
	_Atomic size_t next;
};

static int add_range(struct scan *S, int fd, uint64_t off, uint64_t end)
{
	off &= ~(uint64_t)(SS_PAGE_SIZE - 1);
	while (off < end) {
		uint64_t len = SS_MIN((uint64_t)PIECE, end - off);
		if (SS_GROW(S->p, S->cap, S->n + 1, 64))
			return -ENOMEM;
		S->p[S->n++] = (struct piece){.fd = fd, .off = off, .len = len};
		off += len;
	}
	return 0;
}

/* The data ranges of a file; the whole file where the file system cannot
 * say (lseek fails), or where it has no holes to find (dense: as many
 * bytes allocated as it is long), which spares small files two calls. */
static int add_file(struct scan *S, int fd, uint64_t size, bool dense)
{
	/* No whole page to count: not worth a read (most files of a CRIU
	 * image directory are a few hundred bytes). */
	if (size < SS_PAGE_SIZE)
		return 0;
	if (dense)
		return add_range(S, fd, 0, size);
	uint64_t off = 0;
	while (off < size) {
		off_t d = lseek(fd, (off_t)off, SEEK_DATA);
		if (d < 0)
			return errno == ENXIO ? 0 : add_range(S, fd, off, size);
		off_t h = lseek(fd, d, SEEK_HOLE);
		uint64_t end = h < 0 ? size : SS_MIN((uint64_t)h, size);
		int r = add_range(S, fd, (uint64_t)d, end);
		if (r)
			return r;
		off = end;
	}
	return 0;
}

struct scanner {
	struct scan *S;
	uint8_t *buf;   /* PIECE bytes: a segment buffer of the push */
	pthread_t t;
};

static void *scan_thread(void *arg)
{
	struct scanner *w = arg;
	struct scan *S = w->S;
	for (;;) {
		size_t i = atomic_fetch_add(&S->next, 1);
		if (i >= S->n)
			break;
		const struct piece *p = &S->p[i];
		ssize_t got = pread(p->fd, w->buf, (size_t)p->len, (off_t)p->off);
		/* A short or failed read is not fatal: those pages go
		 * uncounted, and are chunked as usual. */
		uint64_t h[PIECE / SS_PAGE_SIZE];
		size_t n = 0;
		for (size_t at = 0; got > 0 && at + SS_PAGE_SIZE <= (size_t)got; at += SS_PAGE_SIZE)
			if (!ss_is_zero(w->buf + at, SS_PAGE_SIZE))
				h[n++] = XXH3_64bits(w->buf + at, SS_PAGE_SIZE);
		ss_pageset_add_many(S->set, h, n);
	}
	return NULL;
}

int push_scan_pages(struct push *P)
{
	struct scan S = {.set = P->pages};
	int r = 0;
	for (size_t i = 0; i < P->nfiles && !r; i++)
		r = add_file(&S, P->files[i]->fd, P->files[i]->size, P->files[i]->dense);
	/* The pipeline has not started: its segment buffers are free, and
	 * already faulted in (registered), so the scan touches no memory of
	 * its own. One thread per buffer at most. */
	unsigned nt = SS_MAX(1u, SS_MIN(SS_MIN(P->b.cfg.threads, P->nsegs), (unsigned)S.n));
	struct scanner *w = calloc(nt, sizeof(*w));
	if (!r && !w)
		r = -ENOMEM;
	unsigned started = 0;
	for (unsigned i = 0; !r && i < nt; i++)
		w[i] = (struct scanner){.S = &S, .buf = P->segs[i].buf};
	/* The calling thread scans too; extra threads only help. */
	for (unsigned i = 1; !r && i < nt; i++)
		if (pthread_create(&w[i].t, NULL, scan_thread, &w[i]) == 0)
			started = i;
		else
			break;
	if (!r)
		scan_thread(&w[0]);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(w[i].t, NULL);
	free(w);
	free(S.p);
	if (!r) {
		/* Read-only from here: workers count without locks. */
		ss_pageset_freeze(P->pages);
		P->pages_counted = true;
	}
	return r;
}
