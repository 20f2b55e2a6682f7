/*
 * sqlite_store.c - the SQLite engine behind store.h: opening the database
 * file under the state directory and the engine table that points at the
 * repository implementations (sqlite_identity.c, sqlite_sandboxes.c,
 * sqlite_audit.c).
 *
 * The database file is created 0600 before SQLite opens it (SQLite would
 * use 0644 less the umask, and its -wal/-shm files copy the database's
 * mode) and refused if group or others have any access: it holds password
 * and key hashes.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/backend.h"
#include "store/sql.h"

#define DB_NAME "forgebox.db"

/* Creates the database file 0600 (or checks the existing one) before
 * SQLite sees it. */
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

static int sqlite_open(fb_store *st, const char *state_dir, fb_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", state_dir, DB_NAME) >= (int)sizeof path)
        return fb_fail(err, "state directory path too long");
    fb_sql *db = NULL;
    if (prepare_db_file(path, err) < 0 || fb_sql_open(path, &db, err) < 0)
        return -1;
    st->impl = db;
    return 0;
}

static void sqlite_close(fb_store *st)
{
    fb_sql_close(st->impl);
    st->impl = NULL;
}

static int sqlite_version(fb_store *st)
{
    return fb_sql_schema_version(st->impl);
}

/* One SQLite database has one gateway: every identity change is made in
 * this process, which invalidates its own cache synchronously. */
static int sqlite_watch_identity(fb_store *st, fb_store_watch_fn fn, void *ctx, fb_err *err)
{
    (void)st;
    (void)fn;
    (void)ctx;
    (void)err;
    return 0;
}

static int sqlite_preallocate_log(fb_store *st, fb_err *err)
{
    return fb_sql_wal_preallocate(st->impl, err);
}

const fb_store_engine fb_sqlite_engine = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .schema_version = sqlite_version,
    .watch_identity = sqlite_watch_identity,
    .preallocate_log = sqlite_preallocate_log,
    .identity = &fb_sqlite_identity_ops,
    .sandboxes = &fb_sqlite_sandbox_ops,
    .audit = &fb_sqlite_audit_ops,
    .tasks = &fb_sqlite_task_ops,
    .sessions = &fb_sqlite_session_ops,
    .nodes = &fb_sqlite_node_ops,
};
