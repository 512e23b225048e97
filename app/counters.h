/*
 * counters.h - the counter rows of one group-committed batch, added up
 * before they are written.
 *
 * Every settled request adds to the Prometheus counters (table metrics) and
 * to the rollups the reports read (usage_daily, usage_hourly, backend_hourly,
 * latency_hourly). Written one upsert per addition, that is about ten writes
 * per request. Inside a batch most additions land on the same few rows (the
 * same route, backend, hour and often user), so the batch sums them here and
 * writes each distinct row once, in the batch's own transaction: the counts
 * stay exactly as durable as the audit rows they describe.
 *
 * Additions are staged per operation: counters_op_commit keeps an
 * operation's additions once its SQL has succeeded, counters_op_abort drops
 * them when its savepoint was rolled back, so a failed operation adds nothing.
 */
#ifndef AIGW_COUNTERS_H
#define AIGW_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

struct store;

enum counter_kind {
    COUNTER_METRIC,       /* metrics(name, labels) += value */
    COUNTER_USAGE,        /* usage_daily(day, user): requests, succeeded, failed, refused, tokens */
    COUNTER_TRAFFIC,      /* usage_hourly(hour): the same counts for all users */
    COUNTER_BACKEND_HOUR, /* backend_hourly(hour, backend): attempts, failures, answered,
                             failed_over */
    COUNTER_LATENCY,      /* latency_hourly(hour, backend, bucket): calls */
};

#define COUNTER_VALUES 7

struct counter {
    enum counter_kind kind;
    int64_t t;     /* day or hour start in ms (0 for metrics) */
    char *k1;      /* metric name, user or backend; owned */
    char *k2;      /* metric labels; owned, NULL for the others */
    double bucket; /* latency bucket in ms */
    double metric; /* the metric's delta */
    int64_t v[COUNTER_VALUES];
    uint32_t hash;
    int next; /* hash chain, index into rows, -1 at the end */
};

struct counters {
    struct counter *rows; /* rows[0..n_kept) are committed; [n_kept..n) staged */
    size_t n, n_kept, cap;
    int *slots; /* open hash over the committed rows */
    size_t n_slots;
};

/* Empties c for a new batch, keeping its memory. */
void counters_reset(struct counters *c);
void counters_free(struct counters *c);

/* Stage an addition for the current operation. Return 0, or -1 out of memory. */
int counters_add_metric(struct counters *c, const char *name, const char *labels, double delta);
/* One request started at at_ms: its user's day (usage_daily) and its hour
 * (usage_hourly). */
int counters_add_usage(struct counters *c, int64_t at_ms, const char *user, int succeeded,
                       int failed, int refused, int64_t prompt, int64_t completion, int64_t total);
int counters_add_backend_call(struct counters *c, int64_t hour_ms, const char *backend, int failed,
                              int answered, int failed_over, double bucket_ms);

/* The current operation succeeded: fold its staged additions into the batch. */
int counters_op_commit(struct counters *c);
/* The current operation was rolled back: forget its staged additions. */
void counters_op_abort(struct counters *c);

/* Writes every row of the batch through s (inside its transaction). 0 or -1. */
int counters_flush(struct counters *c, struct store *s);

#endif
