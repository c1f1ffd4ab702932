/* runtime.h — the runsc binary a checkpoint was written with, kept in the
 * store beside the checkpoint and fetched back for the restore.
 *
 * A gVisor checkpoint can only be restored by the runsc version that wrote
 * it. So every checkpoint records the SHA-256 of its runsc binary (and the
 * version it reports), and the binary itself is stored once per store as a
 * one-file snapshot named after its digest:
 *
 *   <store>/runsc/sha256-<64 hex>/manifest
 *
 * The name is derived from the store and the digest only, never taken
 * from a manifest, and the engine verifies every chunk on the way back;
 * the digest of what arrives is checked again before it is ever run.
 * Fetched binaries are kept in <work-dir>/runsc/<64 hex> (mode 0755),
 * written under a temporary name and renamed once verified.
 *
 * Not thread-safe: one struct rt per caller thread (ateom's worker).
 */
#ifndef ATEOM_RUNTIME_H
#define ATEOM_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RT_SHA256_HEX 64

struct rt_config {
	const char *work_dir;           /* the cache goes to <work_dir>/runsc */
	const char *store;              /* ateom's --store, or NULL: beside each snapshot */
	const uint8_t *key;             /* a keyed store's key, or NULL (borrowed) */
	size_t key_len;
	const char *const *env;         /* ss_config.env (borrowed) */
};

struct rt;

/* Copies cfg's strings (not key and env, which must outlive rt). Returns
 * NULL with errno set. */
struct rt *rt_new(const struct rt_config *cfg);
void rt_free(struct rt *rt);

/* The SHA-256 (lower-case hex, NUL-terminated into hex[65]) of the file
 * path resolves to, remembered while that file is unchanged (device,
 * inode, size, mtime). Returns 0 or -errno with err set. */
int rt_digest(struct rt *rt, const char *path, char hex[RT_SHA256_HEX + 1], char *err,
	      size_t errlen);

/* True when s is exactly 64 lower-case hex digits: the only digests that
 * name a store object or a cache file. */
bool rt_digest_ok(const char *s);

/* Make sure the store that holds snapshot_uri (the configured store, else
 * the engine's default beside it) has the binary at path, whose digest is
 * hex and whose version is version; uploaded only when the store does not
 * have it yet, and remembered once known. Returns 0 or the engine's
 * -errno with err set. */
int rt_keep(struct rt *rt, const char *path, const char *hex, const char *version,
	    const char *snapshot_uri, char *err, size_t errlen);

/* The local path of the binary with digest hex, fetched from the store of
 * snapshot_uri into the cache unless a verified copy is there already.
 * Returns 0 with path set, -EINVAL (hex is no digest), -EBADMSG (what the
 * store holds under that name has another digest: nothing is kept), or
 * the engine's -errno (-ENOENT: the store does not hold it), err set. */
int rt_fetch(struct rt *rt, const char *hex, const char *snapshot_uri, char *path,
	     size_t pathlen, char *err, size_t errlen);

#endif
