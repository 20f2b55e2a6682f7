/*
 * store.h - the storage interface: one SQLite database (WAL) under the
 * state directory, opened once per process and shared by every module.
 *
 * The store owns the connection, the schema migrations (versioned files in
 * src/store/migrations/, compiled in) and a mutex.  Modules (auth, audit,
 * the gateway's sandbox registry) keep their own SQL, always as prepared
 * statements with bound parameters, and run it between fb_store_lock and
 * fb_store_unlock.  PostgreSQL for several nodes comes later behind the
 * same lock/unlock discipline.
 */
#ifndef FB_STORE_H
#define FB_STORE_H

#include <sqlite3.h>
#include <stdbool.h>

#include "common/util.h"

typedef struct fb_store fb_store;

/* Opens (creating if needed, mode 0700) STATE_DIR/forgebox.db in WAL mode
 * with foreign keys on and a busy timeout, and applies pending migrations
 * in one transaction each.  Refuses a database newer than this binary. */
int fb_store_open(const char *state_dir, fb_store **out, fb_err *err);
void fb_store_close(fb_store *st);

/* The connection, for use only between lock and unlock. */
sqlite3 *fb_store_db(fb_store *st);
void fb_store_lock(fb_store *st);
void fb_store_unlock(fb_store *st);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK (call with the lock held). */
int fb_store_begin(fb_store *st, fb_err *err);
int fb_store_commit(fb_store *st, fb_err *err);
void fb_store_rollback(fb_store *st);

/* The schema version after migrations. */
int fb_store_schema_version(fb_store *st);
/* The state directory this store lives in. */
const char *fb_store_state_dir(const fb_store *st);

#endif
