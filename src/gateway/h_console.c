/*
 * h_console.c - the admin console's static files under /console/ (gw.h).
 *
 * The files are compiled in (console_assets.h); each one's sha256 is
 * checked against the digest recorded at build time before it is first
 * served, so a damaged binary answers 500 rather than a console nobody
 * reviewed.  Every answer carries the headers that make the browser treat
 * the console as code from this origin only:
 *
 *   Content-Security-Policy   scripts, styles, images and connections from
 *                             this origin only (no inline script or style,
 *                             no eval), no framing, no <base>, forms post
 *                             here only;
 *   X-Content-Type-Options    nosniff: a file is what its Content-Type says;
 *   Referrer-Policy           no-referrer: ids in console URLs stay here;
 *   X-Frame-Options           DENY, for browsers older than frame-ancestors.
 *
 * The console is public (it is only files); everything it shows comes from
 * the API, which authenticates each request.  Paths are matched exactly
 * against the table: nothing from the URL reaches a file system.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "gateway/console_assets.h"
#include "gateway/gw.h"

#define PREFIX "/console"
#define CSP                                                                                                 \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " \
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
#define MAX_ASSETS 256

static bool digest_ok[MAX_ASSETS];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void check_digests(void)
{
    if (sodium_init() < 0)
        return;
    for (size_t i = 0; i < gw_console_assets_count && i < MAX_ASSETS; i++) {
        const gw_asset *a = &gw_console_assets[i];
        unsigned char d[crypto_hash_sha256_BYTES];
        char hex[2 * crypto_hash_sha256_BYTES + 1];
        crypto_hash_sha256(d, a->data, a->len);
        sodium_bin2hex(hex, sizeof hex, d, sizeof d);
        digest_ok[i] = strcmp(hex, a->sha256) == 0;
        if (!digest_ok[i])
            fb_log("error", NULL, "console file does not match its build-time digest; not serving it",
                   json_pack("{s:s}", "path", a->path));
    }
}

static const char *type_of(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},   {".svg", "image/svg+xml"},
        {".png", "image/png"},                 {".txt", "text/plain; charset=utf-8"},
        {".json", "application/json"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

static void security_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Security-Policy", CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
}

bool gw_console_path(const char *url)
{
    return strcmp(url, PREFIX) == 0 || strncmp(url, PREFIX "/", strlen(PREFIX) + 1) == 0;
}

static enum MHD_Result send_text(gw_req *r, int status, const char *text, const char *location)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (resp) {
        security_headers(resp);
        if (location)
            MHD_add_response_header(resp, "Location", location);
    }
    return gw_queue(r, status, resp, "text/plain; charset=utf-8");
}

enum MHD_Result gw_console_serve(gw_req *r, const char *url)
{
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
        return send_text(r, 405, "the console's files are read with GET\n", NULL);
    if (strcmp(url, PREFIX) == 0)
        return send_text(r, 308, "moved to /console/\n", PREFIX "/");
    const char *rel = url + strlen(PREFIX) + 1;
    if (!*rel)
        rel = "index.html";
    pthread_once(&once, check_digests);
    for (size_t i = 0; i < gw_console_assets_count && i < MAX_ASSETS; i++) {
        const gw_asset *a = &gw_console_assets[i];
        if (strcmp(a->path, rel) != 0)
            continue;
        if (!digest_ok[i])
            return send_text(r, 500, "this console file is damaged (see the server log)\n", NULL);
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
        if (resp) {
            char etag[70];
            snprintf(etag, sizeof etag, "\"%.64s\"", a->sha256);
            MHD_add_response_header(resp, "ETag", etag);
            security_headers(resp);
        }
        return gw_queue(r, 200, resp, type_of(a->path));
    }
    return send_text(r, 404, "no such console file\n", NULL);
}
