/*
 * lazylib.h - shared libraries loaded on first use instead of at start.
 *
 * `forgebox` is one binary for every verb, and the dynamic loader maps and
 * relocates every library it is linked against before main() runs: with
 * -z now (the hardened flags) each of their symbols is resolved at start.
 * libpq, libcurl, GnuTLS and libmicrohttpd pull in about thirty more
 * libraries (OpenSSL, Kerberos, LDAP, SASL, nettle, p11-kit, ...), which
 * cost `forgebox run` about 5 ms of a jail start that needs none of them.
 * So those four are not linked: src/common/lazy_<lib>.c defines each
 * function ForgeBox calls with the library's own prototype (the compiler
 * checks it against the library's header), and the first call loads the
 * library with dlopen (RTLD_NOW: everything resolved at once, as -z now
 * would) and forwards.  Callers include the library's header and call it
 * as before; a function not yet in the shim fails the link with an
 * undefined reference: add it to lazy_<lib>.c.
 *
 * These libraries are package dependencies (scripts/install-deps.sh): one
 * that cannot be loaded is a broken installation, which used to stop every
 * verb before main().  Now only the verbs that need it stop, at first use,
 * with the loader's reason on stderr (fb_lazylib_require lets a caller ask
 * first and get a typed error instead).
 */
#ifndef FB_LAZYLIB_H
#define FB_LAZYLIB_H

#include <stdbool.h>

#include "common/util.h"

typedef struct fb_lazylib {
    const char *soname;  /* "libpq.so.5" */
    const char *purpose; /* "the PostgreSQL store", for the error message */
    bool tried;          /* under the module's lock */
    void *handle;
    char why[256];       /* dlerror() when loading failed */
} fb_lazylib;

#define FB_LAZYLIB_INIT(so, what) {.soname = (so), .purpose = (what)}

/* Loads lib (once; thread-safe).  0, or -1 with err saying why. */
int fb_lazylib_require(fb_lazylib *lib, fb_err *err);
/* The address of name in lib, loading lib first.  A library that cannot be
 * loaded, or lacks the symbol, ends the process with a message naming
 * both: the shims have no error value to return. */
void *fb_lazylib_sym(fb_lazylib *lib, const char *name);

/* One forwarding function: ret name params, calling the library's own with
 * args.  The pointer is looked up once and kept (atomically: calls may
 * race from several threads; both look up the same address). */
#define FB_LAZY_FN(lib, ret, name, params, args)                                      \
    ret name params                                                                   \
    {                                                                                 \
        static ret(*fn) params;                                                       \
        ret(*f) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);                      \
        if (!f) {                                                                     \
            f = (ret(*) params)fb_lazylib_sym(&(lib), #name);                         \
            __atomic_store_n(&fn, f, __ATOMIC_RELEASE);                               \
        }                                                                             \
        return f args;                                                                \
    }
#define FB_LAZY_VOID(lib, name, params, args)                                         \
    void name params                                                                  \
    {                                                                                 \
        static void(*fn) params;                                                      \
        void(*f) params = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);                     \
        if (!f) {                                                                     \
            f = (void(*) params)fb_lazylib_sym(&(lib), #name);                        \
            __atomic_store_n(&fn, f, __ATOMIC_RELEASE);                               \
        }                                                                             \
        f args;                                                                       \
    }

/* The libraries (lazy_<lib>.c). */
extern fb_lazylib fb_lazy_libpq, fb_lazy_libcurl, fb_lazy_gnutls, fb_lazy_libmicrohttpd;
/* Session 5: the four small ones `forgebox run` loaded without calling
 * (about 0.6 ms of a jail start): the SQLite store, the egress proxy's
 * event loop and resolver, and the configuration parser. */
extern fb_lazylib fb_lazy_libsqlite3, fb_lazy_libevent, fb_lazy_libcares, fb_lazy_libyaml;

#endif
