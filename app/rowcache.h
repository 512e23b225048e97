/*
 * rowcache.h - a small fixed-size cache of database rows, shared by the
 * threads of one process.
 *
 * Each slot holds one row (a fixed-size value) under its key, with the epoch
 * (epoch.h) and the time it was read. A lookup hits only when the key
 * matches, the epoch is the current one and the row is young enough; any
 * other lookup misses and the caller reads the database and puts the row.
 * Slots are chosen by a hash of the key (direct-mapped): a colliding key
 * simply replaces the older row. Keys longer than ROWCACHE_KEY_MAX are never
 * cached.
 */
#ifndef AIGW_ROWCACHE_H
#define AIGW_ROWCACHE_H

#include <stddef.h>
#include <stdint.h>

#define ROWCACHE_KEY_MAX 128

struct row_cache;

/* A cache of slots rows of value_size bytes; NULL when out of memory. */
struct row_cache *row_cache_new(size_t slots, size_t value_size);
void row_cache_free(struct row_cache *c);

/* 1 with the row copied to value when key's row was read under epoch less
 * than max_age_ms before now_ms; 0 otherwise. */
int row_cache_get(struct row_cache *c, const void *key, size_t klen, uint64_t epoch, int64_t now_ms,
                  int64_t max_age_ms, void *value);

/* Stores value as key's row, read under epoch at now_ms. */
void row_cache_put(struct row_cache *c, const void *key, size_t klen, uint64_t epoch,
                   int64_t now_ms, const void *value);

#endif
