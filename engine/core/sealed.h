/* sealed — reading a store's self-describing objects, sealed or not: a
 * pack's own index from its tail, and index objects (proto/pack.h). A
 * sealed store's (docs/SECURITY.md, "Encryption at rest in keyed
 * stores") are opened with its keys (crypt.h) and must be sealed; any
 * other store's must not be. Pure functions over bytes already read, so
 * the fuzz target runs the same code the engine does. */
#ifndef SS_SEALED_H
#define SS_SEALED_H

#include <stddef.h>
#include <stdint.h>

#include "chunkid.h"
#include "pack.h"
#include "util.h"

/* Decode index object `key` (buf, len) of a store whose ids are ids (NULL:
 * plain): a sealed store's must be sealed, under its own name (key may be
 * NULL: not checked), and open with its keys; any other store's must not
 * be sealed. -EBADMSG (err says why) or -ENOMEM. */
int ss_index_read(const struct ss_idkey *ids, const char *key, const uint8_t *buf, size_t len,
		  struct ss_index_pack **out, uint32_t *npacks, struct ss_err *err);

/* A pack's own index (proto/pack.h), from the last `got` bytes of it in
 * buf, of size bytes in all; a sealed store's (ids->crypt) is opened in
 * place in buf with the key of pack id. Returns 0 with *count entries
 * (*entries, malloc'd) after chunk data ending at *data_end; 1 when the
 * index begins further back (call again with the last *need bytes); or
 * -EBADMSG (err says why) / -ENOMEM. */
int ss_pack_tail_read(const struct ss_idkey *ids, const uint8_t id[16], uint8_t *buf, size_t got,
		      uint64_t size, size_t *need, uint32_t *count, uint64_t *data_end,
		      struct ss_pack_entry **entries, struct ss_err *err);

#endif
