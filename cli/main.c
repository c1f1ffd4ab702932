/* snapstream — push and pull sandbox checkpoint images.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error, 3 not found,
 * 4 integrity error (corrupted or tampered data). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapstream.h"

enum {
	EXIT_USAGE = 2,
	EXIT_NOTFOUND = 3,
	EXIT_INTEGRITY = 4,
};

#define MAX_PARENTS 64
#define MAX_LABELS 64

struct cli {
	struct ss_config cfg;
	const char *store;
	const char *parents[MAX_PARENTS];
	size_t nparents;
	struct ss_label_kv labels[MAX_LABELS];
	size_t nlabels;
	bool force, json, quiet, progress;
	const char *prog;
};

static const char usage_main[] =
	"Usage: snapstream <command> [options]\n"
	"\n"
	"Stream sandbox checkpoint images to and from a store, storing each\n"
	"unique chunk once.\n"
	"\n"
	"Commands:\n"
	"  push <file|dir> <snapshot>   store a checkpoint image as a snapshot\n"
	"  pull <snapshot> <dest>       restore a snapshot to a file or directory\n"
	"\n"
	"A snapshot is a location: a path or file:///abs/path. Its manifest is\n"
	"<snapshot>/manifest; its chunks live in a store, by default the\n"
	"directory .snapstream beside the snapshot, shared by every snapshot\n"
	"there so that each chunk is stored once.\n"
	"\n"
	"Run 'snapstream <command> --help' for a command's options.\n"
	"\n"
	"Exit codes: 0 success, 1 failure, 2 usage error, 3 not found,\n"
	"4 integrity error (corrupted or tampered data).\n";

static const char usage_push[] =
	"Usage: snapstream push <file|dir> <snapshot> [options]\n"
	"\n"
	"Store a checkpoint image (one file, or a directory of files such as a\n"
	"runsc image directory) as a new snapshot. Zero pages are skipped,\n"
	"chunks the store already holds are not uploaded again, and the\n"
	"snapshot appears only once everything is stored.\n"
	"\n"
	"Options:\n"
	"  --store <uri>        store for the chunks (default: .snapstream beside\n"
	"                       the snapshot)\n"
	"  --parent <snapshot>  a previous snapshot to deduplicate against\n"
	"                       (repeatable; the store's chunks are used anyway)\n"
	"  --label <key=value>  record a label in the manifest (repeatable)\n"
	"  --force              replace the snapshot if it exists\n"
	"  --threads <n>        worker threads (default: online CPUs)\n"
	"  --chunk-avg <bytes>  average chunk size, a power of two (default 64K);\n"
	"  --chunk-min <bytes>  --chunk-max <bytes> (default avg/4 and avg*4)\n"
	"  --zstd-level <n>     compression level, -7..19 (default 2)\n"
	"  --no-fsync           do not fsync (for tmpfs or throwaway stores)\n"
	"  --json               print the result as one JSON object\n"
	"  --quiet              no progress output\n"
	"\n"
	"Examples:\n"
	"  snapstream push /run/ckpt/pages.img /snaps/job-1\n"
	"  snapstream push /run/ckpt/ /snaps/job-2 --parent /snaps/job-1\n";

static const char usage_pull[] =
	"Usage: snapstream pull <snapshot> <dest> [options]\n"
	"\n"
	"Restore a snapshot. A one-file snapshot becomes the file <dest> (or a\n"
	"file inside <dest> if it is a directory); a directory snapshot becomes\n"
	"the directory <dest>. Zero pages are left as holes (sparse files).\n"
	"Every chunk and every file is verified before <dest> appears.\n"
	"\n"
	"Options:\n"
	"  --store <uri>        store to read chunks from (default: the one the\n"
	"                       snapshot was pushed to)\n"
	"  --force              replace <dest> if it exists\n"
	"  --threads <n>        worker threads (default: online CPUs)\n"
	"  --no-fsync           do not fsync the restored files\n"
	"  --json               print the result as one JSON object\n"
	"  --quiet              no progress output\n"
	"\n"
	"Examples:\n"
	"  snapstream pull /snaps/job-1 /run/restore/pages.img\n"
	"  snapstream pull /snaps/job-2 /run/restore/ckpt\n";

static int usage_error(const struct cli *c, const char *cmd, const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", c->prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '%s %s--help'.\n", c->prog, cmd ? cmd : "");
	return EXIT_USAGE;
}

static int exit_code(int r)
{
	switch (r) {
	case 0:
		return 0;
	case -ENOENT:
		return EXIT_NOTFOUND;
	case -EBADMSG:
		return EXIT_INTEGRITY;
	case -EINVAL:
		return EXIT_USAGE;
	default:
		return 1;
	}
}

static bool parse_size(const char *s, uint32_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	if (*end || v == 0 || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

static void human(double b, char *out, size_t n)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int i = 0;
	while (b >= 1024 && i < 4)
		b /= 1024, i++;
	snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void on_progress(void *arg, const struct ss_progress *p)
{
	(void)arg;
	char done[32], total[32];
	human((double)p->bytes_done, done, sizeof(done));
	human((double)p->bytes_total, total, sizeof(total));
	double rate = p->seconds > 0 ? (double)p->bytes_done / p->seconds : 0;
	char r[32];
	human(rate, r, sizeof(r));
	double eta = rate > 0 && p->bytes_total > p->bytes_done
			     ? (double)(p->bytes_total - p->bytes_done) / rate
			     : 0;
	fprintf(stderr, "\r\033[K%-6s %s / %s  %s/s  ETA %.0fs", p->phase, done, total, r, eta);
	fflush(stderr);
}

static void print_stats(const struct cli *c, const char *op, const struct ss_stats *s)
{
	if (c->json) {
		printf("{\"ok\":true,\"op\":\"%s\",\"files\":%" PRIu64 ",\"logical_bytes\":%" PRIu64
		       ",\"zero_bytes\":%" PRIu64 ",\"dedup_bytes\":%" PRIu64
		       ",\"new_raw_bytes\":%" PRIu64 ",\"new_stored_bytes\":%" PRIu64
		       ",\"transferred_bytes\":%" PRIu64 ",\"chunks\":%" PRIu64
		       ",\"unique_chunks\":%" PRIu64 ",\"new_chunks\":%" PRIu64
		       ",\"packs\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"manifest_bytes\":%" PRIu64
		       ",\"seconds\":%.6f}\n",
		       op, s->files, s->logical_bytes, s->zero_bytes, s->dedup_bytes,
		       s->new_raw_bytes, s->new_stored_bytes, s->transferred_bytes, s->chunks,
		       s->unique_chunks, s->new_chunks, s->packs, s->requests, s->manifest_bytes,
		       s->seconds);
		return;
	}
	if (c->quiet)
		return;
	char a[32], z[32], d[32], n[32], t[32];
	human((double)s->logical_bytes, a, sizeof(a));
	human((double)s->zero_bytes, z, sizeof(z));
	human((double)s->dedup_bytes, d, sizeof(d));
	human((double)s->new_stored_bytes, n, sizeof(n));
	human((double)s->transferred_bytes, t, sizeof(t));
	double rate = s->seconds > 0 ? (double)s->logical_bytes / s->seconds / 1e9 : 0;
	if (strcmp(op, "push") == 0)
		fprintf(stderr,
			"pushed %" PRIu64 " file(s), %s in %.2fs (%.2f GB/s): zero pages %s, "
			"already stored %s, new %s in %" PRIu64 " pack(s)\n",
			s->files, a, s->seconds, rate, z, d, n, s->packs);
	else
		fprintf(stderr,
			"pulled %" PRIu64 " file(s), %s in %.2fs (%.2f GB/s): fetched %s, "
			"zero pages %s left as holes\n",
			s->files, a, s->seconds, rate, t, z);
}

static void print_error(const struct cli *c, const char *op, int r, const char *msg)
{
	if (c->json) {
		/* Escape the message for JSON. */
		printf("{\"ok\":false,\"op\":\"%s\",\"errno\":%d,\"exit\":%d,\"error\":\"", op, -r,
		       exit_code(r));
		for (const char *p = msg; *p; p++) {
			unsigned char ch = (unsigned char)*p;
			if (ch == '"' || ch == '\\')
				printf("\\%c", ch);
			else if (ch < 0x20)
				printf("\\u%04x", ch);
			else
				putchar(ch);
		}
		printf("\"}\n");
	}
	fprintf(stderr, "%s %s: %s\n", c->prog, op, msg);
}

enum {
	OPT_STORE = 256,
	OPT_PARENT,
	OPT_LABEL,
	OPT_FORCE,
	OPT_THREADS,
	OPT_CHUNK_AVG,
	OPT_CHUNK_MIN,
	OPT_CHUNK_MAX,
	OPT_ZSTD,
	OPT_NOFSYNC,
	OPT_JSON,
	OPT_QUIET,
	OPT_HELP,
};

static const struct option long_opts[] = {
	{"store", required_argument, NULL, OPT_STORE},
	{"parent", required_argument, NULL, OPT_PARENT},
	{"label", required_argument, NULL, OPT_LABEL},
	{"force", no_argument, NULL, OPT_FORCE},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"chunk-avg", required_argument, NULL, OPT_CHUNK_AVG},
	{"chunk-min", required_argument, NULL, OPT_CHUNK_MIN},
	{"chunk-max", required_argument, NULL, OPT_CHUNK_MAX},
	{"zstd-level", required_argument, NULL, OPT_ZSTD},
	{"no-fsync", no_argument, NULL, OPT_NOFSYNC},
	{"json", no_argument, NULL, OPT_JSON},
	{"quiet", no_argument, NULL, OPT_QUIET},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

/* Parse options for cmd; returns -1 to continue, else an exit code. */
static int parse_opts(struct cli *c, const char *cmd, const char *usage, bool is_push, int argc,
		      char **argv)
{
	char cmdsp[32];
	snprintf(cmdsp, sizeof(cmdsp), "%s ", cmd);
	optind = 1;
	opterr = 0;
	int o;
	while ((o = getopt_long(argc, argv, ":", long_opts, NULL)) != -1) {
		long v;
		switch (o) {
		case OPT_HELP:
			fputs(usage, stdout);
			return 0;
		case OPT_STORE:
			c->store = optarg;
			break;
		case OPT_PARENT:
			if (!is_push)
				return usage_error(c, cmdsp, "--parent is for push", "");
			if (c->nparents == MAX_PARENTS)
				return usage_error(c, cmdsp, "too many --parent options%s", "");
			c->parents[c->nparents++] = optarg;
			break;
		case OPT_LABEL: {
			char *eq = strchr(optarg, '=');
			if (!is_push || !eq || eq == optarg)
				return usage_error(c, cmdsp, "--label takes key=value, got '%s'", optarg);
			if (c->nlabels == MAX_LABELS)
				return usage_error(c, cmdsp, "too many --label options%s", "");
			*eq = '\0';
			c->labels[c->nlabels++] = (struct ss_label_kv){optarg, eq + 1};
			break;
		}
		case OPT_FORCE:
			c->force = true;
			break;
		case OPT_THREADS:
			if (!parse_int(optarg, 1, 256, &v))
				return usage_error(c, cmdsp, "--threads takes 1..256, got '%s'", optarg);
			c->cfg.threads = (unsigned)v;
			break;
		case OPT_CHUNK_AVG:
		case OPT_CHUNK_MIN:
		case OPT_CHUNK_MAX: {
			uint32_t sz;
			if (!is_push || !parse_size(optarg, &sz))
				return usage_error(c, cmdsp, "bad chunk size '%s'", optarg);
			if (o == OPT_CHUNK_AVG)
				c->cfg.chunk_avg = sz;
			else if (o == OPT_CHUNK_MIN)
				c->cfg.chunk_min = sz;
			else
				c->cfg.chunk_max = sz;
			break;
		}
		case OPT_ZSTD:
			if (!is_push || !parse_int(optarg, -7, 19, &v) || v == 0)
				return usage_error(c, cmdsp, "--zstd-level takes -7..19 (not 0), got '%s'",
						   optarg);
			c->cfg.zstd_level = (int)v;
			break;
		case OPT_NOFSYNC:
			c->cfg.no_fsync = true;
			break;
		case OPT_JSON:
			c->json = true;
			break;
		case OPT_QUIET:
			c->quiet = true;
			break;
		case ':':
			return usage_error(c, cmdsp, "option '%s' needs a value", argv[optind - 1]);
		default:
			return usage_error(c, cmdsp, "unknown option '%s'", argv[optind - 1]);
		}
	}
	c->progress = !c->quiet && !c->json && isatty(STDERR_FILENO);
	if (c->progress) {
		c->cfg.progress = on_progress;
		c->cfg.progress_arg = c;
	}
	return -1;
}

static int cmd_push(struct cli *c, int argc, char **argv)
{
	int r = parse_opts(c, "push", usage_push, true, argc, argv);
	if (r >= 0)
		return r;
	if (argc - optind != 2)
		return usage_error(c, "push ", "push takes <file|dir> <snapshot>%s", "");
	struct ss_push_opts o = {
		.source = argv[optind],
		.snapshot = argv[optind + 1],
		.store = c->store,
		.parents = c->parents,
		.nparents = c->nparents,
		.labels = c->labels,
		.nlabels = c->nlabels,
		.force = c->force,
	};
	struct ss_stats st;
	char err[1024];
	r = ss_push(&o, &c->cfg, &st, err, sizeof(err));
	if (c->progress)
		fputs("\r\033[K", stderr);
	if (r) {
		print_error(c, "push", r, err);
		return exit_code(r);
	}
	print_stats(c, "push", &st);
	return 0;
}

static int cmd_pull(struct cli *c, int argc, char **argv)
{
	int r = parse_opts(c, "pull", usage_pull, false, argc, argv);
	if (r >= 0)
		return r;
	if (argc - optind != 2)
		return usage_error(c, "pull ", "pull takes <snapshot> <dest>%s", "");
	struct ss_pull_opts o = {
		.snapshot = argv[optind],
		.dest = argv[optind + 1],
		.store = c->store,
		.force = c->force,
	};
	struct ss_stats st;
	char err[1024];
	r = ss_pull(&o, &c->cfg, &st, err, sizeof(err));
	if (c->progress)
		fputs("\r\033[K", stderr);
	if (r) {
		print_error(c, "pull", r, err);
		return exit_code(r);
	}
	print_stats(c, "pull", &st);
	return 0;
}

int main(int argc, char **argv)
{
	struct cli c = {.prog = "snapstream"};
	if (argc < 2)
		return usage_error(&c, NULL, "missing command%s", "");
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		fputs(usage_main, stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
		printf("snapstream %s\n", SNAPSTREAM_VERSION);
		return 0;
	}
	if (!strcmp(cmd, "push"))
		return cmd_push(&c, argc - 1, argv + 1);
	if (!strcmp(cmd, "pull"))
		return cmd_pull(&c, argc - 1, argv + 1);
	return usage_error(&c, NULL, "unknown command '%s'", cmd);
}
