/* Object-store backend tests against a real server (run under
 * tests/s3/harness.py, which starts s3rver, or under the Python fakes in
 * tests/s3/ that check what they receive).
 *
 * Usage: test_s3 MODE [options]
 *   basic [--export DIR]  put/get/ranged/suffix/list (paginated)/delete/
 *                         stat/multipart/conditional put/errors; --export
 *                         leaves objects under aws-check/ and writes their bytes
 *                         under DIR for the aws CLI to compare
 *   faults                many puts and gets through the fault proxy, all
 *                         byte-exact
 *   failall               every request fails: each call must stop within
 *                         the retry bound with a clear error
 *   sig                   the requests the SigV4 test compares with botocore
 *   gcs-token             GCS requests across a token expiry and a revocation
 *   gcs-fail              one GCS request that must fail (no token)
 *   roundtrip             one put and one get (TLS and credential tests);
 *                         exit 1 with the error on stderr if either fails
 * Environment: AWS_* from the harness, SS_S3_URI (default s3://BUCKET/t with
 * BUCKET from SS_S3_BUCKET),
 * SS_TEST_VERBOSE=1 prints the backend's log lines.
 * Exit 0 pass, 1 fail.
 */
#include "backend.h"
#include "loop.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

static void log_line(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "log: %s\n", msg);
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < n; i++) {
		if (i % 8 == 0) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		p[i] = (uint8_t)(x >> (8 * (i % 8)));
	}
}

struct env {
	struct ss_loop *l;
	struct ss_backend *b;
	struct ss_backend_opts o;
	const char *uri;
};

static int open_env(struct env *e, const char *uri)
{
	struct ss_err err = {0};
	e->uri = uri;
	/* The harness configures the stores through this process's environment. */
	e->o.env = (const char *const *)environ;
	if (getenv("SS_TEST_VERBOSE")) {
		e->o.log = log_line;
		e->o.log_arg = NULL;
	}
	int r = ss_loop_new(256, &e->l);
	if (r) {
		fprintf(stderr, "loop: %s\n", strerror(-r));
		return r;
	}
	r = ss_backend_open(uri, e->l, &e->o, &e->b, &err);
	if (r)
		fprintf(stderr, "open %s: %s\n", uri, err.msg);
	return r;
}

static void close_env(struct env *e)
{
	ss_backend_free(e->b);
	ss_loop_free(e->l);
	e->b = NULL;
	e->l = NULL;
}

static int put(struct env *e, const char *key, const void *p, size_t n, uint32_t flags,
	       struct ss_err *err)
{
	struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
	struct ss_req r = {.kind = SS_REQ_PUT, .key = key, .flags = flags, .iov = &iov,
			   .iovcnt = 1, .err = err};
	return ss_backend_call(e->b, e->l, &r);
}

static int get(struct env *e, const char *key, uint64_t off, uint64_t len, uint32_t flags,
	       void *buf, uint64_t *size, struct ss_err *err)
{
	struct ss_req r = {.kind = SS_REQ_GET, .key = key, .flags = flags, .off = off, .len = len,
			   .buf = buf, .err = err};
	int res = ss_backend_call(e->b, e->l, &r);
	if (size)
		*size = r.size;
	return res;
}

static int stat_key(struct env *e, const char *key, uint64_t *size, struct ss_err *err)
{
	struct ss_req r = {.kind = SS_REQ_STAT, .key = key, .err = err};
	int res = ss_backend_call(e->b, e->l, &r);
	if (size)
		*size = r.size;
	return res;
}

static int del(struct env *e, const char *key, struct ss_err *err)
{
	struct ss_req r = {.kind = SS_REQ_DELETE, .key = key, .err = err};
	return ss_backend_call(e->b, e->l, &r);
}

struct listed {
	char **keys;
	uint64_t *sizes;
	size_t n, cap;
	size_t stop_after;
};

static int on_key(void *arg, const char *key, uint64_t size)
{
	struct listed *L = arg;
	if (L->n == L->cap) {
		L->cap = L->cap ? L->cap * 2 : 64;
		L->keys = realloc(L->keys, L->cap * sizeof(*L->keys));
		L->sizes = realloc(L->sizes, L->cap * sizeof(*L->sizes));
	}
	L->keys[L->n] = strdup(key);
	L->sizes[L->n++] = size;
	return L->stop_after && L->n == L->stop_after ? 42 : 0;
}

static void listed_free(struct listed *L)
{
	for (size_t i = 0; i < L->n; i++)
		free(L->keys[i]);
	free(L->keys);
	free(L->sizes);
	memset(L, 0, sizeof(*L));
}

static int list(struct env *e, const char *prefix, struct listed *L, struct ss_err *err)
{
	struct ss_req r = {.kind = SS_REQ_LIST, .key = prefix, .on_key = on_key, .arg = L,
			   .err = err};
	return ss_backend_call(e->b, e->l, &r);
}

/* --- many requests in flight ------------------------------------------ */

struct batch_item {
	struct ss_req r;
	struct ss_err err;
	struct iovec iov[3];
	char key[64];
	int res;
	bool done;
};

static void item_done(struct ss_op *op, int res)
{
	struct batch_item *it = (struct batch_item *)op;
	it->res = res;
	it->done = true;
}

/* Submit every item, turning the loop while the backend says -EAGAIN;
 * wait for all. Returns how many were pushed back at least once. */
static unsigned run_batch(struct env *e, struct batch_item *items, size_t n)
{
	unsigned pushed_back = 0;
	for (size_t i = 0; i < n; i++) {
		items[i].r.op.done = item_done;
		items[i].r.err = &items[i].err;
		for (;;) {
			int r = ss_backend_submit(e->b, &items[i].r);
			if (r == -EAGAIN) {
				pushed_back++;
				ss_loop_turn(e->l, true);
				continue;
			}
			if (r) {
				items[i].res = r;
				items[i].done = true;
			}
			break;
		}
	}
	for (;;) {
		bool all = true;
		for (size_t i = 0; i < n; i++)
			all = all && items[i].done;
		if (all)
			break;
		ss_loop_turn(e->l, true);
	}
	return pushed_back;
}

static char *key_uri(void)
{
	const char *u = getenv("SS_S3_URI");
	if (u)
		return strdup(u);
	const char *b = getenv("SS_S3_BUCKET");
	char *out = malloc(512);
	snprintf(out, 512, "s3://%s/t", b ? b : "snapstream-test");
	return out;
}

static int write_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(p, 1, n, f);
	fclose(f);
	return w == n ? 0 : -1;
}

/* --- basic ------------------------------------------------------------ */

static void test_basic(const char *export_dir)
{
	char *uri = key_uri();
	struct env e = {0};
	e.o.max_inflight = 16;
	e.o.part_size = 5u << 20;
	e.o.multipart_threshold = 6u << 20;
	e.o.list_page = 50;
	if (open_env(&e, uri)) {
		failures++;
		free(uri);
		return;
	}
	struct ss_err err = {0};
	CHECK(strcmp(ss_backend_name(e.b), "s3") == 0, "name %s", ss_backend_name(e.b));
	CHECK(ss_backend_max_inflight(e.b) == 16, "max_inflight %u", ss_backend_max_inflight(e.b));

	/* Small object round trip, stat, ranges. */
	size_t n = 100000;
	uint8_t *data = malloc(n), *back = malloc(n + 16);
	fill(data, n, 1);
	int r = put(&e, "obj/small", data, n, 0, &err);
	CHECK(r == 0, "put small: %d %s", r, err.msg);
	uint64_t size = 0;
	ss_err_clear(&err);
	r = stat_key(&e, "obj/small", &size, &err);
	CHECK(r == 0 && size == n, "stat small: %d size %llu %s", r, (unsigned long long)size,
	      err.msg);
	memset(back, 0, n);
	r = get(&e, "obj/small", 0, n, 0, back, &size, &err);
	CHECK(r == (int)n && memcmp(back, data, n) == 0 && size == n, "get small: %d", r);
	r = get(&e, "obj/small", 1000, 5000, 0, back, &size, &err);
	CHECK(r == 5000 && memcmp(back, data + 1000, 5000) == 0 && size == n, "ranged get: %d", r);
	r = get(&e, "obj/small", n - 100, 5000, 0, back, &size, &err);
	CHECK(r == 100 && memcmp(back, data + n - 100, 100) == 0, "get across the end: %d", r);
	r = get(&e, "obj/small", 0, 777, SS_GET_SUFFIX, back, &size, &err);
	CHECK(r == 777 && memcmp(back, data + n - 777, 777) == 0 && size == n,
	      "suffix get: %d size %llu %s", r, (unsigned long long)size, err.msg);
	r = get(&e, "obj/small", 0, n + 50, SS_GET_SUFFIX, back, &size, &err);
	CHECK(r == (int)n && memcmp(back, data, n) == 0, "suffix longer than the object: %d %s", r,
	      err.msg);
	size = 0;
	r = get(&e, "obj/small", n + 10, 10, 0, back, &size, &err);
	CHECK(r == 0 && size == n, "get past the end: %d size %llu %s", r,
	      (unsigned long long)size, err.msg);
	r = get(&e, "obj/small", 0, 0, 0, back, &size, &err);
	CHECK(r == 0 && size == n, "empty get: %d size %llu", r, (unsigned long long)size);

	/* Empty object; keys that need encoding. */
	ss_err_clear(&err);
	r = put(&e, "obj/empty", "", 0, 0, &err);
	CHECK(r == 0, "put empty: %d %s", r, err.msg);
	r = stat_key(&e, "obj/empty", &size, &err);
	CHECK(r == 0 && size == 0, "stat empty: %d %llu", r, (unsigned long long)size);
	/* A GET of an empty object: S3 answers a range with 416, s3rver with
	 * 206 "bytes 0-0/0" and a body it never sends. Both are 0 bytes. */
	for (int sfx = 0; sfx < 2; sfx++) {
		size = 77;
		ss_err_clear(&err);
		r = get(&e, "obj/empty", 0, 4096, sfx ? SS_GET_SUFFIX : 0, back, &size, &err);
		CHECK(r == 0 && size == 0, "get empty (suffix %d): %d size %llu %s", sfx, r,
		      (unsigned long long)size, err.msg);
	}
	const char *odd = "obj/sp ace+plus=eq&amp%25~tilde(paren)";
	ss_err_clear(&err);
	r = put(&e, odd, data, 1234, 0, &err);
	CHECK(r == 0, "put odd key: %d %s", r, err.msg);
	r = get(&e, odd, 0, 1234, 0, back, NULL, &err);
	CHECK(r == 1234 && memcmp(back, data, 1234) == 0, "get odd key: %d %s", r, err.msg);

	/* Conditional put. */
	ss_err_clear(&err);
	r = put(&e, "obj/small", data, 10, SS_PUT_IF_ABSENT, &err);
	CHECK(r == -EEXIST, "put if absent on an existing key: %d", r);
	ss_err_clear(&err);
	r = put(&e, "obj/new", data, 10, SS_PUT_IF_ABSENT, &err);
	CHECK(r == 0, "put if absent on a new key: %d %s", r, err.msg);

	/* Missing objects: -ENOENT with bucket, key, status and code. */
	ss_err_clear(&err);
	r = get(&e, "obj/missing", 0, 10, 0, back, NULL, &err);
	CHECK(r == -ENOENT, "get missing: %d", r);
	const char *bucket = getenv("SS_S3_BUCKET");
	CHECK(strstr(err.msg, "obj/missing") && strstr(err.msg, "404") &&
		      strstr(err.msg, "NoSuchKey") && (!bucket || strstr(err.msg, bucket)),
	      "error message: %s", err.msg);
	fprintf(stderr, "missing object says: %s\n", err.msg);
	ss_err_clear(&err);
	r = stat_key(&e, "obj/missing", NULL, &err);
	CHECK(r == -ENOENT, "stat missing: %d", r);

	/* Multipart: 23 MiB from three unaligned pieces, 5 MiB parts. */
	size_t mn = (23u << 20) + 12345;
	uint8_t *big = malloc(mn), *bigback = malloc(mn);
	fill(big, mn, 2);
	struct iovec iov[3] = {{big, 3000001}, {big + 3000001, 9000000},
			       {big + 12000001, mn - 12000001}};
	struct ss_req pr = {.kind = SS_REQ_PUT, .key = "obj/multi", .iov = iov, .iovcnt = 3,
			    .err = &err};
	ss_err_clear(&err);
	r = ss_backend_call(e.b, e.l, &pr);
	CHECK(r == 0, "multipart put: %d %s", r, err.msg);
	r = stat_key(&e, "obj/multi", &size, &err);
	CHECK(r == 0 && size == mn, "multipart stat: %d %llu", r, (unsigned long long)size);
	memset(bigback, 0, mn);
	r = get(&e, "obj/multi", 0, mn, 0, bigback, NULL, &err);
	CHECK(r == (int)mn && memcmp(big, bigback, mn) == 0, "multipart get back: %d", r);
	r = get(&e, "obj/multi", 0, 4096, SS_GET_SUFFIX, bigback, NULL, &err);
	CHECK(r == 4096 && memcmp(bigback, big + mn - 4096, 4096) == 0, "multipart suffix: %d", r);

	/* Many keys in flight at once, then a paginated listing. */
	enum { NKEYS = 420 };
	struct batch_item *items = calloc(NKEYS, sizeof(*items));
	for (int i = 0; i < NKEYS; i++) {
		snprintf(items[i].key, sizeof(items[i].key), "many/k%05d", i);
		items[i].iov[0].iov_base = data;
		items[i].iov[0].iov_len = (size_t)(i % 97) + 1;
		items[i].r.kind = SS_REQ_PUT;
		items[i].r.key = items[i].key;
		items[i].r.iov = items[i].iov;
		items[i].r.iovcnt = 1;
	}
	unsigned pushed = run_batch(&e, items, NKEYS);
	int bad = 0;
	for (int i = 0; i < NKEYS; i++)
		bad += items[i].res != 0;
	CHECK(bad == 0, "%d of %d parallel puts failed: %s", bad, NKEYS, items[0].err.msg);
	CHECK(pushed > 0, "the backend never pushed back at 16 in flight");
	struct listed L = {0};
	ss_err_clear(&err);
	r = list(&e, "many/", &L, &err);
	CHECK(r == 0 && L.n == NKEYS, "list: %d, %zu keys %s", r, L.n, err.msg);
	for (size_t i = 0; i < L.n && i < NKEYS; i++) {
		char want[32];
		snprintf(want, sizeof(want), "many/k%05zu", i);
		CHECK(strcmp(L.keys[i], want) == 0 && L.sizes[i] == i % 97 + 1,
		      "listed %s (%llu), want %s", L.keys[i], (unsigned long long)L.sizes[i], want);
	}
	listed_free(&L);
	L.stop_after = 120;
	r = list(&e, "many/", &L, &err);
	CHECK(r == 42 && L.n == 120, "list stopped early: %d after %zu keys", r, L.n);
	listed_free(&L);
	r = list(&e, "", &L, &err);
	CHECK(r == 0 && L.n >= NKEYS + 5, "list everything: %d %zu", r, L.n);
	bool saw = false;
	for (size_t i = 0; i < L.n; i++)
		saw = saw || strcmp(L.keys[i], odd) == 0;
	CHECK(saw, "the odd key was not listed back");
	listed_free(&L);

	/* Parallel ranged gets of one object. */
	struct batch_item *gets = calloc(64, sizeof(*gets));
	uint8_t *gbuf = malloc(64 * 65536);
	for (int i = 0; i < 64; i++) {
		gets[i].r.kind = SS_REQ_GET;
		gets[i].r.key = "obj/multi";
		gets[i].r.off = (uint64_t)i * 333333;
		gets[i].r.len = 65536;
		gets[i].r.buf = gbuf + (size_t)i * 65536;
	}
	run_batch(&e, gets, 64);
	for (int i = 0; i < 64; i++)
		CHECK(gets[i].res == 65536 &&
			      memcmp(gbuf + (size_t)i * 65536, big + (size_t)i * 333333, 65536) == 0,
		      "parallel get %d: %d %s", i, gets[i].res, gets[i].err.msg);
	free(gets);
	free(gbuf);

	/* Delete. */
	for (int i = 0; i < NKEYS; i++) {
		memset(&items[i].r, 0, sizeof(items[i].r));
		items[i].done = false;
		items[i].r.kind = SS_REQ_DELETE;
		items[i].r.key = items[i].key;
	}
	run_batch(&e, items, NKEYS);
	bad = 0;
	for (int i = 0; i < NKEYS; i++)
		bad += items[i].res != 0;
	CHECK(bad == 0, "%d deletes failed", bad);
	r = list(&e, "many/", &L, &err);
	CHECK(r == 0 && L.n == 0, "list after delete: %d %zu", r, L.n);
	listed_free(&L);
	ss_err_clear(&err);
	r = del(&e, "obj/small", &err);
	CHECK(r == 0, "delete: %d %s", r, err.msg);
	r = stat_key(&e, "obj/small", NULL, &err);
	CHECK(r == -ENOENT, "stat after delete: %d", r);
	free(items);

	/* Objects for the aws CLI to read back. */
	if (export_dir) {
		ss_err_clear(&err);
		r = put(&e, "aws-check/small.bin", data, n, 0, &err);
		CHECK(r == 0, "export small: %d %s", r, err.msg);
		struct ss_req xr = {.kind = SS_REQ_PUT, .key = "aws-check/multi.bin", .iov = iov,
				    .iovcnt = 3, .err = &err};
		r = ss_backend_call(e.b, e.l, &xr);
		CHECK(r == 0, "export multi: %d %s", r, err.msg);
		CHECK(write_file(export_dir, "small.bin", data, n) == 0 &&
			      write_file(export_dir, "multi.bin", big, mn) == 0,
		      "cannot write the export copies");
	}
	close_env(&e);

	/* A bucket that does not exist. */
	char nb[256];
	snprintf(nb, sizeof(nb), "s3://no-such-bucket-here/x");
	if (open_env(&e, nb) == 0) {
		ss_err_clear(&err);
		r = get(&e, "k", 0, 10, 0, back, NULL, &err);
		CHECK(r == -ENOENT && strstr(err.msg, "NoSuchBucket") &&
			      strstr(err.msg, "no-such-bucket-here"),
		      "missing bucket: %d %s", r, err.msg);
	}
	close_env(&e);

	/* Bad locations. */
	const char *badlocs[] = {"s3://", "s3://A_B", "s3://ab", "s3://bucket/../x",
				 "s3://bucket//x", "gs://-bucket"};
	for (size_t i = 0; i < SS_ARRAY_SIZE(badlocs); i++) {
		struct ss_loop *l;
		struct ss_backend *b = NULL;
		ss_loop_new(8, &l);
		ss_err_clear(&err);
		r = ss_backend_open(badlocs[i], l, NULL, &b, &err);
		CHECK(r == -EINVAL, "open %s: %d %s", badlocs[i], r, err.msg);
		ss_backend_free(b);
		ss_loop_free(l);
	}
	char *bu = NULL, *k = NULL;
	r = ss_objuri_split("s3://bucket/a/b/snap", &bu, &k, &err);
	CHECK(r == 0 && strcmp(bu, "s3://bucket") == 0 && strcmp(k, "a/b/snap") == 0,
	      "split: %d %s %s", r, bu, k);
	free(bu);
	free(k);
	r = ss_objuri_split("gs://bucket", &bu, &k, &err);
	CHECK(r == 0 && strcmp(bu, "gs://bucket") == 0 && strcmp(k, "") == 0, "split bucket");
	free(bu);
	free(k);
	CHECK(ss_objuri_split("/tmp/x", &bu, &k, &err) == -EPROTONOSUPPORT, "split a path");
	free(uri);
	free(data);
	free(back);
	free(big);
	free(bigback);
}

/* --- faults ----------------------------------------------------------- */

static void test_faults(void)
{
	char *uri = key_uri();
	struct env e = {0};
	e.o.max_inflight = 16;
	e.o.part_size = 5u << 20;
	e.o.multipart_threshold = 8u << 20;
	e.o.list_page = 40;
	if (open_env(&e, uri)) {
		failures++;
		free(uri);
		return;
	}
	enum { N = 160 };
	size_t sizes[N];
	size_t total = 0;
	for (int i = 0; i < N; i++) {
		sizes[i] = i % 40 == 0 ? (12u << 20) + (size_t)i : (size_t)(i * 7919 % 300000) + 1;
		total += sizes[i];
	}
	uint8_t *src = malloc(total), *dst = malloc(total);
	struct batch_item *items = calloc(N, sizeof(*items));
	size_t at = 0;
	for (int i = 0; i < N; i++) {
		fill(src + at, sizes[i], (uint64_t)i + 100);
		snprintf(items[i].key, sizeof(items[i].key), "f/%03d", i);
		items[i].r.kind = SS_REQ_PUT;
		items[i].r.key = items[i].key;
		items[i].iov[0] = (struct iovec){src + at, sizes[i]};
		items[i].r.iov = items[i].iov;
		items[i].r.iovcnt = 1;
		at += sizes[i];
	}
	uint64_t t0 = ss_now_ns();
	run_batch(&e, items, N);
	int bad = 0;
	for (int i = 0; i < N; i++)
		if (items[i].res) {
			bad++;
			fprintf(stderr, "put %s: %s\n", items[i].key, items[i].err.msg);
		}
	CHECK(bad == 0, "%d puts failed under faults", bad);
	at = 0;
	for (int i = 0; i < N; i++) {
		memset(&items[i].r, 0, sizeof(items[i].r));
		items[i].done = false;
		ss_err_clear(&items[i].err);
		items[i].r.kind = SS_REQ_GET;
		items[i].r.key = items[i].key;
		items[i].r.len = sizes[i];
		items[i].r.buf = dst + at;
		if (i % 3 == 1) {
			items[i].r.flags = SS_GET_SUFFIX;
			items[i].r.len = SS_MIN(sizes[i], 4096u);
			items[i].r.buf = dst + at + sizes[i] - items[i].r.len;
		}
		at += sizes[i];
	}
	memset(dst, 0, total);
	run_batch(&e, items, N);
	bad = 0;
	at = 0;
	for (int i = 0; i < N; i++) {
		size_t want = items[i].r.len;
		uint8_t *w = (uint8_t *)items[i].r.buf;
		size_t off = (size_t)(w - dst);
		if (items[i].res != (int)want || memcmp(w, src + off, want) != 0) {
			bad++;
			fprintf(stderr, "get %s: %d %s\n", items[i].key, items[i].res,
				items[i].err.msg);
		}
		at += sizes[i];
	}
	CHECK(bad == 0, "%d gets failed or differ under faults", bad);
	struct listed L = {0};
	struct ss_err err = {0};
	int r = list(&e, "f/", &L, &err);
	CHECK(r == 0 && L.n == N, "list under faults: %d %zu %s", r, L.n, err.msg);
	listed_free(&L);
	fprintf(stderr, "faults: %d objects, %.1f MiB each way in %.1f s\n", N,
		(double)total / (1 << 20), (double)(ss_now_ns() - t0) / 1e9);
	close_env(&e);
	free(items);
	free(src);
	free(dst);
	free(uri);
}

/* Every request fails: each call stops within the configured bound
 * (SNAPSTREAM_RETRY_SECONDS, with one attempt's slack) and says why. */
static void test_failall(void)
{
	char *uri = key_uri();
	struct env e = {0};
	if (open_env(&e, uri)) {
		failures++;
		free(uri);
		return;
	}
	const char *bs = getenv("SNAPSTREAM_RETRY_SECONDS");
	const char *ss = getenv("SNAPSTREAM_STALL_SECONDS");
	double bound = (bs ? atof(bs) : 300) + (ss ? atof(ss) : 30) + 2;
	uint8_t buf[4096];
	fill(buf, sizeof(buf), 9);
	for (int i = 0; i < 3; i++) {
		struct ss_err err = {0};
		uint64_t t0 = ss_now_ns();
		int r = i == 1 ? get(&e, "gone/k", 0, 100, 0, buf, NULL, &err)
			       : put(&e, "gone/k", buf, sizeof(buf), 0, &err);
		double secs = (double)(ss_now_ns() - t0) / 1e9;
		fprintf(stderr, "failall %d: %d after %.2f s: %s\n", i, r, secs, err.msg);
		CHECK(r < 0, "a request succeeded through a proxy that fails everything");
		CHECK(secs <= bound, "took %.1f s, bound %.1f s", secs, bound);
		CHECK(strstr(err.msg, "gone/k") != NULL, "the error does not name the key: %s",
		      err.msg);
		const char *bucket = getenv("SS_S3_BUCKET");
		CHECK(!bucket || strstr(err.msg, bucket), "the error does not name the bucket");
		CHECK(strstr(err.msg, "attempts") != NULL, "the error does not say it retried: %s",
		      err.msg);
	}
	close_env(&e);
	free(uri);
}

/* lost: every Complete's answer is lost after the server acted on it (the
 * proxy resets the connection then). The retries find the upload gone;
 * the backend must see its own tag on the object and report success, and
 * the object must read back whole. The same for a conditional put, whose
 * retries are refused (412) by its own object.
 * refused: every Complete is refused (503) before reaching the server,
 * while an object of the same key and size is there already (put in one
 * piece). That object must not be taken for this upload's success. */
static void test_lostcomplete(bool refused)
{
	char *uri = key_uri();
	struct env one = {0}, e = {0};
	one.o.multipart_threshold = 64u << 20;
	e.o.part_size = 5u << 20;
	e.o.multipart_threshold = 6u << 20;
	e.o.max_inflight = 4;
	if (open_env(&one, uri) || open_env(&e, uri)) {
		failures++;
		free(uri);
		return;
	}
	size_t n = (11u << 20) + 3;
	uint8_t *big = malloc(n), *back = malloc(n), *first = malloc(n);
	struct ss_err err = {0};
	int r;
	if (refused) {
		fill(first, n, 20);
		r = put(&one, "lost/multi", first, n, 0, &err);
		CHECK(r == 0, "single put: %d %s", r, err.msg);
	}
	fill(big, n, 21);
	ss_err_clear(&err);
	r = put(&e, "lost/multi", big, n, 0, &err);
	fprintf(stderr, "lostcomplete %s put: %d %s\n", refused ? "refused" : "lost", r, err.msg);
	if (refused)
		CHECK(r < 0 && strstr(err.msg, "503"),
		      "a put whose Completes were all refused: %d %s", r, err.msg);
	else
		CHECK(r == 0, "a multipart put whose Complete answer was lost: %d %s", r, err.msg);
	ss_err_clear(&err);
	r = get(&e, "lost/multi", 0, n, 0, back, NULL, &err);
	CHECK(r == (int)n && memcmp(refused ? first : big, back, n) == 0, "read back: %d %s", r,
	      err.msg);
	if (!refused) {
		/* A conditional put's answer lost: its own object is no
		 * refusal; another's is. */
		ss_err_clear(&err);
		r = put(&e, "lost/cond", big, 3000, SS_PUT_IF_ABSENT, &err);
		CHECK(r == 0, "a conditional put whose answer was lost: %d %s", r, err.msg);
		ss_err_clear(&err);
		r = put(&e, "lost/cond", big + 1, 3000, SS_PUT_IF_ABSENT, &err);
		CHECK(r < 0, "a second conditional put of the key succeeded");
		ss_err_clear(&err);
		r = get(&e, "lost/cond", 0, 3000, 0, back, NULL, &err);
		CHECK(r == 3000 && memcmp(big, back, 3000) == 0, "conditional read back: %d %s", r,
		      err.msg);
	}
	free(big);
	free(back);
	free(first);
	close_env(&e);
	close_env(&one);
	free(uri);
}

/* --- the requests the SigV4 test checks ------------------------------- */

static void test_sig(void)
{
	char *uri = key_uri();
	struct env e = {0};
	e.o.part_size = 5u << 20;
	e.o.multipart_threshold = 6u << 20;
	e.o.max_inflight = 4;
	if (open_env(&e, uri)) {
		failures++;
		free(uri);
		return;
	}
	struct ss_err err = {0};
	uint8_t small[3000];
	fill(small, sizeof(small), 5);
	int r = put(&e, "sig/small obj", small, sizeof(small), 0, &err);
	CHECK(r == 0, "sig put: %d %s", r, err.msg);
	r = put(&e, "sig/manifest", small, 100, SS_PUT_IF_ABSENT, &err);
	CHECK(r == 0, "sig conditional put: %d %s", r, err.msg);
	size_t mn = (11u << 20) + 7;
	uint8_t *big = malloc(mn);
	fill(big, mn, 6);
	ss_err_clear(&err);
	r = put(&e, "sig/multi", big, mn, 0, &err);
	CHECK(r == 0, "sig multipart: %d %s", r, err.msg);
	uint8_t buf[1000];
	ss_err_clear(&err);
	r = get(&e, "sig/small obj", 100, 1000, 0, buf, NULL, &err);
	CHECK(r == 1000, "sig ranged get: %d %s", r, err.msg);
	r = get(&e, "sig/small obj", 0, 200, SS_GET_SUFFIX, buf, NULL, &err);
	CHECK(r == 200, "sig suffix get: %d %s", r, err.msg);
	struct listed L = {0};
	ss_err_clear(&err);
	r = list(&e, "sig/", &L, &err);
	CHECK(r == 0 && L.n == 3, "sig list: %d %zu %s", r, L.n, err.msg);
	listed_free(&L);
	r = stat_key(&e, "sig/multi", NULL, &err);
	CHECK(r == 0, "sig stat: %d", r);
	r = del(&e, "sig/multi", &err);
	CHECK(r == 0, "sig delete: %d", r);
	/* A multipart upload whose part fails for good is aborted. */
	ss_err_clear(&err);
	r = put(&e, "sig/fail-multi", big, mn, 0, &err);
	CHECK(r == -EACCES, "failing multipart: %d %s", r, err.msg);
	close_env(&e);
	free(big);
	free(uri);
}

/* --- GCS token flows -------------------------------------------------- */

static void test_gcs_token(void)
{
	const char *uri = getenv("SS_S3_URI");
	struct env e = {0};
	if (!uri || open_env(&e, uri)) {
		failures++;
		return;
	}
	struct ss_err err = {0};
	uint8_t data[5000], back[5000];
	fill(data, sizeof(data), 7);
	/* Several at once: one token fetch serves them all. */
	struct batch_item items[6];
	memset(items, 0, sizeof(items));
	for (int i = 0; i < 6; i++) {
		snprintf(items[i].key, sizeof(items[i].key), "g/%d", i);
		items[i].r.kind = SS_REQ_PUT;
		items[i].r.key = items[i].key;
		items[i].iov[0] = (struct iovec){data, sizeof(data) - (size_t)i};
		items[i].r.iov = items[i].iov;
		items[i].r.iovcnt = 1;
	}
	run_batch(&e, items, 6);
	for (int i = 0; i < 6; i++)
		CHECK(items[i].res == 0, "gcs put %d: %d %s", i, items[i].res, items[i].err.msg);
	int r = get(&e, "g/0", 0, sizeof(back), 0, back, NULL, &err);
	CHECK(r == (int)sizeof(back) && memcmp(back, data, sizeof(back)) == 0, "gcs get: %d %s", r,
	      err.msg);
	/* Past the token's refresh point (the fake issues 4 s tokens, so
	 * refresh comes after 2 s). */
	struct timespec ts = {2, 300000000};
	nanosleep(&ts, NULL);
	ss_err_clear(&err);
	r = get(&e, "g/1", 0, sizeof(back) - 1, 0, back, NULL, &err);
	CHECK(r == (int)sizeof(back) - 1, "gcs get after expiry: %d %s", r, err.msg);
	/* The fake revokes the current token on this key: one 401, a new
	 * token, success. */
	ss_err_clear(&err);
	r = get(&e, "g/revoke", 0, 10, 0, back, NULL, &err);
	CHECK(r == 10, "gcs get across a revoked token: %d %s", r, err.msg);
	uint64_t size;
	r = stat_key(&e, "g/2", &size, &err);
	CHECK(r == 0 && size == sizeof(data) - 2, "gcs stat: %d", r);
	close_env(&e);
}

static void test_gcs_fail(void)
{
	const char *uri = getenv("SS_S3_URI");
	struct env e = {0};
	if (!uri || open_env(&e, uri)) {
		failures++;
		return;
	}
	struct ss_err err = {0};
	uint8_t data[100] = {0};
	int r = put(&e, "g/x", data, sizeof(data), 0, &err);
	fprintf(stderr, "gcs-fail: %d %s\n", r, err.msg);
	CHECK(r < 0, "a put without a token succeeded");
	CHECK(strstr(err.msg, "token") != NULL, "the error does not mention the token: %s",
	      err.msg);
	close_env(&e);
}

static void test_roundtrip(void)
{
	char *uri = key_uri();
	struct env e = {0};
	if (open_env(&e, uri)) {
		failures++;
		free(uri);
		return;
	}
	struct ss_err err = {0};
	uint8_t data[70000], back[70000];
	fill(data, sizeof(data), 3);
	int r = put(&e, "rt/obj", data, sizeof(data), 0, &err);
	if (r == 0)
		r = get(&e, "rt/obj", 0, sizeof(back), 0, back, NULL, &err);
	fprintf(stderr, "roundtrip: %d %s\n", r, err.msg);
	CHECK(r == (int)sizeof(back) && memcmp(data, back, sizeof(back)) == 0, "round trip: %d", r);
	close_env(&e);
	free(uri);
}

int main(int argc, char **argv)
{
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (argc < 2) {
		fprintf(stderr, "usage: test_s3 basic|faults|failall|lostcomplete|refusedcomplete|sig|gcs-token|gcs-fail|roundtrip\n");
		return 1;
	}
	const char *mode = argv[1];
	if (strcmp(mode, "basic") == 0)
		test_basic(argc > 3 && strcmp(argv[2], "--export") == 0 ? argv[3] : NULL);
	else if (strcmp(mode, "faults") == 0)
		test_faults();
	else if (strcmp(mode, "failall") == 0)
		test_failall();
	else if (strcmp(mode, "lostcomplete") == 0)
		test_lostcomplete(false);
	else if (strcmp(mode, "refusedcomplete") == 0)
		test_lostcomplete(true);
	else if (strcmp(mode, "sig") == 0)
		test_sig();
	else if (strcmp(mode, "gcs-token") == 0)
		test_gcs_token();
	else if (strcmp(mode, "gcs-fail") == 0)
		test_gcs_fail();
	else if (strcmp(mode, "roundtrip") == 0)
		test_roundtrip();
	else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 1;
	}
	if (failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", mode, failures);
		return 1;
	}
	fprintf(stderr, "%s: ok\n", mode);
	return 0;
}
