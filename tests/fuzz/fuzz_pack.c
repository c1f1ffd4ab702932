/* fuzz_pack — libFuzzer target for the pack trailer and index parsers and
 * the store-level index object decoder.
 *
 * The input is treated as a whole pack (its last SS_PACK_TRAILER_SIZE
 * bytes are the trailer), and also as an index object. */
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
			struct ss_pack_entry *e = NULL;
			if (ss_pack_parse_index(index, count, index_offset, trailer, 0, &e, &err) == 0) {
				/* Every accepted entry lies inside the chunk data. */
				for (uint32_t i = 0; i < count; i++)
					if ((uint64_t)e[i].offset + e[i].stored_len > index_offset)
						abort();
				free(e);
			}
			free(index);
		}
		free(trailer);
	}

	ss_err_clear(&err);
	struct ss_index_pack *packs = NULL;
	uint32_t npacks = 0;
	if (ss_index_decode(data, size, 0, &packs, &npacks, &err) == 0) {
		/* What decodes must encode again to the same bytes. */
		uint8_t *enc = NULL;
		size_t enclen = 0;
		if (ss_index_encode(packs, npacks, 0, &enc, &enclen) != 0)
			abort();
		if (enclen != size || memcmp(enc, data, size) != 0)
			abort();
		free(enc);
		ss_index_free(packs, npacks);
	}
	return 0;
}
