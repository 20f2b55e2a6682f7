/*
 * chain.c - the audit log's hash chain: the key, the keyed hashes, and
 * appending an entry (fb_audit_append).
 *
 * Appending is one transaction of the audit repository (store/audit_log.h):
 * it hands this file the head and the newest row, and chain_next below
 * checks the head (its MAC, and that it names the newest row), hashes the
 * new entry over the previous hash and MACs the new head.  Checking the
 * head on every append costs one BLAKE2b and one indexed read, and it is
 * what keeps a truncated log from being "healed" by the next append: an
 * attacker who deletes the tail and rewrites the head cannot MAC it, and
 * the next append refuses instead of chaining onto the forged head.
 *
 * The key (STATE_DIR/audit.key) is read for each call and wiped after it;
 * it never appears in a message.  It is created, atomically with link(2),
 * only when the log is empty: a key that vanished from a non-empty log is
 * an error to report, not a reason to start a new chain under a new key.
 */
#define _GNU_SOURCE
#include "audit/chain.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/time.h"

const char fb_audit_zero_hash[HASH_HEX + 1] = "0000000000000000000000000000000000000000000000000000000000000000";

const char *const fb_audit_field_names[FB_AUDIT_NCOLS] = {
    "ts",     "event",  "actor",     "resource",   "action",    "outcome",
    "reason", "source_ip", "request_id", "prev_hash", "hash",
};

void fb_audit_key_wipep(audit_key *k)
{
    sodium_memzero(k->b, sizeof k->b);
}

/* ---- hashing ---------------------------------------------------------------- */

static void put_u64(crypto_generichash_state *h, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    crypto_generichash_update(h, b, sizeof b);
}

static void put_lp(crypto_generichash_state *h, const void *p, size_t n)
{
    put_u64(h, n);
    crypto_generichash_update(h, p, n);
}

static void start(crypto_generichash_state *h, const audit_key *k, const char *tag, int64_t seq)
{
    crypto_generichash_init(h, k->b, sizeof k->b, 32);
    put_lp(h, tag, strlen(tag));
    put_u64(h, (uint64_t)seq);
}

static void finish_hex(crypto_generichash_state *h, char out[HASH_HEX + 1])
{
    uint8_t digest[32];
    crypto_generichash_final(h, digest, sizeof digest);
    fb_hex(digest, sizeof digest, out);
    sodium_memzero(h, sizeof *h);
}

void fb_audit_entry_hash(const audit_key *k, int64_t seq, const fb_audit_text f[NFIELDS], char out[HASH_HEX + 1])
{
    crypto_generichash_state h;
    start(&h, k, "forgebox-audit-entry-v1", seq);
    for (int i = 0; i < NFIELDS; i++)
        put_lp(&h, f[i].p, f[i].n);
    finish_hex(&h, out);
}

void fb_audit_head_mac(const audit_key *k, int64_t seq, const char *hash, size_t hash_len, char out[HASH_HEX + 1])
{
    crypto_generichash_state h;
    start(&h, k, "forgebox-audit-head-v1", seq);
    put_lp(&h, hash, hash_len);
    finish_hex(&h, out);
}

bool fb_audit_hex_equal(const char *stored, size_t n, const char *computed)
{
    return stored && n == HASH_HEX && sodium_memcmp(stored, computed, HASH_HEX) == 0;
}

bool fb_audit_head_authentic(const audit_key *k, const fb_audit_head *h)
{
    if (!h->well_formed)
        return false;
    char mac[HASH_HEX + 1];
    fb_audit_head_mac(k, h->seq, h->hash, HASH_HEX, mac);
    return fb_audit_hex_equal(h->mac, h->mac_len, mac);
}

/* ---- the key ------------------------------------------------------------------ */

char *fb_audit_key_path(fb_store *st)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", fb_store_state_dir(st), FB_AUDIT_KEY_FILE) < 0)
        return NULL;
    return path;
}

int fb_audit_key_read(const char *path, audit_key *k, bool *missing, fb_err *err)
{
    *missing = false;
    cleanup_fd int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            *missing = true;
            return fb_fail(err, "audit key %s is missing", path);
        }
        return fb_fail_errno(err, "cannot open audit key %s", path);
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return fb_fail_errno(err, "cannot stat audit key %s", path);
    if (!S_ISREG(sb.st_mode))
        return fb_fail(err, "audit key %s is not a regular file", path);
    if (sb.st_uid != geteuid())
        return fb_fail(err, "audit key %s belongs to uid %u, not to this user (uid %u)", path, (unsigned)sb.st_uid,
                       (unsigned)geteuid());
    if (sb.st_mode & 077)
        return fb_fail(err,
                       "audit key %s is accessible to group or others (mode %04o); refusing to use it: run chmod "
                       "600 %s, and treat the key as exposed",
                       path, (unsigned)(sb.st_mode & 07777), path);
    if (sb.st_size != FB_AUDIT_KEY_BYTES)
        return fb_fail(err, "audit key %s has %lld bytes, not %d: it is damaged; restore it from backup", path,
                       (long long)sb.st_size, FB_AUDIT_KEY_BYTES);
    if (fb_read_exact(fd, k->b, sizeof k->b) < 0)
        return fb_fail_errno(err, "cannot read audit key %s", path);
    return 0;
}

int fb_audit_key_create(const char *path, fb_err *err)
{
    cleanup_key audit_key k;
    if (fb_random_bytes(k.b, sizeof k.b) < 0)
        return fb_fail_errno(err, "cannot generate the audit key");
    if (fb_create_file_once(path, k.b, sizeof k.b, err) < 0)
        return fb_fail_prefix(err, "audit key");
    return 0;
}

/* ---- append --------------------------------------------------------------------- */

static bool valid_outcome_text(const char *s)
{
    return s && (strcmp(s, "allowed") == 0 || strcmp(s, "denied") == 0 || strcmp(s, "error") == 0);
}

bool fb_audit_valid_outcome(const char *s)
{
    return valid_outcome_text(s);
}

typedef struct append_ctx {
    const char *key_path;
    const audit_key *key; /* read before the write lock was taken; NULL: read it in chain_start */
    fb_audit_text f[FB_AUDIT_NCOLS];
    char ts[FB_TIME_MAX];
    char prev[HASH_HEX + 1];
    char hash[HASH_HEX + 1];
} append_ctx;

/* The key to hash with, and the hash the new entry chains onto, or a
 * refusal if the log's end is not what its head says. */
static int chain_start(const fb_audit_head *h, const fb_audit_tail *t, const append_ctx *c, audit_key *k,
                       char prev[HASH_HEX + 1], fb_err *err)
{
    const char *path = c->key_path;
    bool missing = false;
    if (!h->present) {
        if (t->found)
            return fb_fail(err, "audit head is missing but the log has entries; refusing to append until "
                                "`forgebox audit verify` is clean");
        if (fb_audit_key_read(path, k, &missing, err) < 0 &&
            (!missing || fb_audit_key_create(path, err) < 0 || fb_audit_key_read(path, k, &missing, err) < 0))
            return -1;
        memcpy(prev, fb_audit_zero_hash, HASH_HEX + 1);
        return 0;
    }
    if (c->key)
        *k = *c->key;
    else if (fb_audit_key_read(path, k, &missing, err) < 0) {
        if (missing)
            return fb_fail(err, "audit key %s is missing but the log has entries; restore the key from backup "
                                "(a new key would break the chain)",
                           path);
        return -1;
    }
    if (!fb_audit_head_authentic(k, h))
        return fb_fail(err, "audit head does not verify with %s (edited, or the key was replaced); refusing to "
                            "append until `forgebox audit verify` is clean",
                       path);
    if (!t->found || t->seq != h->seq || t->hash_len != h->hash_len || strcmp(t->hash, h->hash) != 0)
        return fb_fail(err, "audit log does not end where its head says (entry %lld); refusing to append until "
                            "`forgebox audit verify` is clean",
                       (long long)h->seq);
    if (h->seq == INT64_MAX)
        return fb_fail(err, "audit log is full");
    memcpy(prev, h->hash, HASH_HEX + 1);
    return 0;
}

static int chain_next(const fb_audit_head *h, const fb_audit_tail *t, void *vctx, fb_audit_row *row,
                      char mac[HASH_HEX + 1], fb_err *err)
{
    append_ctx *c = vctx;
    cleanup_key audit_key k;
    if (chain_start(h, t, c, &k, c->prev, err) < 0)
        return -1;
    /* The timestamp is taken under the write lock, so ts follows seq
     * unless the wall clock itself steps back. */
    fb_time_now(c->ts);
    row->seq = h->present ? h->seq + 1 : 1;
    memcpy(row->col, c->f, sizeof c->f);
    row->col[FB_AUDIT_COL_TS] = (fb_audit_text){c->ts, strlen(c->ts), true};
    row->col[FB_AUDIT_COL_PREV_HASH] = (fb_audit_text){c->prev, HASH_HEX, true};
    fb_audit_entry_hash(&k, row->seq, row->col, c->hash);
    row->col[FB_AUDIT_COL_HASH] = (fb_audit_text){c->hash, HASH_HEX, true};
    fb_audit_head_mac(&k, row->seq, c->hash, HASH_HEX, mac);
    return 0;
}

/* Looks at no more of s than can survive the cut (a few bytes past the
 * cap), so a huge string costs nothing extra. */
static char *clean_field(const char *s)
{
    if (!s)
        s = "";
    return fb_audit_utf8_clean(s, strnlen(s, FB_AUDIT_FIELD_MAX + 4), FB_AUDIT_FIELD_MAX, NULL);
}

/* One entry's cleaned fields; false: out of memory (what was made is
 * freed by fields_free). */
static bool fields_fill(append_ctx *c, const fb_audit_event *ev)
{
    const char *in[FB_AUDIT_NCOLS] = {
        [FB_AUDIT_COL_EVENT] = ev->event,         [FB_AUDIT_COL_ACTOR] = ev->actor,
        [FB_AUDIT_COL_RESOURCE] = ev->resource,   [FB_AUDIT_COL_ACTION] = ev->action,
        [FB_AUDIT_COL_OUTCOME] = ev->outcome,     [FB_AUDIT_COL_REASON] = ev->reason,
        [FB_AUDIT_COL_SOURCE_IP] = ev->source_ip, [FB_AUDIT_COL_REQUEST_ID] = ev->request_id,
    };
    for (int i = FB_AUDIT_COL_EVENT; i <= FB_AUDIT_COL_REQUEST_ID; i++) {
        char *t = clean_field(in[i]);
        if (!t)
            return false;
        c->f[i] = (fb_audit_text){t, strlen(t), true};
    }
    return true;
}

static void fields_free(append_ctx *c)
{
    for (int i = FB_AUDIT_COL_EVENT; i <= FB_AUDIT_COL_REQUEST_ID; i++)
        free((char *)c->f[i].p);
}

/* What one append needs until its entries are in: the cleaned fields, the
 * key (read once, before the store's write lock, so not once per entry
 * inside every group commit; if it cannot be read here, chain_start reads
 * it again under the lock and decides: creating it for an empty log, or
 * refusing) and, for a begun append, its ticket. */
struct fb_audit_pending {
    append_ctx c[FB_AUDIT_APPEND_MAX];
    void *ctxs[FB_AUDIT_APPEND_MAX];
    size_t n;
    char *key_path;
    audit_key key;
    fb_store_audit_ticket *ticket;
};

static void pending_clear(fb_audit_pending *p)
{
    for (size_t i = 0; i < p->n; i++)
        fields_free(&p->c[i]);
    free(p->key_path);
    fb_audit_key_wipep(&p->key);
}

static int pending_fill(fb_audit_pending *p, fb_store *st, const fb_audit_event *evs, size_t n, fb_err *err)
{
    memset(p, 0, sizeof *p);
    if (sodium_init() < 0)
        return fb_fail(err, "audit: libsodium failed to initialise");
    if (!evs || n == 0 || n > FB_AUDIT_APPEND_MAX)
        return fb_fail(err, "audit: %zu events in one append (1 to %d)", evs ? n : 0, FB_AUDIT_APPEND_MAX);
    for (size_t i = 0; i < n; i++)
        if (!valid_outcome_text(evs[i].outcome))
            return fb_fail(err, "audit: outcome must be allowed, denied or error, not '%.32s'",
                           evs[i].outcome ? evs[i].outcome : "(null)");
    p->key_path = fb_audit_key_path(st);
    if (!p->key_path)
        return fb_fail(err, "out of memory");
    bool missing = false;
    fb_err kerr = {{0}};
    bool have_key = fb_audit_key_read(p->key_path, &p->key, &missing, &kerr) == 0;
    for (size_t i = 0; i < n; i++) {
        p->n = i + 1;
        p->c[i].key_path = p->key_path;
        p->c[i].key = have_key ? &p->key : NULL;
        p->ctxs[i] = &p->c[i];
        if (!fields_fill(&p->c[i], &evs[i]))
            return fb_fail(err, "out of memory");
    }
    return 0;
}

int fb_audit_append_many(fb_store *st, const fb_audit_event *evs, size_t n, fb_err *err)
{
    fb_audit_pending p;
    int rc = pending_fill(&p, st, evs, n, err);
    if (rc == 0 && fb_store_audit_append_many(st, chain_next, p.ctxs, n, err) < 0)
        rc = -1;
    pending_clear(&p);
    return rc;
}

int fb_audit_append_begin(fb_store *st, const fb_audit_event *evs, size_t n, fb_audit_pending **out, fb_err *err)
{
    *out = NULL;
    fb_audit_pending *p = malloc(sizeof *p);
    if (!p)
        return fb_fail(err, "out of memory");
    if (pending_fill(p, st, evs, n, err) < 0 ||
        fb_store_audit_append_begin(st, chain_next, p->ctxs, n, &p->ticket, err) < 0) {
        pending_clear(p);
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

int fb_audit_append_end(fb_store *st, fb_audit_pending *p, fb_err *err)
{
    if (!p)
        return 0;
    int rc = fb_store_audit_append_end(st, p->ticket, err);
    pending_clear(p);
    free(p);
    return rc < 0 ? -1 : 0;
}

int fb_audit_append(fb_store *st, const fb_audit_event *ev, fb_err *err)
{
    if (!ev)
        return fb_fail(err, "audit: no event");
    return fb_audit_append_many(st, ev, 1, err);
}
