/* fdigest — the whole-file digest a manifest records for each file
 * (docs/DESIGN.md, "File digests").
 *
 * Format 1 manifests record XXH3-128 of every byte of the file (what
 * xxh128sum prints). From format 2 the digest folds zero pages, so that a
 * file's holes and zero runs cost O(1) each instead of time proportional
 * to their length: the file is cut into 4 KiB pages from its start (the
 * last may be partial), a page is a zero page when all its bytes are zero,
 * and the digest is XXH3-128 (seed 0) of the stream
 *
 *     R1 T1 R2 T2 ... Rn Tn
 *
 * where R1..Rn are the file's maximal runs of zero pages and of other
 * pages, in order: a run of other pages contributes its bytes, a run of
 * zero pages none; Ti is the run's length in bytes shifted left by one,
 * with the low bit set for a zero run, as 8 bytes little-endian. An
 * empty file is the empty stream. Read from its end, the stream gives the
 * file back, so two files differ exactly when their streams do.
 *
 * The value is a function of the bytes alone, however they are handed
 * over: in pieces of any size, with known zeros passed as lengths
 * (ss_fdigest_zero) or as bytes. tests/fdigest.py computes the stream
 * with nothing but Python, to pipe into xxh128sum.
 *
 * Thread-safety: a digest is used by one thread at a time.
 */
#ifndef SS_FDIGEST_H
#define SS_FDIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ss_fdigest;

/* A digest as manifests of format `major` define it: 1, every byte;
 * 2 and later, zero pages folded. NULL: out of memory. */
struct ss_fdigest *ss_fdigest_new(uint32_t major);
/* Start over (the same format). */
void ss_fdigest_reset(struct ss_fdigest *d);
/* The next n bytes of the file. */
void ss_fdigest_data(struct ss_fdigest *d, const void *p, size_t n);
/* The next n bytes of the file, known to be zero (a hole, a zero run):
 * O(1) from format 2, however large n is. */
void ss_fdigest_zero(struct ss_fdigest *d, uint64_t n);
/* The digest of everything handed over, canonical (big-endian) bytes.
 * The digest may be reset and used again afterwards. */
void ss_fdigest_final(struct ss_fdigest *d, uint8_t out[16]);
/* NULL is a no-op. */
void ss_fdigest_free(struct ss_fdigest *d);

#endif
