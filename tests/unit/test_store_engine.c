/*
 * test_store_engine.c - what every storage engine must do the same way,
 * run on SQLite by `make unit` and on PostgreSQL by
 * tests/integration/test_store_postgres.py (FORGEBOX_TEST_STORE_URL, see
 * store_url.h): typed errors for clashes and missing referents, and
 * sandbox records that belong to the node that wrote them when several
 * gateways share one database.
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
#include "store/sandboxes.h"
#include "store/store.h"

#define T0 "2026-11-29T10:31:07.000000000Z"

static int setup(void **state)
{
    test_store_fx_new(state, "engine", false);
    return 0;
}

static int team(fb_store *st, const char *id, const char *name)
{
    fb_team t;
    memset(&t, 0, sizeof t);
    snprintf(t.id, sizeof t.id, "%s", id);
    snprintf(t.name, sizeof t.name, "%s", name);
    snprintf(t.created_at, sizeof t.created_at, T0);
    fb_err err = {{0}};
    return fb_store_team_insert(st, &t, &err);
}

static int sandbox(fb_store *st, const char *id, const char *team_id)
{
    fb_sandbox_record r = {id, team_id, "", "jail", 256, 1, T0, "2026-11-29T11:31:07.000000000Z", false};
    fb_err err = {{0}};
    return fb_store_sandbox_insert(st, &r, &err);
}

static void test_typed_errors(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    assert_int_equal(team(f->st, "tm_1", "one"), FB_STORE_OK);
    assert_int_equal(team(f->st, "tm_2", "one"), FB_STORE_EEXISTS);    /* a taken name */
    assert_int_equal(team(f->st, "tm_1", "other"), FB_STORE_ECOLLISION); /* a taken id: retry */
    fb_user u = {.id = "us_1", .username = "ann", .team_id = "tm_404", .role = FB_ROLE_VIEWER};
    assert_int_equal(fb_store_user_insert(f->st, &u, "x", &err), FB_STORE_ENOTFOUND);
    snprintf(u.team_id, sizeof u.team_id, "tm_1");
    assert_int_equal(fb_store_user_insert(f->st, &u, "x", &err), FB_STORE_OK);
    snprintf(u.id, sizeof u.id, "us_2");
    assert_int_equal(fb_store_user_insert(f->st, &u, "x", &err), FB_STORE_EEXISTS);
    assert_int_equal(sandbox(f->st, "sb-1", "tm_404"), FB_STORE_ENOTFOUND);
    assert_int_equal(sandbox(f->st, "sb-1", "tm_1"), FB_STORE_OK);
    assert_int_equal(sandbox(f->st, "sb-1", "tm_1"), FB_STORE_ECOLLISION);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-404", "failed", &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-1", "exploded", &err), FB_STORE_EINVAL);
    fb_team got;
    assert_int_equal(fb_store_team_get_by_name(f->st, "one", &got, &err), FB_STORE_OK);
    assert_string_equal(got.id, "tm_1");
    assert_int_equal(fb_store_team_get(f->st, "tm_2", &got, &err), FB_STORE_ENOTFOUND);
}

/* Two gateways on one PostgreSQL database, each with its own state
 * directory and node id: each lists (and so reaps) only its own live
 * sandboxes, and sees the other's teams.  (On SQLite a database has one
 * state directory; test_store.c covers its records per node.) */
static void test_sandboxes_belong_to_their_node(void **state)
{
    test_store_fx *f = *state;
    const char *url = getenv("FORGEBOX_TEST_STORE_URL");
    if (!url || !*url)
        skip();
    fb_err err = {{0}};
    char dir2[128];
    snprintf(dir2, sizeof dir2, "%s/b", f->tmp);
    fb_store *other = NULL;
    if (fb_store_open_url(dir2, url, &other, &err) < 0)
        fail_msg("second node: %s", err.msg);
    assert_string_equal(fb_store_engine_name(other), "postgresql");
    assert_string_not_equal(fb_store_node_id(f->st), fb_store_node_id(other));
    assert_int_equal(team(f->st, "tm_1", "one"), FB_STORE_OK);
    assert_int_equal(sandbox(f->st, "sb-a1", "tm_1"), FB_STORE_OK);
    assert_int_equal(sandbox(f->st, "sb-a2", "tm_1"), FB_STORE_OK);
    assert_int_equal(sandbox(other, "sb-b1", "tm_1"), FB_STORE_OK); /* the team is shared */
    assert_int_equal(sandbox(other, "sb-a1", "tm_1"), FB_STORE_ECOLLISION);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-a2", "destroyed", &err), FB_STORE_OK);
    char(*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    assert_int_equal(fb_store_sandbox_list_live(f->st, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "sb-a1");
    free(ids);
    assert_int_equal(fb_store_sandbox_list_live(other, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "sb-b1");
    free(ids);
    fb_store_close(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_typed_errors, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_sandboxes_belong_to_their_node, setup, test_store_fx_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
