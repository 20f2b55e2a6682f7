/*
 * service.c - the node's registry of the sandboxes it runs for gateways,
 * their execs, the expiry reaper and the node's audit entries
 * (internal.h).
 *
 * The node keeps no user, key or quota: a gateway decided all of that
 * before it asked.  What the node decides itself is its capacity (a full
 * node refuses), each sandbox's deadline (it destroys a sandbox at its
 * expires_at even if every gateway is gone) and which ids it holds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "core/core.h"
#include "node/internal.h"
#include "store/sandboxes.h"

bool node_valid_sb_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= NODE_SB_ID_MAX)
        return false;
    if (!((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= 'A' && id[0] <= 'Z')))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static node_sb *find_locked(fb_node *n, const char *id)
{
    for (node_sb *s = n->sbs; s; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

fb_errc node_sb_reserve(fb_node *n, const char *id, const char *team_id, node_sb **out)
{
    node_sb *s = calloc(1, sizeof *s);
    if (!s)
        return FB_E_NOMEM;
    snprintf(s->id, sizeof s->id, "%s", id);
    snprintf(s->team_id, sizeof s->team_id, "%s", team_id);
    s->refs = 2; /* the registry's and the caller's */
    pthread_mutex_lock(&n->lock);
    fb_errc rc = FB_OK;
    if (n->stopping)
        rc = FB_E_STATE;
    else if (find_locked(n, id))
        rc = FB_E_EXISTS;
    else if (n->count >= n->capacity)
        rc = FB_E_BUSY;
    if (rc == FB_OK) {
        s->next = n->sbs;
        n->sbs = s;
        n->count++;
    }
    pthread_mutex_unlock(&n->lock);
    if (rc != FB_OK)
        free(s);
    else
        *out = s;
    return rc;
}

void node_sb_activate(fb_node *n, node_sb *s, fb_sandbox *sb, const char *created_at, const char *expires_at,
                      const struct timespec *expires)
{
    pthread_mutex_lock(&n->lock);
    snprintf(s->isolation, sizeof s->isolation, "%s", fb_sandbox_isolation(sb));
    snprintf(s->created_at, sizeof s->created_at, "%s", created_at);
    snprintf(s->expires_at, sizeof s->expires_at, "%s", expires_at);
    s->expires = *expires;
    s->sb = sb;
    if (s->gone) /* taken out while it booted (declared down, shutdown) */
        fb_sandbox_kill(sb);
    pthread_cond_broadcast(&n->wake); /* the reaper's next deadline may be this one */
    pthread_mutex_unlock(&n->lock);
}

node_sb *node_sb_get(fb_node *n, const char *id)
{
    pthread_mutex_lock(&n->lock);
    node_sb *s = find_locked(n, id);
    if (s && s->sb)
        s->refs++;
    else
        s = NULL;
    pthread_mutex_unlock(&n->lock);
    return s;
}

static void exec_free(node_exec *e)
{
    if (e->in_fd >= 0)
        close(e->in_fd);
    fb_exec_unref(e->x);
    pthread_mutex_destroy(&e->in_lock);
    free(e);
}

/* Drops e from its sandbox's list (under the lock); freed by its last holder. */
static void exec_drop_locked(node_exec *e, bool *free_now)
{
    e->dropped = true;
    *free_now = e->refs == 0;
}

static void sb_destroy(node_sb *s)
{
    node_exec *e = s->execs;
    while (e) {
        node_exec *next = e->next;
        bool now = false;
        exec_drop_locked(e, &now); /* the lock is not needed: nobody else sees s */
        if (now)
            exec_free(e);
        e = next;
    }
    if (s->sb)
        fb_sandbox_destroy(s->sb);
    free(s);
}

void node_sb_put(fb_node *n, node_sb *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&n->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&n->lock);
    if (last)
        sb_destroy(s);
}

static bool unlink_locked(fb_node *n, node_sb *s)
{
    if (s->gone)
        return false;
    for (node_sb **p = &n->sbs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            s->next = NULL;
            s->gone = true;
            n->count--;
            if (s->sb)
                fb_sandbox_kill(s->sb); /* holders waiting on it return now */
            return true;
        }
    return false;
}

bool node_sb_remove(fb_node *n, node_sb *s)
{
    pthread_mutex_lock(&n->lock);
    bool removed = unlink_locked(n, s);
    pthread_mutex_unlock(&n->lock);
    if (removed)
        node_sb_put(n, s); /* the registry's own reference */
    return removed;
}

size_t node_sb_remove_all(fb_node *n, char (**ids)[NODE_SB_ID_MAX])
{
    pthread_mutex_lock(&n->lock);
    size_t cap = n->count, k = 0;
    char (*out)[NODE_SB_ID_MAX] = cap ? calloc(cap, sizeof *out) : NULL;
    node_sb *taken = NULL;
    while (n->sbs) {
        node_sb *s = n->sbs;
        unlink_locked(n, s);
        if (out && k < cap)
            snprintf(out[k++], NODE_SB_ID_MAX, "%s", s->id);
        s->next = taken;
        taken = s;
    }
    pthread_mutex_unlock(&n->lock);
    while (taken) {
        node_sb *s = taken;
        taken = s->next;
        s->next = NULL;
        node_sb_put(n, s);
    }
    *ids = out;
    return out ? k : 0;
}

size_t node_sb_count(fb_node *n)
{
    pthread_mutex_lock(&n->lock);
    size_t c = n->count;
    pthread_mutex_unlock(&n->lock);
    return c;
}

/* ---- execs ------------------------------------------------------------------------- */

static bool exec_ended(node_exec *e)
{
    fb_exec_result res;
    fb_err err;
    return fb_exec_wait(e->x, 0, &res, &err) != FB_E_TIMEOUT;
}

fb_errc node_exec_add(fb_node *n, node_sb *s, fb_exec *x, int in_fd, node_exec **out)
{
    node_exec *e = calloc(1, sizeof *e);
    if (!e)
        return FB_E_NOMEM;
    e->id = fb_exec_id(x);
    e->x = x;
    e->in_fd = in_fd;
    e->had_stdin = in_fd >= 0;
    e->refs = 1;
    pthread_mutex_init(&e->in_lock, NULL);
    node_exec *victim = NULL;
    pthread_mutex_lock(&n->lock);
    if (s->nexecs >= NODE_EXECS_KEPT) {
        /* The oldest ended exec that nobody reads makes room. */
        node_exec **vp = NULL;
        for (node_exec **p = &s->execs; *p; p = &(*p)->next)
            if ((*p)->refs == 0 && exec_ended(*p))
                vp = p;
        if (vp) {
            victim = *vp;
            *vp = victim->next;
            victim->dropped = true;
            s->nexecs--;
        }
    }
    fb_errc rc = FB_OK;
    if (s->nexecs >= NODE_EXECS_KEPT) {
        rc = FB_E_BUSY;
    } else {
        e->next = s->execs;
        s->execs = e;
        s->nexecs++;
    }
    pthread_mutex_unlock(&n->lock);
    if (victim)
        exec_free(victim);
    if (rc != FB_OK) {
        e->x = NULL;
        e->in_fd = -1;
        pthread_mutex_destroy(&e->in_lock);
        free(e);
        return rc;
    }
    *out = e;
    return FB_OK;
}

node_exec *node_exec_get(fb_node *n, node_sb *s, uint64_t id)
{
    pthread_mutex_lock(&n->lock);
    node_exec *e = s->execs;
    while (e && e->id != id)
        e = e->next;
    if (e)
        e->refs++;
    pthread_mutex_unlock(&n->lock);
    return e;
}

void node_exec_put(fb_node *n, node_exec *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&n->lock);
    bool now = --e->refs == 0 && e->dropped;
    pthread_mutex_unlock(&n->lock);
    if (now)
        exec_free(e);
}

/* ---- records and audit --------------------------------------------------------------- */

void node_record_state(fb_node *n, const char *id, const char *state, const char *request_id)
{
    fb_err err = {{0}};
    int rc = fb_store_sandbox_set_state(n->st, id, state, &err);
    if (rc < 0 && rc != FB_STORE_ECONFLICT) /* a lost record stays lost: nothing to say */
        fb_log("error", request_id, "cannot record a sandbox's state",
               json_pack("{s:s, s:s, s:s}", "sandbox", id, "state", state, "error", err.msg));
}

void node_audit(fb_node *n, const char *event, const char *actor, const char *resource, const char *action,
                const char *outcome, const char *reason, const char *ip, const char *request_id)
{
    fb_audit_event ev = {event, actor, resource, action, outcome, reason, ip, request_id};
    fb_err err = {{0}};
    if (fb_audit_append(n->st, &ev, &err) < 0)
        fb_log("error", request_id, "cannot write the audit log",
               json_pack("{s:s, s:s, s:s}", "event", event, "action", action, "error", err.msg));
}

/* ---- expiry ------------------------------------------------------------------------------ */

static void *reaper_main(void *arg)
{
    fb_node *n = arg;
    pthread_mutex_lock(&n->lock);
    while (!n->stopping) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        node_sb *due = NULL;
        struct timespec next = {now.tv_sec + 1, now.tv_nsec};
        for (node_sb *s = n->sbs; s; s = s->next) {
            if (!s->sb)
                continue;
            if (fb_time_cmp(&s->expires, &now) <= 0) {
                due = s;
                break;
            }
            if (fb_time_cmp(&s->expires, &next) < 0)
                next = s->expires;
        }
        if (due) {
            due->refs++;
            pthread_mutex_unlock(&n->lock);
            char id[NODE_SB_ID_MAX];
            snprintf(id, sizeof id, "%s", due->id);
            bool removed = node_sb_remove(n, due);
            node_sb_put(n, due); /* destroyed here, off the lock */
            if (removed) {
                node_record_state(n, id, "destroyed", NULL);
                node_audit(n, "node", "system", id, "expire", "allowed",
                           "the sandbox reached its expires_at; destroyed by the node", "", "");
                fb_log("info", NULL, "sandbox expired", json_pack("{s:s}", "sandbox", id));
            }
            pthread_mutex_lock(&n->lock);
            continue;
        }
        /* At most a second: a deadline moved by PATCH is seen soon enough. */
        pthread_cond_timedwait(&n->wake, &n->lock, &next);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

int node_reaper_start(fb_node *n, fb_err *err)
{
    if (pthread_create(&n->reaper, NULL, reaper_main, n) != 0)
        return fb_fail(err, "cannot start the expiry thread");
    n->reaper_on = true;
    return 0;
}

void node_reaper_stop(fb_node *n)
{
    if (!n->reaper_on)
        return;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_broadcast(&n->wake);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->reaper, NULL);
    n->reaper_on = false;
}
