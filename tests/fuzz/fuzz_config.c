/*
 * fuzz_config.c - libFuzzer target for app/config.c (cfg_load_string).
 *
 * The configuration is operator input, but it is read by every process at
 * start and by `aigw check-config`, so a malformed file must be refused with
 * problems listed, never crash or leak. When a text loads, the promises the
 * rest of the program relies on are checked: every default filled in, the
 * values in range, the default model served, and the redaction patterns
 * compile in sanitize.c exactly as config.c checked them.
 *
 * Input: the configuration text (cut at the first NUL, as cfg_load refuses
 * NUL bytes before calling cfg_load_string).
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "sanitize.h"

static void check_loaded(const struct cfg *c)
{
    FUZZ_CHECK(c->path && strcmp(c->path, "fuzz.json") == 0, "path not set");
    FUZZ_CHECK(c->environment && c->database.path && c->database.synchronous, "defaults missing");
    FUZZ_CHECK(c->n_backends >= 1 && c->n_backends <= CFG_MAX_BACKENDS, "%zu backends",
               c->n_backends);
    for (size_t i = 0; i < c->n_backends; i++) {
        const struct cfg_backend *b = &c->backends[i];
        FUZZ_CHECK(b->name && b->name[0], "backends[%zu] without a name", i);
        FUZZ_CHECK(b->url &&
                       (strncmp(b->url, "https://", 8) == 0 || strncmp(b->url, "http://", 7) == 0),
                   "backends[%zu].url %s", i, b->url ? b->url : "(null)");
        FUZZ_CHECK(b->n_deployments >= 1, "backends[%zu] serves no model", i);
        for (size_t j = 0; j < b->n_deployments; j++)
            FUZZ_CHECK(b->deployments[j].model && b->deployments[j].deployment &&
                           b->deployments[j].deployment[0],
                       "backends[%zu].deployments[%zu] incomplete", i, j);
        FUZZ_CHECK(b->weight >= 1 && b->priority >= 0, "backends[%zu] weight/priority", i);
        FUZZ_CHECK(b->timeout_s >= 0.1 && b->connect_timeout_s >= 0.1, "backends[%zu] timeouts", i);
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(b->name, c->backends[j].name) != 0, "backend name %s twice", b->name);
    }
    FUZZ_CHECK(c->default_model, "no default model");
    int served = 0;
    for (size_t i = 0; i < c->n_backends; i++)
        served |= cfg_backend_deployment(&c->backends[i], c->default_model) != NULL;
    FUZZ_CHECK(served, "default model %s not served", c->default_model);
    FUZZ_CHECK(c->validation.max_depth >= 2 && c->validation.max_depth <= 64, "max_depth %d",
               c->validation.max_depth);
    FUZZ_CHECK(c->validation.max_messages >= 1 && c->validation.max_content_chars >= 1 &&
                   c->validation.max_tokens >= 1,
               "validation limits");
    FUZZ_CHECK(c->redaction.max_match_chars >= 64 && c->redaction.max_match_chars <= 4096,
               "max_match_chars %d", c->redaction.max_match_chars);
    FUZZ_CHECK(c->redaction.replacement, "no replacement");
    FUZZ_CHECK(c->limits.window_s >= 1, "window_s %ld", c->limits.window_s);
    FUZZ_CHECK(c->retry.max_attempts >= 1, "max_attempts %d", c->retry.max_attempts);
    for (size_t i = 0; i < c->validation.n_deny_patterns; i++)
        FUZZ_CHECK(c->validation.deny_patterns[i][0], "empty deny pattern");
    FUZZ_CHECK(c->auth.user_claim && c->auth.on_behalf_of_role, "auth defaults missing");
    if (c->auth.jwt_issuer || c->auth.jwt_audience || c->auth.jwt_hs256_secret_ref ||
        c->auth.jwt_jwks_file || c->auth.jwt_openid_config_url)
        FUZZ_CHECK(c->auth.jwt_issuer && c->auth.jwt_audience,
                   "auth.jwt without issuer and audience");

    /* config.c promised that the patterns compile: the worker must agree. */
    struct redactor *r = redactor_new(c);
    FUZZ_CHECK(r, "a configuration that loaded has redaction patterns sanitize.c cannot compile");
    redactor_free(r);
}

/* Many quantifiers: glibc's regcomp copies the tree for each stacked one
 * ("a+++..."), so such patterns take exponential time and memory. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    struct buf problems = {0}, warnings = {0};
    struct cfg *c = cfg_load_string("fuzz.json", text, &problems, &warnings);
    if (c) {
        FUZZ_CHECK(problems.len == 0, "loaded with problems: %s", buf_cstr(&problems));
        check_loaded(c);
        cfg_free(c);
    } else {
        FUZZ_CHECK(problems.len > 0, "refused without naming a problem");
    }
    buf_free(&problems);
    buf_free(&warnings);
    free(text);
    return 0;
}
