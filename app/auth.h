/*
 * auth.h - who is calling: gateway API keys and JWT bearer tokens.
 *
 * Pipeline stage 3. Exactly one credential is accepted per request, as
 * `Authorization: Bearer ...` or the Azure SDK's `api-key:` header. Gateway
 * keys (aigw_...) are looked up by their SHA-256; anything else in a Bearer
 * header is a JWT. The caller's credential is used only here and is never
 * forwarded to a backend.
 */
#ifndef AIGW_AUTH_H
#define AIGW_AUTH_H

#include <stddef.h>

#include "err.h"
#include "request.h"

/* Authenticates req and fills req->caller (with the limits of the subject). */
enum aigw_err auth_authenticate(struct request *req);

/* After validation: decides whose limits and budget apply (the caller, or the
 * body's user on whose behalf a trusted application calls). */
enum aigw_err auth_authorize_subject(struct request *req);

/* The limits in force for a user: u's own, else the configuration's
 * defaults (u NULL: all defaults). Fills the limit fields of c only. */
struct user_row;
void auth_limits_in_force(const struct cfg *cfg, const struct user_row *u, struct caller *c);

/* 1 when s is 1 to max bytes with no control characters: what a user id
 * (max 256) or a roles list may hold. */
int auth_printable(const char *s, size_t max);
#define USER_ID_MAX 256

/* 1 when the comma-separated roles list holds role. */
int auth_has_role(const char *roles, const char *role);

/* Creates a new key for user: writes the key text (shown once) into out and
 * its public id into key_id. Returns 0 or -1. */
int auth_key_generate(char *out, size_t out_len, char *key_id, size_t key_id_len,
                      unsigned char hash[32]);

/* SHA-256 of a key's text. */
void auth_key_hash(const char *key, size_t len, unsigned char hash[32]);

#endif
