/* curlfn — libcurl, loaded when the first object-store request starts
 * (private to the backends).
 *
 * Linking libcurl makes every start of the program load it and the ~30
 * libraries it needs (TLS, Kerberos, LDAP, RTMP, SSH, IDN...), run their
 * constructors and take their page faults: ~30 ms on a VM, where
 * `zstd -d` of a 64 MiB image takes ~70 ms. Local and memory stores never
 * touch HTTP, so the backends reach libcurl through this table, filled by
 * dlopen on first use; the headers still type the calls.
 */
#ifndef SS_CURLFN_H
#define SS_CURLFN_H

#include <curl/curl.h>

#include "util.h"

#define SS_CURL_FNS(X)                                                                   \
	X(global_init) X(easy_init) X(easy_cleanup) X(easy_setopt) X(easy_getinfo)         \
	X(easy_reset) X(easy_strerror) X(multi_init) X(multi_cleanup) X(multi_setopt)       \
	X(multi_add_handle) X(multi_remove_handle) X(multi_socket_action) X(multi_assign) \
	X(multi_info_read) X(slist_append) X(slist_free_all) X(version_info)

struct ss_curlfn {
#define SS_CURL_FN(n) __typeof__(curl_##n) *n;
	SS_CURL_FNS(SS_CURL_FN)
#undef SS_CURL_FN
};

/* Load libcurl and run curl_global_init, once per process (any thread).
 * Returns 0, or -ENOENT / -EIO with err saying what is missing. */
int ss_curl_load(struct ss_err *err);

/* The functions; only after ss_curl_load succeeded. */
const struct ss_curlfn *ss_curl(void);

#endif
