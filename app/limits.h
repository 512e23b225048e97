/*
 * limits.h - rate limits and token budgets, exact across every worker.
 *
 * Pipeline stages 5 (admit) and 9 (settle). Admission is one operation of a
 * group-committed write transaction (commit.h): the request-rate GCRA, the
 * tokens-per-minute GCRA, the budget check with a reservation of the
 * estimated tokens, and the audit row in state 'pending' (or 'refused').
 * Operations run one after another under the host-wide writer lock, so N
 * processes with M threads racing can never admit more than the limit.
 * Settlement replaces the reservation with the usage the backend reported and
 * completes the audit row in a later batch. Neither is held across a network
 * call.
 */
#ifndef AIGW_LIMITS_H
#define AIGW_LIMITS_H

#include <stdint.h>

#include "err.h"
#include "request.h"

struct store;

/* --- pure arithmetic, unit-tested ------------------------------------------ */

struct gcra_result {
    int allowed;
    int64_t new_tat_us;     /* store this when allowed */
    int64_t retry_after_us; /* when refused: wait this long */
    long remaining;         /* requests (or tokens) still allowed right now */
    int64_t reset_us;       /* until the limit is fully available again */
};

/*
 * Generic cell rate algorithm: limit units per window_us, cost units now.
 * tat_us is the stored theoretical arrival time (0 = none). A burst of up to
 * limit is allowed, and never two bursts at a window edge.
 */
struct gcra_result gcra_check(int64_t now_us, int64_t tat_us, long limit, int64_t window_us,
                              long cost);

/* Start of the budget period containing now (Unix seconds, UTC), and of the next. */
int64_t budget_period_start(enum budget_period p, int64_t now_s);
int64_t budget_period_end(enum budget_period p, int64_t now_s);

/* --- transactions ----------------------------------------------------------- */

/* Admits or refuses req. Writes the audit row either way. */
enum aigw_err limits_admit(struct request *req);

/* Completes the audit row and settles the reservation. */
void limits_settle(struct request *req);

/* Writes a 'refused' audit row for a request stopped before admission
 * (validation, authorisation). */
void limits_audit_refusal(struct request *req);

/* Rows the sweep takes in one transaction. */
#define SWEEP_BATCH_ROWS 64

/* Inside a transaction: marks up to SWEEP_BATCH_ROWS pending rows started
 * before cutoff_ms 'abandoned' and releases their reservations; returns how
 * many, or -1. */
int limits_sweep_batch(struct store *st, int64_t cutoff_ms, int64_t now_ms);

/* The same in its own transaction, for rows older than max_age_ms (the
 * operator's `aigw audit sweep`). */
int limits_sweep_abandoned(struct store *st, int64_t max_age_ms);

/* Deletes up to batch completed audit rows older than max_age_ms in one short
 * transaction of its own; returns rows deleted or -1. */
int limits_prune_audit(struct store *st, int64_t max_age_ms, int batch);

/* Formats a duration the way OpenAI's x-ratelimit-reset-* headers do ("6m0s", "1.5s"). */
void limits_format_duration(int64_t ms, char *out, size_t n);

#endif
