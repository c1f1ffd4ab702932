/* fdigest — the whole-file digest a manifest records for each file
 * (docs/DESIGN.md, "File digests").
 *
 * Format 1 manifests record XXH3-128 of every byte of the file (what
 * xxh128sum prints). Formats 2 and 3 fold zero pages, so that a file's
 * holes and zero runs cost O(1) each instead of time proportional to
 * their length: the file is cut into 4 KiB pages from its start (the last
 * may be partial), a page is a zero page when all its bytes are zero, and
 * the digest is XXH3-128 (seed 0) of the stream
 *
 *     R1 T1 R2 T2 ... Rn Tn
 *
 * where R1..Rn are the file's maximal runs of zero pages and of other
 * pages, in order: a run of other pages contributes its bytes, a run of
 * zero pages none; Ti is the run's length in bytes shifted left by one,
 * with the low bit set for a zero run, as 8 bytes little-endian. An
 * empty file is the empty stream.
 *
 * From format 5 the digest is a sum, so that it can be made from the
 * file's pieces in any order, as a pull writes them, without reading the
 * file back: the file is cut into leaves of SS_FDIGEST_LEAF (1 KiB) from
 * its start (the last may be shorter); leaf i contributes nothing when
 * all its bytes are zero, else XXH3-128 of its bytes with seed i, taken
 * as a 128-bit number; S is the sum of the contributions modulo 2^128,
 * and the digest is XXH3-128 (seed 0) of the 24 bytes
 *
 *     le64(file size) || le64(S mod 2^64) || le64(S >> 64)
 *
 * Holes and zero leaves cost nothing; each leaf's seed is its place, so
 * moved bytes change the sum.
 *
 * Every format is a function of the bytes alone, however they are handed
 * over: in pieces of any size, with known zeros passed as lengths
 * (ss_fdigest_zero) or as bytes. tests/fdigest.py computes each with
 * nothing of snapstream's.
 *
 * Thread-safety: a digest is used by one thread at a time; an ss_fdsum
 * (below) by any number at once.
 */
#ifndef SS_FDIGEST_H
#define SS_FDIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

struct iovec;

struct ss_fdigest;

/* A digest as manifests of format `major` define it: 1, every byte;
 * 2 and 3, zero pages folded; 5 and later, the sum of leaves. NULL: out
 * of memory. (Format 4 is the sealed envelope, whose inner manifest has a
 * format of its own.) */
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

/* ------------------------------------------------- format 5: leaf sums */

#define SS_FDIGEST_LEAF 1024u
#define SS_FDIGEST_SUM_MAJOR 5u   /* the first format whose digest is a sum */

/* A sum of leaves, modulo 2^128. Zero-initialized is the empty sum. */
struct ss_fdacc {
	uint64_t lo, hi;
};

static inline void ss_fdacc_add(struct ss_fdacc *a, const struct ss_fdacc *b)
{
	a->lo += b->lo;
	a->hi += b->hi + (a->lo < b->lo);
}

/* Add the leaves of bytes [off, off + n) of a file: off is a multiple of
 * SS_FDIGEST_LEAF, and so is n unless the bytes end where the file does
 * (its last, shorter leaf). */
void ss_fdacc_leaves(struct ss_fdacc *a, uint64_t off, const void *p, size_t n);
/* The digest of a file of `size` bytes whose leaves sum to a. */
void ss_fdacc_final(const struct ss_fdacc *a, uint64_t size, uint8_t out[16]);

/* A file's format 5 digest made from pieces in any order and from any
 * thread: each piece's whole leaves are summed by its caller without a
 * lock; a leaf split between pieces waits here (a copy of its bytes)
 * until it is whole. Bytes never handed over are zero (holes), which is
 * how a leaf still split at the end is counted. */
struct ss_fdsum;

/* For a file of `size` bytes. NULL: out of memory. */
struct ss_fdsum *ss_fdsum_new(uint64_t size);
/* Bytes [off, off + n) of the file, each byte handed over at most once:
 * their whole leaves are added to *local (the caller's own sum), split
 * ones kept here. When more than 4,096 leaves of the file are split at
 * once (4 MiB of copies), further ones are read back from the file at
 * the end instead. 0 or -ENOMEM. */
int ss_fdsum_data(struct ss_fdsum *s, uint64_t off, const void *p, size_t n,
		  struct ss_fdacc *local);
/* The same for bytes [off, off + total) held by the buffers iov[0..niov)
 * in turn: a leaf split between two buffers is joined here, not kept. */
int ss_fdsum_datav(struct ss_fdsum *s, uint64_t off, const struct iovec *iov, size_t niov,
		   struct ss_fdacc *local);
/* Keep split leaves while *pool, a count of leaves shared by every sum
 * given it, lasts, instead of 4,096 of this sum's own (before any data):
 * for a caller with no file to read the others back from. */
void ss_fdsum_keep(struct ss_fdsum *s, _Atomic size_t *pool);
/* Add a caller's sum (thread-safe). */
void ss_fdsum_add(struct ss_fdsum *s, const struct ss_fdacc *local);
/* Read n bytes at off of the file (for leaves that were not kept). */
typedef int (*ss_fdsum_read_fn)(void *arg, uint64_t off, void *buf, size_t n);
/* The digest, once every piece was handed over: leaves still split are
 * counted with their missing bytes zero, leaves not kept are read with
 * rd. 0, or rd's error. */
int ss_fdsum_final(struct ss_fdsum *s, ss_fdsum_read_fn rd, void *arg, uint8_t out[16]);
/* NULL is a no-op. */
void ss_fdsum_free(struct ss_fdsum *s);

#endif
