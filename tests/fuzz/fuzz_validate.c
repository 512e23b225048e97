/*
 * fuzz_validate.c - libFuzzer target for app/validate.c (validate_body).
 *
 * Pipeline stage 4 is the edge: everything after it trusts struct
 * chat_input. Each input is validated as a body of every route kind (the
 * seed's /api/chat, chat completions, embeddings) against a configuration
 * with small limits, so that the limits themselves are reached. When a body
 * is accepted, the fields later stages rely on are checked against the
 * configuration; when it is refused, the error must name the problem and
 * leave nothing allocated.
 *
 * Input: the raw request body.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "validate.h"

static struct cfg *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    cfg = fuzz_cfg("{\"validation\": {\"max_depth\": 16, \"max_messages\": 8, "
                   "\"max_content_chars\": 300, \"max_tokens\": 4096, "
                   "\"deny_patterns\": [\"ignore previous\", \"you  are now\", "
                   "\"\\u00e9vite\"]}, " FUZZ_BACKENDS "}");
    return 0;
}

/* No C0/C1 control characters, as validate.c promises for user ids. */
static int printable(const char *s)
{
    for (const unsigned char *u = (const unsigned char *)s; *u; u++)
        if (*u < 0x20 || *u == 0x7f || (*u == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f))
            return 0;
    return 1;
}

static void check_kind(enum api_kind kind, const char *body, size_t len)
{
    struct chat_input in;
    struct validation_error err;
    enum aigw_err r = validate_body(cfg, kind, body, len, &in, &err);
    FUZZ_CHECK(memchr(err.param, '\0', sizeof err.param) &&
                   memchr(err.message, '\0', sizeof err.message),
               "unterminated error text");
    if (r != AIGW_OK) {
        FUZZ_CHECK(in.root == NULL, "a refused body left its tree allocated (kind %d)", (int)kind);
        FUZZ_CHECK(err.message[0] != '\0', "refusal %d without a message (kind %d)", (int)r,
                   (int)kind);
        /* The reason is for the client: it must be text, never raw body bytes. */
        FUZZ_CHECK(printable(err.message) || fuzz_known("error-echo"),
                   "control characters in the error message: %s", err.message);
        return;
    }
    FUZZ_CHECK(in.root && json_object_is_type(in.root, json_type_object), "accepted a non-object");
    FUZZ_CHECK(in.kind == kind, "kind changed");
    if (kind != API_EMBEDDINGS) {
        FUZZ_CHECK(in.n_messages >= 1 && in.n_messages <= (size_t)cfg->validation.max_messages,
                   "%zu messages accepted (limit %d)", in.n_messages, cfg->validation.max_messages);
        FUZZ_CHECK((kind == API_CHAT_COMPLETIONS && in.temperature == -1) ||
                       (isfinite(in.temperature) && in.temperature >= 0 && in.temperature <= 2),
                   "temperature %g accepted", in.temperature);
        FUZZ_CHECK((kind == API_CHAT_COMPLETIONS && in.max_tokens == 0) ||
                       (in.max_tokens >= 1 && in.max_tokens <= cfg->validation.max_tokens),
                   "max_tokens %d accepted", in.max_tokens);
    }
    if (kind == API_SEED_CHAT)
        FUZZ_CHECK(in.user_id != NULL, "/api/chat accepted without user_id");
    if (in.user_id) {
        FUZZ_CHECK(in.user_id[0] && strlen(in.user_id) <= 4 * 256 && printable(in.user_id),
                   "user id not 1-256 printable characters: %s", in.user_id);
    }
    if (in.model)
        FUZZ_CHECK(in.model[0] && strlen(in.model) <= 256, "model %s accepted", in.model);
    FUZZ_CHECK(in.stream == 0 || in.stream == 1, "stream %d", in.stream);
    /* Text counts its decoded bytes (never more than its JSON form), a token
     * id four: either way bounded by the body. */
    FUZZ_CHECK(in.prompt_bytes <= 4 * len, "prompt_bytes %zu for a body of %zu bytes",
               in.prompt_bytes, len);
    long est = validate_prompt_token_estimate(&in);
    FUZZ_CHECK(est > 0, "token estimate %ld", est);
    chat_input_clear(&in);
    FUZZ_CHECK(in.root == NULL, "chat_input_clear kept the tree");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Bodies come from a buffer that is NUL-terminated after the body. */
    char *body = fuzz_strndup(data, size);
    check_kind(API_SEED_CHAT, body, size);
    check_kind(API_CHAT_COMPLETIONS, body, size);
    check_kind(API_EMBEDDINGS, body, size);
    free(body);
    return 0;
}
