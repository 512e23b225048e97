/*
 * keyvault.c - Azure Key Vault secrets over libcurl (see keyvault.h).
 *
 * One GET per secret: {vault}/secrets/{name}[/{version}]?api-version=7.4 with
 * "Authorization: Bearer TOKEN", the token issued for the resource
 * https://vault.azure.net by one of:
 *   client credentials (secrets.keyvault.auth = "client_credentials"): POST
 *     {authority_host}/{tenant}/oauth2/v2.0/token with the app's id and secret;
 *   App Service managed identity, when secrets.keyvault.identity_endpoint or
 *     $IDENTITY_ENDPOINT is set: GET it with X-IDENTITY-HEADER: $IDENTITY_HEADER;
 *   VM managed identity otherwise: GET the IMDS endpoint with Metadata: true.
 * The token is reused until shortly before it expires.
 *
 * Everything that passes through here is secret: the token, the client
 * secret, the vault's answer. Buffers that held one are wiped before they are
 * freed; curl's verbose output is never on; redirects are not followed (they
 * could carry the bearer token elsewhere); error messages are built from
 * status codes, curl's transport errors and the short error codes Azure puts
 * in its answers, never from an answer's free text. This file does not log:
 * secrets.c decides what is worth a log line.
 */
#include "keyvault.h"

#include "backend.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "json_strict.h"
#include "secrets.h"

#define KEYVAULT_RESOURCE       "https://vault.azure.net"
#define KEYVAULT_SCOPE          KEYVAULT_RESOURCE "/.default"
#define KEYVAULT_HOST_SUFFIX    ".vault.azure.net"
#define IMDS_API_VERSION        "2018-02-01"
#define APP_SERVICE_API_VERSION "2019-08-01"
/* A Key Vault secret is at most 25 KiB and a token answer a few KiB; more
 * than this is not an answer we asked for. */
#define KEYVAULT_MAX_ANSWER ((int)SMALL_ANSWER_MAX) /* what backend_collect_small_answer keeps */
#define KEYVAULT_JSON_DEPTH 16
/* Azure's vault names: 3-24 letters, digits and hyphens, starting with a letter. */
#define VAULT_NAME_MIN 3
#define VAULT_NAME_MAX 24
/* An old token is still sent while a refresh fails, until this close to expiry. */
#define TOKEN_SKEW_S 30

struct keyvault {
    const struct cfg *cfg;
    CURL *curl;
    struct buf token;        /* the bearer token; empty when there is none */
    int64_t token_expires_s; /* epoch seconds */
    int64_t token_refresh_s; /* when to ask for a new one */
    unsigned long token_requests;
};

/* --- small helpers ------------------------------------------------------------ */

/* Frees a header list one of whose lines holds a token or a shared secret. */
static void headers_free(struct curl_slist *list)
{
    for (struct curl_slist *n = list; n; n = n->next)
        OPENSSL_cleanse(n->data, strlen(n->data));
    curl_slist_free_all(list);
}

static int nonempty(const char *s)
{
    return s && *s;
}

static int is_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Appends s percent-encoded (for a query string or a form); wipes curl's copy,
 * which may be the client secret. */
static int put_escaped(struct buf *b, const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        return -1;
    int rc = buf_puts(b, e);
    OPENSSL_cleanse(e, strlen(e));
    curl_free(e);
    return rc;
}

/* --- references ----------------------------------------------------------------- */

/* Checks host[0..n) of an https URL: VAULT.vault.azure.net. */
static int check_https_host(const char *host, size_t n, struct buf *err)
{
    size_t sfx = strlen(KEYVAULT_HOST_SUFFIX);
    if (memchr(host, ':', n)) {
        buf_puts(err, "a Key Vault URL has no port");
        return -1;
    }
    if (n <= sfx || strncasecmp(host + n - sfx, KEYVAULT_HOST_SUFFIX, sfx) != 0) {
        buf_printf(err, "host %.*s is not a Key Vault (VAULT" KEYVAULT_HOST_SUFFIX ")", (int)n,
                   host);
        return -1;
    }
    size_t vn = n - sfx;
    int ok = vn >= VAULT_NAME_MIN && vn <= VAULT_NAME_MAX && is_alpha(host[0]);
    for (size_t i = 0; ok && i < vn; i++)
        ok = is_alnum(host[i]) || host[i] == '-';
    if (!ok) {
        buf_printf(
            err,
            "vault name %.*s must be %d-%d letters, digits and hyphens, starting with a letter",
            (int)vn, host, VAULT_NAME_MIN, VAULT_NAME_MAX);
        return -1;
    }
    return 0;
}

/* Checks host[0..n) of an http URL: a loopback host with an optional port. */
static int check_loopback_host(const char *host, size_t n, struct buf *err)
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
                   "[::1]), not %.*s; use https://VAULT" KEYVAULT_HOST_SUFFIX,
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

int keyvault_ref_parse(const char *url, struct keyvault_ref *ref, struct buf *err)
{
    memset(ref, 0, sizeof *ref);
    const char *host;
    int https;
    if (strncmp(url, "https://", 8) == 0) {
        https = 1;
        host = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        https = 0;
        host = url + 7;
    } else {
        buf_puts(err,
                 "must be keyvault:https://VAULT" KEYVAULT_HOST_SUFFIX "/secrets/NAME[/VERSION]");
        return -1;
    }
    size_t n = strcspn(host, "/?#");
    if (memchr(host, '@', n)) {
        buf_puts(err, "a Key Vault URL carries no user information");
        return -1;
    }
    if (n == 0) {
        buf_puts(err, "the URL has no host");
        return -1;
    }
    if ((https ? check_https_host(host, n, err) : check_loopback_host(host, n, err)) < 0)
        return -1;
    size_t vault_len = (size_t)(host - url) + n;
    if (vault_len >= sizeof ref->vault) {
        buf_puts(err, "the vault's address is too long");
        return -1;
    }
    const char *p = host + n;
    if (strncmp(p, "/secrets/", 9) != 0) {
        buf_puts(err, "the path must be /secrets/NAME or /secrets/NAME/VERSION");
        return -1;
    }
    p += 9;
    size_t nl = 0;
    while (is_alnum(p[nl]) || p[nl] == '-')
        nl++;
    if (nl == 0 || nl > KEYVAULT_NAME_MAX || (p[nl] != '\0' && p[nl] != '/')) {
        buf_printf(err, "the secret name must be 1-%d letters, digits and hyphens",
                   KEYVAULT_NAME_MAX);
        return -1;
    }
    const char *v = p + nl;
    size_t vl = 0;
    if (*v == '/') {
        v++;
        while (is_alnum(v[vl]))
            vl++;
        if (vl == 0 || vl > KEYVAULT_VERSION_MAX || v[vl] != '\0') {
            buf_printf(err,
                       "the secret version must be 1-%d letters and digits, with nothing after it",
                       KEYVAULT_VERSION_MAX);
            return -1;
        }
    }
    memcpy(ref->vault, url, vault_len);
    memcpy(ref->name, p, nl);
    memcpy(ref->version, v, vl);
    return 0;
}

/* --- the client --------------------------------------------------------------------- */

struct keyvault *keyvault_new(const struct cfg *cfg)
{
    struct keyvault *kv = calloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    kv->cfg = cfg;
    kv->curl = curl_easy_init();
    if (!kv->curl) {
        free(kv);
        return NULL;
    }
    return kv;
}

void keyvault_free(struct keyvault *kv)
{
    if (!kv)
        return;
    if (kv->curl)
        curl_easy_cleanup(kv->curl);
    buf_wipe(&kv->token);
    free(kv);
}

unsigned long keyvault_token_requests(const struct keyvault *kv)
{
    return kv ? kv->token_requests : 0;
}

/*
 * One HTTP exchange: a GET, or a form POST when form is not NULL. Returns 0
 * with *status set whenever an answer came (whatever its status), or -1 with
 * curl's reason in err when none did. local: never through a proxy (the
 * metadata endpoints are on this machine).
 */
static int http_call(struct keyvault *kv, const char *url, struct curl_slist *headers,
                     const struct buf *form, int local, struct buf *answer, long *status,
                     struct buf *err)
{
    CURL *c = kv->curl;
    char cerr[CURL_ERROR_SIZE] = "";
    long timeout_ms = (long)(kv->cfg->secrets.kv_timeout_s * 1000);
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
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)KEYVAULT_MAX_ANSWER);
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
        buf_printf(err, "the answer is larger than %d bytes", KEYVAULT_MAX_ANSWER);
        return -1;
    }
    if (rc != CURLE_OK) {
        buf_puts(err, cerr[0] ? cerr : curl_easy_strerror(rc));
        return -1;
    }
    return 0;
}

/*
 * Puts " (CODE)" into out when an error answer carries a short error code:
 * {"error": "invalid_client"} from Entra ID and the metadata endpoints,
 * {"error": {"code": "SecretNotFound"}} from the vault. Only an identifier is
 * copied, never free text (error_description, message).
 */
static void error_code(const struct buf *answer, char *out, size_t n)
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
        ok = is_alnum(s[i]) || s[i] == '_' || s[i] == '-' || s[i] == '.';
    if (ok)
        snprintf(out, n, " (%s)", s);
    json_object_put(o);
}

/* --- tokens ----------------------------------------------------------------------- */

int64_t keyvault_token_refresh_at(int64_t now_s, int64_t expires_s)
{
    int64_t life = expires_s - now_s;
    if (life <= 0)
        return now_s;
    int64_t margin = life / 2 < KEYVAULT_TOKEN_MARGIN_S ? life / 2 : KEYVAULT_TOKEN_MARGIN_S;
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

int keyvault_parse_token(const char *body, size_t len, int64_t now_s, struct buf *token,
                         int64_t *expires_s, struct buf *err)
{
    struct json_strict_error je = {0};
    json_object *o = json_strict_parse(body, len, KEYVAULT_JSON_DEPTH, &je), *v;
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

/* Builds the client-credentials request: url and the form (which holds the
 * client secret: the caller wipes it). */
static int client_credentials_request(struct keyvault *kv, struct buf *url, struct buf *form,
                                      struct buf *err)
{
    const struct cfg *c = kv->cfg;
    const char *host = c->secrets.kv_authority_host;
    size_t hl = strlen(host);
    while (hl > 0 && host[hl - 1] == '/')
        hl--;
    if (strncmp(host, "http://", 7) == 0) {
        /* The client secret would travel in clear: only to a local mock. */
        struct buf why = {0};
        int local = check_loopback_host(host + 7, strcspn(host + 7, "/?#"), &why);
        buf_free(&why);
        if (local < 0) {
            buf_printf(err,
                       "secrets.keyvault.authority_host %s: plain http:// would send the client "
                       "secret in clear; it is allowed only for a loopback host",
                       host);
            return -1;
        }
    } else if (strncmp(host, "https://", 8) != 0) {
        buf_printf(err, "secrets.keyvault.authority_host %s must start with https://", host);
        return -1;
    }
    buf_append(url, host, hl);
    buf_putc(url, '/');
    put_escaped(url, c->secrets.kv_tenant_id ? c->secrets.kv_tenant_id : "");
    buf_puts(url, "/oauth2/v2.0/token");

    struct buf secret = {0}, why = {0};
    if (!nonempty(c->secrets.kv_client_secret_ref)) {
        buf_puts(err, "client_credentials needs secrets.keyvault.client_secret");
        return -1;
    }
    if (secret_resolve(c->secrets.kv_client_secret_ref, c->environment, &secret, &why) < 0) {
        buf_printf(err, "secrets.keyvault.client_secret: %s", buf_cstr(&why));
        buf_wipe(&secret);
        buf_free(&why);
        return -1;
    }
    buf_puts(form, "client_id=");
    put_escaped(form, c->secrets.kv_client_id ? c->secrets.kv_client_id : "");
    buf_puts(form, "&client_secret=");
    int rc = put_escaped(form, buf_cstr(&secret));
    buf_puts(form, "&scope=");
    put_escaped(form, KEYVAULT_SCOPE);
    buf_puts(form, "&grant_type=client_credentials");
    buf_wipe(&secret);
    buf_free(&why);
    if (rc < 0) {
        buf_puts(err, "out of memory");
        return -1;
    }
    return 0;
}

/* Appends to url the query a managed-identity endpoint takes. */
static void identity_query(struct keyvault *kv, struct buf *url, const char *endpoint,
                           const char *api_version)
{
    buf_puts(url, endpoint);
    buf_putc(url, strchr(endpoint, '?') ? '&' : '?');
    buf_printf(url, "api-version=%s&resource=", api_version);
    put_escaped(url, KEYVAULT_RESOURCE);
    if (nonempty(kv->cfg->secrets.kv_client_id)) {
        /* A user-assigned identity: say which one. */
        buf_puts(url, "&client_id=");
        put_escaped(url, kv->cfg->secrets.kv_client_id);
    }
}

/* Asks the configured token endpoint for a new token. */
static int token_fetch(struct keyvault *kv, struct buf *token, int64_t *expires_s, struct buf *err)
{
    const struct cfg *c = kv->cfg;
    struct buf url = {0}, form = {0}, answer = {0}, why = {0};
    struct curl_slist *hdr = NULL;
    /* For messages: which endpoint, as configured (never a secret). */
    const char *what = "", *where = "";
    int local = 0, rc = -1;
    long status = 0;
    char code[80];

    if (strcmp(c->secrets.kv_auth, "client_credentials") == 0) {
        what = "Entra ID";
        where = c->secrets.kv_authority_host;
        if (client_credentials_request(kv, &url, &form, err) < 0)
            goto done;
        local = strncmp(where, "http://", 7) == 0; /* a loopback mock */
    } else {
        const char *app = nonempty(c->secrets.kv_identity_endpoint)
                              ? c->secrets.kv_identity_endpoint
                              : getenv("IDENTITY_ENDPOINT");
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
            identity_query(kv, &url, app, APP_SERVICE_API_VERSION);
            struct buf h = {0};
            buf_printf(&h, "X-IDENTITY-HEADER: %s", secret);
            hdr = curl_slist_append(hdr, buf_cstr(&h));
            buf_wipe(&h);
        } else {
            what = "the instance metadata service (IMDS)";
            where = c->secrets.kv_imds_endpoint;
            identity_query(kv, &url, c->secrets.kv_imds_endpoint, IMDS_API_VERSION);
            hdr = curl_slist_append(hdr, "Metadata: true");
        }
        if (!hdr) {
            buf_puts(err, "out of memory");
            goto done;
        }
    }
    kv->token_requests++;
    if (http_call(kv, buf_cstr(&url), hdr, form.len ? &form : NULL, local, &answer, &status, &why) <
        0) {
        buf_printf(err, "cannot get a Key Vault access token from %s at %s: %s", what, where,
                   buf_cstr(&why));
        goto done;
    }
    if (status != 200) {
        error_code(&answer, code, sizeof code);
        buf_printf(err, "%s at %s refused a Key Vault access token: HTTP %ld%s", what, where,
                   status, code);
        if (form.len && (status == 400 || status == 401))
            buf_puts(err, "; check tenant_id, client_id and client_secret");
        goto done;
    }
    buf_reset(&why);
    if (keyvault_parse_token(answer.data, answer.len, (int64_t)time(NULL), token, expires_s, &why) <
        0) {
        buf_printf(err, "token from %s at %s: %s", what, where, buf_cstr(&why));
        goto done;
    }
    rc = 0;
done:
    headers_free(hdr);
    buf_free(&url);
    buf_wipe(&form);
    buf_wipe(&answer);
    buf_free(&why);
    return rc;
}

/* Makes sure kv->token holds a token worth sending. */
static int token_get(struct keyvault *kv, struct buf *err)
{
    int64_t now = (int64_t)time(NULL);
    if (kv->token.len && now < kv->token_refresh_s)
        return 0;
    struct buf fresh = {0};
    int64_t expires = 0;
    if (token_fetch(kv, &fresh, &expires, err) < 0) {
        buf_wipe(&fresh);
        if (kv->token.len && now < kv->token_expires_s - TOKEN_SKEW_S) {
            /* The endpoint is down but the old token has a while to go. */
            buf_reset(err);
            return 0;
        }
        return -1;
    }
    buf_wipe(&kv->token);
    kv->token = fresh;
    kv->token_expires_s = expires;
    kv->token_refresh_s = keyvault_token_refresh_at(now, expires);
    return 0;
}

/* --- secrets ----------------------------------------------------------------------- */

/* Reads "value" from the vault's answer into out. */
static int parse_secret(const struct buf *answer, struct buf *out, struct buf *err)
{
    struct json_strict_error je = {0};
    json_object *o = json_strict_parse(answer->data ? answer->data : "", answer->len,
                                       KEYVAULT_JSON_DEPTH, &je),
                *v;
    int rc = -1;
    if (!o || !json_object_is_type(o, json_type_object)) {
        buf_puts(err, "the answer is not a JSON object");
        goto done;
    }
    if (!json_object_object_get_ex(o, "value", &v) || !json_object_is_type(v, json_type_string)) {
        buf_puts(err, "the answer has no \"value\"");
        goto done;
    }
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    /* A value stored from a file often ends in a newline, as file: secrets do. */
    if (n > 0 && s[n - 1] == '\n')
        n--;
    if (n > 0 && s[n - 1] == '\r')
        n--;
    if (n == 0) {
        buf_puts(err, "the secret's value is empty");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < ' ' || s[i] == 0x7f) {
            /* It would end up in an HTTP header. */
            buf_puts(err, "the secret's value holds control characters");
            goto done;
        }
    buf_scrub(out);
    if (buf_append(out, s, n) < 0) {
        buf_puts(err, "out of memory");
        goto done;
    }
    rc = 0;
done:
    json_object_put(o);
    return rc;
}

int keyvault_get(struct keyvault *kv, const struct keyvault_ref *ref, struct buf *out,
                 struct buf *err)
{
    struct buf url = {0}, answer = {0}, why = {0}, what = {0};
    long status = 0;
    char code[80];
    int rc = -1;

    buf_printf(&what, "secret %s%s%s in %s", ref->name, ref->version[0] ? " version " : "",
               ref->version, ref->vault);
    buf_printf(&url, "%s/secrets/%s%s%s?api-version=", ref->vault, ref->name,
               ref->version[0] ? "/" : "", ref->version);
    put_escaped(&url, kv->cfg->secrets.kv_api_version);
    for (int attempt = 0;; attempt++) {
        if (token_get(kv, err) < 0)
            goto done;
        struct buf h = {0};
        buf_printf(&h, "Authorization: Bearer %s", buf_cstr(&kv->token));
        struct curl_slist *hdr = curl_slist_append(NULL, buf_cstr(&h));
        buf_wipe(&h);
        if (!hdr) {
            buf_puts(err, "out of memory");
            goto done;
        }
        /* Plain http is only ever a loopback mock (keyvault_ref_parse): no proxy. */
        int local = strncmp(ref->vault, "http://", 7) == 0;
        int r = http_call(kv, buf_cstr(&url), hdr, NULL, local, &answer, &status, &why);
        headers_free(hdr);
        if (r < 0) {
            buf_printf(err, "cannot reach Key Vault %s: %s", ref->vault, buf_cstr(&why));
            goto done;
        }
        if (status != 401 || attempt > 0)
            break;
        /* Revoked, or issued for another tenant: one more try with a new token. */
        buf_scrub(&kv->token);
        kv->token_refresh_s = 0;
    }
    if (status != 200)
        error_code(&answer, code, sizeof code);
    switch (status) {
    case 200:
        buf_reset(&why);
        if (parse_secret(&answer, out, &why) < 0) {
            buf_printf(err, "%s: %s", buf_cstr(&what), buf_cstr(&why));
            goto done;
        }
        rc = 0;
        break;
    case 401:
        buf_printf(err, "Key Vault %s refused the access token (HTTP 401%s)", ref->vault, code);
        break;
    case 403:
        buf_printf(err,
                   "access to %s denied (HTTP 403%s): the identity needs permission to get secrets",
                   buf_cstr(&what), code);
        break;
    case 404: buf_printf(err, "%s not found (HTTP 404%s)", buf_cstr(&what), code); break;
    case 429: buf_printf(err, "Key Vault %s is throttling requests (HTTP 429)", ref->vault); break;
    default:
        buf_printf(err, "Key Vault %s answered HTTP %ld%s for %s", ref->vault, status, code,
                   buf_cstr(&what));
        break;
    }
done:
    buf_free(&url);
    buf_wipe(&answer);
    buf_free(&why);
    buf_free(&what);
    return rc;
}
