/*
 * test_ratelimit.c - unit tests for the token buckets and the failed-
 * authentication gate (src/gateway/ratelimit.h), on a clock the test
 * moves by hand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "gateway/ratelimit.h"

#define SEC 1000000000ull
static const uint64_t T0 = 1000 * SEC;

static void test_burst_then_refill(void **state)
{
    (void)state;
    gw_ratelimit *rl = gw_ratelimit_new(2.0, 3.0);
    assert_non_null(rl);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_ratelimit_take_at(rl, "k", T0), 0);
    assert_int_equal(gw_ratelimit_take_at(rl, "k", T0), 1);
    assert_int_equal(gw_ratelimit_take_at(rl, "other", T0), 0); /* buckets are per key */
    assert_int_equal(gw_ratelimit_take_at(rl, "k", T0 + SEC / 2), 0); /* one token back */
    assert_int_equal(gw_ratelimit_take_at(rl, "k", T0 + SEC / 2), 1);
    /* Never more than the burst, however long the wait. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_ratelimit_take_at(rl, "k", T0 + 3600 * SEC), 0);
    assert_true(gw_ratelimit_take_at(rl, "k", T0 + 3600 * SEC) > 0);
    gw_ratelimit_free(rl);
}

static void test_retry_after_is_honest(void **state)
{
    (void)state;
    gw_ratelimit *rl = gw_ratelimit_new(0.25, 1.0);
    assert_int_equal(gw_ratelimit_take_at(rl, "k", T0), 0);
    int wait = gw_ratelimit_take_at(rl, "k", T0);
    assert_int_equal(wait, 4);
    assert_true(gw_ratelimit_take_at(rl, "k", T0 + (uint64_t)(wait - 1) * SEC) > 0);
    assert_int_equal(gw_ratelimit_take_at(rl, "k", T0 + (uint64_t)(wait + 1) * SEC), 0);
    gw_ratelimit_free(rl);
}

static void test_clock_going_back_does_not_refill(void **state)
{
    (void)state;
    gw_ratelimit *rl = gw_ratelimit_new(1.0, 1.0);
    assert_int_equal(gw_ratelimit_take_at(rl, "k", T0), 0);
    assert_true(gw_ratelimit_take_at(rl, "k", T0 - 100 * SEC) > 0);
    gw_ratelimit_free(rl);
}

static void test_bad_parameters(void **state)
{
    (void)state;
    assert_null(gw_ratelimit_new(0.0, 5.0));
    assert_null(gw_ratelimit_new(1.0, 0.5));
}

static void test_sources(void **state)
{
    (void)state;
    char s[64];
    gw_failgate_source("192.0.2.7", s);
    assert_string_equal(s, "ip:192.0.2.7");
    gw_failgate_source("::ffff:192.0.2.7", s);
    assert_string_equal(s, "ip:192.0.2.7");
    gw_failgate_source("2001:db8:1:2:aaaa:bbbb:cccc:dddd", s);
    assert_string_equal(s, "net:2001:db8:1:2::/64");
    gw_failgate_source("2001:db8:1:2::1", s);
    assert_string_equal(s, "net:2001:db8:1:2::/64");
    gw_failgate_source("2001:db8:1:3::1", s);
    assert_string_equal(s, "net:2001:db8:1:3::/64");
    gw_failgate_source("unknown", s);
    assert_string_equal(s, "other:unknown");
}

/* One /64 is one source, whatever the interface half. */
static void test_ipv6_rotation_within_a_64(void **state)
{
    (void)state;
    gw_failgate *g = gw_failgate_new(1.0, 5.0);
    char ip[64];
    int allowed = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(ip, sizeof ip, "2001:db8:0:7:%x:%x::1", i, i * 7);
        allowed += gw_failgate_take_at(g, ip, T0) == 0;
    }
    assert_int_equal(allowed, 5);
    /* Another /64 has its own budget. */
    assert_int_equal(gw_failgate_take_at(g, "2001:db8:0:8::1", T0), 0);
    gw_failgate_free(g);
}

/* Rotating whole sources (IPv4 addresses, /64s) meets the global bucket,
 * even though the per-source table recycles its buckets. */
static void test_rotation_across_sources_meets_the_global_budget(void **state)
{
    (void)state;
    gw_failgate *g = gw_failgate_new(1.0, 5.0);
    char ip[64];
    int allowed = 0;
    for (int i = 0; i < 100000; i++) {
        snprintf(ip, sizeof ip, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        allowed += gw_failgate_take_at(g, ip, T0) == 0;
    }
    assert_int_equal(allowed, 5 * GW_FAIL_GLOBAL_FACTOR);
    allowed = 0;
    for (int i = 0; i < 100000; i++) {
        snprintf(ip, sizeof ip, "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
        allowed += gw_failgate_take_at(g, ip, T0 + 1 * SEC) == 0;
    }
    /* One second refills the global bucket by GW_FAIL_GLOBAL_FACTOR tokens. */
    assert_int_equal(allowed, GW_FAIL_GLOBAL_FACTOR);
    gw_failgate_free(g);
}

/* A source over its own budget does not use up everybody's. */
static void test_one_source_cannot_drain_the_global_budget(void **state)
{
    (void)state;
    gw_failgate *g = gw_failgate_new(1.0, 5.0);
    for (int i = 0; i < 1000; i++)
        gw_failgate_take_at(g, "192.0.2.1", T0);
    assert_int_equal(gw_failgate_take_at(g, "192.0.2.2", T0), 0);
    gw_failgate_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refill),
        cmocka_unit_test(test_retry_after_is_honest),
        cmocka_unit_test(test_clock_going_back_does_not_refill),
        cmocka_unit_test(test_bad_parameters),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_ipv6_rotation_within_a_64),
        cmocka_unit_test(test_rotation_across_sources_meets_the_global_budget),
        cmocka_unit_test(test_one_source_cannot_drain_the_global_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
