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

/* Runs fn in the next group-committed batch (commit_run). */
int db_write(struct db *db, commit_fn fn, void *arg);

/* The writer's commit queue (for checkpoints and the statistics). */
struct commit_queue *db_commit_queue(struct db *db);

#endif
