/*
 * test_registry.c - unit tests for the service layer's table of live
 * sandboxes (src/core/registry.c, internal.h): quota reservations and the
 * visibility of entries being created.
 *
 * What needs a running sandbox (activation, retiring, finalising by the
 * last reference) is covered end to end by the gateway's integration
 * tests (test_gateway_findings.py: the create/reaper race, stalled
 * streams, delete during exec); here the bookkeeping is checked alone,
 * on a real store (reservations are the store's: fb_store_sandbox_reserve),
 * including a record another gateway or node reserved.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_url.h"
#include "core/internal.h"

static core_sandbox *entry(const char *team, uint64_t mem, uint64_t vcpus, int n)
{
    core_sandbox *s = calloc(1, sizeof *s);
    snprintf(s->team_id, sizeof s->team_id, "%s", team);
    snprintf(s->id, sizeof s->id, "pending-%s-%d", team, n);
    s->memory_mib = mem;
    s->vcpus = vcpus;
    return s;
}

static test_store_fx *fx;

static int setup(void **state)
{
    fx = test_store_fx_new(state, "registry", false);
    fb_err err = {{0}};
    fb_team t1 = {"t1", "one", TEST_T0}, t2 = {"t2", "two", TEST_T0};
    assert_int_equal(fb_store_team_insert(fx->st, &t1, &err), FB_STORE_OK);
    assert_int_equal(fb_store_team_insert(fx->st, &t2, &err), FB_STORE_OK);
    return 0;
}

static fb_core *core_with(fb_config *cfg, uint64_t max_count, uint64_t max_mem)
{
    assert_int_equal(fb_config_defaults(cfg), 0);
    cfg->quotas.max_sandboxes_per_team = max_count;
    cfg->quotas.max_memory_mib_per_team = max_mem;
    fb_core *c = calloc(1, sizeof *c);
    c->cfg = cfg;
    c->store = fx->st;
    core_registry_init(&c->reg);
    return c;
}

static void state_is(const char *id, const char *want)
{
    fb_sandbox_row row;
    fb_err err = {{0}};
    assert_int_equal(fb_store_sandbox_get(fx->st, id, &row, &err), FB_STORE_OK);
    assert_string_equal(row.state, want);
}

static void test_count_quota_per_team(void **state)
{
    (void)state;
    fb_config cfg;
    fb_core *c = core_with(&cfg, 2, 100000);
    core_sandbox *a = entry("t1", 128, 1, 1), *b = entry("t1", 128, 1, 2), *x = entry("t1", 128, 1, 3);
    core_sandbox *other = entry("t2", 128, 1, 1);
    assert_int_equal(core_registry_reserve(c, a, NULL, 0), 0);
    assert_int_equal(a->refs, 2); /* the table's and the creator's */
    assert_int_equal(core_registry_reserve(c, b, NULL, 0), 0);
    assert_int_equal(core_registry_reserve(c, x, NULL, 0), 1);
    assert_int_equal(core_registry_reserve(c, other, NULL, 0), 0); /* quotas are per team */
    state_is("pending-t1-1", "creating");
    core_registry_release(c, a);                           /* a failed create gives its slot back */
    state_is("pending-t1-1", "failed");
    assert_int_equal(core_registry_reserve(c, x, NULL, 0), 0);
    core_registry_release(c, b);
    core_registry_release(c, x);
    core_registry_release(c, other);
    assert_int_equal(c->reg.n, 0);
    free(c->reg.items);
    free(c);
    fb_config_free(&cfg);
}

static void test_memory_quota(void **state)
{
    (void)state;
    fb_config cfg;
    fb_core *c = core_with(&cfg, 100, 300);
    core_sandbox *a = entry("t1", 256, 1, 1), *b = entry("t1", 128, 1, 2), *d = entry("t1", 44, 1, 3);
    assert_int_equal(core_registry_reserve(c, a, NULL, 0), 0);
    assert_int_equal(core_registry_reserve(c, b, NULL, 0), 1);
    assert_int_equal(core_registry_reserve(c, d, NULL, 0), 0); /* exactly at the quota */
    core_registry_release(c, a);
    core_registry_release(c, d);
    free(b);
    free(c->reg.items);
    free(c);
    fb_config_free(&cfg);
}

/* An entry being created is counted against the quota but invisible:
 * no lookup, listing, reaping or shutdown can take it from its creator. */
static void test_pending_entries_are_invisible(void **state)
{
    (void)state;
    fb_config cfg;
    fb_core *c = core_with(&cfg, 10, 100000);
    core_sandbox *a = entry("t1", 128, 1, 1);
    assert_int_equal(core_registry_reserve(c, a, NULL, 0), 0);
    core_sandbox *out[4];
    assert_null(core_registry_get(&c->reg, a->id));
    assert_int_equal(core_registry_all(&c->reg, out, 4), 0);
    assert_int_equal(core_registry_expired(&c->reg, UINT64_MAX, out, 4), 0);
    assert_int_equal(core_registry_size(&c->reg), 0);
    assert_int_equal(core_registry_count(&c->reg, NULL), 1); /* still on the books */
    assert_false(core_registry_retire(c, a, "destroyed"));
    assert_int_equal(a->refs, 2);
    core_registry_release(c, a);
    free(c->reg.items);
    free(c);
    fb_config_free(&cfg);
}

/* vCPUs count against the team's quota too (finding 15); the reason
 * policy gives is what the caller is told. */
static void test_vcpu_quota(void **state)
{
    (void)state;
    fb_config cfg;
    fb_core *c = core_with(&cfg, 10, 100000);
    cfg.quotas.max_vcpus_per_team = 4;
    core_sandbox *a = entry("t1", 128, 3, 1), *b = entry("t1", 128, 2, 2), *d = entry("t1", 128, 1, 3);
    char why[160] = "";
    assert_int_equal(core_registry_reserve(c, a, why, sizeof why), 0);
    assert_int_equal(core_registry_reserve(c, b, why, sizeof why), 1);
    assert_non_null(strstr(why, "vCPU"));
    assert_int_equal(core_registry_reserve(c, d, NULL, 0), 0); /* 3 + 1 fits exactly */
    core_registry_release(c, a);
    core_registry_release(c, d);
    free(b);
    assert_int_equal(c->reg.n, 0);
    free(c->reg.items);
    free(c);
    fb_config_free(&cfg);
}

/* The quota counts what other gateways and nodes hold in the store, and
 * a failed store reservation is an error, not a refusal. */
static void test_records_of_other_nodes_count(void **state)
{
    (void)state;
    fb_config cfg;
    fb_core *c = core_with(&cfg, 2, 100000);
    fb_sandbox_record rec = {"sb-elsewhere", "t1", "", "jail", 128, 1, TEST_T0, TEST_T0, false};
    fb_quota_limits lim = {2, 100000, 100};
    char why[160] = "";
    fb_err err = {{0}};
    assert_int_equal(fb_store_sandbox_reserve(fx->st, &rec, "nd_00000000000000bb", &lim, why, sizeof why, &err), 0);
    core_sandbox *a = entry("t1", 128, 1, 1), *b = entry("t1", 128, 1, 2), *u = entry("t404", 128, 1, 1);
    assert_int_equal(core_registry_reserve(c, a, why, sizeof why), 0);
    assert_int_equal(core_registry_reserve(c, b, why, sizeof why), 1);
    assert_string_equal(why, "team quota exceeded: 2 of 2 sandboxes in use");
    assert_int_equal(c->reg.n, 1);
    assert_int_equal(fb_store_sandbox_set_state(fx->st, "sb-elsewhere", "lost", &err), FB_STORE_OK);
    assert_int_equal(core_registry_reserve(c, b, why, sizeof why), 0);
    assert_int_equal(core_registry_reserve(c, u, why, sizeof why), -1); /* no such team in the store */
    assert_non_null(strstr(why, "not_found"));
    assert_int_equal(c->reg.n, 2);
    core_registry_release(c, a);
    core_registry_release(c, b);
    free(u);
    free(c->reg.items);
    free(c);
    fb_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_count_quota_per_team, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_memory_quota, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_pending_entries_are_invisible, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_vcpu_quota, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_records_of_other_nodes_count, setup, test_store_fx_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
