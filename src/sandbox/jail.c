/*
 * jail.c - the `jail` backend: fb-agent under Linux namespaces.
 *
 * Container-grade isolation that starts in milliseconds, for hosts or
 * workloads where a VM is too heavy; an explicit choice, never a silent
 * fallback.  The agent runs as PID 1 of new user, pid, mount, ipc, uts,
 * net (no interfaces at all, not even lo up) and cgroup namespaces.  The
 * user namespace maps sandbox uids 0..65535 onto a host range owned by
 * this sandbox's slot, so "root" in the jail is an unprivileged host uid
 * and no two sandboxes share a uid.  The root is the image's rootfs/
 * attached as a read-only clone made by the host, with a fresh /proc (hidepid=2) and a /dev holding
 * only null, zero, full, random, urandom and tty, all set up here before
 * pivot_root; fb-agent adds the scratch tmpfs mounts and the tool-process
 * hardening exactly as in a VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "image/image.h"
#include "sandbox/backend.h"
#include "sandbox/confine.h"

typedef struct jail_args {
    const fb_sandbox *sb;
    int chan;
    int rootfs_tree; /* a detached, read-only clone of IMAGE/rootfs */
} jail_args;

/* Clones IMAGE/rootfs as a detached mount tree, read-only, nosuid, nodev,
 * while we are still fully privileged.  The jail attaches it with
 * move_mount, so its unprivileged root never needs to look the image path
 * up (the image may sit under a directory only the host's root can enter)
 * and never holds a writable view of it, not even for a moment. */
static int open_rootfs_tree(const fb_sandbox *sb, fb_err *err)
{
    char rootfs[4200];
    snprintf(rootfs, sizeof rootfs, "%s/rootfs", sb->image_dir);
    int fd = open_tree(AT_FDCWD, rootfs, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0)
        return fb_fail_errno(err, "cannot clone the rootfs mount %s", rootfs);
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    };
    if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) {
        fb_fail_errno(err, "cannot make the rootfs clone read-only");
        close(fd);
        return -1;
    }
    return fd;
}

static void jail_child(void *arg, int report)
{
    const jail_args *ja = arg;
    const fb_sandbox *sb = ja->sb;
    char root[4200], p[4300];
    snprintf(root, sizeof root, "%s/root", sb->run_path);

    /* uid 0 of the new user namespace (mapped by the parent). */
    if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
        fb_child_die(report, "cannot become root of the user namespace: %s", strerror(errno));
    /* The uid change cleared the parent-death signal: re-arm it, then make
     * sure the manager did not die in between (its end of the report pipe
     * would be gone).  A jail must never outlive its manager. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fb_child_die(report, "pdeathsig: %s", strerror(errno));
    struct pollfd alive = {.fd = report, .events = POLLOUT};
    if (poll(&alive, 1, 0) < 0 || (alive.revents & (POLLERR | POLLHUP)))
        _exit(125);
    if (unshare(CLONE_NEWCGROUP) < 0)
        fb_child_die(report, "cannot create the cgroup namespace: %s", strerror(errno));
    fb_child_private_mounts(report);
    if (move_mount(ja->rootfs_tree, "", AT_FDCWD, root, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        fb_child_die(report, "cannot attach the rootfs: %s", strerror(errno));
    struct statvfs sv;
    if (statvfs(root, &sv) < 0 || !(sv.f_flag & ST_RDONLY) || !(sv.f_flag & ST_NOSUID))
        fb_child_die(report, "the rootfs is not mounted read-only and nosuid");
    close(ja->rootfs_tree);

    snprintf(p, sizeof p, "%s/proc", root);
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") < 0)
        fb_child_die(report, "cannot mount /proc: %s", strerror(errno));

    snprintf(p, sizeof p, "%s/dev", root);
    if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=64") < 0)
        fb_child_die(report, "cannot mount /dev: %s", strerror(errno));
    static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};
    for (const char *const *n = nodes; *n; n++) {
        char src[64], dst[4400];
        snprintf(src, sizeof src, "/dev/%s", *n);
        snprintf(dst, sizeof dst, "%s/dev/%s", root, *n);
        int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd < 0)
            fb_child_die(report, "cannot create %s: %s", dst, strerror(errno));
        close(fd);
        if (mount(src, dst, NULL, MS_BIND, NULL) < 0)
            fb_child_die(report, "cannot bind %s: %s", src, strerror(errno));
    }
    if (sethostname("forgebox", 8) < 0)
        fb_child_die(report, "sethostname: %s", strerror(errno));

    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        fb_child_die(report, "cannot open /dev/null: %s", strerror(errno));
    fb_child_pivot(report, root);
    /* The agent talks only through its channel, never to the host's tty. */
    fb_child_setup_fds(report, devnull, &ja->chan, 1);
    /* No drop here: the agent is root of its own user namespace only, and
     * drops everything itself for each tool process. */
    char *const argv[] = {"fb-agent", "--jail", "--channel-fd", "3", NULL};
    char *const envp[] = {NULL};
    execve("/sbin/fb-agent", argv, envp);
    fb_child_die(report, "cannot execute /sbin/fb-agent in the rootfs: %s", strerror(errno));
}

static int jail_start(fb_sandbox *sb, fb_err *err)
{
    char root[4200];
    snprintf(root, sizeof root, "%s/root", sb->run_path);
    if (mkdir(root, 0755) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", root);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return fb_fail_errno(err, "socketpair");
    int tree = open_rootfs_tree(sb, err);
    if (tree < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    jail_args ja = {.sb = sb, .chan = sv[1], .rootfs_tree = tree};
    fb_spawn sp = {
        .clone_flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
                       CLONE_NEWNET,
        .cg = &sb->cg,
        .userns = true,
        .uid_base = sb->uid_base,
        .child = jail_child,
        .arg = &ja,
    };
    pid_t pid = fb_confine_spawn(&sp, err);
    close(sv[1]);
    close(tree);
    if (pid < 0) {
        close(sv[0]);
        return -1;
    }
    sb->pid = pid;
    sb->chan_fd = sv[0];
    return 0;
}

static uint64_t jail_cgroup_memory(const fb_sandbox *sb)
{
    return sb->cfg.memory_mib * 1024 * 1024;
}

static uint64_t jail_cgroup_pids(const fb_sandbox *sb)
{
    /* The agent itself plus the tool processes' limit. */
    return sb->cfg.pids + 8;
}

const struct fb_backend_ops fb_backend_jail = {
    .name = "jail",
    .image_needs = FB_IMAGE_NEEDS_JAIL,
    .cgroup_memory = jail_cgroup_memory,
    .cgroup_pids = jail_cgroup_pids,
    .start = jail_start,
};
