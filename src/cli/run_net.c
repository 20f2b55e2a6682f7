/*
 * run_net.c - `forgebox run --allow-net`: the network grant of one run.
 *
 * Parses the --allow-net entries with the egress grammar (policy.h), reads
 * the network.* keys of forgebox.yaml (--config, else FORGEBOX_CONFIG, else
 * /etc/forgebox/forgebox.yaml if it exists), starts the host-side egress
 * proxy (src/egress) and gives the sandbox its grant.  The operator at the
 * shell is the host's own: network.allow (the gateway's ceiling) does not
 * bind a run, network.deny and the address rules do.  Refusals are printed
 * on stderr, one line each.  Without a grant nothing here runs: no proxy,
 * no listener in the sandbox, no proxy variables.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"

extern char **environ;

int fb_run_net_add(fb_run_net *n, const char *arg, fb_err *err)
{
    char *copy = strdup(arg);
    if (!copy)
        return fb_fail(err, "out of memory");
    int rc = 0;
    char *save = NULL;
    bool any = false;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        any = true;
        if (fb_egress_list_add(&n->grant, tok, err) != FB_EGRESS_OK)
            rc = -1;
    }
    free(copy);
    if (rc == 0 && !any)
        return fb_fail(err, "--allow-net takes HOST[,HOST...], not '%.64s'", arg);
    return rc;
}

static void on_audit(const fb_egress_event *ev, void *ctx)
{
    (void)ctx;
    if (ev->outcome == FB_EGRESS_ALLOWED)
        return;
    fprintf(stderr, "forgebox: egress %s: %s port %u%s%s: %s\n", fb_egress_outcome_name(ev->outcome),
            ev->host[0] ? ev->host : "(no host)", (unsigned)ev->port, ev->address[0] ? " at " : "",
            ev->address, ev->reason);
}

static void on_adopt(void *ctx, const char *sandbox_id, int fd)
{
    fb_err err = {{0}};
    /* The proxy owns fd from here on, failure included; a failure is a
     * sandbox that is being removed. */
    (void)fb_egress_adopt(ctx, sandbox_id, fd, &err);
}

int fb_cli_config_load(const char *config_flag, fb_config *cfg, fb_err *err)
{
    bool required = false;
    const char *path = fb_config_path(config_flag, environ, &required);
    if (fb_config_defaults(cfg) < 0 || fb_config_load_file(cfg, path, required, err) < 0) {
        fb_config_free(cfg);
        return -1;
    }
    return 0;
}

int fb_run_net_start(fb_run_net *n, const fb_config *cfg, fb_sandbox_config *sc, fb_err *err)
{
    if (n->grant.count == 0)
        return 0;
    fb_decision d;
    if (fb_egress_grant_check(&n->grant, NULL, &cfg->network.deny, &d) != FB_ALLOW)
        return fb_fail(err, "%s", d.reason);
    fb_egress_host hosts[FB_CONFIG_MAX_HOSTS];
    for (size_t i = 0; i < cfg->network.nhosts; i++)
        hosts[i] = (fb_egress_host){.name = cfg->network.hosts[i].name,
                                    .addrs = (const char *const *)cfg->network.hosts[i].addrs,
                                    .n_addrs = cfg->network.hosts[i].naddrs};
    if (mkdir(sc->run_dir, 0755) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", sc->run_dir);
    fb_egress_settings s = {
        .runtime_dir = sc->run_dir,
        .ceiling = NULL,
        .deny = &cfg->network.deny,
        .allow_private = cfg->network.allow_private,
        .n_allow_private = cfg->network.nallow_private,
        .hosts = hosts,
        .n_hosts = cfg->network.nhosts,
        .audit = on_audit,
    };
    /* Everything is copied at start. */
    if (fb_egress_start(&s, &n->proxy, err) != FB_EGRESS_RC_OK)
        return -1;
    sc->net_adopt = on_adopt;
    sc->net_ctx = n->proxy;
    return 0;
}

int fb_run_net_register(fb_run_net *n, const char *sandbox_id, fb_err *err)
{
    if (!n->proxy)
        return 0;
    char path[256];
    if (fb_egress_add_sandbox(n->proxy, sandbox_id, &n->grant, path, sizeof path, err) != FB_EGRESS_RC_OK)
        return -1;
    snprintf(n->sandbox_id, sizeof n->sandbox_id, "%s", sandbox_id);
    return 0;
}

void fb_run_net_stop(fb_run_net *n)
{
    if (!n->proxy)
        return;
    fb_err err = {{0}};
    if (n->sandbox_id[0])
        (void)fb_egress_remove_sandbox(n->proxy, n->sandbox_id, &err);
    fb_egress_stop(n->proxy);
    n->proxy = NULL;
}
