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
 * rate-limit headers, retry-after and WWW-Authenticate where they apply. */
int fcgi_send_headers(struct request *req, int status, const char *content_type);

/* Writes body bytes; -1 when the client has gone. */
int fcgi_write(struct request *req, const char *data, size_t n);
int fcgi_flush(struct request *req);

/* A complete JSON response with the given status (body kept in req->out). */
void fcgi_send_json(struct request *req, int status, const char *json, size_t n);

/* The OpenAI-shaped error for req->err. */
void fcgi_send_error(struct request *req);

/* Appends {"error": {...}} for req->err to out. */
void fcgi_error_json(struct request *req, struct buf *out);

/* 16 random bytes as a lowercase hex string of 2n chars (n <= 16). */
void random_hex(char *out, size_t n);

#endif
