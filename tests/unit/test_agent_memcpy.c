/*
 * test_agent_memcpy.c - unit tests for src/agent/memcpy.c, the memcpy of
 * the agent built with musl, compiled here under another name: every
 * length up to 300 and some large ones, at every alignment of source and
 * destination mod 16, against a byte loop, with guard bytes on both sides
 * of the destination that must stay untouched; and its memmove on every
 * overlap of source and destination, both ways.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#define memcpy fb_agent_memcpy
#define memmove fb_agent_memmove
#include "agent/memcpy.c"
#undef memcpy
#undef memmove

static void copy_and_check(size_t n, size_t soff, size_t doff, unsigned char *src, unsigned char *dst)
{
    const size_t guard = 64;
    memset(dst, 0xA5, doff + n + 2 * guard);
    for (size_t i = 0; i < n; i++)
        src[soff + i] = (unsigned char)(i * 131u + n + soff);
    void *r = fb_agent_memcpy(dst + guard + doff, src + soff, n);
    if (r != dst + guard + doff)
        fail_msg("n=%zu: wrong return value", n);
    for (size_t i = 0; i < guard + doff; i++)
        if (dst[i] != 0xA5)
            fail_msg("n=%zu soff=%zu doff=%zu: byte %zu before the copy written", n, soff, doff, i);
    for (size_t i = 0; i < n; i++)
        if (dst[guard + doff + i] != src[soff + i])
            fail_msg("n=%zu soff=%zu doff=%zu: byte %zu wrong", n, soff, doff, i);
    for (size_t i = 0; i < guard; i++)
        if (dst[guard + doff + n + i] != 0xA5)
            fail_msg("n=%zu soff=%zu doff=%zu: byte %zu after the copy written", n, soff, doff, i);
}

static void test_every_length_and_alignment(void **state)
{
    (void)state;
    unsigned char *src = malloc(70000), *dst = malloc(70000 + 256);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t n = 0; n <= 300; n++)
        for (size_t soff = 0; soff < 16; soff++)
            for (size_t doff = 0; doff < 16; doff++)
                copy_and_check(n, soff, doff, src, dst);
    static const size_t large[] = {511, 512, 513, 4095, 4096, 4097, 32768, 32769, 65536 + 7};
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        for (size_t off = 0; off < 16; off += 5)
            copy_and_check(large[i], off, 15 - off, src, dst);
    free(src);
    free(dst);
}

static void test_memmove_every_overlap(void **state)
{
    (void)state;
    unsigned char buf[600], want[600];
    for (size_t n = 0; n <= 200; n++)
        for (size_t soff = 0; soff < 200; soff += (n < 40 ? 1 : 7))
            for (size_t doff = 0; doff < 200; doff += (n < 40 ? 1 : 5)) {
                for (size_t i = 0; i < sizeof buf; i++)
                    buf[i] = want[i] = (unsigned char)(i * 7u + n);
                for (size_t i = 0; i < n; i++) /* what memmove must give */
                    want[doff + i] = buf[soff + i];
                if (fb_agent_memmove(buf + doff, buf + soff, n) != buf + doff)
                    fail_msg("n=%zu: wrong return value", n);
                if (memcmp(buf, want, sizeof buf) != 0)
                    fail_msg("memmove n=%zu from %zu to %zu is wrong", n, soff, doff);
            }
    static unsigned char big[70000], bigwant[70000];
    static const size_t shifts[] = {1, 15, 16, 17, 31, 32, 33, 4096};
    for (size_t k = 0; k < sizeof shifts / sizeof shifts[0]; k++)
        for (int dir = 0; dir < 2; dir++) {
            size_t n = 65536 + 3, sh = shifts[k], so = dir ? 0 : sh, dof = dir ? sh : 0;
            for (size_t i = 0; i < sizeof big; i++)
                big[i] = bigwant[i] = (unsigned char)(i * 13u + k);
            for (size_t i = 0; i < n; i++)
                bigwant[dof + i] = big[so + i];
            fb_agent_memmove(big + dof, big + so, n);
            if (memcmp(big, bigwant, sizeof big) != 0)
                fail_msg("memmove of %zu bytes shifted %s by %zu is wrong", n, dir ? "up" : "down", sh);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_length_and_alignment),
        cmocka_unit_test(test_memmove_every_overlap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
