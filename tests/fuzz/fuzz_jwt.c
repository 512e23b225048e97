/*
 * fuzz_jwt.c - libFuzzer target for app/jwt.c (jwt_verify).
 *
 * Bearer tokens are the most hostile input the gateway reads before knowing
 * who sent it. The worker here has the keys a deployment would: an HS256
 * secret (env:FUZZ_SECRET) and a JWKS file with one RSA key (kid "rsa1",
 * RS256), written to a temporary file at start; no database and no OpenID
 * provider, so nothing goes to the network.
 *
 * Random bytes never carry a valid signature, so a second mode builds the
 * token from fuzzed header and claims JSON and signs it correctly; then the
 * checks behind the signature (alg, typ, crit, exp, nbf, iss, aud, the user
 * and roles claims) are what the fuzzer explores.
 *
 * Whenever jwt_verify accepts, an independent oracle written here must agree:
 * the header names HS256 or RS256, the signature verifies with OpenSSL over
 * the exact bytes, and the claims read by json-c satisfy the configuration
 * and match what was put in struct caller. A refusal must give a reason that
 * never echoes the token.
 *
 * Input: 'H' or 'R', then header JSON, a newline, claims JSON: signed with
 * HS256 or RS256. Anything else: the token text itself.
 */
#include <json-c/json.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "jwt.h"
#include "request.h"
#include "worker.h"

#define SECRET   "fuzz-secret-0123456789abcdef0123456789abcdef"
#define ISSUER   "https://login.example.com/tenant/v2.0"
#define AUDIENCE "api://aigw"
#define NOW      1750000000LL /* a fixed clock, so that one input means one thing */
#define LEEWAY   60

static struct worker w;
static EVP_PKEY *rsa;

/* --- start ------------------------------------------------------------------ */

static void put_bn(const char *name, struct buf *out)
{
    BIGNUM *bn = NULL;
    FUZZ_CHECK(EVP_PKEY_get_bn_param(rsa, name, &bn) == 1, "RSA parameter %s", name);
    unsigned char bytes[512];
    int n = BN_bn2bin(bn, bytes);
    fuzz_b64url(bytes, (size_t)n, out);
    BN_free(bn);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    rsa = EVP_RSA_gen(2048);
    FUZZ_CHECK(rsa, "cannot generate an RSA key");

    const char *tmp = getenv("TMPDIR");
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "%s/aigw-fuzz-jwt-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    FUZZ_CHECK(mkdtemp(dir), "mkdtemp %s", dir);
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    struct buf jwks = {0};
    buf_puts(&jwks, "{\"keys\": [{\"kty\": \"RSA\", \"kid\": \"rsa1\", \"use\": \"sig\", \"alg\": "
                    "\"RS256\", \"n\": \"");
    put_bn(OSSL_PKEY_PARAM_RSA_N, &jwks);
    buf_puts(&jwks, "\", \"e\": \"");
    put_bn(OSSL_PKEY_PARAM_RSA_E, &jwks);
    buf_puts(&jwks, "\"}]}");
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f && fwrite(jwks.data, 1, jwks.len, f) == jwks.len && fclose(f) == 0, "write %s",
               path);
    buf_free(&jwks);

    setenv("FUZZ_SECRET", SECRET, 1);
    struct buf cfg_text = {0};
    buf_printf(&cfg_text,
               "{\"auth\": {\"jwt\": {\"issuer\": \"" ISSUER "\", \"audience\": \"" AUDIENCE "\", "
               "\"hs256_secret\": \"env:FUZZ_SECRET\", \"jwks_file\": \"%s\", \"leeway_s\": "
               "%d}}, " FUZZ_BACKENDS "}",
               path, LEEWAY);
    w.cfg = fuzz_cfg(buf_cstr(&cfg_text));
    buf_free(&cfg_text);
    struct buf err = {0};
    w.jwks = jwks_new(&w, &err);
    FUZZ_CHECK(w.jwks, "jwks_new: %s", buf_cstr(&err));
    buf_free(&err);
    /* The keys are read once: the file is not needed any more. */
    unlink(path);
    rmdir(dir);
    return 0;
}

/* --- building signed tokens ------------------------------------------------------ */

static void sign(char mode, const char *signing_input, size_t n, struct buf *out)
{
    unsigned char sig[512];
    size_t sig_len = sizeof sig;
    if (mode == 'H') {
        unsigned int len = 0;
        FUZZ_CHECK(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
                        (const unsigned char *)signing_input, n, sig, &len),
                   "HMAC");
        sig_len = len;
    } else {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        FUZZ_CHECK(md && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, rsa) == 1 &&
                       EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)signing_input, n) ==
                           1,
                   "RSA signing");
        EVP_MD_CTX_free(md);
    }
    fuzz_b64url(sig, sig_len, out);
}

/* header '\n' claims -> base64url(header).base64url(claims).signature */
static char *signed_token(char mode, const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hlen = nl ? (size_t)(nl - data) : size;
    const uint8_t *claims = nl ? nl + 1 : data + size;
    size_t clen = nl ? size - hlen - 1 : 0;
    struct buf t = {0};
    fuzz_b64url(data, hlen, &t);
    buf_putc(&t, '.');
    fuzz_b64url(claims, clen, &t);
    size_t signed_len = t.len;
    buf_putc(&t, '.');
    sign(mode, buf_cstr(&t), signed_len, &t);
    char *s = strdup(buf_cstr(&t));
    buf_free(&t);
    return s;
}

/* --- the oracle ------------------------------------------------------------------ */

/* Strict unpadded base64url (the one encoding RFC 7515 allows); -1 if not. */
static int b64url_decode(const char *s, size_t n, struct buf *out)
{
    unsigned acc = 0;
    int bits = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *p = s[i] ? strchr(tbl, s[i]) : NULL;
        if (!p)
            return -1;
        acc = acc << 6 | (unsigned)(p - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf_putc(out, (char)(acc >> bits & 0xff));
            acc &= (1u << bits) - 1;
        }
    }
    return acc == 0 ? 0 : -1;
}

static json_object *segment_json(const char *s, size_t n)
{
    struct buf raw = {0};
    json_object *o = NULL;
    if (b64url_decode(s, n, &raw) == 0)
        o = json_tokener_parse(buf_cstr(&raw));
    buf_free(&raw);
    return o;
}

static int str_is(json_object *o, const char *s)
{
    return json_object_is_type(o, json_type_string) && strcmp(json_object_get_string(o), s) == 0 &&
           (size_t)json_object_get_string_len(o) == strlen(s);
}

/* jwt_verify said yes: check everything it promised, independently. */
static void check_accepted(const char *token, const struct caller *c)
{
    const char *d1 = strchr(token, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    FUZZ_CHECK(d1 && d2 && !strchr(d2 + 1, '.'), "accepted a token without exactly three segments");
    json_object *header = segment_json(token, (size_t)(d1 - token));
    json_object *payload = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    FUZZ_CHECK(header && json_object_is_type(header, json_type_object),
               "accepted an unreadable header");
    FUZZ_CHECK(payload && json_object_is_type(payload, json_type_object),
               "accepted unreadable claims");

    /* The signature, by OpenSSL, over the exact signing input. */
    json_object *alg = NULL, *v;
    json_object_object_get_ex(header, "alg", &alg);
    struct buf sig = {0};
    FUZZ_CHECK(b64url_decode(d2 + 1, strlen(d2 + 1), &sig) == 0,
               "accepted a signature that is not canonical base64url");
    const unsigned char *input = (const unsigned char *)token;
    size_t input_len = (size_t)(d2 - token);
    if (str_is(alg, "HS256")) {
        unsigned char mac[32];
        unsigned int len = 0;
        HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), input, input_len, mac, &len);
        FUZZ_CHECK(sig.len == len && memcmp(sig.data, mac, len) == 0,
                   "accepted an HS256 token whose HMAC is wrong");
    } else if (str_is(alg, "RS256")) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        int ok =
            EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, rsa) == 1 &&
            EVP_DigestVerify(md, (const unsigned char *)sig.data, sig.len, input, input_len) == 1;
        EVP_MD_CTX_free(md);
        FUZZ_CHECK(ok, "accepted an RS256 token whose signature does not verify");
    } else {
        FUZZ_CHECK(0, "accepted alg %s, for which no key is configured",
                   alg ? json_object_to_json_string(alg) : "(none)");
    }
    buf_free(&sig);
    FUZZ_CHECK(!json_object_object_get_ex(header, "crit", NULL), "accepted a crit header");

    /* The claims. */
    FUZZ_CHECK(
        json_object_object_get_ex(payload, "exp", &v) &&
            (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) &&
            (double)NOW <= json_object_get_double(v) + LEEWAY,
        "accepted without a current exp");
    if (json_object_object_get_ex(payload, "nbf", &v))
        FUZZ_CHECK(
            (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) &&
                (double)NOW + LEEWAY >= json_object_get_double(v),
            "accepted before nbf");
    FUZZ_CHECK(json_object_object_get_ex(payload, "iss", &v) && str_is(v, ISSUER),
               "accepted a wrong iss");
    FUZZ_CHECK(json_object_object_get_ex(payload, "aud", &v), "accepted without aud");
    int aud_ok = str_is(v, AUDIENCE);
    for (size_t i = 0; json_object_is_type(v, json_type_array) && i < json_object_array_length(v);
         i++)
        aud_ok |= str_is(json_object_array_get_idx(v, i), AUDIENCE);
    FUZZ_CHECK(aud_ok, "accepted a wrong aud");
    FUZZ_CHECK(json_object_object_get_ex(payload, "sub", &v) && str_is(v, c->user_id) &&
                   c->user_id[0],
               "user_id %s is not the sub claim", c->user_id);
    FUZZ_CHECK(c->authenticated == 1 && c->via && strcmp(c->via, "jwt") == 0, "caller not marked");
    for (const unsigned char *p = (const unsigned char *)c->roles; *p; p++)
        FUZZ_CHECK(*p >= 0x20 && *p != 0x7f, "control character in roles");
    json_object_put(header);
    json_object_put(payload);
}

/* Does the header part of a signing-mode input name alg? */
static int header_alg_is(const uint8_t *data, size_t size, const char *alg)
{
    const uint8_t *nl = memchr(data, '\n', size);
    char *h = fuzz_strndup(data, nl ? (size_t)(nl - data) : size);
    json_object *o = json_tokener_parse(h), *v;
    int is = o && json_object_object_get_ex(o, "alg", &v) && str_is(v, alg);
    json_object_put(o);
    free(h);
    return is;
}

/* --- the target --------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *token;
    if (size > 0 && (data[0] == 'H' || data[0] == 'R'))
        token = signed_token((char)data[0], data + 1, size - 1);
    else
        token = fuzz_strndup(data, size);

    struct caller caller;
    memset(&caller, 0, sizeof caller);
    char why[160];
    memset(why, 'x', sizeof why);
    enum aigw_err r = jwt_verify(&w, token, NOW, &caller, why, sizeof why);
    FUZZ_CHECK(memchr(why, '\0', sizeof why), "why is not terminated");
    if (r == AIGW_OK) {
        FUZZ_CHECK(why[0] == '\0', "accepted with a reason: %s", why);
        check_accepted(token, &caller);
    } else {
        FUZZ_CHECK(r == AIGW_ERR_INVALID_TOKEN, "refused with %d", (int)r);
        FUZZ_CHECK(why[0] != '\0', "refused without a reason");
        FUZZ_CHECK(!caller.authenticated && caller.user_id[0] == '\0',
                   "a refused token filled caller");
        /* The reason goes to the client: it never carries the token. Reasons
         * are sentences, so a 16-byte run without a space is token text. */
        size_t n = strlen(token);
        for (size_t i = 0; i + 16 <= n; i += 8)
            FUZZ_CHECK(memchr(token + i, ' ', 16) || !memmem(why, strlen(why), token + i, 16),
                       "the reason echoes the token: %s", why);
        /* A token we signed correctly that libjwt still refuses: its parser
         * and ours disagree about the header or claims. Only a wrong reason
         * for a refusal, so it is noted, not fatal. */
        static int noted;
        if (!noted && size > 0 && (data[0] == 'H' || data[0] == 'R') &&
            strcmp(why, "signature verification failed") == 0 &&
            header_alg_is(data + 1, size - 1, data[0] == 'H' ? "HS256" : "RS256")) {
            noted = 1;
            fprintf(stderr,
                    "NOTE: libjwt refused a correctly signed token aigw's parser accepted: %s\n",
                    token);
        }
    }
    free(token);
    return 0;
}
