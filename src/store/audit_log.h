/*
 * audit_log.h - the audit repository: the rows of the hash-chained audit
 * log and its one-row head, as stored.  The chain itself (hashing, MACs,
 * what counts as tampering) is src/audit's; this layer reads and writes
 * rows atomically and hands them over untouched, so that verification
 * sees exactly what is on disk (a field that is not text, a seq out of
 * order) rather than a cleaned-up version of it.
 *
 * Reading is by callback over rows in seq order: row pointers are valid
 * only during the call, and the store's lock is held meanwhile, so a
 * callback must be quick and must not call back into the store.
 */
#ifndef FB_STORE_AUDIT_LOG_H
#define FB_STORE_AUDIT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "store/store.h"

/* The stored text fields of an entry, in the order of the hash encoding
 * (audit.h), then the entry's own hash. */
enum {
    FB_AUDIT_COL_TS,
    FB_AUDIT_COL_EVENT,
    FB_AUDIT_COL_ACTOR,
    FB_AUDIT_COL_RESOURCE,
    FB_AUDIT_COL_ACTION,
    FB_AUDIT_COL_OUTCOME,
    FB_AUDIT_COL_REASON,
    FB_AUDIT_COL_SOURCE_IP,
    FB_AUDIT_COL_REQUEST_ID,
    FB_AUDIT_COL_PREV_HASH,
    FB_AUDIT_COL_HASH,
    FB_AUDIT_NCOLS,
};
#define FB_AUDIT_HASH_HEX 64

typedef struct fb_audit_text {
    const char *p; /* "" for SQL NULL */
    size_t n;
    bool is_text;  /* false when the stored value is not text (tampering) */
} fb_audit_text;

typedef struct fb_audit_row {
    int64_t seq;
    fb_audit_text col[FB_AUDIT_NCOLS];
} fb_audit_row;

/* The head row; hash and mac hold at most 64 characters of what is
 * stored, *_len the stored length. */
typedef struct fb_audit_head {
    bool present;
    bool well_formed; /* seq an integer >= 1, hash and mac 64 characters of text */
    int64_t seq;
    char hash[FB_AUDIT_HASH_HEX + 1];
    size_t hash_len;
    char mac[FB_AUDIT_HASH_HEX + 1];
    size_t mac_len;
} fb_audit_head;

/* The newest row's seq and hash (found false for an empty log). */
typedef struct fb_audit_tail {
    bool found;
    int64_t seq;
    char hash[FB_AUDIT_HASH_HEX + 1];
    size_t hash_len;
} fb_audit_tail;

/* Called inside the append transaction with the head and the newest row:
 * fills *row (seq and every column; pointers valid until the append
 * returns) and the new head's mac, or returns -1 with err set to refuse. */
typedef int (*fb_audit_chain_fn)(const fb_audit_head *head, const fb_audit_tail *tail, void *ctx,
                                 fb_audit_row *row, char mac[FB_AUDIT_HASH_HEX + 1], fb_err *err);

/* Appends one entry: reads head and tail, asks chain for the new row,
 * inserts it and moves the head to it, and returns once the entry is
 * durable.  Nothing is written when chain refuses (FB_STORE_ECONFLICT) or
 * anything fails.  Concurrent appends are group-committed: while one
 * commit is being written, the appends that arrive queue up and go
 * together in the next transaction, in arrival order, so a busy server
 * pays one fsync per batch instead of one per entry.  A batch that fails
 * is retried entry by entry, so each caller gets its own entry's result.
 * chain may thus run more than once for an entry (on a rolled-back
 * attempt); it must only fill the row from the head and tail it is given. */
int fb_store_audit_append(fb_store *st, fb_audit_chain_fn chain, void *ctx, fb_err *err);
/* The same for count (1 to 8) entries of one caller: consecutive in the
 * chain, written in one transaction (all or none), one fsync. */
int fb_store_audit_append_many(fb_store *st, fb_audit_chain_fn chain, void *const *ctxs, size_t count,
                               fb_err *err);

/* The same, in two steps, for a caller that may start an action while
 * its entries are being made durable (docs/audit.md, "exec"): begin puts
 * the entries at the end of the queue and returns at once, so their place
 * in the chain is fixed (after every append already queued, before every
 * later one); end waits until they are durable (writing the commit itself
 * if nobody else is) and returns their outcome.  Every begun ticket must
 * be ended, soon and by the thread that began it: a begun entry is
 * written early only if someone else's commit takes it along.  chain and
 * ctxs must stay valid until end returns. */
typedef struct fb_store_audit_ticket fb_store_audit_ticket;
int fb_store_audit_append_begin(fb_store *st, fb_audit_chain_fn chain, void *const *ctxs, size_t count,
                                fb_store_audit_ticket **out, fb_err *err);
int fb_store_audit_append_end(fb_store *st, fb_store_audit_ticket *t, fb_err *err);

/* The head and the tail, in one read. */
int fb_store_audit_ends(fb_store *st, fb_audit_head *head, fb_audit_tail *tail, fb_err *err);

typedef int (*fb_audit_row_fn)(const fb_audit_row *row, void *ctx, fb_err *err);

/* One page for verification, in one read transaction: the head, then up
 * to limit rows with seq >= from in seq order, each passed to each (a
 * negative return stops the page and is returned).  *rows counts them. */
int fb_store_audit_page(fb_store *st, int64_t from, unsigned limit, fb_audit_head *head,
                        fb_audit_row_fn each, void *ctx, size_t *rows, fb_err *err);

/* Exact-match filters (NULL: any) and a [since, until) range on the
 * canonical timestamps. */
typedef struct fb_audit_match {
    const char *event, *actor, *resource, *action, *outcome;
    const char *since, *until;
} fb_audit_match;

/* Rows with seq > after matching m, in seq order, at most limit. */
int fb_store_audit_query(fb_store *st, const fb_audit_match *m, int64_t after, unsigned limit,
                         fb_audit_row_fn each, void *ctx, fb_err *err);

#endif
