/*
 * audit.h - what the audit row of a request says.
 *
 * Turns a struct request into the struct audit_row that store.c writes:
 * status, tokens, latency, the backend that answered and every attempt, and
 * the bodies as audit.log_bodies asks (full, redacted or none).
 */
#ifndef AIGW_AUDIT_H
#define AIGW_AUDIT_H

#include "buf.h"
#include "request.h"
#include "store.h"

struct audit_scratch {
    struct buf request_body;
    struct buf response_body;
    struct buf attempts;
};

/* Fills row from req with the given status ('pending', 'success', ...).
 * Strings in row point into req or into scratch, which must outlive the row. */
void audit_fill(struct request *req, const char *status, struct audit_row *row,
                struct audit_scratch *scratch);

void audit_scratch_free(struct audit_scratch *s);

#endif
