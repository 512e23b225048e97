/*
 * dispatch.c - failover, retries and breakers around backend calls (see dispatch.h).
 *
 * The breaker is consulted and updated in short transactions before and after
 * each call; no transaction is open while a backend is being called.
 */
#include "dispatch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "breaker.h"
#include "fcgi_io.h"
#include "log.h"
#include "worker.h"

#define DEFAULT_API_VERSION "2024-10-21"
/* The Responses API exists on Azure's preview versions only (or in v1). */
#define DEFAULT_RESPONSES_API_VERSION "2025-04-01-preview"
#define MAX_ANSWER_BYTES              (16u << 20) /* a model answer larger than this is refused */

uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: jitter and weighted choice need speed, not secrecy. */
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

int dispatch_model_served(const struct cfg *cfg, const char *model)
{
    for (size_t i = 0; i < cfg->n_backends; i++)
        if (cfg_backend_deployment(&cfg->backends[i], model))
            return 1;
    return 0;
}

size_t dispatch_order(const struct cfg *cfg, const char *model, uint64_t *rng, size_t *order)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_backends; i++)
        if (cfg_backend_deployment(&cfg->backends[i], model))
            order[n++] = i;
    /* Insertion sort by priority (stable; n is small). */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i;
             j > 0 && cfg->backends[order[j]].priority < cfg->backends[order[j - 1]].priority;
             j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    /* Within each priority, draw without replacement in proportion to weight. */
    for (size_t start = 0; start < n;) {
        size_t end = start;
        while (end < n &&
               cfg->backends[order[end]].priority == cfg->backends[order[start]].priority)
            end++;
        for (size_t k = start; k + 1 < end; k++) {
            long total = 0;
            for (size_t j = k; j < end; j++)
                total += cfg->backends[order[j]].weight;
            long pick = (long)(rng_unit(rng) * (double)total);
            size_t j = k;
            for (; j < end; j++) {
                pick -= cfg->backends[order[j]].weight;
                if (pick < 0)
                    break;
            }
            if (j >= end)
                j = end - 1;
            size_t t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
        start = end;
    }
    return n;
}

int64_t dispatch_backoff_ms(int round, int base_ms, int max_ms, double rnd, int64_t retry_after_ms)
{
    double d = (double)base_ms * pow(2.0, round);
    if (d > max_ms)
        d = max_ms;
    d = d * (0.5 + 0.5 * rnd);
    int64_t ms = (int64_t)d;
    return retry_after_ms > ms ? retry_after_ms : ms;
}

static void build_url(const struct cfg_backend *b, const char *deployment,
                      const struct dispatch_target *t, const char *client_version, struct buf *out)
{
    buf_reset(out);
    const char *v = b->api_version                      ? b->api_version
                    : client_version && *client_version ? client_version
                    : t->resource_op                    ? DEFAULT_RESPONSES_API_VERSION
                                                        : DEFAULT_API_VERSION;
    /* A client's version was checked in the pipeline: letters, digits, '-', '.'. */
    if (b->type == BACKEND_AZURE && b->v1_api)
        buf_printf(out, "%s/openai/v1/%s", b->url, t->op);
    else if (b->type == BACKEND_AZURE && t->resource_op)
        buf_printf(out, "%s/openai/%s?api-version=%s", b->url, t->op, v);
    else if (b->type == BACKEND_AZURE)
        buf_printf(out, "%s/openai/deployments/%s/%s?api-version=%s", b->url, deployment, t->op, v);
    else
        buf_printf(out, "%s/%s", b->url, t->op);
    if (t->query && *t->query)
        buf_printf(out, "%c%s", strchr(buf_cstr(out), '?') ? '&' : '?', t->query);
}

/* The body for backend b: the client's bytes when they can go unchanged. */
static const char *body_for(struct request *req, struct dispatch_target *t,
                            const struct cfg_backend *b, const char *deployment, size_t *len)
{
    if (!t->body) {
        *len = 0;
        return NULL;
    }
    /* Azure's deployment paths name the model in the URL; its v1 and
     * resource-level routes, like OpenAI, take it in the body. */
    int model_in_body = b->type == BACKEND_OPENAI || b->v1_api || t->resource_op;
    if (!model_in_body && t->body_is_raw_ok) {
        *len = req->body.len;
        return req->body.data;
    }
    if (model_in_body)
        json_object_object_add(t->body, "model", json_object_new_string(deployment));
    else
        json_object_object_del(t->body, "model");
    size_t n;
    const char *s = json_object_to_json_string_length(t->body, JSON_C_TO_STRING_PLAIN, &n);
    *len = n;
    return s;
}

/* Statuses that describe the request, not the backend: relayed, never retried.
 * 401, 403 and 404 from a backend mean its key or deployment is wrong, which
 * another region may not share, so those fail over. */
static int client_error(const struct dispatch_target *t, long status)
{
    return status == 400 || status == 409 || status == 413 || status == 415 || status == 422 ||
           (status == 404 && t->relay_not_found);
}

static struct attempt *record_attempt(struct request *req, const char *backend)
{
    struct attempt *a =
        &req->attempts[req->n_attempts < MAX_ATTEMPTS_RECORDED ? req->n_attempts
                                                               : MAX_ATTEMPTS_RECORDED - 1];
    memset(a, 0, sizeof *a);
    a->backend = backend;
    a->start_ns = now_ns();
    random_hex(a->span_id, 8);
    req->n_attempts++;
    return a;
}

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* What the loop remembers across attempts. */
struct dispatch_state {
    double deadline;           /* monotonic seconds */
    int64_t retry_after_max;   /* the longest Retry-After of this round's 429s, -1 = none */
    int64_t earliest_retry_at; /* when the first open breaker may let calls through */
    int last_was_timeout;
    int tried_any;
    struct buf url;
    struct upstream_call call;
    char traceparent[64];
};

/* What one attempt came to. */
enum attempt_verdict {
    VERDICT_DONE, /* a final answer or a relayed stream: stop with req->err's outcome */
    VERDICT_NEXT, /* this backend failed before the client saw a byte: try the next */
};

/* Records one outcome of backend b in its shared breaker. */
static void record(struct request *req, const struct cfg_backend *b, enum breaker_decision d,
                   enum breaker_outcome outcome, int64_t retry_after_ms, const char *error)
{
    breaker_record(req->w, b->name, b->timeout_s, d == BREAKER_TRIAL, outcome, retry_after_ms,
                   error);
}

/* A stream of which the client has bytes: it can only end, never fail over. */
static enum attempt_verdict stream_ended(struct request *req, const struct cfg_backend *b,
                                         enum breaker_decision d, struct attempt *a, int rc,
                                         const struct upstream_call *call)
{
    req->upstream_status = (int)call->status;
    if (rc == 0 && !call->aborted) {
        record(req, b, d, OUTCOME_SUCCESS, 0, NULL);
        return VERDICT_DONE;
    }
    snprintf(a->error, sizeof a->error, "%s",
             req->client_gone ? "client disconnected" : call->error);
    if (req->client_gone) {
        /* The client left: the backend was doing fine. */
        record(req, b, d, OUTCOME_SUCCESS, 0, NULL);
        return VERDICT_DONE;
    }
    record(req, b, d, OUTCOME_FAILURE, 0, call->error);
    request_fail(req, AIGW_ERR_BACKEND_ERROR, "", "The backend stream broke off: %s.", call->error);
    return VERDICT_DONE;
}

/* Decides what the answer of one attempt means, and tells the breaker. */
static enum attempt_verdict judge_answer(struct request *req, struct dispatch_target *t,
                                         struct dispatch_state *st, const struct cfg_backend *b,
                                         enum breaker_decision d, struct attempt *a, int rc)
{
    const struct upstream_call *call = &st->call;
    if (call->is_sse && call->events > 0 && req->response == RESPONSE_STREAMING)
        return stream_ended(req, b, d, a, rc, call);
    if (rc < 0) {
        snprintf(a->error, sizeof a->error, "%s", call->error);
        record(req, b, d, OUTCOME_FAILURE, 0, call->error);
        log_warn("request %s: backend %s failed: %s", req->request_id, b->name, call->error);
        return VERDICT_NEXT;
    }
    if (call->status == 429) {
        snprintf(a->error, sizeof a->error, "throttled (429)");
        if (call->retry_after_ms < 0) {
            record(req, b, d, OUTCOME_FAILURE, 0, "throttled (429)");
            return VERDICT_NEXT;
        }
        record(req, b, d, OUTCOME_THROTTLED, call->retry_after_ms,
               "throttled (429 with Retry-After)");
        if (call->retry_after_ms > st->retry_after_max)
            st->retry_after_max = call->retry_after_ms;
        return VERDICT_NEXT;
    }
    if (client_error(t, call->status)) {
        /* The caller's mistake: relay it, do not retry, the backend is healthy. */
        record(req, b, d, OUTCOME_SUCCESS, 0, NULL);
        req->upstream_status = (int)call->status;
        snprintf(a->error, sizeof a->error, "HTTP %ld (passed to the client)", call->status);
        return VERDICT_DONE;
    }
    const char *bad = NULL;
    if (!(call->status >= 200 && call->status < 300))
        bad = "HTTP error";
    else if (!call->is_sse && t->accept && t->accept(req, t->arg) < 0)
        bad = "malformed answer from backend";
    else if (call->is_sse && req->response != RESPONSE_STREAMING)
        bad = "stream ended without events"; /* not one event reached the client */
    if (bad) {
        if (strcmp(bad, "HTTP error") == 0)
            snprintf(a->error, sizeof a->error, "HTTP %ld from backend", call->status);
        else
            snprintf(a->error, sizeof a->error, "%s", bad);
        record(req, b, d, OUTCOME_FAILURE, 0, a->error);
        return VERDICT_NEXT;
    }
    record(req, b, d, OUTCOME_SUCCESS, 0, NULL);
    req->upstream_status = (int)call->status;
    return VERDICT_DONE;
}

/* One call to the backend behind conn, within remaining seconds. */
static enum attempt_verdict attempt_backend(struct request *req, struct dispatch_target *t,
                                            struct dispatch_state *st, struct backend_conn *conn,
                                            enum breaker_decision d, double remaining)
{
    const struct cfg_backend *b = conn->cfg;
    const char *deployment = cfg_backend_deployment(b, req->model);
    struct attempt *a = record_attempt(req, b->name);
    /* Each attempt is a child span; the backend sees it as its parent. */
    snprintf(st->traceparent, sizeof st->traceparent, "00-%s-%s-01", req->trace_id, a->span_id);
    st->tried_any = 1;
    req->backend_name = b->name;
    req->backend_deployment = deployment;
    struct buf keyerr = {0};
    int have_key = backend_load_key(conn, req->w->secrets, 0, &keyerr) == 0;
    if (!have_key) {
        log_error("backend %s: %s", b->name, buf_cstr(&keyerr));
        snprintf(a->error, sizeof a->error, "backend key unavailable");
        record(req, b, d, OUTCOME_FAILURE, 0, "backend key unavailable");
    }
    buf_free(&keyerr);
    if (!have_key)
        return VERDICT_NEXT;
    struct upstream_call *call = &st->call;
    build_url(b, deployment, t, req->api_version, &st->url);
    size_t body_len;
    call->body = body_for(req, t, b, deployment, &body_len);
    call->body_len = body_len;
    call->method = t->method && strcmp(t->method, "GET") != 0 ? t->method : NULL;
    call->url = buf_cstr(&st->url);
    call->traceparent = st->traceparent;
    call->timeout_s = remaining < b->timeout_s ? remaining : b->timeout_s;
    call->on_event = t->on_event;
    call->arg = t->arg;
    call->loop = req->w->transfers;
    call->relay_fd = req->fcgi ? req->fcgi->ipcFd : -1;
    call->body_out = &req->upstream;
    call->max_body = MAX_ANSWER_BYTES;
    buf_reset(&req->upstream);
    int rc = backend_perform(conn, call);
    if (rc == 0 && call->status == 401 && (conn->cfg->api_key_ref || conn->cfg->entra)) {
        /* The key may have been rotated, the token revoked: fetch it again
         * and retry once. */
        struct buf err = {0};
        if (backend_load_key(conn, req->w->secrets, 1, &err) == 0) {
            buf_reset(&req->upstream);
            rc = backend_perform(conn, call);
        }
        buf_free(&err);
    }
    a->http_status = (int)call->status;
    a->latency_ms = call->latency_ms;
    st->last_was_timeout = call->timed_out;
    if (call->processing_ms[0])
        snprintf(req->upstream_processing_ms, sizeof req->upstream_processing_ms, "%s",
                 call->processing_ms);
    return judge_answer(req, t, st, b, d, a, rc);
}

/* The message of a dispatch that found no answer. */
static void explain_failure(struct request *req, enum aigw_err result)
{
    if (req->pinned_backend) {
        /* Only that backend holds the stored response: say which one failed. */
        if (!req->retry_after_s)
            req->retry_after_s = 5;
        request_fail(req, AIGW_ERR_BACKEND_UNAVAILABLE, "",
                     "The backend %s, which holds the stored response this request needs, is "
                     "unavailable%s; retry after %d s.",
                     req->pinned_backend,
                     result == AIGW_ERR_BACKEND_UNAVAILABLE ? " (circuit open)" : "",
                     req->retry_after_s);
        return;
    }
    if (result == AIGW_ERR_BACKEND_UNAVAILABLE)
        request_fail(
            req, result, "",
            "Every backend for model '%s' is unavailable (circuit open); retry after %d s.",
            req->model, req->retry_after_s);
    else if (result == AIGW_ERR_DEADLINE)
        request_fail(req, result, "",
                     "No backend answered within the deadline after %d attempt(s).",
                     req->n_attempts);
    else
        request_fail(req, result, "", "The model backends failed after %d attempt(s); last: %s.",
                     req->n_attempts,
                     req->n_attempts
                         ? req->attempts[(req->n_attempts - 1) % MAX_ATTEMPTS_RECORDED].error
                         : "none");
}

/* One pass over the candidates in order. Returns AIGW_OK with a verdict of
 * DONE, else the round's outcome; *tried says whether any breaker let a call
 * through. */
static enum aigw_err dispatch_round(struct request *req, struct dispatch_target *t,
                                    struct dispatch_state *st, const size_t *order, size_t n,
                                    int *tried, int *done)
{
    const struct cfg *cfg = req->w->cfg;
    *tried = *done = 0;
    st->retry_after_max = -1;
    for (size_t k = 0; k < n && req->n_attempts < cfg->retry.max_attempts; k++) {
        struct backend_conn *conn = &req->t->pool->conns[order[k]];
        const struct cfg_backend *b = conn->cfg;
        double remaining = st->deadline - mono_s();
        if (remaining <= 0.05)
            return AIGW_ERR_DEADLINE;
        int64_t retry_at = 0;
        enum breaker_decision d = breaker_acquire(req->w, b->name, b->timeout_s, &retry_at);
        if (d == BREAKER_SKIP) {
            if (!st->earliest_retry_at || retry_at < st->earliest_retry_at)
                st->earliest_retry_at = retry_at;
            continue;
        }
        *tried = 1;
        if (attempt_backend(req, t, st, conn, d, remaining) == VERDICT_DONE) {
            *done = 1;
            return req->err == AIGW_OK ? AIGW_OK : req->err;
        }
    }
    return AIGW_OK;
}

enum aigw_err dispatch_call(struct request *req, struct dispatch_target *t)
{
    const struct cfg *cfg = req->w->cfg;
    size_t order[CFG_MAX_BACKENDS];
    size_t n;
    if (req->pinned_backend) {
        n = 0;
        for (size_t i = 0; i < cfg->n_backends && !n; i++)
            if (strcmp(cfg->backends[i].name, req->pinned_backend) == 0)
                order[n++] = i;
        if (n == 0)
            return request_fail(req, AIGW_ERR_BACKEND_UNAVAILABLE, "",
                                "The backend %s, which holds the stored response this request "
                                "needs, is no longer configured.",
                                req->pinned_backend);
    } else {
        n = dispatch_order(cfg, req->model, &req->t->rng, order);
    }
    if (n == 0)
        return request_fail(req, AIGW_ERR_MODEL_NOT_FOUND, "model",
                            "The model '%s' does not exist or no backend serves it.", req->model);
    struct dispatch_state st = {.deadline = req->start_mono + cfg->retry.deadline_s};
    enum aigw_err result = AIGW_ERR_BACKEND_ERROR;
    for (int round = 0; req->n_attempts < cfg->retry.max_attempts; round++) {
        int tried, done;
        enum aigw_err e = dispatch_round(req, t, &st, order, n, &tried, &done);
        if (done || e != AIGW_OK) {
            result = e;
            goto out;
        }
        if (!tried) {
            /* Every breaker is open: say when one may close. */
            int64_t wait = st.earliest_retry_at ? st.earliest_retry_at - now_ms() : 1000;
            req->retry_after_s = (int)((wait > 0 ? wait : 0) + 999) / 1000;
            if (req->retry_after_s < 1)
                req->retry_after_s = 1;
            result = AIGW_ERR_BACKEND_UNAVAILABLE;
            goto out;
        }
        if (req->n_attempts >= cfg->retry.max_attempts)
            break;
        int64_t backoff =
            dispatch_backoff_ms(round, cfg->retry.base_delay_ms, cfg->retry.max_delay_ms,
                                rng_unit(&req->t->rng), st.retry_after_max);
        if (mono_s() + (double)backoff / 1000.0 >= st.deadline)
            break;
        sleep_ms(backoff);
    }
    result = !st.tried_any         ? AIGW_ERR_BACKEND_UNAVAILABLE
             : st.last_was_timeout ? AIGW_ERR_DEADLINE
                                   : AIGW_ERR_BACKEND_ERROR;
    if (!st.tried_any && !req->retry_after_s)
        req->retry_after_s = 1;
out:
    buf_free(&st.url);
    upstream_call_free(&st.call);
    if (result != AIGW_OK && req->err == AIGW_OK)
        explain_failure(req, result);
    return result;
}
