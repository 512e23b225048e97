/*
 * test_store.c - unit tests for app/store.c on a real SQLite file.
 *
 * Every statement the gateway runs, through its store function: migrations
 * apply once and leave a schema a second store sees; users and keys round
 * trip and a revoked key says so; the rate state, the budget (clamped at 0
 * both ways) and the breaker rows (all three states) read back what was
 * written; an audit row goes pending -> success with its response id found
 * by store_response_origin (only a successful one, only its owner's data), a
 * stale pending row is found and abandoned once, with its reservation as its
 * tokens; pruning keeps pending rows; savepoints undo one operation only;
 * counters and rollups add up; a report runs and an unknown one is -2.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "store.h"

static char dir[64];
static char path[128];
static struct store *st;
static struct cfg cfg;

/* The budget row as admission reads it. */
static int budget_of(struct store *s, const char *user, int64_t period, int64_t *used,
                     int64_t *reserved)
{
    struct admission_state a;
    int rc = store_admission_state(s, user, period, &a);
    *used = a.budget_used;
    *reserved = a.budget_reserved;
    return rc;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/aigw-store-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/aigw.db", dir);
    struct buf err = {0};
    cfg.database.path = path;
    cfg.database.local_path = path;
    cfg.database.synchronous = "normal";
    cfg.database.busy_timeout_ms = 5000;
    st = store_open(&cfg, &err);
    if (!st)
        fprintf(stderr, "store_open: %s\n", buf_cstr(&err));
    buf_free(&err);
    return st ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    store_close(st);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_migrations_apply_once(void **state)
{
    (void)state;
    struct buf err = {0};
    assert_int_equal(store_migrate(st, &err), 0); /* already applied at open */
    struct store *other = store_open_connection(&cfg, &err);
    assert_non_null(other);
    struct user_row u;
    assert_int_equal(store_user_get(other, "nobody", &u), 0);
    store_close(other);
    buf_free(&err);
}

static void test_users_and_keys(void **state)
{
    (void)state;
    struct user_row u = {0}, got;
    snprintf(u.user_id, sizeof u.user_id, "alice");
    snprintf(u.roles, sizeof u.roles, "AI.User,AI.Admin");
    u.requests_per_window = 10;
    u.window_s = 60;
    u.tokens_per_minute = -1;
    u.token_budget = 5000;
    snprintf(u.budget_period, sizeof u.budget_period, "month");
    assert_int_equal(store_user_insert(st, &u, 1000), 0);
    assert_int_equal(store_user_insert(st, &u, 1000), -1); /* the id is unique */
    assert_int_equal(store_user_get(st, "alice", &got), 1);
    assert_string_equal(got.roles, "AI.User,AI.Admin");
    assert_int_equal(got.token_budget, 5000);
    assert_string_equal(got.budget_period, "month");
    got.disabled = 1;
    assert_int_equal(store_user_update(st, &got), 0);
    assert_int_equal(store_user_get(st, "alice", &got), 1);
    assert_int_equal(got.disabled, 1);

    unsigned char hash[32], other[32];
    memset(hash, 0xab, sizeof hash);
    memset(other, 0xcd, sizeof other);
    assert_int_equal(store_key_insert(st, "k1", hash, "alice", 2000, 0), 0);
    struct key_row k;
    assert_int_equal(store_key_by_hash(st, hash, &k), 1);
    assert_string_equal(k.key_id, "k1");
    assert_string_equal(k.user_id, "alice");
    assert_int_equal(k.revoked_ms, 0);
    assert_int_equal(store_key_by_hash(st, other, &k), 0);
    assert_int_equal(store_key_revoke(st, "k1", 3000), 1);
    assert_int_equal(store_key_revoke(st, "k1", 4000), 0); /* once */
    assert_int_equal(store_key_by_hash(st, hash, &k), 1);
    assert_int_equal(k.revoked_ms, 3000);
}

static void test_rate_and_budget(void **state)
{
    (void)state;
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_rate_tat(st, "bob", "requests"), 0);
    assert_int_equal(store_rate_set_tat(st, "bob", "requests", 123456789), 0);
    assert_int_equal(store_rate_set_tat(st, "bob", "requests", 223456789), 0);
    assert_int_equal(store_rate_tat(st, "bob", "requests"), 223456789);
    assert_int_equal(store_rate_tat(st, "bob", "tokens"), 0);
    int64_t used, reserved;
    assert_int_equal(budget_of(st, "bob", 86400, &used, &reserved), 0);
    assert_int_equal(used + reserved, 0);
    assert_int_equal(store_budget_add(st, "bob", 86400, 0, 300), 0);
    assert_int_equal(store_budget_add(st, "bob", 86400, 120, -300), 0);
    assert_int_equal(budget_of(st, "bob", 86400, &used, &reserved), 0);
    assert_int_equal(used, 120);
    assert_int_equal(reserved, 0);
    /* Never below zero, whatever a caller subtracts. */
    assert_int_equal(store_budget_add(st, "bob", 86400, -500, -5), 0);
    assert_int_equal(budget_of(st, "bob", 86400, &used, &reserved), 0);
    assert_int_equal(used, 0);
    assert_int_equal(reserved, 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_rate_reset(st, "bob"), 0);
    assert_int_equal(store_rate_tat(st, "bob", "requests"), 0);
}

static void test_breaker_rows(void **state)
{
    (void)state;
    struct breaker_row r;
    assert_int_equal(store_breaker_get(st, "east", &r), 0);
    assert_int_equal(r.state, BREAKER_CLOSED);
    assert_int_equal(r.failures, 0);
    enum breaker_state states[] = {BREAKER_OPEN, BREAKER_HALF_OPEN, BREAKER_CLOSED};
    for (int i = 0; i < 3; i++) {
        struct breaker_row w = {.state = states[i],
                                .failures = i + 1,
                                .open_until_ms = 77,
                                .half_open_inflight = i,
                                .updated_ms = 99};
        snprintf(w.last_error, sizeof w.last_error, "HTTP 50%d", i);
        assert_int_equal(store_breaker_put(st, "east", &w), 0);
        assert_int_equal(store_breaker_get(st, "east", &r), 0);
        assert_int_equal(r.state, states[i]);
        assert_int_equal(r.failures, i + 1);
        assert_int_equal(r.half_open_inflight, i);
        assert_string_equal(r.last_error, w.last_error);
    }
    assert_string_equal(store_breaker_state_name(BREAKER_HALF_OPEN), "half_open");
}

static struct audit_row row_for(const char *id, const char *status, int64_t ts)
{
    struct audit_row a = {0};
    a.request_id = id;
    a.ts_ms = ts;
    a.user_id = "carol";
    a.operation = "responses";
    a.model = "gpt-4o";
    a.backend = "west";
    a.status = status;
    a.reserved_tokens = 500;
    a.budget_period_start = 86400;
    a.latency_ms = -1;
    return a;
}

static void test_audit_life_and_response_origin(void **state)
{
    (void)state;
    struct audit_row a = row_for("r1", "pending", 1000);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_audit_insert(st, &a), 0);
    struct response_origin o;
    assert_int_equal(store_response_origin(st, "resp_1", &o), 0); /* pending: not yet */
    a.status = "success";
    a.total_tokens = 42;
    a.response_id = "resp_1";
    a.completed_ms = 1500;
    assert_int_equal(store_audit_complete(st, &a), 0);
    assert_int_equal(store_audit_complete(st, &a), -1); /* only a pending row completes */
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_response_origin(st, "resp_1", &o), 1);
    assert_string_equal(o.backend, "west");
    assert_string_equal(o.owner, "carol");
    assert_string_equal(o.model, "gpt-4o");
    assert_int_equal(o.total_tokens, 42);
    assert_int_equal(store_response_origin(st, "resp_2", &o), 0);

    /* A worker died: the row stays pending until the sweep abandons it. */
    struct audit_row p = row_for("r2", "pending", 2000);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_audit_insert(st, &p), 0);
    struct pending_row stale[4];
    assert_int_equal(store_audit_stale(st, 1999, stale, 4), 0);
    assert_int_equal(store_audit_stale(st, 2001, stale, 4), 1);
    assert_string_equal(stale[0].request_id, "r2");
    assert_int_equal(stale[0].reserved_tokens, 500);
    assert_int_equal(stale[0].ts_ms, 2000);
    assert_int_equal(store_audit_abandon(st, "r2", 9000), 1);
    assert_int_equal(store_audit_abandon(st, "r2", 9001), 0); /* once */
    assert_int_equal(store_commit(st), 0);

    /* Pruning: completed rows go, a pending one stays. */
    struct audit_row q = row_for("r3", "pending", 100);
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_audit_insert(st, &q), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_audit_prune(st, 5000, 10), 2); /* r1 and r2 */
    assert_int_equal(store_audit_prune(st, 5000, 10), 0);
    assert_int_equal(store_audit_stale(st, 5000, stale, 4), 1); /* r3 is still there */
}

static void count_metric(const char *name, const char *labels, double value, void *arg)
{
    double *sum = arg;
    if (strcmp(name, "aigw_test_total") == 0 && strcmp(labels, "a=\"1\"") == 0)
        *sum += value;
}

static void test_savepoints_undo_one_operation(void **state)
{
    (void)state;
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_in_transaction(st), 1);
    assert_int_equal(store_savepoint(st), 0);
    assert_int_equal(store_metric_add(st, "aigw_test_total", "a=\"1\"", 2), 0);
    assert_int_equal(store_release(st), 0);
    assert_int_equal(store_savepoint(st), 0);
    assert_int_equal(store_metric_add(st, "aigw_test_total", "a=\"1\"", 40), 0);
    store_rollback_to(st); /* this operation failed: only it is undone */
    assert_int_equal(store_savepoint(st), 0);
    assert_int_equal(store_metric_add(st, "aigw_test_total", "a=\"1\"", 3), 0);
    assert_int_equal(store_release(st), 0);
    assert_int_equal(store_commit(st), 0);
    assert_int_equal(store_in_transaction(st), 0);
    double sum = 0;
    assert_int_equal(store_metric_each(st, count_metric, &sum), 0);
    assert_true(sum == 5);
}

struct seen_rows {
    int n;
    char ids[8][16];
};

static void on_brief(const struct audit_brief *b, void *arg)
{
    struct seen_rows *r = arg;
    if (r->n < 8)
        snprintf(r->ids[r->n], sizeof r->ids[0], "%s", b->request_id);
    r->n++;
}

/* The admin API's recent rows: newest first, a user's only, one by id, the
 * limit ending the walk and the period bounding it. */
static void test_recent_audit_rows(void **state)
{
    (void)state;
    static const char *const ids[] = {"n1", "n2", "n3", "n4"};
    assert_int_equal(store_begin(st), 0);
    for (int i = 0; i < 4; i++) {
        struct audit_row a = row_for(ids[i], "refused", 100000 + i * 1000);
        a.user_id = i % 2 ? "odd" : "even";
        assert_int_equal(store_audit_insert(st, &a), 0);
    }
    assert_int_equal(store_commit(st), 0);
    struct seen_rows r = {0};
    assert_int_equal(store_audit_recent(st, 100000, NULL, NULL, 3, on_brief, &r), 0);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.ids[0], "n4");
    assert_string_equal(r.ids[2], "n2");
    memset(&r, 0, sizeof r);
    assert_int_equal(store_audit_recent(st, 100000, "odd", NULL, 10, on_brief, &r), 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ids[0], "n4");
    assert_string_equal(r.ids[1], "n2");
    memset(&r, 0, sizeof r);
    assert_int_equal(store_audit_recent(st, 102500, NULL, NULL, 10, on_brief, &r), 0);
    assert_int_equal(r.n, 1); /* n4 only began within the period */
    memset(&r, 0, sizeof r);
    assert_int_equal(store_audit_recent(st, 999999, NULL, "n1", 10, on_brief, &r), 0);
    assert_int_equal(r.n, 1); /* by id, whatever its age */
    assert_string_equal(r.ids[0], "n1");
}

static int report_rows;

static void on_report_row(int ncol, const char *const *names, const char *const *values, void *arg)
{
    (void)names, (void)values, (void)arg;
    assert_true(ncol > 0);
    report_rows++;
}

static void test_rollups_and_reports(void **state)
{
    (void)state;
    const int64_t v[7] = {2, 1, 1, 0, 10, 20, 30};
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_usage_add(st, 0, "dana", v), 0);
    assert_int_equal(store_usage_add(st, 0, "dana", v), 0);
    assert_int_equal(store_backend_hour_add(st, 0, "east", 3, 1, 2, 1), 0);
    assert_int_equal(store_latency_add(st, 0, "east", 12.5, 3), 0);
    assert_int_equal(store_traffic_add(st, 0, v), 0);
    assert_int_equal(store_traffic_add(st, 3600000, v), 0);
    assert_int_equal(store_traffic_add(st, 3600000, v), 0);
    assert_int_equal(store_commit(st), 0);
    report_rows = 0;
    assert_int_equal(store_report(st, "traffic", 0, on_report_row, NULL), 0);
    assert_int_equal(report_rows, 2); /* two hours, the second's adds summed */
    assert_int_equal(store_report(st, "traffic", 3600000, on_report_row, NULL), 0);
    assert_int_equal(report_rows, 3);
    report_rows = 0;
    assert_int_equal(store_report(st, "usage", 0, on_report_row, NULL), 0);
    assert_int_equal(report_rows, 1); /* one row: the two adds summed */
    report_rows = 0;
    assert_int_equal(store_report(st, "errors", 0, on_report_row, NULL), 0);
    assert_int_equal(report_rows, 1);
    assert_int_equal(store_report(st, "no-such-report", 0, on_report_row, NULL), -2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_apply_once),
        cmocka_unit_test(test_users_and_keys),
        cmocka_unit_test(test_rate_and_budget),
        cmocka_unit_test(test_breaker_rows),
        cmocka_unit_test(test_audit_life_and_response_origin),
        cmocka_unit_test(test_savepoints_undo_one_operation),
        cmocka_unit_test(test_rollups_and_reports),
        cmocka_unit_test(test_recent_audit_rows),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
