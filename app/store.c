/*
 * store.c - every SQL statement of aigw, for SQLite and PostgreSQL.
 *
 * A struct store is one connection (sql.h), used by one thread at a time: a
 * worker process keeps a few for reading and one for the group commit (db.c,
 * commit.c), all opened after fork. Statements are prepared once per
 * connection and reset after each use, so the request path never compiles
 * SQL. The statements are SQLite's; the few PostgreSQL needs in its own words
 * are beside them (pg_sql), and each engine has its own migrations
 * (sql/NNN_*.sql, sql/postgresql/NNN_*.sql).
 */
#include "store.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admission_cache.h"
#include "config.h"
#include "migrations.h"
#include "sql.h"

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_USER_GET,
    ST_USER_INSERT,
    ST_USER_UPDATE,
    ST_USER_EACH,
    ST_KEY_INSERT,
    ST_KEY_BY_HASH,
    ST_KEY_REVOKE,
    ST_KEY_EACH,
    ST_RATE_GET,
    ST_RATE_SET,
    ST_RATE_RESET,
    ST_ADMISSION_STATE,
    ST_BUDGET_ADD,
    ST_AUDIT_INSERT,
    ST_AUDIT_COMPLETE,
    ST_SETTLE,       /* PostgreSQL: the completion and the budget in one statement */
    ST_SETTLE_AUDIT, /* PostgreSQL: the completion alone, the budget left to the commit */
    ST_ADMIT,        /* PostgreSQL: an admission's three writes in one statement */
    ST_RESPONSE_ORIGIN,
    ST_AUDIT_STALE,
    ST_AUDIT_ABANDON,
    ST_AUDIT_PRUNE,
    ST_BREAKER_GET,
    ST_BREAKER_PUT,
    ST_JWKS_GET,
    ST_JWKS_PUT,
    ST_METRIC_ADD,
    ST_METRIC_EACH,
    ST_USAGE_ADD,
    ST_TRAFFIC_ADD,
    ST_BACKEND_HOUR_ADD,
    ST_LATENCY_ADD,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST_WRITE_LOCK,         /* PostgreSQL: the hosts' writer lock, taken after BEGIN */
    ST_ADMISSION_PREFETCH, /* PostgreSQL: the admission state of a batch's subjects */
    ST__COUNT
};

/* An audit row's 27 columns, bound by bind_audit as ?1..?27. */
#define AUDIT_INSERT_SQL                                                                           \
    "INSERT INTO audit_log(request_id, ts_ms, user_id, end_user, operation, model, deployment,"    \
    " backend, attempts, attempts_detail, stream, reserved_tokens, budget_period_start,"           \
    " prompt_tokens, completion_tokens, total_tokens, latency_ms, status, http_status,"            \
    " error_code, error, client_ip, trace_id, request_body, response_body, completed_ms,"          \
    " response_id)"                                                                                \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"         \
    " ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)"

/* The same on PostgreSQL, with the row's timestamp text made in the
 * statement from ts_ms (SQLite's column computes it on read). As a stored
 * generated column it cost every INSERT and UPDATE of audit_log a parse of
 * its expression, a fifth of the server's time (sql/postgresql/008). */
#define PG_AUDIT_INSERT_SQL                                                                        \
    "INSERT INTO audit_log(request_id, ts_ms, user_id, end_user, operation, model, deployment,"    \
    " backend, attempts, attempts_detail, stream, reserved_tokens, budget_period_start,"           \
    " prompt_tokens, completion_tokens, total_tokens, latency_ms, status, http_status,"            \
    " error_code, error, client_ip, trace_id, request_body, response_body, completed_ms,"          \
    " response_id, timestamp)"                                                                     \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"         \
    " ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27,"                                           \
    " to_char(TIMESTAMP 'epoch' + ?2::bigint * INTERVAL '1 millisecond',"                          \
    " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))"

/* Written for SQLite; sql_pg.c rewrites ?N for PostgreSQL, and pg_sql below
 * replaces the few that must differ. */
static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_USER_GET] = "SELECT user_id, roles, requests_per_window, window_s, tokens_per_minute,"
                    " token_budget, budget_period, disabled FROM users WHERE user_id = ?1",
    [ST_USER_INSERT] = "INSERT INTO users(user_id, roles, requests_per_window, window_s,"
                       " tokens_per_minute, token_budget, budget_period, disabled, created_ms)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_USER_UPDATE] = "UPDATE users SET roles = ?2, requests_per_window = ?3, window_s = ?4,"
                       " tokens_per_minute = ?5, token_budget = ?6, budget_period = ?7,"
                       " disabled = ?8 WHERE user_id = ?1",
    [ST_USER_EACH] = "SELECT user_id, roles, requests_per_window, window_s, tokens_per_minute,"
                     " token_budget, budget_period, disabled FROM users ORDER BY user_id",
    [ST_KEY_INSERT] = "INSERT INTO api_keys(key_id, key_hash, user_id, created_ms, expires_ms)"
                      " VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_KEY_BY_HASH] = "SELECT key_id, user_id, created_ms, expires_ms, revoked_ms FROM api_keys"
                       " WHERE key_hash = ?1",
    [ST_KEY_REVOKE] =
        "UPDATE api_keys SET revoked_ms = ?2 WHERE key_id = ?1 AND revoked_ms IS NULL",
    [ST_KEY_EACH] = "SELECT key_id, user_id, created_ms, expires_ms, revoked_ms FROM api_keys"
                    " WHERE ?1 IS NULL OR user_id = ?1 ORDER BY created_ms",
    [ST_RATE_GET] = "SELECT tat_us FROM rate_state WHERE user_id = ?1 AND kind = ?2",
    [ST_RATE_SET] = "INSERT INTO rate_state(user_id, kind, tat_us) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT(user_id, kind) DO UPDATE SET tat_us = excluded.tat_us",
    [ST_RATE_RESET] = "DELETE FROM rate_state WHERE user_id = ?1",
    [ST_ADMISSION_STATE] =
        "SELECT (SELECT tat_us FROM rate_state WHERE user_id = ?1 AND kind = 'requests'),"
        " (SELECT tat_us FROM rate_state WHERE user_id = ?1 AND kind = 'tokens'),"
        " (SELECT used FROM budget_usage WHERE user_id = ?1 AND period_start = ?2),"
        " (SELECT reserved FROM budget_usage WHERE user_id = ?1 AND period_start = ?2)",
    [ST_BUDGET_ADD] = "INSERT INTO budget_usage(user_id, period_start, used, reserved)"
                      " VALUES (?1, ?2, max(?3, 0), max(?4, 0))"
                      " ON CONFLICT(user_id, period_start) DO UPDATE SET"
                      " used = max(budget_usage.used + ?3, 0),"
                      " reserved = max(budget_usage.reserved + ?4, 0)",
    [ST_AUDIT_INSERT] = AUDIT_INSERT_SQL,
    [ST_AUDIT_COMPLETE] =
        "UPDATE audit_log SET model = coalesce(?6, model), deployment = coalesce(?7, deployment),"
        " backend = ?8, attempts = ?9, attempts_detail = ?10, prompt_tokens = ?14,"
        " completion_tokens = ?15, total_tokens = ?16, latency_ms = ?17, status = ?18,"
        " http_status = ?19, error_code = ?20, error = ?21, response_body = ?25,"
        " completed_ms = ?26, response_id = coalesce(?27, response_id)"
        " WHERE request_id = ?1 AND status = 'pending'",
    [ST_RESPONSE_ORIGIN] =
        "SELECT backend, coalesce(end_user, user_id), model, total_tokens FROM audit_log"
        " WHERE response_id = ?1 AND status = 'success' ORDER BY id DESC LIMIT 1",
    [ST_AUDIT_STALE] = "SELECT request_id, coalesce(end_user, user_id), reserved_tokens, "
                       "budget_period_start, ts_ms FROM audit_log"
                       " WHERE status = 'pending' AND ts_ms < ?1 ORDER BY ts_ms LIMIT ?2",
    [ST_AUDIT_ABANDON] =
        "UPDATE audit_log SET status = 'abandoned', error_code = 'internal_error',"
        " error = 'the worker handling this request stopped before it completed; the tokens"
        " reserved for it are charged, since a backend may have answered and billed the call',"
        " total_tokens = reserved_tokens, completed_ms = ?2"
        " WHERE request_id = ?1 AND status = 'pending'",
    [ST_AUDIT_PRUNE] = "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log"
                       " WHERE ts_ms < ?1 AND status <> 'pending' ORDER BY ts_ms LIMIT ?2)",
    [ST_BREAKER_GET] = "SELECT state, failures, open_until_ms, half_open_inflight, last_error,"
                       " updated_ms FROM backend_state WHERE name = ?1",
    [ST_BREAKER_PUT] =
        "INSERT INTO backend_state(name, state, failures, open_until_ms,"
        " half_open_inflight, last_error, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        " ON CONFLICT(name) DO UPDATE SET state = excluded.state,"
        " failures = excluded.failures, open_until_ms = excluded.open_until_ms,"
        " half_open_inflight = excluded.half_open_inflight,"
        " last_error = excluded.last_error, updated_ms = excluded.updated_ms",
    [ST_JWKS_GET] = "SELECT body, fetched_ms FROM jwks_cache WHERE url = ?1",
    [ST_JWKS_PUT] =
        "INSERT INTO jwks_cache(url, body, fetched_ms) VALUES (?1, ?2, ?3)"
        " ON CONFLICT(url) DO UPDATE SET body = excluded.body, fetched_ms = excluded.fetched_ms",
    [ST_METRIC_ADD] =
        "INSERT INTO metrics(name, labels, value) VALUES (?1, ?2, ?3)"
        " ON CONFLICT(name, labels) DO UPDATE SET value = metrics.value + excluded.value",
    [ST_METRIC_EACH] = "SELECT name, labels, value FROM metrics ORDER BY name, labels",
    [ST_USAGE_ADD] =
        "INSERT INTO usage_daily(day_ms, user_id, requests, succeeded, failed, refused,"
        " prompt_tokens, completion_tokens, total_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
        " ?9) ON CONFLICT(day_ms, user_id) DO UPDATE SET requests = usage_daily.requests + ?3,"
        " succeeded = usage_daily.succeeded + ?4, failed = usage_daily.failed + ?5, refused = "
        "usage_daily.refused + ?6,"
        " prompt_tokens = usage_daily.prompt_tokens + ?7, completion_tokens = "
        "usage_daily.completion_tokens + ?8,"
        " total_tokens = usage_daily.total_tokens + ?9",
    [ST_TRAFFIC_ADD] =
        "INSERT INTO usage_hourly(hour_ms, requests, succeeded, failed, refused, prompt_tokens,"
        " completion_tokens, total_tokens) VALUES (?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        " ON CONFLICT(hour_ms) DO UPDATE SET requests = usage_hourly.requests + ?3,"
        " succeeded = usage_hourly.succeeded + ?4, failed = usage_hourly.failed + ?5,"
        " refused = usage_hourly.refused + ?6, prompt_tokens = usage_hourly.prompt_tokens + ?7,"
        " completion_tokens = usage_hourly.completion_tokens + ?8,"
        " total_tokens = usage_hourly.total_tokens + ?9",
    [ST_BACKEND_HOUR_ADD] =
        "INSERT INTO backend_hourly(hour_ms, backend, attempts, failures, answered, failed_over)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(hour_ms, backend) DO UPDATE SET"
        " attempts = backend_hourly.attempts + ?3, failures = backend_hourly.failures + ?4, "
        "answered = backend_hourly.answered + ?5,"
        " failed_over = backend_hourly.failed_over + ?6",
    [ST_LATENCY_ADD] =
        "INSERT INTO latency_hourly(hour_ms, backend, bucket_ms, calls) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT(hour_ms, backend, bucket_ms) DO UPDATE SET calls = latency_hourly.calls + ?4",
    /* One operation of a group-committed batch: undone alone when it fails. */
    [ST_SAVEPOINT] = "SAVEPOINT op",
    [ST_RELEASE] = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
};

/*
 * PostgreSQL's versions of the statements that differ. Writers serialise on
 * one transaction-scoped advisory lock, as SQLite's writers do on its file
 * lock: every host's batches run one after the other, each deciding limits
 * and budgets on what the one before committed, so exactness across hosts is
 * exactly the single-host argument (commit.h). The lock is released by the
 * commit or rollback, and held only for SQL: no batch does network I/O.
 */
#define PG_WRITER_LOCK "7316431000001" /* any constant; "aigw" on a phone keypad */
/* A settlement's completion of its audit row, the first part of ST_SETTLE
 * and ST_SETTLE_AUDIT, ... */
#define PG_SETTLE_DONE_SQL                                                                         \
    "WITH done AS (UPDATE audit_log SET model = coalesce(?6, model),"                              \
    " deployment = coalesce(?7, deployment), backend = ?8, attempts = ?9,"                         \
    " attempts_detail = ?10, prompt_tokens = ?14, completion_tokens = ?15,"                        \
    " total_tokens = ?16, latency_ms = ?17, status = ?18, http_status = ?19,"                      \
    " error_code = ?20, error = ?21, response_body = ?25, completed_ms = ?26,"                     \
    " response_id = coalesce(?27, response_id)"                                                    \
    " WHERE request_id = ?1 AND status = 'pending' RETURNING 1)"
/* ST_SETTLE's spend, made only when the row was still pending (FROM done). */
#define PG_SETTLE_SPENT_SQL                                                                        \
    ", spent AS (INSERT INTO budget_usage(user_id, period_start, used, reserved)"                  \
    " SELECT ?28::text, ?29::bigint, greatest(?30::bigint, 0), greatest(?31::bigint, 0)"           \
    " FROM done WHERE ?29::bigint >= 0"                                                            \
    " ON CONFLICT(user_id, period_start) DO UPDATE SET"                                            \
    " used = greatest(budget_usage.used + ?30::bigint, 0),"                                        \
    " reserved = greatest(budget_usage.reserved + ?31::bigint, 0))"
/* ... and its end. A row no longer pending fails the statement, as SQLite's
 * check fails the settlement: the batch then runs again with this operation
 * alone in its savepoint (and the admission cache, which counted the spend,
 * is dropped). */
#define PG_SETTLE_CHECK_SQL                                                                        \
    " SELECT CASE WHEN count(*) = 1 THEN 1"                                                        \
    " ELSE ('audit row no longer pending: ' || count(*))::int END FROM done"
static const char *const pg_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN",
    [ST_WRITE_LOCK] = "SELECT pg_advisory_xact_lock(" PG_WRITER_LOCK ")",
    /* A settlement in one statement, sent with the next one (sql.h): the
     * budget changes only when the row was still pending, which is the
     * check SQLite's two statements make in C. */
    [ST_SETTLE] = PG_SETTLE_DONE_SQL PG_SETTLE_SPENT_SQL PG_SETTLE_CHECK_SQL,
    [ST_SETTLE_AUDIT] = PG_SETTLE_DONE_SQL PG_SETTLE_CHECK_SQL,
    /* An admission in one statement: the reservation (ST_BUDGET_ADD with
     * nothing used), the rate states that moved, and the pending row. */
    [ST_ADMIT] =
        "WITH reserved AS (INSERT INTO budget_usage(user_id, period_start, used, reserved)"
        " SELECT ?28::text, ?29::bigint, 0, greatest(?30::bigint, 0) WHERE ?29::bigint >= 0"
        " ON CONFLICT(user_id, period_start) DO UPDATE SET"
        " reserved = greatest(budget_usage.reserved + ?30::bigint, 0)),"
        " rates AS (INSERT INTO rate_state(user_id, kind, tat_us)"
        " SELECT ?28::text, v.kind, v.tat FROM (VALUES ('requests', ?31::bigint),"
        " ('tokens', ?32::bigint)) AS v(kind, tat) WHERE v.tat > 0"
        " ON CONFLICT(user_id, kind) DO UPDATE SET tat_us = excluded.tat_us)"
        " " PG_AUDIT_INSERT_SQL,
    [ST_AUDIT_INSERT] = PG_AUDIT_INSERT_SQL,
    [ST_KEY_EACH] = "SELECT key_id, user_id, created_ms, expires_ms, revoked_ms FROM api_keys"
                    " WHERE ?1::text IS NULL OR user_id = ?1::text ORDER BY created_ms",
    /* store_admission_state for every subject of a batch at once: ?1 and ?2
     * are arrays of user ids and budget periods, in step. */
    [ST_ADMISSION_PREFETCH] =
        "SELECT u.user_id,"
        " (SELECT tat_us FROM rate_state r WHERE r.user_id = u.user_id AND r.kind = 'requests'),"
        " (SELECT tat_us FROM rate_state r WHERE r.user_id = u.user_id AND r.kind = 'tokens'),"
        " b.used, b.reserved, u.period"
        " FROM unnest(?1::text[], ?2::bigint[]) AS u(user_id, period)"
        " LEFT JOIN budget_usage b ON b.user_id = u.user_id AND b.period_start = u.period",
    [ST_BUDGET_ADD] = "INSERT INTO budget_usage(user_id, period_start, used, reserved)"
                      " VALUES (?1, ?2, greatest(?3::bigint, 0), greatest(?4::bigint, 0))"
                      " ON CONFLICT(user_id, period_start) DO UPDATE SET"
                      " used = greatest(budget_usage.used + ?3::bigint, 0),"
                      " reserved = greatest(budget_usage.reserved + ?4::bigint, 0)",
};

/* The report views of sql/reports.sql, by report name. */
static const struct {
    const char *name;
    const char *sql;
    const char *pg_sql; /* NULL: the same; text sorts byte-wise as in SQLite */
} report_sql[] = {
    {"usage",
     "SELECT day, user_id, requests, succeeded, failed, refused, prompt_tokens,"
     " completion_tokens, total_tokens FROM report_usage WHERE first_ms >= ?1 ORDER BY "
     "day, user_id",
     "SELECT day, user_id, requests, succeeded, failed, refused, prompt_tokens,"
     " completion_tokens, total_tokens FROM report_usage WHERE first_ms >= ?1"
     " ORDER BY day COLLATE \"C\", user_id COLLATE \"C\""},
    {"budget",
     "SELECT user_id, period, period_start, used, reserved, budget, used_pct FROM report_budget"
     " WHERE first_ms >= ?1 OR period_start = 'total' ORDER BY user_id, period_start",
     "SELECT user_id, period, period_start, used, reserved, budget, used_pct FROM report_budget"
     " WHERE first_ms >= ?1 OR period_start = 'total'"
     " ORDER BY user_id COLLATE \"C\", period_start COLLATE \"C\""},
    {"errors",
     "SELECT backend, hour, calls, failures, error_rate, answered, failed_over FROM report_errors"
     " WHERE first_ms >= ?1 ORDER BY hour, backend",
     "SELECT backend, hour, calls, failures, error_rate, answered, failed_over FROM report_errors"
     " WHERE first_ms >= ?1 ORDER BY hour COLLATE \"C\", backend COLLATE \"C\""},
    {"failovers",
     "SELECT time, request_id, from_backend, from_status, to_backend, attempts, status"
     " FROM report_failovers WHERE first_ms >= ?1 ORDER BY first_ms, request_id",
     NULL},
    {"refusals",
     "SELECT reason, refused, strftime('%Y-%m-%dT%H:%M:%SZ', last_ms / 1000, 'unixepoch')"
     " AS last_seen FROM (SELECT error_code AS reason, count(*) AS refused, max(ts_ms) AS last_ms"
     " FROM audit_log WHERE status = 'refused' AND ts_ms >= ?1 GROUP BY error_code)"
     " ORDER BY refused DESC",
     "SELECT reason, refused, to_char(to_timestamp(last_ms / 1000) AT TIME ZONE 'UTC',"
     " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS last_seen FROM (SELECT error_code AS reason,"
     " count(*) AS refused, max(ts_ms) AS last_ms FROM audit_log WHERE status = 'refused'"
     " AND ts_ms >= ?1 GROUP BY error_code) AS r ORDER BY refused DESC"},
    {"traffic",
     "SELECT hour, requests, succeeded, failed, refused, prompt_tokens, completion_tokens,"
     " total_tokens FROM report_traffic WHERE first_ms >= ?1 ORDER BY first_ms",
     NULL},
};

/* What differs between the engines besides statements: their migrations,
 * where the schema's bookkeeping lives and how a migration locks out the
 * other writers. */
struct dialect {
    const char *const *sql; /* replacements of stmt_sql, or NULL */
    const struct migration *migrations;
    const int *n_migrations;
    const char *views_sql;
    const char *bookkeeping; /* creates schema_migrations (and the views' hash) */
    const char *begin_migration;
    const char *views_hash_get;
    const char *views_hash_set[2]; /* the statements before and after the hash */
};

static const struct dialect sqlite_dialect = {
    .sql = NULL,
    .migrations = migrations,
    .n_migrations = &n_migrations,
    .views_sql = reports_sql,
    .bookkeeping = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                   " name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
    .begin_migration = "BEGIN IMMEDIATE",
    .views_hash_get = "PRAGMA user_version",
    .views_hash_set = {"PRAGMA user_version = ", ""},
};

static const struct dialect pg_dialect = {
    .sql = pg_sql,
    .migrations = pg_migrations,
    .n_migrations = &n_pg_migrations,
    .views_sql = pg_reports_sql,
    .bookkeeping = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY,"
                   " name TEXT NOT NULL, applied_ms BIGINT NOT NULL);"
                   " CREATE TABLE IF NOT EXISTS schema_views (hash BIGINT NOT NULL)",
    .begin_migration = "BEGIN; SELECT pg_advisory_xact_lock(" PG_WRITER_LOCK ")",
    .views_hash_get = "SELECT coalesce(max(hash), 0) FROM schema_views",
    .views_hash_set = {"DELETE FROM schema_views; INSERT INTO schema_views(hash) VALUES (", ")"},
};

struct store {
    struct sql_conn *conn;
    const struct dialect *d;
    struct sql_stmt *st[ST__COUNT]; /* NULL: the engine needs no such statement */
    /* The batch's subjects (store_prefetch_admissions), kept current by the
     * batch's own writes; empty outside a transaction. */
    struct admission_cache cache;
    int immediate; /* store_set_immediate: no statement is deferred */
};

/* The writes that must be part of a batch (the group commit's transaction,
 * or the sweep's): one outside any would commit alone, unbatched and
 * unsynchronised with the decisions it belongs to. Checked in every build
 * that does not define NDEBUG (the tests' builds among them). */
#define assert_in_transaction(s) assert(sql_in_transaction((s)->conn))

/* Returns the statement, ready to bind (reset, its bindings cleared). */
static struct sql_stmt *stmt(struct store *s, enum stmt_id id)
{
    struct sql_stmt *st = s->st[id];
    sql_reset(st);
    return st;
}

static void bind_int_or_null(struct sql_stmt *st, int i, int64_t v, int64_t null_value)
{
    if (v == null_value)
        sql_bind_null(st, i);
    else
        sql_bind_int64(st, i, v);
}

/* Runs a statement that returns no rows (or whose rows do not matter). */
static int run(struct sql_stmt *st)
{
    int rc = sql_step(st);
    return rc == SQL_ERROR ? -1 : 0;
}

/* Runs a statement whose outcome may be told by the next one run (sql.h):
 * transaction control and the batch's counters, where a failure fails the
 * whole batch anyway. */
static int run_deferred(struct store *s, struct sql_stmt *st)
{
    if (s->immediate)
        return run(st);
    return sql_step_deferred(st) == SQL_ERROR ? -1 : 0;
}

/* Runs a statement that changes rows: how many, or -1. */
static int64_t run_changes(struct sql_stmt *st)
{
    return run(st) < 0 ? -1 : sql_changes(st);
}

static void copy_col(struct sql_stmt *st, int col, char *out, size_t n)
{
    const char *t = sql_column_text(st, col);
    snprintf(out, n, "%s", t ? t : "");
}

static int64_t col_int_or(struct sql_stmt *st, int col, int64_t dflt)
{
    return sql_column_is_null(st, col) ? dflt : sql_column_int64(st, col);
}

/* The answer of a query for one row: 1 a row, 0 none, -1 error. */
static int found(int rc)
{
    return rc == SQL_ROW ? 1 : rc == SQL_DONE ? 0 : -1;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The hash of the views' text, kept where the schema's bookkeeping is. */
static long views_hash(const char *sql)
{
    uint32_t h = 2166136261u;
    for (const char *p = sql; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return (long)(h & 0x7fffffff);
}

/* Runs a one-row, one-column query used once: its value, or dflt when it
 * has no row or fails (*failed set). */
static int64_t query_int(struct store *s, const char *sql, int64_t version, int64_t dflt,
                         int *failed, struct buf *err)
{
    struct sql_stmt *q = sql_prepare(s->conn, sql, 0, err);
    if (!q) {
        *failed = 1;
        return dflt;
    }
    if (version >= 0)
        sql_bind_int64(q, 1, version);
    int rc = sql_step(q);
    int64_t v = rc == SQL_ROW ? sql_column_int64(q, 0) : dflt;
    if (rc == SQL_ERROR) {
        *failed = 1;
        if (err)
            buf_puts(err, sql_errmsg(s->conn));
    }
    sql_finalize(q);
    return v;
}

/* 1 when every migration is applied and the views are current: read-only,
 * so a role that may only read and write rows (not change the schema)
 * starts against a database its owner has migrated. */
static int schema_current(struct store *s)
{
    const struct dialect *d = s->d;
    int failed = 0;
    for (int i = 0; i < *d->n_migrations && !failed; i++)
        if (query_int(s, "SELECT 1 FROM schema_migrations WHERE version = ?1",
                      d->migrations[i].version, 0, &failed, NULL) != 1)
            return 0;
    return !failed &&
           query_int(s, d->views_hash_get, -1, 0, &failed, NULL) == views_hash(d->views_sql) &&
           !failed;
}

int store_migrate(struct store *s, struct buf *err)
{
    const struct dialect *d = s->d;
    if (schema_current(s))
        return 0;
    if (sql_exec(s->conn, d->bookkeeping, err) < 0)
        return -1;
    int applied = 0, failed = 0;
    for (int i = 0; i < *d->n_migrations; i++) {
        const struct migration *m = &d->migrations[i];
        /* Each migration runs in its own write transaction, so workers starting
         * together apply it once: the second finds it recorded. */
        if (sql_exec(s->conn, d->begin_migration, err) < 0)
            return -1;
        if (query_int(s, "SELECT 1 FROM schema_migrations WHERE version = ?1", m->version, 0,
                      &failed, err) == 1) {
            sql_exec(s->conn, "COMMIT", NULL);
            continue;
        }
        if (failed || sql_exec(s->conn, m->sql, err) < 0) {
            buf_printf(err, " (in migration %s)", m->name);
            sql_exec(s->conn, "ROLLBACK", NULL);
            return -1;
        }
        struct sql_stmt *q = sql_prepare(
            s->conn, "INSERT INTO schema_migrations(version, name, applied_ms) VALUES (?1, ?2, ?3)",
            0, err);
        int rc = SQL_ERROR;
        if (q) {
            sql_bind_int64(q, 1, m->version);
            sql_bind_text(q, 2, m->name);
            sql_bind_int64(q, 3, wall_ms());
            rc = sql_step(q);
            sql_finalize(q);
        }
        if (rc == SQL_ERROR || sql_exec(s->conn, "COMMIT", err) < 0) {
            sql_exec(s->conn, "ROLLBACK", NULL);
            return -1;
        }
        applied++;
    }
    /* The views: recreated when their text changed. */
    long want = views_hash(d->views_sql);
    if (query_int(s, d->views_hash_get, -1, 0, &failed, err) != want || failed) {
        char set[128];
        snprintf(set, sizeof set, "%s%ld%s", d->views_hash_set[0], want, d->views_hash_set[1]);
        if (sql_exec(s->conn, d->begin_migration, err) < 0)
            return -1;
        if (sql_exec(s->conn, d->views_sql, err) < 0 || sql_exec(s->conn, set, err) < 0) {
            buf_puts(err, " (in the report views)");
            sql_exec(s->conn, "ROLLBACK", NULL);
            return -1;
        }
        if (sql_exec(s->conn, "COMMIT", err) < 0)
            return -1;
    }
    return applied;
}

static struct store *open_store(const struct cfg *cfg, int migrate, struct buf *err)
{
    struct store *s = calloc(1, sizeof *s);
    if (!s) {
        buf_puts(err, "out of memory");
        return NULL;
    }
    const char *where;
    if (cfg->database.url) {
        s->d = &pg_dialect;
        s->conn = sql_pg_open(cfg, err);
        where = "database.url";
    } else {
        s->d = &sqlite_dialect;
        s->conn = sql_sqlite_open(cfg->database.path, cfg->database.synchronous,
                                  cfg->database.busy_timeout_ms, err);
        where = cfg->database.path;
    }
    if (!s->conn) {
        free(s);
        return NULL;
    }
    if (migrate && store_migrate(s, err) < 0) {
        buf_printf(err, " (database %s)", where);
        store_close(s);
        return NULL;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        const char *sql = s->d->sql && s->d->sql[i] ? s->d->sql[i] : stmt_sql[i];
        if (sql && !(s->st[i] = sql_prepare(s->conn, sql, 1, err))) {
            buf_printf(err, " (statement %d, database %s)", i, where);
            store_close(s);
            return NULL;
        }
    }
    return s;
}

void store_global_init(void)
{
    sql_sqlite_global_init();
}

struct store *store_open(const struct cfg *cfg, struct buf *err)
{
    return open_store(cfg, 1, err);
}

struct store *store_open_connection(const struct cfg *cfg, struct buf *err)
{
    return open_store(cfg, 0, err);
}

void store_close(struct store *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sql_finalize(s->st[i]);
    sql_close(s->conn);
    admission_cache_free(&s->cache);
    free(s);
}

const char *store_engine(const struct store *s)
{
    return s->d == &pg_dialect ? "postgresql" : "sqlite";
}

int store_checkpoint(struct store *s, int reset, int *wal_frames)
{
    if (s->d != &sqlite_dialect) { /* PostgreSQL checkpoints by itself */
        if (wal_frames)
            *wal_frames = 0;
        return 0;
    }
    return sql_sqlite_checkpoint(s->conn, reset, wal_frames);
}

int store_begin(struct store *s)
{
    admission_cache_clear(&s->cache);
    /* On PostgreSQL both go with the batch's first question: the lock is
     * taken before anything after it runs, and a failure to take it fails
     * that question and the batch. */
    if (run_deferred(s, stmt(s, ST_BEGIN)) < 0)
        return -1;
    if (s->st[ST_WRITE_LOCK] && run_deferred(s, stmt(s, ST_WRITE_LOCK)) < 0) {
        store_rollback(s);
        return -1;
    }
    return 0;
}

int store_undone(struct store *s)
{
    return sql_undone(s->conn);
}

void store_set_immediate(struct store *s, int on)
{
    s->immediate = on;
}

static int flush_admissions(struct store *s);

int store_commit(struct store *s)
{
    int flushed = flush_admissions(s);
    admission_cache_clear(&s->cache);
    if (flushed < 0 || run(stmt(s, ST_COMMIT)) < 0) {
        store_rollback(s);
        return -1;
    }
    return 0;
}

void store_on_commit_sent(struct store *s, void (*fn)(void *arg), void *arg)
{
    s->conn->commit_sent = fn;
    s->conn->commit_sent_arg = arg;
}

void store_rollback(struct store *s)
{
    admission_cache_clear(&s->cache);
    if (sql_in_transaction(s->conn))
        run(stmt(s, ST_ROLLBACK));
}

int store_savepoint(struct store *s)
{
    return run_deferred(s, stmt(s, ST_SAVEPOINT));
}

int store_release(struct store *s)
{
    return run_deferred(s, stmt(s, ST_RELEASE));
}

void store_rollback_to(struct store *s)
{
    admission_cache_clear(&s->cache); /* it may hold what was just undone */
    run(stmt(s, ST_ROLLBACK_TO));
    run(stmt(s, ST_RELEASE));
}

int store_in_transaction(struct store *s)
{
    return sql_in_transaction(s->conn);
}

const char *store_errmsg(struct store *s)
{
    return sql_errmsg(s->conn);
}

/* --- users and keys ------------------------------------------------------ */

static void read_user(struct sql_stmt *st, struct user_row *u)
{
    copy_col(st, 0, u->user_id, sizeof u->user_id);
    copy_col(st, 1, u->roles, sizeof u->roles);
    u->requests_per_window = col_int_or(st, 2, -1);
    u->window_s = col_int_or(st, 3, -1);
    u->tokens_per_minute = col_int_or(st, 4, -1);
    u->token_budget = col_int_or(st, 5, -1);
    copy_col(st, 6, u->budget_period, sizeof u->budget_period);
    u->disabled = (int)sql_column_int64(st, 7);
}

int store_user_get(struct store *s, const char *user_id, struct user_row *out)
{
    struct sql_stmt *st = stmt(s, ST_USER_GET);
    sql_bind_text(st, 1, user_id);
    int rc = sql_step(st);
    if (rc == SQL_ROW)
        read_user(st, out);
    sql_reset(st);
    return found(rc);
}

static void bind_user(struct sql_stmt *st, const struct user_row *u)
{
    sql_bind_text(st, 1, u->user_id);
    sql_bind_text(st, 2, u->roles);
    bind_int_or_null(st, 3, u->requests_per_window, -1);
    bind_int_or_null(st, 4, u->window_s, -1);
    bind_int_or_null(st, 5, u->tokens_per_minute, -1);
    bind_int_or_null(st, 6, u->token_budget, -1);
    sql_bind_text(st, 7, u->budget_period[0] ? u->budget_period : NULL);
    sql_bind_int64(st, 8, u->disabled);
}

int store_user_insert(struct store *s, const struct user_row *u, int64_t now_ms)
{
    struct sql_stmt *st = stmt(s, ST_USER_INSERT);
    bind_user(st, u);
    sql_bind_int64(st, 9, now_ms);
    return run(st);
}

int store_user_update(struct store *s, const struct user_row *u)
{
    struct sql_stmt *st = stmt(s, ST_USER_UPDATE);
    bind_user(st, u);
    return run(st);
}

int store_user_each(struct store *s, void (*fn)(const struct user_row *, void *), void *arg)
{
    struct sql_stmt *st = stmt(s, ST_USER_EACH);
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct user_row u;
        read_user(st, &u);
        fn(&u, arg);
    }
    sql_reset(st);
    return rc == SQL_DONE ? 0 : -1;
}

int store_key_insert(struct store *s, const char *key_id, const unsigned char hash[32],
                     const char *user_id, int64_t now_ms, int64_t expires_ms)
{
    struct sql_stmt *st = stmt(s, ST_KEY_INSERT);
    sql_bind_text(st, 1, key_id);
    sql_bind_blob(st, 2, hash, 32);
    sql_bind_text(st, 3, user_id);
    sql_bind_int64(st, 4, now_ms);
    bind_int_or_null(st, 5, expires_ms, 0);
    return run(st);
}

static void read_key(struct sql_stmt *st, struct key_row *k)
{
    copy_col(st, 0, k->key_id, sizeof k->key_id);
    copy_col(st, 1, k->user_id, sizeof k->user_id);
    k->created_ms = sql_column_int64(st, 2);
    k->expires_ms = col_int_or(st, 3, 0);
    k->revoked_ms = col_int_or(st, 4, 0);
}

int store_key_by_hash(struct store *s, const unsigned char hash[32], struct key_row *out)
{
    struct sql_stmt *st = stmt(s, ST_KEY_BY_HASH);
    sql_bind_blob(st, 1, hash, 32);
    int rc = sql_step(st);
    if (rc == SQL_ROW)
        read_key(st, out);
    sql_reset(st);
    return found(rc);
}

int store_key_revoke(struct store *s, const char *key_id, int64_t now_ms)
{
    struct sql_stmt *st = stmt(s, ST_KEY_REVOKE);
    sql_bind_text(st, 1, key_id);
    sql_bind_int64(st, 2, now_ms);
    int64_t n = run_changes(st);
    return n < 0 ? -1 : n > 0;
}

int store_key_each(struct store *s, const char *user_id, void (*fn)(const struct key_row *, void *),
                   void *arg)
{
    struct sql_stmt *st = stmt(s, ST_KEY_EACH);
    sql_bind_text(st, 1, user_id);
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct key_row k;
        read_key(st, &k);
        fn(&k, arg);
    }
    sql_reset(st);
    return rc == SQL_DONE ? 0 : -1;
}

/* --- limits and budgets ---------------------------------------------------- */

/* The cached tat of kind in e. */
static int64_t *cached_tat(struct admission_entry *e, const char *kind)
{
    return strcmp(kind, "tokens") == 0 ? &e->st.tat_tokens_us : &e->st.tat_requests_us;
}

/* The batch's cache entry that stands in for the writes of user_id's rows
 * (the budget row of period, or with period -1 only its rate states) until
 * the commit (flush_admissions); NULL when they are written at once: on
 * SQLite, where the cache stays empty, for a subject or period the batch did
 * not read, and while every statement is waited for (the savepoint pass). */
static struct admission_entry *deferring_entry(struct store *s, const char *user_id, int64_t period)
{
    struct admission_entry *e = s->immediate ? NULL : admission_cache_find(&s->cache, user_id);
    return e && (period < 0 || e->period == period) ? e : NULL;
}

static unsigned tat_dirty_bit(const char *kind)
{
    return strcmp(kind, "tokens") == 0 ? ADMISSION_DIRTY_TAT_TOKENS : ADMISSION_DIRTY_TAT_REQUESTS;
}

/* What ST_RATE_SET does to the row, done to its cached copy. */
static void rate_cache_set(struct store *s, const char *user_id, const char *kind, int64_t tat_us)
{
    struct admission_entry *e = admission_cache_find(&s->cache, user_id);
    if (e)
        *cached_tat(e, kind) = tat_us;
}

static int rate_write(struct store *s, const char *user_id, const char *kind, int64_t tat_us)
{
    struct sql_stmt *st = stmt(s, ST_RATE_SET);
    sql_bind_text(st, 1, user_id);
    sql_bind_text(st, 2, kind);
    sql_bind_int64(st, 3, tat_us);
    return run_deferred(s, st);
}

int64_t store_rate_tat(struct store *s, const char *user_id, const char *kind)
{
    struct admission_entry *e = admission_cache_find(&s->cache, user_id);
    if (e)
        return *cached_tat(e, kind);
    struct sql_stmt *st = stmt(s, ST_RATE_GET);
    sql_bind_text(st, 1, user_id);
    sql_bind_text(st, 2, kind);
    int rc = sql_step(st);
    int64_t tat = rc == SQL_ROW ? sql_column_int64(st, 0) : 0;
    sql_reset(st);
    return rc == SQL_ROW || rc == SQL_DONE ? tat : -1;
}

int store_rate_set_tat(struct store *s, const char *user_id, const char *kind, int64_t tat_us)
{
    assert_in_transaction(s);
    rate_cache_set(s, user_id, kind, tat_us);
    struct admission_entry *e = deferring_entry(s, user_id, -1);
    if (e) {
        e->dirty |= tat_dirty_bit(kind);
        return 0;
    }
    return rate_write(s, user_id, kind, tat_us);
}

int store_rate_reset(struct store *s, const char *user_id)
{
    struct admission_entry *e = admission_cache_find(&s->cache, user_id);
    if (e) {
        e->st.tat_requests_us = e->st.tat_tokens_us = 0;
        e->dirty &= ~(unsigned)(ADMISSION_DIRTY_TAT_REQUESTS | ADMISSION_DIRTY_TAT_TOKENS);
    }
    struct sql_stmt *st = stmt(s, ST_RATE_RESET);
    sql_bind_text(st, 1, user_id);
    return run(st);
}

/* What ST_BUDGET_ADD does to the row, done to its cached copy. */
static void budget_cache_add(struct store *s, const char *user_id, int64_t period_start,
                             int64_t used_delta, int64_t reserved_delta)
{
    struct admission_entry *e = admission_cache_find(&s->cache, user_id);
    if (!e || e->period != period_start)
        return;
    e->st.budget_used = e->st.budget_used + used_delta > 0 ? e->st.budget_used + used_delta : 0;
    e->st.budget_reserved =
        e->st.budget_reserved + reserved_delta > 0 ? e->st.budget_reserved + reserved_delta : 0;
}

int store_prefetch_admissions(struct store *s, const char *const *users, const int64_t *periods,
                              int n)
{
    if (!s->st[ST_ADMISSION_PREFETCH] || n <= 0)
        return 0; /* SQLite: each admission reads in microseconds */
    /* Array literals: {"id","id"} with " and \ escaped; {p,p}. */
    struct buf ids = {0}, ps = {0};
    buf_putc(&ids, '{');
    buf_putc(&ps, '{');
    for (int i = 0; i < n; i++) {
        buf_puts(&ids, i ? ",\"" : "\"");
        for (const char *p = users[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                buf_putc(&ids, '\\');
            buf_putc(&ids, *p);
        }
        buf_putc(&ids, '"');
        buf_printf(&ps, i ? ",%lld" : "%lld", (long long)periods[i]);
    }
    buf_putc(&ids, '}');
    buf_putc(&ps, '}');
    struct sql_stmt *st = stmt(s, ST_ADMISSION_PREFETCH);
    sql_bind_text(st, 1, buf_cstr(&ids));
    sql_bind_text(st, 2, buf_cstr(&ps));
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct admission_state a = {col_int_or(st, 1, 0), col_int_or(st, 2, 0),
                                    col_int_or(st, 3, 0), col_int_or(st, 4, 0)};
        if (admission_cache_put(&s->cache, sql_column_text(st, 0), sql_column_int64(st, 5), &a) <
            0) {
            admission_cache_clear(&s->cache); /* out of memory: each reads for itself */
            break;
        }
    }
    sql_reset(st);
    buf_free(&ids);
    buf_free(&ps);
    if (rc == SQL_ERROR) {
        admission_cache_clear(&s->cache);
        return -1;
    }
    return 0;
}

int store_admission_state(struct store *s, const char *user_id, int64_t period_start,
                          struct admission_state *out)
{
    struct admission_entry *e = admission_cache_find(&s->cache, user_id);
    if (e && e->period == period_start) {
        *out = e->st;
        return 0;
    }
    struct sql_stmt *st = stmt(s, ST_ADMISSION_STATE);
    sql_bind_text(st, 1, user_id);
    sql_bind_int64(st, 2, period_start);
    int rc = sql_step(st);
    if (rc == SQL_ROW) {
        out->tat_requests_us = col_int_or(st, 0, 0);
        out->tat_tokens_us = col_int_or(st, 1, 0);
        out->budget_used = col_int_or(st, 2, 0);
        out->budget_reserved = col_int_or(st, 3, 0);
    }
    sql_reset(st);
    return rc == SQL_ROW ? 0 : -1;
}

static int budget_write(struct store *s, const char *user_id, int64_t period_start,
                        int64_t used_delta, int64_t reserved_delta)
{
    struct sql_stmt *st = stmt(s, ST_BUDGET_ADD);
    sql_bind_text(st, 1, user_id);
    sql_bind_int64(st, 2, period_start);
    sql_bind_int64(st, 3, used_delta);
    sql_bind_int64(st, 4, reserved_delta);
    return run_deferred(s, st);
}

int store_budget_add(struct store *s, const char *user_id, int64_t period_start, int64_t used_delta,
                     int64_t reserved_delta)
{
    assert_in_transaction(s);
    budget_cache_add(s, user_id, period_start, used_delta, reserved_delta);
    struct admission_entry *e = deferring_entry(s, user_id, period_start);
    if (e) {
        e->dirty |= ADMISSION_DIRTY_BUDGET;
        return 0;
    }
    return budget_write(s, user_id, period_start, used_delta, reserved_delta);
}

/* Writes what the batch's admissions and settlements left in the cache for
 * the commit: each dirty budget row once, as the difference from what was
 * read (nobody else writes it while the batch holds the writer lock, so the
 * row ends exactly as the cache has it), and each dirty rate state. */
static int flush_admissions(struct store *s)
{
    size_t i = 0;
    struct admission_entry *e;
    while ((e = admission_cache_next_dirty(&s->cache, &i))) {
        if ((e->dirty & ADMISSION_DIRTY_BUDGET) &&
            budget_write(s, e->user, e->period, e->st.budget_used - e->read.budget_used,
                         e->st.budget_reserved - e->read.budget_reserved) < 0)
            return -1;
        if ((e->dirty & ADMISSION_DIRTY_TAT_REQUESTS) &&
            rate_write(s, e->user, "requests", e->st.tat_requests_us) < 0)
            return -1;
        if ((e->dirty & ADMISSION_DIRTY_TAT_TOKENS) &&
            rate_write(s, e->user, "tokens", e->st.tat_tokens_us) < 0)
            return -1;
    }
    return 0;
}

/* --- audit ---------------------------------------------------------------- */

static void bind_audit(struct sql_stmt *st, const struct audit_row *r)
{
    sql_bind_text(st, 1, r->request_id);
    sql_bind_int64(st, 2, r->ts_ms);
    sql_bind_text(st, 3, r->user_id);
    sql_bind_text(st, 4, r->end_user);
    sql_bind_text(st, 5, r->operation);
    sql_bind_text(st, 6, r->model);
    sql_bind_text(st, 7, r->deployment);
    sql_bind_text(st, 8, r->backend);
    sql_bind_int64(st, 9, r->attempts);
    sql_bind_text(st, 10, r->attempts_detail);
    sql_bind_int64(st, 11, r->stream);
    sql_bind_int64(st, 12, r->reserved_tokens);
    bind_int_or_null(st, 13, r->budget_period_start, -1);
    sql_bind_int64(st, 14, r->prompt_tokens);
    sql_bind_int64(st, 15, r->completion_tokens);
    sql_bind_int64(st, 16, r->total_tokens);
    if (r->latency_ms >= 0)
        sql_bind_double(st, 17, r->latency_ms);
    else
        sql_bind_null(st, 17);
    sql_bind_text(st, 18, r->status);
    bind_int_or_null(st, 19, r->http_status, 0);
    sql_bind_text(st, 20, r->error_code);
    sql_bind_text(st, 21, r->error);
    sql_bind_text(st, 22, r->client_ip);
    sql_bind_text(st, 23, r->trace_id);
    sql_bind_text(st, 24, r->request_body);
    sql_bind_text(st, 25, r->response_body);
    bind_int_or_null(st, 26, r->completed_ms, 0);
    sql_bind_text(st, 27, r->response_id);
}

int store_response_origin(struct store *s, const char *response_id, struct response_origin *out)
{
    struct sql_stmt *st = stmt(s, ST_RESPONSE_ORIGIN);
    sql_bind_text(st, 1, response_id);
    int rc = sql_step(st);
    memset(out, 0, sizeof *out);
    if (rc == SQL_ROW) {
        copy_col(st, 0, out->backend, sizeof out->backend);
        copy_col(st, 1, out->owner, sizeof out->owner);
        copy_col(st, 2, out->model, sizeof out->model);
        out->total_tokens = sql_column_int64(st, 3);
    }
    sql_reset(st);
    return found(rc);
}

int store_audit_insert(struct store *s, const struct audit_row *r)
{
    assert_in_transaction(s);
    struct sql_stmt *st = stmt(s, ST_AUDIT_INSERT);
    bind_audit(st, r);
    return run_deferred(s, st);
}

int store_admit(struct store *s, const struct audit_row *r, const char *subject, int64_t period,
                int64_t reserve, int64_t tat_requests_us, int64_t tat_tokens_us)
{
    assert_in_transaction(s);
    /* SQLite, each write in microseconds; or PostgreSQL with the subject's
     * rows in the batch's cache, where the first three only mark them for
     * the commit (flush_admissions) and the audit row is all that is sent. */
    if (!s->st[ST_ADMIT] || deferring_entry(s, subject, period))
        return (period >= 0 && store_budget_add(s, subject, period, 0, reserve) < 0) ||
                       (tat_requests_us > 0 &&
                        store_rate_set_tat(s, subject, "requests", tat_requests_us) < 0) ||
                       (tat_tokens_us > 0 &&
                        store_rate_set_tat(s, subject, "tokens", tat_tokens_us) < 0)
                   ? -1
                   : store_audit_insert(s, r);
    if (period >= 0)
        budget_cache_add(s, subject, period, 0, reserve);
    if (tat_requests_us > 0)
        rate_cache_set(s, subject, "requests", tat_requests_us);
    if (tat_tokens_us > 0)
        rate_cache_set(s, subject, "tokens", tat_tokens_us);
    struct sql_stmt *st = stmt(s, ST_ADMIT);
    bind_audit(st, r);
    sql_bind_text(st, 28, subject);
    sql_bind_int64(st, 29, period);
    sql_bind_int64(st, 30, reserve);
    sql_bind_int64(st, 31, tat_requests_us);
    sql_bind_int64(st, 32, tat_tokens_us);
    return run_deferred(s, st);
}

int store_audit_complete(struct store *s, const struct audit_row *r)
{
    assert_in_transaction(s);
    struct sql_stmt *st = stmt(s, ST_AUDIT_COMPLETE);
    bind_audit(st, r);
    return run_changes(st) == 1 ? 0 : -1;
}

int store_settle(struct store *s, const struct audit_row *r, const char *budget_user, int64_t used,
                 int64_t reserved_delta)
{
    assert_in_transaction(s);
    if (!s->st[ST_SETTLE]) { /* SQLite: two statements, the pending check in between */
        if (store_audit_complete(s, r) < 0)
            return -1;
        if (r->budget_period_start < 0)
            return 0;
        return store_budget_add(s, budget_user, r->budget_period_start, used, reserved_delta);
    }
    int64_t period = r->budget_period_start;
    /* The budget row in the batch's cache (or no budget): the statement
     * completes the row alone, and store_budget_add marks the spend for the
     * commit. The statement fails when the row is no longer pending, so the
     * cache may count the spend as made. */
    if (period < 0 || deferring_entry(s, budget_user, period)) {
        struct sql_stmt *st = stmt(s, ST_SETTLE_AUDIT);
        bind_audit(st, r);
        if (run_deferred(s, st) < 0)
            return -1;
        return period < 0 ? 0 : store_budget_add(s, budget_user, period, used, reserved_delta);
    }
    budget_cache_add(s, budget_user, period, used, reserved_delta);
    struct sql_stmt *st = stmt(s, ST_SETTLE);
    bind_audit(st, r);
    sql_bind_text(st, 28, budget_user);
    sql_bind_int64(st, 29, period);
    sql_bind_int64(st, 30, used);
    sql_bind_int64(st, 31, reserved_delta);
    return run_deferred(s, st);
}

int store_audit_stale(struct store *s, int64_t cutoff_ms, struct pending_row *out, int limit)
{
    struct sql_stmt *st = stmt(s, ST_AUDIT_STALE);
    sql_bind_int64(st, 1, cutoff_ms);
    sql_bind_int64(st, 2, limit);
    int n = 0;
    while (n < limit && sql_step(st) == SQL_ROW) {
        copy_col(st, 0, out[n].request_id, sizeof out[n].request_id);
        copy_col(st, 1, out[n].user_id, sizeof out[n].user_id);
        out[n].reserved_tokens = sql_column_int64(st, 2);
        out[n].budget_period_start = col_int_or(st, 3, -1);
        out[n].ts_ms = sql_column_int64(st, 4);
        n++;
    }
    sql_reset(st);
    return n;
}

int store_audit_abandon(struct store *s, const char *request_id, int64_t now_ms)
{
    assert_in_transaction(s);
    struct sql_stmt *st = stmt(s, ST_AUDIT_ABANDON);
    sql_bind_text(st, 1, request_id);
    sql_bind_int64(st, 2, now_ms);
    return (int)run_changes(st);
}

int store_audit_prune(struct store *s, int64_t cutoff_ms, int limit)
{
    struct sql_stmt *st = stmt(s, ST_AUDIT_PRUNE);
    sql_bind_int64(st, 1, cutoff_ms);
    sql_bind_int64(st, 2, limit);
    return (int)run_changes(st);
}

/* --- circuit breakers ------------------------------------------------------- */

const char *store_breaker_state_name(enum breaker_state state)
{
    switch (state) {
    case BREAKER_OPEN: return "open";
    case BREAKER_HALF_OPEN: return "half_open";
    case BREAKER_CLOSED: break;
    }
    return "closed";
}

int store_breaker_get(struct store *s, const char *name, struct breaker_row *out)
{
    struct sql_stmt *st = stmt(s, ST_BREAKER_GET);
    sql_bind_text(st, 1, name);
    int rc = sql_step(st);
    memset(out, 0, sizeof *out);
    out->state = BREAKER_CLOSED;
    if (rc == SQL_ROW) {
        char state[16];
        copy_col(st, 0, state, sizeof state);
        out->state = strcmp(state, "open") == 0        ? BREAKER_OPEN
                     : strcmp(state, "half_open") == 0 ? BREAKER_HALF_OPEN
                                                       : BREAKER_CLOSED;
        out->failures = (int)sql_column_int64(st, 1);
        out->open_until_ms = sql_column_int64(st, 2);
        out->half_open_inflight = (int)sql_column_int64(st, 3);
        copy_col(st, 4, out->last_error, sizeof out->last_error);
        out->updated_ms = sql_column_int64(st, 5);
    }
    sql_reset(st);
    return rc == SQL_ROW || rc == SQL_DONE ? 0 : -1;
}

int store_breaker_put(struct store *s, const char *name, const struct breaker_row *r)
{
    struct sql_stmt *st = stmt(s, ST_BREAKER_PUT);
    sql_bind_text(st, 1, name);
    sql_bind_text(st, 2, store_breaker_state_name(r->state));
    sql_bind_int64(st, 3, r->failures);
    sql_bind_int64(st, 4, r->open_until_ms);
    sql_bind_int64(st, 5, r->half_open_inflight);
    sql_bind_text(st, 6, r->last_error[0] ? r->last_error : NULL);
    sql_bind_int64(st, 7, r->updated_ms);
    return run(st);
}

/* --- JWKS cache ------------------------------------------------------------- */

int store_jwks_get(struct store *s, const char *url, struct buf *out, int64_t *fetched_ms)
{
    struct sql_stmt *st = stmt(s, ST_JWKS_GET);
    sql_bind_text(st, 1, url);
    int rc = sql_step(st);
    if (rc == SQL_ROW) {
        buf_reset(out);
        buf_append(out, sql_column_text(st, 0), (size_t)sql_column_bytes(st, 0));
        *fetched_ms = sql_column_int64(st, 1);
    }
    sql_reset(st);
    return found(rc);
}

int store_jwks_put(struct store *s, const char *url, const char *body, int64_t now_ms)
{
    struct sql_stmt *st = stmt(s, ST_JWKS_PUT);
    sql_bind_text(st, 1, url);
    sql_bind_text(st, 2, body);
    sql_bind_int64(st, 3, now_ms);
    return run(st);
}

/* --- metrics ----------------------------------------------------------------- */

int store_metric_add(struct store *s, const char *name, const char *labels, double delta)
{
    assert_in_transaction(s);
    struct sql_stmt *st = stmt(s, ST_METRIC_ADD);
    sql_bind_text(st, 1, name);
    sql_bind_text(st, 2, labels);
    sql_bind_double(st, 3, delta);
    return run_deferred(s, st);
}

int store_metric_each(struct store *s,
                      void (*fn)(const char *name, const char *labels, double value, void *arg),
                      void *arg)
{
    struct sql_stmt *st = stmt(s, ST_METRIC_EACH);
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW)
        fn(sql_column_text(st, 0), sql_column_text(st, 1), sql_column_double(st, 2), arg);
    sql_reset(st);
    return rc == SQL_DONE ? 0 : -1;
}

/* --- rollups for the reports (inside the settling transaction) --------------- */

/* usage_daily's and usage_hourly's upserts take the same parameters: the
 * period's start, the user (unused per hour) and the seven counts. */
static int usage_row_add(struct store *s, enum stmt_id id, int64_t t, const char *user_id,
                         const int64_t v[7])
{
    assert_in_transaction(s);
    struct sql_stmt *st = stmt(s, id);
    sql_bind_int64(st, 1, t);
    sql_bind_text(st, 2, user_id);
    for (int i = 0; i < 7; i++)
        sql_bind_int64(st, 3 + i, v[i]);
    return run_deferred(s, st);
}

int store_usage_add(struct store *s, int64_t day_ms, const char *user_id, const int64_t v[7])
{
    return usage_row_add(s, ST_USAGE_ADD, day_ms, user_id, v);
}

int store_traffic_add(struct store *s, int64_t hour_ms, const int64_t v[7])
{
    return usage_row_add(s, ST_TRAFFIC_ADD, hour_ms, NULL, v);
}

int store_backend_hour_add(struct store *s, int64_t hour_ms, const char *backend, int64_t attempts,
                           int64_t failures, int64_t answered, int64_t failed_over)
{
    assert_in_transaction(s);
    struct sql_stmt *st = stmt(s, ST_BACKEND_HOUR_ADD);
    sql_bind_int64(st, 1, hour_ms);
    sql_bind_text(st, 2, backend);
    sql_bind_int64(st, 3, attempts);
    sql_bind_int64(st, 4, failures);
    sql_bind_int64(st, 5, answered);
    sql_bind_int64(st, 6, failed_over);
    return run_deferred(s, st);
}

int store_latency_add(struct store *s, int64_t hour_ms, const char *backend, double bucket_ms,
                      int64_t calls)
{
    assert_in_transaction(s);
    struct sql_stmt *st = stmt(s, ST_LATENCY_ADD);
    sql_bind_int64(st, 1, hour_ms);
    sql_bind_text(st, 2, backend);
    sql_bind_double(st, 3, bucket_ms);
    sql_bind_int64(st, 4, calls);
    return run_deferred(s, st);
}

/* --- reports ------------------------------------------------------------------ */

/* One backend's hour of latency buckets, in bucket order (report_latency). */
struct latency_group {
    int64_t hour_ms;
    char backend[128];
    double *bucket; /* bucket_ms */
    int64_t *calls;
    size_t n, cap;
};

/* The row report_latency gives for g: nearest-rank percentiles over the
 * running sum of calls, compared in doubles as the view compares them. */
static void latency_row(const struct latency_group *g,
                        void (*row)(int, const char *const *, const char *const *, void *),
                        void *arg)
{
    static const char *const names[] = {"backend", "hour",   "calls", "p50_ms",
                                        "p95_ms",  "p99_ms", "max_ms"};
    static const double q[] = {0.50, 0.95, 0.99};
    int64_t total = 0, cum = 0;
    for (size_t i = 0; i < g->n; i++)
        total += g->calls[i];
    char pct[4][SQL_REAL_TEXT_MAX];
    int found[3] = {0, 0, 0};
    for (size_t i = 0; i < g->n; i++) {
        cum += g->calls[i];
        for (int k = 0; k < 3; k++)
            if (!found[k] && (double)cum >= q[k] * (double)total) {
                found[k] = 1;
                sql_real_text(g->bucket[i], pct[k]);
            }
    }
    sql_real_text(g->bucket[g->n - 1], pct[3]);
    char hour[32], calls[24];
    time_t t = (time_t)(g->hour_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(hour, sizeof hour, "%Y-%m-%d %H:00", &tm);
    snprintf(calls, sizeof calls, "%lld", (long long)total);
    const char *values[] = {g->backend,
                            hour,
                            calls,
                            found[0] ? pct[0] : NULL,
                            found[1] ? pct[1] : NULL,
                            found[2] ? pct[2] : NULL,
                            pct[3]};
    row(7, names, values, arg);
}

/*
 * The latency report, computed here from one ordered scan of latency_hourly
 * rather than through the view: SQLite cannot push the period into the
 * view's window functions, which then sort every hour ever kept (seconds at
 * a month of traffic). Same rows and text as report_latency.
 */
static int report_latency(struct store *s, int64_t since_ms,
                          void (*row)(int, const char *const *, const char *const *, void *),
                          void *arg)
{
    struct sql_stmt *st = sql_prepare(
        s->conn,
        s->d == &pg_dialect
            ? "SELECT hour_ms, backend, bucket_ms, calls FROM latency_hourly WHERE hour_ms >= ?1"
              " ORDER BY hour_ms, backend COLLATE \"C\", bucket_ms"
            : "SELECT hour_ms, backend, bucket_ms, calls FROM latency_hourly WHERE hour_ms >= ?1"
              " ORDER BY hour_ms, backend, bucket_ms",
        0, NULL);
    if (!st)
        return -1;
    sql_bind_int64(st, 1, since_ms);
    struct latency_group g = {0};
    int rc, failed = 0;
    while ((rc = sql_step(st)) == SQL_ROW && !failed) {
        int64_t hour = sql_column_int64(st, 0);
        const char *backend = sql_column_text(st, 1);
        if (!backend)
            continue;
        if (g.n && (hour != g.hour_ms || strcmp(backend, g.backend) != 0)) {
            latency_row(&g, row, arg);
            g.n = 0;
        }
        if (!g.n) {
            g.hour_ms = hour;
            snprintf(g.backend, sizeof g.backend, "%s", backend);
        }
        if (g.n == g.cap) {
            size_t cap = g.cap ? g.cap * 2 : 256;
            double *b = realloc(g.bucket, cap * sizeof *b);
            int64_t *c = b ? realloc(g.calls, cap * sizeof *c) : NULL;
            if (b)
                g.bucket = b;
            if (!c) {
                failed = 1;
                break;
            }
            g.calls = c;
            g.cap = cap;
        }
        g.bucket[g.n] = sql_column_double(st, 2);
        g.calls[g.n++] = sql_column_int64(st, 3);
    }
    if (rc == SQL_DONE && !failed && g.n)
        latency_row(&g, row, arg);
    sql_finalize(st);
    free(g.bucket);
    free(g.calls);
    return rc == SQL_DONE && !failed ? 0 : -1;
}

int store_report(struct store *s, const char *report, int64_t since_ms,
                 void (*row)(int ncol, const char *const *names, const char *const *values,
                             void *arg),
                 void *arg)
{
    if (strcmp(report, "latency") == 0)
        return report_latency(s, since_ms, row, arg);
    const char *sql = NULL;
    for (size_t i = 0; i < sizeof report_sql / sizeof report_sql[0]; i++)
        if (strcmp(report_sql[i].name, report) == 0)
            sql = s->d == &pg_dialect && report_sql[i].pg_sql ? report_sql[i].pg_sql
                                                              : report_sql[i].sql;
    if (!sql)
        return -2;
    struct sql_stmt *st = sql_prepare(s->conn, sql, 0, NULL);
    if (!st)
        return -1;
    sql_bind_int64(st, 1, since_ms);
    const char *names[32], *values[32];
    int rc, ncol = 0;
    while ((rc = sql_step(st)) == SQL_ROW) {
        if (!ncol) { /* known once the query has run */
            ncol = sql_column_count(st) < 32 ? sql_column_count(st) : 32;
            for (int i = 0; i < ncol; i++)
                names[i] = sql_column_name(st, i);
        }
        for (int i = 0; i < ncol; i++)
            values[i] = sql_column_text(st, i);
        row(ncol, names, values, arg);
    }
    sql_finalize(st);
    return rc == SQL_DONE ? 0 : -1;
}

/* --- recent audit rows (the admin API) ----------------------------------------- */

#define AUDIT_BRIEF_COLUMNS                                                                        \
    "SELECT request_id, ts_ms, user_id, operation, model, backend, status, http_status,"           \
    " total_tokens, latency_ms, error_code FROM audit_log"

int store_audit_recent(struct store *s, int64_t since_ms, const char *user_id,
                       const char *request_id, int limit,
                       void (*fn)(const struct audit_brief *, void *), void *arg)
{
    /* Walks the time index from the newest row: the limit ends the walk. Not
     * prepared with the others, as only the admin API asks. */
    const char *sql = request_id ? AUDIT_BRIEF_COLUMNS " WHERE request_id = ?1"
                      : user_id  ? AUDIT_BRIEF_COLUMNS " WHERE ts_ms >= ?1 AND user_id = ?2"
                                                       " ORDER BY ts_ms DESC, id DESC LIMIT ?3"
                                 : AUDIT_BRIEF_COLUMNS
                          " WHERE ts_ms >= ?1 ORDER BY ts_ms DESC, id DESC LIMIT ?3";
    struct sql_stmt *st = sql_prepare(s->conn, sql, 0, NULL);
    if (!st)
        return -1;
    if (request_id) {
        sql_bind_text(st, 1, request_id);
    } else {
        sql_bind_int64(st, 1, since_ms);
        if (user_id)
            sql_bind_text(st, 2, user_id);
        sql_bind_int64(st, 3, limit);
    }
    int rc;
    while ((rc = sql_step(st)) == SQL_ROW) {
        struct audit_brief b = {
            .request_id = sql_column_text(st, 0),
            .ts_ms = sql_column_int64(st, 1),
            .user_id = sql_column_text(st, 2),
            .operation = sql_column_text(st, 3),
            .model = sql_column_text(st, 4),
            .backend = sql_column_text(st, 5),
            .status = sql_column_text(st, 6),
            .http_status = (int)sql_column_int64(st, 7),
            .total_tokens = sql_column_int64(st, 8),
            .latency_ms = sql_column_is_null(st, 9) ? -1 : sql_column_double(st, 9),
            .error_code = sql_column_text(st, 10),
        };
        fn(&b, arg);
    }
    sql_finalize(st);
    return rc == SQL_DONE ? 0 : -1;
}

int store_report_newest(struct store *s, const char *report, int64_t since_ms, long limit,
                        void (*row)(int ncol, const char *const *names, const char *const *values,
                                    void *arg),
                        void *arg, long *total)
{
    *total = -1;
    if (strcmp(report, "failovers") != 0)
        return store_report(s, report, since_ms, row, arg);
    /* Only the newest rows are read (the failovers index backwards), not a
     * month of them to keep the last few hundred: each costs two JSON
     * extractions. */
    struct sql_stmt *st =
        sql_prepare(s->conn, "SELECT count(*) FROM report_failovers WHERE first_ms >= ?1", 0, NULL);
    if (!st)
        return -1;
    sql_bind_int64(st, 1, since_ms);
    int rc = sql_step(st);
    *total = rc == SQL_ROW ? (long)sql_column_int64(st, 0) : -1;
    sql_finalize(st);
    if (rc != SQL_ROW)
        return -1;
    st =
        sql_prepare(s->conn,
                    "SELECT * FROM (SELECT time, request_id, from_backend, from_status, to_backend,"
                    " attempts, status, first_ms FROM report_failovers WHERE first_ms >= ?1"
                    " ORDER BY first_ms DESC, request_id DESC LIMIT ?2) AS newest"
                    " ORDER BY first_ms, request_id",
                    0, NULL);
    if (!st)
        return -1;
    sql_bind_int64(st, 1, since_ms);
    sql_bind_int64(st, 2, limit);
    const char *names[8], *values[8];
    while ((rc = sql_step(st)) == SQL_ROW) {
        for (int i = 0; i < 7; i++) {
            names[i] = sql_column_name(st, i);
            values[i] = sql_column_text(st, i);
        }
        row(7, names, values, arg); /* first_ms only orders them */
    }
    sql_finalize(st);
    return rc == SQL_DONE ? 0 : -1;
}

/* --- copying a database (aigw db copy) ---------------------------------------- */

/* Every table, parents before children; audit_log's id is made by the
 * destination (ids in the same order), and so is its timestamp on SQLite,
 * where it is computed. */
static const char *const copied_tables[] = {
    "users",          "api_keys",  "rate_state",  "budget_usage", "backend_state",
    "jwks_cache",     "metrics",   "usage_daily", "usage_hourly", "backend_hourly",
    "latency_hourly", "audit_log", NULL};

static int column_copied(const char *table, const char *col, int to_sqlite)
{
    return strcmp(table, "audit_log") != 0 ||
           (strcmp(col, "id") != 0 && (!to_sqlite || strcmp(col, "timestamp") != 0));
}

/* Copies one table's rows; returns how many, or -1 with the reason in err. */
static long copy_table(struct store *from, struct store *to, const char *table, struct buf *err)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT * FROM %s%s", table,
             strcmp(table, "audit_log") == 0 ? " ORDER BY id" : "");
    struct sql_stmt *src = sql_prepare(from->conn, sql, 0, err), *dst = NULL;
    if (!src)
        return -1;
    long rows = 0;
    int rc, ncol = 0, keep[64];
    while ((rc = sql_step(src)) == SQL_ROW) {
        if (!dst) { /* the INSERT, from the first row's columns */
            struct buf ins = {0}, vals = {0};
            ncol = sql_column_count(src) < 64 ? sql_column_count(src) : 64;
            int n = 0;
            buf_printf(&ins, "INSERT INTO %s(", table);
            for (int i = 0; i < ncol; i++) {
                const char *name = sql_column_name(src, i);
                if (!(keep[i] = column_copied(table, name, to->d == &sqlite_dialect)))
                    continue;
                buf_printf(&ins, "%s%s", n ? ", " : "", name);
                buf_printf(&vals, "%s?%d", n ? ", " : "", n + 1);
                n++;
            }
            buf_printf(&ins, ") VALUES (%s)", buf_cstr(&vals));
            dst = sql_prepare(to->conn, buf_cstr(&ins), 1, err);
            buf_free(&ins);
            buf_free(&vals);
            if (!dst)
                break;
        }
        sql_reset(dst);
        for (int i = 0, n = 0; i < ncol; i++) {
            if (!keep[i])
                continue;
            n++;
            if (sql_column_is_null(src, i))
                sql_bind_null(dst, n);
            else if (sql_column_is_blob(src, i))
                sql_bind_blob(dst, n, sql_column_blob(src, i), sql_column_bytes(src, i));
            else
                sql_bind_text(dst, n, sql_column_text(src, i));
        }
        if (sql_step(dst) == SQL_ERROR) {
            buf_printf(err, "%s: %s", table, sql_errmsg(to->conn));
            rc = SQL_ERROR;
            break;
        }
        rows++;
    }
    if (rc == SQL_ERROR && !err->len)
        buf_printf(err, "%s: %s", table, sql_errmsg(from->conn));
    sql_finalize(src);
    sql_finalize(dst);
    return rc == SQL_ERROR || (rows && !dst) ? -1 : rows;
}

int store_copy(struct store *from, struct store *to,
               void (*copied)(const char *table, long rows, void *arg), void *arg, struct buf *err)
{
    int failed = 0;
    int64_t present = query_int(to,
                                "SELECT (SELECT count(*) FROM users) +"
                                " (SELECT count(*) FROM api_keys) +"
                                " (SELECT count(*) FROM audit_log)",
                                -1, 0, &failed, err);
    if (failed)
        return -1;
    if (present) {
        buf_puts(err, "the destination database already has users, keys or audit rows: "
                      "copy into a new, migrated database");
        return -1;
    }
    if (store_begin(to) < 0) {
        buf_printf(err, "cannot begin: %s", sql_errmsg(to->conn));
        return -1;
    }
    for (const char *const *t = copied_tables; *t; t++) {
        long rows = copy_table(from, to, *t, err);
        if (rows < 0) {
            store_rollback(to);
            return -1;
        }
        copied(*t, rows, arg);
    }
    if (store_commit(to) < 0) {
        buf_printf(err, "cannot commit: %s", sql_errmsg(to->conn));
        return -1;
    }
    return 0;
}
