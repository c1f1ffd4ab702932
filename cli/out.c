/* Output: exit codes, error lines, sizes and times for people, progress
 * on a terminal, and JSON for scripts. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

int cli_exit_code(int r)
{
	switch (r) {
	case 0:
		return EXIT_OK;
	case -ENOENT:
		return EXIT_NOTFOUND;
	case -EBADMSG:
		return EXIT_INTEGRITY;
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
		json_finish(&j);
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

void json_begin(struct json *j, FILE *f)
{
	memset(j, 0, sizeof(*j));
	j->f = f;
	j->first[0] = true;
}

/* Length of the UTF-8 sequence at p, or 0 if it is not one. */
static int utf8_len(const unsigned char *p)
{
	int n = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
	for (int i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

static void esc(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		int n;
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else if (*p < 0x80)
			fputc(*p, f);
		else if ((n = utf8_len(p))) {
			fwrite(p, 1, (size_t)n, f);   /* file names may hold UTF-8 */
			p += n - 1;
		} else {
			fprintf(f, "\\u%04x", *p);   /* not UTF-8: keep the JSON valid */
		}
	}
	fputc('"', f);
}

/* A comma before every value but the first at its depth, then the key. */
static void key(struct json *j, const char *k)
{
	if (!j->first[j->depth])
		fputc(',', j->f);
	j->first[j->depth] = false;
	if (k) {
		esc(j->f, k);
		fputc(':', j->f);
	}
}

static void open_(struct json *j, const char *k, char ch)
{
	key(j, k);
	fputc(ch, j->f);
	if (j->depth < 15)
		j->first[++j->depth] = true;
}

void json_obj(struct json *j, const char *k)
{
	open_(j, k, '{');
}

void json_arr(struct json *j, const char *k)
{
	open_(j, k, '[');
}

void json_end_obj(struct json *j)
{
	fputc('}', j->f);
	if (j->depth)
		j->depth--;
}

void json_end_arr(struct json *j)
{
	fputc(']', j->f);
	if (j->depth)
		j->depth--;
}

void json_str(struct json *j, const char *k, const char *v)
{
	key(j, k);
	esc(j->f, v ? v : "");
}

void json_u64(struct json *j, const char *k, uint64_t v)
{
	key(j, k);
	fprintf(j->f, "%" PRIu64, v);
}

void json_i64(struct json *j, const char *k, int64_t v)
{
	key(j, k);
	fprintf(j->f, "%" PRId64, v);
}

void json_f64(struct json *j, const char *k, double v)
{
	key(j, k);
	fprintf(j->f, "%.6f", v);
}

void json_bool(struct json *j, const char *k, bool v)
{
	key(j, k);
	fputs(v ? "true" : "false", j->f);
}

void json_finish(struct json *j)
{
	fputc('\n', j->f);
	fflush(j->f);
}

void json_result(struct json *j, FILE *f, const char *op)
{
	json_begin(j, f);
	json_obj(j, NULL);
	json_bool(j, "ok", true);
	json_str(j, "op", op);
}
