/*
 * metrics.c - counters in the database, rendered for Prometheus (see metrics.h).
 *
 * Series:
 *   aigw_requests_total{route,status,backend}          counter
 *   aigw_tokens_total{user,direction}                  counter (input/output)
 *   aigw_refusals_total{reason}                        counter
 *   aigw_backend_attempts_total{backend,outcome}       counter
 *   aigw_backend_latency_seconds{backend}              histogram (per attempt)
 *   aigw_backend_breaker_state{backend}                gauge: 0 closed, 1 half-open, 2 open
 * The histogram's buckets are stored one row per bucket hit (not cumulative)
 * so an observation costs one write; rendering accumulates them.
 */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counters.h"
#include "db.h"
#include "store.h"
#include "worker.h"

static const double latency_buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define N_BUCKETS (sizeof latency_buckets / sizeof latency_buckets[0])

/* Appends name="value" with Prometheus label escaping. */
static void label(struct buf *b, const char *name, const char *value)
{
    if (b->len)
        buf_putc(b, ',');
    buf_printf(b, "%s=\"", name);
    for (const char *p = value ? value : ""; *p; p++) {
        if (*p == '\\' || *p == '"')
            buf_putc(b, '\\');
        if (*p == '\n') {
            buf_puts(b, "\\n");
            continue;
        }
        buf_putc(b, *p);
    }
    buf_putc(b, '"');
}

static int add(struct counters *c, const char *name, struct buf *labels, double v)
{
    return counters_add_metric(c, name, buf_cstr(labels), v);
}

/* Did this call work? A 4xx other than 429 is the caller's problem: it worked. */
static int attempt_ok(const struct attempt *a)
{
    return a->http_status >= 200 && a->http_status < 500 && a->http_status != 429 &&
           (!a->error[0] || (a->http_status >= 400 && a->http_status < 429));
}

/* The upper bound of a latency's bucket: three significant digits, so
 * percentiles from the buckets are within 1% of the exact ones. */
static double latency_bucket_ms(double ms)
{
    if (!(ms > 0.01))
        return 0.01;
    double scale = 1;
    while (ms >= 1000 * scale)
        scale *= 10;
    while (ms < 100 * scale)
        scale /= 10;
    return ceil(ms / scale) * scale;
}

int metrics_collect(struct request *req, int http_status, const char *status, struct counters *s)
{
    struct buf l = {0};
    char code[8];
    int rc = 0;
    snprintf(code, sizeof code, "%d", http_status);
    label(&l, "route", router_operation(req->route));
    label(&l, "status", code);
    label(&l, "backend", req->backend_name ? req->backend_name : "");
    rc |= add(s, "aigw_requests_total", &l, 1);
    const char *user = req->subject ? req->subject : req->caller.user_id;
    int by_user = req->w->cfg->telemetry.metrics_user_label;
    if (req->prompt_tokens > 0) {
        buf_reset(&l);
        if (by_user)
            label(&l, "user", user);
        label(&l, "direction", "input");
        rc |= add(s, "aigw_tokens_total", &l, (double)req->prompt_tokens);
    }
    if (req->completion_tokens > 0) {
        buf_reset(&l);
        if (by_user)
            label(&l, "user", user);
        label(&l, "direction", "output");
        rc |= add(s, "aigw_tokens_total", &l, (double)req->completion_tokens);
    }
    if (http_status == 429 || req->err == AIGW_ERR_BUDGET_EXCEEDED ||
        (!req->n_attempts && req->err != AIGW_OK)) {
        buf_reset(&l);
        label(&l, "reason", aigw_err_info(req->err)->code);
        rc |= add(s, "aigw_refusals_total", &l, 1);
    }
    rc |= counters_add_usage(s, req->start_ms, user ? user : "", strcmp(status, "success") == 0,
                             strcmp(status, "error") == 0, strcmp(status, "refused") == 0,
                             req->prompt_tokens, req->completion_tokens, req->total_tokens);
    int64_t hour = req->start_ms - req->start_ms % 3600000;
    for (int i = 0; i < req->n_attempts && i < MAX_ATTEMPTS_RECORDED; i++) {
        const struct attempt *a = &req->attempts[i];
        int ok = attempt_ok(a);
        int last = i == req->n_attempts - 1 || i == MAX_ATTEMPTS_RECORDED - 1;
        int answered = last && ok;
        rc |= counters_add_backend_call(s, hour, a->backend, !ok, answered, answered && i > 0,
                                        latency_bucket_ms(a->latency_ms));
        buf_reset(&l);
        label(&l, "backend", a->backend);
        label(&l, "outcome", ok ? "ok" : "failed");
        rc |= add(s, "aigw_backend_attempts_total", &l, 1);
        double secs = a->latency_ms / 1000.0;
        size_t k = 0;
        while (k < N_BUCKETS && secs > latency_buckets[k])
            k++;
        char le[16];
        if (k < N_BUCKETS)
            snprintf(le, sizeof le, "%g", latency_buckets[k]);
        else
            snprintf(le, sizeof le, "+Inf");
        buf_reset(&l);
        label(&l, "backend", a->backend);
        label(&l, "le", le);
        rc |= add(s, "aigw_backend_latency_seconds_hit", &l, 1);
        buf_reset(&l);
        label(&l, "backend", a->backend);
        rc |= add(s, "aigw_backend_latency_seconds_sum", &l, secs);
        rc |= add(s, "aigw_backend_latency_seconds_count", &l, 1);
    }
    buf_free(&l);
    return rc ? -1 : 0;
}

#define MAX_HIST_BACKENDS 64

struct histogram {
    char backend[128];
    double buckets[N_BUCKETS + 1]; /* hits per bucket, the last is +Inf */
    double sum, count;
};

struct render {
    struct buf *out;
    char last_name[64];
    struct histogram hist[MAX_HIST_BACKENDS];
    size_t n_hist;
};

static const char *help_for(const char *name)
{
    if (strcmp(name, "aigw_requests_total") == 0)
        return "Requests that reached the audit log, by route, HTTP status and answering backend.";
    if (strcmp(name, "aigw_tokens_total") == 0)
        return "Tokens used, by user and direction (input = prompt, output = completion).";
    if (strcmp(name, "aigw_refusals_total") == 0)
        return "Requests refused by validation, rate limits or budgets, by reason.";
    if (strcmp(name, "aigw_backend_attempts_total") == 0)
        return "Calls to backends, by backend and outcome.";
    return "aigw counter.";
}

/* Extracts the value of label key="..." from a rendered label set. */
static void label_value(const char *labels, const char *key, char *out, size_t n)
{
    char pat[32];
    snprintf(pat, sizeof pat, "%s=\"", key);
    const char *p = strstr(labels, pat);
    out[0] = '\0';
    if (!p)
        return;
    p += strlen(pat);
    size_t k = 0;
    while (*p && *p != '"' && k + 1 < n) {
        if (*p == '\\' && p[1])
            p++;
        out[k++] = *p++;
    }
    out[k] = '\0';
}

static struct histogram *histogram_for(struct render *r, const char *backend)
{
    for (size_t i = 0; i < r->n_hist; i++)
        if (strcmp(r->hist[i].backend, backend) == 0)
            return &r->hist[i];
    if (r->n_hist == MAX_HIST_BACKENDS)
        return NULL;
    struct histogram *h = &r->hist[r->n_hist++];
    memset(h, 0, sizeof *h);
    snprintf(h->backend, sizeof h->backend, "%s", backend);
    return h;
}

static void render_row(const char *name, const char *labels, double value, void *arg)
{
    struct render *r = arg;
    if (strncmp(name, "aigw_backend_latency_seconds_", 29) == 0) {
        char backend[128], le[32];
        label_value(labels, "backend", backend, sizeof backend);
        struct histogram *h = histogram_for(r, backend);
        if (!h)
            return;
        if (strcmp(name + 29, "sum") == 0)
            h->sum += value;
        else if (strcmp(name + 29, "count") == 0)
            h->count += value;
        else {
            label_value(labels, "le", le, sizeof le);
            size_t k = 0;
            double v = 0;
            if (strcmp(le, "+Inf") == 0 || sscanf(le, "%lf", &v) != 1)
                k = N_BUCKETS;
            else
                while (k < N_BUCKETS && latency_buckets[k] < v - 1e-12)
                    k++;
            h->buckets[k] += value;
        }
        return;
    }
    if (strcmp(name, r->last_name) != 0) {
        buf_printf(r->out, "# HELP %s %s\n# TYPE %s counter\n", name, help_for(name), name);
        snprintf(r->last_name, sizeof r->last_name, "%s", name);
    }
    buf_printf(r->out, "%s{%s} %.17g\n", name, labels, value);
}

static void render_histograms(struct render *r)
{
    buf_puts(r->out, "# HELP aigw_backend_latency_seconds Latency of each backend call.\n"
                     "# TYPE aigw_backend_latency_seconds histogram\n");
    for (size_t i = 0; i < r->n_hist; i++) {
        const struct histogram *h = &r->hist[i];
        double cum = 0;
        for (size_t k = 0; k <= N_BUCKETS; k++) {
            cum += h->buckets[k];
            if (k < N_BUCKETS)
                buf_printf(r->out,
                           "aigw_backend_latency_seconds_bucket{backend=\"%s\",le=\"%g\"} %.17g\n",
                           h->backend, latency_buckets[k], cum);
            else
                buf_printf(
                    r->out,
                    "aigw_backend_latency_seconds_bucket{backend=\"%s\",le=\"+Inf\"} %.17g\n",
                    h->backend, cum);
        }
        buf_printf(r->out, "aigw_backend_latency_seconds_sum{backend=\"%s\"} %.17g\n", h->backend,
                   h->sum);
        buf_printf(r->out, "aigw_backend_latency_seconds_count{backend=\"%s\"} %.17g\n", h->backend,
                   h->count);
    }
}

static void render_breaker(const char *name, enum breaker_state state, int failures, void *arg)
{
    struct buf *out = arg;
    int v = state == BREAKER_OPEN ? 2 : state == BREAKER_HALF_OPEN ? 1 : 0;
    buf_printf(out, "aigw_backend_breaker_state{backend=\"%s\"} %d\n", name, v);
    buf_printf(out, "aigw_backend_consecutive_failures{backend=\"%s\"} %d\n", name, failures);
}

int metrics_render(struct worker *w, struct buf *out)
{
    struct render *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->out = out;
    struct store *st = db_reader(w->db);
    if (!st) {
        free(r);
        return -1;
    }
    int rc = store_metric_each(st, render_row, r);
    if (rc == 0)
        render_histograms(r);
    free(r);
    if (rc < 0) {
        db_reader_done(w->db, st);
        return -1;
    }
    buf_puts(
        out,
        "# HELP aigw_backend_breaker_state Circuit breaker per backend: 0 closed, 1 half-open, 2 "
        "open.\n"
        "# TYPE aigw_backend_breaker_state gauge\n"
        "# HELP aigw_backend_consecutive_failures Failures counted toward opening the breaker.\n"
        "# TYPE aigw_backend_consecutive_failures gauge\n");
    /* Every configured backend appears, closed until the database says otherwise. */
    for (size_t i = 0; i < w->cfg->n_backends; i++) {
        struct breaker_row row;
        if (store_breaker_get(st, w->cfg->backends[i].name, &row) < 0) {
            db_reader_done(w->db, st);
            return -1;
        }
        render_breaker(w->cfg->backends[i].name, row.state, row.failures, out);
    }
    db_reader_done(w->db, st);
    return 0;
}
