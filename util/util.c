#include "util.h"

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int ss_err_set(struct ss_err *e, int code, const char *fmt, ...)
{
	if (!e || e->code)
		return code;
	e->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return code;
}

void ss_err_clear(struct ss_err *e)
{
	if (e) {
		e->code = 0;
		e->msg[0] = '\0';
	}
}

void ss_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ss_unhex(const char *in, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hexval(in[2 * i]);
		int lo = hi < 0 ? -1 : hexval(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return in[2 * n] == '\0' ? 0 : -EINVAL;
}

bool ss_is_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	/* Memory pages that are not zero usually differ in the first bytes:
	 * check a word first, then compare the buffer with itself shifted,
	 * which libc vectorises. */
	if (n < 16) {
		for (size_t i = 0; i < n; i++)
			if (b[i])
				return false;
		return true;
	}
	uint64_t w;
	memcpy(&w, b, 8);
	if (w)
		return false;
	memcpy(&w, b + n - 8, 8);
	if (w)
		return false;
	return memcmp(b, b + 8, n - 8) == 0;
}

bool ss_parse_bytes(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	unsigned shift = 0;
	/* memchr over the four letters: strchr would also find the string's
	 * end, taking "1 " (' ' & ~0x20 is 0) for 1 PiB. */
	static const char suf[4] = {'K', 'M', 'G', 'T'};
	const char *at = *end ? memchr(suf, *end & ~0x20, sizeof(suf)) : NULL;
	if (at) {
		shift = 10 * (unsigned)(at - suf + 1);
		end++;
		if (*end == 'B' || *end == 'b')
			end++;
	}
	if (*end || v > (hi >> shift))
		return false;
	v <<= shift;
	if (v < lo)
		return false;
	*out = v;
	return true;
}

/* A number from the first line of path that starts with key ("" for the
 * first line), in units of mult; UINT64_MAX when there is none ("max" in
 * a cgroup file is none too). */
static uint64_t read_number(const char *path, const char *key, uint64_t mult)
{
	FILE *fp = fopen(path, "re");
	if (!fp)
		return UINT64_MAX;
	char line[256];
	uint64_t v = UINT64_MAX;
	size_t kl = strlen(key);
	while (fgets(line, sizeof(line), fp)) {
		if (strncmp(line, key, kl))
			continue;
		char *end;
		errno = 0;
		unsigned long long x = strtoull(line + kl, &end, 10);
		if (!errno && end != line + kl && x <= UINT64_MAX / mult)
			v = (uint64_t)x * mult;
		break;
	}
	fclose(fp);
	return v;
}

/* What is left under a memory cgroup's limit: max and current are the
 * files holding its limit and its usage. UINT64_MAX when unlimited or
 * unreadable. */
static uint64_t cgroup_left(const char *dir, const char *max, const char *cur)
{
	char path[700];
	snprintf(path, sizeof(path), "%s/%s", dir, max);
	uint64_t m = read_number(path, "", 1);
	snprintf(path, sizeof(path), "%s/%s", dir, cur);
	uint64_t c = read_number(path, "", 1);
	if (m == UINT64_MAX || c == UINT64_MAX)
		return UINT64_MAX;
	return m > c ? m - c : 0;
}

/* Memory this process may still fill without pushing the node or its own
 * memory cgroup (v2, or v1's memory controller) into reclaim: the
 * kernel's MemAvailable, or what is left under the cgroup's limit if that
 * is less. */
uint64_t ss_memory_left(void)
{
	uint64_t left = read_number("/proc/meminfo", "MemAvailable:", 1024);
	FILE *fp = fopen("/proc/self/cgroup", "re");
	char line[600];
	while (fp && fgets(line, sizeof(line), fp)) {
		line[strcspn(line, "\n")] = 0;
		char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
		if (!path)
			continue;
		*path++ = 0;
		ctl++;
		char dir[640];
		uint64_t l = UINT64_MAX;
		if (!*ctl) {
			snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", path);
			l = cgroup_left(dir, "memory.max", "memory.current");
		} else {
			for (char *sv, *c = strtok_r(ctl, ",", &sv); c; c = strtok_r(NULL, ",", &sv))
				if (!strcmp(c, "memory")) {
					snprintf(dir, sizeof(dir), "/sys/fs/cgroup/memory%s", path);
					l = cgroup_left(dir, "memory.limit_in_bytes",
							"memory.usage_in_bytes");
				}
		}
		left = SS_MIN(left, l);
	}
	if (fp)
		fclose(fp);
	return left == UINT64_MAX ? 0 : left;
}

uint64_t ss_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* From 1 MiB up a buffer gets huge pages: whole ones, which the kernel
 * places on a huge page boundary. An anonymous mapping of another length
 * is placed anywhere, and only the huge pages wholly inside it can be
 * used: the 3 MiB pack buffers and 1 MiB frame buffers of a push got none,
 * and their first fill faulted 4 KiB at a time (on a VM, 5-11 us a page:
 * 1,500 of a 64 MiB push's 2,700 faults). A huge page costs one fault and
 * a 2 MiB clear, and what is never written costs nothing. */
#define HUGE_FROM (SS_HUGE_PAGE / 2)

size_t ss_map_huge_len(size_t n)
{
	return SS_ALIGN_UP(n ? n : 1, SS_HUGE_PAGE);
}

static size_t map_len(size_t n)
{
	return n >= HUGE_FROM ? ss_map_huge_len(n) : (n ? n : 1);
}

void *ss_map_alloc(size_t n)
{
	size_t len = map_len(n);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Large buffers (segment pools, packs, frames) are filled front to
	 * back on every run: one fault per 2 MiB huge page instead of one
	 * per 4 KiB page, where the kernel allows it (THP "madvise"). */
	if (n >= HUGE_FROM)
		madvise(p, len, MADV_HUGEPAGE);
	return p;
}

void *ss_map_alloc_sparse(size_t n)
{
	size_t len = map_len(n);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Under THP "always" the kernel would back it with huge pages all the
	 * same. */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

void ss_map_free(void *p, size_t n)
{
	if (p)
		munmap(p, map_len(n));
}

int ss_buf_reserve(struct ss_buf *b, size_t extra)
{
	if (extra > SIZE_MAX - b->len)
		return -EFBIG;
	size_t need = b->len + extra;
	if (b->cap && need > b->cap)
		return -EFBIG;
	if (need <= b->alloc)
		return 0;
	size_t n = b->alloc ? b->alloc : 256;
	while (n < need)
		n = n > SIZE_MAX / 2 ? need : n * 2;
	if (b->cap && n > b->cap)
		n = b->cap;
	uint8_t *d = realloc(b->data, n);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->alloc = n;
	return 0;
}

int ss_grow(void *arrp, size_t *cap, size_t need, size_t elem, size_t first)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? (*cap > SIZE_MAX / 2 ? SIZE_MAX : *cap * 2) : first;
	if (n < need)
		n = need;
	if (!elem || n > SIZE_MAX / elem)
		return -ENOMEM;
	/* The array's pointer is read and written as bytes: arrp points at a
	 * T *, not at a void *. */
	void *a;
	memcpy(&a, arrp, sizeof(a));
	a = realloc(a, n * elem);
	if (!a)
		return -ENOMEM;
	memcpy(arrp, &a, sizeof(a));
	*cap = n;
	return 0;
}

int ss_buf_append(struct ss_buf *b, const void *p, size_t n)
{
	int r = ss_buf_reserve(b, n);
	if (r)
		return r;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void ss_buf_free(struct ss_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
}

int ss_read_small_file(const char *path, size_t max, uint8_t **out, size_t *outlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = 0;
	struct stat st;
	uint8_t *buf = NULL;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		r = -EFBIG;
		goto out;
	}
	size_t n = (size_t)st.st_size;
	buf = malloc(n ? n : 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	size_t got = 0;
	while (got < n) {
		ssize_t k = read(fd, buf + got, n - got);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto out;
		}
		if (k == 0)
			break;
		got += (size_t)k;
	}
	*out = buf;
	*outlen = got;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return r;
}

static int fsync_dir_of(const char *path)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int dfd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	int r = fsync(dfd) < 0 ? -errno : 0;
	close(dfd);
	return r;
}

int ss_write_file_atomic(const char *path, const void *p, size_t n, unsigned mode)
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = 0;
	const uint8_t *b = p;
	size_t done = 0;
	while (done < n) {
		ssize_t k = write(fd, b + done, n - done);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		done += (size_t)k;
	}
	if (!r && fchmod(fd, mode) < 0)
		r = -errno;
	if (!r && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && !r)
		r = -errno;
	if (!r && rename(tmp, path) < 0)
		r = -errno;
	if (r) {
		unlink(tmp);
		return r;
	}
	return fsync_dir_of(path);
}

int ss_mkdir_p(const char *path, unsigned mode)
{
	char tmp[PATH_MAX];
	size_t n = strlen(path);
	if (n == 0)
		return -EINVAL;
	if (n >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		char c = tmp[i];
		tmp[i] = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		tmp[i] = c;
	}
	struct stat st;
	if (stat(path, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

unsigned ss_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

int ss_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	for (size_t got = 0; got < len;) {
		ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		got += (size_t)n;
	}
	return 0;
}

int64_t ss_writev_all(int fd, struct iovec *v, unsigned n, int64_t off)
{
	int64_t done = 0;
	while (n) {
		int cnt = (int)(n < IOV_MAX ? n : IOV_MAX);
		ssize_t w = off < 0 ? writev(fd, v, cnt) : pwritev(fd, v, cnt, (off_t)(off + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		done += w;
		while (n && (size_t)w >= v->iov_len) {
			w -= (ssize_t)v->iov_len;
			v++;
			n--;
		}
		if (n) {
			v->iov_base = (uint8_t *)v->iov_base + w;
			v->iov_len -= (size_t)w;
		}
	}
	return done;
}
