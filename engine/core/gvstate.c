/* gvstate — gVisor state files: the header, inflating chunks, framing
 * them again (gvstate.h). */
#include "gvstate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cryptofn.h"
#include "util.h"

#include <libdeflate.h>

/* Stored DEFLATE blocks carry at most this many bytes each. */
#define STORED_MAX 65535u
#define OUT_BUF (4u << 20)

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

int ss_gvs_header(const uint8_t *p, size_t n, struct ss_gvs_hdr *h, size_t *need)
{
	size_t want = SS_GVS_MAGIC_LEN;
	if (memcmp(p, SS_GVS_MAGIC, SS_MIN(n, want)) != 0)
		return -EINVAL;
	if (n < want)
		goto more;
	want += 8;
	if (n < want)
		goto more;
	uint64_t mlen = get_be64(p + 8);
	if (mlen > SS_GVS_MAX_META)
		return -EINVAL;
	want = SS_GVS_HDR_FIXED + (size_t)mlen;
	if (n < want)
		goto more;
	/* The HMAC is gVisor's own integrity check of the header; with the
	 * empty key runsc uses it is a checksum, and a wrong one means these
	 * bytes are no state file runsc would read. */
	uint8_t mac[32];
	unsigned int maclen = 0;
	static const uint8_t nokey[1];
	/* Without libcrypto the header cannot be checked: plain bytes. */
	if (ss_crypto_load(NULL))
		return -EINVAL;
	const struct ss_cryptofn *C = ss_crypto();
	if (!C->hmac(C->sha256(), nokey, 0, p, 16 + (size_t)mlen, mac, &maclen) || maclen != 32 ||
	    memcmp(mac, p + 16 + mlen, 32) != 0)
		return -EINVAL;
	uint32_t cs = get_be32(p + 16 + mlen + 32);
	if (cs == 0 || cs > SS_GVS_MAX_CHUNK)
		return -EINVAL;
	h->len = (uint32_t)want;
	h->chunk_size = cs;
	return 0;
more:
	if (need)
		*need = want;
	return -EAGAIN;
}

uint32_t ss_gvs_max_clen(uint32_t chunk_size)
{
	/* Stored blocks cost 5 bytes per 65535; Huffman blocks that expand
	 * are bounded far below an eighth. */
	return chunk_size + chunk_size / 8 + 65536;
}

struct ss_gvs_inflater {
	struct libdeflate_decompressor *d;
};

struct ss_gvs_inflater *ss_gvs_inflater_new(void)
{
	struct ss_gvs_inflater *z = calloc(1, sizeof(*z));
	if (z && !(z->d = libdeflate_alloc_decompressor())) {
		free(z);
		z = NULL;
	}
	return z;
}

void ss_gvs_inflater_free(struct ss_gvs_inflater *z)
{
	if (!z)
		return;
	libdeflate_free_decompressor(z->d);
	free(z);
}

long ss_gvs_inflate(struct ss_gvs_inflater *z, const uint8_t *src, size_t slen, uint8_t *dst,
		    size_t cap)
{
	size_t in = 0, out = 0;
	enum libdeflate_result r =
		libdeflate_deflate_decompress_ex(z->d, src, slen, dst, cap, &in, &out);
	/* Bytes after the final block would be lost by a rebuild: not ours. */
	if (r != LIBDEFLATE_SUCCESS || in != slen || out > cap)
		return -EBADMSG;
	return (long)out;
}

int ss_gvs_scan(const uint8_t *p, size_t n, struct ss_gvs_hdr *h, uint64_t *body, uint8_t *out)
{
	struct ss_gvs_hdr hd;
	if (ss_gvs_header(p, n, &hd, NULL))
		return -EINVAL;
	struct ss_gvs_inflater *z = ss_gvs_inflater_new();
	uint8_t *tmp = out ? NULL : malloc(hd.chunk_size);
	if (!z || (!out && !tmp)) {
		ss_gvs_inflater_free(z);
		free(tmp);
		return -ENOMEM;
	}
	if (out)
		memcpy(out, p, hd.len);
	int r = 0;
	uint64_t total = 0;
	bool short_seen = false;
	for (size_t at = hd.len; at < n;) {
		/* Only the last chunk may inflate to less than the chunk size. */
		if (short_seen || n - at < 4) {
			r = -EINVAL;
			break;
		}
		uint32_t clen = get_be32(p + at);
		at += 4;
		if (clen == 0 || clen > ss_gvs_max_clen(hd.chunk_size) || clen > n - at) {
			r = -EINVAL;
			break;
		}
		uint8_t *dst = out ? out + hd.len + total : tmp;
		long got = ss_gvs_inflate(z, p + at, clen, dst, hd.chunk_size);
		if (got <= 0) {
			r = -EINVAL;
			break;
		}
		short_seen = (uint32_t)got < hd.chunk_size;
		total += (uint64_t)got;
		at += clen;
	}
	ss_gvs_inflater_free(z);
	free(tmp);
	if (r)
		return r;
	*h = hd;
	*body = total;
	return 0;
}

/* ---------------------------------------------------------------- framing */

size_t ss_gvs_framed_len(size_t n)
{
	size_t blocks = n ? (n + STORED_MAX - 1) / STORED_MAX : 1;
	return 4 + n + 5 * blocks;
}

size_t ss_gvs_frame(const uint8_t *src, size_t n, uint8_t *dst)
{
	size_t len = ss_gvs_framed_len(n);
	put_be32(dst, (uint32_t)(len - 4));
	uint8_t *o = dst + 4;
	size_t left = n;
	do {
		size_t b = left < STORED_MAX ? left : STORED_MAX;
		/* BFINAL on the last block, BTYPE 00 (stored), then LEN and
		 * its complement, little-endian, byte-aligned. */
		o[0] = left == b;
		o[1] = (uint8_t)b;
		o[2] = (uint8_t)(b >> 8);
		o[3] = (uint8_t)~b;
		o[4] = (uint8_t)(~b >> 8);
		if (b)
			memcpy(o + 5, src, b);
		o += 5 + b;
		src += b;
		left -= b;
	} while (left);
	return len;
}

uint64_t ss_gvs_rebuilt_size(const struct ss_gvs_hdr *hdr, uint64_t stored)
{
	if (stored < hdr->len)
		return 0;
	uint64_t body = stored - hdr->len, c = hdr->chunk_size;
	uint64_t full = body / c, rest = body % c;
	return hdr->len + full * ss_gvs_framed_len((size_t)c) +
	       (rest ? ss_gvs_framed_len((size_t)rest) : 0);
}

/* ---------------------------------------------------------------- writer */

/* Pending pieces of a sized writer before a writev: room for a unit's
 * worth of blocks (4 MiB / 64 KiB, two pieces each) and then some. */
#define OUT_IOV 512u

struct ss_gvs_out {
	int fd;
	/* Sized (ss_gvs_out_new_sized): the body's length is known, so each
	 * chunk's length word and each block's header are known before its
	 * bytes arrive, and the bytes are written from where the caller has
	 * them, between small headers, without being copied here. */
	bool sized;
	uint64_t body_total, body_pos;
	struct iovec iov[OUT_IOV];
	unsigned niov;
	uint8_t heads[OUT_IOV][5];  /* length words and block headers */
	unsigned nheads;
	uint8_t *zeros;             /* STORED_MAX zero bytes, for p == NULL */
	uint8_t *hdr;              /* the header as it arrives */
	size_t hdr_have, hdr_cap;
	struct ss_gvs_hdr h;
	bool in_body;
	uint8_t *chunk;            /* the chunk being filled */
	size_t chunk_have;
	uint8_t *buf;              /* framed chunks waiting to be written */
	size_t buf_len, buf_cap;
	uint64_t written;
};

int ss_gvs_out_new(int fd, struct ss_gvs_out **out)
{
	struct ss_gvs_out *o = calloc(1, sizeof(*o));
	if (!o || !(o->hdr = malloc(SS_GVS_HDR_FIXED))) {
		free(o);
		return -ENOMEM;
	}
	o->hdr_cap = SS_GVS_HDR_FIXED;
	o->fd = fd;
	*out = o;
	return 0;
}

int ss_gvs_out_new_sized(int fd, uint64_t total, struct ss_gvs_out **out)
{
	int r = ss_gvs_out_new(fd, out);
	if (r)
		return r;
	(*out)->sized = true;
	(*out)->body_total = total;   /* the whole form, until the header is known */
	return 0;
}

void ss_gvs_out_free(struct ss_gvs_out *o)
{
	if (!o)
		return;
	free(o->zeros);
	free(o->hdr);
	free(o->chunk);
	free(o->buf);
	free(o);
}

uint64_t ss_gvs_out_written(const struct ss_gvs_out *o)
{
	return o->written;
}

bool ss_gvs_out_header(const struct ss_gvs_out *o, struct ss_gvs_hdr *h)
{
	if (o->in_body)
		*h = o->h;
	return o->in_body;
}

static int write_all(struct ss_gvs_out *o, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(o->fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		p += w;
		n -= (size_t)w;
		o->written += (uint64_t)w;
	}
	return 0;
}

static int flush_buf(struct ss_gvs_out *o)
{
	int r = write_all(o, o->buf, o->buf_len);
	o->buf_len = 0;
	return r;
}

static int emit_chunk(struct ss_gvs_out *o)
{
	size_t need = ss_gvs_framed_len(o->chunk_have);
	if (o->buf_len + need > o->buf_cap) {
		/* Grow up to OUT_BUF past one chunk, then write out. */
		size_t cap = o->buf_cap * 2;
		if (o->buf_len + need <= OUT_BUF + ss_gvs_framed_len(o->h.chunk_size) &&
		    o->buf_len + need <= cap) {
			uint8_t *b = realloc(o->buf, cap);
			if (!b)
				return -ENOMEM;
			o->buf = b;
			o->buf_cap = cap;
		} else {
			int r = flush_buf(o);
			if (r)
				return r;
		}
	}
	o->buf_len += ss_gvs_frame(o->chunk, o->chunk_have, o->buf + o->buf_len);
	o->chunk_have = 0;
	return o->buf_len >= OUT_BUF ? flush_buf(o) : 0;
}

int ss_gvs_out_flush(struct ss_gvs_out *o)
{
	int64_t w = ss_writev_all(o->fd, o->iov, o->niov, -1);
	o->niov = 0;
	o->nheads = 0;
	if (w < 0)
		return (int)w;
	o->written += (uint64_t)w;
	return 0;
}

/* Queue n bytes at p for the next writev, writing first when full. */
static int queue(struct ss_gvs_out *o, const void *p, size_t n)
{
	if (o->niov && (const uint8_t *)o->iov[o->niov - 1].iov_base +
				   o->iov[o->niov - 1].iov_len == p) {
		o->iov[o->niov - 1].iov_len += n;
		return 0;
	}
	if (o->niov == OUT_IOV) {
		int r = ss_gvs_out_flush(o);
		if (r)
			return r;
	}
	o->iov[o->niov++] = (struct iovec){(void *)p, n};
	return 0;
}

/* Queue a header of n (4 or 5) bytes: heads are used no more often than
 * iovecs, so a flush that empties one empties both. */
static uint8_t *queue_head(struct ss_gvs_out *o, size_t n, int *r)
{
	if (o->niov == OUT_IOV && (*r = ss_gvs_out_flush(o)))
		return NULL;
	uint8_t *h = o->heads[o->nheads++];
	o->iov[o->niov++] = (struct iovec){h, n};
	*r = 0;
	return h;
}

/* The sized writer's body: the pieces of n bytes at p (zeros when NULL)
 * between the length words and block headers they fall under. */
static int put_sized(struct ss_gvs_out *o, const uint8_t *p, size_t n)
{
	const uint64_t cs = o->h.chunk_size;
	if (n > o->body_total - o->body_pos)
		return -EBADMSG;   /* more than the size it was made for */
	while (n) {
		uint64_t k = o->body_pos / cs, in = o->body_pos % cs;
		uint64_t clen = SS_MIN(cs, o->body_total - k * cs);
		int r;
		uint8_t *h;
		if (in == 0) {
			if (!(h = queue_head(o, 4, &r)))
				return r;
			put_be32(h, (uint32_t)(ss_gvs_framed_len((size_t)clen) - 4));
		}
		uint64_t bin = in % STORED_MAX, bstart = in - bin;
		uint64_t blen = SS_MIN((uint64_t)STORED_MAX, clen - bstart);
		if (bin == 0) {
			if (!(h = queue_head(o, 5, &r)))
				return r;
			/* As ss_gvs_frame: BFINAL on the chunk's last block,
			 * BTYPE 00, LEN and its complement. */
			h[0] = bstart + blen == clen;
			h[1] = (uint8_t)blen;
			h[2] = (uint8_t)(blen >> 8);
			h[3] = (uint8_t)~blen;
			h[4] = (uint8_t)(~blen >> 8);
		}
		size_t take = (size_t)SS_MIN((uint64_t)n, blen - bin);
		if (!p && !o->zeros && !(o->zeros = calloc(1, STORED_MAX)))
			return -ENOMEM;
		if ((r = queue(o, p ? p : o->zeros, take)))
			return r;
		if (p)
			p += take;
		n -= take;
		o->body_pos += take;
	}
	return 0;
}

static int start_body(struct ss_gvs_out *o)
{
	if (o->sized) {
		if (o->body_total < o->h.len)
			return -EBADMSG;
		o->body_total -= o->h.len;
		o->in_body = true;
		return write_all(o, o->hdr, o->h.len);
	}
	size_t cs = o->h.chunk_size;
	o->buf_cap = ss_gvs_framed_len(cs);
	if (!(o->chunk = malloc(cs)) || !(o->buf = malloc(o->buf_cap)))
		return -ENOMEM;
	o->in_body = true;
	return write_all(o, o->hdr, o->h.len);
}

int ss_gvs_out_put(struct ss_gvs_out *o, const uint8_t *p, size_t n)
{
	while (n && !o->in_body) {
		/* Take what the header may need, then see whether it is whole. */
		size_t need = SS_GVS_HDR_FIXED;
		int r = ss_gvs_header(o->hdr, o->hdr_have, &o->h, &need);
		if (r == 0)
			break;
		if (r != -EAGAIN)
			return -EBADMSG;
		if (need > o->hdr_cap) {
			uint8_t *b = realloc(o->hdr, need);
			if (!b)
				return -ENOMEM;
			o->hdr = b;
			o->hdr_cap = need;
		}
		size_t take = need - o->hdr_have < n ? need - o->hdr_have : n;
		if (p) {
			memcpy(o->hdr + o->hdr_have, p, take);
			p += take;
		} else {
			memset(o->hdr + o->hdr_have, 0, take);
		}
		o->hdr_have += take;
		n -= take;
		r = ss_gvs_header(o->hdr, o->hdr_have, &o->h, NULL);
		if (r == 0 && (r = start_body(o)))
			return r;
		if (r && r != -EAGAIN)
			return -EBADMSG;
	}
	if (o->sized)
		return put_sized(o, p, n);
	while (n) {
		size_t take = o->h.chunk_size - o->chunk_have;
		if (take > n)
			take = n;
		if (p) {
			memcpy(o->chunk + o->chunk_have, p, take);
			p += take;
		} else {
			memset(o->chunk + o->chunk_have, 0, take);
		}
		o->chunk_have += take;
		n -= take;
		if (o->chunk_have == o->h.chunk_size) {
			int r = emit_chunk(o);
			if (r)
				return r;
		}
	}
	return 0;
}

int ss_gvs_out_finish(struct ss_gvs_out *o)
{
	if (!o->in_body)
		return -EBADMSG;
	if (o->sized)
		return o->body_pos == o->body_total ? ss_gvs_out_flush(o) : -EBADMSG;
	int r = o->chunk_have ? emit_chunk(o) : 0;
	return r ? r : flush_buf(o);
}

int ss_gvs_rebuild_fd(int in_fd, uint64_t len, int out_fd)
{
	struct ss_gvs_out *o = NULL;
	uint8_t *buf = malloc(OUT_BUF);
	int r = buf ? ss_gvs_out_new_sized(out_fd, len, &o) : -ENOMEM;
	for (uint64_t at = 0; !r && at < len;) {
		size_t want = len - at < OUT_BUF ? (size_t)(len - at) : OUT_BUF;
		ssize_t n = pread(in_fd, buf, want, (off_t)at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		if (!(r = ss_gvs_out_put(o, buf, (size_t)n)))
			r = ss_gvs_out_flush(o);   /* buf is read into again */
		at += (uint64_t)n;
	}
	if (!r)
		r = ss_gvs_out_finish(o);
	ss_gvs_out_free(o);
	free(buf);
	return r;
}
