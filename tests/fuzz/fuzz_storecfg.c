/* fuzz_storecfg — libFuzzer target for a store's `config` object
 * (engine/core/chunkid.c), which comes from the store and is untrusted.
 *
 * Whatever ss_store_config_parse accepts must format back to the same
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
	/* Every version: what parses formats back to the same bytes (one
	 * canonical form), and every refusal says why. */
	struct ss_store_config sc;
	int r = ss_store_config_parse(data, size, &sc, &err);
	if (r != 0 && r != -EBADMSG && r != -EPROTONOSUPPORT)
		abort();
	if (r == 0) {
		char buf[256];
		size_t n = ss_store_config_format(&sc, buf, sizeof(buf));
		if (n != size || memcmp(buf, data, n) != 0)
			abort();
	} else if (!err.msg[0]) {
		abort();
	}
	/* A check against a key (which binds it to a sealed store's keys)
	 * returns one of the documented results, and the key is bound to a
	 * sealed store's keys exactly when the check passed. */
	static const uint8_t key[32] = {1, 2, 3};
	struct ss_idkey k;
	if (ss_idkey_init(&k, key, sizeof(key), NULL))
		abort();
	ss_err_clear(&err);
	r = ss_idkey_check_store(&k, data, size, "fuzz", NULL, &err);
	if (r != 0 && r != -EBADMSG && r != -EPROTONOSUPPORT && r != -ENOKEY &&
	    r != -EKEYREJECTED)
		abort();
	if (r == 0 && sc.sealed != (k.crypt != NULL))
		abort();
	ss_idkey_wipe(&k);
	return 0;
}
