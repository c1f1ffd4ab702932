/* gc/lock, shared by gc and check --repair (admin.h). */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin.h"

#define LOCK_MAX 4096

/* "(pid 12 on host, for 30s)" from a lock's text, or "" if unreadable. */
static void describe_holder(struct ss_backend *b, struct ss_loop *l, uint64_t *requests,
			    char *who, size_t n)
{
	uint8_t *held = NULL;
	size_t hl = 0;
	who[0] = '\0';
	if (ss_get_object(b, l, SS_GC_LOCK_KEY, LOCK_MAX, &held, &hl, requests, NULL))
		return;
	char h[256] = "?";
	int pid = 0;
	long long since = 0;
	char *text = strndup((char *)held, hl);
	if (text) {
		char *p = strstr(text, "host ");
		if (p)
			sscanf(p, "host %255s", h);
		if ((p = strstr(text, "pid ")))
			sscanf(p, "pid %d", &pid);
		if ((p = strstr(text, "since ")))
			sscanf(p, "since %lld", &since);
	}
	free(text);
	free(held);
	long long age = (ss_wall_ns() - since) / 1000000000;
	snprintf(who, n, " (pid %d on %s, for %llds)", pid, h, age);
}

int ss_gclock_take(struct ss_backend *b, struct ss_loop *l, const char *store, const char *what,
		   bool break_lock, uint64_t *requests, struct ss_err *err)
{
	char host[256] = "?";
	gethostname(host, sizeof(host) - 1);
	char body[LOCK_MAX];
	int n = snprintf(body, sizeof(body),
			 "snapstream-gc-lock 1\nhost %s\npid %d\nsince %" PRId64 "\n", host,
			 (int)getpid(), ss_wall_ns());
	struct ss_err e = {0};
	int r = ss_put_object(b, l, SS_GC_LOCK_KEY, body, (size_t)n, SS_PUT_IF_ABSENT, requests,
			      &e);
	if (r == -EEXIST && break_lock) {
		struct ss_req d = {.kind = SS_REQ_DELETE, .key = SS_GC_LOCK_KEY};
		int dr = ss_call(b, l, &d, requests);
		if (dr && dr != -ENOENT)
			return ss_err_set(err, dr, "cannot remove %s/%s: %s", store, SS_GC_LOCK_KEY,
					  strerror(-dr));
		ss_err_clear(&e);
		r = ss_put_object(b, l, SS_GC_LOCK_KEY, body, (size_t)n, SS_PUT_IF_ABSENT, requests,
				  &e);
	}
	if (r == -EEXIST) {
		/* Say who holds it, so a person can tell whether it is alive. */
		char who[300];
		describe_holder(b, l, requests, who, sizeof(who));
		return ss_err_set(err, -EBUSY,
				  "another gc (or check --repair) is running on %s%s; if it is not, "
				  "run 'snapstream %s --break-lock'",
				  store, who, what);
	}
	if (r)
		return ss_err_set(err, r, "cannot take the gc lock %s/%s: %s", store, SS_GC_LOCK_KEY,
				  e.msg[0] ? e.msg : strerror(-r));
	return 0;
}

void ss_gclock_drop(struct ss_backend *b, struct ss_loop *l, uint64_t *requests)
{
	struct ss_req d = {.kind = SS_REQ_DELETE, .key = SS_GC_LOCK_KEY};
	ss_call(b, l, &d, requests);
}
