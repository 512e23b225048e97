/*
 * chunk.c - a strict, allocation-free scan of one stream event (see chunk.h).
 *
 * A recursive-descent check of RFC 8259 over the bytes, with a depth limit,
 * that remembers offsets along one path only: choices[i].index,
 * choices[i].delta.content, choices[i].finish_reason and usage. Whatever it
 * is unsure of makes it answer 0, never a guess: the caller then takes the
 * json-c path, as every event took before.
 */
#include "chunk.h"

#include <string.h>

#define SCAN_MAX_DEPTH 32

struct scanner {
    const char *s;
    size_t n, i;
    int depth;
};

static void skip_ws(struct scanner *c)
{
    while (c->i < c->n &&
           (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

static int hex_value(char h)
{
    return h >= '0' && h <= '9'   ? h - '0'
           : h >= 'a' && h <= 'f' ? h - 'a' + 10
           : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                  : -1;
}

/* A string token at c->i; its extent in [*at, *end). *escaped when it holds
 * a backslash. 0 or -1. */
static int string_token(struct scanner *c, size_t *at, size_t *end, int *escaped)
{
    if (c->i >= c->n || c->s[c->i] != '"')
        return -1;
    *at = c->i++;
    *escaped = 0;
    while (c->i < c->n) {
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch == '"') {
            *end = ++c->i;
            return 0;
        }
        if (ch < 0x20)
            return -1;
        if (ch == '\\') {
            *escaped = 1;
            if (++c->i >= c->n)
                return -1;
            char e = c->s[c->i];
            if (e == 'u') {
                if (c->i + 4 >= c->n)
                    return -1;
                for (int k = 1; k <= 4; k++)
                    if (hex_value(c->s[c->i + k]) < 0)
                        return -1;
                c->i += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                return -1;
            }
        }
        c->i++;
    }
    return -1;
}

/* A number token; *small gets its value when it is a whole number 0..999. */
static int number_token(struct scanner *c, int *small)
{
    size_t start = c->i;
    long v = 0;
    int whole = 1;
    if (c->i < c->n && c->s[c->i] == '-') {
        c->i++;
        whole = 0;
    }
    if (c->i >= c->n || c->s[c->i] < '0' || c->s[c->i] > '9')
        return -1;
    if (c->s[c->i] == '0' && c->i + 1 < c->n && c->s[c->i + 1] >= '0' && c->s[c->i + 1] <= '9')
        return -1; /* a leading zero */
    while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9') {
        if (v < 1000)
            v = v * 10 + (c->s[c->i] - '0');
        c->i++;
    }
    if (c->i < c->n && c->s[c->i] == '.') {
        whole = 0;
        if (++c->i >= c->n || c->s[c->i] < '0' || c->s[c->i] > '9')
            return -1;
        while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9')
            c->i++;
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        whole = 0;
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-'))
            c->i++;
        if (c->i >= c->n || c->s[c->i] < '0' || c->s[c->i] > '9')
            return -1;
        while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9')
            c->i++;
    }
    if (small)
        *small = whole && v < 1000 && c->i - start <= 3 ? (int)v : -1;
    return 0;
}

static int literal(struct scanner *c, const char *word)
{
    size_t n = strlen(word);
    if (c->n - c->i < n || memcmp(c->s + c->i, word, n) != 0)
        return -1;
    c->i += n;
    return 0;
}

static int skip_value(struct scanner *c);

/* Walks the members of the object at c->i, calling member(c, key, keylen,
 * arg) with c->i at each value, which it must consume. A key with an escape
 * in it is refused: it could name a key of interest in disguise. */
static int each_member(struct scanner *c,
                       int (*member)(struct scanner *, const char *, size_t, void *), void *arg)
{
    if (c->s[c->i] != '{' || ++c->depth > SCAN_MAX_DEPTH)
        return -1;
    c->i++;
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == '}') {
        c->i++;
        c->depth--;
        return 0;
    }
    for (;;) {
        size_t at, end;
        int escaped;
        skip_ws(c);
        if (string_token(c, &at, &end, &escaped) < 0 || escaped)
            return -1;
        skip_ws(c);
        if (c->i >= c->n || c->s[c->i] != ':')
            return -1;
        c->i++;
        skip_ws(c);
        if (c->i >= c->n)
            return -1;
        int rc = member ? member(c, c->s + at + 1, end - at - 2, arg) : skip_value(c);
        if (rc < 0)
            return -1;
        skip_ws(c);
        if (c->i < c->n && c->s[c->i] == ',') {
            c->i++;
            continue;
        }
        if (c->i < c->n && c->s[c->i] == '}') {
            c->i++;
            c->depth--;
            return 0;
        }
        return -1;
    }
}

/* Walks the elements of the array at c->i, calling element(c, arg) with c->i
 * at each, which it must consume. */
static int each_element(struct scanner *c, int (*element)(struct scanner *, void *), void *arg)
{
    if (c->s[c->i] != '[' || ++c->depth > SCAN_MAX_DEPTH)
        return -1;
    c->i++;
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == ']') {
        c->i++;
        c->depth--;
        return 0;
    }
    for (;;) {
        skip_ws(c);
        if (c->i >= c->n || element(c, arg) < 0)
            return -1;
        skip_ws(c);
        if (c->i < c->n && c->s[c->i] == ',') {
            c->i++;
            continue;
        }
        if (c->i < c->n && c->s[c->i] == ']') {
            c->i++;
            c->depth--;
            return 0;
        }
        return -1;
    }
}

static int skip_element(struct scanner *c, void *arg)
{
    (void)arg;
    return skip_value(c);
}

static int skip_member(struct scanner *c, const char *key, size_t n, void *arg)
{
    (void)key, (void)n, (void)arg;
    return skip_value(c);
}

static int skip_value(struct scanner *c)
{
    if (c->i >= c->n)
        return -1;
    size_t at, end;
    int escaped;
    switch (c->s[c->i]) {
    case '{': return each_member(c, skip_member, NULL);
    case '[': return each_element(c, skip_element, NULL);
    case '"': return string_token(c, &at, &end, &escaped);
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    default: return number_token(c, NULL);
    }
}

static int key_is(const char *key, size_t n, const char *want)
{
    return strlen(want) == n && memcmp(key, want, n) == 0;
}

/* One choice, as the scan reads it. */
struct choice_read {
    int seen_index, seen_delta, seen_finish, seen_content;
    struct chunk_choice *out;
};

static int delta_member(struct scanner *c, const char *key, size_t n, void *arg)
{
    struct choice_read *r = arg;
    if (!key_is(key, n, "content"))
        return skip_value(c);
    int escaped;
    if (r->seen_content++ || c->s[c->i] != '"')
        return -1; /* repeated, or not a string (null: the json-c path) */
    return string_token(c, &r->out->content_at, &r->out->content_end, &escaped);
}

static int choice_member(struct scanner *c, const char *key, size_t n, void *arg)
{
    struct choice_read *r = arg;
    if (key_is(key, n, "index")) {
        int v;
        if (r->seen_index++ || number_token(c, &v) < 0 || v < 0 || v > 127)
            return -1;
        r->out->index = v;
        return 0;
    }
    if (key_is(key, n, "delta")) {
        if (r->seen_delta++ || c->s[c->i] != '{')
            return -1;
        return each_member(c, delta_member, r);
    }
    if (key_is(key, n, "finish_reason")) {
        /* A finishing choice flushes held-back text: the json-c path. */
        if (r->seen_finish++)
            return -1;
        return literal(c, "null");
    }
    return skip_value(c);
}

struct top_read {
    int seen_choices, seen_usage;
    struct chunk_scan *out;
};

/* One element of choices: an object with a content string. */
static int choice_element(struct scanner *c, void *arg)
{
    struct top_read *t = arg;
    if (t->out->n == CHUNK_MAX_CHOICES || c->s[c->i] != '{')
        return -1;
    struct choice_read r = {.out = &t->out->choice[t->out->n]};
    memset(r.out, 0, sizeof *r.out);
    if (each_member(c, choice_member, &r) < 0 || !r.seen_content)
        return -1;
    t->out->n++;
    return 0;
}

static int top_member(struct scanner *c, const char *key, size_t n, void *arg)
{
    struct top_read *t = arg;
    if (key_is(key, n, "usage")) {
        if (t->seen_usage++)
            return -1;
        return literal(c, "null"); /* a usage object: the json-c path reads it */
    }
    if (!key_is(key, n, "choices"))
        return skip_value(c);
    if (t->seen_choices++ || c->s[c->i] != '[')
        return -1;
    return each_element(c, choice_element, t);
}

int chunk_scan(const char *text, size_t len, struct chunk_scan *out)
{
    struct scanner c = {.s = text, .n = len};
    struct top_read t = {.out = out};
    out->n = 0;
    skip_ws(&c);
    if (c.i >= c.n || text[c.i] != '{' || each_member(&c, top_member, &t) < 0)
        return 0;
    skip_ws(&c);
    return c.i == c.n && t.seen_choices && out->n > 0;
}

/* Appends code point cp as UTF-8. */
static int put_utf8(struct buf *out, unsigned cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_append(out, b, n);
}

static int hex4(const char *p)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hex_value(p[k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

int chunk_string_decode(const char *text, size_t at, size_t end, struct buf *out)
{
    buf_reset(out);
    if (end < at + 2 || text[at] != '"' || text[end - 1] != '"')
        return -1;
    size_t i = at + 1, stop = end - 1;
    while (i < stop) {
        size_t run = i;
        while (run < stop && text[run] != '\\')
            run++;
        if (run > i && buf_append(out, text + i, run - i) < 0)
            return -1;
        i = run;
        if (i >= stop)
            break;
        if (i + 1 >= stop)
            return -1;
        char e = text[i + 1];
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *k = e ? strchr(from, e) : NULL;
        if (k) {
            if (buf_putc(out, to[k - from]) < 0)
                return -1;
            i += 2;
            continue;
        }
        if (e != 'u' || i + 6 > stop)
            return -1;
        int cp = hex4(text + i + 2);
        i += 6;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            /* A high surrogate must be followed by a low one. */
            if (i + 6 > stop || text[i] != '\\' || text[i + 1] != 'u')
                return -1;
            int lo = hex4(text + i + 2);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return -1;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        } else if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) {
            return -1; /* a lone low surrogate: the json-c path decides */
        }
        if (put_utf8(out, (unsigned)cp) < 0)
            return -1;
    }
    if (!out->data)
        buf_append(out, "", 0);
    return 0;
}
