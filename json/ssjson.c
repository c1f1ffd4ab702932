/* ssjson — json-c with UTF-8 repair and fixed-point numbers (ssjson.h). */
#include "ssjson.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json.h>

/* Length of the well-formed UTF-8 sequence at p, or the negated length of
 * its maximal ill-formed subpart (at least 1 byte), which becomes one
 * U+FFFD. The bounds of the second byte exclude overlong forms (E0, F0),
 * UTF-16 surrogates (ED) and code points past U+10FFFF (F4); the NUL that
 * ends the string is never a continuation byte, so nothing reads past it. */
static int utf8_seq(const unsigned char *p)
{
	unsigned char c = p[0], lo = 0x80, hi = 0xbf;
	int n;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return -1;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	for (int i = 1; i < n; i++) {
		if (p[i] < lo || p[i] > hi)
			return -i;
		lo = 0x80, hi = 0xbf;
	}
	return n;
}

size_t ssjson_utf8(const char *s, char *out, size_t cap)
{
	static const char fffd[] = "\xef\xbf\xbd";
	size_t need = 0;
	bool full = false;
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p;) {
		int n = utf8_seq(p);
		const char *src = n > 0 ? (const char *)p : fffd;
		size_t len = n > 0 ? (size_t)n : 3;
		/* Once one character does not fit, none after it goes in, so the
		 * result is cut at a character boundary. */
		if (!full && need + len < cap)
			memcpy(out + need, src, len);
		else if (!full)
			out[need] = '\0', full = true;
		need += len;
		p += n > 0 ? n : -n;
	}
	if (!full)
		out[need] = '\0';
	return need;
}

struct json_object *ssjson_string(const char *s)
{
	char small[256];
	size_t n = ssjson_utf8(s, small, sizeof(small));
	if (n < sizeof(small))
		return json_object_new_string_len(small, (int)n);
	if (n > (size_t)INT32_MAX - 1)
		return NULL;   /* json-c lengths are int */
	char *big = malloc(n + 1);
	if (!big)
		return NULL;
	ssjson_utf8(s, big, n + 1);
	struct json_object *o = json_object_new_string_len(big, (int)n);
	free(big);
	return o;
}

struct json_object *ssjson_fixed(double v, int decimals)
{
	char buf[64];
	if (!isfinite(v))
		/* json-c keeps the text it is given for a double: the literal
		 * null is the only honest JSON for NaN or infinity. */
		return json_object_new_double_s(0, "null");
	snprintf(buf, sizeof(buf), "%.*f", decimals, v);
	return json_object_new_double_s(v, buf);
}

int ssjson_add(struct json_object *obj, const char *key, struct json_object *val)
{
	char small[128], *k = small;
	int r = -ENOMEM;
	if (!val)
		return -ENOMEM;
	size_t n = ssjson_utf8(key, small, sizeof(small));
	if (n >= sizeof(small)) {
		if (!(k = malloc(n + 1)))
			goto out;
		ssjson_utf8(key, k, n + 1);
	}
	if (json_object_object_add(obj, k, val) == 0) {
		val = NULL;   /* obj owns it now */
		r = 0;
	}
out:
	if (k != small)
		free(k);
	json_object_put(val);
	return r;
}

int ssjson_append(struct json_object *arr, struct json_object *val)
{
	if (!val)
		return -ENOMEM;
	if (json_object_array_add(arr, val)) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

int ssjson_write_line(FILE *f, struct json_object *o)
{
	size_t len = 0;
	/* No slash escapes: "a/b" reads better than "a\/b" and is the same
	 * JSON string. */
	const char *s = json_object_to_json_string_length(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (!s)
		return -ENOMEM;
	errno = 0;
	if (fwrite(s, 1, len, f) != len || fputc('\n', f) == EOF || fflush(f) == EOF)
		return errno ? -errno : -EIO;
	return 0;
}
