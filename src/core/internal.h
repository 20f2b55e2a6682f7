/*
 * internal.h - what the service layer's files share (src/core only).
 *
 * The registry of live sandboxes, the execs linked to them, the live
 * tasks, and the metrics counters.
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
#include "store/tasks.h"

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
    char node[72];              /* nodes.mode remote: the node that runs it */
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
/* ---- live tasks (tasks*.c) ------------------------------------------------------
 *
 * A task is in memory from its creation until it has ended, its thread is
 * joined, nobody holds a reference and its keep time has passed (a
 * succeeded task's for tasks.ttl_s, for follow-up messages; others' for a
 * short grace, for readers of its events); then only the store has it.
 * One mutex (core_tasks.lock) guards every task's mutable fields; each
 * task's condition variable wakes its event readers and its approval
 * wait. */

typedef struct core_task {
    /* fixed at creation */
    char id[32];
    char team_id[FB_ID_MAX], user_id[FB_ID_MAX], key_id[FB_ID_MAX];
    fb_caller creator;              /* who the sandbox is created as */
    char provider[FB_TASK_PROVIDER_MAX], model[FB_TASK_MODEL_MAX];
    char *prompt, *system;          /* system NULL: the engine's default */
    bool has_backend;
    fb_backend_kind backend;
    fb_toolset tools, approvals, held; /* held: approvals and tasks.require_approval, within tools
                                          (what the task's JSON shows as "approvals") */
    bool has_network;
    fb_egress_list network;
    fb_engine_limits limits;
    char created_at[40];
    /* under core_tasks.lock */
    fb_task_state state;
    char started_at[40], finished_at[40];
    char *result;
    char error[512];
    fb_engine_usage usage;
    char sandbox_id[32];
    fb_llm_conv conv;               /* the thread's while it runs */
    json_t **events;                /* events[i] has seq i + 1 */
    size_t nev, evcap;
    pthread_cond_t cond;
    atomic_bool cancel;
    bool cancelled_by_request;
    pthread_t thread;
    bool has_thread, thread_done;
    core_sandbox *sb;               /* the sandbox handed to the next run (a reference) */
    uint64_t keep_until_ns;
    int refs;
    char waiting[FB_ID_MAX];        /* the approval being waited for, or "" */
    int decision;                   /* 0 none yet, 1 approved, 2 denied */
    char decided_by[FB_ID_MAX];
    char decide_reason[256];
} core_task;

typedef struct core_tasks {
    pthread_mutex_t lock;
    pthread_cond_t slots;           /* a running slot came free */
    core_task **items;
    size_t n, cap;
    size_t running;                 /* tasks past the queue */
    bool stopping;                  /* the service is shutting down: no new task, runs
                                       cancelled and left unfinished in the store */
} core_tasks;

struct fb_task_ref {
    core_task *t;                   /* NULL: only in the store */
    char id[32];
    char team_id[FB_ID_MAX];
    char user_id[FB_ID_MAX];
    fb_perm perm;
};

/* The task journal (task_journal.c): transcript events on their way to
 * the store, written in batches by one thread. */
struct journal_item;
typedef struct core_journal {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    struct journal_item *head, **tail;
    uint64_t queued, written;
    pthread_t thread;
    bool running, stopping;
} core_journal;

struct fb_core {
    const fb_config *cfg;
    const char *image_dir;
    fb_store *store;
    char org[160];
    core_registry reg;
    core_journal journal;
    core_tasks tasks;
    pthread_t reaper;
    bool reaper_running;
    volatile sig_atomic_t stopping;
    core_egress *egress;        /* NULL: nothing can be granted (egress.c) */
    struct fb_pool *pools[2];   /* warm pools, [0] vm, [1] jail; NULL: none (pool.c) */
    struct fb_node_client *nodes; /* nodes.mode remote: the nodes run sandboxes (nodes.c); else NULL */
    uint64_t nodes_next_tick_ns;  /* the reaper's next expiry round (nodes.c) */
};

void core_registry_init(core_registry *r);
/* Reserves s in the store (a "creating" record under s->id, counted with
 * every gateway's and node's against the team's quotas) and adds it (sb
 * NULL: being created; refs = table + creator): 0 added, 1 over quota
 * (reason says which, if given), -1 on a store error or out of memory
 * (reason says which). */
int core_registry_reserve(fb_core *c, core_sandbox *s, char *reason, size_t reason_cap);
/* The same, the record owned by node_id (a remote node; NULL: this
 * process's own node id, as core_registry_reserve). */
int core_registry_reserve_on(fb_core *c, core_sandbox *s, const char *node_id, char *reason, size_t reason_cap);
/* The sandbox is up: its clock starts now and lookups find it.  The
 * creator keeps its reference. */
void core_registry_activate(core_registry *r, core_sandbox *s, fb_sandbox *sb, const char *created_at,
                            const char *expires_at, uint64_t expires_ns);
/* nodes.mode remote: caches s (a sandbox attached on a lookup miss)
 * unless an entry of its id is there already; returns a reference to the
 * entry in the table (s or the other one), NULL when out of memory. */
core_sandbox *core_registry_adopt(core_registry *r, core_sandbox *s, fb_sandbox *sb, const char *created_at,
                                  const char *expires_at, uint64_t expires_ns);
/* Creation failed: forget the reservation and free s (memory only). */
void core_registry_drop(core_registry *r, core_sandbox *s);
/* Creation failed: the store record becomes "failed" (its quota given
 * back), then core_registry_drop. */
void core_registry_release(fb_core *c, core_sandbox *s);
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

/* The request, checked against the configured limits, as a sandbox config
 * (and its TTL). */
int core_sandbox_config(fb_core *c, const fb_sandbox_spec *spec, fb_sandbox_config *sc, uint64_t *ttl,
                        fb_core_err *err);

void *core_reaper_main(void *arg);
void core_sandbox_info_of(const core_sandbox *s, fb_sandbox_info *o);

/* ---- nodes.mode remote (nodes.c) ------------------------------------------------------
 * c->nodes is set by core_nodes_open in remote mode only. */
bool core_remote(const fb_core *c);
/* fb_core_permit, where begin asks that an allow's entry be queued in the
 * chain without waiting (caller->audit_inflight; fb_core_audit_flush waits). */
int core_permit(fb_core *c, fb_caller *caller, fb_perm perm, const char *resource, const char *resource_team,
                bool begin, fb_core_err *err);
int core_nodes_open(fb_core *c, fb_err *err);
void core_nodes_close(fb_core *c);
int core_nodes_sandbox_create(fb_core *c, fb_caller *caller, const fb_sandbox_spec *spec, fb_sandbox_info *out,
                              fb_core_err *err);
/* A registry miss: 0 with *out (a reference) when the store has it
 * running and it could be attached; 1 when its record is lost, 2 when its
 * node is down; -1 absent, ended or failing.  team_id gets the owner
 * (for the permission check) whenever the record exists. */
int core_nodes_lookup(fb_core *c, const char *id, core_sandbox **out, char *team_id, size_t team_cap);
/* A cached entry whose record is no longer running is retired ("lost"
 * or released) and false returned; true when it still runs (or the store
 * cannot say: the node will). */
bool core_nodes_still_live(fb_core *c, core_sandbox *s);
/* Finalising a remote entry: DELETE on the node when its end is
 * "destroyed", then the local handle goes. */
void core_nodes_finalise(fb_core *c, core_sandbox *s);
/* The reaper's round (itself paced to nodes.heartbeat_s). */
void core_nodes_tick(fb_core *c);
int core_nodes_list(fb_core *c, fb_caller *caller, fb_sandbox_info **out, size_t *n, fb_core_err *err);
int core_nodes_set_expiry(fb_core *c, core_sandbox *s, const char *expires_at, fb_core_err *err);
/* Destroys a finalised entry's sandbox and records it (registry.c calls
 * this with no lock held). */
void core_sandbox_finalise(fb_core *c, core_sandbox *s);

/* ---- warm pools (pool.c) ------------------------------------------------------------
 * Started by fb_core_open from pool.jail.size / pool.vm.size, stopped (their
 * sandboxes destroyed) first thing in fb_core_shutdown_sandboxes. */
int core_pool_start(fb_core *c, fb_err *err);
/* A booted, assigned sandbox of exactly sc's shape, or NULL (count a miss):
 * the caller has reserved the quota and owns the sandbox. */
fb_sandbox *core_pool_take(fb_core *c, const fb_sandbox_config *sc);
void core_pool_stop(fb_core *c);

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
/* ---- tasks (tasks.c, task_run.c, task_events.c, task_approvals.c) ---------------- */

void core_tasks_init(core_tasks *ts);
/* The journal: started by fb_core_open, stopped (after draining) by
 * fb_core_close before the store closes.  add takes data (malloc'd);
 * flush returns once everything added before it is written. */
int core_journal_start(fb_core *c, fb_err *err);
void core_journal_add(fb_core *c, const char *task_id, uint64_t seq, const char *type, char *data,
                      const char *at);
void core_journal_flush(fb_core *c);
void core_journal_stop(fb_core *c);
/* Start-up: this node's tasks the store has as not ended are failed ("the
 * gateway restarted while the task was running"), their approvals expired. */
void core_tasks_recover(fb_core *c);
/* Shutdown (the first step of fb_core_shutdown_sandboxes, since tasks run
 * in sandboxes): refuses new tasks, cancels every running one and joins
 * the threads (bounded); what was running stays unfinished in the store
 * for the next start-up.  Callable more than once. */
void core_tasks_shutdown(fb_core *c);
void core_tasks_free(core_tasks *ts);
/* A reference to t (lock held by the caller) / dropping one (lock not held). */
void core_task_put(fb_core *c, core_task *t);
/* The task's record, its text fields built from its live state (lock held). */
int core_task_record(const core_task *t, fb_task_record *out);
/* Writes t's record to the store (lock not held); logs a failure. */
void core_task_save(fb_core *c, core_task *t, bool with_conv);
/* Starts the thread that runs t (lock not held). */
int core_task_start(fb_core *c, core_task *t, fb_core_err *err);
/* The thread's body (task_run.c). */
void *core_task_main(void *arg);
/* Appends an event (type, data stolen) to t's transcript: numbered, kept,
 * stored and announced to readers (lock not held). */
void core_task_emit(fb_core *c, core_task *t, const char *type, json_t *data);
/* The same for a task only the store has (start-up recovery). */
void core_task_emit_stored(fb_core *c, const char *task_id, const char *type, json_t *data);
/* Waits on t's condition variable for at most ms (tasks lock held). */
void core_task_timedwait(fb_core *c, core_task *t, uint64_t ms);
/* Sets t's state and announces it with a "state" event (lock not held). */
void core_task_set_state(fb_core *c, core_task *t, fb_task_state s);
/* The engine's authorize hook (task_approvals.c): decides, audits and,
 * for held calls, waits for a person.  user is the core_task_run. */
typedef struct core_task_run {
    fb_core *c;
    core_task *t;
    fb_engine_run *run;
} core_task_run;
fb_verdict core_task_authorize(void *user, const fb_llm_tool_call *call, int tool, char *reason, size_t cap);

/* ---- metrics (metrics.c) ------------------------------------------------------- */

void core_metrics_sandbox_created(const char *outcome);
void core_metrics_exec_duration(double seconds);
char *core_metrics_render(core_registry *r);

/* ---- small helpers (core.c) ------------------------------------------------------ */

void core_new_id(const char *prefix, char *out, size_t cap);
/* Maps an auth status to a typed error. */
int core_auth_error(int st, const fb_err *e, fb_core_err *err);

#endif
