/*
 * node.h - `forgebox node`: a host that runs sandboxes for gateways.
 *
 * A node owns the sandboxes it boots (their records carry its node id),
 * serves them to gateways over the internal API of docs/node-api.md
 * (HTTPS, TLS 1.3, gateway certificates from the organisation CA only),
 * registers itself in the shared store and writes a heartbeat, destroys
 * its sandboxes at their deadline by itself, and, when it finds it was
 * declared down, destroys everything it still runs: lost sandboxes never
 * come back.
 *
 * The gateway side - placing a sandbox on a node and driving it through
 * sandbox.h as if it were local - is client.h.
 */
#ifndef FB_NODE_H
#define FB_NODE_H

#include <stdint.h>

#include "common/util.h"
#include "config/config.h"
#include "sandbox/sandbox.h"

typedef struct fb_node_options {
    const char *name;        /* --name: must equal the name in the certificate */
    const char *listen;      /* --listen HOST:PORT */
    const char *advertise;   /* --advertise HOST:PORT gateways dial (NULL: listen) */
    const char *state_dir;   /* --state-dir: node.id, image cache, keys */
    const char *store_url;   /* --store URL (the gateways' store) */
    fb_backend_kind backend; /* --backend vm|jail */
    uint64_t capacity;       /* --capacity N sandboxes (0: from the host's memory) */
    const char *tls_cert;    /* --tls-cert, --tls-key: the node's certificate (role node) */
    const char *tls_key;
    const char *tls_ca;      /* --tls-ca: the organisation CA gateways' certificates chain to */
    const char *tls_crl;     /* --tls-crl (NULL: none) */
    const fb_config *cfg;    /* --config: limits, sandbox.*, pool.*, nodes.heartbeat_s */
    const char *image_dir;
} fb_node_options;

/* Runs the node until SIGTERM/SIGINT: registers, serves, heartbeats; on
 * the way out destroys its sandboxes and marks itself stopped.  Returns
 * 0 after a clean stop, -1 (err) when it cannot start. */
int fb_node_run(const fb_node_options *opt, fb_err *err);

#endif
