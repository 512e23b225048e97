/*
 * chat.h - POST /api/chat, the seed's own endpoint.
 *
 * Takes the validated {messages, temperature, max_tokens, user_id, model?},
 * calls a chat-completions backend through dispatch, and answers
 * {content, tokens_used, finish_reason, model, request_id} with secrets in
 * the content redacted (the seed's ChatResponse.sanitize_content).
 */
#ifndef AIGW_CHAT_H
#define AIGW_CHAT_H

#include "request.h"

/* Dispatches and writes the response; returns the outcome. */
enum aigw_err chat_handle(struct request *req);

/* Reads usage.{prompt,completion,total}_tokens (or the Responses API's
 * input_tokens and output_tokens) of a backend answer into req. */
void chat_read_usage(struct request *req, json_object *usage);

#endif
