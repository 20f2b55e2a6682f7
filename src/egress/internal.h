/*
 * internal.h - private to src/egress: the structures the proxy's files
 * share (proxy.c owns the proxy and its sandboxes, conn.c one connection's
 * life, resolve.c the c-ares resolver).  Everything here runs on the
 * proxy's own thread, so nothing is locked.
 */
#ifndef FB_EGRESS_INTERNAL_H
#define FB_EGRESS_INTERNAL_H

#include <pthread.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "egress/egress.h"

#define EGRESS_ADDRS_MAX 8
#define EGRESS_ID_MAX    64

typedef struct egress_host {
    char name[FB_EGRESS_HOST_MAX + 1];
    fb_egress_addr addrs[EGRESS_ADDRS_MAX];
    size_t n;
} egress_host;

struct egress_resolver;
struct egress_sandbox;

struct fb_egress {
    struct event_base *base;
    fb_egress_limits limits; /* defaults filled in */
    bool has_ceiling;
    fb_egress_list ceiling, deny;
    fb_egress_addr *allow_private;
    size_t n_allow_private;
    egress_host *hosts;
    size_t n_hosts;
    bool dns_disabled;
    char runtime_dir[80];
    fb_egress_audit_fn audit;
    void *audit_ctx;
    struct egress_resolver *resolver; /* NULL when dns_disabled */
    struct egress_sandbox *sandboxes;
    /* commands from other threads (proxy.c) */
    int cmd_fd[2];
    struct event *cmd_ev;
    pthread_t thread;
};

struct egress_conn;

typedef struct egress_sandbox {
    struct egress_sandbox *next;
    fb_egress *proxy;
    char id[EGRESS_ID_MAX + 1];
    char path[108];
    fb_egress_list grant;
    struct evconnlistener *listener;
    struct event *resume; /* re-enables the listener after an accept error */
    struct egress_conn *conns;
    size_t n_conns;
    uint64_t bytes_up, bytes_down;
} egress_sandbox;

/* conn.c: a connection accepted on sb's listener; takes fd. */
void egress_conn_accept(egress_sandbox *sb, int fd);
/* conn.c: ends every connection of sb (reason "sandbox removed"). */
void egress_conn_close_all(egress_sandbox *sb);

/* relay_splice.c: the RELAY state's data path (its top comment says how).
 * A direction's budget: the sandbox's counter and cap, and the
 * connection's own counter, all advanced by every byte read. */
typedef struct egress_budget {
    uint64_t *sandbox_used;
    uint64_t cap;
    uint64_t *conn_bytes;
} egress_budget;

typedef enum egress_relay_end {
    EGRESS_RELAY_DONE,         /* both sides ended, and each end was passed on */
    EGRESS_RELAY_CUT_UP,       /* the client sent beyond the sandbox's up budget */
    EGRESS_RELAY_CUT_DOWN,     /* the destination sent beyond the down budget */
    EGRESS_RELAY_UP_ERROR,     /* reading or writing the destination failed */
    EGRESS_RELAY_CLIENT_ERROR, /* reading or writing the client failed */
    EGRESS_RELAY_DRAINED,      /* after egress_relay_drain: all queued for the client is out */
} egress_relay_end;

typedef struct egress_relay egress_relay;
typedef void (*egress_relay_fn)(void *ctx, egress_relay_end how);

/* Relays between client_fd and up_fd (both owned from the call on, failure
 * included), first writing to_up and to_client (malloc'd, owned; NULL with
 * 0 for none; already counted).  *last gets the time of every byte moved.
 * fn runs on the loop, never inside these calls; after an end other than
 * DRAINED the caller either frees the relay or drains it.  NULL: out of
 * resources. */
egress_relay *egress_relay_start(struct event_base *base, int client_fd, int up_fd, char *to_up, size_t n_to_up,
                                 char *to_client, size_t n_to_client, egress_budget up, egress_budget down,
                                 struct timeval *last, egress_relay_fn fn, void *ctx);
/* Closes the destination and stops reading the client; true when nothing
 * is left for the client (free it now), else fn(DRAINED) comes later. */
bool egress_relay_drain(egress_relay *r);
/* Closes both descriptors and frees r.  NULL is fine. */
void egress_relay_free(egress_relay *r);

/* resolve.c: the addresses of name (port 0), or the reason there are none. */
typedef void (*egress_resolved_fn)(void *ctx, const fb_egress_addr *addrs, size_t n, const char *why);
typedef struct egress_lookup egress_lookup;

int egress_resolver_new(struct event_base *base, const char *servers, unsigned timeout_ms,
                        struct egress_resolver **out, fb_err *err);
void egress_resolver_free(struct egress_resolver *r);
/* Starts a lookup; cb runs later on the loop, never from inside this call.
 * NULL when it cannot start (why says so). */
egress_lookup *egress_resolve(struct egress_resolver *r, const char *name, egress_resolved_fn cb, void *ctx,
                              char *why, size_t why_cap);
/* The callback will not run; the lookup frees itself when c-ares is done. */
void egress_lookup_cancel(egress_lookup *l);

#endif
