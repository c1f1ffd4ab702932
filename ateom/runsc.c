/* runsc.c — spawn runsc, wait for it, keep the tail of what it said. */
#include "runsc.h"
#include "reaper.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define RUNSC_MAX_ARGV 96

/* Keep the last bytes the child appended to fd after offset `from`. */
static void read_tail(int fd, off_t from, struct runsc_out *out)
{
	struct stat st;
	out->tail[0] = '\0';
	if (fstat(fd, &st) < 0 || st.st_size <= from)
		return;
	off_t n = st.st_size - from;
	off_t cap = (off_t)sizeof(out->tail) - 1;
	off_t start = n > cap ? st.st_size - cap : from;
	ssize_t got = pread(fd, out->tail, (size_t)(st.st_size - start), start);
	if (got < 0)
		got = 0;
	out->tail[got] = '\0';
	/* Trailing newlines only make the gRPC message harder to read. */
	while (got > 0 && (out->tail[got - 1] == '\n' || out->tail[got - 1] == '\r'))
		out->tail[--got] = '\0';
}

static int spawn_wait(const char *const *argv, struct reaper *reaper, int log_fd,
		      struct runsc_out *out)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	int r;

	if (out) {
		out->status = -1;
		out->tail[0] = '\0';
	}
	off_t from = lseek(log_fd, 0, SEEK_END);
	if (from < 0)
		from = 0;

	if ((r = posix_spawn_file_actions_init(&fa)) != 0)
		return -r;
	if ((r = posix_spawnattr_init(&at)) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return -r;
	}
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, log_fd, 1);
	posix_spawn_file_actions_adddup2(&fa, log_fd, 2);
	/* The gRPC listener and client sockets must not leak into a sandbox
	 * that outlives us (it would keep the port bound). */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &all);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

	pid_t pid = 0;
	reaper_spawn_begin(reaper);
	r = posix_spawnp(&pid, argv[0], &fa, &at, (char *const *)argv, environ);
	reaper_spawn_end(reaper, r == 0 ? pid : 0);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (r != 0) {
		if (out)
			snprintf(out->tail, sizeof(out->tail), "cannot run %s: %s", argv[0],
				 strerror(r));
		return -r;
	}

	int ws;
	while (waitpid(pid, &ws, 0) < 0) {
		if (errno != EINTR) {
			r = -errno;
			reaper_waited(reaper, pid);
			return r;
		}
	}
	reaper_waited(reaper, pid);
	int status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
	if (out) {
		out->status = status;
		read_tail(log_fd, from, out);
	}
	return status == 0 ? 0 : -EIO;
}

int runsc_call(const struct runsc *rs, const char *const *cmd, int log_fd,
	       struct runsc_out *out)
{
	const char *argv[RUNSC_MAX_ARGV];
	size_t n = 0;

	argv[n++] = rs->path;
	for (size_t i = 0; i < rs->nargs; i++) {
		if (n + 1 >= RUNSC_MAX_ARGV)
			return -E2BIG;
		argv[n++] = rs->args[i];
	}
	for (size_t i = 0; cmd[i]; i++) {
		if (n + 1 >= RUNSC_MAX_ARGV)
			return -E2BIG;
		argv[n++] = cmd[i];
	}
	argv[n] = NULL;
	return spawn_wait(argv, rs->reaper, log_fd, out);
}

/* Output we parse goes to an anonymous file: no pipe to drain while
 * waiting, no temporary name to clean up. */
static int capture(const char *const *argv, struct reaper *reaper, struct runsc_out *out)
{
	int fd = memfd_create("runsc-out", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = spawn_wait(argv, reaper, fd, out);
	close(fd);
	return r;
}

int runsc_version(const char *path, struct reaper *reaper, char *buf, size_t len,
		  struct runsc_out *out)
{
	struct runsc_out local;
	const char *argv[] = {path, "--version", NULL};
	if (!out)
		out = &local;
	int r = capture(argv, reaper, out);
	if (r < 0)
		return r;
	/* "runsc version 0.0~20221219.0\nspec: 1.0.2-dev" */
	const char *p = strstr(out->tail, "version ");
	p = p ? p + strlen("version ") : out->tail;
	size_t n = strcspn(p, "\r\n");
	if (n == 0 || n >= len)
		return -EIO;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return 0;
}

int runsc_state(const struct runsc *rs, const char *id, char *buf, size_t len)
{
	const char *cmd[] = {"state", id, NULL};
	struct runsc_out out;
	int fd = memfd_create("runsc-state", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = runsc_call(rs, cmd, fd, &out);
	close(fd);
	buf[0] = '\0';
	if (r == -EIO)
		return 0; /* runsc does not know the container */
	if (r < 0)
		return r;
	/* The state is JSON; the one field we need is "status": "running". */
	const char *p = strstr(out.tail, "\"status\"");
	if (!p)
		return 0;
	p = strchr(p + 8, '"');
	if (!p)
		return 0;
	p++;
	size_t n = strcspn(p, "\"");
	if (n >= len)
		n = len - 1;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return 0;
}
