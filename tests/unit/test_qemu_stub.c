/*
 * test_qemu_stub.c - unit tests for QEMU's Capstone stub (src/sandbox/
 * qemu_stub.h): the stub the binary carries is a shared object that needs
 * nothing and defines every function of the list vm.c checks QEMU's imports
 * against, and that check says no when QEMU imports one the list lacks.
 * The installed QEMU is read when there is one (skipped otherwise).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "sandbox/qemu_stub.h"

#define QEMU "/usr/bin/qemu-system-x86_64"

static size_t count(const char *const *names)
{
    size_t n = 0;
    while (names[n])
        n++;
    return n;
}

/* The list without its i-th name (a NULL-terminated copy to free). */
static const char **without(const char *const *names, size_t i)
{
    size_t n = count(names), k = 0;
    const char **out = calloc(n + 1, sizeof *out);
    for (size_t j = 0; j < n; j++)
        if (j != i)
            out[k++] = names[j];
    return out;
}

static void write_stub(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/fb-qemu-stub-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(fb_write_all(fd, fb_qemu_capstone_stub, fb_qemu_capstone_stub_len), 0);
    close(fd);
}

static void test_stub_defines_exactly_the_list_and_needs_nothing(void **state)
{
    (void)state;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)fb_qemu_capstone_stub;
    assert_true(fb_qemu_capstone_stub_len > sizeof *eh);
    assert_memory_equal(eh->e_ident, ELFMAG, SELFMAG);
    assert_int_equal(eh->e_type, ET_DYN);
    char path[64];
    write_stub(path, sizeof path);
    /* Every Capstone function it defines is listed... */
    assert_int_equal(fb_qemu_stub_exports(path, fb_qemu_capstone_stub_symbols), 1);
    /* ...and every listed one is defined: without any one name, the
     * stub's exports are no longer all listed. */
    for (size_t i = 0; fb_qemu_capstone_stub_symbols[i]; i++) {
        const char **fewer = without(fb_qemu_capstone_stub_symbols, i);
        assert_int_equal(fb_qemu_stub_exports(path, fewer), -1);
        free(fewer);
    }
    /* It imports no Capstone function. */
    assert_int_equal(fb_qemu_stub_covers(path, fb_qemu_capstone_stub_symbols), 0);
    unlink(path);
}

static void test_not_elf_is_refused(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/fb-qemu-stub-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(fb_write_all(fd, "#!/bin/sh\necho not a binary\n", 28), 0);
    close(fd);
    assert_int_equal(fb_qemu_stub_covers(path, fb_qemu_capstone_stub_symbols), -1);
    assert_false(fb_qemu_stub_capstone(path));
    unlink(path);
    assert_int_equal(fb_qemu_stub_covers("/nonexistent/qemu", fb_qemu_capstone_stub_symbols), -1);
    assert_false(fb_qemu_stub_capstone("/nonexistent/qemu"));
}

static void test_installed_qemu(void **state)
{
    (void)state;
    if (access(QEMU, R_OK) != 0) {
        skip();
        return;
    }
    int all = fb_qemu_stub_covers(QEMU, fb_qemu_capstone_stub_symbols);
    if (all == 0) {
        /* A QEMU built without Capstone: nothing to replace. */
        assert_false(fb_qemu_stub_capstone(QEMU));
        return;
    }
    /* Debian's 7.2 imports five; the stub covers them. */
    assert_int_equal(all, 1);
    assert_true(fb_qemu_stub_capstone(QEMU));
    /* A list missing any function QEMU imports is refused: that is what
     * keeps a later QEMU that needs more than the stub from being given it. */
    size_t refused = 0;
    for (size_t i = 0; fb_qemu_capstone_stub_symbols[i]; i++) {
        const char **fewer = without(fb_qemu_capstone_stub_symbols, i);
        refused += fb_qemu_stub_covers(QEMU, fewer) == -1;
        free(fewer);
    }
    assert_true(refused >= 1);
    const char *const only_open[] = {"cs_open", NULL};
    assert_int_equal(fb_qemu_stub_covers(QEMU, only_open), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stub_defines_exactly_the_list_and_needs_nothing),
        cmocka_unit_test(test_not_elf_is_refused),
        cmocka_unit_test(test_installed_qemu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
