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
/* Same as fb_fail but returns code: `return fb_fail_code(err, FB_X_ENOTFOUND,
 * "no such %s", what);` for modules whose errors are a typed status. */
int fb_fail_code(fb_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The va_list form: formats into err (if not NULL) and returns code. */
int fb_vfail(fb_err *err, int code, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
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

/* Brings the calling thread's network namespace's `lo` up (needs
 * CAP_NET_ADMIN over that namespace); 0, or -1 with errno set.  The jail's
 * namespace thread (host root) and fb-agent (for a network grant) share it. */
int fb_loopback_up(void);
/* Writes all of buf; returns 0 or -1 with errno set. */
int fb_write_all(int fd, const void *buf, size_t len);
/* Reads exactly len bytes; returns 0, or -1 with errno set (EPIPE on EOF). */
int fb_read_exact(int fd, void *buf, size_t len);
/* Writes a small string to a file (cgroup knobs, uid_map, /proc files). */
int fb_write_file(const char *path, const char *text, fb_err *err);
/* Reads up to cap-1 bytes of a file into buf, NUL-terminated. */
int fb_read_file(const char *path, char *buf, size_t cap, fb_err *err);
/* Reads until len bytes or end of file, retrying short reads and EINTR;
 * *got is how many arrived.  0, or -1 with errno set.  A file that may be
 * longer than wanted is detected by asking for one byte more than the cap. */
int fb_read_up_to(int fd, void *buf, size_t len, size_t *got);
/* Creates path with exactly data (mode 0600) if it does not exist yet:
 * written under a temporary name, fsynced, then link(2)ed into place, so
 * nobody ever sees a partial file and an existing one is never replaced
 * (losing the race to another process is success: re-read the file).  The
 * directory is fsynced too, so the new name survives a power cut. */
int fb_create_file_once(const char *path, const void *data, size_t len, fb_err *err);
/* Sets or clears O_NONBLOCK / FD_CLOEXEC. */
int fb_set_nonblock(int fd, bool on);
int fb_set_cloexec(int fd, bool on);

/* ---- dying in a child ------------------------------------------------------ */

/* For a forked or cloned child before execve, where dying is the safe
 * answer (bubblewrap's die_with_error): writes "message: strerror(errno)"
 * to report_fd (errno as it was on entry) and _exits with 125.  Formats on
 * the stack and describes errno with strerrordesc_np (no locale, no lock,
 * no malloc), so it is safe in the child of a threaded parent. */
void fb_die_with_error(int report_fd, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));

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
/* Monotonic clock in nanoseconds (fb_time_monotonic_ns; kept for callers). */
uint64_t fb_now_ns(void);

#endif
