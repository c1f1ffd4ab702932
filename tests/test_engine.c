/* Engine tests: push and pull round trips through the in-memory store and
 * a local directory store, dedup, interrupted pushes, corruption, sparse
 * sources and output, and refusing to overwrite; the growable arrays
 * (ss_grow) the engine's tables are built on. Exit 0 pass, 1 fail. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"   /* the entry points behind api.c, for mem:// */

#include "testutil.h"

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

static struct ss_config_in cfg_base(struct ss_memstore *m)
{
	struct ss_config_in c = {0};
	c.mem = m;
	c.pub.no_fsync = true;
	c.pub.pack_size = 1u << 20;   /* several packs even for small trees */
	c.pub.threads = 2;
	return c;
}

static void test_mem_roundtrip(void)
{
	struct ss_memstore *m = ss_memstore_new();
	struct ss_config_in cfg = cfg_base(m);
	char src[1024], dst[1024], err[1024];
	path_of(src, sizeof(src), "tree");
	path_of(dst, sizeof(dst), "out-mem");
	struct ss_push_opts po = {.source = src, .snapshot = "mem://snaps/a"};
	struct ss_stats st;
	int r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "push: %s", err);
	CHECK(st.files == 9, "files %llu", (unsigned long long)st.files);
	CHECK(st.zero_bytes >= (1u << 20), "zero runs not found: %llu",
	      (unsigned long long)st.zero_bytes);
	CHECK(st.packs >= 2, "expected several packs, got %llu", (unsigned long long)st.packs);
	CHECK(st.new_stored_bytes < st.new_raw_bytes, "nothing compressed");

	struct ss_pull_opts pl = {.snapshot = "mem://snaps/a", .dest = dst};
	r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "pull: %s", err);
	check_tree(src, dst);

	/* The same tree again stores no chunk data at all. */
	po.snapshot = "mem://snaps/b";
	r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "second push: %s", err);
	CHECK(st.new_chunks == 0 && st.new_stored_bytes == 0 && st.packs == 0,
	      "second push stored %llu chunks", (unsigned long long)st.new_chunks);

	/* An existing snapshot is not replaced without force. */
	r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == -EEXIST, "push over an existing snapshot: %d", r);
	CHECK(strstr(err, "already exists") != NULL, "message: %s", err);
	po.force = true;
	r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "forced push: %s", err);

	/* Pulling onto an existing destination is refused. */
	r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -EEXIST, "pull over existing dest: %d", r);

	/* A missing snapshot is -ENOENT and says which. */
	pl.snapshot = "mem://snaps/nope";
	r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -ENOENT && strstr(err, "mem://snaps/nope"), "missing snapshot: %d %s", r, err);
	rm_rf(dst);
	ss_memstore_free(m);
}

/* A push that dies after storing packs leaves no snapshot; the next push
 * reuses those packs instead of uploading again. */
static void test_interrupted_push(void)
{
	struct ss_memstore *m = ss_memstore_new();
	struct ss_config_in cfg = cfg_base(m);
	char src[1024], err[1024];
	path_of(src, sizeof(src), "tree");
	struct ss_push_opts po = {.source = src, .snapshot = "mem://snaps/i"};
	struct ss_stats st, st1;

	/* A full push into an empty store, for comparison. */
	struct ss_memstore *probe = ss_memstore_new();
	struct ss_config_in pc = cfg_base(probe);
	CHECK(ss_push_impl(&po, &pc, &st1, err, sizeof(err)) == 0, "probe push: %s", err);
	ss_memstore_free(probe);

	/* Every pack goes in, then the index put fails. */
	ss_memstore_fail(m, SS_REQ_PUT, "index/", 0, 1, -EIO);
	int r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == -EIO, "push should fail: %d", r);
	/* Which worker stores a repeated chunk first varies, and so does the
	 * make-up of frames and their compressed size; the chunks do not. */
	CHECK(st.packs >= 2 && st.new_chunks == st1.new_chunks,
	      "all packs stored before failing: %llu packs, %llu of %llu chunks",
	      (unsigned long long)st.packs, (unsigned long long)st.new_chunks,
	      (unsigned long long)st1.new_chunks);

	char dst[1024];
	path_of(dst, sizeof(dst), "out-int");
	struct ss_pull_opts pl = {.snapshot = "mem://snaps/i", .dest = dst};
	r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -ENOENT, "no snapshot may be visible after a failed push: %d", r);

	r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "rerun: %s", err);
	CHECK(st.new_stored_bytes == 0, "rerun uploaded %llu bytes again",
	      (unsigned long long)st.new_stored_bytes);
	r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "pull after rerun: %s", err);
	check_tree(src, dst);
	rm_rf(dst);

	/* A failure in the middle of the packs: the rerun uploads the rest. */
	struct ss_memstore *m2 = ss_memstore_new();
	struct ss_config_in c2 = cfg_base(m2);
	ss_memstore_fail(m2, SS_REQ_PUT, "packs/", 1, 1, -EIO);
	struct ss_stats stf;
	r = ss_push_impl(&po, &c2, &stf, err, sizeof(err));
	CHECK(r == -EIO, "push should fail: %d", r);
	r = ss_push_impl(&po, &c2, &st, err, sizeof(err));
	CHECK(r == 0, "rerun: %s", err);
	/* Chunks, not bytes: frames and their compressed size vary from run
	 * to run, by more than a small first pack holds. Whether the first
	 * pack landed before the second one's failure stopped the push
	 * depends on how their PUTs overlapped. */
	CHECK(stf.packs == 0 || st.new_chunks < st1.new_chunks,
	      "rerun should reuse the %llu pack(s) that landed: %llu of %llu chunks stored again",
	      (unsigned long long)stf.packs, (unsigned long long)st.new_chunks,
	      (unsigned long long)st1.new_chunks);
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
	struct ss_config_in cfg = cfg_base(NULL);
	cfg.pub.pack_size = 0;
	char src[1024], snap[1024], dst[1024], err[1024];
	path_of(src, sizeof(src), "tree/random.bin");
	path_of(snap, sizeof(snap), "local/snaps/r1");
	path_of(dst, sizeof(dst), "out-local.bin");
	struct ss_push_opts po = {.source = src, .snapshot = snap};
	struct ss_stats st;
	int r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "local push: %s", err);
	struct ss_pull_opts pl = {.snapshot = snap, .dest = dst};
	r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
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
	r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
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
	struct ss_config_in cfg = cfg_base(NULL);
	char src[1024], snap[1024], dst[1024], store[1024], err[1024];
	path_of(src, sizeof(src), "tree/zeros");
	path_of(snap, sizeof(snap), "sparse/s");
	path_of(dst, sizeof(dst), "sparse-out");
	struct ss_push_opts po = {.source = src, .snapshot = snap};
	struct ss_stats st;
	CHECK(ss_push_impl(&po, &cfg, &st, err, sizeof(err)) == 0, "push zeros: %s", err);
	CHECK(st.new_chunks <= 1, "an all-zero file stores at most its odd tail: %llu",
	      (unsigned long long)st.new_chunks);
	path_of(store, sizeof(store), "sparse/.snapstream/refs");
	struct stat sb;
	CHECK(stat(store, &sb) == 0, "default store beside the snapshot is missing");
	struct ss_pull_opts pl = {.snapshot = snap, .dest = dst};
	CHECK(ss_pull_impl(&pl, &cfg, &st, err, sizeof(err)) == 0, "pull zeros: %s", err);
	CHECK(same_file(src, dst), "zeros differ");
	stat(dst, &sb);
	CHECK((uint64_t)sb.st_blocks * 512 < 64 * 1024, "output is not sparse: %lld blocks",
	      (long long)sb.st_blocks);
}

static void test_bad_inputs(void)
{
	struct ss_config_in cfg = cfg_base(NULL);
	char err[1024], snap[1024], dst[1024];
	struct ss_stats st;
	path_of(snap, sizeof(snap), "bad/s");
	struct ss_push_opts po = {.source = "/nonexistent/file", .snapshot = snap};
	CHECK(ss_push_impl(&po, &cfg, &st, err, sizeof(err)) == -ENOENT, "missing source");
	po.source = "/dev/null";
	CHECK(ss_push_impl(&po, &cfg, &st, err, sizeof(err)) == -ENOTSUP, "device as source: %s", err);

	/* A manifest that is garbage is an integrity error, not a crash. */
	char dir[1024], mf[2100];
	path_of(dir, sizeof(dir), "bad/g");
	mkdir(dir, 0755);
	snprintf(mf, sizeof(mf), "%s/manifest", dir);
	write_file(mf, 1000, 1, 0644);
	path_of(dst, sizeof(dst), "bad-out");
	struct ss_pull_opts pl = {.snapshot = dir, .dest = dst};
	int r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -EBADMSG, "garbage manifest: %d %s", r, err);

	struct ss_config_in bad = cfg;
	bad.pub.chunk_avg = 1000;   /* not a power of two */
	po.source = mf;
	CHECK(ss_push_impl(&po, &bad, &st, err, sizeof(err)) == -EINVAL, "bad chunk size accepted");
}

static struct ss_manifest *load_manifest(const char *snap)
{
	char path[2100];
	snprintf(path, sizeof(path), "%s/manifest", snap);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	static uint8_t buf[16 << 20];
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	struct ss_manifest *m = NULL;
	struct ss_err e = {0};
	if (ss_manifest_decode(buf, n, &m, &e))
		fprintf(stderr, "decode %s: %s\n", path, e.msg);
	return m;
}

static int writer_done_cb(void *arg)
{
	return *(int *)arg;
}

/* With a parent, push predicts cut points from the parent's extents. The
 * result must be exactly what chunking from scratch gives, including where
 * the parent's cuts were forced by a zero page that is now data, by the
 * parent's end of file, or by a page chunk (a repeated page) that is an
 * ordinary page now, and where a page of a parent's chunk repeats now. */
static void test_guided_chunking(void)
{
	struct ss_config_in cfg = cfg_base(NULL);
	cfg.pub.chunk_avg = 16384;   /* many chunks in a small image */
	char a[1024], b[1024], pa[1024], pb[1024], pc[1024], err[1024];
	path_of(a, sizeof(a), "guide-a.img");
	path_of(b, sizeof(b), "guide-b.img");
	/* The parent ends inside a segment, on data: its last cut was forced
	 * by its end of file and must not be trusted for the longer b. */
	size_t size = (12u << 20) - 5000;
	write_file(a, size, 3, 0644);
	int fd = open(a, O_WRONLY);
	uint8_t tail[3000];
	memset(tail, 0x55, sizeof(tail));
	if (fd < 0 || pwrite(fd, tail, sizeof(tail), (off_t)(size - sizeof(tail))) != sizeof(tail))
		exit(1);
	close(fd);
	/* b: a copy with clustered changes, zero pages turned into data, and
	 * 100 KB more at the end. */
	FILE *fa = fopen(a, "rb");
	uint8_t *buf = malloc(size + 100000);
	if (!fa || fread(buf, 1, size, fa) != size) {
		fprintf(stderr, "read %s\n", a);
		exit(1);
	}
	fclose(fa);
	for (size_t pg = 0; pg < size / 4096; pg++) {
		uint8_t *p = buf + pg * 4096;
		bool zero = true;
		for (int i = 0; i < 4096 && zero; i++)
			zero = !p[i];
		if ((zero && rnd() % 4 == 0) || rnd() % 50 == 0)
			for (int i = 0; i < 4096; i += 7)
				p[i] = (uint8_t)rnd();
		else if (rnd() % 40 == 0)
			/* A copy of another page: pages unique in a repeat in
			 * b, so b's page chunks are not a's. */
			memcpy(p, buf + (size_t)(rnd() % (size / 4096)) * 4096, 4096);
	}
	for (size_t i = size; i < size + 100000; i++)
		buf[i] = (uint8_t)rnd();
	FILE *fb = fopen(b, "wb");
	fwrite(buf, 1, size + 100000, fb);
	fclose(fb);
	free(buf);

	path_of(pa, sizeof(pa), "guide1/a");
	path_of(pb, sizeof(pb), "guide1/b");
	path_of(pc, sizeof(pc), "guide2/b");
	struct ss_stats st, stb;
	struct ss_push_opts po = {.source = a, .snapshot = pa};
	CHECK(ss_push_impl(&po, &cfg, &st, err, sizeof(err)) == 0, "push a: %s", err);
	const char *parents[] = {pa};
	struct ss_push_opts pbo = {.source = b, .snapshot = pb, .parents = parents, .nparents = 1};
	CHECK(ss_push_impl(&pbo, &cfg, &stb, err, sizeof(err)) == 0, "push b with parent: %s", err);
	CHECK(stb.new_raw_bytes < size / 2, "guided push stored %llu of %zu bytes",
	      (unsigned long long)stb.new_raw_bytes, size);
	struct ss_push_opts pco = {.source = b, .snapshot = pc};
	CHECK(ss_push_impl(&pco, &cfg, &st, err, sizeof(err)) == 0, "push b alone: %s", err);

	struct ss_manifest *mb = load_manifest(pb), *mc = load_manifest(pc);
	CHECK(mb && mc, "manifests");
	if (mb && mc) {
		struct ss_mfile *x = &mb->files[0], *y = &mc->files[0];
		CHECK(x->next == y->next, "extent counts differ: %zu vs %zu", x->next, y->next);
		size_t diff = 0;
		for (size_t e = 0; e < x->next && e < y->next; e++) {
			bool same = x->ext[e].len == y->ext[e].len &&
				    !x->ext[e].chunk == !y->ext[e].chunk;
			if (same && x->ext[e].chunk)
				same = memcmp(mb->chunks[x->ext[e].chunk - 1].id,
					      mc->chunks[y->ext[e].chunk - 1].id, 16) == 0;
			diff += !same;
		}
		CHECK(diff == 0, "%zu extents differ between guided and plain chunking", diff);
		CHECK(memcmp(x->digest, y->digest, 16) == 0, "digests differ");
	}
	ss_manifest_free(mb);
	ss_manifest_free(mc);
	char out[1024];
	path_of(out, sizeof(out), "guide-out.img");
	struct ss_pull_opts pl = {.snapshot = pb, .dest = out};
	CHECK(ss_pull_impl(&pl, &cfg, &st, err, sizeof(err)) == 0, "pull b: %s", err);
	CHECK(same_file(b, out), "guided snapshot restores different bytes");
}

/* The extents and digests of two one-file snapshots are the same. */
static void same_extents(const char *sa, const char *sb, const char *what)
{
	struct ss_manifest *ma = load_manifest(sa), *mb = load_manifest(sb);
	CHECK(ma && mb, "%s: manifests", what);
	if (!ma || !mb) {
		ss_manifest_free(ma);
		ss_manifest_free(mb);
		return;
	}
	struct ss_mfile *x = &ma->files[0], *y = &mb->files[0];
	CHECK(x->next == y->next, "%s: %zu extents vs %zu", what, x->next, y->next);
	size_t diff = 0;
	for (size_t e = 0; e < x->next && e < y->next; e++) {
		bool same = x->ext[e].len == y->ext[e].len && !x->ext[e].chunk == !y->ext[e].chunk;
		if (same && x->ext[e].chunk)
			same = !memcmp(ma->chunks[x->ext[e].chunk - 1].id,
				       mb->chunks[y->ext[e].chunk - 1].id, 16);
		diff += !same;
	}
	CHECK(diff == 0, "%s: %zu extents differ", what, diff);
	CHECK(!memcmp(x->digest, y->digest, 16), "%s: digests differ", what);
	ss_manifest_free(ma);
	ss_manifest_free(mb);
}

/* Sparse sources: holes are found with SEEK_DATA and never read, yet the
 * snapshot is the one of the same bytes read whole (each extent, chunk id
 * and the digest), with or without a parent guiding the cuts, in follow
 * mode too. The holes: page-aligned and not, one page, across segments,
 * more data extents in one segment than a segment reads piece by piece,
 * data and a hole at the file's end; repeated pages beside holes. */
static void test_sparse_source(void)
{
	struct ss_config_in cfg = cfg_base(NULL);
	cfg.pub.chunk_avg = 16384;   /* many chunks, some cut by holes */
	char sparse[1024], dense[1024], dir[1024], err[1024];
	path_of(dir, sizeof(dir), "sparse-src");
	mkdir(dir, 0755);
	path_of(sparse, sizeof(sparse), "sparse-src/mem.img");
	path_of(dense, sizeof(dense), "sparse-dense.img");
	const uint64_t size = (64u << 20) + 777, M = 1u << 20;
	struct {
		uint64_t off, len;
	} ext[] = {
		{0, 5000},
		{3 * 4096, 4096},
		{5 * 4096 + 100, 70000},
		{(4 * M) - 8192, 8192},           /* up to a segment's end */
		{(4 * M) + 4096, 300000},         /* after a one-page hole */
		{(21 * M) + 1, 2 * M},            /* after a hole over segments */
		{(40 * M) - 3000, 6000},          /* across a segment boundary */
		{size - 5000, 5000},              /* the last, partial page */
	};
	int fs = open(sparse, O_RDWR | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fs >= 0 && ftruncate(fs, (off_t)size) == 0, "create %s", sparse);
	uint8_t *img = calloc(1, size);
	REQUIRE(img, "out of memory");
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		for (uint64_t j = 0; j < ext[i].len; j++)
			img[ext[i].off + j] = (j / 4096) % 3 == 1 ? 0 : (uint8_t)rnd();
		REQUIRE(pwrite(fs, img + ext[i].off, ext[i].len, (off_t)ext[i].off) ==
				(ssize_t)ext[i].len,
			"write");
	}
	/* A page repeated in the data (a page chunk wherever it occurs): at a
	 * window's start, inside data, just before a window's end. */
	const uint64_t rep[] = {4 * M + 4096, 4 * M + 4096 * 21, 21 * M + 4096 * 5, 23 * M - 4096};
	for (size_t i = 0; i < sizeof(rep) / sizeof(rep[0]); i++) {
		for (int j = 0; j < 4096; j++)
			img[rep[i] + j] = (uint8_t)("shared library "[j % 15]);
		REQUIRE(pwrite(fs, img + rep[i], 4096, (off_t)rep[i]) == 4096, "write");
	}
	/* 24 one-page data extents, one page apart, in one segment. */
	for (uint64_t pg = 0; pg < 24; pg++) {
		uint64_t off = 12 * M + pg * 8192;
		for (int j = 0; j < 4096; j++)
			img[off + j] = (uint8_t)("fragmented "[j % 11] + pg);
		REQUIRE(pwrite(fs, img + off, 4096, (off_t)off) == 4096, "write");
	}
	close(fs);
	int fd = open(dense, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0 && write(fd, img, size) == (ssize_t)size, "write %s", dense);
	close(fd);
	free(img);

	char ss[1024], sd[1024], sg[1024], sf[1024], out[1024];
	path_of(ss, sizeof(ss), "sparse-snaps/sparse");
	path_of(sd, sizeof(sd), "sparse-snaps/dense");
	path_of(sg, sizeof(sg), "sparse-snaps/guided");
	path_of(sf, sizeof(sf), "sparse-snaps/followed");
	struct ss_stats st;
	struct ss_push_opts po = {.source = dense, .snapshot = sd};
	CHECK(ss_push_impl(&po, &cfg, &st, err, sizeof(err)) == 0, "push dense: %s", err);
	po.source = sparse;
	po.snapshot = ss;
	CHECK(ss_push_impl(&po, &cfg, &st, err, sizeof(err)) == 0, "push sparse: %s", err);
	CHECK(st.new_chunks == 0, "the sparse file stored %llu chunks the dense one had not",
	      (unsigned long long)st.new_chunks);
	same_extents(sd, ss, "sparse and dense");
	const char *parents[] = {sd};
	struct ss_push_opts pg = {.source = sparse, .snapshot = sg, .parents = parents,
				  .nparents = 1};
	CHECK(ss_push_impl(&pg, &cfg, &st, err, sizeof(err)) == 0, "guided push: %s", err);
	same_extents(sd, sg, "guided by the dense one");
	int done = 1;
	struct ss_push_opts pf = {.source = dir, .snapshot = sf, .writer_status = writer_done_cb,
				  .writer_arg = &done};
	CHECK(ss_push_impl(&pf, &cfg, &st, err, sizeof(err)) == 0, "followed push: %s", err);
	struct ss_manifest *mf = load_manifest(sf), *md = load_manifest(sd);
	CHECK(mf && md && mf->nfiles == 1 && !memcmp(mf->files[0].digest, md->files[0].digest, 16),
	      "followed sparse push: digest differs");
	ss_manifest_free(mf);
	ss_manifest_free(md);

	path_of(out, sizeof(out), "sparse-out.img");
	struct ss_pull_opts pl = {.snapshot = ss, .dest = out};
	CHECK(ss_pull_impl(&pl, &cfg, &st, err, sizeof(err)) == 0, "pull sparse: %s", err);
	CHECK(same_file(dense, out), "the pulled sparse file differs");
	struct stat sb;
	CHECK(stat(out, &sb) == 0 && (uint64_t)sb.st_blocks * 512 < 8 * M,
	      "the pulled file allocates %lld bytes", (long long)sb.st_blocks * 512);
	unlink(out);
	unlink(dense);
}

/* Follow mode: a writer thread produces an image directory (files appear
 * and grow, written front to back) while the push reads behind it. */
struct writer {
	char dir[1024];
	_Atomic int status;        /* 0 writing, 1 done, <0 failed */
	int fail_at;               /* fail after this many pieces (0: never) */
	bool rewrite;              /* go back and change written bytes at the end */
};

static int writer_status(void *arg)
{
	return atomic_load(&((struct writer *)arg)->status);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	char p[2100];
	uint8_t piece[96 * 1024];
	snprintf(p, sizeof(p), "%s/pages.img", w->dir);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	for (int i = 0; i < 200; i++) {
		for (size_t j = 0; j < sizeof(piece); j++)
			piece[j] = (i % 5 == 0) ? 0 : (uint8_t)(j % 251 + i);
		if (write(fd, piece, sizeof(piece)) != (ssize_t)sizeof(piece))
			break;
		if (w->fail_at && i == w->fail_at) {
			close(fd);
			atomic_store(&w->status, -EIO);
			return NULL;
		}
		if (i == 100) {   /* a second file appears half way */
			char q[2100];
			snprintf(q, sizeof(q), "%s/checkpoint.img", w->dir);
			write_file(q, 5000, 2, 0644);
		}
		usleep(300);
	}
	if (w->rewrite) {
		uint8_t x = 0xAB;
		if (pwrite(fd, &x, 1, 12345) != 1)
			exit(1);
	}
	close(fd);
	atomic_store(&w->status, 1);
	return NULL;
}

/* A pull reads back what it wrote and hashes it: a file that does not
 * match its recorded digest (the same chunks, another digest) fails the
 * pull with -EBADMSG, naming the file, and leaves nothing under the
 * destination. */
static void test_file_digest(void)
{
	struct ss_config_in cfg = cfg_base(NULL);
	char src[1024], snap[1024], dst[1024], mpath[1100], err[1024];
	path_of(src, sizeof(src), "digest.img");
	path_of(snap, sizeof(snap), "digest-snaps/a");
	path_of(dst, sizeof(dst), "digest-out.img");
	write_image(src, 24u << 20);
	struct ss_stats st;
	struct ss_push_opts po = {.source = src, .snapshot = snap};
	REQUIRE(ss_push_impl(&po, &cfg, &st, err, sizeof(err)) == 0, "push: %s", err);
	struct ss_pull_opts pl = {.snapshot = snap, .dest = dst};
	CHECK(ss_pull_impl(&pl, &cfg, &st, err, sizeof(err)) == 0, "pull: %s", err);
	CHECK(same_file(src, dst), "pulled file differs");
	unlink(dst);

	/* The same chunks, another digest. */
	struct ss_manifest *m = load_manifest(snap);
	REQUIRE(m && m->nfiles == 1, "manifest");
	m->files[0].digest[7] ^= 0x10;
	uint8_t *enc = NULL;
	size_t elen = 0;
	REQUIRE(ss_manifest_encode(m, &enc, &elen) == 0, "encode");
	ss_manifest_free(m);
	snprintf(mpath, sizeof(mpath), "%s/manifest", snap);
	FILE *f = fopen(mpath, "wb");
	REQUIRE(f && fwrite(enc, 1, elen, f) == elen && fclose(f) == 0, "write %s", mpath);
	free(enc);
	int r = ss_pull_impl(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == -EBADMSG && strstr(err, "does not match its recorded digest"),
	      "pull of a file with another digest: %d %s", r, err);
	struct stat sb;
	CHECK(stat(dst, &sb) < 0 && errno == ENOENT, "a failed pull left %s", dst);
}

static void test_follow(void)
{
	struct ss_config_in cfg = cfg_base(NULL);
	char err[1024], snap[1024], out[1024];
	for (int mode = 0; mode < 3; mode++) {
		struct writer w = {.fail_at = mode == 1 ? 120 : 0, .rewrite = mode == 2};
		path_of(w.dir, sizeof(w.dir), "follow-%d", mode);
		mkdir(w.dir, 0755);
		path_of(snap, sizeof(snap), "follow-snaps/s%d", mode);
		pthread_t th;
		pthread_create(&th, NULL, writer_main, &w);
		struct ss_push_opts po = {.source = w.dir, .snapshot = snap,
					  .writer_status = writer_status, .writer_arg = &w};
		struct ss_stats st;
		int r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
		pthread_join(th, NULL);
		path_of(out, sizeof(out), "follow-out-%d", mode);
		struct ss_pull_opts pl = {.snapshot = snap, .dest = out};
		if (mode == 0) {
			CHECK(r == 0, "follow push: %s", err);
			CHECK(st.files == 2, "follow push found %llu files", (unsigned long long)st.files);
			CHECK(ss_pull_impl(&pl, &cfg, &st, err, sizeof(err)) == 0, "pull followed: %s", err);
			char a[2100], b[2100];
			snprintf(a, sizeof(a), "%s/pages.img", w.dir);
			snprintf(b, sizeof(b), "%s/pages.img", out);
			CHECK(same_file(a, b), "followed pages.img differs");
			snprintf(a, sizeof(a), "%s/checkpoint.img", w.dir);
			snprintf(b, sizeof(b), "%s/checkpoint.img", out);
			CHECK(same_file(a, b), "followed checkpoint.img differs");
			/* Cut points are those of a push of the finished directory. */
			char plain[1024];
			path_of(plain, sizeof(plain), "follow-snaps/plain");
			struct ss_push_opts pp = {.source = w.dir, .snapshot = plain};
			CHECK(ss_push_impl(&pp, &cfg, &st, err, sizeof(err)) == 0, "plain push: %s", err);
			CHECK(st.new_chunks == 0, "plain push after follow stored %llu new chunks",
			      (unsigned long long)st.new_chunks);
		} else {
			CHECK(r != 0, "follow push mode %d should fail", mode);
			CHECK(strstr(err, mode == 1 ? "checkpointer failed" : "rewritten"),
			      "mode %d message: %s", mode, err);
			CHECK(ss_pull_impl(&pl, &cfg, &st, err, sizeof(err)) == -ENOENT,
			      "no snapshot may exist after a failed follow push (mode %d)", mode);
		}
	}
}

/* ss_grow: doubles from its first size, reaches need when doubling falls
 * short, keeps what the array held, and leaves array and capacity alone
 * when it cannot grow. */
static void test_grow(void)
{
	struct item {
		uint64_t a, b;
		uint32_t c;
	} *v = NULL;
	size_t cap = 0;
	CHECK(SS_GROW(v, cap, 1, 8) == 0 && v && cap == 8, "first growth: cap %zu", cap);
	for (size_t i = 0; i < 8; i++)
		v[i] = (struct item){i, ~i, (uint32_t)(i * 3)};
	struct item *was = v;
	CHECK(SS_GROW(v, cap, 8, 8) == 0 && v == was && cap == 8, "room already: cap %zu", cap);
	CHECK(SS_GROW(v, cap, 9, 8) == 0 && cap == 16, "doubling: cap %zu", cap);
	CHECK(SS_GROW(v, cap, 100, 8) == 0 && cap == 100, "to need past double: cap %zu", cap);
	for (size_t i = 0; i < 8; i++)
		CHECK(v[i].a == i && v[i].b == ~i && v[i].c == i * 3, "element %zu kept", i);
	v[99].c = 7;   /* all of it is there (ASan) */
	was = v;
	CHECK(SS_GROW(v, cap, SIZE_MAX / 2, 8) == -ENOMEM && v == was && cap == 100,
	      "a size past SIZE_MAX: cap %zu", cap);
	CHECK(v[0].b == ~(uint64_t)0 && v[99].c == 7, "kept after a refused growth");
	free(v);

	uint8_t (*ids)[16] = NULL;   /* arrays of arrays, as pack ids are */
	size_t ncap = 0;
	CHECK(SS_GROW(ids, ncap, 3, 2) == 0 && ncap == 3, "array of ids: cap %zu", ncap);
	memset(ids[2], 0xab, 16);
	CHECK(SS_GROW(ids, ncap, 4, 2) == 0 && ncap == 6 && ids[2][15] == 0xab,
	      "ids kept: cap %zu", ncap);
	free(ids);
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

	test_grow();
	test_mem_roundtrip();
	test_interrupted_push();
	test_local_store_corruption();
	test_sparse_and_default_store();
	test_bad_inputs();
	test_guided_chunking();
	test_sparse_source();
	test_follow();
	test_file_digest();

	rm_rf(root);
	if (failures) {
		fprintf(stderr, "%d check(s) failed\n", failures);
		return 1;
	}
	printf("engine: all checks passed\n");
	return 0;
}
