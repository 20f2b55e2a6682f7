/*
 * keys.c - API keys (auth.h): creating, authenticating, revoking, listing.
 *
 * The rules - who may act on whose keys, how strong and how long-lived a
 * new key may be - are src/policy's (fb_policy_key_*); this file gathers
 * what they need, asks them, and stores the result through the identity
 * repository, which re-checks inside its transaction that the owner and
 * the creating key did not change in between.
 *
 * A key minted through another key records it as its parent; revoking a
 * key revokes its descendants in the same transaction (finding 14), so a
 * leaked key cannot leave live children behind.
 *
 * A verified key is remembered for a moment (keycache.c): revoking keys
 * invalidates that synchronously, and expiry is checked on every hit.
 */
#define _GNU_SOURCE
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/internal.h"

#define LAST_USED_INTERVAL_S 60

static bool valid_key_id(const char *s)
{
    return fb_auth_valid_id(s, KEY_ID_PREFIX, KEY_ID_HEX);
}

/* A policy refusal as auth's status: NOT_FOUND stays 404, DENY becomes
 * deny_status. */
static int refused(const fb_decision *d, int deny_status, fb_err *err)
{
    return fb_fail_code(err, d->verdict == FB_NOT_FOUND ? FB_AUTH_ENOTFOUND : deny_status, "%s", d->reason);
}

/* Checks that do not need the database; fills expires_norm ("" = never). */
static int key_request_check(const char *user_id, const char *name, fb_perm scopes, const char *expires,
                             char expires_norm[FB_TIME_MAX], fb_err *err)
{
    expires_norm[0] = '\0';
    if (!fb_auth_valid_id(user_id, "us_", 16))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such user");
    if (!fb_auth_valid_label(name, FB_AUTH_KEY_NAME_MAX))
        return fb_fail_code(err, FB_AUTH_EINVAL, "a key name is 1 to %d printable ASCII characters",
                            FB_AUTH_KEY_NAME_MAX);
    if (scopes == 0)
        return fb_fail_code(err, FB_AUTH_EINVAL, "a key needs at least one scope");
    if (scopes & ~FB_PERM_ALL)
        return fb_fail_code(err, FB_AUTH_EINVAL, "unknown scope bits 0x%x", (unsigned)(scopes & ~FB_PERM_ALL));
    if (expires) {
        struct timespec when, now = fb_time_now_ts();
        if (fb_time_parse(expires, &when) < 0)
            return fb_fail_code(err, FB_AUTH_EINVAL,
                                "expires_at must be an RFC 3339 time such as 2030-01-31T12:00:00Z");
        if (fb_time_cmp(&when, &now) <= 0)
            return fb_fail_code(err, FB_AUTH_EINVAL, "expires_at is in the past");
        fb_time_format(&when, expires_norm);
    }
    return 0;
}

/* The rules about the actor (NULL: the administrative form), in the
 * order the old checks ran: who, how strong, how long. */
static int key_actor_check(fb_store *st, const fb_principal *actor, const char *user_id, fb_perm scopes,
                           const char *expires_norm, fb_err *err)
{
    fb_decision d;
    if (fb_policy_key_manage(actor, user_id, FB_KEY_CREATE, &d) != FB_ALLOW)
        return refused(&d, FB_AUTH_EDENIED, err);
    if (fb_policy_key_within_actor(actor, scopes, &d) != FB_ALLOW)
        return refused(&d, FB_AUTH_EDENIED, err);
    if (!actor->key_id[0])
        return 0;
    fb_api_key_info parent;
    int rc = fb_store_key_get(st, actor->key_id, &parent, err);
    if (rc < 0)
        return fb_auth_from_store(rc);
    struct timespec pe, ce;
    bool parent_expires = parent.expires_at[0] != '\0';
    if (parent_expires && fb_time_parse(parent.expires_at, &pe) < 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "API key %s has an unreadable expiry time", parent.id);
    if (expires_norm[0] && fb_time_parse(expires_norm, &ce) < 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "internal: unreadable expiry");
    if (fb_policy_key_expiry(parent_expires ? &pe : NULL, expires_norm[0] ? &ce : NULL, &d) != FB_ALLOW)
        return fb_fail_code(err, FB_AUTH_EINVAL,
                            "\"expires_at\" must be set and no later than the expiry of the key making it");
    return 0;
}

static int key_create(fb_store *st, const fb_principal *actor, const char *user_id, const char *name,
                      fb_perm scopes, const char *expires, char *key_out, char *key_id_out, fb_err *err)
{
    if (!key_out || !key_id_out)
        return fb_fail_code(err, FB_AUTH_EINVAL, "internal: no buffer for the new key");
    key_out[0] = '\0';
    key_id_out[0] = '\0';
    char expires_norm[FB_TIME_MAX];
    fb_user owner;
    int rc = fb_auth_sodium_ready(err);
    if (rc < 0 || (rc = key_request_check(user_id, name, scopes, expires, expires_norm, err)) < 0 ||
        (actor && (rc = key_actor_check(st, actor, user_id, scopes, expires_norm, err)) < 0))
        return rc;
    if ((rc = fb_store_user_get(st, user_id, &owner, err)) < 0)
        return rc == FB_STORE_ENOTFOUND ? fb_fail_code(err, FB_AUTH_ENOTFOUND, "no user with id %s", user_id)
                                        : fb_auth_from_store(rc);
    if (owner.disabled)
        return fb_fail_code(err, FB_AUTH_EDENIED, "user %s is disabled; enable it first", user_id);
    fb_decision d;
    if (fb_policy_key_within_role(owner.role, scopes, &d) != FB_ALLOW)
        return refused(&d, FB_AUTH_EINVAL, err);
    uint8_t pepper[PEPPER_BYTES];
    if ((rc = fb_auth_pepper_load(st, pepper, err)) < 0)
        return rc;
    fb_key_record rec;
    int src = FB_STORE_ECOLLISION;
    for (int attempt = 0; attempt < INSERT_ATTEMPTS && src == FB_STORE_ECOLLISION; attempt++) {
        if ((rc = fb_auth_key_mint(pepper, user_id, name, scopes, expires_norm, actor ? actor->key_id : NULL, &rec,
                                   key_out, err)) < 0)
            break;
        src = fb_store_key_insert(st, &rec, owner.role, err);
    }
    if (rc == 0)
        rc = fb_auth_from_store(src);
    if (rc == 0)
        snprintf(key_id_out, FB_ID_MAX, "%s", rec.info.id);
    sodium_memzero(pepper, sizeof pepper);
    sodium_memzero(&rec, sizeof rec);
    if (rc < 0) {
        sodium_memzero(key_out, FB_AUTH_KEY_TEXT_MAX);
        key_id_out[0] = '\0';
    }
    return rc;
}

int fb_auth_key_create(fb_store *st, const char *user_id, const char *name, fb_perm scopes,
                       const char *expires_at_or_null, char *key_out, char *key_id_out, fb_err *err)
{
    return key_create(st, NULL, user_id, name, scopes, expires_at_or_null, key_out, key_id_out, err);
}

int fb_auth_key_create_as(fb_store *st, const fb_principal *actor, const char *user_id, const char *name,
                          fb_perm scopes, const char *expires_at_or_null, char *key_out, char *key_id_out,
                          fb_err *err)
{
    if (!actor)
        return fb_fail_code(err, FB_AUTH_EDENIED, "no principal");
    return key_create(st, actor, user_id, name, scopes, expires_at_or_null, key_out, key_id_out, err);
}

/* ---- authentication ------------------------------------------------------------------ */

/* Refreshes last_used_at when it is older than a minute; best effort: a
 * failure here must not turn a valid key away. */
static void touch_key(fb_store *st, const char *key_id, const char *last_used)
{
    struct timespec now = fb_time_now_ts(), last;
    if (last_used[0] && fb_time_parse(last_used, &last) == 0 && now.tv_sec - last.tv_sec < LAST_USED_INTERVAL_S &&
        now.tv_sec >= last.tv_sec)
        return;
    char stamp[FB_TIME_MAX];
    if (fb_time_format(&now, stamp) == 0)
        (void)fb_store_key_touch(st, key_id, stamp, NULL);
}

static int auth_fail(fb_auth_fail *why, fb_auth_fail reason, fb_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int auth_fail(fb_auth_fail *why, fb_auth_fail reason, fb_err *err, const char *fmt, ...)
{
    *why = reason;
    va_list ap;
    va_start(ap, fmt);
    fb_vfail(err, -1, fmt, ap);
    va_end(ap);
    return -1;
}

/* The key's state after the secret matched, in the documented order. */
static int key_state_check(const fb_key_auth_row *row, const char *key_id, fb_auth_fail *why, fb_err *err)
{
    if (row->key.revoked_at[0])
        return auth_fail(why, FB_AUTH_FAIL_REVOKED, err, "API key %s was revoked at %s", key_id,
                         row->key.revoked_at);
    if (row->key.expires_at[0]) {
        struct timespec when, now = fb_time_now_ts();
        if (fb_time_parse(row->key.expires_at, &when) < 0)
            return auth_fail(why, FB_AUTH_FAIL_ERROR, err, "API key %s has an unreadable expiry time", key_id);
        if (fb_time_cmp(&now, &when) >= 0)
            return auth_fail(why, FB_AUTH_FAIL_EXPIRED, err, "API key %s expired at %s", key_id,
                             row->key.expires_at);
    }
    if (row->owner.disabled)
        return auth_fail(why, FB_AUTH_FAIL_DISABLED, err, "the owner of API key %s is disabled", key_id);
    return 0;
}

int fb_auth_key_authenticate_n(fb_store *st, const char *value, size_t len, fb_principal *out, fb_auth_fail *why,
                               fb_err *err)
{
    memset(out, 0, sizeof *out);
    *why = FB_AUTH_FAIL_ERROR;
    if (fb_auth_sodium_ready(err) < 0)
        return -1;
    if (!value)
        return auth_fail(why, FB_AUTH_FAIL_MISSING, err, "no Authorization header");
    if (len > FB_AUTH_HEADER_MAX)
        return auth_fail(why, FB_AUTH_FAIL_MALFORMED, err, "Authorization header longer than %d bytes",
                         FB_AUTH_HEADER_MAX);
    if (memchr(value, '\0', len))
        return auth_fail(why, FB_AUTH_FAIL_MALFORMED, err, "Authorization header contains NUL");

    uint8_t secret[KEY_SECRET_BYTES], pepper[PEPPER_BYTES], digest[DIGEST_BYTES];
    fb_key_auth_row row;
    memset(&row, 0, sizeof row);
    const char *id_hex = NULL;
    char key_id[FB_ID_MAX] = "";
    int rc = -1;
    if (fb_auth_parse_bearer(value, len, &id_hex, secret) < 0) {
        rc = auth_fail(why, FB_AUTH_FAIL_MALFORMED, err, "Authorization header is not 'Bearer fbk_<id>_<secret>'");
        goto out;
    }
    snprintf(key_id, sizeof key_id, KEY_ID_PREFIX "%.*s", KEY_ID_HEX, id_hex);
    if (fb_auth_keycache_get(st, key_id, secret, out)) {
        *why = FB_AUTH_FAIL_NONE;
        rc = 0;
        goto out;
    }
    uint64_t gen = fb_auth_keycache_generation(); /* before the store is read */
    if (fb_auth_pepper_load(st, pepper, err) < 0)
        goto out; /* why = error */
    /* The digest is computed before the lookup so that unknown ids and
     * wrong secrets cost the same. */
    fb_auth_key_digest(pepper, id_hex, secret, digest);
    int found = fb_store_key_auth_row(st, key_id, &row, err);
    if (found == FB_STORE_ENOTFOUND) {
        rc = auth_fail(why, FB_AUTH_FAIL_UNKNOWN, err, "no API key %s", key_id);
        goto out;
    }
    if (found < 0) {
        rc = fb_auth_from_store(found); /* why = error, err set */
        goto out;
    }
    if (!row.digest_ok || sodium_memcmp(row.digest, digest, DIGEST_BYTES) != 0) {
        rc = auth_fail(why, FB_AUTH_FAIL_BAD_SECRET, err, "wrong secret for API key %s", key_id);
        goto out;
    }
    if (key_state_check(&row, key_id, why, err) < 0)
        goto out;
    fb_auth_fill_principal(out, &row.owner, key_id, row.key.scopes);
    *why = FB_AUTH_FAIL_NONE;
    rc = 0;
    touch_key(st, key_id, row.key.last_used_at);
    fb_auth_keycache_put(st, key_id, secret, out, row.key.expires_at, gen);
out:
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(pepper, sizeof pepper);
    sodium_memzero(digest, sizeof digest);
    sodium_memzero(&row, sizeof row);
    return rc;
}

int fb_auth_key_authenticate(fb_store *st, const char *header_value, fb_principal *out, fb_auth_fail *why,
                             fb_err *err)
{
    size_t len = header_value ? strnlen(header_value, FB_AUTH_HEADER_MAX + 1) : 0;
    return fb_auth_key_authenticate_n(st, header_value, len, out, why, err);
}

/* ---- revocation, reads ---------------------------------------------------------------- */

int fb_auth_key_revoke_tree(fb_store *st, const fb_principal *actor, const char *key_id,
                            char (**revoked)[FB_ID_MAX], size_t *n, fb_err *err)
{
    *revoked = NULL;
    *n = 0;
    if (!actor || actor->is_admin != (actor->role == FB_ROLE_ADMIN))
        return fb_fail_code(err, FB_AUTH_EDENIED, "inconsistent principal");
    if (!valid_key_id(key_id))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such API key");
    /* A key's owner never changes, so reading it before the revoking
     * transaction decides the same as reading it inside. */
    fb_api_key_info key;
    int rc = fb_store_key_get(st, key_id, &key, err);
    if (rc < 0)
        return fb_auth_from_store(rc);
    fb_decision d;
    if (fb_policy_key_manage(actor, key.user_id, FB_KEY_REVOKE, &d) != FB_ALLOW)
        return refused(&d, FB_AUTH_EDENIED, err);
    char now[FB_TIME_MAX];
    fb_time_now(now);
    rc = fb_auth_from_store(fb_store_key_revoke_tree(st, key_id, now, revoked, n, err));
    fb_auth_keycache_invalidate(); /* before the revocation is answered */
    return rc;
}

int fb_auth_key_revoke(fb_store *st, const fb_principal *actor, const char *key_id, fb_err *err)
{
    char(*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    int rc = fb_auth_key_revoke_tree(st, actor, key_id, &ids, &n, err);
    free(ids);
    return rc;
}

int fb_auth_key_get(fb_store *st, const char *key_id, fb_api_key_info *out, fb_err *err)
{
    if (!valid_key_id(key_id))
        return fb_fail_code(err, FB_AUTH_ENOTFOUND, "no such API key");
    return fb_auth_from_store(fb_store_key_get(st, key_id, out, err));
}

int fb_auth_key_list(fb_store *st, const char *user_id, fb_api_key_info **out, size_t *n, fb_err *err)
{
    *out = NULL;
    *n = 0;
    if (!fb_auth_valid_id(user_id, "us_", 16))
        return 0;
    return fb_auth_from_store(fb_store_key_list(st, user_id, out, n, err));
}

int fb_auth_key_principal(fb_store *st, const char *key_id, fb_principal *out, fb_auth_fail *why, fb_err *err)
{
    memset(out, 0, sizeof *out);
    *why = FB_AUTH_FAIL_ERROR;
    fb_key_auth_row row;
    memset(&row, 0, sizeof row);
    int rc = -1;
    int found = fb_store_key_auth_row(st, key_id, &row, err);
    if (found == FB_STORE_ENOTFOUND)
        rc = auth_fail(why, FB_AUTH_FAIL_UNKNOWN, err, "no API key %s", key_id);
    else if (found < 0)
        rc = fb_auth_from_store(found); /* why = error */
    else if (found == 0 && key_state_check(&row, key_id, why, err) == 0) {
        fb_auth_fill_principal(out, &row.owner, key_id, row.key.scopes);
        *why = FB_AUTH_FAIL_NONE;
        rc = 0;
    }
    sodium_memzero(&row, sizeof row);
    return rc;
}
