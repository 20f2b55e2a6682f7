/*
 * pg_sql.c - sql.h over libpq: with pg_listen.c (the LISTEN side of
 * fb_sql_notify), the only files in ForgeBox that use the PostgreSQL
 * client library.  Its functions carry the names pg_names.h
 * gives them, so the SQL repositories compiled a second time with that
 * header (see pg_names.h) run on PostgreSQL unchanged.
 *
 * One connection per store, guarded by one mutex, like the SQLite engine.
 * The repositories' SQL is the subset both databases speak; what differs
 * is handled here:
 *   - parameter markers: "?N" becomes "$N", a bare "?" the next number;
 *     "LIMIT -1" (SQLite's "no limit") becomes "LIMIT ALL"; a parameter
 *     tested with "IS NULL" (optional filters, all texts) is cast to text,
 *     since the server types a parameter where it first meets it.  Text outside
 *     quotes only; the statements are our own compiled-in strings.
 *   - every value is a bound parameter (PQexecParams): texts untyped (the
 *     server infers the column's type), integers int8, blobs binary bytea.
 *   - fb_sql_begin is SQLite's BEGIN IMMEDIATE: one writer at a time.  Here
 *     several gateways share the database, so a writing transaction takes a
 *     transaction-scoped advisory lock first: all writers (an audit append
 *     reading the chain head, a session insert counting the user's
 *     sessions, a revocation walking the key tree) are serialised across
 *     every process, and READ COMMITTED lets each statement after the lock
 *     see what the previous holder committed.  fb_sql_begin_read is a
 *     REPEATABLE READ READ ONLY transaction: one snapshot.
 *   - errors: SQLSTATE 23505 on a "_pkey" constraint is a collision,
 *     another 23505 a taken name, 23503 a missing referent, serialisation
 *     and lock failures busy; a connection that broke is reset (PQreset)
 *     before the next statement, and while the server cannot be reached
 *     every call fails with FB_STORE_EBUSY and a message saying so.  A
 *     statement whose connection broke is never retried: it may have
 *     committed, and the caller must not be told otherwise.
 *
 *   - pipelines (pg_sql.h, for pg_audit.c's group commit): several
 *     statements, with BEGIN, the writer lock and COMMIT, in one round
 *     trip, as named statements prepared once per connection (forgotten,
 *     and prepared again, after a reconnection).
 *
 * Migrations are src/store/migrations/pg/NNN_name.sql (fb_pg_migrations),
 * with the same version numbers as the SQLite ones; the version is the one
 * row of schema_version, and all pending migrations run in one
 * transaction under the same advisory lock, so two gateways starting on a
 * fresh database apply each exactly once.
 */
#define _GNU_SOURCE
#include "store/pg_names.h"
#include "store/pg_sql.h"
#include "store/sql.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "policy/policy.h"
#include "store/migrations.h"

/* The advisory lock key every ForgeBox writer takes ("fbstore\0"). */
#define WRITER_LOCK "7377436577230592"
#define RETRY_NS 250000000ULL /* between reconnection attempts */
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define TEXTOID 25
#define BYTEAOID 17
#define VARCHAROID 1043
#define PREPARED_MAX 16 /* named statements kept per connection (pipelines) */

/* A named server-side statement of this connection: "fbp<index>". */
struct prepared {
    char *sql; /* the translated text; NULL: a free slot */
    bool ready; /* its Parse succeeded (else: sent in the current pipeline) */
};

struct fb_sql {
    PGconn *conn;
    pthread_mutex_t lock;
    int version;
    int64_t changes;
    bool in_tx; /* between begin_with and commit/rollback */
    uint64_t retry_after_ns; /* no reconnection attempt before (monotonic) */
    struct prepared prepared[PREPARED_MAX]; /* this connection's (forgotten on reset) */
    fb_pg_audit_ends audit_ends;             /* pg_audit.c's; forgotten on reset */
};

struct fb_sql_stmt {
    fb_sql *db;
    char *sql;
    int nparams;
    char **vals;
    int *lens, *fmts;
    unsigned *types;
    PGresult *res;
    int row, nrows;
    int64_t changes; /* of this statement, when it ran in a pipeline */
    bool ran;
    unsigned char *blob; /* the unescaped bytea of the current row */
};

/* ---- errors and the connection ----------------------------------------------- */

static int status_of(const PGresult *res, PGconn *conn)
{
    if (conn && PQstatus(conn) != CONNECTION_OK)
        return FB_STORE_EBUSY;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return FB_STORE_EIO;
    if (strcmp(state, "23505") == 0) {
        const char *c = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        size_t n = c ? strlen(c) : 0;
        return n >= 5 && strcmp(c + n - 5, "_pkey") == 0 ? FB_STORE_ECOLLISION : FB_STORE_EEXISTS;
    }
    if (strcmp(state, "23503") == 0)
        return FB_STORE_ENOTFOUND;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0 ||
        strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return FB_STORE_EBUSY;
    if (strcmp(state, "53200") == 0)
        return FB_STORE_ENOMEM;
    return FB_STORE_EIO;
}

/* The first line of libpq's message (it may span lines with DETAIL). */
static void fail_pg(fb_sql *db, const PGresult *res, const char *what, fb_err *err)
{
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (!*m && db)
        m = PQerrorMessage(db->conn);
    int n = (int)strcspn(m, "\n");
    if (db && PQstatus(db->conn) != CONNECTION_OK)
        fb_fail(err, "%s: the connection to PostgreSQL is lost (%.*s)", what, n, m);
    else
        fb_fail(err, "%s: %.*s", what, n, m);
}

/* What belonged to the server session: named statements, the chain ends
 * read through it. */
static void forget_connection(fb_sql *db)
{
    for (int i = 0; i < PREPARED_MAX; i++) {
        free(db->prepared[i].sql);
        db->prepared[i] = (struct prepared){0};
    }
    db->audit_ends.valid = false;
}

/* Before a statement outside a transaction: re-establishes a connection
 * that broke.  Inside one, a broken connection has lost the transaction. */
static int ensure_connected(fb_sql *db, fb_err *err)
{
    if (PQstatus(db->conn) == CONNECTION_OK)
        return 0;
    /* At most one attempt per RETRY_NS: while the server is away, requests
     * queued on the store lock fail at once instead of each waiting for a
     * connection attempt in turn. */
    uint64_t now = fb_time_monotonic_ns();
    if (now < db->retry_after_ns)
        return fb_fail_code(err, FB_STORE_EBUSY, "database: PostgreSQL is unreachable; retrying shortly");
    forget_connection(db);
    PQreset(db->conn);
    if (PQstatus(db->conn) == CONNECTION_OK)
        return 0;
    db->retry_after_ns = fb_time_monotonic_ns() + RETRY_NS;
    int n = (int)strcspn(PQerrorMessage(db->conn), "\n");
    return fb_fail_code(err, FB_STORE_EBUSY, "database: cannot reach PostgreSQL (%.*s); will retry on the next request",
                        n, PQerrorMessage(db->conn));
}

/* Runs fixed SQL (never outside text) with no parameters and no rows. */
static int exec_fixed(fb_sql *db, const char *sql, fb_err *err)
{
    PGresult *res = PQexec(db->conn, sql);
    ExecStatusType t = PQresultStatus(res);
    int rc = 0;
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        rc = status_of(res, db->conn);
        fail_pg(db, res, "database", err);
    }
    PQclear(res);
    return rc;
}

/* ---- statements ------------------------------------------------------------------ */

/* SQLite's markers and "LIMIT -1" in PostgreSQL's spelling; counts the
 * parameters. */
static char *translate(const char *sql, int *nparams)
{
    size_t len = strlen(sql);
    char *out = malloc(len * 2 + 16), *o = out;
    if (!out)
        return NULL;
    int next = 0, max = 0;
    bool quoted = false;
    for (const char *p = sql; *p;) {
        if (*p == '\'')
            quoted = !quoted;
        if (!quoted && *p == '?') {
            p++;
            int v = 0;
            if (*p >= '0' && *p <= '9')
                while (*p >= '0' && *p <= '9')
                    v = v * 10 + (*p++ - '0');
            else
                v = ++next;
            max = v > max ? v : max;
            /* "?1 IS NULL OR col = ?1": the server types a parameter from
             * its first use, and IS NULL says nothing; these are texts. */
            o += sprintf(o, strncmp(p, " IS NULL", 8) == 0 ? "$%d::text" : "$%d", v);
            continue;
        }
        if (!quoted && strncmp(p, "LIMIT -1", 8) == 0) {
            o += sprintf(o, "LIMIT ALL");
            p += 8;
            continue;
        }
        *o++ = *p++;
    }
    *o = '\0';
    *nparams = max;
    return out;
}

int fb_sql_prepare(fb_sql *db, const char *sql, fb_sql_stmt **out, fb_err *err)
{
    *out = NULL;
    fb_sql_stmt *s = calloc(1, sizeof *s);
    if (!s || !(s->sql = translate(sql, &s->nparams)))
        goto oom;
    s->db = db;
    int n = s->nparams ? s->nparams : 1;
    s->vals = calloc((size_t)n, sizeof *s->vals);
    s->lens = calloc((size_t)n, sizeof *s->lens);
    s->fmts = calloc((size_t)n, sizeof *s->fmts);
    s->types = calloc((size_t)n, sizeof *s->types);
    if (!s->vals || !s->lens || !s->fmts || !s->types)
        goto oom;
    *out = s;
    return 0;
oom:
    fb_sql_finalizep(&s);
    return fb_fail_code(err, FB_STORE_ENOMEM, "database: out of memory preparing a statement");
}

void fb_sql_finalizep(fb_sql_stmt **sp)
{
    fb_sql_stmt *s = *sp;
    if (!s)
        return;
    for (int i = 0; s->vals && i < s->nparams; i++)
        free(s->vals[i]);
    free(s->vals);
    free(s->lens);
    free(s->fmts);
    free(s->types);
    free(s->sql);
    PQfreemem(s->blob);
    PQclear(s->res);
    free(s);
    *sp = NULL;
}

/* libpq statements here are parameterised texts sent with PQexecParams,
 * cheap to build: the cached form is the plain one (the cache exists for
 * SQLite's parser). */
int fb_sql_prepare_cached(fb_sql *db, const char *sql, fb_sql_stmt **out, fb_err *err)
{
    return fb_sql_prepare(db, sql, out, err);
}

void fb_sql_releasep(fb_sql_stmt **s)
{
    fb_sql_finalizep(s);
}

/* Stores a copy of p (len bytes, NUL-terminated for texts) as parameter i. */
static int bind_raw(fb_sql_stmt *s, int i, const void *p, size_t len, unsigned type, int fmt, fb_err *err)
{
    if (i < 1 || i > s->nparams)
        return fb_fail_code(err, FB_STORE_EIO, "database: parameter %d out of range", i);
    if (len > INT32_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "database: a value of %zu bytes is too long", len);
    free(s->vals[i - 1]);
    s->vals[i - 1] = NULL;
    if (p) {
        if (!(s->vals[i - 1] = malloc(len + 1)))
            return fb_fail_code(err, FB_STORE_ENOMEM, "database: out of memory binding a value");
        memcpy(s->vals[i - 1], p, len);
        s->vals[i - 1][len] = '\0';
    }
    s->lens[i - 1] = (int)len;
    s->fmts[i - 1] = fmt;
    s->types[i - 1] = type;
    return 0;
}

int fb_sql_bind_text(fb_sql_stmt *s, int i, const char *text, fb_err *err)
{
    return bind_raw(s, i, text, text ? strlen(text) : 0, 0, 0, err);
}

int fb_sql_bind_textn(fb_sql_stmt *s, int i, const char *text, size_t len, fb_err *err)
{
    if (memchr(text, '\0', len))
        return fb_fail_code(err, FB_STORE_EINVAL, "database: PostgreSQL cannot store a NUL byte in text");
    return bind_raw(s, i, text, len, 0, 0, err);
}

int fb_sql_bind_int64(fb_sql_stmt *s, int i, int64_t v, fb_err *err)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%lld", (long long)v);
    return bind_raw(s, i, num, (size_t)n, INT8OID, 0, err);
}

int fb_sql_bind_blob(fb_sql_stmt *s, int i, const void *p, size_t len, fb_err *err)
{
    return bind_raw(s, i, p ? p : "", len, BYTEAOID, 1, err);
}

/* Binds n texts from ap to parameters 1..n. */
static int bind_va(fb_sql_stmt *s, fb_err *err, int n, va_list ap)
{
    int rc = 0;
    for (int i = 1; rc == 0 && i <= n; i++)
        rc = fb_sql_bind_text(s, i, va_arg(ap, const char *), err);
    return rc;
}

int fb_sql_bind_texts(fb_sql_stmt *s, fb_err *err, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    int rc = bind_va(s, err, n, ap);
    va_end(ap);
    return rc;
}

/* Sends the statement: the whole result arrives at once. */
static int execute(fb_sql_stmt *s, const char *what, fb_err *err)
{
    fb_sql *db = s->db;
    s->ran = true;
    int rc = 0;
    if (!db->in_tx)
        rc = ensure_connected(db, err);
    else if (PQstatus(db->conn) != CONNECTION_OK)
        rc = fb_fail_code(err, FB_STORE_EBUSY, "%s: the connection to PostgreSQL was lost in a transaction", what);
    if (rc < 0)
        return rc;
    s->res = PQexecParams(db->conn, s->sql, s->nparams, s->types, (const char *const *)s->vals, s->lens, s->fmts, 0);
    ExecStatusType t = PQresultStatus(s->res);
    if (t == PGRES_TUPLES_OK) {
        s->nrows = PQntuples(s->res);
        s->row = -1;
        return 0;
    }
    if (t == PGRES_COMMAND_OK) {
        db->changes = strtoll(PQcmdTuples(s->res), NULL, 10);
        s->nrows = 0;
        s->row = -1;
        return 0;
    }
    rc = status_of(s->res, db->conn);
    fail_pg(db, s->res, what, err);
    return rc;
}

int fb_sql_step(fb_sql_stmt *s, const char *what, fb_err *err)
{
    if (!s->ran) {
        int rc = execute(s, what, err);
        if (rc < 0)
            return rc;
    }
    PQfreemem(s->blob);
    s->blob = NULL;
    if (s->row + 1 >= s->nrows)
        return 0;
    s->row++;
    return 1;
}

int fb_sql_run(fb_sql_stmt *s, const char *what, fb_err *err)
{
    int rc = fb_sql_step(s, what, err);
    return rc < 0 ? rc : 0;
}

int64_t fb_sql_changes(fb_sql *db)
{
    return db->changes;
}

static bool has(fb_sql_stmt *s, int i)
{
    return s->res && s->row >= 0 && s->row < s->nrows && i >= 0 && i < PQnfields(s->res) &&
           !PQgetisnull(s->res, s->row, i);
}

bool fb_sql_col_is_text(fb_sql_stmt *s, int i)
{
    if (!has(s, i))
        return false;
    unsigned t = PQftype(s->res, i);
    return t == TEXTOID || t == VARCHAROID;
}

bool fb_sql_col_is_int(fb_sql_stmt *s, int i)
{
    if (!has(s, i))
        return false;
    unsigned t = PQftype(s->res, i);
    return t == INT8OID || t == INT4OID || t == INT2OID;
}

int64_t fb_sql_col_int64(fb_sql_stmt *s, int i)
{
    return has(s, i) ? strtoll(PQgetvalue(s->res, s->row, i), NULL, 10) : 0;
}

const char *fb_sql_col_text(fb_sql_stmt *s, int i, size_t *len)
{
    if (!has(s, i)) {
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = (size_t)PQgetlength(s->res, s->row, i);
    return PQgetvalue(s->res, s->row, i);
}

const void *fb_sql_col_blob(fb_sql_stmt *s, int i, size_t *len)
{
    *len = 0;
    if (!has(s, i))
        return NULL;
    PQfreemem(s->blob);
    size_t n = 0;
    s->blob = PQunescapeBytea((const unsigned char *)PQgetvalue(s->res, s->row, i), &n);
    *len = s->blob ? n : 0;
    return s->blob;
}

int fb_sql_col_copy(fb_sql_stmt *s, int i, char *out, size_t cap)
{
    size_t n = 0;
    const char *t = fb_sql_col_text(s, i, &n);
    int fits = n < cap;
    snprintf(out, cap, "%.*s", fits ? (int)n : 0, t);
    return fits ? 0 : -1;
}

int fb_sql_read_id(fb_sql_stmt *s, void *elem)
{
    return fb_sql_col_copy(s, 0, elem, FB_ID_MAX);
}

int fb_sql_collect(fb_sql_stmt *s, size_t elem_size, int (*rd)(fb_sql_stmt *, void *), void **out, size_t *n,
                   const char *what, fb_err *err)
{
    *out = NULL;
    *n = 0;
    int rc = fb_sql_step(s, what, err);
    if (rc <= 0)
        return rc;
    size_t rows = (size_t)s->nrows;
    if (rows > FB_STORE_LIST_MAX)
        return fb_fail_code(err, FB_STORE_ELIMIT, "%s: more than %d rows; refusing to list them all", what,
                            FB_STORE_LIST_MAX);
    char *items = calloc(rows, elem_size);
    if (!items)
        return fb_fail_code(err, FB_STORE_ENOMEM, "%s: out of memory", what);
    for (size_t k = 0; k < rows; k++, fb_sql_step(s, what, NULL))
        if (rd(s, items + k * elem_size) < 0) {
            free(items);
            return fb_fail_code(err, FB_STORE_ECORRUPT, "%s: a stored row is malformed", what);
        }
    *out = items;
    *n = rows;
    return 0;
}

int fb_sql_exec_texts(fb_sql *db, const char *sql, const char *what, fb_err *err, int n, ...)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, sql, &s, err);
    if (rc == 0) {
        va_list ap;
        va_start(ap, n);
        rc = bind_va(s, err, n, ap);
        va_end(ap);
    }
    return rc == 0 ? fb_sql_run(s, what, err) : rc;
}

int fb_sql_exists(fb_sql *db, const char *sql, const char *param, fb_err *err)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, sql, &s, err);
    if (rc == 0 && param)
        rc = fb_sql_bind_text(s, 1, param, err);
    return rc < 0 ? rc : fb_sql_step(s, "database: lookup failed", err);
}

int fb_sql_notify(fb_sql *db, const char *channel, fb_err *err)
{
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db, "SELECT pg_notify(?1, '')", &s, err);
    if (rc == 0 && (rc = fb_sql_bind_text(s, 1, channel, err)) == 0)
        rc = fb_sql_run(s, "cannot notify the other gateways", err);
    return rc;
}

/* ---- lock and transactions ----------------------------------------------------------- */

/* A mutex call that fails is a bug (the lock is error-checking). */
static void must(int rc, const char *what)
{
    if (rc == 0)
        return;
    fprintf(stderr, "forgebox: internal: store %s: %s\n", what, strerror(rc));
    abort();
}

void fb_sql_lock(fb_sql *db)
{
    must(pthread_mutex_lock(&db->lock), "lock");
}

void fb_sql_unlock(fb_sql *db)
{
    must(pthread_mutex_unlock(&db->lock), "unlock");
}

fb_sql *fb_sql_locked(fb_sql *db)
{
    must(pthread_mutex_lock(&db->lock), "lock");
    return db;
}

void fb_sql_unlockp(fb_sql **db)
{
    if (*db != NULL)
        must(pthread_mutex_unlock(&(*db)->lock), "unlock");
}

/* Opens a transaction with the given BEGIN, then runs then (or nothing). */
static int begin_with(fb_sql *db, const char *begin, const char *then, fb_err *err)
{
    int rc = ensure_connected(db, err);
    if (rc == 0 && (rc = exec_fixed(db, begin, err)) == 0)
        db->in_tx = true;
    if (rc == 0 && then && (rc = exec_fixed(db, then, err)) < 0)
        fb_sql_rollback(db);
    return rc;
}

int fb_sql_begin(fb_sql *db, fb_err *err)
{
    return begin_with(db, "BEGIN ISOLATION LEVEL READ COMMITTED", "SELECT pg_advisory_xact_lock(" WRITER_LOCK ")",
                      err);
}

int fb_sql_begin_read(fb_sql *db, fb_err *err)
{
    return begin_with(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, err);
}

int fb_sql_commit(fb_sql *db, fb_err *err)
{
    int rc = exec_fixed(db, "COMMIT", err);
    if (rc < 0)
        fb_sql_rollback(db);
    db->in_tx = false;
    return rc;
}

void fb_sql_rollback(fb_sql *db)
{
    PGTransactionStatusType t = PQtransactionStatus(db->conn);
    if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR)
        exec_fixed(db, "ROLLBACK", NULL);
    db->in_tx = false;
}

/* Commits stay synchronous here.  SET LOCAL synchronous_commit = off would
 * let a record's commit return before the server flushed it, and a later
 * synchronous commit flushes the WAL past it, as on SQLite; but the server
 * is not this machine: it can crash and lose such a commit while this
 * gateway and its sandboxes live on.  A reservation lost during a boot, or
 * the end of a deleted sandbox lost while its audit commit failed, would
 * leave a running sandbox outside its team's quota, or a dead one inside
 * it, until this gateway restarts - so on PostgreSQL every record is
 * durable on its own (sql.h, fb_sql_relaxed). */
fb_sql *fb_sql_relaxed(fb_sql *db)
{
    return db;
}

void fb_sql_durablep(fb_sql **db)
{
    *db = NULL;
}

/* ---- pipelines (pg_sql.h) ------------------------------------------------------------------ */

/* The slot of sql's named statement; *parse: not yet known to the server
 * (send its Parse first).  -1: no slot left (send it unnamed). */
static int prepared_slot(fb_sql *db, const char *sql, bool *parse)
{
    int free_slot = -1;
    for (int i = 0; i < PREPARED_MAX; i++) {
        if (db->prepared[i].sql && strcmp(db->prepared[i].sql, sql) == 0) {
            *parse = false; /* ready, or its Parse is already in this pipeline */
            return i;
        }
        if (!db->prepared[i].sql && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0 || !(db->prepared[free_slot].sql = strdup(sql)))
        return -1;
    db->prepared[free_slot].ready = false;
    *parse = true;
    return free_slot;
}

/* One query of a pipeline, in the order sent: a Parse of slot `parse`, a
 * statement (stmt), or fixed SQL (neither). */
struct piped {
    fb_sql_stmt *stmt;
    int parse;
};

/* Queues sql (a named statement: its Parse first when the server does not
 * know it yet) and notes what comes back, in order, in q. */
static bool pipe_send(fb_sql *db, const char *sql, int nparams, const unsigned *types, const char *const *vals,
                      const int *lens, const int *fmts, fb_sql_stmt *stmt, struct piped *q, size_t *nq)
{
    PGconn *c = db->conn;
    bool parse = false;
    int slot = prepared_slot(db, sql, &parse);
    if (slot < 0)
        return PQsendQueryParams(c, sql, nparams, types, vals, lens, fmts, 0) == 1 &&
               (q[(*nq)++] = (struct piped){stmt, -1}, true);
    char name[16];
    snprintf(name, sizeof name, "fbp%d", slot);
    if (parse) {
        if (PQsendPrepare(c, name, sql, nparams, types) != 1)
            return false;
        q[(*nq)++] = (struct piped){NULL, slot};
    }
    if (PQsendQueryPrepared(c, name, nparams, vals, lens, fmts, 0) != 1)
        return false;
    q[(*nq)++] = (struct piped){stmt, -1};
    return true;
}

int fb_pg_pipeline(fb_sql *db, unsigned flags, fb_sql_stmt *const *stmts, size_t n, const char *what,
                   fb_err *err)
{
    static const char *const begin[] = {"BEGIN ISOLATION LEVEL READ COMMITTED",
                                        "SELECT pg_advisory_xact_lock(" WRITER_LOCK ")"};
    int rc = 0;
    if (!db->in_tx)
        rc = ensure_connected(db, err);
    else if (PQstatus(db->conn) != CONNECTION_OK)
        rc = fb_fail_code(err, FB_STORE_EBUSY, "%s: the connection to PostgreSQL was lost in a transaction", what);
    if (rc == 0 && n > 64)
        rc = fb_fail_code(err, FB_STORE_EINVAL, "%s: %zu statements in one pipeline (at most 64)", what, n);
    PGconn *c = db->conn;
    if (rc == 0 && !PQenterPipelineMode(c)) {
        fail_pg(db, NULL, what, err);
        rc = FB_STORE_EIO;
    }
    if (rc < 0) {
        fb_sql_rollback(db); /* a transaction this continued is over (in_tx too) */
        return rc;
    }
    struct piped q[2 * (64 + 3)];
    size_t nq = 0;
    bool sent = true;
    if (flags & FB_PG_BEGIN) {
        for (int i = 0; i < 2 && sent; i++)
            sent = pipe_send(db, begin[i], 0, NULL, NULL, NULL, NULL, NULL, q, &nq);
        db->in_tx = true;
    }
    for (size_t i = 0; i < n && sent; i++) {
        fb_sql_stmt *s = stmts[i];
        sent = pipe_send(db, s->sql, s->nparams, s->types, (const char *const *)s->vals, s->lens, s->fmts, s, q, &nq);
        s->ran = true;
    }
    if (sent && (flags & FB_PG_COMMIT))
        sent = pipe_send(db, "COMMIT", 0, NULL, NULL, NULL, NULL, NULL, q, &nq);
    if (sent)
        sent = PQpipelineSync(c) == 1;
    if (!sent) {
        rc = status_of(NULL, c);
        fail_pg(db, NULL, what, err);
    }
    /* The results, in order; after the first failure the server skips the
     * rest (PGRES_PIPELINE_ABORTED) up to the sync. */
    for (size_t i = 0; sent && i < nq; i++) {
        PGresult *r = PQgetResult(c);
        if (!r) { /* the connection failed under us */
            if (rc == 0) {
                rc = status_of(NULL, c);
                fail_pg(db, NULL, what, err);
            }
            sent = false;
            break;
        }
        ExecStatusType t = PQresultStatus(r);
        bool ok = t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK;
        if (!ok && t != PGRES_PIPELINE_ABORTED && rc == 0) {
            rc = status_of(r, c);
            fail_pg(db, r, what, err);
        }
        if (q[i].parse >= 0) {
            if (ok)
                db->prepared[q[i].parse].ready = true;
            PQclear(r);
        } else if (q[i].stmt) {
            fb_sql_stmt *s = q[i].stmt;
            PQclear(s->res);
            s->res = r;
            s->row = -1;
            s->nrows = t == PGRES_TUPLES_OK ? PQntuples(r) : 0;
            s->changes = t == PGRES_COMMAND_OK ? strtoll(PQcmdTuples(r), NULL, 10) : 0;
        } else {
            PQclear(r);
        }
        PGresult *end = PQgetResult(c); /* NULL after each query's result */
        PQclear(end);
    }
    if (sent) {
        PGresult *r = PQgetResult(c); /* the sync */
        PQclear(r);
    }
    /* Slots whose Parse was not sent or did not succeed are free again
     * (every slot not ready is this pipeline's). */
    for (int i = 0; i < PREPARED_MAX; i++)
        if (db->prepared[i].sql && !db->prepared[i].ready) {
            free(db->prepared[i].sql);
            db->prepared[i].sql = NULL;
        }
    if (!PQexitPipelineMode(c) || PQstatus(c) != CONNECTION_OK) {
        if (rc == 0) {
            rc = FB_STORE_EBUSY;
            fail_pg(db, NULL, what, err);
        }
        /* Results we could not read: this session is of no further use
         * (its transaction, if any, dies with it); the next call
         * reconnects. */
        forget_connection(db);
        PQreset(c);
    }
    if (rc < 0) {
        for (size_t i = 0; i < n; i++) /* nothing of a failed pipeline is read */
            stmts[i]->nrows = 0;
        if (PQstatus(c) == CONNECTION_OK && PQpipelineStatus(c) == PQ_PIPELINE_OFF)
            fb_sql_rollback(db);
        db->in_tx = false;
        db->audit_ends.valid = false;
        return rc;
    }
    if (flags & FB_PG_COMMIT)
        db->in_tx = false;
    return 0;
}

int64_t fb_pg_stmt_changes(const fb_sql_stmt *s)
{
    return s->changes;
}

fb_pg_audit_ends *fb_pg_audit_ends_of(fb_sql *db)
{
    return &db->audit_ends;
}

/* ---- opening: migrations ------------------------------------------------------------------- */

static int read_version(fb_sql *db, int *out, fb_err *err)
{
    PGresult *res = PQexec(db->conn, "SELECT version FROM schema_version");
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = status_of(res, db->conn);
        fail_pg(db, res, "database: cannot read the schema version", err);
    } else {
        *out = PQntuples(res) > 0 ? atoi(PQgetvalue(res, 0, 0)) : 0;
    }
    PQclear(res);
    return rc;
}

static int migrate(fb_sql *db, fb_err *err)
{
    int known = (int)fb_pg_migrations_count;
    for (int i = 0; i < known; i++)
        if (fb_pg_migrations[i].version != i + 1)
            return fb_fail(err, "internal: migration pg/%s is out of sequence", fb_pg_migrations[i].name);
    if (begin_with(db, "BEGIN", "SELECT pg_advisory_xact_lock(" WRITER_LOCK ")", err) < 0)
        return -1;
    int current = 0;
    if (exec_fixed(db, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)", err) < 0 ||
        read_version(db, &current, err) < 0)
        goto fail;
    if (current > known) {
        fb_fail(err,
                "the PostgreSQL database has schema version %d, but this forgebox knows only versions up to %d: it "
                "was written by a newer forgebox; run that version",
                current, known);
        goto fail;
    }
    for (int i = current; i < known; i++)
        if (exec_fixed(db, fb_pg_migrations[i].sql, err) < 0) {
            fb_fail_prefix(err, "migration pg/%s", fb_pg_migrations[i].name);
            goto fail;
        }
    if (current < known) {
        char sql[96]; /* our own compiled-in number, never outside text */
        snprintf(sql, sizeof sql, "DELETE FROM schema_version; INSERT INTO schema_version VALUES (%d)", known);
        if (exec_fixed(db, sql, err) < 0)
            goto fail;
    }
    if (fb_sql_commit(db, err) < 0)
        return -1;
    db->version = known;
    return 0;
fail:
    fb_sql_rollback(db);
    return -1;
}

int fb_sql_schema_version(fb_sql *db)
{
    return db->version;
}

void fb_sql_close(fb_sql *db)
{
    if (db) {
        forget_connection(db);
        PQfinish(db->conn);
        pthread_mutex_destroy(&db->lock);
        free(db);
    }
}

/* Server notices ("relation already exists, skipping") are not for
 * stderr; the processor stays with the connection across PQreset. */
static void drop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* An error-checking mutex: taking it twice in one thread aborts. */
static int errorcheck_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc == 0) {
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
        rc = pthread_mutex_init(m, &attr);
        pthread_mutexattr_destroy(&attr);
    }
    return rc;
}

int fb_sql_open(const char *url, fb_sql **out, fb_err *err)
{
    *out = NULL;
    fb_sql *s = calloc(1, sizeof *s);
    int mrc = s ? errorcheck_mutex(&s->lock) : ENOMEM;
    if (mrc != 0) {
        free(s);
        errno = mrc;
        return fb_fail_errno(err, "cannot create the store connection");
    }
    /* Timeouts unless the URL sets its own: a reconnection attempt
     * (PQreset) must not hang a request on a host that does not answer,
     * nor a query on a server that vanished without closing the socket. */
    const char *const keys[] = {"connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",
                                "tcp_user_timeout", "dbname", NULL};
    const char *const vals[] = {"5", "15", "5", "3", "30000", url, NULL};
    s->conn = PQconnectdbParams(keys, vals, 1);
    const char *m = s->conn ? PQerrorMessage(s->conn) : "out of memory";
    int rc = 0;
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) /* libpq names host and port, never the password */
        rc = fb_fail(err, "cannot connect to PostgreSQL: %.*s", (int)strcspn(m, "\n"), m);
    else {
        PQsetNoticeProcessor(s->conn, drop_notice, NULL);
        rc = migrate(s, err);
    }
    if (rc < 0)
        fb_sql_close(s);
    else
        *out = s;
    return rc < 0 ? -1 : 0;
}
