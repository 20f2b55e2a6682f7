/*
 * harden.c - credentials, capabilities, rlimits and the seccomp allowlist
 * for tool processes (harden.h).
 *
 * The seccomp filter is an allowlist.  Anything not on it fails with EPERM,
 * which is also the answer for the syscalls the contract names (mount,
 * ptrace, module loading, namespaces, bpf, keyrings, ...): they are simply
 * absent from the list.  Three refinements:
 *   - clone3 answers ENOSYS, so glibc falls back to clone, whose flags the
 *     filter can see; clone with any CLONE_NEW* flag is refused.
 *   - socket/socketpair only for AF_UNIX (socket for AF_INET/AF_INET6,
 *     SOCK_STREAM only, with a network grant: the in-sandbox egress
 *     listener is all it reaches).  AF_VSOCK reaches the hypervisor from
 *     any namespace and AF_NETLINK/AF_PACKET/raw sockets (and UDP, so no
 *     DNS query) are kernel attack surface or a way around the proxy.
 *   - ioctl TIOCSTI (typing into a terminal) and personality changes other
 *     than a query are refused.
 *   - RLIMIT_CORE cannot be changed (setrlimit, prlimit64 with a new
 *     value): it is 1, see below.
 * x86-64 only, like the rest of the guest.
 *
 * No core dump may leave a sandbox.  RLIMIT_CORE = 0 stops core files but
 * not a pipe core_pattern (systemd-coredump, apport): for a pipe the
 * kernel ignores the limit and starts the helper as host root for a crash
 * in a jail.  The one value it honours for pipes is 1 (its guard against
 * recursive dumps from a helper), which is also below the smallest ELF
 * core, so no file is written either.  Dumpability cannot carry this:
 * every execve resets it.  So the limit is 1, hard and soft, and the
 * filter refuses changing it (lowering the soft limit to 0 would bring
 * the helper back).
 *
 * Each exec gets a Landlock domain of its own (the ruleset handles only
 * execute and grants it on /, so no file access changes).  Landlock lets a
 * process ptrace-access (PTRACE_MODE_*: /proc/PID/mem, environ, fd, and
 * with hidepid=2 the /proc/PID directory itself) only processes in its own
 * domain or one nested in it: a process an exec leaves behind cannot read
 * or write the memory of a later exec's processes, nor they its, in a jail
 * (the host has no Yama) as in a VM.  Processes of one exec still see each
 * other as before.  Where the kernel has Landlock ABI 6 (Linux 6.12), the
 * domain is also scoped: such a leftover can neither signal a later exec's
 * processes nor connect to the abstract Unix sockets they create (same
 * uid, same pid namespace: nothing else tells them apart).  Older kernels
 * (the guest's 6.1) keep the rest.
 */
#define _GNU_SOURCE
#include "agent/harden.h"

#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

/* Syscalls a tool process may make without argument checks. */
static const char *const allowed_syscalls[] = {
    /* files and directories */
    "read", "write", "open", "openat", "openat2", "close", "close_range", "creat",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
    "lseek", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev",
    "preadv2", "pwritev2", "access", "faccessat", "faccessat2", "truncate",
    "ftruncate", "fallocate", "fsync", "fdatasync", "sync", "syncfs",
    "sync_file_range", "flock", "fcntl", "getdents", "getdents64", "getcwd",
    "chdir", "fchdir", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
    "rmdir", "link", "linkat", "unlink", "unlinkat", "symlink", "symlinkat",
    "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown",
    "lchown", "fchownat", "umask", "utime", "utimes", "utimensat", "futimesat",
    "mknod", "mknodat", "dup", "dup2", "dup3", "pipe", "pipe2", "sendfile",
    "splice", "tee", "vmsplice", "copy_file_range", "readahead", "fadvise64",
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr",
    "flistxattr", "setxattr", "lsetxattr", "fsetxattr", "removexattr",
    "lremovexattr", "fremovexattr", "inotify_init", "inotify_init1",
    "inotify_add_watch", "inotify_rm_watch", "memfd_create",
    /* memory */
    "brk", "mmap", "munmap", "mprotect", "mremap", "msync", "mincore", "madvise",
    "mlock", "mlock2", "munlock", "mlockall", "munlockall", "membarrier",
    "pkey_mprotect", "pkey_alloc", "pkey_free",
    /* processes and threads */
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4",
    "waitid", "kill", "tkill", "tgkill", "getpid", "getppid", "gettid",
    "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "set_tid_address",
    "set_robust_list", "get_robust_list", "futex", "futex_waitv", "rseq",
    "arch_prctl", "prctl", "sched_yield", "sched_getaffinity",
    "sched_setaffinity", "sched_getparam", "sched_setparam",
    "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
    "sched_get_priority_min", "sched_rr_get_interval", "getpriority",
    "setpriority", "getrlimit", "setrlimit", "prlimit64", "getrusage", "times",
    "pidfd_open", "pidfd_send_signal", "seccomp", "capget", "capset",
    /* identity (no privilege to change it; the calls themselves are harmless) */
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
    "getgroups", "setuid", "setgid", "setreuid", "setregid", "setresuid",
    "setresgid", "setgroups", "setfsuid", "setfsgid",
    /* signals */
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigsuspend",
    "sigaltstack", "pause", "signalfd", "signalfd4",
    /* time */
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
    "gettimeofday", "time", "alarm", "getitimer", "setitimer", "timer_create",
    "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
    "timerfd_create", "timerfd_settime", "timerfd_gettime",
    /* event loops */
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1",
    "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd",
    "eventfd2",
    /* local sockets (the family is checked on socket/socketpair below) */
    "connect", "accept", "accept4", "bind", "listen", "shutdown", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "getsockname",
    "getpeername", "setsockopt", "getsockopt",
    /* System V and POSIX IPC: confined by the ipc namespace */
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop",
    "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink",
    "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    /* misc */
    "uname", "sysinfo", "getrandom", "getcpu", "restart_syscall",
    NULL,
};

/* Turns a libseccomp context into a BPF program we own. */
static int export_bpf(scmp_filter_ctx ctx, struct sock_filter **prog, unsigned short *len, fb_err *err)
{
    int fd = memfd_create("fb-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return fb_fail_errno(err, "memfd_create");
    int rc = seccomp_export_bpf(ctx, fd);
    if (rc < 0) {
        close(fd);
        return fb_fail(err, "seccomp: cannot export the filter: %s", strerror(-rc));
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % (off_t)sizeof(struct sock_filter) != 0 ||
        size / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        close(fd);
        return fb_fail(err, "seccomp: exported filter has a bad size (%lld)", (long long)size);
    }
    struct sock_filter *p = malloc((size_t)size);
    if (!p || pread(fd, p, (size_t)size, 0) != size) {
        free(p);
        close(fd);
        return fb_fail(err, "seccomp: cannot read back the filter");
    }
    close(fd);
    *prog = p;
    *len = (unsigned short)(size / (off_t)sizeof(struct sock_filter));
    return 0;
}

/* A second filter, stacked on the allowlist: the kernel applies the most
 * restrictive answer of all filters, so this one can refuse single uses of
 * allowed calls (libseccomp cannot express "ioctl unless A1 is X or Y" in
 * an allowlist rule).  TIOCSTI types into a terminal, TIOCLINUX pokes the
 * console; a sandbox has neither (stdio are pipes, no controlling tty, no
 * /dev/pts), so this is the belt to those braces.  The kernel reads the
 * request as 32 bits, so only those are compared: high bits set by the
 * caller must not slip past (the bug class of CVE-2017-5226).  And the core
 * limit stays where harden put it (see the top of this file). */
static int build_deny_filter(fb_seccomp_progs *out, fb_err *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        return fb_fail(err, "seccomp_init failed");
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)TIOCSTI));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)TIOCLINUX));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setrlimit), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)RLIMIT_CORE));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prlimit64), 2,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, (scmp_datum_t)RLIMIT_CORE),
                              SCMP_A2(SCMP_CMP_NE, 0));
    if (rc < 0)
        fb_fail(err, "seccomp: cannot build the deny filter: %s", strerror(-rc));
    else
        rc = export_bpf(ctx, &out->deny, &out->deny_len, err);
    seccomp_release(ctx);
    return rc < 0 ? -1 : 0;
}

int fb_seccomp_prepare(bool allow_inet, fb_seccomp_progs *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx)
        return fb_fail(err, "seccomp_init failed");
    /* A binary search over the syscall number, not libseccomp's default
     * linear chain of ~250 comparisons.  Every exec loads this filter
     * afresh, so every exec's processes run a new copy of its code: under
     * TCG each conditional branch the first syscalls pass is translated
     * anew (a linear chain is hundreds of them; a tree, ~9 per syscall),
     * which was most of a VM exec's overhead over the guest's own spawn
     * (bench/README.md).  Natively a shorter path per syscall, too. */
    int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    if (rc < 0) {
        seccomp_release(ctx);
        return fb_fail(err, "seccomp: cannot ask for a binary-tree filter: %s", strerror(-rc));
    }
    for (const char *const *name = allowed_syscalls; *name && rc == 0; name++) {
        int nr = seccomp_syscall_resolve_name(*name);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not on this architecture */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (rc < 0)
            fb_fail(err, "seccomp: cannot allow %s: %s", *name, strerror(-rc));
    }
    /* clone: only without namespace flags (glibc's fork and pthreads). */
    const uint64_t ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                              CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP | 0x80 /* NEWTIME */;
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, ns_flags, 0));
    /* clone3 hides its flags behind a pointer: make glibc fall back. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    /* Sockets: AF_UNIX; with a grant also AF_INET/AF_INET6, TCP only
     * (SOCK_STREAM, whatever SOCK_NONBLOCK/SOCK_CLOEXEC): never SOCK_RAW,
     * and no UDP, so no DNS query leaves a tool process. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
    const int inet[2] = {AF_INET, AF_INET6};
    for (int i = 0; i < 2 && allow_inet && rc == 0; i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 2,
                              SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)inet[i]),
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xf /* SOCK_TYPE_MASK */, SOCK_STREAM));
    /* ioctl: allowed here; the second filter takes out TIOCSTI. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 0);
    /* personality: querying and the default persona only. */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1,
                              SCMP_A0(SCMP_CMP_EQ, 0xffffffffu));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 1,
                              SCMP_A0(SCMP_CMP_EQ, 0));
    if (rc < 0) {
        if (err && err->msg[0] == '\0')
            fb_fail(err, "seccomp: cannot build the filter: %s", strerror(-rc));
        seccomp_release(ctx);
        return -1;
    }
    rc = export_bpf(ctx, &out->allow, &out->allow_len, err);
    seccomp_release(ctx);
    if (rc < 0)
        return -1;
    return build_deny_filter(out, err);
}

static int load_prog(struct sock_filter *prog, unsigned short len, fb_err *err)
{
    struct sock_fprog fp = {.len = len, .filter = prog};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fp, 0, 0) < 0)
        return fb_fail_errno(err, "cannot install the seccomp filter");
    return 0;
}

static int set_limit(int resource, uint64_t value, const char *name, fb_err *err)
{
    struct rlimit rl = {.rlim_cur = value, .rlim_max = value};
    if (setrlimit(resource, &rl) < 0)
        return fb_fail_errno(err, "setrlimit(%s)", name);
    return 0;
}

/* The ruleset attribute of Landlock ABI 6 (Debian 12's headers stop at 3). */
struct landlock_ruleset_attr_v6 {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
#define FB_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ull << 0)
#define FB_LANDLOCK_SCOPE_SIGNAL (1ull << 1)
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1u << 0)
#endif

/* A fresh Landlock domain for this exec (see the top of this file). */
static int isolate_exec(fb_err *err)
{
    struct landlock_ruleset_attr_v6 attr = {.handled_access_fs = LANDLOCK_ACCESS_FS_EXECUTE};
    size_t attr_size = sizeof(struct landlock_ruleset_attr); /* ABI 1-3: handled_access_fs only */
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi >= 6) {
        attr.scoped = FB_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | FB_LANDLOCK_SCOPE_SIGNAL;
        attr_size = sizeof attr;
    }
    cleanup_fd int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
    if (rs < 0)
        return fb_fail_errno(err, "cannot create a Landlock ruleset (the kernel must have the "
                                  "landlock LSM enabled: it keeps execs out of each other's memory)");
    cleanup_fd int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return fb_fail_errno(err, "cannot open /");
    struct landlock_path_beneath_attr rule = {.allowed_access = LANDLOCK_ACCESS_FS_EXECUTE,
                                              .parent_fd = root};
    if (syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &rule, 0) < 0)
        return fb_fail_errno(err, "cannot add the Landlock rule for /");
    if (syscall(SYS_landlock_restrict_self, rs, 0) < 0)
        return fb_fail_errno(err, "cannot enter a Landlock domain");
    return 0;
}

int fb_harden_tool_process(const fb_tool_limits *lim, const fb_seccomp_progs *progs, fb_err *err)
{
    /* Tool processes are the first thing the OOM killer takes, never the
     * agent.  Raising the score needs no privilege. */
    (void)fb_write_file("/proc/self/oom_score_adj", "1000", NULL);

    /* 1, not 0: see the top of this file.  Few queued signals and little
     * message queue memory: the jail's share of these per-user counters
     * is its slot's, and each of its processes needs only a little. */
    struct rlimit core;
    if (getrlimit(RLIMIT_CORE, &core) < 0)
        return fb_fail_errno(err, "getrlimit(core)");
    /* A hard limit of 0 (a jail's manager had one): 0 then; jail.c has
     * made sure the host's core_pattern is not a pipe in that case. */
    if (set_limit(RLIMIT_CORE, core.rlim_max >= 1 ? 1 : 0, "core", err) < 0 ||
        set_limit(RLIMIT_SIGPENDING, FB_TOOL_SIGPENDING, "sigpending", err) < 0 ||
        set_limit(RLIMIT_MSGQUEUE, FB_TOOL_MSGQUEUE, "msgqueue", err) < 0 ||
        set_limit(RLIMIT_NPROC, lim->nproc, "nproc", err) < 0 ||
        set_limit(RLIMIT_NOFILE, lim->nofile, "nofile", err) < 0 ||
        set_limit(RLIMIT_FSIZE, lim->fsize, "fsize", err) < 0)
        return -1;

    /* Bounding set first: dropping it needs CAP_SETPCAP, which goes with
     * the uid change below. */
    /* One call per capability (no PR_CAPBSET_READ first: under TCG every
     * syscall here is emulated, per exec): EINVAL is the kernel saying
     * the capability is past its last, as PR_CAPBSET_READ would. */
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
            continue;
        if (errno == EINVAL && cap > 0)
            break;
        return fb_fail_errno(err, "cannot drop capability %d from the bounding set", cap);
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return fb_fail_errno(err, "cannot clear ambient capabilities");

    if (setgroups(0, NULL) < 0)
        return fb_fail_errno(err, "cannot clear supplementary groups");
    if (setresgid(FB_TOOL_GID, FB_TOOL_GID, FB_TOOL_GID) < 0)
        return fb_fail_errno(err, "cannot set gid %d", FB_TOOL_GID);
    if (setresuid(FB_TOOL_UID, FB_TOOL_UID, FB_TOOL_UID) < 0)
        return fb_fail_errno(err, "cannot set uid %d", FB_TOOL_UID);

    /* The uid change cleared permitted/effective; clear inheritable too and
     * check that nothing is left anywhere. */
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &hdr, data) < 0)
        return fb_fail_errno(err, "cannot clear capability sets");
    memset(data, 0xff, sizeof data);
    if (syscall(SYS_capget, &hdr, data) < 0)
        return fb_fail_errno(err, "capget");
    for (int i = 0; i < 2; i++)
        if (data[i].effective || data[i].permitted || data[i].inheritable)
            return fb_fail(err, "capabilities still present after dropping them");
    if (prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) != 0)
        return fb_fail(err, "bounding set still holds CAP_SYS_ADMIN");
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) < 0 || r != FB_TOOL_UID || e != FB_TOOL_UID || s != FB_TOOL_UID)
        return fb_fail(err, "uid change did not take effect");
    if (setuid(0) == 0)
        return fb_fail(err, "could regain uid 0 after dropping it");

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return fb_fail_errno(err, "cannot set no_new_privs");
    if (isolate_exec(err) < 0)
        return -1;
    if (!progs->allow || !progs->deny)
        return fb_fail(err, "internal: seccomp filters were not prepared");
    if (load_prog(progs->deny, progs->deny_len, err) < 0)
        return -1;
    return load_prog(progs->allow, progs->allow_len, err);
}
