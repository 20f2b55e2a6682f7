/*
 * lazylib.c - see lazylib.h.
 */
#define _GNU_SOURCE
#include "common/lazylib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

int fb_lazylib_require(fb_lazylib *lib, fb_err *err)
{
    pthread_mutex_lock(&load_lock);
    if (!lib->tried) {
        lib->tried = true;
        /* RTLD_LOCAL: its symbols serve the shims' lookups only, never the
         * resolution of another library's references. */
        lib->handle = dlopen(lib->soname, RTLD_NOW | RTLD_LOCAL);
        if (!lib->handle) {
            const char *e = dlerror();
            snprintf(lib->why, sizeof lib->why, "%s", e ? e : "unknown error");
        }
    }
    void *h = lib->handle;
    pthread_mutex_unlock(&load_lock);
    if (!h)
        return fb_fail(err, "cannot load %s, which %s needs: %s (scripts/install-deps.sh "
                            "installs it)", lib->soname, lib->purpose, lib->why);
    return 0;
}

void *fb_lazylib_sym(fb_lazylib *lib, const char *name)
{
    fb_err err = {{0}};
    if (fb_lazylib_require(lib, &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        abort();
    }
    void *p = dlsym(lib->handle, name);
    if (!p) {
        fprintf(stderr, "forgebox: %s has no %s\n", lib->soname, name);
        abort();
    }
    return p;
}
