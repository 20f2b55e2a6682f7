/*
 * image.c - sealing and verifying guest images (image.h).
 *
 * Tree digest: a depth-first walk in strcmp order of names, never following
 * symlinks, feeding one line per entry into sha256:
 *     <type> <mode> <uid> <gid> <size> <len>:<path> <len>:<content sha256 | link target | ->
 * so a change of content, ownership, mode, a link target, an added or a
 * removed file all change the digest.  Device nodes and sockets in a rootfs
 * are refused outright: a guest image has no business shipping them.
 */
#define _GNU_SOURCE
#include "image/image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_TREE_DEPTH 64
#define MAX_TREE_ENTRIES 500000

static const char *const vm_files[] = {"vmlinuz", "initrd.img", "rootfs.ext4", NULL};

static int hash_fd(int fd, crypto_hash_sha256_state *st, uint64_t *size, fb_err *err, const char *path)
{
    enum { CHUNK = 1 << 20 };
    cleanup_free uint8_t *buf = malloc(CHUNK);
    if (!buf)
        return fb_fail(err, "out of memory hashing %s", path);
    uint64_t total = 0;
    for (;;) {
        size_t n = 0;
        if (fb_read_up_to(fd, buf, CHUNK, &n) < 0)
            return fb_fail_errno(err, "cannot read %s", path);
        crypto_hash_sha256_update(st, buf, (unsigned long long)n);
        total += n;
        if (n < CHUNK)
            break;
    }
    if (size)
        *size = total;
    return 0;
}

int fb_image_file_digest(const char *path, char out[65], uint64_t *size, fb_err *err)
{
    cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return fb_fail_errno(err, "cannot open image file %s", path);
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    if (hash_fd(fd, &st, size, err, path) < 0)
        return -1;
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, d);
    fb_hex(d, sizeof d, out);
    return 0;
}

/* ---- tree walk ------------------------------------------------------------ */

typedef struct walk {
    crypto_hash_sha256_state st;
    uint64_t entries;
    fb_err *err;
} walk;

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk_dir(walk *w, int dirfd, const char *rel, int depth);

static int walk_entry(walk *w, int dirfd, const char *name, const char *rel, int depth)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return fb_fail_errno(w->err, "cannot stat %s", rel);
    if (++w->entries > MAX_TREE_ENTRIES)
        return fb_fail(w->err, "rootfs has more than %d entries", MAX_TREE_ENTRIES);
    char line[PATH_MAX + 512];
    char extra[PATH_MAX + 1] = "-";
    char type;
    if (S_ISREG(st.st_mode)) {
        type = 'f';
        {
            cleanup_fd int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                return fb_fail_errno(w->err, "cannot open %s", rel);
            crypto_hash_sha256_state fst;
            crypto_hash_sha256_init(&fst);
            if (hash_fd(fd, &fst, NULL, w->err, rel) < 0)
                return -1;
            uint8_t d[crypto_hash_sha256_BYTES];
            crypto_hash_sha256_final(&fst, d);
            fb_hex(d, sizeof d, extra);
        }
    } else if (S_ISDIR(st.st_mode)) {
        type = 'd';
    } else if (S_ISLNK(st.st_mode)) {
        type = 'l';
        ssize_t n = readlinkat(dirfd, name, extra, sizeof extra - 1);
        if (n < 0)
            return fb_fail_errno(w->err, "cannot read link %s", rel);
        extra[n] = '\0';
    } else if (S_ISFIFO(st.st_mode)) {
        type = 'p';
    } else {
        return fb_fail(w->err, "rootfs contains a device node or socket: %s", rel);
    }
    /* Path and link target are length-prefixed: names may contain spaces
     * and newlines, and no two trees may produce the same stream. */
    int n = snprintf(line, sizeof line, "%c %o %u %u %lld %zu:%s %zu:%s\n", type,
                     (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid,
                     type == 'f' ? (long long)st.st_size : 0LL, strlen(rel), rel, strlen(extra), extra);
    if (n < 0 || (size_t)n >= sizeof line)
        return fb_fail(w->err, "path too long in rootfs: %.100s", rel);
    crypto_hash_sha256_update(&w->st, (const uint8_t *)line, (unsigned long long)n);
    if (type == 'd') {
        cleanup_fd int sub = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0)
            return fb_fail_errno(w->err, "cannot open directory %s", rel);
        return walk_dir(w, sub, rel, depth + 1);
    }
    return 0;
}

static int walk_dir(walk *w, int dirfd, const char *rel, int depth)
{
    if (depth > MAX_TREE_DEPTH)
        return fb_fail(w->err, "rootfs nests deeper than %d levels at %s", MAX_TREE_DEPTH, rel);
    int dup = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0)
        return fb_fail_errno(w->err, "dup");
    DIR *d = fdopendir(dup);
    if (!d) {
        close(dup);
        return fb_fail_errno(w->err, "cannot read directory %s", rel);
    }
    size_t n = 0, cap = 64;
    char **names = malloc(cap * sizeof *names);
    struct dirent *de;
    int rc = 0;
    while (names && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap *= 2) * sizeof *names);
            if (!nn) {
                rc = fb_fail(w->err, "out of memory");
                break;
            }
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (!names[n]) {
            rc = fb_fail(w->err, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (!names)
        return fb_fail(w->err, "out of memory");
    qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char sub[PATH_MAX];
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", rel, names[i]) >= sizeof sub) {
            rc = fb_fail(w->err, "path too long in rootfs under %s", rel);
            break;
        }
        rc = walk_entry(w, dirfd, names[i], sub, depth);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int tree_hash(const char *dir, char out[65], uint64_t *entries, fb_err *err)
{
    walk w = {.err = err};
    crypto_hash_sha256_init(&w.st);
    cleanup_fd int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return fb_fail_errno(err, "cannot open rootfs directory %s", dir);
    /* The root directory's own mode and owner count too. */
    struct stat st;
    if (fstat(fd, &st) < 0)
        return fb_fail_errno(err, "cannot stat %s", dir);
    char line[128];
    int n = snprintf(line, sizeof line, "d %o %u %u 0 1:.\n", (unsigned)(st.st_mode & 07777),
                     (unsigned)st.st_uid, (unsigned)st.st_gid);
    crypto_hash_sha256_update(&w.st, (const uint8_t *)line, (unsigned long long)n);
    if (walk_dir(&w, fd, ".", 0) < 0)
        return -1;
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&w.st, d);
    fb_hex(d, sizeof d, out);
    if (entries)
        *entries = w.entries;
    return 0;
}

/* The cheap check: a digest over every entry's stat identity (inode, size,
 * mode, owner, mtime and ctime to the nanosecond) and name, in directory
 * order, without reading any content.  It only decides whether the full
 * digest must be recomputed, so a different order (which would only cause
 * a needless full check) is harmless; a content change always changes the
 * entry's ctime, which userspace cannot set back. */
struct fp_record {
    uint64_t ino, size;
    int64_t mtime_s, mtime_ns, ctime_s, ctime_ns;
    uint32_t mode, uid, gid, namelen;
};

static int fingerprint_dir(int dirfd, crypto_hash_sha256_state *st, int depth, uint64_t *count,
                           fb_err *err)
{
    if (depth > MAX_TREE_DEPTH)
        return fb_fail(err, "rootfs nests deeper than %d levels", MAX_TREE_DEPTH);
    int dup = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dup >= 0 ? fdopendir(dup) : NULL;
    if (!d) {
        if (dup >= 0)
            close(dup);
        return fb_fail_errno(err, "cannot read a rootfs directory");
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.' && (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
            continue;
        if (++*count > MAX_TREE_ENTRIES) {
            rc = fb_fail(err, "rootfs has more than %d entries", MAX_TREE_ENTRIES);
            break;
        }
        struct stat sb;
        if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = fb_fail_errno(err, "cannot stat %s in the rootfs", de->d_name);
            break;
        }
        struct fp_record r = {
            .ino = sb.st_ino, .size = (uint64_t)sb.st_size,
            .mtime_s = sb.st_mtim.tv_sec, .mtime_ns = sb.st_mtim.tv_nsec,
            .ctime_s = sb.st_ctim.tv_sec, .ctime_ns = sb.st_ctim.tv_nsec,
            .mode = sb.st_mode, .uid = sb.st_uid, .gid = sb.st_gid,
            .namelen = (uint32_t)strlen(de->d_name),
        };
        crypto_hash_sha256_update(st, (const uint8_t *)&r, sizeof r);
        crypto_hash_sha256_update(st, (const uint8_t *)de->d_name, r.namelen);
        if (S_ISDIR(sb.st_mode)) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = fb_fail_errno(err, "cannot open %s in the rootfs", de->d_name);
                break;
            }
            rc = fingerprint_dir(sub, st, depth + 1, count, err);
            close(sub);
        }
    }
    closedir(d);
    return rc;
}

static int tree_fingerprint(const char *dir, char out[65], fb_err *err)
{
    cleanup_fd int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return fb_fail_errno(err, "cannot open rootfs directory %s", dir);
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return fb_fail_errno(err, "cannot stat %s", dir);
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    struct fp_record r = {.ino = sb.st_ino, .mtime_s = sb.st_mtim.tv_sec, .mtime_ns = sb.st_mtim.tv_nsec,
                          .ctime_s = sb.st_ctim.tv_sec, .ctime_ns = sb.st_ctim.tv_nsec,
                          .mode = sb.st_mode, .uid = sb.st_uid, .gid = sb.st_gid};
    crypto_hash_sha256_update(&st, (const uint8_t *)&r, sizeof r);
    uint64_t count = 0;
    if (fingerprint_dir(fd, &st, 0, &count, err) < 0)
        return -1;
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, d);
    fb_hex(d, sizeof d, out);
    return 0;
}

int fb_image_tree_digest(const char *dir, char out[65], uint64_t *entries, fb_err *err)
{
    if (sodium_init() < 0)
        return fb_fail(err, "libsodium failed to initialise");
    return tree_hash(dir, out, entries, err);
}

/* ---- seal ----------------------------------------------------------------- */

static json_t *read_packages(const char *image_dir, fb_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/packages.txt", image_dir);
    FILE *f = fopen(path, "re");
    if (!f) {
        fb_fail_errno(err, "cannot open %s (written by guest/build-image.sh)", path);
        return NULL;
    }
    json_t *pk = json_object();
    char line[512];
    while (fgets(line, sizeof line, f)) {
        char name[256], ver[256];
        if (sscanf(line, "%255s %255s", name, ver) == 2)
            json_object_set_new(pk, name, json_string(ver));
    }
    fclose(f);
    return pk;
}

int fb_image_seal(const char *image_dir, fb_err *err)
{
    if (sodium_init() < 0)
        return fb_fail(err, "libsodium failed to initialise");
    json_t *packages = read_packages(image_dir, err);
    if (!packages)
        return -1;
    json_t *artifacts = json_object();
    char path[PATH_MAX], hex[65];
    for (const char *const *f = vm_files; *f; f++) {
        uint64_t size;
        snprintf(path, sizeof path, "%s/%s", image_dir, *f);
        if (fb_image_file_digest(path, hex, &size, err) < 0)
            goto fail;
        json_object_set_new(artifacts, *f, json_pack("{s:s, s:I}", "sha256", hex, "size", (json_int_t)size));
    }
    /* The jail's EROFS root is optional (built where mkfs.erofs exists). */
    struct stat est;
    snprintf(path, sizeof path, "%s/%s", image_dir, FB_IMAGE_EROFS);
    if (lstat(path, &est) == 0) {
        uint64_t size;
        if (fb_image_file_digest(path, hex, &size, err) < 0)
            goto fail;
        json_object_set_new(artifacts, FB_IMAGE_EROFS,
                            json_pack("{s:s, s:I}", "sha256", hex, "size", (json_int_t)size));
    }
    uint64_t entries;
    snprintf(path, sizeof path, "%s/rootfs", image_dir);
    if (fb_image_tree_digest(path, hex, &entries, err) < 0)
        goto fail;
    json_object_set_new(artifacts, "rootfs",
                        json_pack("{s:s, s:I}", "tree_sha256", hex, "entries", (json_int_t)entries));

    char kernel[128] = "";
    snprintf(path, sizeof path, "%s/kernel-version.txt", image_dir);
    if (fb_read_file(path, kernel, sizeof kernel, NULL) == 0)
        kernel[strcspn(kernel, "\n")] = '\0';
    json_t *m = json_pack("{s:i, s:s, s:o, s:o}", "format", 1, "kernel", kernel, "packages", packages,
                          "artifacts", artifacts);
    char tmp[PATH_MAX], dst[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/manifest.json.tmp", image_dir);
    snprintf(dst, sizeof dst, "%s/manifest.json", image_dir);
    int rc = json_dump_file(m, tmp, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(m);
    if (rc < 0 || rename(tmp, dst) < 0)
        return fb_fail_errno(err, "cannot write %s", dst);
    return 0;
fail:
    json_decref(packages);
    json_decref(artifacts);
    return -1;
}

/* ---- verify --------------------------------------------------------------- */

static int file_fingerprint(const char *path, char out[160], fb_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return fb_fail_errno(err, "image file %s is missing", path);
    if (!S_ISREG(st.st_mode))
        return fb_fail(err, "image file %s is not a regular file", path);
    snprintf(out, 160, "%llu:%llu:%lld:%lld.%09ld:%lld.%09ld", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
             st.st_mtim.tv_nsec, (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
    return 0;
}

static void cache_path(const char *state_dir, const char *image_dir, char *out, size_t cap)
{
    char real[PATH_MAX];
    if (!realpath(image_dir, real))
        snprintf(real, sizeof real, "%s", image_dir);
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const uint8_t *)real, strlen(real));
    char hex[65];
    fb_hex(d, sizeof d, hex);
    hex[16] = '\0';
    snprintf(out, cap, "%s/image-cache/%s.json", state_dir, hex);
}

static json_t *load_cache(const char *path)
{
    json_error_t je;
    json_t *c = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!c || !json_is_object(c)) {
        json_decref(c);
        return json_object();
    }
    return c;
}

static void save_cache(const char *state_dir, const char *path, json_t *c)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/image-cache", state_dir);
    if (fb_mkdir_p(dir, 0700, NULL) < 0)
        return;
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid());
    if (json_dump_file(c, tmp, JSON_COMPACT) == 0) {
        chmod(tmp, 0600);
        if (rename(tmp, path) < 0)
            unlink(tmp);
    } else {
        unlink(tmp);
    }
}

static const char *manifest_digest(const json_t *m, const char *artifact, const char *key)
{
    json_t *a = json_object_get(json_object_get(m, "artifacts"), artifact);
    const char *v = json_string_value(json_object_get(a, key));
    return v && strlen(v) == 64 ? v : NULL;
}

/* One artifact file against its manifest sha256, skipping the hash when
 * the cache entry holds the file's current fingerprint. */
static int verify_file(const char *image_dir, json_t *m, const char *name, json_t *entry,
                       bool *dirty, fb_err *err)
{
    char path[PATH_MAX], fp[160], got[65];
    snprintf(path, sizeof path, "%s/%s", image_dir, name);
    const char *want = manifest_digest(m, name, "sha256");
    if (!want)
        return fb_fail(err, "image manifest has no sha256 for %s; rebuild with `make image`", name);
    if (file_fingerprint(path, fp, err) < 0)
        return -1;
    const char *seen = json_string_value(json_object_get(entry, name));
    if (seen && strcmp(seen, fp) == 0)
        return 0;
    if (fb_image_file_digest(path, got, NULL, err) < 0)
        return -1;
    if (strcmp(got, want) != 0)
        return fb_fail(err,
                       "guest image file %s has been modified: its sha256 is %.16s..., the "
                       "manifest says %.16s...; refusing to start (rebuild with `make image`)",
                       path, got, want);
    if (entry) {
        json_object_set_new(entry, name, json_string(fp));
        *dirty = true;
    }
    return 0;
}

/* The start's fast path: every file this start needs has, in the cache
 * entry of this exact manifest (keyed by the manifest's digest), the
 * fingerprint it has now.  Such an entry is only ever written after the
 * file's sha256 matched this manifest (verify_file), so the manifest
 * need not be parsed again (0.15 ms of every start).  A file missing from
 * the entry, an erofs root that is absent, or the rootfs tree: no fast
 * path, the full check decides. */
static bool all_fingerprints_match(const char *image_dir, json_t *entry, unsigned needs)
{
    if (!json_is_object(entry) || (needs & FB_IMAGE_NEEDS_JAIL))
        return false;
    const char *names[8];
    size_t n = 0;
    if (needs & FB_IMAGE_NEEDS_VM)
        for (const char *const *f = vm_files; *f; f++)
            names[n++] = *f;
    if (needs & FB_IMAGE_NEEDS_EROFS)
        names[n++] = FB_IMAGE_EROFS;
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX], fp[160];
        snprintf(path, sizeof path, "%s/%s", image_dir, names[i]);
        const char *seen = json_string_value(json_object_get(entry, names[i]));
        if (!seen || file_fingerprint(path, fp, NULL) < 0 || strcmp(seen, fp) != 0)
            return false;
    }
    return n > 0;
}

int fb_image_verify(const char *image_dir, const char *state_dir, unsigned needs, fb_err *err)
{
    if (sodium_init() < 0)
        return fb_fail(err, "libsodium failed to initialise");
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", image_dir);
    char mhex[65];
    if (fb_image_file_digest(path, mhex, NULL, err) < 0)
        return fb_fail(err, "no guest image at %s (manifest.json missing); build it with `make image`",
                       image_dir);

    char cpath[PATH_MAX];
    json_t *cache = NULL, *entry = NULL;
    if (state_dir) {
        cache_path(state_dir, image_dir, cpath, sizeof cpath);
        cache = load_cache(cpath);
        entry = json_object_get(cache, mhex); /* keyed by manifest digest */
        if (all_fingerprints_match(image_dir, entry, needs)) {
            json_decref(cache);
            return 0;
        }
    }
    json_error_t je;
    json_t *m = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!m || !json_is_object(m)) {
        json_decref(m);
        json_decref(cache);
        return fb_fail(err, "image manifest %s is not valid JSON: %s", path, je.text);
    }
    if (cache) {
        if (!json_is_object(entry)) {
            /* A new manifest: forget fingerprints of any older one. */
            json_object_clear(cache);
            entry = json_object();
            json_object_set_new(cache, mhex, entry);
        }
    }
    bool dirty = false;
    int rc = 0;

    if (needs & FB_IMAGE_NEEDS_VM)
        for (const char *const *f = vm_files; *f && rc == 0; f++)
            rc = verify_file(image_dir, m, *f, entry, &dirty, err);
    if (rc == 0 && (needs & FB_IMAGE_NEEDS_EROFS)) {
        /* Listed: checked like the rest.  Not listed but present: refused,
         * so that the jail may take the file's presence as verified. */
        snprintf(path, sizeof path, "%s/%s", image_dir, FB_IMAGE_EROFS);
        struct stat est;
        if (json_object_get(json_object_get(m, "artifacts"), FB_IMAGE_EROFS))
            rc = verify_file(image_dir, m, FB_IMAGE_EROFS, entry, &dirty, err);
        else if (lstat(path, &est) == 0)
            rc = fb_fail(err, "guest image file %s is not in the manifest; refusing to start "
                              "(rebuild with `make image`)", path);
    }
    if (rc == 0 && (needs & FB_IMAGE_NEEDS_JAIL)) {
        snprintf(path, sizeof path, "%s/rootfs", image_dir);
        const char *want = manifest_digest(m, "rootfs", "tree_sha256");
        char fp[65], got[65];
        if (!want)
            rc = fb_fail(err, "image manifest has no tree digest for rootfs/; rebuild with `make image`");
        else if ((rc = tree_fingerprint(path, fp, err)) == 0) {
            const char *seen = json_string_value(json_object_get(entry, "rootfs"));
            if (!seen || strcmp(seen, fp) != 0) {
                if ((rc = tree_hash(path, got, NULL, err)) == 0) {
                    if (strcmp(got, want) != 0)
                        rc = fb_fail(err,
                                     "guest rootfs %s has been modified: its tree digest is "
                                     "%.16s..., the manifest says %.16s...; refusing to start "
                                     "(rebuild with `make image`)",
                                     path, got, want);
                    else if (entry) {
                        json_object_set_new(entry, "rootfs", json_string(fp));
                        dirty = true;
                    }
                }
            }
        }
    }
    if (rc == 0 && dirty && cache)
        save_cache(state_dir, cpath, cache);
    json_decref(cache);
    json_decref(m);
    return rc;
}

int fb_image_describe(const char *image_dir, char *kernel, size_t kcap, uint64_t *npackages,
                      fb_err *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", image_dir);
    json_error_t je;
    json_t *m = json_load_file(path, 0, &je);
    if (!m)
        return fb_fail(err, "cannot read %s: %s", path, je.text);
    snprintf(kernel, kcap, "%s", json_string_value(json_object_get(m, "kernel")) ?: "?");
    *npackages = json_object_size(json_object_get(m, "packages"));
    json_decref(m);
    return 0;
}
