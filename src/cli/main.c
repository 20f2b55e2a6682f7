/*
 * main.c - `forgebox`: one host binary, one verb per job.
 */
#define _GNU_SOURCE
#include <sys/prctl.h>
#include <sys/resource.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define FORGEBOX_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: forgebox <command> [options]\n"
            "\n"
            "commands:\n"
            "  run [options] -- CMD [ARG...]   run one command in a fresh sandbox\n"
            "  task run [options] \"PROMPT\"   run one AI task locally, its tools in a fresh sandbox\n"
            "  serve [options]                 run the authenticated gateway (docs/configuration.md)\n"
            "  admin init [--state-dir DIR]    create the organisation and the first admin key\n"
            "  routes                          list the gateway's routes\n"
            "  mcp                             serve MCP on stdio, forwarding to $FORGEBOX_URL (docs/mcp.md)\n"
            "  doctor                          say what this host can do\n"
            "  image seal DIR | verify [--image DIR]\n"
            "                                  write or check a guest image manifest\n"
            "  audit verify|export [--state-dir DIR]\n"
            "                                  check the audit hash chain, or print it as JSON lines\n"
            "  task list|show|approve|deny|cancel|events [--url URL]\n"
            "                                  the tasks of a gateway (`forgebox task --help`)\n"
            "  ca init|issue|revoke|list --dir DIR\n"
            "                                  the organisation CA for mutual TLS (docs/certificates.md)\n"
            "  node --name N --listen A:P ...  run a sandbox node for gateways (docs/node.md)\n"
            "  node list [--store URL]         the nodes a shared store knows\n"
            "  version                         print the version\n"
            "\n"
            "`forgebox run --help` lists the options of run.\n");
}

const char *fb_cli_image_dir(const char *flag, char *buf, size_t cap)
{
    if (flag)
        return flag;
    const char *env = getenv("FORGEBOX_IMAGE");
    if (env && *env)
        return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, cap, "%s/image", exe);
            if (access(buf, F_OK) == 0)
                return buf;
        }
    }
    return "/var/lib/forgebox/image";
}

int fb_cli_daemon_config(const char *config_flag, const fb_cli_setting *sets, int n, fb_config *cfg, fb_err *err)
{
    bool required = false;
    const char *path = fb_config_path(config_flag, environ, &required);
    int rc = fb_config_defaults(cfg);
    if (rc < 0)
        return fb_fail(err, "config: out of memory");
    rc = fb_config_load_file(cfg, path, required, err);
    if (rc == 0)
        rc = fb_config_apply_env(cfg, environ, err);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = fb_config_set(cfg, sets[i].key, sets[i].value, sets[i].src, err);
    if (rc == 0)
        rc = fb_config_validate(cfg, err);
    if (rc < 0) {
        fb_config_free(cfg);
        return -1;
    }
    return 0;
}

const char *fb_cli_daemon_setup(const char *config_flag, const char *image_flag, const fb_cli_setting *sets, int n,
                                fb_config *cfg, char *buf, size_t cap)
{
    fb_err err = {{0}};
    if (fb_cli_daemon_config(config_flag, sets, n, cfg, &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return NULL;
    }
    fb_cli_no_core_dumps();
    return image_flag ? image_flag : cfg->image_dir ? cfg->image_dir : fb_cli_image_dir(NULL, buf, cap);
}

int fb_cli_setting_parse(const char *verb, char *arg, fb_cli_setting *out)
{
    char *eq = strchr(arg, '=');
    if (!eq) {
        fprintf(stderr, "forgebox %s: --set takes KEY=VALUE, not '%.64s'\n", verb, arg);
        return -1;
    }
    *eq = '\0';
    *out = (fb_cli_setting){arg, eq + 1, "--set"};
    return 0;
}

void fb_cli_no_core_dumps(void)
{
    struct rlimit nocore = {0, 1};
    setrlimit(RLIMIT_CORE, &nocore);
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

const char *fb_cli_state_dir(const char *flag)
{
    if (flag)
        return flag;
    const char *env = getenv("FORGEBOX_STATE_DIR");
    return env && *env ? env : "/var/lib/forgebox";
}

const char *fb_cli_store_url(const char *flag)
{
    if (flag)
        return flag;
    const char *env = getenv("FORGEBOX_STORE_URL");
    return env && *env ? env : NULL;
}

const char *fb_cli_run_dir(void)
{
    const char *env = getenv("FORGEBOX_RUN_DIR");
    return env && *env ? env : "/run/forgebox";
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return FB_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0)
        return fb_cmd_run(argc - 1, argv + 1);
    /* `task run` is local (task_run.c); every other task verb talks to a gateway. */
    if (strcmp(cmd, "task") == 0 && !(argc > 2 && strcmp(argv[2], "run") == 0))
        return fb_cli_task_remote(argc - 1, argv + 1);
    if (strcmp(cmd, "task") == 0)
        return fb_cmd_task(argc - 1, argv + 1);
    if (strcmp(cmd, "doctor") == 0)
        return fb_cmd_doctor(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return fb_cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "admin") == 0)
        return fb_cmd_admin(argc - 1, argv + 1);
    if (strcmp(cmd, "mcp") == 0)
        return fb_cmd_mcp(argc - 1, argv + 1);
    if (strcmp(cmd, "routes") == 0)
        return fb_cmd_routes(argc - 1, argv + 1);
    if (strcmp(cmd, "image") == 0)
        return fb_cmd_image(argc - 1, argv + 1);
    if (strcmp(cmd, "audit") == 0)
        return fb_cmd_audit(argc - 1, argv + 1);
    if (strcmp(cmd, "ca") == 0)
        return fb_cmd_ca(argc - 1, argv + 1);
    if (strcmp(cmd, "node") == 0)
        return fb_cmd_node(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("forgebox %s\n", FORGEBOX_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "forgebox: unknown command '%.64s'\n", cmd);
    usage(stderr);
    return FB_EXIT_USAGE;
}
