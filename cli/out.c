/* Output: exit codes, error lines, sizes and times for people, progress
 * on a terminal, and JSON for scripts. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* json-c calls a type json_bool, which is the name of the CLI's boolean
 * writer (cli.h): rename json-c's within this file. */
#define json_bool json_c_bool
#include <json.h>
#undef json_bool

#include "cli.h"
#include "ssjson.h"

static int json_flush(struct json *j);

int cli_exit_code(int r)
{
	switch (r) {
	case 0:
		return EXIT_OK;
	case -ENOENT:
		return EXIT_NOTFOUND;
	case -EBADMSG:
		return EXIT_INTEGRITY;
	case -ENOKEY:
		return EXIT_NOKEY;
	case -EKEYREJECTED:
		return EXIT_BADKEY;
	case -EXDEV:
		return EXIT_OTHERSTORE;
	case -EINVAL:
	case -EISDIR:
		return EXIT_USAGE;
	default:
		return EXIT_FAIL;
	}
}

void cli_error(struct cli *c, int r, const char *msg)
{
	cli_progress_clear(c);
	if (r == -EPIPE) {
		/* The reader of our stdout went away: die as cat does, so that
		 * pipelines see the usual status and no noise. */
		signal(SIGPIPE, SIG_DFL);
		raise(SIGPIPE);
	}
	/* Name the snapshot when the engine's message does not. */
	bool named = !c->subject || strstr(msg, c->subject);
	if (c->json) {
		char full[1400];
		snprintf(full, sizeof(full), "%s%s%s", named ? "" : c->subject, named ? "" : ": ",
			 msg);
		/* With the bytes on stdout (cat, pull -), the object goes to stderr. */
		bool data_out = !strcmp(c->cmd->name, "cat") ||
				(!strcmp(c->cmd->name, "pull") && c->nargs == 2 &&
				 !strcmp(c->args[1], "-"));
		struct json j;
		json_begin(&j, data_out ? stderr : stdout);
		json_obj(&j, NULL);
		json_bool(&j, "ok", false);
		json_str(&j, "op", c->cmd->name);
		json_i64(&j, "exit", cli_exit_code(r));
		json_i64(&j, "errno", -r);
		json_str(&j, "error", full);
		if (c->subject)
			json_str(&j, "subject", c->subject);
		json_end_obj(&j);
		/* The failure below is the one to report, not a second one. */
		json_flush(&j);
	}
	fprintf(stderr, "%s %s: %s%s%s\n", c->prog, c->cmd->name, named ? "" : c->subject,
		named ? "" : ": ", msg);
	if (cli_exit_code(r) == EXIT_USAGE)
		fprintf(stderr, "Try '%s %s --help'.\n", c->prog, c->cmd->name);
}

void cli_human(double b, char *out, size_t n)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	int i = 0;
	while (b >= 1024 && i < 5)
		b /= 1024, i++;
	snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

void cli_time(int64_t ns, char *out, size_t n)
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	if (!ns || !gmtime_r(&t, &tm) || !strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, n, "-");
}

/* ---------------------------------------------------------------- progress */

void cli_progress_clear(struct cli *c)
{
	if (c->bar.drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		c->bar.drawn = false;
	}
}

void cli_progress_cb(void *arg, const struct ss_progress *p)
{
	struct cli *c = arg;
	const char *what = !strcmp(p->phase, "mark") ? "snapshots" : "packs";
	char line[256];
	int n = 0;
	if (p->items_total && !p->bytes_total) {
		n = snprintf(line, sizeof(line), "%-7s %" PRIu64 "/%" PRIu64 " %s", p->phase,
			     p->items_done, p->items_total, what);
	} else {
		char done[32], total[32], rate[32];
		cli_human((double)p->bytes_done, done, sizeof(done));
		cli_human((double)p->bytes_total, total, sizeof(total));
		double bps = p->seconds > 0.2 ? (double)p->bytes_done / p->seconds : 0;
		cli_human(bps, rate, sizeof(rate));
		n = snprintf(line, sizeof(line), "%-7s %s", p->phase, done);
		if (p->bytes_total)
			n += snprintf(line + n, sizeof(line) - (size_t)n, " / %s (%.0f%%)", total,
				      100.0 * (double)p->bytes_done / (double)p->bytes_total);
		if (bps > 0)
			n += snprintf(line + n, sizeof(line) - (size_t)n, "  %s/s", rate);
		if (bps > 0 && p->bytes_total > p->bytes_done) {
			double eta = (double)(p->bytes_total - p->bytes_done) / bps;
			n += snprintf(line + n, sizeof(line) - (size_t)n, "  ETA %dm%02ds",
				      (int)eta / 60, (int)eta % 60);
		}
		if (p->items_total)
			n += snprintf(line + n, sizeof(line) - (size_t)n, "  %" PRIu64 "/%" PRIu64 " %s",
				      p->items_done, p->items_total, what);
		if (p->zero_bytes || p->dedup_bytes) {
			char z[32], d[32];
			cli_human((double)p->zero_bytes, z, sizeof(z));
			cli_human((double)p->dedup_bytes, d, sizeof(d));
			n += snprintf(line + n, sizeof(line) - (size_t)n, "  zero %s", z);
			if (p->dedup_bytes)
				snprintf(line + n, sizeof(line) - (size_t)n, "  dedup %s", d);
		}
	}
	fprintf(stderr, "\r\033[K%s", line);
	fflush(stderr);
	c->bar.drawn = true;
}

/* ---------------------------------------------------------------- json */

/* The tree is built in memory and written at json_finish: json-c places
 * the commas and escapes, so no nesting depth or name can break the
 * output. A failed allocation sets j->failed and everything after it is
 * dropped; json_finish reports it. */

void json_begin(struct json *j, FILE *f)
{
	memset(j, 0, sizeof(*j));
	j->f = f;
	j->open = json_object_new_array();
	j->failed = !j->open;
}

/* Add val (whose reference this takes) under k to the innermost open
 * container, or make it the top-level value. */
static void put(struct json *j, const char *k, struct json_object *val)
{
	size_t n = j->open ? json_object_array_length(j->open) : 0;
	int r;
	if (j->failed) {
		json_object_put(val);
		return;
	}
	if (!n) {
		if (!val || j->root) {
			/* A second top-level value has no place in one JSON text. */
			json_object_put(val);
			j->failed = true;
			return;
		}
		j->root = val;
		return;
	}
	struct json_object *parent = json_object_array_get_idx(j->open, n - 1);
	if (json_object_is_type(parent, json_type_object))
		r = ssjson_add(parent, k ? k : "", val);
	else
		r = ssjson_append(parent, val);
	if (r)
		j->failed = true;
}

static void open_(struct json *j, const char *k, struct json_object *o)
{
	/* One reference for the parent, one for the stack of open ones. */
	json_object_get(o);
	put(j, k, o);
	if (j->failed || json_object_array_add(j->open, o)) {
		json_object_put(o);
		j->failed = true;
	}
}

static void close_(struct json *j)
{
	size_t n = j->open ? json_object_array_length(j->open) : 0;
	if (n)
		json_object_array_del_idx(j->open, n - 1, 1);
}

void json_obj(struct json *j, const char *k)
{
	open_(j, k, json_object_new_object());
}

void json_arr(struct json *j, const char *k)
{
	open_(j, k, json_object_new_array());
}

void json_end_obj(struct json *j)
{
	close_(j);
}

void json_end_arr(struct json *j)
{
	close_(j);
}

void json_str(struct json *j, const char *k, const char *v)
{
	put(j, k, ssjson_string(v));
}

void json_u64(struct json *j, const char *k, uint64_t v)
{
	put(j, k, json_object_new_uint64(v));
}

void json_i64(struct json *j, const char *k, int64_t v)
{
	put(j, k, json_object_new_int64(v));
}

void json_f64(struct json *j, const char *k, double v)
{
	put(j, k, ssjson_fixed(v, 6));
}

void json_bool(struct json *j, const char *k, bool v)
{
	put(j, k, json_object_new_boolean(v));
}

/* Write and free; 0 or -errno. */
static int json_flush(struct json *j)
{
	int r = j->failed || !j->root ? -ENOMEM : ssjson_write_line(j->f, j->root);
	json_object_put(j->root);
	json_object_put(j->open);
	j->root = j->open = NULL;
	return r;
}

void json_finish(struct json *j)
{
	int r = json_flush(j);
	if (r == -EPIPE) {
		signal(SIGPIPE, SIG_DFL);
		raise(SIGPIPE);
	}
	if (r) {
		fprintf(stderr, "snapstream: cannot write the JSON result: %s\n", strerror(-r));
		exit(EXIT_FAIL);
	}
}

void json_result(struct json *j, FILE *f, const char *op)
{
	json_begin(j, f);
	json_obj(j, NULL);
	json_bool(j, "ok", true);
	json_str(j, "op", op);
}
