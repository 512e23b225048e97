/*
 * sql_sqlite.c - the SQLite engine behind sql.h: one database file shared by
 * the processes of one host.
 *
 * WAL mode lets readers run beside the one writer; the busy handler makes
 * other programs' writers (the sqlite3 shell, the operator's commands) queue
 * instead of failing. Checkpoints are the housekeeper's (housekeeping.c), so
 * no commit on the request path copies the WAL back.
 */
#include "sql.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sq_conn {
    struct sql_conn base;
    sqlite3 *db;
    int busy_timeout_ms;
};

struct sq_stmt {
    struct sql_stmt base;
    sqlite3_stmt *q;
    sqlite3 *db;
};

/* Nothing is deferred on SQLite: a failure shows where it happens. */
static int sq_undone(struct sql_conn *conn)
{
    (void)conn;
    return 0;
}

static const struct sql_driver sqlite_driver;

/*
 * Waiting for the write lock. Other workers hold it for well under a
 * millisecond (one short transaction), but SQLite's own busy handler sleeps
 * 1, 2, 5, 10... ms at a time; this one starts at 20 microseconds and doubles
 * up to 1 ms, so a worker gets the lock about as soon as it is free. Gives up
 * after busy_timeout_ms like sqlite3_busy_timeout would.
 */
static int busy_wait(void *arg, int count)
{
    struct sq_conn *c = arg;
    static const long first_us = 20, most_us = 1000;
    long sleep_us = first_us << (count < 6 ? count : 6);
    if (sleep_us > most_us)
        sleep_us = most_us;
    /* Time spent so far, bounded above by the sum of the sleeps before this one. */
    long waited_us = count < 6 ? first_us * ((1L << count) - 1) : 1260 + (count - 6) * most_us;
    if (waited_us / 1000 >= c->busy_timeout_ms)
        return 0;
    struct timespec ts = {0, sleep_us * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

static struct sq_conn *conn_of(struct sql_conn *c)
{
    return (struct sq_conn *)c;
}

static sqlite3_stmt *q_of(struct sql_stmt *st)
{
    return ((struct sq_stmt *)st)->q;
}

static void sq_close(struct sql_conn *c)
{
    sqlite3_close(conn_of(c)->db);
    free(c);
}

static struct sql_stmt *sq_prepare(struct sql_conn *c, const char *sql, int once, struct buf *err)
{
    struct sq_conn *sc = conn_of(c);
    struct sq_stmt *st = calloc(1, sizeof *st);
    if (!st) {
        if (err)
            buf_puts(err, "out of memory");
        return NULL;
    }
    st->base.drv = &sqlite_driver;
    st->db = sc->db;
    if (sqlite3_prepare_v3(sc->db, sql, -1, once ? SQLITE_PREPARE_PERSISTENT : 0, &st->q, NULL) !=
        SQLITE_OK) {
        if (err)
            buf_printf(err, "cannot prepare \"%.40s...\": %s", sql, sqlite3_errmsg(sc->db));
        sqlite3_finalize(st->q);
        free(st);
        return NULL;
    }
    return &st->base;
}

static void sq_finalize(struct sql_stmt *st)
{
    sqlite3_finalize(q_of(st));
    free(st);
}

static void sq_bind_null(struct sql_stmt *st, int i)
{
    sqlite3_bind_null(q_of(st), i);
}

static void sq_bind_text(struct sql_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(q_of(st), i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q_of(st), i);
}

static void sq_bind_int64(struct sql_stmt *st, int i, int64_t v)
{
    sqlite3_bind_int64(q_of(st), i, v);
}

static void sq_bind_double(struct sql_stmt *st, int i, double v)
{
    sqlite3_bind_double(q_of(st), i, v);
}

static void sq_bind_blob(struct sql_stmt *st, int i, const void *v, int n)
{
    sqlite3_bind_blob(q_of(st), i, v, n, SQLITE_STATIC);
}

static int sq_step(struct sql_stmt *st)
{
    int rc = sqlite3_step(q_of(st));
    return rc == SQLITE_ROW ? SQL_ROW : rc == SQLITE_DONE ? SQL_DONE : SQL_ERROR;
}

static void sq_reset(struct sql_stmt *st)
{
    sqlite3_reset(q_of(st));
    sqlite3_clear_bindings(q_of(st));
}

static int64_t sq_changes(struct sql_stmt *st)
{
    return sqlite3_changes(((struct sq_stmt *)st)->db);
}

static int sq_column_count(struct sql_stmt *st)
{
    return sqlite3_column_count(q_of(st));
}

static const char *sq_column_name(struct sql_stmt *st, int col)
{
    return sqlite3_column_name(q_of(st), col);
}

static int sq_column_is_null(struct sql_stmt *st, int col)
{
    return sqlite3_column_type(q_of(st), col) == SQLITE_NULL;
}

static const char *sq_column_text(struct sql_stmt *st, int col)
{
    return (const char *)sqlite3_column_text(q_of(st), col);
}

static int sq_column_bytes(struct sql_stmt *st, int col)
{
    return sqlite3_column_bytes(q_of(st), col);
}

static int sq_column_is_blob(struct sql_stmt *st, int col)
{
    return sqlite3_column_type(q_of(st), col) == SQLITE_BLOB;
}

static const void *sq_column_blob(struct sql_stmt *st, int col)
{
    return sqlite3_column_blob(q_of(st), col);
}

static int64_t sq_column_int64(struct sql_stmt *st, int col)
{
    return sqlite3_column_int64(q_of(st), col);
}

static double sq_column_double(struct sql_stmt *st, int col)
{
    return sqlite3_column_double(q_of(st), col);
}

static int sq_exec(struct sql_conn *c, const char *sql, struct buf *err)
{
    char *msg = NULL;
    if (sqlite3_exec(conn_of(c)->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        if (err)
            buf_printf(err, "%s", msg ? msg : sqlite3_errmsg(conn_of(c)->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int sq_in_transaction(struct sql_conn *c)
{
    return !sqlite3_get_autocommit(conn_of(c)->db);
}

static const char *sq_errmsg(struct sql_conn *c)
{
    return sqlite3_errmsg(conn_of(c)->db);
}

static const struct sql_driver sqlite_driver = {
    .name = "sqlite",
    .close = sq_close,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .bind_null = sq_bind_null,
    .bind_text = sq_bind_text,
    .bind_int64 = sq_bind_int64,
    .bind_double = sq_bind_double,
    .bind_blob = sq_bind_blob,
    .step = sq_step,
    .step_deferred = sq_step, /* a local call: nothing to gain by waiting */
    .reset = sq_reset,
    .changes = sq_changes,
    .column_count = sq_column_count,
    .column_name = sq_column_name,
    .column_is_null = sq_column_is_null,
    .column_text = sq_column_text,
    .column_bytes = sq_column_bytes,
    .column_is_blob = sq_column_is_blob,
    .column_blob = sq_column_blob,
    .column_int64 = sq_column_int64,
    .column_double = sq_column_double,
    .exec = sq_exec,
    .in_transaction = sq_in_transaction,
    .errmsg = sq_errmsg,
    .undone = sq_undone,
};

struct sql_conn *sql_sqlite_open(const char *path, const char *synchronous, int busy_timeout_ms,
                                 struct buf *err)
{
    struct sq_conn *c = calloc(1, sizeof *c);
    if (!c) {
        buf_puts(err, "out of memory");
        return NULL;
    }
    c->base.drv = &sqlite_driver;
    int rc = sqlite3_open_v2(
        path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        buf_printf(err, "cannot open database %s: %s", path,
                   c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sq_close(&c->base);
        return NULL;
    }
    c->busy_timeout_ms = busy_timeout_ms;
    sqlite3_busy_handler(c->db, busy_wait, c);
    /* mmap: pages are read from the shared mapping instead of one pread each.
     * journal_size_limit: the WAL file is truncated back only when it grew
     * past 128 MiB, twice what the housekeeper lets it reach under load: a
     * restarted WAL is written over in place, so no commit truncates it and
     * its blocks are not allocated and zeroed again. wal_autocheckpoint 0:
     * no commit on the request path copies the WAL back; the elected
     * housekeeping thread checkpoints instead (housekeeping.c). */
    char pragmas[320];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s; PRAGMA foreign_keys = ON;"
             " PRAGMA mmap_size = 268435456; PRAGMA journal_size_limit = 134217728;"
             " PRAGMA wal_autocheckpoint = 0;",
             synchronous && strcmp(synchronous, "full") == 0  ? "FULL"
             : synchronous && strcmp(synchronous, "off") == 0 ? "OFF"
                                                              : "NORMAL");
    if (sq_exec(&c->base, pragmas, err) < 0) {
        buf_printf(err, " (database %s)", path);
        sq_close(&c->base);
        return NULL;
    }
    return &c->base;
}

void sql_sqlite_global_init(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

int sql_sqlite_checkpoint(struct sql_conn *c, int reset, int *wal_frames)
{
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(
        conn_of(c)->db, NULL, reset ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE, &log,
        &done);
    if (wal_frames)
        *wal_frames = log;
    return rc == SQLITE_OK || rc == SQLITE_BUSY ? log - done : -1;
}
