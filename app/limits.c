/*
 * limits.c - exact rate limits and token budgets (see limits.h).
 *
 * The arithmetic is pure (gcra_check, budget_period_*). Admission, refusal
 * and settlement are operations of the group commit (commit.h): each runs in
 * queue order inside a shared transaction, reads and writes through store.c
 * and decides exactly as it would alone. A refusal writes its audit row in
 * the same transaction that decided it, so no refused request goes
 * unrecorded. Rows and redacted bodies are prepared before the operation is
 * queued, so the writer lock is held for SQL only.
 */
#include "limits.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "worker.h"

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

/* Turns the pending row of req into its refusal: status, outcome and times. */
static void refusal_row(struct request *req, struct audit_row *row)
{
    const struct aigw_err_info *info = aigw_err_info(req->err);
    row->status = "refused";
    row->latency_ms = (mono_s() - req->start_mono) * 1000.0;
    row->http_status = info->http_status;
    row->error_code = info->code;
    row->error = req->err_message;
    row->completed_ms = now_ms();
}

/* Records req's refusal (err, message, retry) inside the batch: the row and
 * its counters. 0 or -1. */
static int write_refusal(struct store *st, struct counters *c, struct request *req,
                         struct audit_row *row, enum aigw_err err, int64_t retry_after_ms,
                         const char *message)
{
    if (message != req->err_message)
        request_fail(req, err, "", "%s", message);
    req->err = err;
    req->retry_after_s = (int)((retry_after_ms + 999) / 1000);
    if (aigw_err_info(err)->http_status == 429 && req->retry_after_s < 1)
        req->retry_after_s = 1; /* a 429 always says when to come back */
    refusal_row(req, row);
    if (store_audit_insert(st, row) < 0 || metrics_collect(req, row->http_status, "refused", c) < 0)
        return -1;
    return 0;
}

/* One admission, decided and written inside a group-committed batch. */
struct admission {
    struct request *req;
    long estimate;
    struct audit_row row; /* the pending row, prepared (redacted) before the batch */
    int refused;
};

static int admit_in_batch(struct store *st, struct counters *cn, void *arg)
{
    struct admission *a = arg;
    struct request *req = a->req;
    const struct caller *c = &req->caller;
    const char *subject = req->subject;
    long estimate = a->estimate;
    /* The clock is read in queue order: each decision sees time move forward. */
    int64_t now = now_ms();
    int64_t now_us = now * 1000;
    /* All it tells the request is set afresh: the batch may run it twice. */
    req->err = AIGW_OK;
    req->retry_after_s = 0;
    memset(&req->rl, 0, sizeof req->rl);
    a->refused = 0;
    req->reserved_tokens = 0;
    req->budget_period_start = -1;
    a->row.reserved_tokens = 0;
    a->row.budget_period_start = -1;

    /* One question for everything the decision reads (one round trip). */
    int64_t period = budget_period_start(c->budget_period, now / 1000);
    struct admission_state state = {0};
    if ((c->requests_per_window > 0 || c->tokens_per_minute > 0 || c->token_budget >= 0) &&
        store_admission_state(st, subject, period, &state) < 0)
        return -1;
    struct gcra_result rq = {.allowed = 1}, tk = {.allowed = 1};
    if (c->requests_per_window > 0) {
        rq = gcra_check(now_us, state.tat_requests_us, c->requests_per_window,
                        (int64_t)c->window_s * 1000000, 1);
        req->rl.have_requests = 1;
        req->rl.limit_requests = c->requests_per_window;
        req->rl.remaining_requests = rq.remaining;
        req->rl.reset_requests_ms = rq.reset_us / 1000;
        if (!rq.allowed) {
            a->refused = 1;
            return write_refusal(st, cn, req, &a->row, AIGW_ERR_RATE_LIMITED,
                                 rq.retry_after_us / 1000,
                                 "Rate limit of requests per window reached; retry after the "
                                 "time in Retry-After.");
        }
    }
    if (c->tokens_per_minute > 0) {
        tk =
            gcra_check(now_us, state.tat_tokens_us, c->tokens_per_minute, 60 * 1000000LL, estimate);
        req->rl.have_tokens = 1;
        req->rl.limit_tokens = c->tokens_per_minute;
        req->rl.remaining_tokens = tk.remaining;
        req->rl.reset_tokens_ms = tk.reset_us / 1000;
        if (!tk.allowed) {
            a->refused = 1;
            return write_refusal(st, cn, req, &a->row, AIGW_ERR_TOKENS_RATE_LIMITED,
                                 tk.retry_after_us / 1000,
                                 "Tokens-per-minute limit reached (estimated prompt plus "
                                 "max_tokens); retry after the time in Retry-After.");
        }
    }
    if (c->token_budget >= 0) {
        int64_t used = state.budget_used, reserved = state.budget_reserved;
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
            a->refused = 1;
            return write_refusal(st, cn, req, &a->row, AIGW_ERR_BUDGET_EXCEEDED, 0, why);
        }
        req->reserved_tokens = estimate;
        req->budget_period_start = period;
        a->row.reserved_tokens = estimate;
        a->row.budget_period_start = period;
    }
    return store_admit(st, &a->row, subject, req->budget_period_start, req->reserved_tokens,
                       c->requests_per_window > 0 ? rq.new_tat_us : 0,
                       c->tokens_per_minute > 0 ? tk.new_tat_us : 0);
}

enum aigw_err limits_admit(struct request *req)
{
    struct admission a = {.req = req};
    /* A stored response's GET or DELETE spends no tokens; a call reserves its
     * prompt's estimate and the most it may answer. */
    a.estimate = router_is_stored_response(req->route)
                     ? 0
                     : validate_prompt_token_estimate(&req->in) +
                           (req->in.max_tokens > 0           ? req->in.max_tokens
                            : req->in.kind == API_EMBEDDINGS ? 0
                                                             : req->w->cfg->validation.max_tokens);
    /* The row, its redacted body included, is made before the batch: the
     * writer lock is held for SQL only. */
    audit_fill(req, "pending", &a.row, &req->t->audit_scratch);
    if (db_write_for(req->w->db, admit_in_batch, &a, req->subject,
                     budget_period_start(req->caller.budget_period, now_ms() / 1000)) < 0) {
        log_error("request %s: admission could not be written", req->request_id);
        req->audited = 0;
        req->reserved_tokens = 0;
        req->budget_period_start = -1;
        return request_store_unavailable(req);
    }
    if (a.refused) {
        req->audited = 2; /* complete: nothing to settle */
        return req->err;
    }
    req->audited = 1;
    return AIGW_OK;
}

struct refusal {
    struct request *req;
    struct audit_row row;
    enum aigw_err err;
    int64_t retry_after_ms;
};

static int refusal_in_batch(struct store *st, struct counters *c, void *arg)
{
    struct refusal *r = arg;
    return write_refusal(st, c, r->req, &r->row, r->err, r->retry_after_ms, r->req->err_message);
}

void limits_audit_refusal(struct request *req)
{
    if (req->audited)
        return;
    struct refusal r = {
        .req = req, .err = req->err, .retry_after_ms = (int64_t)req->retry_after_s * 1000};
    audit_fill(req, "pending", &r.row, &req->t->audit_scratch);
    if (db_write(req->w->db, refusal_in_batch, &r) < 0) {
        log_error("request %s: cannot record refusal", req->request_id);
        return;
    }
    req->audited = 2;
}

struct settlement {
    struct request *req;
    struct audit_row row;
};

static int settle_in_batch(struct store *st, struct counters *cn, void *arg)
{
    struct settlement *a = arg;
    struct request *req = a->req;
    const struct caller *c = &req->caller;
    if (store_settle(st, &a->row, req->subject, req->total_tokens, -req->reserved_tokens) < 0 ||
        metrics_collect(req, a->row.http_status, a->row.status, cn) < 0)
        return -1;
    if (c->tokens_per_minute > 0 && req->reserved_tokens > req->total_tokens) {
        /* Give back the part of the token-rate charge that was not used. */
        int64_t tat = store_rate_tat(st, req->subject, "tokens");
        if (tat < 0)
            return -1;
        int64_t refund =
            (int64_t)(((unsigned __int128)(uint64_t)(req->reserved_tokens - req->total_tokens) *
                       60000000u) /
                      (uint64_t)c->tokens_per_minute);
        int64_t floor_us = now_ms() * 1000;
        int64_t nt = tat - refund < floor_us ? floor_us : tat - refund;
        if (tat > 0 && store_rate_set_tat(st, req->subject, "tokens", nt) < 0)
            return -1;
    }
    return 0;
}

/* How long a settlement keeps trying a database that refuses it. */
#define SETTLE_PATIENCE_MS 15000

void limits_settle(struct request *req)
{
    if (req->audited != 1)
        return;
    struct settlement a = {.req = req};
    audit_fill(req, req->err == AIGW_OK ? "success" : "error", &a.row, &req->t->audit_scratch);
    /* Settlement must not be lost to a briefly busy or restarting database:
     * tried again with a growing pause, for SETTLE_PATIENCE_MS at least
     * three times. The answer has been given; only this thread waits. */
    int64_t start = now_ms();
    for (int attempt = 0, pause_ms = 50;;
         attempt++, pause_ms = pause_ms < 1000 ? pause_ms * 2 : 1000) {
        if ((req->budget_period_start >= 0 ? db_write_for(req->w->db, settle_in_batch, &a,
                                                          req->subject, req->budget_period_start)
                                           : db_write(req->w->db, settle_in_batch, &a)) == 0) {
            req->audited = 2;
            return;
        }
        if (attempt >= 2 && now_ms() - start >= SETTLE_PATIENCE_MS)
            break;
        struct timespec ts = {pause_ms / 1000, (long)(pause_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
    }
    /* The row stays 'pending'; the sweep marks it abandoned and charges it. */
    log_error("request %s: cannot settle", req->request_id);
}

int limits_sweep_batch(struct store *st, int64_t cutoff_ms, int64_t now)
{
    struct pending_row rows[SWEEP_BATCH_ROWS];
    int n = store_audit_stale(st, cutoff_ms, rows, SWEEP_BATCH_ROWS);
    int done = 0;
    for (int i = 0; i < n; i++) {
        int changed = store_audit_abandon(st, rows[i].request_id, now);
        if (changed < 0)
            return -1;
        if (changed != 1)
            continue;
        /* The worker died after admission: whether its backend answered (and
         * billed) is unknown, so the reservation is charged, not released.
         * The daily usage counts the request as failed with those tokens. */
        int64_t t = rows[i].reserved_tokens;
        if (rows[i].budget_period_start >= 0 && t > 0 &&
            store_budget_add(st, rows[i].user_id, rows[i].budget_period_start, t, -t) < 0)
            return -1;
        const int64_t usage[7] = {1, 0, 1, 0, 0, 0, t};
        int64_t at = rows[i].ts_ms;
        if (store_usage_add(st, at - at % 86400000, rows[i].user_id, usage) < 0 ||
            store_traffic_add(st, at - at % 3600000, usage) < 0)
            return -1;
        done++;
    }
    return n < 0 ? -1 : done;
}

int limits_sweep_abandoned(struct store *st, int64_t max_age_ms)
{
    int64_t now = now_ms();
    if (store_begin(st) < 0)
        return -1;
    int done = limits_sweep_batch(st, now - max_age_ms, now);
    if (done < 0 || store_commit(st) < 0) {
        store_rollback(st);
        return -1;
    }
    if (done)
        log_warn("marked %d stale pending request(s) abandoned and charged their reserved tokens",
                 done);
    return done;
}

int limits_prune_audit(struct store *st, int64_t max_age_ms, int batch)
{
    if (store_begin(st) < 0)
        return -1;
    int n = store_audit_prune(st, now_ms() - max_age_ms, batch);
    if (n < 0 || store_commit(st) < 0) {
        store_rollback(st);
        return -1;
    }
    return n;
}
