/*
 * entra.h - Entra ID access tokens, for Key Vault and for Azure OpenAI.
 *
 * Four ways to get a token for a scope (struct cfg_entra says which):
 *   managed identity on a VM (IMDS) or in App Service ($IDENTITY_ENDPOINT),
 *   workload identity (AKS: the federated token file exchanged at Entra ID),
 *   client credentials (an app's id and secret).
 * A struct entra_token keeps one token per scope and identity for a process,
 * shared by its threads: the first thread that finds it due fetches a new
 * one while the others wait for that one (no stampede), and it is replaced
 * shortly before it expires. Nothing here logs, and no message ever holds a
 * token, a secret or an answer's free text.
 */
#ifndef AIGW_ENTRA_H
#define AIGW_ENTRA_H

#include <curl/curl.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

struct entra_token;

/* A token source for settings e (borrowed, like the strings: they must
 * outlive the source); config_path names e in messages ("backends[0].entra")
 * and label the token ("a Key Vault access token"). NULL when out of memory.
 * Free with entra_token_free, which wipes the token. */
struct entra_token *entra_token_new(const struct cfg_entra *e, const char *config_path,
                                    const char *label, const char *environment);
void entra_token_free(struct entra_token *t);

/* Copies a token worth sending into out, fetching one when none is held or
 * it is due (always, with force: the resource refused the one held).
 * Returns 0, or -1 with a sentence in err naming the endpoint. */
int entra_token_get(struct entra_token *t, int force, struct buf *out, struct buf *err);

/* How many tokens t has asked for (for check output and tests). */
unsigned long entra_token_requests(const struct entra_token *t);

/*
 * When a token obtained at now_s that expires at expires_s (both epoch
 * seconds) should be replaced: ENTRA_TOKEN_MARGIN_S before it expires, or
 * half way through its life when that is shorter. An already expired token
 * gives now_s (use it once, do not keep it).
 */
#define ENTRA_TOKEN_MARGIN_S 300
int64_t entra_token_refresh_at(int64_t now_s, int64_t expires_s);

/*
 * Reads a token endpoint's JSON answer: access_token, and its expiry from
 * expires_on (epoch seconds, a string or a number: IMDS, App Service) or else
 * expires_in (seconds from now_s: Entra ID). Sets token and *expires_s.
 * Returns 0, or -1 with a sentence in err (never quoting the body).
 */
int entra_parse_token(const char *body, size_t len, int64_t now_s, struct buf *token,
                      int64_t *expires_s, struct buf *err);

/* --- plumbing shared with keyvault.c ------------------------------------------- */

/*
 * One small HTTP exchange over c: a GET, or a form POST when form is not
 * NULL. Returns 0 with *status set whenever an answer came (whatever its
 * status), or -1 with curl's reason in err when none did. local: never
 * through a proxy (the metadata endpoints are on this machine). Redirects
 * are never followed (they could carry the bearer token elsewhere).
 */
int entra_http(CURL *c, const char *url, struct curl_slist *headers, const struct buf *form,
               int local, double timeout_s, struct buf *answer, long *status, struct buf *err);

/* Frees a header list one of whose lines holds a token or a shared secret. */
void entra_headers_free(struct curl_slist *list);

/* Appends s percent-encoded; wipes curl's copy, which may be a secret. */
int entra_put_escaped(struct buf *b, const char *s);

/* Puts " (CODE)" into out when an error answer carries a short error code:
 * {"error": "invalid_client"} from Entra ID and the metadata endpoints,
 * {"error": {"code": "SecretNotFound"}} from Azure's services. Only an
 * identifier is copied, never free text. */
void entra_error_code(const struct buf *answer, char *out, size_t n);

/* 0 when host[0..n) of an http:// URL is a loopback host with an optional
 * port (plain http is only for local mocks), else -1 with a sentence. */
int entra_check_loopback_host(const char *host, size_t n, struct buf *err);

#endif
