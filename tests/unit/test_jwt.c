/*
 * test_jwt.c - unit tests for app/jwt.c: JWT verification and key loading.
 *
 * Keys are generated at start with OpenSSL (RSA 2048, EC P-256) and written
 * as JWKS files in a temporary directory. Ordinary tokens are signed with
 * libjwt; hostile ones (alg none, algorithm confusion, duplicate claims, JWS
 * ES256 with a raw R||S signature made by OpenSSL alone) are built by hand.
 * The OpenID tests start `python3 -m http.server` on 127.0.0.1 and use a
 * real database for the shared JWKS cache; they are skipped without python3.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "jwt.h"
/* libjwt's jwt.h (app/ is on the quote path only). */
#include <jwt.h>

#include "config.h"
#include "request.h"
#include "db.h"
#include "store.h"
#include "worker.h"

#define ISSUER     "https://login.example.com/tenant/v2.0"
#define AUDIENCE   "api://aigw"
#define SECRET     "0123456789abcdef0123456789abcdef-test-secret"
#define SECRET_ENV "AIGW_TEST_JWT_SECRET"

/* --- shared state, made once per run -------------------------------------- */

static struct {
    char dir[64];
    EVP_PKEY *rsa, *rsa2, *ec;
    char *rsa_priv, *rsa_pub, *rsa2_priv, *ec_priv;
    char *rsa_jwk, *rsa2_jwk, *ec_jwk; /* JWK objects, kids rsa1, rsa2, ec1 */
    char jwks_path[128];               /* rsa1 and ec1 */
    char jwks_rsa_only[128];           /* rsa1 */
    pid_t server;
    int port;
    int64_t now;
} g;

/* --- helpers ------------------------------------------------------------------ */

static void b64url(const unsigned char *p, size_t n, struct buf *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        buf_putc(out, tbl[v >> 18]);
        buf_putc(out, tbl[(v >> 12) & 63]);
        buf_putc(out, tbl[(v >> 6) & 63]);
        buf_putc(out, tbl[v & 63]);
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        buf_putc(out, tbl[v >> 18]);
        buf_putc(out, tbl[(v >> 12) & 63]);
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        buf_putc(out, tbl[v >> 18]);
        buf_putc(out, tbl[(v >> 12) & 63]);
        buf_putc(out, tbl[(v >> 6) & 63]);
    }
}

static void b64url_str(const char *s, struct buf *out)
{
    b64url((const unsigned char *)s, strlen(s), out);
}

static char *pem_string(EVP_PKEY *pkey, int private)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    if (private)
        assert_int_equal(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PUBKEY(bio, pkey), 1);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(bio);
    return s;
}

static void put_bn(EVP_PKEY *pkey, const char *param, size_t pad, struct buf *out)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(pkey, param, &bn), 1);
    unsigned char bytes[1024];
    int n = pad ? BN_bn2binpad(bn, bytes, (int)pad) : BN_bn2bin(bn, bytes);
    assert_true(n > 0);
    b64url(bytes, (size_t)n, out);
    BN_free(bn);
}

/* A JWK for pkey's public key; extra is inserted as more members (or ""). */
static char *jwk_of(EVP_PKEY *pkey, const char *kid, const char *extra)
{
    struct buf b = {0};
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        buf_printf(&b, "{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\"%s,\"n\":\"", kid, extra);
        put_bn(pkey, OSSL_PKEY_PARAM_RSA_N, 0, &b);
        buf_puts(&b, "\",\"e\":\"");
        put_bn(pkey, OSSL_PKEY_PARAM_RSA_E, 0, &b);
    } else {
        buf_printf(&b, "{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\"%s,\"x\":\"", kid, extra);
        put_bn(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32, &b);
        buf_puts(&b, "\",\"y\":\"");
        put_bn(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32, &b);
    }
    buf_puts(&b, "\"}");
    return b.data;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void path_in_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g.dir, name);
}

/* Claims with the defaults, then extra members (a JSON fragment, or ""). */
static char *claims(const char *extra)
{
    struct buf b = {0};
    buf_printf(&b,
               "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"alice\",\"exp\":%lld,"
               "\"roles\":[\"AI.User\"]%s}",
               ISSUER, AUDIENCE, (long long)g.now + 300, extra);
    return b.data;
}

/* Claims given entirely by the caller (printf-style). */
static char *claims_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *claims_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    assert_true(vasprintf(&s, fmt, ap) > 0);
    va_end(ap);
    return s;
}

/* Signs the claims with libjwt; kid may be NULL. Takes ownership of claims_json. */
static char *sign_libjwt(jwt_alg_t alg, const char *key, size_t key_len, const char *kid,
                         char *claims_json)
{
    jwt_t *jwt = NULL;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims_json), 0);
    if (kid)
        assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (const unsigned char *)key, (int)key_len), 0);
    char *token = jwt_encode_str(jwt);
    assert_non_null(token);
    jwt_free(jwt);
    free(claims_json);
    return token;
}

static char *hs256(char *claims_json)
{
    return sign_libjwt(JWT_ALG_HS256, SECRET, strlen(SECRET), NULL, claims_json);
}

static char *rs256(const char *kid, char *claims_json)
{
    return sign_libjwt(JWT_ALG_RS256, g.rsa_priv, strlen(g.rsa_priv), kid, claims_json);
}

/* header.payload of a hand-made token, in out. */
static void signing_input(const char *header, const char *payload, struct buf *out)
{
    buf_reset(out);
    b64url_str(header, out);
    buf_putc(out, '.');
    b64url_str(payload, out);
}

/* A hand-made token whose signature is sig (n bytes, may be 0). */
static char *hand_token(const char *header, const char *payload, const unsigned char *sig, size_t n)
{
    struct buf b = {0};
    signing_input(header, payload, &b);
    buf_putc(&b, '.');
    b64url(sig, n, &b);
    return b.data;
}

static char *hand_hs256(const char *header, const char *payload, const void *key, size_t key_len)
{
    struct buf in = {0};
    signing_input(header, payload, &in);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    assert_non_null(HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)in.data, in.len,
                         mac, &mac_len));
    buf_free(&in);
    return hand_token(header, payload, mac, mac_len);
}

/* A JWS ES256 token signed by OpenSSL alone: the signature is R||S, 32 bytes each. */
static char *hand_es256(const char *header, const char *payload)
{
    struct buf in = {0};
    signing_input(header, payload, &in);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[128];
    size_t der_len = sizeof der;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, g.ec), 1);
    assert_int_equal(EVP_DigestSign(md, der, &der_len, (const unsigned char *)in.data, in.len), 1);
    EVP_MD_CTX_free(md);
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    assert_non_null(sig);
    unsigned char raw[64];
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32), 32);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32), 32);
    ECDSA_SIG_free(sig);
    buf_free(&in);
    return hand_token(header, payload, raw, sizeof raw);
}

/* --- the worker under test -------------------------------------------------------- */

struct env {
    struct cfg cfg;
    struct worker w;
    struct caller caller;
    char why[160];
};

/* Builds a worker with the given key sources (NULL = not configured). */
static struct env *env_new(const char *secret_ref, const char *jwks_file, const char *openid_url)
{
    struct env *e = calloc(1, sizeof *e);
    assert_non_null(e);
    e->cfg.auth.jwt_issuer = ISSUER;
    e->cfg.auth.jwt_audience = AUDIENCE;
    e->cfg.auth.user_claim = "sub";
    e->cfg.auth.leeway_s = 60;
    e->cfg.auth.jwt_hs256_secret_ref = (char *)secret_ref;
    e->cfg.auth.jwt_jwks_file = (char *)jwks_file;
    e->cfg.auth.jwt_openid_config_url = (char *)openid_url;
    e->w.cfg = &e->cfg;
    struct buf err = {0};
    e->w.jwks = jwks_new(&e->w, &err);
    if (!e->w.jwks)
        fail_msg("jwks_new: %s", buf_cstr(&err));
    buf_free(&err);
    return e;
}

static void env_free(struct env *e)
{
    jwks_free(e->w.jwks);
    free(e);
}

/* Verifies token at time now and frees it; returns the result. */
static enum aigw_err verify_at(struct env *e, char *token, int64_t now)
{
    memset(&e->caller, 0, sizeof e->caller);
    memset(e->why, 0, sizeof e->why);
    enum aigw_err rc = jwt_verify(&e->w, token, now, &e->caller, e->why, sizeof e->why);
    if (rc == AIGW_OK) {
        assert_int_equal(e->caller.authenticated, 1);
        assert_string_equal(e->caller.via, "jwt");
    } else {
        assert_true(rc == AIGW_ERR_INVALID_TOKEN || rc == AIGW_ERR_AUTH_UNAVAILABLE);
        assert_int_equal(e->caller.authenticated, 0);
        assert_true(strlen(e->why) > 0);
        /* The reason never echoes the token. */
        if (token && strlen(token) > 8)
            assert_null(strstr(e->why, token));
    }
    free(token);
    return rc;
}

static enum aigw_err verify(struct env *e, char *token)
{
    return verify_at(e, token, g.now);
}

static void assert_refused(struct env *e, char *token, const char *why)
{
    assert_int_equal(verify(e, token), AIGW_ERR_INVALID_TOKEN);
    if (why)
        assert_string_equal(e->why, why);
}

/* The provider could not be reached: not the token's fault, retry later. */
static void assert_keys_unavailable(struct env *e, char *token)
{
    assert_int_equal(verify(e, token), AIGW_ERR_AUTH_UNAVAILABLE);
    assert_string_equal(e->why, "the identity provider's signing keys are unavailable");
}

static void assert_ok(struct env *e, char *token)
{
    enum aigw_err rc = verify(e, token);
    if (rc != AIGW_OK)
        fail_msg("refused: %s", e->why);
}

/* --- group setup ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    g.now = (int64_t)time(NULL);
    snprintf(g.dir, sizeof g.dir, "/tmp/test_jwt.XXXXXX");
    if (!mkdtemp(g.dir))
        return -1;
    g.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g.rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    g.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!g.rsa || !g.rsa2 || !g.ec)
        return -1;
    g.rsa_priv = pem_string(g.rsa, 1);
    g.rsa_pub = pem_string(g.rsa, 0);
    g.rsa2_priv = pem_string(g.rsa2, 1);
    g.ec_priv = pem_string(g.ec, 1);
    g.rsa_jwk = jwk_of(g.rsa, "rsa1", "");
    g.rsa2_jwk = jwk_of(g.rsa2, "rsa2", "");
    g.ec_jwk = jwk_of(g.ec, "ec1", "");

    struct buf b = {0};
    buf_printf(&b, "{\"keys\":[%s,%s]}", g.rsa_jwk, g.ec_jwk);
    path_in_dir(g.jwks_path, sizeof g.jwks_path, "jwks.json");
    write_file(g.jwks_path, buf_cstr(&b));
    buf_reset(&b);
    buf_printf(&b, "{\"keys\":[%s]}", g.rsa_jwk);
    path_in_dir(g.jwks_rsa_only, sizeof g.jwks_rsa_only, "jwks-rsa.json");
    write_file(g.jwks_rsa_only, buf_cstr(&b));
    buf_free(&b);
    setenv(SECRET_ENV, SECRET, 1);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (g.server > 0) {
        kill(g.server, SIGTERM);
        waitpid(g.server, NULL, 0);
    }
    EVP_PKEY_free(g.rsa);
    EVP_PKEY_free(g.rsa2);
    EVP_PKEY_free(g.ec);
    free(g.rsa_priv);
    free(g.rsa_pub);
    free(g.rsa2_priv);
    free(g.ec_priv);
    free(g.rsa_jwk);
    free(g.rsa2_jwk);
    free(g.ec_jwk);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g.dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* --- HS256 ------------------------------------------------------------------------------ */

static void test_hs256_valid(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    assert_ok(e, hs256(claims("")));
    assert_string_equal(e->caller.user_id, "alice");
    assert_string_equal(e->caller.roles, "AI.User");
    env_free(e);
}

static void test_hs256_wrong_secret(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    const char *other = "another-secret-another-secret-another";
    assert_refused(e, sign_libjwt(JWT_ALG_HS256, other, strlen(other), NULL, claims("")),
                   "signature verification failed");
    env_free(e);
}

static void test_hs384_refused(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    assert_refused(e, sign_libjwt(JWT_ALG_HS384, SECRET, strlen(SECRET), NULL, claims("")),
                   "algorithm not allowed");
    env_free(e);
}

static void test_hs256_lowercase_alg_refused(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    char *c = claims("");
    assert_refused(e, hand_hs256("{\"alg\":\"hs256\",\"typ\":\"JWT\"}", c, SECRET, strlen(SECRET)),
                   "algorithm not allowed");
    /* The same token with the exact name passes: the refusal was the name. */
    assert_ok(e, hand_hs256("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", c, SECRET, strlen(SECRET)));
    free(c);
    env_free(e);
}

/* --- RS256 and ES256 ---------------------------------------------------------------------- */

static void test_rs256_jwks_file(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, g.jwks_path, NULL);
    assert_ok(e, rs256("rsa1", claims("")));
    assert_string_equal(e->caller.user_id, "alice");
    env_free(e);
}

static void test_rs256_no_kid_single_key(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, g.jwks_rsa_only, NULL);
    assert_ok(e, rs256(NULL, claims("")));
    env_free(e);
}

static void test_rs256_no_kid_two_keys_refused(void **state)
{
    (void)state;
    char path[128];
    path_in_dir(path, sizeof path, "jwks-two-rsa.json");
    struct buf b = {0};
    buf_printf(&b, "{\"keys\":[%s,%s]}", g.rsa_jwk, g.rsa2_jwk);
    write_file(path, buf_cstr(&b));
    buf_free(&b);
    struct env *e = env_new(NULL, path, NULL);
    assert_refused(e, rs256(NULL, claims("")), "unknown signing key (kid)");
    assert_ok(e, rs256("rsa1", claims("")));
    assert_ok(e, sign_libjwt(JWT_ALG_RS256, g.rsa2_priv, strlen(g.rsa2_priv), "rsa2", claims("")));
    env_free(e);
}

static void test_single_jwk_file(void **state)
{
    (void)state;
    char path[128];
    path_in_dir(path, sizeof path, "single-jwk.json");
    write_file(path, g.rsa_jwk);
    struct env *e = env_new(NULL, path, NULL);
    assert_ok(e, rs256("rsa1", claims("")));
    env_free(e);
}

static void test_es256_libjwt(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, g.jwks_path, NULL);
    assert_ok(e, sign_libjwt(JWT_ALG_ES256, g.ec_priv, strlen(g.ec_priv), "ec1", claims("")));
    env_free(e);
}

static void test_es256_jws_raw_signature(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, g.jwks_path, NULL);
    char *c = claims("");
    const char *h = "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"ec1\"}";
    assert_ok(e, hand_es256(h, c));
    /* The same signature over other claims fails. */
    char *t = hand_es256(h, c);
    char *c2 = claims(",\"oid\":\"x\"");
    struct buf b = {0};
    signing_input(h, c2, &b);
    buf_puts(&b, strrchr(t, '.'));
    free(t);
    assert_refused(e, b.data, "signature verification failed");
    free(c);
    free(c2);
    env_free(e);
}

static void test_es256_token_with_rsa_kid(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, g.jwks_path, NULL);
    assert_refused(e, sign_libjwt(JWT_ALG_ES256, g.ec_priv, strlen(g.ec_priv), "rsa1", claims("")),
                   "algorithm not allowed");
    assert_refused(e,
                   sign_libjwt(JWT_ALG_RS384, g.rsa_priv, strlen(g.rsa_priv), "rsa1", claims("")),
                   "algorithm not allowed");
    env_free(e);
}

static void test_jwk_alg_rs384(void **state)
{
    (void)state;
    char path[128];
    path_in_dir(path, sizeof path, "jwks-rs384.json");
    char *jwk = jwk_of(g.rsa, "rsa384", ",\"alg\":\"RS384\"");
    struct buf b = {0};
    buf_printf(&b, "{\"keys\":[%s]}", jwk);
    write_file(path, buf_cstr(&b));
    buf_free(&b);
    free(jwk);
    struct env *e = env_new(NULL, path, NULL);
    assert_ok(e, sign_libjwt(JWT_ALG_RS384, g.rsa_priv, strlen(g.rsa_priv), "rsa384", claims("")));
    assert_refused(e, rs256("rsa384", claims("")), "algorithm not allowed");
    env_free(e);
}

static void test_unknown_kid(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, g.jwks_path, NULL);
    assert_refused(e, rs256("nope", claims("")), "unknown signing key (kid)");
    /* Signed by another key under a known kid. */
    assert_refused(e,
                   sign_libjwt(JWT_ALG_RS256, g.rsa2_priv, strlen(g.rsa2_priv), "rsa1", claims("")),
                   "signature verification failed");
    env_free(e);
}

static void test_bad_signature(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, g.jwks_path, NULL);
    char *tokens[] = {rs256("rsa1", claims("")), hs256(claims("")),
                      sign_libjwt(JWT_ALG_ES256, g.ec_priv, strlen(g.ec_priv), "ec1", claims(""))};
    for (size_t i = 0; i < 3; i++) {
        char *sig = strrchr(tokens[i], '.') + 1;
        char *c = sig + strlen(sig) / 2;
        *c = *c == 'A' ? 'B' : 'A';
        assert_refused(e, tokens[i], "signature verification failed");
    }
    /* The same signature bytes, encoded with non-zero unused bits in the
     * last character: one accepted encoding per signature. */
    char *noncanon = rs256("rsa1", claims(""));
    char *last_char = noncanon + strlen(noncanon) - 1;
    /* 256 bytes end in a character carrying 2 bits: A, Q, g or w. */
    assert_non_null(strchr("AQgw", *last_char));
    *last_char += 1;
    assert_refused(e, noncanon, "malformed token");
    /* A payload changed under a valid signature. */
    char *t = rs256("rsa1", claims(""));
    char *c2 = claims(",\"x\":1");
    struct buf b = {0};
    b64url_str(c2, &b);
    char *first = strchr(t, '.'), *last = strrchr(t, '.');
    struct buf forged = {0};
    buf_append(&forged, t, (size_t)(first - t) + 1);
    buf_puts(&forged, buf_cstr(&b));
    buf_puts(&forged, last);
    free(t);
    free(c2);
    buf_free(&b);
    assert_refused(e, forged.data, "signature verification failed");
    env_free(e);
}

/* --- refused algorithms ----------------------------------------------------------------- */

static void test_alg_none(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, g.jwks_path, NULL);
    char *c = claims("");
    const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"NONE\"}",
                             "{\"alg\":\"None\",\"kid\":\"rsa1\"}"};
    for (size_t i = 0; i < 3; i++)
        assert_refused(e, hand_token(headers[i], c, NULL, 0), "algorithm not allowed");
    /* With a signature attached too. */
    assert_refused(e, hand_token(headers[0], c, (const unsigned char *)"xyz", 3),
                   "algorithm not allowed");
    free(c);
    env_free(e);
}

/* HS256 signed with the RSA public key as the HMAC secret, JWKS only. */
static void test_hs256_with_rsa_public_key(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, g.jwks_path, NULL);
    assert_refused(e, sign_libjwt(JWT_ALG_HS256, g.rsa_pub, strlen(g.rsa_pub), "rsa1", claims("")),
                   "algorithm not allowed");
    assert_refused(e, sign_libjwt(JWT_ALG_HS256, g.rsa_pub, strlen(g.rsa_pub), NULL, claims("")),
                   "algorithm not allowed");
    env_free(e);
}

/* A secret and JWKS both configured; the header says RS256 but the signature is an HMAC. */
static void test_rs256_header_with_hmac_signature(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, g.jwks_path, NULL);
    char *c = claims("");
    const char *h = "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"rsa1\"}";
    assert_refused(e, hand_hs256(h, c, SECRET, strlen(SECRET)), "signature verification failed");
    assert_refused(e, hand_hs256(h, c, g.rsa_pub, strlen(g.rsa_pub)),
                   "signature verification failed");
    /* HS256 with the RSA public key as secret, while a real secret exists. */
    assert_refused(
        e, hand_hs256("{\"alg\":\"HS256\",\"kid\":\"rsa1\"}", c, g.rsa_pub, strlen(g.rsa_pub)),
        "signature verification failed");
    /* Both kinds still work. */
    assert_ok(e, hs256(claims("")));
    assert_ok(e, rs256("rsa1", claims("")));
    free(c);
    env_free(e);
}

static void test_rs256_without_jwks(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    assert_refused(e, rs256("rsa1", claims("")), "algorithm not allowed");
    assert_refused(e, hand_token("{\"alg\":\"PS256\"}", "{}", (const unsigned char *)"x", 1),
                   "algorithm not allowed");
    env_free(e);
}

/* --- times ---------------------------------------------------------------------------------- */

static char *claims_exp(int64_t exp, const char *extra)
{
    return claims_fmt("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"alice\",\"exp\":%lld%s}", ISSUER,
                      AUDIENCE, (long long)exp, extra);
}

static void test_expiry_and_leeway(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    assert_refused(e, hs256(claims_exp(g.now - 61, "")), "token expired");
    assert_ok(e, hs256(claims_exp(g.now - 30, "")));
    assert_ok(e, hs256(claims_exp(g.now - 60, "")));
    e->cfg.auth.leeway_s = 0;
    assert_refused(e, hs256(claims_exp(g.now - 1, "")), "token expired");
    assert_ok(e, hs256(claims_exp(g.now, "")));
    /* A fractional exp is a number too. */
    assert_ok(e, hand_hs256("{\"alg\":\"HS256\"}",
                            "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"a\","
                            "\"exp\":4102444800.5}",
                            SECRET, strlen(SECRET)));
    env_free(e);
}

static void test_nbf(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    char extra[64];
    snprintf(extra, sizeof extra, ",\"nbf\":%lld", (long long)g.now + 120);
    assert_refused(e, hs256(claims_exp(g.now + 600, extra)), "token not yet valid");
    snprintf(extra, sizeof extra, ",\"nbf\":%lld", (long long)g.now + 30);
    assert_ok(e, hs256(claims_exp(g.now + 600, extra)));
    assert_refused(e, hs256(claims_exp(g.now + 600, ",\"nbf\":\"soon\"")),
                   "claim 'nbf' must be a number");
    env_free(e);
}

static void test_missing_or_bad_exp(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    assert_refused(
        e, hs256(claims_fmt("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"a\"}", ISSUER, AUDIENCE)),
        "missing exp claim");
    assert_refused(e,
                   hs256(claims_fmt("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"a\","
                                    "\"exp\":\"%lld\"}",
                                    ISSUER, AUDIENCE, (long long)g.now + 300)),
                   "claim 'exp' must be a number");
    assert_refused(e,
                   hs256(claims_fmt("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"a\","
                                    "\"exp\":true}",
                                    ISSUER, AUDIENCE)),
                   "claim 'exp' must be a number");
    assert_refused(e,
                   hs256(claims_fmt("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"a\","
                                    "\"exp\":null}",
                                    ISSUER, AUDIENCE)),
                   "claim 'exp' must be a number");
    env_free(e);
}

/* --- issuer and audience -----------------------------------------------------------------------
 */

static void test_issuer(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    long long exp = (long long)g.now + 300;
    assert_refused(e,
                   hs256(claims_fmt("{\"iss\":\"https://evil.example\",\"aud\":\"%s\","
                                    "\"sub\":\"a\",\"exp\":%lld}",
                                    AUDIENCE, exp)),
                   "wrong issuer");
    assert_refused(e,
                   hs256(claims_fmt("{\"aud\":\"%s\",\"sub\":\"a\",\"exp\":%lld}", AUDIENCE, exp)),
                   "missing iss claim");
    assert_refused(e,
                   hs256(claims_fmt("{\"iss\":[\"%s\"],\"aud\":\"%s\",\"sub\":\"a\","
                                    "\"exp\":%lld}",
                                    ISSUER, AUDIENCE, exp)),
                   "wrong issuer");
    /* A prefix of the issuer is not the issuer. */
    assert_refused(e,
                   hs256(claims_fmt("{\"iss\":\"https://login.example.com\",\"aud\":\"%s\","
                                    "\"sub\":\"a\",\"exp\":%lld}",
                                    AUDIENCE, exp)),
                   "wrong issuer");
    env_free(e);
}

static void test_audience(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    long long exp = (long long)g.now + 300;
#define AUD_CLAIMS "{\"iss\":\"%s\",\"aud\":%s,\"sub\":\"a\",\"exp\":%lld}"
    assert_refused(e, hs256(claims_fmt(AUD_CLAIMS, ISSUER, "\"api://other\"", exp)),
                   "wrong audience");
    assert_ok(e, hs256(claims_fmt(AUD_CLAIMS, ISSUER, "[\"api://other\",\"" AUDIENCE "\"]", exp)));
    assert_refused(e, hs256(claims_fmt(AUD_CLAIMS, ISSUER, "[\"api://other\",\"api://x\"]", exp)),
                   "wrong audience");
    assert_refused(e, hs256(claims_fmt(AUD_CLAIMS, ISSUER, "[]", exp)), "wrong audience");
    assert_refused(e, hs256(claims_fmt(AUD_CLAIMS, ISSUER, "42", exp)),
                   "claim 'aud' must be a string or an array of strings");
    assert_refused(e, hs256(claims_fmt(AUD_CLAIMS, ISSUER, "[\"" AUDIENCE "\",7]", exp)),
                   "claim 'aud' must be a string or an array of strings");
    assert_refused(e, hs256(claims_fmt("{\"iss\":\"%s\",\"sub\":\"a\",\"exp\":%lld}", ISSUER, exp)),
                   "missing aud claim");
    env_free(e);
}
#undef AUD_CLAIMS

/* --- user and roles ----------------------------------------------------------------------------
 */

static void test_roles(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    long long exp = (long long)g.now + 300;
#define ROLES_CLAIMS "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"a\",\"exp\":%lld,\"roles\":%s}"
    assert_ok(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "\"AI.User\"")));
    assert_string_equal(e->caller.roles, "AI.User");
    assert_ok(e,
              hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "[\"AI.User\",\"AI.Admin\"]")));
    assert_string_equal(e->caller.roles, "AI.User,AI.Admin");
    assert_ok(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "[]")));
    assert_string_equal(e->caller.roles, "");
    assert_ok(e, hs256(claims_fmt("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"a\",\"exp\":%lld}",
                                  ISSUER, AUDIENCE, exp)));
    assert_string_equal(e->caller.roles, "");
    const char *msg = "claim 'roles' must be an array of strings";
    assert_refused(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "7")), msg);
    assert_refused(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "{\"a\":1}")), msg);
    assert_refused(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "[\"AI.User\",1]")),
                   msg);
    assert_refused(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "null")), msg);
    /* A comma would let one role pose as two. */
    assert_refused(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "[\"x,AI.Admin\"]")),
                   NULL);
    assert_refused(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, "[\"\"]")), NULL);
    /* More than fits in caller->roles. */
    struct buf many = {0};
    buf_putc(&many, '[');
    for (int i = 0; i < 60; i++)
        buf_printf(&many, "%s\"Role.Number.%03d\"", i ? "," : "", i);
    buf_putc(&many, ']');
    assert_refused(e, hs256(claims_fmt(ROLES_CLAIMS, ISSUER, AUDIENCE, exp, buf_cstr(&many))),
                   "claim 'roles' is too long");
    buf_free(&many);
    env_free(e);
}
#undef ROLES_CLAIMS

static void test_user_claim(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    e->cfg.auth.user_claim = "oid";
    long long exp = (long long)g.now + 300;
#define USER_CLAIMS "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"alice\",\"exp\":%lld%s}"
    assert_ok(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp,
                                  ",\"oid\":\"6f1c2f4e-1b3a-4c5d-9e8f-0a1b2c3d4e5f\"")));
    assert_string_equal(e->caller.user_id, "6f1c2f4e-1b3a-4c5d-9e8f-0a1b2c3d4e5f");
    assert_refused(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp, "")),
                   "missing 'oid' claim");
    assert_refused(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp, ",\"oid\":12")),
                   "claim 'oid' must be a string");
    assert_refused(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp, ",\"oid\":\"\"")), NULL);
    assert_refused(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp, ",\"oid\":\"a\\nb\"")),
                   NULL);
    assert_refused(
        e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp, ",\"oid\":\"a\\u0085b\"")), NULL);

    e->cfg.auth.user_claim = "preferred_username";
    char id[300];
    memset(id, 'u', 256);
    id[256] = '\0';
    char extra[400];
    snprintf(extra, sizeof extra, ",\"preferred_username\":\"%s\"", id);
    assert_ok(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp, extra)));
    assert_string_equal(e->caller.user_id, id);
    snprintf(extra, sizeof extra, ",\"preferred_username\":\"%su\"", id);
    assert_refused(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp, extra)), NULL);
    /* Non-ASCII is fine. */
    assert_ok(e, hs256(claims_fmt(USER_CLAIMS, ISSUER, AUDIENCE, exp,
                                  ",\"preferred_username\":\"j\\u00f6rg@example.com\"")));
    assert_string_equal(e->caller.user_id, "j\xc3\xb6rg@example.com");
    env_free(e);
}
#undef USER_CLAIMS

/* --- malformed tokens ----------------------------------------------------------------------------
 */

static void test_token_too_large(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    char *pad = malloc(20 * 1024);
    memset(pad, 'x', 20 * 1024 - 1);
    pad[20 * 1024 - 1] = '\0';
    char extra[20 * 1024 + 32];
    snprintf(extra, sizeof extra, ",\"pad\":\"%s\"", pad);
    free(pad);
    assert_refused(e, hs256(claims(extra)), "token too large");
    char *big = malloc(20 * 1024 + 1);
    memset(big, 'a', 20 * 1024);
    big[100] = big[200] = '.';
    big[20 * 1024] = '\0';
    assert_refused(e, big, "token too large");
    env_free(e);
}

static void test_garbage(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, g.jwks_path, NULL);
    const char *junk[] = {"",
                          ".",
                          "..",
                          "a.b",
                          "a.b.c.d",
                          "...",
                          "a..c",
                          "!!!.b.c",
                          "eyJhbGciOiJIUzI1NiJ9",
                          "eyJhbGciOiJIUzI1NiJ9.e30.a.b",
                          "Bearer abc",
                          "eyJhbGciOiJIUzI1NiJ9.e30.@@@",
                          "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",
                          "eyJ hbGc.e30.AAAA",
                          "\xff\xfe.\x01.\x02"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        assert_int_equal(verify(e, strdup(junk[i])), AIGW_ERR_INVALID_TOKEN);
    assert_int_equal(verify(e, NULL), AIGW_ERR_INVALID_TOKEN);

    char *c = claims("");
    /* Header or payload not a JSON object. */
    assert_refused(e, hand_hs256("[\"HS256\"]", c, SECRET, strlen(SECRET)), "malformed token");
    assert_refused(e, hand_hs256("\"HS256\"", c, SECRET, strlen(SECRET)), "malformed token");
    assert_refused(e, hand_hs256("{\"alg\":\"HS256\"", c, SECRET, strlen(SECRET)),
                   "malformed token");
    assert_refused(e, hand_hs256("{\"alg\":\"HS256\"}", "[1,2]", SECRET, strlen(SECRET)),
                   "malformed token");
    assert_refused(e, hand_hs256("{\"alg\":\"HS256\"}", "not json", SECRET, strlen(SECRET)),
                   "malformed token");
    assert_refused(e, hand_hs256("{\"alg\":7}", c, SECRET, strlen(SECRET)), NULL);
    assert_refused(e, hand_hs256("{\"typ\":\"JWT\"}", c, SECRET, strlen(SECRET)), NULL);
    assert_refused(e, hand_hs256("{\"alg\":\"HS256\",\"kid\":5}", c, SECRET, strlen(SECRET)), NULL);
    /* Duplicate claims: which "sub" is meant is not ours to guess. */
    char *dup = claims(",\"sub\":\"mallory\"");
    assert_refused(e, hand_hs256("{\"alg\":\"HS256\"}", dup, SECRET, strlen(SECRET)),
                   "malformed token");
    free(dup);
    assert_refused(e, hand_hs256("{\"alg\":\"HS256\",\"alg\":\"none\"}", c, SECRET, strlen(SECRET)),
                   "malformed token");
    /* NaN is not JSON. */
    assert_refused(e,
                   hand_hs256("{\"alg\":\"HS256\"}",
                              "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"a\","
                              "\"exp\":NaN}",
                              SECRET, strlen(SECRET)),
                   "malformed token");
    free(c);
    env_free(e);
}

static void test_header_typ_and_crit(void **state)
{
    (void)state;
    struct env *e = env_new("env:" SECRET_ENV, NULL, NULL);
    char *c = claims("");
    assert_ok(e, hand_hs256("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", c, SECRET, strlen(SECRET)));
    assert_ok(e, hand_hs256("{\"alg\":\"HS256\"}", c, SECRET, strlen(SECRET)));
    assert_refused(
        e, hand_hs256("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", c, SECRET, strlen(SECRET)), NULL);
    assert_refused(e, hand_hs256("{\"alg\":\"HS256\",\"typ\":1}", c, SECRET, strlen(SECRET)), NULL);
    assert_refused(
        e,
        hand_hs256("{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", c, SECRET, strlen(SECRET)),
        NULL);
    free(c);
    env_free(e);
}

/* --- configuration ---------------------------------------------------------------------------- */

static void test_not_configured(void **state)
{
    (void)state;
    struct env *e = env_new(NULL, NULL, NULL);
    assert_refused(e, hs256(claims("")), "JWT authentication is not configured");
    assert_refused(e, strdup(""), "JWT authentication is not configured");
    env_free(e);
    /* Empty strings count as not configured. */
    e = env_new("", "", "");
    assert_refused(e, hs256(claims("")), "JWT authentication is not configured");
    env_free(e);
}

/* jwks_new's error for the given sources, which must mention want. */
static void assert_jwks_new_fails(const char *secret_ref, const char *file, const char *want)
{
    struct cfg cfg = {0};
    struct worker w = {0};
    cfg.auth.jwt_hs256_secret_ref = (char *)secret_ref;
    cfg.auth.jwt_jwks_file = (char *)file;
    w.cfg = &cfg;
    struct buf err = {0};
    struct jwks *k = jwks_new(&w, &err);
    assert_null(k);
    assert_true(err.len > 0);
    if (!strstr(buf_cstr(&err), want))
        fail_msg("error \"%s\" does not mention \"%s\"", buf_cstr(&err), want);
    /* A secret's value never appears in the message. */
    assert_null(strstr(buf_cstr(&err), SECRET));
    buf_free(&err);
}

static void test_jwks_new_errors(void **state)
{
    (void)state;
    char path[128];
    path_in_dir(path, sizeof path, "does-not-exist.json");
    assert_jwks_new_fails(NULL, path, "does-not-exist.json");

    path_in_dir(path, sizeof path, "bad.json");
    write_file(path, "{\"keys\": [");
    assert_jwks_new_fails(NULL, path, "bad.json");

    path_in_dir(path, sizeof path, "nokeys.json");
    write_file(path, "{\"keys\": [{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
                     "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}");
    assert_jwks_new_fails(NULL, path, "no usable signing key");

    path_in_dir(path, sizeof path, "keys-not-array.json");
    write_file(path, "{\"keys\": {}}");
    assert_jwks_new_fails(NULL, path, "keys-not-array.json");

    path_in_dir(path, sizeof path, "array.json");
    write_file(path, "[]");
    assert_jwks_new_fails(NULL, path, "array.json");

    /* RSA shorter than 2048 bits, and an EC point not on the curve. */
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    char *jwk = jwk_of(small, "small", "");
    path_in_dir(path, sizeof path, "small.json");
    write_file(path, jwk);
    free(jwk);
    EVP_PKEY_free(small);
    assert_jwks_new_fails(NULL, path, "no usable signing key");

    char *ec = jwk_of(g.ec, "ec1", "");
    char *y = strstr(ec, "\"y\":\"") + 5;
    y[3] = y[3] == 'A' ? 'B' : 'A';
    path_in_dir(path, sizeof path, "offcurve.json");
    write_file(path, ec);
    free(ec);
    assert_jwks_new_fails(NULL, path, "no usable signing key");

    unsetenv("AIGW_TEST_JWT_UNSET");
    assert_jwks_new_fails("env:AIGW_TEST_JWT_UNSET", NULL, "AIGW_TEST_JWT_UNSET");
    path_in_dir(path, sizeof path, "no-secret-file");
    char ref[160];
    snprintf(ref, sizeof ref, "file:%s", path);
    assert_jwks_new_fails(ref, NULL, "no-secret-file");
}

static void test_secret_from_file(void **state)
{
    (void)state;
    char path[128], ref[160];
    path_in_dir(path, sizeof path, "secret");
    write_file(path, SECRET "\n");
    assert_int_equal(chmod(path, 0600), 0);
    snprintf(ref, sizeof ref, "file:%s", path);
    struct env *e = env_new(ref, NULL, NULL);
    assert_ok(e, hs256(claims("")));
    env_free(e);
}

static void test_jwk_with_unusable_neighbours(void **state)
{
    (void)state;
    char path[128];
    path_in_dir(path, sizeof path, "mixed.json");
    struct buf b = {0};
    buf_printf(&b,
               "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"},7,"
               "{\"kty\":\"EC\",\"crv\":\"secp256k1\",\"x\":\"AA\",\"y\":\"AA\"},%s]}",
               g.ec_jwk);
    write_file(path, buf_cstr(&b));
    buf_free(&b);
    struct env *e = env_new(NULL, path, NULL);
    assert_ok(e, sign_libjwt(JWT_ALG_ES256, g.ec_priv, strlen(g.ec_priv), "ec1", claims("")));
    assert_ok(e, sign_libjwt(JWT_ALG_ES256, g.ec_priv, strlen(g.ec_priv), NULL, claims("")));
    env_free(e);
}

/* --- OpenID discovery ------------------------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts python3 -m http.server on g.dir once; python3 is a test dependency
 * (tests/setup-debian.sh installs it), so without it the test fails. */
static void need_server(void)
{
    if (g.server > 0)
        return;
    if (access("/usr/bin/python3", X_OK) != 0 && system("command -v python3 >/dev/null") != 0)
        fail_msg("python3 is needed for the OpenID discovery tests (install python3)");
    g.port = free_port();
    assert_true(g.port > 0);
    char port[16];
    snprintf(port, sizeof port, "%d", g.port);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* no server outlives a crashed test */
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execlp("python3", "python3", "-m", "http.server", port, "--bind", "127.0.0.1",
               "--directory", g.dir, (char *)NULL);
        _exit(127);
    }
    g.server = pid;
    for (int i = 0; i < 200 && !port_open(g.port); i++)
        usleep(50 * 1000);
    if (!port_open(g.port))
        fail_msg("python3 http.server did not start on port %d", g.port);
}

static void write_oidc(const char *name, const char *jwks_body)
{
    char path[192], doc[256];
    snprintf(path, sizeof path, "%s/%s", g.dir, name);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/%s/openid-configuration", g.dir, name);
    snprintf(doc, sizeof doc,
             "{\"issuer\":\"" ISSUER "\",\"jwks_uri\":\"http://127.0.0.1:%d/%s/jwks.json\"}",
             g.port, name);
    write_file(path, doc);
    snprintf(path, sizeof path, "%s/%s/jwks.json", g.dir, name);
    write_file(path, jwks_body);
}

static void oidc_url(char *out, size_t n, const char *name)
{
    snprintf(out, n, "http://127.0.0.1:%d/%s/openid-configuration", g.port, name);
}

static char *rs2_token(int64_t exp)
{
    return sign_libjwt(JWT_ALG_RS256, g.rsa2_priv, strlen(g.rsa2_priv), "rsa2",
                       claims_exp(exp, ""));
}

static char *ec_token(int64_t exp)
{
    return sign_libjwt(JWT_ALG_ES256, g.ec_priv, strlen(g.ec_priv), "ec1", claims_exp(exp, ""));
}

static void test_openid_discovery_and_cache(void **state)
{
    (void)state;
    need_server();
    struct buf b = {0}, err = {0};
    buf_printf(&b, "{\"keys\":[%s]}", g.rsa_jwk);
    write_oidc("idp", buf_cstr(&b));
    char url[192], dbpath[128];
    oidc_url(url, sizeof url, "idp");
    path_in_dir(dbpath, sizeof dbpath, "aigw.db");
    /* The database every worker of the host shares, as a worker opens it. */
    struct cfg dbcfg = {0};
    dbcfg.database.path = dbpath;
    dbcfg.database.local_path = dbpath;
    dbcfg.database.synchronous = "normal";
    dbcfg.database.busy_timeout_ms = 5000;
    struct db *db = db_open(&dbcfg, 2, &err);
    if (!db)
        fail_msg("db_open: %s", buf_cstr(&err));
    struct store *st = db_reader(db);

    /* Worker A fetches on first use and fills the shared cache. */
    struct env *a = env_new(NULL, NULL, url);
    a->w.db = db;
    int64_t t0 = g.now;
    assert_int_equal(verify_at(a, rs256("rsa1", claims_exp(t0 + 100000, "")), t0), AIGW_OK);
    int64_t fetched = 0;
    assert_int_equal(store_jwks_get(st, url, &b, &fetched), 1);
    assert_true(fetched == t0 * 1000);
    assert_non_null(strstr(buf_cstr(&b), "\"rsa1\""));

    /* The provider rotates in rsa2. Within a minute of the last fetch an
     * unknown kid does not refetch; after it, it does. */
    buf_reset(&b);
    buf_printf(&b, "{\"keys\":[%s,%s]}", g.rsa_jwk, g.rsa2_jwk);
    write_oidc("idp", buf_cstr(&b));
    assert_int_equal(verify_at(a, rs2_token(t0 + 100000), t0 + 10), AIGW_ERR_INVALID_TOKEN);
    assert_string_equal(a->why, "unknown signing key (kid)");
    assert_int_equal(verify_at(a, rs2_token(t0 + 100000), t0 + 61), AIGW_OK);
    assert_int_equal(store_jwks_get(st, url, &b, &fetched), 1);
    assert_true(fetched == (t0 + 61) * 1000);

    /* Worker B reads the shared cache instead of fetching: the provider now
     * serves rsa2 alone, yet B knows rsa1 too, and the cache row is A's. */
    buf_reset(&b);
    buf_printf(&b, "{\"keys\":[%s]}", g.rsa2_jwk);
    write_oidc("idp", buf_cstr(&b));
    struct env *bw = env_new(NULL, NULL, url);
    bw->w.db = db;
    assert_int_equal(verify_at(bw, rs2_token(t0 + 100000), t0 + 62), AIGW_OK);
    assert_int_equal(verify_at(bw, rs256("rsa1", claims_exp(t0 + 100000, "")), t0 + 62), AIGW_OK);
    assert_int_equal(store_jwks_get(st, url, &b, &fetched), 1);
    assert_true(fetched == (t0 + 61) * 1000);

    /* The minute between fetches holds across workers: B has never fetched,
     * but A did 9 s ago, so B's unknown kid does not reach the provider
     * (which would have the key). */
    buf_reset(&b);
    buf_printf(&b, "{\"keys\":[%s,%s]}", g.rsa2_jwk, g.ec_jwk);
    write_oidc("idp", buf_cstr(&b));
    assert_int_equal(verify_at(bw, ec_token(t0 + 100000), t0 + 70), AIGW_ERR_INVALID_TOKEN);
    assert_string_equal(bw->why, "unknown signing key (kid)");

    /* Later A fetches ec1; the provider then serves nothing usable, and B
     * finds ec1 through the cache that A refreshed. */
    assert_int_equal(verify_at(a, ec_token(t0 + 100000), t0 + 200), AIGW_OK);
    assert_int_equal(store_jwks_get(st, url, &b, &fetched), 1);
    assert_true(fetched == (t0 + 200) * 1000);
    write_oidc("idp", "{\"keys\":[]}");
    assert_int_equal(verify_at(bw, ec_token(t0 + 100000), t0 + 201), AIGW_OK);

    /* An unknown kid in B: the refetch finds no usable key, B keeps its keys
     * and the cache keeps the last good document. */
    assert_int_equal(verify_at(bw, rs256("nope", claims_exp(t0 + 100000, "")), t0 + 300),
                     AIGW_ERR_INVALID_TOKEN);
    assert_string_equal(bw->why, "unknown signing key (kid)");
    assert_int_equal(verify_at(bw, rs2_token(t0 + 100000), t0 + 301), AIGW_OK);
    assert_int_equal(store_jwks_get(st, url, &b, &fetched), 1);
    assert_true(fetched == (t0 + 200) * 1000);

    /* A day later the cached document is stale: a new worker refetches. */
    buf_reset(&b);
    buf_printf(&b, "{\"keys\":[%s,%s]}", g.rsa2_jwk, g.ec_jwk);
    write_oidc("idp", buf_cstr(&b));
    struct env *c = env_new(NULL, NULL, url);
    c->w.db = db;
    int64_t later = t0 + 200 + 86400 + 1;
    assert_int_equal(verify_at(c, rs2_token(later + 100000), later), AIGW_OK);
    assert_int_equal(store_jwks_get(st, url, &b, &fetched), 1);
    assert_true(fetched == later * 1000);

    /* Another day on, the provider fails: a new worker uses the stale cache. */
    write_oidc("idp", "{\"keys\":[]}");
    struct env *d = env_new(NULL, NULL, url);
    d->w.db = db;
    int64_t later2 = later + 86400 + 1;
    assert_int_equal(verify_at(d, rs2_token(later2 + 1000), later2), AIGW_OK);
    assert_int_equal(store_jwks_get(st, url, &b, &fetched), 1);
    assert_true(fetched == later * 1000);
    env_free(d);

    env_free(a);
    env_free(bw);
    env_free(c);
    db_reader_done(db, st);
    db_close(db);
    buf_free(&b);
    buf_free(&err);
}

static void test_openid_unavailable(void **state)
{
    (void)state;
    int dead = free_port();
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/.well-known/openid-configuration", dead);
    struct env *e = env_new(NULL, NULL, url);
    assert_keys_unavailable(e, rs256("rsa1", claims("")));
    /* An HS256 token is still refused for the algorithm, not the fetch. */
    assert_refused(e, hs256(claims("")), "algorithm not allowed");
    env_free(e);

    /* A JWKS file keeps working beside an unreachable provider. */
    e = env_new(NULL, g.jwks_path, url);
    assert_ok(e, rs256("rsa1", claims("")));
    assert_refused(e, rs256("nope", claims("")), "unknown signing key (kid)");
    env_free(e);
}

static void test_openid_bad_responses(void **state)
{
    (void)state;
    need_server();
    char url[192];
    /* 404 */
    oidc_url(url, sizeof url, "missing");
    struct env *e = env_new(NULL, NULL, url);
    assert_keys_unavailable(e, rs256("rsa1", claims("")));
    env_free(e);

    /* A JWKS over 1 MiB. */
    struct buf b = {0};
    buf_printf(&b, "{\"keys\":[%s],\"pad\":\"", g.rsa_jwk);
    for (int i = 0; i < 1100 * 1024 / 64; i++)
        buf_puts(&b, "0123456789012345678901234567890123456789012345678901234567890123");
    buf_puts(&b, "\"}");
    write_oidc("big", buf_cstr(&b));
    buf_free(&b);
    oidc_url(url, sizeof url, "big");
    e = env_new(NULL, NULL, url);
    assert_keys_unavailable(e, rs256("rsa1", claims("")));
    env_free(e);

    /* A discovery document without jwks_uri. */
    char path[192];
    write_oidc("nouri", "{}");
    snprintf(path, sizeof path, "%s/nouri/openid-configuration", g.dir);
    write_file(path, "{\"issuer\":\"x\"}");
    oidc_url(url, sizeof url, "nouri");
    e = env_new(NULL, NULL, url);
    assert_keys_unavailable(e, rs256("rsa1", claims("")));
    env_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_valid),
        cmocka_unit_test(test_hs256_wrong_secret),
        cmocka_unit_test(test_hs384_refused),
        cmocka_unit_test(test_hs256_lowercase_alg_refused),
        cmocka_unit_test(test_rs256_jwks_file),
        cmocka_unit_test(test_rs256_no_kid_single_key),
        cmocka_unit_test(test_rs256_no_kid_two_keys_refused),
        cmocka_unit_test(test_single_jwk_file),
        cmocka_unit_test(test_es256_libjwt),
        cmocka_unit_test(test_es256_jws_raw_signature),
        cmocka_unit_test(test_es256_token_with_rsa_kid),
        cmocka_unit_test(test_jwk_alg_rs384),
        cmocka_unit_test(test_unknown_kid),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_hs256_with_rsa_public_key),
        cmocka_unit_test(test_rs256_header_with_hmac_signature),
        cmocka_unit_test(test_rs256_without_jwks),
        cmocka_unit_test(test_expiry_and_leeway),
        cmocka_unit_test(test_nbf),
        cmocka_unit_test(test_missing_or_bad_exp),
        cmocka_unit_test(test_issuer),
        cmocka_unit_test(test_audience),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_user_claim),
        cmocka_unit_test(test_token_too_large),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_header_typ_and_crit),
        cmocka_unit_test(test_not_configured),
        cmocka_unit_test(test_jwks_new_errors),
        cmocka_unit_test(test_secret_from_file),
        cmocka_unit_test(test_jwk_with_unusable_neighbours),
        cmocka_unit_test(test_openid_discovery_and_cache),
        cmocka_unit_test(test_openid_unavailable),
        cmocka_unit_test(test_openid_bad_responses),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
