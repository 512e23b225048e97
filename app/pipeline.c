/*
 * pipeline.c - the request pipeline (see pipeline.h).
 *
 * Each stage returns an enum aigw_err; the first failure ends the request and
 * respond() turns it into the one OpenAI-shaped error. Whatever happened, an
 * admitted request is settled and a refused one past authentication leaves a
 * 'refused' audit row.
 */
#include "pipeline.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "admin_api.h"
#include "auth.h"
#include "breaker.h"
#include "chat.h"
#include "dashboard.h"
#include "db.h"
#include "dispatch.h"
#include "fcgi_io.h"
#include "limits.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "responses.h"
#include "store.h"
#include "telemetry.h"
#include "worker.h"

/* What an api-version may hold: it is copied into backend URLs. */
#define API_VERSION_CHARS "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-."

static enum aigw_err route_request(struct request *req)
{
    enum aigw_err e = router_match(req->method, req->path, &req->route, req->deployment);
    if (e == AIGW_ERR_METHOD_NOT_ALLOWED)
        return request_fail(req, e, "", "Method %s is not allowed on %s.", req->method, req->path);
    if (e != AIGW_OK)
        return request_fail(req, e, "", "No endpoint at %s.", req->path);
    if (router_is_stored_response(req->route)) {
        /* The path's segment is a response id, not a deployment. */
        memcpy(req->stored_id, req->deployment, sizeof req->stored_id);
        req->deployment[0] = '\0';
    }
    return AIGW_OK;
}

/* What a query parameter forwarded to a backend may hold. */
#define QUERY_CHARS API_VERSION_CHARS "_~%=[]+,"

/* A stored response's query (limit, order, after, include[]) goes to the
 * backend; api-version is the gateway's own business. */
static enum aigw_err read_forward_query(struct request *req)
{
    struct buf query = {0}, *q = &query;
    enum aigw_err e = AIGW_OK;
    for (const char *p = req->query; p && *p && e == AIGW_OK;) {
        size_t n = strcspn(p, "&");
        if (n && strncmp(p, "api-version=", 12) != 0) {
            if (strspn(p, QUERY_CHARS) < n) {
                e = request_fail(req, AIGW_ERR_INVALID_VALUE, "query",
                                 "The query string may hold only letters, digits and "
                                 "-._~%%=[]+, in its parameters.");
                break;
            }
            if (q->len)
                buf_putc(q, '&');
            buf_append(q, p, n);
        }
        p += n;
        if (*p == '&')
            p++;
    }
    if (e == AIGW_OK && q->len >= sizeof req->forward_query)
        e = request_fail(req, AIGW_ERR_INVALID_VALUE, "query", "The query string is too long.");
    if (e == AIGW_OK)
        memcpy(req->forward_query, buf_cstr(q), q->len + 1);
    buf_free(&query);
    return e;
}

/* Copies the api-version query parameter (Azure routes require it). */
static enum aigw_err read_api_version(struct request *req)
{
    const char *q = req->query;
    while (q && *q) {
        if (strncmp(q, "api-version=", 12) == 0) {
            const char *v = q + 12;
            size_t n = strcspn(v, "&");
            if (n == 0 || n >= sizeof req->api_version_buf || strspn(v, API_VERSION_CHARS) < n)
                return request_fail(
                    req, AIGW_ERR_INVALID_VALUE, "api-version",
                    "api-version must be a version such as 2024-10-21 (letters, digits, "
                    "'-' and '.').");
            memcpy(req->api_version_buf, v, n);
            req->api_version_buf[n] = '\0';
            req->api_version = req->api_version_buf;
            return AIGW_OK;
        }
        q = strchr(q, '&');
        if (q)
            q++;
    }
    if (router_info(req->route)->needs_api_version)
        return request_fail(
            req, AIGW_ERR_MISSING_FIELD, "api-version",
            "The api-version query parameter is required (e.g. ?api-version=2024-10-21).");
    return AIGW_OK;
}

static enum aigw_err validate_request(struct request *req)
{
    if (router_is_stored_response(req->route)) {
        /* No body: the id in the path, and the query. */
        enum aigw_err e = read_api_version(req);
        return e == AIGW_OK ? read_forward_query(req) : e;
    }
    const char *ct = req->content_type;
    if (!ct || strncasecmp(ct, "application/json", 16) != 0 ||
        (ct[16] != '\0' && ct[16] != ';' && ct[16] != ' '))
        return request_fail(req, AIGW_ERR_UNSUPPORTED_MEDIA_TYPE, "Content-Type",
                            "Content-Type must be application/json (got %s).", ct ? ct : "none");
    struct validation_error verr;
    enum aigw_err e =
        validate_body(req->w->cfg, router_info(req->route)->kind,
                      req->body.data ? req->body.data : "", req->body.len, &req->in, &verr);
    if (e != AIGW_OK)
        return request_fail(req, e, verr.param, "%s", verr.message);
    return read_api_version(req);
}

/* The client-visible model: the Azure path's deployment, else the body's. */
static enum aigw_err resolve_model(struct request *req)
{
    const struct cfg *cfg = req->w->cfg;
    const char *model;
    if (router_is_stored_response(req->route))
        return AIGW_OK; /* the model its origin named (responses_locate) */
    if (router_info(req->route)->deployment_in_path)
        model = req->deployment;
    else if (req->in.model)
        model = req->in.model;
    else if (req->route == ROUTE_SEED_CHAT && cfg->default_model)
        model = cfg->default_model;
    else
        return request_fail(req, AIGW_ERR_MISSING_FIELD, "model", "model is required.");
    snprintf(req->model, sizeof req->model, "%s", model); /* validate.c bounds it to 256 */
    if (!dispatch_model_served(cfg, req->model))
        return request_fail(req, AIGW_ERR_MODEL_NOT_FOUND, "model",
                            "The model '%s' does not exist or no backend serves it.", req->model);
    return AIGW_OK;
}

static enum aigw_err dispatch_request(struct request *req)
{
    if (req->route == ROUTE_SEED_CHAT)
        return chat_handle(req);
    if (router_info(req->route)->kind == API_RESPONSES)
        return responses_handle(req);
    if (router_is_stored_response(req->route))
        return responses_stored(req);
    return proxy_handle(req);
}

/* An empty write: the batch's commit says whether the database takes writes. */
static int nothing_in_batch(struct store *st, struct counters *c, void *arg)
{
    (void)st, (void)c, (void)arg;
    return 0;
}

static void serve_health(struct request *req)
{
    struct worker *w = req->w;
    if (req->route == ROUTE_HEALTHZ) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        fcgi_send_json(req, 200, ok, sizeof ok - 1);
        return;
    }
    /* readyz: the database takes writes and some backend can take traffic. */
    int db = db_write(w->db, nothing_in_batch, NULL) == 0;
    size_t open = 0;
    for (size_t i = 0; i < w->cfg->n_backends; i++) {
        struct breaker_row row;
        if (breaker_read(w, w->cfg->backends[i].name, &row) == 0 && row.state == BREAKER_OPEN &&
            row.open_until_ms > now_ms())
            open++;
    }
    int ready = db && open < w->cfg->n_backends;
    struct buf *out = &req->out;
    buf_reset(out);
    buf_printf(out,
               "{\"status\":\"%s\",\"database\":\"%s\",\"backends_open\":%zu,\"backends\":%zu,"
               "\"auth\":\"%s\"}\n",
               ready ? "ready" : "not_ready", db ? "writable" : "unavailable", open,
               w->cfg->n_backends,
               w->cfg->auth.enabled ? "enabled" : "disabled (auth.enabled is false)");
    if (!ready)
        req->retry_after_s = 5;
    fcgi_send_json(req, ready ? 200 : 503, out->data, out->len);
}

static void serve_metrics(struct request *req)
{
    buf_reset(&req->out);
    if (metrics_render(req->w, &req->out) < 0) {
        request_fail(req, AIGW_ERR_INTERNAL, "",
                     "The metrics could not be read from the database.");
        return;
    }
    fcgi_send_body(req, 200, "text/plain; version=0.0.4; charset=utf-8", req->out.data,
                   req->out.len);
}

void pipeline_handle(struct request *req)
{
    req->start_ns = now_ns();
    req->start_ms = req->start_ns / 1000000;
    req->start_mono = mono_s();
    enum aigw_err e = fcgi_read_request(req);
    if (e == AIGW_OK)
        e = route_request(req);
    if (e == AIGW_OK && !router_info(req->route)->model_call) {
        if (req->route == ROUTE_MODELS)
            proxy_list_models(req);
        else if (req->route == ROUTE_ADMIN_API)
            admin_api_handle(req);
        else if (req->route == ROUTE_DASHBOARD)
            dashboard_serve(req);
        else if (req->route == ROUTE_METRICS)
            serve_metrics(req);
        else
            serve_health(req);
        if (req->response == RESPONSE_NONE)
            fcgi_send_error(req);
        return;
    }
    /* A model call's answer waits for its settlement (fcgi_release). */
    req->hold_answer = 1;
    int past_auth = 0;
    if (e == AIGW_OK && (e = auth_authenticate(req)) == AIGW_OK) {
        past_auth = 1;
        if ((e = validate_request(req)) == AIGW_OK &&
            (e = auth_authorize_subject(req)) == AIGW_OK &&
            (e = responses_locate(req)) == AIGW_OK && (e = resolve_model(req)) == AIGW_OK &&
            (e = limits_admit(req)) == AIGW_OK)
            e = dispatch_request(req);
    }
    /* respond: an error not yet answered gets its one OpenAI-shaped body. */
    if (req->response == RESPONSE_NONE)
        fcgi_send_error(req);
    /* settle */
    if (req->audited == 1)
        limits_settle(req);
    else if (past_auth && !req->audited && e != AIGW_OK && e != AIGW_ERR_INTERNAL)
        limits_audit_refusal(req);
    fcgi_release(req);
}

void pipeline_after_response(struct request *req)
{
    telemetry_export(req->w, req);
}
