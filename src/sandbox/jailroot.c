/*
 * jailroot.c - the jail's root: one shared read-only EROFS mount of a
 * verified image, under an overlay of each jail's own.
 *
 * Why: a jail that mounts rootfs.erofs itself gets a superblock of its own
 * with cold inode and page caches, so its agent and its first command
 * read the loader, libc and the binary from the image file page by page,
 * and its exit unregisters the superblock's backing device (an expedited
 * RCU grace period and a writeback worker's round trip).  bwrap's root is
 * a host directory whose caches are warm.  Here the image file is mounted
 * once, read-only, nosuid, nodev, under RUN_DIR/jail-root/<identity>
 * (root only, 0700, a private mount so that nothing propagates to other
 * mount namespaces), and every jail of that image reads through it.
 *
 * What stays each jail's own: the jail's root is an overlay whose only
 * visible layer is a private clone of the shared mount (the kernel's
 * clone_private_mount; a second, data-only layer, an empty directory, is
 * there because overlayfs wants two layers without an upper one and is
 * never looked up).  An overlay has its own superblock and inodes, so an
 * inotify watch inside a jail is on its own inode and sees nothing another
 * jail or the host does (test_isolation_review.py); only the page cache
 * below is shared, as it is with bwrap or any container on a shared image.
 * The overlay is read-only (no upper layer; the superblock and the mount),
 * its layers are given as file descriptors of detached trees, so the
 * jail's mountinfo shows "lowerdir+=/,datadir+=/" and no host path, and
 * nothing of RUN_DIR/jail-root is in the jail's view: the jail's mount
 * namespace drops the host tree with its old root.
 *
 * Which image: the shared mount is named after the identity of the file it
 * was made from (device, inode, size, mtime and ctime in ns, hashed, after
 * a hash of the image directory's path: one shared mount per image), and
 * the caller hands over the file it has just verified (the image check's
 * fingerprint is that same stat, image.c).  A changed or replaced file has
 * another identity (any write moves ctime, which userspace cannot set
 * back), so it is never served from an older mount: a new one is made and
 * the image directory's older ones are detached (running jails keep theirs: an
 * overlay holds its own clone of the layer).
 */
#define _GNU_SOURCE
#include "sandbox/jailroot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define EROFS_MAGIC 0xE0F5E1E2u

int fb_jailroot_erofs_tree(int img, const char *path, fb_err *err)
{
    cleanup_fd int fs = fsopen("erofs", FSOPEN_CLOEXEC);
    if (fs < 0)
        return errno == ENODEV ? -2 : fb_fail_errno(err, "fsopen(erofs)");
    /* mountinfo shows a path through our own fd, never where the image
     * lives on the host. */
    char src[64];
    snprintf(src, sizeof src, "/proc/self/fd/%d", img);
    if (fsconfig(fs, FSCONFIG_SET_STRING, "source", src, 0) < 0)
        return fb_fail_errno(err, "cannot mount the rootfs image %s (erofs)", path);
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        /* A kernel without file-backed EROFS wants a block device. */
        if (errno == ENOTBLK || errno == EINVAL || errno == EOPNOTSUPP)
            return -2;
        return fb_fail_errno(err, "cannot mount the rootfs image %s (erofs, read-only)", path);
    }
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        return fb_fail_errno(err, "fsmount of the rootfs image %s", path);
    return mnt;
}

#define KEY_PREFIX 16 /* hex digits naming the image directory */
#define KEY_LEN (KEY_PREFIX + 1 + 32)

static void hex_digest(const char *s, char *out, size_t n)
{
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const uint8_t *)s, strlen(s));
    char hex[65];
    fb_hex(d, sizeof d, hex);
    memcpy(out, hex, n);
}

/* The shared mount's name: the image directory's (so that jails of two
 * images do not replace each other's mount) and the file's identity, as
 * the image check's fingerprint sees it. */
static void mount_key(const char *image_dir, const struct stat *st, char key[KEY_LEN + 1])
{
    char s[160];
    snprintf(s, sizeof s, "%llu:%llu:%lld:%lld.%09ld:%lld.%09ld", (unsigned long long)st->st_dev,
             (unsigned long long)st->st_ino, (long long)st->st_size, (long long)st->st_mtim.tv_sec,
             st->st_mtim.tv_nsec, (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
    hex_digest(image_dir, key, KEY_PREFIX);
    key[KEY_PREFIX] = '-';
    hex_digest(s, key + KEY_PREFIX + 1, 32);
    key[KEY_LEN] = '\0';
}

/* A detached clone of the shared mount at dir, if what is mounted there is
 * the root of a read-only EROFS mount; else -1. */
static int clone_shared(const char *dir)
{
    int t = open_tree(AT_FDCWD, dir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (t < 0)
        return -1;
    struct statfs sf;
    struct statx sx;
    if (fstatfs(t, &sf) < 0 || sf.f_type != EROFS_MAGIC || !(sf.f_flags & ST_RDONLY) ||
        !(sf.f_flags & ST_NOSUID) || !(sf.f_flags & ST_NODEV) ||
        statx(t, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &sx) < 0 ||
        !(sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) ||
        !(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
        close(t);
        return -1;
    }
    return t;
}

static bool is_mount_root(const char *path)
{
    struct statx sx;
    return statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) == 0 &&
           (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
           (sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

/* Every other shared mount of the same image directory: detached (jails
 * using one keep it through their overlay's clone), its directory
 * removed. */
static void detach_others(const char *base, const char *key)
{
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strlen(de->d_name) != KEY_LEN || strncmp(de->d_name, key, KEY_PREFIX + 1) != 0 ||
            strcmp(de->d_name, key) == 0)
            continue;
        char p[4500];
        snprintf(p, sizeof p, "%s/%s", base, de->d_name);
        for (int i = 0; i < 8 && umount2(p, MNT_DETACH | UMOUNT_NOFOLLOW) == 0; i++)
            ;
        rmdir(p);
    }
    closedir(d);
}

/* Makes the shared mount for key from the file at img, under the lock of
 * base; returns a clone of it as clone_shared does, -1 with err set, or -2
 * (no file-backed EROFS). */
static int create_shared(const char *base, const char *key, int img, const char *path, fb_err *err)
{
    if (fb_mkdir_p(base, 0700, err) < 0)
        return -1;
    struct stat bst;
    if (lstat(base, &bst) < 0 || !S_ISDIR(bst.st_mode) || bst.st_uid != 0 ||
        ((bst.st_mode & 077) && chmod(base, 0700) < 0))
        return fb_fail(err, "%s must be a directory of root's, mode 0700", base);
    char p[4400];
    snprintf(p, sizeof p, "%s/lock", base);
    cleanup_fd int lock = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) < 0)
        return fb_fail_errno(err, "cannot lock %s", p);
    char mnt[4400];
    snprintf(mnt, sizeof mnt, "%s/%s", base, key);
    int t = clone_shared(mnt); /* made meanwhile by another manager */
    if (t >= 0)
        return t;
    /* A private mount of its own: what is attached below never propagates
     * into other mount namespaces, and detaching it leaves no copies. */
    if (!is_mount_root(base) &&
        (mount(base, base, NULL, MS_BIND, NULL) < 0 || mount(NULL, base, NULL, MS_PRIVATE, NULL) < 0))
        return fb_fail_errno(err, "cannot make %s a private mount", base);
    snprintf(p, sizeof p, "%s/empty", base);
    if (mkdir(p, 0500) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", p);
    int tree = fb_jailroot_erofs_tree(img, path, err);
    if (tree < 0)
        return tree;
    if (mkdir(mnt, 0700) < 0 && errno != EEXIST) {
        close(tree);
        return fb_fail_errno(err, "cannot create %s", mnt);
    }
    /* Whatever is there is not a valid shared mount of this file. */
    for (int i = 0; i < 8 && is_mount_root(mnt) && umount2(mnt, MNT_DETACH | UMOUNT_NOFOLLOW) == 0; i++)
        ;
    int rc = move_mount(tree, "", AT_FDCWD, mnt, MOVE_MOUNT_F_EMPTY_PATH);
    int e = errno;
    close(tree);
    if (rc < 0) {
        errno = e;
        return fb_fail_errno(err, "cannot attach the shared rootfs mount at %s", mnt);
    }
    detach_others(base, key);
    t = clone_shared(mnt);
    if (t < 0)
        return fb_fail(err, "the shared rootfs mount at %s is not a read-only EROFS mount", mnt);
    return t;
}

/* The jail's own overlay over the shared tree (lower) and the empty
 * data-only layer; -2 if this kernel's overlayfs cannot take layers as
 * file descriptors (6.13+) or has no overlayfs. */
static int make_overlay(int lower, int empty, fb_err *err)
{
    cleanup_fd int fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return errno == ENODEV ? -2 : fb_fail_errno(err, "fsopen(overlay)");
    if (fsconfig(fs, FSCONFIG_SET_FD, "lowerdir+", NULL, lower) < 0 ||
        fsconfig(fs, FSCONFIG_SET_FD, "datadir+", NULL, empty) < 0)
        return errno == EINVAL || errno == EOPNOTSUPP ? -2
                                                     : fb_fail_errno(err, "overlay layers");
    /* Nothing in the image is an overlay's metadata to follow. */
    if (fsconfig(fs, FSCONFIG_SET_STRING, "redirect_dir", "nofollow", 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "metacopy", "off", 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "index", "off", 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_STRING, "xino", "off", 0) < 0)
        return fb_fail_errno(err, "overlay options");
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return fb_fail_errno(err, "cannot mount the jail's overlay of the shared rootfs");
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        return fb_fail_errno(err, "fsmount of the jail's overlay");
    return mnt;
}

int fb_jailroot_open(const char *run_dir, const char *image_dir, int img, const char *path,
                     fb_err *err)
{
    struct stat st;
    if (fstat(img, &st) < 0)
        return fb_fail_errno(err, "cannot stat the rootfs image %s", path);
    char key[KEY_LEN + 1], base[4200], mnt[4300], empty[4300];
    mount_key(image_dir, &st, key);
    snprintf(base, sizeof base, "%s/%s", run_dir, FB_JAILROOT_DIR);
    snprintf(mnt, sizeof mnt, "%s/%s", base, key);
    snprintf(empty, sizeof empty, "%s/empty", base);
    cleanup_fd int lower = clone_shared(mnt);
    if (lower < 0 && (lower = create_shared(base, key, img, path, err)) < 0)
        return lower;
    cleanup_fd int e = open_tree(AT_FDCWD, empty, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (e < 0)
        return fb_fail_errno(err, "cannot open %s", empty);
    return make_overlay(lower, e, err);
}

void fb_jailroot_describe(const char *run_dir, char *out, size_t cap)
{
    char base[4200];
    snprintf(base, sizeof base, "%s/%s", run_dir, FB_JAILROOT_DIR);
    out[0] = '\0';
    DIR *d = opendir(base);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[4500];
        snprintf(p, sizeof p, "%s/%s", base, de->d_name);
        if (strlen(de->d_name) == KEY_LEN && is_mount_root(p)) {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s%s", n ? ", " : "", p);
        }
    }
    closedir(d);
}
