/* Pull: manifest → plan (chunks grouped by pack, merged into large ranged
 * reads) → store GETs, many in flight → workers decompress each chunk,
 * verify its XXH3-128 and write it at its file offsets, in any order →
 * fsync → whole-file digests checked → rename into place.
 *
 * Output files are created at their full size with ftruncate and only
 * chunk extents are written, so zero runs stay holes. Nothing appears
 * under the destination's name until every byte has been verified.
 */
#include "filepull.h"

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
#include "xxh.h"
#include <zstd.h>

/* Stored bytes per GET, and raw bytes per task. From an object store a
 * GET costs a round trip, worth 8 MiB; from a local store a read costs a
 * system call, and every task's buffer and every worker's decode buffer
 * are faulted in fresh on each run. 768 KiB, with the frame a range may
 * overrun by and the buffer's slack, fits each in one huge page: 2 MiB
 * had taken two, and peak RSS at 64 MiB/256 MiB/1 GiB went from
 * 28/36/36 to 23/25/31 MiB at no cost in time. */
#define RANGE_MAX (8u << 20)
#define RANGE_MAX_LOCAL (768u << 10)
/* Read through gaps up to this size (through the node cache, only cached
 * ones: ss_ncache_holds). */
#define RANGE_GAP (256u << 10)
/* Slack around object-store-sized range buffers: a node cache block
 * (SS_NCACHE_BLOCK and its header). */
#define SLACK_OBJECT (256u << 10)
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

/* A range's budget: a GET's worth from an object store, but what a read
 * of a local file is worth when the node cache holds where it starts: a
 * pull served from the cache then runs with the buffers (a quarter of an
 * object store's, each faulted in fresh) and the parallelism of a pull
 * from a local store. */
static uint32_t range_cap(const struct pull *P, const uint8_t pack[16],
			  const struct ss_chunk_ref *c)
{
	uint64_t absent;
	if (P->range_max > RANGE_MAX_LOCAL &&
	    ss_ncache_absent(P->store, pack, c->offset, c->stored_len, &absent) == 0 &&
	    absent == 0)
		return RANGE_MAX_LOCAL;
	return P->range_max;
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

	size_t cap = 0;
	struct range *cur = NULL;
	const struct ss_chunk_ref *prev = NULL;
	for (size_t i = 0; i < n; i++) {
		const struct ss_chunk_ref *c = &m->chunks[P->order[i]];
		/* A frame is decompressed once, up to the end of the last chunk
		 * needed from it, and is never split between ranges. */
		bool same_frame = prev && prev->pack == c->pack && prev->offset == c->offset &&
				  c->codec == prev->codec && (c->codec == SS_CODEC_ZSTD || m->sealed);
		uint64_t raw_add = same_frame ? c->frame_off + c->raw_len -
							SS_MIN(c->frame_off + c->raw_len,
							       prev->frame_off + prev->raw_len)
					      : c->frame_off + c->raw_len;
		uint64_t end = cur ? cur->off + cur->len : 0;
		if (!same_frame &&
		    (!cur || c->pack != cur->pack || c->offset < end ||
		     c->offset - end > RANGE_GAP ||
		     !ss_ncache_holds(P->store, m->pack_ids[c->pack], end, c->offset - end) ||
		     c->offset + c->stored_len - cur->off > cur->cap ||
		     cur->raw + raw_add > cur->cap)) {
			if (SS_GROW(P->ranges, cap, P->nranges + 1, 64))
				return -ENOMEM;
			cur = &P->ranges[P->nranges++];
			*cur = (struct range){.pack = c->pack, .off = c->offset, .first = (uint32_t)i,
					      .cap = range_cap(P, m->pack_ids[c->pack], c)};
			P->range_buf = SS_MAX(P->range_buf, cur->cap);
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

/* ---------------------------------------------------------------- writes */

/* Pieces in file order: a file's extents are in offset order. */
static int cmp_piece(const void *a, const void *b)
{
	const struct wpiece *x = a, *y = b;
	if (x->file != y->file)
		return x->file < y->file ? -1 : 1;
	return x->ext < y->ext ? -1 : x->ext > y->ext;
}

/* Merge the range's pieces (in file order) into writes: consecutive
 * extents of one file are one write of several buffers, and buffers side
 * by side in memory are one buffer. A page-granular image has a chunk
 * per repeated page and a target per copy of it, so a write per target
 * was a system call per 4 KiB. */
static int plan_writes(struct rtask *t, size_t n)
{
	qsort(t->pc, n, sizeof(*t->pc), cmp_piece);
	size_t niov = 0;
	t->nw = 0;
	for (size_t i = 0; i < n; i++) {
		const struct wpiece *pc = &t->pc[i];
		struct wop *last = t->nw ? &t->w[t->nw - 1] : NULL;
		if (!last || last->file != pc->file || last->ext0 + last->next != pc->ext) {
			if (SS_GROW(t->w, t->wcap, t->nw + 1, 64))
				return -ENOMEM;
			last = &t->w[t->nw++];
			*last = (struct wop){.file = pc->file, .ext0 = pc->ext, .next = 0,
					     .iov0 = (uint32_t)niov, .niov = 0, .off = pc->off};
		}
		last->next++;
		struct iovec *v = last->niov ? &t->iov[niov - 1] : NULL;
		if (v && (const uint8_t *)v->iov_base + v->iov_len == pc->p) {
			v->iov_len += pc->len;
			continue;
		}
		if (SS_GROW(t->iov, t->iovcap, niov + 1, 64))
			return -ENOMEM;
		t->iov[niov++] = (struct iovec){(void *)pc->p, pc->len};
		last->niov++;
	}
	return 0;
}

/* Format 5: add what the range wrote to its files' digests, from the
 * decoded bytes still in this worker's cache: each extent is written once
 * (a range read again from the store wrote nothing the first time), so
 * the sums see every byte of the files' chunks exactly once, and nothing
 * is read back. A write's buffers are consecutive in its file, so only
 * the leaves at its two ends can be split with another range's. */
static void sum_writes(struct rtask *t)
{
	struct pull *P = t->P;
	struct ss_fdacc local = {0, 0};
	for (uint32_t i = 0; i < t->nw && !t->err; i++) {
		const struct wop *w = &t->w[i];
		struct ss_fdsum *s = P->files[w->file].sum;
		if (ss_fdsum_datav(s, w->off, t->iov + w->iov0, w->niov, &local))
			t->err = ss_err_set(&t->werr, -ENOMEM, "out of memory");
		if (i + 1 == t->nw || t->w[i + 1].file != w->file) {
			ss_fdsum_add(s, &local);
			local = (struct ss_fdacc){0, 0};
		}
	}
}

/* Write each verified chunk wherever the snapshot has it, from the worker
 * that decompressed it: the bytes are still warm in its cache, and a
 * write handed to the ring instead went to one of io_uring's own worker
 * threads (a buffered write to tmpfs cannot be done without blocking),
 * a wakeup and a context switch each. */
static void range_write(struct rtask *t)
{
	struct pull *P = t->P;
	struct range *rg = t->rg;
	size_t n = 0;
	t->nw = 0;
	t->written = 0;
	for (uint32_t i = 0; i < rg->count; i++) {
		uint32_t ci = P->order[rg->first + i];
		uint32_t len = P->m->chunks[ci].raw_len;
		for (uint32_t k = P->tstart[ci]; k < P->tstart[ci + 1]; k++) {
			const struct target *tg = &P->targets[k];
			if (SS_GROW(t->pc, t->pccap, n + 1, 64)) {
				t->err = ss_err_set(&t->werr, -ENOMEM, "cannot plan writes");
				return;
			}
			t->pc[n++] = (struct wpiece){.file = tg->file, .ext = tg->ext, .len = len,
						     .p = t->cptr[i], .off = tg->off};
			t->written += len;
		}
	}
	if (plan_writes(t, n)) {
		t->err = ss_err_set(&t->werr, -ENOMEM, "cannot plan writes");
		return;
	}
	/* A file takes one write at a time (its inode lock): a worker that
	 * finds another writing sleeps on the file's lock rather than spin
	 * in the kernel, and holds it for all its writes to the file, so
	 * that workers meet there once per range, not once per write. */
	for (uint32_t i = 0; i < t->nw && !t->err && !P->discard;) {
		const uint32_t file = t->w[i].file;
		pthread_mutex_t *lk = &P->wlock[file % SS_ARRAY_SIZE(P->wlock)];
		pthread_mutex_lock(lk);
		for (; i < t->nw && t->w[i].file == file && !t->err; i++) {
			const struct wop *w = &t->w[i];
			int64_t wr = ss_writev_all(P->files[file].fd, t->iov + w->iov0, w->niov,
						  (int64_t)w->off);
			int e = wr < 0 ? (int)wr : 0;
			if (e)
				t->err = ss_err_set(&t->werr, e, "cannot write %s: %s", P->final,
						    strerror(-e));
		}
		pthread_mutex_unlock(lk);
	}
	if (!t->err && P->m->format_major >= SS_FDIGEST_SUM_MAJOR)
		sum_writes(t);
}

static void range_work(struct ss_task *task, void *wp)
{
	struct rtask *t = (struct rtask *)task;
	/* Decoded bytes live from here to the range's last write, on this
	 * worker: the worker's buffer, not one per task, since tasks are
	 * three times the workers (to keep GETs in flight) and page faults on
	 * buffers the size of an 8 MiB range are what a cold pull pays most
	 * for besides decompressing. */
	uint8_t *dec = ss_rdec_out(wp, t->P->out_cap, t->P->cfg.bufs);
	if (!dec) {
		t->err = ss_err_set(&t->werr, -ENOMEM, "cannot allocate a range buffer");
		return;
	}
	struct ss_rrun run = {.ids = t->P->ids, .in = t->in, .base = t->rg->off,
			      .n = t->rg->count, .at = range_chunk, .dec = dec,
			      .dec_cap = t->P->out_cap, .ptr = t->cptr, .bad = range_bad, .arg = t};
	int r = ss_rdec_aead(wp, t->P->cfg.ids.crypt, t->P->m->pack_ids[t->rg->pack], &run.aead);
	if (r) {
		t->err = ss_err_set(&t->werr, r, "cannot open pack %s: %s", t->g.key, strerror(-r));
		return;
	}
	t->err = ss_range_decode(wp, &run);
	if (!t->err)
		range_write(t);
}

static void task_release(struct pull *P, struct rtask *t)
{
	t->next_free = P->free_tasks;
	P->free_tasks = t;
}

static void range_done(struct ss_op *op, int res)
{
	(void)res;
	struct rtask *t = (struct rtask *)((char *)op - offsetof(struct ss_task, op));
	struct pull *P = t->P;
	P->tasks_inflight--;
	if (t->err == -EBADMSG && !P->failed && ss_range_retry(&t->g)) {
		/* Bad bytes from the node cache (nothing was written): read
		 * the range again. */
		t->err = 0;
		ss_err_clear(&t->werr);
		t->next_free = P->retry;
		P->retry = t;
		return;
	}
	if (t->err || P->failed) {
		if (t->err && !P->failed) {
			P->failed = true;
			ss_err_set(P->err, t->err, "%s", t->werr.msg);
		}
		task_release(P, t);
		return;
	}
	P->prog.bytes_done += t->written;
	for (uint32_t i = 0; i < t->nw; i++) {
		const struct wop *w = &t->w[i];
		memset(P->files[w->file].done + w->ext0, 1, w->next);
		pull_advance(P, w->file);
	}
	task_release(P, t);
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
			char loc[PATH_MAX + 64];
			where(P, P->order[t->rg->first], loc, sizeof(loc));
			size_t n = strlen(loc);
			snprintf(loc + n, sizeof(loc) - n, ": ");
			ss_range_explain(&t->g, res, loc, P->err);
		}
		task_release(P, t);
		return;
	}
	P->st->transferred_bytes += t->rg->len;
	P->prog.stored_bytes += t->rg->len;
	P->tasks_inflight++;
	ss_pool_submit(P->pool, &t->task);
}

/* Send t's GET: false when the backend is full (-EAGAIN) or it failed
 * (then the pull has failed). */
static bool submit_get(struct pull *P, struct rtask *t)
{
	int r = ss_range_submit(P->store, &t->g, &P->st->requests);
	if (r == -EAGAIN)
		return false;
	if (r) {
		fail(P, r, "cannot request a pack");
		return false;
	}
	P->gets_inflight++;
	return true;
}

static void issue_gets(struct pull *P)
{
	while (!P->failed && P->retry && P->gets_inflight < P->max_gets) {
		struct rtask *t = P->retry;
		if (!submit_get(P, t))
			return;
		P->retry = t->next_free;
	}
	while (!P->failed && P->free_tasks && P->next_range < P->nranges &&
	       P->gets_inflight < P->max_gets) {
		struct rtask *t = P->free_tasks;
		struct range *rg = &P->ranges[P->next_range];
		t->rg = rg;
		t->err = 0;
		ss_err_clear(&t->werr);
		ss_range_prep(&t->g, P->m->pack_ids[rg->pack], rg->off, rg->len, t->in, get_done, t);
		t->g.req.slack = P->slack;
		if (!submit_get(P, t))
			return;
		P->free_tasks = t->next_free;
		P->next_range++;
	}
}

/* ---------------------------------------------------------------- main */

static bool busy(const struct pull *P)
{
	return P->gets_inflight || P->tasks_inflight;
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
	P->in_cap = SS_ALIGN_UP((size_t)P->range_buf + ZSTD_compressBound(fmax), 4096);
	P->out_cap = SS_ALIGN_UP((size_t)P->range_buf + fmax, 4096);
	/* Each task's buffer has slack on both sides of its own, and whole
	 * huge pages: a mapping whose length is not a multiple of 2 MiB is
	 * not aligned to one, and the kernel then backs the buffers 4 KiB at
	 * a time where they straddle. The slack takes a node cache's whole
	 * blocks around a range it fetches (ss_req.slack): a block of new
	 * caches where buffers are an object store's size (free within their
	 * huge pages), SS_GET_SLACK where they are a local read's (one huge
	 * page each, which a 256 KiB block on both sides would make two; a
	 * range of a warm cache seldom fetches, and then the cache copies). */
	P->slack = P->range_buf > RANGE_MAX_LOCAL ? SLACK_OBJECT : SS_GET_SLACK;
	size_t per = SS_ALIGN_UP(P->in_cap + 2 * (size_t)P->slack, SS_HUGE_PAGE);
	P->mem_len = per * P->ntasks;
	P->mem = ss_bufpool_get(P->cfg.bufs, P->mem_len, false);
	P->tasks = calloc(P->ntasks, sizeof(*P->tasks));
	if (!P->mem || !P->tasks)
		return ss_err_set(P->err, -ENOMEM, "cannot allocate the pull pipeline");
	for (unsigned i = 0; i < P->ntasks; i++) {
		struct rtask *t = &P->tasks[i];
		t->P = P;
		t->in = P->mem + per * i + P->slack;
		t->cptr = malloc(sizeof(*t->cptr) * (P->max_range_chunks ? P->max_range_chunks : 1));
		if (!t->cptr)
			return ss_err_set(P->err, -ENOMEM, "cannot allocate the pull pipeline");
		t->task.run = range_work;
		t->task.op.done = range_done;
		task_release(P, t);
	}
	P->prog.phase = P->discard ? "verify" : "pull";
	for (;;) {
		issue_gets(P);
		if (!busy(P) && (P->failed || (P->next_range >= P->nranges && !P->retry)))
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

/* ---------------------------------------------------------------- guess
 *
 * A pull through the node cache from an object store starts from the
 * manifest the cache kept for the snapshot's name, if any, rather than
 * wait for libcurl to load and the store to answer (together ~30 ms, as
 * long as a whole 256 MiB pull served from the cache takes a quarter of).
 * The store's manifest is fetched meanwhile on a thread of its own; the
 * pull publishes nothing until it is in and equal, byte for byte, to the
 * one it used, or the store answered that its ETag is still the one the
 * cache kept with those bytes (304, no bytes: ncmanifest.c). If it
 * differs (the name was pushed again), everything written is removed and
 * the pull runs again from the store's. If it cannot be had, the pull
 * fails as it would have. Stores with keys are not guessed at: their
 * manifests are opened only after the store's config has bound the key. */

static void *check_run(void *arg)
{
	struct mcheck *c = arg;
	struct ss_loop *l = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;
	/* The manifest alone, not the store's config first: a guess is made
	 * only without keys, from a manifest this node read as plain, and
	 * when the store's bytes equal it the pull's output is the same
	 * whatever the config says now. One round trip, not two; the store
	 * is often on the same cores. */
	int r = ss_loop_open(16, &l, &c->err);
	/* With the ETag the store gave the kept bytes, only a manifest that
	 * changed comes back: one that still has it answers 304, no bytes. */
	if (!r)
		r = ss_manifest_fetch_if(c->snapshot, c->loc, l, &c->cfg,
					 c->etag[0] ? c->etag : NULL, &buf, &len, c->fresh,
					 &c->requests, &c->err);
	if (r == SS_NOT_MODIFIED) {
		ss_err_clear(&c->err);
		c->same = true;
		r = 0;
	} else if (!r) {
		uint8_t d[16];
		ss_ncache_manifest_digest(buf, len, d);
		c->same = !memcmp(d, c->digest, 16);
		if (c->same && c->fresh[0] && strcmp(c->fresh, c->etag)) {
			c->retag = buf;
			c->retag_len = len;
			buf = NULL;
		}
	}
	free(buf);
	ss_loop_free(l);
	c->res = r;
	return NULL;
}

/* Start the check guess() prepared: once the pipeline's workers are up,
 * not when the guess is made. Loading libcurl maps ~30 libraries, and
 * the mappings contend with the faults and thread stacks of the pull's
 * own start (~2 ms later on a 256 MiB pull from a warm cache, against
 * the 100 ms it takes); the check is done long before the pull is. */
static void check_start(struct pull *P)
{
	struct mcheck *c = &P->check;
	if (!c->pending)
		return;
	c->pending = false;
	if (pthread_create(&c->th, NULL, check_run, c))
		check_run(c);   /* no thread: check here and now */
	else
		c->running = true;
}

/* Wait for the check; 0 when the store holds the manifest the pull used,
 * -ESTALE when it holds another, or why it could not be had (err set). */
static int check_join(struct pull *P)
{
	struct mcheck *c = &P->check;
	if (!c->pending && !c->running)
		return 0;
	check_start(P);   /* a check not started yet runs now */
	if (c->running)
		pthread_join(c->th, NULL);
	c->running = false;
	P->st->requests += c->requests;
	if (c->res)
		return ss_err_set(P->err, c->res, "%s", c->err.msg);
	return c->same ? 0 : -ESTALE;
}

/* The snapshot's directory when the pull goes through the node cache and
 * it is an object store's: only there is a kept manifest worth keeping. */
static void open_snapb(struct pull *P, const struct ss_snaploc *loc)
{
	struct ss_backend_opts ro = P->cfg.bopts;
	ro.read_only = true;
	struct ss_err e = {0};
	if (!P->cfg.cache_dir || P->cfg.ids.keyed || P->cfg.ids.crypt ||
	    ss_backend_open(loc->backend_uri, P->loop, &ro, &P->snapb, &e))
		return;
	if (ss_backend_local(P->snapb)) {
		ss_backend_free(P->snapb);
		P->snapb = NULL;
	}
}

/* Start from the kept manifest (into P->mraw), its check prepared; 0, or
 * -ENOENT when there is none to start from. */
static int guess(struct pull *P, const struct ss_snaploc *loc)
{
	struct mcheck *c = &P->check;
	if (!P->snapb || ss_ncache_manifest_get(&P->cfg, P->snapb, loc->key, &P->mraw,
						&P->mraw_len, c->digest, c->etag))
		return -ENOENT;
	c->snapshot = P->opts->snapshot;
	c->loc = loc;
	c->cfg = P->cfg;
	c->pending = true;
	return 0;
}

static int pull_once(const struct ss_pull_opts *opts, const struct ss_config_in *config,
		     struct ss_stats *st, bool may_guess, bool discard, bool *again, char *errbuf,
		     size_t errlen)
{
	struct ss_err err = {0};
	struct ss_stats local_st;
	struct pull *P = calloc(1, sizeof(*P));
	for (size_t i = 0; P && i < SS_ARRAY_SIZE(P->wlock); i++)
		pthread_mutex_init(&P->wlock[i], NULL);
	struct ss_snaploc loc = {0};
	struct ss_snapshot_info *info = NULL;
	uint64_t t0 = ss_now_ns(), mlen = 0;
	bool piping = false;   /* past loading: reading the packs */
	int r;
	st = ss_stats_init(st, &local_st, sizeof(*st));
	if (!P) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	P->opts = opts;
	P->discard = discard;
	P->err = &err;
	P->st = st;
	if (!opts || !opts->snapshot || (!discard && (!opts->dest || !*opts->dest))) {
		r = ss_err_set(&err, -EINVAL, "pull needs a snapshot and a destination");
		goto out;
	}
	if ((r = ss_cfg_resolve(config, &P->cfg, &err)))
		goto out;
	if ((r = ss_snaploc_parse(opts->snapshot, &loc, &err)))
		goto out;
	if ((r = ss_loop_open(256, &P->loop, &err)))
		goto out;
	const char *store_uri;
	const char *bind = opts->store ? opts->store : loc.default_store;
	open_snapb(P, &loc);
	bool guessing = may_guess && guess(P, &loc) == 0;
	/* The store decides what its snapshots must be: a sealed store's
	 * keys are bound before its manifest is read. */
	if (!guessing &&
	    ((r = ss_store_bind(bind, P->loop, &P->cfg, &st->requests, &err)) ||
	     (r = ss_manifest_fetch_if(opts->snapshot, &loc, P->loop, &P->cfg, NULL, &P->mraw,
				       &P->mraw_len, P->metag, &st->requests, &err))))
		goto out;
	if ((r = ss_manifest_parse(opts->snapshot, &loc, &P->cfg, 0, P->mraw, P->mraw_len, &P->m,
				   &err)) ||
	    (r = ss_store_for(opts->store, P->m, &loc, opts->snapshot, &store_uri, &err)) ||
	    (r = ss_idkey_for_manifest(&P->cfg.ids, P->m->keyed_ids, P->m->key_check,
				       opts->snapshot, &P->ids, &err))) {
		/* A guess that is not one to go on with: as without it. */
		*again = guessing;
		goto out;
	}
	/* Digests that need the files in order: verify reads them so. */
	if (discard && P->m->format_major < SS_FDIGEST_SUM_MAJOR) {
		r = SS_PULL_ORDERED;
		goto out;
	}
	mlen = P->mraw_len;
	if (!P->snapb || P->check.pending) {
		/* Nothing to keep (or kept already). */
		free(P->mraw);
		P->mraw = NULL;
	}
	struct ss_backend_opts ro = P->cfg.bopts;
	ro.read_only = true;
	if ((r = ss_backend_open(store_uri, P->loop, &ro, &P->store, &err))) {
		if (r == -ENOENT && discard) {
			/* verify's reads in order say what that means (a
			 * snapshot of zero pages needs no store). */
			ss_err_clear(&err);
			r = SS_PULL_ORDERED;
		} else if (r == -ENOENT) {   /* the manifest exists, its store does not */
			r = -EBADMSG;
		}
		goto out;
	}
	if ((r = ss_ncache_wrap(&P->cfg, &P->store, &err)))
		goto out;
	st->files = P->m->nfiles;
	for (size_t i = 0; i < P->m->nfiles; i++)
		st->logical_bytes += P->m->files[i].size;
	st->zero_bytes = P->m->stats.zero_bytes;
	st->unique_chunks = P->m->nchunks;
	st->packs = P->m->npacks;
	P->prog.bytes_total = st->logical_bytes - st->zero_bytes;
	P->range_max = ss_backend_local(P->store) ? RANGE_MAX_LOCAL : RANGE_MAX;
	if ((r = plan(P))) {
		ss_err_set(&err, r, "cannot plan the pull: %s", strerror(-r));
		goto out;
	}
	/* Decoding the manifest and planning leave large freed temporaries in
	 * the heap; give them back before the pipeline's buffers arrive, so the
	 * peak does not carry them (bounded memory at any image size). */
	malloc_trim(0);
	piping = true;
	if ((r = discard ? pull_create_sums(P) : pull_create_outputs(P)))
		goto out;
	if ((r = ss_pool_new(P->loop, P->cfg.threads, &ss_rdec_scratch_ops, &P->pool))) {
		ss_err_set(&err, r, "cannot start workers: %s", strerror(-r));
		goto out;
	}
	check_start(P);
	if ((r = run_pipeline(P)))
		goto out;
	ss_bufpool_put(P->cfg.bufs, P->mem, P->mem_len);
	P->mem = NULL;
	/* Made before anything is renamed into place, so that running out of
	 * memory here leaves the destination as it was. */
	if (opts->info &&
	    (!(info = calloc(1, sizeof(*info))) || ss_info_fill(P->m, loc.canonical, mlen, false, info))) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	/* Nothing is published from a manifest the store does not hold. */
	if ((r = check_join(P)) == -ESTALE) {
		*again = true;
		goto out;
	}
	if (r)
		goto out;
	if (discard) {
		if ((r = pull_verify_sums(P)) == -E2BIG) {
			ss_err_clear(&err);
			r = SS_PULL_ORDERED;
		}
		if (!r) {
			st->chunks = P->tstart[P->m->nchunks];
			ss_tick(&P->cfg, &P->ticker, &P->prog, true);
		}
	} else if (!(r = pull_finish_files(P)) && opts->info) {
		*opts->info = info;
		info = NULL;
	}
	if (!r && P->mraw)
		ss_ncache_manifest_put(&P->cfg, P->snapb, loc.key, P->mraw, P->mraw_len, P->metag);
	if (!r && P->check.retag)
		ss_ncache_manifest_put(&P->cfg, P->snapb, loc.key, P->check.retag,
				       P->check.retag_len, P->check.fresh);
out:
	/* verify's messages name the snapshot, as its reads in order do;
	 * those from loading the manifest already did. */
	if (discard && r < 0 && piping) {
		char msg[sizeof(err.msg)];
		snprintf(msg, sizeof(msg), "%s", err.msg);
		ss_err_clear(&err);
		ss_err_set(&err, r, "snapshot %s: %s", opts->snapshot, msg);
	}
	if (P) {
		if (check_join(P) == -ESTALE && r)
			*again = true;   /* whatever went wrong, it went wrong on a stale guess */
		while (P->loop && busy(P) && ss_loop_turn(P->loop, true) >= 0)
			;
		ss_pool_free(P->pool);
		if (P->files && P->m)
			for (size_t i = 0; i < P->m->nfiles; i++) {
				if (P->files[i].fd >= 0)
					close(P->files[i].fd);
				free(P->files[i].done);
				ss_fdigest_free(P->files[i].hs);
				ss_fdsum_free(P->files[i].sum);
			}
		if (r && P->tmp && P->tmp[0])
			pull_rm_tree(P->tmp);
		free(P->files);
		free(P->lscratch);
		free(P->tmp);
		free(P->final);
		if (P->tasks)
			for (unsigned i = 0; i < P->ntasks; i++) {
				free(P->tasks[i].w);
				free(P->tasks[i].pc);
				free(P->tasks[i].iov);
				free(P->tasks[i].cptr);
			}
		free(P->tasks);
		ss_bufpool_put(P->cfg.bufs, P->mem, P->mem_len);
		free(P->tstart);
		free(P->targets);
		free(P->order);
		free(P->ranges);
		ss_manifest_free(P->m);
		free(P->mraw);
		free(P->check.retag);
		ss_ncache_stats(P->store, st);
		ss_backend_free(P->store);
		ss_backend_free(P->snapb);
		ss_loop_free(P->loop);
		ss_cfg_wipe(&P->cfg);
		for (size_t i = 0; i < SS_ARRAY_SIZE(P->wlock); i++)
			pthread_mutex_destroy(&P->wlock[i]);
		free(P);
	}
	ss_snaploc_free(&loc);
	ss_info_free(info);
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}

int ss_pull_impl(const struct ss_pull_opts *opts, const struct ss_config_in *config,
		 struct ss_stats *st, char *errbuf, size_t errlen)
{
	bool again = false;
	int r = pull_once(opts, config, st, true, false, &again, errbuf, errlen);
	if (again)
		r = pull_once(opts, config, st, false, false, &again, errbuf, errlen);
	return r;
}

int ss_pull_verify(const struct ss_verify_opts *opts, const struct ss_config_in *config,
		   struct ss_stats *st, char *errbuf, size_t errlen)
{
	struct ss_pull_opts po = {.size = sizeof(po), .snapshot = opts->snapshot,
				  .store = opts->store};
	bool again = false;
	int r = pull_once(&po, config, st, true, true, &again, errbuf, errlen);
	if (again)
		r = pull_once(&po, config, st, false, true, &again, errbuf, errlen);
	/* Not an error: nothing to say (ss_op_end wrote one for any r). */
	if (r == SS_PULL_ORDERED && errbuf && errlen)
		errbuf[0] = '\0';
	return r;
}
