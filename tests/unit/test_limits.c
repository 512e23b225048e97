/*
 * test_limits.c - unit tests for the pure arithmetic of app/limits.c.
 *
 * Covers gcra_check (the request-rate and tokens-per-minute limiter): a burst
 * of exactly `limit` at one instant and a refusal of the next with the exact
 * Retry-After, refill at one unit per window/limit, no double burst at a
 * window edge, the remaining and reset values sent in x-ratelimit-* headers,
 * costs larger than the limit, token costs, limits that do not divide the
 * window evenly; budget_period_start/end for day, month (December to January,
 * February in leap and common years) and total; limits_format_duration.
 * The transactions around this arithmetic are covered by integration tests.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "limits.h"

#define SEC 1000000LL /* microseconds */
#define MS  1000LL

/* An arbitrary realistic "now": 2025-03-14T15:09:26Z in microseconds. */
static const int64_t T0 = 1741964966LL * SEC;

/* Admits `n` requests of `cost` at `now`, starting from *tat; returns how many
 * were allowed and keeps *tat (stored only when allowed, as limits_admit does). */
static long burst(int64_t now, int64_t *tat, long limit, int64_t window, long cost, long n)
{
    long allowed = 0;
    for (long i = 0; i < n; i++) {
        struct gcra_result r = gcra_check(now, *tat, limit, window, cost);
        if (r.allowed) {
            *tat = r.new_tat_us;
            allowed++;
        }
    }
    return allowed;
}

/* --- gcra_check -------------------------------------------------------------------- */

static void test_gcra_burst_of_exactly_limit(void **state)
{
    (void)state;
    int64_t tat = 0;
    for (long i = 1; i <= 100; i++) {
        struct gcra_result r = gcra_check(T0, tat, 100, 60 * SEC, 1);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 100 - i);
        assert_int_equal(r.reset_us, i * 600 * MS);
        tat = r.new_tat_us;
    }
    struct gcra_result r = gcra_check(T0, tat, 100, 60 * SEC, 1);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 600 * MS); /* one interval: 60 s / 100 */
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_us, 60 * SEC);
    assert_int_equal(r.new_tat_us, tat); /* a refusal changes nothing */
}

static void test_gcra_refill_after_one_interval(void **state)
{
    (void)state;
    int64_t tat = 0;
    assert_int_equal(burst(T0, &tat, 100, 60 * SEC, 1, 100), 100);
    /* 1 µs too early */
    struct gcra_result r = gcra_check(T0 + 600 * MS - 1, tat, 100, 60 * SEC, 1);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 1);
    /* exactly after the Retry-After: one more, then none */
    r = gcra_check(T0 + 600 * MS, tat, 100, 60 * SEC, 1);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    tat = r.new_tat_us;
    r = gcra_check(T0 + 600 * MS, tat, 100, 60 * SEC, 1);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 600 * MS);
    /* after 6 s, ten more */
    assert_int_equal(burst(T0 + 600 * MS + 6 * SEC, &tat, 100, 60 * SEC, 1, 20), 10);
    /* after a full idle window the whole burst is back, and not more */
    assert_int_equal(burst(T0 + 600 * SEC, &tat, 100, 60 * SEC, 1, 150), 100);
}

static void test_gcra_no_double_burst_at_window_edge(void **state)
{
    (void)state;
    /* 100 at t=0, then at t=60s-1ms the bucket has refilled 99.998 units:
     * 99 are allowed, not another 100. */
    int64_t tat = 0;
    assert_int_equal(burst(T0, &tat, 100, 60 * SEC, 1, 100), 100);
    assert_int_equal(burst(T0 + 60 * SEC - 1 * MS, &tat, 100, 60 * SEC, 1, 200), 99);

    /* The fixed-window failure: 100 just before an edge and 100 just after.
     * GCRA allows 100 at t, and 2 ms later nothing more. */
    tat = 0;
    assert_int_equal(burst(T0 + 60 * SEC - 1 * MS, &tat, 100, 60 * SEC, 1, 100), 100);
    assert_int_equal(burst(T0 + 60 * SEC + 1 * MS, &tat, 100, 60 * SEC, 1, 100), 0);
    /* A client polling every millisecond over the next window gets one
     * request every 600 ms: the first 600 ms after the burst, 100 in all. */
    long allowed = 0;
    int64_t first = 0;
    for (int64_t t = T0 + 60 * SEC; t <= T0 + 120 * SEC - 1 * MS; t += 1 * MS) {
        long n = burst(t, &tat, 100, 60 * SEC, 1, 1);
        if (n && !first)
            first = t;
        allowed += n;
    }
    assert_int_equal(first, T0 + 60 * SEC - 1 * MS + 600 * MS);
    assert_int_equal(allowed, 100);
}

static void test_gcra_steady_rate(void **state)
{
    (void)state;
    /* one request every interval is always allowed, forever */
    int64_t tat = 0;
    for (int i = 0; i < 1000; i++) {
        struct gcra_result r = gcra_check(T0 + i * 600 * MS, tat, 100, 60 * SEC, 1);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 99);
        tat = r.new_tat_us;
    }
}

static void test_gcra_cost_larger_than_limit(void **state)
{
    (void)state;
    struct gcra_result r = gcra_check(T0, 0, 100, 60 * SEC, 101);
    assert_false(r.allowed);
    assert_true(r.retry_after_us > 0);
    assert_int_equal(r.new_tat_us, 0);
    /* exactly the limit is allowed on a fresh bucket, and empties it */
    r = gcra_check(T0, 0, 100, 60 * SEC, 100);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_us, 60 * SEC);
}

static void test_gcra_token_costs(void **state)
{
    (void)state;
    /* 1000 tokens per minute: one token every 60 ms */
    int64_t tat = 0;
    struct gcra_result r = gcra_check(T0, tat, 1000, 60 * SEC, 600);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 400);
    assert_int_equal(r.reset_us, 36 * SEC);
    tat = r.new_tat_us;
    /* 500 more do not fit; the answer says 400 remain and when 500 will fit */
    r = gcra_check(T0, tat, 1000, 60 * SEC, 500);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 400);
    assert_int_equal(r.retry_after_us, 100 * 60 * MS); /* 100 tokens x 60 ms */
    assert_int_equal(r.reset_us, 36 * SEC);
    /* 400 fit exactly */
    r = gcra_check(T0, tat, 1000, 60 * SEC, 400);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    tat = r.new_tat_us;
    r = gcra_check(T0, tat, 1000, 60 * SEC, 1);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 60 * MS);
    /* after 6 s, 100 tokens are back */
    r = gcra_check(T0 + 6 * SEC, tat, 1000, 60 * SEC, 100);
    assert_true(r.allowed);
    r = gcra_check(T0 + 6 * SEC, tat, 1000, 60 * SEC, 101);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 60 * MS);
}

static void test_gcra_large_token_limits(void **state)
{
    (void)state;
    /* 10 million tokens per minute: 6 µs per token */
    int64_t tat = 0;
    struct gcra_result r = gcra_check(T0, tat, 10000000, 60 * SEC, 4096);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 10000000 - 4096);
    /* 1e9 tokens per minute: 0.06 µs per token, must not round to free */
    tat = 0;
    long allowed = 0;
    for (int i = 0; i < 300; i++) {
        r = gcra_check(T0, tat, 1000000000, 60 * SEC, 4000000);
        if (r.allowed) {
            tat = r.new_tat_us;
            allowed++;
        }
    }
    assert_int_equal(allowed, 250);
}

/* requests_per_window values that do not divide the window evenly must still
 * admit a burst of exactly the limit (the README: requests_per_window is a
 * count per window; limits.h: "A burst of up to limit is allowed"). */
static void test_gcra_uneven_interval_burst(void **state)
{
    (void)state;
    const long limits[] = {3, 7, 9, 11, 13, 30, 70, 101, 997};
    const int64_t windows[] = {2 * SEC, 60 * SEC, 60 * SEC, 60 * SEC,   3600 * SEC,
                               7 * SEC, 60 * SEC, 60 * SEC, 86400 * SEC};
    int wrong = 0;
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        int64_t tat = 0;
        long n = burst(T0, &tat, limits[i], windows[i], 1, limits[i] + 5);
        if (n != limits[i]) {
            print_error("limit %ld per %lld s: a burst at one instant admitted %ld\n", limits[i],
                        (long long)(windows[i] / SEC), n);
            wrong++;
        }
    }
    /* x-ratelimit-remaining-requests after the first of 7 is 6 */
    struct gcra_result first = gcra_check(T0, 0, 7, 60 * SEC, 1);
    assert_true(first.allowed);
    if (first.remaining != 6) {
        print_error("limit 7 per 60 s: remaining after one request is %ld\n", first.remaining);
        wrong++;
    }
    /* and the tokens-per-minute limiter with a cost that does not divide evenly */
    int64_t tat = 0;
    long n = burst(T0, &tat, 7000, 60 * SEC, 1000, 10);
    if (n != 7) {
        print_error("7000 tokens per minute: admitted %ld requests of 1000 tokens\n", n);
        wrong++;
    }
    assert_int_equal(wrong, 0);
}

/* --- budget periods ----------------------------------------------------------------- */

static int64_t utc(int y, int mon, int d, int h, int mi, int s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm);
}

static void test_budget_day(void **state)
{
    (void)state;
    int64_t now = utc(2025, 3, 14, 15, 9, 26);
    assert_int_equal(budget_period_start(PERIOD_DAY, now), utc(2025, 3, 14, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_DAY, now), utc(2025, 3, 15, 0, 0, 0));
    /* the first and last second of a day */
    int64_t mid = utc(2025, 3, 14, 0, 0, 0);
    assert_int_equal(budget_period_start(PERIOD_DAY, mid), mid);
    assert_int_equal(budget_period_start(PERIOD_DAY, mid - 1), utc(2025, 3, 13, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_DAY, mid - 1), mid);
    /* New Year's Eve and a leap day */
    assert_int_equal(budget_period_end(PERIOD_DAY, utc(2024, 12, 31, 23, 59, 59)),
                     utc(2025, 1, 1, 0, 0, 0));
    assert_int_equal(budget_period_start(PERIOD_DAY, utc(2024, 2, 29, 12, 0, 0)),
                     utc(2024, 2, 29, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_DAY, utc(2024, 2, 29, 12, 0, 0)),
                     utc(2024, 3, 1, 0, 0, 0));
}

static void test_budget_month(void **state)
{
    (void)state;
    int64_t now = utc(2025, 3, 14, 15, 9, 26);
    assert_int_equal(budget_period_start(PERIOD_MONTH, now), utc(2025, 3, 1, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_MONTH, now), utc(2025, 4, 1, 0, 0, 0));
    /* December rolls over to January of the next year */
    now = utc(2024, 12, 31, 23, 59, 59);
    assert_int_equal(budget_period_start(PERIOD_MONTH, now), utc(2024, 12, 1, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_MONTH, now), utc(2025, 1, 1, 0, 0, 0));
    assert_int_equal(budget_period_start(PERIOD_MONTH, utc(2025, 1, 1, 0, 0, 0)),
                     utc(2025, 1, 1, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_MONTH, utc(2024, 12, 1, 0, 0, 0)),
                     utc(2025, 1, 1, 0, 0, 0));
    /* February in a leap year has 29 days, in a common year 28 */
    now = utc(2024, 2, 29, 23, 0, 0);
    assert_int_equal(budget_period_start(PERIOD_MONTH, now), utc(2024, 2, 1, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_MONTH, now), utc(2024, 3, 1, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_MONTH, now) - budget_period_start(PERIOD_MONTH, now),
                     29 * 86400);
    now = utc(2025, 2, 28, 23, 59, 59);
    assert_int_equal(budget_period_end(PERIOD_MONTH, now) - budget_period_start(PERIOD_MONTH, now),
                     28 * 86400);
    assert_int_equal(budget_period_end(PERIOD_MONTH, utc(2100, 2, 10, 0, 0, 0)),
                     utc(2100, 3, 1, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_MONTH, utc(2000, 2, 10, 0, 0, 0)) -
                         budget_period_start(PERIOD_MONTH, utc(2000, 2, 10, 0, 0, 0)),
                     29 * 86400);
    /* a 31-day month ends where the next begins */
    now = utc(2025, 1, 31, 12, 0, 0);
    assert_int_equal(budget_period_end(PERIOD_MONTH, now), utc(2025, 2, 1, 0, 0, 0));
    assert_int_equal(budget_period_end(PERIOD_MONTH, now - 1),
                     budget_period_start(PERIOD_MONTH, utc(2025, 2, 1, 0, 0, 0)));
    /* the last second of a month still belongs to it */
    assert_int_equal(budget_period_start(PERIOD_MONTH, utc(2025, 5, 1, 0, 0, 0) - 1),
                     utc(2025, 4, 1, 0, 0, 0));
}

static void test_budget_every_month_of_a_leap_year(void **state)
{
    (void)state;
    const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int m = 1; m <= 12; m++) {
        int64_t now = utc(2028, m, 15, 6, 0, 0);
        int64_t start = budget_period_start(PERIOD_MONTH, now),
                end = budget_period_end(PERIOD_MONTH, now);
        assert_int_equal(start, utc(2028, m, 1, 0, 0, 0));
        assert_int_equal(end - start, days[m - 1] * 86400LL);
        assert_int_equal(end, m == 12 ? utc(2029, 1, 1, 0, 0, 0) : utc(2028, m + 1, 1, 0, 0, 0));
    }
}

static void test_budget_total(void **state)
{
    (void)state;
    int64_t now = utc(2025, 3, 14, 15, 9, 26);
    assert_int_equal(budget_period_start(PERIOD_TOTAL, now), 0);
    assert_true(budget_period_end(PERIOD_TOTAL, now) == INT64_MAX);
    assert_int_equal(budget_period_start(PERIOD_TOTAL, utc(2030, 1, 1, 0, 0, 0)), 0);
}

/* --- durations ------------------------------------------------------------------------ */

static void expect_duration(int64_t ms, const char *want)
{
    char out[32];
    limits_format_duration(ms, out, sizeof out);
    if (strcmp(out, want) != 0)
        print_error("%lld ms: got '%s' want '%s'\n", (long long)ms, out, want);
    assert_string_equal(out, want);
}

static void test_format_duration(void **state)
{
    (void)state;
    expect_duration(360000, "6m0s");
    expect_duration(600, "0.6s");
    expect_duration(1000, "1s");
    expect_duration(1500, "1.5s");
    expect_duration(0, "0s");
    expect_duration(-5, "0s");
    expect_duration(1, "0.001s");
    expect_duration(59999, "59.999s");
    expect_duration(60000, "1m0s");
    expect_duration(90500, "1m30.5s");
    expect_duration(3599999, "59m59.999s");
    /* a small buffer is never overrun */
    char tiny[4];
    memset(tiny, 'x', sizeof tiny);
    limits_format_duration(360000, tiny, sizeof tiny);
    assert_int_equal(tiny[3], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_burst_of_exactly_limit),
        cmocka_unit_test(test_gcra_refill_after_one_interval),
        cmocka_unit_test(test_gcra_no_double_burst_at_window_edge),
        cmocka_unit_test(test_gcra_steady_rate),
        cmocka_unit_test(test_gcra_cost_larger_than_limit),
        cmocka_unit_test(test_gcra_token_costs),
        cmocka_unit_test(test_gcra_large_token_limits),
        cmocka_unit_test(test_gcra_uneven_interval_burst),
        cmocka_unit_test(test_budget_day),
        cmocka_unit_test(test_budget_month),
        cmocka_unit_test(test_budget_every_month_of_a_leap_year),
        cmocka_unit_test(test_budget_total),
        cmocka_unit_test(test_format_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
