/* fuzz_storecfg — libFuzzer target for a store's `config` object
 * (engine/core/chunkid.c), which comes from the store and is untrusted.
 *
 * Whatever ss_store_config_decode accepts must encode back to the same
 * bytes (one canonical form), and a check against a key must return one
 * of the documented results. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunkid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ss_err err = {0};
	bool keyed;
	uint8_t check[16];
	int r = ss_store_config_decode(data, size, &keyed, check, &err);
	if (r != 0 && r != -EBADMSG && r != -EPROTONOSUPPORT)
		abort();
	if (r == 0) {
		struct ss_idkey k = {.keyed = keyed};
		memcpy(k.check, check, sizeof(check));
		char buf[160];
		size_t n = ss_store_config_encode(&k, buf, sizeof(buf));
		if (n != size || memcmp(buf, data, n) != 0)
			abort();
	} else if (!err.msg[0]) {
		abort();   /* every refusal says why */
	}
	/* Every version: what parses formats back to the same bytes. */
	struct ss_store_config sc;
	ss_err_clear(&err);
	r = ss_store_config_parse(data, size, &sc, &err);
	if (r != 0 && r != -EBADMSG && r != -EPROTONOSUPPORT)
		abort();
	if (r == 0) {
		char buf[256];
		size_t n = ss_store_config_format(&sc, buf, sizeof(buf));
		if (n != size || memcmp(buf, data, n) != 0)
			abort();
	}
	static const uint8_t key[32] = {1, 2, 3};
	struct ss_idkey k;
	if (ss_idkey_init(&k, key, sizeof(key), NULL))
		abort();
	ss_err_clear(&err);
	r = ss_idkey_check_store(&k, data, size, "fuzz", &err);
	if (r != 0 && r != -EBADMSG && r != -EPROTONOSUPPORT && r != -ENOKEY &&
	    r != -EKEYREJECTED)
		abort();
	return 0;
}
