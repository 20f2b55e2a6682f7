/*
 * keycache.c - API keys verified a moment ago, remembered in this process
 * (internal.h), so that a busy key does not cost a store read, a pepper
 * file read and a digest on every request.
 *
 * What is remembered is the outcome of a full verification (the secret
 * matched the stored digest, the key was neither revoked nor expired, its
 * owner not disabled): the principal, the key's expiry, and a keyed hash of
 * the secret that was presented (under a random key of this process, never
 * stored anywhere), so that only the same secret hits.  A hit is refused -
 * the request takes the full path, which then says exactly why it fails -
 * when:
 *   - the entry is older than the TTL (FB_AUTH_KEYCACHE_TTL_MS; this
 *     bounds what a change nobody announced can take to show: see below);
 *   - the key's expiry has been reached, checked against the clock on
 *     every hit, so a key stops working at its second;
 *   - anything that can turn a verified key away has happened in this
 *     process since the entry's verification began: revoking keys (with
 *     their descendants) and disabling or enabling a user bump one
 *     generation counter synchronously, before they return, and an entry
 *     of an older generation never hits.  The generation is read before
 *     the store is, so a verification that raced a revocation is filed
 *     under the old generation and never used.
 * Failures are never remembered.
 *
 * A change made by another process - another gateway on the same
 * PostgreSQL store, or `forgebox` admin verbs - is announced by the store
 * (NOTIFY, fb_store_watch_identity), and the gateway flushes on it
 * (fb_auth_key_cache_flush), also while the announcements may be missed
 * (the listener's connection down).  Only a hand edit of the database is
 * left to the TTL.
 *
 * The TTL is FB_AUTH_KEYCACHE_TTL_MS unless FORGEBOX_KEYCACHE_TTL_MS (0 to
 * 600000, read once) says otherwise: a tuning knob, and what lets a test
 * tell a notification from an expiry without a timing threshold.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/internal.h"
#include "common/time.h"

#define SLOTS 512 /* direct-mapped by key id */

typedef struct kc_entry {
    const fb_store *st;
    char key_id[FB_ID_MAX];
    uint8_t tag[crypto_generichash_BYTES]; /* keyed hash of id and secret */
    fb_principal who;
    bool expires;
    struct timespec expires_at;
    uint64_t gen;
    uint64_t filled_ns;
    bool used;
} kc_entry;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static kc_entry slots[SLOTS];
static atomic_uint_fast64_t generation = 1;
static uint8_t tag_key[crypto_generichash_KEYBYTES];
static pthread_once_t tag_once = PTHREAD_ONCE_INIT;

static void tag_key_init(void)
{
    randombytes_buf(tag_key, sizeof tag_key);
}

static uint64_t ttl_ns = (uint64_t)FB_AUTH_KEYCACHE_TTL_MS * 1000000u;
static pthread_once_t ttl_once = PTHREAD_ONCE_INIT;

/* FORGEBOX_KEYCACHE_TTL_MS, when a whole number of milliseconds in range;
 * anything else keeps the default. */
static void ttl_init(void)
{
    const char *v = getenv("FORGEBOX_KEYCACHE_TTL_MS");
    if (!v || !*v)
        return;
    char *end = NULL;
    errno = 0;
    unsigned long long ms = strtoull(v, &end, 10);
    if (errno == 0 && end && *end == '\0' && v[0] >= '0' && v[0] <= '9' && ms <= 600000)
        ttl_ns = (uint64_t)ms * 1000000u;
}

static void tag_of(const char *key_id, const uint8_t secret[KEY_SECRET_BYTES], uint8_t out[crypto_generichash_BYTES])
{
    pthread_once(&tag_once, tag_key_init);
    crypto_generichash_state s;
    crypto_generichash_init(&s, tag_key, sizeof tag_key, crypto_generichash_BYTES);
    crypto_generichash_update(&s, (const uint8_t *)key_id, strlen(key_id) + 1);
    crypto_generichash_update(&s, secret, KEY_SECRET_BYTES);
    crypto_generichash_final(&s, out, crypto_generichash_BYTES);
    sodium_memzero(&s, sizeof s);
}

static kc_entry *slot_of(const char *key_id)
{
    uint32_t h = 2166136261u; /* FNV-1a: ids are random, any spread will do */
    for (const char *p = key_id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return &slots[h % SLOTS];
}

uint64_t fb_auth_keycache_generation(void)
{
    return atomic_load(&generation);
}

void fb_auth_keycache_invalidate(void)
{
    atomic_fetch_add(&generation, 1);
}

void fb_auth_key_cache_flush(void)
{
    fb_auth_keycache_invalidate();
}

bool fb_auth_keycache_get(const fb_store *st, const char *key_id, const uint8_t secret[KEY_SECRET_BYTES],
                          fb_principal *out)
{
    uint8_t tag[crypto_generichash_BYTES];
    tag_of(key_id, secret, tag);
    pthread_once(&ttl_once, ttl_init);
    uint64_t now = fb_time_monotonic_ns();
    struct timespec wall = fb_time_now_ts();
    bool hit = false;
    pthread_mutex_lock(&mu);
    kc_entry *e = slot_of(key_id);
    if (e->used && e->st == st && strcmp(e->key_id, key_id) == 0 && e->gen == atomic_load(&generation) &&
        now - e->filled_ns < ttl_ns &&
        (!e->expires || fb_time_cmp(&wall, &e->expires_at) < 0) && sodium_memcmp(e->tag, tag, sizeof tag) == 0) {
        *out = e->who;
        hit = true;
    }
    pthread_mutex_unlock(&mu);
    sodium_memzero(tag, sizeof tag);
    return hit;
}

void fb_auth_keycache_put(const fb_store *st, const char *key_id, const uint8_t secret[KEY_SECRET_BYTES],
                          const fb_principal *who, const char *expires_at, uint64_t gen)
{
    kc_entry e;
    memset(&e, 0, sizeof e);
    if (expires_at[0]) {
        if (fb_time_parse(expires_at, &e.expires_at) < 0)
            return; /* unreadable: never remembered */
        e.expires = true;
    }
    e.st = st;
    snprintf(e.key_id, sizeof e.key_id, "%s", key_id);
    tag_of(key_id, secret, e.tag);
    e.who = *who;
    e.gen = gen;
    e.filled_ns = fb_time_monotonic_ns();
    e.used = true;
    pthread_mutex_lock(&mu);
    if (gen == atomic_load(&generation))
        *slot_of(key_id) = e;
    pthread_mutex_unlock(&mu);
    sodium_memzero(&e, sizeof e);
}
