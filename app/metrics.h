/*
 * metrics.h - Prometheus metrics kept in the shared database.
 *
 * metrics_collect adds one request's counters to the group-committed batch
 * that settles it (or records its refusal), which writes them in the same
 * transaction, so /metrics is consistent across workers and survives
 * restarts. metrics_render writes the text format.
 */
#ifndef AIGW_METRICS_H
#define AIGW_METRICS_H

#include "buf.h"
#include "request.h"

struct counters;

/* Adds req's counters and report rollups to the batch's c; status is its
 * audit status (success, error, refused). 0 or -1 (out of memory). */
int metrics_collect(struct request *req, int http_status, const char *status, struct counters *c);

/* Appends the Prometheus text exposition to out. 0 or -1. */
int metrics_render(struct worker *w, struct buf *out);

#endif
