/*
 * admission_cache.c - a batch's subjects and their rows (see admission_cache.h).
 *
 * A small open-addressing hash by user id, rebuilt twice as large when half
 * full: a batch holds at most a few hundred subjects.
 */
#include "admission_cache.h"

#include <stdlib.h>
#include <string.h>

static size_t slot_of(const struct admission_cache *c, const char *user)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)user; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h & (c->n_slots - 1);
}

void admission_cache_clear(struct admission_cache *c)
{
    for (size_t i = 0; c->n && i < c->n_slots; i++) {
        free(c->slots[i].user);
        c->slots[i].user = NULL;
    }
    c->n = 0;
}

void admission_cache_free(struct admission_cache *c)
{
    admission_cache_clear(c);
    free(c->slots);
    memset(c, 0, sizeof *c);
}

struct admission_entry *admission_cache_find(const struct admission_cache *c, const char *user)
{
    if (!c->n)
        return NULL;
    for (size_t i = slot_of(c, user);; i = (i + 1) & (c->n_slots - 1)) {
        struct admission_entry *e = &c->slots[i];
        if (!e->user)
            return NULL;
        if (strcmp(e->user, user) == 0)
            return e;
    }
}

static int grow(struct admission_cache *c)
{
    size_t n_slots = c->n_slots ? c->n_slots * 2 : 64;
    struct admission_entry *slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return -1;
    struct admission_cache bigger = {slots, n_slots, c->n};
    for (size_t i = 0; i < c->n_slots; i++) {
        if (!c->slots[i].user)
            continue;
        size_t j = slot_of(&bigger, c->slots[i].user);
        while (slots[j].user)
            j = (j + 1) & (n_slots - 1);
        slots[j] = c->slots[i];
    }
    free(c->slots);
    *c = bigger;
    return 0;
}

int admission_cache_put(struct admission_cache *c, const char *user, int64_t period,
                        const struct admission_state *st)
{
    struct admission_entry *e = admission_cache_find(c, user);
    if (!e) {
        if ((c->n + 1) * 2 > c->n_slots && grow(c) < 0)
            return -1;
        size_t i = slot_of(c, user);
        while (c->slots[i].user)
            i = (i + 1) & (c->n_slots - 1);
        e = &c->slots[i];
        if (!(e->user = strdup(user)))
            return -1;
        c->n++;
    }
    e->period = period;
    e->st = e->read = *st;
    e->dirty = 0;
    return 0;
}

struct admission_entry *admission_cache_next_dirty(const struct admission_cache *c, size_t *i)
{
    for (; c->n && *i < c->n_slots; (*i)++)
        if (c->slots[*i].user && c->slots[*i].dirty)
            return &c->slots[(*i)++];
    return NULL;
}
