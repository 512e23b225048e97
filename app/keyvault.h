/*
 * keyvault.h - reading secrets from Azure Key Vault.
 *
 * Used only by secrets.c, which turns keyvault:URL references into values and
 * caches them. This file knows the Key Vault REST call; entra.c gets and
 * keeps its access token. It never logs, and never puts a secret value or a
 * token in an error message.
 */
#ifndef AIGW_KEYVAULT_H
#define AIGW_KEYVAULT_H

#include <stdint.h>

#include "buf.h"

struct cfg;

/* Azure's limits: secret names are 1-127 of [0-9a-zA-Z-]; versions are 32
 * hex digits, accepted as up to 64 alphanumerics. */
#define KEYVAULT_NAME_MAX    127
#define KEYVAULT_VERSION_MAX 64

/* A parsed keyvault: reference, from keyvault_ref_parse. */
struct keyvault_ref {
    char vault[128];                        /* scheme://host[:port], no trailing slash */
    char name[KEYVAULT_NAME_MAX + 1];       /* the secret's name */
    char version[KEYVAULT_VERSION_MAX + 1]; /* "" for the current version */
};

/*
 * Parses url (the part after "keyvault:", ${env} already expanded) into ref.
 * Accepted: https://VAULT.vault.azure.net/secrets/NAME[/VERSION], and for
 * local mocks http://HOST[:PORT]/secrets/NAME[/VERSION] where HOST is a
 * loopback address (127.0.0.1, localhost, [::1]): plain http would send the
 * bearer token in clear, so it is refused for any other host. No user info,
 * query, fragment or trailing slash. Returns 0, or -1 with a sentence in err.
 */
int keyvault_ref_parse(const char *url, struct keyvault_ref *ref, struct buf *err);

/* A Key Vault client with its access token; one per worker. */
struct keyvault;

/* A client that authenticates as cfg->secrets says. cfg must outlive it.
 * Returns NULL when memory is exhausted. Free with keyvault_free. */
struct keyvault *keyvault_new(const struct cfg *cfg);
/* Frees kv, wiping the token. NULL is allowed. */
void keyvault_free(struct keyvault *kv);

/*
 * Reads the secret ref names into out (replacing its contents), getting or
 * reusing an access token first. A vault answering 401 gets one retry with a
 * new token. Returns 0, or -1 with a sentence in err that names the secret and
 * the vault, never the value or the token.
 */
int keyvault_get(struct keyvault *kv, const struct keyvault_ref *ref, struct buf *out,
                 struct buf *err);

/* How many tokens kv has asked for (for check output and tests). */
unsigned long keyvault_token_requests(const struct keyvault *kv);

#endif
