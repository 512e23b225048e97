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
#include <stddef.h>
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

/* --- the configuration, described once ------------------------------------------
 *
 * Each section is a table of keys in the manner of nginx's ngx_command_t:
 * name, type, where the value goes, default and bounds. The loader, the
 * unknown-key check and cfg_free all read the same table; a key that needs
 * code of its own (an object, a choice of identities) is KEY_CUSTOM there,
 * listed so it is known, and read after the table. */
enum key_type {
    KEY_STRING, /* char *; choices, when set, are the values allowed */
    KEY_INT,    /* int */
    KEY_LONG,   /* long */
    KEY_SIZE,   /* size_t */
    KEY_NUMBER, /* double */
    KEY_BOOL,   /* int, 0 or 1 */
    KEY_ENUM,   /* an int-sized enum: the index of its name in choices */
    KEY_LIST,   /* char ** (NULL-terminated) and its count at count_off */
    KEY_CUSTOM, /* read by code after the table */
};

struct key {
    const char *name;
    enum key_type type;
    size_t off; /* from the section's base */
    long dflt, min, max;
    double ndflt, nmin, nmax;
    const char *sdflt;
    const char *const *choices; /* KEY_ENUM names; KEY_STRING allowed values */
    const char *const *ldflt;   /* KEY_LIST default (NULL-terminated) */
    size_t count_off;
};

/* A row of a table: CFG_KEY("name", KEY_INT, field, .dflt = 5, .min = 0, .max = 9). */
#define CFG_KEY(n, kind, f, ...)                                                                   \
    {                                                                                              \
        .name = n, .type = kind, .off = offsetof(struct cfg, f), __VA_ARGS__                       \
    }
#define BACKEND_KEY(n, kind, f, ...)                                                               \
    {                                                                                              \
        .name = n, .type = kind, .off = offsetof(struct cfg_backend, f), __VA_ARGS__               \
    }
#define CUSTOM_KEY(n)                                                                              \
    {                                                                                              \
        .name = n, .type = KEY_CUSTOM                                                              \
    }

_Static_assert(sizeof(enum budget_period) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum log_bodies) == sizeof(int), "enums are stored as int");

static const char *const synchronous_modes[] = {"normal", "full", "off", NULL};
static const char *const budget_periods[] = {"day", "month", "total", NULL}; /* enum order */
static const char *const body_modes[] = {"none", "redacted", "full", NULL};  /* enum order */
static const char *const default_roles[] = {"AI.User", NULL};
static const char *const default_deny[] = {"ignore previous", "disregard instructions",
                                           "you are now", NULL};
static const char *const default_redaction[] = {"sk-[a-zA-Z0-9]{48}", NULL};

static const struct key database_keys[] = {
    CFG_KEY("path", KEY_STRING, database.path, .sdflt = "/var/lib/aigw/aigw.db"),
    CFG_KEY("synchronous", KEY_STRING, database.synchronous, .sdflt = "normal",
            .choices = synchronous_modes),
    CFG_KEY("busy_timeout_ms", KEY_INT, database.busy_timeout_ms, .dflt = 5000, .min = 0,
            .max = 600000),
    CFG_KEY("url", KEY_STRING, database.url),
    CFG_KEY("password", KEY_STRING, database.password_ref),
    CFG_KEY("local_path", KEY_STRING, database.local_path),
    CFG_KEY("statement_timeout_ms", KEY_INT, database.statement_timeout_ms, .dflt = 5000,
            .min = 100, .max = 600000),
    CFG_KEY("connect_timeout_s", KEY_INT, database.connect_timeout_s, .dflt = 5, .min = 1,
            .max = 300),
    {0}};
static const struct key server_keys[] = {
    CFG_KEY("threads_per_worker", KEY_INT, server.threads_per_worker, .dflt = CFG_DEFAULT_THREADS,
            .min = 1, .max = CFG_MAX_THREADS),
    {0}};
static const struct key auth_keys[] = {
    CFG_KEY("enabled", KEY_BOOL, auth.enabled, .dflt = 1),
    CFG_KEY("api_keys", KEY_BOOL, auth.api_keys, .dflt = 1),
    CFG_KEY("on_behalf_of_role", KEY_STRING, auth.on_behalf_of_role, .sdflt = "AI.OnBehalfOf"),
    CFG_KEY("admin_role", KEY_STRING, auth.admin_role, .sdflt = "AI.Admin"),
    CUSTOM_KEY("jwt"),
    {0}};
static const struct key jwt_keys[] = {
    CFG_KEY("issuer", KEY_STRING, auth.jwt_issuer, .sdflt = NULL),
    CFG_KEY("audience", KEY_STRING, auth.jwt_audience, .sdflt = NULL),
    CFG_KEY("openid_config_url", KEY_STRING, auth.jwt_openid_config_url, .sdflt = NULL),
    CFG_KEY("jwks_file", KEY_STRING, auth.jwt_jwks_file, .sdflt = NULL),
    CFG_KEY("hs256_secret", KEY_STRING, auth.jwt_hs256_secret_ref, .sdflt = NULL),
    CFG_KEY("required_roles", KEY_LIST, auth.required_roles,
            .count_off = offsetof(struct cfg, auth.n_required_roles), .ldflt = default_roles),
    CFG_KEY("user_claim", KEY_STRING, auth.user_claim, .sdflt = "sub"),
    CFG_KEY("leeway_s", KEY_INT, auth.leeway_s, .dflt = 60, .min = 0, .max = 3600),
    {0}};
static const struct key limits_keys[] = {
    CFG_KEY("requests_per_window", KEY_LONG, limits.requests_per_window, .dflt = 100, .min = 0,
            .max = 100000000),
    CFG_KEY("window_s", KEY_LONG, limits.window_s, .dflt = 60, .min = 1, .max = 86400 * 31),
    CFG_KEY("tokens_per_minute", KEY_LONG, limits.tokens_per_minute, .dflt = 0, .min = 0,
            .max = 1000000000),
    CFG_KEY("default_token_budget", KEY_LONG, limits.default_token_budget, .dflt = 10000, .min = 0,
            .max = 1L << 50),
    CFG_KEY("budget_period", KEY_ENUM, limits.budget_period, .dflt = PERIOD_DAY,
            .choices = budget_periods),
    {0}};
static const struct key validation_keys[] = {
    CFG_KEY("max_body_bytes", KEY_SIZE, validation.max_body_bytes, .dflt = 1048576, .min = 64,
            .max = 64L << 20),
    CFG_KEY("max_depth", KEY_INT, validation.max_depth, .dflt = 64, .min = 2, .max = 64),
    CFG_KEY("max_messages", KEY_INT, validation.max_messages, .dflt = 50, .min = 1, .max = 10000),
    CFG_KEY("max_content_chars", KEY_INT, validation.max_content_chars, .dflt = 32000, .min = 1,
            .max = 10000000),
    CFG_KEY("max_tokens", KEY_INT, validation.max_tokens, .dflt = 4096, .min = 1, .max = 10000000),
    CFG_KEY("deny_patterns", KEY_LIST, validation.deny_patterns,
            .count_off = offsetof(struct cfg, validation.n_deny_patterns), .ldflt = default_deny),
    {0}};
static const struct key redaction_keys[] = {
    CFG_KEY("patterns", KEY_LIST, redaction.patterns,
            .count_off = offsetof(struct cfg, redaction.n_patterns), .ldflt = default_redaction),
    CFG_KEY("replacement", KEY_STRING, redaction.replacement, .sdflt = "[REDACTED_KEY]"),
    /* At least the seed's key (51 characters) must fit in what a stream holds back. */
    CFG_KEY("max_match_chars", KEY_INT, redaction.max_match_chars, .dflt = 128, .min = 64,
            .max = 4096),
    {0}};
static const struct key retry_keys[] = {
    CFG_KEY("max_attempts", KEY_INT, retry.max_attempts, .dflt = 3, .min = 1, .max = 20),
    CFG_KEY("base_delay_ms", KEY_INT, retry.base_delay_ms, .dflt = 500, .min = 0, .max = 60000),
    CFG_KEY("max_delay_ms", KEY_INT, retry.max_delay_ms, .dflt = 10000, .min = 0, .max = 600000),
    CFG_KEY("deadline_s", KEY_NUMBER, retry.deadline_s, .ndflt = 120, .nmin = 0.1, .nmax = 3600),
    {0}};
static const struct key breaker_keys[] = {
    CFG_KEY("failure_threshold", KEY_INT, breaker.failure_threshold, .dflt = 5, .min = 1,
            .max = 1000),
    CFG_KEY("recovery_timeout_s", KEY_NUMBER, breaker.recovery_timeout_s, .ndflt = 30, .nmin = 0.1,
            .nmax = 86400),
    CFG_KEY("half_open_max_calls", KEY_INT, breaker.half_open_max_calls, .dflt = 3, .min = 1,
            .max = 1000),
    {0}};
static const struct key audit_keys[] = {
    CFG_KEY("log_bodies", KEY_ENUM, audit.log_bodies, .dflt = LOG_BODIES_REDACTED,
            .choices = body_modes),
    CFG_KEY("retention_days", KEY_INT, audit.retention_days, .dflt = 90, .min = 0, .max = 36500),
    {0}};
static const struct key telemetry_keys[] = {
    CFG_KEY("otlp_endpoint", KEY_STRING, telemetry.otlp_endpoint, .sdflt = NULL),
    CFG_KEY("service_name", KEY_STRING, telemetry.service_name, .sdflt = "aigw"),
    /* One series per user breaks Prometheus at tens of thousands of users;
     * the reports hold the per-user numbers either way. */
    CFG_KEY("metrics_user_label", KEY_BOOL, telemetry.metrics_user_label, .dflt = 0),
    {0}};
static const struct key secrets_keys[] = {
    CFG_KEY("cache_ttl_s", KEY_INT, secrets.cache_ttl_s, .dflt = 300, .min = 0, .max = 86400 * 30),
    CUSTOM_KEY("keyvault"),
    {0}};

/* One backend (backends[i]); its type, url, name, style, deployments and
 * Entra settings are checked by load_backend after the table. */
static const struct key backend_keys[] = {
    BACKEND_KEY("name", KEY_STRING, name, .sdflt = NULL),
    CUSTOM_KEY("type"),
    BACKEND_KEY("url", KEY_STRING, url, .sdflt = NULL),
    BACKEND_KEY("api_key", KEY_STRING, api_key_ref, .sdflt = NULL),
    BACKEND_KEY("priority", KEY_INT, priority, .dflt = 1, .min = 0, .max = 1000),
    BACKEND_KEY("weight", KEY_INT, weight, .dflt = 1, .min = 1, .max = 1000),
    BACKEND_KEY("api_version", KEY_STRING, api_version, .sdflt = NULL),
    CUSTOM_KEY("api_style"),
    CUSTOM_KEY("deployments"),
    CUSTOM_KEY("entra"),
    BACKEND_KEY("timeout_s", KEY_NUMBER, timeout_s, .ndflt = 60, .nmin = 0.1, .nmax = 3600),
    BACKEND_KEY("connect_timeout_s", KEY_NUMBER, connect_timeout_s, .ndflt = 5, .nmin = 0.1,
                .nmax = 600),
    {0}};

/* How to sign in with Entra ID (backends[i].entra): read by load_entra,
 * whose defaults depend on the identity chosen. */
#define ENTRA_KEYS                                                                                 \
    CUSTOM_KEY("auth"), CUSTOM_KEY("tenant_id"), CUSTOM_KEY("client_id"),                          \
        CUSTOM_KEY("client_secret"), CUSTOM_KEY("token_file"), CUSTOM_KEY("authority_host"),       \
        CUSTOM_KEY("imds_endpoint"), CUSTOM_KEY("identity_endpoint"), CUSTOM_KEY("scope"),         \
        CUSTOM_KEY("timeout_s")
static const struct key entra_keys[] = {ENTRA_KEYS, {0}};
/* secrets.keyvault: the same, and the vault's API version. */
static const struct key keyvault_keys[] = {ENTRA_KEYS, CUSTOM_KEY("api_version"), {0}};

/* The top-level sections read from tables (auth.jwt is read inside auth). */
static const struct {
    const char *name;
    const struct key *keys;
} sections[] = {
    {"database", database_keys},   {"server", server_keys},           {"auth", auth_keys},
    {"limits", limits_keys},       {"validation", validation_keys},   {"redaction", redaction_keys},
    {"retry", retry_keys},         {"circuit_breaker", breaker_keys}, {"audit", audit_keys},
    {"telemetry", telemetry_keys}, {"secrets", secrets_keys},
};

/* The top-level keys read by code. */
static const char *const top_custom[] = {"environment", "backends", "default_model", NULL};

/* The object under key, or NULL; a wrong type is reported where the
 * section itself is read, not again here. */
static json_object *peek_object(json_object *parent, const char *key)
{
    json_object *v;
    return parent && json_object_object_get_ex(parent, key, &v) &&
                   json_object_is_type(v, json_type_object)
               ? v
               : NULL;
}

/* 1 when a URI's user information (scheme://user:password@host) has a password. */
static int uri_has_password(const char *uri)
{
    const char *p = strstr(uri, "://");
    if (!p)
        return 0;
    p += 3;
    size_t host_at = strcspn(p, "/?");
    const char *at = memchr(p, '@', host_at);
    return at && memchr(p, ':', (size_t)(at - p)) != NULL;
}

/* database: SQLite at path, or PostgreSQL at url; and where the host's own
 * files go (the writer lock and the epochs page, which are per host even
 * when the database is shared by several). */
static void load_database(struct loader *L, json_object *db, struct cfg *c)
{
    json_object *v;
    if (!c->database.url) {
        if (!c->database.local_path)
            c->database.local_path = xstrdup(c->database.path);
        if (c->database.password_ref)
            problem(L, "database.password", "is for PostgreSQL: set database.url too");
        return;
    }
    if (db && json_object_object_get_ex(db, "path", &v))
        problem(L, "database", "has both path (SQLite) and url (PostgreSQL): keep one");
    if (strncmp(c->database.url, "postgresql://", 13) != 0 &&
        strncmp(c->database.url, "postgres://", 11) != 0)
        problem(L, "database.url", "must be a PostgreSQL URI: postgresql://USER@HOST:PORT/DBNAME");
    else if (uri_has_password(c->database.url))
        problem(L, "database.url",
                "holds a password; put it in database.password as a secret reference "
                "(env:PGPASSWORD, file:..., keyvault:...)");
    check_secret_ref(L, "database.password", c->database.password_ref, c->environment);
    if (!c->database.local_path)
        c->database.local_path = xstrdup("/var/lib/aigw/aigw-postgresql");
}

/* '"a", "b" or "c"' for a message. */
static void choice_list(const char *const *choices, char *out, size_t n)
{
    size_t k = 0, count = 0;
    while (choices[count])
        count++;
    out[0] = '\0';
    for (size_t i = 0; i < count; i++)
        k += (size_t)snprintf(out + k, k < n ? n - k : 0, "%s\"%s\"",
                              i == 0           ? ""
                              : i + 1 == count ? " or "
                                               : ", ",
                              choices[i]);
}

static int choice_index(const char *const *choices, const char *v)
{
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], v) == 0)
            return i;
    return -1;
}

/* Reports the keys of obj that no row of keys names. */
static void check_table_keys(struct loader *L, json_object *obj, const char *path,
                             const struct key *keys)
{
    const char *names[64];
    size_t n = 0;
    for (const struct key *k = keys; k->name && n + 1 < sizeof names / sizeof names[0]; k++)
        names[n++] = k->name;
    names[n] = NULL;
    check_keys(L, obj, path, names);
}

/* Reads every key of the table from obj (NULL: all defaults) into base. */
static void load_keys(struct loader *L, json_object *obj, const char *path, const struct key *keys,
                      void *base)
{
    if (obj)
        check_table_keys(L, obj, path, keys);
    char *b = base;
    char p[256], msg[128];
    for (const struct key *k = keys; k->name; k++) {
        void *at = b + k->off;
        switch (k->type) {
        case KEY_STRING:
            *(char **)at = get_string(L, obj, path, k->name, k->sdflt);
            if (k->choices && *(char **)at && choice_index(k->choices, *(char **)at) < 0) {
                join_path(p, sizeof p, path, k->name);
                choice_list(k->choices, msg, sizeof msg);
                problem(L, p, "must be %s", msg);
            }
            break;
        case KEY_INT:
            *(int *)at = (int)get_int(L, obj, path, k->name, k->dflt, k->min, k->max);
            break;
        case KEY_LONG: *(long *)at = get_int(L, obj, path, k->name, k->dflt, k->min, k->max); break;
        case KEY_SIZE:
            *(size_t *)at = (size_t)get_int(L, obj, path, k->name, k->dflt, k->min, k->max);
            break;
        case KEY_NUMBER:
            *(double *)at = get_number(L, obj, path, k->name, k->ndflt, k->nmin, k->nmax);
            break;
        case KEY_BOOL: *(int *)at = get_bool(L, obj, path, k->name, (int)k->dflt); break;
        case KEY_ENUM: {
            char *v = get_string(L, obj, path, k->name, k->choices[k->dflt]);
            int i = choice_index(k->choices, v);
            if (i < 0) {
                join_path(p, sizeof p, path, k->name);
                choice_list(k->choices, msg, sizeof msg);
                problem(L, p, "must be %s", msg);
                i = (int)k->dflt;
            }
            *(int *)at = i;
            free(v);
            break;
        }
        case KEY_LIST:
            *(char ***)at =
                get_string_list(L, obj, path, k->name, k->ldflt, (size_t *)(b + k->count_off));
            break;
        case KEY_CUSTOM: break;
        }
    }
}

/* Frees what load_keys allocated for the table in base. */
static void free_keys(const struct key *keys, void *base)
{
    char *b = base;
    for (const struct key *k = keys; k->name; k++) {
        if (k->type == KEY_STRING)
            free(*(char **)(b + k->off));
        else if (k->type == KEY_LIST)
            free_list(*(char ***)(b + k->off), *(size_t *)(b + k->count_off));
    }
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
    load_keys(L, o, path, backend_keys, b);
    char p[256];
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
    join_path(p, sizeof p, path, "api_key");
    check_secret_ref(L, p, b->api_key_ref, environment);
    json_object *entra = get_object(L, o, path, "entra");
    if (entra) {
        char pe[256];
        join_path(pe, sizeof pe, path, "entra");
        check_table_keys(L, entra, pe, entra_keys);
        b->entra = calloc(1, sizeof *b->entra);
        if (b->entra)
            load_entra(L, entra, pe, "https://cognitiveservices.azure.com/.default", environment,
                       b->entra);
        if (b->api_key_ref)
            problem(L, pe, "and api_key exclude each other: a backend signs in one way");
        if (b->type != BACKEND_AZURE)
            problem(L, pe, "applies to type \"azure\" only");
    }
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
    {
        const char *top[32];
        size_t n = 0;
        for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
            top[n++] = sections[i].name;
        for (const char *const *t = top_custom; *t; t++)
            top[n++] = *t;
        top[n] = NULL;
        check_keys(L, root, "", top);
    }

    c->environment = get_string(L, root, "", "environment",
                                getenv("AIGW_ENV") ? getenv("AIGW_ENV") : "production");
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        load_keys(L, get_object(L, root, "", sections[i].name), sections[i].name, sections[i].keys,
                  c);

    load_database(L, peek_object(root, "database"), c);

    /* auth.jwt: its keys, then what they mean together. */
    json_object *jwt = get_object(L, peek_object(root, "auth"), "auth", "jwt");
    load_keys(L, jwt, "auth.jwt", jwt_keys, c);
    check_secret_ref(L, "auth.jwt.hs256_secret", c->auth.jwt_hs256_secret_ref, c->environment);
    if (jwt && !c->auth.jwt_openid_config_url && !c->auth.jwt_jwks_file &&
        !c->auth.jwt_hs256_secret_ref)
        problem(L, "auth.jwt", "needs one of openid_config_url, jwks_file or hs256_secret");
    if (jwt && (!c->auth.jwt_issuer || !c->auth.jwt_audience))
        problem(L, "auth.jwt", "needs issuer and audience: tokens are checked against both");

    for (size_t i = 0; i < c->redaction.n_patterns; i++) {
        char p[64];
        snprintf(p, sizeof p, "redaction.patterns[%zu]", i);
        regex_ok(L, p, c->redaction.patterns[i], 0);
    }

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

    if (c->telemetry.otlp_endpoint && strncmp(c->telemetry.otlp_endpoint, "http://", 7) != 0 &&
        strncmp(c->telemetry.otlp_endpoint, "https://", 8) != 0)
        problem(L, "telemetry.otlp_endpoint", "must start with http:// or https://");

    json_object *kv = get_object(L, peek_object(root, "secrets"), "secrets", "keyvault");
    if (kv)
        check_table_keys(L, kv, "secrets.keyvault", keyvault_keys);
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
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
        free_keys(sections[i].keys, c);
    free_keys(jwt_keys, c);
    for (size_t i = 0; i < c->n_backends; i++) {
        struct cfg_backend *b = &c->backends[i];
        free_keys(backend_keys, b);
        entra_free(b->entra);
        free(b->entra);
        for (size_t j = 0; j < b->n_deployments; j++) {
            free(b->deployments[j].model);
            free(b->deployments[j].deployment);
        }
        free(b->deployments);
    }
    free(c->backends);
    free(c->default_model);
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
