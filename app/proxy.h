/*
 * proxy.h - the Azure- and OpenAI-compatible endpoints.
 *
 * /openai/deployments/{d}/chat/completions, /openai/deployments/{d}/embeddings,
 * /v1/chat/completions, /v1/embeddings and the model lists. Bodies are
 * forwarded as the client sent them; streams are relayed event by event, with
 * usage requested from the backend and stripped again when the client did not
 * ask for it, and secrets redacted even when split across events.
 */
#ifndef AIGW_PROXY_H
#define AIGW_PROXY_H

#include "request.h"

enum aigw_err proxy_handle(struct request *req);

/* After a relayed stream: the outcome for the audit (a client that left, a
 * usage estimate from relayed_chars characters when no usage arrived). */
enum aigw_err proxy_stream_outcome(struct request *req, long relayed_chars);

/* A whole answer (2xx, or the backend's 4xx verdict on the request), as
 * dispatch left it in req->upstream: redacted and sent with its status. */
enum aigw_err proxy_send_whole_answer(struct request *req);

/* GET /openai/models and /v1/models. */
void proxy_list_models(struct request *req);

#endif
