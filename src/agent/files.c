/*
 * files.c - file put/get/list/stat/remove/mkdir for the host (agent.h).
 *
 * The file API reaches only /workspace and /tmp.  A path is split into its
 * root and the rest; ".." is refused outright, and the rest is opened with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 * RESOLVE_NO_XDEV) from the root, so no symlink planted by sandboxed code,
 * and no mount inside the scratch area, can redirect a host request.  All
 * of it runs with the filesystem identity of the tool user (setfsuid), so
 * the agent can never touch what the tool user could not.
 *
 * get is pull-based (one bounded chunk per request, "offset"/"length") and
 * put is push-based (one chunk per request, "offset" must equal the file's
 * current size), which keeps both sides' buffers bounded.
 */
#define _GNU_SOURCE
#include "agent/agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_LIST 4096
#define MAX_DEPTH 64

static fb_errc errno_code(int e)
{
    switch (e) {
    case ENOENT: return FB_E_NOT_FOUND;
    case EEXIST: return FB_E_EXISTS;
    case ENOTEMPTY: return FB_E_NOT_EMPTY;
    case ENOTDIR:
    case EISDIR: return FB_E_WRONG_TYPE;
    case EACCES:
    case EPERM: return FB_E_PERMISSION_DENIED;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return FB_E_NO_SPACE;
    case ELOOP:
    case EXDEV:
    case ENAMETOOLONG: return FB_E_BAD_PATH;
    default: return FB_E_IO_ERROR;
    }
}

static int reply_errno(fb_agent *a, uint64_t id, const char *what, const char *path, int e)
{
    char msg[FB_MAX_PATH + 128];
    const char *why = e == ELOOP || e == EXDEV ? "path goes through a symlink or mount"
                                               : strerror(e);
    snprintf(msg, sizeof msg, "%s %.512s: %s", what, path, why);
    return fb_agent_reply_error(a, id, errno_code(e), msg);
}

/* Splits an API path into a scratch root fd and a relative rest.  Returns
 * the root fd, or -1 with a message. */
static int resolve_root(const char *path, const char **rest, char *msg, size_t msgcap)
{
    const char *p = path;
    const char *root;
    if (p[0] != '/') {
        root = "/workspace";
    } else if (strncmp(p, "/workspace", 10) == 0 && (p[10] == '/' || p[10] == '\0')) {
        root = "/workspace";
        p += 10;
    } else if (strncmp(p, "/tmp", 4) == 0 && (p[4] == '/' || p[4] == '\0')) {
        root = "/tmp";
        p += 4;
    } else {
        snprintf(msg, msgcap, "path %.512s is outside /workspace and /tmp", path);
        return -1;
    }
    while (*p == '/')
        p++;
    /* Refuse ".." anywhere; "." and empty components are harmless. */
    for (const char *c = p; *c;) {
        size_t n = strcspn(c, "/");
        if (n == 2 && c[0] == '.' && c[1] == '.') {
            snprintf(msg, msgcap, "path %.512s contains '..'", path);
            return -1;
        }
        c += n;
        while (*c == '/')
            c++;
    }
    *rest = *p ? p : ".";
    int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        snprintf(msg, msgcap, "cannot open %s: %s", root, strerror(errno));
    return fd;
}

static int open_beneath(int dirfd, const char *rest, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
    };
    return (int)syscall(SYS_openat2, dirfd, rest, &how, sizeof how);
}

/* Opens the parent directory of rest and returns the last component. */
static int open_parent(int rootfd, const char *rest, char *leaf, size_t leafcap)
{
    char buf[FB_MAX_PATH + 1];
    snprintf(buf, sizeof buf, "%s", rest);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    char *slash = strrchr(buf, '/');
    const char *name = slash ? slash + 1 : buf;
    if (strlen(name) >= leafcap || strcmp(name, ".") == 0 || name[0] == '\0') {
        errno = EINVAL;
        return -1;
    }
    snprintf(leaf, leafcap, "%s", name);
    if (!slash)
        return open_beneath(rootfd, ".", O_PATH | O_DIRECTORY, 0);
    *slash = '\0';
    return open_beneath(rootfd, buf[0] ? buf : ".", O_PATH | O_DIRECTORY, 0);
}

static const char *type_name(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISLNK(m)) return "symlink";
    return "other";
}

static json_t *stat_json(const struct stat *st)
{
    return json_pack("{s:s, s:I, s:i, s:I}", "type", type_name(st->st_mode), "size",
                     (json_int_t)st->st_size, "mode", (int)(st->st_mode & 07777), "mtime",
                     (json_int_t)st->st_mtime);
}

static int do_put(fb_agent *a, const fb_frame *f, const fb_msg_file *m, int rootfd, const char *rest)
{
    const char *path = m->path;
    uint64_t offset = m->offset, mode = m->mode;
    int flags = O_WRONLY | O_NONBLOCK | (offset == 0 ? O_CREAT | O_TRUNC : O_APPEND);
    cleanup_fd int fd = open_beneath(rootfd, rest, flags, (mode_t)mode);
    if (fd < 0)
        return reply_errno(a, f->id, "cannot write", path, errno);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return reply_errno(a, f->id, "cannot stat", path, errno);
    if (!S_ISREG(st.st_mode))
        return fb_agent_reply_error(a, f->id, FB_E_WRONG_TYPE, "not a regular file");
    if ((uint64_t)st.st_size != offset)
        return fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST,
                                    "\"offset\" does not match the file's current size");
    if (offset == 0 && fchmod(fd, (mode_t)mode) < 0)
        return reply_errno(a, f->id, "cannot chmod", path, errno);
    if (fb_write_all(fd, f->payload, f->payload_len) < 0)
        return reply_errno(a, f->id, "cannot write", path, errno);
    return fb_agent_reply_ok(a, f->id, json_pack("{s:I}", "size", (json_int_t)(offset + f->payload_len)),
                             NULL, 0);
}

/* get's read buffer, kept from one get to the next, in pages left out of
 * the exec child's fork (MADV_DONTFORK, as exec.c's scratch: the agent
 * writes them, and a forked page it writes is a copy-on-write fault).  A
 * malloc of each request's length (1 MiB from the host) was with musl's
 * malloc an mmap and munmap per get, and its pages faulted in again at
 * every get (~40 us a fault in a VM under TCG); glibc's malloc happened to
 * keep them.  Grown on demand, never shrunk: at most one chunk. */
static uint8_t *get_buf;
static size_t get_cap;

static uint8_t *get_buffer(size_t n)
{
    if (n <= get_cap)
        return get_buf;
    size_t cap = (n + 0xffff) & ~(size_t)0xffff;
    void *p = fb_agent_map_unforked(cap);
    if (!p)
        return NULL;
    if (get_buf)
        munmap(get_buf, get_cap);
    get_buf = p;
    get_cap = cap;
    return get_buf;
}

static int do_get(fb_agent *a, const fb_frame *f, const fb_msg_file *m, int rootfd, const char *rest)
{
    const char *path = m->path;
    uint64_t offset = m->offset, length = m->length;
    cleanup_fd int fd = open_beneath(rootfd, rest, O_RDONLY | O_NONBLOCK, 0);
    if (fd < 0)
        return reply_errno(a, f->id, "cannot read", path, errno);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return reply_errno(a, f->id, "cannot stat", path, errno);
    if (!S_ISREG(st.st_mode))
        return fb_agent_reply_error(a, f->id, FB_E_WRONG_TYPE, "not a regular file");
    /* No more than the file holds past offset (what eof below is
     * reckoned from): an empty file's get needs no buffer. */
    uint64_t avail = offset < (uint64_t)st.st_size ? (uint64_t)st.st_size - offset : 0;
    if (length > avail)
        length = avail;
    uint8_t *buf = get_buffer(length ? length : 1);
    if (!buf)
        return fb_agent_reply_error(a, f->id, FB_E_RESOURCE, "out of memory");
    size_t got = 0;
    while (got < length) {
        ssize_t n = pread(fd, buf + got, length - got, (off_t)(offset + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return reply_errno(a, f->id, "cannot read", path, errno);
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    bool eof = offset + got >= (uint64_t)st.st_size;
    return fb_agent_reply_ok(a, f->id,
                             json_pack("{s:I, s:I, s:b}", "offset", (json_int_t)offset, "size",
                                       (json_int_t)st.st_size, "eof", eof),
                             buf, got);
}

static int do_list(fb_agent *a, const fb_frame *f, const fb_msg_file *m, int rootfd, const char *rest)
{
    const char *path = m->path;
    int fd = open_beneath(rootfd, rest, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return reply_errno(a, f->id, "cannot list", path, errno);
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return reply_errno(a, f->id, "cannot list", path, e);
    }
    json_t *arr = json_array();
    bool truncated = false;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (json_array_size(arr) >= MAX_LIST) {
            truncated = true;
            break;
        }
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        json_t *ent = stat_json(&st);
        /* Sandboxed code can create names that are not UTF-8: those are
         * listed with "name": null and their bytes in hex. */
        json_t *name = json_string(de->d_name);
        if (!name) {
            char hex[2 * 256 + 1];
            fb_hex((const uint8_t *)de->d_name, strnlen(de->d_name, 255), hex);
            json_object_set_new(ent, "name_hex", json_string(hex));
        }
        json_object_set_new(ent, "name", name ? name : json_null());
        json_array_append_new(arr, ent);
    }
    closedir(d);
    char *text = json_dumps(arr, JSON_COMPACT); /* jansson's allocator (jheap.c) */
    json_decref(arr);
    if (!text || strlen(text) > FB_PROTO_MAX_PAYLOAD) {
        fb_json_text_free(text);
        return fb_agent_reply_error(a, f->id, FB_E_TOO_LARGE, "directory listing too large");
    }
    int rc = fb_agent_reply_ok(a, f->id, json_pack("{s:b}", "truncated", truncated), text, strlen(text));
    fb_json_text_free(text);
    return rc;
}

static int do_stat(fb_agent *a, const fb_frame *f, const fb_msg_file *m, int rootfd, const char *rest)
{
    const char *path = m->path;
    cleanup_fd int fd = open_beneath(rootfd, rest, O_PATH, 0);
    if (fd < 0)
        return reply_errno(a, f->id, "cannot stat", path, errno);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return reply_errno(a, f->id, "cannot stat", path, errno);
    return fb_agent_reply_ok(a, f->id, stat_json(&st), NULL, 0);
}

/* Removes everything under dirfd, depth-limited, never following links. */
static int remove_tree(int dirfd, int depth)
{
    if (depth > MAX_DEPTH) {
        errno = ELOOP;
        return -1;
    }
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd, de->d_name, 0) == 0)
            continue;
        if (errno != EISDIR && errno != EPERM) {
            rc = -1;
            break;
        }
        int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || remove_tree(sub, depth + 1) < 0) {
            if (sub >= 0)
                close(sub);
            rc = -1;
            break;
        }
        close(sub);
        if (unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0) {
            rc = -1;
            break;
        }
    }
    int e = errno;
    closedir(d);
    errno = e;
    return rc;
}

static int do_remove(fb_agent *a, const fb_frame *f, const fb_msg_file *m, int rootfd, const char *rest)
{
    const char *path = m->path;
    bool recursive = m->recursive;
    char leaf[256];
    cleanup_fd int parent = open_parent(rootfd, rest, leaf, sizeof leaf);
    if (parent < 0)
        return errno == EINVAL ? fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST,
                                                      "cannot remove a scratch root itself")
                               : reply_errno(a, f->id, "cannot remove", path, errno);
    /* O_PATH parent: re-open it as a real directory fd for *at calls. */
    cleanup_fd int dfd = openat(parent, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return reply_errno(a, f->id, "cannot remove", path, errno);
    if (unlinkat(dfd, leaf, 0) == 0)
        return fb_agent_reply_ok(a, f->id, NULL, NULL, 0);
    if (errno != EISDIR && errno != EPERM)
        return reply_errno(a, f->id, "cannot remove", path, errno);
    if (recursive) {
        cleanup_fd int sub = openat(dfd, leaf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || remove_tree(sub, 0) < 0)
            return reply_errno(a, f->id, "cannot remove", path, errno);
    }
    if (unlinkat(dfd, leaf, AT_REMOVEDIR) < 0)
        return reply_errno(a, f->id, "cannot remove", path, errno);
    return fb_agent_reply_ok(a, f->id, NULL, NULL, 0);
}

static int do_mkdir(fb_agent *a, const fb_frame *f, const fb_msg_file *m, int rootfd, const char *rest)
{
    const char *path = m->path;
    bool parents = m->parents;
    uint64_t mode = m->mode;
    /* Walk component by component so every step is checked beneath. */
    char buf[FB_MAX_PATH + 1];
    snprintf(buf, sizeof buf, "%s", rest);
    cleanup_fd int cur = open_beneath(rootfd, ".", O_PATH | O_DIRECTORY, 0);
    if (cur < 0)
        return reply_errno(a, f->id, "cannot create", path, errno);
    char *save = NULL;
    char *comp = strtok_r(buf, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        bool last = next == NULL;
        if (strcmp(comp, ".") != 0) {
            /* Without "parents", only the last component is created. */
            if ((last || parents) && mkdirat(cur, comp, (mode_t)mode) < 0 &&
                (errno != EEXIST || (last && !parents)))
                return reply_errno(a, f->id, "cannot create", path, errno);
            int nfd = open_beneath(cur, comp, O_PATH | O_DIRECTORY, 0);
            if (nfd < 0)
                return reply_errno(a, f->id, "cannot create", path, errno);
            close(cur);
            cur = nfd;
        }
        comp = next;
    }
    return fb_agent_reply_ok(a, f->id, NULL, NULL, 0);
}

int fb_files_handle(fb_agent *a, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_file m;
    if (fb_msg_decode_file(f, &m, &err) < 0)
        return fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST, err.msg);
    if (m.path[0] == '\0')
        return fb_agent_reply_error(a, f->id, FB_E_BAD_PATH, "empty path");

    char msg[FB_MAX_PATH + 128];
    const char *rest = NULL;
    cleanup_fd int rootfd = resolve_root(m.path, &rest, msg, sizeof msg);
    if (rootfd < 0)
        return fb_agent_reply_error(a, f->id, FB_E_BAD_PATH, msg);

    /* Act as the tool user: its permissions, none of the agent's. */
    setfsgid(FB_TOOL_GID);
    setfsuid(FB_TOOL_UID);
    int rc;
    switch (m.type) {
    case FB_MSG_FILE_PUT: rc = do_put(a, f, &m, rootfd, rest); break;
    case FB_MSG_FILE_GET: rc = do_get(a, f, &m, rootfd, rest); break;
    case FB_MSG_FILE_LIST: rc = do_list(a, f, &m, rootfd, rest); break;
    case FB_MSG_FILE_STAT: rc = do_stat(a, f, &m, rootfd, rest); break;
    case FB_MSG_FILE_REMOVE: rc = do_remove(a, f, &m, rootfd, rest); break;
    default: rc = do_mkdir(a, f, &m, rootfd, rest); break;
    }
    setfsuid(0);
    setfsgid(0);
    return rc;
}
