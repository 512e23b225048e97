/*
 * jwt.c - verification of JWT bearer tokens (see jwt.h).
 *
 * Pipeline stage 3 (authenticate). The token is taken apart here before any
 * library sees it: three strict base64url segments, a header and a payload
 * that are JSON objects (strict RFC 8259, no duplicate keys). The key is
 * chosen by the configuration and the token's kid, and the key alone fixes
 * the algorithm: the header's alg must name exactly that algorithm, so
 * "none" and HS256-signed-with-the-RSA-public-key are refused before libjwt
 * checks the signature. Claims are then read from our own parse.
 *
 * Keys: an HS256 secret (resolved once, wiped on free), a JWKS file (read
 * once), or an OpenID provider. The provider's JWKS document is kept in the
 * shared database (jwks_cache, keyed by the openid_config_url) so that one
 * worker fetches and the others read; an unknown kid triggers a refetch at
 * most once a minute across all workers.
 *
 * Never logs or echoes a token or the secret; why messages are fixed texts.
 * Never holds a database transaction across a network call.
 */
#include "jwt.h"

/* libjwt's own header: app/ is on the quote path only, so <jwt.h> is libjwt's. */
#include <jwt.h>

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "json_strict.h"
#include "backend.h"
#include "log.h"
#include "request.h"
#include "db.h"
#include "secrets.h"
#include "store.h"
#include "worker.h"

#define TOKEN_MAX_BYTES     ((size_t)16 * 1024) /* longer bearer tokens are refused unread */
#define JWKS_DOC_MAX_BYTES  SMALL_ANSWER_MAX    /* a JWKS file or HTTP response */
#define JWKS_MAX_KEYS       64                  /* bounds the key-import work per document */
#define JSON_HEADER_DEPTH   8
#define JSON_PAYLOAD_DEPTH  32
#define JSON_JWKS_DEPTH     16
#define USER_ID_MAX         256
#define RSA_MIN_BITS        2048
#define HS256_MIN_SECRET    32 /* RFC 7518 3.2: a key of at least the hash size */
#define HTTP_TIMEOUT_S      5L
#define JWKS_MAX_AGE_MS     (24LL * 3600 * 1000) /* refetch a cached document older than this */
#define JWKS_REFETCH_MIN_MS (60LL * 1000)        /* unknown kid: at most one fetch a minute */
#define JWKS_RETRY_EMPTY_MS                                                                        \
    (JWT_KEYS_RETRY_S * 1000LL) /* no keys at all: retry a failed fetch sooner */

enum kty { KTY_RSA, KTY_EC };

/* The asymmetric algorithms a JWKS key can carry. */
struct alg_info {
    const char *name; /* as in the JOSE header, compared exactly */
    jwt_alg_t alg;
    enum kty kty;
    const char *crv;   /* JWK crv for EC, else NULL */
    const char *group; /* OpenSSL group name for EC */
    size_t coord_len;  /* bytes of an EC coordinate */
};

static const struct alg_info algs[] = {
    {"RS256", JWT_ALG_RS256, KTY_RSA, NULL, NULL, 0},
    {"RS384", JWT_ALG_RS384, KTY_RSA, NULL, NULL, 0},
    {"RS512", JWT_ALG_RS512, KTY_RSA, NULL, NULL, 0},
    {"ES256", JWT_ALG_ES256, KTY_EC, "P-256", "prime256v1", 32},
    {"ES384", JWT_ALG_ES384, KTY_EC, "P-384", "secp384r1", 48},
    {"ES512", JWT_ALG_ES512, KTY_EC, "P-521", "secp521r1", 66},
};
#define N_ALGS (sizeof algs / sizeof algs[0])

struct jwk_key {
    char *kid; /* NULL when the JWK has none */
    const struct alg_info *alg;
    char *pem; /* SubjectPublicKeyInfo PEM, as libjwt 1.10 wants */
    size_t pem_len;
};

struct key_set {
    struct jwk_key *v;
    size_t n;
};

struct jwks {
    int configured;
    int have_secret;
    struct buf secret; /* the HS256 key; wiped on free */
    int have_file;
    struct key_set file_keys;

    /* OpenID discovery */
    char *config_url; /* NULL when not configured; also the cache row's key */
    struct key_set remote;
    int remote_loaded;
    int64_t remote_fetched_ms; /* when the document we hold was fetched (by any worker) */
    int64_t last_attempt_ms;   /* this worker's last network attempt, 0 = none */
    CURL *curl;
    /* Guards the key sets, the OpenID state and curl: request threads look
     * keys up under it, and one of them fetches while the others wait, so a
     * rotation reaches the provider once per process, not once per thread. */
    pthread_mutex_t mu;
    int mu_ready;
};

/* The token, taken apart. */
struct token {
    const char *text;
    size_t len;
    const char *seg[3];
    size_t seg_len[3];
    json_object *header, *payload;
    const char *alg;
    const char *kid; /* NULL when absent */
};

/* The one refusal that is not the token's fault: no OpenID keys could be
 * fetched, so no RS/ES token can be checked until the provider answers. */
static const char KEYS_UNAVAILABLE[] = "the identity provider's signing keys are unavailable";

static enum aigw_err refuse(char *why, size_t why_len, const char *msg)
{
    if (why && why_len)
        snprintf(why, why_len, "%s", msg);
    return msg == KEYS_UNAVAILABLE ? AIGW_ERR_AUTH_UNAVAILABLE : AIGW_ERR_INVALID_TOKEN;
}

static int nonempty(const char *s)
{
    return s && *s;
}

/* --- base64url ------------------------------------------------------------ */

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Decodes n characters of unpadded base64url into out (replacing its contents).
 * Refuses any other character, a length no encoder produces and non-zero
 * unused bits, so each byte string has exactly one accepted encoding.
 */
static int b64url_decode(const char *s, size_t n, struct buf *out)
{
    buf_reset(out);
    if (n % 4 == 1)
        return -1;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (buf_putc(out, (char)((acc >> bits) & 0xff)) < 0)
                return -1;
            acc &= (1u << bits) - 1;
        }
    }
    return acc == 0 ? 0 : -1;
}

/* --- JWK to PEM ----------------------------------------------------------- */

/* Decodes the base64url string member name of jwk; tolerates '=' padding, which
 * some providers add to JWK values although RFC 7518 says not to. */
static int jwk_member_bytes(json_object *jwk, const char *name, struct buf *out)
{
    json_object *v;
    if (!json_object_object_get_ex(jwk, name, &v) || !json_object_is_type(v, json_type_string))
        return -1;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n == 0 || b64url_decode(s, n, out) < 0)
        return -1;
    return 0;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    if (!pkey)
        return NULL;
    /* fromdata takes what it is given; the public check refuses an EC point
     * off the curve or an RSA modulus that cannot be one. */
    EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok = chk && EVP_PKEY_public_check(chk) == 1;
    EVP_PKEY_CTX_free(chk);
    if (!ok) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(json_object *jwk, const char **problem)
{
    struct buf n = {0}, e = {0};
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;
    if (jwk_member_bytes(jwk, "n", &n) < 0 || jwk_member_bytes(jwk, "e", &e) < 0) {
        *problem = "n and e must be base64url strings";
        goto done;
    }
    bn_n = BN_bin2bn((const unsigned char *)n.data, (int)n.len, NULL);
    bn_e = BN_bin2bn((const unsigned char *)e.data, (int)e.len, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (!bn_n || !bn_e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e)) {
        *problem = "out of memory";
        goto done;
    }
    pkey = pkey_from_params("RSA", bld);
    if (!pkey) {
        *problem = "not a valid RSA public key";
    } else if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS) {
        *problem = "RSA key shorter than 2048 bits";
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
done:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    buf_free(&n);
    buf_free(&e);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(json_object *jwk, const struct alg_info *a, const char **problem)
{
    struct buf x = {0}, y = {0}, pub = {0};
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY *pkey = NULL;
    if (jwk_member_bytes(jwk, "x", &x) < 0 || jwk_member_bytes(jwk, "y", &y) < 0) {
        *problem = "x and y must be base64url strings";
        goto done;
    }
    if (x.len != a->coord_len || y.len != a->coord_len) {
        *problem = "x and y have the wrong length for the curve";
        goto done;
    }
    /* An uncompressed point: 0x04 || x || y. */
    bld = OSSL_PARAM_BLD_new();
    if (buf_putc(&pub, 4) < 0 || buf_append(&pub, x.data, x.len) < 0 ||
        buf_append(&pub, y.data, y.len) < 0 || !bld ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, a->group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub.data, pub.len)) {
        *problem = "out of memory";
        goto done;
    }
    pkey = pkey_from_params("EC", bld);
    if (!pkey)
        *problem = "not a valid EC public key for the curve";
done:
    OSSL_PARAM_BLD_free(bld);
    buf_free(&x);
    buf_free(&y);
    buf_free(&pub);
    return pkey;
}

/* Returns the PEM of pkey's public key (malloc'd, NUL-terminated), or NULL. */
static char *pem_of(EVP_PKEY *pkey, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *pem = NULL;
    if (bio && PEM_write_bio_PUBKEY(bio, pkey) == 1) {
        char *p;
        long n = BIO_get_mem_data(bio, &p);
        if (n > 0 && (pem = malloc((size_t)n + 1)) != NULL) {
            memcpy(pem, p, (size_t)n);
            pem[n] = '\0';
            *len = (size_t)n;
        }
    }
    BIO_free(bio);
    return pem;
}

static const char *jwk_string(json_object *jwk, const char *name, int *bad)
{
    json_object *v;
    if (!json_object_object_get_ex(jwk, name, &v))
        return NULL;
    if (!json_object_is_type(v, json_type_string)) {
        *bad = 1;
        return NULL;
    }
    return json_object_get_string(v);
}

static const struct alg_info *alg_by_name(const char *name)
{
    for (size_t i = 0; i < N_ALGS; i++)
        if (strcmp(algs[i].name, name) == 0)
            return &algs[i];
    return NULL;
}

/* The algorithm a JWK is for: its "alg" when present (which must fit its kty
 * and curve), else RS256 for RSA and the curve's ES algorithm for EC. */
static const struct alg_info *jwk_alg(const char *kty, const char *crv, const char *alg,
                                      const char **problem)
{
    const struct alg_info *a = NULL;
    if (strcmp(kty, "RSA") == 0) {
        a = alg_by_name(alg ? alg : "RS256");
        if (!a || a->kty != KTY_RSA) {
            *problem = "alg is not RS256, RS384 or RS512";
            return NULL;
        }
        return a;
    }
    if (strcmp(kty, "EC") == 0) {
        for (size_t i = 0; crv && i < N_ALGS; i++)
            if (algs[i].crv && strcmp(algs[i].crv, crv) == 0)
                a = &algs[i];
        if (!a) {
            *problem = "crv is not P-256, P-384 or P-521";
            return NULL;
        }
        if (alg && strcmp(alg, a->name) != 0) {
            *problem = "alg does not match the curve";
            return NULL;
        }
        return a;
    }
    *problem = "kty is not RSA or EC";
    return NULL;
}

/* Turns one JWK into a key; returns 0, or -1 with the reason in *problem. */
static int key_from_jwk(json_object *jwk, struct jwk_key *out, const char **problem)
{
    int bad = 0;
    if (!json_object_is_type(jwk, json_type_object)) {
        *problem = "not a JSON object";
        return -1;
    }
    const char *kty = jwk_string(jwk, "kty", &bad);
    const char *use = jwk_string(jwk, "use", &bad);
    const char *alg = jwk_string(jwk, "alg", &bad);
    const char *crv = jwk_string(jwk, "crv", &bad);
    const char *kid = jwk_string(jwk, "kid", &bad);
    if (bad || !kty) {
        *problem = "kty, use, alg, crv and kid must be strings (kty is required)";
        return -1;
    }
    if (use && strcmp(use, "sig") != 0) {
        *problem = "use is not sig";
        return -1;
    }
    const struct alg_info *a = jwk_alg(kty, crv, alg, problem);
    if (!a)
        return -1;
    EVP_PKEY *pkey = a->kty == KTY_RSA ? rsa_from_jwk(jwk, problem) : ec_from_jwk(jwk, a, problem);
    if (!pkey)
        return -1;
    memset(out, 0, sizeof *out);
    out->alg = a;
    out->pem = pem_of(pkey, &out->pem_len);
    EVP_PKEY_free(pkey);
    if (!out->pem || (kid && !(out->kid = strdup(kid)))) {
        free(out->pem);
        out->pem = NULL;
        *problem = "out of memory";
        return -1;
    }
    return 0;
}

static void key_set_free(struct key_set *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->v[i].kid);
        free(ks->v[i].pem);
    }
    free(ks->v);
    ks->v = NULL;
    ks->n = 0;
}

/*
 * Reads the keys of a JWKS document (an object with a "keys" array, or one
 * JWK) into out, skipping unusable keys with a warning that names source.
 * Returns the number of usable keys, or -1 with the reason in err.
 */
static int key_set_load(const char *text, size_t len, const char *source, struct key_set *out,
                        struct buf *err)
{
    struct json_strict_error je = {0};
    json_object *doc = json_strict_parse(text, len, JSON_JWKS_DEPTH, &je);
    if (!doc) {
        buf_printf(err, "%s is not valid JSON (byte %zu: %s)", source, je.offset, je.what);
        return -1;
    }
    json_object *keys = NULL;
    size_t n = 1;
    if (json_object_is_type(doc, json_type_object) &&
        json_object_object_get_ex(doc, "keys", &keys)) {
        if (!json_object_is_type(keys, json_type_array)) {
            buf_printf(err, "%s: \"keys\" is not an array", source);
            json_object_put(doc);
            return -1;
        }
        n = json_object_array_length(keys);
    } else if (!json_object_is_type(doc, json_type_object)) {
        buf_printf(err, "%s is not a JSON object with a \"keys\" array", source);
        json_object_put(doc);
        return -1;
    }
    if (n > JWKS_MAX_KEYS) {
        log_warn("JWKS %s has %zu keys; using the first %d", source, n, JWKS_MAX_KEYS);
        n = JWKS_MAX_KEYS;
    }
    struct key_set ks = {calloc(n ? n : 1, sizeof *ks.v), 0};
    if (!ks.v) {
        buf_printf(err, "%s: out of memory", source);
        json_object_put(doc);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *jwk = keys ? json_object_array_get_idx(keys, i) : doc;
        const char *problem = "unusable";
        if (key_from_jwk(jwk, &ks.v[ks.n], &problem) == 0) {
            ks.n++;
            continue;
        }
        int bad = 0;
        const char *kid =
            json_object_is_type(jwk, json_type_object) ? jwk_string(jwk, "kid", &bad) : NULL;
        log_warn("JWKS %s: key %zu (kid %s) skipped: %s", source, i, kid ? kid : "none", problem);
    }
    json_object_put(doc);
    key_set_free(out);
    *out = ks;
    return (int)ks.n;
}

/* --- loading at start -------------------------------------------------------- */

static int read_file(const char *path, struct buf *out, struct buf *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        buf_printf(err, "auth.jwt.jwks_file %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char chunk[4096];
    size_t r;
    int rc = 0;
    buf_reset(out);
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (out->len + r > JWKS_DOC_MAX_BYTES) {
            buf_printf(err, "auth.jwt.jwks_file %s: larger than %zu bytes", path,
                       JWKS_DOC_MAX_BYTES);
            rc = -1;
            break;
        }
        if (buf_append(out, chunk, r) < 0) {
            buf_printf(err, "auth.jwt.jwks_file %s: out of memory", path);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        buf_printf(err, "auth.jwt.jwks_file %s: cannot read: %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

static int load_jwks_file(struct jwks *k, const char *path, struct buf *err)
{
    struct buf text = {0}, name = {0};
    int rc = -1;
    buf_printf(&name, "auth.jwt.jwks_file %s", path);
    if (read_file(path, &text, err) < 0)
        goto done;
    int n = key_set_load(buf_cstr(&text), text.len, buf_cstr(&name), &k->file_keys, err);
    if (n < 0)
        goto done;
    if (n == 0) {
        buf_printf(err,
                   "%s has no usable signing key (RSA with n and e of at least %d bits, or"
                   " EC P-256/P-384/P-521 with x and y; use absent or \"sig\")",
                   buf_cstr(&name), RSA_MIN_BITS);
        goto done;
    }
    k->have_file = 1;
    rc = 0;
done:
    buf_free(&text);
    buf_free(&name);
    return rc;
}

static int load_secret(struct jwks *k, struct worker *w, const struct cfg *c, struct buf *err)
{
    struct buf why = {0};
    /* Through the worker's cache, so the secret may also live in Key Vault. */
    int rc = w->secrets
                 ? secrets_get(w->secrets, c->auth.jwt_hs256_secret_ref, 0, &k->secret, &why)
                 : secret_resolve(c->auth.jwt_hs256_secret_ref, c->environment, &k->secret, &why);
    if (rc < 0) {
        buf_printf(err, "auth.jwt.hs256_secret: %s", buf_cstr(&why));
        buf_free(&why);
        return -1;
    }
    buf_free(&why);
    if (k->secret.len == 0) {
        buf_puts(err, "auth.jwt.hs256_secret: the secret is empty");
        return -1;
    }
    if (k->secret.len < HS256_MIN_SECRET)
        log_warn("auth.jwt.hs256_secret is shorter than %d bytes; use a longer random secret",
                 HS256_MIN_SECRET);
    k->have_secret = 1;
    return 0;
}

struct jwks *jwks_new(struct worker *w, struct buf *err)
{
    const struct cfg *c = w->cfg;
    struct jwks *k = calloc(1, sizeof *k);
    if (!k) {
        buf_puts(err, "JWT keys: out of memory");
        return NULL;
    }
    if (nonempty(c->auth.jwt_hs256_secret_ref) && load_secret(k, w, c, err) < 0)
        goto fail;
    if (nonempty(c->auth.jwt_jwks_file) && load_jwks_file(k, c->auth.jwt_jwks_file, err) < 0)
        goto fail;
    if (nonempty(c->auth.jwt_openid_config_url)) {
        k->config_url = strdup(c->auth.jwt_openid_config_url);
        if (!k->config_url) {
            buf_puts(err, "JWT keys: out of memory");
            goto fail;
        }
    }
    k->configured = k->have_secret || k->have_file || k->config_url;
    pthread_mutex_init(&k->mu, NULL);
    k->mu_ready = 1;
    return k;
fail:
    jwks_free(k);
    return NULL;
}

void jwks_free(struct jwks *k)
{
    if (!k)
        return;
    if (k->secret.data)
        OPENSSL_cleanse(k->secret.data, k->secret.cap);
    buf_free(&k->secret);
    key_set_free(&k->file_keys);
    key_set_free(&k->remote);
    free(k->config_url);
    if (k->curl)
        curl_easy_cleanup(k->curl);
    if (k->mu_ready)
        pthread_mutex_destroy(&k->mu);
    free(k);
}

/* --- OpenID discovery --------------------------------------------------------- */

/* GETs url into out; returns 0 on a 200 response within the limits, else -1
 * with the reason in err. */
static int http_get(struct jwks *k, const char *url, struct buf *out, struct buf *err)
{
    if (!k->curl && !(k->curl = curl_easy_init())) {
        buf_puts(err, "cannot create a curl handle");
        return -1;
    }
    CURL *c = k->curl;
    char cerr[CURL_ERROR_SIZE] = "";
    buf_reset(out);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, HTTP_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, HTTP_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)JWKS_DOC_MAX_BYTES);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "aigw");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, backend_collect_small_answer);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    if (rc == CURLE_WRITE_ERROR || rc == CURLE_FILESIZE_EXCEEDED) {
        buf_printf(err, "response larger than %zu bytes", JWKS_DOC_MAX_BYTES);
        return -1;
    }
    if (rc != CURLE_OK) {
        buf_printf(err, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
        return -1;
    }
    if (status != 200) {
        buf_printf(err, "HTTP status %ld", status);
        return -1;
    }
    return 0;
}

/* Reads jwks_uri from the OpenID configuration document in doc into uri. */
static int discovery_jwks_uri(const struct jwks *k, struct buf *doc, struct buf *uri,
                              struct buf *err)
{
    struct json_strict_error je = {0};
    json_object *o = json_strict_parse(buf_cstr(doc), doc->len, JSON_JWKS_DEPTH, &je);
    json_object *v;
    int rc = -1;
    if (!o || !json_object_is_type(o, json_type_object)) {
        buf_puts(err, "the OpenID configuration is not a JSON object");
    } else if (!json_object_object_get_ex(o, "jwks_uri", &v) ||
               !json_object_is_type(v, json_type_string)) {
        buf_puts(err, "the OpenID configuration has no jwks_uri string");
    } else {
        const char *s = json_object_get_string(v);
        /* No downgrade: an https discovery document must point to an https JWKS. */
        int https = strncasecmp(s, "https://", 8) == 0;
        if (!https &&
            (strncasecmp(k->config_url, "https://", 8) == 0 || strncasecmp(s, "http://", 7) != 0)) {
            buf_puts(err, "jwks_uri is not an https URL");
        } else {
            buf_reset(uri);
            rc = buf_puts(uri, s);
        }
    }
    json_object_put(o);
    return rc;
}

struct jwks_row {
    const char *url, *body;
    int64_t fetched_ms;
};

static int jwks_put_in_batch(struct store *st, struct counters *c, void *arg)
{
    (void)c;
    const struct jwks_row *r = arg;
    return store_jwks_put(st, r->url, r->body, r->fetched_ms);
}

/* Fetches the discovery document and the JWKS, loads the keys and caches the
 * JWKS in the shared database. Returns 0 or -1 (logged). */
static int remote_fetch(struct worker *w, struct jwks *k, int64_t now_ms)
{
    struct buf doc = {0}, uri = {0}, err = {0};
    int rc = -1;
    k->last_attempt_ms = now_ms;
    if (http_get(k, k->config_url, &doc, &err) < 0) {
        log_warn("JWT: cannot fetch the OpenID configuration %s: %s", k->config_url,
                 buf_cstr(&err));
        goto done;
    }
    if (discovery_jwks_uri(k, &doc, &uri, &err) < 0) {
        log_warn("JWT: OpenID configuration %s: %s", k->config_url, buf_cstr(&err));
        goto done;
    }
    if (http_get(k, buf_cstr(&uri), &doc, &err) < 0) {
        log_warn("JWT: cannot fetch the JWKS %s: %s", buf_cstr(&uri), buf_cstr(&err));
        goto done;
    }
    struct key_set ks = {0};
    int n = key_set_load(buf_cstr(&doc), doc.len, buf_cstr(&uri), &ks, &err);
    if (n <= 0) {
        log_warn("JWT: JWKS %s: %s", buf_cstr(&uri), n < 0 ? buf_cstr(&err) : "no usable key");
        key_set_free(&ks);
        goto done;
    }
    key_set_free(&k->remote);
    k->remote = ks;
    k->remote_loaded = 1;
    k->remote_fetched_ms = now_ms;
    struct jwks_row row = {k->config_url, buf_cstr(&doc), now_ms};
    if (w->db && db_write(w->db, jwks_put_in_batch, &row) != 0)
        log_warn("JWT: cannot cache the JWKS of %s in the database", k->config_url);
    log_info("JWT: loaded %d signing keys from %s", n, buf_cstr(&uri));
    rc = 0;
done:
    buf_free(&doc);
    buf_free(&uri);
    buf_free(&err);
    return rc;
}

/* Loads the cached JWKS when another worker stored a newer one than we hold.
 * Returns 1 when the keys changed, else 0. */
static int remote_sync_from_cache(struct worker *w, struct jwks *k)
{
    struct store *st = w->db ? db_reader(w->db) : NULL;
    if (!st)
        return 0;
    struct buf body = {0}, err = {0};
    int64_t fetched_ms = 0;
    int changed = 0;
    int found = store_jwks_get(st, k->config_url, &body, &fetched_ms);
    db_reader_done(w->db, st);
    if (found == 1 && (!k->remote_loaded || fetched_ms > k->remote_fetched_ms)) {
        struct key_set ks = {0};
        if (key_set_load(buf_cstr(&body), body.len, "cached JWKS", &ks, &err) > 0) {
            key_set_free(&k->remote);
            k->remote = ks;
            k->remote_loaded = 1;
            k->remote_fetched_ms = fetched_ms;
            changed = 1;
        } else {
            key_set_free(&ks);
            log_warn("JWT: ignoring the cached JWKS of %s: %s", k->config_url,
                     err.len ? buf_cstr(&err) : "no usable key");
        }
    }
    buf_free(&body);
    buf_free(&err);
    return changed;
}

/* Whether this worker may go to the network now. min_age_ms: how old the
 * document we hold (fetched by any worker) must be. */
static int remote_fetch_allowed(const struct jwks *k, int64_t now_ms, int64_t min_age_ms)
{
    if (k->remote_loaded && now_ms - k->remote_fetched_ms < min_age_ms)
        return 0;
    /* A failing provider is not asked again at once: each try can take 5 s. */
    int64_t gap = k->remote_loaded ? JWKS_REFETCH_MIN_MS : JWKS_RETRY_EMPTY_MS;
    return k->last_attempt_ms == 0 || now_ms - k->last_attempt_ms >= gap;
}

/* Makes sure OpenID keys are loaded and no older than a day, when possible. */
static void remote_ensure(struct worker *w, struct jwks *k, int64_t now_ms)
{
    if (k->remote_loaded && now_ms - k->remote_fetched_ms < JWKS_MAX_AGE_MS)
        return;
    if (k->remote_loaded && now_ms - k->last_attempt_ms < JWKS_REFETCH_MIN_MS)
        return; /* stale, and the provider failed a moment ago: keep the keys we have */
    remote_sync_from_cache(w, k);
    if (remote_fetch_allowed(k, now_ms, JWKS_MAX_AGE_MS))
        remote_fetch(w, k, now_ms);
}

/* --- choosing the key ----------------------------------------------------------- */

enum lookup { KEY_FOUND, KEY_ALG_MISMATCH, KEY_UNKNOWN };

struct key_choice {
    const struct jwk_key *key;
    int kid_seen; /* a key with the token's kid exists, for another algorithm */
    size_t n_kty; /* keys of the token's kty (for a token without kid) */
    const struct jwk_key *only;
};

static void scan_set(const struct key_set *ks, const struct alg_info *a, const char *kid,
                     struct key_choice *ch)
{
    for (size_t i = 0; i < ks->n && !ch->key; i++) {
        const struct jwk_key *key = &ks->v[i];
        if (kid) {
            if (!key->kid || strcmp(key->kid, kid) != 0)
                continue;
            if (key->alg == a)
                ch->key = key;
            else
                ch->kid_seen = 1;
        } else if (key->alg->kty == a->kty) {
            ch->n_kty++;
            ch->only = key;
        }
    }
}

/* Finds the key for a token of algorithm a and kid (NULL when the token has
 * none: then the one key of a's kty, if there is exactly one). */
static enum lookup find_key(const struct jwks *k, const struct alg_info *a, const char *kid,
                            const struct jwk_key **out)
{
    struct key_choice ch = {0};
    scan_set(&k->file_keys, a, kid, &ch);
    scan_set(&k->remote, a, kid, &ch);
    if (!kid && ch.n_kty == 1) {
        ch.key = ch.only;
        if (ch.key->alg != a)
            return KEY_ALG_MISMATCH;
    }
    *out = ch.key;
    if (ch.key)
        return KEY_FOUND;
    return ch.kid_seen ? KEY_ALG_MISMATCH : KEY_UNKNOWN;
}

/* --- the token ---------------------------------------------------------------- */

/* Decodes one segment and parses it as a JSON object. */
static json_object *segment_object(const char *s, size_t n, int depth)
{
    struct buf raw = {0};
    json_object *o = NULL;
    if (n > 0 && b64url_decode(s, n, &raw) == 0) {
        struct json_strict_error je = {0};
        o = json_strict_parse(buf_cstr(&raw), raw.len, depth, &je);
        if (o && !json_object_is_type(o, json_type_object)) {
            json_object_put(o);
            o = NULL;
        }
    }
    buf_free(&raw);
    return o;
}

static int split_token(const char *token, struct token *t)
{
    const char *p = token;
    for (int i = 0; i < 3; i++) {
        const char *dot = i < 2 ? memchr(p, '.', t->len - (size_t)(p - token)) : NULL;
        const char *end = dot ? dot : token + t->len;
        if (i < 2 && !dot)
            return -1;
        t->seg[i] = p;
        t->seg_len[i] = (size_t)(end - p);
        p = end + 1;
    }
    /* The signature may not contain a fourth segment's dot. */
    return memchr(t->seg[2], '.', t->seg_len[2]) ? -1 : 0;
}

/* Parses the token's structure and header. On error returns the why text. */
static const char *parse_token(const char *token, struct token *t)
{
    if (!token)
        return "malformed token";
    t->text = token;
    t->len = strnlen(token, TOKEN_MAX_BYTES + 1);
    if (t->len > TOKEN_MAX_BYTES)
        return "token too large";
    if (t->len == 0 || split_token(token, t) < 0)
        return "malformed token";
    t->header = segment_object(t->seg[0], t->seg_len[0], JSON_HEADER_DEPTH);
    if (!t->header)
        return "malformed token";
    json_object *v;
    if (!json_object_object_get_ex(t->header, "alg", &v) ||
        !json_object_is_type(v, json_type_string))
        return "malformed token: header has no alg";
    t->alg = json_object_get_string(v);
    if (json_object_object_get_ex(t->header, "kid", &v)) {
        if (!json_object_is_type(v, json_type_string))
            return "malformed token: kid is not a string";
        t->kid = json_object_get_string(v);
    }
    if (json_object_object_get_ex(t->header, "typ", &v) &&
        (!json_object_is_type(v, json_type_string) ||
         strcasecmp(json_object_get_string(v), "JWT") != 0))
        return "token type (typ) is not JWT";
    /* RFC 7515 4.1.11: extensions we do not understand must be refused. */
    if (json_object_object_get_ex(t->header, "crit", NULL))
        return "unsupported critical header (crit)";
    if (strcasecmp(t->alg, "none") == 0)
        return "algorithm not allowed";
    struct buf sig = {0};
    int sig_ok = t->seg_len[2] > 0 && b64url_decode(t->seg[2], t->seg_len[2], &sig) == 0;
    buf_free(&sig);
    if (!sig_ok)
        return "malformed token";
    t->payload = segment_object(t->seg[1], t->seg_len[1], JSON_PAYLOAD_DEPTH);
    if (!t->payload)
        return "malformed token";
    return NULL;
}

/* Chooses the key and algorithm for the token. On error returns the why text. */
static const char *choose_key(struct worker *w, struct jwks *k, const struct token *t,
                              int64_t now_ms, const unsigned char **key, size_t *key_len,
                              jwt_alg_t *alg)
{
    if (strcmp(t->alg, "HS256") == 0) {
        if (!k->have_secret)
            return "algorithm not allowed";
        *key = (const unsigned char *)k->secret.data;
        *key_len = k->secret.len;
        *alg = JWT_ALG_HS256;
        return NULL;
    }
    const struct alg_info *a = alg_by_name(t->alg);
    if (!a || (!k->have_file && !k->config_url))
        return "algorithm not allowed";
    if (k->config_url)
        remote_ensure(w, k, now_ms);
    const struct jwk_key *found = NULL;
    enum lookup r = find_key(k, a, t->kid, &found);
    if (r == KEY_UNKNOWN && k->config_url) {
        /* Maybe the keys were rotated: first see whether another worker has
         * fetched them, then fetch ourselves (at most once a minute). */
        if (remote_sync_from_cache(w, k))
            r = find_key(k, a, t->kid, &found);
        if (r == KEY_UNKNOWN && remote_fetch_allowed(k, now_ms, JWKS_REFETCH_MIN_MS) &&
            remote_fetch(w, k, now_ms) == 0)
            r = find_key(k, a, t->kid, &found);
    }
    if (r == KEY_ALG_MISMATCH)
        return "algorithm not allowed";
    if (r == KEY_UNKNOWN) {
        if (k->config_url && !k->remote_loaded && !k->have_file)
            return KEYS_UNAVAILABLE;
        return "unknown signing key (kid)";
    }
    *key = (const unsigned char *)found->pem;
    *key_len = found->pem_len;
    *alg = a->alg;
    return NULL;
}

/* Checks the signature with libjwt, with the key and algorithm we chose. */
static const char *check_signature(const struct token *t, const unsigned char *key, size_t key_len,
                                   jwt_alg_t alg)
{
    jwt_t *jwt = NULL;
    const char *why = NULL;
    /* libjwt skips the signature check when given no key: never let it. */
    if (!key || key_len == 0 || key_len > INT32_MAX) /* libjwt takes an int */
        return "no signing key";
    if (jwt_decode(&jwt, t->text, key, (int)key_len) != 0 || !jwt)
        why = "signature verification failed";
    else if (jwt_get_alg(jwt) != alg)
        why = "algorithm not allowed";
    jwt_free(jwt);
    return why;
}

/* --- claims ------------------------------------------------------------------- */

/* 1 when o is a JSON string equal to s (no embedded NUL tricks). */
static int json_str_eq(json_object *o, const char *s)
{
    return json_object_is_type(o, json_type_string) &&
           (size_t)json_object_get_string_len(o) == strlen(s) &&
           memcmp(json_object_get_string(o), s, strlen(s)) == 0;
}

static int json_is_number(json_object *o)
{
    return json_object_is_type(o, json_type_int) || json_object_is_type(o, json_type_double);
}

static const char *check_times(json_object *p, int64_t now_s, int leeway_s)
{
    json_object *v;
    double now = (double)now_s, leeway = leeway_s > 0 ? leeway_s : 0;
    if (!json_object_object_get_ex(p, "exp", &v))
        return "missing exp claim";
    if (!json_is_number(v))
        return "claim 'exp' must be a number";
    if (now > json_object_get_double(v) + leeway)
        return "token expired";
    if (json_object_object_get_ex(p, "nbf", &v)) {
        if (!json_is_number(v))
            return "claim 'nbf' must be a number";
        if (now + leeway < json_object_get_double(v))
            return "token not yet valid";
    }
    return NULL;
}

static const char *check_iss_aud(json_object *p, const struct cfg *c)
{
    json_object *v;
    if (nonempty(c->auth.jwt_issuer)) {
        if (!json_object_object_get_ex(p, "iss", &v))
            return "missing iss claim";
        if (!json_str_eq(v, c->auth.jwt_issuer))
            return "wrong issuer";
    }
    if (!nonempty(c->auth.jwt_audience))
        return NULL;
    if (!json_object_object_get_ex(p, "aud", &v))
        return "missing aud claim";
    if (json_object_is_type(v, json_type_string))
        return json_str_eq(v, c->auth.jwt_audience) ? NULL : "wrong audience";
    if (!json_object_is_type(v, json_type_array))
        return "claim 'aud' must be a string or an array of strings";
    int match = 0;
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        json_object *e = json_object_array_get_idx(v, i);
        if (!json_object_is_type(e, json_type_string))
            return "claim 'aud' must be a string or an array of strings";
        match |= json_str_eq(e, c->auth.jwt_audience);
    }
    return match ? NULL : "wrong audience";
}

/* 1 when s (n bytes) has no C0 or C1 control character and no DEL. The
 * parser has already refused invalid UTF-8. */
static int printable(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f)
            return 0;
        if (u[i] == 0xc2 && i + 1 < n && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f)
            return 0;
    }
    return 1;
}

static const char *take_user(json_object *p, const char *claim, char *out, size_t out_size,
                             char *why, size_t why_len)
{
    json_object *v;
    if (!json_object_object_get_ex(p, claim, &v)) {
        snprintf(why, why_len, "missing '%s' claim", claim);
        return why;
    }
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(why, why_len, "claim '%s' must be a string", claim);
        return why;
    }
    size_t n = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (n == 0 || n > USER_ID_MAX || n >= out_size || !printable(s, n)) {
        snprintf(why, why_len, "claim '%s' must be 1 to %d printable characters", claim,
                 USER_ID_MAX);
        return why;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return NULL;
}

static int role_ok(json_object *r)
{
    if (!json_object_is_type(r, json_type_string))
        return 0;
    size_t n = (size_t)json_object_get_string_len(r);
    const char *s = json_object_get_string(r);
    /* A comma inside a role would split into two roles when joined. */
    return n > 0 && printable(s, n) && !memchr(s, ',', n);
}

static const char *take_roles(json_object *p, char *out, size_t out_size)
{
    json_object *v;
    struct buf joined = {0};
    const char *why = NULL;
    out[0] = '\0';
    if (!json_object_object_get_ex(p, "roles", &v))
        return NULL;
    int single = json_object_is_type(v, json_type_string);
    if (!single && !json_object_is_type(v, json_type_array))
        return "claim 'roles' must be an array of strings";
    size_t n = single ? 1 : json_object_array_length(v);
    for (size_t i = 0; i < n && !why; i++) {
        json_object *r = single ? v : json_object_array_get_idx(v, i);
        if (!json_object_is_type(r, json_type_string))
            why = "claim 'roles' must be an array of strings";
        else if (!role_ok(r))
            why = "claim 'roles' has an empty role or one with a comma or control character";
        else if ((i && buf_putc(&joined, ',') < 0) ||
                 buf_append(&joined, json_object_get_string(r),
                            (size_t)json_object_get_string_len(r)) < 0)
            why = "claim 'roles' is too long";
    }
    if (!why && joined.len >= out_size)
        why = "claim 'roles' is too long";
    if (!why && joined.len)
        memcpy(out, joined.data, joined.len + 1);
    buf_free(&joined);
    return why;
}

/* --- verify ---------------------------------------------------------------------- */

enum aigw_err jwt_verify(struct worker *w, const char *token, int64_t now_s, struct caller *caller,
                         char *why, size_t why_len)
{
    struct jwks *k = w ? w->jwks : NULL;
    struct token t = {0};
    const unsigned char *key = NULL;
    size_t key_len = 0;
    jwt_alg_t alg = JWT_ALG_NONE;
    char user[sizeof caller->user_id];
    char roles[sizeof caller->roles];
    char msg[160];
    const char *no = NULL;

    if (why && why_len)
        why[0] = '\0';
    if (!k || !k->configured)
        return refuse(why, why_len, "JWT authentication is not configured");
    const struct cfg *c = w->cfg;
    const char *claim = nonempty(c->auth.user_claim) ? c->auth.user_claim : "sub";

    struct buf keycopy = {0};
    if (!(no = parse_token(token, &t))) {
        /* The key is copied out under the lock: another thread may replace
         * the key set (a rotation) while this one checks the signature. */
        pthread_mutex_lock(&k->mu);
        no = choose_key(w, k, &t, now_s * 1000, &key, &key_len, &alg);
        if (!no && buf_append(&keycopy, key, key_len) < 0)
            no = "out of memory";
        pthread_mutex_unlock(&k->mu);
        key = (const unsigned char *)keycopy.data;
    }
    if (!no && !(no = check_signature(&t, key, key_len, alg)) &&
        !(no = check_times(t.payload, now_s, c->auth.leeway_s)) &&
        !(no = check_iss_aud(t.payload, c)) &&
        !(no = take_user(t.payload, claim, user, sizeof user, msg, sizeof msg)))
        no = take_roles(t.payload, roles, sizeof roles);
    buf_wipe(&keycopy);
    json_object_put(t.header);
    json_object_put(t.payload);
    if (no) {
        log_debug("JWT refused: %s", no);
        return refuse(why, why_len, no);
    }
    memcpy(caller->user_id, user, strlen(user) + 1);
    memcpy(caller->roles, roles, strlen(roles) + 1);
    caller->authenticated = 1;
    caller->via = "jwt";
    return AIGW_OK;
}
