/* fuzz_frame — libFuzzer target for chunk decompression with verification.
 *
 * The input is: need u16 (little-endian, the decompressed prefix the
 * reader asks for), id[16] (the chunk's XXH3-128), then the stored zstd
 * frame. ss_frame_prefix (engine/core/frame.c, the code pull, cat and verify
 * use) must never write past dst whatever the frame claims, and what it produces is
 * accepted only when its XXH3-128 matches. libzstd is not instrumented, so
 * dst ends exactly where an inaccessible guard page begins: a write past it
 * faults even from inside the library. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <xxhash.h>
#include <zstd.h>

#include "frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OUT_CAP (64u * 1024)   /* need is a u16 */

static ZSTD_DCtx *dctx;
static uint8_t *region;        /* OUT_CAP writable bytes, then a guard page */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 18)
		return 0;
	if (!dctx) {
		/* One context for the process, as the engine keeps one per worker;
		 * the window limit is the engine's default. */
		dctx = ZSTD_createDCtx();
		long pg = sysconf(_SC_PAGESIZE);
		region = mmap(NULL, OUT_CAP + (size_t)pg, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (!dctx || region == MAP_FAILED ||
		    mprotect(region + OUT_CAP, (size_t)pg, PROT_NONE) != 0)
			abort();
	}
	size_t need = (size_t)data[0] | (size_t)data[1] << 8;
	if (need == 0)
		need = 1;
	uint8_t id[16];
	memcpy(id, data + 2, 16);
	size_t srclen = size - 18;
	uint8_t *src = malloc(srclen ? srclen : 1);
	memcpy(src, data + 18, srclen);
	/* Room for need bytes, or for more (the one-shot path), as the
	 * input's third byte says; the guard page ends it either way. */
	size_t cap = need + (srclen ? (size_t)data[18] * 256 : 0);
	if (cap > OUT_CAP)
		cap = OUT_CAP;
	uint8_t *dst = region + OUT_CAP - cap;
	size_t got = ss_frame_prefix(dctx, src, srclen, dst, need, cap);
	if (got) {
		/* What it says it wrote lies within dst, and covers need. */
		if (got < need || got > cap)
			abort();
		XXH128_canonical_t h;
		XXH128_canonicalFromHash(&h, XXH3_128bits(dst, need));
		volatile bool ok = memcmp(h.digest, id, 16) == 0;
		(void)ok;
	}
	free(src);
	return 0;
}
