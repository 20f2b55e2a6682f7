/*
 * accounts.c - the organisation, teams and users of auth.h, and console
 * login.
 *
 * Input is checked here (names, roles, password rules) before anything
 * reaches the identity repository, and the slow argon2id work is done
 * before the repository call, never while it holds the store.  A fresh
 * random id that collides with an existing row is retried with another
 * (INSERT_ATTEMPTS times); everything else the repository refuses is
 * mapped onto auth's statuses by fb_auth_from_store.
 */
#define _GNU_SOURCE
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "auth/internal.h"

/* An argon2id string with the interactive parameters: verified against
 * when a login names an unknown user, so that the answer takes as long as
 * for a known one. */
static const char dummy_pwhash[] =
    "$argon2id$v=19$m=65536,t=2,p=1$KeABsDs2v2d7FDcW6KQPdw$9aQPwLyIskAgkVsHDnRHPfJXazXqCKpoLZP11buhyp0";

const char *fb_auth_fail_name(fb_auth_fail why)
{
    switch (why) {
    case FB_AUTH_FAIL_NONE: return "none";
    case FB_AUTH_FAIL_MISSING: return "missing";
    case FB_AUTH_FAIL_MALFORMED: return "malformed";
    case FB_AUTH_FAIL_UNKNOWN: return "unknown";
    case FB_AUTH_FAIL_REVOKED: return "revoked";
    case FB_AUTH_FAIL_EXPIRED: return "expired";
    case FB_AUTH_FAIL_BAD_SECRET: return "bad_secret";
    case FB_AUTH_FAIL_DISABLED: return "disabled";
    case FB_AUTH_FAIL_ERROR: break;
    }
    return "error";
}

void fb_auth_fill_principal(fb_principal *p, const fb_user *u, const char *key_id, fb_perm scopes)
{
    memset(p, 0, sizeof *p);
    snprintf(p->user_id, sizeof p->user_id, "%s", u->id);
    snprintf(p->team_id, sizeof p->team_id, "%s", u->team_id);
    snprintf(p->key_id, sizeof p->key_id, "%s", key_id);
    p->role = u->role;
    p->is_admin = u->role == FB_ROLE_ADMIN;
    p->scopes = scopes & fb_role_perms(u->role);
    p->org_enabled = 0;
}

static int bad_name(fb_err *err, const char *what)
{
    return fb_fail_code(err, FB_AUTH_EINVAL, "a %s is 1 to %d characters from a-z 0-9 _ . -", what,
                        FB_AUTH_NAME_MAX);
}

/* ---- organisation ------------------------------------------------------------------- */

int fb_auth_org_get(fb_store *st, bool *initialised, char *name_out, fb_err *err)
{
    return fb_auth_from_store(fb_store_org_get(st, initialised, name_out, err));
}

static int new_team(const char *name, fb_team *t, fb_err *err)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    fb_time_now(t->created_at);
    return fb_auth_new_id("tm_", 8, t->id, err);
}

static int new_user(const char *username, const char *team_id, fb_role role, fb_user *u, fb_err *err)
{
    memset(u, 0, sizeof *u);
    snprintf(u->username, sizeof u->username, "%s", username);
    snprintf(u->team_id, sizeof u->team_id, "%s", team_id);
    u->role = role;
    fb_time_now(u->created_at);
    return fb_auth_new_id("us_", 8, u->id, err);
}

/* Mints every row of the bootstrap and stores them in one transaction,
 * with fresh ids when one collides. */
static int bootstrap(fb_store *st, const uint8_t pepper[PEPPER_BYTES], const char *org_name, const char *admin_name,
                     const char *pwhash, char *admin_key_out, fb_err *err)
{
    int rc = FB_STORE_ECOLLISION;
    for (int attempt = 0; attempt < INSERT_ATTEMPTS && rc == FB_STORE_ECOLLISION; attempt++) {
        fb_team team;
        fb_user admin;
        fb_key_record key;
        char now[FB_TIME_MAX];
        fb_time_now(now);
        if ((rc = new_team("default", &team, err)) < 0 ||
            (rc = new_user(admin_name, team.id, FB_ROLE_ADMIN, &admin, err)) < 0 ||
            (rc = fb_auth_key_mint(pepper, admin.id, "admin (bootstrap)", FB_PERM_ALL, NULL, NULL, &key,
                                   admin_key_out, err)) < 0)
            return rc;
        fb_identity_bootstrap b = {org_name, now, &team, &admin, pwhash, &key};
        rc = fb_store_bootstrap(st, &b, err);
        sodium_memzero(&key, sizeof key);
    }
    return fb_auth_from_store(rc);
}

int fb_auth_init_org(fb_store *st, const char *org_name, const char *admin_username, const char *password_or_null,
                     char *generated_password_out, char *admin_key_out, fb_err *err)
{
    int rc = fb_auth_sodium_ready(err);
    if (rc < 0)
        return rc;
    if (!admin_key_out)
        return fb_fail_code(err, FB_AUTH_EINVAL, "internal: no buffer for the admin key");
    admin_key_out[0] = '\0';
    if (generated_password_out)
        generated_password_out[0] = '\0';
    if (!fb_auth_valid_label(org_name, FB_AUTH_ORG_NAME_MAX))
        return fb_fail_code(err, FB_AUTH_EINVAL, "the organisation name must be 1 to %d printable ASCII characters",
                            FB_AUTH_ORG_NAME_MAX);
    if (!fb_auth_valid_name(admin_username))
        return bad_name(err, "username");
    if (!password_or_null && !generated_password_out)
        return fb_fail_code(err, FB_AUTH_EINVAL, "internal: no buffer for the generated password");

    char generated[FB_AUTH_GENERATED_PASSWORD_MAX] = "";
    char pwhash[FB_AUTH_PWHASH_MAX];
    uint8_t pepper[PEPPER_BYTES];
    const char *password = password_or_null;
    if (!password) {
        if ((rc = fb_auth_password_generate(generated, err)) < 0)
            goto out;
        password = generated;
    }
    /* Refuse early, before the slow hash, when the org already exists; the
     * check is repeated in the transaction. */
    bool done = false;
    if ((rc = fb_auth_org_get(st, &done, NULL, err)) < 0)
        goto out;
    if (done) {
        rc = fb_fail_code(err, FB_AUTH_EEXISTS, "the organisation is already initialised; nothing was changed");
        goto out;
    }
    if ((rc = fb_auth_password_hash(password, pwhash, err)) < 0 || (rc = fb_auth_pepper_load(st, pepper, err)) < 0)
        goto out;
    rc = bootstrap(st, pepper, org_name, admin_username, pwhash, admin_key_out, err);
    if (rc == 0 && !password_or_null)
        snprintf(generated_password_out, FB_AUTH_GENERATED_PASSWORD_MAX, "%s", generated);
out:
    if (rc < 0)
        sodium_memzero(admin_key_out, FB_AUTH_KEY_TEXT_MAX);
    sodium_memzero(generated, sizeof generated);
    sodium_memzero(pepper, sizeof pepper);
    sodium_memzero(pwhash, sizeof pwhash);
    return rc;
}

/* ---- teams ---------------------------------------------------------------------------- */

int fb_auth_team_create(fb_store *st, const char *name, fb_team *out, fb_err *err)
{
    if (!fb_auth_valid_name(name))
        return bad_name(err, "team name");
    int rc = FB_STORE_ECOLLISION;
    fb_team t;
    for (int attempt = 0; attempt < INSERT_ATTEMPTS && rc == FB_STORE_ECOLLISION; attempt++) {
        if ((rc = new_team(name, &t, err)) < 0)
            return rc;
        rc = fb_store_team_insert(st, &t, err);
    }
    if (rc == 0 && out)
        *out = t;
    return fb_auth_from_store(rc);
}

int fb_auth_team_get(fb_store *st, const char *team_id, fb_team *out, fb_err *err)
{
    if (!fb_auth_valid_id(team_id, "tm_", 16))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such team");
    return fb_auth_from_store(fb_store_team_get(st, team_id, out, err));
}

int fb_auth_team_get_by_name(fb_store *st, const char *name, fb_team *out, fb_err *err)
{
    if (!fb_auth_valid_name(name))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such team");
    return fb_auth_from_store(fb_store_team_get_by_name(st, name, out, err));
}

int fb_auth_team_list(fb_store *st, fb_team **out, size_t *n, fb_err *err)
{
    return fb_auth_from_store(fb_store_team_list(st, out, n, err));
}

/* ---- users ------------------------------------------------------------------------------ */

int fb_auth_user_create(fb_store *st, const char *username, const char *team_id, fb_role role, const char *password,
                        fb_user *out, fb_err *err)
{
    if (!fb_auth_valid_name(username))
        return bad_name(err, "username");
    if (role == FB_ROLE_NONE || fb_role_perms(role) == 0)
        return fb_fail_code(err, FB_AUTH_EINVAL, "a user needs a role: admin, developer, operator or viewer");
    if (!fb_auth_valid_id(team_id, "tm_", 16))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such team");
    char pwhash[FB_AUTH_PWHASH_MAX];
    int rc = fb_auth_password_hash(password, pwhash, err);
    fb_user u;
    int src = FB_STORE_ECOLLISION;
    for (int attempt = 0; rc == 0 && attempt < INSERT_ATTEMPTS && src == FB_STORE_ECOLLISION; attempt++) {
        if ((rc = new_user(username, team_id, role, &u, err)) == 0)
            src = fb_store_user_insert(st, &u, pwhash, err);
    }
    if (rc == 0)
        rc = fb_auth_from_store(src);
    sodium_memzero(pwhash, sizeof pwhash);
    if (rc == 0 && out)
        *out = u;
    return rc;
}

int fb_auth_user_get(fb_store *st, const char *user_id, fb_user *out, fb_err *err)
{
    if (!fb_auth_valid_id(user_id, "us_", 16))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such user");
    return fb_auth_from_store(fb_store_user_get(st, user_id, out, err));
}

int fb_auth_user_get_by_name(fb_store *st, const char *username, fb_user *out, fb_err *err)
{
    if (!fb_auth_valid_name(username))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such user");
    return fb_auth_from_store(fb_store_user_get_by_name(st, username, out, NULL, err));
}

int fb_auth_user_list(fb_store *st, const char *team_id_or_null, fb_user **out, size_t *n, fb_err *err)
{
    *out = NULL;
    *n = 0;
    if (team_id_or_null && !fb_auth_valid_id(team_id_or_null, "tm_", 16))
        return 0; /* no such team: no users */
    return fb_auth_from_store(fb_store_user_list(st, team_id_or_null, out, n, err));
}

int fb_auth_user_set_disabled(fb_store *st, const char *user_id, bool disabled, fb_err *err)
{
    if (!fb_auth_valid_id(user_id, "us_", 16))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such user");
    int rc = fb_auth_from_store(fb_store_user_set_disabled(st, user_id, disabled, err));
    fb_auth_keycache_invalidate(); /* the user's keys stop (or may start) working now */
    return rc;
}

int fb_auth_user_set_password(fb_store *st, const char *user_id, const char *password, fb_err *err)
{
    if (!fb_auth_valid_id(user_id, "us_", 16))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such user");
    char pwhash[FB_AUTH_PWHASH_MAX];
    int rc = fb_auth_password_hash(password, pwhash, err);
    if (rc == 0)
        rc = fb_auth_from_store(fb_store_user_set_password(st, user_id, pwhash, err));
    sodium_memzero(pwhash, sizeof pwhash);
    return rc;
}

int fb_auth_password_login(fb_store *st, const char *username, const char *password, fb_principal *out,
                           fb_auth_fail *why, fb_err *err)
{
    memset(out, 0, sizeof *out);
    *why = FB_AUTH_FAIL_ERROR;
    if (fb_auth_sodium_ready(err) < 0)
        return -1;
    if (!username || !password) {
        *why = FB_AUTH_FAIL_MISSING;
        return fb_fail(err, "no username or password");
    }
    if (!fb_auth_valid_name(username) || strnlen(password, FB_AUTH_PASSWORD_MAX + 1) > FB_AUTH_PASSWORD_MAX) {
        *why = FB_AUTH_FAIL_MALFORMED;
        return fb_fail(err, "malformed username or password");
    }
    fb_user user;
    char pwhash[FB_AUTH_PWHASH_MAX];
    int rc = fb_store_user_get_by_name(st, username, &user, pwhash, err);
    if (rc == FB_STORE_ENOTFOUND) {
        (void)fb_auth_password_verify(dummy_pwhash, password); /* same time as a real check */
        *why = FB_AUTH_FAIL_UNKNOWN;
        return fb_fail(err, "login failed: no user '%s'", username);
    }
    if (rc < 0)
        return -1;
    bool ok = fb_auth_password_verify(pwhash, password);
    sodium_memzero(pwhash, sizeof pwhash);
    if (!ok) {
        *why = FB_AUTH_FAIL_BAD_SECRET;
        return fb_fail(err, "login failed: wrong password for '%s'", username);
    }
    if (user.disabled) {
        *why = FB_AUTH_FAIL_DISABLED;
        return fb_fail(err, "login failed: user '%s' is disabled", username);
    }
    fb_auth_fill_principal(out, &user, "", FB_PERM_ALL);
    *why = FB_AUTH_FAIL_NONE;
    return 0;
}
