/*
 * limits.c - exact rate limits and token budgets (see limits.h).
 *
 * The arithmetic is pure (gcra_check, budget_period_*); the transactions
 * around it read and write through store.c. A refusal writes its audit row in
 * the same transaction that decided it, so no refused request goes unrecorded.
 */
#include "limits.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "log.h"
#include "metrics.h"
#include "store.h"

struct gcra_result gcra_check(int64_t now_us, int64_t tat_us, long limit, int64_t window_us,
                              long cost)
{
    struct gcra_result r = {0};
    /* Emission interval: one unit every window/limit. The increment is
     * cost * window / limit rounded down, in 128-bit integers, so a full burst
     * of `limit` always fits the window exactly however unevenly it divides
     * (rounding up or to nearest would refuse the last request of a burst). */
    int64_t tat = tat_us > now_us ? tat_us : now_us;
    int64_t step =
        (int64_t)(((unsigned __int128)(uint64_t)cost * (uint64_t)window_us) / (uint64_t)limit);
    int64_t new_tat = tat + step;
    int64_t allow_at = new_tat - window_us;
    /* Units still available at a given TAT: (now + window - tat) * limit / window. */
#define GCRA_REMAINING(t)                                                                          \
    ((now_us + window_us - (t)) <= 0                                                               \
         ? 0                                                                                       \
         : (long)(((unsigned __int128)(uint64_t)(now_us + window_us - (t)) * (uint64_t)limit) /    \
                  (uint64_t)window_us))
    if (cost > limit || allow_at > now_us) {
        r.allowed = 0;
        r.retry_after_us = cost > limit ? window_us : allow_at - now_us;
        r.remaining = GCRA_REMAINING(tat);
        r.reset_us = tat - now_us;
        r.new_tat_us = tat_us;
        return r;
    }
    r.allowed = 1;
    r.new_tat_us = new_tat;
    long rem = GCRA_REMAINING(new_tat);
    r.remaining = rem > limit ? limit : rem;
    r.reset_us = new_tat - now_us;
#undef GCRA_REMAINING
    return r;
}

int64_t budget_period_start(enum budget_period p, int64_t now_s)
{
    if (p == PERIOD_TOTAL)
        return 0;
    if (p == PERIOD_DAY)
        return now_s - (now_s % 86400);
    time_t t = (time_t)now_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return (int64_t)timegm(&tm);
}

int64_t budget_period_end(enum budget_period p, int64_t now_s)
{
    if (p == PERIOD_TOTAL)
        return INT64_MAX;
    if (p == PERIOD_DAY)
        return budget_period_start(p, now_s) + 86400;
    time_t t = (time_t)now_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    tm.tm_mon += 1; /* timegm normalises December + 1 */
    return (int64_t)timegm(&tm);
}

void limits_format_duration(int64_t ms, char *out, size_t n)
{
    if (ms < 0)
        ms = 0;
    int64_t m = ms / 60000;
    double s = (double)(ms % 60000) / 1000.0;
    if (m > 0)
        snprintf(out, n, "%lldm%gs", (long long)m, s);
    else
        snprintf(out, n, "%gs", s);
}

static int write_audit_row(struct request *req, const char *status)
{
    struct audit_row row;
    audit_fill(req, status, &row, req->w->audit_scratch);
    if (store_audit_insert(req->w->store, &row) < 0)
        return -1;
    req->audited = 1;
    return 0;
}

/* Refusal inside the admission transaction: the row, then commit. */
static enum aigw_err refuse(struct request *req, enum aigw_err err, int64_t retry_after_ms,
                            const char *message)
{
    if (message != req->err_message)
        request_fail(req, err, "", "%s", message);
    req->err = err;
    req->retry_after_s = (int)((retry_after_ms + 999) / 1000);
    if (aigw_err_info(err)->http_status == 429 && req->retry_after_s < 1)
        req->retry_after_s = 1; /* a 429 always says when to come back */
    struct audit_row row;
    audit_fill(req, "refused", &row, req->w->audit_scratch);
    row.latency_ms = (mono_s() - req->start_mono) * 1000.0;
    row.http_status = aigw_err_info(err)->http_status;
    row.error_code = aigw_err_info(err)->code;
    row.error = req->err_message;
    row.completed_ms = now_ms();
    if (store_audit_insert(req->w->store, &row) < 0 ||
        metrics_record(req, row.http_status, "refused") < 0 || store_commit(req->w->store) < 0) {
        log_error("request %s: cannot record refusal: %s", req->request_id,
                  store_errmsg(req->w->store));
        store_rollback(req->w->store);
        return request_fail(req, AIGW_ERR_INTERNAL, "", "The gateway's database is unavailable.");
    }
    req->audited = 2; /* complete: nothing to settle */
    return err;
}

enum aigw_err limits_admit(struct request *req)
{
    struct store *st = req->w->store;
    const struct caller *c = &req->caller;
    int64_t now = now_ms();
    int64_t now_us = now * 1000;
    long estimate = validate_prompt_token_estimate(&req->in) +
                    (req->in.max_tokens > 0           ? req->in.max_tokens
                     : req->in.kind == API_EMBEDDINGS ? 0
                                                      : req->w->cfg->validation.max_tokens);
    const char *subject = req->subject;

    if (store_begin(st) < 0) {
        log_error("request %s: cannot begin admission: %s", req->request_id, store_errmsg(st));
        return request_fail(req, AIGW_ERR_INTERNAL, "", "The gateway's database is busy; retry.");
    }
    struct gcra_result rq = {.allowed = 1}, tk = {.allowed = 1};
    if (c->requests_per_window > 0) {
        int64_t tat = store_rate_tat(st, subject, "requests");
        if (tat < 0)
            goto db_error;
        rq = gcra_check(now_us, tat, c->requests_per_window, (int64_t)c->window_s * 1000000, 1);
        req->rl.have_requests = 1;
        req->rl.limit_requests = c->requests_per_window;
        req->rl.remaining_requests = rq.remaining;
        req->rl.reset_requests_ms = rq.reset_us / 1000;
        if (!rq.allowed)
            return refuse(req, AIGW_ERR_RATE_LIMITED, rq.retry_after_us / 1000,
                          "Rate limit of requests per window reached; retry after the time in "
                          "Retry-After.");
    }
    if (c->tokens_per_minute > 0) {
        int64_t tat = store_rate_tat(st, subject, "tokens");
        if (tat < 0)
            goto db_error;
        tk = gcra_check(now_us, tat, c->tokens_per_minute, 60 * 1000000LL, estimate);
        req->rl.have_tokens = 1;
        req->rl.limit_tokens = c->tokens_per_minute;
        req->rl.remaining_tokens = tk.remaining;
        req->rl.reset_tokens_ms = tk.reset_us / 1000;
        if (!tk.allowed)
            return refuse(req, AIGW_ERR_TOKENS_RATE_LIMITED, tk.retry_after_us / 1000,
                          "Tokens-per-minute limit reached (estimated prompt plus max_tokens); "
                          "retry after the time in Retry-After.");
    }
    int64_t period = budget_period_start(c->budget_period, now / 1000);
    if (c->token_budget >= 0) {
        int64_t used, reserved;
        if (store_budget_get(st, subject, period, &used, &reserved) < 0)
            goto db_error;
        if (used + reserved + estimate > c->token_budget) {
            int64_t end = budget_period_end(c->budget_period, now / 1000);
            char why[200];
            if (end == INT64_MAX)
                snprintf(
                    why, sizeof why,
                    "Token budget exhausted: %lld of %ld tokens used; the budget does not reset.",
                    (long long)(used + reserved), c->token_budget);
            else
                snprintf(why, sizeof why,
                         "Token budget exhausted: %lld of %ld tokens used this %s; it resets at "
                         "%lld (Unix time).",
                         (long long)(used + reserved), c->token_budget,
                         cfg_period_name(c->budget_period), (long long)end);
            return refuse(req, AIGW_ERR_BUDGET_EXCEEDED, 0, why);
        }
        if (store_budget_add(st, subject, period, 0, estimate) < 0)
            goto db_error;
        req->reserved_tokens = estimate;
        req->budget_period_start = period;
    }
    if ((rq.new_tat_us && c->requests_per_window > 0 &&
         store_rate_set_tat(st, subject, "requests", rq.new_tat_us) < 0) ||
        (c->tokens_per_minute > 0 && store_rate_set_tat(st, subject, "tokens", tk.new_tat_us) < 0))
        goto db_error;
    if (write_audit_row(req, "pending") < 0 || store_commit(st) < 0)
        goto db_error;
    return AIGW_OK;

db_error:
    log_error("request %s: admission failed: %s", req->request_id, store_errmsg(st));
    store_rollback(st);
    req->audited = 0;
    req->reserved_tokens = 0;
    req->budget_period_start = -1;
    return request_fail(req, AIGW_ERR_INTERNAL, "",
                        "The gateway's database is unavailable; retry.");
}

void limits_audit_refusal(struct request *req)
{
    if (req->audited)
        return;
    struct store *st = req->w->store;
    if (store_begin(st) < 0) {
        log_error("request %s: cannot record refusal: %s", req->request_id, store_errmsg(st));
        return;
    }
    refuse(req, req->err, (int64_t)req->retry_after_s * 1000, req->err_message);
}

void limits_settle(struct request *req)
{
    if (req->audited != 1)
        return;
    struct store *st = req->w->store;
    const struct caller *c = &req->caller;
    const char *status = req->err == AIGW_OK ? "success" : "error";
    struct audit_row row;
    audit_fill(req, status, &row, req->w->audit_scratch);
    /* A few retries: settlement must not be lost to a briefly busy database. */
    for (int attempt = 0; attempt < 3; attempt++) {
        if (store_begin(st) < 0)
            continue;
        if (store_audit_complete(st, &row) < 0 || metrics_record(req, row.http_status, status) < 0)
            goto fail;
        if (req->budget_period_start >= 0 &&
            store_budget_add(st, req->subject, req->budget_period_start, req->total_tokens,
                             -req->reserved_tokens) < 0)
            goto fail;
        if (c->tokens_per_minute > 0 && req->reserved_tokens > req->total_tokens) {
            /* Give back the part of the token-rate charge that was not used. */
            int64_t tat = store_rate_tat(st, req->subject, "tokens");
            int64_t refund =
                (int64_t)(((unsigned __int128)(uint64_t)(req->reserved_tokens - req->total_tokens) *
                           60000000u) /
                          (uint64_t)c->tokens_per_minute);
            int64_t floor_us = now_ms() * 1000;
            int64_t nt = tat - refund < floor_us ? floor_us : tat - refund;
            if (tat > 0 && store_rate_set_tat(st, req->subject, "tokens", nt) < 0)
                goto fail;
        }
        if (store_commit(st) == 0) {
            req->audited = 2;
            return;
        }
    fail:
        store_rollback(st);
    }
    /* The row stays 'pending'; the sweep marks it abandoned and releases it. */
    log_error("request %s: cannot settle: %s", req->request_id, store_errmsg(st));
}

int limits_sweep_abandoned(struct worker *w, int64_t max_age_ms)
{
    struct pending_row rows[64];
    int64_t now = now_ms();
    struct store *st = w->store;
    if (store_begin(st) < 0)
        return -1;
    int n = store_audit_stale(st, now - max_age_ms, rows, 64);
    int done = 0;
    for (int i = 0; i < n; i++) {
        if (store_audit_abandon(st, rows[i].request_id, now) != 1)
            continue;
        if (rows[i].budget_period_start >= 0 && rows[i].reserved_tokens > 0 &&
            store_budget_add(st, rows[i].user_id, rows[i].budget_period_start, 0,
                             -rows[i].reserved_tokens) < 0) {
            store_rollback(st);
            return -1;
        }
        done++;
    }
    if (n < 0 || store_commit(st) < 0) {
        store_rollback(st);
        return -1;
    }
    if (done)
        log_warn("marked %d stale pending request(s) abandoned and released their reservations",
                 done);
    return done;
}

int limits_prune_audit(struct worker *w, int64_t max_age_ms, int batch)
{
    struct store *st = w->store;
    if (store_begin(st) < 0)
        return -1;
    int n = store_audit_prune(st, now_ms() - max_age_ms, batch);
    if (n < 0 || store_commit(st) < 0) {
        store_rollback(st);
        return -1;
    }
    return n;
}
