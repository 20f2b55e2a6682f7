/*
 * resolve.c - the proxy's own DNS: c-ares driven by the proxy's libevent
 * loop (internal.h).
 *
 * The proxy resolves every name itself, so the addresses it checks are
 * the addresses it connects to; nothing else in the sandbox's path ever
 * looks a name up.  c-ares tells us which sockets it wants watched
 * (ARES_OPT_SOCK_STATE_CB) and we give it readiness and a timer; it never
 * blocks the loop.  Lookups read DNS only ("b"): /etc/hosts is the host's
 * business, and network.hosts is answered before a lookup ever starts.
 *
 * A lookup cannot be cancelled alone in c-ares, so a cancelled lookup
 * just forgets its callback and frees itself when c-ares answers.
 */
#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress/internal.h"

#define WATCH_MAX 16

struct egress_resolver {
    struct event_base *base;
    ares_channel channel;
    struct event *timer;
    struct {
        ares_socket_t fd;
        struct event *ev;
    } watch[WATCH_MAX];
};

struct egress_lookup {
    struct egress_resolver *r;
    egress_resolved_fn cb;
    void *ctx;
    bool starting; /* inside ares_getaddrinfo: an answer now is deferred */
    bool answered;
    fb_egress_addr addrs[EGRESS_ADDRS_MAX];
    size_t n;
    char why[128];
};

static void rearm(struct egress_resolver *r)
{
    struct timeval max = {1, 0}, tv;
    struct timeval *t = ares_timeout(r->channel, &max, &tv);
    evtimer_add(r->timer, t);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct egress_resolver *r = arg;
    ares_process_fd(r->channel, (what & EV_READ) ? fd : ARES_SOCKET_BAD, (what & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    rearm(r);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    struct egress_resolver *r = arg;
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm(r);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct egress_resolver *r = data;
    int slot = -1, free_slot = -1;
    for (int i = 0; i < WATCH_MAX; i++) {
        if (r->watch[i].ev && r->watch[i].fd == fd)
            slot = i;
        else if (!r->watch[i].ev && free_slot < 0)
            free_slot = i;
    }
    if (slot >= 0) {
        event_free(r->watch[slot].ev);
        r->watch[slot].ev = NULL;
    }
    if (!readable && !writable)
        return;
    if (slot < 0)
        slot = free_slot;
    if (slot < 0)
        return; /* more sockets than we watch: c-ares times the query out */
    short what = (short)(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    r->watch[slot].fd = fd;
    r->watch[slot].ev = event_new(r->base, fd, what, on_io, r);
    if (r->watch[slot].ev)
        event_add(r->watch[slot].ev, NULL);
}

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_rc;
static void library_init(void)
{
    library_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

int egress_resolver_new(struct event_base *base, const char *servers, unsigned timeout_ms,
                        struct egress_resolver **out, fb_err *err)
{
    pthread_once(&library_once, library_init);
    if (library_rc != ARES_SUCCESS)
        return fb_fail(err, "c-ares: %s", ares_strerror(library_rc));
    struct egress_resolver *r = calloc(1, sizeof *r);
    if (!r)
        return fb_fail(err, "out of memory");
    r->base = base;
    struct ares_options o = {0};
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = r;
    o.timeout = (int)(timeout_ms ? timeout_ms : 2000);
    o.tries = 2;
    o.lookups = (char *)"b";
    int rc = ares_init_options(&r->channel, &o,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS);
    if (rc != ARES_SUCCESS) {
        free(r);
        return fb_fail(err, "c-ares: %s", ares_strerror(rc));
    }
    if (servers && (rc = ares_set_servers_ports_csv(r->channel, servers)) != ARES_SUCCESS) {
        ares_destroy(r->channel);
        free(r);
        return fb_fail(err, "DNS servers '%.100s': %s", servers, ares_strerror(rc));
    }
    r->timer = evtimer_new(base, on_timer, r);
    if (!r->timer) {
        ares_destroy(r->channel);
        free(r);
        return fb_fail(err, "out of memory");
    }
    *out = r;
    return 0;
}

void egress_resolver_free(struct egress_resolver *r)
{
    if (!r)
        return;
    ares_destroy(r->channel); /* runs every pending callback with ARES_EDESTRUCTION */
    for (int i = 0; i < WATCH_MAX; i++)
        if (r->watch[i].ev)
            event_free(r->watch[i].ev);
    event_free(r->timer);
    free(r);
}

static void deliver(egress_lookup *l)
{
    if (l->cb)
        l->cb(l->ctx, l->addrs, l->n, l->why);
    free(l);
}

static void on_deferred(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    deliver(arg);
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    egress_lookup *l = arg;
    size_t n = 0;
    for (struct ares_addrinfo_node *a = res ? res->nodes : NULL; a && n < EGRESS_ADDRS_MAX; a = a->ai_next) {
        fb_egress_addr *x = &l->addrs[n];
        memset(x, 0, sizeof *x);
        if (a->ai_family == AF_INET) {
            x->family = AF_INET;
            memcpy(x->bytes, &((struct sockaddr_in *)(void *)a->ai_addr)->sin_addr, 4);
            n++;
        } else if (a->ai_family == AF_INET6) {
            x->family = AF_INET6;
            memcpy(x->bytes, &((struct sockaddr_in6 *)(void *)a->ai_addr)->sin6_addr, 16);
            n++;
        }
    }
    if (res)
        ares_freeaddrinfo(res);
    l->n = status == ARES_SUCCESS ? n : 0;
    if (l->n == 0)
        snprintf(l->why, sizeof l->why, "DNS: %s", status != ARES_SUCCESS ? ares_strerror(status) : "no addresses");
    l->answered = true;
    if (!l->starting)
        deliver(l);
}

egress_lookup *egress_resolve(struct egress_resolver *r, const char *name, egress_resolved_fn cb, void *ctx,
                              char *why, size_t why_cap)
{
    egress_lookup *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(why, why_cap, "out of memory");
        return NULL;
    }
    l->r = r;
    l->cb = cb;
    l->ctx = ctx;
    l->starting = true;
    struct ares_addrinfo_hints hints = {.ai_family = AF_UNSPEC, .ai_flags = ARES_AI_NOSORT};
    ares_getaddrinfo(r->channel, name, NULL, &hints, on_answer, l);
    l->starting = false;
    if (l->answered) {
        struct timeval now = {0, 0};
        if (event_base_once(r->base, -1, EV_TIMEOUT, on_deferred, l, &now) < 0) {
            free(l);
            snprintf(why, why_cap, "cannot schedule the answer");
            return NULL;
        }
        return l;
    }
    rearm(r);
    return l;
}

void egress_lookup_cancel(egress_lookup *l)
{
    if (l)
        l->cb = NULL;
}
