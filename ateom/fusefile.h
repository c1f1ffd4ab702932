/* fusefile — restore while pulling: a snapshot's files served through FUSE
 * as the engine verifies them (docs/ATEOM.md, "Restore while pulling").
 *
 * `runsc restore` opens checkpoint.img read-only, fstat()s it (a size of 0
 * is refused) and reads it front to back. So instead of pulling the image
 * whole and only then starting runsc, ateom mounts a read-only FUSE file
 * system on the directory runsc is given. Its files have their final size
 * and mode 0444 from the start; ss_cat writes each in file order into a
 * backing file only the server holds, in memory or unlinked in
 * spool_dir (fusepull_opts.memory_max); it verifies every chunk before
 * its bytes are written and reports through ss_cat_opts.on_written how
 * far the file is final. A read blocks until the bytes it asks for
 * are final. A read at or past the end returns 0 at once; once the pull
 * failed, a read of bytes that never arrived gets EIO, so runsc fails
 * instead of waiting forever. Reads are served with direct I/O (no page
 * cache of the FUSE file) from a mapping of the backing file, by several
 * threads so that a stat never waits behind a read.
 *
 * The mount needs allow_other: runsc hands the descriptor to the sandbox,
 * which runs as another user in its own user namespace.
 *
 * If ateom dies while a file system is mounted, a small guard process it
 * started with the mount unmounts it (lazily), so a killed restore leaves
 * no mount behind.
 *
 * A fusepull is used from one thread (the caller's); its own threads are
 * the pull and the FUSE workers.
 */
#ifndef ATEOM_FUSEFILE_H
#define ATEOM_FUSEFILE_H

#include "snapstream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct reaper;
struct fusepull;

struct fusepull_opts {
	const char *snapshot;
	const char *store;              /* NULL: the default beside the snapshot */
	const struct ss_config *cfg;    /* copied; what it points to must outlive the pull */
	const char *mountpoint;         /* an empty directory, created by the caller */
	const char *spool_dir;          /* where unlinked backing files live */
	/* The largest snapshot (bytes of all its files) kept in memory
	 * (memfd) rather than in unlinked files in spool_dir;
	 * FUSEPULL_MEMORY_AUTO: a quarter of the memory left (MemAvailable,
	 * or the process's memory cgroup's limit less its usage). */
	uint64_t memory_max;
	struct reaper *reaper;          /* main's, or NULL */
	/* Who closes the backing files at fusepull_free (the last
	 * descriptors of unlinked files: closing one frees its pages, ~15 ms
	 * for 269 MB, which the caller may do off its reply's path). NULL:
	 * closed there. */
	void (*release_fd)(void *arg, int fd);
	void *release_arg;
};

/* Read the snapshot's manifest, mount the file system and start the pull.
 * On success *out is the running pull and *info the snapshot's
 * description with its file list (the caller's, ss_info_free). Returns 0;
 * -ENOTSUP when this snapshot or this machine cannot be served this way
 * (a snapshot of one file or of subdirectories, more than
 * FUSEPULL_MAX_FILES files, no usable /dev/fuse): the caller pulls it
 * whole instead, and err says why; or the -errno of reading the manifest
 * (-ENOENT: no snapshot), with err set. Nothing is left mounted on
 * failure. */
#define FUSEPULL_MAX_FILES 64
#define FUSEPULL_MEMORY_AUTO UINT64_MAX
int fusepull_start(const struct fusepull_opts *o, struct fusepull **out,
		   struct ss_snapshot_info **info, char *err, size_t errlen);

/* Wait until the pull ended. Returns 0 when every file arrived and
 * verified, else the pull's -errno (-EBADMSG: a chunk or a digest did not
 * verify, err names it). *st gets the pull's statistics; *pull_ms how
 * long the pull ran from fusepull_start. The file system stays mounted
 * and served until fusepull_free, which a caller may leave for after its
 * reply: unmounting waits ~15 ms for the kernel. */
int fusepull_finish(struct fusepull *p, struct ss_stats *st, double *pull_ms, char *err,
		    size_t errlen);

/* Whether the backing files are in memory (fusepull_opts.memory_max). */
bool fusepull_in_memory(const struct fusepull *p);

/* Stop a pull that is still running (reads of what did not arrive get
 * EIO), unmount (lazily: the sandbox may still hold a file open), stop
 * the threads and free. NULL is a no-op. */
void fusepull_free(struct fusepull *p);

#endif
