/*
 * session.c - Streamable HTTP sessions (mcp.h).
 *
 * A session is what initialize created: its id (sent back in
 * Mcp-Session-Id), the API key that created it (its owner) and the
 * protocol version negotiated.  It holds no credentials and no sandbox:
 * every request still carries and checks its Bearer key, and a session id
 * presented with another key is answered exactly like an unknown one, so
 * a leaked session id is worth nothing without its key and ids of other
 * keys' sessions cannot be probed.
 *
 * The table is small and bounded: FB_MCP_MAX_SESSIONS in all, at most
 * FB_MCP_MAX_SESSIONS_PER_USER per user across their keys (a client that
 * never sends DELETE loses its least recently used session, not the
 * ability to start a new one; minting keys buys no more room), and a
 * session idle for FB_MCP_SESSION_IDLE_S is gone.  A linear scan under one
 * mutex is plenty for a thousand entries at the rate MCP clients start
 * sessions.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "mcp/mcp.h"

typedef struct slot {
    bool used;
    char id[FB_MCP_SESSION_ID_MAX];
    char owner[64];
    char user[64];
    char version[FB_MCP_VERSION_MAX];
    uint64_t last_ns;
} slot;

struct fb_mcp_sessions {
    pthread_mutex_t mu;
    slot slots[FB_MCP_MAX_SESSIONS];
};

#define IDLE_NS ((uint64_t)FB_MCP_SESSION_IDLE_S * 1000000000ull)

fb_mcp_sessions *fb_mcp_sessions_new(void)
{
    fb_mcp_sessions *s = calloc(1, sizeof *s);
    if (s)
        pthread_mutex_init(&s->mu, NULL);
    return s;
}

void fb_mcp_sessions_free(fb_mcp_sessions *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    sodium_memzero(s, sizeof *s);
    free(s);
}

static bool live(const slot *x, uint64_t now)
{
    return x->used && now - x->last_ns < IDLE_NS;
}

int fb_mcp_session_create(fb_mcp_sessions *s, const char *owner, const char *user, const char *version,
                          char id_out[FB_MCP_SESSION_ID_MAX])
{
    uint8_t b[16];
    char hex[33];
    fb_random_bytes(b, sizeof b);
    fb_hex(b, sizeof b, hex);
    uint64_t now = fb_now_ns();
    pthread_mutex_lock(&s->mu);
    slot *free_slot = NULL, *oldest_mine = NULL;
    size_t mine = 0;
    for (size_t i = 0; i < FB_MCP_MAX_SESSIONS; i++) {
        slot *x = &s->slots[i];
        if (!live(x, now)) {
            x->used = false;
            if (!free_slot)
                free_slot = x;
            continue;
        }
        if (strcmp(x->user, user) == 0) {
            mine++;
            if (!oldest_mine || x->last_ns < oldest_mine->last_ns)
                oldest_mine = x;
        }
    }
    slot *use = mine >= FB_MCP_MAX_SESSIONS_PER_USER ? oldest_mine : free_slot;
    if (use) {
        memset(use, 0, sizeof *use);
        use->used = true;
        snprintf(use->id, sizeof use->id, "mcps_%s", hex);
        snprintf(use->owner, sizeof use->owner, "%s", owner);
        snprintf(use->user, sizeof use->user, "%s", user);
        snprintf(use->version, sizeof use->version, "%s", version);
        use->last_ns = now;
        memcpy(id_out, use->id, FB_MCP_SESSION_ID_MAX);
    }
    pthread_mutex_unlock(&s->mu);
    return use ? 0 : -1;
}

/* The live session id of owner, or NULL (under the lock). */
static slot *find(fb_mcp_sessions *s, const char *id, const char *owner, uint64_t now)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= FB_MCP_SESSION_ID_MAX)
        return NULL;
    for (size_t i = 0; i < FB_MCP_MAX_SESSIONS; i++) {
        slot *x = &s->slots[i];
        if (live(x, now) && strlen(x->id) == n && sodium_memcmp(x->id, id, n) == 0)
            return strcmp(x->owner, owner) == 0 ? x : NULL;
    }
    return NULL;
}

bool fb_mcp_session_get(fb_mcp_sessions *s, const char *id, const char *owner, char version[FB_MCP_VERSION_MAX])
{
    uint64_t now = fb_now_ns();
    pthread_mutex_lock(&s->mu);
    slot *x = find(s, id, owner, now);
    if (x) {
        x->last_ns = now;
        memcpy(version, x->version, FB_MCP_VERSION_MAX);
    }
    pthread_mutex_unlock(&s->mu);
    return x != NULL;
}

bool fb_mcp_session_end(fb_mcp_sessions *s, const char *id, const char *owner)
{
    pthread_mutex_lock(&s->mu);
    slot *x = find(s, id, owner, fb_now_ns());
    if (x)
        memset(x, 0, sizeof *x);
    pthread_mutex_unlock(&s->mu);
    return x != NULL;
}
