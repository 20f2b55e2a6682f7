/*
 * identity.c - forwards the identity repository (identity.h) to the
 * storage engine's table (backend.h).  No logic lives here: an engine
 * implements each call whole, transaction included.
 */
#include "store/identity.h"

#include "store/backend.h"

#define OPS(st) ((st)->engine->identity)

int fb_store_org_get(fb_store *st, bool *initialised, char *name_out, fb_err *err)
{
    return OPS(st)->org_get(st, initialised, name_out, err);
}

int fb_store_bootstrap(fb_store *st, const fb_identity_bootstrap *b, fb_err *err)
{
    return OPS(st)->bootstrap(st, b, err);
}

int fb_store_team_insert(fb_store *st, const fb_team *t, fb_err *err)
{
    return OPS(st)->team_insert(st, t, err);
}

int fb_store_team_get(fb_store *st, const char *team_id, fb_team *out, fb_err *err)
{
    return OPS(st)->team_get(st, team_id, false, out, err);
}

int fb_store_team_get_by_name(fb_store *st, const char *name, fb_team *out, fb_err *err)
{
    return OPS(st)->team_get(st, name, true, out, err);
}

int fb_store_team_list(fb_store *st, fb_team **out, size_t *n, fb_err *err)
{
    return OPS(st)->team_list(st, out, n, err);
}

int fb_store_user_insert(fb_store *st, const fb_user *u, const char *pwhash, fb_err *err)
{
    return OPS(st)->user_insert(st, u, pwhash, err);
}

int fb_store_user_get(fb_store *st, const char *user_id, fb_user *out, fb_err *err)
{
    return OPS(st)->user_get(st, user_id, false, out, NULL, err);
}

int fb_store_user_get_by_name(fb_store *st, const char *username, fb_user *out, char *pwhash_out, fb_err *err)
{
    return OPS(st)->user_get(st, username, true, out, pwhash_out, err);
}

int fb_store_user_list(fb_store *st, const char *team_id, fb_user **out, size_t *n, fb_err *err)
{
    return OPS(st)->user_list(st, team_id, out, n, err);
}

int fb_store_user_set_disabled(fb_store *st, const char *user_id, bool disabled, fb_err *err)
{
    return OPS(st)->user_set_disabled(st, user_id, disabled, err);
}

int fb_store_user_set_password(fb_store *st, const char *user_id, const char *pwhash, fb_err *err)
{
    return OPS(st)->user_set_password(st, user_id, pwhash, err);
}

int fb_store_key_insert(fb_store *st, const fb_key_record *k, fb_role owner_role, fb_err *err)
{
    return OPS(st)->key_insert(st, k, owner_role, err);
}

int fb_store_key_get(fb_store *st, const char *key_id, fb_api_key_info *out, fb_err *err)
{
    return OPS(st)->key_get(st, key_id, out, err);
}

int fb_store_key_auth_row(fb_store *st, const char *key_id, fb_key_auth_row *out, fb_err *err)
{
    return OPS(st)->key_auth_row(st, key_id, out, err);
}

int fb_store_key_list(fb_store *st, const char *user_id, fb_api_key_info **out, size_t *n, fb_err *err)
{
    return OPS(st)->key_list(st, user_id, out, n, err);
}

int fb_store_key_touch(fb_store *st, const char *key_id, const char *when, fb_err *err)
{
    return OPS(st)->key_touch(st, key_id, when, err);
}

int fb_store_key_revoke_tree(fb_store *st, const char *key_id, const char *revoked_at, char (**revoked)[FB_ID_MAX],
                             size_t *n, fb_err *err)
{
    return OPS(st)->key_revoke_tree(st, key_id, revoked_at, revoked, n, err);
}
