/*
 * netns.h - a jail's network and IPC namespaces, made ahead of its spawn
 * on a thread of their own (netns.c says why).
 *
 *   fb_netns_begin    at the start of a jail's boot: starts the thread
 *   fb_netns_take     in the spawn: waits for it, hands over the two
 *                     namespace fds (the caller closes them)
 *   fb_netns_abandon  on any unwinding: waits for it, closes what it made
 *
 * A failure of the thread is no failure of the boot: fb_netns_take then
 * returns -1 and the jail makes its namespaces in its clone as before.
 */
#ifndef FB_NETNS_H
#define FB_NETNS_H

#include <pthread.h>
#include <stdbool.h>

typedef struct fb_netns {
    pthread_t thread;
    bool started;
    bool lo_up;   /* a network grant: bring the loopback up (fb-agent listens on it) */
    int net_fd;   /* the thread's results, read after the join */
    int ipc_fd;
    int err;      /* errno of the step that failed, or 0 */
    const char *step;
} fb_netns;

/* Starts making a fresh network (with its loopback up if lo_up) and IPC
 * namespace.  Never fails: without a thread the spawn makes them itself. */
void fb_netns_begin(fb_netns *ns, bool lo_up);
/* Waits for the thread; on success sets *net and *ipc (close-on-exec
 * fds the caller owns) and returns 0; else -1 with why (a static string
 * and an errno) for the trace. */
int fb_netns_take(fb_netns *ns, int *net, int *ipc, const char **why, int *why_errno);
/* Waits for the thread if it still runs and closes whatever it made. */
void fb_netns_abandon(fb_netns *ns);

#endif
