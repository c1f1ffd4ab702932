/* fuzz_pack — libFuzzer target for the pack trailer and index parsers and
 * the store-level index object decoder.
 *
 * The input is treated as a whole pack (its last SS_PACK_TRAILER_SIZE
 * bytes are the trailer), and also as an index object, each under the
 * rules of plain and of sealed stores (SS_PACK_SEALED: what a sealed
 * store's index looks like once opened), and its last bytes as a sealed
 * pack's footer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ss_err err = {0};
	if (size >= SS_PACK_TRAILER_SIZE) {
		/* Copy the trailer and the index into buffers of exactly their size
		 * so ASan sees any read outside them. */
		const uint8_t *tp = data + size - SS_PACK_TRAILER_SIZE;
		uint8_t *trailer = malloc(SS_PACK_TRAILER_SIZE);
		memcpy(trailer, tp, SS_PACK_TRAILER_SIZE);
		uint32_t count = 0;
		uint64_t index_offset = 0;
		if (ss_pack_parse_trailer(trailer, size, &count, &index_offset, &err) == 0) {
			size_t ilen = size - SS_PACK_TRAILER_SIZE - index_offset;
			uint8_t *index = malloc(ilen ? ilen : 1);
			memcpy(index, data + index_offset, ilen);
			for (unsigned flags = 0; flags <= SS_PACK_SEALED; flags++) {
				struct ss_pack_entry *e = NULL;
				if (ss_pack_parse_index(index, count, index_offset, trailer, flags, &e,
							&err))
					continue;
				/* Every accepted entry lies inside the chunk data, and a
				 * sealed raw chunk inside its frame, before the tag. */
				for (uint32_t i = 0; i < count; i++) {
					if ((uint64_t)e[i].offset + e[i].stored_len > index_offset)
						abort();
					if (flags && e[i].codec == 0 &&
					    (uint64_t)e[i].frame_off + e[i].raw_len + SS_PACK_SEAL_TAG >
						    e[i].stored_len)
						abort();
				}
				free(e);
			}
			free(index);
		}
		free(trailer);
	}

	if (size >= SS_PACK_FOOTER_SIZE) {
		uint8_t footer[SS_PACK_FOOTER_SIZE];
		memcpy(footer, data + size - SS_PACK_FOOTER_SIZE, sizeof(footer));
		uint32_t count = 0;
		uint64_t ioff = 0;
		if (ss_pack_parse_footer(footer, size, &count, &ioff, &err) == 0 &&
		    (ioff + ss_pack_tail_size(count, SS_PACK_SEALED) != size))
			abort();   /* the sealed index fills the pack up to its footer */
	}

	for (unsigned flags = 0; flags <= SS_PACK_SEALED; flags++) {
		ss_err_clear(&err);
		struct ss_index_pack *packs = NULL;
		uint32_t npacks = 0;
		if (ss_index_decode(data, size, flags, &packs, &npacks, &err) == 0) {
			/* What decodes must encode again to the same bytes. */
			uint8_t *enc = NULL;
			size_t enclen = 0;
			if (ss_index_encode(packs, npacks, flags, &enc, &enclen) != 0)
				abort();
			if (enclen != size || memcmp(enc, data, size) != 0)
				abort();
			free(enc);
			ss_index_free(packs, npacks);
		}
	}
	return 0;
}
