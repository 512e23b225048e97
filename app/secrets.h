/*
 * secrets.h - resolving secret references from the configuration.
 *
 * A reference is env:NAME, file:PATH or keyvault:URL; anything else is a
 * literal value (allowed; check-config warns). "${env}" inside a reference
 * expands to the configured environment, so one file serves every
 * environment (openai-key-${env}). Values are returned to the caller and
 * never logged, printed or put in an error message.
 */
#ifndef AIGW_SECRETS_H
#define AIGW_SECRETS_H

#include <stdio.h>

#include "buf.h"
#include "keyvault.h"

struct cfg;

enum secret_kind { SECRET_LITERAL, SECRET_ENV, SECRET_FILE, SECRET_KEYVAULT };

/* A reference taken apart by secret_ref_parse. */
struct secret_ref {
    enum secret_kind kind;
    /* The reference with ${env} expanded (env:NAME, file:PATH, keyvault:URL),
     * safe to print -- except for a literal, where it is the value itself. */
    struct buf text;
    size_t target;          /* offset in text of the name, path or URL */
    struct keyvault_ref kv; /* kind == SECRET_KEYVAULT */
};

/*
 * Takes ref apart: its kind, ${env} expanded (environment, or $AIGW_ENV when
 * that is NULL or empty), and for keyvault: the vault, name and version. A
 * literal is kept as it is. Does no I/O. Returns 0, or -1 with a sentence in
 * err naming the reference: ${env} with no environment, another ${...}, an
 * empty name or path, a malformed Key Vault URL. Free out with
 * secret_ref_free, also after a failure.
 */
int secret_ref_parse(const char *ref, const char *environment, struct secret_ref *out,
                     struct buf *err);
void secret_ref_free(struct secret_ref *r);

/*
 * Resolves ref into out (replacing its contents), without caching: env:,
 * file: and literals only (a Key Vault reference needs the secrets
 * configuration: use secrets_get). Returns 0, or -1 with a sentence in err
 * that names the reference (never the value).
 */
int secret_resolve(const char *ref, const char *environment, struct buf *out, struct buf *err);

struct secrets;

/* A per-process secret cache and Key Vault client, safe to use from every
 * request thread. cfg must outlive it. Free with secrets_free. */
struct secrets *secrets_new(const struct cfg *cfg);
void secrets_free(struct secrets *s);

/*
 * Resolves ref (any kind) through the cache: a value younger than
 * secrets.cache_ttl_s is returned without I/O; force fetches again (a backend
 * answered 401: the key may have been rotated). When a value is due for a
 * refresh and the refresh fails, the old value keeps being returned (a
 * warning is logged once) and the refresh is tried again a little later; a
 * forced fetch that fails, or a first one, is an error. Returns 0, or -1 with
 * err set (never the value).
 */
int secrets_get(struct secrets *s, const char *ref, int force, struct buf *out, struct buf *err);

/* How many access tokens s has asked Key Vault's token endpoint for. */
unsigned long secrets_token_requests(struct secrets *s);

/*
 * For `aigw secrets check`: resolves every reference in cfg (backends[i].api_key,
 * auth.jwt.hs256_secret, secrets.keyvault.client_secret, database.password), bypassing any
 * cache, and prints one line per reference to out:
 *     JSON.PATH <TAB> REFERENCE (${env} expanded; "(literal)" for a literal) <TAB> ok | error
 * never a value. Returns the number of references that did not resolve.
 */
int secrets_check_all(const struct cfg *cfg, FILE *out);

/* Backend i's Entra ID access token (cfg->backends[i].entra) into out: the
 * process's one token, fetched by the first thread that finds it due while
 * the others wait; with force (the backend answered 401) a new one. 0, or
 * -1 with a sentence in err that never holds the token. */
int secrets_backend_token(struct secrets *s, size_t backend, int force, struct buf *out,
                          struct buf *err);

#endif
