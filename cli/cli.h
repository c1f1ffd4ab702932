/* The snapstream command: shared state of one invocation, the command
 * table, options, output. Everything here runs on the main thread. */
#ifndef SS_CLI_H
#define SS_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "snapstream.h"

/* Exit codes, documented in --help and the man page. */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = 2,
	EXIT_NOTFOUND = 3,
	EXIT_INTEGRITY = 4,
	EXIT_NOKEY = 5,         /* a keyed store or snapshot, and no key given */
	EXIT_BADKEY = 6,        /* another key than the store's */
	EXIT_OTHERSTORE = 7,    /* sealed in another store, whose key was given */
};

#define CLI_MAX_PARENTS 64
#define CLI_MAX_LABELS 64

/* Options, as bits: each command accepts a subset. */
enum {
	O_STORE = 1u << 0,
	O_PARENT = 1u << 1,
	O_LABEL = 1u << 2,
	O_FORCE = 1u << 3,
	O_THREADS = 1u << 4,
	O_CHUNK = 1u << 5,      /* --chunk-avg/--chunk-min/--chunk-max */
	O_ZSTD = 1u << 6,
	O_NOFSYNC = 1u << 7,
	O_JSON = 1u << 8,
	O_QUIET = 1u << 9,
	O_NAME = 1u << 10,
	O_QUICK = 1u << 11,
	O_GRACE = 1u << 12,
	O_DRYRUN = 1u << 13,
	O_BREAKLOCK = 1u << 14,
	O_KEY = 1u << 15,       /* --key-file */
	O_REPAIR = 1u << 16,
	O_DEEP = 1u << 17,
	O_WHILE = 1u << 18,     /* push --while -- <command> [args...] */
	O_INFLATE = 1u << 19,   /* push --inflate-gvisor */
	O_CACHE = 1u << 20,     /* --cache/--cache-size/--no-cache */
	O_PRUNE = 1u << 21,     /* cache --prune */
	O_CIPHER = 1u << 22,    /* init --cipher */
};

struct opt_help {
	const char *flag;       /* "--store <uri>" */
	const char *text;       /* may hold '\n' for more lines */
};

struct cli;

struct command {
	const char *name;
	const char *args;       /* "<file|dir|-> <snapshot>" */
	const char *summary;    /* one line, for the command list */
	const char *desc;       /* paragraphs separated by blank lines */
	const struct opt_help *opts;
	const char *const *examples;
	unsigned allowed;       /* O_* bits */
	int min_args, max_args;
	int (*run)(struct cli *c);
};

struct progress {
	bool on;                /* a TTY, and neither --quiet nor --json */
	bool drawn;
};

struct cli {
	const char *prog;
	const struct command *cmd;
	struct ss_config cfg;
	const char *store;
	const char *parents[CLI_MAX_PARENTS];
	size_t nparents;
	struct ss_label_kv labels[CLI_MAX_LABELS];
	size_t nlabels;
	const char *name;
	bool force, json, quiet, quick, dry_run, break_lock, repair, deep;
	bool follow;            /* --while */
	bool inflate_gvisor;    /* push --inflate-gvisor */
	char **run_argv;        /* --while: the command, NULL-terminated */
	int64_t grace;          /* ss_gc_opts.grace_seconds convention */
	const char *cache;      /* --cache, SNAPSTREAM_CACHE */
	bool no_cache;
	bool prune;
	uint64_t prune_to;
	char **args;
	int nargs;
	const char *subject;    /* the snapshot or store an error is about */
	struct progress bar;
	char store_abs[4096];
	uint8_t *key;           /* a keyed store's key, read from --key-file
				 * into a mapping of CLI_KEY_MAP bytes */
	const char *cipher;     /* init --cipher */
};

/* help.c */
extern const struct command cli_commands[];
extern const size_t cli_ncommands;
const struct command *cli_find(const char *name);
void cli_help_main(FILE *f);
void cli_help_cmd(FILE *f, const struct command *cmd);
void cli_man(FILE *f);

/* opts.c: environment, then flags. Returns -1 to go on, else an exit
 * code (0 after --help). */
int cli_parse(struct cli *c, int argc, char **argv);
int cli_usage_error(const struct cli *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* "90", "90s", "15m", "6h", "2d". */
bool cli_parse_duration(const char *s, int64_t *seconds);

/* out.c */
int cli_exit_code(int r);
void cli_error(struct cli *c, int r, const char *msg);
void cli_human(double bytes, char *out, size_t n);
void cli_time(int64_t unix_ns, char *out, size_t n);
void cli_progress_cb(void *arg, const struct ss_progress *p);
void cli_progress_clear(struct cli *c);

/* The --json result, built as a json-c tree (json/ssjson.h: strings made
 * valid UTF-8) and written as one line by json_finish. */
struct json_object;
struct json {
	FILE *f;
	struct json_object *root;       /* the top-level value */
	struct json_object *open;       /* json-c array: containers not yet ended */
	bool failed;                    /* out of memory on the way */
};
void json_begin(struct json *j, FILE *f);
void json_obj(struct json *j, const char *key);    /* key NULL inside arrays */
void json_arr(struct json *j, const char *key);
void json_end_obj(struct json *j);
void json_end_arr(struct json *j);
void json_str(struct json *j, const char *key, const char *v);
void json_u64(struct json *j, const char *key, uint64_t v);
void json_i64(struct json *j, const char *key, int64_t v);
void json_f64(struct json *j, const char *key, double v);
void json_bool(struct json *j, const char *key, bool v);
/* Write the value and a newline, free the tree. A result that cannot be
 * written (out of memory, a write error) is reported on stderr and the
 * program exits EXIT_FAIL, so that no script takes a missing result for
 * success. */
void json_finish(struct json *j);
/* Begin the result object of a command that succeeded: {"ok":true,"op":op,... */
void json_result(struct json *j, FILE *f, const char *op);

/* cmd_xfer.c, cmd_admin.c */
int cmd_push(struct cli *c);
int cmd_pull(struct cli *c);
int cmd_cat(struct cli *c);
int cmd_ls(struct cli *c);
int cmd_info(struct cli *c);
int cmd_verify(struct cli *c);
int cmd_rm(struct cli *c);
int cmd_gc(struct cli *c);
int cmd_init(struct cli *c);
int cmd_check(struct cli *c);
int cmd_cache(struct cli *c);

/* follow.c: push --while. Run c->run_argv once the push is under way,
 * push the source as the command writes it, and commit only when the
 * command exits 0. The command is reaped on every path. Returns 0 or
 * -errno with err set; -ECANCELED when the command failed or could not
 * run (err names it and its status). */
int cli_push_while(struct cli *c, struct ss_push_opts *o, struct ss_stats *st, char *err,
		   size_t errlen);

/* The store as given (flag or SNAPSTREAM_STORE), local paths made
 * absolute so manifests record a store any directory can reach. */
const char *cli_store(struct cli *c);
/* The key's mapping: one page, what ss_key_read takes (SS_KEY_MAX). */
#define CLI_KEY_MAP 4096u
/* Wipe and unmap the key read by --key-file, if any. */
void cli_key_wipe(struct cli *c);

#endif
