/*
 * h_sessions.c - POST /v1/sessions (console login), GET and DELETE
 * /v1/sessions/current (gw.h).
 *
 * The session's token travels only in the fbx_session cookie: HttpOnly
 * (no script reads it, so an injected script cannot steal it),
 * SameSite=Strict (no other site's page sends it), Path=/, and Secure when
 * the gateway serves TLS.  The body answers what the console needs: the
 * CSRF token its changing requests carry, the user and the expiry.  A
 * login from a page of another origin is refused (login CSRF: planting the
 * attacker's session in the victim's browser).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gateway/gw.h"

#define LOGIN_RULE "\"username\" and \"password\" must be strings"

static const gw_field login_fields[] = {
    {"username", GW_T_STRING, true, LOGIN_RULE},
    {"password", GW_T_STRING, true, LOGIN_RULE},
    {NULL, 0, false, NULL},
};

/* Answers body with a Set-Cookie for token (max_age 0 and "": cleared). */
static enum MHD_Result send_with_cookie(gw_req *r, int status, json_t *body, const char *token, uint64_t max_age)
{
    char cookie[200];
    snprintf(cookie, sizeof cookie, "fbx_session=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%llu%s", token,
             (unsigned long long)max_age, r->g->cfg->tls.cert ? "; Secure" : "");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct MHD_Response *resp = text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE)
                                     : MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (resp)
        MHD_add_response_header(resp, "Set-Cookie", cookie);
    else
        free(text);
    sodium_memzero(cookie, sizeof cookie);
    return gw_queue(r, status, resp, text ? "application/json" : NULL);
}

static enum MHD_Result session_login(gw_req *r)
{
    if (gw_request_origin(r) < 0) {
        fb_core_audit(r->g->core, &r->caller, "session", "sessions", "login", "denied",
                      "login from a page of another origin");
        return gw_send_error(r, 403, "forbidden", "Origin is not this gateway's own");
    }
    char token[FB_SESSION_TOKEN_MAX];
    json_t *out = NULL;
    int retry = 0;
    fb_core_err err = {0};
    int rc = fb_core_session_login(r->g->core, &r->caller, json_string_value(json_object_get(r->json, "username")),
                                   json_string_value(json_object_get(r->json, "password")), token, &out, &retry,
                                   &err);
    if (rc < 0)
        return err.code == FB_CORE_QUOTA ? gw_send_429(r, retry, err.msg) : gw_send_core_error(r, &err);
    enum MHD_Result res = send_with_cookie(r, 201, out, token, r->g->cfg->console.session_ttl_s);
    sodium_memzero(token, sizeof token);
    return res;
}

static enum MHD_Result session_current(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    if (fb_core_session_current(r->g->core, &r->caller, &out, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 200, out);
}

static enum MHD_Result session_logout(gw_req *r)
{
    fb_core_err err = {0};
    if (fb_core_session_logout(r->g->core, &r->caller, &err) < 0)
        return gw_send_core_error(r, &err);
    return send_with_cookie(r, 204, NULL, "", 0);
}

const gw_route gw_routes_sessions[] = {
    {.def = {"POST", "/v1/sessions"}, .resolve = GW_RES_PUBLIC, .body = GW_BODY_JSON, .fields = login_fields,
     .body_required = true, .fn = session_login},
    {.def = {"GET", "/v1/sessions/current"}, .resolve = GW_RES_SELF, .fn = session_current},
    {.def = {"DELETE", "/v1/sessions/current"}, .resolve = GW_RES_SELF, .fn = session_logout},
    {.def = {NULL, NULL}},
};
