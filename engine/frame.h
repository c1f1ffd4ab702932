/* frame — decoding a prefix of one zstd frame into a bounded buffer (pull,
 * cat, verify). Its own module so the fuzz target exercises the real code.
 */
#ifndef SS_FRAME_H
#define SS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

/* Decompress the prefix [0, need) of the zstd frame src into dst. The
 * streaming decoder stops when dst is full, so a frame that would inflate
 * further (a decompression bomb) can never write past it. Returns false
 * for a corrupt or truncated frame, or one shorter than need. Any thread;
 * dc is the caller's. */
bool ss_frame_prefix(ZSTD_DCtx *dc, const uint8_t *src, size_t srclen, uint8_t *dst,
		     size_t need);

#endif
