/* claims — the host's table of chunks that running pushes are storing
 * (claims.h; docs/DESIGN.md, "Concurrent pushes into one store").
 *
 * The table is a file in /dev/shm mapped by every push into the store: a
 * header with one record per running push ("owner"), then open-addressed
 * slots of one cache line, keyed by chunk id. A slot's state word carries
 * its kind, the owner index and the owner's generation, and for a landed
 * chunk the table's landing sequence number; readers copy a slot like a
 * seqlock (state, fields, state again) and writers publish with a release
 * store, so no lock is taken per chunk. An owner holds an OFD lock on the
 * byte of its index for as long as it runs: the kernel drops it when the
 * process dies, which is how the others tell a claimer that is gone.
 */
#include "claims.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "xxh.h"

#define MAGIC 0x316d6c6370616e73ull     /* "snapclm1" */
#define VERSION 1u
#define NOWNERS 256u                    /* pushes at once on one host */
#define NSLOTS (1u << 16)               /* 4 MiB of slots, touched as used */
#define PROBE 64u                       /* slots looked at per id */
#define HDR_SIZE 8192u
#define FILE_SIZE ((off_t)HDR_SIZE + (off_t)NSLOTS * 64)
#define REG_BYTE NOWNERS                /* lock byte serializing joins */

/* State word: kind (2 bits), owner (8), owner generation (22), sequence
 * number of the landing (32). */
enum { K_EMPTY = 0, K_BUSY = 1, K_CLAIMED = 2, K_LANDED = 3 };
#define GEN_MASK ((1u << 22) - 1)
#define MK(k, o, g, s) ((uint64_t)(k) | (uint64_t)(o) << 2 | (uint64_t)((g) & GEN_MASK) << 10 | \
			(uint64_t)(uint32_t)(s) << 32)
#define KIND(w) ((unsigned)((w) & 3))
#define OWNER(w) ((unsigned)((w) >> 2) & 0xff)
#define GEN(w) ((uint32_t)((w) >> 10) & GEN_MASK)
#define SEQ(w) ((uint32_t)((w) >> 32))

struct owner {
	_Atomic uint32_t gen;
	uint32_t pad;
	_Atomic uint64_t start_seq;
};

struct hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t nslots;
	_Atomic uint64_t seq;       /* landings so far; starts at 1 */
	/* Owners that joined and have not left, a bit each (one killed stays
	 * until the table is reset, which only keeps its start binding). */
	_Atomic uint64_t members[NOWNERS / 64];
	uint8_t pad[8];
	struct owner owner[NOWNERS];
};

/* w[0..1] id, w[2..3] pack id, w[4] offset | stored_len << 32,
 * w[5] frame_off | codec << 32. */
struct slot {
	_Atomic uint64_t state;
	_Atomic uint64_t w[6];
	uint64_t pad;
};

_Static_assert(sizeof(struct hdr) <= HDR_SIZE, "claims header");
_Static_assert(sizeof(struct slot) == 64, "claims slot");

struct ss_claims {
	char path[128];
	int fd;
	uint8_t *map;
	struct hdr *h;
	struct slot *slots;
	unsigned me;
	uint32_t gen;
	uint32_t start;             /* table sequence when this push joined */
	uint32_t reclaim_below;     /* landings at or before this no push needs */
	/* What the kernel last said of each owner's lock: generation, alive
	 * bit and when (ms), so that probing a table full of one running
	 * push's claims asks at most once per owner every LIVE_MS. */
	_Atomic uint64_t live[NOWNERS];
};

#define LIVE_MS 10

static int ofd_lock(int fd, int cmd, short type, off_t at)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
	return fcntl(fd, cmd, &fl) < 0 ? -errno : 0;
}

/* Whether another open file description holds lock byte `at`. */
static bool byte_held(int fd, off_t at)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = 1};
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return true;    /* cannot tell: treat the owner as running */
	return fl.l_type != F_UNLCK;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool alive(struct ss_claims *c, unsigned owner, uint32_t gen)
{
	if (owner == c->me)
		return gen == c->gen;
	if ((atomic_load(&c->h->owner[owner].gen) & GEN_MASK) != gen)
		return false;   /* the index has since gone to another push */
	/* live[]: gen (22 bits) | alive (1) | ms (41). A push that died is
	 * seen as running for at most LIVE_MS more: waiters only wait. */
	uint64_t t = now_ms(), v = atomic_load_explicit(&c->live[owner], memory_order_relaxed);
	if (v && (uint32_t)(v & GEN_MASK) == gen && t - (v >> 23) < LIVE_MS)
		return (v >> 22) & 1;
	bool held = byte_held(c->fd, owner);
	atomic_store_explicit(&c->live[owner], gen | (uint64_t)held << 22 | t << 23,
			      memory_order_relaxed);
	return held;
}

static void id_words(const uint8_t id[16], uint64_t w[2])
{
	memcpy(w, id, 16);
}

/* A consistent copy of slot s: its state and words. A slot is K_BUSY only
 * for the few instructions that write its id, so readers wait it out;
 * unless its writer died there, which leaves it K_BUSY (words zero) and
 * free to take. */
static uint64_t slot_read(struct ss_claims *c, const struct slot *s, uint64_t w[6])
{
	for (;;) {
		uint64_t a = atomic_load_explicit(&s->state, memory_order_acquire);
		if (KIND(a) == K_BUSY) {
			if (!alive(c, OWNER(a), GEN(a))) {
				memset(w, 0, sizeof(uint64_t) * 6);
				return a;
			}
			sched_yield();
			continue;
		}
		for (int i = 0; i < 6; i++)
			w[i] = atomic_load_explicit(&s->w[i], memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&s->state, memory_order_relaxed) == a)
			return a;
	}
}

/* Take slot s (whose state was `was`) for id. */
static bool slot_take(struct ss_claims *c, struct slot *s, uint64_t was, const uint64_t id[2])
{
	if (!atomic_compare_exchange_strong(&s->state, &was, MK(K_BUSY, c->me, c->gen, 0)))
		return false;
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&s->w[0], id[0], memory_order_relaxed);
	atomic_store_explicit(&s->w[1], id[1], memory_order_relaxed);
	atomic_store_explicit(&s->state, MK(K_CLAIMED, c->me, c->gen, 0), memory_order_release);
	return true;
}

/* Landed after this push joined: a pack it may name (it began before gc
 * could have hidden that pack). Sequence numbers are 32-bit; a table
 * lives only while some push uses it. */
static bool landed_since_start(const struct ss_claims *c, uint64_t st)
{
	return (int32_t)(SEQ(st) - c->start) > 0;
}

/* Who may still need a landing: only a push that joined before it (one
 * that joined later finds its pack in the store, or has no use for the
 * location). So a landing of owner O is free to reuse once every member
 * of the table other than O joined after it. `first` and `second` are the
 * members' earliest and second earliest starts (`first_owner` the
 * owner of the first), or the table's sequence number when there are
 * none. A push alone in the table thus reuses its own landed slots and
 * never fills it, however many new chunks it stores; two pushes reuse
 * what either landed before the other joined. */
struct starts {
	bool known;
	uint32_t first, second;
	unsigned first_owner;
};

static void member_starts(struct ss_claims *c, struct starts *m)
{
	/* The sequence number first: a push that becomes a member after the
	 * bits are read starts at or after it. */
	uint32_t q = (uint32_t)atomic_load(&c->h->seq);
	*m = (struct starts){.known = true, .first = q, .second = q, .first_owner = NOWNERS};
	for (unsigned w = 0; w < NOWNERS / 64; w++) {
		uint64_t bits = atomic_load(&c->h->members[w]);
		while (bits) {
			unsigned i = w * 64 + (unsigned)__builtin_ctzll(bits);
			bits &= bits - 1;
			uint32_t st = (uint32_t)atomic_load(&c->h->owner[i].start_seq);
			if ((int32_t)(st - m->first) < 0) {
				m->second = m->first;
				m->first = st;
				m->first_owner = i;
			} else if ((int32_t)(st - m->second) < 0) {
				m->second = st;
			}
		}
	}
}

static bool reusable(struct ss_claims *c, uint64_t st, struct starts *m)
{
	if (KIND(st) == K_LANDED) {
		if ((int32_t)(SEQ(st) - c->reclaim_below) <= 0)
			return true;
		if (!m->known)
			member_starts(c, m);
		uint32_t bound = OWNER(st) == m->first_owner ? m->second : m->first;
		return (int32_t)(SEQ(st) - bound) <= 0;
	}
	return (KIND(st) == K_CLAIMED || KIND(st) == K_BUSY) && !alive(c, OWNER(st), GEN(st));
}

void ss_claims_populate(struct ss_claims *c)
{
	/* Kernels before 5.14 refuse the advice; the pages then fault in as
	 * they are touched, as without it. */
	(void)madvise(c->map, (size_t)FILE_SIZE, MADV_POPULATE_WRITE);
}

int ss_claims_claim(struct ss_claims *c, const uint8_t id[16], uint32_t *ref)
{
	uint64_t want[2], w[6];
	id_words(id, want);
	uint32_t base = (uint32_t)want[0] & (NSLOTS - 1);
	struct slot *cand = NULL;
	uint64_t cand_st = 0;
	struct starts m = {.known = false};
	for (uint32_t p = 0; p < PROBE; p++) {
		uint32_t i = (base + p) & (NSLOTS - 1);
		struct slot *s = &c->slots[i];
		for (;;) {
			uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
			if (KIND(st) == K_EMPTY) {
				if (slot_take(c, s, st, want))
					return SS_CLAIM_MINE;
				continue;
			}
			st = slot_read(c, s, w);
			if (w[0] != want[0] || w[1] != want[1]) {
				if (!cand && reusable(c, st, &m)) {
					cand = s;
					cand_st = st;
				}
				break;  /* another id: probe on */
			}
			if (KIND(st) == K_CLAIMED && OWNER(st) != c->me &&
			    alive(c, OWNER(st), GEN(st))) {
				*ref = i;
				return SS_CLAIM_THEIRS;
			}
			if (KIND(st) == K_LANDED && landed_since_start(c, st)) {
				*ref = i;
				return SS_CLAIM_THEIRS;
			}
			/* Its claimer is gone, or it landed in a pack this
			 * push's view of the store lacks (hidden by gc): take
			 * it over. */
			uint64_t was = st;
			if (atomic_compare_exchange_strong(&s->state, &was,
							   MK(K_CLAIMED, c->me, c->gen, 0)))
				return SS_CLAIM_MINE;
		}
	}
	if (cand && slot_take(c, cand, cand_st, want))
		return SS_CLAIM_MINE;
	return SS_CLAIM_NONE;
}

void ss_claims_landed(struct ss_claims *c, const uint8_t id[16], const struct ss_claim_loc *loc)
{
	uint64_t want[2], w[6];
	id_words(id, want);
	uint32_t base = (uint32_t)want[0] & (NSLOTS - 1);
	uint64_t mine = MK(K_CLAIMED, c->me, c->gen, 0);
	for (uint32_t p = 0; p < PROBE; p++) {
		struct slot *s = &c->slots[(base + p) & (NSLOTS - 1)];
		uint64_t st = slot_read(c, s, w);
		if (KIND(st) == K_EMPTY)
			return;
		if (st != mine || w[0] != want[0] || w[1] != want[1])
			continue;
		uint64_t pk[2];
		memcpy(pk, loc->pack_id, 16);
		atomic_store_explicit(&s->w[2], pk[0], memory_order_relaxed);
		atomic_store_explicit(&s->w[3], pk[1], memory_order_relaxed);
		atomic_store_explicit(&s->w[4], loc->offset | (uint64_t)loc->stored_len << 32,
				      memory_order_relaxed);
		atomic_store_explicit(&s->w[5], loc->frame_off | (uint64_t)loc->codec << 32,
				      memory_order_relaxed);
		uint64_t seq = atomic_fetch_add(&c->h->seq, 1) + 1;
		atomic_store_explicit(&s->state, MK(K_LANDED, c->me, c->gen, seq),
				      memory_order_release);
		return;
	}
}

int ss_claims_poll(struct ss_claims *c, uint32_t ref, const uint8_t id[16],
		   struct ss_claim_loc *loc)
{
	uint64_t want[2], w[6];
	if (ref >= NSLOTS)
		return -ENOENT;
	id_words(id, want);
	uint64_t st = slot_read(c, &c->slots[ref], w);
	if (w[0] != want[0] || w[1] != want[1])
		return -ENOENT;
	if (KIND(st) == K_LANDED) {
		if (!landed_since_start(c, st))
			return -ENOENT;
		memcpy(loc->pack_id, &w[2], 16);
		loc->offset = (uint32_t)w[4];
		loc->stored_len = (uint32_t)(w[4] >> 32);
		loc->frame_off = (uint32_t)w[5];
		loc->codec = (uint8_t)(w[5] >> 32);
		return 0;
	}
	if (KIND(st) == K_CLAIMED && OWNER(st) != c->me && alive(c, OWNER(st), GEN(st)))
		return -EAGAIN;
	return -ENOENT;
}

#define NAME_PREFIX "snapstream-claims-"

/* The table file: one per user and store, named by a hash of the store's
 * identity (another user's pushes never share it, nor stand in its way). */
static int open_file(const char *identity, char path[128], int *out)
{
	XXH128_hash_t h = XXH3_128bits(identity, strlen(identity));
	snprintf(path, 128, "/dev/shm/" NAME_PREFIX "%u-%016llx%016llx", (unsigned)geteuid(),
		 (unsigned long long)h.high64, (unsigned long long)h.low64);
	int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	struct stat st;
	/* Another user's table could feed this push false locations. */
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 077)) {
		close(fd);
		return -EPERM;
	}
	*out = fd;
	return 0;
}

int ss_claims_open(const char *identity, struct ss_claims **out)
{
	struct ss_claims *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->map = MAP_FAILED;
	bool regd = false;
	struct stat st;
	int r;
	/* The last push to leave a table unlinks it (under REG_BYTE): a file
	 * opened just before that is retried, so that every push joins the
	 * table under the name. */
	for (int tries = 0;; tries++) {
		if ((r = open_file(identity, c->path, &c->fd))) {
			free(c);
			return r;
		}
		if ((r = ofd_lock(c->fd, F_OFD_SETLKW, F_WRLCK, REG_BYTE)))
			goto fail;
		regd = true;
		if (fstat(c->fd, &st) < 0) {
			r = -errno;
			goto fail;
		}
		if (st.st_nlink > 0)
			break;
		if (tries == 8) {
			r = -ESTALE;
			goto fail;
		}
		ofd_lock(c->fd, F_OFD_SETLK, F_UNLCK, REG_BYTE);
		regd = false;
		close(c->fd);
	}
	/* Joins are serialized by REG_BYTE, and an owner takes its byte while
	 * holding it: the owners seen here are every push in the table. */
	bool held[NOWNERS];
	unsigned others = 0;
	for (unsigned i = 0; i < NOWNERS; i++)
		others += held[i] = byte_held(c->fd, i);
	if (!others) {
		/* Nobody uses it: start empty, which also frees the pages the
		 * last pushes touched. */
		if (ftruncate(c->fd, 0) < 0 || ftruncate(c->fd, FILE_SIZE) < 0) {
			r = -errno;
			goto fail;
		}
	} else if (st.st_size != FILE_SIZE) {
		r = -EPROTO;
		goto fail;
	}
	c->map = mmap(NULL, (size_t)FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
	if (c->map == MAP_FAILED) {
		r = -errno;
		goto fail;
	}
	c->h = (struct hdr *)c->map;
	c->slots = (struct slot *)(c->map + HDR_SIZE);
	if (!others) {
		c->h->magic = MAGIC;
		c->h->version = VERSION;
		c->h->nslots = NSLOTS;
		atomic_store(&c->h->seq, 1);
	} else if (c->h->magic != MAGIC || c->h->version != VERSION || c->h->nslots != NSLOTS) {
		r = -EPROTO;
		goto fail;
	}
	r = -EUSERS;
	for (unsigned i = 0; i < NOWNERS && r; i++)
		if (!held[i] && ofd_lock(c->fd, F_OFD_SETLK, F_WRLCK, i) == 0) {
			c->me = i;
			r = 0;
		}
	if (r)
		goto fail;
	c->gen = (atomic_fetch_add(&c->h->owner[c->me].gen, 1) + 1) & GEN_MASK;
	c->start = (uint32_t)atomic_load(&c->h->seq);
	atomic_store(&c->h->owner[c->me].start_seq, c->start);
	/* A member once its start is there to read (member_starts). */
	atomic_fetch_or(&c->h->members[c->me / 64], 1ull << (c->me % 64));
	c->reclaim_below = c->start;
	for (unsigned i = 0; i < NOWNERS; i++)
		if (held[i]) {
			uint32_t s = (uint32_t)atomic_load(&c->h->owner[i].start_seq);
			if ((int32_t)(s - c->reclaim_below) < 0)
				c->reclaim_below = s;
		}
	ofd_lock(c->fd, F_OFD_SETLK, F_UNLCK, REG_BYTE);
	*out = c;
	return 0;
fail:
	if (c->map != MAP_FAILED)
		munmap(c->map, (size_t)FILE_SIZE);
	if (regd)
		ofd_lock(c->fd, F_OFD_SETLK, F_UNLCK, REG_BYTE);
	close(c->fd);
	free(c);
	return r;
}

/* Remove the table at path if no push uses it: under its join lock, as
 * the last push to leave does. */
static bool remove_unused(const char *path, unsigned max_age_s)
{
	int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return false;
	struct stat st;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	bool gone = false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
	    now.tv_sec - st.st_mtim.tv_sec >= (time_t)max_age_s &&
	    now.tv_sec - st.st_ctim.tv_sec >= (time_t)max_age_s &&
	    ofd_lock(fd, F_OFD_SETLK, F_WRLCK, REG_BYTE) == 0) {
		bool used = false;
		for (unsigned i = 0; i < NOWNERS && !used; i++)
			used = byte_held(fd, i);
		gone = !used && unlink(path) == 0;
		ofd_lock(fd, F_OFD_SETLK, F_UNLCK, REG_BYTE);
	}
	close(fd);
	return gone;
}

int ss_claims_sweep(unsigned max_age_s)
{
	char mine[64];
	snprintf(mine, sizeof(mine), NAME_PREFIX "%u-", (unsigned)geteuid());
	DIR *d = opendir("/dev/shm");
	if (!d)
		return 0;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char path[300];
		if (strncmp(de->d_name, mine, strlen(mine)) != 0 ||
		    snprintf(path, sizeof(path), "/dev/shm/%s", de->d_name) >= (int)sizeof(path))
			continue;
		n += remove_unused(path, max_age_s);
	}
	closedir(d);
	return n;
}

void ss_claims_close(struct ss_claims *c)
{
	if (!c)
		return;
	atomic_fetch_and(&c->h->members[c->me / 64], ~(1ull << (c->me % 64)));
	munmap(c->map, (size_t)FILE_SIZE);
	/* Leave: what we claimed and did not land is free from now on. */
	ofd_lock(c->fd, F_OFD_SETLK, F_UNLCK, c->me);
	/* The last push out removes the table, which gives its memory back
	 * and leaves nothing behind in /dev/shm. Without waiting: a push
	 * joining meanwhile owns the table now. */
	if (ofd_lock(c->fd, F_OFD_SETLK, F_WRLCK, REG_BYTE) == 0) {
		bool others = false;
		for (unsigned i = 0; i < NOWNERS && !others; i++)
			others = byte_held(c->fd, i);
		if (!others)
			unlink(c->path);
		ofd_lock(c->fd, F_OFD_SETLK, F_UNLCK, REG_BYTE);
		/* Rare (the last push out) and cheap: also collect what pushes
		 * killed while alone left for other stores, which would hold
		 * their pages until the next push there, or the next boot. */
		if (!others)
			ss_claims_sweep(600);
	}
	close(c->fd);
	free(c);
}
