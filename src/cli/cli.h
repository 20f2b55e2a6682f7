/*
 * cli.h - the `forgebox` verbs and what they share: where the image, state
 * and runtime directories are, and the exit codes of `forgebox run`.
 */
#ifndef FB_CLI_H
#define FB_CLI_H

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

int fb_cmd_run(int argc, char **argv);
int fb_cmd_doctor(int argc, char **argv);
int fb_cmd_image(int argc, char **argv);
int fb_cmd_audit(int argc, char **argv);
int fb_cmd_serve(int argc, char **argv);
int fb_cmd_admin(int argc, char **argv);
int fb_cmd_routes(int argc, char **argv);

#endif
