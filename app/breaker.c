/*
 * breaker.c - the shared circuit breaker (see breaker.h).
 *
 * The common case, a closed breaker with no recent failures, costs one
 * indexed read and no write on each side of the call.
 */
#include "breaker.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "request.h"

static void set_state(struct breaker_row *row, const char *state, int64_t now)
{
    snprintf(row->state, sizeof row->state, "%s", state);
    row->updated_ms = now;
}

int breaker_decide(struct breaker_row *row, const struct breaker_policy *p, int64_t now,
                   enum breaker_decision *decision)
{
    if (strcmp(row->state, "closed") == 0) {
        *decision = BREAKER_ALLOW;
        return 0;
    }
    if (strcmp(row->state, "open") == 0) {
        if (now < row->open_until_ms) {
            *decision = BREAKER_SKIP;
            return 0;
        }
        set_state(row, "half_open", now);
        row->half_open_inflight = 1;
        *decision = BREAKER_TRIAL;
        return 1;
    }
    /* half_open */
    if (row->half_open_inflight > 0 && now - row->updated_ms > p->stale_trial_ms) {
        /* The workers that took these slots died mid-call: free them. */
        row->half_open_inflight = 0;
    }
    if (row->half_open_inflight >= p->half_open_max_calls) {
        *decision = BREAKER_SKIP;
        return 0;
    }
    row->half_open_inflight++;
    row->updated_ms = now;
    *decision = BREAKER_TRIAL;
    return 1;
}

int breaker_apply(struct breaker_row *row, const struct breaker_policy *p, int64_t now,
                  int was_trial, enum breaker_outcome outcome, int64_t retry_after_ms,
                  const char *error)
{
    int half_open = strcmp(row->state, "half_open") == 0;
    if (was_trial && half_open && row->half_open_inflight > 0)
        row->half_open_inflight--;
    switch (outcome) {
    case OUTCOME_SUCCESS:
        if (strcmp(row->state, "closed") == 0 && row->failures == 0 && !was_trial)
            return 0;
        if (half_open || strcmp(row->state, "closed") == 0) {
            /* A success in half-open closes the breaker (the seed's rule). */
            set_state(row, "closed", now);
            row->failures = 0;
            row->half_open_inflight = 0;
            row->open_until_ms = 0;
        }
        /* A late success from a call started before the breaker opened
         * leaves it open: the newer evidence wins. */
        return 1;
    case OUTCOME_THROTTLED:
        set_state(row, "open", now);
        row->open_until_ms = now + retry_after_ms;
        row->half_open_inflight = 0;
        snprintf(row->last_error, sizeof row->last_error, "%s", error ? error : "throttled");
        return 1;
    case OUTCOME_FAILURE:
        row->failures++;
        snprintf(row->last_error, sizeof row->last_error, "%s", error ? error : "failure");
        row->updated_ms = now;
        if (half_open || row->failures >= p->failure_threshold) {
            if (strcmp(row->state, "open") != 0 || half_open)
                log_warn("circuit breaker opened after %d failure(s): %s", row->failures,
                         row->last_error);
            int64_t until = now + p->recovery_ms;
            /* Never shorten a longer cooldown (a 429's Retry-After) already in force. */
            if (strcmp(row->state, "open") == 0 && row->open_until_ms > until)
                until = row->open_until_ms;
            set_state(row, "open", now);
            row->open_until_ms = until;
            row->half_open_inflight = 0;
        }
        return 1;
    }
    return 0;
}

void breaker_policy_from_config(struct worker *w, double backend_timeout_s,
                                struct breaker_policy *p)
{
    p->failure_threshold = w->cfg->breaker.failure_threshold;
    p->recovery_ms = (int64_t)(w->cfg->breaker.recovery_timeout_s * 1000);
    p->half_open_max_calls = w->cfg->breaker.half_open_max_calls;
    p->stale_trial_ms = (int64_t)(backend_timeout_s * 1000) + 5000;
}

enum breaker_decision breaker_acquire(struct worker *w, const char *name, double timeout_s,
                                      int64_t *retry_at_ms)
{
    struct breaker_policy p;
    breaker_policy_from_config(w, timeout_s, &p);
    struct breaker_row row;
    enum breaker_decision d;
    int64_t now = now_ms();
    *retry_at_ms = 0;
    if (store_breaker_get(w->store, name, &row) < 0)
        return BREAKER_ALLOW; /* the database is down: do not also lose the backends */
    struct breaker_row probe = row;
    if (!breaker_decide(&probe, &p, now, &d)) {
        if (d == BREAKER_SKIP)
            *retry_at_ms = row.open_until_ms > now ? row.open_until_ms : now + 1000;
        return d;
    }
    /* A transition: decide again under the write lock, where no other worker
     * can take the same trial slot. */
    if (store_begin(w->store) < 0)
        return BREAKER_SKIP;
    if (store_breaker_get(w->store, name, &row) < 0) {
        store_rollback(w->store);
        return BREAKER_SKIP;
    }
    now = now_ms();
    if (breaker_decide(&row, &p, now, &d) && store_breaker_put(w->store, name, &row) < 0) {
        store_rollback(w->store);
        return BREAKER_SKIP;
    }
    if (store_commit(w->store) < 0)
        return BREAKER_SKIP;
    if (d == BREAKER_SKIP)
        *retry_at_ms = row.open_until_ms > now ? row.open_until_ms : now + 1000;
    return d;
}

void breaker_record(struct worker *w, const char *name, double timeout_s, int was_trial,
                    enum breaker_outcome outcome, int64_t retry_after_ms, const char *error)
{
    struct breaker_policy p;
    breaker_policy_from_config(w, timeout_s, &p);
    struct breaker_row row;
    if (outcome == OUTCOME_SUCCESS && !was_trial) {
        /* The common case: read only, write nothing when already healthy. */
        if (store_breaker_get(w->store, name, &row) == 0 && strcmp(row.state, "closed") == 0 &&
            row.failures == 0)
            return;
    }
    if (store_begin(w->store) < 0)
        return;
    if (store_breaker_get(w->store, name, &row) < 0) {
        store_rollback(w->store);
        return;
    }
    if (breaker_apply(&row, &p, now_ms(), was_trial, outcome, retry_after_ms, error) &&
        store_breaker_put(w->store, name, &row) < 0) {
        store_rollback(w->store);
        return;
    }
    store_commit(w->store);
}
