/*
 * config.c - loads the JSON configuration into a checked struct cfg.
 *
 * Every problem is reported with the file name and its JSON path
 * ("aigw.json: backends[1].priority: must be an integer >= 0"), all of them at
 * once, so an operator fixes the file in one pass. Unknown keys are errors:
 * a misspelt limit must not silently fall back to a default.
 */
#include "config.h"

#include "json_strict.h"
#include "secrets.h"

#include <errno.h>
#include <json-c/json.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loader {
    const char *file;
    struct buf *problems;
    struct buf *warnings;
    int n_problems;
};

static void problem(struct loader *L, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct loader *L, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    L->n_problems++;
    if (L->problems)
        buf_printf(L->problems, "%s: %s: %s\n", L->file, path, msg);
}

static void warning(struct loader *L, const char *path, const char *msg)
{
    if (L->warnings)
        buf_printf(L->warnings, "%s: %s: %s\n", L->file, path, msg);
}

static char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    char *p = strdup(s);
    if (!p) {
        fprintf(stderr, "aigw: out of memory\n");
        exit(1);
    }
    return p;
}

static void join_path(char *out, size_t n, const char *base, const char *key)
{
    snprintf(out, n, "%s%s%s", base, *base ? "." : "", key);
}

/* Reports every key of obj that is not in known (a NULL-terminated list). */
static void check_keys(struct loader *L, json_object *obj, const char *path,
                       const char *const *known)
{
    json_object_object_foreach(obj, key, val)
    {
        (void)val;
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (strcmp(*k, key) == 0)
                ok = 1;
        if (!ok) {
            char p[256];
            join_path(p, sizeof p, path, key);
            problem(L, p, "unknown key (check the spelling against the documentation)");
        }
    }
}

static json_object *get_object(struct loader *L, json_object *parent, const char *path,
                               const char *key)
{
    json_object *v;
    if (!parent || !json_object_object_get_ex(parent, key, &v) ||
        json_object_is_type(v, json_type_null))
        return NULL;
    if (!json_object_is_type(v, json_type_object)) {
        char p[256];
        join_path(p, sizeof p, path, key);
        problem(L, p, "must be an object");
        return NULL;
    }
    return v;
}

static char *get_string(struct loader *L, json_object *parent, const char *path, const char *key,
                        const char *dflt)
{
    json_object *v;
    if (!parent || !json_object_object_get_ex(parent, key, &v) ||
        json_object_is_type(v, json_type_null))
        return xstrdup(dflt);
    char p[256];
    join_path(p, sizeof p, path, key);
    if (!json_object_is_type(v, json_type_string)) {
        problem(L, p, "must be a string");
        return xstrdup(dflt);
    }
    return xstrdup(json_object_get_string(v));
}

static long get_int(struct loader *L, json_object *parent, const char *path, const char *key,
                    long dflt, long min, long max)
{
    json_object *v;
    if (!parent || !json_object_object_get_ex(parent, key, &v) ||
        json_object_is_type(v, json_type_null))
        return dflt;
    char p[256];
    join_path(p, sizeof p, path, key);
    if (!json_object_is_type(v, json_type_int)) {
        problem(L, p, "must be an integer between %ld and %ld", min, max);
        return dflt;
    }
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (errno || x < min || x > max) {
        problem(L, p, "must be an integer between %ld and %ld", min, max);
        return dflt;
    }
    return (long)x;
}

static double get_number(struct loader *L, json_object *parent, const char *path, const char *key,
                         double dflt, double min, double max)
{
    json_object *v;
    if (!parent || !json_object_object_get_ex(parent, key, &v) ||
        json_object_is_type(v, json_type_null))
        return dflt;
    char p[256];
    join_path(p, sizeof p, path, key);
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) {
        problem(L, p, "must be a number between %g and %g", min, max);
        return dflt;
    }
    double x = json_object_get_double(v);
    if (!(x >= min && x <= max)) {
        problem(L, p, "must be a number between %g and %g", min, max);
        return dflt;
    }
    return x;
}

static int get_bool(struct loader *L, json_object *parent, const char *path, const char *key,
                    int dflt)
{
    json_object *v;
    if (!parent || !json_object_object_get_ex(parent, key, &v) ||
        json_object_is_type(v, json_type_null))
        return dflt;
    if (!json_object_is_type(v, json_type_boolean)) {
        char p[256];
        join_path(p, sizeof p, path, key);
        problem(L, p, "must be true or false");
        return dflt;
    }
    return json_object_get_boolean(v);
}

/* Reads an array of strings; when absent, copies dflt (NULL-terminated) instead. */
static char **get_string_list(struct loader *L, json_object *parent, const char *path,
                              const char *key, const char *const *dflt, size_t *n_out)
{
    json_object *v;
    char p[256];
    join_path(p, sizeof p, path, key);
    size_t n = 0;
    char **out;
    if (!parent || !json_object_object_get_ex(parent, key, &v) ||
        json_object_is_type(v, json_type_null)) {
        while (dflt && dflt[n])
            n++;
        out = calloc(n + 1, sizeof *out);
        for (size_t i = 0; i < n; i++)
            out[i] = xstrdup(dflt[i]);
        *n_out = n;
        return out;
    }
    if (!json_object_is_type(v, json_type_array)) {
        problem(L, p, "must be an array of strings");
        *n_out = 0;
        return calloc(1, sizeof(char *));
    }
    n = json_object_array_length(v);
    out = calloc(n + 1, sizeof *out);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        if (!json_object_is_type(e, json_type_string) || json_object_get_string_len(e) == 0) {
            char pe[300];
            snprintf(pe, sizeof pe, "%s[%zu]", p, i);
            problem(L, pe, "must be a non-empty string");
            continue;
        }
        out[k++] = xstrdup(json_object_get_string(e));
    }
    *n_out = k;
    return out;
}

static void free_list(char **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/* A reference is checked without I/O (the form of a Key Vault URL, ${env}); a
 * literal where a secret belongs is allowed, with a warning. */
static void check_secret_ref(struct loader *L, const char *path, const char *ref,
                             const char *environment)
{
    if (!ref)
        return;
    struct secret_ref parsed;
    struct buf err = {0};
    if (secret_ref_parse(ref, environment, &parsed, &err) < 0)
        problem(L, path, "%s", buf_cstr(&err));
    else if (parsed.kind == SECRET_LITERAL)
        warning(L, path, "holds a literal secret; prefer env:NAME, file:PATH or keyvault:URL");
    secret_ref_free(&parsed);
    buf_free(&err);
}

/* An environment variable's value, or NULL when unset or empty. */
static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Reads how to sign in with Entra ID from o (which may be NULL: defaults).
 * Workload identity takes what AKS injects ($AZURE_TENANT_ID, $AZURE_CLIENT_ID,
 * $AZURE_FEDERATED_TOKEN_FILE, $AZURE_AUTHORITY_HOST) unless set here. */
static void load_entra(struct loader *L, json_object *o, const char *path,
                       const char *default_scope, const char *environment, struct cfg_entra *e)
{
    char p[256];
    e->auth = get_string(L, o, path, "auth", "managed_identity");
    int workload = strcmp(e->auth, "workload_identity") == 0;
    int client = strcmp(e->auth, "client_credentials") == 0;
    if (!workload && !client && strcmp(e->auth, "managed_identity") != 0) {
        join_path(p, sizeof p, path, "auth");
        problem(L, p,
                "must be \"managed_identity\", \"workload_identity\" or \"client_credentials\"");
    }
    e->tenant_id =
        get_string(L, o, path, "tenant_id", workload ? env_or_null("AZURE_TENANT_ID") : NULL);
    e->client_id =
        get_string(L, o, path, "client_id", workload ? env_or_null("AZURE_CLIENT_ID") : NULL);
    e->client_secret_ref = get_string(L, o, path, "client_secret", NULL);
    join_path(p, sizeof p, path, "client_secret");
    if (e->client_secret_ref && strncmp(e->client_secret_ref, "keyvault:", 9) == 0)
        problem(L, p, "cannot itself come from Key Vault; use env: or file:");
    check_secret_ref(L, p, e->client_secret_ref, environment);
    e->token_file = get_string(L, o, path, "token_file",
                               workload ? env_or_null("AZURE_FEDERATED_TOKEN_FILE") : NULL);
    if (client && (!e->tenant_id || !e->client_id || !e->client_secret_ref))
        problem(L, path, "client_credentials needs tenant_id, client_id and client_secret");
    if (workload && (!e->tenant_id || !e->client_id || !e->token_file))
        problem(L, path,
                "workload_identity needs tenant_id, client_id and token_file (or "
                "$AZURE_TENANT_ID, $AZURE_CLIENT_ID and $AZURE_FEDERATED_TOKEN_FILE)");
    const char *authority = workload && env_or_null("AZURE_AUTHORITY_HOST")
                                ? env_or_null("AZURE_AUTHORITY_HOST")
                                : "https://login.microsoftonline.com";
    e->authority_host = get_string(L, o, path, "authority_host", authority);
    e->imds_endpoint = get_string(L, o, path, "imds_endpoint",
                                  "http://169.254.169.254/metadata/identity/oauth2/token");
    e->identity_endpoint = get_string(L, o, path, "identity_endpoint", NULL);
    e->scope = get_string(L, o, path, "scope", default_scope);
    if (strncmp(e->scope, "https://", 8) != 0 || strlen(e->scope) < 16 ||
        strcmp(e->scope + strlen(e->scope) - 9, "/.default") != 0) {
        join_path(p, sizeof p, path, "scope");
        problem(L, p, "must be a resource's default scope, such as %s", default_scope);
    }
    e->timeout_s = get_number(L, o, path, "timeout_s", 5, 0.1, 120);
}

static void entra_free(struct cfg_entra *e)
{
    if (!e)
        return;
    free(e->auth);
    free(e->tenant_id);
    free(e->client_id);
    free(e->client_secret_ref);
    free(e->token_file);
    free(e->authority_host);
    free(e->imds_endpoint);
    free(e->identity_endpoint);
    free(e->scope);
}

static void load_backend(struct loader *L, json_object *o, const char *path, struct cfg_backend *b,
                         const char *environment)
{
    static const char *const known[] = {
        "name",      "type",        "url",         "api_key",   "priority",
        "weight",    "api_version", "deployments", "timeout_s", "connect_timeout_s",
        "api_style", "entra",       NULL};
    check_keys(L, o, path, known);
    char p[256];
    b->name = get_string(L, o, path, "name", NULL);
    if (!b->name || !*b->name) {
        join_path(p, sizeof p, path, "name");
        problem(L, p, "is required (a short name such as \"east-us\")");
    } else {
        for (const char *c = b->name; *c; c++)
            if (!(*c == '-' || *c == '_' || *c == '.' || (*c >= '0' && *c <= '9') ||
                  (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z'))) {
                join_path(p, sizeof p, path, "name");
                problem(L, p, "may hold only letters, digits, '-', '_' and '.'");
                break;
            }
    }
    char *type = get_string(L, o, path, "type", "azure");
    if (strcmp(type, "azure") == 0)
        b->type = BACKEND_AZURE;
    else if (strcmp(type, "openai") == 0)
        b->type = BACKEND_OPENAI;
    else {
        join_path(p, sizeof p, path, "type");
        problem(L, p, "must be \"azure\" or \"openai\"");
    }
    free(type);
    b->url = get_string(L, o, path, "url", NULL);
    join_path(p, sizeof p, path, "url");
    if (!b->url)
        problem(L, p, "is required (e.g. https://myai-eastus.openai.azure.com)");
    else if (strncmp(b->url, "https://", 8) != 0 && strncmp(b->url, "http://", 7) != 0)
        problem(L, p, "must start with https:// or http://");
    else {
        size_t n = strlen(b->url);
        while (n > 0 && b->url[n - 1] == '/')
            b->url[--n] = '\0';
    }
    b->api_key_ref = get_string(L, o, path, "api_key", NULL);
    join_path(p, sizeof p, path, "api_key");
    check_secret_ref(L, p, b->api_key_ref, environment);
    json_object *entra = get_object(L, o, path, "entra");
    if (entra) {
        static const char *const k_entra[] = {"auth",
                                              "tenant_id",
                                              "client_id",
                                              "client_secret",
                                              "token_file",
                                              "authority_host",
                                              "imds_endpoint",
                                              "identity_endpoint",
                                              "scope",
                                              "timeout_s",
                                              NULL};
        char pe[256];
        join_path(pe, sizeof pe, path, "entra");
        check_keys(L, entra, pe, k_entra);
        b->entra = calloc(1, sizeof *b->entra);
        if (b->entra)
            load_entra(L, entra, pe, "https://cognitiveservices.azure.com/.default", environment,
                       b->entra);
        if (b->api_key_ref)
            problem(L, pe, "and api_key exclude each other: a backend signs in one way");
        if (b->type != BACKEND_AZURE)
            problem(L, pe, "applies to type \"azure\" only");
    }
    b->priority = (int)get_int(L, o, path, "priority", 1, 0, 1000);
    b->weight = (int)get_int(L, o, path, "weight", 1, 1, 1000);
    b->api_version = get_string(L, o, path, "api_version", NULL);
    char *style = get_string(L, o, path, "api_style", "deployments");
    if (strcmp(style, "v1") == 0)
        b->v1_api = 1;
    else if (strcmp(style, "deployments") != 0) {
        join_path(p, sizeof p, path, "api_style");
        problem(L, p,
                "must be \"deployments\" (Azure's /openai/deployments/NAME/... with api-version) "
                "or \"v1\" (Azure's /openai/v1/..., the deployment as model)");
    }
    if (b->v1_api && b->type != BACKEND_AZURE) {
        join_path(p, sizeof p, path, "api_style");
        problem(L, p, "applies to type \"azure\" only (an openai backend's url names its API)");
    }
    free(style);
    b->timeout_s = get_number(L, o, path, "timeout_s", 60, 0.1, 3600);
    b->connect_timeout_s = get_number(L, o, path, "connect_timeout_s", 5, 0.1, 600);

    json_object *deps = get_object(L, o, path, "deployments");
    join_path(p, sizeof p, path, "deployments");
    if (!deps) {
        problem(L, p,
                "is required: an object mapping model names to this backend's deployment names");
        return;
    }
    b->n_deployments = (size_t)json_object_object_length(deps);
    b->deployments = calloc(b->n_deployments ? b->n_deployments : 1, sizeof *b->deployments);
    size_t i = 0;
    json_object_object_foreach(deps, model, dep)
    {
        char pd[300];
        snprintf(pd, sizeof pd, "%s.%s", p, model);
        if (!json_object_is_type(dep, json_type_string) || json_object_get_string_len(dep) == 0) {
            problem(L, pd, "must be a non-empty string (the deployment name)");
            continue;
        }
        b->deployments[i].model = xstrdup(model);
        b->deployments[i].deployment = xstrdup(json_object_get_string(dep));
        i++;
    }
    b->n_deployments = i;
    if (i == 0)
        problem(L, p, "must name at least one model");
}

#define REGEX_MAX_LEN 256 /* a redaction pattern describes one secret's shape, not a program */

/* 1 when a quantifier directly follows another ("a++", "x*{2}"): glibc's
 * regcomp takes exponential time and memory on such stacks. */
static int stacked_quantifiers(const char *p)
{
    int prev_quant = 0;
    for (; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            prev_quant = 0;
            continue;
        }
        int quant = *p == '*' || *p == '+' || *p == '?' || *p == '{';
        if (quant && prev_quant)
            return 1;
        if (*p == '{') {
            while (*p && *p != '}')
                p++;
            if (!*p)
                return 0;
        }
        prev_quant = quant;
    }
    return 0;
}

static int regex_ok(struct loader *L, const char *path, const char *pattern, int flags)
{
    if (strlen(pattern) > REGEX_MAX_LEN) {
        problem(L, path, "is longer than %d characters", REGEX_MAX_LEN);
        return 0;
    }
    if (stacked_quantifiers(pattern)) {
        problem(L, path,
                "has a quantifier right after another (such as \"a++\"); write one quantifier");
        return 0;
    }
    regex_t re;
    int rc = regcomp(&re, pattern, REG_EXTENDED | flags);
    if (rc != 0) {
        char err[128];
        regerror(rc, &re, err, sizeof err);
        problem(L, path, "is not a valid POSIX extended regular expression: %s", err);
        return 0;
    }
    regfree(&re);
    return 1;
}

static struct cfg *cfg_from_json(struct loader *L, json_object *root)
{
    struct cfg *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    static const char *const top[] = {"environment", "database",        "auth",     "limits",
                                      "validation",  "redaction",       "backends", "default_model",
                                      "retry",       "circuit_breaker", "audit",    "telemetry",
                                      "secrets",     "server",          NULL};
    check_keys(L, root, "", top);

    c->environment = get_string(L, root, "", "environment",
                                getenv("AIGW_ENV") ? getenv("AIGW_ENV") : "production");

    json_object *o = get_object(L, root, "", "database");
    static const char *const k_db[] = {"path", "synchronous", "busy_timeout_ms", NULL};
    if (o)
        check_keys(L, o, "database", k_db);
    c->database.path = get_string(L, o, "database", "path", "/var/lib/aigw/aigw.db");
    c->database.synchronous = get_string(L, o, "database", "synchronous", "normal");
    if (strcmp(c->database.synchronous, "normal") && strcmp(c->database.synchronous, "full") &&
        strcmp(c->database.synchronous, "off"))
        problem(L, "database.synchronous", "must be \"normal\", \"full\" or \"off\"");
    c->database.busy_timeout_ms =
        (int)get_int(L, o, "database", "busy_timeout_ms", 5000, 0, 600000);

    o = get_object(L, root, "", "server");
    static const char *const k_srv[] = {"threads_per_worker", NULL};
    if (o)
        check_keys(L, o, "server", k_srv);
    c->server.threads_per_worker =
        (int)get_int(L, o, "server", "threads_per_worker", CFG_DEFAULT_THREADS, 1, CFG_MAX_THREADS);

    o = get_object(L, root, "", "auth");
    static const char *const k_auth[] = {"enabled", "api_keys", "jwt", "on_behalf_of_role", NULL};
    if (o)
        check_keys(L, o, "auth", k_auth);
    c->auth.enabled = get_bool(L, o, "auth", "enabled", 1);
    c->auth.api_keys = get_bool(L, o, "auth", "api_keys", 1);
    c->auth.on_behalf_of_role = get_string(L, o, "auth", "on_behalf_of_role", "AI.OnBehalfOf");
    json_object *jwt = get_object(L, o, "auth", "jwt");
    static const char *const k_jwt[] = {"issuer",     "audience",     "openid_config_url",
                                        "jwks_file",  "hs256_secret", "required_roles",
                                        "user_claim", "leeway_s",     NULL};
    if (jwt)
        check_keys(L, jwt, "auth.jwt", k_jwt);
    c->auth.jwt_issuer = get_string(L, jwt, "auth.jwt", "issuer", NULL);
    c->auth.jwt_audience = get_string(L, jwt, "auth.jwt", "audience", NULL);
    c->auth.jwt_openid_config_url = get_string(L, jwt, "auth.jwt", "openid_config_url", NULL);
    c->auth.jwt_jwks_file = get_string(L, jwt, "auth.jwt", "jwks_file", NULL);
    c->auth.jwt_hs256_secret_ref = get_string(L, jwt, "auth.jwt", "hs256_secret", NULL);
    check_secret_ref(L, "auth.jwt.hs256_secret", c->auth.jwt_hs256_secret_ref, c->environment);
    c->auth.user_claim = get_string(L, jwt, "auth.jwt", "user_claim", "sub");
    c->auth.leeway_s = (int)get_int(L, jwt, "auth.jwt", "leeway_s", 60, 0, 3600);
    static const char *const dflt_roles[] = {"AI.User", NULL};
    c->auth.required_roles = get_string_list(L, jwt, "auth.jwt", "required_roles", dflt_roles,
                                             &c->auth.n_required_roles);
    if (jwt && !c->auth.jwt_openid_config_url && !c->auth.jwt_jwks_file &&
        !c->auth.jwt_hs256_secret_ref)
        problem(L, "auth.jwt", "needs one of openid_config_url, jwks_file or hs256_secret");
    if (jwt && (!c->auth.jwt_issuer || !c->auth.jwt_audience))
        problem(L, "auth.jwt", "needs issuer and audience: tokens are checked against both");

    o = get_object(L, root, "", "limits");
    static const char *const k_lim[] = {"requests_per_window", "window_s",
                                        "tokens_per_minute",   "default_token_budget",
                                        "budget_period",       NULL};
    if (o)
        check_keys(L, o, "limits", k_lim);
    c->limits.requests_per_window =
        get_int(L, o, "limits", "requests_per_window", 100, 0, 100000000);
    c->limits.window_s = get_int(L, o, "limits", "window_s", 60, 1, 86400 * 31);
    c->limits.tokens_per_minute = get_int(L, o, "limits", "tokens_per_minute", 0, 0, 1000000000);
    c->limits.default_token_budget =
        get_int(L, o, "limits", "default_token_budget", 10000, 0, 1L << 50);
    char *period = get_string(L, o, "limits", "budget_period", "day");
    if (strcmp(period, "day") == 0)
        c->limits.budget_period = PERIOD_DAY;
    else if (strcmp(period, "month") == 0)
        c->limits.budget_period = PERIOD_MONTH;
    else if (strcmp(period, "total") == 0)
        c->limits.budget_period = PERIOD_TOTAL;
    else
        problem(L, "limits.budget_period", "must be \"day\", \"month\" or \"total\"");
    free(period);

    o = get_object(L, root, "", "validation");
    static const char *const k_val[] = {
        "max_body_bytes", "max_depth", "max_messages", "max_content_chars", "max_tokens",
        "deny_patterns",  NULL};
    if (o)
        check_keys(L, o, "validation", k_val);
    c->validation.max_body_bytes =
        (size_t)get_int(L, o, "validation", "max_body_bytes", 1048576, 64, 64L << 20);
    c->validation.max_depth = (int)get_int(L, o, "validation", "max_depth", 64, 2, 64);
    c->validation.max_messages = (int)get_int(L, o, "validation", "max_messages", 50, 1, 10000);
    c->validation.max_content_chars =
        (int)get_int(L, o, "validation", "max_content_chars", 32000, 1, 10000000);
    c->validation.max_tokens = (int)get_int(L, o, "validation", "max_tokens", 4096, 1, 10000000);
    static const char *const dflt_deny[] = {"ignore previous", "disregard instructions",
                                            "you are now", NULL};
    c->validation.deny_patterns = get_string_list(L, o, "validation", "deny_patterns", dflt_deny,
                                                  &c->validation.n_deny_patterns);

    o = get_object(L, root, "", "redaction");
    static const char *const k_red[] = {"patterns", "replacement", "max_match_chars", NULL};
    if (o)
        check_keys(L, o, "redaction", k_red);
    static const char *const dflt_red[] = {"sk-[a-zA-Z0-9]{48}", NULL};
    c->redaction.patterns =
        get_string_list(L, o, "redaction", "patterns", dflt_red, &c->redaction.n_patterns);
    for (size_t i = 0; i < c->redaction.n_patterns; i++) {
        char p[64];
        snprintf(p, sizeof p, "redaction.patterns[%zu]", i);
        regex_ok(L, p, c->redaction.patterns[i], 0);
    }
    c->redaction.replacement = get_string(L, o, "redaction", "replacement", "[REDACTED_KEY]");
    /* At least the seed's key (51 characters) must fit in what a stream holds back. */
    c->redaction.max_match_chars =
        (int)get_int(L, o, "redaction", "max_match_chars", 128, 64, 4096);

    json_object *arr;
    if (!json_object_object_get_ex(root, "backends", &arr) ||
        !json_object_is_type(arr, json_type_array) || json_object_array_length(arr) == 0) {
        problem(L, "backends", "is required: a non-empty array of model backends");
    } else {
        c->n_backends = json_object_array_length(arr);
        if (c->n_backends > CFG_MAX_BACKENDS) {
            problem(L, "backends", "at most %d backends are supported", CFG_MAX_BACKENDS);
            c->n_backends = CFG_MAX_BACKENDS;
        }
        c->backends = calloc(c->n_backends, sizeof *c->backends);
        for (size_t i = 0; i < c->n_backends; i++) {
            char p[64];
            snprintf(p, sizeof p, "backends[%zu]", i);
            json_object *b = json_object_array_get_idx(arr, i);
            if (!json_object_is_type(b, json_type_object)) {
                problem(L, p, "must be an object");
                continue;
            }
            load_backend(L, b, p, &c->backends[i], c->environment);
            for (size_t j = 0; j < i; j++)
                if (c->backends[i].name && c->backends[j].name &&
                    strcmp(c->backends[i].name, c->backends[j].name) == 0)
                    problem(L, p, "name \"%s\" is used twice", c->backends[i].name);
        }
    }
    c->default_model = get_string(L, root, "", "default_model", NULL);
    if (!c->default_model && c->n_backends && c->backends[0].n_deployments)
        c->default_model = xstrdup(c->backends[0].deployments[0].model);
    if (c->default_model && c->n_backends) {
        int served = 0;
        for (size_t i = 0; i < c->n_backends && !served; i++)
            served = c->backends[i].deployments &&
                     cfg_backend_deployment(&c->backends[i], c->default_model);
        if (!served)
            problem(L, "default_model",
                    "no backend serves \"%s\" (add it to a backend's deployments)",
                    c->default_model);
    }

    o = get_object(L, root, "", "retry");
    static const char *const k_retry[] = {"max_attempts", "base_delay_ms", "max_delay_ms",
                                          "deadline_s", NULL};
    if (o)
        check_keys(L, o, "retry", k_retry);
    c->retry.max_attempts = (int)get_int(L, o, "retry", "max_attempts", 3, 1, 20);
    c->retry.base_delay_ms = (int)get_int(L, o, "retry", "base_delay_ms", 500, 0, 60000);
    c->retry.max_delay_ms = (int)get_int(L, o, "retry", "max_delay_ms", 10000, 0, 600000);
    c->retry.deadline_s = get_number(L, o, "retry", "deadline_s", 120, 0.1, 3600);

    o = get_object(L, root, "", "circuit_breaker");
    static const char *const k_cb[] = {"failure_threshold", "recovery_timeout_s",
                                       "half_open_max_calls", NULL};
    if (o)
        check_keys(L, o, "circuit_breaker", k_cb);
    c->breaker.failure_threshold =
        (int)get_int(L, o, "circuit_breaker", "failure_threshold", 5, 1, 1000);
    c->breaker.recovery_timeout_s =
        get_number(L, o, "circuit_breaker", "recovery_timeout_s", 30, 0.1, 86400);
    c->breaker.half_open_max_calls =
        (int)get_int(L, o, "circuit_breaker", "half_open_max_calls", 3, 1, 1000);

    o = get_object(L, root, "", "audit");
    static const char *const k_audit[] = {"log_bodies", "retention_days", NULL};
    if (o)
        check_keys(L, o, "audit", k_audit);
    char *lb = get_string(L, o, "audit", "log_bodies", "redacted");
    if (strcmp(lb, "none") == 0)
        c->audit.log_bodies = LOG_BODIES_NONE;
    else if (strcmp(lb, "redacted") == 0)
        c->audit.log_bodies = LOG_BODIES_REDACTED;
    else if (strcmp(lb, "full") == 0)
        c->audit.log_bodies = LOG_BODIES_FULL;
    else
        problem(L, "audit.log_bodies", "must be \"full\", \"redacted\" or \"none\"");
    free(lb);
    c->audit.retention_days = (int)get_int(L, o, "audit", "retention_days", 90, 0, 36500);

    o = get_object(L, root, "", "telemetry");
    static const char *const k_tel[] = {"otlp_endpoint", "service_name", "metrics_user_label",
                                        NULL};
    if (o)
        check_keys(L, o, "telemetry", k_tel);
    c->telemetry.otlp_endpoint = get_string(L, o, "telemetry", "otlp_endpoint", NULL);
    c->telemetry.service_name = get_string(L, o, "telemetry", "service_name", "aigw");
    /* One series per user breaks Prometheus at tens of thousands of users;
     * the reports hold the per-user numbers either way. */
    c->telemetry.metrics_user_label = get_bool(L, o, "telemetry", "metrics_user_label", 0);
    if (c->telemetry.otlp_endpoint && strncmp(c->telemetry.otlp_endpoint, "http://", 7) != 0 &&
        strncmp(c->telemetry.otlp_endpoint, "https://", 8) != 0)
        problem(L, "telemetry.otlp_endpoint", "must start with http:// or https://");

    o = get_object(L, root, "", "secrets");
    static const char *const k_sec[] = {"cache_ttl_s", "keyvault", NULL};
    if (o)
        check_keys(L, o, "secrets", k_sec);
    c->secrets.cache_ttl_s = (int)get_int(L, o, "secrets", "cache_ttl_s", 300, 0, 86400 * 30);
    json_object *kv = get_object(L, o, "secrets", "keyvault");
    static const char *const k_kv[] = {"auth",
                                       "tenant_id",
                                       "client_id",
                                       "client_secret",
                                       "authority_host",
                                       "imds_endpoint",
                                       "identity_endpoint",
                                       "api_version",
                                       "timeout_s",
                                       "token_file",
                                       NULL};
    if (kv)
        check_keys(L, kv, "secrets.keyvault", k_kv);
    load_entra(L, kv, "secrets.keyvault", "https://vault.azure.net/.default", c->environment,
               &c->secrets.keyvault);
    c->secrets.kv_api_version = get_string(L, kv, "secrets.keyvault", "api_version", "7.4");
    return c;
}

struct cfg *cfg_load_string(const char *name, const char *text, struct buf *problems,
                            struct buf *warnings)
{
    struct loader L = {name, problems, warnings, 0};
    size_t len = strlen(text);
    struct json_strict_error jerr = {0};
    /* The same strict parser as request bodies: a key given twice is an error,
     * not a silent "last one wins". */
    json_object *root = json_strict_parse(text, len, 64, &jerr);
    if (!root) {
        /* Name the line so the operator finds the mistake in an editor. */
        size_t line = 1;
        for (size_t i = 0; i < jerr.offset && i < len; i++)
            line += text[i] == '\n';
        problem(&L, "(file)", "not valid JSON at line %zu: %s", line, jerr.what);
        return NULL;
    }
    if (!json_object_is_type(root, json_type_object)) {
        problem(&L, "(file)", "the top level must be a JSON object");
        json_object_put(root);
        return NULL;
    }
    struct cfg *c = cfg_from_json(&L, root);
    json_object_put(root);
    if (L.n_problems) {
        cfg_free(c);
        return NULL;
    }
    c->path = xstrdup(name);
    return c;
}

struct cfg *cfg_load(const char *path, struct buf *problems, struct buf *warnings)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        buf_printf(problems, "%s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    struct buf text = {0};
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (buf_append(&text, chunk, n) < 0)
            break;
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        buf_printf(problems, "%s: read error\n", path);
        buf_free(&text);
        return NULL;
    }
    if (memchr(buf_cstr(&text), '\0', text.len)) {
        buf_printf(problems, "%s: (file): contains a NUL byte\n", path);
        buf_free(&text);
        return NULL;
    }
    struct cfg *c = cfg_load_string(path, buf_cstr(&text), problems, warnings);
    buf_free(&text);
    return c;
}

const char *cfg_default_path(const char *given)
{
    if (given && *given)
        return given;
    const char *env = getenv("AIGW_CONFIG");
    if (env && *env)
        return env;
    return "/etc/aigw/aigw.json";
}

void cfg_free(struct cfg *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->environment);
    free(c->database.path);
    free(c->database.synchronous);
    free(c->auth.jwt_issuer);
    free(c->auth.jwt_audience);
    free(c->auth.jwt_openid_config_url);
    free(c->auth.jwt_jwks_file);
    free(c->auth.jwt_hs256_secret_ref);
    free(c->auth.user_claim);
    free(c->auth.on_behalf_of_role);
    free_list(c->auth.required_roles, c->auth.n_required_roles);
    free_list(c->validation.deny_patterns, c->validation.n_deny_patterns);
    free_list(c->redaction.patterns, c->redaction.n_patterns);
    free(c->redaction.replacement);
    for (size_t i = 0; i < c->n_backends; i++) {
        struct cfg_backend *b = &c->backends[i];
        free(b->name);
        free(b->url);
        free(b->api_key_ref);
        entra_free(b->entra);
        free(b->entra);
        free(b->api_version);
        for (size_t j = 0; j < b->n_deployments; j++) {
            free(b->deployments[j].model);
            free(b->deployments[j].deployment);
        }
        free(b->deployments);
    }
    free(c->backends);
    free(c->default_model);
    free(c->telemetry.otlp_endpoint);
    free(c->telemetry.service_name);
    entra_free(&c->secrets.keyvault);
    free(c->secrets.kv_api_version);
    free(c);
}

const char *cfg_backend_deployment(const struct cfg_backend *b, const char *model)
{
    for (size_t i = 0; i < b->n_deployments; i++)
        if (strcmp(b->deployments[i].model, model) == 0)
            return b->deployments[i].deployment;
    return NULL;
}

const char *cfg_period_name(enum budget_period p)
{
    return p == PERIOD_DAY ? "day" : p == PERIOD_MONTH ? "month" : "total";
}
