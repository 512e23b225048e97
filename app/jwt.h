/*
 * jwt.h - verification of JWT bearer tokens.
 *
 * Part of pipeline stage 3. The algorithm comes from the key, never from the
 * token: a token whose header names another algorithm than its key's (alg
 * "none", HS256 signed with an RSA public key) is refused before any
 * signature check. Keys come from an HS256 secret, a JWKS file, or an OpenID
 * provider's jwks_uri (cached in the shared database for all workers and
 * refetched on an unknown kid at most once a minute).
 */
#ifndef AIGW_JWT_H
#define AIGW_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct buf;
struct worker;
struct caller;
struct jwks;

/* Loads what can be loaded at start (the HS256 secret, a JWKS file); the
 * OpenID keys are fetched on first use. Returns NULL with a reason in err
 * (a struct buf *) when the configured keys cannot be read. Free with jwks_free. */
struct jwks *jwks_new(struct worker *w, struct buf *err);
void jwks_free(struct jwks *k);

/* How long a worker without OpenID keys waits before asking the provider again;
 * the Retry-After of an auth_unavailable answer. */
#define JWT_KEYS_RETRY_S 10

/*
 * Verifies token (the text after "Bearer ") and fills caller->user_id (from
 * the configured user claim) and caller->roles (the "roles" claim, joined by
 * commas). Returns AIGW_OK, or AIGW_ERR_INVALID_TOKEN with a short reason in
 * why (safe to send to the client: it never echoes the token), or
 * AIGW_ERR_AUTH_UNAVAILABLE when the token needs OpenID keys and none could
 * be fetched (the provider is down: the caller should retry, not re-login).
 */
enum aigw_err jwt_verify(struct worker *w, const char *token, int64_t now_s, struct caller *caller,
                         char *why, size_t why_len);

#endif
