/*
 * test_breaker.c - unit tests for the pure state machine of app/breaker.c.
 *
 * Covers breaker_decide and breaker_apply over a struct breaker_row, with the
 * seed's policy (5 failures, 30 s recovery, 3 half-open calls): closed allows;
 * the 5th failure opens (4 do not); open skips until recovery; the first call
 * after recovery is a trial and moves to half_open; at most 3 trials at once;
 * a trial success closes and resets failures; a trial failure re-opens with a
 * new open_until; a 429 with Retry-After opens for exactly that long; a
 * success in closed resets the failure count; trial slots held longer than
 * stale_trial_ms (a dead worker's) are freed. The return value (row changed,
 * must be written) is checked too: a healthy breaker costs no write.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "breaker.h"
#include "log.h"

static const struct breaker_policy POLICY = {
    .failure_threshold = 5,
    .recovery_ms = 30000,
    .half_open_max_calls = 3,
    .stale_trial_ms = 65000,
};

static const int64_t T0 = 1741964966000LL; /* ms */

/* A backend never seen: what store_breaker_get returns. */
static struct breaker_row closed_row(void)
{
    struct breaker_row r;
    memset(&r, 0, sizeof r);
    r.state = BREAKER_CLOSED;
    return r;
}

static enum breaker_decision decide(struct breaker_row *r, int64_t now, int *changed)
{
    enum breaker_decision d;
    int c = breaker_decide(r, &POLICY, now, &d);
    if (changed)
        *changed = c;
    return d;
}

static void record_failure(struct breaker_row *r, int64_t now, int was_trial)
{
    assert_int_equal(
        breaker_apply(r, &POLICY, now, was_trial, OUTCOME_FAILURE, 0, "HTTP 500 from backend"), 1);
}

/* A row opened by five failures at T0. */
static struct breaker_row opened_row(void)
{
    struct breaker_row r = closed_row();
    for (int i = 0; i < 5; i++)
        record_failure(&r, T0, 0);
    return r;
}

static void test_closed_allows_without_writes(void **state)
{
    (void)state;
    struct breaker_row r = closed_row();
    int changed;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(decide(&r, T0 + i, &changed), BREAKER_ALLOW);
        assert_int_equal(changed, 0);
    }
    /* a success on a healthy breaker changes nothing */
    assert_int_equal(breaker_apply(&r, &POLICY, T0, 0, OUTCOME_SUCCESS, 0, NULL), 0);
    assert_int_equal(r.state, BREAKER_CLOSED);
}

static void test_four_failures_keep_it_closed_five_open_it(void **state)
{
    (void)state;
    struct breaker_row r = closed_row();
    for (int i = 1; i <= 4; i++) {
        record_failure(&r, T0 + i, 0);
        assert_int_equal(r.state, BREAKER_CLOSED);
        assert_int_equal(r.failures, i);
        assert_int_equal(decide(&r, T0 + i, NULL), BREAKER_ALLOW);
    }
    assert_string_equal(r.last_error, "HTTP 500 from backend");
    record_failure(&r, T0 + 5, 0);
    assert_int_equal(r.state, BREAKER_OPEN);
    assert_int_equal(r.failures, 5);
    assert_int_equal(r.open_until_ms, T0 + 5 + 30000);
    assert_int_equal(r.half_open_inflight, 0);
}

static void test_open_skips_until_recovery(void **state)
{
    (void)state;
    struct breaker_row r = opened_row();
    int changed;
    assert_int_equal(decide(&r, T0, &changed), BREAKER_SKIP);
    assert_int_equal(changed, 0);
    assert_int_equal(decide(&r, T0 + 15000, NULL), BREAKER_SKIP);
    assert_int_equal(decide(&r, T0 + 29999, &changed), BREAKER_SKIP);
    assert_int_equal(changed, 0);
    assert_int_equal(r.state, BREAKER_OPEN);
}

static void test_after_recovery_first_call_is_a_trial(void **state)
{
    (void)state;
    struct breaker_row r = opened_row();
    int changed;
    assert_int_equal(decide(&r, T0 + 30000, &changed), BREAKER_TRIAL);
    assert_int_equal(changed, 1);
    assert_int_equal(r.state, BREAKER_HALF_OPEN);
    assert_int_equal(r.half_open_inflight, 1);
    assert_int_equal(r.updated_ms, T0 + 30000);
}

static void test_at_most_max_trials_at_once(void **state)
{
    (void)state;
    struct breaker_row r = opened_row();
    int64_t t = T0 + 30000;
    assert_int_equal(decide(&r, t, NULL), BREAKER_TRIAL);
    assert_int_equal(decide(&r, t + 1, NULL), BREAKER_TRIAL);
    assert_int_equal(decide(&r, t + 2, NULL), BREAKER_TRIAL);
    assert_int_equal(r.half_open_inflight, 3);
    int changed;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(decide(&r, t + 3 + i, &changed), BREAKER_SKIP);
        assert_int_equal(changed, 0);
    }
    assert_int_equal(r.half_open_inflight, 3);
    /* a limit of 1 admits a single trial */
    struct breaker_policy one = POLICY;
    one.half_open_max_calls = 1;
    struct breaker_row r1 = opened_row();
    enum breaker_decision d;
    breaker_decide(&r1, &one, t, &d);
    assert_int_equal(d, BREAKER_TRIAL);
    breaker_decide(&r1, &one, t, &d);
    assert_int_equal(d, BREAKER_SKIP);
}

static void test_trial_success_closes_and_resets(void **state)
{
    (void)state;
    struct breaker_row r = opened_row();
    int64_t t = T0 + 30000;
    assert_int_equal(decide(&r, t, NULL), BREAKER_TRIAL);
    assert_int_equal(breaker_apply(&r, &POLICY, t + 100, 1, OUTCOME_SUCCESS, 0, NULL), 1);
    assert_int_equal(r.state, BREAKER_CLOSED);
    assert_int_equal(r.failures, 0);
    assert_int_equal(r.half_open_inflight, 0);
    assert_int_equal(r.open_until_ms, 0);
    assert_int_equal(decide(&r, t + 101, NULL), BREAKER_ALLOW);
    /* it takes the full threshold again to reopen */
    for (int i = 0; i < 4; i++)
        record_failure(&r, t + 200 + i, 0);
    assert_int_equal(r.state, BREAKER_CLOSED);
    record_failure(&r, t + 300, 0);
    assert_int_equal(r.state, BREAKER_OPEN);
}

static void test_trial_failure_reopens_with_new_deadline(void **state)
{
    (void)state;
    struct breaker_row r = opened_row();
    int64_t t = T0 + 30000;
    assert_int_equal(decide(&r, t, NULL), BREAKER_TRIAL);
    assert_int_equal(decide(&r, t + 1, NULL), BREAKER_TRIAL);
    record_failure(&r, t + 500, 1);
    assert_int_equal(r.state, BREAKER_OPEN);
    assert_int_equal(r.open_until_ms, t + 500 + 30000);
    assert_int_equal(r.half_open_inflight, 0);
    assert_int_equal(decide(&r, t + 600, NULL), BREAKER_SKIP);
    assert_int_equal(decide(&r, t + 500 + 29999, NULL), BREAKER_SKIP);
    /* the other trial's late success does not close the re-opened breaker */
    assert_int_equal(breaker_apply(&r, &POLICY, t + 700, 1, OUTCOME_SUCCESS, 0, NULL), 1);
    assert_int_equal(r.state, BREAKER_OPEN);
    assert_int_equal(r.open_until_ms, t + 500 + 30000);
    /* and after the new deadline a trial again */
    assert_int_equal(decide(&r, t + 500 + 30000, NULL), BREAKER_TRIAL);
    assert_int_equal(r.state, BREAKER_HALF_OPEN);
}

static void test_throttled_opens_for_retry_after(void **state)
{
    (void)state;
    struct breaker_row r = closed_row();
    assert_int_equal(breaker_apply(&r, &POLICY, T0, 0, OUTCOME_THROTTLED, 7000, "throttled (429)"),
                     1);
    assert_int_equal(r.state, BREAKER_OPEN);
    assert_int_equal(r.open_until_ms, T0 + 7000);
    assert_string_equal(r.last_error, "throttled (429)");
    assert_int_equal(decide(&r, T0 + 6999, NULL), BREAKER_SKIP);
    assert_int_equal(decide(&r, T0 + 7000, NULL), BREAKER_TRIAL);
    /* longer than the recovery timeout is honoured as given */
    r = closed_row();
    breaker_apply(&r, &POLICY, T0, 0, OUTCOME_THROTTLED, 120000, NULL);
    assert_int_equal(r.open_until_ms, T0 + 120000);
    assert_int_equal(decide(&r, T0 + 119999, NULL), BREAKER_SKIP);
    /* a 429 during a trial re-opens for the Retry-After */
    r = opened_row();
    assert_int_equal(decide(&r, T0 + 30000, NULL), BREAKER_TRIAL);
    breaker_apply(&r, &POLICY, T0 + 30010, 1, OUTCOME_THROTTLED, 2000, NULL);
    assert_int_equal(r.state, BREAKER_OPEN);
    assert_int_equal(r.open_until_ms, T0 + 32010);
    assert_int_equal(r.half_open_inflight, 0);
}

/* Dispatch (docs/ARCHITECTURE.md): backoff "honouring Retry-After". A backend that
 * answered 429 with Retry-After: 120 has said when it can take calls again; a
 * failure from a call that was already in flight must not shorten that to the
 * 30 s recovery timeout. */
static void test_late_failure_does_not_shorten_retry_after(void **state)
{
    (void)state;
    struct breaker_row r = closed_row();
    for (int i = 0; i < 4; i++)
        record_failure(&r, T0 + i, 0);
    breaker_apply(&r, &POLICY, T0 + 10, 0, OUTCOME_THROTTLED, 120000,
                  "throttled (429 with Retry-After)");
    assert_int_equal(r.state, BREAKER_OPEN);
    assert_int_equal(r.open_until_ms, T0 + 10 + 120000);
    /* a call started before the 429 now times out: the 5th failure */
    record_failure(&r, T0 + 20, 0);
    assert_int_equal(r.state, BREAKER_OPEN);
    if (r.open_until_ms < T0 + 10 + 120000)
        print_error("open_until moved from +120010 ms to +%lld ms\n",
                    (long long)(r.open_until_ms - T0));
    assert_true(r.open_until_ms >= T0 + 10 + 120000);
    assert_int_equal(decide(&r, T0 + 20 + 30000, NULL), BREAKER_SKIP);
}

static void test_success_in_closed_resets_failures(void **state)
{
    (void)state;
    struct breaker_row r = closed_row();
    for (int i = 0; i < 4; i++)
        record_failure(&r, T0 + i, 0);
    assert_int_equal(r.failures, 4);
    assert_int_equal(breaker_apply(&r, &POLICY, T0 + 10, 0, OUTCOME_SUCCESS, 0, NULL), 1);
    assert_int_equal(r.state, BREAKER_CLOSED);
    assert_int_equal(r.failures, 0);
    /* so failures must be consecutive to open it */
    for (int i = 0; i < 4; i++)
        record_failure(&r, T0 + 20 + i, 0);
    breaker_apply(&r, &POLICY, T0 + 30, 0, OUTCOME_SUCCESS, 0, NULL);
    record_failure(&r, T0 + 40, 0);
    assert_int_equal(r.state, BREAKER_CLOSED);
    assert_int_equal(r.failures, 1);
}

static void test_stale_trial_slots_are_freed(void **state)
{
    (void)state;
    struct breaker_row r = opened_row();
    int64_t t = T0 + 30000;
    for (int i = 0; i < 3; i++)
        assert_int_equal(decide(&r, t, NULL), BREAKER_TRIAL);
    assert_int_equal(r.half_open_inflight, 3);
    /* the workers holding them died; exactly at the limit they still count */
    assert_int_equal(decide(&r, t + POLICY.stale_trial_ms, NULL), BREAKER_SKIP);
    int changed;
    assert_int_equal(decide(&r, t + POLICY.stale_trial_ms + 1, &changed), BREAKER_TRIAL);
    assert_int_equal(changed, 1);
    assert_int_equal(r.half_open_inflight, 1);
    assert_int_equal(r.state, BREAKER_HALF_OPEN);
    assert_int_equal(r.updated_ms, t + POLICY.stale_trial_ms + 1);
}

static void test_trial_result_releases_its_slot(void **state)
{
    (void)state;
    /* breaker_apply with was_trial frees the slot even before a verdict
     * closes the breaker: two trials in flight, one succeeds */
    struct breaker_row r = opened_row();
    int64_t t = T0 + 30000;
    decide(&r, t, NULL);
    decide(&r, t, NULL);
    assert_int_equal(r.half_open_inflight, 2);
    breaker_apply(&r, &POLICY, t + 5, 1, OUTCOME_SUCCESS, 0, NULL);
    assert_int_equal(r.state, BREAKER_CLOSED);
    assert_int_equal(r.half_open_inflight, 0);
    /* the second trial's result arriving in closed state keeps it closed */
    breaker_apply(&r, &POLICY, t + 6, 1, OUTCOME_SUCCESS, 0, NULL);
    assert_int_equal(r.state, BREAKER_CLOSED);
    assert_int_equal(r.half_open_inflight, 0);
}

static void test_failure_while_half_open_from_an_older_call_reopens(void **state)
{
    (void)state;
    struct breaker_row r = opened_row();
    decide(&r, T0 + 30000, NULL);
    /* a non-trial call that started before the breaker opened fails now */
    record_failure(&r, T0 + 30001, 0);
    assert_int_equal(r.state, BREAKER_OPEN);
    assert_int_equal(r.open_until_ms, T0 + 30001 + 30000);
}

static void test_full_cycle_many_times(void **state)
{
    (void)state;
    struct breaker_row r = closed_row();
    int64_t t = T0;
    for (int cycle = 0; cycle < 5; cycle++) {
        for (int i = 0; i < 5; i++) {
            assert_int_equal(decide(&r, t, NULL), BREAKER_ALLOW);
            record_failure(&r, t, 0);
            t += 10;
        }
        assert_int_equal(r.state, BREAKER_OPEN);
        assert_int_equal(decide(&r, t, NULL), BREAKER_SKIP);
        t = r.open_until_ms;
        assert_int_equal(decide(&r, t, NULL), BREAKER_TRIAL);
        breaker_apply(&r, &POLICY, t + 50, 1, OUTCOME_SUCCESS, 0, NULL);
        assert_int_equal(r.state, BREAKER_CLOSED);
        assert_int_equal(r.failures, 0);
        t += 100;
    }
}

int main(void)
{
    log_set_level(LOG_ERROR); /* the breaker logs a warning when it opens */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_allows_without_writes),
        cmocka_unit_test(test_four_failures_keep_it_closed_five_open_it),
        cmocka_unit_test(test_open_skips_until_recovery),
        cmocka_unit_test(test_after_recovery_first_call_is_a_trial),
        cmocka_unit_test(test_at_most_max_trials_at_once),
        cmocka_unit_test(test_trial_success_closes_and_resets),
        cmocka_unit_test(test_trial_failure_reopens_with_new_deadline),
        cmocka_unit_test(test_throttled_opens_for_retry_after),
        cmocka_unit_test(test_late_failure_does_not_shorten_retry_after),
        cmocka_unit_test(test_success_in_closed_resets_failures),
        cmocka_unit_test(test_stale_trial_slots_are_freed),
        cmocka_unit_test(test_trial_result_releases_its_slot),
        cmocka_unit_test(test_failure_while_half_open_from_an_older_call_reopens),
        cmocka_unit_test(test_full_cycle_many_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
