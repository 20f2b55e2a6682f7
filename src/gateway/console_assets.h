/*
 * console_assets.h - the admin console's static files, compiled in.
 *
 * The Makefile turns every file under console/ into build/gen/console.c:
 * its path below console/, its bytes and the sha256 of those bytes taken
 * at build time.  h_console.c serves them and checks each digest once at
 * first use, so the binary never serves a console file other than the one
 * it was built with, and nothing is read from disk at run time.
 */
#ifndef FB_GW_CONSOLE_ASSETS_H
#define FB_GW_CONSOLE_ASSETS_H

#include <stddef.h>

typedef struct gw_asset {
    const char *path;          /* "index.html", "js/app.js" */
    const unsigned char *data;
    size_t len;
    const char *sha256;        /* 64 hex digits */
} gw_asset;

extern const gw_asset gw_console_assets[];
extern const size_t gw_console_assets_count;

#endif
