/* trash — removing checkpoint images off the reply's path.
 *
 * A checkpoint or restore image is hundreds of MB, usually on tmpfs, and
 * unlinking it (or closing the last descriptor of an unlinked one) frees
 * every page: tens of milliseconds the caller of
 * CheckpointWorkload or RestoreWorkload need not wait for. trash_put
 * renames the directory into <work-dir>/.trash-<pid>-<n> (one rename, so
 * it is gone from where it was at once) and a thread removes it. Entries
 * that a server killed before it could remove them are removed by the next
 * server that starts on the same work directory.
 */
#ifndef ATEOM_TRASH_H
#define ATEOM_TRASH_H

struct trash;

/* Start the remover for work_dir, queueing any .trash-* left there.
 * Returns 0 or -errno. */
int trash_new(const char *work_dir, struct trash **out);

/* Remove path (under work_dir) in the background; inline if it cannot be
 * renamed or queued. */
void trash_put(struct trash *t, const char *path);

/* Close fd in the background: the last descriptor of an unlinked file
 * (a restore's backing file), whose pages closing it frees. Inline if it
 * cannot be queued; t may be NULL. */
void trash_close(struct trash *t, int fd);

/* Remove everything queued, then stop. NULL is a no-op. */
void trash_free(struct trash *t);

/* Remove a directory tree (or a file) now; errors are ignored. */
void rm_tree(const char *path);

#endif
