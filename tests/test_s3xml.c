/* The S3 XML parsers on hostile input: entity bombs, DTDs, deep nesting,
 * oversized fields, lies about truncation, and random corruption of valid
 * documents (run under ASan/UBSan by scripts/test.sh). Exit 0 pass, 1 fail. */
#include "s3xml.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond, ...)                                                  \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                     \
			fprintf(stderr, "\n");                            \
			failures++;                                       \
		}                                                         \
	} while (0)

struct seen {
	unsigned n;
	char last[2100];
	unsigned long long total;
	unsigned stop_at;
};

static int on_obj(void *arg, const char *key, uint64_t size)
{
	struct seen *s = arg;
	s->n++;
	snprintf(s->last, sizeof(s->last), "%s", key);
	s->total += size;
	return s->stop_at && s->n == s->stop_at ? 7 : 0;
}

static int list(const char *doc, struct seen *s, struct s3xml_page *p)
{
	memset(s, 0, sizeof(*s));
	return s3xml_list((const uint8_t *)doc, strlen(doc), on_obj, s, p);
}

static const char *LIST_OK =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	"<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
	"<IsTruncated>true</IsTruncated>"
	"<Contents><Key>p/a&amp;b</Key><LastModified>x</LastModified><ETag>\"e\"</ETag>"
	"<Size>10</Size><StorageClass>STANDARD</StorageClass></Contents>"
	"<Contents><Key>p/c</Key><Size>18446744073709551615</Size></Contents>"
	"<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
	"</ListBucketResult>";

int main(void)
{
	struct seen s;
	struct s3xml_page p;
	int r = list(LIST_OK, &s, &p);
	CHECK(r == 0 && s.n == 2 && p.truncated && p.count == 2, "valid list: %d %u", r, s.n);
	CHECK(strcmp(s.last, "p/c") == 0, "last key %s", s.last);
	CHECK(strcmp(p.token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=") == 0, "token %s",
	      p.token);

	/* A callback stop is returned as is. */
	memset(&s, 0, sizeof(s));
	s.stop_at = 1;
	r = s3xml_list((const uint8_t *)LIST_OK, strlen(LIST_OK), on_obj, &s, &p);
	CHECK(r == 7 && s.n == 1, "stop: %d %u", r, s.n);

	/* Hostile documents. */
	const char *bad[] = {
		/* billion laughs */
		"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\">"
		"<!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]>"
		"<ListBucketResult><Contents><Key>&c;</Key><Size>1</Size></Contents></ListBucketResult>",
		/* external entity */
		"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
		"<ListBucketResult><Contents><Key>&e;</Key><Size>1</Size></Contents></ListBucketResult>",
		/* wrong root */
		"<Foo><Contents><Key>k</Key><Size>1</Size></Contents></Foo>",
		/* truncated without a token */
		"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
		/* bad sizes */
		"<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
		"<ListBucketResult><Contents><Key>k</Key><Size>18446744073709551616</Size></Contents>"
		"</ListBucketResult>",
		"<ListBucketResult><Contents><Key>k</Key><Size>1e3</Size></Contents></ListBucketResult>",
		/* missing fields */
		"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
		"<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>",
		"<ListBucketResult><Contents><Key></Key><Size>1</Size></Contents></ListBucketResult>",
		/* not XML, unbalanced, empty */
		"HTTP/1.1 200 OK", "<ListBucketResult><Contents>", "",
		"<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = list(bad[i], &s, &p);
		CHECK(r < 0, "hostile list %zu accepted (%d, %u objects)", i, r, s.n);
	}

	/* Deep nesting and oversized fields. */
	char *deep = malloc(200000);
	char *w = deep + sprintf(deep, "<ListBucketResult>");
	for (int i = 0; i < 10000; i++)
		w += sprintf(w, "<a>");
	r = list(deep, &s, &p);
	CHECK(r < 0, "deep nesting accepted");
	w = deep + sprintf(deep, "<ListBucketResult><Contents><Key>");
	memset(w, 'k', 100000);
	strcpy(w + 100000, "</Key><Size>1</Size></Contents></ListBucketResult>");
	r = list(deep, &s, &p);
	CHECK(r < 0, "a 100 kB key accepted");
	w = deep + sprintf(deep, "<ListBucketResult><IsTruncated>true</IsTruncated>"
				 "<NextContinuationToken>");
	memset(w, 't', 1500);
	strcpy(w + 1500, "</NextContinuationToken></ListBucketResult>");
	r = list(deep, &s, &p);
	CHECK(r < 0, "a 1500-byte token accepted");
	free(deep);

	/* Errors, uploads, completions. */
	char code[64], msg[64];
	const char *err = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The specified "
			  "key does not exist, and this message is longer than the buffer</Message>"
			  "<Key>k</Key></Error>";
	r = s3xml_error((const uint8_t *)err, strlen(err), code, sizeof(code), msg, sizeof(msg));
	CHECK(r == 0 && strcmp(code, "NoSuchKey") == 0 && strlen(msg) == sizeof(msg) - 1,
	      "error doc: %d %s / %s", r, code, msg);
	r = s3xml_error((const uint8_t *)LIST_OK, strlen(LIST_OK), code, sizeof(code), msg,
			sizeof(msg));
	CHECK(r < 0 && !code[0], "a listing parsed as an error");
	r = s3xml_error((const uint8_t *)"<Error><Message>x</Message></Error>", 35, code,
			sizeof(code), msg, sizeof(msg));
	CHECK(r < 0, "an error without a code accepted");
	char id[128];
	const char *up = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
			 "<UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>";
	r = s3xml_upload_id((const uint8_t *)up, strlen(up), id, sizeof(id));
	CHECK(r == 0 && strcmp(id, "VXBsb2FkIElE") == 0, "upload id: %d", r);
	r = s3xml_upload_id((const uint8_t *)up, strlen(up), id, 5);
	CHECK(r < 0, "an upload id longer than the buffer accepted");
	r = s3xml_upload_id((const uint8_t *)err, strlen(err), id, sizeof(id));
	CHECK(r < 0, "an error parsed as an upload");
	const char *done = "<CompleteMultipartUploadResult><ETag>\"x\"</ETag></CompleteMultipartUploadResult>";
	CHECK(s3xml_complete((const uint8_t *)done, strlen(done), code, sizeof(code)) == 0,
	      "complete");
	const char *cerr = "<Error><Code>InternalError</Code></Error>";
	r = s3xml_complete((const uint8_t *)cerr, strlen(cerr), code, sizeof(code));
	CHECK(r == 1 && strcmp(code, "InternalError") == 0, "complete error: %d %s", r, code);
	CHECK(s3xml_complete((const uint8_t *)"<x/>", 4, code, sizeof(code)) < 0, "odd complete");

	/* Random corruption of valid documents: never a crash, and a result
	 * is either a clean parse or an error. */
	unsigned long long seed = 88172645463325252ull;
	size_t n = strlen(LIST_OK);
	char *buf = malloc(n + 1);
	for (int it = 0; it < 20000; it++) {
		memcpy(buf, LIST_OK, n + 1);
		int flips = 1 + it % 4;
		for (int k = 0; k < flips; k++) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			buf[seed % n] = (char)(seed >> 32);
		}
		size_t len = it % 7 == 0 ? (size_t)(seed % n) : n;
		memset(&s, 0, sizeof(s));
		r = s3xml_list((const uint8_t *)buf, len, on_obj, &s, &p);
		CHECK(r <= 0, "corrupt list returned %d", r);
		s3xml_error((const uint8_t *)buf, len, code, sizeof(code), msg, sizeof(msg));
		s3xml_upload_id((const uint8_t *)buf, len, id, sizeof(id));
	}
	free(buf);
	if (failures)
		return 1;
	printf("s3xml: ok\n");
	return 0;
}
