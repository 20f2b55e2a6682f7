/*
 * confine.c - see confine.h.
 */
#define _GNU_SOURCE
#include "sandbox/confine.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/backend.h"

void fb_child_die(int report_fd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)fb_write_all(report_fd, msg, strlen(msg));
    _exit(125);
}

void fb_child_private_mounts(int report_fd)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        fb_die_with_error(report_fd, "cannot make mounts private");
}

static unsigned long locked_flags(const char *path)
{
    struct statvfs sv;
    if (statvfs(path, &sv) < 0)
        return 0;
    unsigned long f = 0;
    if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
    return f;
}

void fb_child_bind_ro(int report_fd, const char *src, const char *dst, bool noexec)
{
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
        fb_die_with_error(report_fd, "cannot bind %s on %s", src, dst);
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(dst);
    if (noexec)
        flags |= MS_NOEXEC;
    if (mount(NULL, dst, NULL, flags, NULL) < 0)
        fb_die_with_error(report_fd, "cannot make %s read-only", dst);
    struct statvfs sv;
    if (statvfs(dst, &sv) < 0 || !(sv.f_flag & ST_RDONLY))
        fb_child_die(report_fd, "%s is still writable after the read-only remount", dst);
}

void fb_child_pivot(int report_fd, const char *newroot)
{
    if (chdir(newroot) < 0)
        fb_die_with_error(report_fd, "cannot enter %s", newroot);
    /* pivot_root(".", ".") stacks the old root under the new one; the
     * detach then removes it without needing a directory for it. */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fb_die_with_error(report_fd, "pivot_root into %s failed", newroot);
    if (umount2(".", MNT_DETACH) < 0)
        fb_die_with_error(report_fd, "cannot detach the old root");
    if (chdir("/") < 0)
        fb_die_with_error(report_fd, "chdir / failed");
}

void fb_child_drop_privileges(int report_fd, uid_t uid, gid_t gid)
{
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0)
            break;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            fb_die_with_error(report_fd, "cannot drop capability %d", cap);
    }
    /* Raw syscalls: glibc's wrappers broadcast id changes to every thread
     * it believes exist, and after a raw clone of a threaded parent (the
     * gateway) those threads are not here: the wrapper would wait forever. */
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        fb_die_with_error(report_fd, "setgroups");
    if (syscall(SYS_setresgid, gid, gid, gid) < 0)
        fb_die_with_error(report_fd, "setresgid(%u)", (unsigned)gid);
    if (syscall(SYS_setresuid, uid, uid, uid) < 0)
        fb_die_with_error(report_fd, "setresuid(%u)", (unsigned)uid);
    (void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &hdr, data) < 0)
        fb_die_with_error(report_fd, "capset");
    if (syscall(SYS_capget, &hdr, data) < 0 || data[0].permitted || data[1].permitted ||
        data[0].effective || data[1].effective)
        fb_child_die(report_fd, "capabilities remain after dropping them");
    if (uid != 0 && syscall(SYS_setuid, 0) == 0)
        fb_child_die(report_fd, "could regain uid 0");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fb_die_with_error(report_fd, "no_new_privs");
    /* Credential changes cleared it; the cell must die with its manager. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fb_die_with_error(report_fd, "pdeathsig");
}

void fb_child_setup_fds(int report_fd, int stdio_fd, const int *keep, int nkeep)
{
    /* Move the kept fds out of the way first: they may sit on 3, 4, ... */
    int moved[8];
    if (nkeep > 8)
        fb_child_die(report_fd, "internal: too many fds to pass");
    for (int i = 0; i < nkeep; i++) {
        moved[i] = fcntl(keep[i], F_DUPFD_CLOEXEC, 64);
        if (moved[i] < 0)
            fb_die_with_error(report_fd, "fcntl(F_DUPFD)");
    }
    if (stdio_fd >= 0)
        for (int fd = 0; fd < 3; fd++)
            if (dup2(stdio_fd, fd) < 0)
                fb_die_with_error(report_fd, "dup2");
    for (int i = 0; i < nkeep; i++)
        if (dup2(moved[i], 3 + i) < 0)
            fb_die_with_error(report_fd, "dup2");
    /* Everything else above stdio becomes close-on-exec (the report pipe
     * already is); the passed fds are then let through. */
    if (syscall(SYS_close_range, 3u + (unsigned)nkeep, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) < 0) {
        for (int fd = 3 + nkeep; fd < 4096; fd++)
            if (fd != report_fd)
                close(fd);
    }
    for (int i = 0; i < nkeep; i++)
        if (fb_set_cloexec(3 + i, false) < 0)
            fb_die_with_error(report_fd, "fcntl");
}

static int write_maps(pid_t pid, uid_t base, bool timens, fb_err *err)
{
    char path[64], map[64];
    snprintf(map, sizeof map, "0 %u %u\n", (unsigned)base, FB_UID_RANGE);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    if (fb_write_file(path, map, err) < 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    if (fb_write_file(path, map, err) < 0)
        return -1;
    if (!timens)
        return 0;
    /* The sandbox's monotonic and boot clocks start near zero: its uptime,
     * boot time (/proc/stat btime) and process start times are its own,
     * not the host's.  Offsets are fixed before any process enters. */
    struct timespec mono, boot;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_gettime(CLOCK_BOOTTIME, &boot);
    char offs[128];
    snprintf(offs, sizeof offs, "monotonic -%lld 0\nboottime -%lld 0\n", (long long)mono.tv_sec,
             (long long)boot.tv_sec);
    snprintf(path, sizeof path, "/proc/%d/timens_offsets", (int)pid);
    return fb_write_file(path, offs, err);
}

/* Blocks until the manager says go; _exit if it gave up on us. */
static void wait_go(int sync_fd)
{
    char go;
    if (fb_read_exact(sync_fd, &go, 1) < 0)
        _exit(125);
}

/* Reads the child's setup report: EOF means its execve succeeded. */
static int read_report(int report_fd, fb_err *err)
{
    char msg[512];
    ssize_t n;
    do
        n = read(report_fd, msg, sizeof msg - 1);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        msg[n] = '\0';
        return fb_fail(err, "sandbox setup failed: %s", msg);
    }
    return 0;
}

static void reap(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static pid_t raw_fork(unsigned long flags)
{
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
}

/* ---- into the cgroup, without the manager moving the process -------------- */

/* Moving a process into a cgroup from outside (fb_cgroup_attach) waits for
 * an RCU grace period on most hosts: 5-15 ms, the largest single part of a
 * jail's start before this.  So a new process is placed without it: born
 * in the group on v2 (clone3 with CLONE_INTO_CGROUP), moving itself as its
 * very first step on v1 (cgroup.h says why that does not wait).  Only a v2
 * kernel older than CLONE_INTO_CGROUP (5.7) falls back to the manager
 * attaching the process while it waits. */
#define FB_CLONE_INTO_CGROUP 0x200000000ULL
typedef struct fb_clone_args { /* struct clone_args, version 2 (88 bytes) */
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
} fb_clone_args;

typedef struct placement {
    const fb_cgroup *cg;
    int dir_fd;      /* v2: the group's directory, or -1 */
    bool self_enter; /* v1: the child moves itself */
    bool by_parent;  /* the manager attaches the child, which waits for it */
} placement;

static int placement_init(placement *pl, const fb_cgroup *cg, fb_err *err)
{
    *pl = (placement){.cg = cg, .dir_fd = -1};
    if (!cg)
        return 0;
    if (cg->version == FB_CGROUP_V2) {
        pl->dir_fd = fb_cgroup_open_dir(cg, err);
        return pl->dir_fd < 0 ? -1 : 0;
    }
    if (cg->version == FB_CGROUP_V1)
        pl->self_enter = true;
    else
        pl->by_parent = true; /* fb_cgroup_attach says what is wrong */
    return 0;
}

static void placement_done(placement *pl)
{
    if (pl->dir_fd >= 0)
        close(pl->dir_fd);
    pl->dir_fd = -1;
}

/* A raw fork (flags: CLONE_* namespaces and the like) into the placement. */
static pid_t placed_fork(placement *pl, unsigned long flags)
{
    if (pl->dir_fd >= 0) {
        fb_clone_args ca = {.flags = flags | FB_CLONE_INTO_CGROUP, .exit_signal = SIGCHLD,
                            .cgroup = (uint64_t)pl->dir_fd};
        pid_t pid = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
        if (pid >= 0 || (errno != ENOSYS && errno != E2BIG && errno != EINVAL))
            return pid;
        pl->by_parent = true; /* a kernel without CLONE_INTO_CGROUP */
    }
    return raw_fork(flags);
}

/* The child's first step: in its cgroup before it does anything else. */
static void placed_child(const placement *pl, int sync_fd, int report)
{
    if (pl->self_enter) {
        fb_err err = {{0}};
        if (fb_cgroup_enter_self(pl->cg, &err) < 0)
            fb_child_die(report, "cannot enter the sandbox's cgroup: %s", err.msg);
    }
    if (pl->by_parent)
        wait_go(sync_fd);
}

/* The manager's side, right after the fork. */
static int placed_parent(const placement *pl, pid_t pid, int sync_fd, fb_err *err)
{
    if (!pl->by_parent)
        return 0;
    if (fb_cgroup_attach(pl->cg, pid, err) < 0)
        return -1;
    if (fb_write_all(sync_fd, "g", 1) < 0)
        return fb_fail_errno(err, "cannot release the sandbox process");
    return 0;
}

/* Opens n close-on-exec pipes, all or none. */
static int make_pipes(int (*p)[2], int n, fb_err *err)
{
    for (int i = 0; i < n; i++) {
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            int saved = errno;
            for (int j = 0; j < i; j++) {
                close(p[j][0]);
                close(p[j][1]);
            }
            errno = saved;
            return fb_fail_errno(err, "pipe");
        }
    }
    return 0;
}

/* ---- without a user namespace: one clone -------------------------------- */

static pid_t spawn_direct(const fb_spawn *sp, fb_err *err)
{
    placement pl;
    if (placement_init(&pl, sp->cg, err) < 0)
        return -1;
    int p[2][2];
    if (make_pipes(p, 2, err) < 0) {
        placement_done(&pl);
        return -1;
    }
    int *sync_pipe = p[0], *report = p[1];
    pid_t pid = placed_fork(&pl, (unsigned long)sp->clone_flags);
    if (pid == 0) {
        close(sync_pipe[1]);
        close(report[0]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
            fb_die_with_error(report[1], "pdeathsig");
        placed_child(&pl, sync_pipe[0], report[1]);
        close(sync_pipe[0]);
        sp->child(sp->arg, report[1]);
        fb_child_die(report[1], "internal: child setup returned");
    }
    placement_done(&pl);
    close(sync_pipe[0]);
    close(report[1]);
    if (pid < 0) {
        fb_fail_errno(err, "cannot create the sandbox process (clone)");
        close(sync_pipe[1]);
        close(report[0]);
        return -1;
    }
    int rc = placed_parent(&pl, pid, sync_pipe[1], err);
    close(sync_pipe[1]);
    if (rc == 0)
        rc = read_report(report[0], err);
    close(report[0]);
    if (rc < 0) {
        reap(pid);
        return -1;
    }
    return pid;
}

/* ---- with a user namespace owned by the slot uid ------------------------- */

/* Enters the namespace of fd (nstype, /proc/self/ns/<name>) and checks
 * that this process is in it now. */
static void join_ns(int report, int fd, int nstype, const char *name)
{
    char p[32];
    snprintf(p, sizeof p, "/proc/self/ns/%s", name);
    struct stat want, have;
    if (setns(fd, nstype) < 0)
        fb_die_with_error(report, "cannot enter the sandbox's %s namespace", name);
    if (fstat(fd, &want) < 0 || stat(p, &have) < 0 || want.st_ino != have.st_ino ||
        want.st_dev != have.st_dev)
        fb_child_die(report, "not in the sandbox's %s namespace after setns", name);
}

/* The jail's process, between its clone and its execve (intermediate). */
typedef struct child_start {
    const fb_spawn *sp;
    int report, pid_fd, sync_fd;
} child_start;

static int child_main(void *arg)
{
    const child_start *cs = arg;
    /* Its own fd table (no CLONE_FILES): these close here only. */
    close(cs->pid_fd);
    close(cs->sync_fd);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fb_die_with_error(cs->report, "pdeathsig");
    cs->sp->child(cs->sp->arg, cs->report);
    fb_child_die(cs->report, "internal: child setup returned");
}

/* The intermediate (see confine.h).  A raw clone of a maybe-threaded
 * manager: raw id syscalls only, no malloc, no stdio. */
static void intermediate(const fb_spawn *sp, const placement *pl, int sync_fd, int report,
                         int pid_fd)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fb_die_with_error(report, "pdeathsig");
    placed_child(pl, sync_fd, report);
    if (sp->prepare) {
        if (unshare(CLONE_NEWNS) < 0)
            fb_die_with_error(report, "cannot create the setup mount namespace");
        fb_child_private_mounts(report);
        sp->prepare(sp->arg, report);
    }
    /* As host root: they belong to the host's user namespace. */
    if (sp->join_net_ipc) {
        join_ns(report, sp->net_fd, CLONE_NEWNET, "net");
        join_ns(report, sp->ipc_fd, CLONE_NEWIPC, "ipc");
    }
    uid_t base = sp->uid_base;
    if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, base, base, base) < 0 ||
        syscall(SYS_setresuid, base, base, base) < 0)
        fb_die_with_error(report, "cannot become the slot uid %u", (unsigned)base);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        fb_die_with_error(report, "pdeathsig");
    if (unshare(CLONE_NEWUSER | (sp->timens ? CLONE_NEWTIME : 0)) < 0)
        fb_die_with_error(report, "cannot create the user namespace");
    if (fb_write_all(pid_fd, "u", 1) < 0)
        _exit(125);
    wait_go(sync_fd); /* maps written */
    if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
        fb_die_with_error(report, "cannot become root of the user namespace");
    /* CLONE_PARENT: the child is the manager's, the intermediate goes.
     * The child borrows this process's memory until its execve instead of
     * copying it (CLONE_VM | CLONE_VFORK, as posix_spawn does): no page
     * tables to copy, no copy-on-write faults in its setup and nothing to
     * tear down at its execve, about 0.1 ms of a jail's start.  This
     * process sleeps meanwhile (CLONE_VFORK), so nothing else runs on that
     * memory; nothing but it had it (a private copy of the manager's).
     * The child runs on a stack of its own. */
    enum { CHILD_STACK = 256 * 1024 };
    void *stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        fb_die_with_error(report, "cannot map the sandbox process's setup stack");
    child_start cs = {.sp = sp, .report = report, .pid_fd = pid_fd, .sync_fd = sync_fd};
    pid_t pid = clone(child_main, (char *)stack + CHILD_STACK,
                      CLONE_VM | CLONE_VFORK | CLONE_PARENT | sp->clone_flags | SIGCHLD, &cs);
    if (pid < 0)
        fb_die_with_error(report, "cannot create the sandbox process (clone)");
    int32_t v = (int32_t)pid;
    (void)fb_write_all(pid_fd, &v, sizeof v);
    _exit(0);
}

static pid_t spawn_owned_userns(const fb_spawn *sp, fb_err *err)
{
    placement pl;
    if (placement_init(&pl, sp->cg, err) < 0)
        return -1;
    int p[3][2];
    if (make_pipes(p, 3, err) < 0) {
        placement_done(&pl);
        return -1;
    }
    int *sync_pipe = p[0], *report = p[1], *pidp = p[2];
    pid_t mid = placed_fork(&pl, 0);
    if (mid == 0) {
        close(sync_pipe[1]);
        close(report[0]);
        close(pidp[0]);
        intermediate(sp, &pl, sync_pipe[0], report[1], pidp[1]);
        _exit(125);
    }
    placement_done(&pl);
    close(sync_pipe[0]);
    close(report[1]);
    close(pidp[1]);
    pid_t child = -1;
    int rc = 0;
    if (mid < 0)
        rc = fb_fail_errno(err, "cannot create the sandbox process (clone)");
    fb_trace("spawn: intermediate forked");
    /* Its CPUs, while it has barely started: moving a task that is not
     * running costs nothing, and the jail inherits them. */
    if (rc == 0 && sp->cpus && sched_setaffinity(mid, sizeof *sp->cpus, sp->cpus) < 0)
        rc = fb_fail_errno(err, "cannot pin the sandbox to its CPUs");
    if (rc == 0)
        rc = placed_parent(&pl, mid, sync_pipe[1], err);
    fb_trace("spawn: in its cgroup and CPUs");
    char u;
    if (rc == 0 && fb_read_exact(pidp[0], &u, 1) < 0) {
        /* It died during setup; its report says why. */
        if (read_report(report[0], err) == 0)
            fb_fail(err, "sandbox setup failed before the user namespace existed");
        rc = -1;
    }
    fb_trace("spawn: prepared, user namespace made");
    if (rc == 0 && write_maps(mid, sp->uid_base, sp->timens, err) < 0)
        rc = -1;
    fb_trace("spawn: maps written");
    if (rc == 0 && fb_write_all(sync_pipe[1], "g", 1) < 0)
        rc = fb_fail_errno(err, "cannot release the sandbox process");
    close(sync_pipe[1]);
    int32_t v = -1;
    if (rc == 0 && fb_read_exact(pidp[0], &v, sizeof v) == 0)
        child = (pid_t)v;
    fb_trace("spawn: child cloned");
    close(pidp[0]);
    /* The child's report first: the intermediate's exit (its setup mount
     * namespace torn down, a millisecond or so) goes on meanwhile.  Its
     * end of the report pipe closes before that, so EOF does not wait. */
    if (rc == 0) {
        rc = read_report(report[0], err);
        fb_trace("spawn: child executed the agent");
        if (rc == 0 && child <= 0)
            rc = fb_fail(err, "sandbox setup failed: the sandbox process was not created");
    }
    close(report[0]);
    if (mid > 0)
        while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
            ;
    fb_trace("spawn: intermediate reaped");
    if (rc < 0) {
        reap(child);
        return -1;
    }
    return child;
}

pid_t fb_confine_spawn(const fb_spawn *sp, fb_err *err)
{
    if (sp->join_net_ipc && (!sp->userns || (sp->clone_flags & (CLONE_NEWNET | CLONE_NEWIPC))))
        return fb_fail(err, "internal: namespaces to join need a user namespace and no new ones");
    return sp->userns ? spawn_owned_userns(sp, err) : spawn_direct(sp, err);
}
