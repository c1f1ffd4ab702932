/* runsc.h — running gVisor's runsc as a child process.
 *
 * ateom drives runsc through its command line, as containerd's shim and
 * Kubernetes' runtime class do: every operation is one `runsc [global
 * args] <command> ...` invocation whose exit status is the result and whose
 * stderr carries the reason for a failure.
 *
 * Functions block until the child exits and may be called from any thread;
 * they hold no state between calls.
 */
#ifndef ATEOM_RUNSC_H
#define ATEOM_RUNSC_H

#include <stddef.h>

struct reaper;

/* The runsc binary and the global flags that go before the command
 * (e.g. --root=..., --platform=ptrace, --network=none). Borrowed, not
 * copied: the strings must outlive every call that uses them. */
struct runsc {
	const char *path;           /* looked up in PATH when it has no '/' */
	const char *const *args;
	size_t nargs;
	struct reaper *reaper;      /* keeps its hands off our children; may be NULL */
};

/* What one invocation left behind, for messages a person can act on. */
struct runsc_out {
	int status;                 /* exit code, or 128 + signal number */
	char tail[2048];            /* last bytes of its stdout+stderr, NUL-terminated */
};

/* Run `path args... cmd...` (cmd is NULL-terminated) with stdin from
 * /dev/null and stdout+stderr appended to log_fd, a file the caller owns.
 * The log is a file rather than a pipe on purpose: `runsc run --detach`
 * hands its stdio to the sandbox, which outlives the command, so reading a
 * pipe to EOF would wait for the workload to exit.
 * The child gets a default signal mask and dispositions (the server blocks
 * SIGTERM/SIGINT for its signal thread; runsc and the sandbox must not
 * inherit that) and no descriptors above 2.
 * Returns 0 when runsc exited 0, -EIO when it ran and failed (out->status
 * and out->tail say how), or -errno when it could not be started. out may
 * be NULL. */
int runsc_call(const struct runsc *rs, const char *const *cmd, int log_fd,
	       struct runsc_out *out);

/* `runsc --version` (global args are not passed: some runsc builds refuse
 * flags they do not know before --version). Writes the first line's
 * version string ("0.0~20221219.0" from "runsc version 0.0~20221219.0")
 * into buf. Returns 0, -EIO with out filled when runsc failed, or -errno. */
int runsc_version(const char *path, struct reaper *reaper, char *buf, size_t len,
		  struct runsc_out *out);

/* The status runsc reports for container id ("running", "stopped",
 * "created", ...) into buf; "" when runsc does not know the container.
 * Returns 0 or -errno. */
int runsc_state(const struct runsc *rs, const char *id, char *buf, size_t len);

#endif
