/* check — the structures `snapstream check` builds while it reads a
 * store, shared by the files that make it up (docs/DESIGN.md, "Module
 * map"):
 *
 *   check.c       the order of the passes, findings, snapshots, verdicts
 *   checkstore.c  the store's own objects: config, gc records, packs' own
 *                 indexes, index objects
 *   checkdeep.c   --deep: every chunk read and hashed
 *   repair.c      --repair
 */
#ifndef SS_ENGINE_CHECK_H
#define SS_ENGINE_CHECK_H

#include "admin.h"

#define PACK_BATCH 64
/* One suffix GET this long holds the trailer and index of a pack of up to
 * ~2000 chunks (a 32 MiB pack of 64 KiB chunks has ~500). */
#define TAIL_GUESS (64u << 10)
#define CONFIG_MAX 4096
#define RECORD_MAX (256u << 20)
/* Packs set aside under damaged/ are copied through memory. */
#define QUARANTINE_MAX (256u << 20)
/* A fresh index object lists at most this many packs, so that it stays
 * far below SS_INDEX_MAX_SIZE. */
#define INDEX_PACKS_MAX 4096
#define SNAPS_NAMED 3

enum pstate {
	P_OK = 0,      /* own trailer and index parse */
	P_DAMAGED,     /* they do not */
	P_MISSING,     /* named by a snapshot or an index object, not in the store */
};

struct cpack {
	uint8_t id[16];                 /* first: sorted and searched by it */
	uint64_t size;
	uint64_t data_end;              /* index_offset: chunk data ends here */
	uint32_t count;
	struct ss_pack_entry *entries;  /* P_OK: the pack's own index */
	uint8_t *bad;                   /* deep: 1 for each entry that failed */
	char *why;                      /* P_DAMAGED, or the first deep failure */
	uint64_t bad_chunks;            /* deep */
	uint8_t state;
	bool listed;                    /* in the packs/ listing */
	bool in_index;                  /* listed by some readable index object */
	bool indexed;                   /* listed by an index object that is kept */
	bool hidden;                    /* in gc/state */
	bool tomb;                      /* listed by a gc/removed/ record */
	uint32_t nrefs;                 /* snapshots referencing it */
	uint32_t snaps[SNAPS_NAMED];    /* the first of them (C->snaps) */
	size_t finding;                 /* its finding + 1, or 0 */
};

struct cfinding {
	struct ss_check_finding f;
	char *object, *snapshot, *message;
};

struct cindex {
	char *key;
	size_t finding;                 /* + 1 when damaged or stale, else 0 */
};

struct check {
	struct ss_cfg cfg;
	const struct ss_check_opts *opts;
	struct ss_check_stats *st;
	struct ss_err *err;
	struct ss_loop *loop;
	struct ss_backend *b;
	const char *store;
	bool locked;
	/* config */
	bool config_ok;                 /* readable (or absent: plain ids) */
	bool keyed;
	uint8_t key_check[16];
	bool sealed;                    /* config version 2: C->ids holds its keys */
	const struct ss_idkey *ids;     /* how this store's chunk ids are made */
	/* gc records */
	struct ss_gcstate hidden;
	size_t state_finding;           /* + 1 when gc/state is damaged */
	char **tomb_bad;                /* keys of damaged gc/removed/ records */
	size_t *tomb_bad_finding;
	size_t ntomb_bad;
	/* packs, sorted by id */
	struct cpack *packs;
	size_t npacks, packs_cap;
	struct cindex *idx;
	size_t nidx;
	/* snapshots checked, for messages */
	char **snaps;
	size_t nsnaps, snaps_cap;
	char **ref_missing;             /* snapshots beside the store without a ref */
	size_t *ref_missing_finding;
	size_t nref_missing;
	size_t unindexed_finding;       /* + 1 */
	struct cfinding *f;
	size_t nf, fcap;
	struct ss_progress prog;
	struct ss_ticker ticker;
};

/* check.c: record a finding; returns its number + 1 (for repair to mark),
 * or 0 when memory ran out (C->err set). */
size_t check_finding(struct check *C, enum ss_check_kind kind, bool problem, const char *object,
		     const char *snapshot, uint64_t chunks, uint64_t bytes, const char *fmt, ...)
	__attribute__((format(printf, 8, 9)));
/* Mark finding fi (+1) repaired, saying how. */
void check_repaired(struct check *C, size_t fi, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Set C->err to "out of memory"; returns -ENOMEM. */
int check_oom(struct check *C);
/* The live snapshots (live.c); report: a bad ref becomes a finding. */
int check_live_read(struct check *C, bool report, struct ss_live *lv);

/* checkstore.c: the pack table (sorted by id) and the store's objects. */
int check_cmp_id(const void *a, const void *b);
struct cpack *check_pack_find(const struct check *C, const uint8_t id[16]);
void check_pack_clear(struct cpack *p);
/* Give every id a row, reading the packs the listing did not show.
 * Pointers into C->packs do not survive this call. */
int check_ensure_packs(struct check *C, const uint8_t (*ids)[16], size_t n);
int check_read_config(struct check *C);
int check_read_gc_state(struct check *C);
int check_read_tombstones(struct check *C);
int check_read_all_packs(struct check *C);
int check_read_all_index(struct check *C);

/* checkdeep.c */
int check_deep(struct check *C);

/* repair.c */
int check_repair(struct check *C);

#endif
