/*
 * auth.c - credentials, API keys, roles and the subject of limits (see auth.h).
 *
 * API keys look like aigw_<12 hex id>_<43 base64url chars>: 256 random bits.
 * Only their SHA-256 is stored, so a copy of the database yields no usable key.
 */
#include "auth.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "db.h"
#include "jwt.h"
#include "store.h"
#include "worker.h"

#define KEY_PREFIX "aigw_"

int auth_printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

int auth_has_role(const char *roles, const char *role)
{
    size_t n = strlen(role);
    const char *p = roles;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (len == n && strncmp(p, role, n) == 0)
            return 1;
        p = end;
    }
    return 0;
}

void auth_key_hash(const char *key, size_t len, unsigned char hash[32])
{
    unsigned int n = 32;
    EVP_Digest(key, len, hash, &n, EVP_sha256(), NULL);
}

int auth_key_generate(char *out, size_t out_len, char *key_id, size_t key_id_len,
                      unsigned char hash[32])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static const char hex[] = "0123456789abcdef";
    unsigned char raw[6 + 32];
    if (out_len < 64 || key_id_len < 13 || getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return -1;
    for (int i = 0; i < 6; i++) {
        key_id[2 * i] = hex[raw[i] >> 4];
        key_id[2 * i + 1] = hex[raw[i] & 15];
    }
    key_id[12] = '\0';
    char secret[44];
    int k = 0;
    /* 32 bytes -> 43 base64url characters (the last one carries 4 bits). */
    for (int i = 0; i < 32; i += 3) {
        unsigned v = (unsigned)raw[6 + i] << 16;
        if (i + 1 < 32)
            v |= (unsigned)raw[6 + i + 1] << 8;
        if (i + 2 < 32)
            v |= raw[6 + i + 2];
        secret[k++] = b64[(v >> 18) & 63];
        secret[k++] = b64[(v >> 12) & 63];
        if (i + 1 < 32)
            secret[k++] = b64[(v >> 6) & 63];
        if (i + 2 < 32)
            secret[k++] = b64[v & 63];
    }
    secret[k] = '\0';
    snprintf(out, out_len, KEY_PREFIX "%s_%s", key_id, secret);
    auth_key_hash(out, strlen(out), hash);
    return 0;
}

static int read_user(struct store *st, const void *id, void *row)
{
    return store_user_get(st, id, row);
}

static int read_key(struct store *st, const void *hash, void *row)
{
    return store_key_by_hash(st, hash, row);
}

/* The user row of id (through the process's row cache): 1 found, 0 not, -1 error. */
static int user_lookup(struct request *req, const char *id, struct user_row *u)
{
    return db_read_row(req->w->db, DB_ROWS_USERS, id, strlen(id) + 1, u, read_user);
}

/* Fills the caller's limits from the user row (or the config's defaults). */
void auth_limits_in_force(const struct cfg *cfg, const struct user_row *u, struct caller *c)
{
    c->requests_per_window = u && u->requests_per_window >= 0 ? (long)u->requests_per_window
                                                              : cfg->limits.requests_per_window;
    c->window_s = u && u->window_s > 0 ? (long)u->window_s : cfg->limits.window_s;
    c->tokens_per_minute =
        u && u->tokens_per_minute >= 0 ? (long)u->tokens_per_minute : cfg->limits.tokens_per_minute;
    c->token_budget =
        u && u->token_budget >= 0 ? (long)u->token_budget : cfg->limits.default_token_budget;
    c->budget_period = cfg->limits.budget_period;
    if (u && strcmp(u->budget_period, "day") == 0)
        c->budget_period = PERIOD_DAY;
    else if (u && strcmp(u->budget_period, "month") == 0)
        c->budget_period = PERIOD_MONTH;
    else if (u && strcmp(u->budget_period, "total") == 0)
        c->budget_period = PERIOD_TOTAL;
}

static void apply_limits(struct request *req, const struct user_row *u)
{
    auth_limits_in_force(req->w->cfg, u, &req->caller);
}

static enum aigw_err auth_api_key(struct request *req, const char *key)
{
    size_t len = strlen(key);
    if (len < sizeof KEY_PREFIX || len > 128 ||
        strncmp(key, KEY_PREFIX, sizeof KEY_PREFIX - 1) != 0)
        return request_fail(req, AIGW_ERR_INVALID_API_KEY, "", "The API key is not a gateway key.");
    unsigned char hash[32];
    auth_key_hash(key, len, hash);
    struct key_row k;
    int found = db_read_row(req->w->db, DB_ROWS_KEYS, hash, sizeof hash, &k, read_key);
    if (found < 0)
        return request_store_unavailable(req);
    if (!found)
        return request_fail(req, AIGW_ERR_INVALID_API_KEY, "", "The API key is not valid.");
    if (k.revoked_ms)
        return request_fail(req, AIGW_ERR_INVALID_API_KEY, "", "The API key has been revoked.");
    if (k.expires_ms && k.expires_ms <= now_ms())
        return request_fail(req, AIGW_ERR_INVALID_API_KEY, "", "The API key has expired.");
    struct user_row u;
    int ufound = user_lookup(req, k.user_id, &u);
    if (ufound < 0)
        return request_store_unavailable(req);
    if (!ufound || u.disabled)
        return request_fail(req, AIGW_ERR_INVALID_API_KEY, "", "The API key's user is disabled.");
    struct caller *c = &req->caller;
    c->authenticated = 1;
    c->via = "api_key";
    snprintf(c->user_id, sizeof c->user_id, "%s", u.user_id);
    snprintf(c->roles, sizeof c->roles, "%s", u.roles);
    apply_limits(req, &u);
    return AIGW_OK;
}

static enum aigw_err auth_jwt(struct request *req, const char *token)
{
    char why[160] = "";
    struct caller *c = &req->caller;
    enum aigw_err e = jwt_verify(req->w, token, now_ms() / 1000, c, why, sizeof why);
    if (e == AIGW_ERR_AUTH_UNAVAILABLE) {
        req->retry_after_s = JWT_KEYS_RETRY_S;
        return request_fail(req, e, "", "Cannot check the bearer token now: %s; retry later.", why);
    }
    if (e != AIGW_OK)
        return request_fail(req, AIGW_ERR_INVALID_TOKEN, "", "Invalid bearer token: %s.",
                            why[0] ? why : "verification failed");
    struct user_row u;
    int found = user_lookup(req, c->user_id, &u);
    if (found < 0)
        return request_store_unavailable(req);
    if (found && u.disabled)
        return request_fail(req, AIGW_ERR_FORBIDDEN, "", "User %s is disabled.", c->user_id);
    apply_limits(req, found ? &u : NULL);
    return AIGW_OK;
}

static int repeated(const char *value)
{
    /* The web server joins a repeated header with ", ". */
    return value && strchr(value, ',') != NULL;
}

enum aigw_err auth_authenticate(struct request *req)
{
    const struct cfg *cfg = req->w->cfg;
    const char *authz = req->authorization, *apikey = req->api_key;
    if (authz && !*authz)
        authz = NULL;
    if (apikey && !*apikey)
        apikey = NULL;
    if (!cfg->auth.enabled) {
        req->caller.via = "none";
        apply_limits(req, NULL);
        return AIGW_OK;
    }
    if (authz && apikey)
        return request_fail(req, AIGW_ERR_INVALID_VALUE, "Authorization",
                            "Send either an Authorization header or an api-key header, not both.");
    if (req->repeated_credential)
        return request_fail(req, AIGW_ERR_INVALID_VALUE, req->repeated_credential,
                            "The %s header is repeated; send it once.", req->repeated_credential);
    if (repeated(authz) || repeated(apikey))
        return request_fail(req, AIGW_ERR_INVALID_VALUE, authz ? "Authorization" : "api-key",
                            "The credential header is repeated; send it once.");
    if (apikey)
        return auth_api_key(req, apikey);
    if (!authz)
        return request_fail(req, AIGW_ERR_INVALID_TOKEN, "",
                            "Missing credentials: send Authorization: Bearer <token or key>.");
    if (strncasecmp(authz, "Bearer ", 7) != 0)
        return request_fail(req, AIGW_ERR_INVALID_TOKEN, "",
                            "The Authorization header must use the Bearer scheme.");
    const char *cred = authz + 7;
    while (*cred == ' ')
        cred++;
    if (strncmp(cred, KEY_PREFIX, sizeof KEY_PREFIX - 1) == 0) {
        if (!cfg->auth.api_keys)
            return request_fail(req, AIGW_ERR_INVALID_API_KEY, "",
                                "API keys are not accepted here.");
        return auth_api_key(req, cred);
    }
    return auth_jwt(req, cred);
}

enum aigw_err auth_authorize_subject(struct request *req)
{
    const struct cfg *cfg = req->w->cfg;
    struct caller *c = &req->caller;
    if (!c->authenticated) {
        /* Authentication explicitly off: the body's user carries the limits. */
        req->subject = req->in.user_id ? req->in.user_id : "anonymous";
        return AIGW_OK;
    }
    int allowed = cfg->auth.n_required_roles == 0;
    for (size_t i = 0; i < cfg->auth.n_required_roles && !allowed; i++)
        allowed = auth_has_role(c->roles, cfg->auth.required_roles[i]);
    if (!allowed)
        return request_fail(req, AIGW_ERR_FORBIDDEN, "", "The caller lacks the required role (%s).",
                            cfg->auth.required_roles[0]);
    req->subject = c->user_id;
    const char *body_user = req->in.user_id;
    if (body_user && strcmp(body_user, c->user_id) != 0) {
        if (req->route != ROUTE_SEED_CHAT) {
            /* On the compatible paths "user" is the end user's label, not an identity claim. */
            req->end_user = body_user;
            return AIGW_OK;
        }
        if (!cfg->auth.on_behalf_of_role || !auth_has_role(c->roles, cfg->auth.on_behalf_of_role))
            return request_fail(
                req, AIGW_ERR_FORBIDDEN, "user_id",
                "user_id must be the authenticated user (%s) unless the caller holds "
                "the on-behalf-of role.",
                c->user_id);
        /* A trusted application calling for its user: the user's limits apply. */
        struct user_row u;
        int found = user_lookup(req, body_user, &u);
        if (found < 0)
            return request_store_unavailable(req);
        if (found && u.disabled)
            return request_fail(req, AIGW_ERR_FORBIDDEN, "user_id", "User %s is disabled.",
                                body_user);
        apply_limits(req, found ? &u : NULL);
        req->subject = body_user;
        req->end_user = body_user;
    }
    return AIGW_OK;
}
