/*
 * buf.h - growable byte buffers.
 *
 * A struct buf owns its data; buf_free releases it. Workers keep their buffers
 * across requests and buf_reset them, so the request path does not allocate
 * once the buffers have grown to their working size.
 */
#ifndef AIGW_BUF_H
#define AIGW_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* always NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
};

/* Appends n bytes; returns 0, or -1 when memory is exhausted (buffer unchanged). */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included. */
int buf_put_json_string(struct buf *b, const char *s, size_t n);
/* Drops the first n bytes, keeping the rest. */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
void buf_free(struct buf *b);
/* Like buf_reset and buf_free, but first overwrite every byte the buffer ever
 * held: for keys, tokens and secrets. */
void buf_scrub(struct buf *b);
void buf_wipe(struct buf *b);
/* A NUL-terminated view of the contents ("" when empty); owned by b. */
const char *buf_cstr(struct buf *b);

#endif
