/*
 * test_agent_jheap.c - unit tests for src/agent/jheap.c, the agent's
 * allocator for jansson and an exec's environment: every size gets a
 * block it can fill, 16-byte aligned; a freed block of up to 4 KiB comes
 * back for the next allocation of its size class (the point: no trip
 * through malloc), at most JHEAP_KEEP kept per class; larger blocks and
 * the overflow go back to malloc; and jansson through it (json_dumps'
 * text freed by fb_json_text_free) round-trips a frame header.
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

#include "agent/jheap.c"
#include "proto/proto.h"

static void test_sizes_alignment_and_contents(void **state)
{
    (void)state;
    void *p[200];
    for (size_t n = 0; n < 200; n++) {
        size_t len = n * 37;
        p[n] = fb_jheap_alloc(len);
        assert_non_null(p[n]);
        assert_int_equal((uintptr_t)p[n] % 16, 0);
        memset(p[n], (int)n, len);
    }
    for (size_t n = 0; n < 200; n++) {
        unsigned char *b = p[n];
        for (size_t i = 0; i < n * 37; i++)
            if (b[i] != (unsigned char)n)
                fail_msg("block %zu byte %zu overwritten", n, i);
        fb_jheap_free(p[n]);
    }
    fb_jheap_free(NULL);
}

static void test_a_freed_block_is_reused_within_its_class(void **state)
{
    (void)state;
    void *a = fb_jheap_alloc(100);
    fb_jheap_free(a);
    void *b = fb_jheap_alloc(90); /* same class: 128 with the header */
    assert_ptr_equal(a, b);
    fb_jheap_free(b);
    void *c = fb_jheap_alloc(4096 - JHEAP_HDR);
    fb_jheap_free(c);
    assert_ptr_equal(fb_jheap_alloc(3000), c);
    fb_jheap_free(c);
    /* Larger than the largest class: malloc's, never on a list. */
    void *big = fb_jheap_alloc(5000);
    assert_non_null(big);
    assert_int_equal(((uint8_t *)big - JHEAP_HDR)[0], JHEAP_LARGE);
    fb_jheap_free(big);
}

static void test_at_most_keep_blocks_per_class(void **state)
{
    (void)state;
    void *p[3 * JHEAP_KEEP];
    for (size_t i = 0; i < 3 * JHEAP_KEEP; i++)
        p[i] = fb_jheap_alloc(200);
    for (size_t i = 0; i < 3 * JHEAP_KEEP; i++)
        fb_jheap_free(p[i]);
    unsigned k = 0;
    while ((32u << k) < 200 + JHEAP_HDR)
        k++;
    assert_int_equal(free_count[k], JHEAP_KEEP);
    size_t listed = 0;
    for (struct jheap_block *b = free_list[k]; b; b = b->next)
        listed++;
    assert_int_equal(listed, JHEAP_KEEP);
}

static void test_jansson_through_it(void **state)
{
    (void)state;
    fb_jheap_install();
    for (int round = 0; round < 50; round++) {
        json_t *h = json_pack("{s:s, s:I, s:n, s:I}", "t", "exit", "id", (json_int_t)round, "signal",
                              "duration_ms", (json_int_t)3);
        assert_non_null(h);
        uint8_t *frame;
        size_t len;
        fb_err err = {{0}};
        assert_int_equal(fb_frame_encode(h, "x", 1, &frame, &len, &err), 0);
        json_decref(h);
        json_t *arr = json_pack("[i]", round);
        char *text = json_dumps(arr, JSON_COMPACT);
        json_decref(arr);
        assert_non_null(text);
        char want[16];
        snprintf(want, sizeof want, "[%d]", round);
        assert_string_equal(text, want);
        fb_json_text_free(text);
        free(frame);
    }
    json_set_alloc_funcs(malloc, free);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_alignment_and_contents),
        cmocka_unit_test(test_a_freed_block_is_reused_within_its_class),
        cmocka_unit_test(test_at_most_keep_blocks_per_class),
        cmocka_unit_test(test_jansson_through_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
