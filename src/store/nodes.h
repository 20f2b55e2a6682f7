/*
 * nodes.h - the node repository: the hosts that run sandboxes for gateways
 * (`forgebox node`, docs/node-api.md), as the shared store knows them.
 *
 * A node registers itself when it starts (its id is its own
 * STATE_DIR/node.id, its name the one in its certificate), then writes a
 * heartbeat every nodes.heartbeat_s.  Any process sharing the store may
 * run fb_store_nodes_expire: a node whose heartbeat is older than
 * nodes.down_after_s goes "down" and every sandbox record it still held
 * live becomes "lost", in one transaction, so that two gateways expiring
 * at once cannot disagree.  A down node's heartbeat is refused (it learns
 * it was declared down and must destroy what it still runs, then register
 * again); it never brings its lost sandboxes back.
 *
 * Heartbeats are compared in whole seconds of the store writer's clock
 * (unix time, written by the same clock that compares them), not as text.
 */
#ifndef FB_STORE_NODES_H
#define FB_STORE_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "store/store.h"

#define FB_NODE_NAME_MAX 72      /* a certificate name (ca.h: 1-64 chars) + NUL */
#define FB_NODE_ADDR_MAX 272     /* "host:port" */

typedef struct fb_node_record {
    char id[FB_STORE_NODE_ID_MAX];   /* "nd_..." */
    char name[FB_NODE_NAME_MAX];
    char address[FB_NODE_ADDR_MAX];  /* where /node/v1 listens: "HOST:PORT" */
    char backend[8];                 /* "vm" or "jail" */
    char isolation[16];              /* "kvm", "tcg" or "namespaces" */
    uint64_t capacity;               /* sandboxes it accepts at once */
    uint64_t memory_mib;             /* memory it offers sandboxes, in all */
    char state[12];                  /* "up", "down" (silent too long) or "stopped" (said goodbye) */
    char registered_at[40];          /* RFC 3339 */
    char heartbeat_at[40];
    int64_t heartbeat_unix;          /* seconds */
    uint64_t live;                   /* its sandbox records creating or running (list/get only) */
    uint64_t live_memory_mib;        /* their memory */
} fb_node_record;

/* Registers r (id, name, address, backend, isolation, capacity,
 * memory_mib) as "up" with a heartbeat of now.  A node that registers
 * again under the same id replaces its row.  FB_STORE_ECOLLISION when
 * another id holds the name and is "up" (two nodes may not share a name;
 * a down or stopped one's name is taken over).  In the same transaction
 * every sandbox record of this node id still creating or running is marked
 * "lost": a node that starts holds no sandboxes, whatever it held before
 * (a restart faster than nodes.down_after_s, so no gateway expired it).
 * Their ids, sorted, go to *lost (malloc'd, NULL when *nlost == 0) so that
 * the caller audits each; lost and nlost may each be NULL. */
int fb_store_node_register(fb_store *st, const fb_node_record *r, char (**lost)[FB_ID_MAX], size_t *nlost,
                           fb_err *err);

/* Writes node_id's heartbeat.  *still_up false (and nothing written) when
 * the node is no longer "up": it was declared down, its sandboxes lost. */
int fb_store_node_heartbeat(fb_store *st, const char *node_id, bool *still_up, fb_err *err);

/* A clean stop: state "stopped" (its sandboxes must already be ended). */
int fb_store_node_stop(fb_store *st, const char *node_id, fb_err *err);

/* Every node, "up" ones first, each with live and live_memory_mib
 * counted from the sandbox records (*out malloc'd; NULL when *n == 0). */
int fb_store_node_list(fb_store *st, fb_node_record **out, size_t *n, fb_err *err);
/* One node by id.  FB_STORE_ENOTFOUND when absent. */
int fb_store_node_get(fb_store *st, const char *node_id, fb_node_record *out, fb_err *err);

/* Marks every "up" node whose heartbeat is older than down_after_s
 * seconds "down", and every sandbox record those nodes held creating or
 * running "lost" (destroyed_at now), in one transaction.  The ids of the
 * newly lost sandboxes go to *lost (malloc'd, NULL when *nlost == 0), so
 * that the caller can audit them and drop them from memory. */
int fb_store_nodes_expire(fb_store *st, uint64_t down_after_s, size_t *nodes_down, char (**lost)[FB_ID_MAX],
                          size_t *nlost, fb_err *err);

#endif
