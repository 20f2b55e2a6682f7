/*
 * audit.h - the append-only, hash-chained audit log (DESIGN.md, Audit).
 *
 * Every entry is a row of the `audit` table: seq 1, 2, 3, ... without gaps,
 * an RFC 3339 UTC timestamp with nanoseconds, the event's fields, the hash
 * of the previous entry and its own hash.  The hash is keyed BLAKE2b-256
 * (libsodium crypto_generichash) under a 32-byte key in STATE_DIR/audit.key,
 * over this canonical encoding, where u64 is 8 bytes big-endian and
 * lp(x) = u64(byte length of x) || x:
 *
 *     lp("forgebox-audit-entry-v1") || u64(seq) || lp(ts) || lp(event) ||
 *     lp(actor) || lp(resource) || lp(action) || lp(outcome) || lp(reason) ||
 *     lp(source_ip) || lp(request_id) || lp(prev_hash)
 *
 * prev_hash is the previous entry's hash in lower-case hex (64 '0' for
 * entry 1).  The one-row `audit_head` table records the newest seq and hash
 * with mac = keyed BLAKE2b-256 of
 *
 *     lp("forgebox-audit-head-v1") || u64(seq) || lp(hash)
 *
 * so that deleting entries from the end is caught too.  Without the key
 * nobody can forge an entry or a head; with a copy of the database alone an
 * attacker can still delete the whole log and its head, or roll the
 * database back to an older copy - ship the export to a SIEM to catch that.
 *
 * The rows live in the store's audit repository (store/audit_log.h); this
 * module owns the chain: chain.c hashes and appends, verify.c walks, read.c
 * queries and exports.  Every function is safe to call from any thread.
 */
#ifndef FB_AUDIT_H
#define FB_AUDIT_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "common/util.h"
#include "store/store.h"

/* Every text field is stored as valid UTF-8 (invalid bytes become U+FFFD)
 * of at most this many bytes; a longer one is cut at a character boundary
 * and ends with FB_AUDIT_TRUNCATED. */
#define FB_AUDIT_FIELD_MAX 1024
#define FB_AUDIT_TRUNCATED "...[truncated]"
/* The key file under the state directory: 32 random bytes, mode 0600. */
#define FB_AUDIT_KEY_FILE "audit.key"
#define FB_AUDIT_KEY_BYTES 32
/* fb_audit_query returns at most this many entries per call. */
#define FB_AUDIT_QUERY_MAX 1000
#define FB_AUDIT_QUERY_DEFAULT 100

/* One event.  NULL fields are stored as "".  outcome must be "allowed",
 * "denied" or "error".  event is the kind (auth, permission, admin,
 * sandbox, exec, config, network); actor is user:<id>, key:<id>, system or
 * anonymous. */
typedef struct fb_audit_event {
    const char *event;
    const char *actor;
    const char *resource;
    const char *action;
    const char *outcome;
    const char *reason;
    const char *source_ip;
    const char *request_id;
} fb_audit_event;

/* Appends one entry in one IMMEDIATE transaction.  The key is created on
 * the first append to an empty log.  Refuses (and appends nothing) when
 * outcome is not one of the three, or when the head does not verify or
 * does not match the newest entry, so that a truncated or tampered log is
 * never silently extended and its damage hidden; fb_audit_verify says what
 * is wrong. */
int fb_audit_append(fb_store *st, const fb_audit_event *ev, fb_err *err);
/* Appends n (1 to FB_AUDIT_APPEND_MAX) entries in order, consecutive in
 * the chain, in one transaction: all or none, one fsync (a request's
 * authentication and permission entries go together). */
#define FB_AUDIT_APPEND_MAX 8
int fb_audit_append_many(fb_store *st, const fb_audit_event *evs, size_t n, fb_err *err);
/* The same in two steps (store/audit_log.h, fb_store_audit_append_begin):
 * begin fixes the entries' place at the end of the chain and returns at
 * once; end waits until they are durable and frees what begin made.  Every
 * begun append must be ended, soon, by the same thread.  Nothing may be
 * answered to anyone about what the entries record before end returned 0. */
typedef struct fb_audit_pending fb_audit_pending;
int fb_audit_append_begin(fb_store *st, const fb_audit_event *evs, size_t n, fb_audit_pending **out,
                          fb_err *err);
int fb_audit_append_end(fb_store *st, fb_audit_pending *p, fb_err *err);

/* Walks the whole log in seq order and checks every entry's hash, the
 * chain of prev_hash links, the sequence (no gap, nothing inserted) and the
 * head's MAC against the newest entry.  Returns 0 when intact, with
 * *entries the number of entries.  Otherwise -1 with err naming the first
 * problem ("audit entry 17: hash mismatch (edited)", "entries after 41 are
 * missing (truncated) ...") and, when the problem is an entry,
 * *first_bad_seq its seq (the first missing one for a truncation), or 0
 * when it is the head or the key; *entries then counts the entries that
 * verified before it.  Never creates the key.  Reads in pages, so the
 * store lock is not held across the whole walk. */
int fb_audit_verify(fb_store *st, uint64_t *entries, uint64_t *first_bad_seq, fb_err *err);

/* Filters for fb_audit_query; NULL or 0 means "any".  since and until are
 * RFC 3339 timestamps ("2026-11-29T10:31:07Z", with any fraction and any
 * offset) or dates ("2026-11-29"); entries match since <= ts < until. */
typedef struct fb_audit_filter {
    const char *event;
    const char *actor;
    const char *resource;
    const char *action;
    const char *outcome;
    const char *since;
    const char *until;
    uint64_t after_seq; /* entries with seq > after_seq: the next page */
    unsigned limit;     /* 0: FB_AUDIT_QUERY_DEFAULT; capped at FB_AUDIT_QUERY_MAX */
} fb_audit_filter;

/* The matching entries in seq order as a new JSON array of objects with
 * seq, ts, event, actor, resource, action, outcome, reason, source_ip,
 * request_id, prev_hash and hash.  A malformed since/until or outcome is
 * refused with a message naming it. */
int fb_audit_query(fb_store *st, const fb_audit_filter *f, json_t **out, fb_err *err);

/* Writes every entry as one JSON object per line (the fields of
 * fb_audit_query), in seq order, for a SIEM.  Returns 0, or -1 if reading
 * or writing failed. */
int fb_audit_export(fb_store *st, FILE *out, fb_err *err);

/* Normalises an RFC 3339 timestamp or date to the log's own form,
 * "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ" in UTC (out: at least 31 bytes), so that
 * text comparison is time comparison.  Returns 0 or -1. */
int fb_audit_normalize_time(const char *in, char out[static 31], fb_err *err);

#endif
