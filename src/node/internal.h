/*
 * internal.h - what the node's own files share (server.c, service.c,
 * heartbeat.c, node.c): the running node and its registry of sandboxes.
 *
 * The registry is the node's whole memory of what it runs: one entry per
 * sandbox a gateway asked for (under the gateway's id), each with the
 * execs started in it.  Entries are reference-counted: a request holds
 * one while it uses a sandbox, and the sandbox is destroyed when it has
 * left the registry (delete, expiry, shutdown, "declared down") and the
 * last holder lets go - after fb_sandbox_kill has ended whatever the
 * holders were waiting for.  One lock guards the registry; nothing that
 * blocks (a boot, a transfer, an exec's events) runs under it.
 */
#ifndef FB_NODE_INTERNAL_H
#define FB_NODE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <microhttpd.h>

#include "common/time.h"
#include "gateway/mtls.h"
#include "node/verdicts.h"
#include "node/node.h"
#include "policy/policy.h"
#include "proto/errors.h"
#include "sandbox/pool.h"
#include "store/nodes.h"
#include "store/store.h"

/* A sandbox id as gateways give it: 1-63 of [A-Za-z0-9_-], a letter first. */
#define NODE_SB_ID_MAX 64
/* Execs a sandbox keeps for readers; beyond, the oldest ended one goes. */
#define NODE_EXECS_KEPT 64
/* Request bodies other than files and stdin. */
#define NODE_BODY_MAX (1u << 20)
/* One stdin call. */
#define NODE_STDIN_MAX (1u << 20)
/* A quiet exec's keep-alive line, every this many seconds. */
#define NODE_KEEPALIVE_S 10

typedef struct node_exec {
    uint64_t id;
    fb_exec *x;
    int in_fd;               /* the write end of its stdin pipe; -1: none or closed */
    bool had_stdin;
    pthread_mutex_t in_lock; /* one stdin writer at a time */
    unsigned refs;           /* under the node's lock */
    bool dropped;            /* out of its sandbox's list */
    struct node_exec *next;
} node_exec;

typedef struct node_sb {
    char id[NODE_SB_ID_MAX];
    char team_id[FB_ID_MAX];
    uint64_t memory_mib, vcpus;
    char isolation[16];
    char created_at[FB_TIME_MAX];
    char expires_at[FB_TIME_MAX];
    struct timespec expires;
    fb_sandbox *sb;          /* NULL while it boots */
    unsigned refs;           /* under the node's lock */
    bool gone;               /* out of the registry: destroyed when refs reach 0 */
    node_exec *execs;        /* newest first */
    size_t nexecs;
    struct node_sb *next;
} node_sb;

typedef struct fb_node {
    const fb_node_options *opt;
    const fb_config *cfg;
    fb_store *st;
    char id[FB_STORE_NODE_ID_MAX];
    char name[FB_NODE_NAME_MAX];
    char address[FB_NODE_ADDR_MAX];
    fb_backend_kind backend;
    char isolation[16];
    uint64_t capacity;
    uint64_t memory_mib;

    pthread_mutex_t lock;
    pthread_cond_t wake;     /* the reaper and the heartbeat sleep on it */
    node_sb *sbs;
    size_t count;            /* entries, booting ones included */
    bool stopping;

    fb_pool *pool;
    gw_mtls *mtls;
    nv_cache *verdicts;             /* gateway chains accepted (verdicts.h) */
    struct gw_failgate *failgate; /* refusals audited per source (gateway/ratelimit.h) */
    struct MHD_Daemon *daemon;
    pthread_t reaper, heart;
    bool reaper_on, heart_on;
} fb_node;

/* ---- service.c ------------------------------------------------------------------ */

/* Whether id is a well-formed sandbox id. */
bool node_valid_sb_id(const char *id);
/* Takes a place for a new sandbox: FB_OK with *out (one reference, no
 * sandbox yet), FB_E_EXISTS for an id it holds, FB_E_BUSY when full
 * (capacity), FB_E_STATE when stopping. */
fb_errc node_sb_reserve(fb_node *n, const char *id, const char *team_id, node_sb **out);
/* The booted sandbox goes into the place. */
void node_sb_activate(fb_node *n, node_sb *s, fb_sandbox *sb, const char *created_at, const char *expires_at,
                      const struct timespec *expires);
/* A running sandbox by id, with a reference (NULL: none, or still booting). */
node_sb *node_sb_get(fb_node *n, const char *id);
void node_sb_put(fb_node *n, node_sb *s);
/* Takes s out of the registry (killing it at once); destroyed when the
 * last reference goes.  false if it was out already. */
bool node_sb_remove(fb_node *n, node_sb *s);
/* Takes every sandbox out; their ids (malloc'd) for the records. */
size_t node_sb_remove_all(fb_node *n, char (**ids)[NODE_SB_ID_MAX]);
size_t node_sb_count(fb_node *n);

/* A new exec's entry (takes x's reference and in_fd): FB_OK with *out
 * referenced, FB_E_BUSY when NODE_EXECS_KEPT are kept and none ended. */
fb_errc node_exec_add(fb_node *n, node_sb *s, fb_exec *x, int in_fd, node_exec **out);
node_exec *node_exec_get(fb_node *n, node_sb *s, uint64_t id);
void node_exec_put(fb_node *n, node_exec *e);

/* Records a sandbox's state in the store; a record already lost stays so. */
void node_record_state(fb_node *n, const char *id, const char *state, const char *request_id);
/* One audit entry of the node's own decisions. */
void node_audit(fb_node *n, const char *event, const char *actor, const char *resource, const char *action,
                const char *outcome, const char *reason, const char *ip, const char *request_id);

/* The expiry reaper (a thread until node_reaper_stop). */
int node_reaper_start(fb_node *n, fb_err *err);
void node_reaper_stop(fb_node *n);

/* ---- heartbeat.c ------------------------------------------------------------------- */

/* Registers the node (old live records become lost). */
int node_register(fb_node *n, bool again, fb_err *err);
int node_heartbeat_start(fb_node *n, fb_err *err);
void node_heartbeat_stop(fb_node *n);

/* ---- server.c ---------------------------------------------------------------------- */

/* Starts the /node/v1 listener (HTTPS, mutual TLS). */
int node_server_start(fb_node *n, const char *cert_pem, const char *key_pem, fb_err *err);
void node_server_quiesce(fb_node *n);
void node_server_stop(fb_node *n);

#endif
