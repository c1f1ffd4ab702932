/* ncache — the node cache's directory (ncache.h; docs/DESIGN.md, "The
 * node cache"):
 *
 *   <dir>/state          counters shared by every process (mapped, atomics)
 *   <dir>/recent         when each block was last read: one 32-bit second
 *                        per slot, a block's slot by its name (mapped)
 *   <dir>/present        which blocks are there, as far as a hint can say:
 *                        a 16-bit fingerprint per slot (mapped)
 *   <dir>/lock           OFD locks: byte 0 eviction, byte 1 setup, and one
 *                        byte per block being fetched (at its key's hash)
 *   <dir>/blocks/xx/...  one file per block: a header, then its bytes
 *   <dir>/tmp/           blocks being written, renamed into blocks/ whole
 *
 * Least recently used means oldest use: a block's mtime says when it was
 * written, its slot in recent/ when it was last read; eviction takes the
 * later of the two. A read thus costs no system call beyond open, one
 * read and close; slots shared by two blocks only make the older look
 * newer, which keeps it a little longer.
 *
 * Plans ask whether blocks are there (ss_ncache_has) about as often as
 * they read them: a warm 256 MiB pull asked ~900 times, a stat each,
 * ~3 ms before its first read. present/ answers without a system call
 * when a block's fingerprint is in its slot (set when the block is
 * written or read, cleared when it is removed); any other answer falls
 * back to the stat. A fingerprint left behind by a block removed by hand,
 * or matching by chance (1 in 32,768: fingerprints are odd), only makes a
 * plan read through a gap the cache lacks: slower, never wrong. */
#include "core.h"
#include "ncache.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "xxh.h"

#define NC_MAGIC "ssncach1"
#define NC_HDR SS_NCACHE_HEADER
#define LOCK_EVICT 0
#define LOCK_SETUP 1
#define LOCK_BLOCKS 4096        /* block locks live above the fixed bytes */
/* Slots of <dir>/recent: 1 MiB, about 16 GiB of blocks at one each. */
#define RECENT_SLOTS (1u << 18)
/* Slots of <dir>/present: 2 MiB, so that a full cache of 10 GiB of
 * blocks (160 Ki) overwrites few of its own fingerprints. */
#define PRESENT_SLOTS (1u << 20)
/* Temp files older than this belong to a process that died writing. */
#define TMP_STALE_NS (60ull * 1000000000ull)

/* The shared state file. Counters only ever move by atomic adds, except
 * bytes and entries, which an eviction's scan sets to what it found. */
struct nc_state {
	char magic[8];
	uint32_t version, block;
	uint64_t bytes, entries, bound;
	uint64_t hits, misses, hit_bytes, fetched_bytes, written_bytes;
	uint64_t evicted, evicted_bytes;
};

struct ss_ncache {
	int dfd, bfd, tfd, lockfd;
	struct nc_state *st;
	uint32_t *recent;   /* RECENT_SLOTS; NULL: mtimes alone (futimens) */
	uint16_t *present;  /* PRESENT_SLOTS; NULL: every question is a stat */
	uint64_t bound;
	uint32_t block;     /* bytes per block: SS_NCACHE_BLOCK, or an older cache's */
	unsigned tmpseq;
};

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void add(uint64_t *p, int64_t n)
{
	__atomic_fetch_add(p, (uint64_t)n, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- locks */

static int ofd(int fd, int cmd, short type, uint64_t at)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = (off_t)at,
			   .l_len = 1};
	return fcntl(fd, cmd, &fl) < 0 ? -errno : 0;
}

static uint64_t lock_at(const uint8_t key[16])
{
	/* Any byte of a file can be locked, however short the file: a
	 * 62-bit hash keeps two blocks from sharing one. */
	return LOCK_BLOCKS + (ss_get_le64(key) & ((1ull << 62) - 1));
}

int ss_ncache_lock(struct ss_ncache *c, const uint8_t key[16])
{
	int r = ofd(c->lockfd, F_OFD_SETLK, F_WRLCK, lock_at(key));
	return r == -EACCES ? -EAGAIN : r;
}

void ss_ncache_unlock(struct ss_ncache *c, const uint8_t key[16])
{
	ofd(c->lockfd, F_OFD_SETLK, F_UNLCK, lock_at(key));
}

/* ---------------------------------------------------------------- open */

static int check_dir(int fd, const char *dir, struct ss_err *err)
{
	struct stat s;
	if (fstat(fd, &s))
		return ss_err_set(err, -errno, "cache %s: %s", dir, strerror(errno));
	if (s.st_uid != geteuid())
		return ss_err_set(err, -EPERM,
				  "cache %s belongs to another user (uid %u): its blocks would "
				  "be theirs to read and replace",
				  dir, (unsigned)s.st_uid);
	if (s.st_mode & 022)
		return ss_err_set(err, -EPERM,
				  "cache %s may be written by others (mode %04o): chmod go-w it",
				  dir, (unsigned)(s.st_mode & 07777));
	return 0;
}

static int open_sub(int dfd, const char *name, bool create, int *out)
{
	if (create && mkdirat(dfd, name, 0700) && errno != EEXIST)
		return -errno;
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*out = fd;
	return 0;
}

/* Set up the state file and the block directories once (under the setup
 * lock, so two first openers do not both initialise). */
static int setup(struct ss_ncache *c, bool must_exist, const char *dir, struct ss_err *err)
{
	int r, sfd = openat(c->dfd, "state", O_RDWR | O_NOFOLLOW | O_CLOEXEC | (must_exist ? 0 : O_CREAT),
			    0600);
	if (sfd < 0) {
		if (errno == ENOENT && must_exist)
			return ss_err_set(err, -ENOENT, "%s is no snapstream cache", dir);
		return ss_err_set(err, -errno, "cache %s: cannot open its state: %s", dir,
				  strerror(errno));
	}
	if ((r = ofd(c->lockfd, F_OFD_SETLKW, F_WRLCK, LOCK_SETUP))) {
		close(sfd);
		return ss_err_set(err, r, "cache %s: cannot lock: %s", dir, strerror(-r));
	}
	struct stat s;
	char magic[8] = {0};
	if (fstat(sfd, &s) || (s.st_size >= (off_t)sizeof(struct nc_state) &&
			       pread(sfd, magic, sizeof(magic), 0) != (ssize_t)sizeof(magic))) {
		r = ss_err_set(err, -errno, "cache %s: cannot read its state: %s", dir,
			       strerror(errno));
		goto out;
	}
	if (s.st_size != (off_t)sizeof(struct nc_state) || memcmp(magic, NC_MAGIC, 8)) {
		if (must_exist) {
			r = ss_err_set(err, -ENOENT, "%s is no snapstream cache", dir);
			goto out;
		}
		/* New, or damaged: start the counters again (an eviction's scan
		 * sets size and entries from the blocks themselves). */
		struct nc_state fresh = {.version = 1, .block = SS_NCACHE_BLOCK};
		memcpy(fresh.magic, NC_MAGIC, 8);
		if (ftruncate(sfd, 0) || pwrite(sfd, &fresh, sizeof(fresh), 0) != sizeof(fresh)) {
			r = ss_err_set(err, -errno, "cache %s: cannot write its state: %s", dir,
				       strerror(errno));
			goto out;
		}
	}
	c->st = mmap(NULL, sizeof(struct nc_state), PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	if (c->st == MAP_FAILED) {
		c->st = NULL;
		r = ss_err_set(err, -errno, "cache %s: cannot map its state: %s", dir, strerror(errno));
		goto out;
	}
	/* Its block size is the one it was made with: caches made before
	 * blocks grew to 256 KiB keep their 64 KiB ones. */
	c->block = c->st->block;
	uint32_t file = c->block + NC_HDR;
	if (c->block < NC_HDR || file < (64u << 10) || file > (1u << 20) || (file & (file - 1))) {
		r = ss_err_set(err, -EINVAL, "cache %s has blocks of %u bytes, which this snapstream cannot use", dir,
			       c->st->block);
		goto out;
	}
	if ((r = open_sub(c->dfd, "blocks", !must_exist, &c->bfd)) ||
	    (r = open_sub(c->dfd, "tmp", !must_exist, &c->tfd))) {
		ss_err_set(err, r, "cache %s: %s", dir, strerror(-r));
		goto out;
	}
	/* Made in order: when the last exists, so do the others (and a put
	 * whose directory was removed by hand makes it again). */
	struct stat last;
	bool made = fstatat(c->bfd, "ff", &last, AT_SYMLINK_NOFOLLOW) == 0;
	for (unsigned i = 0; i < 256 && !must_exist && !made; i++) {
		char sub[3];
		snprintf(sub, sizeof(sub), "%02x", i);
		if (mkdirat(c->bfd, sub, 0700) && errno != EEXIST) {
			r = ss_err_set(err, -errno, "cache %s: %s", dir, strerror(errno));
			goto out;
		}
	}
	r = 0;
out:
	ofd(c->lockfd, F_OFD_SETLK, F_UNLCK, LOCK_SETUP);
	close(sfd);
	return r;
}

/* Map the table <dir>/name of size bytes, allocated in full first: a page
 * of a shared mapping that a full file system cannot back is SIGBUS when
 * written. Where that cannot be done, NULL: the callers do without. */
static void *map_table(struct ss_ncache *c, const char *name, size_t size, bool must_exist)
{
	void *p = NULL;
	int fd = openat(c->dfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | (must_exist ? 0 : O_CREAT),
			0600);
	if (fd < 0)
		return NULL;
	struct stat s;
	if (fstat(fd, &s) == 0 && S_ISREG(s.st_mode) &&
	    (s.st_size == (off_t)size || posix_fallocate(fd, 0, (off_t)size) == 0)) {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			p = NULL;
	}
	close(fd);
	return p;
}

static uint32_t *recent_slot(struct ss_ncache *c, const uint8_t key[16])
{
	return c->recent ? &c->recent[ss_get_le64(key) % RECENT_SLOTS] : NULL;
}

/* A block's slot in present/ and its fingerprint there (never 0, which
 * is an empty slot): other bits of its name than the slot's. */
static uint16_t *present_slot(struct ss_ncache *c, const uint8_t key[16], uint16_t *fp)
{
	*fp = (uint16_t)(ss_get_le32(key + 8) | 1u);
	return c->present ? &c->present[ss_get_le64(key) % PRESENT_SLOTS] : NULL;
}

static void present_note(struct ss_ncache *c, const uint8_t key[16], bool there)
{
	uint16_t fp, *slot = present_slot(c, key, &fp);
	if (!slot)
		return;
	if (there) {
		if (__atomic_load_n(slot, __ATOMIC_RELAXED) != fp)
			__atomic_store_n(slot, fp, __ATOMIC_RELAXED);
	} else {
		/* Only its own: another block's fingerprint stays. */
		__atomic_compare_exchange_n(slot, &fp, 0, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED);
	}
}

int ss_ncache_open(const char *dir, uint64_t bound, bool must_exist, struct ss_ncache **out,
		   struct ss_err *err)
{
	if (!dir || !*dir)
		return ss_err_set(err, -EINVAL, "no cache directory given");
	if (!bound)
		bound = SS_CACHE_SIZE_DEFAULT;
	if (bound < SS_CACHE_SIZE_MIN || bound > (1ull << 60))
		return ss_err_set(err, -EINVAL,
				  "cache size %llu is not between 16 MiB and 1 EiB",
				  (unsigned long long)bound);
	struct ss_ncache *c = calloc(1, sizeof(*c));
	if (!c)
		return ss_err_set(err, -ENOMEM, "out of memory");
	c->dfd = c->bfd = c->tfd = c->lockfd = -1;
	c->bound = bound;
	int r;
	if (!must_exist && (r = ss_mkdir_p(dir, 0700))) {
		ss_err_set(err, r, "cannot create cache %s: %s", dir, strerror(-r));
		goto fail;
	}
	c->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dfd < 0) {
		r = ss_err_set(err, -errno, "cache %s: %s", dir, strerror(errno));
		goto fail;
	}
	if ((r = check_dir(c->dfd, dir, err)))
		goto fail;
	c->lockfd = openat(c->dfd, "lock", O_RDWR | O_NOFOLLOW | O_CLOEXEC | (must_exist ? 0 : O_CREAT), 0600);
	if (c->lockfd < 0) {
		r = errno == ENOENT ? ss_err_set(err, -ENOENT, "%s is no snapstream cache", dir)
				    : ss_err_set(err, -errno, "cache %s: cannot open its lock: %s",
						 dir, strerror(errno));
		goto fail;
	}
	if ((r = setup(c, must_exist, dir, err)))
		goto fail;
	c->recent = map_table(c, "recent", RECENT_SLOTS * sizeof(uint32_t), must_exist);
	c->present = map_table(c, "present", PRESENT_SLOTS * sizeof(uint16_t), must_exist);
	if (!must_exist)
		__atomic_store_n(&c->st->bound, bound, __ATOMIC_RELAXED);
	*out = c;
	return 0;
fail:
	ss_ncache_free(c);
	return r;
}

void ss_ncache_free(struct ss_ncache *c)
{
	if (!c)
		return;
	if (c->st)
		munmap(c->st, sizeof(*c->st));
	if (c->recent)
		munmap(c->recent, RECENT_SLOTS * sizeof(uint32_t));
	if (c->present)
		munmap(c->present, PRESENT_SLOTS * sizeof(uint16_t));
	for (int *fd = &c->dfd; fd <= &c->lockfd; fd++)
		if (*fd >= 0)
			close(*fd);
	free(c);
}

uint32_t ss_ncache_block(const struct ss_ncache *c)
{
	return c->block;
}

void ss_ncache_count(struct ss_ncache *c, enum ss_ncache_counter what, uint64_t n)
{
	uint64_t *p[] = {[SS_NC_HITS] = &c->st->hits,
			 [SS_NC_MISSES] = &c->st->misses,
			 [SS_NC_HIT_BYTES] = &c->st->hit_bytes,
			 [SS_NC_FETCHED_BYTES] = &c->st->fetched_bytes,
			 [SS_NC_WRITTEN_BYTES] = &c->st->written_bytes};
	add(p[what], (int64_t)n);
}

/* ---------------------------------------------------------------- blocks */

void ss_ncache_key(const uint8_t store[16], const uint8_t pack[16], uint64_t k,
		   uint8_t key[16])
{
	uint8_t in[40];
	memcpy(in, store, 16);
	memcpy(in + 16, pack, 16);
	ss_put_le64(in + 32, k);
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)key, XXH3_128bits(in, sizeof(in)));
}

/* "xx/<30 hex>" under blocks/. */
static void block_path(const uint8_t key[16], char out[40])
{
	char hex[33];
	ss_hex(key, 16, hex);
	snprintf(out, 40, "%.2s/%s", hex, hex + 2);
}

bool ss_ncache_has(struct ss_ncache *c, const uint8_t key[16])
{
	uint16_t fp, *slot = present_slot(c, key, &fp);
	if (slot && __atomic_load_n(slot, __ATOMIC_RELAXED) == fp)
		return true;
	char p[40];
	struct stat st;
	block_path(key, p);
	bool there = fstatat(c->bfd, p, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
		     st.st_size > (off_t)NC_HDR;
	if (there)
		present_note(c, key, true);
	return there;
}

void ss_ncache_drop(struct ss_ncache *c, const uint8_t key[16])
{
	char p[40];
	struct stat s;
	block_path(key, p);
	present_note(c, key, false);
	if (fstatat(c->bfd, p, &s, AT_SYMLINK_NOFOLLOW) == 0 && unlinkat(c->bfd, p, 0) == 0) {
		add(&c->st->bytes, -(int64_t)s.st_size);
		add(&c->st->entries, -1);
	}
}

int ss_ncache_get(struct ss_ncache *c, const uint8_t key[16], uint64_t from, void *dst, size_t n,
		  uint32_t *blen)
{
	char p[40];
	block_path(key, p);
	int fd = openat(c->bfd, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	/* A whole block is the common read: header and bytes in one call.
	 * The bytes read prove the length (a torn block is short); nothing
	 * else needs the file's size. */
	uint8_t h[NC_HDR];
	ssize_t got;
	size_t data = 0;
	if (from == 0 && n) {
		struct iovec v[2] = {{h, NC_HDR}, {dst, n}};
		got = preadv(fd, v, 2, 0);
		data = got > (ssize_t)NC_HDR ? (size_t)got - NC_HDR : 0;
	} else {
		got = pread(fd, h, NC_HDR, 0);
	}
	uint32_t len = 0;
	bool ok = got >= (ssize_t)NC_HDR && !memcmp(h, NC_MAGIC, 8) && !memcmp(h + 8, key, 16) &&
		  (len = ss_get_le32(h + 24)) > 0 && len <= c->block;
	size_t want = ok && from < len ? SS_MIN(n, (size_t)(len - from)) : 0;
	if (ok && from == 0 && n)
		ok = data == want;   /* short: torn; longer: not what was written */
	else if (ok && want)
		ok = pread(fd, dst, want, (off_t)(NC_HDR + from)) == (ssize_t)want;
	uint32_t *slot = ok ? recent_slot(c, key) : NULL;
	struct timespec now;
	if (ok) {
		clock_gettime(CLOCK_REALTIME, &now);
		if (slot) {
			if (__atomic_load_n(slot, __ATOMIC_RELAXED) != (uint32_t)now.tv_sec)
				__atomic_store_n(slot, (uint32_t)now.tv_sec, __ATOMIC_RELAXED);
		} else {
			futimens(fd, NULL);
		}
		present_note(c, key, true);
	}
	close(fd);
	if (!ok) {
		/* Torn by a crash of the machine, or changed on disk: never
		 * served. */
		ss_ncache_drop(c, key);
		return -ENOENT;
	}
	*blen = len;
	return 0;
}

/* Entries sorted by age for eviction. */
struct victim {
	int64_t mtime_ns;
	uint64_t size;
	char path[40];
};

static int cmp_victim(const void *a, const void *b)
{
	const struct victim *x = a, *y = b;
	return (x->mtime_ns > y->mtime_ns) - (x->mtime_ns < y->mtime_ns);
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

/* Remove temp files of processes that died while writing them; returns
 * the bytes of those that are being written. */
static uint64_t sweep_tmp(struct ss_ncache *c, int64_t now_ns)
{
	int fd = dup(c->tfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	uint64_t live = 0;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	rewinddir(d);
	struct dirent *e;
	struct stat s;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || fstatat(c->tfd, e->d_name, &s, AT_SYMLINK_NOFOLLOW))
			continue;
		if (now_ns - ts_ns(&s.st_mtim) > (int64_t)TMP_STALE_NS)
			unlinkat(c->tfd, e->d_name, 0);
		else
			live += (uint64_t)s.st_size;
	}
	closedir(d);
	return live;
}

/* Scan every block, then remove the least recently used until at most
 * target bytes remain; size and entries are set from the scan. Under the
 * eviction lock, so scans do not race each other. Returns 0 or -errno. */
static int evict(struct ss_ncache *c, uint64_t target, uint64_t *removed, uint64_t *removed_bytes)
{
	int r = ofd(c->lockfd, F_OFD_SETLKW, F_WRLCK, LOCK_EVICT);
	if (r)
		return r;
	struct victim *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	for (unsigned i = 0; i < 256; i++) {
		char sub[3];
		snprintf(sub, sizeof(sub), "%02x", i);
		int fd = openat(c->bfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
		if (!d) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		struct dirent *e;
		struct stat s;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.' || strlen(e->d_name) != 30 ||
			    fstatat(dirfd(d), e->d_name, &s, AT_SYMLINK_NOFOLLOW) ||
			    !S_ISREG(s.st_mode))
				continue;
			if (SS_GROW(v, cap, n + 1, 1024)) {
				r = -ENOMEM;
				closedir(d);
				goto out;
			}
			v[n].mtime_ns = ts_ns(&s.st_mtim);
			char hex[33];
			uint8_t key[16];
			snprintf(hex, sizeof(hex), "%s%s", sub, e->d_name);
			uint32_t *slot = ss_unhex(hex, key, 16) ? NULL : recent_slot(c, key);
			int64_t used = slot ? (int64_t)__atomic_load_n(slot, __ATOMIC_RELAXED) * 1000000000
					    : 0;
			v[n].mtime_ns = SS_MAX(v[n].mtime_ns, used);
			v[n].size = (uint64_t)s.st_size;
			snprintf(v[n].path, sizeof(v[n].path), "%s/%s", sub, e->d_name);
			total += v[n].size;
			n++;
		}
		closedir(d);
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_victim);
	size_t i = 0;
	for (; i < n && total > target; i++)
		if (unlinkat(c->bfd, v[i].path, 0) == 0 || errno == ENOENT) {
			char hex[33];
			uint8_t key[16];
			snprintf(hex, sizeof(hex), "%.2s%s", v[i].path, v[i].path + 3);
			if (!ss_unhex(hex, key, 16))
				present_note(c, key, false);
			total -= v[i].size;
			if (removed)
				(*removed)++;
			if (removed_bytes)
				*removed_bytes += v[i].size;
			add(&c->st->evicted, 1);
			add(&c->st->evicted_bytes, (int64_t)v[i].size);
		}
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	uint64_t writing = sweep_tmp(c, ts_ns(&now));
	__atomic_store_n(&c->st->bytes, total + writing, __ATOMIC_RELAXED);
	__atomic_store_n(&c->st->entries, (uint64_t)(n - i), __ATOMIC_RELAXED);
	r = 0;
out:
	free(v);
	ofd(c->lockfd, F_OFD_SETLK, F_UNLCK, LOCK_EVICT);
	return r;
}

/* Count size bytes into the cache if the bound leaves room, evicting
 * down to seven eighths of it first when it does not (evictions then come
 * in batches, not one scan per block). */
static bool reserve(struct ss_ncache *c, uint64_t size)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (__atomic_add_fetch(&c->st->bytes, size, __ATOMIC_RELAXED) <= c->bound)
			return true;
		add(&c->st->bytes, -(int64_t)size);
		uint64_t low = c->bound - c->bound / 8;
		if (attempt || evict(c, low > size ? low - size : 0, NULL, NULL))
			break;
	}
	return false;
}

int ss_ncache_put(struct ss_ncache *c, const uint8_t key[16], const struct iovec *iov,
		  int iovcnt, uint32_t len)
{
	if (!len || len > c->block || iovcnt > 15)
		return -EINVAL;
	uint64_t size = NC_HDR + (uint64_t)len;
	bool reserved = false;
	char tmp[64], p[40];
	snprintf(tmp, sizeof(tmp), "%d.%u", (int)getpid(), c->tmpseq++);
	block_path(key, p);
	int r = 0, fd = openat(c->tfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			       0600);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	uint8_t h[NC_HDR] = {0};
	memcpy(h, NC_MAGIC, 8);
	memcpy(h + 8, key, 16);
	ss_put_le32(h + 24, len);
	struct iovec v[16];
	v[0] = (struct iovec){h, NC_HDR};
	memcpy(v + 1, iov, sizeof(*iov) * (size_t)iovcnt);
	ssize_t w = pwritev(fd, v, iovcnt + 1, 0);
	if (w != (ssize_t)size)
		r = w < 0 ? -errno : -ENOSPC;
	if (close(fd) && !r)
		r = -errno;
	/* Counted once written: an eviction's scan counts temp files too, so
	 * the size it sets already holds blocks being written, and counting
	 * them again after it errs on the safe side. */
	if (!r && !(reserved = reserve(c, size)))
		r = -ENOSPC;
	/* No fsync: a block torn by a power failure fails its header check
	 * or its chunks' ids, and is then dropped, never served. */
	if (!r && renameat2(c->tfd, tmp, c->bfd, p, RENAME_NOREPLACE)) {
		r = -errno;
		char sub[3] = {p[0], p[1], '\0'};
		if (r == -ENOENT && (mkdirat(c->bfd, sub, 0700) == 0 || errno == EEXIST))
			r = renameat2(c->tfd, tmp, c->bfd, p, RENAME_NOREPLACE) ? -errno : 0;
	}
	if (r) {
		unlinkat(c->tfd, tmp, 0);
		goto fail;
	}
	present_note(c, key, true);
	add(&c->st->entries, 1);
	return 0;
fail:
	if (reserved)
		add(&c->st->bytes, -(int64_t)size);
	return r == -EDQUOT ? -ENOSPC : r;
}

/* ---------------------------------------------------------------- report */

int ss_ncache_report(struct ss_ncache *c, bool prune, uint64_t prune_to,
		     struct ss_cache_stats *st, struct ss_err *err)
{
	/* Scanning also corrects size and entries after crashes. */
	int r = evict(c, prune ? prune_to : UINT64_MAX, &st->pruned, &st->pruned_bytes);
	if (r)
		return ss_err_set(err, r, "cannot scan the cache: %s", strerror(-r));
	const struct nc_state *s = c->st;
	st->bytes = ld(&s->bytes);
	st->entries = ld(&s->entries);
	st->bound = ld(&s->bound);
	st->hits = ld(&s->hits);
	st->misses = ld(&s->misses);
	st->hit_bytes = ld(&s->hit_bytes);
	st->fetched_bytes = ld(&s->fetched_bytes);
	st->written_bytes = ld(&s->written_bytes);
	st->evicted = ld(&s->evicted);
	st->evicted_bytes = ld(&s->evicted_bytes);
	st->block_bytes = c->block;
	return 0;
}

int ss_cache_impl(const struct ss_cache_opts *o, struct ss_cache_stats *st, char *errbuf,
		  size_t errlen)
{
	struct ss_err err = {0};
	struct ss_cache_stats local;
	struct ss_ncache *c = NULL;
	uint64_t t0 = ss_now_ns();
	int r;
	st = ss_stats_init(st, &local, sizeof(*st));
	if (!o || !o->dir) {
		r = ss_err_set(&err, -EINVAL, "cache needs a directory");
		goto out;
	}
	if ((r = ss_ncache_open(o->dir, SS_CACHE_SIZE_MIN, true, &c, &err)))
		goto out;
	r = ss_ncache_report(c, o->prune, o->prune_to, st, &err);
out:
	ss_ncache_free(c);
	return ss_op_end(&err, r, t0, &st->seconds, errbuf, errlen);
}
