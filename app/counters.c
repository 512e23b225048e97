/*
 * counters.c - summing a batch's counter rows (see counters.h).
 *
 * A plain array of rows with a chained hash over the committed ones. A batch
 * holds at most a few thousand additions, so the table is rebuilt, doubled,
 * whenever it fills.
 */
#include "counters.h"

#include <stdlib.h>
#include <string.h>

#include "store.h"

static uint32_t fnv(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static uint32_t row_hash(const struct counter *r)
{
    uint32_t h = 2166136261u;
    h = fnv(h, &r->kind, sizeof r->kind);
    h = fnv(h, &r->t, sizeof r->t);
    h = fnv(h, r->k1, strlen(r->k1) + 1);
    if (r->k2)
        h = fnv(h, r->k2, strlen(r->k2) + 1);
    return fnv(h, &r->bucket, sizeof r->bucket);
}

static int same_row(const struct counter *a, const struct counter *b)
{
    return a->kind == b->kind && a->t == b->t && a->bucket == b->bucket &&
           strcmp(a->k1, b->k1) == 0 && (!a->k2 == !b->k2) && (!a->k2 || strcmp(a->k2, b->k2) == 0);
}

static void row_free(struct counter *r)
{
    free(r->k1);
    free(r->k2);
    r->k1 = r->k2 = NULL;
}

void counters_reset(struct counters *c)
{
    for (size_t i = 0; i < c->n; i++)
        row_free(&c->rows[i]);
    c->n = c->n_kept = 0;
    for (size_t i = 0; i < c->n_slots; i++)
        c->slots[i] = -1;
}

void counters_free(struct counters *c)
{
    counters_reset(c);
    free(c->rows);
    free(c->slots);
    memset(c, 0, sizeof *c);
}

/* A new staged row with its keys copied; NULL when out of memory. */
static struct counter *stage(struct counters *c, enum counter_kind kind, int64_t t, const char *k1,
                             const char *k2, double bucket)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct counter *rows = realloc(c->rows, cap * sizeof *rows);
        if (!rows)
            return NULL;
        c->rows = rows;
        c->cap = cap;
    }
    struct counter *r = &c->rows[c->n];
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->t = t;
    r->bucket = bucket;
    r->k1 = strdup(k1 ? k1 : "");
    r->k2 = k2 ? strdup(k2) : NULL;
    if (!r->k1 || (k2 && !r->k2)) {
        row_free(r);
        return NULL;
    }
    c->n++;
    return r;
}

int counters_add_metric(struct counters *c, const char *name, const char *labels, double delta)
{
    struct counter *r = stage(c, COUNTER_METRIC, 0, name, labels ? labels : "", 0);
    if (!r)
        return -1;
    r->metric = delta;
    return 0;
}

int counters_add_usage(struct counters *c, int64_t at_ms, const char *user, int succeeded,
                       int failed, int refused, int64_t prompt, int64_t completion, int64_t total)
{
    int64_t v[COUNTER_VALUES] = {1, succeeded, failed, refused, prompt, completion, total};
    struct counter *day = stage(c, COUNTER_USAGE, at_ms - at_ms % 86400000, user, NULL, 0);
    if (!day)
        return -1;
    memcpy(day->v, v, sizeof v);
    struct counter *hour = stage(c, COUNTER_TRAFFIC, at_ms - at_ms % 3600000, "", NULL, 0);
    if (!hour)
        return -1;
    memcpy(hour->v, v, sizeof v);
    return 0;
}

int counters_add_backend_call(struct counters *c, int64_t hour_ms, const char *backend, int failed,
                              int answered, int failed_over, double bucket_ms)
{
    struct counter *r = stage(c, COUNTER_BACKEND_HOUR, hour_ms, backend, NULL, 0);
    if (!r)
        return -1;
    r->v[0] = 1;
    r->v[1] = failed;
    r->v[2] = answered;
    r->v[3] = failed_over;
    if (!(r = stage(c, COUNTER_LATENCY, hour_ms, backend, NULL, bucket_ms)))
        return -1;
    r->v[0] = 1;
    return 0;
}

/* Rebuilds the hash over the committed rows with room for at least want. */
static int rehash(struct counters *c, size_t want)
{
    size_t n = c->n_slots ? c->n_slots : 64;
    while (n < want * 2)
        n *= 2;
    int *slots = realloc(c->slots, n * sizeof *slots);
    if (!slots)
        return -1;
    c->slots = slots;
    c->n_slots = n;
    for (size_t i = 0; i < n; i++)
        slots[i] = -1;
    for (size_t i = 0; i < c->n_kept; i++) {
        struct counter *r = &c->rows[i];
        size_t s = r->hash & (n - 1);
        r->next = slots[s];
        slots[s] = (int)i;
    }
    return 0;
}

int counters_op_commit(struct counters *c)
{
    if (c->n > c->n_slots / 2 && rehash(c, c->n) < 0) {
        counters_op_abort(c);
        return -1;
    }
    size_t staged = c->n_kept;
    size_t end = c->n;
    for (size_t i = staged; i < end; i++) {
        struct counter *r = &c->rows[i];
        r->hash = row_hash(r);
        size_t s = r->hash & (c->n_slots - 1);
        int j = c->slots[s];
        while (j >= 0 && !(c->rows[j].hash == r->hash && same_row(&c->rows[j], r)))
            j = c->rows[j].next;
        if (j >= 0) {
            struct counter *into = &c->rows[j];
            into->metric += r->metric;
            for (int k = 0; k < COUNTER_VALUES; k++)
                into->v[k] += r->v[k];
            row_free(r);
            continue;
        }
        /* A new distinct row: move it down to the end of the committed ones. */
        struct counter *dst = &c->rows[c->n_kept];
        if (dst != r) {
            *dst = *r;
            r->k1 = r->k2 = NULL;
        }
        dst->next = c->slots[s];
        c->slots[s] = (int)c->n_kept;
        c->n_kept++;
    }
    c->n = c->n_kept;
    return 0;
}

void counters_op_abort(struct counters *c)
{
    for (size_t i = c->n_kept; i < c->n; i++)
        row_free(&c->rows[i]);
    c->n = c->n_kept;
}

int counters_flush(struct counters *c, struct store *s)
{
    for (size_t i = 0; i < c->n_kept; i++) {
        const struct counter *r = &c->rows[i];
        int rc = 0;
        switch (r->kind) {
        case COUNTER_METRIC: rc = store_metric_add(s, r->k1, r->k2, r->metric); break;
        case COUNTER_USAGE: rc = store_usage_add(s, r->t, r->k1, r->v); break;
        case COUNTER_TRAFFIC: rc = store_traffic_add(s, r->t, r->v); break;
        case COUNTER_BACKEND_HOUR:
            rc = store_backend_hour_add(s, r->t, r->k1, r->v[0], r->v[1], r->v[2], r->v[3]);
            break;
        case COUNTER_LATENCY: rc = store_latency_add(s, r->t, r->k1, r->bucket, r->v[0]); break;
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}
