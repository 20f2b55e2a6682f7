/*
 * sessions.h - the session repository: console logins as stored rows.
 *
 * A row holds the digest of the session's token (never the token), its
 * user, its creation and expiry times and the address it logged in from.
 * The rules (how long a session lives, how many one user may hold, what a
 * token looks like) are the service's (src/core/sessions.c); this layer
 * stores, finds and deletes rows atomically and says what it removed, so
 * the service can audit each end.
 */
#ifndef FB_STORE_SESSIONS_H
#define FB_STORE_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "common/time.h"
#include "common/util.h"
#include "policy/policy.h"
#include "store/store.h"

#define FB_SESSION_DIGEST_BYTES 32

typedef struct fb_session_record {
    char id[FB_ID_MAX];                        /* "ses_" + 16 hex */
    uint8_t token_hash[FB_SESSION_DIGEST_BYTES];
    char user_id[FB_ID_MAX];
    char created_at[FB_TIME_MAX];
    char expires_at[FB_TIME_MAX];
    char source_ip[64];
} fb_session_record;

/* A session's id and its user: what the service audits when one ends. */
typedef struct fb_session_end {
    char id[FB_ID_MAX];
    char user_id[FB_ID_MAX];
} fb_session_end;

/* Inserts r and, in the same transaction, deletes the user's oldest
 * sessions beyond max_per_user (r included in the count); the deleted ones
 * go into a malloc'd *evicted of *n (NULL when none; free() it).
 * ECOLLISION if the id or digest is taken, ENOTFOUND for an unknown user. */
int fb_store_session_insert(fb_store *st, const fb_session_record *r, unsigned max_per_user,
                            fb_session_end **evicted, size_t *n, fb_err *err);
/* The session whose token has this digest (ENOTFOUND if none). */
int fb_store_session_get(fb_store *st, const uint8_t hash[FB_SESSION_DIGEST_BYTES], fb_session_record *out,
                         fb_err *err);
/* Deletes one session (ENOTFOUND if it is gone already). */
int fb_store_session_delete(fb_store *st, const char *id, fb_err *err);
/* Deletes every session whose expires_at is not after now; the deleted
 * ones go into *ended as for insert. */
int fb_store_session_expire(fb_store *st, const char *now, fb_session_end **ended, size_t *n, fb_err *err);

#endif
