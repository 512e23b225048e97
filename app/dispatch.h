/*
 * dispatch.h - choosing backends, failing over, retrying.
 *
 * Pipeline stage 6. The candidates are the backends that serve the requested
 * model, by priority and weighted at random within a priority; open breakers
 * are skipped. Connect errors, timeouts, 429, 5xx and a backend's
 * own 401/403/404 fail over to the next
 * candidate at once; when every candidate has failed the round is retried
 * after an exponential, jittered backoff that honours Retry-After, all within
 * one deadline. Other 4xx are the caller's and pass through. A stream can fail
 * over only until its first byte reaches the client. A request about a stored
 * response (req->pinned_backend) goes to the backend that holds it, or fails
 * naming it.
 */
#ifndef AIGW_DISPATCH_H
#define AIGW_DISPATCH_H

#include <json-c/json.h>
#include <stdint.h>

#include "backend.h"
#include "request.h"

struct dispatch_target {
    /* "chat/completions" or "embeddings" (under an Azure deployment), or
     * "responses", "responses/ID", "responses/ID/input_items" (resource_op) */
    const char *op;
    int resource_op;       /* Azure: {url}/openai/{op}, the deployment as "model" */
    const char *method;    /* "GET" or "DELETE"; NULL: POST body */
    const char *query;     /* the client's query to forward (checked), or NULL */
    int relay_not_found;   /* a backend's 404 is the answer (a stored response it lacks) */
    json_object *body;     /* what to send; "model" is set per backend where it names one */
    int body_is_raw_ok;    /* req->body may be sent unchanged to Azure backends */
    sse_event_fn on_event; /* non-NULL for streams */
    void *arg;
    /* Checks a 2xx answer in req->upstream; 0 ok, -1 malformed (fails over). */
    int (*accept)(struct request *req, void *arg);
};

/*
 * Calls backends until one answers. On AIGW_OK, req->upstream_status and
 * req->upstream hold a final answer (2xx, or a 4xx the caller must see), or
 * a stream has been relayed. Every attempt is recorded in req->attempts.
 */
enum aigw_err dispatch_call(struct request *req, struct dispatch_target *t);

/* 1 when some backend serves model. */
int dispatch_model_served(const struct cfg *cfg, const char *model);

/* Backoff before round (0-based) in ms: base * 2^round, capped, jittered to
 * [50%, 100%] with rnd in [0, 1), never below retry_after_ms. */
int64_t dispatch_backoff_ms(int round, int base_ms, int max_ms, double rnd, int64_t retry_after_ms);

/* Orders candidate indexes: ascending priority, weighted random within one.
 * Returns how many backends serve model (written to order). */
size_t dispatch_order(const struct cfg *cfg, const char *model, uint64_t *rng, size_t *order);

uint64_t rng_next(uint64_t *state);

#endif
