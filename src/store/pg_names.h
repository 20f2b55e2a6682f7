/*
 * pg_names.h - private to src/store: renames the sql.h façade and the
 * repository tables for the PostgreSQL build of the SQL repositories.
 *
 * The repositories (sqlite_identity.c, sqlite_sandboxes.c, sqlite_audit.c,
 * sqlite_tasks.c, sqlite_sessions.c, sqlite_nodes.c) only speak sql.h, and their SQL is the
 * common subset of SQLite and PostgreSQL (pg_sql.c translates the parameter
 * markers).  Rather than keep a second copy of every repository, the
 * Makefile compiles each of them a second time with `-include
 * store/pg_names.h` into build/obj/pg/: the façade calls then resolve to
 * pg_sql.c (the same sql.h implemented over libpq) and the tables they fill
 * are the PostgreSQL engine's (pg_store.c).  pg_sql.c includes this header
 * too, so it defines exactly the renamed functions.
 */
#ifndef FB_STORE_PG_NAMES_H
#define FB_STORE_PG_NAMES_H

#define fb_sql_open fb_pgsql_open
#define fb_sql_close fb_pgsql_close
#define fb_sql_schema_version fb_pgsql_schema_version
#define fb_sql_lock fb_pgsql_lock
#define fb_sql_unlock fb_pgsql_unlock
#define fb_sql_locked fb_pgsql_locked
#define fb_sql_unlockp fb_pgsql_unlockp
#define fb_sql_begin fb_pgsql_begin
#define fb_sql_begin_read fb_pgsql_begin_read
#define fb_sql_commit fb_pgsql_commit
#define fb_sql_rollback fb_pgsql_rollback
#define fb_sql_relaxed fb_pgsql_relaxed
#define fb_sql_durablep fb_pgsql_durablep
#define fb_sql_prepare fb_pgsql_prepare
#define fb_sql_finalizep fb_pgsql_finalizep
#define fb_sql_prepare_cached fb_pgsql_prepare_cached
#define fb_sql_releasep fb_pgsql_releasep
#define fb_sql_bind_text fb_pgsql_bind_text
#define fb_sql_bind_textn fb_pgsql_bind_textn
#define fb_sql_bind_int64 fb_pgsql_bind_int64
#define fb_sql_bind_blob fb_pgsql_bind_blob
#define fb_sql_bind_texts fb_pgsql_bind_texts
#define fb_sql_step fb_pgsql_step
#define fb_sql_run fb_pgsql_run
#define fb_sql_changes fb_pgsql_changes
#define fb_sql_col_is_text fb_pgsql_col_is_text
#define fb_sql_col_is_int fb_pgsql_col_is_int
#define fb_sql_col_int64 fb_pgsql_col_int64
#define fb_sql_col_text fb_pgsql_col_text
#define fb_sql_col_blob fb_pgsql_col_blob
#define fb_sql_col_copy fb_pgsql_col_copy
#define fb_sql_collect fb_pgsql_collect
#define fb_sql_read_id fb_pgsql_read_id
#define fb_sql_exec_texts fb_pgsql_exec_texts
#define fb_sql_exists fb_pgsql_exists
#define fb_sql_notify fb_pgsql_notify

#define fb_sqlite_identity_ops fb_pg_identity_ops
#define fb_sqlite_sandbox_ops fb_pg_sandbox_ops
#define fb_sqlite_audit_ops fb_pg_audit_ops
#define fb_sqlite_task_ops fb_pg_task_ops
#define fb_sqlite_session_ops fb_pg_session_ops
#define fb_sqlite_node_ops fb_pg_node_ops

#endif
