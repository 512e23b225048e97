/*
 * test_err.c - unit tests for app/err.c: the one table of gateway errors.
 *
 * Covers the HTTP contract (the README's HTTP API section) that SDKs and callers
 * depend on: every enum aigw_err value maps to the documented HTTP status,
 * OpenAI error type and code string; codes are unique; every error has a
 * message; values outside the enum fall back to internal_error.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "err.h"

struct expected {
    enum aigw_err err;
    int status;
    const char *code;
    const char *type;
};

/* The HTTP contract: 400 invalid request, 401 unauthenticated, 403 forbidden role or
 * budget exhausted, 404, 405, 409 exists (admin API), 413, 415, 429 rate limited, 502 backend
 * failed, 503 every breaker open or no OpenID keys to check a token with, 504 deadline. Types are
 * OpenAI's. */
static const struct expected table[] = {
    {AIGW_ERR_INVALID_JSON, 400, "invalid_json", "invalid_request_error"},
    {AIGW_ERR_MISSING_FIELD, 400, "missing_field", "invalid_request_error"},
    {AIGW_ERR_INVALID_VALUE, 400, "invalid_value", "invalid_request_error"},
    {AIGW_ERR_CONTENT_TOO_LONG, 400, "content_too_long", "invalid_request_error"},
    {AIGW_ERR_TOO_MANY_MESSAGES, 400, "too_many_messages", "invalid_request_error"},
    {AIGW_ERR_PROMPT_INJECTION, 400, "prompt_injection_detected", "invalid_request_error"},
    {AIGW_ERR_BODY_TOO_LARGE, 413, "body_too_large", "invalid_request_error"},
    {AIGW_ERR_UNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type", "invalid_request_error"},
    {AIGW_ERR_METHOD_NOT_ALLOWED, 405, "method_not_allowed", "invalid_request_error"},
    {AIGW_ERR_NOT_FOUND, 404, "not_found", "invalid_request_error"},
    {AIGW_ERR_MODEL_NOT_FOUND, 404, "model_not_found", "invalid_request_error"},
    {AIGW_ERR_INVALID_TOKEN, 401, "invalid_token", "authentication_error"},
    {AIGW_ERR_INVALID_API_KEY, 401, "invalid_api_key", "authentication_error"},
    {AIGW_ERR_FORBIDDEN, 403, "forbidden", "permission_error"},
    {AIGW_ERR_RATE_LIMITED, 429, "rate_limit_exceeded", "rate_limit_error"},
    {AIGW_ERR_TOKENS_RATE_LIMITED, 429, "tokens_rate_limit_exceeded", "rate_limit_error"},
    {AIGW_ERR_BUDGET_EXCEEDED, 403, "budget_exceeded", NULL},
    {AIGW_ERR_ALREADY_EXISTS, 409, "already_exists", "invalid_request_error"},
    {AIGW_ERR_CLIENT_CLOSED, 499, "client_closed_request", "invalid_request_error"},
    {AIGW_ERR_BACKEND_UNAVAILABLE, 503, "backend_unavailable", "server_error"},
    {AIGW_ERR_BACKEND_ERROR, 502, "backend_error", "server_error"},
    {AIGW_ERR_DEADLINE, 504, "deadline_exceeded", "server_error"},
    {AIGW_ERR_AUTH_UNAVAILABLE, 503, "auth_unavailable", "server_error"},
    {AIGW_ERR_STORE_UNAVAILABLE, 503, "store_unavailable", "server_error"},
    {AIGW_ERR_INTERNAL, 500, "internal_error", "server_error"},
};

#define N_TABLE (sizeof table / sizeof table[0])

static void test_every_error_has_documented_status_and_code(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_TABLE; i++) {
        const struct aigw_err_info *e = aigw_err_info(table[i].err);
        assert_non_null(e);
        if (e->http_status != table[i].status || strcmp(e->code, table[i].code) != 0)
            print_error("enum %d: got %d %s, want %d %s\n", table[i].err, e->http_status, e->code,
                        table[i].status, table[i].code);
        assert_int_equal(e->http_status, table[i].status);
        assert_string_equal(e->code, table[i].code);
        if (table[i].type)
            assert_string_equal(e->type, table[i].type);
    }
}

static void test_table_covers_the_whole_enum(void **state)
{
    (void)state;
    /* one row above per error value: a new value needs a documented code */
    assert_int_equal(N_TABLE, AIGW_ERR__COUNT - 1);
    for (int v = AIGW_ERR_INVALID_JSON; v < AIGW_ERR__COUNT; v++) {
        int found = 0;
        for (size_t i = 0; i < N_TABLE; i++)
            found += (int)table[i].err == v;
        assert_int_equal(found, 1);
    }
}

static void test_every_error_has_type_and_message(void **state)
{
    (void)state;
    for (int v = AIGW_ERR_INVALID_JSON; v < AIGW_ERR__COUNT; v++) {
        const struct aigw_err_info *e = aigw_err_info((enum aigw_err)v);
        assert_non_null(e->type);
        assert_non_null(e->code);
        assert_non_null(e->message);
        assert_true(e->type[0] != '\0');
        assert_true(e->message[0] != '\0');
        assert_in_range(e->http_status, 400, 599);
        /* codes are snake_case identifiers SDKs can match on */
        for (const char *c = e->code; *c; c++)
            assert_true((*c >= 'a' && *c <= 'z') || *c == '_');
    }
}

static void test_codes_are_unique(void **state)
{
    (void)state;
    for (int a = AIGW_ERR_INVALID_JSON; a < AIGW_ERR__COUNT; a++)
        for (int b = a + 1; b < AIGW_ERR__COUNT; b++)
            assert_string_not_equal(aigw_err_info((enum aigw_err)a)->code,
                                    aigw_err_info((enum aigw_err)b)->code);
}

static void test_status_classes(void **state)
{
    (void)state;
    /* client errors are 4xx, gateway/backend failures 5xx */
    for (int v = AIGW_ERR_INVALID_JSON; v <= AIGW_ERR_CLIENT_CLOSED; v++)
        assert_in_range(aigw_err_info((enum aigw_err)v)->http_status, 400, 499);
    for (int v = AIGW_ERR_BACKEND_UNAVAILABLE; v < AIGW_ERR__COUNT; v++)
        assert_in_range(aigw_err_info((enum aigw_err)v)->http_status, 500, 599);
    /* the budget is a quota, not a role problem, though both are 403 */
    assert_string_not_equal(aigw_err_info(AIGW_ERR_BUDGET_EXCEEDED)->type,
                            aigw_err_info(AIGW_ERR_FORBIDDEN)->type);
}

static void test_ok_is_200(void **state)
{
    (void)state;
    assert_int_equal(aigw_err_info(AIGW_OK)->http_status, 200);
}

static void test_unknown_values_map_to_internal_error(void **state)
{
    (void)state;
    const struct aigw_err_info *internal = aigw_err_info(AIGW_ERR_INTERNAL);
    assert_ptr_equal(aigw_err_info(AIGW_ERR__COUNT), internal);
    assert_ptr_equal(aigw_err_info((enum aigw_err)(AIGW_ERR__COUNT + 100)), internal);
    assert_ptr_equal(aigw_err_info((enum aigw_err) - 1), internal);
    assert_int_equal(aigw_err_info((enum aigw_err)9999)->http_status, 500);
    assert_string_equal(aigw_err_info((enum aigw_err)9999)->code, "internal_error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_error_has_documented_status_and_code),
        cmocka_unit_test(test_table_covers_the_whole_enum),
        cmocka_unit_test(test_every_error_has_type_and_message),
        cmocka_unit_test(test_codes_are_unique),
        cmocka_unit_test(test_status_classes),
        cmocka_unit_test(test_ok_is_200),
        cmocka_unit_test(test_unknown_values_map_to_internal_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
