/*
 * audit.c - the hash-chained audit log of audit.h.
 *
 * Appending is one IMMEDIATE transaction under the store lock: read the
 * head, check it (its MAC, and that it names the newest row), hash the new
 * entry over the previous hash, insert it and move the head.  Checking the
 * head on every append costs one BLAKE2b and one indexed read, and it is
 * what keeps a truncated log from being "healed" by the next append: an
 * attacker who deletes the tail and rewrites the head cannot MAC it, and
 * the next append refuses instead of chaining onto the forged head.
 *
 * Verification walks the table in pages of VERIFY_PAGE rows, each page in
 * its own read transaction under the store lock, so a long walk does not
 * stall the appenders; entries are append-only, so paging by seq sees a
 * consistent prefix, and the head is read in the same transaction as the
 * last page.  It names the first problem it meets, in seq order.
 *
 * Field text is stored as valid UTF-8 of at most FB_AUDIT_FIELD_MAX bytes:
 * the log is exported as JSON, which must be UTF-8, and an actor or reason
 * that came from a request must not be able to fill the disk.
 *
 * The key (STATE_DIR/audit.key) is read for each call and wiped after it;
 * it never appears in a message.  It is created, atomically with link(2),
 * only when the log is empty: a key that vanished from a non-empty log is
 * an error to report, not a reason to start a new chain under a new key.
 */
#define _GNU_SOURCE
#include "audit/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HASH_BYTES 32
#define HASH_HEX (2 * HASH_BYTES)
#define VERIFY_PAGE 1024
/* A tampered row can hold any amount of text; what query and export show
 * of one field is capped here (far above what append ever writes). */
#define OUTPUT_FIELD_MAX 65536

static const char ZERO_HASH[HASH_HEX + 1] = "0000000000000000000000000000000000000000000000000000000000000000";

/* The hashed fields, in the order of the canonical encoding (audit.h).
 * prev_hash is last; the SELECTs below list seq, these, then hash. */
enum { F_TS, F_EVENT, F_ACTOR, F_RESOURCE, F_ACTION, F_OUTCOME, F_REASON, F_SOURCE_IP, F_REQUEST_ID, F_PREV, NFIELDS };
static const char *const field_names[NFIELDS] = {"ts",     "event",     "actor",      "resource",  "action",
                                                 "outcome", "reason", "source_ip", "request_id", "prev_hash"};
#define ROW_COLUMNS                                                                                                  \
    "seq, ts, event, actor, resource, action, outcome, reason, source_ip, request_id, prev_hash, hash"
#define COL_HASH (1 + NFIELDS)

typedef struct span {
    const char *p;
    size_t n;
} span;

/* ---- cleanup helpers ------------------------------------------------------ */

static void stmt_finalizep(sqlite3_stmt **s)
{
    sqlite3_finalize(*s);
}
#define cleanup_stmt __attribute__((cleanup(stmt_finalizep)))

static void store_unlockp(fb_store **st)
{
    if (*st)
        fb_store_unlock(*st);
}
#define cleanup_unlock __attribute__((cleanup(store_unlockp)))

static fb_store *store_locked(fb_store *st)
{
    fb_store_lock(st);
    return st;
}

typedef struct audit_key {
    uint8_t b[FB_AUDIT_KEY_BYTES];
} audit_key;

static void key_wipep(audit_key *k)
{
    sodium_memzero(k->b, sizeof k->b);
}
#define cleanup_key __attribute__((cleanup(key_wipep)))

/* ---- text ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 if the
 * bytes there are not one (Unicode 15, table 3-7: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

/* A new NUL-terminated copy of in[0..n) that is valid UTF-8 (each invalid
 * byte becomes U+FFFD) and at most cap bytes long: a longer text is cut at
 * a character boundary and ends with FB_AUDIT_TRUNCATED.  *out_len (if not
 * NULL) is its length, which counts any NUL bytes inside.  NULL: no memory. */
static char *utf8_clean(const char *in, size_t n, size_t cap, size_t *out_len)
{
    static const char repl[] = "\xEF\xBF\xBD";
    const size_t mark = sizeof FB_AUDIT_TRUNCATED - 1;
    /* Each input byte yields at most 3 output bytes (U+FFFD). */
    char *out = malloc((n > cap / 3 ? cap : 3 * n) + 1);
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0, cut = 0, i = 0;
    bool truncated = false;
    while (i < n) {
        size_t len = utf8_seq_len(p + i, n - i);
        const char *src = len ? in + i : repl;
        size_t olen = len ? len : sizeof repl - 1;
        if (olen > cap - o) {
            truncated = true;
            break;
        }
        memcpy(out + o, src, olen);
        o += olen;
        i += len ? len : 1;
        if (o + mark <= cap)
            cut = o;
    }
    if (truncated) {
        memcpy(out + cut, FB_AUDIT_TRUNCATED, mark);
        o = cut + mark;
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return out;
}

/* Looks at no more of s than can survive the cut (a few bytes past the
 * cap), so a huge string costs nothing extra. */
static char *clean_field(const char *s)
{
    if (!s)
        s = "";
    return utf8_clean(s, strnlen(s, FB_AUDIT_FIELD_MAX + 4), FB_AUDIT_FIELD_MAX, NULL);
}

static bool valid_outcome(const char *s)
{
    return s && (strcmp(s, "allowed") == 0 || strcmp(s, "denied") == 0 || strcmp(s, "error") == 0);
}

/* ---- time ------------------------------------------------------------------ */

static int format_time(time_t secs, long nsec, char out[static 31], fb_err *err)
{
    struct tm tm;
    if (nsec < 0 || nsec > 999999999 || !gmtime_r(&secs, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return fb_fail(err, "time out of range");
    char buf[96];
    int n = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nsec);
    if (n != 30)
        return fb_fail(err, "time out of range");
    memcpy(out, buf, 31);
    return 0;
}

static int now_rfc3339(char out[static 31], fb_err *err)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
        return fb_fail_errno(err, "cannot read the clock");
    return format_time(ts.tv_sec, ts.tv_nsec, out, err);
}

/* Parses exactly `digits` decimal digits at *p into *v and advances. */
static bool take_num(const char **p, int digits, int *v)
{
    int x = 0;
    for (int i = 0; i < digits; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        x = x * 10 + (c - '0');
    }
    *p += digits;
    *v = x;
    return true;
}

static bool take_char(const char **p, const char *set)
{
    if (**p && strchr(set, **p)) {
        (*p)++;
        return true;
    }
    return false;
}

static int days_in_month(int y, int m)
{
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

int fb_audit_normalize_time(const char *in, char out[static 31], fb_err *err)
{
    const char *p = in;
    int y, mo, d, h = 0, mi = 0, s = 0, oh = 0, om = 0, sign = 0;
    long nsec = 0;
    if (!in)
        return fb_fail(err, "missing timestamp");
    if (!take_num(&p, 4, &y) || !take_char(&p, "-") || !take_num(&p, 2, &mo) || !take_char(&p, "-") ||
        !take_num(&p, 2, &d))
        goto bad;
    if (*p) {
        if (!take_char(&p, "Tt ") || !take_num(&p, 2, &h) || !take_char(&p, ":") || !take_num(&p, 2, &mi) ||
            !take_char(&p, ":") || !take_num(&p, 2, &s))
            goto bad;
        if (take_char(&p, ".")) {
            int n = 0;
            for (; *p >= '0' && *p <= '9'; p++, n++)
                if (n < 9)
                    nsec = nsec * 10 + (*p - '0');
                else
                    goto bad; /* finer than a nanosecond */
            if (n == 0)
                goto bad;
            for (; n < 9; n++)
                nsec *= 10;
        }
        if (take_char(&p, "Zz"))
            sign = 0;
        else if (take_char(&p, "+"))
            sign = 1;
        else if (take_char(&p, "-"))
            sign = -1;
        else
            goto bad;
        if (sign && (!take_num(&p, 2, &oh) || !take_char(&p, ":") || !take_num(&p, 2, &om)))
            goto bad;
        if (*p)
            goto bad;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 || oh > 23 || om > 59)
        goto bad;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    time_t t = timegm(&tm);
    t -= (time_t)sign * ((time_t)oh * 3600 + (time_t)om * 60);
    if (format_time(t, nsec, out, err) < 0)
        goto bad;
    return 0;
bad:
    return fb_fail(err, "'%.40s' is not an RFC 3339 time (2026-11-29T10:31:07Z) or date (2026-11-29)", in);
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

static void finish_hex(crypto_generichash_state *h, char out[static HASH_HEX + 1])
{
    uint8_t digest[HASH_BYTES];
    crypto_generichash_final(h, digest, sizeof digest);
    fb_hex(digest, sizeof digest, out);
    sodium_memzero(h, sizeof *h);
}

static void entry_hash(const audit_key *k, int64_t seq, const span f[NFIELDS], char out[static HASH_HEX + 1])
{
    static const char tag[] = "forgebox-audit-entry-v1";
    crypto_generichash_state h;
    crypto_generichash_init(&h, k->b, sizeof k->b, HASH_BYTES);
    put_lp(&h, tag, sizeof tag - 1);
    put_u64(&h, (uint64_t)seq);
    for (int i = 0; i < NFIELDS; i++)
        put_lp(&h, f[i].p, f[i].n);
    finish_hex(&h, out);
}

static void head_mac(const audit_key *k, int64_t seq, const char *hash, size_t hash_len, char out[static HASH_HEX + 1])
{
    static const char tag[] = "forgebox-audit-head-v1";
    crypto_generichash_state h;
    crypto_generichash_init(&h, k->b, sizeof k->b, HASH_BYTES);
    put_lp(&h, tag, sizeof tag - 1);
    put_u64(&h, (uint64_t)seq);
    put_lp(&h, hash, hash_len);
    finish_hex(&h, out);
}

/* Constant-time comparison of a stored hex text with a computed one. */
static bool hex_equal(const char *stored, size_t n, const char *computed)
{
    return stored && n == HASH_HEX && sodium_memcmp(stored, computed, HASH_HEX) == 0;
}

/* ---- the key ------------------------------------------------------------------ */

static char *key_path(fb_store *st)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", fb_store_state_dir(st), FB_AUDIT_KEY_FILE) < 0)
        return NULL;
    return path;
}

/* Reads the key; *missing tells "no such file" apart from other failures. */
static int read_key(const char *path, audit_key *k, bool *missing, fb_err *err)
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

/* Makes a new directory entry durable: a log whose key was lost in a power
 * cut could never be verified again. */
static int sync_parent(const char *path, fb_err *err)
{
    cleanup_free char *dir = strdup(path);
    if (!dir)
        return fb_fail(err, "out of memory");
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    cleanup_fd int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0)
        return fb_fail_errno(err, "cannot sync directory %s", slash ? dir : ".");
    return 0;
}

/* Writes a new random key to a temporary file and links it into place, so
 * that nobody ever reads a half-written key and an existing one is never
 * replaced. */
static int create_key(const char *path, fb_err *err)
{
    cleanup_free char *tmp = NULL;
    if (asprintf(&tmp, "%s.XXXXXX", path) < 0) {
        tmp = NULL;
        return fb_fail(err, "out of memory");
    }
    cleanup_fd int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0)
        return fb_fail_errno(err, "cannot create audit key %s", tmp);
    cleanup_key audit_key k;
    int rc = -1;
    if (fb_random_bytes(k.b, sizeof k.b) < 0)
        fb_fail_errno(err, "cannot generate the audit key");
    else if (fchmod(fd, 0600) < 0 || fb_write_all(fd, k.b, sizeof k.b) < 0 || fsync(fd) < 0)
        fb_fail_errno(err, "cannot write audit key %s", tmp);
    else if (link(tmp, path) < 0 && errno != EEXIST)
        fb_fail_errno(err, "cannot create audit key %s", path);
    else
        rc = 0;
    unlink(tmp);
    if (rc == 0 && sync_parent(path, err) < 0)
        rc = -1;
    return rc;
}

/* ---- the head ------------------------------------------------------------------ */

typedef struct head_row {
    bool present;
    bool well_formed; /* seq an integer >= 1, hash and mac 64 characters of text */
    int64_t seq;
    char hash[HASH_HEX + 1];
    size_t hash_len;
    char mac[HASH_HEX + 1];
    size_t mac_len;
} head_row;

static void copy_hex(sqlite3_stmt *s, int col, char out[static HASH_HEX + 1], size_t *len)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    *len = n;
    n = n > HASH_HEX ? HASH_HEX : n;
    if (t)
        memcpy(out, t, n);
    out[n] = '\0';
}

static int read_head(sqlite3 *db, head_row *h, fb_err *err)
{
    memset(h, 0, sizeof *h);
    cleanup_stmt sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT seq, hash, mac FROM audit_head WHERE id = 1", -1, &s, NULL) != SQLITE_OK)
        return fb_fail(err, "audit: cannot read the head: %s", sqlite3_errmsg(db));
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return fb_fail(err, "audit: cannot read the head: %s", sqlite3_errmsg(db));
    h->present = true;
    h->seq = sqlite3_column_int64(s, 0);
    h->well_formed = sqlite3_column_type(s, 0) == SQLITE_INTEGER && h->seq >= 1 &&
                     sqlite3_column_type(s, 1) == SQLITE_TEXT && sqlite3_column_type(s, 2) == SQLITE_TEXT;
    copy_hex(s, 1, h->hash, &h->hash_len);
    copy_hex(s, 2, h->mac, &h->mac_len);
    h->well_formed = h->well_formed && h->hash_len == HASH_HEX && h->mac_len == HASH_HEX;
    return 0;
}

static bool head_authentic(const audit_key *k, const head_row *h)
{
    if (!h->well_formed)
        return false;
    char mac[HASH_HEX + 1];
    head_mac(k, h->seq, h->hash, HASH_HEX, mac);
    return hex_equal(h->mac, h->mac_len, mac);
}

/* The newest row's seq and hash; *found false when the table is empty. */
static int read_newest(sqlite3 *db, bool *found, int64_t *seq, char hash[static HASH_HEX + 1], size_t *hash_len,
                       fb_err *err)
{
    cleanup_stmt sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", -1, &s, NULL) != SQLITE_OK)
        return fb_fail(err, "audit: cannot read the log: %s", sqlite3_errmsg(db));
    int rc = sqlite3_step(s);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return fb_fail(err, "audit: cannot read the log: %s", sqlite3_errmsg(db));
    *seq = sqlite3_column_int64(s, 0);
    copy_hex(s, 1, hash, hash_len);
    return 0;
}

/* ---- append ------------------------------------------------------------------ */

/* Inside the append transaction: the key to hash with, the new entry's seq
 * and the hash it chains onto, or a refusal if the log's end is not what
 * its head says. */
static int chain_position(fb_store *st, audit_key *k, int64_t *seq, char prev[static HASH_HEX + 1], fb_err *err)
{
    sqlite3 *db = fb_store_db(st);
    cleanup_free char *path = key_path(st);
    if (!path)
        return fb_fail(err, "out of memory");
    head_row h;
    bool found = false, missing = false;
    int64_t last = 0;
    char last_hash[HASH_HEX + 1];
    size_t last_len = 0;
    if (read_head(db, &h, err) < 0 || read_newest(db, &found, &last, last_hash, &last_len, err) < 0)
        return -1;
    if (!h.present) {
        if (found)
            return fb_fail(err, "audit head is missing but the log has entries; refusing to append until "
                                "`forgebox audit verify` is clean");
        if (read_key(path, k, &missing, err) < 0) {
            if (!missing || create_key(path, err) < 0 || read_key(path, k, &missing, err) < 0)
                return -1;
        }
        *seq = 1;
        memcpy(prev, ZERO_HASH, sizeof ZERO_HASH);
        return 0;
    }
    if (read_key(path, k, &missing, err) < 0) {
        if (missing)
            return fb_fail(err, "audit key %s is missing but the log has entries; restore the key from backup "
                                "(a new key would break the chain)",
                           path);
        return -1;
    }
    if (!head_authentic(k, &h))
        return fb_fail(err, "audit head does not verify with %s (edited, or the key was replaced); refusing to "
                            "append until `forgebox audit verify` is clean",
                       path);
    if (!found || last != h.seq || last_len != h.hash_len || strcmp(last_hash, h.hash) != 0)
        return fb_fail(err, "audit log does not end where its head says (entry %lld); refusing to append until "
                            "`forgebox audit verify` is clean",
                       (long long)h.seq);
    if (h.seq == INT64_MAX)
        return fb_fail(err, "audit log is full");
    *seq = h.seq + 1;
    memcpy(prev, h.hash, sizeof h.hash);
    return 0;
}

static int insert_entry(sqlite3 *db, int64_t seq, const span f[NFIELDS], const char *hash, fb_err *err)
{
    cleanup_stmt sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO audit (" ROW_COLUMNS ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", -1,
                           &s, NULL) != SQLITE_OK)
        return fb_fail(err, "audit: cannot insert: %s", sqlite3_errmsg(db));
    sqlite3_bind_int64(s, 1, seq);
    for (int i = 0; i < NFIELDS; i++)
        sqlite3_bind_text(s, 2 + i, f[i].p, (int)f[i].n, SQLITE_STATIC);
    sqlite3_bind_text(s, COL_HASH + 1, hash, HASH_HEX, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        return fb_fail(err, "audit: cannot insert entry %lld: %s", (long long)seq, sqlite3_errmsg(db));
    return 0;
}

static int write_head(sqlite3 *db, const audit_key *k, int64_t seq, const char *hash, fb_err *err)
{
    char mac[HASH_HEX + 1];
    head_mac(k, seq, hash, HASH_HEX, mac);
    cleanup_stmt sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?1, ?2, ?3) "
                           "ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2, mac = ?3",
                           -1, &s, NULL) != SQLITE_OK)
        return fb_fail(err, "audit: cannot write the head: %s", sqlite3_errmsg(db));
    sqlite3_bind_int64(s, 1, seq);
    sqlite3_bind_text(s, 2, hash, HASH_HEX, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, mac, HASH_HEX, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        return fb_fail(err, "audit: cannot write the head: %s", sqlite3_errmsg(db));
    return 0;
}

/* The append transaction proper, with the store lock held. */
static int append_locked(fb_store *st, span f[NFIELDS], fb_err *err)
{
    sqlite3 *db = fb_store_db(st);
    cleanup_key audit_key k;
    char ts[31], prev[HASH_HEX + 1], hash[HASH_HEX + 1];
    int64_t seq = 0;
    if (fb_store_begin(st, err) < 0)
        return fb_fail_prefix(err, "audit");
    /* The timestamp is taken under the write lock, so ts follows seq
     * unless the wall clock itself steps back. */
    if (chain_position(st, &k, &seq, prev, err) < 0 || now_rfc3339(ts, err) < 0)
        goto rollback;
    f[F_TS] = (span){ts, strlen(ts)};
    f[F_PREV] = (span){prev, HASH_HEX};
    entry_hash(&k, seq, f, hash);
    if (insert_entry(db, seq, f, hash, err) < 0 || write_head(db, &k, seq, hash, err) < 0)
        goto rollback;
    if (fb_store_commit(st, err) < 0)
        return fb_fail_prefix(err, "audit: cannot commit entry %lld", (long long)seq);
    return 0;
rollback:
    fb_store_rollback(st);
    return -1;
}

int fb_audit_append(fb_store *st, const fb_audit_event *ev, fb_err *err)
{
    if (sodium_init() < 0)
        return fb_fail(err, "audit: libsodium failed to initialise");
    if (!ev)
        return fb_fail(err, "audit: no event");
    if (!valid_outcome(ev->outcome))
        return fb_fail(err, "audit: outcome must be allowed, denied or error, not '%.32s'",
                       ev->outcome ? ev->outcome : "(null)");
    const char *in[NFIELDS] = {
        [F_EVENT] = ev->event,
        [F_ACTOR] = ev->actor,
        [F_RESOURCE] = ev->resource,
        [F_ACTION] = ev->action,
        [F_OUTCOME] = ev->outcome,
        [F_REASON] = ev->reason,
        [F_SOURCE_IP] = ev->source_ip,
        [F_REQUEST_ID] = ev->request_id,
    };
    char *text[NFIELDS] = {0};
    span f[NFIELDS] = {0};
    int rc = 0;
    for (int i = F_EVENT; i <= F_REQUEST_ID && rc == 0; i++) {
        if (!(text[i] = clean_field(in[i])))
            rc = fb_fail(err, "out of memory");
        else
            f[i] = (span){text[i], strlen(text[i])};
    }
    if (rc == 0) {
        fb_store_lock(st);
        rc = append_locked(st, f, err);
        fb_store_unlock(st);
    }
    for (int i = 0; i < NFIELDS; i++)
        free(text[i]);
    return rc;
}

/* ---- rows as JSON ------------------------------------------------------------ */

static int set_text(json_t *o, const char *name, sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    size_t len = 0;
    /* Rows append wrote are clean already; a tampered one may hold
     * anything, and is shown as faithfully as JSON allows. */
    cleanup_free char *clean = utf8_clean(t ? t : "", t ? n : 0, OUTPUT_FIELD_MAX, &len);
    json_t *v = clean ? json_stringn(clean, len) : NULL;
    return v ? json_object_set_new(o, name, v) : -1;
}

static json_t *row_json(sqlite3_stmt *s)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "seq", json_integer(sqlite3_column_int64(s, 0))) < 0)
        goto fail;
    for (int i = 0; i < NFIELDS; i++)
        if (set_text(o, field_names[i], s, 1 + i) < 0)
            goto fail;
    if (set_text(o, "hash", s, COL_HASH) < 0)
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

/* ---- query and export ---------------------------------------------------------- */

/* Entries with seq > after matching f (its since/until already
 * normalised, its after_seq ignored) into arr. */
static int query_rows(fb_store *st, const fb_audit_filter *f, int64_t after, const char *since, const char *until,
                      unsigned limit, json_t *arr, fb_err *err)
{
    cleanup_unlock fb_store *locked = store_locked(st);
    sqlite3 *db = fb_store_db(st);
    cleanup_stmt sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT " ROW_COLUMNS " FROM audit WHERE seq > ?1"
                           " AND (?2 IS NULL OR event = ?2) AND (?3 IS NULL OR actor = ?3)"
                           " AND (?4 IS NULL OR resource = ?4) AND (?5 IS NULL OR action = ?5)"
                           " AND (?6 IS NULL OR outcome = ?6) AND (?7 IS NULL OR ts >= ?7)"
                           " AND (?8 IS NULL OR ts < ?8) ORDER BY seq LIMIT ?9",
                           -1, &s, NULL) != SQLITE_OK)
        return fb_fail(err, "audit: cannot query: %s", sqlite3_errmsg(db));
    const char *texts[] = {f->event, f->actor, f->resource, f->action, f->outcome, since, until};
    sqlite3_bind_int64(s, 1, after);
    for (int i = 0; i < 7; i++)
        if (texts[i])
            sqlite3_bind_text(s, 2 + i, texts[i], -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 9, (int)limit);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        json_t *o = row_json(s);
        if (!o || json_array_append_new(arr, o) < 0)
            return fb_fail(err, "out of memory");
    }
    if (rc != SQLITE_DONE)
        return fb_fail(err, "audit: cannot query: %s", sqlite3_errmsg(db));
    return 0;
}

int fb_audit_query(fb_store *st, const fb_audit_filter *f, json_t **out, fb_err *err)
{
    static const fb_audit_filter none = {0};
    *out = NULL;
    if (!f)
        f = &none;
    char since[31], until[31];
    if (f->since && fb_audit_normalize_time(f->since, since, err) < 0)
        return fb_fail_prefix(err, "audit query: since");
    if (f->until && fb_audit_normalize_time(f->until, until, err) < 0)
        return fb_fail_prefix(err, "audit query: until");
    if (f->outcome && !valid_outcome(f->outcome))
        return fb_fail(err, "audit query: outcome must be allowed, denied or error");
    unsigned limit = f->limit == 0 ? FB_AUDIT_QUERY_DEFAULT : f->limit;
    if (limit > FB_AUDIT_QUERY_MAX)
        limit = FB_AUDIT_QUERY_MAX;
    json_t *arr = json_array();
    if (!arr)
        return fb_fail(err, "out of memory");
    int64_t after = f->after_seq > INT64_MAX ? INT64_MAX : (int64_t)f->after_seq;
    if (query_rows(st, f, after, f->since ? since : NULL, f->until ? until : NULL, limit, arr, err) < 0) {
        json_decref(arr);
        return -1;
    }
    *out = arr;
    return 0;
}

int fb_audit_export(fb_store *st, FILE *out, fb_err *err)
{
    static const fb_audit_filter all = {0};
    /* From the very bottom: a row a tamperer inserted with seq 0 or below
     * is exported too, for the SIEM to see. */
    int64_t after = INT64_MIN;
    for (;;) {
        json_t *arr = json_array();
        if (!arr)
            return fb_fail(err, "out of memory");
        /* One page under the lock, then written without it: a slow reader
         * of the export must not stall the appenders. */
        if (query_rows(st, &all, after, NULL, NULL, FB_AUDIT_QUERY_MAX, arr, err) < 0) {
            json_decref(arr);
            return -1;
        }
        size_t n = json_array_size(arr), i;
        json_t *o;
        int rc = 0;
        json_array_foreach(arr, i, o)
        {
            cleanup_free char *line = json_dumps(o, JSON_COMPACT);
            if (!line) {
                rc = fb_fail(err, "out of memory");
                break;
            }
            if (fputs(line, out) == EOF || fputc('\n', out) == EOF) {
                rc = fb_fail_errno(err, "audit export: cannot write");
                break;
            }
            after = (int64_t)json_integer_value(json_object_get(o, "seq"));
        }
        json_decref(arr);
        if (rc < 0)
            return -1;
        if (n < FB_AUDIT_QUERY_MAX)
            break;
    }
    if (fflush(out) == EOF || ferror(out))
        return fb_fail_errno(err, "audit export: cannot write");
    return 0;
}
/* ---- verify ------------------------------------------------------------------ */

typedef struct verifier {
    audit_key key;
    uint64_t next;             /* the seq the next row must have */
    char prev[HASH_HEX + 1];   /* the hash it must chain onto */
    bool done;
    uint64_t bad;              /* first_bad_seq */
} verifier;

/* Checks one row against the chain so far; -1 names what is wrong. */
static int verify_row(verifier *v, sqlite3 *db, sqlite3_stmt *s, fb_err *err)
{
    int64_t seq = sqlite3_column_int64(s, 0);
    v->bad = v->next;
    if (seq < 1 || (uint64_t)seq < v->next)
        return fb_fail(err, "audit entry %lld: sequence number out of order (inserted)", (long long)seq);
    if ((uint64_t)seq > v->next) {
        if (v->next == 1)
            return fb_fail(err, "audit entry 1 is missing (deleted): the log starts at entry %lld", (long long)seq);
        return fb_fail(err, "audit entry %llu is missing (deleted): entry %lld follows entry %llu",
                       (unsigned long long)v->next, (long long)seq, (unsigned long long)(v->next - 1));
    }
    span f[NFIELDS];
    for (int i = 0; i < NFIELDS; i++) {
        if (sqlite3_column_type(s, 1 + i) != SQLITE_TEXT)
            return fb_fail(err, "audit entry %lld: %s is not text (edited)", (long long)seq, field_names[i]);
        f[i].p = (const char *)sqlite3_column_text(s, 1 + i);
        f[i].n = (size_t)sqlite3_column_bytes(s, 1 + i);
    }
    const char *stored = (const char *)sqlite3_column_text(s, COL_HASH);
    size_t stored_len = (size_t)sqlite3_column_bytes(s, COL_HASH);
    char hash[HASH_HEX + 1];
    entry_hash(&v->key, seq, f, hash);
    bool hash_ok = sqlite3_column_type(s, COL_HASH) == SQLITE_TEXT && hex_equal(stored, stored_len, hash);
    bool link_ok = f[F_PREV].n == HASH_HEX && memcmp(f[F_PREV].p, v->prev, HASH_HEX) == 0;
    if (!hash_ok && seq == 1) {
        /* Every entry fails under a wrong key; so does the head. */
        head_row h;
        if (read_head(db, &h, err) < 0)
            return -1;
        if (h.present && !head_authentic(&v->key, &h)) {
            v->bad = 0;
            return fb_fail(err, "audit key does not match this log: neither entry 1 nor the head verify with it "
                                "(was %s replaced, or were both forged?)",
                           FB_AUDIT_KEY_FILE);
        }
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
    memcpy(v->prev, stored, HASH_HEX);
    v->next++;
    return 0;
}

/* After the last row (same transaction): the head must be authentic and
 * name that row. */
static int verify_head(verifier *v, sqlite3 *db, fb_err *err)
{
    uint64_t last = v->next - 1;
    head_row h;
    if (read_head(db, &h, err) < 0)
        return -1;
    v->bad = 0;
    if (!h.present) {
        if (last == 0)
            return 0;
        return fb_fail(err, "audit head is missing (deleted): entries after %llu, if any, may be missing",
                       (unsigned long long)last);
    }
    if (!head_authentic(&v->key, &h))
        return fb_fail(err, "audit head does not verify (forged or edited): entries after %llu may be missing "
                            "(truncated)",
                       (unsigned long long)last);
    if ((uint64_t)h.seq > last) {
        v->bad = last + 1;
        if (last == 0)
            return fb_fail(err, "all entries are missing (truncated): the head records entry %lld",
                           (long long)h.seq);
        return fb_fail(err, "entries after %llu are missing (truncated): the head records entry %lld",
                       (unsigned long long)last, (long long)h.seq);
    }
    if ((uint64_t)h.seq < last) {
        v->bad = (uint64_t)h.seq + 1;
        return fb_fail(err, "audit entries after %lld are not covered by the head (inserted)", (long long)h.seq);
    }
    if (h.hash_len != HASH_HEX || memcmp(h.hash, v->prev, HASH_HEX) != 0)
        return fb_fail(err, "audit head does not match entry %llu (the entry or the head was replaced)",
                       (unsigned long long)last);
    return 0;
}

static int read_only_begin(sqlite3 *db, fb_err *err)
{
    cleanup_stmt sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "BEGIN", -1, &s, NULL) != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
        return fb_fail(err, "audit: cannot begin a read: %s", sqlite3_errmsg(db));
    return 0;
}

/* One page of the walk in its own read transaction; -1 on the first problem. */
static int verify_page(verifier *v, fb_store *st, fb_err *err)
{
    cleanup_unlock fb_store *locked = store_locked(st);
    sqlite3 *db = fb_store_db(st);
    if (read_only_begin(db, err) < 0)
        return -1;
    int rc = 0;
    {
        cleanup_stmt sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(db, "SELECT " ROW_COLUMNS " FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2", -1,
                               &s, NULL) != SQLITE_OK) {
            rc = fb_fail(err, "audit: cannot read the log: %s", sqlite3_errmsg(db));
            goto end;
        }
        /* The first page starts below 1, so an inserted seq 0 or -5 is seen. */
        sqlite3_bind_int64(s, 1, v->next == 1 ? INT64_MIN : (int64_t)v->next);
        sqlite3_bind_int(s, 2, VERIFY_PAGE);
        int n = 0, step;
        while ((step = sqlite3_step(s)) == SQLITE_ROW) {
            n++;
            if (verify_row(v, db, s, err) < 0) {
                rc = -1;
                goto end;
            }
        }
        if (step != SQLITE_DONE) {
            v->bad = 0;
            rc = fb_fail(err, "audit: cannot read the log: %s", sqlite3_errmsg(db));
            goto end;
        }
        if (n < VERIFY_PAGE) {
            v->done = true;
            rc = verify_head(v, db, err);
        }
    }
end:
    fb_store_rollback(st); /* ends the read transaction */
    return rc;
}

/* No key: fine for a log that never had an entry, an error otherwise. */
static int verify_without_key(fb_store *st, const char *path, fb_err *err)
{
    cleanup_unlock fb_store *locked = store_locked(st);
    sqlite3 *db = fb_store_db(st);
    head_row h;
    bool found = false;
    int64_t last = 0;
    char last_hash[HASH_HEX + 1];
    size_t last_len = 0;
    if (read_head(db, &h, err) < 0 || read_newest(db, &found, &last, last_hash, &last_len, err) < 0)
        return -1;
    if (!found && !h.present)
        return 0;
    return fb_fail(err, "audit key %s is missing: the log cannot be verified without it; restore it from backup",
                   path);
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
    cleanup_free char *path = key_path(st);
    if (!path)
        return fb_fail(err, "out of memory");
    verifier v = {.next = 1};
    memcpy(v.prev, ZERO_HASH, sizeof ZERO_HASH);
    bool missing = false;
    int rc = read_key(path, &v.key, &missing, err);
    if (rc < 0 && missing)
        rc = verify_without_key(st, path, err);
    else
        while (rc == 0 && !v.done)
            rc = verify_page(&v, st, err);
    sodium_memzero(&v.key, sizeof v.key);
    *entries = v.next - 1;
    if (rc < 0)
        *first_bad_seq = v.bad;
    return rc;
}
