/*
 * housekeeping.c - checkpoints, the abandoned-row sweep and pruning in the
 * background (see housekeeping.h).
 *
 * A passive checkpoint copies the WAL back into the database beside the
 * readers and writers, on the housekeeper's own connection. Under constant
 * load the WAL never restarts by itself (a writer restarts it only when every
 * frame has been copied, and new ones arrive during each copy), so past
 * WAL_RESET_FRAMES it is restarted (a RESTART checkpoint) while holding the
 * writer lock, so writers wait in the kernel rather than spin on SQLITE_BUSY.
 * The restarted WAL is written over from its start: the file keeps its size
 * (journal_size_limit in sql_sqlite.c is above it), so no commit truncates
 * it or allocates its blocks again.
 */
#include "housekeeping.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commit.h"
#include "config.h"
#include "db.h"
#include "limits.h"
#include "log.h"
#include "store.h"
#include "worker.h"

#define CHECKPOINT_EVERY_MS   1000 /* the WAL stays a second's writes long */
#define ELECTION_RETRY_MS     5000 /* how soon another process takes over */
#define SWEEP_EVERY_MS        60000
#define PRUNE_BATCH_ROWS      500   /* rows one transaction deletes: a short one */
#define PRUNE_BATCHES_MAX     20    /* per round, so pruning a backlog never hogs the lock */
#define WAL_RESET_FRAMES      16384 /* 64 MiB of 4 KiB pages */
#define RESTART_LEFT_FRAMES   256   /* restart once a pass leaves at most this */
#define CHECKPOINT_PASSES_MAX 4

struct housekeeper {
    struct worker *w;
    int stop_fd;
    int lock_fd; /* our own open file description: the election lock is ours alone */
    struct store *conn;
    pthread_t tid;
};

/* Tries to take byte 1 of the lock file without waiting: 1 when elected. */
static int try_elect(struct housekeeper *h)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 1, .l_len = 1};
    return fcntl(h->lock_fd, F_OFD_SETLK, &fl) == 0;
}

static int truncate_wal(struct store *s, void *arg)
{
    (void)arg;
    return store_checkpoint(s, 1, NULL);
}

/* Copies the WAL back beside the writers; when it has grown long, restarts
 * it under the writer lock. Passive passes come first until little is left
 * to copy (each pass copies what arrived during the one before), so the
 * writers wait only for the last few frames and their fsync, not for a
 * second's worth. */
static void checkpoint(struct housekeeper *h)
{
    int frames = 0, left = 0;
    for (int pass = 0; pass < CHECKPOINT_PASSES_MAX; pass++) {
        left = store_checkpoint(h->conn, 0, &frames);
        if (left < 0) {
            log_warn("checkpoint failed: %s", store_errmsg(h->conn));
            return;
        }
        if (frames <= WAL_RESET_FRAMES || left <= RESTART_LEFT_FRAMES)
            break;
    }
    if (frames > WAL_RESET_FRAMES)
        commit_exclusive(db_commit_queue(h->w->db), truncate_wal, NULL);
}

struct sweep {
    int64_t cutoff_ms, now_ms;
    int done;
};

static int sweep_in_batch(struct store *st, struct counters *c, void *arg)
{
    (void)c;
    struct sweep *sw = arg;
    sw->done = limits_sweep_batch(st, sw->cutoff_ms, sw->now_ms);
    return sw->done < 0 ? -1 : 0;
}

struct prune {
    int64_t cutoff_ms;
    int deleted;
};

static int prune_in_batch(struct store *st, struct counters *c, void *arg)
{
    (void)c;
    struct prune *p = arg;
    p->deleted = store_audit_prune(st, p->cutoff_ms, PRUNE_BATCH_ROWS);
    return p->deleted < 0 ? -1 : 0;
}

static void sweep_and_prune(struct housekeeper *h)
{
    const struct cfg *cfg = h->w->cfg;
    /* Rows pending for longer than any request may run belong to dead workers. */
    int64_t now = now_ms();
    struct sweep sw = {now - ((int64_t)(cfg->retry.deadline_s * 1000) + 60000), now, 0};
    int total = 0;
    do {
        if (db_write(h->w->db, sweep_in_batch, &sw) < 0)
            break;
        total += sw.done;
    } while (sw.done == SWEEP_BATCH_ROWS);
    if (total)
        log_warn("marked %d stale pending request(s) abandoned and released their reservations",
                 total);
    if (cfg->audit.retention_days <= 0)
        return;
    struct prune p = {now - (int64_t)cfg->audit.retention_days * 86400000, 0};
    for (int i = 0; i < PRUNE_BATCHES_MAX; i++)
        if (db_write(h->w->db, prune_in_batch, &p) < 0 || p.deleted < PRUNE_BATCH_ROWS)
            break;
}

static void *housekeeping_thread(void *arg)
{
    struct housekeeper *h = arg;
    int elected = 0;
    int64_t last_sweep = 0;
    for (;;) {
        if (!elected && (elected = try_elect(h)))
            log_debug("this process does the host's database housekeeping");
        if (elected) {
            checkpoint(h);
            int64_t now = now_ms();
            if (now - last_sweep >= SWEEP_EVERY_MS) {
                last_sweep = now;
                sweep_and_prune(h);
            }
        }
        struct pollfd p = {.fd = h->stop_fd, .events = POLLIN};
        int rc = poll(&p, 1, elected ? CHECKPOINT_EVERY_MS : ELECTION_RETRY_MS);
        if (rc > 0 || (rc < 0 && errno != EINTR))
            break;
    }
    return NULL;
}

struct housekeeper *housekeeper_start(struct worker *w, int stop_fd)
{
    const struct cfg *cfg = w->cfg;
    struct housekeeper *h = calloc(1, sizeof *h);
    struct buf err = {0}, path = {0};
    if (!h)
        return NULL;
    h->w = w;
    h->stop_fd = stop_fd;
    buf_printf(&path, "%s-writer.lock", cfg->database.local_path);
    h->lock_fd = open(buf_cstr(&path), O_RDWR | O_CREAT | O_CLOEXEC, 0660);
    h->conn = store_open_connection(cfg, &err);
    if (h->lock_fd < 0 || !h->conn || pthread_create(&h->tid, NULL, housekeeping_thread, h) != 0) {
        log_error("cannot start the housekeeping thread: %s", h->lock_fd < 0 ? strerror(errno)
                                                              : err.len      ? buf_cstr(&err)
                                                                             : "no thread");
        if (h->lock_fd >= 0)
            close(h->lock_fd);
        store_close(h->conn);
        free(h);
        h = NULL;
    }
    buf_free(&err);
    buf_free(&path);
    return h;
}

void housekeeper_stop(struct housekeeper *h)
{
    if (!h)
        return;
    pthread_join(h->tid, NULL);
    store_close(h->conn);
    close(h->lock_fd); /* drops the election lock: another process may take over */
    free(h);
}
