/*
 * h_sandboxes.c - /node/v1/healthz and /node/v1/sandboxes (docs/node-api.md):
 * the node's health, its sandboxes, a create (checked against the record
 * the gateway reserved in the store, then booted from the warm pool or
 * cold), a new deadline, a delete.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "node/http.h"
#include "store/sandboxes.h"

/* ---- sandboxes ------------------------------------------------------------------------- */

static json_t *sandbox_json(fb_node *n, node_sb *s)
{
    pthread_mutex_lock(&n->lock);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", s->id, "isolation", s->isolation, "created_at",
                          s->created_at, "expires_at", s->expires_at, "node", n->name);
    pthread_mutex_unlock(&n->lock);
    fb_errc st = s->sb ? fb_sandbox_state(s->sb) : FB_E_STATE;
    json_object_set_new(o, "state", json_string(st == FB_OK ? "running" : "ended"));
    if (st != FB_OK)
        json_object_set_new(o, "error", json_string(fb_errc_name(st)));
    return o;
}

enum MHD_Result nh_healthz(nreq *r)
{
    fb_node *n = r->n;
    return nh_json(r, 200,
                     json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:I, s:I, s:I}}", "status", "ok", "node", "id", n->id,
                               "name", n->name, "backend", fb_backend_name(n->backend), "isolation", n->isolation,
                               "capacity", (json_int_t)n->capacity, "live", (json_int_t)node_sb_count(n),
                               "memory_mib", (json_int_t)n->memory_mib));
}

enum MHD_Result nh_list(nreq *r)
{
    fb_node *n = r->n;
    node_sb **held = NULL;
    size_t k = 0;
    pthread_mutex_lock(&n->lock);
    held = n->count ? calloc(n->count, sizeof *held) : NULL;
    for (node_sb *s = n->sbs; s && held && k < n->count; s = s->next)
        if (s->sb) {
            s->refs++;
            held[k++] = s;
        }
    pthread_mutex_unlock(&n->lock);
    json_t *arr = json_array();
    for (size_t i = 0; i < k; i++) {
        json_array_append_new(arr, sandbox_json(n, held[i]));
        node_sb_put(n, held[i]);
    }
    free(held);
    return nh_json(r, 200, json_pack("{s:o}", "sandboxes", arr));
}

static fb_sandbox *boot(fb_node *n, const fb_sandbox_config *sc, fb_err *err)
{
    fb_sandbox *sb = n->pool ? fb_pool_take(n->pool, sc) : NULL;
    if (sb)
        return sb;
    if (fb_sandbox_create(sc, &sb, err) < 0)
        return NULL;
    return sb;
}

enum MHD_Result nh_create(nreq *r)
{
    static const char *const keys[] = {"id", "team_id", "backend", "memory_mib", "vcpus", "disk_mib",
                                       "max_output", "expires_at", NULL};
    fb_node *n = r->n;
    const fb_config *cfg = n->cfg;
    enum MHD_Result rc;
    json_t *o = nh_body_json(r, keys, &rc);
    if (!o)
        return rc;
    const char *id = nh_get_str(o, "id"), *team = nh_get_str(o, "team_id"), *backend = nh_get_str(o, "backend");
    const char *expires_text = nh_get_str(o, "expires_at");
    fb_sandbox_config sc;
    fb_sandbox_config_defaults(&sc);
    sc.backend = n->backend;
    sc.tcg_cache_mib = n->cfg->sandbox.vm_tcg_cache_mib;
    uint64_t min_mem = n->backend == FB_BACKEND_VM ? FB_MIN_VM_MEMORY_MIB : FB_MIN_MEMORY_MIB;
    struct timespec expires, now;
    clock_gettime(CLOCK_REALTIME, &now);
    const char *bad = NULL;
    if (!node_valid_sb_id(id))
        bad = "\"id\" must be 1-63 of A-Z a-z 0-9 _ -, starting with a letter";
    else if (!team || !team[0] || strlen(team) >= FB_ID_MAX)
        bad = "\"team_id\" is required";
    else if (backend && strcmp(backend, fb_backend_name(n->backend)) != 0)
        bad = "this node does not run that backend";
    else if (!nh_get_u64(o, "memory_mib", cfg->sandbox.memory_mib, min_mem, cfg->sandbox.max_memory_mib, &sc.memory_mib))
        bad = "\"memory_mib\" is outside this node's limits";
    else if (!nh_get_u64(o, "vcpus", cfg->sandbox.vcpus, 1, cfg->sandbox.max_vcpus, &sc.vcpus))
        bad = "\"vcpus\" is outside this node's limits";
    else if (!nh_get_u64(o, "disk_mib", cfg->sandbox.disk_mib, 1, FB_MAX_DISK_MIB, &sc.disk_mib))
        bad = "\"disk_mib\" is outside this node's limits";
    else if (!nh_get_u64(o, "max_output", cfg->limits.max_output_bytes, 1, cfg->limits.max_output_bytes,
                      &sc.max_output))
        bad = "\"max_output\" is outside this node's limits";
    else if (!expires_text || fb_time_parse(expires_text, &expires) < 0)
        bad = "\"expires_at\" must be an RFC 3339 time";
    else if (fb_time_cmp(&expires, &now) <= 0)
        bad = "\"expires_at\" is in the past";
    if (bad) {
        rc = nh_error(r, 400, "bad_request", "%s", bad);
        json_decref(o);
        return rc;
    }
    sc.image_dir = n->opt->image_dir;
    sc.state_dir = cfg->state_dir;
    sc.run_dir = cfg->run_dir;
    char sid[NODE_SB_ID_MAX], team_id[FB_ID_MAX];
    snprintf(sid, sizeof sid, "%s", id);
    snprintf(team_id, sizeof team_id, "%s", team);
    json_decref(o);

    node_sb *s = NULL;
    fb_errc got = node_sb_reserve(n, sid, team_id, &s);
    if (got == FB_E_EXISTS)
        return nh_error(r, 409, "exists", "this node already runs %s", sid);
    if (got == FB_E_BUSY) {
        char why[160];
        snprintf(why, sizeof why, "the node runs %llu sandboxes, its capacity", (unsigned long long)n->capacity);
        node_audit(n, "node", r->actor, sid, "create", "denied", why, r->caller.source_ip, r->caller.request_id);
        return nh_error(r, 503, "capacity", "%s", why);
    }
    if (got != FB_OK)
        return nh_error(r, 503, "unavailable", "the node is shutting down");
    s->memory_mib = sc.memory_mib;
    s->vcpus = sc.vcpus;
    /* The gateway reserved the record for this node: it must be there. */
    fb_sandbox_row row;
    fb_err err = {{0}};
    int st = fb_store_sandbox_get(n->st, sid, &row, &err);
    const char *refuse = NULL;
    int rstatus = 409;
    if (st == FB_STORE_ENOTFOUND) {
        refuse = "no record of this sandbox in the store";
        rstatus = 404;
    } else if (st < 0) {
        refuse = "the store cannot be read";
        rstatus = 503;
    } else if (strcmp(row.node_id, n->id) != 0) {
        refuse = "the sandbox's record belongs to another node";
    } else if (strcmp(row.state, "creating") != 0) {
        refuse = "the sandbox's record is not \"creating\"";
    } else if (strcmp(row.team_id, team_id) != 0) {
        refuse = "the sandbox's record names another team";
    } else if (strcmp(row.backend, fb_backend_name(n->backend)) != 0) {
        refuse = "the sandbox's record is for another backend";
    }
    if (refuse) {
        node_sb_remove(n, s);
        node_sb_put(n, s);
        if (st < 0 && st != FB_STORE_ENOTFOUND)
            fb_log("error", r->caller.request_id, "cannot read a sandbox record", json_pack("{s:s}", "error", err.msg));
        return nh_error(r, rstatus, rstatus == 404 ? "not_found" : rstatus == 503 ? "unavailable" : "bad_state",
                          "%s", refuse);
    }
    fb_sandbox *sb = boot(n, &sc, &err);
    if (!sb) {
        node_sb_remove(n, s);
        node_sb_put(n, s);
        node_record_state(n, sid, "failed", r->caller.request_id);
        node_audit(n, "node", r->actor, sid, "create", "error", err.msg, r->caller.source_ip, r->caller.request_id);
        return nh_error(r, 500, "setup_failed", "the sandbox could not be started: %s", err.msg);
    }
    struct timespec created = fb_time_now_ts();
    char created_at[FB_TIME_MAX], expires_at[FB_TIME_MAX];
    fb_time_format(&created, created_at);
    fb_time_format(&expires, expires_at);
    node_sb_activate(n, s, sb, created_at, expires_at, &expires);
    int set = fb_store_sandbox_set_state(n->st, sid, "running", &err);
    pthread_mutex_lock(&n->lock);
    bool gone = s->gone;
    pthread_mutex_unlock(&n->lock);
    if (set < 0 || gone) {
        /* Lost meanwhile (the node was declared down), or unrecordable. */
        node_sb_remove(n, s);
        node_sb_put(n, s);
        if (set < 0 && set != FB_STORE_ECONFLICT)
            node_record_state(n, sid, "failed", r->caller.request_id);
        return nh_error(r, 503, "unavailable", "the sandbox could not be recorded as running%s%s",
                          set < 0 ? ": " : "", set < 0 ? err.msg : "");
    }
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", sid, "isolation", s->isolation, "created_at",
                            created_at, "expires_at", expires_at, "node", n->name);
    node_sb_put(n, s);
    return nh_json(r, 201, out);
}

/* The sandbox of the path, held in r->s.  false: answered 404. */
bool nh_open_sandbox(nreq *r, enum MHD_Result *rc)
{
    r->s = node_sb_get(r->n, r->sid);
    if (!r->s) {
        *rc = nh_error(r, 404, "not_found", "this node does not run %s", r->sid);
        return false;
    }
    return true;
}

enum MHD_Result nh_get(nreq *r)
{
    enum MHD_Result rc;
    if (!nh_open_sandbox(r, &rc))
        return rc;
    return nh_json(r, 200, sandbox_json(r->n, r->s));
}

enum MHD_Result nh_patch(nreq *r)
{
    static const char *const keys[] = {"expires_at", NULL};
    enum MHD_Result rc;
    json_t *o = nh_body_json(r, keys, &rc);
    if (!o)
        return rc;
    struct timespec t;
    const char *text = nh_get_str(o, "expires_at");
    bool ok = text && fb_time_parse(text, &t) == 0;
    json_decref(o);
    if (!ok)
        return nh_error(r, 400, "bad_request", "\"expires_at\" must be an RFC 3339 time");
    if (!nh_open_sandbox(r, &rc))
        return rc;
    fb_node *n = r->n;
    pthread_mutex_lock(&n->lock);
    r->s->expires = t;
    fb_time_format(&t, r->s->expires_at);
    pthread_cond_broadcast(&n->wake);
    pthread_mutex_unlock(&n->lock);
    return nh_json(r, 200, sandbox_json(n, r->s));
}

enum MHD_Result nh_delete(nreq *r)
{
    enum MHD_Result rc;
    if (!nh_open_sandbox(r, &rc))
        return rc;
    node_sb *s = r->s;
    r->s = NULL;
    bool removed = node_sb_remove(r->n, s);
    node_sb_put(r->n, s); /* destroyed here unless a transfer still holds it */
    if (!removed)
        return nh_error(r, 404, "not_found", "this node does not run %s", r->sid);
    node_record_state(r->n, r->sid, "destroyed", r->caller.request_id);
    return nh_empty(r, 204);
}

