/* Engine tests: push and pull round trips through the in-memory store and
 * a local directory store, dedup, interrupted pushes, corruption, sparse
 * output, and refusing to overwrite. Exit 0 pass, 1 fail. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "snapstream.h"

static int failures;

#define CHECK(cond, ...)                                                                   \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
			fprintf(stderr, __VA_ARGS__);                                      \
			fprintf(stderr, "\n");                                             \
			failures++;                                                        \
		}                                                                          \
	} while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static char root[256];

static void path_of(char *out, size_t n, const char *fmt, ...)
{
	char rel[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(out, n, "%s/%s", root, rel);
}

/* kind: 0 zero, 1 random, 2 text-like, 3 memory-like mix. */
static void write_file(const char *path, size_t size, int kind, unsigned mode)
{
	uint8_t *b = calloc(1, size ? size : 1);
	for (size_t i = 0; i < size; i += 4096) {
		size_t n = size - i < 4096 ? size - i : 4096;
		int k = kind == 3 ? (int)(rnd() % 3) : kind;
		for (size_t j = 0; j < n; j++) {
			if (k == 1)
				b[i + j] = (uint8_t)rnd();
			else if (k == 2)
				b[i + j] = (uint8_t)("snapshot page "[(i / 4096 + j) % 14]);
		}
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0 || write(fd, b, size) != (ssize_t)size) {
		perror(path);
		exit(1);
	}
	fchmod(fd, mode);
	close(fd);
	free(b);
}

static int same_file(const char *a, const char *b)
{
	FILE *x = fopen(a, "rb"), *y = fopen(b, "rb");
	int same = x && y;
	while (same) {
		int c = fgetc(x), d = fgetc(y);
		if (c != d)
			same = 0;
		if (c == EOF || d == EOF)
			break;
	}
	if (x)
		fclose(x);
	if (y)
		fclose(y);
	return same;
}

static const struct {
	const char *name;
	size_t size;
	int kind;
	unsigned mode;
} files[] = {
	{"checkpoint.img", 3 * 4096 + 5, 2, 0640},
	{"pages.img", 8u << 20, 3, 0600},
	{"pages_meta.img", 4097, 2, 0644},
	{"empty", 0, 0, 0644},
	{"one", 1, 1, 0444},
	{"page-minus-one", 4095, 1, 0644},
	{"zeros", (1u << 20) + 123, 0, 0644},
	{"random.bin", 3u << 20, 1, 0755},
	{"sub/dir/nested", 70000, 3, 0644},
};

static void make_tree(const char *dir)
{
	char p[2100];
	mkdir(dir, 0755);
	snprintf(p, sizeof(p), "%s/sub", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/sub/dir", dir);
	mkdir(p, 0755);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i].name);
		write_file(p, files[i].size, files[i].kind, files[i].mode);
	}
}

static void check_tree(const char *src, const char *dst)
{
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char a[1024], b[1024];
		snprintf(a, sizeof(a), "%s/%s", src, files[i].name);
		snprintf(b, sizeof(b), "%s/%s", dst, files[i].name);
		struct stat sa, sb;
		CHECK(stat(b, &sb) == 0, "%s missing", b);
		stat(a, &sa);
		CHECK(sa.st_size == sb.st_size, "%s size %lld != %lld", b, (long long)sb.st_size,
		      (long long)sa.st_size);
		CHECK((sa.st_mode & 07777) == (sb.st_mode & 07777), "%s mode %o != %o", b,
		      sb.st_mode & 07777, sa.st_mode & 07777);
		CHECK(sa.st_mtim.tv_sec == sb.st_mtim.tv_sec, "%s mtime differs", b);
		CHECK(same_file(a, b), "%s bytes differ", b);
	}
}

static void rm_rf(const char *p)
{
	char cmd[2100];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p);
	if (system(cmd) != 0)
		exit(1);
}

static struct ss_config cfg_base(struct ss_memstore *m)
{
	struct ss_config c = {0};
	c.mem = m;
	c.no_fsync = true;
	c.pack_size = 1u << 20;   /* several packs even for small trees */
	c.threads = 2;
	return c;
}

static void test_mem_roundtrip(void)
{
	struct ss_memstore *m = ss_memstore_new();
	struct ss_config cfg = cfg_base(m);
	char src[1024], dst[1024], err[1024];
	path_of(src, sizeof(src), "tree");
	path_of(dst, sizeof(dst), "out-mem");
	struct ss_push_opts po = {.source = src, .snapshot = "mem://snaps/a"};
	struct ss_stats st;
	int r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "push: %s", err);
	CHECK(st.files == 9, "files %llu", (unsigned long long)st.files);
	CHECK(st.zero_bytes >= (1u << 20), "zero runs not found: %llu",
	      (unsigned long long)st.zero_bytes);
	CHECK(st.packs >= 2, "expected several packs, got %llu", (unsigned long long)st.packs);
	CHECK(st.new_stored_bytes < st.new_raw_bytes, "nothing compressed");

	struct ss_pull_opts pl = {.snapshot = "mem://snaps/a", .dest = dst};
	r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "pull: %s", err);
	check_tree(src, dst);

	/* The same tree again stores no chunk data at all. */
	po.snapshot = "mem://snaps/b";
	r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "second push: %s", err);
	CHECK(st.new_chunks == 0 && st.new_stored_bytes == 0 && st.packs == 0,
	      "second push stored %llu chunks", (unsigned long long)st.new_chunks);

	/* An existing snapshot is not replaced without force. */
	r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == -EEXIST, "push over an existing snapshot: %d", r);
	CHECK(strstr(err, "already exists") != NULL, "message: %s", err);
	po.force = true;
	r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "forced push: %s", err);

	/* Pulling onto an existing destination is refused. */
	r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -EEXIST, "pull over existing dest: %d", r);

	/* A missing snapshot is -ENOENT and says which. */
	pl.snapshot = "mem://snaps/nope";
	r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -ENOENT && strstr(err, "mem://snaps/nope"), "missing snapshot: %d %s", r, err);
	rm_rf(dst);
	ss_memstore_free(m);
}

/* A push that dies after storing packs leaves no snapshot; the next push
 * reuses those packs instead of uploading again. */
static void test_interrupted_push(void)
{
	struct ss_memstore *m = ss_memstore_new();
	struct ss_config cfg = cfg_base(m);
	char src[1024], err[1024];
	path_of(src, sizeof(src), "tree");
	struct ss_push_opts po = {.source = src, .snapshot = "mem://snaps/i"};
	struct ss_stats st, st1;

	/* Learn how many packs a full push writes. */
	struct ss_memstore *probe = ss_memstore_new();
	struct ss_config pc = cfg_base(probe);
	CHECK(ss_push(&po, &pc, &st1, err, sizeof(err)) == 0, "probe push: %s", err);
	ss_memstore_free(probe);

	/* Every pack goes in, then the index put fails. */
	ss_memstore_fail(m, SS_REQ_PUT, (unsigned)st1.packs, 1, -EIO);
	int r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == -EIO, "push should fail: %d", r);
	CHECK(st.packs == st1.packs, "packs written before failing: %llu",
	      (unsigned long long)st.packs);

	char dst[1024];
	path_of(dst, sizeof(dst), "out-int");
	struct ss_pull_opts pl = {.snapshot = "mem://snaps/i", .dest = dst};
	r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -ENOENT, "no snapshot may be visible after a failed push: %d", r);

	r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "rerun: %s", err);
	CHECK(st.new_stored_bytes == 0, "rerun uploaded %llu bytes again",
	      (unsigned long long)st.new_stored_bytes);
	r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "pull after rerun: %s", err);
	check_tree(src, dst);
	rm_rf(dst);

	/* A failure in the middle of the packs: the rerun uploads the rest. */
	struct ss_memstore *m2 = ss_memstore_new();
	struct ss_config c2 = cfg_base(m2);
	ss_memstore_fail(m2, SS_REQ_PUT, 1, 1, -EIO);
	r = ss_push(&po, &c2, &st, err, sizeof(err));
	CHECK(r == -EIO, "push should fail: %d", r);
	r = ss_push(&po, &c2, &st, err, sizeof(err));
	CHECK(r == 0, "rerun: %s", err);
	CHECK(st.new_stored_bytes < st1.new_stored_bytes,
	      "rerun should reuse the first pack: %llu vs %llu",
	      (unsigned long long)st.new_stored_bytes, (unsigned long long)st1.new_stored_bytes);
	ss_memstore_free(m2);
	ss_memstore_free(m);
}

static int find_pack(const char *dir, char *out, size_t n)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	struct dirent *de;
	int found = -1;
	while (found && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char p[2100];
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		struct stat st;
		stat(p, &st);
		if (S_ISDIR(st.st_mode))
			found = find_pack(p, out, n);
		else if (st.st_size > (1 << 16)) {
			snprintf(out, n, "%s", p);
			found = 0;
		}
	}
	closedir(d);
	return found;
}

static void test_local_store_corruption(void)
{
	struct ss_config cfg = cfg_base(NULL);
	cfg.pack_size = 0;
	char src[1024], snap[1024], dst[1024], err[1024];
	path_of(src, sizeof(src), "tree/random.bin");
	path_of(snap, sizeof(snap), "local/snaps/r1");
	path_of(dst, sizeof(dst), "out-local.bin");
	struct ss_push_opts po = {.source = src, .snapshot = snap};
	struct ss_stats st;
	int r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "local push: %s", err);
	struct ss_pull_opts pl = {.snapshot = snap, .dest = dst};
	r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "local pull: %s", err);
	CHECK(same_file(src, dst), "local round trip differs");
	unlink(dst);

	/* Flip one byte in the middle of the pack's chunk data. */
	char packs[1024], pack[2100];
	path_of(packs, sizeof(packs), "local/snaps/.snapstream/packs");
	CHECK(find_pack(packs, pack, sizeof(pack)) == 0, "no pack under %s", packs);
	int fd = open(pack, O_RDWR);
	uint8_t b;
	off_t at = 1 << 20;
	CHECK(pread(fd, &b, 1, at) == 1, "read pack");
	b ^= 0x40;
	CHECK(pwrite(fd, &b, 1, at) == 1, "write pack");
	close(fd);
	r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -EBADMSG, "corrupted pull should fail with -EBADMSG: %d (%s)", r, err);
	CHECK(strstr(err, "random.bin") && strstr(err, "offset"),
	      "error should name the file and offset: %s", err);
	struct stat sb;
	CHECK(stat(dst, &sb) < 0 && errno == ENOENT, "destination must not exist after failure");
	/* Nothing left beside it either. */
	char parent[1024], cmd[2200];
	path_of(parent, sizeof(parent), ".");
	snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q ss-tmp", parent);
	CHECK(system(cmd) != 0, "temporary files left behind");
}

static void test_sparse_and_default_store(void)
{
	struct ss_config cfg = cfg_base(NULL);
	char src[1024], snap[1024], dst[1024], store[1024], err[1024];
	path_of(src, sizeof(src), "tree/zeros");
	path_of(snap, sizeof(snap), "sparse/s");
	path_of(dst, sizeof(dst), "sparse-out");
	struct ss_push_opts po = {.source = src, .snapshot = snap};
	struct ss_stats st;
	CHECK(ss_push(&po, &cfg, &st, err, sizeof(err)) == 0, "push zeros: %s", err);
	CHECK(st.new_chunks <= 1, "an all-zero file stores at most its odd tail: %llu",
	      (unsigned long long)st.new_chunks);
	path_of(store, sizeof(store), "sparse/.snapstream/refs");
	struct stat sb;
	CHECK(stat(store, &sb) == 0, "default store beside the snapshot is missing");
	struct ss_pull_opts pl = {.snapshot = snap, .dest = dst};
	CHECK(ss_pull(&pl, &cfg, &st, err, sizeof(err)) == 0, "pull zeros: %s", err);
	CHECK(same_file(src, dst), "zeros differ");
	stat(dst, &sb);
	CHECK((uint64_t)sb.st_blocks * 512 < 64 * 1024, "output is not sparse: %lld blocks",
	      (long long)sb.st_blocks);
}

static void test_bad_inputs(void)
{
	struct ss_config cfg = cfg_base(NULL);
	char err[1024], snap[1024], dst[1024];
	struct ss_stats st;
	path_of(snap, sizeof(snap), "bad/s");
	struct ss_push_opts po = {.source = "/nonexistent/file", .snapshot = snap};
	CHECK(ss_push(&po, &cfg, &st, err, sizeof(err)) == -ENOENT, "missing source");
	po.source = "/dev/null";
	CHECK(ss_push(&po, &cfg, &st, err, sizeof(err)) == -EINVAL, "device as source: %s", err);

	/* A manifest that is garbage is an integrity error, not a crash. */
	char dir[1024], mf[2100];
	path_of(dir, sizeof(dir), "bad/g");
	mkdir(dir, 0755);
	snprintf(mf, sizeof(mf), "%s/manifest", dir);
	write_file(mf, 1000, 1, 0644);
	path_of(dst, sizeof(dst), "bad-out");
	struct ss_pull_opts pl = {.snapshot = dir, .dest = dst};
	int r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -EBADMSG, "garbage manifest: %d %s", r, err);

	struct ss_config bad = cfg;
	bad.chunk_avg = 1000;   /* not a power of two */
	po.source = mf;
	CHECK(ss_push(&po, &bad, &st, err, sizeof(err)) == -EINVAL, "bad chunk size accepted");
}

int main(void)
{
	snprintf(root, sizeof(root), "%s/ss-engine-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	char tree[1024], dir[1024];
	path_of(tree, sizeof(tree), "tree");
	make_tree(tree);
	path_of(dir, sizeof(dir), "bad");
	mkdir(dir, 0755);

	test_mem_roundtrip();
	test_interrupted_push();
	test_local_store_corruption();
	test_sparse_and_default_store();
	test_bad_inputs();

	rm_rf(root);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("engine: all checks passed\n");
	return 0;
}
