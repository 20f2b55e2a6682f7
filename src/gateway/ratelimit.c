/*
 * ratelimit.c - token buckets (ratelimit.h).
 *
 * Buckets live in a small open hash keyed by text and refill lazily on
 * use.  The table is bounded: when full, the oldest-touched bucket is
 * recycled, which can only ever make a key's bucket start full again - the
 * limiter degrades towards "allow", never towards refusing good callers.
 * That is why the failure gate adds a global bucket: recycling cannot
 * refill it.
 */
#define _GNU_SOURCE
#include "gateway/ratelimit.h"

#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define BUCKETS 4096

typedef struct bucket {
    char key[64];
    double tokens;
    uint64_t last_ns;
} bucket;

struct gw_ratelimit {
    pthread_mutex_t lock;
    double rate, burst;
    bucket b[BUCKETS];
};

gw_ratelimit *gw_ratelimit_new(double rate_per_s, double burst)
{
    if (!(rate_per_s > 0) || !(burst >= 1))
        return NULL;
    gw_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    pthread_mutex_init(&rl->lock, NULL);
    rl->rate = rate_per_s;
    rl->burst = burst;
    return rl;
}

void gw_ratelimit_free(gw_ratelimit *rl)
{
    if (rl)
        pthread_mutex_destroy(&rl->lock);
    free(rl);
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

int gw_ratelimit_take_at(gw_ratelimit *rl, const char *key, uint64_t now)
{
    pthread_mutex_lock(&rl->lock);
    uint32_t h = hash(key) % BUCKETS;
    bucket *victim = NULL, *b = NULL;
    for (int probe = 0; probe < 8; probe++) {
        bucket *c = &rl->b[(h + (uint32_t)probe) % BUCKETS];
        if (c->key[0] && strncmp(c->key, key, sizeof c->key - 1) == 0) {
            b = c;
            break;
        }
        if (!victim || c->last_ns < victim->last_ns)
            victim = c;
    }
    if (!b) {
        b = victim;
        snprintf(b->key, sizeof b->key, "%s", key);
        b->tokens = rl->burst;
        b->last_ns = now;
    }
    double elapsed = now > b->last_ns ? (double)(now - b->last_ns) / 1e9 : 0.0;
    b->tokens = fmin(rl->burst, b->tokens + elapsed * rl->rate);
    if (now > b->last_ns)
        b->last_ns = now;
    int wait = 0;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else {
        wait = (int)ceil((1.0 - b->tokens) / rl->rate);
        if (wait < 1)
            wait = 1;
    }
    pthread_mutex_unlock(&rl->lock);
    return wait;
}

int gw_ratelimit_take(gw_ratelimit *rl, const char *key)
{
    return gw_ratelimit_take_at(rl, key, fb_now_ns());
}

/* ---- failed authentications ----------------------------------------------------- */

struct gw_failgate {
    gw_ratelimit *per_source;
    gw_ratelimit *global;
};

gw_failgate *gw_failgate_new(double rate_per_s, double burst)
{
    gw_failgate *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->per_source = gw_ratelimit_new(rate_per_s, burst);
    g->global = gw_ratelimit_new(rate_per_s * GW_FAIL_GLOBAL_FACTOR, burst * GW_FAIL_GLOBAL_FACTOR);
    if (!g->per_source || !g->global) {
        gw_failgate_free(g);
        return NULL;
    }
    return g;
}

void gw_failgate_free(gw_failgate *g)
{
    if (!g)
        return;
    gw_ratelimit_free(g->per_source);
    gw_ratelimit_free(g->global);
    free(g);
}

void gw_failgate_source(const char *ip_text, char out[64])
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, ip_text, &a4) == 1) {
        char t[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a4, t, sizeof t);
        snprintf(out, 64, "ip:%s", t);
        return;
    }
    if (inet_pton(AF_INET6, ip_text, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            char t[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &a6.s6_addr[12], t, sizeof t);
            snprintf(out, 64, "ip:%s", t);
            return;
        }
        /* The /64: the interface half is the host's to choose freely. */
        memset(&a6.s6_addr[8], 0, 8);
        char t[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a6, t, sizeof t);
        snprintf(out, 64, "net:%s/64", t);
        return;
    }
    snprintf(out, 64, "other:%.50s", ip_text);
}

int gw_failgate_take_at(gw_failgate *g, const char *ip_text, uint64_t now_ns)
{
    char src[64];
    gw_failgate_source(ip_text, src);
    int wait = gw_ratelimit_take_at(g->per_source, src, now_ns);
    if (wait > 0)
        return wait;
    return gw_ratelimit_take_at(g->global, "global", now_ns);
}

int gw_failgate_take(gw_failgate *g, const char *ip_text)
{
    return gw_failgate_take_at(g, ip_text, fb_now_ns());
}
