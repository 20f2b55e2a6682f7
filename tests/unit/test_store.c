/*
 * test_store.c - unit tests for the SQLite store (src/store/store.h).
 *
 * Every test works on a fresh state directory under a mkdtemp directory and
 * looks at the result from outside as well: the file modes on disk, and the
 * database through a second, raw SQLite connection, so a setting that only
 * the store's own connection believes in does not pass.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/migrations.h"
#include "store/store.h"

typedef struct fixture {
    char tmp[64];
    char state[128];
    char db[160];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->tmp, sizeof f->tmp, "/tmp/fb-test-store-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    /* Below the temporary directory, so that opening has to create it. */
    snprintf(f->state, sizeof f->state, "%s/state/sub", f->tmp);
    snprintf(f->db, sizeof f->db, "%s/forgebox.db", f->state);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fb_rm_rf(f->tmp);
    free(f);
    return 0;
}

/* ---- raw access, past the store ------------------------------------------ */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db = raw_open(path);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

static long long query_ll(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void query_str(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    snprintf(out, cap, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
}

static fb_store *open_ok(const char *dir)
{
    fb_store *st = NULL;
    fb_err err = {{0}};
    if (fb_store_open(dir, &st, &err) < 0)
        fail_msg("fb_store_open: %s", err.msg);
    assert_non_null(st);
    return st;
}

static void open_fails(const char *dir, const char *needle)
{
    fb_store *st = (fb_store *)1;
    fb_err err = {{0}};
    assert_int_equal(fb_store_open(dir, &st, &err), -1);
    assert_null(st);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not contain '%s'", err.msg, needle);
}

static unsigned mode_of(const char *path)
{
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    return sb.st_mode & 07777;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_migrations_compiled_in_order(void **state)
{
    (void)state;
    assert_true(fb_migrations_count >= 1);
    for (size_t i = 0; i < fb_migrations_count; i++) {
        assert_int_equal(fb_migrations[i].version, (int)i + 1);
        assert_int_equal(strlen(fb_migrations[i].sql), fb_migrations[i].len);
    }
    assert_string_equal(fb_migrations[0].name, "001_initial");
    assert_non_null(strstr(fb_migrations[0].sql, "CREATE TABLE audit_head"));
}

static void test_open_creates_everything(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    assert_string_equal(fb_store_state_dir(st), f->state);
    assert_int_equal(fb_store_schema_version(st), (int)fb_migrations_count);
    assert_int_equal(mode_of(f->state), 0700);
    assert_int_equal(mode_of(f->db), 0600);

    /* What the store's own connection runs with. */
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    char mode[16];
    query_str(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    assert_int_equal(query_ll(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(query_ll(db, "PRAGMA synchronous"), 2);
    fb_store_unlock(st);

    /* What is on disk, seen by another connection. */
    sqlite3 *raw = raw_open(f->db);
    query_str(raw, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal"); /* WAL is persistent in the file */
    assert_int_equal(query_ll(raw, "PRAGMA user_version"), (long long)fb_migrations_count);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                                   "('org', 'teams', 'users', 'api_keys', 'sandboxes', 'audit', 'audit_head')"),
                     7);
    sqlite3_close(raw);
    fb_store_close(st);

    char wal[200];
    snprintf(wal, sizeof wal, "%s-wal", f->db);
    /* A closed WAL database leaves no -wal behind, or one as private as the db. */
    struct stat sb;
    if (stat(wal, &sb) == 0)
        assert_int_equal(sb.st_mode & 077, 0);
}

static void test_reopen_is_idempotent(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    fb_err err = {{0}};
    fb_store_lock(st);
    assert_int_equal(fb_store_begin(st, &err), 0);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(fb_store_db(st),
                                        "INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)", -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, "tm_1", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, "core", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, "2026-11-29T10:31:07.000000000Z", -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    sqlite3_finalize(s);
    assert_int_equal(fb_store_commit(st, &err), 0);
    fb_store_unlock(st);
    fb_store_close(st);

    for (int i = 0; i < 3; i++) {
        st = open_ok(f->state);
        assert_int_equal(fb_store_schema_version(st), (int)fb_migrations_count);
        fb_store_close(st);
    }
    sqlite3 *raw = raw_open(f->db);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM teams"), 1);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM sqlite_master WHERE name = 'audit'"), 1);
    assert_int_equal(query_ll(raw, "PRAGMA user_version"), (long long)fb_migrations_count);
    sqlite3_close(raw);
}

static void test_newer_database_refused(void **state)
{
    fixture *f = *state;
    fb_store_close(open_ok(f->state));
    raw_exec(f->db, "PRAGMA user_version = 99");
    char want[96];
    snprintf(want, sizeof want, "has schema version 99, but this forgebox knows only versions up to %zu",
             fb_migrations_count);
    open_fails(f->state, want);
    open_fails(f->state, "written by a newer forgebox");
    /* Refused, not touched. */
    sqlite3 *raw = raw_open(f->db);
    assert_int_equal(query_ll(raw, "PRAGMA user_version"), 99);
    sqlite3_close(raw);
}

static void test_half_migrated_database_is_completed(void **state)
{
    fixture *f = *state;
    /* A database at version 0 with nothing in it: the same as fresh. */
    assert_int_equal(fb_mkdir_p(f->state, 0700, NULL), 0);
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
    sqlite3_close(raw);
    assert_int_equal(chmod(f->db, 0600), 0);
    fb_store *st = open_ok(f->state);
    assert_int_equal(fb_store_schema_version(st), (int)fb_migrations_count);
    fb_store_close(st);
}

static void test_state_dir_permissions(void **state)
{
    fixture *f = *state;
    assert_int_equal(fb_mkdir_p(f->state, 0700, NULL), 0);
    assert_int_equal(chmod(f->state, 0777), 0);
    open_fails(f->state, "is writable by group or others (mode 0777); run chmod go-w");
    assert_int_equal(chmod(f->state, 0770), 0);
    open_fails(f->state, "is writable by group or others (mode 0770)");
    /* Readable is the operator's choice (the image may live below it). */
    assert_int_equal(chmod(f->state, 0755), 0);
    fb_store_close(open_ok(f->state));
}

static void test_state_dir_not_a_directory(void **state)
{
    fixture *f = *state;
    char file[128];
    snprintf(file, sizeof file, "%s/plain", f->tmp);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    open_fails(file, "is not a directory");
    char below[160];
    snprintf(below, sizeof below, "%s/x", file);
    open_fails(below, "cannot create directory");
    open_fails("", "no state directory given");
}

static void test_database_file_permissions(void **state)
{
    fixture *f = *state;
    fb_store_close(open_ok(f->state));
    assert_int_equal(chmod(f->db, 0644), 0);
    open_fails(f->state, "is accessible to group or others (mode 0644); run chmod 600");
    assert_int_equal(chmod(f->db, 0600), 0);
    fb_store_close(open_ok(f->state));

    /* A symlink in place of the database is not followed. */
    char moved[200];
    snprintf(moved, sizeof moved, "%s/elsewhere.db", f->tmp);
    assert_int_equal(rename(f->db, moved), 0);
    assert_int_equal(symlink(moved, f->db), 0);
    open_fails(f->state, "cannot open database");
}

static void test_foreign_keys_enforced(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    fb_store_lock(st);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(fb_store_db(st),
                                        "INSERT INTO users (id, username, team_id, role, password_hash, created_at)"
                                        " VALUES ('us_1', 'ann', 'tm_missing', 'viewer', 'x', 'now')",
                                        -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_CONSTRAINT_FOREIGNKEY);
    sqlite3_finalize(s);
    fb_store_unlock(st);
    fb_store_close(st);
}

static void test_transactions(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    fb_err err = {{0}};
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    const char *ins = "INSERT INTO teams (id, name, created_at) VALUES ('tm_a', 'a', 'now')";

    assert_int_equal(fb_store_begin(st, &err), 0);
    assert_false(sqlite3_get_autocommit(db));
    /* Nested BEGIN is refused with a message, not silently merged. */
    assert_int_equal(fb_store_begin(st, &err), -1);
    assert_non_null(strstr(err.msg, "BEGIN IMMEDIATE"));
    assert_int_equal(sqlite3_exec(db, ins, NULL, NULL, NULL), SQLITE_OK);
    fb_store_rollback(st);
    assert_true(sqlite3_get_autocommit(db));
    assert_int_equal(query_ll(db, "SELECT count(*) FROM teams"), 0);
    fb_store_rollback(st); /* harmless outside a transaction */

    assert_int_equal(fb_store_begin(st, &err), 0);
    assert_int_equal(sqlite3_exec(db, ins, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(fb_store_commit(st, &err), 0);
    assert_int_equal(query_ll(db, "SELECT count(*) FROM teams"), 1);
    /* COMMIT with no transaction fails and says so. */
    assert_int_equal(fb_store_commit(st, &err), -1);
    assert_non_null(strstr(err.msg, "COMMIT"));
    fb_store_unlock(st);
    fb_store_close(st);

    sqlite3 *raw = raw_open(f->db);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM teams"), 1);
    sqlite3_close(raw);
}

/* A second writer (another process's connection) waits for the first
 * instead of failing with "database is locked" - up to the busy timeout. */
struct begin_arg {
    fb_store *st;
    int rc;
    char msg[512];
};

static void *begin_thread(void *arg)
{
    struct begin_arg *b = arg;
    fb_err err = {{0}};
    fb_store_lock(b->st);
    b->rc = fb_store_begin(b->st, &err);
    if (b->rc == 0)
        b->rc = fb_store_commit(b->st, &err);
    fb_store_unlock(b->st);
    snprintf(b->msg, sizeof b->msg, "%s", err.msg);
    return NULL;
}

static void test_two_connections_serialise(void **state)
{
    fixture *f = *state;
    fb_store *a = open_ok(f->state), *b = open_ok(f->state);
    fb_err err = {{0}};
    fb_store_lock(a);
    assert_int_equal(fb_store_begin(a, &err), 0);

    /* With a short timeout the second writer gives up, with a message. */
    sqlite3_busy_timeout(fb_store_db(b), 50);
    struct begin_arg arg = {.st = b, .rc = -2};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, begin_thread, &arg), 0);
    pthread_join(t, NULL);
    assert_int_equal(arg.rc, -1);
    assert_non_null(strstr(arg.msg, "database is locked"));

    /* With the store's own timeout it waits for the first to commit. */
    sqlite3_busy_timeout(fb_store_db(b), 5000);
    arg.rc = -2;
    assert_int_equal(pthread_create(&t, NULL, begin_thread, &arg), 0);
    usleep(200 * 1000);
    assert_int_equal(fb_store_commit(a, &err), 0);
    fb_store_unlock(a);
    pthread_join(t, NULL);
    if (arg.rc != 0)
        fail_msg("second writer failed: %s", arg.msg);
    fb_store_close(a);
    fb_store_close(b);
}

struct opener {
    const char *dir;
    int rc;
    int version;
};

static void *open_thread(void *arg)
{
    struct opener *o = arg;
    fb_store *st = NULL;
    fb_err err = {{0}};
    o->rc = fb_store_open(o->dir, &st, &err);
    if (o->rc == 0) {
        o->version = fb_store_schema_version(st);
        fb_store_close(st);
    } else {
        fprintf(stderr, "open_thread: %s\n", err.msg);
    }
    return NULL;
}

/* Several processes starting at once on a fresh state directory each
 * apply the migrations at most once between them. */
static void test_concurrent_first_open(void **state)
{
    fixture *f = *state;
    enum { N = 6 };
    pthread_t t[N];
    struct opener o[N];
    for (int i = 0; i < N; i++) {
        o[i] = (struct opener){.dir = f->state, .rc = -2};
        assert_int_equal(pthread_create(&t[i], NULL, open_thread, &o[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(o[i].rc, 0);
        assert_int_equal(o[i].version, (int)fb_migrations_count);
    }
    sqlite3 *raw = raw_open(f->db);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM sqlite_master WHERE name = 'audit_head'"), 1);
    sqlite3_close(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_compiled_in_order),
        cmocka_unit_test_setup_teardown(test_open_creates_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_database_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_migrated_database_is_completed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_dir_permissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_dir_not_a_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_file_permissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_keys_enforced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_connections_serialise, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_first_open, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
