/*
 * responses.c - the Responses API (see responses.h).
 *
 * A Responses stream is a sequence of typed events ("event: TYPE" and a JSON
 * "data:" with the same "type"), ending with response.completed (or
 * .incomplete, .failed) and no [DONE]. Each event is relayed as it arrives,
 * renumbered (sequence_number), with the output text redacted: the deltas of
 * one text part go through the stream redactor, which may hold back the
 * start of a secret until the next delta; what it still holds when the part
 * is done goes out as one more delta before the .done event, and every
 * whole text in the other events ("text" fields) is redacted as a whole.
 * The final event is held until the request is settled, like chat's [DONE].
 */
#include "responses.h"

#include <stdio.h>
#include <string.h>

#include "chat.h"
#include "db.h"
#include "dispatch.h"
#include "fcgi_io.h"
#include "json_strict.h"
#include "log.h"
#include "proxy.h"
#include "sanitize.h"
#include "store.h"
#include "worker.h"

#define MAX_TEXT_PARTS 64 /* text parts redacted apart in one stream; more share the last */

struct text_part {
    int output_index, content_index;
};

struct rstream {
    struct request *req;
    struct text_part parts[MAX_TEXT_PARTS];
    struct buf pending[MAX_TEXT_PARTS]; /* what the redactor holds back, per part */
    int n_parts;
    struct buf event, clean;
    long sequence;      /* the next sequence_number relayed */
    int done;           /* a final event (or the backend's error event) was relayed */
    long relayed_chars; /* for a usage estimate if the stream breaks */
};

static int int_field(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int)
               ? json_object_get_int(v)
               : 0;
}

static const char *string_field(json_object *o, const char *key)
{
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* The redaction state of the text part an event is about. */
static struct buf *part_pending(struct rstream *s, json_object *ev)
{
    int oi = int_field(ev, "output_index"), ci = int_field(ev, "content_index");
    for (int i = 0; i < s->n_parts; i++)
        if (s->parts[i].output_index == oi && s->parts[i].content_index == ci)
            return &s->pending[i];
    if (s->n_parts == MAX_TEXT_PARTS)
        return &s->pending[MAX_TEXT_PARTS - 1];
    s->parts[s->n_parts] = (struct text_part){oi, ci};
    return &s->pending[s->n_parts++];
}

/* Redacts every string under a "text" key in o, at any depth. */
static void redact_texts(const struct redactor *rd, json_object *o, struct buf *scratch)
{
    if (json_object_is_type(o, json_type_array)) {
        size_t n = json_object_array_length(o);
        for (size_t i = 0; i < n; i++)
            redact_texts(rd, json_object_array_get_idx(o, i), scratch);
        return;
    }
    if (!json_object_is_type(o, json_type_object))
        return;
    json_object_object_foreach(o, key, val)
    {
        if (strcmp(key, "text") == 0 && json_object_is_type(val, json_type_string)) {
            buf_reset(scratch);
            int n = redact_text(rd, json_object_get_string(val),
                                (size_t)json_object_get_string_len(val), scratch);
            if (n > 0)
                json_object_object_add(
                    o, key, json_object_new_string_len(buf_cstr(scratch), (int)scratch->len));
        } else {
            redact_texts(rd, val, scratch);
        }
    }
}

/* Frames ev as "event: TYPE" + "data: JSON" with the next sequence number. */
static void frame(struct rstream *s, json_object *ev, const char *type)
{
    struct request *req = s->req;
    json_object_object_add(ev, "sequence_number", json_object_new_int64(s->sequence++));
    size_t n;
    const char *data = json_object_to_json_string_length(ev, JSON_C_TO_STRING_PLAIN, &n);
    buf_reset(&s->event);
    buf_printf(&s->event, "event: %s\ndata: ", type);
    buf_append(&s->event, data, n);
    buf_puts(&s->event, "\n\n");
    if (req->w->cfg->audit.log_bodies != LOG_BODIES_NONE && req->out.len < (1u << 20))
        buf_append(&req->out, s->event.data, s->event.len);
}

static int relay(struct rstream *s, json_object *ev, const char *type)
{
    frame(s, ev, type);
    return fcgi_stream_write(s->req, s->event.data, s->event.len);
}

/* Sends what the redactor still holds of a finished part as one more delta. */
static int flush_part(struct rstream *s, json_object *done_ev)
{
    struct buf *pending = part_pending(s, done_ev);
    buf_reset(&s->clean);
    redact_stream(s->req->w->redactor, pending, "", 0, 1, &s->clean);
    if (s->clean.len == 0)
        return 0;
    s->relayed_chars += (long)s->clean.len;
    json_object *d = json_object_new_object(), *v;
    json_object_object_add(d, "type", json_object_new_string("response.output_text.delta"));
    if (json_object_object_get_ex(done_ev, "item_id", &v))
        json_object_object_add(d, "item_id", json_object_get(v));
    json_object_object_add(d, "output_index",
                           json_object_new_int(int_field(done_ev, "output_index")));
    json_object_object_add(d, "content_index",
                           json_object_new_int(int_field(done_ev, "content_index")));
    json_object_object_add(d, "delta",
                           json_object_new_string_len(buf_cstr(&s->clean), (int)s->clean.len));
    json_object_object_add(d, "logprobs", json_object_new_array());
    int rc = relay(s, d, "response.output_text.delta");
    json_object_put(d);
    return rc;
}

/* The id of the response an event carries (response.created onwards). */
static void note_response(struct request *req, json_object *response)
{
    const char *id = string_field(response, "id");
    if (id && !req->response_id[0] && strlen(id) < sizeof req->response_id)
        snprintf(req->response_id, sizeof req->response_id, "%s", id);
}

static int on_event(void *arg, const char *data, size_t len)
{
    struct rstream *s = arg;
    struct request *req = s->req;
    const struct redactor *rd = req->w->redactor;
    json_object *ev = worker_thread_parse(req->t, data, len), *response;
    const char *type =
        ev && json_object_is_type(ev, json_type_object) ? string_field(ev, "type") : NULL;
    if (!type) {
        /* Not an event of this API: it cannot be redacted in step with the
         * text around it, so it is not relayed. */
        json_object_put(ev);
        return 0;
    }
    char t[96];
    snprintf(t, sizeof t, "%s", type); /* the event's string goes when it is rewritten */
    int rc = 0;
    if (strcmp(t, "response.output_text.delta") == 0) {
        json_object *delta;
        const char *piece = "";
        size_t plen = 0;
        if (json_object_object_get_ex(ev, "delta", &delta) &&
            json_object_is_type(delta, json_type_string)) {
            piece = json_object_get_string(delta);
            plen = (size_t)json_object_get_string_len(delta);
        }
        buf_reset(&s->clean);
        redact_stream(rd, part_pending(s, ev), piece, plen, 0, &s->clean);
        s->relayed_chars += (long)s->clean.len;
        json_object_object_add(ev, "delta",
                               json_object_new_string_len(buf_cstr(&s->clean), (int)s->clean.len));
        rc = relay(s, ev, t);
    } else if (strcmp(t, "response.output_text.done") == 0) {
        rc = flush_part(s, ev);
        redact_texts(rd, ev, &s->clean);
        if (rc == 0)
            rc = relay(s, ev, t);
    } else if (strcmp(t, "response.completed") == 0 || strcmp(t, "response.incomplete") == 0 ||
               strcmp(t, "response.failed") == 0) {
        if (json_object_object_get_ex(ev, "response", &response) &&
            json_object_is_type(response, json_type_object)) {
            note_response(req, response);
            json_object *usage;
            if (json_object_object_get_ex(response, "usage", &usage))
                chat_read_usage(req, usage);
            redact_texts(rd, response, &s->clean);
        }
        if (strcmp(t, "response.failed") == 0) {
            json_object *err = NULL;
            const char *why = json_object_object_get_ex(response, "error", &err)
                                  ? string_field(err, "message")
                                  : NULL;
            request_fail(req, AIGW_ERR_BACKEND_ERROR, "",
                         "The backend could not make the response: %s",
                         why ? why : "response.failed");
        }
        s->done = 1;
        /* The end of the answer goes out once the request is settled. */
        frame(s, ev, t);
        rc = fcgi_stream_hold(req, s->event.data, s->event.len);
    } else if (strcmp(t, "error") == 0) {
        const char *why = string_field(ev, "message");
        request_fail(req, AIGW_ERR_BACKEND_ERROR, "", "The backend stream reported an error: %s",
                     why ? why : "error");
        s->done = 1;
        rc = relay(s, ev, t);
    } else {
        if (json_object_object_get_ex(ev, "response", &response) &&
            json_object_is_type(response, json_type_object))
            note_response(req, response);
        redact_texts(rd, ev, &s->clean);
        rc = relay(s, ev, t);
    }
    json_object_put(ev);
    return rc;
}

/* A 2xx answer must be one JSON object; its usage and id are read. */
static int accept_response(struct request *req, void *arg)
{
    (void)arg;
    json_object *answer = worker_thread_parse(req->t, buf_cstr(&req->upstream), req->upstream.len);
    if (!answer || !json_object_is_type(answer, json_type_object)) {
        json_object_put(answer);
        return -1;
    }
    json_object *usage;
    if (json_object_object_get_ex(answer, "usage", &usage))
        chat_read_usage(req, usage);
    note_response(req, answer);
    json_object_put(answer);
    return 0;
}

/* A stored response, its deletion or its items: one JSON object, and no
 * usage to count (the tokens were counted when it was made). */
static int accept_stored(struct request *req, void *arg)
{
    (void)arg;
    struct json_strict_error err = {0};
    const char *body = buf_cstr(&req->upstream);
    size_t i = strspn(body, " \t\r\n");
    return i < req->upstream.len && body[i] == '{' &&
                   json_strict_valid(body, req->upstream.len, 64, &err) == 0
               ? 0
               : -1;
}

enum aigw_err responses_locate(struct request *req)
{
    int stored = router_is_stored_response(req->route);
    const char *id = stored ? req->stored_id : req->in.previous_response_id;
    if (!id || !*id)
        return AIGW_OK;
    struct response_origin o;
    struct store *st = db_reader(req->w->db);
    int found = st ? store_response_origin(st, id, &o) : -1;
    db_reader_done(req->w->db, st);
    if (found < 0)
        return request_store_unavailable(req);
    const char *param = stored ? "" : "previous_response_id";
    /* Someone else's response is answered as if it did not exist. */
    if (found && strcmp(o.owner, req->subject ? req->subject : "") != 0)
        found = 0;
    if (!found) {
        if (!stored)
            return AIGW_OK; /* not made through the gateway: the backend will judge it */
        return request_fail(req, AIGW_ERR_NOT_FOUND, param,
                            "No response with id '%s' was made through this gateway for you.", id);
    }
    const struct cfg *cfg = req->w->cfg;
    for (size_t i = 0; i < cfg->n_backends; i++)
        if (strcmp(cfg->backends[i].name, o.backend) == 0)
            req->pinned_backend = cfg->backends[i].name;
    if (!req->pinned_backend)
        return request_fail(req, AIGW_ERR_BACKEND_UNAVAILABLE, param,
                            "The response '%s' is stored by backend %s, which is no longer "
                            "configured.",
                            id, o.backend);
    if (stored) {
        snprintf(req->model, sizeof req->model, "%s", o.model);
        return AIGW_OK;
    }
    /* The follow-up's input holds the whole stored conversation. */
    req->in.context_tokens = (long)o.total_tokens;
    return AIGW_OK;
}

/* A follow-up pinned to a backend needs that backend to serve its model. */
static enum aigw_err check_pinned_model(struct request *req)
{
    const struct cfg *cfg = req->w->cfg;
    for (size_t i = 0; i < cfg->n_backends; i++)
        if (strcmp(cfg->backends[i].name, req->pinned_backend) == 0 &&
            !cfg_backend_deployment(&cfg->backends[i], req->model))
            return request_fail(req, AIGW_ERR_INVALID_VALUE, "model",
                                "The previous response was made by backend %s, which does not "
                                "serve model '%s'.",
                                req->pinned_backend, req->model);
    return AIGW_OK;
}

enum aigw_err responses_handle(struct request *req)
{
    if (req->pinned_backend && check_pinned_model(req) != AIGW_OK)
        return req->err;
    struct rstream s = {.req = req};
    struct dispatch_target t = {
        .op = "responses",
        .resource_op = 1,
        .body = req->in.root,
        .accept = accept_response,
    };
    if (req->in.stream) {
        t.on_event = on_event;
        t.arg = &s;
    }
    enum aigw_err e = dispatch_call(req, &t);
    if (req->response == RESPONSE_STREAMING) {
        if (!s.done && !req->client_gone) {
            if (e == AIGW_OK)
                request_fail(req, AIGW_ERR_BACKEND_ERROR, "",
                             "The backend stream ended before response.completed.");
            /* Text the redactor still holds back is dropped: it may be the
             * start of a secret that never finished arriving. */
            json_object *err = json_object_new_object();
            json_object_object_add(err, "type", json_object_new_string("error"));
            json_object_object_add(err, "code",
                                   json_object_new_string(aigw_err_info(req->err)->code));
            json_object_object_add(err, "message", json_object_new_string(req->err_message));
            json_object_object_add(err, "param", NULL);
            relay(&s, err, "error");
            json_object_put(err);
        }
        e = proxy_stream_outcome(req, s.relayed_chars);
    } else if (e == AIGW_OK) {
        e = proxy_send_whole_answer(req);
    }
    for (int i = 0; i < MAX_TEXT_PARTS; i++)
        buf_free(&s.pending[i]);
    buf_free(&s.event);
    buf_free(&s.clean);
    return e;
}

enum aigw_err responses_stored(struct request *req)
{
    char op[ROUTER_DEPLOYMENT_MAX + 32];
    snprintf(op, sizeof op, "responses/%s%s", req->stored_id,
             req->route == ROUTE_RESPONSE_INPUT_ITEMS ? "/input_items" : "");
    struct dispatch_target t = {
        .op = op,
        .resource_op = 1,
        .method = req->route == ROUTE_RESPONSE_DELETE ? "DELETE" : "GET",
        .query = req->forward_query,
        .relay_not_found = 1,
        .accept = accept_stored,
    };
    enum aigw_err e = dispatch_call(req, &t);
    return e == AIGW_OK ? proxy_send_whole_answer(req) : e;
}
