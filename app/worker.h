/*
 * worker.h - a FastCGI worker process: many requests at once, one thread each.
 *
 * What a process shares between its threads and what belongs to one thread
 * is split into two types:
 *   struct worker         the process: configuration, the database (a reader
 *                         pool and the group-committed writer), the secret and
 *                         JWKS caches, the compiled redaction patterns, the
 *                         trace exporter. Each is safe to use from any thread.
 *   struct worker_thread  one request thread: its libcurl handles (kept-alive
 *                         connections to the backends), its scratch buffers,
 *                         its random state, its FastCGI request and the
 *                         struct request it reuses.
 * Everything a worker opens is opened here, after any fork, so no two
 * processes share a handle.
 */
#ifndef AIGW_WORKER_H
#define AIGW_WORKER_H

#include <fcgiapp.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "audit.h"
#include "buf.h"
#include "request.h"

struct db;
struct redactor;
struct jwks;
struct secrets;
struct telemetry;
struct backend_pool;
struct server;
struct transfers;

struct worker {
    struct cfg *cfg;
    struct db *db;
    struct redactor *redactor; /* read-only once made */
    struct jwks *jwks;
    struct secrets *secrets;
    struct telemetry *telemetry;
    struct transfers *transfers; /* runs the streamed backend calls; NULL: each thread its own */
    int threads;                 /* request threads */
    atomic_ulong served;         /* requests answered by this process */
};

struct worker_thread {
    struct worker *w;
    struct backend_pool *pool;
    struct audit_scratch audit_scratch;
    uint64_t rng;      /* xorshift state for jitter and weighted choice */
    json_tokener *tok; /* reused for every backend answer and stream event */
    FCGX_Request fcgi;
    struct request req;
    struct server *server; /* worker.c's accept loop */
    int epfd;              /* where this thread waits for a connection */
    pthread_t tid;
};

/* Opens the database and the shared caches for cfg; 0, or -1 with err set.
 * threads sizes the reader pool (0: the configured threads_per_worker). */
int worker_init(struct worker *w, struct cfg *cfg, int threads, struct buf *err);
void worker_cleanup(struct worker *w);

/* Sets up t for requests of w: its own backend handles and random state.
 * 0, or -1 when out of memory. */
int worker_thread_init(struct worker_thread *t, struct worker *w);
void worker_thread_cleanup(struct worker_thread *t);

/* Parses text[0, n) as one JSON value with t's tokener (a new tokener is a
 * few kilobytes of calloc, and streams parse one per event). Returns a new
 * tree the caller releases with json_object_put, or NULL when the text is
 * not one complete JSON value. */
json_object *worker_thread_parse(struct worker_thread *t, const char *text, size_t n);

/* Serves requests from listen_fd with w->threads threads until told to stop
 * (SIGTERM, SIGINT or SIGHUP) or, when max_requests > 0, after about that
 * many requests. In-flight requests finish first. Runs the host's
 * housekeeping when this process is elected for it. Returns the exit status. */
int worker_run(struct worker *w, int listen_fd, unsigned long max_requests);

/* Blocks the stop signals (SIGTERM, SIGINT, SIGHUP) in the calling thread
 * and every thread it starts after; worker_run reads them from a signalfd.
 * Call it before worker_init, which starts the trace exporter's thread. */
void worker_block_stop_signals(void);

/* The thread count for cfg: $AIGW_THREADS when set, else the configuration. */
int worker_threads_for(const struct cfg *cfg);

#endif
