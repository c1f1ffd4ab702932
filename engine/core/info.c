/* What a manifest says about a snapshot, as the public API hands it out:
 * ss_info and ss_ls (admin/) describe snapshots with it, and ss_pull
 * (pull/) hands back the description of the snapshot it restored. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

static char *xstrdup(const char *s, bool *oom)
{
	char *d = strdup(s ? s : "");
	if (!d)
		*oom = true;
	return d;
}

void ss_info_clear(struct ss_snapshot_info *in)
{
	if (!in)
		return;
	free(in->uri);
	free(in->store);
	free(in->tool_version);
	for (size_t i = 0; i < in->nlabels; i++) {
		free((char *)in->labels[i].key);
		free((char *)in->labels[i].value);
	}
	free(in->labels);
	for (size_t i = 0; i < in->nparents; i++)
		free(in->parents[i]);
	free(in->parents);
	for (size_t i = 0; i < in->nfiles_v; i++) {
		free(in->files_v[i]->name);
		free(in->files_v[i]);
	}
	free(in->files_v);
	free(in->error);
	memset(in, 0, sizeof(*in));
}

void ss_info_free(struct ss_snapshot_info *info)
{
	ss_info_clear(info);
	free(info);
}

int ss_info_fill(const struct ss_manifest *m, const char *uri, uint64_t mlen,
		 bool with_files, struct ss_snapshot_info *in)
{
	bool oom = false;
	memset(in, 0, sizeof(*in));
	in->size = sizeof(*in);
	in->uri = xstrdup(uri, &oom);
	in->store = xstrdup(m->store_uri, &oom);
	in->tool_version = xstrdup(m->tool_version, &oom);
	in->format_major = m->format_major;
	in->format_minor = m->format_minor;
	in->created_unix_ns = m->created_unix_ns;
	in->root_is_dir = m->root_is_dir;
	in->chunk_min = m->chunk_min;
	in->chunk_avg = m->chunk_avg;
	in->chunk_max = m->chunk_max;
	in->chunk_seg = m->chunk_seg;
	in->frame_max = m->frame_max;
	in->keyed_ids = m->keyed_ids;
	in->sealed = m->sealed;
	in->unopened = m->unopened;
	if (m->keyed_ids)
		ss_hex(m->key_check, sizeof(m->key_check), in->key_check);
	in->files = m->nfiles;
	in->chunks = m->nchunks;
	in->packs = m->npacks;
	in->manifest_bytes = mlen;
	/* The manifest's own stats say what the push saw; sizes and extents
	 * are recounted from the file table, which is what a pull restores. */
	for (size_t i = 0; i < m->nfiles; i++) {
		in->logical_bytes += m->files[i].size;
		for (size_t e = 0; e < m->files[i].next; e++)
			if (m->files[i].ext[e].chunk)
				in->extents++;
	}
	in->zero_bytes = m->stats.zero_bytes;
	in->chunk_bytes = m->stats.chunk_bytes;
	in->unique_bytes = m->stats.unique_bytes;
	in->stored_bytes = ss_manifest_stored_bytes(m);
	in->new_raw_bytes = m->stats.new_raw_bytes;
	in->new_stored_bytes = m->stats.new_stored_bytes;
	in->dedup_bytes = in->chunk_bytes > in->new_raw_bytes ? in->chunk_bytes - in->new_raw_bytes
							      : 0;
	if (m->nlabels && (in->labels = calloc(m->nlabels, sizeof(*in->labels)))) {
		for (size_t i = 0; i < m->nlabels; i++) {
			in->labels[i].key = xstrdup(m->labels[i].key, &oom);
			in->labels[i].value = xstrdup(m->labels[i].value, &oom);
			in->nlabels++;
		}
	} else if (m->nlabels) {
		oom = true;
	}
	if (m->nparents && (in->parents = calloc(m->nparents, sizeof(*in->parents)))) {
		for (size_t i = 0; i < m->nparents; i++)
			in->parents[in->nparents++] = xstrdup(m->parents[i], &oom);
	} else if (m->nparents) {
		oom = true;
	}
	if (with_files && m->nfiles) {
		in->files_v = calloc(m->nfiles, sizeof(*in->files_v));
		if (!in->files_v)
			oom = true;
		for (size_t i = 0; in->files_v && i < m->nfiles; i++) {
			const struct ss_mfile *f = &m->files[i];
			struct ss_file_info *fi = calloc(1, sizeof(*fi));
			if (!(in->files_v[in->nfiles_v] = fi)) {
				oom = true;
				break;
			}
			in->nfiles_v++;
			fi->size = sizeof(*fi);
			fi->name = xstrdup(f->name, &oom);
			fi->bytes = f->size;
			fi->mode = f->mode;
			fi->mtime_ns = f->mtime_ns;
			ss_hex(f->digest, 16, fi->digest);
			fi->transform = f->transform;
			fi->source_bytes = f->transform ? f->source_size : f->size;
			for (size_t e = 0; e < f->next; e++) {
				if (f->ext[e].chunk)
					fi->extents++;
				else
					fi->zero_bytes += f->ext[e].len;
			}
		}
	}
	if (oom) {
		ss_info_clear(in);
		return -ENOMEM;
	}
	return 0;
}
