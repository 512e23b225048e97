/*
 * commit.h - group commit: many requests' writes in one short transaction.
 *
 * Every write of the request path (admission, refusal, settlement, breaker
 * changes) is an operation handed to commit_run. Writers queue; the one at
 * the front becomes the leader: it takes the host-wide writer lock (an OFD
 * lock on a file beside the database, so the kernel wakes the next process
 * when it is free: nobody sleeps and polls), opens one write transaction
 * (BEGIN IMMEDIATE; on PostgreSQL BEGIN and the hosts' advisory lock), runs
 * every queued operation in queue order, writes the batch's summed counters,
 * commits once, and hands each waiter its own result. This is LevelDB's
 * DBImpl::Write.
 *
 * Exactness does not depend on the batching: operations run one after the
 * other inside the transaction and each sees the writes of those before it,
 * so a limit or a budget is decided exactly as if each ran alone. The batch
 * runs first without savepoints; when an operation fails (or one of its
 * deferred writes, which PostgreSQL tells at the commit), nothing is kept
 * and the batch runs again with each operation inside its own savepoint and
 * every statement waited for, where a failing one is rolled back and fails
 * alone. An operation must
 * therefore set all it tells its caller afresh each time it runs. A batch
 * whose commit fails fails every operation in it, and nothing of it is
 * written. No operation may do I/O other than SQL: the lock is held while it
 * runs.
 */
#ifndef AIGW_COMMIT_H
#define AIGW_COMMIT_H

#include <stdint.h>

#include "buf.h"
#include "counters.h"

struct store;
struct commit_queue;

/* An operation: runs inside the batch's transaction on the leader's
 * connection s, adds its counters to c; returns 0, or -1 to be rolled back. */
typedef int (*commit_fn)(struct store *s, struct counters *c, void *arg);

/* A queue that writes through writer (which it then owns) and locks
 * lock_path (created 0660 when missing). NULL with err set on failure. */
struct commit_queue *commit_queue_new(struct store *writer, const char *lock_path, struct buf *err);
void commit_queue_free(struct commit_queue *q);

/* Runs fn(arg) in the next batch and waits for the batch's commit. Returns
 * fn's 0 when it ran and its batch committed, else -1. */
int commit_run(struct commit_queue *q, commit_fn fn, void *arg);

/* commit_run for an admission: user's rate states and budget row for period
 * are read with the other subjects' in one question before the batch's
 * operations run (store_prefetch_admissions). */
int commit_run_for(struct commit_queue *q, commit_fn fn, void *arg, const char *user,
                   int64_t period);

/* Runs fn(s, arg) alone, outside any transaction, holding the writer lock:
 * for WAL checkpoints that must not race the writers. Returns fn's result. */
int commit_exclusive(struct commit_queue *q, int (*fn)(struct store *s, void *arg), void *arg);

/* Batches committed and operations run by this process (for the tests and
 * the metrics). */
void commit_stats(struct commit_queue *q, unsigned long *batches, unsigned long *ops);

#endif
