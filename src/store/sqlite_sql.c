/*
 * sqlite_sql.c - sql.h over SQLite: the only file in ForgeBox that uses
 * the SQLite API.
 *
 * One connection per process, guarded by one mutex: SQLite serialises
 * writers anyway, and a single connection keeps transactions simple (BEGIN
 * IMMEDIATE takes the database write lock up front, so a transaction never
 * fails half-way with SQLITE_BUSY).  Other processes (the `forgebox` admin
 * verbs beside a running `forgebox serve`) wait on the busy timeout.
 *
 * Settings, and why:
 *   - journal_mode=WAL: readers never block the writer, and `forgebox audit
 *     verify` can read while the server appends.
 *   - synchronous=FULL: in WAL mode NORMAL is safe against corruption but a
 *     power cut can roll back the last commits.  The audit log exists so that
 *     a recorded decision stays recorded; FULL costs one fsync of the WAL per
 *     commit (not of the database), which the request rate here can afford.
 *     The exception (fb_sql_relaxed, sql.h): the record of a sandbox this
 *     gateway runs is written at NORMAL, for the duration of that one
 *     repository call and under the lock, then the connection is back at
 *     FULL (read back; the process aborts if it is not).  Such a commit is
 *     lost only when the machine goes down (a process crash keeps what was
 *     written to the WAL), which ends the sandbox too; and the next FULL
 *     commit - on a create or a delete, the audit commit that comes before
 *     the answer - makes it durable with its own fsync, since the WAL is one
 *     file written in order and recovery replays a prefix of its frames.  A
 *     gateway starting after a crash reaps this node's live records, so a
 *     record whose end was lost ends then (docs/audit.md, "Durability").
 *   - the write-ahead log preallocated (fb_sql_wal_preallocate, for
 *     forgebox serve only): the WAL grows for its first ~1,000 pages (4 MiB)
 *     after every start, and while it grows each commit's fdatasync must
 *     also journal the file's new size: an ext4 journal commit, which on
 *     this project's test host made a commit's fsync 0.2-0.45 ms instead
 *     of 0.14 (bench/README.md, session 7).  Zeros written past the log's
 *     end once, under the write lock, make every later commit an
 *     overwrite.  Durability is unchanged: the same fdatasync, with less
 *     to do.
 *   - foreign_keys=ON (checked after setting: it is a silent no-op inside a
 *     transaction), busy timeout 5 s, SQLITE_DBCONFIG_DEFENSIVE (no
 *     writable_schema tricks through this connection), untrusted schema.
 *
 * Migrations are the files of src/store/migrations/, compiled in by the
 * Makefile (build/gen/migrations.c).  The schema version is PRAGMA
 * user_version; each migration runs in its own IMMEDIATE transaction that
 * re-reads the version first, so two processes opening a fresh database at
 * once apply each migration exactly once.  A database newer than this
 * binary is refused rather than used half-understood.
 *
 * Library statuses become fb_store_status here and nowhere else
 * (store_status below), with extended result codes so that a primary-key
 * clash and a unique-name clash can be told apart.
 */
#define _GNU_SOURCE
#include "store/sql.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/policy.h"
#include "store/migrations.h"

#define BUSY_MS 5000

#define CACHED_MAX 16

struct fb_sql {
    sqlite3 *db;
    pthread_mutex_t lock;
    int version;
    char *wal; /* the write-ahead log's path (fb_sql_wal_preallocate) */
    struct {
        const char *sql; /* a literal's address */
        sqlite3_stmt *st;
    } cached[CACHED_MAX];
};

/* fb_sql_stmt is never defined: the pointer is a sqlite3_stmt. */
#define RAW(s) ((sqlite3_stmt *)(void *)(s))

static int store_status(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY: return FB_STORE_ECOLLISION;
    case SQLITE_CONSTRAINT_UNIQUE: return FB_STORE_EEXISTS;
    case SQLITE_CONSTRAINT_FOREIGNKEY: return FB_STORE_ENOTFOUND;
    case SQLITE_NOMEM: return FB_STORE_ENOMEM;
    default: break;
    }
    if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED)
        return FB_STORE_EBUSY;
    return FB_STORE_EIO;
}

static int fail_db(sqlite3 *db, int rc, const char *what, fb_err *err)
{
    fb_fail(err, "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return store_status(rc);
}

/* ---- statements ----------------------------------------------------------- */

int fb_sql_prepare(fb_sql *db, const char *sql, fb_sql_stmt **out, fb_err *err)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db->db, sql, -1, &s, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(s);
        *out = NULL;
        return fail_db(db->db, rc, "database: cannot prepare a statement", err);
    }
    *out = (fb_sql_stmt *)(void *)s;
    return 0;
}

int fb_sql_prepare_cached(fb_sql *db, const char *sql, fb_sql_stmt **out, fb_err *err)
{
    size_t i = 0;
    for (; i < CACHED_MAX && db->cached[i].sql; i++)
        if (db->cached[i].sql == sql) {
            *out = (fb_sql_stmt *)(void *)db->cached[i].st;
            return 0;
        }
    if (i == CACHED_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "internal: more than %d cached statements", CACHED_MAX);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(db->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        *out = NULL;
        return fail_db(db->db, rc, "database: cannot prepare a statement", err);
    }
    db->cached[i].sql = sql;
    db->cached[i].st = st;
    *out = (fb_sql_stmt *)(void *)st;
    return 0;
}

void fb_sql_releasep(fb_sql_stmt **s)
{
    if (*s) {
        sqlite3_reset(RAW(*s));
        sqlite3_clear_bindings(RAW(*s));
    }
    *s = NULL;
}

void fb_sql_finalizep(fb_sql_stmt **s)
{
    if (*s)
        sqlite3_finalize(RAW(*s));
    *s = NULL;
}

static int bound(fb_sql_stmt *s, int rc, fb_err *err)
{
    if (rc == SQLITE_OK)
        return 0;
    return fail_db(sqlite3_db_handle(RAW(s)), rc, "database: cannot bind a parameter", err);
}

int fb_sql_bind_text(fb_sql_stmt *s, int i, const char *text, fb_err *err)
{
    return bound(s, text ? sqlite3_bind_text(RAW(s), i, text, -1, SQLITE_STATIC) : sqlite3_bind_null(RAW(s), i),
                 err);
}

int fb_sql_bind_textn(fb_sql_stmt *s, int i, const char *text, size_t len, fb_err *err)
{
    if (len > INT32_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "database: a text of %zu bytes is too long", len);
    return bound(s, sqlite3_bind_text(RAW(s), i, text, (int)len, SQLITE_STATIC), err);
}

int fb_sql_bind_int64(fb_sql_stmt *s, int i, int64_t v, fb_err *err)
{
    return bound(s, sqlite3_bind_int64(RAW(s), i, v), err);
}

int fb_sql_bind_blob(fb_sql_stmt *s, int i, const void *p, size_t len, fb_err *err)
{
    if (len > INT32_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "database: a blob of %zu bytes is too long", len);
    return bound(s, sqlite3_bind_blob(RAW(s), i, p, (int)len, SQLITE_STATIC), err);
}

int fb_sql_bind_texts(fb_sql_stmt *s, fb_err *err, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    int rc = 0;
    for (int i = 1; i <= n && rc == 0; i++)
        rc = fb_sql_bind_text(s, i, va_arg(ap, const char *), err);
    va_end(ap);
    return rc;
}

int fb_sql_step(fb_sql_stmt *s, const char *what, fb_err *err)
{
    int rc = sqlite3_step(RAW(s));
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return fail_db(sqlite3_db_handle(RAW(s)), sqlite3_extended_errcode(sqlite3_db_handle(RAW(s))), what, err);
}

int fb_sql_run(fb_sql_stmt *s, const char *what, fb_err *err)
{
    int rc;
    while ((rc = fb_sql_step(s, what, err)) == 1)
        ;
    return rc;
}

int64_t fb_sql_changes(fb_sql *db)
{
    return sqlite3_changes64(db->db);
}

bool fb_sql_col_is_text(fb_sql_stmt *s, int i)
{
    return sqlite3_column_type(RAW(s), i) == SQLITE_TEXT;
}

bool fb_sql_col_is_int(fb_sql_stmt *s, int i)
{
    return sqlite3_column_type(RAW(s), i) == SQLITE_INTEGER;
}

int64_t fb_sql_col_int64(fb_sql_stmt *s, int i)
{
    return sqlite3_column_int64(RAW(s), i);
}

const char *fb_sql_col_text(fb_sql_stmt *s, int i, size_t *len)
{
    const unsigned char *t = sqlite3_column_text(RAW(s), i);
    int n = sqlite3_column_bytes(RAW(s), i);
    if (len)
        *len = t && n > 0 ? (size_t)n : 0;
    return t ? (const char *)t : "";
}

const void *fb_sql_col_blob(fb_sql_stmt *s, int i, size_t *len)
{
    const void *b = sqlite3_column_blob(RAW(s), i);
    int n = sqlite3_column_bytes(RAW(s), i);
    *len = b && n > 0 ? (size_t)n : 0;
    return b;
}

int fb_sql_col_copy(fb_sql_stmt *s, int i, char *out, size_t cap)
{
    size_t n;
    const char *t = fb_sql_col_text(s, i, &n);
    if (n >= cap) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, t, n);
    out[n] = '\0';
    return 0;
}

int fb_sql_collect(fb_sql_stmt *s, size_t elem_size, int (*rd)(fb_sql_stmt *, void *), void **out, size_t *n,
                   const char *what, fb_err *err)
{
    cleanup_free char *items = NULL;
    size_t count = 0, cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = fb_sql_step(s, what, err)) == 1) {
        if (count == FB_STORE_LIST_MAX)
            return fb_fail_code(err, FB_STORE_ELIMIT, "%s: more than %d rows; refusing to list them all", what,
                                FB_STORE_LIST_MAX);
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char *grown = realloc(items, ncap * elem_size);
            if (!grown)
                return fb_fail_code(err, FB_STORE_ENOMEM, "%s: out of memory", what);
            items = grown;
            cap = ncap;
        }
        if (rd(s, items + count * elem_size) < 0)
            return fb_fail_code(err, FB_STORE_ECORRUPT, "%s: a stored row is malformed", what);
        count++;
    }
    if (rc < 0)
        return rc;
    *out = steal_pointer(&items);
    *n = count;
    return 0;
}

int fb_sql_read_id(fb_sql_stmt *s, void *elem)
{
    return fb_sql_col_copy(s, 0, elem, FB_ID_MAX);
}

int fb_sql_exec_texts(fb_sql *db, const char *sql, const char *what, fb_err *err, int n, ...)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, sql, &s, err);
    va_list ap;
    va_start(ap, n);
    for (int i = 1; i <= n && rc == 0; i++)
        rc = fb_sql_bind_text(s, i, va_arg(ap, const char *), err);
    va_end(ap);
    return rc < 0 ? rc : fb_sql_run(s, what, err);
}

int fb_sql_exists(fb_sql *db, const char *sql, const char *param, fb_err *err)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, sql, &s, err);
    if (rc < 0 || (param && (rc = fb_sql_bind_text(s, 1, param, err)) < 0))
        return rc;
    return fb_sql_step(s, "database: lookup failed", err);
}

/* ---- lock and transactions ------------------------------------------------- */

void fb_sql_lock(fb_sql *db)
{
    int rc = pthread_mutex_lock(&db->lock);
    if (rc != 0) {
        fprintf(stderr, "forgebox: internal: store lock: %s\n", strerror(rc));
        abort();
    }
}

void fb_sql_unlock(fb_sql *db)
{
    int rc = pthread_mutex_unlock(&db->lock);
    if (rc != 0) {
        fprintf(stderr, "forgebox: internal: store unlock: %s\n", strerror(rc));
        abort();
    }
}

fb_sql *fb_sql_locked(fb_sql *db)
{
    fb_sql_lock(db);
    return db;
}

void fb_sql_unlockp(fb_sql **db)
{
    if (*db)
        fb_sql_unlock(*db);
}

/* Runs one fixed SQL statement (never text from outside) to completion. */
static int exec_fixed(sqlite3 *db, const char *sql, fb_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        do
            rc = sqlite3_step(st);
        while (rc == SQLITE_ROW);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_OK) {
        fb_fail(err, "database: %s: %s", sql, sqlite3_errmsg(db));
        return store_status(sqlite3_extended_errcode(db));
    }
    return 0;
}

/* The statements every transaction runs, prepared once per connection
 * (fb_sql_prepare_cached knows a statement by its text's address): parsing
 * BEGIN and COMMIT again was ~4% of the gateway's CPU on an audited exec
 * (bench/README.md, session 6). */
static const char SQL_BEGIN_WRITE[] = "BEGIN IMMEDIATE";
static const char SQL_BEGIN_READ[] = "BEGIN";
static const char SQL_COMMIT[] = "COMMIT";

/* exec_fixed through the statement cache. */
static int exec_cached(fb_sql *db, const char *sql, fb_err *err)
{
    fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare_cached(db, sql, &s, err);
    if (rc < 0)
        return rc;
    do
        rc = sqlite3_step(RAW(s));
    while (rc == SQLITE_ROW);
    if (rc != SQLITE_DONE) {
        fb_fail(err, "database: %s: %s", sql, sqlite3_errmsg(db->db));
        rc = store_status(sqlite3_extended_errcode(db->db));
        sqlite3_reset(RAW(s));
        return rc;
    }
    sqlite3_reset(RAW(s));
    return 0;
}

int fb_sql_begin(fb_sql *db, fb_err *err)
{
    return exec_cached(db, SQL_BEGIN_WRITE, err);
}

int fb_sql_begin_read(fb_sql *db, fb_err *err)
{
    return exec_cached(db, SQL_BEGIN_READ, err);
}

int fb_sql_commit(fb_sql *db, fb_err *err)
{
    int rc = exec_cached(db, SQL_COMMIT, err);
    if (rc < 0)
        fb_sql_rollback(db);
    return rc;
}

void fb_sql_rollback(fb_sql *db)
{
    if (!sqlite3_get_autocommit(db->db))
        exec_fixed(db->db, "ROLLBACK", NULL);
}

/* PRAGMA synchronous takes effect when the statement is prepared, and
 * SQLite refuses it inside a transaction ("Safety level may not be
 * changed inside a transaction"): hence no cached statement, and the
 * scope of fb_sql_relaxed around whole transactions. */
fb_sql *fb_sql_relaxed(fb_sql *db)
{
    fb_err e = {{0}};
    /* A connection left at FULL is only slower: a failure here is logged
     * by nobody and costs one fsync. */
    if (sqlite3_get_autocommit(db->db))
        (void)exec_fixed(db->db, "PRAGMA synchronous = NORMAL", &e);
    return db;
}

static int synchronous_level(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA synchronous", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

void fb_sql_durablep(fb_sql **pdb)
{
    fb_sql *db = *pdb;
    if (!db)
        return;
    fb_err e = {{0}};
    if (!sqlite3_get_autocommit(db->db))
        fb_fail(&e, "internal: a relaxed scope ended inside a transaction");
    else if (exec_fixed(db->db, "PRAGMA synchronous = FULL", &e) == 0 && synchronous_level(db->db) != 2)
        fb_fail(&e, "synchronous=FULL did not take effect again");
    if (e.msg[0]) {
        /* Every later commit, the audit log's among them, would return
         * before its entry is on the disk: stop instead. */
        fprintf(stderr, "forgebox: database: cannot make commits durable again: %s\n", e.msg);
        abort();
    }
    *pdb = NULL;
}

/* ---- opening: settings and migrations --------------------------------------- */

/* Runs a fixed query whose one row has one integer or text column. */
static int query_one(sqlite3 *db, const char *sql, int *num, char *text, size_t cap, fb_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (num)
            *num = sqlite3_column_int(st, 0);
        if (text) {
            const unsigned char *t = sqlite3_column_text(st, 0);
            snprintf(text, cap, "%s", t ? (const char *)t : "");
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return fb_fail(err, "database: %s: %s", sql, sqlite3_errmsg(db));
    return 0;
}

/* Runs every statement of one migration file (already inside a transaction). */
static int run_script(sqlite3 *db, const fb_migration *m, fb_err *err)
{
    const char *p = m->sql;
    const char *end = m->sql + m->len;
    while (p < end) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        if ((size_t)(end - p) > (size_t)INT32_MAX)
            return fb_fail(err, "migration %s is too large", m->name);
        int rc = sqlite3_prepare_v2(db, p, (int)(end - p), &st, &tail);
        if (rc != SQLITE_OK)
            return fb_fail(err, "migration %s: %s", m->name, sqlite3_errmsg(db));
        if (!st) /* only whitespace or comments left */
            break;
        do
            rc = sqlite3_step(st);
        while (rc == SQLITE_ROW);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return fb_fail(err, "migration %s: %s", m->name, sqlite3_errmsg(db));
        if (!tail || tail <= p)
            break;
        p = tail;
    }
    return 0;
}

static int apply_migration(sqlite3 *db, const fb_migration *m, fb_err *err)
{
    if (exec_fixed(db, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    int current = 0;
    if (query_one(db, "PRAGMA user_version", &current, NULL, 0, err) < 0)
        goto fail;
    if (current >= m->version) /* another process got here first */
        return exec_fixed(db, "COMMIT", err) < 0 ? -1 : 0;
    if (current != m->version - 1) {
        fb_fail(err, "database schema is at version %d, cannot apply migration %s", current, m->name);
        goto fail;
    }
    if (run_script(db, m, err) < 0)
        goto fail;
    /* PRAGMA takes no bound parameters; the number is our own compiled-in
     * migration version, never outside text. */
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", m->version);
    if (exec_fixed(db, sql, err) < 0 || exec_fixed(db, "COMMIT", err) < 0)
        goto fail;
    return 0;
fail:
    exec_fixed(db, "ROLLBACK", NULL);
    return -1;
}

static int migrate(fb_sql *s, const char *path, fb_err *err)
{
    int known = (int)fb_migrations_count;
    for (int i = 0; i < known; i++)
        if (fb_migrations[i].version != i + 1)
            return fb_fail(err, "internal: migration %s is out of sequence (expected version %d)",
                           fb_migrations[i].name, i + 1);
    int current = 0;
    if (query_one(s->db, "PRAGMA user_version", &current, NULL, 0, err) < 0)
        return -1;
    if (current > known)
        return fb_fail(err,
                       "database %s has schema version %d, but this forgebox knows only versions up to %d: it was "
                       "written by a newer forgebox; run that version (a state directory cannot be downgraded)",
                       path, current, known);
    if (current < 0)
        return fb_fail(err, "database %s has an invalid schema version %d", path, current);
    for (int i = current; i < known; i++)
        if (apply_migration(s->db, &fb_migrations[i], err) < 0)
            return fb_fail_prefix(err, "database %s", path);
    if (query_one(s->db, "PRAGMA user_version", &s->version, NULL, 0, err) < 0)
        return -1;
    if (s->version > known)
        return fb_fail(err, "database %s was upgraded to schema version %d by a newer forgebox while opening", path,
                       s->version);
    return 0;
}

/* Changing the journal mode needs an exclusive lock, and SQLite does not
 * always wait for it through the busy handler: several processes opening a
 * new store at the same moment (gateways sharing a state directory, or the
 * CLI beside a starting gateway) can get "database is locked" at once.
 * Retry for as long as the busy timeout would have waited. */
static int switch_to_wal(sqlite3 *db, char *mode, size_t cap, fb_err *err)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        fb_err e = {{0}};
        if (query_one(db, "PRAGMA journal_mode = WAL", NULL, mode, cap, &e) == 0)
            return 0;
        int rc = sqlite3_errcode(db) & 0xff;
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || waited_ms >= BUSY_MS) {
            if (err)
                *err = e;
            return -1;
        }
        usleep(10 * 1000);
    }
}

static int configure(sqlite3 *db, const char *path, fb_err *err)
{
    int on = 0;
    if (sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, &on) != SQLITE_OK || on != 1 ||
        sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, &on) != SQLITE_OK || on != 0)
        return fb_fail(err, "database %s: cannot enable defensive mode", path);
    if (sqlite3_busy_timeout(db, BUSY_MS) != SQLITE_OK)
        return fb_fail(err, "database %s: cannot set the busy timeout: %s", path, sqlite3_errmsg(db));

    char mode[16];
    if (switch_to_wal(db, mode, sizeof mode, err) < 0)
        return fb_fail_prefix(err, "database %s", path);
    if (strcmp(mode, "wal") != 0)
        return fb_fail(err, "database %s: cannot switch to WAL mode (journal mode is %s); is the file system local?",
                       path, mode);
    int v = 0;
    if (exec_fixed(db, "PRAGMA foreign_keys = ON", err) < 0 ||
        query_one(db, "PRAGMA foreign_keys", &v, NULL, 0, err) < 0)
        return fb_fail_prefix(err, "database %s", path);
    if (v != 1)
        return fb_fail(err, "database %s: foreign keys could not be enabled", path);
    if (exec_fixed(db, "PRAGMA synchronous = FULL", err) < 0 ||
        query_one(db, "PRAGMA synchronous", &v, NULL, 0, err) < 0)
        return fb_fail_prefix(err, "database %s", path);
    if (v != 2)
        return fb_fail(err, "database %s: synchronous=FULL did not take effect", path);
    return 0;
}

int fb_sql_open(const char *path, fb_sql **out, fb_err *err)
{
    *out = NULL;
    if (!sqlite3_threadsafe())
        return fb_fail(err, "this SQLite library was built without thread safety; forgebox needs it");
    fb_sql *s = calloc(1, sizeof *s);
    if (!s)
        return fb_fail(err, "out of memory");
    pthread_mutexattr_t attr;
    /* Error-checking: taking the lock twice in one thread (a repository
     * calling another with the lock held, say) aborts instead of hanging. */
    if (pthread_mutexattr_init(&attr) != 0) {
        free(s);
        return fb_fail(err, "out of memory");
    }
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    int mrc = pthread_mutex_init(&s->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (mrc != 0) {
        free(s);
        errno = mrc;
        return fb_fail_errno(err, "cannot create the store mutex");
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW |
                SQLITE_OPEN_EXRESCODE;
    if (asprintf(&s->wal, "%s-wal", path) < 0) {
        s->wal = NULL;
        fb_sql_close(s);
        return fb_fail(err, "out of memory");
    }
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        fb_fail(err, "cannot open database %s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        fb_sql_close(s);
        return -1;
    }
    if (configure(s->db, path, err) < 0 || migrate(s, path, err) < 0) {
        fb_sql_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void fb_sql_close(fb_sql *db)
{
    if (!db)
        return;
    for (size_t i = 0; i < CACHED_MAX && db->cached[i].sql; i++)
        sqlite3_finalize(db->cached[i].st);
    sqlite3_close_v2(db->db);
    pthread_mutex_destroy(&db->lock);
    free(db->wal);
    free(db);
}

/* Frames the log holds between two checkpoints, with headroom for the
 * commit that crosses wal_autocheckpoint (a frame: 24 bytes of header and
 * one page; the file: a 32-byte header and the frames). */
#define WAL_HEADROOM_FRAMES 64

/* Appends zeros from the log's end to wal_bytes.  Never overwrites a byte
 * SQLite wrote: what lies past the end is no frame (recovery stops at the
 * first frame whose salt and checksum do not match, and zeros never do),
 * and nobody can append meanwhile, since the caller holds the write lock. */
static int wal_extend(const char *wal, off_t wal_bytes, fb_err *err)
{
    cleanup_fd int fd = open(wal, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : fb_fail_errno(err, "cannot open %s", wal);
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return fb_fail_errno(err, "cannot stat %s", wal);
    if (!S_ISREG(sb.st_mode) || sb.st_size >= wal_bytes)
        return 0;
    static const char zeros[64 * 1024];
    for (off_t at = sb.st_size; at < wal_bytes;) {
        size_t n = wal_bytes - at < (off_t)sizeof zeros ? (size_t)(wal_bytes - at) : sizeof zeros;
        ssize_t w = pwrite(fd, zeros, n, at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fb_fail_errno(err, "cannot preallocate %s", wal);
        at += w;
    }
    /* The new size durable now, so that no commit's fsync has it to do. */
    if (fdatasync(fd) < 0)
        return fb_fail_errno(err, "cannot sync %s", wal);
    return 0;
}

int fb_sql_wal_preallocate(fb_sql *db, fb_err *err)
{
    cleanup_sql_unlock fb_sql *l = fb_sql_locked(db);
    int page = 0, frames = 0;
    if (query_one(db->db, "PRAGMA page_size", &page, NULL, 0, err) < 0 ||
        query_one(db->db, "PRAGMA wal_autocheckpoint", &frames, NULL, 0, err) < 0)
        return -1;
    if (page <= 0 || frames <= 0)
        return 0; /* no automatic checkpoints: the log has no steady size */
    off_t bytes = 32 + ((off_t)frames + WAL_HEADROOM_FRAMES) * ((off_t)page + 24);
    /* BEGIN IMMEDIATE: the WAL's write lock, so no frame is appended while
     * the zeros go in; the log file is open from here on. */
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    rc = wal_extend(db->wal, bytes, err);
    fb_sql_rollback(db); /* nothing was written through SQLite */
    return rc;
}

int fb_sql_schema_version(fb_sql *db)
{
    return db->version;
}

/* One SQLite database has one gateway, which invalidates its own caches. */
int fb_sql_notify(fb_sql *db, const char *channel, fb_err *err)
{
    (void)db;
    (void)channel;
    (void)err;
    return 0;
}
