/*
 * store_url.h - the store unit tests' fixture, and what lets them run
 * against PostgreSQL as well.  Include it after cmocka.h.
 *
 * With FORGEBOX_TEST_STORE_URL unset, test_store_open is fb_store_open (the
 * SQLite store under the state directory).  With it set (a postgresql://
 * URL; tests/integration/test_store_postgres.py sets it against a
 * PostgreSQL it starts), test_store_open opens that database instead, after
 * emptying it (its public schema dropped and re-created), so every test
 * starts from a fresh store just as it does with a fresh state directory.
 */
#ifndef FB_TEST_STORE_URL_H
#define FB_TEST_STORE_URL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "store/identity.h"
#include "store/store.h"

static inline int test_store_open(const char *dir, fb_store **st, fb_err *err)
{
    const char *url = getenv("FORGEBOX_TEST_STORE_URL");
    if (url && *url) {
        PGconn *c = PQconnectdb(url);
        PGresult *r = PQexec(c, "SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            fb_fail(err, "cannot empty the test database: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        if (!ok)
            return -1;
    }
    return fb_store_open_url(dir, url, st, err);
}

#define TEST_T0 "2026-11-29T10:31:07.000000000Z"

/* A fresh store in a new temporary directory: fx->dir is its state
 * directory, fx->st the open store. */
typedef struct test_store_fx {
    char tmp[64];
    char dir[96];
    fb_store *st;
} test_store_fx;

/* A cmocka setup: the fixture in *state; with `org`, the store is also
 * bootstrapped (organisation "org", team tm_1 "default", admin us_1 "root",
 * key key_000000000001). */
static inline test_store_fx *test_store_fx_new(void **state, const char *name, bool org)
{
    test_store_fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->tmp, sizeof f->tmp, "/tmp/fb-test-%s-XXXXXX", name);
    assert_non_null(mkdtemp(f->tmp));
    snprintf(f->dir, sizeof f->dir, "%s/state", f->tmp);
    fb_err err = {{0}};
    if (test_store_open(f->dir, &f->st, &err) < 0)
        fail_msg("open: %s", err.msg);
    if (org) {
        fb_team t = {"tm_1", "default", TEST_T0};
        fb_user u = {.id = "us_1", .username = "root", .team_id = "tm_1", .role = FB_ROLE_ADMIN};
        fb_key_record k = {.info = {.id = "key_000000000001", .user_id = "us_1", .name = "k", .scopes = FB_PERM_ALL}};
        fb_identity_bootstrap b = {"org", TEST_T0, &t, &u, "x", &k};
        assert_int_equal(fb_store_bootstrap(f->st, &b, &err), FB_STORE_OK);
    }
    *state = f;
    return f;
}

/* The matching cmocka teardown. */
static inline int test_store_fx_free(void **state)
{
    test_store_fx *f = *state;
    fb_store_close(f->st);
    fb_rm_rf(f->tmp);
    free(f);
    return 0;
}

#endif
