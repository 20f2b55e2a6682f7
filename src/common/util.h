/*
 * util.h - small helpers every ForgeBox module leans on.
 *
 * Scope-bound cleanup in the style of bubblewrap (cleanup_free, cleanup_fd,
 * steal_pointer), an error value that carries an operator-readable message,
 * and I/O wrappers that handle short counts and EINTR so that no caller has
 * to.  Nothing here allocates behind the caller's back or logs on its own.
 */
#ifndef FB_UTIL_H
#define FB_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- errors ----------------------------------------------------------- */

/* An error: what happened and, where it helps, what to do about it. */
typedef struct fb_err {
    char msg[512];
} fb_err;

/* Formats into err (if not NULL) and returns -1, so `return fb_fail(...)`. */
int fb_fail(fb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Puts a formatted prefix before the message already in err:
 * "prefix: old message".  Returns -1. */
int fb_fail_prefix(fb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same as fb_fail, appending ": strerror(errno)". */
int fb_fail_errno(fb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- scope-bound cleanup ---------------------------------------------- */

void fb_freep(void *p);
void fb_closep(int *fd);

#define cleanup_free __attribute__((cleanup(fb_freep)))
#define cleanup_fd __attribute__((cleanup(fb_closep)))

static inline void *fb_steal_pointer(void *pp)
{
    void **p = pp;
    void *v = *p;
    *p = NULL;
    return v;
}
#define steal_pointer(pp) fb_steal_pointer(pp)

static inline int fb_steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}

/* ---- I/O ---------------------------------------------------------------- */

/* Writes all of buf; returns 0 or -1 with errno set. */
int fb_write_all(int fd, const void *buf, size_t len);
/* Reads exactly len bytes; returns 0, or -1 with errno set (EPIPE on EOF). */
int fb_read_exact(int fd, void *buf, size_t len);
/* Writes a small string to a file (cgroup knobs, uid_map, /proc files). */
int fb_write_file(const char *path, const char *text, fb_err *err);
/* Reads up to cap-1 bytes of a file into buf, NUL-terminated. */
int fb_read_file(const char *path, char *buf, size_t cap, fb_err *err);
/* Sets or clears O_NONBLOCK / FD_CLOEXEC. */
int fb_set_nonblock(int fd, bool on);
int fb_set_cloexec(int fd, bool on);

/* ---- misc --------------------------------------------------------------- */

/* Fills buf with len random bytes from getrandom(2). */
int fb_random_bytes(void *buf, size_t len);
/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void fb_hex(const uint8_t *in, size_t len, char *out);
/* mkdir -p with the given mode for created components. */
int fb_mkdir_p(const char *path, mode_t mode, fb_err *err);
/* Removes a directory tree without following symlinks. */
int fb_rm_rf(const char *path);
/* Parses a decimal unsigned integer in [min,max]; whole string must match. */
int fb_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* With FORGEBOX_TRACE=1 in the environment, prints "forgebox: trace
 * +12.345 ms what" on stderr: where a sandbox's start-up time goes. */
void fb_trace(const char *what);
/* Monotonic clock in nanoseconds. */
uint64_t fb_now_ns(void);

#endif
