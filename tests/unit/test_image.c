/*
 * test_image.c - unit tests for image sealing and verification
 * (src/image/image.h).
 *
 * Each test builds a small fake image in a fresh temporary directory - three
 * VM artifacts, a rootfs/ tree with files, directories, a FIFO and symlinks -
 * seals it, and primes the verification cache in a state directory.  The
 * tampering tests then change the image one way each and require that
 * verification refuses it with a message saying it was "modified", both
 * without a cache and with the primed one: the cache must never hide a change.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "image/image.h"

#define ALL_NEEDS (FB_IMAGE_NEEDS_VM | FB_IMAGE_NEEDS_JAIL)
/* Entries in the fake rootfs (see build_image). */
#define ROOTFS_ENTRIES 13

typedef struct fx {
    char root[PATH_MAX];  /* the temporary directory */
    char img[PATH_MAX];   /* root/image */
    char state[PATH_MAX]; /* root/state */
} fx;

/* ---- helpers ------------------------------------------------------------- */

static void pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && n < PATH_MAX);
}

static void write_bytes(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        fail_msg("cannot create %s: %s", path, strerror(errno));
    assert_int_equal(fb_write_all(fd, data, len), 0);
    assert_int_equal(fchmod(fd, mode), 0); /* whatever the umask */
    assert_int_equal(close(fd), 0);
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    write_bytes(path, text, strlen(text), mode);
}

static void write_pattern(const char *path, size_t len, unsigned seed)
{
    uint8_t *b = malloc(len);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)(i * 2654435761u >> 13) ^ (uint8_t)seed;
    write_bytes(path, b, len, 0644);
    free(b);
}

static void make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0)
        fail_msg("cannot mkdir %s: %s", path, strerror(errno));
    assert_int_equal(chmod(path, mode), 0);
}

/* fx->img/<rel> */
static const char *in_img(const fx *f, const char *rel, char *buf)
{
    pathf(buf, "%s/%s", f->img, rel);
    return buf;
}

static void build_image(const fx *f)
{
    char p[PATH_MAX];
    make_dir(f->img, 0755);
    write_pattern(in_img(f, "vmlinuz", p), 5000, 1);
    write_pattern(in_img(f, "initrd.img", p), 3000, 2);
    write_pattern(in_img(f, "rootfs.ext4", p), 65536, 3);
    write_text(in_img(f, "packages.txt", p), "bash 5.2\ncoreutils 9.1\n", 0644);
    write_text(in_img(f, "kernel-version.txt", p), "6.1.0-forgebox\n", 0644);

    make_dir(in_img(f, "rootfs", p), 0755);
    make_dir(in_img(f, "rootfs/bin", p), 0755);
    write_text(in_img(f, "rootfs/bin/sh", p), "#!fake shell binary\n", 0755);
    make_dir(in_img(f, "rootfs/etc", p), 0755);
    write_text(in_img(f, "rootfs/etc/hosts", p), "127.0.0.1 localhost\n", 0644);
    assert_int_equal(symlink("/proc/self/mounts", in_img(f, "rootfs/etc/mtab", p)), 0);
    write_text(in_img(f, "rootfs/etc/passwd", p), "root:x:0:0:root:/root:/bin/sh\n", 0644);
    assert_int_equal(symlink("usr/lib", in_img(f, "rootfs/lib", p)), 0);
    make_dir(in_img(f, "rootfs/run", p), 0755);
    assert_int_equal(mkfifo(in_img(f, "rootfs/run/initctl", p), 0600), 0);
    assert_int_equal(chmod(p, 0600), 0);
    make_dir(in_img(f, "rootfs/tmp", p), 01777);
    make_dir(in_img(f, "rootfs/usr", p), 0755);
    make_dir(in_img(f, "rootfs/usr/lib", p), 0755);
    write_pattern(in_img(f, "rootfs/usr/lib/libc.so.6", p), 20000, 4);
}

/* Waits until the filesystem's timestamp clock has moved past every change
 * made so far.  On kernels without fine-grained (multigrain) timestamps two
 * writes within one clock tick get the same ctime; the cache's promise is
 * about changes made after it was filled, so the tests make sure a tamper
 * happens in a later tick rather than depend on the machine's speed. */
static void wait_for_fs_tick(const fx *f)
{
    char p[PATH_MAX];
    pathf(p, "%s/tick-probe", f->root);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    struct stat first, now;
    assert_int_equal(fstat(fd, &first), 0);
    uint64_t deadline = fb_now_ns() + 10ull * 1000000000ull;
    for (;;) {
        assert_int_equal(pwrite(fd, "x", 1, 0), 1);
        assert_int_equal(fstat(fd, &now), 0);
        if (now.st_ctim.tv_sec != first.st_ctim.tv_sec || now.st_ctim.tv_nsec != first.st_ctim.tv_nsec)
            break;
        assert_true(fb_now_ns() < deadline);
    }
    close(fd);
    unlink(p);
}

static int make_fx(void **state, bool seal)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    const char *tmp = getenv("TMPDIR");
    pathf(f->root, "%s/fb-image-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->root));
    pathf(f->img, "%s/image", f->root);
    pathf(f->state, "%s/state", f->root);
    build_image(f);
    if (seal) {
        fb_err err = {{0}};
        if (fb_image_seal(f->img, &err) < 0)
            fail_msg("seal: %s", err.msg);
        /* Prime the cache: every later check runs against a warm one. */
        if (fb_image_verify(f->img, f->state, ALL_NEEDS, &err) < 0)
            fail_msg("verify: %s", err.msg);
        wait_for_fs_tick(f);
    }
    *state = f;
    return 0;
}

static int setup_sealed(void **state)
{
    return make_fx(state, true);
}

static int setup_unsealed(void **state)
{
    return make_fx(state, false);
}

static int teardown(void **state)
{
    fx *f = *state;
    fb_rm_rf(f->root);
    free(f);
    return 0;
}

static void assert_verifies(const fx *f, unsigned needs)
{
    fb_err err = {{0}};
    int r = fb_image_verify(f->img, NULL, needs, &err);
    if (r != 0)
        fail_msg("verify (no cache) failed: %s", err.msg);
    r = fb_image_verify(f->img, f->state, needs, &err);
    if (r != 0)
        fail_msg("verify (cache) failed: %s", err.msg);
}

/* Verification must refuse, with and without the warm cache, naming what. */
static void assert_modified(const fx *f, unsigned needs, const char *what)
{
    const char *dirs[] = {f->state, NULL, f->state};
    for (size_t i = 0; i < 3; i++) {
        fb_err err = {{0}};
        int r = fb_image_verify(f->img, dirs[i], needs, &err);
        if (r != -1 || !strstr(err.msg, "modified") || !strstr(err.msg, what))
            fail_msg("verify (%s) after tampering with %s: returned %d, message '%s'",
                     dirs[i] ? "cache" : "no cache", what, r, err.msg);
        assert_non_null(strstr(err.msg, "make image"));
    }
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static json_t *load_manifest(const fx *f)
{
    char p[PATH_MAX];
    json_error_t je;
    json_t *m = json_load_file(in_img(f, "manifest.json", p), JSON_REJECT_DUPLICATES, &je);
    if (!m)
        fail_msg("manifest.json: %s", je.text);
    return m;
}

static void save_manifest(const fx *f, json_t *m)
{
    char p[PATH_MAX];
    assert_int_equal(json_dump_file(m, in_img(f, "manifest.json", p), JSON_INDENT(2)), 0);
}

/* The single cache file under state/image-cache/. */
static bool find_cache_file(const fx *f, char *out)
{
    char dir[PATH_MAX];
    pathf(dir, "%s/image-cache", f->state);
    DIR *d = opendir(dir);
    if (!d)
        return false;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        pathf(out, "%s/%s", dir, de->d_name);
        n++;
    }
    closedir(d);
    assert_int_equal(n, 1);
    return true;
}

/* ---- sealing and clean verification ------------------------------------- */

static void test_seal_writes_manifest(void **state)
{
    fx *f = *state;
    json_t *m = load_manifest(f);
    assert_int_equal(json_integer_value(json_object_get(m, "format")), 1);
    assert_string_equal(json_string_value(json_object_get(m, "kernel")), "6.1.0-forgebox");
    json_t *pk = json_object_get(m, "packages");
    assert_int_equal(json_object_size(pk), 2);
    assert_string_equal(json_string_value(json_object_get(pk, "bash")), "5.2");
    assert_string_equal(json_string_value(json_object_get(pk, "coreutils")), "9.1");

    json_t *arts = json_object_get(m, "artifacts");
    const char *files[] = {"vmlinuz", "initrd.img", "rootfs.ext4"};
    const uint64_t sizes[] = {5000, 3000, 65536};
    for (size_t i = 0; i < 3; i++) {
        char p[PATH_MAX], hex[65];
        uint64_t size = 0;
        fb_err err = {{0}};
        assert_int_equal(fb_image_file_digest(in_img(f, files[i], p), hex, &size, &err), 0);
        assert_true(size == sizes[i]);
        json_t *a = json_object_get(arts, files[i]);
        assert_string_equal(json_string_value(json_object_get(a, "sha256")), hex);
        assert_int_equal(json_integer_value(json_object_get(a, "size")), sizes[i]);
    }
    char p[PATH_MAX], hex[65];
    uint64_t entries = 0;
    fb_err err = {{0}};
    assert_int_equal(fb_image_tree_digest(in_img(f, "rootfs", p), hex, &entries, &err), 0);
    json_t *r = json_object_get(arts, "rootfs");
    assert_string_equal(json_string_value(json_object_get(r, "tree_sha256")), hex);
    assert_int_equal(entries, ROOTFS_ENTRIES);
    assert_int_equal(json_integer_value(json_object_get(r, "entries")), ROOTFS_ENTRIES);
    json_decref(m);
    /* No temporary file is left behind. */
    assert_int_equal(access(in_img(f, "manifest.json.tmp", p), F_OK), -1);

    char kernel[64];
    uint64_t npk = 0;
    assert_int_equal(fb_image_describe(f->img, kernel, sizeof kernel, &npk, &err), 0);
    assert_string_equal(kernel, "6.1.0-forgebox");
    assert_true(npk == 2);
}

static void test_verify_clean_image(void **state)
{
    fx *f = *state;
    assert_verifies(f, ALL_NEEDS);
    assert_verifies(f, FB_IMAGE_NEEDS_VM);
    assert_verifies(f, FB_IMAGE_NEEDS_JAIL);
    /* Again, now that every cache entry is warm. */
    assert_verifies(f, ALL_NEEDS);
}

static void test_cache_records_fingerprints(void **state)
{
    fx *f = *state;
    char cpath[PATH_MAX], p[PATH_MAX], mhex[65];
    assert_true(find_cache_file(f, cpath));
    struct stat st;
    assert_int_equal(stat(cpath, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    fb_err err = {{0}};
    assert_int_equal(fb_image_file_digest(in_img(f, "manifest.json", p), mhex, NULL, &err), 0);
    json_error_t je;
    json_t *c = json_load_file(cpath, 0, &je);
    assert_non_null(c);
    /* Keyed by the manifest's digest, one fingerprint per artifact. */
    assert_int_equal(json_object_size(c), 1);
    json_t *e = json_object_get(c, mhex);
    assert_true(json_is_object(e));
    const char *keys[] = {"vmlinuz", "initrd.img", "rootfs.ext4", "rootfs"};
    for (size_t i = 0; i < 4; i++)
        assert_true(json_is_string(json_object_get(e, keys[i])));
    assert_int_equal(json_object_size(e), 4);
    json_decref(c);
}

static void test_cache_garbage_is_ignored(void **state)
{
    fx *f = *state;
    char cpath[PATH_MAX];
    assert_true(find_cache_file(f, cpath));
    /* Corrupt the cache file: verification falls back to hashing... */
    write_text(cpath, "{not json", 0600);
    assert_verifies(f, ALL_NEEDS);
    /* ...and a cache that is valid JSON but of the wrong shape, too. */
    write_text(cpath, "[1,2,3]", 0600);
    assert_verifies(f, ALL_NEEDS);
    wait_for_fs_tick(f);
    char p[PATH_MAX];
    flip_byte(in_img(f, "rootfs.ext4", p), 4096);
    assert_modified(f, ALL_NEEDS, "rootfs.ext4");
}

static void test_touch_is_not_tampering(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    /* New timestamps, same bytes: the cache misses, the hash still matches. */
    struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    assert_int_equal(utimensat(AT_FDCWD, in_img(f, "vmlinuz", p), ts, 0), 0);
    assert_int_equal(utimensat(AT_FDCWD, in_img(f, "rootfs/etc/passwd", p), ts, 0), 0);
    assert_verifies(f, ALL_NEEDS);
    /* Changed and changed back: content is what counts. */
    flip_byte(in_img(f, "rootfs.ext4", p), 10);
    flip_byte(p, 10);
    flip_byte(in_img(f, "rootfs/usr/lib/libc.so.6", p), 10);
    flip_byte(p, 10);
    assert_verifies(f, ALL_NEEDS);
}

/* ---- tampering: VM artifacts ---------------------------------------------- */

static void test_tamper_ext4_byte_same_size(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    struct stat before, after;
    assert_int_equal(stat(in_img(f, "rootfs.ext4", p), &before), 0);
    flip_byte(p, 12345);
    /* Put the mtime back too: only ctime and content betray the change. */
    struct timespec ts[2] = {before.st_atim, before.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    assert_int_equal(stat(p, &after), 0);
    assert_int_equal(after.st_size, before.st_size);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_modified(f, ALL_NEEDS, "rootfs.ext4");
    assert_modified(f, FB_IMAGE_NEEDS_VM, "rootfs.ext4");
    /* The jail backend does not use rootfs.ext4. */
    fb_err err = {{0}};
    assert_int_equal(fb_image_verify(f->img, f->state, FB_IMAGE_NEEDS_JAIL, &err), 0);
}

static void test_tamper_vmlinuz_append(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    int fd = open(in_img(f, "vmlinuz", p), O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\0evil", 5), 5);
    close(fd);
    assert_modified(f, ALL_NEEDS, "vmlinuz");
    assert_modified(f, FB_IMAGE_NEEDS_VM, "vmlinuz");
}

static void test_tamper_initrd_replaced(void **state)
{
    fx *f = *state;
    char p[PATH_MAX], q[PATH_MAX];
    struct stat st;
    assert_int_equal(stat(in_img(f, "initrd.img", p), &st), 0);
    /* A different file of the same size with the old mtime, renamed over. */
    write_pattern(in_img(f, "initrd.new", q), (size_t)st.st_size, 99);
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, q, ts, 0), 0);
    assert_int_equal(rename(q, p), 0);
    assert_modified(f, FB_IMAGE_NEEDS_VM, "initrd.img");
}

/* A start whose files all carry the fingerprints the cache recorded for
 * this manifest skips parsing the manifest; anything else it does not
 * know about still goes through the full check. */
static void test_fast_path_only_for_recorded_files(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    const unsigned jail = FB_IMAGE_NEEDS_VM | FB_IMAGE_NEEDS_EROFS;
    fb_err err = {{0}};
    /* No rootfs.erofs in this image: allowed, and no fast path for it. */
    assert_int_equal(fb_image_verify(f->img, f->state, jail, &err), 0);
    assert_int_equal(fb_image_verify(f->img, f->state, jail, &err), 0);
    /* An erofs root the manifest does not list appears: refused although
     * every recorded fingerprint still matches. */
    write_pattern(in_img(f, FB_IMAGE_EROFS, p), 8192, 7);
    assert_int_equal(fb_image_verify(f->img, f->state, jail, &err), -1);
    assert_non_null(strstr(err.msg, "not in the manifest"));
    assert_int_equal(unlink(p), 0);
    assert_int_equal(fb_image_verify(f->img, f->state, jail, &err), 0);
    /* A recorded file changed in place after the fast path accepted it. */
    wait_for_fs_tick(f);
    flip_byte(in_img(f, "initrd.img", p), 100);
    assert_modified(f, jail, "initrd.img");
}

static void test_vm_artifact_missing_or_not_regular(void **state)
{
    fx *f = *state;
    char p[PATH_MAX], q[PATH_MAX];
    fb_err err = {{0}};
    assert_int_equal(rename(in_img(f, "vmlinuz", p), in_img(f, "vmlinuz.real", q)), 0);
    assert_int_equal(fb_image_verify(f->img, f->state, FB_IMAGE_NEEDS_VM, &err), -1);
    assert_non_null(strstr(err.msg, "vmlinuz is missing"));
    /* A symlink to the genuine file is still refused. */
    assert_int_equal(symlink("vmlinuz.real", p), 0);
    assert_int_equal(fb_image_verify(f->img, f->state, FB_IMAGE_NEEDS_VM, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    assert_int_equal(fb_image_verify(f->img, NULL, FB_IMAGE_NEEDS_VM, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
}

/* ---- tampering: rootfs/ ----------------------------------------------------- */

static void test_tamper_rootfs_file_content(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    struct stat before;
    assert_int_equal(stat(in_img(f, "rootfs/etc/passwd", p), &before), 0);
    write_text(p, "root:x:0:0:root:/root:/bin/SH\n", 0644); /* same size */
    struct timespec ts[2] = {before.st_atim, before.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    assert_modified(f, ALL_NEEDS, "rootfs");
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
    /* The vm backend does not use rootfs/. */
    fb_err err = {{0}};
    assert_int_equal(fb_image_verify(f->img, f->state, FB_IMAGE_NEEDS_VM, &err), 0);
}

static void test_tamper_rootfs_chmod(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    assert_int_equal(chmod(in_img(f, "rootfs/bin/sh", p), 04755), 0); /* setuid */
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
    assert_int_equal(chmod(p, 0755), 0);
    assert_verifies(f, FB_IMAGE_NEEDS_JAIL);
    wait_for_fs_tick(f);
    assert_int_equal(chmod(in_img(f, "rootfs/etc", p), 0777), 0); /* a directory */
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_chown(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    struct stat st;
    assert_int_equal(lstat(in_img(f, "rootfs/etc/passwd", p), &st), 0);
    if (lchown(p, st.st_uid + 1, st.st_gid) < 0) {
        if (errno == EPERM)
            skip(); /* not root: cannot give a file away */
        fail_msg("lchown: %s", strerror(errno));
    }
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_add(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    write_text(in_img(f, "rootfs/etc/ld.so.preload", p), "/tmp/evil.so\n", 0644);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
    assert_int_equal(unlink(p), 0);
    assert_verifies(f, FB_IMAGE_NEEDS_JAIL);
    wait_for_fs_tick(f);
    make_dir(in_img(f, "rootfs/usr/lib/empty", p), 0755); /* an empty directory */
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
    assert_int_equal(rmdir(p), 0);
    wait_for_fs_tick(f);
    assert_int_equal(mkfifo(in_img(f, "rootfs/tmp/fifo", p), 0600), 0); /* a FIFO */
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_remove(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    assert_int_equal(unlink(in_img(f, "rootfs/etc/hosts", p)), 0);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_remove_empty_dir(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    assert_int_equal(rmdir(in_img(f, "rootfs/tmp", p)), 0);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_symlink_target(void **state)
{
    fx *f = *state;
    char p[PATH_MAX], q[PATH_MAX];
    /* Same length as "usr/lib", swapped in atomically. */
    assert_int_equal(symlink("usr/bin", in_img(f, "rootfs/lib.new", q)), 0);
    assert_int_equal(rename(q, in_img(f, "rootfs/lib", p)), 0);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_file_to_symlink(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    assert_int_equal(unlink(in_img(f, "rootfs/bin/sh", p)), 0);
    assert_int_equal(symlink("/bin/sh", p), 0);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_rename(void **state)
{
    fx *f = *state;
    char p[PATH_MAX], q[PATH_MAX];
    assert_int_equal(rename(in_img(f, "rootfs/etc/hosts", p), in_img(f, "rootfs/etc/hostz", q)), 0);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
    /* Moving a file to another directory under the same name, too. */
    assert_int_equal(rename(q, p), 0);
    assert_verifies(f, FB_IMAGE_NEEDS_JAIL);
    wait_for_fs_tick(f);
    assert_int_equal(rename(in_img(f, "rootfs/etc/hosts", p), in_img(f, "rootfs/bin/hosts", q)), 0);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

/* The digest must tell "symlink with target T, then file F" from "symlink
 * with target T + newline + F's digest line".  Removing etc/passwd while
 * folding its line into the target of the etc/mtab symlink just before it
 * must not go unnoticed. */
static void test_tamper_rootfs_remove_hidden_in_symlink(void **state)
{
    fx *f = *state;
    char p[PATH_MAX], q[PATH_MAX], hex[65];
    struct stat st;
    fb_err err = {{0}};
    assert_int_equal(lstat(in_img(f, "rootfs/etc/passwd", p), &st), 0);
    assert_int_equal(fb_image_file_digest(p, hex, NULL, &err), 0);
    char target[512];
    snprintf(target, sizeof target, "/proc/self/mounts\nf %o %u %u %lld ./etc/passwd %s",
             (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid,
             (long long)st.st_size, hex);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(unlink(in_img(f, "rootfs/etc/mtab", q)), 0);
    assert_int_equal(symlink(target, q), 0);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
}

static void test_tamper_rootfs_device_node(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    if (mknod(in_img(f, "rootfs/run/mem", p), S_IFCHR | 0600, makedev(1, 1)) < 0) {
        if (errno == EPERM)
            skip(); /* no CAP_MKNOD here; the socket test covers the path */
        fail_msg("mknod: %s", strerror(errno));
    }
    fb_err err = {{0}};
    assert_int_equal(fb_image_verify(f->img, f->state, FB_IMAGE_NEEDS_JAIL, &err), -1);
    assert_non_null(strstr(err.msg, "device node or socket"));
    assert_non_null(strstr(err.msg, "run/mem"));
    assert_int_equal(fb_image_verify(f->img, NULL, FB_IMAGE_NEEDS_JAIL, &err), -1);
    assert_non_null(strstr(err.msg, "device node or socket"));
}

/* ---- manifest problems -------------------------------------------------------- */

static void test_manifest_missing(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    assert_int_equal(unlink(in_img(f, "manifest.json", p)), 0);
    const char *dirs[] = {NULL, f->state};
    for (size_t i = 0; i < 2; i++) {
        fb_err err = {{0}};
        assert_int_equal(fb_image_verify(f->img, dirs[i], ALL_NEEDS, &err), -1);
        assert_non_null(strstr(err.msg, "manifest.json missing"));
        assert_non_null(strstr(err.msg, "`make image`"));
        assert_non_null(strstr(err.msg, f->img));
    }
    /* No image directory at all: the same advice. */
    char none[PATH_MAX];
    pathf(none, "%s/no-such-image", f->root);
    fb_err err = {{0}};
    assert_int_equal(fb_image_verify(none, NULL, ALL_NEEDS, &err), -1);
    assert_non_null(strstr(err.msg, "`make image`"));
}

static void test_manifest_invalid(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    fb_err err = {{0}};
    write_text(in_img(f, "manifest.json", p), "{\"format\": 1,", 0644);
    assert_int_equal(fb_image_verify(f->img, f->state, ALL_NEEDS, &err), -1);
    assert_non_null(strstr(err.msg, "not valid JSON"));
    write_text(p, "[]", 0644);
    assert_int_equal(fb_image_verify(f->img, NULL, ALL_NEEDS, &err), -1);
    assert_non_null(strstr(err.msg, "manifest"));
}

static void test_manifest_without_digests(void **state)
{
    fx *f = *state;
    fb_err err = {{0}};
    json_t *m = load_manifest(f);
    json_t *a = json_object_get(json_object_get(m, "artifacts"), "initrd.img");
    json_object_set_new(a, "sha256", json_string("abc")); /* not 64 hex digits */
    save_manifest(f, m);
    assert_int_equal(fb_image_verify(f->img, f->state, FB_IMAGE_NEEDS_VM, &err), -1);
    assert_non_null(strstr(err.msg, "no sha256 for initrd.img"));
    json_object_del(json_object_get(m, "artifacts"), "rootfs");
    save_manifest(f, m);
    assert_int_equal(fb_image_verify(f->img, NULL, FB_IMAGE_NEEDS_JAIL, &err), -1);
    assert_non_null(strstr(err.msg, "no tree digest for rootfs"));
    json_decref(m);
}

static void test_manifest_digest_changed(void **state)
{
    fx *f = *state;
    /* A manifest that disagrees with the (untouched) files is refused too,
     * even though the cache holds fingerprints matching those files. */
    json_t *m = load_manifest(f);
    json_t *a = json_object_get(json_object_get(m, "artifacts"), "vmlinuz");
    json_object_set_new(a, "sha256", json_string("00000000000000000000000000000000"
                                                 "00000000000000000000000000000000"));
    save_manifest(f, m);
    json_decref(m);
    assert_modified(f, FB_IMAGE_NEEDS_VM, "vmlinuz");
}

static void test_reseal_after_change(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    fb_err err = {{0}};
    write_text(in_img(f, "rootfs/etc/hosts", p), "10.0.0.1 builder\n", 0644);
    assert_modified(f, FB_IMAGE_NEEDS_JAIL, "rootfs");
    /* A rebuild reseals: the new manifest replaces the cache entry. */
    assert_int_equal(fb_image_seal(f->img, &err), 0);
    assert_verifies(f, ALL_NEEDS);
    char cpath[PATH_MAX];
    assert_true(find_cache_file(f, cpath));
    json_error_t je;
    json_t *c = json_load_file(cpath, 0, &je);
    assert_non_null(c);
    assert_int_equal(json_object_size(c), 1);
    json_decref(c);
}

/* ---- sealing refuses what an image must not contain ------------------------ */

static void test_seal_refuses_socket(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    in_img(f, "rootfs/run/agent.sock", p);
    if (strlen(p) >= sizeof sa.sun_path)
        skip(); /* TMPDIR too deep for a unix socket path */
    memcpy(sa.sun_path, p, strlen(p) + 1);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    close(s);
    fb_err err = {{0}};
    assert_int_equal(fb_image_seal(f->img, &err), -1);
    assert_non_null(strstr(err.msg, "device node or socket"));
    assert_non_null(strstr(err.msg, "run/agent.sock"));
    assert_int_equal(access(in_img(f, "manifest.json", p), F_OK), -1);
    char hex[65];
    assert_int_equal(fb_image_tree_digest(in_img(f, "rootfs", p), hex, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "device node or socket"));
}

static void test_seal_refuses_device_node(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    if (mknod(in_img(f, "rootfs/run/null", p), S_IFCHR | 0666, makedev(1, 3)) < 0) {
        if (errno == EPERM)
            skip();
        fail_msg("mknod: %s", strerror(errno));
    }
    fb_err err = {{0}};
    assert_int_equal(fb_image_seal(f->img, &err), -1);
    assert_non_null(strstr(err.msg, "device node or socket"));
    assert_non_null(strstr(err.msg, "run/null"));
    assert_int_equal(access(in_img(f, "manifest.json", p), F_OK), -1);
}

static void test_seal_needs_packages_and_artifacts(void **state)
{
    fx *f = *state;
    char p[PATH_MAX];
    fb_err err = {{0}};
    assert_int_equal(unlink(in_img(f, "rootfs.ext4", p)), 0);
    assert_int_equal(fb_image_seal(f->img, &err), -1);
    assert_non_null(strstr(err.msg, "rootfs.ext4"));
    assert_int_equal(access(in_img(f, "manifest.json", p), F_OK), -1);
    assert_int_equal(unlink(in_img(f, "packages.txt", p)), 0);
    assert_int_equal(fb_image_seal(f->img, &err), -1);
    assert_non_null(strstr(err.msg, "packages.txt"));
}

/* ---- the tree digest itself ------------------------------------------------- */

static void test_tree_digest_stable_and_sensitive(void **state)
{
    fx *f = *state;
    char root[PATH_MAX], p[PATH_MAX], d1[65], d2[65], d3[65], d4[65];
    uint64_t e1 = 0, e2 = 0;
    fb_err err = {{0}};
    in_img(f, "rootfs", root);
    assert_int_equal(fb_image_tree_digest(root, d1, &e1, &err), 0);
    assert_int_equal(fb_image_tree_digest(root, d2, &e2, &err), 0);
    assert_int_equal(strlen(d1), 64);
    assert_int_equal(strspn(d1, "0123456789abcdef"), 64);
    assert_string_equal(d1, d2);
    assert_int_equal(e1, ROOTFS_ENTRIES);
    assert_int_equal(e2, ROOTFS_ENTRIES);
    /* Timestamps are not content. */
    struct timespec ts[2] = {{.tv_sec = 12345}, {.tv_sec = 12345}};
    assert_int_equal(utimensat(AT_FDCWD, in_img(f, "rootfs/bin/sh", p), ts, 0), 0);
    assert_int_equal(fb_image_tree_digest(root, d2, NULL, &err), 0);
    assert_string_equal(d1, d2);
    /* One changed byte deep in the tree changes it. */
    flip_byte(in_img(f, "rootfs/usr/lib/libc.so.6", p), 19999);
    assert_int_equal(fb_image_tree_digest(root, d3, NULL, &err), 0);
    assert_string_not_equal(d1, d3);
    /* Back to the same bytes, back to the same digest. */
    flip_byte(p, 19999);
    assert_int_equal(fb_image_tree_digest(root, d4, NULL, &err), 0);
    assert_string_equal(d1, d4);
    /* An empty file's name alone counts. */
    write_text(in_img(f, "rootfs/tmp/x", p), "", 0644);
    assert_int_equal(fb_image_tree_digest(root, d3, &e1, &err), 0);
    assert_string_not_equal(d1, d3);
    assert_int_equal(e1, ROOTFS_ENTRIES + 1);
}

static void test_tree_digest_does_not_follow_symlinks(void **state)
{
    fx *f = *state;
    char root[PATH_MAX], outside[PATH_MAX], p[PATH_MAX], d1[65], d2[65];
    fb_err err = {{0}};
    pathf(outside, "%s/outside", f->root);
    make_dir(outside, 0755);
    pathf(p, "%s/secret", outside);
    write_text(p, "one\n", 0644);
    assert_int_equal(symlink(outside, in_img(f, "rootfs/escape", root)), 0);
    in_img(f, "rootfs", root);
    uint64_t e = 0;
    assert_int_equal(fb_image_tree_digest(root, d1, &e, &err), 0);
    assert_int_equal(e, ROOTFS_ENTRIES + 1); /* the link, not what it points to */
    write_text(p, "two\n", 0644);
    assert_int_equal(fb_image_tree_digest(root, d2, NULL, &err), 0);
    assert_string_equal(d1, d2);
    /* The rootfs directory itself must not be a symlink. */
    char link[PATH_MAX];
    pathf(link, "%s/rootfs-link", f->root);
    assert_int_equal(symlink(root, link), 0);
    assert_int_equal(fb_image_tree_digest(link, d2, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "cannot open rootfs directory"));
}

/* Two different trees must not share a digest.  A symlink named "a b"
 * pointing to "c" and a symlink named "a" pointing to "b c" are different
 * trees (the name and the target both differ). */
static void test_tree_digest_names_and_targets_unambiguous(void **state)
{
    fx *f = *state;
    char t1[PATH_MAX], t2[PATH_MAX], p[PATH_MAX], d1[65], d2[65];
    fb_err err = {{0}};
    pathf(t1, "%s/tree1", f->root);
    pathf(t2, "%s/tree2", f->root);
    make_dir(t1, 0755);
    make_dir(t2, 0755);
    pathf(p, "%s/a b", t1);
    assert_int_equal(symlink("c", p), 0);
    pathf(p, "%s/a", t2);
    assert_int_equal(symlink("b c", p), 0);
    assert_int_equal(fb_image_tree_digest(t1, d1, NULL, &err), 0);
    assert_int_equal(fb_image_tree_digest(t2, d2, NULL, &err), 0);
    assert_string_not_equal(d1, d2);
}

/* The walk order is by name, not by the order entries were created in, and
 * directories with many entries are read completely. */
static void test_tree_digest_canonical_order(void **state)
{
    fx *f = *state;
    char t1[PATH_MAX], t2[PATH_MAX], p[PATH_MAX], d1[65], d2[65];
    fb_err err = {{0}};
    pathf(t1, "%s/order1", f->root);
    pathf(t2, "%s/order2", f->root);
    make_dir(t1, 0755);
    make_dir(t2, 0755);
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        char text[32];
        snprintf(text, sizeof text, "file %d\n", i);
        pathf(p, "%s/f%03d", t1, i);
        write_text(p, text, 0644);
        pathf(p, "%s/f%03d", t2, N - 1 - i);
        snprintf(text, sizeof text, "file %d\n", N - 1 - i);
        write_text(p, text, 0644);
    }
    uint64_t e1 = 0, e2 = 0;
    assert_int_equal(fb_image_tree_digest(t1, d1, &e1, &err), 0);
    assert_int_equal(fb_image_tree_digest(t2, d2, &e2, &err), 0);
    assert_int_equal(e1, N);
    assert_int_equal(e2, N);
    assert_string_equal(d1, d2);
    /* The last entry read counts as much as the first. */
    pathf(p, "%s/f%03d", t2, N - 1);
    write_text(p, "changed\n", 0644);
    assert_int_equal(fb_image_tree_digest(t2, d2, NULL, &err), 0);
    assert_string_not_equal(d1, d2);
}

static void test_tree_digest_depth_limit(void **state)
{
    fx *f = *state;
    char p[PATH_MAX], hex[65];
    fb_err err = {{0}};
    pathf(p, "%s/deep", f->root);
    make_dir(p, 0755);
    size_t len = strlen(p);
    /* 64 nested directories are walked... */
    for (int i = 0; i < 64; i++) {
        memcpy(p + len, "/d", 3);
        len += 2;
        make_dir(p, 0755);
    }
    pathf(p, "%s/deep", f->root);
    uint64_t e = 0;
    assert_int_equal(fb_image_tree_digest(p, hex, &e, &err), 0);
    assert_int_equal(e, 64);
    /* ...a 65th is refused, not followed without bound. */
    pathf(p, "%s/deep", f->root);
    len = strlen(p);
    for (int i = 0; i < 65; i++) {
        memcpy(p + len, "/d", 3);
        len += 2;
    }
    make_dir(p, 0755);
    pathf(p, "%s/deep", f->root);
    assert_int_equal(fb_image_tree_digest(p, hex, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "nests deeper than 64 levels"));
}

int main(void)
{
#define T(name, setup) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_seal_writes_manifest, setup_sealed),
        T(test_verify_clean_image, setup_sealed),
        T(test_cache_records_fingerprints, setup_sealed),
        T(test_cache_garbage_is_ignored, setup_sealed),
        T(test_touch_is_not_tampering, setup_sealed),
        T(test_tamper_ext4_byte_same_size, setup_sealed),
        T(test_tamper_vmlinuz_append, setup_sealed),
        T(test_tamper_initrd_replaced, setup_sealed),
        T(test_vm_artifact_missing_or_not_regular, setup_sealed),
        T(test_fast_path_only_for_recorded_files, setup_sealed),
        T(test_tamper_rootfs_file_content, setup_sealed),
        T(test_tamper_rootfs_chmod, setup_sealed),
        T(test_tamper_rootfs_chown, setup_sealed),
        T(test_tamper_rootfs_add, setup_sealed),
        T(test_tamper_rootfs_remove, setup_sealed),
        T(test_tamper_rootfs_remove_empty_dir, setup_sealed),
        T(test_tamper_rootfs_symlink_target, setup_sealed),
        T(test_tamper_rootfs_file_to_symlink, setup_sealed),
        T(test_tamper_rootfs_rename, setup_sealed),
        T(test_tamper_rootfs_remove_hidden_in_symlink, setup_sealed),
        T(test_tamper_rootfs_device_node, setup_sealed),
        T(test_manifest_missing, setup_sealed),
        T(test_manifest_invalid, setup_sealed),
        T(test_manifest_without_digests, setup_sealed),
        T(test_manifest_digest_changed, setup_sealed),
        T(test_reseal_after_change, setup_sealed),
        T(test_seal_refuses_socket, setup_unsealed),
        T(test_seal_refuses_device_node, setup_unsealed),
        T(test_seal_needs_packages_and_artifacts, setup_unsealed),
        T(test_tree_digest_stable_and_sensitive, setup_unsealed),
        T(test_tree_digest_does_not_follow_symlinks, setup_unsealed),
        T(test_tree_digest_names_and_targets_unambiguous, setup_unsealed),
        T(test_tree_digest_canonical_order, setup_unsealed),
        T(test_tree_digest_depth_limit, setup_unsealed),
    };
#undef T
    return cmocka_run_group_tests_name("image", tests, NULL, NULL);
}
