/*
 * sqlite_audit.c - the audit repository (audit_log.h) on SQLite.
 *
 * Appending is one IMMEDIATE transaction under the store lock: read the
 * head and the newest row, let the chain (src/audit) decide the new row
 * and head, insert; the head moves once, to the transaction's last row.
 * These statements are prepared once per connection
 * (fb_sql_prepare_cached): parsing them for every entry cost more CPU
 * than the rest of the append.  Reading hands rows over exactly as stored - a value that is not text is reported as such - because the
 * verifier's job is to notice what someone did to the table.
 *
 * Verification pages each run in one read transaction (a snapshot), the
 * head read in the same snapshot as the rows, so a page never mixes rows
 * and a head from different moments.
 */
#include <string.h>

#include "store/backend.h"
#include "store/sql.h"
#include "store/audit_ends.h"

#define ROW_COLUMNS                                                                                                  \
    "seq, ts, event, actor, resource, action, outcome, reason, source_ip, request_id, prev_hash, hash"

static int read_head(fb_sql *db, fb_audit_head *h, fb_err *err)
{
    memset(h, 0, sizeof *h);
    cleanup_cached fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare_cached(db, "SELECT seq, hash, mac FROM audit_head WHERE id = 1", &s, err);
    return rc < 0 ? rc : audit_head_from(s, h, err);
}

static int read_tail(fb_sql *db, fb_audit_tail *t, fb_err *err)
{
    memset(t, 0, sizeof *t);
    cleanup_cached fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare_cached(db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &s, err);
    return rc < 0 ? rc : audit_tail_from(s, t, err);
}

static void read_row(fb_sql_stmt *s, fb_audit_row *row)
{
    row->seq = fb_sql_col_int64(s, 0);
    for (int i = 0; i < FB_AUDIT_NCOLS; i++) {
        row->col[i].is_text = fb_sql_col_is_text(s, 1 + i);
        row->col[i].p = fb_sql_col_text(s, 1 + i, &row->col[i].n);
    }
}

/* Steps s, handing each row to each; *rows counts them. */
static int each_row(fb_sql_stmt *s, fb_audit_row_fn each, void *ctx, size_t *rows, fb_err *err)
{
    int rc;
    fb_audit_row row;
    *rows = 0;
    while ((rc = fb_sql_step(s, "audit: cannot read the log", err)) == 1) {
        read_row(s, &row);
        (*rows)++;
        if ((rc = each(&row, ctx, err)) < 0)
            return rc;
    }
    return rc;
}

static int insert_row(fb_sql *db, const fb_audit_row *row, fb_err *err)
{
    cleanup_cached fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare_cached(
        db, "INSERT INTO audit (" ROW_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", &s, err);
    if (rc < 0 || (rc = fb_sql_bind_int64(s, 1, row->seq, err)) < 0)
        return rc;
    for (int i = 0; i < FB_AUDIT_NCOLS && rc == 0; i++)
        rc = fb_sql_bind_textn(s, 2 + i, row->col[i].p, row->col[i].n, err);
    return rc < 0 ? rc : fb_sql_run(s, "audit: cannot insert the entry", err);
}

/* The head names the newest row: written once per transaction, after its
 * last row (the rows before it are never a head anyone sees). */
static int write_head(fb_sql *db, const fb_audit_head *head, fb_err *err)
{
    cleanup_cached fb_sql_stmt *h = NULL;
    int rc;
    if ((rc = fb_sql_prepare_cached(db,
                                    "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3) "
                                    "ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2, mac = ?3",
                                    &h, err)) < 0 ||
        (rc = fb_sql_bind_int64(h, 1, head->seq, err)) < 0 ||
        (rc = fb_sql_bind_textn(h, 2, head->hash, strlen(head->hash), err)) < 0 ||
        (rc = fb_sql_bind_textn(h, 3, head->mac, FB_AUDIT_HASH_HEX, err)) < 0)
        return rc;
    return fb_sql_run(h, "audit: cannot write the head", err);
}

static int au_append_batch(fb_store *st, const fb_audit_append_item *items, size_t n, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin(db, err);
    if (rc < 0)
        return rc;
    fb_audit_head head;
    fb_audit_tail tail;
    if ((rc = read_head(db, &head, err)) == 0 && (rc = read_tail(db, &tail, err)) == 0) {
        for (size_t i = 0; i < n && rc == 0; i++) {
            fb_audit_row row;
            char mac[FB_AUDIT_HASH_HEX + 1];
            memset(&row, 0, sizeof row);
            if (items[i].chain(&head, &tail, items[i].ctx, &row, mac, err) < 0)
                rc = FB_STORE_ECONFLICT;
            else if ((rc = insert_row(db, &row, err)) == 0)
                audit_advance(&head, &tail, &row, mac);
        }
        if (rc == 0 && n > 0)
            rc = write_head(db, &head, err);
        if (rc == 0)
            rc = fb_sql_commit(db, err);
    }
    if (rc < 0)
        fb_sql_rollback(db);
    return rc;
}

static int au_ends(fb_store *st, fb_audit_head *head, fb_audit_tail *tail, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin_read(db, err);
    if (rc == 0 && (rc = read_head(db, head, err)) == 0)
        rc = read_tail(db, tail, err);
    fb_sql_rollback(db); /* ends the read */
    return rc;
}

static int au_page(fb_store *st, int64_t from, unsigned limit, fb_audit_head *head, fb_audit_row_fn each, void *ctx,
                   size_t *rows, fb_err *err)
{
    *rows = 0;
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    int rc = fb_sql_begin_read(db, err);
    if (rc == 0 && (rc = read_head(db, head, err)) == 0) {
        cleanup_stmt fb_sql_stmt *s = NULL;
        if ((rc = fb_sql_prepare(db, "SELECT " ROW_COLUMNS " FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2", &s,
                                 err)) == 0 &&
            (rc = fb_sql_bind_int64(s, 1, from, err)) == 0 && (rc = fb_sql_bind_int64(s, 2, limit, err)) == 0)
            rc = each_row(s, each, ctx, rows, err);
    }
    fb_sql_rollback(db); /* ends the read */
    return rc;
}

static int au_query(fb_store *st, const fb_audit_match *m, int64_t after, unsigned limit, fb_audit_row_fn each,
                    void *ctx, fb_err *err)
{
    cleanup_sql_unlock fb_sql *db = fb_sql_locked(st->impl);
    cleanup_stmt fb_sql_stmt *s = NULL;
    int rc = fb_sql_prepare(db,
                            "SELECT " ROW_COLUMNS " FROM audit WHERE seq > ?1"
                            " AND (?2 IS NULL OR event = ?2) AND (?3 IS NULL OR actor = ?3)"
                            " AND (?4 IS NULL OR resource = ?4) AND (?5 IS NULL OR action = ?5)"
                            " AND (?6 IS NULL OR outcome = ?6) AND (?7 IS NULL OR ts >= ?7)"
                            " AND (?8 IS NULL OR ts < ?8) ORDER BY seq LIMIT ?9",
                            &s, err);
    if (rc < 0 || (rc = fb_sql_bind_int64(s, 1, after, err)) < 0 ||
        (rc = fb_sql_bind_int64(s, 9, limit, err)) < 0)
        return rc;
    const char *texts[] = {m->event, m->actor, m->resource, m->action, m->outcome, m->since, m->until};
    for (int i = 0; i < 7 && rc == 0; i++)
        rc = fb_sql_bind_text(s, 2 + i, texts[i], err);
    size_t rows;
    return rc < 0 ? rc : each_row(s, each, ctx, &rows, err);
}

const fb_audit_ops fb_sqlite_audit_ops = {
    .append_batch = au_append_batch,
    .ends = au_ends,
    .page = au_page,
    .query = au_query,
};
