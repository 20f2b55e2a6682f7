/*
 * doctor.c - `forgebox doctor`: what this host can do, honestly.
 *
 * Checks each thing a backend needs and exits non-zero when a backend
 * cannot run here: QEMU and the accelerator (KVM only where hardware
 * virtualization is real; TCG otherwise, with the warning it deserves),
 * the guest image (fully re-hashed, no cache), cgroups, and namespaces
 * (actually created in a throwaway child, not guessed from files), and
 * what the jail needs of the host kernel besides: a time namespace, loop
 * devices for its own read-only mount of the rootfs, and Landlock, which
 * keeps one exec's processes out of another's /proc/PID/mem.  It also
 * reads forgebox.yaml (--config, FORGEBOX_CONFIG, the default path) and
 * warns for every network.allow_private entry: each is a private address
 * sandboxes with a grant can reach.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/landlock.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "image/image.h"
#include "node/client.h"
#include "sandbox/jailroot.h"
#include "sandbox/sandbox.h"
#include "store/nodes.h"
#include "store/store.h"

static void qemu_version(char *out, size_t cap)
{
    snprintf(out, cap, "not found (install qemu-system-x86)");
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        char *const argv[] = {"qemu-system-x86_64", "--version", NULL};
        char *const envp[] = {NULL};
        execve("/usr/bin/qemu-system-x86_64", argv, envp);
        _exit(127);
    }
    close(p[1]);
    char buf[256] = "";
    ssize_t n = pid > 0 ? read(p[0], buf, sizeof buf - 1) : -1;
    close(p[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    if (n > 0) {
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        snprintf(out, cap, "%s", buf);
    }
}

/* Creates every namespace a jail uses in a child and reports the first
 * that fails. */
static int probe_namespaces(char *out, size_t cap)
{
    static const struct { int flag; const char *name; } ns[] = {
        {CLONE_NEWUSER, "user"}, {CLONE_NEWPID, "pid"},       {CLONE_NEWNS, "mount"},
        {CLONE_NEWIPC, "ipc"},   {CLONE_NEWUTS, "uts"},       {CLONE_NEWNET, "net"},
        {CLONE_NEWCGROUP, "cgroup"},
    };
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)ns[i].flag | SIGCHLD, NULL, NULL, NULL, 0);
        if (pid == 0)
            _exit(0);
        if (pid < 0) {
            snprintf(out, cap, "cannot create a %s namespace: %s", ns[i].name, strerror(errno));
            return -1;
        }
        int st;
        waitpid(pid, &st, 0);
    }
    /* A time namespace can only be asked for with unshare (or clone3). */
    int p[2];
    if (pipe(p) < 0) {
        snprintf(out, cap, "cannot probe the time namespace: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int e = unshare(CLONE_NEWTIME) == 0 ? 0 : errno;
        (void)!write(p[1], &e, sizeof e);
        _exit(0);
    }
    close(p[1]);
    int e = EIO;
    if (pid < 0 || read(p[0], &e, sizeof e) != (ssize_t)sizeof e)
        e = pid < 0 ? errno : EIO;
    close(p[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    if (e != 0) {
        snprintf(out, cap, "cannot create a time namespace: %s", strerror(e));
        return -1;
    }
    snprintf(out, cap, "user, pid, mount, ipc, uts, net, cgroup, time: ok");
    return 0;
}

/* The jail's kernel needs besides namespaces: 0 if all are there. */
static int probe_jail_kernel(char *out, size_t cap)
{
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1) {
        snprintf(out, cap, "Landlock is not available (%s): the jail's tool processes need it",
                 strerror(errno));
        return -1;
    }
    if (access("/dev/loop-control", R_OK | W_OK) < 0) {
        snprintf(out, cap, "/dev/loop-control: %s: the jail mounts its rootfs through a loop device",
                 strerror(errno));
        return -1;
    }
    snprintf(out, cap, "Landlock ABI %ld, loop devices: ok", abi);
    return 0;
}

/* nodes.mode remote: the nodes the store knows, each up one's healthz
 * called with the gateway's certificate (and its own checked). */
static bool report_nodes(const fb_config *cfg)
{
    fb_store *st = NULL;
    fb_err err = {{0}};
    if (fb_store_open_url(cfg->state_dir, cfg->store.url, &st, &err) < 0) {
        printf("  nodes:       cannot open the store: %s\n", err.msg);
        return false;
    }
    fb_node_record *nodes = NULL;
    size_t n = 0, healthy = 0;
    fb_node_client *nc = NULL;
    bool ok = fb_store_node_list(st, &nodes, &n, &err) == 0;
    if (!ok)
        printf("  nodes:       cannot list nodes: %s\n", err.msg);
    else if (fb_node_client_open(cfg, &nc, &err) < 0) {
        printf("  nodes:       %s\n", err.msg);
        ok = false;
    }
    for (size_t i = 0; ok && i < n; i++) {
        fb_err e = {{0}};
        bool up = strcmp(nodes[i].state, "up") == 0;
        bool answers = up && fb_node_client_health(nc, &nodes[i], &e) == FB_OK;
        healthy += answers;
        printf("  node:        %s (%s, %s, %llu/%llu sandboxes): %s%s%s\n", nodes[i].name, nodes[i].address,
               nodes[i].backend, (unsigned long long)nodes[i].live, (unsigned long long)nodes[i].capacity,
               nodes[i].state, up ? (answers ? ", healthz ok" : ", healthz failed: ") : "",
               up && !answers ? e.msg : "");
    }
    if (ok)
        printf("  nodes:       nodes.mode remote, %zu registered, %zu answering\n", n, healthy);
    fb_node_client_free(nc);
    free(nodes);
    fb_store_close(st);
    return ok && healthy > 0;
}

/* The network: keys of forgebox.yaml, with a warning per allow_private
 * entry (each lets the egress proxy reach a private address). */
static bool report_network(const char *config_flag)
{
    bool required = false;
    const char *path = fb_config_path(config_flag, environ, &required);
    fb_config cfg;
    fb_err err = {{0}};
    int rc = fb_config_defaults(&cfg);
    if (rc == 0)
        rc = fb_config_load_file(&cfg, path, required, &err);
    if (rc == 0)
        rc = fb_config_apply_env(&cfg, environ, &err);
    if (rc < 0) {
        printf("  config:      %s\n", err.msg);
        fb_config_free(&cfg);
        return false;
    }
    bool nodes_ok = cfg.nodes.mode != FB_NODES_REMOTE || report_nodes(&cfg);
    printf("  network:     network.allow %zu entries, network.deny %zu, network.hosts %zu names\n",
           cfg.network.allow.count, cfg.network.deny.count, cfg.network.nhosts);
    for (size_t i = 0; i < cfg.network.nallow_private; i++) {
        char a[64];
        fb_egress_addr_format(&cfg.network.allow_private[i], a, sizeof a);
        printf("  warning:     network.allow_private lets sandboxes with a grant reach %s, a %s address\n", a,
               fb_addr_class_name(fb_egress_addr_class(&cfg.network.allow_private[i])));
    }
    fb_config_free(&cfg);
    return nodes_ok;
}

int fb_cmd_doctor(int argc, char **argv)
{
    const char *image_flag = NULL, *config_flag = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--image") == 0 && i + 1 < argc)
            image_flag = argv[++i];
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_flag = argv[++i];
        else {
            fprintf(stderr, "usage: forgebox doctor [--image DIR] [--config FILE]\n");
            return FB_EXIT_USAGE;
        }
    }
    fb_host_caps caps;
    fb_host_probe(&caps);
    char qv[256], ns[256], buf[4096];
    qemu_version(qv, sizeof qv);
    bool ns_ok = probe_namespaces(ns, sizeof ns) == 0;
    char jk[256];
    bool jk_ok = probe_jail_kernel(jk, sizeof jk) == 0;
    const char *image = fb_cli_image_dir(image_flag, buf, sizeof buf);
    fb_err ierr = {{0}}, jerr = {{0}};
    bool vm_image = fb_image_verify(image, NULL, FB_IMAGE_NEEDS_VM, &ierr) == 0;
    bool jail_image = fb_image_verify(image, NULL, FB_IMAGE_NEEDS_JAIL, &jerr) == 0;
    bool root = geteuid() == 0;
    bool cg_ok = caps.cgroup_version != 0;
    bool qemu_ok = strncmp(qv, "not found", 9) != 0;

    printf("forgebox doctor\n");
    printf("  accelerator: %s\n", caps.kvm_reason);
    if (!caps.kvm_usable)
        printf("  warning:     TCG emulation is not treated as a security boundary by upstream "
               "QEMU;\n               use a host with hardware virtualization in production\n");
    printf("  qemu:        %s\n", qv);
    if (vm_image && jail_image) {
        char kernel[128];
        uint64_t npk = 0;
        fb_err e;
        if (fb_image_describe(image, kernel, sizeof kernel, &npk, &e) == 0)
            printf("  image:       %s: verified (kernel %s, %llu packages)\n", image, kernel,
                   (unsigned long long)npk);
    } else {
        printf("  image:       %s: %s\n", image, !vm_image ? ierr.msg : jerr.msg);
    }
    printf("  cgroups:     %s\n", caps.cgroup_desc);
    printf("  namespaces:  %s\n", ns);
    printf("  jail kernel: %s\n", jk);
    char shared[4600];
    fb_jailroot_describe(fb_cli_run_dir(), shared, sizeof shared);
    /* The jails of one image read through one shared read-only EROFS
     * mount (sandbox/jailroot.c), made by the first jail after the image
     * check and replaced when the image file changes. */
    printf("  jail root:   %s%s\n", shared[0] ? "shared read-only mount of rootfs.erofs at " : "",
           shared[0] ? shared : "no shared mount yet (the next jail makes it)");
    printf("  privileges:  %s\n", root ? "root" : "not root: sandboxes need root");
    bool vm_ok = root && qemu_ok && vm_image && cg_ok && ns_ok;
    bool jail_ok = root && jail_image && cg_ok && ns_ok && jk_ok && caps.userns;
    printf("  backend vm:  %s\n", vm_ok ? (caps.kvm_usable ? "ready (kvm)" : "ready (tcg)") : "cannot run");
    printf("  backend jail: %s\n", jail_ok ? "ready" : "cannot run");
    bool cfg_ok = report_network(config_flag);
    return vm_ok && jail_ok && cfg_ok ? 0 : 1;
}
