/*
 * test_store_durability.c - which commits of the SQLite store sync the
 * disk (store/sql.h fb_sql_relaxed, store/sandboxes.h "Durability").
 *
 * A local sandbox's record (its reservation, activation and end) is
 * written without a sync of its own and made durable by the next audit
 * commit; everything else, and the audit commit right after a relaxed
 * write in particular, still syncs.  The syncs are counted by a VFS that
 * wraps SQLite's default one and counts xSync on write-ahead logs: the
 * store opens its database through the default VFS, so this sees exactly
 * the syncs a gateway makes.  The connection's setting is read back
 * through sql.h: after a relaxed scope it is FULL (2) again.
 *
 * And the write-ahead log that forgebox serve preallocates
 * (fb_store_preallocate_log): zeros past its end, never over what SQLite
 * wrote; every commit still syncs; the log keeps its size across an
 * automatic checkpoint; and a copy taken while the store is open (as a
 * crash leaves it) recovers every committed entry.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "audit/audit.h"
#include "store/identity.h"
#include "store/sandboxes.h"
#include "store/sql.h"
#include "store/store.h"

/* ---- a VFS that counts syncs of write-ahead logs --------------------------- */

static sqlite3_vfs counting_vfs;
static sqlite3_vfs *real_vfs;
static const sqlite3_io_methods *real_wal_methods;
static sqlite3_io_methods counting_wal_methods;
static int wal_syncs;

static int counting_sync(sqlite3_file *f, int flags)
{
    __atomic_add_fetch(&wal_syncs, 1, __ATOMIC_SEQ_CST);
    return real_wal_methods->xSync(f, flags);
}

/* The real VFS opens the file in place (same size); a WAL's methods are
 * swapped for a copy whose xSync counts. */
static int counting_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    int rc = real_vfs->xOpen(real_vfs, name, f, flags, out_flags);
    if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL) && f->pMethods) {
        if (!real_wal_methods) {
            real_wal_methods = f->pMethods;
            counting_wal_methods = *f->pMethods;
            counting_wal_methods.xSync = counting_sync;
        }
        assert_ptr_equal(f->pMethods, real_wal_methods);
        f->pMethods = &counting_wal_methods;
    }
    return rc;
}

static void install_counting_vfs(void)
{
    if (real_vfs)
        return;
    real_vfs = sqlite3_vfs_find(NULL);
    assert_non_null(real_vfs);
    counting_vfs = *real_vfs;
    counting_vfs.zName = "fb-counting";
    counting_vfs.xOpen = counting_open;
    counting_vfs.pNext = NULL;
    assert_int_equal(sqlite3_vfs_register(&counting_vfs, 1), SQLITE_OK);
}

static int syncs(void)
{
    return __atomic_load_n(&wal_syncs, __ATOMIC_SEQ_CST);
}

/* ---- fixture ------------------------------------------------------------------ */

typedef struct fixture {
    char tmp[64];
    char db[128];
    fb_store *st;
} fixture;

static int setup(void **state)
{
    install_counting_vfs();
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->tmp, sizeof f->tmp, "/tmp/fb-test-durability-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    snprintf(f->db, sizeof f->db, "%s/forgebox.db", f->tmp);
    fb_err err = {{0}};
    if (fb_store_open(f->tmp, &f->st, &err) < 0)
        fail_msg("fb_store_open: %s", err.msg);
    fb_team t = {0};
    snprintf(t.id, sizeof t.id, "tm_a");
    snprintf(t.name, sizeof t.name, "a");
    snprintf(t.created_at, sizeof t.created_at, "2026-11-29T10:31:07.000000000Z");
    if (fb_store_team_insert(f->st, &t, &err) != 0)
        fail_msg("team: %s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fb_store_close(f->st);
    fb_rm_rf(f->tmp);
    free(f);
    return 0;
}

#define T0 "2026-11-29T10:31:07.000000000Z"
#define T1 "2026-11-29T11:31:07.000000000Z"

static const fb_quota_limits roomy = {10, 100000, 100};

static void audit_one(fb_store *st, const char *resource)
{
    fb_err err = {{0}};
    fb_audit_event ev = {.event = "sandbox", .actor = "system", .resource = resource, .action = "create",
                         .outcome = "allowed", .reason = "test"};
    if (fb_audit_append(st, &ev, &err) < 0)
        fail_msg("fb_audit_append: %s", err.msg);
}

/* A local sandbox's reservation, activation and end sync nothing; the
 * audit commit after each does, once; a node's record (local false) and
 * every other write still sync on their own. */
static void test_local_records_wait_for_the_audit_commit(void **state)
{
    fixture *f = *state;
    fb_err err = {{0}};
    char why[160];

    fb_sandbox_record local = {"pending-1", "tm_a", "", "jail", 256, 1, T0, T1, .local = true};
    int before = syncs();
    assert_int_equal(fb_store_sandbox_reserve(f->st, &local, NULL, &roomy, why, sizeof why, &err), 0);
    assert_int_equal(fb_store_sandbox_activate(f->st, "pending-1", "sb-1", T0, T1, &err), 0);
    assert_int_equal(syncs(), before);
    audit_one(f->st, "sb-1");
    assert_int_equal(syncs(), before + 1);

    before = syncs();
    assert_int_equal(fb_store_sandbox_set_state_local(f->st, "sb-1", "destroyed", &err), 0);
    assert_int_equal(syncs(), before);
    audit_one(f->st, "sb-1");
    assert_int_equal(syncs(), before + 1);

    /* A reservation refused by the quota rolls back and leaves FULL too. */
    fb_quota_limits none = {0, 0, 0};
    fb_sandbox_record refused = {"pending-2", "tm_a", "", "jail", 256, 1, T0, T1, .local = true};
    assert_int_equal(fb_store_sandbox_reserve(f->st, &refused, NULL, &none, why, sizeof why, &err), 1);

    /* Durable on their own: a record that is not local, a state change
     * through the plain call. */
    fb_sandbox_record node = {"sb-2", "tm_a", "", "jail", 256, 1, T0, T1, .local = false};
    before = syncs();
    assert_int_equal(fb_store_sandbox_reserve(f->st, &node, NULL, &roomy, why, sizeof why, &err), 0);
    assert_int_equal(syncs(), before + 1);
    assert_int_equal(fb_store_sandbox_set_state(f->st, "sb-2", "running", &err), 0);
    assert_int_equal(syncs(), before + 2);

    /* What was written relaxed is there, for this connection and others. */
    fb_sandbox_row row;
    assert_int_equal(fb_store_sandbox_get(f->st, "sb-1", &row, &err), 0);
    assert_string_equal(row.state, "destroyed");
    assert_int_equal(fb_store_sandbox_get(f->st, "pending-2", &row, &err), FB_STORE_ENOTFOUND);
}

/* A failed relaxed write (no such record) still puts the connection back:
 * the audit commit after it syncs. */
static void test_failed_relaxed_write_restores_full(void **state)
{
    fixture *f = *state;
    fb_err err = {{0}};
    int before = syncs();
    assert_int_equal(fb_store_sandbox_activate(f->st, "pending-none", "sb-9", T0, T1, &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_sandbox_set_state_local(f->st, "sb-9", "destroyed", &err), FB_STORE_ENOTFOUND);
    assert_int_equal(syncs(), before);
    audit_one(f->st, "sb-9");
    assert_int_equal(syncs(), before + 1);
}

static int synchronous_of(fb_sql *db)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    fb_err err = {{0}};
    assert_int_equal(fb_sql_prepare(db, "PRAGMA synchronous", &s, &err), 0);
    assert_int_equal(fb_sql_step(s, "synchronous", &err), 1);
    return (int)fb_sql_col_int64(s, 0);
}

static void relaxed_insert(fb_sql *db, const char *v, bool fail)
{
    cleanup_sql_unlock fb_sql *l = fb_sql_locked(db);
    cleanup_sql_durable fb_sql *relaxed = fb_sql_relaxed(l);
    assert_int_equal(synchronous_of(l), 1); /* NORMAL inside the scope */
    fb_err err = {{0}};
    assert_int_equal(fb_sql_begin(l, &err), 0);
    assert_int_equal(fb_sql_exec_texts(l, "INSERT INTO t (v) VALUES (?1)", "insert", &err, 1, v), 0);
    if (fail)
        fb_sql_rollback(l);
    else
        assert_int_equal(fb_sql_commit(l, &err), 0);
}

/* The façade itself: NORMAL inside the scope, FULL (2) once it ends,
 * whether its transaction committed or rolled back. */
static void test_relaxed_scope_reads_back_full(void **state)
{
    fixture *f = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/plain.db", f->tmp);
    fb_sql *db = NULL;
    fb_err err = {{0}};
    if (fb_sql_open(path, &db, &err) < 0)
        fail_msg("fb_sql_open: %s", err.msg);
    fb_sql_lock(db);
    assert_int_equal(synchronous_of(db), 2);
    assert_int_equal(fb_sql_exec_texts(db, "CREATE TABLE t (v TEXT)", "create", &err, 0), 0);
    fb_sql_unlock(db);

    int before = syncs();
    relaxed_insert(db, "a", false);
    relaxed_insert(db, "b", true);
    assert_int_equal(syncs(), before);
    fb_sql_lock(db);
    assert_int_equal(synchronous_of(db), 2);
    assert_int_equal(fb_sql_exec_texts(db, "INSERT INTO t (v) VALUES ('c')", "insert", &err, 0), 0);
    assert_int_equal(syncs(), before + 1);
    assert_int_equal(fb_sql_exists(db, "SELECT 1 FROM t WHERE v = ?1", "a", &err), 1);
    assert_int_equal(fb_sql_exists(db, "SELECT 1 FROM t WHERE v = ?1", "b", &err), 0);
    fb_sql_unlock(db);
    fb_sql_close(db);
}

/* ---- the preallocated write-ahead log ------------------------------------------ */

static off_t file_size(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return sb.st_size;
}

/* The whole file, *n bytes (malloc'd). */
static char *slurp(const char *path, size_t *n)
{
    *n = (size_t)file_size(path);
    char *b = malloc(*n + 1);
    assert_non_null(b);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fb_read_exact(fd, b, *n), 0);
    close(fd);
    return b;
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    char *b = slurp(from, &n);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(fb_write_all(fd, b, n), 0);
    close(fd);
    free(b);
}

static void test_preallocated_log(void **state)
{
    fixture *f = *state;
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->db);
    for (int i = 0; i < 3; i++)
        audit_one(f->st, "sb_before");
    size_t n0;
    char *before = slurp(wal, &n0);
    assert_true(n0 > 32);

    fb_err err = {{0}};
    if (fb_store_preallocate_log(f->st, &err) < 0)
        fail_msg("fb_store_preallocate_log: %s", err.msg);
    /* 1,000 frames between checkpoints and 64 more, of 24 + 4,096 bytes. */
    const off_t want = 32 + (off_t)(1000 + 64) * (4096 + 24);
    assert_int_equal(file_size(wal), want);
    size_t n1;
    char *after = slurp(wal, &n1);
    assert_memory_equal(after, before, n0); /* what SQLite wrote is untouched */
    for (size_t i = n0; i < n1; i++)
        if (after[i])
            fail_msg("byte %zu past the log's end is not zero", i);
    free(before);
    free(after);
    /* Again: the log is long enough, nothing is written. */
    assert_int_equal(fb_store_preallocate_log(f->st, &err), 0);
    assert_int_equal(file_size(wal), want);

    /* Every audit commit still syncs; past an automatic checkpoint (each
     * commit writes at least two pages) the log has not grown. */
    int s0 = syncs();
    audit_one(f->st, "sb_after");
    assert_int_equal(syncs() - s0, 1);
    for (int i = 0; i < 600; i++)
        audit_one(f->st, "sb_after");
    assert_int_equal(file_size(wal), want);

    /* A crash's leftovers: the database and its log copied while open. */
    char copy[128], from[160], to[160];
    snprintf(copy, sizeof copy, "%s/copy", f->tmp);
    assert_int_equal(mkdir(copy, 0700), 0);
    static const char *const names[] = {"forgebox.db", "forgebox.db-wal", "audit.key", "node.id"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(from, sizeof from, "%s/%s", f->tmp, names[i]);
        snprintf(to, sizeof to, "%s/%s", copy, names[i]);
        copy_file(from, to);
    }
    fb_store *st = NULL;
    if (fb_store_open(copy, &st, &err) < 0)
        fail_msg("fb_store_open (copy): %s", err.msg);
    uint64_t entries = 0, bad = 0;
    if (fb_audit_verify(st, &entries, &bad, &err) < 0)
        fail_msg("fb_audit_verify (copy): %s", err.msg);
    assert_int_equal(entries, 3 + 1 + 600);
    assert_int_equal(bad, 0);
    audit_one(st, "sb_recovered"); /* and the recovered chain goes on */
    fb_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_local_records_wait_for_the_audit_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_relaxed_write_restores_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relaxed_scope_reads_back_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preallocated_log, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
