/*
 * test_dispatch.c - unit tests for the pure parts of app/dispatch.c.
 *
 * Covers how the gateway picks and paces backends: dispatch_backoff_ms
 * (exponential from base, capped at max, jittered to [50%, 100%], never below
 * the backend's Retry-After); dispatch_order (lower priority numbers first,
 * only backends that serve the model, weighted random order within a
 * priority: 10000 draws with weights 1:3 give shares within tolerance);
 * dispatch_model_served; and the rng_next generator behind jitter and
 * weighting. The backend calls themselves are covered by integration tests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "dispatch.h"

/* Backends (index: name, priority, weight, models):
 *   0: a  1  1  gpt-4o
 *   1: b  0  1  gpt-4o, gpt-4o-mini
 *   2: c  1  3  gpt-4o
 *   3: d  0  1  text-embedding-3-small
 *   4: e  2  1  gpt-4o, gpt-4o-mini
 *   5: f  2  2  gpt-4o-mini
 *   6: g  2  1  gpt-4o-mini  */
static const char *const CONFIG =
    "{\"backends\": ["
    "{\"name\": \"a\", \"url\": \"https://a\", \"priority\": 1, \"weight\": 1, \"deployments\": "
    "{\"gpt-4o\": \"a4o\"}},"
    "{\"name\": \"b\", \"url\": \"https://b\", \"priority\": 0, \"deployments\": {\"gpt-4o\": "
    "\"b4o\", \"gpt-4o-mini\": \"bm\"}},"
    "{\"name\": \"c\", \"url\": \"https://c\", \"priority\": 1, \"weight\": 3, \"deployments\": "
    "{\"gpt-4o\": \"c4o\"}},"
    "{\"name\": \"d\", \"url\": \"https://d\", \"priority\": 0, \"deployments\": "
    "{\"text-embedding-3-small\": \"emb\"}},"
    "{\"name\": \"e\", \"url\": \"https://e\", \"priority\": 2, \"deployments\": {\"gpt-4o\": "
    "\"e4o\", \"gpt-4o-mini\": \"em\"}},"
    "{\"name\": \"f\", \"url\": \"https://f\", \"priority\": 2, \"weight\": 2, \"deployments\": "
    "{\"gpt-4o-mini\": \"fm\"}},"
    "{\"name\": \"g\", \"url\": \"https://g\", \"priority\": 2, \"weight\": 1, \"deployments\": "
    "{\"gpt-4o-mini\": \"gm\"}}"
    "]}";

static struct cfg *cfg;

static int setup(void **state)
{
    (void)state;
    struct buf problems = {0};
    cfg = cfg_load_string("test.json", CONFIG, &problems, NULL);
    if (!cfg)
        fprintf(stderr, "config: %s", buf_cstr(&problems));
    buf_free(&problems);
    return cfg ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cfg_free(cfg);
    return 0;
}

/* --- backoff --------------------------------------------------------------------- */

static void test_backoff_exponential(void **state)
{
    (void)state;
    /* with rnd at the top of its range the delay is about base * 2^round */
    const double top = 0.999999999;
    assert_in_range(dispatch_backoff_ms(0, 500, 10000, top, -1), 499, 500);
    assert_in_range(dispatch_backoff_ms(1, 500, 10000, top, -1), 999, 1000);
    assert_in_range(dispatch_backoff_ms(2, 500, 10000, top, -1), 1999, 2000);
    assert_in_range(dispatch_backoff_ms(3, 500, 10000, top, -1), 3999, 4000);
    /* at the bottom, half of it */
    assert_int_equal(dispatch_backoff_ms(0, 500, 10000, 0.0, -1), 250);
    assert_int_equal(dispatch_backoff_ms(1, 500, 10000, 0.0, -1), 500);
    assert_int_equal(dispatch_backoff_ms(3, 500, 10000, 0.0, -1), 2000);
    assert_int_equal(dispatch_backoff_ms(2, 500, 10000, 0.5, -1), 1500);
    /* non-decreasing in round for a fixed draw */
    for (double rnd = 0; rnd < 1; rnd += 0.125)
        for (int round = 0; round < 40; round++)
            assert_true(dispatch_backoff_ms(round + 1, 100, 30000, rnd, -1) >=
                        dispatch_backoff_ms(round, 100, 30000, rnd, -1));
}

static void test_backoff_cap(void **state)
{
    (void)state;
    /* 500 * 2^5 = 16000 > 10000: capped, then jittered within [5000, 10000] */
    assert_int_equal(dispatch_backoff_ms(5, 500, 10000, 0.0, -1), 5000);
    assert_in_range(dispatch_backoff_ms(5, 500, 10000, 0.999999999, -1), 9999, 10000);
    /* very late rounds do not overflow */
    const int rounds[] = {30, 63, 64, 100, 1023, 1024, 100000};
    for (size_t i = 0; i < sizeof rounds / sizeof rounds[0]; i++) {
        int64_t d = dispatch_backoff_ms(rounds[i], 500, 10000, 0.5, -1);
        assert_int_equal(d, 7500);
    }
    /* a zero base never waits (unless told to) */
    assert_int_equal(dispatch_backoff_ms(3, 0, 10000, 0.7, -1), 0);
    assert_int_equal(dispatch_backoff_ms(3, 0, 10000, 0.7, 1200), 1200);
    /* a zero cap never waits either */
    assert_int_equal(dispatch_backoff_ms(3, 500, 0, 0.7, -1), 0);
}

static void test_backoff_jitter_range(void **state)
{
    (void)state;
    uint64_t rng = 12345;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 10000; i++) {
        double rnd = (double)(rng_next(&rng) >> 11) / 9007199254740992.0;
        int64_t d = dispatch_backoff_ms(2, 500, 10000, rnd, -1);
        assert_in_range(d, 1000, 2000);
        if (d < lo)
            lo = d;
        if (d > hi)
            hi = d;
    }
    /* the draws cover the whole range, not one point */
    assert_true(lo < 1050);
    assert_true(hi > 1950);
}

static void test_backoff_honours_retry_after(void **state)
{
    (void)state;
    /* never below Retry-After */
    assert_int_equal(dispatch_backoff_ms(0, 500, 10000, 0.5, 7000), 7000);
    assert_int_equal(dispatch_backoff_ms(5, 500, 10000, 0.999, 60000), 60000);
    /* Retry-After beyond the cap still wins: the backend said so */
    assert_int_equal(dispatch_backoff_ms(0, 500, 1000, 0.0, 30000), 30000);
    /* a short Retry-After does not shorten the backoff */
    assert_int_equal(dispatch_backoff_ms(3, 500, 10000, 0.0, 100), 2000);
    /* zero and "none" (-1) leave it alone */
    assert_int_equal(dispatch_backoff_ms(1, 500, 10000, 0.0, 0), 500);
    assert_int_equal(dispatch_backoff_ms(1, 500, 10000, 0.0, -1), 500);
}

/* --- order ----------------------------------------------------------------------- */

static const char *name_of(size_t i)
{
    return cfg->backends[i].name;
}

static void test_order_priority_and_model(void **state)
{
    (void)state;
    uint64_t rng = 42;
    size_t order[16];
    for (int trial = 0; trial < 200; trial++) {
        size_t n = dispatch_order(cfg, "gpt-4o", &rng, order);
        assert_int_equal(n, 4);
        /* b (priority 0) first, then a and c (priority 1) in some order, e last */
        assert_string_equal(name_of(order[0]), "b");
        assert_true((order[1] == 0 && order[2] == 2) || (order[1] == 2 && order[2] == 0));
        assert_string_equal(name_of(order[3]), "e");
        /* every priority is non-decreasing along the order */
        for (size_t k = 1; k < n; k++)
            assert_true(cfg->backends[order[k - 1]].priority <= cfg->backends[order[k]].priority);
        /* d does not serve gpt-4o */
        for (size_t k = 0; k < n; k++)
            assert_int_not_equal(order[k], 3);
    }
    size_t n = dispatch_order(cfg, "text-embedding-3-small", &rng, order);
    assert_int_equal(n, 1);
    assert_string_equal(name_of(order[0]), "d");
    assert_int_equal(dispatch_order(cfg, "gpt-5", &rng, order), 0);
    assert_int_equal(dispatch_order(cfg, "", &rng, order), 0);
    assert_int_equal(dispatch_order(cfg, "GPT-4O", &rng, order), 0);
}

static void test_order_each_backend_once(void **state)
{
    (void)state;
    uint64_t rng = 7;
    size_t order[16];
    for (int trial = 0; trial < 500; trial++) {
        size_t n = dispatch_order(cfg, "gpt-4o-mini", &rng, order);
        assert_int_equal(n, 4);
        assert_string_equal(name_of(order[0]), "b");
        int seen[7] = {0};
        for (size_t k = 0; k < n; k++) {
            assert_in_range(order[k], 0, 6);
            seen[order[k]]++;
        }
        assert_int_equal(seen[1], 1);
        assert_int_equal(seen[4], 1);
        assert_int_equal(seen[5], 1);
        assert_int_equal(seen[6], 1);
    }
}

static void test_order_weighted_one_to_three(void **state)
{
    (void)state;
    /* a (weight 1) and c (weight 3) share priority 1: c goes first 3/4 of the time */
    uint64_t rng = 0x5eed;
    size_t order[16];
    const int N = 10000;
    int c_first = 0;
    for (int i = 0; i < N; i++) {
        dispatch_order(cfg, "gpt-4o", &rng, order);
        c_first += order[1] == 2;
    }
    double share = (double)c_first / N;
    if (fabs(share - 0.75) > 0.02)
        print_error("weight 3 of 4 went first %.4f of the time\n", share);
    /* the standard deviation is 0.0043: 0.02 is over 4.5 of them */
    assert_true(fabs(share - 0.75) <= 0.02);
}

static void test_order_weighted_three_way(void **state)
{
    (void)state;
    /* e (1), f (2), g (1) share priority 2 for gpt-4o-mini: first place
     * 1/4, 1/2, 1/4; drawn without replacement, second place given f first is
     * e or g with 1/2 each */
    uint64_t rng = 99;
    size_t order[16];
    const int N = 20000;
    int first[7] = {0}, f_first = 0, e_second_after_f = 0;
    for (int i = 0; i < N; i++) {
        dispatch_order(cfg, "gpt-4o-mini", &rng, order);
        first[order[1]]++;
        if (order[1] == 5) {
            f_first++;
            e_second_after_f += order[2] == 4;
        }
    }
    assert_true(fabs((double)first[4] / N - 0.25) <= 0.02);
    assert_true(fabs((double)first[5] / N - 0.50) <= 0.02);
    assert_true(fabs((double)first[6] / N - 0.25) <= 0.02);
    assert_true(fabs((double)e_second_after_f / f_first - 0.5) <= 0.03);
}

static void test_order_extreme_weights(void **state)
{
    (void)state;
    struct buf problems = {0};
    struct cfg *c = cfg_load_string("w.json",
                                    "{\"backends\": [{\"name\": \"light\", \"url\": \"https://l\", "
                                    "\"weight\": 1, \"deployments\": {\"m\": \"m\"}},"
                                    "{\"name\": \"heavy\", \"url\": \"https://h\", \"weight\": "
                                    "1000, \"deployments\": {\"m\": \"m\"}}]}",
                                    &problems, NULL);
    assert_non_null(c);
    uint64_t rng = 3;
    size_t order[4];
    int light_first = 0;
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(dispatch_order(c, "m", &rng, order), 2);
        light_first += order[0] == 0;
    }
    /* expected 10000/1001, about 10 */
    assert_in_range(light_first, 1, 40);
    cfg_free(c);
    buf_free(&problems);
}

static void test_order_is_deterministic_for_a_seed(void **state)
{
    (void)state;
    size_t o1[16], o2[16];
    uint64_t r1 = 2024, r2 = 2024;
    for (int i = 0; i < 100; i++) {
        size_t n1 = dispatch_order(cfg, "gpt-4o-mini", &r1, o1);
        size_t n2 = dispatch_order(cfg, "gpt-4o-mini", &r2, o2);
        assert_int_equal(n1, n2);
        assert_memory_equal(o1, o2, n1 * sizeof o1[0]);
    }
    assert_true(r1 == r2);
}

static void test_model_served(void **state)
{
    (void)state;
    assert_true(dispatch_model_served(cfg, "gpt-4o"));
    assert_true(dispatch_model_served(cfg, "gpt-4o-mini"));
    assert_true(dispatch_model_served(cfg, "text-embedding-3-small"));
    assert_false(dispatch_model_served(cfg, "gpt-4"));
    assert_false(dispatch_model_served(cfg, ""));
}

/* --- rng ---------------------------------------------------------------------- */

static void test_rng_next(void **state)
{
    (void)state;
    /* a zero state still produces numbers and moves on */
    uint64_t s = 0;
    uint64_t a = rng_next(&s);
    assert_true(s != 0);
    uint64_t b = rng_next(&s);
    assert_true(a != b);
    /* no short cycle, and roughly balanced bits */
    s = 1;
    uint64_t prev = rng_next(&s);
    int ones_low = 0, ones_high = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t x = rng_next(&s);
        assert_true(x != prev);
        prev = x;
        ones_low += (int)(x & 1);
        ones_high += (int)(x >> 63);
    }
    assert_in_range(ones_low, 4700, 5300);
    assert_in_range(ones_high, 4700, 5300);
    /* different seeds, different streams */
    uint64_t s1 = 1, s2 = 2;
    assert_true(rng_next(&s1) != rng_next(&s2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_exponential),
        cmocka_unit_test(test_backoff_cap),
        cmocka_unit_test(test_backoff_jitter_range),
        cmocka_unit_test(test_backoff_honours_retry_after),
        cmocka_unit_test(test_order_priority_and_model),
        cmocka_unit_test(test_order_each_backend_once),
        cmocka_unit_test(test_order_weighted_one_to_three),
        cmocka_unit_test(test_order_weighted_three_way),
        cmocka_unit_test(test_order_extreme_weights),
        cmocka_unit_test(test_order_is_deterministic_for_a_seed),
        cmocka_unit_test(test_model_served),
        cmocka_unit_test(test_rng_next),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
