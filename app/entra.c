/*
 * entra.c - Entra ID access tokens (see entra.h).
 *
 * The token endpoints:
 *   client credentials: POST {authority_host}/{tenant}/oauth2/v2.0/token with
 *     the app's id and secret and the scope;
 *   workload identity: the same endpoint, with the federated token read from
 *     token_file as a client assertion (AKS rotates the file: it is read at
 *     every fetch);
 *   App Service managed identity, when identity_endpoint or $IDENTITY_ENDPOINT
 *     is set: GET it with X-IDENTITY-HEADER: $IDENTITY_HEADER;
 *   VM managed identity otherwise: GET the IMDS endpoint with Metadata: true.
 * The managed identities take the resource (the scope without /.default).
 *
 * Everything that passes through here is secret: the token, the client
 * secret, the federated token. Buffers that held one are wiped before they
 * are freed; error messages are built from status codes, curl's transport
 * errors and the short error codes Azure puts in its answers.
 */
#include "entra.h"

#include "backend.h"

#include <ctype.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "json_strict.h"
#include "secrets.h"

#define IMDS_API_VERSION        "2018-02-01"
#define APP_SERVICE_API_VERSION "2019-08-01"
/* A token answer is a few KiB; more than this is not an answer we asked for. */
#define ENTRA_MAX_ANSWER ((int)SMALL_ANSWER_MAX) /* what backend_collect_small_answer keeps */
#define ENTRA_JSON_DEPTH 16
/* An old token is still sent while a refresh fails, until this close to expiry. */
#define TOKEN_SKEW_S 30
/* A federated token file (a JWT) is a few KiB. */
#define TOKEN_FILE_MAX (64 * 1024)

struct entra_token {
    const struct cfg_entra *cfg;
    const char *path;        /* the settings' name in the configuration */
    const char *label;       /* what the token is, for messages */
    const char *environment; /* for the client secret's reference */
    pthread_mutex_t mu;      /* held while fetching: one fetch, the others wait */
    CURL *curl;
    struct buf token;  /* empty when there is none */
    int64_t expires_s; /* epoch seconds */
    int64_t refresh_s; /* when to ask for a new one */
    unsigned long requests;
};

static int nonempty(const char *s)
{
    return s && *s;
}

void entra_headers_free(struct curl_slist *list)
{
    for (struct curl_slist *n = list; n; n = n->next)
        OPENSSL_cleanse(n->data, strlen(n->data));
    curl_slist_free_all(list);
}

int entra_put_escaped(struct buf *b, const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        return -1;
    int rc = buf_puts(b, e);
    OPENSSL_cleanse(e, strlen(e));
    curl_free(e);
    return rc;
}

int entra_check_loopback_host(const char *host, size_t n, struct buf *err)
{
    /* hl: the host's length without the port; an IPv6 address is in brackets. */
    size_t hl;
    if (host[0] == '[') {
        const char *close = memchr(host, ']', n);
        hl = close ? (size_t)(close - host) + 1 : n;
    } else {
        hl = strcspn(host, ":/?#");
    }
    int loopback = (hl == 9 && strncmp(host, "127.0.0.1", 9) == 0) ||
                   (hl == 9 && strncasecmp(host, "localhost", 9) == 0) ||
                   (hl == 5 && strncmp(host, "[::1]", 5) == 0);
    if (!loopback) {
        buf_printf(err,
                   "plain http:// is allowed only for a loopback host (127.0.0.1, localhost, "
                   "[::1]), not %.*s",
                   (int)hl, host);
        return -1;
    }
    if (hl == n)
        return 0;
    const char *port_s = host + hl + 1; /* after the ':' */
    size_t digits = n - hl - 1;
    if (host[hl] != ':') {
        buf_puts(err, "the host is malformed");
        return -1;
    }
    if (digits == 0) {
        buf_puts(err, "the port is missing after ':'");
        return -1;
    }
    long port =
        digits <= 5 && strspn(port_s, "0123456789") >= digits ? strtol(port_s, NULL, 10) : -1;
    if (port < 1 || port > 65535) {
        buf_printf(err, "port %.*s is not a port number", (int)digits, port_s);
        return -1;
    }
    return 0;
}

int entra_http(CURL *c, const char *url, struct curl_slist *headers, const struct buf *form,
               int local, double timeout_s, struct buf *answer, long *status, struct buf *err)
{
    char cerr[CURL_ERROR_SIZE] = "";
    long timeout_ms = (long)(timeout_s * 1000);
    buf_scrub(answer);
    *status = 0;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "aigw");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ENTRA_MAX_ANSWER);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, backend_collect_small_answer);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    if (local)
        curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    if (form) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, form->data);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)form->len);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    /* Forget the pointers to our headers, form and error buffer. */
    curl_easy_reset(c);
    if (rc == CURLE_WRITE_ERROR || rc == CURLE_FILESIZE_EXCEEDED) {
        buf_printf(err, "the answer is larger than %d bytes", ENTRA_MAX_ANSWER);
        return -1;
    }
    if (rc != CURLE_OK) {
        buf_puts(err, cerr[0] ? cerr : curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

void entra_error_code(const struct buf *answer, char *out, size_t n)
{
    out[0] = '\0';
    if (!answer->len)
        return;
    json_object *o = json_tokener_parse(answer->data), *e, *code = NULL;
    if (o && json_object_object_get_ex(o, "error", &e)) {
        if (json_object_is_type(e, json_type_string))
            code = e;
        else if (!json_object_object_get_ex(e, "code", &code))
            code = NULL;
    }
    const char *s =
        code && json_object_is_type(code, json_type_string) ? json_object_get_string(code) : "";
    size_t len = strlen(s);
    int ok = len > 0 && len < 64 && len + 4 <= n;
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-' || s[i] == '.';
    if (ok)
        snprintf(out, n, " (%s)", s);
    json_object_put(o);
}

/* --- tokens ----------------------------------------------------------------------- */

int64_t entra_token_refresh_at(int64_t now_s, int64_t expires_s)
{
    int64_t life = expires_s - now_s;
    if (life <= 0)
        return now_s;
    int64_t margin = life / 2 < ENTRA_TOKEN_MARGIN_S ? life / 2 : ENTRA_TOKEN_MARGIN_S;
    return expires_s - margin;
}

/* Reads a count of seconds given as a JSON number or a string of digits. */
static int json_seconds(json_object *v, int64_t *out)
{
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
        return *out >= 0 ? 0 : -1;
    }
    if (json_object_is_type(v, json_type_double)) {
        double d = json_object_get_double(v);
        if (!(d >= 0 && d < 1e15))
            return -1;
        *out = (int64_t)d;
        return 0;
    }
    if (!json_object_is_type(v, json_type_string))
        return -1;
    const char *s = json_object_get_string(v);
    size_t n = strlen(s);
    if (n == 0 || n > 15 || strspn(s, "0123456789") != n)
        return -1;
    *out = strtoll(s, NULL, 10);
    return 0;
}

int entra_parse_token(const char *body, size_t len, int64_t now_s, struct buf *token,
                      int64_t *expires_s, struct buf *err)
{
    struct json_strict_error je = {0};
    json_object *o = json_strict_parse(body, len, ENTRA_JSON_DEPTH, &je), *v;
    int rc = -1;
    int64_t secs;
    if (!o || !json_object_is_type(o, json_type_object)) {
        buf_puts(err, "the answer is not a JSON object");
        goto done;
    }
    if (!json_object_object_get_ex(o, "access_token", &v) ||
        !json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0) {
        buf_puts(err, "the answer has no access_token");
        goto done;
    }
    const char *t = json_object_get_string(v);
    for (const char *c = t; *c; c++)
        if (*c <= ' ' || *c > '~') {
            buf_puts(err, "the access_token holds characters a bearer token cannot have");
            goto done;
        }
    if (json_object_object_get_ex(o, "expires_on", &v) && json_seconds(v, &secs) == 0) {
        *expires_s = secs;
    } else if (json_object_object_get_ex(o, "expires_in", &v) && json_seconds(v, &secs) == 0) {
        *expires_s = now_s + secs;
    } else {
        buf_puts(err, "the answer has neither expires_on nor expires_in as a number of seconds");
        goto done;
    }
    buf_scrub(token);
    if (buf_puts(token, t) < 0) {
        buf_puts(err, "out of memory");
        goto done;
    }
    rc = 0;
done:
    json_object_put(o);
    return rc;
}

/* --- the token endpoints --------------------------------------------------------- */

/* The resource a managed identity is asked for: the scope without /.default. */
static void put_resource(struct buf *b, const char *scope)
{
    size_t n = strlen(scope);
    if (n > 9 && strcmp(scope + n - 9, "/.default") == 0)
        n -= 9;
    char *r = strndup(scope, n);
    if (r)
        entra_put_escaped(b, r);
    free(r);
}

/* Reads the federated token workload identity exchanges (wiped by the caller). */
static int read_token_file(const char *path, struct buf *out, struct buf *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        buf_printf(err, "cannot read the federated token file %s", path);
        return -1;
    }
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && out->len <= TOKEN_FILE_MAX)
        buf_append(out, chunk, n);
    OPENSSL_cleanse(chunk, sizeof chunk);
    fclose(f);
    while (out->len && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r' ||
                        out->data[out->len - 1] == ' '))
        out->data[--out->len] = '\0';
    if (out->len == 0 || out->len > TOKEN_FILE_MAX) {
        buf_printf(err, "the federated token file %s is %s", path,
                   out->len ? "too large" : "empty");
        return -1;
    }
    return 0;
}

/* Builds Entra ID's token request: url, and the form holding the client
 * secret or the federated token (the caller wipes it). */
static int entra_request(struct entra_token *t, struct buf *url, struct buf *form, struct buf *err)
{
    const struct cfg_entra *e = t->cfg;
    const char *host = e->authority_host;
    size_t hl = strlen(host);
    while (hl > 0 && host[hl - 1] == '/')
        hl--;
    if (strncmp(host, "http://", 7) == 0) {
        /* The secret would travel in clear: only to a local mock. */
        struct buf why = {0};
        int local = entra_check_loopback_host(host + 7, strcspn(host + 7, "/?#"), &why);
        buf_free(&why);
        if (local < 0) {
            buf_printf(err,
                       "%s.authority_host %s: plain http:// would send the credential in clear; "
                       "it is allowed only for a loopback host",
                       t->path, host);
            return -1;
        }
    } else if (strncmp(host, "https://", 8) != 0) {
        buf_printf(err, "%s.authority_host %s must start with https://", t->path, host);
        return -1;
    }
    buf_append(url, host, hl);
    buf_putc(url, '/');
    entra_put_escaped(url, e->tenant_id ? e->tenant_id : "");
    buf_puts(url, "/oauth2/v2.0/token");

    struct buf secret = {0}, why = {0};
    int workload = strcmp(e->auth, "workload_identity") == 0;
    int rc = -1;
    if (workload) {
        if (!nonempty(e->token_file)) {
            buf_printf(err, "workload_identity needs %s.token_file", t->path);
            goto done;
        }
        if (read_token_file(e->token_file, &secret, err) < 0)
            goto done;
    } else {
        if (!nonempty(e->client_secret_ref)) {
            buf_printf(err, "client_credentials needs %s.client_secret", t->path);
            goto done;
        }
        if (secret_resolve(e->client_secret_ref, t->environment, &secret, &why) < 0) {
            buf_printf(err, "%s.client_secret: %s", t->path, buf_cstr(&why));
            goto done;
        }
    }
    buf_puts(form, "client_id=");
    entra_put_escaped(form, e->client_id ? e->client_id : "");
    if (workload)
        buf_puts(form, "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-"
                       "type%3Ajwt-bearer&client_assertion=");
    else
        buf_puts(form, "&client_secret=");
    rc = entra_put_escaped(form, buf_cstr(&secret));
    buf_puts(form, "&scope=");
    entra_put_escaped(form, e->scope);
    buf_puts(form, "&grant_type=client_credentials");
    if (rc < 0)
        buf_puts(err, "out of memory");
done:
    buf_wipe(&secret);
    buf_free(&why);
    return rc;
}

/* Appends to url the query a managed-identity endpoint takes. */
static void identity_query(const struct cfg_entra *e, struct buf *url, const char *endpoint,
                           const char *api_version)
{
    buf_puts(url, endpoint);
    buf_putc(url, strchr(endpoint, '?') ? '&' : '?');
    buf_printf(url, "api-version=%s&resource=", api_version);
    put_resource(url, e->scope);
    if (nonempty(e->client_id)) {
        /* A user-assigned identity: say which one. */
        buf_puts(url, "&client_id=");
        entra_put_escaped(url, e->client_id);
    }
}

/* Asks the configured token endpoint for a new token. */
static int token_fetch(struct entra_token *t, struct buf *token, int64_t *expires_s,
                       struct buf *err)
{
    const struct cfg_entra *e = t->cfg;
    struct buf url = {0}, form = {0}, answer = {0}, why = {0};
    struct curl_slist *hdr = NULL;
    /* For messages: which endpoint, as configured (never a secret). */
    const char *what = "", *where = "";
    int local = 0, rc = -1;
    long status = 0;
    char code[80];

    if (strcmp(e->auth, "client_credentials") == 0 || strcmp(e->auth, "workload_identity") == 0) {
        what = "Entra ID";
        where = e->authority_host;
        if (entra_request(t, &url, &form, err) < 0)
            goto done;
        local = strncmp(where, "http://", 7) == 0; /* a loopback mock */
    } else {
        const char *app =
            nonempty(e->identity_endpoint) ? e->identity_endpoint : getenv("IDENTITY_ENDPOINT");
        local = 1;
        if (nonempty(app)) {
            const char *secret = getenv("IDENTITY_HEADER");
            what = "the App Service identity endpoint";
            where = app;
            if (!nonempty(secret)) {
                buf_printf(
                    err, "managed identity through %s %s needs $IDENTITY_HEADER, which is not set",
                    what, where);
                goto done;
            }
            identity_query(e, &url, app, APP_SERVICE_API_VERSION);
            struct buf h = {0};
            buf_printf(&h, "X-IDENTITY-HEADER: %s", secret);
            hdr = curl_slist_append(hdr, buf_cstr(&h));
            buf_wipe(&h);
        } else {
            what = "the instance metadata service (IMDS)";
            where = e->imds_endpoint;
            identity_query(e, &url, e->imds_endpoint, IMDS_API_VERSION);
            hdr = curl_slist_append(hdr, "Metadata: true");
        }
        if (!hdr) {
            buf_puts(err, "out of memory");
            goto done;
        }
    }
    t->requests++;
    if (entra_http(t->curl, buf_cstr(&url), hdr, form.len ? &form : NULL, local, e->timeout_s,
                   &answer, &status, &why) < 0) {
        buf_printf(err, "cannot get %s from %s at %s: %s", t->label, what, where, buf_cstr(&why));
        goto done;
    }
    if (status != 200) {
        entra_error_code(&answer, code, sizeof code);
        buf_printf(err, "%s at %s refused %s: HTTP %ld%s", what, where, t->label, status, code);
        if (form.len && (status == 400 || status == 401))
            buf_printf(err, "; check tenant_id, client_id and %s in %s",
                       strcmp(e->auth, "workload_identity") == 0 ? "the federated token"
                                                                 : "client_secret",
                       t->path);
        goto done;
    }
    buf_reset(&why);
    if (entra_parse_token(answer.data, answer.len, (int64_t)time(NULL), token, expires_s, &why) <
        0) {
        buf_printf(err, "token from %s at %s: %s", what, where, buf_cstr(&why));
        goto done;
    }
    rc = 0;
done:
    entra_headers_free(hdr);
    buf_free(&url);
    buf_wipe(&form);
    buf_wipe(&answer);
    buf_free(&why);
    return rc;
}

/* --- the shared token ------------------------------------------------------------- */

struct entra_token *entra_token_new(const struct cfg_entra *e, const char *config_path,
                                    const char *label, const char *environment)
{
    struct entra_token *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cfg = e;
    t->path = config_path;
    t->label = label;
    t->environment = environment;
    t->curl = curl_easy_init();
    if (!t->curl) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void entra_token_free(struct entra_token *t)
{
    if (!t)
        return;
    curl_easy_cleanup(t->curl);
    buf_wipe(&t->token);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

unsigned long entra_token_requests(const struct entra_token *t)
{
    return t ? t->requests : 0;
}

/* Makes sure t->token holds a token worth sending (t->mu held). */
static int token_due(struct entra_token *t, int force, struct buf *err)
{
    int64_t now = (int64_t)time(NULL);
    if (t->token.len && now < t->refresh_s && !force)
        return 0;
    struct buf fresh = {0};
    int64_t expires = 0;
    if (token_fetch(t, &fresh, &expires, err) < 0) {
        buf_wipe(&fresh);
        if (!force && t->token.len && now < t->expires_s - TOKEN_SKEW_S) {
            /* The endpoint is down but the old token has a while to go. */
            buf_reset(err);
            return 0;
        }
        return -1;
    }
    buf_wipe(&t->token);
    t->token = fresh;
    t->expires_s = expires;
    t->refresh_s = entra_token_refresh_at(now, expires);
    return 0;
}

int entra_token_get(struct entra_token *t, int force, struct buf *out, struct buf *err)
{
    pthread_mutex_lock(&t->mu);
    int rc = token_due(t, force, err);
    if (rc == 0) {
        buf_scrub(out);
        rc = buf_append(out, t->token.data, t->token.len) < 0 ? -1 : 0;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}
