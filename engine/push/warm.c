/* warm — after a push through the node cache, bring into the cache the
 * few frames of the new snapshot that the node does not hold yet.
 *
 * Write-through keeps every pack the push stores; what it cannot keep are
 * chunks the push found already in the store, in packs other nodes wrote
 * and this node never read: a chunk of another sandbox's checkpoint that
 * this image now holds too (a page that stopped repeating cuts a chunk
 * the way another derived image cut it). A restore here would fetch the
 * whole frame around each such chunk. When those frames are few, the push
 * fetches them into the cache now, so that restoring the checkpoint on
 * the node that took it reads nothing but the manifest from the store
 * (docs/DESIGN.md, "The node cache"). When they are many, the node never
 * held the snapshot's parents, a restore here fetches those anyway, and
 * the push does not spend a second download on them. */
#include "push.h"
#include "ncache.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define WARM_MIN (4ull << 20)   /* always worth fetching */
#define WARM_MAX (64ull << 20)  /* never more than this */
#define WARM_GET (4ull << 20)   /* bytes per GET */
#define WARM_GAP (64ull << 10)  /* read through gaps up to this size */
#define WARM_BATCH 8            /* GETs in flight */

struct wframe {
	uint32_t pack;
	uint64_t off, len;
};

static int cmp_wframe(const void *a, const void *b)
{
	const struct wframe *x = a, *y = b;
	if (x->pack != y->pack)
		return x->pack < y->pack ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Fetch ranges r[0..n) through the caching backend, which keeps their
 * blocks; the bytes themselves are not needed here. */
static void fetch(struct ss_pushbase *b, const struct ss_manifest *m, const struct wframe *r,
		  size_t n, uint8_t *buf, struct ss_stats *st)
{
	struct ss_req reqs[WARM_BATCH];
	char keys[WARM_BATCH][64];
	for (size_t i = 0; i < n; i += WARM_BATCH) {
		size_t k = SS_MIN((size_t)WARM_BATCH, n - i);
		for (size_t j = 0; j < k; j++) {
			ss_pack_key(m->pack_ids[r[i + j].pack], keys[j]);
			reqs[j] = (struct ss_req){.kind = SS_REQ_GET, .key = keys[j],
						  .off = r[i + j].off, .len = r[i + j].len,
						  .buf = buf + j * WARM_GET};
		}
		if (ss_call_many(b->store->b, b->loop, reqs, k, &st->requests))
			return;
	}
}

void ss_pushbase_warm(struct ss_pushbase *b, const struct ss_manifest *m, struct ss_stats *st)
{
	uint64_t absent = 0;
	if (!b->cfg.cache_dir || !b->store || !m->nchunks ||
	    ss_ncache_absent(b->store->b, m->pack_ids[0], 0, 0, &absent))
		return;
	struct wframe *f = malloc(m->nchunks * sizeof(*f));
	if (!f)
		return;
	for (size_t i = 0; i < m->nchunks; i++)
		f[i] = (struct wframe){m->chunks[i].pack, m->chunks[i].offset,
				       m->chunks[i].stored_len};
	qsort(f, m->nchunks, sizeof(*f), cmp_wframe);
	/* The distinct frames with bytes the cache lacks, merged into GETs.
	 * (Chunks of one frame share its offset and stored length.) */
	size_t n = 0;
	const uint64_t cap = SS_MIN(SS_MAX(WARM_MIN, st->new_stored_bytes / 2), WARM_MAX);
	for (size_t i = 0; i < m->nchunks && absent <= cap; i++) {
		if (i && f[i].pack == f[i - 1].pack && f[i].off == f[i - 1].off)
			continue;
		uint64_t a = 0;
		if (ss_ncache_absent(b->store->b, m->pack_ids[f[i].pack], f[i].off, f[i].len, &a) ||
		    !a)
			continue;
		absent += a;
		struct wframe *last = n ? &f[n - 1] : NULL;
		if (last && last->pack == f[i].pack && f[i].off >= last->off + last->len &&
		    f[i].off - (last->off + last->len) <= WARM_GAP &&
		    f[i].off + f[i].len - last->off <= WARM_GET) {
			last->len = f[i].off + f[i].len - last->off;
			continue;
		}
		/* n <= i: this overwrites only entries already looked at. */
		f[n++] = f[i];
	}
	uint8_t *buf = NULL;
	if (n && absent <= cap && (buf = ss_map_alloc(WARM_BATCH * WARM_GET))) {
		for (size_t i = 0; i < n; i++)   /* a frame larger than a GET */
			f[i].len = SS_MIN(f[i].len, WARM_GET);
		fetch(b, m, f, n, buf, st);
		ss_map_free(buf, WARM_BATCH * WARM_GET);
	}
	free(f);
}
