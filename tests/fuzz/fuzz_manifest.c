/* fuzz_manifest — libFuzzer target for the manifest decoder.
 *
 * Arbitrary bytes go to ss_manifest_decode. Whatever it accepts must
 * re-encode and decode again: a manifest the decoder lets through is one
 * the engine will act on, so it must also be one the engine can write.
 *
 * The envelope's checksum stops almost every mutated input before the
 * body parser, so an input starting with "BODY" is instead taken as a
 * Snapshot body (after those 4 bytes) and wrapped here in a valid
 * envelope (raw codec, right size, right XXH3-128): that reaches the body
 * decoder and ss_manifest_validate. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

#include <xxhash.h>

#include "manifest.h"
#include "snapshot.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 4 && memcmp(data, "BODY", 4) == 0) {
		Snapstream__V1__Envelope env = SNAPSTREAM__V1__ENVELOPE__INIT;
		XXH128_canonical_t sum;
		XXH128_canonicalFromHash(&sum, XXH3_128bits(data + 4, size - 4));
		env.format_major = SS_MANIFEST_MAJOR;
		env.format_minor = SS_MANIFEST_MINOR;
		env.body_codec = 0;
		env.body_raw_size = size - 4;
		env.body.data = (uint8_t *)data + 4;
		env.body.len = size - 4;
		env.checksum.data = sum.digest;
		env.checksum.len = 16;
		size_t n = snapstream__v1__envelope__get_packed_size(&env);
		uint8_t *buf = malloc(n);
		snapstream__v1__envelope__pack(&env, buf);
		check(buf, n);
		free(buf);
		return 0;
	}
	check(data, size);
	return 0;
}

static void check_as(const uint8_t *data, size_t size, bool sealed);

static void check(const uint8_t *data, size_t size)
{
	/* As a plain store's manifest, and as the inside of a sealed one
	 * (whose frames carry a tag and whose raw chunks share frames). */
	check_as(data, size, false);
	check_as(data, size, true);
}

static void check_as(const uint8_t *data, size_t size, bool sealed)
{
	struct ss_err err = {0};
	struct ss_manifest *m = NULL;
	if (ss_manifest_decode_ex(data, size, sealed, &m, &err) != 0)
		return;
	uint8_t *enc = NULL;
	size_t enclen = 0;
	int r = ss_manifest_encode(m, &enc, &enclen);
	if (r != 0) {
		fprintf(stderr, "fuzz_manifest: decoded manifest does not re-encode (%d)\n", r);
		abort();
	}
	struct ss_manifest *m2 = NULL;
	struct ss_err err2 = {0};
	r = ss_manifest_decode_ex(enc, enclen, sealed, &m2, &err2);
	if (r != 0) {
		fprintf(stderr, "fuzz_manifest: re-encoded manifest does not decode: %s\n",
			err2.msg);
		abort();
	}
	if (m2->nfiles != m->nfiles || m2->nchunks != m->nchunks || m2->npacks != m->npacks) {
		fprintf(stderr, "fuzz_manifest: round trip changed the manifest\n");
		abort();
	}
	ss_manifest_free(m2);
	free(enc);
	ss_manifest_free(m);
}
