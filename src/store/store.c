/*
 * store.c - the SQLite store behind store.h.
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
 *   - foreign_keys=ON (checked after setting: it is a silent no-op inside a
 *     transaction), busy timeout 5 s, SQLITE_DBCONFIG_DEFENSIVE (no
 *     writable_schema tricks through this connection), untrusted schema.
 *
 * The state directory is created 0700 and refused if another user could
 * write it; the database file is created 0600 before SQLite opens it (SQLite
 * would use 0644 less the umask, and its -wal/-shm files copy the database's
 * mode) and refused if group or others have any access: it holds password
 * and key hashes.
 *
 * Migrations are the files of src/store/migrations/, compiled in by the
 * Makefile (build/gen/migrations.c).  The schema version is PRAGMA
 * user_version; each migration runs in its own IMMEDIATE transaction that
 * re-reads the version first, so two processes opening a fresh database at
 * once apply each migration exactly once.  A database newer than this
 * binary is refused rather than used half-understood.
 */
#define _GNU_SOURCE
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/migrations.h"

#define FB_STORE_DB_NAME "forgebox.db"
#define FB_STORE_BUSY_MS 5000

struct fb_store {
    sqlite3 *db;
    pthread_mutex_t lock;
    char *state_dir;
    int version;
};

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
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        return fb_fail(err, "database: %s: %s", sql, sqlite3_errmsg(db));
    return 0;
}

/* Runs a fixed query whose one row has one integer or text column. */
static int query_int(sqlite3 *db, const char *sql, int *out, fb_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return fb_fail(err, "database: %s: %s", sql, sqlite3_errmsg(db));
    return 0;
}

static int query_text(sqlite3 *db, const char *sql, char *out, size_t cap, fb_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, cap, "%s", t ? (const char *)t : "");
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return fb_fail(err, "database: %s: %s", sql, sqlite3_errmsg(db));
    return 0;
}

/* Creates the state directory if needed and refuses one that another user
 * could write into (and so replace the database or the audit key). */
static int prepare_state_dir(const char *dir, fb_err *err)
{
    if (fb_mkdir_p(dir, 0700, err) < 0)
        return fb_fail_prefix(err, "state directory");
    struct stat sb;
    if (stat(dir, &sb) < 0)
        return fb_fail_errno(err, "cannot stat state directory %s", dir);
    if (!S_ISDIR(sb.st_mode))
        return fb_fail(err, "state directory %s is not a directory", dir);
    if (sb.st_uid != geteuid())
        return fb_fail(err, "state directory %s belongs to uid %u, not to this user (uid %u); run forgebox as its owner",
                       dir, (unsigned)sb.st_uid, (unsigned)geteuid());
    if (sb.st_mode & 022)
        return fb_fail(err, "state directory %s is writable by group or others (mode %04o); run chmod go-w %s", dir,
                       (unsigned)(sb.st_mode & 07777), dir);
    return 0;
}

/* Creates the database file 0600 (or checks the existing one) before SQLite
 * sees it. */
static int prepare_db_file(const char *path, fb_err *err)
{
    cleanup_fd int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return fb_fail_errno(err, "cannot open database %s", path);
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return fb_fail_errno(err, "cannot stat database %s", path);
    if (!S_ISREG(sb.st_mode))
        return fb_fail(err, "database %s is not a regular file", path);
    if (sb.st_uid != geteuid())
        return fb_fail(err, "database %s belongs to uid %u, not to this user (uid %u)", path, (unsigned)sb.st_uid,
                       (unsigned)geteuid());
    if (sb.st_mode & 077)
        return fb_fail(err, "database %s is accessible to group or others (mode %04o); run chmod 600 %s", path,
                       (unsigned)(sb.st_mode & 07777), path);
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
    if (query_int(db, "PRAGMA user_version", &current, err) < 0)
        goto fail;
    if (current >= m->version) /* another process got here first */
        return exec_fixed(db, "COMMIT", err);
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

static int migrate(fb_store *st, const char *path, fb_err *err)
{
    int known = (int)fb_migrations_count;
    for (int i = 0; i < known; i++)
        if (fb_migrations[i].version != i + 1)
            return fb_fail(err, "internal: migration %s is out of sequence (expected version %d)",
                           fb_migrations[i].name, i + 1);
    int current = 0;
    if (query_int(st->db, "PRAGMA user_version", &current, err) < 0)
        return -1;
    if (current > known)
        return fb_fail(err,
                       "database %s has schema version %d, but this forgebox knows only versions up to %d: it was "
                       "written by a newer forgebox; run that version (a state directory cannot be downgraded)",
                       path, current, known);
    if (current < 0)
        return fb_fail(err, "database %s has an invalid schema version %d", path, current);
    for (int i = current; i < known; i++)
        if (apply_migration(st->db, &fb_migrations[i], err) < 0)
            return fb_fail_prefix(err, "database %s", path);
    if (query_int(st->db, "PRAGMA user_version", &st->version, err) < 0)
        return -1;
    if (st->version > known)
        return fb_fail(err, "database %s was upgraded to schema version %d by a newer forgebox while opening", path,
                       st->version);
    return 0;
}

static int configure(sqlite3 *db, const char *path, fb_err *err)
{
    int on = 0;
    if (sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, &on) != SQLITE_OK || on != 1 ||
        sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, &on) != SQLITE_OK || on != 0)
        return fb_fail(err, "database %s: cannot enable defensive mode", path);
    if (sqlite3_busy_timeout(db, FB_STORE_BUSY_MS) != SQLITE_OK)
        return fb_fail(err, "database %s: cannot set the busy timeout: %s", path, sqlite3_errmsg(db));

    char mode[16];
    if (query_text(db, "PRAGMA journal_mode = WAL", mode, sizeof mode, err) < 0)
        return fb_fail_prefix(err, "database %s", path);
    if (strcmp(mode, "wal") != 0)
        return fb_fail(err, "database %s: cannot switch to WAL mode (journal mode is %s); is the file system local?",
                       path, mode);
    int v = 0;
    if (exec_fixed(db, "PRAGMA foreign_keys = ON", err) < 0 || query_int(db, "PRAGMA foreign_keys", &v, err) < 0)
        return fb_fail_prefix(err, "database %s", path);
    if (v != 1)
        return fb_fail(err, "database %s: foreign keys could not be enabled", path);
    if (exec_fixed(db, "PRAGMA synchronous = FULL", err) < 0 || query_int(db, "PRAGMA synchronous", &v, err) < 0)
        return fb_fail_prefix(err, "database %s", path);
    if (v != 2)
        return fb_fail(err, "database %s: synchronous=FULL did not take effect", path);
    return 0;
}

int fb_store_open(const char *state_dir, fb_store **out, fb_err *err)
{
    *out = NULL;
    if (!state_dir || !*state_dir)
        return fb_fail(err, "no state directory given");
    if (!sqlite3_threadsafe())
        return fb_fail(err, "this SQLite library was built without thread safety; forgebox needs it");
    if (prepare_state_dir(state_dir, err) < 0)
        return -1;

    cleanup_free char *path = NULL;
    if (asprintf(&path, "%s/%s", state_dir, FB_STORE_DB_NAME) < 0) {
        path = NULL;
        return fb_fail(err, "out of memory");
    }
    if (prepare_db_file(path, err) < 0)
        return -1;

    fb_store *st = calloc(1, sizeof *st);
    if (!st)
        return fb_fail(err, "out of memory");
    st->state_dir = strdup(state_dir);
    pthread_mutexattr_t attr;
    /* Error-checking: taking the lock twice in one thread (calling
     * fb_audit_append with the lock held, say) aborts instead of hanging. */
    if (!st->state_dir || pthread_mutexattr_init(&attr) != 0) {
        free(st->state_dir);
        free(st);
        return fb_fail(err, "out of memory");
    }
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    int mrc = pthread_mutex_init(&st->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (mrc != 0) {
        free(st->state_dir);
        free(st);
        errno = mrc;
        return fb_fail_errno(err, "cannot create the store mutex");
    }

    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW |
                SQLITE_OPEN_EXRESCODE;
    int rc = sqlite3_open_v2(path, &st->db, flags, NULL);
    if (rc != SQLITE_OK) {
        fb_fail(err, "cannot open database %s: %s", path, st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        fb_store_close(st);
        return -1;
    }
    if (configure(st->db, path, err) < 0 || migrate(st, path, err) < 0) {
        fb_store_close(st);
        return -1;
    }
    *out = st;
    return 0;
}

void fb_store_close(fb_store *st)
{
    if (!st)
        return;
    sqlite3_close_v2(st->db);
    pthread_mutex_destroy(&st->lock);
    free(st->state_dir);
    free(st);
}

sqlite3 *fb_store_db(fb_store *st)
{
    return st->db;
}

void fb_store_lock(fb_store *st)
{
    int rc = pthread_mutex_lock(&st->lock);
    if (rc != 0) {
        fprintf(stderr, "forgebox: internal: store lock: %s\n", strerror(rc));
        abort();
    }
}

void fb_store_unlock(fb_store *st)
{
    int rc = pthread_mutex_unlock(&st->lock);
    if (rc != 0) {
        fprintf(stderr, "forgebox: internal: store unlock: %s\n", strerror(rc));
        abort();
    }
}

int fb_store_begin(fb_store *st, fb_err *err)
{
    return exec_fixed(st->db, "BEGIN IMMEDIATE", err);
}

int fb_store_commit(fb_store *st, fb_err *err)
{
    if (exec_fixed(st->db, "COMMIT", err) < 0) {
        fb_store_rollback(st);
        return -1;
    }
    return 0;
}

void fb_store_rollback(fb_store *st)
{
    if (!sqlite3_get_autocommit(st->db))
        exec_fixed(st->db, "ROLLBACK", NULL);
}

int fb_store_schema_version(fb_store *st)
{
    return st->version;
}

const char *fb_store_state_dir(const fb_store *st)
{
    return st->state_dir;
}
