/*
 * verify.c - fb_audit_verify: walks the whole log and names the first
 * thing wrong with it, in seq order.
 *
 * The walk reads pages of VERIFY_PAGE rows (store/audit_log.h), each page
 * in its own read snapshot together with the head, so a long walk does not
 * stall the appenders; entries are append-only, so paging by seq sees a
 * consistent prefix, and the head that ends the walk comes from the same
 * snapshot as the last page.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "audit/chain.h"

#define VERIFY_PAGE 1024

typedef struct verifier {
    audit_key key;
    uint64_t next;           /* the seq the next row must have */
    char prev[HASH_HEX + 1]; /* the hash it must chain onto */
    const fb_audit_head *head;
    uint64_t bad;            /* first_bad_seq */
    bool row_failed;         /* a row (not the store) stopped the walk */
} verifier;

/* Checks one row against the chain so far; -1 names what is wrong. */
static int check_row(verifier *v, const fb_audit_row *row, fb_err *err)
{
    int64_t seq = row->seq;
    v->bad = v->next;
    if (seq < 1 || (uint64_t)seq < v->next)
        return fb_fail(err, "audit entry %lld: sequence number out of order (inserted)", (long long)seq);
    if ((uint64_t)seq > v->next) {
        if (v->next == 1)
            return fb_fail(err, "audit entry 1 is missing (deleted): the log starts at entry %lld", (long long)seq);
        return fb_fail(err, "audit entry %llu is missing (deleted): entry %lld follows entry %llu",
                       (unsigned long long)v->next, (long long)seq, (unsigned long long)(v->next - 1));
    }
    for (int i = 0; i < NFIELDS; i++)
        if (!row->col[i].is_text)
            return fb_fail(err, "audit entry %lld: %s is not text (edited)", (long long)seq,
                           fb_audit_field_names[i]);
    const fb_audit_text *stored = &row->col[FB_AUDIT_COL_HASH];
    const fb_audit_text *prev = &row->col[FB_AUDIT_COL_PREV_HASH];
    char hash[HASH_HEX + 1];
    fb_audit_entry_hash(&v->key, seq, row->col, hash);
    bool hash_ok = stored->is_text && fb_audit_hex_equal(stored->p, stored->n, hash);
    bool link_ok = prev->n == HASH_HEX && memcmp(prev->p, v->prev, HASH_HEX) == 0;
    /* Every entry fails under a wrong key; so does the head. */
    if (!hash_ok && seq == 1 && v->head->present && !fb_audit_head_authentic(&v->key, v->head)) {
        v->bad = 0;
        return fb_fail(err, "audit key does not match this log: neither entry 1 nor the head verify with it "
                            "(was %s replaced, or were both forged?)",
                       FB_AUDIT_KEY_FILE);
    }
    if (!hash_ok && !link_ok)
        return fb_fail(err, "audit entry %lld: hash mismatch and it does not follow entry %lld (replaced, "
                            "inserted or reordered)",
                       (long long)seq, (long long)seq - 1);
    if (!hash_ok)
        return fb_fail(err, "audit entry %lld: hash mismatch (edited)", (long long)seq);
    if (!link_ok)
        return fb_fail(err, "audit entry %lld: prev_hash does not match entry %lld (entries deleted, inserted or "
                            "reordered)",
                       (long long)seq, (long long)seq - 1);
    memcpy(v->prev, stored->p, HASH_HEX);
    v->next++;
    return 0;
}

static int verify_row(const fb_audit_row *row, void *ctx, fb_err *err)
{
    verifier *v = ctx;
    if (check_row(v, row, err) < 0) {
        v->row_failed = true;
        return -1;
    }
    return 0;
}

/* After the last row (same snapshot): the head must be authentic and
 * name that row. */
static int verify_head(verifier *v, const fb_audit_head *h, fb_err *err)
{
    uint64_t last = v->next - 1;
    v->bad = 0;
    if (!h->present) {
        if (last == 0)
            return 0;
        return fb_fail(err, "audit head is missing (deleted): entries after %llu, if any, may be missing",
                       (unsigned long long)last);
    }
    if (!fb_audit_head_authentic(&v->key, h))
        return fb_fail(err, "audit head does not verify (forged or edited): entries after %llu may be missing "
                            "(truncated)",
                       (unsigned long long)last);
    if ((uint64_t)h->seq > last) {
        v->bad = last + 1;
        if (last == 0)
            return fb_fail(err, "all entries are missing (truncated): the head records entry %lld",
                           (long long)h->seq);
        return fb_fail(err, "entries after %llu are missing (truncated): the head records entry %lld",
                       (unsigned long long)last, (long long)h->seq);
    }
    if ((uint64_t)h->seq < last) {
        v->bad = (uint64_t)h->seq + 1;
        return fb_fail(err, "audit entries after %lld are not covered by the head (inserted)", (long long)h->seq);
    }
    if (h->hash_len != HASH_HEX || memcmp(h->hash, v->prev, HASH_HEX) != 0)
        return fb_fail(err, "audit head does not match entry %llu (the entry or the head was replaced)",
                       (unsigned long long)last);
    return 0;
}

/* No key: fine for a log that never had an entry, an error otherwise. */
static int verify_without_key(fb_store *st, const char *path, fb_err *err)
{
    fb_audit_head h;
    fb_audit_tail t;
    if (fb_store_audit_ends(st, &h, &t, err) < 0)
        return -1;
    if (!t.found && !h.present)
        return 0;
    return fb_fail(err, "audit key %s is missing: the log cannot be verified without it; restore it from backup",
                   path);
}

static int walk(verifier *v, fb_store *st, fb_err *err)
{
    for (;;) {
        fb_audit_head head;
        size_t rows = 0;
        v->head = &head;
        /* The first page starts below 1, so an inserted seq 0 or -5 is seen. */
        int64_t from = v->next == 1 ? INT64_MIN : (int64_t)v->next;
        int rc = fb_store_audit_page(st, from, VERIFY_PAGE, &head, verify_row, v, &rows, err);
        v->head = NULL;
        if (rc == FB_STORE_OK && rows < VERIFY_PAGE)
            return verify_head(v, &head, err);
        if (rc < 0) {
            if (!v->row_failed)
                v->bad = 0; /* the store failed, not a row */
            return -1;
        }
    }
}

int fb_audit_verify(fb_store *st, uint64_t *entries, uint64_t *first_bad_seq, fb_err *err)
{
    uint64_t dummy_entries, dummy_bad;
    if (!entries)
        entries = &dummy_entries;
    if (!first_bad_seq)
        first_bad_seq = &dummy_bad;
    *entries = 0;
    *first_bad_seq = 0;
    if (sodium_init() < 0)
        return fb_fail(err, "audit: libsodium failed to initialise");
    cleanup_free char *path = fb_audit_key_path(st);
    if (!path)
        return fb_fail(err, "out of memory");
    verifier v = {.next = 1};
    memcpy(v.prev, fb_audit_zero_hash, sizeof v.prev);
    bool missing = false;
    int rc = fb_audit_key_read(path, &v.key, &missing, err);
    if (rc < 0 && missing)
        rc = verify_without_key(st, path, err);
    else if (rc == 0)
        rc = walk(&v, st, err);
    sodium_memzero(&v.key, sizeof v.key);
    *entries = v.next - 1;
    if (rc < 0)
        *first_bad_seq = v.bad;
    return rc;
}
