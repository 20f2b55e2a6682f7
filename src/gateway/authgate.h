/*
 * authgate.h - what every HTTP adapter of ForgeBox does with a key before
 * it acts: authenticate it, slow down sources that keep failing, charge
 * the key's and its user's request budgets, and audit the outcome.
 *
 * The native gateway (server.c) and the E2B-compatible listener
 * (src/compat/e2b) both call gw_auth_gate with the same rate limiters, so
 * a key has one budget whichever door it comes through, and a source that
 * fails on one is slowed down on both.  No libmicrohttpd here.
 */
#ifndef FB_GW_AUTHGATE_H
#define FB_GW_AUTHGATE_H

#include <stddef.h>

#include "core/core.h"
#include "gateway/ratelimit.h"

/* What the gateway shares with the listeners that run beside it. */
typedef struct fb_gateway_shared {
    fb_core *core;
    const fb_config *cfg;
    gw_ratelimit *rl;       /* per API key */
    gw_ratelimit *rl_user;  /* per user, across their keys */
    gw_failgate *fails;     /* failed authentications per source, per /64, globally */
    const char *tls_cert;   /* PEM text while the gateway runs (NULL: plain HTTP) */
    const char *tls_key;
} fb_gateway_shared;

typedef enum gw_gate_result {
    GW_GATE_OK,         /* caller->who is filled; the allow is audited */
    GW_GATE_DENIED,     /* err holds UNAUTHORIZED (or INTERNAL); audited */
    GW_GATE_LIMITED,    /* answer 429 with Retry-After: *wait; *why says which budget */
    GW_GATE_UNAUDITED,  /* the audit log cannot be written: answer 503 */
} gw_gate_result;

/* header/len: an Authorization header value ("Bearer KEY"), NULL for none.
 * resource: the route, for the audit entry.  caller->source_ip and
 * request_id must be set. */
gw_gate_result gw_auth_gate(const fb_gateway_shared *sh, fb_caller *caller, const char *header, size_t len,
                            const char *resource, int *wait, const char **why, fb_core_err *err);
/* The same, but the allow entry is not written on its own: it goes with
 * the caller's next audit entry (its permission decision) in one commit
 * (fb_core_audit_auth_defer), and the adapter writes it before any answer
 * that had none (fb_core_audit_flush).  GW_GATE_UNAUDITED is then reported
 * by that permission decision (UNAVAILABLE) instead. */
gw_gate_result gw_auth_gate_deferred(const fb_gateway_shared *sh, fb_caller *caller, const char *header,
                                     size_t len, const char *resource, int *wait, const char **why,
                                     fb_core_err *err);

/* The HTTP status of a service's typed error (one table for every adapter). */
int gw_http_status(fb_core_code code);

#endif
