/*
 * proxy.c - compatible endpoints and the SSE relay (see proxy.h).
 *
 * A relayed stream is written to the client and flushed event by event; the
 * web server configurations turn their own buffering off so the client sees
 * each event as the backend produces it. Once the first event has been
 * written the stream can no longer fail over: if the backend breaks off, the
 * client gets one error event and no [DONE], and the audit row says error.
 */
#include "proxy.h"

#include <stdio.h>
#include <string.h>

#include "chat.h"
#include "chunk.h"
#include "dispatch.h"
#include "fcgi_io.h"
#include "json_strict.h"
#include "sanitize.h"
#include "worker.h"

#define MAX_STREAM_CHOICES 128 /* OpenAI's limit on n; validate.c enforces it */

struct stream_ctx {
    struct request *req;
    struct buf pending[MAX_STREAM_CHOICES]; /* held-back content per choice */
    struct buf event;
    struct buf clean;
    struct buf piece;     /* a decoded delta text (the in-place path) */
    struct buf rewritten; /* the event with its texts redacted in place */
    int done;             /* [DONE] seen */
    int dropped;          /* events that were not JSON chunks, not relayed */
    long relayed_chars;   /* content relayed, for a usage estimate if the stream breaks */
};

/* Frames data as one SSE event in s->event (and in the audited answer). */
static void frame_event(struct stream_ctx *s, const char *data, size_t len)
{
    struct request *req = s->req;
    buf_reset(&s->event);
    /* An event whose data spans lines gets one "data: " per line, so a line
     * break from the backend can never end the event early or start another. */
    buf_puts(&s->event, "data: ");
    size_t run = 0; /* the start of the bytes not yet copied */
    for (size_t i = 0; i < len; i++) {
        if (data[i] != '\n' && data[i] != '\r')
            continue;
        buf_append(&s->event, data + run, i - run);
        if (data[i] == '\r' && i + 1 < len && data[i + 1] == '\n')
            i++; /* CR LF is one line break */
        buf_puts(&s->event, "\ndata: ");
        run = i + 1;
    }
    buf_append(&s->event, data + run, len - run);
    buf_puts(&s->event, "\n\n");
    if (req->w->cfg->audit.log_bodies != LOG_BODIES_NONE && req->out.len < (1u << 20))
        buf_append(&req->out, s->event.data, s->event.len);
}

static int send_event(struct stream_ctx *s, const char *data, size_t len)
{
    frame_event(s, data, len);
    return fcgi_stream_write(s->req, s->event.data, s->event.len);
}

/* Redacts the delta content of each choice in chunk; 1 if chunk changed. */
static int redact_chunk(struct stream_ctx *s, json_object *chunk)
{
    json_object *choices;
    int changed = 0;
    if (!json_object_object_get_ex(chunk, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array))
        return 0;
    size_t n = json_object_array_length(choices);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(choices, i), *idx, *delta, *content, *fr;
        if (!json_object_is_type(c, json_type_object))
            continue;
        int index = json_object_object_get_ex(c, "index", &idx) ? json_object_get_int(idx) : 0;
        if (index < 0 || index >= MAX_STREAM_CHOICES)
            index = MAX_STREAM_CHOICES - 1;
        int final = json_object_object_get_ex(c, "finish_reason", &fr) &&
                    !json_object_is_type(fr, json_type_null);
        const char *piece = "";
        size_t plen = 0;
        int has_content = json_object_object_get_ex(c, "delta", &delta) &&
                          json_object_is_type(delta, json_type_object) &&
                          json_object_object_get_ex(delta, "content", &content) &&
                          json_object_is_type(content, json_type_string);
        if (has_content) {
            piece = json_object_get_string(content);
            plen = (size_t)json_object_get_string_len(content);
        }
        if (!has_content && !final)
            continue;
        buf_reset(&s->clean);
        redact_stream(s->req->w->redactor, &s->pending[index], piece, plen, final, &s->clean);
        s->relayed_chars += (long)s->clean.len;
        /* Text held back until the end rides on the finishing chunk, in a
         * delta made for it if the chunk has none. */
        if (!has_content && s->clean.len &&
            (!json_object_object_get_ex(c, "delta", &delta) ||
             !json_object_is_type(delta, json_type_object))) {
            delta = json_object_new_object();
            json_object_object_add(c, "delta", delta);
        }
        if (has_content || s->clean.len) {
            json_object_object_add(
                delta, "content",
                json_object_new_string_len(buf_cstr(&s->clean), (int)s->clean.len));
            changed = 1;
        }
    }
    return changed;
}

/* The common event, relayed as its own bytes with each delta text replaced
 * by its redacted text. 1 when relayed (*rc the send's result), 0 when a
 * text does not decode (the json-c path takes the event). */
static int relay_in_place(struct stream_ctx *s, const char *data, size_t len,
                          const struct chunk_scan *cs, int *rc)
{
    /* Every text must decode before any reaches the redactor, whose
     * held-back state may not see an event twice. */
    for (int k = 0; k < cs->n; k++)
        if (chunk_string_decode(data, cs->choice[k].content_at, cs->choice[k].content_end,
                                &s->piece) < 0)
            return 0;
    struct buf *out = &s->rewritten;
    buf_reset(out);
    size_t pos = 0;
    for (int k = 0; k < cs->n; k++) {
        const struct chunk_choice *c = &cs->choice[k];
        chunk_string_decode(data, c->content_at, c->content_end, &s->piece);
        buf_reset(&s->clean);
        redact_stream(s->req->w->redactor, &s->pending[c->index], s->piece.data, s->piece.len, 0,
                      &s->clean);
        s->relayed_chars += (long)s->clean.len;
        buf_append(out, data + pos, c->content_at - pos);
        buf_put_json_string(out, s->clean.data ? s->clean.data : "", s->clean.len);
        pos = c->content_end;
    }
    buf_append(out, data + pos, len - pos);
    *rc = send_event(s, out->data, out->len);
    return 1;
}

static int on_stream_event(void *arg, const char *data, size_t len)
{
    struct stream_ctx *s = arg;
    struct request *req = s->req;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        /* The end of the answer goes out once the request is settled. */
        s->done = 1;
        frame_event(s, data, len);
        return fcgi_stream_hold(req, s->event.data, s->event.len);
    }
    struct chunk_scan cs;
    int rc = 0;
    if (chunk_scan(data, len, &cs) && relay_in_place(s, data, len, &cs, &rc))
        return rc;
    json_object *chunk = worker_thread_parse(req->t, data, len);
    if (!chunk || !json_object_is_type(chunk, json_type_object)) {
        /* Not a chunk: it cannot be redacted in step with the content around
         * it (a secret could straddle it), so it is not relayed. */
        json_object_put(chunk);
        s->dropped++;
        return 0;
    }
    json_object *usage, *choices;
    int has_usage = json_object_object_get_ex(chunk, "usage", &usage) &&
                    json_object_is_type(usage, json_type_object);
    if (has_usage)
        chat_read_usage(req, usage);
    int no_choices =
        !json_object_object_get_ex(chunk, "choices", &choices) ||
        (json_object_is_type(choices, json_type_array) && json_object_array_length(choices) == 0);
    if (has_usage && no_choices && !req->in.include_usage) {
        /* The usage chunk the gateway asked for on its own behalf. */
    } else {
        if (has_usage && !req->in.include_usage) {
            json_object_object_del(chunk, "usage");
            redact_chunk(s, chunk);
            size_t n;
            const char *t = json_object_to_json_string_length(chunk, JSON_C_TO_STRING_PLAIN, &n);
            rc = send_event(s, t, n);
        } else if (redact_chunk(s, chunk)) {
            size_t n;
            const char *t = json_object_to_json_string_length(chunk, JSON_C_TO_STRING_PLAIN, &n);
            rc = send_event(s, t, n);
        } else {
            rc = send_event(s, data, len);
        }
    }
    json_object_put(chunk);
    return rc;
}

/* A 2xx answer must be one JSON object (a truncated or garbled one fails
 * over). It is relayed as it came, so it is only checked, not parsed into a
 * tree; the usage object is the one part the gateway reads. */
/* The last "usage": before end in body, or NULL. */
static const char *memrchr_usage(const char *body, const char *end)
{
    static const char key[] = "\"usage\":";
    for (const char *p = end - (sizeof key - 1); p >= body; p--)
        if (*p == '"' && memcmp(p, key, sizeof key - 1) == 0)
            return p;
    return NULL;
}

static int proxy_accept(struct request *req, void *arg)
{
    (void)arg;
    const char *body = buf_cstr(&req->upstream);
    size_t n = req->upstream.len, i = 0;
    struct json_strict_error err = {0};
    while (i < n && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    if (i == n || body[i] != '{' || json_strict_valid(body, n, 64, &err) < 0)
        return -1;
    /* "usage" comes last in OpenAI's and Azure's answers: search from the end.
     * In valid JSON the text "usage": can only be a key or inside a string, and
     * a string would be followed by more of the string, not by an object. */
    for (const char *p = body + n; (p = memrchr_usage(body, p)) != NULL;) {
        const char *v = p + 8; /* past "usage": */
        while (*v == ' ' || *v == '\n' || *v == '\r' || *v == '\t')
            v++;
        /* The object ends before the end of the body: what follows is ignored. */
        json_object *usage =
            *v == '{' ? worker_thread_parse(req->t, v, (size_t)(body + n - v)) : NULL;
        if (usage && json_object_is_type(usage, json_type_object)) {
            chat_read_usage(req, usage);
            json_object_put(usage);
            return 0;
        }
        json_object_put(usage);
    }
    /* Not in the usual form ("usage" : {...} with a space, say): read it the long way. */
    json_object *answer = worker_thread_parse(req->t, body, n), *usage;
    if (answer && json_object_object_get_ex(answer, "usage", &usage))
        chat_read_usage(req, usage);
    json_object_put(answer);
    return 0;
}

enum aigw_err proxy_stream_outcome(struct request *req, long relayed_chars)
{
    if (req->client_gone && req->err == AIGW_OK)
        request_fail(req, AIGW_ERR_CLIENT_CLOSED, "", "The client disconnected mid-stream.");
    if (req->total_tokens == 0 && relayed_chars > 0) {
        /* No usage arrived: count what was relayed, erring high. */
        req->prompt_tokens = validate_prompt_token_estimate(&req->in);
        req->completion_tokens = relayed_chars / 3 + 1;
        req->total_tokens = req->prompt_tokens + req->completion_tokens;
    }
    req->http_status = 200;
    return req->err;
}

enum aigw_err proxy_send_whole_answer(struct request *req)
{
    buf_reset(&req->out);
    redact_text(req->w->redactor, req->upstream.data ? req->upstream.data : "", req->upstream.len,
                &req->out);
    fcgi_send_json(req, req->upstream_status, req->out.data, req->out.len);
    req->http_status = req->upstream_status;
    if (req->upstream_status >= 300)
        return request_fail(req, AIGW_ERR_INVALID_VALUE, "",
                            "The backend refused the request (HTTP %d).", req->upstream_status);
    return AIGW_OK;
}

enum aigw_err proxy_handle(struct request *req)
{
    int chat = router_info(req->route)->kind == API_CHAT_COMPLETIONS;
    struct stream_ctx s = {.req = req};
    struct dispatch_target t = {
        .op = chat ? "chat/completions" : "embeddings",
        .body = req->in.root,
        .body_is_raw_ok = 1,
        .accept = proxy_accept,
    };
    if (chat && req->in.stream) {
        /* Ask for usage so streams are counted; stripped again if unasked. */
        json_object *opts;
        if (!json_object_object_get_ex(req->in.root, "stream_options", &opts) ||
            !json_object_is_type(opts, json_type_object)) {
            opts = json_object_new_object();
            json_object_object_add(req->in.root, "stream_options", opts);
        }
        json_object_object_add(opts, "include_usage", json_object_new_boolean(1));
        t.body_is_raw_ok = 0;
        t.on_event = on_stream_event;
        t.arg = &s;
    }
    enum aigw_err e = dispatch_call(req, &t);
    if (req->response == RESPONSE_STREAMING) {
        if (e != AIGW_OK || (!s.done && !req->client_gone)) {
            if (e == AIGW_OK)
                request_fail(req, AIGW_ERR_BACKEND_ERROR, "",
                             "The backend stream ended without [DONE].");
            /* Text the redactor still holds back is dropped: it may be the
             * start of a secret that never finished arriving. */
            struct buf err = {0};
            fcgi_error_json(req, &err);
            send_event(&s, err.data, err.len);
            buf_free(&err);
        }
        e = proxy_stream_outcome(req, s.relayed_chars);
    } else if (e == AIGW_OK) {
        e = proxy_send_whole_answer(req);
    }
    for (int i = 0; i < MAX_STREAM_CHOICES; i++)
        buf_free(&s.pending[i]);
    buf_free(&s.event);
    buf_free(&s.clean);
    buf_free(&s.piece);
    buf_free(&s.rewritten);
    return e;
}

void proxy_list_models(struct request *req)
{
    const struct cfg *cfg = req->w->cfg;
    struct buf *out = &req->out;
    buf_reset(out);
    buf_puts(out, "{\"object\":\"list\",\"data\":[");
    int first = 1;
    for (size_t i = 0; i < cfg->n_backends; i++) {
        for (size_t j = 0; j < cfg->backends[i].n_deployments; j++) {
            const char *m = cfg->backends[i].deployments[j].model;
            int seen = 0;
            /* List each model once, however many regions serve it. */
            for (size_t a = 0; a <= i && !seen; a++)
                for (size_t b = 0; b < cfg->backends[a].n_deployments; b++) {
                    if (a == i && b >= j)
                        break;
                    if (strcmp(cfg->backends[a].deployments[b].model, m) == 0) {
                        seen = 1;
                        break;
                    }
                }
            if (seen)
                continue;
            buf_puts(out, first ? "{\"id\":" : ",{\"id\":");
            buf_put_json_string(out, m, strlen(m));
            buf_puts(out, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"aigw\"}");
            first = 0;
        }
    }
    buf_puts(out, "]}\n");
    fcgi_send_json(req, 200, out->data, out->len);
}
