/*
 * request.c - lifetime of the per-request context (see request.h).
 */
#include "request.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void request_reset(struct request *req)
{
    struct worker *w = req->w;
    struct worker_thread *t = req->t;
    struct buf body = req->body, upstream = req->upstream, out = req->out, held = req->held;
    chat_input_clear(&req->in);
    buf_reset(&body);
    buf_reset(&upstream);
    buf_reset(&out);
    buf_reset(&held);
    memset(req, 0, sizeof *req);
    req->w = w;
    req->t = t;
    req->body = body;
    req->upstream = upstream;
    req->out = out;
    req->held = held;
    req->budget_period_start = -1;
}

void request_free(struct request *req)
{
    chat_input_clear(&req->in);
    buf_free(&req->body);
    buf_free(&req->upstream);
    buf_free(&req->out);
    buf_free(&req->held);
}

enum aigw_err request_fail(struct request *req, enum aigw_err err, const char *param,
                           const char *fmt, ...)
{
    req->err = err;
    snprintf(req->err_param, sizeof req->err_param, "%s", param ? param : "");
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(req->err_message, sizeof req->err_message, fmt, ap);
        va_end(ap);
    } else {
        snprintf(req->err_message, sizeof req->err_message, "%s", aigw_err_info(err)->message);
    }
    return err;
}

enum aigw_err request_store_unavailable(struct request *req)
{
    if (!req->retry_after_s)
        req->retry_after_s = 1;
    return request_fail(req, AIGW_ERR_STORE_UNAVAILABLE, "", "%s",
                        aigw_err_info(AIGW_ERR_STORE_UNAVAILABLE)->message);
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
