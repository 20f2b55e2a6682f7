/*
 * test_store_nodes.c - unit tests for the node repository (store/nodes.h)
 * and the sandbox repository's cross-gateway calls (reserve, get,
 * list_all_live, set_expiry, the state 'lost'), on SQLite and - when
 * FORGEBOX_TEST_STORE_URL names one (tests/integration/test_store_postgres.py)
 * - on PostgreSQL: a node registers, heartbeats, is expired down with its
 * records lost and registers again; a name belongs to one live node; two
 * expiries racing mark each record lost exactly once; nothing revives a
 * lost record; reservations hold a team's quota (count, memory, vCPUs)
 * over the records of every node, also when several store handles race.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_url.h"
#include "store/nodes.h"
#include "store/sandboxes.h"
#include "store/store.h"

#define EXP "2026-11-29T11:31:07.000000000Z"
#define NODE_A "nd_00000000000000aa"
#define NODE_B "nd_00000000000000bb"

static int setup(void **state)
{
    test_store_fx *f = test_store_fx_new(state, "nodes", true);
    fb_err err = {{0}};
    fb_team t2 = {"tm_2", "other", TEST_T0};
    assert_int_equal(fb_store_team_insert(f->st, &t2, &err), FB_STORE_OK);
    return 0;
}

static fb_node_record node(const char *id, const char *name)
{
    fb_node_record r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.name, sizeof r.name, "%s", name);
    snprintf(r.address, sizeof r.address, "127.0.0.1:9443");
    snprintf(r.backend, sizeof r.backend, "jail");
    snprintf(r.isolation, sizeof r.isolation, "namespaces");
    r.capacity = 8;
    r.memory_mib = 4096;
    return r;
}

static const fb_quota_limits BIG = {1000, 1u << 20, 1000};

/* Reserves sandbox id (mem MiB, vcpus) for team on node (NULL: this store's). */
static int reserve(fb_store *st, const char *id, const char *team, const char *node_id, uint64_t mem, uint64_t vcpus,
                   const fb_quota_limits *lim, char *reason, size_t cap)
{
    fb_sandbox_record r = {id, team, "", "jail", mem, vcpus, TEST_T0, EXP, false};
    fb_err err = {{0}};
    char scratch[160];
    return fb_store_sandbox_reserve(st, &r, node_id, lim, reason ? reason : scratch, reason ? cap : sizeof scratch,
                                    &err);
}

static void state_is(fb_store *st, const char *id, const char *want)
{
    fb_sandbox_row row;
    fb_err err = {{0}};
    assert_int_equal(fb_store_sandbox_get(st, id, &row, &err), FB_STORE_OK);
    assert_string_equal(row.state, want);
}

/* Waits until the unix clock has moved past the current second, so that a
 * heartbeat written before is older than "now - 0 s". */
static void next_second(void)
{
    time_t t0 = time(NULL);
    while (time(NULL) <= t0)
        usleep(20 * 1000);
}

static void test_register_heartbeat_down_reregister(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_node_record a = node(NODE_A, "alpha");
    size_t lost = 99;
    char(*lost_ids)[FB_ID_MAX] = NULL;
    assert_int_equal(fb_store_node_register(f->st, &a, &lost_ids, &lost, &err), FB_STORE_OK);
    assert_int_equal(lost, 0);
    assert_null(lost_ids);
    assert_int_equal(reserve(f->st, "sb-1", "tm_1", NODE_A, 256, 1, &BIG, NULL, 0), 0);
    assert_int_equal(reserve(f->st, "sb-2", "tm_1", NODE_A, 512, 2, &BIG, NULL, 0), 0);
    assert_int_equal(reserve(f->st, "sb-3", "tm_1", NODE_A, 128, 1, &BIG, NULL, 0), 0);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-2", "running", &err), FB_STORE_OK);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-3", "destroyed", &err), FB_STORE_OK);

    bool up = false;
    assert_int_equal(fb_store_node_heartbeat(f->st, NODE_A, &up, &err), FB_STORE_OK);
    assert_true(up);
    fb_node_record got;
    assert_int_equal(fb_store_node_get(f->st, NODE_A, &got, &err), FB_STORE_OK);
    assert_string_equal(got.name, "alpha");
    assert_string_equal(got.address, "127.0.0.1:9443");
    assert_string_equal(got.backend, "jail");
    assert_string_equal(got.isolation, "namespaces");
    assert_string_equal(got.state, "up");
    assert_int_equal(got.capacity, 8);
    assert_int_equal(got.memory_mib, 4096);
    assert_int_equal(got.live, 2);
    assert_int_equal(got.live_memory_mib, 768);
    assert_true(got.heartbeat_unix > 0 && got.heartbeat_unix <= (int64_t)time(NULL));
    assert_true(got.registered_at[0] && got.heartbeat_at[0]);
    assert_int_equal(fb_store_node_get(f->st, "nd_404", &got, &err), FB_STORE_ENOTFOUND);

    /* A recent heartbeat is not expired. */
    size_t down = 9, nlost = 9;
    char(*ids)[FB_ID_MAX] = NULL;
    assert_int_equal(fb_store_nodes_expire(f->st, 3600, &down, &ids, &nlost, &err), FB_STORE_OK);
    assert_int_equal(down, 0);
    assert_int_equal(nlost, 0);
    assert_null(ids);

    /* Silent past the limit: down, its live records lost, the rest kept. */
    next_second();
    assert_int_equal(fb_store_nodes_expire(f->st, 0, &down, &ids, &nlost, &err), FB_STORE_OK);
    assert_int_equal(down, 1);
    assert_int_equal(nlost, 2);
    assert_string_equal(ids[0], "sb-1");
    assert_string_equal(ids[1], "sb-2");
    free(ids);
    state_is(f->st, "sb-1", "lost");
    state_is(f->st, "sb-2", "lost");
    state_is(f->st, "sb-3", "destroyed");
    fb_sandbox_row row;
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-1", &row, &err), FB_STORE_OK);
    assert_true(row.destroyed_at[0] != '\0');
    assert_string_equal(row.node_id, NODE_A);
    assert_int_equal(fb_store_node_get(f->st, NODE_A, &got, &err), FB_STORE_OK);
    assert_string_equal(got.state, "down");
    assert_int_equal(got.live, 0);

    /* The down node's heartbeat is refused and writes nothing. */
    int64_t before = got.heartbeat_unix;
    next_second();
    up = true;
    assert_int_equal(fb_store_node_heartbeat(f->st, NODE_A, &up, &err), FB_STORE_OK);
    assert_false(up);
    assert_int_equal(fb_store_node_get(f->st, NODE_A, &got, &err), FB_STORE_OK);
    assert_int_equal(got.heartbeat_unix, before);
    assert_string_equal(got.state, "down");
    up = true;
    assert_int_equal(fb_store_node_heartbeat(f->st, "nd_404", &up, &err), FB_STORE_OK);
    assert_false(up);

    /* A second expiry finds nothing more. */
    assert_int_equal(fb_store_nodes_expire(f->st, 0, &down, &ids, &nlost, &err), FB_STORE_OK);
    assert_int_equal(down, 0);
    assert_int_equal(nlost, 0);

    /* Registering again: up, and its lost records stay lost. */
    lost = 99;
    assert_int_equal(fb_store_node_register(f->st, &a, NULL, &lost, &err), FB_STORE_OK);
    assert_int_equal(lost, 0);
    assert_int_equal(fb_store_node_get(f->st, NODE_A, &got, &err), FB_STORE_OK);
    assert_string_equal(got.state, "up");
    assert_true(got.heartbeat_unix > before);
    state_is(f->st, "sb-1", "lost");
    assert_int_equal(fb_store_node_heartbeat(f->st, NODE_A, &up, &err), FB_STORE_OK);
    assert_true(up);

    /* A node that restarts holds nothing: what its id held live is lost. */
    assert_int_equal(reserve(f->st, "sb-4", "tm_1", NODE_A, 64, 1, &BIG, NULL, 0), 0);
    assert_int_equal(fb_store_node_register(f->st, &a, &lost_ids, &lost, &err), FB_STORE_OK);
    assert_int_equal(lost, 1);
    assert_non_null(lost_ids);
    assert_string_equal(lost_ids[0], "sb-4");
    free(lost_ids);
    state_is(f->st, "sb-4", "lost");

    /* A clean stop; list puts up nodes first. */
    fb_node_record b = node(NODE_B, "beta");
    assert_int_equal(fb_store_node_register(f->st, &b, NULL, NULL, &err), FB_STORE_OK);
    assert_int_equal(fb_store_node_stop(f->st, NODE_A, &err), FB_STORE_OK);
    assert_int_equal(fb_store_node_stop(f->st, "nd_404", &err), FB_STORE_ENOTFOUND);
    fb_node_record *all = NULL;
    size_t n = 0;
    assert_int_equal(fb_store_node_list(f->st, &all, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(all[0].id, NODE_B);
    assert_string_equal(all[0].state, "up");
    assert_string_equal(all[1].id, NODE_A);
    assert_string_equal(all[1].state, "stopped");
    free(all);
    assert_int_equal(fb_store_node_heartbeat(f->st, NODE_A, &up, &err), FB_STORE_OK);
    assert_false(up);
}

static void test_name_belongs_to_one_live_node(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_node_record a = node(NODE_A, "alpha"), b = node(NODE_B, "alpha");
    assert_int_equal(fb_store_node_register(f->st, &a, NULL, NULL, &err), FB_STORE_OK);
    assert_int_equal(fb_store_node_register(f->st, &b, NULL, NULL, &err), FB_STORE_ECOLLISION);
    assert_non_null(strstr(err.msg, "alpha"));
    fb_node_record got;
    assert_int_equal(fb_store_node_get(f->st, NODE_B, &got, &err), FB_STORE_ENOTFOUND);
    /* The same id registering again under its own name is not a collision. */
    assert_int_equal(fb_store_node_register(f->st, &a, NULL, NULL, &err), FB_STORE_OK);
    /* Once alpha is down, its name can be taken over. */
    next_second();
    size_t down = 0, nlost = 0;
    char(*ids)[FB_ID_MAX] = NULL;
    assert_int_equal(fb_store_nodes_expire(f->st, 0, &down, &ids, &nlost, &err), FB_STORE_OK);
    assert_int_equal(down, 1);
    assert_int_equal(fb_store_node_register(f->st, &b, NULL, NULL, &err), FB_STORE_OK);
    assert_int_equal(fb_store_node_get(f->st, NODE_B, &got, &err), FB_STORE_OK);
    assert_string_equal(got.name, "alpha");
    assert_int_equal(fb_store_node_get(f->st, NODE_A, &got, &err), FB_STORE_ENOTFOUND);
    /* ... and now the old holder, back, collides. */
    assert_int_equal(fb_store_node_register(f->st, &a, NULL, NULL, &err), FB_STORE_ECOLLISION);
    /* Bad registrations. */
    fb_node_record bad = node("", "x");
    assert_int_equal(fb_store_node_register(f->st, &bad, NULL, NULL, &err), FB_STORE_EINVAL);
    bad = node(NODE_A, "gamma");
    snprintf(bad.backend, sizeof bad.backend, "qemu");
    assert_int_equal(fb_store_node_register(f->st, &bad, NULL, NULL, &err), FB_STORE_EINVAL);
}

typedef struct expirer {
    fb_store *st;
    pthread_barrier_t *go;
    int rc;
    size_t down, nlost;
    char (*ids)[FB_ID_MAX];
} expirer;

static void *expire_thread(void *arg)
{
    expirer *e = arg;
    fb_err err = {{0}};
    pthread_barrier_wait(e->go);
    e->rc = fb_store_nodes_expire(e->st, 0, &e->down, &e->ids, &e->nlost, &err);
    return NULL;
}

/* A second handle on the same store: another gateway (its own state
 * directory on PostgreSQL; the same database file on SQLite). */
static fb_store *second_handle(test_store_fx *f, const char *sub)
{
    const char *url = getenv("FORGEBOX_TEST_STORE_URL");
    char dir[160];
    if (url && *url)
        snprintf(dir, sizeof dir, "%s/%s", f->tmp, sub);
    else
        snprintf(dir, sizeof dir, "%s", f->dir);
    fb_store *st = NULL;
    fb_err err = {{0}};
    if (fb_store_open_url(dir, url && *url ? url : NULL, &st, &err) < 0)
        fail_msg("second store: %s", err.msg);
    return st;
}

static void test_racing_expiries_mark_each_record_lost_once(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_node_record a = node(NODE_A, "alpha"), b = node(NODE_B, "beta");
    assert_int_equal(fb_store_node_register(f->st, &a, NULL, NULL, &err), FB_STORE_OK);
    assert_int_equal(fb_store_node_register(f->st, &b, NULL, NULL, &err), FB_STORE_OK);
    enum { N = 20 };
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "sb-%02d", i);
        assert_int_equal(reserve(f->st, id, i % 2 ? "tm_1" : "tm_2", i % 3 ? NODE_A : NODE_B, 64, 1, &BIG, NULL, 0),
                         0);
    }
    next_second();
    fb_store *other = second_handle(f, "b");
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    expirer e[2] = {{.st = f->st, .go = &go}, {.st = other, .go = &go}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, expire_thread, &e[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    assert_int_equal(e[0].rc, FB_STORE_OK);
    assert_int_equal(e[1].rc, FB_STORE_OK);
    assert_int_equal(e[0].down + e[1].down, 2);
    assert_int_equal(e[0].nlost + e[1].nlost, N);
    /* One of them did it all, in one transaction; every id exactly once. */
    assert_true(e[0].nlost == 0 || e[1].nlost == 0);
    int seen[N] = {0};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < e[k].nlost; i++) {
            int v = -1;
            assert_int_equal(sscanf(e[k].ids[i], "sb-%d", &v), 1);
            assert_true(v >= 0 && v < N);
            seen[v]++;
        }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    free(e[0].ids);
    free(e[1].ids);
    fb_sandbox_row *rows = NULL;
    size_t n = 9;
    assert_int_equal(fb_store_sandbox_list_all_live(other, NULL, &rows, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 0);
    assert_null(rows);
    fb_store_close(other);
}

static void test_lost_is_final(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    assert_int_equal(reserve(f->st, "sb-1", "tm_1", NULL, 64, 1, &BIG, NULL, 0), 0);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-1", "running", &err), FB_STORE_OK);
    assert_int_equal(fb_store_sandbox_set_expiry(f->st, "sb-1", "2026-11-29T12:00:00.000000000Z", &err), FB_STORE_OK);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-1", "lost", &err), FB_STORE_OK);
    fb_sandbox_row row;
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-1", &row, &err), FB_STORE_OK);
    assert_string_equal(row.state, "lost");
    assert_string_equal(row.expires_at, "2026-11-29T12:00:00.000000000Z");
    char destroyed[40];
    snprintf(destroyed, sizeof destroyed, "%s", row.destroyed_at);
    assert_true(destroyed[0] != '\0');
    static const char *const others[] = {"creating", "running", "destroyed", "failed"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-1", others[i], &err), FB_STORE_ECONFLICT);
        assert_non_null(strstr(err.msg, "lost"));
    }
    /* lost again: nothing to do, nothing rewritten. */
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-1", "lost", &err), FB_STORE_OK);
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-1", &row, &err), FB_STORE_OK);
    assert_string_equal(row.state, "lost");
    assert_string_equal(row.destroyed_at, destroyed);
    assert_int_equal(fb_store_sandbox_set_expiry(f->st, "sb-1", "2026-11-29T13:00:00.000000000Z", &err),
                     FB_STORE_ECONFLICT);
    assert_int_equal(fb_store_sandbox_set_expiry(f->st, "sb-404", "2026-11-29T13:00:00.000000000Z", &err),
                     FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-404", "lost", &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-404", &row, &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-1", "gone", &err), FB_STORE_EINVAL);
    /* A lost record is not live: not listed, not counted. */
    char(*ids)[FB_ID_MAX] = NULL;
    size_t n = 9;
    assert_int_equal(fb_store_sandbox_list_live(f->st, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 0);
    fb_quota_limits one = {1, 1024, 4};
    assert_int_equal(reserve(f->st, "sb-2", "tm_1", NULL, 64, 1, &one, NULL, 0), 0);
}

static void test_reserve_holds_quota_across_nodes(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_quota_limits lim = {3, 1024, 4};
    char reason[160];
    assert_int_equal(reserve(f->st, "sb-1", "tm_1", NODE_A, 256, 1, &lim, reason, sizeof reason), 0);
    assert_string_equal(reason, "");
    assert_int_equal(reserve(f->st, "sb-2", "tm_1", NODE_B, 256, 1, &lim, reason, sizeof reason), 0);
    assert_int_equal(reserve(f->st, "sb-3", "tm_1", NULL, 256, 1, &lim, reason, sizeof reason), 0);
    /* Count: three live records over three nodes fill the team. */
    assert_int_equal(reserve(f->st, "sb-4", "tm_1", NODE_A, 1, 1, &lim, reason, sizeof reason), 1);
    assert_string_equal(reason, "team quota exceeded: 3 of 3 sandboxes in use");
    fb_sandbox_row row;
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-4", &row, &err), FB_STORE_ENOTFOUND);
    /* Another team is not affected. */
    assert_int_equal(reserve(f->st, "sb-t2", "tm_2", NODE_A, 256, 1, &lim, reason, sizeof reason), 0);
    /* The reserved record: creating, owned by the node given (or ours). */
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-2", &row, &err), FB_STORE_OK);
    assert_string_equal(row.state, "creating");
    assert_string_equal(row.node_id, NODE_B);
    assert_string_equal(row.team_id, "tm_1");
    assert_string_equal(row.backend, "jail");
    assert_string_equal(row.key_id, "");
    assert_int_equal(row.memory_mib, 256);
    assert_int_equal(row.vcpus, 1);
    assert_string_equal(row.created_at, TEST_T0);
    assert_string_equal(row.expires_at, EXP);
    assert_string_equal(row.destroyed_at, "");
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-3", &row, &err), FB_STORE_OK);
    assert_string_equal(row.node_id, fb_store_node_id(f->st));
    /* "failed" gives the place back; "running" keeps it. */
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-1", "running", &err), FB_STORE_OK);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-3", "failed", &err), FB_STORE_OK);
    /* Memory: 512 MiB live of 1024; 513 more would pass it. */
    assert_int_equal(reserve(f->st, "sb-5", "tm_1", NODE_A, 513, 1, &lim, reason, sizeof reason), 1);
    assert_string_equal(reason, "team quota exceeded: 512 of 1024 MiB of memory in use, 513 more asked");
    /* vCPUs: 2 live of 4; 3 more would pass it. */
    assert_int_equal(reserve(f->st, "sb-5", "tm_1", NODE_B, 512, 3, &lim, reason, sizeof reason), 1);
    assert_string_equal(reason, "team quota exceeded: 2 of 4 vCPUs in use, 3 more asked");
    assert_int_equal(reserve(f->st, "sb-5", "tm_1", NODE_B, 512, 2, &lim, reason, sizeof reason), 0);
    /* Typed errors. */
    assert_int_equal(reserve(f->st, "sb-5", "tm_2", NODE_B, 1, 1, &lim, reason, sizeof reason), FB_STORE_ECOLLISION);
    assert_int_equal(reserve(f->st, "sb-6", "tm_404", NODE_B, 1, 1, &lim, reason, sizeof reason), FB_STORE_ENOTFOUND);
    /* Listing: every node's live records, or one team's. */
    fb_sandbox_row *rows = NULL;
    size_t n = 0;
    assert_int_equal(fb_store_sandbox_list_all_live(f->st, NULL, &rows, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 4); /* sb-1 sb-2 sb-5 sb-t2 */
    free(rows);
    assert_int_equal(fb_store_sandbox_list_all_live(f->st, "tm_1", &rows, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(rows[0].id, "sb-1");
    assert_string_equal(rows[0].state, "running");
    assert_string_equal(rows[1].id, "sb-2");
    assert_string_equal(rows[2].id, "sb-5");
    free(rows);
    /* fb_store_sandbox_list_live is still this node's own. */
    char(*ids)[FB_ID_MAX] = NULL;
    assert_int_equal(fb_store_sandbox_list_live(f->st, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 0);
    free(ids);
}

typedef struct racer {
    fb_store *st;
    pthread_barrier_t *go;
    int idx, won, refused, errors;
} racer;

static void *race_thread(void *arg)
{
    racer *r = arg;
    fb_quota_limits lim = {6, 1u << 20, 1000};
    pthread_barrier_wait(r->go);
    for (int i = 0; i < 5; i++) {
        char id[32];
        snprintf(id, sizeof id, "sb-r%d-%d", r->idx, i);
        int rc = reserve(r->st, id, "tm_1", r->idx % 2 ? NODE_A : NODE_B, 64, 1, &lim, NULL, 0);
        if (rc == 0)
            r->won++;
        else if (rc == 1)
            r->refused++;
        else
            r->errors++;
    }
    return NULL;
}

/* Four store handles (four gateways) race for a team's six places. */
static void test_racing_reservations_never_pass_the_quota(void **state)
{
    test_store_fx *f = *state;
    enum { T = 4 };
    fb_store *st[T];
    st[0] = f->st;
    for (int i = 1; i < T; i++) {
        char sub[16];
        snprintf(sub, sizeof sub, "g%d", i);
        st[i] = second_handle(f, sub);
    }
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, T);
    racer r[T];
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
        r[i] = (racer){.st = st[i], .go = &go, .idx = i};
        assert_int_equal(pthread_create(&t[i], NULL, race_thread, &r[i]), 0);
    }
    int won = 0, refused = 0, errors = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        won += r[i].won;
        refused += r[i].refused;
        errors += r[i].errors;
    }
    pthread_barrier_destroy(&go);
    assert_int_equal(errors, 0);
    assert_int_equal(won, 6);
    assert_int_equal(refused, T * 5 - 6);
    fb_sandbox_row *rows = NULL;
    size_t n = 0;
    fb_err err = {{0}};
    assert_int_equal(fb_store_sandbox_list_all_live(f->st, "tm_1", &rows, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 6);
    free(rows);
    for (int i = 1; i < T; i++)
        fb_store_close(st[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register_heartbeat_down_reregister, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_name_belongs_to_one_live_node, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_racing_expiries_mark_each_record_lost_once, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_lost_is_final, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_reserve_holds_quota_across_nodes, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_racing_reservations_never_pass_the_quota, setup, test_store_fx_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
