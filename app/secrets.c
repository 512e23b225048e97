/*
 * secrets.c - secret references and the per-process secret cache (see secrets.h).
 *
 * A reference is parsed once into a struct secret_ref (kind, ${env} expanded,
 * Key Vault URL checked), then resolved: env: from the process environment,
 * file: from a file only its owner can read (a key that anyone on the host can
 * read is not a secret), keyvault: through keyvault.c.
 *
 * The cache keeps each value for secrets.cache_ttl_s. Two rules make a vault
 * outage invisible to clients: a value that is due for a refresh keeps being
 * served when the refresh fails (a warm cache outlives the vault; one warning
 * per outage), and the next try waits a little so that requests do not each
 * wait for a dead vault. A backend answering 401 forces a fetch, which is how
 * a rotated key is picked up without a restart.
 *
 * Never logs, prints or puts in a message a value: only references.
 */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "entra.h"
#include "log.h"
#include "request.h"

#define SECRET_FILE_MAX 65536
#define ENV_VAR         "${env}"
/* After a failed refresh, when to try again: soon enough to notice that the
 * vault is back, seldom enough that requests do not each wait for a dead one. */
#define STALE_RETRY_MIN_MS 1000
#define STALE_RETRY_MAX_MS 30000

/* --- references ------------------------------------------------------------- */

/* The environment ${env} stands for: the configured one, else $AIGW_ENV. */
static const char *env_name(const char *environment)
{
    if (environment && *environment)
        return environment;
    const char *e = getenv("AIGW_ENV");
    return e && *e ? e : NULL;
}

/* Expands ${env} in ref into out; any other ${...} is an error. */
static int expand_env(const char *ref, const char *environment, struct buf *out, struct buf *err)
{
    const char *p = ref, *hit;
    while ((hit = strstr(p, "${")) != NULL) {
        if (strncmp(hit, ENV_VAR, strlen(ENV_VAR)) != 0) {
            size_t n = strcspn(hit, "}");
            buf_printf(err,
                       "secret reference %s: unknown variable %.*s; only " ENV_VAR " is expanded",
                       ref, (int)(hit[n] ? n + 1 : n), hit);
            return -1;
        }
        const char *env = env_name(environment);
        if (!env) {
            buf_printf(err,
                       "secret reference %s uses " ENV_VAR " but no environment is set "
                       "(\"environment\" in the configuration or $AIGW_ENV)",
                       ref);
            return -1;
        }
        buf_append(out, p, (size_t)(hit - p));
        buf_puts(out, env);
        p = hit + strlen(ENV_VAR);
    }
    buf_puts(out, p);
    return 0;
}

static int is_env_name(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
              (*s >= 'A' && *s <= 'Z')))
            return 0;
    return 1;
}

int secret_ref_parse(const char *ref, const char *environment, struct secret_ref *out,
                     struct buf *err)
{
    static const struct {
        const char *prefix;
        enum secret_kind kind;
    } kinds[] = {{"env:", SECRET_ENV}, {"file:", SECRET_FILE}, {"keyvault:", SECRET_KEYVAULT}};
    memset(out, 0, sizeof *out);
    out->kind = SECRET_LITERAL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(ref, kinds[i].prefix, strlen(kinds[i].prefix)) == 0) {
            out->kind = kinds[i].kind;
            out->target = strlen(kinds[i].prefix);
        }
    if (out->kind == SECRET_LITERAL)
        return buf_puts(&out->text, ref); /* a value: no expansion, no checks */
    if (expand_env(ref, environment, &out->text, err) < 0) {
        buf_reset(&out->text); /* no half-expanded reference to show */
        return -1;
    }
    const char *t = buf_cstr(&out->text) + out->target;
    switch (out->kind) {
    case SECRET_ENV:
        if (!is_env_name(t)) {
            buf_printf(err, "secret reference %s: env: needs a variable name (letters, digits, _)",
                       ref);
            return -1;
        }
        break;
    case SECRET_FILE:
        if (!*t) {
            buf_printf(err, "secret reference %s: file: needs a path", ref);
            return -1;
        }
        break;
    case SECRET_KEYVAULT: {
        struct buf why = {0};
        int rc = keyvault_ref_parse(t, &out->kv, &why);
        if (rc < 0)
            buf_printf(err, "secret reference %s: %s", buf_cstr(&out->text), buf_cstr(&why));
        buf_free(&why);
        return rc;
    }
    case SECRET_LITERAL: break;
    }
    return 0;
}

void secret_ref_free(struct secret_ref *r)
{
    buf_wipe(&r->text); /* a literal's text is its value */
}

static void trim_newline(struct buf *b)
{
    while (b->len > 0 && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == '\r'))
        b->data[--b->len] = '\0';
}

static int read_secret_file(const char *path, struct buf *out, struct buf *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat sb;
    if (fd < 0) {
        buf_printf(err, "cannot open secret file %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        buf_printf(err, "secret file %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        buf_printf(err, "secret file %s is readable by others (mode %03o); run chmod 600 %s", path,
                   (unsigned)(sb.st_mode & 0777), path);
        close(fd);
        return -1;
    }
    char chunk[4096];
    ssize_t r;
    while ((r = read(fd, chunk, sizeof chunk)) > 0 && out->len < SECRET_FILE_MAX)
        buf_append(out, chunk, (size_t)r);
    OPENSSL_cleanse(chunk, sizeof chunk);
    close(fd);
    if (r < 0) {
        buf_printf(err, "cannot read secret file %s: %s", path, strerror(errno));
        return -1;
    }
    trim_newline(out);
    if (out->len == 0) {
        buf_printf(err, "secret file %s is empty", path);
        return -1;
    }
    return 0;
}

/* Resolves a parsed env:, file: or literal reference; ref is the original text. */
static int resolve_local(const struct secret_ref *r, const char *ref, struct buf *out,
                         struct buf *err)
{
    const char *t = (r->text.data ? r->text.data : "") + r->target;
    buf_scrub(out);
    switch (r->kind) {
    case SECRET_ENV: {
        const char *v = getenv(t);
        if (!v || !*v) {
            buf_printf(err, "environment variable %s (from secret reference %s) is not set", t,
                       ref);
            return -1;
        }
        return buf_puts(out, v);
    }
    case SECRET_FILE: return read_secret_file(t, out, err);
    case SECRET_LITERAL:
        return buf_append(out, r->text.data, r->text.len); /* check-config warns about it */
    case SECRET_KEYVAULT: break;
    }
    buf_printf(err,
               "secret reference %s: Key Vault references are not resolved here (only env: "
               "and file:)",
               ref);
    return -1;
}

int secret_resolve(const char *ref, const char *environment, struct buf *out, struct buf *err)
{
    struct secret_ref r;
    int rc = secret_ref_parse(ref, environment, &r, err);
    if (rc == 0)
        rc = resolve_local(&r, ref, out, err);
    secret_ref_free(&r);
    return rc;
}

/* --- the per-process cache -------------------------------------------------- */

struct secret_entry {
    char *ref;
    struct buf value;
    int64_t next_fetch_ms; /* fresh until then; after a failed refresh, when to try again */
    int stale;             /* serving the old value because a refresh failed (warned) */
};

struct secrets {
    /* One lock for the cache and the Key Vault client: a value due for a
     * refresh is fetched by the first thread that needs it while the others
     * wait for it, so 500 requests meeting an expired secret make one call. */
    pthread_mutex_t mu;
    const struct cfg *cfg;
    struct keyvault *kv; /* made when the first keyvault: reference is fetched */
    struct secret_entry *entries;
    size_t n, cap;
    /* Per backend that signs in with Entra ID: its token (with its own lock),
     * and the names its messages use. */
    struct backend_signin {
        struct entra_token *token;
        char path[40];
        char label[200];
    } * signin;
};

struct secrets *secrets_new(const struct cfg *cfg)
{
    struct secrets *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = cfg;
    pthread_mutex_init(&s->mu, NULL);
    s->signin = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof *s->signin);
    if (!s->signin) {
        secrets_free(s);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_backends; i++) {
        const struct cfg_backend *b = &cfg->backends[i];
        struct backend_signin *si = &s->signin[i];
        if (!b->entra)
            continue;
        snprintf(si->path, sizeof si->path, "backends[%zu].entra", i);
        snprintf(si->label, sizeof si->label, "an access token for backend %s", b->name);
        si->token = entra_token_new(b->entra, si->path, si->label, cfg->environment);
        if (!si->token) {
            secrets_free(s);
            return NULL;
        }
    }
    return s;
}

int secrets_backend_token(struct secrets *s, size_t backend, int force, struct buf *out,
                          struct buf *err)
{
    if (backend >= s->cfg->n_backends || !s->signin[backend].token) {
        buf_puts(err, "the backend does not sign in with Entra ID");
        return -1;
    }
    return entra_token_get(s->signin[backend].token, force, out, err);
}

void secrets_free(struct secrets *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->entries[i].ref);
        buf_wipe(&s->entries[i].value);
    }
    free(s->entries);
    keyvault_free(s->kv);
    for (size_t i = 0; s->signin && i < s->cfg->n_backends; i++)
        entra_token_free(s->signin[i].token);
    free(s->signin);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

unsigned long secrets_token_requests(struct secrets *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&s->mu);
    unsigned long n = keyvault_token_requests(s->kv);
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Resolves ref, of any kind, without the cache. */
static int fetch(struct secrets *s, const char *ref, struct buf *out, struct buf *err)
{
    struct secret_ref r;
    int rc = secret_ref_parse(ref, s->cfg->environment, &r, err);
    if (rc == 0 && r.kind == SECRET_KEYVAULT) {
        struct buf why = {0};
        if (!s->kv && !(s->kv = keyvault_new(s->cfg)))
            buf_puts(&why, "out of memory");
        rc = s->kv ? keyvault_get(s->kv, &r.kv, out, &why) : -1;
        if (rc < 0)
            buf_printf(err, "secret reference %s: %s", buf_cstr(&r.text), buf_cstr(&why));
        buf_free(&why);
    } else if (rc == 0) {
        rc = resolve_local(&r, ref, out, err);
    }
    secret_ref_free(&r);
    return rc;
}

static struct secret_entry *entry_find(struct secrets *s, const char *ref)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->entries[i].ref, ref) == 0)
            return &s->entries[i];
    return NULL;
}

static struct secret_entry *entry_add(struct secrets *s, const char *ref)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct secret_entry *n = realloc(s->entries, cap * sizeof *n);
        if (!n)
            return NULL;
        s->entries = n;
        s->cap = cap;
    }
    struct secret_entry *e = &s->entries[s->n];
    memset(e, 0, sizeof *e);
    if (!(e->ref = strdup(ref)))
        return NULL;
    s->n++;
    return e;
}

static int64_t stale_retry_ms(int ttl_s)
{
    int64_t t = (int64_t)ttl_s * 1000;
    return t < STALE_RETRY_MIN_MS   ? STALE_RETRY_MIN_MS
           : t > STALE_RETRY_MAX_MS ? STALE_RETRY_MAX_MS
                                    : t;
}

static int copy_out(const struct secret_entry *e, struct buf *out, struct buf *err)
{
    buf_scrub(out);
    if (buf_append(out, e->value.data, e->value.len) < 0) {
        buf_puts(err, "out of memory");
        return -1;
    }
    return 0;
}

static int get_locked(struct secrets *s, const char *ref, int force, struct buf *out,
                      struct buf *err)
{
    int64_t now = (int64_t)(mono_s() * 1000); /* immune to clock steps */
    struct secret_entry *e = entry_find(s, ref);
    if (e && !force && now < e->next_fetch_ms)
        return copy_out(e, out, err);

    struct buf fresh = {0}, why = {0};
    if (fetch(s, ref, &fresh, &why) < 0) {
        buf_wipe(&fresh);
        if (e && !force) {
            if (!e->stale)
                log_warn("%s; serving the cached value until a refresh succeeds", buf_cstr(&why));
            e->stale = 1;
            e->next_fetch_ms = now + stale_retry_ms(s->cfg->secrets.cache_ttl_s);
            buf_free(&why);
            return copy_out(e, out, err);
        }
        buf_append(err, why.data, why.len);
        buf_free(&why);
        return -1;
    }
    buf_free(&why);
    if (!e && !(e = entry_add(s, ref))) {
        buf_wipe(&fresh);
        buf_puts(err, "out of memory");
        return -1;
    }
    if (e->stale)
        log_info("secret reference %s refreshed again", ref);
    buf_wipe(&e->value);
    e->value = fresh;
    e->stale = 0;
    e->next_fetch_ms = now + (int64_t)s->cfg->secrets.cache_ttl_s * 1000;
    return copy_out(e, out, err);
}

int secrets_get(struct secrets *s, const char *ref, int force, struct buf *out, struct buf *err)
{
    pthread_mutex_lock(&s->mu);
    int rc = get_locked(s, ref, force, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* --- aigw secrets check ------------------------------------------------------ */

/* Resolves one reference with s (no cache) and prints its line; returns 1 when it failed. */
static int check_one(struct secrets *s, const char *path, const char *ref, FILE *out)
{
    struct secret_ref r;
    struct buf err = {0}, value = {0};
    int bad =
        secret_ref_parse(ref, s->cfg->environment, &r, &err) < 0 || fetch(s, ref, &value, &err) < 0;
    /* Expanded when ${env} could be expanded, else as written: either way a
     * name, since only a literal (which always parses) is a value. */
    const char *shown = r.kind == SECRET_LITERAL ? "(literal)"
                        : r.text.len             ? buf_cstr(&r.text)
                                                 : ref;
    if (bad)
        fprintf(out, "%s\t%s\t%s\n", path, shown, buf_cstr(&err));
    else
        fprintf(out, "%s\t%s\tok%s\n", path, shown,
                r.kind == SECRET_LITERAL ? " (a literal in the configuration: prefer a reference)"
                                         : "");
    secret_ref_free(&r);
    buf_wipe(&value);
    buf_free(&err);
    return bad;
}

int secrets_check_all(const struct cfg *cfg, FILE *out)
{
    struct secrets *s = secrets_new(cfg);
    if (!s) {
        fprintf(out, "secrets: out of memory\n");
        return 1;
    }
    int failures = 0;
    char path[64];
    for (size_t i = 0; i < cfg->n_backends; i++) {
        if (!cfg->backends[i].api_key_ref)
            continue;
        snprintf(path, sizeof path, "backends[%zu].api_key", i);
        failures += check_one(s, path, cfg->backends[i].api_key_ref, out);
    }
    for (size_t i = 0; i < cfg->n_backends; i++) {
        if (!cfg->backends[i].entra)
            continue;
        /* Sign in as the workers will: the token itself is never shown. */
        struct buf token = {0}, err = {0};
        const char *scope = cfg->backends[i].entra->scope;
        if (secrets_backend_token(s, i, 1, &token, &err) < 0) {
            fprintf(out, "backends[%zu].entra\t%s\t%s\n", i, scope, buf_cstr(&err));
            failures++;
        } else {
            fprintf(out, "backends[%zu].entra\t%s\tok (%s)\n", i, scope,
                    cfg->backends[i].entra->auth);
        }
        buf_wipe(&token);
        buf_free(&err);
    }
    if (cfg->auth.jwt_hs256_secret_ref)
        failures += check_one(s, "auth.jwt.hs256_secret", cfg->auth.jwt_hs256_secret_ref, out);
    if (cfg->secrets.keyvault.client_secret_ref)
        failures += check_one(s, "secrets.keyvault.client_secret",
                              cfg->secrets.keyvault.client_secret_ref, out);
    if (cfg->database.password_ref)
        failures += check_one(s, "database.password", cfg->database.password_ref, out);
    secrets_free(s);
    return failures;
}
