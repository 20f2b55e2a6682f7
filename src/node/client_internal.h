/*
 * client_internal.h - what the gateway's node client files share
 * (client.c: identity, HTTPS calls, lifecycle, files; client_bridge.c: the
 * agent-protocol translator behind each remote sandbox).  Not a public
 * face: core uses client.h.
 */
#ifndef FB_NODE_CLIENT_INTERNAL_H
#define FB_NODE_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "node/client.h"

/* Where a call goes: the node's registered name (its certificate must
 * carry exactly it) and address. */
typedef struct nc_target {
    char name[FB_NODE_NAME_MAX];
    char address[FB_NODE_ADDR_MAX];
} nc_target;

/* A response.  body is NUL-terminated (malloc'd, NULL when empty), at most
 * max bytes kept (a larger body fails the call).  When sink_fd >= 0 a 2xx
 * body goes there instead.  code/message: the node's error, if any. */
typedef struct nc_resp {
    long status;
    char *body;
    size_t len, cap, max;
    int sink_fd;
    uint64_t sink_max;      /* bytes allowed into sink_fd */
    bool sink_over;         /* the body was larger than sink_max */
    bool sink_failed;       /* a write to sink_fd failed */
    char code[40];
    char message[512];
} nc_resp;

/* A call's options. */
typedef struct nc_call {
    const char *method;     /* GET POST PUT PATCH DELETE */
    const char *path;       /* "/node/v1/..." with its query */
    const void *body;       /* NULL: none */
    size_t body_len;
    int body_fd;            /* >= 0: stream the body from it (body_len bytes) */
    const char *content_type;
    long timeout_s;         /* 0: none (streams) */
    /* Streams: called with each piece of the body as it arrives; return
     * false to stop.  NULL: collect into resp->body. */
    bool (*on_data)(void *ctx, const char *data, size_t len);
    void *ctx;
    /* Aborts the call (checked about once a second and on every byte). */
    atomic_bool *stop;
    fb_sandbox *watch;      /* also abort once this sandbox has ended */
} nc_call;

/* Makes one HTTPS call to t, checking its certificate (role node, name
 * t->name, chain to nodes.tls_ca, CRL) before a byte of the request is
 * sent.  FB_OK when an HTTP answer came (any status: see resp->status and
 * nc_status_errc); else a typed error naming the node: FB_E_OTHER with
 * "(forbidden)" for a refused certificate (also reported to the refusal
 * hook), FB_E_SANDBOX_ENDED when the node cannot be reached, FB_E_KILLED
 * when stopped. */
fb_errc nc_request(fb_node_client *nc, const nc_target *t, const nc_call *call, nc_resp *resp, fb_err *err);
void nc_resp_init(nc_resp *r, size_t max);
void nc_resp_free(nc_resp *r);
/* The typed error of a non-2xx answer, err naming the node and what it
 * said; FB_OK for 2xx. */
fb_errc nc_status_errc(const nc_target *t, const nc_resp *r, const char *what, fb_err *err);

/* ---- client_bridge.c ---- */
typedef struct nc_bridge nc_bridge;
/* Starts a translator on fd (one end of a socketpair) for sandbox id on
 * t; the supervised sandbox goes on the other end.  The bridge frees
 * itself when its end reads EOF (the sandbox was destroyed). */
int nc_bridge_start(fb_node_client *nc, const nc_target *t, const char *sandbox_id, int fd, nc_bridge **out,
                    fb_err *err);
const nc_target *nc_bridge_target(const nc_bridge *b);
const char *nc_bridge_sandbox(const nc_bridge *b);
fb_node_client *nc_bridge_client(const nc_bridge *b);

/* Bridges alive (fb_node_client_free waits for none). */
void nc_live_add(fb_node_client *nc, int delta);

#endif
