/*
 * test_audit.c - unit tests for the hash-chained audit log (src/audit/).
 *
 * The log's promise is that any change made to the database behind its
 * back is found and named.  So most tests here append a known log through
 * the API, then tamper with the database file through a raw SQLite
 * connection - the way an attacker with the file but not the key would -
 * and check that fb_audit_verify names the exact entry and the kind of
 * damage, and that fb_audit_append refuses to extend a damaged log.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit.h"
#include "store/store.h"

#define N_ENTRIES 10

typedef struct fixture {
    char tmp[64];
    char db[128];
    char key[128];
    fb_store *st;
} fixture;

/* ---- helpers --------------------------------------------------------------- */

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* Tampering: fixed SQL (or SQL built here from fixed column names). */
static void raw_exec(fixture *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void raw_exec(fixture *f, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    sqlite3 *db = raw_open(f->db);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}

static long long raw_ll(fixture *f, const char *sql)
{
    sqlite3 *db = raw_open(f->db);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

/* One column of one row, as text (caller frees). */
static char *raw_text(fixture *f, const char *col, long long seq)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT %s FROM audit WHERE seq = %lld", col, seq);
    sqlite3 *db = raw_open(f->db);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    char *v = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    assert_non_null(v);
    return v;
}

static void append_ok(fb_store *st, const fb_audit_event *ev)
{
    fb_err err = {{0}};
    if (fb_audit_append(st, ev, &err) < 0)
        fail_msg("fb_audit_append: %s", err.msg);
}

/* Entry i of the standard log: fields that differ from entry to entry and
 * that the query tests can count. */
static void append_standard(fb_store *st, int i)
{
    char resource[32], reason[32], ip[32], req[32];
    snprintf(resource, sizeof resource, "sb-%d", i);
    snprintf(reason, sizeof reason, "reason %d", i);
    snprintf(ip, sizeof ip, "10.0.0.%d", i);
    snprintf(req, sizeof req, "req-%d", i);
    fb_audit_event ev = {
        .event = i % 2 ? "auth" : "sandbox",
        .actor = i % 3 == 0 ? "user:us_b" : "user:us_a",
        .resource = resource,
        .action = i % 2 ? "login" : "create",
        .outcome = i % 4 == 0 ? "denied" : i % 5 == 0 ? "error" : "allowed",
        .reason = reason,
        .source_ip = ip,
        .request_id = req,
    };
    append_ok(st, &ev);
}

static void verify_ok(fb_store *st, uint64_t want)
{
    uint64_t n = 99999, bad = 99999;
    fb_err err = {{0}};
    if (fb_audit_verify(st, &n, &bad, &err) < 0)
        fail_msg("verify failed: %s", err.msg);
    assert_int_equal(n, want);
}

/* verify must fail, name first_bad_seq, and say `msg` (exactly, or as a
 * part when partial). */
static void verify_fails_with(fb_store *st, uint64_t want_bad, const char *msg, bool partial)
{
    uint64_t n = 99999, bad = 99999;
    fb_err err = {{0}};
    assert_int_equal(fb_audit_verify(st, &n, &bad, &err), -1);
    if (partial ? !strstr(err.msg, msg) : strcmp(err.msg, msg) != 0)
        fail_msg("verify said '%s', expected %s'%s'", err.msg, partial ? "something with " : "", msg);
    assert_int_equal(bad, want_bad);
    /* entries: how many verified before the problem. */
    if (want_bad > 0)
        assert_int_equal(n, want_bad - 1);
}

static void append_refused(fixture *f, const char *msg)
{
    long long before = raw_ll(f, "SELECT count(*) FROM audit");
    fb_audit_event ev = {.event = "auth", .actor = "system", .outcome = "allowed"};
    fb_err err = {{0}};
    assert_int_equal(fb_audit_append(f->st, &ev, &err), -1);
    if (!strstr(err.msg, msg))
        fail_msg("append said '%s', expected something with '%s'", err.msg, msg);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit"), before);
}

static int setup_empty(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->tmp, sizeof f->tmp, "/tmp/fb-test-audit-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    snprintf(f->db, sizeof f->db, "%s/forgebox.db", f->tmp);
    snprintf(f->key, sizeof f->key, "%s/%s", f->tmp, FB_AUDIT_KEY_FILE);
    fb_err err = {{0}};
    if (fb_store_open(f->tmp, &f->st, &err) < 0)
        fail_msg("fb_store_open: %s", err.msg);
    *state = f;
    return 0;
}

static int setup_log(void **state)
{
    setup_empty(state);
    fixture *f = *state;
    for (int i = 1; i <= N_ENTRIES; i++)
        append_standard(f->st, i);
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fb_store_close(f->st);
    fb_rm_rf(f->tmp);
    free(f);
    return 0;
}

/* ---- appending and an intact log ------------------------------------------ */

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static bool is_log_time(const char *s)
{
    /* 2026-11-29T10:31:07.123456789Z */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddddddddZ";
    if (strlen(s) != sizeof shape - 1)
        return false;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    return true;
}

static void test_empty_log_verifies_and_creates_no_key(void **state)
{
    fixture *f = *state;
    verify_ok(f->st, 0);
    assert_int_equal(access(f->key, F_OK), -1);
}

static void test_append_builds_a_chain(void **state)
{
    fixture *f = *state;
    verify_ok(f->st, N_ENTRIES);

    struct stat sb;
    assert_int_equal(stat(f->key, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_size, FB_AUDIT_KEY_BYTES);

    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit"), N_ENTRIES);
    assert_int_equal(raw_ll(f, "SELECT min(seq) FROM audit"), 1);
    assert_int_equal(raw_ll(f, "SELECT max(seq) FROM audit"), N_ENTRIES);
    assert_int_equal(raw_ll(f, "SELECT seq FROM audit_head"), N_ENTRIES);
    char *prev0 = raw_text(f, "prev_hash", 1);
    assert_string_equal(prev0, "0000000000000000000000000000000000000000000000000000000000000000");
    free(prev0);
    char *last_ts = NULL;
    for (int i = 1; i <= N_ENTRIES; i++) {
        char *hash = raw_text(f, "hash", i), *ts = raw_text(f, "ts", i);
        assert_true(is_hex64(hash));
        assert_true(is_log_time(ts));
        if (last_ts)
            assert_true(strcmp(last_ts, ts) <= 0);
        free(last_ts);
        last_ts = ts;
        if (i < N_ENTRIES) {
            char *next_prev = raw_text(f, "prev_hash", i + 1);
            assert_string_equal(next_prev, hash);
            free(next_prev);
        }
        free(hash);
    }
    free(last_ts);
    char *reason = raw_text(f, "reason", 7);
    assert_string_equal(reason, "reason 7");
    free(reason);
}

static void test_null_fields_become_empty(void **state)
{
    fixture *f = *state;
    fb_audit_event ev = {.outcome = "error"};
    append_ok(f->st, &ev);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit WHERE event = '' AND actor = '' AND resource = '' AND "
                               "action = '' AND reason = '' AND source_ip = '' AND request_id = ''"),
                     1);
    verify_ok(f->st, 1);
}

static void test_bad_outcome_refused(void **state)
{
    fixture *f = *state;
    fb_err err = {{0}};
    fb_audit_event ev = {.event = "auth", .outcome = "maybe"};
    assert_int_equal(fb_audit_append(f->st, &ev, &err), -1);
    assert_string_equal(err.msg, "audit: outcome must be allowed, denied or error, not 'maybe'");
    ev.outcome = NULL;
    assert_int_equal(fb_audit_append(f->st, &ev, &err), -1);
    assert_int_equal(fb_audit_append(f->st, NULL, &err), -1);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit"), 0);
    assert_int_equal(access(f->key, F_OK), -1);
}

/* Is s valid UTF-8?  (sodium-free, strict: the same rules as audit.c) */
static bool valid_utf8(const char *s)
{
    json_t *j = json_string(s); /* jansson refuses invalid UTF-8 */
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

static void test_fields_are_capped_and_valid_utf8(void **state)
{
    fixture *f = *state;
    /* 3000 bytes of a 3-byte character: cut at a character boundary. */
    char *big = malloc(3001);
    assert_non_null(big);
    for (int i = 0; i < 1000; i++)
        memcpy(big + 3 * i, "\xE2\x82\xAC", 3); /* U+20AC */
    big[3000] = '\0';
    fb_audit_event ev = {
        .event = "config",
        .actor = "user:\xFF\xFE",            /* not UTF-8 at all */
        .resource = "\xC0\xAF",              /* overlong '/' */
        .action = "\xED\xA0\x80",            /* a surrogate */
        .outcome = "allowed",
        .reason = big,
        .source_ip = "caf\xC3\xA9",          /* fine: café */
        .request_id = "cut\xE2\x82",         /* truncated sequence */
    };
    append_ok(f->st, &ev);
    free(big);

    char *actor = raw_text(f, "actor", 1), *resource = raw_text(f, "resource", 1),
         *action = raw_text(f, "action", 1), *reason = raw_text(f, "reason", 1),
         *ip = raw_text(f, "source_ip", 1), *req = raw_text(f, "request_id", 1);
    assert_string_equal(actor, "user:\xEF\xBF\xBD\xEF\xBF\xBD");
    assert_string_equal(resource, "\xEF\xBF\xBD\xEF\xBF\xBD");
    assert_string_equal(action, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    assert_string_equal(ip, "caf\xC3\xA9");
    assert_string_equal(req, "cut\xEF\xBF\xBD\xEF\xBF\xBD");
    size_t n = strlen(reason), mark = strlen(FB_AUDIT_TRUNCATED);
    assert_true(n <= FB_AUDIT_FIELD_MAX);
    assert_true(n > FB_AUDIT_FIELD_MAX - mark - 3);
    assert_string_equal(reason + n - mark, FB_AUDIT_TRUNCATED);
    assert_int_equal((n - mark) % 3, 0); /* whole characters only */
    for (const char *p = reason; p < reason + n - mark; p += 3)
        assert_memory_equal(p, "\xE2\x82\xAC", 3);
    assert_true(valid_utf8(actor) && valid_utf8(resource) && valid_utf8(action) && valid_utf8(reason) &&
                valid_utf8(req));
    free(actor), free(resource), free(action), free(reason), free(ip), free(req);

    /* Exactly at the cap: kept whole. */
    char exact[FB_AUDIT_FIELD_MAX + 1];
    memset(exact, 'a', FB_AUDIT_FIELD_MAX);
    exact[FB_AUDIT_FIELD_MAX] = '\0';
    fb_audit_event ev2 = {.event = "config", .outcome = "allowed", .reason = exact};
    append_ok(f->st, &ev2);
    char *r2 = raw_text(f, "reason", 2);
    assert_string_equal(r2, exact);
    free(r2);
    /* One byte over: cut. */
    char over[FB_AUDIT_FIELD_MAX + 2];
    memset(over, 'b', FB_AUDIT_FIELD_MAX + 1);
    over[FB_AUDIT_FIELD_MAX + 1] = '\0';
    ev2.reason = over;
    append_ok(f->st, &ev2);
    char *r3 = raw_text(f, "reason", 3);
    assert_int_equal(strlen(r3), FB_AUDIT_FIELD_MAX);
    assert_string_equal(r3 + FB_AUDIT_FIELD_MAX - strlen(FB_AUDIT_TRUNCATED), FB_AUDIT_TRUNCATED);
    free(r3);
    verify_ok(f->st, 3);
}

/* ---- tampering: every kind is found, at the right entry -------------------- */

static const char *const edited_fields[] = {"ts",     "event",     "actor",      "resource", "action",
                                            "reason", "source_ip", "request_id", "outcome"};

static void test_edit_of_any_field_is_found(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof edited_fields / sizeof edited_fields[0]; i++) {
        void *fx = NULL;
        setup_log(&fx);
        fixture *f = fx;
        const char *col = edited_fields[i];
        if (strcmp(col, "outcome") == 0)
            raw_exec(f, "UPDATE audit SET outcome = CASE outcome WHEN 'allowed' THEN 'denied' ELSE 'allowed' END "
                        "WHERE seq = 5");
        else if (strcmp(col, "ts") == 0) /* one nanosecond later */
            raw_exec(f, "UPDATE audit SET ts = substr(ts, 1, 28) || ((substr(ts, 29, 1) + 1) %% 10) || 'Z' "
                        "WHERE seq = 5");
        else
            raw_exec(f, "UPDATE audit SET %s = %s || 'x' WHERE seq = 5", col, col);
        print_message("      edited %s\n", col);
        verify_fails_with(f->st, 5, "audit entry 5: hash mismatch (edited)", false);
        /* The head is intact, so appending goes on - and does not hide
         * the edit. */
        append_standard(f->st, 11);
        verify_fails_with(f->st, 5, "audit entry 5: hash mismatch (edited)", false);
        teardown(&fx);
    }
}

static void test_edit_of_first_and_last_entries_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "UPDATE audit SET reason = 'nothing to see' WHERE seq = %d", N_ENTRIES);
    verify_fails_with(f->st, N_ENTRIES, "audit entry 10: hash mismatch (edited)", false);
    raw_exec(f, "UPDATE audit SET actor = 'system' WHERE seq = 1");
    verify_fails_with(f->st, 1, "audit entry 1: hash mismatch (edited)", false);
}

static void test_edit_of_stored_hashes_is_found(void **state)
{
    fixture *f = *state;
    /* One hex digit changed, still a well-formed hash. */
    raw_exec(f, "UPDATE audit SET hash = CASE substr(hash, 1, 1) WHEN '0' THEN '1' ELSE '0' END || substr(hash, 2)"
                " WHERE seq = 4");
    verify_fails_with(f->st, 4, "audit entry 4: hash mismatch (edited)", false);
}

static void test_edit_of_prev_hash_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "UPDATE audit SET prev_hash = (SELECT hash FROM audit WHERE seq = 2) WHERE seq = 6");
    verify_fails_with(f->st, 6,
                      "audit entry 6: hash mismatch and it does not follow entry 5 (replaced, inserted or reordered)",
                      false);
}

static void test_type_change_is_found(void **state)
{
    fixture *f = *state;
    /* Same bytes, stored as a blob: no longer what append wrote. */
    raw_exec(f, "UPDATE audit SET reason = CAST(reason AS BLOB) WHERE seq = 3");
    verify_fails_with(f->st, 3, "audit entry 3: reason is not text (edited)", false);
}

static void test_deleted_middle_entry_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "DELETE FROM audit WHERE seq = 5");
    verify_fails_with(f->st, 5, "audit entry 5 is missing (deleted): entry 6 follows entry 4", false);
}

static void test_deleted_first_entry_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "DELETE FROM audit WHERE seq = 1");
    verify_fails_with(f->st, 1, "audit entry 1 is missing (deleted): the log starts at entry 2", false);
}

/* Deleting and renumbering the rest, so there is no gap: the chain breaks. */
static void test_deleted_and_renumbered_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "DELETE FROM audit WHERE seq = 5; UPDATE audit SET seq = -seq WHERE seq > 5;"
                "UPDATE audit SET seq = -seq - 1 WHERE seq < 0;"
                "UPDATE audit_head SET seq = seq - 1");
    verify_fails_with(f->st, 5,
                      "audit entry 5: hash mismatch and it does not follow entry 4 (replaced, inserted or reordered)",
                      false);
}

static void test_truncated_tail_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "DELETE FROM audit WHERE seq >= 9");
    verify_fails_with(f->st, 9, "entries after 8 are missing (truncated): the head records entry 10", false);
    append_refused(f, "audit log does not end where its head says (entry 10); refusing to append");
}

static void test_truncated_everything_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "DELETE FROM audit");
    verify_fails_with(f->st, 1, "all entries are missing (truncated): the head records entry 10", false);
    append_refused(f, "does not end where its head says");
}

/* The attacker deletes the last entry and points the head at the one
 * before: without the key, the MAC gives them away. */
static void test_truncation_with_head_rewritten_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "DELETE FROM audit WHERE seq = 10;"
                "UPDATE audit_head SET seq = 9, hash = (SELECT hash FROM audit WHERE seq = 9)");
    verify_fails_with(f->st, 0, "audit head does not verify (forged or edited): entries after 9 may be missing (truncated)",
                      false);
    /* And the next append does not launder it into a valid chain. */
    append_refused(f, "audit head does not verify with");
    verify_fails_with(f->st, 0, "audit head does not verify", true);
}

/* Same, with the MAC of an older head: still the wrong MAC for that
 * position (the MAC covers seq and hash together). */
static void test_truncation_with_head_mac_copied_is_found(void **state)
{
    fixture *f = *state;
    char *mac10 = NULL;
    {
        sqlite3 *db = raw_open(f->db);
        sqlite3_stmt *s = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT mac FROM audit_head", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        mac10 = strdup((const char *)sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
    raw_exec(f, "DELETE FROM audit WHERE seq = 10;"
                "UPDATE audit_head SET seq = 9, hash = (SELECT hash FROM audit WHERE seq = 9), mac = '%s'",
             mac10);
    free(mac10);
    verify_fails_with(f->st, 0, "audit head does not verify (forged or edited): entries after 9", true);
}

static void test_forged_entry_inserted_in_the_middle_is_found(void **state)
{
    fixture *f = *state;
    /* Make room at 6, then insert a plausible entry chained onto 5. */
    raw_exec(f, "UPDATE audit SET seq = -seq WHERE seq >= 6; UPDATE audit SET seq = -seq + 1 WHERE seq < 0;"
                "INSERT INTO audit (seq, ts, event, actor, resource, action, outcome, reason, source_ip,"
                " request_id, prev_hash, hash) SELECT 6, ts, 'admin', 'user:us_a', 'users', 'grant', 'allowed',"
                " 'forged', '10.0.0.66', 'req-66', hash, hash FROM audit WHERE seq = 5;"
                "UPDATE audit_head SET seq = 11, hash = (SELECT hash FROM audit WHERE seq = 11)");
    verify_fails_with(f->st, 6, "audit entry 6: hash mismatch (edited)", false);
}

static void test_forged_entry_appended_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "INSERT INTO audit (seq, ts, event, actor, resource, action, outcome, reason, source_ip,"
                " request_id, prev_hash, hash) SELECT 11, ts, 'admin', 'user:us_a', 'users', 'grant', 'allowed',"
                " 'forged', '', '', hash, lower(hex(randomblob(32))) FROM audit WHERE seq = 10");
    verify_fails_with(f->st, 11, "audit entry 11: hash mismatch (edited)", false);
    append_refused(f, "does not end where its head says");
}

static void test_inserted_seq_zero_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "INSERT INTO audit (seq, ts, event, actor, resource, action, outcome, reason, source_ip,"
                " request_id, prev_hash, hash) SELECT 0, ts, event, actor, resource, action, outcome, reason,"
                " source_ip, request_id, prev_hash, hash FROM audit WHERE seq = 1");
    verify_fails_with(f->st, 1, "audit entry 0: sequence number out of order (inserted)", false);
}

/* Swapping two entries' contents (seq stays) - reordering. */
static void test_swapped_entries_are_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN (3, 7);"
                "UPDATE audit SET (ts, event, actor, resource, action, outcome, reason, source_ip, request_id,"
                " prev_hash, hash) = (SELECT ts, event, actor, resource, action, outcome, reason, source_ip,"
                " request_id, prev_hash, hash FROM t WHERE t.seq = 10 - audit.seq) WHERE seq IN (3, 7)");
    char *r3 = raw_text(f, "reason", 3);
    assert_string_equal(r3, "reason 7");
    free(r3);
    verify_fails_with(f->st, 3,
                      "audit entry 3: hash mismatch and it does not follow entry 2 (replaced, inserted or reordered)",
                      false);
}

/* Swapping the seq numbers of two adjacent entries - reordering too. */
static void test_swapped_seq_numbers_are_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "UPDATE audit SET seq = 100 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 5;"
                "UPDATE audit SET seq = 5 WHERE seq = 100");
    verify_fails_with(f->st, 4,
                      "audit entry 4: hash mismatch and it does not follow entry 3 (replaced, inserted or reordered)",
                      false);
}

static void test_head_tampering_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "UPDATE audit_head SET mac = replace(mac, substr(mac, 2, 1), 'x')");
    verify_fails_with(f->st, 0, "audit head does not verify (forged or edited): entries after 10 may be missing",
                      true);
    append_refused(f, "audit head does not verify");
}

static void test_head_seq_raised_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "UPDATE audit_head SET seq = 12");
    verify_fails_with(f->st, 0, "audit head does not verify (forged or edited)", true);
}

static void test_deleted_head_is_found(void **state)
{
    fixture *f = *state;
    raw_exec(f, "DELETE FROM audit_head");
    verify_fails_with(f->st, 0, "audit head is missing (deleted): entries after 10, if any, may be missing", false);
    append_refused(f, "audit head is missing but the log has entries; refusing to append");
}

static void test_missing_key_is_reported(void **state)
{
    fixture *f = *state;
    assert_int_equal(unlink(f->key), 0);
    char want[256];
    snprintf(want, sizeof want,
             "audit key %s is missing: the log cannot be verified without it; restore it from backup", f->key);
    verify_fails_with(f->st, 0, want, false);
    /* Append does not start a new chain under a new key. */
    append_refused(f, "is missing but the log has entries; restore the key from backup");
    assert_int_equal(access(f->key, F_OK), -1);
}

static void write_key(fixture *f, const void *bytes, size_t n, mode_t mode)
{
    FILE *fp = fopen(f->key, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(f->key, mode), 0);
}

static void test_wrong_key_is_reported(void **state)
{
    fixture *f = *state;
    uint8_t other[FB_AUDIT_KEY_BYTES];
    randombytes_buf(other, sizeof other);
    write_key(f, other, sizeof other, 0600);
    verify_fails_with(f->st, 0, "audit key does not match this log: neither entry 1 nor the head verify with it", true);
    append_refused(f, "audit head does not verify with");
}

static void test_key_permissions_are_checked(void **state)
{
    fixture *f = *state;
    assert_int_equal(chmod(f->key, 0640), 0);
    char want[256];
    snprintf(want, sizeof want, "audit key %s is accessible to group or others (mode 0640); refusing to use it", f->key);
    verify_fails_with(f->st, 0, want, true);
    append_refused(f, want);
    assert_int_equal(chmod(f->key, 0604), 0);
    verify_fails_with(f->st, 0, "(mode 0604)", true);
    assert_int_equal(chmod(f->key, 0600), 0);
    verify_ok(f->st, N_ENTRIES);
}

static void test_damaged_key_is_reported(void **state)
{
    fixture *f = *state;
    write_key(f, "short", 5, 0600);
    verify_fails_with(f->st, 0, "has 5 bytes, not 32: it is damaged", true);
    append_refused(f, "has 5 bytes, not 32");
}

static void test_key_symlink_is_refused(void **state)
{
    fixture *f = *state;
    char moved[160];
    snprintf(moved, sizeof moved, "%s/key-elsewhere", f->tmp);
    assert_int_equal(rename(f->key, moved), 0);
    assert_int_equal(symlink(moved, f->key), 0);
    verify_fails_with(f->st, 0, "cannot open audit key", true);
}

/* ---- concurrency ------------------------------------------------------------ */

#define THREADS 8
#define PER_THREAD 200

struct worker {
    fb_store *st;
    int id;
    int failures;
    char msg[512];
};

static void *append_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char req[32];
        snprintf(req, sizeof req, "t%d-%d", w->id, i);
        fb_audit_event ev = {.event = "exec", .actor = "system", .action = "run", .outcome = "allowed",
                             .request_id = req};
        fb_err err = {{0}};
        if (fb_audit_append(w->st, &ev, &err) < 0) {
            w->failures++;
            snprintf(w->msg, sizeof w->msg, "%s", err.msg);
        }
    }
    return NULL;
}

/* THREADS workers of fn, spread over the stores, all joined; any append
 * that failed fails the test. */
static void run_workers(fb_store **stores, size_t nstores, void *(*fn)(void *))
{
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.st = stores[(size_t)i % nstores], .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, fn, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        if (w[i].failures)
            fail_msg("thread %d: %d appends failed, last: %s", i, w[i].failures, w[i].msg);
    }
}

static void check_full_log(fixture *f)
{
    const long long total = THREADS * PER_THREAD;
    verify_ok(f->st, (uint64_t)total);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit"), total);
    assert_int_equal(raw_ll(f, "SELECT min(seq) FROM audit"), 1);
    assert_int_equal(raw_ll(f, "SELECT max(seq) FROM audit"), total);
    assert_int_equal(raw_ll(f, "SELECT count(DISTINCT request_id) FROM audit"), total);
}

static void test_concurrent_appends_one_store(void **state)
{
    fixture *f = *state;
    run_workers(&f->st, 1, append_worker);
    check_full_log(f);
}

/* Two connections, as two processes would have: SQLite's write lock and
 * the busy timeout, not the store mutex, keep the chain straight. */
static void test_concurrent_appends_two_stores(void **state)
{
    fixture *f = *state;
    fb_store *second = NULL;
    fb_err err = {{0}};
    assert_int_equal(fb_store_open(f->tmp, &second, &err), 0);
    fb_store *stores[2] = {f->st, second};
    run_workers(stores, 2, append_worker);
    fb_store_close(second);
    check_full_log(f);
}

/* A request's authentication and permission entries go in one append
 * (fb_audit_append_many): under concurrent group commits each pair stays
 * consecutive and in order, and the chain verifies. */
static void *pair_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD / 2; i++) {
        char req[32];
        snprintf(req, sizeof req, "t%d-%d", w->id, i);
        fb_audit_event ev[2] = {
            {.event = "auth", .actor = "system", .action = "authenticate", .outcome = "allowed", .request_id = req},
            {.event = "permission", .actor = "system", .action = "GET /x", .outcome = "allowed",
             .request_id = req},
        };
        fb_err err = {{0}};
        if (fb_audit_append_many(w->st, ev, 2, &err) < 0) {
            w->failures++;
            snprintf(w->msg, sizeof w->msg, "%s", err.msg);
        }
    }
    return NULL;
}

static void test_concurrent_pairs_stay_together(void **state)
{
    fixture *f = *state;
    run_workers(&f->st, 1, pair_worker);
    const long long total = THREADS * PER_THREAD;
    verify_ok(f->st, (uint64_t)total);
    /* Every auth entry is followed by the permission entry of its request. */
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit a JOIN audit b ON b.seq = a.seq + 1 "
                               "WHERE a.event = 'auth' AND b.event = 'permission' AND a.request_id = b.request_id"),
                     total / 2);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit WHERE event = 'auth'"), total / 2);
    fb_audit_event none[1] = {{.event = "x", .outcome = "allowed"}};
    fb_err err = {{0}};
    assert_int_equal(fb_audit_append_many(f->st, none, 0, &err), -1);
    assert_int_equal(fb_audit_append_many(f->st, none, FB_AUDIT_APPEND_MAX + 1, &err), -1);
}

/* ---- begun appends (fb_audit_append_begin / end) -------------------------- */

/* A begun entry's place is fixed when it is begun: an append made after it
 * (which writes the commit, taking the begun entry along) chains after it,
 * and ending it then finds it written.  A begun entry nobody else commits
 * is written by its own end. */
static void test_begun_entry_keeps_its_place(void **state)
{
    fixture *f = *state;
    fb_err err = {{0}};
    fb_audit_event a = {.event = "permission", .actor = "system", .action = "exec", .outcome = "allowed",
                        .request_id = "begun"};
    fb_audit_event b = {.event = "exec", .actor = "system", .action = "exec", .outcome = "allowed",
                        .request_id = "after"};
    fb_audit_pending *p = NULL;
    assert_int_equal(fb_audit_append_begin(f->st, &a, 1, &p, &err), 0);
    assert_non_null(p);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit"), 0); /* begun: not written yet */
    assert_int_equal(fb_audit_append(f->st, &b, &err), 0);
    assert_int_equal(raw_ll(f, "SELECT seq FROM audit WHERE request_id = 'begun'"), 1);
    assert_int_equal(raw_ll(f, "SELECT seq FROM audit WHERE request_id = 'after'"), 2);
    assert_int_equal(fb_audit_append_end(f->st, p, &err), 0);
    fb_audit_event c = {.event = "permission", .actor = "system", .action = "exec", .outcome = "allowed",
                        .request_id = "alone"};
    assert_int_equal(fb_audit_append_begin(f->st, &c, 1, &p, &err), 0);
    assert_int_equal(fb_audit_append_end(f->st, p, &err), 0);
    assert_int_equal(raw_ll(f, "SELECT seq FROM audit WHERE request_id = 'alone'"), 3);
    verify_ok(f->st, 3);
    assert_int_equal(fb_audit_append_end(f->st, NULL, &err), 0);
}

/* A begun entry that cannot be written says so at its end, and nothing of
 * it is in the log. */
static void test_begun_entry_failure_is_reported_at_its_end(void **state)
{
    fixture *f = *state;
    raw_exec(f, "UPDATE audit_head SET mac = '0000000000000000000000000000000000000000000000000000000000000000'");
    fb_err err = {{0}};
    fb_audit_event a = {.event = "permission", .actor = "system", .action = "exec", .outcome = "allowed"};
    fb_audit_pending *p = NULL;
    assert_int_equal(fb_audit_append_begin(f->st, &a, 1, &p, &err), 0);
    assert_int_equal(fb_audit_append_end(f->st, p, &err), -1);
    if (!strstr(err.msg, "does not verify"))
        fail_msg("end said '%s'", err.msg);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit"), N_ENTRIES);
}

/* Begun and plain appends from many threads, each thread's begun entry
 * followed at once by a plain one of the same request (as an exec's
 * permission entry, then its end): every entry is in, each pair in order,
 * and the chain verifies. */
static void *begun_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD / 2; i++) {
        char req[32];
        snprintf(req, sizeof req, "t%d-%d", w->id, i);
        fb_audit_event ev[2] = {
            {.event = "permission", .actor = "system", .action = "exec", .outcome = "allowed", .request_id = req},
            {.event = "exec", .actor = "system", .action = "exec", .outcome = "allowed", .request_id = req},
        };
        fb_err err = {{0}};
        fb_audit_pending *p = NULL;
        if (fb_audit_append_begin(w->st, &ev[0], 1, &p, &err) < 0 ||
            (i % 2 == 0 && fb_audit_append_end(w->st, p, &err) < 0) ||
            fb_audit_append(w->st, &ev[1], &err) < 0 || (i % 2 == 1 && fb_audit_append_end(w->st, p, &err) < 0)) {
            w->failures++;
            snprintf(w->msg, sizeof w->msg, "%s", err.msg);
        }
    }
    return NULL;
}

static void test_concurrent_begun_and_plain_appends(void **state)
{
    fixture *f = *state;
    run_workers(&f->st, 1, begun_worker);
    const long long total = THREADS * PER_THREAD;
    verify_ok(f->st, (uint64_t)total);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM audit a JOIN audit b ON b.request_id = a.request_id "
                               "WHERE a.event = 'permission' AND b.event = 'exec' AND b.seq > a.seq"),
                     total / 2);
}

/* ---- query and export ------------------------------------------------------- */

static size_t query_count(fb_store *st, const fb_audit_filter *flt, json_t **keep)
{
    json_t *out = NULL;
    fb_err err = {{0}};
    if (fb_audit_query(st, flt, &out, &err) < 0)
        fail_msg("query: %s", err.msg);
    assert_true(json_is_array(out));
    size_t n = json_array_size(out);
    if (keep)
        *keep = out;
    else
        json_decref(out);
    return n;
}

static void test_query_filters(void **state)
{
    fixture *f = *state;
    /* Entries 1..10: odd = auth/login, even = sandbox/create; actor us_b
     * for 3, 6, 9; denied for 4, 8; error for 5, 10. */
    assert_int_equal(query_count(f->st, NULL, NULL), 10);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.actor = "user:us_b"}, NULL), 3);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.action = "login"}, NULL), 5);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.event = "sandbox"}, NULL), 5);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.outcome = "denied"}, NULL), 2);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.outcome = "error"}, NULL), 2);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.resource = "sb-7"}, NULL), 1);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.actor = "user:us_b", .action = "login"}, NULL), 2);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.actor = "nobody"}, NULL), 0);
    /* Values are bound, never spliced into SQL. */
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.actor = "x' OR '1'='1"}, NULL), 0);

    /* One object in full. */
    json_t *out = NULL;
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.resource = "sb-4"}, &out), 1);
    json_t *o = json_array_get(out, 0);
    assert_int_equal(json_integer_value(json_object_get(o, "seq")), 4);
    assert_string_equal(json_string_value(json_object_get(o, "event")), "sandbox");
    assert_string_equal(json_string_value(json_object_get(o, "actor")), "user:us_a");
    assert_string_equal(json_string_value(json_object_get(o, "action")), "create");
    assert_string_equal(json_string_value(json_object_get(o, "outcome")), "denied");
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "reason 4");
    assert_string_equal(json_string_value(json_object_get(o, "source_ip")), "10.0.0.4");
    assert_string_equal(json_string_value(json_object_get(o, "request_id")), "req-4");
    assert_true(is_log_time(json_string_value(json_object_get(o, "ts"))));
    assert_true(is_hex64(json_string_value(json_object_get(o, "hash"))));
    assert_true(is_hex64(json_string_value(json_object_get(o, "prev_hash"))));
    assert_int_equal(json_object_size(o), 12);
    json_decref(out);

    /* Paging: limit and after_seq. */
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.limit = 4}, &out), 4);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(out, 3), "seq")), 4);
    json_decref(out);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.limit = 4, .after_seq = 4}, &out), 4);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(out, 0), "seq")), 5);
    json_decref(out);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.limit = 4, .after_seq = 8}, NULL), 2);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.after_seq = UINT64_MAX}, NULL), 0);
}

static void test_query_time_range(void **state)
{
    fixture *f = *state;
    char *ts4 = raw_text(f, "ts", 4), *ts7 = raw_text(f, "ts", 7);
    /* since is inclusive, until exclusive. */
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.since = ts4, .until = ts7}, NULL),
                     (size_t)raw_ll(f, "SELECT count(*) FROM audit WHERE ts >= (SELECT ts FROM audit WHERE seq = 4)"
                                       " AND ts < (SELECT ts FROM audit WHERE seq = 7)"));
    assert_true(query_count(f->st, &(fb_audit_filter){.since = ts4}, NULL) >= 7);
    free(ts4), free(ts7);

    assert_int_equal(query_count(f->st, &(fb_audit_filter){.since = "2000-01-01"}, NULL), 10);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.until = "2000-01-01T00:00:00Z"}, NULL), 0);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.since = "9999-12-31T23:59:59.999999999Z"}, NULL), 0);
    /* A whole-second bound still matches entries within that second
     * (compared as times, not as raw text). */
    char *ts1 = raw_text(f, "ts", 1);
    char second[32];
    snprintf(second, sizeof second, "%.19sZ", ts1);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.since = second}, NULL), 10);
    free(ts1);

    fb_err err = {{0}};
    json_t *out = (json_t *)1;
    assert_int_equal(fb_audit_query(f->st, &(fb_audit_filter){.since = "yesterday"}, &out, &err), -1);
    assert_null(out);
    assert_string_equal(err.msg, "audit query: since: 'yesterday' is not an RFC 3339 time (2026-11-29T10:31:07Z) or "
                                 "date (2026-11-29)");
    assert_int_equal(fb_audit_query(f->st, &(fb_audit_filter){.until = "2026-02-30"}, &out, &err), -1);
    assert_non_null(strstr(err.msg, "until"));
    assert_int_equal(fb_audit_query(f->st, &(fb_audit_filter){.outcome = "maybe"}, &out, &err), -1);
    assert_string_equal(err.msg, "audit query: outcome must be allowed, denied or error");
}

static void test_normalize_time(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"2026-11-29", "2026-11-29T00:00:00.000000000Z"},
        {"2026-11-29T10:31:07Z", "2026-11-29T10:31:07.000000000Z"},
        {"2026-11-29t10:31:07z", "2026-11-29T10:31:07.000000000Z"},
        {"2026-11-29 10:31:07.5Z", "2026-11-29T10:31:07.500000000Z"},
        {"2026-11-29T10:31:07.123456789Z", "2026-11-29T10:31:07.123456789Z"},
        {"2026-11-29T10:31:07+02:00", "2026-11-29T08:31:07.000000000Z"},
        {"2026-11-29T23:31:07.25-01:30", "2026-11-30T01:01:07.250000000Z"},
        {"2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000000000Z"},
        {"2026-12-31T23:59:60Z", "2027-01-01T00:00:00.000000000Z"},
    };
    static const char *const bad[] = {
        "", "2026", "2026-11", "2026-13-01", "2026-02-29", "2026-11-29T", "2026-11-29T10:31Z",
        "2026-11-29T10:31:07", "2026-11-29T24:00:00Z", "2026-11-29T10:31:07.Z", "2026-11-29T10:31:07.1234567891Z",
        "2026-11-29T10:31:07+0200", "2026-11-29T10:31:07Zjunk", "26-11-29", "2026-11-29x", "0000-01-01T00:00:00+01:00",
    };
    char out[31];
    fb_err err = {{0}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (fb_audit_normalize_time(ok[i].in, out, &err) < 0)
            fail_msg("%s: %s", ok[i].in, err.msg);
        assert_string_equal(out, ok[i].out);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (fb_audit_normalize_time(bad[i], out, &err) == 0)
            fail_msg("'%s' was accepted as %s", bad[i], out);
}

/* Reads an export into memory and checks it line by line: each line one
 * JSON object, seq 1..n in order, the same fields as query. */
static void check_export(fixture *f, size_t want)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    assert_non_null(mem);
    fb_err err = {{0}};
    if (fb_audit_export(f->st, mem, &err) < 0)
        fail_msg("export: %s", err.msg);
    assert_int_equal(fclose(mem), 0);
    assert_true(len > 0 && buf[len - 1] == '\n');
    size_t lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *o = json_loads(line, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
        if (!o)
            fail_msg("export line %zu is not JSON: %s", lines + 1, jerr.text);
        assert_true(json_is_object(o));
        assert_int_equal(json_object_size(o), 12);
        assert_int_equal(json_integer_value(json_object_get(o, "seq")), (json_int_t)(lines + 1));
        assert_true(is_hex64(json_string_value(json_object_get(o, "hash"))));
        json_decref(o);
        lines++;
    }
    assert_int_equal(lines, want);
    free(buf);
}

static void test_export_json_lines(void **state)
{
    fixture *f = *state;
    check_export(f, N_ENTRIES);
    /* Even text that was tampered into invalid UTF-8 exports as JSON. */
    raw_exec(f, "UPDATE audit SET reason = CAST(X'6869FF' AS TEXT), actor = CAST(X'610062' AS TEXT)"
                " WHERE seq = 2");
    check_export(f, N_ENTRIES);
    json_t *out = NULL;
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.after_seq = 1, .limit = 1}, &out), 1);
    json_t *o = json_array_get(out, 0);
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "hi\xEF\xBF\xBD");
    assert_int_equal(json_string_length(json_object_get(o, "actor")), 3); /* "a\0b", NUL kept */
    json_decref(out);
}

static void test_export_pages_through_a_long_log(void **state)
{
    fixture *f = *state;
    run_workers(&f->st, 1, append_worker);
    check_export(f, THREADS * PER_THREAD);
    /* Query is capped at 1000 per call, whatever is asked for. */
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.limit = 5000}, NULL), FB_AUDIT_QUERY_MAX);
    assert_int_equal(query_count(f->st, &(fb_audit_filter){.limit = 0}, NULL), FB_AUDIT_QUERY_DEFAULT);
}

static void test_export_write_error_is_reported(void **state)
{
    fixture *f = *state;
    FILE *full = fopen("/dev/full", "w");
    if (!full)
        skip();
    fb_err err = {{0}};
    assert_int_equal(fb_audit_export(f->st, full, &err), -1);
    assert_non_null(strstr(err.msg, "audit export: cannot write"));
    fclose(full);
}

/* ---- the schema's outcome CHECK (migration 007) ------------------------------- */

/* Every row's bytes, in order, as one text: what a migration must keep. */
static char *raw_rows(fixture *f)
{
    sqlite3 *db = raw_open(f->db);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT group_concat(seq || '|' || ts || '|' || event || '|' || actor || '|' "
                                        "|| resource || '|' || action || '|' || outcome || '|' || reason || '|' || "
                                        "source_ip || '|' || request_id || '|' || prev_hash || '|' || hash, '\n') "
                                        "FROM (SELECT * FROM audit ORDER BY seq)",
                                        -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    char *v = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    sqlite3_close(db);
    assert_non_null(v);
    return v;
}

/* A raw insert of an outcome the CHECK must refuse (true: refused). */
static bool raw_outcome_refused(fixture *f, const char *outcome)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO audit (seq, ts, event, actor, resource, action, outcome, reason, source_ip, request_id,"
             " prev_hash, hash) VALUES (100000, 't', 'e', 'a', 'r', 'x', '%s', 'r', 's', 'q', 'p', 'h')",
             outcome);
    sqlite3 *db = raw_open(f->db);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        sqlite3_exec(db, "DELETE FROM audit WHERE seq = 100000", NULL, NULL, NULL);
    sqlite3_close(db);
    return (rc & 0xff) == SQLITE_CONSTRAINT;
}

/* Version 7 states the outcome CHECK as comparisons (no temporary b-tree
 * per insert): a log written at version 6 is carried over byte for byte,
 * still verifies and goes on, and the CHECK refuses what it refused. */
static void test_upgrade_to_7_keeps_the_log_and_its_check(void **state)
{
    fixture *f = *state;
    fb_store_close(f->st);
    f->st = NULL;
    /* The table as version 6 made it, with the log's rows. */
    raw_exec(f, "CREATE TABLE audit_v6 (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, event TEXT NOT NULL,"
                " actor TEXT NOT NULL, resource TEXT NOT NULL, action TEXT NOT NULL,"
                " outcome TEXT NOT NULL CHECK (outcome IN ('allowed', 'denied', 'error')), reason TEXT NOT NULL,"
                " source_ip TEXT NOT NULL, request_id TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
                "INSERT INTO audit_v6 SELECT * FROM audit; DROP TABLE audit;"
                "ALTER TABLE audit_v6 RENAME TO audit; PRAGMA user_version = 6");
    char *before = raw_rows(f);
    assert_true(raw_outcome_refused(f, "maybe"));

    fb_err err = {{0}};
    if (fb_store_open(f->tmp, &f->st, &err) < 0)
        fail_msg("fb_store_open: %s", err.msg);
    assert_true(fb_store_schema_version(f->st) >= 7);
    assert_int_equal(raw_ll(f, "SELECT count(*) FROM sqlite_schema WHERE name = 'audit' AND sql LIKE "
                               "'%outcome = ''allowed'' OR outcome = ''denied'' OR outcome = ''error''%'"),
                     1);
    char *after = raw_rows(f);
    assert_string_equal(after, before);
    free(before);
    free(after);
    verify_ok(f->st, N_ENTRIES);
    append_standard(f->st, N_ENTRIES + 1);
    verify_ok(f->st, N_ENTRIES + 1);

    static const char *const refused[] = {"maybe", "Allowed", "allowed ", "", "denied\n"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        if (!raw_outcome_refused(f, refused[i]))
            fail_msg("outcome '%s' was accepted", refused[i]);
    static const char *const accepted[] = {"allowed", "denied", "error"};
    for (size_t i = 0; i < 3; i++)
        assert_false(raw_outcome_refused(f, accepted[i]));
}

int main(void)
{
#define T(fn, setup) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_empty_log_verifies_and_creates_no_key, setup_empty),
        T(test_append_builds_a_chain, setup_log),
        T(test_null_fields_become_empty, setup_empty),
        T(test_bad_outcome_refused, setup_empty),
        T(test_fields_are_capped_and_valid_utf8, setup_empty),
        cmocka_unit_test(test_edit_of_any_field_is_found),
        T(test_edit_of_first_and_last_entries_is_found, setup_log),
        T(test_edit_of_stored_hashes_is_found, setup_log),
        T(test_edit_of_prev_hash_is_found, setup_log),
        T(test_type_change_is_found, setup_log),
        T(test_deleted_middle_entry_is_found, setup_log),
        T(test_deleted_first_entry_is_found, setup_log),
        T(test_deleted_and_renumbered_is_found, setup_log),
        T(test_truncated_tail_is_found, setup_log),
        T(test_truncated_everything_is_found, setup_log),
        T(test_truncation_with_head_rewritten_is_found, setup_log),
        T(test_truncation_with_head_mac_copied_is_found, setup_log),
        T(test_forged_entry_inserted_in_the_middle_is_found, setup_log),
        T(test_forged_entry_appended_is_found, setup_log),
        T(test_inserted_seq_zero_is_found, setup_log),
        T(test_swapped_entries_are_found, setup_log),
        T(test_swapped_seq_numbers_are_found, setup_log),
        T(test_head_tampering_is_found, setup_log),
        T(test_head_seq_raised_is_found, setup_log),
        T(test_deleted_head_is_found, setup_log),
        T(test_missing_key_is_reported, setup_log),
        T(test_wrong_key_is_reported, setup_log),
        T(test_key_permissions_are_checked, setup_log),
        T(test_damaged_key_is_reported, setup_log),
        T(test_key_symlink_is_refused, setup_log),
        T(test_concurrent_appends_one_store, setup_empty),
        T(test_concurrent_appends_two_stores, setup_empty),
        T(test_concurrent_pairs_stay_together, setup_empty),
        T(test_begun_entry_keeps_its_place, setup_empty),
        T(test_begun_entry_failure_is_reported_at_its_end, setup_log),
        T(test_concurrent_begun_and_plain_appends, setup_empty),
        T(test_query_filters, setup_log),
        T(test_query_time_range, setup_log),
        cmocka_unit_test(test_normalize_time),
        T(test_export_json_lines, setup_log),
        T(test_export_pages_through_a_long_log, setup_empty),
        T(test_export_write_error_is_reported, setup_log),
        T(test_upgrade_to_7_keeps_the_log_and_its_check, setup_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
