/*
 * test_rowcache.c - unit tests for app/rowcache.c and app/epoch.c: the row
 * caches and the host's change counters they are checked against.
 *
 * A cached row is given back only for its own key, under the epoch it was
 * read under and while young; a colliding key replaces it; a row read under
 * an older epoch never replaces a newer one; keys too long are not cached.
 * Epochs: two mappings of the same file (two processes) see each other's
 * bumps; an in-memory database has no file; a file not made by aigw is
 * refused; bump_all does not create the file.
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

#include "epoch.h"
#include "rowcache.h"

struct row {
    int n;
    char text[20];
};

static void test_hit_only_for_key_epoch_and_age(void **state)
{
    (void)state;
    struct row_cache *c = row_cache_new(8, sizeof(struct row));
    assert_non_null(c);
    struct row in = {42, "alice"}, out;
    row_cache_put(c, "alice", 6, 7, 1000, &in);
    memset(&out, 0, sizeof out);
    assert_int_equal(row_cache_get(c, "alice", 6, 7, 1500, 1000, &out), 1);
    assert_int_equal(out.n, 42);
    assert_string_equal(out.text, "alice");
    assert_int_equal(row_cache_get(c, "alic", 5, 7, 1500, 1000, &out), 0);  /* another key */
    assert_int_equal(row_cache_get(c, "alice", 6, 8, 1500, 1000, &out), 0); /* bumped */
    assert_int_equal(row_cache_get(c, "alice", 6, 7, 2000, 1000, &out), 0); /* too old */
    assert_int_equal(row_cache_get(c, "alice", 6, 7, 999, 1000, &out), 0);  /* clock went back */
    row_cache_free(c);
}

static void test_collision_replaces_and_older_epoch_never_wins(void **state)
{
    (void)state;
    struct row_cache *c = row_cache_new(1, sizeof(struct row)); /* every key collides */
    struct row a = {1, "a"}, b = {2, "b"}, out;
    row_cache_put(c, "a", 1, 5, 0, &a);
    row_cache_put(c, "b", 1, 5, 0, &b);
    assert_int_equal(row_cache_get(c, "a", 1, 5, 1, 1000, &out), 0);
    assert_int_equal(row_cache_get(c, "b", 1, 5, 1, 1000, &out), 1);
    assert_int_equal(out.n, 2);
    /* A slow reader that began before the bump to 6 must not put its row back. */
    struct row fresh = {3, "fresh"}, stale = {4, "stale"};
    row_cache_put(c, "b", 1, 6, 2, &fresh);
    row_cache_put(c, "b", 1, 5, 3, &stale);
    assert_int_equal(row_cache_get(c, "b", 1, 6, 4, 1000, &out), 1);
    assert_string_equal(out.text, "fresh");
    row_cache_free(c);
}

static void test_long_keys_are_not_cached(void **state)
{
    (void)state;
    struct row_cache *c = row_cache_new(4, sizeof(struct row));
    char key[ROWCACHE_KEY_MAX + 1];
    memset(key, 'k', sizeof key);
    struct row r = {1, "x"}, out;
    row_cache_put(c, key, sizeof key, 1, 0, &r);
    assert_int_equal(row_cache_get(c, key, sizeof key, 1, 1, 1000, &out), 0);
    row_cache_put(c, key, ROWCACHE_KEY_MAX, 1, 0, &r);
    assert_int_equal(row_cache_get(c, key, ROWCACHE_KEY_MAX, 1, 1, 1000, &out), 1);
    row_cache_free(c);
}

static void test_epochs_are_shared_through_the_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/aigw-epoch-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128], file[160];
    snprintf(db, sizeof db, "%s/aigw.db", dir);
    snprintf(file, sizeof file, "%s-epochs", db);
    struct buf err = {0};
    /* Without a worker's file, a command's bump makes none. */
    epochs_bump_all(db);
    assert_int_not_equal(access(file, F_OK), 0);
    assert_null(epochs_open(db, 0, &err));
    buf_reset(&err);
    struct epochs *a = epochs_open(db, 1, &err), *b = epochs_open(db, 1, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(epochs_read(b, EPOCH_AUTH), 0);
    epochs_bump(a, EPOCH_AUTH);
    assert_int_equal(epochs_read(b, EPOCH_AUTH), 1);
    assert_int_equal(epochs_read(b, EPOCH_BREAKERS), 0);
    epochs_bump_all(db);
    assert_int_equal(epochs_read(a, EPOCH_AUTH), 2);
    assert_int_equal(epochs_read(a, EPOCH_BREAKERS), 1);
    epochs_close(a);
    epochs_close(b);
    /* A file some other program wrote is not trusted. */
    FILE *f = fopen(file, "w");
    fputs("not aigw's", f);
    fclose(f);
    assert_null(epochs_open(db, 1, &err));
    assert_non_null(strstr(buf_cstr(&err), "not made by aigw"));
    buf_reset(&err);
    assert_null(epochs_open(":memory:", 1, &err));
    buf_free(&err);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_only_for_key_epoch_and_age),
        cmocka_unit_test(test_collision_replaces_and_older_epoch_never_wins),
        cmocka_unit_test(test_long_keys_are_not_cached),
        cmocka_unit_test(test_epochs_are_shared_through_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
