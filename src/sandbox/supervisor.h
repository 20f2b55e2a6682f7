/*
 * supervisor.h - inside the sandbox manager: what sandbox.c, supervisor.c,
 * execlog.c, transfer.c and spawner.c share.  Not part of the public face
 * (sandbox.h); tests include it for fb_sandbox_attach_fd.
 *
 * Locking: sb->mu guards the sandbox's shared state, its send queue and
 * every exec's state and log; sb->cv is broadcast on every change.  The
 * channel's decoder and the console ring are the I/O thread's alone.
 * Nothing blocks while holding sb->mu except on sb->cv.
 */
#ifndef FB_SUPERVISOR_H
#define FB_SUPERVISOR_H

#include <poll.h>

#include "sandbox/backend.h"

/* A request waiting for its one reply ("ok", "error" or "ready"). */
typedef struct fb_request {
    uint64_t id;
    uint64_t deadline_ns;
    bool done;
    fb_errc code;              /* FB_OK: reply holds the frame */
    char msg[512];
    fb_frame reply;
    struct fb_request *next;
} fb_request;

/* ---- supervisor.c ---- */
/* Sets up mu, cv, wake_fd; refs = 1 (the owner). */
int fb_sup_init(fb_sandbox *sb, fb_err *err);
/* Hello/ready on the channel (before the I/O thread), then starts it. */
fb_errc fb_sup_start(fb_sandbox *sb, fb_err *err);
/* Ends the sandbox for good with code and message (first reason wins):
 * fails every request and exec, kills the process.  Needs sb->mu. */
void fb_sup_die_locked(fb_sandbox *sb, fb_errc code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Queues a frame (takes h) and wakes the I/O thread.  Needs sb->mu. */
fb_errc fb_sup_send_locked(fb_sandbox *sb, json_t *h, const void *payload, size_t len, fb_err *err);
/* The same for a frame after which the I/O thread has no new fd to watch
 * and needs to look at the sandbox again by by_ns (a new deadline), not
 * sooner: if the frame could be written at once from this thread and the
 * I/O thread's poll ends by then anyway, it is not woken (a thread switch
 * per exec start saved).  Otherwise as fb_sup_send_locked. */
fb_errc fb_sup_send_by_locked(fb_sandbox *sb, json_t *h, uint64_t by_ns, fb_err *err);
/* Takes a request id; FB_OK, or why no request may be made now. */
fb_errc fb_sup_begin_locked(fb_sandbox *sb, bool need_assigned, uint64_t *id, fb_err *err);
/* Sends h (taken) as request rq->id and waits for its reply or for the
 * sandbox's end; FB_OK with rq->reply (an "ok"/"ready" frame) or a typed
 * error in err.  Locks sb->mu itself. */
fb_errc fb_sup_request(fb_sandbox *sb, fb_request *rq, json_t *h, const void *payload, size_t len,
                       int timeout_ms, fb_err *err);
/* Stops and joins the I/O thread (destroy). */
void fb_sup_stop(fb_sandbox *sb);
void fb_sup_wake(fb_sandbox *sb);
/* Tells sb->cv's waiters that something changed (sb->mu held).  On the
 * I/O thread the broadcast waits until that thread lets mu go: a waiter
 * woken while mu is still held would at once block on mu and need a
 * second wake-up (two thread switches, not one, between an exec's end
 * read and its waiter running). */
void fb_sup_notify_locked(fb_sandbox *sb);
/* Waits on sb->cv (sb->mu held) until deadline_ns (0: no deadline);
 * returns false once the deadline has passed. */
bool fb_sup_wait_locked(fb_sandbox *sb, uint64_t deadline_ns);
/* Drops a reference; frees the sandbox's memory at zero.  Needs sb->mu,
 * which it releases. */
void fb_sup_unref_unlock(fb_sandbox *sb);
/* Appends the console's last line to err (vm), for failures. */
void fb_sup_console_hint(fb_sandbox *sb, fb_err *err);
void fb_sup_drain_console(fb_sandbox *sb);

/* Tests: a sandbox around an already connected agent channel (one end of
 * a socketpair), with no process, cgroup or uid slot: handshake, I/O
 * thread, execs and files work as for a real one.  It is assigned. */
int fb_sandbox_attach_fd(int fd, const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);

/* A sandbox that runs on a node (node/client.c builds it with
 * fb_sandbox_attach_fd around a translator): its id and isolation are the
 * node's, and its file transfers call these instead of agent requests
 * (the node's API moves whole files).  ctx must outlive the sandbox's
 * last transfer. */
struct fb_sandbox_remote {
    fb_errc (*put)(void *ctx, fb_sandbox *sb, const char *remote, int fd, unsigned mode, fb_err *err);
    fb_errc (*get)(void *ctx, fb_sandbox *sb, const char *remote, int fd, uint64_t max_bytes, fb_err *err);
};
void fb_sandbox_set_remote(fb_sandbox *sb, const char *id, const char *isolation,
                           const struct fb_sandbox_remote *ops, void *ctx);

/* ---- execlog.c (called by the I/O thread with sb->mu held) ---- */
struct fb_exec *fb_xlog_find_locked(fb_sandbox *sb, uint64_t id);
/* One frame for a running exec; may end the exec or the sandbox. */
void fb_xlog_frame_locked(fb_sandbox *sb, struct fb_exec *x, fb_msg_type t, const fb_frame *f);
/* Ends every running exec with code/msg (the sandbox died). */
void fb_xlog_fail_all_locked(fb_sandbox *sb, fb_errc code, const char *msg);
/* Deadlines and stdin: pollfds of execs' stdin, ms until the next deadline. */
int fb_xlog_pollfds_locked(fb_sandbox *sb, struct pollfd *fds, int max, struct fb_exec **owner);
void fb_xlog_stdin_ready_locked(fb_sandbox *sb, struct fb_exec *x);
/* Checks exec deadlines; returns ms until the next one (-1 none). */
int fb_xlog_tick_locked(fb_sandbox *sb, uint64_t now);

/* ---- sandbox.c ---- */
/* Boots on the calling thread (the spawner's). */
fb_errc fb_sandbox_boot_here(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);

#endif
