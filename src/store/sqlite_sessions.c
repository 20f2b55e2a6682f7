/*
 * sqlite_sessions.c - the session repository (sessions.h) on SQLite
 * (migration 005).
 *
 * Inserting a session and evicting the user's oldest beyond the limit is
 * one transaction, and so is reading and deleting the expired ones: two
 * logins at once cannot both stay under the limit, and every session that
 * ends is reported exactly once (to be audited once).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend.h"
#include "store/sessions.h"
#include "store/sql.h"

static int read_end(fb_sql_stmt *s, void *elem)
{
    fb_session_end *e = elem;
    return fb_sql_col_copy(s, 0, e->id, sizeof e->id) < 0 || fb_sql_col_copy(s, 1, e->user_id, sizeof e->user_id) < 0
               ? -1
               : 0;
}

/* Collects the rows of a (id, user_id) query with one text parameter and
 * deletes them by id (lock and transaction held). */
static int take_ends(fb_sql *db, const char *select, const char *p1, const char *p2, fb_session_end **out, size_t *n,
                     fb_err *err)
{
    *out = NULL;
    *n = 0;
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, select, &s, err);
    if (rc == 0)
        rc = fb_sql_bind_texts(s, err, p2 ? 2 : 1, p1, p2);
    void *rows = NULL;
    if (rc == 0)
        rc = fb_sql_collect(s, sizeof(fb_session_end), read_end, &rows, n, "cannot read sessions", err);
    *out = rows;
    for (size_t i = 0; rc == 0 && i < *n; i++)
        rc = fb_sql_exec_texts(db, "DELETE FROM sessions WHERE id = ?1", "cannot delete a session", err, 1,
                               (*out)[i].id);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

/* Commits (rc 0) or rolls back and forgets the collected ends. */
static int end_tx(fb_sql *db, int rc, fb_session_end **ends, size_t *n, fb_err *err)
{
    if (rc == 0)
        rc = fb_sql_commit(db, err);
    if (rc < 0) {
        fb_sql_rollback(db);
        free(*ends);
        *ends = NULL;
        *n = 0;
    }
    return rc;
}

static int s_insert(fb_store *st, const fb_session_record *r, unsigned max_per_user, fb_session_end **evicted,
                    size_t *n, fb_err *err)
{
    *evicted = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    {
        cleanup_stmt fb_sql_stmt *s = NULL;
        rc = fb_sql_prepare(db,
                            "INSERT INTO sessions (id, token_hash, user_id, created_at, expires_at, source_ip) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            &s, err);
        if (rc == 0 && (rc = fb_sql_bind_text(s, 1, r->id, err)) == 0 &&
            (rc = fb_sql_bind_blob(s, 2, r->token_hash, sizeof r->token_hash, err)) == 0) {
            for (int i = 3; rc == 0 && i <= 6; i++) {
                const char *v[] = {r->user_id, r->created_at, r->expires_at, r->source_ip};
                rc = fb_sql_bind_text(s, i, v[i - 3], err);
            }
        }
        if (rc == 0)
            rc = fb_sql_run(s, "cannot record the session", err);
    }
    if (rc == 0) {
        char offset[24];
        snprintf(offset, sizeof offset, "%u", max_per_user);
        rc = take_ends(db,
                       "SELECT id, user_id FROM sessions WHERE user_id = ?1 "
                       "ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET CAST(?2 AS INTEGER)",
                       r->user_id, offset, evicted, n, err);
    }
    return end_tx(db, rc, evicted, n, err);
}

static int s_get(fb_store *st, const uint8_t hash[FB_SESSION_DIGEST_BYTES], fb_session_record *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT id, user_id, created_at, expires_at, source_ip FROM sessions "
                            "WHERE token_hash = ?1",
                            &s, err);
    if (rc < 0 || (rc = fb_sql_bind_blob(s, 1, hash, FB_SESSION_DIGEST_BYTES, err)) < 0 ||
        (rc = fb_sql_step(s, "cannot read the session", err)) < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "no such session");
    if (fb_sql_col_copy(s, 0, out->id, sizeof out->id) < 0 ||
        fb_sql_col_copy(s, 1, out->user_id, sizeof out->user_id) < 0 ||
        fb_sql_col_copy(s, 2, out->created_at, sizeof out->created_at) < 0 ||
        fb_sql_col_copy(s, 3, out->expires_at, sizeof out->expires_at) < 0 ||
        fb_sql_col_copy(s, 4, out->source_ip, sizeof out->source_ip) < 0)
        return fb_fail_code(err, FB_STORE_ECORRUPT, "session: malformed row");
    memcpy(out->token_hash, hash, FB_SESSION_DIGEST_BYTES);
    return 0;
}

static int s_delete(fb_store *st, const char *id, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_exec_texts(db, "DELETE FROM sessions WHERE id = ?1", "cannot delete the session", err, 1, id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = fb_fail_code(err, FB_STORE_ENOTFOUND, "no session %.40s", id);
    return rc;
}

static int s_expire(fb_store *st, const char *now, fb_session_end **ended, size_t *n, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    rc = take_ends(db, "SELECT id, user_id FROM sessions WHERE expires_at <= ?1", now, NULL, ended, n, err);
    return end_tx(db, rc, ended, n, err);
}

const fb_session_ops fb_sqlite_session_ops = {
    .insert = s_insert,
    .get = s_get,
    .del = s_delete,
    .expire = s_expire,
};
