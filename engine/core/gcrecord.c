/* The small records garbage collection keeps in a store (docs/DESIGN.md,
 * "Garbage collection"):
 *
 *   gc/state            packs gc has hidden, each with the time it did so
 *   gc/removed/<32 hex> one per snapshot removed: its packs, and when
 *   gc/lock             held by the gc that is running
 *
 * They are text, one item per line, so an operator can read them with cat,
 * and end with a checksum line: a damaged record is refused, never half
 * read (a damaged gc/state could otherwise unhide packs that are about to
 * be deleted). */
#include "core.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "xxh.h"

#define STATE_MAGIC "snapstream-gc-state 1"
#define REMOVED_MAGIC "snapstream-removed 1"
#define RECORD_MAX (256u << 20)

int64_t ss_wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---------------------------------------------------------------- text */

static int buf_printf(struct ss_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int buf_printf(struct ss_buf *b, const char *fmt, ...)
{
	char line[4200];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(line))
		return -ENAMETOOLONG;
	return ss_buf_append(b, line, (size_t)n);
}

/* Append the checksum line and hand the buffer over. */
static int seal(struct ss_buf *b, uint8_t **out, size_t *len)
{
	uint64_t h = XXH3_64bits(b->data, b->len);
	int r = buf_printf(b, "checksum %016" PRIx64 "\n", h);
	if (r) {
		ss_buf_free(b);
		return r;
	}
	*out = b->data;
	*len = b->len;
	return 0;
}

/* Check the magic line and the checksum line; returns the body between
 * them as [*body, *body + *blen). */
static int unseal(const uint8_t *buf, size_t len, const char *magic, const char **body,
		  size_t *blen, const char *what, struct ss_err *err)
{
	size_t ml = strlen(magic);
	if (len < ml + 1 || memcmp(buf, magic, ml) != 0 || buf[ml] != '\n')
		return ss_err_set(err, -EBADMSG, "%s is not a snapstream record (or a newer one)",
				  what);
	if (len < 27 || buf[len - 1] != '\n')
		return ss_err_set(err, -EBADMSG, "%s is truncated", what);
	/* The last line is "checksum <16 hex>\n" (26 bytes). */
	size_t cl = len - 26;
	if (memcmp(buf + cl, "checksum ", 9) != 0 || (cl && buf[cl - 1] != '\n'))
		return ss_err_set(err, -EBADMSG, "%s is truncated", what);
	/* Exactly what seal() writes: 16 lower-case hex digits. */
	char hex[17];
	memcpy(hex, buf + cl + 9, 16);
	hex[16] = '\0';
	if (strspn(hex, "0123456789abcdef") != 16)
		return ss_err_set(err, -EBADMSG, "%s is damaged (checksum mismatch)", what);
	uint64_t want = strtoull(hex, NULL, 16);
	if (XXH3_64bits(buf, cl) != want)
		return ss_err_set(err, -EBADMSG, "%s is damaged (checksum mismatch)", what);
	*body = (const char *)buf + ml + 1;
	*blen = cl - ml - 1;
	return 0;
}

/* The next line of [*p, end) without its newline, NUL-terminated in line. */
static bool next_line(const char **p, const char *end, char *line, size_t n)
{
	if (*p >= end)
		return false;
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t k = nl ? (size_t)(nl - *p) : (size_t)(end - *p);
	if (k >= n)
		k = n - 1;   /* overlong: cut, and the parser then refuses it */
	memcpy(line, *p, k);
	line[k] = '\0';
	*p = nl ? nl + 1 : end;
	return true;
}

static bool parse_id_time(const char *s, uint8_t id[16], int64_t *t)
{
	char hex[33];
	if (strlen(s) < 34 || s[32] != ' ')
		return false;
	memcpy(hex, s, 32);
	hex[32] = '\0';
	if (ss_unhex(hex, id, 16))
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(s + 33, &end, 10);
	if (errno || end == s + 33 || *end)
		return false;
	*t = v;
	return true;
}

/* ---------------------------------------------------------------- state */

static int state_add(struct ss_gcstate *s, const uint8_t id[16], int64_t since)
{
	if (SS_GROW(s->packs, s->cap, s->n + 1, 64))
		return -ENOMEM;
	memcpy(s->packs[s->n].id, id, 16);
	s->packs[s->n++].since_ns = since;
	return 0;
}

int ss_gcstate_add(struct ss_gcstate *s, const uint8_t id[16], int64_t since_ns)
{
	return state_add(s, id, since_ns);
}

static int cmp_hidden(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

void ss_gcstate_sort(struct ss_gcstate *s)
{
	if (s->n)
		qsort(s->packs, s->n, sizeof(*s->packs), cmp_hidden);
}

const struct ss_gc_hidden *ss_gcstate_find(const struct ss_gcstate *s, const uint8_t id[16])
{
	if (!s->n)
		return NULL;
	return bsearch(id, s->packs, s->n, sizeof(*s->packs), cmp_hidden);
}

void ss_gcstate_free(struct ss_gcstate *s)
{
	if (!s)
		return;
	free(s->packs);
	memset(s, 0, sizeof(*s));
}

int ss_gcstate_encode(const struct ss_gcstate *s, uint8_t **out, size_t *len)
{
	struct ss_buf b = {.cap = RECORD_MAX};
	int r = buf_printf(&b, "%s\n", STATE_MAGIC);
	for (size_t i = 0; !r && i < s->n; i++) {
		char hex[33];
		ss_hex(s->packs[i].id, 16, hex);
		r = buf_printf(&b, "hidden %s %" PRId64 "\n", hex, s->packs[i].since_ns);
	}
	if (r) {
		ss_buf_free(&b);
		return r;
	}
	return seal(&b, out, len);
}

int ss_gcstate_decode(const uint8_t *buf, size_t len, struct ss_gcstate *out,
		      struct ss_err *err)
{
	const char *p, *end;
	size_t blen;
	memset(out, 0, sizeof(*out));
	int r = unseal(buf, len, STATE_MAGIC, &p, &blen, SS_GC_STATE_KEY, err);
	if (r)
		return r;
	end = p + blen;
	char line[256];
	while (!r && next_line(&p, end, line, sizeof(line))) {
		uint8_t id[16];
		int64_t t;
		if (strncmp(line, "hidden ", 7) != 0 || !parse_id_time(line + 7, id, &t))
			r = ss_err_set(err, -EBADMSG, "%s has a line it does not understand: '%.60s'",
				       SS_GC_STATE_KEY, line);
		else if ((r = state_add(out, id, t)))
			ss_err_set(err, r, "out of memory");
	}
	if (r)
		ss_gcstate_free(out);
	else
		ss_gcstate_sort(out);
	return r;
}

int ss_gcstate_load(struct ss_backend *b, struct ss_loop *l, const char *store,
		    struct ss_gcstate *out, uint64_t *requests, struct ss_err *err)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	memset(out, 0, sizeof(*out));
	int r = ss_get_object(b, l, SS_GC_STATE_KEY, RECORD_MAX, &buf, &len, requests, err);
	if (r == -ENOENT) {
		ss_err_clear(err);
		return 0;
	}
	if (r)
		return r;
	struct ss_err derr = {0};
	r = ss_gcstate_decode(buf, len, out, &derr);
	free(buf);
	if (r)
		ss_err_set(err, r,
			   "in %s: %s; deleting it is safe (gc then starts the grace period of "
			   "every unreferenced pack again)",
			   store, derr.msg);
	return r;
}

/* ---------------------------------------------------------------- removed */

void ss_tombstone_free(struct ss_tombstone *t)
{
	if (!t)
		return;
	free(t->snapshot);
	free(t->packs);
	memset(t, 0, sizeof(*t));
}

int ss_tombstone_encode(const struct ss_tombstone *t, uint8_t **out, size_t *len)
{
	struct ss_buf b = {.cap = RECORD_MAX};
	int r = buf_printf(&b, "%s\nsnapshot %s\nremoved %" PRId64 "\n", REMOVED_MAGIC,
			   t->snapshot, t->removed_ns);
	for (size_t i = 0; !r && i < t->npacks; i++) {
		char hex[33];
		ss_hex(t->packs[i], 16, hex);
		r = buf_printf(&b, "pack %s\n", hex);
	}
	if (r) {
		ss_buf_free(&b);
		return r;
	}
	return seal(&b, out, len);
}

int ss_tombstone_decode(const uint8_t *buf, size_t len, struct ss_tombstone *t,
			struct ss_err *err)
{
	const char *p, *end;
	size_t blen;
	memset(t, 0, sizeof(*t));
	int r = unseal(buf, len, REMOVED_MAGIC, &p, &blen, "record of a removed snapshot", err);
	if (r)
		return r;
	end = p + blen;
	char line[4200];
	bool have_time = false;
	size_t cap = 0;
	while (!r && next_line(&p, end, line, sizeof(line))) {
		char *e;
		if (strncmp(line, "snapshot ", 9) == 0 && !t->snapshot) {
			if (!(t->snapshot = strdup(line + 9)))
				r = ss_err_set(err, -ENOMEM, "out of memory");
		} else if (strncmp(line, "removed ", 8) == 0 && !have_time) {
			errno = 0;
			t->removed_ns = strtoll(line + 8, &e, 10);
			have_time = !errno && e != line + 8 && !*e;
			if (!have_time)
				r = ss_err_set(err, -EBADMSG, "bad time in a removed-snapshot record");
		} else if (strncmp(line, "pack ", 5) == 0 && strlen(line) == 37) {
			if (SS_GROW(t->packs, cap, t->npacks + 1, 64)) {
				r = ss_err_set(err, -ENOMEM, "out of memory");
				break;
			}
			if (ss_unhex(line + 5, t->packs[t->npacks], 16))
				r = ss_err_set(err, -EBADMSG, "bad pack id in a removed-snapshot record");
			else
				t->npacks++;
		} else {
			r = ss_err_set(err, -EBADMSG,
				       "a removed-snapshot record has a line it does not understand: "
				       "'%.60s'",
				       line);
		}
	}
	if (!r && (!t->snapshot || !have_time))
		r = ss_err_set(err, -EBADMSG, "a removed-snapshot record is incomplete");
	if (r)
		ss_tombstone_free(t);
	return r;
}
