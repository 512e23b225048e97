/*
 * telemetry.c - OTLP/HTTP JSON spans and JSON log lines (see telemetry.h).
 *
 * Nothing here ever includes a credential, a prompt or an answer: spans carry
 * model names, token counts, statuses and timings only.
 *
 * Exports run on one background thread per worker: the request thread only
 * builds the JSON and queues it, so a collector that is down, slow or hung
 * never delays an answer. The queue is bounded; when it is full (or while
 * exports are paused after a failure) spans are dropped, never requests.
 */
#include "telemetry.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "worker.h"

#define EXPORT_TIMEOUT_MS 2000  /* a collector slower than this is treated as down */
#define EXPORT_BACKOFF_MS 30000 /* after a failed export, skip exports this long */
#define QUEUE_MAX         256   /* documents waiting for export; more are dropped */

struct telemetry {
    CURL *curl; /* used only by the export thread */
    struct buf url;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct buf queue[QUEUE_MAX];
    size_t head, count;
    int stopping;
    unsigned long dropped;
    int64_t paused_until_ms; /* written by the export thread, read under lock */
};

static void *export_thread(void *arg);

struct telemetry *telemetry_new(const struct cfg *cfg)
{
    struct telemetry *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (cfg->telemetry.otlp_endpoint) {
        t->curl = curl_easy_init();
        if (!t->curl) {
            free(t);
            return NULL;
        }
        const char *e = cfg->telemetry.otlp_endpoint;
        size_t n = strlen(e);
        /* An endpoint given without the signal path gets the standard one. */
        if (n >= 10 && strcmp(e + n - 10, "/v1/traces") == 0)
            buf_puts(&t->url, e);
        else
            buf_printf(&t->url, "%s%sv1/traces", e, n && e[n - 1] == '/' ? "" : "/");
        pthread_mutex_init(&t->lock, NULL);
        pthread_cond_init(&t->wake, NULL);
        if (pthread_create(&t->thread, NULL, export_thread, t) != 0) {
            curl_easy_cleanup(t->curl);
            buf_free(&t->url);
            free(t);
            return NULL;
        }
        t->thread_started = 1;
    }
    return t;
}

void telemetry_free(struct telemetry *t)
{
    if (!t)
        return;
    if (t->thread_started) {
        pthread_mutex_lock(&t->lock);
        t->stopping = 1;
        pthread_cond_signal(&t->wake);
        pthread_mutex_unlock(&t->lock);
        pthread_join(t->thread, NULL);
        pthread_mutex_destroy(&t->lock);
        pthread_cond_destroy(&t->wake);
    }
    if (t->curl)
        curl_easy_cleanup(t->curl);
    for (size_t i = 0; i < QUEUE_MAX; i++)
        buf_free(&t->queue[i]);
    buf_free(&t->url);
    free(t);
}

static void attr_str(struct buf *b, int *first, const char *key, const char *value)
{
    if (!value)
        return;
    buf_printf(b, "%s{\"key\":\"%s\",\"value\":{\"stringValue\":", *first ? "" : ",", key);
    buf_put_json_string(b, value, strlen(value));
    buf_puts(b, "}}");
    *first = 0;
}

static void attr_int(struct buf *b, int *first, const char *key, long long value)
{
    buf_printf(b, "%s{\"key\":\"%s\",\"value\":{\"intValue\":\"%lld\"}}", *first ? "" : ",", key,
               value);
    *first = 0;
}

/* The host of a URL, for server.address. */
static void url_host(const char *url, char *out, size_t n)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    size_t k = strcspn(p, ":/?");
    if (k >= n)
        k = n - 1;
    memcpy(out, p, k);
    out[k] = '\0';
}

static const struct cfg_backend *backend_named(const struct cfg *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->n_backends; i++)
        if (strcmp(cfg->backends[i].name, name) == 0)
            return &cfg->backends[i];
    return NULL;
}

void telemetry_otlp_json(const struct cfg *cfg, struct request *req, struct buf *b)
{
    const char *op = router_info(req->route)->kind == API_EMBEDDINGS ? "embeddings" : "chat";
    const struct cfg_backend *answered = backend_named(cfg, req->backend_name);
    buf_puts(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    int first = 1;
    attr_str(b, &first, "service.name", cfg->telemetry.service_name);
    attr_str(b, &first, "service.version", PACKAGE_VERSION);
    buf_puts(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"aigw\",\"version\":\"" PACKAGE_VERSION
                "\"},\"spans\":[");

    /* The request's span (SERVER). */
    buf_printf(b, "{\"traceId\":\"%s\",\"spanId\":\"%s\",", req->trace_id, req->span_id);
    if (req->parent_span_id[0])
        buf_printf(b, "\"parentSpanId\":\"%s\",", req->parent_span_id);
    buf_printf(
        b,
        "\"name\":\"%s %s\",\"kind\":2,\"startTimeUnixNano\":\"%lld\",\"endTimeUnixNano\":\"%lld\","
        "\"attributes\":[",
        op, req->model, (long long)req->start_ns, (long long)req->end_ns);
    first = 1;
    attr_str(b, &first, "gen_ai.system",
             answered && answered->type == BACKEND_OPENAI ? "openai" : "az.ai.openai");
    attr_str(b, &first, "gen_ai.operation.name", op);
    attr_str(b, &first, "gen_ai.request.model", req->model[0] ? req->model : NULL);
    attr_str(b, &first, "gen_ai.response.model", req->backend_deployment);
    if (req->in.max_tokens > 0)
        attr_int(b, &first, "gen_ai.request.max_tokens", req->in.max_tokens);
    attr_int(b, &first, "gen_ai.usage.input_tokens", req->prompt_tokens);
    attr_int(b, &first, "gen_ai.usage.output_tokens", req->completion_tokens);
    if (answered) {
        char host[256];
        url_host(answered->url, host, sizeof host);
        attr_str(b, &first, "server.address", host);
    }
    attr_str(b, &first, "http.route", router_operation(req->route));
    attr_int(b, &first, "http.response.status_code", req->http_status);
    attr_str(b, &first, "aigw.request_id", req->request_id);
    attr_str(b, &first, "aigw.backend", req->backend_name);
    attr_int(b, &first, "aigw.attempts", req->n_attempts);
    if (req->err != AIGW_OK)
        attr_str(b, &first, "error.type", aigw_err_info(req->err)->code);
    buf_puts(b, "],\"status\":");
    if (req->err != AIGW_OK) {
        buf_puts(b, "{\"code\":2,\"message\":");
        buf_put_json_string(b, req->err_message, strlen(req->err_message));
        buf_puts(b, "}}");
    } else {
        buf_puts(b, "{\"code\":1}}");
    }

    /* One CLIENT span per backend attempt. */
    for (int i = 0; i < req->n_attempts && i < MAX_ATTEMPTS_RECORDED; i++) {
        const struct attempt *a = &req->attempts[i];
        const struct cfg_backend *bk = backend_named(cfg, a->backend);
        int failed = a->error[0] && !(a->http_status >= 400 && a->http_status < 429);
        buf_printf(
            b,
            ",{\"traceId\":\"%s\",\"spanId\":\"%s\",\"parentSpanId\":\"%s\",\"name\":\"%s %s\","
            "\"kind\":3,\"startTimeUnixNano\":\"%lld\",\"endTimeUnixNano\":\"%lld\",\"attributes\":"
            "[",
            req->trace_id, a->span_id, req->span_id, op,
            bk ? cfg_backend_deployment(bk, req->model) : "", (long long)a->start_ns,
            (long long)(a->start_ns + (int64_t)(a->latency_ms * 1e6)));
        first = 1;
        attr_str(b, &first, "aigw.backend", a->backend);
        if (bk) {
            char host[256];
            url_host(bk->url, host, sizeof host);
            attr_str(b, &first, "server.address", host);
        }
        attr_int(b, &first, "http.response.status_code", a->http_status);
        attr_int(b, &first, "aigw.attempt", i + 1);
        if (failed)
            attr_str(b, &first, "error.type", a->http_status ? "http_error" : "transport_error");
        buf_puts(b, "],\"status\":");
        if (failed) {
            buf_puts(b, "{\"code\":2,\"message\":");
            buf_put_json_string(b, a->error, strlen(a->error));
            buf_puts(b, "}}");
        } else {
            buf_puts(b, "{\"code\":1}}");
        }
    }
    buf_puts(b, "]}]}]}");
}

static size_t discard(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    (void)arg;
    return size * nmemb;
}

/* POSTs one document; 0 when the collector took it. */
static int post_document(struct telemetry *t, const struct buf *doc)
{
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *c = t->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, buf_cstr(&t->url));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, doc->data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)doc->len);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)EXPORT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    if (rc == CURLE_OK && status >= 200 && status < 300)
        return 0;
    log_warn("trace export to %s failed (%s); pausing exports for %d s", buf_cstr(&t->url),
             rc != CURLE_OK ? curl_easy_strerror(rc) : "HTTP error", EXPORT_BACKOFF_MS / 1000);
    return -1;
}

static void *export_thread(void *arg)
{
    struct telemetry *t = arg;
    struct buf doc = {0};
    pthread_mutex_lock(&t->lock);
    for (;;) {
        while (!t->count && !t->stopping)
            pthread_cond_wait(&t->wake, &t->lock);
        if (!t->count && t->stopping)
            break;
        /* Take the oldest document, leaving its slot's memory for reuse. */
        struct buf *slot = &t->queue[t->head];
        struct buf tmp = doc;
        doc = *slot;
        *slot = tmp;
        buf_reset(slot);
        t->head = (t->head + 1) % QUEUE_MAX;
        t->count--;
        pthread_mutex_unlock(&t->lock);
        int failed = post_document(t, &doc) < 0;
        pthread_mutex_lock(&t->lock);
        if (failed) {
            t->paused_until_ms = now_ms() + EXPORT_BACKOFF_MS;
            t->dropped += t->count;
            t->count = 0; /* what is queued would fail too */
        }
    }
    pthread_mutex_unlock(&t->lock);
    buf_free(&doc);
    return NULL;
}

static void export_spans(struct worker *w, struct request *req)
{
    struct telemetry *t = w->telemetry;
    if (!t || !t->thread_started)
        return;
    pthread_mutex_lock(&t->lock);
    if (now_ms() < t->paused_until_ms || t->count == QUEUE_MAX) {
        t->dropped++;
        pthread_mutex_unlock(&t->lock);
        return;
    }
    struct buf *slot = &t->queue[(t->head + t->count) % QUEUE_MAX];
    buf_reset(slot);
    telemetry_otlp_json(w->cfg, req, slot);
    t->count++;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
}

static void log_line(struct request *req)
{
    struct buf b = {0};
    char ts[32];
    time_t secs = (time_t)(req->start_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    buf_printf(&b,
               "{\"ts\":\"%s.%03dZ\",\"level\":\"%s\",\"event\":\"request\",\"request_id\":\"%s\","
               "\"trace_id\":\"%s\",\"user\":",
               ts, (int)(req->start_ms % 1000), req->http_status >= 500 ? "error" : "info",
               req->request_id, req->trace_id);
    const char *user = req->caller.user_id[0] ? req->caller.user_id : req->subject;
    if (user)
        buf_put_json_string(&b, user, strlen(user));
    else
        buf_puts(&b, "null");
    buf_printf(&b, ",\"route\":\"%s\",\"method\":", router_operation(req->route));
    buf_put_json_string(&b, req->method, strlen(req->method));
    buf_printf(&b, ",\"status\":%d,\"latency_ms\":%.1f,\"backend\":", req->http_status,
               (double)(req->end_ns - req->start_ns) / 1e6);
    if (req->backend_name)
        buf_put_json_string(&b, req->backend_name, strlen(req->backend_name));
    else
        buf_puts(&b, "null");
    buf_printf(&b, ",\"attempts\":%d,\"tokens\":%lld,\"error\":", req->n_attempts,
               (long long)req->total_tokens);
    if (req->err != AIGW_OK)
        buf_printf(&b, "\"%s\"", aigw_err_info(req->err)->code);
    else
        buf_puts(&b, "null");
    buf_puts(&b, "}\n");
    /* One write, so lines from many workers never interleave. */
    fwrite(b.data, 1, b.len, stderr);
    fflush(stderr);
    buf_free(&b);
}

void telemetry_export(struct worker *w, struct request *req)
{
    if (req->route == ROUTE_HEALTHZ || req->route == ROUTE_READYZ || req->route == ROUTE_METRICS)
        return; /* probes every few seconds would drown the log */
    log_line(req);
    if (router_info(req->route)->model_call)
        export_spans(w, req);
}
