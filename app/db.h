/*
 * db.h - the database as one worker process sees it: a pool of reading
 * connections and one group-committed writer.
 *
 * A process serves many requests at once, but a SQLite connection serves one
 * thread at a time. Reads (keys, users, breakers, the JWKS cache) borrow a
 * connection from the pool for the length of one question and give it back;
 * writes go through the commit queue (commit.h), which owns the only writing
 * connection. Nothing holds a connection across a network call.
 */
#ifndef AIGW_DB_H
#define AIGW_DB_H

#include "buf.h"
#include "commit.h"
#include "epoch.h"

struct cfg;
struct store;
struct db;

/* Opens cfg's database (applying migrations) with at most max_readers
 * reading connections, opened as they are needed. NULL with err set. */
struct db *db_open(const struct cfg *cfg, int max_readers, struct buf *err);
void db_close(struct db *db);

/* Borrows a reading connection, waiting for one when all are in use; NULL
 * when none can be opened (logged). Give it back with db_reader_done. */
struct store *db_reader(struct db *db);
void db_reader_done(struct db *db, struct store *s);

/* Rows read through the process's cache (rowcache.h), and the epoch whose
 * bump makes each kind be read again. */
enum db_rows {
    DB_ROWS_KEYS,     /* struct key_row by the 32-byte hash of the key */
    DB_ROWS_USERS,    /* struct user_row by user id */
    DB_ROWS_BREAKERS, /* struct breaker_row by backend name */
    DB_ROWS__COUNT,
};

/* Reads one row of a kind: 1 found (row filled), 0 not found, -1 error. */
typedef int (*db_row_read_fn)(struct store *st, const void *key, void *row);

/* read's answer for key: from the cache when it holds a row read under the
 * current epoch, else from a pooled connection (and then cached; errors are
 * not). Returns what read returns. */
int db_read_row(struct db *db, enum db_rows which, const void *key, size_t klen, void *row,
                db_row_read_fn read);

/* Tells every process that rows of kind changed: call after the commit. */
void db_rows_changed(struct db *db, enum epoch_kind kind);

/* Runs fn in the next group-committed batch (commit_run). */
int db_write(struct db *db, commit_fn fn, void *arg);
/* db_write for a write that reads user's admission state for the budget
 * period (commit_run_for: read with the batch's other subjects at once). */
int db_write_for(struct db *db, commit_fn fn, void *arg, const char *user, int64_t period);

/* The writer's commit queue (for checkpoints and the statistics). */
struct commit_queue *db_commit_queue(struct db *db);

#endif
