/*
 * audit.c - builds the audit row of a request (see audit.h).
 *
 * Bodies are stored redacted by default: the configured secret patterns are
 * masked before a byte reaches the database.
 */
#include "audit.h"

#include <string.h>

#include "sanitize.h"
#include "worker.h"

static const char *body_for_audit(struct request *req, const struct buf *body, struct buf *scratch)
{
    enum log_bodies mode = req->w->cfg->audit.log_bodies;
    if (mode == LOG_BODIES_NONE || body->len == 0)
        return NULL;
    buf_reset(scratch);
    if (mode == LOG_BODIES_FULL)
        buf_append(scratch, body->data, body->len);
    else if (redact_text(req->w->redactor, body->data, body->len, scratch) < 0)
        return NULL;
    /* The column is TEXT: keep it valid even if a body held a NUL byte. */
    return memchr(scratch->data, '\0', scratch->len) ? NULL : buf_cstr(scratch);
}

static void attempts_json(struct request *req, struct buf *out)
{
    buf_reset(out);
    buf_putc(out, '[');
    for (int i = 0; i < req->n_attempts && i < MAX_ATTEMPTS_RECORDED; i++) {
        const struct attempt *a = &req->attempts[i];
        buf_printf(out, "%s{\"backend\":", i ? "," : "");
        buf_put_json_string(out, a->backend, strlen(a->backend));
        buf_printf(out, ",\"status\":%d,\"latency_ms\":%.1f", a->http_status, a->latency_ms);
        if (a->error[0]) {
            buf_puts(out, ",\"error\":");
            buf_put_json_string(out, a->error, strlen(a->error));
        }
        buf_putc(out, '}');
    }
    buf_putc(out, ']');
}

void audit_fill(struct request *req, const char *status, struct audit_row *row,
                struct audit_scratch *scratch)
{
    memset(row, 0, sizeof *row);
    int pending = strcmp(status, "pending") == 0;
    row->request_id = req->request_id;
    row->ts_ms = req->start_ms;
    row->user_id = req->caller.user_id[0] ? req->caller.user_id : req->subject;
    row->end_user = req->end_user;
    row->operation = router_operation(req->route);
    row->model = req->model[0] ? req->model : NULL;
    row->deployment = req->backend_deployment ? req->backend_deployment
                                              : (req->deployment[0] ? req->deployment : NULL);
    row->backend = req->backend_name;
    row->attempts = req->n_attempts;
    row->stream = req->in.stream;
    row->reserved_tokens = req->reserved_tokens;
    row->budget_period_start = req->budget_period_start;
    row->status = status;
    row->client_ip = req->client_ip;
    row->trace_id = req->trace_id;
    /* The request body is written with the row (pending or refused); the
     * completion leaves it as it is, so it is not redacted a second time. */
    if (pending || strcmp(status, "refused") == 0)
        row->request_body = body_for_audit(req, &req->body, &scratch->request_body);
    row->latency_ms = -1;
    if (pending)
        return;
    attempts_json(req, &scratch->attempts);
    row->attempts_detail = req->n_attempts ? buf_cstr(&scratch->attempts) : NULL;
    row->prompt_tokens = req->prompt_tokens;
    row->completion_tokens = req->completion_tokens;
    row->total_tokens = req->total_tokens;
    row->latency_ms = (mono_s() - req->start_mono) * 1000.0;
    row->http_status = req->http_status;
    if (req->err != AIGW_OK) {
        row->error_code = aigw_err_info(req->err)->code;
        row->error = req->err_message;
    }
    row->response_body = body_for_audit(req, &req->out, &scratch->response_body);
    row->completed_ms = now_ms();
    row->response_id = req->response_id[0] ? req->response_id : NULL;
}

void audit_scratch_free(struct audit_scratch *s)
{
    buf_free(&s->request_body);
    buf_free(&s->response_body);
    buf_free(&s->attempts);
}
