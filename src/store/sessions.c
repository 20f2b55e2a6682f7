/*
 * sessions.c - forwards the session repository (sessions.h) to the
 * storage engine's table (backend.h).  No logic lives here.
 */
#include "store/backend.h"
#include "store/sessions.h"

#define OPS(st) ((st)->engine->sessions)

int fb_store_session_insert(fb_store *st, const fb_session_record *r, unsigned max_per_user,
                            fb_session_end **evicted, size_t *n, fb_err *err)
{
    return OPS(st)->insert(st, r, max_per_user, evicted, n, err);
}

int fb_store_session_get(fb_store *st, const uint8_t hash[FB_SESSION_DIGEST_BYTES], fb_session_record *out,
                         fb_err *err)
{
    return OPS(st)->get(st, hash, out, err);
}

int fb_store_session_delete(fb_store *st, const char *id, fb_err *err)
{
    return OPS(st)->del(st, id, err);
}

int fb_store_session_expire(fb_store *st, const char *now, fb_session_end **ended, size_t *n, fb_err *err)
{
    return OPS(st)->expire(st, now, ended, n, err);
}
