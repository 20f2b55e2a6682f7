/*
 * fb_egress_probe.c - runs the egress proxy (src/egress) alone, for the
 * black-box tests in tests/integration/test_egress_proxy.py.
 *
 *   fb-egress-probe --dir DIR [--sandbox ID=ENTRY[,ENTRY...]]...
 *       [--ceiling CSV] [--deny CSV] [--host NAME=ADDR[,ADDR...]]...
 *       [--allow-private ADDR:PORT]... [--dns-servers CSV]
 *       [--max-conns N] [--max-up N] [--max-down N] [--connect-timeout-ms N]
 *       [--idle-timeout-ms N] [--header-max N]
 *
 * Without --dns-servers DNS is off: names not in --host fail at once.
 * Prints one JSON object per line on stdout:
 *   {"listen": ID, "path": P} or {"add_error": ID, "rc": N, "message": M}
 *   {"ready": true}   after the sandboxes of the command line
 *   {"audit": {...}}  one per connection, as the proxy reports it
 * Reads commands on stdin: "add ID=CSV", "remove ID"; EOF stops the proxy
 * and exits 0.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "egress/egress.h"

#define MAX_ITEMS 16

static void emit(json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!text)
        return;
    flockfile(stdout);
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    funlockfile(stdout);
    free(text);
}

static void on_audit(const fb_egress_event *ev, void *ctx)
{
    (void)ctx;
    emit(json_pack("{s:{s:s,s:s,s:i,s:s,s:I,s:I,s:s,s:i,s:s}}", "audit", "sandbox", ev->sandbox_id, "host", ev->host,
                   "port", (int)ev->port, "address", ev->address, "bytes_up", (json_int_t)ev->bytes_up, "bytes_down",
                   (json_int_t)ev->bytes_down, "outcome", fb_egress_outcome_name(ev->outcome), "status", ev->status,
                   "reason", ev->reason));
}

/* "a,b,c" -> list; exits on a bad entry (the message is the test's oracle). */
static int parse_csv(const char *csv, fb_egress_list *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    char *copy = strdup(csv), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save))
        rc = fb_egress_list_add(out, tok, err) == FB_EGRESS_OK ? 0 : -1;
    free(copy);
    return rc;
}

static void add(fb_egress *p, const char *spec)
{
    char id[80];
    const char *eq = strchr(spec, '=');
    size_t n = eq ? (size_t)(eq - spec) : strlen(spec);
    snprintf(id, sizeof id, "%.*s", (int)(n < 79 ? n : 79), spec);
    fb_egress_list grant;
    fb_err err = {{0}};
    if (parse_csv(eq ? eq + 1 : "", &grant, &err) < 0) {
        emit(json_pack("{s:s,s:i,s:s}", "add_error", id, "rc", (int)FB_EGRESS_RC_INVALID, "message", err.msg));
        return;
    }
    char path[128];
    fb_egress_rc rc = fb_egress_add_sandbox(p, id, &grant, path, sizeof path, &err);
    if (rc != FB_EGRESS_RC_OK)
        emit(json_pack("{s:s,s:i,s:s}", "add_error", id, "rc", (int)rc, "message", err.msg));
    else
        emit(json_pack("{s:s,s:s}", "listen", id, "path", path));
}

static void usage(void)
{
    fprintf(stderr, "usage: fb-egress-probe --dir DIR [--sandbox ID=CSV]... (see the source)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    fb_egress_settings s = {.dns_disabled = true, .audit = on_audit};
    fb_egress_list ceiling, deny = {0};
    fb_egress_addr priv[MAX_ITEMS];
    fb_egress_host hosts[MAX_ITEMS];
    char *host_addrs[MAX_ITEMS][8];
    const char *sandboxes[MAX_ITEMS];
    size_t n_sandboxes = 0;
    fb_err err = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val)
            usage();
        i++;
        if (!strcmp(opt, "--dir")) {
            s.runtime_dir = val;
        } else if (!strcmp(opt, "--sandbox") && n_sandboxes < MAX_ITEMS) {
            sandboxes[n_sandboxes++] = val;
        } else if (!strcmp(opt, "--ceiling") || !strcmp(opt, "--deny")) {
            bool is_ceiling = !strcmp(opt, "--ceiling");
            if (parse_csv(val, is_ceiling ? &ceiling : &deny, &err) < 0) {
                fprintf(stderr, "fb-egress-probe: %s: %s\n", opt, err.msg);
                return 2;
            }
            if (is_ceiling)
                s.ceiling = &ceiling;
            else
                s.deny = &deny;
        } else if (!strcmp(opt, "--host") && s.n_hosts < MAX_ITEMS) {
            fb_egress_host *h = &hosts[s.n_hosts];
            char *copy = strdup(val), *eq = strchr(copy, '='), *save = NULL;
            if (!eq)
                usage();
            *eq = '\0';
            h->name = copy;
            h->n_addrs = 0;
            for (char *tok = strtok_r(eq + 1, ",", &save); tok && h->n_addrs < 8; tok = strtok_r(NULL, ",", &save))
                host_addrs[s.n_hosts][h->n_addrs++] = tok;
            h->addrs = (const char *const *)host_addrs[s.n_hosts];
            s.n_hosts++;
        } else if (!strcmp(opt, "--allow-private") && s.n_allow_private < MAX_ITEMS) {
            if (fb_egress_addr_parse(val, false, &priv[s.n_allow_private], &err) != FB_EGRESS_OK) {
                fprintf(stderr, "fb-egress-probe: %s\n", err.msg);
                return 2;
            }
            s.n_allow_private++;
        } else if (!strcmp(opt, "--dns-servers")) {
            s.dns_servers = val;
            s.dns_disabled = false;
        } else if (!strcmp(opt, "--max-conns")) {
            s.limits.max_conns = strtoull(val, NULL, 10);
        } else if (!strcmp(opt, "--max-up")) {
            s.limits.max_bytes_up = strtoull(val, NULL, 10);
        } else if (!strcmp(opt, "--max-down")) {
            s.limits.max_bytes_down = strtoull(val, NULL, 10);
        } else if (!strcmp(opt, "--connect-timeout-ms")) {
            s.limits.connect_timeout_ms = (unsigned)strtoul(val, NULL, 10);
        } else if (!strcmp(opt, "--idle-timeout-ms")) {
            s.limits.idle_timeout_ms = (unsigned)strtoul(val, NULL, 10);
        } else if (!strcmp(opt, "--header-max")) {
            s.limits.header_max = strtoull(val, NULL, 10);
        } else {
            usage();
        }
    }
    s.allow_private = priv;
    s.hosts = hosts;
    if (!s.runtime_dir)
        usage();
    fb_egress *p;
    if (fb_egress_start(&s, &p, &err) != FB_EGRESS_RC_OK) {
        fprintf(stderr, "fb-egress-probe: %s\n", err.msg);
        return 1;
    }
    for (size_t i = 0; i < n_sandboxes; i++)
        add(p, sandboxes[i]);
    emit(json_pack("{s:b}", "ready", 1));
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!strncmp(line, "add ", 4)) {
            add(p, line + 4);
        } else if (!strncmp(line, "remove ", 7)) {
            fb_egress_rc rc = fb_egress_remove_sandbox(p, line + 7, &err);
            emit(json_pack("{s:s,s:i}", "removed", line + 7, "rc", (int)rc));
        }
    }
    fb_egress_stop(p);
    for (size_t i = 0; i < s.n_hosts; i++)
        free((char *)hosts[i].name);
    return 0;
}
