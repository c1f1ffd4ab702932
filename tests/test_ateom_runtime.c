/* ateom's runsc binaries by digest (ateom/runtime.h), on a local store:
 * kept in the store once, fetched into the cache verified and executable,
 * and never kept when what the store holds under a digest's name is
 * something else. */
#include "runtime.h"
#include "snapstream.h"

#include "testutil.h"

#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

/* sha256("hello\n") and sha256("other\n"), as sha256sum prints them. */
#define HELLO "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
#define OTHER "7e4fa2eb8c7ac089739d5defc4489fad68a100d92082ca35c6b40a4524821f87"

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	REQUIRE(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
	REQUIRE(chmod(path, mode) == 0, "chmod %s", path);
}

static bool same_file(const char *path, const char *text)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return !strcmp(buf, text);
}

/* Entries of dir other than . and .. */
static int entries(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

int main(void)
{
	char base[] = "/tmp/ss-ateom-rt.XXXXXX", work[PATH_MAX], bin[PATH_MAX], snap[PATH_MAX],
	     snap2[PATH_MAX], obj[PATH_MAX + 128], path[PATH_MAX], cache[PATH_MAX + 16], err[1024],
	     hex[RT_SHA256_HEX + 1];
	REQUIRE(mkdtemp(base), "mkdtemp");
	snprintf(work, sizeof(work), "%s/work", base);
	snprintf(bin, sizeof(bin), "%s/runsc", base);
	snprintf(snap, sizeof(snap), "%s/snaps/actor-1/snap-1", base);
	snprintf(snap2, sizeof(snap2), "%s/snaps/actor-2/snap-1", base);
	snprintf(cache, sizeof(cache), "%s/runsc", work);
	REQUIRE(mkdir(work, 0700) == 0, "mkdir");
	write_file(bin, "hello\n", 0755);

	struct rt_config cfg = {.work_dir = work};
	struct rt *rt = rt_new(&cfg);
	REQUIRE(rt, "rt_new");

	CHECK(rt_digest(rt, bin, hex, err, sizeof(err)) == 0 && !strcmp(hex, HELLO),
	      "digest %s (%s)", hex, err);
	CHECK(rt_digest_ok(HELLO) && !rt_digest_ok("../../bin/sh") && !rt_digest_ok("") &&
	      !rt_digest_ok(HELLO "0") && !rt_digest_ok("5891B5B522D5DF086D0FF0B110FBD9D21BB4FC7163AF34D08286A2E846F6BE03"),
	      "only 64 lower-case hex digits are digests");

	/* Kept in the default store beside the snapshot: <dir>/.snapstream. */
	CHECK(rt_keep(rt, bin, hex, "1.0", snap, err, sizeof(err)) == 0, "keep: %s", err);
	snprintf(obj, sizeof(obj), "%s/snaps/actor-1/.snapstream/runsc/sha256-%s/manifest", base, hex);
	struct stat st1, st2;
	CHECK(stat(obj, &st1) == 0, "the binary is a snapshot at %s", obj);

	/* Once per store: a new server finds it there and pushes nothing. */
	rt_free(rt);
	rt = rt_new(&cfg);
	REQUIRE(rt, "rt_new");
	CHECK(rt_keep(rt, bin, hex, "1.0", snap, err, sizeof(err)) == 0, "keep again: %s", err);
	CHECK(stat(obj, &st2) == 0 && st1.st_ino == st2.st_ino &&
	      st1.st_mtim.tv_nsec == st2.st_mtim.tv_nsec, "kept once, not pushed again");

	/* Fetched into the cache: verified, 0755, under its digest. */
	CHECK(rt_fetch(rt, hex, snap, path, sizeof(path), err, sizeof(err)) == 0, "fetch: %s", err);
	struct stat sc;
	char want[PATH_MAX + 96];
	snprintf(want, sizeof(want), "%s/%s", cache, HELLO);
	CHECK(!strcmp(path, want), "cached at %s", path);
	CHECK(stat(path, &sc) == 0 && (sc.st_mode & 0777) == 0755, "mode %o", sc.st_mode & 0777);
	CHECK(same_file(path, "hello\n"), "the cached copy is the binary");
	CHECK(entries(cache) == 1, "nothing but the binary in the cache");

	/* A cached copy that changed is fetched again. */
	write_file(path, "hellO\n", 0755);
	CHECK(rt_fetch(rt, hex, snap, path, sizeof(path), err, sizeof(err)) == 0 &&
	      same_file(path, "hello\n"), "a damaged cached copy is replaced: %s", err);

	/* Another store (another directory) does not have it. */
	CHECK(rt_fetch(rt, hex, snap2, path, sizeof(path), err, sizeof(err)) == 0,
	      "the cache answers first: %s", err);
	CHECK(rt_fetch(rt, OTHER, snap2, path, sizeof(path), err, sizeof(err)) == -ENOENT,
	      "a digest the store does not hold: %s", err);
	CHECK(entries(cache) == 1, "nothing kept from a failed fetch");

	/* The store holds something else under a digest's name: refused. */
	snprintf(obj, sizeof(obj), "%s/snaps/actor-1/.snapstream/runsc/sha256-%s", base, OTHER);
	char store[PATH_MAX + 32];
	snprintf(store, sizeof(store), "%s/snaps/actor-1/.snapstream", base);
	struct ss_push_opts po = SS_PUSH_OPTS_INIT;
	po.snapshot = obj;
	po.store = store;
	struct ss_config sc_cfg = SS_CONFIG_INIT;
	struct ss_stats sst = SS_STATS_INIT;
	int fd = open(bin, O_RDONLY);
	REQUIRE(fd >= 0 && ss_push_fd(&po, fd, "runsc", &sc_cfg, &sst, err, sizeof(err)) == 0,
		"push: %s", err);
	close(fd);
	int r = rt_fetch(rt, OTHER, snap, path, sizeof(path), err, sizeof(err));
	CHECK(r == -EBADMSG && strstr(err, HELLO) && strstr(err, OTHER),
	      "a binary whose digest does not match: %d %s", r, err);
	snprintf(want, sizeof(want), "%s/%s", cache, OTHER);
	CHECK(access(want, F_OK) < 0 && entries(cache) == 1, "and it is not kept");

	CHECK(rt_fetch(rt, "../../../bin/sh", snap, path, sizeof(path), err, sizeof(err)) ==
		      -EINVAL, "a digest that is a path: %s", err);

	/* --store: the binary goes there whatever the snapshot's directory. */
	char explicit_store[PATH_MAX + 16];
	snprintf(explicit_store, sizeof(explicit_store), "%s/store", base);
	struct rt_config cfg2 = {.work_dir = work, .store = explicit_store};
	struct rt *rt2 = rt_new(&cfg2);
	REQUIRE(rt2, "rt_new");
	CHECK(rt_keep(rt2, bin, hex, "1.0", snap2, err, sizeof(err)) == 0, "keep: %s", err);
	snprintf(obj, sizeof(obj), "%s/runsc/sha256-%s/manifest", explicit_store, hex);
	CHECK(access(obj, F_OK) == 0, "kept in --store: %s", obj);
	rt_free(rt2);
	rt_free(rt);

	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", base);
	return failures ? 1 : 0;
}
