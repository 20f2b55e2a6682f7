/*
 * sqlite_identity.c - the identity repository (identity.h) on SQLite.
 *
 * Each call holds the store lock for its whole work; calls that write
 * more than one row, or that check something before writing, do it in one
 * IMMEDIATE transaction, so a check and the write it guards cannot be
 * separated by another writer (two creates of the same name, a key minted
 * while its parent is being revoked).
 *
 * Revocation walks the parent_key_id links with a recursive query inside
 * the revoking transaction: a key minted by a revoked key cannot survive
 * it, and one minted concurrently is refused by key_insert's own check
 * that its parent is live.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "store/backend.h"
#include "store/sql.h"

#define TEAM_COLS "id, name, created_at"
#define USER_COLS "id, username, team_id, role, created_at, disabled"
#define KEY_COLS "id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at, parent_key_id"

static fb_sql *conn(fb_store *st)
{
    return st->impl;
}

/* ---- rows ------------------------------------------------------------------------ */

static int read_team(fb_sql_stmt *s, void *elem)
{
    fb_team *t = elem;
    return fb_sql_col_copy(s, 0, t->id, sizeof t->id) | fb_sql_col_copy(s, 1, t->name, sizeof t->name) |
           fb_sql_col_copy(s, 2, t->created_at, sizeof t->created_at);
}

/* USER_COLS from column `at` on. */
static int read_user_at(fb_sql_stmt *s, int at, fb_user *u)
{
    char role[16];
    if (fb_sql_col_copy(s, at, u->id, sizeof u->id) | fb_sql_col_copy(s, at + 1, u->username, sizeof u->username) |
        fb_sql_col_copy(s, at + 2, u->team_id, sizeof u->team_id) | fb_sql_col_copy(s, at + 3, role, sizeof role) |
        fb_sql_col_copy(s, at + 4, u->created_at, sizeof u->created_at))
        return -1;
    u->role = fb_role_from_name(role);
    u->disabled = fb_sql_col_int64(s, at + 5) != 0;
    return u->role == FB_ROLE_NONE ? -1 : 0;
}

static int read_user(fb_sql_stmt *s, void *elem)
{
    return read_user_at(s, 0, elem);
}

/* KEY_COLS from column `at` on. */
static int read_key_at(fb_sql_stmt *s, int at, fb_api_key_info *k)
{
    char scopes[FB_PERMS_JSON_MAX * 2];
    if (fb_sql_col_copy(s, at, k->id, sizeof k->id) | fb_sql_col_copy(s, at + 1, k->user_id, sizeof k->user_id) |
        fb_sql_col_copy(s, at + 2, k->name, sizeof k->name) | fb_sql_col_copy(s, at + 3, scopes, sizeof scopes) |
        fb_sql_col_copy(s, at + 4, k->created_at, sizeof k->created_at) |
        fb_sql_col_copy(s, at + 5, k->expires_at, sizeof k->expires_at) |
        fb_sql_col_copy(s, at + 6, k->revoked_at, sizeof k->revoked_at) |
        fb_sql_col_copy(s, at + 7, k->last_used_at, sizeof k->last_used_at) |
        fb_sql_col_copy(s, at + 8, k->parent_key_id, sizeof k->parent_key_id))
        return -1;
    return fb_perms_parse_json(scopes, &k->scopes, NULL);
}

static int read_key(fb_sql_stmt *s, void *elem)
{
    return read_key_at(s, 0, elem);
}

/* Runs a query with one text parameter expected to give at most one row:
 * 0 with the row read, ENOTFOUND with `missing` as the message. */
static int fetch_one(fb_sql *db, const char *sql, const char *param, int (*rd)(fb_sql_stmt *, void *), void *elem,
                     const char *missing, fb_err *err)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, sql, &s, err);
    if (rc < 0 || (rc = fb_sql_bind_text(s, 1, param, err)) < 0 || (rc = fb_sql_step(s, missing, err)) < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "%s", missing);
    if (rd(s, elem) < 0)
        return fb_fail_code(err, FB_STORE_ECORRUPT, "%s: the stored row is malformed", missing);
    return 0;
}

/* A list query with an optional text parameter into a malloc'd array. */
static int list_rows(fb_store *st, const char *sql, const char *param, size_t elem_size,
                     int (*rd)(fb_sql_stmt *, void *), void **out, size_t *n, const char *what, fb_err *err)
{
    *out = NULL;
    *n = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, sql, &s, err);
    if (rc < 0 || (param && (rc = fb_sql_bind_text(s, 1, param, err)) < 0))
        return rc;
    return fb_sql_collect(s, elem_size, rd, out, n, what, err);
}

/* Runs fn(db, arg, err) inside an IMMEDIATE transaction, committing when
 * it returns 0. */
static int in_transaction(fb_store *st, int (*fn)(fb_sql *, const void *, fb_err *), const void *arg, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    if ((rc = fn(db, arg, err)) == 0)
        rc = fb_sql_commit(db, err);
    if (rc < 0)
        fb_sql_rollback(db);
    return rc;
}

/* ---- inserts (inside a transaction) -------------------------------------------------- */

static int team_insert_tx(fb_sql *db, const void *arg, fb_err *err)
{
    const fb_team *t = arg;
    int rc = fb_sql_exists(db, "SELECT 1 FROM teams WHERE name = ?1", t->name, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return fb_fail_code(err, FB_STORE_EEXISTS, "a team named '%s' already exists", t->name);
    return fb_sql_exec_texts(db, "INSERT INTO teams (id, name, created_at) VALUES (?1, ?2, ?3)",
                             "cannot create the team", err, 3, t->id, t->name, t->created_at);
}

struct user_arg {
    const fb_user *u;
    const char *pwhash;
};

static int user_insert_tx(fb_sql *db, const void *arg, fb_err *err)
{
    const struct user_arg *a = arg;
    const fb_user *u = a->u;
    int rc = fb_sql_exists(db, "SELECT 1 FROM teams WHERE id = ?1", u->team_id, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "no team with id %s", u->team_id);
    if ((rc = fb_sql_exists(db, "SELECT 1 FROM users WHERE username = ?1", u->username, err)) < 0)
        return rc;
    if (rc == 1)
        return fb_fail_code(err, FB_STORE_EEXISTS, "the username '%s' is taken", u->username);
    return fb_sql_exec_texts(db,
                             "INSERT INTO users (id, username, team_id, role, password_hash, created_at, disabled) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                             "cannot create the user", err, 7, u->id, u->username, u->team_id, fb_role_name(u->role),
                             a->pwhash, u->created_at, u->disabled ? "1" : "0");
}

static int key_row_insert(fb_sql *db, const fb_key_record *k, fb_err *err)
{
    const fb_api_key_info *i = &k->info;
    char scopes[FB_PERMS_JSON_MAX];
    if (fb_perms_format_json(i->scopes, scopes, sizeof scopes) < 0)
        return fb_fail_code(err, FB_STORE_EINVAL, "invalid scopes");
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "INSERT INTO api_keys (id, user_id, name, scopes, created_at, expires_at, "
                            "parent_key_id, key_hash, revoked_at, last_used_at) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL)",
                            &s, err);
    if (rc < 0 ||
        (rc = fb_sql_bind_texts(s, err, 7, i->id, i->user_id, i->name, scopes, i->created_at,
                                i->expires_at[0] ? i->expires_at : NULL,
                                i->parent_key_id[0] ? i->parent_key_id : NULL)) < 0 ||
        (rc = fb_sql_bind_blob(s, 8, k->digest, sizeof k->digest, err)) < 0)
        return rc;
    return fb_sql_run(s, "cannot store the API key", err);
}

struct key_arg {
    const fb_key_record *k;
    fb_role role;
};

typedef struct owner_row {
    char role[16];
    bool disabled;
} owner_row;

static int read_owner(fb_sql_stmt *s, void *elem)
{
    owner_row *o = elem;
    o->disabled = fb_sql_col_int64(s, 1) != 0;
    return fb_sql_col_copy(s, 0, o->role, sizeof o->role);
}

static int key_insert_tx(fb_sql *db, const void *arg, fb_err *err)
{
    const struct key_arg *a = arg;
    const fb_api_key_info *i = &a->k->info;
    owner_row o;
    int rc = fetch_one(db, "SELECT role, disabled FROM users WHERE id = ?1", i->user_id, read_owner, &o,
                       "no such user", err);
    if (rc < 0)
        return rc;
    if (o.disabled)
        return fb_fail_code(err, FB_STORE_ECONFLICT, "user %s is disabled", i->user_id);
    if (fb_role_from_name(o.role) != a->role)
        return fb_fail_code(err, FB_STORE_ECONFLICT, "the role of user %s changed meanwhile", i->user_id);
    if (i->parent_key_id[0]) {
        rc = fb_sql_exists(db, "SELECT 1 FROM api_keys WHERE id = ?1 AND revoked_at IS NULL", i->parent_key_id, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return fb_fail_code(err, FB_STORE_ECONFLICT, "the key creating it (%s) is revoked", i->parent_key_id);
    }
    return key_row_insert(db, a->k, err);
}

static int bootstrap_tx(fb_sql *db, const void *arg, fb_err *err)
{
    const fb_identity_bootstrap *b = arg;
    int rc = fb_sql_exists(db, "SELECT 1 FROM org WHERE id = 1", NULL, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return fb_fail_code(err, FB_STORE_EEXISTS, "the organisation is already initialised; nothing was changed");
    struct user_arg ua = {b->admin, b->admin_pwhash};
    if ((rc = fb_sql_exec_texts(db, "INSERT INTO org (id, name, created_at) VALUES (1, ?1, ?2)",
                                "cannot create the org", err, 2, b->org_name, b->created_at)) < 0 ||
        (rc = team_insert_tx(db, b->team, err)) < 0 || (rc = user_insert_tx(db, &ua, err)) < 0)
        return rc;
    return key_row_insert(db, b->admin_key, err);
}

/* ---- the operations ------------------------------------------------------------------- */

static int id_org_get(fb_store *st, bool *initialised, char *name_out, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "SELECT name FROM org WHERE id = 1", &s, err);
    if (rc < 0 || (rc = fb_sql_step(s, "cannot read the org", err)) < 0)
        return rc;
    *initialised = rc == 1;
    if (name_out && rc == 0)
        name_out[0] = '\0';
    if (name_out && rc == 1 && fb_sql_col_copy(s, 0, name_out, FB_IDENTITY_ORG_NAME_MAX + 1) < 0)
        return fb_fail_code(err, FB_STORE_ECORRUPT, "the stored org name is malformed");
    return 0;
}

static int id_bootstrap(fb_store *st, const fb_identity_bootstrap *b, fb_err *err)
{
    return in_transaction(st, bootstrap_tx, b, err);
}

static int id_team_insert(fb_store *st, const fb_team *t, fb_err *err)
{
    return in_transaction(st, team_insert_tx, t, err);
}

static int id_team_get(fb_store *st, const char *key, bool by_name, fb_team *out, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    return fetch_one(db,
                     by_name ? "SELECT " TEAM_COLS " FROM teams WHERE name = ?1"
                             : "SELECT " TEAM_COLS " FROM teams WHERE id = ?1",
                     key, read_team, out, "no such team", err);
}

static int id_team_list(fb_store *st, fb_team **out, size_t *n, fb_err *err)
{
    return list_rows(st, "SELECT " TEAM_COLS " FROM teams ORDER BY name", NULL, sizeof(fb_team), read_team,
                     (void **)out, n, "teams", err);
}

static int id_user_insert(fb_store *st, const fb_user *u, const char *pwhash, fb_err *err)
{
    struct user_arg a = {u, pwhash};
    return in_transaction(st, user_insert_tx, &a, err);
}

typedef struct login_row {
    fb_user user;
    char pwhash[FB_IDENTITY_PWHASH_MAX];
} login_row;

static int read_login_row(fb_sql_stmt *s, void *elem)
{
    login_row *r = elem;
    if (read_user(s, &r->user) < 0)
        return -1;
    return fb_sql_col_copy(s, 6, r->pwhash, sizeof r->pwhash);
}

static int id_user_get(fb_store *st, const char *key, bool by_name, fb_user *out, char *pwhash, fb_err *err)
{
    login_row row;
    int rc;
    {
        cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
        rc = fetch_one(db,
                       by_name ? "SELECT " USER_COLS ", password_hash FROM users WHERE username = ?1"
                               : "SELECT " USER_COLS ", password_hash FROM users WHERE id = ?1",
                       key, read_login_row, &row, "no such user", err);
    }
    if (rc == 0) {
        *out = row.user;
        if (pwhash)
            memcpy(pwhash, row.pwhash, sizeof row.pwhash);
    }
    explicit_bzero(row.pwhash, sizeof row.pwhash);
    return rc;
}

static int id_user_list(fb_store *st, const char *team_id, fb_user **out, size_t *n, fb_err *err)
{
    return list_rows(st,
                     team_id ? "SELECT " USER_COLS " FROM users WHERE team_id = ?1 ORDER BY username"
                             : "SELECT " USER_COLS " FROM users ORDER BY username",
                     team_id, sizeof(fb_user), read_user, (void **)out, n, "users", err);
}

/* UPDATE ... SET x = ?1 WHERE id = ?2; ENOTFOUND when no row. */
static int user_update(fb_store *st, const char *sql, const char *value, const char *user_id, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    int rc = fb_sql_exec_texts(db, sql, "cannot update the user", err, 2, value, user_id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = fb_fail_code(err, FB_STORE_ENOTFOUND, "no such user");
    return rc;
}

struct disable_arg {
    const char *user_id;
    bool disabled;
};

/* The update and the notification commit together: other gateways drop
 * their cached keys (of this user, and all the others) when it does. */
static int disable_tx(fb_sql *db, const void *arg, fb_err *err)
{
    const struct disable_arg *a = arg;
    int rc = fb_sql_exec_texts(db, "UPDATE users SET disabled = CAST(?1 AS INTEGER) WHERE id = ?2",
                               "cannot update the user", err, 2, a->disabled ? "1" : "0", a->user_id);
    if (rc == 0 && fb_sql_changes(db) == 0)
        rc = fb_fail_code(err, FB_STORE_ENOTFOUND, "no such user");
    return rc == 0 ? fb_sql_notify(db, FB_STORE_IDENTITY_CHANNEL, err) : rc;
}

static int id_user_set_disabled(fb_store *st, const char *user_id, bool disabled, fb_err *err)
{
    struct disable_arg a = {user_id, disabled};
    return in_transaction(st, disable_tx, &a, err);
}

static int id_user_set_password(fb_store *st, const char *user_id, const char *pwhash, fb_err *err)
{
    return user_update(st, "UPDATE users SET password_hash = ?1 WHERE id = ?2", pwhash, user_id, err);
}

static int id_key_insert(fb_store *st, const fb_key_record *k, fb_role role, fb_err *err)
{
    struct key_arg a = {k, role};
    return in_transaction(st, key_insert_tx, &a, err);
}

static int id_key_get(fb_store *st, const char *key_id, fb_api_key_info *out, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    return fetch_one(db, "SELECT " KEY_COLS " FROM api_keys WHERE id = ?1", key_id, read_key, out,
                     "no such API key", err);
}

static int read_auth_row(fb_sql_stmt *s, void *elem)
{
    fb_key_auth_row *r = elem;
    size_t bl = 0;
    const void *blob = fb_sql_col_blob(s, 0, &bl);
    r->digest_ok = blob && bl == sizeof r->digest;
    if (r->digest_ok)
        memcpy(r->digest, blob, sizeof r->digest);
    if (read_key_at(s, 1, &r->key) < 0)
        return -1;
    return read_user_at(s, 10, &r->owner);
}

static int id_key_auth_row(fb_store *st, const char *key_id, fb_key_auth_row *out, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    return fetch_one(db,
                     "SELECT k.key_hash, k.id, k.user_id, k.name, k.scopes, k.created_at, k.expires_at, "
                     "k.revoked_at, k.last_used_at, k.parent_key_id, "
                     "u.id, u.username, u.team_id, u.role, u.created_at, u.disabled "
                     "FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?1",
                     key_id, read_auth_row, out, "no such API key", err);
}

static int id_key_list(fb_store *st, const char *user_id, fb_api_key_info **out, size_t *n, fb_err *err)
{
    return list_rows(st, "SELECT " KEY_COLS " FROM api_keys WHERE user_id = ?1 ORDER BY created_at, id", user_id,
                     sizeof(fb_api_key_info), read_key, (void **)out, n, "API keys", err);
}

static int id_key_touch(fb_store *st, const char *key_id, const char *when, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(conn(st));
    return fb_sql_exec_texts(db, "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2",
                             "cannot record the key's use", err, 2, when, key_id);
}

/* The key and every key below it through parent_key_id. */
#define KEY_TREE                                                                                                   \
    "WITH RECURSIVE tree(id, depth) AS (SELECT id, 0 FROM api_keys WHERE id = ?1 "                                 \
    "UNION SELECT k.id, t.depth + 1 FROM api_keys k JOIN tree t ON k.parent_key_id = t.id) "

struct revoke_arg {
    const char *key_id, *when;
    void **ids;
    size_t *n;
};

static int revoke_tx(fb_sql *db, const void *arg, fb_err *err)
{
    const struct revoke_arg *a = arg;
    int rc = fb_sql_exists(db, "SELECT 1 FROM api_keys WHERE id = ?1", a->key_id, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fb_fail_code(err, FB_STORE_ENOTFOUND, "no such API key");
    {
        cleanup_stmt fb_sql_stmt *s = NULL;
        if ((rc = fb_sql_prepare(db,
                                 KEY_TREE "SELECT k.id FROM api_keys k JOIN tree t ON t.id = k.id "
                                          "WHERE k.revoked_at IS NULL ORDER BY t.depth, k.created_at, k.id",
                                 &s, err)) < 0 ||
            (rc = fb_sql_bind_text(s, 1, a->key_id, err)) < 0 ||
            (rc = fb_sql_collect(s, FB_ID_MAX, fb_sql_read_id, a->ids, a->n, "keys to revoke", err)) < 0)
            return rc;
    }
    rc = fb_sql_exec_texts(db,
                           KEY_TREE "UPDATE api_keys SET revoked_at = ?2 "
                                    "WHERE revoked_at IS NULL AND id IN (SELECT id FROM tree)",
                           "cannot revoke the API keys", err, 2, a->key_id, a->when);
    /* Other gateways drop their cached keys when this commits. */
    return rc == 0 ? fb_sql_notify(db, FB_STORE_IDENTITY_CHANNEL, err) : rc;
}

static int id_key_revoke_tree(fb_store *st, const char *key_id, const char *when, char (**revoked)[FB_ID_MAX],
                              size_t *n, fb_err *err)
{
    void *ids = NULL;
    *n = 0;
    struct revoke_arg a = {key_id, when, &ids, n};
    int rc = in_transaction(st, revoke_tx, &a, err);
    if (rc < 0) {
        free(ids);
        ids = NULL;
        *n = 0;
    }
    *revoked = ids;
    return rc;
}

const fb_identity_ops fb_sqlite_identity_ops = {
    .org_get = id_org_get,
    .bootstrap = id_bootstrap,
    .team_insert = id_team_insert,
    .team_get = id_team_get,
    .team_list = id_team_list,
    .user_insert = id_user_insert,
    .user_get = id_user_get,
    .user_list = id_user_list,
    .user_set_disabled = id_user_set_disabled,
    .user_set_password = id_user_set_password,
    .key_insert = id_key_insert,
    .key_get = id_key_get,
    .key_auth_row = id_key_auth_row,
    .key_list = id_key_list,
    .key_touch = id_key_touch,
    .key_revoke_tree = id_key_revoke_tree,
};
