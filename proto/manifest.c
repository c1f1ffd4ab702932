/* manifest — encode/decode the snapshot manifest (see manifest.h).
 *
 * Encoding streams the protobuf-c serialization of the Snapshot straight
 * into a zstd stream, so the uncompressed body never exists in memory; the
 * compressed body is written in place after room for the Envelope header,
 * which is then slid down: the whole encode holds the columnar chunk table
 * (which protobuf-c needs) and one output buffer.
 *
 * Decoding treats every byte as hostile: sizes are bounded before anything
 * is allocated, protobuf-c runs under an allocator with a byte budget
 * proportional to the (bounded) input so that no encoding can make it
 * allocate without limit, every array length is cross-checked, and the
 * result goes through ss_manifest_validate.
 */
#include "manifest.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>
#include "xxh.h"
#include <zstd.h>

#include "pack.h"
#include "snapshot.pb-c.h"

/* Not in the header: limits that only the decoder and validator need. */
#define MAX_PARENTS 1024u
#define MAX_CHUNK_SIZE (64u << 20)   /* sanity bound on chunk_max */
#define ZSTD_LEVEL 3
#define STAGE_SIZE (64u << 10)       /* batch protobuf-c's small appends */
/* Room reserved in front of the compressed body for the Envelope fields
 * 1..4 (at most 6+6+6+11 bytes) and the body's tag and length (1+10). */
#define ENV_HDR_MAX 48u
#define ENV_TAG_BODY 0x2au           /* field 5, length-delimited */
#define ENV_TAG_CHECKSUM 0x32u       /* field 6, length-delimited */

typedef Snapstream__V1__Envelope Envelope;
typedef Snapstream__V1__Snapshot Snapshot;
typedef Snapstream__V1__ChunkParams ChunkParams;
typedef Snapstream__V1__Label Label;
typedef Snapstream__V1__File File;
typedef Snapstream__V1__Stats Stats;

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* A name quoted for an error message: control characters, quotes and
 * backslashes escaped, long names cut, so a hostile name cannot inject
 * terminal escapes or hide what it is. */
static const char *quote(const char *s, char *buf, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t o = 0;
	if (!s)
		s = "";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (o + 8 >= n) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = digits[c >> 4];
			buf[o++] = digits[c & 15];
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o] = '\0';
	return buf;
}

static bool has_control(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f)
			return true;
	}
	return false;
}

#define XSTR_(x) #x
#define XSTR(x) XSTR_(x)

/* Why a file name is refused, or NULL when it is fine. */
static const char *name_problem(const char *name)
{
	if (!name || !*name)
		return "is empty";
	size_t len = strnlen(name, SS_MANIFEST_MAX_NAME + 1);
	if (len > SS_MANIFEST_MAX_NAME)
		return "is longer than 4096 bytes";
	if (name[0] == '/')
		return "is absolute (starts with '/')";
	if (name[len - 1] == '/')
		return "ends with '/'";
	if (has_control(name))
		return "contains a control character";
	const char *p = name;
	unsigned depth = 0;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t clen = slash ? (size_t)(slash - p) : strlen(p);
		if (clen == 0)
			return "has an empty component ('//')";
		if ((clen == 1 && p[0] == '.') || (clen == 2 && p[0] == '.' && p[1] == '.'))
			return "has a '.' or '..' component";
		if (!slash)
			break;
		/* Push refuses deeper trees; deeper names only serve to make
		 * whatever walks the restored tree recurse without end. */
		if (++depth > SS_MANIFEST_MAX_DEPTH)
			return "is nested more than " XSTR(SS_MANIFEST_MAX_DEPTH) " directories deep";
		p = slash + 1;
	}
	return NULL;
}

bool ss_manifest_name_ok(const char *name)
{
	return name_problem(name) == NULL;
}

/* Order names as a tree walk would: a name sorts before everything under
 * it, so "a" is immediately followed by "a/..." entries when there are
 * any ('\0' < '/' < every other byte a valid name may hold). */
static int path_cmp(const void *pa, const void *pb)
{
	const unsigned char *a = *(const unsigned char *const *)pa;
	const unsigned char *b = *(const unsigned char *const *)pb;
	for (;; a++, b++) {
		if (*a == *b) {
			if (!*a)
				return 0;
			continue;
		}
		unsigned ma = *a == '\0' ? 0u : *a == '/' ? 1u : *a + 1u;
		unsigned mb = *b == '\0' ? 0u : *b == '/' ? 1u : *b + 1u;
		return ma < mb ? -1 : 1;
	}
}

static bool is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/* A string field a user may see printed: bounded, no control characters. */
static int check_text(const char *s, const char *what, struct ss_err *err)
{
	char q[160];
	if (!s)
		return 0;
	if (strnlen(s, SS_MANIFEST_MAX_NAME + 1) > SS_MANIFEST_MAX_NAME)
		return ss_err_set(err, -EBADMSG, "manifest %s is longer than %u bytes (corrupt manifest)",
				  what, SS_MANIFEST_MAX_NAME);
	if (has_control(s))
		return ss_err_set(err, -EBADMSG,
				  "manifest %s \"%s\" contains a control character (corrupt manifest)",
				  what, quote(s, q, sizeof(q)));
	return 0;
}

/* ------------------------------------------------------------------ */
/* Validation                                                          */

static int validate_chunks(const struct ss_manifest *m, struct ss_err *err)
{
	if (m->nchunks == 0)
		return 0;
	if (!m->chunks)
		return ss_err_set(err, -EBADMSG, "manifest lists %zu chunks but has no chunk table",
				  m->nchunks);
	if (!(m->chunk_min < m->chunk_avg && m->chunk_avg < m->chunk_max &&
	      m->chunk_max <= m->chunk_seg && is_pow2(m->chunk_avg) &&
	      m->chunk_max <= MAX_CHUNK_SIZE))
		return ss_err_set(err, -EBADMSG,
				  "manifest chunking parameters are inconsistent (min %" PRIu32
				  ", avg %" PRIu32 ", max %" PRIu32 ", segment %" PRIu32
				  "; need min < avg < max <= segment, avg a power of two, max <= 64 MiB)",
				  m->chunk_min, m->chunk_avg, m->chunk_max, m->chunk_seg);
	if (m->frame_max && m->frame_max < m->chunk_max)
		return ss_err_set(err, -EBADMSG,
				  "manifest frame maximum %" PRIu32 " is below the chunk maximum %" PRIu32
				  " (corrupt manifest)", m->frame_max, m->chunk_max);
	if (m->frame_max > SS_FRAME_MAX_LIMIT)
		return ss_err_set(err, -EBADMSG,
				  "manifest frame maximum %" PRIu32 " is over the limit of %u bytes"
				  " (corrupt manifest)", m->frame_max, SS_FRAME_MAX_LIMIT);
	/* Worst-case zstd output for a whole frame (chunks inside a larger
	 * frame share its stored length). */
	uint64_t frame_bound = (uint64_t)m->frame_max + m->frame_max / 128 + 1024;
	for (size_t i = 0; i < m->nchunks; i++) {
		const struct ss_chunk_ref *c = &m->chunks[i];
		if (c->codec != SS_CODEC_RAW && c->codec != SS_CODEC_ZSTD)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu uses unknown codec %u (corrupt manifest, or written by a newer snapstream)",
					  i, (unsigned)c->codec);
		if (c->raw_len == 0 || c->raw_len > m->chunk_max)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu has raw length %" PRIu32
					  ", outside 1..%" PRIu32 " (the chunk maximum; corrupt manifest)",
					  i, c->raw_len, m->chunk_max);
		/* A sealed store's frames carry a tag, and its raw chunks
		 * share sealed frames as zstd ones do. */
		if (m->sealed && (c->stored_len <= SS_SEAL_TAG_BYTES ||
				  (c->codec == SS_CODEC_RAW &&
				   (uint64_t)c->frame_off + c->raw_len >
					   c->stored_len - SS_SEAL_TAG_BYTES)))
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu [%" PRIu32 ", +%" PRIu32
					  ") does not fit its sealed frame of %" PRIu32
					  " bytes (corrupt manifest)",
					  i, c->frame_off, c->raw_len, c->stored_len);
		if (!m->sealed && c->codec == SS_CODEC_RAW && c->frame_off != 0)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu is stored uncompressed but has frame offset %" PRIu32
					  ", not 0 (only zstd frames hold several chunks; corrupt manifest)",
					  i, c->frame_off);
		bool shared = c->codec == SS_CODEC_ZSTD || m->sealed;   /* frames of several */
		if (shared && m->frame_max == 0 && c->frame_off != 0)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu starts at offset %" PRIu32
					  " of its frame but the manifest has no frames"
					  " (frame maximum 0; corrupt manifest)", i, c->frame_off);
		if (shared && m->frame_max &&
		    (uint64_t)c->frame_off + c->raw_len > m->frame_max)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu occupies bytes [%" PRIu32 ", %" PRIu64
					  ") of its frame, past the frame maximum %" PRIu32
					  " (corrupt manifest)", i, c->frame_off,
					  (uint64_t)c->frame_off + c->raw_len, m->frame_max);
		bool framed = (c->codec == SS_CODEC_ZSTD || m->sealed) && m->frame_max;
		uint64_t bound = framed ? frame_bound
					: (uint64_t)c->raw_len + c->raw_len / 128 + 1024;
		if (m->sealed)
			bound += SS_SEAL_TAG_BYTES;
		if (c->stored_len == 0 || c->stored_len > bound)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu has stored length %" PRIu32
					  " for %" PRIu32 " raw bytes%s (corrupt manifest)",
					  i, c->stored_len, c->raw_len,
					  framed ? " in a zstd frame of at most the frame maximum" : "");
		if (!m->sealed && c->codec == SS_CODEC_RAW && c->stored_len != c->raw_len)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu is stored uncompressed but its stored length %" PRIu32
					  " differs from its raw length %" PRIu32 " (corrupt manifest)",
					  i, c->stored_len, c->raw_len);
		if (c->pack >= m->npacks)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu refers to pack %" PRIu32
					  " but the manifest lists only %zu packs (corrupt manifest)",
					  i, c->pack, m->npacks);
		if (c->offset > SS_PACK_MAX_SIZE || c->stored_len > SS_PACK_MAX_SIZE - c->offset)
			return ss_err_set(err, -EBADMSG,
					  "manifest chunk %zu lies at offset %" PRIu64
					  " beyond the largest possible pack (corrupt manifest)",
					  i, c->offset);
	}
	return 0;
}

static int validate_file(const struct ss_manifest *m, const struct ss_mfile *f,
			 struct ss_err *err)
{
	char q[160];
	const char *why = name_problem(f->name);
	if (why)
		return ss_err_set(err, -EBADMSG,
				  "manifest file name \"%s\" %s; refusing to restore it (corrupt or malicious manifest)",
				  quote(f->name, q, sizeof(q)), why);
	if (f->mode & ~07777u)
		return ss_err_set(err, -EBADMSG,
				  "manifest file \"%s\": mode 0%" PRIo32
				  " has bits beyond the permission bits 07777 (corrupt manifest)",
				  quote(f->name, q, sizeof(q)), f->mode);
	if (f->transform > SS_TRANSFORM_GVISOR)
		return ss_err_set(err, -EBADMSG,
				  "manifest file \"%s\" is stored with transform %" PRIu32
				  ", which this snapstream does not know (corrupt manifest, or "
				  "written by a newer snapstream)",
				  quote(f->name, q, sizeof(q)), f->transform);
	/* A format 2 reader ignores the field: only format 3 may carry it. */
	if (f->transform && m->format_major && m->format_major < 3)
		return ss_err_set(err, -EBADMSG,
				  "manifest file \"%s\" is transformed in a format %" PRIu32
				  " manifest (corrupt manifest)",
				  quote(f->name, q, sizeof(q)), m->format_major);
	if (f->next && !f->ext)
		return ss_err_set(err, -EBADMSG, "manifest file \"%s\" lists %zu extents but has none",
				  quote(f->name, q, sizeof(q)), f->next);
	uint64_t sum = 0;
	for (size_t j = 0; j < f->next; j++) {
		const struct ss_mextent *x = &f->ext[j];
		if (x->len == 0)
			return ss_err_set(err, -EBADMSG,
					  "manifest file \"%s\": extent %zu is empty (corrupt manifest)",
					  quote(f->name, q, sizeof(q)), j);
		if (x->chunk) {
			uint32_t ci = x->chunk - 1;
			if (ci >= m->nchunks)
				return ss_err_set(err, -EBADMSG,
						  "manifest file \"%s\": extent %zu refers to chunk %" PRIu32
						  " but the manifest has only %zu chunks (corrupt manifest)",
						  quote(f->name, q, sizeof(q)), j, ci, m->nchunks);
			if (x->len != m->chunks[ci].raw_len)
				return ss_err_set(err, -EBADMSG,
						  "manifest file \"%s\": extent %zu is %" PRIu64
						  " bytes but its chunk %" PRIu32 " holds %" PRIu32
						  " bytes (corrupt manifest)",
						  quote(f->name, q, sizeof(q)), j, x->len, ci,
						  m->chunks[ci].raw_len);
		}
		if (x->len > UINT64_MAX - sum)
			return ss_err_set(err, -EBADMSG,
					  "manifest file \"%s\": extent lengths overflow (corrupt manifest)",
					  quote(f->name, q, sizeof(q)));
		sum += x->len;
	}
	if (sum != f->size)
		return ss_err_set(err, -EBADMSG,
				  "manifest file \"%s\": extents cover %" PRIu64
				  " bytes but the file size is %" PRIu64 " (corrupt manifest)",
				  quote(f->name, q, sizeof(q)), sum, f->size);
	return 0;
}

static int validate_names_unique(const struct ss_manifest *m, struct ss_err *err)
{
	if (m->nfiles < 2)
		return 0;
	const char **names = malloc(m->nfiles * sizeof(*names));
	if (!names)
		return ss_err_set(err, -ENOMEM, "out of memory checking manifest file names");
	for (size_t i = 0; i < m->nfiles; i++)
		names[i] = m->files[i].name;
	qsort(names, m->nfiles, sizeof(*names), path_cmp);
	int r = 0;
	char q1[160], q2[160];
	for (size_t i = 1; i < m->nfiles; i++) {
		const char *a = names[i - 1], *b = names[i];
		size_t la = strlen(a);
		if (strcmp(a, b) == 0) {
			r = ss_err_set(err, -EBADMSG,
				       "manifest lists file \"%s\" twice (corrupt manifest)",
				       quote(a, q1, sizeof(q1)));
			break;
		}
		if (strncmp(a, b, la) == 0 && b[la] == '/') {
			r = ss_err_set(err, -EBADMSG,
				       "manifest lists \"%s\" as a file and also \"%s\" inside it (corrupt manifest)",
				       quote(a, q1, sizeof(q1)), quote(b, q2, sizeof(q2)));
			break;
		}
	}
	free(names);
	return r;
}

int ss_manifest_validate(const struct ss_manifest *m, struct ss_err *err)
{
	if (!m)
		return ss_err_set(err, -EINVAL, "no manifest");
	if (m->nfiles > SS_MANIFEST_MAX_FILES)
		return ss_err_set(err, -EBADMSG, "manifest has %zu files, more than the limit of %u",
				  m->nfiles, SS_MANIFEST_MAX_FILES);
	if (m->nchunks > SS_MANIFEST_MAX_CHUNKS)
		return ss_err_set(err, -EBADMSG, "manifest has %zu chunks, more than the limit of %u",
				  m->nchunks, SS_MANIFEST_MAX_CHUNKS);
	if (m->nlabels > SS_MANIFEST_MAX_LABELS)
		return ss_err_set(err, -EBADMSG, "manifest has %zu labels, more than the limit of %u",
				  m->nlabels, SS_MANIFEST_MAX_LABELS);
	if (m->nparents > MAX_PARENTS)
		return ss_err_set(err, -EBADMSG, "manifest has %zu parents, more than the limit of %u",
				  m->nparents, MAX_PARENTS);
	if (m->npacks > SS_MANIFEST_MAX_CHUNKS)
		return ss_err_set(err, -EBADMSG, "manifest lists %zu packs, more than the limit of %u",
				  m->npacks, SS_MANIFEST_MAX_CHUNKS);
	if ((m->nfiles && !m->files) || (m->nlabels && !m->labels) ||
	    (m->nparents && !m->parents) || (m->npacks && !m->pack_ids))
		return ss_err_set(err, -EBADMSG, "manifest is incomplete (a table is missing)");

	int r = check_text(m->tool_version, "tool version", err);
	if (!r)
		r = check_text(m->store_uri, "store URI", err);
	if (r)
		return r;
	for (size_t i = 0; i < m->nlabels; i++) {
		const struct ss_label *l = &m->labels[i];
		if (!l->key || !*l->key)
			return ss_err_set(err, -EBADMSG, "manifest label %zu has an empty key (corrupt manifest)", i);
		if ((r = check_text(l->key, "label key", err)))
			return r;
		if ((r = check_text(l->value, "label value", err)))
			return r;
	}
	for (size_t i = 0; i < m->nparents; i++) {
		if (!m->parents[i] || !*m->parents[i])
			return ss_err_set(err, -EBADMSG, "manifest parent %zu is empty (corrupt manifest)", i);
		if ((r = check_text(m->parents[i], "parent", err)))
			return r;
	}

	if ((r = validate_chunks(m, err)))
		return r;
	/* A one-file snapshot is restored as one file, possibly into an
	 * existing directory: a '/' in its name would reach through whatever
	 * that directory already holds (symlinks included). Push writes
	 * exactly one file, named by its base name. */
	if (!m->root_is_dir && m->nfiles != 1)
		return ss_err_set(err, -EBADMSG,
				  "manifest of a one-file snapshot lists %zu files (corrupt manifest)",
				  m->nfiles);
	if (!m->root_is_dir && m->files[0].name && strchr(m->files[0].name, '/')) {
		char q[160];
		return ss_err_set(err, -EBADMSG,
				  "manifest of a one-file snapshot names file \"%s\" with a '/'; refusing "
				  "to restore it (corrupt or malicious manifest)",
				  quote(m->files[0].name, q, sizeof(q)));
	}
	for (size_t i = 0; i < m->nfiles; i++)
		if ((r = validate_file(m, &m->files[i], err)))
			return r;
	return validate_names_unique(m, err);
}

/* ------------------------------------------------------------------ */
/* Free                                                                */

void ss_manifest_free(struct ss_manifest *m)
{
	if (!m)
		return;
	free(m->tool_version);
	free(m->store_uri);
	if (m->labels)
		for (size_t i = 0; i < m->nlabels; i++) {
			free(m->labels[i].key);
			free(m->labels[i].value);
		}
	free(m->labels);
	if (m->parents)
		for (size_t i = 0; i < m->nparents; i++)
			free(m->parents[i]);
	free(m->parents);
	free(m->pack_ids);
	free(m->chunks);
	if (m->files)
		for (size_t i = 0; i < m->nfiles; i++) {
			free(m->files[i].name);
			free(m->files[i].ext);
		}
	free(m->files);
	free(m);
}

/* ------------------------------------------------------------------ */
/* Encode                                                              */

/* A ProtobufCBuffer that feeds a zstd stream writing into a growable
 * output buffer (from `pos`, which starts after the header room). */
struct zsink {
	ProtobufCBuffer base;
	ZSTD_CCtx *cctx;
	uint8_t *stage;
	size_t stage_len;
	uint8_t *buf;       /* output, malloc'd */
	size_t cap;
	size_t pos;
	uint64_t fed;       /* bytes given to append */
	int err;
};

static int zsink_grow(struct zsink *z)
{
	size_t ncap = z->cap + z->cap / 2 + (1u << 16);
	if (ncap < z->cap)
		return -EFBIG;
	uint8_t *nb = realloc(z->buf, ncap);
	if (!nb)
		return -ENOMEM;
	z->buf = nb;
	z->cap = ncap;
	return 0;
}

/* Compress `len` bytes; with end set, finish the frame. */
static int zsink_compress(struct zsink *z, const uint8_t *p, size_t len, bool end)
{
	ZSTD_inBuffer in = { p, len, 0 };
	for (;;) {
		/* Leave room for the checksum trailer (18 bytes) at the end. */
		if (z->cap - z->pos < 64) {
			int r = zsink_grow(z);
			if (r)
				return r;
		}
		ZSTD_outBuffer out = { z->buf, z->cap - 32, z->pos };
		size_t rem = ZSTD_compressStream2(z->cctx, &out, &in,
						  end ? ZSTD_e_end : ZSTD_e_continue);
		z->pos = out.pos;
		if (ZSTD_isError(rem))
			return -EIO;
		if (end ? rem == 0 : in.pos == in.size)
			return 0;
		if (out.pos == out.size) {
			int r = zsink_grow(z);
			if (r)
				return r;
		}
	}
}

static void zsink_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
	struct zsink *z = (struct zsink *)b;
	z->fed += len;
	if (z->err || len == 0)
		return;
	if (z->stage_len + len <= STAGE_SIZE) {
		memcpy(z->stage + z->stage_len, data, len);
		z->stage_len += len;
		return;
	}
	if (z->stage_len) {
		z->err = zsink_compress(z, z->stage, z->stage_len, false);
		z->stage_len = 0;
		if (z->err)
			return;
	}
	if (len >= STAGE_SIZE) {
		z->err = zsink_compress(z, data, len, false);
	} else {
		memcpy(z->stage, data, len);
		z->stage_len = len;
	}
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* The columnar tables the Snapshot message points into. */
struct enc_tables {
	uint8_t *ids;
	uint32_t *pack, *stored, *raw, *codec, *frame_off;
	uint64_t *offset;
	Label *labels;
	Label **label_ptrs;
	ProtobufCBinaryData *pack_ids;
	File *files;
	File **file_ptrs;
	uint64_t *ext_len;
	uint32_t *ext_chunk;
};

static void enc_tables_free(struct enc_tables *t)
{
	free(t->ids);
	free(t->pack);
	free(t->stored);
	free(t->raw);
	free(t->codec);
	free(t->frame_off);
	free(t->offset);
	free(t->labels);
	free(t->label_ptrs);
	free(t->pack_ids);
	free(t->files);
	free(t->file_ptrs);
	free(t->ext_len);
	free(t->ext_chunk);
	memset(t, 0, sizeof(*t));
}

static void *alloc_n(size_t n, size_t size)
{
	return malloc(n ? n * size : 1);
}

static int build_snapshot(const struct ss_manifest *m, Snapshot *s, ChunkParams *cp,
			  Stats *st, struct enc_tables *t)
{
	size_t n = m->nchunks;

	s->tool_version = m->tool_version ? m->tool_version : (char *)"";
	s->created_unix_ns = m->created_unix_ns;
	cp->min_size = m->chunk_min;
	cp->avg_size = m->chunk_avg;
	cp->max_size = m->chunk_max;
	cp->seg_size = m->chunk_seg;
	cp->algorithm = m->chunk_algorithm;
	cp->keyed_ids = m->keyed_ids;
	if (m->keyed_ids) {
		cp->key_check.data = (uint8_t *)m->key_check;
		cp->key_check.len = sizeof(m->key_check);
	}
	cp->frame_max = m->frame_max;
	s->chunking = cp;
	st->logical_bytes = m->stats.logical_bytes;
	st->zero_bytes = m->stats.zero_bytes;
	st->chunk_bytes = m->stats.chunk_bytes;
	st->unique_bytes = m->stats.unique_bytes;
	st->new_raw_bytes = m->stats.new_raw_bytes;
	st->new_stored_bytes = m->stats.new_stored_bytes;
	st->stored_bytes = m->stats.stored_bytes;
	s->stats = st;
	s->root_is_dir = m->root_is_dir;
	s->store_uri = m->store_uri ? m->store_uri : (char *)"";
	s->n_parents = m->nparents;
	s->parents = m->parents;

	if (m->nlabels) {
		t->labels = alloc_n(m->nlabels, sizeof(*t->labels));
		t->label_ptrs = alloc_n(m->nlabels, sizeof(*t->label_ptrs));
		if (!t->labels || !t->label_ptrs)
			return -ENOMEM;
		for (size_t i = 0; i < m->nlabels; i++) {
			Label l = SNAPSTREAM__V1__LABEL__INIT;
			l.key = m->labels[i].key;
			l.value = m->labels[i].value ? m->labels[i].value : (char *)"";
			t->labels[i] = l;
			t->label_ptrs[i] = &t->labels[i];
		}
		s->n_labels = m->nlabels;
		s->labels = t->label_ptrs;
	}

	if (m->npacks) {
		t->pack_ids = alloc_n(m->npacks, sizeof(*t->pack_ids));
		if (!t->pack_ids)
			return -ENOMEM;
		for (size_t i = 0; i < m->npacks; i++) {
			t->pack_ids[i].len = 16;
			t->pack_ids[i].data = m->pack_ids[i];
		}
		s->n_pack_ids = m->npacks;
		s->pack_ids = t->pack_ids;
	}

	if (n) {
		t->ids = alloc_n(n, 16);
		t->pack = alloc_n(n, sizeof(uint32_t));
		t->stored = alloc_n(n, sizeof(uint32_t));
		t->raw = alloc_n(n, sizeof(uint32_t));
		t->codec = alloc_n(n, sizeof(uint32_t));
		t->offset = alloc_n(n, sizeof(uint64_t));
		if (!t->ids || !t->pack || !t->stored || !t->raw || !t->codec || !t->offset)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			const struct ss_chunk_ref *c = &m->chunks[i];
			memcpy(t->ids + 16 * i, c->id, 16);
			t->pack[i] = c->pack;
			t->stored[i] = c->stored_len;
			t->raw[i] = c->raw_len;
			t->codec[i] = c->codec;
			t->offset[i] = c->offset;
		}
		/* Without frames every frame offset is 0: omit the column. */
		bool frames = false;
		for (size_t i = 0; i < n && !frames; i++)
			frames = m->chunks[i].frame_off != 0;
		if (frames) {
			if (!(t->frame_off = alloc_n(n, sizeof(uint32_t))))
				return -ENOMEM;
			for (size_t i = 0; i < n; i++)
				t->frame_off[i] = m->chunks[i].frame_off;
			s->n_chunk_frame_off = n;
			s->chunk_frame_off = t->frame_off;
		}
		s->chunk_ids.len = 16 * n;
		s->chunk_ids.data = t->ids;
		s->n_chunk_pack = s->n_chunk_stored_len = s->n_chunk_raw_len = n;
		s->n_chunk_codec = s->n_chunk_offset = n;
		s->chunk_pack = t->pack;
		s->chunk_stored_len = t->stored;
		s->chunk_raw_len = t->raw;
		s->chunk_codec = t->codec;
		s->chunk_offset = t->offset;
	}

	if (m->nfiles) {
		size_t next = 0;
		for (size_t i = 0; i < m->nfiles; i++)
			next += m->files[i].next;
		t->files = alloc_n(m->nfiles, sizeof(*t->files));
		t->file_ptrs = alloc_n(m->nfiles, sizeof(*t->file_ptrs));
		t->ext_len = alloc_n(next, sizeof(*t->ext_len));
		t->ext_chunk = alloc_n(next, sizeof(*t->ext_chunk));
		if (!t->files || !t->file_ptrs || !t->ext_len || !t->ext_chunk)
			return -ENOMEM;
		size_t k = 0;
		for (size_t i = 0; i < m->nfiles; i++) {
			const struct ss_mfile *mf = &m->files[i];
			File f = SNAPSTREAM__V1__FILE__INIT;
			f.name = mf->name;
			f.size = mf->size;
			f.mode = mf->mode;
			f.mtime_ns = mf->mtime_ns;
			f.transform = mf->transform;
			f.source_size = mf->transform ? mf->source_size : 0;
			f.digest.len = 16;
			f.digest.data = (uint8_t *)mf->digest;
			f.n_extent_len = f.n_extent_chunk = mf->next;
			f.extent_len = t->ext_len + k;
			f.extent_chunk = t->ext_chunk + k;
			for (size_t j = 0; j < mf->next; j++) {
				t->ext_len[k] = mf->ext[j].len;
				t->ext_chunk[k] = mf->ext[j].chunk;
				k++;
			}
			t->files[i] = f;
			t->file_ptrs[i] = &t->files[i];
		}
		s->n_files = m->nfiles;
		s->files = t->file_ptrs;
	}
	return 0;
}

int ss_manifest_encode(const struct ss_manifest *m, uint8_t **out, size_t *outlen)
{
	if (!m || !out || !outlen)
		return -EINVAL;
	*out = NULL;
	*outlen = 0;
	/* Never write what the decoder would refuse. */
	if (ss_manifest_validate(m, NULL) || m->format_major > SS_MANIFEST_MAJOR)
		return -EINVAL;

	Snapshot snap = SNAPSTREAM__V1__SNAPSHOT__INIT;
	ChunkParams cp = SNAPSTREAM__V1__CHUNK_PARAMS__INIT;
	Stats st = SNAPSTREAM__V1__STATS__INIT;
	struct enc_tables t = { 0 };
	struct zsink z = { .base = { .append = zsink_append } };
	int r = build_snapshot(m, &snap, &cp, &st, &t);
	if (r)
		goto out;

	size_t raw_size = snapstream__v1__snapshot__get_packed_size(&snap);
	if (raw_size > SS_MANIFEST_MAX_BODY) {
		r = -EFBIG;
		goto out;
	}

	z.cctx = ZSTD_createCCtx();
	z.stage = malloc(STAGE_SIZE);
	/* Worst case fits without growing; pages never written are never
	 * touched, and the buffer is shrunk to size at the end. */
	z.cap = ENV_HDR_MAX + ZSTD_compressBound(raw_size) + 64;
	z.buf = malloc(z.cap);
	z.pos = ENV_HDR_MAX;
	if (!z.cctx || !z.stage || !z.buf) {
		r = -ENOMEM;
		goto out;
	}
	if (ZSTD_isError(ZSTD_CCtx_setParameter(z.cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z.cctx, ZSTD_c_contentSizeFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(z.cctx, raw_size))) {
		r = -EIO;
		goto out;
	}

	size_t packed = snapstream__v1__snapshot__pack_to_buffer(&snap, &z.base);
	/* The tables are no longer needed: free them before finishing. */
	enc_tables_free(&t);
	if (z.err) {
		r = z.err;
		goto out;
	}
	if (packed != raw_size || z.fed != raw_size) {
		r = -EIO;
		goto out;
	}
	r = zsink_compress(&z, z.stage, z.stage_len, true);
	if (r)
		goto out;
	free(z.stage);
	z.stage = NULL;
	ZSTD_freeCCtx(z.cctx);
	z.cctx = NULL;

	size_t clen = z.pos - ENV_HDR_MAX;
	uint8_t *body = z.buf + ENV_HDR_MAX;
	if (clen > SS_MANIFEST_MAX_SIZE - ENV_HDR_MAX - 18) {
		r = -EFBIG; /* the decoder would refuse it */
		goto out;
	}
	XXH128_canonical_t sum;
	XXH128_canonicalFromHash(&sum, XXH3_128bits(body, clen));

	/* Envelope fields 1..4 by protobuf-c, then body and checksum, which
	 * are what protobuf-c itself would write next (fields in order). */
	Envelope env = SNAPSTREAM__V1__ENVELOPE__INIT;
	env.format_major = m->format_major ? m->format_major : SS_MANIFEST_MAJOR;
	env.format_minor = m->format_major ? m->format_minor : SS_MANIFEST_MINOR;
	env.body_codec = SS_CODEC_ZSTD;
	env.body_raw_size = raw_size;
	uint8_t hdr[ENV_HDR_MAX];
	size_t hlen = snapstream__v1__envelope__get_packed_size(&env);
	if (hlen > ENV_HDR_MAX - 11) {
		r = -EIO;
		goto out;
	}
	snapstream__v1__envelope__pack(&env, hdr);
	hdr[hlen++] = ENV_TAG_BODY;
	hlen += put_varint(hdr + hlen, clen);
	memcpy(z.buf, hdr, hlen);
	memmove(z.buf + hlen, body, clen);
	size_t total = hlen + clen;
	/* zsink_compress keeps at least 32 bytes free past the body. */
	z.buf[total++] = ENV_TAG_CHECKSUM;
	z.buf[total++] = 16;
	memcpy(z.buf + total, sum.digest, 16);
	total += 16;
	uint8_t *shrunk = realloc(z.buf, total);
	*out = shrunk ? shrunk : z.buf;
	*outlen = total;
	z.buf = NULL;
	r = 0;
out:
	enc_tables_free(&t);
	ZSTD_freeCCtx(z.cctx);
	free(z.stage);
	free(z.buf);
	return r;
}

/* ------------------------------------------------------------------ */
/* Decode                                                              */

/* An allocator for protobuf-c that refuses to hand out more than `limit`
 * bytes in total, so a small hostile input cannot make the parser allocate
 * without bound (every unknown field, scanned member or empty sub-message
 * costs far more in memory than on the wire). */
struct budget {
	size_t used, limit;
	bool exceeded;
	bool oom;
};

#define BUDGET_HDR 16u
#define BUDGET_PER_FILE 512u

static void *budget_alloc(void *data, size_t size)
{
	struct budget *b = data;
	if (size > SIZE_MAX - BUDGET_HDR || size + BUDGET_HDR > b->limit - b->used) {
		b->exceeded = true;
		return NULL;
	}
	uint8_t *p = malloc(size + BUDGET_HDR);
	if (!p) {
		b->oom = true;
		return NULL;
	}
	size_t charged = size + BUDGET_HDR;
	memcpy(p, &charged, sizeof(charged));
	b->used += charged;
	return p + BUDGET_HDR;
}

static void budget_free(void *data, void *ptr)
{
	struct budget *b = data;
	if (!ptr)
		return;
	uint8_t *p = (uint8_t *)ptr - BUDGET_HDR;
	size_t charged;
	memcpy(&charged, p, sizeof(charged));
	b->used -= charged;
	free(p);
}

/* One field of protobuf wire format at p[*i], without protobuf-c: sets
 * the field number and wire type, and for varints the value, for
 * length-delimited fields the length. Returns false at the end or at the
 * first malformed field (protobuf-c then reports the damage). */
static bool get_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*i >= len)
			return false;
		uint8_t c = p[(*i)++];
		x |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

/* The next field at p[*i]: its number and, for a varint, its value; for a
 * length-delimited field its length (and *type 2: the bytes end at *i). */
static bool wire_next(const uint8_t *p, size_t len, size_t *i, uint64_t *field, uint64_t *v,
		      unsigned *type)
{
	uint64_t key;
	if (*i >= len || !get_varint(p, len, i, &key))
		return false;
	*field = key >> 3;
	*type = (unsigned)(key & 7);
	*v = 0;
	if (*field == 0)
		return false;
	switch (key & 7) {
	case 0:
		return get_varint(p, len, i, v);
	case 1:
		if (len - *i < 8)
			return false;
		*i += 8;
		return true;
	case 5:
		if (len - *i < 4)
			return false;
		*i += 4;
		return true;
	case 2:
		if (!get_varint(p, len, i, v) || *v > len - *i)
			return false;
		*i += (size_t)*v;
		return true;
	default:
		return false;
	}
}

/* format_major of an Envelope, read before trusting anything else. */
static bool peek_major(const uint8_t *p, size_t len, uint32_t *major)
{
	size_t i = 0;
	uint64_t field, v;
	unsigned type;
	bool found = false;
	while (wire_next(p, len, &i, &field, &v, &type))
		if (field == 1) {
			*major = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
			found = true;
		}
	return found;
}

/* Count the Snapshot's repeated top-level messages and strings before
 * protobuf-c allocates for them, and find file names holding a NUL byte:
 * protobuf-c would hand them over cut at the NUL, so the name checked
 * would not be the name written. */
struct snap_counts {
	uint64_t files, labels, parents, packs;
	bool nul_name;
	uint64_t nul_file;    /* index of the first file whose name holds a NUL */
};

static bool name_has_nul(const uint8_t *p, size_t len)
{
	size_t i = 0;
	uint64_t field, v;
	unsigned type;
	while (wire_next(p, len, &i, &field, &v, &type))
		if (field == 1 && type == 2 && memchr(p + i - v, 0, (size_t)v))
			return true;
	return false;
}

static void count_snapshot(const uint8_t *p, size_t len, struct snap_counts *c)
{
	size_t i = 0;
	uint64_t field, v;
	unsigned type;
	memset(c, 0, sizeof(*c));
	while (wire_next(p, len, &i, &field, &v, &type)) {
		switch (field) {
		case 4:
			c->labels++;
			break;
		case 5:
			c->parents++;
			break;
		case 7:
			c->packs++;
			break;
		case 14:
			if (type == 2 && !c->nul_name && name_has_nul(p + i - v, (size_t)v)) {
				c->nul_name = true;
				c->nul_file = c->files;
			}
			c->files++;
			break;
		}
	}
}

static char *dup_str(const char *s)
{
	return strdup(s ? s : "");
}

static void pb_free(ProtobufCAllocator *a, void *p)
{
	if (p)
		a->free(a->allocator_data, p);
}

/* Copy a parsed Snapshot into m, checking every length. Frees parts of the
 * Snapshot as soon as they are copied, to keep the peak low. */
static int from_snapshot(Snapshot *s, ProtobufCAllocator *pa, struct ss_manifest *m,
			 struct ss_err *err)
{
	char q[160];

	if (!(m->tool_version = dup_str(s->tool_version)) ||
	    !(m->store_uri = dup_str(s->store_uri)))
		return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
	m->created_unix_ns = s->created_unix_ns;
	if (s->chunking) {
		m->chunk_min = s->chunking->min_size;
		m->chunk_avg = s->chunking->avg_size;
		m->chunk_max = s->chunking->max_size;
		m->chunk_seg = s->chunking->seg_size;
		m->chunk_algorithm = s->chunking->algorithm;
		m->keyed_ids = s->chunking->keyed_ids;
		m->frame_max = s->chunking->frame_max;
		/* Keyed ids without the 16-byte name of their key could never
		 * be checked against one; plain ids carry none. */
		size_t kl = s->chunking->key_check.len;
		if (m->keyed_ids ? kl != sizeof(m->key_check) : kl != 0)
			return ss_err_set(err, -EBADMSG,
					  "manifest damaged: key check of %zu bytes for %s chunk ids",
					  kl, m->keyed_ids ? "keyed" : "plain");
		if (kl)
			memcpy(m->key_check, s->chunking->key_check.data, kl);
	}
	m->root_is_dir = s->root_is_dir;
	if (s->stats) {
		m->stats.logical_bytes = s->stats->logical_bytes;
		m->stats.zero_bytes = s->stats->zero_bytes;
		m->stats.chunk_bytes = s->stats->chunk_bytes;
		m->stats.unique_bytes = s->stats->unique_bytes;
		m->stats.new_raw_bytes = s->stats->new_raw_bytes;
		m->stats.new_stored_bytes = s->stats->new_stored_bytes;
		m->stats.stored_bytes = s->stats->stored_bytes;
	}

	/* Labels and parents. */
	if (s->n_labels > SS_MANIFEST_MAX_LABELS)
		return ss_err_set(err, -EBADMSG, "manifest has %zu labels, more than the limit of %u",
				  s->n_labels, SS_MANIFEST_MAX_LABELS);
	if (s->n_labels) {
		if (!(m->labels = calloc(s->n_labels, sizeof(*m->labels))))
			return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		m->nlabels = s->n_labels;
		for (size_t i = 0; i < s->n_labels; i++) {
			const Label *l = s->labels[i];
			if (!(m->labels[i].key = dup_str(l ? l->key : NULL)) ||
			    !(m->labels[i].value = dup_str(l ? l->value : NULL)))
				return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		}
	}
	if (s->n_parents > MAX_PARENTS)
		return ss_err_set(err, -EBADMSG, "manifest has %zu parents, more than the limit of %u",
				  s->n_parents, MAX_PARENTS);
	if (s->n_parents) {
		if (!(m->parents = calloc(s->n_parents, sizeof(*m->parents))))
			return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		m->nparents = s->n_parents;
		for (size_t i = 0; i < s->n_parents; i++)
			if (!(m->parents[i] = dup_str(s->parents[i])))
				return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
	}

	/* Pack table. */
	if (s->n_pack_ids > SS_MANIFEST_MAX_CHUNKS)
		return ss_err_set(err, -EBADMSG, "manifest lists %zu packs, more than the limit of %u",
				  s->n_pack_ids, SS_MANIFEST_MAX_CHUNKS);
	if (s->n_pack_ids) {
		if (!(m->pack_ids = malloc(s->n_pack_ids * 16)))
			return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		m->npacks = s->n_pack_ids;
		for (size_t i = 0; i < s->n_pack_ids; i++) {
			if (s->pack_ids[i].len != 16)
				return ss_err_set(err, -EBADMSG,
						  "manifest pack id %zu is %zu bytes, not 16 (corrupt manifest)",
						  i, s->pack_ids[i].len);
			memcpy(m->pack_ids[i], s->pack_ids[i].data, 16);
		}
	}

	/* Chunk table: every column must have one entry per chunk id. */
	if (s->chunk_ids.len % 16)
		return ss_err_set(err, -EBADMSG,
				  "manifest chunk id table is %zu bytes, not a multiple of 16 (corrupt manifest)",
				  s->chunk_ids.len);
	size_t n = s->chunk_ids.len / 16;
	if (n > SS_MANIFEST_MAX_CHUNKS)
		return ss_err_set(err, -EBADMSG, "manifest has %zu chunks, more than the limit of %u",
				  n, SS_MANIFEST_MAX_CHUNKS);
	/* The frame offset column is absent (all zero) when there are no
	 * frames. */
	if (s->n_chunk_pack != n || s->n_chunk_offset != n || s->n_chunk_stored_len != n ||
	    s->n_chunk_raw_len != n || s->n_chunk_codec != n ||
	    (s->n_chunk_frame_off != n && s->n_chunk_frame_off != 0))
		return ss_err_set(err, -EBADMSG,
				  "manifest chunk table is inconsistent: %zu ids but %zu packs, %zu offsets, "
				  "%zu stored lengths, %zu raw lengths, %zu codecs, %zu frame offsets "
				  "(corrupt manifest)",
				  n, s->n_chunk_pack, s->n_chunk_offset, s->n_chunk_stored_len,
				  s->n_chunk_raw_len, s->n_chunk_codec, s->n_chunk_frame_off);
	if (n) {
		if (!(m->chunks = malloc(n * sizeof(*m->chunks))))
			return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		m->nchunks = n;
		for (size_t i = 0; i < n; i++) {
			struct ss_chunk_ref *c = &m->chunks[i];
			memcpy(c->id, s->chunk_ids.data + 16 * i, 16);
			if (s->chunk_codec[i] > SS_CODEC_ZSTD)
				return ss_err_set(err, -EBADMSG,
						  "manifest chunk %zu uses unknown codec %" PRIu32
						  " (corrupt manifest, or written by a newer snapstream)",
						  i, s->chunk_codec[i]);
			c->codec = (uint8_t)s->chunk_codec[i];
			c->pack = s->chunk_pack[i];
			c->stored_len = s->chunk_stored_len[i];
			c->raw_len = s->chunk_raw_len[i];
			c->offset = s->chunk_offset[i];
			c->frame_off = s->n_chunk_frame_off ? s->chunk_frame_off[i] : 0;
		}
	}
	/* Done with the columns. */
	pb_free(pa, s->chunk_ids.data);
	s->chunk_ids.data = NULL;
	s->chunk_ids.len = 0;
	pb_free(pa, s->chunk_pack);
	pb_free(pa, s->chunk_offset);
	pb_free(pa, s->chunk_stored_len);
	pb_free(pa, s->chunk_raw_len);
	pb_free(pa, s->chunk_codec);
	pb_free(pa, s->chunk_frame_off);
	s->chunk_pack = s->chunk_stored_len = s->chunk_raw_len = s->chunk_codec = NULL;
	s->chunk_frame_off = NULL;
	s->chunk_offset = NULL;
	s->n_chunk_pack = s->n_chunk_offset = s->n_chunk_stored_len = 0;
	s->n_chunk_raw_len = s->n_chunk_codec = s->n_chunk_frame_off = 0;

	/* Files. */
	if (s->n_files > SS_MANIFEST_MAX_FILES)
		return ss_err_set(err, -EBADMSG, "manifest has %zu files, more than the limit of %u",
				  s->n_files, SS_MANIFEST_MAX_FILES);
	if (s->n_files) {
		if (!(m->files = calloc(s->n_files, sizeof(*m->files))))
			return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		m->nfiles = s->n_files;
	}
	for (size_t i = 0; i < s->n_files; i++) {
		File *f = s->files[i];
		struct ss_mfile *mf = &m->files[i];
		if (!f)
			return ss_err_set(err, -EBADMSG, "manifest file %zu is missing", i);
		const char *name = f->name ? f->name : "";
		if (strnlen(name, SS_MANIFEST_MAX_NAME + 1) > SS_MANIFEST_MAX_NAME)
			return ss_err_set(err, -EBADMSG,
					  "manifest file %zu has a name longer than %u bytes (\"%s\"; corrupt manifest)",
					  i, SS_MANIFEST_MAX_NAME, quote(name, q, sizeof(q)));
		if (!(mf->name = strdup(name)))
			return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		if (f->digest.len != 16)
			return ss_err_set(err, -EBADMSG,
					  "manifest file \"%s\" has a %zu-byte digest, not 16 (corrupt manifest)",
					  quote(name, q, sizeof(q)), f->digest.len);
		memcpy(mf->digest, f->digest.data, 16);
		mf->size = f->size;
		mf->mode = f->mode;
		mf->mtime_ns = f->mtime_ns;
		mf->transform = f->transform;
		mf->source_size = f->source_size;
		if (f->n_extent_len != f->n_extent_chunk)
			return ss_err_set(err, -EBADMSG,
					  "manifest file \"%s\" has %zu extent lengths but %zu extent chunks (corrupt manifest)",
					  quote(name, q, sizeof(q)), f->n_extent_len, f->n_extent_chunk);
		if (f->n_extent_len) {
			if (!(mf->ext = malloc(f->n_extent_len * sizeof(*mf->ext))))
				return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
			mf->next = f->n_extent_len;
			for (size_t j = 0; j < f->n_extent_len; j++) {
				mf->ext[j].len = f->extent_len[j];
				mf->ext[j].chunk = f->extent_chunk[j];
			}
		}
		protobuf_c_message_free_unpacked(&f->base, pa);
		s->files[i] = NULL;
	}
	return 0;
}

int ss_manifest_decode(const uint8_t *buf, size_t len, struct ss_manifest **out,
		       struct ss_err *err)
{
	return ss_manifest_decode_ex(buf, len, false, out, err);
}

int ss_manifest_decode_ex(const uint8_t *buf, size_t len, bool sealed, struct ss_manifest **out,
			  struct ss_err *err)
{
	if (!out)
		return ss_err_set(err, -EINVAL, "no output for the manifest");
	*out = NULL;
	if (!buf && len)
		return ss_err_set(err, -EINVAL, "no manifest buffer");
	if (len > SS_MANIFEST_MAX_SIZE)
		return ss_err_set(err, -EFBIG,
				  "manifest is %zu bytes, more than the %u MiB limit (not a manifest, or corrupt)",
				  len, SS_MANIFEST_MAX_SIZE >> 20);
	if (len == 0)
		return ss_err_set(err, -EBADMSG, "manifest is empty (truncated or never written)");

	uint32_t major = 0;
	if (peek_major(buf, len, &major) && major > SS_MANIFEST_MAJOR)
		return ss_err_set(err, -EPROTONOSUPPORT,
				  "manifest format %" PRIu32 ".x was written by a newer snapstream "
				  "(this one reads up to %u.x); upgrade snapstream to read it",
				  major, SS_MANIFEST_MAJOR);

	int r = 0;
	/* The envelope is little more than its body, which protobuf-c copies. */
	struct budget eb = { .limit = len > (SIZE_MAX - (1u << 20)) / 2 ? SIZE_MAX
								       : 2 * len + (1u << 20) };
	ProtobufCAllocator ea = { budget_alloc, budget_free, &eb };
	Envelope *env = snapstream__v1__envelope__unpack(&ea, len, buf);
	uint8_t *raw = NULL;
	Snapshot *snap = NULL;
	struct budget sb = { 0 };
	ProtobufCAllocator sa = { budget_alloc, budget_free, &sb };
	struct ss_manifest *m = NULL;

	if (!env) {
		if (eb.oom)
			return ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		return ss_err_set(err, -EBADMSG,
				  "manifest envelope does not parse (not a snapstream manifest, corrupted or truncated)");
	}
	if (env->format_major == 0) {
		r = ss_err_set(err, -EBADMSG,
			       "manifest has format version 0.%" PRIu32
			       " (not a snapstream manifest, or corrupted)", env->format_minor);
		goto out;
	}
	if (env->format_major > SS_MANIFEST_MAJOR) {
		r = ss_err_set(err, -EPROTONOSUPPORT,
			       "manifest format %" PRIu32 ".x was written by a newer snapstream "
			       "(this one reads up to %u.x); upgrade snapstream to read it",
			       env->format_major, SS_MANIFEST_MAJOR);
		goto out;
	}
	if (env->format_major == SS_MANIFEST_SEALED_MAJOR) {
		r = ss_err_set(err, -EBADMSG,
			       "manifest has the sealed format 4 where a plain one belongs "
			       "(corrupted, or a sealed envelope inside another)");
		goto out;
	}
	uint32_t fmt_major = env->format_major, fmt_minor = env->format_minor;
	if (env->checksum.len != 16) {
		r = ss_err_set(err, -EBADMSG,
			       "manifest checksum is %zu bytes, not 16 (corrupted or truncated)",
			       env->checksum.len);
		goto out;
	}
	XXH128_canonical_t sum;
	XXH128_canonicalFromHash(&sum, XXH3_128bits(env->body.data, env->body.len));
	if (memcmp(sum.digest, env->checksum.data, 16) != 0) {
		r = ss_err_set(err, -EBADMSG, "manifest checksum mismatch (corrupted or truncated)");
		goto out;
	}
	uint64_t raw_size = env->body_raw_size;
	if (raw_size > SS_MANIFEST_MAX_BODY) {
		r = ss_err_set(err, -EFBIG,
			       "manifest body declares %" PRIu64 " bytes, more than the %u MiB limit (corrupt manifest)",
			       raw_size, SS_MANIFEST_MAX_BODY >> 20);
		goto out;
	}

	const uint8_t *body;
	if (env->body_codec == SS_CODEC_RAW) {
		if (env->body.len != raw_size) {
			r = ss_err_set(err, -EBADMSG,
				       "manifest body is %zu bytes but the envelope says %" PRIu64 " (corrupt manifest)",
				       env->body.len, raw_size);
			goto out;
		}
		body = env->body.data;
	} else if (env->body_codec == SS_CODEC_ZSTD) {
		unsigned long long fcs = ZSTD_getFrameContentSize(env->body.data, env->body.len);
		if (fcs == ZSTD_CONTENTSIZE_ERROR) {
			r = ss_err_set(err, -EBADMSG, "manifest body is not zstd data (corrupt manifest)");
			goto out;
		}
		if (fcs == ZSTD_CONTENTSIZE_UNKNOWN) {
			r = ss_err_set(err, -EBADMSG,
				       "manifest body does not declare its decompressed size (corrupt manifest)");
			goto out;
		}
		if (fcs != raw_size) {
			r = ss_err_set(err, -EBADMSG,
				       "manifest body decompresses to %llu bytes but the envelope says %" PRIu64
				       " (corrupt manifest)", fcs, raw_size);
			goto out;
		}
		raw = malloc(raw_size ? (size_t)raw_size : 1);
		if (!raw) {
			r = ss_err_set(err, -ENOMEM, "out of memory reading manifest (%" PRIu64 " bytes)",
				       raw_size);
			goto out;
		}
		size_t got = ZSTD_decompress(raw, (size_t)raw_size, env->body.data, env->body.len);
		if (ZSTD_isError(got)) {
			r = ss_err_set(err, -EBADMSG,
				       "manifest body does not decompress (%s; corrupt manifest)",
				       ZSTD_getErrorName(got));
			goto out;
		}
		if (got != raw_size) {
			r = ss_err_set(err, -EBADMSG,
				       "manifest body decompresses to %zu bytes but the envelope says %" PRIu64
				       " (corrupt manifest)", got, raw_size);
			goto out;
		}
		body = raw;
		snapstream__v1__envelope__free_unpacked(env, &ea);
		env = NULL;
	} else {
		r = ss_err_set(err, -EBADMSG,
			       "manifest body uses unknown codec %" PRIu32
			       " (corrupt manifest, or written by a newer snapstream)", env->body_codec);
		goto out;
	}

	struct snap_counts cnt;
	count_snapshot(body, (size_t)raw_size, &cnt);
	const struct {
		const char *what;
		uint64_t have, limit;
	} lim[] = {
		{ "files", cnt.files, SS_MANIFEST_MAX_FILES },
		{ "labels", cnt.labels, SS_MANIFEST_MAX_LABELS },
		{ "parents", cnt.parents, MAX_PARENTS },
		{ "packs", cnt.packs, SS_MANIFEST_MAX_CHUNKS },
	};
	for (size_t i = 0; i < SS_ARRAY_SIZE(lim); i++)
		if (lim[i].have > lim[i].limit) {
			r = ss_err_set(err, -EBADMSG,
				       "manifest lists %" PRIu64 " %s, more than the limit of %" PRIu64
				       " (corrupt manifest)", lim[i].have, lim[i].what, lim[i].limit);
			goto out;
		}
	if (cnt.nul_name) {
		r = ss_err_set(err, -EBADMSG,
			       "manifest file %" PRIu64 " has a name holding a NUL byte; refusing to "
			       "restore it (corrupt or malicious manifest)", cnt.nul_file);
		goto out;
	}
	/* A chunk table takes about 1.5x its encoding in memory once parsed;
	 * a small file record up to ~8x (message, name, digest, bookkeeping),
	 * hence the per-file allowance. Anything needing more is hostile. */
	uint64_t limit = 4 * raw_size + (uint64_t)BUDGET_PER_FILE * cnt.files + (64u << 20);
	sb.limit = limit > SIZE_MAX ? SIZE_MAX : (size_t)limit;
	snap = snapstream__v1__snapshot__unpack(&sa, (size_t)raw_size, body);
	free(raw);
	raw = NULL;
	if (env) {
		snapstream__v1__envelope__free_unpacked(env, &ea);
		env = NULL;
	}
	if (!snap) {
		if (sb.oom)
			r = ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		else if (sb.exceeded)
			r = ss_err_set(err, -EBADMSG,
				       "manifest body would take more than %zu MiB of memory to read "
				       "(corrupt or hostile manifest)", sb.limit >> 20);
		else
			r = ss_err_set(err, -EBADMSG,
				       "manifest body does not parse (corrupt manifest)");
		goto out;
	}

	m = calloc(1, sizeof(*m));
	if (!m) {
		r = ss_err_set(err, -ENOMEM, "out of memory reading manifest");
		goto out;
	}
	r = from_snapshot(snap, &sa, m, err);
	snapstream__v1__snapshot__free_unpacked(snap, &sa);
	snap = NULL;
	if (r)
		goto out;
	m->format_major = fmt_major;
	m->format_minor = fmt_minor;
	m->sealed = sealed;
	r = ss_manifest_validate(m, err);
	if (r)
		goto out;
	*out = m;
	m = NULL;
out:
	if (r && m)
		ss_manifest_free(m);
	if (snap)
		snapstream__v1__snapshot__free_unpacked(snap, &sa);
	free(raw);
	if (env)
		snapstream__v1__envelope__free_unpacked(env, &ea);
	return r;
}
