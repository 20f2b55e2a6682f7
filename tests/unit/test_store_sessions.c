/*
 * test_store_sessions.c - unit tests for the session repository
 * (src/store/sessions.h) on a real SQLite store: a session is found by its
 * digest only, a user's oldest sessions beyond the limit are evicted in the
 * inserting transaction (and named), deletes say when nothing was there,
 * expiry removes exactly the sessions whose time has come (and names each
 * once), and the typed errors (ENOTFOUND, ECOLLISION) come back.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_url.h"
#include "store/identity.h"
#include "store/sessions.h"
#include "store/store.h"

static int setup(void **state)
{
    test_store_fx *f = test_store_fx_new(state, "sessions", true);
    fb_err err = {{0}};
    fb_user u2 = {.id = "us_2", .username = "other", .team_id = "tm_1", .role = FB_ROLE_VIEWER};
    assert_int_equal(fb_store_user_insert(f->st, &u2, "x", &err), FB_STORE_OK);
    return 0;
}

static fb_session_record rec(const char *id, uint8_t tag, const char *user, const char *created, const char *expires)
{
    fb_session_record r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    memset(r.token_hash, tag, sizeof r.token_hash);
    snprintf(r.user_id, sizeof r.user_id, "%s", user);
    snprintf(r.created_at, sizeof r.created_at, "%s", created);
    snprintf(r.expires_at, sizeof r.expires_at, "%s", expires);
    snprintf(r.source_ip, sizeof r.source_ip, "127.0.0.1");
    return r;
}

static void insert(test_store_fx *f, fb_session_record r, unsigned max, size_t want_evicted, const char *first_evicted)
{
    fb_session_end *ev = NULL;
    size_t n = 99;
    fb_err err = {{0}};
    assert_int_equal(fb_store_session_insert(f->st, &r, max, &ev, &n, &err), FB_STORE_OK);
    assert_int_equal(n, want_evicted);
    if (first_evicted)
        assert_string_equal(ev[0].id, first_evicted);
    free(ev);
}

static void test_found_by_digest_only(void **state)
{
    test_store_fx *f = *state;
    insert(f, rec("ses_a", 1, "us_1", "2026-12-01T10:00:00.000000000Z", "2026-12-01T18:00:00.000000000Z"), 5, 0,
           NULL);
    fb_session_record got;
    fb_err err = {{0}};
    uint8_t h[FB_SESSION_DIGEST_BYTES];
    memset(h, 1, sizeof h);
    assert_int_equal(fb_store_session_get(f->st, h, &got, &err), FB_STORE_OK);
    assert_string_equal(got.id, "ses_a");
    assert_string_equal(got.user_id, "us_1");
    assert_string_equal(got.expires_at, "2026-12-01T18:00:00.000000000Z");
    assert_string_equal(got.source_ip, "127.0.0.1");
    h[31] = 2;
    assert_int_equal(fb_store_session_get(f->st, h, &got, &err), FB_STORE_ENOTFOUND);
    /* The same id again is a collision to retry; the same digest is refused. */
    fb_session_end *ev = NULL;
    size_t n = 0;
    fb_session_record dup = rec("ses_a", 9, "us_1", "2026-12-01T10:00:01.000000000Z", "2026-12-01T18:00:00.000000000Z");
    assert_int_equal(fb_store_session_insert(f->st, &dup, 5, &ev, &n, &err), FB_STORE_ECOLLISION);
    dup = rec("ses_b", 1, "us_1", "2026-12-01T10:00:01.000000000Z", "2026-12-01T18:00:00.000000000Z");
    assert_int_not_equal(fb_store_session_insert(f->st, &dup, 5, &ev, &n, &err), FB_STORE_OK);
    assert_null(ev);
    /* An unknown user is refused by the foreign key. */
    dup = rec("ses_c", 3, "us_9", "2026-12-01T10:00:01.000000000Z", "2026-12-01T18:00:00.000000000Z");
    assert_int_equal(fb_store_session_insert(f->st, &dup, 5, &ev, &n, &err), FB_STORE_ENOTFOUND);
}

static void test_the_oldest_beyond_the_limit_are_evicted(void **state)
{
    test_store_fx *f = *state;
    const char *exp = "2026-12-01T18:00:00.000000000Z";
    insert(f, rec("ses_1", 1, "us_1", "2026-12-01T10:00:01.000000000Z", exp), 2, 0, NULL);
    insert(f, rec("ses_2", 2, "us_1", "2026-12-01T10:00:02.000000000Z", exp), 2, 0, NULL);
    insert(f, rec("ses_x", 7, "us_2", "2026-12-01T10:00:02.500000000Z", exp), 2, 0, NULL); /* another user's */
    insert(f, rec("ses_3", 3, "us_1", "2026-12-01T10:00:03.000000000Z", exp), 2, 1, "ses_1");
    insert(f, rec("ses_4", 4, "us_1", "2026-12-01T10:00:04.000000000Z", exp), 1, 2, "ses_3");
    fb_session_record got;
    fb_err err = {{0}};
    uint8_t h[FB_SESSION_DIGEST_BYTES];
    for (uint8_t tag = 1; tag <= 4; tag++) {
        memset(h, tag, sizeof h);
        assert_int_equal(fb_store_session_get(f->st, h, &got, &err), tag == 4 ? FB_STORE_OK : FB_STORE_ENOTFOUND);
    }
    memset(h, 7, sizeof h);
    assert_int_equal(fb_store_session_get(f->st, h, &got, &err), FB_STORE_OK);
}

static void test_delete_and_expire(void **state)
{
    test_store_fx *f = *state;
    insert(f, rec("ses_old", 1, "us_1", "2026-12-01T10:00:00.000000000Z", "2026-12-01T11:00:00.000000000Z"), 9, 0,
           NULL);
    insert(f, rec("ses_now", 2, "us_2", "2026-12-01T10:00:00.000000000Z", "2026-12-01T12:00:00.000000000Z"), 9, 0,
           NULL);
    insert(f, rec("ses_new", 3, "us_1", "2026-12-01T10:00:00.000000000Z", "2026-12-01T12:00:00.000000001Z"), 9, 0,
           NULL);
    fb_err err = {{0}};
    fb_session_end *ended = NULL;
    size_t n = 0;
    assert_int_equal(fb_store_session_expire(f->st, "2026-12-01T12:00:00.000000000Z", &ended, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 2);
    const char *a = ended[0].id, *b = ended[1].id;
    assert_true((strcmp(a, "ses_old") == 0 && strcmp(b, "ses_now") == 0) ||
                (strcmp(a, "ses_now") == 0 && strcmp(b, "ses_old") == 0));
    assert_string_equal(strcmp(a, "ses_now") == 0 ? ended[0].user_id : ended[1].user_id, "us_2");
    free(ended);
    assert_int_equal(fb_store_session_expire(f->st, "2026-12-01T12:00:00.000000000Z", &ended, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 0);
    assert_null(ended);
    assert_int_equal(fb_store_session_delete(f->st, "ses_new", &err), FB_STORE_OK);
    assert_int_equal(fb_store_session_delete(f->st, "ses_new", &err), FB_STORE_ENOTFOUND);
    /* Sessions came with version 6; SQLite is at 7 since (the audit CHECK). */
    assert_int_equal(fb_store_schema_version(f->st), strcmp(fb_store_engine_name(f->st), "sqlite") == 0 ? 7 : 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_found_by_digest_only, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_the_oldest_beyond_the_limit_are_evicted, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_delete_and_expire, setup, test_store_fx_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
