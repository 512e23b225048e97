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

/* GET /openai/models and /v1/models. */
void proxy_list_models(struct request *req);

#endif
