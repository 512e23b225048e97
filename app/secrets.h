/*
 * secrets.h - resolving secret references from the configuration.
 *
 * A reference is env:NAME, file:PATH or a literal; "${env}" inside it expands
 * to the configured environment, so one file serves every environment
 * (openai-key-${env}). Values are returned to the caller and never logged.
 */
#ifndef AIGW_SECRETS_H
#define AIGW_SECRETS_H

#include "buf.h"

/*
 * Resolves ref into out (replacing its contents), without caching: env:, file:
 * and literals only. Returns 0, or -1 with a sentence in err that names the
 * reference (never the value).
 */
int secret_resolve(const char *ref, const char *environment, struct buf *out, struct buf *err);

struct cfg;
struct secrets;

/* A per-worker secret cache (and Key Vault client). Free with secrets_free. */
struct secrets *secrets_new(const struct cfg *cfg);
void secrets_free(struct secrets *s);

/*
 * Resolves ref through the cache: a value younger than secrets.cache_ttl_s is
 * returned without I/O; force fetches again (a backend answered 401: the key
 * may have been rotated). Returns 0, or -1 with err set (never the value).
 */
int secrets_get(struct secrets *s, const char *ref, int force, struct buf *out, struct buf *err);

#endif
