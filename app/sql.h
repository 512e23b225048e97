/*
 * sql.h - one small statement interface over the two database engines aigw
 * stores its state in: SQLite (sql_sqlite.c, the embedded default) and
 * PostgreSQL through libpq (sql_pg.c, for several gateway hosts).
 *
 * store.c asks every question through this interface, so the policy above it
 * does not know which engine it has. The shape is SQLite's: prepare once,
 * bind parameters (numbered from 1), step through the rows, reset. A
 * connection and its statements are used by one thread at a time.
 */
#ifndef AIGW_SQL_H
#define AIGW_SQL_H

#include <stdint.h>

#include "buf.h"

struct cfg;
struct sql_driver;

/* Every driver's connection and statement begin with these. */
struct sql_conn {
    const struct sql_driver *drv;
    /* When set: called once a COMMIT is on its way to the server and before
     * its outcome is known, by an engine where the two are apart
     * (PostgreSQL); never by SQLite, whose commit is a local call. */
    void (*commit_sent)(void *arg);
    void *commit_sent_arg;
};
struct sql_stmt {
    const struct sql_driver *drv;
};

/* A double as SQLite shows a REAL: 15 significant digits, and a whole
 * number keeps its ".0", so reports read the same from either engine. */
#define SQL_REAL_TEXT_MAX 32
void sql_real_text(double v, char out[SQL_REAL_TEXT_MAX]);

/* What sql_step returns. */
enum { SQL_ERROR = -1, SQL_DONE = 0, SQL_ROW = 1 };

struct sql_driver {
    const char *name; /* "sqlite" or "postgresql" */
    void (*close)(struct sql_conn *c);
    /* once: kept for the life of the connection (prepared ahead on engines
     * that can); otherwise for one use, finalized after it. */
    struct sql_stmt *(*prepare)(struct sql_conn *c, const char *sql, int once, struct buf *err);
    void (*finalize)(struct sql_stmt *st);
    /* Bound values are not copied: they must live until the next step. */
    void (*bind_null)(struct sql_stmt *st, int i);
    void (*bind_text)(struct sql_stmt *st, int i, const char *v);
    void (*bind_int64)(struct sql_stmt *st, int i, int64_t v);
    void (*bind_double)(struct sql_stmt *st, int i, double v);
    void (*bind_blob)(struct sql_stmt *st, int i, const void *v, int n);
    int (*step)(struct sql_stmt *st);
    /* step for a statement that returns no rows and whose outcome may be
     * told late: the engine may send it with the next statement stepped,
     * which then fails if this one did; after such a failure every
     * statement but ROLLBACK fails until the transaction ends. */
    int (*step_deferred)(struct sql_stmt *st);
    /* Ends the statement's current run and clears its bindings. */
    void (*reset)(struct sql_stmt *st);
    /* Rows the statement's last run inserted, changed or deleted. */
    int64_t (*changes)(struct sql_stmt *st);
    int (*column_count)(struct sql_stmt *st);
    const char *(*column_name)(struct sql_stmt *st, int col);
    int (*column_is_null)(struct sql_stmt *st, int col);
    /* The value as text, NULL for SQL NULL; valid until the next step. */
    const char *(*column_text)(struct sql_stmt *st, int col);
    int (*column_bytes)(struct sql_stmt *st, int col);
    /* 1 when the value is a blob (BLOB, bytea), then read with column_blob. */
    int (*column_is_blob)(struct sql_stmt *st, int col);
    const void *(*column_blob)(struct sql_stmt *st, int col);
    int64_t (*column_int64)(struct sql_stmt *st, int col);
    double (*column_double)(struct sql_stmt *st, int col);
    /* Runs one or more statements that return nothing (migrations). */
    int (*exec)(struct sql_conn *c, const char *sql, struct buf *err);
    int (*in_transaction)(struct sql_conn *c);
    /* The engine's reason for the last failure. */
    const char *(*errmsg)(struct sql_conn *c);
    /* 1 when the last failure was a deferred statement's, on a connection
     * still up: the transaction did not commit, so running it again is
     * safe (a lost connection leaves that unknown: 0). */
    int (*undone)(struct sql_conn *c);
};

/* A SQLite connection to the file at path (created when missing). */
struct sql_conn *sql_sqlite_open(const char *path, const char *synchronous, int busy_timeout_ms,
                                 struct buf *err);
/* A PostgreSQL connection as cfg->database says (url, password reference,
 * timeouts). */
struct sql_conn *sql_pg_open(const struct cfg *cfg, struct buf *err);

/* SQLite's process-wide settings, before its first connection. */
void sql_sqlite_global_init(void);
/* The SQLite-only operation store.c needs: a checkpoint (store.h). */
int sql_sqlite_checkpoint(struct sql_conn *c, int reset, int *wal_frames);

static inline void sql_close(struct sql_conn *c)
{
    if (c)
        c->drv->close(c);
}
static inline struct sql_stmt *sql_prepare(struct sql_conn *c, const char *sql, int once,
                                           struct buf *err)
{
    return c->drv->prepare(c, sql, once, err);
}
static inline void sql_finalize(struct sql_stmt *st)
{
    if (st)
        st->drv->finalize(st);
}
static inline void sql_bind_null(struct sql_stmt *st, int i)
{
    st->drv->bind_null(st, i);
}
static inline void sql_bind_text(struct sql_stmt *st, int i, const char *v)
{
    st->drv->bind_text(st, i, v);
}
static inline void sql_bind_int64(struct sql_stmt *st, int i, int64_t v)
{
    st->drv->bind_int64(st, i, v);
}
static inline void sql_bind_double(struct sql_stmt *st, int i, double v)
{
    st->drv->bind_double(st, i, v);
}
static inline void sql_bind_blob(struct sql_stmt *st, int i, const void *v, int n)
{
    st->drv->bind_blob(st, i, v, n);
}
static inline int sql_step(struct sql_stmt *st)
{
    return st->drv->step(st);
}
static inline int sql_step_deferred(struct sql_stmt *st)
{
    return st->drv->step_deferred(st);
}
static inline void sql_reset(struct sql_stmt *st)
{
    st->drv->reset(st);
}
static inline int64_t sql_changes(struct sql_stmt *st)
{
    return st->drv->changes(st);
}
static inline int sql_column_count(struct sql_stmt *st)
{
    return st->drv->column_count(st);
}
static inline const char *sql_column_name(struct sql_stmt *st, int col)
{
    return st->drv->column_name(st, col);
}
static inline int sql_column_is_null(struct sql_stmt *st, int col)
{
    return st->drv->column_is_null(st, col);
}
static inline const char *sql_column_text(struct sql_stmt *st, int col)
{
    return st->drv->column_text(st, col);
}
static inline int sql_column_bytes(struct sql_stmt *st, int col)
{
    return st->drv->column_bytes(st, col);
}
static inline int sql_column_is_blob(struct sql_stmt *st, int col)
{
    return st->drv->column_is_blob(st, col);
}
static inline const void *sql_column_blob(struct sql_stmt *st, int col)
{
    return st->drv->column_blob(st, col);
}
static inline int64_t sql_column_int64(struct sql_stmt *st, int col)
{
    return st->drv->column_int64(st, col);
}
static inline double sql_column_double(struct sql_stmt *st, int col)
{
    return st->drv->column_double(st, col);
}
static inline int sql_exec(struct sql_conn *c, const char *sql, struct buf *err)
{
    return c->drv->exec(c, sql, err);
}
static inline int sql_in_transaction(struct sql_conn *c)
{
    return c->drv->in_transaction(c);
}
static inline int sql_undone(struct sql_conn *c)
{
    return c->drv->undone(c);
}
static inline const char *sql_errmsg(struct sql_conn *c)
{
    return c->drv->errmsg(c);
}

#endif
