/* Push from a stream (stdin, a pipe): bytes read through io_uring as they
 * arrive → the chunker's streaming front end (same cut points as a file
 * push) → XXH3-128 ids and the store's dedup table → new chunks gathered
 * into frames of up to frame_max bytes → workers compress them → packs →
 * store → index, ref, manifest, in the same order as ss_push.
 *
 * Nothing is spooled to disk. The chunker hands chunk bytes over only for
 * the duration of a call, so new chunks are first copied to a staging
 * buffer, then into frames as frame buffers come free; the next read is
 * issued only once the stage is empty, which bounds memory: read buffer +
 * stage + frames + two packs, plus ~16 bytes per extent for the manifest.
 */
#include "push.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "xxh.h"
#include <zstd.h>

#define READ_SIZE (1u << 20)

struct sext {
	uint64_t len;
	uint32_t slot;              /* SS_SLOT_NONE: zero run */
};

struct staged {
	uint32_t slot, len, at;     /* at: offset in the stage buffer */
};

struct spush;

struct frame {
	struct ss_task task;
	struct spush *P;
	uint8_t *raw, *out;
	uint32_t raw_len;
	size_t out_len;
	uint8_t codec;              /* whole frame: zstd, or raw chunks */
	struct ss_packer_chunk *c;  /* frame_off: in raw */
	uint32_t n;
	struct frame *next;         /* free list */
	struct ss_parked parked;    /* waiting for pack space */
};

struct spush {
	/* Config, loop, store, dedup and the host's claims (claims.h): a
	 * stream cannot read a chunk again, so it stores every new chunk, but
	 * claims them first so that file pushes running meanwhile wait for
	 * its copy instead of storing one. */
	struct ss_pushbase b;
	const struct ss_push_opts *opts;
	int fd;
	struct ss_pool *pool;
	struct ss_chunker chunker;
	struct ss_chunk_stream *cs;
	struct ss_pipe pipe;        /* the first failure; parked frames */
	struct ss_stats *st;

	struct ss_fdigest *hs;
	uint64_t total, chunk_bytes;
	/* Reading */
	struct ss_op rop;
	uint8_t *rbuf;
	bool reading, eof;
	bool got_ready;             /* a completed read waits to be fed */
	int got;
	/* New chunks between the chunker and the frames */
	uint8_t *stage;
	size_t stage_cap, stage_len;
	struct staged *sq;
	size_t sq_n, sq_head, sq_cap;
	/* Frames */
	struct frame *frames;
	unsigned nframes, tasks;
	struct frame *free_frames, *cur;
	uint32_t fcap;              /* chunks a frame can list */
	struct ss_packer *packer;
	/* The file */
	struct sext *ext;
	size_t next, ext_cap;

	struct ss_progress prog;
	struct ss_ticker ticker;
};

static int add_ext(struct spush *P, uint64_t len, uint32_t slot)
{
	if (slot == SS_SLOT_NONE && P->next && P->ext[P->next - 1].slot == SS_SLOT_NONE) {
		P->ext[P->next - 1].len += len;
		return 0;
	}
	if (SS_GROW(P->ext, P->ext_cap, P->next + 1, 1024))
		return -ENOMEM;
	P->ext[P->next++] = (struct sext){.len = len, .slot = slot};
	return 0;
}

/* The chunker's callback (inside ss_chunk_stream_feed, on the loop
 * thread): record the extent; copy a new chunk's bytes to the stage. */
static int emit(void *arg, uint64_t off, const struct ss_extent *e, const uint8_t *bytes)
{
	(void)off;
	struct spush *P = arg;
	if (e->kind == SS_EXTENT_ZERO) {
		P->st->zero_bytes += e->len;
		return add_ext(P, e->len, SS_SLOT_NONE);
	}
	XXH128_canonical_t c;
	ss_chunk_id(&P->b.cfg.ids, bytes, e->len, c.digest);
	uint32_t slot;
	bool is_new;
	int r = ss_dedup_claim(P->b.dedup, c.digest, (uint32_t)e->len, &slot, &is_new);
	if (r)
		return r;
	uint32_t ref;
	if (is_new && P->b.claims)
		(void)ss_claims_claim(P->b.claims, c.digest, &ref);
	if (is_new) {
		if (P->stage_len + e->len > P->stage_cap || P->sq_n == P->sq_cap)
			return -ENOBUFS;   /* cannot happen: sized for one read */
		memcpy(P->stage + P->stage_len, bytes, e->len);
		P->sq[(P->sq_head + P->sq_n++) % P->sq_cap] =
			(struct staged){.slot = slot, .len = (uint32_t)e->len,
					.at = (uint32_t)P->stage_len};
		P->stage_len += e->len;
	}
	P->chunk_bytes += e->len;
	P->st->chunks++;
	return add_ext(P, e->len, slot);
}

/* ---------------------------------------------------------------- frames */

struct wctx {
	ZSTD_CCtx *cc;
};

/* NULL unless the compressor was made (ss_pool_new then fails with
 * -ENOMEM): frames stored raw for want of one would hide that memory ran
 * out. */
static void *wctx_create(void *arg)
{
	struct spush *P = arg;
	struct wctx *w = calloc(1, sizeof(*w));
	if (w && !(w->cc = ss_frame_cctx(P->b.cfg.zstd_level))) {
		free(w);
		w = NULL;
	}
	return w;
}

static void wctx_destroy(void *p)
{
	struct wctx *w = p;
	if (w)
		ZSTD_freeCCtx(w->cc);
	free(w);
}

/* Compress a frame; one that does not shrink by 5 % is stored as raw
 * chunks, as ss_push does (docs/DESIGN.md, "Compression frames"). */
static void frame_work(struct ss_task *t, void *wp)
{
	struct frame *f = (struct frame *)t;
	struct wctx *w = wp;
	size_t z = w && w->cc ? ss_frame_compress(w->cc, f->out, f->raw, f->raw_len) : 0;
	if (z) {
		f->codec = SS_CODEC_ZSTD;
		f->out_len = z;
	} else {
		f->codec = SS_CODEC_RAW;
		f->out_len = f->raw_len;
	}
}

static void frame_done(struct ss_op *op, int res)
{
	(void)res;
	struct frame *f = (struct frame *)((char *)op - offsetof(struct ss_task, op));
	struct spush *P = f->P;
	P->tasks--;
	ss_pipe_park(&P->pipe, &f->parked);
}

static void frame_submit(struct spush *P, struct frame *f)
{
	P->tasks++;
	ss_pool_submit(P->pool, &f->task);
}

/* Move staged chunks into frames while frames are free. */
static void fill_frames(struct spush *P)
{
	while (P->sq_n && !P->pipe.failed) {
		struct staged *s = &P->sq[P->sq_head];
		if (P->cur && (P->cur->raw_len + s->len > P->b.cfg.frame_max || P->cur->n == P->fcap)) {
			frame_submit(P, P->cur);
			P->cur = NULL;
		}
		if (!P->cur) {
			if (!P->free_frames)
				return;
			P->cur = P->free_frames;
			P->free_frames = P->cur->next;
			P->cur->raw_len = 0;
			P->cur->n = 0;
		}
		struct frame *f = P->cur;
		memcpy(f->raw + f->raw_len, P->stage + s->at, s->len);
		f->c[f->n++] = (struct ss_packer_chunk){.slot = s->slot, .frame_off = f->raw_len};
		f->raw_len += s->len;
		P->sq_head = (P->sq_head + 1) % P->sq_cap;
		P->sq_n--;
	}
	if (!P->sq_n) {
		P->stage_len = 0;
		P->sq_head = 0;
	}
}

/* ---------------------------------------------------------------- packs */

/* Copy one compressed frame into the current pack (a raw one as its
 * chunks, back to back). False: no pack buffer free yet (the frame stays
 * parked). */
static bool frame_pack(struct spush *P, struct frame *f)
{
	struct ss_err e = {0};
	const uint8_t *src = f->codec == SS_CODEC_ZSTD ? f->out : f->raw;
	int r = ss_packer_add(P->packer, src, (uint32_t)f->out_len, f->codec, f->c, f->n, &e);
	if (r == -EAGAIN)
		return false;
	if (r)
		ss_pipe_fail_msg(&P->pipe, r, e.msg);
	return true;
}

static bool frame_pack_parked(void *arg, struct ss_parked *it)
{
	return frame_pack(arg, (struct frame *)((char *)it - offsetof(struct frame, parked)));
}

/* A packed frame is free again. */
static void frame_release(void *arg, struct ss_parked *it)
{
	struct spush *P = arg;
	struct frame *f = (struct frame *)((char *)it - offsetof(struct frame, parked));
	f->next = P->free_frames;
	P->free_frames = f;
}

/* ---------------------------------------------------------------- reading */

static void read_done(struct ss_op *op, int res)
{
	struct spush *P = (struct spush *)((char *)op - offsetof(struct spush, rop));
	P->reading = false;
	P->got = res;
	P->got_ready = true;
}

static void read_submit(struct spush *P)
{
	P->rop.done = read_done;
	struct io_uring_sqe *sqe = ss_loop_sqe(P->b.loop, &P->rop);
	/* -1: the descriptor's own position, so pipes and files both work. */
	io_uring_prep_read(sqe, P->fd, P->rbuf, READ_SIZE, (uint64_t)-1);
	P->reading = true;
}

/* Feed a completed read to the chunker; end of input flushes it. */
static void feed(struct spush *P)
{
	int res = P->got;
	P->got_ready = false;
	if (res < 0) {
		if (res == -EINTR || res == -EAGAIN)
			return;
		ss_pipe_fail(&P->pipe, res, "cannot read the input");
		return;
	}
	int r;
	if (res == 0) {
		P->eof = true;
		r = ss_chunk_stream_finish(P->cs, emit, P);
	} else {
		ss_fdigest_data(P->hs, P->rbuf, (size_t)res);
		P->total += (uint64_t)res;
		r = ss_chunk_stream_feed(P->cs, P->rbuf, (size_t)res, emit, P);
	}
	if (r)
		ss_pipe_fail(&P->pipe, r, "cannot chunk the input");
}

static bool busy(const void *arg)
{
	const struct spush *P = arg;
	return P->reading || P->tasks || ss_packer_inflight(P->packer);
}

static int run(struct spush *P)
{
	P->prog.phase = "push";
	for (;;) {
		if (P->got_ready && !P->pipe.failed)
			feed(P);
		fill_frames(P);
		if (P->pipe.failed) {
			if (!busy(P))
				break;
		} else if (!P->eof) {
			if (!P->reading && !P->got_ready && !P->sq_n)
				read_submit(P);
		} else if (!P->sq_n) {
			/* Input done: the last frame, then the last pack. */
			if (P->cur && P->cur->n) {
				frame_submit(P, P->cur);
				P->cur = NULL;
			}
			if (!P->tasks && !P->pipe.head && !ss_packer_inflight(P->packer)) {
				if (ss_pipe_flush(&P->pipe, P->packer))
					continue;
				break;
			}
		}
		int t = ss_pipe_turn(&P->pipe, P->b.loop);
		if (t < 0)
			return t;
		P->prog.bytes_done = P->total;
		P->prog.zero_bytes = P->st->zero_bytes;
		P->prog.dedup_bytes = P->chunk_bytes - P->st->new_raw_bytes;
		P->prog.stored_bytes = P->st->new_stored_bytes;
		ss_tick(&P->b.cfg, &P->ticker, &P->prog, false);
	}
	return P->pipe.failed ? P->pipe.err->code : 0;
}

static int setup(struct spush *P)
{
	P->hs = ss_fdigest_new(SS_MANIFEST_MAJOR);
	P->cs = ss_chunk_stream_new(&P->chunker);
	P->rbuf = ss_map_alloc(READ_SIZE);
	/* One read's chunks, plus what the chunker held back (at most a
	 * segment) and one more chunk: the stage never overflows. */
	P->stage_cap = READ_SIZE + P->b.cfg.chunk.seg_size + P->b.cfg.chunk.max_size;
	P->stage = ss_map_alloc(P->stage_cap);
	/* A chunk shorter than a page is cut short by the zero page after it,
	 * which is not staged: at most two chunks per page of input. */
	P->sq_cap = 2 * (P->stage_cap / SS_PAGE_SIZE) + 64;
	P->sq = malloc(sizeof(*P->sq) * P->sq_cap);
	P->nframes = P->b.cfg.threads * 2 + 2;
	P->frames = calloc(P->nframes, sizeof(*P->frames));
	if (!P->hs || !P->cs || !P->rbuf || !P->stage || !P->sq || !P->frames)
		return -ENOMEM;
	P->fcap = 2 * (P->b.cfg.frame_max / SS_PAGE_SIZE) + 4;
	uint32_t fcap = P->fcap;
	for (unsigned i = 0; i < P->nframes; i++) {
		struct frame *f = &P->frames[i];
		f->P = P;
		f->raw = ss_map_alloc(P->b.cfg.frame_max);
		f->out = ss_map_alloc(ZSTD_compressBound(P->b.cfg.frame_max));
		f->c = malloc(sizeof(*f->c) * fcap);
		if (!f->raw || !f->out || !f->c)
			return -ENOMEM;
		f->task.run = frame_work;
		f->task.op.done = frame_done;
		f->next = P->free_frames;
		P->free_frames = f;
	}
	int r = ss_pushbase_packer(&P->b, P->st, &P->pipe, &P->packer);
	if (r)
		return r;
	struct ss_worker_ctx_ops wops = {.create = wctx_create, .destroy = wctx_destroy, .arg = P};
	return ss_pool_new(P->b.loop, P->b.cfg.threads, &wops, &P->pool);
}

static void teardown(struct spush *P)
{
	ss_pool_free(P->pool);
	P->pool = NULL;
	if (P->frames)
		for (unsigned i = 0; i < P->nframes; i++) {
			ss_map_free(P->frames[i].raw, P->b.cfg.frame_max);
			ss_map_free(P->frames[i].out, ZSTD_compressBound(P->b.cfg.frame_max));
			free(P->frames[i].c);
		}
	free(P->frames);
	P->frames = NULL;
	ss_packer_free(P->packer);
	P->packer = NULL;
	ss_map_free(P->rbuf, READ_SIZE);
	ss_map_free(P->stage, P->stage_cap);
	P->rbuf = P->stage = NULL;
	free(P->sq);
	P->sq = NULL;
	ss_chunk_stream_free(P->cs);
	P->cs = NULL;
}

/* ---------------------------------------------------------------- manifest */

static int build_manifest(struct spush *P, const char *name, struct ss_manifest **out,
			  struct ss_err *err)
{
	struct ss_mbuild *b = NULL;
	int r = ss_mbuild_new(&P->b.cfg, P->opts, P->b.store, P->b.dedup, false, &b);
	if (!r) {
		uint8_t d[16];
		ss_fdigest_final(P->hs, d);
		/* A stream has no mode or mtime of its own. */
		r = ss_mbuild_file(b, name, P->total, 0644, ss_mbuild_created_ns(b), d,
				   P->next);
	}
	for (size_t i = 0; !r && i < P->next; i++)
		r = ss_mbuild_extent(b, P->ext[i].len, P->ext[i].slot);
	if (!r)
		r = ss_mbuild_finish(b, P->total, P->st, out);
	ss_mbuild_free(b);
	if (r)
		ss_err_set(err, r, "cannot build the manifest: %s", strerror(-r));
	return r;
}

int ss_push_fd_impl(const struct ss_push_opts *opts, int fd, const char *name,
	       const struct ss_config_in *config, struct ss_stats *st, char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_stats local_st;
	struct spush *P = calloc(1, sizeof(*P));
	struct ss_manifest *m = NULL;
	uint64_t t0 = ss_now_ns();
	int r;
	st = ss_stats_init(st, &local_st, sizeof(*st));
	if (!P) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	P->opts = opts;
	P->fd = fd;
	P->pipe = (struct ss_pipe){.err = &err, .pack = frame_pack_parked,
				   .release = frame_release, .arg = P};
	P->st = st;
	if (!opts || !opts->snapshot || fd < 0) {
		r = ss_err_set(&err, -EINVAL, "push needs an input and a snapshot location");
		goto out;
	}
	if (!name || !*name)
		name = "stdin";
	if (!ss_manifest_name_ok(name) || strchr(name, '/')) {
		r = ss_err_set(&err, -EINVAL, "cannot store file name '%s'", name);
		goto out;
	}
	if ((r = ss_pushbase_open(&P->b, opts, config, &st->requests, &err)))
		goto out;
	ss_chunker_init(&P->chunker, &P->b.cfg.chunk);
	P->prog.phase = "index";
	struct stat sb;
	if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
		off_t pos = lseek(fd, 0, SEEK_CUR);
		if (pos >= 0 && sb.st_size > pos)
			P->prog.bytes_total = (uint64_t)(sb.st_size - pos);
	}
	ss_tick(&P->b.cfg, &P->ticker, &P->prog, true);
	/* Parents seed dedup only: no cut-point guide, as a stream is not a
	 * file whose offsets can be compared ahead of time. */
	if ((r = ss_pushbase_store(&P->b, opts, &err)) ||
	    (r = ss_load_parents(opts, P->b.loop, &P->b.cfg, P->b.store, P->b.dedup, NULL,
				 &st->requests, &err)))
		goto out;
	if ((r = setup(P))) {
		ss_err_set(&err, r, "cannot allocate the push pipeline: %s", strerror(-r));
		goto out;
	}
	if ((r = run(P)))
		goto out;
	teardown(P);
	P->prog.phase = "commit";
	ss_tick(&P->b.cfg, &P->ticker, &P->prog, true);
	if (!(r = build_manifest(P, name, &m, &err)))
		r = ss_pushbase_commit(&P->b, opts, m, st, &err);
out:
	if (P) {
		if (!ss_pushbase_settle(&P->b, busy, P)) {
			/* A read or put stays in flight on a failed loop: leave
			 * the memory it uses allocated rather than free it under
			 * it. */
			P->rbuf = NULL;
			P->frames = NULL;
			P->packer = NULL;
		}
		teardown(P);
		st->files = 1;
		st->logical_bytes = P->total;
		st->dedup_bytes = P->chunk_bytes - st->new_raw_bytes;
		free(P->ext);
		ss_fdigest_free(P->hs);
		ss_pushbase_close(&P->b, st);
	}
	ss_manifest_free(m);
	free(P);
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}
