/*
 * json_strict.h - RFC 8259 checks that json-c does not make.
 *
 * json_strict_check runs over the raw body before json-c parses it and rejects
 * what a lenient parser would let through: invalid UTF-8, lone surrogates, NUL
 * in strings, NaN/Infinity, leading zeros, nesting past a limit, trailing data.
 * It also counts the keys of every object in document order, so that duplicate
 * keys (which json-c silently collapses) are found by comparing the counts
 * with the parsed tree: json_strict_parse does both.
 */
#ifndef AIGW_JSON_STRICT_H
#define AIGW_JSON_STRICT_H

#include <json-c/json.h>
#include <stddef.h>

struct json_strict_error {
    size_t offset;  /* byte offset of the problem */
    char what[128]; /* what is wrong, for the error message */
};

/* Checks text (n bytes) without building a tree (duplicate keys are not
 * looked for): 0 when it is one valid JSON value, else -1 with err set. */
int json_strict_valid(const char *text, size_t n, int max_depth, struct json_strict_error *err);

/* Parses text (n bytes) strictly. Returns a new json-c tree the caller releases
 * with json_object_put, or NULL with err filled in. */
json_object *json_strict_parse(const char *text, size_t n, int max_depth,
                               struct json_strict_error *err);

#endif
