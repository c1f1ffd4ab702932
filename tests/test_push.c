/* The write path's failure and edge cases, through the public API (and a
 * few library calls this program replaces to inject faults):
 *
 *   - chunk sizes too large for the segment arithmetic: -EINVAL at once;
 *   - a symlink, FIFO or device in (or as) the source: -ENOTSUP, naming it;
 *   - follow mode while the writer creates hundreds of files in bursts, so
 *     the file table grows under workers chunking large segments; the
 *     writer is not asked again once it said it finished;
 *   - follow mode on a directory that stays empty;
 *   - a worker's compressor that cannot be made: -ENOMEM, not raw frames;
 *   - a loop that fails with reads still in the kernel: push waits for
 *     them before it frees their buffers;
 *   - a 16 GiB sparse source: its holes are never read (every read the
 *     engine submits is checked), and come back as holes;
 *   - a dense file's long zero runs are read once (by the page count),
 *     short ones twice;
 *   - pages repeated at scattered offsets: each stored once.
 *
 * Exit 0 pass, 1 fail. */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "snapstream.h"

#include "testutil.h"

/* A UBSan finding (qsort(NULL, 0)) fails the test, however it is run. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:print_stacktrace=1";
}

static char root[64];

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void path_of(char *out, size_t n, const char *fmt, ...)
{
	char rel[128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(out, n, "%s/%s", root, rel);
}

static void write_random(const char *path, size_t size)
{
	uint8_t *b = malloc(size ? size : 1);
	REQUIRE(b, "out of memory");
	for (size_t i = 0; i + 8 <= size; i += 8) {
		uint64_t v = rnd();
		memcpy(b + i, &v, 8);
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0 && write(fd, b, size) == (ssize_t)size, "write %s", path);
	close(fd);
	free(b);
}

static struct ss_config base_cfg(void)
{
	return (struct ss_config){.size = sizeof(struct ss_config), .threads = 2, .no_fsync = true};
}

/* --- fault injection: library calls this program replaces ------------- */

/* ZSTD_createCCtx: the next fail_cctx calls fail. A push makes its
 * workers' compressors first (the manifest's comes at the end). */
static atomic_int fail_cctx;

ZSTD_CCtx *ZSTD_createCCtx(void)
{
	static ZSTD_CCtx *(*real)(void);
	int n = atomic_load(&fail_cctx);
	while (n > 0 && !atomic_compare_exchange_weak(&fail_cctx, &n, n - 1))
		;
	if (n > 0)
		return NULL;
	if (!real)
		real = (ZSTD_CCtx * (*)(void)) dlsym(RTLD_NEXT, "ZSTD_createCCtx");
	return real();
}

/* open: the path fifo_as names opens the FIFO fifo_path instead, so that
 * the push's reads of it wait in the kernel until this program writes. */
static char fifo_as[300], fifo_path[300];
static atomic_int fifo_fd = -1;

/* Reads of the file watch_path names, as the engine submits them to its
 * ring (note_reads) or makes them with pread (small reads of a file on
 * tmpfs, and the page count's pre-pass, on other threads: under
 * reads_mu): where a sparse source was read. The test reads them once
 * the push returned. */
static char watch_path[300];
static atomic_int watch_fd = -1;
#define MAX_READS 4096
static struct {
	uint64_t off, len;
} reads[MAX_READS];
static size_t nreads;
static bool reads_overflow;
static pthread_mutex_t reads_mu = PTHREAD_MUTEX_INITIALIZER;

static void note_read(uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&reads_mu);
	if (nreads == MAX_READS) {
		reads_overflow = true;
	} else {
		reads[nreads].off = off;
		reads[nreads++].len = len;
	}
	pthread_mutex_unlock(&reads_mu);
}

static int open_impl(const char *name, const char *path, int flags, mode_t mode)
{
	int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, name);
	if (fifo_as[0] && !strcmp(path, fifo_as)) {
		int fd = real(fifo_path, O_RDWR | O_CLOEXEC);
		atomic_store(&fifo_fd, fd);
		return fd;
	}
	int fd = real(path, flags, mode);
	if (watch_path[0] && !strcmp(path, watch_path))
		atomic_store(&watch_fd, fd);
	return fd;
}

static void note_reads(struct io_uring *ring)
{
	int wfd = atomic_load(&watch_fd);
	if (wfd < 0)
		return;
	for (unsigned i = ring->sq.sqe_head; i != ring->sq.sqe_tail; i++) {
		struct io_uring_sqe *sqe = &ring->sq.sqes[i & *ring->sq.kring_mask];
		bool rd = sqe->opcode == IORING_OP_READ || sqe->opcode == IORING_OP_READ_FIXED ||
			  sqe->opcode == IORING_OP_READV;
		if (!rd || sqe->fd != wfd)
			continue;
		/* READV's len counts iovecs: call it unbounded. */
		note_read(sqe->off, sqe->opcode == IORING_OP_READV ? UINT64_MAX / 2 : sqe->len);
	}
}

/* pread (with _FILE_OFFSET_BITS=64, as meson builds, pread64). */
ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
	/* Called from the push's threads at once (the page count's, the
	 * workers'): the lookup is stored atomically. */
	typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
	static _Atomic(pread_fn) real;
	pread_fn f = atomic_load(&real);
	if (!f) {
		f = (pread_fn)dlsym(RTLD_NEXT, "pread64");
		atomic_store(&real, f);
	}
	if (fd >= 0 && fd == atomic_load(&watch_fd))
		note_read((uint64_t)off, n);
	return f(fd, buf, n, off);
}

/* io_uring_submit (the loop's turns that do not wait): reads noted. */
int io_uring_submit(struct io_uring *ring)
{
	static int (*real)(struct io_uring *);
	if (!real)
		real = (int (*)(struct io_uring *))dlsym(RTLD_NEXT, "io_uring_submit");
	note_reads(ring);
	return real(ring);
}

/* With _FILE_OFFSET_BITS=64 (as meson builds) this is open64, the name
 * the engine calls. */
int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
	va_end(ap);
	return open_impl("open64", path, flags, mode);
}

/* io_uring_submit_and_wait (the loop's blocking turn): once a read of the
 * FIFO is submitted, it and every later call fail, as a ring that broke
 * with reads in flight would. */
static atomic_bool ring_broken;

int io_uring_submit_and_wait(struct io_uring *ring, unsigned wait_nr)
{
	static int (*real)(struct io_uring *, unsigned);
	if (!real)
		real = (int (*)(struct io_uring *, unsigned))dlsym(RTLD_NEXT, "io_uring_submit_and_wait");
	int ffd = atomic_load(&fifo_fd);
	if (!atomic_load(&ring_broken) && ffd >= 0) {
		for (unsigned i = ring->sq.sqe_head; i != ring->sq.sqe_tail; i++) {
			struct io_uring_sqe *sqe = &ring->sq.sqes[i & *ring->sq.kring_mask];
			if ((sqe->opcode == IORING_OP_READ || sqe->opcode == IORING_OP_READ_FIXED) &&
			    sqe->fd == ffd) {
				io_uring_submit(ring);   /* the reads go in */
				atomic_store(&ring_broken, true);
				break;
			}
		}
	}
	if (atomic_load(&ring_broken))
		return -EIO;
	note_reads(ring);
	return real(ring, wait_nr);
}

/* --- b: chunk sizes ------------------------------------------------------ */

static void test_chunk_sizes(void)
{
	char src[300], snap[300];
	path_of(src, sizeof(src), "sizes.img");
	path_of(snap, sizeof(snap), "snaps/sizes");
	write_random(src, 8192);
	struct ss_push_opts po = {.size = sizeof(struct ss_push_opts), .source = src, .snapshot = snap};
	struct {
		uint32_t min, avg, max;
	} bad[] = {
		{0, 0, 3000u << 20},            /* --chunk-max 3000M */
		{0, 0, 0x80000001u},
		{0, 0, UINT32_MAX},
		{0, 1u << 30, 0},               /* avg * 4 wraps */
		{UINT32_MAX, 0, 0},
	};
	/* The old arithmetic looped forever: a hang fails the test. */
	alarm(60);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ss_config cfg = base_cfg();
		cfg.chunk_min = bad[i].min;
		cfg.chunk_avg = bad[i].avg;
		cfg.chunk_max = bad[i].max;
		char err[512] = "";
		int r = ss_push(&po, &cfg, NULL, err, sizeof(err));
		CHECK(r == -EINVAL, "sizes %u/%u/%u: got %d (%s)", bad[i].min, bad[i].avg, bad[i].max,
		      r, err);
		CHECK(strstr(err, "chunk sizes"), "sizes %zu: message names chunk sizes: %s", i, err);
	}
	alarm(0);
	/* Sizes in range still work. */
	struct ss_config cfg = base_cfg();
	cfg.chunk_max = 1u << 20;
	char err[512] = "";
	int r = ss_push(&po, &cfg, NULL, err, sizeof(err));
	CHECK(r == 0, "chunk-max 1 MiB: %s", err);
}

/* --- sources a snapshot cannot hold ------------------------------------ */

static void test_not_regular(void)
{
	char dir[300], p[300], snap[300], err[512];
	struct ss_config cfg = base_cfg();
	path_of(dir, sizeof(dir), "odd-fifo");
	REQUIRE(mkdir(dir, 0755) == 0, "mkdir");
	path_of(p, sizeof(p), "odd-fifo/a");
	write_random(p, 100);
	path_of(p, sizeof(p), "odd-fifo/p");
	REQUIRE(mkfifo(p, 0644) == 0, "mkfifo");
	path_of(snap, sizeof(snap), "snaps/odd");
	struct ss_push_opts po = {.size = sizeof(struct ss_push_opts), .source = dir, .snapshot = snap};
	int r = ss_push(&po, &cfg, NULL, err, sizeof(err));
	CHECK(r == -ENOTSUP, "a FIFO in the source: %d (%s)", r, err);
	CHECK(strstr(err, p), "the FIFO is named: %s", err);

	po.source = p;
	r = ss_push(&po, &cfg, NULL, err, sizeof(err));
	CHECK(r == -ENOTSUP, "a FIFO as the source: %d (%s)", r, err);

	path_of(dir, sizeof(dir), "odd-link");
	REQUIRE(mkdir(dir, 0755) == 0, "mkdir");
	path_of(p, sizeof(p), "odd-link/l");
	REQUIRE(symlink("/etc/hostname", p) == 0, "symlink");
	po.source = dir;
	r = ss_push(&po, &cfg, NULL, err, sizeof(err));
	CHECK(r == -ENOTSUP, "a symlink in the source: %d (%s)", r, err);
	CHECK(strstr(err, p), "the symlink is named: %s", err);

	po.source = "/dev/null";
	r = ss_push(&po, &cfg, NULL, err, sizeof(err));
	CHECK(r == -ENOTSUP, "a device as the source: %d (%s)", r, err);
}

/* --- sparse sources ------------------------------------------------------ */

#define SPARSE_SIZE ((16ull << 30) + 123)   /* a partial last page of data */
#define SPARSE_SLACK (64u << 10)

/* The data extents written into the sparse image: page-aligned or not,
 * across a segment boundary, zero pages inside (found by scanning), the
 * file's last bytes. */
static const struct {
	uint64_t off, len;
} sparse_ext[] = {
	{0, 300u << 10},
	{(1ull << 30) + 100, 200u << 10},              /* starts mid-page */
	{(3ull << 30) - (128u << 10), 256u << 10},     /* across a 4 MiB boundary */
	{(5ull << 30) + 8192, 4096},                   /* one page */
	{(5ull << 30) + 4 * 4096, 2 * 4096},           /* a one-page hole before */
	{(9ull << 30) + (1u << 20), 1u << 20},
	{(13ull << 30) + 4096 * 7, 333333},
	{SPARSE_SIZE - 123 - 8192, 8192 + 123},
};
#define SPARSE_N (sizeof(sparse_ext) / sizeof(sparse_ext[0]))

/* Memory-like content for an extent: random, text-like and zero pages,
 * zero pages written (allocated) like any others. */
static void write_extent(int fd, uint64_t off, uint64_t len)
{
	uint8_t *b = malloc(len);
	REQUIRE(b, "out of memory");
	for (uint64_t i = 0; i < len; i += 4096) {
		int kind = (int)(rnd() % 4);
		for (uint64_t j = i; j < i + 4096 && j < len; j++)
			b[j] = kind == 0 ? 0 : kind == 1 ? (uint8_t)("heap object "[j % 12]) : (uint8_t)rnd();
	}
	REQUIRE(pwrite(fd, b, len, (off_t)off) == (ssize_t)len, "write extent");
	free(b);
}

/* Whether [off, off + len) of the image lies in its data, taken as whole
 * pages (the file system allocates, and SEEK_DATA reports, whole blocks). */
static bool in_data(uint64_t off, uint64_t len)
{
	for (size_t i = 0; i < SPARSE_N; i++) {
		uint64_t a = sparse_ext[i].off & ~4095ull;
		uint64_t b = (sparse_ext[i].off + sparse_ext[i].len + 4095) & ~4095ull;
		if (off >= a && off + len <= b)
			return true;
	}
	return false;
}

static bool same_range(int a, int b, uint64_t off, uint64_t len)
{
	uint8_t *x = malloc(len), *y = malloc(len);
	bool same = x && y && pread(a, x, len, (off_t)off) == (ssize_t)len &&
		    pread(b, y, len, (off_t)off) == (ssize_t)len && !memcmp(x, y, len);
	free(x);
	free(y);
	return same;
}

/* Push src into snap, noting every read of src the engine makes
 * (reads[], nreads). */
static void push_watched(const char *src, const char *snap, const struct ss_config *cfg,
			 struct ss_stats *st, const char *what)
{
	char err[512] = "";
	struct ss_push_opts po = {.size = sizeof(po), .source = src, .snapshot = snap};
	REQUIRE(strlen(src) < sizeof(watch_path), "path too long");
	memcpy(watch_path, src, strlen(src) + 1);
	nreads = 0;
	int r = ss_push(&po, cfg, st, err, sizeof(err));
	atomic_store(&watch_fd, -1);
	watch_path[0] = '\0';
	CHECK(r == 0, "push of %s: %s", what, err);
	CHECK(!reads_overflow && nreads > 0, "%zu reads of the source noted", nreads);
}

/* A 16 GiB file holding 2 MiB of data is pushed reading its data only
 * (every read the engine submits is checked), pulled back byte for byte
 * with its holes, allocating no more than its data, and verifies. On
 * tmpfs when there is one, where a hole read back through a mapping
 * would be allocated, and so show in st_blocks. */
static void test_sparse(void)
{
	char dir[300], src[400], snap[400], dst[400], err[512] = "";
	snprintf(dir, sizeof(dir), "/dev/shm/ss-sparse-XXXXXX");
	if (!mkdtemp(dir))
		path_of(dir, sizeof(dir), "sparse");
	else
		REQUIRE(chmod(dir, 0700) == 0, "chmod");
	mkdir(dir, 0700);
	snprintf(src, sizeof(src), "%s/mem.img", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	snprintf(dst, sizeof(dst), "%s/out.img", dir);
	int fd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0 && ftruncate(fd, (off_t)SPARSE_SIZE) == 0, "create %s", src);
	uint64_t data = 0;
	for (size_t i = 0; i < SPARSE_N; i++) {
		write_extent(fd, sparse_ext[i].off, sparse_ext[i].len);
		data += sparse_ext[i].len;
	}

	struct ss_config cfg = base_cfg();
	struct ss_stats st = SS_STATS_INIT;
	push_watched(src, snap, &cfg, &st, "a sparse file");
	uint64_t read = 0;
	size_t bad = 0, first_bad = 0;
	for (size_t i = 0; i < nreads; i++) {
		read += reads[i].len;
		if (!in_data(reads[i].off, reads[i].len) && !bad++)
			first_bad = i;
	}
	CHECK(!bad, "push read holes: %zu of %zu reads, the first %llu bytes at %llu", bad, nreads,
	      (unsigned long long)reads[first_bad].len, (unsigned long long)reads[first_bad].off);
	/* Its data twice at most: once by the page count's pre-pass, once
	 * chunked. */
	CHECK(read >= data && read <= 2 * (data + SPARSE_N * 8192),
	      "push read %llu bytes of a file holding %llu", (unsigned long long)read,
	      (unsigned long long)data);
	CHECK(st.logical_bytes == SPARSE_SIZE && st.zero_bytes >= SPARSE_SIZE - data,
	      "logical %llu, zero %llu", (unsigned long long)st.logical_bytes,
	      (unsigned long long)st.zero_bytes);

	struct ss_pull_opts pl = {.size = sizeof(pl), .snapshot = snap, .dest = dst};
	int r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "pull of a sparse snapshot: %s", err);
	int out = open(dst, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	REQUIRE(out >= 0 && fstat(out, &sb) == 0, "open %s", dst);
	CHECK((uint64_t)sb.st_size == SPARSE_SIZE, "pulled size %llu", (unsigned long long)sb.st_size);
	CHECK((uint64_t)sb.st_blocks * 512 <= data + SPARSE_SLACK,
	      "the pulled file allocates %llu bytes for %llu of data",
	      (unsigned long long)sb.st_blocks * 512, (unsigned long long)data);
	for (size_t i = 0; i < SPARSE_N; i++)
		CHECK(same_range(fd, out, sparse_ext[i].off, sparse_ext[i].len),
		      "data extent %zu differs", i);
	/* Everything else is a hole: each data region of the output lies in
	 * the image's data. */
	for (off_t at = 0;;) {
		off_t d = lseek(out, at, SEEK_DATA);
		if (d < 0)
			break;
		off_t h = lseek(out, d, SEEK_HOLE);
		REQUIRE(h > d, "SEEK_HOLE");
		CHECK(in_data((uint64_t)d, (uint64_t)(h - d)), "the pulled file has data at %lld..%lld",
		      (long long)d, (long long)h);
		at = h;
	}
	close(out);

	struct ss_verify_opts vo = {.size = sizeof(vo), .snapshot = snap};
	r = ss_verify(&vo, &cfg, NULL, err, sizeof(err));
	CHECK(r == 0, "the sparse snapshot verifies: %s", err);
	close(fd);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0, "rm %s", dir);
}

/* A dense file whose zero runs were written like any data: the page
 * count's pre-pass reads them once, and segments do not read a long run
 * again (it becomes a zero run as a hole does); a short run is read as
 * before. Pulled back byte for byte. */
static void test_zero_runs_read_once(void)
{
	char dir[300], src[400], snap[400], dst[400], err[512] = "";
	path_of(dir, sizeof(dir), "zero-runs");
	REQUIRE(mkdir(dir, 0700) == 0, "mkdir %s", dir);
	snprintf(src, sizeof(src), "%s/mem.img", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	snprintf(dst, sizeof(dst), "%s/out.img", dir);
	/* 12 MiB: data, a 3 MiB zero run from 2 MiB, data, an 8 KiB zero
	 * run at 7 MiB (two pages: read), data. */
	const uint64_t size = 12u << 20, z0 = 2u << 20, z1 = 5u << 20, s0 = 7u << 20,
		       s1 = s0 + 8192;
	uint8_t *b = malloc(size);
	REQUIRE(b, "out of memory");
	for (uint64_t i = 0; i < size; i++)
		b[i] = (i >= z0 && i < z1) || (i >= s0 && i < s1) ? 0 : (uint8_t)(rnd() | 1);
	int fd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0 && write(fd, b, size) == (ssize_t)size, "write %s", src);
	struct ss_config cfg = base_cfg();
	struct ss_stats st = SS_STATS_INIT;
	push_watched(src, snap, &cfg, &st, "a file with zero runs");
	uint64_t in_long = 0, in_short = 0, all = 0;
	for (size_t i = 0; i < nreads; i++) {
		uint64_t a = reads[i].off, e = reads[i].off + reads[i].len;
		all += reads[i].len;
		in_long += a < z1 && e > z0 ? (e < z1 ? e : z1) - (a > z0 ? a : z0) : 0;
		in_short += a < s1 && e > s0 ? (e < s1 ? e : s1) - (a > s0 ? a : s0) : 0;
	}
	CHECK(in_long == z1 - z0, "the long zero run was read %llu bytes (once: %llu)",
	      (unsigned long long)in_long, (unsigned long long)(z1 - z0));
	CHECK(in_short == 2 * (s1 - s0), "the short zero run was read %llu bytes (twice: %llu)",
	      (unsigned long long)in_short, (unsigned long long)(2 * (s1 - s0)));
	CHECK(all == 2 * size - (z1 - z0), "the file was read %llu bytes", (unsigned long long)all);
	CHECK(st.zero_bytes == (z1 - z0) + (s1 - s0), "zero bytes %llu",
	      (unsigned long long)st.zero_bytes);
	struct ss_pull_opts pl = {.size = sizeof(pl), .snapshot = snap, .dest = dst};
	int r = ss_pull(&pl, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "pull: %s", err);
	int out = open(dst, O_RDONLY | O_CLOEXEC);
	CHECK(out >= 0 && same_range(fd, out, 0, size), "the pulled file differs");
	if (out >= 0)
		close(out);
	close(fd);
	free(b);
}

/* --- small files on a memory file system --------------------------------- */

/* Write the same small file into both directories: n bytes, random unless
 * zero; sparse: a hole in the middle (only 8 KiB at each end written). */
static void small_file(const char *d1, const char *d2, const char *name, size_t n, bool zero,
		       bool sparse)
{
	uint8_t *b = calloc(1, n ? n : 1);
	REQUIRE(b, "out of memory");
	for (size_t i = 0; !zero && i < n; i++)
		b[i] = (uint8_t)rnd();
	const char *dirs[2] = {d1, d2};
	for (int k = 0; k < 2; k++) {
		char p[512];
		snprintf(p, sizeof(p), "%s/%s", dirs[k], name);
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		REQUIRE(fd >= 0, "create %s", p);
		if (sparse) {
			size_t e = n < 8192 ? n : 8192;
			REQUIRE(ftruncate(fd, (off_t)n) == 0 && pwrite(fd, b, e, 0) == (ssize_t)e &&
					pwrite(fd, b + n - e, e, (off_t)(n - e)) == (ssize_t)e,
				"write %s", p);
			memset(b + e, 0, n - 2 * e);
		} else {
			REQUIRE(write(fd, b, n) == (ssize_t)n, "write %s", p);
		}
		close(fd);
	}
	free(b);
}

/* A whole small file on a memory file system is read by a worker, which
 * makes its digest too (seg.c, seg_read), instead of the loop thread. The
 * snapshot must be the one the loop makes of the same files on disk, holes
 * and zero files included, and must restore and verify. */
static void test_small_files_memfs(void)
{
	char shm[300], a[400], b[400], sa[400], sb[400], out[400], err[512] = "";
	snprintf(shm, sizeof(shm), "/dev/shm/ss-small-XXXXXX");
	REQUIRE(mkdtemp(shm) && chmod(shm, 0700) == 0, "mkdtemp %s", shm);
	snprintf(a, sizeof(a), "%s/src", shm);
	snprintf(sa, sizeof(sa), "%s/snap", shm);
	snprintf(out, sizeof(out), "%s/out", shm);
	path_of(b, sizeof(b), "small-src");
	path_of(sb, sizeof(sb), "small-snap");
	REQUIRE(mkdir(a, 0755) == 0 && mkdir(b, 0755) == 0, "mkdir");
	const size_t sizes[] = {0, 1, 4095, 4096, 5000, 65539, 1u << 20, (1u << 20) + 1, 3u << 20};
	const size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
	char name[64];
	for (size_t i = 0; i < nsizes; i++) {
		snprintf(name, sizeof(name), "f%02zu", i);
		small_file(a, b, name, sizes[i], false, false);
	}
	small_file(a, b, "sparse", 900 << 10, false, true);
	small_file(a, b, "zeros", 64 << 10, true, false);
	for (int i = 0; i < 60; i++) {
		snprintf(name, sizeof(name), "many-%02d", i);
		small_file(a, b, name, 100 + (size_t)(rnd() % 200000), false, false);
	}
	struct ss_config cfg = base_cfg();
	struct ss_push_opts po = {.size = sizeof(po), .source = a, .snapshot = sa};
	CHECK(ss_push(&po, &cfg, NULL, err, sizeof(err)) == 0, "push from tmpfs: %s", err);
	po.source = b;
	po.snapshot = sb;
	CHECK(ss_push(&po, &cfg, NULL, err, sizeof(err)) == 0, "push from disk: %s", err);
	struct ss_snapshot_info *ia = NULL, *ib = NULL;
	CHECK(ss_info(sa, NULL, &cfg, &ia, err, sizeof(err)) == 0 &&
		      ss_info(sb, NULL, &cfg, &ib, err, sizeof(err)) == 0,
	      "info: %s", err);
	CHECK(ia && ib && ia->nfiles_v == ib->nfiles_v && ia->nfiles_v == nsizes + 62,
	      "files: %zu and %zu", ia ? ia->nfiles_v : 0, ib ? ib->nfiles_v : 0);
	for (size_t i = 0; ia && ib && i < ia->nfiles_v && i < ib->nfiles_v; i++)
		CHECK(!strcmp(ia->files_v[i]->name, ib->files_v[i]->name) &&
			      ia->files_v[i]->bytes == ib->files_v[i]->bytes &&
			      !strcmp(ia->files_v[i]->digest, ib->files_v[i]->digest),
		      "%s: digest %s from tmpfs, %s from disk", ia->files_v[i]->name,
		      ia->files_v[i]->digest, ib->files_v[i]->digest);
	ss_info_free(ia);
	ss_info_free(ib);
	struct ss_pull_opts pl = {.size = sizeof(pl), .snapshot = sa, .dest = out};
	CHECK(ss_pull(&pl, &cfg, NULL, err, sizeof(err)) == 0, "pull: %s", err);
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "diff -r %s %s >/dev/null", a, out);
	CHECK(system(cmd) == 0, "the pulled tree differs from the source");
	struct ss_verify_opts vo = {.size = sizeof(vo), .snapshot = sa};
	CHECK(ss_verify(&vo, &cfg, NULL, err, sizeof(err)) == 0, "verify: %s", err);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", shm);
	CHECK(system(cmd) == 0, "rm %s", shm);
}

/* --- a: follow mode with a growing file table --------------------------- */

#define FOLLOW_FILES 600     /* the table grows 16 -> 1024: six moves */
#define FOLLOW_BURST 20

struct writer {
	char dir[300];
	int made;
	uint64_t start, last;
	bool finished;
	int calls_after;     /* calls after it said it finished */
};

/* On the pushing thread, every few milliseconds. Once the push is busy
 * with the large file, create small files in bursts, so rescans add many
 * at a time while workers chunk its segments. */
static int writer_status(void *arg)
{
	struct writer *w = arg;
	if (w->finished) {
		w->calls_after++;
		return 1;
	}
	uint64_t t = now_ns();
	if (!w->start)
		w->start = t;
	if (t - w->start < 20000000ull || t - w->last < 5000000ull)
		return 0;
	w->last = t;
	for (int i = 0; i < FOLLOW_BURST && w->made < FOLLOW_FILES; i++, w->made++) {
		char p[400];
		snprintf(p, sizeof(p), "%s/small-%04d", w->dir, w->made);
		write_random(p, 4096 + (size_t)w->made);
	}
	if (w->made < FOLLOW_FILES)
		return 0;
	w->finished = true;
	return 1;
}

static void test_follow_many_files(void)
{
	struct writer w = {0};
	path_of(w.dir, sizeof(w.dir), "follow");
	REQUIRE(mkdir(w.dir, 0755) == 0, "mkdir");
	char big[400], snap[300], err[512] = "";
	snprintf(big, sizeof(big), "%s/big", w.dir);
	write_random(big, 96u << 20);   /* 24 segments for the workers */
	path_of(snap, sizeof(snap), "snaps/follow");
	struct ss_config cfg = base_cfg();
	struct ss_push_opts po = {.size = sizeof(struct ss_push_opts), .source = w.dir, .snapshot = snap,
				  .writer_status = writer_status, .writer_arg = &w};
	struct ss_stats st = SS_STATS_INIT;
	int r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "follow push: %s", err);
	CHECK(w.made == FOLLOW_FILES, "the writer made its files (%d)", w.made);
	CHECK(st.files == FOLLOW_FILES + 1, "the snapshot holds every file (%llu)",
	      (unsigned long long)st.files);
	CHECK(w.calls_after == 0, "writer_status asked %d times after it said it finished",
	      w.calls_after);
	struct ss_verify_opts vo = {.size = sizeof(struct ss_verify_opts), .snapshot = snap};
	r = ss_verify(&vo, &cfg, NULL, err, sizeof(err));
	CHECK(r == 0, "the followed snapshot verifies: %s", err);
}

static int writer_done(void *arg)
{
	(*(int *)arg)++;
	return 1;
}

static void test_follow_empty(void)
{
	char dir[300], snap[300], err[512] = "";
	path_of(dir, sizeof(dir), "empty");
	REQUIRE(mkdir(dir, 0755) == 0, "mkdir");
	path_of(snap, sizeof(snap), "snaps/empty");
	int calls = 0;
	struct ss_config cfg = base_cfg();
	struct ss_push_opts po = {.size = sizeof(struct ss_push_opts), .source = dir, .snapshot = snap, .writer_status = writer_done,
				  .writer_arg = &calls};
	struct ss_stats st = SS_STATS_INIT;
	int r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "follow push of an empty directory: %s", err);
	CHECK(st.files == 0, "no files (%llu)", (unsigned long long)st.files);
	CHECK(calls == 1, "writer_status asked %d times, once is enough", calls);
}

/* --- compressors that cannot be made ------------------------------------ */

static void test_no_cctx(void)
{
	char src[300], snap[300], err[512] = "";
	path_of(src, sizeof(src), "cctx.img");
	write_random(src, 1u << 20);
	path_of(snap, sizeof(snap), "snaps/cctx");
	struct ss_config cfg = base_cfg();
	struct ss_push_opts po = {.size = sizeof(struct ss_push_opts), .source = src, .snapshot = snap};
	atomic_store(&fail_cctx, 1);
	int r = ss_push(&po, &cfg, NULL, err, sizeof(err));
	atomic_store(&fail_cctx, 0);
	CHECK(r == -ENOMEM, "push without compressors: %d (%s)", r, err);

	int fd = open(src, O_RDONLY | O_CLOEXEC);
	REQUIRE(fd >= 0, "open");
	path_of(snap, sizeof(snap), "snaps/cctx-fd");
	po.source = NULL;
	po.snapshot = snap;
	atomic_store(&fail_cctx, 1);
	r = ss_push_fd(&po, fd, "cctx.img", &cfg, NULL, err, sizeof(err));
	atomic_store(&fail_cctx, 0);
	close(fd);
	CHECK(r == -ENOMEM, "stream push without compressors: %d (%s)", r, err);
}

/* --- g: a loop that fails with reads in flight --------------------------- */

struct feeder {
	atomic_bool stop;
	atomic_ullong fed_at;
};

static void *feed(void *arg)
{
	struct feeder *f = arg;
	usleep(500 * 1000);
	int fd = open(fifo_path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	atomic_store(&f->fed_at, now_ns());
	if (fd < 0)
		return NULL;   /* ENXIO: the push no longer reads it */
	static uint8_t buf[4096];
	while (!atomic_load(&f->stop)) {
		if (write(fd, buf, sizeof(buf)) < 0)
			usleep(1000);
	}
	close(fd);
	return NULL;
}

static void test_loop_failure_drains(void)
{
	char src[300], snap[300], err[512] = "";
	path_of(src, sizeof(src), "reads.img");
	write_random(src, 16u << 20);   /* what push stats: four segments */
	path_of(fifo_path, sizeof(fifo_path), "reads.fifo");
	REQUIRE(mkfifo(fifo_path, 0600) == 0, "mkfifo");
	path_of(snap, sizeof(snap), "snaps/reads");
	snprintf(fifo_as, sizeof(fifo_as), "%s", src);

	struct feeder f = {0};
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, feed, &f) == 0, "thread");
	struct ss_config cfg = base_cfg();
	struct ss_push_opts po = {.size = sizeof(struct ss_push_opts), .source = src, .snapshot = snap};
	int r = ss_push(&po, &cfg, NULL, err, sizeof(err));
	uint64_t returned = now_ns();
	atomic_store(&f.stop, true);
	pthread_join(th, NULL);
	fifo_as[0] = 0;
	bool broke = atomic_load(&ring_broken);
	atomic_store(&ring_broken, false);
	atomic_store(&fifo_fd, -1);

	REQUIRE(broke, "the ring failed with a read of the FIFO in flight");
	CHECK(r == -EIO, "push reports the loop's failure: %d (%s)", r, err);
	uint64_t fed = atomic_load(&f.fed_at);
	CHECK(fed && returned > fed,
	      "push returned (and freed its buffers) %.3f s before its reads completed",
	      fed ? (double)(fed - returned) / 1e9 : 0.5);
}

/* --- repeated pages ------------------------------------------------------ */

/* Pages of a pool repeated at scattered offsets among unique random pages
 * and zero pages: each pool page is stored once, wherever it occurs (the
 * first copy included); the same image pushed again without a parent
 * stores nothing (where pages become chunks depends on the image alone);
 * the image comes back byte-exact. Random pages, so compression cannot
 * stand in for dedup. */
static void test_repeated_pages(void)
{
	enum { POOL = 64, PAGES = 6144 };
	char src[300], snap[300], snap2[300], out[300], err[512] = "";
	path_of(src, sizeof(src), "pages.img");
	path_of(snap, sizeof(snap), "snaps/pages");
	path_of(snap2, sizeof(snap2), "snaps/pages2");
	path_of(out, sizeof(out), "pages.out");
	uint8_t *pool = malloc((size_t)POOL * 4096), *img = calloc(PAGES, 4096);
	REQUIRE(pool && img, "out of memory");
	for (size_t i = 0; i < (size_t)POOL * 4096; i += 8) {
		uint64_t v = rnd();
		memcpy(pool + i, &v, 8);
	}
	uint64_t unique = 0, repeats = 0;
	bool used[POOL] = {false};
	for (size_t p = 0; p < PAGES; p++) {
		uint8_t *d = img + p * 4096;
		unsigned k = (unsigned)(rnd() % 10);
		if (k < 4) {
			unsigned w = (unsigned)(rnd() % POOL);
			memcpy(d, pool + (size_t)w * 4096, 4096);
			used[w] = true;
			repeats++;
		} else if (k < 8) {
			for (size_t i = 0; i < 4096; i += 8) {
				uint64_t v = rnd();
				memcpy(d + i, &v, 8);
			}
			unique++;
		}
	}
	unsigned distinct = 0;
	for (unsigned w = 0; w < POOL; w++)
		distinct += used[w];
	int fd = open(src, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	REQUIRE(fd >= 0 && write(fd, img, (size_t)PAGES * 4096) == (ssize_t)PAGES * 4096, "write");
	close(fd);

	struct ss_config cfg = base_cfg();
	struct ss_push_opts po = {.size = sizeof(po), .source = src, .snapshot = snap};
	struct ss_stats st = {.size = sizeof(st)};
	int r = ss_push(&po, &cfg, &st, err, sizeof(err));
	CHECK(r == 0, "push: %s", err);
	/* Unique pages, and each pool page once; a page a chunk of its own
	 * costs the chunk next to it nothing. */
	uint64_t want = (unique + distinct) * 4096;
	CHECK(st.new_raw_bytes == want, "stored %llu raw bytes, want %llu (%llu repeats)",
	      (unsigned long long)st.new_raw_bytes, (unsigned long long)want,
	      (unsigned long long)repeats);

	po.snapshot = snap2;
	struct ss_stats st2 = {.size = sizeof(st2)};
	r = ss_push(&po, &cfg, &st2, err, sizeof(err));
	CHECK(r == 0 && st2.new_raw_bytes == 0, "the same image again stored %llu bytes: %s",
	      (unsigned long long)st2.new_raw_bytes, err);

	struct ss_pull_opts pl = {.size = sizeof(pl), .snapshot = snap, .dest = out};
	r = ss_pull(&pl, &cfg, NULL, err, sizeof(err));
	CHECK(r == 0, "pull: %s", err);
	uint8_t *back = malloc((size_t)PAGES * 4096);
	fd = open(out, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && back && read(fd, back, (size_t)PAGES * 4096) == (ssize_t)PAGES * 4096 &&
		      memcmp(back, img, (size_t)PAGES * 4096) == 0,
	      "pulled image differs");
	if (fd >= 0)
		close(fd);
	free(back);
	free(pool);
	free(img);
}

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{"chunk-sizes", test_chunk_sizes},
	{"not-regular", test_not_regular},
	{"follow-empty", test_follow_empty},
	{"no-cctx", test_no_cctx},
	{"loop-failure", test_loop_failure_drains},
	{"follow-many", test_follow_many_files},
	{"sparse", test_sparse},
	{"zero-runs", test_zero_runs_read_once},
	{"repeated-pages", test_repeated_pages},
	{"small-files-memfs", test_small_files_memfs},
};

/* test_push [name...]: the cases named, or all. */
int main(int argc, char **argv)
{
	/* The FIFO's feeder may write after the push closed it. */
	signal(SIGPIPE, SIG_IGN);
	snprintf(root, sizeof(root), "/tmp/ss-push-XXXXXX");
	REQUIRE(mkdtemp(root), "mkdtemp");
	char p[300];
	path_of(p, sizeof(p), "snaps");
	REQUIRE(mkdir(p, 0755) == 0, "mkdir");

	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		bool run = argc < 2;
		for (int a = 1; a < argc; a++)
			run |= !strcmp(argv[a], tests[i].name);
		if (run)
			tests[i].fn();
	}

	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", root);
	if (failures)
		fprintf(stderr, "%d failure(s)\n", failures);
	return failures ? 1 : 0;
}
