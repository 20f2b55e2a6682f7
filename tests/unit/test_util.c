/*
 * test_util.c - unit tests for the src/common/util.h helpers this slice
 * added: the child's die-with-error (errno is reported, not lost), the
 * read-until-full loop and create-once files.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

/* The errno at the call reaches the report, as bubblewrap's die_with_error. */
static void test_die_with_error_reports_errno(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        errno = ENOENT;
        fb_die_with_error(p[1], "cannot open %s", "/nowhere");
    }
    close(p[1]);
    char buf[600];
    size_t n = 0;
    assert_int_equal(fb_read_up_to(p[0], buf, sizeof buf - 1, &n), 0);
    buf[n] = '\0';
    close(p[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 125);
    assert_string_equal(buf, "cannot open /nowhere: No such file or directory");
}

/* Short reads are joined until the buffer is full or the writer is done. */
static void test_read_up_to(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "abc", 3), 3);
    assert_int_equal(write(p[1], "defgh", 5), 5);
    char buf[16];
    size_t n = 0;
    assert_int_equal(fb_read_up_to(p[0], buf, 6, &n), 0);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "abcdef", 6);
    close(p[1]);
    assert_int_equal(fb_read_up_to(p[0], buf, sizeof buf, &n), 0);
    assert_int_equal(n, 2); /* end of file before the buffer filled */
    assert_memory_equal(buf, "gh", 2);
    close(p[0]);
    assert_int_equal(fb_read_up_to(-1, buf, sizeof buf, &n), -1);
    assert_int_equal(errno, EBADF);
}

/* A second creator never replaces the first file; the file is private. */
static void test_create_file_once(void **state)
{
    (void)state;
    char dir[] = "/tmp/fb-test-util-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/once", dir);
    fb_err err = {{0}};
    assert_int_equal(fb_create_file_once(path, "first", 5, &err), 0);
    assert_int_equal(fb_create_file_once(path, "second", 6, &err), 0);
    char buf[16] = "";
    assert_int_equal(fb_read_file(path, buf, sizeof buf, &err), 0);
    assert_string_equal(buf, "first");
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    char missing[80];
    snprintf(missing, sizeof missing, "%s/no/such/dir/f", dir);
    assert_int_equal(fb_create_file_once(missing, "x", 1, &err), -1);
    assert_non_null(strstr(err.msg, "cannot create"));
    fb_rm_rf(dir);
}

static void test_fail_code(void **state)
{
    (void)state;
    fb_err err = {{0}};
    assert_int_equal(fb_fail_code(&err, -7, "no %s", "thing"), -7);
    assert_string_equal(err.msg, "no thing");
    assert_int_equal(fb_fail_code(NULL, -3, "ignored"), -3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_die_with_error_reports_errno),
        cmocka_unit_test(test_read_up_to),
        cmocka_unit_test(test_create_file_once),
        cmocka_unit_test(test_fail_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
