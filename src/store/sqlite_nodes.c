/*
 * sqlite_nodes.c - the node repository (store/nodes.h) on SQLite, and on
 * PostgreSQL when compiled a second time with pg_names.h (migration 006).
 *
 * Why here and not in core: registering (a name taken over, the node's
 * old records lost) and expiring (nodes down, their records lost) each
 * change several rows that must agree, so each is one writing transaction
 * - BEGIN IMMEDIATE on SQLite, the writers' advisory lock on PostgreSQL
 * (pg_sql.c) - and two gateways expiring at once mark each sandbox lost
 * exactly once, each reporting only what it marked.
 *
 * Heartbeats are unix seconds of the writing process's clock, compared as
 * integers; the RFC 3339 heartbeat_at beside them is for people.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/time.h"
#include "store/backend.h"
#include "store/nodes.h"
#include "store/sql.h"

/* Live records of a node, their number and memory (a correlated subquery
 * on sandboxes(node_id, state)). */
#define NODE_COLUMNS                                                                                                \
    "n.id, n.name, n.address, n.backend, n.isolation, n.capacity, n.memory_mib, n.state, n.registered_at, "         \
    "n.heartbeat_at, n.heartbeat_unix, "                                                                            \
    "(SELECT COUNT(*) FROM sandboxes s WHERE s.node_id = n.id AND s.state IN ('creating', 'running')), "           \
    "(SELECT COALESCE(SUM(s.memory_mib), 0) FROM sandboxes s WHERE s.node_id = n.id "                               \
    "AND s.state IN ('creating', 'running'))"

static int64_t now_unix(void)
{
    return (int64_t)time(NULL);
}

static int read_node(fb_sql_stmt *s, void *elem)
{
    fb_node_record *r = elem;
    memset(r, 0, sizeof *r);
    int64_t cap = fb_sql_col_int64(s, 5), mem = fb_sql_col_int64(s, 6), live = fb_sql_col_int64(s, 11),
            live_mem = fb_sql_col_int64(s, 12);
    if (cap < 0 || mem < 0 || live < 0 || live_mem < 0)
        return -1;
    r->capacity = (uint64_t)cap;
    r->memory_mib = (uint64_t)mem;
    r->heartbeat_unix = fb_sql_col_int64(s, 10);
    r->live = (uint64_t)live;
    r->live_memory_mib = (uint64_t)live_mem;
    return fb_sql_col_copy(s, 0, r->id, sizeof r->id) < 0 || fb_sql_col_copy(s, 1, r->name, sizeof r->name) < 0 ||
                   fb_sql_col_copy(s, 2, r->address, sizeof r->address) < 0 ||
                   fb_sql_col_copy(s, 3, r->backend, sizeof r->backend) < 0 ||
                   fb_sql_col_copy(s, 4, r->isolation, sizeof r->isolation) < 0 ||
                   fb_sql_col_copy(s, 7, r->state, sizeof r->state) < 0 ||
                   fb_sql_col_copy(s, 8, r->registered_at, sizeof r->registered_at) < 0 ||
                   fb_sql_col_copy(s, 9, r->heartbeat_at, sizeof r->heartbeat_at) < 0
               ? -1
               : 0;
}

/* A field that must be present and fit its column (cap includes the NUL). */
static bool field_ok(const char *v, size_t cap)
{
    return v && *v && strnlen(v, cap) < cap;
}

static int cmp_id(const void *a, const void *b);

static int n_register(fb_store *st, const fb_node_record *r, char (**lost)[FB_ID_MAX], size_t *nlost, fb_err *err)
{
    if (lost)
        *lost = NULL;
    if (nlost)
        *nlost = 0;
    if (!r || !field_ok(r->id, sizeof r->id) || !field_ok(r->name, sizeof r->name) ||
        !field_ok(r->address, sizeof r->address) || !field_ok(r->isolation, sizeof r->isolation))
        return fb_fail_code(err, FB_STORE_EINVAL, "node registration: id, name, address and isolation are required");
    if (strcmp(r->backend, "vm") != 0 && strcmp(r->backend, "jail") != 0)
        return fb_fail_code(err, FB_STORE_EINVAL, "node %.72s: backend must be vm or jail", r->name);
    if (r->capacity > INT64_MAX || r->memory_mib > INT64_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "node %.72s: capacity or memory out of range", r->name);
    char now[FB_TIME_MAX];
    fb_time_now(now);
    int64_t unix_now = now_unix();

    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    /* Another node, up, under this name: refused.  A down or stopped one's
     * row gives its name over (its records keep their node id). */
    {
        cleanup_stmt fb_sql_stmt *s = NULL;
        rc = fb_sql_prepare(db, "SELECT id FROM nodes WHERE name = ?1 AND id <> ?2 AND state = 'up'", &s, err);
        if (rc == 0 && (rc = fb_sql_bind_texts(s, err, 2, r->name, r->id)) == 0)
            rc = fb_sql_step(s, "cannot look the node name up", err);
        if (rc == 1) {
            char other[FB_STORE_NODE_ID_MAX];
            fb_sql_col_copy(s, 0, other, sizeof other);
            rc = fb_fail_code(err, FB_STORE_ECOLLISION, "node name %.72s is held by node %s, which is up", r->name,
                              other);
        }
    }
    if (rc == 0)
        rc = fb_sql_exec_texts(db, "DELETE FROM nodes WHERE id = ?1 OR name = ?2", "cannot replace the node", err, 2,
                               r->id, r->name);
    /* A node that starts holds nothing: what its id held is lost (and
     * reported one by one, for the caller's audit). */
    void *ids = NULL;
    size_t nids = 0;
    if (rc == 0) {
        cleanup_stmt fb_sql_stmt *u = NULL;
        rc = fb_sql_prepare(db,
                            "UPDATE sandboxes SET state = 'lost', destroyed_at = ?1 "
                            "WHERE node_id = ?2 AND state IN ('creating', 'running') RETURNING id",
                            &u, err);
        if (rc == 0 && (rc = fb_sql_bind_texts(u, err, 2, now, r->id)) == 0)
            rc = fb_sql_collect(u, FB_ID_MAX, fb_sql_read_id, &ids, &nids, "cannot mark the node's sandboxes lost",
                                err);
        if (rc == 0 && nids > 1)
            qsort(ids, nids, FB_ID_MAX, cmp_id);
    }
    cleanup_stmt fb_sql_stmt *s = NULL;
    if (rc == 0)
        rc = fb_sql_prepare(db,
                            "INSERT INTO nodes (id, name, address, backend, isolation, capacity, memory_mib, state, "
                            "registered_at, heartbeat_at, heartbeat_unix) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'up', ?8, ?8, ?9)",
                            &s, err);
    if (rc == 0 && (rc = fb_sql_bind_texts(s, err, 5, r->id, r->name, r->address, r->backend, r->isolation)) == 0 &&
        (rc = fb_sql_bind_int64(s, 6, (int64_t)r->capacity, err)) == 0 &&
        (rc = fb_sql_bind_int64(s, 7, (int64_t)r->memory_mib, err)) == 0 &&
        (rc = fb_sql_bind_text(s, 8, now, err)) == 0 && (rc = fb_sql_bind_int64(s, 9, unix_now, err)) == 0)
        rc = fb_sql_run(s, "cannot register the node", err);
    if (rc == 0)
        rc = fb_sql_commit(db, err);
    else
        fb_sql_rollback(db);
    if (rc < 0) {
        free(ids);
        return rc;
    }
    if (nlost)
        *nlost = nids;
    if (lost && nids)
        *lost = ids;
    else
        free(ids);
    return rc;
}

/* One statement: a concurrent expiry either ran before (state is no longer
 * 'up': nothing written) or runs after (and sees this heartbeat). */
static int n_heartbeat(fb_store *st, const char *node_id, bool *still_up, fb_err *err)
{
    *still_up = false;
    char now[FB_TIME_MAX];
    fb_time_now(now);
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "UPDATE nodes SET heartbeat_at = ?1, heartbeat_unix = ?2 WHERE id = ?3 AND state = 'up'",
                            &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, now, err)) == 0 &&
        (rc = fb_sql_bind_int64(s, 2, now_unix(), err)) == 0 && (rc = fb_sql_bind_text(s, 3, node_id, err)) == 0)
        rc = fb_sql_run(s, "cannot write the node's heartbeat", err);
    if (rc == 0)
        *still_up = fb_sql_changes(db) > 0;
    return rc;
}

static int n_stop(fb_store *st, const char *node_id, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_exec_texts(db, "UPDATE nodes SET state = 'stopped' WHERE id = ?1", "cannot stop the node", err, 1,
                               node_id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = fb_fail_code(err, FB_STORE_ENOTFOUND, "no node %.40s", node_id);
    return rc;
}

static int n_list(fb_store *st, fb_node_record **out, size_t *n, fb_err *err)
{
    *out = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT " NODE_COLUMNS " FROM nodes n "
                            "ORDER BY CASE WHEN n.state = 'up' THEN 0 ELSE 1 END, n.name",
                            &s, err);
    if (rc < 0)
        return rc;
    void *rows = NULL;
    rc = fb_sql_collect(s, sizeof(fb_node_record), read_node, &rows, n, "cannot list the nodes", err);
    *out = rows;
    return rc;
}

static int n_get(fb_store *st, const char *node_id, fb_node_record *out, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "SELECT " NODE_COLUMNS " FROM nodes n WHERE n.id = ?1", &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, node_id, err)) == 0)
        rc = fb_sql_step(s, "cannot read the node", err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "no node %.40s", node_id);
    if (read_node(s, out) < 0)
        return fb_fail_code(err, FB_STORE_ECORRUPT, "node %.40s: its row is malformed", node_id);
    return 0;
}

/* Runs sql (one int64 parameter ?1) in the transaction. */
static int exec_with_cutoff(fb_sql *db, const char *sql, int64_t cutoff, const char *what, fb_err *err)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, sql, &s, err);
    if (rc == 0)
        rc = fb_sql_bind_int64(s, 1, cutoff, err);
    return rc == 0 ? fb_sql_run(s, what, err) : rc;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int n_expire(fb_store *st, uint64_t down_after_s, size_t *nodes_down, char (**lost)[FB_ID_MAX], size_t *nlost,
                    fb_err *err)
{
    *nodes_down = 0;
    *lost = NULL;
    *nlost = 0;
    if (down_after_s > INT32_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "node expiry: %llu seconds is out of range",
                            (unsigned long long)down_after_s);
    char now[FB_TIME_MAX];
    fb_time_now(now);
    int64_t cutoff = now_unix() - (int64_t)down_after_s; /* older than: heartbeat_unix < cutoff */

    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    /* One statement marks and reports: a record another writer ended in
     * between (set_state takes no lock) is neither marked nor reported. */
    void *ids = NULL;
    {
        cleanup_stmt fb_sql_stmt *s = NULL;
        rc = fb_sql_prepare(db,
                            "UPDATE sandboxes SET state = 'lost', destroyed_at = ?2 "
                            "WHERE state IN ('creating', 'running') AND node_id IN "
                            "(SELECT id FROM nodes WHERE state = 'up' AND heartbeat_unix < ?1) RETURNING id",
                            &s, err);
        if (rc == 0 && (rc = fb_sql_bind_int64(s, 1, cutoff, err)) == 0 && (rc = fb_sql_bind_text(s, 2, now, err)) == 0)
            rc = fb_sql_collect(s, FB_ID_MAX, fb_sql_read_id, &ids, nlost,
                                "cannot mark the sandboxes of silent nodes lost", err);
    }
    if (rc == 0 && *nlost > 1)
        qsort(ids, *nlost, FB_ID_MAX, cmp_id);
    if (rc == 0)
        rc = exec_with_cutoff(db, "UPDATE nodes SET state = 'down' WHERE state = 'up' AND heartbeat_unix < ?1", cutoff,
                              "cannot mark silent nodes down", err);
    if (rc == 0)
        *nodes_down = (size_t)fb_sql_changes(db);
    if (rc == 0)
        rc = fb_sql_commit(db, err);
    else
        fb_sql_rollback(db);
    if (rc < 0) {
        free(ids);
        *nlost = 0;
        *nodes_down = 0;
        return rc;
    }
    *lost = ids;
    return 0;
}

const fb_node_ops fb_sqlite_node_ops = {
    .reg = n_register,
    .heartbeat = n_heartbeat,
    .stop = n_stop,
    .list = n_list,
    .get = n_get,
    .expire = n_expire,
};
