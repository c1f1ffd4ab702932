/* Help texts, written once: `--help` and the man page (docs/snapstream.1,
 * made by `snapstream help --man`) are both rendered from this table. */
#include <string.h>

#include "cli.h"

#define OPT_STORE_READ {"--store <uri>", "store to read chunks from (default: .snapstream\nbeside the snapshot; env SNAPSTREAM_STORE). A snapshot\nwhose manifest names another store is refused (exit 1)"}
#define OPT_THREADS {"-j, --threads <n>", "worker threads (default: online CPUs; env\nSNAPSTREAM_THREADS)"}
#define OPT_JSON {"--json", "print one JSON result (or error) object on stdout"}
#define OPT_QUIET {"-q, --quiet", "no progress and no summary (env SNAPSTREAM_QUIET=1)"}
#define OPT_KEY {"--key-file <file>", "the key of a keyed store (see 'init'); env\nSNAPSTREAM_KEY_FILE. Missing: exit 5; another key: exit\n6; the key of the store the snapshot was sealed in,\nwhich is not this one: exit 7"}
#define OPT_KEY_META {"--key-file <file>", "the key of a keyed store (see 'init'; env\nSNAPSTREAM_KEY_FILE). Without it a sealed snapshot\nshows only what its clear header says"}
#define OPT_CACHE {"--cache <dir>", "the node cache: keep the pack bytes read (and\npushed) in <dir>, shared by every process of this user\non the node, and read them from there next time (env\nSNAPSTREAM_CACHE; see 'cache')"}
#define OPT_CACHE_SIZE {"--cache-size <size>", "the cache's bound, least recently used blocks evicted\npast it: 16M..1024T (default 10G; env\nSNAPSTREAM_CACHE_SIZE)"}
#define OPT_NO_CACHE {"--no-cache", "use no cache, even with SNAPSTREAM_CACHE set"}

static const struct opt_help push_opts[] = {
	{"--store <uri>", "store for the chunks (default: .snapstream beside the\nsnapshot; env SNAPSTREAM_STORE)"},
	{"--parent <snapshot>", "a previous snapshot to deduplicate against\n(repeatable; the store's chunks are used anyway)"},
	{"--label <key=value>", "record a label in the manifest (repeatable)"},
	{"--name <name>", "with -: the file name to record (default: stdin)"},
	{"-f, --force", "replace the snapshot if it exists"},
	OPT_THREADS,
	{"--chunk-avg <bytes>", "average chunk size, a power of two from 256 to 4M\n(default 8K); --chunk-min (64 up) and --chunk-max\n(up to 1G) default to avg/4, avg*4"},
	{"--zstd-level <n>", "compression level, -7..19 (default 2; env\nSNAPSTREAM_ZSTD_LEVEL)"},
	{"--no-fsync", "do not fsync (tmpfs, throwaway stores; env\nSNAPSTREAM_NO_FSYNC=1)"},
	OPT_JSON,
	OPT_QUIET,
	OPT_KEY,
	{"--inflate-gvisor", "store gVisor state files (runsc's checkpoint.img)\ninflated, so that consecutive checkpoints dedup;\npull and cat then write a file runsc restores with\nthe same header but a body framed anew: its sha256sum\ndiffers from the pushed file's (off by default). Files\nfound complete are inflated in memory up to\nSNAPSTREAM_GVISOR_MEMORY in all (default a quarter\nof the memory left, at most 1G), the rest into an\nunnamed file in $TMPDIR (default /var/tmp)"},
	{"--while -- <command> [args...]", "run the command and push <dir> while it writes it\n(a checkpointer: criu dump -D <dir>, runsc\ncheckpoint, a Firecracker snapshot); commit when it\nexits 0, else write no snapshot and exit 1 naming its\nstatus. Signals sent to snapstream are passed on to\nit, and it is always waited for"},
	OPT_CACHE,
	OPT_CACHE_SIZE,
	OPT_NO_CACHE,
	{NULL, NULL},
};

static const char *const push_ex[] = {
	"snapstream push /run/ckpt/pages.img /snaps/job-1",
	"snapstream push /run/ckpt/ /snaps/job-2 --parent /snaps/job-1",
	"ssh host cat /run/ckpt/pages.img | snapstream push - s3://bucket/job-3 --name pages.img",
	"snapstream push /run/ckpt/ s3://bucket/job-4 --while -- criu dump -t 4242 -D /run/ckpt/",
	NULL,
};

static const struct opt_help pull_opts[] = {
	OPT_STORE_READ,
	{"-f, --force", "replace <dest> if it exists"},
	OPT_THREADS,
	{"--no-fsync", "do not fsync the restored files"},
	{"--json", "print one JSON result object (on stderr when <dest>\nis -)"},
	OPT_QUIET,
	OPT_KEY,
	OPT_CACHE,
	OPT_CACHE_SIZE,
	OPT_NO_CACHE,
	{NULL, NULL},
};

static const char *const pull_ex[] = {
	"snapstream pull /snaps/job-1 /run/restore/pages.img",
	"snapstream pull /snaps/job-2 /run/restore/ckpt",
	"snapstream pull s3://bucket/job-3 - | ssh host 'cat > /run/restore/pages.img'",
	NULL,
};

static const struct opt_help cat_opts[] = {
	OPT_STORE_READ,
	OPT_THREADS,
	{"--json", "print one JSON result object on stderr (stdout carries\nthe bytes)"},
	OPT_QUIET,
	OPT_KEY,
	OPT_CACHE,
	OPT_CACHE_SIZE,
	OPT_NO_CACHE,
	{NULL, NULL},
};

static const char *const cat_ex[] = {
	"snapstream cat /snaps/job-2 pages.img | xxh128sum",
	"snapstream cat s3://bucket/job-2 checkpoint.img > checkpoint.img",
	NULL,
};

static const struct opt_help ls_opts[] = {
	{"--store <uri>", "store whose refs to read (default: the default store of\nsnapshots under <prefix>; env SNAPSTREAM_STORE)"},
	OPT_KEY_META,
	OPT_JSON,
	{NULL, NULL},
};

static const char *const ls_ex[] = {
	"snapstream ls /snaps",
	"snapstream ls s3://bucket/prod/ --json",
	NULL,
};

static const struct opt_help info_opts[] = {
	{"--store <uri>", "the snapshot's store (default: .snapstream beside it;\nenv SNAPSTREAM_STORE). A snapshot whose manifest\nnames another store is refused (exit 1)"},
	OPT_KEY_META,
	OPT_JSON,
	{NULL, NULL},
};

static const char *const info_ex[] = {
	"snapstream info /snaps/job-2",
	"snapstream info s3://bucket/job-3 --json | jq .dedup_bytes",
	NULL,
};

static const struct opt_help verify_opts[] = {
	OPT_STORE_READ,
	{"--quick", "only check that every referenced pack exists and is\nlong enough"},
	OPT_THREADS,
	OPT_JSON,
	OPT_QUIET,
	OPT_KEY,
	OPT_CACHE,
	OPT_CACHE_SIZE,
	OPT_NO_CACHE,
	{NULL, NULL},
};

static const char *const verify_ex[] = {
	"snapstream verify /snaps/job-2",
	"snapstream verify s3://bucket/job-3 --quick",
	NULL,
};

static const struct opt_help rm_opts[] = {
	{"--store <uri>", "store holding the snapshot's ref (default: .snapstream\nbeside the snapshot; env SNAPSTREAM_STORE). A snapshot\nwhose manifest names another store is refused (exit 1)"},
	OPT_KEY_META,
	OPT_JSON,
	OPT_QUIET,
	{NULL, NULL},
};

static const char *const rm_ex[] = {
	"snapstream rm /snaps/job-1 && snapstream gc --store /snaps/.snapstream",
	NULL,
};

static const struct opt_help gc_opts[] = {
	{"--store <uri>", "the store (default: env SNAPSTREAM_STORE, else\n./.snapstream)"},
	{"--grace <duration>", "how long an unreferenced pack stays hidden before it\nis deleted: 90s, 30m, 6h, 2d (default 24h; env\nSNAPSTREAM_GC_GRACE). Must exceed the longest push,\npull or verify; 0 deletes at once and is safe only\nwhen nothing else uses the store"},
	{"-n, --dry-run", "report what would be hidden and deleted; change\nnothing"},
	{"--break-lock", "remove the lock of a gc that died, then run"},
	{"--key-file <file>", "a keyed store's key (env SNAPSTREAM_KEY_FILE). Not\nneeded: without it gc keeps every pack a sealed\nsnapshot lists in the clear; with it gc also opens and\nchecks them"},
	OPT_JSON,
	OPT_QUIET,
	{NULL, NULL},
};

static const struct opt_help init_opts[] = {
	{"--store <uri>", "the store (default: env SNAPSTREAM_STORE, else\n./.snapstream)"},
	{"--key-file <file>", "make the store keyed with this key: 16..4096 bytes,\nreadable by its owner only (env SNAPSTREAM_KEY_FILE).\nA keyed store is sealed: chunk ids are keyed, and every\nframe, pack index, index object and manifest is\nencrypted and authenticated with keys derived from it"},
	{"--cipher <name>", "a keyed store's cipher: aes-256-gcm or\nchacha20-poly1305 (default: AES-256-GCM where the CPU\nhas AES instructions, else ChaCha20-Poly1305)"},
	OPT_JSON,
	OPT_QUIET,
	{NULL, NULL},
};

static const char *const init_ex[] = {
	"head -c 32 /dev/urandom > /etc/snapstream/store.key && chmod 600 /etc/snapstream/store.key",
	"snapstream init --store s3://bucket/.snapstream --key-file /etc/snapstream/store.key",
	NULL,
};

static const struct opt_help check_opts[] = {
	{"--store <uri>", "the store (default: env SNAPSTREAM_STORE, else\n./.snapstream)"},
	{"--repair", "rebuild index objects from the packs, write missing\nrefs, replace damaged gc records, and set damaged\npacks no snapshot references aside; never deletes or\nmoves a pack a snapshot references"},
	{"--deep", "also fetch and decompress every chunk of every pack\nand check its id (reads the whole store)"},
	OPT_KEY,
	{"--break-lock", "with --repair: remove the lock of a gc or repair\nthat died, then run"},
	OPT_THREADS,
	{"--no-fsync", "do not fsync what repair writes (tmpfs, tests)"},
	OPT_JSON,
	{"-q, --quiet", "print only the problems left, no progress or summary\n(env SNAPSTREAM_QUIET=1)"},
	{NULL, NULL},
};

static const char *const check_ex[] = {
	"snapstream check --store /snaps/.snapstream",
	"snapstream check --store s3://bucket/.snapstream --repair",
	"snapstream check --store /snaps/.snapstream --deep --json | jq .findings",
	NULL,
};

static const char *const gc_ex[] = {
	"snapstream gc --store /snaps/.snapstream",
	"snapstream gc --store s3://bucket/.snapstream --dry-run --json",
	NULL,
};

static const struct opt_help cache_opts[] = {
	{"--cache <dir>", "the cache directory, instead of <dir> (env\nSNAPSTREAM_CACHE)"},
	{"--prune <size>", "first evict least recently used blocks until at most\n<size> remain (0 empties it)"},
	OPT_JSON,
	OPT_QUIET,
	{NULL, NULL},
};

static const char *const cache_ex[] = {
	"snapstream pull s3://bucket/actor-3 /run/restore/ckpt --cache /var/cache/snapstream",
	"snapstream cache /var/cache/snapstream --json",
	"snapstream cache /var/cache/snapstream --prune 2G",
	NULL,
};

const struct command cli_commands[] = {
	{
		"push", "<file|dir|-> <snapshot>", "store a checkpoint image as a snapshot",
		"Store a checkpoint image (one file, or a directory of files such as a\n"
		"runsc image directory) as a new snapshot. Zero pages are skipped,\n"
		"chunks the store already holds are not uploaded again, and the\n"
		"snapshot appears only once everything is stored.\n"
		"\n"
		"Pushes into the same store may run at once. Those on one host agree\n"
		"on which of them stores each chunk they share (a table in /dev/shm,\n"
		"per user and store), so pushing related images together stores what\n"
		"pushing them one by one would.\n"
		"\n"
		"With - the image is read from stdin as it arrives (a pipe from a\n"
		"checkpointing tool) and becomes a one-file snapshot; nothing is\n"
		"written to local disk on the way.\n"
		"\n"
		"With --while -- <command> the command is run once the push has\n"
		"started, and the directory is pushed as the command writes into it:\n"
		"files may appear and grow (written front to back) until it exits.\n"
		"The snapshot is committed only when the command exits 0; when it\n"
		"fails nothing is written and the exit status is 1. A push that\n"
		"cannot succeed (the snapshot exists, a bad store) fails before the\n"
		"command is run.",
		push_opts, push_ex,
		O_STORE | O_PARENT | O_LABEL | O_FORCE | O_THREADS | O_CHUNK | O_ZSTD | O_NOFSYNC |
			O_JSON | O_QUIET | O_NAME | O_KEY | O_WHILE | O_INFLATE | O_CACHE,
		2, 2, cmd_push,
	},
	{
		"pull", "<snapshot> <dest|->", "restore a snapshot to a file, a directory or stdout",
		"Restore a snapshot. A one-file snapshot becomes the file <dest> (or a\n"
		"file inside <dest> if it is a directory); a directory snapshot becomes\n"
		"the directory <dest>. Zero pages are left as holes (sparse files).\n"
		"Every chunk and every file is verified before <dest> appears.\n"
		"\n"
		"With - a one-file snapshot is written to stdout in order, each chunk\n"
		"verified before it is written; if verification fails the output\n"
		"stops and the exit status is 4, so check it in pipelines (set -o\n"
		"pipefail).",
		pull_opts, pull_ex,
		O_STORE | O_FORCE | O_THREADS | O_NOFSYNC | O_JSON | O_QUIET | O_KEY | O_CACHE, 2, 2,
		cmd_pull,
	},
	{
		"cat", "<snapshot> [<file>]", "write one file of a snapshot to stdout",
		"Write the bytes of one file of a snapshot to stdout, in order, each\n"
		"chunk verified before it is written and the whole file's digest at\n"
		"the end. <file> is the name shown by 'snapstream info'; it may be\n"
		"left out for a one-file snapshot. When stdout is a regular file,\n"
		"zero pages become holes.",
		cat_opts, cat_ex, O_STORE | O_THREADS | O_JSON | O_QUIET | O_KEY | O_CACHE, 1, 2,
		cmd_cat,
	},
	{
		"ls", "[<prefix>]", "list the snapshots under a prefix",
		"List the snapshots under a prefix (a directory, s3://bucket/dir/ or a\n"
		"name prefix; default: the current directory) with their creation\n"
		"time, logical size (the image), stored size (the compressed chunks it\n"
		"references, shared ones included) and file count. Snapshots are found\n"
		"through the store's refs and, for local prefixes, by looking for\n"
		"manifests below the directory.",
		ls_opts, ls_ex, O_STORE | O_KEY | O_JSON, 0, 1, cmd_ls,
	},
	{
		"info", "<snapshot>", "describe a snapshot",
		"Describe a snapshot from its manifest: files and sizes, chunk and pack\n"
		"counts, logical, stored and newly added bytes, what zero pages and\n"
		"dedup saved when it was pushed, labels, parents, format version.",
		info_opts, info_ex, O_STORE | O_KEY | O_JSON, 1, 1, cmd_info,
	},
	{
		"verify", "<snapshot>", "check every chunk and file of a snapshot",
		"Fetch every chunk of a snapshot, check its checksum and every file's\n"
		"digest, and write nothing. With --quick only check that every pack\n"
		"it references exists. An integrity failure names the snapshot, the\n"
		"file and the offset, and exits with status 4. With --cache it checks\n"
		"what a restore on this node would read: the blocks the node cache\n"
		"holds, and the rest from the store.",
		verify_opts, verify_ex,
		O_STORE | O_QUICK | O_THREADS | O_JSON | O_QUIET | O_KEY | O_CACHE, 1, 1, cmd_verify,
	},
	{
		"rm", "<snapshot>", "delete a snapshot",
		"Delete a snapshot: its manifest and its ref in the store. The chunks\n"
		"stay until 'snapstream gc' finds that no snapshot references them.\n"
		"Run on a snapshot already deleted by hand, it removes the ref left\n"
		"behind.",
		rm_opts, rm_ex, O_STORE | O_KEY | O_JSON | O_QUIET, 1, 1, cmd_rm,
	},
	{
		"gc", "", "delete packs no snapshot references",
		"Delete the packs of a store that no snapshot references. gc reads\n"
		"every snapshot the store's refs name (and, for a local .snapstream,\n"
		"the snapshots beside it); a pack found unreferenced is first hidden,\n"
		"so that no push starts using it again, and deleted by a later gc once\n"
		"the grace period has passed and it is still unreferenced. Running gc\n"
		"periodically (from cron) therefore frees space one grace period after\n"
		"snapshots are removed, and never deletes a pack that a push, pull or\n"
		"verify running meanwhile uses. Index objects are rewritten so that\n"
		"none lists a deleted pack. One gc runs per store at a time.\n"
		"\n"
		"gc deletes nothing if a snapshot cannot be read (repair it, or remove\n"
		"it with 'snapstream rm').",
		gc_opts, gc_ex, O_STORE | O_GRACE | O_DRYRUN | O_BREAKLOCK | O_KEY | O_JSON | O_QUIET, 0, 0,
		cmd_gc,
	},
	{
		"init", "", "create a store, optionally keyed (encrypted)",
		"Create a store's configuration. Stores need no init: the first push\n"
		"creates one with plain chunk ids (XXH3-128 of the bytes). Init is for\n"
		"a keyed store: with --key-file, the store is sealed. Every frame,\n"
		"pack index, index object and manifest is encrypted and authenticated\n"
		"(AES-256-GCM or ChaCha20-Poly1305) under keys derived from the key\n"
		"and the store's random id, so whoever can read the bucket learns no\n"
		"image content and no file name, and whoever can write it cannot make\n"
		"a pull, cat or verify return anything the key's holders did not\n"
		"write for that snapshot (exit 4 instead). Chunk ids become XXH3-128\n"
		"with a secret derived from the key, so that nobody without the key\n"
		"can craft data whose chunks collide with other tenants' chunks, or\n"
		"probe the store for chunks they can guess. The key is never stored;\n"
		"every push, pull, cat, verify and check of the store then needs it:\n"
		"without it they exit 5, with another key 6. A keyed store must be\n"
		"new: init refuses a store that already holds packs. What the bucket\n"
		"still shows (sizes, counts, timing, which snapshots share packs,\n"
		"snapshot names) is in docs/SECURITY.md.",
		init_opts, init_ex, O_STORE | O_KEY | O_CIPHER | O_JSON | O_QUIET, 0, 0, cmd_init,
	},
	{
		"check", "", "verify a store, and repair what its packs can rebuild",
		"Check a store: every pack's own index is read and parsed, every index\n"
		"object is compared with the packs it lists, and every chunk of every\n"
		"snapshot the store knows (its refs, and for a local .snapstream the\n"
		"snapshots beside it) is looked up in the pack its manifest names.\n"
		"With --deep every chunk of every pack is also fetched, decompressed\n"
		"and checked against its id. Each finding is printed on a line of its\n"
		"own: PROBLEM (damaged or missing packs and the snapshots they break,\n"
		"damaged or stale index objects, snapshots without a ref, damaged gc\n"
		"records), REPAIRED, or note (packs no snapshot references, as an\n"
		"interrupted push leaves them: normal, gc collects them).\n"
		"\n"
		"With --repair, what the packs themselves describe is rebuilt: new\n"
		"index objects are written before damaged or stale ones are deleted,\n"
		"missing refs are written, a damaged gc/state is dropped and a damaged\n"
		"record of a removed snapshot is replaced by one that keeps every intact\n"
		"pack for a grace period. A damaged pack no snapshot references is\n"
		"moved to damaged/ in the store, or hidden so that gc deletes it later\n"
		"when a running push may have seen it. A pack any snapshot references\n"
		"is never deleted or moved: check names the snapshots it breaks.\n"
		"Repair takes the gc lock, so it never runs together with gc; pushes,\n"
		"pulls and verifies may run meanwhile.\n"
		"\n"
		"Exits 0 when the store has no problem left, 4 when it has.",
		check_opts, check_ex,
		O_STORE | O_KEY | O_BREAKLOCK | O_REPAIR | O_DEEP | O_THREADS | O_NOFSYNC | O_JSON |
			O_QUIET,
		0, 0,
		cmd_check,
	},
	{
		"cache", "[<dir>]", "show or prune the node cache",
		"Show a node cache: its size, blocks, bound, and since it was created\n"
		"the hits (blocks read from it), the bytes that saved, the misses\n"
		"(blocks fetched from a store into it), what pushes wrote through and\n"
		"what was evicted. With --prune, first evict the least recently used\n"
		"blocks until at most <size> remain.\n"
		"\n"
		"With --cache <dir> (or SNAPSTREAM_CACHE), push, pull, cat and verify\n"
		"keep the pack bytes they move in <dir>, in blocks of 256 KiB (64 KiB\n"
		"in a cache made before 2026-12-07), and every process of the user on\n"
		"the node shares them: a block is fetched from the store once however\n"
		"many pulls need it at the same time, a pull of a snapshot pushed or\n"
		"pulled on the node before fetches little more than its manifest, and\n"
		"a block is only ever used after the chunks in it matched their ids\n"
		"(a bad one is dropped and fetched again). The\n"
		"cache stays within --cache-size, evicting least recently used blocks.\n"
		"A full disk only stops it from growing. The directory must belong to\n"
		"the user and not be writable by others.",
		cache_opts, cache_ex, O_CACHE | O_PRUNE | O_JSON | O_QUIET, 0, 1, cmd_cache,
	},
};

const size_t cli_ncommands = sizeof(cli_commands) / sizeof(cli_commands[0]);

const struct command *cli_find(const char *name)
{
	for (size_t i = 0; i < cli_ncommands; i++)
		if (strcmp(cli_commands[i].name, name) == 0)
			return &cli_commands[i];
	return NULL;
}

static const char intro[] =
	"Stream sandbox checkpoint images to and from a store, storing each\n"
	"unique chunk once.\n"
	"\n"
	"A snapshot is a location: a path, file:///abs/path, s3://bucket/key or\n"
	"gs://bucket/key. Its manifest is <snapshot>/manifest; its chunks live\n"
	"in a store, by default .snapstream beside the snapshot (for buckets:\n"
	"<bucket>/.snapstream), shared by every snapshot there so that each\n"
	"chunk is stored once.";

static const char env_text[] =
	"Flags override the environment, which overrides the defaults.\n"
	"  SNAPSTREAM_STORE       the store, where --store is accepted\n"
	"  SNAPSTREAM_THREADS     worker threads (--threads)\n"
	"  SNAPSTREAM_ZSTD_LEVEL  compression level (--zstd-level)\n"
	"  SNAPSTREAM_NO_FSYNC    1: do not fsync (--no-fsync)\n"
	"  SNAPSTREAM_QUIET       1: no progress or summary (--quiet)\n"
	"  SNAPSTREAM_GC_GRACE    gc grace period (--grace)\n"
	"  SNAPSTREAM_KEY_FILE    a keyed store's key (--key-file)\n"
	"  SNAPSTREAM_RETRY_MAX, SNAPSTREAM_RETRY_SECONDS, SNAPSTREAM_STALL_SECONDS,\n"
	"  SNAPSTREAM_PART_SIZE, SNAPSTREAM_MULTIPART_THRESHOLD, SNAPSTREAM_LIST_PAGE\n"
	"                         object-store request tuning\n"
	"  SNAPSTREAM_CA_BUNDLE   CA certificates for https endpoints\n"
	"  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,\n"
	"  AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, AWS_PROFILE, AWS_DEFAULT_PROFILE,\n"
	"  AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE, AWS_CA_BUNDLE\n"
	"                         S3 credentials, region and endpoint, as the aws CLI\n"
	"                         reads them\n"
	"  GOOGLE_APPLICATION_CREDENTIALS, GCE_METADATA_HOST, SNAPSTREAM_GCS_ENDPOINT,\n"
	"  SNAPSTREAM_GCS_HMAC_ACCESS_ID, SNAPSTREAM_GCS_HMAC_SECRET\n"
	"                         GCS credentials (service account key file, metadata\n"
	"                         server, or HMAC keys) and endpoint";

static const char exit_text[] =
	"  0  success\n"
	"  1  failure (I/O, network, a snapshot that exists, another gc running,\n"
	"     a snapshot whose manifest names another store than the one used)\n"
	"  2  usage error (bad command, option or argument)\n"
	"  3  not found (no such snapshot, file in it, store or source)\n"
	"  4  integrity error (corrupted, truncated or missing data; in a keyed\n"
	"     store also anything that does not authenticate: altered, moved to\n"
	"     another name, or another store's objects)\n"
	"  5  missing key (a keyed store or snapshot, and no --key-file)\n"
	"  6  wrong key (another key than the store's)\n"
	"  7  another store's snapshot (sealed in another store, whose key this\n"
	"     is: name that store with --store)";

void cli_help_main(FILE *f)
{
	fprintf(f, "Usage: snapstream <command> [options]\n\n%s\n\nCommands:\n", intro);
	for (size_t i = 0; i < cli_ncommands; i++) {
		char head[64];
		snprintf(head, sizeof(head), "%s %s", cli_commands[i].name, cli_commands[i].args);
		fprintf(f, "  %-30s %s\n", head, cli_commands[i].summary);
	}
	fprintf(f,
		"\nRun 'snapstream <command> --help' for a command's options and examples.\n"
		"\nEnvironment:\n%s\n\nExit codes:\n%s\n",
		env_text, exit_text);
}

/* Print text with every line after the first indented by `ind`. */
static void put_indented(FILE *f, const char *text, int ind)
{
	for (const char *p = text; *p; p++) {
		fputc(*p, f);
		if (*p == '\n')
			fprintf(f, "%*s", ind, "");
	}
}

void cli_help_cmd(FILE *f, const struct command *cmd)
{
	fprintf(f, "Usage: snapstream %s%s%s [options]\n\n%s\n\nOptions:\n", cmd->name,
		*cmd->args ? " " : "", cmd->args, cmd->desc);
	for (const struct opt_help *o = cmd->opts; o->flag; o++) {
		fprintf(f, "  %-22s ", o->flag);
		if (strlen(o->flag) > 22)
			fprintf(f, "\n%25s", "");
		put_indented(f, o->text, 25);
		fputc('\n', f);
	}
	fprintf(f, "  %-22s show this help\n\nExamples:\n", "-h, --help");
	for (const char *const *e = cmd->examples; *e; e++)
		fprintf(f, "  %s\n", *e);
	fprintf(f, "\nExit codes: 0 success, 1 failure, 2 usage error, 3 not found,\n"
		   "4 integrity error%s\n",
		cmd->allowed & O_KEY ? ", 5 missing key, 6 wrong key, 7 another\nstore's snapshot."
				     : ".");
}

/* ---------------------------------------------------------------- man */

/* roff: escape backslashes and leading dots/quotes; '-' as \- in flags. */
static void roff(FILE *f, const char *s, bool join_lines)
{
	bool bol = true;
	for (; *s; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", f);
		bol = false;
		if (*s == '\\')
			fputs("\\e", f);
		else if (*s == '-')
			fputs("\\-", f);
		else if (*s == '\n' && join_lines)
			fputc(' ', f);
		else {
			fputc(*s, f);
			bol = *s == '\n';
		}
	}
}

/* Paragraphs separated by blank lines become .PP blocks. */
static void roff_paras(FILE *f, const char *s)
{
	fputs(".PP\n", f);
	const char *p = s;
	while (*p) {
		const char *br = strstr(p, "\n\n");
		size_t n = br ? (size_t)(br - p) : strlen(p);
		char buf[4096];
		snprintf(buf, sizeof(buf), "%.*s", (int)n, p);
		roff(f, buf, false);
		fputc('\n', f);
		if (!br)
			break;
		fputs(".PP\n", f);
		p = br + 2;
	}
}

static void roff_preformatted(FILE *f, const char *s)
{
	fputs(".PP\n.nf\n", f);
	roff(f, s, false);
	fputs("\n.fi\n", f);
}

void cli_man(FILE *f)
{
	fprintf(f,
		".\\\" Generated by 'snapstream help --man' from cli/help.c; do not edit.\n"
		".TH SNAPSTREAM 1 \"\" \"snapstream %s\" \"User Commands\"\n"
		".SH NAME\nsnapstream \\- stream sandbox checkpoint images to and from a store\n"
		".SH SYNOPSIS\n",
		ss_version());
	for (size_t i = 0; i < cli_ncommands; i++) {
		fprintf(f, ".B snapstream %s\n", cli_commands[i].name);
		if (*cli_commands[i].args) {
			roff(f, cli_commands[i].args, true);
			fputc('\n', f);
		}
		fputs(".RI [ options ]\n.br\n", f);
	}
	fputs(".SH DESCRIPTION\n", f);
	roff_paras(f, intro);
	fputs(".SH COMMANDS\n", f);
	for (size_t i = 0; i < cli_ncommands; i++) {
		const struct command *c = &cli_commands[i];
		fprintf(f, ".SS \"%s", c->name);
		if (*c->args) {
			fputc(' ', f);
			roff(f, c->args, true);
		}
		fputs("\"\n", f);
		roff_paras(f, c->desc);
		for (const struct opt_help *o = c->opts; o->flag; o++) {
			fputs(".TP\n.B ", f);
			roff(f, o->flag, true);
			fputc('\n', f);
			roff(f, o->text, true);
			fputc('\n', f);
		}
		fputs(".PP\nExamples:\n.RS\n.nf\n", f);
		for (const char *const *e = c->examples; *e; e++) {
			roff(f, *e, false);
			fputc('\n', f);
		}
		fputs(".fi\n.RE\n", f);
	}
	fputs(".SH ENVIRONMENT\n", f);
	roff_preformatted(f, env_text);
	fputs(".SH EXIT STATUS\n", f);
	roff_preformatted(f, exit_text);
	fputs(".SH SEE ALSO\n"
	      "docs/DESIGN.md in the source tree: how the engine works, the store layout,\n"
	      "and the garbage collection protocol.\n",
	      f);
}
