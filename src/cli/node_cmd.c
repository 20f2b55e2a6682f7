/*
 * node_cmd.c - `forgebox node` (run a sandbox node for gateways,
 * docs/node.md) and `forgebox node list` (the nodes a store knows).
 *
 * Settings come as for serve: compiled defaults, then forgebox.yaml
 * (--config), then FORGEBOX_* variables, then the flags.  The node's own
 * flags (name, certificates, capacity, advertised address) are not
 * configuration keys: they say which node this is.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "config/config.h"
#include "node/node.h"
#include "store/nodes.h"
#include "store/store.h"


static int node_usage(FILE *out, int rc)
{
    fprintf(out,
            "usage: forgebox node --name NAME --listen ADDR:PORT --state-dir DIR --store URL\n"
            "                     --tls-cert FILE --tls-key FILE --tls-ca FILE [--tls-crl FILE]\n"
            "                     [--backend vm|jail] [--capacity N] [--advertise HOST:PORT]\n"
            "                     [--config FILE] [--image DIR] [--set KEY=VALUE]...\n"
            "       forgebox node list [--store URL] [--state-dir DIR] [--json]\n"
            "Runs a sandbox node for gateways until SIGTERM (docs/node.md).\n");
    return rc;
}

/* A certificate name: 1-64 of A-Z a-z 0-9 . _ -, not starting with . or -. */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

static int node_list(int argc, char **argv)
{
    const char *store_flag = NULL, *state_flag = NULL;
    bool as_json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store_flag = argv[++i];
        else if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc)
            state_flag = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            as_json = true;
        else if (strcmp(argv[i], "--help") == 0)
            return node_usage(stdout, 0);
        else {
            fprintf(stderr, "forgebox node list: unknown or incomplete option '%.64s'\n", argv[i]);
            return node_usage(stderr, FB_EXIT_USAGE);
        }
    }
    fb_store *st = NULL;
    fb_err err = {{0}};
    if (fb_store_open_url(fb_cli_state_dir(state_flag), fb_cli_store_url(store_flag), &st, &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return 1;
    }
    fb_node_record *nodes = NULL;
    size_t n = 0;
    int rc = fb_store_node_list(st, &nodes, &n, &err);
    fb_store_close(st);
    if (rc < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return 1;
    }
    if (as_json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            const fb_node_record *r = &nodes[i];
            json_array_append_new(
                arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:s}", "id", r->id, "name",
                               r->name, "address", r->address, "backend", r->backend, "isolation", r->isolation,
                               "state", r->state, "live", (json_int_t)r->live, "capacity", (json_int_t)r->capacity,
                               "memory_mib", (json_int_t)r->memory_mib, "live_memory_mib",
                               (json_int_t)r->live_memory_mib, "registered_at", r->registered_at, "heartbeat_at",
                               r->heartbeat_at));
        }
        char *text = json_dumps(arr, JSON_COMPACT);
        json_decref(arr);
        printf("%s\n", text ? text : "[]");
        free(text);
    } else {
        printf("%-24s %-24s %-8s %-5s %-11s %s\n", "NAME", "ADDRESS", "STATE", "BACK", "LIVE/CAP", "HEARTBEAT");
        for (size_t i = 0; i < n; i++) {
            const fb_node_record *r = &nodes[i];
            char lc[48];
            snprintf(lc, sizeof lc, "%llu/%llu", (unsigned long long)r->live, (unsigned long long)r->capacity);
            printf("%-24s %-24s %-8s %-5s %-11s %s\n", r->name, r->address, r->state, r->backend, lc,
                   r->heartbeat_at);
        }
    }
    free(nodes);
    return 0;
}

int fb_cmd_node(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return node_list(argc - 1, argv + 1);
    static const struct option opts[] = {
        {"name", required_argument, NULL, 'n'},      {"listen", required_argument, NULL, 'l'},
        {"state-dir", required_argument, NULL, 's'}, {"store", required_argument, NULL, 'u'},
        {"backend", required_argument, NULL, 'b'},   {"tls-cert", required_argument, NULL, 'C'},
        {"tls-key", required_argument, NULL, 'K'},   {"tls-ca", required_argument, NULL, 'A'},
        {"tls-crl", required_argument, NULL, 'R'},   {"capacity", required_argument, NULL, 'p'},
        {"advertise", required_argument, NULL, 'a'}, {"config", required_argument, NULL, 'c'},
        {"image", required_argument, NULL, 'i'},     {"set", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
    };
    fb_node_options o;
    memset(&o, 0, sizeof o);
    const char *config_flag = NULL, *image_flag = NULL, *capacity = NULL, *store_flag = NULL;
    fb_cli_setting sets[FB_CLI_MAX_SETTINGS + 1]; /* + --store */
    int nsets = 0;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (nsets >= FB_CLI_MAX_SETTINGS)
            return node_usage(stderr, FB_EXIT_USAGE);
        switch (c) {
        case 'n': o.name = optarg; break;
        case 'l': o.listen = optarg; break;
        case 's': sets[nsets++] = (typeof(sets[0])){"state_dir", optarg, "--state-dir"}; break;
        case 'u': store_flag = optarg; break;
        case 'b': sets[nsets++] = (typeof(sets[0])){"sandbox.backend", optarg, "--backend"}; break;
        case 'C': o.tls_cert = optarg; break;
        case 'K': o.tls_key = optarg; break;
        case 'A': o.tls_ca = optarg; break;
        case 'R': o.tls_crl = optarg; break;
        case 'p': capacity = optarg; break;
        case 'a': o.advertise = optarg; break;
        case 'c': config_flag = optarg; break;
        case 'i': image_flag = optarg; break;
        case 'S':
            if (fb_cli_setting_parse("node", optarg, &sets[nsets++]) < 0)
                return FB_EXIT_USAGE;
            break;
        case 'h': return node_usage(stdout, 0);
        default:
            fprintf(stderr, "forgebox node: unknown or incomplete option '%.64s'\n", argv[optind - 1]);
            return node_usage(stderr, FB_EXIT_USAGE);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "forgebox node: unexpected argument '%.64s'\n", argv[optind]);
        return node_usage(stderr, FB_EXIT_USAGE);
    }
    const char *missing = !o.name ? "--name" : !o.listen ? "--listen" : !o.tls_cert ? "--tls-cert"
                          : !o.tls_key ? "--tls-key" : !o.tls_ca ? "--tls-ca" : NULL;
    if (missing) {
        fprintf(stderr, "forgebox node: %s is required\n", missing);
        return node_usage(stderr, FB_EXIT_USAGE);
    }
    if (!valid_name(o.name)) {
        fprintf(stderr, "forgebox node: --name must be 1-64 of A-Z a-z 0-9 . _ -, not starting with . or -\n");
        return FB_EXIT_USAGE;
    }
    uint64_t cap = 0;
    if (capacity && fb_parse_u64(capacity, 1, 100000, &cap) < 0) {
        fprintf(stderr, "forgebox node: --capacity must be a number of sandboxes, 1-100000\n");
        return FB_EXIT_USAGE;
    }
    o.capacity = cap;
    /* --store (or FORGEBOX_STORE_URL) goes last: it names the store the
     * node registers in, whatever forgebox.yaml says. */
    const char *url = fb_cli_store_url(store_flag);
    if (url)
        sets[nsets++] = (fb_cli_setting){"store.url", url, store_flag ? "--store" : "FORGEBOX_STORE_URL"};
    fb_config cfg;
    char buf[4096];
    o.image_dir = fb_cli_daemon_setup(config_flag, image_flag, sets, nsets, &cfg, buf, sizeof buf);
    if (!o.image_dir)
        return 1;
    o.state_dir = cfg.state_dir;
    o.store_url = cfg.store.url;
    o.backend = cfg.sandbox.backend;
    o.cfg = &cfg;
    fb_err err = {{0}};
    int rc = fb_node_run(&o, &err);
    if (rc < 0)
        fprintf(stderr, "forgebox: %s\n", err.msg);
    fb_config_free(&cfg);
    return rc < 0 ? 1 : 0;
}
