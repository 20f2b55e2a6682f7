/*
 * sqlite_sandboxes.c - the sandbox repository (sandboxes.h) on SQLite.
 *
 * Records carry this node's id (store.c); "live" means creating or
 * running.  destroyed_at is written by the same clock and in the same
 * canonical form as every other time (common/time.h), not by SQL's own
 * strftime, so all stored times compare as text.
 */
#include <string.h>

#include "common/time.h"
#include "store/backend.h"
#include "store/sql.h"

static int sb_insert(fb_store *st, const fb_sandbox_record *r, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "INSERT INTO sandboxes (id, team_id, key_id, backend, memory_mib, vcpus, state, "
                            "created_at, expires_at, node_id) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?8, ?9)",
                            &s, err);
    if (rc == 0)
        rc = fb_sql_bind_texts(s, err, 4, r->id, r->team_id, r->key_id && r->key_id[0] ? r->key_id : NULL,
                               r->backend);
    if (rc == 0 && (r->memory_mib > INT64_MAX || r->vcpus > INT64_MAX))
        rc = fb_fail_code(err, FB_STORE_EINVAL, "sandbox %s: sizes out of range", r->id);
    if (rc == 0 && (rc = fb_sql_bind_int64(s, 5, (int64_t)r->memory_mib, err)) == 0 &&
        (rc = fb_sql_bind_int64(s, 6, (int64_t)r->vcpus, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 7, r->created_at, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 8, r->expires_at, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 9, st->node_id, err)) == 0)
        rc = fb_sql_run(s, "cannot record the sandbox", err);
    return rc;
}

static int sb_set_state(fb_store *st, const char *id, const char *state, fb_err *err)
{
    static const char *const states[] = {"creating", "running", "destroyed", "failed"};
    size_t i = 0;
    while (i < 4 && (!state || strcmp(state, states[i]) != 0))
        i++;
    if (i == 4)
        return fb_fail_code(err, FB_STORE_EINVAL, "no sandbox state '%.32s'", state ? state : "(null)");
    char now[FB_TIME_MAX];
    fb_time_now(now);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_exec_texts(db,
                               "UPDATE sandboxes SET state = ?1, "
                               "destroyed_at = CASE WHEN ?1 IN ('destroyed', 'failed') THEN ?2 ELSE NULL END "
                               "WHERE id = ?3",
                               "cannot update the sandbox record", err, 3, state, now, id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = fb_fail_code(err, FB_STORE_ENOTFOUND, "no sandbox record %.40s", id);
    return rc;
}

static int sb_list_live(fb_store *st, char (**ids)[FB_ID_MAX], size_t *n, fb_err *err)
{
    *ids = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT id FROM sandboxes WHERE state IN ('creating', 'running') "
                            "AND (node_id = ?1 OR node_id = '') ORDER BY created_at, id",
                            &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, st->node_id, err)) < 0)
        return rc;
    void *out = NULL;
    rc = fb_sql_collect(s, FB_ID_MAX, fb_sql_read_id, &out, n, "cannot list sandbox records", err);
    *ids = out;
    return rc;
}

const fb_sandbox_ops fb_sqlite_sandbox_ops = {
    .insert = sb_insert,
    .set_state = sb_set_state,
    .list_live = sb_list_live,
};
