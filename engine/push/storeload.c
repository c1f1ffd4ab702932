/* Learning a store's chunks for a push: every index object, then the packs
 * no index object covers (those of an interrupted push), whose own
 * trailing index is read, so a re-run reuses them; the next index object
 * written covers them. Packs that gc has hidden (gc/state) are skipped
 * either way: gc deletes them once its grace period has passed, so nothing
 * new may refer to them (docs/DESIGN.md, "Garbage collection"). */
#include "push.h"

#include <stdlib.h>
#include <string.h>

#define SS_INDEX_OBJ_MAX SS_INDEX_MAX_SIZE

struct ss_claims *ss_store_join_claims(struct ss_store *s)
{
	char ident[1280];
	struct ss_claims *c = NULL;
	if (ss_backend_identity(s->b, ident, sizeof(ident)) || ss_claims_open(ident, &c))
		return NULL;
	return c;
}

static int add_pack_entries(struct ss_store *s, struct ss_dedup *d, const uint8_t id[16],
			    uint64_t size, const struct ss_pack_entry *e, uint32_t n)
{
	uint32_t idx;
	int r = ss_store_pack_index(s, id, size, &idx);
	for (uint32_t i = 0; !r && i < n; i++)
		r = ss_dedup_add(d, e[i].id, idx, e[i].offset, e[i].stored_len, e[i].raw_len,
				 e[i].codec, e[i].frame_off);
	return r;
}

/* Read a pack's own index: its last bytes (trailer, or a sealed pack's
 * footer) first, then as many more from its end as the index needs. */
static int read_pack_index(struct ss_store *s, struct ss_loop *l, const char *key,
			   const uint8_t id[16], struct ss_pack_entry **entries, uint32_t *count,
			   uint64_t *size, struct ss_err *err)
{
	size_t want = s->ids->crypt ? SS_PACK_FOOTER_SIZE : SS_PACK_TRAILER_SIZE;
	uint8_t *buf = NULL;
	uint64_t data_end, first_size = 0;
	int r = 1;
	for (int round = 0; r == 1 && round < 2; round++) {
		uint8_t *nb = realloc(buf, want);
		if (!nb) {
			r = ss_err_set(err, -ENOMEM, "out of memory");
			break;
		}
		buf = nb;
		struct ss_req g = {.kind = SS_REQ_GET, .flags = SS_GET_SUFFIX, .key = key,
				   .len = want, .buf = buf, .err = err};
		r = ss_call(s->b, l, &g, &s->requests);
		if (r < 0)
			break;
		if (round && g.size != first_size) {
			r = ss_err_set(err, -EBADMSG, "pack %s changed while reading", key);
			break;
		}
		first_size = *size = g.size;
		if ((size_t)r != want && (uint64_t)r != g.size) {
			r = ss_err_set(err, -EBADMSG, "pack %s is truncated", key);
			break;
		}
		size_t need = 0;
		r = ss_pack_tail_read(s->ids, id, buf, (size_t)r, g.size, &need, count, &data_end,
				      entries, err);
		if (r == 1)
			want = need;
	}
	if (r == 1)
		r = ss_err_set(err, -EBADMSG, "pack %s changed while reading", key);
	free(buf);
	return r < 0 ? r : 0;
}

int ss_store_load(struct ss_store *s, struct ss_loop *l, struct ss_dedup *d, struct ss_err *err)
{
	struct ss_keylist idx = {0}, packs = {0};
	int r = ss_store_check_ids(s, l, err);
	if (r)
		return r;
	/* Read before the listings: a pack hidden after this read was seen by
	 * a load that started earlier, which the grace period covers. */
	r = ss_gcstate_load(s->b, l, s->uri, &s->hidden, &s->requests, err);
	if (r)
		return r;
	r = ss_list_keys(s->b, l, s->uri, "index/", &idx, &s->requests, err);
	for (size_t i = 0; !r && i < idx.n; i++) {
		uint8_t *buf;
		size_t len;
		r = ss_get_object(s->b, l, idx.keys[i], SS_INDEX_OBJ_MAX, &buf, &len, &s->requests,
				  err);
		if (r == -ENOENT) {   /* removed by a concurrent gc: its packs too */
			ss_err_clear(err);
			r = 0;
			continue;
		}
		if (r)
			break;
		struct ss_index_pack *ip = NULL;
		uint32_t np = 0;
		struct ss_err derr = {0};
		r = ss_index_read(s->ids, idx.keys[i], buf, len, &ip, &np, &derr);
		free(buf);
		if (r) {
			/* The packs describe themselves: those this object listed
			 * are read below like an interrupted push's, and this
			 * push's index object covers them again. `snapstream
			 * check --repair` removes the damaged object. */
			r = 0;
			continue;
		}
		for (uint32_t p = 0; !r && p < np; p++)
			if (!ss_gcstate_find(&s->hidden, ip[p].pack_id))
				r = add_pack_entries(s, d, ip[p].pack_id, ip[p].pack_size,
						     ip[p].entries, ip[p].count);
		ss_index_free(ip, np);
		s->nindex_objects++;
		if (r)
			ss_err_set(err, r, "cannot load the store index: %s", strerror(-r));
	}
	if (!r)
		r = ss_list_keys(s->b, l, s->uri, "packs/", &packs, &s->requests, err);
	for (size_t i = 0; !r && i < packs.n; i++) {
		const char *base = strrchr(packs.keys[i], '/');
		uint8_t id[16];
		uint32_t known;
		if (!base || ss_unhex(base + 1, id, 16))
			continue;   /* not a pack: ignore foreign files */
		if (ss_store_pack_find(s, id, &known) == 0 || ss_gcstate_find(&s->hidden, id))
			continue;
		struct ss_pack_entry *e = NULL;
		uint32_t count = 0;
		uint64_t size = 0;
		struct ss_err perr = {0};
		int pr = read_pack_index(s, l, packs.keys[i], id, &e, &count, &size, &perr);
		if (pr) {
			/* A damaged orphan cannot be reused; 'check' reports it. */
			free(e);
			continue;
		}
		r = add_pack_entries(s, d, id, size, e, count);
		if (!r)
			r = ss_store_note_unindexed(s, id, size, e, count);
		else
			free(e);
	}
	ss_keylist_free(&idx);
	ss_keylist_free(&packs);
	return r;
}
