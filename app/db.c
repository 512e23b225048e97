/*
 * db.c - the per-process reader pool, row caches and writer (see db.h).
 *
 * Connections are opened lazily, up to max_readers, and kept for the life of
 * the process: opening one prepares every statement, which is what the
 * request path must never pay for. Keys, users and breakers are read through
 * row caches checked against the host's epochs (epoch.h), so the common
 * request reads none of them from the database.
 */
#include "db.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "rowcache.h"
#include "store.h"

struct db {
    const struct cfg *cfg;
    pthread_mutex_t mu;
    pthread_cond_t freed;
    struct store **idle;
    int n_idle, n_open, max_open;
    struct commit_queue *commit;
    struct epochs *epochs; /* NULL: nothing is cached */
    struct row_cache *rows[DB_ROWS__COUNT];
};

/* A cached answer: read's return value and, when found, the row. */
struct cached_row {
    int rc;
    union {
        struct key_row key;
        struct user_row user;
        struct breaker_row breaker;
    } row;
};

static const struct {
    size_t row_size, slots;
    enum epoch_kind epoch;
} row_kinds[DB_ROWS__COUNT] = {
    [DB_ROWS_KEYS] = {sizeof(struct key_row), 512, EPOCH_AUTH},
    [DB_ROWS_USERS] = {sizeof(struct user_row), 512, EPOCH_AUTH},
    [DB_ROWS_BREAKERS] = {sizeof(struct breaker_row), 64, EPOCH_BREAKERS},
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
    struct store *writer = store_open(cfg, err);
    if (!writer) {
        db_close(db);
        return NULL;
    }
    struct buf lock_path = {0};
    buf_printf(&lock_path, "%s-writer.lock", cfg->database.local_path);
    db->commit = commit_queue_new(writer, buf_cstr(&lock_path), err);
    buf_free(&lock_path);
    if (!db->commit) {
        store_close(writer);
        db_close(db);
        return NULL;
    }
    struct buf why = {0};
    db->epochs = epochs_open(cfg->database.local_path, 1, &why);
    if (!db->epochs)
        log_warn("users, keys and breakers are read from the database on every request: %s",
                 buf_cstr(&why));
    buf_free(&why);
    for (int k = 0; db->epochs && k < DB_ROWS__COUNT; k++)
        db->rows[k] = row_cache_new(row_kinds[k].slots, sizeof(struct cached_row));
    return db;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    for (int i = 0; i < db->n_idle; i++)
        store_close(db->idle[i]);
    commit_queue_free(db->commit);
    for (int k = 0; k < DB_ROWS__COUNT; k++)
        row_cache_free(db->rows[k]);
    epochs_close(db->epochs);
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
    struct store *s = store_open_connection(db->cfg, &err);
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

int db_read_row(struct db *db, enum db_rows which, const void *key, size_t klen, void *row,
                db_row_read_fn read)
{
    struct row_cache *cache = db->rows[which];
    struct cached_row c;
    uint64_t epoch = 0;
    int64_t now = 0;
    if (cache) {
        /* The epoch is read before the row: a change committed meanwhile
         * bumps it past this value, so the row cached here is read again. */
        epoch = epochs_read(db->epochs, row_kinds[which].epoch);
        now = mono_ms();
        if (row_cache_get(cache, key, klen, epoch, now, EPOCH_MAX_AGE_MS, &c)) {
            if (c.rc == 1)
                memcpy(row, &c.row, row_kinds[which].row_size);
            return c.rc;
        }
    }
    struct store *st = db_reader(db);
    int rc = st ? read(st, key, row) : -1;
    db_reader_done(db, st);
    if (cache && rc >= 0) {
        c.rc = rc;
        if (rc == 1)
            memcpy(&c.row, row, row_kinds[which].row_size);
        row_cache_put(cache, key, klen, epoch, now, &c);
    }
    return rc;
}

void db_rows_changed(struct db *db, enum epoch_kind kind)
{
    if (db->epochs)
        epochs_bump(db->epochs, kind);
}

int db_write(struct db *db, commit_fn fn, void *arg)
{
    return commit_run(db->commit, fn, arg);
}

int db_write_for(struct db *db, commit_fn fn, void *arg, const char *user, int64_t period)
{
    return commit_run_for(db->commit, fn, arg, user, period);
}

struct commit_queue *db_commit_queue(struct db *db)
{
    return db->commit;
}
