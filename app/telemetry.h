/*
 * telemetry.h - traces and the per-request log line, after the response.
 *
 * Pipeline stage 10. Runs once the client has its answer: one structured JSON
 * log line on stderr, and (when telemetry.otlp_endpoint is set) an OTLP/HTTP
 * JSON export of the request's span and one child span per backend attempt,
 * with the GenAI semantic conventions. A collector that is down or slow costs
 * the request nothing: exports have a short timeout, and after a failure the
 * worker stops trying for a while.
 */
#ifndef AIGW_TELEMETRY_H
#define AIGW_TELEMETRY_H

#include "request.h"

struct telemetry;

/* NULL when out of memory; free with telemetry_free. */
struct telemetry *telemetry_new(const struct cfg *cfg);
void telemetry_free(struct telemetry *t);

/* Writes the log line and exports the spans of req. */
void telemetry_export(struct worker *w, struct request *req);

/* Appends the OTLP JSON document for req to out (exposed for tests). */
void telemetry_otlp_json(const struct cfg *cfg, struct request *req, struct buf *out);

#endif
