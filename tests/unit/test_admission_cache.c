/*
 * test_admission_cache.c - unit tests for app/admission_cache.c: a batch's
 * subjects and their admission state.
 *
 * Entries are found by user id after the table has grown many times over,
 * replaced in place, absent ones are NULL, and clearing forgets them all
 * while the table stays usable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "admission_cache.h"

static void test_entries_survive_growth_and_are_replaced(void **state)
{
    (void)state;
    struct admission_cache c = {0};
    assert_null(admission_cache_find(&c, "nobody"));
    char user[32];
    for (int i = 0; i < 1000; i++) {
        struct admission_state st = {i, 2 * i, 3 * i, 4 * i};
        snprintf(user, sizeof user, "user-%d", i);
        assert_int_equal(admission_cache_put(&c, user, 86400 * i, &st), 0);
    }
    assert_int_equal(c.n, 1000);
    for (int i = 0; i < 1000; i++) {
        snprintf(user, sizeof user, "user-%d", i);
        struct admission_entry *e = admission_cache_find(&c, user);
        assert_non_null(e);
        assert_int_equal(e->period, 86400 * i);
        assert_int_equal(e->st.tat_tokens_us, 2 * i);
        assert_int_equal(e->st.budget_reserved, 4 * i);
    }
    struct admission_state other = {7, 7, 7, 7};
    assert_int_equal(admission_cache_put(&c, "user-5", 1, &other), 0);
    assert_int_equal(c.n, 1000); /* replaced, not added */
    assert_int_equal(admission_cache_find(&c, "user-5")->st.budget_used, 7);
    assert_null(admission_cache_find(&c, "user-1000"));
    assert_null(admission_cache_find(&c, "user-"));

    admission_cache_clear(&c);
    assert_int_equal(c.n, 0);
    assert_null(admission_cache_find(&c, "user-5"));
    assert_int_equal(admission_cache_put(&c, "a \"quoted\", {odd} id", 3, &other), 0);
    assert_non_null(admission_cache_find(&c, "a \"quoted\", {odd} id"));
    admission_cache_free(&c);
    assert_null(admission_cache_find(&c, "a \"quoted\", {odd} id"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_survive_growth_and_are_replaced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
