/*
 * authgate.c - authentication, its failure gate, the request budgets and
 * their audit entries, for every HTTP adapter (authgate.h).
 *
 * Failures are audited, but a source (an address, an IPv6 /64) that keeps
 * failing is slowed down first, and so is everybody at once beyond a
 * global budget: nobody can flood the log (and the disk) without a key.
 * Beyond the budget: 429 and a log line.  A good key is charged to its own
 * bucket and to a wider one per user, so that minting more keys does not
 * buy more requests.  And one table maps the service's typed errors to
 * HTTP statuses for every adapter.
 */
#define _GNU_SOURCE
#include "gateway/authgate.h"

#include <stdio.h>

static gw_gate_result gate(const fb_gateway_shared *sh, fb_caller *caller, const char *header, size_t len,
                           const char *resource, bool defer, int *wait, const char **why, fb_core_err *err)
{
    const char *reason = "";
    *wait = 0;
    if (fb_core_authenticate(sh->core, caller, header, len, &reason, err) < 0) {
        *wait = gw_failgate_take(sh->fails, caller->source_ip);
        if (*wait > 0) {
            fb_log("warn", caller->request_id, "authentication failures rate-limited",
                   json_pack("{s:s, s:s}", "ip", caller->source_ip, "reason", reason));
            *why = "too many failed authentications from this address";
            return GW_GATE_LIMITED;
        }
        fb_core_audit_auth(sh->core, caller, resource, err->code == FB_CORE_INTERNAL ? "error" : "denied", reason);
        *why = reason;
        return GW_GATE_DENIED;
    }
    char ukey[80];
    snprintf(ukey, sizeof ukey, "user:%s", caller->who.user_id);
    *wait = gw_ratelimit_take(sh->rl, caller->who.key_id);
    if (*wait == 0)
        *wait = gw_ratelimit_take(sh->rl_user, ukey);
    if (*wait > 0) {
        *why = "too many requests for this key";
        return GW_GATE_LIMITED;
    }
    if (defer) {
        fb_core_audit_auth_defer(caller, resource);
        return GW_GATE_OK;
    }
    if (fb_core_audit_auth(sh->core, caller, resource, "allowed", "api key") < 0) {
        *why = "the audit log cannot be written; refusing to act unaudited";
        return GW_GATE_UNAUDITED;
    }
    return GW_GATE_OK;
}

gw_gate_result gw_auth_gate(const fb_gateway_shared *sh, fb_caller *caller, const char *header, size_t len,
                            const char *resource, int *wait, const char **why, fb_core_err *err)
{
    return gate(sh, caller, header, len, resource, false, wait, why, err);
}

gw_gate_result gw_auth_gate_deferred(const fb_gateway_shared *sh, fb_caller *caller, const char *header,
                                     size_t len, const char *resource, int *wait, const char **why,
                                     fb_core_err *err)
{
    return gate(sh, caller, header, len, resource, true, wait, why, err);
}

static const int status_of[FB_CORE_NCODES] = {
    [FB_CORE_OK] = 200,
    [FB_CORE_BAD_REQUEST] = 400,
    [FB_CORE_UNAUTHORIZED] = 401,
    [FB_CORE_FORBIDDEN] = 403,
    [FB_CORE_NOT_FOUND] = 404,
    [FB_CORE_CONFLICT] = 409,
    [FB_CORE_TOO_LARGE] = 413,
    [FB_CORE_QUOTA] = 429,
    [FB_CORE_FILE_ERROR] = 400,
    [FB_CORE_SANDBOX_FAILED] = 503,
    [FB_CORE_UNAVAILABLE] = 503,
    [FB_CORE_INTERNAL] = 500,
    [FB_CORE_LOST] = 410,
};

int gw_http_status(fb_core_code code)
{
    return (unsigned)code < FB_CORE_NCODES && status_of[code] ? status_of[code] : 500;
}
