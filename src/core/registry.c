/*
 * registry.c - the table of live sandboxes (internal.h).
 *
 * A small array under one mutex.  Entries are reference-counted: the
 * table holds one reference while a sandbox is live, and every lookup
 * or transfer holds one more (an exec holds none: it reads the sandbox's
 * event log, which outlives the sandbox).  Retiring (delete, TTL,
 * shutdown) kills the sandbox first, which ends its execs, marks it dying
 * so that no new lookup finds it, and drops the table's reference; the
 * last holder finalises it.  So the TTL reaper, DELETE and shutdown never wait for a
 * command or a client, and nobody ever frees an entry another thread is
 * still using (the creator, in particular, holds its reference from the
 * reservation until its answer is written: finding 7 of issue 6).
 *
 * Quotas are the store's (fb_store_sandbox_reserve): the reservation is a
 * "creating" record counted with every other gateway's and node's; the
 * table here is for lookups.  A dying entry keeps its record live until
 * finalised (core_sandbox_finalise records its end), so it still counts
 * against its team's quota: a sandbox is off the books only once gone.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

void core_registry_init(core_registry *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

/* The team's quota is reserved in the store, not counted here: the store
 * counts the live records of every gateway and node sharing it and
 * inserts this one as "creating" in the same writing transaction
 * (fb_store_sandbox_reserve), so two creates racing for a team's last
 * slot cannot both win, on one gateway or on several. */
int core_registry_reserve(fb_core *c, core_sandbox *s, char *reason, size_t reason_cap)
{
    return core_registry_reserve_on(c, s, NULL, reason, reason_cap);
}

int core_registry_reserve_on(fb_core *c, core_sandbox *s, const char *node_id, char *reason, size_t reason_cap)
{
    char scratch[160];
    if (!reason || !reason_cap) {
        reason = scratch;
        reason_cap = sizeof scratch;
    }
    reason[0] = '\0';
    const fb_config *cfg = c->cfg;
    fb_quota_limits lim = {cfg->quotas.max_sandboxes_per_team, cfg->quotas.max_memory_mib_per_team,
                           cfg->quotas.max_vcpus_per_team};
    /* Provisional times; fb_store_sandbox_activate writes the real ones
     * once the sandbox is up. */
    struct timespec now = fb_time_now_ts();
    char created[FB_TIME_MAX], expires[FB_TIME_MAX];
    fb_time_format(&now, created);
    fb_time_format_after(now, (int64_t)(s->ttl_s <= INT32_MAX ? s->ttl_s : INT32_MAX), expires);
    /* A sandbox this gateway boots itself dies with it: its reservation is
     * made durable by the audit commit that comes before any answer about
     * it (store/sandboxes.h, "Durability").  A node's outlives us. */
    fb_sandbox_record rec = {s->id,       s->team_id, s->key_id, s->backend, s->memory_mib,
                             s->vcpus,    created,    expires,   .local = node_id == NULL && !core_remote(c)};
    fb_err e = {{0}};
    int q = fb_store_sandbox_reserve(c->store, &rec, node_id, &lim, reason, reason_cap, &e);
    if (q == 1)
        return 1;
    if (q != 0) {
        fb_log("error", NULL, "cannot reserve a sandbox in the store",
               json_pack("{s:s, s:s}", "sandbox", s->id, "error", e.msg));
        snprintf(reason, reason_cap, "the store could not reserve the sandbox (%s)", fb_store_status_name(q));
        return -1;
    }
    core_registry *r = &c->reg;
    pthread_mutex_lock(&r->lock);
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        core_sandbox **ni = realloc(r->items, ncap * sizeof *ni);
        if (!ni) {
            pthread_mutex_unlock(&r->lock);
            fb_store_sandbox_set_state(c->store, s->id, "failed", &e);
            snprintf(reason, reason_cap, "out of memory");
            return -1;
        }
        r->items = ni;
        r->cap = ncap;
    }
    s->refs = 2; /* the table's and the creator's */
    r->items[r->n++] = s;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

static ssize_t find(core_registry *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->items[i]->id, id) == 0)
            return (ssize_t)i;
    return -1;
}

static void unlist(core_registry *r, core_sandbox *s)
{
    for (size_t k = 0; k < r->n; k++)
        if (r->items[k] == s) {
            r->items[k] = r->items[--r->n];
            return;
        }
}

void core_registry_activate(core_registry *r, core_sandbox *s, fb_sandbox *sb, const char *created_at,
                            const char *expires_at, uint64_t expires_ns)
{
    pthread_mutex_lock(&r->lock);
    snprintf(s->id, sizeof s->id, "%s", fb_sandbox_id(sb));
    snprintf(s->created_at, sizeof s->created_at, "%s", created_at);
    snprintf(s->expires_at, sizeof s->expires_at, "%s", expires_at);
    s->expires_ns = expires_ns;
    s->sb = sb;
    pthread_mutex_unlock(&r->lock);
}

void core_registry_drop(core_registry *r, core_sandbox *s)
{
    pthread_mutex_lock(&r->lock);
    unlist(r, s);
    pthread_mutex_unlock(&r->lock);
    free(s);
}

void core_registry_release(fb_core *c, core_sandbox *s)
{
    fb_err e = {{0}};
    if (fb_store_sandbox_set_state(c->store, s->id, "failed", &e) < 0)
        fb_log("error", NULL, "cannot give a sandbox reservation back",
               json_pack("{s:s, s:s}", "sandbox", s->id, "error", e.msg));
    core_registry_drop(&c->reg, s);
}

core_sandbox *core_registry_get(core_registry *r, const char *id)
{
    pthread_mutex_lock(&r->lock);
    ssize_t i = find(r, id);
    core_sandbox *s = i >= 0 && !r->items[i]->dying && r->items[i]->sb ? r->items[i] : NULL;
    if (s)
        s->refs++;
    pthread_mutex_unlock(&r->lock);
    return s;
}

void core_registry_put(fb_core *c, core_sandbox *s)
{
    core_registry *r = &c->reg;
    pthread_mutex_lock(&r->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&r->lock);
    if (!last)
        return;
    /* Only a dying entry can lose its last reference (the table holds one
     * otherwise); nobody can find it any more, so no lock is needed to
     * destroy it.  It leaves the table last, freeing the quota. */
    core_sandbox_finalise(c, s);
    pthread_mutex_lock(&r->lock);
    unlist(r, s);
    pthread_mutex_unlock(&r->lock);
    free(s);
}

bool core_registry_retire(fb_core *c, core_sandbox *s, const char *end_state)
{
    core_registry *r = &c->reg;
    pthread_mutex_lock(&r->lock);
    if (s->dying || !s->sb) {
        pthread_mutex_unlock(&r->lock);
        return false;
    }
    s->dying = true;
    snprintf(s->end_state, sizeof s->end_state, "%s", end_state);
    /* Kill first: every exec and transfer in flight ends now (the
     * sandbox fails them with "killed"), and lets go. */
    fb_sandbox_kill(s->sb);
    pthread_mutex_unlock(&r->lock);
    core_registry_put(c, s); /* the table's reference */
    return true;
}

static size_t snapshot(core_registry *r, uint64_t now_ns, bool expired_only, core_sandbox **out, size_t max)
{
    size_t k = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n && k < max; i++) {
        core_sandbox *s = r->items[i];
        if (s->dying || !s->sb || (expired_only && s->expires_ns > now_ns))
            continue;
        s->refs++;
        out[k++] = s;
    }
    pthread_mutex_unlock(&r->lock);
    return k;
}

size_t core_registry_expired(core_registry *r, uint64_t now_ns, core_sandbox **out, size_t max)
{
    return snapshot(r, now_ns, true, out, max);
}

size_t core_registry_all(core_registry *r, core_sandbox **out, size_t max)
{
    return snapshot(r, 0, false, out, max);
}

size_t core_registry_count(core_registry *r, const char *backend)
{
    size_t k = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        if (!backend || strcmp(r->items[i]->backend, backend) == 0)
            k++;
    pthread_mutex_unlock(&r->lock);
    return k;
}

size_t core_registry_size(core_registry *r)
{
    size_t k = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n; i++)
        k += r->items[i]->sb != NULL;
    pthread_mutex_unlock(&r->lock);
    return k;
}

/* Appends s as up and running (r->lock held). */
static int add_active_locked(core_registry *r, core_sandbox *s, fb_sandbox *sb, const char *created_at,
                             const char *expires_at, uint64_t expires_ns)
{
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        core_sandbox **ni = realloc(r->items, ncap * sizeof *ni);
        if (!ni)
            return -1;
        r->items = ni;
        r->cap = ncap;
    }
    snprintf(s->created_at, sizeof s->created_at, "%s", created_at);
    snprintf(s->expires_at, sizeof s->expires_at, "%s", expires_at);
    s->expires_ns = expires_ns;
    s->sb = sb;
    s->refs = 2;
    r->items[r->n++] = s;
    return 0;
}

core_sandbox *core_registry_adopt(core_registry *r, core_sandbox *s, fb_sandbox *sb, const char *created_at,
                                  const char *expires_at, uint64_t expires_ns)
{
    pthread_mutex_lock(&r->lock);
    ssize_t i = find(r, s->id);
    core_sandbox *in = NULL;
    if (i >= 0) {
        in = r->items[i]->dying || !r->items[i]->sb ? NULL : r->items[i];
    } else if (add_active_locked(r, s, sb, created_at, expires_at, expires_ns) == 0) {
        s->refs = 1; /* the table's; the caller's follows */
        in = s;
    }
    if (in)
        in->refs++;
    pthread_mutex_unlock(&r->lock);
    return in;
}
