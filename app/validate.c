/*
 * validate.c - the seed's request rules, checked once at the edge.
 *
 * The seed's pydantic models (Message, ChatRequest) are the contract for
 * /api/chat; the compatible paths get the same checks on what the gateway
 * understands (roles, text content, temperature, max_tokens) and pass the
 * rest through untouched. Each failure names the field as a JSON path
 * ("messages[3].content") so SDKs can show the caller what to fix.
 */
#include "validate.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json_strict.h"

#define USER_ID_MAX 256 /* the README's validation rules */

static enum aigw_err verr(struct validation_error *e, enum aigw_err code, const char *param,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum aigw_err verr(struct validation_error *e, enum aigw_err code, const char *param,
                          const char *fmt, ...)
{
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return code;
}

size_t utf8_codepoints(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Does pattern match text at t, comparing ASCII case-insensitively and letting
 * any run of white space in text match any run in pattern? */
static int deny_match_at(const unsigned char *t, const unsigned char *end, const unsigned char *p)
{
    while (*p) {
        if (is_space(*p)) {
            if (t >= end || !is_space(*t))
                return 0;
            while (*p && is_space(*p))
                p++;
            while (t < end && is_space(*t))
                t++;
            continue;
        }
        if (t >= end || tolower(*t) != tolower(*p))
            return 0;
        t++;
        p++;
    }
    return 1;
}

const char *validate_deny_match(const struct cfg *cfg, const char *text, size_t len)
{
    const unsigned char *t = (const unsigned char *)text, *end = t + len;
    for (size_t k = 0; k < cfg->validation.n_deny_patterns; k++) {
        const unsigned char *p = (const unsigned char *)cfg->validation.deny_patterns[k];
        while (*p && is_space(*p))
            p++;
        if (!*p)
            continue;
        int first = tolower(*p);
        for (const unsigned char *s = t; s < end; s++)
            if (tolower(*s) == first && deny_match_at(s, end, p))
                return cfg->validation.deny_patterns[k];
    }
    return NULL;
}

/* Checks one piece of message text: length bounds and deny patterns. */
static enum aigw_err check_text(const struct cfg *cfg, const char *s, size_t len, const char *param,
                                int allow_empty, struct chat_input *in, struct validation_error *e)
{
    size_t cps = utf8_codepoints(s, len);
    if (cps == 0 && !allow_empty)
        return verr(e, AIGW_ERR_INVALID_VALUE, param, "%s must not be empty.", param);
    if (cps > (size_t)cfg->validation.max_content_chars)
        return verr(e, AIGW_ERR_CONTENT_TOO_LONG, param,
                    "%s has %zu characters; at most %d are allowed.", param, cps,
                    cfg->validation.max_content_chars);
    if (validate_deny_match(cfg, s, len))
        return verr(e, AIGW_ERR_PROMPT_INJECTION, param,
                    "%s contains content that is not allowed (possible prompt injection).", param);
    in->prompt_bytes += len;
    return AIGW_OK;
}

/* Content parts whose text the rules read: chat's "text", and the Responses
 * API's "input_text" and "output_text" (earlier assistant turns). */
static int is_text_part(const char *type)
{
    return strcmp(type, "text") == 0 || strcmp(type, "input_text") == 0 ||
           strcmp(type, "output_text") == 0;
}

static enum aigw_err check_joined_parts(const struct cfg *cfg, json_object *content,
                                        const char *param, struct validation_error *e)
{
    struct buf joined = {0};
    size_t np = json_object_array_length(content);
    for (size_t j = 0; j < np; j++) {
        json_object *part = json_object_array_get_idx(content, j), *type, *text;
        if (json_object_object_get_ex(part, "type", &type) &&
            is_text_part(json_object_get_string(type)) &&
            json_object_object_get_ex(part, "text", &text)) {
            if (joined.len)
                buf_putc(&joined, ' ');
            buf_append(&joined, json_object_get_string(text),
                       (size_t)json_object_get_string_len(text));
        }
    }
    enum aigw_err r = AIGW_OK;
    size_t cps = utf8_codepoints(buf_cstr(&joined), joined.len);
    if (cps > (size_t)cfg->validation.max_content_chars)
        r = verr(e, AIGW_ERR_CONTENT_TOO_LONG, param,
                 "%s has %zu characters in its text parts; at most %d are allowed.", param, cps,
                 cfg->validation.max_content_chars);
    else if (validate_deny_match(cfg, buf_cstr(&joined), joined.len))
        r = verr(e, AIGW_ERR_PROMPT_INJECTION, param,
                 "%s contains content that is not allowed (possible prompt injection).", param);
    buf_free(&joined);
    return r;
}

/* One message's content, chat's or a Responses input item's: a string, or
 * content parts whose text parts are checked (apart and joined). */
static enum aigw_err check_item_content(const struct cfg *cfg, json_object *content,
                                        const char *param, int allow_empty, struct chat_input *in,
                                        struct validation_error *e)
{
    if (json_object_is_type(content, json_type_string))
        return check_text(cfg, json_object_get_string(content),
                          (size_t)json_object_get_string_len(content), param, allow_empty, in, e);
    if (!json_object_is_type(content, json_type_array))
        return verr(e, AIGW_ERR_INVALID_VALUE, param,
                    "%s must be a string or an array of content parts.", param);
    if (json_object_array_length(content) == 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, param, "%s must not be empty.", param);
    size_t np = json_object_array_length(content);
    for (size_t j = 0; j < np; j++) {
        json_object *part = json_object_array_get_idx(content, j), *type, *text;
        char pp[160];
        snprintf(pp, sizeof pp, "%s[%zu]", param, j);
        if (!json_object_is_type(part, json_type_object) ||
            !json_object_object_get_ex(part, "type", &type) ||
            !json_object_is_type(type, json_type_string))
            return verr(e, AIGW_ERR_INVALID_VALUE, pp, "%s must be an object with a type.", pp);
        if (!is_text_part(json_object_get_string(type)))
            continue; /* images, audio, files: forwarded as they are */
        snprintf(pp, sizeof pp, "%s[%zu].text", param, j);
        if (!json_object_object_get_ex(part, "text", &text) ||
            !json_object_is_type(text, json_type_string))
            return verr(e, AIGW_ERR_INVALID_VALUE, pp, "%s must be a string.", pp);
        enum aigw_err r =
            check_text(cfg, json_object_get_string(text), (size_t)json_object_get_string_len(text),
                       pp, allow_empty, in, e);
        if (r != AIGW_OK)
            return r;
    }
    return np > 1 ? check_joined_parts(cfg, content, param, e) : AIGW_OK;
}

static int role_allowed(const char *role, enum api_kind kind)
{
    static const char *const seed[] = {"system", "user", "assistant", NULL};
    static const char *const compat[] = {"system",    "user",     "assistant", "tool",
                                         "developer", "function", NULL};
    for (const char *const *r = kind == API_SEED_CHAT ? seed : compat; *r; r++)
        if (strcmp(role, *r) == 0)
            return 1;
    return 0;
}

static enum aigw_err check_messages(const struct cfg *cfg, json_object *root, struct chat_input *in,
                                    struct validation_error *e)
{
    json_object *msgs;
    if (!json_object_object_get_ex(root, "messages", &msgs))
        return verr(e, AIGW_ERR_MISSING_FIELD, "messages", "messages is required.");
    if (!json_object_is_type(msgs, json_type_array))
        return verr(e, AIGW_ERR_INVALID_VALUE, "messages",
                    "messages must be an array of messages.");
    size_t n = json_object_array_length(msgs);
    if (n == 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, "messages", "At least one message is required.");
    if (n > (size_t)cfg->validation.max_messages)
        return verr(e, AIGW_ERR_TOO_MANY_MESSAGES, "messages",
                    "Too many messages: %zu; at most %d are allowed.", n,
                    cfg->validation.max_messages);
    in->n_messages = n;
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(msgs, i), *role, *content;
        char param[96];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_object_is_type(m, json_type_object))
            return verr(e, AIGW_ERR_INVALID_VALUE, param,
                        "%s must be an object with role and content.", param);
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_object_object_get_ex(m, "role", &role))
            return verr(e, AIGW_ERR_MISSING_FIELD, param, "%s is required.", param);
        if (!json_object_is_type(role, json_type_string) ||
            !role_allowed(json_object_get_string(role), in->kind))
            return verr(e, AIGW_ERR_INVALID_VALUE, param, "%s must be one of %s.", param,
                        in->kind == API_SEED_CHAT ? "system, user, assistant"
                                                  : "system, user, assistant, tool, developer");
        const char *role_s = json_object_get_string(role);
        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (!json_object_object_get_ex(m, "content", &content) ||
            json_object_is_type(content, json_type_null)) {
            /* An assistant turn that only calls tools has no content. */
            if (in->kind != API_SEED_CHAT && strcmp(role_s, "assistant") == 0)
                continue;
            return verr(e, AIGW_ERR_MISSING_FIELD, param, "%s is required.", param);
        }
        if (json_object_is_type(content, json_type_string)) {
            enum aigw_err r = check_text(
                cfg, json_object_get_string(content), (size_t)json_object_get_string_len(content),
                param, in->kind != API_SEED_CHAT && strcmp(role_s, "assistant") == 0, in, e);
            if (r != AIGW_OK)
                return r;
            continue;
        }
        if (in->kind == API_SEED_CHAT || !json_object_is_type(content, json_type_array))
            return verr(e, AIGW_ERR_INVALID_VALUE, param, "%s must be a string%s.", param,
                        in->kind == API_SEED_CHAT ? "" : " or an array of content parts");
        enum aigw_err r = check_item_content(cfg, content, param, 0, in, e);
        if (r != AIGW_OK)
            return r;
    }
    return AIGW_OK;
}

/* Reads an optional number field within [lo, hi]; 1 present, 0 absent, -1 invalid. */
static int get_number(json_object *root, const char *key, double lo, double hi, double *out)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return -1;
    double d = json_object_get_double(v);
    if (!isfinite(d) || d < lo || d > hi)
        return -1;
    *out = d;
    return 1;
}

/* Reads an optional integer field within [lo, hi]; 1 present, 0 absent, -1 invalid. */
static int get_integer(json_object *root, const char *key, long lo, long hi, long *out)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (json_object_is_type(v, json_type_double)) {
        /* 100.0 is an integer to pydantic; 100.5 is not. */
        double d = json_object_get_double(v);
        if (!isfinite(d) || d != floor(d) || d < lo || d > hi)
            return -1;
        *out = (long)d;
        return 1;
    }
    if (!json_object_is_type(v, json_type_int))
        return -1;
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return -1;
    *out = (long)x;
    return 1;
}

/* No C0 or C1 control characters (U+0000-U+001F, U+007F-U+009F): they would
 * reach logs and terminals. */
static int printable_id(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
        if (c == 0xC2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
            (unsigned char)s[i + 1] <= 0x9F)
            return 0;
    }
    return 1;
}

static enum aigw_err check_user(json_object *root, const char *key, int required,
                                struct chat_input *in, struct validation_error *e)
{
    json_object *v;
    if (!json_object_object_get_ex(root, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required)
            return verr(e, AIGW_ERR_MISSING_FIELD, key, "%s is required.", key);
        return AIGW_OK;
    }
    if (!json_object_is_type(v, json_type_string))
        return verr(e, AIGW_ERR_INVALID_VALUE, key, "%s must be a string.", key);
    size_t len = (size_t)json_object_get_string_len(v);
    size_t cps = utf8_codepoints(json_object_get_string(v), len);
    if (cps < 1 || cps > USER_ID_MAX || !printable_id(json_object_get_string(v), len))
        return verr(e, AIGW_ERR_INVALID_VALUE, key, "%s must be 1 to %d printable characters.", key,
                    USER_ID_MAX);
    in->user_id = json_object_get_string(v);
    return AIGW_OK;
}

static enum aigw_err check_model(json_object *root, int required, struct chat_input *in,
                                 struct validation_error *e)
{
    json_object *v;
    if (!json_object_object_get_ex(root, "model", &v) || json_object_is_type(v, json_type_null)) {
        if (required)
            return verr(e, AIGW_ERR_MISSING_FIELD, "model", "model is required.");
        return AIGW_OK;
    }
    if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
        json_object_get_string_len(v) > 256)
        return verr(e, AIGW_ERR_INVALID_VALUE, "model", "model must be a non-empty string.");
    in->model = json_object_get_string(v);
    return AIGW_OK;
}

static enum aigw_err check_sampling(const struct cfg *cfg, json_object *root, struct chat_input *in,
                                    struct validation_error *e)
{
    double t;
    int r = get_number(root, "temperature", 0, 2, &t);
    if (r < 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, "temperature",
                    "temperature must be a number from 0 to 2.");
    if (r > 0)
        in->temperature = t;
    long mt;
    const char *keys[] = {"max_tokens", "max_completion_tokens"};
    for (int k = 0; k < 2; k++) {
        r = get_integer(root, keys[k], 1, cfg->validation.max_tokens, &mt);
        if (r < 0)
            return verr(e, AIGW_ERR_INVALID_VALUE, keys[k], "%s must be an integer from 1 to %d.",
                        keys[k], cfg->validation.max_tokens);
        if (r > 0)
            in->max_tokens = (int)mt;
    }
    return AIGW_OK;
}

/* n, the number of choices: OpenAI allows 1..128 (the stream relay keeps
 * one redaction buffer per choice). */
static enum aigw_err check_choices(json_object *root, struct validation_error *e)
{
    long n;
    if (get_integer(root, "n", 1, 128, &n) < 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, "n", "n must be an integer from 1 to 128.");
    return AIGW_OK;
}

static enum aigw_err check_stream(json_object *root, struct chat_input *in,
                                  struct validation_error *e)
{
    json_object *v, *opts, *iu;
    if (json_object_object_get_ex(root, "stream", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_boolean))
            return verr(e, AIGW_ERR_INVALID_VALUE, "stream", "stream must be true or false.");
        in->stream = json_object_get_boolean(v);
    }
    if (json_object_object_get_ex(root, "stream_options", &opts) &&
        !json_object_is_type(opts, json_type_null)) {
        if (!json_object_is_type(opts, json_type_object))
            return verr(e, AIGW_ERR_INVALID_VALUE, "stream_options",
                        "stream_options must be an object.");
        if (json_object_object_get_ex(opts, "include_usage", &iu)) {
            if (!json_object_is_type(iu, json_type_boolean))
                return verr(e, AIGW_ERR_INVALID_VALUE, "stream_options.include_usage",
                            "stream_options.include_usage must be true or false.");
            in->include_usage = json_object_get_boolean(iu);
        }
    }
    return AIGW_OK;
}

static enum aigw_err check_embeddings(const struct cfg *cfg, json_object *root,
                                      struct chat_input *in, struct validation_error *e)
{
    json_object *v;
    if (!json_object_object_get_ex(root, "input", &v) || json_object_is_type(v, json_type_null))
        return verr(e, AIGW_ERR_MISSING_FIELD, "input", "input is required.");
    if (json_object_is_type(v, json_type_string))
        return check_text(cfg, json_object_get_string(v), (size_t)json_object_get_string_len(v),
                          "input", 0, in, e);
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, "input",
                    "input must be a string or a non-empty array of strings or token arrays.");
    size_t n = json_object_array_length(v);
    if (n > 2048)
        return verr(e, AIGW_ERR_INVALID_VALUE, "input", "input may hold at most 2048 items.");
    for (size_t i = 0; i < n; i++) {
        json_object *item = json_object_array_get_idx(v, i);
        char param[48];
        snprintf(param, sizeof param, "input[%zu]", i);
        if (json_object_is_type(item, json_type_string)) {
            enum aigw_err r = check_text(cfg, json_object_get_string(item),
                                         (size_t)json_object_get_string_len(item), param, 0, in, e);
            if (r != AIGW_OK)
                return r;
        } else if (json_object_is_type(item, json_type_int)) {
            in->prompt_bytes += 4; /* a token id: one token */
        } else if (json_object_is_type(item, json_type_array)) {
            in->prompt_bytes += 4 * json_object_array_length(item);
        } else
            return verr(e, AIGW_ERR_INVALID_VALUE, param,
                        "%s must be a string or an array of token ids.", param);
    }
    return AIGW_OK;
}

/* input: a string, or a list of items. Message items (those with a role) are
 * checked like chat messages; other items (function call outputs, item
 * references, reasoning) are the backend's to judge and pass through. */
static enum aigw_err check_response_input(const struct cfg *cfg, json_object *root,
                                          struct chat_input *in, struct validation_error *e)
{
    static const char *const roles[] = {"user", "assistant", "system", "developer", NULL};
    json_object *input;
    if (!json_object_object_get_ex(root, "input", &input) ||
        json_object_is_type(input, json_type_null))
        return verr(e, AIGW_ERR_MISSING_FIELD, "input", "input is required.");
    if (json_object_is_type(input, json_type_string)) {
        in->n_messages = 1;
        return check_text(cfg, json_object_get_string(input),
                          (size_t)json_object_get_string_len(input), "input", 0, in, e);
    }
    if (!json_object_is_type(input, json_type_array) || json_object_array_length(input) == 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, "input",
                    "input must be a string or a non-empty array of input items.");
    size_t n = json_object_array_length(input);
    if (n > (size_t)cfg->validation.max_messages)
        return verr(e, AIGW_ERR_TOO_MANY_MESSAGES, "input",
                    "Too many input items: %zu; at most %d are allowed.", n,
                    cfg->validation.max_messages);
    in->n_messages = n;
    for (size_t i = 0; i < n; i++) {
        json_object *item = json_object_array_get_idx(input, i), *role, *type, *content;
        char param[96];
        snprintf(param, sizeof param, "input[%zu]", i);
        if (!json_object_is_type(item, json_type_object))
            return verr(e, AIGW_ERR_INVALID_VALUE, param,
                        "%s must be an object (a message with role and content, or an item "
                        "with a type).",
                        param);
        if (!json_object_object_get_ex(item, "role", &role)) {
            if (json_object_object_get_ex(item, "type", &type) &&
                json_object_is_type(type, json_type_string))
                continue;
            return verr(e, AIGW_ERR_MISSING_FIELD, param, "%s needs a role or a type.", param);
        }
        snprintf(param, sizeof param, "input[%zu].role", i);
        const char *r =
            json_object_is_type(role, json_type_string) ? json_object_get_string(role) : "";
        const char *const *ok = roles;
        while (*ok && strcmp(*ok, r) != 0)
            ok++;
        if (!*ok)
            return verr(e, AIGW_ERR_INVALID_VALUE, param,
                        "%s must be one of user, assistant, system, developer.", param);
        snprintf(param, sizeof param, "input[%zu].content", i);
        if (!json_object_object_get_ex(item, "content", &content) ||
            json_object_is_type(content, json_type_null))
            return verr(e, AIGW_ERR_MISSING_FIELD, param, "%s is required.", param);
        enum aigw_err er =
            check_item_content(cfg, content, param, strcmp(r, "assistant") == 0, in, e);
        if (er != AIGW_OK)
            return er;
    }
    return AIGW_OK;
}

/* What the gateway reads of a Responses request; every other field (tools,
 * reasoning, text.format, include, ...) passes through unchanged. */
static enum aigw_err check_responses(const struct cfg *cfg, json_object *root,
                                     struct chat_input *in, struct validation_error *e)
{
    enum aigw_err r = check_response_input(cfg, root, in, e);
    if (r != AIGW_OK)
        return r;
    json_object *v;
    if (json_object_object_get_ex(root, "instructions", &v) &&
        !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_string))
            return verr(e, AIGW_ERR_INVALID_VALUE, "instructions",
                        "instructions must be a string.");
        if ((r = check_text(cfg, json_object_get_string(v), (size_t)json_object_get_string_len(v),
                            "instructions", 1, in, e)) != AIGW_OK)
            return r;
    }
    double t;
    if (get_number(root, "temperature", 0, 2, &t) < 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, "temperature",
                    "temperature must be a number from 0 to 2.");
    long mt;
    int got = get_integer(root, "max_output_tokens", 1, cfg->validation.max_tokens, &mt);
    if (got < 0)
        return verr(e, AIGW_ERR_INVALID_VALUE, "max_output_tokens",
                    "max_output_tokens must be an integer from 1 to %d.",
                    cfg->validation.max_tokens);
    if (got > 0)
        in->max_tokens = (int)mt;
    if (json_object_object_get_ex(root, "previous_response_id", &v) &&
        !json_object_is_type(v, json_type_null)) {
        const char *id = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
        size_t len = strlen(id);
        if (len == 0 || len >= 128 ||
            strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") != len)
            return verr(e, AIGW_ERR_INVALID_VALUE, "previous_response_id",
                        "previous_response_id must be the id of an earlier response (resp_...).");
        in->previous_response_id = id;
    }
    return check_stream(root, in, e);
}

enum aigw_err validate_body(const struct cfg *cfg, enum api_kind kind, const char *body, size_t len,
                            struct chat_input *in, struct validation_error *err)
{
    memset(in, 0, sizeof *in);
    memset(err, 0, sizeof *err);
    in->kind = kind;
    if (len == 0)
        return verr(err, AIGW_ERR_INVALID_JSON, "",
                    "The request body is empty; send a JSON object.");
    struct json_strict_error jerr = {0};
    json_object *root = json_strict_parse(body, len, cfg->validation.max_depth, &jerr);
    if (!root)
        return verr(err, AIGW_ERR_INVALID_JSON, "",
                    "The request body is not valid JSON: %s at byte %zu.", jerr.what, jerr.offset);
    in->root = root;
    enum aigw_err r = AIGW_OK;
    if (!json_object_is_type(root, json_type_object)) {
        r = verr(err, AIGW_ERR_INVALID_JSON, "", "The request body must be a JSON object.");
        goto out;
    }
    switch (kind) {
    case API_SEED_CHAT:
        in->temperature = 0.7; /* the seed's defaults */
        in->max_tokens = 1000;
        if ((r = check_messages(cfg, root, in, err)) != AIGW_OK ||
            (r = check_sampling(cfg, root, in, err)) != AIGW_OK ||
            (r = check_user(root, "user_id", 1, in, err)) != AIGW_OK ||
            (r = check_model(root, 0, in, err)) != AIGW_OK)
            goto out;
        break;
    case API_CHAT_COMPLETIONS:
        in->temperature = -1;
        if ((r = check_messages(cfg, root, in, err)) != AIGW_OK ||
            (r = check_sampling(cfg, root, in, err)) != AIGW_OK ||
            (r = check_stream(root, in, err)) != AIGW_OK ||
            (r = check_choices(root, err)) != AIGW_OK ||
            (r = check_user(root, "user", 0, in, err)) != AIGW_OK ||
            (r = check_model(root, 0, in, err)) != AIGW_OK)
            goto out;
        break;
    case API_RESPONSES:
        in->temperature = -1;
        if ((r = check_responses(cfg, root, in, err)) != AIGW_OK ||
            (r = check_user(root, "user", 0, in, err)) != AIGW_OK ||
            (r = check_model(root, 0, in, err)) != AIGW_OK)
            goto out;
        break;
    case API_EMBEDDINGS:
        if ((r = check_embeddings(cfg, root, in, err)) != AIGW_OK ||
            (r = check_user(root, "user", 0, in, err)) != AIGW_OK ||
            (r = check_model(root, 0, in, err)) != AIGW_OK)
            goto out;
        break;
    case API_NONE:
        r = verr(err, AIGW_ERR_INVALID_VALUE, "", "This endpoint takes no request body.");
        break;
    }
out:
    if (r != AIGW_OK)
        chat_input_clear(in);
    return r;
}

long validate_prompt_token_estimate(const struct chat_input *in)
{
    /* Real tokenizers give about four bytes of English per token; two bytes per
     * token errs high for every script, plus the per-message framing. */
    return (long)(in->prompt_bytes / 2) + 4 * (long)in->n_messages + 3 + in->context_tokens;
}

void chat_input_clear(struct chat_input *in)
{
    json_object_put(in->root);
    memset(in, 0, sizeof *in);
}
