/* s3xml — the S3 API's XML documents (the GCS XML API sends the same),
 * parsed with expat. Every response is hostile input: documents arrive
 * already bounded in size, a DOCTYPE (and so any entity) is refused,
 * nesting and every text field have hard limits, and a field that does
 * not fit fails the parse rather than being cut. Thread-safe (no state). */
#ifndef SS_S3XML_H
#define SS_S3XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An <Error> document: its Code and Message (each cut to fit, NUL-ended).
 * Returns 0, or -EBADMSG when p is not one. */
int s3xml_error(const uint8_t *p, size_t n, char *code, size_t codecap, char *msg,
		size_t msgcap);

/* <InitiateMultipartUploadResult>: the UploadId. 0 or -EBADMSG. */
int s3xml_upload_id(const uint8_t *p, size_t n, char *id, size_t cap);

/* A CompleteMultipartUpload answer, which can be an <Error> document even
 * with HTTP 200. Returns 0 for a result, 1 for an error (code filled), or
 * -EBADMSG. */
int s3xml_complete(const uint8_t *p, size_t n, char *code, size_t codecap);

/* One page of ListObjectsV2. fn runs for each object in order; a non-zero
 * return stops the parse and is returned. */
typedef int (*s3xml_obj_fn)(void *arg, const char *key, uint64_t size);
struct s3xml_page {
	bool truncated;
	char token[1100];          /* NextContinuationToken */
	unsigned count;            /* objects seen */
};
int s3xml_list(const uint8_t *p, size_t n, s3xml_obj_fn fn, void *arg, struct s3xml_page *out);

#endif
