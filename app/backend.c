/*
 * backend.c - libcurl calls to model backends (see backend.h).
 *
 * The caller's credentials never come here: the only authentication header
 * sent is the backend's own key, in the form its type expects (api-key for
 * Azure, Authorization: Bearer for OpenAI and for Entra ID tokens).
 */
#include "backend.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "secrets.h"
#include "transfers.h"

struct backend_pool *backend_pool_new(const struct cfg *cfg)
{
    struct backend_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->conns = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof *pool->conns);
    if (!pool->conns) {
        free(pool);
        return NULL;
    }
    pool->n = cfg->n_backends;
    for (size_t i = 0; i < pool->n; i++) {
        pool->conns[i].cfg = &cfg->backends[i];
        pool->conns[i].index = i;
        pool->conns[i].curl = curl_easy_init();
        if (!pool->conns[i].curl) {
            backend_pool_free(pool);
            return NULL;
        }
    }
    return pool;
}

void backend_pool_free(struct backend_pool *pool)
{
    if (!pool)
        return;
    for (size_t i = 0; i < pool->n; i++) {
        if (pool->conns[i].curl)
            curl_easy_cleanup(pool->conns[i].curl);
        /* Wipe the key before the memory goes back to the allocator. */
        buf_wipe(&pool->conns[i].key);
    }
    free(pool->conns);
    free(pool);
}

int backend_load_key(struct backend_conn *c, struct secrets *secrets, int force, struct buf *err)
{
    c->key_loaded = 0;
    if (c->cfg->entra) {
        if (secrets_backend_token(secrets, c->index, force, &c->key, err) < 0)
            return -1;
        c->key_loaded = 1;
        return 0;
    }
    if (!c->cfg->api_key_ref) {
        buf_reset(&c->key);
        c->key_loaded = 1;
        return 0;
    }
    if (secrets_get(secrets, c->cfg->api_key_ref, force, &c->key, err) < 0)
        return -1;
    c->key_loaded = 1;
    return 0;
}

size_t backend_collect_small_answer(char *data, size_t size, size_t nmemb, void *arg)
{
    struct buf *out = arg;
    size_t n = size * nmemb;
    if (out->len + n > SMALL_ANSWER_MAX || buf_append(out, data, n) < 0)
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    return n;
}

int64_t backend_parse_retry_after(const char *v, int64_t now)
{
    while (*v == ' ')
        v++;
    if (isdigit((unsigned char)*v)) {
        char *end;
        double s = strtod(v, &end);
        if (end == v || s < 0 || s > 86400)
            return -1;
        return (int64_t)(s * 1000);
    }
    struct tm tm = {0};
    const char *end = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end)
        return -1;
    int64_t at = (int64_t)timegm(&tm) * 1000;
    return at > now ? at - now : 0;
}

static void copy_header_value(const char *v, size_t n, char *out, size_t cap)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, v, n);
    out[n] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct upstream_call *call = arg;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response (after 100 Continue or a redirect): start over. */
        call->retry_after_ms = -1;
        call->content_type[0] = call->processing_ms[0] = '\0';
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon)
        return n;
    size_t name_len = (size_t)(colon - data);
    const char *val = colon + 1;
    size_t val_len = n - name_len - 1;
    char tmp[96];
    if (name_len == 11 && strncasecmp(data, "retry-after", 11) == 0) {
        copy_header_value(val, val_len, tmp, sizeof tmp);
        int64_t ms = backend_parse_retry_after(tmp, (int64_t)time(NULL) * 1000);
        if (ms >= 0 && call->retry_after_ms < 0)
            call->retry_after_ms = ms;
    } else if (name_len == 14 && strncasecmp(data, "retry-after-ms", 14) == 0) {
        copy_header_value(val, val_len, tmp, sizeof tmp);
        char *end;
        double ms = strtod(tmp, &end);
        if (end != tmp && ms >= 0 && ms < 86400e3)
            call->retry_after_ms = (int64_t)ms; /* more precise: wins over Retry-After */
    } else if (name_len == 12 && strncasecmp(data, "content-type", 12) == 0) {
        copy_header_value(val, val_len, call->content_type, sizeof call->content_type);
    } else if (name_len == 20 && strncasecmp(data, "openai-processing-ms", 20) == 0) {
        copy_header_value(val, val_len, call->processing_ms, sizeof call->processing_ms);
    }
    return n;
}

/* Hands each complete SSE event's data to on_event. */
static int sse_feed(struct upstream_call *call, const char *data, size_t n)
{
    struct buf *b = &call->sse_line;
    if (buf_append(b, data, n) < 0)
        return -1;
    for (;;) {
        /* An event ends at a blank line: "\n\n" or "\r\n\r\n". */
        char *start = b->data;
        char *end = NULL;
        size_t sep = 0;
        for (size_t i = call->sse_pos; i + 1 < b->len; i++) {
            /* Only a line feed can start a separator: jump to the next one. */
            const char *nl = memchr(start + i, '\n', b->len - 1 - i);
            if (!nl)
                break;
            i = (size_t)(nl - start);
            if (start[i + 1] == '\n') {
                end = start + i;
                sep = 2;
                break;
            }
            if (start[i + 1] == '\r' && i + 2 < b->len && start[i + 2] == '\n') {
                end = start + i;
                sep = 3;
                break;
            }
        }
        if (!end) {
            /* Resume two bytes back: a "\n\r\n" separator may end this read
             * with "\n\r" and finish in the next one. */
            call->sse_pos = b->len > 2 ? b->len - 2 : 0;
            if (b->len > 4 * 1024 * 1024)
                return -1; /* one event larger than 4 MiB is not a model answer */
            return 0;
        }
        /* Collect the data: lines of this event (the buffer is kept for the next). */
        struct buf *evp = &call->sse_event, ev = *evp;
        buf_reset(&ev);
        char *line = start;
        while (line < end + 1) {
            char *nl = memchr(line, '\n', (size_t)(end + 1 - line));
            size_t len = nl ? (size_t)(nl - line) : (size_t)(end + 1 - line);
            if (len > 0 && line[len - 1] == '\r')
                len--;
            if (len >= 5 && strncmp(line, "data:", 5) == 0) {
                const char *v = line + 5;
                size_t vl = len - 5;
                if (vl > 0 && *v == ' ') {
                    v++;
                    vl--;
                }
                if (ev.len)
                    buf_putc(&ev, '\n');
                buf_append(&ev, v, vl);
            }
            if (!nl)
                break;
            line = nl + 1;
        }
        int rc = 0;
        if (ev.len) {
            call->events++;
            rc = call->on_event(call->arg, buf_cstr(&ev), ev.len);
        }
        *evp = ev;
        buf_consume(b, (size_t)(end - start) + sep);
        call->sse_pos = 0;
        if (rc < 0) {
            call->aborted = 1;
            return -1;
        }
    }
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct upstream_call *call = arg;
    size_t n = size * nmemb;
    if (call->is_sse)
        return sse_feed(call, data, n) < 0 ? 0 : n;
    if (call->body_out) {
        if (call->body_out->len + n > call->max_body)
            return 0;
        if (buf_append(call->body_out, data, n) < 0)
            return 0;
    }
    return n;
}

struct body_ctx {
    struct upstream_call *call;
    CURL *curl;
    int decided;
};

static size_t on_body_first(char *data, size_t size, size_t nmemb, void *arg)
{
    struct body_ctx *ctx = arg;
    if (ctx->call->is_sse && transfers_relay_blocked(ctx->curl))
        return CURL_WRITEFUNC_PAUSE; /* the client reads slowly: wait for room */
    if (!ctx->decided) {
        /* The status and headers are complete once the body starts. */
        long code = 0;
        curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &code);
        ctx->call->status = code;
        ctx->call->is_sse = ctx->call->on_event && code == 200 &&
                            strncasecmp(ctx->call->content_type, "text/event-stream", 17) == 0;
        ctx->decided = 1;
    }
    return on_body(data, size, nmemb, ctx->call);
}

void upstream_call_free(struct upstream_call *call)
{
    buf_free(&call->sse_line);
    buf_free(&call->sse_event);
}

int backend_perform(struct backend_conn *c, struct upstream_call *call)
{
    CURL *curl = c->curl;
    struct curl_slist *hdrs = NULL;
    char line[512];
    call->status = 0;
    call->retry_after_ms = -1;
    call->content_type[0] = call->processing_ms[0] = call->error[0] = '\0';
    call->is_sse = call->events = call->aborted = call->timed_out = call->transport_error = 0;
    call->sse_pos = 0;
    buf_reset(&call->sse_line);

    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: application/json, text/event-stream");
    hdrs = curl_slist_append(hdrs, "Expect:");
    if (c->key.len) {
        struct buf h = {0};
        if (c->cfg->type == BACKEND_AZURE && !c->cfg->entra)
            buf_puts(&h, "api-key: ");
        else
            buf_puts(&h, "Authorization: Bearer ");
        buf_append(&h, c->key.data, c->key.len);
        hdrs = curl_slist_append(hdrs, buf_cstr(&h));
        buf_wipe(&h);
    }
    if (call->traceparent) {
        snprintf(line, sizeof line, "traceparent: %s", call->traceparent);
        hdrs = curl_slist_append(hdrs, line);
    }

    struct body_ctx ctx = {call, curl, 0};
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, call->url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)(call->timeout_s * 1000));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(c->cfg->connect_timeout_s * 1000 < call->timeout_s * 1000
                                ? c->cfg->connect_timeout_s * 1000
                                : call->timeout_s * 1000));
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, call);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body_first);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &ctx);
    if (call->method)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, call->method);
    if (call->body) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);

    CURLcode rc = call->on_event && call->loop ? transfers_perform(call->loop, curl, call->relay_fd)
                                               : curl_easy_perform(curl);
    curl_slist_free_all(hdrs);
    double total = 0;
    curl_easy_getinfo(curl, CURLINFO_TOTAL_TIME, &total);
    call->latency_ms = total * 1000.0;
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    call->status = code;
    if (rc == CURLE_OK)
        return 0;
    if (call->aborted) {
        snprintf(call->error, sizeof call->error, "relay stopped");
        return -1;
    }
    call->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
    call->transport_error = 1;
    if (rc == CURLE_WRITE_ERROR && call->body_out && call->body_out->len + 1 > call->max_body)
        snprintf(call->error, sizeof call->error, "answer larger than %zu bytes", call->max_body);
    else
        snprintf(call->error, sizeof call->error, "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
    return -1;
}
