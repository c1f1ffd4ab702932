/* ls, info, verify, rm, gc: looking at and cleaning up a store. Results go
 * to stdout (a table or one JSON object), errors to stderr. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void pct(uint64_t part, uint64_t whole, char *out, size_t n)
{
	if (whole)
		snprintf(out, n, " (%.1f%%)", 100.0 * (double)part / (double)whole);
	else
		out[0] = '\0';
}

static void info_json(struct json *j, const struct ss_snapshot_info *in)
{
	json_str(j, "snapshot", in->uri);
	if (in->error) {
		json_str(j, "error", in->error);
		json_i64(j, "exit", cli_exit_code(in->error_code));
		return;
	}
	json_bool(j, "sealed", in->sealed);
	if (in->unopened) {
		/* Without the key: only what its clear header says. */
		json_bool(j, "opened", false);
		json_u64(j, "packs", in->packs);
		return;
	}
	json_str(j, "store", in->store);
	json_i64(j, "created_unix_ns", in->created_unix_ns);
	char t[40];
	cli_time(in->created_unix_ns, t, sizeof(t));
	json_str(j, "created", t);
	json_u64(j, "files", in->files);
	json_u64(j, "logical_bytes", in->logical_bytes);
	json_u64(j, "stored_bytes", in->stored_bytes);
	json_u64(j, "zero_bytes", in->zero_bytes);
	json_u64(j, "chunk_bytes", in->chunk_bytes);
	json_u64(j, "unique_bytes", in->unique_bytes);
	json_u64(j, "new_raw_bytes", in->new_raw_bytes);
	json_u64(j, "new_stored_bytes", in->new_stored_bytes);
	json_u64(j, "dedup_bytes", in->dedup_bytes);
	json_u64(j, "extents", in->extents);
	json_u64(j, "chunks", in->chunks);
	json_u64(j, "packs", in->packs);
}

/* ---------------------------------------------------------------- ls */

int cmd_ls(struct cli *c)
{
	const char *prefix = c->nargs ? c->args[0] : ".";
	c->subject = prefix;
	struct ss_ls_opts o = SS_LS_OPTS_INIT;
	o.prefix = prefix;
	o.store = cli_store(c);
	struct ss_snapshot_info **v = NULL;
	size_t n = 0;
	char err[1024];
	int r = ss_ls(&o, &c->cfg, &v, &n, err, sizeof(err));
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	/* Unreadable snapshots are listed, and then reflected in the status. */
	int worst = 0;
	for (size_t i = 0; i < n; i++)
		if (v[i]->error && (worst != -EBADMSG))
			worst = v[i]->error_code == -EBADMSG ? -EBADMSG : v[i]->error_code;
	if (c->json) {
		struct json j;
		json_begin(&j, stdout);
		json_obj(&j, NULL);
		json_bool(&j, "ok", !worst);
		json_str(&j, "op", "ls");
		json_str(&j, "prefix", prefix);
		json_arr(&j, "snapshots");
		for (size_t i = 0; i < n; i++) {
			json_obj(&j, NULL);
			info_json(&j, v[i]);
			json_end_obj(&j);
		}
		json_end_arr(&j);
		json_end_obj(&j);
		json_finish(&j);
	} else {
		printf("%-20s  %10s  %10s  %5s  %s\n", "CREATED", "LOGICAL", "STORED", "FILES",
		       "SNAPSHOT");
		for (size_t i = 0; i < n; i++) {
			const struct ss_snapshot_info *e = v[i];
			if (e->error) {
				printf("%-20s  %10s  %10s  %5s  %s\n", "?", "?", "?", "?", e->uri);
				fprintf(stderr, "%s ls: %s\n", c->prog, e->error);
				continue;
			}
			if (e->unopened) {
				printf("%-20s  %10s  %10s  %5s  %s\n", "(sealed)", "?", "?", "?", e->uri);
				continue;
			}
			char t[40], l[32], s[32];
			cli_time(e->created_unix_ns, t, sizeof(t));
			cli_human((double)e->logical_bytes, l, sizeof(l));
			cli_human((double)e->stored_bytes, s, sizeof(s));
			printf("%-20s  %10s  %10s  %5" PRIu64 "  %s\n", t, l, s, e->files, e->uri);
		}
	}
	ss_ls_free(v, n);
	return cli_exit_code(worst);
}

/* ---------------------------------------------------------------- info */

static void mode_str(uint32_t mode, char *out)
{
	const char *rwx = "rwxrwxrwx";
	for (int i = 0; i < 9; i++)
		out[i] = (mode & (1u << (8 - i))) ? rwx[i] : '-';
	out[9] = '\0';
}

int cmd_info(struct cli *c)
{
	const char *snap = c->args[0];
	c->subject = snap;
	struct ss_snapshot_info *in = NULL;
	char err[1024];
	/* The engine refuses a snapshot whose manifest names another store
	 * than this one, as a pull from it would. */
	int r = ss_info(snap, cli_store(c), &c->cfg, &in, err, sizeof(err));
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	if (in->unopened) {
		/* A sealed snapshot read without its store's key. */
		if (c->json) {
			struct json j;
			json_result(&j, stdout, "info");
			info_json(&j, in);
			json_u64(&j, "format_major", in->format_major);
			json_u64(&j, "manifest_bytes", in->manifest_bytes);
			json_str(&j, "key_check", in->key_check);
			json_end_obj(&j);
			json_finish(&j);
		} else {
			char b[32];
			cli_human((double)in->manifest_bytes, b, sizeof(b));
			printf("snapshot    %s\n", in->uri);
			printf("format      %u (sealed: encrypted and authenticated)\n",
			       in->format_major);
			printf("key check   %s\n", in->key_check);
			printf("packs       %" PRIu64 "\n", in->packs);
			printf("manifest    %s\n", b);
			printf("\nGive the store's key (--key-file) to see its files, sizes and "
			       "labels.\n");
		}
		ss_info_free(in);
		return EXIT_OK;
	}
	if (c->json) {
		struct json j;
		json_result(&j, stdout, "info");
		info_json(&j, in);
		json_u64(&j, "format_major", in->format_major);
		json_u64(&j, "format_minor", in->format_minor);
		json_str(&j, "tool_version", in->tool_version);
		json_bool(&j, "directory", in->root_is_dir);
		json_u64(&j, "manifest_bytes", in->manifest_bytes);
		json_obj(&j, "chunking");
		json_u64(&j, "min", in->chunk_min);
		json_u64(&j, "avg", in->chunk_avg);
		json_u64(&j, "max", in->chunk_max);
		json_u64(&j, "segment", in->chunk_seg);
		json_u64(&j, "frame_max", in->frame_max);
		json_str(&j, "chunk_ids", in->keyed_ids ? "xxh3-128-keyed" : "xxh3-128");
		if (in->keyed_ids)
			json_str(&j, "key_check", in->key_check);
		json_end_obj(&j);
		json_obj(&j, "labels");
		for (size_t i = 0; i < in->nlabels; i++)
			json_str(&j, in->labels[i].key, in->labels[i].value);
		json_end_obj(&j);
		json_arr(&j, "parents");
		for (size_t i = 0; i < in->nparents; i++)
			json_str(&j, NULL, in->parents[i]);
		json_end_arr(&j);
		json_arr(&j, "file_list");
		for (size_t i = 0; i < in->nfiles_v; i++) {
			const struct ss_file_info *f = in->files_v[i];
			json_obj(&j, NULL);
			json_str(&j, "name", f->name);
			json_u64(&j, "size", f->bytes);
			json_u64(&j, "mode", f->mode);
			json_i64(&j, "mtime_ns", f->mtime_ns);
			json_str(&j, "xxh128", f->digest);
			json_u64(&j, "zero_bytes", f->zero_bytes);
			json_u64(&j, "extents", f->extents);
			if (f->transform) {
				json_str(&j, "stored_as", "gvisor-inflated");
				json_u64(&j, "pushed_size", f->source_bytes);
			}
			json_end_obj(&j);
		}
		json_end_arr(&j);
		json_end_obj(&j);
		json_finish(&j);
		ss_info_free(in);
		return EXIT_OK;
	}
	char t[40], b[32], b2[32], p[32];
	cli_time(in->created_unix_ns, t, sizeof(t));
	printf("snapshot    %s\n", in->uri);
	printf("created     %s\n", t);
	printf("format      %u.%u (written by snapstream %s)\n", in->format_major, in->format_minor,
	       in->tool_version);
	printf("store       %s\n", in->store);
	cli_human((double)in->logical_bytes, b, sizeof(b));
	printf("files       %" PRIu64 " (%s)\n", in->files,
	       in->root_is_dir ? "pushed from a directory" : "one file");
	printf("logical     %s (%" PRIu64 " bytes)\n", b, in->logical_bytes);
	cli_human((double)in->zero_bytes, b, sizeof(b));
	pct(in->zero_bytes, in->logical_bytes, p, sizeof(p));
	printf("zero pages  %s%s, never stored or transferred\n", b, p);
	cli_human((double)in->dedup_bytes, b, sizeof(b));
	pct(in->dedup_bytes, in->logical_bytes, p, sizeof(p));
	printf("dedup       %s%s found already stored (or repeated) when pushed\n", b, p);
	cli_human((double)in->new_stored_bytes, b, sizeof(b));
	cli_human((double)in->new_raw_bytes, b2, sizeof(b2));
	printf("new         %s stored (%s raw) added to the store by its push\n", b, b2);
	cli_human((double)in->stored_bytes, b, sizeof(b));
	cli_human((double)in->unique_bytes, b2, sizeof(b2));
	printf("stored      %s for its %s of distinct chunks, shared ones included\n", b, b2);
	printf("chunks      %" PRIu64 " extents, %" PRIu64 " distinct, in %" PRIu64 " pack(s)\n",
	       in->extents, in->chunks, in->packs);
	char mn[32], mx[32], sg[32];
	cli_human(in->chunk_min, mn, sizeof(mn));
	cli_human(in->chunk_avg, b, sizeof(b));
	cli_human(in->chunk_max, mx, sizeof(mx));
	cli_human(in->chunk_seg, sg, sizeof(sg));
	cli_human(in->frame_max, b2, sizeof(b2));
	printf("chunking    FastCDC min %s avg %s max %s, segments %s, frames %s\n", mn, b, mx, sg,
	       b2);
	if (in->keyed_ids)
		printf("chunk ids   XXH3-128 keyed (key check %s)\n", in->key_check);
	else
		printf("chunk ids   XXH3-128\n");
	if (in->sealed)
		printf("encryption  sealed: encrypted and authenticated with the store's key\n");
	else if (in->keyed_ids)
		printf("encryption  none: keyed ids only (a store of config version 1; see\n"
		       "            docs/SECURITY.md, \"Old keyed stores\")\n");
	cli_human((double)in->manifest_bytes, b, sizeof(b));
	printf("manifest    %s\n", b);
	for (size_t i = 0; i < in->nlabels; i++)
		printf("label       %s=%s\n", in->labels[i].key, in->labels[i].value);
	for (size_t i = 0; i < in->nparents; i++)
		printf("parent      %s\n", in->parents[i]);
	printf("\n%-10s  %10s  %10s  %-32s  %s\n", "MODE", "SIZE", "ZERO", "XXH128", "NAME");
	for (size_t i = 0; i < in->nfiles_v; i++) {
		const struct ss_file_info *f = in->files_v[i];
		char m[10];
		mode_str(f->mode, m);
		cli_human((double)f->bytes, b, sizeof(b));
		cli_human((double)f->zero_bytes, b2, sizeof(b2));
		printf("%-10s  %10s  %10s  %s  %s\n", m, b, b2, f->digest, f->name);
	}
	for (size_t i = 0; i < in->nfiles_v; i++) {
		const struct ss_file_info *f = in->files_v[i];
		if (!f->transform)
			continue;
		cli_human((double)f->source_bytes, b, sizeof(b));
		printf("\n%s: a gVisor state file of %s, stored inflated (size, zero pages\n"
		       "and XXH128 above are of its header and inflated body, which verify\n"
		       "checks). Pull and cat restore its header byte for byte and frame its\n"
		       "body anew, which runsc restores: the body's bytes, and so the file's\n"
		       "size and sha256, differ from the file that was pushed.\n",
		       f->name, b);
	}
	ss_info_free(in);
	return EXIT_OK;
}

/* ---------------------------------------------------------------- verify */

int cmd_verify(struct cli *c)
{
	const char *snap = c->args[0];
	c->subject = snap;
	struct ss_verify_opts o = {.size = sizeof(o), .snapshot = snap, .store = cli_store(c),
				   .quick = c->quick};
	struct ss_stats st = SS_STATS_INIT;
	char err[1024];
	int r = ss_verify(&o, &c->cfg, &st, err, sizeof(err));
	cli_progress_clear(c);
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	if (c->json) {
		struct json j;
		json_result(&j, stdout, "verify");
		json_str(&j, "snapshot", snap);
		json_bool(&j, "quick", c->quick);
		json_u64(&j, "files", st.files);
		json_u64(&j, "logical_bytes", st.logical_bytes);
		json_u64(&j, "zero_bytes", st.zero_bytes);
		json_u64(&j, "chunks_checked", st.chunks);
		json_u64(&j, "unique_chunks", st.unique_chunks);
		json_u64(&j, "packs", st.packs);
		json_u64(&j, "transferred_bytes", st.transferred_bytes);
		json_u64(&j, "requests", st.requests);
		json_f64(&j, "seconds", st.seconds);
		json_end_obj(&j);
		json_finish(&j);
	} else if (!c->quiet) {
		char a[32], t[32];
		cli_human((double)st.logical_bytes, a, sizeof(a));
		cli_human((double)st.transferred_bytes, t, sizeof(t));
		if (c->quick)
			printf("%s: all %" PRIu64 " pack(s) present (quick check; chunks not read)\n",
			       snap, st.packs);
		else
			printf("%s: ok, %" PRIu64 " file(s), %s, %" PRIu64
			       " chunks checked, %s fetched in %.2fs\n",
			       snap, st.files, a, st.chunks, t, st.seconds);
	}
	return EXIT_OK;
}

/* ---------------------------------------------------------------- rm */

int cmd_rm(struct cli *c)
{
	const char *snap = c->args[0];
	c->subject = snap;
	struct ss_rm_opts o = {.size = sizeof(o), .snapshot = snap, .store = cli_store(c)};
	char err[1024];
	int r = ss_rm(&o, &c->cfg, err, sizeof(err));
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	if (c->json) {
		struct json j;
		json_result(&j, stdout, "rm");
		json_str(&j, "snapshot", snap);
		json_end_obj(&j);
		json_finish(&j);
	} else if (!c->quiet) {
		printf("removed %s (its chunks go at the next gc after the grace period)\n", snap);
	}
	return EXIT_OK;
}

/* ---------------------------------------------------------------- gc */

int cmd_init(struct cli *c)
{
	const char *store = c->store ? cli_store(c) : NULL;
	if (!store) {
		c->store = ".snapstream";
		store = cli_store(c);
	}
	c->subject = store;
	if (c->cipher && !c->cfg.key)
		return cli_usage_error(c, "--cipher is for a keyed store (with --key-file)");
	struct ss_init_opts o = {.size = sizeof(o), .store = store, .cipher = c->cipher};
	char err[1024];
	int r = ss_init(&o, &c->cfg, err, sizeof(err));
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	const char *ids = c->cfg.key ? "keyed" : "plain";
	if (c->json) {
		struct json j;
		json_result(&j, stdout, "init");
		json_str(&j, "store", store);
		json_str(&j, "chunk_ids", ids);
		json_bool(&j, "sealed", c->cfg.key != NULL);
		json_end_obj(&j);
		json_finish(&j);
	} else if (!c->quiet) {
		printf("%s: created, %s\n", store,
		       c->cfg.key ? "keyed chunk ids, sealed (encrypted and authenticated)"
				  : "plain chunk ids");
	}
	return EXIT_OK;
}

int cmd_gc(struct cli *c)
{
	const char *store = c->store ? cli_store(c) : NULL;
	if (!store) {
		c->store = ".snapstream";
		store = cli_store(c);
	}
	c->subject = store;
	struct ss_gc_opts o = {.size = sizeof(o), .store = store, .grace_seconds = c->grace,
			       .dry_run = c->dry_run, .break_lock = c->break_lock};
	struct ss_gc_stats st = SS_GC_STATS_INIT;
	char err[1024];
	int r = ss_gc(&o, &c->cfg, &st, err, sizeof(err));
	cli_progress_clear(c);
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	char next[40];
	cli_time(st.next_unix_ns, next, sizeof(next));
	if (c->json) {
		struct json j;
		json_result(&j, stdout, "gc");
		json_str(&j, "store", store);
		json_bool(&j, "dry_run", c->dry_run);
		json_u64(&j, "snapshots", st.snapshots);
		json_u64(&j, "refs_dangling", st.refs_dangling);
		json_u64(&j, "removed_in_grace", st.tombstones);
		json_u64(&j, "packs", st.packs);
		json_u64(&j, "pack_bytes", st.pack_bytes);
		json_u64(&j, "packs_referenced", st.packs_referenced);
		json_u64(&j, "packs_pending", st.packs_pending);
		json_u64(&j, "bytes_pending", st.bytes_pending);
		json_u64(&j, "packs_rescued", st.packs_rescued);
		json_u64(&j, "packs_deleted", st.packs_deleted);
		json_u64(&j, "bytes_deleted", st.bytes_deleted);
		json_u64(&j, "index_rewritten", st.index_rewritten);
		json_u64(&j, "index_deleted", st.index_deleted);
		json_i64(&j, "next_delete_unix_ns", st.next_unix_ns);
		json_u64(&j, "requests", st.requests);
		json_f64(&j, "seconds", st.seconds);
		json_end_obj(&j);
		json_finish(&j);
		return EXIT_OK;
	}
	if (c->quiet)
		return EXIT_OK;
	char a[32], d[32], p[32];
	cli_human((double)st.pack_bytes, a, sizeof(a));
	cli_human((double)st.bytes_deleted, d, sizeof(d));
	cli_human((double)st.bytes_pending, p, sizeof(p));
	printf("%s: %" PRIu64 " snapshot(s) reference %" PRIu64 " of %" PRIu64
	       " pack(s) (%s in all)\n",
	       store, st.snapshots, st.packs_referenced, st.packs, a);
	printf("%s %" PRIu64 " unreferenced pack(s), %s", c->dry_run ? "would delete" : "deleted",
	       st.packs_deleted, d);
	if (st.index_rewritten || st.index_deleted)
		printf("; rewrote %" PRIu64 " and removed %" PRIu64 " index object(s)",
		       st.index_rewritten, st.index_deleted);
	printf("\n");
	if (st.packs_pending)
		printf("%s %" PRIu64 " pack(s), %s: deleted by a gc run after %s (grace period)\n",
		       c->dry_run ? "would hide" : "hidden", st.packs_pending, p, next);
	if (st.tombstones)
		printf("%" PRIu64 " snapshot(s) removed less than a grace period ago keep their "
		       "packs until then\n",
		       st.tombstones);
	if (st.packs_rescued)
		printf("%" PRIu64 " hidden pack(s) are referenced again and were kept\n",
		       st.packs_rescued);
	if (st.refs_dangling)
		printf("%" PRIu64 " ref(s) name snapshots that are gone; 'snapstream rm <snapshot>' "
		       "removes them\n",
		       st.refs_dangling);
	return EXIT_OK;
}

int cmd_cache(struct cli *c)
{
	const char *dir = c->nargs ? c->args[0] : c->cache;
	if (!dir)
		return cli_usage_error(c, "cache needs a directory: cache <dir>, --cache <dir> or "
					  "SNAPSTREAM_CACHE");
	c->subject = dir;
	struct ss_cache_opts o = {.size = sizeof(o), .dir = dir, .prune = c->prune,
				  .prune_to = c->prune_to};
	struct ss_cache_stats st = SS_CACHE_STATS_INIT;
	char err[1024];
	int r = ss_cache(&o, &st, err, sizeof(err));
	if (r) {
		cli_error(c, r, err);
		return cli_exit_code(r);
	}
	if (c->json) {
		struct json j;
		json_result(&j, stdout, "cache");
		json_str(&j, "dir", dir);
		json_u64(&j, "bytes", st.bytes);
		json_u64(&j, "entries", st.entries);
		json_u64(&j, "bound", st.bound);
		json_u64(&j, "block_bytes", st.block_bytes);
		json_u64(&j, "hits", st.hits);
		json_u64(&j, "misses", st.misses);
		json_u64(&j, "bytes_saved", st.hit_bytes);
		json_u64(&j, "fetched_bytes", st.fetched_bytes);
		json_u64(&j, "written_bytes", st.written_bytes);
		json_u64(&j, "evicted", st.evicted);
		json_u64(&j, "evicted_bytes", st.evicted_bytes);
		json_bool(&j, "pruned_now", c->prune);
		json_u64(&j, "pruned", st.pruned);
		json_u64(&j, "pruned_bytes", st.pruned_bytes);
		json_f64(&j, "seconds", st.seconds);
		json_end_obj(&j);
		json_finish(&j);
		return EXIT_OK;
	}
	if (c->quiet)
		return EXIT_OK;
	char b[32], bound[32], saved[32], fetched[32], written[32], ev[32], blk[32];
	cli_human((double)st.bytes, b, sizeof(b));
	cli_human((double)st.bound, bound, sizeof(bound));
	cli_human((double)st.hit_bytes, saved, sizeof(saved));
	cli_human((double)st.fetched_bytes, fetched, sizeof(fetched));
	cli_human((double)st.written_bytes, written, sizeof(written));
	cli_human((double)st.evicted_bytes, ev, sizeof(ev));
	if (c->prune) {
		char pb[32];
		cli_human((double)st.pruned_bytes, pb, sizeof(pb));
		printf("pruned %" PRIu64 " block(s), %s\n", st.pruned, pb);
	}
	/* A block's file: its bytes behind a 32-byte header (snapstream.h). */
	cli_human((double)(st.block_bytes + 32), blk, sizeof(blk));
	printf("%s: %s in %" PRIu64 " block(s) of %s, bound %s\n", dir, b, st.entries, blk,
	       bound);
	printf("hits %" PRIu64 " (saved %s), misses %" PRIu64 " (fetched %s), written by "
	       "pushes %s, evicted %" PRIu64 " (%s)\n",
	       st.hits, saved, st.misses, fetched, written, st.evicted, ev);
	return EXIT_OK;
}
