/* ss-rusage — run one command and report its wall time, CPU time and peak
 * RSS, measured from a process that is itself small.
 *
 *   ss-rusage OUT -- CMD [ARG...]
 *
 * writes one line to OUT: "wall_ns utime_us stime_us maxrss_kib status",
 * where status is the raw wait status. Its own exit status is 0 when the
 * command ran (whatever the command returned), 127 when it could not.
 *
 * Why not measure from the harness itself: Linux charges a process's peak
 * RSS with the memory of the process it was forked from, because exec
 * records the old address space's high-water mark in the signal struct
 * (and posix_spawn/vfork children share the parent's mm until exec). A
 * child of the Python harness therefore reported ~40 MiB however little it
 * used: `zstd -d` and a 64 MiB pull both showed the harness's size, not
 * theirs. Forked from this process, a command starts from ~1 MiB.
 *
 * Only libc, like ss-genimage: the harness compiles it when it is not built.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		fprintf(stderr, "usage: ss-rusage OUT -- CMD [ARG...]\n");
		return 2;
	}
	FILE *out = fopen(argv[1], "w");
	if (!out) {
		fprintf(stderr, "ss-rusage: %s: %s\n", argv[1], strerror(errno));
		return 127;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "ss-rusage: fork: %s\n", strerror(errno));
		return 127;
	}
	if (pid == 0) {
		execvp(argv[3], argv + 3);
		fprintf(stderr, "ss-rusage: %s: %s\n", argv[3], strerror(errno));
		_exit(127);
	}
	int status = 0;
	struct rusage ru;
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "ss-rusage: wait4: %s\n", strerror(errno));
			return 127;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long wall = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	fprintf(out, "%lld %lld %lld %ld %d\n", wall,
		(long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec,
		(long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec, ru.ru_maxrss, status);
	if (fclose(out) != 0) {
		fprintf(stderr, "ss-rusage: %s: %s\n", argv[1], strerror(errno));
		return 127;
	}
	return 0;
}
