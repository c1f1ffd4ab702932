/* reaper.c — reap orphaned sandbox processes as soon as they exit. */
#include "reaper.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

/* Children spawned and waited for by callers at once: one per RPC thread
 * and the deleter, so a handful. */
#define MAX_OWNED 64

struct reaper {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* an owned child was waited for */
	pid_t owned[MAX_OWNED];
	size_t nowned;
	bool stop;
};

static bool owned(const struct reaper *r, pid_t pid)
{
	for (size_t i = 0; i < r->nowned; i++)
		if (r->owned[i] == pid)
			return true;
	return false;
}

static void *reaper_main(void *arg)
{
	struct reaper *r = arg;
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		/* Look at the next zombie without taking it: it may be one
		 * that a caller is about to wait for. */
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid > 0) {
			if (owned(r, si.si_pid))
				pthread_cond_wait(&r->cv, &r->mu);
			else
				waitpid(si.si_pid, NULL, WNOHANG);
			continue;
		}
		pthread_mutex_unlock(&r->mu);
		/* SIGCHLD says a child exited; the timeout covers a signal
		 * that arrived while we were looking. */
		struct timespec ts = {0, 200 * 1000 * 1000};
		sigtimedwait(&chld, NULL, &ts);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

int reaper_start(struct reaper **out)
{
	*out = NULL;
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		return -errno;
	struct reaper *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	int e = pthread_create(&r->th, NULL, reaper_main, r);
	if (e) {
		pthread_cond_destroy(&r->cv);
		pthread_mutex_destroy(&r->mu);
		free(r);
		return -e;
	}
	*out = r;
	return 0;
}

void reaper_stop(struct reaper *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_kill(r->th, SIGCHLD);
	pthread_join(r->th, NULL);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

void reaper_spawn_begin(struct reaper *r)
{
	if (r)
		pthread_mutex_lock(&r->mu);
}

void reaper_spawn_end(struct reaper *r, pid_t pid)
{
	if (!r)
		return;
	/* With the table full the child goes unregistered: the reaper may
	 * then take its status and the caller sees ECHILD, reported as a
	 * failed command rather than a hang. */
	if (pid > 0 && r->nowned < MAX_OWNED)
		r->owned[r->nowned++] = pid;
	pthread_mutex_unlock(&r->mu);
}

void reaper_waited(struct reaper *r, pid_t pid)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < r->nowned; i++)
		if (r->owned[i] == pid) {
			r->owned[i] = r->owned[--r->nowned];
			break;
		}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}
