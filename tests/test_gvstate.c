/* gVisor state files (engine/core/gvstate.c, engine/push/gvpush.c): the
 * parser on valid files and on every malformed class, the rebuild, and
 * push/pull/cat through the engine with --inflate-gvisor: a state file
 * is stored inflated and comes back with its header byte for byte; any
 * file that does not parse exactly is stored and restored as it is, also
 * in follow mode when the damage appears after a valid header; a state
 * file rewritten behind the reader is never stored as it was first read. */
#include <libdeflate.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

#include "gvstate.h"
#include "testengine.h"

/* A state file under construction. */
struct sf {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct sf *s, const void *p, size_t n)
{
	if (s->n + n > s->cap) {
		s->cap = (s->n + n) * 2;
		REQUIRE((s->p = realloc(s->p, s->cap)), "oom");
	}
	memcpy(s->p + s->n, p, n);
	s->n += n;
}

static void put_be(struct sf *s, uint64_t v, int bytes)
{
	uint8_t b[8];
	for (int i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	put(s, b, (size_t)bytes);
}

/* Compressible body bytes: runs of a few patterns, random seasoning. */
static uint8_t *make_body(size_t n)
{
	uint8_t *b = malloc(n ? n : 1);
	REQUIRE(b, "oom");
	for (size_t i = 0; i < n; i++)
		b[i] = (i / 4096) % 7 == 5 ? 0   /* zero pages, fed as NULL by check_sized */
		       : (i / 4096) % 3 == 0 ? (uint8_t)rnd() : (uint8_t)(i * 7 / 13);
	return b;
}

enum damage {
	D_NONE,
	D_MAGIC,
	D_HMAC,
	D_META_LEN,      /* metadata length past the bound */
	D_CHUNK_SIZE0,
	D_CLEN_ZERO,
	D_CLEN_BIG,      /* beyond the bound for the chunk size */
	D_TRUNCATED,     /* last chunk cut short */
	D_GARBAGE,       /* a chunk that is no DEFLATE stream */
	D_SHORT_MIDDLE,  /* a chunk before the last inflates short */
	D_LONG,          /* a chunk inflates past the chunk size */
	D_TRAILING,      /* bytes after the last chunk */
	D_INNER_TAIL,    /* bytes after a chunk's final block, inside its length */
};

/* A state file of body[0..n) in chunks of cs, deflated at level 1. */
static struct sf make_file(const uint8_t *body, size_t n, uint32_t cs, enum damage d)
{
	struct sf s = {0};
	const char *meta = "{\"k\":\"v\"}";
	put(&s, "gVisorSF", 8);
	put_be(&s, d == D_META_LEN ? (uint64_t)SS_GVS_MAX_META + 1 : strlen(meta), 8);
	put(&s, meta, strlen(meta));
	uint8_t mac[32];
	unsigned ml = 32;
	static const uint8_t nokey[1];
	HMAC(EVP_sha256(), nokey, 0, s.p, s.n, mac, &ml);
	if (d == D_HMAC)
		mac[5] ^= 1;
	if (d == D_MAGIC)
		s.p[0] = 'g' ^ 0x20;
	put(&s, mac, 32);
	put_be(&s, d == D_CHUNK_SIZE0 ? 0 : cs, 4);
	struct libdeflate_compressor *c = libdeflate_alloc_compressor(1);
	size_t zcap = libdeflate_deflate_compress_bound(c, 2 * cs) + 64;
	uint8_t *z = malloc(zcap);
	REQUIRE(c && z, "oom");
	size_t nchunks = (n + cs - 1) / cs;
	for (size_t i = 0, at = 0; i < nchunks; i++) {
		size_t len = SS_MIN((size_t)cs, n - at);
		if (d == D_SHORT_MIDDLE && i == 0)
			len = cs / 2;
		if (d == D_LONG && i == 0)
			len = SS_MIN((size_t)cs + 100, n - at);
		size_t zl = libdeflate_deflate_compress(c, body + at, len, z, zcap);
		REQUIRE(zl, "deflate");
		if (d == D_GARBAGE && i == 1)
			memset(z, 0xff, zl);
		if (d == D_INNER_TAIL && i == nchunks - 1)
			z[zl++] = 0;
		uint32_t clen = (uint32_t)zl;
		if (d == D_CLEN_ZERO && i == 1)
			clen = 0;
		if (d == D_CLEN_BIG && i == 1)
			clen = ss_gvs_max_clen(cs) + 1;
		put_be(&s, clen, 4);
		put(&s, z, d == D_TRUNCATED && i == nchunks - 1 ? zl / 2 : zl);
		at += len;
		if (at >= n)
			break;
	}
	if (d == D_TRAILING)
		put(&s, "\0\0", 2);
	libdeflate_free_compressor(c);
	free(z);
	return s;
}

/* Feed form (total bytes) to a sized writer and check its output is want
 * (what the copying writer wrote). Bytes of a zero run are fed as NULL. */
static void check_sized(const uint8_t *form, size_t total, const uint8_t *want, size_t wlen)
{
	int fd = memfd_create("sized", 0);
	REQUIRE(fd >= 0, "memfd");
	struct ss_gvs_out *o;
	REQUIRE(ss_gvs_out_new_sized(fd, total, &o) == 0, "sized out");
	uint8_t *copy = malloc(total);
	REQUIRE(copy, "oom");
	for (size_t at = 0; at < total;) {
		/* SS_MIN evaluates its arguments twice: draw first. */
		size_t r = (size_t)(rnd() % (rnd() % 2 ? 3000 : 90000)) + 1;
		size_t k = SS_MIN(total - at, r);
		bool zero = true;
		for (size_t i = 0; i < k && zero; i++)
			zero = !form[at + i];
		/* A buffer the writer may point into until the flush. */
		memcpy(copy + at, form + at, k);
		CHECK(ss_gvs_out_put(o, zero && rnd() % 2 ? NULL : copy + at, k) == 0,
		      "sized put at %zu", at);
		if (rnd() % 3 == 0)
			CHECK(ss_gvs_out_flush(o) == 0, "flush");
		at += k;
	}
	CHECK(ss_gvs_out_put(o, form, 1) == -EBADMSG, "a byte past its size: refused");
	CHECK(ss_gvs_out_finish(o) == 0, "sized finish");
	uint64_t got = ss_gvs_out_written(o);
	ss_gvs_out_free(o);
	uint8_t *rb = malloc(wlen + 1);
	REQUIRE(rb, "oom");
	CHECK(got == wlen && pread(fd, rb, wlen + 1, 0) == (ssize_t)wlen &&
	      memcmp(rb, want, wlen) == 0,
	      "the sized writer wrote %llu bytes, the same as the copying one's %zu",
	      (unsigned long long)got, wlen);
	close(fd);

	/* Fewer bytes than its size: the last chunk's length was wrong. */
	fd = memfd_create("short", 0);
	REQUIRE(fd >= 0 && ss_gvs_out_new_sized(fd, total, &o) == 0, "sized out");
	struct ss_gvs_hdr h;
	REQUIRE(ss_gvs_header(form, total, &h, NULL) == 0, "header");
	CHECK(ss_gvs_out_put(o, form, h.len) == 0 && ss_gvs_out_finish(o) == -EBADMSG,
	      "a sized form that ends short: refused");
	ss_gvs_out_free(o);
	close(fd);
	free(copy);
	free(rb);
}

static void test_parser(void)
{
	const uint32_t cs = 64 << 10;
	const size_t n = 5 * cs + 1234;
	uint8_t *body = make_body(n);
	struct sf s = make_file(body, n, cs, D_NONE);
	struct ss_gvs_hdr h;
	uint64_t blen = 0;
	CHECK(ss_gvs_scan(s.p, s.n, &h, &blen, NULL) == 0, "a valid state file scans");
	CHECK(blen == n && h.chunk_size == cs, "body %llu of %zu, chunk %u",
	      (unsigned long long)blen, n, h.chunk_size);
	uint8_t *form = malloc(h.len + blen);
	REQUIRE(form, "oom");
	CHECK(ss_gvs_scan(s.p, s.n, &h, &blen, form) == 0, "inflated form");
	CHECK(memcmp(form, s.p, h.len) == 0, "the header leads the inflated form verbatim");
	CHECK(memcmp(form + h.len, body, n) == 0, "then the inflated body");

	/* Every prefix of the header asks for more, then parses. */
	size_t need = 0;
	CHECK(ss_gvs_header(s.p, 3, &h, &need) == -EAGAIN && need == 8, "need %zu", need);
	CHECK(ss_gvs_header(s.p, 8, &h, &need) == -EAGAIN && need == 16, "need %zu", need);
	CHECK(ss_gvs_header(s.p, 16, &h, &need) == -EAGAIN && need == h.len, "need %zu", need);
	CHECK(ss_gvs_header(s.p, h.len, &h, NULL) == 0, "whole header");

	/* Rebuilt: the header byte for byte, a body that inflates the same. */
	int fd = memfd_create("rebuilt", 0);
	REQUIRE(fd >= 0, "memfd");
	struct ss_gvs_out *o;
	REQUIRE(ss_gvs_out_new(fd, &o) == 0, "out");
	/* Fed in odd pieces, as cat feeds extents. */
	size_t total = h.len + n;
	for (size_t at = 0; at < total;) {
		size_t r = (size_t)(rnd() % 9000) + 1;   /* drawn once: SS_MIN repeats it */
		size_t k = SS_MIN(total - at, r);
		CHECK(ss_gvs_out_put(o, form + at, k) == 0, "put at %zu", at);
		at += k;
	}
	CHECK(ss_gvs_out_finish(o) == 0, "finish");
	uint64_t written = ss_gvs_out_written(o);
	ss_gvs_out_free(o);
	CHECK(written == ss_gvs_rebuilt_size(&h, total), "rebuilt size %llu, predicted %llu",
	      (unsigned long long)written, (unsigned long long)ss_gvs_rebuilt_size(&h, total));
	uint8_t *rb = malloc(written);
	REQUIRE(rb && pread(fd, rb, written, 0) == (ssize_t)written, "read back");
	struct ss_gvs_hdr h2;
	uint64_t b2 = 0;
	uint8_t *form2 = malloc(h.len + n);
	CHECK(ss_gvs_scan(rb, written, &h2, &b2, form2) == 0, "the rebuilt file scans");
	CHECK(b2 == n && memcmp(form2, form, h.len + n) == 0, "and inflates to the same form");
	close(fd);

	/* The sized writer writes the same bytes from the caller's buffers,
	 * fed in odd pieces, zero runs as NULL, flushed at odd times. */
	check_sized(form, total, rb, written);

	/* A stream that is no inflated form is refused. */
	REQUIRE(ss_gvs_out_new(-1, &o) == 0, "out");
	CHECK(ss_gvs_out_put(o, body, 100) == -EBADMSG, "no header: refused");
	ss_gvs_out_free(o);
	REQUIRE(ss_gvs_out_new(-1, &o) == 0, "out");
	CHECK(ss_gvs_out_put(o, form, 10) == 0 && ss_gvs_out_finish(o) == -EBADMSG,
	      "ends inside the header: refused");
	ss_gvs_out_free(o);

	static const struct {
		enum damage d;
		const char *what;
	} bad[] = {
		{D_MAGIC, "bad magic"},
		{D_HMAC, "bad HMAC"},
		{D_META_LEN, "metadata length out of bounds"},
		{D_CHUNK_SIZE0, "chunk size 0"},
		{D_CLEN_ZERO, "compressed length 0"},
		{D_CLEN_BIG, "compressed length out of bounds"},
		{D_TRUNCATED, "last chunk truncated"},
		{D_GARBAGE, "a chunk that does not inflate"},
		{D_SHORT_MIDDLE, "a short chunk before the last"},
		{D_LONG, "a chunk longer than the chunk size"},
		{D_TRAILING, "bytes after the last chunk"},
		{D_INNER_TAIL, "bytes after a chunk's final block"},
	};
	for (size_t i = 0; i < SS_ARRAY_SIZE(bad); i++) {
		struct sf b = make_file(body, n, cs, bad[i].d);
		CHECK(ss_gvs_scan(b.p, b.n, &h, &blen, NULL) == -EINVAL, "%s: refused", bad[i].what);
		free(b.p);
	}
	free(form);
	free(form2);
	free(rb);
	free(s.p);
	free(body);
}

/* --- through the engine --------------------------------------------------- */

static char dir[256];

static void write_file(const char *path, const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0 && write(fd, p, n) == (ssize_t)n && close(fd) == 0, "write %s", path);
}

static uint8_t *read_file(const char *path, size_t *n)
{
	int fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0, "open %s", path);
	struct stat st;
	fstat(fd, &st);
	uint8_t *p = malloc((size_t)st.st_size + 1);
	REQUIRE(p && read(fd, p, (size_t)st.st_size) == st.st_size, "read %s", path);
	close(fd);
	*n = (size_t)st.st_size;
	return p;
}

struct feeder {
	const char *path;
	const uint8_t *p;
	size_t n;
	atomic_int status;
	/* Written over the start of the file once all of it is, before the
	 * writer says it is done (NULL: nothing). */
	const uint8_t *rewrite;
	size_t rewrite_len;
};

/* A writer that appends in small pieces, as runsc does. */
static void *feed(void *arg)
{
	struct feeder *f = arg;
	int fd = open(f->path, O_WRONLY | O_APPEND);
	REQUIRE(fd >= 0, "open");
	for (size_t at = 0; at < f->n;) {
		size_t k = SS_MIN(f->n - at, (size_t)37000);
		REQUIRE(write(fd, f->p + at, k) == (ssize_t)k, "write");
		at += k;
		struct timespec ts = {.tv_nsec = 200000};
		nanosleep(&ts, NULL);
	}
	if (f->rewrite) {
		/* Behind the reader: it has long consumed the start. */
		struct timespec ts = {.tv_nsec = 300000000};
		nanosleep(&ts, NULL);
		/* Not through fd: pwrite on an O_APPEND descriptor appends. */
		int wfd = open(f->path, O_WRONLY);
		REQUIRE(wfd >= 0 && pwrite(wfd, f->rewrite, f->rewrite_len, 0) ==
					    (ssize_t)f->rewrite_len && close(wfd) == 0,
			"rewrite");
	}
	close(fd);
	atomic_store(&f->status, 1);
	return NULL;
}

static int feeder_status(void *arg)
{
	return atomic_load(&((struct feeder *)arg)->status);
}

/* What ss_cat_opts.on_written was told, checked against the file as it
 * grows: every byte reported is there and final when reported. */
struct grow {
	int fd;
	const uint8_t *want;
	size_t n;
	uint64_t done, total;
	unsigned calls, bad;
	int stop_with;             /* answer this from the first call */
};

static int on_written(void *arg, uint64_t done, uint64_t total)
{
	struct grow *g = arg;
	g->calls++;
	if (done < g->done || done > g->n || (total && total != g->n) ||
	    (g->total && total != g->total) || (total && done > total))
		g->bad++;
	/* What arrived since the last call (a whole-prefix check each time
	 * made a large file's test quadratic). */
	uint64_t from = SS_MIN(g->done, done), len = done - from;
	uint8_t *b = malloc(len ? len : 1);
	if (!b || pread(g->fd, b, len, (off_t)from) != (ssize_t)len ||
	    memcmp(b, g->want + from, len) != 0)
		g->bad++;
	free(b);
	g->done = done;
	g->total = total;
	return g->stop_with;
}

static void cat_as_it_grows(const char *tag, const char *snap, struct ss_config_in *cfg,
			    const uint8_t *want, size_t n)
{
	char err[512] = "";
	struct grow g = {.fd = memfd_create("grow", 0), .want = want, .n = n};
	struct ss_cat_opts co = SS_CAT_OPTS_INIT;
	co.snapshot = snap;
	co.fd = g.fd;
	co.on_written = on_written;
	co.on_written_arg = &g;
	CHECK(ss_cat_impl(&co, cfg, NULL, err, sizeof(err)) == 0, "%s: cat as it grows: %s", tag,
	      err);
	CHECK(g.calls >= 1 && g.bad == 0 && g.done == n && g.total == n,
	      "%s: on_written told %u times, %u wrong, last %llu of %llu (file %zu)", tag, g.calls,
	      g.bad, (unsigned long long)g.done, (unsigned long long)g.total, n);
	close(g.fd);
	/* The caller may stop it. */
	g = (struct grow){.fd = memfd_create("grow", 0), .want = want, .n = n,
			  .stop_with = -ECANCELED};
	co.fd = g.fd;
	int r = ss_cat_impl(&co, cfg, NULL, err, sizeof(err));
	CHECK(n == 0 || (r == -ECANCELED && g.calls == 1), "%s: stopped by on_written: %d, %u calls",
	      tag, r, g.calls);
	close(g.fd);
}

/* Push file contents p with --inflate-gvisor (following a writer when
 * follow), pull, cat, verify; check what came back. expect: stored
 * transformed or not. */
static void roundtrip_as(const char *tag, const uint8_t *p, size_t n, bool follow, bool expect,
			 bool appends)
{
	char src[512], snap[512], out[512], img[600];
	snprintf(src, sizeof(src), "%s/src-%s", dir, tag);
	snprintf(snap, sizeof(snap), "%s/snaps/%s", dir, tag);
	snprintf(out, sizeof(out), "%s/out-%s", dir, tag);
	snprintf(img, sizeof(img), "%s/checkpoint.img", src);
	REQUIRE(mkdir(src, 0755) == 0, "mkdir");
	struct ss_config_in cfg = {.pub = SS_CONFIG_INIT};
	struct ss_push_opts po = SS_PUSH_OPTS_INIT;
	po.source = src;
	po.snapshot = snap;
	po.inflate_gvisor = true;
	po.writer_appends = appends;
	struct feeder fd = {.path = img, .p = p, .n = n};
	pthread_t th;
	if (follow) {
		write_file(img, p, 0);
		atomic_init(&fd.status, 0);
		po.writer_status = feeder_status;
		po.writer_arg = &fd;
		REQUIRE(pthread_create(&th, NULL, feed, &fd) == 0, "thread");
	} else {
		write_file(img, p, n);
	}
	char err[512] = "";
	struct ss_stats st = SS_STATS_INIT;
	int r = ss_push_impl(&po, &cfg, &st, err, sizeof(err));
	if (follow)
		pthread_join(th, NULL);
	CHECK(r == 0, "%s: push: %s", tag, err);
	if (r)
		return;
	struct ss_manifest *m = load_manifest(&cfg, snap);
	CHECK(m->nfiles == 1 && m->files[0].transform == (expect ? SS_TRANSFORM_GVISOR : 0),
	      "%s: stored %s", tag, expect ? "inflated" : "as it is");
	CHECK(m->format_major == 5u, "%s: format %u", tag, m->format_major);
	if (expect) {
		CHECK(m->files[0].source_size == n, "%s: source size %llu", tag,
		      (unsigned long long)m->files[0].source_size);
		/* Readers refuse what they cannot restore rightly. */
		m->files[0].transform = 2;
		CHECK(ss_manifest_validate(m, NULL) == -EBADMSG, "%s: unknown transform refused", tag);
		m->files[0].transform = SS_TRANSFORM_GVISOR;
		m->format_major = 2;
		CHECK(ss_manifest_validate(m, NULL) == -EBADMSG,
		      "%s: a transform in a format 2 manifest refused", tag);
		m->format_major = 3;
		CHECK(ss_manifest_validate(m, NULL) == 0, "%s: valid as pushed", tag);
	}
	ss_manifest_free(m);

	struct ss_pull_opts pl = SS_PULL_OPTS_INIT;
	pl.snapshot = snap;
	pl.dest = out;
	CHECK(ss_pull_impl(&pl, &cfg, NULL, err, sizeof(err)) == 0, "%s: pull: %s", tag, err);
	snprintf(img, sizeof(img), "%s/checkpoint.img", out);
	size_t gn = 0;
	uint8_t *got = read_file(img, &gn);
	struct stat sst;
	CHECK(stat(img, &sst) == 0 && (sst.st_mode & 07777) == 0644, "%s: mode kept", tag);
	if (!expect) {
		CHECK(gn == n && memcmp(got, p, n) == 0, "%s: pulled byte for byte", tag);
	} else {
		struct ss_gvs_hdr h1, h2;
		uint64_t b1, b2;
		REQUIRE(ss_gvs_scan(p, n, &h1, &b1, NULL) == 0, "scan");
		uint8_t *f1 = malloc(h1.len + b1), *f2 = malloc(h1.len + b1);
		ss_gvs_scan(p, n, &h1, &b1, f1);
		CHECK(ss_gvs_scan(got, gn, &h2, &b2, NULL) == 0 && b2 == b1 && h2.len == h1.len,
		      "%s: the pulled file is a state file of the same body length", tag);
		if (b2 == b1 && h2.len == h1.len) {
			ss_gvs_scan(got, gn, &h2, &b2, f2);
			CHECK(memcmp(f1, f2, h1.len + b1) == 0, "%s: same header and body", tag);
		}
		free(f1);
		free(f2);
	}
	/* cat writes what pull wrote. */
	int cfd = memfd_create("cat", 0);
	struct ss_cat_opts co = SS_CAT_OPTS_INIT;
	co.snapshot = snap;
	co.fd = cfd;
	CHECK(ss_cat_impl(&co, &cfg, NULL, err, sizeof(err)) == 0, "%s: cat: %s", tag, err);
	struct stat cs;
	fstat(cfd, &cs);
	uint8_t *c = malloc(gn + 1);
	CHECK((size_t)cs.st_size == gn && pread(cfd, c, gn, 0) == (ssize_t)gn &&
		      memcmp(c, got, gn) == 0,
	      "%s: cat gives the pulled bytes", tag);
	close(cfd);
	free(c);
	cat_as_it_grows(tag, snap, &cfg, got, gn);
	struct ss_verify_opts vo = SS_VERIFY_OPTS_INIT;
	vo.snapshot = snap;
	CHECK(ss_verify_impl(&vo, &cfg, NULL, err, sizeof(err)) == 0, "%s: verify: %s", tag, err);
	free(got);
}

static void roundtrip(const char *tag, const uint8_t *p, size_t n, bool follow, bool expect)
{
	roundtrip_as(tag, p, n, follow, expect, false);
}

/* The same state file with other metadata of the same length, its HMAC
 * made anew: a valid state file that differs from p in its header only. */
static uint8_t *other_header(const uint8_t *p, size_t n, size_t *hlen)
{
	struct ss_gvs_hdr h;
	uint64_t blen;
	REQUIRE(ss_gvs_scan(p, n, &h, &blen, NULL) == 0, "scan");
	uint8_t *q = malloc(h.len);
	REQUIRE(q, "oom");
	memcpy(q, p, h.len);
	const size_t meta = 16, mlen = h.len - 16 - 32 - 4;
	REQUIRE(mlen > 0 && q[meta + mlen - 3] == 'v', "metadata as make_file writes it");
	q[meta + mlen - 3] = 'w';
	unsigned ml = 32;
	static const uint8_t nokey[1];
	HMAC(EVP_sha256(), nokey, 0, q, meta + mlen, q + meta + mlen, &ml);
	*hlen = h.len;
	return q;
}

/* A state file whose header is rewritten behind the reader, after the
 * decoder consumed it and before the writer says it is done: the
 * snapshot must hold what the file holds at the end (here: pushed as it
 * is, once the decoder's second read saw the change), never the header
 * that was read first. */
static void rewritten_follow(const uint8_t *p, size_t n)
{
	char src[512], snap[512], out[512], img[600];
	snprintf(src, sizeof(src), "%s/src-rewritten", dir);
	snprintf(snap, sizeof(snap), "%s/snaps/rewritten", dir);
	snprintf(out, sizeof(out), "%s/out-rewritten", dir);
	snprintf(img, sizeof(img), "%s/checkpoint.img", src);
	REQUIRE(mkdir(src, 0755) == 0, "mkdir");
	size_t hlen = 0;
	uint8_t *hdr = other_header(p, n, &hlen);
	uint8_t *final = malloc(n);
	REQUIRE(final, "oom");
	memcpy(final, p, n);
	memcpy(final, hdr, hlen);
	write_file(img, p, 0);
	struct feeder fd = {.path = img, .p = p, .n = n, .rewrite = hdr, .rewrite_len = hlen};
	atomic_init(&fd.status, 0);
	struct ss_config_in cfg = {.pub = SS_CONFIG_INIT};
	struct ss_push_opts po = SS_PUSH_OPTS_INIT;
	po.source = src;
	po.snapshot = snap;
	po.inflate_gvisor = true;
	po.writer_status = feeder_status;
	po.writer_arg = &fd;
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, feed, &fd) == 0, "thread");
	char err[512] = "";
	int r = ss_push_impl(&po, &cfg, NULL, err, sizeof(err));
	pthread_join(th, NULL);
	CHECK(r == 0, "rewritten: push: %s", err);
	struct ss_pull_opts pl = SS_PULL_OPTS_INIT;
	pl.snapshot = snap;
	pl.dest = out;
	CHECK(r == 0 && ss_pull_impl(&pl, &cfg, NULL, err, sizeof(err)) == 0,
	      "rewritten: pull: %s", err);
	snprintf(img, sizeof(img), "%s/checkpoint.img", out);
	size_t gn = 0;
	uint8_t *got = r == 0 ? read_file(img, &gn) : NULL;
	/* Pushed as it is, or (had the decoder read the new header) inflated
	 * with it: either way the final header. */
	CHECK(got && gn >= hlen && memcmp(got, hdr, hlen) == 0,
	      "rewritten: the snapshot has the header the file ended with");
	CHECK(got && (gn != n || memcmp(got, final, n) == 0) &&
		      (gn == n || ss_gvs_scan(got, gn, &(struct ss_gvs_hdr){0}, &(uint64_t){0},
					      NULL) == 0),
	      "rewritten: and the file's final bytes");
	free(got);
	free(final);
	free(hdr);
}

static void test_engine(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ss-test-gvstate-XXXXXX");
	REQUIRE(mkdtemp(dir), "mkdtemp");
	const uint32_t cs = 256 << 10;
	const size_t n = 9 * cs + 777;
	uint8_t *body = make_body(n);
	struct sf ok = make_file(body, n, cs, D_NONE);
	roundtrip("valid", ok.p, ok.n, false, true);
	roundtrip("valid-follow", ok.p, ok.n, true, true);
	/* A writer that only appends (runsc): read once, the same snapshot. */
	roundtrip_as("valid-follow-appends", ok.p, ok.n, true, true, true);
	rewritten_follow(ok.p, ok.n);
	/* Followed, the inflated form goes through a ring of chunk slots
	 * (gvpush.c) a few MiB long: 16 MiB in 16 KiB chunks goes round it
	 * several times, the decoder waiting for the pipeline to free slots. */
	const uint32_t small = 16 << 10;
	const size_t wn = 1024 * small + 321;
	uint8_t *wbody = make_body(wn);
	struct sf wrap = make_file(wbody, wn, small, D_NONE);
	roundtrip("valid-follow-wraps", wrap.p, wrap.n, true, true);
	roundtrip_as("valid-follow-wraps-appends", wrap.p, wrap.n, true, true, true);
	free(wrap.p);
	free(wbody);
	/* The decoder reads about what its last batches took (gvpush.c,
	 * `ask`): chunks that deflate to almost nothing, then incompressible
	 * ones, each larger than it asks for. */
	const size_t sn = 64 * small;
	uint8_t *sbody = malloc(sn);
	REQUIRE(sbody, "oom");
	for (size_t i = 0; i < sn; i++)
		sbody[i] = i < 40 * (size_t)small ? (uint8_t)(i % 5) : (uint8_t)rnd();
	struct sf shift = make_file(sbody, sn, small, D_NONE);
	roundtrip("valid-then-random", shift.p, shift.n, false, true);
	roundtrip("valid-then-random-follow", shift.p, shift.n, true, true);
	free(shift.p);
	free(sbody);
	struct sf trail = make_file(body, n, cs, D_TRAILING);
	roundtrip("trailing", trail.p, trail.n, false, false);
	/* Damage after a valid header: in follow mode the push has begun
	 * reading the inflated form when the damage shows, and runs again. */
	roundtrip("trailing-follow", trail.p, trail.n, true, false);
	struct sf garb = make_file(body, n, cs, D_GARBAGE);
	roundtrip("garbage-follow", garb.p, garb.n, true, false);
	struct sf hmac = make_file(body, n, cs, D_HMAC);
	roundtrip("hmac-follow", hmac.p, hmac.n, true, false);
	/* Too short to tell, and plain bytes: as they are. */
	roundtrip("tiny", (const uint8_t *)"gVis", 4, false, false);
	roundtrip("plain", body, n, true, false);
	roundtrip_as("plain-appends", body, n, true, false, true);
	free(ok.p);
	free(trail.p);
	free(garb.p);
	free(hmac.p);
	free(body);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

int main(void)
{
	test_parser();
	test_engine();
	if (failures)
		fprintf(stderr, "%d failure(s)\n", failures);
	return failures ? 1 : 0;
}
