/*
 * test_auth.c - unit tests for identity and API keys (src/auth/auth.h)
 * against the real store (src/store/store.h).
 *
 * Each test gets a fresh state directory and an initialised org (team
 * "default", admin "root" with a known password and a bootstrap key), so
 * tests never depend on each other.  Keys are exercised end to end:
 * created, presented as "Bearer ..." headers, refused for every documented
 * reason with the exact fb_auth_fail, and the database file is read raw to
 * show that neither a key nor its secret ever reaches it.  Error messages
 * are checked not to carry key text wherever a key was involved.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "store/store.h"

#define ROOT_PASSWORD "correct horse battery staple"

typedef struct fx {
    char root[256];
    char state[PATH_MAX];
    fb_store *st;
    char admin_key[FB_AUTH_KEY_TEXT_MAX];
    fb_user admin;
    fb_team team; /* "default" */
} fx;

/* ---- helpers ------------------------------------------------------------------- */

static void open_store(fx *f)
{
    fb_err err = {""};
    if (fb_store_open(f->state, &f->st, &err) < 0)
        fail_msg("fb_store_open: %s", err.msg);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->root, sizeof f->root, "/tmp/fb-test-auth-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->state, sizeof f->state, "%s/state", f->root);
    open_store(f);
    fb_err err = {""};
    char gen[FB_AUTH_GENERATED_PASSWORD_MAX] = "x";
    int rc = fb_auth_init_org(f->st, "Example Org", "root", ROOT_PASSWORD, gen, f->admin_key, &err);
    if (rc != 0)
        fail_msg("init: %s", err.msg);
    assert_string_equal(gen, ""); /* a password was given: nothing generated */
    assert_int_equal(fb_auth_user_get_by_name(f->st, "root", &f->admin, &err), 0);
    assert_int_equal(fb_auth_team_get_by_name(f->st, "default", &f->team, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    fb_store_close(f->st);
    fb_rm_rf(f->root);
    free(f);
    return 0;
}

static void bearer(char *out, size_t cap, const char *key)
{
    int n = snprintf(out, cap, "Bearer %s", key);
    assert_true(n > 0 && (size_t)n < cap);
}

/* Authenticates "Bearer <key>"; returns the failure reason. */
static fb_auth_fail auth_key(fx *f, const char *key, fb_principal *p, fb_err *err)
{
    char h[FB_AUTH_HEADER_MAX * 2];
    bearer(h, sizeof h, key);
    fb_auth_fail why = (fb_auth_fail)99;
    fb_principal scratch;
    int rc = fb_auth_key_authenticate(f->st, h, p ? p : &scratch, &why, err);
    assert_int_equal(rc, why == FB_AUTH_FAIL_NONE ? 0 : -1);
    return why;
}

static fb_auth_fail auth_header(fx *f, const char *h, fb_err *err)
{
    fb_auth_fail why = (fb_auth_fail)99;
    fb_principal p;
    memset(&p, 0x5a, sizeof p);
    int rc = fb_auth_key_authenticate(f->st, h, &p, &why, err);
    assert_int_equal(rc, why == FB_AUTH_FAIL_NONE ? 0 : -1);
    if (rc < 0) { /* a failure leaves nothing usable behind */
        assert_string_equal(p.user_id, "");
        assert_int_equal(p.role, FB_ROLE_NONE);
        assert_int_equal(p.scopes, 0);
    }
    return why;
}

static fb_user make_user(fx *f, const char *name, const char *team_id, fb_role role)
{
    fb_user u;
    fb_err err = {""};
    int rc = fb_auth_user_create(f->st, name, team_id, role, "a long enough password", &u, &err);
    if (rc != 0)
        fail_msg("user_create %s: %s", name, err.msg);
    return u;
}

static void make_key(fx *f, const char *user_id, fb_perm scopes, const char *expires,
                     char key[FB_AUTH_KEY_TEXT_MAX], char id[FB_ID_MAX])
{
    fb_err err = {""};
    int rc = fb_auth_key_create(f->st, user_id, "test key", scopes, expires, key, id, &err);
    if (rc != 0)
        fail_msg("key_create: %s", err.msg);
}

/* A second, raw connection to the store's database: what is on disk. */
static sqlite3 *raw_db(fx *f)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/forgebox.db", f->state);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* Runs one fixed statement with text parameters (test-only raw access). */
static void raw_exec(fx *f, const char *sql, const char *p1, const char *p2)
{
        sqlite3 *db = raw_db(f);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    if (p1)
        assert_int_equal(sqlite3_bind_text(s, 1, p1, -1, SQLITE_TRANSIENT), SQLITE_OK);
    if (p2)
        assert_int_equal(sqlite3_bind_text(s, 2, p2, -1, SQLITE_TRANSIENT), SQLITE_OK);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    sqlite3_close(db);
    assert_int_equal(rc, SQLITE_DONE);
}

static long raw_count(fx *f, const char *sql)
{
        sqlite3 *db = raw_db(f);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    long n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Key text shape: fbk_<12 hex>_<43 base64url>, and id = key_<same hex>. */
static void assert_key_shape(const char *key, const char *id)
{
    assert_int_equal(strlen(key), FB_AUTH_KEY_TEXT_LEN);
    assert_memory_equal(key, "fbk_", 4);
    assert_true(is_hex(key + 4, 12));
    assert_int_equal(key[16], '_');
    for (size_t i = 17; i < FB_AUTH_KEY_TEXT_LEN; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                               key[i]));
    assert_int_equal(strlen(id), 16);
    assert_memory_equal(id, "key_", 4);
    assert_memory_equal(id + 4, key + 4, 12);
}

static void assert_no_key_in(const char *msg, const char *key)
{
    assert_null(strstr(msg, key));
    assert_null(strstr(msg, key + 17)); /* the secret part alone */
}

/* Reads a whole file (or returns NULL/0 when absent). */
static unsigned char *slurp(const char *path, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    unsigned char *buf = malloc((size_t)sb.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(fb_read_exact(fd, buf, (size_t)sb.st_size), 0);
    close(fd);
    *len = (size_t)sb.st_size;
    return buf;
}

static bool contains(const unsigned char *hay, size_t hlen, const void *needle, size_t nlen)
{
    return hlen >= nlen && memmem(hay, hlen, needle, nlen) != NULL;
}

/* ---- passwords ------------------------------------------------------------------- */

static void test_password_rules(void **state)
{
    (void)state;
    fb_err err = {""};
    assert_int_equal(fb_auth_password_check_rules("12345678901", &err), FB_AUTH_EINVAL);
    assert_string_equal(err.msg, "password shorter than 12 characters");
    assert_int_equal(fb_auth_password_check_rules("123456789012", &err), 0);
    assert_int_equal(fb_auth_password_check_rules(NULL, &err), FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_password_check_rules("", &err), FB_AUTH_EINVAL);
    /* Characters, not bytes: 11 two-byte characters are too short. */
    assert_int_equal(fb_auth_password_check_rules("ééééééééééé", &err), FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_password_check_rules("éééééééééééé", &err), 0);
    char big[FB_AUTH_PASSWORD_MAX + 2];
    memset(big, 'p', sizeof big);
    big[FB_AUTH_PASSWORD_MAX] = '\0';
    assert_int_equal(fb_auth_password_check_rules(big, &err), 0);
    big[FB_AUTH_PASSWORD_MAX] = 'p';
    big[FB_AUTH_PASSWORD_MAX + 1] = '\0';
    assert_int_equal(fb_auth_password_check_rules(big, &err), FB_AUTH_EINVAL);
    assert_string_equal(err.msg, "password longer than 1024 bytes");
    char h[FB_AUTH_PWHASH_MAX];
    assert_int_equal(fb_auth_password_hash("short", h, &err), FB_AUTH_EINVAL);
}

static void test_password_hashing(void **state)
{
    (void)state;
    fb_err err = {""};
    char h1[FB_AUTH_PWHASH_MAX], h2[FB_AUTH_PWHASH_MAX];
    assert_int_equal(fb_auth_password_hash(ROOT_PASSWORD, h1, &err), 0);
    assert_int_equal(fb_auth_password_hash(ROOT_PASSWORD, h2, &err), 0);
    assert_memory_equal(h1, "$argon2id$", 10);
    assert_null(strstr(h1, ROOT_PASSWORD));
    assert_string_not_equal(h1, h2); /* salted */
    assert_true(fb_auth_password_verify(h1, ROOT_PASSWORD));
    assert_true(fb_auth_password_verify(h2, ROOT_PASSWORD));
    assert_false(fb_auth_password_verify(h1, ROOT_PASSWORD "x"));
    assert_false(fb_auth_password_verify(h1, "correct horse battery stapl"));
    assert_false(fb_auth_password_verify(h1, ""));
    assert_false(fb_auth_password_verify(h1, NULL));
    assert_false(fb_auth_password_verify(NULL, ROOT_PASSWORD));
    assert_false(fb_auth_password_verify("", ROOT_PASSWORD));
    assert_false(fb_auth_password_verify("$argon2id$v=19$garbage", ROOT_PASSWORD));
    h1[strlen(h1) - 2] ^= 1; /* a tampered digest */
    assert_false(fb_auth_password_verify(h1, ROOT_PASSWORD));

    char g1[FB_AUTH_GENERATED_PASSWORD_MAX], g2[FB_AUTH_GENERATED_PASSWORD_MAX];
    assert_int_equal(fb_auth_password_generate(g1, &err), 0);
    assert_int_equal(fb_auth_password_generate(g2, &err), 0);
    assert_int_equal(strlen(g1), FB_AUTH_GENERATED_PASSWORD_LEN);
    assert_string_not_equal(g1, g2);
    for (size_t i = 0; i < FB_AUTH_GENERATED_PASSWORD_LEN; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", g1[i]));
    assert_int_equal(fb_auth_password_check_rules(g1, &err), 0);
}

static void test_time(void **state)
{
    (void)state;
    struct timespec ts;
    char out[FB_TIME_MAX];
    assert_int_equal(fb_time_parse("2030-01-31T12:00:00Z", &ts), 0);
    assert_int_equal(ts.tv_sec, 1896091200);
    assert_int_equal(ts.tv_nsec, 0);
    assert_int_equal(fb_time_normalise("2030-01-31T13:30:00.5+01:30", out), 0);
    assert_string_equal(out, "2030-01-31T12:00:00.500000000Z");
    assert_int_equal(fb_time_normalise("2024-02-29T23:59:59.123456789-00:00", out), 0);
    assert_string_equal(out, "2024-02-29T23:59:59.123456789Z");
    const char *bad[] = {"",
                         "2030-01-31",
                         "2030-01-31 12:00:00Z",
                         "2030-01-31T12:00:00",
                         "2030-13-01T00:00:00Z",
                         "2023-02-29T00:00:00Z",
                         "2030-01-31T24:00:00Z",
                         "2030-01-31T12:60:00Z",
                         "2030-01-31T12:00:60Z",
                         "2030-01-31T12:00:00.Z",
                         "2030-01-31T12:00:00.1234567890Z",
                         "2030-01-31T12:00:00+1:00",
                         "2030-01-31T12:00:00Z ",
                         "2030-1-31T12:00:00Z",
                         "+030-01-31T12:00:00Z",
                         NULL};
    for (size_t i = 0; bad[i]; i++)
        assert_int_equal(fb_time_parse(bad[i], &ts), -1);
    assert_int_equal(fb_time_parse(NULL, &ts), -1);
    fb_time_now(out);
    assert_int_equal(strlen(out), 30);
    assert_int_equal(fb_time_parse(out, &ts), 0);
}

/* ---- org, teams, users ------------------------------------------------------------- */

static void test_init_org(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    bool done = false;
    char name[FB_AUTH_ORG_NAME_MAX + 1];
    assert_int_equal(fb_auth_org_get(f->st, &done, name, &err), 0);
    assert_true(done);
    assert_string_equal(name, "Example Org");
    assert_int_equal(f->admin.role, FB_ROLE_ADMIN);
    assert_string_equal(f->admin.team_id, f->team.id);
    assert_false(f->admin.disabled);

    /* The bootstrap key is an admin key with every permission. */
    fb_principal p;
    assert_int_equal(auth_key(f, f->admin_key, &p, &err), FB_AUTH_FAIL_NONE);
    assert_string_equal(p.user_id, f->admin.id);
    assert_string_equal(p.team_id, f->team.id);
    assert_int_equal(p.role, FB_ROLE_ADMIN);
    assert_true(p.is_admin);
    assert_int_equal(p.scopes, FB_PERM_ALL);
    assert_int_equal(p.org_enabled, 0);
    fb_api_key_info *keys = NULL;
    size_t n = 0;
    assert_int_equal(fb_auth_key_list(f->st, f->admin.id, &keys, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_key_shape(f->admin_key, keys[0].id);
    assert_string_equal(p.key_id, keys[0].id);
    assert_string_equal(keys[0].expires_at, "");
    free(keys);

    /* Twice: refused, and nothing changes. */
    char key2[FB_AUTH_KEY_TEXT_MAX] = "unchanged?";
    char gen[FB_AUTH_GENERATED_PASSWORD_MAX];
    assert_int_equal(fb_auth_init_org(f->st, "Other", "root2", NULL, gen, key2, &err),
                     FB_AUTH_EEXISTS);
    assert_non_null(strstr(err.msg, "already initialised"));
    assert_string_equal(key2, "");
    assert_string_equal(gen, "");
    assert_int_equal(fb_auth_init_org(f->st, "Other", "root", ROOT_PASSWORD, NULL, key2, &err),
                     FB_AUTH_EEXISTS);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM org"), 1);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM teams"), 1);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM users"), 1);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM api_keys"), 1);
    assert_int_equal(fb_auth_org_get(f->st, &done, name, &err), 0);
    assert_string_equal(name, "Example Org");
}

static void test_init_org_generated_password(void **state)
{
    (void)state;
    fx f;
    memset(&f, 0, sizeof f);
    snprintf(f.root, sizeof f.root, "/tmp/fb-test-auth-XXXXXX");
    assert_non_null(mkdtemp(f.root));
    snprintf(f.state, sizeof f.state, "%s/state", f.root);
    open_store(&f);
    fb_err err = {""};
    bool done = true;
    assert_int_equal(fb_auth_org_get(f.st, &done, NULL, &err), 0);
    assert_false(done);

    /* Bad input is refused before anything is written. */
    char gen[FB_AUTH_GENERATED_PASSWORD_MAX], key[FB_AUTH_KEY_TEXT_MAX];
    assert_int_equal(fb_auth_init_org(f.st, "Org", "Root", NULL, gen, key, &err), FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_init_org(f.st, "", "root", NULL, gen, key, &err), FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_init_org(f.st, "Org", "root", "short", gen, key, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_init_org(f.st, "Org", "root", NULL, NULL, key, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_org_get(f.st, &done, NULL, &err), 0);
    assert_false(done);
    assert_int_equal(raw_count(&f, "SELECT count(*) FROM teams"), 0);

    assert_int_equal(fb_auth_init_org(f.st, "Org", "root", NULL, gen, key, &err), 0);
    assert_int_equal(strlen(gen), FB_AUTH_GENERATED_PASSWORD_LEN);
    fb_principal p;
    fb_auth_fail why;
    assert_int_equal(fb_auth_password_login(f.st, "root", gen, &p, &why, &err), 0);
    assert_int_equal(why, FB_AUTH_FAIL_NONE);
    assert_int_equal(p.role, FB_ROLE_ADMIN);
    assert_string_equal(p.key_id, "");
    assert_int_equal(p.scopes, FB_PERM_ALL);
    assert_int_equal(auth_key(&f, key, NULL, &err), FB_AUTH_FAIL_NONE);

    /* The generated password is not in the database in clear. */
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/forgebox.db", f.state);
    size_t len;
    unsigned char *db = slurp(path, &len);
    assert_non_null(db);
    assert_false(contains(db, len, gen, strlen(gen)));
    free(db);
    snprintf(path, sizeof path, "%s/forgebox.db-wal", f.state);
    db = slurp(path, &len);
    if (db)
        assert_false(contains(db, len, gen, strlen(gen)));
    free(db);

    fb_store_close(f.st);
    fb_rm_rf(f.root);
}

static void test_teams_and_users(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_team blue, t;
    assert_int_equal(fb_auth_team_create(f->st, "blue", &blue, &err), 0);
    assert_int_equal(strlen(blue.id), 19);
    assert_memory_equal(blue.id, "tm_", 3);
    assert_true(is_hex(blue.id + 3, 16));
    assert_string_equal(blue.name, "blue");
    assert_int_equal(fb_auth_team_create(f->st, "blue", &t, &err), FB_AUTH_EEXISTS);
    assert_non_null(strstr(err.msg, "blue"));
    const char *bad_names[] = {"", "Blue", "a b", "a/b", "x'; DROP TABLE teams; --", "é",
                               "0123456789012345678901234567890123456789012345678901234567890123x",
                               NULL};
    for (size_t i = 0; bad_names[i]; i++) {
        assert_int_equal(fb_auth_team_create(f->st, bad_names[i], &t, &err), FB_AUTH_EINVAL);
        assert_int_equal(fb_auth_user_create(f->st, bad_names[i], blue.id, FB_ROLE_VIEWER,
                                             "a long enough password", NULL, &err),
                         FB_AUTH_EINVAL);
    }
    assert_int_equal(fb_auth_team_create(f->st, "0123456789012345678901234567890123456789012345678901234567890123", &t, &err), 0);
    assert_int_equal(fb_auth_team_get(f->st, blue.id, &t, &err), 0);
    assert_string_equal(t.name, "blue");
    assert_string_equal(t.created_at, blue.created_at);
    assert_int_equal(fb_auth_team_get(f->st, "tm_0000000000000000", &t, &err), FB_AUTH_ENOTFOUND);
    assert_int_equal(fb_auth_team_get(f->st, "nonsense", &t, &err), FB_AUTH_ENOTFOUND);
    assert_int_equal(fb_auth_team_get_by_name(f->st, "red", &t, &err), FB_AUTH_ENOTFOUND);
    fb_team *teams = NULL;
    size_t n = 0;
    assert_int_equal(fb_auth_team_list(f->st, &teams, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(teams[0].name, "0123456789012345678901234567890123456789012345678901234567890123");
    assert_string_equal(teams[1].name, "blue");
    assert_string_equal(teams[2].name, "default");
    free(teams);

    /* Users. */
    fb_user u, g;
    assert_int_equal(fb_auth_user_create(f->st, "alice", blue.id, FB_ROLE_DEVELOPER,
                                         "a long enough password", &u, &err),
                     0);
    assert_memory_equal(u.id, "us_", 3);
    assert_int_equal(strlen(u.id), 19);
    assert_true(is_hex(u.id + 3, 16));
    assert_string_equal(u.team_id, blue.id);
    assert_int_equal(u.role, FB_ROLE_DEVELOPER);
    assert_int_equal(fb_auth_user_create(f->st, "alice", f->team.id, FB_ROLE_VIEWER,
                                         "a long enough password", &g, &err),
                     FB_AUTH_EEXISTS);
    assert_non_null(strstr(err.msg, "alice"));
    assert_int_equal(fb_auth_user_create(f->st, "bob", "tm_0000000000000000", FB_ROLE_VIEWER,
                                         "a long enough password", &g, &err),
                     FB_AUTH_ENOTFOUND);
    assert_int_equal(fb_auth_user_create(f->st, "bob", blue.id, FB_ROLE_NONE,
                                         "a long enough password", &g, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_user_create(f->st, "bob", blue.id, (fb_role)17,
                                         "a long enough password", &g, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_user_create(f->st, "bob", blue.id, FB_ROLE_VIEWER, "too short", &g,
                                         &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_user_create(f->st, "bob.b-2_x", blue.id, FB_ROLE_VIEWER,
                                         "a long enough password", &g, &err),
                     0);
    assert_int_equal(fb_auth_user_get(f->st, u.id, &g, &err), 0);
    assert_string_equal(g.username, "alice");
    assert_string_equal(g.created_at, u.created_at);
    assert_int_equal(fb_auth_user_get_by_name(f->st, "alice", &g, &err), 0);
    assert_string_equal(g.id, u.id);
    assert_int_equal(fb_auth_user_get(f->st, "us_0000000000000000", &g, &err), FB_AUTH_ENOTFOUND);
    assert_int_equal(fb_auth_user_get_by_name(f->st, "nobody", &g, &err), FB_AUTH_ENOTFOUND);

    fb_user *users = NULL;
    assert_int_equal(fb_auth_user_list(f->st, NULL, &users, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(users[0].username, "alice");
    assert_string_equal(users[1].username, "bob.b-2_x");
    assert_string_equal(users[2].username, "root");
    free(users);
    assert_int_equal(fb_auth_user_list(f->st, blue.id, &users, &n, &err), 0);
    assert_int_equal(n, 2);
    free(users);
    assert_int_equal(fb_auth_user_list(f->st, f->team.id, &users, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(users[0].username, "root");
    free(users);
    assert_int_equal(fb_auth_user_list(f->st, "tm_0000000000000000", &users, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(users);

    /* The role column is what the schema allows. */
    assert_int_equal(raw_count(f, "SELECT count(*) FROM users WHERE role = 'developer'"), 1);
}

static void test_password_login(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_principal p;
    fb_auth_fail why;
    assert_int_equal(fb_auth_password_login(f->st, "root", ROOT_PASSWORD, &p, &why, &err), 0);
    assert_int_equal(why, FB_AUTH_FAIL_NONE);
    assert_string_equal(p.user_id, f->admin.id);
    assert_true(p.is_admin);
    assert_int_equal(fb_auth_password_login(f->st, "root", "wrong password!!", &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_BAD_SECRET);
    assert_null(strstr(err.msg, "wrong password!!"));
    assert_string_equal(p.user_id, "");
    assert_int_equal(fb_auth_password_login(f->st, "nobody", ROOT_PASSWORD, &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_UNKNOWN);
    assert_int_equal(fb_auth_password_login(f->st, "No Body", ROOT_PASSWORD, &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_MALFORMED);
    assert_int_equal(fb_auth_password_login(f->st, NULL, ROOT_PASSWORD, &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_MISSING);

    fb_user v = make_user(f, "vera", f->team.id, FB_ROLE_VIEWER);
    assert_int_equal(fb_auth_password_login(f->st, "vera", "a long enough password", &p, &why, &err), 0);
    assert_int_equal(p.role, FB_ROLE_VIEWER);
    assert_false(p.is_admin);
    assert_int_equal(p.scopes, fb_role_perms(FB_ROLE_VIEWER));
    assert_int_equal(fb_auth_user_set_password(f->st, v.id, "a brand new password", &err), 0);
    assert_int_equal(fb_auth_password_login(f->st, "vera", "a long enough password", &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_BAD_SECRET);
    assert_int_equal(fb_auth_password_login(f->st, "vera", "a brand new password", &p, &why, &err), 0);
    assert_int_equal(fb_auth_user_set_password(f->st, v.id, "short", &err), FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_user_set_password(f->st, "us_0000000000000000", "a brand new password", &err),
                     FB_AUTH_ENOTFOUND);
    /* A disabled user cannot log in, even with the right password. */
    assert_int_equal(fb_auth_user_set_disabled(f->st, v.id, true, &err), 0);
    assert_int_equal(fb_auth_password_login(f->st, "vera", "a brand new password", &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_DISABLED);
    assert_int_equal(fb_auth_user_set_disabled(f->st, "us_0000000000000000", true, &err),
                     FB_AUTH_ENOTFOUND);
}

/* ---- API keys ------------------------------------------------------------------------- */

static void test_key_lifecycle(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_user dev = make_user(f, "dave", f->team.id, FB_ROLE_DEVELOPER);
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX];
    fb_perm scopes = FB_PERM_SANDBOXES_EXEC | FB_PERM_SANDBOXES_READ | FB_PERM_KEYS_MANAGE;
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "ci runner", scopes, NULL, key, id, &err), 0);
    assert_key_shape(key, id);

    fb_principal p;
    assert_int_equal(auth_key(f, key, &p, &err), FB_AUTH_FAIL_NONE);
    assert_string_equal(p.user_id, dev.id);
    assert_string_equal(p.team_id, f->team.id);
    assert_string_equal(p.key_id, id);
    assert_int_equal(p.role, FB_ROLE_DEVELOPER);
    assert_false(p.is_admin);
    assert_int_equal(p.scopes, scopes);
    fb_decision d;
    assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_EXEC, f->team.id, &d), FB_ALLOW);
    assert_int_equal(fb_policy_decide(&p, FB_PERM_TASKS_CREATE, f->team.id, &d), FB_DENY);
    assert_string_equal(d.reason, "key scope lacks tasks:create");

    /* Metadata only; last_used_at was set by the authentication. */
    fb_api_key_info info;
    assert_int_equal(fb_auth_key_get(f->st, id, &info, &err), 0);
    assert_string_equal(info.id, id);
    assert_string_equal(info.user_id, dev.id);
    assert_string_equal(info.name, "ci runner");
    assert_int_equal(info.scopes, scopes);
    assert_string_equal(info.revoked_at, "");
    assert_string_equal(info.expires_at, "");
    assert_int_not_equal(info.last_used_at[0], '\0');
    fb_api_key_info *keys = NULL;
    size_t n = 0;
    assert_int_equal(fb_auth_key_list(f->st, dev.id, &keys, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].id, id);
    free(keys);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM api_keys WHERE scopes = "
                                  "'[\"keys:manage\",\"sandboxes:read\",\"sandboxes:exec\"]'"),
                     0); /* canonical order, not insertion order: */
    assert_int_equal(raw_count(f, "SELECT count(*) FROM api_keys WHERE scopes = "
                                  "'[\"sandboxes:read\",\"sandboxes:exec\",\"keys:manage\"]'"),
                     1);

    /* Revoked by its owner (through the key itself, which has keys:manage):
     * the very next authentication fails. */
    assert_int_equal(fb_auth_key_revoke(f->st, &p, id, &err), 0);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_REVOKED);
    assert_no_key_in(err.msg, key);
    assert_int_equal(fb_auth_key_get(f->st, id, &info, &err), 0);
    assert_int_not_equal(info.revoked_at[0], '\0');
    char first[FB_TIME_MAX];
    snprintf(first, sizeof first, "%s", info.revoked_at);
    /* Again: fine, and the first revocation time stays. */
    assert_int_equal(fb_auth_key_revoke(f->st, &p, id, &err), 0);
    assert_int_equal(fb_auth_key_get(f->st, id, &info, &err), 0);
    assert_string_equal(info.revoked_at, first);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_REVOKED);
    /* Still listed, as revoked. */
    assert_int_equal(fb_auth_key_list(f->st, dev.id, &keys, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].revoked_at, first);
    free(keys);
    sodium_memzero(key, sizeof key);
}

/* Finding 14: revoking a key revokes every key minted through it,
 * transitively and at once; keys minted otherwise survive, and a revoked
 * key cannot mint a child afterwards. */
static void test_key_revoke_cascades(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_user dev = make_user(f, "carl", f->team.id, FB_ROLE_DEVELOPER);
    fb_perm scopes = FB_PERM_SANDBOXES_READ | FB_PERM_KEYS_MANAGE;
    char root[FB_AUTH_KEY_TEXT_MAX], root_id[FB_ID_MAX], side[FB_AUTH_KEY_TEXT_MAX], side_id[FB_ID_MAX];
    make_key(f, dev.id, scopes, NULL, root, root_id);
    make_key(f, dev.id, scopes, NULL, side, side_id);
    char keys[3][FB_AUTH_KEY_TEXT_MAX], ids[3][FB_ID_MAX];
    const char *parent = root;
    for (int i = 0; i < 3; i++) { /* root -> 0 -> 1 -> 2 */
        fb_principal p;
        assert_int_equal(auth_key(f, parent, &p, &err), FB_AUTH_FAIL_NONE);
        assert_int_equal(fb_auth_key_create_as(f->st, &p, dev.id, "child", scopes, NULL, keys[i], ids[i], &err), 0);
        fb_api_key_info info;
        assert_int_equal(fb_auth_key_get(f->st, ids[i], &info, &err), 0);
        assert_string_equal(info.parent_key_id, i == 0 ? root_id : ids[i - 1]);
        parent = keys[i];
    }
    fb_principal pside, p2;
    assert_int_equal(auth_key(f, side, &pside, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(auth_key(f, keys[2], &p2, &err), FB_AUTH_FAIL_NONE);

    char(*revoked)[FB_ID_MAX] = NULL;
    size_t n = 0;
    assert_int_equal(fb_auth_key_revoke_tree(f->st, &pside, ids[0], &revoked, &n, &err), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(revoked[i], ids[i]);
    free(revoked);
    for (int i = 0; i < 3; i++)
        assert_int_equal(auth_key(f, keys[i], &p2, &err), FB_AUTH_FAIL_REVOKED);
    assert_int_equal(auth_key(f, root, &p2, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(auth_key(f, side, &p2, &err), FB_AUTH_FAIL_NONE);

    /* A principal that authenticated with keys[2] before the revocation
     * cannot mint a child now: the parent is checked in the transaction. */
    fb_principal stale = pside;
    snprintf(stale.key_id, sizeof stale.key_id, "%s", ids[2]);
    char late[FB_AUTH_KEY_TEXT_MAX], late_id[FB_ID_MAX];
    assert_int_equal(fb_auth_key_create_as(f->st, &stale, dev.id, "late", scopes, NULL, late, late_id, &err),
                     FB_AUTH_EDENIED);
    assert_non_null(strstr(err.msg, "is revoked"));
    assert_string_equal(late, "");

    /* Revoking the root now revokes it alone (its subtree is gone). */
    assert_int_equal(fb_auth_key_revoke_tree(f->st, &pside, root_id, &revoked, &n, &err), 0);
    assert_int_equal(n, 1);
    free(revoked);
    assert_int_equal(fb_auth_key_revoke(f->st, &pside, root_id, &err), 0); /* again: fine */
}

/* A key cannot mint one that outlives it (policy: fb_policy_key_expiry). */
static void test_key_child_expiry(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_user dev = make_user(f, "cleo", f->team.id, FB_ROLE_DEVELOPER);
    char k[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX], c[FB_AUTH_KEY_TEXT_MAX], cid[FB_ID_MAX];
    make_key(f, dev.id, FB_PERM_KEYS_MANAGE, "2099-01-01T00:00:00Z", k, id);
    fb_principal p;
    assert_int_equal(auth_key(f, k, &p, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(fb_auth_key_create_as(f->st, &p, dev.id, "c", FB_PERM_KEYS_MANAGE, NULL, c, cid, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_key_create_as(f->st, &p, dev.id, "c", FB_PERM_KEYS_MANAGE, "2099-01-01T00:00:01Z", c,
                                           cid, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_key_create_as(f->st, &p, dev.id, "c", FB_PERM_KEYS_MANAGE, "2099-01-01T01:00:00+01:00",
                                           c, cid, &err),
                     0);
}

static void test_key_revoke_rights(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_team blue;
    assert_int_equal(fb_auth_team_create(f->st, "blue", &blue, &err), 0);
    fb_user dev = make_user(f, "dave", f->team.id, FB_ROLE_DEVELOPER);
    fb_user dev2 = make_user(f, "dora", f->team.id, FB_ROLE_DEVELOPER);
    fb_user other = make_user(f, "oscar", blue.id, FB_ROLE_OPERATOR);
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX];
    char k2[FB_AUTH_KEY_TEXT_MAX], id2[FB_ID_MAX];
    char k3[FB_AUTH_KEY_TEXT_MAX], id3[FB_ID_MAX];
    make_key(f, dev.id, FB_PERM_SANDBOXES_READ, NULL, key, id);
    make_key(f, dev2.id, FB_PERM_KEYS_MANAGE, NULL, k2, id2);
    make_key(f, other.id, FB_PERM_KEYS_MANAGE | FB_PERM_AUDIT_READ, NULL, k3, id3);

    fb_principal pdev, pdev2, pother, padmin;
    assert_int_equal(auth_key(f, key, &pdev, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(auth_key(f, k2, &pdev2, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(auth_key(f, k3, &pother, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(auth_key(f, f->admin_key, &padmin, &err), FB_AUTH_FAIL_NONE);

    /* The owner without keys:manage in the key's scopes: denied. */
    assert_int_equal(fb_auth_key_revoke(f->st, &pdev, id, &err), FB_AUTH_EDENIED);
    assert_non_null(strstr(err.msg, "keys:manage"));
    /* Someone else, same team or not, non-admin: the key does not exist for them. */
    assert_int_equal(fb_auth_key_revoke(f->st, &pdev2, id, &err), FB_AUTH_ENOTFOUND);
    assert_int_equal(fb_auth_key_revoke(f->st, &pother, id, &err), FB_AUTH_ENOTFOUND);
    /* An admin key without admin:users: denied. */
    char ak[FB_AUTH_KEY_TEXT_MAX], aid[FB_ID_MAX];
    make_key(f, f->admin.id, FB_PERM_KEYS_MANAGE | FB_PERM_AUDIT_READ, NULL, ak, aid);
    fb_principal pnarrow;
    assert_int_equal(auth_key(f, ak, &pnarrow, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(fb_auth_key_revoke(f->st, &pnarrow, id, &err), FB_AUTH_EDENIED);
    assert_non_null(strstr(err.msg, "admin:users"));
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_NONE); /* still live */
    /* Unknown and malformed ids. */
    assert_int_equal(fb_auth_key_revoke(f->st, &padmin, "key_000000000000", &err), FB_AUTH_ENOTFOUND);
    assert_int_equal(fb_auth_key_revoke(f->st, &padmin, "key_'; --", &err), FB_AUTH_ENOTFOUND);
    assert_int_equal(fb_auth_key_revoke(f->st, &padmin, key, &err), FB_AUTH_ENOTFOUND);
    assert_no_key_in(err.msg, key);
    /* A forged principal claiming admin with the wrong role. */
    fb_principal forged = pdev2;
    forged.is_admin = true;
    assert_int_equal(fb_auth_key_revoke(f->st, &forged, id, &err), FB_AUTH_EDENIED);
    /* The admin with admin:users, across teams. */
    assert_int_equal(fb_auth_key_revoke(f->st, &padmin, id, &err), 0);
    assert_int_equal(fb_auth_key_revoke(f->st, &padmin, id3, &err), 0);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_REVOKED);
    assert_int_equal(auth_key(f, k3, NULL, &err), FB_AUTH_FAIL_REVOKED);
    assert_int_equal(auth_key(f, k2, NULL, &err), FB_AUTH_FAIL_NONE);
    /* An owner with keys:manage revokes their own. */
    assert_int_equal(fb_auth_key_revoke(f->st, &pdev2, id2, &err), 0);
    assert_int_equal(auth_key(f, k2, NULL, &err), FB_AUTH_FAIL_REVOKED);
}

static void test_key_expiry(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_user dev = make_user(f, "dave", f->team.id, FB_ROLE_DEVELOPER);
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX];

    /* A time in the past, or not RFC 3339, is refused at creation. */
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "k", FB_PERM_TASKS_READ,
                                        "2001-01-01T00:00:00Z", key, id, &err),
                     FB_AUTH_EINVAL);
    assert_string_equal(err.msg, "expires_at is in the past");
    assert_string_equal(key, "");
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "k", FB_PERM_TASKS_READ, "tomorrow", key,
                                        id, &err),
                     FB_AUTH_EINVAL);
    assert_non_null(strstr(err.msg, "RFC 3339"));

    /* In the future (given with an offset): works, stored normalised. */
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "k", FB_PERM_TASKS_READ,
                                        "2999-12-31T23:00:00-01:00", key, id, &err),
                     0);
    fb_api_key_info info;
    assert_int_equal(fb_auth_key_get(f->st, id, &info, &err), 0);
    assert_string_equal(info.expires_at, "3000-01-01T00:00:00.000000000Z");
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_NONE);

    /* Time passes (the row is moved into the past): expired. */
    char past[FB_TIME_MAX];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    time_t t = now.tv_sec - 1;
    gmtime_r(&t, &tm);
    strftime(past, sizeof past, "%Y-%m-%dT%H:%M:%S.000000000Z", &tm);
    raw_exec(f, "UPDATE api_keys SET expires_at = ?1 WHERE id = ?2", past, id);
    fb_auth_key_cache_flush(); /* the row was moved behind auth's back */
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_EXPIRED);
    assert_no_key_in(err.msg, key);
    /* A wrong secret on an expired key is still bad_secret: the key's state
     * is only told to someone holding its secret. */
    char wrong[FB_AUTH_KEY_TEXT_MAX];
    snprintf(wrong, sizeof wrong, "%s", key);
    wrong[20] = wrong[20] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_key(f, wrong, NULL, &err), FB_AUTH_FAIL_BAD_SECRET);
    /* A corrupt expiry fails closed. */
    raw_exec(f, "UPDATE api_keys SET expires_at = ?1 WHERE id = ?2", "soon", id);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_ERROR);
}

static void test_malformed_headers(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    const char *key = f->admin_key;
    char h[1024];
    fb_auth_fail why;
    fb_principal p;

    assert_int_equal(fb_auth_key_authenticate(f->st, NULL, &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_MISSING);

    /* The good one, to show the variants below fail for their flaw alone. */
    bearer(h, sizeof h, key);
    assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_NONE);
    snprintf(h, sizeof h, "bearer %s", key); /* the scheme is case-insensitive */
    assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_NONE);

    const char *fixed[] = {"", "Bearer", "Bearer ", " ", "Basic Zm9vOmJhcg==", "Bearer fbk_", NULL};
    for (size_t i = 0; fixed[i]; i++) {
        assert_int_equal(auth_header(f, fixed[i], &err), FB_AUTH_FAIL_MALFORMED);
    }
    const char *fmts[] = {
        "%s",                 /* no scheme */
        "Basic %s",           /* wrong scheme */
        "Token %s",
        "Bearer  %s",         /* two spaces */
        "Bearer\t%s",
        " Bearer %s",
        "Bearer %s ",         /* trailing space */
        "Bearer %s\r\n",
        "Bearer %sA",         /* one character too many */
        "Bearer %s,Bearer x",
        "BearerX%s",
        NULL,
    };
    for (size_t i = 0; fmts[i]; i++) {
        snprintf(h, sizeof h, fmts[i], key);
        assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_MALFORMED);
        assert_no_key_in(err.msg, key);
    }
    /* Truncated by one. */
    snprintf(h, sizeof h, "Bearer %.*s", FB_AUTH_KEY_TEXT_LEN - 1, key);
    assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_MALFORMED);

    /* Wrong prefix, bad characters in each part, case changes. */
    struct {
        size_t pos;
        char c;
    } edits[] = {
        {0, 'F'}, {2, 'x'}, {3, '-'},            /* "fbk_" */
        {4, 'A'}, {9, 'g'}, {15, '_'},           /* the hex id: lower-case hex only */
        {16, '-'},                               /* separator */
        {17, '+'}, {30, '/'}, {59, '='}, {40, '.'}, {20, ' '}, /* base64url alphabet only */
        {45, '\x80'}, {50, '\x01'},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char k[FB_AUTH_KEY_TEXT_MAX];
        snprintf(k, sizeof k, "%s", key);
        k[edits[i].pos] = edits[i].c;
        bearer(h, sizeof h, k);
        assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_MALFORMED);
    }
    /* Non-canonical base64: the last character of 43 carries 2 spare bits
     * that must be zero.  'B' (000001) sets one. */
    {
        char k[FB_AUTH_KEY_TEXT_MAX];
        snprintf(k, sizeof k, "%s", key);
        const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        size_t v = (size_t)(strchr(alpha, k[59]) - alpha);
        k[59] = alpha[v ^ 1];
        bearer(h, sizeof h, k);
        assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_MALFORMED);
    }
    /* Overlong: longer than FB_AUTH_HEADER_MAX, whatever it holds. */
    memset(h, 'A', sizeof h);
    memcpy(h, "Bearer ", 7);
    h[sizeof h - 1] = '\0';
    assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_MALFORMED);
    assert_non_null(strstr(err.msg, "longer than"));
    snprintf(h, sizeof h, "Bearer %s%0300d", key, 0);
    assert_int_equal(auth_header(f, h, &err), FB_AUTH_FAIL_MALFORMED);

    /* An embedded NUL (counted form): refused, even if what precedes it is
     * a valid header. */
    char nul[128];
    int n = snprintf(nul, sizeof nul, "Bearer %s", key);
    assert_int_equal(fb_auth_key_authenticate_n(f->st, nul, (size_t)n, &p, &why, &err), 0);
    nul[n] = '\0';
    assert_int_equal(fb_auth_key_authenticate_n(f->st, nul, (size_t)n + 1, &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_MALFORMED);
    nul[30] = '\0';
    assert_int_equal(fb_auth_key_authenticate_n(f->st, nul, (size_t)n, &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_MALFORMED);
    assert_int_equal(fb_auth_key_authenticate_n(f->st, nul, 0, &p, &why, &err), -1);
    assert_int_equal(why, FB_AUTH_FAIL_MALFORMED);
    assert_string_equal(fb_auth_fail_name(FB_AUTH_FAIL_MALFORMED), "malformed");
}

static void test_unknown_and_bad_secret(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    char k[FB_AUTH_KEY_TEXT_MAX];

    /* Well formed, no such id. */
    snprintf(k, sizeof k, "%s", f->admin_key);
    memcpy(k + 4, "000000000000", 12);
    if (strncmp(f->admin_key + 4, "000000000000", 12) == 0)
        memcpy(k + 4, "111111111111", 12);
    assert_int_equal(auth_key(f, k, NULL, &err), FB_AUTH_FAIL_UNKNOWN);
    assert_no_key_in(err.msg, k);

    /* Right id, another valid secret. */
    uint8_t secret[32];
    randombytes_buf(secret, sizeof secret);
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, secret, sizeof secret,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(k, sizeof k, "%.17s%.43s", f->admin_key, b64);
    assert_int_equal(strlen(k), FB_AUTH_KEY_TEXT_LEN);
    assert_int_equal(auth_key(f, k, NULL, &err), FB_AUTH_FAIL_BAD_SECRET);
    assert_string_equal(fb_auth_fail_name(FB_AUTH_FAIL_BAD_SECRET), "bad_secret");
    assert_no_key_in(err.msg, k);
    assert_no_key_in(err.msg, f->admin_key);

    /* One key's secret under another key's id. */
    fb_user dev = make_user(f, "dave", f->team.id, FB_ROLE_DEVELOPER);
    char dk[FB_AUTH_KEY_TEXT_MAX], did[FB_ID_MAX];
    make_key(f, dev.id, FB_PERM_TASKS_READ, NULL, dk, did);
    snprintf(k, sizeof k, "%.17s%.43s", dk, f->admin_key + 17);
    assert_int_equal(auth_key(f, k, NULL, &err), FB_AUTH_FAIL_BAD_SECRET);
    /* A failed attempt does not count as a use. */
    fb_api_key_info info;
    assert_int_equal(fb_auth_key_get(f->st, did, &info, &err), 0);
    assert_string_equal(info.last_used_at, "");
    /* A digest copied onto another row does not work there either: the id
     * is part of what is hashed. */
    char admin_id[FB_ID_MAX];
    snprintf(admin_id, sizeof admin_id, "key_%.12s", f->admin_key + 4);
    raw_exec(f, "UPDATE api_keys SET key_hash = (SELECT key_hash FROM api_keys WHERE id = ?1) "
                "WHERE id = ?2", admin_id, did);
    snprintf(k, sizeof k, "%.17s%.43s", dk, f->admin_key + 17);
    assert_int_equal(auth_key(f, k, NULL, &err), FB_AUTH_FAIL_BAD_SECRET);
    assert_int_equal(auth_key(f, dk, NULL, &err), FB_AUTH_FAIL_BAD_SECRET);
    assert_int_equal(auth_key(f, f->admin_key, NULL, &err), FB_AUTH_FAIL_NONE);
}

/* Issue 9: a verified key is remembered for a moment, but only for the
 * very secret that was verified, and never past the key's expiry: the
 * first authentication at or after its second fails as expired, with no
 * flush and no change to the row. */
static void test_key_cache_never_outlives_the_key(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_user dev = make_user(f, "cora", f->team.id, FB_ROLE_DEVELOPER);
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX], exp[FB_TIME_MAX];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    time_t at = now.tv_sec + 2;
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(exp, sizeof exp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    make_key(f, dev.id, FB_PERM_TASKS_READ, exp, key, id);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_NONE); /* remembered */
    /* The same id with another secret: not a hit, a bad secret. */
    char wrong[FB_AUTH_KEY_TEXT_MAX];
    snprintf(wrong, sizeof wrong, "%s", key);
    wrong[strlen(wrong) - 2] = wrong[strlen(wrong) - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_key(f, wrong, NULL, &err), FB_AUTH_FAIL_BAD_SECRET);
    int before = 0, after = 0;
    for (;;) {
        clock_gettime(CLOCK_REALTIME, &now);
        bool due = now.tv_sec >= at;
        fb_auth_fail why = auth_key(f, key, NULL, &err);
        if (due) {
            assert_int_equal(why, FB_AUTH_FAIL_EXPIRED);
            after++;
            break;
        }
        struct timespec done;
        clock_gettime(CLOCK_REALTIME, &done);
        if (done.tv_sec < at) {
            assert_int_equal(why, FB_AUTH_FAIL_NONE);
            before++;
        }
        usleep(20000);
    }
    assert_true(before > 10);
    assert_int_equal(after, 1);
}

static void test_disabled_owner(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_user dev = make_user(f, "dave", f->team.id, FB_ROLE_DEVELOPER);
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX];
    make_key(f, dev.id, FB_PERM_TASKS_READ, NULL, key, id);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(fb_auth_user_set_disabled(f->st, dev.id, true, &err), 0);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_DISABLED);
    fb_user g;
    assert_int_equal(fb_auth_user_get(f->st, dev.id, &g, &err), 0);
    assert_true(g.disabled);
    /* No new keys for a disabled user. */
    char k2[FB_AUTH_KEY_TEXT_MAX], id2[FB_ID_MAX];
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "k", FB_PERM_TASKS_READ, NULL, k2, id2, &err),
                     FB_AUTH_EDENIED);
    assert_int_equal(fb_auth_user_set_disabled(f->st, dev.id, false, &err), 0);
    assert_int_equal(auth_key(f, key, NULL, &err), FB_AUTH_FAIL_NONE);
}

static void test_scopes_within_role(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_user viewer = make_user(f, "vera", f->team.id, FB_ROLE_VIEWER);
    fb_user dev = make_user(f, "dave", f->team.id, FB_ROLE_DEVELOPER);
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX];

    assert_int_equal(fb_auth_key_create(f->st, viewer.id, "k", FB_PERM_TASKS_READ | FB_PERM_TASKS_CREATE,
                                        NULL, key, id, &err),
                     FB_AUTH_EINVAL);
    assert_string_equal(err.msg, "scopes exceed what role viewer allows: tasks:create");
    assert_string_equal(key, "");
    assert_string_equal(id, "");
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "k",
                                        FB_PERM_TASKS_READ | FB_PERM_ADMIN_USERS | FB_PERM_NETWORK_INTERNET,
                                        NULL, key, id, &err),
                     FB_AUTH_EINVAL);
    assert_string_equal(err.msg,
                        "scopes exceed what role developer allows: network:internet, admin:users");
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "k", 0, NULL, key, id, &err), FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "k", 1u << 29, NULL, key, id, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "", FB_PERM_TASKS_READ, NULL, key, id, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_key_create(f->st, dev.id, "tab\there", FB_PERM_TASKS_READ, NULL, key,
                                        id, &err),
                     FB_AUTH_EINVAL);
    assert_int_equal(fb_auth_key_create(f->st, "us_0000000000000000", "k", FB_PERM_TASKS_READ, NULL,
                                        key, id, &err),
                     FB_AUTH_ENOTFOUND);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM api_keys"), 1); /* the bootstrap key */
    /* Exactly the role's permissions is fine. */
    assert_int_equal(fb_auth_key_create(f->st, viewer.id, "k", fb_role_perms(FB_ROLE_VIEWER), NULL,
                                        key, id, &err),
                     0);

    /* On behalf of a principal: never more than the creator holds. */
    char mk[FB_AUTH_KEY_TEXT_MAX], mid[FB_ID_MAX];
    make_key(f, dev.id, FB_PERM_KEYS_MANAGE | FB_PERM_TASKS_READ, NULL, mk, mid);
    fb_principal pdev;
    assert_int_equal(auth_key(f, mk, &pdev, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(fb_auth_key_create_as(f->st, &pdev, dev.id, "k",
                                           FB_PERM_TASKS_READ | FB_PERM_SANDBOXES_EXEC, NULL, key,
                                           id, &err),
                     FB_AUTH_EDENIED);
    assert_non_null(strstr(err.msg, "sandboxes:exec"));
    assert_int_equal(fb_auth_key_create_as(f->st, &pdev, dev.id, "k", FB_PERM_TASKS_READ, NULL,
                                           key, id, &err),
                     0);
    fb_principal child;
    assert_int_equal(auth_key(f, key, &child, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(child.scopes, FB_PERM_TASKS_READ);
    /* Not for another user, unless admin. */
    assert_int_equal(fb_auth_key_create_as(f->st, &pdev, viewer.id, "k", FB_PERM_TASKS_READ, NULL,
                                           key, id, &err),
                     FB_AUTH_ENOTFOUND);
    /* A key without keys:manage cannot mint keys at all. */
    assert_int_equal(fb_auth_key_create_as(f->st, &child, dev.id, "k", FB_PERM_TASKS_READ, NULL,
                                           key, id, &err),
                     FB_AUTH_EDENIED);
    fb_principal padmin;
    assert_int_equal(auth_key(f, f->admin_key, &padmin, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(fb_auth_key_create_as(f->st, &padmin, viewer.id, "k", FB_PERM_TASKS_READ,
                                           NULL, key, id, &err),
                     0);
    /* ...and the target's role still bounds it. */
    assert_int_equal(fb_auth_key_create_as(f->st, &padmin, viewer.id, "k", FB_PERM_AUDIT_READ,
                                           NULL, key, id, &err),
                     FB_AUTH_EINVAL);

    /* A role change after creation narrows the key at once: scopes ∩ role. */
    char dk[FB_AUTH_KEY_TEXT_MAX], did[FB_ID_MAX];
    make_key(f, dev.id, FB_PERM_TASKS_READ | FB_PERM_SANDBOXES_EXEC, NULL, dk, did);
    raw_exec(f, "UPDATE users SET role = ?1 WHERE id = ?2", "viewer", dev.id);
    fb_principal p;
    assert_int_equal(auth_key(f, dk, &p, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(p.role, FB_ROLE_VIEWER);
    assert_int_equal(p.scopes, FB_PERM_TASKS_READ);
    fb_decision d;
    assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_EXEC, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "role viewer lacks sandboxes:exec");
}

static void test_cross_team_principals(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    fb_team blue;
    assert_int_equal(fb_auth_team_create(f->st, "blue", &blue, &err), 0);
    fb_user bdev = make_user(f, "bill", blue.id, FB_ROLE_DEVELOPER);
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX];
    make_key(f, bdev.id, FB_PERM_SANDBOXES_READ, NULL, key, id);
    fb_principal p, a;
    assert_int_equal(auth_key(f, key, &p, &err), FB_AUTH_FAIL_NONE);
    assert_int_equal(auth_key(f, f->admin_key, &a, &err), FB_AUTH_FAIL_NONE);
    fb_decision d;
    assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, blue.id, &d), FB_ALLOW);
    assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, f->team.id, &d), FB_NOT_FOUND);
    assert_string_equal(d.reason, "resource belongs to another team");
    assert_int_equal(fb_policy_decide(&a, FB_PERM_SANDBOXES_READ, blue.id, &d), FB_ALLOW);
}

/* The database, read as raw bytes, holds neither the key nor its secret
 * (as text or as bytes); the key_hash column is a 32-byte digest that is
 * not the secret. */
static void test_key_hash_is_not_the_key(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    char key[FB_AUTH_KEY_TEXT_MAX], id[FB_ID_MAX];
    make_key(f, f->admin.id, FB_PERM_AUDIT_READ, NULL, key, id);
    const char *keys[] = {key, f->admin_key};

    for (size_t k = 0; k < 2; k++) {
        const char *secret_b64 = keys[k] + 17;
        uint8_t secret[32];
        size_t bl = 0;
        assert_int_equal(sodium_base642bin(secret, sizeof secret, secret_b64, 43, NULL, &bl, NULL,
                                           sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                         0);
        assert_int_equal(bl, 32);

        char kid[FB_ID_MAX];
        snprintf(kid, sizeof kid, "key_%.12s", keys[k] + 4);
                sqlite3 *db = raw_db(f);
        sqlite3_stmt *s = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT key_hash, typeof(key_hash) FROM api_keys "
                                                "WHERE id = ?1",
                                            -1, &s, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(s, 1, kid, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 1), "blob");
        const void *blob = sqlite3_column_blob(s, 0);
        assert_int_equal(sqlite3_column_bytes(s, 0), 32);
        uint8_t stored[32];
        memcpy(stored, blob, 32);
        sqlite3_finalize(s);
        sqlite3_close(db);
        assert_memory_not_equal(stored, secret, 32);
        /* Not an unkeyed hash of the secret either. */
        uint8_t plain[32];
        crypto_generichash(plain, 32, secret, 32, NULL, 0);
        assert_memory_not_equal(stored, plain, 32);

        /* The raw files: database and write-ahead log. */
        const char *files[] = {"forgebox.db", "forgebox.db-wal"};
        for (size_t i = 0; i < 2; i++) {
            char path[PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/%s", f->state, files[i]);
            size_t len;
            unsigned char *raw = slurp(path, &len);
            if (!raw) {
                assert_int_equal(i, 1); /* only the WAL may be absent */
                continue;
            }
            assert_false(contains(raw, len, keys[k], strlen(keys[k])));
            assert_false(contains(raw, len, secret_b64, 43));
            assert_false(contains(raw, len, secret, 32));
            assert_false(contains(raw, len, secret, 16));
            assert_false(contains(raw, len, ROOT_PASSWORD, strlen(ROOT_PASSWORD)));
            free(raw);
        }
        sodium_memzero(secret, sizeof secret);
    }
    /* The digest itself is somewhere in the files (so the search above
     * looked in the right place). */
    bool found = false;
    {
        sqlite3 *db = raw_db(f);
        sqlite3_stmt *s = NULL;
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT key_hash FROM api_keys WHERE id = ?1", -1, &s,
                                            NULL),
                         SQLITE_OK);
        sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        uint8_t stored[32];
        memcpy(stored, sqlite3_column_blob(s, 0), 32);
        sqlite3_finalize(s);
        sqlite3_close(db);
        const char *files[] = {"forgebox.db", "forgebox.db-wal"};
        for (size_t i = 0; i < 2; i++) {
            char path[PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/%s", f->state, files[i]);
            size_t len;
            unsigned char *raw = slurp(path, &len);
            if (raw && contains(raw, len, stored, 32))
                found = true;
            free(raw);
        }
    }
    assert_true(found);
    /* Listing exposes metadata only. */
    fb_api_key_info info;
    assert_int_equal(fb_auth_key_get(f->st, id, &info, &err), 0);
    assert_null(memmem(&info, sizeof info, key + 17, 43));
}

static void test_pepper_file(void **state)
{
    fx *f = *state;
    fb_err err = {""};
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/auth.pepper", f->state);
    struct stat sb;
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_size, 32);

    /* Readable by others: refused, with a message saying what to do. */
    assert_int_equal(chmod(path, 0644), 0);
    fb_auth_key_cache_flush(); /* the pepper changes behind auth's back */
    assert_int_equal(auth_key(f, f->admin_key, NULL, &err), FB_AUTH_FAIL_ERROR);
    assert_non_null(strstr(err.msg, "0600"));
    assert_no_key_in(err.msg, f->admin_key);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(auth_key(f, f->admin_key, NULL, &err), FB_AUTH_FAIL_NONE);

    /* A different pepper: every key stops matching. */
    size_t len;
    unsigned char *saved = slurp(path, &len);
    assert_non_null(saved);
    uint8_t other[32];
    randombytes_buf(other, sizeof other);
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fb_write_all(fd, other, sizeof other), 0);
    close(fd);
    fb_auth_key_cache_flush();
    assert_int_equal(auth_key(f, f->admin_key, NULL, &err), FB_AUTH_FAIL_BAD_SECRET);
    /* A truncated one: refused. */
    fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(fb_write_all(fd, other, 16), 0);
    close(fd);
    assert_int_equal(auth_key(f, f->admin_key, NULL, &err), FB_AUTH_FAIL_ERROR);
    /* A symlink in its place: refused (O_NOFOLLOW). */
    char elsewhere[PATH_MAX + 32];
    snprintf(elsewhere, sizeof elsewhere, "%s/pepper-elsewhere", f->root);
    fd = open(elsewhere, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(fb_write_all(fd, saved, 32), 0);
    close(fd);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(symlink(elsewhere, path), 0);
    assert_int_equal(auth_key(f, f->admin_key, NULL, &err), FB_AUTH_FAIL_ERROR);
    /* Restored: works again. */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rename(elsewhere, path), 0);
    assert_int_equal(auth_key(f, f->admin_key, NULL, &err), FB_AUTH_FAIL_NONE);
    free(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_password_rules),
        cmocka_unit_test(test_password_hashing),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_init_org_generated_password),
        cmocka_unit_test_setup_teardown(test_init_org, setup, teardown),
        cmocka_unit_test_setup_teardown(test_teams_and_users, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_revoke_rights, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_revoke_cascades, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_child_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_bad_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disabled_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_cache_never_outlives_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scopes_within_role, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cross_team_principals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_hash_is_not_the_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pepper_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
