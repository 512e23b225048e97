/*
 * worker.h - a FastCGI worker process: setup, accept loop, teardown.
 *
 * Everything a worker opens (database connection, backend connections) is
 * opened here, after any fork, so no two processes share a handle.
 */
#ifndef AIGW_WORKER_H
#define AIGW_WORKER_H

#include "buf.h"
#include "request.h"

/* Opens the database and backend handles for cfg; 0, or -1 with err set. */
int worker_init(struct worker *w, struct cfg *cfg, struct buf *err);
void worker_cleanup(struct worker *w);

/* Serves requests from listen_fd until told to stop (SIGTERM, SIGINT or
 * SIGHUP) or, when max_requests > 0, after that many requests. Returns the
 * process exit status. */
int worker_run(struct worker *w, int listen_fd, unsigned long max_requests);

#endif
