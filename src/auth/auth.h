/*
 * auth.h - who is calling: teams, users, passwords and API keys, over the
 * store (src/store/store.h).
 *
 * Secrets are never stored or echoed:
 *   - passwords are argon2id strings (libsodium crypto_pwhash_str,
 *     interactive limits);
 *   - an API key is shown once, as "fbk_<12 hex>_<43 base64url>"; the
 *     12 hex digits name the row (api_keys.id = "key_<12 hex>") and the
 *     rest is 32 random bytes of which only a keyed BLAKE2b-256 digest is
 *     stored.  The digest key is a pepper kept outside the database, in
 *     STATE_DIR/auth.pepper (32 random bytes, mode 0600, created on first
 *     use): a stolen database alone cannot be used to test guesses.
 *     Losing the pepper invalidates every key; back it up with the db.
 * No error message, log line or returned struct carries a key, a secret, a
 * digest or a password hash.  Buffers this module fills with a secret
 * (key_out, generated passwords) belong to the caller, who should wipe
 * them with sodium_memzero once shown.
 *
 * Rows live in the store's identity repository (store/identity.h); the
 * rules about who may do what are src/policy's (fb_policy_key_manage and
 * friends); this module checks input, hashes secrets and composes the two.
 * Files: secrets.c (pepper, digests, passwords, the bearer syntax),
 * accounts.c (org, teams, users, logins), keys.c (API keys).  Times are
 * RFC 3339 UTC with nanoseconds (common/time.h).
 *
 * Functions return FB_AUTH_OK (0) or a negative fb_auth_status, and fill
 * err with an operator-readable message; the status maps onto an HTTP
 * answer (EINVAL 400, ENOTFOUND 404, EEXISTS 409, EDENIED 403, EINTERNAL
 * 500).  Authentication itself fails with a reason (fb_auth_fail) for the
 * audit log; callers answer 401 uniformly whatever the reason.
 */
#ifndef FB_AUTH_H
#define FB_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "common/time.h"
#include "common/util.h"
#include "policy/policy.h"
#include "store/identity.h"
#include "store/store.h"

/* ---- limits and sizes ------------------------------------------------------ */

#define FB_AUTH_NAME_MAX      FB_IDENTITY_NAME_MAX     /* usernames, team names: [a-z0-9_.-]{1,64} */
#define FB_AUTH_KEY_NAME_MAX  FB_IDENTITY_KEY_NAME_MAX /* key names: printable ASCII, 1..64 */
#define FB_AUTH_ORG_NAME_MAX  FB_IDENTITY_ORG_NAME_MAX /* org name: printable ASCII, 1..128 */
#define FB_AUTH_PASSWORD_MIN  12   /* characters (UTF-8 code points) */
#define FB_AUTH_PASSWORD_MAX  1024 /* bytes */
#define FB_AUTH_GENERATED_PASSWORD_LEN 24 /* [A-Za-z0-9] */
#define FB_AUTH_GENERATED_PASSWORD_MAX 32 /* buffer size, NUL included */
#define FB_AUTH_KEY_TEXT_LEN  60   /* "fbk_" 12 hex "_" 43 base64url */
#define FB_AUTH_KEY_TEXT_MAX  64   /* buffer size for key_out, NUL included */
#define FB_AUTH_HEADER_MAX    256  /* longest Authorization value looked at */
#define FB_AUTH_PWHASH_MAX    FB_IDENTITY_PWHASH_MAX /* crypto_pwhash_STRBYTES */
#define FB_AUTH_LIST_MAX      FB_STORE_LIST_MAX /* rows a list call returns at most */

typedef enum fb_auth_status {
    FB_AUTH_OK = 0,
    FB_AUTH_EINTERNAL = -1, /* store, file or library failure: 500 */
    FB_AUTH_EINVAL = -2,    /* a rule about the input was broken: 400 */
    FB_AUTH_ENOTFOUND = -3, /* no such thing (or not visible to the actor): 404 */
    FB_AUTH_EEXISTS = -4,   /* name taken, org already initialised: 409 */
    FB_AUTH_EDENIED = -5,   /* the actor may not do this: 403 */
    FB_AUTH_EUNAVAILABLE = -6, /* the store cannot answer now (unreachable, busy): 503 */
} fb_auth_status;

/* Why an authentication failed (audit only; always 401 on the wire). */
typedef enum fb_auth_fail {
    FB_AUTH_FAIL_NONE = 0,   /* authenticated */
    FB_AUTH_FAIL_MISSING,    /* no credentials at all */
    FB_AUTH_FAIL_MALFORMED,  /* not "Bearer fbk_<id>_<secret>" exactly */
    FB_AUTH_FAIL_UNKNOWN,    /* no such key id / user name */
    FB_AUTH_FAIL_REVOKED,
    FB_AUTH_FAIL_EXPIRED,
    FB_AUTH_FAIL_BAD_SECRET, /* right id, wrong secret / wrong password */
    FB_AUTH_FAIL_DISABLED,   /* the owning user is disabled */
    FB_AUTH_FAIL_ERROR,      /* could not decide (store error): answer 500 */
} fb_auth_fail;

/* "none", "missing", "malformed", "unknown", "revoked", "expired",
 * "bad_secret", "disabled", "error". */
const char *fb_auth_fail_name(fb_auth_fail why);

/* fb_team, fb_user and fb_api_key_info are the identity repository's
 * (store/identity.h). */

/* ---- passwords ----------------------------------------------------------------- */

/* EINVAL unless 12..1024 characters/bytes (see limits above). */
int fb_auth_password_check_rules(const char *password, fb_err *err);
/* argon2id string of password (rules checked first). */
int fb_auth_password_hash(const char *password, char out[FB_AUTH_PWHASH_MAX], fb_err *err);
/* Constant-time-verified; false for a malformed hash too. */
bool fb_auth_password_verify(const char *hash, const char *password);
/* 24 random characters from [A-Za-z0-9] (about 143 bits). */
int fb_auth_password_generate(char out[FB_AUTH_GENERATED_PASSWORD_MAX], fb_err *err);

/* ---- organisation --------------------------------------------------------------- */

/* Bootstraps an empty store in one transaction: the org row, a team
 * "default", an admin user admin_username in it (password from the
 * argument, or generated - 24 characters - into generated_password_out,
 * which must then hold FB_AUTH_GENERATED_PASSWORD_MAX bytes; it is set to
 * "" when a password was given) and an API key for that admin with every
 * permission, never expiring, written once into admin_key_out
 * (FB_AUTH_KEY_TEXT_MAX bytes).  EEXISTS "already initialised" if the org
 * row exists; nothing is written then. */
int fb_auth_init_org(fb_store *st, const char *org_name, const char *admin_username,
                     const char *password_or_null, char *generated_password_out,
                     char *admin_key_out, fb_err *err);
/* Whether fb_auth_init_org has run; name_out (FB_AUTH_ORG_NAME_MAX + 1
 * bytes, may be NULL) receives the org's name. */
int fb_auth_org_get(fb_store *st, bool *initialised, char *name_out, fb_err *err);

/* ---- teams ------------------------------------------------------------------------ */

/* EINVAL for a bad name, EEXISTS if taken. */
int fb_auth_team_create(fb_store *st, const char *name, fb_team *out, fb_err *err);
int fb_auth_team_get(fb_store *st, const char *team_id, fb_team *out, fb_err *err);
int fb_auth_team_get_by_name(fb_store *st, const char *name, fb_team *out, fb_err *err);
/* All teams by name into a malloc'd array (free() it; NULL when *n == 0). */
int fb_auth_team_list(fb_store *st, fb_team **out, size_t *n, fb_err *err);

/* ---- users ------------------------------------------------------------------------- */

/* EINVAL for a bad username/role/password, ENOTFOUND for an unknown team,
 * EEXISTS if the username is taken. */
int fb_auth_user_create(fb_store *st, const char *username, const char *team_id, fb_role role,
                        const char *password, fb_user *out, fb_err *err);
int fb_auth_user_get(fb_store *st, const char *user_id, fb_user *out, fb_err *err);
int fb_auth_user_get_by_name(fb_store *st, const char *username, fb_user *out, fb_err *err);
/* Users by username, all or only team_id's (team_id_or_null), into a
 * malloc'd array (free() it; NULL when *n == 0). */
int fb_auth_user_list(fb_store *st, const char *team_id_or_null, fb_user **out, size_t *n,
                      fb_err *err);
/* A disabled user's keys and password stop working at once. */
int fb_auth_user_set_disabled(fb_store *st, const char *user_id, bool disabled, fb_err *err);
int fb_auth_user_set_password(fb_store *st, const char *user_id, const char *password,
                              fb_err *err);
/* Console login.  0 and a principal (key_id "", scopes = the role's
 * permissions, org_enabled 0: the caller sets it from config), or -1 with
 * *why set: missing, malformed (impossible username, overlong password),
 * unknown, bad_secret, disabled or error.  An unknown username costs the
 * same argon2id work as a known one. */
int fb_auth_password_login(fb_store *st, const char *username, const char *password,
                           fb_principal *out, fb_auth_fail *why, fb_err *err);

/* ---- API keys ------------------------------------------------------------------------ */

/* Creates a key for user_id named name (1..64 printable ASCII) with
 * scopes (non-empty, a subset of the user's role permissions, else
 * EINVAL naming what exceeds) expiring at expires_at_or_null (RFC 3339,
 * must be in the future; NULL = never).  The key text goes once into
 * key_out (FB_AUTH_KEY_TEXT_MAX bytes), its id into key_id_out (FB_ID_MAX
 * bytes).  ENOTFOUND for an unknown user, EDENIED for a disabled one.
 * This is the administrative form (CLI, bootstrap): it does not ask who
 * is acting.  Request handlers use fb_auth_key_create_as. */
int fb_auth_key_create(fb_store *st, const char *user_id, const char *name, fb_perm scopes,
                       const char *expires_at_or_null, char *key_out, char *key_id_out,
                       fb_err *err);
/* The same on behalf of actor, who must be the owner holding keys:manage,
 * or an admin holding admin:users (anyone else: ENOTFOUND for another
 * user, EDENIED for lacking the permission).  The new key's scopes must
 * also fit within the actor's own effective permissions (role ∩ scopes,
 * fb_policy_effective without the org gate): a key can never mint a key
 * stronger than itself (EDENIED naming the excess), nor one that outlives
 * it (EINVAL: fb_policy_key_expiry).  A key minted through a key records
 * it as its parent (fb_auth_key_revoke revokes the children). */
int fb_auth_key_create_as(fb_store *st, const fb_principal *actor, const char *user_id,
                          const char *name, fb_perm scopes, const char *expires_at_or_null,
                          char *key_out, char *key_id_out, fb_err *err);

/* Authenticates an Authorization header value, "Bearer <key>" exactly
 * (scheme case-insensitive, one space, nothing after the key; at most
 * FB_AUTH_HEADER_MAX bytes; the key in the exact shape above).  On
 * success returns 0 and fills *out: user, team, role, is_admin, key_id,
 * scopes = key scopes ∩ the user's current role, org_enabled = 0 (the
 * caller sets it from config); *why = FB_AUTH_FAIL_NONE.  Otherwise
 * returns -1 with *why set: missing (NULL), malformed (anything else not
 * of the shape, including ""), unknown, bad_secret, revoked, expired,
 * disabled - checked in that order, the secret before any state of the
 * key is revealed - or error (err says what; answer 500).  A revoked key
 * fails from the moment fb_auth_key_revoke returns, a disabled owner's from
 * the moment fb_auth_user_set_disabled returns, an expired one from its
 * expiry on the clock.  A success is remembered in this process for
 * FB_AUTH_KEYCACHE_TTL_MS (2 s, or FORGEBOX_KEYCACHE_TTL_MS from the
 * environment, read once: a test and tuning knob, 0..600000; the same
 * secret only, never a failure), so that a busy key costs no store read: a
 * change made behind auth's back (a hand edit of the database or the
 * pepper) takes effect within that time, or at once after
 * fb_auth_key_cache_flush.  Another gateway's revocations and user changes
 * on a shared PostgreSQL store reach this one through
 * fb_store_watch_identity, which the gateway wires to
 * fb_auth_key_cache_flush.  last_used_at is refreshed on success only,
 * best effort, at most once a minute. */
int fb_auth_key_authenticate(fb_store *st, const char *header_value, fb_principal *out,
                             fb_auth_fail *why, fb_err *err);
/* Forgets every remembered verification, before it returns: for changes
 * made behind auth's back (another gateway's, announced by the store;
 * tests, repair tools).  Auth's own revocations and user changes do this
 * themselves.  Async-signal-safe and lock-free: one atomic increment. */
void fb_auth_key_cache_flush(void);
/* The same for a counted value that may contain NUL bytes (which are
 * malformed). */
int fb_auth_key_authenticate_n(fb_store *st, const char *value, size_t len, fb_principal *out,
                               fb_auth_fail *why, fb_err *err);

/* The principal of key_id as the key stands now, without its secret: for
 * a credential the server itself issued on the key's behalf (the E2B
 * listener's envd access tokens).  The same checks and order as after a
 * matching secret (revoked, expired, disabled), and the same principal;
 * unknown for an absent key.  Does not touch last_used_at. */
int fb_auth_key_principal(fb_store *st, const char *key_id, fb_principal *out, fb_auth_fail *why, fb_err *err);

/* Revokes key_id and, in the same transaction, every key it minted,
 * transitively (finding 14: a leaked key's children die with it).  The
 * owner may revoke their own keys with keys:manage; an admin with
 * admin:users anyone's (fb_policy_key_manage).  ENOTFOUND if there is no
 * such key or it is another user's and actor is not an admin; EDENIED
 * when the permission is missing.  Revoking a revoked key is OK and keeps
 * the first revoked_at (its live descendants, if any, are revoked now). */
int fb_auth_key_revoke(fb_store *st, const fb_principal *actor, const char *key_id,
                       fb_err *err);
/* The same, returning the ids newly revoked (key_id first when it was
 * live, then its descendants by depth) in a malloc'd array *revoked of *n
 * (NULL when none; free() it), so that the caller can audit each one. */
int fb_auth_key_revoke_tree(fb_store *st, const fb_principal *actor, const char *key_id,
                            char (**revoked)[FB_ID_MAX], size_t *n, fb_err *err);
/* One key's metadata (ENOTFOUND if absent). */
int fb_auth_key_get(fb_store *st, const char *key_id, fb_api_key_info *out, fb_err *err);
/* A user's keys, oldest first, revoked and expired ones included, into a
 * malloc'd array (free() it; NULL when *n == 0).  Access control is the
 * caller's (owner with keys:manage, or admin). */
int fb_auth_key_list(fb_store *st, const char *user_id, fb_api_key_info **out, size_t *n,
                     fb_err *err);

#endif
