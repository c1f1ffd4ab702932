/* chunker — FastCDC (2020 variant) with zero-page runs. See chunker.h.
 *
 * Cut points are part of the on-disk format (manifests record the extents,
 * dedup depends on identical cuts across snapshots): the gear table, the
 * mask derivation and the cut rules below must never change silently.
 * tests/test_chunker.c checks them against an independent byte-at-a-time
 * reference and a golden digest.
 */
#include "chunker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define PAGE ((size_t)SS_PAGE_SIZE)

/* Gear table: 256 outputs of splitmix64 (Steele, Lea, Flood 2014; the
 * usual constants 0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9, 0x94d049bb133111eb,
 * shifts 30/27/31) seeded with 0x7373676561723031 ("ssgear01"), entry i
 * being output i+1. Generated once and pasted: it must never change.
 * GEAR_TABLE(G) expands to the entries wrapped in G so that the shifted
 * copy needed by the two-byte loop is derived from the same text. */
#define GEAR_TABLE(G) \
	G(0xb9eabe403135b11dull), G(0x59f6542a427776dbull), G(0xd3f7af7f4ac10d67ull), \
	G(0xd3752a3fceff96ccull), G(0xb5b4cae0dad2b78aull), G(0xd56a73f874faae32ull), \
	G(0x0d798d4fdfa9f07full), G(0x25eb852a84617304ull), G(0x7e7ef50c7c303428ull), \
	G(0x4c9bb227b5fceb30ull), G(0xf3df6e66f1bcc6abull), G(0x091bc88e360ab22bull), \
	G(0xf36f8c3ae6011e63ull), G(0x68d9328fe827827bull), G(0x7506971ac6e1b98eull), \
	G(0x7ffe336434158a37ull), G(0xd5429ab0fd904acdull), G(0xf8f6b2eeb59eb92eull), \
	G(0xeaebc7a9a6d41aaaull), G(0x11ab5e6feafce885ull), G(0x55ff543f680c4d91ull), \
	G(0x27536eded685ee53ull), G(0xa72317d35c376abaull), G(0xdc3534886aef2aabull), \
	G(0xec7a4e7a826d37faull), G(0xb3e5fa373a3802ebull), G(0xc1603212812ccc19ull), \
	G(0xe8381c5f5d620c85ull), G(0xe6fe1fa0bbafa7a8ull), G(0x3a0b8082bba196c8ull), \
	G(0xa3eaa7b1a0c280c8ull), G(0xc87804ceecbc1ef4ull), G(0xcf88e2f9e965bac6ull), \
	G(0x974f266bb918c13cull), G(0x4c68ffa413e346beull), G(0xbbca8901a8bada78ull), \
	G(0xe028e181e8621778ull), G(0xaf289bbaf2cad7b5ull), G(0x2c276219647d6e22ull), \
	G(0xfb7bbe19c54d4467ull), G(0xae1721234dfa1de2ull), G(0x878d8cd6e8962b91ull), \
	G(0xcbda65c6e6d12429ull), G(0xf69c067c5fdbcaf0ull), G(0xa3ae856d9c89610full), \
	G(0xbc3826406b78a847ull), G(0x72a6b6c4464503b3ull), G(0x71357f2b289fc139ull), \
	G(0x5dc83f0e3224463bull), G(0x4588a3f189a0bcb0ull), G(0x365c6cf82b90c48full), \
	G(0x393b479c515da6efull), G(0xafcde3bc2e00b649ull), G(0x3201c3d8ae45ab9cull), \
	G(0xd5d5ba920017c71full), G(0xbd1550066579599full), G(0x7d13110cf7b10b0eull), \
	G(0x77cbc405abcebe7full), G(0xe3596e3f4396c6c6ull), G(0x54ce680f47a6c0a6ull), \
	G(0x1ad2a8974c7d0ad0ull), G(0x8bcde3569e75b40full), G(0xcd8ce02ec2176b3eull), \
	G(0x38f6860bd533c72dull), G(0x06e1667f5dc14c6eull), G(0x3b3f58203303d9b8ull), \
	G(0x832b02788c3fd08cull), G(0x2108947bd62a8e94ull), G(0x41216e0654d9bd31ull), \
	G(0x93183846ea532607ull), G(0x741d3ab36eff67beull), G(0x7168b65aa49b5ac5ull), \
	G(0x3a3b820d829dc315ull), G(0xa44a099643f0e58bull), G(0x509c1b0af1baeaf0ull), \
	G(0x66c1a25f3a1bd49cull), G(0x08d10fb279418bf1ull), G(0x51bff89d0dd37856ull), \
	G(0x3c60b71d965f80b0ull), G(0x3c2fddcf9164a85bull), G(0x7267c59b35de98a5ull), \
	G(0xe96c493893c48bd5ull), G(0x146a3b2058e225fbull), G(0xff70338e717a509eull), \
	G(0x4cb3c8e47891d8c3ull), G(0x2cbe15e8eb1f726cull), G(0x6958f1eba88d5a12ull), \
	G(0xaadb2e98edd86f8eull), G(0xb50bc184f2dd1908ull), G(0x8ea062185a1db00aull), \
	G(0x46c637abb8bd70deull), G(0xd9bdb42d9dfbe99eull), G(0xf8598ffbe634efa9ull), \
	G(0x61d4b1cb4567b0d4ull), G(0x93ce7d3073475604ull), G(0x76aa7ca68600ec16ull), \
	G(0x5ce63560b03770edull), G(0x7935ba565f6370feull), G(0xbd807ad08cc84959ull), \
	G(0x6019349bf9f093b6ull), G(0xcf0c0725353a92ebull), G(0x3f52ca1ebce4185full), \
	G(0x4347914656fc9c26ull), G(0x08536809c5bcd21cull), G(0x5fc12807010d8770ull), \
	G(0x10023b54da230f7eull), G(0x488cbe8888e77325ull), G(0x70857517637e9c1full), \
	G(0xe6f4d87725f25924ull), G(0x31a0ab623625b3d4ull), G(0x3e647d92888bf40dull), \
	G(0x9c2c37908538628dull), G(0xc471d6fcb8214bcfull), G(0x37fc4a6d6c5b71e5ull), \
	G(0x1b999c7fd2d256f3ull), G(0x93ac633d0e771d58ull), G(0x449f57e44fe2527cull), \
	G(0x83b69d6193672396ull), G(0x632740b166d304aaull), G(0x93ef176d0aa8d85bull), \
	G(0xe18a7cea7057b2d1ull), G(0xbb091940049b26f5ull), G(0xaa793a2e59d2fe3dull), \
	G(0x906a48b169f7e134ull), G(0x93dff7273aabcf32ull), G(0x926f9d660a96cb1bull), \
	G(0xb4dd18e33182d4e5ull), G(0xd2682f119c38c954ull), G(0x452f55a5cbf37e06ull), \
	G(0x6f1292e69308a454ull), G(0xc1bfc19eabab0c58ull), G(0xa6d8799457be404eull), \
	G(0xce94c5c21350c624ull), G(0x4966d7baecfd152eull), G(0x4532182a350984beull), \
	G(0x115a17ea71970f6dull), G(0xcb841cbddbee2b66ull), G(0x0b2eb22a93d0a6f2ull), \
	G(0x4a5b637441a03dd9ull), G(0x8d630672e311b568ull), G(0x449a3069e79ebac3ull), \
	G(0xa9c7be073a9c7b09ull), G(0xf9adcc169ceaf60dull), G(0xb69d240d98951bbcull), \
	G(0x118a17586fae3c9cull), G(0x37148d7780ae7a30ull), G(0x8c3400287b88176cull), \
	G(0x4e6df19af8a5d226ull), G(0xd56be48d82412228ull), G(0x5b3670452b102d60ull), \
	G(0x499906da046c2cc4ull), G(0x1c0bf6ca149d2c34ull), G(0x4b492c5b6b72973dull), \
	G(0xe11870a7d3c887a8ull), G(0x57a033b2e522e38eull), G(0x2df64cb82f9e2b21ull), \
	G(0xa63bc160208f1debull), G(0xc434ba37c6673f45ull), G(0x115e4c49d572af0full), \
	G(0x340541a246a45889ull), G(0xa9cf2d2be71771beull), G(0x7a5b1bb063418226ull), \
	G(0x5235f82da845dd1bull), G(0x64d1369fbdc4dd3eull), G(0x74006566b89f3e8cull), \
	G(0xe0b574524159c836ull), G(0xcc0541c0a9547fd3ull), G(0xf3c79f1c0aa0fa60ull), \
	G(0xdacf46250b749c8dull), G(0x7e3a139b34d688e5ull), G(0xf2ac2a1aef94047cull), \
	G(0x2f9e4b6d74dabc51ull), G(0x1580c5ad02e8095cull), G(0xe112ce7ef39c1a90ull), \
	G(0xfa53274f34122935ull), G(0xd2b1c5b34ac178ccull), G(0xa7ea7e5fbae5bf89ull), \
	G(0xa13ea81b2bd48ed2ull), G(0x782f07d06c9ae8afull), G(0x28acc431dc3b7953ull), \
	G(0x442a6c7574c62c7eull), G(0x719f4ee7b8d6e527ull), G(0x03be6e1cdf8a85c4ull), \
	G(0xe4b609703c6a588dull), G(0x471513fd713ce75eull), G(0xa3e15d42ac09b199ull), \
	G(0x463e96e234c3f2b0ull), G(0xb9270687b02cc19full), G(0x518b3d4214305e57ull), \
	G(0xea8a0db4971a1f0bull), G(0xb2f8465e6665e491ull), G(0x350d457301fc9dc6ull), \
	G(0xd2f5054cae3bdd0dull), G(0xd700bf022415d59full), G(0xc338f433d1e6f3ceull), \
	G(0x5e75df6b107c5464ull), G(0x31ee3721c47cb1edull), G(0x289c45c54857782full), \
	G(0x1adb9d51b17c6281ull), G(0x91686505983773fdull), G(0x639f451dd0c2a7a3ull), \
	G(0x60a81185d57a7912ull), G(0x005f5f5667ee3cfaull), G(0xa305e117700d61e1ull), \
	G(0x494a5ea6f9ecf386ull), G(0x83685e5b6a0a18f2ull), G(0xbd50ab438cf09a2dull), \
	G(0x20a627bb9b657649ull), G(0xdb9dabad84180491ull), G(0xdb5441e589abfe3dull), \
	G(0x908fc426b0300b5eull), G(0xb4acdd61ee520b45ull), G(0xc88edcecb542cb75ull), \
	G(0x1a29bd1ed17497d8ull), G(0x90fce821fb7fa45aull), G(0x866328666a8a0608ull), \
	G(0x5da133c7c0d7f08cull), G(0x379f69e47567bd58ull), G(0xc51afce2a185fd2dull), \
	G(0x3f28f559f00ccbfeull), G(0xd53423613bd965cdull), G(0xdce77fb3058a7c18ull), \
	G(0x4d2cf76746e8e05full), G(0x1bc18e0fcb1765e8ull), G(0x126c3cc2d7bfa424ull), \
	G(0x0baa79fe9055ac38ull), G(0x44a31e666dc5943dull), G(0xe370e496235e5fb2ull), \
	G(0x9dff28cb1cf7a092ull), G(0x6e95d7b2e5b8225cull), G(0x89a42d77cd2a79baull), \
	G(0xa38df6b3b5150ce1ull), G(0x3b3957913fb9d075ull), G(0x67099399900fb81dull), \
	G(0x584198d6495d4f56ull), G(0x0b191407bb372f35ull), G(0x6b775445319b50b4ull), \
	G(0xcd4a4d35427aa83eull), G(0xb806eae35163389bull), G(0x01b4a427e27c0066ull), \
	G(0xfcb58577c7495528ull), G(0xe4533d770612d013ull), G(0xd9caaa473722a55eull), \
	G(0x7e9577bf70423b78ull), G(0x25354ce42052810dull), G(0x6d4c2504561546c1ull), \
	G(0x3cde775933485cf1ull), G(0xe125ed5139045d4eull), G(0x016834d4b72d036cull), \
	G(0x0096fe549151e459ull), G(0xe51bff155c6b975bull), G(0xdd7bd038389cea40ull), \
	G(0x4f0210b218035013ull), G(0xf68637d40ba61036ull), G(0x07b5da2a542cd47full), \
	G(0x2b5a57cc5cde8b17ull)

#define GEAR_PLAIN(x) (x)
#define GEAR_SHL1(x) ((x) << 1)

static const uint64_t gear[256] = { GEAR_TABLE(GEAR_PLAIN) };
/* gear_ls[i] = gear[i] << 1 (FastCDC 2020, "rolling two bytes each time"). */
static const uint64_t gear_ls[256] = { GEAR_TABLE(GEAR_SHL1) };

/* The fingerprint is the plain gear hash fp = (fp << 1) + gear[byte], so
 * bit b of fp depends on the last b + 1 bytes only. Mask bits are spread
 * evenly over bits MASK_LOW..MASK_HIGH, as the FastCDC paper recommends
 * (spread bits dedup slightly better than a contiguous low mask), and the
 * highest bit makes every cut decision depend on a 63-byte window. Bit 63
 * is avoided because the two-byte loop tests fp << 1 against mask << 1,
 * which would drop it. */
#define MASK_HIGH 62u
#define MASK_LOW 15u
/* Bytes rolled before the first cut test, so that each test sees a full
 * window (the fingerprint is then a function of the last 64 bytes alone,
 * not of where the chunk started). */
#define HASH_WARMUP 64u
_Static_assert(HASH_WARMUP <= 64, "warm-up must fit below the smallest min_size");

/* k one-bits at positions MASK_HIGH - round(j * (MASK_HIGH - MASK_LOW) / (k - 1)),
 * j = 0 .. k-1 (rounding half up). For 6 <= k <= 24 (avg 256 B .. 4 MiB,
 * normalization level 2) the step is above 2, so the positions are
 * distinct and the mask has exactly k bits. */
static uint64_t spread_mask(unsigned k)
{
	const unsigned span = MASK_HIGH - MASK_LOW;
	uint64_t m = 0;
	for (unsigned j = 0; j < k; j++)
		m |= 1ull << (MASK_HIGH - (2 * j * span + (k - 1)) / (2 * (k - 1)));
	return m;
}

int ss_chunker_init(struct ss_chunker *c, const struct ss_chunk_params *p)
{
	if (!c || !p)
		return -EINVAL;
	uint32_t avg = p->avg_size;
	if (avg < 256 || avg > 4u * 1024 * 1024 || (avg & (avg - 1)))
		return -EINVAL;
	if (p->min_size < 64 || p->min_size >= avg)
		return -EINVAL;
	if (p->max_size <= avg || p->max_size > p->seg_size)
		return -EINVAL;
	if (p->seg_size % SS_PAGE_SIZE || p->seg_size > 1024u * 1024 * 1024)
		return -EINVAL;

	unsigned bits = 0;
	while ((1u << bits) < avg)
		bits++;
	memset(c, 0, sizeof(*c));
	c->p = *p;
	/* Normalized chunking level 2: harder to cut before avg, easier after. */
	c->mask_s = spread_mask(bits + 2);
	c->mask_l = spread_mask(bits - 2);
	c->mask_s_ls = c->mask_s << 1;
	c->mask_l_ls = c->mask_l << 1;
	return 0;
}

/* Roll p[i..end) into *fpp, testing the mask after every byte. Returns the
 * chunk length ending after the first byte whose fingerprint has no bit of
 * the mask set, or 0 when there is none (*fpp then holds the state after
 * p[end-1]).
 *
 * Two bytes per step, as in FastCDC 2020: after the first byte fp holds
 * twice the one-byte fingerprint, which is tested against mask << 1; after
 * the second byte it holds the one-byte fingerprint exactly. The cut points
 * are therefore those of the plain byte-at-a-time gear loop, whatever the
 * parity of i. */
static inline size_t roll(const uint8_t *p, size_t i, size_t end, uint64_t *fpp,
			  uint64_t m, uint64_t m_ls)
{
	uint64_t fp = *fpp;
	for (; end - i >= 2; i += 2) {
		fp = (fp << 2) + gear_ls[p[i]];
		if (!(fp & m_ls))
			return i + 1;
		fp += gear[p[i + 1]];
		if (!(fp & m))
			return i + 2;
	}
	if (i < end) {
		fp = (fp << 1) + gear[p[i]];
		if (!(fp & m))
			return i + 1;
	}
	*fpp = fp;
	return 0;
}

/* Hash p[*ip..end) of a chunk, where positions are relative to the chunk
 * start. Bytes before min_size - 1 only warm the fingerprint; a test after
 * byte i decides a chunk of i + 1 bytes, with the strict mask while that
 * length is <= avg_size and the loose one after. Returns the cut length or
 * 0; advances *ip to end. */
static size_t hash_range(const struct ss_chunker *c, const uint8_t *p, size_t *ip,
			 size_t end, uint64_t *fp)
{
	const size_t first_test = c->p.min_size - 1;
	const size_t avg = c->p.avg_size;
	size_t i = *ip, cut;

	*ip = end;
	if (i < first_test) {
		size_t e = SS_MIN(end, first_test);
		uint64_t h = *fp;
		for (; i < e; i++)
			h = (h << 1) + gear[p[i]];
		*fp = h;
	}
	if (i < avg && i < end) {
		size_t e = SS_MIN(end, avg);
		if ((cut = roll(p, i, e, fp, c->mask_s, c->mask_s_ls)))
			return cut;
		i = e;
	}
	if (i < end)
		return roll(p, i, end, fp, c->mask_l, c->mask_l_ls);
	return 0;
}

/* A zero run starting at the page-aligned data[0], whose first plen bytes
 * are known to be zero (plen = PAGE, or the file's last partial page). */
static int zero_run(const uint8_t *data, size_t w, size_t plen, bool hard,
		    struct ss_extent *ext)
{
	size_t len = plen;
	while (w - len >= PAGE && ss_is_zero(data + len, PAGE))
		len += PAGE;
	/* A shorter tail can only be the file's last page (segment ends are
	 * page-aligned), a zero run too when it is all zero. */
	if (hard && len < w && w - len < PAGE && ss_is_zero(data + len, w - len))
		len = w;
	ext->len = len;
	ext->kind = SS_EXTENT_ZERO;
	return 1;
}

/* A chunk starting at data[0], which lies in_page bytes into a page and is
 * not the start of a zero page. w bytes are usable (up to the segment end);
 * hard says the data ends at w (eof or segment end). */
static int chunk(const struct ss_chunker *c, const uint8_t *data, size_t w,
		 size_t in_page, bool hard, struct ss_extent *ext)
{
	size_t limit = SS_MIN((size_t)c->p.max_size, w);
	/* Next page start; the page at data[0], if aligned, is not zero. */
	size_t pg = in_page ? PAGE - in_page : PAGE;
	size_t i = c->p.min_size - HASH_WARMUP;
	uint64_t fp = 0;

	/* Hash page by page, testing each page for zero only when the hash
	 * gets there: a zero page ends the chunk, and pages past the cut are
	 * left for the next call. */
	for (;;) {
		size_t stop = SS_MIN(pg, limit);
		if (i < stop) {
			size_t cut = hash_range(c, data, &i, stop, &fp);
			if (cut) {
				limit = cut;
				goto out;
			}
		}
		if (pg >= limit)
			break;
		size_t avail = w - pg;
		if (avail >= PAGE) {
			if (ss_is_zero(data + pg, PAGE)) {
				limit = pg;
				goto out;
			}
		} else if (ss_is_zero(data + pg, avail)) {
			/* Past the window: the page may turn out zero, which
			 * would end the chunk here. At a hard end it is the
			 * file's last page, and zero. */
			if (!hard)
				return 0;
			limit = pg;
			goto out;
		}
		pg += PAGE;
	}
	/* No cut, no zero page before limit: a cut at max_size or at a hard
	 * end is final; the window end is not. */
	if (limit < c->p.max_size && !hard)
		return 0;
out:
	ext->len = limit;
	ext->kind = SS_EXTENT_CHUNK;
	return 1;
}

int ss_chunk_next(const struct ss_chunker *c, const uint8_t *data, size_t n,
		  uint64_t off, bool eof, struct ss_extent *ext)
{
	if (!c || !data || !ext || n == 0)
		return -EINVAL;
	const uint64_t to_seg = c->p.seg_size - off % c->p.seg_size;
	/* The segment end cuts like eof: nothing past it matters. */
	const bool hard = eof || n >= to_seg;
	const size_t w = n < to_seg ? n : (size_t)to_seg;
	const size_t in_page = (size_t)(off % PAGE);

	if (in_page == 0) {
		size_t plen = SS_MIN(w, PAGE);
		if (ss_is_zero(data, plen)) {
			/* A partial page may still get non-zero bytes. */
			if (plen < PAGE && !hard)
				return 0;
			return zero_run(data, w, plen, hard, ext);
		}
	}
	return chunk(c, data, w, in_page, hard, ext);
}

/* Streaming front end.
 *
 * Bytes are cut straight from the caller's buffer whenever nothing is
 * pending; only the undecided tail of a read is copied. ss_chunk_next
 * always decides given max_size + SS_PAGE_SIZE bytes, so that is the
 * buffer size. Buffered bytes are only re-examined once the buffer is
 * full, which keeps the work linear however small the reads are. */
struct ss_chunk_stream {
	struct ss_chunker c;
	uint8_t *buf;
	size_t cap;
	size_t len;     /* undecided bytes in buf */
	uint64_t off;   /* file offset of the next undecided byte */
	int err;        /* sticky: the first emit error, or -EINVAL after finish */
};

struct ss_chunk_stream *ss_chunk_stream_new(const struct ss_chunker *c)
{
	if (!c)
		return NULL;
	struct ss_chunk_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->c = *c;
	s->cap = (size_t)c->p.max_size + PAGE;
	s->buf = malloc(s->cap);
	if (!s->buf) {
		free(s);
		return NULL;
	}
	return s;
}

void ss_chunk_stream_free(struct ss_chunk_stream *s)
{
	if (!s)
		return;
	free(s->buf);
	free(s);
}

/* Emit the extents ss_chunk_next decides in p[0..n); *used gets the bytes
 * consumed. Returns 0 or the emit error, which is made sticky: the stream's
 * position is lost once an extent could not be delivered. */
static int drain(struct ss_chunk_stream *s, const uint8_t *p, size_t n, bool eof,
		 ss_chunk_emit_fn emit, void *arg, size_t *used)
{
	size_t u = 0;
	int r = 0;

	while (u < n) {
		struct ss_extent e;
		r = ss_chunk_next(&s->c, p + u, n - u, s->off, eof, &e);
		if (r <= 0)
			break;
		r = emit(arg, s->off, &e, e.kind == SS_EXTENT_CHUNK ? p + u : NULL);
		if (r)
			break;
		u += (size_t)e.len;
		s->off += e.len;
	}
	*used = u;
	if (r)
		s->err = r;
	return r;
}

int ss_chunk_stream_feed(struct ss_chunk_stream *s, const uint8_t *data, size_t n,
			 ss_chunk_emit_fn emit, void *arg)
{
	size_t used;
	int r;

	if (!s || !emit || (!data && n))
		return -EINVAL;
	if (s->err)
		return s->err;
	while (n > 0) {
		if (s->len == 0) {
			if ((r = drain(s, data, n, false, emit, arg, &used)))
				return r;
			/* The rest is shorter than cap, or it would be decided. */
			memcpy(s->buf, data + used, n - used);
			s->len = n - used;
			return 0;
		}
		size_t old = s->len;
		size_t take = SS_MIN(n, s->cap - s->len);
		memcpy(s->buf + s->len, data, take);
		s->len += take;
		data += take;
		n -= take;
		if (s->len < s->cap)
			return 0;
		if ((r = drain(s, s->buf, s->len, false, emit, arg, &used)))
			return r;
		if (used == 0) /* cannot happen: a full buffer always decides */
			return s->err = -EOVERFLOW;
		if (used >= old) {
			/* Everything buffered before this call is decided: the
			 * rest is still in the caller's memory. */
			size_t back = s->len - used;
			data -= back;
			n += back;
			s->len = 0;
		} else {
			memmove(s->buf, s->buf + used, s->len - used);
			s->len -= used;
		}
	}
	return 0;
}

int ss_chunk_stream_finish(struct ss_chunk_stream *s, ss_chunk_emit_fn emit, void *arg)
{
	size_t used;
	int r;

	if (!s || !emit)
		return -EINVAL;
	if (s->err)
		return s->err;
	r = drain(s, s->buf, s->len, true, emit, arg, &used);
	s->len = 0;
	if (!r)
		s->err = -EINVAL; /* finished: further input is a caller bug */
	return r;
}
