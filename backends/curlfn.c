#include "curlfn.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

/* One table per process, as libcurl itself is: curl_global_init is not
 * thread-safe and must run once before any other call, and neither it
 * nor the dlopen is ever undone (another thread may still use libcurl;
 * the process exit releases both). */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct ss_curlfn fns;
static int load_res;
static char load_why[256];

static void load(void)
{
	/* The SONAME of every libcurl with CURLOPT_AWS_SIGV4 (7.75+). */
	void *dl = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		load_res = -ENOENT;
		snprintf(load_why, sizeof(load_why),
			 "S3 and GCS stores need libcurl (Debian: libcurl4): %s", dlerror());
		return;
	}
#define SS_CURL_SYM(n)                                                               \
	if (!(*(void **)&fns.n = dlsym(dl, "curl_" #n)) && !load_res) {               \
		load_res = -ENOENT;                                                   \
		snprintf(load_why, sizeof(load_why), "libcurl has no curl_" #n);       \
	}
	SS_CURL_FNS(SS_CURL_SYM)
#undef SS_CURL_SYM
	if (load_res)
		return;
	const curl_version_info_data *v = fns.version_info(CURLVERSION_NOW);
	if (!v || v->version_num < 0x074b00) {
		load_res = -ENOENT;
		snprintf(load_why, sizeof(load_why), "libcurl %s is too old (7.75 or later needed)",
			 v ? v->version : "?");
		return;
	}
	CURLcode cc = fns.global_init(CURL_GLOBAL_DEFAULT);
	if (cc != CURLE_OK) {
		load_res = -EIO;
		snprintf(load_why, sizeof(load_why), "cannot initialize libcurl: %s",
			 fns.easy_strerror(cc));
	}
}

int ss_curl_load(struct ss_err *err)
{
	pthread_once(&once, load);
	if (load_res)
		return ss_err_set(err, load_res, "%s", load_why);
	return 0;
}

const struct ss_curlfn *ss_curl(void)
{
	return &fns;
}
