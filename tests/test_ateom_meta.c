/* ateom's checkpoint reports why it could not prepare the image
 * directory: the real cause, never a stale errno (which read "Success"
 * when a side file's path was too long; what restore checks now travels
 * as the snapshot's labels). Built from ateom/workload.c itself so that
 * the sandbox state can be reached without runsc or gRPC. */
#include "../ateom/workload.c"

#include "testutil.h"

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
	/* <dir>/checkpoint cannot be made: dir is gone. */
	REQUIRE(asprintf(&w->dir, "%s/gone", base) > 0, "asprintf");

	struct wl_req q = {.snapshot_uri = "/tmp/ss-ateom-meta-snap"};
	struct wl_result res = {0};
	errno = 0;
	wl_checkpoint(w, &q, &res);
	CHECK(res.code == WL_INTERNAL, "code %d: %s", res.code, res.msg);
	CHECK(strstr(res.msg, "cannot prepare") && strstr(res.msg, strerror(ENOENT)),
	      "message names the cause: %s", res.msg);

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
