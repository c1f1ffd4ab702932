/* xxh — XXH3 at this CPU's speed.
 *
 * The functions xxhash.h names are built for SSE2, the x86-64 baseline.
 * Debian's libxxhash also exports their AVX2 and AVX-512 versions behind
 * a CPU check made once (xxh_x86dispatch.h), with the same results:
 * 4 KiB pages hash ~1.5-2x as fast with them on this project's machines,
 * and chunk ids, page counts and file digests hash every byte a push
 * reads and a pull writes. Include this instead of <xxhash.h>; where the
 * build found no dispatch functions (meson.build) it is <xxhash.h>. */
#ifndef SS_XXH_H
#define SS_XXH_H

#include <xxhash.h>
#ifdef SS_XXH_DISPATCH
#include <xxh_x86dispatch.h>
#endif

#endif
