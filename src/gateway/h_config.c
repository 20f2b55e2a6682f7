/*
 * h_config.c - GET /v1/config: the effective configuration, read-only, for
 * admins (the console's settings page) (gw.h).
 *
 * It is fb_config_dump_json's text, the same the start-up log line shows:
 * secret-looking values and provider keys appear as "[redacted]".  It spans
 * the whole organisation, so admins only, then admin:config; audited.
 */
#define _GNU_SOURCE
#include <string.h>

#include "gateway/gw.h"

static enum MHD_Result config_get(gw_req *r)
{
    char *text = fb_config_dump_json(r->g->cfg);
    if (!text)
        return gw_send_error(r, 503, "unavailable", "out of memory");
    return gw_send_raw(r, 200, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

const gw_route gw_routes_config[] = {
    {.def = {"GET", "/v1/config"}, .resolve = GW_RES_ADMIN, .perm = FB_PERM_ADMIN_CONFIG, .resource = "config",
     .what = "the configuration", .fn = config_get},
    {.def = {NULL, NULL}},
};
