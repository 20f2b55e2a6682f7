/*
 * serve.c - `forgebox serve`, `forgebox admin init` and `forgebox routes`.
 *
 * serve: compiled defaults, then forgebox.yaml, then FORGEBOX_* variables,
 * then flags; a bad value stops start-up with the key, where it came from
 * and why.  admin init: creates the organisation, a default team, the first
 * admin (password from FORGEBOX_FIRST_PASSWORD or generated and shown once)
 * and prints a new admin API key alone on the last line of stdout.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "auth/auth.h"
#include "cli/cli.h"
#include "config/config.h"
#include "compat/e2b/e2b.h"
#include "gateway/gateway.h"
#include "store/store.h"


static int serve_usage(FILE *out, int rc)
{
    fprintf(out,
            "usage: forgebox serve [--config FILE] [--listen ADDR:PORT] [--state-dir DIR]\n"
            "                      [--image DIR] [--backend vm|jail] [--set KEY=VALUE]...\n"
            "Runs the gateway until SIGTERM.  Settings: docs/configuration.md.\n");
    return rc;
}

int fb_cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"listen", required_argument, NULL, 'l'},
        {"state-dir", required_argument, NULL, 's'}, {"image", required_argument, NULL, 'i'},
        {"backend", required_argument, NULL, 'b'}, {"set", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *config_flag = NULL, *image_flag = NULL;
    fb_cli_setting sets[FB_CLI_MAX_SETTINGS];
    int nsets = 0;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (nsets >= FB_CLI_MAX_SETTINGS)
            return serve_usage(stderr, FB_EXIT_USAGE);
        switch (c) {
        case 'c': config_flag = optarg; break;
        case 'i': image_flag = optarg; break;
        case 'l': sets[nsets++] = (typeof(sets[0])){"listen", optarg, "--listen"}; break;
        case 's': sets[nsets++] = (typeof(sets[0])){"state_dir", optarg, "--state-dir"}; break;
        case 'b': sets[nsets++] = (typeof(sets[0])){"sandbox.backend", optarg, "--backend"}; break;
        case 'S':
            if (fb_cli_setting_parse("serve", optarg, &sets[nsets++]) < 0)
                return FB_EXIT_USAGE;
            break;
        case 'h': return serve_usage(stdout, 0);
        default:
            fprintf(stderr, "forgebox serve: unknown or incomplete option '%.64s'\n", argv[optind - 1]);
            return serve_usage(stderr, FB_EXIT_USAGE);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "forgebox serve: unexpected argument '%.64s'\n", argv[optind]);
        return serve_usage(stderr, FB_EXIT_USAGE);
    }
    fb_config cfg;
    char buf[4096];
    const char *image = fb_cli_daemon_setup(config_flag, image_flag, sets, nsets, &cfg, buf, sizeof buf);
    if (!image)
        return 1;
    fb_err err = {{0}};
    /* e2b.listen: the E2B-compatible listener runs beside the gateway. */
    int rc = fb_gateway_run_with(&cfg, image, cfg.e2b.listen ? &fb_e2b_companion : NULL, &err);
    if (rc < 0)
        fprintf(stderr, "forgebox: %s\n", err.msg);
    fb_config_free(&cfg);
    return rc < 0 ? 1 : 0;
}

int fb_cmd_admin(int argc, char **argv)
{
    const char *state_flag = NULL, *store_flag = NULL;
    if (argc < 2 || strcmp(argv[1], "init") != 0) {
        fprintf(stderr,
                "usage: forgebox admin init [--state-dir DIR] [--store URL] [--org NAME] [--admin USERNAME]\n");
        return FB_EXIT_USAGE;
    }
    const char *org = "forgebox", *admin = "admin";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--state-dir") == 0 && i + 1 < argc)
            state_flag = argv[++i];
        else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc)
            store_flag = argv[++i];
        else if (strcmp(argv[i], "--org") == 0 && i + 1 < argc)
            org = argv[++i];
        else if (strcmp(argv[i], "--admin") == 0 && i + 1 < argc)
            admin = argv[++i];
        else {
            fprintf(stderr, "forgebox admin init: unknown or incomplete option '%.64s'\n", argv[i]);
            return FB_EXIT_USAGE;
        }
    }
    const char *state = fb_cli_state_dir(state_flag);
    fb_store *st = NULL;
    fb_err err = {{0}};
    if (sodium_init() < 0 || fb_store_open_url(state, fb_cli_store_url(store_flag), &st, &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return 1;
    }
    const char *pw = getenv("FORGEBOX_FIRST_PASSWORD");
    char generated[FB_AUTH_GENERATED_PASSWORD_MAX] = "";
    char key[FB_AUTH_KEY_TEXT_MAX] = "";
    int rc = fb_auth_init_org(st, org, admin, pw && *pw ? pw : NULL, generated, key, &err);
    fb_store_close(st);
    if (rc != FB_AUTH_OK) {
        fprintf(stderr, "forgebox: %s\n", rc == FB_AUTH_EEXISTS ? "this store is already initialised; refusing"
                                                               : err.msg);
        return 1;
    }
    printf("organisation \"%s\" created in %s\n", org, state);
    printf("admin user: %s\n", admin);
    if (generated[0])
        printf("admin password (shown once): %s\n", generated);
    printf("admin API key (shown once, on the next line):\n%s\n", key);
    fflush(stdout);
    sodium_memzero(key, sizeof key);
    sodium_memzero(generated, sizeof generated);
    return 0;
}

int fb_cmd_routes(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (const char *const *r = fb_gateway_routes(); *r; r++)
        printf("%s\n", *r);
    return 0;
}
