/*
 * util.c - see util.h.  Everything here is deliberately boring: loops that
 * retry on EINTR and short counts, and bounds checks before arithmetic.
 */
#define _GNU_SOURCE
#include "util.h"

#include "common/time.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int fb_vfail(fb_err *err, int code, const char *fmt, va_list ap)
{
    if (err)
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    return code;
}

int fb_fail(fb_err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fb_vfail(err, -1, fmt, ap);
    va_end(ap);
    return -1;
}

int fb_fail_code(fb_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fb_vfail(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int fb_fail_prefix(fb_err *err, const char *fmt, ...)
{
    if (err) {
        char old[sizeof err->msg];
        memcpy(old, err->msg, sizeof old);
        old[sizeof old - 1] = '\0';
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n + 2 < sizeof err->msg) {
            size_t room = sizeof err->msg - (size_t)n - 2;
            snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %.*s", (int)room, old);
        }
    }
    return -1;
}

int fb_fail_errno(fb_err *err, const char *fmt, ...)
{
    int saved = errno;
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof err->msg)
            snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(saved));
    }
    errno = saved;
    return -1;
}

void fb_freep(void *p)
{
    void **pp = p;
    free(*pp);
}

void fb_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

int fb_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fb_read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) {
            errno = EPIPE;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int fb_read_up_to(int fd, void *buf, size_t len, size_t *got)
{
    char *p = buf;
    size_t off = 0;
    while (off < len) {
        ssize_t n = read(fd, p + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *got = off;
            return -1;
        }
        if (n == 0)
            break;
        off += (size_t)n;
    }
    *got = off;
    return 0;
}

static int sync_dir_of(const char *path, fb_err *err)
{
    char dir[4096];
    size_t n = strnlen(path, sizeof dir);
    if (n == sizeof dir)
        return fb_fail(err, "path too long: %.64s", path);
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    cleanup_fd int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        return fb_fail_errno(err, "cannot sync directory %s", slash ? dir : ".");
    return 0;
}

int fb_create_file_once(const char *path, const void *data, size_t len, fb_err *err)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return fb_fail(err, "path too long: %.64s", path);
    cleanup_fd int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0)
        return fb_fail_errno(err, "cannot create %s", tmp);
    int rc = 0;
    if (fchmod(fd, 0600) < 0 || fb_write_all(fd, data, len) < 0 || fsync(fd) < 0)
        rc = fb_fail_errno(err, "cannot write %s", tmp);
    else if (link(tmp, path) < 0 && errno != EEXIST)
        rc = fb_fail_errno(err, "cannot create %s", path);
    unlink(tmp);
    if (rc == 0)
        rc = sync_dir_of(path, err);
    return rc;
}

void fb_die_with_error(int report_fd, const char *fmt, ...)
{
    int saved = errno;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = (int)sizeof msg - 1;
#ifdef __GLIBC__
    const char *desc = strerrordesc_np(saved);
#else
    /* musl (the agent, Makefile AGENT_LIBC): its strerror has no buffer
     * and no locale data to load, a static table as strerrordesc_np is. */
    const char *desc = strerror(saved);
#endif
    snprintf(msg + n, sizeof msg - (size_t)n, ": %s", desc ? desc : "unknown error");
    (void)fb_write_all(report_fd, msg, strlen(msg));
    _exit(125);
}

int fb_write_file(const char *path, const char *text, fb_err *err)
{
    cleanup_fd int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return fb_fail_errno(err, "cannot open %s", path);
    if (fb_write_all(fd, text, strlen(text)) < 0)
        return fb_fail_errno(err, "cannot write '%s' to %s", text, path);
    return 0;
}

int fb_read_file(const char *path, char *buf, size_t cap, fb_err *err)
{
    if (cap == 0)
        return fb_fail(err, "internal: empty buffer for %s", path);
    cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fb_fail_errno(err, "cannot open %s", path);
    size_t off = 0;
    if (fb_read_up_to(fd, buf, cap - 1, &off) < 0)
        return fb_fail_errno(err, "cannot read %s", path);
    buf[off] = '\0';
    return 0;
}

int fb_loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int e = errno;
    close(s);
    errno = e;
    return rc < 0 ? -1 : 0;
}

int fb_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl);
}

int fb_set_cloexec(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0)
        return -1;
    fl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, fl);
}

int fb_random_bytes(void *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = getrandom((char *)buf + off, len - off, 0);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno != EINTR)
            return -1;
    }
    return 0;
}

void fb_hex(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int fb_mkdir_p(const char *path, mode_t mode, fb_err *err)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return fb_fail(err, "path too long or empty: %.64s", path);
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return fb_fail_errno(err, "cannot create directory %s", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create directory %s", buf);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

int fb_rm_rf(const char *path)
{
    return nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

int fb_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

uint64_t fb_now_ns(void)
{
    return fb_time_monotonic_ns();
}

void fb_trace(const char *what)
{
    static int enabled = -1;
    static uint64_t t0;
    if (enabled < 0) {
        const char *e = getenv("FORGEBOX_TRACE");
        enabled = e && *e && strcmp(e, "0") != 0;
        t0 = fb_now_ns();
    }
    if (enabled)
        fprintf(stderr, "forgebox: trace +%.3f ms %s\n", (double)(fb_now_ns() - t0) / 1e6, what);
}
