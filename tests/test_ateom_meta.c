/* ateom's checkpoint reports why it could not prepare the image
 * directory: the error write_meta returns, not a stale errno (which read
 * "Success" for a path too long). Built from ateom/workload.c itself so
 * that the static write_meta and the sandbox state can be reached without
 * runsc or gRPC. */
#include "../ateom/workload.c"

#include "testutil.h"

/* A directory whose path is `len` bytes long, under base. */
static char *deep_dir(const char *base, size_t len)
{
	char *p = malloc(len + 1);
	REQUIRE(p, "malloc");
	size_t n = (size_t)snprintf(p, len + 1, "%s", base);
	while (n < len) {
		size_t part = len - n - 1 > 200 ? 200 : len - n - 1;
		p[n++] = '/';
		memset(p + n, 'd', part);
		n += part;
		p[n] = '\0';
		REQUIRE(mkdir(p, 0700) == 0, "mkdir %zu: %s", n, strerror(errno));
	}
	return p;
}

int main(void)
{
	char base[] = "/tmp/ss-ateom-meta.XXXXXX";
	REQUIRE(mkdtemp(base), "mkdtemp");
	struct wl_config cfg = {.bundle_root = base, .work_dir = base, .no_follow = true};
	struct wl *w = wl_new(&cfg);
	REQUIRE(w, "wl_new: %s", strerror(errno));

	/* A sandbox that is executing, with the runsc version known, so that
	 * wl_checkpoint gets as far as preparing <dir>/checkpoint. */
	char *id = "sandbox", *cname = "c";
	w->executing = true;
	w->ids[0] = id;
	w->names[0] = cname;
	w->nids = 1;
	w->ns = "ns", w->name = "tmpl", w->actor_id = "actor";
	w->runsc_path = "/bin/sh";
	struct stat st;
	REQUIRE(stat(w->runsc_path, &st) == 0, "stat");
	snprintf(w->vcache.path, sizeof(w->vcache.path), "%s", w->runsc_path);
	snprintf(w->vcache.version, sizeof(w->vcache.version), "test");
	w->vcache.dev = st.st_dev, w->vcache.ino = st.st_ino, w->vcache.size = st.st_size;
	w->vcache.mtime = st.st_mtim;
	/* <dir>/checkpoint fits in PATH_MAX, <dir>/checkpoint/ateom.meta not. */
	w->dir = deep_dir(base, PATH_MAX - 1 - strlen("/checkpoint") - 4);

	struct wl_req q = {.snapshot_uri = "/tmp/ss-ateom-meta-snap"};
	struct wl_result res = {0};
	errno = 0;
	wl_checkpoint(w, &q, &res);
	CHECK(res.code == WL_INTERNAL, "code %d: %s", res.code, res.msg);
	CHECK(strstr(res.msg, "cannot prepare") && strstr(res.msg, strerror(ENAMETOOLONG)),
	      "message names the cause: %s", res.msg);

	/* A write that fails (a full device) is reported as such, not EIO. */
	char d[PATH_MAX], link[PATH_MAX + 16];
	snprintf(d, sizeof(d), "%s/full", base);
	REQUIRE(mkdir(d, 0700) == 0, "mkdir");
	snprintf(link, sizeof(link), "%s/" META_NAME, d);
	if (symlink("/dev/full", link) == 0 && access("/dev/full", W_OK) == 0) {
		int r = write_meta(w, d, "test");
		CHECK(r == -ENOSPC, "write_meta to /dev/full: %d (%s)", r, strerror(-r));
	}

	/* Give back what this test set by hand, then the rest. */
	w->executing = false;
	w->nids = 0;
	free(w->dir);
	w->dir = NULL;
	w->runsc_path = NULL;
	wl_free(w, NULL, 0);
	rm_tree(base);
	return failures ? 1 : 0;
}
