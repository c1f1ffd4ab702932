/* claims — which running push stores a chunk, agreed between the pushes
 * of one host into one store.
 *
 * A push learns the store once, when it starts, so pushes that run at the
 * same time would each store the chunks they have in common. The pushes of
 * one host avoid that through a table in shared memory (/dev/shm, one file
 * per store, mode 0600, so only one user's pushes share it): before a push
 * stores a new chunk it claims the chunk's id there. A push that finds the
 * id claimed by another running push stores nothing and, before writing its
 * manifest, waits for the claimer's pack to land and takes the chunk's
 * location from the table; if the claimer died or gave up, it stores the
 * chunk itself (docs/DESIGN.md, "Concurrent pushes into one store").
 *
 * Nothing depends on the table for safety: a full table, a missing
 * /dev/shm or a push that is slow to land only cost dedup. A location is
 * taken only from an entry whose pack landed after the reader started
 * (the same rule gc's grace period relies on), with its id checked.
 *
 * Thread-safety: ss_claims_claim and ss_claims_poll may run on any thread;
 * ss_claims_landed too. Processes coordinate through atomics in the
 * mapping and OFD locks on the file: a push holds one lock byte for its
 * life, so the kernel tells the others when it is gone.
 */
#ifndef SS_CLAIMS_H
#define SS_CLAIMS_H

#include <stdint.h>

struct ss_claims;

/* Where a landed chunk is: the fields a manifest records. */
struct ss_claim_loc {
	uint8_t pack_id[16];
	uint32_t offset;
	uint32_t stored_len;
	uint32_t frame_off;
	uint8_t codec;
};

enum ss_claim {
	SS_CLAIM_NONE = 0,    /* no room in the table: store it, uncoordinated */
	SS_CLAIM_MINE,        /* this push stores it */
	SS_CLAIM_THEIRS,      /* another push does: poll *ref */
};

/* Join the table of the store whose backend identity (ss_backend_identity)
 * is `identity`, creating or resetting it when no other push uses it.
 * Call before loading the store: entries that landed before this call are
 * never used. Returns 0, or -errno when the host has no usable table
 * (the push then goes on without). */
int ss_claims_open(const char *identity, struct ss_claims **out);

/* Leave the table. Chunks claimed and not landed become free to take.
 * The last push to leave removes the table, and then the tables of this
 * user's other stores that pushes killed while alone left behind
 * (ss_claims_sweep with an age of 600 s). */
void ss_claims_close(struct ss_claims *c);

/* Fault the whole table in now, for a push that will claim enough chunks
 * to touch most of its pages anyway (claims land on random slots): one
 * call instead of a fault per page. Best effort. */
void ss_claims_populate(struct ss_claims *c);

/* Remove this user's tables in /dev/shm that no push uses and that have
 * not changed for max_age_s seconds. Returns how many it removed. */
int ss_claims_sweep(unsigned max_age_s);

/* Claim id (a chunk this push found neither in the store nor in itself).
 * Returns an enum ss_claim; for SS_CLAIM_THEIRS, *ref names the entry. */
int ss_claims_claim(struct ss_claims *c, const uint8_t id[16], uint32_t *ref);

/* The chunk id, claimed by this push, is in a stored pack at loc. */
void ss_claims_landed(struct ss_claims *c, const uint8_t id[16], const struct ss_claim_loc *loc);

/* Where the chunk that entry ref held for id landed. Returns 0 with *loc,
 * -EAGAIN while its claimer still runs, or -ENOENT when the claim is lost
 * (claimer gone, entry reused): claim it again or store it. */
int ss_claims_poll(struct ss_claims *c, uint32_t ref, const uint8_t id[16],
		   struct ss_claim_loc *loc);

#endif
