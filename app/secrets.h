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
 * Resolves ref into out (replacing its contents). Returns 0, or -1 with a
 * sentence in err that names the reference (never the value).
 */
int secret_resolve(const char *ref, const char *environment, struct buf *out, struct buf *err);

#endif
