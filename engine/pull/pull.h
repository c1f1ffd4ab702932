/* pull — the read path's private header (docs/DESIGN.md, "Module map"):
 * ss_pull (pull.c, files.c; filepull.h) writes a snapshot's files, and
 * checks them without writing for ss_verify (ss_pull_verify); ss_cat and
 * ss_verify of older formats (verify.c) read them through oread
 * (oread.c), declared here. Builds on core, whose range reader (core/range.c) all of
 * them read packs with.
 *
 * oread — read a snapshot's files in file order, verified, without
 * writing them anywhere (verify) or to a stream (cat).
 *
 * Pull reads chunks in store order and writes them at their offsets; a
 * pipe or a digest needs bytes in file order instead. oread walks each
 * file's extents in order and groups them into units of up to 4 MiB: one
 * ranged GET of one pack (neighbouring frames merged, small gaps read
 * through), decompressed and checked by a worker, then handed to the sink
 * on the loop thread strictly in order, with each file's digest computed
 * over exactly the bytes the sink sees. Several units are in flight, so
 * GETs and decompression overlap; memory is the unit buffers, fixed by
 * the thread count.
 *
 * Loop thread only.
 */
#ifndef SS_ENGINE_PULL_H
#define SS_ENGINE_PULL_H

#include "core.h"

struct ss_oread;

/* One unit: extents [e0, e1) of file `file`, covering [off, off + len) of
 * it. ptr[i] points at the verified bytes of extent e0 + i, or is NULL for
 * a zero run. The bytes stay valid until the unit is released. */
struct ss_ounit_view {
	uint32_t file;
	size_t e0, e1;
	uint64_t off, len;
	const uint8_t *const *ptr;
	void *unit;                 /* for ss_oread_release */
};

/* Called in file order for every unit (an empty file gets one unit with no
 * extents). Return 0 when done with the unit, 1 to keep it until
 * ss_oread_release, or -errno to stop (after ss_oread_fail). */
typedef int (*ss_oread_sink_fn)(void *arg, const struct ss_ounit_view *u);

struct ss_oread_opts {
	const char *snapshot;       /* for messages */
	const struct ss_manifest *m;
	const struct ss_cfg *cfg;
	const struct ss_idkey *ids;  /* the manifest's chunk ids */
	struct ss_loop *loop;
	struct ss_backend *store;
	uint32_t file_first, file_end;   /* files [file_first, file_end) */
	ss_oread_sink_fn sink;
	void *sink_arg;
	struct ss_stats *st;        /* transferred_bytes, requests, chunks */
	struct ss_progress *prog;   /* bytes_done, zero_bytes, stored_bytes */
	struct ss_ticker *ticker;
};

/* verify's way when it can (pull.c): the snapshot read as a pull reads it,
 * packs in store order, many ranges at once, every chunk checked and
 * summed into its file's digest, and nothing written. Returns 0, -errno
 * with errbuf set, or SS_PULL_ORDERED when the snapshot's digests need its
 * files in order (formats before 5), or when more of its files' 1 KiB
 * leaves lie split between ranges at once than memory is allowed for:
 * verify then reads it through oread. */
#define SS_PULL_ORDERED 1
int ss_pull_verify(const struct ss_verify_opts *opts, const struct ss_config_in *config,
		   struct ss_stats *st, char *errbuf, size_t errlen);

/* Read the files to the end or the first error. Returns 0 or -errno with
 * err set (-EBADMSG for integrity, naming snapshot, file and offset). */
int ss_oread_run(const struct ss_oread_opts *o, struct ss_err *err);

/* Give back a unit the sink kept (loop thread). */
void ss_oread_release(struct ss_oread *R, void *unit);
/* Stop reading with an error (the first one wins). */
void ss_oread_fail(struct ss_oread *R, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
bool ss_oread_failed(const struct ss_oread *R);
/* The reader a sink's units come from (for release). */
struct ss_oread *ss_oread_of(void *unit);

#endif
