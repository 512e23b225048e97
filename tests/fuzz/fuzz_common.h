/*
 * fuzz_common.h - helpers shared by the libFuzzer targets under tests/fuzz/.
 *
 * Each target is one .c file built by tests/fuzz/run.sh together with the
 * application's objects. A broken invariant is reported with FUZZ_CHECK,
 * which prints what was expected and aborts, so libFuzzer keeps the input as
 * a crash artifact exactly as it does for a sanitizer report.
 *
 * Everything here is static: each target includes it once and no target
 * links another's code.
 */
#ifndef AIGW_FUZZ_COMMON_H
#define AIGW_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"

/* Aborts with a message when an invariant does not hold. */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "\nFUZZ INVARIANT BROKEN at %s:%d: %s\n  ", __FILE__, __LINE__,        \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/*
 * Whether the known, reported issue id may be skipped in this run: a finding
 * stops libFuzzer at once, so while its fix is pending it can be listed in
 * FUZZ_ALLOW_KNOWN (comma-separated ids) to keep exploring past it. run.sh
 * never sets it: by default every finding fails.
 */
static inline int fuzz_known(const char *id)
{
    const char *list = getenv("FUZZ_ALLOW_KNOWN");
    size_t n = strlen(id);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, id, n) == 0)
            return 1;
        p = end ? end + 1 : p + len;
    }
    return 0;
}

/* One backend: the least a configuration must have to load. */
#define FUZZ_BACKENDS                                                                              \
    "\"backends\": [{\"name\": \"east\", \"url\": \"https://east.example.com\", "                  \
    "\"deployments\": {\"gpt-4o\": \"gpt-4o-prod\", \"text-embedding-3-small\": \"emb\"}}]"

/* Loads a configuration the target depends on; a harness bug if it fails. */
static inline struct cfg *fuzz_cfg(const char *text)
{
    struct buf problems = {0};
    struct cfg *c = cfg_load_string("fuzz.json", text, &problems, NULL);
    if (!c) {
        fprintf(stderr, "fuzz harness: the built-in configuration does not load:\n%s",
                buf_cstr(&problems));
        abort();
    }
    buf_free(&problems);
    return c;
}

/* A NUL-terminated copy of the fuzzer's bytes (the caller frees it): the
 * fuzzer's buffer has no terminator, and functions that take C strings must
 * not read past it. */
static inline char *fuzz_strndup(const unsigned char *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Unpadded base64url, as JWTs use. */
static inline void fuzz_b64url(const unsigned char *p, size_t n, struct buf *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        buf_putc(out, tbl[v >> 18]);
        buf_putc(out, tbl[(v >> 12) & 63]);
        buf_putc(out, tbl[(v >> 6) & 63]);
        buf_putc(out, tbl[v & 63]);
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        buf_putc(out, tbl[v >> 18]);
        buf_putc(out, tbl[(v >> 12) & 63]);
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        buf_putc(out, tbl[v >> 18]);
        buf_putc(out, tbl[(v >> 12) & 63]);
        buf_putc(out, tbl[(v >> 6) & 63]);
    }
}

#endif
