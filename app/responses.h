/*
 * responses.h - the Responses API: POST /v1/responses (whole or streamed) and
 * the stored responses it makes (GET, DELETE, input_items).
 *
 * A response the backend stores lives only in the region that made it. The
 * audit row of the call that made it records its id (audit_log.response_id),
 * so a follow-up naming it (previous_response_id) and a GET or DELETE of it
 * are sent to that backend and no other; when that backend is unavailable
 * the caller is told so, naming it, instead of being sent to a region that
 * would answer previous_response_not_found. A stored response is reached
 * only by the subject whose call made it.
 */
#ifndef AIGW_RESPONSES_H
#define AIGW_RESPONSES_H

#include "request.h"

/* Before admission: finds the backend that holds the stored response the
 * request names (the path's id, or the body's previous_response_id), pins
 * the request to it and adds the stored conversation's tokens to the
 * estimate. An id no gateway call made: 404 for the stored routes; a
 * follow-up is routed as usual (the backend judges it). */
enum aigw_err responses_locate(struct request *req);

/* Dispatches a POST /v1/responses and writes the answer or relays the
 * stream; returns the outcome. */
enum aigw_err responses_handle(struct request *req);

/* Dispatches a GET or DELETE of a stored response (or its input items) to
 * the backend that holds it and relays the answer. */
enum aigw_err responses_stored(struct request *req);

#endif
