/*
 * breaker.h - circuit breakers shared by every worker.
 *
 * The seed's CircuitBreaker (closed -> open after failure_threshold failures
 * -> half-open after recovery_timeout with at most half_open_max_calls trial
 * calls -> closed on a success), kept in the backend_state table so that a
 * breaker one worker opens is open for all of them, and half-open trials are
 * counted across all workers. The state machine is pure (breaker_on_*); the
 * breaker_acquire/breaker_record wrappers run it in group-committed writes
 * (commit.h), never across the backend call itself.
 */
#ifndef AIGW_BREAKER_H
#define AIGW_BREAKER_H

#include <stdint.h>

#include "store.h"

struct worker;

struct breaker_policy {
    int failure_threshold;
    int64_t recovery_ms;
    int half_open_max_calls;
    int64_t stale_trial_ms; /* a trial older than this belonged to a dead worker */
};

enum breaker_decision {
    BREAKER_ALLOW, /* closed: call normally */
    BREAKER_TRIAL, /* half-open: this call is one of the limited trials */
    BREAKER_SKIP,  /* open, or half-open with every trial slot taken */
};

enum breaker_outcome {
    OUTCOME_SUCCESS,  /* any answer that shows the backend works (2xx, 4xx but 429) */
    OUTCOME_FAILURE,  /* connect error, timeout, 5xx, malformed answer */
    OUTCOME_THROTTLED /* 429 with Retry-After: cool down for that long */
};

/* Pure state machine. Each returns 1 when row changed (must be written). */
int breaker_decide(struct breaker_row *row, const struct breaker_policy *p, int64_t now,
                   enum breaker_decision *decision);
int breaker_apply(struct breaker_row *row, const struct breaker_policy *p, int64_t now,
                  int was_trial, enum breaker_outcome outcome, int64_t retry_after_ms,
                  const char *error);

void breaker_policy_from_config(struct worker *w, double backend_timeout_s,
                                struct breaker_policy *p);

/* May this worker call backend name now? On SKIP, *retry_at_ms says when the
 * breaker may let calls through again. */
enum breaker_decision breaker_acquire(struct worker *w, const char *name, double timeout_s,
                                      int64_t *retry_at_ms);
void breaker_record(struct worker *w, const char *name, double timeout_s, int was_trial,
                    enum breaker_outcome outcome, int64_t retry_after_ms, const char *error);

/* Reads the shared state of name's breaker (closed when never seen). 0 or -1. */
int breaker_read(struct worker *w, const char *name, struct breaker_row *row);

/* Closes the breaker of name unless it is closed already (a health probe
 * succeeded). 1 when it was open or half-open, 0 when closed, -1 on error. */
int breaker_close(struct worker *w, const char *name);

/* Closes name's breaker on st outside any batch (aigw backend reset: the
 * operator's command, which then tells every worker through the epochs). */
int breaker_reset(struct store *st, const char *name);

#endif
