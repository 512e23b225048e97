/*
 * validate.h - request bodies become validated C structs, once, at the edge.
 *
 * Pipeline stage 4. validate_body parses the body strictly (json_strict.c) and
 * checks the seed's rules for the route; later stages read only struct
 * chat_input and never look at the raw JSON again, except to forward it.
 */
#ifndef AIGW_VALIDATE_H
#define AIGW_VALIDATE_H

#include <json-c/json.h>
#include <stddef.h>

#include "config.h"
#include "err.h"
#include "router.h"

struct chat_input {
    json_object *root; /* the parsed body; owned, released by chat_input_clear */
    enum api_kind kind;
    const char *model;   /* from the body (or NULL); the route may supply it instead */
    const char *user_id; /* /api/chat: user_id; compatible paths: "user" (or NULL) */
    double temperature;  /* /api/chat default 0.7 */
    int max_tokens;      /* /api/chat default 1000; 0 = not given */
    int stream;          /* stream: true */
    int include_usage;   /* the client itself asked for stream_options.include_usage */
    size_t n_messages;
    size_t prompt_bytes; /* UTF-8 bytes of all checked text, for the token estimate */
    /* Responses API */
    const char *previous_response_id; /* the stored response this one continues, or NULL */
    long context_tokens;              /* tokens of that stored conversation, for the estimate */
};

/* Why validation failed: the JSON path of the field and a sentence for the caller. */
struct validation_error {
    char param[128];
    char message[384];
};

/*
 * Parses and checks body (len bytes) for kind. On AIGW_OK, in holds the parsed
 * request (release with chat_input_clear). Otherwise in is cleared and err
 * names the field and the fix.
 */
enum aigw_err validate_body(const struct cfg *cfg, enum api_kind kind, const char *body, size_t len,
                            struct chat_input *in, struct validation_error *err);

/* Checks text against the deny patterns (case-insensitive, white space
 * collapsed); returns the pattern matched or NULL. */
const char *validate_deny_match(const struct cfg *cfg, const char *text, size_t len);

/* Number of Unicode code points in valid UTF-8 text. */
size_t utf8_codepoints(const char *s, size_t len);

/* An estimate of the prompt's tokens that errs high (for budget reservations). */
long validate_prompt_token_estimate(const struct chat_input *in);

void chat_input_clear(struct chat_input *in);

#endif
