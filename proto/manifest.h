/* manifest — the snapshot manifest (proto/snapshot.proto) in memory, and
 * its encoder and hostile-input-safe decoder.
 *
 * Thread-safety: none needed; a manifest is owned by one thread at a time.
 */
#ifndef SS_MANIFEST_H
#define SS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* 2: whole-file digests fold zero pages (engine/core/fdigest.h); format 1
 * manifests, which hash every byte, are still read and verified.
 * 3: files may be stored transformed (ss_mfile.transform), which a format
 * 2 reader would ignore and restore wrongly; digests as in format 2.
 * 4: not a plain manifest: the sealed envelope of keyed stores
 * (engine/core/crypt.h), whose inner manifest has a format of its own.
 * 5: the whole-file digest is a sum of leaves, which a pull makes from
 * the pieces it writes, in any order, without reading the file back
 * (fdigest.h); otherwise as format 3. What a push writes: readers of 3
 * or older refuse it by its major instead of finding every file corrupt.
 * Formats 1 to 3 are still read and verified as they define digests. */
#define SS_MANIFEST_MAJOR 5
#define SS_MANIFEST_SEALED_MAJOR 4
#define SS_MANIFEST_MINOR 0

/* Hard limits a decoder enforces before allocating anything. */
#define SS_MANIFEST_MAX_SIZE (1u << 30)         /* encoded envelope */
#define SS_MANIFEST_MAX_BODY (2u << 30)         /* decoded body */
#define SS_MANIFEST_MAX_FILES (1u << 20)
#define SS_MANIFEST_MAX_CHUNKS (1u << 28)
#define SS_MANIFEST_MAX_NAME 4096
/* Directories a file name may pass through: at most this many '/' in a
 * name. Push refuses a source tree deeper than this, and a decoder refuses
 * a manifest that nests deeper, so nothing that restores or removes a tree
 * meets more levels than push could have written. */
#define SS_MANIFEST_MAX_DEPTH 64
#define SS_MANIFEST_MAX_LABELS 1024

enum ss_codec {
	SS_CODEC_RAW = 0,
	SS_CODEC_ZSTD = 1,
};

struct ss_chunk_ref {
	uint8_t id[16];
	uint32_t pack;        /* index into ss_manifest.pack_ids */
	uint32_t stored_len;
	uint32_t raw_len;
	uint8_t codec;        /* enum ss_codec */
	uint32_t frame_off;   /* offset of the chunk in its decompressed frame */
	uint64_t offset;      /* of the frame within the pack */
};

struct ss_mextent {
	uint64_t len;
	uint32_t chunk;       /* 0 = zero run; else 1 + index into chunks */
};

/* How a file's stored bytes relate to the file that was pushed. */
enum ss_transform {
	SS_TRANSFORM_NONE = 0,
	SS_TRANSFORM_GVISOR = 1,    /* gVisor state file, inflated (gvstate.h) */
};

struct ss_mfile {
	char *name;
	uint64_t size;        /* of the stored bytes (the inflated form) */
	uint32_t mode;
	int64_t mtime_ns;
	uint8_t digest[16];
	struct ss_mextent *ext;
	size_t next;
	uint32_t transform;   /* enum ss_transform; format 3 */
	uint64_t source_size; /* transformed: the pushed file's size */
};

struct ss_label {
	char *key;
	char *value;
};

struct ss_mstats {
	uint64_t logical_bytes, zero_bytes, chunk_bytes, unique_bytes;
	uint64_t new_raw_bytes, new_stored_bytes, stored_bytes;
};

struct ss_manifest {
	/* Filled by decode. The encoder writes them when set (0: this
	 * build's format), so a decoded manifest encodes as the format it
	 * was, whose digests it carries. */
	uint32_t format_major, format_minor;
	char *tool_version;
	int64_t created_unix_ns;
	uint32_t chunk_min, chunk_avg, chunk_max, chunk_seg, chunk_algorithm;
	uint32_t frame_max;   /* largest decompressed frame; 0: one chunk each */
	bool keyed_ids;
	uint8_t key_check[16];   /* keyed_ids: names the key (never the key) */
	bool root_is_dir;
	struct ss_label *labels;
	size_t nlabels;
	char **parents;
	size_t nparents;
	char *store_uri;
	uint8_t (*pack_ids)[16];
	size_t npacks;
	struct ss_chunk_ref *chunks;
	size_t nchunks;
	struct ss_mfile *files;
	size_t nfiles;
	struct ss_mstats stats;
	/* Not encoded: the manifest came out of a sealed envelope (manifest
	 * format 4, engine/core/crypt.h), so its frames carry a tag and its
	 * raw chunks may share sealed frames (proto/pack.h). */
	bool sealed;
	/* A sealed manifest read without its key (ss_manifest_load's
	 * SS_MLOAD_HEADER): only pack_ids, npacks and sealed are set. */
	bool unopened;
};

/* The tag a sealed frame ends with (crypt.h's SS_SEAL_TAG). */
#define SS_SEAL_TAG_BYTES 16u

/* Serialize m as an Envelope (body zstd-compressed, checksummed), in
 * format m->format_major (0: SS_MANIFEST_MAJOR; newer: -EINVAL). On
 * success *out is malloc'd and owned by the caller. Returns 0 or -errno. */
int ss_manifest_encode(const struct ss_manifest *m, uint8_t **out, size_t *outlen);

/* Parse an Envelope. Refuses, with a message in err:
 *  - a newer format_major (-EPROTONOSUPPORT, "made by a newer snapstream"),
 *  - a bad checksum, truncation or garbage (-EBADMSG),
 *  - a body larger than declared or than the limits (-EBADMSG / -EFBIG),
 *  - anything ss_manifest_validate refuses.
 * On success *out is owned by the caller (ss_manifest_free). */
int ss_manifest_decode(const uint8_t *buf, size_t len, struct ss_manifest **out,
		       struct ss_err *err);

/* ss_manifest_decode of the manifest inside a sealed envelope (sealed
 * true: validated with a sealed store's frame rules, m->sealed set). */
int ss_manifest_decode_ex(const uint8_t *buf, size_t len, bool sealed, struct ss_manifest **out,
			  struct ss_err *err);

/* Check internal consistency: file names safe (ss_manifest_name_ok),
 * unique; a one-file manifest (!root_is_dir) lists exactly one file whose
 * name has no '/', as push writes it; extents sum to the file size; chunk indexes and pack indexes in
 * range; a chunk extent's length equals its chunk's raw length; codecs
 * known; stored_len > 0 and bounded by max_size-derived limits; raw_len
 * <= chunk_max. Returns 0 or -EBADMSG with a message. */
int ss_manifest_validate(const struct ss_manifest *m, struct ss_err *err);

/* A file name a manifest may carry: non-empty, relative, components
 * separated by single '/', none empty, "." or "..", no control characters
 * (bytes < 0x20 or 0x7f), at most SS_MANIFEST_MAX_NAME bytes and
 * SS_MANIFEST_MAX_DEPTH '/'. (A decoder also refuses a name whose encoding
 * holds a NUL byte, which a C string cannot carry.) */
bool ss_manifest_name_ok(const char *name);

/* Free everything; NULL is a no-op. Works on half-built manifests. */
void ss_manifest_free(struct ss_manifest *m);

#endif
