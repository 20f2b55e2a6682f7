/*
 * test_time.c - unit tests for src/common/time.h: the one RFC 3339 parser
 * and formatter, checked against values computed independently (date(1)
 * and Python's datetime gave the epoch seconds below) and against the
 * inputs the grammar must refuse.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/time.h"

static void parses_to(const char *in, long long secs, long nsec)
{
    struct timespec ts = {0, 0};
    if (fb_time_parse(in, &ts) < 0)
        fail_msg("'%s' was refused", in);
    if ((long long)ts.tv_sec != secs || ts.tv_nsec != nsec)
        fail_msg("'%s' -> %lld.%09ld, want %lld.%09ld", in, (long long)ts.tv_sec, ts.tv_nsec, secs, nsec);
}

static void test_parse_valid(void **state)
{
    (void)state;
    parses_to("1970-01-01T00:00:00Z", 0, 0);
    parses_to("2030-01-31T12:00:00Z", 1896091200, 0);
    parses_to("2030-01-31t12:00:00z", 1896091200, 0);
    parses_to("2030-01-31T13:30:00.5+01:30", 1896091200, 500000000);
    parses_to("2030-01-31T10:00:00-02:00", 1896091200, 0);
    parses_to("2024-02-29T23:59:59.123456789-00:00", 1709251199, 123456789);
    parses_to("2000-02-29T00:00:00Z", 951782400, 0);         /* 400-year leap */
    parses_to("1969-12-31T23:59:59.999999999Z", -1, 999999999);
    parses_to("0001-01-01T00:00:00Z", -62135596800LL, 0);
    parses_to("9999-12-31T23:59:59.999999999Z", 253402300799LL, 999999999);
    /* Fractions of every length from 1 to 9 digits. */
    static const long want[] = {100000000, 120000000, 123000000, 123400000, 123450000,
                                123456000, 123456700, 123456780, 123456789};
    char text[64];
    for (int n = 1; n <= 9; n++) {
        snprintf(text, sizeof text, "2026-11-29T10:31:07.%.*sZ", n, "123456789");
        parses_to(text, 1795948267, want[n - 1]);
    }
}

static void test_leap_second(void **state)
{
    (void)state;
    /* 23:59:60 UTC folds into the next second; nowhere else exists. */
    parses_to("2016-12-31T23:59:60Z", 1483228800, 0);
    parses_to("2016-12-31T23:59:60.5Z", 1483228800, 500000000);
    parses_to("2017-01-01T00:59:60+01:00", 1483228800, 0);
    struct timespec ts;
    assert_int_equal(fb_time_parse("2016-12-31T12:00:60Z", &ts), -1);
    assert_int_equal(fb_time_parse("2016-12-31T23:58:60Z", &ts), -1);
    assert_int_equal(fb_time_parse("2016-12-31T23:59:60+01:00", &ts), -1);
    assert_int_equal(fb_time_parse("2016-12-31T23:59:61Z", &ts), -1);
}

static void test_parse_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "2030", "2030-01-31", "2030-01-31 12:00:00Z", "2030-01-31T12:00:00", "2030-13-01T00:00:00Z",
        "2030-00-01T00:00:00Z", "2030-01-00T00:00:00Z", "2030-01-32T00:00:00Z", "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z", "2030-04-31T00:00:00Z", "2030-01-31T24:00:00Z", "2030-01-31T12:60:00Z",
        "2030-01-31T12:00:00.Z", "2030-01-31T12:00:00.1234567890Z", "2030-01-31T12:00:00+1:00",
        "2030-01-31T12:00:00+0100", "2030-01-31T12:00:00+24:00", "2030-01-31T12:00:00+01:60",
        "2030-01-31T12:00:00Z ", " 2030-01-31T12:00:00Z", "2030-1-31T12:00:00Z", "+030-01-31T12:00:00Z",
        "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01",
        "2030-01-31T12:00:00Zjunk", "2030-01-31T12:00:00.5.5Z", "2030-01-31T1a:00:00Z",
        "2030-01-31T12:00:00\n", "2030-01-31X12:00:00Z", "2030/01/31T12:00:00Z", "garbage",
    };
    struct timespec ts = {42, 7};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (fb_time_parse(bad[i], &ts) == 0)
            fail_msg("'%s' was accepted as %lld", bad[i], (long long)ts.tv_sec);
    assert_int_equal(fb_time_parse(NULL, &ts), -1);
    /* Untouched on failure. */
    assert_int_equal(ts.tv_sec, 42);
    assert_int_equal(ts.tv_nsec, 7);
}

static void test_filter_forms(void **state)
{
    (void)state;
    struct timespec ts;
    assert_int_equal(fb_time_parse_filter("2026-11-29", &ts), 0);
    assert_int_equal(ts.tv_sec, 1795910400);
    assert_int_equal(fb_time_parse_filter("2026-11-29 10:31:07.5Z", &ts), 0);
    assert_int_equal(ts.tv_sec, 1795948267);
    assert_int_equal(ts.tv_nsec, 500000000);
    assert_int_equal(fb_time_parse_filter("2026-02-29", &ts), -1);
    assert_int_equal(fb_time_parse_filter("2026-11-29T", &ts), -1);
    assert_int_equal(fb_time_parse_filter("2026-11-29x", &ts), -1);
    assert_int_equal(fb_time_parse_filter("2026-11", &ts), -1);
}

static void test_format(void **state)
{
    (void)state;
    char out[FB_TIME_MAX];
    struct timespec ts = {1896091200, 500000000};
    assert_int_equal(fb_time_format(&ts, out), 0);
    assert_string_equal(out, "2030-01-31T12:00:00.500000000Z");
    ts = (struct timespec){-1, 999999999};
    assert_int_equal(fb_time_format(&ts, out), 0);
    assert_string_equal(out, "1969-12-31T23:59:59.999999999Z");
    ts = (struct timespec){-62135596800LL, 0};
    assert_int_equal(fb_time_format(&ts, out), 0);
    assert_string_equal(out, "0001-01-01T00:00:00.000000000Z");
    ts = (struct timespec){-62135596801LL, 0};
    assert_int_equal(fb_time_format(&ts, out), -1);
    assert_string_equal(out, "");
    ts = (struct timespec){253402300800LL, 0};
    assert_int_equal(fb_time_format(&ts, out), -1);
    ts = (struct timespec){0, 1000000000};
    assert_int_equal(fb_time_format(&ts, out), -1);
    assert_int_equal(fb_time_format_after((struct timespec){1896091200, 0}, 86400 * 29, out), 0);
    assert_string_equal(out, "2030-03-01T12:00:00.000000000Z"); /* 2030 is not a leap year */
    assert_int_equal(fb_time_normalise("2024-02-28T23:30:00-01:00", out), 0);
    assert_string_equal(out, "2024-02-29T00:30:00.000000000Z");
    assert_int_equal(fb_time_normalise("2030-02-29T00:00:00Z", out), -1);
}

/* Every day for 800 years round-trips through format and parse: the
 * calendar arithmetic agrees with itself across leap rules. */
static void test_round_trip(void **state)
{
    (void)state;
    char out[FB_TIME_MAX];
    struct timespec back;
    for (long long s = -2208988800LL; s < 23036688000LL; s += 86400 + 3607) {
        struct timespec ts = {(time_t)s, 123};
        assert_int_equal(fb_time_format(&ts, out), 0);
        assert_int_equal(strlen(out), FB_TIME_TEXT_LEN);
        assert_int_equal(fb_time_parse(out, &back), 0);
        assert_int_equal(fb_time_cmp(&ts, &back), 0);
    }
}

static void test_clocks(void **state)
{
    (void)state;
    char a[FB_TIME_MAX], b[FB_TIME_MAX];
    fb_time_now(a);
    uint64_t m0 = fb_time_monotonic_ns();
    int64_t r0 = fb_time_realtime_ns();
    fb_time_now(b);
    assert_int_equal(strlen(a), FB_TIME_TEXT_LEN);
    assert_true(strcmp(a, b) <= 0); /* text order is time order */
    assert_true(r0 > 1700000000LL * 1000000000LL);
    assert_true(fb_time_monotonic_ns() >= m0);
    struct timespec x = {5, 1}, y = {5, 2};
    assert_int_equal(fb_time_cmp(&x, &y), -1);
    assert_int_equal(fb_time_cmp(&y, &x), 1);
    assert_int_equal(fb_time_cmp(&x, &x), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),  cmocka_unit_test(test_leap_second), cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_filter_forms), cmocka_unit_test(test_format),      cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
