/* Admin engine tests: gc's records refuse damaged input; a stream push
 * equals a file push chunk for chunk; verify and cat catch a manifest whose
 * file digest was tampered with (every chunk intact); format 1 manifests
 * verify by their own digests; cat writes in order
 * through a pipe; gc hides, then deletes, and a hidden pack is never
 * offered to a new push; check names hostile objects in every corner of a
 * store and repair leaves it usable. Exit 0 pass, 1 fail. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend_module.h"
#include "push.h"

#include "testengine.h"

/* ---------------------------------------------------------------- records */

static void test_gcstate(void)
{
	struct ss_gcstate s = {0}, d;
	uint8_t id[16];
	for (int i = 0; i < 5; i++) {
		for (int k = 0; k < 16; k++)
			id[k] = (uint8_t)rnd();
		CHECK(ss_gcstate_add(&s, id, 1000 + i) == 0, "add");
	}
	uint8_t *buf;
	size_t len;
	REQUIRE(ss_gcstate_encode(&s, &buf, &len) == 0, "encode");
	struct ss_err e = {0};
	CHECK(ss_gcstate_decode(buf, len, &d, &e) == 0, "decode: %s", e.msg);
	CHECK(d.n == 5, "n %zu", d.n);
	CHECK(ss_gcstate_find(&d, id) && ss_gcstate_find(&d, id)->since_ns == 1004, "find");
	ss_gcstate_free(&d);
	/* Every truncation and every single flipped byte is refused. */
	for (size_t cut = 0; cut < len; cut++) {
		ss_err_clear(&e);
		CHECK(ss_gcstate_decode(buf, cut, &d, &e) == -EBADMSG, "truncated at %zu accepted", cut);
	}
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		ss_err_clear(&e);
		int r = ss_gcstate_decode(buf, len, &d, &e);
		CHECK(r == -EBADMSG, "flip at %zu accepted", i);
		if (!r)
			ss_gcstate_free(&d);
		buf[i] ^= 0x01;
	}
	const char *junk = "snapstream-gc-state 1\nhidden zz\nchecksum 0000000000000000\n";
	CHECK(ss_gcstate_decode((const uint8_t *)junk, strlen(junk), &d, &e) == -EBADMSG, "junk");
	free(buf);
	ss_gcstate_free(&s);
}

static void test_tombstone(void)
{
	uint8_t packs[3][16];
	for (int i = 0; i < 3; i++)
		for (int k = 0; k < 16; k++)
			packs[i][k] = (uint8_t)rnd();
	struct ss_tombstone t = {.snapshot = "s3://bucket/a b/c", .removed_ns = 1234567890123,
				 .packs = packs, .npacks = 3}, d;
	uint8_t *buf;
	size_t len;
	REQUIRE(ss_tombstone_encode(&t, &buf, &len) == 0, "encode");
	struct ss_err e = {0};
	CHECK(ss_tombstone_decode(buf, len, &d, &e) == 0, "decode: %s", e.msg);
	CHECK(d.npacks == 3 && !memcmp(d.packs[2], packs[2], 16), "packs");
	CHECK(d.removed_ns == t.removed_ns && !strcmp(d.snapshot, t.snapshot), "fields");
	ss_tombstone_free(&d);
	for (size_t cut = 0; cut < len; cut++) {
		ss_err_clear(&e);
		CHECK(ss_tombstone_decode(buf, cut, &d, &e) == -EBADMSG, "truncated at %zu", cut);
	}
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x20;
		ss_err_clear(&e);
		int r = ss_tombstone_decode(buf, len, &d, &e);
		CHECK(r == -EBADMSG, "flip at %zu accepted", i);
		if (!r)
			ss_tombstone_free(&d);
		buf[i] ^= 0x20;
	}
	free(buf);
}

/* ---------------------------------------------------------------- engine */

static char dir[256];
static struct ss_memstore *mem;

static struct ss_config_in cfg(void)
{
	return (struct ss_config_in){.pub = {.threads = 2, .no_fsync = true}, .mem = mem};
}

struct feeder {
	int fd;
	const char *path;
};

/* Write a file into a pipe in odd-sized pieces, as a slow producer would. */
static void *feed(void *arg)
{
	struct feeder *f = arg;
	int in = open(f->path, O_RDONLY);
	uint8_t buf[70001];
	ssize_t n;
	size_t step = 1;
	while (in >= 0 && (n = read(in, buf, step)) > 0) {
		if (write(f->fd, buf, (size_t)n) != n)
			break;
		step = step * 7 % sizeof(buf) + 1;
	}
	if (in >= 0)
		close(in);
	close(f->fd);
	return NULL;
}

static struct ss_manifest *load(const char *uri)
{
	struct ss_config_in in = cfg();
	return load_manifest(&in, uri);
}

static void store_manifest(const char *uri, struct ss_manifest *m)
{
	struct ss_loop *l;
	REQUIRE(ss_loop_new(64, &l) == 0, "loop");
	struct ss_cfg c;
	struct ss_config_in in = cfg();
	REQUIRE(ss_cfg_resolve(&in, &c, NULL) == 0, "cfg");
	struct ss_snaploc loc;
	REQUIRE(ss_snaploc_parse(uri, &loc, NULL) == 0, "loc");
	struct ss_backend *b;
	REQUIRE(ss_backend_open(loc.backend_uri, l, &c.bopts, &b, NULL) == 0, "open");
	uint8_t *buf;
	size_t len;
	REQUIRE(ss_manifest_encode(m, &buf, &len) == 0, "encode");
	REQUIRE(ss_put_object(b, l, loc.key, buf, len, 0, NULL, NULL) == 0, "put");
	free(buf);
	ss_backend_free(b);
	ss_snaploc_free(&loc);
	ss_loop_free(l);
}

/* ss_get_object reads an object whole in one GET when it fits the first
 * read (1 MiB), in two when it is larger, and refuses one over its limit
 * from the size the first GET reports. */
static void test_get_object(void)
{
	struct ss_loop *l;
	REQUIRE(ss_loop_new(64, &l) == 0, "loop");
	struct ss_cfg c;
	struct ss_config_in in = cfg();
	REQUIRE(ss_cfg_resolve(&in, &c, NULL) == 0, "cfg");
	char local[320];
	snprintf(local, sizeof(local), "%s/objs", dir);
	REQUIRE(mkdir(local, 0700) == 0, "mkdir %s", local);
	const char *stores[] = {"mem://objs", local};
	const size_t sizes[] = {0, 1, (1u << 20) - 1, 1u << 20, (1u << 20) + 1, 3u << 20};
	uint8_t *data = malloc((3u << 20) + 8);
	REQUIRE(data, "malloc");
	for (size_t i = 0; i < (3u << 20) + 8; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 13);
	for (size_t si = 0; si < 2; si++) {
		struct ss_backend *b;
		REQUIRE(ss_backend_open(stores[si], l, &c.bopts, &b, NULL) == 0, "open %s", stores[si]);
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			char key[32];
			snprintf(key, sizeof(key), "o%zu", k);
			REQUIRE(ss_put_object(b, l, key, data + k, sizes[k], 0, NULL, NULL) == 0,
				"put %s", key);
			uint8_t *got = NULL;
			size_t n = 0;
			uint64_t requests = 0;
			struct ss_err e = {0};
			int r = ss_get_object(b, l, key, 4u << 20, &got, &n, &requests, &e);
			CHECK(r == 0 && n == sizes[k] && !memcmp(got, data + k, n),
			      "%s %s (%zu bytes): %d, %zu bytes back", stores[si], key, sizes[k], r, n);
			CHECK(requests == (sizes[k] > (1u << 20) ? 2u : 1u),
			      "%s %s (%zu bytes): %llu requests", stores[si], key, sizes[k],
			      (unsigned long long)requests);
			free(got);
			got = NULL;
			if (sizes[k] > 1) {
				r = ss_get_object(b, l, key, sizes[k] - 1, &got, &n, NULL, &e);
				CHECK(r == -EFBIG && !got, "%s %s over its limit: %d", stores[si], key, r);
			}
		}
		uint8_t *got = NULL;
		size_t n = 0;
		struct ss_err e = {0};
		CHECK(ss_get_object(b, l, "nope", 1024, &got, &n, NULL, &e) == -ENOENT && !got,
		      "%s: a missing object", stores[si]);
		ss_backend_free(b);
	}
	free(data);
	ss_loop_free(l);
}

/* A local store makes each object's name durable: after the rename, it
 * opens and fsyncs the object's directory, at the root or below. */
static void test_local_dir_sync(void)
{
	struct ss_loop *l;
	REQUIRE(ss_loop_new(64, &l) == 0, "loop");
	struct ss_cfg c;
	struct ss_config_in in = cfg();
	REQUIRE(ss_cfg_resolve(&in, &c, NULL) == 0, "cfg");
	char root[320];
	snprintf(root, sizeof(root), "%s/dsync", dir);
	REQUIRE(mkdir(root, 0700) == 0, "mkdir");
	struct ss_backend_opts o = c.bopts;
	for (int nosync = 0; nosync < 2; nosync++) {
		o.no_fsync = nosync;
		struct ss_backend *b;
		REQUIRE(ss_backend_open(root, l, &o, &b, NULL) == 0, "open %s", root);
		static const char *const keys[] = {"top", "packs/ab/abc", "refs/r1"};
		for (size_t i = 0; i < SS_ARRAY_SIZE(keys); i++)
			CHECK(ss_put_object(b, l, keys[i], "x", 1, 0, NULL, NULL) == 0, "put %s",
			      keys[i]);
		CHECK(b->dir_syncs == (nosync ? 0 : SS_ARRAY_SIZE(keys)),
		      "no_fsync %d: %llu directory syncs for %zu puts", nosync,
		      (unsigned long long)b->dir_syncs, SS_ARRAY_SIZE(keys));
		ss_backend_free(b);
	}
	ss_loop_free(l);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	CHECK(system(cmd) == 0, "cleanup");
}

/* verify reads a snapshot as a pull does, and in order when it cannot
 * keep the 1 KiB leaves its ranges split (pull.h, ss_pull_verify): the
 * same answers both ways. Random bytes, so that range ends fall inside
 * leaves (zero pages would end frames on page boundaries). */
static void test_verify_ways(void)
{
	char img[300];
	snprintf(img, sizeof(img), "%s/rnd", dir);
	size_t size = (5u << 20) + 777;
	uint8_t *b = malloc(size);
	REQUIRE(b, "out of memory");
	for (size_t i = 0; i < size; i++)
		b[i] = (uint8_t)rnd();
	int fd = open(img, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0 && write(fd, b, size) == (ssize_t)size, "write %s", img);
	close(fd);
	free(b);
	struct ss_config_in c = cfg();
	char err[512];
	struct ss_stats st;
	struct ss_push_opts po = {.source = img, .snapshot = "mem://t/rnd"};
	REQUIRE(ss_push_impl(&po, &c, &st, err, sizeof(err)) == 0, "push: %s", err);
	struct ss_verify_opts vo = {.snapshot = "mem://t/rnd"};
	uint64_t chunks[2];
	for (int i = 0; i < 2; i++) {
		c.verify_keep_none = i;
		CHECK(ss_verify_impl(&vo, &c, &st, err, sizeof(err)) == 0, "verify (%d): %s", i, err);
		chunks[i] = st.chunks;
	}
	CHECK(chunks[0] == chunks[1] && chunks[0] > 0, "chunks checked: %llu, in order %llu",
	      (unsigned long long)chunks[0], (unsigned long long)chunks[1]);
	struct ss_manifest *m = load("mem://t/rnd");
	m->files[0].digest[0] ^= 1;
	store_manifest("mem://t/rnd", m);
	ss_manifest_free(m);
	for (int i = 0; i < 2; i++) {
		c.verify_keep_none = i;
		int r = ss_verify_impl(&vo, &c, &st, err, sizeof(err));
		CHECK(r == -EBADMSG && strstr(err, "digest") && strstr(err, "mem://t/rnd"),
		      "verify (%d) of a tampered digest: %d %s", i, r, err);
	}
	unlink(img);
}

static void test_stream_and_tamper(void)
{
	char img[300];
	snprintf(img, sizeof(img), "%s/img", dir);
	write_image(img, (6u << 20) + 1234);
	struct ss_config_in c = cfg();
	char err[512];
	struct ss_stats st;
	struct ss_push_opts po = {.source = img, .snapshot = "mem://t/file"};
	REQUIRE(ss_push_impl(&po, &c, &st, err, sizeof(err)) == 0, "push: %s", err);

	int p[2];
	REQUIRE(pipe(p) == 0, "pipe");
	struct feeder f = {.fd = p[1], .path = img};
	pthread_t th;
	pthread_create(&th, NULL, feed, &f);
	struct ss_push_opts so = {.snapshot = "mem://t/stream"};
	int r = ss_push_fd_impl(&so, p[0], "img", &c, &st, err, sizeof(err));
	pthread_join(th, NULL);
	close(p[0]);
	REQUIRE(r == 0, "push_fd: %s", err);
	CHECK(st.new_stored_bytes == 0, "the stream stored %llu new bytes",
	      (unsigned long long)st.new_stored_bytes);
	struct ss_manifest *a = load("mem://t/file"), *b = load("mem://t/stream");
	CHECK(a->nchunks == b->nchunks, "chunks %zu vs %zu", a->nchunks, b->nchunks);
	CHECK(a->files[0].next == b->files[0].next, "extents differ");
	CHECK(!memcmp(a->files[0].digest, b->files[0].digest, 16), "digest differs");
	for (size_t e = 0; e < a->files[0].next && e < b->files[0].next; e++) {
		const struct ss_mextent *x = &a->files[0].ext[e], *y = &b->files[0].ext[e];
		CHECK(x->len == y->len && !x->chunk == !y->chunk, "extent %zu differs", e);
		if (x->chunk && y->chunk)
			CHECK(!memcmp(a->chunks[x->chunk - 1].id, b->chunks[y->chunk - 1].id, 16),
			      "chunk id of extent %zu differs", e);
	}
	ss_manifest_free(a);

	/* cat through a pipe, in order. */
	REQUIRE(pipe(p) == 0, "pipe");
	char out[300];
	snprintf(out, sizeof(out), "%s/out", dir);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[1]);
		int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		uint8_t buf[65536];
		ssize_t n;
		while ((n = read(p[0], buf, sizeof(buf))) > 0)
			if (write(fd, buf, (size_t)n) != n)
				_exit(1);
		_exit(0);
	}
	close(p[0]);
	struct ss_cat_opts co = {.snapshot = "mem://t/stream", .fd = p[1]};
	r = ss_cat_impl(&co, &c, &st, err, sizeof(err));
	close(p[1]);
	waitpid(pid, NULL, 0);
	CHECK(r == 0, "cat: %s", err);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "cmp -s %s %s", img, out);
	CHECK(system(cmd) == 0, "cat through a pipe differs");

	/* A tampered digest: every chunk checks out, the file does not. */
	b->files[0].digest[3] ^= 0x10;
	store_manifest("mem://t/stream", b);
	ss_manifest_free(b);
	struct ss_verify_opts vo = {.snapshot = "mem://t/stream"};
	r = ss_verify_impl(&vo, &c, &st, err, sizeof(err));
	CHECK(r == -EBADMSG, "verify of a tampered digest: %d", r);
	CHECK(strstr(err, "digest") && strstr(err, "'img'") && strstr(err, "mem://t/stream"),
	      "message: %s", err);
	vo.quick = true;
	CHECK(ss_verify_impl(&vo, &c, &st, err, sizeof(err)) == 0, "quick verify reads no chunk");
	int null = open("/dev/null", O_WRONLY);
	co.fd = null;
	CHECK(ss_cat_impl(&co, &c, &st, err, sizeof(err)) == -EBADMSG, "cat of a tampered digest");
	close(null);
	unlink(out);
	unlink(img);
}

/* A format 1 manifest, whose digests hash every byte, still verifies,
 * pulls and cats: digests are checked as the manifest's format defines
 * them. Format 2's digest (zero pages folded) under format 1 fails. */
static void test_format1(void)
{
	char img[300], out[300];
	snprintf(img, sizeof(img), "%s/img1", dir);
	snprintf(out, sizeof(out), "%s/img1.out", dir);
	write_image(img, (3u << 20) + 4321);   /* zero pages among others */
	struct ss_config_in c = cfg();
	char err[512];
	struct ss_stats st;
	struct ss_push_opts po = {.source = img, .snapshot = "mem://v/two"};
	REQUIRE(ss_push_impl(&po, &c, &st, err, sizeof(err)) == 0, "push: %s", err);
	struct ss_manifest *m = load("mem://v/two");
	CHECK(m->format_major == 5, "a push writes format %u", m->format_major);
	uint8_t folded[16];
	memcpy(folded, m->files[0].digest, 16);
	size_t size = (3u << 20) + 4321;
	uint8_t *b = malloc(size);
	int fd = open(img, O_RDONLY);
	REQUIRE(b && fd >= 0 && read(fd, b, size) == (ssize_t)size, "read %s", img);
	close(fd);
	XXH128_canonical_t every;
	XXH128_canonicalFromHash(&every, XXH3_128bits(b, size));
	CHECK(memcmp(every.digest, folded, 16) != 0, "the two definitions agree on a file with zero pages");
	/* Format 2's digest (zero pages folded, read back by a pull in file
	 * order) for the same bytes. */
	struct ss_fdigest *d2 = ss_fdigest_new(2);
	REQUIRE(d2, "out of memory");
	ss_fdigest_data(d2, b, size);
	uint8_t fold2[16];
	ss_fdigest_final(d2, fold2);
	ss_fdigest_free(d2);
	CHECK(memcmp(fold2, folded, 16) != 0, "formats 2 and 5 agree");

	m->format_major = 1;
	m->format_minor = 0;
	memcpy(m->files[0].digest, every.digest, 16);
	store_manifest("mem://v/one", m);
	struct ss_verify_opts vo = {.snapshot = "mem://v/one"};
	CHECK(ss_verify_impl(&vo, &c, &st, err, sizeof(err)) == 0, "verify format 1: %s", err);
	struct ss_pull_opts pl = {.snapshot = "mem://v/one", .dest = out};
	CHECK(ss_pull_impl(&pl, &c, &st, err, sizeof(err)) == 0, "pull format 1: %s", err);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "cmp -s %s %s", img, out);
	CHECK(system(cmd) == 0, "format 1 pulled differs");
	unlink(out);
	int null = open("/dev/null", O_WRONLY);
	struct ss_cat_opts co = {.snapshot = "mem://v/one", .fd = null};
	CHECK(ss_cat_impl(&co, &c, &st, err, sizeof(err)) == 0, "cat format 1: %s", err);

	/* Format 2: verified through the read-back path of pull. */
	m->format_major = 2;
	memcpy(m->files[0].digest, fold2, 16);
	store_manifest("mem://v/two2", m);
	vo.snapshot = "mem://v/two2";
	CHECK(ss_verify_impl(&vo, &c, &st, err, sizeof(err)) == 0, "verify format 2: %s", err);
	pl.snapshot = "mem://v/two2";
	CHECK(ss_pull_impl(&pl, &c, &st, err, sizeof(err)) == 0, "pull format 2: %s", err);
	CHECK(system(cmd) == 0, "format 2 pulled differs");
	unlink(out);
	memcpy(m->files[0].digest, folded, 16);
	store_manifest("mem://v/two5", m);
	pl.snapshot = "mem://v/two5";
	CHECK(ss_pull_impl(&pl, &c, &st, err, sizeof(err)) == -EBADMSG,
	      "pull of a format 5 digest as format 2");
	unlink(out);
	/* And format 5's own, as pushed, with a digest of other bytes. */
	m->format_major = 5;
	memcpy(m->files[0].digest, fold2, 16);
	store_manifest("mem://v/five2", m);
	pl.snapshot = "mem://v/five2";
	CHECK(ss_pull_impl(&pl, &c, &st, err, sizeof(err)) == -EBADMSG,
	      "pull of a format 2 digest as format 5");
	unlink(out);
	m->format_major = 1;
	memcpy(m->files[0].digest, folded, 16);
	store_manifest("mem://v/mixed", m);
	vo.snapshot = "mem://v/mixed";
	CHECK(ss_verify_impl(&vo, &c, &st, err, sizeof(err)) == -EBADMSG,
	      "a folded digest passed as format 1");
	pl.snapshot = "mem://v/mixed";
	CHECK(ss_pull_impl(&pl, &c, &st, err, sizeof(err)) == -EBADMSG,
	      "pull of a folded digest as format 1");
	co.snapshot = "mem://v/mixed";
	CHECK(ss_cat_impl(&co, &c, &st, err, sizeof(err)) == -EBADMSG,
	      "cat of a folded digest as format 1");
	close(null);
	ss_manifest_free(m);
	free(b);
	unlink(out);
	unlink(img);
}

static void test_gc_hides(void)
{
	char img[300];
	snprintf(img, sizeof(img), "%s/img2", dir);
	write_image(img, 3u << 20);
	struct ss_config_in c = cfg();
	char err[512];
	struct ss_stats st;
	struct ss_push_opts po = {.source = img, .snapshot = "mem://g/a"};
	REQUIRE(ss_push_impl(&po, &c, &st, err, sizeof(err)) == 0, "push: %s", err);
	uint64_t stored = st.new_stored_bytes;
	struct ss_rm_opts ro = {.snapshot = "mem://g/a"};
	REQUIRE(ss_rm_impl(&ro, &c, err, sizeof(err)) == 0, "rm: %s", err);
	struct ss_gc_stats gs;
	struct ss_gc_opts go = {.store = "mem://g/.snapstream", .grace_seconds = 3600};
	CHECK(ss_gc_impl(&go, &c, &gs, err, sizeof(err)) == 0, "gc: %s", err);
	CHECK(gs.tombstones == 1 && gs.packs_pending == 0, "the removal record protects");
	go.grace_seconds = 0;
	/* Past the record's grace: hide, but not delete, with a long grace. */
	struct ss_gc_opts g1 = {.store = "mem://g/.snapstream", .grace_seconds = 1};
	sleep(2);
	CHECK(ss_gc_impl(&g1, &c, &gs, err, sizeof(err)) == 0, "gc: %s", err);
	CHECK(gs.packs_pending >= 1 && gs.packs_deleted == 0, "hidden %llu deleted %llu",
	      (unsigned long long)gs.packs_pending, (unsigned long long)gs.packs_deleted);
	po.snapshot = "mem://g/b";
	REQUIRE(ss_push_impl(&po, &c, &st, err, sizeof(err)) == 0, "push: %s", err);
	CHECK(st.new_stored_bytes == stored, "a hidden pack was offered for dedup (%llu of %llu)",
	      (unsigned long long)st.new_stored_bytes, (unsigned long long)stored);
	sleep(2);
	CHECK(ss_gc_impl(&g1, &c, &gs, err, sizeof(err)) == 0, "gc: %s", err);
	CHECK(gs.packs_deleted >= 1 && gs.packs_pending == 0, "deleted %llu",
	      (unsigned long long)gs.packs_deleted);
	struct ss_verify_opts vo = {.snapshot = "mem://g/b"};
	CHECK(ss_verify_impl(&vo, &c, &st, err, sizeof(err)) == 0, "verify after gc: %s", err);
	go.grace_seconds = -1;
	CHECK(ss_gc_impl(&go, &c, &gs, err, sizeof(err)) == 0 && gs.packs_deleted == 0,
	      "nothing referenced goes");
	unlink(img);
}

/* ---------------------------------------------------------------- check */

struct tally {
	int kind[32];
	int problems, repaired;
};

static void tally_finding(void *arg, const struct ss_check_finding *f)
{
	struct tally *t = arg;
	CHECK(f->message && *f->message, "finding without a message");
	if ((unsigned)f->kind < 32)
		t->kind[f->kind] += f->problem && !f->repaired;
	t->problems += f->problem && !f->repaired;
	t->repaired += f->repaired;
}

static int run_check(const char *store, bool repair, struct tally *t, struct ss_check_stats *st)
{
	struct ss_config_in c = cfg();
	struct ss_check_opts o = {.store = store, .repair = repair, .deep = true,
				  .on_finding = tally_finding, .arg = t};
	char err[512] = "";
	memset(t, 0, sizeof(*t));
	int r = ss_check_impl(&o, &c, st, err, sizeof(err));
	CHECK(r == 0 || r == -EBADMSG, "check %s: %d %s", store, r, err);
	return r;
}

static void put_store(struct ss_backend *b, struct ss_loop *l, const char *key, const void *p,
		      size_t n)
{
	REQUIRE(ss_put_object(b, l, key, p, n, 0, NULL, NULL) == 0, "put %s", key);
}

/* A pack with a valid trailer and index over chunk data that is garbage:
 * a zstd frame that is not one, and a raw chunk whose id is wrong. */
static size_t garbage_pack(uint8_t *out)
{
	struct ss_pack_entry e[2] = {
		{.offset = 0, .stored_len = 100, .raw_len = 1000, .codec = SS_CODEC_ZSTD},
		{.offset = 100, .stored_len = 64, .raw_len = 64, .codec = SS_CODEC_RAW},
	};
	for (size_t i = 0; i < 164; i++)
		out[i] = (uint8_t)rnd();
	memset(e[0].id, 1, 16);
	memset(e[1].id, 2, 16);
	return 164 + ss_pack_write_index(out + 164, e, 2, 164);
}

/* Hostile objects in every corner of a store: check must not crash, must
 * name each, repair must set aside or rebuild what it may, and leave the
 * snapshot and the store usable. */
static void test_check_hostile(void)
{
	char img[300];
	snprintf(img, sizeof(img), "%s/himg", dir);
	write_image(img, 3u << 20);
	struct ss_config_in c = cfg();
	struct ss_push_opts po = {.source = img, .snapshot = "mem://h/a"};
	char err[512];
	REQUIRE(ss_push_impl(&po, &c, NULL, err, sizeof(err)) == 0, "push: %s", err);
	const char *store = "mem://h/.snapstream";
	struct tally t;
	struct ss_check_stats st;
	CHECK(run_check(store, false, &t, &st) == 0 && t.problems == 0 && st.snapshots == 1 &&
		      st.chunks > 0 && st.chunks_verified > 0,
	      "clean store: %d problems", t.problems);

	/* A store that answers a pack with other bytes than its size says (a
	 * torn object, as s3rver keeps after a killed upload): that pack is
	 * damaged, and the check still runs to the end. */
	ss_memstore_fail(mem, SS_REQ_GET, "packs/", 0, 1, -EBADMSG);
	CHECK(run_check(store, false, &t, &st) == -EBADMSG && t.kind[SS_CHECK_PACK_DAMAGED] == 1 &&
		      st.snapshots == 1,
	      "torn pack: %d damaged", t.kind[SS_CHECK_PACK_DAMAGED]);
	ss_memstore_fail(mem, SS_REQ_GET, NULL, 0, 0, 0);
	CHECK(run_check(store, false, &t, &st) == 0 && t.problems == 0, "clean again");

	struct ss_loop *l;
	struct ss_cfg rc;
	struct ss_backend *b;
	REQUIRE(ss_loop_new(64, &l) == 0 && ss_cfg_resolve(&c, &rc, NULL) == 0, "loop");
	REQUIRE(ss_backend_open(store, l, &rc.bopts, &b, NULL) == 0, "open");
	uint8_t junk[70000];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)rnd();
	static const size_t sizes[] = {0, 7, 31, 32, 5000, 70000};
	char key[96];
	for (size_t i = 0; i < SS_ARRAY_SIZE(sizes); i++) {
		snprintf(key, sizeof(key), "packs/ab/ab%030zx", i);
		put_store(b, l, key, junk, sizes[i]);
	}
	/* A trailer claiming more entries than the pack could hold. */
	uint8_t tr[64] = {0};
	memcpy(tr + 32, "SSPACK01", 8);
	ss_put_le32(tr + 40, 1);
	ss_put_le32(tr + 44, 1u << 22);
	put_store(b, l, "packs/ab/abffffffffffffffffffffffffffffff", tr, sizeof(tr));
	uint8_t gp[512];
	size_t gl = garbage_pack(gp);
	put_store(b, l, "packs/cd/cd000000000000000000000000000001", gp, gl);
	put_store(b, l, "packs/zz/not-a-pack", junk, 10);
	put_store(b, l, "index/00000000000000000000000000000001", junk, 3000);
	put_store(b, l, "index/00000000000000000000000000000002", "SSINDX01", 8);
	put_store(b, l, "gc/state", junk, 100);
	put_store(b, l, "gc/removed/00000000000000000000000000000003", junk, 200);
	put_store(b, l, "refs/00000000000000000000000000000004", "a\0b", 3);

	int r = run_check(store, false, &t, &st);
	CHECK(r == -EBADMSG, "hostile store checks clean");
	CHECK(t.kind[SS_CHECK_PACK_DAMAGED] == 8, "damaged packs: %d, want 8",
	      t.kind[SS_CHECK_PACK_DAMAGED]);
	CHECK(t.kind[SS_CHECK_INDEX_DAMAGED] == 2 && t.kind[SS_CHECK_RECORD_DAMAGED] == 2 &&
		      t.kind[SS_CHECK_REF_BAD] == 1 && t.kind[SS_CHECK_SNAPSHOT_INCOMPLETE] == 0,
	      "index %d records %d refs %d incomplete %d", t.kind[SS_CHECK_INDEX_DAMAGED],
	      t.kind[SS_CHECK_RECORD_DAMAGED], t.kind[SS_CHECK_REF_BAD],
	      t.kind[SS_CHECK_SNAPSHOT_INCOMPLETE]);
	CHECK(st.chunks_damaged == 2, "deep: %llu damaged chunks, want 2",
	      (unsigned long long)st.chunks_damaged);

	r = run_check(store, true, &t, &st);
	CHECK(r == -EBADMSG && t.problems == 1 && t.kind[SS_CHECK_REF_BAD] == 1,
	      "repair left %d problems (want the bad ref only)", t.problems);
	CHECK(st.packs_quarantined == 7 && st.packs_hidden_now == 1 && st.index_deleted == 2 &&
		      st.records_repaired == 2,
	      "repair: quarantined %llu hidden %llu index %llu records %llu",
	      (unsigned long long)st.packs_quarantined, (unsigned long long)st.packs_hidden_now,
	      (unsigned long long)st.index_deleted, (unsigned long long)st.records_repaired);
	struct ss_req d = {.kind = SS_REQ_DELETE, .key = "refs/00000000000000000000000000000004"};
	REQUIRE(ss_call(b, l, &d, NULL) == 0, "delete the bad ref");
	CHECK(run_check(store, false, &t, &st) == 0 && t.problems == 0 && st.packs_damaged == 1 &&
		      st.packs_hidden == 1,
	      "after repair: %d problems, %llu damaged", t.problems,
	      (unsigned long long)st.packs_damaged);

	/* The snapshot verifies, and the store takes pushes again. */
	struct ss_verify_opts vo = {.snapshot = "mem://h/a"};
	CHECK(ss_verify_impl(&vo, &c, NULL, err, sizeof(err)) == 0, "verify after repair: %s", err);
	po.snapshot = "mem://h/b";
	CHECK(ss_push_impl(&po, &c, NULL, err, sizeof(err)) == 0, "push after repair: %s", err);
	ss_backend_free(b);
	ss_cfg_wipe(&rc);
	ss_loop_free(l);
	unlink(img);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "%s/ss-admin-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	REQUIRE(mkdtemp(dir), "mkdtemp");
	mem = ss_memstore_new();
	test_gcstate();
	test_tombstone();
	test_get_object();
	test_local_dir_sync();
	test_stream_and_tamper();
	test_verify_ways();
	test_format1();
	test_gc_hides();
	test_check_hostile();
	ss_memstore_free(mem);
	rmdir(dir);
	if (failures)
		fprintf(stderr, "%d failures\n", failures);
	return failures ? 1 : 0;
}
