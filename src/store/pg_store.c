/*
 * pg_store.c - the PostgreSQL engine behind store.h: connecting to the
 * database the store URL names and the engine table that points at the SQL
 * repositories built for PostgreSQL (pg_names.h, pg_sql.c).
 *
 * Several gateways share one PostgreSQL database; each keeps its own state
 * directory (its node id, and copies of the key pepper and audit key).
 */
#include "store/backend.h"
#include "store/pg_names.h"
#include "store/sql.h"

static int pg_open(fb_store *st, const char *state_dir, fb_err *err)
{
    (void)state_dir;
    fb_sql *db = NULL;
    if (fb_sql_open(st->url, &db, err) < 0)
        return -1;
    st->impl = db;
    return 0;
}

static void pg_close(fb_store *st)
{
    fb_sql_close(st->impl);
    st->impl = NULL;
}

static int pg_version(fb_store *st)
{
    return fb_sql_schema_version(st->impl);
}

const fb_store_engine fb_pg_engine = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .schema_version = pg_version,
    .identity = &fb_pg_identity_ops,
    .sandboxes = &fb_pg_sandbox_ops,
    .audit = &fb_pg_audit_ops,
    .tasks = &fb_pg_task_ops,
    .sessions = &fb_pg_session_ops,
    .nodes = &fb_pg_node_ops,
};
