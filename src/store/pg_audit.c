/*
 * pg_audit.c - the audit repository's append on PostgreSQL: the same
 * chain, rows and head as sqlite_audit.c (which the PostgreSQL engine
 * uses for everything else: reading, verifying, querying), written in one
 * or two network round trips per group commit instead of one per
 * statement.
 *
 * Why: every authenticated request appends its audit entries and waits
 * for them to be durable (audit_batch.c groups the waiting appends into
 * one transaction).  Statement by statement, a transaction of k entries
 * is BEGIN, the writer lock, the head, the newest row, k INSERTs, the
 * head's update and COMMIT: k + 6 round trips to the server, each a
 * wake-up of both processes, which is what made a gateway on PostgreSQL
 * 3-5x slower than on SQLite (bench/README.md).  Here:
 *   - all the batch's rows go in one INSERT (unnest of one array per
 *     column), prepared once per connection (pg_sql.h pipelines);
 *   - the statements of a step travel in one pipeline: one round trip;
 *   - the chain's ends this connection committed last are remembered
 *     (fb_pg_audit_ends_of), so the usual commit is ONE round trip: BEGIN,
 *     the writer lock, the INSERT and the head's update - each conditional
 *     on the head and the newest row being exactly the remembered ones,
 *     checked by the server under the writer lock - and COMMIT.  When
 *     another gateway (or anyone) moved the chain meanwhile, the
 *     conditions match nothing, nothing is written, and the batch is
 *     written again the careful way below, from the ends as they are.
 *   - the careful way (nothing remembered, or the ends moved): BEGIN, the
 *     writer lock and the reads of head and newest row in one round trip,
 *     the chain computed from what was read, then the INSERT, the head and
 *     COMMIT in a second.
 * Either way the chain callback sees exactly the head and newest row that
 * are in the database when the rows are inserted (the conditions say so),
 * the writer lock serialises every gateway's appends, and the caller
 * returns only after COMMIT (synchronous_commit is the server's default,
 * on): the promises of audit_log.h are unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "store/backend.h"
#include "store/pg_sql.h"
#include "store/audit_ends.h"

#define ROW_COLUMNS                                                                                                  \
    "seq, ts, event, actor, resource, action, outcome, reason, source_ip, request_id, prev_hash, hash"
#define UNNEST                                                                                                       \
    "SELECT * FROM unnest(?1::bigint[], ?2::text[], ?3::text[], ?4::text[], ?5::text[], ?6::text[], ?7::text[], "    \
    "?8::text[], ?9::text[], ?10::text[], ?11::text[], ?12::text[])"
/* The remembered ends: head (?13 seq, ?14 hash, ?15 mac), newest row (?16 seq, ?17 hash). */
#define ENDS_MATCH                                                                                                   \
    "EXISTS (SELECT 1 FROM audit_head WHERE id = 1 AND seq = ?13 AND hash = ?14 AND mac = ?15) AND "                 \
    "EXISTS (SELECT 1 FROM (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) t WHERE t.seq = ?16 AND "         \
    "t.hash = ?17)"

static const char INSERT_SQL[] = "INSERT INTO audit (" ROW_COLUMNS ") " UNNEST;
static const char INSERT_IF_SQL[] = "INSERT INTO audit (" ROW_COLUMNS ") " UNNEST " WHERE " ENDS_MATCH;
static const char HEAD_SQL[] = "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3) "
                               "ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2, mac = ?3";
/* Moves the remembered head (?4..?6) to the new one, if the rows are in. */
static const char HEAD_IF_SQL[] = "UPDATE audit_head SET seq = ?1, hash = ?2, mac = ?3 WHERE id = 1 AND seq = ?4 "
                                  "AND hash = ?5 AND mac = ?6 AND EXISTS (SELECT 1 FROM audit WHERE seq = ?1 AND "
                                  "hash = ?2)";
static const char READ_HEAD_SQL[] = "SELECT seq, hash, mac FROM audit_head WHERE id = 1";
static const char READ_TAIL_SQL[] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1";

/* ---- one array literal per column ---------------------------------------------------- */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* One element of a text[] literal: quoted, with " and \ escaped, so any
 * text (commas, braces, blanks, "NULL") stays the text it is. */
static void sb_add_elem(strbuf *b, const char *s, size_t n)
{
    sb_add(b, b->len > 1 ? ",\"" : "\"", b->len > 1 ? 2 : 1);
    size_t from = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || s[i] == '\\') {
            sb_add(b, s + from, i - from);
            sb_add(b, "\\", 1);
            from = i;
        }
    sb_add(b, s + from, n - from);
    sb_add(b, "\"", 1);
}

typedef struct batch_rows {
    strbuf col[1 + FB_AUDIT_NCOLS]; /* seq, then the text columns */
    size_t n;
} batch_rows;

static void rows_init(batch_rows *r)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; i <= FB_AUDIT_NCOLS; i++)
        sb_add(&r->col[i], "{", 1);
}

static void rows_free(batch_rows *r)
{
    for (int i = 0; i <= FB_AUDIT_NCOLS; i++)
        free(r->col[i].p);
}

static int rows_add(batch_rows *r, const fb_audit_row *row, fb_err *err)
{
    char num[24];
    int k = snprintf(num, sizeof num, "%s%lld", r->n ? "," : "", (long long)row->seq);
    sb_add(&r->col[0], num, (size_t)k);
    for (int i = 0; i < FB_AUDIT_NCOLS; i++) {
        if (memchr(row->col[i].p, '\0', row->col[i].n))
            return fb_fail_code(err, FB_STORE_EINVAL, "database: PostgreSQL cannot store a NUL byte in text");
        sb_add_elem(&r->col[1 + i], row->col[i].p, row->col[i].n);
    }
    r->n++;
    return 0;
}

static int rows_bind(batch_rows *r, fb_sql_stmt *s, fb_err *err)
{
    int rc = 0;
    for (int i = 0; i <= FB_AUDIT_NCOLS && rc == 0; i++) {
        sb_add(&r->col[i], "}", 1);
        if (r->col[i].oom)
            return fb_fail_code(err, FB_STORE_ENOMEM, "audit: out of memory building the batch");
        rc = fb_sql_bind_textn(s, 1 + i, r->col[i].p, r->col[i].len, err);
    }
    return rc;
}

/* ---- the chain's ends ------------------------------------------------------------------ */

/* The rows of the batch chained onto *head / *tail, which advance to the
 * batch's end.  FB_STORE_ECONFLICT when the chain refuses. */
static int chain_rows(const fb_audit_append_item *items, size_t n, fb_audit_head *head, fb_audit_tail *tail,
                      batch_rows *out, fb_err *err)
{
    for (size_t i = 0; i < n; i++) {
        fb_audit_row row;
        char mac[FB_AUDIT_HASH_HEX + 1];
        memset(&row, 0, sizeof row);
        if (items[i].chain(head, tail, items[i].ctx, &row, mac, err) < 0)
            return FB_STORE_ECONFLICT;
        int rc = rows_add(out, &row, err);
        if (rc < 0)
            return rc;
        audit_advance(head, tail, &row, mac);
    }
    return 0;
}

static int bind_head(fb_sql_stmt *s, const fb_audit_head *h, int first, fb_err *err)
{
    int rc;
    if ((rc = fb_sql_bind_int64(s, first, h->seq, err)) < 0 ||
        (rc = fb_sql_bind_textn(s, first + 1, h->hash, strlen(h->hash), err)) < 0)
        return rc;
    return fb_sql_bind_textn(s, first + 2, h->mac, strlen(h->mac), err);
}

/* ---- the append ------------------------------------------------------------------------- */

/* One round trip from the remembered ends.  1: written; 0: the ends
 * moved, nothing written (ends forgotten); negative: failed. */
static int append_remembered(fb_sql *db, const fb_audit_append_item *items, size_t n, fb_err *err)
{
    fb_pg_audit_ends *ends = fb_pg_audit_ends_of(db);
    fb_audit_head was = ends->head, head = ends->head;
    fb_audit_tail tail = ends->tail;
    batch_rows r;
    rows_init(&r);
    cleanup_stmt fb_sql_stmt *ins = NULL;
    cleanup_stmt fb_sql_stmt *upd = NULL;
    int rc = chain_rows(items, n, &head, &tail, &r, err);
    if (rc == 0 && (rc = fb_sql_prepare(db, INSERT_IF_SQL, &ins, err)) == 0 && (rc = rows_bind(&r, ins, err)) == 0 &&
        (rc = bind_head(ins, &was, 13, err)) == 0 && (rc = fb_sql_bind_int64(ins, 16, ends->tail.seq, err)) == 0 &&
        (rc = fb_sql_bind_textn(ins, 17, ends->tail.hash, strlen(ends->tail.hash), err)) == 0 &&
        (rc = fb_sql_prepare(db, HEAD_IF_SQL, &upd, err)) == 0 && (rc = bind_head(upd, &head, 1, err)) == 0)
        rc = bind_head(upd, &was, 4, err);
    rows_free(&r);
    ends->valid = false;
    if (rc < 0)
        return rc;
    fb_sql_stmt *const stmts[] = {ins, upd};
    if ((rc = fb_pg_pipeline(db, FB_PG_BEGIN | FB_PG_COMMIT, stmts, 2, "audit: cannot append", err)) < 0)
        return rc;
    int64_t added = fb_pg_stmt_changes(ins), moved = fb_pg_stmt_changes(upd);
    if (added == 0 && moved == 0)
        return 0; /* committed nothing: the chain is not where this connection left it */
    if (added != (int64_t)n || moved != 1) /* cannot happen: both test the same ends under the lock */
        return fb_fail_code(err, FB_STORE_ECORRUPT, "audit: the append wrote %lld of %zu rows and moved the head %lld "
                            "times; run `forgebox audit verify`", (long long)added, n, (long long)moved);
    *ends = (fb_pg_audit_ends){.valid = true, .head = head, .tail = tail};
    return 1;
}

/* Two round trips: the ends read under the writer lock, then the rows. */
static int append_read(fb_sql *db, const fb_audit_append_item *items, size_t n, fb_err *err)
{
    fb_pg_audit_ends *ends = fb_pg_audit_ends_of(db);
    ends->valid = false;
    cleanup_stmt fb_sql_stmt *rh = NULL;
    cleanup_stmt fb_sql_stmt *rt = NULL;
    int rc;
    if ((rc = fb_sql_prepare(db, READ_HEAD_SQL, &rh, err)) < 0 || (rc = fb_sql_prepare(db, READ_TAIL_SQL, &rt, err)) < 0)
        return rc;
    fb_sql_stmt *const reads[] = {rh, rt};
    if ((rc = fb_pg_pipeline(db, FB_PG_BEGIN, reads, 2, "audit: cannot read the log", err)) < 0)
        return rc;
    fb_audit_head head;
    fb_audit_tail tail;
    batch_rows r;
    rows_init(&r);
    cleanup_stmt fb_sql_stmt *ins = NULL;
    cleanup_stmt fb_sql_stmt *hd = NULL;
    if ((rc = audit_head_from(rh, &head, err)) == 0 && (rc = audit_tail_from(rt, &tail, err)) == 0 &&
        (rc = chain_rows(items, n, &head, &tail, &r, err)) == 0 && (rc = fb_sql_prepare(db, INSERT_SQL, &ins, err)) == 0 &&
        (rc = rows_bind(&r, ins, err)) == 0 && (rc = fb_sql_prepare(db, HEAD_SQL, &hd, err)) == 0)
        rc = bind_head(hd, &head, 1, err);
    rows_free(&r);
    if (rc < 0) {
        fb_sql_rollback(db);
        return rc;
    }
    fb_sql_stmt *const writes[] = {ins, hd};
    if ((rc = fb_pg_pipeline(db, FB_PG_COMMIT, writes, 2, "audit: cannot append", err)) < 0)
        return rc;
    *ends = (fb_pg_audit_ends){.valid = true, .head = head, .tail = tail};
    return 0;
}

static int pg_append_batch(fb_store *st, const fb_audit_append_item *items, size_t n, fb_err *err)
{
    if (n == 0)
        return 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    if (fb_pg_audit_ends_of(db)->valid) {
        int rc = append_remembered(db, items, n, err);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    return append_read(db, items, n, err);
}

/* Everything but the append is sqlite_audit.c's, built for PostgreSQL. */
static int pg_ends(fb_store *st, fb_audit_head *head, fb_audit_tail *tail, fb_err *err)
{
    return fb_pg_audit_ops.ends(st, head, tail, err);
}

static int pg_page(fb_store *st, int64_t from, unsigned limit, fb_audit_head *head, fb_audit_row_fn each, void *ctx,
                   size_t *rows, fb_err *err)
{
    return fb_pg_audit_ops.page(st, from, limit, head, each, ctx, rows, err);
}

static int pg_query(fb_store *st, const fb_audit_match *m, int64_t after, unsigned limit, fb_audit_row_fn each,
                    void *ctx, fb_err *err)
{
    return fb_pg_audit_ops.query(st, m, after, limit, each, ctx, err);
}

const fb_audit_ops fb_pg_audit_pipelined_ops = {
    .append_batch = pg_append_batch,
    .ends = pg_ends,
    .page = pg_page,
    .query = pg_query,
};
