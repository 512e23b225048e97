/*
 * chat.c - the seed's /api/chat endpoint (see chat.h).
 */
#include "chat.h"

#include <string.h>

#include "dispatch.h"
#include "fcgi_io.h"
#include "sanitize.h"
#include "worker.h"

struct chat_ctx {
    json_object *answer; /* the parsed backend answer; owned */
};

void chat_read_usage(struct request *req, json_object *usage)
{
    json_object *v;
    if (!usage || !json_object_is_type(usage, json_type_object))
        return;
    /* Chat and embeddings say prompt/completion; the Responses API says input/output. */
    if ((json_object_object_get_ex(usage, "prompt_tokens", &v) ||
         json_object_object_get_ex(usage, "input_tokens", &v)) &&
        json_object_is_type(v, json_type_int))
        req->prompt_tokens = json_object_get_int64(v);
    if ((json_object_object_get_ex(usage, "completion_tokens", &v) ||
         json_object_object_get_ex(usage, "output_tokens", &v)) &&
        json_object_is_type(v, json_type_int))
        req->completion_tokens = json_object_get_int64(v);
    if (json_object_object_get_ex(usage, "total_tokens", &v) &&
        json_object_is_type(v, json_type_int))
        req->total_tokens = json_object_get_int64(v);
    else
        req->total_tokens = req->prompt_tokens + req->completion_tokens;
}

/* A 2xx answer must be a chat completion with a first choice. */
static int chat_accept(struct request *req, void *arg)
{
    struct chat_ctx *ctx = arg;
    json_object_put(ctx->answer);
    ctx->answer = worker_thread_parse(req->t, buf_cstr(&req->upstream), req->upstream.len);
    json_object *choices, *c0, *msg;
    if (!ctx->answer || !json_object_is_type(ctx->answer, json_type_object) ||
        !json_object_object_get_ex(ctx->answer, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array) || json_object_array_length(choices) < 1 ||
        !(c0 = json_object_array_get_idx(choices, 0)) ||
        !json_object_is_type(c0, json_type_object) ||
        !json_object_object_get_ex(c0, "message", &msg) ||
        !json_object_is_type(msg, json_type_object)) {
        json_object_put(ctx->answer);
        ctx->answer = NULL;
        return -1;
    }
    return 0;
}

static const char *string_field(json_object *o, const char *key, const char *dflt)
{
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return dflt;
}

enum aigw_err chat_handle(struct request *req)
{
    /* The seed forwards exactly these three fields. */
    json_object *body = json_object_new_object(), *msgs;
    json_object_object_get_ex(req->in.root, "messages", &msgs);
    json_object_object_add(body, "messages", json_object_get(msgs));
    json_object_object_add(body, "temperature", json_object_new_double(req->in.temperature));
    json_object_object_add(body, "max_tokens", json_object_new_int(req->in.max_tokens));
    struct chat_ctx ctx = {0};
    struct dispatch_target t = {
        .op = "chat/completions", .body = body, .accept = chat_accept, .arg = &ctx};
    enum aigw_err e = dispatch_call(req, &t);
    json_object_put(body);
    if (e != AIGW_OK)
        goto out;
    if (req->upstream_status >= 300) {
        /* The backend refused the request itself (e.g. a content filter): relay it. */
        fcgi_send_json(req, req->upstream_status, req->upstream.data, req->upstream.len);
        request_fail(req, AIGW_ERR_INVALID_VALUE, "", "The backend refused the request (HTTP %d).",
                     req->upstream_status);
        e = req->err;
        req->http_status = req->upstream_status;
        goto out;
    }
    json_object *choices, *usage;
    json_object_object_get_ex(ctx.answer, "choices", &choices);
    json_object *c0 = json_object_array_get_idx(choices, 0), *msg;
    json_object_object_get_ex(c0, "message", &msg);
    if (json_object_object_get_ex(ctx.answer, "usage", &usage))
        chat_read_usage(req, usage);
    json_object *cv;
    const char *content = "";
    size_t content_len = 0;
    if (json_object_object_get_ex(msg, "content", &cv) &&
        json_object_is_type(cv, json_type_string)) {
        content = json_object_get_string(cv);
        content_len = (size_t)json_object_get_string_len(cv); /* may hold NUL bytes */
    }
    struct buf *out = &req->out;
    buf_reset(out);
    buf_puts(out, "{\"content\":");
    struct buf clean = {0};
    redact_text(req->w->redactor, content, content_len, &clean);
    buf_put_json_string(out, buf_cstr(&clean), clean.len);
    buf_free(&clean);
    buf_printf(out, ",\"tokens_used\":%lld,\"finish_reason\":", (long long)req->total_tokens);
    const char *fr = string_field(c0, "finish_reason", "unknown");
    buf_put_json_string(out, fr, strlen(fr));
    buf_puts(out, ",\"model\":");
    const char *model = string_field(ctx.answer, "model", req->model);
    buf_put_json_string(out, model, strlen(model));
    buf_printf(out, ",\"request_id\":\"%s\"}\n", req->request_id);
    fcgi_send_json(req, 200, out->data, out->len);
out:
    json_object_put(ctx.answer);
    return e;
}
