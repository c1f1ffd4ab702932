/* fdigest — whole-file digests: zero pages folded from format 2, a sum of
 * leaves from format 5 (see fdigest.h for the definitions). */
#include "fdigest.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include "xxh.h"

#include "util.h"

#define PAGE 4096u
#define LEAF SS_FDIGEST_LEAF

struct ss_fdigest {
	XXH3_state_t *hs;
	bool folded;            /* format 2 on; else every byte is hashed */
	bool sum;               /* format 5 on: leaves summed into acc */
	struct ss_fdacc acc;
	uint64_t pos;           /* format 5: file offset of the next byte */
	bool run_zero;          /* the current run's kind */
	uint64_t run;           /* its length so far (0: no run yet) */
	uint32_t plen;          /* bytes of a page not yet complete, in page */
	uint8_t page[PAGE];
};

/* Format 1 hashes zero runs as bytes, from here. */
static const uint8_t zeros[64 << 10];

struct ss_fdigest *ss_fdigest_new(uint32_t major)
{
	struct ss_fdigest *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->hs = XXH3_createState();
	if (!d->hs) {
		free(d);
		return NULL;
	}
	d->folded = major >= 2;
	d->sum = major >= SS_FDIGEST_SUM_MAJOR;
	ss_fdigest_reset(d);
	return d;
}

void ss_fdigest_reset(struct ss_fdigest *d)
{
	XXH3_128bits_reset(d->hs);
	d->acc = (struct ss_fdacc){0, 0};
	d->pos = 0;
	d->run_zero = false;
	d->run = 0;
	d->plen = 0;
}

void ss_fdigest_free(struct ss_fdigest *d)
{
	if (!d)
		return;
	XXH3_freeState(d->hs);
	free(d);
}

static void end_run(struct ss_fdigest *d)
{
	if (!d->run)
		return;
	uint8_t t[8];
	ss_put_le64(t, d->run << 1 | (d->run_zero ? 1 : 0));
	XXH3_128bits_update(d->hs, t, sizeof(t));
	d->run = 0;
}

/* Whole pages (or the file's last, partial one) of one kind. */
static void add_zero(struct ss_fdigest *d, uint64_t n)
{
	if (!d->run_zero)
		end_run(d);
	d->run_zero = true;
	d->run += n;
}

static void add_data(struct ss_fdigest *d, const uint8_t *p, size_t n)
{
	if (d->run_zero)
		end_run(d);
	d->run_zero = false;
	d->run += n;
	XXH3_128bits_update(d->hs, p, n);
}

static void add_page(struct ss_fdigest *d, const uint8_t *p, size_t n)
{
	if (ss_is_zero(p, n))
		add_zero(d, n);
	else
		add_data(d, p, n);
}

/* Format 5, in order: leaves whole in place, a split one through page[]. */
static void sum_data(struct ss_fdigest *d, const uint8_t *p, size_t n)
{
	while (n) {
		if (d->plen || n < LEAF) {
			size_t k = SS_MIN(n, (size_t)(LEAF - d->plen));
			memcpy(d->page + d->plen, p, k);
			d->plen += (uint32_t)k;
			d->pos += k;
			p += k;
			n -= k;
			if (d->plen == LEAF) {
				ss_fdacc_leaves(&d->acc, d->pos - LEAF, d->page, LEAF);
				d->plen = 0;
			}
			continue;
		}
		size_t whole = n / LEAF * LEAF;
		ss_fdacc_leaves(&d->acc, d->pos, p, whole);
		d->pos += whole;
		p += whole;
		n -= whole;
	}
}

static void sum_zero(struct ss_fdigest *d, uint64_t n)
{
	if (d->plen) {
		size_t k = (size_t)SS_MIN(n, (uint64_t)(LEAF - d->plen));
		sum_data(d, zeros, k);
		n -= k;
		if (d->plen)
			return;   /* n ran out inside the leaf */
	}
	/* Zero leaves add nothing: skipped, whatever their number. */
	d->pos += n / LEAF * LEAF;
	if (n % LEAF)
		sum_data(d, zeros, (size_t)(n % LEAF));
}

void ss_fdigest_data(struct ss_fdigest *d, const void *src, size_t n)
{
	const uint8_t *p = src;
	if (d->sum) {
		sum_data(d, p, n);
		return;
	}
	if (!d->folded) {
		XXH3_128bits_update(d->hs, p, n);
		return;
	}
	while (n) {
		if (d->plen || n < PAGE) {
			/* A page split between calls waits until it is whole. */
			size_t k = SS_MIN(n, (size_t)(PAGE - d->plen));
			memcpy(d->page + d->plen, p, k);
			d->plen += (uint32_t)k;
			p += k;
			n -= k;
			if (d->plen == PAGE) {
				add_page(d, d->page, PAGE);
				d->plen = 0;
			}
			continue;
		}
		/* Whole pages in place, runs of data pages hashed in one go. */
		size_t whole = n / PAGE * PAGE;
		for (size_t i = 0; i < whole;) {
			if (ss_is_zero(p + i, PAGE)) {
				add_zero(d, PAGE);
				i += PAGE;
				continue;
			}
			size_t j = i + PAGE;
			while (j < whole && !ss_is_zero(p + j, PAGE))
				j += PAGE;
			add_data(d, p + i, j - i);
			i = j;
		}
		p += whole;
		n -= whole;
	}
}

void ss_fdigest_zero(struct ss_fdigest *d, uint64_t n)
{
	if (d->sum) {
		sum_zero(d, n);
		return;
	}
	if (!d->folded) {
		while (n) {
			size_t k = (size_t)SS_MIN(n, (uint64_t)sizeof(zeros));
			XXH3_128bits_update(d->hs, zeros, k);
			n -= k;
		}
		return;
	}
	if (d->plen) {
		size_t k = (size_t)SS_MIN(n, (uint64_t)(PAGE - d->plen));
		ss_fdigest_data(d, zeros, k);
		n -= k;
		if (d->plen)
			return;   /* n ran out inside the page */
	}
	if (n >= PAGE)
		add_zero(d, n / PAGE * PAGE);
	if (n % PAGE)
		ss_fdigest_data(d, zeros, (size_t)(n % PAGE));
}

void ss_fdigest_final(struct ss_fdigest *d, uint8_t out[16])
{
	if (d->sum) {
		if (d->plen)   /* the file's last, shorter leaf */
			ss_fdacc_leaves(&d->acc, d->pos - d->plen, d->page, d->plen);
		ss_fdacc_final(&d->acc, d->pos, out);
		ss_fdigest_reset(d);
		return;
	}
	if (d->folded) {
		if (d->plen)
			add_page(d, d->page, d->plen);   /* the file's last page */
		d->plen = 0;
		end_run(d);
	}
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(d->hs));
	memcpy(out, c.digest, 16);
}

/* ------------------------------------------------- format 5: leaf sums */

static void leaf_add(struct ss_fdacc *a, uint64_t idx, const uint8_t *p, size_t n)
{
	if (ss_is_zero(p, n))
		return;
	XXH128_hash_t h = XXH3_128bits_withSeed(p, n, idx);
	struct ss_fdacc v = {h.low64, h.high64};
	ss_fdacc_add(a, &v);
}

void ss_fdacc_leaves(struct ss_fdacc *a, uint64_t off, const void *src, size_t n)
{
	const uint8_t *p = src;
	uint64_t idx = off / LEAF;
	for (size_t i = 0; i < n; i += LEAF, idx++)
		leaf_add(a, idx, p + i, SS_MIN((size_t)LEAF, n - i));
}

void ss_fdacc_final(const struct ss_fdacc *a, uint64_t size, uint8_t out[16])
{
	uint8_t b[24];
	ss_put_le64(b, size);
	ss_put_le64(b + 8, a->lo);
	ss_put_le64(b + 16, a->hi);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits(b, sizeof(b)));
	memcpy(out, c.digest, 16);
}

/* A split leaf: its bytes so far (buf NULL: read back at the end). */
struct pend {
	uint64_t idx;
	uint32_t filled;        /* bytes handed over */
	uint8_t *buf;
};

/* Split leaves kept in memory at once; beyond, read back (~4 MiB). */
#define PEND_KEPT 4096u

struct ss_fdsum {
	pthread_mutex_t mu;
	uint64_t size;
	struct ss_fdacc acc;
	/* Open addressing, linear probing, idx + 1 as the key (0: empty). */
	struct pend *tab;
	size_t cap, used, kept;
	/* ss_fdsum_keep: split leaves the sums sharing it may still keep;
	 * NULL: PEND_KEPT of this sum's own. */
	_Atomic size_t *pool;
};

struct ss_fdsum *ss_fdsum_new(uint64_t size)
{
	struct ss_fdsum *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	pthread_mutex_init(&s->mu, NULL);
	s->size = size;
	return s;
}

void ss_fdsum_keep(struct ss_fdsum *s, _Atomic size_t *pool)
{
	s->pool = pool;
}

/* Room to keep one more split leaf (under s's lock). */
static bool keep_one(struct ss_fdsum *s)
{
	if (!s->pool)
		return s->kept < PEND_KEPT;
	size_t left = atomic_load(s->pool);
	while (left && !atomic_compare_exchange_weak(s->pool, &left, left - 1))
		;
	return left != 0;
}

static void kept_one_less(struct ss_fdsum *s)
{
	s->kept--;
	if (s->pool)
		atomic_fetch_add(s->pool, 1);
}

void ss_fdsum_free(struct ss_fdsum *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->cap; i++)
		free(s->tab[i].buf);
	free(s->tab);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static uint32_t leaf_len(const struct ss_fdsum *s, uint64_t idx)
{
	uint64_t at = idx * LEAF;
	return at >= s->size ? 0 : (uint32_t)SS_MIN((uint64_t)LEAF, s->size - at);
}

static size_t slot_of(const struct ss_fdsum *s, uint64_t idx)
{
	return (size_t)((idx * 0x9e3779b97f4a7c15ull) >> 17) & (s->cap - 1);
}

static int grow(struct ss_fdsum *s)
{
	size_t ncap = s->cap ? 2 * s->cap : 64;
	struct pend *t = calloc(ncap, sizeof(*t));
	if (!t)
		return -ENOMEM;
	struct pend *old = s->tab;
	size_t ocap = s->cap;
	s->tab = t;
	s->cap = ncap;
	for (size_t i = 0; i < ocap; i++) {
		if (!old[i].idx)
			continue;
		size_t j = slot_of(s, old[i].idx - 1);
		while (t[j].idx)
			j = (j + 1) & (ncap - 1);
		t[j] = old[i];
	}
	free(old);
	return 0;
}

/* Remove slot i, shifting back the entries after it that probed past it. */
static void del(struct ss_fdsum *s, size_t i)
{
	size_t j = i;
	for (;;) {
		j = (j + 1) & (s->cap - 1);
		if (!s->tab[j].idx)
			break;
		size_t home = slot_of(s, s->tab[j].idx - 1);
		/* j's entry may fill the hole at i if its home is not in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			s->tab[i] = s->tab[j];
			i = j;
		}
	}
	s->tab[i] = (struct pend){0};
	s->used--;
}

/* Part [at, at + n) of leaf idx (under the lock). */
static int part(struct ss_fdsum *s, uint64_t idx, uint32_t at, const uint8_t *p, uint32_t n)
{
	uint32_t len = leaf_len(s, idx);
	if (!len || at + n > len)
		return 0;   /* past the file's end: not part of it */
	if ((s->used + 1) * 4 > s->cap * 3 && grow(s))
		return -ENOMEM;
	size_t i = slot_of(s, idx);
	while (s->tab[i].idx && s->tab[i].idx != idx + 1)
		i = (i + 1) & (s->cap - 1);
	struct pend *e = &s->tab[i];
	if (!e->idx) {
		*e = (struct pend){.idx = idx + 1};
		s->used++;
		if (keep_one(s)) {
			s->kept++;
			if (!(e->buf = calloc(1, LEAF))) {
				kept_one_less(s);
				del(s, i);
				return -ENOMEM;
			}
		}
	}
	e->filled += n;
	if (!e->buf)
		return 0;   /* read back at the end */
	memcpy(e->buf + at, p, n);
	if (e->filled < len)
		return 0;
	/* Whole (or more, which only a caller's bug could hand over: then
	 * the sum fails to match, as it should). */
	leaf_add(&s->acc, idx, e->buf, len);
	free(e->buf);
	kept_one_less(s);
	del(s, i);
	return 0;
}

int ss_fdsum_datav(struct ss_fdsum *s, uint64_t off, const struct iovec *iov, size_t niov,
		   struct ss_fdacc *local)
{
	uint8_t g[LEAF];        /* a leaf split between buffers, gathered */
	uint32_t gl = 0, gfrom = 0;   /* its bytes so far; where in the leaf they start */
	uint64_t pos = off;     /* the file offset of the next byte */
	int r = 0;
	for (size_t i = 0; i < niov && pos < s->size && !r; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t n = (size_t)SS_MIN((uint64_t)iov[i].iov_len, s->size - pos);
		while (n && !r) {
			uint64_t in = pos % LEAF;
			uint64_t lend = SS_MIN(pos - in + LEAF, s->size);   /* the leaf's end */
			if (!gl && !in && n >= lend - pos) {
				/* Whole leaves in place (the file's last however short). */
				size_t k = pos + n >= s->size ? n : n / LEAF * LEAF;
				ss_fdacc_leaves(local, pos, p, k);
				pos += k;
				p += k;
				n -= k;
				continue;
			}
			if (!gl)
				gfrom = (uint32_t)in;
			size_t k = (size_t)SS_MIN((uint64_t)n, lend - pos);
			memcpy(g + gl, p, k);
			gl += (uint32_t)k;
			pos += k;
			p += k;
			n -= k;
			if (pos < lend)
				continue;
			/* The leaf ends here: whole if it began in these pieces,
			 * else the part the pieces hold. */
			if (!gfrom) {
				leaf_add(local, (pos - 1) / LEAF, g, gl);
			} else {
				pthread_mutex_lock(&s->mu);
				r = part(s, (pos - 1) / LEAF, gfrom, g, gl);
				pthread_mutex_unlock(&s->mu);
			}
			gl = 0;
		}
	}
	if (gl && !r) {
		/* The pieces end inside a leaf: the part they hold. */
		pthread_mutex_lock(&s->mu);
		r = part(s, (pos - 1) / LEAF, gfrom, g, gl);
		pthread_mutex_unlock(&s->mu);
	}
	return r;
}

int ss_fdsum_data(struct ss_fdsum *s, uint64_t off, const void *p, size_t n,
		  struct ss_fdacc *local)
{
	struct iovec v = {(void *)p, n};
	return ss_fdsum_datav(s, off, &v, 1, local);
}

void ss_fdsum_add(struct ss_fdsum *s, const struct ss_fdacc *local)
{
	pthread_mutex_lock(&s->mu);
	ss_fdacc_add(&s->acc, local);
	pthread_mutex_unlock(&s->mu);
}

int ss_fdsum_final(struct ss_fdsum *s, ss_fdsum_read_fn rd, void *arg, uint8_t out[16])
{
	uint8_t buf[LEAF];
	for (size_t i = 0; i < s->cap; i++) {
		struct pend *e = &s->tab[i];
		if (!e->idx)
			continue;
		uint64_t idx = e->idx - 1;
		uint32_t len = leaf_len(s, idx);
		if (e->buf) {
			leaf_add(&s->acc, idx, e->buf, len);
			continue;
		}
		int r = rd(arg, idx * LEAF, buf, len);
		if (r)
			return r;
		leaf_add(&s->acc, idx, buf, len);
	}
	ss_fdacc_final(&s->acc, s->size, out);
	return 0;
}
