/* Helpers for the test programs that link the engine's internals (the
 * others include only testutil.h, which must not need the engine). */
#ifndef SS_TESTENGINE_H
#define SS_TESTENGINE_H

#include "push.h"
#include "testutil.h"

/* The manifest at uri, read with the configuration `in` (which names the
 * mem:// store, and a key if any); exits the test if it cannot be read. */
static inline struct ss_manifest *load_manifest(const struct ss_config_in *in, const char *uri)
{
	struct ss_loop *l;
	REQUIRE(ss_loop_new(64, &l) == 0, "loop");
	struct ss_cfg c;
	REQUIRE(ss_cfg_resolve(in, &c, NULL) == 0, "cfg");
	struct ss_manifest *m = NULL;
	struct ss_err e = {0};
	int r = ss_manifest_load(uri, l, &c, &m, NULL, NULL, &e);
	ss_loop_free(l);
	ss_cfg_wipe(&c);
	REQUIRE(r == 0, "load %s: %s", uri, e.msg);
	return m;
}

#endif
