/*
 * json_strict.c - a strict RFC 8259 scanner in front of json-c (see json_strict.h).
 *
 * The scanner is iterative (an explicit stack bounded by max_depth), so hostile
 * nesting cannot exhaust the C stack, and it never allocates except for the
 * per-object key counts.
 */
#include "json_strict.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64 /* the README's validation rules: nesting <= 64 */

struct scanner {
    const unsigned char *p, *start, *end;
    struct json_strict_error *err;
    int *counts; /* keys per object, in document order */
    size_t n_counts, cap_counts;
};

static int fail(struct scanner *s, const char *what)
{
    s->err->offset = (size_t)(s->p - s->start);
    snprintf(s->err->what, sizeof s->err->what, "%s", what);
    return -1;
}

static void skip_ws(struct scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* One UTF-8 sequence at s->p (first byte >= 0x80): rejects overlong forms,
 * surrogates and values past U+10FFFF. */
static int utf8_seq(struct scanner *s)
{
    const unsigned char *p = s->p;
    unsigned c = p[0], cp;
    size_t n;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else
        return fail(s, "invalid UTF-8");
    if ((size_t)(s->end - p) < n)
        return fail(s, "truncated UTF-8 sequence");
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return fail(s, "invalid UTF-8");
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return fail(s, "invalid UTF-8");
    s->p += n;
    return 0;
}

static int scan_string(struct scanner *s)
{
    s->p++; /* opening quote */
    while (s->p < s->end) {
        unsigned c = *s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return fail(s, c == 0 ? "NUL byte in string" : "unescaped control character in string");
        if (c >= 0x80) {
            if (utf8_seq(s) < 0)
                return -1;
            continue;
        }
        if (c != '\\') {
            s->p++;
            continue;
        }
        if (s->end - s->p < 2)
            return fail(s, "unterminated string");
        c = s->p[1];
        if (strchr("\"\\/bfnrt", (int)c) && c) {
            s->p += 2;
            continue;
        }
        if (c != 'u')
            return fail(s, "invalid escape in string");
        unsigned u, lo;
        if (s->end - s->p < 6 || hex4(s->p + 2, &u) < 0)
            return fail(s, "invalid \\u escape");
        if (u == 0)
            return fail(s, "\\u0000 (NUL) in string");
        if (u >= 0xDC00 && u <= 0xDFFF)
            return fail(s, "lone surrogate in string");
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (s->end - s->p < 12 || s->p[6] != '\\' || s->p[7] != 'u' ||
                hex4(s->p + 8, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                return fail(s, "lone surrogate in string");
            s->p += 12;
            continue;
        }
        s->p += 6;
    }
    return fail(s, "unterminated string");
}

static int is_digit(const unsigned char *p, const unsigned char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

static int scan_number(struct scanner *s)
{
    if (*s->p == '-')
        s->p++;
    if (!is_digit(s->p, s->end))
        return fail(s, "invalid number");
    if (*s->p == '0') {
        s->p++;
        if (is_digit(s->p, s->end))
            return fail(s, "leading zero in number");
    } else
        while (is_digit(s->p, s->end))
            s->p++;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!is_digit(s->p, s->end))
            return fail(s, "invalid number");
        while (is_digit(s->p, s->end))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!is_digit(s->p, s->end))
            return fail(s, "invalid number");
        while (is_digit(s->p, s->end))
            s->p++;
    }
    return 0;
}

static int literal(struct scanner *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return fail(s, "invalid literal (NaN, Infinity and bare words are not JSON)");
    s->p += n;
    return 0;
}

static int push_count(struct scanner *s, size_t *index)
{
    if (s->n_counts == s->cap_counts) {
        size_t cap = s->cap_counts ? s->cap_counts * 2 : 16;
        int *c = realloc(s->counts, cap * sizeof *c);
        if (!c)
            return fail(s, "out of memory");
        s->counts = c;
        s->cap_counts = cap;
    }
    *index = s->n_counts;
    s->counts[s->n_counts++] = 0;
    return 0;
}

/* The container stack: for each open container, its kind and count index. */
struct frame {
    char kind; /* '{' or '[' */
    size_t count_index;
};

static int scan(struct scanner *s, int max_depth)
{
    struct frame stack[JSON_MAX_DEPTH + 1];
    int depth = 0;
    skip_ws(s);
    for (;;) {
        /* Expect a value. */
        if (s->p >= s->end)
            return fail(s, depth ? "unexpected end of input" : "empty body");
        unsigned c = *s->p;
        if (c == '{' || c == '[') {
            if (depth >= max_depth)
                return fail(s, "nesting too deep");
            stack[depth].kind = (char)c;
            if (c == '{' && push_count(s, &stack[depth].count_index) < 0)
                return -1;
            depth++;
            s->p++;
            skip_ws(s);
            if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
                s->p++;
                depth--;
                goto after_value;
            }
            if (c == '{')
                goto expect_key;
            continue;
        } else if (c == '"') {
            if (scan_string(s) < 0)
                return -1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (scan_number(s) < 0)
                return -1;
        } else if (c == 't') {
            if (literal(s, "true") < 0)
                return -1;
        } else if (c == 'f') {
            if (literal(s, "false") < 0)
                return -1;
        } else if (c == 'n') {
            if (literal(s, "null") < 0)
                return -1;
        } else
            return fail(s, "unexpected character");
    after_value:
        skip_ws(s);
        if (depth == 0) {
            if (s->p != s->end)
                return fail(s, "trailing data after the JSON value");
            return 0;
        }
        if (s->p >= s->end)
            return fail(s, "unexpected end of input");
        if (*s->p == ',') {
            s->p++;
            skip_ws(s);
            if (stack[depth - 1].kind == '{')
                goto expect_key;
            continue;
        }
        if (*s->p == (stack[depth - 1].kind == '{' ? '}' : ']')) {
            s->p++;
            depth--;
            goto after_value;
        }
        return fail(s,
                    stack[depth - 1].kind == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    expect_key:
        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a string key");
        if (scan_string(s) < 0)
            return -1;
        s->counts[stack[depth - 1].count_index]++;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected ':'");
        s->p++;
        skip_ws(s);
    }
}

/* Walks the parsed tree in document order comparing key counts; returns the
 * index of the first object whose count differs (a duplicate key) or -1. */
static int dup_walk(json_object *o, const int *counts, size_t n, size_t *next)
{
    if (json_object_is_type(o, json_type_object)) {
        size_t me = (*next)++;
        if (me >= n || counts[me] != json_object_object_length(o))
            return 1;
        json_object_object_foreach(o, k, v)
        {
            (void)k;
            if (v && dup_walk(v, counts, n, next))
                return 1;
        }
    } else if (json_object_is_type(o, json_type_array)) {
        size_t len = json_object_array_length(o);
        for (size_t i = 0; i < len; i++) {
            json_object *v = json_object_array_get_idx(o, i);
            if (v && dup_walk(v, counts, n, next))
                return 1;
        }
    }
    return 0;
}

static struct scanner scanner_for(const char *text, size_t n, struct json_strict_error *err)
{
    struct scanner s = {(const unsigned char *)text,
                        (const unsigned char *)text,
                        (const unsigned char *)text + n,
                        err,
                        NULL,
                        0,
                        0};
    return s;
}

int json_strict_valid(const char *text, size_t n, int max_depth, struct json_strict_error *err)
{
    if (max_depth > JSON_MAX_DEPTH)
        max_depth = JSON_MAX_DEPTH;
    struct scanner s = scanner_for(text, n, err);
    int rc = scan(&s, max_depth);
    free(s.counts);
    return rc;
}

json_object *json_strict_parse(const char *text, size_t n, int max_depth,
                               struct json_strict_error *err)
{
    if (max_depth > JSON_MAX_DEPTH)
        max_depth = JSON_MAX_DEPTH;
    struct scanner s = scanner_for(text, n, err);
    if (scan(&s, max_depth) < 0) {
        free(s.counts);
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(max_depth + 1);
    if (!tok) {
        free(s.counts);
        err->offset = 0;
        snprintf(err->what, sizeof err->what, "out of memory");
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *root = json_tokener_parse_ex(tok, text, (int)n);
    if (!root && json_tokener_get_error(tok) == json_tokener_continue)
        root = json_tokener_parse_ex(tok, "", -1);
    if (!root && json_tokener_get_error(tok) == json_tokener_success) {
        /* The text is a valid "null": json-c has no object for it. */
        err->offset = 0;
        snprintf(err->what, sizeof err->what, "null where a JSON value was expected");
        json_tokener_free(tok);
        free(s.counts);
        return NULL;
    }
    if (!root || json_tokener_get_error(tok) != json_tokener_success) {
        err->offset = json_tokener_get_parse_end(tok);
        snprintf(err->what, sizeof err->what, "%s",
                 json_tokener_error_desc(json_tokener_get_error(tok)));
        json_object_put(root);
        json_tokener_free(tok);
        free(s.counts);
        return NULL;
    }
    json_tokener_free(tok);
    size_t next = 0;
    if (dup_walk(root, s.counts, s.n_counts, &next)) {
        err->offset = 0;
        snprintf(err->what, sizeof err->what, "duplicate key in an object");
        json_object_put(root);
        root = NULL;
    }
    free(s.counts);
    return root;
}
