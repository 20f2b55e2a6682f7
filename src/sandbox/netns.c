/*
 * netns.c - a jail's network and IPC namespaces, made ahead of its spawn
 * (netns.h).
 *
 * Why: a new network namespace is the most expensive single step of a
 * jail's start (about 0.34 ms here: the kernel registers a loopback device
 * and every protocol's per-namespace state and sysctl tables; a new IPC
 * namespace, 0.04 ms, mounts its own mqueue instance).  Made in the jail's
 * clone, both sat on the start's one serial path, after the image check,
 * the uid slot, the cgroup and the root's overlay, while the host's other
 * CPU idled.  Neither depends on any of those, so a thread of the manager
 * makes them at the start of the boot, in parallel with that work, and the
 * spawn's intermediate (still host root) enters them with setns() before
 * it gives root up; the jail's clone then makes the other namespaces.
 * unshare() of these two affects the calling thread only, so the manager's
 * other threads keep the host's.
 *
 * What changes for the jail: the two namespaces are still new, empty and
 * its own (only lo, down unless the sandbox has a network grant; no IPC
 * objects), but they belong to the host's initial user namespace instead
 * of the jail's, so the jail's root (fb-agent) holds no capability over
 * them: it cannot configure interfaces, routes or netfilter, open raw
 * sockets, or bind ports below 1024 there.  Tool processes never held any
 * capability; fb-agent needed one only to bring lo up for a network grant,
 * which this thread now does as host root (the agent's lo_up finds it up).
 * That is less kernel attack surface, not more: the netfilter and traffic
 * control code reachable by a user namespace's root is a large share of
 * the kernel's namespace-reachable bugs.  The kernel memory the two
 * namespaces take at creation is charged to the manager's memory cgroup,
 * not the sandbox's (a fixed amount per sandbox that nothing inside it
 * can grow: a tool process cannot make namespaces).
 */
#define _GNU_SOURCE
#include "sandbox/netns.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(fb_netns *ns, const char *step)
{
    ns->err = errno;
    ns->step = step;
    return -1;
}

static int bring_lo_up(fb_netns *ns)
{
    return fb_loopback_up() < 0 ? fail(ns, "bringing lo up") : 0;
}

static void *make_namespaces(void *arg)
{
    fb_netns *ns = arg;
    if (unshare(CLONE_NEWNET | CLONE_NEWIPC) < 0) {
        fail(ns, "unshare(CLONE_NEWNET|CLONE_NEWIPC)");
        return NULL;
    }
    if (ns->lo_up && bring_lo_up(ns) < 0)
        return NULL;
    /* This thread's own: another thread's would be the host's. */
    int net = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (net < 0) {
        fail(ns, "open /proc/thread-self/ns/net");
        return NULL;
    }
    int ipc = open("/proc/thread-self/ns/ipc", O_RDONLY | O_CLOEXEC);
    if (ipc < 0) {
        fail(ns, "open /proc/thread-self/ns/ipc");
        close(net);
        return NULL;
    }
    ns->net_fd = net;
    ns->ipc_fd = ipc;
    return NULL; /* the thread's end drops its own references */
}

void fb_netns_begin(fb_netns *ns, bool lo_up)
{
    *ns = (fb_netns){.lo_up = lo_up, .net_fd = -1, .ipc_fd = -1};
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return;
    /* Small (it makes a few syscalls), but not below what glibc needs for
     * the process's static TLS, which it takes from the stack too. */
    (void)pthread_attr_setstacksize(&attr, 256 * 1024);
    /* On another CPU than the boot's, which it would otherwise preempt
     * for the third of a millisecond the network namespace takes. */
    cpu_set_t cpus;
    int here = sched_getcpu();
    if (here >= 0 && sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_ISSET(here, &cpus) &&
        CPU_COUNT(&cpus) > 1) {
        CPU_CLR(here, &cpus);
        (void)pthread_attr_setaffinity_np(&attr, sizeof cpus, &cpus);
    }
    /* It takes no signal meant for the process. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&ns->thread, &attr, make_namespaces, ns);
    ns->started = rc == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (!ns->started) {
        ns->err = rc;
        ns->step = "pthread_create";
    }
}

static void join(fb_netns *ns)
{
    if (ns->started)
        pthread_join(ns->thread, NULL);
    ns->started = false;
}

int fb_netns_take(fb_netns *ns, int *net, int *ipc, const char **why, int *why_errno)
{
    join(ns);
    *net = ns->net_fd;
    *ipc = ns->ipc_fd;
    ns->net_fd = ns->ipc_fd = -1;
    if (*net >= 0 && *ipc >= 0)
        return 0;
    *why = ns->step ? ns->step : "not started";
    *why_errno = ns->err;
    return -1;
}

void fb_netns_abandon(fb_netns *ns)
{
    bool had = ns->started;
    join(ns);
    if (!had)
        return; /* never begun (or taken): its fds are not ours */
    if (ns->net_fd >= 0)
        close(ns->net_fd);
    if (ns->ipc_fd >= 0)
        close(ns->ipc_fd);
    ns->net_fd = ns->ipc_fd = -1;
}
