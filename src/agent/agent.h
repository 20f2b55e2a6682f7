/*
 * agent.h - state shared by the agent's modules.
 *
 * fb-agent is a single-threaded poll loop: the channel to the host, a
 * signalfd for SIGCHLD, and the pipes of running commands.  exec.c owns the
 * commands, files.c answers file requests synchronously, main.c owns the
 * loop and the dispatch.  Nothing in the agent trusts what the host sends:
 * every field is decoded by proto/msg.h, against the protocol's limits.
 */
#ifndef FB_AGENT_H
#define FB_AGENT_H

#include <stdbool.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>

#include "agent/harden.h"
#include "agent/pid1.h"
#include "proto/msg.h"
#include "proto/relay.h"
#include "proto/proto.h"

/* The protocol's limits (FB_MAX_EXECS, FB_MAX_ARGV, ...) are proto/msg.h's. */
#define FB_AGENT_VERSION "0.1.0"
/* Above this much queued toward the host, stop reading command output. */
#define FB_BACKPRESSURE (1024u * 1024u)

typedef struct fb_exec fb_exec;

typedef struct fb_agent {
    fb_agent_mode mode;
    fb_chan chan;
    int sigfd;
    bool ready;            /* hello received and scratch mounted */
    bool shutdown;         /* shutdown requested */
    fb_tool_limits limits; /* from hello */
    fb_seccomp_progs seccomp;
    uint64_t child_reset;  /* bit N-1: signal N not at SIG_DFL in the agent (fb_exec_prepare) */
    uint64_t max_output;   /* default per-exec output cap, from hello */
    fb_exec *execs[FB_MAX_EXECS];
    int net_fd;            /* the egress bridge's channel to the host (jail), or -1 */
    int net_listen;        /* 127.0.0.1:3128 with a network grant, else -1 */
    bool relay_on;         /* vm with a grant: connections travel as net_* frames */
    uint64_t relay_next;   /* the last stream id given */
    fb_relay relay;
} fb_agent;

/* Queues a frame to the host and drops h.  A full queue means the host has
 * stopped reading while we must still report: the sandbox is ended with a
 * fatal error rather than silently losing an exit record. */
void fb_agent_send(fb_agent *a, json_t *h, const void *payload, size_t len);
/* Ends the sandbox after telling the host why (main.c). */
void fb_agent_die(fb_agent *a, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

/* Replies to request id with {"t":"error","code":code,"message":msg}. */
int fb_agent_reply_error(fb_agent *a, uint64_t id, fb_errc code, const char *msg);
/* Replies {"t":"ok","id":id} plus the fields of extra (stolen; may be NULL). */
int fb_agent_reply_ok(fb_agent *a, uint64_t id, json_t *extra, const void *payload, size_t len);

/* net.c: the egress bridge (only with a network grant).  Tool processes
 * reach the proxy at http://127.0.0.1:FB_NET_PROXY_PORT. */
#define FB_NET_PROXY_PORT 3128
#define FB_NET_PROXY_URL "http://127.0.0.1:3128"
/* Brings lo up and listens; -1 with err. */
int fb_net_start(fb_agent *a, fb_err *err);
/* Hands waiting connections to the host (called when net_listen polls in). */
void fb_net_accept(fb_agent *a);
/* A net_* frame from the host (vm). */
void fb_net_frame(fb_agent *a, const fb_frame *f);

/* exec.c */
/* Notes, once at hello, which signals a child must set back to SIG_DFL. */
void fb_exec_prepare(fb_agent *a);
/* len bytes of zeroed memory the agent writes often, in pages the exec
 * child's fork leaves out (MADV_DONTFORK: a forked page the agent writes is
 * a copy-on-write fault), or NULL.  If the kernel refuses the advice the
 * pages are still returned: they only cost the faults again. */
void *fb_agent_map_unforked(size_t len);
int fb_exec_start(fb_agent *a, const fb_frame *f);
int fb_exec_stdin(fb_agent *a, const fb_frame *f);
int fb_exec_signal(fb_agent *a, const fb_frame *f);
/* Adds the pollfds of running commands; returns how many were added. */
int fb_exec_pollfds(fb_agent *a, struct pollfd *fds, int max, fb_exec **owner, int *which);
void fb_exec_handle_io(fb_agent *a, fb_exec *e, int which, short revents);
void fb_exec_reap(fb_agent *a);
/* Deadlines: kills commands that overran; returns ms until the next one. */
int fb_exec_tick(fb_agent *a);
void fb_exec_kill_all(fb_agent *a);
/* Work kept off a command's answer (the OOM count's read), once the
 * channel has nothing queued: the serve loop calls it after flushing. */
void fb_exec_idle(fb_agent *a);
int fb_exec_count(const fb_agent *a);

/* files.c */
int fb_files_handle(fb_agent *a, const fb_frame *f);

#endif
