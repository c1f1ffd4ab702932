/* The layers' JSON writer: json/ssjson's UTF-8 repair, the CLI's --json
 * writer (cli/out.c) at any nesting depth, and ateom's log line
 * (ateom/log.c) with hostile request strings. Every output is parsed back
 * with json-c and compared byte for byte with what it must be. */
#include "cli.h"
#include "log.h"
#include "ssjson.h"
#include "testutil.h"
#include "workload.h"

/* json-c's type json_bool is the CLI's function json_bool (cli.h). */
#define json_bool json_c_bool
#include <json.h>
#undef json_bool

#include <string.h>

/* The bytes f received since it was opened (open_memstream). */
struct mem {
	FILE *f;
	char *buf;
	size_t len;
};

static void mem_open(struct mem *m)
{
	m->buf = NULL;
	m->len = 0;
	m->f = open_memstream(&m->buf, &m->len);
	REQUIRE(m->f, "open_memstream");
}

static char *mem_close(struct mem *m)
{
	fclose(m->f);
	return m->buf;
}

/* Strict UTF-8, written here independently of ssjson.c's decoder from the
 * table of well-formed byte sequences (Unicode 15, table 3-7). */
static bool utf8_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		unsigned c = *p, cp, n;
		if (c < 0x80) {
			p++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 2, cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 3, cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 4, cp = c & 0x07;
		} else {
			return false;
		}
		for (unsigned i = 1; i < n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		p += n;
	}
	return true;
}

/* Parses as exactly one JSON value, and is valid UTF-8. */
static bool json_ok(const char *line)
{
	struct json_tokener *tok = json_tokener_new_ex(1000);   /* default: 32 levels */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	size_t len = strlen(line);
	struct json_object *o = json_tokener_parse_ex(tok, line, (int)len);
	bool ok = o && json_tokener_get_error(tok) == json_tokener_success &&
		  (size_t)json_tokener_get_parse_end(tok) + 1 >= len && utf8_ok(line);
	json_object_put(o);
	json_tokener_free(tok);
	return ok;
}

#define R "\xef\xbf\xbd"   /* U+FFFD */

static void test_utf8(void)
{
	static const struct {
		const char *in, *out;
	} v[] = {
		{"plain", "plain"},
		{"caf\xc3\xa9 \xf0\x9f\x98\x80", "caf\xc3\xa9 \xf0\x9f\x98\x80"},
		{"a\xff" "b", "a" R "b"},
		{"\xed\xa0\x80", R R R},                 /* encoded surrogate */
		{"\xf4\x90\x80\x80", R R R R},           /* past U+10FFFF */
		{"\xc0\xaf", R R},                       /* overlong */
		{"\xe0\x80\xaf", R R R},                 /* overlong */
		{"\xf0\x9f\x98x", R "x"},                /* cut short: one subpart */
		{"\xe2\x82", R},                         /* cut by the end */
		{"\x80\xbf", R R},                       /* lone continuations */
		{"\xf8\x88\x80\x80\x80", R R R R R},     /* 5-byte form */
		{"\xef\xbf\xbf\xf4\x8f\xbf\xbf", "\xef\xbf\xbf\xf4\x8f\xbf\xbf"},
	};
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char out[64];
		size_t n = ssjson_utf8(v[i].in, out, sizeof(out));
		CHECK(n == strlen(v[i].out) && !strcmp(out, v[i].out), "case %zu: got '%s'", i, out);
	}
	/* Cut short at a character boundary, with the length it needs. */
	char small[5];
	size_t n = ssjson_utf8("ab\xc3\xa9\xff", small, sizeof(small));
	CHECK(n == 7 && !strcmp(small, "ab\xc3\xa9"), "cut: %zu '%s'", n, small);
	n = ssjson_utf8("abc\xc3\xa9", small, sizeof(small));
	CHECK(n == 5 && !strcmp(small, "abc"), "cut inside a character: %zu '%s'", n, small);
	CHECK(ssjson_utf8(NULL, small, sizeof(small)) == 0 && !small[0], "NULL is empty");
	/* A long string takes the heap path. */
	char big[1000];
	memset(big, '\xff', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	struct json_object *o = ssjson_string(big);
	REQUIRE(o, "ssjson_string");
	CHECK(json_object_get_string_len(o) == 3 * 999, "999 U+FFFD: %d", json_object_get_string_len(o));
	json_object_put(o);
}

/* The CLI writer: nesting deeper than any command uses today, with
 * hostile strings at every level. */
static void test_cli_writer(void)
{
	enum { DEPTH = 40 };
	struct mem m;
	mem_open(&m);
	struct json j;
	json_begin(&j, m.f);
	json_obj(&j, NULL);
	json_bool(&j, "ok", true);
	for (int d = 0; d < DEPTH; d++) {
		if (d % 2) {
			json_arr(&j, "a");
			json_str(&j, NULL, "x\xed\xa0\x80\"\\\n\x01");
			json_u64(&j, NULL, UINT64_MAX);
			json_obj(&j, NULL);
		} else {
			json_obj(&j, "o");
			json_i64(&j, "i", INT64_MIN);
			json_f64(&j, "f", 0.5);
		}
	}
	json_str(&j, "\xff", "deep");
	for (int d = DEPTH - 1; d >= 0; d--) {
		if (d % 2) {
			json_end_obj(&j);
			json_bool(&j, NULL, false);
			json_end_arr(&j);
		} else {
			json_end_obj(&j);
		}
		json_str(&j, "after", "y");
	}
	json_f64(&j, "nan", 0.0 / 0.0);
	json_end_obj(&j);
	json_finish(&j);
	char *out = mem_close(&m);
	CHECK(json_ok(out), "CLI output at depth %d is not valid JSON: %.300s", DEPTH, out);
	CHECK(strchr(out, '\n') == out + strlen(out) - 1, "one line");
	/* The first levels, exactly. */
	const char *head = "{\"ok\":true,\"o\":{\"i\":-9223372036854775808,\"f\":0.500000,"
			   "\"a\":[\"x" R R R "\\\"\\\\\\n\\u0001\",18446744073709551615,{\"o\":{";
	CHECK(!strncmp(out, head, strlen(head)), "head: %.200s", out);
	CHECK(strstr(out, "{\"" R "\":\"deep\"}"), "innermost key repaired");
	const char *tail = ",\"after\":\"y\"},\"after\":\"y\",\"nan\":null}\n";
	CHECK(strlen(out) > strlen(tail) && !strcmp(out + strlen(out) - strlen(tail), tail),
	      "tail: %s", out + strlen(out) - 60);
	free(out);
}

static void test_log_line(void)
{
	struct wl_req q = {
		.ns = "ns\xff",
		.name = "t\"\\\n\x1f",
		.actor_id = "a\xed\xbf\xbf" "b",
		.snapshot_uri = "s3://b/p\xc3",
	};
	struct wl_result res = {.code = 9, .state = "available", .have_stats = true,
				.logical_bytes = 5, .transferred_bytes = UINT64_MAX};
	snprintf(res.msg, sizeof(res.msg), "cannot open '/x/\xf5\x80': No such file");
	res.phase[0].name = "pull";
	res.phase[0].ms = 1.25;
	res.nphases = 1;
	struct timespec now = {.tv_sec = 1700000000, .tv_nsec = 123456789};
	struct mem m;
	mem_open(&m);
	CHECK(log_rpc_line(m.f, "RestoreWorkload", &q, &res, 12.34, 0.0 / 0.0, &now) == 0, "log");
	char *out = mem_close(&m);
	const char *want =
		"{\"time\":\"2023-11-14T22:13:20.123Z\",\"rpc\":\"RestoreWorkload\","
		"\"code\":\"FAILED_PRECONDITION\",\"actor_id\":\"a" R R R "b\","
		"\"namespace\":\"ns" R "\",\"template\":\"t\\\"\\\\\\n\\u001f\","
		"\"snapshot\":\"s3://b/p" R "\",\"state\":\"available\",\"ms\":12.3,"
		"\"queued_ms\":null,\"phases\":{\"pull\":1.2},\"bytes\":{\"logical\":5,\"zero\":0,"
		"\"dedup\":0,\"new_stored\":0,\"transferred\":18446744073709551615},"
		"\"message\":\"cannot open '/x/" R R "': No such file\"}\n";
	CHECK(!strcmp(out, want), "log line:\n got %s want %s", out, want);
	CHECK(json_ok(out), "log line is not valid JSON: %s", out);
	free(out);

	/* No request (an undecodable call): no request fields. */
	struct wl_result bare = {.code = 3, .state = ""};
	mem_open(&m);
	CHECK(log_rpc_line(m.f, "unknown", NULL, &bare, 0, 0, &now) == 0, "log");
	out = mem_close(&m);
	CHECK(!strcmp(out, "{\"time\":\"2023-11-14T22:13:20.123Z\",\"rpc\":\"unknown\","
			   "\"code\":\"INVALID_ARGUMENT\",\"state\":\"\",\"ms\":0.0,"
			   "\"queued_ms\":0.0,\"phases\":{}}\n"),
	      "bare line: %s", out);
	free(out);
}

int main(void)
{
	test_utf8();
	test_cli_writer();
	test_log_line();
	if (failures)
		fprintf(stderr, "%d failures\n", failures);
	return failures ? 1 : 0;
}
