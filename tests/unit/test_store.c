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

#include <sqlite3.h>

#include "store/identity.h"
#include "store/migrations.h"
#include "store/sandboxes.h"
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

    /* The node id: created once, private, the documented shape. */
    char node[200];
    snprintf(node, sizeof node, "%s/node.id", f->state);
    assert_int_equal(mode_of(node), 0600);
    const char *id = fb_store_node_id(st);
    assert_int_equal(strlen(id), 19);
    assert_memory_equal(id, "nd_", 3);
    assert_int_equal(strspn(id + 3, "0123456789abcdef"), 16);

    /* What is on disk, seen by another connection. */
    sqlite3 *raw = raw_open(f->db);
    char mode[16];
    query_str(raw, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal"); /* WAL is persistent in the file */
    /* Schema version 2 replaced daemon_pid by node_id; 3 added key parents. */
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM pragma_table_info('sandboxes') WHERE name = 'daemon_pid'"), 0);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM pragma_table_info('sandboxes') WHERE name = 'node_id'"), 1);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM pragma_table_info('api_keys') WHERE name = 'parent_key_id'"),
                     1);
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
    fb_team t = {"tm_1", "core", "2026-11-29T10:31:07.000000000Z"};
    assert_int_equal(fb_store_team_insert(st, &t, &err), FB_STORE_OK);
    char node[FB_STORE_NODE_ID_MAX];
    snprintf(node, sizeof node, "%s", fb_store_node_id(st));
    fb_store_close(st);

    for (int i = 0; i < 3; i++) {
        st = open_ok(f->state);
        assert_int_equal(fb_store_schema_version(st), (int)fb_migrations_count);
        assert_string_equal(fb_store_node_id(st), node); /* the node keeps its id */
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
    fb_err err = {{0}};
    /* The store's connection enforces references: a record of an unknown
     * team is refused with a typed status. */
    fb_sandbox_record r = {"sb-1", "tm_missing", "", "jail", 256, 1, "2026-11-29T10:31:07.000000000Z",
                           "2026-11-29T11:31:07.000000000Z", false};
    assert_int_equal(fb_store_sandbox_insert(st, &r, &err), FB_STORE_ENOTFOUND);
    fb_user u = {.id = "us_1", .username = "ann", .team_id = "tm_missing", .role = FB_ROLE_VIEWER};
    assert_int_equal(fb_store_user_insert(st, &u, "x", &err), FB_STORE_ENOTFOUND);
    fb_store_close(st);
}

/* A repository call that writes several rows writes all or none: a
 * bootstrap whose team name is taken leaves no org row behind. */
static void test_transactions(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    fb_err err = {{0}};
    fb_team taken = {"tm_0", "default", "2026-11-29T10:31:07.000000000Z"};
    assert_int_equal(fb_store_team_insert(st, &taken, &err), FB_STORE_OK);
    assert_int_equal(fb_store_team_insert(st, &taken, &err), FB_STORE_EEXISTS);
    fb_team again = {"tm_0", "other", "2026-11-29T10:31:07.000000000Z"};
    assert_int_equal(fb_store_team_insert(st, &again, &err), FB_STORE_ECOLLISION);

    fb_team t = {"tm_1", "default", "2026-11-29T10:31:07.000000000Z"};
    fb_user u = {.id = "us_1", .username = "root", .team_id = "tm_1", .role = FB_ROLE_ADMIN};
    fb_key_record k = {.info = {.id = "key_000000000001", .user_id = "us_1", .name = "k", .scopes = FB_PERM_ALL}};
    fb_identity_bootstrap b = {"org", "2026-11-29T10:31:07.000000000Z", &t, &u, "x", &k};
    assert_int_equal(fb_store_bootstrap(st, &b, &err), FB_STORE_EEXISTS);
    assert_non_null(strstr(err.msg, "a team named 'default' already exists"));
    bool init = true;
    assert_int_equal(fb_store_org_get(st, &init, NULL, &err), FB_STORE_OK);
    assert_false(init);
    fb_store_close(st);

    sqlite3 *raw = raw_open(f->db);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM org"), 0);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM users"), 0);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM api_keys"), 0);
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM teams"), 1);
    sqlite3_close(raw);
}

/* A second writer (another process's connection) waits for the first
 * instead of failing with "database is locked" - up to the busy timeout. */
struct insert_arg {
    fb_store *st;
    int rc;
    char msg[512];
};

static void *insert_thread(void *arg)
{
    struct insert_arg *a = arg;
    fb_err err = {{0}};
    fb_team t = {"tm_w", "waiter", "2026-11-29T10:31:07.000000000Z"};
    a->rc = fb_store_team_insert(a->st, &t, &err);
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    return NULL;
}

static void test_two_connections_serialise(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    sqlite3 *other = raw_open(f->db);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    struct insert_arg arg = {.st = st, .rc = -99};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, insert_thread, &arg), 0);
    usleep(200 * 1000);
    assert_int_equal(arg.rc, -99); /* still waiting for the other writer */
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    pthread_join(t, NULL);
    if (arg.rc != 0)
        fail_msg("second writer failed: %s", arg.msg);
    assert_int_equal(query_ll(other, "SELECT count(*) FROM teams WHERE name = 'waiter'"), 1);
    sqlite3_close(other);
    fb_store_close(st);
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

static void test_node_id_file_checked(void **state)
{
    fixture *f = *state;
    fb_store_close(open_ok(f->state));
    char node[200];
    snprintf(node, sizeof node, "%s/node.id", f->state);
    FILE *fp = fopen(node, "w");
    assert_non_null(fp);
    fputs("nd_not-hex-at-all", fp);
    fclose(fp);
    open_fails(f->state, "does not hold a node id");
    assert_int_equal(unlink(node), 0);
    fb_store *st = open_ok(f->state); /* a new node */
    assert_int_equal(strlen(fb_store_node_id(st)), 19);
    fb_store_close(st);
}

static void add_team(fb_store *st, const char *id)
{
    fb_err err = {{0}};
    fb_team t;
    memset(&t, 0, sizeof t);
    snprintf(t.id, sizeof t.id, "%s", id);
    snprintf(t.name, sizeof t.name, "n%s", id);
    snprintf(t.created_at, sizeof t.created_at, "2026-11-29T10:31:07.000000000Z");
    if (fb_store_team_insert(st, &t, &err) != 0)
        fail_msg("team: %s", err.msg);
}

static void add_sandbox(fb_store *st, const char *id)
{
    fb_err err = {{0}};
    fb_sandbox_record r = {id, "tm_a", "key_000000000001", "jail", 256, 2, "2026-11-29T10:31:07.000000000Z",
                           "2026-11-29T11:31:07.000000000Z", false};
    if (fb_store_sandbox_insert(st, &r, &err) != 0)
        fail_msg("sandbox: %s", err.msg);
}

/* Each gateway lists (and so reaps) only its own node's records. */
static void test_sandbox_records_per_node(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    fb_err err = {{0}};
    add_team(st, "tm_a");
    add_sandbox(st, "sb-1");
    add_sandbox(st, "sb-2");
    add_sandbox(st, "sb-3");
    assert_int_equal(fb_store_sandbox_insert(st,
                                             &(fb_sandbox_record){"sb-1", "tm_a", "", "jail", 1, 1, "x", "y", false}, &err),
                     FB_STORE_ECOLLISION);
    /* sb-2 belongs to another gateway sharing the store. */
    sqlite3 *raw = raw_open(f->db);
    assert_int_equal(sqlite3_exec(raw, "UPDATE sandboxes SET node_id = 'nd_00000000000000ff' WHERE id = 'sb-2'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(fb_store_sandbox_set_state(st, "sb-3", "destroyed", &err), FB_STORE_OK);
    char(*ids)[FB_ID_MAX] = NULL;
    size_t n = 99;
    assert_int_equal(fb_store_sandbox_list_live(st, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "sb-1");
    free(ids);
    char when[64];
    query_str(raw, "SELECT destroyed_at FROM sandboxes WHERE id = 'sb-3'", when, sizeof when);
    assert_int_equal(strlen(when), 30); /* canonical RFC 3339 with nanoseconds */
    assert_int_equal(query_ll(raw, "SELECT count(*) FROM sandboxes WHERE id = 'sb-1' AND node_id = "
                                   "(SELECT node_id FROM sandboxes WHERE id = 'sb-3')"),
                     1);
    sqlite3_close(raw);

    assert_int_equal(fb_store_sandbox_set_state(st, "sb-1", "exploded", &err), FB_STORE_EINVAL);
    assert_int_equal(fb_store_sandbox_set_state(st, "sb-404", "failed", &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_sandbox_set_state(st, "sb-1", "failed", &err), FB_STORE_OK);
    assert_int_equal(fb_store_sandbox_list_live(st, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 0);
    assert_null(ids);
    fb_store_close(st);
}

/* A version-1 database with a live record is upgraded in place: the
 * record survives, without a node, and the first gateway reaps it. */
static void test_upgrade_from_version_1(void **state)
{
    fixture *f = *state;
    assert_int_equal(fb_mkdir_p(f->state, 0700, NULL), 0);
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open_v2(f->db, &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
    assert_int_equal(chmod(f->db, 0600), 0);
    assert_int_equal(sqlite3_exec(raw, fb_migrations[0].sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw,
                                  "PRAGMA user_version = 1;"
                                  "INSERT INTO teams VALUES ('tm_a', 'a', '2026-01-01T00:00:00Z');"
                                  "INSERT INTO sandboxes (id, team_id, backend, memory_mib, vcpus, state, created_at,"
                                  " expires_at, daemon_pid) VALUES ('sb-old', 'tm_a', 'vm', 512, 1, 'running',"
                                  " '2026-01-01T00:00:00Z', '2026-01-01T01:00:00Z', 4242)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(raw);
    fb_store *st = open_ok(f->state);
    assert_int_equal(fb_store_schema_version(st), (int)fb_migrations_count);
    char(*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    fb_err err = {{0}};
    assert_int_equal(fb_store_sandbox_list_live(st, &ids, &n, &err), FB_STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "sb-old");
    free(ids);
    fb_store_close(st);
}

static void add_key(fb_store *st, const char *id, const char *parent, int expect)
{
    fb_err err = {{0}};
    fb_key_record k;
    memset(&k, 0, sizeof k);
    snprintf(k.info.id, sizeof k.info.id, "%s", id);
    snprintf(k.info.user_id, sizeof k.info.user_id, "us_1");
    snprintf(k.info.name, sizeof k.info.name, "k");
    snprintf(k.info.created_at, sizeof k.info.created_at, "2026-11-29T10:31:07.000000000Z");
    snprintf(k.info.parent_key_id, sizeof k.info.parent_key_id, "%s", parent);
    k.info.scopes = FB_PERM_SANDBOXES_READ;
    int rc = fb_store_key_insert(st, &k, FB_ROLE_DEVELOPER, &err);
    if (rc != expect)
        fail_msg("key %s: %d (%s), want %d", id, rc, err.msg, expect);
}

/* Revoking a key revokes what it minted, transitively, in one step; a
 * key cannot be minted under a revoked parent afterwards. */
static void test_key_revoke_tree(void **state)
{
    fixture *f = *state;
    fb_store *st = open_ok(f->state);
    fb_err err = {{0}};
    add_team(st, "tm_a");
    fb_user u = {.id = "us_1", .username = "dev", .team_id = "tm_a", .role = FB_ROLE_DEVELOPER};
    assert_int_equal(fb_store_user_insert(st, &u, "x", &err), FB_STORE_OK);
    /* root -> a -> a1 -> a11, root -> b; other stands alone. */
    add_key(st, "key_root", "", 0);
    add_key(st, "key_a", "key_root", 0);
    add_key(st, "key_a1", "key_a", 0);
    add_key(st, "key_a11", "key_a1", 0);
    add_key(st, "key_b", "key_root", 0);
    add_key(st, "key_other", "", 0);
    add_key(st, "key_x", "key_missing", FB_STORE_ECONFLICT);
    add_key(st, "key_y", "", 0);
    /* The owner's role changed since the caller read it. */
    fb_key_record k = {.info = {.id = "key_z", .user_id = "us_1", .name = "z", .scopes = 1}};
    assert_int_equal(fb_store_key_insert(st, &k, FB_ROLE_ADMIN, &err), FB_STORE_ECONFLICT);
    k.info.user_id[3] = '9';
    assert_int_equal(fb_store_key_insert(st, &k, FB_ROLE_DEVELOPER, &err), FB_STORE_ENOTFOUND);

    char(*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    assert_int_equal(fb_store_key_revoke_tree(st, "key_a1", "2026-12-01T00:00:00.000000000Z", &ids, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "key_a1");
    assert_string_equal(ids[1], "key_a11");
    free(ids);
    assert_int_equal(fb_store_key_revoke_tree(st, "key_root", "2026-12-02T00:00:00.000000000Z", &ids, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(ids[0], "key_root");
    assert_string_equal(ids[1], "key_a");
    assert_string_equal(ids[2], "key_b");
    free(ids);
    fb_api_key_info info;
    assert_int_equal(fb_store_key_get(st, "key_a11", &info, &err), 0);
    assert_string_equal(info.revoked_at, "2026-12-01T00:00:00.000000000Z"); /* the first revocation stays */
    assert_string_equal(info.parent_key_id, "key_a1");
    assert_int_equal(fb_store_key_get(st, "key_other", &info, &err), 0);
    assert_string_equal(info.revoked_at, "");
    add_key(st, "key_late", "key_a", FB_STORE_ECONFLICT);
    assert_int_equal(fb_store_key_revoke_tree(st, "key_nope", "2026-12-02T00:00:00.000000000Z", &ids, &n, &err),
                     FB_STORE_ENOTFOUND);
    assert_null(ids);
    fb_store_close(st);
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(fb_store_status_name(FB_STORE_OK), "ok");
    assert_string_equal(fb_store_status_name(FB_STORE_ENOTFOUND), "not_found");
    assert_string_equal(fb_store_status_name(FB_STORE_ECOLLISION), "collision");
    assert_string_equal(fb_store_status_name(FB_STORE_EBUSY), "busy");
    assert_string_equal(fb_store_status_name(-1000), "unknown");
}

/* The store URL: SQLite only in the state directory, known schemes only,
 * and a PostgreSQL that cannot be reached is an error that does not
 * carry the password. */
static void test_store_urls(void **state)
{
    fixture *f = *state;
    fb_store *st = NULL;
    fb_err err = {{0}};
    char url[300];
    snprintf(url, sizeof url, "sqlite://%s", f->db);
    assert_int_equal(fb_store_open_url(f->state, url, &st, &err), 0);
    assert_string_equal(fb_store_engine_name(st), "sqlite");
    fb_store_close(st);
    assert_int_equal(fb_store_open_url(f->state, "sqlite:///elsewhere/forgebox.db", &st, &err), -1);
    assert_null(st);
    assert_non_null(strstr(err.msg, "a SQLite store is STATE_DIR/forgebox.db"));
    assert_int_equal(fb_store_open_url(f->state, "mysql://u:pw@h/db", &st, &err), -1);
    assert_string_equal(err.msg, "store URL: unknown scheme (expected sqlite:// or postgresql://)");
    assert_int_equal(fb_store_open_url(f->state, "postgresql://u:pw-s3cr3t@127.0.0.1:1/db", &st, &err), -1);
    assert_null(st);
    assert_non_null(strstr(err.msg, "cannot connect to PostgreSQL"));
    assert_null(strstr(err.msg, "pw-s3cr3t"));
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
        cmocka_unit_test_setup_teardown(test_node_id_file_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_records_per_node, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upgrade_from_version_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_revoke_tree, setup, teardown),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test_setup_teardown(test_store_urls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
