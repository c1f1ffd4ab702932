/* bundle.h — OCI bundles ateom derives from an operator's, to put several
 * containers into one gVisor sandbox.
 *
 * runsc starts a container in an existing sandbox only when its
 * config.json carries the CRI annotations
 *   io.kubernetes.cri.container-type = "container"
 *   io.kubernetes.cri.sandbox-id     = <the sandbox root's container id>
 * (without them every `runsc run` makes a sandbox of its own). ateom does
 * not write into the operator's bundles: it writes a copy of config.json
 * with those annotations into its own work directory, with the relative
 * paths (root.path, bind mount sources) made absolute against the
 * original bundle, so the copy means what the original meant.
 *
 * Stateless; any thread.
 */
#ifndef ATEOM_BUNDLE_H
#define ATEOM_BUNDLE_H

#include <stddef.h>

/* config.json larger than this is refused (-EFBIG). */
#define BUNDLE_MAX_CONFIG (4u << 20)

/* Write <dst_dir>/config.json (dst_dir is created, mode 0700): src's
 * config.json with the sub-container annotations naming sandbox_id.
 * Returns 0 or -errno with a message in err (-EBADMSG: config.json is not
 * a JSON object, or root.path is missing). */
int bundle_derive_subcontainer(const char *src, const char *dst_dir, const char *sandbox_id,
			       char *err, size_t errlen);

#endif
