/*
 * audit_ends.h - the chain's two ends read from a stepped statement: the
 * head (audit_head: seq, hash, mac) and the newest row (audit: seq, hash),
 * with the same checks of form on both engines, and how both move once a
 * row is written.
 *
 * Included by sqlite_audit.c (compiled once per engine) and pg_audit.c (the
 * PostgreSQL group commit).  Static inline on purpose: each includer's
 * fb_sql_* names are the ones used (SQLite's, or PostgreSQL's through
 * store/pg_names.h), so one text serves both.
 */
#ifndef FB_STORE_AUDIT_ENDS_H
#define FB_STORE_AUDIT_ENDS_H

#include <string.h>

#include "store/backend.h"

/* Column col as at most FB_AUDIT_HASH_HEX characters; *len is its real length. */
static inline void audit_copy_hex(fb_sql_stmt *s, int col, char out[FB_AUDIT_HASH_HEX + 1], size_t *len)
{
    size_t n;
    const char *t = fb_sql_col_text(s, col, &n);
    *len = n;
    n = n > FB_AUDIT_HASH_HEX ? FB_AUDIT_HASH_HEX : n;
    memcpy(out, t, n);
    out[n] = '\0';
}

/* Steps s (SELECT seq, hash, mac FROM audit_head) into h; 0 with
 * h->present false when there is no head yet. */
static inline int audit_head_from(fb_sql_stmt *s, fb_audit_head *h, fb_err *err)
{
    memset(h, 0, sizeof *h);
    int rc = fb_sql_step(s, "audit: cannot read the head", err);
    if (rc <= 0)
        return rc;
    h->present = true;
    h->seq = fb_sql_col_int64(s, 0);
    h->well_formed =
        fb_sql_col_is_int(s, 0) && h->seq >= 1 && fb_sql_col_is_text(s, 1) && fb_sql_col_is_text(s, 2);
    audit_copy_hex(s, 1, h->hash, &h->hash_len);
    audit_copy_hex(s, 2, h->mac, &h->mac_len);
    h->well_formed = h->well_formed && h->hash_len == FB_AUDIT_HASH_HEX && h->mac_len == FB_AUDIT_HASH_HEX;
    return 0;
}

/* Steps s (SELECT seq, hash of the newest row) into t; 0 with t->found
 * false when the log is empty. */
static inline int audit_tail_from(fb_sql_stmt *s, fb_audit_tail *t, fb_err *err)
{
    memset(t, 0, sizeof *t);
    int rc = fb_sql_step(s, "audit: cannot read the log", err);
    if (rc <= 0)
        return rc;
    t->found = true;
    t->seq = fb_sql_col_int64(s, 0);
    audit_copy_hex(s, 1, t->hash, &t->hash_len);
    return 0;
}

/* The head and tail the next row chains onto, once row is written. */
static inline void audit_advance(fb_audit_head *head, fb_audit_tail *tail, const fb_audit_row *row, const char *mac)
{
    const fb_audit_text *h = &row->col[FB_AUDIT_COL_HASH];
    size_t n = h->n < FB_AUDIT_HASH_HEX ? h->n : FB_AUDIT_HASH_HEX;
    head->present = head->well_formed = true;
    head->seq = tail->seq = row->seq;
    memcpy(head->hash, h->p, n);
    head->hash[n] = '\0';
    head->hash_len = h->n;
    memcpy(head->mac, mac, FB_AUDIT_HASH_HEX + 1);
    head->mac_len = strlen(mac);
    tail->found = true;
    memcpy(tail->hash, head->hash, n + 1);
    tail->hash_len = h->n;
}

#endif
