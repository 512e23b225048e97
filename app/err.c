/*
 * err.c - the table that maps each gateway error to HTTP.
 *
 * This is the only place where an HTTP status for an error is chosen.
 */
#include "err.h"

static const struct aigw_err_info err_table[AIGW_ERR__COUNT] = {
    [AIGW_OK] = {200, "", "", "ok"},
    [AIGW_ERR_INVALID_JSON] = {400, "invalid_request_error", "invalid_json",
                               "The request body is not valid JSON."},
    [AIGW_ERR_MISSING_FIELD] = {400, "invalid_request_error", "missing_field",
                                "A required field is missing."},
    [AIGW_ERR_INVALID_VALUE] = {400, "invalid_request_error", "invalid_value",
                                "A field has an invalid value."},
    [AIGW_ERR_CONTENT_TOO_LONG] = {400, "invalid_request_error", "content_too_long",
                                   "A message content is too long."},
    [AIGW_ERR_TOO_MANY_MESSAGES] = {400, "invalid_request_error", "too_many_messages",
                                    "Too many messages."},
    [AIGW_ERR_PROMPT_INJECTION] = {400, "invalid_request_error", "prompt_injection_detected",
                                   "Potentially dangerous content detected."},
    [AIGW_ERR_BODY_TOO_LARGE] = {413, "invalid_request_error", "body_too_large",
                                 "The request body is too large."},
    [AIGW_ERR_UNSUPPORTED_MEDIA_TYPE] = {415, "invalid_request_error", "unsupported_media_type",
                                         "Content-Type must be application/json."},
    [AIGW_ERR_METHOD_NOT_ALLOWED] = {405, "invalid_request_error", "method_not_allowed",
                                     "Method not allowed for this path."},
    [AIGW_ERR_NOT_FOUND] = {404, "invalid_request_error", "not_found", "No such path."},
    [AIGW_ERR_MODEL_NOT_FOUND] = {404, "invalid_request_error", "model_not_found",
                                  "The model does not exist or no backend serves it."},
    [AIGW_ERR_INVALID_TOKEN] = {401, "authentication_error", "invalid_token",
                                "The bearer token is missing or invalid."},
    [AIGW_ERR_INVALID_API_KEY] = {401, "authentication_error", "invalid_api_key",
                                  "The API key is invalid, expired or revoked."},
    [AIGW_ERR_FORBIDDEN] = {403, "permission_error", "forbidden",
                            "The caller is not allowed to do this."},
    [AIGW_ERR_RATE_LIMITED] = {429, "rate_limit_error", "rate_limit_exceeded",
                               "Rate limit exceeded; retry after the time in Retry-After."},
    [AIGW_ERR_TOKENS_RATE_LIMITED] = {429, "rate_limit_error", "tokens_rate_limit_exceeded",
                                      "Tokens-per-minute limit exceeded; retry later."},
    [AIGW_ERR_BUDGET_EXCEEDED] = {403, "insufficient_quota", "budget_exceeded",
                                  "The token budget for this period is exhausted."},
    [AIGW_ERR_ALREADY_EXISTS] = {409, "invalid_request_error", "already_exists",
                                 "It exists already."},
    [AIGW_ERR_CLIENT_CLOSED] = {499, "invalid_request_error", "client_closed_request",
                                "The client closed the connection before the answer was complete."},
    [AIGW_ERR_BACKEND_UNAVAILABLE] = {503, "server_error", "backend_unavailable",
                                      "No backend is available; retry later."},
    [AIGW_ERR_BACKEND_ERROR] = {502, "server_error", "backend_error",
                                "The model backend failed after retries."},
    [AIGW_ERR_DEADLINE] = {504, "server_error", "deadline_exceeded",
                           "The request deadline was exceeded."},
    [AIGW_ERR_AUTH_UNAVAILABLE] = {503, "server_error", "auth_unavailable",
                                   "The identity provider's signing keys cannot be fetched; "
                                   "retry later."},
    [AIGW_ERR_STORE_UNAVAILABLE] = {503, "server_error", "store_unavailable",
                                    "The gateway's database is unavailable; retry later."},
    [AIGW_ERR_INTERNAL] = {500, "server_error", "internal_error", "Internal gateway error."},
};

const struct aigw_err_info *aigw_err_info(enum aigw_err err)
{
    if ((int)err < 0 || err >= AIGW_ERR__COUNT)
        err = AIGW_ERR_INTERNAL;
    return &err_table[err];
}
