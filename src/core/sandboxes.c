/*
 * sandboxes.c - the sandbox service: create, list, open, delete, and the
 * reaper (TTLs, and the exec sweep of execs.c) (core.h).
 *
 * Creation reserves the team's quota and a registry entry first (a
 * "creating" record in the store, counted with every gateway's, so racing
 * creates cannot both take the last slot), boots the sandbox (on src/sandbox's spawner threads), and only
 * then starts its clock: a sandbox queued behind other boots does not
 * arrive expired.  The
 * creator holds a reference from the reservation until it has written its
 * answer, so the reaper cannot free the entry under it.
 *
 * A network grant is decided before anything boots: network:internet
 * (fb_core_permit, audited; org-gated on a non-empty network.allow), then
 * every entry inside network.allow and outside network.deny (policy), a
 * refusal audited and answered naming the entry.
 *
 * A create without a grant asks the warm pool (pool.c) first: the quota is
 * reserved the same way before, so a pooled sandbox counts for a team only
 * once it is the team's.  The sandbox is wired to
 * the gateway's egress proxy (egress.c) before it boots and given its
 * grant once it has its id; finalising takes the grant away.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"

/* expires_at's text changes after creation (fb_core_sandbox_set_ttl)
 * while others copy it; this lock keeps each copy whole. */
static pthread_mutex_t expires_text_lock = PTHREAD_MUTEX_INITIALIZER;

void core_sandbox_info_of(const core_sandbox *s, fb_sandbox_info *o)
{
    memset(o, 0, sizeof *o);
    memcpy(o->id, s->id, sizeof o->id);
    memcpy(o->team_id, s->team_id, sizeof o->team_id);
    memcpy(o->backend, s->backend, sizeof o->backend);
    memcpy(o->isolation, s->isolation, sizeof o->isolation);
    memcpy(o->node, s->node, sizeof o->node);
    o->memory_mib = s->memory_mib;
    o->vcpus = s->vcpus;
    o->disk_mib = s->disk_mib;
    memcpy(o->created_at, s->created_at, sizeof o->created_at);
    pthread_mutex_lock(&expires_text_lock);
    memcpy(o->expires_at, s->expires_at, sizeof o->expires_at);
    pthread_mutex_unlock(&expires_text_lock);
    memcpy(o->task_id, s->task_id, sizeof o->task_id);
    o->has_network = s->network != NULL;
    if (s->network)
        o->network = *s->network;
}

/* The decision on a create's network grant (nothing to decide without
 * one): the permission, then the ceiling and network.deny, audited. */
static int decide_grant(fb_core *c, fb_caller *caller, const fb_egress_list *grant, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_NETWORK_INTERNET, "sandboxes", caller->who.team_id, err) < 0)
        return -1;
    fb_decision d;
    if (fb_egress_grant_check(grant, &c->cfg->network.allow, &c->cfg->network.deny, &d) != FB_ALLOW) {
        fb_core_audit(c, caller, "sandbox", "sandboxes", "create", "denied", d.reason);
        return fb_core_fail(err, FB_CORE_FORBIDDEN, "%s", d.reason);
    }
    return 0;
}

/* "grant: a.example, *.b.example" for the creation's audit entry. */
static void grant_text(const fb_egress_list *g, const char *task_id, char *out, size_t cap)
{
    size_t used = (size_t)snprintf(out, cap, "%s%s%s", task_id[0] ? "; task " : "", task_id,
                                   g ? "; network grant:" : "");
    for (size_t i = 0; g && i < g->count && used < cap; i++) {
        char e[FB_EGRESS_HOST_MAX + 16];
        fb_egress_entry_format(&g->entries[i], e, sizeof e);
        used += (size_t)snprintf(out + used, cap - used, "%s %s", i ? "," : "", e);
    }
}

static int in_range(const char *name, bool has, uint64_t v, uint64_t def, uint64_t min, uint64_t max,
                    uint64_t *out, fb_core_err *err)
{
    if (!has) {
        *out = def;
        return 0;
    }
    if (v < min || v > max)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"%s\" must be an integer between %llu and %llu", name,
                            (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

int core_sandbox_config(fb_core *c, const fb_sandbox_spec *spec, fb_sandbox_config *sc, uint64_t *ttl,
                        fb_core_err *err)
{
    const fb_config *cfg = c->cfg;
    fb_sandbox_config_defaults(sc);
    sc->backend = spec->has_backend ? spec->backend : cfg->sandbox.backend;
    uint64_t min_mem = sc->backend == FB_BACKEND_VM ? FB_MIN_VM_MEMORY_MIB : FB_MIN_MEMORY_MIB;
    if (in_range("memory_mib", spec->has_memory, spec->memory_mib, cfg->sandbox.memory_mib, min_mem,
                 cfg->sandbox.max_memory_mib, &sc->memory_mib, err) < 0 ||
        in_range("vcpus", spec->has_vcpus, spec->vcpus, cfg->sandbox.vcpus, 1, cfg->sandbox.max_vcpus,
                 &sc->vcpus, err) < 0 ||
        in_range("disk_mib", spec->has_disk, spec->disk_mib, cfg->sandbox.disk_mib, 1, FB_MAX_DISK_MIB,
                 &sc->disk_mib, err) < 0 ||
        in_range("ttl_s", spec->has_ttl, spec->ttl_s, cfg->sandbox.ttl_s, 1, cfg->sandbox.max_ttl_s, ttl, err) < 0)
        return -1;
    sc->max_output = cfg->limits.max_output_bytes;
    sc->image_dir = c->image_dir;
    sc->state_dir = cfg->state_dir;
    sc->run_dir = cfg->run_dir;
    sc->no_vm_snapshot = !cfg->sandbox.vm_snapshot;
    sc->tcg_cache_mib = cfg->sandbox.vm_tcg_cache_mib;
    return 0;
}

int fb_core_sandbox_create(fb_core *c, fb_caller *caller, const fb_sandbox_spec *spec, fb_sandbox_info *out,
                           fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_SANDBOXES_CREATE, "sandboxes", caller->who.team_id, err) < 0)
        return -1;
    if (core_remote(c))
        return core_nodes_sandbox_create(c, caller, spec, out, err);
    const fb_egress_list *grant = spec->network && spec->network->count ? spec->network : NULL;
    if (grant && decide_grant(c, caller, grant, err) < 0)
        return -1;
    fb_sandbox_config sc;
    uint64_t ttl = 0;
    if (core_sandbox_config(c, spec, &sc, &ttl, err) < 0)
        return -1;
    if (grant && core_egress_wire(c, &sc, err) < 0)
        return -1;
    if (c->stopping)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the gateway is shutting down");
    core_sandbox *s = calloc(1, sizeof *s);
    fb_egress_list *owned = grant ? malloc(sizeof *owned) : NULL;
    if (!s || (grant && !owned)) {
        free(s);
        free(owned);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    }
    if (owned)
        *owned = *grant;
    snprintf(s->team_id, sizeof s->team_id, "%s", caller->who.team_id);
    snprintf(s->key_id, sizeof s->key_id, "%s", caller->who.key_id);
    snprintf(s->task_id, sizeof s->task_id, "%s", spec->task_id ? spec->task_id : "");
    snprintf(s->backend, sizeof s->backend, "%s", fb_backend_name(sc.backend));
    s->memory_mib = sc.memory_mib;
    s->vcpus = sc.vcpus;
    s->disk_mib = sc.disk_mib;
    s->ttl_s = ttl;
    core_new_id("pending-", s->id, sizeof s->id);
    char why[160] = "";
    int q = core_registry_reserve(c, s, why, sizeof why);
    if (q != 0) {
        free(s);
        free(owned);
        core_metrics_sandbox_created(q > 0 ? "denied" : "error");
        fb_core_audit(c, caller, "sandbox", "sandboxes", "create", q > 0 ? "denied" : "error", why);
        return q > 0 ? fb_core_fail(err, FB_CORE_QUOTA, "%s", why)
                     : fb_core_fail(err, FB_CORE_UNAVAILABLE, "the sandbox could not be reserved; try again");
    }
    fb_sandbox *sb = NULL;
    fb_err ferr = {{0}};
    /* A warm one of this shape if the pool has it (never with a grant);
     * else a cold boot on the sandbox module's long-lived spawner threads
     * (the sandbox's parent-death signal is tied to the booting thread). */
    if (!grant)
        sb = core_pool_take(c, &sc);
    /* The permission entry may still be on its way to the disk
     * (audit_overlap): a pooled sandbox's take is a few store writes, and
     * the create entry below carries it in its own commit; a boot or a
     * grant waits for it first, so nothing boots on an unrecorded
     * decision. */
    if (!sb && fb_core_audit_flush(c, caller) < 0) {
        free(owned);
        core_registry_release(c, s);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the audit log cannot be written; refusing to act unaudited");
    }
    int booted = sb ? 0 : fb_sandbox_create(&sc, &sb, &ferr);
    if (booted == 0 && grant &&
        core_egress_grant(c, fb_sandbox_id(sb), s->team_id, s->task_id, caller->actor[0] ? caller->actor : "system",
                          grant, &ferr) < 0) {
        fb_sandbox_destroy(sb);
        booted = -1;
    }
    if (booted < 0) {
        free(owned);
        core_registry_release(c, s);
        core_metrics_sandbox_created("error");
        fb_core_audit(c, caller, "sandbox", "sandboxes", "create", "error", ferr.msg);
        fb_log("error", caller->request_id, "sandbox creation failed", json_pack("{s:s}", "error", ferr.msg));
        return fb_core_fail(err, FB_CORE_SANDBOX_FAILED, "the sandbox could not be started (details in the server log)");
    }
    snprintf(s->isolation, sizeof s->isolation, "%s", fb_sandbox_isolation(sb));
    s->network = owned;
    /* The clock starts now that the sandbox is up, not when it was asked for. */
    struct timespec now = fb_time_now_ts();
    char created[FB_TIME_MAX], expires[FB_TIME_MAX];
    fb_time_format(&now, created);
    fb_time_format_after(now, (int64_t)ttl, expires);
    char reserved[sizeof s->id];
    memcpy(reserved, s->id, sizeof reserved);
    core_registry_activate(&c->reg, s, sb, created, expires, fb_time_monotonic_ns() + ttl * 1000000000ull);
    /* The reservation's record takes the sandbox's own id. */
    if (fb_store_sandbox_activate(c->store, reserved, s->id, s->created_at, s->expires_at, &ferr) < 0)
        fb_log("error", caller->request_id, "cannot record sandbox",
               json_pack("{s:s, s:s}", "sandbox", s->id, "error", ferr.msg));
    core_metrics_sandbox_created("ok");
    char extra[1024];
    grant_text(grant, s->task_id, extra, sizeof extra);
    char reason[sizeof extra + 16];
    snprintf(reason, sizeof reason, "%s%s", s->isolation, extra);
    fb_core_audit(c, caller, "sandbox", s->id, "create", "allowed", reason);
    if (fb_core_audit_flush(c, caller) < 0) {
        /* The decision never reached the log: the sandbox goes, unseen. */
        core_registry_retire(c, s, "failed");
        core_registry_put(c, s);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the audit log cannot be written; refusing to act unaudited");
    }
    core_sandbox_info_of(s, out);
    core_registry_put(c, s); /* the creator's reference */
    return 0;
}

int fb_core_sandbox_list(fb_core *c, fb_caller *caller, fb_sandbox_info **out, size_t *n, fb_core_err *err)
{
    if (fb_core_permit(c, caller, FB_PERM_SANDBOXES_READ, "sandboxes", caller->who.team_id, err) < 0)
        return -1;
    if (core_remote(c))
        return core_nodes_list(c, caller, out, n, err);
    core_sandbox **all = calloc(4096, sizeof *all);
    if (!all)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    size_t k = 0, m = core_registry_all(&c->reg, all, 4096);
    /* An info carries a whole grant (about 17 KiB): as many as there are. */
    fb_sandbox_info *infos = calloc(m ? m : 1, sizeof *infos);
    if (!infos) {
        for (size_t i = 0; i < m; i++)
            core_registry_put(c, all[i]);
        free(all);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    }
    for (size_t i = 0; i < m; i++) {
        if (fb_policy_can_see(&caller->who, all[i]->team_id))
            core_sandbox_info_of(all[i], &infos[k++]);
        core_registry_put(c, all[i]);
    }
    free(all);
    *out = infos;
    *n = k;
    return 0;
}

int fb_core_sandbox_open(fb_core *c, fb_caller *caller, const char *id, fb_perm perm, fb_sb_ref **out,
                         fb_core_err *err)
{
    core_sandbox *s = id ? core_registry_get(&c->reg, id) : NULL;
    /* Remote mode: another gateway may have deleted it, or its node been
     * declared down, since this one cached it: the store decides. */
    if (s && core_remote(c) && !core_nodes_still_live(c, s)) {
        core_registry_put(c, s);
        s = NULL;
    }
    char owner[FB_ID_MAX] = "";
    int found = s || !id || !core_remote(c) ? -1 : core_nodes_lookup(c, id, &s, owner, sizeof owner);
    if (!s && found > 0) {
        /* Lost (or on a node that went down): say so to whoever may see
         * it; to anyone else it does not exist. */
        fb_perm saved = caller->granted;
        caller->granted = 0;
        int rc = fb_core_permit(c, caller, perm, id, owner, err);
        caller->granted = saved;
        if (rc < 0)
            return -1;
        if (found == 1)
            return fb_core_fail(err, FB_CORE_LOST, "sandbox %s was lost: its node stopped answering", id);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the node running sandbox %s is down", id);
    }
    if (!s) {
        /* Unknown ids answer like another team's: audited, not found. */
        fb_core_audit(c, caller, "permission", id ? id : "", caller->action, "denied", "no such sandbox");
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    }
    fb_sb_ref *ref = malloc(sizeof *ref);
    if (!ref) {
        core_registry_put(c, s);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    }
    /* A sandbox decision is about this sandbox: never a standing grant.
     * An adapter may start its action while an allow's entry becomes
     * durable only when the sandbox is this process's own: a crash that
     * loses the entry ends the sandbox too (docs/audit.md, "Exec").  A
     * node's sandbox outlives this gateway, so there it waits. */
    fb_perm saved = caller->granted;
    caller->granted = 0;
    int rc = core_permit(c, caller, perm, s->id, s->team_id, caller->audit_overlap && !core_remote(c), err);
    caller->granted = saved;
    if (rc < 0) {
        free(ref);
        core_registry_put(c, s);
        return -1;
    }
    ref->s = s;
    ref->perm = perm;
    *out = ref;
    return 0;
}

void fb_core_sandbox_put(fb_core *c, fb_sb_ref *ref)
{
    if (!ref)
        return;
    core_registry_put(c, ref->s);
    free(ref);
}

void fb_core_sandbox_info(const fb_sb_ref *ref, fb_sandbox_info *out)
{
    core_sandbox_info_of(ref->s, out);
}

int fb_core_sandbox_delete(fb_core *c, fb_caller *caller, fb_sb_ref *ref, fb_core_err *err)
{
    if (!(ref->perm & FB_PERM_SANDBOXES_CREATE)) {
        fb_core_sandbox_put(c, ref);
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: delete with a reference not opened for it");
    }
    char id[32];
    memcpy(id, ref->s->id, sizeof id);
    /* Retiring kills at once and never waits for an exec in flight: the
     * last holder of a reference finishes the destruction. */
    bool mine = core_registry_retire(c, ref->s, "destroyed");
    fb_core_sandbox_put(c, ref);
    if (!mine)
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    fb_core_audit(c, caller, "sandbox", id, "destroy", "allowed", "deleted by request");
    return 0;
}

void core_sandbox_finalise(fb_core *c, core_sandbox *s)
{
    /* Nobody else holds a reference, so no transfer is in flight; execs
     * hold none, and their logs outlive the sandbox.  Its grant goes
     * first: its tunnels close (audited) and nothing new is adopted. */
    if (s->network) {
        core_egress_revoke(c, s->id);
        free(s->network);
        s->network = NULL;
    }
    if (core_remote(c)) {
        core_nodes_finalise(c, s);
        return;
    }
    fb_sandbox_destroy(s->sb);
    s->sb = NULL;
    core_execs_forget(c, s);
    fb_err e = {{0}};
    /* Durable with the next audit commit (a delete's own, when this is the
     * last reference): a crash that loses it ended the sandbox too, and the
     * next gateway reaps the record (store/sandboxes.h, "Durability"). */
    if (fb_store_sandbox_set_state_local(c->store, s->id, s->end_state[0] ? s->end_state : "destroyed", &e) < 0)
        fb_log("error", NULL, "cannot record a sandbox's end",
               json_pack("{s:s, s:s}", "sandbox", s->id, "error", e.msg));
}

void *core_reaper_main(void *arg)
{
    fb_core *c = arg;
    core_sandbox *due[64];
    while (!c->stopping) {
        size_t n = core_registry_expired(&c->reg, fb_now_ns(), due, 64);
        for (size_t i = 0; i < n; i++) {
            char id[32];
            memcpy(id, due[i]->id, sizeof id);
            /* Remote mode: the node ends it at its own deadline (and audits
             * that); a gateway only lets its handle go - its copy of the
             * deadline may be older than one another gateway moved. */
            if (core_remote(c)) {
                core_registry_retire(c, due[i], "released");
            } else if (core_registry_retire(c, due[i], "destroyed")) {
                fb_core_audit(c, NULL, "sandbox", id, "destroy", "allowed", "ttl expired");
                fb_log("info", NULL, "sandbox expired", json_pack("{s:s}", "sandbox", id));
            }
            core_registry_put(c, due[i]);
        }
        core_execs_sweep(c);
        if (core_remote(c))
            core_nodes_tick(c);
        for (int t = 0; t < 5 && !c->stopping; t++)
            usleep(100000);
    }
    return NULL;
}

int fb_core_sandbox_set_ttl(fb_core *c, fb_caller *caller, fb_sb_ref *ref, uint64_t ttl_s, fb_sandbox_info *out,
                            fb_core_err *err)
{
    if (!(ref->perm & FB_PERM_SANDBOXES_CREATE))
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: timeout change with a reference not opened for it");
    if (ttl_s < 1 || ttl_s > c->cfg->sandbox.max_ttl_s)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "the timeout must be between 1 and %llu seconds",
                            (unsigned long long)c->cfg->sandbox.max_ttl_s);
    core_sandbox *s = ref->s;
    /* The new deadline counts from now, as a create's does from the boot. */
    struct timespec now = fb_time_now_ts();
    char expires[FB_TIME_MAX];
    fb_time_format_after(now, (int64_t)ttl_s, expires);
    uint64_t deadline = fb_time_monotonic_ns() + ttl_s * 1000000000ull;
    if (core_remote(c) && core_nodes_set_expiry(c, s, expires, err) < 0)
        return -1;
    pthread_mutex_lock(&c->reg.lock);
    bool dying = s->dying;
    if (!dying) {
        s->ttl_s = ttl_s;
        s->expires_ns = deadline;
        pthread_mutex_lock(&expires_text_lock);
        snprintf(s->expires_at, sizeof s->expires_at, "%s", expires);
        pthread_mutex_unlock(&expires_text_lock);
    }
    pthread_mutex_unlock(&c->reg.lock);
    if (dying)
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    char reason[64];
    snprintf(reason, sizeof reason, "ttl_s=%llu", (unsigned long long)ttl_s);
    fb_core_audit(c, caller, "sandbox", s->id, "set_ttl", "allowed", reason);
    if (out)
        core_sandbox_info_of(s, out);
    return 0;
}
