/*
 * rowcache.c - the direct-mapped row cache (see rowcache.h).
 *
 * One mutex guards the table: a lookup holds it for a key compare and a copy
 * of one row, far shorter than the read transaction it saves.
 */
#include "rowcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    int used;
    size_t klen;
    unsigned char key[ROWCACHE_KEY_MAX];
    uint64_t epoch;
    int64_t loaded_ms;
};

struct row_cache {
    pthread_mutex_t mu;
    size_t n, value_size;
    struct slot *slots;
    unsigned char *values; /* n * value_size */
};

struct row_cache *row_cache_new(size_t slots, size_t value_size)
{
    struct row_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->n = slots ? slots : 1;
    c->value_size = value_size;
    c->slots = calloc(c->n, sizeof *c->slots);
    c->values = calloc(c->n, value_size);
    if (!c->slots || !c->values) {
        row_cache_free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void row_cache_free(struct row_cache *c)
{
    if (!c)
        return;
    if (c->slots)
        pthread_mutex_destroy(&c->mu);
    free(c->slots);
    free(c->values);
    free(c);
}

/* FNV-1a: keys are short (a SHA-256, a name), and need no secrecy here. */
static size_t slot_of(const struct row_cache *c, const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return (size_t)(h % c->n);
}

int row_cache_get(struct row_cache *c, const void *key, size_t klen, uint64_t epoch, int64_t now_ms,
                  int64_t max_age_ms, void *value)
{
    if (!c || klen > ROWCACHE_KEY_MAX)
        return 0;
    size_t i = slot_of(c, key, klen);
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    struct slot *s = &c->slots[i];
    if (s->used && s->klen == klen && memcmp(s->key, key, klen) == 0 && s->epoch == epoch &&
        now_ms - s->loaded_ms < max_age_ms && now_ms >= s->loaded_ms) {
        memcpy(value, c->values + i * c->value_size, c->value_size);
        hit = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void row_cache_put(struct row_cache *c, const void *key, size_t klen, uint64_t epoch,
                   int64_t now_ms, const void *value)
{
    if (!c || klen > ROWCACHE_KEY_MAX)
        return;
    size_t i = slot_of(c, key, klen);
    pthread_mutex_lock(&c->mu);
    struct slot *s = &c->slots[i];
    /* A row read under an older epoch than the one cached is already stale. */
    if (!(s->used && s->klen == klen && memcmp(s->key, key, klen) == 0 && s->epoch > epoch)) {
        s->used = 1;
        s->klen = klen;
        memcpy(s->key, key, klen);
        s->epoch = epoch;
        s->loaded_ms = now_ms;
        memcpy(c->values + i * c->value_size, value, c->value_size);
    }
    pthread_mutex_unlock(&c->mu);
}
