/*
 * admin_api.h - the operator's JSON API under /admin/api/ (docs/ADMIN_API.md).
 *
 * What the CLI does (users, keys, breakers, reports) over HTTP, for the
 * dashboard and for automation. Only callers holding auth.admin_role may call
 * it; every change is written with its audit row in one transaction.
 */
#ifndef AIGW_ADMIN_API_H
#define AIGW_ADMIN_API_H

#include "buf.h"
#include "request.h"

/* Headers every admin and dashboard answer carries. */
#define ADMIN_SECURITY_HEADERS                                                                     \
    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: "              \
    "no-referrer\r\n"

/* Answers one /admin/api/ request (authenticates it first); on failure
 * req->err is set and nothing is sent (the pipeline answers the error). */
void admin_api_handle(struct request *req);

/* Appends a report's value as JSON: a number when the text is one, SQL NULL
 * (v NULL) as null, else a string. For the API and `aigw report --format json`. */
void admin_json_report_value(struct buf *b, const char *v);

#endif
