/* pageset — the pages of one push: a set of 64-bit page hashes, each
 * with a count that stops at two, that workers add to concurrently.
 *
 * A memory image repeats whole pages at scattered offsets (shared
 * libraries mapped by several processes, page-cache copies, KSM-able
 * pages); content-defined chunks, tens of KiB long, cannot match them.
 * Before chunking, push counts the pages of its files (pagescan.c); a
 * page found twice or more becomes a chunk of its own wherever it occurs
 * (seg.c), so it is stored once and every copy is one reference. A
 * collision of the 64-bit hashes costs nothing but a page chunk made
 * without need: the chunk's id is its own full hash.
 *
 * Shards with their own lock keep workers from contending; each shard is
 * an open-addressing table that grows, up to a bound on the whole set
 * (past it, new pages are not counted and are chunked as any other bytes:
 * memory stays bounded on any image).
 */
#ifndef SS_PAGESET_H
#define SS_PAGESET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ss_pageset;

/* A set that holds at most max_pages distinct pages. -ENOMEM. */
int ss_pageset_new(size_t max_pages, struct ss_pageset **out);
void ss_pageset_free(struct ss_pageset *s);

/* Count one more of page hash h, and return how many there were before
 * (0, 1, or 2 for two or more). Thread-safe. Out of room or memory: 0, and
 * h is not counted. */
unsigned ss_pageset_add(struct ss_pageset *s, uint64_t h);

/* Count each of h[0..n) once more, as ss_pageset_add would one after
 * another, taking each shard's lock once for all of its pages: a 4 MiB
 * piece of an image is 1,024 pages, and a lock per page was a fifth of
 * the count's time. Thread-safe. */
void ss_pageset_add_many(struct ss_pageset *s, const uint64_t *h, size_t n);

/* No more adds: from here ss_pageset_count reads without a lock. Call it
 * before the threads that count are handed the set (a pthread_create or a
 * mutex between orders the memory). */
void ss_pageset_freeze(struct ss_pageset *s);

/* How many of h were counted: 0, 1, or 2 for two or more. Thread-safe. */
unsigned ss_pageset_count(struct ss_pageset *s, uint64_t h);

/* For each of h[0..n) counted twice or more, set bit i of rep (bit i % 8
 * of byte i / 8); a hash of 0 is no page and is skipped. Only after
 * ss_pageset_freeze. The lookups of a batch are started together: each is
 * a cache miss in a table of megabytes, and one after another they cost
 * as much as hashing the page. Thread-safe. */
void ss_pageset_repeated_many(struct ss_pageset *s, const uint64_t *h, size_t n,
			      uint8_t *rep);

#endif
