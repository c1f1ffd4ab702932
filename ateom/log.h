/* log — ateom's JSON log on stdout: one line per RPC (docs/ATEOM.md).
 *
 * Strings from requests and results (actor ids, names, snapshot URIs,
 * messages that quote paths) are untrusted bytes: the line is written with
 * json/ssjson.h, which turns ill-formed UTF-8 into U+FFFD and escapes
 * control characters, so every line is one valid JSON object.
 */
#ifndef ATEOM_LOG_H
#define ATEOM_LOG_H

#include <stdio.h>
#include <time.h>

struct wl_req;
struct wl_result;

/* Write the line of one call to f: rpc is the method's name, q the decoded
 * request or NULL when there was none, now the wall-clock time stamped on
 * the line. The line goes out in one piece (f is locked while it is
 * written). Returns 0, -ENOMEM, or -errno of the failed write. Thread-safe. */
int log_rpc_line(FILE *f, const char *rpc, const struct wl_req *q,
		 const struct wl_result *res, double total_ms, double queued_ms,
		 const struct timespec *now);

#endif
