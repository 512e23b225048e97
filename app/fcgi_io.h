/*
 * fcgi_io.h - reading requests from and writing responses to the web server.
 *
 * Pipeline stages 1 (read) and 8 (respond). Only aigw's own headers and an
 * allowlist of OpenAI headers are ever written: nothing a backend sent about
 * its internals (x-ms-request-id, apim-request-id, x-ms-region) gets through.
 */
#ifndef AIGW_FCGI_IO_H
#define AIGW_FCGI_IO_H

#include <stddef.h>

#include "request.h"

/* Reads method, path, headers and the body (bounded by max_body_bytes). */
enum aigw_err fcgi_read_request(struct request *req);

/* Writes the status line and headers: content type, x-request-id, the
 * rate-limit headers, retry-after and WWW-Authenticate where they apply.
 * Only while nothing has been sent (RESPONSE_NONE); -1 otherwise. */
int fcgi_send_headers(struct request *req, int status, const char *content_type);

/* Writes body bytes; -1 when the client has gone. */
int fcgi_write(struct request *req, const char *data, size_t n);
int fcgi_flush(struct request *req);

/* Writes one stream event (headers first, when none went out yet: 200
 * text/event-stream) and flushes it; -1 when the client has gone. */
int fcgi_stream_write(struct request *req, const char *data, size_t n);

/* With req->hold_answer set, the last event of a stream is kept rather than
 * written (it is the one that tells the client the answer is complete); else
 * it is written at once. 0 or -1. */
int fcgi_stream_hold(struct request *req, const char *data, size_t n);

/* Writes what was held (a whole answer made with hold_answer set, or a
 * stream's last event): called once the request is settled. */
void fcgi_release(struct request *req);

/* A complete answer: headers, then the body unless the method is HEAD. With
 * req->hold_answer set it is only made (RESPONSE_READY) until fcgi_release. */
void fcgi_send_body(struct request *req, int status, const char *content_type, const char *body,
                    size_t n);

/* A complete JSON response with the given status (body kept in req->out). */
void fcgi_send_json(struct request *req, int status, const char *json, size_t n);

/* The OpenAI-shaped error for req->err. */
void fcgi_send_error(struct request *req);

/* Appends {"error": {...}} for req->err to out. */
void fcgi_error_json(struct request *req, struct buf *out);

/* 16 random bytes as a lowercase hex string of 2n chars (n <= 16). */
void random_hex(char *out, size_t n);

#endif
