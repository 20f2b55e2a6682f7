/*
 * sandboxes.h - the sandbox repository: the record a gateway keeps of each
 * sandbox it runs (who owns it, what it was given, its state), so that
 * what a crashed gateway left behind can be found and closed.
 *
 * Each record belongs to the node that created it (fb_store_node_id):
 * several gateways sharing one store each see and reap only their own.
 * Records written before schema version 2 have no node ("") and are
 * treated as the first node's to start: before version 2 one store had one
 * gateway.  Times are canonical RFC 3339 (common/time.h).
 *
 * Durability: a write is durable when the call returns, except the record
 * of a local sandbox (one this process runs) where the caller says so
 * (fb_sandbox_record.local, fb_store_sandbox_activate,
 * fb_store_sandbox_set_state_local): on SQLite that write becomes durable
 * with the next commit that syncs - the audit commit a create or delete
 * makes before it answers - and a crash that loses it takes the machine,
 * and so the sandbox, with it; the gateway that starts next reaps this
 * node's live records (sql.h, fb_sql_relaxed; docs/audit.md,
 * "Durability").  A node's sandbox outlives a gateway: its records are
 * always durable, as are all records on PostgreSQL.
 */
#ifndef FB_STORE_SANDBOXES_H
#define FB_STORE_SANDBOXES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "policy/policy.h"
#include "store/store.h"

typedef struct fb_sandbox_record {
    const char *id;
    const char *team_id;
    const char *key_id;     /* "" or NULL when not created through a key */
    const char *backend;    /* "vm" or "jail" */
    uint64_t memory_mib;
    uint64_t vcpus;
    const char *created_at; /* RFC 3339 */
    const char *expires_at;
    bool local;             /* run by this process: durable with the next audit commit (above) */
} fb_sandbox_record;

/* Records r as running on this node.  ENOTFOUND for an unknown team,
 * ECOLLISION if the id exists. */
int fb_store_sandbox_insert(fb_store *st, const fb_sandbox_record *r, fb_err *err);

/* Sets the state: "creating", "running", "destroyed", "failed" or "lost"
 * (else EINVAL); the three final states also set destroyed_at to now.  A
 * record already "lost" stays lost (a node that comes back cannot revive
 * it): setting any other state on it is FB_STORE_ECONFLICT.
 * ENOTFOUND if there is no such record. */
int fb_store_sandbox_set_state(fb_store *st, const char *id, const char *state, fb_err *err);
/* The same for a local sandbox's record (durable with the next audit
 * commit, above): its end when it is destroyed. */
int fb_store_sandbox_set_state_local(fb_store *st, const char *id, const char *state, fb_err *err);

/* Reserves a place for r against its team's quota across every gateway
 * and node sharing the store: counts the team's records "creating" or
 * "running" (their number, memory and vCPUs), decides with
 * fb_policy_quota against lim and, if allowed, inserts r as "creating"
 * owned by node_id (NULL: this process's own node id) - all under the
 * store's writer lock, so two gateways racing for a team's last slot
 * cannot both win.  Returns 0 when reserved, 1 when over quota (reason
 * says which, as fb_policy_quota words it), -1 on error (ENOTFOUND for an
 * unknown team, ECOLLISION if the id exists).  fb_store_sandbox_set_state
 * "running" then confirms it, "failed" gives the place back. */
int fb_store_sandbox_reserve(fb_store *st, const fb_sandbox_record *r, const char *node_id,
                             const fb_quota_limits *lim, char *reason, size_t reason_cap, fb_err *err);

/* Confirms a reservation made under a provisional id (a local sandbox is
 * named by the sandbox module only once it has booted): the record takes
 * the sandbox's own id, its start and expiry, and becomes "running", in
 * one statement.  ENOTFOUND when there is no record reserved_id,
 * ECONFLICT when it is no longer "creating" (lost meanwhile), ECOLLISION
 * when id is taken.  reserved_id == id is allowed.  Local sandboxes only:
 * durable with the next audit commit (above). */
int fb_store_sandbox_activate(fb_store *st, const char *reserved_id, const char *id, const char *created_at,
                              const char *expires_at, fb_err *err);

/* A record as read back (for a gateway that did not create the sandbox). */
typedef struct fb_sandbox_row {
    char id[FB_ID_MAX];
    char team_id[FB_ID_MAX];
    char key_id[FB_ID_MAX];          /* "" when none */
    char backend[8];
    uint64_t memory_mib, vcpus;
    char state[12];                  /* creating, running, destroyed, failed, lost */
    char created_at[40], expires_at[40], destroyed_at[40];
    char node_id[FB_STORE_NODE_ID_MAX];
} fb_sandbox_row;

/* One record by id, whoever owns it.  FB_STORE_ENOTFOUND when absent. */
int fb_store_sandbox_get(fb_store *st, const char *id, fb_sandbox_row *out, fb_err *err);
/* The live records ("creating" or "running") of every node, or of one
 * team when team_id is non-NULL (*out malloc'd; NULL when *n == 0). */
int fb_store_sandbox_list_all_live(fb_store *st, const char *team_id, fb_sandbox_row **out, size_t *n,
                                   fb_err *err);
/* A new expiry (RFC 3339) for a live record. */
int fb_store_sandbox_set_expiry(fb_store *st, const char *id, const char *expires_at, fb_err *err);

/* The ids of this node's records still "creating" or "running", into a
 * malloc'd array (NULL when *n == 0; the caller frees). */
int fb_store_sandbox_list_live(fb_store *st, char (**ids)[FB_ID_MAX], size_t *n, fb_err *err);

#endif
