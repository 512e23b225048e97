/*
 * test_secrets.c - unit tests for app/secrets.c and app/keyvault.c.
 *
 * Reference parsing (${env} from the configuration or $AIGW_ENV, unknown
 * variables, literals kept as written), Key Vault URLs accepted and refused
 * (https only for VAULT.vault.azure.net, http only for loopback hosts, names,
 * versions), env: and file: resolution (a file others can read is refused),
 * token expiry arithmetic and token answers, the cache (TTL, forced refetch,
 * a stale value served while refreshing fails), secrets_check_all's report,
 * and the Key Vault client end to end against tests/mock_keyvault.py (IMDS,
 * App Service, client credentials; 401 with a new token, 403, 404, a vault
 * that is down). The mock tests are skipped without python3.
 *
 * Every error message is also checked for the values it must never contain.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "entra.h"
#include "keyvault.h"
#include "secrets.h"

#define KEY_ENV "AIGW_TEST_SECRETS_KEY"
#define VALUE1  "sk-value-one-1111"
#define VALUE2  "sk-value-two-2222"

static struct {
    char dir[64];
    pid_t mock;
    int port;
} g;

/* --- helpers ---------------------------------------------------------------- */

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

/* Loads a configuration whose only backend's key is key_ref, with the given
 * environment (NULL: none) and "secrets" object (NULL: none). */
static struct cfg *load_cfg(const char *environment, const char *key_ref, const char *secrets_json)
{
    struct buf t = {0}, problems = {0}, warnings = {0};
    buf_puts(&t, "{");
    if (environment)
        buf_printf(&t, "\"environment\": \"%s\", ", environment);
    if (secrets_json)
        buf_printf(&t, "\"secrets\": %s, ", secrets_json);
    buf_printf(&t,
               "\"backends\": [{\"name\": \"east\", \"url\": \"https://east.example.com\", "
               "\"api_key\": \"%s\", \"deployments\": {\"gpt-4o\": \"gpt4o-east\"}}]}",
               key_ref);
    struct cfg *c = cfg_load_string("test.json", buf_cstr(&t), &problems, &warnings);
    if (!c)
        fail_msg("config did not load: %s\n%s", buf_cstr(&problems), buf_cstr(&t));
    buf_free(&t);
    buf_free(&problems);
    buf_free(&warnings);
    return c;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(g.dir, sizeof g.dir, "/tmp/aigw-test-secrets-XXXXXX");
    return mkdtemp(g.dir) ? 0 : -1;
}

static int teardown_all(void **state)
{
    (void)state;
    if (g.mock > 0) {
        kill(g.mock, SIGTERM);
        waitpid(g.mock, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g.dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int clean_env(void **state)
{
    (void)state;
    unsetenv("AIGW_ENV");
    unsetenv(KEY_ENV);
    unsetenv("IDENTITY_ENDPOINT");
    unsetenv("IDENTITY_HEADER");
    return 0;
}

/* --- reference parsing ------------------------------------------------------- */

static void test_env_expansion_from_config(void **state)
{
    (void)state;
    struct secret_ref r;
    struct buf err = {0};
    assert_int_equal(
        secret_ref_parse("keyvault:https://myvault.vault.azure.net/secrets/openai-key-${env}",
                         "staging", &r, &err),
        0);
    assert_int_equal(r.kind, SECRET_KEYVAULT);
    assert_string_equal(buf_cstr(&r.text),
                        "keyvault:https://myvault.vault.azure.net/secrets/openai-key-staging");
    assert_string_equal(r.kv.vault, "https://myvault.vault.azure.net");
    assert_string_equal(r.kv.name, "openai-key-staging");
    assert_string_equal(r.kv.version, "");
    secret_ref_free(&r);

    assert_int_equal(secret_ref_parse("file:/run/secrets/${env}/key-${env}", "prod", &r, &err), 0);
    assert_int_equal(r.kind, SECRET_FILE);
    assert_string_equal(buf_cstr(&r.text) + r.target, "/run/secrets/prod/key-prod");
    secret_ref_free(&r);

    /* The configured environment wins over $AIGW_ENV. */
    setenv("AIGW_ENV", "dev", 1);
    assert_int_equal(secret_ref_parse("env:KEY_${env}", "prod", &r, &err), 0);
    assert_string_equal(buf_cstr(&r.text), "env:KEY_prod");
    secret_ref_free(&r);
    assert_int_equal(err.len, 0);
}

static void test_env_expansion_from_aigw_env(void **state)
{
    (void)state;
    struct secret_ref r;
    struct buf err = {0};
    setenv("AIGW_ENV", "qa", 1);
    assert_int_equal(secret_ref_parse("env:OPENAI_KEY_${env}", NULL, &r, &err), 0);
    assert_string_equal(buf_cstr(&r.text), "env:OPENAI_KEY_qa");
    secret_ref_free(&r);
    assert_int_equal(secret_ref_parse("env:OPENAI_KEY_${env}", "", &r, &err), 0);
    assert_string_equal(buf_cstr(&r.text), "env:OPENAI_KEY_qa");
    secret_ref_free(&r);

    unsetenv("AIGW_ENV");
    assert_int_equal(secret_ref_parse("env:OPENAI_KEY_${env}", NULL, &r, &err), -1);
    assert_true(contains(buf_cstr(&err), "env:OPENAI_KEY_${env}"));
    assert_true(contains(buf_cstr(&err), "no environment is set"));
    secret_ref_free(&r);
    buf_free(&err);

    /* Without ${env}, no environment is needed. */
    assert_int_equal(secret_ref_parse("env:OPENAI_KEY", NULL, &r, &err), 0);
    secret_ref_free(&r);
}

static void test_unknown_variable_refused(void **state)
{
    (void)state;
    struct secret_ref r;
    struct buf err = {0};
    assert_int_equal(secret_ref_parse("file:${HOME}/key", "prod", &r, &err), -1);
    assert_true(contains(buf_cstr(&err), "unknown variable ${HOME}"));
    assert_true(contains(buf_cstr(&err), "only ${env}"));
    secret_ref_free(&r);
    buf_free(&err);
    assert_int_equal(secret_ref_parse("env:KEY_${ENV}", "prod", &r, &err), -1);
    secret_ref_free(&r);
    buf_free(&err);
}

static void test_literal_kept_as_written(void **state)
{
    (void)state;
    struct secret_ref r;
    struct buf err = {0}, out = {0};
    assert_int_equal(secret_ref_parse("sk-${env}-literal", "prod", &r, &err), 0);
    assert_int_equal(r.kind, SECRET_LITERAL);
    assert_string_equal(buf_cstr(&r.text), "sk-${env}-literal");
    secret_ref_free(&r);
    assert_int_equal(secret_resolve("sk-${env}-literal", "prod", &out, &err), 0);
    assert_string_equal(buf_cstr(&out), "sk-${env}-literal");
    /* A prefix must be exact to make a reference. */
    assert_int_equal(secret_ref_parse("ENV:X", "prod", &r, &err), 0);
    assert_int_equal(r.kind, SECRET_LITERAL);
    secret_ref_free(&r);
    buf_free(&out);
}

static void test_env_and_file_names_checked(void **state)
{
    (void)state;
    struct secret_ref r;
    struct buf err = {0};
    assert_int_equal(secret_ref_parse("env:", "prod", &r, &err), -1);
    assert_true(contains(buf_cstr(&err), "needs a variable name"));
    secret_ref_free(&r);
    buf_free(&err);
    assert_int_equal(secret_ref_parse("env:1BAD", "prod", &r, &err), -1);
    secret_ref_free(&r);
    buf_free(&err);
    assert_int_equal(secret_ref_parse("env:HAS-DASH", "prod", &r, &err), -1);
    secret_ref_free(&r);
    buf_free(&err);
    assert_int_equal(secret_ref_parse("file:", "prod", &r, &err), -1);
    assert_true(contains(buf_cstr(&err), "needs a path"));
    secret_ref_free(&r);
    buf_free(&err);
}

/* --- Key Vault URLs ----------------------------------------------------------- */

static void test_keyvault_urls_accepted(void **state)
{
    (void)state;
    static const struct {
        const char *url, *vault, *name, *version;
    } ok[] = {
        {"https://myvault.vault.azure.net/secrets/openai-key", "https://myvault.vault.azure.net",
         "openai-key", ""},
        {"https://My-Vault-01.VAULT.azure.NET/secrets/Key1/0123456789abcdef0123456789abcdef",
         "https://My-Vault-01.VAULT.azure.NET", "Key1", "0123456789abcdef0123456789abcdef"},
        {"https://abc.vault.azure.net/secrets/a", "https://abc.vault.azure.net", "a", ""},
        {"http://127.0.0.1:8080/secrets/openai-key-test", "http://127.0.0.1:8080",
         "openai-key-test", ""},
        {"http://127.0.0.1/secrets/k/v1", "http://127.0.0.1", "k", "v1"},
        {"http://localhost:65535/secrets/k", "http://localhost:65535", "k", ""},
        {"http://[::1]:9/secrets/k", "http://[::1]:9", "k", ""},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct keyvault_ref r;
        struct buf err = {0};
        if (keyvault_ref_parse(ok[i].url, &r, &err) != 0)
            fail_msg("%s refused: %s", ok[i].url, buf_cstr(&err));
        assert_string_equal(r.vault, ok[i].vault);
        assert_string_equal(r.name, ok[i].name);
        assert_string_equal(r.version, ok[i].version);
    }
    /* The longest name Azure allows. */
    char url[256], name[KEYVAULT_NAME_MAX + 2];
    memset(name, 'n', KEYVAULT_NAME_MAX);
    name[KEYVAULT_NAME_MAX] = '\0';
    snprintf(url, sizeof url, "https://v12.vault.azure.net/secrets/%s", name);
    struct keyvault_ref r;
    struct buf err = {0};
    assert_int_equal(keyvault_ref_parse(url, &r, &err), 0);
    assert_string_equal(r.name, name);
    strcat(name, "n");
    snprintf(url, sizeof url, "https://v12.vault.azure.net/secrets/%s", name);
    assert_int_equal(keyvault_ref_parse(url, &r, &err), -1);
    buf_free(&err);
}

static void test_keyvault_urls_refused(void **state)
{
    (void)state;
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"ftp://myvault.vault.azure.net/secrets/k", "must be keyvault:https://"},
        {"myvault.vault.azure.net/secrets/k", "must be keyvault:https://"},
        {"http://myvault.vault.azure.net/secrets/k", "only for a loopback host"},
        {"http://10.0.0.5:8080/secrets/k", "only for a loopback host"},
        {"http://127.0.0.1.evil.example/secrets/k", "only for a loopback host"},
        {"http://127.0.0.1:0/secrets/k", "not a port number"},
        {"http://127.0.0.1:99999/secrets/k", "not a port number"},
        {"http://127.0.0.1:/secrets/k", "port is missing"},
        {"http://127.0.0.1:80x/secrets/k", "not a port number"},
        {"http://127.0.0.1:123456/secrets/k", "not a port number"},
        {"http://[::1]x/secrets/k", "malformed"},
        {"http://[::1/secrets/k", "only for a loopback host"},
        {"https://myvault.example.com/secrets/k", "is not a Key Vault"},
        {"https://myvault.vault.azure.net.evil.example/secrets/k", "is not a Key Vault"},
        {"https://evil.example/x.vault.azure.net/secrets/k", "is not a Key Vault"},
        {"https://vault.azure.net/secrets/k", "is not a Key Vault"},
        {"https://ab.vault.azure.net/secrets/k", "vault name"},
        {"https://1vault.vault.azure.net/secrets/k", "vault name"},
        {"https://my_vault.vault.azure.net/secrets/k", "vault name"},
        {"https://myvault.vault.azure.net:443/secrets/k", "no port"},
        {"https://user@myvault.vault.azure.net/secrets/k", "no user information"},
        {"https:///secrets/k", "no host"},
        {"https://myvault.vault.azure.net", "/secrets/NAME"},
        {"https://myvault.vault.azure.net/", "/secrets/NAME"},
        {"https://myvault.vault.azure.net/keys/k", "/secrets/NAME"},
        {"https://myvault.vault.azure.net/secrets/", "secret name"},
        {"https://myvault.vault.azure.net/secrets/openai_key", "secret name"},
        {"https://myvault.vault.azure.net/secrets/openai.key", "secret name"},
        {"https://myvault.vault.azure.net/secrets/k?api-version=7.4", "secret name"},
        {"https://myvault.vault.azure.net/secrets/k#x", "secret name"},
        {"https://myvault.vault.azure.net/secrets/k/", "secret version"},
        {"https://myvault.vault.azure.net/secrets/k/v-1", "secret version"},
        {"https://myvault.vault.azure.net/secrets/k/v1/extra", "secret version"},
        {"https://myvault.vault.azure.net/secrets/../k", "secret name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct keyvault_ref r;
        struct buf err = {0};
        if (keyvault_ref_parse(bad[i].url, &r, &err) == 0)
            fail_msg("%s accepted", bad[i].url);
        if (!contains(buf_cstr(&err), bad[i].why))
            fail_msg("%s: wanted '%s' in '%s'", bad[i].url, bad[i].why, buf_cstr(&err));
        buf_free(&err);
    }
    /* Through secret_ref_parse the message names the reference, ${env} expanded. */
    struct secret_ref r;
    struct buf err = {0};
    assert_int_equal(
        secret_ref_parse("keyvault:http://example.com/secrets/k-${env}", "prod", &r, &err), -1);
    assert_true(
        contains(buf_cstr(&err), "secret reference keyvault:http://example.com/secrets/k-prod: "));
    secret_ref_free(&r);
    buf_free(&err);
}

/* --- env: and file: ------------------------------------------------------------- */

static void test_env_reference(void **state)
{
    (void)state;
    struct buf out = {0}, err = {0};
    assert_int_equal(secret_resolve("env:" KEY_ENV, "prod", &out, &err), -1);
    assert_true(contains(buf_cstr(&err), "environment variable " KEY_ENV));
    assert_true(contains(buf_cstr(&err), "is not set"));
    buf_free(&err);
    setenv(KEY_ENV, "", 1);
    assert_int_equal(secret_resolve("env:" KEY_ENV, "prod", &out, &err), -1);
    buf_free(&err);
    setenv(KEY_ENV, VALUE1, 1);
    assert_int_equal(secret_resolve("env:" KEY_ENV, "prod", &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE1);
    buf_free(&out);
}

static void test_file_reference_and_mode_refusal(void **state)
{
    (void)state;
    char path[128], ref[160];
    struct buf out = {0}, err = {0};
    snprintf(path, sizeof path, "%s/key", g.dir);
    snprintf(ref, sizeof ref, "file:%s", path);

    write_file(path, VALUE1 "\n", 0600);
    assert_int_equal(secret_resolve(ref, "prod", &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE1); /* the trailing newline is trimmed */

    write_file(path, VALUE1 "\r\n", 0400);
    assert_int_equal(secret_resolve(ref, "prod", &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE1);

    static const mode_t refused[] = {0644, 0640, 0604, 0660, 0606, 0610};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        write_file(path, VALUE1 "\n", refused[i]);
        buf_reset(&err);
        assert_int_equal(secret_resolve(ref, "prod", &out, &err), -1);
        assert_true(contains(buf_cstr(&err), "is readable by others"));
        assert_true(contains(buf_cstr(&err), "chmod 600"));
        assert_true(contains(buf_cstr(&err), path));
        assert_false(contains(buf_cstr(&err), VALUE1));
    }

    write_file(path, "\n", 0600);
    buf_reset(&err);
    assert_int_equal(secret_resolve(ref, "prod", &out, &err), -1);
    assert_true(contains(buf_cstr(&err), "is empty"));

    buf_reset(&err);
    assert_int_equal(secret_resolve("file:/nonexistent/aigw/key", "prod", &out, &err), -1);
    assert_true(contains(buf_cstr(&err), "cannot open secret file /nonexistent/aigw/key"));

    buf_reset(&err);
    assert_int_equal(secret_resolve("file:/tmp", "prod", &out, &err), -1);
    assert_true(contains(buf_cstr(&err), "not a regular file"));

    /* ${env} in a path. */
    snprintf(path, sizeof path, "%s/key-staging", g.dir);
    write_file(path, VALUE2, 0600);
    snprintf(ref, sizeof ref, "file:%s/key-${env}", g.dir);
    assert_int_equal(secret_resolve(ref, "staging", &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE2);
    buf_free(&out);
    buf_free(&err);
}

static void test_secret_resolve_leaves_keyvault_to_the_cache(void **state)
{
    (void)state;
    struct buf out = {0}, err = {0};
    assert_int_equal(
        secret_resolve("keyvault:https://myvault.vault.azure.net/secrets/k", "prod", &out, &err),
        -1);
    assert_true(contains(buf_cstr(&err), "not resolved here"));
    buf_free(&err);
}

/* --- tokens ----------------------------------------------------------------------- */

static void test_token_refresh_arithmetic(void **state)
{
    (void)state;
    const int64_t now = 1700000000;
    /* An hour's token (managed identity, Entra ID): replaced 5 minutes early. */
    assert_int_equal(entra_token_refresh_at(now, now + 3600), now + 3600 - 300);
    /* 24 hours (IMDS tokens can live that long). */
    assert_int_equal(entra_token_refresh_at(now, now + 86400), now + 86400 - 300);
    /* Exactly where the two rules meet. */
    assert_int_equal(entra_token_refresh_at(now, now + 600), now + 300);
    /* Shorter than 10 minutes: half way through its life. */
    assert_int_equal(entra_token_refresh_at(now, now + 400), now + 200);
    assert_int_equal(entra_token_refresh_at(now, now + 4), now + 2);
    assert_int_equal(entra_token_refresh_at(now, now + 1), now + 1);
    /* Already expired (or a clock behind the issuer's): used once, not kept. */
    assert_int_equal(entra_token_refresh_at(now, now), now);
    assert_int_equal(entra_token_refresh_at(now, now - 100), now);
}

static void test_token_answers(void **state)
{
    (void)state;
    const int64_t now = 1700000000;
    struct buf tok = {0}, err = {0};
    int64_t exp = 0;
    static const char imds[] = "{\"access_token\":\"eyJ0.abc-_~+/=\",\"expires_on\":\"1700003600\","
                               "\"expires_in\":\"3599\",\"resource\":\"https://vault.azure.net\","
                               "\"token_type\":\"Bearer\"}";
    assert_int_equal(entra_parse_token(imds, strlen(imds), now, &tok, &exp, &err), 0);
    assert_string_equal(buf_cstr(&tok), "eyJ0.abc-_~+/=");
    assert_int_equal(exp, 1700003600); /* expires_on wins over expires_in */

    static const char number[] = "{\"access_token\":\"t2\",\"expires_on\":1700000900}";
    assert_int_equal(entra_parse_token(number, strlen(number), now, &tok, &exp, &err), 0);
    assert_string_equal(buf_cstr(&tok), "t2");
    assert_int_equal(exp, 1700000900);

    static const char entra[] =
        "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,"
        "\"access_token\":\"t3\"}";
    assert_int_equal(entra_parse_token(entra, strlen(entra), now, &tok, &exp, &err), 0);
    assert_int_equal(exp, now + 3599);

    static const char in_string[] = "{\"access_token\":\"t4\",\"expires_in\":\"60\"}";
    assert_int_equal(entra_parse_token(in_string, strlen(in_string), now, &tok, &exp, &err), 0);
    assert_int_equal(exp, now + 60);

    /* An unreadable expires_on (an old App Service date) falls back to expires_in. */
    static const char date[] =
        "{\"access_token\":\"t5\",\"expires_on\":\"09/14/2017 00:00:00 PM +00:00\","
        "\"expires_in\":120}";
    assert_int_equal(entra_parse_token(date, strlen(date), now, &tok, &exp, &err), 0);
    assert_int_equal(exp, now + 120);

    static const struct {
        const char *body, *why;
    } bad[] = {
        {"{\"expires_in\":3600}", "no access_token"},
        {"{\"access_token\":\"\",\"expires_in\":3600}", "no access_token"},
        {"{\"access_token\":42,\"expires_in\":3600}", "no access_token"},
        {"{\"access_token\":\"SECRET-TOKEN\"}", "neither expires_on nor expires_in"},
        {"{\"access_token\":\"SECRET-TOKEN\",\"expires_in\":\"soon\"}", "neither expires_on"},
        {"{\"access_token\":\"SECRET-TOKEN\",\"expires_in\":-5}", "neither expires_on"},
        {"{\"access_token\":\"SECRET TOKEN\",\"expires_in\":60}", "characters a bearer token"},
        {"{\"access_token\":\"SECRET-TOKEN\\r\\nX-Evil: 1\",\"expires_in\":60}",
         "characters a bearer token"},
        {"[\"SECRET-TOKEN\"]", "not a JSON object"},
        {"<html>SECRET-TOKEN</html>", "not a JSON object"},
        {"", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_reset(&err);
        if (entra_parse_token(bad[i].body, strlen(bad[i].body), now, &tok, &exp, &err) == 0)
            fail_msg("accepted %s", bad[i].body);
        if (!contains(buf_cstr(&err), bad[i].why))
            fail_msg("%s: wanted '%s' in '%s'", bad[i].body, bad[i].why, buf_cstr(&err));
        assert_false(contains(buf_cstr(&err), "SECRET"));
    }
    buf_free(&tok);
    buf_free(&err);
}

/* --- the cache --------------------------------------------------------------------- */

static void test_cache_ttl_and_force(void **state)
{
    (void)state;
    struct cfg *c = load_cfg("prod", "env:" KEY_ENV, "{\"cache_ttl_s\": 600}");
    struct secrets *s = secrets_new(c);
    struct buf out = {0}, err = {0};
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), -1); /* nothing to serve yet */
    assert_true(contains(buf_cstr(&err), KEY_ENV));
    buf_reset(&err);
    setenv(KEY_ENV, VALUE1, 1);
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE1);
    setenv(KEY_ENV, VALUE2, 1);
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE1); /* still cached */
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 1, &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE2); /* a backend said 401: fetched again */
    /* A forced fetch that fails is an error, and leaves the cached value. */
    unsetenv(KEY_ENV);
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 1, &out, &err), -1);
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE2);
    assert_int_equal(secrets_token_requests(s), 0);
    secrets_free(s);
    cfg_free(c);
    buf_free(&out);
    buf_free(&err);
}

static void test_stale_value_served_while_refresh_fails(void **state)
{
    (void)state;
    /* TTL 0: every get is due for a refresh. */
    struct cfg *c = load_cfg("prod", "env:" KEY_ENV, "{\"cache_ttl_s\": 0}");
    struct secrets *s = secrets_new(c);
    struct buf out = {0}, err = {0};
    setenv(KEY_ENV, VALUE1, 1);
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), 0);
    setenv(KEY_ENV, VALUE2, 1);
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE2); /* TTL 0 refetches */
    unsetenv(KEY_ENV);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), 0);
        assert_string_equal(buf_cstr(&out), VALUE2); /* the source is gone: the old value */
    }
    assert_int_equal(err.len, 0);
    /* The source is back, but the next try waits a little... */
    setenv(KEY_ENV, VALUE1, 1);
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 0, &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE2);
    /* ...unless a backend refused the key. */
    assert_int_equal(secrets_get(s, "env:" KEY_ENV, 1, &out, &err), 0);
    assert_string_equal(buf_cstr(&out), VALUE1);
    secrets_free(s);
    cfg_free(c);
    buf_free(&out);
    buf_free(&err);
}

static void test_check_all_reports_without_values(void **state)
{
    (void)state;
    char path[128], text[1024];
    memset(text, 0, sizeof text);
    snprintf(path, sizeof path, "%s/world-readable", g.dir);
    write_file(path, VALUE2, 0644);
    setenv(KEY_ENV "_prod", VALUE1, 1);
    struct buf t = {0}, problems = {0}, warnings = {0};
    buf_printf(
        &t,
        "{\"environment\": \"prod\", \"auth\": {\"jwt\": {\"issuer\": \"i\", \"audience\": \"a\","
        " \"hs256_secret\": \"literal-hs256-value-xyz\"}},"
        " \"secrets\": {\"keyvault\": {\"auth\": \"client_credentials\", \"tenant_id\": \"t\","
        " \"client_id\": \"c\", \"client_secret\": \"file:%s\"}},"
        " \"backends\": ["
        "{\"name\": \"a\", \"url\": \"https://a.example.com\", \"api_key\": \"env:" KEY_ENV
        "_${env}\","
        " \"deployments\": {\"gpt-4o\": \"d\"}},"
        "{\"name\": \"b\", \"url\": \"https://b.example.com\", \"api_key\": "
        "\"env:AIGW_TEST_MISSING_${env}\","
        " \"deployments\": {\"gpt-4o\": \"d\"}},"
        "{\"name\": \"c\", \"url\": \"https://c.example.com\","
        " \"deployments\": {\"gpt-4o\": \"d\"}}]}",
        path);
    struct cfg *c = cfg_load_string("test.json", buf_cstr(&t), &problems, &warnings);
    if (!c)
        fail_msg("%s", buf_cstr(&problems));
    FILE *f = fmemopen(text, sizeof text, "w");
    assert_non_null(f);
    int failures = secrets_check_all(c, f);
    fclose(f);
    if (failures != 2)
        fail_msg("%d failures:\n%s", failures, text);
    assert_true(contains(text, "backends[0].api_key\tenv:" KEY_ENV "_prod\tok\n"));
    assert_true(contains(text, "backends[1].api_key\tenv:AIGW_TEST_MISSING_prod\t"));
    assert_true(contains(text, "AIGW_TEST_MISSING_prod (from secret reference"));
    assert_false(contains(text, "backends[2]"));
    assert_true(contains(text, "auth.jwt.hs256_secret\t(literal)\tok"));
    assert_true(contains(text, "secrets.keyvault.client_secret\tfile:"));
    assert_true(contains(text, "readable by others"));
    assert_false(contains(text, VALUE1));
    assert_false(contains(text, VALUE2));
    assert_false(contains(text, "literal-hs256-value-xyz"));
    unsetenv(KEY_ENV "_prod");
    cfg_free(c);
    buf_free(&t);
    buf_free(&problems);
    buf_free(&warnings);
}

/* --- the Key Vault client against tests/mock_keyvault.py ------------------------------ */

static const char *mock_path(void)
{
    static char path[512];
    const char *src = getenv("AIGW_SRCDIR");
    if (src) {
        snprintf(path, sizeof path, "%s/tests/mock_keyvault.py", src);
    } else {
        char here[256];
        snprintf(here, sizeof here, "%s", __FILE__);
        snprintf(path, sizeof path, "%s/../mock_keyvault.py", dirname(here));
    }
    return path;
}

/* Starts the mock once (its stdout says READY PORT); fails without python3,
 * which tests/setup-debian.sh installs. */
static void need_mock(void)
{
    if (g.mock > 0)
        return;
    if (system("command -v python3 >/dev/null 2>&1") != 0 || access(mock_path(), R_OK) != 0)
        fail_msg("python3 and tests/mock_keyvault.py are needed for the Key Vault client tests");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* no mock outlives a crashed test */
        dup2(fds[1], 1);
        close(fds[0]);
        execlp("python3", "python3", mock_path(), "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    g.mock = pid;
    char line[64] = "";
    FILE *f = fdopen(fds[0], "r");
    if (!f || !fgets(line, sizeof line, f) || sscanf(line, "READY %d", &g.port) != 1)
        fail_msg("mock_keyvault.py did not start: '%s'", line);
    fclose(f);
}

static size_t sink(char *data, size_t size, size_t nmemb, void *arg)
{
    buf_append(arg, data, size * nmemb);
    return size * nmemb;
}

/* POSTs json to a control route (GET when json is NULL); returns the answer. */
static char *mock_control(const char *route, const char *json)
{
    char url[256];
    struct buf out = {0};
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_mock/%s", g.port, route);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    if (json)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (status != 200)
        fail_msg("mock %s: HTTP %ld %s", route, status, buf_cstr(&out));
    buf_puts(&out, "");
    return out.data;
}

static void mock_post(const char *route, const char *json)
{
    free(mock_control(route, json));
}

/* The "N" after "\"key\":" in the mock's stats. */
static long mock_stat(const char *key)
{
    char *s = mock_control("stats", NULL), pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(s, pat);
    long n = p ? strtol(p + strlen(pat), NULL, 10) : -1;
    free(s);
    return n;
}

/* A configuration whose Key Vault settings point at the mock. */
static struct cfg *mock_cfg(const char *auth_json)
{
    char secrets[1024], ref[256];
    snprintf(secrets, sizeof secrets,
             "{\"cache_ttl_s\": 0, \"keyvault\": {%s, \"imds_endpoint\": "
             "\"http://127.0.0.1:%d/metadata/identity/oauth2/token\", \"authority_host\": "
             "\"http://127.0.0.1:%d/\", \"timeout_s\": 2}}",
             auth_json, g.port, g.port);
    snprintf(ref, sizeof ref, "keyvault:http://127.0.0.1:%d/secrets/openai-key-${env}", g.port);
    return load_cfg("staging", ref, secrets);
}

static void resolve_kv(struct secrets *s, const struct cfg *c, int expect_rc, const char *want,
                       struct buf *err)
{
    struct buf out = {0};
    buf_reset(err);
    int rc = secrets_get(s, c->backends[0].api_key_ref, 1, &out, err);
    if (rc != expect_rc)
        fail_msg("secrets_get gave %d, wanted %d: %s", rc, expect_rc, buf_cstr(err));
    if (want)
        assert_string_equal(buf_cstr(&out), want);
    assert_false(contains(buf_cstr(err), VALUE1));
    assert_false(contains(buf_cstr(err), VALUE2));
    assert_false(contains(buf_cstr(err), "mock-token-"));
    buf_free(&out);
}

static void test_keyvault_managed_identity_imds(void **state)
{
    (void)state;
    need_mock();
    mock_post("reset", "{}");
    mock_post("secret", "{\"name\": \"openai-key-staging\", \"value\": \"" VALUE1 "\\n\"}");
    mock_post("secret", "{\"name\": \"openai-key-production\", \"value\": \"" VALUE2 "\"}");
    struct cfg *c = mock_cfg("\"auth\": \"managed_identity\"");
    struct secrets *s = secrets_new(c);
    struct buf err = {0};
    for (int i = 0; i < 5; i++)
        resolve_kv(s, c, 0, VALUE1, &err);          /* ${env} = staging; trailing newline trimmed */
    assert_int_equal(secrets_token_requests(s), 1); /* one token for every fetch */
    assert_int_equal(mock_stat("imds"), 1);
    assert_int_equal(mock_stat("vault_requests"), 5);
    assert_int_equal(mock_stat("rejected_tokens"), 0);

    /* A revoked token: the vault says 401, a new token is fetched, the read retried. */
    mock_post("revoke", "{}");
    resolve_kv(s, c, 0, VALUE1, &err);
    assert_int_equal(secrets_token_requests(s), 2);

    /* A new version becomes the current one. */
    mock_post("secret", "{\"name\": \"openai-key-staging\", \"value\": \"" VALUE2 "\"}");
    resolve_kv(s, c, 0, VALUE2, &err);

    /* The vault's errors, named, never with a value or token. */
    mock_post("config", "{\"vault_mode\": \"403\"}");
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "secret reference keyvault:http://127.0.0.1:"));
    assert_true(contains(buf_cstr(&err),
                         "/secrets/openai-key-staging: access to secret openai-key-staging"));
    assert_true(contains(buf_cstr(&err), "HTTP 403 (Forbidden)"));
    mock_post("config", "{\"vault_mode\": \"401\"}");
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "refused the access token (HTTP 401"));
    mock_post("config", "{\"vault_mode\": \"503\"}");
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "answered HTTP 503"));
    mock_post("config", "{\"vault_mode\": \"down\"}");
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "cannot reach Key Vault http://127.0.0.1:"));
    mock_post("config", "{\"vault_mode\": \"ok\"}");
    mock_post("delete", "{\"name\": \"openai-key-staging\"}");
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "secret openai-key-staging in http://127.0.0.1:"));
    assert_true(contains(buf_cstr(&err), "not found (HTTP 404 (SecretNotFound))"));

    /* A token endpoint that is down, with no token at hand. */
    secrets_free(s);
    s = secrets_new(c);
    mock_post("config", "{\"token_mode\": \"down\"}");
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "cannot get a Key Vault access token from the instance "
                                         "metadata service (IMDS) at http://127.0.0.1:"));
    mock_post("config", "{\"token_mode\": \"ok\", \"imds_client_id\": \"user-assigned-1\"}");
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(
        contains(buf_cstr(&err), "refused a Key Vault access token: HTTP 400 (invalid_request)"));
    secrets_free(s);
    cfg_free(c);

    /* A user-assigned identity names itself with client_id. */
    c = mock_cfg("\"auth\": \"managed_identity\", \"client_id\": \"user-assigned-1\"");
    s = secrets_new(c);
    mock_post("secret", "{\"name\": \"openai-key-staging\", \"value\": \"" VALUE1 "\"}");
    resolve_kv(s, c, 0, VALUE1, &err);
    secrets_free(s);
    cfg_free(c);
    buf_free(&err);
}

static void test_keyvault_app_service_identity(void **state)
{
    (void)state;
    need_mock();
    mock_post("reset", "{}");
    mock_post("secret", "{\"name\": \"openai-key-staging\", \"value\": \"" VALUE1 "\"}");
    char ep[128];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d/msi/token", g.port);
    setenv("IDENTITY_ENDPOINT", ep, 1);
    struct cfg *c = mock_cfg("\"auth\": \"managed_identity\"");
    struct secrets *s = secrets_new(c);
    struct buf err = {0};
    /* App Service sets both variables; without the header there is no asking. */
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "needs $IDENTITY_HEADER"));
    setenv("IDENTITY_HEADER", "wrong-header", 1);
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "App Service identity endpoint at http://127.0.0.1:"));
    assert_true(contains(buf_cstr(&err), "HTTP 401 (unauthorized)"));
    assert_false(contains(buf_cstr(&err), "wrong-header"));
    setenv("IDENTITY_HEADER", "mock-identity-header", 1);
    resolve_kv(s, c, 0, VALUE1, &err);
    resolve_kv(s, c, 0, VALUE1, &err);
    /* The refused request and one token for both reads. */
    assert_int_equal(mock_stat("app_service"), 2);
    assert_int_equal(mock_stat("imds"), 0); /* IDENTITY_ENDPOINT takes precedence */
    secrets_free(s);
    cfg_free(c);
    buf_free(&err);
}

static void test_keyvault_client_credentials(void **state)
{
    (void)state;
    need_mock();
    mock_post("reset", "{}");
    mock_post("secret", "{\"name\": \"openai-key-staging\", \"value\": \"" VALUE1 "\"}");
    char path[128], auth[512];
    snprintf(path, sizeof path, "%s/client-secret", g.dir);
    write_file(path, "client-secret-1\n", 0600);
    snprintf(auth, sizeof auth,
             "\"auth\": \"client_credentials\", \"tenant_id\": \"tenant-1\", \"client_id\": "
             "\"client-1\","
             " \"client_secret\": \"file:%s\"",
             path);
    struct cfg *c = mock_cfg(auth);
    struct secrets *s = secrets_new(c);
    struct buf err = {0};
    resolve_kv(s, c, 0, VALUE1, &err);
    resolve_kv(s, c, 0, VALUE1, &err);
    assert_int_equal(mock_stat("entra"), 1);
    assert_int_equal(mock_stat("imds"), 0);
    secrets_free(s);

    /* A wrong client secret: named as a credentials problem, not quoted. */
    write_file(path, "not-the-client-secret\n", 0600);
    s = secrets_new(c);
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "Entra ID at http://127.0.0.1:"));
    assert_true(contains(buf_cstr(&err), "HTTP 401 (invalid_client); check tenant_id, client_id "
                                         "and client_secret in secrets.keyvault"));
    assert_false(contains(buf_cstr(&err), "not-the-client-secret"));
    secrets_free(s);

    /* Never the client secret over plain http to anything but a loopback host. */
    struct cfg *c2 =
        load_cfg("staging", c->backends[0].api_key_ref,
                 "{\"keyvault\": {\"auth\": \"client_credentials\", \"tenant_id\": \"t\","
                 " \"client_id\": \"c\", \"client_secret\": \"env:X\","
                 " \"authority_host\": \"http://login.example.com\"}}");
    s = secrets_new(c2);
    resolve_kv(s, c2, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "authority_host http://login.example.com: plain http://"));
    secrets_free(s);
    cfg_free(c2);

    /* The client secret file is held to the same rule as any secret file. */
    write_file(path, "client-secret-1\n", 0644);
    s = secrets_new(c);
    resolve_kv(s, c, -1, NULL, &err);
    assert_true(contains(buf_cstr(&err), "secrets.keyvault.client_secret: secret file"));
    assert_true(contains(buf_cstr(&err), "readable by others"));
    assert_false(contains(buf_cstr(&err), "client-secret-1"));
    secrets_free(s);
    cfg_free(c);
    buf_free(&err);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
#define T(f) cmocka_unit_test_teardown(f, clean_env)
    const struct CMUnitTest tests[] = {
        T(test_env_expansion_from_config),
        T(test_env_expansion_from_aigw_env),
        T(test_unknown_variable_refused),
        T(test_literal_kept_as_written),
        T(test_env_and_file_names_checked),
        T(test_keyvault_urls_accepted),
        T(test_keyvault_urls_refused),
        T(test_env_reference),
        T(test_file_reference_and_mode_refusal),
        T(test_secret_resolve_leaves_keyvault_to_the_cache),
        T(test_token_refresh_arithmetic),
        T(test_token_answers),
        T(test_cache_ttl_and_force),
        T(test_stale_value_served_while_refresh_fails),
        T(test_check_all_reports_without_values),
        T(test_keyvault_managed_identity_imds),
        T(test_keyvault_app_service_identity),
        T(test_keyvault_client_credentials),
    };
    int rc = cmocka_run_group_tests(tests, setup_dir, teardown_all);
    curl_global_cleanup();
    return rc;
}
