/*
 * test_admission_cache.c - unit tests for app/admission_cache.c: a batch's
 * subjects and their admission state.
 *
 * Entries are found by user id after the table has grown many times over,
 * replaced in place, absent ones are NULL, and clearing forgets them all
 * while the table stays usable. The walk over dirty entries (what a commit
 * writes) visits each dirty entry once and no clean one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
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

static void test_the_dirty_walk_visits_each_dirty_entry_once(void **state)
{
    (void)state;
    struct admission_cache c = {0};
    size_t i = 0;
    assert_null(admission_cache_next_dirty(&c, &i)); /* empty, no table yet */
    char user[32];
    for (int k = 0; k < 300; k++) {
        struct admission_state st = {k, k, k, k};
        snprintf(user, sizeof user, "u%d", k);
        assert_int_equal(admission_cache_put(&c, user, 0, &st), 0);
        struct admission_entry *e = admission_cache_find(&c, user);
        assert_int_equal(e->dirty, 0); /* a new entry has nothing to write */
        assert_int_equal(e->read.budget_used, k);
        if (k % 3 == 0) {
            e->st.budget_used += 10;
            e->dirty |= ADMISSION_DIRTY_BUDGET;
        }
    }
    int seen[300] = {0}, n = 0;
    struct admission_entry *e;
    for (i = 0; (e = admission_cache_next_dirty(&c, &i));) {
        int k = atoi(e->user + 1);
        assert_int_equal(k % 3, 0);
        assert_int_equal(e->st.budget_used - e->read.budget_used, 10);
        seen[k]++;
        n++;
    }
    assert_int_equal(n, 100);
    for (int k = 0; k < 300; k += 3)
        assert_int_equal(seen[k], 1);
    /* Put again (the batch read the row anew): clean, read as given. */
    struct admission_state again = {1, 2, 3, 4};
    assert_int_equal(admission_cache_put(&c, "u0", 0, &again), 0);
    assert_int_equal(admission_cache_find(&c, "u0")->dirty, 0);
    assert_int_equal(admission_cache_find(&c, "u0")->read.budget_reserved, 4);
    admission_cache_clear(&c);
    i = 0;
    assert_null(admission_cache_next_dirty(&c, &i));
    admission_cache_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_survive_growth_and_are_replaced),
        cmocka_unit_test(test_the_dirty_walk_visits_each_dirty_entry_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
