/*
 * users.c - the user service: creating and listing users (core.h).
 *
 * Passwords pass straight through to src/auth, which hashes them; no
 * answer, log line or audit entry carries one.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "auth/auth.h"
#include "core/internal.h"

static json_t *user_json(const fb_user *u)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "id", u->id, "username", u->username, "team_id",
                     u->team_id, "role", fb_role_name(u->role), "created_at", u->created_at, "disabled",
                     u->disabled);
}

int fb_core_user_create(fb_core *c, fb_caller *caller, const char *username, const char *password,
                        const char *team_id, fb_role role, json_t **out, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_ADMIN_USERS, "users", caller->who.team_id, err) < 0)
        return -1;
    fb_user u;
    fb_err e = {{0}};
    int st = fb_auth_user_create(c->store, username, team_id, role, password, &u, &e);
    fb_core_audit(c, caller, "admin", st == FB_AUTH_OK ? u.id : "users", "create user",
                  st == FB_AUTH_OK ? "allowed" : "error", st == FB_AUTH_OK ? "" : e.msg);
    if (st != FB_AUTH_OK)
        return core_auth_error(st, &e, err);
    *out = user_json(&u);
    return 0;
}

int fb_core_user_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_ADMIN_USERS, "users", caller->who.team_id, err) < 0)
        return -1;
    fb_user *users = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    /* moves to policy: who sees which team's users */
    int st = fb_auth_user_list(c->store, fb_policy_sees_all_teams(&caller->who) ? NULL : caller->who.team_id, &users, &n, &e);
    if (st != FB_AUTH_OK)
        return core_auth_error(st, &e, err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (fb_policy_can_see(&caller->who, users[i].team_id))
            json_array_append_new(arr, user_json(&users[i]));
    free(users);
    *out = arr;
    return 0;
}
