/* The public API as an installed program sees it: linked against the
 * shared library (its exported symbols only) and snapstream.h alone.
 *
 *  - ss_version() is meson's project version (argv[1]);
 *  - size-tagged structs: an unset or too small size is refused, a larger
 *    one whose unknown tail is zero works, one that sets unknown fields is
 *    -E2BIG; stats are written as far as the caller's size and no further;
 *  - what the library hands out carries its size: ss_ls entries (an array
 *    of pointers), ss_info files, progress reports, check findings;
 *  - object stores are configured from ss_config.env alone, never from the
 *    process environment; mem:// is not reachable from here;
 *  - ss_prepare_fds raises the soft descriptor limit to the hard one and
 *    leaves no descriptor behind;
 *  - ss_config.buffers: pushes and pulls through one resident pool, its
 *    memory dirty from the calls before and shared by calls at once, or
 *    too small so that calls map what does not fit, give back the bytes
 *    pushed; sizes out of range are refused. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapstream.h"

#include "testutil.h"

static char dir[256];
static char img[300], snap[300], snap2[300], store[300];

static void test_version(const char *want)
{
	CHECK(strcmp(ss_version(), want) == 0, "ss_version() is '%s', meson says '%s'",
	      ss_version(), want);
}

static unsigned progress_calls, progress_bad;

static void on_progress(void *arg, const struct ss_progress *p)
{
	(void)arg;
	progress_calls++;
	if (p->size != sizeof(*p) || !SS_HAS(ss_progress, p, items_total))
		progress_bad++;
}

static void test_sizes(void)
{
	char err[512];
	struct ss_config cfg = SS_CONFIG_INIT;
	cfg.no_fsync = true;
	cfg.threads = 2;

	/* A caller that never set size: refused before anything happens. */
	struct ss_push_opts bad = {.source = img, .snapshot = snap, .store = store};
	struct ss_stats st = SS_STATS_INIT;
	int r = ss_push(&bad, &cfg, &st, err, sizeof(err));
	CHECK(r == -EINVAL && strstr(err, "ss_push_opts") && strstr(err, "INIT"),
	      "unset size: %d %s", r, err);
	struct stat sb;
	CHECK(stat(snap, &sb) < 0, "a refused push left %s behind", snap);

	struct ss_config zero = {0};
	struct ss_push_opts o = SS_PUSH_OPTS_INIT;
	o.source = img;
	o.snapshot = snap;
	o.store = store;
	r = ss_push(&o, &zero, &st, err, sizeof(err));
	CHECK(r == -EINVAL && strstr(err, "ss_config"), "config without size: %d %s", r, err);
	struct ss_stats st0 = {.size = sizeof(size_t)};
	r = ss_push(&o, &cfg, &st0, err, sizeof(err));
	CHECK(r == -EINVAL && strstr(err, "ss_stats"), "stats too small: %d %s", r, err);

	/* A caller built against a newer header: a zero tail is fine... */
	struct {
		struct ss_push_opts o;
		char later[64];
	} big = {.o = o};
	big.o.size = sizeof(big);
	struct {
		struct ss_stats st;
		unsigned char later[64];
	} bst;
	memset(&bst, 0xaa, sizeof(bst));
	bst.st.size = sizeof(bst);
	cfg.progress = on_progress;
	r = ss_push(&big.o, &cfg, &bst.st, err, sizeof(err));
	cfg.progress = NULL;
	CHECK(r == 0, "push with a larger zero-tailed opts: %d %s", r, err);
	CHECK(bst.st.size == sizeof(bst), "the library changed the caller's size");
	CHECK(bst.st.files == 1 && bst.st.logical_bytes == 3u << 20, "stats not filled: %llu %llu",
	      (unsigned long long)bst.st.files, (unsigned long long)bst.st.logical_bytes);
	bool zeroed = true;
	for (size_t i = 0; i < sizeof(bst.later); i++)
		zeroed = zeroed && bst.later[i] == 0;
	CHECK(zeroed, "fields the library does not know were not zeroed");
	CHECK(progress_calls > 0 && progress_bad == 0, "progress: %u calls, %u without size",
	      progress_calls, progress_bad);

	/* ... one that sets a field this library does not know is refused. */
	big.later[17] = 1;
	big.o.snapshot = snap2;
	r = ss_push(&big.o, &cfg, &st, err, sizeof(err));
	CHECK(r == -E2BIG && strstr(err, "does not know"), "unknown field set: %d %s", r, err);
	CHECK(stat(snap2, &sb) < 0, "a refused push left %s behind", snap2);

	/* Stats smaller than the library's are written only as far as their
	 * size: what lies beyond is the caller's. */
	struct ss_verify_opts vo = {.size = sizeof(vo), .snapshot = snap, .store = store};
	unsigned char buf[sizeof(struct ss_stats) + 32];
	memset(buf, 0x55, sizeof(buf));
	struct ss_stats *vs = (struct ss_stats *)buf;
	vs->size = sizeof(struct ss_stats);
	r = ss_verify(&vo, &cfg, vs, err, sizeof(err));
	CHECK(r == 0 && vs->files == 1, "verify: %d %s", r, err);
	bool kept = true;
	for (size_t i = sizeof(struct ss_stats); i < sizeof(buf); i++)
		kept = kept && buf[i] == 0x55;
	CHECK(kept, "the library wrote past the caller's stats");
}

static void test_outputs(void)
{
	char err[512];
	struct ss_config cfg = SS_CONFIG_INIT;
	struct ss_snapshot_info *in = NULL;
	int r = ss_info(snap, NULL, &cfg, &in, err, sizeof(err));
	REQUIRE(r == 0, "info: %d %s", r, err);
	CHECK(in->size == sizeof(*in) && SS_HAS(ss_snapshot_info, in, error_code), "info size %zu",
	      in->size);
	CHECK(in->nfiles_v == 1 && in->files_v[0]->size == sizeof(struct ss_file_info) &&
		      in->files_v[0]->bytes == 3u << 20,
	      "info files");
	ss_info_free(in);

	struct ss_ls_opts lo = SS_LS_OPTS_INIT;
	lo.prefix = dir;
	struct ss_snapshot_info **v = NULL;
	size_t n = 0;
	r = ss_ls(&lo, &cfg, &v, &n, err, sizeof(err));
	REQUIRE(r == 0, "ls: %d %s", r, err);
	CHECK(n == 1 && v[0]->size == sizeof(*v[0]) && strstr(v[0]->uri, "/snap"), "ls: %zu", n);
	ss_ls_free(v, n);
	ss_ls_free(NULL, 0);
}

static unsigned findings, findings_bad;

static void on_finding(void *arg, const struct ss_check_finding *f)
{
	(void)arg;
	findings++;
	if (f->size != sizeof(*f) || !SS_HAS(ss_check_finding, f, message))
		findings_bad++;
}

static void test_check_findings(void)
{
	/* An object under packs/ that is no pack: a note. */
	char path[400];
	snprintf(path, sizeof(path), "%s/packs/zz", store);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/packs/zz/stray", store);
	FILE *f = fopen(path, "w");
	REQUIRE(f && fputs("not a pack", f) >= 0 && fclose(f) == 0, "stray");
	char err[512];
	struct ss_config cfg = SS_CONFIG_INIT;
	struct ss_check_opts o = SS_CHECK_OPTS_INIT;
	o.store = store;
	o.on_finding = on_finding;
	struct ss_check_stats st = SS_CHECK_STATS_INIT;
	int r = ss_check(&o, &cfg, &st, err, sizeof(err));
	CHECK(r == 0 || r == -EBADMSG, "check: %d %s", r, err);
	CHECK(findings > 0 && findings_bad == 0, "findings: %u, %u without size", findings,
	      findings_bad);
	CHECK(st.packs >= 1, "check stats not filled");
	unlink(path);
}

/* Object stores see ss_config.env and nothing else. */
static void test_env(void)
{
	char err[512];
	/* The process environment says everything a store needs... */
	setenv("AWS_ACCESS_KEY_ID", "AKIDPROCESS", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "process-secret", 1);
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9", 1);
	setenv("SNAPSTREAM_RETRY_MAX", "not-a-number", 1);
	setenv("HOME", dir, 1);   /* no ~/.aws there */

	/* ... and a call with no block sees none of it. */
	struct ss_config cfg = SS_CONFIG_INIT;
	struct ss_snapshot_info *in = NULL;
	int r = ss_info("s3://ss-api-test/snap", NULL, &cfg, &in, err, sizeof(err));
	CHECK(r == -EACCES && strstr(err, "no AWS credentials"),
	      "without a block the library found credentials: %d %s", r, err);

	/* A block is read: its malformed value is reported... */
	const char *const bad[] = {"AWS_ACCESS_KEY_ID=AKIDBLOCK", "AWS_SECRET_ACCESS_KEY=x",
				   "SNAPSTREAM_RETRY_MAX=0", NULL};
	cfg.env = bad;
	r = ss_info("s3://ss-api-test/snap", NULL, &cfg, &in, err, sizeof(err));
	CHECK(r == -EINVAL && strstr(err, "SNAPSTREAM_RETRY_MAX=0"), "block not read: %d %s", r,
	      err);

	/* ... and its endpoint is the one tried (nothing listens on port 9). */
	const char *const good[] = {"AWS_ACCESS_KEY_ID=AKIDBLOCK", "AWS_SECRET_ACCESS_KEY=x",
				    "AWS_ENDPOINT_URL=http://127.0.0.1:9", "SNAPSTREAM_RETRY_MAX=1",
				    "SNAPSTREAM_RETRY_SECONDS=2", NULL};
	cfg.env = good;
	r = ss_info("s3://ss-api-test/snap", NULL, &cfg, &in, err, sizeof(err));
	CHECK(r < 0 && r != -EACCES && r != -EINVAL && strstr(err, "127.0.0.1"),
	      "the block's endpoint was not used: %d %s", r, err);

	/* mem:// belongs to the tests' private interface. */
	cfg.env = NULL;
	r = ss_info("mem://x/snap", NULL, &cfg, &in, err, sizeof(err));
	CHECK(r == -EINVAL, "mem:// reachable through the public API: %d %s", r, err);
}

static void test_prepare_fds(void)
{
	struct rlimit rl;
	REQUIRE(getrlimit(RLIMIT_NOFILE, &rl) == 0, "getrlimit");
	if (rl.rlim_max > 64) {
		rl.rlim_cur = 64;
		REQUIRE(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit");
	}
	int before = open("/dev/null", O_RDONLY);
	REQUIRE(before >= 0, "open /dev/null");
	close(before);
	ss_prepare_fds(4096);
	struct rlimit now;
	REQUIRE(getrlimit(RLIMIT_NOFILE, &now) == 0, "getrlimit");
	CHECK(now.rlim_cur == now.rlim_max, "soft limit %llu, hard %llu: not raised",
	      (unsigned long long)now.rlim_cur, (unsigned long long)now.rlim_max);
	int after = open("/dev/null", O_RDONLY);
	CHECK(after == before, "ss_prepare_fds left a descriptor open (next is %d, was %d)", after,
	      before);
	if (after >= 0)
		close(after);
	/* Within the limit: a descriptor up there is still free to take. */
	if (now.rlim_cur >= 4096) {
		int hi = fcntl(0, F_DUPFD, 4095);
		CHECK(hi == 4095, "descriptor 4095 is taken (got %d)", hi);
		if (hi >= 0)
			close(hi);
	}
}

static bool same_file(const char *a, const char *b)
{
	FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
	bool same = fa && fb;
	while (same) {
		int x = fgetc(fa), y = fgetc(fb);
		same = x == y;
		if (x == EOF)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return same;
}

struct pooled {
	struct ss_buffers *pool;
	const char *image;
	char snap[320], out[320];
	int r;
	char err[512];
};

/* Push image into a new snapshot and pull it back, through pool. */
static void *pooled_run(void *arg)
{
	struct pooled *p = arg;
	struct ss_config cfg = SS_CONFIG_INIT;
	cfg.no_fsync = true;
	cfg.threads = 2;
	cfg.buffers = p->pool;
	struct ss_push_opts po = SS_PUSH_OPTS_INIT;
	po.source = p->image;
	po.snapshot = p->snap;
	po.store = store;
	struct ss_stats st = SS_STATS_INIT;
	p->r = ss_push(&po, &cfg, &st, p->err, sizeof(p->err));
	if (p->r)
		return NULL;
	struct ss_pull_opts lo = SS_PULL_OPTS_INIT;
	lo.snapshot = p->snap;
	lo.dest = p->out;
	lo.store = store;
	struct ss_stats st2 = SS_STATS_INIT;
	p->r = ss_pull(&lo, &cfg, &st2, p->err, sizeof(p->err));
	return NULL;
}

static void test_buffers(void)
{
	struct ss_buffers *pool = (struct ss_buffers *)&pool;
	CHECK(ss_buffers_new(0, &pool) == -EINVAL && pool == NULL, "a pool of 0 bytes");
	CHECK(ss_buffers_new(1u << 20, &pool) == -EINVAL && pool == NULL, "a pool below 2 MiB");
	ss_buffers_free(NULL);

	char big[320];
	snprintf(big, sizeof(big), "%s/img-big", dir);
	write_image(big, 40u << 20);
	/* 64 MiB holds some of the buffers of two calls at once, not all:
	 * both the pool's blocks and mappings of their own are used. */
	const size_t sizes[] = {64u << 20, 2u << 20};
	for (unsigned k = 0; k < 2; k++) {
		int r = ss_buffers_new(sizes[k], &pool);
		REQUIRE(r == 0 && pool, "ss_buffers_new: %d", r);
		struct pooled p[4];
		memset(p, 0, sizeof(p));
		for (unsigned i = 0; i < 4; i++) {
			p[i].pool = pool;
			/* The big image first: what the small one's calls get
			 * back from the pool holds its bytes. */
			p[i].image = i % 2 ? img : big;
			snprintf(p[i].snap, sizeof(p[i].snap), "%s/pooled-%u-%u", dir, k, i);
			snprintf(p[i].out, sizeof(p[i].out), "%s/pooled-out-%u-%u", dir, k, i);
		}
		/* One after another, then two at once. */
		pooled_run(&p[0]);
		pooled_run(&p[1]);
		pthread_t th[2];
		for (unsigned i = 0; i < 2; i++)
			REQUIRE(pthread_create(&th[i], NULL, pooled_run, &p[2 + i]) == 0, "thread");
		for (unsigned i = 0; i < 2; i++)
			pthread_join(th[i], NULL);
		for (unsigned i = 0; i < 4; i++) {
			CHECK(p[i].r == 0, "pool %zu MiB, call %u: %d %s", sizes[k] >> 20, i, p[i].r,
			      p[i].err);
			CHECK(p[i].r || same_file(p[i].image, p[i].out),
			      "pool %zu MiB, call %u: %s differs from %s", sizes[k] >> 20, i,
			      p[i].out, p[i].image);
		}
		ss_buffers_free(pool);
	}
}

int main(int argc, char **argv)
{
	REQUIRE(argc == 2, "usage: test_api <meson project version>");
	snprintf(dir, sizeof(dir), "%s/ss-api-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	REQUIRE(mkdtemp(dir), "mkdtemp");
	snprintf(img, sizeof(img), "%s/img", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	snprintf(snap2, sizeof(snap2), "%s/snap2", dir);
	snprintf(store, sizeof(store), "%s/.snapstream", dir);
	write_image(img, 3u << 20);

	test_version(argv[1]);
	test_sizes();
	test_outputs();
	test_check_findings();
	test_env();
	test_prepare_fds();
	test_buffers();

	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		failures++;
	if (failures)
		fprintf(stderr, "%d failure(s)\n", failures);
	return failures ? 1 : 0;
}
