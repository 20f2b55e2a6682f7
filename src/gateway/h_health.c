/*
 * h_health.c - GET /healthz and GET /metrics (gw.h).
 *
 * /metrics spans every team (sandbox counts by backend, request statuses
 * by route), so it is for admins only, like the audit log (finding 12 of
 * issue 6); the check is the service's (fb_core_metrics).
 */
#define _GNU_SOURCE
#include <string.h>

#include "gateway/gw.h"

static enum MHD_Result healthz(gw_req *r)
{
    return gw_send_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static enum MHD_Result metrics(gw_req *r)
{
    char *text = NULL;
    fb_core_err err = {0};
    if (fb_core_metrics(r->g->core, &r->caller, &text, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_raw(r, 200, "text/plain; version=0.0.4", text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

const gw_route gw_routes_health[] = {
    {.def = {"GET", "/healthz"}, .resolve = GW_RES_PUBLIC, .fn = healthz},
    {.def = {"GET", "/metrics"}, .resolve = GW_RES_ADMIN, .perm = FB_PERM_AUDIT_READ, .resource = "metrics",
     .what = "the metrics", .fn = metrics},
    {.def = {NULL, NULL}},
};
