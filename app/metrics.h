/*
 * metrics.h - Prometheus metrics kept in the shared database.
 *
 * metrics_record adds one request's counters inside the transaction that
 * settles it (or records its refusal), so /metrics is consistent across
 * workers and survives restarts. metrics_render writes the text format.
 */
#ifndef AIGW_METRICS_H
#define AIGW_METRICS_H

#include "buf.h"
#include "request.h"

/* Adds req's counters and report rollups; status is its audit status
 * (success, error, refused). Call inside an open write transaction. 0 or -1. */
int metrics_record(struct request *req, int http_status, const char *status);

/* Appends the Prometheus text exposition to out. 0 or -1. */
int metrics_render(struct worker *w, struct buf *out);

#endif
