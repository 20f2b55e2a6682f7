/*
 * sqlite_tasks.c - the task repository (tasks.h) on SQLite: the tasks
 * table, its numbered events and its approvals (migration 004).
 *
 * The columns are the record's fields in one fixed order (COLS below), so
 * that insert, get and list bind and read them in one place each.  A
 * state is checked against the list of task states before SQL sees it
 * (the table's CHECK is the second line of defence), and an approval is
 * decided with "WHERE state = 'pending'": two people deciding at once
 * cannot both win, the second gets ECONFLICT.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "store/backend.h"
#include "store/sql.h"

#define COLS                                                                                                      \
    "id, team_id, user_id, key_id, provider, model, backend, prompt, system, tools, approvals, network, limits, " \
    "usage, state, result, error, sandbox_id, created_at, started_at, finished_at, conversation"

static bool task_state_ok(const char *s)
{
    static const char *const states[] = {"queued",    "running",   "waiting_approval", "succeeded",
                                         "failed",    "cancelled", "budget_exceeded"};
    for (size_t i = 0; s && i < sizeof states / sizeof states[0]; i++)
        if (strcmp(s, states[i]) == 0)
            return true;
    return false;
}

static const char *or_null(const char *s)
{
    return s && s[0] ? s : NULL;
}

/* A text column as a malloc'd string; NULL for SQL NULL.  -1: no memory. */
static int col_dup(fb_sql_stmt *s, int i, char **out)
{
    *out = NULL;
    if (!fb_sql_col_is_text(s, i))
        return 0;
    size_t n = 0;
    const char *t = fb_sql_col_text(s, i, &n);
    *out = strndup(t, n);
    return *out ? 0 : -1;
}

/* Reads a row of COLS (conversation only when with_conv). */
static int read_task(fb_sql_stmt *s, fb_task_record *r, bool with_conv)
{
    memset(r, 0, sizeof *r);
    if (fb_sql_col_copy(s, 0, r->id, sizeof r->id) < 0 || fb_sql_col_copy(s, 1, r->team_id, sizeof r->team_id) < 0 ||
        fb_sql_col_copy(s, 2, r->user_id, sizeof r->user_id) < 0 ||
        fb_sql_col_copy(s, 3, r->key_id, sizeof r->key_id) < 0 ||
        fb_sql_col_copy(s, 4, r->provider, sizeof r->provider) < 0 ||
        fb_sql_col_copy(s, 5, r->model, sizeof r->model) < 0 ||
        fb_sql_col_copy(s, 6, r->backend, sizeof r->backend) < 0 ||
        fb_sql_col_copy(s, 14, r->state, sizeof r->state) < 0 ||
        fb_sql_col_copy(s, 17, r->sandbox_id, sizeof r->sandbox_id) < 0 ||
        fb_sql_col_copy(s, 18, r->created_at, sizeof r->created_at) < 0 ||
        fb_sql_col_copy(s, 19, r->started_at, sizeof r->started_at) < 0 ||
        fb_sql_col_copy(s, 20, r->finished_at, sizeof r->finished_at) < 0)
        return -1;
    char **texts[] = {&r->prompt, &r->system, &r->tools, &r->approvals, &r->network,
                      &r->limits, &r->usage,  &r->result, &r->error};
    static const int cols[] = {7, 8, 9, 10, 11, 12, 13, 15, 16};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        if (col_dup(s, cols[i], texts[i]) < 0) {
            fb_task_record_clear(r);
            return -1;
        }
    if (with_conv && col_dup(s, 21, &r->conversation) < 0) {
        fb_task_record_clear(r);
        return -1;
    }
    if (!r->prompt || !r->tools || !r->approvals || !r->limits || !r->usage) {
        fb_task_record_clear(r);
        return -1;
    }
    return 0;
}

static int t_insert(fb_store *st, const fb_task_record *r, fb_err *err)
{
    if (!task_state_ok(r->state))
        return fb_fail_code(err, FB_STORE_EINVAL, "no task state '%.32s'", r->state);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "INSERT INTO tasks (" COLS ", node_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                            "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
                            &s, err);
    if (rc == 0)
        rc = fb_sql_bind_texts(s, err, 23, r->id, r->team_id, r->user_id, or_null(r->key_id), r->provider, r->model,
                               r->backend, r->prompt, r->system, r->tools, r->approvals, r->network, r->limits,
                               r->usage, r->state, r->result, r->error, or_null(r->sandbox_id), r->created_at,
                               or_null(r->started_at), or_null(r->finished_at), r->conversation, st->node_id);
    if (rc == 0)
        rc = fb_sql_run(s, "cannot record the task", err);
    return rc;
}

static int t_update(fb_store *st, const fb_task_record *r, fb_err *err)
{
    if (!task_state_ok(r->state))
        return fb_fail_code(err, FB_STORE_EINVAL, "no task state '%.32s'", r->state);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_exec_texts(db,
                               "UPDATE tasks SET state = ?1, sandbox_id = ?2, started_at = ?3, finished_at = ?4, "
                               "usage = ?5, result = ?6, error = ?7, conversation = COALESCE(?8, conversation) "
                               "WHERE id = ?9",
                               "cannot update the task", err, 9, r->state, or_null(r->sandbox_id),
                               or_null(r->started_at), or_null(r->finished_at), r->usage, r->result, r->error,
                               r->conversation, r->id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = fb_fail_code(err, FB_STORE_ENOTFOUND, "no task %.40s", r->id);
    return rc;
}

static int t_get(fb_store *st, const char *id, fb_task_record *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "SELECT " COLS " FROM tasks WHERE id = ?1", &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, id, err)) < 0 || (rc = fb_sql_step(s, "cannot read the task", err)) < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "no task %.40s", id);
    if (read_task(s, out, true) < 0)
        return fb_fail_code(err, FB_STORE_ECORRUPT, "task %.40s: malformed row", id);
    return 0;
}

static int t_list(fb_store *st, const char *team_id, fb_task_record **out, size_t *n, fb_err *err)
{
    *out = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT " COLS " FROM tasks WHERE ?1 IS NULL OR team_id = ?1 "
                            "ORDER BY created_at DESC, id DESC",
                            &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, team_id, err)) < 0)
        return rc;
    fb_task_record *recs = NULL;
    size_t cap = 0, k = 0;
    while ((rc = fb_sql_step(s, "cannot list tasks", err)) == 1) {
        if (k == FB_STORE_LIST_MAX) {
            rc = fb_fail_code(err, FB_STORE_ELIMIT, "more than %d tasks", FB_STORE_LIST_MAX);
            break;
        }
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            fb_task_record *nr = realloc(recs, ncap * sizeof *nr);
            if (!nr) {
                rc = fb_fail_code(err, FB_STORE_ENOMEM, "out of memory listing tasks");
                break;
            }
            recs = nr;
            cap = ncap;
        }
        if (read_task(s, &recs[k], false) < 0) {
            rc = fb_fail_code(err, FB_STORE_ECORRUPT, "a task row is malformed");
            break;
        }
        k++;
    }
    if (rc < 0) {
        fb_task_records_free(recs, k);
        return rc;
    }
    *out = k ? recs : NULL;
    if (!k)
        free(recs);
    *n = k;
    return 0;
}

static int t_list_unfinished(fb_store *st, char (**ids)[FB_ID_MAX], size_t *n, fb_err *err)
{
    *ids = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT id FROM tasks WHERE state IN ('queued', 'running', 'waiting_approval') "
                            "AND node_id = ?1 ORDER BY created_at, id",
                            &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, st->node_id, err)) < 0)
        return rc;
    void *out = NULL;
    rc = fb_sql_collect(s, FB_ID_MAX, fb_sql_read_id, &out, n, "cannot list unfinished tasks", err);
    *ids = out;
    return rc;
}

/* ---- events ----------------------------------------------------------------------- */

static int insert_event(fb_sql *db, const fb_task_event_row *e, fb_err *err)
{
    if (e->seq == 0 || e->seq > INT64_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "event sequence number out of range");
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "INSERT INTO task_events (task_id, seq, type, data, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                            &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, e->task_id, err)) == 0 &&
        (rc = fb_sql_bind_int64(s, 2, (int64_t)e->seq, err)) == 0 && (rc = fb_sql_bind_text(s, 3, e->type, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 4, e->data, err)) == 0 && (rc = fb_sql_bind_text(s, 5, e->at, err)) == 0)
        rc = fb_sql_run(s, "cannot record the task event", err);
    return rc;
}

static int t_event_append(fb_store *st, const char *task_id, uint64_t seq, const char *type, const char *data,
                          const char *at, fb_err *err)
{
    fb_task_event_row row = {task_id, seq, type, data, at};
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    return insert_event(db, &row, err);
}

static int t_events_append(fb_store *st, const fb_task_event_row *rows, size_t n, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin(db, err);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = insert_event(db, &rows[i], err);
    if (rc == 0)
        return fb_sql_commit(db, err);
    fb_sql_rollback(db);
    return rc;
}

static int t_events(fb_store *st, const char *task_id, uint64_t after, unsigned limit, fb_task_event_fn each,
                    void *ctx, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT seq, type, data, at FROM task_events WHERE task_id = ?1 AND seq > ?2 "
                            "ORDER BY seq LIMIT ?3",
                            &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, task_id, err)) == 0 &&
        (rc = fb_sql_bind_int64(s, 2, after > INT64_MAX ? INT64_MAX : (int64_t)after, err)) == 0)
        rc = fb_sql_bind_int64(s, 3, limit, err);
    while (rc == 0 && (rc = fb_sql_step(s, "cannot read task events", err)) == 1) {
        rc = 0;
        if (each(ctx, (uint64_t)fb_sql_col_int64(s, 0), fb_sql_col_text(s, 1, NULL), fb_sql_col_text(s, 2, NULL),
                 fb_sql_col_text(s, 3, NULL)) != 0)
            break;
    }
    return rc < 0 ? rc : 0;
}

static int t_event_last(fb_store *st, const char *task_id, uint64_t *seq, fb_err *err)
{
    *seq = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "SELECT COALESCE(MAX(seq), 0) FROM task_events WHERE task_id = ?1", &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, task_id, err)) < 0 ||
        (rc = fb_sql_step(s, "cannot read task events", err)) < 0)
        return rc;
    *seq = rc == 1 ? (uint64_t)fb_sql_col_int64(s, 0) : 0;
    return 0;
}

/* ---- approvals -------------------------------------------------------------------------- */

static int a_insert(fb_store *st, const fb_task_approval_record *a, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    return fb_sql_exec_texts(db,
                             "INSERT INTO task_approvals (id, task_id, call_id, tool, input, state, created_at, "
                             "expires_at) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
                             "cannot record the approval", err, 7, a->id, a->task_id, a->call_id, a->tool,
                             a->input ? a->input : "null", a->created_at, a->expires_at);
}

static int a_decide(fb_store *st, const char *task_id, const char *id, const char *state, const char *decided_by,
                    const char *reason, const char *at, fb_err *err)
{
    if (!state || (strcmp(state, "approved") != 0 && strcmp(state, "denied") != 0 && strcmp(state, "expired") != 0))
        return fb_fail_code(err, FB_STORE_EINVAL, "no approval decision '%.32s'", state ? state : "(null)");
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_exec_texts(db,
                               "UPDATE task_approvals SET state = ?1, decided_by = ?2, reason = ?3, decided_at = ?4 "
                               "WHERE id = ?5 AND task_id = ?6 AND state = 'pending'",
                               "cannot record the decision", err, 6, state, or_null(decided_by), reason, at, id,
                               task_id);
    if (rc < 0 || fb_sql_changes(db) > 0)
        return rc;
    rc = fb_sql_exists(db, "SELECT 1 FROM task_approvals WHERE id = ?1", id, err);
    if (rc < 0)
        return rc;
    return rc ? fb_fail_code(err, FB_STORE_ECONFLICT, "approval %.40s is no longer pending", id)
              : fb_fail_code(err, FB_STORE_ENOTFOUND, "no approval %.40s", id);
}

static int read_approval(fb_sql_stmt *s, fb_task_approval_record *a)
{
    memset(a, 0, sizeof *a);
    if (fb_sql_col_copy(s, 0, a->id, sizeof a->id) < 0 || fb_sql_col_copy(s, 1, a->task_id, sizeof a->task_id) < 0 ||
        fb_sql_col_copy(s, 2, a->call_id, sizeof a->call_id) < 0 || fb_sql_col_copy(s, 3, a->tool, sizeof a->tool) < 0 ||
        fb_sql_col_copy(s, 5, a->state, sizeof a->state) < 0 ||
        fb_sql_col_copy(s, 6, a->created_at, sizeof a->created_at) < 0 ||
        fb_sql_col_copy(s, 7, a->expires_at, sizeof a->expires_at) < 0 ||
        fb_sql_col_copy(s, 8, a->decided_at, sizeof a->decided_at) < 0 ||
        fb_sql_col_copy(s, 9, a->decided_by, sizeof a->decided_by) < 0)
        return -1;
    if (col_dup(s, 4, &a->input) < 0 || col_dup(s, 10, &a->reason) < 0 || !a->input) {
        free(a->input);
        free(a->reason);
        return -1;
    }
    return 0;
}

static int a_list(fb_store *st, const char *task_id, fb_task_approval_record **out, size_t *n, fb_err *err)
{
    *out = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT id, task_id, call_id, tool, input, state, created_at, expires_at, decided_at, "
                            "decided_by, reason FROM task_approvals WHERE task_id = ?1 ORDER BY created_at, id",
                            &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, task_id, err)) < 0)
        return rc;
    fb_task_approval_record *v = NULL;
    size_t k = 0, cap = 0;
    while ((rc = fb_sql_step(s, "cannot list approvals", err)) == 1) {
        if (k == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            fb_task_approval_record *nv = k < FB_STORE_LIST_MAX ? realloc(v, ncap * sizeof *nv) : NULL;
            if (!nv) {
                rc = fb_fail_code(err, FB_STORE_ENOMEM, "out of memory listing approvals");
                break;
            }
            v = nv;
            cap = ncap;
        }
        if (read_approval(s, &v[k]) < 0) {
            rc = fb_fail_code(err, FB_STORE_ECORRUPT, "an approval row is malformed");
            break;
        }
        k++;
    }
    if (rc < 0) {
        fb_task_approvals_free(v, k);
        return rc;
    }
    if (!k) {
        free(v);
        v = NULL;
    }
    *out = v;
    *n = k;
    return 0;
}

static int a_expire_all(fb_store *st, const char *task_id, const char *at, size_t *n, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_exec_texts(db,
                               "UPDATE task_approvals SET state = 'expired', decided_at = ?1 "
                               "WHERE task_id = ?2 AND state = 'pending'",
                               "cannot expire approvals", err, 2, at, task_id);
    *n = rc == 0 ? (size_t)fb_sql_changes(db) : 0;
    return rc;
}

const fb_task_ops fb_sqlite_task_ops = {
    .insert = t_insert,
    .update = t_update,
    .get = t_get,
    .list = t_list,
    .list_unfinished = t_list_unfinished,
    .event_append = t_event_append,
    .events_append = t_events_append,
    .events = t_events,
    .event_last = t_event_last,
    .approval_insert = a_insert,
    .approval_decide = a_decide,
    .approval_list = a_list,
    .approval_expire_all = a_expire_all,
};
