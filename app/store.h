/*
 * store.h - every question aigw asks its database, one function each.
 *
 * All SQL of the program lives in store.c, prepared once per connection and run
 * with bound parameters only, on SQLite or PostgreSQL (sql.h): nothing above
 * this interface knows which. The policy (GCRA arithmetic, breaker state
 * machine) lives in limits.c and breaker.c, which call these functions inside
 * the short transactions they open with store_begin/store_commit. A transaction
 * is never held across a network call.
 */
#ifndef AIGW_STORE_H
#define AIGW_STORE_H

#include <stdint.h>

#include "buf.h"

struct cfg;
struct store;

/* Process-wide SQLite settings, once, before any connection is opened:
 * no allocation statistics (each would take one global mutex per allocation,
 * which hundreds of request threads then queue on). */
void store_global_init(void);

/* Opens a connection to cfg's database: SQLite at database.path, or
 * PostgreSQL at database.url. Applies pending migrations (a read-only check
 * when there are none) and prepares every statement. Returns a new handle
 * the caller closes with store_close, or NULL with the reason appended to
 * err. */
struct store *store_open(const struct cfg *cfg, struct buf *err);
/* Another connection to a database store_open has already migrated: no
 * migration check, for the connections a worker keeps in its pool. */
struct store *store_open_connection(const struct cfg *cfg, struct buf *err);
void store_close(struct store *s);
/* Applies migrations not yet applied; returns how many, or -1 (reason in err). */
int store_migrate(struct store *s, struct buf *err);
/* Copies what it can of the WAL back into the database without waiting for
 * anyone (a passive checkpoint), or with reset waits for the readers and
 * restarts the WAL from its start (the caller holds the writer lock).
 * Returns the frames left, or -1; *wal_frames (when not NULL) gets the WAL's
 * length in frames. PostgreSQL checkpoints by itself: 0 frames. */
int store_checkpoint(struct store *s, int reset, int *wal_frames);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. begin and commit return 0 or -1. */
int store_begin(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);
/* fn(arg) runs when a COMMIT of s has been sent and before its outcome is
 * known (PostgreSQL; never on SQLite: sql.h, commit_sent); fn NULL: not. */
void store_on_commit_sent(struct store *s, void (*fn)(void *arg), void *arg);
/* SAVEPOINT op / RELEASE op; rollback_to undoes everything since the
 * savepoint and releases it. For one operation of a group-committed batch. */
int store_savepoint(struct store *s);
int store_release(struct store *s);
void store_rollback_to(struct store *s);
/* With on, every statement is run and waited for, none deferred (sql.h):
 * a failing one then fails where it runs, so a savepoint can undo it alone
 * (the group commit's second pass). */
void store_set_immediate(struct store *s, int on);
/* 1 when the last failure was a statement's that undid the transaction on
 * a live connection (sql.h, sql_undone): the batch may run again. */
int store_undone(struct store *s);
/* 1 inside a transaction (for assertions). */
int store_in_transaction(struct store *s);
const char *store_errmsg(struct store *s);
/* "sqlite" or "postgresql". */
const char *store_engine(const struct store *s);

/* --- users and keys ------------------------------------------------------ */
struct user_row {
    char user_id[257];
    char roles[512];
    int64_t requests_per_window; /* -1 = config default */
    int64_t window_s;
    int64_t tokens_per_minute;
    int64_t token_budget;
    char budget_period[8]; /* "" = config default */
    int disabled;
};
/* 1 found, 0 not found, -1 error. */
int store_user_get(struct store *s, const char *user_id, struct user_row *out);
int store_user_insert(struct store *s, const struct user_row *u, int64_t now_ms);
int store_user_update(struct store *s, const struct user_row *u);
/* Calls fn for each user in id order; returns 0 or -1. */
int store_user_each(struct store *s, void (*fn)(const struct user_row *, void *), void *arg);

struct key_row {
    char key_id[64];
    char user_id[257];
    int64_t created_ms;
    int64_t expires_ms; /* 0 = never */
    int64_t revoked_ms; /* 0 = not revoked */
};
int store_key_insert(struct store *s, const char *key_id, const unsigned char hash[32],
                     const char *user_id, int64_t now_ms, int64_t expires_ms);
/* Looks a key up by the SHA-256 of its text: 1 found, 0 not, -1 error. */
int store_key_by_hash(struct store *s, const unsigned char hash[32], struct key_row *out);
/* 1 revoked, 0 no such key, -1 error. */
int store_key_revoke(struct store *s, const char *key_id, int64_t now_ms);
int store_key_each(struct store *s, const char *user_id, void (*fn)(const struct key_row *, void *),
                   void *arg);

/* --- limits and budgets (inside a transaction) ---------------------------- */
/* The GCRA theoretical arrival time in microseconds, 0 when none is stored, -1 on error. */
int64_t store_rate_tat(struct store *s, const char *user_id, const char *kind);
int store_rate_set_tat(struct store *s, const char *user_id, const char *kind, int64_t tat_us);
/* Forgets a user's rate state (after their limits change). */
int store_rate_reset(struct store *s, const char *user_id);
/* What an admission decides on, in one question: both rate states (0 when
 * none) and the period's budget row (0, 0 when none). 0 or -1. */
struct admission_state {
    int64_t tat_requests_us, tat_tokens_us;
    int64_t budget_used, budget_reserved;
};
int store_admission_state(struct store *s, const char *user_id, int64_t period_start,
                          struct admission_state *out);
/* Inside a batch's transaction, before its operations: reads the
 * admission state of every user (with the budget row of its period, in
 * step) in one question, so that store_admission_state and store_rate_tat
 * answer them without asking the database (PostgreSQL: no round trip per
 * admission). The batch's writes keep the answers current; the transaction's
 * end forgets them. Does nothing on SQLite. 0 or -1. */
int store_prefetch_admissions(struct store *s, const char *const *users, const int64_t *periods,
                              int n);
/* Adds the deltas (may be negative) to the period's row, creating it.
 * Like store_rate_set_tat and store_audit_insert, its failure may be told by
 * the next statement of the transaction (sql.h, deferred): the batch then
 * fails as a whole. */
int store_budget_add(struct store *s, const char *user_id, int64_t period_start, int64_t used_delta,
                     int64_t reserved_delta);

/* --- audit ---------------------------------------------------------------- */
struct audit_row {
    const char *request_id;
    int64_t ts_ms;
    const char *user_id;
    const char *end_user;
    const char *operation;
    const char *model;
    const char *deployment;
    const char *backend;
    int attempts;
    const char *attempts_detail; /* JSON array */
    int stream;
    int64_t reserved_tokens;
    int64_t budget_period_start; /* -1 = none */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t total_tokens;
    double latency_ms;
    const char *status;
    int http_status;
    const char *error_code;
    const char *error;
    const char *client_ip;
    const char *trace_id;
    const char *request_body;
    const char *response_body;
    int64_t completed_ms;
    const char *response_id; /* the Responses API id the backend gave, or NULL */
};
/* The backend that made a stored response, whose subject it belongs to, its
 * model and the tokens it used: from the audit row of its successful call. */
struct response_origin {
    char backend[128];
    char owner[257];
    char model[257];
    int64_t total_tokens;
};
/* 1 found, 0 not found (no such id went through the gateway), -1 error. */
int store_response_origin(struct store *s, const char *response_id, struct response_origin *out);

int store_audit_insert(struct store *s, const struct audit_row *r);
/* An admission's writes: the pending row r, the reservation of reserve
 * tokens in subject's row for period (none when period < 0), and the new
 * rate states (0: unchanged). On PostgreSQL one deferred statement; 0 or -1. */
int store_admit(struct store *s, const struct audit_row *r, const char *subject, int64_t period,
                int64_t reserve, int64_t tat_requests_us, int64_t tat_tokens_us);
/* Completes the row of r->request_id with the outcome fields of r: 0, or -1
 * when it failed or the row is no longer pending. */
int store_audit_complete(struct store *s, const struct audit_row *r);
/* A settlement: completes the row (store_audit_complete) and, when the row
 * was pending and r->budget_period_start >= 0, adds used and reserved_delta
 * to budget_user's row for that period (store_budget_add). On PostgreSQL one
 * deferred statement (a row no longer pending changes nothing); 0 or -1. */
int store_settle(struct store *s, const struct audit_row *r, const char *budget_user, int64_t used,
                 int64_t reserved_delta);

struct pending_row {
    char request_id[64];
    char user_id[257]; /* whose budget holds the reservation (end user, else caller) */
    int64_t reserved_tokens;
    int64_t budget_period_start;
    int64_t ts_ms;
};
/* Pending rows started before cutoff_ms, at most limit of them. Returns count or -1. */
int store_audit_stale(struct store *s, int64_t cutoff_ms, struct pending_row *out, int limit);
int store_audit_abandon(struct store *s, const char *request_id, int64_t now_ms);
/* Deletes at most limit rows older than cutoff; returns rows deleted or -1. */
int store_audit_prune(struct store *s, int64_t cutoff_ms, int limit);

/* --- circuit breakers (inside a transaction) ------------------------------ */
/* A breaker's state; stored as its name ('closed', 'open', 'half_open'). */
enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };
/* The stored name of state. */
const char *store_breaker_state_name(enum breaker_state state);

struct breaker_row {
    enum breaker_state state;
    int failures;
    int64_t open_until_ms;
    int half_open_inflight;
    char last_error[256];
    int64_t updated_ms;
};
/* Reads the row; a backend never seen is closed with no failures. 0 or -1. */
int store_breaker_get(struct store *s, const char *name, struct breaker_row *out);
int store_breaker_put(struct store *s, const char *name, const struct breaker_row *r);

/* --- JWKS cache ------------------------------------------------------------- */
/* Copies the cached document into out; 1 found, 0 not, -1 error. */
int store_jwks_get(struct store *s, const char *url, struct buf *out, int64_t *fetched_ms);
int store_jwks_put(struct store *s, const char *url, const char *body, int64_t now_ms);

/* --- metrics (inside the settling transaction) ---------------------------- */
int store_metric_add(struct store *s, const char *name, const char *labels, double delta);
int store_metric_each(struct store *s,
                      void (*fn)(const char *name, const char *labels, double value, void *arg),
                      void *arg);

/* --- rollups the reports read (inside the settling transaction) -------------- */
/* Adds to user's row for the UTC day starting at day_ms: v is requests,
 * succeeded, failed, refused, prompt, completion and total tokens. */
int store_usage_add(struct store *s, int64_t day_ms, const char *user_id, const int64_t v[7]);
/* Adds the same seven counts to the hour starting at hour_ms, for all users
 * together (usage_hourly, the traffic report). */
int store_traffic_add(struct store *s, int64_t hour_ms, const int64_t v[7]);
/* Adds calls to backend in the hour starting at hour_ms: how many, how many
 * failed, answered the request, and did so after a failover. */
int store_backend_hour_add(struct store *s, int64_t hour_ms, const char *backend, int64_t attempts,
                           int64_t failures, int64_t answered, int64_t failed_over);
/* Adds calls to the backend's latency bucket (upper bound in ms) for the hour. */
int store_latency_add(struct store *s, int64_t hour_ms, const char *backend, double bucket_ms,
                      int64_t calls);

/* --- reports ----------------------------------------------------------------- */
/* Runs the named report (usage, budget, errors, latency, failovers, refusals)
 * for rows since since_ms, calling row for each. 0, -1 on error, -2 unknown name. */
int store_report(struct store *s, const char *report, int64_t since_ms,
                 void (*row)(int ncol, const char *const *names, const char *const *values,
                             void *arg),
                 void *arg);

/* --- recent audit rows (the admin API) ----------------------------------------- */
struct audit_brief {
    const char *request_id;
    int64_t ts_ms;
    const char *user_id; /* NULL when none */
    const char *operation;
    const char *model;
    const char *backend;
    const char *status;
    int http_status; /* 0 = none yet */
    int64_t total_tokens;
    double latency_ms; /* < 0: none yet */
    const char *error_code;
};
/* The newest audit rows begun at or after since_ms, newest first, at most
 * limit: every user's, or only user_id's when it is not NULL; or, when
 * request_id is not NULL, that one row whatever its age. Calls fn for each
 * (the strings live until fn returns); 0 or -1. */
int store_audit_recent(struct store *s, int64_t since_ms, const char *user_id,
                       const char *request_id, int limit,
                       void (*fn)(const struct audit_brief *, void *), void *arg);

/* store_report for an answer that shows the newest rows: where a report
 * can read only its newest limit rows (failovers), it does, in time order,
 * and sets *total to how many the whole report has; otherwise *total is -1
 * and every row is given, as store_report gives them. */
int store_report_newest(struct store *s, const char *report, int64_t since_ms, long limit,
                        void (*row)(int ncol, const char *const *names, const char *const *values,
                                    void *arg),
                        void *arg, long *total);

/* --- copying ------------------------------------------------------------------ */
/* Copies every row of from (a SQLite database, say) into to, which must be
 * migrated and hold no users, keys or audit rows, in one transaction; calls
 * copied after each table. 0, or -1 with the reason in err (nothing is
 * written then). */
int store_copy(struct store *from, struct store *to,
               void (*copied)(const char *table, long rows, void *arg), void *arg, struct buf *err);

#endif
