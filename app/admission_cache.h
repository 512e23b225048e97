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
 */
#ifndef AIGW_ADMISSION_CACHE_H
#define AIGW_ADMISSION_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct admission_entry {
    char *user;     /* owned; NULL: a free slot */
    int64_t period; /* the budget period whose row st holds */
    struct admission_state st;
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

#endif
