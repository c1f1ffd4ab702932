/* push --while -- <command> [args...]: run a checkpointer (criu dump -D,
 * runsc checkpoint, a Firecracker snapshot) and push the directory it
 * writes while it writes it, through the engine's follow mode
 * (ss_push_opts.writer_status).
 *
 * The command starts on the engine's first writer_status call, i.e. once
 * the configuration, the snapshot location and the store were accepted:
 * a push that cannot succeed (the snapshot exists, a bad key) fails
 * before anything is checkpointed.
 *
 * Signals: the command runs in our process group with our stdio, so a
 * Ctrl-C on the terminal reaches it directly. While it runs, SIGINT,
 * SIGTERM, SIGHUP and SIGQUIT are blocked in this process (and in the
 * engine's threads, which inherit the mask) and picked up on every
 * writer_status call: those another process sent us (kill, a supervisor)
 * are passed on to the command; we stay to see how it ends, so that it
 * is always reaped and the push ends as the command did. Once it has
 * exited the mask is restored, and a signal ends the push as usual (a
 * push that dies writes no snapshot). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

extern char **environ;

struct runner {
	char **argv;
	pid_t pid;              /* 0 until started */
	bool reaped;
	int wstatus;            /* once reaped */
	int spawn_err;          /* posix_spawnp's error, or 0 */
	int early_sig;          /* a signal that came before the command started */
	bool failed;            /* writer_status said so: the push fails for it */
	sigset_t sigs;          /* blocked while the command runs */
	sigset_t old;           /* the mask to restore */
	bool masked;
};

static void unmask(struct runner *R)
{
	if (R->masked)
		pthread_sigmask(SIG_SETMASK, &R->old, NULL);
	R->masked = false;
}

/* Take the pending signals (waiting up to wait_ns for one), passing on to
 * the command those a process sent. Those from the terminal (SI_KERNEL)
 * reached the command already, as part of the foreground group. */
static void forward(struct runner *R, long wait_ns)
{
	struct timespec ts = {.tv_nsec = wait_ns};
	siginfo_t si;
	int s;
	while ((s = sigtimedwait(&R->sigs, &si, &ts)) > 0) {
		if (!R->pid) {
			R->early_sig = s;
		} else if (!R->reaped && si.si_code <= 0) {
			kill(R->pid, s);
		}
		ts.tv_nsec = 0;
	}
}

static void reap(struct runner *R, bool block)
{
	while (R->pid && !R->reaped) {
		forward(R, block ? 50000000 : 0);
		pid_t p = waitpid(R->pid, &R->wstatus, WNOHANG);
		if (p == R->pid || (p < 0 && errno == ECHILD)) {
			R->reaped = true;
			unmask(R);
		}
		if (!block)
			break;
	}
}

/* The engine's writer_status: 0 while the command runs, 1 once it exited
 * 0, -ECANCELED when it failed or could not start. Runs on the thread
 * that called ss_push. */
static int writer_status(void *arg)
{
	struct runner *R = arg;
	if (!R->pid && !R->spawn_err && !R->early_sig) {
		forward(R, 0);
		if (R->early_sig)
			return -ECANCELED;
		posix_spawnattr_t at;
		int e = posix_spawnattr_init(&at);
		if (!e)
			e = posix_spawnattr_setsigmask(&at, &R->old);
		if (!e)
			e = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
		if (!e)
			e = posix_spawnp(&R->pid, R->argv[0], NULL, &at, R->argv, environ);
		posix_spawnattr_destroy(&at);
		if (e) {
			R->pid = 0;
			R->spawn_err = e;
		}
	}
	if (!R->spawn_err && !R->early_sig) {
		reap(R, false);
		if (!R->reaped)
			return 0;
		if (WIFEXITED(R->wstatus) && WEXITSTATUS(R->wstatus) == 0)
			return 1;
	}
	R->failed = true;
	return -ECANCELED;
}

/* "'criu' exited with status 3", "'runsc' was killed by signal 9 (Killed)". */
static void describe(const struct runner *R, char *out, size_t n)
{
	const char *cmd = R->argv[0];
	if (R->spawn_err)
		snprintf(out, n, "cannot run '%s': %s", cmd, strerror(R->spawn_err));
	else if (R->early_sig)
		snprintf(out, n, "signal %d (%s) came before '%s' started", R->early_sig,
			 strsignal(R->early_sig), cmd);
	else if (!R->pid)
		snprintf(out, n, "'%s' was not started", cmd);
	else if (WIFEXITED(R->wstatus))
		snprintf(out, n, "'%s' exited with status %d", cmd, WEXITSTATUS(R->wstatus));
	else if (WIFSIGNALED(R->wstatus))
		snprintf(out, n, "'%s' was killed by signal %d (%s)", cmd, WTERMSIG(R->wstatus),
			 strsignal(WTERMSIG(R->wstatus)));
	else
		snprintf(out, n, "'%s' ended with wait status %#x", cmd, (unsigned)R->wstatus);
}

int cli_push_while(struct cli *c, struct ss_push_opts *o, struct ss_stats *st, char *err,
		   size_t errlen)
{
	struct runner R = {.argv = c->run_argv};
	sigemptyset(&R.sigs);
	sigaddset(&R.sigs, SIGINT);
	sigaddset(&R.sigs, SIGTERM);
	sigaddset(&R.sigs, SIGHUP);
	sigaddset(&R.sigs, SIGQUIT);
	/* Before ss_push creates its threads, so that they inherit the mask
	 * and these signals wait for writer_status. */
	int e = pthread_sigmask(SIG_BLOCK, &R.sigs, &R.old);
	if (e) {
		snprintf(err, errlen, "cannot block signals: %s", strerror(e));
		return -e;
	}
	R.masked = true;
	o->writer_status = writer_status;
	o->writer_arg = &R;
	int r = ss_push(o, &c->cfg, st, err, errlen);
	if (R.pid && !R.reaped && !c->quiet)
		fprintf(stderr, "%s push: the push failed; waiting for '%s' (pid %d) to exit\n",
			c->prog, R.argv[0], (int)R.pid);
	reap(&R, true);
	unmask(&R);
	char how[256];
	describe(&R, how, sizeof(how));
	bool cmd_ok = R.reaped && WIFEXITED(R.wstatus) && WEXITSTATUS(R.wstatus) == 0;
	if (!r && !cmd_ok) {
		/* The engine commits only after writer_status said 1. */
		snprintf(err, errlen, "%s, yet the push committed", how);
		return -EPROTO;
	}
	if (r && R.failed) {
		snprintf(err, errlen, "%s; no snapshot written", how);
		return -ECANCELED;
	}
	if (r && R.pid) {
		/* The push failed on its own: say how the command ended too. */
		size_t len = strlen(err);
		snprintf(err + len, errlen - len, " (%s)", how);
	}
	return r;
}
