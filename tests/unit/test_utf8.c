/*
 * test_utf8.c - unit tests for the UTF-8 cleaner (src/common/utf8.h).
 *
 * The bug that made this module: 100,000 x "é" streamed in 32 KiB chunks
 * came back with 12 U+FFFD, one per chunk boundary that cut a character.
 * Besides that case, every class of ill-formed input is checked for its
 * exact output, and chunked cleaning is checked to equal one-shot cleaning
 * for every split point of a mixed sample.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"

#define R FB_UTF8_REPLACEMENT

/* Cleans in in chunks of `chunk` bytes; returns a malloc'd string. */
static char *clean_chunked(const char *in, size_t n, size_t chunk, size_t *out_len)
{
    fb_utf8_cleaner c;
    fb_utf8_cleaner_init(&c);
    char *out = malloc(fb_utf8_clean_bound(n) + 4);
    assert_non_null(out);
    size_t k = 0;
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        k += fb_utf8_clean_chunk(&c, in + off, len, out + k);
    }
    k += fb_utf8_clean_finish(&c, out + k);
    out[k] = '\0';
    *out_len = k;
    return out;
}

static void expect_clean(const char *in, size_t n, const char *want)
{
    size_t len;
    char *got = fb_utf8_clean(in, n, &len);
    assert_non_null(got);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    free(got);
    /* Byte by byte must give the same. */
    got = clean_chunked(in, n, 1, &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    free(got);
}

static void test_streamed_e_acute_in_32k_chunks(void **state)
{
    (void)state;
    const size_t count = 100000;
    char *in = malloc(count * 2);
    assert_non_null(in);
    for (size_t i = 0; i < count; i++)
        memcpy(in + 2 * i, "\xC3\xA9", 2);
    size_t len;
    char *out = clean_chunked(in, count * 2, 32 * 1024, &len);
    assert_int_equal(len, count * 2);
    assert_memory_equal(out, in, count * 2);
    assert_null(strstr(out, R));
    free(out);
    /* Odd chunk sizes cut 3- and 4-byte characters at every offset. */
    const char *mix = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z";
    size_t mlen = strlen(mix);
    for (size_t chunk = 1; chunk <= mlen; chunk++) {
        char *o = clean_chunked(mix, mlen, chunk, &len);
        assert_int_equal(len, mlen);
        assert_memory_equal(o, mix, mlen);
        free(o);
    }
    free(in);
}

static void test_valid_passes_unchanged(void **state)
{
    (void)state;
    expect_clean("plain ascii\n", 12, "plain ascii\n");
    expect_clean("\xC2\x80\xDF\xBF", 4, "\xC2\x80\xDF\xBF");
    expect_clean("\xE0\xA0\x80\xEF\xBF\xBF", 6, "\xE0\xA0\x80\xEF\xBF\xBF");
    expect_clean("\xED\x9F\xBF\xEE\x80\x80", 6, "\xED\x9F\xBF\xEE\x80\x80"); /* around surrogates */
    expect_clean("\xF0\x90\x80\x80\xF4\x8F\xBF\xBF", 8, "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF");
    expect_clean("", 0, "");
}

static void test_overlong_forms(void **state)
{
    (void)state;
    /* C0/C1 can only start overlong forms: each byte is invalid alone. */
    expect_clean("\xC0\xAF", 2, R R);
    expect_clean("\xC1\xBF", 2, R R);
    /* E0 80..9F and F0 80..8F are overlong: the lead is a maximal subpart
     * of one byte, and each continuation byte is then stray. */
    expect_clean("\xE0\x80\xAF", 3, R R R);
    expect_clean("\xF0\x80\x80\xAF", 4, R R R R);
    expect_clean("\xE0\x9F\xBF", 3, R R R);
}

static void test_surrogates(void **state)
{
    (void)state;
    expect_clean("\xED\xA0\x80", 3, R R R);       /* U+D800 */
    expect_clean("\xED\xBF\xBF", 3, R R R);       /* U+DFFF */
    expect_clean("x\xED\xB0\x80y", 5, "x" R R R "y");
}

static void test_above_max_code_point(void **state)
{
    (void)state;
    expect_clean("\xF4\x90\x80\x80", 4, R R R R); /* U+110000 */
    expect_clean("\xF5\x80\x80\x80", 4, R R R R); /* F5..FF never lead */
    expect_clean("\xFF", 1, R);
    expect_clean("\xFE\xFE", 2, R R);
}

static void test_stray_and_cut_sequences(void **state)
{
    (void)state;
    expect_clean("\x80", 1, R);
    expect_clean("a\xBF" "b", 3, "a" R "b");
    /* A valid prefix cut by an unexpected byte: ONE U+FFFD, then the byte. */
    expect_clean("\xE2\x82" "A", 3, R "A");
    expect_clean("\xF0\x9F\x98" "\xC3\xA9", 5, R "\xC3\xA9");
    expect_clean("\xC3\xC3\xA9", 3, R "\xC3\xA9");
}

static void test_truncated_at_end_of_stream(void **state)
{
    (void)state;
    expect_clean("ok\xC3", 3, "ok" R);
    expect_clean("ok\xE2\x82", 4, "ok" R);
    expect_clean("ok\xF0\x9F\x98", 5, "ok" R);
    /* Held back across a chunk, then the stream ends: still one U+FFFD. */
    fb_utf8_cleaner c;
    fb_utf8_cleaner_init(&c);
    char out[32];
    size_t k = fb_utf8_clean_chunk(&c, "x\xF0\x9F", 3, out);
    assert_int_equal(k, 1);
    k += fb_utf8_clean_chunk(&c, "\x98", 1, out + k);
    assert_int_equal(k, 1);
    k += fb_utf8_clean_finish(&c, out + k);
    assert_int_equal(k, 4);
    assert_memory_equal(out, "x" R, 4);
    /* finish resets: the cleaner is reusable. */
    assert_int_equal(fb_utf8_clean_finish(&c, out), 0);
}

static void test_nul_is_replaced(void **state)
{
    (void)state;
    expect_clean("a\0b", 3, "a" R "b");
    size_t len;
    char *s = fb_utf8_clean("\0", 1, &len);
    assert_int_equal(len, 3);
    assert_int_equal(strlen(s), 3);
    free(s);
}

static void test_chunked_equals_oneshot_for_every_split(void **state)
{
    (void)state;
    const char sample[] = "A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xED\xA0\x80\xC0\xAF\xE2\x82"
                          "B\xF4\x90\x80\x80\x00\xC3";
    size_t n = sizeof sample - 1;
    size_t want_len;
    char *want = fb_utf8_clean(sample, n, &want_len);
    for (size_t cut = 0; cut <= n; cut++) {
        fb_utf8_cleaner c;
        fb_utf8_cleaner_init(&c);
        char out[256];
        size_t k = fb_utf8_clean_chunk(&c, sample, cut, out);
        k += fb_utf8_clean_chunk(&c, sample + cut, n - cut, out + k);
        k += fb_utf8_clean_finish(&c, out + k);
        assert_int_equal(k, want_len);
        assert_memory_equal(out, want, k);
        assert_true(fb_utf8_valid(out, k, false));
    }
    free(want);
}

static void test_bound(void **state)
{
    (void)state;
    assert_int_equal(fb_utf8_clean_bound(0), 3);
    assert_int_equal(fb_utf8_clean_bound(10), 33);
    assert_int_equal(fb_utf8_clean_bound(SIZE_MAX / 2), SIZE_MAX);
    /* The worst case really fits: held-back bytes plus all-invalid input. */
    fb_utf8_cleaner c;
    fb_utf8_cleaner_init(&c);
    char out[64];
    size_t k = fb_utf8_clean_chunk(&c, "\xF0\x9F\x98", 3, out);
    assert_int_equal(k, 0);
    k = fb_utf8_clean_chunk(&c, "\xFF\xFF", 2, out);
    assert_true(k <= fb_utf8_clean_bound(2));
    assert_int_equal(k, 9);
}

static void test_validate(void **state)
{
    (void)state;
    assert_true(fb_utf8_valid("h\xC3\xA9llo", 6, false));
    assert_true(fb_utf8_valid("", 0, false));
    assert_false(fb_utf8_valid("a\0b", 3, false));
    assert_true(fb_utf8_valid("a\0b", 3, true));
    assert_false(fb_utf8_valid("\xC0\x80", 2, true)); /* overlong NUL */
    assert_false(fb_utf8_valid("\xED\xA0\x80", 3, false));
    assert_false(fb_utf8_valid("\xF4\x90\x80\x80", 4, false));
    assert_false(fb_utf8_valid("\xE2\x82", 2, false));
    assert_false(fb_utf8_valid("\x80", 1, false));
    assert_true(fb_utf8_valid("\xF4\x8F\xBF\xBF", 4, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streamed_e_acute_in_32k_chunks),
        cmocka_unit_test(test_valid_passes_unchanged),
        cmocka_unit_test(test_overlong_forms),
        cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_above_max_code_point),
        cmocka_unit_test(test_stray_and_cut_sequences),
        cmocka_unit_test(test_truncated_at_end_of_stream),
        cmocka_unit_test(test_nul_is_replaced),
        cmocka_unit_test(test_chunked_equals_oneshot_for_every_split),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests_name("utf8", tests, NULL, NULL);
}
