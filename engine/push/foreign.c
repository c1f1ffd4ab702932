/* Chunks another push on this host claimed (claims.h) and did not land
 * in time: stored by this push after all, from its own source. */
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
#include <xxhash.h>
#include <zstd.h>

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
			return ss_err_set(P->pipe.err, n < 0 ? -errno : -EAGAIN,
					  "cannot read %s again: %s (no snapshot written)", pf->path,
					  n < 0 ? strerror(errno) : "it shrank");
		got += (uint32_t)n;
	}
	uint8_t id[16];
	ss_chunk_id(&P->b.cfg.ids, buf, f->len, id);
	if (memcmp(id, de->id, 16) != 0)
		return ss_err_set(P->pipe.err, -EAGAIN,
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
			return ss_err_set(P->pipe.err, r, "event loop failed: %s", strerror(-r));
		if (P->pipe.failed)
			return P->pipe.err->code;
	}
	return r ? ss_err_set(P->pipe.err, r, "%s", e.msg) : 0;
}

/* The chunks other pushes on this host claimed (claims.h). Runs once this
 * push's own packs have all landed, so pushes waiting for each other only
 * ever wait for what is being stored or already is. A chunk whose
 * claimer lands it gets the claimer's location; one whose claimer died,
 * gave up or takes too long is claimed again and stored here. */
int push_resolve_foreign(struct push *P)
{
	if (!P->nforeign)
		return 0;
	uint64_t deadline = ss_now_ns() + FOREIGN_WAIT_NS;
	uint32_t max = P->b.cfg.chunk.max_size;
	uint8_t *buf = malloc(max), *zbuf = malloc(ZSTD_compressBound(max));
	ZSTD_CCtx *cc = ss_frame_cctx(P->b.cfg.zstd_level);
	int r = buf && zbuf && cc ? 0 : ss_err_set(P->pipe.err, -ENOMEM, "out of memory");
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
					ss_err_set(P->pipe.err, r, "out of memory");
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
			push_progress(P, false);
		}
	}
	struct ss_err e = {0};
	int f = !r && stored ? ss_packer_flush(P->packer, &e) : 0;
	if (f < 0)
		r = ss_err_set(P->pipe.err, f, "%s", e.msg);
	while (!r && !P->pipe.failed && ss_packer_inflight(P->packer)) {
		int t = ss_loop_turn(P->b.loop, true);
		if (t < 0)
			r = ss_err_set(P->pipe.err, t, "event loop failed: %s", strerror(-t));
	}
	if (!r && P->pipe.failed)
		r = P->pipe.err->code;
	P->nforeign = 0;
	free(buf);
	free(zbuf);
	ZSTD_freeCCtx(cc);
	return r;
}
