/*
 * admission_cache.h - what a batch's admissions decide on, read in one
 * question at the start of the batch (PostgreSQL).
 *
 * An admission reads its subject's two rate states and budget row, then
 * decides. On SQLite that read costs microseconds; on PostgreSQL it is a
 * round trip, and the leader of a batch of 30 admissions would wait for 30 of
 * them one after the other while holding the hosts' writer lock. So the
 * leader reads the rows of every subject in the batch at once, inside the
 * transaction and after the lock (nobody else can change them then), and
 * keeps them here; every write of those rows within the batch (rate_state,
 * budget_usage, the settlement) updates its entry, so each admission sees
 * exactly what it would have read. Rolling back empties the cache.
 *
 * The entry also stands in for the rows' writes: a batch's thirty
 * admissions and settlements of one subject change its budget row and rate
 * states thirty times, and on PostgreSQL each change is a new row version
 * that the next one must step over. So the writes mark the entry dirty, and
 * the commit writes each dirty row once (store.c, flush_admissions), as the
 * difference from what was read: the same rows, exactly as durable.
 */
#ifndef AIGW_ADMISSION_CACHE_H
#define AIGW_ADMISSION_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

enum {
    ADMISSION_DIRTY_BUDGET = 1,       /* st's budget row differs from read's */
    ADMISSION_DIRTY_TAT_REQUESTS = 2, /* st.tat_requests_us is to be written */
    ADMISSION_DIRTY_TAT_TOKENS = 4,   /* st.tat_tokens_us is to be written */
};

struct admission_entry {
    char *user;                  /* owned; NULL: a free slot */
    int64_t period;              /* the budget period whose row st holds */
    struct admission_state st;   /* the rows as the batch has them now */
    struct admission_state read; /* ... and as they were read */
    unsigned dirty;              /* ADMISSION_DIRTY_*: what the commit writes */
};

struct admission_cache {
    struct admission_entry *slots; /* open addressing, a power of two */
    size_t n_slots, n;
};

/* Forgets every entry, keeping the memory. */
void admission_cache_clear(struct admission_cache *c);
void admission_cache_free(struct admission_cache *c);
/* Adds (or replaces) user's entry. 0, or -1 out of memory (nothing cached). */
int admission_cache_put(struct admission_cache *c, const char *user, int64_t period,
                        const struct admission_state *st);
/* user's entry, or NULL. */
struct admission_entry *admission_cache_find(const struct admission_cache *c, const char *user);
/* The next entry with something to write at or after slot *i, or NULL when
 * none is left; *i then points past it. Start with *i = 0. */
struct admission_entry *admission_cache_next_dirty(const struct admission_cache *c, size_t *i);

#endif
