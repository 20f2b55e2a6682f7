/*
 * egress.h - the host-side egress proxy: the only way a sandbox with a
 * network grant reaches anything outside itself (DESIGN.md, layer 3).
 *
 * One proxy per manager (`forgebox serve` or `forgebox run`), running its
 * own thread with its own libevent loop; c-ares resolves names.  Each
 * sandbox gets a listener of its own (a Unix socket in runtime_dir) that
 * the sandbox's bridge (fb-agent over virtio-serial, or inside the jail's
 * network namespace) connects to.  Which sandbox a connection belongs to
 * is decided by the listener it arrived on, never by anything it says.
 *
 * A connection asks, in its first request head, for one destination:
 *   CONNECT host:port HTTP/1.1          a tunnel (TLS, usually)
 *   GET http://host[:port]/path HTTP/1.1  absolute-form plain HTTP
 * The proxy decides host and port with fb_egress_decide (policy.h) against
 * the sandbox's grant, the ceiling and network.deny; resolves the name
 * itself (settings.hosts first, then DNS); checks every address with
 * fb_egress_addr_decide; and connects to an address it checked, once (no
 * second lookup, so no DNS rebinding).  Refusals are HTTP 403 with a body
 * a model can read; malformed heads 400; an over-long head 431; limits 429
 * (connections) or 503 (timeouts, resolution, connect failures) while
 * nothing has been relayed yet, a plain close after that.  Every
 * connection, allowed or not, ends in exactly one audit event.
 *
 * Absolute-form requests go upstream in origin form with Host set from the
 * URL (a client-sent Host header is dropped: no domain fronting through an
 * allowed name), Proxy-* headers dropped and "Connection: close", so one
 * connection carries one request to one checked destination.
 *
 * Thread safety: fb_egress_add_sandbox / fb_egress_adopt /
 * fb_egress_remove_sandbox may be called from any threads at once (the
 * gateway's request threads and sandbox bridges do): each hands its work
 * to the proxy's thread as one pointer-sized write down a pipe, atomic by
 * POSIX, and waits for it.  fb_egress_stop comes last, after every other
 * caller is done.  The audit callback
 * runs on the proxy's thread and must not call back into the proxy.
 */
#ifndef FB_EGRESS_H
#define FB_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "config/config.h"
#include "policy/policy.h"
#include "sandbox/sandbox.h"

typedef struct fb_egress fb_egress;

/* Typed errors of this module (fb_err carries the message). */
typedef enum fb_egress_rc {
    FB_EGRESS_RC_OK = 0,
    FB_EGRESS_RC_INVALID,   /* bad settings, sandbox id or grant syntax */
    FB_EGRESS_RC_POLICY,    /* the grant is outside the ceiling or overlaps network.deny */
    FB_EGRESS_RC_EXISTS,    /* that sandbox already has a listener */
    FB_EGRESS_RC_NOT_FOUND, /* no such sandbox */
    FB_EGRESS_RC_SYSTEM,    /* a system call or library failed */
} fb_egress_rc;

/* Per-sandbox limits; 0 in any field means its default. */
typedef struct fb_egress_limits {
    size_t max_conns;            /* concurrent connections (default 32) */
    uint64_t max_bytes_up;       /* sandbox -> destinations, all connections together,
                                    for the sandbox's life (default 1 GiB) */
    uint64_t max_bytes_down;     /* destinations -> sandbox, likewise (default 8 GiB) */
    unsigned connect_timeout_ms; /* resolution plus TCP connect (default 10000) */
    unsigned idle_timeout_ms;    /* no byte either way, head included (default 60000) */
    size_t header_max;           /* request head bytes (default 16384, at most 65536) */
} fb_egress_limits;

/* network.hosts: a name answered without DNS. */
typedef struct fb_egress_host {
    const char *name;          /* a host name (checked like a grant entry) */
    const char *const *addrs;  /* numeric addresses, no port */
    size_t n_addrs;            /* 1..8 */
} fb_egress_host;

typedef enum fb_egress_outcome {
    FB_EGRESS_ALLOWED = 0, /* relayed; ended normally */
    FB_EGRESS_DENIED,      /* refused by policy: name, port or address */
    FB_EGRESS_LIMITED,     /* refused or cut by a limit */
    FB_EGRESS_FAILED,      /* bad request, resolution or connect failure, upstream error */
} fb_egress_outcome;

/* One connection's record, given to the audit callback when it ends. */
typedef struct fb_egress_event {
    const char *sandbox_id;
    const char *host;    /* as requested, canonical when valid; "" if none was named */
    uint16_t port;       /* 0 if none */
    const char *address; /* "93.184.216.34:443" connected or refused; "" if none */
    uint64_t bytes_up;   /* sandbox -> destination, relayed */
    uint64_t bytes_down; /* destination -> sandbox, relayed */
    fb_egress_outcome outcome;
    int status;          /* the HTTP status the proxy answered, 0 when it answered none */
    const char *reason;  /* "allowed by grant entry 'pypi.org'", "loopback address", ... */
} fb_egress_event;

typedef void (*fb_egress_audit_fn)(const fb_egress_event *ev, void *ctx);

/* Everything is copied at fb_egress_start; the caller's memory may go. */
typedef struct fb_egress_settings {
    const char *runtime_dir;        /* existing directory for the listener sockets */
    fb_egress_limits limits;
    const fb_egress_list *ceiling;  /* network.allow; NULL: no ceiling (forgebox run) */
    const fb_egress_list *deny;     /* network.deny; NULL: none */
    const fb_egress_addr *allow_private; /* network.allow_private: exact address:port */
    size_t n_allow_private;
    const fb_egress_host *hosts;    /* network.hosts */
    size_t n_hosts;
    bool dns_disabled;              /* names not in hosts fail at once (tests, air-gapped) */
    const char *dns_servers;        /* c-ares "ip[:port],..."; NULL: /etc/resolv.conf */
    unsigned dns_timeout_ms;        /* per try (default 2000, 2 tries) */
    fb_egress_audit_fn audit;       /* may be NULL */
    void *audit_ctx;
} fb_egress_settings;

/* Starts the proxy thread. */
fb_egress_rc fb_egress_start(const fb_egress_settings *s, fb_egress **out, fb_err *err);
/* Gives sandbox_id ([A-Za-z0-9_-], 1..64) a listener and the grant (which
 * is checked against the ceiling and network.deny first).  The listener
 * is a Unix stream socket, mode 0600, at runtime_dir/egress-<id>.sock; its
 * path goes to path_out (cap >= 108 always suffices). */
fb_egress_rc fb_egress_add_sandbox(fb_egress *p, const char *sandbox_id, const fb_egress_list *grant, char *path_out,
                                   size_t cap, fb_err *err);
/* Hands the proxy one already-connected stream (a Unix socket or one end
 * of a socketpair) as a connection of sandbox_id, as if it had arrived on
 * that sandbox's listener: for a host-side bridge that demultiplexes one
 * channel (a virtio-serial port) into streams and so knows the sandbox by
 * the channel.  The proxy owns fd from the call on, failure included. */
fb_egress_rc fb_egress_adopt(fb_egress *p, const char *sandbox_id, int fd, fb_err *err);
/* Closes the sandbox's listener (and unlinks it) and every connection it
 * has open; each of those ends in an audit event. */
fb_egress_rc fb_egress_remove_sandbox(fb_egress *p, const char *sandbox_id, fb_err *err);
/* Removes every sandbox, stops the thread and frees p.  NULL is fine. */
void fb_egress_stop(fb_egress *p);

/* ---- wiring (wire.c): what `forgebox run` and the service share ---- */

/* Starts a proxy with the network.* keys of cfg (deny, allow_private,
 * hosts, dns_servers; allow as the ceiling only when with_ceiling: a
 * gateway's grants are bound by it, the operator at the shell is not).
 * runtime_dir is created if missing. */
fb_egress_rc fb_egress_start_configured(const fb_config *cfg, const char *runtime_dir, bool with_ceiling,
                                        fb_egress_audit_fn audit, void *audit_ctx, fb_egress **out, fb_err *err);
/* Points sc's bridge (net_adopt, net_ctx) at p: every connection the
 * sandbox's fb-agent accepts reaches p as that sandbox's.  Give the
 * sandbox its grant with fb_egress_add_sandbox once it has its id, and
 * take it away with fb_egress_remove_sandbox before destroying it. */
void fb_egress_wire(fb_egress *p, fb_sandbox_config *sc);

/* "allowed", "denied", "limited", "failed". */
const char *fb_egress_outcome_name(fb_egress_outcome o);

/* ---- the request head (request.c; pure, exposed for its unit tests) ---- */

typedef struct fb_egress_request {
    bool connect;                      /* CONNECT (else absolute-form HTTP) */
    char method[16];
    char host[FB_EGRESS_HOST_MAX + 3]; /* as written (an IPv6 literal keeps its brackets) */
    uint16_t port;                     /* from the target; 80 by default for http:// */
    size_t path_off, path_len;         /* origin-form path in the head ("/" if none) */
    int minor;                         /* HTTP/1.minor */
    size_t head_len;                   /* bytes up to and including the blank line */
} fb_egress_request;

/* Parses one request head: head[0..len) must contain the blank line that
 * ends it.  0, or the HTTP status to answer (400 malformed or origin-form,
 * 501 another scheme); err says why. */
int fb_egress_request_parse(const char *head, size_t len, fb_egress_request *r, fb_err *err);
/* The head to send upstream for an absolute-form request (see above).
 * Returns its length, or 0 when cap is too small. */
size_t fb_egress_request_rewrite(const char *head, const fb_egress_request *r, char *out, size_t cap);

#endif
