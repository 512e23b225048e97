/*
 * commit.c - the group-commit queue and the host-wide writer lock (see commit.h).
 *
 * Threads of one process queue on a mutex with one condition variable each
 * (LevelDB's writers_ deque); processes queue on an OFD lock, which the
 * kernel grants in turn. SQLite's own busy handler still guards BEGIN
 * IMMEDIATE, but only against programs that do not take the lock (the
 * sqlite3 shell, an operator's aigw command).
 */
#include "commit.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

/* Operations one transaction takes at most: bounds how long the lock is held
 * (a few milliseconds) while the queue behind it waits for the next batch. */
#define BATCH_MAX 256

struct commit_op {
    commit_fn fn;
    int (*exclusive)(struct store *, void *); /* set: run alone, outside a transaction */
    void *arg;
    const char *user; /* an admission's subject and budget period (commit_run_for) */
    int64_t period;
    int rc;
    int done;
    pthread_cond_t cv;
    struct commit_op *next;
};

struct commit_queue {
    pthread_mutex_t mu;
    struct commit_op *head, *tail;
    struct store *writer;     /* used only by the leader */
    struct counters counters; /* the leader's batch sums */
    int lock_fd;
    int lock_held;   /* the leader holds the host's writer lock; touched by the leader only */
    int lock_warned; /* touched by the leader only */
    unsigned long batches, ops;
};

struct commit_queue *commit_queue_new(struct store *writer, const char *lock_path, struct buf *err)
{
    struct commit_queue *q = calloc(1, sizeof *q);
    if (!q) {
        buf_puts(err, "out of memory");
        return NULL;
    }
    q->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0660);
    if (q->lock_fd < 0) {
        buf_printf(err, "cannot open the writer lock %s: %s", lock_path, strerror(errno));
        free(q);
        return NULL;
    }
    pthread_mutex_init(&q->mu, NULL);
    q->writer = writer;
    return q;
}

void commit_queue_free(struct commit_queue *q)
{
    if (!q)
        return;
    assert(!q->head);
    close(q->lock_fd);
    store_close(q->writer);
    counters_free(&q->counters);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* Takes (how F_WRLCK) or releases (F_UNLCK) byte 0 of the lock file, waiting
 * in the kernel for another process to release it. */
static int writer_lock(struct commit_queue *q, short how)
{
    struct flock fl = {.l_type = how, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    while (fcntl(q->lock_fd, how == F_UNLCK ? F_OFD_SETLK : F_OFD_SETLKW, &fl) < 0) {
        if (errno != EINTR) {
            if (!q->lock_warned++)
                log_warn("the writer lock cannot be taken (%s); writers wait through SQLite's "
                         "busy handler instead",
                         strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Lets the host's next writer in as soon as this batch's COMMIT is on its
 * way to PostgreSQL (store_on_commit_sent): that writer's BEGIN and lock
 * then wait in the server, which hands it the lock the moment the commit
 * is done, instead of after this leader has read the outcome, released the
 * lock, and the next one has woken and sent its BEGIN. Exactness rests on
 * the server's lock, taken by every batch's BEGIN (store.c); this one only
 * keeps a host's processes queueing in the kernel, not in the server. A
 * commit that then fails runs its batch again, behind whoever is next. */
static void release_writer_lock(void *arg)
{
    struct commit_queue *q = arg;
    if (q->lock_held) {
        writer_lock(q, F_UNLCK);
        q->lock_held = 0;
    }
}

/* Sets the rc of every operation first..last. */
static void set_rcs(struct commit_op *first, struct commit_op *last, int rc)
{
    for (struct commit_op *p = first;; p = p->next) {
        p->rc = rc;
        if (p == last)
            break;
    }
}

/* Writes the batch's counters and commits: 0, or -1 (rolled back). With
 * undone set, a deferred statement's failure that undid the transaction
 * (store_undone) is not logged but told in *undone: the batch may run again. */
static int commit_batch(struct store *s, struct counters *c, int n, int *undone)
{
    if (counters_add_metric(c, "aigw_store_batches_total", "", 1) == 0 &&
        counters_op_commit(c) == 0 && counters_flush(c, s) == 0 && store_commit(s) == 0)
        return 0;
    if (undone && (*undone = store_undone(s)) == 1) {
        store_rollback(s);
        return -1;
    }
    log_error("a batch of %d write(s) failed to commit: %s", n, store_errmsg(s));
    store_rollback(s);
    return -1;
}

/* Opens the batch's transaction with its counters cleared: 0, or -1 with
 * every operation's rc set to -1. */
static int begin_batch(struct commit_queue *q, struct commit_op *first, struct commit_op *last)
{
    struct store *s = q->writer;
    counters_reset(&q->counters);
    if (store_begin(s) == 0)
        return 0;
    log_error("cannot begin a write transaction: %s", store_errmsg(s));
    store_rollback(s);
    set_rcs(first, last, -1);
    return -1;
}

/* Reads the admission state of the batch's subjects in one question (on
 * PostgreSQL; store_prefetch_admissions). 0, or -1 when it failed. */
static int prefetch_subjects(struct store *s, struct commit_op *first, struct commit_op *last)
{
    const char *users[BATCH_MAX];
    int64_t periods[BATCH_MAX];
    int n = 0;
    for (struct commit_op *p = first;; p = p->next) {
        int seen = 0; /* the same subject is asked for once */
        for (int i = 0; p->user && i < n && !seen; i++)
            seen = periods[i] == p->period && strcmp(users[i], p->user) == 0;
        if (p->user && !seen && n < BATCH_MAX) {
            users[n] = p->user;
            periods[n++] = p->period;
        }
        if (p == last)
            break;
    }
    return n ? store_prefetch_admissions(s, users, periods, n) : 0;
}

/*
 * The common case first: every operation of the batch in one transaction,
 * without savepoints (each would cost two more statements per operation,
 * and on PostgreSQL two round trips' worth of server work). 1 when the rcs
 * are set (all ran and the batch committed, or it could not begin or
 * commit), 0 when an operation failed: nothing was written. Every operation
 * sets all it tells its caller afresh each time it runs, so running it
 * again is safe.
 */
static int run_without_savepoints(struct commit_queue *q, struct commit_op *first,
                                  struct commit_op *last, int n)
{
    struct store *s = q->writer;
    struct counters *c = &q->counters;
    if (begin_batch(q, first, last) < 0)
        return 1;
    if (prefetch_subjects(s, first, last) < 0) {
        log_error("cannot read a batch's admission state: %s", store_errmsg(s));
        store_rollback(s);
        set_rcs(first, last, -1);
        return 1;
    }
    for (struct commit_op *p = first;; p = p->next) {
        if (p->fn(s, c, p->arg) != 0) {
            store_rollback(s);
            return 0;
        }
        counters_op_commit(c);
        if (p == last)
            break;
    }
    /* A deferred write of one operation that failed (on PostgreSQL) shows
     * only here: then nothing was written and the batch runs again. */
    int undone = 0;
    int rc = commit_batch(s, c, n, &undone);
    if (rc < 0 && undone)
        return 0;
    set_rcs(first, last, rc);
    return 1;
}

/* The batch again, each operation inside its own savepoint: one that fails
 * is undone to it and fails alone. Every statement is waited for here (none
 * deferred), so a failure shows in the operation that made it. */
static void run_with_savepoints(struct commit_queue *q, struct commit_op *first,
                                struct commit_op *last, int n)
{
    struct store *s = q->writer;
    struct counters *c = &q->counters;
    store_set_immediate(s, 1);
    if (begin_batch(q, first, last) < 0) {
        store_set_immediate(s, 0);
        return;
    }
    for (struct commit_op *p = first;; p = p->next) {
        p->rc = -1;
        if (store_savepoint(s) == 0) {
            if (p->fn(s, c, p->arg) == 0) {
                if (store_release(s) == 0) {
                    p->rc = 0;
                    counters_op_commit(c);
                }
            } else {
                counters_op_abort(c);
                store_rollback_to(s);
            }
        }
        if (p == last)
            break;
    }
    if (commit_batch(s, c, n, NULL) < 0)
        set_rcs(first, last, -1);
    store_set_immediate(s, 0);
}

/* Runs the operations first..last and sets each rc. */
static void run_batch(struct commit_queue *q, struct commit_op *first, struct commit_op *last,
                      int n)
{
    if (first->exclusive) {
        first->rc = first->exclusive(q->writer, first->arg);
        return;
    }
    if (run_without_savepoints(q, first, last, n))
        return;
    if (n == 1) /* the one operation failed, and nothing of it was written */
        first->rc = -1;
    else
        run_with_savepoints(q, first, last, n);
}

/* Queues op and waits until it has run; the front op leads its batch. */
static int submit(struct commit_queue *q, struct commit_op *op)
{
    pthread_cond_init(&op->cv, NULL);
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = op;
    else
        q->head = op;
    q->tail = op;
    while (!op->done && q->head != op)
        pthread_cond_wait(&op->cv, &q->mu);
    if (op->done) {
        pthread_mutex_unlock(&q->mu);
        pthread_cond_destroy(&op->cv);
        return op->rc;
    }
    /* The leader. The lock is taken before the batch is chosen, so whoever
     * queued while we waited for another process rides along. */
    pthread_mutex_unlock(&q->mu);
    int locked = writer_lock(q, F_WRLCK) == 0;
    pthread_mutex_lock(&q->mu);
    struct commit_op *last = op;
    int n = 1;
    if (!op->exclusive)
        while (last->next && !last->next->exclusive && n < BATCH_MAX) {
            last = last->next;
            n++;
        }
    pthread_mutex_unlock(&q->mu);
    /* Only the leader touches first..last now: their next pointers are fixed
     * (appends change only the tail, which we do not follow past last). */
    /* Without the lock (a file system without OFD locks) the batch still runs:
     * SQLite's own locking keeps it exact; only the waiting is by polling. */
    q->lock_held = locked;
    store_on_commit_sent(q->writer, release_writer_lock, q);
    run_batch(q, op, last, n);
    store_on_commit_sent(q->writer, NULL, NULL);
    release_writer_lock(q);
    pthread_mutex_lock(&q->mu);
    if (!op->exclusive) {
        q->batches++;
        q->ops += (unsigned long)n;
    }
    struct commit_op *next = last->next;
    for (struct commit_op *p = op; p != next;) {
        struct commit_op *after = p->next;
        p->done = 1;
        if (p != op)
            pthread_cond_signal(&p->cv);
        p = after;
    }
    q->head = next;
    if (!next)
        q->tail = NULL;
    else
        pthread_cond_signal(&next->cv); /* the next leader */
    pthread_mutex_unlock(&q->mu);
    pthread_cond_destroy(&op->cv);
    return op->rc;
}

int commit_run(struct commit_queue *q, commit_fn fn, void *arg)
{
    struct commit_op op = {.fn = fn, .arg = arg};
    return submit(q, &op);
}

int commit_run_for(struct commit_queue *q, commit_fn fn, void *arg, const char *user,
                   int64_t period)
{
    struct commit_op op = {.fn = fn, .arg = arg, .user = user, .period = period};
    return submit(q, &op);
}

int commit_exclusive(struct commit_queue *q, int (*fn)(struct store *s, void *arg), void *arg)
{
    struct commit_op op = {.exclusive = fn, .arg = arg};
    return submit(q, &op);
}

void commit_stats(struct commit_queue *q, unsigned long *batches, unsigned long *ops)
{
    pthread_mutex_lock(&q->mu);
    *batches = q->batches;
    *ops = q->ops;
    pthread_mutex_unlock(&q->mu);
}
