/*
 * sql.h - private to src/store: a small façade over one SQL connection,
 * used by the repository implementations (sqlite_identity.c,
 * sqlite_sandboxes.c, sqlite_audit.c).
 *
 * Why a façade rather than the SQLite API itself: only sqlite_sql.c sees
 * the library, so no header names it, statement cleanup is defined once
 * (cleanup_stmt below), and every library status is turned into a typed
 * fb_store_status in one place (a primary-key clash is a collision to
 * retry, a unique clash a name that is taken, SQLITE_BUSY is busy, ...).
 *
 * The connection carries the process's store mutex: SQLite serialises
 * writers anyway, and one connection under one mutex keeps transactions
 * simple.  A repository call takes it with fb_sql_lock for the whole of
 * its work (cleanup_sql_unlock releases it on every path), and opens an
 * IMMEDIATE transaction where it writes more than one row.
 */
#ifndef FB_STORE_SQL_H
#define FB_STORE_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "store/store.h"

typedef struct fb_sql fb_sql;           /* one connection and its mutex */
typedef struct fb_sql_stmt fb_sql_stmt; /* one prepared statement */

/* Opens (creating) the database file at path with the settings of
 * sqlite_sql.c and applies the migrations. */
int fb_sql_open(const char *path, fb_sql **out, fb_err *err);
void fb_sql_close(fb_sql *db);
int fb_sql_schema_version(fb_sql *db);
/* SQLite only: fb_store_preallocate_log (takes the lock itself). */
int fb_sql_wal_preallocate(fb_sql *db, fb_err *err);

void fb_sql_lock(fb_sql *db);
void fb_sql_unlock(fb_sql *db);
/* Takes the lock and returns db, for `cleanup_sql_unlock fb_sql *l = fb_sql_locked(db);`. */
fb_sql *fb_sql_locked(fb_sql *db);
void fb_sql_unlockp(fb_sql **db);
#define cleanup_sql_unlock __attribute__((cleanup(fb_sql_unlockp)))

/* Transactions (lock held).  begin is BEGIN IMMEDIATE (the write lock up
 * front); begin_read a plain BEGIN (one consistent snapshot). */
int fb_sql_begin(fb_sql *db, fb_err *err);
int fb_sql_begin_read(fb_sql *db, fb_err *err);
int fb_sql_commit(fb_sql *db, fb_err *err); /* rolls back if COMMIT fails */
void fb_sql_rollback(fb_sql *db);           /* no-op outside a transaction */

/* Commits made durable by the next one that syncs.  Between
 * fb_sql_relaxed and the end of its scope (lock held, outside a
 * transaction: take it before BEGIN, and end every transaction inside),
 * this connection's commits do not sync on their own: on SQLite the
 * connection runs synchronous=NORMAL, and the next commit at FULL (an
 * audit commit) makes them durable with its one fsync of the WAL, which
 * covers every frame written before its own.  The scope's end puts the
 * connection back to FULL and reads it back; a connection that cannot be
 * put back aborts the process rather than commit an audit entry unsynced.
 * Only for writes that a crash of this machine loses without harm: the
 * record of a sandbox this process runs, which dies with it, and which a
 * gateway that starts again reaps (docs/audit.md, "Durability").
 * PostgreSQL: nothing changes (its server can crash while this gateway
 * and its sandboxes live on, so a lost record would be a sandbox outside
 * its team's quota; pg_sql.c).
 *
 *     cleanup_sql_durable fb_sql *relaxed = fb_sql_relaxed(db);
 */
fb_sql *fb_sql_relaxed(fb_sql *db);
void fb_sql_durablep(fb_sql **db);
#define cleanup_sql_durable __attribute__((cleanup(fb_sql_durablep)))

/* Statements.  Every function returns 0 or a negative fb_store_status and
 * names `what` in its message. */
int fb_sql_prepare(fb_sql *db, const char *sql, fb_sql_stmt **out, fb_err *err);
void fb_sql_finalizep(fb_sql_stmt **s);
#define cleanup_stmt __attribute__((cleanup(fb_sql_finalizep)))
/* The same statement prepared once per connection and kept (the hot
 * paths: audit appends): sql must be a string literal (the cache is keyed
 * by its address); lock held from prepare to release.  Released (reset,
 * bindings cleared) instead of finalized: cleanup_cached. */
int fb_sql_prepare_cached(fb_sql *db, const char *sql, fb_sql_stmt **out, fb_err *err);
void fb_sql_releasep(fb_sql_stmt **s);
#define cleanup_cached __attribute__((cleanup(fb_sql_releasep)))

/* Binds parameter i (from 1); text NULL binds SQL NULL. */
int fb_sql_bind_text(fb_sql_stmt *s, int i, const char *text, fb_err *err);
int fb_sql_bind_textn(fb_sql_stmt *s, int i, const char *text, size_t len, fb_err *err);
int fb_sql_bind_int64(fb_sql_stmt *s, int i, int64_t v, fb_err *err);
int fb_sql_bind_blob(fb_sql_stmt *s, int i, const void *p, size_t len, fb_err *err);
/* Binds n texts to parameters 1..n. */
int fb_sql_bind_texts(fb_sql_stmt *s, fb_err *err, int n, ...);

/* 1 for a row, 0 when done, or a negative status: FB_STORE_ECOLLISION
 * (primary key), FB_STORE_EEXISTS (unique), FB_STORE_ENOTFOUND (foreign
 * key), FB_STORE_EBUSY, FB_STORE_ENOMEM, FB_STORE_EIO. */
int fb_sql_step(fb_sql_stmt *s, const char *what, fb_err *err);
/* Steps to the end, expecting no rows (INSERT, UPDATE). */
int fb_sql_run(fb_sql_stmt *s, const char *what, fb_err *err);
/* Rows changed by the last INSERT/UPDATE/DELETE. */
int64_t fb_sql_changes(fb_sql *db);

/* Columns of the current row (i from 0). */
bool fb_sql_col_is_text(fb_sql_stmt *s, int i);
bool fb_sql_col_is_int(fb_sql_stmt *s, int i);
int64_t fb_sql_col_int64(fb_sql_stmt *s, int i);
/* Text and its length (NULL column: "" and 0). */
const char *fb_sql_col_text(fb_sql_stmt *s, int i, size_t *len);
const void *fb_sql_col_blob(fb_sql_stmt *s, int i, size_t *len);
/* Copies a text column (NULL -> ""); -1 if it does not fit in cap. */
int fb_sql_col_copy(fb_sql_stmt *s, int i, char *out, size_t cap);

/* Steps s to the end, reading each row with rd into a growing malloc'd
 * array of elem_size elements (NULL when *n == 0; the caller frees).  At
 * most FB_STORE_LIST_MAX rows (ELIMIT beyond); rd returning -1 is a
 * malformed row (ECORRUPT). */
int fb_sql_collect(fb_sql_stmt *s, size_t elem_size, int (*rd)(fb_sql_stmt *, void *), void **out, size_t *n,
                   const char *what, fb_err *err);
/* A row reader for fb_sql_collect: column 0 into a char[FB_ID_MAX]. */
int fb_sql_read_id(fb_sql_stmt *s, void *elem);

/* Prepares, binds n texts and runs a statement that returns no rows. */
int fb_sql_exec_texts(fb_sql *db, const char *sql, const char *what, fb_err *err, int n, ...);
/* 1 if the query (one text parameter, or none when param is NULL) returns
 * a row, 0 if not, negative on error. */
int fb_sql_exists(fb_sql *db, const char *sql, const char *param, fb_err *err);

/* Tells the other processes sharing the database that something under
 * channel changed (lock held; inside the transaction making the change,
 * so it is delivered when, and only if, the change commits).  PostgreSQL:
 * NOTIFY, heard by fb_store_watch_identity's listeners; SQLite: nothing
 * (one database, one gateway). */
int fb_sql_notify(fb_sql *db, const char *channel, fb_err *err);

#endif
