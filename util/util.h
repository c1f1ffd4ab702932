/* util — small helpers shared by every module: error messages, hex ids,
 * little-endian codecs, checked arithmetic, page-aligned buffers.
 *
 * All functions are thread-safe unless stated otherwise (they hold no state).
 */
#ifndef SS_UTIL_H
#define SS_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <string.h>

#define SS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SS_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SS_ALIGN_UP(x, a) (((x) + (a) - 1) / (a) * (a))

/* A human-readable reason that travels with a -errno return. Library code
 * never prints: it fills one of these and the layer above decides how to
 * report. The first error set wins, so the root cause survives unwinding. */
struct ss_err {
	int code;       /* negative errno, 0 when unset */
	char msg[512];
};

/* Record code and a printf-style message unless an error is already set.
 * Returns code so callers can write `return ss_err_set(e, -EIO, "...")`.
 * e may be NULL. */
int ss_err_set(struct ss_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void ss_err_clear(struct ss_err *e);

/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void ss_hex(const uint8_t *in, size_t n, char *out);
/* Parse exactly 2n hex digits; returns 0 or -EINVAL. */
int ss_unhex(const char *in, uint8_t *out, size_t n);

static inline void ss_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void ss_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t ss_get_le32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint64_t ss_get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* True when all n bytes are zero. Fast path for page-sized checks. */
bool ss_is_zero(const void *p, size_t n);

/* A byte count as users write one: digits with an optional K, M, G or T
 * suffix (powers of 1024) and an optional B after it, within [lo, hi].
 * The bound is checked before the suffix multiplies, so nothing wraps.
 * False for anything else. */
bool ss_parse_bytes(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* Memory this process may still fill without pushing the node or its own
 * memory cgroup (v2, or v1's memory controller) into reclaim: the
 * kernel's MemAvailable, or what is left under the cgroup's limit if that
 * is less; 0 when neither can be read. */
uint64_t ss_memory_left(void);

/* Monotonic clock in nanoseconds. */
uint64_t ss_now_ns(void);

/* Anonymous, page-aligned memory straight from mmap, so that freeing it
 * returns it to the kernel (peak RSS stays a function of configuration).
 * From 1 MiB up, whole huge pages are mapped (ss_map_huge_len), which the
 * kernel aligns, and asked for; free with the same n. Returns NULL on
 * failure. ss_map_free(NULL, n) is a no-op. */
void *ss_map_alloc(size_t n);
/* A transparent huge page. */
#define SS_HUGE_PAGE ((size_t)2 << 20)
/* The length to map for a buffer of n bytes that is filled front to back
 * and should get huge pages: whole ones (what ss_map_alloc maps from
 * 1 MiB up). A mapping of any other length is not aligned to a huge page,
 * and its straddling pages fault 4 KiB at a time. */
size_t ss_map_huge_len(size_t n);
/* The same for buffers only part of which is written per use (a segment's
 * compressed output, a range's stored bytes): 4 KiB pages, so that what is
 * faulted in is what is written, not the 2 MiB around it. */
void *ss_map_alloc_sparse(size_t n);
void ss_map_free(void *p, size_t n);

/* Growable byte buffer with a hard cap: appends past `cap` fail with
 * -EFBIG instead of growing without bound. */
struct ss_buf {
	uint8_t *data;
	size_t len;
	size_t alloc;
	size_t cap;
};
int ss_buf_reserve(struct ss_buf *b, size_t extra);
int ss_buf_append(struct ss_buf *b, const void *p, size_t n);
void ss_buf_free(struct ss_buf *b);

/* Room for need elements in a growable array: arrp is the address of the
 * array's pointer (T **), holding *cap elements of elem bytes. When need
 * is more than *cap, the array is reallocated to twice *cap (first when
 * *cap is 0), or to need when that is more, and *cap set to that. Returns
 * 0, or -ENOMEM (out of memory, or a size past SIZE_MAX) leaving the array
 * and *cap as they were. SS_GROW takes the array and its size_t capacity
 * themselves: SS_GROW(v, vcap, n + 1, 64). */
int ss_grow(void *arrp, size_t *cap, size_t need, size_t elem, size_t first);
#define SS_GROW(arr, cap, need, first) ss_grow(&(arr), &(cap), (need), sizeof(*(arr)), (first))

/* Read a whole regular file of at most max bytes (blocking; for small
 * metadata only). Returns 0, -ENOENT, -EFBIG, or another -errno. */
int ss_read_small_file(const char *path, size_t max, uint8_t **out, size_t *outlen);

/* Write a small file atomically: temp name in the same directory, fsync,
 * rename, fsync of the directory. Blocking; for metadata only. */
int ss_write_file_atomic(const char *path, const void *p, size_t n, unsigned mode);

/* Write all of v[0, n) to fd: at offset off with pwritev, or at the file's
 * position (writev) when off is negative; short writes are resumed (v is
 * consumed). Returns the bytes written, or -errno (-EIO: no progress). */
int64_t ss_writev_all(int fd, struct iovec *v, unsigned n, int64_t off);

/* Read exactly len bytes at off with pread, resuming short reads. Returns
 * 0, or -errno (-EIO: the file ends first). */
int ss_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* mkdir -p. Returns 0 or -errno. */
int ss_mkdir_p(const char *path, unsigned mode);

/* Online CPUs, at least 1. */
unsigned ss_cpu_count(void);

#endif
