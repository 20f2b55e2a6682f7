/*
 * internal.h - what the service layer's files share (src/core only).
 *
 * The registry of live sandboxes, the execs linked to them, and the
 * metrics counters.
 */
#ifndef FB_CORE_INTERNAL_H
#define FB_CORE_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "common/time.h"
#include "core/core.h"
#include "policy/policy.h"
#include "store/sandboxes.h"
#include "store/store.h"

/* ---- live sandboxes (registry.c) -------------------------------------------
 *
 * An entry is reference-counted.  The table itself holds one reference
 * while the sandbox is live; retiring it (delete, TTL, shutdown) marks it
 * dying, kills it (which ends its execs) and drops the table's reference.
 * Whoever drops the last reference finalises: destroys the sandbox,
 * records its end and removes the entry, which until then still counts
 * against its team's quota.  Nobody ever waits for anybody's exec. */

typedef struct core_exec core_exec;

typedef struct core_sandbox {
    char id[32];
    char team_id[40];
    char key_id[40];
    char backend[8];
    char isolation[16];
    uint64_t memory_mib, vcpus, disk_mib;
    uint64_t ttl_s;
    char created_at[40], expires_at[40];
    uint64_t expires_ns;        /* monotonic deadline; 0 until active */
    fb_sandbox *sb;             /* NULL while being created; any number of execs and
                                   transfers use it at once */
    int refs;
    bool dying;
    char end_state[16];         /* recorded when finalised */
    char task_id[32];           /* "" unless a task's sandbox */
    fb_egress_list *network;    /* the egress grant (owned), NULL: no network */
    core_exec *execs;           /* running and recently finished, newest first
                                   (execs.c, under the registry lock) */
} core_sandbox;

typedef struct core_registry {
    pthread_mutex_t lock;
    core_sandbox **items;
    size_t n, cap;
} core_registry;

struct fb_sb_ref {
    core_sandbox *s;
    fb_perm perm;               /* what it was opened for */
};

typedef struct core_egress core_egress;

struct fb_core {
    const fb_config *cfg;
    const char *image_dir;
    fb_store *store;
    char org[160];
    core_registry reg;
    pthread_t reaper;
    bool reaper_running;
    volatile sig_atomic_t stopping;
    core_egress *egress;        /* NULL: nothing can be granted (egress.c) */
};

void core_registry_init(core_registry *r);
/* Adds s (sb NULL: being created; refs = table + creator) if the team
 * stays within its quotas (policy decides): 0 added, 1 over quota (reason
 * says which, if given), -1 out of memory. */
int core_registry_reserve(fb_core *c, core_sandbox *s, char *reason, size_t reason_cap);
/* The sandbox is up: its clock starts now and lookups find it.  The
 * creator keeps its reference. */
void core_registry_activate(core_registry *r, core_sandbox *s, fb_sandbox *sb, const char *created_at,
                            const char *expires_at, uint64_t expires_ns);
/* Creation failed: forget the reservation and free s. */
void core_registry_drop(core_registry *r, core_sandbox *s);
/* A reference, or NULL if absent, dying or not yet up. */
core_sandbox *core_registry_get(core_registry *r, const char *id);
void core_registry_put(fb_core *c, core_sandbox *s);
/* Retires s: dying, killed, execs cancelled, table reference dropped.
 * false if it was already retiring.  Never waits. */
bool core_registry_retire(fb_core *c, core_sandbox *s, const char *end_state);
/* Snapshots (each returns references the caller puts back). */
size_t core_registry_expired(core_registry *r, uint64_t now_ns, core_sandbox **out, size_t max);
size_t core_registry_all(core_registry *r, core_sandbox **out, size_t max);
size_t core_registry_count(core_registry *r, const char *backend);
/* Entries that are up (live or dying), not those being created. */
size_t core_registry_size(core_registry *r);

/* ---- execs (execs.c) -------------------------------------------------------------
 * Called by the reaper every round: notes the end of execs nobody is
 * watching (audit, metrics) and cancels streamed execs whose client has
 * been gone longer than limits.exec_reattach_s.  Never blocks. */
void core_execs_sweep(fb_core *c);
/* The sandbox is destroyed (its execs have ended): notes them and lets
 * them go.  Handles held elsewhere stay readable. */
void core_execs_forget(fb_core *c, core_sandbox *s);

/* ---- sandbox lifecycle helpers (sandboxes.c) ---------------------------------- */

void *core_reaper_main(void *arg);
/* Destroys a finalised entry's sandbox and records it (registry.c calls
 * this with no lock held). */
void core_sandbox_finalise(fb_core *c, core_sandbox *s);

/* ---- egress (egress.c) -----------------------------------------------------------
 * The gateway's egress proxy and its audit drainer: started by fb_core_open
 * when network.allow is not empty (otherwise c->egress stays NULL), stopped
 * by fb_core_close after every sandbox is gone. */
int core_egress_open(fb_core *c, fb_err *err);
void core_egress_close(fb_core *c);
/* Before booting: points sc's bridge at the proxy (UNAVAILABLE without one). */
int core_egress_wire(fb_core *c, fb_sandbox_config *sc, fb_core_err *err);
/* Once booted: the sandbox's grant, and who it belongs to for the audit
 * entries of its connections. */
int core_egress_grant(fb_core *c, const char *sandbox_id, const char *team_id, const char *task_id,
                      const char *actor, const fb_egress_list *grant, fb_err *err);
/* Takes the grant away: closes the sandbox's listener and open tunnels
 * (each audited).  Unknown ids are fine. */
void core_egress_revoke(fb_core *c, const char *sandbox_id);

/* ---- metrics (metrics.c) ------------------------------------------------------- */

void core_metrics_sandbox_created(const char *outcome);
void core_metrics_exec_duration(double seconds);
char *core_metrics_render(core_registry *r);

/* ---- small helpers (core.c) ------------------------------------------------------ */

void core_new_id(const char *prefix, char *out, size_t cap);
/* Maps an auth status to a typed error. */
int core_auth_error(int st, const fb_err *e, fb_core_err *err);

#endif
