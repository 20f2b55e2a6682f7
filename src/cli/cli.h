/*
 * cli.h - the `forgebox` verbs and what they share: where the image, state
 * and runtime directories are, and the exit codes of `forgebox run`.
 */
#ifndef FB_CLI_H
#define FB_CLI_H

#include "config/config.h"
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
/* Exit codes of `forgebox task run` (docs/cli.md): 0 succeeded. */
#define FB_EXIT_TASK_FAILED 1
#define FB_EXIT_TASK_BUDGET 3
#define FB_EXIT_TASK_CANCELLED 130

/* --image, else $FORGEBOX_IMAGE, else <dir of the binary>/image, else
 * /var/lib/forgebox/image. */
const char *fb_cli_image_dir(const char *flag, char *buf, size_t cap);
const char *fb_cli_state_dir(const char *flag);
/* --store URL, else $FORGEBOX_STORE_URL (which keeps a password out of the
 * process list), else NULL: the SQLite store in the state directory. */
const char *fb_cli_store_url(const char *flag);
const char *fb_cli_run_dir(void);

/* run_net.c: the network grant of `forgebox run` (--allow-net). */
typedef struct fb_run_net {
    fb_egress_list grant;
    fb_egress *proxy;       /* NULL without a grant */
    char sandbox_id[64];    /* registered with the proxy, or "" */
} fb_run_net;
/* One --allow-net value, HOST[,HOST...]; -1 with err naming the entry. */
int fb_run_net_add(fb_run_net *n, const char *arg, fb_err *err);
/* forgebox.yaml for a shell verb: config_flag, else FORGEBOX_CONFIG, else
 * the default path if it exists.  -1 with err (cfg freed). */
int fb_cli_config_load(const char *config_flag, fb_config *cfg, fb_err *err);
/* A daemon's settings (serve, node), in their order of precedence:
 * compiled defaults, forgebox.yaml (config_flag, FORGEBOX_CONFIG or the
 * default path), FORGEBOX_* variables, then the flags in sets (n of
 * them), validated.  -1 with err (cfg freed). */
typedef struct fb_cli_setting {
    const char *key, *value, *src;
} fb_cli_setting;
#define FB_CLI_MAX_SETTINGS 64
/* One --set KEY=VALUE (arg is split in place) as a setting; -1 after
 * printing "forgebox VERB: --set takes KEY=VALUE" when it has no '='. */
int fb_cli_setting_parse(const char *verb, char *arg, fb_cli_setting *out);
int fb_cli_daemon_config(const char *config_flag, const fb_cli_setting *sets, int n, fb_config *cfg, fb_err *err);
/* The start both daemons share: fb_cli_daemon_config (its reason printed
 * on stderr), then fb_cli_no_core_dumps; returns the image directory
 * (image_flag, else image_dir, else the default, in buf), or NULL. */
const char *fb_cli_daemon_setup(const char *config_flag, const char *image_flag, const fb_cli_setting *sets, int n,
                                fb_config *cfg, char *buf, size_t cap);
/* No core dumps for a daemon: they would hold TLS keys and in-flight
 * secrets (non-dumpable covers a pipe core_pattern too).  Hard limit 1,
 * not 0: jails give tool processes a limit of 1 (agent/harden.c). */
void fb_cli_no_core_dumps(void);
/* With a grant: checks it against cfg's network.deny, starts the proxy
 * with cfg's network.* and points sc->net_adopt at it.  Without one:
 * nothing (cfg may then be NULL). */
int fb_run_net_start(fb_run_net *n, const fb_config *cfg, fb_sandbox_config *sc, fb_err *err);
/* Gives the created sandbox its grant. */
int fb_run_net_register(fb_run_net *n, const char *sandbox_id, fb_err *err);
/* After the sandbox is destroyed. */
void fb_run_net_stop(fb_run_net *n);

/* sandbox_up.c: the one sandbox of a shell verb (run, task run). */
typedef struct fb_cli_box {
    fb_sandbox_config cfg;  /* the caller sets backend, sizes, ...; dirs are filled in */
    const char *image_flag, *state_flag;
    char image_buf[4096];
    fb_run_net net;         /* the caller adds the grant */
    fb_sandbox *sb;
} fb_cli_box;
/* Fills the directories, starts the egress proxy when there is a grant
 * (network.* from conf, which may be NULL without one), creates the
 * sandbox and gives it its grant; prints the TCG note unless quiet.
 * Returns 0, or the exit code (FB_EXIT_USAGE, FB_EXIT_SANDBOX) with the
 * reason printed on stderr and nothing left running. */
int fb_cli_box_up(fb_cli_box *b, const fb_config *conf, bool quiet);
/* Destroys the sandbox and stops the proxy. */
void fb_cli_box_down(fb_cli_box *b);
/* SIGINT, SIGTERM and SIGHUP to handler (no SA_RESTART: a blocked wait
 * returns EINTR), SIGPIPE ignored (a closed stdout must not kill us
 * before cleanup). */
void fb_cli_catch_signals(void (*handler)(int));
/* "forgebox VERB: " fmt (with one %s for arg), then a pointer to --help;
 * returns FB_EXIT_USAGE. */
int fb_cli_bad_usage(const char *verb, const char *fmt, const char *arg);

int fb_cmd_run(int argc, char **argv);
int fb_cmd_task(int argc, char **argv);
int fb_cmd_doctor(int argc, char **argv);
int fb_cmd_image(int argc, char **argv);
int fb_cmd_audit(int argc, char **argv);
int fb_cmd_serve(int argc, char **argv);
int fb_cmd_admin(int argc, char **argv);
int fb_cmd_routes(int argc, char **argv);
/* `forgebox ca init|issue|revoke|list` (ca_cmd.c). */
int fb_cmd_ca(int argc, char **argv);
/* node_cmd.c: `forgebox node` (a sandbox node) and `forgebox node list`. */
int fb_cmd_node(int argc, char **argv);
/* task_remote.c: `forgebox task list|show|approve|deny|cancel|events`
 * against a gateway; argv[0] is "task". */
int fb_cli_task_remote(int argc, char **argv);
/* mcp.c: the MCP stdio transport, forwarding to a gateway's POST /mcp. */
int fb_cmd_mcp(int argc, char **argv);

#endif
