/*
 * egress.c - the service's egress proxy: one per gateway, the grants of its
 * sandboxes, and an audit entry per connection (internal.h, "egress").
 *
 * The proxy (src/egress) runs when the configuration can grant anything
 * (network.allow, the ceiling, is not empty); with an empty ceiling no
 * grant can pass fb_core_permit (network:internet is org-gated on it), so
 * nothing would ever use one.  Its listeners live in RUN_DIR/egress.  A
 * sandbox with a grant is wired to it exactly as `forgebox run` wires one
 * (fb_egress_wire), given its grant once booted and taken out of it when
 * finalised, which closes its open tunnels.
 *
 * Audit: the proxy reports each connection's end on its own thread, whose
 * event loop must never wait for SQLite's fsync.  So the callback copies
 * the event, with the sandbox's team, task and creator from a small side
 * table (the registry entry may be gone by the time a late event is
 * written), into a bounded ring, and a drainer thread writes the entries.
 * A full ring drops the event, tallies it per sandbox (outcomes and bytes)
 * and logs once per burst; once the ring is empty the drainer audits one
 * summary entry per sandbox with its tally, so nothing is lost silently
 * and a sandbox that floods the log to hide a connection still shows what
 * it moved, in aggregate, under its own id.  Audit outcomes are allowed/denied/error: the proxy's
 * own outcome (allowed, denied, limited, failed) is in the reason.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "core/internal.h"
#include "egress/egress.h"

#define QUEUE_CAP 1024

typedef struct owner {
    char sandbox_id[32];
    char team_id[40];
    char task_id[32];
    char actor[64];
} owner;

typedef struct queued {
    owner who;
    char host[FB_EGRESS_HOST_MAX + 1];
    uint16_t port;
    char address[64];
    uint64_t up, down;
    fb_egress_outcome outcome;
    int status;
    char reason[256];
} queued;

/* What the ring had no room for, per sandbox. */
#define DROP_TALLIES 64
typedef struct drop_tally {
    owner who;
    uint64_t n[4];             /* by fb_egress_outcome */
    uint64_t up, down;
} drop_tally;

struct core_egress {
    fb_egress *proxy;
    pthread_mutex_t lock;      /* owners, the ring and the counters */
    pthread_cond_t wake;
    owner *owners;
    size_t nowners, capowners;
    queued *ring;
    size_t head, count;
    uint64_t dropped;          /* since the last summary entries */
    drop_tally drops[DROP_TALLIES];
    size_t ndrops;
    uint64_t dropped_untallied; /* beyond DROP_TALLIES sandboxes */
    bool drop_logged;          /* this burst's log line is written */
    bool stop;
    pthread_t drainer;
    bool drainer_running;
};

/* Who sandbox_id belongs to, into *out (only its id when not listed). */
static void owner_of(const core_egress *e, const char *sandbox_id, owner *out)
{
    for (size_t i = 0; i < e->nowners; i++)
        if (strcmp(e->owners[i].sandbox_id, sandbox_id) == 0) {
            *out = e->owners[i];
            return;
        }
    memset(out, 0, sizeof *out);
    snprintf(out->sandbox_id, sizeof out->sandbox_id, "%s", sandbox_id);
}

static void tally_drop(core_egress *e, const fb_egress_event *ev)
{
    e->dropped++;
    drop_tally *t = NULL;
    for (size_t i = 0; i < e->ndrops && !t; i++)
        if (strcmp(e->drops[i].who.sandbox_id, ev->sandbox_id) == 0)
            t = &e->drops[i];
    if (!t && e->ndrops < DROP_TALLIES) {
        t = &e->drops[e->ndrops++];
        memset(t, 0, sizeof *t);
        owner_of(e, ev->sandbox_id, &t->who);
    }
    if (!t) {
        e->dropped_untallied++;
        return;
    }
    t->n[(unsigned)ev->outcome < 4 ? ev->outcome : FB_EGRESS_FAILED]++;
    t->up += ev->bytes_up;
    t->down += ev->bytes_down;
}

/* On the proxy's thread: copy and go. */
static void on_event(const fb_egress_event *ev, void *ctx)
{
    core_egress *e = ctx;
    pthread_mutex_lock(&e->lock);
    if (e->count == QUEUE_CAP) {
        tally_drop(e, ev);
        bool log = !e->drop_logged;
        e->drop_logged = true;
        pthread_mutex_unlock(&e->lock);
        if (log)
            fb_log("warn", NULL, "egress audit queue full: dropping connection events (counted, audited)",
                   json_pack("{s:s}", "sandbox", ev->sandbox_id));
        return;
    }
    queued *q = &e->ring[(e->head + e->count) % QUEUE_CAP];
    memset(q, 0, sizeof *q);
    owner_of(e, ev->sandbox_id, &q->who);
    snprintf(q->host, sizeof q->host, "%s", ev->host);
    q->port = ev->port;
    snprintf(q->address, sizeof q->address, "%s", ev->address);
    q->up = ev->bytes_up;
    q->down = ev->bytes_down;
    q->outcome = ev->outcome;
    q->status = ev->status;
    snprintf(q->reason, sizeof q->reason, "%s", ev->reason);
    e->count++;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
}

static const char *audit_outcome(fb_egress_outcome o)
{
    switch (o) {
    case FB_EGRESS_ALLOWED: return "allowed";
    case FB_EGRESS_DENIED:
    case FB_EGRESS_LIMITED: return "denied";
    default: return "error";
    }
}

static void write_entry(fb_core *c, const queued *q)
{
    fb_caller who;
    memset(&who, 0, sizeof who);
    snprintf(who.actor, sizeof who.actor, "%s", q->who.actor[0] ? q->who.actor : "system");
    char reason[FB_AUDIT_FIELD_MAX];
    snprintf(reason, sizeof reason,
             "outcome=%s host=%s port=%u address=%s up=%" PRIu64 " down=%" PRIu64 " status=%d team=%s%s%s: %s",
             fb_egress_outcome_name(q->outcome), q->host[0] ? q->host : "-", (unsigned)q->port,
             q->address[0] ? q->address : "-", q->up, q->down, q->status, q->who.team_id[0] ? q->who.team_id : "-",
             q->who.task_id[0] ? " task=" : "", q->who.task_id, q->reason);
    fb_core_audit(c, &who, "egress.connection", q->who.sandbox_id, "connect", audit_outcome(q->outcome), reason);
}

static void write_drops(fb_core *c, const drop_tally *t, size_t n, uint64_t untallied)
{
    for (size_t i = 0; i < n; i++) {
        fb_caller who;
        memset(&who, 0, sizeof who);
        snprintf(who.actor, sizeof who.actor, "%s", t[i].who.actor[0] ? t[i].who.actor : "system");
        char reason[512];
        snprintf(reason, sizeof reason,
                 "dropped=%" PRIu64 " allowed=%" PRIu64 " denied=%" PRIu64 " limited=%" PRIu64 " failed=%" PRIu64
                 " up=%" PRIu64 " down=%" PRIu64 " team=%s%s%s: egress connection events dropped: the audit "
                 "queue was full",
                 t[i].n[0] + t[i].n[1] + t[i].n[2] + t[i].n[3], t[i].n[FB_EGRESS_ALLOWED], t[i].n[FB_EGRESS_DENIED],
                 t[i].n[FB_EGRESS_LIMITED], t[i].n[FB_EGRESS_FAILED], t[i].up, t[i].down,
                 t[i].who.team_id[0] ? t[i].who.team_id : "-", t[i].who.task_id[0] ? " task=" : "",
                 t[i].who.task_id);
        fb_core_audit(c, &who, "egress.connection", t[i].who.sandbox_id, "connect", "error", reason);
    }
    if (untallied) {
        char reason[200];
        snprintf(reason, sizeof reason,
                 "dropped=%" PRIu64 ": egress connection events of further sandboxes dropped: the audit queue "
                 "was full", untallied);
        fb_core_audit(c, NULL, "egress.connection", "egress", "connect", "error", reason);
    }
}

static void *drainer_main(void *arg)
{
    fb_core *c = arg;
    core_egress *e = c->egress;
    queued q;
    drop_tally *drops = malloc(sizeof e->drops);
    pthread_mutex_lock(&e->lock);
    for (;;) {
        while (!e->stop && e->count == 0 && e->dropped == 0)
            pthread_cond_wait(&e->wake, &e->lock);
        if (e->count == 0 && e->dropped == 0)
            break; /* stopping, and everything is written */
        if (e->count > 0) {
            q = e->ring[e->head];
            e->head = (e->head + 1) % QUEUE_CAP;
            e->count--;
            pthread_mutex_unlock(&e->lock);
            write_entry(c, &q);
        } else {
            /* The ring is empty: the tallies of what it had no room for. */
            size_t n = drops ? e->ndrops : 0;
            if (n)
                memcpy(drops, e->drops, n * sizeof *drops);
            uint64_t untallied = e->dropped_untallied + (drops ? 0 : e->dropped);
            e->ndrops = 0;
            e->dropped = 0;
            e->dropped_untallied = 0;
            e->drop_logged = false;
            pthread_mutex_unlock(&e->lock);
            write_drops(c, drops, n, untallied);
        }
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    free(drops);
    return NULL;
}

int core_egress_open(fb_core *c, fb_err *err)
{
    if (c->cfg->network.allow.count == 0)
        return 0; /* nothing can be granted */
    core_egress *e = calloc(1, sizeof *e);
    if (!e || !(e->ring = calloc(QUEUE_CAP, sizeof *e->ring))) {
        free(e);
        return fb_fail(err, "out of memory");
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    c->egress = e;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/egress", c->cfg->run_dir);
    if (pthread_create(&e->drainer, NULL, drainer_main, c) != 0) {
        core_egress_close(c);
        return fb_fail(err, "cannot start the egress audit thread");
    }
    e->drainer_running = true;
    if (fb_egress_start_configured(c->cfg, dir, true, on_event, e, &e->proxy, err) != FB_EGRESS_RC_OK) {
        core_egress_close(c);
        return -1;
    }
    return 0;
}

void core_egress_close(fb_core *c)
{
    core_egress *e = c->egress;
    if (!e)
        return;
    /* Stopping the proxy ends every connection, each in an event; then
     * the drainer writes what is queued and exits. */
    fb_egress_stop(e->proxy);
    e->proxy = NULL;
    pthread_mutex_lock(&e->lock);
    e->stop = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    if (e->drainer_running)
        pthread_join(e->drainer, NULL);
    pthread_cond_destroy(&e->wake);
    pthread_mutex_destroy(&e->lock);
    free(e->owners);
    free(e->ring);
    free(e);
    c->egress = NULL;
}

int core_egress_wire(fb_core *c, fb_sandbox_config *sc, fb_core_err *err)
{
    if (!c->egress || !c->egress->proxy)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the egress proxy is not running");
    fb_egress_wire(c->egress->proxy, sc);
    return 0;
}

int core_egress_grant(fb_core *c, const char *sandbox_id, const char *team_id, const char *task_id,
                      const char *actor, const fb_egress_list *grant, fb_err *err)
{
    core_egress *e = c->egress;
    if (!e || !e->proxy)
        return fb_fail(err, "the egress proxy is not running");
    pthread_mutex_lock(&e->lock);
    if (e->nowners == e->capowners) {
        size_t ncap = e->capowners ? e->capowners * 2 : 32;
        owner *no = realloc(e->owners, ncap * sizeof *no);
        if (!no) {
            pthread_mutex_unlock(&e->lock);
            return fb_fail(err, "out of memory");
        }
        e->owners = no;
        e->capowners = ncap;
    }
    owner *o = &e->owners[e->nowners++];
    memset(o, 0, sizeof *o);
    snprintf(o->sandbox_id, sizeof o->sandbox_id, "%s", sandbox_id);
    snprintf(o->team_id, sizeof o->team_id, "%s", team_id);
    snprintf(o->task_id, sizeof o->task_id, "%s", task_id ? task_id : "");
    snprintf(o->actor, sizeof o->actor, "%s", actor);
    pthread_mutex_unlock(&e->lock);
    char path[256];
    if (fb_egress_add_sandbox(e->proxy, sandbox_id, grant, path, sizeof path, err) != FB_EGRESS_RC_OK) {
        core_egress_revoke(c, sandbox_id);
        return -1;
    }
    return 0;
}

void core_egress_revoke(fb_core *c, const char *sandbox_id)
{
    core_egress *e = c->egress;
    if (!e)
        return;
    fb_err err = {{0}};
    /* Closes its listener and every tunnel it has open; their events are
     * queued (with the owner, still listed) before this returns. */
    if (e->proxy)
        (void)fb_egress_remove_sandbox(e->proxy, sandbox_id, &err);
    pthread_mutex_lock(&e->lock);
    for (size_t i = 0; i < e->nowners; i++)
        if (strcmp(e->owners[i].sandbox_id, sandbox_id) == 0) {
            e->owners[i] = e->owners[--e->nowners];
            break;
        }
    pthread_mutex_unlock(&e->lock);
}
