/*
 * store.h - the storage interface: where ForgeBox keeps teams, users, API
 * keys, sandbox records and the audit log.
 *
 * Callers never see SQL or a database handle.  They call repositories,
 * each a header of functions taking an fb_store:
 *
 *     store/identity.h    org, teams, users, API keys
 *     store/sandboxes.h   the records of sandboxes a gateway runs
 *     store/audit_log.h   the rows of the hash-chained audit log
 *     store/tasks.h       tasks, their transcript events and approvals
 *
 * An fb_store dispatches every call through a table of operations
 * (store/backend.h): SQLite (a WAL database under the state directory,
 * src/store/sqlite_*.c), or PostgreSQL shared by several gateways
 * (src/store/pg_*.c), chosen by the store URL.  Every repository call is
 * atomic on its own: where it writes several rows (bootstrap, a key and its
 * checks, an audit entry and the head, a revocation and its descendants)
 * they are one transaction.
 *
 * Errors are typed: every repository function returns FB_STORE_OK (0) or a
 * negative fb_store_status, and fills an fb_err with an operator-readable
 * message.  Callers branch on the status, never on the message.
 *
 * The node id names this gateway among several sharing one store: random
 * ("nd_" and 16 hex digits), created once in STATE_DIR/node.id (mode 0600)
 * and kept.  Sandbox records carry it, so a gateway reaping what a crashed
 * predecessor left behind only touches its own node's records.
 */
#ifndef FB_STORE_H
#define FB_STORE_H

#include <stdbool.h>

#include "common/util.h"

typedef struct fb_store fb_store;

typedef enum fb_store_status {
    FB_STORE_OK = 0,
    FB_STORE_EIO = -1,        /* the database failed (disk, library, bad SQL): 500 */
    FB_STORE_ENOTFOUND = -2,  /* no such row (or a row it must refer to is missing) */
    FB_STORE_EEXISTS = -3,    /* a unique name (or the one org) is taken */
    FB_STORE_ECOLLISION = -4, /* a fresh random id collided: retry with another */
    FB_STORE_ECONFLICT = -5,  /* rows changed since the caller read them: re-read */
    FB_STORE_EBUSY = -6,      /* another writer held the database past the timeout */
    FB_STORE_ECORRUPT = -7,   /* a stored row does not have the shape it must have */
    FB_STORE_ENOMEM = -8,
    FB_STORE_ELIMIT = -9,     /* more rows than one call returns */
    FB_STORE_EINVAL = -10,    /* an argument the store cannot store (bad state name) */
} fb_store_status;

/* "ok", "io", "not_found", "exists", "collision", "conflict", "busy",
 * "corrupt", "no_memory", "limit", "invalid"; "unknown" otherwise. */
const char *fb_store_status_name(int status);

/* Rows a list call returns at most (FB_STORE_ELIMIT beyond). */
#define FB_STORE_LIST_MAX 100000
/* "nd_" + 16 hex digits + NUL. */
#define FB_STORE_NODE_ID_MAX 20

/* Opens (creating if needed, mode 0700) the store under state_dir: the
 * database STATE_DIR/forgebox.db (0600) in WAL mode with the migrations
 * of src/store/migrations/ applied, and the node id.  Refuses a state
 * directory others can write, a database others can read, and a database
 * newer than this binary.  Returns 0 or -1 with err set. */
int fb_store_open(const char *state_dir, fb_store **out, fb_err *err);
/* Same, with the database the store URL names: NULL, "" or
 * "sqlite:///STATE_DIR/forgebox.db" is the SQLite store above;
 * "postgresql://user:password@host:port/db" (or postgres://, any libpq
 * URI) a PostgreSQL database shared by several gateways, migrated on
 * open.  The state directory still holds the node id and the keys.  The
 * URL (its password) is never put into err and is wiped on close. */
int fb_store_open_url(const char *state_dir, const char *url, fb_store **out, fb_err *err);
void fb_store_close(fb_store *st);
/* "sqlite" or "postgresql". */
const char *fb_store_engine_name(const fb_store *st);
/* For a process that will commit for a long time (forgebox serve): on
 * SQLite, gives the write-ahead log the size it reaches between two
 * checkpoints now, in zeros, so that a commit overwrites the file instead
 * of growing it and its fsync has no change of the file's size to journal
 * (docs/performance.md, "Exec through the API").  Nothing is committed; a
 * failure costs only that speed (err says why, for a warning).  Nothing
 * to do on PostgreSQL. */
int fb_store_preallocate_log(fb_store *st, fb_err *err);

/* ---- identity changes made by other processes ------------------------------
 *
 * A gateway keeps verified API keys for a moment (auth's key cache); a key
 * revoked or a user disabled through another gateway sharing the store
 * must stop working here at once.  fb_store_watch_identity calls fn from a
 * thread of the store's own whenever another process (or this one) commits
 * such a change, and also whenever it cannot be sure it saw every change:
 * FB_STORE_WATCH_DOWN while its connection is lost (on every failed
 * reconnection attempt, about twice a second) and FB_STORE_WATCH_UP once
 * it listens again.  The caller forgets every cached identity on each
 * call, whatever the kind.  On PostgreSQL this is LISTEN/NOTIFY on a
 * connection of its own; on SQLite (one database, one gateway) it does
 * nothing and never calls fn.  At most one watch per store; it stops in
 * fb_store_close, before the store is freed. */
typedef enum fb_store_watch_kind {
    FB_STORE_WATCH_CHANGED, /* a change was committed */
    FB_STORE_WATCH_DOWN,    /* not listening: changes may be missed */
    FB_STORE_WATCH_UP,      /* listening (again) */
} fb_store_watch_kind;
typedef void (*fb_store_watch_fn)(void *ctx, fb_store_watch_kind kind);
int fb_store_watch_identity(fb_store *st, fb_store_watch_fn fn, void *ctx, fb_err *err);

/* The schema version after migrations. */
int fb_store_schema_version(fb_store *st);
/* The state directory this store lives in. */
const char *fb_store_state_dir(const fb_store *st);
/* This node's id ("nd_..."). */
const char *fb_store_node_id(const fb_store *st);

#endif
