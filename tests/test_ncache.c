/* The node cache's directory (engine/core/ncache.h): a block put is read
 * back whole and in part; a block's fetch lock is held by one cache handle
 * at a time (two handles are two open file descriptions, as two processes
 * are) and comes free on unlock; a block with a bad header or the wrong
 * length is never returned and is removed; a block is published once;
 * the bound evicts least recently used blocks first (a read makes a block
 * recent) and is never passed; bad bounds are refused; a directory that
 * others may write is refused; ss_cache reports and prunes; a store is
 * named in the cache as it always was. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend_module.h"
#include "core.h"
#include "testutil.h"

#include <xxhash.h>

#define BLK SS_NCACHE_BLOCK

static char dir[256];

static int fixed_identity(const struct ss_backend *b, char *buf, size_t n)
{
	(void)b;
	return snprintf(buf, n, "s3 http://127.0.0.1:9000 bucket") < (int)n ? 0 : -ENAMETOOLONG;
}

/* A store's name in the cache is what it has been since the cache began:
 * XXH3-128 over the domain with its NUL, then the store's identity. A
 * build that named stores otherwise would find none of the blocks an
 * earlier one left (and fetch them all again). */
static void store_names_stay(void)
{
	static const struct ss_backend_ops ops = {.name = "fixed", .identity = fixed_identity};
	struct ss_backend b = {.ops = &ops};
	uint8_t got[16], want[16];
	CHECK(ss_ncache_store_id(&b, got) == 0, "store id");
	static const char domain[] = "snapstream node cache 1";
	static const char id[] = "s3 http://127.0.0.1:9000 bucket";
	XXH3_state_t *h = XXH3_createState();
	REQUIRE(h, "out of memory");
	XXH3_128bits_reset(h);
	XXH3_128bits_update(h, domain, sizeof(domain));
	XXH3_128bits_update(h, id, strlen(id));
	XXH128_canonicalFromHash((XXH128_canonical_t *)(void *)want, XXH3_128bits_digest(h));
	XXH3_freeState(h);
	CHECK(!memcmp(got, want, 16), "a store is named as it always was");
}

static void key_of(unsigned i, uint8_t key[16])
{
	uint8_t store[16] = {1}, pack[16] = {2};
	ss_ncache_key(store, pack, i, key);
}

static int put(struct ss_ncache *c, unsigned i, uint32_t len)
{
	static uint8_t buf[BLK];
	uint8_t key[16];
	memset(buf, (int)(i & 0xff), len);
	key_of(i, key);
	struct iovec v = {buf, len};
	return ss_ncache_put(c, key, &v, 1, len);
}

static bool has(struct ss_ncache *c, unsigned i)
{
	static uint8_t buf[BLK];
	uint8_t key[16];
	uint32_t len;
	key_of(i, key);
	return ss_ncache_get(c, key, 0, buf, BLK, &len) == 0;
}

/* Make block i look last used `ago` seconds back. */
static void age(unsigned i, int ago)
{
	uint8_t key[16];
	char hex[33], path[400];
	key_of(i, key);
	ss_hex(key, 16, hex);
	snprintf(path, sizeof(path), "%s/blocks/%.2s/%s", dir, hex, hex + 2);
	struct timespec t[2];
	clock_gettime(CLOCK_REALTIME, &t[0]);
	t[0].tv_sec -= ago;
	t[1] = t[0];
	REQUIRE(utimensat(AT_FDCWD, path, t, 0) == 0, "utimensat %s: %s", path, strerror(errno));
}

static void block_path(unsigned i, char *path, size_t n)
{
	uint8_t key[16];
	char hex[33];
	key_of(i, key);
	ss_hex(key, 16, hex);
	snprintf(path, n, "%s/blocks/%.2s/%s", dir, hex, hex + 2);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ss-test-ncache.%d", (int)getpid());
	struct ss_err err = {0};
	struct ss_ncache *a = NULL, *b = NULL;
	const uint64_t bound = 16ull << 20;
	REQUIRE(ss_ncache_open(dir, bound, false, &a, &err) == 0, "open: %s", err.msg);
	REQUIRE(ss_ncache_open(dir, bound, false, &b, &err) == 0, "open again: %s", err.msg);
	store_names_stay();
	struct stat st;
	CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700, "mode %o", st.st_mode & 0777);

	/* Put, get whole and in part. */
	uint8_t key[16], buf[BLK];
	uint32_t len = 0;
	CHECK(put(a, 1, 1000) == 0, "put");
	key_of(1, key);
	CHECK(ss_ncache_get(b, key, 0, buf, sizeof(buf), &len) == 0 && len == 1000 && buf[999] == 1,
	      "get whole: len %u", len);
	memset(buf, 0, sizeof(buf));
	CHECK(ss_ncache_get(b, key, 900, buf, 500, &len) == 0 && buf[99] == 1 && buf[100] == 0,
	      "get a part reaching past the block's end");
	CHECK(put(b, 1, 1000) == -EEXIST, "a block is published once");
	key_of(2, key);
	CHECK(ss_ncache_get(a, key, 0, buf, sizeof(buf), &len) == -ENOENT, "a missing block");

	/* Fetch locks: one handle at a time. */
	CHECK(ss_ncache_lock(a, key) == 0, "a locks");
	CHECK(ss_ncache_lock(b, key) == -EAGAIN, "b waits while a holds it");
	ss_ncache_unlock(a, key);
	CHECK(ss_ncache_lock(b, key) == 0, "b locks once a unlocked");
	CHECK(ss_ncache_lock(a, key) == -EAGAIN, "now a waits");
	ss_ncache_unlock(b, key);

	/* Damaged blocks are dropped, never returned. */
	char path[400];
	CHECK(put(a, 3, 5000) == 0 && put(a, 4, 5000) == 0, "put");
	block_path(3, path, sizeof(path));
	int fd = open(path, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, "X", 1, 0) == 1, "damage a header");
	close(fd);
	block_path(4, path, sizeof(path));
	CHECK(truncate(path, 4000) == 0, "truncate");
	CHECK(!has(b, 3) && !has(b, 4), "damaged blocks returned");
	block_path(3, path, sizeof(path));
	CHECK(access(path, F_OK) != 0, "a damaged block stays");
	key_of(3, key);
	CHECK(!ss_ncache_has(a, key), "a dropped block is still there to a plan");
	key_of(1, key);
	CHECK(ss_ncache_has(a, key), "a block put is not there to a plan");
	/* Removed by hand behind the table: a plan may think it there, but
	 * a read never returns it. */
	block_path(1, path, sizeof(path));
	CHECK(unlink(path) == 0, "unlink");
	CHECK(!has(b, 1), "a removed block returned");

	/* LRU within the bound: 16 MiB holds n blocks (64). Blocks 100.. are
	 * older the lower their number; 100..109 were read. */
	const unsigned n = (unsigned)(bound / (BLK + SS_NCACHE_HEADER));
	const unsigned first = 100, end = first + n * 3 / 4, past = end + n / 2;
	for (unsigned i = first; i < end; i++) {
		CHECK(put(a, i, BLK) == 0, "put %u", i);
		age(i, 1000 - (int)i);
	}
	for (unsigned i = 100; i < 110; i++)
		CHECK(has(a, i), "read %u", i);
	for (unsigned i = end; i < past; i++)
		CHECK(put(b, i, BLK) == 0, "put %u past the bound", i);
	struct ss_cache_stats cs = {.size = sizeof(cs)};
	CHECK(ss_ncache_report(a, false, 0, &cs, &err) == 0, "report: %s", err.msg);
	CHECK(cs.bytes <= bound, "the cache holds %llu bytes, bound %llu",
	      (unsigned long long)cs.bytes, (unsigned long long)bound);
	CHECK(cs.evicted > 0, "nothing evicted");
	CHECK(cs.block_bytes == BLK, "block size %llu", (unsigned long long)cs.block_bytes);
	unsigned kept_read = 0, kept_old = 0;
	for (unsigned i = 100; i < 110; i++)
		kept_read += has(a, i);
	for (unsigned i = 110; i < 120; i++)
		kept_old += has(a, i);
	CHECK(kept_read == 10, "recently read blocks evicted: %u of 10 kept", kept_read);
	CHECK(kept_old == 0, "the least recently used blocks stayed: %u", kept_old);
	CHECK(has(a, past - 1) && has(a, end - 1), "newer blocks are there");
	/* What plans ask (ss_ncache_has, answered from present/ where it
	 * can): evicted blocks are not there, kept ones are, for another
	 * handle too. */
	key_of(110, key);
	CHECK(!ss_ncache_has(b, key), "an evicted block is there");
	key_of(past - 1, key);
	CHECK(ss_ncache_has(b, key), "a kept block is not there");

	/* Prune, and ss_cache's view. */
	struct ss_cache_opts po = {.size = sizeof(po), .dir = dir, .prune = true, .prune_to = BLK * 4};
	struct ss_cache_stats ps = SS_CACHE_STATS_INIT;
	char msg[512];
	CHECK(ss_cache_impl(&po, &ps, msg, sizeof(msg)) == 0, "prune: %s", msg);
	CHECK(ps.bytes <= BLK * 4 && ps.pruned > 0 && ps.entries == ps.bytes / (BLK + SS_NCACHE_HEADER),
	      "after prune: %llu bytes, %llu blocks", (unsigned long long)ps.bytes,
	      (unsigned long long)ps.entries);

	/* A cache made with 64 KiB blocks keeps them; a size this build
	 * cannot use is refused. The state holds the block size at 12. */
	{
		char lp[300], sp[400];
		snprintf(lp, sizeof(lp), "%s-64k", dir);
		struct ss_ncache *l = NULL;
		REQUIRE(ss_ncache_open(lp, bound, false, &l, &err) == 0, "open: %s", err.msg);
		ss_ncache_free(l);
		snprintf(sp, sizeof(sp), "%s/state", lp);
		uint32_t old_blk = (64u << 10) - SS_NCACHE_HEADER, odd = 1000;
		int sfd = open(sp, O_WRONLY);
		CHECK(sfd >= 0 && pwrite(sfd, &old_blk, 4, 12) == 4, "set a 64 KiB cache's state");
		REQUIRE(ss_ncache_open(lp, bound, false, &l, &err) == 0, "open a 64 KiB cache: %s",
			err.msg);
		CHECK(ss_ncache_block(l) == old_blk, "block size %u", ss_ncache_block(l));
		static uint8_t big[BLK];
		struct iovec v = {big, old_blk + 1};
		uint8_t k[16];
		key_of(7, k);
		CHECK(ss_ncache_put(l, k, &v, 1, old_blk + 1) == -EINVAL, "a block larger than 64 KiB");
		v.iov_len = old_blk;
		CHECK(ss_ncache_put(l, k, &v, 1, old_blk) == 0, "a 64 KiB block");
		ss_ncache_free(l);
		CHECK(sfd >= 0 && pwrite(sfd, &odd, 4, 12) == 4, "set an odd block size");
		close(sfd);
		err = (struct ss_err){0};
		CHECK(ss_ncache_open(lp, bound, false, &l, &err) == -EINVAL, "an odd block size: %s",
		      err.msg);
		snprintf(sp, sizeof(sp), "rm -rf %s", lp);
		CHECK(system(sp) == 0, "cleanup");
	}

	/* Bad bounds, a directory that is no cache, one others may write. */
	struct ss_ncache *x = NULL;
	CHECK(ss_ncache_open(dir, 1 << 20, false, &x, &err) == -EINVAL, "a 1 MiB bound");
	err = (struct ss_err){0};
	char other[300];
	snprintf(other, sizeof(other), "%s-open", dir);
	mkdir(other, 0777);
	chmod(other, 0777);
	CHECK(ss_ncache_open(other, 0, false, &x, &err) == -EPERM && strstr(err.msg, "written by others"),
	      "a world-writable cache: %s", err.msg);
	chmod(other, 0700);
	err = (struct ss_err){0};
	CHECK(ss_ncache_open(other, 0, true, &x, &err) == -ENOENT, "no cache there: %s", err.msg);
	rmdir(other);

	ss_ncache_free(a);
	ss_ncache_free(b);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0, "cleanup");
	if (failures)
		fprintf(stderr, "%d failure(s)\n", failures);
	return failures ? 1 : 0;
}
