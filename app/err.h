/*
 * err.h - the one error enum of aigw.
 *
 * Every stage of the request pipeline returns an enum aigw_err. The table in
 * err.c maps each value to the HTTP status, the OpenAI error "type" and "code"
 * and a default message; nothing else in the program invents a status code.
 */
#ifndef AIGW_ERR_H
#define AIGW_ERR_H

enum aigw_err {
    AIGW_OK = 0,
    AIGW_ERR_INVALID_JSON,
    AIGW_ERR_MISSING_FIELD,
    AIGW_ERR_INVALID_VALUE,
    AIGW_ERR_CONTENT_TOO_LONG,
    AIGW_ERR_TOO_MANY_MESSAGES,
    AIGW_ERR_PROMPT_INJECTION,
    AIGW_ERR_BODY_TOO_LARGE,
    AIGW_ERR_UNSUPPORTED_MEDIA_TYPE,
    AIGW_ERR_METHOD_NOT_ALLOWED,
    AIGW_ERR_NOT_FOUND,
    AIGW_ERR_MODEL_NOT_FOUND,
    AIGW_ERR_INVALID_TOKEN,
    AIGW_ERR_INVALID_API_KEY,
    AIGW_ERR_FORBIDDEN,
    AIGW_ERR_RATE_LIMITED,
    AIGW_ERR_TOKENS_RATE_LIMITED,
    AIGW_ERR_BUDGET_EXCEEDED,
    AIGW_ERR_ALREADY_EXISTS, /* the admin API: what is to be created exists */
    AIGW_ERR_CLIENT_CLOSED,  /* never sent: the client left mid-stream (audit only) */
    AIGW_ERR_BACKEND_UNAVAILABLE,
    AIGW_ERR_BACKEND_ERROR,
    AIGW_ERR_DEADLINE,
    AIGW_ERR_AUTH_UNAVAILABLE,  /* the identity provider's keys cannot be fetched */
    AIGW_ERR_STORE_UNAVAILABLE, /* the database cannot be read or written now */
    AIGW_ERR_INTERNAL,
    AIGW_ERR__COUNT
};

struct aigw_err_info {
    int http_status;
    const char *type;    /* OpenAI error type */
    const char *code;    /* OpenAI error code: part of the HTTP contract (README) */
    const char *message; /* default message, used when the stage gives none */
};

/* The row of the table for err; never NULL (unknown values map to internal_error). */
const struct aigw_err_info *aigw_err_info(enum aigw_err err);

#endif
