/*
 * h_keys.c - POST and GET /v1/keys, DELETE /v1/keys/{id} (gw.h).
 *
 * The body of POST /v1/keys is the one answer that ever carries a key:
 * once, here; the buffer is wiped as soon as the answer is built.
 */
#define _GNU_SOURCE
#include <sodium.h>

#include "auth/auth.h"
#include "gateway/gw.h"

#define KEY_RULE "\"name\" must be a string and \"expires_at\" an RFC 3339 time"

static const gw_field key_fields[] = {
    {"name", GW_T_STRING, true, KEY_RULE},
    {"scopes", GW_T_ARRAY, false, NULL},
    {"expires_at", GW_T_STRING_OR_NULL, false, KEY_RULE},
    {"user_id", GW_T_STRING, false, "\"user_id\" must be a string"},
    {NULL, 0, false, NULL},
};

static enum MHD_Result keys_create(gw_req *r)
{
    fb_perm scopes = 0;
    fb_err perr = {{0}};
    if (fb_perms_from_json(json_object_get(r->json, "scopes"), &scopes, &perr) < 0)
        return gw_send_error(r, 400, "bad_request", perr.msg);
    char key[FB_AUTH_KEY_TEXT_MAX];
    json_t *info = NULL;
    fb_core_err err = {0};
    int rc = fb_core_key_create(r->g->core, &r->caller, json_string_value(json_object_get(r->json, "user_id")),
                                json_string_value(json_object_get(r->json, "name")), scopes,
                                json_string_value(json_object_get(r->json, "expires_at")), key, sizeof key, &info,
                                &err);
    if (rc < 0)
        return gw_send_core_error(r, &err);
    json_object_set_new(info, "key", json_string(key));
    sodium_memzero(key, sizeof key);
    return gw_send_json(r, 201, info);
}

static enum MHD_Result keys_list(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_key_list(r->g->core, &r->caller, &out, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 200, json_pack("{s:o}", "keys", out));
}

static enum MHD_Result keys_delete(gw_req *r)
{
    fb_core_err err = {0};
    if (fb_core_key_revoke(r->g->core, &r->caller, r->params.v[0], &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_raw(r, 204, "application/json", NULL, 0, MHD_RESPMEM_PERSISTENT);
}

const gw_route gw_routes_keys[] = {
    {.def = {"POST", "/v1/keys"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_KEYS_MANAGE, .resource = "keys",
     .body = GW_BODY_JSON, .fields = key_fields, .body_required = true, .fn = keys_create},
    {.def = {"GET", "/v1/keys"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_KEYS_MANAGE, .resource = "keys",
     .fn = keys_list},
    {.def = {"DELETE", "/v1/keys/{id}"}, .resolve = GW_RES_PARAM, .perm = FB_PERM_KEYS_MANAGE, .fn = keys_delete},
    {.def = {NULL, NULL}},
};
