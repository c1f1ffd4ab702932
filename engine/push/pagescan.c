/* Count the pages of a push's files before they are chunked (pageset.h):
 * the threads map each file's data in pieces and hash its non-zero pages.
 *
 * This reads the data twice, but the first pass costs little next to
 * chunking and compressing: it maps the file (no copy; on tmpfs and in the
 * page cache, the kernel maps 16 pages per fault) and hashes with XXH3-64
 * at memory speed, ~0.1 CPU-s per GiB. In exchange a repeated page is a
 * page chunk at every occurrence, the first included, so it is stored
 * exactly once, and where pages become chunks depends on the image alone,
 * not on which worker met a page first: the same image chunks the same
 * way twice, which incremental pushes without a parent rely on. Holes are
 * skipped (SEEK_DATA); pieces are unmapped as soon as they are hashed, so
 * the mapped data never counts much in the resident set. */
#include "filepush.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PIECE (16u << 20)

struct piece {
	int fd;
	uint64_t off, len;
};

struct scan {
	struct ss_pageset *set;
	struct piece *p;
	size_t n, cap;
	_Atomic size_t next;
	_Atomic int err;
};

static int add_range(struct scan *S, int fd, uint64_t off, uint64_t end)
{
	off &= ~(uint64_t)(SS_PAGE_SIZE - 1);
	while (off < end) {
		uint64_t len = SS_MIN((uint64_t)PIECE, end - off);
		if (S->n == S->cap) {
			size_t ncap = S->cap ? S->cap * 2 : 64;
			void *a = realloc(S->p, ncap * sizeof(*S->p));
			if (!a)
				return -ENOMEM;
			S->p = a;
			S->cap = ncap;
		}
		S->p[S->n++] = (struct piece){.fd = fd, .off = off, .len = len};
		off += len;
	}
	return 0;
}

/* The data ranges of a file; the whole file where the file system cannot
 * say (lseek fails). */
static int add_file(struct scan *S, int fd, uint64_t size)
{
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

static void *scan_thread(void *arg)
{
	struct scan *S = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&S->next, 1);
		if (i >= S->n || atomic_load(&S->err))
			return NULL;
		const struct piece *p = &S->p[i];
		uint8_t *m = mmap(NULL, (size_t)p->len, PROT_READ, MAP_PRIVATE, p->fd, (off_t)p->off);
		if (m == MAP_FAILED) {
			/* Not fatal: the pages go uncounted, chunked as usual. */
			continue;
		}
		madvise(m, (size_t)p->len, MADV_SEQUENTIAL);
		for (size_t at = 0; at + SS_PAGE_SIZE <= p->len; at += SS_PAGE_SIZE)
			if (!ss_is_zero(m + at, SS_PAGE_SIZE))
				ss_pageset_add(S->set, XXH3_64bits(m + at, SS_PAGE_SIZE));
		munmap(m, (size_t)p->len);
	}
}

int push_scan_pages(struct push *P)
{
	struct scan S = {.set = P->pages};
	int r = 0;
	for (size_t i = 0; i < P->nfiles && !r; i++)
		r = add_file(&S, P->files[i]->fd, P->files[i]->size);
	unsigned nt = SS_MAX(1u, SS_MIN(P->b.cfg.threads, (unsigned)S.n));
	pthread_t *t = calloc(nt, sizeof(*t));
	if (!r && !t)
		r = -ENOMEM;
	unsigned started = 0;
	/* The calling thread scans too; extra threads only help. */
	for (unsigned i = 1; !r && i < nt; i++)
		if (pthread_create(&t[i], NULL, scan_thread, &S) == 0)
			started = i;
		else
			break;
	if (!r)
		scan_thread(&S);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(t[i], NULL);
	free(t);
	free(S.p);
	if (!r)
		P->pages_counted = true;
	return r;
}
