/*
 * sandbox_up.c - the one sandbox of a shell verb (`forgebox run`,
 * `forgebox task run`): where the image and state are, the egress proxy
 * when the operator granted network, the sandbox itself, and the teardown
 * in the reverse order.  One place, so that both verbs create sandboxes
 * the same way and report failures with the same exit codes.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int fb_cli_box_up(fb_cli_box *b, const fb_config *conf, bool quiet)
{
    fb_err err = {{0}};
    b->sb = NULL;
    b->cfg.image_dir = fb_cli_image_dir(b->image_flag, b->image_buf, sizeof b->image_buf);
    b->cfg.state_dir = fb_cli_state_dir(b->state_flag);
    b->cfg.run_dir = fb_cli_run_dir();
    if (fb_run_net_start(&b->net, conf, &b->cfg, &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return FB_EXIT_USAGE;
    }
    /* On this thread, the process's main one: the sandbox ends with it. */
    if (fb_sandbox_create_here(&b->cfg, &b->sb, &err) < 0) {
        fprintf(stderr, "forgebox: sandbox failure: %s\n", err.msg);
        b->sb = NULL;
        fb_run_net_stop(&b->net);
        return FB_EXIT_SANDBOX;
    }
    if (fb_run_net_register(&b->net, fb_sandbox_id(b->sb), &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        fb_cli_box_down(b);
        return FB_EXIT_SANDBOX;
    }
    if (!quiet && strcmp(fb_sandbox_isolation(b->sb), "tcg") == 0)
        fprintf(stderr, "forgebox: note: no usable hardware virtualization here; the VM runs under "
                        "TCG emulation, which upstream QEMU does not treat as a security boundary\n");
    return 0;
}

void fb_cli_box_down(fb_cli_box *b)
{
    if (b->sb)
        fb_sandbox_destroy(b->sb);
    b->sb = NULL;
    fb_run_net_stop(&b->net);
}

void fb_cli_catch_signals(void (*handler)(int))
{
    struct sigaction sa = {.sa_handler = handler};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int fb_cli_bad_usage(const char *verb, const char *fmt, const char *arg)
{
    fprintf(stderr, "forgebox %s: ", verb);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'forgebox %s --help'.\n", verb);
    return FB_EXIT_USAGE;
}
