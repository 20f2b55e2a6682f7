/*
 * conn.c - one proxied connection, from the first byte of its request
 * head to its audit event (egress.h describes what a client sees).
 *
 * States: HEAD (reading the request head, at most header_max bytes),
 * RESOLVING (network.hosts, else c-ares), CONNECTING (to checked
 * addresses in turn), RELAY (bytes both ways), REPLYING (an error
 * response is being flushed, then the connection ends).  Reading from the
 * client stops from the moment a head is complete until the upstream is
 * connected, so nothing the client sends early is lost or misrouted.
 *
 * One timer per connection watches the current state's deadline: idle
 * time in HEAD and RELAY (no byte either way for idle_timeout_ms), the
 * whole of resolution plus connect in RESOLVING and CONNECTING
 * (connect_timeout_ms), and a last idle period for a REPLYING client that
 * does not read.  Byte budgets are per sandbox and cut a relay at the
 * exact byte; buffering is bounded (a side stops being read while what
 * was read from it is not yet written), so a slow reader cannot make the
 * proxy buffer without limit.
 *
 * Half-closes are passed on: when one side ends, the other side's write
 * half is shut once what was read has been written; the connection ends
 * when both directions are done.
 *
 * Until RELAY both sides are bufferevents.  On entering RELAY the
 * connection hands their descriptors, with what they hold (the rewritten
 * head, bytes the client sent early, the 200 of a CONNECT), to
 * relay_splice.c, which moves the bytes in the kernel; the bufferevents
 * are gone from then on, REPLYING after a cut included.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "egress/internal.h"

enum state { S_HEAD, S_RESOLVING, S_CONNECTING, S_RELAY, S_REPLYING };

typedef struct egress_conn {
    struct egress_conn *prev, *next;
    egress_sandbox *sb;
    enum state state;
    struct bufferevent *client, *up;
    struct event *timer;
    struct timeval last;  /* last byte either way, or the state's start */
    egress_lookup *lookup;
    fb_egress_request req;
    char host[FB_EGRESS_HOST_MAX + 3]; /* canonical when valid, else a printable copy */
    fb_egress_addr addrs[EGRESS_ADDRS_MAX];
    size_t n_addrs, next_addr;
    char address[64];
    char *upstream_head; /* the rewritten head of an absolute-form request */
    size_t upstream_head_len;
    uint64_t bytes_up, bytes_down; /* relayed by this connection */
    egress_relay *relay;           /* RELAY, and REPLYING after it */
    bool over_cap; /* accepted beyond max_conns: answered 429 once its head is in */
    fb_egress_outcome outcome;
    int status;
    char reason[320];
} egress_conn;

static void finish(egress_conn *c);

static fb_egress *proxy_of(egress_conn *c)
{
    return c->sb->proxy;
}

static unsigned state_ms(egress_conn *c)
{
    const fb_egress_limits *l = &proxy_of(c)->limits;
    return (c->state == S_RESOLVING || c->state == S_CONNECTING) ? l->connect_timeout_ms : l->idle_timeout_ms;
}

static void arm(egress_conn *c, unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* A new state starts its own deadline. */
static void enter(egress_conn *c, enum state s)
{
    c->state = s;
    event_base_gettimeofday_cached(proxy_of(c)->base, &c->last);
    arm(c, state_ms(c));
}

static void touch(egress_conn *c)
{
    event_base_gettimeofday_cached(proxy_of(c)->base, &c->last);
}

static void note(egress_conn *c, fb_egress_outcome o, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void note(egress_conn *c, fb_egress_outcome o, int status, const char *fmt, ...)
{
    char text[sizeof c->reason]; /* fmt's arguments may be c->reason itself */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    c->outcome = o;
    c->status = status;
    memcpy(c->reason, text, sizeof text);
}

static const char *status_text(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 408: return "Request Timeout";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 502: return "Bad Gateway";
    case 504: return "Gateway Timeout";
    default: return "Service Unavailable";
    }
}

/* Answers the client with status and body, then ends the connection once
 * the answer is out (or the client stops reading for an idle period). */
static void reply(egress_conn *c, fb_egress_outcome o, int status, const char *body_fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply(egress_conn *c, fb_egress_outcome o, int status, const char *body_fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, body_fmt);
    vsnprintf(body, sizeof body, body_fmt, ap);
    va_end(ap);
    if (!c->reason[0] || c->outcome == FB_EGRESS_ALLOWED)
        snprintf(c->reason, sizeof c->reason, "%.300s", body);
    c->outcome = o;
    c->status = status;
    if (c->up) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    if (c->lookup) {
        egress_lookup_cancel(c->lookup);
        c->lookup = NULL;
    }
    struct evbuffer *out = bufferevent_get_output(c->client);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n%s\n",
                        status, status_text(status), strlen(body) + 1, body);
    bufferevent_disable(c->client, EV_READ);
    bufferevent_enable(c->client, EV_WRITE);
    enter(c, S_REPLYING);
}

/* ---- upstream ------------------------------------------------------------------ */

static void on_up_event(struct bufferevent *bev, short what, void *arg);

static socklen_t to_sockaddr(const fb_egress_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (a->family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(a->port);
        memcpy(&s4->sin_addr, a->bytes, 4);
        return sizeof *s4;
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(a->port);
    memcpy(&s6->sin6_addr, a->bytes, 16);
    return sizeof *s6;
}

/* Connects to the next checked address; answers 502 when none is left. */
static void connect_next(egress_conn *c, const char *last_error)
{
    if (c->up) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    if (c->next_addr >= c->n_addrs) {
        reply(c, FB_EGRESS_FAILED, 502, "ForgeBox egress: could not connect to %s port %u (%s): %s", c->host,
              (unsigned)c->req.port, c->address, last_error);
        return;
    }
    const fb_egress_addr *a = &c->addrs[c->next_addr++];
    fb_egress_addr_format(a, c->address, sizeof c->address);
    struct sockaddr_storage ss;
    socklen_t len = to_sockaddr(a, &ss);
    c->up = bufferevent_socket_new(proxy_of(c)->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->up) {
        reply(c, FB_EGRESS_FAILED, 503, "ForgeBox egress: out of resources");
        return;
    }
    bufferevent_setcb(c->up, NULL, NULL, on_up_event, c);
    if (bufferevent_socket_connect(c->up, (struct sockaddr *)&ss, (int)len) < 0)
        connect_next(c, strerror(errno));
}

/* ---- relaying (relay_splice.c moves the bytes) ------------------------------------ */

static void on_relay_end(void *arg, egress_relay_end how)
{
    egress_conn *c = arg;
    switch (how) {
    case EGRESS_RELAY_DONE:
    case EGRESS_RELAY_CLIENT_ERROR:
    case EGRESS_RELAY_DRAINED:
        finish(c);
        return;
    case EGRESS_RELAY_CUT_UP:
    case EGRESS_RELAY_CUT_DOWN: {
        bool upward = how == EGRESS_RELAY_CUT_UP;
        const fb_egress_limits *l = &proxy_of(c)->limits;
        note(c, FB_EGRESS_LIMITED, 0, "byte cap reached: this sandbox may send %s at most %llu bytes",
             upward ? "out" : "in", (unsigned long long)(upward ? l->max_bytes_up : l->max_bytes_down));
        break;
    }
    case EGRESS_RELAY_UP_ERROR:
        note(c, c->outcome, c->status, "%.150s; upstream error", c->reason);
        break;
    }
    /* bytes relayed before the end must still arrive */
    if (egress_relay_drain(c->relay))
        finish(c);
    else
        enter(c, S_REPLYING);
}

/* The descriptor of a bufferevent that is freed without closing it. */
static int detach(struct bufferevent **bev)
{
    int fd = (int)bufferevent_getfd(*bev);
    bufferevent_setfd(*bev, -1);
    bufferevent_free(*bev);
    *bev = NULL;
    return fd;
}

static void start_relay(egress_conn *c)
{
    fb_egress *p = proxy_of(c);
    enter(c, S_RELAY);
    note(c, FB_EGRESS_ALLOWED, 0, "%s", c->reason);
    static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
    struct evbuffer *early = bufferevent_get_input(c->client); /* bytes that came with the head */
    size_t n_early = evbuffer_get_length(early), n_head = c->req.connect ? 0 : c->upstream_head_len;
    uint64_t room = c->sb->bytes_up + n_head < p->limits.max_bytes_up ? p->limits.max_bytes_up - c->sb->bytes_up - n_head : 0;
    size_t move = n_early < room ? n_early : (size_t)room, n_up = n_head + move;
    size_t n_client = c->req.connect ? sizeof ok - 1 : 0;
    char *to_up = n_up ? malloc(n_up) : NULL, *to_client = n_client ? malloc(n_client) : NULL;
    if ((n_up && !to_up) || (n_client && !to_client)) {
        free(to_up);
        free(to_client);
        note(c, FB_EGRESS_FAILED, 0, "%.150s; out of memory for the relay", c->reason);
        finish(c);
        return;
    }
    if (c->req.connect) {
        c->status = 200;
        memcpy(to_client, ok, n_client);
    } else {
        memcpy(to_up, c->upstream_head, n_head);
    }
    evbuffer_copyout(early, to_up + n_head, move);
    c->bytes_up += n_up;
    c->sb->bytes_up += n_up;
    int cfd = detach(&c->client), ufd = detach(&c->up);
    egress_budget up = {&c->sb->bytes_up, p->limits.max_bytes_up, &c->bytes_up};
    egress_budget down = {&c->sb->bytes_down, p->limits.max_bytes_down, &c->bytes_down};
    c->relay = egress_relay_start(p->base, cfd, ufd, to_up, n_up, to_client, n_client, up, down, &c->last,
                                  on_relay_end, c);
    if (!c->relay) {
        note(c, FB_EGRESS_FAILED, 0, "%.150s; out of resources for the relay", c->reason);
        finish(c);
        return;
    }
    if (move < n_early)
        on_relay_end(c, EGRESS_RELAY_CUT_UP);
}

static void on_up_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    egress_conn *c = arg; /* only while CONNECTING: RELAY has no bufferevents */
    if (what & BEV_EVENT_CONNECTED) {
        start_relay(c);
        return;
    }
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(bufferevent_getfd(c->up), SOL_SOCKET, SO_ERROR, &e, &len) < 0 || e == 0)
        e = EVUTIL_SOCKET_ERROR();
    connect_next(c, strerror(e));
}

/* ---- resolution ------------------------------------------------------------------ */

static void on_resolved(void *arg, const fb_egress_addr *addrs, size_t n, const char *why)
{
    egress_conn *c = arg;
    c->lookup = NULL;
    if (n == 0) {
        reply(c, FB_EGRESS_FAILED, 502, "ForgeBox egress: cannot resolve %s (%s)", c->host, why);
        return;
    }
    fb_egress *p = proxy_of(c);
    char first_refusal[240] = "";
    c->n_addrs = 0;
    for (size_t i = 0; i < n; i++) {
        fb_egress_addr a = addrs[i];
        a.port = c->req.port;
        fb_decision d;
        if (fb_egress_addr_decide(&a, p->allow_private, p->n_allow_private, &d) == FB_ALLOW) {
            c->addrs[c->n_addrs++] = a;
        } else if (!first_refusal[0]) {
            char text[64];
            fb_egress_addr_format(&a, text, sizeof text);
            snprintf(c->address, sizeof c->address, "%s", text);
            snprintf(first_refusal, sizeof first_refusal, "%.64s is a %.160s", text, d.reason);
        }
    }
    if (c->n_addrs == 0) {
        reply(c, FB_EGRESS_DENIED, 403, "ForgeBox egress policy: host %s resolves only to refused addresses (%s)",
              c->host, first_refusal);
        return;
    }
    c->state = S_CONNECTING; /* the connect deadline runs on from resolution's start */
    connect_next(c, "no address");
}

static void resolve(egress_conn *c)
{
    fb_egress *p = proxy_of(c);
    enter(c, S_RESOLVING);
    for (size_t i = 0; i < p->n_hosts; i++)
        if (strcmp(p->hosts[i].name, c->host) == 0) {
            on_resolved(c, p->hosts[i].addrs, p->hosts[i].n, "");
            return;
        }
    if (!p->resolver) {
        reply(c, FB_EGRESS_FAILED, 502, "ForgeBox egress: cannot resolve %s (not in network.hosts, and DNS is off)",
              c->host);
        return;
    }
    char why[128] = "";
    c->lookup = egress_resolve(p->resolver, c->host, on_resolved, c, why, sizeof why);
    if (!c->lookup)
        reply(c, FB_EGRESS_FAILED, 503, "ForgeBox egress: cannot resolve %s (%s)", c->host, why);
}

/* ---- the request head -------------------------------------------------------------- */

static void printable_copy(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; in[i] && o + 1 < cap; i++)
        out[o++] = (in[i] > 0x20 && in[i] < 0x7f) ? in[i] : '?';
    out[o] = '\0';
}

static void on_head(egress_conn *c)
{
    fb_egress *p = proxy_of(c);
    struct evbuffer *in = bufferevent_get_input(c->client);
    size_t len = evbuffer_get_length(in), look = len < p->limits.header_max ? len : p->limits.header_max;
    const char *head = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
    if (!head || !memmem(head, look, "\r\n\r\n", 4)) {
        if (len >= p->limits.header_max)
            reply(c, FB_EGRESS_LIMITED, 431, "ForgeBox egress: request head longer than %zu bytes",
                  p->limits.header_max);
        return;
    }
    if (c->over_cap) {
        reply(c, FB_EGRESS_LIMITED, 429, "ForgeBox egress: this sandbox already has %zu connections open",
              p->limits.max_conns);
        return;
    }
    fb_err err = {{0}};
    int status = fb_egress_request_parse(head, look, &c->req, &err);
    if (status) {
        reply(c, FB_EGRESS_FAILED, status, "ForgeBox egress: malformed request: %s", err.msg);
        return;
    }
    bufferevent_disable(c->client, EV_READ);
    printable_copy(c->req.host, c->host, sizeof c->host);
    char canonical[FB_EGRESS_HOST_MAX + 1];
    if (fb_egress_host_parse(c->req.host, canonical, sizeof canonical, NULL) == FB_EGRESS_OK)
        snprintf(c->host, sizeof c->host, "%s", canonical);
    fb_decision d;
    if (fb_egress_decide(c->req.host, c->req.port, &c->sb->grant, p->has_ceiling ? &p->ceiling : NULL, &p->deny,
                         &d) != FB_ALLOW) {
        note(c, FB_EGRESS_DENIED, 403, "%s", d.reason);
        reply(c, FB_EGRESS_DENIED, 403, "ForgeBox egress policy: host %s port %u refused: %s", c->host,
              (unsigned)c->req.port, d.reason);
        return;
    }
    note(c, FB_EGRESS_ALLOWED, 0, "%s", d.reason);
    memcpy(c->req.host, c->host, sizeof c->req.host); /* allowed: canonical, and what goes upstream */
    if (c->sb->bytes_up >= p->limits.max_bytes_up || c->sb->bytes_down >= p->limits.max_bytes_down) {
        reply(c, FB_EGRESS_LIMITED, 429, "ForgeBox egress: this sandbox's byte budget is used up");
        return;
    }
    if (!c->req.connect) {
        size_t cap = c->req.head_len + FB_EGRESS_HOST_MAX + 64;
        c->upstream_head = malloc(cap);
        c->upstream_head_len = c->upstream_head ? fb_egress_request_rewrite(head, &c->req, c->upstream_head, cap) : 0;
        if (!c->upstream_head_len) {
            reply(c, FB_EGRESS_FAILED, 503, "ForgeBox egress: cannot rewrite the request");
            return;
        }
    }
    evbuffer_drain(in, c->req.head_len);
    resolve(c);
}

static void on_client_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    egress_conn *c = arg; /* only in HEAD: reading stops once a head is complete */
    touch(c);
    if (c->state == S_HEAD)
        on_head(c);
}

/* Only a REPLYING answer is written through the bufferevent. */
static void on_client_write(struct bufferevent *bev, void *arg)
{
    egress_conn *c = arg;
    touch(c);
    if (c->state == S_REPLYING && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        finish(c);
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    egress_conn *c = arg;
    if (c->state == S_HEAD)
        note(c, FB_EGRESS_FAILED, 0, "client closed before a complete request head");
    else if (c->state == S_RESOLVING || c->state == S_CONNECTING)
        note(c, c->outcome, 0, "%.120s; client left before the connection was made", c->reason);
    finish(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    egress_conn *c = arg;
    struct timeval now, gone;
    event_base_gettimeofday_cached(proxy_of(c)->base, &now);
    evutil_timersub(&now, &c->last, &gone);
    long long ms = (long long)gone.tv_sec * 1000 + gone.tv_usec / 1000, limit = state_ms(c);
    if (ms < limit) {
        arm(c, (unsigned)(limit - ms));
        return;
    }
    switch (c->state) {
    case S_HEAD:
        reply(c, FB_EGRESS_LIMITED, 408, "ForgeBox egress: no complete request head within %lld ms", limit);
        break;
    case S_RESOLVING:
    case S_CONNECTING:
        reply(c, FB_EGRESS_LIMITED, 504, "ForgeBox egress: could not reach %s port %u within %lld ms", c->host,
              (unsigned)c->req.port, limit);
        break;
    case S_RELAY:
        note(c, FB_EGRESS_LIMITED, 0, "idle for %lld ms (after %.120s)", limit, c->reason);
        finish(c);
        break;
    case S_REPLYING:
        finish(c);
        break;
    }
}

/* ---- life and death ---------------------------------------------------------------- */

static void finish(egress_conn *c)
{
    fb_egress *p = proxy_of(c);
    if (p->audit) {
        fb_egress_event ev = {
            .sandbox_id = c->sb->id, .host = c->host, .port = c->req.port, .address = c->address,
            .bytes_up = c->bytes_up, .bytes_down = c->bytes_down, .outcome = c->outcome, .status = c->status,
            .reason = c->reason,
        };
        p->audit(&ev, p->audit_ctx);
    }
    if (c->lookup)
        egress_lookup_cancel(c->lookup);
    if (c->up)
        bufferevent_free(c->up);
    if (c->client)
        bufferevent_free(c->client);
    egress_relay_free(c->relay);
    event_free(c->timer);
    free(c->upstream_head);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->sb->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->sb->n_conns--;
    free(c);
}

void egress_conn_accept(egress_sandbox *sb, int fd)
{
    fb_egress *p = sb->proxy;
    egress_conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct event *timer = c ? evtimer_new(p->base, on_timer, c) : NULL;
    if (!c || !bev || !timer) {
        if (bev)
            bufferevent_free(bev);
        else
            evutil_closesocket(fd);
        if (timer)
            event_free(timer);
        free(c);
        return;
    }
    c->sb = sb;
    c->client = bev;
    c->timer = timer;
    c->next = sb->conns;
    if (sb->conns)
        sb->conns->prev = c;
    sb->conns = c;
    sb->n_conns++;
    bufferevent_setcb(bev, on_client_read, on_client_write, on_client_event, c);
    enter(c, S_HEAD);
    /* Beyond the cap a connection is still read up to its head, so that the
     * client gets a 429 rather than a broken pipe; beyond twice the cap it
     * is closed at once, so a flood cannot hold descriptors. */
    if (sb->n_conns > 2 * p->limits.max_conns) {
        note(c, FB_EGRESS_LIMITED, 0, "closed at once: more than twice %zu connections open", p->limits.max_conns);
        finish(c);
        return;
    }
    c->over_cap = sb->n_conns > p->limits.max_conns;
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void egress_conn_close_all(egress_sandbox *sb)
{
    while (sb->conns) {
        egress_conn *c = sb->conns;
        note(c, c->state == S_RELAY ? c->outcome : FB_EGRESS_FAILED, c->status, "%.150s%ssandbox removed", c->reason,
             c->reason[0] ? "; " : "");
        finish(c);
    }
}
