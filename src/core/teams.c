/*
 * teams.c - the team service: creating and listing teams (core.h).
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "auth/auth.h"
#include "core/internal.h"

static json_t *team_json(const fb_team *t)
{
    return json_pack("{s:s, s:s, s:s}", "id", t->id, "name", t->name, "created_at", t->created_at);
}

int fb_core_team_create(fb_core *c, fb_caller *caller, const char *name, json_t **out, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_ADMIN_USERS, "teams", caller->who.team_id, err) < 0)
        return -1;
    fb_team t;
    fb_err e = {{0}};
    int st = fb_auth_team_create(c->store, name, &t, &e);
    fb_core_audit(c, caller, "admin", st == FB_AUTH_OK ? t.id : "teams", "create team",
                  st == FB_AUTH_OK ? "allowed" : "error", st == FB_AUTH_OK ? "" : e.msg);
    if (st != FB_AUTH_OK)
        return core_auth_error(st, &e, err);
    *out = team_json(&t);
    return 0;
}

int fb_core_team_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_ADMIN_USERS, "teams", caller->who.team_id, err) < 0)
        return -1;
    fb_team *teams = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    int st = fb_auth_team_list(c->store, &teams, &n, &e);
    if (st != FB_AUTH_OK)
        return core_auth_error(st, &e, err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (fb_policy_can_see(&caller->who, teams[i].id))
            json_array_append_new(arr, team_json(&teams[i]));
    free(teams);
    *out = arr;
    return 0;
}
