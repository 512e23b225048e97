/*
 * sql_pg.c - the PostgreSQL engine behind sql.h, through libpq: one database
 * shared by every gateway host.
 *
 * Statements are written as for SQLite, with numbered parameters ?N; they are
 * rewritten to PostgreSQL's $N once, and prepared on the server the first
 * time a connection runs them (again after a reconnection). Values travel as
 * text, blobs as binary. Statements whose result nobody reads (BEGIN,
 * savepoints, the batch's counters) are deferred: sent in pipeline mode with
 * the next statement that is waited for, one round trip for all. A
 * connection that is lost is reopened by the next
 * statement run outside a transaction, so a restarted or failed-over server
 * is picked up without the gateway being restarted. Every statement is
 * bounded by the server's statement_timeout, set when connecting.
 */
#include "sql.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "secrets.h"

#define PG_MAX_PARAMS 32
#define PG_MAX_COLS   32
#define TEXT_OID      25  /* pg_type.oid of text: the type of a parameter a statement ignores */
#define FLOAT8_OID    701 /* double precision: shown as SQLite shows a REAL */

struct pg_conn {
    struct sql_conn base;
    PGconn *pg;
    unsigned gen;        /* bumped at each (re)connection: statements are prepared again */
    int next_id;         /* names the prepared statements s1, s2, ... */
    int pending;         /* deferred statements sent in pipeline mode, their results unread */
    int deferred_failed; /* one did fail: all but ROLLBACK fail until the transaction ends */
    int undone;          /* ... and the connection was up then (sql.h, undone) */
    /* A BEGIN was sent and no COMMIT or ROLLBACK since. A connection lost
     * meanwhile took the transaction with it: it is not reopened until the
     * ROLLBACK, so no statement of the transaction can run, and commit, on
     * a new session of its own. */
    int in_txn;
    int broken;         /* the session's state is unknown: reopened before its next use */
    int commit_pending; /* the pipeline drain_pipeline ends holds a COMMIT */
    char err[512];
};

struct pg_stmt {
    struct sql_stmt base;
    struct pg_conn *c;
    char name[16];        /* "" for a statement used once (unnamed, not prepared ahead) */
    int ends_transaction; /* ROLLBACK: runs even after a deferred statement failed */
    int begins, commits;  /* BEGIN; COMMIT */
    char *sql;            /* with $N */
    int nparams;          /* the highest N the statement names */
    Oid types[PG_MAX_PARAMS];
    const char *values[PG_MAX_PARAMS];
    int lengths[PG_MAX_PARAMS], formats[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][32]; /* the text of bound numbers */
    unsigned gen;                /* the connection generation it is prepared in; 0 none */
    char real_text[PG_MAX_COLS]
                  [SQL_REAL_TEXT_MAX]; /* double precision columns, as SQLite shows them */
    PGresult *res;
    int row, nrows, ran;
    int64_t changes;
};

static int pg_undone(struct sql_conn *conn)
{
    return ((struct pg_conn *)conn)->undone;
}

static const struct sql_driver pg_driver;

static struct pg_conn *conn_of(struct sql_conn *c)
{
    return (struct pg_conn *)c;
}

static struct pg_stmt *stmt_of(struct sql_stmt *st)
{
    return (struct pg_stmt *)st;
}

/* Notices ("relation already exists, skipping") are not errors: dropped. */
static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Records libpq's reason, one line. */
static void set_error(struct pg_conn *c, const PGresult *res)
{
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = PQerrorMessage(c->pg);
    snprintf(c->err, sizeof c->err, "%s", msg && *msg ? msg : "unknown PostgreSQL error");
    c->err[strcspn(c->err, "\n")] = '\0'; /* the first line: the rest points into the SQL */
    size_t n = strlen(c->err);
    while (n && c->err[n - 1] == ' ')
        c->err[--n] = '\0';
}

/* A live connection for a statement about to run outside a transaction:
 * reopens a lost one. 0, or -1 with the reason recorded. */
static int ensure_connected(struct pg_conn *c)
{
    if (PQstatus(c->pg) == CONNECTION_OK && !c->broken)
        return 0;
    c->broken = 0;
    PQreset(c->pg);
    c->pending = 0;
    c->deferred_failed = 0;
    if (PQstatus(c->pg) != CONNECTION_OK) {
        set_error(c, NULL);
        return -1;
    }
    c->gen++;
    return 0;
}

static void pg_close(struct sql_conn *sc)
{
    struct pg_conn *c = conn_of(sc);
    PQfinish(c->pg);
    free(c);
}

/* Rewrites ?N to $N outside quoted text; notes which N are named. */
static int translate(struct pg_stmt *st, const char *sql, struct buf *err)
{
    size_t n = strlen(sql);
    char *out = malloc(n + 1);
    int named[PG_MAX_PARAMS + 1] = {0};
    if (!out) {
        if (err)
            buf_puts(err, "out of memory");
        return -1;
    }
    char quote = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = sql[i];
        if (quote) {
            quote = ch == quote ? 0 : quote;
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        } else if (ch == '?' && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
            int k = 0;
            out[o++] = '$';
            while (sql[i + 1] >= '0' && sql[i + 1] <= '9') {
                k = k * 10 + (sql[i + 1] - '0');
                out[o++] = sql[++i];
                if (k > PG_MAX_PARAMS) {
                    if (err)
                        buf_printf(err, "statement \"%.40s...\" has more than %d parameters", sql,
                                   PG_MAX_PARAMS);
                    free(out);
                    return -1;
                }
            }
            named[k] = 1;
            if (k > st->nparams)
                st->nparams = k;
            continue;
        }
        out[o++] = ch;
    }
    out[o] = '\0';
    st->sql = out;
    /* A parameter bound but not named has no type to infer: say text. */
    for (int k = 1; k <= st->nparams; k++)
        st->types[k - 1] = named[k] ? 0 : TEXT_OID;
    return 0;
}

static struct sql_stmt *pg_prepare(struct sql_conn *sc, const char *sql, int once, struct buf *err)
{
    struct pg_conn *c = conn_of(sc);
    struct pg_stmt *st = calloc(1, sizeof *st);
    if (!st) {
        if (err)
            buf_puts(err, "out of memory");
        return NULL;
    }
    st->base.drv = &pg_driver;
    st->c = c;
    if (translate(st, sql, err) < 0) {
        free(st);
        return NULL;
    }
    if (once)
        snprintf(st->name, sizeof st->name, "s%d", ++c->next_id);
    st->ends_transaction = strcmp(sql, "ROLLBACK") == 0;
    st->begins = strcmp(sql, "BEGIN") == 0;
    st->commits = strcmp(sql, "COMMIT") == 0;
    return &st->base;
}

static void clear_result(struct pg_stmt *st)
{
    PQclear(st->res);
    st->res = NULL;
    st->row = st->nrows = st->ran = 0;
}

static void pg_finalize(struct sql_stmt *s)
{
    struct pg_stmt *st = stmt_of(s);
    clear_result(st);
    free(st->sql);
    free(st);
}

static void bind(struct pg_stmt *st, int i, const char *v, int len, int format)
{
    if (i < 1 || i > PG_MAX_PARAMS)
        return;
    st->values[i - 1] = v;
    st->lengths[i - 1] = len;
    st->formats[i - 1] = format;
}

static void pg_bind_null(struct sql_stmt *s, int i)
{
    bind(stmt_of(s), i, NULL, 0, 0);
}

static void pg_bind_text(struct sql_stmt *s, int i, const char *v)
{
    bind(stmt_of(s), i, v, 0, 0);
}

static void pg_bind_int64(struct sql_stmt *s, int i, int64_t v)
{
    struct pg_stmt *st = stmt_of(s);
    if (i < 1 || i > PG_MAX_PARAMS)
        return;
    snprintf(st->num[i - 1], sizeof st->num[0], "%lld", (long long)v);
    bind(st, i, st->num[i - 1], 0, 0);
}

static void pg_bind_double(struct sql_stmt *s, int i, double v)
{
    struct pg_stmt *st = stmt_of(s);
    if (i < 1 || i > PG_MAX_PARAMS)
        return;
    snprintf(st->num[i - 1], sizeof st->num[0], "%.17g", v);
    bind(st, i, st->num[i - 1], 0, 0);
}

static void pg_bind_blob(struct sql_stmt *s, int i, const void *v, int n)
{
    bind(stmt_of(s), i, v, n, 1);
}

/* Sends the statement in pipeline mode: 1 sent, 0 not. */
static int send_stmt(struct pg_stmt *st)
{
    return st->name[0] ? PQsendQueryPrepared(st->c->pg, st->name, st->nparams, st->values,
                                             st->lengths, st->formats, 0)
                       : PQsendQueryParams(st->c->pg, st->sql, st->nparams, st->types, st->values,
                                           st->lengths, st->formats, 0);
}

/*
 * Ends the pipeline: a sync, then the results of the n statements sent since
 * it began, in order. The last one's result goes to *last when last is set
 * (the statement the caller waits for). The first failure is recorded; a
 * failure of a deferred statement makes the connection refuse everything but
 * ROLLBACK until the transaction ends. 0, or -1.
 */
static int drain_pipeline(struct pg_conn *c, int n, PGresult **last)
{
    int failed = -1; /* the index of the first failure */
    int synced = PQpipelineSync(c->pg) == 1;
    if (!synced) {
        set_error(c, NULL);
        failed = 0;
    }
    if (synced && c->commit_pending && c->base.commit_sent)
        c->base.commit_sent(c->base.commit_sent_arg); /* the COMMIT is sent: sql.h */
    c->commit_pending = 0;
    for (int i = 0; synced && i < n; i++) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) { /* the connection is gone */
            set_error(c, NULL);
            if (failed < 0)
                failed = i;
            synced = 0;
            break;
        }
        ExecStatusType s = PQresultStatus(r);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK && failed < 0) {
            set_error(c, r);
            failed = i;
        }
        if (last && i == n - 1)
            *last = r;
        else
            PQclear(r);
        PQclear(PQgetResult(c->pg)); /* the NULL that ends each statement's results */
    }
    if (synced) { /* up to and including the sync point */
        PGresult *r;
        while ((r = PQgetResult(c->pg)) && PQresultStatus(r) != PGRES_PIPELINE_SYNC)
            PQclear(r);
        PQclear(r);
    }
    if (!PQexitPipelineMode(c->pg))
        c->broken = 1; /* results left unread on a failed connection */
    c->pending = 0;
    int deferred = failed >= 0 && (!last || failed < n - 1);
    if (deferred)
        c->deferred_failed = 1;
    c->undone = deferred && PQstatus(c->pg) == CONNECTION_OK;
    return failed < 0 ? 0 : -1;
}

/* Prepares st on the server for this connection generation. 0 or -1. */
static int prepare_on_server(struct pg_stmt *st)
{
    struct pg_conn *c = st->c;
    if (!st->name[0] || st->gen == c->gen)
        return 0;
    PGresult *p = PQprepare(c->pg, st->name, st->sql, st->nparams, st->types);
    int ok = PQresultStatus(p) == PGRES_COMMAND_OK;
    if (!ok)
        set_error(c, p);
    PQclear(p);
    if (!ok)
        return -1;
    st->gen = c->gen;
    return 0;
}

/* A connection ready for a statement of st's kind: reopened when lost
 * outside a transaction, and refusing when a deferred statement failed. */
static int ready(struct pg_stmt *st)
{
    struct pg_conn *c = st->c;
    int lost = c->broken || PQstatus(c->pg) != CONNECTION_OK;
    if (c->in_txn && lost) {
        if (!st->ends_transaction) {
            snprintf(c->err, sizeof c->err,
                     "the connection to PostgreSQL was lost inside a transaction (rolled back)");
            return -1;
        }
        c->in_txn = 0; /* the server rolled it back when the connection went */
    }
    PGTransactionStatusType t = PQtransactionStatus(c->pg);
    if (!c->pending && !c->in_txn && (t == PQTRANS_IDLE || t == PQTRANS_UNKNOWN))
        c->deferred_failed = 0; /* no transaction: nothing left to refuse */
    if (c->deferred_failed && !st->ends_transaction) {
        snprintf(c->err, sizeof c->err, "an earlier statement of this transaction failed");
        return -1;
    }
    int idle = !c->pending && t == PQTRANS_IDLE;
    if ((idle || lost) && ensure_connected(c) < 0)
        return -1;
    if (st->begins)
        c->in_txn = 1;
    else if (st->commits || st->ends_transaction)
        c->in_txn = 0;
    return 0;
}

/* Runs the statement with its bindings (after the deferred ones, in one
 * round trip): 0, or -1 with the reason recorded. */
static int run(struct pg_stmt *st)
{
    struct pg_conn *c = st->c;
    if (ready(st) < 0)
        return -1;
    if (c->pending && st->name[0] && st->gen != c->gen && drain_pipeline(c, c->pending, NULL) < 0)
        return -1;
    if (prepare_on_server(st) < 0)
        return -1;
    int ok;
    if (c->pending) {
        c->commit_pending = st->commits;
        ok = send_stmt(st) ? drain_pipeline(c, c->pending + 1, &st->res) == 0 : 0;
        c->commit_pending = 0; /* also when the COMMIT could not be sent */
        if (!st->res && !ok && !c->err[0])
            set_error(c, NULL);
    } else {
        st->res = st->name[0] ? PQexecPrepared(c->pg, st->name, st->nparams, st->values,
                                               st->lengths, st->formats, 0)
                              : PQexecParams(c->pg, st->sql, st->nparams, st->types, st->values,
                                             st->lengths, st->formats, 0);
        ok = 1;
    }
    ExecStatusType status = PQresultStatus(st->res);
    if (!ok || (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK)) {
        if (ok)
            set_error(c, st->res);
        /* A statement that failed on a connection reopened since it was
         * prepared here is prepared again next time. */
        if (PQstatus(c->pg) != CONNECTION_OK)
            st->gen = 0;
        return -1;
    }
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        c->deferred_failed = 0;
    st->nrows = status == PGRES_TUPLES_OK ? PQntuples(st->res) : 0;
    const char *n = PQcmdTuples(st->res);
    st->changes = n && *n ? strtoll(n, NULL, 10) : 0;
    return 0;
}

/* Sends the statement without waiting for its result, which the next
 * statement run reads (one round trip for both). */
static int pg_step_deferred(struct sql_stmt *s)
{
    struct pg_stmt *st = stmt_of(s);
    struct pg_conn *c = st->c;
    st->ran = 1;
    st->row = st->nrows = 0;
    st->changes = 0;
    if (ready(st) < 0)
        return SQL_ERROR;
    if (c->pending && st->name[0] && st->gen != c->gen && drain_pipeline(c, c->pending, NULL) < 0)
        return SQL_ERROR;
    if (prepare_on_server(st) < 0)
        return SQL_ERROR;
    if ((!c->pending && !PQenterPipelineMode(c->pg)) || !send_stmt(st)) {
        set_error(c, NULL);
        if (c->pending)
            drain_pipeline(c, c->pending, NULL);
        else
            PQexitPipelineMode(c->pg);
        c->deferred_failed = 1;
        return SQL_ERROR;
    }
    c->pending++;
    return SQL_DONE;
}

static int pg_step(struct sql_stmt *s)
{
    struct pg_stmt *st = stmt_of(s);
    if (!st->ran) {
        st->ran = 1;
        if (run(st) < 0)
            return SQL_ERROR;
        st->row = 0;
    } else {
        st->row++;
    }
    return st->row < st->nrows ? SQL_ROW : SQL_DONE;
}

static void pg_reset(struct sql_stmt *s)
{
    struct pg_stmt *st = stmt_of(s);
    clear_result(st);
    for (int i = 0; i < st->nparams; i++)
        bind(st, i + 1, NULL, 0, 0);
}

static int64_t pg_changes(struct sql_stmt *s)
{
    return stmt_of(s)->changes;
}

static int pg_column_count(struct sql_stmt *s)
{
    struct pg_stmt *st = stmt_of(s);
    return st->res ? PQnfields(st->res) : 0;
}

static const char *pg_column_name(struct sql_stmt *s, int col)
{
    struct pg_stmt *st = stmt_of(s);
    return st->res ? PQfname(st->res, col) : NULL;
}

static int pg_column_is_null(struct sql_stmt *s, int col)
{
    struct pg_stmt *st = stmt_of(s);
    return !st->res || st->row >= st->nrows || PQgetisnull(st->res, st->row, col);
}

void sql_real_text(double v, char out[SQL_REAL_TEXT_MAX])
{
    snprintf(out, SQL_REAL_TEXT_MAX, "%.15g", v);
    if (!strpbrk(out, ".eni"))
        strcat(out, ".0");
}

static const char *real_text(struct pg_stmt *st, int col, const char *v)
{
    sql_real_text(strtod(v, NULL), st->real_text[col]);
    return st->real_text[col];
}

static const char *pg_column_text(struct sql_stmt *s, int col)
{
    struct pg_stmt *st = stmt_of(s);
    if (pg_column_is_null(s, col))
        return NULL;
    const char *v = PQgetvalue(st->res, st->row, col);
    return col < PG_MAX_COLS && PQftype(st->res, col) == FLOAT8_OID ? real_text(st, col, v) : v;
}

static int pg_column_bytes(struct sql_stmt *s, int col)
{
    struct pg_stmt *st = stmt_of(s);
    return pg_column_is_null(s, col) ? 0 : PQgetlength(st->res, st->row, col);
}

/* bytea arrives in its text form (\\x and hex digits), which binds back into
 * PostgreSQL as text: no value is handed out as a blob. */
static int pg_column_is_blob(struct sql_stmt *s, int col)
{
    (void)s;
    (void)col;
    return 0;
}

static const void *pg_column_blob(struct sql_stmt *s, int col)
{
    (void)s;
    (void)col;
    return NULL;
}

static int64_t pg_column_int64(struct sql_stmt *s, int col)
{
    struct pg_stmt *st = stmt_of(s);
    const char *v = pg_column_is_null(s, col) ? NULL : PQgetvalue(st->res, st->row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

static double pg_column_double(struct sql_stmt *s, int col)
{
    struct pg_stmt *st = stmt_of(s);
    const char *v = pg_column_is_null(s, col) ? NULL : PQgetvalue(st->res, st->row, col);
    return v ? strtod(v, NULL) : 0;
}

static int pg_exec(struct sql_conn *sc, const char *sql, struct buf *err)
{
    struct pg_conn *c = conn_of(sc);
    if (c->pending && drain_pipeline(c, c->pending, NULL) < 0) {
        if (err)
            buf_puts(err, c->err);
        return -1;
    }
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE && ensure_connected(c) < 0) {
        if (err)
            buf_puts(err, c->err);
        return -1;
    }
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType status = PQresultStatus(res);
    int ok = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
    if (!ok) {
        set_error(c, res);
        if (err)
            buf_puts(err, c->err);
    }
    PQclear(res);
    return ok ? 0 : -1;
}

static int pg_in_transaction(struct sql_conn *sc)
{
    PGTransactionStatusType t = PQtransactionStatus(conn_of(sc)->pg);
    return conn_of(sc)->in_txn || t == PQTRANS_INTRANS || t == PQTRANS_INERROR ||
           t == PQTRANS_ACTIVE;
}

static const char *pg_errmsg(struct sql_conn *sc)
{
    return conn_of(sc)->err;
}

static const struct sql_driver pg_driver = {
    .name = "postgresql",
    .close = pg_close,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .bind_null = pg_bind_null,
    .bind_text = pg_bind_text,
    .bind_int64 = pg_bind_int64,
    .bind_double = pg_bind_double,
    .bind_blob = pg_bind_blob,
    .step = pg_step,
    .step_deferred = pg_step_deferred,
    .reset = pg_reset,
    .changes = pg_changes,
    .column_count = pg_column_count,
    .column_name = pg_column_name,
    .column_is_null = pg_column_is_null,
    .column_text = pg_column_text,
    .column_bytes = pg_column_bytes,
    .column_is_blob = pg_column_is_blob,
    .column_blob = pg_column_blob,
    .column_int64 = pg_column_int64,
    .column_double = pg_column_double,
    .exec = pg_exec,
    .in_transaction = pg_in_transaction,
    .errmsg = pg_errmsg,
    .undone = pg_undone,
};

/* The password of database.password (any secret reference), or none. */
static int resolve_password(const struct cfg *cfg, struct buf *out, struct buf *err)
{
    const char *ref = cfg->database.password_ref;
    if (!ref)
        return 0;
    if (strncmp(ref, "keyvault:", 9) != 0)
        return secret_resolve(ref, cfg->environment, out, err);
    struct secrets *s = secrets_new(cfg);
    int rc = s ? secrets_get(s, ref, 0, out, err) : -1;
    secrets_free(s);
    return rc;
}

struct sql_conn *sql_pg_open(const struct cfg *cfg, struct buf *err)
{
    struct pg_conn *c = calloc(1, sizeof *c);
    struct buf password = {0}, why = {0};
    if (!c) {
        buf_puts(err, "out of memory");
        return NULL;
    }
    c->base.drv = &pg_driver;
    c->gen = 1;
    if (resolve_password(cfg, &password, &why) < 0) {
        buf_printf(err, "database.password: %s", buf_cstr(&why));
        buf_free(&why);
        free(c);
        return NULL;
    }
    char timeout[16], options[160];
    snprintf(timeout, sizeof timeout, "%d", cfg->database.connect_timeout_s);
    /* statement_timeout bounds every call; a transaction left open by a
     * stalled process is ended by the server, so its locks are not held. */
    snprintf(options, sizeof options,
             "-c statement_timeout=%d -c idle_in_transaction_session_timeout=%d"
             " -c TimeZone=UTC",
             cfg->database.statement_timeout_ms, cfg->database.statement_timeout_ms * 2);
    const char *keys[] = {"dbname",           "password",        "connect_timeout",
                          "application_name", "options",         "client_encoding",
                          "keepalives",       "keepalives_idle", NULL};
    const char *values[] = {cfg->database.url,
                            password.len ? buf_cstr(&password) : NULL,
                            timeout,
                            "aigw",
                            options,
                            "UTF8",
                            "1",
                            "30",
                            NULL};
    if (!password.len) { /* libpq ends the list at the first NULL value: drop the key */
        keys[1] = "fallback_application_name";
        values[1] = "aigw";
    }
    c->pg = PQconnectdbParams(keys, values, 1);
    /* The password is not kept: libpq has its own copy for reconnections. */
    if (password.len)
        memset(password.data, 0, password.len);
    buf_free(&password);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        buf_printf(err, "cannot connect to PostgreSQL (database.url): %s",
                   c->pg ? PQerrorMessage(c->pg) : "out of memory");
        while (err->len && (err->data[err->len - 1] == '\n'))
            err->data[--err->len] = '\0';
        PQfinish(c->pg);
        free(c);
        return NULL;
    }
    PQsetNoticeProcessor(c->pg, quiet, NULL);
    return &c->base;
}
