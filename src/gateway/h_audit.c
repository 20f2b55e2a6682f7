/*
 * h_audit.c - GET /v1/audit and GET /v1/audit/verify (gw.h).
 *
 * The log is organisation-wide: admins holding audit:read only, decided
 * (and audited) by the route's resolver before anything else.
 */
#define _GNU_SOURCE
#include "gateway/gw.h"

static enum MHD_Result audit_list(gw_req *r)
{
    fb_audit_query_args q = {
        .actor = gw_query(r, "actor"),
        .action = gw_query(r, "action"),
        .outcome = gw_query(r, "outcome"),
        .since = gw_query(r, "since"),
        .until = gw_query(r, "until"),
        .limit = gw_query(r, "limit"),
        .after_seq = gw_query(r, "after_seq"),
    };
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_audit_list(r->g->core, &r->caller, &q, &out, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 200, json_pack("{s:o}", "entries", out));
}

static enum MHD_Result audit_verify(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_audit_verify(r->g->core, &r->caller, &out, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 200, out);
}

const gw_route gw_routes_audit[] = {
    {.def = {"GET", "/v1/audit"}, .resolve = GW_RES_ADMIN, .perm = FB_PERM_AUDIT_READ, .resource = "audit",
     .what = "the audit log", .fn = audit_list},
    {.def = {"GET", "/v1/audit/verify"}, .resolve = GW_RES_ADMIN, .perm = FB_PERM_AUDIT_READ,
     .resource = "audit", .what = "the audit log", .fn = audit_verify},
    {.def = {NULL, NULL}},
};
