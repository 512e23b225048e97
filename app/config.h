/*
 * config.h - the gateway's configuration, loaded once per process.
 *
 * The JSON file (the README's Configuration section) becomes a struct cfg with every default
 * filled in and every value checked; the request path reads only this struct
 * and never the file. Secrets stay references (env:, file:, keyvault:) here
 * and are resolved by secrets.c when first needed.
 */
#ifndef AIGW_CONFIG_H
#define AIGW_CONFIG_H

#include <stddef.h>

#include "buf.h"

enum backend_type { BACKEND_AZURE, BACKEND_OPENAI };
enum budget_period { PERIOD_DAY, PERIOD_MONTH, PERIOD_TOTAL };
enum log_bodies { LOG_BODIES_NONE, LOG_BODIES_REDACTED, LOG_BODIES_FULL };

#define CFG_MAX_BACKENDS 64 /* dispatch orders candidates in a fixed array of this size */
/* Requests one worker process serves at once. A model call mostly waits on
 * the network, so a thread costs its stack and buffers, not a CPU: 256 per
 * process, at 2 processes per CPU, hold 1,024 calls on a 2-CPU host. */
#define CFG_DEFAULT_THREADS 256
#define CFG_MAX_THREADS     4096

struct cfg_deployment {
    char *model;      /* the name clients ask for */
    char *deployment; /* this backend's deployment (Azure) or model (OpenAI) name */
};

/* How aigw signs in with Entra ID (for Key Vault, or an Azure OpenAI backend). */
struct cfg_entra {
    char *auth;              /* "managed_identity", "workload_identity" or "client_credentials" */
    char *tenant_id;         /* workload identity: default $AZURE_TENANT_ID */
    char *client_id;         /* client credentials, workload identity ($AZURE_CLIENT_ID), or a
                                user-assigned managed identity */
    char *client_secret_ref; /* client credentials: a secret reference (env: or file:) */
    char *token_file;        /* workload identity: default $AZURE_FEDERATED_TOKEN_FILE */
    char *authority_host; /* default $AZURE_AUTHORITY_HOST or https://login.microsoftonline.com */
    char *imds_endpoint;  /* default http://169.254.169.254/metadata/identity/oauth2/token */
    char *identity_endpoint; /* App Service; default $IDENTITY_ENDPOINT */
    char *scope;             /* e.g. https://cognitiveservices.azure.com/.default */
    double timeout_s;
};

struct cfg_backend {
    char *name;
    enum backend_type type;
    char *url;               /* base URL without trailing slash */
    char *api_key_ref;       /* secret reference; NULL for no key */
    struct cfg_entra *entra; /* sign in with Entra ID instead of a key; NULL when not */
    int priority;            /* lower is preferred */
    int weight;              /* relative share within a priority */
    char *api_version;       /* pinned api-version, or NULL to forward the client's */
    int v1_api;              /* azure: call {url}/openai/v1/... (api_style "v1") */
    struct cfg_deployment *deployments;
    size_t n_deployments;
    double timeout_s;
    double connect_timeout_s;
};

struct cfg {
    char *path;
    char *environment;
    struct {
        char *path;               /* SQLite: the database file (when url is not set) */
        char *url;                /* PostgreSQL: a libpq URI, postgresql://USER@HOST:PORT/DBNAME */
        char *password_ref;       /* PostgreSQL: a secret reference, or NULL */
        char *local_path;         /* prefix of the host's own files (writer lock, epochs) */
        char *synchronous;        /* SQLite */
        int busy_timeout_ms;      /* SQLite */
        int statement_timeout_ms; /* PostgreSQL: bounds every statement */
        int connect_timeout_s;    /* PostgreSQL */
    } database;
    struct {
        int threads_per_worker; /* $AIGW_THREADS and aigw serve --threads override it */
    } server;
    struct {
        int enabled;
        int api_keys;
        char *jwt_issuer;
        char *jwt_audience;
        char *jwt_openid_config_url;
        char *jwt_jwks_file;
        char *jwt_hs256_secret_ref;
        char *user_claim;
        int leeway_s;
        char **required_roles;
        size_t n_required_roles;
        char *on_behalf_of_role;
        char *admin_role; /* who may call /admin/api/ */
    } auth;
    struct {
        long requests_per_window;
        long window_s;
        long tokens_per_minute; /* 0 = no token rate limit */
        long default_token_budget;
        enum budget_period budget_period;
    } limits;
    struct {
        size_t max_body_bytes;
        int max_depth;
        int max_messages;
        int max_content_chars;
        int max_tokens;
        char **deny_patterns;
        size_t n_deny_patterns;
    } validation;
    struct {
        char **patterns;
        size_t n_patterns;
        char *replacement;
        int max_match_chars; /* longest secret a pattern may match; stream hold-back */
    } redaction;
    struct cfg_backend *backends;
    size_t n_backends;
    char *default_model;
    struct {
        int max_attempts;
        int base_delay_ms;
        int max_delay_ms;
        double deadline_s;
    } retry;
    struct {
        int failure_threshold;
        double recovery_timeout_s;
        int half_open_max_calls;
    } breaker;
    struct {
        enum log_bodies log_bodies;
        int retention_days;
    } audit;
    struct {
        char *otlp_endpoint;
        char *service_name;
        int metrics_user_label; /* aigw_tokens_total{user=...}: off by default */
    } telemetry;
    struct {
        int cache_ttl_s;
        struct cfg_entra keyvault; /* how to get a token for the vault */
        char *kv_api_version;      /* default 7.4 */
    } secrets;
};

/*
 * Loads and checks the file at path. On success returns a new struct cfg the
 * caller frees with cfg_free. On failure returns NULL and appends one line per
 * problem to problems, each naming the file and the JSON path.
 * Warnings (e.g. a literal key in the file) are appended to warnings when it is
 * not NULL; they do not make the load fail.
 */
struct cfg *cfg_load(const char *path, struct buf *problems, struct buf *warnings);

/* Loads from a JSON text instead of a file; name is used in messages. */
struct cfg *cfg_load_string(const char *name, const char *text, struct buf *problems,
                            struct buf *warnings);

/* The path given, else $AIGW_CONFIG, else /etc/aigw/aigw.json. */
const char *cfg_default_path(const char *given);

void cfg_free(struct cfg *cfg);

/* The backend's deployment name for model, or NULL when it does not serve it. */
const char *cfg_backend_deployment(const struct cfg_backend *b, const char *model);

const char *cfg_period_name(enum budget_period p);

#endif
