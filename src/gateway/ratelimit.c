/*
 * ratelimit.c - a token bucket per API key (gw.h).
 *
 * Buckets live in a small open hash keyed by key id and refill lazily on
 * use.  The table is bounded: when full, the oldest-touched bucket is
 * recycled, which can only ever make a key's bucket start full again - the
 * limiter degrades towards "allow", never towards refusing good callers.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"

#define BUCKETS 4096

typedef struct bucket {
    char key[48];
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
    free(rl);
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

int gw_ratelimit_take(gw_ratelimit *rl, const char *key_id)
{
    uint64_t now = fb_now_ns();
    pthread_mutex_lock(&rl->lock);
    uint32_t h = hash(key_id) % BUCKETS;
    bucket *victim = NULL, *b = NULL;
    for (int probe = 0; probe < 8; probe++) {
        bucket *c = &rl->b[(h + (uint32_t)probe) % BUCKETS];
        if (c->key[0] && strcmp(c->key, key_id) == 0) {
            b = c;
            break;
        }
        if (!victim || c->last_ns < victim->last_ns)
            victim = c;
    }
    if (!b) {
        b = victim;
        snprintf(b->key, sizeof b->key, "%s", key_id);
        b->tokens = rl->burst;
        b->last_ns = now;
    }
    double elapsed = (double)(now - b->last_ns) / 1e9;
    b->tokens = fmin(rl->burst, b->tokens + elapsed * rl->rate);
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
