/* Count the pages of a push's files before they are chunked (pageset.h):
 * the threads read each file's data in pieces and hash its non-zero pages;
 * once every page is counted, each piece keeps a bit per page, set where
 * the page is repeated, which is all chunking asks (push_page_repeated).
 *
 * This reads the data twice, but the first pass costs little next to
 * chunking and compressing: it reads 4 MiB pieces into a buffer of huge
 * pages (the push's segment buffers, before the pipeline uses them) and
 * hashes with XXH3-64, ~0.17 CPU-s per GiB from tmpfs (mapping
 * the file instead cost 4x that on a VM, one TLB miss per 4 KiB page, each
 * a nested page walk). Each page is hashed and looked up here only: the
 * workers read its bit. In exchange a repeated page is a
 * page chunk at every occurrence, the first included, so it is stored
 * exactly once, and where pages become chunks depends on the image alone,
 * not on which worker met a page first: the same image chunks the same
 * way twice, which incremental pushes without a parent relies on. Holes are
 * skipped (SEEK_DATA). The scan also keeps a bit per zero page, so that
 * segments do not read long zero runs again (push_zero_scan, walk.c). */
#include "filepush.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define PIECE (4u << 20)
/* A piece fits a segment buffer: segments are never smaller. */
_Static_assert(PIECE <= SS_CHUNK_SEG_DEFAULT, "pagescan piece");

struct scanner;

struct scan {
	struct ss_pageset *set;
	struct ppiece *p;       /* becomes P->pieces */
	int *fd;                /* each piece's file */
	size_t n, cap, fd_cap;
	uint64_t *h;            /* each piece's pages' hashes from bit0 on; 0: zero */
	uint8_t *rep;           /* becomes P->prep */
	uint8_t *zero;          /* becomes P->pzero */
	size_t bits;
	void (*step)(struct scanner *w, size_t i);   /* per piece, in a pass */
	_Atomic size_t next;
};

static int add_range(struct scan *S, int fd, uint64_t off, uint64_t end)
{
	off &= ~(uint64_t)(SS_PAGE_SIZE - 1);
	while (off < end) {
		uint64_t len = SS_MIN((uint64_t)PIECE, end - off);
		/* Bits are numbered in 32 bits: past 16 TiB of data, pages
		 * go uncounted and are chunked as any bytes. */
		if (S->bits > UINT32_MAX - PIECE / SS_PAGE_SIZE)
			return 0;
		if (SS_GROW(S->p, S->cap, S->n + 1, 64) || SS_GROW(S->fd, S->fd_cap, S->n + 1, 64))
			return -ENOMEM;
		/* Each piece's bits start a byte of their own: the threads
		 * that set them never share one. */
		uint32_t np = (uint32_t)(len / SS_PAGE_SIZE);
		S->fd[S->n] = fd;
		S->p[S->n++] = (struct ppiece){.off = off, .len = (uint32_t)len,
					       .bit0 = (uint32_t)S->bits};
		S->bits += (np + 7u) & ~7u;
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
	/* Segment buffers of the push (PIECE bytes each), taken in turn:
	 * the scan is their first touch, shared by its threads. */
	uint8_t *bufs[2];
	unsigned nbufs, turn;
	pthread_t t;
};

/* Read piece i and count its pages. */
static void count_piece(struct scanner *w, size_t i)
{
	struct scan *S = w->S;
	const struct ppiece *p = &S->p[i];
	uint8_t *buf = w->bufs[w->turn++ % w->nbufs];
	ssize_t got = pread(S->fd[i], buf, p->len, (off_t)p->off);
	/* A short or failed read is not fatal: those pages go uncounted
	 * (hash 0, as if zero), and are chunked as usual. */
	uint64_t h[PIECE / SS_PAGE_SIZE];
	uint64_t *all = S->h + p->bit0;
	size_t n = 0, np = p->len / SS_PAGE_SIZE;
	for (size_t k = 0; k < np; k++) {
		size_t at = k * SS_PAGE_SIZE;
		all[k] = 0;
		if (got <= 0 || at + SS_PAGE_SIZE > (size_t)got)
			continue;
		if (ss_is_zero(buf + at, SS_PAGE_SIZE)) {
			/* Bits of a piece start a byte of their own: no other
			 * thread writes this one. */
			S->zero[(p->bit0 + k) / 8] |= (uint8_t)(1u << ((p->bit0 + k) % 8));
		} else {
			/* 0 marks a zero page; the set keys 0 and 1 alike. */
			uint64_t x = XXH3_64bits(buf + at, SS_PAGE_SIZE);
			all[k] = h[n++] = x ? x : 1;
		}
	}
	ss_pageset_add_many(S->set, h, n);
}

/* Once all are counted: piece i's bits. */
static void mark_piece(struct scanner *w, size_t i)
{
	struct scan *S = w->S;
	const struct ppiece *p = &S->p[i];
	ss_pageset_repeated_many(S->set, S->h + p->bit0, p->len / SS_PAGE_SIZE, S->rep + p->bit0 / 8);
}

static void *scan_thread(void *arg)
{
	struct scanner *w = arg;
	for (size_t i; (i = atomic_fetch_add(&w->S->next, 1)) < w->S->n;)
		w->S->step(w, i);
	return NULL;
}

/* step for every piece, on the calling thread and up to nt - 1 more. */
static void run_threads(struct scan *S, struct scanner *w, unsigned nt,
			void (*step)(struct scanner *, size_t))
{
	unsigned started = 0;
	S->step = step;
	atomic_store(&S->next, 0);
	/* The calling thread scans too; extra threads only help. */
	for (unsigned i = 1; i < nt; i++)
		if (pthread_create(&w[i].t, NULL, scan_thread, &w[i]) == 0)
			started = i;
		else
			break;
	scan_thread(&w[0]);
	for (unsigned i = 1; i <= started; i++)
		pthread_join(w[i].t, NULL);
}

/* f's last piece that starts at or before off, or NULL. */
static const struct ppiece *piece_at(const struct push *P, const struct pfile *f, uint64_t off)
{
	size_t lo = f->piece0, hi = (size_t)f->piece0 + f->npieces;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (P->pieces[mid].off <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo == f->piece0 ? NULL : &P->pieces[lo - 1];
}

uint64_t push_zero_scan(const struct push *P, const struct pfile *f, uint64_t off, uint64_t end,
			bool zero)
{
	if (!P->pzero || !f->npieces)
		return zero ? SS_MIN(off, end) : end;
	const struct ppiece *first = &P->pieces[f->piece0], *stop = first + f->npieces;
	const struct ppiece *p = piece_at(P, f, off);
	if (!p)
		p = first;
	for (; off < end; off += SS_PAGE_SIZE) {
		while (p + 1 < stop && (p + 1)->off <= off)
			p++;
		bool z = false;
		if (off >= p->off && off - p->off + SS_PAGE_SIZE <= p->len) {
			size_t b = p->bit0 + (size_t)((off - p->off) / SS_PAGE_SIZE);
			z = P->pzero[b / 8] >> (b % 8) & 1;
		}
		if (z != zero)
			return off;
	}
	return end;
}

bool push_page_repeated(const struct push *P, const struct pfile *f, uint64_t off)
{
	const struct ppiece *p = piece_at(P, f, off);
	if (!p)
		return false;
	uint64_t k = (off - p->off) / SS_PAGE_SIZE;
	if (k >= p->len / SS_PAGE_SIZE)
		return false;
	size_t b = p->bit0 + k;
	return P->prep[b / 8] >> (b % 8) & 1;
}

int push_scan_pages(struct push *P)
{
	struct ss_pageset *set = NULL;
	/* Remembering 2^21 pages (8 GiB of distinct data) costs at most
	 * ~48 MiB, and only until the bits are set; past that, pages are
	 * chunked like any other bytes. */
	int r = ss_pageset_new((size_t)1 << 21, &set);
	struct scan S = {.set = set};
	for (size_t i = 0; i < P->nfiles && !r; i++) {
		struct pfile *f = P->files[i];
		f->piece0 = (uint32_t)S.n;
		r = add_file(&S, f->fd, f->size, f->dense);
		f->npieces = (uint32_t)(S.n - f->piece0);
	}
	/* 8 bytes a page while counting (2 MiB per GiB of data), then a bit. */
	if (!r && S.n && (!(S.h = malloc(S.bits * sizeof(*S.h))) ||
			  !(S.rep = calloc(S.bits / 8, 1)) || !(S.zero = calloc(S.bits / 8, 1))))
		r = -ENOMEM;
	/* The pipeline has not started: its segment buffers are free, so
	 * the scan touches no memory of its own, and it is their first touch
	 * (registering them comes after: push.c, pools_register): each
	 * thread reads into two of them in turn, so that the threads fault
	 * in up to twice their number together. One thread per buffer at
	 * most. */
	unsigned nt = SS_MAX(1u, SS_MIN(SS_MIN(P->b.cfg.threads, P->nsegs), (unsigned)S.n));
	struct scanner *w = calloc(nt, sizeof(*w));
	if (!r && !w)
		r = -ENOMEM;
	for (unsigned i = 0; !r && i < nt; i++) {
		w[i] = (struct scanner){.S = &S, .bufs = {P->segs[i].buf}, .nbufs = 1};
		if (nt + i < P->nsegs)
			w[i].bufs[w[i].nbufs++] = P->segs[nt + i].buf;
	}
	if (!r && S.n) {
		run_threads(&S, w, nt, count_piece);
		/* Read-only from here: marking looks up without locks. */
		ss_pageset_freeze(set);
		run_threads(&S, w, nt, mark_piece);
	}
	free(w);
	free(S.h);
	free(S.fd);
	ss_pageset_free(set);
	if (r) {
		free(S.p);
		free(S.rep);
		free(S.zero);
		return r;
	}
	P->pieces = S.p;
	P->npieces = S.n;
	P->prep = S.rep;
	P->pzero = S.zero;
	P->pages_counted = true;
	return 0;
}
