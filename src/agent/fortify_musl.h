/*
 * fortify_musl.h - _FORTIFY_SOURCE's object-size checks for fb-agent built
 * with musl (Makefile, AGENT_LIBC; the compiler is told to include this
 * file first in every agent source but glibc_abi.c and memcpy.c).
 *
 * glibc implements -D_FORTIFY_SOURCE=2 in its headers: where the compiler
 * knows the size of the destination, memcpy, snprintf and their kin become
 * GCC's __builtin___*_chk, which compile to the plain call when the size
 * fits, to a build error (-Werror) when it is known not to, and otherwise
 * to a __*_chk function that checks at run time and aborts on overflow.
 * musl's headers have no such wrappers, so without this file a musl build
 * of the agent would silently lose those checks.  These macros restore
 * glibc's level 2 for the calls the agent makes (type 0 object sizes for
 * the mem* functions, type 1 for strings and formatted output, as glibc's
 * __bos0/__bos), and src/agent/glibc_abi.c defines the run-time halves.
 * read(2) and friends are left out: a function-like macro named `read`
 * would also rewrite struct members of that name.
 */
#ifndef FB_AGENT_FORTIFY_MUSL_H
#define FB_AGENT_FORTIFY_MUSL_H

#if defined(__OPTIMIZE__) && defined(_FORTIFY_SOURCE) && _FORTIFY_SOURCE > 0
/* The headers come first, so that the macros below do not rewrite their
 * declarations, with what every agent source asks of them. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h> /* declares memcpy and memset (CPU_SET) */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define memcpy(d, s, n) __builtin___memcpy_chk((d), (s), (n), __builtin_object_size((d), 0))
#define memmove(d, s, n) __builtin___memmove_chk((d), (s), (n), __builtin_object_size((d), 0))
#define memset(d, c, n) __builtin___memset_chk((d), (c), (n), __builtin_object_size((d), 0))
#define strcpy(d, s) __builtin___strcpy_chk((d), (s), __builtin_object_size((d), 1))
#define strncpy(d, s, n) __builtin___strncpy_chk((d), (s), (n), __builtin_object_size((d), 1))
#define snprintf(d, n, ...) __builtin___snprintf_chk((d), (n), 1, __builtin_object_size((d), 1), __VA_ARGS__)
#define vsnprintf(d, n, f, ap) __builtin___vsnprintf_chk((d), (n), 1, __builtin_object_size((d), 1), (f), (ap))
#endif

#endif
