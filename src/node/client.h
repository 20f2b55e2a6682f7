/*
 * client.h - the gateway's side of docs/node-api.md: sandboxes that run on
 * a node, driven through the ordinary sandbox.h interface.
 *
 * fb_node_client_create boots a sandbox on a node and returns an
 * fb_sandbox whose execs, file transfers, kill and destroy go to that node
 * over mutual TLS; fb_node_client_attach does the same for a sandbox
 * another gateway created (any gateway can serve any sandbox).  core sees
 * an fb_sandbox like any other (fb_sandbox_isolation says what the node
 * runs), so execs.c and files.c do not change for remote mode.  An exec's
 * events stream from the node into a local event log of the same kind a
 * local exec has, so attach, replay and several readers work the same.
 *
 * Every call checks the node's certificate (role node, the registered
 * name) before it sends a byte.  A node that cannot be reached ends the
 * sandbox's calls with FB_E_SANDBOX_ENDED and a message naming the node.
 */
#ifndef FB_NODE_CLIENT_H
#define FB_NODE_CLIENT_H

#include "common/util.h"
#include "config/config.h"
#include "sandbox/sandbox.h"
#include "store/nodes.h"

typedef struct fb_node_client fb_node_client;

/* The gateway's identity toward nodes: cfg->nodes.tls_cert/key/ca/crl. */
int fb_node_client_open(const fb_config *cfg, fb_node_client **out, fb_err *err);
void fb_node_client_free(fb_node_client *nc);

typedef struct fb_node_sandbox_req {
    const char *id;          /* the gateway's sandbox id, already reserved in the store */
    const char *team_id;
    const fb_sandbox_config *cfg;
    const char *expires_at;  /* RFC 3339 */
} fb_node_sandbox_req;

/* Boots req's sandbox on node (POST /node/v1/sandboxes).  FB_E_OTHER with
 * "capacity" in err when the node is full (try the next one). */
fb_errc fb_node_client_create(fb_node_client *nc, const fb_node_record *node, const fb_node_sandbox_req *req,
                              fb_sandbox **out, fb_err *err);
/* A handle on a sandbox node already runs (no call is made). */
fb_errc fb_node_client_attach(fb_node_client *nc, const fb_node_record *node, const char *sandbox_id,
                              const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);
/* PATCH .../sandboxes/{id}: a new deadline on the node. */
fb_errc fb_node_client_set_expiry(fb_sandbox *sb, const char *expires_at, fb_err *err);
/* DELETE .../sandboxes/{id}: destroys the sandbox on its node (a 404 -
 * already gone - is success).  fb_sandbox_destroy afterwards releases the
 * local handle only: a gateway that shuts down releases its handles and
 * leaves the sandboxes to the others. */
fb_errc fb_node_client_delete(fb_sandbox *sb, fb_err *err);
/* The name of the node a remote sandbox runs on ("" for a local one). */
const char *fb_node_client_node_name(fb_sandbox *sb);

/* Called (from any thread) whenever a node's certificate is refused, so
 * that core can audit it: verdict as fb_ca_verdict_name spells it. */
typedef void (*fb_node_refusal_fn)(void *ctx, const char *node_name, const char *verdict, const char *reason);
void fb_node_client_on_refusal(fb_node_client *nc, fb_node_refusal_fn fn, void *ctx);

/* GET /node/v1/healthz (for `forgebox doctor` and tests). */
fb_errc fb_node_client_health(fb_node_client *nc, const fb_node_record *node, fb_err *err);

#endif
