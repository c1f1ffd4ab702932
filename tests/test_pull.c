/* The read path's guarantees, through the public API:
 *  - pull --force over a directory replaces it atomically: a process
 *    looking at the destination never finds it missing, and a pull that
 *    fails leaves the old destination as it was;
 *  - the tree a pull replaces is removed without recursion on the
 *    caller's stack (however deep) and without following symlinks;
 *  - out of memory is out of memory: with no zstd decompression context
 *    to be had, pull, verify, cat and check --deep report -ENOMEM, never
 *    -EBADMSG, and check marks no pack damaged;
 *  - the library lives with the descriptor limit it is given;
 *  - a manifest does not choose the store a snapshot is read from;
 *  - pull hands back the snapshot's labels. */
#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "snapstream.h"
#include "testutil.h"

/* ZSTD_createDCtx as the library sees it: interposed by this program, so
 * that a test can make it fail as it does when memory runs out. */
static atomic_bool dctx_fail;

void *ZSTD_createDCtx(void);
void *ZSTD_createDCtx(void)
{
	if (atomic_load(&dctx_fail))
		return NULL;
	void *(*real)(void) = (void *(*)(void))dlsym(RTLD_NEXT, "ZSTD_createDCtx");
	return real ? real() : NULL;
}

static char base[64];
static struct ss_config cfg = {.size = sizeof(struct ss_config), .threads = 2, .no_fsync = true};

static void put_file(const char *dir, const char *name, const char *text)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	REQUIRE(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", p);
}

static bool has_file(const char *dir, const char *name, const char *text)
{
	char p[PATH_MAX], buf[256] = "";
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return !strcmp(buf, text);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

static int push(const char *src, const char *snap, const char *store,
		const struct ss_label_kv *labels, size_t nlabels)
{
	struct ss_push_opts o = {.size = sizeof(struct ss_push_opts), .source = src, .snapshot = snap, .store = store,
				 .labels = labels, .nlabels = nlabels};
	char err[1024];
	int r = ss_push(&o, &cfg, NULL, err, sizeof(err));
	if (r)
		fprintf(stderr, "push %s: %s\n", snap, err);
	return r;
}

static int pull(const char *snap, const char *dest, const char *store, bool force, char *err,
		size_t errlen)
{
	struct ss_pull_opts o = {.size = sizeof(struct ss_pull_opts), .snapshot = snap, .dest = dest, .store = store, .force = force};
	return ss_pull(&o, &cfg, NULL, err, errlen);
}

/* ---------------------------------------------------------------- atomic */

struct watch {
	const char *path;
	atomic_bool stop;
	unsigned long looks, missing;
};

static void *watcher(void *arg)
{
	struct watch *w = arg;
	struct stat st;
	while (!atomic_load(&w->stop)) {
		w->looks++;
		if (lstat(w->path, &st) < 0 && errno == ENOENT)
			w->missing++;
	}
	return NULL;
}

static void test_atomic(void)
{
	char src[PATH_MAX], snap[PATH_MAX], dest[PATH_MAX], err[1024];
	snprintf(src, sizeof(src), "%s/src", base);
	snprintf(snap, sizeof(snap), "%s/snaps/dir", base);
	snprintf(dest, sizeof(dest), "%s/dest", base);
	REQUIRE(mkdir(src, 0755) == 0, "mkdir");
	put_file(src, "a", "new a");
	put_file(src, "b", "new b");
	REQUIRE(push(src, snap, NULL, NULL, 0) == 0, "push");
	REQUIRE(pull(snap, dest, NULL, false, err, sizeof(err)) == 0, "pull: %s", err);

	struct watch w = {.path = dest};
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, watcher, &w) == 0, "thread");
	int bad = 0;
	for (int i = 0; i < 150 && !bad; i++)
		bad = pull(snap, dest, NULL, true, err, sizeof(err));
	atomic_store(&w.stop, true);
	pthread_join(th, NULL);
	CHECK(bad == 0, "pull --force: %s", err);
	CHECK(w.missing == 0, "the destination was missing %lu times in %lu looks", w.missing,
	      w.looks);
	CHECK(has_file(dest, "a", "new a") && has_file(dest, "b", "new b"), "pulled");

	/* A pull that fails leaves the old destination as it was: damage the
	 * snapshot's only pack. */
	put_file(dest, "old", "mine");
	char packs[PATH_MAX];
	snprintf(packs, sizeof(packs), "%s/snaps/.snapstream/packs", base);
	char cmd[PATH_MAX * 2];
	snprintf(cmd, sizeof(cmd), "find '%s' -type f -exec truncate -s 4 {} +", packs);
	REQUIRE(system(cmd) == 0, "truncate packs");
	int r = pull(snap, dest, NULL, true, err, sizeof(err));
	CHECK(r == -EBADMSG, "pull of a damaged snapshot: %d %s", r, err);
	CHECK(has_file(dest, "old", "mine") && has_file(dest, "a", "new a"),
	      "the old destination is intact after a failed pull");
	snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -q 'ss-tmp\\|ss-old'", base);
	CHECK(system(cmd) != 0, "nothing left beside the destination");
}

/* ---------------------------------------------------------------- deep */

struct deep_pull {
	const char *snap, *dest;
	int r;
	char err[1024];
};

static void *deep_pull_main(void *arg)
{
	struct deep_pull *d = arg;
	d->r = pull(d->snap, d->dest, NULL, true, d->err, sizeof(d->err));
	return NULL;
}

static void test_deep(void)
{
	char src[PATH_MAX], snap[PATH_MAX], dest[PATH_MAX], outside[PATH_MAX];
	snprintf(src, sizeof(src), "%s/src2", base);
	snprintf(snap, sizeof(snap), "%s/snaps/deep", base);
	snprintf(dest, sizeof(dest), "%s/deepdest", base);
	snprintf(outside, sizeof(outside), "%s/outside", base);
	REQUIRE(mkdir(src, 0755) == 0 && mkdir(dest, 0755) == 0 && mkdir(outside, 0755) == 0,
		"mkdir");
	put_file(src, "f", "fresh");
	put_file(outside, "keep", "keep me");
	REQUIRE(push(src, snap, NULL, NULL, 0) == 0, "push");
	/* The old destination: a symlink to a directory elsewhere, and a tree
	 * nearly as deep as a path can name (two bytes a level), with room for
	 * the longer name it has once it has been swapped out. */
	char link[PATH_MAX + 8];
	snprintf(link, sizeof(link), "%s/link", dest);
	REQUIRE(symlink(outside, link) == 0, "symlink");
	char p[PATH_MAX];
	size_t n = (size_t)snprintf(p, sizeof(p), "%s", dest);
	unsigned levels = 0;
	while (n + 2 < PATH_MAX - 64) {
		p[n++] = '/';
		p[n++] = 'd';
		p[n] = '\0';
		REQUIRE(mkdir(p, 0755) == 0, "mkdir level %u: %s", levels, strerror(errno));
		levels++;
	}
	put_file(p, "leaf", "deep");
	/* From a thread with a 4 MiB stack, as a library user's thread may
	 * have: a recursive removal needs a page of stack per level. */
	struct deep_pull d = {.snap = snap, .dest = dest};
	pthread_attr_t at;
	pthread_t th;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 4u << 20);
	REQUIRE(pthread_create(&th, &at, deep_pull_main, &d) == 0, "thread");
	pthread_join(th, NULL);
	pthread_attr_destroy(&at);
	CHECK(d.r == 0, "pull --force over a tree %u levels deep: %s", levels, d.err);
	CHECK(has_file(dest, "f", "fresh"), "pulled");
	struct stat st;
	CHECK(lstat(link, &st) < 0, "the old tree is gone");
	CHECK(has_file(outside, "keep", "keep me"), "the symlink was not followed");
	char cmd[PATH_MAX * 2];
	snprintf(cmd, sizeof(cmd), "ls -a '%s' | grep -q 'ss-tmp\\|ss-old'", base);
	CHECK(system(cmd) != 0, "the old tree was removed, not left beside the destination");
}

/* ---------------------------------------------------------------- oom */

struct finding_count {
	unsigned damaged, problems;
};

static void on_finding(void *arg, const struct ss_check_finding *f)
{
	struct finding_count *c = arg;
	if (f->kind == SS_CHECK_PACK_DAMAGED)
		c->damaged++;
	if (f->problem)
		c->problems++;
	fprintf(stderr, "  finding: %s\n", f->message);
}

static void test_oom(void)
{
	char src[PATH_MAX], snap[PATH_MAX], dest[PATH_MAX], store[PATH_MAX], err[1024];
	snprintf(src, sizeof(src), "%s/src3", base);
	snprintf(snap, sizeof(snap), "%s/oom/s", base);
	snprintf(dest, sizeof(dest), "%s/oomdest", base);
	snprintf(store, sizeof(store), "%s/oom/.snapstream", base);
	REQUIRE(mkdir(src, 0755) == 0, "mkdir");
	char img[PATH_MAX + 8];
	snprintf(img, sizeof(img), "%s/img", src);
	write_image(img, 3u << 20);
	REQUIRE(push(src, snap, NULL, NULL, 0) == 0, "push");

	atomic_store(&dctx_fail, true);
	int r = pull(snap, dest, NULL, false, err, sizeof(err));
	CHECK(r == -ENOMEM, "pull without memory for zstd: %d (%s)", r, err);
	struct stat st;
	CHECK(lstat(dest, &st) < 0, "nothing pulled");

	struct ss_verify_opts vo = {.size = sizeof(struct ss_verify_opts), .snapshot = snap};
	r = ss_verify(&vo, &cfg, NULL, err, sizeof(err));
	CHECK(r == -ENOMEM, "verify without memory for zstd: %d (%s)", r, err);

	char out[PATH_MAX];
	snprintf(out, sizeof(out), "%s/oomcat", base);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0, "open");
	struct ss_cat_opts co = {.size = sizeof(struct ss_cat_opts), .snapshot = snap, .file = "img", .fd = fd};
	r = ss_cat(&co, &cfg, NULL, err, sizeof(err));
	close(fd);
	CHECK(r == -ENOMEM, "cat without memory for zstd: %d (%s)", r, err);

	struct finding_count fc = {0};
	struct ss_check_opts ko = {.size = sizeof(struct ss_check_opts), .store = store, .deep = true, .on_finding = on_finding,
				   .arg = &fc};
	struct ss_check_stats cs = SS_CHECK_STATS_INIT;
	r = ss_check(&ko, &cfg, &cs, err, sizeof(err));
	CHECK(r == -ENOMEM, "check --deep without memory for zstd: %d (%s)", r, err);
	CHECK(fc.damaged == 0 && cs.packs_damaged == 0 && cs.chunks_damaged == 0,
	      "check --deep marked %u pack(s) damaged for want of memory", fc.damaged);
	atomic_store(&dctx_fail, false);

	/* And with memory, all is well. */
	fc = (struct finding_count){0};
	r = ss_check(&ko, &cfg, &cs, err, sizeof(err));
	CHECK(r == 0 && fc.problems == 0, "check --deep: %d (%s)", r, err);
	r = pull(snap, dest, NULL, false, err, sizeof(err));
	CHECK(r == 0, "pull: %s", err);
}

/* ---------------------------------------------------------------- nofile */

static void test_nofile(void)
{
	char src[PATH_MAX], snap[PATH_MAX], dest[PATH_MAX];
	snprintf(src, sizeof(src), "%s/many", base);
	snprintf(snap, sizeof(snap), "%s/snaps/many", base);
	snprintf(dest, sizeof(dest), "%s/manydest", base);
	REQUIRE(mkdir(src, 0755) == 0, "mkdir");
	for (int i = 0; i < 200; i++) {
		char name[32], text[32];
		snprintf(name, sizeof(name), "f%03d", i);
		snprintf(text, sizeof(text), "file %d", i);
		put_file(src, name, text);
	}
	REQUIRE(push(src, snap, NULL, NULL, 0) == 0, "push");
	/* In a child: the soft limit below what the snapshot needs, the hard
	 * one as it was. The library must neither raise it nor hang. */
	pid_t pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		struct rlimit rl;
		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = 100;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			_exit(77);
		char err[1024];
		alarm(60);
		int r = pull(snap, dest, NULL, false, err, sizeof(err));
		struct rlimit after;
		getrlimit(RLIMIT_NOFILE, &after);
		int bad = 0;
		if (r != -EMFILE || !strstr(err, "raise the limit on open files")) {
			fprintf(stderr, "FAIL pull with 100 descriptors: %d (%s)\n", r, err);
			bad = 1;
		}
		if (after.rlim_cur != 100) {
			fprintf(stderr, "FAIL the library changed RLIMIT_NOFILE to %llu\n",
				(unsigned long long)after.rlim_cur);
			bad = 1;
		}
		struct stat st;
		if (lstat(dest, &st) == 0) {
			fprintf(stderr, "FAIL a failed pull left %s\n", dest);
			bad = 1;
		}
		_exit(bad);
	}
	int ws;
	REQUIRE(waitpid(pid, &ws, 0) == pid, "wait");
	CHECK(WIFEXITED(ws) && (WEXITSTATUS(ws) == 0 || WEXITSTATUS(ws) == 77),
	      "pull with a low descriptor limit (status %d)", ws);
}

/* ---------------------------------------------------------------- store */

static void test_store(void)
{
	char src[PATH_MAX], snap[PATH_MAX], other[PATH_MAX], dest[PATH_MAX], err[1024];
	snprintf(src, sizeof(src), "%s/src4", base);
	snprintf(snap, sizeof(snap), "%s/st/s", base);
	snprintf(other, sizeof(other), "%s/other-store", base);
	snprintf(dest, sizeof(dest), "%s/stdest", base);
	REQUIRE(mkdir(src, 0755) == 0, "mkdir");
	put_file(src, "x", "x");
	const struct ss_label_kv labels[] = {{"runsc.version", "1.2"}, {"k", "v"}};
	REQUIRE(push(src, snap, other, labels, 2) == 0, "push");

	/* Its manifest names `other`; the default beside it is st/.snapstream. */
	int r = pull(snap, dest, NULL, false, err, sizeof(err));
	CHECK(r == -EPERM && strstr(err, other) && strstr(err, "st/.snapstream"),
	      "pull refuses the manifest's store: %d (%s)", r, err);
	struct ss_verify_opts vo = {.size = sizeof(struct ss_verify_opts), .snapshot = snap};
	r = ss_verify(&vo, &cfg, NULL, err, sizeof(err));
	CHECK(r == -EPERM && strstr(err, other), "verify refuses: %d (%s)", r, err);
	int devnull = open("/dev/null", O_WRONLY);
	struct ss_cat_opts co = {.size = sizeof(struct ss_cat_opts), .snapshot = snap, .fd = devnull};
	r = ss_cat(&co, &cfg, NULL, err, sizeof(err));
	close(devnull);
	CHECK(r == -EPERM && strstr(err, other), "cat refuses: %d (%s)", r, err);
	struct ss_snapshot_info *in = NULL;
	r = ss_info(snap, NULL, &cfg, &in, err, sizeof(err));
	CHECK(r == -EPERM && !in && strstr(err, other), "info refuses: %d (%s)", r, err);
	char wrong[PATH_MAX];
	snprintf(wrong, sizeof(wrong), "%s/st/.snapstream", base);
	r = ss_info(snap, wrong, &cfg, &in, err, sizeof(err));
	CHECK(r == -EPERM && !in, "info with another store refuses: %d (%s)", r, err);
	struct ss_rm_opts ro = {.size = sizeof(struct ss_rm_opts), .snapshot = snap};
	r = ss_rm(&ro, &cfg, err, sizeof(err));
	CHECK(r == -EPERM, "rm refuses: %d (%s)", r, err);

	/* The same store spelled otherwise is the same store. */
	char spelled[PATH_MAX + 32];
	snprintf(spelled, sizeof(spelled), "file://%s/st/../other-store/", base);
	struct ss_snapshot_info *got = NULL;
	struct ss_pull_opts po = {.size = sizeof(struct ss_pull_opts), .snapshot = snap, .dest = dest, .store = spelled, .info = &got};
	r = ss_pull(&po, &cfg, NULL, err, sizeof(err));
	CHECK(r == 0 && has_file(dest, "x", "x"), "pull with its store: %d (%s)", r, err);
	/* ... and the pull hands back its labels. */
	CHECK(got && got->nlabels == 2 && !strcmp(got->labels[0].key, "runsc.version") &&
		      !strcmp(got->labels[0].value, "1.2") && !strcmp(got->labels[1].value, "v"),
	      "labels from the pull");
	CHECK(got && got->uri && strstr(got->uri, "st/s") && !got->files_v, "info from the pull");
	ss_info_free(got);
	got = NULL;
	r = ss_pull(&po, &cfg, NULL, err, sizeof(err));
	CHECK(r == -EEXIST && !got, "info untouched by a failed pull: %d", r);

	REQUIRE(chdir(base) == 0, "chdir");
	r = ss_info(snap, "other-store", &cfg, &in, err, sizeof(err));
	CHECK(r == 0 && in, "info with its store, relative: %d (%s)", r, err);
	ss_info_free(in);
	vo.store = other;
	r = ss_verify(&vo, &cfg, NULL, err, sizeof(err));
	CHECK(r == 0, "verify with its store: %d (%s)", r, err);
	ro.store = other;
	r = ss_rm(&ro, &cfg, err, sizeof(err));
	CHECK(r == 0, "rm with its store: %d (%s)", r, err);
}

/* With arguments: only the parts named (atomic, deep, oom, nofile, store). */
static bool want(int argc, char **argv, const char *part)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], part))
			return true;
	return argc < 2;
}

/* verify and cat read in file order through units, reused once there are
 * more files than units in flight. A unit of zero runs only (an all-zero
 * file) is never decoded: it must not hash a pointer left from its last
 * use. Many small files, then all-zero ones sorting after them. */
static void test_zero_units(void)
{
	char src[300], snap[300], err[1024] = "";
	snprintf(src, sizeof(src), "%s/zu", base);
	snprintf(snap, sizeof(snap), "%s/snaps/zu", base);
	REQUIRE(mkdir(src, 0755) == 0, "mkdir");
	char name[32], text[2048];
	for (int i = 0; i < 20; i++) {
		for (size_t j = 0; j + 1 < sizeof(text); j++)
			text[j] = (char)('a' + (rnd() % 26));
		text[sizeof(text) - 1] = '\0';
		snprintf(name, sizeof(name), "a%02d", i);
		put_file(src, name, text);
	}
	for (int i = 0; i < 4; i++) {
		char p[400];
		snprintf(p, sizeof(p), "%s/z%d", src, i);
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		REQUIRE(fd >= 0 && ftruncate(fd, 4096 * (i + 1)) == 0, "zero file");
		close(fd);
	}
	REQUIRE(push(src, snap, NULL, NULL, 0) == 0, "push");
	struct ss_verify_opts vo = {.size = sizeof(vo), .snapshot = snap};
	int r = ss_verify(&vo, &cfg, NULL, err, sizeof(err));
	CHECK(r == 0, "verify of zero files after many others: %d %s", r, err);
}

int main(int argc, char **argv)
{
	snprintf(base, sizeof(base), "/tmp/ss-pull.XXXXXX");
	REQUIRE(mkdtemp(base), "mkdtemp");
	if (want(argc, argv, "atomic"))
		test_atomic();
	if (want(argc, argv, "deep"))
		test_deep();
	if (want(argc, argv, "oom"))
		test_oom();
	if (want(argc, argv, "nofile"))
		test_nofile();
	if (want(argc, argv, "store"))
		test_store();
	if (want(argc, argv, "zero-units"))
		test_zero_units();
	nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return failures ? 1 : 0;
}
