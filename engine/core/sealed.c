/* Reading packs' own indexes and index objects, sealed or not (sealed.h). */
#include "sealed.h"
#include "crypt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ss_index_read(const struct ss_idkey *ids, const char *key, const uint8_t *buf, size_t len,
		  struct ss_index_pack **out, uint32_t *npacks, struct ss_err *err)
{
	const struct ss_crypt *c = ids ? ids->crypt : NULL;
	uint8_t id[16];
	const uint8_t(*pids)[16];
	uint32_t np;
	*out = NULL;
	*npacks = 0;
	int r = ss_sealed_index_peek(buf, len, id, &pids, &np, err);
	if (r == -ENOMSG) {
		/* A readable index object where every one is sealed was not
		 * written by a key holder. */
		if (c)
			return ss_err_set(err, -EBADMSG, "index object is not sealed, but its store is");
		return ss_index_decode(buf, len, 0, out, npacks, err);
	}
	if (r)
		return r;
	if (!c)
		return ss_err_set(err, -EBADMSG,
				  ids && ids->bound ? "index object is sealed, but its store is not"
						    : "index object is sealed: it needs the store's key");
	/* Its name is its id; one copied under another name is refused. */
	char hex[33];
	ss_hex(id, 16, hex);
	const char *base = key ? strrchr(key, '/') : NULL;
	if (base && strcmp(base + 1, hex))
		return ss_err_set(err, -EBADMSG, "index object is named %s but sealed as %s",
				  base + 1, hex);
	uint8_t *inner = NULL;
	size_t ilen = 0;
	r = ss_sealed_index_unwrap(c, buf, len, &inner, &ilen, err);
	if (!r)
		r = ss_index_decode(inner, ilen, SS_PACK_SEALED, out, npacks, err);
	free(inner);
	if (r)
		return r;
	bool same = *npacks == np;
	for (uint32_t i = 0; same && i < np; i++)
		same = !memcmp((*out)[i].pack_id, pids[i], 16);
	if (!same) {
		ss_index_free(*out, *npacks);
		*out = NULL;
		*npacks = 0;
		return ss_err_set(err, -EBADMSG,
				  "index object lists other packs in the clear than sealed");
	}
	return 0;
}

int ss_pack_tail_read(const struct ss_idkey *ids, const uint8_t id[16], uint8_t *buf, size_t got,
		      uint64_t size, size_t *need, uint32_t *count, uint64_t *data_end,
		      struct ss_pack_entry **entries, struct ss_err *err)
{
	const struct ss_crypt *c = ids ? ids->crypt : NULL;
	*entries = NULL;
	if (!c) {
		if (got < SS_PACK_TRAILER_SIZE) {
			if (size < SS_PACK_TRAILER_SIZE || got >= size)
				return ss_err_set(err, -EBADMSG,
						  "pack is %llu bytes, too short for a pack trailer "
						  "(truncated)",
						  (unsigned long long)size);
			*need = SS_PACK_TRAILER_SIZE;
			return 1;
		}
		const uint8_t *trailer = buf + got - SS_PACK_TRAILER_SIZE;
		int r = ss_pack_parse_trailer(trailer, size, count, data_end, err);
		if (r)
			return r;
		size_t ilen = (size_t)*count * SS_PACK_ENTRY_SIZE;
		if (got < ilen + SS_PACK_TRAILER_SIZE) {
			*need = ilen + SS_PACK_TRAILER_SIZE;
			return 1;
		}
		return ss_pack_parse_index(trailer - ilen, *count, *data_end, trailer, 0, entries,
					   err);
	}
	if (got < SS_PACK_FOOTER_SIZE) {
		if (size < SS_PACK_FOOTER_SIZE || got >= size)
			return ss_err_set(err, -EBADMSG,
					  "pack is %llu bytes, too short for a sealed pack's footer "
					  "(truncated)",
					  (unsigned long long)size);
		*need = SS_PACK_FOOTER_SIZE;
		return 1;
	}
	int r = ss_pack_parse_footer(buf + got - SS_PACK_FOOTER_SIZE, size, count, data_end, err);
	if (r)
		return r;
	size_t sl = (size_t)(size - SS_PACK_FOOTER_SIZE - *data_end);
	if (got < sl + SS_PACK_FOOTER_SIZE) {
		*need = sl + SS_PACK_FOOTER_SIZE;
		return 1;
	}
	uint8_t *idx = buf + got - SS_PACK_FOOTER_SIZE - sl;
	struct ss_aead *a = NULL;
	r = ss_aead_new(ss_crypt_cipher(c), &a);
	if (!r)
		r = ss_crypt_pack_key(c, id, a);
	if (r) {
		ss_aead_free(a);
		return ss_err_set(err, r, "cannot open a pack index: %s", strerror(-r));
	}
	r = ss_crypt_index_open(a, *data_end, idx, sl);
	ss_aead_free(a);
	if (r)
		return ss_err_set(err, -EBADMSG,
				  "pack index does not authenticate (altered, truncated, or a pack "
				  "of another store or under another name)");
	/* Opened: the plain index and trailer, as a plain pack ends. */
	size_t pl = sl - SS_SEAL_TAG;
	uint64_t ioff;
	uint32_t n;
	r = ss_pack_parse_trailer(idx + pl - SS_PACK_TRAILER_SIZE, *data_end + pl, &n, &ioff, err);
	if (!r && (n != *count || ioff != *data_end))
		r = ss_err_set(err, -EBADMSG, "pack trailer does not match its footer");
	if (!r)
		r = ss_pack_parse_index(idx, n, ioff, idx + pl - SS_PACK_TRAILER_SIZE,
					SS_PACK_SEALED, entries, err);
	return r;
}

