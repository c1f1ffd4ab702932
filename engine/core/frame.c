#include "frame.h"

#include <zstd_errors.h>

size_t ss_frame_prefix(ZSTD_DCtx *dc, const uint8_t *src, size_t srclen, uint8_t *dst, size_t need,
		       size_t cap)
{
	if (!need || !dc || ZSTD_isError(ZSTD_DCtx_reset(dc, ZSTD_reset_session_only)))
		return 0;
	/* One frame, exactly srclen bytes: the one-shot decoder, which
	 * writes straight into dst, when the frame fits. (Our frames carry
	 * no content size, so whether it fits shows only by trying.) */
	if (cap > need && ZSTD_findFrameCompressedSize(src, srclen) == srclen) {
		size_t r = ZSTD_decompressDCtx(dc, dst, cap, src, srclen);
		if (!ZSTD_isError(r))
			return r >= need ? r : 0;
		if (ZSTD_getErrorCode(r) != ZSTD_error_dstSize_tooSmall)
			return 0;
		if (ZSTD_isError(ZSTD_DCtx_reset(dc, ZSTD_reset_session_only)))
			return 0;
	}
	ZSTD_inBuffer in = {src, srclen, 0};
	ZSTD_outBuffer out = {dst, need, 0};
	while (out.pos < need) {
		size_t in0 = in.pos, out0 = out.pos;
		size_t r = ZSTD_decompressStream(dc, &out, &in);
		if (ZSTD_isError(r) || (r == 0 && out.pos < need))
			return 0;   /* corrupt, or the frame ended early */
		if (in.pos == in0 && out.pos == out0)
			return 0;   /* truncated: no input left to make progress */
	}
	return need;
}

ZSTD_CCtx *ss_frame_cctx(int level)
{
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	if (cc) {
		ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
		ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 0);
		ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
		ZSTD_CCtx_setParameter(cc, ZSTD_c_dictIDFlag, 0);
	}
	return cc;
}

size_t ss_frame_compress(ZSTD_CCtx *cc, void *dst, const void *src, size_t n)
{
	size_t z = ZSTD_compress2(cc, dst, ZSTD_compressBound(n), src, n);
	return !ZSTD_isError(z) && z > 0 && z < n - n / 20 ? z : 0;
}
