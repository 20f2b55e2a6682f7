/*
 * core.c - the service's life (open, shutdown, close), typed errors, and
 * the two things every service does: audit and decide (core.h).
 *
 * Opening fails what a previous process left running (sandboxes, tasks);
 * closing stops the tasks before the sandboxes they run in.
 *
 * Every permission decision goes through fb_core_permit, which decides with
 * src/policy and writes the audit entry in the same step; an allow that
 * cannot be audited is refused, so nothing is ever done unaudited.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "core/internal.h"

/* ---- errors --------------------------------------------------------------------- */

int fb_core_fail(fb_core_err *err, fb_core_code code, const char *fmt, ...)
{
    if (!err)
        return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

const char *fb_core_code_name(fb_core_code code)
{
    static const char *const names[FB_CORE_NCODES] = {
        [FB_CORE_OK] = "ok",
        [FB_CORE_BAD_REQUEST] = "bad_request",
        [FB_CORE_UNAUTHORIZED] = "unauthorized",
        [FB_CORE_FORBIDDEN] = "forbidden",
        [FB_CORE_NOT_FOUND] = "not_found",
        [FB_CORE_CONFLICT] = "conflict",
        [FB_CORE_TOO_LARGE] = "too_large",
        [FB_CORE_QUOTA] = "quota_exceeded",
        [FB_CORE_FILE_ERROR] = "file_error",
        [FB_CORE_SANDBOX_FAILED] = "sandbox_failed",
        [FB_CORE_UNAVAILABLE] = "unavailable",
        [FB_CORE_INTERNAL] = "internal",
        [FB_CORE_LOST] = "lost",
    };
    return (unsigned)code < FB_CORE_NCODES ? names[code] : "internal";
}

int core_auth_error(int st, const fb_err *e, fb_core_err *err)
{
    switch (st) {
    case FB_AUTH_EINVAL: return fb_core_fail(err, FB_CORE_BAD_REQUEST, "%s", e->msg);
    case FB_AUTH_ENOTFOUND: return fb_core_fail(err, FB_CORE_NOT_FOUND, "%s", e->msg);
    case FB_AUTH_EEXISTS: return fb_core_fail(err, FB_CORE_CONFLICT, "%s", e->msg);
    case FB_AUTH_EDENIED: return fb_core_fail(err, FB_CORE_FORBIDDEN, "%s", e->msg);
    case FB_AUTH_EUNAVAILABLE:
        fb_log("error", NULL, "identity store unavailable", json_pack("{s:s}", "error", e->msg));
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the store is unavailable; retry shortly");
    default:
        fb_log("error", NULL, "identity store failure", json_pack("{s:s}", "error", e->msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
}

/* ---- small helpers ------------------------------------------------------------------ */

void core_new_id(const char *prefix, char *out, size_t cap)
{
    uint8_t b[8];
    fb_random_bytes(b, sizeof b);
    char hex[17];
    fb_hex(b, sizeof b, hex);
    snprintf(out, cap, "%s%s", prefix, hex);
}

const fb_config *fb_core_config(const fb_core *c)
{
    return c->cfg;
}

const char *fb_core_org(const fb_core *c)
{
    return c->org;
}

/* ---- audit and decisions --------------------------------------------------------------- */

static fb_audit_event event_of(const fb_caller *caller, const char *event, const char *resource,
                               const char *action, const char *outcome, const char *reason)
{
    return (fb_audit_event){
        .event = event,
        .actor = !caller ? "system" : caller->actor[0] ? caller->actor : "anonymous",
        .resource = resource ? resource : "",
        .action = action,
        .outcome = outcome,
        .reason = reason ? reason : "",
        .source_ip = caller ? caller->source_ip : "",
        .request_id = caller ? caller->request_id : "",
    };
}

/* begin: queue the entries in the chain and return at once, leaving the
 * wait to fb_core_audit_flush (caller->audit_inflight; one at a time). */
static int core_audit(fb_core *c, fb_caller *caller, const char *event, const char *resource, const char *action,
                      const char *outcome, const char *reason, bool begin)
{
    /* A deferred authentication entry goes first, in the same commit. */
    fb_audit_event ev[2];
    size_t n = 0;
    if (caller && caller->auth_pending[0])
        ev[n++] = event_of(caller, "auth", caller->auth_pending, "authenticate", "allowed", "api key");
    ev[n++] = event_of(caller, event, resource, action, outcome, reason);
    fb_err err = {{0}};
    int rc = begin && caller && !caller->audit_inflight
                 ? fb_audit_append_begin(c->store, ev, n, &caller->audit_inflight, &err)
                 : fb_audit_append_many(c->store, ev, n, &err);
    if (n == 2) /* only then: a caller shared by threads (an exec's) is never written */
        caller->auth_pending[0] = '\0'; /* written, or failed and answered as unaudited */
    if (rc < 0) {
        fb_log("error", caller ? caller->request_id : NULL, "audit append failed",
               json_pack("{s:s}", "error", err.msg));
        return -1;
    }
    return 0;
}

int fb_core_audit(fb_core *c, fb_caller *caller, const char *event, const char *resource,
                  const char *action, const char *outcome, const char *reason)
{
    return core_audit(c, caller, event, resource, action, outcome, reason, false);
}

void fb_core_audit_auth_defer(fb_caller *caller, const char *resource)
{
    snprintf(caller->auth_pending, sizeof caller->auth_pending, "%s", resource && resource[0] ? resource : "-");
}

int fb_core_audit_flush(fb_core *c, fb_caller *caller)
{
    if (caller && caller->audit_inflight) {
        fb_err err = {{0}};
        int rc = fb_audit_append_end(c->store, caller->audit_inflight, &err);
        caller->audit_inflight = NULL;
        if (rc < 0) {
            fb_log("error", caller->request_id, "audit append failed", json_pack("{s:s}", "error", err.msg));
            return -1;
        }
    }
    if (!caller || !caller->auth_pending[0])
        return 0;
    char resource[sizeof caller->auth_pending];
    memcpy(resource, caller->auth_pending, sizeof resource);
    caller->auth_pending[0] = '\0';
    return fb_core_audit_auth(c, caller, resource, "allowed", "api key");
}

int core_permit(fb_core *c, fb_caller *caller, fb_perm perm, const char *resource, const char *resource_team,
                bool begin, fb_core_err *err)
{
    bool own = !resource_team || strcmp(resource_team, caller->who.team_id) == 0;
    if (own && (caller->granted & perm) == perm && perm)
        return 0; /* decided and audited already, for this request */
    fb_decision d;
    fb_verdict v = fb_policy_decide(&caller->who, perm, resource_team, &d);
    /* Only an allow is queued without waiting: a refusal starts nothing. */
    int logged = core_audit(c, caller, "permission", resource, caller->action, v == FB_ALLOW ? "allowed" : "denied",
                            d.reason, begin && v == FB_ALLOW);
    if (v == FB_ALLOW && logged < 0)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the audit log cannot be written; refusing to act unaudited");
    if (v == FB_ALLOW) {
        if (own)
            caller->granted |= perm;
        return 0;
    }
    if (v == FB_NOT_FOUND)
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    return fb_core_fail(err, FB_CORE_FORBIDDEN, "%s", d.reason);
}

int fb_core_permit(fb_core *c, fb_caller *caller, fb_perm perm, const char *resource,
                   const char *resource_team, fb_core_err *err)
{
    /* An adapter may let an allow's entry become durable while the action
     * starts (caller->audit_overlap) only for this process's own
     * sandboxes: see fb_core_sandbox_create. */
    return core_permit(c, caller, perm, resource, resource_team, caller->audit_overlap && !core_remote(c), err);
}

int fb_core_permit_admin(fb_core *c, fb_caller *caller, fb_perm perm, const char *resource,
                         const char *what, fb_core_err *err)
{
    fb_decision d;
    if (fb_policy_org_wide(&caller->who, what, &d) != FB_ALLOW) {
        caller->granted &= ~perm;
        fb_core_audit(c, caller, "permission", resource, caller->action, "denied", d.reason);
        return fb_core_fail(err, FB_CORE_FORBIDDEN, "%s", d.reason);
    }
    return fb_core_permit(c, caller, perm, resource, caller->who.team_id, err);
}

/* ---- life ------------------------------------------------------------------------------- */

/* Sandboxes a crashed predecessor left in the store: their processes died
 * with it (parent-death signal); their records and leftovers go now. */
static void reap_previous(fb_core *c)
{
    fb_sandbox_reap_orphans(c->cfg->run_dir);
    char (*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    if (fb_store_sandbox_list_live(c->store, &ids, &n, &e) < 0) {
        fb_log("error", NULL, "cannot list this node's sandboxes", json_pack("{s:s}", "error", e.msg));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (fb_store_sandbox_set_state(c->store, ids[i], "destroyed", &e) < 0)
            fb_log("error", NULL, "cannot record a sandbox's end", json_pack("{s:s}", "error", e.msg));
        fb_core_audit(c, NULL, "sandbox", ids[i], "destroy", "allowed",
                      "orphan of a previous gateway reaped at start-up");
        fb_log("warn", NULL, "reaped orphaned sandbox", json_pack("{s:s}", "sandbox", ids[i]));
    }
    free(ids);
}

/* The store's identity watch (fb_store_watch_identity): every call means
 * "what you remember about keys may be stale". */
static void identity_changed(void *ctx, fb_store_watch_kind kind)
{
    (void)ctx;
    static atomic_bool down;
    fb_auth_key_cache_flush();
    if (kind == FB_STORE_WATCH_DOWN && !atomic_exchange(&down, true))
        fb_log("warn", NULL, "identity watch lost its connection; the key cache is flushed until it is back", NULL);
    else if (kind == FB_STORE_WATCH_UP) {
        atomic_store(&down, false);
        fb_log("info", NULL, "identity watch listening", NULL);
    }
}

int fb_core_open(const fb_config *cfg, const char *image_dir, fb_core **out, fb_err *err)
{
    fb_core *c = calloc(1, sizeof *c);
    if (!c)
        return fb_fail(err, "out of memory");
    c->cfg = cfg;
    c->image_dir = image_dir;
    core_registry_init(&c->reg);
    core_tasks_init(&c->tasks);
    if (fb_store_open_url(cfg->state_dir, cfg->store.url, &c->store, err) < 0) {
        free(c);
        return -1;
    }
    bool initialised = false;
    if (fb_auth_org_get(c->store, &initialised, c->org, err) != FB_AUTH_OK || !initialised) {
        fb_store_close(c->store);
        free(c);
        if (cfg->store.url)
            return fb_fail(err, "the store store.url names is not initialised: run `forgebox admin init "
                                "--state-dir %s --store URL` first",
                           cfg->state_dir);
        return fb_fail(err, "the store in %s is not initialised: run `forgebox admin init --state-dir %s` first",
                       cfg->state_dir, cfg->state_dir);
    }
    uint64_t entries = 0, bad = 0;
    fb_err verr = {{0}};
    if (fb_audit_verify(c->store, &entries, &bad, &verr) < 0)
        fb_log("error", NULL, "the audit chain does not verify", json_pack("{s:s}", "error", verr.msg));
    reap_previous(c);
    /* Every audited request commits: a log that does not grow under each
     * commit makes each commit's fsync cheaper (fb_store_preallocate_log). */
    fb_err perr = {{0}};
    if (fb_store_preallocate_log(c->store, &perr) < 0)
        fb_log("warn", NULL, "cannot preallocate the store's write-ahead log (commits stay correct, only slower)",
               json_pack("{s:s}", "error", perr.msg));
    /* Keys revoked and users disabled through other gateways sharing the
     * store stop working here at once, not after the key cache's TTL. */
    if (fb_store_watch_identity(c->store, identity_changed, NULL, err) < 0) {
        fb_store_close(c->store);
        free(c);
        return -1;
    }
    if (core_nodes_open(c, err) < 0) {
        fb_store_close(c->store);
        free(c);
        return -1;
    }
    if (core_egress_open(c, err) < 0) {
        core_nodes_close(c);
        fb_store_close(c->store);
        free(c);
        return -1;
    }
    core_tasks_recover(c);
    if (core_journal_start(c, err) < 0) {
        core_egress_close(c);
        fb_store_close(c->store);
        free(c);
        return -1;
    }
    if (pthread_create(&c->reaper, NULL, core_reaper_main, c) != 0) {
        core_journal_stop(c);
        core_egress_close(c);
        fb_store_close(c->store);
        free(c);
        return fb_fail(err, "cannot start the TTL reaper thread");
    }
    c->reaper_running = true;
    /* In remote mode the nodes keep the warm pools. */
    if (!core_remote(c) && core_pool_start(c, err) < 0) {
        fb_core_close(c);
        return -1;
    }
    *out = c;
    return 0;
}

void fb_core_shutdown_sandboxes(fb_core *c, const char *reason)
{
    core_pool_stop(c); /* nothing of a user is in them: no audit, no grace */
    core_tasks_shutdown(c); /* their threads hold sandboxes: they go first */
    core_sandbox **all = calloc(4096, sizeof *all);
    if (!all)
        return;
    size_t n = core_registry_all(&c->reg, all, 4096);
    for (size_t i = 0; i < n; i++) {
        char id[32];
        memcpy(id, all[i]->id, sizeof id);
        /* Remote mode: the sandboxes live on, served by the other gateways;
         * only this gateway's handles go. */
        if (core_registry_retire(c, all[i], core_remote(c) ? "released" : "destroyed") && !core_remote(c))
            fb_core_audit(c, NULL, "sandbox", id, "destroy", "allowed", reason);
        core_registry_put(c, all[i]);
    }
    free(all);
    /* Retired sandboxes are finalised by their last holder, promptly
     * (they were killed); wait a bounded time for that. */
    for (int t = 0; t < 600 && core_registry_size(&c->reg) > 0; t++)
        usleep(50000);
}

void fb_core_close(fb_core *c)
{
    if (!c)
        return;
    c->stopping = 1;
    fb_core_shutdown_sandboxes(c, "gateway shutdown");
    if (c->reaper_running)
        pthread_join(c->reaper, NULL);
    fb_core_shutdown_sandboxes(c, "gateway shutdown"); /* anything created meanwhile */
    /* Execs need no waiting: finalising their sandboxes noted their end,
     * and no thread of ours runs one.  The egress proxy's last audit
     * entries are written before the store closes. */
    core_egress_close(c);
    core_nodes_close(c);
    core_journal_stop(c); /* drains: every transcript event is written */
    fb_store_close(c->store);
    free(c->reg.items);
    core_tasks_free(&c->tasks);
    free(c);
}
