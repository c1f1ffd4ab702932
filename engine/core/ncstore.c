/* ncstore — the node cache stacked on a store's backend (ncache.h).
 *
 * A ranged GET of a pack becomes the blocks it covers. Each block is, in
 * this order: being fetched by this backend already (wait for that
 * fetch), in the cache (copy it), ours to fetch (its lock taken: checked
 * once more, since it may have landed meanwhile), or being fetched by
 * another process (wait, polling on a loop timer, until it lands or its
 * lock comes free: a fetcher that died or failed). Neighbouring blocks
 * that are ours are fetched with one GET from the store, published, then
 * unlocked. The caller's request completes once all its blocks are done,
 * with the bytes a plain GET would have returned (fewer past the pack's
 * end). A GET with SS_GET_FRESH first drops the range's blocks.
 *
 * A PUT of a pack is passed through and, once the store has it, written
 * into the cache (write-through): a pull on this node then reads it here.
 * Every other request passes through untouched. */
#include "core.h"
#include "ncache.h"

#include "backend_module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define B (nb->blk)   /* the cache's block size (ss_ncache_block) */
/* Waiting for another process's fetch: polled every POLL_MIN_NS while
 * blocks keep landing, backing off to POLL_MAX_NS while none does. */
#define POLL_MIN_NS (1000 * 1000)
#define POLL_MAX_NS (16 * 1000 * 1000)
/* A block another process has been fetching this long is fetched here as
 * well: a fetcher that hangs must not stall the node's other pulls. */
#define WAIT_MAX_NS (30ull * 1000000000ull)
#define SPARE_BUFS 4

enum { B_TODO, B_OWN, B_OWN_UNLOCKED, B_FETCH, B_OTHER, B_DONE };

struct nfetch;

struct nblock {
	uint64_t k;
	uint8_t key[16];
	uint8_t state;
	uint32_t len;               /* done: the block's bytes (< B: the pack ends) */
	int err;                    /* done: why it could not be had */
	struct nfetch *f;           /* B_FETCH: the fetch bringing it */
	uint64_t wait_ns;           /* B_OTHER: since when */
};

struct ncb;

struct nreq {
	struct ss_op fin;           /* the caller's completion, deferred */
	struct ncb *nb;
	struct ss_req *r;
	uint8_t pack[16];
	uint32_t n, left;           /* blocks, and those not done */
	int res;
	struct nreq *next;          /* nb->active */
	struct nblock b[];
};

/* One GET of blocks [k0, k1) of a pack from the store. */
struct nfetch {
	struct ss_req ir;
	struct ss_err err;
	char key[64];
	struct ncb *nb;
	uint8_t pack[16];
	uint64_t k0, k1;
	bool locked;                /* we hold its blocks' locks */
	uint8_t *buf;
	size_t cap;
	struct nfetch *next;        /* nb->fetches, in flight or queued */
	bool queued;
};

/* A request passed through. */
struct fwd {
	struct ss_req ir;
	struct ss_req *r;
	struct ncb *nb;
	bool pack_put;
	uint8_t pack[16];
};

struct ncb {
	struct ss_backend *self, *inner;
	struct ss_ncache *c;
	uint8_t store[16];
	struct nreq *active;
	struct nfetch *fetches;
	struct ss_op tick;
	struct __kernel_timespec tick_ts;
	bool tick_armed;
	uint8_t *spare[SPARE_BUFS];
	size_t spare_cap[SPARE_BUFS];
	uint64_t hit_bytes, fetched_bytes;
	uint64_t blk;               /* B */
};

extern const struct ss_backend_ops ss_ncache_ops;

static void pump(struct ncb *nb);

/* "packs/ab/ab…" → its id. */
static bool pack_key(const char *key, uint8_t id[16])
{
	return key && strlen(key) == 41 && !strncmp(key, "packs/", 6) && key[8] == '/' &&
	       !strncmp(key + 6, key + 9, 2) && ss_unhex(key + 9, id, 16) == 0;
}

/* ---------------------------------------------------------------- passing through */

static void write_through(struct ncb *nb, const uint8_t pack[16], const struct iovec *iov,
			  unsigned iovcnt)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	unsigned vi = 0;
	size_t voff = 0;
	for (uint64_t k = 0; k * B < total; k++) {
		uint32_t len = (uint32_t)SS_MIN(B, total - k * B);
		struct iovec v[15];
		int n = 0;
		for (uint32_t got = 0; got < len;) {
			if (n == 15)
				return;   /* a pack in this many pieces is not worth keeping */
			size_t take = SS_MIN(iov[vi].iov_len - voff, (size_t)(len - got));
			v[n++] = (struct iovec){(uint8_t *)iov[vi].iov_base + voff, take};
			got += (uint32_t)take;
			voff += take;
			if (voff == iov[vi].iov_len)
				vi++, voff = 0;
		}
		uint8_t key[16];
		ss_ncache_key(nb->store, pack, k, key);
		if (ss_ncache_put(nb->c, key, v, n, len))
			return;   /* full (the bound or the disk): keep what fits */
		ss_ncache_count(nb->c, SS_NC_WRITTEN_BYTES, len);
	}
}

static void fwd_done(struct ss_op *op, int res)
{
	struct fwd *f = (struct fwd *)op;
	struct ncb *nb = f->nb;
	f->r->size = f->ir.size;
	if (f->pack_put && res == 0)
		write_through(nb, f->pack, f->r->iov, f->r->iovcnt);
	ss_backend_complete(nb->self, f->r, res);
	free(f);
	pump(nb);
}

static int forward(struct ncb *nb, struct ss_req *r, const uint8_t *pack)
{
	struct fwd *f = malloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	*f = (struct fwd){.ir = *r, .r = r, .nb = nb, .pack_put = pack != NULL};
	if (pack)
		memcpy(f->pack, pack, 16);
	f->ir.op.done = fwd_done;
	f->ir.user = f;
	f->ir.priv = NULL;
	int res = ss_backend_submit(nb->inner, &f->ir);
	if (res)
		free(f);
	return res;
}

/* ---------------------------------------------------------------- requests */

/* The part of block b that request q wants: [from, from + n) of the
 * block, at dst in the caller's buffer. */
static void want(const struct nreq *q, const struct nblock *b, uint64_t *from, uint8_t **dst,
		 size_t *n)
{
	const struct ncb *nb = q->nb;
	uint64_t lo = SS_MAX(q->r->off, b->k * B);
	uint64_t hi = SS_MIN(q->r->off + q->r->len, (b->k + 1) * B);
	*from = lo - b->k * B;
	*dst = (uint8_t *)q->r->buf + (lo - q->r->off);
	*n = (size_t)(hi - lo);
}

static void fin_done(struct ss_op *op, int res)
{
	struct nreq *q = (struct nreq *)op;
	struct ncb *nb = q->nb;
	ss_backend_complete(nb->self, q->r, res);
	free(q);
}

/* Complete q once every block is done: the bytes up to the first block
 * that failed or holds the pack's end, as a plain GET would return. */
static void maybe_finish(struct nreq *q)
{
	if (q->left)
		return;
	struct ncb *nb = q->nb;
	for (struct nreq **p = &nb->active; *p; p = &(*p)->next)
		if (*p == q) {
			*p = q->next;
			break;
		}
	uint64_t end = q->r->off + q->r->len;
	int res = q->res;
	for (uint32_t i = 0; i < q->n && !res; i++) {
		const struct nblock *b = &q->b[i];
		if (b->err) {
			res = b->err;
			break;
		}
		if (b->len < B) {
			end = SS_MIN(end, b->k * B + b->len);
			break;
		}
	}
	if (!res)
		res = (int)(end > q->r->off ? end - q->r->off : 0);
	ss_loop_defer(nb->self->loop, &q->fin, res);
}

static void block_done(struct nreq *q, struct nblock *b, uint32_t len, int err)
{
	b->state = B_DONE;
	b->len = len;
	b->err = err;
	q->left--;
}

/* Block b from the cache into the caller's buffer, if it is there. */
static bool from_cache(struct nreq *q, struct nblock *b)
{
	uint64_t from;
	uint8_t *dst;
	size_t n;
	uint32_t len;
	want(q, b, &from, &dst, &n);
	if (ss_ncache_get(q->nb->c, b->key, from, dst, n, &len))
		return false;
	uint64_t got = from < len ? SS_MIN(n, len - from) : 0;
	q->r->cached = true;
	q->nb->hit_bytes += got;
	ss_ncache_count(q->nb->c, SS_NC_HITS, 1);
	ss_ncache_count(q->nb->c, SS_NC_HIT_BYTES, got);
	block_done(q, b, len, 0);
	return true;
}

static struct nfetch *fetching(struct ncb *nb, const uint8_t pack[16], uint64_t k)
{
	for (struct nfetch *f = nb->fetches; f; f = f->next)
		if (k >= f->k0 && k < f->k1 && !memcmp(f->pack, pack, 16))
			return f;
	return NULL;
}

static void arm_tick(struct ncb *nb);

/* A buffer for n bytes: a spare one when it is large enough. */
static uint8_t *buf_get(struct ncb *nb, size_t n, size_t *cap)
{
	for (unsigned i = 0; i < SPARE_BUFS; i++)
		if (nb->spare[i] && nb->spare_cap[i] >= n) {
			uint8_t *p = nb->spare[i];
			*cap = nb->spare_cap[i];
			nb->spare[i] = NULL;
			return p;
		}
	/* The response is copied in front to back; at its own length the
	 * buffer was faulted 4 KiB at a time (~4,700 faults in one cold
	 * 256 MiB pull through the cache, most of its faults). */
	*cap = ss_map_huge_len(n);
	return ss_map_alloc(*cap);
}

static void buf_put(struct ncb *nb, uint8_t *p, size_t cap)
{
	for (unsigned i = 0; i < SPARE_BUFS; i++)
		if (!nb->spare[i]) {
			nb->spare[i] = p;
			nb->spare_cap[i] = cap;
			return;
		}
	ss_map_free(p, cap);
}

static void fetch_done(struct ss_op *op, int res);

/* Fetch blocks [i, j) of q, which are ours (locked or not). */
static int start_fetch(struct nreq *q, uint32_t i, uint32_t j, bool locked)
{
	struct ncb *nb = q->nb;
	struct nfetch *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->nb = nb;
	memcpy(f->pack, q->pack, 16);
	f->k0 = q->b[i].k;
	f->k1 = q->b[j - 1].k + 1;
	f->locked = locked;
	/* Whole blocks reach at most B - 1 bytes before the request's first
	 * byte and past its last: where the caller lets us use that much
	 * around its buffer, the GET lands there and the request's own bytes
	 * need no copy (f->cap 0: borrowed). It outlives no fetch of its
	 * blocks, since the request completes only when they are done. */
	if (q->r->slack >= B)
		f->buf = (uint8_t *)q->r->buf - q->r->off + f->k0 * B;
	else
		f->buf = buf_get(nb, (size_t)((f->k1 - f->k0) * B), &f->cap);
	if (!f->buf) {
		free(f);
		return -ENOMEM;
	}
	ss_pack_key(f->pack, f->key);
	f->ir = (struct ss_req){.op.done = fetch_done, .kind = SS_REQ_GET, .key = f->key,
				.off = f->k0 * B, .len = (f->k1 - f->k0) * B, .buf = f->buf,
				.err = &f->err, .user = f};
	f->queued = true;
	f->next = nb->fetches;
	nb->fetches = f;
	for (uint32_t k = i; k < j; k++) {
		q->b[k].state = B_FETCH;
		q->b[k].f = f;
	}
	return 0;
}

/* Move q's blocks on as far as they go now. */
static void advance(struct nreq *q)
{
	struct ncb *nb = q->nb;
	uint64_t now = 0;
	for (uint32_t i = 0; i < q->n; i++) {
		struct nblock *b = &q->b[i];
		if (b->state != B_TODO)
			continue;
		struct nfetch *f = fetching(nb, q->pack, b->k);
		if (f) {
			b->state = B_FETCH;
			b->f = f;
			continue;
		}
		if (from_cache(q, b))
			continue;
		int r = ss_ncache_lock(nb->c, b->key);
		if (r == 0) {
			if (from_cache(q, b))   /* landed between the look and the lock */
				ss_ncache_unlock(nb->c, b->key);
			else
				b->state = B_OWN;
		} else if (r == -EAGAIN) {
			if (!now)
				now = ss_now_ns();
			if (!b->wait_ns)
				b->wait_ns = now;
			b->state = now - b->wait_ns > WAIT_MAX_NS ? B_OWN_UNLOCKED : B_OTHER;
		} else {
			b->state = B_OWN_UNLOCKED;   /* no locks here: fetch alone */
		}
	}
	/* Runs of neighbouring blocks that are ours: one GET each. */
	bool waits = false;
	for (uint32_t i = 0; i < q->n;) {
		uint8_t s = q->b[i].state;
		waits |= s == B_OTHER;
		if (s != B_OWN && s != B_OWN_UNLOCKED) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < q->n && q->b[j].state == s)
			j++;
		int r = start_fetch(q, i, j, s == B_OWN);
		for (uint32_t k = i; r && k < j; k++) {
			if (s == B_OWN)
				ss_ncache_unlock(nb->c, q->b[k].key);
			block_done(q, &q->b[k], 0, r);
		}
		i = j;
	}
	if (waits)
		arm_tick(nb);
	pump(nb);
	maybe_finish(q);
}

static void fetch_done(struct ss_op *op, int res)
{
	struct nfetch *f = ((struct ss_req *)op)->user;
	struct ncb *nb = f->nb;
	for (struct nfetch **p = &nb->fetches; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			break;
		}
	if (res > 0) {
		nb->fetched_bytes += (uint64_t)res;
		ss_ncache_count(nb->c, SS_NC_FETCHED_BYTES, (uint64_t)res);
	}
	ss_ncache_count(nb->c, SS_NC_MISSES, f->k1 - f->k0);
	for (uint64_t k = f->k0; k < f->k1; k++) {
		uint8_t key[16];
		ss_ncache_key(nb->store, f->pack, k, key);
		uint64_t at = (k - f->k0) * B;
		if (res > 0 && (uint64_t)res > at) {
			struct iovec v = {f->buf + at, (size_t)SS_MIN(B, (uint64_t)res - at)};
			ss_ncache_put(nb->c, key, &v, 1, (uint32_t)v.iov_len);
		}
		if (f->locked)
			ss_ncache_unlock(nb->c, key);
	}
	/* Hand the bytes to every request waiting for them. */
	for (struct nreq *q = nb->active, *next; q; q = next) {
		next = q->next;
		bool touched = false;
		for (uint32_t i = 0; i < q->n; i++) {
			struct nblock *b = &q->b[i];
			if (b->state != B_FETCH || b->f != f)
				continue;
			touched = true;
			if (res < 0) {
				if (f->err.code && q->r->err)
					ss_err_set(q->r->err, f->err.code, "%s", f->err.msg);
				block_done(q, b, 0, res);
				continue;
			}
			uint64_t at = (b->k - f->k0) * B, from;
			uint32_t len = (uint64_t)res > at ? (uint32_t)SS_MIN(B, (uint64_t)res - at) : 0;
			uint8_t *dst;
			size_t n;
			want(q, b, &from, &dst, &n);
			/* The fetch's own request: in place already. */
			if (from < len && dst != f->buf + at + from)
				memcpy(dst, f->buf + at + from, SS_MIN(n, len - from));
			block_done(q, b, len, 0);
		}
		if (touched)
			maybe_finish(q);
	}
	if (f->cap)
		buf_put(nb, f->buf, f->cap);
	free(f);
	pump(nb);
}

/* Submit queued fetches while the store takes them. */
static void pump(struct ncb *nb)
{
	for (struct nfetch *f = nb->fetches; f; f = f->next) {
		if (!f->queued)
			continue;
		int r = ss_backend_submit(nb->inner, &f->ir);
		if (r == -EAGAIN)
			return;   /* again when one of ours completes */
		f->queued = false;
		if (r)
			ss_loop_defer(nb->self->loop, &f->ir.op, r);
	}
}

/* Look again at the blocks requests wait for. A request's first waiting
 * block is looked at alone: another process fetches neighbouring blocks
 * together, so while that one has not landed the rest have not either,
 * and many waiting processes must not spend the CPU the fetchers (and
 * the store) need on looking. */
static void tick_done(struct ss_op *op, int res)
{
	(void)res;
	struct ncb *nb = (struct ncb *)((char *)op - offsetof(struct ncb, tick));
	bool moved = false;
	nb->tick_armed = false;
	for (struct nreq *q = nb->active, *next; q; q = next) {
		next = q->next;
		uint32_t i = 0;
		while (i < q->n && q->b[i].state != B_OTHER)
			i++;
		if (i == q->n)
			continue;
		q->b[i].state = B_TODO;
		advance(q);   /* that block alone: the others are not B_TODO */
		if (q->b[i].state == B_OTHER)
			continue;
		moved = true;
		bool more = false;
		for (uint32_t k = i + 1; k < q->n; k++)
			if (q->b[k].state == B_OTHER) {
				q->b[k].state = B_TODO;
				more = true;
			}
		if (more)
			advance(q);
	}
	/* Soon again while blocks land, less often while none does; the
	 * kernel reads the time when the ring is next submitted. */
	uint64_t ns = (uint64_t)nb->tick_ts.tv_nsec;
	nb->tick_ts.tv_nsec = moved ? POLL_MIN_NS : (long long)SS_MIN(ns * 2, (uint64_t)POLL_MAX_NS);
	for (struct nreq *q = nb->active; q && !nb->tick_armed; q = q->next)
		for (uint32_t i = 0; i < q->n && !nb->tick_armed; i++)
			if (q->b[i].state == B_OTHER)
				arm_tick(nb);
}

/* Look again soon. Armed only while some block waits for another
 * process, so no tick is pending once no request is in flight. */
static void arm_tick(struct ncb *nb)
{
	if (nb->tick_armed)
		return;
	if (!nb->tick_ts.tv_nsec)
		nb->tick_ts.tv_nsec = POLL_MIN_NS;
	nb->tick_armed = true;
	nb->tick.done = tick_done;
	io_uring_prep_timeout(ss_loop_sqe(nb->self->loop, &nb->tick), &nb->tick_ts, 0, 0);
}

static int cached_get(struct ncb *nb, struct ss_req *r, const uint8_t pack[16])
{
	uint64_t k0 = r->off / B, k1 = (r->off + r->len - 1) / B + 1;
	if (r->off + r->len < r->off || k1 - k0 > (1u << 20))
		return -EINVAL;
	uint32_t n = (uint32_t)(k1 - k0);
	struct nreq *q = calloc(1, sizeof(*q) + n * sizeof(q->b[0]));
	if (!q)
		return -ENOMEM;
	q->fin.done = fin_done;
	q->nb = nb;
	q->r = r;
	q->n = q->left = n;
	memcpy(q->pack, pack, 16);
	r->cached = false;
	for (uint32_t i = 0; i < n; i++) {
		q->b[i].k = k0 + i;
		ss_ncache_key(nb->store, pack, k0 + i, q->b[i].key);
		if (r->flags & SS_GET_FRESH)
			ss_ncache_drop(nb->c, q->b[i].key);
	}
	q->next = nb->active;
	nb->active = q;
	advance(q);
	return 0;
}

/* ---------------------------------------------------------------- the backend */

static int nc_submit(struct ss_backend *b, struct ss_req *r)
{
	struct ncb *nb = b->priv;
	uint8_t pack[16];
	bool is_pack = pack_key(r->key, pack);
	if (r->kind == SS_REQ_GET && is_pack && !(r->flags & SS_GET_SUFFIX) && r->len)
		return cached_get(nb, r, pack);
	return forward(nb, r, r->kind == SS_REQ_PUT && is_pack ? pack : NULL);
}

static int nc_identity(const struct ss_backend *b, char *buf, size_t n)
{
	const struct ncb *nb = b->priv;
	return ss_backend_identity(nb->inner, buf, n);
}

static void nc_destroy(struct ss_backend *b)
{
	struct ncb *nb = b->priv;
	if (!nb)
		return;
	for (unsigned i = 0; i < SPARE_BUFS; i++)
		ss_map_free(nb->spare[i], nb->spare_cap[i]);
	ss_backend_free(nb->inner);
	ss_ncache_free(nb->c);
	free(nb);
}

/* Not in the backends' registry: no URI names it; ss_ncache_wrap stacks it. */
const struct ss_backend_ops ss_ncache_ops = {
	.name = "cache",
	.scheme = "cache",
	.submit = nc_submit,
	.identity = nc_identity,
	.destroy = nc_destroy,
};

int ss_ncache_wrap(const struct ss_cfg *cfg, struct ss_backend **b, struct ss_err *err)
{
	if (!cfg->cache_dir || !*b)
		return 0;
	uint8_t store[16];
	int r = ss_ncache_store_id(*b, store);
	if (r == -EOPNOTSUPP)
		return 0;   /* mem://: nothing another process could share */
	if (r)
		return ss_err_set(err, r, "cannot name the store for the cache: %s", strerror(-r));
	struct ncb *nb = calloc(1, sizeof(*nb));
	struct ss_backend *self = calloc(1, sizeof(*self));
	if (!nb || !self) {
		free(nb);
		free(self);
		return ss_err_set(err, -ENOMEM, "out of memory");
	}
	if ((r = ss_ncache_open(cfg->cache_dir, cfg->cache_size, false, &nb->c, err))) {
		free(nb);
		free(self);
		/* A full disk stops the cache from growing, never the operation. */
		if (r == -ENOSPC || r == -EDQUOT) {
			ss_err_clear(err);
			return 0;
		}
		return r;
	}
	memcpy(nb->store, store, 16);
	nb->blk = ss_ncache_block(nb->c);
	nb->inner = *b;
	nb->self = self;
	self->ops = &ss_ncache_ops;
	self->loop = nb->inner->loop;
	self->opts = nb->inner->opts;
	self->max_inflight = nb->inner->max_inflight;
	/* A cache in front of a local store costs what the store does; in
	 * front of an object store, misses cost round trips, which is what
	 * request sizes (pull ranges, pack sizes) are chosen for. */
	self->local = nb->inner->local;
	self->priv = nb;
	*b = self;
	return 0;
}

void ss_ncache_stats(const struct ss_backend *b, struct ss_stats *st)
{
	if (!b || b->ops != &ss_ncache_ops)
		return;
	const struct ncb *nb = b->priv;
	st->cache_bytes = nb->hit_bytes;
	st->transferred_bytes = nb->fetched_bytes;
}

int ss_ncache_absent(const struct ss_backend *b, const uint8_t pack[16], uint64_t off,
		     uint64_t len, uint64_t *bytes)
{
	if (!b || b->ops != &ss_ncache_ops)
		return -EOPNOTSUPP;
	const struct ncb *nb = b->priv;
	*bytes = 0;
	for (uint64_t k = off / B; k * B < off + len; k++) {
		uint8_t key[16];
		ss_ncache_key(nb->store, pack, k, key);
		if (!ss_ncache_has(nb->c, key))
			*bytes += SS_MIN((k + 1) * B, off + len) - SS_MAX(k * B, off);
	}
	return 0;
}

bool ss_ncache_holds(const struct ss_backend *b, const uint8_t pack[16], uint64_t off,
		     uint64_t len)
{
	uint64_t absent = 0;
	return !len || ss_ncache_absent(b, pack, off, len, &absent) || absent == 0;
}
