/* fuzz_gvstate — libFuzzer target for gVisor state files (engine/core/
 * gvstate.c): the parser push trusts to decide what a file is, and the
 * rebuilder pull and cat feed with a snapshot's stored bytes.
 *
 * The first input byte picks a mode:
 *   0: the rest is a whole file for ss_gvs_scan;
 *   1: the rest is metadata length (1 byte), metadata, chunk size - 1
 *      (u16 BE), then the chunk framing: the harness writes the magic and
 *      a valid HMAC, so mutations reach the body parser;
 *   2: the rest is a stored inflated form, fed to the rebuilder in pieces;
 *   3: like 1 up to the chunk size, then an inflated body: the rebuilt
 *      file must scan and inflate to exactly that form.
 * Whatever scans is rebuilt, and the rebuilt file must scan to the same
 * inflated form (the round trip push and pull make). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "gvstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int out_fd = -1;

static uint8_t *rebuild(const uint8_t *form, size_t n, size_t piece, size_t *len, int *r)
{
	ftruncate(out_fd, 0);
	lseek(out_fd, 0, SEEK_SET);
	struct ss_gvs_out *o;
	if (ss_gvs_out_new(out_fd, &o))
		abort();
	*r = 0;
	for (size_t at = 0; !*r && at < n;) {
		size_t k = n - at < piece ? n - at : piece;
		*r = ss_gvs_out_put(o, form + at, k);
		at += k;
	}
	if (!*r)
		*r = ss_gvs_out_finish(o);
	*len = ss_gvs_out_written(o);
	ss_gvs_out_free(o);
	if (*r)
		return NULL;
	uint8_t *p = malloc(*len ? *len : 1);
	if (!p || pread(out_fd, p, *len, 0) != (ssize_t)*len)
		abort();
	return p;
}

/* A file that scans, rebuilt, must scan to the same inflated form. */
static void round_trip(const uint8_t *p, size_t n, size_t piece)
{
	struct ss_gvs_hdr h, h2;
	uint64_t body, body2;
	if (ss_gvs_scan(p, n, &h, &body, NULL))
		return;
	uint8_t *form = malloc(h.len + body), *form2 = malloc(h.len + body);
	if (!form || !form2 || ss_gvs_scan(p, n, &h, &body, form))
		abort();
	size_t len;
	int r;
	uint8_t *rb = rebuild(form, h.len + body, piece, &len, &r);
	if (r || len != ss_gvs_rebuilt_size(&h, h.len + body))
		abort();
	if (ss_gvs_scan(rb, len, &h2, &body2, NULL) || h2.len != h.len || body2 != body ||
	    ss_gvs_scan(rb, len, &h2, &body2, form2) || memcmp(form, form2, h.len + body))
		abort();
	free(rb);
	free(form);
	free(form2);
}

/* Magic, metadata length and metadata, a valid HMAC, the chunk size. */
static size_t fix_header(const uint8_t *d, size_t n, uint8_t *out, size_t *used)
{
	if (n < 1)
		return 0;
	size_t ml = d[0];
	if (n < 1 + ml + 2)
		return 0;
	memcpy(out, "gVisorSF", 8);
	for (int i = 0; i < 8; i++)
		out[8 + i] = (uint8_t)((uint64_t)ml >> (56 - 8 * i));
	memcpy(out + 16, d + 1, ml);
	unsigned maclen = 32;
	static const uint8_t nokey[1];
	HMAC(EVP_sha256(), nokey, 0, out, 16 + ml, out + 16 + ml, &maclen);
	uint32_t cs = ((uint32_t)d[1 + ml] << 8 | d[2 + ml]) + 1;
	uint8_t *c = out + 16 + ml + 32;
	c[0] = (uint8_t)(cs >> 24);
	c[1] = (uint8_t)(cs >> 16);
	c[2] = (uint8_t)(cs >> 8);
	c[3] = (uint8_t)cs;
	*used = 1 + ml + 2;
	return 16 + ml + 32 + 4;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (out_fd < 0 && (out_fd = memfd_create("fuzz-gvstate", 0)) < 0)
		abort();
	if (size < 1)
		return 0;
	uint8_t mode = data[0] & 3;
	size_t piece = 1 + (data[0] >> 2) * 97;
	data++;
	size--;
	if (mode == 0) {
		round_trip(data, size, piece);
		return 0;
	}
	if (mode == 2) {
		size_t len;
		int r;
		free(rebuild(data, size, piece, &len, &r));
		return 0;
	}
	uint8_t *buf = malloc(SS_GVS_HDR_FIXED + 256 + size);
	if (!buf)
		abort();
	size_t used = 0, hl = fix_header(data, size, buf, &used);
	if (hl) {
		memcpy(buf + hl, data + used, size - used);
		size_t n = hl + size - used;
		if (mode == 1) {
			round_trip(buf, n, piece);
		} else {
			/* An inflated form: its rebuild must give it back. */
			size_t len;
			int r;
			uint8_t *rb = rebuild(buf, n, piece, &len, &r);
			struct ss_gvs_hdr h;
			uint64_t body;
			uint8_t *form = malloc(n);
			if (r || !form || ss_gvs_scan(rb, len, &h, &body, form) || h.len + body != n ||
			    memcmp(form, buf, n))
				abort();
			free(form);
			free(rb);
		}
	}
	free(buf);
	return 0;
}
