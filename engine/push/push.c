/* Push: files → segments read through io_uring → workers (zero pages,
 * FastCDC, XXH3-128, dedup, zstd) → packs → store → manifest, last.
 *
 * The loop thread reads fixed-size segments with many reads in flight,
 * hashes each file's bytes in order for its whole-file digest, and hands
 * each segment to a worker. Segments are independent units of chunking
 * (extents never cross a segment boundary), so workers need no carry-over
 * between them. A worker returns the segment's extents and its new chunks,
 * already compressed; the loop copies those into the current pack and
 * uploads full packs. Memory is bounded by the segment pool and the pack
 * buffers: a slow store parks finished segments, which stops reads.
 */
#include "push.h"

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

struct sext {
	uint32_t len;
	uint32_t slot;          /* SS_SLOT_NONE: zero run */
};

/* A chunk this push stores. Chunks compressed together share their stored
 * bytes and stored_len (their frame) and differ in frame_off. */
struct newc {
	uint32_t slot;
	uint32_t stored_len;
	uint32_t frame_off;
	uint32_t raw_len;
	uint8_t codec;
	bool first;             /* first chunk of its frame */
	const uint8_t *raw;     /* the chunk's bytes in the segment */
	const uint8_t *stored;  /* what goes into the pack (in out, or raw) */
};

struct push;

struct seg {
	struct ss_task task;    /* worker: seg_work; loop: seg_done */
	struct ss_op rop;       /* read completions */
	struct push *P;
	unsigned idx;           /* index in the pool (registered buffer) */
	uint32_t file;
	uint64_t off;
	uint32_t len, got;
	uint64_t seq;
	uint8_t *buf;
	uint8_t *out;
	size_t out_len;
	struct sext *ext;
	uint32_t next, ext_cap;
	struct newc *nc;
	uint32_t nnc, nc_cap, nc_done;
	uint32_t frame_first;   /* first newc of the frame being built */
	uint32_t frame_raw;     /* its raw bytes so far */
	uint64_t zero_bytes, chunk_bytes, chunks;
	int err;
	struct ss_err werr;
	struct seg *next_free;
	struct seg *next_parked;
};

struct pfile {
	char *path;
	char *name;
	uint64_t size;
	uint32_t mode;
	int64_t mtime_ns;
	int fd;
	XXH3_state_t *hs;
	uint8_t digest[16];
	uint64_t *seqs;          /* the file's segments, in file order */
	size_t nseqs, seqs_cap;
	uint64_t read_off;
	uint64_t avail;          /* bytes that may be read now (follow mode) */
	/* The same file in the guide (parent) snapshot, with each extent's
	 * start offset, for predicting cut points. */
	const struct ss_mfile *gf;
	uint64_t *gstart;
};

struct segext {
	struct sext *ext;
	uint32_t n;
};

/* A chunk another push on this host claimed (claims.h): where one copy of
 * it is in our source, should we have to store it after all. */
struct foreign {
	uint32_t slot;           /* our dedup entry, pack SS_PACK_PENDING */
	uint32_t ref;            /* its claims entry */
	uint32_t file;
	uint32_t len;
	uint64_t off;
};

struct push {
	struct ss_pushbase b;         /* config, loop, store, claims, dedup */
	const struct ss_push_opts *opts;
	struct ss_pool *pool;
	struct ss_chunker chunker;
	struct ss_manifest *guide;   /* a parent chunked with our parameters */
	struct ss_err *err;
	bool failed;

	struct pfile *files;
	size_t nfiles, files_cap;
	bool root_is_dir;
	uint64_t total_bytes;
	/* Follow mode: the files are still being written. */
	bool follow, writer_done;
	uint64_t last_scan_ns;
	struct ss_op tick;       /* a timeout, so the loop wakes to poll */
	bool tick_armed;

	struct seg *segs;
	unsigned nsegs;
	uint8_t *seg_mem, *out_mem;
	size_t seg_mem_len, out_mem_len;
	struct seg *free_segs;
	bool fixed_bufs;

	/* Reading position */
	size_t rd_file;
	uint64_t next_seq;
	unsigned reads_inflight, tasks_inflight;

	/* In-order hashing: finished reads wait here by seq. */
	struct seg **hold;
	uint64_t next_hash_seq;

	struct segext *seg_ext;  /* by seq, grown as segments are issued */
	size_t seg_ext_cap;

	/* Finished segments waiting for pack space, in order. */
	struct seg *parked_head, *parked_tail;

	struct ss_packer *packer;
	struct ss_packer_chunk *fc;   /* the frame being packed */
	uint32_t fc_cap;

	/* Chunks other pushes on this host claimed (P->b.claims). */
	pthread_mutex_t foreign_mu;
	struct foreign *foreign;
	size_t nforeign, foreign_cap;

	struct ss_stats *st;
	uint64_t chunk_bytes;
	struct ss_progress prog;
	struct ss_ticker ticker;
};

/* ---------------------------------------------------------------- files */

static int add_file(struct push *P, const char *path, const char *name, const struct stat *st)
{
	for (size_t i = 0; P->follow && i < P->nfiles; i++)
		if (strcmp(P->files[i].name, name) == 0)
			return 0;   /* a rescan found it again */
	if (P->nfiles == P->files_cap) {
		size_t ncap = P->files_cap ? P->files_cap * 2 : 16;
		void *a = realloc(P->files, sizeof(*P->files) * ncap);
		if (!a)
			return -ENOMEM;
		P->files = a;
		P->files_cap = ncap;
	}
	struct pfile *f = &P->files[P->nfiles];
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->path = strdup(path);
	f->name = strdup(name);
	P->nfiles++;
	if (!f->path || !f->name)
		return -ENOMEM;
	f->size = f->avail = (uint64_t)st->st_size;
	f->mode = st->st_mode & 07777;
	f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return ss_err_set(P->err, -errno, "cannot open %s: %s", path, strerror(errno));
	f->hs = XXH3_createState();
	if (!f->hs)
		return -ENOMEM;
	XXH3_128bits_reset(f->hs);
	/* Tell the kernel we read each file once, front to back. */
	posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	return 0;
}

static int cmp_pfile(const void *a, const void *b)
{
	return strcmp(((const struct pfile *)a)->name, ((const struct pfile *)b)->name);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Walk a directory in name order so that a snapshot's file order, and so
 * its manifest, does not depend on readdir order. */
static int walk_dir(struct push *P, const char *dir, const char *rel, int depth)
{
	if (depth > 64)
		return ss_err_set(P->err, -ELOOP, "directory tree too deep at %s", dir);
	DIR *d = opendir(dir);
	if (!d)
		return ss_err_set(P->err, -errno, "cannot open directory %s: %s", dir,
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
			r = ss_err_set(P->err, -ENAMETOOLONG, "path too long: %s/%s", dir, names[i]);
			break;
		}
		struct stat st;
		if (lstat(path, &st) < 0) {
			r = ss_err_set(P->err, -errno, "cannot stat %s: %s", path, strerror(errno));
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			r = walk_dir(P, path, name, depth + 1);
		} else if (S_ISREG(st.st_mode)) {
			if (!ss_manifest_name_ok(name))
				r = ss_err_set(P->err, -EINVAL,
					       "cannot store file name '%s' (control characters?)",
					       name);
			else
				r = add_file(P, path, name, &st);
		} else {
			r = ss_err_set(P->err, -EINVAL,
				       "%s is not a regular file or directory (snapshots hold "
				       "regular files only)",
				       path);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (r == -ENOMEM)
		ss_err_set(P->err, r, "out of memory");
	return r;
}

static int collect_files(struct push *P)
{
	const char *src = P->opts->source;
	struct stat st;
	if (stat(src, &st) < 0)
		return ss_err_set(P->err, errno == ENOENT ? -ENOENT : -errno, "cannot read %s: %s",
				  src, strerror(errno));
	int r;
	if (S_ISDIR(st.st_mode)) {
		P->root_is_dir = true;
		r = walk_dir(P, src, "", 0);
	} else if (S_ISREG(st.st_mode)) {
		const char *base = strrchr(src, '/');
		base = base ? base + 1 : src;
		if (!ss_manifest_name_ok(base))
			return ss_err_set(P->err, -EINVAL, "cannot store file name '%s'", base);
		r = add_file(P, src, base, &st);
		if (r)
			ss_err_set(P->err, r, "out of memory");
	} else {
		return ss_err_set(P->err, -EINVAL, "%s is not a regular file or directory", src);
	}
	if (r)
		return r;
	for (size_t i = 0; i < P->nfiles; i++)
		P->total_bytes += P->files[i].size;
	return 0;
}

/* Follow mode: pick up new files and growth. While the writer is active
 * only whole segments are read, so the cut points are those of a push of
 * the finished files; the rest is read once the writer is done. */
static int follow_poll(struct push *P)
{
	uint64_t now = ss_now_ns();
	int st = P->opts->writer_status(P->opts->writer_arg);
	if (st < 0)
		return ss_err_set(P->err, st, "the checkpointer failed; no snapshot written");
	bool done = st > 0;
	if (P->root_is_dir && (done || now - P->last_scan_ns > 20000000ull)) {
		P->last_scan_ns = now;
		int r = walk_dir(P, P->opts->source, "", 0);
		if (r)
			return r;
	}
	P->total_bytes = 0;
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = &P->files[i];
		struct stat sb;
		if (fstat(f->fd, &sb) < 0)
			return ss_err_set(P->err, -errno, "cannot stat %s: %s", f->path,
					  strerror(errno));
		if ((uint64_t)sb.st_size < f->read_off)
			return ss_err_set(P->err, -EIO, "%s shrank while it was being written",
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
	size_t scratch_len;
	bool last_raw;          /* this worker's last frame did not compress */
	uint8_t probe[PROBE_BYTES];
	uint8_t probe_out[ZSTD_COMPRESSBOUND(PROBE_BYTES)];
};

static void *wctx_create(void *arg)
{
	struct push *P = arg;
	struct wctx *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->scratch_len = P->b.cfg.frame_max;
	w->scratch = ss_map_alloc(w->scratch_len);
	w->cc = ss_frame_cctx(P->b.cfg.zstd_level);
	return w;
}

static void wctx_destroy(void *p)
{
	struct wctx *w = p;
	if (w) {
		ZSTD_freeCCtx(w->cc);
		ss_map_free(w->scratch, w->scratch_len);
	}
	free(w);
}

static int seg_add_ext(struct seg *s, uint32_t len, uint32_t slot)
{
	if (slot == SS_SLOT_NONE && s->next && s->ext[s->next - 1].slot == SS_SLOT_NONE) {
		s->ext[s->next - 1].len += len;
		return 0;
	}
	if (s->next == s->ext_cap) {
		uint32_t ncap = s->ext_cap ? s->ext_cap * 2 : 64;
		void *a = realloc(s->ext, sizeof(*s->ext) * ncap);
		if (!a)
			return -ENOMEM;
		s->ext = a;
		s->ext_cap = ncap;
	}
	s->ext[s->next++] = (struct sext){.len = len, .slot = slot};
	return 0;
}

static int seg_add_new(struct seg *s, const struct newc *c)
{
	if (s->nnc == s->nc_cap) {
		uint32_t ncap = s->nc_cap ? s->nc_cap * 2 : 64;
		void *a = realloc(s->nc, sizeof(*s->nc) * ncap);
		if (!a)
			return -ENOMEM;
		s->nc = a;
		s->nc_cap = ncap;
	}
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
		 * which stays ours until the segment is packed. */
		for (uint32_t i = 0; i < n; i++) {
			c[i].codec = SS_CODEC_RAW;
			c[i].stored = c[i].raw;
			c[i].stored_len = c[i].raw_len;
			c[i].frame_off = 0;
			c[i].first = true;
		}
	}
	s->frame_first = s->nnc;
	s->frame_raw = 0;
}

/* Predict the extent at `off` from the guide snapshot: when the parent has
 * a chunk starting at the same file offset and these bytes hash to its id,
 * FastCDC would cut exactly there too (a cut depends only on the chunk's
 * own bytes), so the gear-hash scan is skipped and the id hash, needed
 * anyway, is the only pass over the bytes. Cuts the parent was forced to
 * make by its end of file, or by a zero page that is no longer zero, are
 * not trusted. The result is always what ss_chunk_next would return; the
 * engine test checks that. Returns true with *e and *id filled. */
static bool guide_next(struct push *P, const struct pfile *f, const struct seg *s, size_t off,
		       size_t *k, struct ss_extent *e, XXH128_canonical_t *id)
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
	if (off + len > s->len)
		return false;
	if (off + len < s->len) {
		/* The new data goes on past the cut: the parent's cut must not
		 * have been forced by its end or by a zero page now gone. */
		if (*k + 1 >= gf->next)
			return false;
		if (!gf->ext[*k + 1].chunk) {
			size_t z = SS_MIN((size_t)SS_PAGE_SIZE, s->len - off - len);
			if (!ss_is_zero(s->buf + off + len, z))
				return false;
		}
	}
	ss_chunk_id(&P->b.cfg.ids, s->buf + off, len, id->digest);
	if (memcmp(id->digest, P->guide->chunks[gf->ext[*k].chunk - 1].id, 16) != 0)
		return false;
	e->len = len;
	e->kind = SS_EXTENT_CHUNK;
	return true;
}

static int add_foreign(struct push *P, const struct foreign *f)
{
	int r = 0;
	pthread_mutex_lock(&P->foreign_mu);
	if (P->nforeign == P->foreign_cap) {
		size_t ncap = P->foreign_cap ? P->foreign_cap * 2 : 256;
		void *a = realloc(P->foreign, sizeof(*P->foreign) * ncap);
		if (a) {
			P->foreign = a;
			P->foreign_cap = ncap;
		} else {
			r = -ENOMEM;
		}
	}
	if (!r)
		P->foreign[P->nforeign++] = *f;
	pthread_mutex_unlock(&P->foreign_mu);
	return r;
}

static void seg_work(struct ss_task *t, void *wp)
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
	const struct pfile *f = &P->files[s->file];
	/* The guide's first extent at or after this segment. */
	size_t k = 0, hi = f->gf ? f->gf->next : 0;
	while (k < hi) {
		size_t mid = k + (hi - k) / 2;
		if (f->gstart[mid] < s->off)
			k = mid + 1;
		else
			hi = mid;
	}
	while (off < s->len) {
		struct ss_extent e;
		XXH128_canonical_t c;
		bool hashed = guide_next(P, f, s, off, &k, &e, &c);
		if (!hashed) {
			r = ss_chunk_next(&P->chunker, s->buf + off, s->len - off, s->off + off, true,
					  &e);
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
				/* Another push is storing it: resolve_foreign. */
				struct foreign fo = {.slot = slot, .ref = ref, .file = s->file,
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
	if (r)
		ss_err_set(&s->werr, r, "chunking %s at offset %llu: %s", P->files[s->file].name,
			   (unsigned long long)(s->off + off), strerror(-r));
	s->err = r;
}

/* ---------------------------------------------------------------- packs */

static void fail(struct push *P, int r, const char *what)
{
	if (!P->failed) {
		P->failed = true;
		ss_err_set(P->err, r, "%s: %s", what, strerror(-r));
	}
}

static void fail_msg(struct push *P, int r, const char *msg)
{
	if (!P->failed) {
		P->failed = true;
		ss_err_set(P->err, r, "%s", msg);
	}
}

/* Move a segment's new chunks into packs, a frame at a time (raw chunks
 * each on their own). Returns false when it had to stop for a free pack
 * buffer (the segment stays parked and resumes at a frame boundary). */
static bool seg_pack(struct push *P, struct seg *s)
{
	while (s->nc_done < s->nnc) {
		const struct newc *c = &s->nc[s->nc_done];
		uint32_t n = 1;
		while (s->nc_done + n < s->nnc && !c[n].first)
			n++;
		if (n > P->fc_cap) {
			void *a = realloc(P->fc, sizeof(*P->fc) * n);
			if (!a) {
				fail(P, -ENOMEM, "cannot pack a frame");
				return true;
			}
			P->fc = a;
			P->fc_cap = n;
		}
		for (uint32_t i = 0; i < n; i++)
			P->fc[i] = (struct ss_packer_chunk){.slot = c[i].slot,
							    .frame_off = c[i].frame_off};
		struct ss_err e = {0};
		int r = ss_packer_add(P->packer, c->stored, c->stored_len, c->codec, P->fc, n, &e);
		if (r == -EAGAIN)
			return false;   /* every pack buffer is uploading */
		if (r) {
			fail_msg(P, r, e.msg);
			return true;
		}
		s->nc_done += n;
	}
	return true;
}

static void seg_release(struct push *P, struct seg *s)
{
	/* The extents now belong to the snapshot being built. */
	P->seg_ext[s->seq] = (struct segext){.ext = s->ext, .n = s->next};
	s->ext = NULL;
	s->next = s->ext_cap = 0;
	s->next_free = P->free_segs;
	P->free_segs = s;
}

static void drain_parked(struct push *P)
{
	while (P->parked_head && !P->failed) {
		struct seg *s = P->parked_head;
		if (!seg_pack(P, s))
			return;
		P->parked_head = s->next_parked;
		if (!P->parked_head)
			P->parked_tail = NULL;
		seg_release(P, s);
	}
}

/* A pack put finished: a free buffer may let parked segments go on. */
static void pack_done(void *arg, int res, const char *msg)
{
	struct push *P = arg;
	if (res < 0)
		fail_msg(P, res, msg);
	else
		drain_parked(P);
}

static void seg_done(struct ss_op *op, int res)
{
	(void)res;
	struct seg *s = (struct seg *)((char *)op - offsetof(struct ss_task, op));
	struct push *P = s->P;
	P->tasks_inflight--;
	if (s->err) {
		if (!P->failed) {
			P->failed = true;
			ss_err_set(P->err, s->err, "%s", s->werr.msg);
		}
		seg_release(P, s);
		return;
	}
	P->st->zero_bytes += s->zero_bytes;
	P->st->chunks += s->chunks;
	P->chunk_bytes += s->chunk_bytes;
	P->prog.zero_bytes += s->zero_bytes;
	s->next_parked = NULL;
	if (P->parked_tail)
		P->parked_tail->next_parked = s;
	else
		P->parked_head = s;
	P->parked_tail = s;
	drain_parked(P);
}

/* ---------------------------------------------------------------- reads */

static void dispatch_ready(struct push *P)
{
	for (;;) {
		struct seg **slot = &P->hold[P->next_hash_seq % P->nsegs];
		struct seg *s = *slot;
		if (!s || s->seq != P->next_hash_seq)
			return;
		*slot = NULL;
		struct pfile *f = &P->files[s->file];
		XXH3_128bits_update(f->hs, s->buf, s->len);
		P->prog.bytes_done += s->len;
		P->next_hash_seq++;
		P->tasks_inflight++;
		ss_pool_submit(P->pool, &s->task);
	}
}

static void read_submit(struct push *P, struct seg *s)
{
	struct io_uring_sqe *sqe = ss_loop_sqe(P->b.loop, &s->rop);
	struct pfile *f = &P->files[s->file];
	if (P->fixed_bufs)
		io_uring_prep_read_fixed(sqe, f->fd, s->buf + s->got, s->len - s->got,
					 s->off + s->got, (int)s->idx);
	else
		io_uring_prep_read(sqe, f->fd, s->buf + s->got, s->len - s->got, s->off + s->got);
	P->reads_inflight++;
}

static void read_done(struct ss_op *op, int res)
{
	struct seg *s = (struct seg *)((char *)op - offsetof(struct seg, rop));
	struct push *P = s->P;
	P->reads_inflight--;
	struct pfile *f = &P->files[s->file];
	if (res < 0 || (res == 0 && s->got < s->len)) {
		if (!P->failed) {
			P->failed = true;
			if (res < 0)
				ss_err_set(P->err, res, "cannot read %s: %s", f->path, strerror(-res));
			else
				ss_err_set(P->err, -EIO,
					   "%s shrank while it was being pushed (no snapshot written)",
					   f->path);
		}
		s->next_free = P->free_segs;
		P->free_segs = s;
		return;
	}
	s->got += (uint32_t)res;
	if (s->got < s->len && !P->failed) {
		read_submit(P, s);
		return;
	}
	P->hold[s->seq % P->nsegs] = s;
	dispatch_ready(P);
}

static int note_seq(struct push *P, struct pfile *f, uint64_t seq)
{
	if (seq >= P->seg_ext_cap) {
		size_t ncap = P->seg_ext_cap ? P->seg_ext_cap * 2 : 256;
		void *a = realloc(P->seg_ext, sizeof(*P->seg_ext) * ncap);
		if (!a)
			return -ENOMEM;
		memset((struct segext *)a + P->seg_ext_cap, 0,
		       sizeof(*P->seg_ext) * (ncap - P->seg_ext_cap));
		P->seg_ext = a;
		P->seg_ext_cap = ncap;
	}
	if (f->nseqs == f->seqs_cap) {
		size_t ncap = f->seqs_cap ? f->seqs_cap * 2 : 16;
		void *a = realloc(f->seqs, sizeof(*f->seqs) * ncap);
		if (!a)
			return -ENOMEM;
		f->seqs = a;
		f->seqs_cap = ncap;
	}
	f->seqs[f->nseqs++] = seq;
	return 0;
}

/* Start reads for free segments: files in order, each front to back. A
 * segment is read whole, or as the end of a file whose size is final. */
static void issue_reads(struct push *P)
{
	uint64_t ss = P->b.cfg.chunk.seg_size;
	for (size_t i = P->rd_file; !P->failed && P->free_segs && i < P->nfiles; i++) {
		struct pfile *f = &P->files[i];
		while (!P->failed && P->free_segs &&
		       (f->read_off + ss <= f->avail ||
			(P->writer_done && f->read_off < f->size))) {
			struct seg *s = P->free_segs;
			uint64_t seq = P->next_seq;
			if (note_seq(P, f, seq)) {
				fail(P, -ENOMEM, "cannot track segments");
				return;
			}
			P->next_seq++;
			P->free_segs = s->next_free;
			s->file = (uint32_t)i;
			s->off = f->read_off;
			s->len = (uint32_t)SS_MIN(ss, (P->writer_done ? f->size : f->avail) - f->read_off);
			s->got = 0;
			s->seq = seq;
			s->err = 0;
			ss_err_clear(&s->werr);
			f->read_off += s->len;
			read_submit(P, s);
		}
		/* Outside follow mode a file is done once all of it is issued. */
		if (P->writer_done && i == P->rd_file && f->read_off >= f->size)
			P->rd_file++;
	}
}

static bool all_issued(const struct push *P)
{
	if (!P->writer_done)
		return false;
	for (size_t i = P->rd_file; i < P->nfiles; i++)
		if (P->files[i].read_off < P->files[i].size)
			return false;
	return true;
}

static void tick_done(struct ss_op *op, int res)
{
	(void)res;
	struct push *P = (struct push *)((char *)op - offsetof(struct push, tick));
	P->tick_armed = false;
}

/* ---------------------------------------------------------------- setup */

static int pools_init(struct push *P)
{
	/* Enough segments for the reads in flight plus two per worker (one
	 * being chunked, one queued), so neither side starves the other. */
	P->nsegs = P->b.cfg.read_depth + 2 * P->b.cfg.threads;
	size_t ss = P->b.cfg.chunk.seg_size;
	/* Output holds at most the segment's bytes (a chunk is never stored
	 * larger than raw), plus zstd's worst-case slack for the last one. */
	size_t os = SS_ALIGN_UP(ss + ZSTD_compressBound(P->b.cfg.frame_max) - P->b.cfg.frame_max,
				4096);
	P->seg_mem_len = ss * P->nsegs;
	P->out_mem_len = os * P->nsegs;
	P->seg_mem = ss_map_alloc(P->seg_mem_len);
	P->out_mem = ss_map_alloc(P->out_mem_len);
	P->segs = calloc(P->nsegs, sizeof(*P->segs));
	P->hold = calloc(P->nsegs, sizeof(*P->hold));
	if (!P->seg_mem || !P->out_mem || !P->segs || !P->hold)
		return -ENOMEM;
	struct iovec *iov = calloc(P->nsegs, sizeof(*iov));
	if (!iov)
		return -ENOMEM;
	for (unsigned i = 0; i < P->nsegs; i++) {
		struct seg *s = &P->segs[i];
		s->P = P;
		s->idx = i;
		s->buf = P->seg_mem + ss * i;
		s->out = P->out_mem + os * i;
		s->task.run = seg_work;
		s->task.op.done = seg_done;
		s->rop.done = read_done;
		s->next_free = P->free_segs;
		P->free_segs = s;
		iov[i] = (struct iovec){.iov_base = s->buf, .iov_len = ss};
	}
	/* Registered buffers spare the kernel a page walk per read. */
	P->fixed_bufs = io_uring_register_buffers(ss_loop_ring(P->b.loop), iov, P->nsegs) == 0;
	free(iov);
	int r = ss_packer_new(P->b.store, P->b.dedup, &P->b.cfg, P->st, pack_done, P, &P->packer);
	if (!r && P->b.claims)
		ss_packer_set_claims(P->packer, P->b.claims);
	return r;
}

static void pools_free(struct push *P)
{
	if (P->fixed_bufs)
		io_uring_unregister_buffers(ss_loop_ring(P->b.loop));
	P->fixed_bufs = false;
	ss_map_free(P->seg_mem, P->seg_mem_len);
	ss_map_free(P->out_mem, P->out_mem_len);
	P->seg_mem = P->out_mem = NULL;
	if (P->segs)
		for (unsigned i = 0; i < P->nsegs; i++) {
			free(P->segs[i].ext);
			free(P->segs[i].nc);
		}
	free(P->segs);
	P->segs = NULL;
	free(P->hold);
	P->hold = NULL;
	ss_packer_free(P->packer);
	P->packer = NULL;
}

static bool busy(const struct push *P)
{
	return P->reads_inflight || P->tasks_inflight || ss_packer_inflight(P->packer);
}

static void progress(struct push *P, bool force)
{
	P->prog.phase = "push";
	P->prog.bytes_total = P->total_bytes;
	P->prog.dedup_bytes = P->chunk_bytes - P->st->new_raw_bytes;
	P->prog.stored_bytes = P->st->new_stored_bytes;
	ss_tick(&P->b.cfg, &P->ticker, &P->prog, force);
}

/* Run the pipeline until every byte is chunked and every pack stored. */
static int run_pipeline(struct push *P)
{
	static const struct __kernel_timespec tick = {.tv_nsec = 5000000};
	for (;;) {
		if (P->follow && !P->failed) {
			int r = follow_poll(P);
			if (r) {
				P->failed = true;
				continue;
			}
		}
		issue_reads(P);
		if (!busy(P) && (P->failed || (all_issued(P) && !P->parked_head))) {
			if (P->failed)
				break;
			/* Everything chunked: store the last, partial pack. */
			struct ss_err e = {0};
			int r = ss_packer_flush(P->packer, &e);
			if (r < 0)
				fail_msg(P, r, e.msg);
			if (r)
				continue;
			break;
		}
		/* While following a writer, wake up regularly to look again. */
		if (P->follow && !P->writer_done && !P->tick_armed) {
			P->tick.done = tick_done;
			io_uring_prep_timeout(ss_loop_sqe(P->b.loop, &P->tick), (struct __kernel_timespec *)&tick,
					      0, 0);
			P->tick_armed = true;
		}
		int r = ss_loop_turn(P->b.loop, true);
		if (r < 0) {
			fail(P, r, "event loop failed");
			/* Nothing more will complete; do not wait for it. */
			return P->err->code;
		}
		progress(P, false);
	}
	return P->failed ? P->err->code : 0;
}

/* ---------------------------------------------------------------- claims */

/* How long a push waits for another push on the host to land a chunk it
 * claimed before storing the chunk itself. */
#define FOREIGN_WAIT_NS (30ull * 1000000000ull)

/* Store a chunk another push claimed and never landed: read it again from
 * the source (it must still hash to its id), compress it alone. */
static int store_foreign(struct push *P, const struct foreign *f, uint8_t *buf, uint8_t *zbuf,
			 ZSTD_CCtx *cc)
{
	struct pfile *pf = &P->files[f->file];
	struct ss_dentry *de = ss_dedup_entry(P->b.dedup, f->slot);
	for (uint32_t got = 0; got < f->len;) {
		ssize_t n = pread(pf->fd, buf + got, f->len - got, (off_t)(f->off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return ss_err_set(P->err, n < 0 ? -errno : -EAGAIN,
					  "cannot read %s again: %s (no snapshot written)", pf->path,
					  n < 0 ? strerror(errno) : "it shrank");
		got += (uint32_t)n;
	}
	uint8_t id[16];
	ss_chunk_id(&P->b.cfg.ids, buf, f->len, id);
	if (memcmp(id, de->id, 16) != 0)
		return ss_err_set(P->err, -EAGAIN,
				  "%s changed while it was being pushed (no snapshot written)",
				  pf->path);
	size_t z = ss_frame_compress(cc, zbuf, buf, f->len);
	bool zs = z != 0;
	struct ss_packer_chunk pc = {.slot = f->slot, .frame_off = 0};
	struct ss_err e = {0};
	int r;
	while ((r = ss_packer_add(P->packer, zs ? zbuf : buf, zs ? (uint32_t)z : f->len,
				  zs ? SS_CODEC_ZSTD : SS_CODEC_RAW, &pc, 1, &e)) == -EAGAIN) {
		/* Every pack buffer is uploading: wait for one. */
		if ((r = ss_loop_turn(P->b.loop, true)) < 0)
			return ss_err_set(P->err, r, "event loop failed: %s", strerror(-r));
		if (P->failed)
			return P->err->code;
	}
	return r ? ss_err_set(P->err, r, "%s", e.msg) : 0;
}

/* The chunks other pushes on this host claimed (claims.h). Runs once this
 * push's own packs have all landed, so pushes waiting for each other only
 * ever wait for what is being stored or already is. A chunk whose
 * claimer lands it gets the claimer's location; one whose claimer died,
 * gave up or takes too long is claimed again and stored here. */
static int resolve_foreign(struct push *P)
{
	if (!P->nforeign)
		return 0;
	uint64_t deadline = ss_now_ns() + FOREIGN_WAIT_NS;
	uint32_t max = P->b.cfg.chunk.max_size;
	uint8_t *buf = malloc(max), *zbuf = malloc(ZSTD_compressBound(max));
	ZSTD_CCtx *cc = ss_frame_cctx(P->b.cfg.zstd_level);
	int r = buf && zbuf && cc ? 0 : ss_err_set(P->err, -ENOMEM, "out of memory");
	size_t left = P->nforeign;
	bool stored = false;
	while (!r && left) {
		bool expired = ss_now_ns() > deadline;
		size_t k = 0;
		for (size_t i = 0; !r && i < left; i++) {
			struct foreign f = P->foreign[i];
			struct ss_dentry *de = ss_dedup_entry(P->b.dedup, f.slot);
			struct ss_claim_loc loc;
			int pr = ss_claims_poll(P->b.claims, f.ref, de->id, &loc);
			/* Shared memory is input too: a location must make sense
			 * (pull verifies the chunk's bytes against its id). */
			bool bad = pr == 0 && !(loc.codec == SS_CODEC_ZSTD
							? loc.stored_len != 0 &&
								  loc.frame_off <= SS_FRAME_MAX_LIMIT
							: loc.codec == SS_CODEC_RAW &&
								  loc.stored_len == de->raw_len &&
								  !loc.frame_off);
			if (bad)
				pr = -ENOENT;
			if (pr == 0) {
				uint32_t idx;
				if ((r = ss_store_pack_index(P->b.store, loc.pack_id, 0, &idx))) {
					ss_err_set(P->err, r, "out of memory");
					break;
				}
				de->pack = idx;
				de->offset = loc.offset;
				de->stored_len = loc.stored_len;
				de->codec = loc.codec;
				de->frame_off = loc.frame_off;
				continue;
			}
			if (pr == -EAGAIN && !expired) {
				P->foreign[k++] = f;
				continue;
			}
			uint32_t ref;
			if (!expired && !bad &&
			    ss_claims_claim(P->b.claims, de->id, &ref) == SS_CLAIM_THEIRS) {
				f.ref = ref;    /* another push took it over first */
				P->foreign[k++] = f;
				continue;
			}
			r = store_foreign(P, &f, buf, zbuf, cc);
			stored = true;
		}
		left = k;
		if (!r && left) {
			struct timespec ts = {.tv_nsec = 1000000};
			nanosleep(&ts, NULL);
			progress(P, false);
		}
	}
	struct ss_err e = {0};
	int f = !r && stored ? ss_packer_flush(P->packer, &e) : 0;
	if (f < 0)
		r = ss_err_set(P->err, f, "%s", e.msg);
	while (!r && !P->failed && ss_packer_inflight(P->packer)) {
		int t = ss_loop_turn(P->b.loop, true);
		if (t < 0)
			r = ss_err_set(P->err, t, "event loop failed: %s", strerror(-t));
	}
	if (!r && P->failed)
		r = P->err->code;
	P->nforeign = 0;
	free(buf);
	free(zbuf);
	ZSTD_freeCCtx(cc);
	return r;
}

/* Follow mode: the reads raced a writer, so each file is hashed once more
 * now that it is final; a file rewritten behind the reader fails the push
 * instead of producing a snapshot of bytes that never existed together. */
/* Re-reading a followed image after its writer exited, to prove that what
 * was chunked is what the file now holds: every chunk extent must hash to
 * its id again and every zero run must still be zero. Extents never cross
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

static int recheck_segment(struct recheck *rc, const struct recheck_item *it, uint8_t *buf)
{
	struct push *P = rc->P;
	const struct pfile *f = &P->files[it->file];
	for (uint64_t got = 0; got < it->len;) {
		ssize_t n = pread(f->fd, buf + got, (size_t)(it->len - got), (off_t)(it->off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 1;   /* shorter than it was */
		got += (uint64_t)n;
	}
	const struct segext *se = &P->seg_ext[it->seq];
	uint64_t at = 0;
	for (uint32_t k = 0; k < se->n; k++) {
		const struct sext *e = &se->ext[k];
		if (at + e->len > it->len)
			return 1;
		if (e->slot == SS_SLOT_NONE) {
			if (!ss_is_zero(buf + at, e->len))
				return 1;
		} else {
			uint8_t id[16];
			ss_chunk_id(&P->b.cfg.ids, buf + at, e->len, id);
			if (memcmp(id, ss_dedup_entry(P->b.dedup, e->slot)->id, 16) != 0)
				return 1;
		}
		at += e->len;
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

static int check_followed(struct push *P)
{
	struct recheck rc = {.P = P};
	size_t cap = 0;
	for (size_t i = 0; i < P->nfiles; i++)
		cap += P->files[i].nseqs;
	rc.items = malloc(sizeof(*rc.items) * (cap ? cap : 1));
	if (!rc.items)
		return ss_err_set(P->err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = &P->files[i];
		struct stat st;
		if (fstat(f->fd, &st) < 0) {
			int e = errno;
			free(rc.items);
			return ss_err_set(P->err, -e, "cannot re-read %s: %s", f->path, strerror(e));
		}
		if ((uint64_t)st.st_size != f->size) {
			free(rc.items);
			return ss_err_set(P->err, -EAGAIN,
					  "%s changed size after its writer finished (no snapshot "
					  "written)",
					  f->path);
		}
		uint64_t off = 0;
		for (size_t q = 0; q < f->nseqs; q++) {
			const struct segext *se = &P->seg_ext[f->seqs[q]];
			uint64_t len = 0;
			for (uint32_t k = 0; k < se->n; k++)
				len += se->ext[k].len;
			if (len)
				rc.items[rc.n++] = (struct recheck_item){(uint32_t)i, (uint32_t)f->seqs[q],
									 off, len};
			off += len;
		}
		if (off != f->size) {
			free(rc.items);
			return ss_err_set(P->err, -EIO, "%s: read %llu of %llu bytes (a bug)", f->path,
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
		return ss_err_set(P->err, -EAGAIN,
				  "%s was rewritten behind the reader while it was being written "
				  "(no snapshot written)",
				  P->files[bad - 1].path);
	if (e)
		return ss_err_set(P->err, e, "cannot re-read the image: %s", strerror(-e));
	return 0;
}

/* Files must be what they were when the push started. */
static int check_unchanged(struct push *P)
{
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = &P->files[i];
		struct stat st;
		if (fstat(f->fd, &st) < 0)
			return ss_err_set(P->err, -errno, "cannot stat %s: %s", f->path,
					  strerror(errno));
		int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
		if ((uint64_t)st.st_size != f->size || mt != f->mtime_ns)
			return ss_err_set(P->err, -EAGAIN,
					  "%s changed while it was being pushed (no snapshot written); "
					  "push it again once it is stable",
					  f->path);
	}
	return 0;
}

/* ---------------------------------------------------------------- manifest */

static int build_manifest(struct push *P, struct ss_manifest **out)
{
	struct ss_mbuild *b = NULL;
	int r = ss_mbuild_new(&P->b.cfg, P->opts, P->b.store, P->b.dedup, P->root_is_dir, &b);
	for (size_t i = 0; !r && i < P->nfiles; i++) {
		struct pfile *f = &P->files[i];
		size_t next = 0;
		for (size_t q = 0; q < f->nseqs; q++)
			next += P->seg_ext[f->seqs[q]].n;
		r = ss_mbuild_file(b, f->name, f->size, f->mode, f->mtime_ns, f->digest, next);
		for (size_t q = 0; !r && q < f->nseqs; q++) {
			struct segext *se = &P->seg_ext[f->seqs[q]];
			for (uint32_t k = 0; !r && k < se->n; k++)
				r = ss_mbuild_extent(b, se->ext[k].len, se->ext[k].slot);
			/* Free as we go: this is the largest metadata of a push. */
			free(se->ext);
			se->ext = NULL;
		}
	}
	if (!r)
		r = ss_mbuild_finish(b, P->total_bytes, P->st, out);
	ss_mbuild_free(b);
	return r;
}

/* Pair each file with the guide's file of the same name (or the only file
 * of two one-file snapshots) and index the guide's extent offsets. */
static int map_guide(struct push *P)
{
	struct ss_manifest *g = P->guide;
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = &P->files[i];
		const struct ss_mfile *gf = NULL;
		if (!P->root_is_dir && !g->root_is_dir && g->nfiles == 1)
			gf = &g->files[0];
		for (size_t j = 0; !gf && P->root_is_dir && g->root_is_dir && j < g->nfiles; j++)
			if (strcmp(g->files[j].name, f->name) == 0)
				gf = &g->files[j];
		if (!gf || !gf->next)
			continue;
		f->gstart = malloc(sizeof(*f->gstart) * gf->next);
		if (!f->gstart)
			return ss_err_set(P->err, -ENOMEM, "out of memory");
		uint64_t at = 0;
		for (size_t e = 0; e < gf->next; e++) {
			f->gstart[e] = at;
			at += gf->ext[e].len;
		}
		f->gf = gf;
	}
	return 0;
}

static int load_parents(struct push *P)
{
	int r = ss_load_parents(P->opts, P->b.loop, &P->b.cfg, P->b.store, P->b.dedup, &P->guide,
				&P->st->requests, P->err);
	if (!r && P->guide)
		r = map_guide(P);
	return r;
}

int ss_push_impl(const struct ss_push_opts *opts, const struct ss_config_in *config, struct ss_stats *st,
	    char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct push *P = calloc(1, sizeof(*P));
	struct ss_stats local_st;
	struct ss_manifest *m = NULL;
	uint64_t t0 = ss_now_ns();
	int r;
	if (!st)
		st = &local_st;
	memset(st, 0, sizeof(*st));
	if (!P) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	P->err = &err;
	P->st = st;
	pthread_mutex_init(&P->foreign_mu, NULL);
	if (!opts || !opts->source || !opts->snapshot) {
		r = ss_err_set(&err, -EINVAL, "push needs a source and a snapshot location");
		goto out;
	}
	P->opts = opts;
	P->follow = opts->writer_status != NULL;
	P->writer_done = !P->follow;
	if ((r = ss_pushbase_open(&P->b, opts, config, &st->requests, &err)))
		goto out;
	ss_chunker_init(&P->chunker, &P->b.cfg.chunk);
	if ((r = collect_files(P)))
		goto out;
	/* The store is opened, and its chunks learnt, only for a source that
	 * can be read: a bad path leaves no store behind. */
	P->prog.phase = "index";
	ss_tick(&P->b.cfg, &P->ticker, &P->prog, true);
	if ((r = ss_pushbase_store(&P->b, opts, &err)))
		goto out;
	if ((r = load_parents(P)))
		goto out;
	struct ss_worker_ctx_ops wops = {.create = wctx_create, .destroy = wctx_destroy, .arg = P};
	if ((r = pools_init(P)) || (r = ss_pool_new(P->b.loop, P->b.cfg.threads, &wops, &P->pool))) {
		ss_err_set(&err, r, "cannot allocate the push pipeline: %s", strerror(-r));
		goto out;
	}
	if ((r = run_pipeline(P)) || (r = resolve_foreign(P)))
		goto out;
	for (size_t i = 0; i < P->nfiles; i++) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(P->files[i].hs));
		memcpy(P->files[i].digest, c.digest, 16);
	}
	if ((r = P->follow ? check_followed(P) : check_unchanged(P)))
		goto out;
	/* Files found while following are in discovery order; a manifest
	 * lists them by name, as a push of the finished directory would. */
	if (P->follow)
		qsort(P->files, P->nfiles, sizeof(*P->files), cmp_pfile);
	/* The pipeline is done: give its buffers back before the manifest. */
	ss_pool_free(P->pool);
	P->pool = NULL;
	pools_free(P);

	P->prog.phase = "commit";
	progress(P, true);
	if ((r = build_manifest(P, &m))) {
		ss_err_set(&err, r, "cannot build the manifest: %s", strerror(-r));
		goto out;
	}
	r = ss_pushbase_commit(&P->b, opts, m, st, &err);
out:
	if (P) {
		/* On failure, let everything in flight finish before freeing. */
		while (P->b.loop && busy(P) && ss_loop_turn(P->b.loop, true) >= 0)
			;
		ss_pool_free(P->pool);
		if (P->segs || P->seg_mem)
			pools_free(P);
		st->files = P->nfiles;
		st->logical_bytes = P->total_bytes;
		st->dedup_bytes = P->total_bytes - st->zero_bytes - st->new_raw_bytes;
		if (P->b.store)
			st->requests += P->b.store->requests;
		if (P->seg_ext)
			for (uint64_t i = 0; i < P->next_seq; i++)
				free(P->seg_ext[i].ext);
		free(P->seg_ext);
		free(P->fc);
		free(P->foreign);
		pthread_mutex_destroy(&P->foreign_mu);
		for (size_t i = 0; i < P->nfiles; i++) {
			if (P->files[i].fd >= 0)
				close(P->files[i].fd);
			XXH3_freeState(P->files[i].hs);
			free(P->files[i].gstart);
			free(P->files[i].seqs);
			free(P->files[i].path);
			free(P->files[i].name);
		}
		free(P->files);
		ss_manifest_free(P->guide);
		ss_pushbase_close(&P->b);
	}
	ss_manifest_free(m);
	free(P);
	st->seconds = (double)(ss_now_ns() - t0) / 1e9;
	if (r && errbuf && errlen)
		snprintf(errbuf, errlen, "%s", err.msg[0] ? err.msg : strerror(-r));
	return r;
}
