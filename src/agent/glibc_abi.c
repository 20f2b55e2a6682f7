/*
 * glibc_abi.c - the glibc-only symbols Debian's libjansson.a needs, for an
 * agent linked with musl (Makefile, AGENT_LIBC).
 *
 * Debian ships jansson as an archive built against glibc, with
 * _FORTIFY_SOURCE; we link that archive as it is rather than carry
 * jansson's source.  `nm -u libjansson.a` (jansson 2.14, Debian 12) lists,
 * besides plain ISO C/POSIX functions that musl has with the same
 * signatures on x86-64:
 *
 *   __snprintf_chk, __vsnprintf_chk, __strncpy_chk
 *       glibc's FORTIFY entry points, which musl lacks: defined below.  Like
 *       glibc's (debug/snprintf_chk.c, vsnprintf_chk.c, strncpy_chk.c) they
 *       check the object size the compiler passed against the bound and
 *       end the process with SIGABRT on an overflow, then do the call.
 *       The flag argument asks glibc to refuse %n in a writable format;
 *       jansson's formats are string literals, so it is not looked at.
 *   __assert_fail
 *       musl has it: (expr, file, int line, func), glibc's line is
 *       unsigned int: the same register, and abort() either way.
 *   __errno_location
 *       musl has it, returning the calling thread's int errno as glibc's.
 *   stdin
 *       musl's is an object `FILE *const stdin` as glibc's is `FILE *stdin`;
 *       json_loadf only compares its argument with the pointer's value
 *       (to name the source "<stdin>"), it never looks inside a FILE, and
 *       no FILE internals (glibc's _IO_*) are referenced.
 *   localeconv
 *       jsonp_strtod and jsonp_dtostr read localeconv()->decimal_point[0]
 *       (offset 0: checked in their code with objdump, and asserted below
 *       for musl's struct lconv, whose first member it is in both).
 *   __stack_chk_fail and the canary at %fs:0x28
 *       musl keeps its canary at the same offset of the thread block on
 *       x86-64 (struct pthread: self, dtv, prev, next, sysinfo, canary),
 *       as every GCC-built musl program relies on.
 * The archive has no TLS, no thread calls and no _IO_* references.  A
 * newer libjansson.a needing another glibc symbol fails the link, not the
 * program.
 */
#define _GNU_SOURCE
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(offsetof(struct lconv, decimal_point) == 0, "jansson reads decimal_point at offset 0");

/* glibc's __chk_fail: a message, then abort.  Not musl's abort(): its
 * raise() signals the thread id cached in the thread block, which in a
 * child made by a raw clone (exec.c, spawn_process) is the agent's; this
 * asks the kernel.  SIGABRT at its default action, unblocked, as abort()
 * makes it; a trap if it still returns. */
__attribute__((noreturn)) static void fortify_fail(void)
{
    static const char msg[] = "*** buffer overflow detected ***: terminated\n";
    (void)!write(2, msg, sizeof msg - 1);
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        unsigned long mask;
    } dfl = {.handler = SIG_DFL};
    unsigned long abrt = 1ul << (SIGABRT - 1);
    (void)syscall(SYS_rt_sigaction, SIGABRT, &dfl, NULL, sizeof dfl.mask);
    (void)syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &abrt, NULL, sizeof abrt);
    (void)syscall(SYS_tkill, (long)syscall(SYS_gettid), SIGABRT);
    __builtin_trap();
}

int __vsnprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *format, va_list ap);
int __vsnprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *format, va_list ap)
{
    (void)flag;
    if (slen < maxlen)
        fortify_fail();
    return vsnprintf(s, maxlen, format, ap);
}

int __snprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *format, ...);
int __snprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int n = __vsnprintf_chk(s, maxlen, flag, slen, format, ap);
    va_end(ap);
    return n;
}

/* The run-time halves of src/agent/fortify_musl.h's checks on the agent's
 * own code (glibc's debug/memcpy_chk.c and kin): the size the compiler
 * knew against the size asked for. */
void *__memcpy_chk(void *d, const void *s, size_t n, size_t dlen);
void *__memcpy_chk(void *d, const void *s, size_t n, size_t dlen)
{
    if (dlen < n)
        fortify_fail();
    return memcpy(d, s, n);
}

void *__memmove_chk(void *d, const void *s, size_t n, size_t dlen);
void *__memmove_chk(void *d, const void *s, size_t n, size_t dlen)
{
    if (dlen < n)
        fortify_fail();
    return memmove(d, s, n);
}

void *__memset_chk(void *d, int c, size_t n, size_t dlen);
void *__memset_chk(void *d, int c, size_t n, size_t dlen)
{
    if (dlen < n)
        fortify_fail();
    return memset(d, c, n);
}

char *__strcpy_chk(char *d, const char *s, size_t dlen);
char *__strcpy_chk(char *d, const char *s, size_t dlen)
{
    if (strlen(s) >= dlen)
        fortify_fail();
    return strcpy(d, s);
}

char *__strncpy_chk(char *s1, const char *s2, size_t n, size_t s1len);
char *__strncpy_chk(char *s1, const char *s2, size_t n, size_t s1len)
{
    if (s1len < n)
        fortify_fail();
    return strncpy(s1, s2, n);
}
