/*
 * wire.c - a manager's proxy from forgebox.yaml, and a sandbox wired to it
 * (egress.h, "wiring").
 *
 * `forgebox run --allow-net` and the service layer (`forgebox serve`) own
 * one proxy each and connect sandboxes to it the same way, so the steps
 * live here once: the network.* keys become fb_egress_settings (the
 * ceiling only where a gateway grants: the operator at the shell is not
 * bound by it), and a sandbox's configuration gets the bridge callback
 * that hands each connection its fb-agent accepted to the proxy under
 * that sandbox's id (a file descriptor from a jail, a socketpair end
 * carrying a stream of net_* frames from a VM; sandbox.h).  The sandbox is
 * known by the channel the connection came on, never by what it says.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "egress/egress.h"

fb_egress_rc fb_egress_start_configured(const fb_config *cfg, const char *runtime_dir, bool with_ceiling,
                                        fb_egress_audit_fn audit, void *audit_ctx, fb_egress **out, fb_err *err)
{
    fb_egress_host hosts[FB_CONFIG_MAX_HOSTS];
    size_t nhosts = cfg->network.nhosts < FB_CONFIG_MAX_HOSTS ? cfg->network.nhosts : FB_CONFIG_MAX_HOSTS;
    for (size_t i = 0; i < nhosts; i++)
        hosts[i] = (fb_egress_host){.name = cfg->network.hosts[i].name,
                                    .addrs = (const char *const *)cfg->network.hosts[i].addrs,
                                    .n_addrs = cfg->network.hosts[i].naddrs};
    if (fb_mkdir_p(runtime_dir, 0755, err) < 0)
        return FB_EGRESS_RC_SYSTEM;
    fb_egress_settings s = {
        .runtime_dir = runtime_dir,
        .ceiling = with_ceiling ? &cfg->network.allow : NULL,
        .deny = &cfg->network.deny,
        .allow_private = cfg->network.allow_private,
        .n_allow_private = cfg->network.nallow_private,
        .hosts = hosts,
        .n_hosts = nhosts,
        .dns_servers = cfg->network.dns_servers,
        .audit = audit,
        .audit_ctx = audit_ctx,
    };
    /* Everything is copied at start. */
    return fb_egress_start(&s, out, err);
}

static void adopt(void *ctx, const char *sandbox_id, int fd)
{
    fb_err err = {{0}};
    /* The proxy owns fd from here on, failure included; a failure is a
     * sandbox that is not (or no longer) registered. */
    (void)fb_egress_adopt(ctx, sandbox_id, fd, &err);
}

void fb_egress_wire(fb_egress *p, fb_sandbox_config *sc)
{
    sc->net_adopt = adopt;
    sc->net_ctx = p;
}
