/*
 * seccomp_rules.c - the tool-process seccomp policy (seccomp_rules.h):
 * the rule list, built with libseccomp at build time by tools/gen_seccomp.c.
 *
 * The filter is an allowlist.  Anything not on it fails with EPERM, which
 * is also the answer for the syscalls the contract names (mount, ptrace,
 * module loading, namespaces, bpf, keyrings, ...): they are simply absent
 * from the list.  Refinements:
 *   - clone3 answers ENOSYS, so glibc falls back to clone, whose flags the
 *     filter can see; clone with any CLONE_NEW* flag is refused.
 *   - socket/socketpair only for AF_UNIX (socket for AF_INET/AF_INET6,
 *     SOCK_STREAM only, with a network grant: the in-sandbox egress
 *     listener is all it reaches).  AF_VSOCK reaches the hypervisor from
 *     any namespace and AF_NETLINK/AF_PACKET/raw sockets (and UDP, so no
 *     DNS query) are kernel attack surface or a way around the proxy.
 *   - ioctl TIOCSTI (typing into a terminal) and TIOCLINUX, and personality
 *     changes other than a query, are refused.
 *   - RLIMIT_CORE cannot be changed (setrlimit, prlimit64 with a new
 *     value): it is 1, see harden.c.
 * x86-64 only, like the rest of the guest.
 *
 * This file is the policy's single source; it is not part of fb-agent
 * (the Makefile leaves it out): fb-agent loads the programs that
 * tools/gen_seccomp.c exported from it into build/gen/seccomp_bpf.h.
 * Two builds of the same policy live here: the reference, libseccomp's
 * (fb_seccomp_build_reference), and the program fb-agent loads, a search
 * over ranges of syscall numbers about a third of its length
 * (fb_seccomp_build_single, at the end of this file).  The unit test
 * holds them to the same verdict on every input it tries.
 */
#define _GNU_SOURCE
#include "agent/seccomp_rules.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

/* The refinements, a filter of their own (fb_seccomp_concat puts it in
 * front of the allowlist): it refuses single uses of allowed calls (libseccomp cannot express "ioctl unless A1 is X or Y" in
 * an allowlist rule).  TIOCSTI types into a terminal, TIOCLINUX pokes the
 * console; a sandbox has neither (stdio are pipes, no controlling tty, no
 * /dev/pts), so this is the belt to those braces.  The kernel reads the
 * request as 32 bits, so only those are compared: high bits set by the
 * caller must not slip past (the bug class of CVE-2017-5226).  And the core
 * limit stays where harden put it (see the top of this file). */
int fb_seccomp_build_deny(struct sock_filter **prog, unsigned short *len, fb_err *err)
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
        rc = export_bpf(ctx, prog, len, err);
    seccomp_release(ctx);
    return rc < 0 ? -1 : 0;
}

int fb_seccomp_build_allow(bool allow_inet, struct sock_filter **prog, unsigned short *len, fb_err *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (!ctx)
        return fb_fail(err, "seccomp_init failed");
    /* A binary search over the syscall number, not libseccomp's default
     * linear chain of ~250 comparisons (the reference program was what
     * every exec loaded up to session 6; under TCG each conditional branch
     * of a linear chain the first syscalls pass was translated anew).  The
     * program loaded now, fb_seccomp_build_single, searches ranges. */
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
    /* ioctl: allowed here; the refinements take out TIOCSTI and TIOCLINUX. */
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
    rc = export_bpf(ctx, prog, len, err);
    seccomp_release(ctx);
    return rc < 0 ? -1 : 0;
}


int fb_seccomp_concat(const struct sock_filter *deny, unsigned short deny_len,
                      const struct sock_filter *allow, unsigned short allow_len,
                      struct sock_filter **prog, unsigned short *len, fb_err *err)
{
    size_t total = (size_t)deny_len + allow_len;
    if (deny_len == 0 || allow_len == 0 || total > BPF_MAXINSNS)
        return fb_fail(err, "seccomp: cannot join filters of %u and %u instructions", deny_len, allow_len);
    struct sock_filter *p = calloc(total, sizeof *p);
    if (!p)
        return fb_fail(err, "out of memory");
    for (unsigned i = 0; i < deny_len; i++) {
        struct sock_filter ins = deny[i];
        if (BPF_CLASS(ins.code) == BPF_RET) {
            if (BPF_RVAL(ins.code) != BPF_K) {
                free(p);
                return fb_fail(err, "seccomp: the refinement filter returns a computed verdict");
            }
            if (ins.k == SECCOMP_RET_ALLOW)
                /* Unconditional jump (32-bit offset) to the allowlist's
                 * first instruction, right after the last of these. */
                ins = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, deny_len - i - 1, 0, 0);
        } else if (BPF_CLASS(ins.code) == BPF_JMP) {
            /* Jumps stay inside the refinements (they were valid there). */
            unsigned long far = BPF_OP(ins.code) == BPF_JA
                                    ? ins.k
                                    : (ins.jt > ins.jf ? ins.jt : ins.jf);
            if (i + 1 + far >= deny_len) {
                free(p);
                return fb_fail(err, "seccomp: a jump leaves the refinement filter");
            }
        }
        p[i] = ins;
    }
    memcpy(p + deny_len, allow, (size_t)allow_len * sizeof *allow);
    *prog = p;
    *len = (unsigned short)total;
    return 0;
}

int fb_seccomp_build_reference(bool allow_inet, struct sock_filter **prog, unsigned short *len, fb_err *err)
{
    struct sock_filter *allow = NULL, *deny = NULL;
    unsigned short allow_len = 0, deny_len = 0;
    int rc = -1;
    if (fb_seccomp_build_allow(allow_inet, &allow, &allow_len, err) == 0 &&
        fb_seccomp_build_deny(&deny, &deny_len, err) == 0)
        rc = fb_seccomp_concat(deny, deny_len, allow, allow_len, prog, len, err);
    free(allow);
    free(deny);
    return rc;
}

/* ---- The program fb-agent loads: a search over ranges -------------------
 *
 * libseccomp's tree compares the syscall number against each allowed
 * number (~390 instructions).  The allowed x86-64 numbers form a few dozen
 * runs of consecutive numbers, so a search over those runs gives the same
 * verdicts in about a third of the instructions.  The kernel's cost to
 * load a filter, paid at every exec, grows with its length (the classic to
 * eBPF conversion, its checks, the pages made read-only; bench/README.md,
 * "Session 7: agent exec").
 *
 * The allowed numbers come from the same list as the reference program
 * (allowed_syscalls); the argument checks are written out below.  The
 * unit test proves both programs give the same verdict on every syscall
 * number and every argument case, so a rule changed on one side only fails
 * there. */

enum { L_ALLOW, L_EPERM, L_ENOSYS, L_KILL, L_FIRST_FREE };

#define SD_NR 0u
#define SD_ARCH 4u
#define SD_ARG_LO(i) (16u + 8u * (i))
#define SD_ARG_HI(i) (20u + 8u * (i))
#define X32_SYSCALL_BIT 0x40000000u
#define RANGE_NR_LIMIT 1024u /* above every x86-64 number: EPERM from there */
#define MAX_LABELS 1024
#define MAX_GEN_INSNS 1024

/* An instruction whose jumps name labels; -1 is the next instruction. */
typedef struct gen_ins {
    struct sock_filter ins;
    int jt, jf;
} gen_ins;

typedef struct gen {
    gen_ins ins[MAX_GEN_INSNS];
    unsigned n;
    int pos[MAX_LABELS]; /* -1 until placed */
    int nlabels;
    bool overflow;
} gen;

static int new_label(gen *g)
{
    if (g->nlabels >= MAX_LABELS) {
        g->overflow = true;
        return L_KILL;
    }
    g->pos[g->nlabels] = -1;
    return g->nlabels++;
}

static void place(gen *g, int label)
{
    g->pos[label] = (int)g->n;
}

static void put(gen *g, uint16_t code, uint32_t k, int jt, int jf)
{
    if (g->n >= MAX_GEN_INSNS) {
        g->overflow = true;
        return;
    }
    g->ins[g->n++] = (gen_ins){.ins = {.code = code, .k = k}, .jt = jt, .jf = jf};
}

static void ld(gen *g, uint32_t off)
{
    put(g, BPF_LD | BPF_W | BPF_ABS, off, -1, -1);
}

/* Segments [start, next start) of syscall numbers with one target each. */
typedef struct seg {
    uint32_t start;
    int label;
} seg;

/* A balanced search over segments [lo, hi); returns the label where the
 * search starts (a node placed here, or the one segment's target). */
static int emit_tree(gen *g, const seg *s, size_t lo, size_t hi)
{
    if (hi - lo == 1)
        return s[lo].label;
    size_t mid = lo + (hi - lo) / 2;
    int me = new_label(g);
    place(g, me);
    unsigned at = g->n;
    put(g, BPF_JMP | BPF_JGE | BPF_K, s[mid].start, -1, -1);
    int left = emit_tree(g, s, lo, mid);
    int right = emit_tree(g, s, mid, hi);
    if (at < g->n) {
        g->ins[at].jf = left;
        g->ins[at].jt = right;
    }
    return me;
}

/* "64-bit argument i equals v": the high word first. */
static void arg_eq64(gen *g, unsigned i, uint32_t v, int yes, int no)
{
    ld(g, SD_ARG_HI(i));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, 0, -1, no);
    ld(g, SD_ARG_LO(i));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, v, yes, no);
}

int fb_seccomp_build_single(bool allow_inet, struct sock_filter **prog, unsigned short *len, fb_err *err)
{
    gen *g = calloc(1, sizeof *g);
    int *target = calloc(RANGE_NR_LIMIT, sizeof *target);
    seg *segs = calloc(RANGE_NR_LIMIT + 1, sizeof *segs);
    if (!g || !target || !segs) {
        free(g);
        free(target);
        free(segs);
        return fb_fail(err, "out of memory");
    }
    g->nlabels = L_FIRST_FREE;

    /* Each number's target: allowed, refused, or a block of argument
     * checks (labels placed after the search). */
    for (unsigned nr = 0; nr < RANGE_NR_LIMIT; nr++)
        target[nr] = L_EPERM;
    int rc = 0;
    for (const char *const *name = allowed_syscalls; *name; name++) {
        int nr = seccomp_syscall_resolve_name(*name);
        if (nr == __NR_SCMP_ERROR)
            continue;
        if (nr < 0 || (unsigned)nr >= RANGE_NR_LIMIT) {
            rc = fb_fail(err, "seccomp: %s has the number %d, outside the search", *name, nr);
            break;
        }
        target[nr] = L_ALLOW;
    }
    int b_ioctl = new_label(g), b_setrlimit = new_label(g), b_prlimit = new_label(g),
        b_clone = new_label(g), b_socket = new_label(g), b_socketpair = new_label(g),
        b_personality = new_label(g), b_high = new_label(g);
    target[__NR_ioctl] = b_ioctl;
    target[__NR_setrlimit] = b_setrlimit;
    target[__NR_prlimit64] = b_prlimit;
    target[__NR_clone] = b_clone;
    target[__NR_clone3] = L_ENOSYS;
    target[__NR_socket] = b_socket;
    target[__NR_socketpair] = b_socketpair;
    target[__NR_personality] = b_personality;

    size_t nsegs = 0;
    for (unsigned nr = 0; nr < RANGE_NR_LIMIT; nr++)
        if (nsegs == 0 || segs[nsegs - 1].label != target[nr])
            segs[nsegs++] = (seg){.start = nr, .label = target[nr]};
    if (segs[nsegs - 1].label != L_EPERM)
        segs[nsegs++] = (seg){.start = RANGE_NR_LIMIT, .label = L_EPERM};

    /* A foreign architecture is killed, and so is the x32 ABI (numbers
     * with bit 30), except -1 (a tracer's skipped call): refused. */
    ld(g, SD_ARCH);
    put(g, BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, -1, L_KILL);
    ld(g, SD_NR);
    unsigned x32_check = g->n;
    put(g, BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, b_high, -1);
    int root = emit_tree(g, segs, 0, nsegs);
    if (x32_check < g->n)
        g->ins[x32_check].jf = root;

    place(g, b_high);
    put(g, BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, L_EPERM, L_KILL);
    /* ioctl: not TIOCSTI nor TIOCLINUX; the kernel reads the request as
     * 32 bits, so only those are compared. */
    place(g, b_ioctl);
    ld(g, SD_ARG_LO(1));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, L_EPERM, -1);
    put(g, BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, L_EPERM, L_ALLOW);
    /* setrlimit: not RLIMIT_CORE (32 bits, as the kernel reads it). */
    place(g, b_setrlimit);
    ld(g, SD_ARG_LO(0));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, RLIMIT_CORE, L_EPERM, L_ALLOW);
    /* prlimit64: RLIMIT_CORE only without a new value (the 64-bit
     * pointer is NULL). */
    place(g, b_prlimit);
    ld(g, SD_ARG_LO(1));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, RLIMIT_CORE, -1, L_ALLOW);
    ld(g, SD_ARG_LO(2));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, 0, -1, L_EPERM);
    ld(g, SD_ARG_HI(2));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, 0, L_ALLOW, L_EPERM);
    /* clone: no namespace flag (all in the low word). */
    const uint32_t ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                              CLONE_NEWNET | CLONE_NEWCGROUP | 0x80 /* NEWTIME */;
    place(g, b_clone);
    ld(g, SD_ARG_LO(0));
    put(g, BPF_JMP | BPF_JSET | BPF_K, ns_flags, L_EPERM, L_ALLOW);
    /* socket: AF_UNIX; with a grant AF_INET/AF_INET6 with SOCK_STREAM. */
    place(g, b_socket);
    if (!allow_inet)
        arg_eq64(g, 0, AF_UNIX, L_ALLOW, L_EPERM);
    else {
        int stream = new_label(g);
        ld(g, SD_ARG_HI(0));
        put(g, BPF_JMP | BPF_JEQ | BPF_K, 0, -1, L_EPERM);
        ld(g, SD_ARG_LO(0));
        put(g, BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, L_ALLOW, -1);
        put(g, BPF_JMP | BPF_JEQ | BPF_K, AF_INET, stream, -1);
        put(g, BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, -1, L_EPERM);
        place(g, stream);
        ld(g, SD_ARG_LO(1));
        put(g, BPF_ALU | BPF_AND | BPF_K, 0xf /* SOCK_TYPE_MASK */, -1, -1);
        put(g, BPF_JMP | BPF_JEQ | BPF_K, SOCK_STREAM, L_ALLOW, L_EPERM);
    }
    place(g, b_socketpair);
    arg_eq64(g, 0, AF_UNIX, L_ALLOW, L_EPERM);
    /* personality: the query (0xffffffff) and the default persona. */
    place(g, b_personality);
    ld(g, SD_ARG_HI(0));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, 0, -1, L_EPERM);
    ld(g, SD_ARG_LO(0));
    put(g, BPF_JMP | BPF_JEQ | BPF_K, 0xffffffffu, L_ALLOW, -1);
    put(g, BPF_JMP | BPF_JEQ | BPF_K, 0, L_ALLOW, L_EPERM);

    place(g, L_ALLOW);
    put(g, BPF_RET | BPF_K, SECCOMP_RET_ALLOW, -1, -1);
    place(g, L_EPERM);
    put(g, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM, -1, -1);
    place(g, L_ENOSYS);
    put(g, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS, -1, -1);
    place(g, L_KILL);
    put(g, BPF_RET | BPF_K, SECCOMP_RET_KILL_THREAD, -1, -1);

    /* Labels to forward offsets; each must fit the 8 bits of jt/jf. */
    struct sock_filter *p = NULL;
    if (rc == 0 && g->overflow)
        rc = fb_fail(err, "seccomp: the range program outgrew its generator");
    if (rc == 0 && !(p = calloc(g->n, sizeof *p)))
        rc = fb_fail(err, "out of memory");
    for (unsigned i = 0; rc == 0 && i < g->n; i++) {
        p[i] = g->ins[i].ins;
        int lab[2] = {g->ins[i].jt, g->ins[i].jf};
        unsigned char off[2] = {0, 0};
        for (int k = 0; k < 2 && BPF_CLASS(p[i].code) == BPF_JMP; k++) {
            if (lab[k] < 0)
                continue;
            long d = (long)g->pos[lab[k]] - (long)i - 1;
            if (g->pos[lab[k]] < 0 || d < 0 || d > 255) {
                rc = fb_fail(err, "seccomp: jump %u -> label %d does not fit", i, lab[k]);
                break;
            }
            off[k] = (unsigned char)d;
        }
        p[i].jt = off[0];
        p[i].jf = off[1];
    }
    if (rc == 0 && g->n > BPF_MAXINSNS)
        rc = fb_fail(err, "seccomp: the range program is too long");
    if (rc == 0) {
        *prog = p;
        *len = (unsigned short)g->n;
    } else
        free(p);
    free(g);
    free(target);
    free(segs);
    return rc < 0 ? -1 : 0;
}
