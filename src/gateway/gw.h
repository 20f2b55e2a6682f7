/*
 * gw.h - the gateway's internal pieces, shared by its .c files only.
 *
 * The gateway is libmicrohttpd in thread-per-connection mode: a slow or
 * stalled client holds only its own thread (and is cut off by the
 * connection timeout), never anyone else's.  A request is read into a
 * capped buffer, authenticated, authorised, handled, audited and answered
 * with JSON; every step that can say no says it with the right status and
 * an {"error": {"code", "message"}} body, and the request id travels in
 * the X-Request-Id header, the log line and the audit entry.
 */
#ifndef FB_GW_H
#define FB_GW_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include "sandbox/sandbox.h"

typedef struct fb_gateway fb_gateway;

/* ---- live sandboxes (registry.c) ---------------------------------------- */

typedef struct gw_sandbox {
    char id[32];
    char team_id[40];
    char key_id[40];
    char backend[8];
    uint64_t memory_mib, vcpus, disk_mib;
    char created_at[40], expires_at[40];
    uint64_t expires_ns;        /* monotonic deadline for the reaper */
    fb_sandbox *sb;
    pthread_mutex_t use;        /* one exec or transfer at a time */
    int refs;                   /* registry lookups in flight */
    bool dying;                 /* deleted or expired: no new users */
} gw_sandbox;

typedef struct gw_registry {
    pthread_mutex_t lock;
    gw_sandbox **items;
    size_t n, cap;
} gw_registry;

void gw_registry_init(gw_registry *r);
/* Adds s (sb still NULL: being created) if the team stays within its
 * quotas: 0 added, 1 over quota, -1 out of memory. */
int gw_registry_reserve(gw_registry *r, gw_sandbox *s, uint64_t max_count, uint64_t max_memory_mib);
/* The sandbox is up: lookups may find it from now on. */
void gw_registry_activate(gw_registry *r, gw_sandbox *s, fb_sandbox *sb);
/* Creation failed: forget the reservation. */
void gw_registry_drop(gw_registry *r, gw_sandbox *s);
/* Takes a reference; NULL if absent or dying.  Release with gw_sandbox_put. */
gw_sandbox *gw_registry_get(gw_registry *r, const char *id);
void gw_sandbox_put(gw_registry *r, gw_sandbox *s);
/* Marks dying and removes from the registry; the caller destroys once the
 * last reference is gone (gw_registry_take waits for that). */
gw_sandbox *gw_registry_take(gw_registry *r, const char *id);
/* Kills the sandbox's process (QEMU or the jail's init) at once, so that
 * execs in flight end now; then gw_registry_take waits only briefly. */
void gw_sandbox_kill(gw_registry *r, const char *id);
/* Snapshot of the ids of sandboxes past their deadline. */
size_t gw_registry_expired(gw_registry *r, uint64_t now_ns, char (*ids)[32], size_t max);
size_t gw_registry_count(gw_registry *r, const char *backend);
/* Snapshot copy of all ids (for shutdown). */
size_t gw_registry_ids(gw_registry *r, char (*ids)[32], size_t max);

/* ---- sandbox creation on a long-lived thread (spawner.c) ----------------
 * A sandbox's processes carry a parent-death signal tied to the *thread*
 * that created them; request threads come and go, so every create runs on
 * one thread that lives as long as the gateway. */
int gw_spawner_start(void);
void gw_spawner_stop(void);
int gw_spawn_sandbox(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);

/* ---- token buckets per API key (ratelimit.c) ----------------------------- */

typedef struct gw_ratelimit gw_ratelimit;
gw_ratelimit *gw_ratelimit_new(double rate_per_s, double burst);
void gw_ratelimit_free(gw_ratelimit *rl);
/* 0 if allowed; otherwise the seconds to wait before retrying (>= 1). */
int gw_ratelimit_take(gw_ratelimit *rl, const char *key_id);

/* ---- metrics (metrics.c) -------------------------------------------------- */

void gw_metrics_request(const char *route, int status);
void gw_metrics_auth_failure(void);
void gw_metrics_sandbox_created(const char *outcome);
void gw_metrics_exec_duration(double seconds);
/* Prometheus text; active sandboxes come from the registry. */
char *gw_metrics_render(gw_registry *r);

/* ---- logging (log.c) ------------------------------------------------------ */

/* One JSON object per line on stderr.  Fields named like secrets
 * (key, token, password, secret, authorization) are redacted. */
void gw_log(const char *level, const char *request_id, const char *msg, json_t *fields /* stolen */);
void gw_log_set_level(const char *level);

#endif
