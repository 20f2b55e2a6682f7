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
