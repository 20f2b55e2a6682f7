/*
 * snapshot.c - VM snapshot files: prepare (verify or claim), commit, close
 * (snapshot.h).  QEMU never sees a path: the manager opens the file and
 * passes the descriptor (vm.c), so the directory stays root's alone.
 */
#define _GNU_SOURCE
#include "sandbox/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAP_SUBDIR "vm-snapshots"
#define META_MAX (64 * 1024)

void fb_snap_key(const char *shape, char key[65])
{
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const unsigned char *)shape, strlen(shape));
    fb_hex(d, sizeof d, key);
}

static void path_of(const fb_snap *s, const char *suffix, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s%s", s->dir, s->key, suffix);
}

static void fingerprint(const struct stat *st, char *out, size_t cap)
{
    snprintf(out, cap, "%llu %llu %llu %lld.%09ld %lld.%09ld", (unsigned long long)st->st_dev,
             (unsigned long long)st->st_ino, (unsigned long long)st->st_size,
             (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, (long long)st->st_ctim.tv_sec,
             st->st_ctim.tv_nsec);
}

/* sha256 of the whole file behind fd, read with pread (the offset stays 0
 * for QEMU). */
static int hash_fd(int fd, char out[65], uint64_t *size, fb_err *err)
{
    enum { CHUNK = 1 << 20 };
    cleanup_free uint8_t *buf = malloc(CHUNK);
    if (!buf)
        return fb_fail(err, "out of memory");
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    uint64_t off = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fb_fail_errno(err, "cannot read the snapshot");
        if (n == 0)
            break;
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
        off += (uint64_t)n;
    }
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, d);
    fb_hex(d, sizeof d, out);
    *size = off;
    return 0;
}

/* Writes the metadata file atomically (temporary name, fsync, rename). */
static int write_meta(const fb_snap *s, const char *sha, uint64_t size, const char *verified,
                      fb_err *err)
{
    char path[4400], tmp[4450];
    path_of(s, ".json", path, sizeof path);
    /* Per thread: two starts in one gateway may re-record at once. */
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)gettid());
    json_t *m = json_pack("{s:i, s:s, s:s, s:I, s:s}", "version", 1, "shape", s->shape, "sha256", sha,
                          "size", (json_int_t)size, "verified", verified);
    if (!m)
        return fb_fail(err, "out of memory");
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    if (!text)
        return fb_fail(err, "out of memory");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    int rc = fd < 0 ? -1 : fb_write_all(fd, text, strlen(text));
    if (rc == 0)
        rc = fsync(fd);
    free(text);
    if (fd >= 0 && close(fd) < 0)
        rc = -1;
    if (rc == 0)
        rc = rename(tmp, path);
    if (rc < 0) {
        fb_fail_errno(err, "cannot write %s", path);
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void forget(const fb_snap *s)
{
    char p[4400];
    path_of(s, ".snap", p, sizeof p);
    unlink(p);
    path_of(s, ".json", p, sizeof p);
    unlink(p);
}

/* Opens and checks <key>.snap against <key>.json.  1: usable (s->fd set);
 * 0: there is none; -1: refused (why in err). */
static int open_verified(fb_snap *s, fb_err *err)
{
    char mpath[4400], spath[4400];
    path_of(s, ".json", mpath, sizeof mpath);
    path_of(s, ".snap", spath, sizeof spath);
    cleanup_fd int mfd = open(mpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (mfd < 0)
        return errno == ENOENT ? 0 : (fb_fail_errno(err, "cannot open %s", mpath), -1);
    cleanup_free char *text = malloc(META_MAX + 1);
    size_t got = 0;
    if (!text || fb_read_up_to(mfd, text, META_MAX + 1, &got) < 0 || got > META_MAX)
        return fb_fail(err, "cannot read %s", mpath);
    text[got] = '\0';
    json_error_t je;
    json_t *m = json_loads(text, 0, &je);
    const char *shape = NULL, *sha = NULL, *verified = NULL;
    json_int_t size = -1;
    if (!m || json_unpack(m, "{s:s, s:s, s:I, s:s}", "shape", &shape, "sha256", &sha, "size", &size,
                          "verified", &verified) < 0 ||
        strlen(sha) != 64) {
        json_decref(m);
        return fb_fail(err, "its record %s is unreadable", mpath);
    }
    int rc = -1;
    struct stat st;
    int fd = open(spath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            rc = 0;
        else
            fb_fail_errno(err, "cannot open it");
    } else if (fstat(fd, &st) < 0) {
        fb_fail_errno(err, "cannot stat it");
    } else if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0022)) {
        fb_fail(err, "it is not a regular file only root can write");
    } else if ((uint64_t)st.st_size != (uint64_t)size) {
        fb_fail(err, "it holds %llu bytes, %lld were recorded (truncated or modified)",
                (unsigned long long)st.st_size, (long long)size);
    } else if (strcmp(shape, s->shape) != 0) {
        fb_fail(err, "it was recorded for another VM shape");
    } else {
        char fp[160];
        fingerprint(&st, fp, sizeof fp);
        if (strcmp(fp, verified) == 0) {
            rc = 1;
        } else {
            /* Changed since its last check (or copied, restored from a
             * backup...): the full digest decides. */
            char got_sha[65];
            uint64_t n = 0;
            fb_trace("snapshot: hashing");
            if (hash_fd(fd, got_sha, &n, err) == 0) {
                if (strcmp(got_sha, sha) != 0 || n != (uint64_t)size) {
                    fb_fail(err, "its sha256 is %s, %s was recorded (modified)", got_sha, sha);
                } else {
                    fb_err werr = {{0}};
                    char sha_copy[65];
                    snprintf(sha_copy, sizeof sha_copy, "%s", sha);
                    if (write_meta(s, sha_copy, n, fp, &werr) < 0)
                        fprintf(stderr, "forgebox: warning: %s\n", werr.msg);
                    rc = 1;
                }
            }
        }
    }
    json_decref(m);
    if (rc == 1) {
        s->fd = fd;
        return 1;
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

static int ensure_dir(const char *state_dir, fb_snap *s, fb_err *err)
{
    if (snprintf(s->dir, sizeof s->dir, "%s/%s", state_dir, SNAP_SUBDIR) >= (int)sizeof s->dir)
        return fb_fail(err, "state directory path too long");
    if (fb_mkdir_p(state_dir, 0700, err) < 0)
        return -1;
    if (mkdir(s->dir, 0700) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", s->dir);
    struct stat st;
    if (lstat(s->dir, &st) < 0)
        return fb_fail_errno(err, "cannot stat %s", s->dir);
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0077))
        return fb_fail(err, "%s must be a directory only root can read (0700); not using snapshots",
                       s->dir);
    return 0;
}

/* Marks the shape as just used: its lock file's mtime (not the snapshot's:
 * that would change its ctime and force a rehash). */
static void touch_used(const fb_snap *s)
{
    char lpath[4400];
    path_of(s, ".lock", lpath, sizeof lpath);
    (void)utimensat(AT_FDCWD, lpath, NULL, 0);
}

/* Keeps at most FB_SNAP_MAX_SHAPES snapshots before a new one is made: a
 * request may name any memory size, and each shape costs ~100 MB of disk.
 * The least recently used go first (their lock file's mtime); a
 * temporary file left by a maker that died (its lock is free) goes too.
 * A VM restoring from a deleted snapshot keeps its open file. */
static void evict(const fb_snap *s)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    enum { MAXN = 1024 };
    struct { char key[65]; struct timespec used; } *snaps = calloc(MAXN, sizeof *snaps);
    size_t n = 0;
    struct dirent *de;
    while (snaps && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len == 64 + 9 && strcmp(de->d_name + 64, ".snap.tmp") == 0 &&
            strncmp(de->d_name, s->key, 64) != 0) {
            fb_snap o = {.fd = -1, .lock_fd = -1};
            snprintf(o.dir, sizeof o.dir, "%s", s->dir);
            memcpy(o.key, de->d_name, 64);
            char lpath[4400], tpath[4400];
            path_of(&o, ".lock", lpath, sizeof lpath);
            path_of(&o, ".snap.tmp", tpath, sizeof tpath);
            int lfd = open(lpath, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) == 0)
                unlink(tpath);
            if (lfd >= 0)
                close(lfd);
            continue;
        }
        if (len != 64 + 5 || strcmp(de->d_name + 64, ".snap") != 0 || n == MAXN)
            continue;
        memcpy(snaps[n].key, de->d_name, 64);
        snaps[n].key[64] = '\0';
        char lpath[4400];
        snprintf(lpath, sizeof lpath, "%s/%s.lock", s->dir, snaps[n].key);
        struct stat st;
        snaps[n].used = stat(lpath, &st) == 0 ? st.st_mtim : (struct timespec){0, 0};
        n++;
    }
    closedir(d);
    while (snaps && n >= FB_SNAP_MAX_SHAPES) {
        size_t old = 0;
        for (size_t i = 1; i < n; i++)
            if (snaps[i].used.tv_sec < snaps[old].used.tv_sec ||
                (snaps[i].used.tv_sec == snaps[old].used.tv_sec &&
                 snaps[i].used.tv_nsec < snaps[old].used.tv_nsec))
                old = i;
        fb_snap o = {.fd = -1, .lock_fd = -1};
        snprintf(o.dir, sizeof o.dir, "%s", s->dir);
        memcpy(o.key, snaps[old].key, 65);
        forget(&o);
        char lpath[4400];
        path_of(&o, ".lock", lpath, sizeof lpath);
        unlink(lpath);
        fprintf(stderr, "forgebox: VM snapshots: removed %s/%s.snap, the least recently used (at most "
                        "%d are kept)\n", s->dir, o.key, FB_SNAP_MAX_SHAPES);
        snaps[old] = snaps[--n];
    }
    free(snaps);
}

fb_snap_mode fb_snap_prepare(const char *state_dir, const char *shape, fb_snap *s)
{
    memset(s, 0, sizeof *s);
    s->fd = s->lock_fd = -1;
    s->shape = shape;
    s->mode = FB_SNAP_NONE;
    fb_snap_key(shape, s->key);
    fb_err err = {{0}};
    if (!state_dir || ensure_dir(state_dir, s, &err) < 0) {
        if (state_dir)
            fprintf(stderr, "forgebox: VM snapshots: %s\n", err.msg);
        return FB_SNAP_NONE;
    }
    int rc = open_verified(s, &err);
    if (rc == 1) {
        fb_trace("snapshot: verified");
        touch_used(s);
        return s->mode = FB_SNAP_RESTORE;
    }
    if (rc < 0) {
        char spath[4400];
        path_of(s, ".snap", spath, sizeof spath);
        fprintf(stderr, "forgebox: VM snapshot %s refused: %s; this VM boots cold and makes it again\n",
                spath, err.msg);
        forget(s);
    }
    /* None (any more): whoever takes the lock makes it; the others boot
     * cold meanwhile. */
    char lpath[4400], tpath[4400];
    path_of(s, ".lock", lpath, sizeof lpath);
    s->lock_fd = open(lpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        fb_snap_close(s);
        return FB_SNAP_NONE;
    }
    touch_used(s);
    evict(s);
    path_of(s, ".snap.tmp", tpath, sizeof tpath);
    s->fd = open(tpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->fd < 0) {
        fprintf(stderr, "forgebox: VM snapshots: cannot create %s: %s\n", tpath, strerror(errno));
        fb_snap_close(s);
        return FB_SNAP_NONE;
    }
    return s->mode = FB_SNAP_MAKE;
}

int fb_snap_commit(fb_snap *s, fb_err *err)
{
    if (s->mode != FB_SNAP_MAKE || s->fd < 0)
        return fb_fail(err, "internal: no snapshot being made");
    char sha[65], tpath[4400], spath[4400];
    uint64_t size = 0;
    path_of(s, ".snap.tmp", tpath, sizeof tpath);
    path_of(s, ".snap", spath, sizeof spath);
    if (fsync(s->fd) < 0)
        return fb_fail_errno(err, "cannot sync the snapshot");
    if (hash_fd(s->fd, sha, &size, err) < 0)
        return -1;
    if (size == 0)
        return fb_fail(err, "QEMU wrote an empty snapshot");
    if (fchmod(s->fd, 0400) < 0)
        return fb_fail_errno(err, "cannot seal the snapshot");
    if (rename(tpath, spath) < 0)
        return fb_fail_errno(err, "cannot publish %s", spath);
    /* The fingerprint is taken after the rename, which sets the ctime. */
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        unlink(spath);
        return fb_fail_errno(err, "cannot stat the snapshot");
    }
    char fp[160];
    fingerprint(&st, fp, sizeof fp);
    if (write_meta(s, sha, size, fp, err) < 0) {
        unlink(spath);
        return -1;
    }
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    s->mode = FB_SNAP_NONE; /* published: close must not delete it */
    return 0;
}

void fb_snap_discard(fb_snap *s)
{
    if (s->mode == FB_SNAP_RESTORE)
        forget(s);
    fb_snap_close(s);
}

void fb_snap_close(fb_snap *s)
{
    if (s->mode == FB_SNAP_MAKE) {
        char tpath[4400];
        path_of(s, ".snap.tmp", tpath, sizeof tpath);
        unlink(tpath);
    }
    if (s->fd >= 0)
        close(s->fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    s->fd = s->lock_fd = -1;
    s->mode = FB_SNAP_NONE;
}
