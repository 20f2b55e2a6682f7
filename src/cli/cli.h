/*
 * cli.h - the `forgebox` verbs and what they share: where the image, state
 * and runtime directories are, and the exit codes of `forgebox run`.
 */
#ifndef FB_CLI_H
#define FB_CLI_H

#include "egress/egress.h"
#include "sandbox/sandbox.h"

#include <stddef.h>

/* Exit codes of `forgebox run` besides the command's own (docs/cli.md). */
#define FB_EXIT_USAGE 2
#define FB_EXIT_OOM 123
#define FB_EXIT_TIMEOUT 124
#define FB_EXIT_SANDBOX 125
#define FB_EXIT_NOEXEC 126
#define FB_EXIT_NOTFOUND 127

/* --image, else $FORGEBOX_IMAGE, else <dir of the binary>/image, else
 * /var/lib/forgebox/image. */
const char *fb_cli_image_dir(const char *flag, char *buf, size_t cap);
const char *fb_cli_state_dir(const char *flag);
const char *fb_cli_run_dir(void);

/* run_net.c: the network grant of `forgebox run` (--allow-net). */
typedef struct fb_run_net {
    fb_egress_list grant;
    fb_egress *proxy;       /* NULL without a grant */
    char sandbox_id[64];    /* registered with the proxy, or "" */
} fb_run_net;
/* One --allow-net value, HOST[,HOST...]; -1 with err naming the entry. */
int fb_run_net_add(fb_run_net *n, const char *arg, fb_err *err);
/* With a grant: reads network.* from forgebox.yaml (config_flag, else
 * FORGEBOX_CONFIG, else the default path if it exists), checks the grant
 * against network.deny, starts the proxy and points sc->net_adopt at it.
 * Without one: nothing. */
int fb_run_net_start(fb_run_net *n, const char *config_flag, fb_sandbox_config *sc, fb_err *err);
/* Gives the created sandbox its grant. */
int fb_run_net_register(fb_run_net *n, const char *sandbox_id, fb_err *err);
/* After the sandbox is destroyed. */
void fb_run_net_stop(fb_run_net *n);

int fb_cmd_run(int argc, char **argv);
int fb_cmd_doctor(int argc, char **argv);
int fb_cmd_image(int argc, char **argv);
int fb_cmd_audit(int argc, char **argv);
int fb_cmd_serve(int argc, char **argv);
int fb_cmd_admin(int argc, char **argv);
int fb_cmd_routes(int argc, char **argv);
/* mcp.c: the MCP stdio transport, forwarding to a gateway's POST /mcp. */
int fb_cmd_mcp(int argc, char **argv);

#endif
