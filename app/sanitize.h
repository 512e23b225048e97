/*
 * sanitize.h - redaction of secrets in what the backends answer.
 *
 * Pipeline stage 7. The seed's output rule (sk-[a-zA-Z0-9]{48} becomes
 * [REDACTED_KEY]) plus the configured patterns, applied to whole texts and to
 * streams, where a secret may be split across two events: the stream redactor
 * holds back the last word (at most max_match_chars bytes) until it knows it
 * is not the start of a secret; when a configured pattern can match white
 * space, it holds back max_match_chars bytes instead.
 */
#ifndef AIGW_SANITIZE_H
#define AIGW_SANITIZE_H

#include <stddef.h>

#include "buf.h"
#include "config.h"

struct redactor;

/* Compiles the configured patterns; NULL if one does not compile (config.c
 * has already checked them). Free with redactor_free. */
struct redactor *redactor_new(const struct cfg *cfg);
void redactor_free(struct redactor *r);

/* Appends text with every match replaced to out; returns the number of matches
 * or -1 when out of memory. text[len] must be a NUL byte (buf and json-c
 * strings always have one); NUL bytes inside the text are redacted across. */
int redact_text(const struct redactor *r, const char *text, size_t len, struct buf *out);

/* Stream redaction: feed pieces in order; what is safe to emit is appended to
 * out. With final set everything left is flushed. pending is the caller's
 * buffer for the held-back tail (one per stream choice). */
int redact_stream(const struct redactor *r, struct buf *pending, const char *piece, size_t len,
                  int final, struct buf *out);

#endif
