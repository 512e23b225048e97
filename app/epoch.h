/*
 * epoch.h - shared change counters: how a process learns, without reading
 * the database, that users, keys or breakers have changed.
 *
 * Every request needs its caller's key and user rows and the breaker of each
 * backend it may call. Reading them costs a read transaction each, and in a
 * database that every request writes, each read transaction starts with a
 * cold page cache. So processes keep those rows in memory and keep with each
 * the epoch it was read under. A counter per kind lives in a small file
 * beside the database, mapped shared by every aigw process on the host; each
 * change to a kind, once committed, adds one to its counter, and a cached row
 * read under an older epoch is read again.
 *
 * Changes made with aigw's own commands and by its workers bump the counters.
 * A change made by another program (the sqlite3 shell) does not: cached rows
 * are also read again once they are EPOCH_MAX_AGE_MS old.
 */
#ifndef AIGW_EPOCH_H
#define AIGW_EPOCH_H

#include <stdint.h>

#include "buf.h"

enum epoch_kind {
    EPOCH_AUTH,     /* users and API keys */
    EPOCH_BREAKERS, /* backend_state */
    EPOCH__COUNT,
};

/* How long a cached row is trusted without a bump. */
#define EPOCH_MAX_AGE_MS 1000

struct epochs;

/* Maps <database>-epochs, creating it when missing if create is set. NULL
 * with err set when it cannot be opened (then nothing may be cached). */
struct epochs *epochs_open(const char *db_path, int create, struct buf *err);
void epochs_close(struct epochs *e);

/* The current counter of kind (acquire: rows committed before the bump
 * that made this value are visible to a read that follows). */
uint64_t epochs_read(const struct epochs *e, enum epoch_kind kind);

/* Adds one to kind's counter. Call it after the change has committed. */
void epochs_bump(struct epochs *e, enum epoch_kind kind);

/* For commands that change the database and exit: opens, bumps every
 * counter and closes. Does nothing when no worker has made the file yet
 * (nothing is cached then) or it cannot be opened (cached rows then expire
 * within EPOCH_MAX_AGE_MS). */
void epochs_bump_all(const char *db_path);

#endif
