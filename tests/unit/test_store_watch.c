/*
 * test_store_watch.c - unit tests for fb_store_watch_identity (store.h):
 * on PostgreSQL (FORGEBOX_TEST_STORE_URL, set by
 * tests/integration/test_store_postgres.py) a key revocation or a user's
 * (dis)abling committed through another store handle - another gateway -
 * reaches the watcher; a change that is rolled back (an unknown key or
 * user) announces nothing, and nothing else does either.  On SQLite the
 * watch is accepted and never calls back (one database, one gateway).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_url.h"
#include "store/identity.h"
#include "store/store.h"

typedef struct heard {
    atomic_int changed, up, down;
} heard;

static void on_change(void *ctx, fb_store_watch_kind kind)
{
    heard *h = ctx;
    atomic_fetch_add(kind == FB_STORE_WATCH_CHANGED ? &h->changed : kind == FB_STORE_WATCH_UP ? &h->up : &h->down, 1);
}

static int setup(void **state)
{
    test_store_fx_new(state, "watch", true);
    return 0;
}

/* Waits (at most 10 s, polling) until *v reaches want; its last value. */
static int wait_at_least(atomic_int *v, int want)
{
    for (int i = 0; i < 1000 && atomic_load(v) < want; i++)
        usleep(10 * 1000);
    return atomic_load(v);
}

static void test_changes_through_another_handle_are_heard(void **state)
{
    test_store_fx *f = *state;
    const char *url = getenv("FORGEBOX_TEST_STORE_URL");
    heard h = {0};
    fb_err err = {{0}};
    assert_int_equal(fb_store_watch_identity(f->st, on_change, &h, &err), FB_STORE_OK);
    assert_int_equal(fb_store_watch_identity(f->st, on_change, &h, &err), url && *url ? FB_STORE_EINVAL : 0);
    char(*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    if (!url || !*url) { /* SQLite: accepted, silent */
        assert_int_equal(fb_store_key_revoke_tree(f->st, "key_000000000001", TEST_T0, &ids, &n, &err), FB_STORE_OK);
        free(ids);
        usleep(100 * 1000);
        assert_int_equal(atomic_load(&h.changed) + atomic_load(&h.up) + atomic_load(&h.down), 0);
        return;
    }
    assert_int_equal(wait_at_least(&h.up, 1), 1); /* listening */
    char dir2[128];
    snprintf(dir2, sizeof dir2, "%s/b", f->tmp);
    fb_store *other = NULL;
    if (fb_store_open_url(dir2, url, &other, &err) < 0)
        fail_msg("second store: %s", err.msg);

    /* Nothing announced by what changes no identity, nor by a refusal. */
    fb_team t = {"tm_2", "two", TEST_T0};
    assert_int_equal(fb_store_team_insert(other, &t, &err), FB_STORE_OK);
    assert_int_equal(fb_store_user_set_disabled(other, "us_404", true, &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_key_revoke_tree(other, "key_404", TEST_T0, &ids, &n, &err), FB_STORE_ENOTFOUND);

    /* A user disabled elsewhere: heard. */
    assert_int_equal(fb_store_user_set_disabled(other, "us_1", true, &err), FB_STORE_OK);
    assert_true(wait_at_least(&h.changed, 1) >= 1);
    int before = atomic_load(&h.changed);
    assert_int_equal(before, 1); /* the refusals above announced nothing */
    /* A key revoked elsewhere: heard. */
    assert_int_equal(fb_store_key_revoke_tree(other, "key_000000000001", TEST_T0, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 1);
    free(ids);
    assert_true(wait_at_least(&h.changed, before + 1) >= before + 1);
    assert_int_equal(atomic_load(&h.down), 0);
    fb_store_close(other);
    /* fb_store_close (the fixture's teardown) stops the listener. */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_changes_through_another_handle_are_heard, setup, test_store_fx_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
