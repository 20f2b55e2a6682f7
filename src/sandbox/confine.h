/*
 * confine.h - the steps both backends use to put a process in its cell.
 *
 * fb_confine_spawn clones a child into new namespaces, places it in the
 * sandbox's cgroup (and, for a user namespace, writes its uid/gid maps)
 * before letting it run, and reports any failure of the child's setup as a
 * message rather than an exit status: the child writes to a close-on-exec
 * pipe, so reading EOF there means the final execve succeeded.
 *
 * With a user namespace the namespace must belong to the sandbox's slot
 * uid, not to host root: the kernel charges a user namespace's per-user
 * counters (inotify instances, queued signals, POSIX message queue bytes,
 * processes) to its owner at every level above it, so a jail owned by root
 * could use up host root's share.  A namespace is owned by the euid of the
 * process that creates it, and the manager (root, possibly threaded) cannot
 * change its own uid.  So the spawn goes through a short-lived intermediate
 * process: cloned with no namespaces, it runs `prepare` as host root in a
 * private mount namespace (mounts only host root may make: loop devices,
 * device nodes), drops to uid_base, unshares the user (and time)
 * namespace, waits for the manager to write the id maps, and clones the
 * real child with CLONE_PARENT into the remaining namespaces, so the child
 * is the manager's own child (waitpid, pidfd) and the intermediate exits.
 * The child borrows the intermediate's memory until its execve
 * (CLONE_VM | CLONE_VFORK, on a stack of its own): nothing to copy.
 * Namespaces made ahead (join_net_ipc) are entered by the intermediate
 * while it is host root, before the user namespace.
 *
 * The fb_child_* helpers run only in that child, before execve.  They use
 * the bubblewrap style: one syscall each, checked, and a die helper as the
 * only way out on failure: fb_die_with_error() (common/util.h, which adds
 * the errno it saved) after a failed call, fb_child_die() for a check that
 * has no errno.  The parent may be multi-threaded (the
 * gateway) and the child is a raw clone of it: the child must not take a
 * lock another thread might have held (no malloc, no stdio), and changes
 * ids with raw syscalls, never glibc's thread-broadcasting wrappers.
 */
#ifndef FB_CONFINE_H
#define FB_CONFINE_H

#include <sched.h>
#include <stdbool.h>
#include <sys/types.h>

#include "common/util.h"
#include "sandbox/cgroup.h"

typedef struct fb_spawn {
    int clone_flags;        /* CLONE_NEW*, never CLONE_NEWUSER (see userns) */
    const fb_cgroup *cg;
    bool userns;            /* a user namespace owned by uid_base that
                               maps [0, FB_UID_RANGE) to uid_base */
    uid_t uid_base;
    bool timens;            /* userns only: clocks that start near zero */
    const cpu_set_t *cpus;  /* userns only, may be NULL: the CPUs it runs on */
    /* userns only: network and IPC namespaces made ahead (netns.h) that
     * the intermediate enters as host root, instead of clone_flags making
     * new ones (which must then hold neither CLONE_NEWNET nor
     * CLONE_NEWIPC); the child inherits them. */
    bool join_net_ipc;
    int net_fd, ipc_fd;
    /* userns only, may be NULL: runs in the intermediate as host root, in
     * a private mount namespace the child's is then copied from. */
    void (*prepare)(void *arg, int report_fd);
    /* Runs in the child once the parent is done; must exec or die. */
    void (*child)(void *arg, int report_fd);
    void *arg;
} fb_spawn;

/* Returns the child's pid, or -1 with err set (child already reaped). */
pid_t fb_confine_spawn(const fb_spawn *sp, fb_err *err);

/* Reports fmt (no errno: see fb_die_with_error) and exits 125. */
void fb_child_die(int report_fd, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
/* Makes every mount private to this namespace. */
void fb_child_private_mounts(int report_fd);
/* Bind-mounts src on dst and remounts it read-only, nosuid, nodev, keeping
 * whatever flags the source mount has locked. */
void fb_child_bind_ro(int report_fd, const char *src, const char *dst, bool noexec);
/* pivot_root into newroot and detach the old root. */
void fb_child_pivot(int report_fd, const char *newroot);
/* Drops to uid/gid with no groups, no capabilities in any set,
 * no_new_privs, and the parent-death signal re-armed. */
void fb_child_drop_privileges(int report_fd, uid_t uid, gid_t gid);
/* Points fds 0..2 at stdio_fd (if >= 0), moves keep[i] to fd 3+i, and
 * marks every other fd close-on-exec. */
void fb_child_setup_fds(int report_fd, int stdio_fd, const int *keep, int nkeep);

#endif
