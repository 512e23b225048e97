/*
 * fuzz_redact.c - libFuzzer target for app/sanitize.c (redact_text, redact_stream).
 *
 * A stream is redacted piece by piece as events arrive, and a secret may be
 * split across pieces anywhere. The property the relay depends on: whatever
 * the split, the concatenated output of redact_stream equals redact_text of
 * the whole text, and no text ever leaves with a pattern still matching in
 * it. Two redactors are checked on every input: one whose patterns cannot
 * match white space (the stream holds back only the last word) and one with a
 * pattern that can (the stream holds back max_match_chars bytes).
 *
 * Input: byte 0 gives the number of cuts (low 3 bits), the next bytes place
 * them (each a fraction of the text, in 1/256); the rest is the text.
 */
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "sanitize.h"

/* Bounded patterns, each shorter than max_match_chars (64): what the stream
 * redactor documents it can catch across pieces. Short ones let the fuzzer
 * reach matches without guessing 48 characters. */
#define WORD_PATTERNS "\"sk-[a-zA-Z0-9]{48}\", \"AKIA[0-9A-Z]{16}\", \"key-[0-9a-f]{6}\""
#define SPACE_PATTERN "\"Bearer [A-Za-z0-9]{8}\""

struct target {
    struct cfg *cfg;
    struct redactor *r;
    regex_t *res; /* the same patterns, for the leak check */
    size_t n;
};

static struct target words, spaces;

static void target_init(struct target *t, const char *patterns)
{
    struct buf text = {0};
    buf_printf(&text,
               "{\"redaction\": {\"patterns\": [%s], \"replacement\": \"[REDACTED]\", "
               "\"max_match_chars\": 64}, " FUZZ_BACKENDS "}",
               patterns);
    t->cfg = fuzz_cfg(buf_cstr(&text));
    buf_free(&text);
    t->r = redactor_new(t->cfg);
    FUZZ_CHECK(t->r, "redactor_new failed on the harness's patterns");
    t->n = t->cfg->redaction.n_patterns;
    t->res = calloc(t->n, sizeof *t->res);
    for (size_t i = 0; i < t->n; i++)
        FUZZ_CHECK(regcomp(&t->res[i], t->cfg->redaction.patterns[i], REG_EXTENDED) == 0,
                   "pattern %s", t->cfg->redaction.patterns[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    target_init(&words, WORD_PATTERNS);
    target_init(&spaces, WORD_PATTERNS ", " SPACE_PATTERN);
    return 0;
}

/* The first pattern still matching in s (n bytes, any NUL-separated part), or NULL. */
static const char *leaked(const struct target *t, const char *s, size_t n)
{
    struct buf part = {0};
    const char *hit = NULL;
    for (size_t start = 0; start <= n && !hit;) {
        const char *nul = memchr(s + start, '\0', n - start);
        size_t end = nul ? (size_t)(nul - s) : n;
        buf_reset(&part);
        buf_append(&part, s + start, end - start);
        for (size_t i = 0; i < t->n && !hit; i++)
            if (regexec(&t->res[i], buf_cstr(&part), 0, NULL, 0) == 0)
                hit = t->cfg->redaction.patterns[i];
        start = end + 1;
    }
    buf_free(&part);
    return hit;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static void check(const struct target *t, const char *text, size_t len, const size_t *cuts,
                  size_t n_cuts)
{
    struct buf whole = {0}, streamed = {0}, pending = {0};
    int n_whole = redact_text(t->r, text, len, &whole);
    FUZZ_CHECK(n_whole >= 0, "redact_text failed");

    size_t at = 0;
    int n_stream = 0;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        int n = redact_stream(t->r, &pending, text + at, end - at, 0, &streamed);
        FUZZ_CHECK(n >= 0, "redact_stream failed");
        n_stream += n;
        /* What is held back is bounded: max_match_chars, the rest of a UTF-8
         * sequence, and the start of a match still arriving (shorter than
         * max_match_chars too). */
        FUZZ_CHECK(pending.len <= 2 * (size_t)t->cfg->redaction.max_match_chars + 3,
                   "%zu bytes held back", pending.len);
        at = end;
    }
    int n = redact_stream(t->r, &pending, "", 0, 1, &streamed);
    FUZZ_CHECK(n >= 0, "the final redact_stream failed");
    n_stream += n;
    FUZZ_CHECK(pending.len == 0, "the final call left %zu bytes held back", pending.len);

    const char *hit = leaked(t, whole.data ? whole.data : "", whole.len);
    FUZZ_CHECK(!hit, "redact_text let a match of %s through", hit);
    hit = leaked(t, streamed.data ? streamed.data : "", streamed.len);
    FUZZ_CHECK(!hit, "redact_stream let a match of %s through (input has %s NUL byte)", hit,
               memchr(text, '\0', len) ? "a" : "no");
    if (!memchr(text, '\0', len)) {
        FUZZ_CHECK(streamed.len == whole.len &&
                       memcmp(buf_cstr(&streamed), buf_cstr(&whole), whole.len) == 0,
                   "streamed output (%zu bytes, %zu cuts) differs from redact_text (%zu bytes):\n"
                   "  stream: %.300s\n  whole:  %.300s",
                   streamed.len, n_cuts, whole.len, buf_cstr(&streamed), buf_cstr(&whole));
        FUZZ_CHECK(n_stream == n_whole, "%d matches streamed, %d whole", n_stream, n_whole);
    }
    buf_free(&whole);
    buf_free(&streamed);
    buf_free(&pending);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n_cuts = data[0] & 7;
    if (size < 1 + n_cuts)
        return 0;
    const uint8_t *frac = data + 1;
    /* sanitize.h takes (text, len) followed by a NUL, as buf and json-c
     * strings are; NUL bytes inside the text are part of it. */
    size_t len = size - 1 - n_cuts;
    char *text = malloc(len + 1);
    if (len)
        memcpy(text, data + 1 + n_cuts, len);
    text[len] = '\0';
    size_t cuts[8];
    for (size_t i = 0; i < n_cuts; i++)
        cuts[i] = (size_t)frac[i] * len / 256;
    qsort(cuts, n_cuts, sizeof cuts[0], cmp_size);
    check(&words, text, len, cuts, n_cuts);
    check(&spaces, text, len, cuts, n_cuts);
    free(text);
    return 0;
}
