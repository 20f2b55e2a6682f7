/*
 * sessions.c - the console's sessions: password login, session tokens,
 * expiry, the per-user limit, logout, and the failed-login limits (core.h).
 *
 * Why a token and not a signed cookie: a session must end the moment it is
 * logged out, evicted or its user disabled, and a row that is gone cannot
 * be replayed.  Only the token's BLAKE2b-256 digest is stored (256 random
 * bits need no slow hash), so the database alone opens no session.  The
 * CSRF token is BLAKE2b keyed with the raw token: the gateway can recompute
 * it for each request, nothing stores it, and it cannot be derived without
 * the cookie an attacker's page cannot read.
 *
 * Failed logins are counted in fixed 15-minute windows, per username and
 * per source address, in a small table in memory (this process's; a
 * restart forgets it, which costs an attacker a restart they cannot
 * cause).  Beyond the limit a login is refused before argon2id runs, so
 * guessing is slowed and so is burning the gateway's CPU; the first refusal
 * of each window is audited, the rest only logged, so a flood cannot fill
 * the audit log either.
 *
 * Expired sessions are deleted (and each expiry audited) when one is
 * presented, and by a sweep that logins and authentications run at most
 * once a second.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "auth/auth.h"
#include "core/internal.h"
#include "store/sessions.h"

#define TOKEN_PREFIX "fbs_"
#define TOKEN_RAW 32
#define TOKEN_B64 43 /* 32 bytes, base64url without padding */
#define FAIL_WINDOW_NS (15ull * 60 * 1000000000ull)
#define FAIL_SLOTS 1024
#define ADDRESS_FACTOR 4

/* ---- failed-login windows ------------------------------------------------------- */

typedef struct fail_slot {
    char key[96];           /* "u:<username>" or "a:<address>"; "" = free */
    uint64_t start_ns;      /* the window's start (monotonic) */
    unsigned fails;
    bool refusal_audited;
} fail_slot;

static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static fail_slot fail_table[FAIL_SLOTS];

/* The slot for key (lock held): found, or a free or stale one, or the
 * oldest window's (which is forgotten). */
static fail_slot *fail_find(const char *key, uint64_t now, bool create)
{
    fail_slot *spare = NULL;
    for (size_t i = 0; i < FAIL_SLOTS; i++) {
        fail_slot *s = &fail_table[i];
        bool stale = !s->key[0] || now - s->start_ns >= FAIL_WINDOW_NS;
        if (s->key[0] && strcmp(s->key, key) == 0) {
            if (stale) {
                s->fails = 0;
                s->refusal_audited = false;
                s->start_ns = now;
            }
            return s;
        }
        if (!spare || (stale && spare->key[0] && now - spare->start_ns < FAIL_WINDOW_NS) ||
            (!stale && spare->key[0] && s->start_ns < spare->start_ns))
            spare = s;
    }
    if (!create)
        return NULL;
    memset(spare, 0, sizeof *spare);
    snprintf(spare->key, sizeof spare->key, "%s", key);
    spare->start_ns = now;
    return spare;
}

/* Seconds until key's window ends if it is over limit, else 0; *first is
 * true for the first refusal of the window. */
static int fail_over(const char *key, unsigned limit, bool *first)
{
    uint64_t now = fb_time_monotonic_ns();
    pthread_mutex_lock(&fail_mu);
    fail_slot *s = fail_find(key, now, false);
    int wait = 0;
    if (s && s->fails >= limit) {
        wait = (int)((s->start_ns + FAIL_WINDOW_NS - now) / 1000000000ull) + 1;
        *first = *first || !s->refusal_audited;
        s->refusal_audited = true;
    }
    pthread_mutex_unlock(&fail_mu);
    return wait;
}

static void fail_note(const char *key)
{
    pthread_mutex_lock(&fail_mu);
    fail_find(key, fb_time_monotonic_ns(), true)->fails++;
    pthread_mutex_unlock(&fail_mu);
}

static void fail_clear(const char *key)
{
    pthread_mutex_lock(&fail_mu);
    fail_slot *s = fail_find(key, fb_time_monotonic_ns(), false);
    if (s)
        memset(s, 0, sizeof *s);
    pthread_mutex_unlock(&fail_mu);
}

/* ---- ending sessions ----------------------------------------------------------------- */

/* Audits each ended session as its user ("user:<id>"). */
static void audit_ends(fb_core *c, const fb_caller *caller, const fb_session_end *ends, size_t n, const char *action,
                       const char *reason)
{
    for (size_t i = 0; i < n; i++) {
        fb_caller as = {0};
        if (caller)
            as = *caller;
        snprintf(as.actor, sizeof as.actor, "user:%s", ends[i].user_id);
        fb_core_audit(c, &as, "session", ends[i].id, action, "allowed", reason);
    }
}

static void sweep(fb_core *c, const fb_caller *caller, bool force)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static uint64_t last_ns;
    uint64_t now = fb_time_monotonic_ns();
    pthread_mutex_lock(&mu);
    bool due = force || last_ns == 0 || now - last_ns >= 1000000000ull;
    if (due)
        last_ns = now;
    pthread_mutex_unlock(&mu);
    if (!due)
        return;
    char at[FB_TIME_MAX];
    fb_time_now(at);
    fb_session_end *ended = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    if (fb_store_session_expire(c->store, at, &ended, &n, &e) < 0) {
        fb_log("error", caller ? caller->request_id : NULL, "cannot expire sessions", json_pack("{s:s}", "error", e.msg));
        return;
    }
    audit_ends(c, caller, ended, n, "expire", "the session's lifetime ended");
    free(ended);
}

/* ---- tokens ------------------------------------------------------------------------------ */

static void token_digest(const char *token, size_t len, uint8_t out[FB_SESSION_DIGEST_BYTES])
{
    crypto_generichash(out, FB_SESSION_DIGEST_BYTES, (const unsigned char *)token, len, NULL, 0);
}

/* The CSRF token of a session: BLAKE2b keyed with the raw token bytes. */
static int csrf_of(const char *token, size_t len, char out[FB_SESSION_CSRF_MAX])
{
    unsigned char raw[TOKEN_RAW], mac[32];
    size_t got = 0;
    const char *b64 = token + strlen(TOKEN_PREFIX);
    int rc = sodium_base642bin(raw, sizeof raw, b64, len - strlen(TOKEN_PREFIX), NULL, &got, NULL,
                               sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (rc == 0 && got == TOKEN_RAW)
        rc = crypto_generichash(mac, sizeof mac, (const unsigned char *)"forgebox csrf v1", 16, raw, sizeof raw);
    else
        rc = -1;
    if (rc == 0)
        sodium_bin2base64(out, FB_SESSION_CSRF_MAX, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    return rc;
}

static bool token_well_formed(const char *t, size_t len)
{
    size_t p = strlen(TOKEN_PREFIX);
    if (len != p + TOKEN_B64 || memcmp(t, TOKEN_PREFIX, p) != 0)
        return false;
    for (size_t i = p; i < len; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_'))
            return false;
    }
    return true;
}

static json_t *session_json(const char *session_id, const char *csrf, const fb_user *u, const char *expires_at)
{
    json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s}}", "session_id", session_id, "csrf_token", csrf, "user",
                          "id", u->id, "username", u->username, "team_id", u->team_id, "role", fb_role_name(u->role));
    /* What the console may offer (the API still decides each request). */
    if (o)
        json_object_set_new(o, "permissions", fb_perms_to_json(fb_role_perms(u->role)));
    if (o && expires_at)
        json_object_set_new(o, "expires_at", json_string(expires_at));
    return o;
}

/* ---- login ---------------------------------------------------------------------------------- */

/* The failed-login limits for this attempt: 0, or -1 (QUOTA) with the wait. */
static int login_limited(fb_core *c, fb_caller *caller, const char *ukey, const char *akey, int *retry,
                         fb_core_err *err)
{
    unsigned lim = (unsigned)c->cfg->console.max_login_failures;
    bool first = false;
    int wu = fail_over(ukey, lim, &first);
    int wa = fail_over(akey, lim * ADDRESS_FACTOR, &first);
    if (wu == 0 && wa == 0)
        return 0;
    *retry = wu > wa ? wu : wa;
    const char *why = wu ? "too many failed logins for this user" : "too many failed logins from this address";
    if (first)
        fb_core_audit(c, caller, "session", "sessions", "login", "denied", why);
    else
        fb_log("warn", caller->request_id, "login refused (rate-limited)",
               json_pack("{s:s, s:s}", "ip", caller->source_ip, "reason", why));
    return fb_core_fail(err, FB_CORE_QUOTA, "%s; try again in %d s", why, *retry);
}

/* Creates the session row for a checked user; fills token and JSON. */
static int open_session(fb_core *c, fb_caller *caller, const fb_user *u, char token[FB_SESSION_TOKEN_MAX],
                        json_t **out, fb_core_err *err)
{
    unsigned char raw[TOKEN_RAW];
    fb_session_record rec;
    memset(&rec, 0, sizeof rec);
    int st = FB_STORE_ECOLLISION;
    fb_session_end *evicted = NULL;
    size_t nev = 0;
    fb_err e = {{0}};
    struct timespec now = fb_time_now_ts();
    for (int attempt = 0; attempt < 3 && st == FB_STORE_ECOLLISION; attempt++) {
        randombytes_buf(raw, sizeof raw);
        memcpy(token, TOKEN_PREFIX, strlen(TOKEN_PREFIX));
        sodium_bin2base64(token + strlen(TOKEN_PREFIX), FB_SESSION_TOKEN_MAX - strlen(TOKEN_PREFIX), raw, sizeof raw,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        core_new_id("ses_", rec.id, sizeof rec.id);
        token_digest(token, strlen(token), rec.token_hash);
        snprintf(rec.user_id, sizeof rec.user_id, "%s", u->id);
        fb_time_format(&now, rec.created_at);
        fb_time_format_after(now, (int64_t)c->cfg->console.session_ttl_s, rec.expires_at);
        snprintf(rec.source_ip, sizeof rec.source_ip, "%s", caller->source_ip);
        st = fb_store_session_insert(c->store, &rec, (unsigned)c->cfg->console.max_sessions_per_user, &evicted,
                                     &nev, &e);
    }
    sodium_memzero(raw, sizeof raw);
    char csrf[FB_SESSION_CSRF_MAX];
    if (st < 0 || csrf_of(token, strlen(token), csrf) < 0) {
        sodium_memzero(token, FB_SESSION_TOKEN_MAX);
        fb_core_audit(c, caller, "session", "sessions", "login", "error", "the session could not be stored");
        fb_log("error", caller->request_id, "cannot store a session", json_pack("{s:s}", "error", e.msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    char why[96];
    snprintf(why, sizeof why, "more than %llu sessions for this user",
             (unsigned long long)c->cfg->console.max_sessions_per_user);
    audit_ends(c, caller, evicted, nev, "evict", why);
    free(evicted);
    char reason[160];
    snprintf(reason, sizeof reason, "password; session %s", rec.id);
    fb_core_audit(c, caller, "session", rec.id, "login", "allowed", reason);
    *out = session_json(rec.id, csrf, u, rec.expires_at);
    sodium_memzero(csrf, sizeof csrf);
    return 0;
}

int fb_core_session_login(fb_core *c, fb_caller *caller, const char *username, const char *password,
                          char token_out[FB_SESSION_TOKEN_MAX], json_t **out, int *retry_after_s, fb_core_err *err)
{
    *out = NULL;
    *retry_after_s = 0;
    token_out[0] = '\0';
    snprintf(caller->actor, sizeof caller->actor, "anonymous");
    sweep(c, caller, false);
    char ukey[96], akey[96];
    snprintf(ukey, sizeof ukey, "u:%.64s", username ? username : "");
    snprintf(akey, sizeof akey, "a:%s", caller->source_ip);
    if (login_limited(c, caller, ukey, akey, retry_after_s, err) < 0)
        return -1;
    fb_principal p;
    fb_auth_fail why = FB_AUTH_FAIL_NONE;
    fb_err e = {{0}};
    int rc = fb_auth_password_login(c->store, username, password, &p, &why, &e);
    if (rc < 0 && why == FB_AUTH_FAIL_ERROR) {
        fb_core_audit(c, caller, "session", "sessions", "login", "error", "the login could not be decided");
        fb_log("error", caller->request_id, "login could not be decided", json_pack("{s:s}", "error", e.msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    if (rc < 0) {
        fail_note(ukey);
        fail_note(akey);
        char reason[160];
        snprintf(reason, sizeof reason, "%s (username \"%.64s\")", fb_auth_fail_name(why), username ? username : "");
        fb_core_audit(c, caller, "session", "sessions", "login", "denied", reason);
        fb_core_metrics_auth_failure();
        return fb_core_fail(err, FB_CORE_UNAUTHORIZED, "wrong username or password");
    }
    fail_clear(ukey);
    fb_user u;
    if (fb_auth_user_get(c->store, p.user_id, &u, &e) != FB_AUTH_OK)
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    snprintf(caller->actor, sizeof caller->actor, "user:%s", u.id);
    caller->who = p;
    return open_session(c, caller, &u, token_out, out, err);
}

/* ---- authentication ------------------------------------------------------------------------------ */

static int refuse(fb_core_err *err, const char **reason, const char *why)
{
    *reason = why;
    fb_core_metrics_auth_failure();
    return fb_core_fail(err, FB_CORE_UNAUTHORIZED, "no valid session (log in again)");
}

int fb_core_session_authenticate(fb_core *c, fb_caller *caller, const char *token, size_t len, const char **reason,
                                 fb_core_err *err)
{
    memset(&caller->who, 0, sizeof caller->who);
    caller->actor[0] = caller->session_id[0] = caller->csrf[0] = caller->session_expires_at[0] = '\0';
    caller->granted = 0;
    if (sodium_init() < 0)
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (libsodium)");
    if (!token_well_formed(token, len))
        return refuse(err, reason, "malformed");
    uint8_t digest[FB_SESSION_DIGEST_BYTES];
    token_digest(token, len, digest);
    fb_session_record rec;
    fb_err e = {{0}};
    int st = fb_store_session_get(c->store, digest, &rec, &e);
    if (st == FB_STORE_ENOTFOUND)
        return refuse(err, reason, "unknown");
    if (st < 0) {
        *reason = "error";
        fb_log("error", caller->request_id, "session lookup failed", json_pack("{s:s}", "error", e.msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    struct timespec exp, now = fb_time_now_ts();
    if (fb_time_parse(rec.expires_at, &exp) < 0 || fb_time_cmp(&exp, &now) <= 0) {
        sweep(c, caller, true);
        return refuse(err, reason, "expired");
    }
    sweep(c, caller, false); /* after the lookup: a presented session is told it expired */
    fb_user u;
    if (fb_auth_user_get(c->store, rec.user_id, &u, &e) != FB_AUTH_OK || u.disabled)
        return refuse(err, reason, "disabled");
    if (csrf_of(token, len, caller->csrf) < 0)
        return refuse(err, reason, "malformed");
    snprintf(caller->who.user_id, sizeof caller->who.user_id, "%s", u.id);
    snprintf(caller->who.team_id, sizeof caller->who.team_id, "%s", u.team_id);
    caller->who.role = u.role;
    caller->who.is_admin = u.role == FB_ROLE_ADMIN;
    caller->who.scopes = FB_PERM_ALL; /* no key: the role alone decides (policy.h) */
    caller->who.org_enabled = c->cfg->network.allow.count > 0 ? FB_PERM_NETWORK_INTERNET : 0;
    snprintf(caller->actor, sizeof caller->actor, "user:%s", u.id);
    snprintf(caller->session_id, sizeof caller->session_id, "%s", rec.id);
    snprintf(caller->session_expires_at, sizeof caller->session_expires_at, "%s", rec.expires_at);
    *reason = "session";
    return 0;
}

int fb_core_session_current(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err)
{
    if (!caller->session_id[0])
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no session: this request was authenticated by an API key");
    fb_user u;
    fb_err e = {{0}};
    if (fb_auth_user_get(c->store, caller->who.user_id, &u, &e) != FB_AUTH_OK)
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such user any more");
    *out = session_json(caller->session_id, caller->csrf, &u,
                        caller->session_expires_at[0] ? caller->session_expires_at : NULL);
    return *out ? 0 : fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
}

int fb_core_session_logout(fb_core *c, fb_caller *caller, fb_core_err *err)
{
    if (!caller->session_id[0])
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no session: this request was authenticated by an API key");
    fb_err e = {{0}};
    int st = fb_store_session_delete(c->store, caller->session_id, &e);
    if (st < 0 && st != FB_STORE_ENOTFOUND) {
        fb_core_audit(c, caller, "session", caller->session_id, "logout", "error", "the session could not be ended");
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    fb_core_audit(c, caller, "session", caller->session_id, "logout", "allowed", "");
    return 0;
}
