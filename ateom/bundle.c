/* bundle.c — derived OCI bundles for sub-containers (see bundle.h). */
#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ANN_TYPE "io.kubernetes.cri.container-type"
#define ANN_SANDBOX "io.kubernetes.cri.sandbox-id"

/* The whole of path, NUL-terminated, at most max bytes. Returns the
 * malloc'd text or NULL with errno set (EFBIG when larger). */
static char *slurp(const char *path, size_t max)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	char *buf = malloc(max + 1);
	size_t n = 0;
	int e = ENOMEM;
	if (!buf)
		goto fail;
	for (;;) {
		ssize_t k = read(fd, buf + n, max + 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			e = errno;
			goto fail;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > max) {
			e = EFBIG;
			goto fail;
		}
	}
	close(fd);
	buf[n] = '\0';
	return buf;
fail:
	close(fd);
	free(buf);
	errno = e;
	return NULL;
}

/* Replace the string at obj[key] by dir/<it> when it is relative. */
static int absolutize(struct json_object *obj, const char *key, const char *dir)
{
	struct json_object *v;
	if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
		return 0;
	const char *s = json_object_get_string(v);
	if (s[0] == '/')
		return 0;
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s/%s", dir, s) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	return json_object_object_add(obj, key, json_object_new_string(buf)) ? -ENOMEM : 0;
}

static bool is_bind(struct json_object *m)
{
	struct json_object *t, *opts;
	if (json_object_object_get_ex(m, "type", &t) && json_object_is_type(t, json_type_string) &&
	    !strcmp(json_object_get_string(t), "bind"))
		return true;
	if (!json_object_object_get_ex(m, "options", &opts) ||
	    !json_object_is_type(opts, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(opts); i++) {
		const char *o = json_object_get_string(json_object_array_get_idx(opts, i));
		if (o && (!strcmp(o, "bind") || !strcmp(o, "rbind")))
			return true;
	}
	return false;
}

int bundle_derive_subcontainer(const char *src, const char *dst_dir, const char *sandbox_id,
			       char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct json_object *cfg = NULL, *root, *mounts, *ann;
	int r;
	snprintf(path, sizeof(path), "%s/config.json", src);
	char *text = slurp(path, BUNDLE_MAX_CONFIG);
	if (!text) {
		r = -errno;
		snprintf(err, errlen, "cannot read %s: %s", path,
			 r == -EFBIG ? "larger than 4 MiB" : strerror(-r));
		return r;
	}
	struct json_tokener *tok = json_tokener_new();
	if (tok) {
		cfg = json_tokener_parse_ex(tok, text, (int)strlen(text));
		if (json_tokener_get_error(tok) != json_tokener_success) {
			json_object_put(cfg);
			cfg = NULL;
		}
		json_tokener_free(tok);
	}
	free(text);
	if (!cfg || !json_object_is_type(cfg, json_type_object) ||
	    !json_object_object_get_ex(cfg, "root", &root) ||
	    !json_object_is_type(root, json_type_object)) {
		snprintf(err, errlen, "%s is not an OCI runtime spec with a root", path);
		r = -EBADMSG;
		goto out;
	}
	/* Relative paths in a bundle are relative to the bundle. */
	if ((r = absolutize(root, "path", src)) < 0)
		goto nomem;
	if (json_object_object_get_ex(cfg, "mounts", &mounts) &&
	    json_object_is_type(mounts, json_type_array))
		for (size_t i = 0; i < json_object_array_length(mounts); i++) {
			struct json_object *m = json_object_array_get_idx(mounts, i);
			if (json_object_is_type(m, json_type_object) && is_bind(m) &&
			    (r = absolutize(m, "source", src)) < 0)
				goto nomem;
		}
	if (!json_object_object_get_ex(cfg, "annotations", &ann) ||
	    !json_object_is_type(ann, json_type_object)) {
		ann = json_object_new_object();
		if (!ann || json_object_object_add(cfg, "annotations", ann)) {
			json_object_put(ann);
			r = -ENOMEM;
			goto nomem;
		}
	}
	if (json_object_object_add(ann, ANN_TYPE, json_object_new_string("container")) ||
	    json_object_object_add(ann, ANN_SANDBOX, json_object_new_string(sandbox_id))) {
		r = -ENOMEM;
		goto nomem;
	}

	if (mkdir(dst_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err, errlen, "cannot create %s: %s", dst_dir, strerror(-r));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/config.json", dst_dir);
	const char *out = json_object_to_json_string_ext(cfg, JSON_C_TO_STRING_PLAIN);
	int fd = out ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
	size_t len = out ? strlen(out) : 0;
	r = fd < 0 ? -errno : 0;
	for (size_t done = 0; r == 0 && done < len;) {
		ssize_t k = write(fd, out + done, len - done);
		if (k < 0 && errno != EINTR)
			r = -errno;
		else if (k > 0)
			done += (size_t)k;
	}
	if (fd >= 0 && close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
	goto out;
nomem:
	snprintf(err, errlen, "cannot derive %s/config.json: %s", src, strerror(-r));
out:
	json_object_put(cfg);
	return r;
}
