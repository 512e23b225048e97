/*
 * breaker.c - the shared circuit breaker (see breaker.h).
 *
 * The common case, a closed breaker with no recent failures, costs no
 * database read (the row comes from the process's cache, checked against
 * the host's breaker epoch) and no write on either side of the call.
 */
#include "breaker.h"

#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "request.h"
#include "worker.h"

static void set_state(struct breaker_row *row, enum breaker_state state, int64_t now)
{
    row->state = state;
    row->updated_ms = now;
}

int breaker_decide(struct breaker_row *row, const struct breaker_policy *p, int64_t now,
                   enum breaker_decision *decision)
{
    if (row->state == BREAKER_CLOSED) {
        *decision = BREAKER_ALLOW;
        return 0;
    }
    if (row->state == BREAKER_OPEN) {
        if (now < row->open_until_ms) {
            *decision = BREAKER_SKIP;
            return 0;
        }
        set_state(row, BREAKER_HALF_OPEN, now);
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
    int half_open = row->state == BREAKER_HALF_OPEN;
    if (was_trial && half_open && row->half_open_inflight > 0)
        row->half_open_inflight--;
    switch (outcome) {
    case OUTCOME_SUCCESS:
        if (row->state == BREAKER_CLOSED && row->failures == 0 && !was_trial)
            return 0;
        if (half_open || row->state == BREAKER_CLOSED) {
            /* A success in half-open closes the breaker (the seed's rule). */
            set_state(row, BREAKER_CLOSED, now);
            row->failures = 0;
            row->half_open_inflight = 0;
            row->open_until_ms = 0;
        }
        /* A late success from a call started before the breaker opened
         * leaves it open: the newer evidence wins. */
        return 1;
    case OUTCOME_THROTTLED:
        set_state(row, BREAKER_OPEN, now);
        row->open_until_ms = now + retry_after_ms;
        row->half_open_inflight = 0;
        snprintf(row->last_error, sizeof row->last_error, "%s", error ? error : "throttled");
        return 1;
    case OUTCOME_FAILURE:
        row->failures++;
        snprintf(row->last_error, sizeof row->last_error, "%s", error ? error : "failure");
        row->updated_ms = now;
        if (half_open || row->failures >= p->failure_threshold) {
            if (row->state != BREAKER_OPEN || half_open)
                log_warn("circuit breaker opened after %d failure(s): %s", row->failures,
                         row->last_error);
            int64_t until = now + p->recovery_ms;
            /* Never shorten a longer cooldown (a 429's Retry-After) already in force. */
            if (row->state == BREAKER_OPEN && row->open_until_ms > until)
                until = row->open_until_ms;
            set_state(row, BREAKER_OPEN, now);
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

static int read_breaker(struct store *st, const void *name, void *row)
{
    /* store_breaker_get answers a closed row for a backend never seen. */
    return store_breaker_get(st, name, row) < 0 ? -1 : 1;
}

int breaker_read(struct worker *w, const char *name, struct breaker_row *row)
{
    return db_read_row(w->db, DB_ROWS_BREAKERS, name, strlen(name) + 1, row, read_breaker) < 0 ? -1
                                                                                               : 0;
}

/* A breaker change, made inside a group-committed batch: the row is read
 * again there, where no other thread or process can change it meanwhile. */
struct breaker_change {
    const char *name;
    struct breaker_policy policy;
    enum { CHANGE_ACQUIRE, CHANGE_RECORD, CHANGE_CLOSE } what;
    /* record */
    int was_trial;
    enum breaker_outcome outcome;
    int64_t retry_after_ms;
    const char *error;
    /* out */
    enum breaker_decision decision;
    struct breaker_row row;
    int changed;
};

static int change_in_batch(struct store *st, struct counters *c, void *arg)
{
    (void)c;
    struct breaker_change *ch = arg;
    if (store_breaker_get(st, ch->name, &ch->row) < 0)
        return -1;
    int64_t now = now_ms();
    switch (ch->what) {
    case CHANGE_ACQUIRE:
        ch->changed = breaker_decide(&ch->row, &ch->policy, now, &ch->decision);
        break;
    case CHANGE_RECORD:
        ch->changed = breaker_apply(&ch->row, &ch->policy, now, ch->was_trial, ch->outcome,
                                    ch->retry_after_ms, ch->error);
        break;
    case CHANGE_CLOSE:
        ch->changed = ch->row.state != BREAKER_CLOSED;
        if (ch->changed) {
            memset(&ch->row, 0, sizeof ch->row);
            ch->row.state = BREAKER_CLOSED;
            ch->row.updated_ms = now;
        }
        break;
    }
    return ch->changed ? store_breaker_put(st, ch->name, &ch->row) : 0;
}

/* Runs ch in a batch; every process reads the breaker again when it changed. */
static int change(struct worker *w, struct breaker_change *ch)
{
    if (db_write(w->db, change_in_batch, ch) < 0)
        return -1;
    if (ch->changed)
        db_rows_changed(w->db, EPOCH_BREAKERS);
    return 0;
}

enum breaker_decision breaker_acquire(struct worker *w, const char *name, double timeout_s,
                                      int64_t *retry_at_ms)
{
    struct breaker_change ch = {.name = name, .what = CHANGE_ACQUIRE};
    breaker_policy_from_config(w, timeout_s, &ch.policy);
    struct breaker_row row;
    enum breaker_decision d;
    int64_t now = now_ms();
    *retry_at_ms = 0;
    if (breaker_read(w, name, &row) < 0)
        return BREAKER_ALLOW; /* the database is down: do not also lose the backends */
    struct breaker_row probe = row;
    if (!breaker_decide(&probe, &ch.policy, now, &d)) {
        if (d == BREAKER_SKIP)
            *retry_at_ms = row.open_until_ms > now ? row.open_until_ms : now + 1000;
        return d;
    }
    /* A transition: decide again in the write batch, where no other worker
     * can take the same trial slot. */
    if (change(w, &ch) < 0)
        return BREAKER_SKIP;
    if (ch.decision == BREAKER_SKIP)
        *retry_at_ms = ch.row.open_until_ms > now ? ch.row.open_until_ms : now + 1000;
    return ch.decision;
}

void breaker_record(struct worker *w, const char *name, double timeout_s, int was_trial,
                    enum breaker_outcome outcome, int64_t retry_after_ms, const char *error)
{
    struct breaker_change ch = {.name = name,
                                .what = CHANGE_RECORD,
                                .was_trial = was_trial,
                                .outcome = outcome,
                                .retry_after_ms = retry_after_ms,
                                .error = error};
    breaker_policy_from_config(w, timeout_s, &ch.policy);
    if (outcome == OUTCOME_SUCCESS && !was_trial) {
        /* The common case: read only, write nothing when already healthy. */
        struct breaker_row row;
        if (breaker_read(w, name, &row) == 0 && row.state == BREAKER_CLOSED && row.failures == 0)
            return;
    }
    change(w, &ch);
}

int breaker_reset(struct store *st, const char *name)
{
    struct breaker_row row;
    memset(&row, 0, sizeof row);
    row.state = BREAKER_CLOSED;
    row.updated_ms = now_ms();
    return store_breaker_put(st, name, &row);
}

int breaker_close(struct worker *w, const char *name)
{
    struct breaker_change ch = {.name = name, .what = CHANGE_CLOSE};
    if (change(w, &ch) < 0)
        return -1;
    return ch.changed;
}
