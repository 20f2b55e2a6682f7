/*
 * auth.c - see auth.h.
 *
 * Layout: small helpers (status errors, time, names, ids), the pepper file,
 * the API-key digest, then one section per object.  Every function that
 * touches the database has a *_locked twin, or is a short block between
 * fb_store_lock and fb_store_unlock, so that the lock is visibly taken in
 * exactly one place per public call and composite operations (bootstrap)
 * can run several inserts in one transaction.  Slow work (argon2id) and
 * file I/O (the pepper) happen before the lock is taken.
 *
 * Secret material this file creates - key secrets, their base64 text,
 * digests, the pepper, generated passwords in transit - lives in local
 * buffers that are wiped with sodium_memzero on every path out.
 */
#define _GNU_SOURCE
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_PREFIX "fbk_"
#define KEY_PREFIX_LEN 4
#define KEY_ID_PREFIX "key_"
#define KEY_ID_BYTES 6 /* 12 hex digits */
#define KEY_ID_HEX (2 * KEY_ID_BYTES)
#define KEY_SECRET_BYTES 32
#define KEY_SECRET_B64 43 /* unpadded base64url of 32 bytes */
#define DIGEST_BYTES 32
#define PEPPER_BYTES 32
#define PEPPER_FILE "auth.pepper"
#define LAST_USED_INTERVAL_S 60
#define INSERT_ATTEMPTS 4 /* fresh random ids on a primary-key collision */

_Static_assert(KEY_PREFIX_LEN + KEY_ID_HEX + 1 + KEY_SECRET_B64 == FB_AUTH_KEY_TEXT_LEN,
               "key text length");
_Static_assert(FB_AUTH_KEY_TEXT_LEN < FB_AUTH_KEY_TEXT_MAX, "key buffer");
_Static_assert(FB_AUTH_PWHASH_MAX == crypto_pwhash_STRBYTES, "password hash buffer");
_Static_assert(sodium_base64_ENCODED_LEN(KEY_SECRET_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
                   KEY_SECRET_B64 + 1,
               "base64 length");

/* An argon2id string with the interactive parameters: verified against
 * when a login names an unknown user, so that the answer takes as long as
 * for a known one. */
static const char dummy_pwhash[] =
    "$argon2id$v=19$m=65536,t=2,p=1$KeABsDs2v2d7FDcW6KQPdw$9aQPwLyIskAgkVsHDnRHPfJXazXqCKpoLZP11buhyp0";

/* ---- small helpers ------------------------------------------------------------- */

static int st_fail(fb_err *err, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int st_fail(fb_err *err, int status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

static int db_fail(fb_err *err, sqlite3 *db, const char *what)
{
    return st_fail(err, FB_AUTH_EINTERNAL, "%s: %s", what, sqlite3_errmsg(db));
}

static int sodium_ready(fb_err *err)
{
    if (sodium_init() < 0)
        return st_fail(err, FB_AUTH_EINTERNAL, "libsodium failed to initialise");
    return 0;
}

const char *fb_auth_fail_name(fb_auth_fail why)
{
    switch (why) {
    case FB_AUTH_FAIL_NONE: return "none";
    case FB_AUTH_FAIL_MISSING: return "missing";
    case FB_AUTH_FAIL_MALFORMED: return "malformed";
    case FB_AUTH_FAIL_UNKNOWN: return "unknown";
    case FB_AUTH_FAIL_REVOKED: return "revoked";
    case FB_AUTH_FAIL_EXPIRED: return "expired";
    case FB_AUTH_FAIL_BAD_SECRET: return "bad_secret";
    case FB_AUTH_FAIL_DISABLED: return "disabled";
    case FB_AUTH_FAIL_ERROR: break;
    }
    return "error";
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src);
}

/* [a-z0-9_.-]{1,64}: usernames and team names. */
static bool valid_name(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, FB_AUTH_NAME_MAX + 1);
    if (n == 0 || n > FB_AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* Printable ASCII, 1..max bytes: key and org names. */
static bool valid_label(const char *s, size_t max)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

/* prefix followed by exactly hexlen lower-case hex digits. */
static bool valid_id(const char *s, const char *prefix, size_t hexlen)
{
    if (!s)
        return false;
    size_t pl = strlen(prefix);
    if (strnlen(s, FB_ID_MAX) != pl + hexlen || strncmp(s, prefix, pl) != 0)
        return false;
    for (size_t i = pl; i < pl + hexlen; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool valid_team_id(const char *s) { return valid_id(s, "tm_", 16); }
static bool valid_user_id(const char *s) { return valid_id(s, "us_", 16); }
static bool valid_key_id(const char *s) { return valid_id(s, KEY_ID_PREFIX, KEY_ID_HEX); }

static int new_id(const char *prefix, size_t nbytes, char out[FB_ID_MAX], fb_err *err)
{
    uint8_t b[16];
    char hex[33];
    if (nbytes > sizeof b || fb_random_bytes(b, nbytes) < 0)
        return st_fail(err, FB_AUTH_EINTERNAL, "cannot read random bytes: %s", strerror(errno));
    fb_hex(b, nbytes, hex);
    snprintf(out, FB_ID_MAX, "%s%s", prefix, hex);
    return 0;
}

/* ---- time ---------------------------------------------------------------------- */

static void format_time(const struct timespec *ts, char out[FB_TIME_MAX])
{
    struct tm tm;
    time_t t = ts->tv_sec;
    char base[32];
    if (!gmtime_r(&t, &tm) || strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        copy_str(base, sizeof base, "1970-01-01T00:00:00");
    snprintf(out, FB_TIME_MAX, "%.19s.%09uZ", base, (unsigned)(ts->tv_nsec % 1000000000L));
}

void fb_auth_time_now(char out[FB_TIME_MAX])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    format_time(&ts, out);
}

static int fixed_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

int fb_auth_time_parse(const char *s, struct timespec *out)
{
    if (!s)
        return -1;
    size_t len = strnlen(s, 64);
    if (len < 20 || len >= 64)
        return -1;
    int Y, M, D, h, m, sec;
    if (fixed_digits(s, 4, &Y) || s[4] != '-' || fixed_digits(s + 5, 2, &M) || s[7] != '-' ||
        fixed_digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') ||
        fixed_digits(s + 11, 2, &h) || s[13] != ':' || fixed_digits(s + 14, 2, &m) ||
        s[16] != ':' || fixed_digits(s + 17, 2, &sec))
        return -1;
    if (Y < 1 || M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 || m > 59 ||
        sec > 59)
        return -1;
    const char *p = s + 19;
    long ns = 0;
    if (*p == '.') {
        int nd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, nd++) {
            if (nd == 9)
                return -1;
            ns = ns * 10 + (*p - '0');
        }
        if (nd == 0)
            return -1;
        for (; nd < 9; nd++)
            ns *= 10;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (fixed_digits(p + 1, 2, &oh) || p[3] != ':' || fixed_digits(p + 4, 2, &om) ||
            oh > 23 || om > 59)
            return -1;
        off = (*p == '-' ? -1 : 1) * (long)(oh * 3600 + om * 60);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    out->tv_sec = t - off;
    out->tv_nsec = ns;
    return 0;
}

int fb_auth_time_normalise(const char *text, char out[FB_TIME_MAX])
{
    struct timespec ts;
    if (fb_auth_time_parse(text, &ts) < 0)
        return -1;
    format_time(&ts, out);
    return 0;
}

static int ts_cmp(const struct timespec *a, const struct timespec *b)
{
    if (a->tv_sec != b->tv_sec)
        return a->tv_sec < b->tv_sec ? -1 : 1;
    if (a->tv_nsec != b->tv_nsec)
        return a->tv_nsec < b->tv_nsec ? -1 : 1;
    return 0;
}

/* ---- statements ------------------------------------------------------------------- */

static void finalizep(sqlite3_stmt **s)
{
    if (*s)
        sqlite3_finalize(*s);
}
#define cleanup_stmt __attribute__((cleanup(finalizep)))

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, fb_err *err)
{
    if (sqlite3_prepare_v2(db, sql, -1, out, NULL) != SQLITE_OK)
        return db_fail(err, db, "cannot prepare a statement");
    return 0;
}

/* Binds text parameters 1..n (NULL binds SQL NULL). */
static int bind_texts(sqlite3 *db, sqlite3_stmt *s, fb_err *err, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    int rc = SQLITE_OK;
    for (int i = 1; i <= n && rc == SQLITE_OK; i++) {
        const char *v = va_arg(ap, const char *);
        rc = v ? sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i);
    }
    va_end(ap);
    if (rc != SQLITE_OK)
        return db_fail(err, db, "cannot bind a parameter");
    return 0;
}

/* Copies a text column (NULL -> ""); -1 if it does not fit. */
static int col_text(sqlite3_stmt *s, int i, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    if (!t) {
        out[0] = '\0';
        return 0;
    }
    int n = sqlite3_column_bytes(s, i);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    memcpy(out, t, (size_t)n);
    out[n] = '\0';
    return 0;
}

#define TEAM_COLS "id, name, created_at"
static int read_team(sqlite3_stmt *s, void *elem)
{
    fb_team *t = elem;
    return col_text(s, 0, t->id, sizeof t->id) | col_text(s, 1, t->name, sizeof t->name) |
           col_text(s, 2, t->created_at, sizeof t->created_at);
}

#define USER_COLS "id, username, team_id, role, created_at, disabled"
static int read_user(sqlite3_stmt *s, void *elem)
{
    fb_user *u = elem;
    char role[16];
    if (col_text(s, 0, u->id, sizeof u->id) | col_text(s, 1, u->username, sizeof u->username) |
        col_text(s, 2, u->team_id, sizeof u->team_id) | col_text(s, 3, role, sizeof role) |
        col_text(s, 4, u->created_at, sizeof u->created_at))
        return -1;
    u->role = fb_role_from_name(role);
    u->disabled = sqlite3_column_int(s, 5) != 0;
    return u->role == FB_ROLE_NONE ? -1 : 0;
}

#define KEY_COLS "id, user_id, name, scopes, created_at, expires_at, revoked_at, last_used_at"
static int read_key(sqlite3_stmt *s, void *elem)
{
    fb_api_key_info *k = elem;
    char scopes[FB_PERMS_JSON_MAX * 2];
    if (col_text(s, 0, k->id, sizeof k->id) | col_text(s, 1, k->user_id, sizeof k->user_id) |
        col_text(s, 2, k->name, sizeof k->name) | col_text(s, 3, scopes, sizeof scopes) |
        col_text(s, 4, k->created_at, sizeof k->created_at) |
        col_text(s, 5, k->expires_at, sizeof k->expires_at) |
        col_text(s, 6, k->revoked_at, sizeof k->revoked_at) |
        col_text(s, 7, k->last_used_at, sizeof k->last_used_at))
        return -1;
    return fb_perms_parse_json(scopes, &k->scopes, NULL);
}

/* Steps a prepared query and reads every row into a growing array. */
static int collect(sqlite3 *db, sqlite3_stmt *s, size_t elem_size, int (*rd)(sqlite3_stmt *, void *),
                   void **out, size_t *n, const char *what, fb_err *err)
{
    char *items = NULL;
    size_t count = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == FB_AUTH_LIST_MAX) {
            free(items);
            return st_fail(err, FB_AUTH_EINTERNAL, "more than %d %s; refusing to list them all",
                           FB_AUTH_LIST_MAX, what);
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char *ni = realloc(items, ncap * elem_size);
            if (!ni) {
                free(items);
                return st_fail(err, FB_AUTH_EINTERNAL, "out of memory listing %s", what);
            }
            items = ni;
            cap = ncap;
        }
        if (rd(s, items + count * elem_size) < 0) {
            free(items);
            return st_fail(err, FB_AUTH_EINTERNAL, "a stored row of %s is malformed", what);
        }
        count++;
    }
    if (rc != SQLITE_DONE) {
        free(items);
        return db_fail(err, db, what);
    }
    *out = items;
    *n = count;
    return 0;
}

/* Runs a query expected to give at most one row; 1 = row read into elem,
 * 0 = no row, <0 = error. */
static int fetch_one(sqlite3 *db, sqlite3_stmt *s, int (*rd)(sqlite3_stmt *, void *), void *elem,
                     const char *what, fb_err *err)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return db_fail(err, db, what);
    if (rd(s, elem) < 0)
        return st_fail(err, FB_AUTH_EINTERNAL, "%s: the stored row is malformed", what);
    return 1;
}

/* 1 if the query returns a row, 0 if not, <0 on error.  param (NULL for
 * none) is bound to ?1. */
static int exists(sqlite3 *db, const char *sql, const char *param, fb_err *err)
{
    cleanup_stmt sqlite3_stmt *s = NULL;
    int rc = prepare(db, sql, &s, err);
    if (rc < 0 || (param && (rc = bind_texts(db, s, err, 1, param)) < 0))
        return rc;
    rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return db_fail(err, db, "lookup failed");
}

/* A uniqueness failure on insert.  Names are checked inside the same
 * IMMEDIATE transaction first, so this can only be the random id: retry
 * with a fresh one. */
static bool id_collision(int rc)
{
    return rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE;
}

/* ---- the pepper ------------------------------------------------------------------ */

static int pepper_path(fb_store *st, char *out, size_t cap, fb_err *err)
{
    const char *dir = fb_store_state_dir(st);
    int n = snprintf(out, cap, "%s/%s", dir ? dir : ".", PEPPER_FILE);
    if (n < 0 || (size_t)n >= cap)
        return st_fail(err, FB_AUTH_EINTERNAL, "state directory path too long");
    return 0;
}

static int pepper_read(int fd, const char *path, uint8_t pepper[PEPPER_BYTES], fb_err *err)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return st_fail(err, FB_AUTH_EINTERNAL, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode) || sb.st_size != PEPPER_BYTES)
        return st_fail(err, FB_AUTH_EINTERNAL,
                       "%s is not a %d-byte regular file; restore it from backup (API keys "
                       "cannot be checked without it)",
                       path, PEPPER_BYTES);
    if (sb.st_uid != geteuid() || (sb.st_mode & 077) != 0)
        return st_fail(err, FB_AUTH_EINTERNAL,
                       "%s must be owned by uid %u and private (mode 0600); it is uid %u mode %04o",
                       path, (unsigned)geteuid(), (unsigned)sb.st_uid,
                       (unsigned)(sb.st_mode & 07777));
    if (fb_read_exact(fd, pepper, PEPPER_BYTES) < 0) {
        sodium_memzero(pepper, PEPPER_BYTES);
        return st_fail(err, FB_AUTH_EINTERNAL, "cannot read %s: %s", path, strerror(errno));
    }
    return 0;
}

/* Writes a fresh pepper under a temporary name and links it into place:
 * link(2) fails with EEXIST if another process won the race, and nobody
 * ever sees a partly written file. */
static int pepper_create(const char *path, fb_err *err)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return st_fail(err, FB_AUTH_EINTERNAL, "state directory path too long");
    cleanup_fd int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0)
        return st_fail(err, FB_AUTH_EINTERNAL, "cannot create %s: %s", tmp, strerror(errno));
    uint8_t fresh[PEPPER_BYTES];
    int rc = 0;
    if (fb_random_bytes(fresh, sizeof fresh) < 0 || fb_write_all(fd, fresh, sizeof fresh) < 0 ||
        fsync(fd) < 0)
        rc = st_fail(err, FB_AUTH_EINTERNAL, "cannot write %s: %s", tmp, strerror(errno));
    sodium_memzero(fresh, sizeof fresh);
    if (rc == 0 && link(tmp, path) < 0 && errno != EEXIST)
        rc = st_fail(err, FB_AUTH_EINTERNAL, "cannot create %s: %s", path, strerror(errno));
    unlink(tmp);
    return rc;
}

static int pepper_load(fb_store *st, uint8_t pepper[PEPPER_BYTES], fb_err *err)
{
    char path[PATH_MAX];
    int rc = pepper_path(st, path, sizeof path, err);
    if (rc < 0)
        return rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0)
            return pepper_read(fd, path, pepper, err);
        if (errno != ENOENT)
            return st_fail(err, FB_AUTH_EINTERNAL, "cannot open %s: %s", path, strerror(errno));
        if ((rc = pepper_create(path, err)) < 0)
            return rc;
    }
    return st_fail(err, FB_AUTH_EINTERNAL, "%s vanished while being created", path);
}

/* ---- key digests ------------------------------------------------------------------- */

/* Keyed BLAKE2b-256 over a domain tag, the key id and the secret: binding
 * the id means a digest copied onto another row does not match there. */
static void key_digest(const uint8_t pepper[PEPPER_BYTES], const char id_hex[KEY_ID_HEX],
                       const uint8_t secret[KEY_SECRET_BYTES], uint8_t out[DIGEST_BYTES])
{
    static const char tag[] = "forgebox api key v1";
    crypto_generichash_state h;
    crypto_generichash_init(&h, pepper, PEPPER_BYTES, DIGEST_BYTES);
    crypto_generichash_update(&h, (const unsigned char *)tag, sizeof tag);
    crypto_generichash_update(&h, (const unsigned char *)id_hex, KEY_ID_HEX);
    crypto_generichash_update(&h, secret, KEY_SECRET_BYTES);
    crypto_generichash_final(&h, out, DIGEST_BYTES);
    sodium_memzero(&h, sizeof h);
}

/* ---- passwords ------------------------------------------------------------------------ */

int fb_auth_password_check_rules(const char *password, fb_err *err)
{
    if (!password)
        return st_fail(err, FB_AUTH_EINVAL, "a password is required");
    size_t n = strnlen(password, FB_AUTH_PASSWORD_MAX + 1);
    if (n > FB_AUTH_PASSWORD_MAX)
        return st_fail(err, FB_AUTH_EINVAL, "password longer than %d bytes",
                       FB_AUTH_PASSWORD_MAX);
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)password[i] & 0xc0) != 0x80)
            chars++;
    if (chars < FB_AUTH_PASSWORD_MIN)
        return st_fail(err, FB_AUTH_EINVAL, "password shorter than %d characters",
                       FB_AUTH_PASSWORD_MIN);
    return 0;
}

int fb_auth_password_hash(const char *password, char out[FB_AUTH_PWHASH_MAX], fb_err *err)
{
    int rc = sodium_ready(err);
    if (rc < 0 || (rc = fb_auth_password_check_rules(password, err)) < 0)
        return rc;
    if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return st_fail(err, FB_AUTH_EINTERNAL,
                       "cannot hash the password (argon2id needs %zu MiB of memory)",
                       (size_t)crypto_pwhash_MEMLIMIT_INTERACTIVE >> 20);
    return 0;
}

bool fb_auth_password_verify(const char *hash, const char *password)
{
    if (!hash || !password || sodium_init() < 0)
        return false;
    char h[FB_AUTH_PWHASH_MAX];
    size_t hl = strnlen(hash, sizeof h);
    size_t pl = strnlen(password, FB_AUTH_PASSWORD_MAX + 1);
    if (hl == sizeof h || pl > FB_AUTH_PASSWORD_MAX)
        return false;
    memset(h, 0, sizeof h);
    memcpy(h, hash, hl);
    return crypto_pwhash_str_verify(h, password, pl) == 0;
}

int fb_auth_password_generate(char out[FB_AUTH_GENERATED_PASSWORD_MAX], fb_err *err)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    int rc = sodium_ready(err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < FB_AUTH_GENERATED_PASSWORD_LEN; i++)
        out[i] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
    out[FB_AUTH_GENERATED_PASSWORD_LEN] = '\0';
    return 0;
}

/* ---- inserts shared by the public calls and bootstrap (lock held) ------------------- */

static int team_insert_locked(sqlite3 *db, const char *name, fb_team *out, fb_err *err)
{
    int rc = exists(db, "SELECT 1 FROM teams WHERE name = ?1", name, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return st_fail(err, FB_AUTH_EEXISTS, "a team named '%s' already exists", name);
    fb_team t;
    copy_str(t.name, sizeof t.name, name);
    fb_auth_time_now(t.created_at);
    for (int attempt = 0; attempt < INSERT_ATTEMPTS; attempt++) {
        if ((rc = new_id("tm_", 8, t.id, err)) < 0)
            return rc;
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, "INSERT INTO teams (id, name, created_at) VALUES (?1, ?2, ?3)", &s,
                          err)) < 0 ||
            (rc = bind_texts(db, s, err, 3, t.id, t.name, t.created_at)) < 0)
            return rc;
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
            if (out)
                *out = t;
            return 0;
        }
        if (!id_collision(rc))
            return db_fail(err, db, "cannot create the team");
    }
    return db_fail(err, db, "cannot create the team (id collisions)");
}

static int user_insert_locked(sqlite3 *db, const char *username, const char *team_id,
                              fb_role role, const char *pwhash, fb_user *out, fb_err *err)
{
    int rc = exists(db, "SELECT 1 FROM teams WHERE id = ?1", team_id, err);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return st_fail(err, FB_AUTH_ENOTFOUND, "no team with id %s", team_id);
    rc = exists(db, "SELECT 1 FROM users WHERE username = ?1", username, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return st_fail(err, FB_AUTH_EEXISTS, "the username '%s' is taken", username);
    fb_user u = {.role = role, .disabled = false};
    copy_str(u.username, sizeof u.username, username);
    copy_str(u.team_id, sizeof u.team_id, team_id);
    fb_auth_time_now(u.created_at);
    for (int attempt = 0; attempt < INSERT_ATTEMPTS; attempt++) {
        if ((rc = new_id("us_", 8, u.id, err)) < 0)
            return rc;
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db,
                          "INSERT INTO users (id, username, team_id, role, password_hash, "
                          "created_at, disabled) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
                          &s, err)) < 0 ||
            (rc = bind_texts(db, s, err, 6, u.id, u.username, u.team_id, fb_role_name(role),
                             pwhash, u.created_at)) < 0)
            return rc;
        rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
            if (out)
                *out = u;
            return 0;
        }
        if (!id_collision(rc))
            return db_fail(err, db, "cannot create the user");
    }
    return db_fail(err, db, "cannot create the user (id collisions)");
}

/* Makes a fresh key for user_id (already checked by the caller, in the
 * same transaction), inserts its digest and writes the key text once
 * into key_out. */
static int key_insert_locked(sqlite3 *db, const uint8_t pepper[PEPPER_BYTES], const char *user_id,
                             const char *name, fb_perm scopes, const char *expires_norm,
                             char *key_out, char *key_id_out, fb_err *err)
{
    char scopes_json[FB_PERMS_JSON_MAX];
    if (fb_perms_format_json(scopes, scopes_json, sizeof scopes_json) < 0)
        return st_fail(err, FB_AUTH_EINVAL, "invalid scopes");
    char created[FB_TIME_MAX];
    fb_auth_time_now(created);

    uint8_t secret[KEY_SECRET_BYTES], digest[DIGEST_BYTES];
    char b64[KEY_SECRET_B64 + 1];
    int rc = FB_AUTH_EINTERNAL;
    if (fb_random_bytes(secret, sizeof secret) < 0) {
        rc = st_fail(err, FB_AUTH_EINTERNAL, "cannot read random bytes: %s", strerror(errno));
        goto out;
    }
    sodium_bin2base64(b64, sizeof b64, secret, sizeof secret,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    for (int attempt = 0; attempt < INSERT_ATTEMPTS; attempt++) {
        char id[FB_ID_MAX];
        if ((rc = new_id(KEY_ID_PREFIX, KEY_ID_BYTES, id, err)) < 0)
            goto out;
        const char *id_hex = id + strlen(KEY_ID_PREFIX);
        key_digest(pepper, id_hex, secret, digest);
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db,
                          "INSERT INTO api_keys (id, user_id, name, key_hash, scopes, created_at, "
                          "expires_at, revoked_at, last_used_at) "
                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL)",
                          &s, err)) < 0 ||
            (rc = bind_texts(db, s, err, 3, id, user_id, name)) < 0)
            goto out;
        if (sqlite3_bind_blob(s, 4, digest, sizeof digest, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_text(s, 5, scopes_json, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_text(s, 6, created, -1, SQLITE_STATIC) != SQLITE_OK ||
            (expires_norm ? sqlite3_bind_text(s, 7, expires_norm, -1, SQLITE_STATIC)
                          : sqlite3_bind_null(s, 7)) != SQLITE_OK) {
            rc = db_fail(err, db, "cannot bind a parameter");
            goto out;
        }
        int step = sqlite3_step(s);
        if (step == SQLITE_DONE) {
            char *o = key_out;
            memcpy(o, KEY_PREFIX, KEY_PREFIX_LEN);
            memcpy(o += KEY_PREFIX_LEN, id_hex, KEY_ID_HEX);
            *(o += KEY_ID_HEX) = '_';
            memcpy(o + 1, b64, KEY_SECRET_B64);
            key_out[FB_AUTH_KEY_TEXT_LEN] = '\0';
            copy_str(key_id_out, FB_ID_MAX, id);
            rc = 0;
            goto out;
        }
        if (!id_collision(step)) {
            rc = db_fail(err, db, "cannot store the API key");
            goto out;
        }
    }
    rc = db_fail(err, db, "cannot store the API key (id collisions)");
out:
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(digest, sizeof digest);
    sodium_memzero(b64, sizeof b64);
    return rc;
}

/* ---- organisation ------------------------------------------------------------------- */

int fb_auth_org_get(fb_store *st, bool *initialised, char *name_out, fb_err *err)
{
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        rc = prepare(db, "SELECT name FROM org WHERE id = 1", &s, err);
        if (rc == 0) {
            int step = sqlite3_step(s);
            if (step == SQLITE_ROW) {
                *initialised = true;
                if (name_out && col_text(s, 0, name_out, FB_AUTH_ORG_NAME_MAX + 1) < 0)
                    rc = st_fail(err, FB_AUTH_EINTERNAL, "the stored org name is malformed");
            } else if (step == SQLITE_DONE) {
                *initialised = false;
                if (name_out)
                    name_out[0] = '\0';
            } else {
                rc = db_fail(err, db, "cannot read the org");
            }
        }
    }
    fb_store_unlock(st);
    return rc;
}

static int init_org_locked(fb_store *st, const uint8_t pepper[PEPPER_BYTES], const char *org_name,
                           const char *admin_username, const char *pwhash, char *admin_key_out,
                           fb_err *err)
{
    sqlite3 *db = fb_store_db(st);
    int rc = exists(db, "SELECT 1 FROM org WHERE id = 1", NULL, err);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return st_fail(err, FB_AUTH_EEXISTS,
                       "the organisation is already initialised; nothing was changed");
    char now[FB_TIME_MAX];
    fb_auth_time_now(now);
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, "INSERT INTO org (id, name, created_at) VALUES (1, ?1, ?2)", &s,
                          err)) < 0 ||
            (rc = bind_texts(db, s, err, 2, org_name, now)) < 0)
            return rc;
        if (sqlite3_step(s) != SQLITE_DONE)
            return db_fail(err, db, "cannot create the org");
    }
    fb_team team;
    fb_user admin;
    char key_id[FB_ID_MAX];
    if ((rc = team_insert_locked(db, "default", &team, err)) < 0 ||
        (rc = user_insert_locked(db, admin_username, team.id, FB_ROLE_ADMIN, pwhash, &admin,
                                 err)) < 0 ||
        (rc = key_insert_locked(db, pepper, admin.id, "admin (bootstrap)", FB_PERM_ALL, NULL,
                                admin_key_out, key_id, err)) < 0)
        return rc;
    return 0;
}

int fb_auth_init_org(fb_store *st, const char *org_name, const char *admin_username,
                     const char *password_or_null, char *generated_password_out,
                     char *admin_key_out, fb_err *err)
{
    int rc = sodium_ready(err);
    if (rc < 0)
        return rc;
    if (!admin_key_out)
        return st_fail(err, FB_AUTH_EINVAL, "internal: no buffer for the admin key");
    admin_key_out[0] = '\0';
    if (generated_password_out)
        generated_password_out[0] = '\0';
    if (!valid_label(org_name, FB_AUTH_ORG_NAME_MAX))
        return st_fail(err, FB_AUTH_EINVAL,
                       "the organisation name must be 1 to %d printable ASCII characters",
                       FB_AUTH_ORG_NAME_MAX);
    if (!valid_name(admin_username))
        return st_fail(err, FB_AUTH_EINVAL,
                       "a username is 1 to %d characters from a-z 0-9 _ . -", FB_AUTH_NAME_MAX);
    if (!password_or_null && !generated_password_out)
        return st_fail(err, FB_AUTH_EINVAL, "internal: no buffer for the generated password");

    char generated[FB_AUTH_GENERATED_PASSWORD_MAX] = "";
    char pwhash[FB_AUTH_PWHASH_MAX];
    uint8_t pepper[PEPPER_BYTES];
    const char *password = password_or_null;
    if (!password) {
        if ((rc = fb_auth_password_generate(generated, err)) < 0)
            goto out;
        password = generated;
    }
    /* Refuse early, before the slow hash, when the org already exists; the
     * check is repeated in the transaction. */
    bool done = false;
    if ((rc = fb_auth_org_get(st, &done, NULL, err)) < 0)
        goto out;
    if (done) {
        rc = st_fail(err, FB_AUTH_EEXISTS,
                     "the organisation is already initialised; nothing was changed");
        goto out;
    }
    if ((rc = fb_auth_password_hash(password, pwhash, err)) < 0 ||
        (rc = pepper_load(st, pepper, err)) < 0)
        goto out;

    fb_store_lock(st);
    if ((rc = fb_store_begin(st, err)) == 0) {
        rc = init_org_locked(st, pepper, org_name, admin_username, pwhash, admin_key_out, err);
        if (rc == 0)
            rc = fb_store_commit(st, err) < 0 ? FB_AUTH_EINTERNAL : 0;
        if (rc < 0)
            fb_store_rollback(st);
    } else {
        rc = FB_AUTH_EINTERNAL;
    }
    fb_store_unlock(st);
    if (rc == 0 && !password_or_null)
        copy_str(generated_password_out, FB_AUTH_GENERATED_PASSWORD_MAX, generated);
out:
    if (rc < 0)
        sodium_memzero(admin_key_out, FB_AUTH_KEY_TEXT_MAX);
    sodium_memzero(generated, sizeof generated);
    sodium_memzero(pepper, sizeof pepper);
    sodium_memzero(pwhash, sizeof pwhash);
    return rc;
}

/* ---- teams ---------------------------------------------------------------------------- */

int fb_auth_team_create(fb_store *st, const char *name, fb_team *out, fb_err *err)
{
    if (!valid_name(name))
        return st_fail(err, FB_AUTH_EINVAL,
                       "a team name is 1 to %d characters from a-z 0-9 _ . -", FB_AUTH_NAME_MAX);
    fb_store_lock(st);
    int rc = fb_store_begin(st, err) < 0 ? FB_AUTH_EINTERNAL : 0;
    if (rc == 0) {
        rc = team_insert_locked(fb_store_db(st), name, out, err);
        if (rc == 0)
            rc = fb_store_commit(st, err) < 0 ? FB_AUTH_EINTERNAL : 0;
        if (rc < 0)
            fb_store_rollback(st);
    }
    fb_store_unlock(st);
    return rc;
}

static int team_get(fb_store *st, const char *sql, const char *param, fb_team *out, fb_err *err)
{
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, sql, &s, err)) == 0 && (rc = bind_texts(db, s, err, 1, param)) == 0)
            rc = fetch_one(db, s, read_team, out, "cannot read the team", err);
    }
    fb_store_unlock(st);
    if (rc == 0)
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such team");
    return rc < 0 ? rc : 0;
}

int fb_auth_team_get(fb_store *st, const char *team_id, fb_team *out, fb_err *err)
{
    if (!valid_team_id(team_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such team");
    return team_get(st, "SELECT " TEAM_COLS " FROM teams WHERE id = ?1", team_id, out, err);
}

int fb_auth_team_get_by_name(fb_store *st, const char *name, fb_team *out, fb_err *err)
{
    if (!valid_name(name))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such team");
    return team_get(st, "SELECT " TEAM_COLS " FROM teams WHERE name = ?1", name, out, err);
}

int fb_auth_team_list(fb_store *st, fb_team **out, size_t *n, fb_err *err)
{
    *out = NULL;
    *n = 0;
    void *items = NULL;
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, "SELECT " TEAM_COLS " FROM teams ORDER BY name", &s, err)) == 0)
            rc = collect(db, s, sizeof(fb_team), read_team, &items, n, "teams", err);
    }
    fb_store_unlock(st);
    *out = items;
    return rc;
}

/* ---- users ------------------------------------------------------------------------------ */

int fb_auth_user_create(fb_store *st, const char *username, const char *team_id, fb_role role,
                        const char *password, fb_user *out, fb_err *err)
{
    if (!valid_name(username))
        return st_fail(err, FB_AUTH_EINVAL,
                       "a username is 1 to %d characters from a-z 0-9 _ . -", FB_AUTH_NAME_MAX);
    if (role == FB_ROLE_NONE || fb_role_perms(role) == 0)
        return st_fail(err, FB_AUTH_EINVAL, "a user needs a role: admin, developer, operator "
                                            "or viewer");
    if (!valid_team_id(team_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such team");
    char pwhash[FB_AUTH_PWHASH_MAX];
    int rc = fb_auth_password_hash(password, pwhash, err);
    if (rc < 0)
        return rc;
    fb_store_lock(st);
    if ((rc = fb_store_begin(st, err)) == 0) {
        rc = user_insert_locked(fb_store_db(st), username, team_id, role, pwhash, out, err);
        if (rc == 0)
            rc = fb_store_commit(st, err) < 0 ? FB_AUTH_EINTERNAL : 0;
        if (rc < 0)
            fb_store_rollback(st);
    } else {
        rc = FB_AUTH_EINTERNAL;
    }
    fb_store_unlock(st);
    sodium_memzero(pwhash, sizeof pwhash);
    return rc;
}

static int user_get(fb_store *st, const char *sql, const char *param, fb_user *out, fb_err *err)
{
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, sql, &s, err)) == 0 && (rc = bind_texts(db, s, err, 1, param)) == 0)
            rc = fetch_one(db, s, read_user, out, "cannot read the user", err);
    }
    fb_store_unlock(st);
    if (rc == 0)
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
    return rc < 0 ? rc : 0;
}

int fb_auth_user_get(fb_store *st, const char *user_id, fb_user *out, fb_err *err)
{
    if (!valid_user_id(user_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
    return user_get(st, "SELECT " USER_COLS " FROM users WHERE id = ?1", user_id, out, err);
}

int fb_auth_user_get_by_name(fb_store *st, const char *username, fb_user *out, fb_err *err)
{
    if (!valid_name(username))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
    return user_get(st, "SELECT " USER_COLS " FROM users WHERE username = ?1", username, out,
                    err);
}

int fb_auth_user_list(fb_store *st, const char *team_id_or_null, fb_user **out, size_t *n,
                      fb_err *err)
{
    *out = NULL;
    *n = 0;
    if (team_id_or_null && !valid_team_id(team_id_or_null))
        return 0; /* no such team: no users */
    void *items = NULL;
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db,
                          team_id_or_null
                              ? "SELECT " USER_COLS " FROM users WHERE team_id = ?1 ORDER BY username"
                              : "SELECT " USER_COLS " FROM users ORDER BY username",
                          &s, err)) == 0 &&
            (!team_id_or_null || (rc = bind_texts(db, s, err, 1, team_id_or_null)) == 0))
            rc = collect(db, s, sizeof(fb_user), read_user, &items, n, "users", err);
    }
    fb_store_unlock(st);
    *out = items;
    return rc;
}

/* UPDATE users SET <column> = ?1 WHERE id = ?2; ENOTFOUND when no row. */
static int user_update(fb_store *st, const char *sql, const char *value, const char *user_id,
                       fb_err *err)
{
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, sql, &s, err)) == 0 &&
            (rc = bind_texts(db, s, err, 2, value, user_id)) == 0) {
            if (sqlite3_step(s) != SQLITE_DONE)
                rc = db_fail(err, db, "cannot update the user");
            else if (sqlite3_changes(db) == 0)
                rc = st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
        }
    }
    fb_store_unlock(st);
    return rc;
}

int fb_auth_user_set_disabled(fb_store *st, const char *user_id, bool disabled, fb_err *err)
{
    if (!valid_user_id(user_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
    return user_update(st, "UPDATE users SET disabled = CAST(?1 AS INTEGER) WHERE id = ?2",
                       disabled ? "1" : "0", user_id, err);
}

int fb_auth_user_set_password(fb_store *st, const char *user_id, const char *password,
                              fb_err *err)
{
    if (!valid_user_id(user_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
    char pwhash[FB_AUTH_PWHASH_MAX];
    int rc = fb_auth_password_hash(password, pwhash, err);
    if (rc == 0)
        rc = user_update(st, "UPDATE users SET password_hash = ?1 WHERE id = ?2", pwhash, user_id,
                         err);
    sodium_memzero(pwhash, sizeof pwhash);
    return rc;
}

static void fill_principal(fb_principal *p, const fb_user *u, const char *key_id, fb_perm scopes)
{
    memset(p, 0, sizeof *p);
    copy_str(p->user_id, sizeof p->user_id, u->id);
    copy_str(p->team_id, sizeof p->team_id, u->team_id);
    copy_str(p->key_id, sizeof p->key_id, key_id);
    p->role = u->role;
    p->is_admin = u->role == FB_ROLE_ADMIN;
    p->scopes = scopes & fb_role_perms(u->role);
    p->org_enabled = 0;
}

typedef struct login_row {
    fb_user user;
    char pwhash[FB_AUTH_PWHASH_MAX];
} login_row;

static int read_login_row(sqlite3_stmt *s, void *elem)
{
    login_row *r = elem;
    if (read_user(s, &r->user) < 0)
        return -1;
    return col_text(s, 6, r->pwhash, sizeof r->pwhash);
}

int fb_auth_password_login(fb_store *st, const char *username, const char *password,
                           fb_principal *out, fb_auth_fail *why, fb_err *err)
{
    memset(out, 0, sizeof *out);
    *why = FB_AUTH_FAIL_ERROR;
    int rc = sodium_ready(err);
    if (rc < 0)
        return -1;
    if (!username || !password) {
        *why = FB_AUTH_FAIL_MISSING;
        return fb_fail(err, "no username or password");
    }
    if (!valid_name(username) || strnlen(password, FB_AUTH_PASSWORD_MAX + 1) > FB_AUTH_PASSWORD_MAX) {
        *why = FB_AUTH_FAIL_MALFORMED;
        return fb_fail(err, "malformed username or password");
    }
    login_row row;
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, "SELECT " USER_COLS ", password_hash FROM users WHERE username = ?1",
                          &s, err)) == 0 &&
            (rc = bind_texts(db, s, err, 1, username)) == 0)
            rc = fetch_one(db, s, read_login_row, &row, "cannot read the user", err);
    }
    fb_store_unlock(st);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        (void)fb_auth_password_verify(dummy_pwhash, password); /* same time as a real check */
        *why = FB_AUTH_FAIL_UNKNOWN;
        return fb_fail(err, "login failed: no user '%s'", username);
    }
    bool ok = fb_auth_password_verify(row.pwhash, password);
    sodium_memzero(row.pwhash, sizeof row.pwhash);
    if (!ok) {
        *why = FB_AUTH_FAIL_BAD_SECRET;
        return fb_fail(err, "login failed: wrong password for '%s'", username);
    }
    if (row.user.disabled) {
        *why = FB_AUTH_FAIL_DISABLED;
        return fb_fail(err, "login failed: user '%s' is disabled", username);
    }
    fill_principal(out, &row.user, "", FB_PERM_ALL);
    *why = FB_AUTH_FAIL_NONE;
    return 0;
}

/* ---- API keys ---------------------------------------------------------------------------- */

/* Checks that do not need the database; fills expires_norm ("" = never). */
static int key_request_check(const char *user_id, const char *name, fb_perm scopes,
                             const char *expires, char expires_norm[FB_TIME_MAX], char *key_out,
                             char *key_id_out, fb_err *err)
{
    if (!key_out || !key_id_out)
        return st_fail(err, FB_AUTH_EINVAL, "internal: no buffer for the new key");
    key_out[0] = '\0';
    key_id_out[0] = '\0';
    expires_norm[0] = '\0';
    if (!valid_user_id(user_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
    if (!valid_label(name, FB_AUTH_KEY_NAME_MAX))
        return st_fail(err, FB_AUTH_EINVAL, "a key name is 1 to %d printable ASCII characters",
                       FB_AUTH_KEY_NAME_MAX);
    if (scopes == 0)
        return st_fail(err, FB_AUTH_EINVAL, "a key needs at least one scope");
    if (scopes & ~FB_PERM_ALL)
        return st_fail(err, FB_AUTH_EINVAL, "unknown scope bits 0x%x",
                       (unsigned)(scopes & ~FB_PERM_ALL));
    if (expires) {
        struct timespec when, now;
        if (fb_auth_time_parse(expires, &when) < 0)
            return st_fail(err, FB_AUTH_EINVAL,
                           "expires_at must be an RFC 3339 time such as 2030-01-31T12:00:00Z");
        clock_gettime(CLOCK_REALTIME, &now);
        if (ts_cmp(&when, &now) <= 0)
            return st_fail(err, FB_AUTH_EINVAL, "expires_at is in the past");
        format_time(&when, expires_norm);
    }
    return 0;
}

/* Lists the names of the bits in mask, comma-separated, for messages. */
static void perm_list(fb_perm mask, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < FB_PERM_COUNT; i++) {
        if (!(mask & fb_perm_at(i)))
            continue;
        int n = snprintf(out + o, cap - o, "%s%s", o ? ", " : "", fb_perm_name(fb_perm_at(i)));
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
}

typedef struct owner_row {
    char role[16];
    bool disabled;
} owner_row;

static int read_owner(sqlite3_stmt *s, void *elem)
{
    owner_row *o = elem;
    o->disabled = sqlite3_column_int(s, 1) != 0;
    return col_text(s, 0, o->role, sizeof o->role);
}

static int key_create_locked(fb_store *st, const uint8_t pepper[PEPPER_BYTES], const char *user_id,
                             const char *name, fb_perm scopes, const char *expires_norm,
                             char *key_out, char *key_id_out, fb_err *err)
{
    sqlite3 *db = fb_store_db(st);
    owner_row o;
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, "SELECT role, disabled FROM users WHERE id = ?1", &s, err)) < 0 ||
            (rc = bind_texts(db, s, err, 1, user_id)) < 0 ||
            (rc = fetch_one(db, s, read_owner, &o, "cannot read the key's owner", err)) < 0)
            return rc;
    }
    if (rc == 0)
        return st_fail(err, FB_AUTH_ENOTFOUND, "no user with id %s", user_id);
    if (o.disabled)
        return st_fail(err, FB_AUTH_EDENIED, "user %s is disabled; enable it first", user_id);
    fb_role role = fb_role_from_name(o.role);
    fb_perm excess = scopes & ~fb_role_perms(role);
    if (excess) {
        char names[FB_PERMS_JSON_MAX];
        perm_list(excess, names, sizeof names);
        return st_fail(err, FB_AUTH_EINVAL, "scopes exceed what role %s allows: %s",
                       fb_role_name(role), names);
    }
    return key_insert_locked(db, pepper, user_id, name, scopes,
                             expires_norm[0] ? expires_norm : NULL, key_out, key_id_out, err);
}

/* The part of fb_auth_key_create_as that needs no database. */
static int key_actor_check(const fb_principal *actor, const char *user_id, fb_perm scopes,
                           fb_err *err)
{
    if (!actor || actor->is_admin != (actor->role == FB_ROLE_ADMIN))
        return st_fail(err, FB_AUTH_EDENIED, "inconsistent principal");
    fb_perm ceiling = fb_role_perms(actor->role) & actor->scopes;
    bool owner = actor->user_id[0] && user_id && strcmp(actor->user_id, user_id) == 0;
    if (owner && !(ceiling & FB_PERM_KEYS_MANAGE))
        return st_fail(err, FB_AUTH_EDENIED, "managing your API keys needs keys:manage");
    if (!owner && !actor->is_admin)
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such user");
    if (!owner && !(ceiling & FB_PERM_ADMIN_USERS))
        return st_fail(err, FB_AUTH_EDENIED, "managing another user's API keys needs admin:users");
    fb_perm excess = scopes & ~ceiling;
    if (excess) {
        char names[FB_PERMS_JSON_MAX];
        perm_list(excess, names, sizeof names);
        return st_fail(err, FB_AUTH_EDENIED,
                       "a new key cannot hold more than the key or user creating it: %s", names);
    }
    return 0;
}

static int key_create(fb_store *st, const fb_principal *actor, const char *user_id,
                      const char *name, fb_perm scopes, const char *expires, char *key_out,
                      char *key_id_out, fb_err *err)
{
    char expires_norm[FB_TIME_MAX];
    int rc = sodium_ready(err);
    if (rc < 0 ||
        (rc = key_request_check(user_id, name, scopes, expires, expires_norm, key_out, key_id_out,
                                err)) < 0 ||
        (actor && (rc = key_actor_check(actor, user_id, scopes, err)) < 0))
        return rc;
    uint8_t pepper[PEPPER_BYTES];
    if ((rc = pepper_load(st, pepper, err)) < 0)
        return rc;
    fb_store_lock(st);
    if ((rc = fb_store_begin(st, err)) == 0) {
        rc = key_create_locked(st, pepper, user_id, name, scopes, expires_norm, key_out,
                               key_id_out, err);
        if (rc == 0)
            rc = fb_store_commit(st, err) < 0 ? FB_AUTH_EINTERNAL : 0;
        if (rc < 0)
            fb_store_rollback(st);
    } else {
        rc = FB_AUTH_EINTERNAL;
    }
    fb_store_unlock(st);
    sodium_memzero(pepper, sizeof pepper);
    if (rc < 0) {
        sodium_memzero(key_out, FB_AUTH_KEY_TEXT_MAX);
        key_id_out[0] = '\0';
    }
    return rc;
}

int fb_auth_key_create(fb_store *st, const char *user_id, const char *name, fb_perm scopes,
                       const char *expires_at_or_null, char *key_out, char *key_id_out,
                       fb_err *err)
{
    return key_create(st, NULL, user_id, name, scopes, expires_at_or_null, key_out, key_id_out,
                      err);
}

int fb_auth_key_create_as(fb_store *st, const fb_principal *actor, const char *user_id,
                          const char *name, fb_perm scopes, const char *expires_at_or_null,
                          char *key_out, char *key_id_out, fb_err *err)
{
    if (!actor)
        return st_fail(err, FB_AUTH_EDENIED, "no principal");
    return key_create(st, actor, user_id, name, scopes, expires_at_or_null, key_out, key_id_out,
                      err);
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* "Bearer fbk_<12 hex>_<43 base64url>" -> id hex (in place) and secret. */
static int parse_bearer(const char *v, size_t len, const char **id_hex,
                        uint8_t secret[KEY_SECRET_BYTES])
{
    static const char scheme[] = "Bearer ";
    const size_t sl = sizeof scheme - 1;
    if (len != sl + FB_AUTH_KEY_TEXT_LEN || strncasecmp(v, scheme, sl - 1) != 0 ||
        v[sl - 1] != ' ')
        return -1;
    const char *k = v + sl;
    if (memcmp(k, KEY_PREFIX, KEY_PREFIX_LEN) != 0)
        return -1;
    const char *h = k + KEY_PREFIX_LEN;
    for (size_t i = 0; i < KEY_ID_HEX; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return -1;
    if (h[KEY_ID_HEX] != '_')
        return -1;
    const char *b = h + KEY_ID_HEX + 1;
    for (size_t i = 0; i < KEY_SECRET_B64; i++)
        if (!is_b64url(b[i]))
            return -1;
    size_t bin_len = 0;
    const char *end = NULL;
    /* Rejects non-canonical encodings (stray low bits) as well. */
    if (sodium_base642bin(secret, KEY_SECRET_BYTES, b, KEY_SECRET_B64, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        bin_len != KEY_SECRET_BYTES || end != b + KEY_SECRET_B64)
        return -1;
    *id_hex = h;
    return 0;
}

typedef struct auth_row {
    uint8_t digest[DIGEST_BYTES];
    bool digest_ok; /* the stored blob had the right size */
    char revoked_at[FB_TIME_MAX];
    char expires_at[FB_TIME_MAX];
    char last_used_at[FB_TIME_MAX];
    char scopes[FB_PERMS_JSON_MAX * 2];
    fb_user user;
} auth_row;

static int read_auth_row(sqlite3_stmt *s, void *elem)
{
    auth_row *r = elem;
    const void *blob = sqlite3_column_blob(s, 0);
    int bl = sqlite3_column_bytes(s, 0);
    r->digest_ok = blob && bl == DIGEST_BYTES;
    if (r->digest_ok)
        memcpy(r->digest, blob, DIGEST_BYTES);
    if (col_text(s, 1, r->revoked_at, sizeof r->revoked_at) |
        col_text(s, 2, r->expires_at, sizeof r->expires_at) |
        col_text(s, 3, r->last_used_at, sizeof r->last_used_at) |
        col_text(s, 4, r->scopes, sizeof r->scopes))
        return -1;
    fb_user *u = &r->user;
    char role[16];
    if (col_text(s, 5, u->id, sizeof u->id) | col_text(s, 6, u->username, sizeof u->username) |
        col_text(s, 7, u->team_id, sizeof u->team_id) | col_text(s, 8, role, sizeof role))
        return -1;
    u->role = fb_role_from_name(role);
    u->disabled = sqlite3_column_int(s, 9) != 0;
    return u->role == FB_ROLE_NONE ? -1 : 0;
}

/* Refreshes last_used_at when it is older than a minute; best effort: a
 * failure here must not turn a valid key away. */
static void touch_key_locked(sqlite3 *db, const char *key_id, const char *last_used)
{
    struct timespec now, last;
    clock_gettime(CLOCK_REALTIME, &now);
    if (last_used[0] && fb_auth_time_parse(last_used, &last) == 0 &&
        now.tv_sec - last.tv_sec < LAST_USED_INTERVAL_S && now.tv_sec >= last.tv_sec)
        return;
    char stamp[FB_TIME_MAX];
    format_time(&now, stamp);
    cleanup_stmt sqlite3_stmt *s = NULL;
    if (prepare(db, "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2", &s, NULL) == 0 &&
        bind_texts(db, s, NULL, 2, stamp, key_id) == 0)
        (void)sqlite3_step(s);
}

static int auth_fail(fb_auth_fail *why, fb_auth_fail reason, fb_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int auth_fail(fb_auth_fail *why, fb_auth_fail reason, fb_err *err, const char *fmt, ...)
{
    *why = reason;
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int fb_auth_key_authenticate_n(fb_store *st, const char *value, size_t len, fb_principal *out,
                               fb_auth_fail *why, fb_err *err)
{
    memset(out, 0, sizeof *out);
    *why = FB_AUTH_FAIL_ERROR;
    if (sodium_ready(err) < 0)
        return -1;
    if (!value)
        return auth_fail(why, FB_AUTH_FAIL_MISSING, err, "no Authorization header");
    if (len > FB_AUTH_HEADER_MAX)
        return auth_fail(why, FB_AUTH_FAIL_MALFORMED, err,
                         "Authorization header longer than %d bytes", FB_AUTH_HEADER_MAX);
    if (memchr(value, '\0', len))
        return auth_fail(why, FB_AUTH_FAIL_MALFORMED, err, "Authorization header contains NUL");

    uint8_t secret[KEY_SECRET_BYTES], pepper[PEPPER_BYTES], digest[DIGEST_BYTES];
    auth_row row;
    memset(&row, 0, sizeof row);
    const char *id_hex = NULL;
    char key_id[FB_ID_MAX] = "";
    int rc = -1;
    if (parse_bearer(value, len, &id_hex, secret) < 0) {
        rc = auth_fail(why, FB_AUTH_FAIL_MALFORMED, err,
                       "Authorization header is not 'Bearer fbk_<id>_<secret>'");
        goto out;
    }
    snprintf(key_id, sizeof key_id, KEY_ID_PREFIX "%.*s", KEY_ID_HEX, id_hex);
    if (pepper_load(st, pepper, err) < 0)
        goto out; /* why = error */
    /* The digest is computed before the lookup so that unknown ids and
     * wrong secrets cost the same. */
    key_digest(pepper, id_hex, secret, digest);

    int found;
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        found = prepare(db,
                        "SELECT k.key_hash, k.revoked_at, k.expires_at, k.last_used_at, k.scopes, "
                        "u.id, u.username, u.team_id, u.role, u.disabled "
                        "FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?1",
                        &s, err);
        if (found == 0 && (found = bind_texts(db, s, err, 1, key_id)) == 0)
            found = fetch_one(db, s, read_auth_row, &row, "cannot read the API key", err);
    }
    bool matches = found == 1 && row.digest_ok &&
                   sodium_memcmp(row.digest, digest, DIGEST_BYTES) == 0;
    fb_store_unlock(st);

    if (found < 0) {
        rc = -1; /* why = error, err set */
        goto out;
    }
    if (found == 0) {
        rc = auth_fail(why, FB_AUTH_FAIL_UNKNOWN, err, "no API key %s", key_id);
        goto out;
    }
    if (!matches) {
        rc = auth_fail(why, FB_AUTH_FAIL_BAD_SECRET, err, "wrong secret for API key %s", key_id);
        goto out;
    }
    if (row.revoked_at[0]) {
        rc = auth_fail(why, FB_AUTH_FAIL_REVOKED, err, "API key %s was revoked at %s", key_id,
                       row.revoked_at);
        goto out;
    }
    if (row.expires_at[0]) {
        struct timespec when, now;
        if (fb_auth_time_parse(row.expires_at, &when) < 0) {
            rc = auth_fail(why, FB_AUTH_FAIL_ERROR, err,
                           "API key %s has an unreadable expiry time", key_id);
            goto out;
        }
        clock_gettime(CLOCK_REALTIME, &now);
        if (ts_cmp(&now, &when) >= 0) {
            rc = auth_fail(why, FB_AUTH_FAIL_EXPIRED, err, "API key %s expired at %s", key_id,
                           row.expires_at);
            goto out;
        }
    }
    if (row.user.disabled) {
        rc = auth_fail(why, FB_AUTH_FAIL_DISABLED, err, "the owner of API key %s is disabled",
                       key_id);
        goto out;
    }
    fb_perm scopes;
    if (fb_perms_parse_json(row.scopes, &scopes, NULL) < 0) {
        rc = auth_fail(why, FB_AUTH_FAIL_ERROR, err, "API key %s has unreadable scopes", key_id);
        goto out;
    }
    fill_principal(out, &row.user, key_id, scopes);
    *why = FB_AUTH_FAIL_NONE;
    rc = 0;
    fb_store_lock(st);
    touch_key_locked(fb_store_db(st), key_id, row.last_used_at);
    fb_store_unlock(st);
out:
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(pepper, sizeof pepper);
    sodium_memzero(digest, sizeof digest);
    sodium_memzero(&row, sizeof row);
    return rc;
}

int fb_auth_key_authenticate(fb_store *st, const char *header_value, fb_principal *out,
                             fb_auth_fail *why, fb_err *err)
{
    size_t len = header_value ? strnlen(header_value, FB_AUTH_HEADER_MAX + 1) : 0;
    return fb_auth_key_authenticate_n(st, header_value, len, out, why, err);
}

int fb_auth_key_revoke(fb_store *st, const fb_principal *actor, const char *key_id, fb_err *err)
{
    if (!actor || actor->is_admin != (actor->role == FB_ROLE_ADMIN))
        return st_fail(err, FB_AUTH_EDENIED, "inconsistent principal");
    if (!valid_key_id(key_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such API key");
    fb_perm ceiling = fb_role_perms(actor->role) & actor->scopes;
    char owner[FB_ID_MAX];
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc = fb_store_begin(st, err) < 0 ? FB_AUTH_EINTERNAL : 0;
    if (rc == 0) {
        {
            cleanup_stmt sqlite3_stmt *s = NULL;
            if ((rc = prepare(db, "SELECT user_id FROM api_keys WHERE id = ?1", &s, err)) == 0 &&
                (rc = bind_texts(db, s, err, 1, key_id)) == 0) {
                int step = sqlite3_step(s);
                if (step == SQLITE_DONE)
                    rc = st_fail(err, FB_AUTH_ENOTFOUND, "no such API key");
                else if (step != SQLITE_ROW)
                    rc = db_fail(err, db, "cannot read the API key");
                else if (col_text(s, 0, owner, sizeof owner) < 0)
                    rc = st_fail(err, FB_AUTH_EINTERNAL, "the stored API key row is malformed");
            }
        }
        if (rc == 0) {
            bool is_owner = actor->user_id[0] && strcmp(owner, actor->user_id) == 0;
            if (is_owner && !(ceiling & FB_PERM_KEYS_MANAGE))
                rc = st_fail(err, FB_AUTH_EDENIED, "revoking your API keys needs keys:manage");
            else if (!is_owner && !actor->is_admin)
                rc = st_fail(err, FB_AUTH_ENOTFOUND, "no such API key");
            else if (!is_owner && !(ceiling & FB_PERM_ADMIN_USERS))
                rc = st_fail(err, FB_AUTH_EDENIED,
                             "revoking another user's API key needs admin:users");
        }
        if (rc == 0) {
            char now[FB_TIME_MAX];
            fb_auth_time_now(now);
            cleanup_stmt sqlite3_stmt *s = NULL;
            if ((rc = prepare(db,
                              "UPDATE api_keys SET revoked_at = ?1 "
                              "WHERE id = ?2 AND revoked_at IS NULL",
                              &s, err)) == 0 &&
                (rc = bind_texts(db, s, err, 2, now, key_id)) == 0 &&
                sqlite3_step(s) != SQLITE_DONE)
                rc = db_fail(err, db, "cannot revoke the API key");
        }
        if (rc == 0)
            rc = fb_store_commit(st, err) < 0 ? FB_AUTH_EINTERNAL : 0;
        if (rc < 0)
            fb_store_rollback(st);
    }
    fb_store_unlock(st);
    return rc;
}

int fb_auth_key_get(fb_store *st, const char *key_id, fb_api_key_info *out, fb_err *err)
{
    if (!valid_key_id(key_id))
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such API key");
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db, "SELECT " KEY_COLS " FROM api_keys WHERE id = ?1", &s, err)) == 0 &&
            (rc = bind_texts(db, s, err, 1, key_id)) == 0)
            rc = fetch_one(db, s, read_key, out, "cannot read the API key", err);
    }
    fb_store_unlock(st);
    if (rc == 0)
        return st_fail(err, FB_AUTH_ENOTFOUND, "no such API key");
    return rc < 0 ? rc : 0;
}

int fb_auth_key_list(fb_store *st, const char *user_id, fb_api_key_info **out, size_t *n,
                     fb_err *err)
{
    *out = NULL;
    *n = 0;
    if (!valid_user_id(user_id))
        return 0;
    void *items = NULL;
    fb_store_lock(st);
    sqlite3 *db = fb_store_db(st);
    int rc;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if ((rc = prepare(db,
                          "SELECT " KEY_COLS " FROM api_keys WHERE user_id = ?1 "
                          "ORDER BY created_at, id",
                          &s, err)) == 0 &&
            (rc = bind_texts(db, s, err, 1, user_id)) == 0)
            rc = collect(db, s, sizeof(fb_api_key_info), read_key, &items, n, "API keys",
                         err);
    }
    fb_store_unlock(st);
    *out = items;
    return rc;
}
