/* fuzz_uri — libFuzzer target for location and object-store URI parsing
 * and key validation.
 *
 * The input, cut at its first NUL, is a location. Whatever ss_objuri_split
 * accepts must give a non-empty bucket and a key that is empty or passes
 * ss_key_ok (so no URI escapes the prefix it names). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';

	struct ss_err err = {0};
	const char *scheme = NULL;
	char *path = NULL;
	if (ss_location_parse(s, &scheme, &path, &err) == 0) {
		if (!scheme || !path)
			abort();
		free(path);
	}

	ss_err_clear(&err);
	char *bucket = NULL, *key = NULL;
	if (ss_objuri_split(s, &bucket, &key, &err) == 0) {
		if (strncmp(bucket, "s3://", 5) != 0 && strncmp(bucket, "gs://", 5) != 0)
			abort();
		if (bucket[5] == '\0' || strchr(bucket + 5, '/'))
			abort();
		if (*key && !ss_key_ok(key))
			abort();
		free(bucket);
		free(key);
	}

	if (ss_key_ok(s)) {
		/* An accepted key is relative and has no ".." component. */
		size_t n = strlen(s);
		if (s[0] == '/' || strcmp(s, "..") == 0 || strncmp(s, "../", 3) == 0 ||
		    strstr(s, "/../") || (n >= 3 && strcmp(s + n - 3, "/..") == 0))
			abort();
	}
	free(s);
	return 0;
}
