/*
 * run.c - `forgebox run`: one command in a fresh sandbox, from the shell.
 *
 * Creates the sandbox, copies --put files in, runs the command with its
 * output streamed live and this process's stdin forwarded, copies --get
 * files out (never clobbering a local file with a failed copy), destroys
 * the sandbox and exits with the command's status.  The
 * outcomes ForgeBox itself decides - timeout, out of memory, sandbox
 * failure - get their own exit codes (cli.h) and one line on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "sandbox/sandbox.h"

#define MAX_TRANSFERS 64
#define MAX_GET_BYTES (1024ull * 1024 * 1024)
#define DEFAULT_TIMEOUT_S 300
#define MAX_TIMEOUT_S (24 * 3600)

static volatile sig_atomic_t cancel_signal;

static void on_signal(int sig)
{
    cancel_signal = sig;
}

static void run_usage(FILE *out)
{
    fprintf(out,
            "usage: forgebox run [options] -- CMD [ARG...]\n"
            "\n"
            "Runs CMD in a fresh sandbox, streams its output, forwards stdin, and exits\n"
            "with its status (128+N if killed by signal N).\n"
            "\n"
            "options:\n"
            "  --backend vm|jail     isolation backend (default vm)\n"
            "  --memory MIB          guest memory / memory limit (default 512)\n"
            "  --vcpus N             virtual CPUs / CPU quota (default 1)\n"
            "  --timeout SECONDS     wall-clock limit for CMD (default %d)\n"
            "  --disk MIB            size of /workspace (default 256)\n"
            "  --pids N              process limit inside the sandbox (default 256)\n"
            "  --max-output BYTES    cap on stdout+stderr (default 8388608)\n"
            "  --env KEY=VALUE       set a variable (repeatable; the environment starts empty)\n"
            "  --cwd DIR             working directory (default /workspace)\n"
            "  --put LOCAL:REMOTE    copy a file in before CMD (repeatable)\n"
            "  --get REMOTE:LOCAL    copy a file out after CMD (repeatable)\n"
            "  --image DIR           guest image directory\n"
            "  --state-dir DIR       state directory (default /var/lib/forgebox)\n"
            "  --accel auto|kvm|tcg  vm accelerator (default auto)\n"
            "  --no-vm-snapshot      boot the VM cold: neither start from nor make a snapshot\n"
            "  --tcg-cache-mib N     vm under TCG: QEMU's translation cache (default 20;\n"
            "                        smaller: less host memory, busy VMs slower)\n"
            "  --allow-net HOST[,HOST...]  let CMD reach these hosts through the egress\n"
            "                        proxy (repeatable; pypi.org, *.example.com, host:8443);\n"
            "                        default: no network\n"
            "  --config FILE         forgebox.yaml for network.* (default $FORGEBOX_CONFIG,\n"
            "                        else /etc/forgebox/forgebox.yaml if it exists)\n"
            "  -q, --quiet           no notes on stderr\n"
            "\n"
            "exit codes: the command's own; %d timeout; %d out of memory; %d sandbox\n"
            "failure; %d not executable; %d not found; %d usage error.\n",
            DEFAULT_TIMEOUT_S, FB_EXIT_TIMEOUT, FB_EXIT_OOM, FB_EXIT_SANDBOX, FB_EXIT_NOEXEC,
            FB_EXIT_NOTFOUND, FB_EXIT_USAGE);
}

static int bad_usage(const char *fmt, const char *arg)
{
    return fb_cli_bad_usage("run", fmt, arg);
}

static void on_output(void *ctx, int stream, const void *data, size_t len)
{
    (void)ctx;
    int fd = stream == FB_STREAM_STDOUT ? STDOUT_FILENO : STDERR_FILENO;
    /* A closed stdout (| head) must not kill us before cleanup. */
    (void)fb_write_all(fd, data, len);
}

typedef struct transfer {
    char *local;
    char *remote;
} transfer;

static int parse_transfer(char *arg, bool put, transfer *t)
{
    /* Remote paths may not contain ':'; local ones may. */
    char *colon = put ? strrchr(arg, ':') : strchr(arg, ':');
    if (!colon || colon == arg || colon[1] == '\0')
        return -1;
    *colon = '\0';
    t->local = put ? arg : colon + 1;
    t->remote = put ? colon + 1 : arg;
    return 0;
}

/* --get: the sandbox decides what it sends, so the operator's existing
 * file is never touched until a complete copy exists.  The copy goes to a
 * new temporary file beside the target (same directory, so rename is
 * atomic; O_EXCL and mode 0600 while it is incomplete), is flushed to disk,
 * gets the final mode (the existing file's, else 0666 less the umask) and
 * then replaces the target by rename.  On any failure the temporary file
 * is removed and the target is as it was. */
static int get_file(fb_sandbox *sb, const char *remote, const char *local, fb_err *err)
{
    char tmp[PATH_MAX];
    const char *slash = strrchr(local, '/');
    int dirlen = slash ? (int)(slash - local + 1) : 0;
    const char *base = slash ? slash + 1 : local;
    mode_t mask = umask(022);
    umask(mask);
    mode_t final_mode = 0666 & ~mask;
    struct stat st;
    if (stat(local, &st) == 0 && S_ISREG(st.st_mode))
        final_mode = st.st_mode & 07777;
    int fd = -1;
    for (int tries = 0; tries < 16 && fd < 0; tries++) {
        uint8_t rnd[6];
        char hex[13];
        fb_random_bytes(rnd, sizeof rnd);
        fb_hex(rnd, sizeof rnd, hex);
        if (snprintf(tmp, sizeof tmp, "%.*s.%.64s.forgebox-%s", dirlen, local, base, hex) >=
            (int)sizeof tmp)
            return fb_fail(err, "cannot get %s: local path %s is too long", remote, local);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            return fb_fail_errno(err, "cannot create a temporary file beside %s", local);
    }
    if (fd < 0)
        return fb_fail(err, "cannot create a temporary file beside %s", local);
    int rc = fb_file_get(sb, remote, fd, MAX_GET_BYTES, err) == FB_OK ? 0 : -1;
    if (rc == 0 && (fchmod(fd, final_mode) < 0 || fsync(fd) < 0))
        rc = fb_fail_errno(err, "cannot write the local copy of %s", remote);
    if (close(fd) < 0 && rc == 0)
        rc = fb_fail_errno(err, "cannot write the local copy of %s", remote);
    if (rc == 0 && rename(tmp, local) < 0)
        rc = fb_fail_errno(err, "cannot replace %s", local);
    if (rc < 0)
        unlink(tmp);
    return rc;
}

int fb_cmd_run(int argc, char **argv)
{
    enum { O_BACKEND = 1, O_MEMORY, O_VCPUS, O_TIMEOUT, O_DISK, O_PIDS, O_MAXOUT, O_ENV, O_CWD,
           O_PUT, O_GET, O_IMAGE, O_STATE, O_ACCEL, O_NO_SNAPSHOT, O_TCG_CACHE, O_ALLOW_NET, O_CONFIG, O_HELP };
    static const struct option opts[] = {
        {"backend", required_argument, NULL, O_BACKEND}, {"memory", required_argument, NULL, O_MEMORY},
        {"vcpus", required_argument, NULL, O_VCPUS},     {"timeout", required_argument, NULL, O_TIMEOUT},
        {"disk", required_argument, NULL, O_DISK},       {"pids", required_argument, NULL, O_PIDS},
        {"max-output", required_argument, NULL, O_MAXOUT},
        {"env", required_argument, NULL, O_ENV},         {"cwd", required_argument, NULL, O_CWD},
        {"put", required_argument, NULL, O_PUT},         {"get", required_argument, NULL, O_GET},
        {"image", required_argument, NULL, O_IMAGE},     {"state-dir", required_argument, NULL, O_STATE},
        {"accel", required_argument, NULL, O_ACCEL},     {"quiet", no_argument, NULL, 'q'},
        {"no-vm-snapshot", no_argument, NULL, O_NO_SNAPSHOT},
        {"tcg-cache-mib", required_argument, NULL, O_TCG_CACHE},
        {"allow-net", required_argument, NULL, O_ALLOW_NET},
        {"config", required_argument, NULL, O_CONFIG},
        {"help", no_argument, NULL, O_HELP},             {NULL, 0, NULL, 0},
    };
    static fb_cli_box box; /* large (the grant); one run per process */
    memset(&box, 0, sizeof box);
    fb_sandbox_config_defaults(&box.cfg);
    uint64_t timeout_s = DEFAULT_TIMEOUT_S, v;
    fb_env_var env[FB_MAX_ENV];
    size_t nenv = 0;
    transfer puts[MAX_TRANSFERS], gets[MAX_TRANSFERS];
    size_t nput = 0, nget = 0;
    const char *cwd = NULL, *config_flag = NULL;
    bool quiet = false;
    fb_err err = {{0}};

    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "+q", opts, NULL)) != -1) {
        switch (c) {
        case O_BACKEND:
            if (strcmp(optarg, "vm") == 0)
                box.cfg.backend = FB_BACKEND_VM;
            else if (strcmp(optarg, "jail") == 0)
                box.cfg.backend = FB_BACKEND_JAIL;
            else
                return bad_usage("--backend must be vm or jail, not '%.64s'", optarg);
            break;
        case O_MEMORY:
            if (fb_parse_u64(optarg, FB_MIN_MEMORY_MIB, FB_MAX_MEMORY_MIB, &box.cfg.memory_mib) < 0)
                return bad_usage("--memory must be a number of MiB between 64 and 65536, not '%.64s'",
                                 optarg);
            break;
        case O_VCPUS:
            if (fb_parse_u64(optarg, 1, FB_MAX_VCPUS, &box.cfg.vcpus) < 0)
                return bad_usage("--vcpus must be between 1 and 64, not '%.64s'", optarg);
            break;
        case O_TIMEOUT:
            if (fb_parse_u64(optarg, 1, MAX_TIMEOUT_S, &timeout_s) < 0)
                return bad_usage("--timeout must be between 1 and 86400 seconds, not '%.64s'", optarg);
            break;
        case O_DISK:
            if (fb_parse_u64(optarg, 1, FB_MAX_DISK_MIB, &box.cfg.disk_mib) < 0)
                return bad_usage("--disk must be a number of MiB between 1 and 65536, not '%.64s'",
                                 optarg);
            break;
        case O_PIDS:
            if (fb_parse_u64(optarg, FB_MIN_PIDS, FB_MAX_PIDS, &box.cfg.pids) < 0)
                return bad_usage("--pids must be between 16 and 65536, not '%.64s'", optarg);
            break;
        case O_MAXOUT:
            if (fb_parse_u64(optarg, 1, 1ull << 30, &v) < 0)
                return bad_usage("--max-output must be between 1 and 1073741824 bytes, not '%.64s'",
                                 optarg);
            box.cfg.max_output = v;
            break;
        case O_ENV: {
            /* Split once here: the sandbox API takes key/value pairs. */
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                return bad_usage("--env takes KEY=VALUE, not '%.64s'", optarg);
            if (nenv == FB_MAX_ENV)
                return bad_usage("too many --env options (at most %s)", "256");
            *eq = '\0';
            env[nenv++] = (fb_env_var){.key = optarg, .value = eq + 1};
            break;
        }
        case O_CWD:
            if (optarg[0] != '/')
                return bad_usage("--cwd must be an absolute path, not '%.64s'", optarg);
            cwd = optarg;
            break;
        case O_PUT:
            if (nput == MAX_TRANSFERS || parse_transfer(optarg, true, &puts[nput]) < 0)
                return bad_usage("--put takes LOCAL:REMOTE, not '%.64s'", optarg);
            nput++;
            break;
        case O_GET:
            if (nget == MAX_TRANSFERS || parse_transfer(optarg, false, &gets[nget]) < 0)
                return bad_usage("--get takes REMOTE:LOCAL, not '%.64s'", optarg);
            nget++;
            break;
        case O_IMAGE:
            box.image_flag = optarg;
            break;
        case O_STATE:
            box.state_flag = optarg;
            break;
        case O_NO_SNAPSHOT:
            box.cfg.no_vm_snapshot = true;
            break;
        case O_TCG_CACHE:
            if (fb_parse_u64(optarg, FB_MIN_TCG_CACHE_MIB, FB_MAX_TCG_CACHE_MIB, &box.cfg.tcg_cache_mib) < 0)
                return bad_usage("--tcg-cache-mib must be between 8 and 512, not '%.64s'", optarg);
            break;
        case O_ACCEL:
            if (strcmp(optarg, "auto") == 0)
                box.cfg.accel = FB_ACCEL_AUTO;
            else if (strcmp(optarg, "kvm") == 0)
                box.cfg.accel = FB_ACCEL_KVM;
            else if (strcmp(optarg, "tcg") == 0)
                box.cfg.accel = FB_ACCEL_TCG;
            else
                return bad_usage("--accel must be auto, kvm or tcg, not '%.64s'", optarg);
            break;
        case O_ALLOW_NET:
            if (fb_run_net_add(&box.net, optarg, &err) < 0)
                return bad_usage("--allow-net: %s", err.msg);
            break;
        case O_CONFIG:
            config_flag = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case O_HELP:
            run_usage(stdout);
            return 0;
        default:
            return bad_usage("unknown or incomplete option '%.64s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return bad_usage("no command given%s; use: forgebox run [options] -- CMD [ARG...]", "");
    char **cmd = argv + optind;

    /* Local files are opened before any sandbox exists: a typo costs nothing. */
    int put_fds[MAX_TRANSFERS];
    for (size_t i = 0; i < nput; i++) {
        put_fds[i] = open(puts[i].local, O_RDONLY | O_CLOEXEC);
        if (put_fds[i] < 0) {
            fprintf(stderr, "forgebox run: cannot open %s: %s\n", puts[i].local, strerror(errno));
            return FB_EXIT_USAGE;
        }
    }

    fb_cli_catch_signals(on_signal);

    /* forgebox.yaml matters to run only for network.*: without a grant it
     * is not read at all. */
    static fb_config conf;
    bool have_conf = box.net.grant.count > 0;
    if (have_conf && fb_cli_config_load(config_flag, &conf, &err) < 0) {
        fprintf(stderr, "forgebox: %s\n", err.msg);
        return FB_EXIT_USAGE;
    }
    int status = fb_cli_box_up(&box, have_conf ? &conf : NULL, quiet);
    if (have_conf)
        fb_config_free(&conf);
    if (status != 0)
        return status;
    fb_sandbox *sb = box.sb;

    for (size_t i = 0; i < nput; i++) {
        unsigned mode = access(puts[i].local, X_OK) == 0 ? 0755 : 0644;
        if (fb_file_put(sb, puts[i].remote, put_fds[i], mode, &err) != FB_OK) {
            fprintf(stderr, "forgebox: %s\n", err.msg);
            status = FB_EXIT_SANDBOX;
            goto out;
        }
        close(put_fds[i]);
        put_fds[i] = -1;
    }

    fb_exec_req req = {
        .argv = (const char *const *)cmd,
        .envv = env,
        .nenv = nenv,
        .cwd = cwd,
        .timeout_ms = timeout_s * 1000,
        .stdin_fd = STDIN_FILENO,
        .on_output = on_output,
        .cancel = &cancel_signal,
    };
    fb_exec_result res;
    fb_trace("run: exec sent");
    int exec_rc = fb_sandbox_exec(sb, &req, &res, &err);
    fb_trace("run: exec finished");
    if (exec_rc < 0) {
        fprintf(stderr, "forgebox: sandbox failure: %s\n", err.msg);
        status = FB_EXIT_SANDBOX;
        goto out;
    }
    if (!res.started) {
        fprintf(stderr, "forgebox: %s\n", res.message);
        status = res.code == FB_E_NOT_FOUND        ? FB_EXIT_NOTFOUND
                 : res.code == FB_E_NOT_EXECUTABLE ? FB_EXIT_NOEXEC
                                                   : FB_EXIT_SANDBOX;
    } else if (res.timed_out) {
        fprintf(stderr, "forgebox: timed out: the command ran longer than %llu s and was killed\n",
                (unsigned long long)timeout_s);
        status = FB_EXIT_TIMEOUT;
    } else if (res.oom) {
        fprintf(stderr, "forgebox: out of memory: the command was killed at the %llu MiB limit\n",
                (unsigned long long)box.cfg.memory_mib);
        status = FB_EXIT_OOM;
    } else if (cancel_signal) {
        fprintf(stderr, "forgebox: interrupted\n");
        status = 128 + cancel_signal;
    } else if (res.signal) {
        status = 128 + res.signal;
    } else {
        status = res.exit_code;
    }

    for (size_t i = 0; i < nget && !cancel_signal; i++) {
        if (get_file(sb, gets[i].remote, gets[i].local, &err) < 0) {
            fprintf(stderr, "forgebox: %s\n", err.msg);
            status = FB_EXIT_SANDBOX;
            break;
        }
    }
out:
    for (size_t i = 0; i < nput; i++)
        if (put_fds[i] >= 0)
            close(put_fds[i]);
    fb_cli_box_down(&box);
    return status;
}
