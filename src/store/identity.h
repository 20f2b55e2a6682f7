/*
 * identity.h - the identity repository: the org, teams, users and API keys
 * as stored rows.  No rules live here (who may do what is src/policy, the
 * shape of names and the hashing of secrets src/auth); this layer stores,
 * finds and changes rows, atomically, and says with a typed status what
 * went wrong.
 *
 * Ids are chosen by the caller (random text ids); an insert whose id is
 * taken returns FB_STORE_ECOLLISION and the caller retries with a fresh
 * one.  Names are checked for uniqueness inside the inserting transaction
 * (FB_STORE_EEXISTS).  Secrets are stored only as what the caller hands
 * over: an argon2id string for a password, a 32-byte keyed digest for an
 * API key; neither is ever returned by a list or get of metadata.
 */
#ifndef FB_STORE_IDENTITY_H
#define FB_STORE_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/time.h"
#include "common/util.h"
#include "policy/policy.h"
#include "store/store.h"

#define FB_IDENTITY_NAME_MAX     64  /* usernames, team names */
#define FB_IDENTITY_KEY_NAME_MAX 64
#define FB_IDENTITY_ORG_NAME_MAX 128
#define FB_IDENTITY_PWHASH_MAX   128 /* argon2id string, NUL included */
#define FB_IDENTITY_DIGEST_BYTES 32  /* API key digest */

typedef struct fb_team {
    char id[FB_ID_MAX]; /* "tm_" + 16 hex */
    char name[FB_IDENTITY_NAME_MAX + 1];
    char created_at[FB_TIME_MAX];
} fb_team;

/* A user as the rest of the program sees it: never the password hash. */
typedef struct fb_user {
    char id[FB_ID_MAX]; /* "us_" + 16 hex */
    char username[FB_IDENTITY_NAME_MAX + 1];
    char team_id[FB_ID_MAX];
    fb_role role;
    char created_at[FB_TIME_MAX];
    bool disabled;
} fb_user;

/* An API key's metadata: never the key, its secret or its digest. */
typedef struct fb_api_key_info {
    char id[FB_ID_MAX]; /* "key_" + 12 hex */
    char user_id[FB_ID_MAX];
    char name[FB_IDENTITY_KEY_NAME_MAX + 1];
    fb_perm scopes;                 /* as granted at creation */
    char created_at[FB_TIME_MAX];
    char expires_at[FB_TIME_MAX];   /* "" = never */
    char revoked_at[FB_TIME_MAX];   /* "" = live */
    char last_used_at[FB_TIME_MAX]; /* "" = never */
    char parent_key_id[FB_ID_MAX];  /* the key that created it; "" = none */
} fb_api_key_info;

/* A key to insert: its metadata (revoked_at, last_used_at ignored) and
 * the digest of its secret. */
typedef struct fb_key_record {
    fb_api_key_info info;
    uint8_t digest[FB_IDENTITY_DIGEST_BYTES];
} fb_key_record;

/* What authenticating a key needs, in one read: the key's state, its
 * owner and the stored digest. */
typedef struct fb_key_auth_row {
    uint8_t digest[FB_IDENTITY_DIGEST_BYTES];
    bool digest_ok; /* the stored digest had the right size */
    fb_api_key_info key;
    fb_user owner;
} fb_key_auth_row;

/* ---- org --------------------------------------------------------------------- */

/* name_out (FB_IDENTITY_ORG_NAME_MAX + 1 bytes) may be NULL. */
int fb_store_org_get(fb_store *st, bool *initialised, char *name_out, fb_err *err);

typedef struct fb_identity_bootstrap {
    const char *org_name;
    const char *created_at;
    const fb_team *team;
    const fb_user *admin;
    const char *admin_pwhash;
    const fb_key_record *admin_key;
} fb_identity_bootstrap;

/* The org row, its first team, admin and key in one transaction.
 * EEXISTS if the org exists (nothing written), ECOLLISION on an id. */
int fb_store_bootstrap(fb_store *st, const fb_identity_bootstrap *b, fb_err *err);

/* ---- teams --------------------------------------------------------------------- */

int fb_store_team_insert(fb_store *st, const fb_team *t, fb_err *err);
int fb_store_team_get(fb_store *st, const char *team_id, fb_team *out, fb_err *err);
int fb_store_team_get_by_name(fb_store *st, const char *name, fb_team *out, fb_err *err);
/* By name, into a malloc'd array (NULL when *n == 0). */
int fb_store_team_list(fb_store *st, fb_team **out, size_t *n, fb_err *err);

/* ---- users ---------------------------------------------------------------------- */

/* ENOTFOUND for an unknown team, EEXISTS for a taken username. */
int fb_store_user_insert(fb_store *st, const fb_user *u, const char *pwhash, fb_err *err);
int fb_store_user_get(fb_store *st, const char *user_id, fb_user *out, fb_err *err);
/* pwhash_out (FB_IDENTITY_PWHASH_MAX bytes) may be NULL. */
int fb_store_user_get_by_name(fb_store *st, const char *username, fb_user *out, char *pwhash_out,
                              fb_err *err);
/* By username, all or one team's (team_id NULL: all). */
int fb_store_user_list(fb_store *st, const char *team_id, fb_user **out, size_t *n, fb_err *err);
int fb_store_user_set_disabled(fb_store *st, const char *user_id, bool disabled, fb_err *err);
int fb_store_user_set_password(fb_store *st, const char *user_id, const char *pwhash, fb_err *err);

/* ---- API keys -------------------------------------------------------------------- */

/* Inserts k in one transaction that first re-checks what the caller
 * decided on: the owner exists (else ENOTFOUND), still has owner_role and
 * is not disabled, and the parent key (if any) is not revoked (else
 * ECONFLICT, message saying which).  ECOLLISION if the id is taken. */
int fb_store_key_insert(fb_store *st, const fb_key_record *k, fb_role owner_role, fb_err *err);
int fb_store_key_get(fb_store *st, const char *key_id, fb_api_key_info *out, fb_err *err);
/* The key, its owner and its digest (ENOTFOUND if absent). */
int fb_store_key_auth_row(fb_store *st, const char *key_id, fb_key_auth_row *out, fb_err *err);
/* A user's keys, oldest first, revoked and expired included. */
int fb_store_key_list(fb_store *st, const char *user_id, fb_api_key_info **out, size_t *n, fb_err *err);
/* Sets last_used_at (no-op for an absent key). */
int fb_store_key_touch(fb_store *st, const char *key_id, const char *when, fb_err *err);
/* Revokes key_id and every key it minted, transitively, in one
 * transaction, at revoked_at; keys already revoked keep their first
 * revoked_at.  The ids newly revoked (the root first, if it was live) go
 * into a malloc'd array *revoked of *n entries (NULL when none; the
 * caller frees).  ENOTFOUND if key_id does not exist. */
int fb_store_key_revoke_tree(fb_store *st, const char *key_id, const char *revoked_at,
                             char (**revoked)[FB_ID_MAX], size_t *n, fb_err *err);

#endif
