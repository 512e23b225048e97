/*
 * test_chunk.c - unit tests for app/chunk.c: reading stream events in place.
 *
 * The in-place path must find every content string of the common event and
 * must say 0 (leave the event to the json-c path) for anything it does not
 * fully understand: usage objects, finishing choices, duplicate or escaped
 * keys, invalid JSON, trailing bytes, too deep nesting. Decoding undoes every
 * JSON escape, surrogate pairs included, and refuses lone surrogates.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "chunk.h"

static struct chunk_scan cs;

static int scan(const char *text)
{
    memset(&cs, 0xAB, sizeof cs);
    return chunk_scan(text, strlen(text), &cs);
}

static void assert_content(const char *text, int k, const char *want_token)
{
    size_t at = cs.choice[k].content_at, end = cs.choice[k].content_end;
    assert_true(end > at && end <= strlen(text));
    assert_int_equal(end - at, strlen(want_token));
    assert_memory_equal(text + at, want_token, end - at);
}

static void test_common_event(void **state)
{
    (void)state;
    const char *e =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
        "\"content\":\"Hello \\\"you\\\"\"},\"logprobs\":null,\"finish_reason\":null}],"
        "\"usage\":null}";
    assert_int_equal(scan(e), 1);
    assert_int_equal(cs.n, 1);
    assert_int_equal(cs.choice[0].index, 0);
    assert_content(e, 0, "\"Hello \\\"you\\\"\"");
}

static void test_several_choices_in_order(void **state)
{
    (void)state;
    const char *e = " {\"choices\": [ {\"delta\": {\"content\": \"a\"}, \"index\": 2},"
                    "{\"index\":0,\"delta\":{\"content\":\"\"}} ] }\n";
    assert_int_equal(scan(e), 1);
    assert_int_equal(cs.n, 2);
    assert_int_equal(cs.choice[0].index, 2);
    assert_content(e, 0, "\"a\"");
    assert_int_equal(cs.choice[1].index, 0);
    assert_content(e, 1, "\"\"");
}

static void test_left_to_the_json_c_path(void **state)
{
    (void)state;
    static const char *const other[] = {
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1}}", /* usage object */
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],\"usage\":{}}",
        "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}", /* finishing */
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}", /* no content */
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":null}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}", /* dup */
        "{\"choices\":[{\"index\":0,\"index\":1,\"delta\":{\"content\":\"a\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"choices\":[]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"cont\\u0065nt\":\"sk-secret\"}}]}", /* escaped key
                                                                                      */
        "{\"ch\\u006fices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}",
        "{\"choices\":[{\"index\":-1,\"delta\":{\"content\":\"a\"}}]}", /* bad index */
        "{\"choices\":[{\"index\":128,\"delta\":{\"content\":\"a\"}}]}",
        "{\"choices\":[{\"index\":1.5,\"delta\":{\"content\":\"a\"}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]} x",   /* trailing bytes */
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]",      /* truncated */
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\tb\"}}]}",  /* raw control byte */
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\qb\"}}]}", /* bad escape */
        "{\"choices\":[{\"index\":01,\"delta\":{\"content\":\"a\"}}]}",    /* leading zero */
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],}",    /* trailing comma */
        "{\"choices\":{\"index\":0}}",                                     /* not an array */
        "[{\"choices\":[]}]",
        "{\"choices\":[]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"x\":NaN}",
        "",
        "{}",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        if (scan(other[i]) != 0)
            print_error("taken in place: %s\n", other[i]);
        assert_int_equal(chunk_scan(other[i], strlen(other[i]), &cs), 0);
    }
}

static void test_depth_is_bounded(void **state)
{
    (void)state;
    char e[400];
    int n =
        snprintf(e, sizeof e, "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"x\":");
    for (int i = 0; i < 40; i++)
        e[n++] = '[';
    for (int i = 0; i < 40; i++)
        e[n++] = ']';
    e[n++] = '}';
    e[n] = '\0';
    assert_int_equal(scan(e), 0);
}

static void assert_decodes(const char *token, const char *want, size_t want_len)
{
    struct buf out = {0};
    assert_int_equal(chunk_string_decode(token, 0, strlen(token), &out), 0);
    assert_int_equal(out.len, want_len);
    assert_memory_equal(out.data, want, want_len);
    buf_free(&out);
}

static void test_decoding(void **state)
{
    (void)state;
    assert_decodes("\"plain\"", "plain", 5);
    assert_decodes("\"\"", "", 0);
    assert_decodes("\"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\"", "a\"b\\c/d\n\t\r\b\f", 12);
    assert_decodes("\"\\u00e9\\u20ac\"", "\xc3\xa9\xe2\x82\xac", 5);
    assert_decodes("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4); /* a surrogate pair */
    assert_decodes("\"a\\u0000b\"", "a\0b", 3);
    assert_decodes("\"h\xc3\xa9\"", "h\xc3\xa9", 3); /* UTF-8 passes through */
    struct buf out = {0};
    static const char *const bad[] = {"\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"", "\"\\u12\"",
                                      "\"\\x\"",     "\"abc",       "abc\"",        "\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(chunk_string_decode(bad[i], 0, strlen(bad[i]), &out), -1);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_common_event),
        cmocka_unit_test(test_several_choices_in_order),
        cmocka_unit_test(test_left_to_the_json_c_path),
        cmocka_unit_test(test_depth_is_bounded),
        cmocka_unit_test(test_decoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
