/* fdigest — whole-file digests, zero pages folded from format 2 (see
 * fdigest.h for the definition). */
#include "fdigest.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "util.h"

#define PAGE 4096u

struct ss_fdigest {
	XXH3_state_t *hs;
	bool folded;            /* format 2 on; else every byte is hashed */
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
	ss_fdigest_reset(d);
	return d;
}

void ss_fdigest_reset(struct ss_fdigest *d)
{
	XXH3_128bits_reset(d->hs);
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

void ss_fdigest_data(struct ss_fdigest *d, const void *src, size_t n)
{
	const uint8_t *p = src;
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
