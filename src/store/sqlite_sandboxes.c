/*
 * sqlite_sandboxes.c - the sandbox repository (sandboxes.h) on SQLite.
 *
 * Records carry this node's id (store.c); "live" means creating or
 * running.  destroyed_at is written by the same clock and in the same
 * canonical form as every other time (common/time.h), not by SQL's own
 * strftime, so all stored times compare as text.
 *
 * A reservation (fb_store_sandbox_reserve) counts the team's live records
 * of every node and inserts the new one in the same writing transaction,
 * so a team's quota holds across every gateway sharing the store.  'lost'
 * (a node that went silent, store/nodes.h) is final.  A local sandbox's
 * reservation, activation and end are written in a relaxed scope
 * (fb_sql_relaxed): durable with the next audit commit (sandboxes.h).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Whether state is one of the record's states. */
static bool known_state(const char *state)
{
    static const char *const states[] = {"creating", "running", "destroyed", "failed", "lost"};
    for (size_t i = 0; state && i < sizeof states / sizeof *states; i++)
        if (strcmp(state, states[i]) == 0)
            return true;
    return false;
}

/* After a guarded UPDATE changed nothing (lock held): ENOTFOUND when there
 * is no record, 0 when it already is in the state wanted (nothing to do),
 * else ECONFLICT naming its state. */
static int explain_unchanged(fb_sql *db, const char *id, const char *wanted, fb_err *err)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "SELECT state FROM sandboxes WHERE id = ?1", &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, id, err)) == 0)
        rc = fb_sql_step(s, "cannot read the sandbox record", err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "no sandbox record %.40s", id);
    const char *state = fb_sql_col_text(s, 0, NULL);
    if (wanted && strcmp(state, wanted) == 0)
        return 0;
    return fb_fail_code(err, FB_STORE_ECONFLICT, "sandbox %.40s is %.16s: it cannot become %.16s", id, state,
                        wanted ? wanted : "live");
}

static int sb_set_state(fb_store *st, const char *id, const char *state, bool local, fb_err *err)
{
    if (!known_state(state))
        return fb_fail_code(err, FB_STORE_EINVAL, "no sandbox state '%.32s'", state ? state : "(null)");
    char now[FB_TIME_MAX];
    fb_time_now(now);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_sql_durable fb_sql *relaxed = local ? fb_sql_relaxed(db) : NULL;
    /* 'lost' is final: a node that comes back cannot revive a record a
     * gateway already declared lost (and audited). */
    int rc = fb_sql_exec_texts(db,
                               "UPDATE sandboxes SET state = ?1, "
                               "destroyed_at = CASE WHEN ?1 IN ('destroyed', 'failed', 'lost') THEN ?2 ELSE NULL END "
                               "WHERE id = ?3 AND state <> 'lost'",
                               "cannot update the sandbox record", err, 3, state, now, id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = explain_unchanged(db, id, state, err);
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

/* The team's live usage (lock and transaction held). */
static int team_usage(fb_sql *db, const char *team_id, fb_quota_usage *u, fb_err *err)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT COUNT(*), COALESCE(SUM(memory_mib), 0), COALESCE(SUM(vcpus), 0) FROM sandboxes "
                            "WHERE team_id = ?1 AND state IN ('creating', 'running')",
                            &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, team_id, err)) == 0)
        rc = fb_sql_step(s, "cannot count the team's sandboxes", err);
    if (rc < 0)
        return rc;
    int64_t c = rc == 1 ? fb_sql_col_int64(s, 0) : 0, m = rc == 1 ? fb_sql_col_int64(s, 1) : 0,
            v = rc == 1 ? fb_sql_col_int64(s, 2) : 0;
    if (c < 0 || m < 0 || v < 0)
        return fb_fail_code(err, FB_STORE_ECORRUPT, "the sandbox records of team %.40s have negative sizes", team_id);
    *u = (fb_quota_usage){(uint64_t)c, (uint64_t)m, (uint64_t)v};
    return 0;
}

/* Counting and inserting happen in one writing transaction: BEGIN
 * IMMEDIATE on SQLite, the writers' advisory lock on PostgreSQL (pg_sql.c),
 * so no other gateway can count between this count and this insert. */
static int sb_reserve(fb_store *st, const fb_sandbox_record *r, const char *node_id, const fb_quota_limits *lim,
                      char *reason, size_t reason_cap, fb_err *err)
{
    if (reason && reason_cap)
        reason[0] = '\0';
    if (!r || !r->id || !r->team_id || !r->backend || !r->created_at || !r->expires_at || !lim)
        return fb_fail_code(err, FB_STORE_EINVAL, "sandbox reservation: missing fields");
    if (r->memory_mib > INT64_MAX || r->vcpus > INT64_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "sandbox %.40s: sizes out of range", r->id);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_sql_durable fb_sql *relaxed = r->local ? fb_sql_relaxed(db) : NULL;
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    fb_quota_usage used = {0}, want = {1, r->memory_mib, r->vcpus};
    rc = team_usage(db, r->team_id, &used, err);
    fb_decision d;
    if (rc == 0 && fb_policy_quota(&used, &want, lim, &d) != FB_ALLOW) {
        fb_sql_rollback(db);
        if (reason && reason_cap)
            snprintf(reason, reason_cap, "%s", d.reason);
        return 1;
    }
    cleanup_stmt fb_sql_stmt *s = NULL;
    if (rc == 0)
        rc = fb_sql_prepare(db,
                            "INSERT INTO sandboxes (id, team_id, key_id, backend, memory_mib, vcpus, state, "
                            "created_at, expires_at, node_id) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'creating', ?7, ?8, ?9)",
                            &s, err);
    if (rc == 0)
        rc = fb_sql_bind_texts(s, err, 4, r->id, r->team_id, r->key_id && r->key_id[0] ? r->key_id : NULL,
                               r->backend);
    if (rc == 0 && (rc = fb_sql_bind_int64(s, 5, (int64_t)r->memory_mib, err)) == 0 &&
        (rc = fb_sql_bind_int64(s, 6, (int64_t)r->vcpus, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 7, r->created_at, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 8, r->expires_at, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 9, node_id ? node_id : st->node_id, err)) == 0)
        rc = fb_sql_run(s, "cannot reserve the sandbox", err);
    if (rc == 0)
        rc = fb_sql_commit(db, err);
    else
        fb_sql_rollback(db);
    return rc;
}

#define ROW_COLUMNS                                                                                                 \
    "id, team_id, COALESCE(key_id, ''), backend, memory_mib, vcpus, state, created_at, expires_at, "                \
    "COALESCE(destroyed_at, ''), node_id"

static int read_row(fb_sql_stmt *s, void *elem)
{
    fb_sandbox_row *r = elem;
    memset(r, 0, sizeof *r);
    int64_t m = fb_sql_col_int64(s, 4), v = fb_sql_col_int64(s, 5);
    if (m < 0 || v < 0)
        return -1;
    r->memory_mib = (uint64_t)m;
    r->vcpus = (uint64_t)v;
    return fb_sql_col_copy(s, 0, r->id, sizeof r->id) < 0 || fb_sql_col_copy(s, 1, r->team_id, sizeof r->team_id) < 0 ||
                   fb_sql_col_copy(s, 2, r->key_id, sizeof r->key_id) < 0 ||
                   fb_sql_col_copy(s, 3, r->backend, sizeof r->backend) < 0 ||
                   fb_sql_col_copy(s, 6, r->state, sizeof r->state) < 0 ||
                   fb_sql_col_copy(s, 7, r->created_at, sizeof r->created_at) < 0 ||
                   fb_sql_col_copy(s, 8, r->expires_at, sizeof r->expires_at) < 0 ||
                   fb_sql_col_copy(s, 9, r->destroyed_at, sizeof r->destroyed_at) < 0 ||
                   fb_sql_col_copy(s, 10, r->node_id, sizeof r->node_id) < 0
               ? -1
               : 0;
}

static int sb_get(fb_store *st, const char *id, fb_sandbox_row *out, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "SELECT " ROW_COLUMNS " FROM sandboxes WHERE id = ?1", &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, id, err)) == 0)
        rc = fb_sql_step(s, "cannot read the sandbox record", err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "no sandbox record %.40s", id);
    if (read_row(s, out) < 0)
        return fb_fail_code(err, FB_STORE_ECORRUPT, "sandbox record %.40s is malformed", id);
    return 0;
}

static int sb_list_all_live(fb_store *st, const char *team_id, fb_sandbox_row **out, size_t *n, fb_err *err)
{
    *out = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT " ROW_COLUMNS " FROM sandboxes WHERE state IN ('creating', 'running') "
                            "AND (?1 IS NULL OR team_id = ?1) ORDER BY created_at, id",
                            &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, team_id, err)) < 0)
        return rc;
    void *rows = NULL;
    rc = fb_sql_collect(s, sizeof(fb_sandbox_row), read_row, &rows, n, "cannot list sandbox records", err);
    *out = rows;
    return rc;
}

static int sb_set_expiry(fb_store *st, const char *id, const char *expires_at, fb_err *err)
{
    if (!id || !expires_at || !*expires_at)
        return fb_fail_code(err, FB_STORE_EINVAL, "sandbox expiry: missing id or time");
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_exec_texts(db,
                               "UPDATE sandboxes SET expires_at = ?1 "
                               "WHERE id = ?2 AND state IN ('creating', 'running')",
                               "cannot update the sandbox expiry", err, 2, expires_at, id);
    if (rc == 0 && fb_sql_changes(db) == 0) {
        rc = fb_sql_exists(db, "SELECT 1 FROM sandboxes WHERE id = ?1", id, err);
        if (rc >= 0)
            rc = rc == 0 ? fb_fail_code(err, FB_STORE_ENOTFOUND, "no sandbox record %.40s", id)
                         : fb_fail_code(err, FB_STORE_ECONFLICT, "sandbox %.40s is no longer live", id);
    }
    return rc;
}

static int sb_activate(fb_store *st, const char *reserved_id, const char *id, const char *created_at,
                       const char *expires_at, fb_err *err)
{
    if (!reserved_id || !id || !*id || !created_at || !expires_at)
        return fb_fail_code(err, FB_STORE_EINVAL, "sandbox activation: missing fields");
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_sql_durable fb_sql *relaxed = fb_sql_relaxed(db);
    int rc = fb_sql_exec_texts(db,
                               "UPDATE sandboxes SET id = ?1, state = 'running', created_at = ?2, expires_at = ?3 "
                               "WHERE id = ?4 AND state = 'creating'",
                               "cannot confirm the sandbox reservation", err, 4, id, created_at, expires_at,
                               reserved_id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = explain_unchanged(db, reserved_id, NULL, err); /* ENOTFOUND, or ECONFLICT: not creating */
    return rc;
}

const fb_sandbox_ops fb_sqlite_sandbox_ops = {
    .insert = sb_insert,
    .set_state = sb_set_state,
    .list_live = sb_list_live,
    .reserve = sb_reserve,
    .get = sb_get,
    .list_all_live = sb_list_all_live,
    .set_expiry = sb_set_expiry,
    .activate = sb_activate,
};
