/*
 * test_snapshot.c - unit tests for VM snapshot files (src/sandbox/snapshot.h):
 * made once under a lock, verified before use, refused and forgotten when
 * changed, the stat-fingerprint cache never hiding a change.  No QEMU: the
 * "snapshot" is bytes written where QEMU would write its stream.  Runs as
 * root (the files must be root's, as in production).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox/snapshot.h"

#define SHAPE "forgebox vm snapshot 1\nargv -m 512 -smp 1"

typedef struct fx {
    char state[256];
    char snap[512], meta[512];
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->state, sizeof f->state, "/tmp/fb-snap-unit-XXXXXX");
    if (!mkdtemp(f->state))
        return -1;
    char key[65];
    fb_snap_key(SHAPE, key);
    snprintf(f->snap, sizeof f->snap, "%s/vm-snapshots/%s.snap", f->state, key);
    snprintf(f->meta, sizeof f->meta, "%s/vm-snapshots/%s.json", f->state, key);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    fb_rm_rf(f->state);
    free(f);
    return 0;
}

/* Makes and commits a snapshot holding `bytes`. */
static void make_one(fx *f, const char *bytes)
{
    fb_snap s;
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_MAKE);
    assert_int_equal(write(s.fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
    fb_err err = {{0}};
    assert_int_equal(fb_snap_commit(&s, &err), 0);
    fb_snap_close(&s);
}

static json_t *read_meta(fx *f)
{
    json_error_t je;
    json_t *m = json_load_file(f->meta, 0, &je);
    assert_non_null(m);
    return m;
}

static void write_meta(fx *f, json_t *m)
{
    assert_int_equal(json_dump_file(m, f->meta, JSON_COMPACT), 0);
    json_decref(m);
}

/* Made once, then restored: the same bytes from offset 0, read-only; the
 * files root's alone. */
static void test_make_then_restore(void **state)
{
    fx *f = *state;
    make_one(f, "migration stream");
    struct stat st;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/vm-snapshots", f->state);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(stat(f->snap, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0400);
    assert_int_equal(stat(f->meta, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    fb_snap s;
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_RESTORE);
    char buf[64] = "";
    assert_int_equal(read(s.fd, buf, sizeof buf - 1), 16);
    assert_string_equal(buf, "migration stream");
    assert_int_equal(fcntl(s.fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    fb_snap_close(&s);
    /* Another shape has none. */
    assert_int_equal(fb_snap_prepare(f->state, SHAPE " -m 1024", &s), FB_SNAP_MAKE);
    fb_snap_close(&s);
}

/* While one process makes the snapshot of a shape, the others boot cold:
 * NONE, not a second writer.  An uncommitted one leaves nothing behind. */
static void test_one_maker_at_a_time(void **state)
{
    fx *f = *state;
    fb_snap a, b;
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &a), FB_SNAP_MAKE);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &b), FB_SNAP_NONE);
    assert_int_equal(b.fd, -1);
    fb_snap_close(&a);
    assert_int_equal(access(f->snap, F_OK), -1);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", f->snap);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &b), FB_SNAP_MAKE);
    fb_snap_close(&b);
}

/* An unchanged file is trusted by its fingerprint (a record whose digest
 * was altered still restores: no rehash happened); any write to the file
 * changes its ctime, so the full digest is checked - and refuses it. */
static void test_fingerprint_cache_never_hides_a_change(void **state)
{
    fx *f = *state;
    make_one(f, "migration stream");
    json_t *m = read_meta(f);
    json_object_set_new(m, "sha256", json_string("00000000000000000000000000000000"
                                                  "00000000000000000000000000000000"));
    write_meta(f, m);
    fb_snap s;
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_RESTORE);
    fb_snap_close(&s);

    /* Same bytes written back: only the ctime changes. */
    int fd = open(f->snap, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "m", 1, 0), 1);
    close(fd);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_MAKE);
    fb_snap_close(&s);
    assert_int_equal(access(f->snap, F_OK), -1); /* refused and forgotten */
    assert_int_equal(access(f->meta, F_OK), -1);
}

/* A good file that changed is rehashed once, then trusted again. */
static void test_rehash_of_an_unmodified_copy(void **state)
{
    fx *f = *state;
    make_one(f, "migration stream");
    int fd = open(f->snap, O_WRONLY);
    assert_int_equal(pwrite(fd, "m", 1, 0), 1); /* same byte: ctime only */
    close(fd);
    fb_snap s;
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_RESTORE);
    fb_snap_close(&s);
    json_t *m = read_meta(f);
    char fp[200];
    struct stat st;
    assert_int_equal(stat(f->snap, &st), 0);
    snprintf(fp, sizeof fp, "%llu %llu %llu %lld.%09ld %lld.%09ld", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (unsigned long long)st.st_size, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
    /* The record now holds the new fingerprint: the next start trusts it. */
    assert_string_equal(json_string_value(json_object_get(m, "verified")), fp);
    json_decref(m);
}

/* Modified, truncated, recorded for another shape, or not root-only:
 * refused (MAKE: this VM boots cold and makes it again). */
static void test_refusals(void **state)
{
    fx *f = *state;
    fb_snap s;

    make_one(f, "migration stream");
    int fd = open(f->snap, O_WRONLY);
    assert_int_equal(pwrite(fd, "X", 1, 3), 1);
    close(fd);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_MAKE);
    fb_snap_close(&s);

    make_one(f, "migration stream");
    assert_int_equal(truncate(f->snap, 4), 0);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_MAKE);
    fb_snap_close(&s);

    make_one(f, "migration stream");
    json_t *m = read_meta(f);
    json_object_set_new(m, "shape", json_string(SHAPE " -m 64"));
    write_meta(f, m);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_MAKE);
    fb_snap_close(&s);

    make_one(f, "migration stream");
    assert_int_equal(chmod(f->snap, 0666), 0);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_MAKE);
    fb_snap_close(&s);

    /* A directory others can read: no snapshots at all. */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/vm-snapshots", f->state);
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_NONE);
    fb_snap_close(&s);
}

/* At most FB_SNAP_MAX_SHAPES snapshots: making one more removes the least
 * recently used (a restore counts as a use). */
static void test_eviction_of_the_least_recently_used(void **state)
{
    fx *f = *state;
    char shapes[FB_SNAP_MAX_SHAPES + 1][64];
    char key[FB_SNAP_MAX_SHAPES + 1][65];
    for (int i = 0; i <= FB_SNAP_MAX_SHAPES; i++) {
        snprintf(shapes[i], sizeof shapes[i], "shape %d", i);
        fb_snap_key(shapes[i], key[i]);
    }
    for (int i = 0; i < FB_SNAP_MAX_SHAPES; i++) {
        fb_snap s;
        assert_int_equal(fb_snap_prepare(f->state, shapes[i], &s), FB_SNAP_MAKE);
        assert_int_equal(write(s.fd, "x", 1), 1);
        fb_err err = {{0}};
        assert_int_equal(fb_snap_commit(&s, &err), 0);
        fb_snap_close(&s);
        /* File times are coarse: spell out the order of use. */
        char lpath[1024];
        snprintf(lpath, sizeof lpath, "%s/vm-snapshots/%s.lock", f->state, key[i]);
        struct timespec t[2] = {{1000 + i, 0}, {1000 + i, 0}};
        assert_int_equal(utimensat(AT_FDCWD, lpath, t, 0), 0);
    }
    fb_snap s;
    assert_int_equal(fb_snap_prepare(f->state, shapes[0], &s), FB_SNAP_RESTORE); /* used now */
    fb_snap_close(&s);
    assert_int_equal(fb_snap_prepare(f->state, shapes[FB_SNAP_MAX_SHAPES], &s), FB_SNAP_MAKE);
    fb_snap_close(&s);
    for (int i = 0; i < FB_SNAP_MAX_SHAPES; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/vm-snapshots/%s.snap", f->state, key[i]);
        assert_int_equal(access(p, F_OK) == 0, i != 1); /* shape 1 was the least recently used */
    }
}

/* discard: a snapshot QEMU would not load is gone for the next start. */
static void test_discard(void **state)
{
    fx *f = *state;
    make_one(f, "migration stream");
    fb_snap s;
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_RESTORE);
    fb_snap_discard(&s);
    assert_int_equal(access(f->snap, F_OK), -1);
    assert_int_equal(fb_snap_prepare(f->state, SHAPE, &s), FB_SNAP_MAKE);
    fb_snap_close(&s);
}

int main(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "test_snapshot: needs root (snapshots must be root's); skipped\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_make_then_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_maker_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fingerprint_cache_never_hides_a_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rehash_of_an_unmodified_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_of_the_least_recently_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
