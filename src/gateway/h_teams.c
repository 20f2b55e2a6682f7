/*
 * h_teams.c - POST and GET /v1/teams (gw.h).
 */
#define _GNU_SOURCE
#include "gateway/gw.h"

static const gw_field team_fields[] = {
    {"name", GW_T_STRING, true, "\"name\" must be a string"},
    {NULL, 0, false, NULL},
};

static enum MHD_Result teams_create(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_team_create(r->g->core, &r->caller, json_string_value(json_object_get(r->json, "name")), &out,
                            &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 201, out);
}

static enum MHD_Result teams_list(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_team_list(r->g->core, &r->caller, &out, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 200, json_pack("{s:o}", "teams", out));
}

const gw_route gw_routes_teams[] = {
    {.def = {"POST", "/v1/teams"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_ADMIN_USERS, .resource = "teams",
     .body = GW_BODY_JSON, .fields = team_fields, .body_required = true, .fn = teams_create},
    {.def = {"GET", "/v1/teams"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_ADMIN_USERS, .resource = "teams",
     .fn = teams_list},
    {.def = {NULL, NULL}},
};
