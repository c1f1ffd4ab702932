/* log — ateom's JSON log line (log.h). */
#include "log.h"

#include "ssjson.h"
#include "workload.h"

#include <errno.h>
#include <json.h>
#include <string.h>

static const char *code_name(int code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
		"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
		"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
		"UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
	};
	return code >= 0 && code < (int)(sizeof(names) / sizeof(names[0])) ? names[code] : "?";
}

/* ssjson_add's failures are sticky in *r, so the fields read as a list. */
static void add(int *r, struct json_object *o, const char *k, struct json_object *v)
{
	int e = ssjson_add(o, k, v);
	if (e && !*r)
		*r = e;
}

int log_rpc_line(FILE *f, const char *rpc, const struct wl_req *q,
		 const struct wl_result *res, double total_ms, double queued_ms,
		 const struct timespec *now)
{
	char when[64];
	struct tm tm;
	if (!gmtime_r(&now->tv_sec, &tm))
		memset(&tm, 0, sizeof(tm));
	size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - n, ".%03ldZ", now->tv_nsec / 1000000);

	int r = 0;
	struct json_object *o = json_object_new_object();
	if (!o)
		return -ENOMEM;
	add(&r, o, "time", ssjson_string(when));
	add(&r, o, "rpc", ssjson_string(rpc));
	add(&r, o, "code", ssjson_string(code_name((int)res->code)));
	if (q) {
		add(&r, o, "actor_id", ssjson_string(q->actor_id));
		add(&r, o, "namespace", ssjson_string(q->ns));
		add(&r, o, "template", ssjson_string(q->name));
		if (q->snapshot_uri && *q->snapshot_uri)
			add(&r, o, "snapshot", ssjson_string(q->snapshot_uri));
	}
	add(&r, o, "state", ssjson_string(res->state));
	add(&r, o, "ms", ssjson_fixed(total_ms, 1));
	add(&r, o, "queued_ms", ssjson_fixed(queued_ms, 1));
	struct json_object *ph = json_object_new_object();
	for (size_t i = 0; ph && i < res->nphases && i < WL_MAX_PHASES; i++)
		add(&r, ph, res->phase[i].name, ssjson_fixed(res->phase[i].ms, 1));
	add(&r, o, "phases", ph);
	if (res->have_stats) {
		struct json_object *b = json_object_new_object();
		if (b) {
			add(&r, b, "logical", json_object_new_uint64(res->logical_bytes));
			add(&r, b, "zero", json_object_new_uint64(res->zero_bytes));
			add(&r, b, "dedup", json_object_new_uint64(res->dedup_bytes));
			add(&r, b, "new_stored", json_object_new_uint64(res->new_stored_bytes));
			add(&r, b, "transferred", json_object_new_uint64(res->transferred_bytes));
		}
		add(&r, o, "bytes", b);
	}
	if (res->restore_spool)
		add(&r, o, "restore_spool", ssjson_string(res->restore_spool));
	if (res->msg[0])
		add(&r, o, "message", ssjson_string(res->msg));
	if (!r) {
		flockfile(f);
		r = ssjson_write_line(f, o);
		funlockfile(f);
	}
	json_object_put(o);
	return r;
}
