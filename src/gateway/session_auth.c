/*
 * session_auth.c - the console's cookie as a credential, and its CSRF
 * defence (gw.h).
 *
 * A request with no Authorization header but an fbx_session cookie is
 * authenticated as the session's user (the service decides:
 * fb_core_session_authenticate).  A browser attaches that cookie to
 * whatever page makes the request, so a request that changes something
 * (POST, PUT, PATCH, DELETE) must also prove it comes from the console:
 *
 *   - X-CSRF-Token equal to the session's token, which only a page that
 *     logged in (or read GET /v1/sessions/current, same origin only) knows;
 *   - Origin, or failing that Referer, equal to this gateway's own origin
 *     (the scheme it serves and the Host the browser addressed).  A request
 *     carrying neither is refused too: every browser sends Origin on such
 *     requests, so only a stripped or forged one lacks it.
 *
 * Either failing is 403, audited.  SameSite=Strict already keeps the
 * cookie off cross-site requests in current browsers; these checks hold
 * without it.  Bearer-key requests never reach this file: a key is not
 * sent by a browser on its own, so there is nothing to forge.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "gateway/gw.h"

#define COOKIE_NAME "fbx_session"

static bool unsafe_method(const char *m)
{
    return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "OPTIONS") != 0;
}

int gw_request_origin(gw_req *r)
{
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host");
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    const char *referer = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Referer");
    if (!origin && !referer)
        return 0;
    if (!host || !*host || strlen(host) > 255)
        return -1;
    char own[300];
    snprintf(own, sizeof own, "%s://%s", r->g->cfg->tls.cert ? "https" : "http", host);
    size_t n = strlen(own);
    if (origin)
        return strcasecmp(origin, own) == 0 ? 1 : -1;
    /* A Referer is a whole URL: the origin, then "/" or the end. */
    return strncasecmp(referer, own, n) == 0 && (referer[n] == '/' || referer[n] == '\0') ? 1 : -1;
}

/* 403 for a cookie request that may be forged; audited. */
static int refuse_csrf(gw_req *r, enum MHD_Result *rc, const char *why)
{
    fb_core_audit(r->g->core, &r->caller, "auth", r->rt->def.pattern, "csrf", "denied", why);
    *rc = gw_send_error(r, 403, "forbidden", why);
    return -1;
}

static int check_csrf(gw_req *r, enum MHD_Result *rc)
{
    if (!unsafe_method(r->method))
        return 1;
    const char *tok = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-CSRF-Token");
    size_t want = strlen(r->caller.csrf);
    if (!tok)
        return refuse_csrf(r, rc, "missing X-CSRF-Token (a console session's changes need it)");
    if (strlen(tok) != want || want == 0 || sodium_memcmp(tok, r->caller.csrf, want) != 0)
        return refuse_csrf(r, rc, "X-CSRF-Token does not match the session");
    int o = gw_request_origin(r);
    if (o == 0)
        return refuse_csrf(r, rc, "neither Origin nor Referer: cannot tell that the request comes from the console");
    if (o < 0)
        return refuse_csrf(r, rc, "Origin is not this gateway's own");
    return 1;
}

int gw_session_authenticate(gw_req *r, enum MHD_Result *rc)
{
    const char *tok = MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, COOKIE_NAME);
    if (!tok)
        return 0;
    fb_gateway *g = r->g;
    const char *why = "";
    fb_core_err err = {0};
    if (fb_core_session_authenticate(g->core, &r->caller, tok, strlen(tok), &why, &err) < 0) {
        int wait = gw_failgate_take(g->sh.fails, r->caller.source_ip);
        if (wait > 0) {
            *rc = gw_send_429(r, wait, "too many failed authentications from this address");
            return -1;
        }
        fb_core_audit_auth(g->core, &r->caller, r->rt->def.pattern, err.code == FB_CORE_INTERNAL ? "error" : "denied",
                           why);
        *rc = gw_send_core_error(r, &err);
        return -1;
    }
    /* The same budgets as a key: one per session, one per user. */
    char ukey[80];
    snprintf(ukey, sizeof ukey, "user:%s", r->caller.who.user_id);
    int wait = gw_ratelimit_take(g->sh.rl, r->caller.session_id);
    if (wait == 0)
        wait = gw_ratelimit_take(g->sh.rl_user, ukey);
    if (wait > 0) {
        *rc = gw_send_429(r, wait, "too many requests for this session");
        return -1;
    }
    if (check_csrf(r, rc) < 0)
        return -1;
    char reason[80];
    snprintf(reason, sizeof reason, "session %s", r->caller.session_id);
    if (fb_core_audit_auth(g->core, &r->caller, r->rt->def.pattern, "allowed", reason) < 0) {
        *rc = gw_send_error(r, 503, "unavailable", "the audit log cannot be written; refusing to act unaudited");
        return -1;
    }
    return 1;
}
