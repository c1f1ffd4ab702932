/* Pull: manifest → plan (chunks grouped by pack, merged into large ranged
 * reads) → store GETs, many in flight → workers decompress and verify each
 * chunk's XXH3-128 → io_uring writes at file offsets, in any order → fsync
 * → whole-file digests checked → rename into place.
 *
 * Output files are created at their full size with ftruncate and only
 * chunk extents are written, so zero runs stay holes. Nothing appears
 * under the destination's name until every byte has been verified.
 */
#include "pull.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define RANGE_MAX (8u << 20)       /* stored bytes per GET, and raw per task */
#define RANGE_GAP (256u << 10)     /* read through gaps up to this size */

struct target {
	uint32_t file;
	uint32_t ext;            /* extent index within the file */
	uint64_t off;
};

struct range {
	uint32_t pack;
	uint64_t off, len;
	uint32_t first, count;   /* into P->order */
	uint64_t raw;
};

struct pull;

struct wop {
	struct ss_op op;
	struct rtask *t;
	int fd;
	uint32_t file, ext0, next;  /* the extents this write completes */
	const uint8_t *p;
	uint64_t off;
	size_t len;
};

struct rtask {
	struct ss_task task;
	struct ss_range g;         /* the GET */
	struct pull *P;
	struct range *rg;
	uint8_t *in, *out;
	const uint8_t **cptr;      /* each chunk's bytes: in `out`, or raw in `in` */
	struct wop *w;
	uint32_t nw, wcap;
	unsigned writes_pending;
	int err;
	struct ss_err werr;
	struct rtask *next_free;
};

/* Each file's digest is computed while the pull runs: a worker hashes the
 * written prefix in order as it grows, so verification does not add a
 * serial pass over the data at the end. */
struct htask {
	struct ss_task task;
	struct pull *P;
	uint32_t file;
	size_t from, to;           /* extents to hash */
	uint64_t off;              /* file offset of `from` */
	int err;
};

struct ofile {
	int fd;
	uint8_t *done;             /* per extent: written */
	size_t frontier;           /* extents [0, frontier) are written */
	size_t hashed;             /* extents [0, hashed) are hashed */
	uint64_t hashed_off;
	XXH3_state_t *hs;
	bool hashing, verified;
	struct htask ht;
};

struct pull {
	struct ss_cfg cfg;
	const struct ss_pull_opts *opts;
	struct ss_loop *loop;
	struct ss_pool *pool;
	struct ss_backend *store;
	struct ss_manifest *m;
	const struct ss_idkey *ids;   /* the manifest's chunk ids */
	struct ss_err *err;
	bool failed;
	struct ss_stats *st;

	uint32_t *tstart;          /* nchunks + 1 */
	struct target *targets;
	uint32_t *order;
	struct range *ranges;
	size_t nranges, next_range;
	uint32_t max_range_chunks;
	size_t in_cap, out_cap;    /* per task buffer sizes */

	struct rtask *tasks;
	unsigned ntasks;
	struct rtask *free_tasks;
	uint8_t *mem;
	size_t mem_len;
	unsigned gets_inflight, tasks_inflight, writes_inflight, max_gets;

	char *tmp;                 /* temp file or directory beside dest */
	bool tmp_is_dir;
	char *final;
	struct ofile *files;

	struct ss_progress prog;
	struct ss_ticker ticker;
};

static void fail(struct pull *P, int r, const char *what)
{
	if (!P->failed) {
		P->failed = true;
		ss_err_set(P->err, r, "%s: %s", what, strerror(-r));
	}
}

/* ---------------------------------------------------------------- plan */

static int cmp_chunk(const void *a, const void *b, void *arg)
{
	const struct ss_manifest *m = arg;
	const struct ss_chunk_ref *x = &m->chunks[*(const uint32_t *)a];
	const struct ss_chunk_ref *y = &m->chunks[*(const uint32_t *)b];
	if (x->pack != y->pack)
		return x->pack < y->pack ? -1 : 1;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->frame_off < y->frame_off ? -1 : x->frame_off > y->frame_off;
}

static int plan(struct pull *P)
{
	struct ss_manifest *m = P->m;
	size_t n = m->nchunks;
	P->tstart = calloc(n + 1, sizeof(*P->tstart));
	P->order = malloc(sizeof(*P->order) * (n ? n : 1));
	if (!P->tstart || !P->order)
		return -ENOMEM;
	uint64_t ntargets = 0;
	for (size_t f = 0; f < m->nfiles; f++)
		for (size_t e = 0; e < m->files[f].next; e++)
			if (m->files[f].ext[e].chunk) {
				P->tstart[m->files[f].ext[e].chunk]++;
				ntargets++;
			}
	if (ntargets > UINT32_MAX)
		return -EFBIG;
	/* Counting sort: chunk c's count sits at tstart[c + 1] (extent chunk
	 * numbers are 1-based), so a running sum leaves tstart[c] ..
	 * tstart[c + 1] as chunk c's targets. */
	for (size_t c = 1; c <= n; c++)
		P->tstart[c] += P->tstart[c - 1];
	P->targets = malloc(sizeof(*P->targets) * (ntargets ? ntargets : 1));
	uint32_t *fill = calloc(n + 1, sizeof(*fill));
	if (!P->targets || !fill) {
		free(fill);
		return -ENOMEM;
	}
	for (size_t f = 0; f < m->nfiles; f++) {
		uint64_t off = 0;
		for (size_t e = 0; e < m->files[f].next; e++) {
			struct ss_mextent *x = &m->files[f].ext[e];
			if (x->chunk) {
				uint32_t c = x->chunk - 1;
				P->targets[P->tstart[c] + fill[c]++] =
					(struct target){(uint32_t)f, (uint32_t)e, off};
			}
			off += x->len;
		}
	}
	free(fill);
	for (size_t c = 0; c < n; c++)
		P->order[c] = (uint32_t)c;
	/* Chunks no file uses (none in a valid manifest) are still fetched,
	 * which costs little and keeps the plan simple. */
	qsort_r(P->order, n, sizeof(*P->order), cmp_chunk, m);

	size_t cap = 64;
	P->ranges = malloc(sizeof(*P->ranges) * cap);
	if (!P->ranges)
		return -ENOMEM;
	struct range *cur = NULL;
	const struct ss_chunk_ref *prev = NULL;
	for (size_t i = 0; i < n; i++) {
		const struct ss_chunk_ref *c = &m->chunks[P->order[i]];
		/* A frame is decompressed once, up to the end of the last chunk
		 * needed from it, and is never split between ranges. */
		bool same_frame = prev && prev->pack == c->pack && prev->offset == c->offset &&
				  c->codec == SS_CODEC_ZSTD && prev->codec == SS_CODEC_ZSTD;
		uint64_t raw_add = same_frame ? c->frame_off + c->raw_len -
							SS_MIN(c->frame_off + c->raw_len,
							       prev->frame_off + prev->raw_len)
					      : c->frame_off + c->raw_len;
		uint64_t end = cur ? cur->off + cur->len : 0;
		if (!same_frame &&
		    (!cur || c->pack != cur->pack || c->offset < end || c->offset - end > RANGE_GAP ||
		     c->offset + c->stored_len - cur->off > RANGE_MAX ||
		     cur->raw + raw_add > RANGE_MAX)) {
			if (P->nranges == cap) {
				cap *= 2;
				void *a = realloc(P->ranges, sizeof(*P->ranges) * cap);
				if (!a)
					return -ENOMEM;
				P->ranges = a;
			}
			cur = &P->ranges[P->nranges++];
			*cur = (struct range){.pack = c->pack, .off = c->offset, .first = (uint32_t)i};
		}
		cur->len = SS_MAX(cur->len, c->offset + c->stored_len - cur->off);
		cur->raw += raw_add;
		cur->count++;
		if (cur->count > P->max_range_chunks)
			P->max_range_chunks = cur->count;
		prev = c;
	}
	return 0;
}

/* ---------------------------------------------------------------- workers */

static void where(struct pull *P, uint32_t chunk, char *buf, size_t n)
{
	struct ss_manifest *m = P->m;
	if (P->tstart[chunk] == P->tstart[chunk + 1]) {
		snprintf(buf, n, "an unused chunk");
		return;
	}
	struct target *t = &P->targets[P->tstart[chunk]];
	snprintf(buf, n, "file '%s' at offset %llu", m->files[t->file].name,
		 (unsigned long long)t->off);
}

static void range_chunk(void *arg, uint32_t k, struct ss_rchunk *out)
{
	struct rtask *t = arg;
	const struct ss_chunk_ref *c = &t->P->m->chunks[t->P->order[t->rg->first + k]];
	*out = (struct ss_rchunk){.id = c->id, .offset = c->offset, .stored_len = c->stored_len,
				  .raw_len = c->raw_len, .frame_off = c->frame_off,
				  .codec = c->codec};
}

/* The first bad chunk stops the range: name it and where it goes. */
static bool range_bad(void *arg, uint32_t k, enum ss_range_bad why)
{
	struct rtask *t = arg;
	struct pull *P = t->P;
	uint32_t ci = P->order[t->rg->first + k];
	char loc[PATH_MAX + 64];
	where(P, ci, loc, sizeof(loc));
	char hex[33];
	ss_hex(P->m->chunks[ci].id, 16, hex);
	ss_err_set(&t->werr, -EBADMSG, "corrupted data: chunk %s for %s %s (pack %s)", hex, loc,
		   ss_range_why(why), t->g.key);
	return false;
}

static void range_work(struct ss_task *task, void *wp)
{
	struct rtask *t = (struct rtask *)task;
	struct ss_rrun run = {.ids = t->P->ids, .in = t->in, .base = t->rg->off, .n = t->rg->count,
			      .at = range_chunk, .dec = t->out, .dec_cap = t->P->out_cap,
			      .ptr = t->cptr, .bad = range_bad, .arg = t};
	t->err = ss_range_decode(wp, &run);
}

/* ---------------------------------------------------------------- writes */

static void advance(struct pull *P, uint32_t file);

static void task_release(struct pull *P, struct rtask *t)
{
	t->next_free = P->free_tasks;
	P->free_tasks = t;
}

static void write_submit(struct pull *P, struct wop *w)
{
	struct io_uring_sqe *sqe = ss_loop_sqe(P->loop, &w->op);
	io_uring_prep_write(sqe, w->fd, w->p, (unsigned)SS_MIN(w->len, 1u << 30), w->off);
	P->writes_inflight++;
}

static void write_done(struct ss_op *op, int res)
{
	struct wop *w = (struct wop *)op;
	struct rtask *t = w->t;
	struct pull *P = t->P;
	P->writes_inflight--;
	if (res <= 0) {
		int e = res < 0 ? res : -EIO;
		if (!P->failed) {
			P->failed = true;
			ss_err_set(P->err, e, "cannot write %s: %s", P->final, strerror(-e));
		}
	} else if ((size_t)res < w->len && !P->failed) {
		w->p += res;
		w->off += (uint64_t)res;
		w->len -= (size_t)res;
		write_submit(P, w);
		return;
	} else {
		memset(P->files[w->file].done + w->ext0, 1, w->next);
		advance(P, w->file);
	}
	if (--t->writes_pending == 0)
		task_release(P, t);
}

static int add_write(struct rtask *t, int fd, const struct target *tg, const uint8_t *p,
		     size_t len)
{
	if (t->nw) {
		struct wop *last = &t->w[t->nw - 1];
		/* Neighbouring chunks usually land side by side: one write. Side
		 * by side in a file means consecutive extents of it. */
		if (last->file == tg->file && last->off + last->len == tg->off &&
		    last->p + last->len == p && last->ext0 + last->next == tg->ext) {
			last->len += len;
			last->next++;
			return 0;
		}
	}
	if (t->nw == t->wcap) {
		uint32_t ncap = t->wcap ? t->wcap * 2 : 64;
		void *a = realloc(t->w, sizeof(*t->w) * ncap);
		if (!a)
			return -ENOMEM;
		t->w = a;
		t->wcap = ncap;
	}
	t->w[t->nw++] = (struct wop){.t = t, .fd = fd, .file = tg->file, .ext0 = tg->ext,
				     .next = 1, .p = p, .off = tg->off, .len = len};
	return 0;
}

static void range_done(struct ss_op *op, int res)
{
	(void)res;
	struct rtask *t = (struct rtask *)((char *)op - offsetof(struct ss_task, op));
	struct pull *P = t->P;
	P->tasks_inflight--;
	if (t->err || P->failed) {
		if (t->err && !P->failed) {
			P->failed = true;
			ss_err_set(P->err, t->err, "%s", t->werr.msg);
		}
		task_release(P, t);
		return;
	}
	struct range *rg = t->rg;
	t->nw = 0;
	for (uint32_t i = 0; i < rg->count; i++) {
		uint32_t ci = P->order[rg->first + i];
		uint32_t len = P->m->chunks[ci].raw_len;
		const uint8_t *p = t->cptr[i];
		for (uint32_t k = P->tstart[ci]; k < P->tstart[ci + 1]; k++) {
			struct target *tg = &P->targets[k];
			if (add_write(t, P->files[tg->file].fd, tg, p, len)) {
				fail(P, -ENOMEM, "cannot plan writes");
				task_release(P, t);
				return;
			}
			P->prog.bytes_done += len;
		}
	}
	if (!t->nw) {
		task_release(P, t);
		return;
	}
	/* Every wop must exist before any completes: the array may move. */
	t->writes_pending = t->nw;
	for (uint32_t i = 0; i < t->nw; i++) {
		t->w[i].op.done = write_done;
		write_submit(P, &t->w[i]);
	}
}

/* ---------------------------------------------------------------- gets */

static void get_done(struct ss_op *op, int res)
{
	struct ss_req *req = (struct ss_req *)op;
	struct rtask *t = req->user;
	struct pull *P = t->P;
	P->gets_inflight--;
	if (ss_range_result(&t->g, res) != SS_RANGE_OK || P->failed) {
		if (!P->failed) {
			P->failed = true;
			ss_range_explain(&t->g, res, "", P->err);
		}
		task_release(P, t);
		return;
	}
	P->st->transferred_bytes += t->rg->len;
	P->prog.stored_bytes += t->rg->len;
	P->tasks_inflight++;
	ss_pool_submit(P->pool, &t->task);
}

static void issue_gets(struct pull *P)
{
	while (!P->failed && P->free_tasks && P->next_range < P->nranges &&
	       P->gets_inflight < P->max_gets) {
		struct rtask *t = P->free_tasks;
		struct range *rg = &P->ranges[P->next_range];
		t->rg = rg;
		t->err = 0;
		ss_err_clear(&t->werr);
		ss_range_prep(&t->g, P->m->pack_ids[rg->pack], rg->off, rg->len, t->in, get_done, t);
		int r = ss_range_submit(P->store, &t->g, &P->st->requests);
		if (r == -EAGAIN)
			return;
		if (r) {
			fail(P, r, "cannot request a pack");
			return;
		}
		P->free_tasks = t->next_free;
		P->next_range++;
		P->gets_inflight++;
	}
}

/* ---------------------------------------------------------------- files */

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	/* Best effort: remove what can be removed; rm_tree reports the rest. */
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/* Remove a tree (or a file) without recursing on this stack and without
 * following symlinks: the old destination a --force pull replaces is the
 * caller's and may be nested arbitrarily deep. Returns 0 when path is
 * gone, else -errno. */
static int rm_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return -errno;
	if (lstat(path, &st) == 0)
		return -ENOTEMPTY;
	return errno == ENOENT ? 0 : -errno;
}

static int create_outputs(struct pull *P)
{
	struct ss_manifest *m = P->m;
	const char *dest = P->opts->dest;
	struct stat st;
	bool exists = lstat(dest, &st) == 0;
	char final[PATH_MAX];
	/* The manifest validator (proto/manifest.c) saw to it that a one-file
	 * snapshot holds exactly one file, whose name has no '/'. */
	if (!m->root_is_dir) {
		/* Pulling a file snapshot into an existing directory puts it there. */
		if (exists && S_ISDIR(st.st_mode)) {
			snprintf(final, sizeof(final), "%s/%s", dest, m->files[0].name);
			exists = lstat(final, &st) == 0;
		} else {
			snprintf(final, sizeof(final), "%s", dest);
		}
	} else {
		snprintf(final, sizeof(final), "%s", dest);
	}
	if (exists && !P->opts->force) {
		bool empty_dir = false;
		if (m->root_is_dir && S_ISDIR(st.st_mode)) {
			DIR *d = opendir(final);
			empty_dir = d != NULL;
			struct dirent *de;
			while (d && (de = readdir(d)))
				if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
					empty_dir = false;
			if (d)
				closedir(d);
		}
		if (!empty_dir)
			return ss_err_set(P->err, -EEXIST,
					  "%s already exists (use --force to replace it)", final);
	}
	if (!(P->final = strdup(final)))
		return -ENOMEM;
	size_t tl = strlen(final) + 32;
	if (!(P->tmp = malloc(tl)))
		return -ENOMEM;
	snprintf(P->tmp, tl, "%s.ss-tmp-XXXXXX", final);
	P->files = calloc(m->nfiles ? m->nfiles : 1, sizeof(*P->files));
	if (!P->files)
		return -ENOMEM;
	for (size_t i = 0; i < m->nfiles; i++) {
		P->files[i].fd = -1;
		P->files[i].done = calloc(m->files[i].next ? m->files[i].next : 1, 1);
		P->files[i].hs = XXH3_createState();
		if (!P->files[i].done || !P->files[i].hs)
			return -ENOMEM;
		XXH3_128bits_reset(P->files[i].hs);
	}
	if (!m->root_is_dir) {
		int fd = mkostemp(P->tmp, O_CLOEXEC);
		if (fd < 0) {
			int e = -errno;
			P->tmp[0] = '\0';
			return ss_err_set(P->err, e, "cannot create a file beside %s: %s", final,
					  strerror(-e));
		}
		P->files[0].fd = fd;
	} else {
		if (!mkdtemp(P->tmp)) {
			int e = -errno;
			P->tmp[0] = '\0';
			return ss_err_set(P->err, e, "cannot create a directory beside %s: %s", final,
					  strerror(-e));
		}
		P->tmp_is_dir = true;
	}
	/* Every file stays open until it is verified. The library lives with
	 * the descriptor limit its caller set (the CLI and ateom raise it at
	 * startup) and says so when the snapshot needs more. */
	for (size_t i = 0; i < m->nfiles; i++) {
		struct ss_mfile *f = &m->files[i];
		if (m->root_is_dir) {
			char path[PATH_MAX];
			if (snprintf(path, sizeof(path), "%s/%s", P->tmp, f->name) >= (int)sizeof(path))
				return ss_err_set(P->err, -ENAMETOOLONG, "path too long: %s", f->name);
			char *slash = strrchr(path, '/');
			*slash = '\0';
			int r = ss_mkdir_p(path, 0755);
			*slash = '/';
			if (r)
				return ss_err_set(P->err, r, "cannot create %s: %s", path, strerror(-r));
			/* O_EXCL and O_NOFOLLOW: names were validated, but never follow
			 * anything into place. */
			P->files[i].fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
					      0600);
			if (P->files[i].fd < 0 && (errno == EMFILE || errno == ENFILE))
				return ss_err_set(P->err, -errno,
						  "cannot create %s: %s (a pull keeps each of the "
						  "snapshot's %zu files open until it is verified: "
						  "raise the limit on open files)",
						  path, strerror(errno), m->nfiles);
			if (P->files[i].fd < 0)
				return ss_err_set(P->err, -errno, "cannot create %s: %s", path,
						  strerror(errno));
		}
		if (ftruncate(P->files[i].fd, (off_t)f->size) < 0)
			return ss_err_set(P->err, -errno, "cannot size %s (%llu bytes): %s", f->name,
					  (unsigned long long)f->size, strerror(errno));
	}
	return 0;
}

/* Hash extents [from, to) of a file: zero runs from memory, the rest from
 * a read-only mapping of the file, so the digest proves what is on disk
 * without copying it back (hole pages are never touched). */
static void hash_work(struct ss_task *task, void *wp)
{
	(void)wp;
	struct htask *h = (struct htask *)task;
	struct pull *P = h->P;
	struct ss_mfile *f = &P->m->files[h->file];
	struct ofile *o = &P->files[h->file];
	static const uint8_t zeros[65536];
	uint64_t end = h->off;
	for (size_t e = h->from; e < h->to; e++)
		end += f->ext[e].len;
	uint64_t base = h->off & ~(uint64_t)4095;
	size_t maplen = (size_t)(end - base);
	uint8_t *map = NULL;
	h->err = 0;
	if (maplen) {
		map = mmap(NULL, maplen, PROT_READ, MAP_SHARED, o->fd, (off_t)base);
		if (map == MAP_FAILED) {
			h->err = -errno;
			return;
		}
		madvise(map, maplen, MADV_SEQUENTIAL);
	}
	uint64_t off = h->off;
	for (size_t e = h->from; e < h->to; e++) {
		uint64_t len = f->ext[e].len;
		if (f->ext[e].chunk) {
			XXH3_128bits_update(o->hs, map + (off - base), (size_t)len);
		} else {
			for (uint64_t left = len; left;) {
				size_t k = (size_t)SS_MIN(left, sizeof(zeros));
				XXH3_128bits_update(o->hs, zeros, k);
				left -= k;
			}
		}
		off += len;
	}
	if (map)
		munmap(map, maplen);
	if (h->to == f->next) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(o->hs));
		if (memcmp(c.digest, f->digest, 16) != 0)
			h->err = -EBADMSG;
	}
	h->off = off;
}

static void hash_done(struct ss_op *op, int res)
{
	(void)res;
	struct htask *h = (struct htask *)((char *)op - offsetof(struct ss_task, op));
	struct pull *P = h->P;
	struct ofile *o = &P->files[h->file];
	P->tasks_inflight--;
	o->hashing = false;
	if (h->err) {
		if (!P->failed) {
			P->failed = true;
			if (h->err == -EBADMSG)
				ss_err_set(P->err, h->err,
					   "corrupted data: file '%s' does not match its recorded digest",
					   P->m->files[h->file].name);
			else
				ss_err_set(P->err, h->err, "cannot read back '%s': %s",
					   P->m->files[h->file].name, strerror(-h->err));
		}
		return;
	}
	o->hashed = h->to;
	o->hashed_off = h->off;
	if (o->hashed == P->m->files[h->file].next)
		o->verified = true;
	advance(P, h->file);
}

/* Move a file's written frontier forward and hash what it uncovered. */
static void advance(struct pull *P, uint32_t file)
{
	struct ss_mfile *f = &P->m->files[file];
	struct ofile *o = &P->files[file];
	while (o->frontier < f->next && (!f->ext[o->frontier].chunk || o->done[o->frontier]))
		o->frontier++;
	if (P->failed || o->hashing || o->verified)
		return;
	/* Hash in steps of at least 8 MiB (or the rest) so tasks stay few. */
	if (o->frontier < f->next && o->frontier - o->hashed < 128)
		return;
	if (o->frontier == o->hashed && f->next)
		return;
	struct htask *h = &o->ht;
	h->P = P;
	h->file = file;
	h->from = o->hashed;
	/* At most 16 MiB of file per step: the mapping counts towards RSS. */
	uint64_t span = 0;
	h->to = h->from;
	while (h->to < o->frontier && (h->to == h->from || span + f->ext[h->to].len <= (16u << 20)))
		span += f->ext[h->to++].len;
	h->off = o->hashed_off;
	h->task.run = hash_work;
	h->task.op.done = hash_done;
	o->hashing = true;
	P->tasks_inflight++;
	ss_pool_submit(P->pool, &h->task);
}

static int verify_files(struct pull *P)
{
	/* Start the files that had nothing to write (all zero, or empty). */
	for (size_t i = 0; i < P->m->nfiles; i++)
		advance(P, (uint32_t)i);
	while (P->tasks_inflight && ss_loop_turn(P->loop, true) >= 0)
		;
	for (size_t i = 0; !P->failed && i < P->m->nfiles; i++)
		if (!P->files[i].verified)
			return ss_err_set(P->err, -EIO, "internal error: '%s' was not verified",
					  P->m->files[i].name);
	return P->failed ? P->err->code : 0;
}

/* Make the rename into place durable: fsync the directory holding it. */
static int sync_parent(struct pull *P)
{
	if (P->cfg.bopts.no_fsync)
		return 0;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", P->final);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = slash == dir ? (slash[1] = '\0', '/') : '\0';
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = dfd < 0 || fsync(dfd) < 0 ? -errno : 0;
	if (dfd >= 0)
		close(dfd);
	if (r)
		return ss_err_set(P->err, r, "pulled into %s, but cannot make that durable "
					     "(fsync of its directory): %s",
				  P->final, strerror(-r));
	return 0;
}

/* The destination replaced the old way, for file systems without
 * RENAME_EXCHANGE: the old tree moves aside, the new one in, and back
 * when that fails. Not atomic: the destination is missing in between. */
static int replace_by_moving(struct pull *P, char *old, size_t oldlen)
{
	snprintf(old, oldlen, "%s.ss-old-XXXXXX", P->final);
	if (!mkdtemp(old))
		return ss_err_set(P->err, -errno, "cannot replace %s: %s", P->final,
				  strerror(errno));
	if (rename(P->final, old) < 0) {
		int e = -errno;
		rmdir(old);
		old[0] = '\0';
		return ss_err_set(P->err, e, "cannot replace %s: %s", P->final, strerror(-e));
	}
	if (rename(P->tmp, P->final) < 0) {
		int e = -errno;
		if (rename(old, P->final) < 0)
			return ss_err_set(P->err, e,
					  "cannot move the result into %s: %s; the old %s is "
					  "left in %s (cannot move it back: %s)",
					  P->final, strerror(-e), P->final, old, strerror(errno));
		old[0] = '\0';
		return ss_err_set(P->err, e, "cannot move the result into %s: %s", P->final,
				  strerror(-e));
	}
	return 0;
}

/* Into place. A new destination is renamed in; an existing one (with
 * --force, or an empty directory) is exchanged with the result in one
 * step, so that whoever looks sees the old tree or the new one and never
 * neither, and removed afterwards. A one-file pull renames its file over
 * the old one, which is as atomic. */
static int install(struct pull *P)
{
	struct stat st;
	bool exists = lstat(P->final, &st) == 0;
	if (!exists && errno != ENOENT)
		return ss_err_set(P->err, -errno, "cannot replace %s: %s", P->final,
				  strerror(errno));
	char old[PATH_MAX + 32] = "";
	if (exists && P->tmp_is_dir) {
		if (renameat2(AT_FDCWD, P->tmp, AT_FDCWD, P->final, RENAME_EXCHANGE) == 0) {
			/* P->tmp now holds the old destination. */
			snprintf(old, sizeof(old), "%s", P->tmp);
		} else if (errno == EINVAL || errno == ENOSYS) {
			int r = replace_by_moving(P, old, sizeof(old));
			if (r)
				return r;
		} else {
			return ss_err_set(P->err, -errno, "cannot replace %s: %s", P->final,
					  strerror(errno));
		}
	} else if (rename(P->tmp, P->final) < 0) {
		return ss_err_set(P->err, -errno, "cannot move the result into %s: %s", P->final,
				  strerror(errno));
	}
	P->tmp[0] = '\0';
	int r = sync_parent(P);
	int rr = old[0] ? rm_tree(old) : 0;
	if (!r && rr)
		r = ss_err_set(P->err, rr, "pulled into %s, but cannot remove what it replaced "
					   "(now %s): %s",
			       P->final, old, strerror(-rr));
	return r;
}

static int finish_files(struct pull *P)
{
	struct ss_manifest *m = P->m;
	if (!P->cfg.bopts.no_fsync)
		for (size_t i = 0; i < m->nfiles; i++)
			if (fsync(P->files[i].fd) < 0)
				return ss_err_set(P->err, -errno, "cannot fsync %s: %s", m->files[i].name,
						  strerror(errno));
	P->prog.phase = "verify";
	ss_tick(&P->cfg, &P->ticker, &P->prog, true);
	int r = verify_files(P);
	if (r)
		return r;
	for (size_t i = 0; i < m->nfiles; i++) {
		struct ss_mfile *f = &m->files[i];
		struct timespec ts[2] = {
			{.tv_sec = 0, .tv_nsec = UTIME_OMIT},
			{.tv_sec = f->mtime_ns / 1000000000, .tv_nsec = f->mtime_ns % 1000000000},
		};
		if (f->mtime_ns < 0)
			ts[1].tv_nsec = UTIME_OMIT;
		if (fchmod(P->files[i].fd, f->mode & 07777) < 0 || futimens(P->files[i].fd, ts) < 0)
			return ss_err_set(P->err, -errno, "cannot set attributes of %s: %s", f->name,
					  strerror(errno));
		close(P->files[i].fd);
		P->files[i].fd = -1;
	}
	return install(P);
}

/* ---------------------------------------------------------------- main */

static bool busy(const struct pull *P)
{
	return P->gets_inflight || P->tasks_inflight || P->writes_inflight;
}

static int run_pipeline(struct pull *P)
{
	/* Enough tasks to keep every worker busy while GETs are in flight. */
	P->ntasks = P->cfg.threads * 2 + 2;
	if (P->ntasks > (unsigned)P->nranges)
		P->ntasks = (unsigned)SS_MAX(P->nranges, 1);
	P->max_gets = SS_MIN(P->ntasks, ss_backend_max_inflight(P->store));
	/* A range may overrun its budget by one frame, which is never split. */
	uint32_t fmax = SS_MAX(P->m->frame_max, P->m->chunk_max);
	P->in_cap = SS_ALIGN_UP((size_t)RANGE_MAX + ZSTD_compressBound(fmax), 4096);
	P->out_cap = SS_ALIGN_UP((size_t)RANGE_MAX + fmax, 4096);
	size_t per = P->in_cap + P->out_cap;
	P->mem_len = per * P->ntasks;
	P->mem = ss_map_alloc(P->mem_len);
	P->tasks = calloc(P->ntasks, sizeof(*P->tasks));
	if (!P->mem || !P->tasks)
		return ss_err_set(P->err, -ENOMEM, "cannot allocate the pull pipeline");
	for (unsigned i = 0; i < P->ntasks; i++) {
		struct rtask *t = &P->tasks[i];
		t->P = P;
		t->in = P->mem + per * i;
		t->out = t->in + P->in_cap;
		t->cptr = malloc(sizeof(*t->cptr) * (P->max_range_chunks ? P->max_range_chunks : 1));
		if (!t->cptr)
			return ss_err_set(P->err, -ENOMEM, "cannot allocate the pull pipeline");
		t->task.run = range_work;
		t->task.op.done = range_done;
		task_release(P, t);
	}
	P->prog.phase = "pull";
	for (;;) {
		issue_gets(P);
		if (!busy(P) && (P->failed || P->next_range >= P->nranges))
			break;
		int r = ss_loop_turn(P->loop, true);
		if (r < 0) {
			fail(P, r, "event loop failed");
			return r;
		}
		ss_tick(&P->cfg, &P->ticker, &P->prog, false);
	}
	return P->failed ? P->err->code : 0;
}

int ss_pull(const struct ss_pull_opts *opts, const struct ss_config *config, struct ss_stats *st,
	    char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_stats local_st;
	struct pull *P = calloc(1, sizeof(*P));
	struct ss_snaploc loc = {0};
	struct ss_snapshot_info *info = NULL;
	uint64_t t0 = ss_now_ns(), mlen = 0;
	int r;
	if (!st)
		st = &local_st;
	memset(st, 0, sizeof(*st));
	if (!P) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	P->opts = opts;
	P->err = &err;
	P->st = st;
	if (!opts || !opts->snapshot || !opts->dest || !*opts->dest) {
		r = ss_err_set(&err, -EINVAL, "pull needs a snapshot and a destination");
		goto out;
	}
	if ((r = ss_cfg_resolve(config, &P->cfg, &err)))
		goto out;
	if ((r = ss_snaploc_parse(opts->snapshot, &loc, &err)))
		goto out;
	if ((r = ss_loop_new(256, &P->loop))) {
		ss_err_set(&err, r, "cannot set up io_uring: %s", strerror(-r));
		goto out;
	}
	const char *store_uri;
	if ((r = ss_manifest_load(opts->snapshot, P->loop, &P->cfg, &P->m, &mlen, &st->requests,
				  &err)) ||
	    (r = ss_store_for(opts->store, P->m, &loc, opts->snapshot, &store_uri, &err)) ||
	    (r = ss_idkey_for_manifest(&P->cfg.ids, P->m->keyed_ids, P->m->key_check,
				       opts->snapshot, &P->ids, &err)))
		goto out;
	struct ss_backend_opts ro = P->cfg.bopts;
	ro.read_only = true;
	if ((r = ss_backend_open(store_uri, P->loop, &ro, &P->store, &err))) {
		if (r == -ENOENT)   /* the manifest exists, its store does not */
			r = -EBADMSG;
		goto out;
	}
	st->files = P->m->nfiles;
	for (size_t i = 0; i < P->m->nfiles; i++)
		st->logical_bytes += P->m->files[i].size;
	st->zero_bytes = P->m->stats.zero_bytes;
	st->unique_chunks = P->m->nchunks;
	st->packs = P->m->npacks;
	P->prog.bytes_total = st->logical_bytes - st->zero_bytes;
	if ((r = plan(P))) {
		ss_err_set(&err, r, "cannot plan the pull: %s", strerror(-r));
		goto out;
	}
	/* Decoding the manifest and planning leave large freed temporaries in
	 * the heap; give them back before the pipeline's buffers arrive, so the
	 * peak does not carry them (bounded memory at any image size). */
	malloc_trim(0);
	if ((r = create_outputs(P)))
		goto out;
	if ((r = ss_pool_new(P->loop, P->cfg.threads, &ss_rdec_ops, &P->pool))) {
		ss_err_set(&err, r, "cannot start workers: %s", strerror(-r));
		goto out;
	}
	if ((r = run_pipeline(P)))
		goto out;
	ss_map_free(P->mem, P->mem_len);
	P->mem = NULL;
	/* Made before anything is renamed into place, so that running out of
	 * memory here leaves the destination as it was. */
	if (opts->info &&
	    (!(info = calloc(1, sizeof(*info))) || ss_info_fill(P->m, loc.canonical, mlen, false, info))) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	if (!(r = finish_files(P)) && opts->info) {
		*opts->info = info;
		info = NULL;
	}
out:
	if (P) {
		while (P->loop && busy(P) && ss_loop_turn(P->loop, true) >= 0)
			;
		ss_pool_free(P->pool);
		if (P->files && P->m)
			for (size_t i = 0; i < P->m->nfiles; i++) {
				if (P->files[i].fd >= 0)
					close(P->files[i].fd);
				free(P->files[i].done);
				XXH3_freeState(P->files[i].hs);
			}
		if (r && P->tmp && P->tmp[0])
			rm_tree(P->tmp);
		free(P->files);
		free(P->tmp);
		free(P->final);
		if (P->tasks)
			for (unsigned i = 0; i < P->ntasks; i++) {
				free(P->tasks[i].w);
				free(P->tasks[i].cptr);
			}
		free(P->tasks);
		ss_map_free(P->mem, P->mem_len);
		free(P->tstart);
		free(P->targets);
		free(P->order);
		free(P->ranges);
		ss_manifest_free(P->m);
		ss_backend_free(P->store);
		ss_loop_free(P->loop);
		ss_cfg_wipe(&P->cfg);
		free(P);
	}
	ss_snaploc_free(&loc);
	ss_info_free(info);
	st->seconds = (double)(ss_now_ns() - t0) / 1e9;
	if (r && errbuf && errlen)
		snprintf(errbuf, errlen, "%s", err.msg[0] ? err.msg : strerror(-r));
	return r;
}
