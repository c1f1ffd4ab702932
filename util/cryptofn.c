#include "cryptofn.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

/* One table per process: libcrypto keeps process-wide state of its own,
 * and the dlopen is never undone (another thread may still use it; the
 * process exit releases it). */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct ss_cryptofn fns;
static int load_res;
static char load_why[256];

#define SS_STR_(x) #x
#define SS_STR(x) SS_STR_(x)

static void load(void)
{
	/* The SONAME of the libcrypto the headers came from. */
	const char *soname = OPENSSL_VERSION_MAJOR >= 3 ? "libcrypto.so.3" : "libcrypto.so.1.1";
	void *dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		load_res = -ENOENT;
		snprintf(load_why, sizeof(load_why),
			 "keyed stores, object stores and gVisor state files need OpenSSL's "
			 "libcrypto (Debian: libssl3): %s",
			 dlerror());
		return;
	}
#define SS_CRYPTO_SYM(m, sym)                                                         \
	if (!(*(void **)&fns.m = dlsym(dl, SS_STR(sym))) && !load_res) {               \
		load_res = -ENOENT;                                                    \
		snprintf(load_why, sizeof(load_why), "%s has no %s", soname, SS_STR(sym)); \
	}
	SS_CRYPTO_FNS(SS_CRYPTO_SYM)
#undef SS_CRYPTO_SYM
}

int ss_crypto_load(struct ss_err *err)
{
	pthread_once(&once, load);
	if (load_res)
		return err ? ss_err_set(err, load_res, "%s", load_why) : load_res;
	return 0;
}

const struct ss_cryptofn *ss_crypto(void)
{
	return &fns;
}
