/*
 * heartbeat.c - the node in the shared store: registration, a heartbeat
 * every nodes.heartbeat_s, and what the node does when the heartbeat
 * finds it was declared down (internal.h, docs/node-api.md).
 *
 * A gateway marks a silent node down and its sandboxes lost in one
 * transaction; the lost records never come back.  So a node that learns
 * it was declared down (it was paused, or cut off from the store, longer
 * than nodes.down_after_s) destroys everything it still runs without
 * touching those records - whoever used them was already told "lost" -
 * and registers again, empty.  A store it cannot reach is logged and
 * retried on the next beat; the node keeps serving meanwhile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "node/internal.h"

int node_register(fb_node *n, bool again, fb_err *err)
{
    fb_node_record r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", n->id);
    snprintf(r.name, sizeof r.name, "%s", n->name);
    snprintf(r.address, sizeof r.address, "%s", n->address);
    snprintf(r.backend, sizeof r.backend, "%s", fb_backend_name(n->backend));
    snprintf(r.isolation, sizeof r.isolation, "%s", n->isolation);
    r.capacity = n->capacity;
    r.memory_mib = n->memory_mib;
    size_t lost = 0;
    char (*ids)[FB_ID_MAX] = NULL;
    if (fb_store_node_register(n->st, &r, &ids, &lost, err) < 0)
        return -1;
    /* Records this node id still held live: its previous process died (or
     * it was declared down) and came back before any gateway expired it.
     * Each gets the entry a gateway writes for a sandbox it marks lost. */
    for (size_t i = 0; i < lost; i++)
        node_audit(n, "sandbox", "system", ids[i], "lost", "error",
                   again ? "its node was declared down and registered again"
                         : "its node restarted (the sandbox did not survive its process)",
                   "", "");
    free(ids);
    char why[512];
    snprintf(why, sizeof why, "%s %s capacity %llu; %zu live record(s) of this node marked lost",
             again ? "registered again after being declared down:" : "registered:", n->address,
             (unsigned long long)n->capacity, lost);
    node_audit(n, "node", "system", n->name, "register", "allowed", why, "", "");
    fb_log("info", NULL, "node registered",
           json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "id", n->id, "name", n->name, "address", n->address,
                     "capacity", (json_int_t)n->capacity, "lost", (json_int_t)lost, "again", again));
    return 0;
}

/* Declared down: everything still running goes, its records untouched. */
static void declared_down(fb_node *n)
{
    char (*ids)[NODE_SB_ID_MAX] = NULL;
    size_t k = node_sb_remove_all(n, &ids);
    for (size_t i = 0; i < k; i++)
        node_audit(n, "node", "system", ids[i], "destroy", "allowed",
                   "the node was declared down; its sandbox is lost and was destroyed here", "", "");
    fb_log("warn", NULL, "this node was declared down: destroyed its sandboxes, registering again",
           json_pack("{s:I}", "destroyed", (json_int_t)k));
    free(ids);
}

static void *heart_main(void *arg)
{
    fb_node *n = arg;
    uint64_t every = n->cfg->nodes.heartbeat_s ? n->cfg->nodes.heartbeat_s : 2;
    bool need_register = false;
    pthread_mutex_lock(&n->lock);
    while (!n->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)every;
        while (!n->stopping && pthread_cond_timedwait(&n->wake, &n->lock, &until) != ETIMEDOUT)
            ;
        if (n->stopping)
            break;
        pthread_mutex_unlock(&n->lock);
        fb_err err = {{0}};
        if (need_register) {
            if (node_register(n, true, &err) == 0)
                need_register = false;
            else
                fb_log("error", NULL, "cannot register again", json_pack("{s:s}", "error", err.msg));
        } else {
            bool up = true;
            if (fb_store_node_heartbeat(n->st, n->id, &up, &err) < 0) {
                fb_log("error", NULL, "cannot write the heartbeat", json_pack("{s:s}", "error", err.msg));
            } else if (!up) {
                declared_down(n);
                if (node_register(n, true, &err) < 0) {
                    need_register = true;
                    fb_log("error", NULL, "cannot register again", json_pack("{s:s}", "error", err.msg));
                }
            }
        }
        pthread_mutex_lock(&n->lock);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

int node_heartbeat_start(fb_node *n, fb_err *err)
{
    if (pthread_create(&n->heart, NULL, heart_main, n) != 0)
        return fb_fail(err, "cannot start the heartbeat thread");
    n->heart_on = true;
    return 0;
}

void node_heartbeat_stop(fb_node *n)
{
    if (!n->heart_on)
        return;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    pthread_cond_broadcast(&n->wake);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->heart, NULL);
    n->heart_on = false;
}
