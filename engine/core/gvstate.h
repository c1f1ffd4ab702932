/* gvstate — gVisor state files (runsc's checkpoint.img) taken apart and
 * put back together (docs/DESIGN.md, "gVisor state files").
 *
 * A state file is
 *
 *   "gVisorSF" | u64 BE n | n bytes of metadata (JSON) |
 *   32-byte HMAC-SHA256, empty key, over everything before it |
 *   u32 BE chunk size C |
 *   repeated: u32 BE length L | L bytes: one raw DEFLATE stream
 *
 * where every DEFLATE stream inflates to exactly C bytes except the last,
 * which inflates to 1..C. The deflated body defeats dedup (a byte that
 * changes shifts every compressed byte after it in its chunk), so push
 * stores the *inflated form* instead: the header verbatim, through the
 * chunk size word, followed by the concatenated inflated chunks. Pull
 * frames that body again (stored DEFLATE blocks, one stream per C bytes),
 * which runsc restores; the header comes back byte for byte, the framing
 * does not.
 *
 * Everything here reads hostile bytes: lengths are bounded before use,
 * and a file is taken for a state file only when every byte of it parses
 * (ss_gvs_scan). Thread-safe: no state outside the objects passed in. */
#ifndef SS_ENGINE_GVSTATE_H
#define SS_ENGINE_GVSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SS_GVS_MAGIC "gVisorSF"
#define SS_GVS_MAGIC_LEN 8
/* runsc writes a few hundred bytes of metadata and 1 MiB chunks; these
 * bounds only keep hostile lengths from sizing allocations. */
#define SS_GVS_MAX_META (1u << 20)
#define SS_GVS_MAX_CHUNK (16u << 20)
/* Header bytes around the metadata: magic, length, HMAC, chunk size. */
#define SS_GVS_HDR_FIXED (8u + 8u + 32u + 4u)
#define SS_GVS_MAX_HDR (SS_GVS_HDR_FIXED + SS_GVS_MAX_META)

struct ss_gvs_hdr {
	uint32_t len;          /* header bytes, through the chunk size word */
	uint32_t chunk_size;   /* C: inflated bytes per chunk */
};

/* Parse a header from the first n bytes of a file. Returns 0 with *h
 * filled; -EAGAIN when more bytes are needed to tell (*need, if not NULL,
 * is how many in all); -EINVAL when these bytes are no state file header
 * (magic, bounds, HMAC or a chunk size of 0 or above SS_GVS_MAX_CHUNK). */
int ss_gvs_header(const uint8_t *p, size_t n, struct ss_gvs_hdr *h, size_t *need);

/* The largest compressed length L accepted for a chunk of size C: what
 * the worst DEFLATE encoding of C bytes takes, with room to spare. */
uint32_t ss_gvs_max_clen(uint32_t chunk_size);

/* One thread's inflater (libdeflate); NULL on out of memory. */
struct ss_gvs_inflater;
struct ss_gvs_inflater *ss_gvs_inflater_new(void);
void ss_gvs_inflater_free(struct ss_gvs_inflater *z);

/* Inflate src[0..slen), which must be exactly one raw DEFLATE stream (no
 * bytes after its final block), into dst (cap bytes). Returns the bytes
 * it inflates to (0..cap), or -EBADMSG when the stream is damaged, longer
 * than cap, or does not end exactly at slen. */
long ss_gvs_inflate(struct ss_gvs_inflater *z, const uint8_t *src, size_t slen, uint8_t *dst,
		    size_t cap);

/* Check a whole state file held in memory, exactly as push does. Returns
 * 0 when every byte parses (*h, *body: the inflated body's length),
 * -EINVAL otherwise, -ENOMEM. When out is not NULL, the inflated form
 * (header verbatim, then the inflated body) is written to it; it needs
 * h.len + body bytes, which ss_gvs_scan(p, n, h, body, NULL) tells. */
int ss_gvs_scan(const uint8_t *p, size_t n, struct ss_gvs_hdr *h, uint64_t *body, uint8_t *out);

/* --- framing the inflated body again ----------------------------------- */

/* Bytes that n inflated bytes take as one framed chunk: the length word
 * and stored DEFLATE blocks of up to 65535 bytes. */
size_t ss_gvs_framed_len(size_t n);
/* Frame src[0..n) as one chunk into dst (ss_gvs_framed_len(n) bytes).
 * Returns the bytes written. */
size_t ss_gvs_frame(const uint8_t *src, size_t n, uint8_t *dst);

/* The size of the file rebuilt from an inflated form of `stored` bytes
 * whose header is hdr; 0 when stored is shorter than the header. */
uint64_t ss_gvs_rebuilt_size(const struct ss_gvs_hdr *hdr, uint64_t stored);

/* A writer of a rebuilt state file: fed the inflated form in order (as a
 * snapshot stores it), it writes the header through and each chunk framed
 * to fd with write(2), blocking. Returns 0 or -errno; -EBADMSG when the
 * bytes are no inflated form (a header that does not parse). */
struct ss_gvs_out;
int ss_gvs_out_new(int fd, struct ss_gvs_out **out);
/* The same for an inflated form of exactly `total` bytes: the chunks'
 * lengths are then known ahead, and the body is written (writev) from
 * the caller's buffers between the framing's headers, never copied. Its
 * ss_gvs_out_put may keep pointers into what it was given until
 * ss_gvs_out_flush (or finish) returns; more or fewer than total bytes
 * is -EBADMSG. */
int ss_gvs_out_new_sized(int fd, uint64_t total, struct ss_gvs_out **out);
/* Feed n bytes; p NULL means n zero bytes. */
int ss_gvs_out_put(struct ss_gvs_out *o, const uint8_t *p, size_t n);
/* Write what a sized writer holds pointers to (nothing to do for one that
 * copies). Returns 0 or -errno. */
int ss_gvs_out_flush(struct ss_gvs_out *o);
/* Flush the last chunk; -EBADMSG when the stream ended inside its header. */
int ss_gvs_out_finish(struct ss_gvs_out *o);
/* Bytes written to fd so far. */
uint64_t ss_gvs_out_written(const struct ss_gvs_out *o);
/* The header, once it arrived whole: true with *h filled, else false. */
bool ss_gvs_out_header(const struct ss_gvs_out *o, struct ss_gvs_hdr *h);
void ss_gvs_out_free(struct ss_gvs_out *o);

/* Rebuild the state file whose inflated form is the first `len` bytes of
 * in_fd (read with pread from offset 0) into out_fd (written with write
 * from its current offset). Returns 0 or -errno (-EBADMSG: not an
 * inflated form). */
int ss_gvs_rebuild_fd(int in_fd, uint64_t len, int out_fd);

#endif
