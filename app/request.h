/*
 * request.h - the request context that flows through the pipeline.
 *
 * struct request holds one request from read to export. Each request thread
 * (worker.h) keeps one and reuses it: request_reset clears it between
 * requests and everything it owns is released there, so the loop cannot
 * leak. req->w is the process (shared, thread-safe parts), req->t the thread
 * serving it (its backend handles and scratch buffers).
 *
 * The response has an explicit state (enum response_state), advanced only by
 * fcgi_io.c: whether anything went out is read from it, never guessed.
 */
#ifndef AIGW_REQUEST_H
#define AIGW_REQUEST_H

#include <fcgiapp.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "err.h"
#include "router.h"
#include "validate.h"

struct worker;
struct worker_thread;

/* How far the answer has gone out. Only forward, only in fcgi_io.c. */
enum response_state {
    RESPONSE_NONE,      /* nothing sent: an error can still become the answer */
    RESPONSE_READY,     /* a whole answer is made and held until the request is settled */
    RESPONSE_HEADERS,   /* status and headers sent, body not yet */
    RESPONSE_STREAMING, /* stream events sent: only an error event may follow */
    RESPONSE_DONE,      /* a whole answer was written */
};

#define MAX_ATTEMPTS_RECORDED 32

struct attempt {
    const char *backend; /* the config's name; lives as long as the config */
    int http_status;     /* 0 when no response */
    int64_t start_ns;    /* wall clock, for the attempt's span */
    char span_id[17];    /* the attempt's span, sent to the backend in traceparent */
    double latency_ms;
    char error[160];
};

struct caller {
    int authenticated;
    const char *via; /* "api_key", "jwt" or "none" */
    char user_id[257];
    char roles[512]; /* comma-separated */
    /* limits in force for the subject (the caller, or the end user on whose
     * behalf a trusted application calls) */
    long requests_per_window;
    long window_s;
    long tokens_per_minute;
    long token_budget;
    enum budget_period budget_period;
};

struct ratelimit_info {
    int have_requests, have_tokens;
    long limit_requests, remaining_requests;
    int64_t reset_requests_ms;
    long limit_tokens, remaining_tokens;
    int64_t reset_tokens_ms;
};

struct request {
    struct worker *w;        /* the process */
    struct worker_thread *t; /* the thread serving this request */
    FCGX_Request *fcgi;
    enum response_state response;
    /* Model calls hold their last bytes (the whole answer, or a stream's
     * [DONE]) until the audit row is settled, so no client has an answer
     * whose spend a killed worker could leave uncounted. */
    int hold_answer;
    const char *held_type; /* the held answer's content type */
    struct buf held;       /* the held answer's body, or the stream's last event */

    /* read */
    char request_id[40];
    char trace_id[33];
    char span_id[17];
    char parent_span_id[17];
    int64_t start_ms; /* wall clock */
    int64_t start_ns;
    double start_mono; /* monotonic seconds, for latency */
    /* The strings below point into the FastCGI parameters, which live until
     * FCGX_Finish_r: nothing after the response may read them. method and path
     * are copied because the log line needs them afterwards. */
    char method[16];
    char path[1024];
    const char *query;
    const char *content_type;
    const char *client_ip;
    const char *authorization;
    const char *api_key;
    const char *repeated_credential; /* a credential header sent twice, or NULL */
    struct buf body;

    /* route */
    enum route route;
    char deployment[ROUTER_DEPLOYMENT_MAX];
    char stored_id[ROUTER_DEPLOYMENT_MAX]; /* a stored response's id from the path */

    /* authenticate */
    struct caller caller;
    const char *subject; /* whose limits and budget apply */
    const char *end_user;

    /* validate */
    struct chat_input in;
    /* The client-visible model name, copied: dispatch rewrites "model" in the
     * body for OpenAI-type backends, which frees the parsed string. */
    char model[257];
    const char *api_version;
    char api_version_buf[64];
    char forward_query[512]; /* a stored-response GET's own parameters (limit, after, ...) */

    /* admit */
    int audited; /* an audit row exists for this request */
    long reserved_tokens;
    int64_t budget_period_start;
    struct ratelimit_info rl;

    /* dispatch */
    struct attempt attempts[MAX_ATTEMPTS_RECORDED];
    int n_attempts;
    const char *backend_name;
    const char *backend_deployment;
    int upstream_status; /* status relayed from the backend (0 if none) */
    /* The Responses API: the only backend that may be called (the one that
     * holds the stored response named), and the id of the response made. */
    const char *pinned_backend;
    char response_id[128];
    char upstream_processing_ms[24];
    struct buf upstream; /* the backend's response body */
    int client_gone;

    /* usage */
    int64_t prompt_tokens, completion_tokens, total_tokens;

    /* outcome */
    enum aigw_err err;
    char err_param[128];
    char err_message[384];
    int retry_after_s; /* for 429 and 503 */
    /* Static header lines (each ending in CRLF) added to the answer: the
     * admin API's and the dashboard's no-store and security headers. */
    const char *extra_headers;
    int http_status;
    int64_t end_ns; /* when the response was complete */
    struct buf out; /* the response body sent (for the audit) */
};

/* Clears everything a request holds, keeping buffers' memory for reuse. */
void request_reset(struct request *req);
/* Releases the request's buffers (at worker exit). */
void request_free(struct request *req);
/* Sets the error outcome with a message (and param) for the caller. */
enum aigw_err request_fail(struct request *req, enum aigw_err err, const char *param,
                           const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* request_fail with store_unavailable (503) and a Retry-After: the database
 * could not be read or written, so nothing may be served unrecorded. */
enum aigw_err request_store_unavailable(struct request *req);

/* Wall-clock milliseconds and monotonic seconds. */
int64_t now_ms(void);
int64_t now_ns(void);
double mono_s(void);

#endif
