/*
 * fuzz_json.c - libFuzzer target for app/json_strict.c (json_strict_parse).
 *
 * Every request body, JWT segment and configuration file goes through the
 * strict scanner first, so its verdict is checked against an independent
 * reference written here: a small recursive RFC 8259 validator with the
 * gateway's extra rules (no NUL or \u0000, no lone surrogate escapes, nesting
 * limit, no duplicate keys after unescaping). The two must agree on every
 * input. When the scanner accepts, json-c's own strict tokener must accept
 * the same bytes, and the tree re-serialised by json-c must parse strictly
 * again to an equal tree (what the gateway forwards after editing a body).
 *
 * Input: the raw bytes, as a client would send them.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fuzz_common.h"
#include "json_strict.h"

#define DEPTH 64 /* the gateway's default validation.max_depth */

/* --- the reference validator ---------------------------------------------- */

struct ref {
    const unsigned char *p, *end;
    int max_depth;
    const char *why; /* first problem, for the report */
};

static int ref_fail(struct ref *r, const char *why)
{
    if (!r->why)
        r->why = why;
    return -1;
}

static void ref_ws(struct ref *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int ref_hex(struct ref *r, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        if (r->p >= r->end)
            return -1;
        unsigned c = *r->p++;
        if (c >= '0' && c <= '9')
            v = v * 16 + (c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v = v * 16 + ((c | 0x20) - 'a' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(struct buf *b, unsigned cp)
{
    if (cp < 0x80) {
        buf_putc(b, (char)cp);
    } else if (cp < 0x800) {
        buf_putc(b, (char)(0xC0 | cp >> 6));
        buf_putc(b, (char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        buf_putc(b, (char)(0xE0 | cp >> 12));
        buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        buf_putc(b, (char)(0x80 | (cp & 0x3F)));
    } else {
        buf_putc(b, (char)(0xF0 | cp >> 18));
        buf_putc(b, (char)(0x80 | ((cp >> 12) & 0x3F)));
        buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3F)));
        buf_putc(b, (char)(0x80 | (cp & 0x3F)));
    }
}

/* Decodes one code point of UTF-8 (Unicode 3.9, table 3-7) into out. */
static int ref_utf8(struct ref *r, struct buf *out)
{
    const unsigned char *p = r->p;
    unsigned c = p[0], cp, n, lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, cp = c & 0x07;
    else
        return ref_fail(r, "invalid UTF-8 lead byte");
    /* The second byte's range is what excludes overlong forms, surrogates
     * and code points past U+10FFFF. */
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if ((size_t)(r->end - p) < n)
        return ref_fail(r, "truncated UTF-8");
    for (unsigned i = 1; i < n; i++) {
        unsigned lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (p[i] < lo_i || p[i] > hi_i)
            return ref_fail(r, "invalid UTF-8 continuation");
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (out)
        put_utf8(out, cp);
    r->p += n;
    return 0;
}

/* A string at r->p (the opening quote); its decoded bytes go to out if given. */
static int ref_string(struct ref *r, struct buf *out)
{
    r->p++;
    for (;;) {
        if (r->p >= r->end)
            return ref_fail(r, "unterminated string");
        unsigned c = *r->p;
        if (c == '"') {
            r->p++;
            return 0;
        }
        if (c < 0x20)
            return ref_fail(r, "control character in string");
        if (c >= 0x80) {
            if (ref_utf8(r, out) < 0)
                return -1;
            continue;
        }
        r->p++;
        if (c != '\\') {
            if (out)
                buf_putc(out, (char)c);
            continue;
        }
        if (r->p >= r->end)
            return ref_fail(r, "unterminated escape");
        c = *r->p++;
        const char *simple = "\"\\/bfnrt", *dec = "\"\\/\b\f\n\r\t";
        const char *hit = c ? strchr(simple, (int)c) : NULL;
        if (hit) {
            if (out)
                buf_putc(out, dec[hit - simple]);
            continue;
        }
        if (c != 'u')
            return ref_fail(r, "invalid escape");
        unsigned u, lo;
        if (ref_hex(r, &u) < 0)
            return ref_fail(r, "invalid \\u escape");
        if (u == 0)
            return ref_fail(r, "\\u0000");
        if (u >= 0xDC00 && u <= 0xDFFF)
            return ref_fail(r, "lone low surrogate");
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u')
                return ref_fail(r, "lone high surrogate");
            r->p += 2;
            if (ref_hex(r, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
                return ref_fail(r, "lone high surrogate");
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (out)
            put_utf8(out, u);
    }
}

static int ref_digits(struct ref *r)
{
    const unsigned char *s = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
        r->p++;
    return r->p > s ? 0 : -1;
}

static int ref_number(struct ref *r)
{
    if (*r->p == '-')
        r->p++;
    if (r->p < r->end && *r->p == '0')
        r->p++;
    else if (ref_digits(r) < 0)
        return ref_fail(r, "number without digits");
    if (r->p < r->end && *r->p == '.') {
        r->p++;
        if (ref_digits(r) < 0)
            return ref_fail(r, "fraction without digits");
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
            r->p++;
        if (ref_digits(r) < 0)
            return ref_fail(r, "exponent without digits");
    }
    return 0;
}

static int ref_value(struct ref *r, int depth);

static int ref_object(struct ref *r, int depth)
{
    struct buf keys[64]; /* enough for fuzz inputs; more keys are only checked for syntax */
    size_t n = 0;
    int rc = -1;
    r->p++;
    ref_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return 0;
    }
    for (;;) {
        ref_ws(r);
        if (r->p >= r->end || *r->p != '"') {
            ref_fail(r, "expected a key");
            goto done;
        }
        struct buf key = {0};
        if (ref_string(r, &key) < 0) {
            buf_free(&key);
            goto done;
        }
        int dup = 0;
        for (size_t i = 0; i < n && !dup; i++)
            dup =
                keys[i].len == key.len && memcmp(buf_cstr(&keys[i]), buf_cstr(&key), key.len) == 0;
        if (dup) {
            buf_free(&key);
            ref_fail(r, "duplicate key");
            goto done;
        }
        if (n < sizeof keys / sizeof keys[0])
            keys[n++] = key;
        else
            buf_free(&key);
        ref_ws(r);
        if (r->p >= r->end || *r->p != ':') {
            ref_fail(r, "expected ':'");
            goto done;
        }
        r->p++;
        if (ref_value(r, depth) < 0)
            goto done;
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            rc = 0;
            goto done;
        }
        ref_fail(r, "expected ',' or '}'");
        goto done;
    }
done:
    for (size_t i = 0; i < n; i++)
        buf_free(&keys[i]);
    return rc;
}

static int ref_array(struct ref *r, int depth)
{
    r->p++;
    ref_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return 0;
    }
    for (;;) {
        if (ref_value(r, depth) < 0)
            return -1;
        if (r->p < r->end && *r->p == ',') {
            r->p++;
            continue;
        }
        if (r->p < r->end && *r->p == ']') {
            r->p++;
            return 0;
        }
        return ref_fail(r, "expected ',' or ']'");
    }
}

static int ref_literal(struct ref *r, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0)
        return ref_fail(r, "invalid literal");
    r->p += n;
    return 0;
}

/* A value with surrounding white space; depth counts the open containers. */
static int ref_value(struct ref *r, int depth)
{
    ref_ws(r);
    if (r->p >= r->end)
        return ref_fail(r, "missing value");
    int rc;
    switch (*r->p) {
    case '{':
    case '[':
        if (depth >= r->max_depth)
            return ref_fail(r, "nesting too deep");
        rc = *r->p == '{' ? ref_object(r, depth + 1) : ref_array(r, depth + 1);
        break;
    case '"': rc = ref_string(r, NULL); break;
    case 't': rc = ref_literal(r, "true"); break;
    case 'f': rc = ref_literal(r, "false"); break;
    case 'n': rc = ref_literal(r, "null"); break;
    default:
        if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))
            rc = ref_number(r);
        else
            rc = ref_fail(r, "unexpected character");
    }
    if (rc == 0)
        ref_ws(r);
    return rc;
}

static int ref_valid(const unsigned char *data, size_t size, int max_depth, const char **why)
{
    struct ref r = {data, data + size, max_depth, NULL};
    int ok = ref_value(&r, 0) == 0 && r.p == r.end;
    if (!ok && !r.why)
        r.why = "trailing data";
    *why = r.why;
    return ok;
}

/* --- the target ------------------------------------------------------------ */

/* Is the text the literal null, with optional white space around it? */
static int is_null(const unsigned char *data, size_t size)
{
    struct ref r = {data, data + size, 1, NULL};
    ref_ws(&r);
    if (ref_literal(&r, "null") < 0)
        return 0;
    ref_ws(&r);
    return r.p == r.end;
}

static void check_depth(const unsigned char *data, size_t size, int depth)
{
    struct json_strict_error err;
    memset(&err, 0, sizeof err);
    json_object *o = json_strict_parse((const char *)data, size, depth, &err);
    const char *why = NULL;
    int ref = ref_valid(data, size, depth, &why);
    FUZZ_CHECK(!o || ref, "json_strict_parse (depth %d) accepted what RFC 8259 rejects: %s", depth,
               why);
    if (!o && ref && is_null(data, size)) {
        /* json-c has no object for null, so NULL is the only answer; but the
         * reason must say what is wrong, not json-c's "success". */
        FUZZ_CHECK(strcmp(err.what, "success") != 0,
                   "top-level null refused with the reason \"%s\"", err.what);
        return;
    }
    FUZZ_CHECK(o || !ref, "json_strict_parse (depth %d) refused valid JSON: %s at byte %zu", depth,
               err.what, err.offset);
    if (!o) {
        FUZZ_CHECK(err.what[0] != '\0', "a refusal without a reason");
        FUZZ_CHECK(err.offset <= size, "error offset %zu past the input (%zu bytes)", err.offset,
                   size);
        return;
    }
    FUZZ_CHECK(memchr(data, '\0', size) == NULL, "accepted input with a NUL byte");

    /* json-c on its own, strict, must agree: the scanner only ever narrows. */
    json_tokener *tok = json_tokener_new_ex(depth + 1);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *plain = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    if (!plain && json_tokener_get_error(tok) == json_tokener_continue)
        plain = json_tokener_parse_ex(tok, "", -1);
    FUZZ_CHECK(plain && json_tokener_get_error(tok) == json_tokener_success,
               "json-c's strict tokener rejects what json_strict_parse accepted: %s",
               json_tokener_error_desc(json_tokener_get_error(tok)));
    FUZZ_CHECK(json_object_equal(o, plain), "the strict tree differs from json-c's own");
    json_object_put(plain);
    json_tokener_free(tok);

    /* What the gateway forwards after editing a body must itself be strict JSON. */
    size_t n = 0;
    const char *text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &n);
    struct json_strict_error err2;
    json_object *again = json_strict_parse(text, n, depth, &err2);
    FUZZ_CHECK(again, "json-c's serialisation does not parse strictly: %s at byte %zu of %.200s",
               err2.what, err2.offset, text);
    FUZZ_CHECK(json_object_equal(o, again),
               "the tree changed in a serialisation round trip: %.200s", text);
    json_object_put(again);
    json_object_put(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_depth(data, size, DEPTH);
    /* A small limit too, as JWT headers use (8): the limit is exact, not off by one. */
    check_depth(data, size, 1 + (int)(size % 8));
    return 0;
}
