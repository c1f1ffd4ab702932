/* Options: the environment first, then flags, so flags win. A bad value
 * from either is a usage error naming where it came from. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"

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
	OPT_NAME,
	OPT_QUICK,
	OPT_GRACE,
	OPT_DRYRUN,
	OPT_BREAKLOCK,
	OPT_KEYFILE,
	OPT_REPAIR,
	OPT_DEEP,
	OPT_WHILE,
	OPT_INFLATE,
	OPT_CACHE,
	OPT_CACHE_SIZE,
	OPT_NO_CACHE,
	OPT_PRUNE,
	OPT_CIPHER,
	OPT_HELP,
};

/* Short forms, as restic, rsync and make spell them. */
static const char short_opts[] = ":hqfnj:";

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
	{"name", required_argument, NULL, OPT_NAME},
	{"quick", no_argument, NULL, OPT_QUICK},
	{"grace", required_argument, NULL, OPT_GRACE},
	{"dry-run", no_argument, NULL, OPT_DRYRUN},
	{"break-lock", no_argument, NULL, OPT_BREAKLOCK},
	{"key-file", required_argument, NULL, OPT_KEYFILE},
	{"repair", no_argument, NULL, OPT_REPAIR},
	{"deep", no_argument, NULL, OPT_DEEP},
	{"while", no_argument, NULL, OPT_WHILE},
	{"inflate-gvisor", no_argument, NULL, OPT_INFLATE},
	{"cache", required_argument, NULL, OPT_CACHE},
	{"cache-size", required_argument, NULL, OPT_CACHE_SIZE},
	{"no-cache", no_argument, NULL, OPT_NO_CACHE},
	{"prune", required_argument, NULL, OPT_PRUNE},
	{"cipher", required_argument, NULL, OPT_CIPHER},
	{"help", no_argument, NULL, OPT_HELP},
	{NULL, 0, NULL, 0},
};

/* Which O_* bit gates each option (0: always accepted). */
static unsigned gate(int o)
{
	switch (o) {
	case OPT_STORE: return O_STORE;
	case OPT_PARENT: return O_PARENT;
	case OPT_LABEL: return O_LABEL;
	case OPT_FORCE: return O_FORCE;
	case OPT_THREADS: return O_THREADS;
	case OPT_CHUNK_AVG:
	case OPT_CHUNK_MIN:
	case OPT_CHUNK_MAX: return O_CHUNK;
	case OPT_ZSTD: return O_ZSTD;
	case OPT_NOFSYNC: return O_NOFSYNC;
	case OPT_JSON: return O_JSON;
	case OPT_QUIET: return O_QUIET;
	case OPT_NAME: return O_NAME;
	case OPT_QUICK: return O_QUICK;
	case OPT_GRACE: return O_GRACE;
	case OPT_DRYRUN: return O_DRYRUN;
	case OPT_BREAKLOCK: return O_BREAKLOCK;
	case OPT_KEYFILE: return O_KEY;
	case OPT_REPAIR: return O_REPAIR;
	case OPT_DEEP: return O_DEEP;
	case OPT_WHILE: return O_WHILE;
	case OPT_INFLATE: return O_INFLATE;
	case OPT_CACHE:
	case OPT_CACHE_SIZE:
	case OPT_NO_CACHE: return O_CACHE;
	case OPT_PRUNE: return O_PRUNE;
	case OPT_CIPHER: return O_CIPHER;
	default: return 0;
	}
}

int cli_usage_error(const struct cli *c, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s%s%s: ", c->prog, c->cmd ? " " : "", c->cmd ? c->cmd->name : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s %s%s--help'.\n", c->prog, c->cmd ? c->cmd->name : "",
		c->cmd ? " " : "");
	if (c->json) {
		/* Scripts asked for an object: give them one for this failure too. */
		char msg[512];
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		struct json j;
		json_begin(&j, stdout);
		json_obj(&j, NULL);
		json_bool(&j, "ok", false);
		json_str(&j, "op", c->cmd ? c->cmd->name : "");
		json_i64(&j, "exit", EXIT_USAGE);
		json_i64(&j, "errno", EINVAL);
		json_str(&j, "error", msg);
		json_end_obj(&j);
		json_finish(&j);
	}
	return EXIT_USAGE;
}

/* The chunker's limits (ss_chunker_init in chunker/chunker.c, and the
 * segment that must hold the largest chunk in engine/common.c): avg a
 * power of two in 256..4 MiB, min 64..avg-1, max avg+1..1 GiB. Checked
 * here so that a value the engine cannot take is a usage error naming its
 * option, before any work starts. How min, avg and max relate is left to
 * the engine, which knows the defaults. */
struct size_opt {
	const char *name;
	uint32_t lo, hi;
	const char *range;
};
static const struct size_opt chunk_avg_opt = {"--chunk-avg", 256, 4u << 20,
					      "a power of two from 256 to 4M"};
static const struct size_opt chunk_min_opt = {"--chunk-min", 64, (4u << 20) - 1,
					      "64 to 4M-1"};
static const struct size_opt chunk_max_opt = {"--chunk-max", 257, 1u << 30,
					      "257 to 1G"};

/* The same for a 32-bit size (chunk sizes, --read-depth style limits). */
static bool parse_size(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	uint64_t v;
	if (!ss_parse_bytes(s, lo, hi, &v))
		return false;
	*out = (uint32_t)v;
	return true;
}

#define CACHE_SIZE_RANGE "16M to 1024T"
#define CACHE_SIZE_MAX (1ull << 50)

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

bool cli_parse_duration(const char *s, int64_t *seconds)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || v < 0 || *s == '-')
		return false;
	long long mul = 1;
	if (*end == 's')
		end++;
	else if (*end == 'm')
		mul = 60, end++;
	else if (*end == 'h')
		mul = 3600, end++;
	else if (*end == 'd')
		mul = 86400, end++;
	if (*end || v > INT64_MAX / 1000000000 / mul)
		return false;
	*seconds = v * mul;
	return true;
}

static bool env_flag(const char *name, bool *out, const char **bad)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return true;
	if (!strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true"))
		*out = true;
	else if (!strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "false"))
		*out = false;
	else
		return *bad = name, false;
	return true;
}

/* A keyed store's key (--key-file, SNAPSTREAM_KEY_FILE), read into a
 * mapping of its own: out of core dumps, locked when the limit allows,
 * wiped by cli_key_wipe. */
static int read_key(struct cli *c, const char *path, const char *from)
{
	char err[600];
	size_t n;
	if (!c->key) {
		void *p = mmap(NULL, CLI_KEY_MAP, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return cli_usage_error(c, "%s %s: cannot map memory for the key", from,
					       path);
		madvise(p, CLI_KEY_MAP, MADV_DONTDUMP);
		(void)mlock(p, CLI_KEY_MAP);
		c->key = p;
	}
	if (ss_key_read(path, c->key, CLI_KEY_MAP, &n, err, sizeof(err)))
		return cli_usage_error(c, "%s %s", from, err);
	c->cfg.key = c->key;
	c->cfg.key_len = n;
	return -1;
}

/* Defaults from SNAPSTREAM_* (only those the command accepts). */
static int apply_env(struct cli *c)
{
	unsigned ok = c->cmd->allowed;
	const char *bad = NULL, *v;
	long n;
	if ((ok & O_STORE) && (v = getenv("SNAPSTREAM_STORE")) && *v)
		c->store = v;
	if ((ok & O_THREADS) && (v = getenv("SNAPSTREAM_THREADS")) && *v) {
		if (!parse_int(v, 1, 256, &n))
			return cli_usage_error(c, "SNAPSTREAM_THREADS=%s: takes 1..256", v);
		c->cfg.threads = (unsigned)n;
	}
	if ((ok & O_ZSTD) && (v = getenv("SNAPSTREAM_ZSTD_LEVEL")) && *v) {
		if (!parse_int(v, -7, 19, &n) || n == 0)
			return cli_usage_error(c, "SNAPSTREAM_ZSTD_LEVEL=%s: takes -7..19 (not 0)", v);
		c->cfg.zstd_level = (int)n;
	}
	if ((ok & O_GRACE) && (v = getenv("SNAPSTREAM_GC_GRACE")) && *v) {
		int64_t g;
		if (!cli_parse_duration(v, &g))
			return cli_usage_error(c, "SNAPSTREAM_GC_GRACE=%s: takes a duration such as "
					       "90s, 30m, 6h, 2d", v);
		c->grace = g ? g : -1;
	}
	if ((ok & O_KEY) && (v = getenv("SNAPSTREAM_KEY_FILE")) && *v) {
		int r = read_key(c, v, "SNAPSTREAM_KEY_FILE");
		if (r >= 0)
			return r;
	}
	if ((ok & O_CACHE) && (v = getenv("SNAPSTREAM_CACHE")) && *v)
		c->cache = v;
	if ((ok & O_CACHE) && (v = getenv("SNAPSTREAM_CACHE_SIZE")) && *v &&
	    !ss_parse_bytes(v, SS_CACHE_SIZE_MIN, CACHE_SIZE_MAX, &c->cfg.cache_size))
		return cli_usage_error(c, "SNAPSTREAM_CACHE_SIZE=%s: takes a size from "
					  CACHE_SIZE_RANGE " (suffix K, M, G or T)", v);
	if ((ok & O_NOFSYNC) && !env_flag("SNAPSTREAM_NO_FSYNC", &c->cfg.no_fsync, &bad))
		return cli_usage_error(c, "%s=%s: takes 1 or 0", bad, getenv(bad));
	if ((ok & O_QUIET) && !env_flag("SNAPSTREAM_QUIET", &c->quiet, &bad))
		return cli_usage_error(c, "%s=%s: takes 1 or 0", bad, getenv(bad));
	return -1;
}

/* How an option was spelled, for errors: "--store" (a long option, at
 * its index in long_opts), "-j" (a short one). */
static void opt_name(int o, int longindex, char *buf, size_t n)
{
	if (longindex >= 0) {
		snprintf(buf, n, "--%s", long_opts[longindex].name);
		return;
	}
	if (o > 0 && o < 256) {
		snprintf(buf, n, "-%c", o);
		return;
	}
	for (const struct option *l = long_opts; l->name; l++)
		if (l->val == o) {
			snprintf(buf, n, "--%s", l->name);
			return;
		}
	snprintf(buf, n, "?");
}

/* The long option an argument spells (a unique prefix, as getopt_long
 * takes it), or NULL. */
static const struct option *long_match(const char *arg)
{
	size_t len = strcspn(arg, "=");
	const struct option *hit = NULL;
	for (const struct option *l = long_opts; l->name; l++)
		if (!strncmp(l->name, arg, len) && strlen(l->name) == len)
			return l;
	for (const struct option *l = long_opts; l->name; l++) {
		if (strncmp(l->name, arg, len))
			continue;
		if (hit)
			return NULL;   /* ambiguous: getopt_long reports it */
		hit = l;
	}
	return hit;
}

/* The index of the first "--" that ends the options (not an option's
 * value), or argc. */
static int find_dashdash(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--"))
			return i;
		if (a[0] != '-' || !a[1])
			continue;
		if (a[1] == '-') {
			const struct option *l = long_match(a + 2);
			if (l && l->has_arg == required_argument && !strchr(a, '='))
				i++;
			continue;
		}
		/* A cluster of short options; one that takes a value ends it. */
		for (const char *p = a + 1; *p; p++) {
			const char *d = strchr(short_opts + 1, *p);
			if (d && d[1] == ':') {
				if (!p[1])
					i++;
				break;
			}
		}
	}
	return argc;
}

int cli_parse(struct cli *c, int argc, char **argv)
{
	int r = apply_env(c);
	if (r >= 0)
		return r;
	/* Options end at "--". What follows is the command of --while, or
	 * else more arguments; getopt must not look at it either way. */
	int dd = find_dashdash(argc, argv);
	optind = 1;
	opterr = 0;
	int o, li = -1;
	char nm[64];
	/* '-' alone is an argument (stdin/stdout), which getopt leaves be. */
	while ((o = getopt_long(dd, argv, short_opts, long_opts, &li)) != -1) {
		long v;
		opt_name(o, li, nm, sizeof(nm));   /* as typed: "-q" or "--quiet" */
		li = -1;
		switch (o) {
		case 'q': o = OPT_QUIET; break;
		case 'f': o = OPT_FORCE; break;
		case 'n': o = OPT_DRYRUN; break;
		case 'j': o = OPT_THREADS; break;
		}
		if (o == 'h' || o == OPT_HELP) {
			cli_help_cmd(stdout, c->cmd);
			return EXIT_OK;
		}
		if (o == ':') {
			opt_name(optopt, -1, nm, sizeof(nm));
			return cli_usage_error(c, "option '%s' needs a value", nm);
		}
		if (o == '?') {
			if (optopt >= 256) {
				opt_name(optopt, -1, nm, sizeof(nm));
				return cli_usage_error(c, "option '%s' takes no value", nm);
			}
			if (optopt)
				return cli_usage_error(c, "unknown option '-%c'", optopt);
			/* An unknown or ambiguous long option: as typed, without
			 * a value that may follow '='. */
			const char *a = argv[optind - 1];
			return cli_usage_error(c, "unknown option '%.*s'", (int)strcspn(a, "="), a);
		}
		if (!(c->cmd->allowed & gate(o)))
			return cli_usage_error(c, "option '%s' is not for %s", nm, c->cmd->name);
		switch (o) {
		case OPT_STORE:
			c->store = optarg;
			break;
		case OPT_PARENT:
			if (c->nparents == CLI_MAX_PARENTS)
				return cli_usage_error(c, "more than %d --parent options",
						       CLI_MAX_PARENTS);
			c->parents[c->nparents++] = optarg;
			break;
		case OPT_LABEL: {
			char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg)
				return cli_usage_error(c, "--label takes key=value, got '%s'", optarg);
			if (c->nlabels == CLI_MAX_LABELS)
				return cli_usage_error(c, "more than %d --label options", CLI_MAX_LABELS);
			*eq = '\0';
			c->labels[c->nlabels++] = (struct ss_label_kv){optarg, eq + 1};
			break;
		}
		case OPT_FORCE:
			c->force = true;
			break;
		case OPT_INFLATE:
			c->inflate_gvisor = true;
			break;
		case OPT_THREADS:
			if (!parse_int(optarg, 1, 256, &v))
				return cli_usage_error(c, "%s takes 1..256, got '%s'", nm, optarg);
			c->cfg.threads = (unsigned)v;
			break;
		case OPT_CHUNK_AVG:
		case OPT_CHUNK_MIN:
		case OPT_CHUNK_MAX: {
			const struct size_opt *so = o == OPT_CHUNK_AVG ? &chunk_avg_opt
						    : o == OPT_CHUNK_MIN ? &chunk_min_opt
									 : &chunk_max_opt;
			uint32_t sz;
			if (!parse_size(optarg, so->lo, so->hi, &sz) ||
			    (o == OPT_CHUNK_AVG && (sz & (sz - 1))))
				return cli_usage_error(c, "%s takes %s bytes (suffix K, M or G), got "
							  "'%s'", so->name, so->range, optarg);
			if (o == OPT_CHUNK_AVG)
				c->cfg.chunk_avg = sz;
			else if (o == OPT_CHUNK_MIN)
				c->cfg.chunk_min = sz;
			else
				c->cfg.chunk_max = sz;
			break;
		}
		case OPT_ZSTD:
			if (!parse_int(optarg, -7, 19, &v) || v == 0)
				return cli_usage_error(c, "--zstd-level takes -7..19 (not 0), got '%s'",
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
		case OPT_NAME:
			c->name = optarg;
			break;
		case OPT_QUICK:
			c->quick = true;
			break;
		case OPT_GRACE: {
			int64_t g;
			if (!cli_parse_duration(optarg, &g))
				return cli_usage_error(c, "--grace takes a duration such as 90s, 30m, 6h, "
						       "2d; got '%s'", optarg);
			c->grace = g ? g : -1;   /* 0 means none, not the default */
			break;
		}
		case OPT_DRYRUN:
			c->dry_run = true;
			break;
		case OPT_BREAKLOCK:
			c->break_lock = true;
			break;
		case OPT_REPAIR:
			c->repair = true;
			break;
		case OPT_DEEP:
			c->deep = true;
			break;
		case OPT_WHILE:
			c->follow = true;
			break;
		case OPT_CACHE:
			if (!*optarg)
				return cli_usage_error(c, "--cache takes a directory");
			c->cache = optarg;
			break;
		case OPT_CACHE_SIZE:
			if (!ss_parse_bytes(optarg, SS_CACHE_SIZE_MIN, CACHE_SIZE_MAX, &c->cfg.cache_size))
				return cli_usage_error(c, "--cache-size takes a size from "
							  CACHE_SIZE_RANGE " (suffix K, M, G or T), got "
							  "'%s'", optarg);
			break;
		case OPT_NO_CACHE:
			c->no_cache = true;
			break;
		case OPT_PRUNE:
			if (!ss_parse_bytes(optarg, 0, CACHE_SIZE_MAX, &c->prune_to))
				return cli_usage_error(c, "--prune takes a size such as 0, 512M or 2G "
							  "(suffix K, M, G or T), got '%s'", optarg);
			c->prune = true;
			break;
		case OPT_CIPHER:
			if (strcmp(optarg, "aes-256-gcm") && strcmp(optarg, "chacha20-poly1305"))
				return cli_usage_error(c, "--cipher takes aes-256-gcm or "
							  "chacha20-poly1305, got '%s'", optarg);
			c->cipher = optarg;
			break;
		case OPT_KEYFILE: {
			int kr = read_key(c, optarg, "--key-file");
			if (kr >= 0)
				return kr;
			break;
		}
		}
	}
	c->args = argv + optind;
	c->nargs = dd - optind;
	if (c->follow) {
		if (dd + 1 >= argc)
			return cli_usage_error(c, "--while needs the command after '--': "
						  "--while -- <command> [args...]");
		c->run_argv = argv + dd + 1;   /* NULL-terminated, as argv is */
	} else if (dd < argc) {
		/* Plain "--": the rest are arguments too, next to the others. */
		memmove(argv + dd, argv + dd + 1, sizeof(*argv) * (size_t)(argc - dd));
		c->nargs = argc - 1 - optind;
	}
	const struct command *cmd = c->cmd;
	if (c->nargs < cmd->min_args || c->nargs > cmd->max_args) {
		if (cmd->max_args == 0)
			return cli_usage_error(c, "%s takes no arguments, got '%s'", cmd->name,
					       c->args[0]);
		return cli_usage_error(c, "%s takes %s", cmd->name, cmd->args);
	}
	if (c->name && !(c->nargs >= 1 && !strcmp(c->args[0], "-")))
		return cli_usage_error(c, "--name is for 'push -' (reading stdin)");
	if (c->follow && !strcmp(c->args[0], "-"))
		return cli_usage_error(c, "--while follows a directory the command writes, not "
					  "stdin");
	if ((cmd->allowed & O_CACHE) && !c->no_cache)
		c->cfg.cache_dir = c->cache;
	c->bar.on = !c->quiet && !c->json && isatty(STDERR_FILENO);
	if (c->bar.on) {
		c->cfg.progress = cli_progress_cb;
		c->cfg.progress_arg = c;
	}
	return -1;
}

void cli_key_wipe(struct cli *c)
{
	if (!c->key)
		return;
	explicit_bzero(c->key, CLI_KEY_MAP);
	munlock(c->key, CLI_KEY_MAP);
	munmap(c->key, CLI_KEY_MAP);
	c->key = NULL;
	c->cfg.key = NULL;
	c->cfg.key_len = 0;
}

const char *cli_store(struct cli *c)
{
	const char *s = c->store;
	if (!s || strstr(s, "://") || s[0] == '/')
		return s;
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof(cwd)) ||
	    snprintf(c->store_abs, sizeof(c->store_abs), "%s/%s", cwd, s) >=
		    (int)sizeof(c->store_abs))
		return s;
	return c->store_abs;
}
