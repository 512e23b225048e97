/*
 * store.c - the SQLite store: every SQL statement of aigw.
 *
 * A struct store is one connection, used by one thread at a time: a worker
 * process keeps a few for reading and one for the group commit (db.c,
 * commit.c), all opened after fork. WAL mode lets readers run beside the one
 * writer; the busy handler makes other programs' writers (the sqlite3 shell,
 * the operator's commands) queue instead of failing. Statements are prepared
 * once per connection and reset after each use, so the request path never
 * compiles SQL.
 */
#include "store.h"

#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migrations.h"

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
    ST_BUDGET_GET,
    ST_BUDGET_ADD,
    ST_AUDIT_INSERT,
    ST_AUDIT_COMPLETE,
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
    ST_BACKEND_HOUR_ADD,
    ST_LATENCY_ADD,
    ST_SAVEPOINT,
    ST_RELEASE,
    ST_ROLLBACK_TO,
    ST__COUNT
};

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
    [ST_BUDGET_GET] =
        "SELECT used, reserved FROM budget_usage WHERE user_id = ?1 AND period_start = ?2",
    [ST_BUDGET_ADD] = "INSERT INTO budget_usage(user_id, period_start, used, reserved)"
                      " VALUES (?1, ?2, max(?3, 0), max(?4, 0))"
                      " ON CONFLICT(user_id, period_start) DO UPDATE SET"
                      " used = max(used + ?3, 0), reserved = max(reserved + ?4, 0)",
    [ST_AUDIT_INSERT] =
        "INSERT INTO audit_log(request_id, ts_ms, user_id, end_user, operation, model, deployment,"
        " backend, attempts, attempts_detail, stream, reserved_tokens, budget_period_start,"
        " prompt_tokens, completion_tokens, total_tokens, latency_ms, status, http_status,"
        " error_code, error, client_ip, trace_id, request_body, response_body, completed_ms,"
        " response_id)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
        " ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
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
    [ST_METRIC_ADD] = "INSERT INTO metrics(name, labels, value) VALUES (?1, ?2, ?3)"
                      " ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value",
    [ST_METRIC_EACH] = "SELECT name, labels, value FROM metrics ORDER BY name, labels",
    [ST_USAGE_ADD] =
        "INSERT INTO usage_daily(day_ms, user_id, requests, succeeded, failed, refused,"
        " prompt_tokens, completion_tokens, total_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
        " ?9) ON CONFLICT(day_ms, user_id) DO UPDATE SET requests = requests + ?3,"
        " succeeded = succeeded + ?4, failed = failed + ?5, refused = refused + ?6,"
        " prompt_tokens = prompt_tokens + ?7, completion_tokens = completion_tokens + ?8,"
        " total_tokens = total_tokens + ?9",
    [ST_BACKEND_HOUR_ADD] =
        "INSERT INTO backend_hourly(hour_ms, backend, attempts, failures, answered, failed_over)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(hour_ms, backend) DO UPDATE SET"
        " attempts = attempts + ?3, failures = failures + ?4, answered = answered + ?5,"
        " failed_over = failed_over + ?6",
    [ST_LATENCY_ADD] =
        "INSERT INTO latency_hourly(hour_ms, backend, bucket_ms, calls) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT(hour_ms, backend, bucket_ms) DO UPDATE SET calls = calls + ?4",
    /* One operation of a group-committed batch: undone alone when it fails. */
    [ST_SAVEPOINT] = "SAVEPOINT op",
    [ST_RELEASE] = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
};

/* The report views of sql/reports.sql, by report name. */
static const struct {
    const char *name;
    const char *sql;
} report_sql[] = {
    {"usage", "SELECT day, user_id, requests, succeeded, failed, refused, prompt_tokens,"
              " completion_tokens, total_tokens FROM report_usage WHERE first_ms >= ?1 ORDER BY "
              "day, user_id"},
    {"budget",
     "SELECT user_id, period, period_start, used, reserved, budget, used_pct FROM report_budget"
     " WHERE first_ms >= ?1 OR period_start = 'total' ORDER BY user_id, period_start"},
    {"errors",
     "SELECT backend, hour, calls, failures, error_rate, answered, failed_over FROM report_errors"
     " WHERE first_ms >= ?1 ORDER BY hour, backend"},
    {"latency", "SELECT backend, hour, calls, p50_ms, p95_ms, p99_ms, max_ms FROM report_latency"
                " WHERE first_ms >= ?1 ORDER BY hour, backend"},
    {"failovers", "SELECT time, request_id, from_backend, from_status, to_backend, attempts, status"
                  " FROM report_failovers WHERE first_ms >= ?1 ORDER BY first_ms"},
    {"refusals",
     "SELECT reason, refused, strftime('%Y-%m-%dT%H:%M:%SZ', last_ms / 1000, 'unixepoch')"
     " AS last_seen FROM (SELECT error_code AS reason, count(*) AS refused, max(ts_ms) AS last_ms"
     " FROM audit_log WHERE status = 'refused' AND ts_ms >= ?1 GROUP BY error_code)"
     " ORDER BY refused DESC"},
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    int busy_timeout_ms;
};

/*
 * Waiting for the write lock. Other workers hold it for well under a
 * millisecond (one short transaction), but SQLite's own busy handler sleeps
 * 1, 2, 5, 10... ms at a time; this one starts at 20 microseconds and doubles
 * up to 1 ms, so a worker gets the lock about as soon as it is free. Gives up
 * after busy_timeout_ms like sqlite3_busy_timeout would.
 */
static int busy_wait(void *arg, int count)
{
    struct store *s = arg;
    static const long first_us = 20, most_us = 1000;
    long sleep_us = first_us << (count < 6 ? count : 6);
    if (sleep_us > most_us)
        sleep_us = most_us;
    /* Time spent so far, bounded above by the sum of the sleeps before this one. */
    long waited_us = count < 6 ? first_us * ((1L << count) - 1) : 1260 + (count - 6) * most_us;
    if (waited_us / 1000 >= s->busy_timeout_ms)
        return 0;
    struct timespec ts = {0, sleep_us * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

/* The writes that must be part of a batch (the group commit's transaction,
 * or the sweep's): one outside any would commit alone, unbatched and
 * unsynchronised with the decisions it belongs to. Checked in every build
 * that does not define NDEBUG (the tests' builds among them). */
#define assert_in_transaction(s) assert(!sqlite3_get_autocommit((s)->db))

/* Returns the statement, reset and with its bindings cleared. */
static sqlite3_stmt *stmt(struct store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->st[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_int_or_null(sqlite3_stmt *st, int i, int64_t v, int64_t null_value)
{
    if (v == null_value)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, v);
}

/* Runs a statement that returns no rows. */
static int run(struct store *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    (void)s;
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t n)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(out, n, "%s", t ? (const char *)t : "");
}

static int64_t col_int_or(sqlite3_stmt *st, int col, int64_t dflt)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? dflt : sqlite3_column_int64(st, col);
}

static int exec_sql(struct store *s, const char *sql, struct buf *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        if (err)
            buf_printf(err, "%s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* A statement used once (migrations), or NULL with SQLite's reason in err. */
static sqlite3_stmt *prepare_once(struct store *s, const char *sql, struct buf *err)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) {
        if (err)
            buf_printf(err, "cannot prepare \"%.40s...\": %s", sql, sqlite3_errmsg(s->db));
        sqlite3_finalize(q);
        return NULL;
    }
    return q;
}

int store_migrate(struct store *s, struct buf *err)
{
    if (exec_sql(s,
                 "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                 " name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
                 err) < 0)
        return -1;
    int applied = 0;
    for (int i = 0; i < n_migrations; i++) {
        const struct migration *m = &migrations[i];
        /* Each migration runs in its own write transaction, so workers starting
         * together apply it once: the second finds it recorded. */
        if (exec_sql(s, "BEGIN IMMEDIATE", err) < 0)
            return -1;
        sqlite3_stmt *q =
            prepare_once(s, "SELECT 1 FROM schema_migrations WHERE version = ?1", err);
        if (!q) {
            exec_sql(s, "ROLLBACK", NULL);
            return -1;
        }
        sqlite3_bind_int(q, 1, m->version);
        int done = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_finalize(q);
        if (done) {
            exec_sql(s, "COMMIT", NULL);
            continue;
        }
        if (exec_sql(s, m->sql, err) < 0) {
            buf_printf(err, " (in migration %s)", m->name);
            exec_sql(s, "ROLLBACK", NULL);
            return -1;
        }
        q = prepare_once(
            s,
            "INSERT INTO schema_migrations(version, name, applied_ms)"
            " VALUES (?1, ?2, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
            err);
        if (!q) {
            exec_sql(s, "ROLLBACK", NULL);
            return -1;
        }
        sqlite3_bind_int(q, 1, m->version);
        sqlite3_bind_text(q, 2, m->name, -1, SQLITE_STATIC);
        int rc = sqlite3_step(q);
        sqlite3_finalize(q);
        if (rc != SQLITE_DONE || exec_sql(s, "COMMIT", err) < 0) {
            exec_sql(s, "ROLLBACK", NULL);
            return -1;
        }
        applied++;
    }
    /* The views: recreated when reports.sql changed (its hash is user_version). */
    uint32_t h = 2166136261u;
    for (const char *p = reports_sql; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    int32_t want = (int32_t)(h & 0x7fffffff);
    sqlite3_stmt *q = prepare_once(s, "PRAGMA user_version", err);
    if (!q)
        return -1;
    int32_t have = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
    sqlite3_finalize(q);
    if (have != want) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", (int)want);
        if (exec_sql(s, "BEGIN IMMEDIATE", err) < 0)
            return -1;
        if (exec_sql(s, reports_sql, err) < 0 || exec_sql(s, pragma, err) < 0) {
            buf_puts(err, " (in reports.sql)");
            exec_sql(s, "ROLLBACK", NULL);
            return -1;
        }
        if (exec_sql(s, "COMMIT", err) < 0)
            return -1;
    }
    return applied;
}

static struct store *open_connection(const char *path, const char *synchronous, int busy_timeout_ms,
                                     int migrate, struct buf *err)
{
    struct store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        buf_printf(err, "cannot open database %s: %s", path,
                   s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        store_close(s);
        return NULL;
    }
    s->busy_timeout_ms = busy_timeout_ms;
    sqlite3_busy_handler(s->db, busy_wait, s);
    /* mmap: pages are read from the shared mapping instead of one pread each.
     * journal_size_limit: the WAL file is truncated back after checkpoints
     * instead of keeping its high-water size forever. wal_autocheckpoint 0:
     * no commit on the request path copies the WAL back; the elected
     * housekeeping thread checkpoints instead (housekeeping.c). */
    char pragmas[320];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s; PRAGMA foreign_keys = ON;"
             " PRAGMA mmap_size = 268435456; PRAGMA journal_size_limit = 67108864;"
             " PRAGMA wal_autocheckpoint = 0;",
             synchronous && strcmp(synchronous, "full") == 0  ? "FULL"
             : synchronous && strcmp(synchronous, "off") == 0 ? "OFF"
                                                              : "NORMAL");
    if (exec_sql(s, pragmas, err) < 0 || (migrate && store_migrate(s, err) < 0)) {
        buf_printf(err, " (database %s)", path);
        store_close(s);
        return NULL;
    }
    for (int i = 0; i < ST__COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK) {
            buf_printf(err, "cannot prepare statement %d: %s", i, sqlite3_errmsg(s->db));
            store_close(s);
            return NULL;
        }
    }
    return s;
}

void store_global_init(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

struct store *store_open(const char *path, const char *synchronous, int busy_timeout_ms,
                         struct buf *err)
{
    return open_connection(path, synchronous, busy_timeout_ms, 1, err);
}

struct store *store_open_connection(const char *path, const char *synchronous, int busy_timeout_ms,
                                    struct buf *err)
{
    return open_connection(path, synchronous, busy_timeout_ms, 0, err);
}

void store_close(struct store *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    free(s);
}

int store_checkpoint(struct store *s, int reset, int *wal_frames)
{
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(
        s->db, NULL, reset ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (wal_frames)
        *wal_frames = log;
    return rc == SQLITE_OK || rc == SQLITE_BUSY ? log - done : -1;
}

int store_begin(struct store *s)
{
    return run(s, stmt(s, ST_BEGIN));
}

int store_commit(struct store *s)
{
    if (run(s, stmt(s, ST_COMMIT)) < 0) {
        store_rollback(s);
        return -1;
    }
    return 0;
}

void store_rollback(struct store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        run(s, stmt(s, ST_ROLLBACK));
}

int store_savepoint(struct store *s)
{
    return run(s, stmt(s, ST_SAVEPOINT));
}

int store_release(struct store *s)
{
    return run(s, stmt(s, ST_RELEASE));
}

void store_rollback_to(struct store *s)
{
    run(s, stmt(s, ST_ROLLBACK_TO));
    run(s, stmt(s, ST_RELEASE));
}

int store_in_transaction(struct store *s)
{
    return !sqlite3_get_autocommit(s->db);
}

const char *store_errmsg(struct store *s)
{
    return sqlite3_errmsg(s->db);
}

/* --- users and keys ------------------------------------------------------ */

static void read_user(sqlite3_stmt *st, struct user_row *u)
{
    copy_col(st, 0, u->user_id, sizeof u->user_id);
    copy_col(st, 1, u->roles, sizeof u->roles);
    u->requests_per_window = col_int_or(st, 2, -1);
    u->window_s = col_int_or(st, 3, -1);
    u->tokens_per_minute = col_int_or(st, 4, -1);
    u->token_budget = col_int_or(st, 5, -1);
    copy_col(st, 6, u->budget_period, sizeof u->budget_period);
    u->disabled = sqlite3_column_int(st, 7);
}

int store_user_get(struct store *s, const char *user_id, struct user_row *out)
{
    sqlite3_stmt *st = stmt(s, ST_USER_GET);
    bind_text(st, 1, user_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_user(st, out);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

static void bind_user(sqlite3_stmt *st, const struct user_row *u)
{
    bind_text(st, 1, u->user_id);
    bind_text(st, 2, u->roles);
    bind_int_or_null(st, 3, u->requests_per_window, -1);
    bind_int_or_null(st, 4, u->window_s, -1);
    bind_int_or_null(st, 5, u->tokens_per_minute, -1);
    bind_int_or_null(st, 6, u->token_budget, -1);
    bind_text(st, 7, u->budget_period[0] ? u->budget_period : NULL);
    sqlite3_bind_int(st, 8, u->disabled);
}

int store_user_insert(struct store *s, const struct user_row *u, int64_t now_ms)
{
    sqlite3_stmt *st = stmt(s, ST_USER_INSERT);
    bind_user(st, u);
    sqlite3_bind_int64(st, 9, now_ms);
    return run(s, st);
}

int store_user_update(struct store *s, const struct user_row *u)
{
    sqlite3_stmt *st = stmt(s, ST_USER_UPDATE);
    bind_user(st, u);
    return run(s, st);
}

int store_user_each(struct store *s, void (*fn)(const struct user_row *, void *), void *arg)
{
    sqlite3_stmt *st = stmt(s, ST_USER_EACH);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct user_row u;
        read_user(st, &u);
        fn(&u, arg);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int store_key_insert(struct store *s, const char *key_id, const unsigned char hash[32],
                     const char *user_id, int64_t now_ms, int64_t expires_ms)
{
    sqlite3_stmt *st = stmt(s, ST_KEY_INSERT);
    bind_text(st, 1, key_id);
    sqlite3_bind_blob(st, 2, hash, 32, SQLITE_STATIC);
    bind_text(st, 3, user_id);
    sqlite3_bind_int64(st, 4, now_ms);
    bind_int_or_null(st, 5, expires_ms, 0);
    return run(s, st);
}

static void read_key(sqlite3_stmt *st, struct key_row *k)
{
    copy_col(st, 0, k->key_id, sizeof k->key_id);
    copy_col(st, 1, k->user_id, sizeof k->user_id);
    k->created_ms = sqlite3_column_int64(st, 2);
    k->expires_ms = col_int_or(st, 3, 0);
    k->revoked_ms = col_int_or(st, 4, 0);
}

int store_key_by_hash(struct store *s, const unsigned char hash[32], struct key_row *out)
{
    sqlite3_stmt *st = stmt(s, ST_KEY_BY_HASH);
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_key(st, out);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int store_key_revoke(struct store *s, const char *key_id, int64_t now_ms)
{
    sqlite3_stmt *st = stmt(s, ST_KEY_REVOKE);
    bind_text(st, 1, key_id);
    sqlite3_bind_int64(st, 2, now_ms);
    if (run(s, st) < 0)
        return -1;
    return sqlite3_changes(s->db) > 0;
}

int store_key_each(struct store *s, const char *user_id, void (*fn)(const struct key_row *, void *),
                   void *arg)
{
    sqlite3_stmt *st = stmt(s, ST_KEY_EACH);
    bind_text(st, 1, user_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct key_row k;
        read_key(st, &k);
        fn(&k, arg);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* --- limits and budgets ---------------------------------------------------- */

int64_t store_rate_tat(struct store *s, const char *user_id, const char *kind)
{
    sqlite3_stmt *st = stmt(s, ST_RATE_GET);
    bind_text(st, 1, user_id);
    bind_text(st, 2, kind);
    int rc = sqlite3_step(st);
    int64_t tat = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? tat : -1;
}

int store_rate_set_tat(struct store *s, const char *user_id, const char *kind, int64_t tat_us)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_RATE_SET);
    bind_text(st, 1, user_id);
    bind_text(st, 2, kind);
    sqlite3_bind_int64(st, 3, tat_us);
    return run(s, st);
}

int store_rate_reset(struct store *s, const char *user_id)
{
    sqlite3_stmt *st = stmt(s, ST_RATE_RESET);
    bind_text(st, 1, user_id);
    return run(s, st);
}

int store_budget_get(struct store *s, const char *user_id, int64_t period_start, int64_t *used,
                     int64_t *reserved)
{
    sqlite3_stmt *st = stmt(s, ST_BUDGET_GET);
    bind_text(st, 1, user_id);
    sqlite3_bind_int64(st, 2, period_start);
    int rc = sqlite3_step(st);
    *used = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    *reserved = rc == SQLITE_ROW ? sqlite3_column_int64(st, 1) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int store_budget_add(struct store *s, const char *user_id, int64_t period_start, int64_t used_delta,
                     int64_t reserved_delta)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_BUDGET_ADD);
    bind_text(st, 1, user_id);
    sqlite3_bind_int64(st, 2, period_start);
    sqlite3_bind_int64(st, 3, used_delta);
    sqlite3_bind_int64(st, 4, reserved_delta);
    return run(s, st);
}

/* --- audit ---------------------------------------------------------------- */

static void bind_audit(sqlite3_stmt *st, const struct audit_row *r)
{
    bind_text(st, 1, r->request_id);
    sqlite3_bind_int64(st, 2, r->ts_ms);
    bind_text(st, 3, r->user_id);
    bind_text(st, 4, r->end_user);
    bind_text(st, 5, r->operation);
    bind_text(st, 6, r->model);
    bind_text(st, 7, r->deployment);
    bind_text(st, 8, r->backend);
    sqlite3_bind_int(st, 9, r->attempts);
    bind_text(st, 10, r->attempts_detail);
    sqlite3_bind_int(st, 11, r->stream);
    sqlite3_bind_int64(st, 12, r->reserved_tokens);
    bind_int_or_null(st, 13, r->budget_period_start, -1);
    sqlite3_bind_int64(st, 14, r->prompt_tokens);
    sqlite3_bind_int64(st, 15, r->completion_tokens);
    sqlite3_bind_int64(st, 16, r->total_tokens);
    if (r->latency_ms >= 0)
        sqlite3_bind_double(st, 17, r->latency_ms);
    else
        sqlite3_bind_null(st, 17);
    bind_text(st, 18, r->status);
    bind_int_or_null(st, 19, r->http_status, 0);
    bind_text(st, 20, r->error_code);
    bind_text(st, 21, r->error);
    bind_text(st, 22, r->client_ip);
    bind_text(st, 23, r->trace_id);
    bind_text(st, 24, r->request_body);
    bind_text(st, 25, r->response_body);
    bind_int_or_null(st, 26, r->completed_ms, 0);
    bind_text(st, 27, r->response_id);
}

int store_response_origin(struct store *s, const char *response_id, struct response_origin *out)
{
    sqlite3_stmt *st = stmt(s, ST_RESPONSE_ORIGIN);
    bind_text(st, 1, response_id);
    int rc = sqlite3_step(st);
    memset(out, 0, sizeof *out);
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, out->backend, sizeof out->backend);
        copy_col(st, 1, out->owner, sizeof out->owner);
        copy_col(st, 2, out->model, sizeof out->model);
        out->total_tokens = sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int store_audit_insert(struct store *s, const struct audit_row *r)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_AUDIT_INSERT);
    bind_audit(st, r);
    return run(s, st);
}

int store_audit_complete(struct store *s, const struct audit_row *r)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_AUDIT_COMPLETE);
    bind_audit(st, r);
    if (run(s, st) < 0)
        return -1;
    return sqlite3_changes(s->db) == 1 ? 0 : -1;
}

int store_audit_stale(struct store *s, int64_t cutoff_ms, struct pending_row *out, int limit)
{
    sqlite3_stmt *st = stmt(s, ST_AUDIT_STALE);
    sqlite3_bind_int64(st, 1, cutoff_ms);
    sqlite3_bind_int(st, 2, limit);
    int n = 0;
    while (n < limit && sqlite3_step(st) == SQLITE_ROW) {
        copy_col(st, 0, out[n].request_id, sizeof out[n].request_id);
        copy_col(st, 1, out[n].user_id, sizeof out[n].user_id);
        out[n].reserved_tokens = sqlite3_column_int64(st, 2);
        out[n].budget_period_start = col_int_or(st, 3, -1);
        out[n].ts_ms = sqlite3_column_int64(st, 4);
        n++;
    }
    sqlite3_reset(st);
    return n;
}

int store_audit_abandon(struct store *s, const char *request_id, int64_t now_ms)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_AUDIT_ABANDON);
    bind_text(st, 1, request_id);
    sqlite3_bind_int64(st, 2, now_ms);
    if (run(s, st) < 0)
        return -1;
    return sqlite3_changes(s->db);
}

int store_audit_prune(struct store *s, int64_t cutoff_ms, int limit)
{
    sqlite3_stmt *st = stmt(s, ST_AUDIT_PRUNE);
    sqlite3_bind_int64(st, 1, cutoff_ms);
    sqlite3_bind_int(st, 2, limit);
    if (run(s, st) < 0)
        return -1;
    return sqlite3_changes(s->db);
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
    sqlite3_stmt *st = stmt(s, ST_BREAKER_GET);
    bind_text(st, 1, name);
    int rc = sqlite3_step(st);
    memset(out, 0, sizeof *out);
    out->state = BREAKER_CLOSED;
    if (rc == SQLITE_ROW) {
        char state[16];
        copy_col(st, 0, state, sizeof state);
        out->state = strcmp(state, "open") == 0        ? BREAKER_OPEN
                     : strcmp(state, "half_open") == 0 ? BREAKER_HALF_OPEN
                                                       : BREAKER_CLOSED;
        out->failures = sqlite3_column_int(st, 1);
        out->open_until_ms = sqlite3_column_int64(st, 2);
        out->half_open_inflight = sqlite3_column_int(st, 3);
        copy_col(st, 4, out->last_error, sizeof out->last_error);
        out->updated_ms = sqlite3_column_int64(st, 5);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int store_breaker_put(struct store *s, const char *name, const struct breaker_row *r)
{
    sqlite3_stmt *st = stmt(s, ST_BREAKER_PUT);
    bind_text(st, 1, name);
    bind_text(st, 2, store_breaker_state_name(r->state));
    sqlite3_bind_int(st, 3, r->failures);
    sqlite3_bind_int64(st, 4, r->open_until_ms);
    sqlite3_bind_int(st, 5, r->half_open_inflight);
    bind_text(st, 6, r->last_error[0] ? r->last_error : NULL);
    sqlite3_bind_int64(st, 7, r->updated_ms);
    return run(s, st);
}

/* --- JWKS cache ------------------------------------------------------------- */

int store_jwks_get(struct store *s, const char *url, struct buf *out, int64_t *fetched_ms)
{
    sqlite3_stmt *st = stmt(s, ST_JWKS_GET);
    bind_text(st, 1, url);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        buf_reset(out);
        buf_append(out, sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        *fetched_ms = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int store_jwks_put(struct store *s, const char *url, const char *body, int64_t now_ms)
{
    sqlite3_stmt *st = stmt(s, ST_JWKS_PUT);
    bind_text(st, 1, url);
    bind_text(st, 2, body);
    sqlite3_bind_int64(st, 3, now_ms);
    return run(s, st);
}

/* --- metrics ----------------------------------------------------------------- */

int store_metric_add(struct store *s, const char *name, const char *labels, double delta)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_METRIC_ADD);
    bind_text(st, 1, name);
    bind_text(st, 2, labels);
    sqlite3_bind_double(st, 3, delta);
    return run(s, st);
}

int store_metric_each(struct store *s,
                      void (*fn)(const char *name, const char *labels, double value, void *arg),
                      void *arg)
{
    sqlite3_stmt *st = stmt(s, ST_METRIC_EACH);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn((const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
           sqlite3_column_double(st, 2), arg);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* --- rollups for the reports (inside the settling transaction) --------------- */

int store_usage_add(struct store *s, int64_t day_ms, const char *user_id, const int64_t v[7])
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_USAGE_ADD);
    sqlite3_bind_int64(st, 1, day_ms);
    bind_text(st, 2, user_id);
    for (int i = 0; i < 7; i++)
        sqlite3_bind_int64(st, 3 + i, v[i]);
    return run(s, st);
}

int store_backend_hour_add(struct store *s, int64_t hour_ms, const char *backend, int64_t attempts,
                           int64_t failures, int64_t answered, int64_t failed_over)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_BACKEND_HOUR_ADD);
    sqlite3_bind_int64(st, 1, hour_ms);
    bind_text(st, 2, backend);
    sqlite3_bind_int64(st, 3, attempts);
    sqlite3_bind_int64(st, 4, failures);
    sqlite3_bind_int64(st, 5, answered);
    sqlite3_bind_int64(st, 6, failed_over);
    return run(s, st);
}

int store_latency_add(struct store *s, int64_t hour_ms, const char *backend, double bucket_ms,
                      int64_t calls)
{
    assert_in_transaction(s);
    sqlite3_stmt *st = stmt(s, ST_LATENCY_ADD);
    sqlite3_bind_int64(st, 1, hour_ms);
    bind_text(st, 2, backend);
    sqlite3_bind_double(st, 3, bucket_ms);
    sqlite3_bind_int64(st, 4, calls);
    return run(s, st);
}

/* --- reports ------------------------------------------------------------------ */

int store_report(struct store *s, const char *report, int64_t since_ms,
                 void (*row)(int ncol, const char *const *names, const char *const *values,
                             void *arg),
                 void *arg)
{
    const char *sql = NULL;
    for (size_t i = 0; i < sizeof report_sql / sizeof report_sql[0]; i++)
        if (strcmp(report_sql[i].name, report) == 0)
            sql = report_sql[i].sql;
    if (!sql)
        return -2;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, since_ms);
    int ncol = sqlite3_column_count(st);
    const char *names[32], *values[32];
    if (ncol > 32)
        ncol = 32;
    for (int i = 0; i < ncol; i++)
        names[i] = sqlite3_column_name(st, i);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < ncol; i++)
            values[i] = (const char *)sqlite3_column_text(st, i);
        row(ncol, names, values, arg);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
