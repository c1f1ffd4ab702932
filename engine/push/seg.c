/* ss_push's workers: one segment each, cut into chunks (zero runs
 * skipped, cut points guided by a parent), looked up in the dedup table and
 * claims, and new chunks compressed into frames. */
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

/* ---------------------------------------------------------------- workers */

/* Incompressible input (random data, an image its writer compressed
 * already) would cost zstd's full effort on every frame for nothing. After
 * a frame stored raw, the next frame is first probed: PROBE_SLICES slices
 * from across it, compressed together; only if they shrink by 3 % is the
 * whole frame compressed. Probing costs ~6 % of compressing; compressible
 * input never pays it, since it follows frames that compressed. */
#define PROBE_SLICES 4
#define PROBE_SLICE (16u << 10)
#define PROBE_BYTES (PROBE_SLICES * PROBE_SLICE)

struct wctx {
	ZSTD_CCtx *cc;
	uint8_t *scratch;       /* frame_max bytes, to gather a frame */
	struct ss_buffers *bufs;
	size_t scratch_len;
	bool last_raw;          /* this worker's last frame did not compress */
	uint8_t probe[PROBE_BYTES];
	uint8_t probe_out[ZSTD_COMPRESSBOUND(PROBE_BYTES)];
};

static void wctx_destroy(void *p);

/* NULL unless every part was made (ss_pool_new then fails with -ENOMEM):
 * a worker without its compressor would store every frame raw, hiding
 * that memory ran out. */
static void *wctx_create(void *arg)
{
	struct push *P = arg;
	struct wctx *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->scratch_len = P->b.cfg.frame_max;
	w->bufs = P->b.cfg.bufs;
	w->scratch = ss_bufpool_get(w->bufs, w->scratch_len, false);
	w->cc = ss_frame_cctx(P->b.cfg.zstd_level);
	if (!w->scratch || !w->cc) {
		wctx_destroy(w);
		return NULL;
	}
	return w;
}

static void wctx_destroy(void *p)
{
	struct wctx *w = p;
	if (w) {
		ZSTD_freeCCtx(w->cc);
		ss_bufpool_put(w->bufs, w->scratch, w->scratch_len);
	}
	free(w);
}

static int seg_add_ext(struct seg *s, uint32_t len, uint32_t slot)
{
	if (slot == SS_SLOT_NONE && s->next && s->ext[s->next - 1].slot == SS_SLOT_NONE) {
		s->ext[s->next - 1].len += len;
		return 0;
	}
	if (SS_GROW(s->ext, s->ext_cap, (size_t)s->next + 1, 64))
		return -ENOMEM;
	s->ext[s->next++] = (struct sext){.len = len, .slot = slot};
	return 0;
}

static int seg_add_new(struct seg *s, const struct newc *c)
{
	if (SS_GROW(s->nc, s->nc_cap, (size_t)s->nnc + 1, 64))
		return -ENOMEM;
	s->nc[s->nnc++] = *c;
	return 0;
}

/* Compress the frame of new chunks nc[frame_first..nnc) into the
 * segment's output. Chunks that are neighbours in the segment are
 * compressed in place; others are first gathered into the worker's
 * scratch buffer. A frame that zstd cannot shrink by 5 % is stored as raw
 * chunks: decompressing it would cost time for no space. The destination
 * always has ZSTD_compressBound room (see pools_init): with less, zstd
 * falls back to its buffered streaming path, which costs far more. */
static void frame_flush(struct wctx *w, struct seg *s)
{
	uint32_t n = s->nnc - s->frame_first;
	if (!n)
		return;
	struct newc *c = &s->nc[s->frame_first];
	const uint8_t *src = c[0].raw;
	for (uint32_t i = 1; i < n && src; i++)
		if (c[i].raw != c[i - 1].raw + c[i - 1].raw_len)
			src = NULL;
	if (!src && w && w->scratch) {
		uint32_t at = 0;
		for (uint32_t i = 0; i < n; i++) {
			memcpy(w->scratch + at, c[i].raw, c[i].raw_len);
			at += c[i].raw_len;
		}
		src = w->scratch;
	}
	uint32_t raw = s->frame_raw;
	uint8_t *dst = s->out + s->out_len;
	bool try = src && w && w->cc;
	if (try && w->last_raw && raw >= 2 * PROBE_BYTES) {
		for (uint32_t i = 0; i < PROBE_SLICES; i++)
			memcpy(w->probe + i * PROBE_SLICE,
			       src + (uint64_t)(raw - PROBE_SLICE) * i / (PROBE_SLICES - 1), PROBE_SLICE);
		size_t pz = ZSTD_compress2(w->cc, w->probe_out, sizeof(w->probe_out), w->probe,
					   PROBE_BYTES);
		try = !ZSTD_isError(pz) && pz < PROBE_BYTES - PROBE_BYTES / 32;
	}
	size_t z = try ? ss_frame_compress(w->cc, dst, src, raw) : 0;
	if (w)
		w->last_raw = z == 0;
	if (w && !w->last_raw) {
		uint32_t off = 0;
		for (uint32_t i = 0; i < n; i++) {
			c[i].codec = SS_CODEC_ZSTD;
			c[i].stored = dst;
			c[i].stored_len = (uint32_t)z;
			c[i].frame_off = off;
			c[i].first = i == 0;
			off += c[i].raw_len;
		}
		s->out_len += z;
	} else {
		/* Raw chunks go to the pack straight from the segment buffer,
		 * which stays ours until the segment is packed: the frame's
		 * chunks as one block (sealed as one frame in a sealed store),
		 * each at its place in it. */
		uint32_t off = 0;
		for (uint32_t i = 0; i < n; i++) {
			c[i].codec = SS_CODEC_RAW;
			c[i].stored = c[i].raw;
			c[i].stored_len = c[i].raw_len;
			c[i].frame_off = off;
			c[i].first = i == 0;
			off += c[i].raw_len;
		}
	}
	s->frame_first = s->nnc;
	s->frame_raw = 0;
}

/* ------------------------------------------------------- repeated pages */

/* A page's class, learnt once per segment as chunking reaches it. */
enum { PC_UNKNOWN, PC_DATA, PC_ZERO, PC_REPEAT };

/* Whole pages only: a file's last partial page is never a page chunk. */
static uint8_t page_class(struct push *P, struct seg *s, uint32_t pi)
{
	if (s->pcls[pi])
		return s->pcls[pi];
	const uint8_t *p = s->buf + (size_t)pi * SS_PAGE_SIZE;
	uint8_t c = PC_ZERO;
	if (!ss_is_zero(p, SS_PAGE_SIZE)) {
		c = PC_DATA;
		if (push_page_repeated(P, s->pf, s->off + (uint64_t)pi * SS_PAGE_SIZE)) {
			c = PC_REPEAT;
			ss_chunk_id(&P->b.cfg.ids, p, SS_PAGE_SIZE, s->pid[pi]);
		}
	}
	s->pcls[pi] = c;
	return c;
}

/* How far the content-defined chunk starting at off may reach: to the
 * first repeated page after it, looking no further than a chunk can be,
 * nor past `we`, the end of the data window (a hole after it is zero
 * pages, never repeated ones). The chunker then cuts there as it cuts
 * before a zero page. */
static size_t data_run(struct push *P, struct seg *s, size_t off, size_t we)
{
	size_t end = SS_MIN(we, off + P->b.cfg.chunk.max_size);
	for (size_t pi = (off + SS_PAGE_SIZE - 1) / SS_PAGE_SIZE;
	     (pi + 1) * SS_PAGE_SIZE <= we && pi * SS_PAGE_SIZE < end; pi++)
		if (page_class(P, s, (uint32_t)pi) == PC_REPEAT)
			return pi * SS_PAGE_SIZE - off;
	return we - off;
}

/* The per-page arrays of a segment buffer, made on its first use. */
static int pages_prepare(struct push *P, struct seg *s)
{
	size_t n = P->b.cfg.chunk.seg_size / SS_PAGE_SIZE + 1;
	if (!s->pcls) {
		s->pcls = malloc(n);
		s->pid = malloc(n * sizeof(*s->pid));
		if (!s->pcls || !s->pid) {
			free(s->pcls);
			free(s->pid);
			s->pcls = NULL;
			s->pid = NULL;
			return -ENOMEM;
		}
	}
	memset(s->pcls, PC_UNKNOWN, (s->len + SS_PAGE_SIZE - 1) / SS_PAGE_SIZE);
	return 0;
}

/* Would plain chunking, with this image's page classes, cut a chunk of len
 * bytes at off (given the bytes are the guide's)? Pages become chunks by
 * their counts in this image, which may differ from the parent's: a
 * parent's chunk may now hold a repeated page, or have been cut short by a
 * page chunk that is an ordinary page now. `next` is the guide's following
 * extent, if any. */
static bool guide_pages_agree(struct push *P, struct seg *s, size_t off, size_t len, size_t we,
			      const struct ss_mextent *next)
{
	if (off % SS_PAGE_SIZE == 0 && we - off >= SS_PAGE_SIZE &&
	    page_class(P, s, (uint32_t)(off / SS_PAGE_SIZE)) == PC_REPEAT)
		return len == SS_PAGE_SIZE;
	size_t lim = data_run(P, s, off, we);
	if (len >= lim)
		return len == lim;
	/* Cut short of where plain chunking must stop: by content, unless the
	 * parent cut there for a page chunk that is none here. */
	return !(next && next->chunk && next->len == SS_PAGE_SIZE &&
		 (s->off + off + len) % SS_PAGE_SIZE == 0);
}

/* Predict the extent at `off` from the guide snapshot: when the parent has
 * a chunk starting at the same file offset and these bytes hash to its id,
 * FastCDC would cut exactly there too (a cut depends only on the chunk's
 * own bytes), so the gear-hash scan is skipped and the id hash, needed
 * anyway, is the only pass over the bytes. Cuts the parent was forced to
 * make by its end of file, or by a zero page that is no longer zero, are
 * not trusted. The result is always what ss_chunk_next would return; the
 * engine test checks that. Returns true with *e and *id filled. */
static bool guide_next(struct push *P, const struct pfile *f, struct seg *s, size_t off,
		       size_t we, size_t *k, struct ss_extent *e, XXH128_canonical_t *id)
{
	const struct ss_mfile *gf = f->gf;
	if (!gf)
		return false;
	uint64_t x = s->off + off;
	while (*k < gf->next && f->gstart[*k] < x)
		(*k)++;
	if (*k >= gf->next || f->gstart[*k] != x || !gf->ext[*k].chunk)
		return false;
	uint64_t len = gf->ext[*k].len;
	if (off + len > we)
		return false;   /* past the segment, or into a hole */
	if (off + len < s->len) {
		/* The new data goes on past the cut: the parent's cut must not
		 * have been forced by its end or by a zero page now gone (a
		 * hole that follows is zero). */
		if (*k + 1 >= gf->next)
			return false;
		if (!gf->ext[*k + 1].chunk && off + len < we) {
			size_t z = SS_MIN((size_t)SS_PAGE_SIZE, we - off - len);
			if (!ss_is_zero(s->buf + off + len, z))
				return false;
		}
	}
	if (P->pages_counted &&
	    !guide_pages_agree(P, s, off, len, we, *k + 1 < gf->next ? &gf->ext[*k + 1] : NULL))
		return false;
	ss_chunk_id(&P->b.cfg.ids, s->buf + off, len, id->digest);
	if (memcmp(id->digest, P->guide->chunks[gf->ext[*k].chunk - 1].id, 16) != 0)
		return false;
	e->len = len;
	e->kind = SS_EXTENT_CHUNK;
	return true;
}

static int add_foreign(struct push *P, const struct foreign *f)
{
	pthread_mutex_lock(&P->foreign_mu);
	int r = SS_GROW(P->foreign, P->foreign_cap, P->nforeign + 1, 256) ? -ENOMEM : 0;
	if (!r)
		P->foreign[P->nforeign++] = *f;
	pthread_mutex_unlock(&P->foreign_mu);
	return r;
}

/* Read a segment the loop left to this worker (s->wread: a whole small
 * file of a memory file system). With 2,000 small files the loop thread,
 * which opens each one, was the push's critical path; their reads now go
 * to the workers beside it. 0 or -errno, s->werr set. */
static int seg_read(struct seg *s)
{
	const struct pfile *f = s->pf;
	for (uint32_t i = 0; i < s->nwin; i++) {
		const struct swin *win = &s->win[i];
		for (uint32_t got = 0; got < win->len;) {
			ssize_t n = pread(f->fd, s->buf + win->off + got, win->len - got,
					  (off_t)(s->off + win->off + got));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return ss_err_set(&s->werr, -errno, "cannot read %s: %s", f->path,
						  strerror(errno));
			if (n == 0)
				return ss_err_set(&s->werr, -EIO,
						  "%s shrank while it was being pushed (no snapshot "
						  "written)",
						  f->path);
			got += (uint32_t)n;
		}
	}
	return 0;
}

void push_seg_work(struct ss_task *t, void *wp)
{
	struct seg *s = (struct seg *)t;
	struct push *P = s->P;
	struct wctx *w = wp;
	size_t off = 0;
	int r = 0;
	s->next = s->nnc = s->nc_done = 0;
	s->frame_first = s->frame_raw = 0;
	s->out_len = 0;
	s->zero_bytes = s->chunk_bytes = s->chunks = 0;
	const struct pfile *f = s->pf;
	if (s->wread && (s->err = seg_read(s)))
		return;
	/* The segment's part of its file's digest: the windows' leaves (the
	 * holes between them add nothing). Windows are whole pages at page
	 * offsets, and a segment ends at a multiple of seg_size or at the
	 * file's end, so no leaf is split between two of them. */
	s->dacc = (struct ss_fdacc){0, 0};
	for (uint32_t i = 0; i < s->nwin; i++)
		ss_fdacc_leaves(&s->dacc, s->off + s->win[i].off, s->buf + s->win[i].off,
				s->win[i].len);
	/* Segments start at multiples of seg_size, so segment offsets that
	 * are page multiples are file offsets that are. */
	bool pages = P->pages_counted && s->off % SS_PAGE_SIZE == 0 && s->nwin &&
		     s->len <= P->b.cfg.chunk.seg_size;
	if (pages && (r = pages_prepare(P, s)))
		goto failed;
	/* The guide's first extent at or after this segment. */
	size_t k = 0, hi = f->gf ? f->gf->next : 0;
	while (k < hi) {
		size_t mid = k + (hi - k) / 2;
		if (f->gstart[mid] < s->off)
			k = mid + 1;
		else
			hi = mid;
	}
	uint32_t wi = 0;
	while (off < s->len) {
		/* Up to the next window, or the end: a hole of the source, zero
		 * and not read. */
		size_t ws = wi < s->nwin ? s->win[wi].off : s->len;
		if (off < ws) {
			s->zero_bytes += ws - off;
			if ((r = seg_add_ext(s, (uint32_t)(ws - off), SS_SLOT_NONE)))
				break;
			off = ws;
			continue;
		}
		size_t we = (size_t)s->win[wi].off + s->win[wi].len;
		if (off >= we) {
			wi++;
			continue;
		}
		/* A window's end cuts as the segment's end does: a hole that
		 * follows starts with a zero page, which would end the chunk
		 * there, so the extents are those of the same bytes read whole. */
		struct ss_extent e;
		XXH128_canonical_t c;
		bool hashed = guide_next(P, f, s, off, we, &k, &e, &c);
		size_t lim = we - off;
		if (!hashed && pages) {
			/* A page the file repeats is a chunk of its own;
			 * content-defined chunks stop short of it. */
			if (off % SS_PAGE_SIZE == 0 && lim >= SS_PAGE_SIZE &&
			    page_class(P, s, (uint32_t)(off / SS_PAGE_SIZE)) == PC_REPEAT) {
				e.len = SS_PAGE_SIZE;
				e.kind = SS_EXTENT_CHUNK;
				memcpy(c.digest, s->pid[off / SS_PAGE_SIZE], 16);
				hashed = true;
			} else {
				lim = data_run(P, s, off, we);
			}
		}
		if (!hashed) {
			r = ss_chunk_next(&P->chunker, s->buf + off, lim, s->off + off, true, &e);
			if (r != 1) {
				r = r < 0 ? r : -EIO;
				break;
			}
		}
		r = 0;
		if (e.kind == SS_EXTENT_ZERO) {
			s->zero_bytes += e.len;
			r = seg_add_ext(s, (uint32_t)e.len, SS_SLOT_NONE);
		} else {
			const uint8_t *p = s->buf + off;
			if (!hashed)
				ss_chunk_id(&P->b.cfg.ids, p, e.len, c.digest);
			uint32_t slot;
			bool is_new;
			r = ss_dedup_claim(P->b.dedup, c.digest, (uint32_t)e.len, &slot, &is_new);
			uint32_t ref;
			if (!r && is_new && P->b.claims &&
			    ss_claims_claim(P->b.claims, c.digest, &ref) == SS_CLAIM_THEIRS) {
				/* Another push is storing it: push_resolve_foreign. */
				struct foreign fo = {.slot = slot, .ref = ref, .pf = s->pf,
						     .len = (uint32_t)e.len, .off = s->off + off};
				r = add_foreign(P, &fo);
				is_new = false;
			}
			if (!r && is_new) {
				if (s->frame_raw + e.len > P->b.cfg.frame_max)
					frame_flush(w, s);
				struct newc nc = {.slot = slot, .raw = p, .raw_len = (uint32_t)e.len};
				r = seg_add_new(s, &nc);
				s->frame_raw += (uint32_t)e.len;
			}
			if (!r)
				r = seg_add_ext(s, (uint32_t)e.len, slot);
			s->chunk_bytes += e.len;
			s->chunks++;
		}
		if (r)
			break;
		off += e.len;
	}
	if (!r)
		frame_flush(w, s);
failed:
	if (r)
		ss_err_set(&s->werr, r, "chunking %s at offset %llu: %s", s->pf->name,
			   (unsigned long long)(s->off + off), strerror(-r));
	s->err = r;
}

size_t push_wctx_compress(void *wctx, uint8_t *dst, const uint8_t *src, uint32_t len)
{
	return ss_frame_compress(((struct wctx *)wctx)->cc, dst, src, len);
}

const struct ss_worker_ctx_ops push_wctx_ops = {.create = wctx_create,
					      .destroy = wctx_destroy};
