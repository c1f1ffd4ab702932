/* bufpool — the large buffers of push and pull, taken from a caller's
 * resident pool (struct ss_buffers, snapstream.h) when it gave one.
 *
 * A one-shot process maps its segment, pack, range and decode buffers
 * fresh, fills them, and unmaps them at the end. A server that pushes and
 * pulls again and again (ateom) would fault the same ~100 MiB in again on
 * every call, and where first touching memory is expensive (a VM whose
 * host backs guest memory lazily, or reclaims what the guest freed) that
 * faulting was as much CPU as the push's own work. A pool is mapped and
 * touched once, when the caller makes it, and lends whole 2 MiB blocks.
 *
 * Memory lent from the pool is NOT zeroed: it holds what the last user
 * left. Only buffers whose every byte read was first written may come
 * from here. When the pool has no room (another call holds it, or the
 * request is larger), the buffer is mapped as without a pool.
 *
 * Thread-safety: any thread; the pool takes a mutex per get and put. */
#ifndef SS_BUFPOOL_H
#define SS_BUFPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct ss_buffers;

/* n bytes, from the pool when it has room (pool may be NULL). sparse: a
 * buffer only part of which is written per use (ss_map_alloc_sparse
 * without a pool; resident anyway within one). NULL: out of memory. */
void *ss_bufpool_get(struct ss_buffers *pool, size_t n, bool sparse);
/* Give back what ss_bufpool_get returned for the same n; NULL is a no-op. */
void ss_bufpool_put(struct ss_buffers *pool, void *p, size_t n);

#endif
