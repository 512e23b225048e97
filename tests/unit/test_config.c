/*
 * test_config.c - unit tests for app/config.c: loading and checking aigw.json.
 *
 * Covers what an operator relies on when running `aigw check-config`: a
 * minimal file loads with every documented default (the README's Configuration section);
 * every wrong type, out-of-range value and unknown key is reported as
 * "FILE: json.path: message", all problems of a file at once; backends need
 * deployments and unique names; redaction patterns must compile; a literal
 * secret is a warning, not an error, while env:/file:/keyvault: references
 * are accepted silently; cfg_backend_deployment, cfg_period_name,
 * cfg_default_path and cfg_load from a file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"

#define BACKEND_EAST                                                                               \
    "{\"name\": \"east\", \"url\": \"https://east.example.com\", \"api_key\": \"env:EAST_KEY\", "  \
    "\"deployments\": {\"gpt-4o\": \"gpt4o-east\"}"

static const char *const MIN_CONFIG = "{\"backends\": [" BACKEND_EAST "}]}";

static struct buf problems, warnings;

static int reset_bufs(void **state)
{
    (void)state;
    buf_free(&problems);
    buf_free(&warnings);
    unsetenv("AIGW_ENV");
    return 0;
}

static struct cfg *load(const char *text)
{
    buf_reset(&problems);
    buf_reset(&warnings);
    return cfg_load_string("test.json", text, &problems, &warnings);
}

/* Loads {TOP "backends": [{east BACKEND}]}: TOP is top-level members ending in
 * a comma (or ""), BACKEND extra members of backend 0 starting with a comma. */
static struct cfg *load_with(const char *top, const char *backend)
{
    struct buf t = {0};
    buf_printf(&t, "{%s \"backends\": [" BACKEND_EAST "%s}]}", top, backend);
    struct cfg *c = load(buf_cstr(&t));
    buf_free(&t);
    return c;
}

static int count_lines(struct buf *b)
{
    int n = 0;
    for (size_t i = 0; i < b->len; i++)
        n += b->data[i] == '\n';
    return n;
}

/* The load failed and problems holds the line "test.json: PATH: ..." with want in it. */
static void expect_problem(struct cfg *c, const char *path, const char *want)
{
    if (c)
        cfg_free(c);
    char prefix[256];
    snprintf(prefix, sizeof prefix, "test.json: %s: ", path);
    const char *p = strstr(buf_cstr(&problems), prefix);
    if (c || !p || (want && !strstr(p, want)))
        print_error("wanted a problem '%s...%s', got:\n%s", prefix, want ? want : "",
                    buf_cstr(&problems));
    assert_null(c);
    assert_non_null(p);
    /* the problem is one line starting at a line start */
    assert_true(p == buf_cstr(&problems) || p[-1] == '\n');
    if (want) {
        const char *eol = strchr(p, '\n');
        const char *w = strstr(p, want);
        assert_non_null(eol);
        assert_non_null(w);
        assert_true(w < eol);
    }
}

/* --- defaults ------------------------------------------------------------------- */

static void test_minimal_config_has_every_default(void **state)
{
    (void)state;
    struct cfg *c = load(MIN_CONFIG);
    if (!c)
        print_error("%s", buf_cstr(&problems));
    assert_non_null(c);
    assert_int_equal(problems.len, 0);
    assert_int_equal(warnings.len, 0);
    assert_string_equal(c->path, "test.json");
    assert_string_equal(c->environment, "production");

    assert_non_null(c->database.path); /* where is not part of the contract */
    assert_string_equal(c->database.synchronous, "normal");
    assert_true(c->database.busy_timeout_ms > 0); /* the store: busy_timeout set */

    assert_int_equal(c->auth.enabled, 1);
    assert_int_equal(c->auth.api_keys, 1);
    assert_null(c->auth.jwt_issuer);
    assert_null(c->auth.jwt_audience);
    assert_null(c->auth.jwt_openid_config_url);
    assert_null(c->auth.jwt_jwks_file);
    assert_null(c->auth.jwt_hs256_secret_ref);
    assert_non_null(c->auth.user_claim);
    assert_int_equal(c->auth.leeway_s, 60); /* the README's defaults */
    assert_int_equal(c->auth.n_required_roles, 1);
    assert_string_equal(c->auth.required_roles[0], "AI.User");
    assert_string_equal(c->auth.on_behalf_of_role, "AI.OnBehalfOf");
    assert_string_equal(c->auth.admin_role, "AI.Admin");

    assert_int_equal(c->limits.requests_per_window, 100);
    assert_int_equal(c->limits.window_s, 60);
    assert_int_equal(c->limits.tokens_per_minute, 0);
    assert_int_equal(c->limits.default_token_budget, 10000);
    assert_int_equal(c->limits.budget_period, PERIOD_DAY);

    assert_int_equal(c->validation.max_body_bytes, 1048576);
    assert_int_equal(c->validation.max_depth, 64);
    assert_int_equal(c->validation.max_messages, 50);
    assert_int_equal(c->validation.max_content_chars, 32000);
    assert_int_equal(c->validation.max_tokens, 4096);
    assert_int_equal(c->validation.n_deny_patterns, 3);
    assert_string_equal(c->validation.deny_patterns[0], "ignore previous");
    assert_string_equal(c->validation.deny_patterns[1], "disregard instructions");
    assert_string_equal(c->validation.deny_patterns[2], "you are now");

    assert_int_equal(c->redaction.n_patterns, 1);
    assert_string_equal(c->redaction.patterns[0], "sk-[a-zA-Z0-9]{48}");
    assert_string_equal(c->redaction.replacement, "[REDACTED_KEY]");
    assert_true(c->redaction.max_match_chars >= 51); /* holds a whole seed key */

    assert_int_equal(c->n_backends, 1);
    const struct cfg_backend *b = &c->backends[0];
    assert_string_equal(b->name, "east");
    assert_int_equal(b->type, BACKEND_AZURE);
    assert_string_equal(b->url, "https://east.example.com");
    assert_string_equal(b->api_key_ref, "env:EAST_KEY");
    assert_int_equal(b->priority, 1);
    assert_int_equal(b->weight, 1);
    assert_null(b->api_version);
    assert_int_equal(b->n_deployments, 1);
    assert_string_equal(b->deployments[0].model, "gpt-4o");
    assert_string_equal(b->deployments[0].deployment, "gpt4o-east");
    assert_true(b->timeout_s > 0);
    assert_true(b->connect_timeout_s > 0);
    assert_string_equal(c->default_model, "gpt-4o");

    assert_true(c->retry.max_attempts >= 1);
    assert_true(c->retry.max_delay_ms >= c->retry.base_delay_ms);
    assert_true(c->retry.deadline_s > 0);

    assert_int_equal(c->breaker.failure_threshold, 5);
    assert_float_equal(c->breaker.recovery_timeout_s, 30.0, 1e-9);
    assert_int_equal(c->breaker.half_open_max_calls, 3);

    assert_int_equal(c->audit.log_bodies, LOG_BODIES_REDACTED);
    assert_true(c->audit.retention_days > 0);
    assert_null(c->telemetry.otlp_endpoint);
    assert_string_equal(c->telemetry.service_name, "aigw");
    assert_true(c->secrets.cache_ttl_s > 0);
    assert_string_equal(c->secrets.keyvault.auth, "managed_identity");
    assert_null(c->secrets.keyvault.client_secret_ref);
    cfg_free(c);
}

static void test_keyvault_client_credentials(void **state)
{
    (void)state;
    struct cfg *c = load_with(
        "\"secrets\": {\"cache_ttl_s\": 0, \"keyvault\": {\"auth\": \"client_credentials\", "
        "\"tenant_id\": \"t\", \"client_id\": \"c\", \"client_secret\": \"env:KV_SECRET\"}},",
        "");
    if (!c)
        print_error("%s", buf_cstr(&problems));
    assert_non_null(c);
    assert_int_equal(warnings.len, 0);
    assert_int_equal(c->secrets.cache_ttl_s, 0);
    assert_string_equal(c->secrets.keyvault.auth, "client_credentials");
    assert_string_equal(c->secrets.keyvault.client_secret_ref, "env:KV_SECRET");
    cfg_free(c);
    /* a literal client secret works but is warned about, without echoing it */
    c = load_with(
        "\"secrets\": {\"keyvault\": {\"auth\": \"client_credentials\", \"tenant_id\": \"t\", "
        "\"client_id\": \"c\", \"client_secret\": \"s3cr3t-value\"}},",
        "");
    assert_non_null(c);
    assert_non_null(strstr(buf_cstr(&warnings), "test.json: secrets.keyvault.client_secret: "));
    assert_null(strstr(buf_cstr(&warnings), "s3cr3t-value"));
    cfg_free(c);
}

static void test_environment_from_aigw_env(void **state)
{
    (void)state;
    setenv("AIGW_ENV", "staging", 1);
    struct cfg *c = load(MIN_CONFIG);
    assert_non_null(c);
    assert_string_equal(c->environment, "staging");
    cfg_free(c);
    /* the file wins over the environment variable */
    c = load_with("\"environment\": \"dev\",", "");
    assert_non_null(c);
    assert_string_equal(c->environment, "dev");
    cfg_free(c);
}

static void test_full_config_values_are_read(void **state)
{
    (void)state;
    const char *text =
        "{\n"
        "  \"environment\": \"prod-eu\",\n"
        "  \"database\": {\"path\": \"/tmp/x.db\", \"synchronous\": \"full\", \"busy_timeout_ms\": "
        "250},\n"
        "  \"auth\": {\"enabled\": false, \"api_keys\": false, \"on_behalf_of_role\": \"Svc\",\n"
        "    \"admin_role\": \"Gateway.Operator\",\n"
        "    \"jwt\": {\"issuer\": \"https://iss\", \"audience\": \"api://aigw\", \"jwks_file\": "
        "\"/etc/jwks.json\",\n"
        "      \"required_roles\": [\"A\", \"B\"], \"user_claim\": \"oid\", \"leeway_s\": 0}},\n"
        "  \"limits\": {\"requests_per_window\": 7, \"window_s\": 3600, \"tokens_per_minute\": "
        "90000,\n"
        "    \"default_token_budget\": 0, \"budget_period\": \"month\"},\n"
        "  \"validation\": {\"max_body_bytes\": 64, \"max_depth\": 2, \"max_messages\": 10000,\n"
        "    \"max_content_chars\": 1, \"max_tokens\": 1, \"deny_patterns\": []},\n"
        "  \"redaction\": {\"patterns\": [\"sk-[a-zA-Z0-9]{48}\", \"ghp_[A-Za-z0-9]{36}\"],\n"
        "    \"replacement\": \"***\", \"max_match_chars\": 4096},\n"
        "  \"backends\": [\n"
        "    {\"name\": \"east\", \"type\": \"azure\", \"url\": \"https://east.example.com/\", "
        "\"api_key\": \"file:/run/k\",\n"
        "     \"priority\": 0, \"weight\": 1000, \"api_version\": \"2024-10-21\", \"timeout_s\": "
        "0.1,\n"
        "     \"connect_timeout_s\": 600, \"deployments\": {\"gpt-4o\": \"d1\", "
        "\"text-embedding-3-small\": \"d2\"}},\n"
        "    {\"name\": \"oai\", \"type\": \"openai\", \"url\": \"http://127.0.0.1:9/v1\",\n"
        "     \"api_key\": \"keyvault:https://myvault.vault.azure.net/secrets/oai-${env}\", "
        "\"priority\": 1000,\n"
        "     \"deployments\": {\"gpt-4o\": \"gpt-4o-2024-08-06\"}}\n"
        "  ],\n"
        "  \"default_model\": \"text-embedding-3-small\",\n"
        "  \"retry\": {\"max_attempts\": 20, \"base_delay_ms\": 0, \"max_delay_ms\": 600000, "
        "\"deadline_s\": 3600},\n"
        "  \"circuit_breaker\": {\"failure_threshold\": 1, \"recovery_timeout_s\": 0.5, "
        "\"half_open_max_calls\": 1000},\n"
        "  \"audit\": {\"log_bodies\": \"full\", \"retention_days\": 0},\n"
        "  \"telemetry\": {\"otlp_endpoint\": \"http://127.0.0.1:4318\", \"service_name\": "
        "\"gw\"}\n"
        "}\n";
    struct cfg *c = load(text);
    if (!c)
        print_error("%s", buf_cstr(&problems));
    assert_non_null(c);
    assert_int_equal(warnings.len, 0);
    assert_string_equal(c->environment, "prod-eu");
    assert_string_equal(c->database.synchronous, "full");
    assert_int_equal(c->database.busy_timeout_ms, 250);
    assert_int_equal(c->auth.enabled, 0);
    assert_int_equal(c->auth.api_keys, 0);
    assert_string_equal(c->auth.on_behalf_of_role, "Svc");
    assert_string_equal(c->auth.admin_role, "Gateway.Operator");
    assert_string_equal(c->auth.jwt_issuer, "https://iss");
    assert_string_equal(c->auth.jwt_jwks_file, "/etc/jwks.json");
    assert_int_equal(c->auth.n_required_roles, 2);
    assert_string_equal(c->auth.required_roles[1], "B");
    assert_string_equal(c->auth.user_claim, "oid");
    assert_int_equal(c->auth.leeway_s, 0);
    assert_int_equal(c->limits.requests_per_window, 7);
    assert_int_equal(c->limits.window_s, 3600);
    assert_int_equal(c->limits.tokens_per_minute, 90000);
    assert_int_equal(c->limits.default_token_budget, 0);
    assert_int_equal(c->limits.budget_period, PERIOD_MONTH);
    assert_int_equal(c->validation.max_body_bytes, 64);
    assert_int_equal(c->validation.max_depth, 2);
    assert_int_equal(c->validation.max_messages, 10000);
    assert_int_equal(c->validation.n_deny_patterns, 0); /* an empty list turns them off */
    assert_int_equal(c->redaction.n_patterns, 2);
    assert_string_equal(c->redaction.replacement, "***");
    assert_int_equal(c->redaction.max_match_chars, 4096);
    assert_int_equal(c->n_backends, 2);
    assert_string_equal(c->backends[0].url, "https://east.example.com"); /* no trailing slash */
    assert_int_equal(c->backends[0].priority, 0);
    assert_int_equal(c->backends[0].weight, 1000);
    assert_string_equal(c->backends[0].api_version, "2024-10-21");
    assert_float_equal(c->backends[0].timeout_s, 0.1, 1e-12);
    assert_int_equal(c->backends[0].n_deployments, 2);
    assert_int_equal(c->backends[1].type, BACKEND_OPENAI);
    assert_int_equal(c->backends[1].priority, 1000);
    assert_string_equal(c->default_model, "text-embedding-3-small");
    assert_int_equal(c->retry.max_attempts, 20);
    assert_int_equal(c->breaker.failure_threshold, 1);
    assert_float_equal(c->breaker.recovery_timeout_s, 0.5, 1e-12);
    assert_int_equal(c->breaker.half_open_max_calls, 1000);
    assert_int_equal(c->audit.log_bodies, LOG_BODIES_FULL);
    assert_string_equal(c->telemetry.otlp_endpoint, "http://127.0.0.1:4318");
    assert_string_equal(c->telemetry.service_name, "gw");
    cfg_free(c);
}

static void test_budget_periods_and_names(void **state)
{
    (void)state;
    const char *names[] = {"day", "month", "total"};
    const enum budget_period want[] = {PERIOD_DAY, PERIOD_MONTH, PERIOD_TOTAL};
    for (int i = 0; i < 3; i++) {
        char top[96];
        snprintf(top, sizeof top, "\"limits\": {\"budget_period\": \"%s\"},", names[i]);
        struct cfg *c = load_with(top, "");
        assert_non_null(c);
        assert_int_equal(c->limits.budget_period, want[i]);
        assert_string_equal(cfg_period_name(c->limits.budget_period), names[i]);
        cfg_free(c);
    }
}

/* --- problems named by JSON path ------------------------------------------------ */

struct bad_case {
    const char *top;     /* top-level members, ending in a comma */
    const char *backend; /* extra members of backends[0], starting with a comma */
    const char *path;    /* the JSON path the problem must name */
    const char *want;    /* a word of the message */
};

static const struct bad_case bad_cases[] = {
    {"\"foo\": 1,", "", "foo", "unknown key"},
    {"\"limits\": 5,", "", "limits", "object"},
    {"\"limits\": {\"request_per_window\": 5},", "", "limits.request_per_window", "unknown key"},
    {"\"limits\": {\"requests_per_window\": -1},", "", "limits.requests_per_window", "integer"},
    {"\"limits\": {\"requests_per_window\": \"100\"},", "", "limits.requests_per_window",
     "integer"},
    {"\"limits\": {\"window_s\": 0},", "", "limits.window_s", "integer"},
    {"\"limits\": {\"window_s\": 60.5},", "", "limits.window_s", "integer"},
    {"\"limits\": {\"tokens_per_minute\": -5},", "", "limits.tokens_per_minute", "integer"},
    {"\"limits\": {\"default_token_budget\": -1},", "", "limits.default_token_budget", "integer"},
    {"\"limits\": {\"budget_period\": \"week\"},", "", "limits.budget_period", "month"},
    {"\"limits\": {\"budget_period\": \"Day\"},", "", "limits.budget_period", "day"},
    {"\"limits\": {\"budget_period\": 1},", "", "limits.budget_period", "string"},
    {"\"auth\": {\"enabled\": \"yes\"},", "", "auth.enabled", "true or false"},
    {"\"auth\": {\"jwt\": true},", "", "auth.jwt", "object"},
    {"\"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\"}},", "", "auth.jwt",
     "hs256_secret"},
    {"\"auth\": {\"jwt\": {\"hs256_secret\": \"env:S\"}},", "", "auth.jwt", "issuer and audience"},
    {"\"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\", \"jwks_file\": \"/j\", "
     "\"leeway_s\": -1}},",
     "", "auth.jwt.leeway_s", "integer"},
    {"\"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\", \"jwks_file\": \"/j\", "
     "\"algs\": []}},",
     "", "auth.jwt.algs", "unknown key"},
    {"\"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\", \"jwks_file\": \"/j\", "
     "\"required_roles\": \"A\"}},",
     "", "auth.jwt.required_roles", "array"},
    {"\"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\", \"jwks_file\": \"/j\", "
     "\"required_roles\": [\"A\", 5]}},",
     "", "auth.jwt.required_roles[1]", "non-empty string"},
    {"\"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\", \"hs256_secret\": "
     "\"keyvault:vault/s\"}},",
     "", "auth.jwt.hs256_secret", "keyvault"},
    {"\"auth\": {\"api_key\": true},", "", "auth.api_key", "unknown key"},
    {"\"database\": {\"synchronous\": \"extra\"},", "", "database.synchronous", "normal"},
    {"\"database\": {\"busy_timeout_ms\": -1},", "", "database.busy_timeout_ms", "integer"},
    {"\"database\": {\"file\": \"x\"},", "", "database.file", "unknown key"},
    {"\"validation\": {\"max_messages\": 0},", "", "validation.max_messages", "integer"},
    {"\"validation\": {\"max_depth\": 65},", "", "validation.max_depth", "integer"},
    {"\"validation\": {\"max_body_bytes\": 10},", "", "validation.max_body_bytes", "integer"},
    {"\"validation\": {\"max_content_chars\": 0},", "", "validation.max_content_chars", "integer"},
    {"\"validation\": {\"max_tokens\": 0},", "", "validation.max_tokens", "integer"},
    {"\"validation\": {\"deny_patterns\": \"ignore\"},", "", "validation.deny_patterns", "array"},
    {"\"validation\": {\"deny_patterns\": [\"ok\", \"\"]},", "", "validation.deny_patterns[1]",
     "non-empty"},
    {"\"redaction\": {\"patterns\": [\"sk-[a-z\"]},", "", "redaction.patterns[0]",
     "regular expression"},
    {"\"redaction\": {\"patterns\": [\"ok\", \"(unclosed\"]},", "", "redaction.patterns[1]",
     "regular expression"},
    {"\"redaction\": {\"replacement\": 0},", "", "redaction.replacement", "string"},
    {"\"redaction\": {\"max_match_chars\": 4},", "", "redaction.max_match_chars", "integer"},
    {"\"retry\": {\"max_attempts\": 0},", "", "retry.max_attempts", "integer"},
    {"\"retry\": {\"deadline_s\": 0},", "", "retry.deadline_s", "number"},
    {"\"retry\": {\"deadline_s\": \"10\"},", "", "retry.deadline_s", "number"},
    {"\"circuit_breaker\": {\"failure_threshold\": 0},", "", "circuit_breaker.failure_threshold",
     "integer"},
    {"\"circuit_breaker\": {\"recovery_timeout_s\": -1},", "", "circuit_breaker.recovery_timeout_s",
     "number"},
    {"\"circuit_breaker\": {\"half_open_max_calls\": 0},", "",
     "circuit_breaker.half_open_max_calls", "integer"},
    {"\"circuit_breaker\": {\"threshold\": 3},", "", "circuit_breaker.threshold", "unknown key"},
    {"\"audit\": {\"log_bodies\": \"some\"},", "", "audit.log_bodies", "redacted"},
    {"\"audit\": {\"retention_days\": -1},", "", "audit.retention_days", "integer"},
    {"\"telemetry\": {\"otlp\": \"x\"},", "", "telemetry.otlp", "unknown key"},
    {"\"environment\": 5,", "", "environment", "string"},
    {"\"default_model\": [],", "", "default_model", "string"},
    {"\"telemetry\": {\"otlp_endpoint\": \"localhost:4318\"},", "", "telemetry.otlp_endpoint",
     "http"},
    {"\"secrets\": 1,", "", "secrets", "object"},
    {"\"secrets\": {\"ttl\": 1},", "", "secrets.ttl", "unknown key"},
    {"\"secrets\": {\"cache_ttl_s\": -1},", "", "secrets.cache_ttl_s", "integer"},
    {"\"secrets\": {\"keyvault\": {\"auth\": \"password\"}},", "", "secrets.keyvault.auth",
     "managed_identity"},
    {"\"secrets\": {\"keyvault\": {\"auth\": \"client_credentials\", \"tenant_id\": \"t\"}},", "",
     "secrets.keyvault", "client_id"},
    {"\"secrets\": {\"keyvault\": {\"client_secret\": "
     "\"keyvault:https://myvault.vault.azure.net/secrets/s\"}},",
     "", "secrets.keyvault.client_secret", "env:"},
    {"\"secrets\": {\"keyvault\": {\"timeout_s\": 0}},", "", "secrets.keyvault.timeout_s",
     "number"},
    {"\"secrets\": {\"keyvault\": {\"tenant\": \"t\"}},", "", "secrets.keyvault.tenant",
     "unknown key"},
    {"\"database\": {\"path\": \"/tmp/a.db\", \"url\": \"postgresql://aigw@db/aigw\"},", "",
     "database", "keep one"},
    {"\"database\": {\"url\": \"mysql://aigw@db/aigw\"},", "", "database.url", "postgresql://"},
    {"\"database\": {\"url\": \"postgresql://aigw:hunter2@db/aigw\"},", "", "database.url",
     "database.password"},
    {"\"database\": {\"password\": \"env:PGPASSWORD\"},", "", "database.password", "database.url"},
    {"\"database\": {\"url\": \"postgresql://aigw@db/aigw\", \"password\": \"env:\"},", "",
     "database.password", ""},
    {"\"database\": {\"statement_timeout_ms\": 10},", "", "database.statement_timeout_ms",
     "integer"},
    {"", ", \"priority\": -1", "backends[0].priority", "integer"},
    {"", ", \"priority\": 1001", "backends[0].priority", "integer"},
    {"", ", \"priority\": \"1\"", "backends[0].priority", "integer"},
    {"", ", \"priority\": 1.5", "backends[0].priority", "integer"},
    {"", ", \"weight\": 0", "backends[0].weight", "integer"},
    {"", ", \"weight\": 1001", "backends[0].weight", "integer"},
    {"", ", \"type\": \"aws\"", "backends[0].type", "openai"},
    {"", ", \"timeout_s\": 0", "backends[0].timeout_s", "number"},
    {"", ", \"connect_timeout_s\": \"5\"", "backends[0].connect_timeout_s", "number"},
    {"", ", \"region\": \"eastus\"", "backends[0].region", "unknown key"},
    {"", ", \"api_version\": 2024", "backends[0].api_version", "string"},
};

static void test_each_bad_value_is_named_by_path(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *k = &bad_cases[i];
        struct cfg *c = load_with(k->top, k->backend);
        expect_problem(c, k->path, k->want);
        /* one mistake, one line */
        if (count_lines(&problems) != 1)
            print_error("case %zu (%s): %s", i, k->path, buf_cstr(&problems));
        assert_int_equal(count_lines(&problems), 1);
    }
}

/* database: SQLite by default, PostgreSQL with url; host files beside either. */
static void test_database_sqlite_or_postgresql(void **state)
{
    (void)state;
    struct cfg *c = load_with("", "");
    assert_non_null(c);
    assert_null(c->database.url);
    assert_string_equal(c->database.path, "/var/lib/aigw/aigw.db");
    assert_string_equal(c->database.local_path, c->database.path);
    cfg_free(c);
    c = load_with(
        "\"database\": {\"url\": \"postgresql://aigw@db.internal:5432/aigw?sslmode=verify-full\","
        " \"password\": \"env:PGPASSWORD\"},",
        "");
    assert_non_null(c);
    assert_string_equal(c->database.url,
                        "postgresql://aigw@db.internal:5432/aigw?sslmode=verify-full");
    assert_string_equal(c->database.password_ref, "env:PGPASSWORD");
    assert_string_equal(c->database.local_path, "/var/lib/aigw/aigw-postgresql");
    assert_int_equal(c->database.statement_timeout_ms, 5000);
    assert_int_equal(c->database.connect_timeout_s, 5);
    cfg_free(c);
}

/* Backend fields that are replaced in the whole object, not added to it. */
static void test_backend_shape_problems(void **state)
{
    (void)state;
    expect_problem(
        load("{\"backends\": [{\"name\": \"east\", \"url\": \"https://e.example.com\"}]}"),
        "backends[0].deployments", "required");
    expect_problem(load("{\"backends\": [{\"name\": \"east\", \"url\": \"https://e.example.com\", "
                        "\"deployments\": {}}]}"),
                   "backends[0].deployments", "at least one model");
    expect_problem(load("{\"backends\": [{\"name\": \"east\", \"url\": \"https://e.example.com\", "
                        "\"deployments\": [\"gpt-4o\"]}]}"),
                   "backends[0].deployments", "object");
    expect_problem(load("{\"backends\": [{\"name\": \"east\", \"url\": \"https://e.example.com\", "
                        "\"deployments\": {\"gpt-4o\": \"\"}}]}"),
                   "backends[0].deployments.gpt-4o", "non-empty");
    expect_problem(load("{\"backends\": [{\"name\": \"east\", \"url\": \"https://e.example.com\", "
                        "\"deployments\": {\"gpt-4o\": 4}}]}"),
                   "backends[0].deployments.gpt-4o", "non-empty");
    expect_problem(load("{\"backends\": [{\"url\": \"https://e.example.com\", \"deployments\": "
                        "{\"m\": \"d\"}}]}"),
                   "backends[0].name", "required");
    expect_problem(load("{\"backends\": [{\"name\": \"\", \"url\": \"https://e.example.com\", "
                        "\"deployments\": {\"m\": \"d\"}}]}"),
                   "backends[0].name", "required");
    expect_problem(
        load("{\"backends\": [{\"name\": \"east us\", \"url\": \"https://e.example.com\", "
             "\"deployments\": {\"m\": \"d\"}}]}"),
        "backends[0].name", "letters");
    expect_problem(load("{\"backends\": [{\"name\": \"e\", \"deployments\": {\"m\": \"d\"}}]}"),
                   "backends[0].url", "required");
    expect_problem(load("{\"backends\": [{\"name\": \"e\", \"url\": \"ftp://e.example.com\", "
                        "\"deployments\": {\"m\": \"d\"}}]}"),
                   "backends[0].url", "https://");
    expect_problem(
        load("{\"backends\": [{\"name\": \"e\", \"url\": \"https://e\", \"deployments\": "
             "{\"m\": \"d\"}}, 7]}"),
        "backends[1]", "object");
    expect_problem(load("{\"backends\": []}"), "backends", "required");
    expect_problem(load("{\"backends\": {}}"), "backends", "required");
    expect_problem(load("{}"), "backends", "required");
}

static void test_duplicate_backend_names(void **state)
{
    (void)state;
    struct cfg *c =
        load("{\"backends\": [" BACKEND_EAST "}, {\"name\": \"west\", \"url\": \"https://w\", "
             "\"deployments\": {\"gpt-4o\": \"d\"}}, " BACKEND_EAST "}]}");
    expect_problem(c, "backends[2]", "east");
    assert_non_null(strstr(buf_cstr(&problems), "twice"));
    assert_int_equal(count_lines(&problems), 1);
}

static void test_several_problems_reported_at_once(void **state)
{
    (void)state;
    struct cfg *c =
        load("{\"limits\": {\"budget_period\": \"week\", \"window_s\": 0},\n"
             " \"validaton\": {},\n"
             " \"redaction\": {\"patterns\": [\"[\"]},\n"
             " \"auth\": {\"jwt\": {}},\n"
             " \"backends\": [{\"name\": \"a\", \"url\": \"https://a\", \"priority\": -3}]}");
    assert_null(c);
    const char *paths[] = {"limits.budget_period",   "limits.window_s", "validaton",
                           "redaction.patterns[0]",  "auth.jwt",        "backends[0].priority",
                           "backends[0].deployments"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char prefix[128];
        snprintf(prefix, sizeof prefix, "test.json: %s: ", paths[i]);
        if (!strstr(buf_cstr(&problems), prefix))
            print_error("missing '%s' in:\n%s", prefix, buf_cstr(&problems));
        assert_non_null(strstr(buf_cstr(&problems), prefix));
    }
    /* one line per problem (auth.jwt may name two: no key source, no issuer) */
    assert_in_range(count_lines(&problems), 7, 8);
}

static void test_not_json(void **state)
{
    (void)state;
    assert_null(load("{\"backends\": [\n  {\"name\": \"e\",,}\n]}"));
    assert_non_null(strstr(buf_cstr(&problems), "test.json: (file): not valid JSON at line 2"));
    assert_null(load(""));
    assert_non_null(strstr(buf_cstr(&problems), "test.json: (file): "));
    assert_null(load("{\"backends\": []} {}"));
    assert_non_null(strstr(buf_cstr(&problems), "test.json: (file): "));
    assert_null(load("[1, 2]"));
    assert_non_null(
        strstr(buf_cstr(&problems), "test.json: (file): the top level must be a JSON object"));
    assert_null(load("{\"backends\": [], } "));
    assert_int_equal(count_lines(&problems), 1);
}

/* --- secrets ------------------------------------------------------------------- */

static void test_literal_api_key_is_a_warning(void **state)
{
    (void)state;
    struct cfg *c =
        load("{\"backends\": [{\"name\": \"e\", \"url\": \"https://e\", \"api_key\": "
             "\"0123456789abcdef0123456789abcdef\", \"deployments\": {\"m\": \"d\"}}]}");
    if (!c)
        print_error("%s", buf_cstr(&problems));
    assert_non_null(c);
    assert_int_equal(problems.len, 0);
    assert_non_null(strstr(buf_cstr(&warnings), "test.json: backends[0].api_key: "));
    assert_non_null(strstr(buf_cstr(&warnings), "literal"));
    assert_int_equal(count_lines(&warnings), 1);
    /* the warning does not leak the secret */
    assert_null(strstr(buf_cstr(&warnings), "0123456789abcdef"));
    assert_string_equal(c->backends[0].api_key_ref, "0123456789abcdef0123456789abcdef");
    cfg_free(c);

    c = load("{\"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\", \"hs256_secret\": "
             "\"hunter2\"}}, "
             "\"backends\": [" BACKEND_EAST "}]}");
    assert_non_null(c);
    assert_non_null(strstr(buf_cstr(&warnings), "test.json: auth.jwt.hs256_secret: "));
    assert_null(strstr(buf_cstr(&warnings), "hunter2"));
    cfg_free(c);

    /* warnings may be NULL */
    buf_reset(&problems);
    c = cfg_load_string(
        "test.json",
        "{\"backends\": [{\"name\": \"e\", \"url\": \"https://e\", \"api_key\": \"lit\", "
        "\"deployments\": {\"m\": \"d\"}}]}",
        &problems, NULL);
    assert_non_null(c);
    cfg_free(c);
}

static void test_secret_references_are_accepted(void **state)
{
    (void)state;
    const char *refs[] = {"env:AZURE_OPENAI_KEY", "file:/run/secrets/key",
                          "keyvault:https://myvault.vault.azure.net/secrets/openai-${env}",
                          "keyvault:https://myvault.vault.azure.net/secrets/k/0123abcd"};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        char extra[160];
        snprintf(extra, sizeof extra, ", \"api_key\": \"%s\"", refs[i]);
        struct buf t = {0};
        buf_printf(&t,
                   "{\"backends\": [{\"name\": \"e\", \"url\": \"https://e\", \"deployments\": "
                   "{\"m\": \"d\"}%s}]}",
                   extra);
        struct cfg *c = load(buf_cstr(&t));
        buf_free(&t);
        if (!c || warnings.len)
            print_error("%s: %s%s", refs[i], buf_cstr(&problems), buf_cstr(&warnings));
        assert_non_null(c);
        assert_int_equal(warnings.len, 0);
        assert_string_equal(c->backends[0].api_key_ref, refs[i]);
        cfg_free(c);
    }
    /* no key at all is fine too (a local OpenAI-compatible server) */
    struct cfg *c = load("{\"backends\": [{\"name\": \"e\", \"type\": \"openai\", \"url\": "
                         "\"http://127.0.0.1:8000\", "
                         "\"deployments\": {\"m\": \"d\"}}]}");
    assert_non_null(c);
    assert_null(c->backends[0].api_key_ref);
    assert_int_equal(warnings.len, 0);
    cfg_free(c);
}

/* --- lookups -------------------------------------------------------------------- */

static void test_backend_deployment_lookup(void **state)
{
    (void)state;
    struct cfg *c =
        load("{\"backends\": [{\"name\": \"e\", \"url\": \"https://e\", \"deployments\": "
             "{\"gpt-4o\": \"prod-gpt4o\", \"gpt-4o-mini\": \"mini\", \"text-embedding-3-small\": "
             "\"emb\"}}, "
             "{\"name\": \"w\", \"url\": \"https://w\", \"deployments\": {\"gpt-4o-mini\": "
             "\"w-mini\"}}]}");
    assert_non_null(c);
    assert_string_equal(cfg_backend_deployment(&c->backends[0], "gpt-4o"), "prod-gpt4o");
    assert_string_equal(cfg_backend_deployment(&c->backends[0], "gpt-4o-mini"), "mini");
    assert_string_equal(cfg_backend_deployment(&c->backends[0], "text-embedding-3-small"), "emb");
    assert_string_equal(cfg_backend_deployment(&c->backends[1], "gpt-4o-mini"), "w-mini");
    assert_null(cfg_backend_deployment(&c->backends[1], "gpt-4o"));
    assert_null(cfg_backend_deployment(&c->backends[0], "gpt-4"));  /* no prefix match */
    assert_null(cfg_backend_deployment(&c->backends[0], "GPT-4O")); /* exact names */
    assert_null(cfg_backend_deployment(&c->backends[0], ""));
    /* the first backend's first model is the default */
    assert_string_equal(c->default_model, "gpt-4o");
    cfg_free(c);
}

/* `aigw check-config` "names every problem": a default_model that no backend
 * serves makes every /api/chat request without "model" fail with 404
 * model_not_found at run time, so the loader must report it. */
static void test_default_model_must_be_served(void **state)
{
    (void)state;
    struct cfg *c = load_with("\"default_model\": \"gpt-4o\",", "");
    assert_non_null(c);
    assert_string_equal(c->default_model, "gpt-4o");
    cfg_free(c);
    expect_problem(load_with("\"default_model\": \"gpt-5\",", ""), "default_model", "gpt-5");
}

static void test_default_path(void **state)
{
    (void)state;
    unsetenv("AIGW_CONFIG");
    assert_string_equal(cfg_default_path("/x/a.json"), "/x/a.json");
    assert_string_equal(cfg_default_path(NULL), "/etc/aigw/aigw.json");
    assert_string_equal(cfg_default_path(""), "/etc/aigw/aigw.json");
    setenv("AIGW_CONFIG", "/srv/aigw.json", 1);
    assert_string_equal(cfg_default_path(NULL), "/srv/aigw.json");
    assert_string_equal(cfg_default_path("/x/a.json"), "/x/a.json");
    unsetenv("AIGW_CONFIG");
}

/* glibc's regcomp is exponential on stacked quantifiers: such patterns, and
 * very long ones, are refused before they reach it. */
static void test_redaction_patterns_that_would_blow_up_are_refused(void **state)
{
    (void)state;
    expect_problem(
        load_with("\"redaction\": {\"patterns\": [\"sk-++++++++++++++++++++++++\"]},", ""),
        "redaction.patterns[0]", "quantifier");
    expect_problem(load_with("\"redaction\": {\"patterns\": [\"a*{2}\"]},", ""),
                   "redaction.patterns[0]", "quantifier");
    struct buf t = {0};
    buf_puts(&t, "\"redaction\": {\"patterns\": [\"");
    for (int i = 0; i < 300; i++)
        buf_putc(&t, 'x');
    buf_puts(&t, "\"]},");
    expect_problem(load_with(buf_cstr(&t), ""), "redaction.patterns[0]", "longer than");
    buf_free(&t);
    struct cfg *c =
        load_with("\"redaction\": {\"patterns\": [\"sk-[a-z]{48}\", \"a\\\\++\"]},", "");
    assert_non_null(c); /* an escaped "+" followed by a quantifier is fine */
    cfg_free(c);
}

static void test_load_from_file(void **state)
{
    (void)state;
    char path[] = "/tmp/aigw-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(MIN_CONFIG, f);
    fclose(f);
    buf_reset(&problems);
    struct cfg *c = cfg_load(path, &problems, NULL);
    assert_non_null(c);
    assert_string_equal(c->path, path);
    cfg_free(c);

    /* problems name the file */
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"limits\": {\"window_s\": -1}, \"backends\": [" BACKEND_EAST "}]}", f);
    fclose(f);
    buf_reset(&problems);
    assert_null(cfg_load(path, &problems, NULL));
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s: limits.window_s: ", path);
    assert_non_null(strstr(buf_cstr(&problems), prefix));

    /* a NUL byte in the file is refused, not truncated */
    f = fopen(path, "wb");
    assert_non_null(f);
    fputs(MIN_CONFIG, f);
    fputc('\0', f);
    fputs("garbage", f);
    fclose(f);
    buf_reset(&problems);
    assert_null(cfg_load(path, &problems, NULL));
    assert_non_null(strstr(buf_cstr(&problems), "NUL"));
    unlink(path);

    buf_reset(&problems);
    assert_null(cfg_load(path, &problems, NULL));
    assert_non_null(strstr(buf_cstr(&problems), path));
}

#define T(f) cmocka_unit_test_teardown(f, reset_bufs)

int main(void)
{
    unsetenv("AIGW_ENV");
    const struct CMUnitTest tests[] = {
        T(test_minimal_config_has_every_default),
        T(test_environment_from_aigw_env),
        T(test_keyvault_client_credentials),
        T(test_full_config_values_are_read),
        T(test_budget_periods_and_names),
        T(test_each_bad_value_is_named_by_path),
        T(test_backend_shape_problems),
        T(test_database_sqlite_or_postgresql),
        T(test_duplicate_backend_names),
        T(test_several_problems_reported_at_once),
        T(test_not_json),
        T(test_literal_api_key_is_a_warning),
        T(test_secret_references_are_accepted),
        T(test_backend_deployment_lookup),
        T(test_default_model_must_be_served),
        T(test_default_path),
        T(test_load_from_file),
        T(test_redaction_patterns_that_would_blow_up_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
