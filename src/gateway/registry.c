/*
 * registry.c - the gateway's table of live sandboxes (gw.h).
 *
 * A small array under one mutex: lookups take a reference, deletion marks
 * the entry dying and waits for the references to drain before the caller
 * destroys the sandbox, so an exec in flight never finds its sandbox freed
 * under it.  Per-sandbox use (exec, files) is serialised by the entry's own
 * mutex, so one slow exec blocks only users of the same sandbox.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/gw.h"

void gw_registry_init(gw_registry *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

int gw_registry_reserve(gw_registry *r, gw_sandbox *s, uint64_t max_count, uint64_t max_memory_mib)
{
    pthread_mutex_lock(&r->lock);
    /* Quota check and reservation are one step: two creates racing for
     * the team's last slot cannot both win. */
    uint64_t count = 0, mem = 0;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i]->team_id, s->team_id) == 0) {
            count++;
            mem += r->items[i]->memory_mib;
        }
    if (count + 1 > max_count || mem + s->memory_mib > max_memory_mib) {
        pthread_mutex_unlock(&r->lock);
        return 1;
    }
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        gw_sandbox **ni = realloc(r->items, ncap * sizeof *ni);
        if (!ni) {
            pthread_mutex_unlock(&r->lock);
            return -1;
        }
        r->items = ni;
        r->cap = ncap;
    }
    r->items[r->n++] = s;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

static ssize_t find(gw_registry *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i]->id, id) == 0)
            return (ssize_t)i;
    return -1;
}

void gw_registry_activate(gw_registry *r, gw_sandbox *s, fb_sandbox *sb)
{
    pthread_mutex_lock(&r->lock);
    snprintf(s->id, sizeof s->id, "%s", fb_sandbox_id(sb));
    s->sb = sb;
    pthread_mutex_unlock(&r->lock);
}

void gw_registry_drop(gw_registry *r, gw_sandbox *s)
{
    pthread_mutex_lock(&r->lock);
    ssize_t i = -1;
    for (size_t k = 0; k < r->n; k++)
        if (r->items[k] == s)
            i = (ssize_t)k;
    if (i >= 0)
        r->items[i] = r->items[--r->n];
    pthread_mutex_unlock(&r->lock);
}

gw_sandbox *gw_registry_get(gw_registry *r, const char *id)
{
    pthread_mutex_lock(&r->lock);
    ssize_t i = find(r, id);
    gw_sandbox *s = i >= 0 && !r->items[i]->dying && r->items[i]->sb ? r->items[i] : NULL;
    if (s)
        s->refs++;
    pthread_mutex_unlock(&r->lock);
    return s;
}

void gw_sandbox_put(gw_registry *r, gw_sandbox *s)
{
    pthread_mutex_lock(&r->lock);
    s->refs--;
    pthread_mutex_unlock(&r->lock);
}

gw_sandbox *gw_registry_take(gw_registry *r, const char *id)
{
    pthread_mutex_lock(&r->lock);
    ssize_t i = find(r, id);
    if (i < 0 || r->items[i]->dying || !r->items[i]->sb) {
        pthread_mutex_unlock(&r->lock);
        return NULL;
    }
    gw_sandbox *s = r->items[i];
    s->dying = true;
    /* Wait for lookups in flight (an exec holding it) to finish.  The entry
     * stays in the table meanwhile, so it still counts against its team's
     * quota: a sandbox is only off the books once it is really gone.
     * Callers kill the sandbox first (gw_sandbox_kill), so this is short. */
    while (s->refs > 0) {
        pthread_mutex_unlock(&r->lock);
        usleep(5000);
        pthread_mutex_lock(&r->lock);
    }
    for (size_t k = 0; k < r->n; k++)
        if (r->items[k] == s) {
            r->items[k] = r->items[--r->n];
            break;
        }
    pthread_mutex_unlock(&r->lock);
    return s;
}

void gw_sandbox_kill(gw_registry *r, const char *id)
{
    pthread_mutex_lock(&r->lock);
    ssize_t i = find(r, id);
    if (i >= 0 && r->items[i]->sb && fb_sandbox_pid(r->items[i]->sb) > 0)
        kill(fb_sandbox_pid(r->items[i]->sb), SIGKILL);
    pthread_mutex_unlock(&r->lock);
}

size_t gw_registry_expired(gw_registry *r, uint64_t now_ns, char (*ids)[32], size_t max)
{
    size_t k = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n && k < max; i++)
        if (!r->items[i]->dying && r->items[i]->sb && r->items[i]->expires_ns <= now_ns)
            memcpy(ids[k++], r->items[i]->id, 32);
    pthread_mutex_unlock(&r->lock);
    return k;
}

size_t gw_registry_count(gw_registry *r, const char *backend)
{
    size_t k = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        if (!backend || strcmp(r->items[i]->backend, backend) == 0)
            k++;
    pthread_mutex_unlock(&r->lock);
    return k;
}

size_t gw_registry_ids(gw_registry *r, char (*ids)[32], size_t max)
{
    size_t k = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n && k < max; i++)
        if (r->items[i]->sb)
            memcpy(ids[k++], r->items[i]->id, 32);
    pthread_mutex_unlock(&r->lock);
    return k;
}
