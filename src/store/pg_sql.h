/*
 * pg_sql.h - private to the PostgreSQL engine (src/store/pg_*.c): what
 * pg_sql.c offers beyond the sql.h façade, for code that only ever runs
 * on PostgreSQL (pg_audit.c).
 *
 * Why: on PostgreSQL every statement is a network round trip to the server,
 * and a round trip costs more than the statement.  A pipeline sends several
 * statements (and optionally the transaction's BEGIN, writer lock and
 * COMMIT) in one flush and reads all their results after one wait.
 * Statements sent through a pipeline are prepared once per connection
 * (named server-side statements), so the server parses and plans them once.
 */
#ifndef FB_STORE_PG_SQL_H
#define FB_STORE_PG_SQL_H

#include "store/audit_log.h"
#include "store/backend.h"
#include "store/pg_names.h"
#include "store/sql.h"

enum {
    FB_PG_BEGIN = 1,  /* open a writing transaction first (fb_sql_begin: BEGIN + the writer lock) */
    FB_PG_COMMIT = 2, /* COMMIT after the statements */
};

/* Sends the n statements (prepared with fb_sql_prepare and bound) in one
 * round trip, lock held, with BEGIN/COMMIT per flags; afterwards each
 * statement's rows are read with fb_sql_step and the fb_sql_col_* calls,
 * and fb_pg_stmt_changes tells what an INSERT/UPDATE changed.  On any
 * failure nothing of it is kept: the transaction (this pipeline's or the
 * one it continued) is rolled back, and the first failing statement's
 * status is returned with what in its message.  A connection that broke is
 * never retried here (the COMMIT may have happened). */
int fb_pg_pipeline(fb_sql *db, unsigned flags, fb_sql_stmt *const *stmts, size_t n, const char *what,
                   fb_err *err);
/* Rows changed by s when it ran in a pipeline (INSERT/UPDATE/DELETE). */
int64_t fb_pg_stmt_changes(const fb_sql_stmt *s);

/* The audit chain's ends as this connection last committed them
 * (pg_audit.c), kept with the connection: a reconnection forgets them. */
typedef struct fb_pg_audit_ends {
    bool valid;
    fb_audit_head head;
    fb_audit_tail tail;
} fb_pg_audit_ends;
fb_pg_audit_ends *fb_pg_audit_ends_of(fb_sql *db);

/* The PostgreSQL engine's audit repository (pg_audit.c): the append in
 * one or two round trips, the rest sqlite_audit.c's. */
extern const fb_audit_ops fb_pg_audit_pipelined_ops;

#endif
