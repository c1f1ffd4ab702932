#include "frame.h"

bool ss_frame_prefix(ZSTD_DCtx *dc, const uint8_t *src, size_t srclen, uint8_t *dst, size_t need)
{
	if (!dc || ZSTD_isError(ZSTD_DCtx_reset(dc, ZSTD_reset_session_only)))
		return false;
	ZSTD_inBuffer in = {src, srclen, 0};
	ZSTD_outBuffer out = {dst, need, 0};
	while (out.pos < need) {
		size_t in0 = in.pos, out0 = out.pos;
		size_t r = ZSTD_decompressStream(dc, &out, &in);
		if (ZSTD_isError(r) || (r == 0 && out.pos < need))
			return false;   /* corrupt, or the frame ended early */
		if (in.pos == in0 && out.pos == out0)
			return false;   /* truncated: no input left to make progress */
	}
	return true;
}
