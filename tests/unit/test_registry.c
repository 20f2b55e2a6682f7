/*
 * test_registry.c - unit tests for the service layer's table of live
 * sandboxes (src/core/registry.c, internal.h): quota reservations and the
 * visibility of entries being created.
 *
 * What needs a running sandbox (activation, retiring, finalising by the
 * last reference) is covered end to end by the gateway's integration
 * tests (test_gateway_findings.py: the create/reaper race, stalled
 * streams, delete during exec); here the bookkeeping is checked alone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static fb_core *core_with(fb_config *cfg, uint64_t max_count, uint64_t max_mem)
{
    assert_int_equal(fb_config_defaults(cfg), 0);
    cfg->quotas.max_sandboxes_per_team = max_count;
    cfg->quotas.max_memory_mib_per_team = max_mem;
    fb_core *c = calloc(1, sizeof *c);
    c->cfg = cfg;
    core_registry_init(&c->reg);
    return c;
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
    core_registry_drop(&c->reg, a);                        /* a failed create gives its slot back */
    assert_int_equal(core_registry_reserve(c, x, NULL, 0), 0);
    core_registry_drop(&c->reg, b);
    core_registry_drop(&c->reg, x);
    core_registry_drop(&c->reg, other);
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
    core_registry_drop(&c->reg, a);
    core_registry_drop(&c->reg, d);
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
    core_registry_drop(&c->reg, a);
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
    core_registry_drop(&c->reg, a);
    core_registry_drop(&c->reg, d);
    free(b);
    assert_int_equal(c->reg.n, 0);
    free(c->reg.items);
    free(c);
    fb_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_quota_per_team),
        cmocka_unit_test(test_memory_quota),
        cmocka_unit_test(test_pending_entries_are_invisible),
        cmocka_unit_test(test_vcpu_quota),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
