/*
 * fcgi_io.c - FastCGI request reading and response writing (see fcgi_io.h).
 */
#include "fcgi_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "limits.h"
#include "log.h"
#include "worker.h"

void random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[16];
    if (n > sizeof raw)
        n = sizeof raw;
    if (getrandom(raw, n, 0) != (ssize_t)n) {
        /* getrandom on Linux does not fail for 16 bytes once booted; fall back anyway. */
        for (size_t i = 0; i < n; i++)
            raw[i] = (unsigned char)rand();
    }
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * n] = '\0';
}

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>. */
static void read_traceparent(struct request *req, const char *tp)
{
    if (tp && strlen(tp) >= 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-' && is_hex(tp, 2) &&
        is_hex(tp + 3, 32) && is_hex(tp + 36, 16) &&
        strncmp(tp + 3, "00000000000000000000000000000000", 32) != 0) {
        memcpy(req->trace_id, tp + 3, 32);
        req->trace_id[32] = '\0';
        memcpy(req->parent_span_id, tp + 36, 16);
        req->parent_span_id[16] = '\0';
    } else {
        random_hex(req->trace_id, 16);
    }
    random_hex(req->span_id, 8);
}

/* A UUIDv7: 48 bits of Unix milliseconds, then random bits. Time-ordered ids
 * append to the end of the audit table's unique index instead of landing at
 * random pages, so inserts cost the same with 10 million rows as with none. */
static void make_request_id(struct request *req)
{
    char h[33];
    random_hex(h, 16);
    snprintf(h, 13, "%012llx", (unsigned long long)(req->start_ms & 0xFFFFFFFFFFFFull));
    h[12] = '7';
    h[16] = "89ab"[h[16] % 4];
    snprintf(req->request_id, sizeof req->request_id, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12,
             h + 16, h + 20);
}

/* The credential header a client sent twice, when the web server passed both
 * copies as parameters of one name (nginx does; lighttpd and Apache join them
 * with ", ", which auth.c sees in the value): "Authorization", "api-key" or
 * NULL. A second copy must not be ignored: which one a layer reads differs. */
static const char *repeated_credential(FCGX_ParamArray env)
{
    int authz = 0, key = 0;
    for (char **p = env; p && *p; p++) {
        authz += strncmp(*p, "HTTP_AUTHORIZATION=", 19) == 0;
        key += strncmp(*p, "HTTP_API_KEY=", 13) == 0;
    }
    return authz > 1 ? "Authorization" : key > 1 ? "api-key" : NULL;
}

enum aigw_err fcgi_read_request(struct request *req)
{
    FCGX_ParamArray env = req->fcgi->envp;
    make_request_id(req);
    read_traceparent(req, FCGX_GetParam("HTTP_TRACEPARENT", env));
    const char *method = FCGX_GetParam("REQUEST_METHOD", env);
    snprintf(req->method, sizeof req->method, "%s", method && *method ? method : "GET");
    req->client_ip = FCGX_GetParam("REMOTE_ADDR", env);
    req->content_type = FCGX_GetParam("CONTENT_TYPE", env);
    req->authorization = FCGX_GetParam("HTTP_AUTHORIZATION", env);
    req->api_key = FCGX_GetParam("HTTP_API_KEY", env);
    req->repeated_credential = repeated_credential(env);

    /* The path: REQUEST_URI without the query (what the client sent). */
    const char *uri = FCGX_GetParam("REQUEST_URI", env);
    if (!uri)
        uri = FCGX_GetParam("SCRIPT_NAME", env);
    if (!uri)
        uri = "/";
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    if (plen >= sizeof req->path)
        return request_fail(req, AIGW_ERR_NOT_FOUND, "", "The path is too long.");
    memcpy(req->path, uri, plen);
    req->path[plen] = '\0';
    req->query = FCGX_GetParam("QUERY_STRING", env);
    if (!req->query)
        req->query = q ? q + 1 : "";

    size_t max = req->w->cfg->validation.max_body_bytes;
    const char *cl = FCGX_GetParam("CONTENT_LENGTH", env);
    if (cl && *cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || cl[0] == '-')
            return request_fail(req, AIGW_ERR_INVALID_VALUE, "Content-Length",
                                "The Content-Length header is not a number.");
        if (n > max)
            return request_fail(req, AIGW_ERR_BODY_TOO_LARGE, "",
                                "The request body has %llu bytes; at most %zu are allowed.", n,
                                max);
    }
    /* Read to the end of the stream, never past the limit. */
    char chunk[16384];
    for (;;) {
        int r = FCGX_GetStr(chunk, sizeof chunk, req->fcgi->in);
        if (r <= 0)
            break;
        if (req->body.len + (size_t)r > max)
            return request_fail(req, AIGW_ERR_BODY_TOO_LARGE, "",
                                "The request body is larger than %zu bytes.", max);
        if (buf_append(&req->body, chunk, (size_t)r) < 0)
            return request_fail(req, AIGW_ERR_INTERNAL, "", "Out of memory.");
    }
    return AIGW_OK;
}

int fcgi_write(struct request *req, const char *data, size_t n)
{
    if (req->client_gone)
        return -1;
    while (n > 0) {
        int chunk = n > 1 << 30 ? 1 << 30 : (int)n;
        if (FCGX_PutStr(data, chunk, req->fcgi->out) != chunk) {
            req->client_gone = 1;
            return -1;
        }
        data += chunk;
        n -= (size_t)chunk;
    }
    return 0;
}

int fcgi_flush(struct request *req)
{
    if (req->client_gone)
        return -1;
    if (FCGX_FFlush(req->fcgi->out) < 0) {
        req->client_gone = 1;
        return -1;
    }
    return 0;
}

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

int fcgi_send_headers(struct request *req, int status, const char *content_type)
{
    if (req->response != RESPONSE_NONE) {
        /* A second answer to one request: a bug, never bytes on the wire. */
        log_error("request %s: headers already sent; status %d dropped", req->request_id, status);
        return -1;
    }
    req->response = RESPONSE_HEADERS;
    struct buf h = {0};
    char dur[32];
    req->http_status = status;
    buf_printf(&h, "Status: %d %s\r\nContent-Type: %s\r\nX-Request-Id: %s\r\n", status,
               status_text(status), content_type, req->request_id);
    if (req->rl.have_requests) {
        limits_format_duration(req->rl.reset_requests_ms, dur, sizeof dur);
        buf_printf(&h,
                   "x-ratelimit-limit-requests: %ld\r\nx-ratelimit-remaining-requests: %ld\r\n"
                   "x-ratelimit-reset-requests: %s\r\n",
                   req->rl.limit_requests, req->rl.remaining_requests, dur);
    }
    if (req->rl.have_tokens) {
        limits_format_duration(req->rl.reset_tokens_ms, dur, sizeof dur);
        buf_printf(&h,
                   "x-ratelimit-limit-tokens: %ld\r\nx-ratelimit-remaining-tokens: %ld\r\n"
                   "x-ratelimit-reset-tokens: %s\r\n",
                   req->rl.limit_tokens, req->rl.remaining_tokens, dur);
    }
    if (req->retry_after_s > 0 && (status == 429 || status == 503))
        buf_printf(&h, "Retry-After: %d\r\n", req->retry_after_s);
    if (status == 401) {
        buf_puts(&h, "WWW-Authenticate: Bearer realm=\"aigw\", error=\"invalid_token\", "
                     "error_description=\"");
        /* The description is a quoted-string: no quotes or backslashes inside. */
        for (const char *p = req->err_message; *p; p++)
            buf_putc(&h, (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '\'' : *p);
        buf_puts(&h, "\"\r\n");
    }
    if (req->upstream_processing_ms[0])
        buf_printf(&h, "openai-processing-ms: %s\r\n", req->upstream_processing_ms);
    if (strncmp(content_type, "text/event-stream", 17) == 0)
        buf_puts(&h, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    if (req->extra_headers)
        buf_puts(&h, req->extra_headers);
    buf_puts(&h, "\r\n");
    int rc = fcgi_write(req, h.data, h.len);
    buf_free(&h);
    return rc;
}

void fcgi_send_body(struct request *req, int status, const char *content_type, const char *body,
                    size_t n)
{
    if (req->hold_answer && req->response == RESPONSE_NONE) {
        /* Made, not sent: fcgi_release writes it once the request is settled. */
        req->http_status = status;
        req->held_type = content_type;
        buf_reset(&req->held);
        buf_append(&req->held, body, n);
        req->response = RESPONSE_READY;
        return;
    }
    if (fcgi_send_headers(req, status, content_type) < 0)
        return;
    if (strcmp(req->method, "HEAD") != 0)
        fcgi_write(req, body, n);
    req->response = RESPONSE_DONE;
}

void fcgi_send_json(struct request *req, int status, const char *json, size_t n)
{
    if (json != req->out.data) {
        buf_reset(&req->out);
        buf_append(&req->out, json, n);
    }
    fcgi_send_body(req, status, "application/json", req->out.data, req->out.len);
}

int fcgi_stream_hold(struct request *req, const char *data, size_t n)
{
    if (!req->hold_answer)
        return fcgi_stream_write(req, data, n);
    buf_reset(&req->held);
    return buf_append(&req->held, data, n);
}

void fcgi_release(struct request *req)
{
    if (req->response == RESPONSE_READY) {
        req->hold_answer = 0;
        req->response = RESPONSE_NONE;
        fcgi_send_body(req, req->http_status, req->held_type, req->held.data ? req->held.data : "",
                       req->held.len);
    } else if (req->response == RESPONSE_STREAMING && req->held.len) {
        fcgi_stream_write(req, req->held.data, req->held.len);
    }
    buf_reset(&req->held);
}

int fcgi_stream_write(struct request *req, const char *data, size_t n)
{
    if (req->response == RESPONSE_NONE) {
        if (fcgi_send_headers(req, 200, "text/event-stream") < 0)
            return -1;
    } else if (req->response != RESPONSE_HEADERS && req->response != RESPONSE_STREAMING) {
        log_error("request %s: stream event after the answer was complete", req->request_id);
        return -1;
    }
    req->response = RESPONSE_STREAMING;
    if (fcgi_write(req, data, n) < 0 || fcgi_flush(req) < 0)
        return -1;
    return 0;
}

void fcgi_error_json(struct request *req, struct buf *out)
{
    const struct aigw_err_info *info = aigw_err_info(req->err);
    const char *msg = req->err_message[0] ? req->err_message : info->message;
    buf_puts(out, "{\"error\":{\"message\":");
    buf_put_json_string(out, msg, strlen(msg));
    buf_printf(out, ",\"type\":\"%s\",\"code\":\"%s\",\"param\":", info->type, info->code);
    if (req->err_param[0])
        buf_put_json_string(out, req->err_param, strlen(req->err_param));
    else
        buf_puts(out, "null");
    buf_puts(out, "}}");
}

void fcgi_send_error(struct request *req)
{
    buf_reset(&req->out);
    fcgi_error_json(req, &req->out);
    buf_putc(&req->out, '\n');
    fcgi_send_json(req, aigw_err_info(req->err)->http_status, req->out.data, req->out.len);
}
