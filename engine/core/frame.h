/* frame — the zstd frames of a pack: how pushes write them and how a
 * prefix of one is decoded into a bounded buffer (pull, cat, verify). Its
 * own module so the fuzz target exercises the real decoder.
 */
#ifndef SS_FRAME_H
#define SS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

/* Decompress the prefix [0, need) of the zstd frame src into dst, which
 * has room for cap >= need bytes; bytes past need may be written, never
 * past cap. When the whole frame fits in cap it is decoded in one call,
 * straight into dst; otherwise the streaming decoder stops when need bytes
 * are out (it goes through its own window buffer, one more copy). Either
 * way a frame that would inflate further (a decompression bomb) never
 * writes past cap. Returns how many bytes of dst hold the frame's start
 * (need, or the whole frame when it was decoded in one call), or 0 for a
 * corrupt or truncated frame, one shorter than need, or need 0. Any
 * thread; dc is the caller's. */
size_t ss_frame_prefix(ZSTD_DCtx *dc, const uint8_t *src, size_t srclen, uint8_t *dst,
		       size_t need, size_t cap);

/* A compression context for frames at `level`: no checksum, content size
 * or dictionary id in the frame, since the pack index records each
 * chunk's length and the chunk id is its checksum. NULL: out of memory. */
ZSTD_CCtx *ss_frame_cctx(int level);

/* Compress src[0, n) into dst, which has ZSTD_compressBound(n) bytes of
 * room (with less, zstd falls back to a far slower buffered path).
 * Returns the frame's size when it saves at least 5 %, else 0: the bytes
 * are then stored raw, since decompressing them would cost time for no
 * space (docs/DESIGN.md, "Compression frames"). */
size_t ss_frame_compress(ZSTD_CCtx *cc, void *dst, const void *src, size_t n);

#endif
