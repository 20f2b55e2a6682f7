/*
 * keys.c - the key service: authenticating a key, and creating, listing
 * and revoking keys (core.h).
 *
 * The secret of a new key leaves this file exactly once, in the caller's
 * buffer; everything else about keys is metadata.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "auth/auth.h"
#include "core/internal.h"

/* The end of both authentications: the outcome as the service's. */
static int auth_outcome(fb_core *c, fb_caller *caller, int st, fb_auth_fail why, const fb_err *e,
                        const char **reason, fb_core_err *err)
{
    if (st != FB_AUTH_OK || why != FB_AUTH_FAIL_NONE) {
        memset(&caller->who, 0, sizeof caller->who);
        fb_core_metrics_auth_failure();
        *reason = fb_auth_fail_name(why);
        if (why == FB_AUTH_FAIL_ERROR) {
            fb_log("error", caller->request_id, "authentication could not be decided",
                   json_pack("{s:s}", "error", e->msg));
            if (st == FB_AUTH_EUNAVAILABLE)
                return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the store is unavailable; retry shortly");
            return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
        }
        return fb_core_fail(err, FB_CORE_UNAUTHORIZED, "missing or invalid API key");
    }
    caller->who.org_enabled = c->cfg->network.allow.count > 0 ? FB_PERM_NETWORK_INTERNET : 0;
    snprintf(caller->actor, sizeof caller->actor, "key:%s", caller->who.key_id);
    *reason = "api key";
    return 0;
}

/* By the key's secret (header) or, for a credential issued on a key's
 * behalf, by its id alone (key_id). */
static int authenticate(fb_core *c, fb_caller *caller, const char *header, size_t len, const char *key_id,
                        const char **reason, fb_core_err *err)
{
    fb_auth_fail why = FB_AUTH_FAIL_NONE;
    fb_err e = {{0}};
    memset(&caller->who, 0, sizeof caller->who);
    caller->actor[0] = '\0';
    caller->granted = 0;
    int st = key_id ? fb_auth_key_principal(c->store, key_id, &caller->who, &why, &e)
             : header ? fb_auth_key_authenticate_n(c->store, header, len, &caller->who, &why, &e)
                      : fb_auth_key_authenticate(c->store, NULL, &caller->who, &why, &e);
    return auth_outcome(c, caller, st, why, &e, reason, err);
}

int fb_core_authenticate(fb_core *c, fb_caller *caller, const char *header, size_t len, const char **reason,
                         fb_core_err *err)
{
    return authenticate(c, caller, header, len, NULL, reason, err);
}

int fb_core_authenticate_key_id(fb_core *c, fb_caller *caller, const char *key_id, const char **reason,
                                fb_core_err *err)
{
    return authenticate(c, caller, NULL, 0, key_id, reason, err);
}

int fb_core_audit_auth(fb_core *c, fb_caller *caller, const char *resource, const char *outcome,
                       const char *reason)
{
    return fb_core_audit(c, caller, "auth", resource, "authenticate", outcome, reason);
}

static json_t *key_json(const fb_api_key_info *k)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s}", "id", k->id, "user_id", k->user_id, "name", k->name,
                          "scopes", fb_perms_to_json(k->scopes), "created_at", k->created_at);
    json_object_set_new(o, "expires_at", k->expires_at[0] ? json_string(k->expires_at) : json_null());
    json_object_set_new(o, "revoked_at", k->revoked_at[0] ? json_string(k->revoked_at) : json_null());
    json_object_set_new(o, "last_used_at", k->last_used_at[0] ? json_string(k->last_used_at) : json_null());
    return o;
}

/* A key made through a key may not outlive it (the rule is policy's; auth
 * applies it again when it writes the key).  Checked here first so that the
 * refusal is audited as a denial, not an error. */
static bool key_outlives_maker(fb_core *c, const fb_caller *caller, const char *expires_at, fb_core_err *err)
{
    if (!caller->who.key_id[0])
        return false;
    fb_api_key_info maker;
    memset(&maker, 0, sizeof maker);
    fb_err e = {{0}};
    if (fb_auth_key_get(c->store, caller->who.key_id, &maker, &e) != FB_AUTH_OK || !maker.expires_at[0])
        return false;
    struct timespec pe, ce;
    fb_decision d;
    if (fb_time_parse(maker.expires_at, &pe) < 0)
        return false;
    bool child_ok = expires_at && fb_time_parse(expires_at, &ce) == 0;
    if (child_ok && fb_policy_key_expiry(&pe, &ce, &d) == FB_ALLOW)
        return false;
    fb_core_fail(err, FB_CORE_BAD_REQUEST,
                 "\"expires_at\" must be set and no later than the expiry of the key making it");
    return true;
}

int fb_core_key_create(fb_core *c, fb_caller *caller, const char *owner_user_id, const char *name, fb_perm scopes,
                       const char *expires_at, char *key_out, size_t key_cap, json_t **info, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_KEYS_MANAGE, "keys", caller->who.team_id, err) < 0)
        return -1;
    if (key_cap < FB_AUTH_KEY_TEXT_MAX)
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: key buffer too small");
    if (key_outlives_maker(c, caller, expires_at, err)) {
        fb_core_audit(c, caller, "admin", "keys", "create key", "denied", "would outlive the creating key");
        return -1;
    }
    char key_id[FB_ID_MAX];
    fb_err e = {{0}};
    int st = fb_auth_key_create_as(c->store, &caller->who, owner_user_id ? owner_user_id : caller->who.user_id,
                                   name, scopes, expires_at, key_out, key_id, &e);
    if (st != FB_AUTH_OK) {
        fb_core_audit(c, caller, "admin", "keys", "create key", st == FB_AUTH_EDENIED ? "denied" : "error", e.msg);
        return core_auth_error(st, &e, err);
    }
    fb_api_key_info k;
    memset(&k, 0, sizeof k);
    fb_auth_key_get(c->store, key_id, &k, &e);
    fb_core_audit(c, caller, "admin", key_id, "create key", "allowed", "");
    *info = key_json(&k);
    return 0;
}

int fb_core_key_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_KEYS_MANAGE, "keys", caller->who.team_id, err) < 0)
        return -1;
    fb_api_key_info *keys = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    int st = fb_auth_key_list(c->store, caller->who.user_id, &keys, &n, &e);
    if (st != FB_AUTH_OK)
        return core_auth_error(st, &e, err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, key_json(&keys[i]));
    free(keys);
    *out = arr;
    return 0;
}

int fb_core_key_revoke(fb_core *c, fb_caller *caller, const char *key_id, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_KEYS_MANAGE, key_id, caller->who.team_id, err) < 0)
        return -1;
    fb_err e = {{0}};
    char (*revoked)[FB_ID_MAX] = NULL;
    size_t n = 0;
    int st = fb_auth_key_revoke_tree(c->store, &caller->who, key_id, &revoked, &n, &e);
    fb_core_audit(c, caller, "admin", key_id, "revoke key", st == FB_AUTH_OK ? "allowed" : "denied",
                  st == FB_AUTH_OK ? "" : e.msg);
    /* Every key it minted, directly or not, went with it: one entry each. */
    for (size_t i = 0; st == FB_AUTH_OK && i < n; i++)
        if (strcmp(revoked[i], key_id) != 0)
            fb_core_audit(c, caller, "admin", revoked[i], "revoke key", "allowed", "minted by a revoked key");
    free(revoked);
    return st == FB_AUTH_OK ? 0 : core_auth_error(st, &e, err);
}
