/*
 * backend.h - HTTP calls to model backends over kept-alive connections.
 *
 * Each worker keeps one libcurl handle per configured backend, so TLS and TCP
 * connections are reused across requests. backend_perform makes one call and
 * reports what happened; deciding what to do about it is dispatch.c's job.
 * A streamed answer is handed to the caller event by event as it arrives.
 */
#ifndef AIGW_BACKEND_H
#define AIGW_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

struct transfers;

struct backend_conn {
    const struct cfg_backend *cfg;
    size_t index;   /* in cfg->backends */
    void *curl;     /* CURL * */
    struct buf key; /* the resolved api key, or the Entra ID token; never logged */
    int key_loaded;
};

struct backend_pool {
    struct backend_conn *conns;
    size_t n;
};

/* One handle per backend; free with backend_pool_free. NULL when out of memory. */
struct backend_pool *backend_pool_new(const struct cfg *cfg);
void backend_pool_free(struct backend_pool *pool);

struct secrets;
/* Resolves the backend's key through the worker's secret cache, or its
 * Entra ID token when it signs in with one (fetching either again with
 * force). 0, or -1 with err set. */
int backend_load_key(struct backend_conn *c, struct secrets *secrets, int force, struct buf *err);

/* Called with the data of each SSE event; return 0 to go on, -1 to abort. */
typedef int (*sse_event_fn)(void *arg, const char *data, size_t len);

struct upstream_call {
    /* in */
    const char *url;
    const char *method; /* "DELETE", or NULL: POST with body, GET without */
    const char *body;
    size_t body_len;
    const char *traceparent;
    double timeout_s;
    sse_event_fn on_event; /* non-NULL: relay text/event-stream answers */
    void *arg;
    struct transfers *loop; /* non-NULL: a relayed call runs on this loop */
    int relay_fd;           /* what on_event writes to, watched for room on the loop */
    struct buf *body_out;   /* the whole answer when not relayed as events */
    size_t max_body;
    /* out */
    long status;            /* 0 when no HTTP answer */
    int64_t retry_after_ms; /* from Retry-After / retry-after-ms; -1 when absent */
    char content_type[96];
    char processing_ms[24]; /* openai-processing-ms, relayed to the client */
    int is_sse;
    int events;  /* SSE events handed to on_event */
    int aborted; /* on_event asked to stop */
    int timed_out;
    int transport_error; /* connect failure, reset, truncated answer */
    char error[160];
    double latency_ms;
    size_t sse_pos; /* parser state */
    struct buf sse_line;
    struct buf sse_event; /* the event being handed over */
};

/* Releases the parser buffers a call keeps for the next one. */
void upstream_call_free(struct upstream_call *call);

/* Performs one POST (or GET when body is NULL). Returns 0 when an HTTP answer
 * arrived completely, -1 otherwise (see the out fields). A call with on_event
 * and loop runs on the loop (transfers.h): on_event is then called on the
 * loop's thread while the caller's waits. */
int backend_perform(struct backend_conn *c, struct upstream_call *call);

/* A libcurl write callback that appends to the struct buf passed as its data,
 * refusing answers over SMALL_ANSWER_MAX (1 MiB): for the small documents the
 * gateway fetches for itself (signing keys, tokens, secrets). */
#define SMALL_ANSWER_MAX ((size_t)1 << 20)
size_t backend_collect_small_answer(char *data, size_t size, size_t nmemb, void *buf);

/* Parses a Retry-After value (seconds or an HTTP date) into milliseconds; -1 if invalid. */
int64_t backend_parse_retry_after(const char *value, int64_t now_ms);

#endif
