/*
 * db.c - the per-process reader pool and writer (see db.h).
 *
 * Connections are opened lazily, up to max_readers, and kept for the life of
 * the process: opening one prepares every statement, which is what the
 * request path must never pay for.
 */
#include "db.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "store.h"

struct db {
    const struct cfg *cfg;
    pthread_mutex_t mu;
    pthread_cond_t freed;
    struct store **idle;
    int n_idle, n_open, max_open;
    struct commit_queue *commit;
};

struct db *db_open(const struct cfg *cfg, int max_readers, struct buf *err)
{
    struct db *db = calloc(1, sizeof *db);
    if (!db ||
        !(db->idle = calloc((size_t)(max_readers > 0 ? max_readers : 1), sizeof *db->idle))) {
        free(db);
        buf_puts(err, "out of memory");
        return NULL;
    }
    db->cfg = cfg;
    db->max_open = max_readers > 0 ? max_readers : 1;
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->freed, NULL);
    struct store *writer = store_open(cfg->database.path, cfg->database.synchronous,
                                      cfg->database.busy_timeout_ms, err);
    if (!writer) {
        db_close(db);
        return NULL;
    }
    struct buf lock_path = {0};
    buf_printf(&lock_path, "%s-writer.lock", cfg->database.path);
    db->commit = commit_queue_new(writer, buf_cstr(&lock_path), err);
    buf_free(&lock_path);
    if (!db->commit) {
        store_close(writer);
        db_close(db);
        return NULL;
    }
    return db;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    for (int i = 0; i < db->n_idle; i++)
        store_close(db->idle[i]);
    commit_queue_free(db->commit);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->freed);
    free(db->idle);
    free(db);
}

struct store *db_reader(struct db *db)
{
    pthread_mutex_lock(&db->mu);
    for (;;) {
        if (db->n_idle > 0) {
            struct store *s = db->idle[--db->n_idle];
            pthread_mutex_unlock(&db->mu);
            return s;
        }
        if (db->n_open < db->max_open)
            break;
        pthread_cond_wait(&db->freed, &db->mu);
    }
    db->n_open++; /* reserve the slot, then open without the mutex */
    pthread_mutex_unlock(&db->mu);
    struct buf err = {0};
    const struct cfg *c = db->cfg;
    struct store *s = store_open_connection(c->database.path, c->database.synchronous,
                                            c->database.busy_timeout_ms, &err);
    if (!s) {
        log_error("cannot open a database connection: %s", buf_cstr(&err));
        pthread_mutex_lock(&db->mu);
        db->n_open--;
        pthread_cond_signal(&db->freed);
        pthread_mutex_unlock(&db->mu);
    }
    buf_free(&err);
    return s;
}

void db_reader_done(struct db *db, struct store *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&db->mu);
    db->idle[db->n_idle++] = s;
    pthread_cond_signal(&db->freed);
    pthread_mutex_unlock(&db->mu);
}

int db_write(struct db *db, commit_fn fn, void *arg)
{
    return commit_run(db->commit, fn, arg);
}

struct commit_queue *db_commit_queue(struct db *db)
{
    return db->commit;
}
