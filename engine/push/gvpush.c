/* gVisor state files pushed in their inflated form (docs/DESIGN.md,
 * "gVisor state files"; the format in core/gvstate.h).
 *
 * The push pipeline reads files at offsets; the inflated form of a state
 * file exists nowhere on disk. A decoder makes it: the header verbatim,
 * then each chunk inflated (chunks are independent DEFLATE streams,
 * inflated several at a time on threads of its own). Where it goes
 * depends on when the file is found:
 *
 * - a file that is final (no writer, or found once the writer is done)
 *   is inflated whole into a memfd before the push reads it, and to the
 *   rest of the push the memfd is the file;
 * - a file followed behind its writer is inflated into a ring of
 *   chunk-sized slots, which the pipeline copies its segments out of
 *   (push_gv_read) as the decoder fills it. The decoder never overwrites
 *   a slot the pipeline has not copied yet. A memfd there cost a copy
 *   into it, page allocation and freeing in the kernel, and io_uring
 *   worker reads back out: a fifth of a followed push's CPU, beside a
 *   checkpointer that needs the cores (docs/ATEOM.md, "Checkpoint cost").
 *
 * A file is a state file only if every byte of it parses. Outside follow
 * mode that is known before the push reads anything (the decoder runs to
 * the end first; a file that fails is pushed as it is). In follow mode
 * the header decides, before the push reads a byte of the file; a file
 * whose body then fails to parse sets P->gv_fallback, the push fails, and
 * ss_push_impl runs it again without the transform. */
#include "filepush.h"
#include "gvstate.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include "xxh.h"

enum gv_state {
	GV_DECIDING,      /* waiting for the header */
	GV_INFLATING,     /* a state file by its header: being inflated */
	GV_DONE,          /* every byte parsed; the inflated form is complete */
	GV_PLAIN,         /* not a state file: push the file itself */
	GV_FAILED,        /* taken for one, then a byte did not parse */
};

/* Chunks inflated per batch, per thread: enough to keep each busy. */
#define GV_BATCH_PER_THREAD 4
/* Inflated bytes per batch at most, whatever the chunk size. */
#define GV_BATCH_MAX (64u << 20)
#define GV_POLL_NS 2000000

struct gvfile {
	int raw_fd, mem_fd;
	unsigned threads;
	struct ss_buffers *bufs;  /* the decoder's buffers come from here */
	bool follow;              /* read behind a writer, in a thread */
	bool appends;             /* ss_push_opts.writer_appends: no second read */
	uint64_t raw_size;        /* bytes of the file (final once done) */
	int64_t raw_mtime;
	uint32_t raw_mode;
	uint64_t stored;          /* bytes of the inflated form */
	/* Follow mode: the inflated form as it is made. The header, then
	 * chunk j in slot j % nslots of the ring. produced: bytes of the
	 * inflated form made so far; consumed: bytes the pipeline copied
	 * out (it reads in order), whose slots the decoder may reuse. */
	uint8_t *hdr;
	uint32_t hdr_len, cs, nslots;
	uint8_t *ring;
	size_t ring_cap;
	atomic_uint_fast64_t produced, consumed;
	pthread_t th;
	bool threaded;
	uint64_t seg_size;        /* the pipeline's segments (ring_slots) */
	atomic_int state;
	atomic_bool writer_done, stop;
	char why[200];
	/* Outside follow mode: inflated bytes the memfd may hold before the
	 * rest goes to an unnamed file in spill_dir (gv_spill). */
	uint64_t mem_max;
	const char *spill_dir;
	bool spilled;
};

/* One batch of chunks inflated side by side. */
struct gvbatch {
	const uint8_t **src;
	uint32_t *slen;
	long *got;
	uint8_t **dst;            /* where chunk i goes, cs bytes */
	uint32_t cs;
	unsigned n;
	atomic_uint next;
};

static void batch_run(struct gvbatch *b, struct ss_gvs_inflater *z)
{
	for (;;) {
		unsigned i = atomic_fetch_add(&b->next, 1);
		if (i >= b->n)
			return;
		b->got[i] = ss_gvs_inflate(z, b->src[i], b->slen[i], b->dst[i], b->cs);
	}
}

static void *batch_helper(void *arg)
{
	struct gvbatch *b = arg;
	struct ss_gvs_inflater *z = ss_gvs_inflater_new();
	if (z)
		batch_run(b, z);
	ss_gvs_inflater_free(z);
	return NULL;
}

static void nap(void)
{
	struct timespec ts = {.tv_nsec = GV_POLL_NS};
	nanosleep(&ts, NULL);
}

static int raw_size_now(struct gvfile *g, uint64_t *size)
{
	struct stat st;
	if (fstat(g->raw_fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	g->raw_mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	g->raw_mode = st.st_mode & 07777;
	return 0;
}

#define FAIL(...) (snprintf(g->why, sizeof(g->why), __VA_ARGS__), GV_FAILED)

/* Wait for the header and decide: only the bytes it needs are read. */
static int gv_header(struct gvfile *g, uint8_t *hdr, struct ss_gvs_hdr *h)
{
	size_t need = SS_GVS_MAGIC_LEN;
	for (;;) {
		bool done = atomic_load(&g->writer_done);   /* before the size */
		uint64_t avail = 0;
		int r = raw_size_now(g, &avail);
		if (r)
			return FAIL("cannot stat it: %s", strerror(-r));
		if (avail >= need) {
			if ((r = ss_pread_all(g->raw_fd, hdr, need, 0)))
				return FAIL("cannot read it: %s", strerror(-r));
			r = ss_gvs_header(hdr, need, h, &need);
			if (r == 0)
				return GV_INFLATING;
			if (r != -EAGAIN)
				return GV_PLAIN;
			continue;   /* need grew: read on at once */
		}
		if (done)
			return GV_PLAIN;
		if (atomic_load(&g->stop))
			return FAIL("stopped");
		nap();
	}
}

/* Slots of the ring for k chunks of cs bytes per batch: the batch being
 * inflated, half a batch more so the decoder can run ahead, and what the
 * pipeline may hold back: it copies whole segments only while the writer
 * is active, so up to a segment's worth of inflated bytes can wait for
 * more. The decoder then always finds room once the pipeline catches up
 * (a ring smaller than k + seg_size / cs + 1 slots could wait forever). */
static uint32_t ring_slots(uint32_t k, uint32_t cs, uint64_t seg_size)
{
	return k + SS_MAX(k / 2, 1u) + (uint32_t)((seg_size + cs - 1) / cs) + 1;
}

/* Wait until the pipeline has copied out every byte below `need`. */
static int wait_consumed(struct gvfile *g, uint64_t need)
{
	while (atomic_load_explicit(&g->consumed, memory_order_acquire) < need) {
		if (atomic_load(&g->stop))
			return -ECANCELED;
		nap();
	}
	return 0;
}

/* Move the inflated form, `have` bytes so far, from the memfd to an
 * unnamed file in g->spill_dir, which takes the rest: a state file found
 * complete is inflated whole before the push reads it, and one of many
 * GiB must not take that much memory. Its pages can be written back
 * where a memfd's cannot. */
static int gv_spill(struct gvfile *g, uint64_t have)
{
	int fd = open(g->spill_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR)) {
		/* A file system without O_TMPFILE (overlayfs before Linux
		 * 6.6): a named file, unlinked at once. */
		char path[PATH_MAX];
		if (snprintf(path, sizeof(path), "%s/snapstream-gvstate-XXXXXX", g->spill_dir) >=
		    (int)sizeof(path))
			return -ENAMETOOLONG;
		fd = mkostemp(path, O_CLOEXEC);
		if (fd >= 0)
			unlink(path);
	}
	if (fd < 0)
		return -errno;
	off_t at = 0;
	while ((uint64_t)at < have) {
		ssize_t n = sendfile(fd, g->mem_fd, &at, (size_t)SS_MIN(have - (uint64_t)at,
									(uint64_t)1 << 30));
		if (n <= 0) {
			int e = n < 0 ? -errno : -EIO;
			if (e == -EINTR)
				continue;
			close(fd);
			return e;
		}
	}
	close(g->mem_fd);
	g->mem_fd = fd;
	g->spilled = true;
	return 0;
}

/* Read the body behind the writer and inflate it: appended to the memfd
 * outside follow mode, into the ring in it. Runs until every byte is
 * consumed (the writer done, or no writer). The bytes read go into xs
 * when it is not NULL (for gv_recheck). */
static int gv_body(struct gvfile *g, const struct ss_gvs_hdr *h, XXH3_state_t *xs)
{
	const uint32_t cs = h->chunk_size, maxc = ss_gvs_max_clen(cs);
	unsigned k = SS_MAX(1u, g->threads * GV_BATCH_PER_THREAD);
	k = SS_MIN(k, SS_MAX(1u, GV_BATCH_MAX / cs));
	const size_t raw_cap = (size_t)k * (4 + (size_t)maxc);
	const bool ring = g->follow;
	size_t out_cap = (size_t)k * cs;
	if (ring) {
		g->cs = cs;
		g->nslots = ring_slots(k, cs, g->seg_size);
		out_cap = (size_t)g->nslots * cs;
	}
	uint8_t *raw = ss_bufpool_get(g->bufs, raw_cap, false);
	uint8_t *out = ss_bufpool_get(g->bufs, out_cap, false);
	const uint8_t **src = calloc(k, sizeof(*src));
	uint32_t *slen = calloc(k, sizeof(*slen));
	long *got = calloc(k, sizeof(*got));
	uint8_t **dst = calloc(k, sizeof(*dst));
	struct iovec *iov = calloc(k, sizeof(*iov));
	pthread_t *th = calloc(g->threads, sizeof(*th));
	struct ss_gvs_inflater *z = ss_gvs_inflater_new();
	int res = GV_DONE;
	if (ring && out) {
		/* Freed with g: the pipeline copies out of it after we end. */
		g->ring = out;
		g->ring_cap = out_cap;
	}
	if (!raw || !out || !src || !slen || !got || !dst || !iov || !th || !z) {
		res = FAIL("out of memory");
		goto out;
	}
	uint64_t pos = h->len, put = h->len, nchunk = 0;
	bool short_seen = false;
	/* How much to have in raw for a batch: raw_cap holds k chunks of the
	 * bound, but compressible memory deflates to a fraction of it. So ask
	 * for what k chunks have taken so far; a chunk larger than that is
	 * read whole on a second try. The bytes past the batch's last whole
	 * chunk stay for the next batch (moved to the front, `have` of them):
	 * read again, they had cost a fifth more of the kernel's copying out
	 * of the page cache, the largest cost of a followed push after the
	 * chunker. */
	size_t ask = raw_cap, have = 0;
	for (;;) {
		if (atomic_load(&g->stop)) {
			res = FAIL("stopped");
			break;
		}
		bool done = atomic_load(&g->writer_done);
		uint64_t avail = 0;
		int r = raw_size_now(g, &avail);
		if (r) {
			res = FAIL("cannot stat it: %s", strerror(-r));
			break;
		}
		if (avail < pos) {
			res = FAIL("it shrank while it was being written");
			break;
		}
		size_t want = SS_MAX(have, (size_t)SS_MIN(avail - pos, (uint64_t)ask));
		if (want > have &&
		    (r = ss_pread_all(g->raw_fd, raw + have, want - have, pos + have))) {
			res = FAIL("cannot read it: %s", strerror(-r));
			break;
		}
		have = want;
		/* The whole chunks among these bytes. */
		size_t at = 0;
		unsigned n = 0;
		while (n < k && want - at >= 4) {
			const uint8_t *p = raw + at;
			uint32_t clen = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
					(uint32_t)p[2] << 8 | p[3];
			if (clen == 0 || clen > maxc) {
				res = FAIL("chunk %llu at offset %llu claims %u compressed bytes",
					   (unsigned long long)(nchunk + n),
					   (unsigned long long)(pos + at), clen);
				goto out;
			}
			if (want - at - 4 < clen)
				break;
			src[n] = p + 4;
			slen[n] = clen;
			at += 4 + (size_t)clen;
			n++;
		}
		if (n == 0 && want < avail - pos && ask < raw_cap) {
			ask = raw_cap;   /* a chunk larger than asked for */
			continue;
		}
		if (n == 0) {
			if (done && avail == pos)
				break;   /* every byte parsed */
			if (done) {
				res = FAIL("%llu bytes at offset %llu are no whole chunk",
					   (unsigned long long)(avail - pos), (unsigned long long)pos);
				break;
			}
			nap();
			continue;
		}
		if (short_seen) {
			res = FAIL("chunk %llu follows a short chunk", (unsigned long long)nchunk);
			break;
		}
		for (unsigned i = 0; i < n; i++)
			dst[i] = ring ? out + (size_t)((nchunk + i) % g->nslots) * cs
				      : out + (size_t)i * cs;
		/* The slots this batch reuses must have been copied out. */
		if (ring && nchunk + n > g->nslots &&
		    wait_consumed(g, h->len + (nchunk + n - g->nslots) * (uint64_t)cs)) {
			res = FAIL("stopped");
			break;
		}
		struct gvbatch b = {.src = src, .slen = slen, .got = got, .dst = dst, .cs = cs, .n = n};
		atomic_init(&b.next, 0);
		unsigned nth = 0;
		while (nth + 1 < SS_MIN(g->threads, n) &&
		       pthread_create(&th[nth], NULL, batch_helper, &b) == 0)
			nth++;
		batch_run(&b, z);
		for (unsigned t = 0; t < nth; t++)
			pthread_join(th[t], NULL);
		uint64_t bytes = 0;
		for (unsigned i = 0; i < n; i++) {
			/* Only the file's last chunk may be short. */
			if (got[i] <= 0 || (got[i] < (long)cs && i + 1 < n)) {
				res = FAIL("chunk %llu does not inflate to %u bytes",
					   (unsigned long long)(nchunk + i), cs);
				goto out;
			}
			short_seen = got[i] < (long)cs;
			iov[i] = (struct iovec){dst[i], (size_t)got[i]};
			bytes += (uint64_t)got[i];
		}
		if (ring) {
			put += bytes;
			atomic_store_explicit(&g->produced, put, memory_order_release);
		}
		if (!ring && !g->spilled && put + bytes > g->mem_max && (r = gv_spill(g, put))) {
			res = FAIL("cannot move its inflated form to %s: %s", g->spill_dir,
				   strerror(-r));
			goto out;
		}
		if (!ring) {
			int64_t w = ss_writev_all(g->mem_fd, iov, n, (int64_t)put);
			if (w < 0) {
				res = FAIL("cannot store its inflated form: %s", strerror((int)-w));
				goto out;
			}
			put += (uint64_t)w;
		}
		if (xs)
			XXH3_128bits_update(xs, raw, at);
		pos += at;
		nchunk += n;
		have -= at;
		memmove(raw, raw + at, have);
		ask = (size_t)SS_MIN((uint64_t)raw_cap, (pos - h->len) / nchunk * k + 4 * k);
	}
	if (res == GV_DONE) {
		g->raw_size = pos;
		g->stored = put;
	}
out:
	ss_bufpool_put(g->bufs, raw, raw_cap);
	if (!ring)
		ss_bufpool_put(g->bufs, out, out_cap);
	free(src);
	free(slen);
	free(got);
	free(dst);
	free(iov);
	free(th);
	ss_gvs_inflater_free(z);
	return res;
}

/* Reading behind a writer: the file must hold, now that it is final,
 * what was inflated from it (as push checks every followed file). */
static int gv_recheck(struct gvfile *g, const XXH3_state_t *xs)
{
	XXH3_state_t *again = XXH3_createState();
	const size_t cap = 4u << 20;
	uint8_t *buf = ss_map_alloc(cap);
	int res = GV_DONE;
	if (!again || !buf) {
		res = FAIL("out of memory");
		goto out;
	}
	XXH3_128bits_reset(again);
	uint64_t size = 0;
	int r = raw_size_now(g, &size);
	if (r || size != g->raw_size) {
		res = FAIL("it changed size after its writer finished");
		goto out;
	}
	for (uint64_t at = 0; at < size;) {
		size_t n = (size_t)SS_MIN((uint64_t)cap, size - at);
		if ((r = ss_pread_all(g->raw_fd, buf, n, at))) {
			res = FAIL("cannot read it again: %s", strerror(-r));
			goto out;
		}
		XXH3_128bits_update(again, buf, n);
		at += n;
	}
	XXH128_hash_t a = XXH3_128bits_digest(xs), b = XXH3_128bits_digest(again);
	if (!XXH128_isEqual(a, b))
		res = FAIL("it was rewritten behind the reader");
out:
	XXH3_freeState(again);
	ss_map_free(buf, cap);
	return res;
}

/* A writer that only appends: the file must still have the size the
 * decoder consumed. */
static int gv_size_final(struct gvfile *g)
{
	uint64_t size = 0;
	int r = raw_size_now(g, &size);
	if (r || size != g->raw_size)
		return FAIL("it changed size after its writer finished");
	return GV_DONE;
}

static int gv_run(struct gvfile *g)
{
	uint8_t *hdr = malloc(SS_GVS_MAX_HDR);
	XXH3_state_t *xs = XXH3_createState();
	struct ss_gvs_hdr h;
	int res;
	if (!hdr || !xs) {
		res = FAIL("out of memory");
		goto out;
	}
	res = gv_header(g, hdr, &h);
	if (res != GV_INFLATING)
		goto out;
	if (g->follow) {
		/* Kept for push_gv_read, with g. */
		g->hdr = hdr;
		g->hdr_len = h.len;
		hdr = NULL;
		atomic_store_explicit(&g->produced, h.len, memory_order_release);
	} else {
		struct iovec v = {hdr, h.len};
		int64_t r = ss_writev_all(g->mem_fd, &v, 1, 0);
		if (r < 0) {
			res = FAIL("cannot store its inflated form: %s", strerror((int)-r));
			goto out;
		}
	}
	/* Read behind a writer that may rewrite what it wrote, the file is
	 * hashed as it is consumed and read again once final (gv_recheck).
	 * One that only appends is read once. */
	const bool again = g->follow && !g->appends;
	XXH3_128bits_reset(xs);
	XXH3_128bits_update(xs, g->follow ? g->hdr : hdr, h.len);
	atomic_store(&g->state, GV_INFLATING);
	res = gv_body(g, &h, again ? xs : NULL);
	if (res == GV_DONE && again)
		res = gv_recheck(g, xs);
	else if (res == GV_DONE && g->follow)
		res = gv_size_final(g);
	if (res == GV_DONE && !g->follow) {
		/* The memfd is the file to the rest of the push. */
		struct timespec ts[2] = {
			{.tv_nsec = UTIME_OMIT},
			{.tv_sec = g->raw_mtime / 1000000000, .tv_nsec = g->raw_mtime % 1000000000},
		};
		if (fchmod(g->mem_fd, g->raw_mode) < 0 || futimens(g->mem_fd, ts) < 0)
			res = FAIL("cannot set its attributes: %s", strerror(errno));
	}
out:
	free(hdr);
	XXH3_freeState(xs);
	return res;
}

static void *gv_main(void *arg)
{
	struct gvfile *g = arg;
	atomic_store(&g->state, gv_run(g));
	return NULL;
}

static void gv_free(struct gvfile *g)
{
	if (!g)
		return;
	if (g->threaded) {
		atomic_store(&g->stop, true);
		pthread_join(g->th, NULL);
	}
	if (g->raw_fd >= 0)
		close(g->raw_fd);
	if (g->mem_fd >= 0)
		close(g->mem_fd);
	ss_bufpool_put(g->bufs, g->ring, g->ring_cap);
	free(g->hdr);
	free(g);
}

void push_gv_free(struct pfile *f)
{
	gv_free(f->gv);
	f->gv = NULL;
}

/* The file is pushed as it is after all. */
static void gv_drop(struct pfile *f)
{
	struct gvfile *g = f->gv;
	if (g->threaded) {
		pthread_join(g->th, NULL);
		g->threaded = false;
	}
	f->fd = g->raw_fd;
	g->raw_fd = -1;
	if (g->follow)
		f->dense = false;   /* as for any followed file (walk.c) */
	push_gv_free(f);
}

/* What the inflated form of a state file found complete may take in
 * memory: a quarter of the memory left to this process (the node's, or
 * its cgroup's if less), within [64 MiB, 1 GiB]. */
static uint64_t gv_mem_max(void)
{
	return SS_MIN(SS_MAX(ss_memory_left() / 4, (uint64_t)64 << 20), (uint64_t)1 << 30);
}

int push_gv_add(struct push *P, struct pfile *f)
{
	if (!P->opts->inflate_gvisor)
		return 0;
	if (!P->gv_mem_set) {
		const char *v = ss_env_get(P->b.cfg.bopts.env, "SNAPSTREAM_GVISOR_MEMORY");
		P->gv_mem_left = gv_mem_max();
		if (v && !ss_parse_bytes(v, 0, UINT64_MAX >> 10, &P->gv_mem_left))
			return ss_err_set(P->pipe.err, -EINVAL,
					  "SNAPSTREAM_GVISOR_MEMORY=%s: want a size (suffix K, M, G "
					  "or T)",
					  v);
		P->gv_mem_set = true;
	}
	struct gvfile *g = calloc(1, sizeof(*g));
	if (!g)
		return ss_err_set(P->pipe.err, -ENOMEM, "out of memory");
	g->raw_fd = f->fd;
	g->mem_fd = -1;
	const bool follow = P->follow && !P->gv_writer_done;
	if (!follow)
		g->mem_fd = memfd_create("snapstream-gvstate", MFD_CLOEXEC);
	if (!follow && g->mem_fd < 0) {
		int e = -errno;
		g->raw_fd = -1;
		free(g);
		return ss_err_set(P->pipe.err, e, "cannot inflate %s: memfd: %s", f->path,
				  strerror(-e));
	}
	g->threads = P->b.cfg.threads;
	g->bufs = P->b.cfg.bufs;
	g->raw_size = f->size;
	g->raw_mtime = f->mtime_ns;
	g->raw_mode = f->mode;
	g->seg_size = P->b.cfg.chunk.seg_size;
	atomic_init(&g->state, GV_DECIDING);
	atomic_init(&g->stop, false);
	atomic_init(&g->produced, 0);
	atomic_init(&g->consumed, 0);
	f->gv = g;
	/* Following, the file is read through push_gv_read: no descriptor. */
	f->fd = g->mem_fd;
	/* A file found once its writer is done (or with no writer) is final:
	 * inflate it now, and push it as it is unless all of it parses. */
	if (!follow) {
		atomic_init(&g->writer_done, true);
		g->mem_max = P->gv_mem_left;
		g->spill_dir = ss_env_get(P->b.cfg.bopts.env, "TMPDIR");
		if (!g->spill_dir)
			g->spill_dir = "/var/tmp";
		int s = gv_run(g);
		f->fd = g->mem_fd;   /* moved to a file past mem_max */
		if (s != GV_DONE) {
			gv_drop(f);
			return 0;
		}
		/* The memfd stays until the push ends: the next file has
		 * what is left. */
		if (!g->spilled)
			P->gv_mem_left -= SS_MIN(P->gv_mem_left, g->stored);
		atomic_store(&g->state, GV_DONE);
		f->size = f->avail = g->stored;
		f->alloc = g->stored;
		f->dense = !P->follow;
		return 0;
	}
	/* Following: nothing to read until the header decides. */
	atomic_init(&g->writer_done, false);
	g->follow = true;
	g->appends = P->opts->writer_appends;
	f->size = f->avail = f->alloc = 0;
	f->dense = true;   /* no holes to look for in the ring */
	int e = pthread_create(&g->th, NULL, gv_main, g);
	if (e)
		return ss_err_set(P->pipe.err, -e, "cannot inflate %s: %s", f->path, strerror(e));
	g->threaded = true;
	return 0;
}

int push_gv_status(struct push *P)
{
	int st = P->opts->writer_status(P->opts->writer_arg);
	if (st < 0 || !P->opts->inflate_gvisor)
		return st;
	if (st > 0 && !P->gv_writer_done) {
		P->gv_writer_done = true;
		for (size_t i = 0; i < P->nfiles; i++)
			if (P->files[i]->gv)
				atomic_store(&P->files[i]->gv->writer_done, true);
	}
	bool pending = false;
	for (size_t i = 0; i < P->nfiles; i++) {
		struct pfile *f = P->files[i];
		if (!f->gv)
			continue;
		int s = atomic_load(&f->gv->state);
		if (s == GV_PLAIN) {
			gv_drop(f);   /* nothing of the memfd was read: it is empty */
		} else if (s == GV_FAILED) {
			P->gv_fallback = true;
			return ss_err_set(P->pipe.err, -EILSEQ,
					  "%s is not a gVisor state file after all (%s); pushing "
					  "it as it is",
					  f->path, f->gv->why);
		} else if (s != GV_DONE) {
			pending = true;
		}
	}
	return st > 0 && !pending;
}

int push_gv_unchanged(struct push *P, const struct pfile *f)
{
	const struct gvfile *g = f->gv;
	struct stat st;
	if (fstat(g->raw_fd, &st) < 0)
		return ss_err_set(P->pipe.err, -errno, "cannot stat %s: %s", f->path,
				  strerror(errno));
	int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	if ((uint64_t)st.st_size != g->raw_size || mt != g->raw_mtime)
		return ss_err_set(P->pipe.err, -EAGAIN,
				  "%s changed while it was being pushed (no snapshot written); "
				  "push it again once it is stable",
				  f->path);
	return 0;
}

bool push_gv_ring(const struct pfile *f)
{
	return f->gv && f->gv->follow;
}

int push_gv_stat(const struct pfile *f, uint64_t *size, uint32_t *mode, int64_t *mtime_ns)
{
	struct gvfile *g = f->gv;
	*size = atomic_load_explicit(&g->produced, memory_order_acquire);
	/* The decoder sets these; once it is done they are final and ours. */
	if (atomic_load(&g->state) != GV_DONE)
		return -EAGAIN;
	*mode = g->raw_mode;
	*mtime_ns = g->raw_mtime;
	return 0;
}

int push_gv_read(const struct pfile *f, uint8_t *buf, size_t len, uint64_t off)
{
	struct gvfile *g = f->gv;
	const uint64_t end = off + len;
	const uint64_t have = atomic_load_explicit(&g->produced, memory_order_acquire);
	if (end > have)
		return -ESTALE;   /* not made yet: the caller asked past avail */
	/* What the ring still holds: the slots of the last nslots chunks,
	 * and, while the decoder runs, nothing below what the pipeline
	 * copied out (it may be refilling those slots now). */
	uint64_t floor = 0;
	if (have > g->hdr_len) {
		const uint64_t body = (have - g->hdr_len + g->cs - 1) / g->cs;
		if (body > g->nslots)
			floor = g->hdr_len + (body - g->nslots) * g->cs;
	}
	const uint64_t seen = atomic_load_explicit(&g->consumed, memory_order_acquire);
	if (atomic_load(&g->state) != GV_DONE)
		floor = SS_MAX(floor, seen);
	if (end > g->hdr_len && SS_MAX(off, (uint64_t)g->hdr_len) < floor)
		return -ESTALE;   /* copied out once already, and gone */
	for (uint64_t at = off; at < end;) {
		size_t n;
		if (at < g->hdr_len) {
			n = (size_t)(SS_MIN(end, (uint64_t)g->hdr_len) - at);
			memcpy(buf, g->hdr + at, n);
		} else {
			const uint64_t j = (at - g->hdr_len) / g->cs, o = (at - g->hdr_len) % g->cs;
			n = (size_t)SS_MIN(end - at, g->cs - o);
			memcpy(buf, g->ring + (size_t)(j % g->nslots) * g->cs + o, n);
		}
		buf += n;
		at += n;
	}
	/* The pipeline reads each byte once, in order, on one thread: the
	 * slots below are free for the decoder. */
	if (end > seen)
		atomic_store_explicit(&g->consumed, end, memory_order_release);
	return (int)len;
}

uint64_t push_gv_source_size(const struct pfile *f)
{
	return f->gv ? f->gv->raw_size : f->size;
}
