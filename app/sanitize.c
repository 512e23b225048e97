/*
 * sanitize.c - redaction of secrets in responses (see sanitize.h).
 */
#include "sanitize.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>

struct redactor {
    regex_t *res;
    char **prefix; /* per pattern: the literal every match starts with, or NULL */
    size_t n;
    char *replacement;
    size_t hold;    /* bytes a stream holds back: the longest secret we must catch */
    int words_only; /* no pattern can match white space: holding the last word is enough */
};

/* Can this POSIX ERE match a white-space character? Conservative: a literal
 * space or tab, ".", a negated bracket, or a space class all count. */
static int may_match_space(const char *re)
{
    for (const char *p = re; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            if (*p == 's' || *p == ' ' || *p == 't')
                return 1;
            continue;
        }
        if (*p == ' ' || *p == '\t' || *p == '.')
            return 1;
        if (*p == '[' && p[1] == '^')
            return 1;
        if (strncmp(p, "[:space:]", 9) == 0 || strncmp(p, "[:blank:]", 9) == 0 ||
            strncmp(p, "[:print:]", 9) == 0)
            return 1;
    }
    return 0;
}

/* The literal text every match of the POSIX ERE re starts with, as a new
 * string, or NULL when there is none (the pattern starts with a special
 * character, or has an alternation anywhere, which could offer another
 * start). A literal followed by a quantifier is optional, so it is dropped.
 * Most secret patterns start with one (sk-, AKIA, ghp_): then a text without
 * it needs no regexec at all, and a text with it needs one from there. */
static char *literal_prefix(const char *re)
{
    int depth = 0; /* inside a bracket expression */
    for (const char *p = re; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (depth) {
            if (*p == ']')
                depth = 0;
            continue;
        }
        if (*p == '[') {
            depth = 1;
            if (p[1] == '^')
                p++;
            if (p[1] == ']')
                p++; /* a leading ] is a member */
            continue;
        }
        if (*p == '|')
            return NULL;
    }
    size_t n = strcspn(re, ".[]()*+?{}|^$\\");
    if (n && (re[n] == '*' || re[n] == '?' || re[n] == '{'))
        n--; /* "ab*", "ab?", "ab{0,2}": the b may be absent ("ab+" keeps it) */
    if (n == 0)
        return NULL;
    return strndup(re, n);
}

struct redactor *redactor_new(const struct cfg *cfg)
{
    struct redactor *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    size_t slots = cfg->redaction.n_patterns ? cfg->redaction.n_patterns : 1;
    r->res = calloc(slots, sizeof *r->res);
    r->prefix = calloc(slots, sizeof *r->prefix);
    r->replacement = strdup(cfg->redaction.replacement);
    r->hold = (size_t)cfg->redaction.max_match_chars;
    r->words_only = 1;
    for (size_t i = 0; i < cfg->redaction.n_patterns; i++)
        if (may_match_space(cfg->redaction.patterns[i]))
            r->words_only = 0;
    if (!r->res || !r->prefix || !r->replacement) {
        redactor_free(r);
        return NULL;
    }
    for (size_t i = 0; i < cfg->redaction.n_patterns; i++) {
        if (regcomp(&r->res[i], cfg->redaction.patterns[i], REG_EXTENDED) != 0) {
            redactor_free(r);
            return NULL;
        }
        r->n++;
        r->prefix[i] = literal_prefix(cfg->redaction.patterns[i]);
    }
    return r;
}

void redactor_free(struct redactor *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        regfree(&r->res[i]);
        free(r->prefix[i]);
    }
    free(r->res);
    free(r->prefix);
    free(r->replacement);
    free(r);
}

/* The earliest match of any pattern in s[0, len), as [*so, *eo); 0 when none.
 * REG_STARTEND bounds the search by length, so a NUL byte inside the text
 * neither ends the search (hiding a secret behind it) nor is needed after it. */
static int first_match(const struct redactor *r, const char *s, size_t len, int notbol, size_t *so,
                       size_t *eo)
{
    int found = 0;
    for (size_t i = 0; i < r->n; i++) {
        regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)len};
        if (r->prefix[i]) {
            /* No match can start before the first occurrence of the prefix. */
            const char *at = memmem(s, len, r->prefix[i], strlen(r->prefix[i]));
            if (!at)
                continue;
            m.rm_so = (regoff_t)(at - s);
        }
        if (regexec(&r->res[i], s, 1, &m, REG_STARTEND | (notbol ? REG_NOTBOL : 0)) != 0 ||
            m.rm_eo <= m.rm_so)
            continue;
        if (!found || (size_t)m.rm_so < *so || ((size_t)m.rm_so == *so && (size_t)m.rm_eo > *eo)) {
            *so = (size_t)m.rm_so;
            *eo = (size_t)m.rm_eo;
            found = 1;
        }
    }
    return found;
}

/* Redacts text[0, len) into out. When limit is not
 * NULL, stops before the first match that extends past *limit and sets *limit
 * to where the unprocessed tail starts. */
static int redact_range(const struct redactor *r, const char *text, size_t len, size_t *limit,
                        struct buf *out)
{
    size_t pos = 0;
    int count = 0;
    while (pos < len) {
        size_t so, eo;
        if (!first_match(r, text + pos, len - pos, pos > 0, &so, &eo))
            break;
        so += pos;
        eo += pos;
        if (limit && eo > *limit && so < len) {
            /* Might be a longer secret still arriving: keep it for later. */
            if (so < *limit)
                *limit = so;
            break;
        }
        if (buf_append(out, text + pos, so - pos) < 0 || buf_puts(out, r->replacement) < 0)
            return -1;
        count++;
        pos = eo;
    }
    size_t stop = limit ? *limit : len;
    if (stop < pos)
        stop = pos;
    if (limit)
        *limit = stop;
    if (buf_append(out, text + pos, stop - pos) < 0)
        return -1;
    return count;
}

int redact_text(const struct redactor *r, const char *text, size_t len, struct buf *out)
{
    return redact_range(r, text, len, NULL, out);
}

static int is_space_byte(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

int redact_stream(const struct redactor *r, struct buf *pending, const char *piece, size_t len,
                  int final, struct buf *out)
{
    if (len && buf_append(pending, piece, len) < 0)
        return -1;
    if (pending->len == 0)
        return 0;
    if (final) {
        int n = redact_range(r, pending->data, pending->len, NULL, out);
        buf_reset(pending);
        return n;
    }
    /* Hold back the last word: a secret has no white space in it, so only
     * text after the last space may be the start of one still arriving.
     * A word longer than hold bytes is cut to its last hold bytes. */
    size_t limit = pending->len;
    if (r->words_only) {
        while (limit > 0 && !is_space_byte(pending->data[limit - 1]))
            limit--;
        if (pending->len - limit > r->hold)
            limit = pending->len - r->hold;
    } else {
        /* A pattern may span words: hold back the longest match there can be. */
        limit = pending->len > r->hold ? pending->len - r->hold : 0;
    }
    /* Never split a UTF-8 sequence between what is sent and what is held; a
     * sequence has at most three continuation bytes, so invalid input cannot
     * make the whole stream wait. */
    for (int back = 0; back < 3 && limit > 0 && limit < pending->len &&
                       ((unsigned char)pending->data[limit] & 0xC0) == 0x80;
         back++)
        limit--;
    if (limit == 0)
        return 0;
    int n = redact_range(r, pending->data, pending->len, &limit, out);
    if (n < 0)
        return -1;
    buf_consume(pending, limit);
    return n;
}
