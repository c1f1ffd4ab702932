/* fuzz_s3xml — libFuzzer target for the S3 (and GCS XML API) response
 * parsers in backends/s3xml.h. Each parser gets the same bytes; outputs
 * must stay NUL-terminated inside their buffers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_obj(void *arg, const char *key, uint64_t size)
{
	(void)size;
	unsigned *n = arg;
	(*n)++;
	if (strlen(key) > 4096)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exactly-sized copy, so reads past the document are caught. */
	uint8_t *p = malloc(size ? size : 1);
	memcpy(p, data, size);

	char code[64], msg[256], id[512];
	if (s3xml_error(p, size, code, sizeof(code), msg, sizeof(msg)) == 0) {
		if (!memchr(code, 0, sizeof(code)) || !memchr(msg, 0, sizeof(msg)))
			abort();
	}
	if (s3xml_upload_id(p, size, id, sizeof(id)) == 0) {
		if (!memchr(id, 0, sizeof(id)))
			abort();
	}
	if (s3xml_complete(p, size, code, sizeof(code)) == 1) {
		if (!memchr(code, 0, sizeof(code)))
			abort();
	}
	struct s3xml_page page;
	memset(&page, 0xa5, sizeof(page));
	unsigned n = 0;
	if (s3xml_list(p, size, on_obj, &n, &page) == 0) {
		if (!memchr(page.token, 0, sizeof(page.token)) || page.count != n)
			abort();
	}
	free(p);
	return 0;
}
