/* verify and cat: a snapshot's files read in order through oread, checked
 * chunk by chunk and file by file; cat also writes one file to a
 * descriptor. verify reads as a pull does where the snapshot's digests
 * allow (ss_pull_verify) and comes here for the rest. */
#include "gvstate.h"
#include "pull.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* What verify and cat share: the manifest, the store, the loop. */
struct reader {
	struct ss_cfg cfg;
	struct ss_loop *loop;
	struct ss_manifest *m;
	const struct ss_idkey *ids;   /* the manifest's chunk ids */
	struct ss_snaploc loc;
	struct ss_backend *store;
	const char *store_uri;
	struct ss_progress prog;
	struct ss_ticker ticker;
};

static int reader_open(struct reader *rd, const char *snapshot, const char *store,
		       const struct ss_config_in *config, struct ss_stats *st, struct ss_err *err)
{
	int r;
	if ((r = ss_cfg_resolve(config, &rd->cfg, err)) ||
	    (r = ss_snaploc_parse(snapshot, &rd->loc, err)))
		return r;
	if ((r = ss_loop_new(256, &rd->loop)))
		return ss_err_set(err, r, "cannot set up io_uring: %s", strerror(-r));
	/* A sealed store's keys are bound before its manifest is read. */
	if ((r = ss_store_bind(store ? store : rd->loc.default_store, rd->loop, &rd->cfg,
			       &st->requests, err)))
		return r;
	if ((r = ss_manifest_load(snapshot, rd->loop, &rd->cfg, &rd->m, NULL, &st->requests, err)) ||
	    (r = ss_idkey_for_manifest(&rd->cfg.ids, rd->m->keyed_ids, rd->m->key_check, snapshot,
				       &rd->ids, err)))
		return r;
	st->files = rd->m->nfiles;
	for (size_t i = 0; i < rd->m->nfiles; i++)
		st->logical_bytes += rd->m->files[i].size;
	st->unique_chunks = rd->m->nchunks;
	st->packs = rd->m->npacks;
	if ((r = ss_store_for(store, rd->m, &rd->loc, snapshot, &rd->store_uri, err)))
		return r;
	r = ss_store_backend_open(rd->store_uri, rd->loop, &rd->cfg, &rd->store, err);
	if (r == -ENOENT && rd->m->nchunks == 0) {
		ss_err_clear(err);   /* nothing to fetch: all zero, or empty */
		return 0;
	}
	return r ? r : ss_ncache_wrap(&rd->cfg, &rd->store, err);
}

static void reader_close(struct reader *rd)
{
	ss_manifest_free(rd->m);
	ss_backend_free(rd->store);
	ss_loop_free(rd->loop);
	ss_snaploc_free(&rd->loc);
	ss_cfg_wipe(&rd->cfg);
}

/* ---------------------------------------------------------------- verify */

static int verify_sink(void *arg, const struct ss_ounit_view *u)
{
	(void)arg;
	(void)u;
	return 0;
}

/* Every referenced pack exists and is long enough for the frames in it. */
static int verify_quick(struct reader *rd, const char *snapshot, struct ss_stats *st,
			struct ss_err *err)
{
	const struct ss_manifest *m = rd->m;
	uint64_t *need = calloc(m->npacks ? m->npacks : 1, sizeof(*need));
	size_t *user = calloc(m->npacks ? m->npacks : 1, sizeof(*user));
	struct ss_req *reqs = calloc(m->npacks ? m->npacks : 1, sizeof(*reqs));
	char (*keys)[64] = calloc(m->npacks ? m->npacks : 1, sizeof(*keys));
	int r = 0;
	if (!need || !user || !reqs || !keys) {
		r = ss_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t c = 0; c < m->nchunks; c++) {
		const struct ss_chunk_ref *x = &m->chunks[c];
		need[x->pack] = SS_MAX(need[x->pack], x->offset + x->stored_len);
	}
	/* For messages: the first file offset using each pack. */
	for (size_t p = 0; p < m->npacks; p++)
		user[p] = SIZE_MAX;
	for (size_t p = 0; p < m->npacks; p++) {
		ss_pack_key(m->pack_ids[p], keys[p]);
		reqs[p] = (struct ss_req){.kind = SS_REQ_STAT, .key = keys[p]};
	}
	rd->prog.phase = "verify";
	rd->prog.items_total = m->npacks;
	if (m->npacks && (r = ss_call_many(rd->store, rd->loop, reqs, m->npacks, &st->requests))) {
		ss_err_set(err, r, "event loop failed: %s", strerror(-r));
		goto out;
	}
	for (size_t p = 0; !r && p < m->npacks; p++) {
		int res = reqs[p].op.res;
		const char *why = NULL;
		if (res == -ENOENT)
			why = "is missing from the store (was it deleted?)";
		else if (res < 0)
			r = ss_err_set(err, res, "snapshot %s: cannot stat pack %s: %s", snapshot,
				       keys[p], strerror(-res));
		else if (reqs[p].size < need[p] + ss_pack_tail_size(0, m->sealed ? SS_PACK_SEALED : 0))
			why = "is shorter than the manifest says (truncated or replaced)";
		if (!why)
			continue;
		/* Name the first file and offset that needs the pack. */
		const char *fname = "?";
		uint64_t foff = 0;
		bool found = false;
		for (size_t f = 0; !found && f < m->nfiles; f++) {
			uint64_t off = 0;
			for (size_t e = 0; !found && e < m->files[f].next; e++) {
				uint32_t ch = m->files[f].ext[e].chunk;
				if (ch && m->chunks[ch - 1].pack == p) {
					fname = m->files[f].name;
					foff = off;
					found = true;
				}
				off += m->files[f].ext[e].len;
			}
		}
		r = ss_err_set(err, -EBADMSG, "snapshot %s: file '%s' at offset %llu: pack %s %s",
			       snapshot, fname, (unsigned long long)foff, keys[p], why);
	}
	rd->prog.items_done = m->npacks;
	ss_tick(&rd->cfg, &rd->ticker, &rd->prog, true);
out:
	free(need);
	free(user);
	free(reqs);
	free(keys);
	return r;
}

int ss_verify_impl(const struct ss_verify_opts *opts, const struct ss_config_in *config,
	      struct ss_stats *st, char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_stats local_st;
	struct reader rd = {0};
	uint64_t t0 = ss_now_ns();
	int r;
	st = ss_stats_init(st, &local_st, sizeof(*st));
	if (!opts || !opts->snapshot) {
		r = ss_err_set(&err, -EINVAL, "verify needs a snapshot");
		goto out;
	}
	/* Read as a pull reads, many ranges at once and packs in store order,
	 * where the snapshot's digests allow (pull.h): from an object store
	 * ten times as fast as in file order. */
	if (!opts->quick) {
		r = ss_pull_verify(opts, config, st, errbuf, errlen);
		if (r != SS_PULL_ORDERED)
			return r;
		/* What that pass read counts too. */
		uint64_t requests = st->requests, bytes = st->transferred_bytes;
		st = ss_stats_init(st, &local_st, sizeof(*st));
		st->requests = requests;
		st->transferred_bytes = bytes;
	}
	if ((r = reader_open(&rd, opts->snapshot, opts->store, config, st, &err)))
		goto out;
	st->zero_bytes = rd.m->stats.zero_bytes;
	if (opts->quick) {
		if (!rd.store)
			goto out;   /* no chunks, so no packs to look for */
		r = verify_quick(&rd, opts->snapshot, st, &err);
		goto out;
	}
	rd.prog.phase = "verify";
	rd.prog.bytes_total = st->logical_bytes;
	struct ss_oread_opts o = {
		.snapshot = opts->snapshot,
		.m = rd.m,
		.cfg = &rd.cfg,
		.ids = rd.ids,
		.loop = rd.loop,
		.store = rd.store,
		.file_first = 0,
		.file_end = (uint32_t)rd.m->nfiles,
		.sink = verify_sink,
		.st = st,
		.prog = &rd.prog,
		.ticker = &rd.ticker,
	};
	r = ss_oread_run(&o, &err);
	if (!r)
		ss_tick(&rd.cfg, &rd.ticker, &rd.prog, true);
out:
	ss_ncache_stats(rd.store, st);
	reader_close(&rd);
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}

/* ---------------------------------------------------------------- cat */

#define CAT_ZEROS (1u << 20)

/* Writes go out one at a time, in order, from the units the reader hands
 * over (kept until written). To a pipe they go at the current position;
 * to a regular file being appended to, at explicit offsets, so that zero
 * runs can be skipped and left as holes. */
struct catw {
	struct ss_op op;
	struct ss_oread *R;
	struct ss_loop *loop;
	int fd;
	bool sparse;
	uint64_t base;              /* file offset of byte 0 (sparse) */
	uint64_t written;           /* bytes of the file done so far */
	const uint8_t *zeros;
	/* Units waiting to be written, in order. */
	void **q;
	struct ss_ounit_view *qv;
	size_t qhead, qlen, qcap;
	size_t cur_ext;             /* in the head unit */
	uint64_t cur_in;            /* bytes of that extent written */
	bool inflight;
	const struct ss_mfile *f;
	/* A gVisor state file stored inflated: rebuilt as it arrives. */
	struct ss_gvs_out *gv;
	/* ss_cat_opts.on_written, and what it was told last. */
	int (*on_written)(void *arg, uint64_t done, uint64_t total);
	void *on_written_arg;
	uint64_t told_done, told_total;
};

/* Tell the caller how much of the output is final, when that changed.
 * Returns the callback's answer (0: go on). */
static int cat_report(struct catw *w)
{
	if (!w->on_written)
		return 0;
	uint64_t done = w->written, total = w->f->size;
	if (w->gv) {
		struct ss_gvs_hdr h;
		done = ss_gvs_out_written(w->gv);
		total = ss_gvs_out_header(w->gv, &h) ? ss_gvs_rebuilt_size(&h, w->f->size) : 0;
	}
	if (done == w->told_done && total == w->told_total)
		return 0;
	w->told_done = done;
	w->told_total = total;
	return w->on_written(w->on_written_arg, done, total);
}

static void cat_report_or_stop(struct catw *w)
{
	int r = ss_oread_failed(w->R) ? 0 : cat_report(w);
	if (r)
		ss_oread_fail(w->R, r, "stopped by the caller of cat: %s", strerror(-r));
}

static void cat_next(struct catw *w);

static void cat_pop(struct catw *w)
{
	void *u = w->q[w->qhead];
	w->qhead = (w->qhead + 1) % w->qcap;
	w->qlen--;
	w->cur_ext = SIZE_MAX;
	ss_oread_release(w->R, u);
}

static void cat_write_done(struct ss_op *op, int res)
{
	struct catw *w = (struct catw *)op;
	w->inflight = false;
	if (res <= 0) {
		int e = res < 0 ? res : -EIO;
		ss_oread_fail(w->R, e, "cannot write the output of '%s': %s", w->f->name,
			      strerror(-e));
	} else {
		w->cur_in += (uint64_t)res;
		w->written += (uint64_t)res;
	}
	cat_next(w);
}

/* Start the next write, or release what is done. */
static void cat_next(struct catw *w)
{
	while (!w->inflight && w->qlen) {
		struct ss_ounit_view *v = &w->qv[w->qhead];
		if (ss_oread_failed(w->R)) {
			cat_pop(w);
			continue;
		}
		if (w->cur_ext == SIZE_MAX) {
			w->cur_ext = v->e0;
			w->cur_in = 0;
		}
		/* Past finished extents (a write may span several). */
		while (w->cur_ext < v->e1 && w->cur_in >= w->f->ext[w->cur_ext].len) {
			w->cur_in -= w->f->ext[w->cur_ext].len;
			w->cur_ext++;
		}
		if (w->cur_ext == v->e1) {
			cat_pop(w);
			continue;
		}
		size_t i = w->cur_ext - v->e0;
		uint64_t left = w->f->ext[w->cur_ext].len - w->cur_in;
		const uint8_t *p = v->ptr[i];
		if (!p && w->sparse) {
			w->cur_in += left;   /* a hole: ftruncate makes it at the end */
			w->written += left;
			continue;
		}
		size_t n;
		if (p) {
			p += w->cur_in;
			n = (size_t)SS_MIN(left, (uint64_t)1 << 30);
			/* Neighbours in memory (chunks of one frame) go in one write. */
			for (size_t j = w->cur_ext + 1; j < v->e1 && n < (1u << 30); j++) {
				const uint8_t *q = v->ptr[j - v->e0];
				if (q != p + n)
					break;
				n += (size_t)w->f->ext[j].len;
			}
		} else {
			p = w->zeros;
			n = (size_t)SS_MIN(left, (uint64_t)CAT_ZEROS);
		}
		w->op.done = cat_write_done;
		struct io_uring_sqe *sqe = ss_loop_sqe(w->loop, &w->op);
		io_uring_prep_write(sqe, w->fd, p, (unsigned)n,
				    w->sparse ? w->base + w->written : (uint64_t)-1);
		w->inflight = true;
	}
	cat_report_or_stop(w);
}

/* The inflated form goes through the rebuilder, which writes (blocking)
 * the header and each framed chunk; the unit is done with at once. */
static int cat_gv_sink(struct catw *w, const struct ss_ounit_view *u)
{
	int r = 0;
	for (size_t e = u->e0; !r && e < u->e1; e++)
		r = ss_gvs_out_put(w->gv, u->ptr[e - u->e0], w->f->ext[e].len);
	if (!r)
		r = ss_gvs_out_flush(w->gv);   /* the unit's bytes are released next */
	if (r == -EBADMSG)
		ss_oread_fail(ss_oread_of(u->unit), r,
			      "'%s' is stored as an inflated gVisor state file, but its stored "
			      "bytes have no state file header (corrupt or forged snapshot)",
			      w->f->name);
	else if (r)
		ss_oread_fail(ss_oread_of(u->unit), r, "cannot write the output of '%s': %s",
			      w->f->name, strerror(-r));
	else
		cat_report_or_stop(w);
	return r;
}

static int cat_sink(void *arg, const struct ss_ounit_view *u)
{
	struct catw *w = arg;
	w->R = ss_oread_of(u->unit);
	if (w->gv)
		return cat_gv_sink(w, u);
	if (w->qlen == w->qcap)
		return -ENOSPC;   /* cannot happen: the reader has fewer units */
	size_t at = (w->qhead + w->qlen) % w->qcap;
	w->q[at] = u->unit;
	w->qv[at] = *u;
	w->qlen++;
	cat_next(w);
	return 1;
}

int ss_cat_impl(const struct ss_cat_opts *opts, const struct ss_config_in *config, struct ss_stats *st,
	   char *errbuf, size_t errlen)
{
	struct ss_err err = {0};
	struct ss_stats local_st;
	struct reader rd = {0};
	struct catw w = {0};
	uint64_t t0 = ss_now_ns();
	int r;
	st = ss_stats_init(st, &local_st, sizeof(*st));
	if (!opts || !opts->snapshot || opts->fd < 0) {
		r = ss_err_set(&err, -EINVAL, "cat needs a snapshot and a descriptor");
		goto out;
	}
	if ((r = reader_open(&rd, opts->snapshot, opts->store, config, st, &err)))
		goto out;
	const struct ss_manifest *m = rd.m;
	size_t fi = SIZE_MAX;
	if (!opts->file) {
		if (m->nfiles != 1) {
			r = ss_err_set(&err, -EISDIR,
				       "snapshot %s holds %zu files; name one (snapstream cat %s "
				       "<file>)",
				       opts->snapshot, m->nfiles, opts->snapshot);
			goto out;
		}
		fi = 0;
	} else {
		for (size_t i = 0; i < m->nfiles; i++)
			if (strcmp(m->files[i].name, opts->file) == 0)
				fi = i;
		if (fi == SIZE_MAX) {
			r = ss_err_set(&err, -ENOENT, "snapshot %s has no file '%s'", opts->snapshot,
				       opts->file);
			goto out;
		}
	}
	st->files = 1;
	st->logical_bytes = m->files[fi].size;
	w.f = &m->files[fi];
	w.fd = opts->fd;
	w.loop = rd.loop;
	w.cur_ext = SIZE_MAX;
	w.qcap = 64;
	w.q = calloc(w.qcap, sizeof(*w.q));
	w.qv = calloc(w.qcap, sizeof(*w.qv));
	w.zeros = calloc(1, CAT_ZEROS);
	w.on_written = opts->on_written;
	w.on_written_arg = opts->on_written_arg;
	if (!w.q || !w.qv || !w.zeros) {
		r = ss_err_set(&err, -ENOMEM, "out of memory");
		goto out;
	}
	/* Holes only where the file has nothing yet: writing at its end. */
	struct stat sb;
	off_t pos = lseek(opts->fd, 0, SEEK_CUR);
	int fl = fcntl(opts->fd, F_GETFL);
	if (!w.on_written && fstat(opts->fd, &sb) == 0 && S_ISREG(sb.st_mode) && pos >= 0 &&
	    fl >= 0 && !(fl & O_APPEND) && sb.st_size <= pos) {
		w.sparse = true;
		w.base = (uint64_t)pos;
	}
	if (w.f->transform) {
		w.sparse = false;
		if ((r = ss_gvs_out_new_sized(opts->fd, w.f->size, &w.gv))) {
			ss_err_set(&err, r, "out of memory");
			goto out;
		}
	}
	rd.prog.phase = "cat";
	rd.prog.bytes_total = w.f->size;
	if (!rd.store && m->nchunks) {
		r = ss_err_set(&err, -ENOENT, "no store at %s", rd.store_uri);
		goto out;
	}
	struct ss_oread_opts o = {
		.snapshot = opts->snapshot,
		.m = m,
		.cfg = &rd.cfg,
		.ids = rd.ids,
		.loop = rd.loop,
		.store = rd.store,
		.file_first = (uint32_t)fi,
		.file_end = (uint32_t)fi + 1,
		.sink = cat_sink,
		.sink_arg = &w,
		.st = st,
		.prog = &rd.prog,
		.ticker = &rd.ticker,
	};
	r = ss_oread_run(&o, &err);
	if (!r && w.gv && (r = ss_gvs_out_finish(w.gv))) {
		if (r == -EBADMSG)
			ss_err_set(&err, r, "'%s' is stored as an inflated gVisor state file, but "
				   "its stored bytes are too short for a header (corrupt or forged "
				   "snapshot)", w.f->name);
		else
			ss_err_set(&err, r, "cannot write the output of '%s': %s", w.f->name,
				   strerror(-r));
	}
	/* A rebuilt state file's last bytes were written by the finish. */
	if (!r && w.gv && (r = cat_report(&w)))
		ss_err_set(&err, r, "stopped by the caller of cat: %s", strerror(-r));
	if (!r && w.sparse && w.written) {
		/* The holes at the end exist once the file has its full size. */
		uint64_t end = w.base + w.written;
		if (fstat(opts->fd, &sb) == 0 && (uint64_t)sb.st_size < end &&
		    ftruncate(opts->fd, (off_t)end) < 0)
			r = ss_err_set(&err, -errno, "cannot size the output: %s", strerror(errno));
		if (!r && lseek(opts->fd, (off_t)end, SEEK_SET) < 0)
			r = ss_err_set(&err, -errno, "cannot seek the output: %s", strerror(errno));
	}
out:
	ss_gvs_out_free(w.gv);
	free(w.q);
	free(w.qv);
	free((void *)w.zeros);
	ss_ncache_stats(rd.store, st);
	reader_close(&rd);
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}
