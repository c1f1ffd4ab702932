/* chunker — content-defined chunking (FastCDC) with zero-page runs.
 *
 * A file is cut into extents, each either a ZERO run (whole, page-aligned
 * 4 KiB pages that are all zero; never hashed, stored or transferred) or a
 * CHUNK (bytes cut by FastCDC: gear hash, normalized chunking level 2, two
 * bytes per loop step).
 *
 * Cut points are a pure function of the file's bytes and the parameters:
 *  - an extent never crosses a segment boundary (a multiple of seg_size
 *    from the start of the file), so segments can be chunked in parallel;
 *  - a chunk never contains a page-aligned all-zero 4 KiB page: the page
 *    ends the chunk and starts a zero run;
 *  - the last, partial page of a file is a zero run when it is all zero;
 *  - within those limits FastCDC cuts between min_size and max_size.
 * Adjacent zero runs may be returned in pieces (callers merge them); chunk
 * cuts never depend on how the input was split into reads.
 *
 * No allocation, no global state, thread-safe: a `struct ss_chunker` is
 * immutable after ss_chunker_init and may be shared by all workers.
 */
#ifndef SS_CHUNKER_H
#define SS_CHUNKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SS_PAGE_SIZE 4096u

struct ss_chunk_params {
	uint32_t min_size;  /* >= 64, < avg */
	uint32_t avg_size;  /* power of two, 256 .. 4 MiB */
	uint32_t max_size;  /* > avg, <= seg_size */
	uint32_t seg_size;  /* multiple of SS_PAGE_SIZE, >= max_size, <= 1 GiB */
};

/* Defaults, chosen by measurement (docs/DESIGN.md, "Chunk sizes"). */
#define SS_CHUNK_MIN_DEFAULT (2u * 1024)
#define SS_CHUNK_AVG_DEFAULT (8u * 1024)
#define SS_CHUNK_MAX_DEFAULT (32u * 1024)
#define SS_CHUNK_SEG_DEFAULT (4u * 1024 * 1024)

enum ss_extent_kind {
	SS_EXTENT_ZERO = 0,
	SS_EXTENT_CHUNK = 1,
};

struct ss_extent {
	uint64_t len;   /* bytes; > 0 */
	uint8_t kind;   /* enum ss_extent_kind */
};

struct ss_chunker {
	struct ss_chunk_params p;
	uint64_t mask_s;    /* normalized-chunking masks, see chunker.c */
	uint64_t mask_l;
	uint64_t mask_s_ls; /* the same masks shifted left by one, for the */
	uint64_t mask_l_ls; /* first byte of each two-byte step */
};

/* Validate p and precompute masks. Returns 0 or -EINVAL. */
int ss_chunker_init(struct ss_chunker *c, const struct ss_chunk_params *p);

/* Find the extent that starts at data[0], which lies at offset `off` of the
 * file. data[0..n) is all the data available from there; `eof` says the
 * file ends at data + n. Returns 1 and fills *ext, or 0 when the extent
 * cannot be decided without more data (never when eof, never when the
 * window reaches the next segment boundary, and never when n >= max_size +
 * SS_PAGE_SIZE). Returns -EINVAL when n == 0. */
int ss_chunk_next(const struct ss_chunker *c, const uint8_t *data, size_t n,
		  uint64_t off, bool eof, struct ss_extent *ext);

/* Streaming front end for data that arrives in reads of any size (stdin,
 * a file still being written). It keeps the bytes of the unfinished extent
 * (at most seg_size) and reports every extent through `emit` in order, with
 * a pointer to its bytes (valid only during the call; NULL for zero runs).
 * The extents are exactly those ss_chunk_next gives on the whole file. */
typedef int (*ss_chunk_emit_fn)(void *arg, uint64_t off, const struct ss_extent *ext,
				const uint8_t *bytes);

struct ss_chunk_stream;

/* Returns NULL on allocation failure. */
struct ss_chunk_stream *ss_chunk_stream_new(const struct ss_chunker *c);
void ss_chunk_stream_free(struct ss_chunk_stream *s);
/* Feed n bytes. Returns 0, or the first non-zero value `emit` returned. */
int ss_chunk_stream_feed(struct ss_chunk_stream *s, const uint8_t *data, size_t n,
			 ss_chunk_emit_fn emit, void *arg);
/* End of input: emit what remains. Returns 0 or the emit error. */
int ss_chunk_stream_finish(struct ss_chunk_stream *s, ss_chunk_emit_fn emit, void *arg);

#endif
