/*
 * keyvault.c - Azure Key Vault secrets over libcurl (see keyvault.h).
 *
 * One GET per secret: {vault}/secrets/{name}[/{version}]?api-version=7.4 with
 * "Authorization: Bearer TOKEN", the token issued for the resource
 * https://vault.azure.net as secrets.keyvault says (entra.c: managed
 * identity, workload identity or client credentials), reused until shortly
 * before it expires.
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
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "entra.h"
#include "json_strict.h"
#include "secrets.h"

#define KEYVAULT_HOST_SUFFIX ".vault.azure.net"
#define KEYVAULT_JSON_DEPTH  16
/* Azure's vault names: 3-24 letters, digits and hyphens, starting with a letter. */
#define VAULT_NAME_MIN 3
#define VAULT_NAME_MAX 24

struct keyvault {
    const struct cfg *cfg;
    CURL *curl;
    struct entra_token *token; /* the vault's access token */
};

/* --- small helpers ------------------------------------------------------------ */

static int is_alnum(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
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
    if ((https ? check_https_host(host, n, err) : entra_check_loopback_host(host, n, err)) < 0)
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
    kv->token = entra_token_new(&cfg->secrets.keyvault, "secrets.keyvault",
                                "a Key Vault access token", cfg->environment);
    if (!kv->curl || !kv->token) {
        keyvault_free(kv);
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
    entra_token_free(kv->token);
    free(kv);
}

unsigned long keyvault_token_requests(const struct keyvault *kv)
{
    return kv ? entra_token_requests(kv->token) : 0;
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
    entra_put_escaped(&url, kv->cfg->secrets.kv_api_version);
    for (int attempt = 0;; attempt++) {
        /* A 401 means revoked, or issued for another tenant: one more try
         * with a new token. */
        struct buf token = {0}, h = {0};
        if (entra_token_get(kv->token, attempt > 0, &token, err) < 0) {
            buf_wipe(&token);
            goto done;
        }
        buf_printf(&h, "Authorization: Bearer %s", buf_cstr(&token));
        buf_wipe(&token);
        struct curl_slist *hdr = curl_slist_append(NULL, buf_cstr(&h));
        buf_wipe(&h);
        if (!hdr) {
            buf_puts(err, "out of memory");
            goto done;
        }
        /* Plain http is only ever a loopback mock (keyvault_ref_parse): no proxy. */
        int local = strncmp(ref->vault, "http://", 7) == 0;
        int r = entra_http(kv->curl, buf_cstr(&url), hdr, NULL, local,
                           kv->cfg->secrets.keyvault.timeout_s, &answer, &status, &why);
        entra_headers_free(hdr);
        if (r < 0) {
            buf_printf(err, "cannot reach Key Vault %s: %s", ref->vault, buf_cstr(&why));
            goto done;
        }
        if (status != 401 || attempt > 0)
            break;
    }
    if (status != 200)
        entra_error_code(&answer, code, sizeof code);
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
