/*
 * pg_store.c - the PostgreSQL engine behind store.h: connecting to the
 * database the store URL names and the engine table that points at the SQL
 * repositories built for PostgreSQL (pg_names.h, pg_sql.c).
 *
 * Several gateways share one PostgreSQL database; each keeps its own state
 * directory (its node id, and copies of the key pepper and audit key).
 * Identity changes reach the other gateways through LISTEN/NOTIFY
 * (pg_listen.c, fb_sql_notify).
 */
#include "store/backend.h"
#include "store/pg_names.h"
#include "store/pg_sql.h"
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
    fb_pg_listen_stop(st->listener);
    st->listener = NULL;
    fb_sql_close(st->impl);
    st->impl = NULL;
}

static int pg_version(fb_store *st)
{
    return fb_sql_schema_version(st->impl);
}

static int pg_watch_identity(fb_store *st, fb_store_watch_fn fn, void *ctx, fb_err *err)
{
    if (st->listener)
        return fb_fail_code(err, FB_STORE_EINVAL, "the store already has an identity watch");
    return fb_pg_listen_start(st->url, FB_STORE_IDENTITY_CHANNEL, fn, ctx, &st->listener, err) < 0
               ? FB_STORE_EIO
               : 0;
}

const fb_store_engine fb_pg_engine = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .schema_version = pg_version,
    .watch_identity = pg_watch_identity,
    .identity = &fb_pg_identity_ops,
    .sandboxes = &fb_pg_sandbox_ops,
    .audit = &fb_pg_audit_pipelined_ops,
    .tasks = &fb_pg_task_ops,
    .sessions = &fb_pg_session_ops,
    .nodes = &fb_pg_node_ops,
};
