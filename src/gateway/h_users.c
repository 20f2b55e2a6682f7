/*
 * h_users.c - POST and GET /v1/users (gw.h).
 */
#define _GNU_SOURCE
#include "gateway/gw.h"

#define USER_RULE                                                                                             \
    "\"username\", \"password\", \"team_id\" must be strings and \"role\" one of admin, developer, operator, " \
    "viewer"

static const gw_field user_fields[] = {
    {"username", GW_T_STRING, true, USER_RULE},
    {"password", GW_T_STRING, true, USER_RULE},
    {"team_id", GW_T_STRING, true, USER_RULE},
    {"role", GW_T_STRING, true, USER_RULE},
    {NULL, 0, false, NULL},
};

static enum MHD_Result users_create(gw_req *r)
{
    fb_role role = fb_role_from_name(json_string_value(json_object_get(r->json, "role")));
    if (role == FB_ROLE_NONE)
        return gw_send_error(r, 400, "bad_request", USER_RULE);
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_user_create(r->g->core, &r->caller, json_string_value(json_object_get(r->json, "username")),
                            json_string_value(json_object_get(r->json, "password")),
                            json_string_value(json_object_get(r->json, "team_id")), role, &out, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 201, out);
}

static enum MHD_Result users_list(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_user_list(r->g->core, &r->caller, &out, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 200, json_pack("{s:o}", "users", out));
}

const gw_route gw_routes_users[] = {
    {.def = {"POST", "/v1/users"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_ADMIN_USERS, .resource = "users",
     .body = GW_BODY_JSON, .fields = user_fields, .body_required = true, .fn = users_create},
    {.def = {"GET", "/v1/users"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_ADMIN_USERS, .resource = "users",
     .fn = users_list},
    {.def = {NULL, NULL}},
};
