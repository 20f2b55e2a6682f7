/*
 * nodes.c - the sandbox service in nodes.mode: remote (issue 12): this
 * gateway runs no sandbox itself; nodes do (docs/node-api.md).
 *
 * - Placement: the store's up nodes with a fresh heartbeat, the backend
 *   asked for and room left, fewest live sandboxes first (then least live
 *   memory, then name).  The team's place is reserved in the store under
 *   the chosen node's id (fb_store_sandbox_reserve: one quota across every
 *   gateway), then the node boots it; a node that answers capacity or
 *   cannot be reached gives the place back ("failed") and the next one is
 *   tried under a fresh id.
 * - Any gateway serves any sandbox: a lookup this gateway's registry
 *   misses asks the store (fb_store_sandbox_get), and a running record is
 *   attached (fb_node_client_attach: no call is made) and cached in the
 *   registry like a sandbox created here.  A lost record answers 410
 *   "lost" once the caller may see it.
 * - Lost sandboxes: the reaper runs fb_store_nodes_expire every
 *   nodes.heartbeat_s (whichever gateway gets there first marks a silent
 *   node down and its records lost in one transaction, and audits one
 *   sandbox "lost" entry per sandbox it marked), and retires the cached
 *   entries whose records are no longer live - lost, or destroyed through
 *   another gateway or by their node at their deadline.
 * - Ends: DELETE on the node for a delete or an expired TTL (404 = already
 *   gone); a gateway that shuts down only releases its handles.
 * - A node whose certificate is refused is audited ("node.tls", denied,
 *   with the verdict) by the refusal hook of node/client.h.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "node/client.h"
#include "store/nodes.h"

#define MAX_PLACEMENT_TRIES 8

bool core_remote(const fb_core *c)
{
    return c->nodes != NULL;
}

static void on_refusal(void *ctx, const char *node_name, const char *verdict, const char *reason)
{
    fb_core *c = ctx;
    char why[600];
    snprintf(why, sizeof why, "%s: %s", verdict, reason);
    fb_core_audit(c, NULL, "node.tls", node_name, "server_certificate", "denied", why);
    fb_log("warn", NULL, "node certificate refused",
           json_pack("{s:s, s:s, s:s}", "node", node_name, "verdict", verdict, "reason", reason));
}

int core_nodes_open(fb_core *c, fb_err *err)
{
    if (c->cfg->nodes.mode != FB_NODES_REMOTE)
        return 0;
    if (fb_node_client_open(c->cfg, &c->nodes, err) < 0)
        return -1;
    fb_node_client_on_refusal(c->nodes, on_refusal, c);
    return 0;
}

void core_nodes_close(fb_core *c)
{
    fb_node_client_free(c->nodes);
    c->nodes = NULL;
}

/* ---- placement -------------------------------------------------------------------------- */

static int by_load(const void *a, const void *b)
{
    const fb_node_record *x = a, *y = b;
    if (x->live != y->live)
        return x->live < y->live ? -1 : 1;
    if (x->live_memory_mib != y->live_memory_mib)
        return x->live_memory_mib < y->live_memory_mib ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The candidates for a sandbox of backend, best first (*out malloc'd). */
static int candidates(fb_core *c, const char *backend, fb_node_record **out, size_t *n, size_t *up, fb_err *err)
{
    fb_node_record *all = NULL;
    size_t m = 0;
    *out = NULL;
    *n = *up = 0;
    if (fb_store_node_list(c->store, &all, &m, err) < 0)
        return -1;
    int64_t now = (int64_t)time(NULL);
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        fb_node_record *r = &all[i];
        if (strcmp(r->state, "up") != 0 || now - r->heartbeat_unix >= (int64_t)c->cfg->nodes.down_after_s)
            continue;
        (*up)++;
        if (strcmp(r->backend, backend) != 0 || r->live >= r->capacity)
            continue;
        all[k++] = *r;
    }
    qsort(all, k, sizeof *all, by_load);
    *out = all;
    *n = k;
    return 0;
}

static bool try_next(fb_errc code, const fb_err *e)
{
    return code == FB_E_SANDBOX_ENDED || code == FB_E_KILLED ||
           (code == FB_E_OTHER && (strstr(e->msg, "(capacity)") || strstr(e->msg, "(unavailable)") ||
                                   strstr(e->msg, "(forbidden)")));
}

/* A fresh entry for one placement attempt (the reservation frees it on failure). */
static core_sandbox *new_entry(fb_caller *caller, const fb_sandbox_spec *spec, const fb_sandbox_config *sc,
                               uint64_t ttl)
{
    core_sandbox *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->team_id, sizeof s->team_id, "%s", caller->who.team_id);
    snprintf(s->key_id, sizeof s->key_id, "%s", caller->who.key_id);
    snprintf(s->task_id, sizeof s->task_id, "%s", spec->task_id ? spec->task_id : "");
    snprintf(s->backend, sizeof s->backend, "%s", fb_backend_name(sc->backend));
    s->memory_mib = sc->memory_mib;
    s->vcpus = sc->vcpus;
    s->disk_mib = sc->disk_mib;
    s->ttl_s = ttl;
    core_new_id("sb-", s->id, sizeof s->id);
    return s;
}

int core_nodes_sandbox_create(fb_core *c, fb_caller *caller, const fb_sandbox_spec *spec, fb_sandbox_info *out,
                              fb_core_err *err)
{
    if (spec->network && spec->network->count) {
        fb_core_audit(c, caller, "sandbox", "sandboxes", "create", "denied",
                      "network grants are not available with nodes.mode remote");
        return fb_core_fail(err, FB_CORE_BAD_REQUEST,
                            "network grants are not available with nodes.mode remote (remote_network_unsupported)");
    }
    fb_sandbox_config sc;
    uint64_t ttl = 0;
    if (core_sandbox_config(c, spec, &sc, &ttl, err) < 0)
        return -1;
    if (c->stopping)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the gateway is shutting down");
    const char *backend = fb_backend_name(sc.backend);
    fb_node_record *nodes = NULL;
    size_t n = 0, up = 0;
    fb_err ferr = {{0}};
    if (candidates(c, backend, &nodes, &n, &up, &ferr) < 0) {
        fb_log("error", caller->request_id, "cannot list nodes", json_pack("{s:s}", "error", ferr.msg));
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the store is unavailable; retry shortly");
    }
    core_sandbox *s = NULL;
    fb_sandbox *sb = NULL;
    char last[600] = "";
    const fb_node_record *chosen = NULL;
    char created[FB_TIME_MAX], expires[FB_TIME_MAX];
    for (size_t i = 0; i < n && i < MAX_PLACEMENT_TRIES && !sb; i++) {
        /* The team's place, reserved in the store under this node's id
         * (counted with every gateway's and node's records). */
        s = new_entry(caller, spec, &sc, ttl);
        char why[200] = "";
        int q = s ? core_registry_reserve_on(c, s, nodes[i].id, why, sizeof why) : -1;
        if (q != 0) {
            if (!s)
                snprintf(why, sizeof why, "out of memory");
            free(s);
            free(nodes);
            core_metrics_sandbox_created(q > 0 ? "denied" : "error");
            fb_core_audit(c, caller, "sandbox", "sandboxes", "create", q > 0 ? "denied" : "error", why);
            return q > 0 ? fb_core_fail(err, FB_CORE_QUOTA, "%s", why)
                         : fb_core_fail(err, FB_CORE_UNAVAILABLE, "the sandbox could not be reserved; try again");
        }
        struct timespec now = fb_time_now_ts();
        fb_time_format(&now, created);
        fb_time_format_after(now, (int64_t)ttl, expires);
        fb_node_sandbox_req req = {.id = s->id, .team_id = s->team_id, .cfg = &sc, .expires_at = expires};
        fb_errc code = fb_node_client_create(c->nodes, &nodes[i], &req, &sb, &ferr);
        if (code == FB_OK) {
            chosen = &nodes[i];
            break;
        }
        sb = NULL;
        snprintf(last, sizeof last, "%s", ferr.msg);
        fb_log("warn", caller->request_id, "node refused a sandbox",
               json_pack("{s:s, s:s, s:s}", "node", nodes[i].name, "sandbox", s->id, "error", ferr.msg));
        core_registry_release(c, s); /* "failed": the place is given back */
        s = NULL;
        if (!try_next(code, &ferr))
            break;
    }
    if (!sb) {
        free(nodes);
        core_metrics_sandbox_created("error");
        if (n == 0) {
            char why[200];
            snprintf(why, sizeof why, "no node can take a %s sandbox now (%zu up)", backend, up);
            fb_core_audit(c, caller, "sandbox", "sandboxes", "create", "error", why);
            return fb_core_fail(err, FB_CORE_UNAVAILABLE, "%s", why);
        }
        fb_core_audit(c, caller, "sandbox", "sandboxes", "create", "error", last);
        return fb_core_fail(err, FB_CORE_SANDBOX_FAILED, "the sandbox could not be started: %s", last);
    }
    snprintf(s->node, sizeof s->node, "%s", chosen->name);
    snprintf(s->isolation, sizeof s->isolation, "%s", fb_sandbox_isolation(sb));
    free(nodes);
    /* The node marked the record running; lookups find it from now on. */
    core_registry_activate(&c->reg, s, sb, created, expires, fb_time_monotonic_ns() + ttl * 1000000000ull);
    core_metrics_sandbox_created("ok");
    char reason[200];
    snprintf(reason, sizeof reason, "%s; node %s%s%s", s->isolation, s->node, s->task_id[0] ? "; task " : "",
             s->task_id);
    fb_core_audit(c, caller, "sandbox", s->id, "create", "allowed", reason);
    core_sandbox_info_of(s, out);
    core_registry_put(c, s); /* the creator's reference */
    return 0;
}

/* ---- lookups this gateway's registry misses ------------------------------------------------ */

int core_nodes_lookup(fb_core *c, const char *id, core_sandbox **out, char *team_id, size_t team_cap)
{
    *out = NULL;
    fb_sandbox_row row;
    fb_err e = {{0}};
    if (strlen(id) >= sizeof ((core_sandbox *)0)->id || fb_store_sandbox_get(c->store, id, &row, &e) < 0)
        return -1;
    snprintf(team_id, team_cap, "%s", row.team_id);
    if (strcmp(row.state, "lost") == 0)
        return 1;
    if (strcmp(row.state, "running") != 0)
        return -1;
    fb_node_record node;
    if (fb_store_node_get(c->store, row.node_id, &node, &e) < 0 || strcmp(node.state, "up") != 0)
        return 2; /* its node is gone: lost at the next expiry */
    core_sandbox *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    snprintf(s->id, sizeof s->id, "%.31s", row.id);
    snprintf(s->team_id, sizeof s->team_id, "%s", row.team_id);
    snprintf(s->key_id, sizeof s->key_id, "%s", row.key_id);
    snprintf(s->backend, sizeof s->backend, "%s", row.backend);
    snprintf(s->node, sizeof s->node, "%s", node.name);
    s->memory_mib = row.memory_mib;
    s->vcpus = row.vcpus;
    s->disk_mib = c->cfg->sandbox.disk_mib;
    fb_sandbox_config sc;
    fb_sandbox_config_defaults(&sc);
    sc.backend = strcmp(row.backend, "jail") == 0 ? FB_BACKEND_JAIL : FB_BACKEND_VM;
    sc.memory_mib = row.memory_mib;
    sc.vcpus = row.vcpus;
    sc.disk_mib = s->disk_mib;
    sc.max_output = c->cfg->limits.max_output_bytes;
    sc.image_dir = c->image_dir;
    sc.state_dir = c->cfg->state_dir;
    sc.run_dir = c->cfg->run_dir;
    fb_sandbox *sb = NULL;
    if (fb_node_client_attach(c->nodes, &node, row.id, &sc, &sb, &e) != FB_OK) {
        fb_log("error", NULL, "cannot attach a remote sandbox",
               json_pack("{s:s, s:s}", "sandbox", row.id, "error", e.msg));
        free(s);
        return -1;
    }
    snprintf(s->isolation, sizeof s->isolation, "%s", fb_sandbox_isolation(sb));
    struct timespec exp, now = fb_time_now_ts();
    int64_t left = 1;
    if (fb_time_parse(row.expires_at, &exp) == 0 && exp.tv_sec > now.tv_sec)
        left = (int64_t)(exp.tv_sec - now.tv_sec);
    s->ttl_s = (uint64_t)left;
    core_sandbox *in = core_registry_adopt(&c->reg, s, sb, row.created_at, row.expires_at,
                                           fb_time_monotonic_ns() + (uint64_t)left * 1000000000ull);
    if (in != s) {
        /* Another request attached it first, or no memory: ours goes. */
        fb_sandbox_destroy(sb);
        free(s);
    }
    *out = in;
    return in ? 0 : -1;
}

bool core_nodes_still_live(fb_core *c, core_sandbox *s)
{
    fb_sandbox_row row;
    fb_err e = {{0}};
    int rc = fb_store_sandbox_get(c->store, s->id, &row, &e);
    if (rc < 0 && rc != FB_STORE_ENOTFOUND)
        return true;
    if (rc == 0 && strcmp(row.state, "running") == 0)
        return true;
    core_registry_retire(c, s, rc == 0 && strcmp(row.state, "lost") == 0 ? "lost" : "released");
    return false;
}

/* ---- ends ------------------------------------------------------------------------------------ */

void core_nodes_finalise(fb_core *c, core_sandbox *s)
{
    const char *end = s->end_state[0] ? s->end_state : "destroyed";
    bool deleted = false;
    if (strcmp(end, "destroyed") == 0 && s->sb) {
        fb_err e = {{0}};
        if (fb_node_client_delete(s->sb, &e) == FB_OK)
            deleted = true;
        else
            fb_log("error", NULL, "cannot delete a sandbox on its node",
                   json_pack("{s:s, s:s, s:s}", "sandbox", s->id, "node", s->node, "error", e.msg));
    }
    fb_sandbox_destroy(s->sb); /* the local handle only */
    s->sb = NULL;
    core_execs_forget(c, s);
    fb_err e = {{0}};
    if (deleted && fb_store_sandbox_set_state(c->store, s->id, "destroyed", &e) < 0)
        fb_log("warn", NULL, "cannot record a sandbox's end", json_pack("{s:s, s:s}", "sandbox", s->id, "error", e.msg));
}

/* ---- the reaper's round ---------------------------------------------------------------------- */

static bool id_in(const fb_sandbox_row *rows, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].id, id) == 0)
            return true;
    return false;
}

void core_nodes_tick(fb_core *c)
{
    uint64_t now = fb_time_monotonic_ns();
    uint64_t every = (c->cfg->nodes.heartbeat_s ? c->cfg->nodes.heartbeat_s : 2) * 1000000000ull;
    if (now < c->nodes_next_tick_ns)
        return;
    c->nodes_next_tick_ns = now + every;
    fb_err e = {{0}};
    size_t down = 0, nlost = 0;
    char (*lost)[FB_ID_MAX] = NULL;
    if (fb_store_nodes_expire(c->store, c->cfg->nodes.down_after_s, &down, &lost, &nlost, &e) < 0) {
        fb_log("error", NULL, "cannot expire silent nodes", json_pack("{s:s}", "error", e.msg));
    } else {
        for (size_t i = 0; i < nlost; i++) {
            char why[160];
            snprintf(why, sizeof why, "its node stopped heartbeating for %llu s",
                     (unsigned long long)c->cfg->nodes.down_after_s);
            fb_core_audit(c, NULL, "sandbox", lost[i], "lost", "error", why);
            fb_log("warn", NULL, "sandbox lost", json_pack("{s:s}", "sandbox", lost[i]));
        }
        if (down)
            fb_log("warn", NULL, "nodes marked down", json_pack("{s:I}", "count", (json_int_t)down));
        free(lost);
    }
    /* Cached entries whose records are no longer live. */
    core_sandbox **all = calloc(4096, sizeof *all);
    if (!all)
        return;
    size_t m = core_registry_all(&c->reg, all, 4096);
    fb_sandbox_row *rows = NULL;
    size_t nrows = 0;
    bool listed = m > 0 && fb_store_sandbox_list_all_live(c->store, NULL, &rows, &nrows, &e) == 0;
    for (size_t i = 0; i < m; i++) {
        if (listed && !id_in(rows, nrows, all[i]->id)) {
            fb_sandbox_row row;
            const char *end = "released";
            if (fb_store_sandbox_get(c->store, all[i]->id, &row, &e) == 0 && strcmp(row.state, "lost") == 0)
                end = "lost";
            core_registry_retire(c, all[i], end);
        }
        core_registry_put(c, all[i]);
    }
    free(rows);
    free(all);
}

/* ---- lists and deadlines ------------------------------------------------------------------------ */

int core_nodes_list(fb_core *c, fb_caller *caller, fb_sandbox_info **out, size_t *n, fb_core_err *err)
{
    fb_sandbox_row *rows = NULL;
    size_t nrows = 0, nn = 0;
    fb_node_record *nodes = NULL;
    fb_err e = {{0}};
    if (fb_store_sandbox_list_all_live(c->store, NULL, &rows, &nrows, &e) < 0 ||
        fb_store_node_list(c->store, &nodes, &nn, &e) < 0) {
        free(rows);
        fb_log("error", caller->request_id, "cannot list sandboxes", json_pack("{s:s}", "error", e.msg));
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the store is unavailable; retry shortly");
    }
    fb_sandbox_info *infos = calloc(nrows ? nrows : 1, sizeof *infos);
    if (!infos) {
        free(rows);
        free(nodes);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < nrows; i++) {
        if (!fb_policy_can_see(&caller->who, rows[i].team_id) || strcmp(rows[i].state, "running") != 0)
            continue; /* another team's, or still being created */
        fb_sandbox_info *o = &infos[k++];
        snprintf(o->id, sizeof o->id, "%.31s", rows[i].id);
        snprintf(o->team_id, sizeof o->team_id, "%s", rows[i].team_id);
        snprintf(o->backend, sizeof o->backend, "%s", rows[i].backend);
        o->memory_mib = rows[i].memory_mib;
        o->vcpus = rows[i].vcpus;
        snprintf(o->created_at, sizeof o->created_at, "%s", rows[i].created_at);
        snprintf(o->expires_at, sizeof o->expires_at, "%s", rows[i].expires_at);
        for (size_t j = 0; j < nn; j++)
            if (strcmp(nodes[j].id, rows[i].node_id) == 0) {
                snprintf(o->node, sizeof o->node, "%s", nodes[j].name);
                snprintf(o->isolation, sizeof o->isolation, "%s", nodes[j].isolation);
            }
        /* What this gateway knows better: the disk, a task. */
        core_sandbox *s = core_registry_get(&c->reg, o->id);
        if (s) {
            core_sandbox_info_of(s, o);
            core_registry_put(c, s);
        }
    }
    free(rows);
    free(nodes);
    *out = infos;
    *n = k;
    return 0;
}

int core_nodes_set_expiry(fb_core *c, core_sandbox *s, const char *expires_at, fb_core_err *err)
{
    fb_err e = {{0}};
    fb_errc code = fb_node_client_set_expiry(s->sb, expires_at, &e);
    if (code == FB_E_NOT_FOUND)
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    if (code != FB_OK) {
        fb_log("error", NULL, "cannot change a deadline on a node",
               json_pack("{s:s, s:s, s:s}", "sandbox", s->id, "node", s->node, "error", e.msg));
        return fb_core_fail(err, FB_CORE_SANDBOX_FAILED, "%s", e.msg);
    }
    if (fb_store_sandbox_set_expiry(c->store, s->id, expires_at, &e) < 0)
        fb_log("error", NULL, "cannot record a new deadline", json_pack("{s:s, s:s}", "sandbox", s->id, "error", e.msg));
    return 0;
}
