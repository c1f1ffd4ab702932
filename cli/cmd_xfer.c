/* push, pull, cat: moving images in and out. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void stats_json(struct json *j, const struct ss_stats *s)
{
	json_u64(j, "files", s->files);
	json_u64(j, "logical_bytes", s->logical_bytes);
	json_u64(j, "zero_bytes", s->zero_bytes);
	json_u64(j, "dedup_bytes", s->dedup_bytes);
	json_u64(j, "new_raw_bytes", s->new_raw_bytes);
	json_u64(j, "new_stored_bytes", s->new_stored_bytes);
	json_u64(j, "transferred_bytes", s->transferred_bytes);
	json_u64(j, "chunks", s->chunks);
	json_u64(j, "unique_chunks", s->unique_chunks);
	json_u64(j, "new_chunks", s->new_chunks);
	json_u64(j, "packs", s->packs);
	json_u64(j, "requests", s->requests);
	json_u64(j, "manifest_bytes", s->manifest_bytes);
	json_f64(j, "seconds", s->seconds);
	json_u64(j, "cache_bytes", s->cache_bytes);
}

/* One JSON object (to out), or a line for people on stderr. */
static void report(struct cli *c, FILE *out, const char *snapshot, const struct ss_stats *s)
{
	cli_progress_clear(c);
	const char *op = c->cmd->name;
	if (c->json) {
		struct json j;
		json_result(&j, out, op);
		json_str(&j, "snapshot", snapshot);
		stats_json(&j, s);
		json_end_obj(&j);
		json_finish(&j);
		return;
	}
	if (c->quiet)
		return;
	char a[32], z[32], d[32], n[32], t[32];
	cli_human((double)s->logical_bytes, a, sizeof(a));
	cli_human((double)s->zero_bytes, z, sizeof(z));
	cli_human((double)s->dedup_bytes, d, sizeof(d));
	cli_human((double)s->new_stored_bytes, n, sizeof(n));
	cli_human((double)s->transferred_bytes, t, sizeof(t));
	double rate = s->seconds > 0 ? (double)s->logical_bytes / s->seconds / 1e9 : 0;
	if (!strcmp(op, "push"))
		fprintf(stderr,
			"pushed %" PRIu64 " file(s), %s in %.2fs (%.2f GB/s): zero pages %s, "
			"already stored %s, new %s in %" PRIu64 " pack(s)\n",
			s->files, a, s->seconds, rate, z, d, n, s->packs);
	else if (!strcmp(op, "pull") && out == stdout) {
		char h[64] = "";
		if (s->cache_bytes) {
			char hb[32];
			cli_human((double)s->cache_bytes, hb, sizeof(hb));
			snprintf(h, sizeof(h), " (%s from the cache)", hb);
		}
		fprintf(stderr,
			"pulled %" PRIu64 " file(s), %s in %.2fs (%.2f GB/s): fetched %s%s, "
			"zero pages %s left as holes\n",
			s->files, a, s->seconds, rate, t, h, z);
	}
	/* cat and pull -: silent on success, like cat(1); the bytes speak. */
}

int cmd_push(struct cli *c)
{
	const char *src = c->args[0], *snap = c->args[1];
	c->subject = snap;
	struct ss_push_opts o = {
		.size = sizeof(o),
		.source = src,
		.snapshot = snap,
		.store = cli_store(c),
		.parents = c->parents,
		.nparents = c->nparents,
		.labels = c->labels,
		.nlabels = c->nlabels,
		.force = c->force,
		.inflate_gvisor = c->inflate_gvisor,
	};
	struct ss_stats st = SS_STATS_INIT;
	char err[1024];
	int r;
	if (!strcmp(src, "-") && c->inflate_gvisor)
		return cli_usage_error(c, "--inflate-gvisor needs a file or directory, not -");
	if (!strcmp(src, "-")) {
		if (isatty(STDIN_FILENO))
			return cli_usage_error(c, "'push -' reads the image from stdin, which is a "
						  "terminal; pipe or redirect the image into it");
		o.source = NULL;
		r = ss_push_fd(&o, STDIN_FILENO, c->name, &c->cfg, &st, err, sizeof(err));
	} else if (c->run_argv) {
		r = cli_push_while(c, &o, &st, err, sizeof(err));
	} else {
		r = ss_push(&o, &c->cfg, &st, err, sizeof(err));
	}
	if (r) {
		if (r == -ENOENT && !strstr(err, snap))
			c->subject = NULL;   /* the source is missing, not the snapshot */
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	report(c, stdout, snap, &st);
	return EXIT_OK;
}

/* Binary data on a terminal helps no one and can upset it. */
static int refuse_tty_stdout(struct cli *c)
{
	if (isatty(STDOUT_FILENO))
		return cli_usage_error(c, "refusing to write binary data to a terminal; redirect "
					  "stdout or pipe it");
	return -1;
}

static int to_stdout(struct cli *c, const char *snap, const char *file)
{
	int r = refuse_tty_stdout(c);
	if (r >= 0)
		return r;
	struct ss_cat_opts o = {.size = sizeof(o), .snapshot = snap, .store = cli_store(c),
				.file = file, .fd = STDOUT_FILENO};
	struct ss_stats st = SS_STATS_INIT;
	char err[1024];
	r = ss_cat(&o, &c->cfg, &st, err, sizeof(err));
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	report(c, stderr, snap, &st);
	return EXIT_OK;
}

int cmd_pull(struct cli *c)
{
	const char *snap = c->args[0], *dest = c->args[1];
	c->subject = snap;
	if (!strcmp(dest, "-")) {
		if (c->force)
			return cli_usage_error(c, "--force does not apply to 'pull <snapshot> -'");
		return to_stdout(c, snap, NULL);
	}
	struct ss_pull_opts o = {
		.size = sizeof(o),
		.snapshot = snap,
		.dest = dest,
		.store = cli_store(c),
		.force = c->force,
	};
	struct ss_stats st = SS_STATS_INIT;
	char err[1024];
	int r = ss_pull(&o, &c->cfg, &st, err, sizeof(err));
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	report(c, stdout, snap, &st);
	return EXIT_OK;
}

int cmd_cat(struct cli *c)
{
	c->subject = c->args[0];
	return to_stdout(c, c->args[0], c->nargs > 1 ? c->args[1] : NULL);
}
