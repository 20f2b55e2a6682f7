/*
 * lazy_sqlite.c - libsqlite3, loaded when the SQLite store first calls it
 * (common/lazylib.h says why: `forgebox run` with the jail never opens a
 * store, and loading the library cost it about 0.36 ms).  Every SQLite
 * function ForgeBox calls is listed here with its prototype from sqlite3.h;
 * all but the last four are called from src/store/sqlite_sql.c, those
 * from the unit tests that inspect a store file directly.
 */
#include <sqlite3.h>
#include <stdarg.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_libsqlite3 = FB_LAZYLIB_INIT("libsqlite3.so.0", "the SQLite store");
#define L fb_lazy_libsqlite3

FB_LAZY_FN(L, int, sqlite3_bind_blob,
           (sqlite3_stmt * s, int i, const void *p, int n, void (*d)(void *)), (s, i, p, n, d))
FB_LAZY_FN(L, int, sqlite3_bind_int64, (sqlite3_stmt * s, int i, sqlite3_int64 v), (s, i, v))
FB_LAZY_FN(L, int, sqlite3_bind_null, (sqlite3_stmt * s, int i), (s, i))
FB_LAZY_FN(L, int, sqlite3_bind_text,
           (sqlite3_stmt * s, int i, const char *p, int n, void (*d)(void *)), (s, i, p, n, d))
FB_LAZY_FN(L, int, sqlite3_busy_timeout, (sqlite3 * db, int ms), (db, ms))
FB_LAZY_FN(L, sqlite3_int64, sqlite3_changes64, (sqlite3 * db), (db))
FB_LAZY_FN(L, int, sqlite3_clear_bindings, (sqlite3_stmt * s), (s))
FB_LAZY_FN(L, int, sqlite3_close_v2, (sqlite3 * db), (db))
FB_LAZY_FN(L, const void *, sqlite3_column_blob, (sqlite3_stmt * s, int col), (s, col))
FB_LAZY_FN(L, int, sqlite3_column_bytes, (sqlite3_stmt * s, int col), (s, col))
FB_LAZY_FN(L, int, sqlite3_column_int, (sqlite3_stmt * s, int col), (s, col))
FB_LAZY_FN(L, sqlite3_int64, sqlite3_column_int64, (sqlite3_stmt * s, int col), (s, col))
FB_LAZY_FN(L, const unsigned char *, sqlite3_column_text, (sqlite3_stmt * s, int col), (s, col))
FB_LAZY_FN(L, int, sqlite3_column_type, (sqlite3_stmt * s, int col), (s, col))
FB_LAZY_FN(L, sqlite3 *, sqlite3_db_handle, (sqlite3_stmt * s), (s))
FB_LAZY_FN(L, int, sqlite3_errcode, (sqlite3 * db), (db))
FB_LAZY_FN(L, const char *, sqlite3_errmsg, (sqlite3 * db), (db))
FB_LAZY_FN(L, const char *, sqlite3_errstr, (int rc), (rc))
FB_LAZY_FN(L, int, sqlite3_extended_errcode, (sqlite3 * db), (db))
FB_LAZY_FN(L, int, sqlite3_finalize, (sqlite3_stmt * s), (s))
FB_LAZY_FN(L, int, sqlite3_get_autocommit, (sqlite3 * db), (db))
FB_LAZY_FN(L, int, sqlite3_open_v2, (const char *filename, sqlite3 **db, int flags, const char *vfs),
           (filename, db, flags, vfs))
FB_LAZY_FN(L, int, sqlite3_prepare_v2,
           (sqlite3 * db, const char *sql, int n, sqlite3_stmt **s, const char **tail),
           (db, sql, n, s, tail))
FB_LAZY_FN(L, int, sqlite3_prepare_v3,
           (sqlite3 * db, const char *sql, int n, unsigned int flags, sqlite3_stmt **s,
            const char **tail),
           (db, sql, n, flags, s, tail))
FB_LAZY_FN(L, int, sqlite3_reset, (sqlite3_stmt * s), (s))
FB_LAZY_FN(L, int, sqlite3_step, (sqlite3_stmt * s), (s))
FB_LAZY_FN(L, int, sqlite3_threadsafe, (void), ())
/* Only the unit tests call these (on a store file they inspect; the
 * VFS pair to count the store's syncs, test_store_durability.c). */
FB_LAZY_FN(L, int, sqlite3_close, (sqlite3 * db), (db))
FB_LAZY_FN(L, int, sqlite3_exec,
           (sqlite3 * db, const char *sql, int (*cb)(void *, int, char **, char **), void *arg,
            char **errmsg),
           (db, sql, cb, arg, errmsg))
FB_LAZY_FN(L, sqlite3_vfs *, sqlite3_vfs_find, (const char *name), (name))
FB_LAZY_FN(L, int, sqlite3_vfs_register, (sqlite3_vfs * vfs, int make_default), (vfs, make_default))

/* sqlite3_db_config's arguments after op are what op says, as SQLite's
 * own reads them (main.c): a schema name for MAINDBNAME, a buffer and two
 * sizes for LOOKASIDE, and for every other (on/off) option an int to set
 * (negative: leave) and an int * that receives the setting. */
int sqlite3_db_config(sqlite3 *db, int op, ...)
{
    static int (*fn)(sqlite3 *, int, ...);
    int (*f)(sqlite3 *, int, ...) = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (int (*)(sqlite3 *, int, ...))fb_lazylib_sym(&L, "sqlite3_db_config");
        __atomic_store_n(&fn, f, __ATOMIC_RELEASE);
    }
    va_list ap;
    va_start(ap, op);
    int rc;
    if (op == SQLITE_DBCONFIG_MAINDBNAME) {
        rc = f(db, op, va_arg(ap, const char *));
    } else if (op == SQLITE_DBCONFIG_LOOKASIDE) {
        void *buf = va_arg(ap, void *);
        int size = va_arg(ap, int);
        int count = va_arg(ap, int);
        rc = f(db, op, buf, size, count);
    } else {
        int on = va_arg(ap, int);
        int *out = va_arg(ap, int *);
        rc = f(db, op, on, out);
    }
    va_end(ap);
    return rc;
}
