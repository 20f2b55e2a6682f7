/*
 * supervisor.c - one I/O thread per sandbox: the only reader of the agent
 * channel, and its writer for whatever a caller could not write at once
 * (supervisor.h).
 *
 * Callers never read the channel.  They queue frames under sb->mu and
 * wake the thread (an eventfd); a frame queued while nothing else was is
 * written at once by its caller instead, still under sb->mu, and an exec's
 * start then wakes the thread only if it has something new to watch
 * (fb_sup_send_by_locked).  The thread polls the channel, the wake fd,
 * the VM console and the stdin fds of running execs, writes what is queued
 * without blocking, decodes what arrives and routes each frame by its id:
 * to the request waiting for that reply, or into that exec's event log.
 * It never waits for a consumer - a log append is a memcpy under the lock -
 * so a slow or vanished reader cannot stall the sandbox, other execs, kill
 * or destroy.  Every deadline (request replies, execs that outlive their
 * timeout) is checked here, in one place.
 *
 * The agent is a stranger: a frame that breaks the protocol (bad framing,
 * an unknown type, an id never issued, a reply of the wrong kind, output
 * beyond the cap) ends the sandbox with FB_E_PROTOCOL; frames for requests
 * or execs that are already over are dropped.  The end of a sandbox, for
 * whatever reason, is recorded once (the first reason wins) and every
 * waiter is released with it.
 */
#define _GNU_SOURCE
#include "sandbox/supervisor.h"

#include "proto/relay.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HELLO_TIMEOUT_VM_MS 120000
#define HELLO_TIMEOUT_JAIL_MS 15000
/* Stop reading exec stdin while this much is queued for the agent. */
#define SEND_BACKPRESSURE (1024u * 1024u)
/* The I/O thread's longest sleep (an idle sandbox's thread wakes this often). */
#define IO_POLL_MAX_MS 10000

/* The relay's frames go out like any other (the I/O thread holds mu). */
static int relay_send(void *ctx, json_t *h, const void *payload, size_t len)
{
    fb_err err = {{0}};
    return fb_sup_send_locked(ctx, h, payload, len, &err) == FB_OK ? 0 : -1;
}

/* VM egress bridge: a net_open from the agent becomes a socketpair whose
 * one end the relay carries and whose other end goes to the egress proxy
 * as this sandbox's (known by its channel); the other net_* frames move
 * the streams' bytes.  Nothing the agent sends can end the sandbox here. */
static void net_frame_locked(fb_sandbox *sb, fb_msg_type t, const fb_frame *f)
{
    if (!sb->relay)
        return;
    if (t != FB_MSG_NET_OPEN) {
        fb_relay_frame(sb->relay, f);
        return;
    }
    fb_msg_net m;
    fb_err err = {{0}};
    int sv[2];
    if (fb_msg_decode_net(f, &m, &err) < 0)
        return;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fb_msg_net c = {.type = FB_MSG_NET_CLOSE};
        (void)relay_send(sb, fb_msg_encode_net(f->id, &c, &err), NULL, 0);
        return;
    }
    if (fb_relay_add(sb->relay, f->id, sv[0]) < 0) {
        close(sv[0]);
        close(sv[1]);
        fb_msg_net c = {.type = FB_MSG_NET_CLOSE};
        (void)relay_send(sb, fb_msg_encode_net(f->id, &c, &err), NULL, 0);
        return;
    }
    sb->cfg.net_adopt(sb->cfg.net_ctx, sb->id, sv[1]);
}

int fb_sup_init(fb_sandbox *sb, fb_err *err)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&sb->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0 || pthread_mutex_init(&sb->mu, NULL) != 0)
        return fb_fail(err, "cannot set up the sandbox's locks");
    sb->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sb->wake_fd < 0)
        return fb_fail_errno(err, "eventfd");
    sb->refs = 1;
    sb->next_id = 1;
    if (sb->cfg.net_adopt && sb->cfg.backend == FB_BACKEND_VM) {
        if (!(sb->relay = malloc(sizeof *sb->relay)))
            return fb_fail(err, "out of memory");
        fb_relay_init(sb->relay, relay_send, sb);
    }
    return 0;
}

void fb_sup_wake(fb_sandbox *sb)
{
    uint64_t one = 1;
    if (write(sb->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        fprintf(stderr, "forgebox: warning: cannot wake sandbox %s: %s\n", sb->id, strerror(errno));
}

/* The sandbox whose I/O thread this is (NULL on any other thread). */
static __thread fb_sandbox *io_of;

void fb_sup_notify_locked(fb_sandbox *sb)
{
    if (io_of == sb)
        sb->cv_owed = true;
    else
        pthread_cond_broadcast(&sb->cv);
}

/* The I/O thread lets mu go, then wakes whom it owes a wake-up: after the
 * unlock, so that a woken waiter finds mu free.  (A broadcast after the
 * unlock is safe: the change was made under mu, so a waiter either was
 * already waiting and is woken, or checks after the unlock and sees it.) */
static void io_unlock(fb_sandbox *sb)
{
    bool owed = sb->cv_owed;
    sb->cv_owed = false;
    pthread_mutex_unlock(&sb->mu);
    if (owed)
        pthread_cond_broadcast(&sb->cv);
}

bool fb_sup_wait_locked(fb_sandbox *sb, uint64_t deadline_ns)
{
    if (deadline_ns == 0) {
        pthread_cond_wait(&sb->cv, &sb->mu);
        return true;
    }
    if (fb_now_ns() >= deadline_ns)
        return false;
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000ull),
                          .tv_nsec = (long)(deadline_ns % 1000000000ull)};
    pthread_cond_timedwait(&sb->cv, &sb->mu, &ts);
    return true;
}

/* ---- console ring (vm) ------------------------------------------------------- */

void fb_sup_drain_console(fb_sandbox *sb)
{
    if (sb->console_fd < 0)
        return;
    char buf[4096];
    for (;;) {
        ssize_t n = read(sb->console_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0 || errno != EAGAIN) {
                close(sb->console_fd);
                sb->console_fd = -1;
            }
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (sb->console_len == sizeof sb->console) {
                memmove(sb->console, sb->console + 1024, sizeof sb->console - 1024);
                sb->console_len -= 1024;
            }
            sb->console[sb->console_len++] = buf[i];
        }
    }
}

void fb_sup_console_hint(fb_sandbox *sb, fb_err *err)
{
    fb_sup_drain_console(sb);
    if (!err || sb->console_len == 0)
        return;
    char tail[300];
    size_t n = sb->console_len < sizeof tail - 1 ? sb->console_len : sizeof tail - 1;
    memcpy(tail, sb->console + sb->console_len - n, n);
    tail[n] = '\0';
    for (char *c = tail; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
    size_t len = strlen(err->msg);
    snprintf(err->msg + len, sizeof err->msg - len, " (guest console: ...%s)", tail);
}

/* ---- the end of a sandbox ----------------------------------------------------- */

void fb_sup_die_locked(fb_sandbox *sb, fb_errc code, const char *fmt, ...)
{
    if (sb->dead)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sb->dead_msg, sizeof sb->dead_msg, fmt, ap);
    va_end(ap);
    sb->dead = code;
    for (fb_request *rq = sb->reqs; rq; rq = rq->next)
        if (!rq->done) {
            rq->done = true;
            rq->code = code;
            snprintf(rq->msg, sizeof rq->msg, "%s", sb->dead_msg);
        }
    fb_xlog_fail_all_locked(sb, code, sb->dead_msg);
    /* The process goes at once, so that nothing of it runs on; destroy
     * (sb->stopping) gives a clean shutdown its moment and kills itself. */
    if (!sb->stopping && sb->pidfd >= 0)
        (void)syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
    pthread_cond_broadcast(&sb->cv);
    fb_sup_wake(sb);
}

/* ---- sending and requests ------------------------------------------------------- */

/* A caller's frame, queued while nothing else was: written at once from
 * the caller's thread (under mu, which every write of the channel holds,
 * so frames stay in order), without waking the I/O thread to do it: that
 * wake-up was a thread switch between a request and its frame leaving.
 * true: all of it went.  Anything else (the socket is full, the channel
 * is not a socket, or it broke) stays queued for the I/O thread, which
 * waits for room or ends the sandbox with the right error, as before.
 * MSG_NOSIGNAL: a caller's thread may not ignore SIGPIPE. */
static bool send_now(fb_sandbox *sb)
{
    fb_chan *c = &sb->chan;
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return true;
}

static fb_errc send_locked(fb_sandbox *sb, json_t *h, const void *payload, size_t len, uint64_t by_ns,
                           fb_err *err)
{
    if (!h)
        return FB_E_NOMEM;
    if (sb->dead) {
        json_decref(h);
        fb_fail(err, "sandbox %s is no longer usable: %s", sb->id, sb->dead_msg);
        return sb->dead;
    }
    bool idle = fb_chan_queued(&sb->chan) == 0;
    int rc = fb_chan_send(&sb->chan, h, payload, len, err);
    json_decref(h);
    if (rc < 0)
        return FB_E_BUSY;
    /* Written, and the I/O thread's poll wakes by by_ns anyway: it has
     * nothing to do for this frame. */
    bool sent = idle && io_of != sb && send_now(sb);
    if (!sent || by_ns == 0 || by_ns < sb->io_wake_ns)
        fb_sup_wake(sb);
    return FB_OK;
}

fb_errc fb_sup_send_locked(fb_sandbox *sb, json_t *h, const void *payload, size_t len, fb_err *err)
{
    return send_locked(sb, h, payload, len, 0, err);
}

fb_errc fb_sup_send_by_locked(fb_sandbox *sb, json_t *h, uint64_t by_ns, fb_err *err)
{
    return send_locked(sb, h, NULL, 0, by_ns, err);
}

fb_errc fb_sup_begin_locked(fb_sandbox *sb, bool need_assigned, uint64_t *id, fb_err *err)
{
    if (sb->dead) {
        fb_fail(err, "sandbox %s is no longer usable: %s", sb->id, sb->dead_msg);
        return sb->dead;
    }
    if (need_assigned && !sb->assigned) {
        fb_fail(err, "sandbox %s is not assigned yet", sb->id);
        return FB_E_STATE;
    }
    *id = sb->next_id++;
    return FB_OK;
}

fb_errc fb_sup_request(fb_sandbox *sb, fb_request *rq, json_t *h, const void *payload, size_t len,
                       int timeout_ms, fb_err *err)
{
    pthread_mutex_lock(&sb->mu);
    fb_errc code = fb_sup_send_locked(sb, h, payload, len, err);
    if (code != FB_OK) {
        pthread_mutex_unlock(&sb->mu);
        return code;
    }
    rq->done = false;
    rq->deadline_ns = fb_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    rq->next = sb->reqs;
    sb->reqs = rq;
    /* A waiter holds a reference: a destroy that releases it may finish
     * before this thread runs again. */
    sb->refs++;
    while (!rq->done)
        fb_sup_wait_locked(sb, 0);
    for (fb_request **p = &sb->reqs; *p; p = &(*p)->next)
        if (*p == rq) {
            *p = rq->next;
            break;
        }
    fb_sup_unref_unlock(sb);
    if (rq->code != FB_OK)
        fb_fail(err, "%s", rq->msg);
    return rq->code;
}

/* ---- the I/O thread ------------------------------------------------------------- */

static bool answer_request_locked(fb_sandbox *sb, fb_msg_type t, fb_frame *f)
{
    fb_request *rq = sb->reqs;
    while (rq && (rq->id != f->id || rq->done))
        rq = rq->next;
    if (!rq)
        return false;
    fb_err err = {{0}};
    if (t == FB_MSG_OK || t == FB_MSG_READY) {
        rq->reply = *f;
        memset(f, 0, sizeof *f); /* the request owns it now */
        rq->code = FB_OK;
    } else if (t == FB_MSG_ERROR) {
        fb_msg_error m;
        if (fb_msg_decode_error(f, &m, &err) < 0) {
            fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a malformed error: %s", sb->id, err.msg);
            return true;
        }
        rq->code = m.code;
        snprintf(rq->msg, sizeof rq->msg, "%s (%s)", m.message, fb_errc_name(m.code));
    } else {
        fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s answered request %llu with a %s frame",
                          sb->id, (unsigned long long)f->id, fb_msg_type_name(t));
        return true;
    }
    rq->done = true;
    fb_sup_notify_locked(sb);
    return true;
}

static void dispatch_locked(fb_sandbox *sb, fb_frame *f)
{
    fb_msg_type t = fb_msg_type_of(f);
    fb_err err = {{0}};
    if (t == FB_MSG_FATAL) {
        const char *m;
        if (fb_msg_decode_fatal(f, &m, &err) < 0)
            m = "(malformed fatal frame)";
        fb_sup_die_locked(sb, FB_E_AGENT_FATAL, "sandbox agent failed: %s", m);
        return;
    }
    if (t >= FB_MSG_NET_OPEN && t <= FB_MSG_NET_CLOSE) {
        net_frame_locked(sb, t, f);
        return;
    }
    if (t < FB_MSG_READY) {
        fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a frame of type \"%.32s\", which it may not",
                          sb->id, f->type);
        return;
    }
    if (f->id == 0 || f->id >= sb->next_id) {
        fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a %s frame for request %llu, never made",
                          sb->id, fb_msg_type_name(t), (unsigned long long)f->id);
        return;
    }
    if (answer_request_locked(sb, t, f))
        return;
    struct fb_exec *x = fb_xlog_find_locked(sb, f->id);
    if (x)
        fb_xlog_frame_locked(sb, x, t, f);
    /* Else: a request that timed out or an exec that is over (cancelled,
     * failed on the host): its late frames are dropped. */
}

static void read_frames_locked(fb_sandbox *sb)
{
    fb_err err = {{0}};
    long r = fb_chan_read(&sb->chan, &err);
    if (r == -1) {
        if (sb->chan.dec.failed)
            fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s broke the protocol: %s", sb->id, err.msg);
        else
            fb_sup_die_locked(sb, FB_E_SANDBOX_ENDED, "sandbox %s: %s", sb->id, err.msg);
        return;
    }
    for (;;) {
        fb_frame f;
        int got = fb_decoder_next(&sb->chan.dec, &f, &err);
        if (got < 0) {
            fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s broke the protocol: %s", sb->id, err.msg);
            return;
        }
        if (got == 0)
            break;
        dispatch_locked(sb, &f);
        fb_frame_clear(&f);
        if (sb->dead)
            return;
    }
    if (sb->chan.eof) {
        fb_err why;
        fb_fail(&why, "sandbox %s ended unexpectedly (agent channel closed)", sb->id);
        fb_sup_console_hint(sb, &why);
        fb_sup_die_locked(sb, FB_E_SANDBOX_ENDED, "%s", why.msg);
    }
}

/* Request deadlines: a reply that does not come means a wedged agent. */
static int check_requests_locked(fb_sandbox *sb, uint64_t now, int timeout)
{
    for (fb_request *rq = sb->reqs; rq; rq = rq->next) {
        if (rq->done)
            continue;
        if (now >= rq->deadline_ns) {
            fb_sup_die_locked(sb, FB_E_UNRESPONSIVE, "sandbox %s did not answer request %llu in time",
                              sb->id, (unsigned long long)rq->id);
            return 0;
        }
        int ms = (int)((rq->deadline_ns - now) / 1000000ull) + 1;
        if (timeout < 0 || ms < timeout)
            timeout = ms;
    }
    return timeout;
}

/* The egress bridge: each message on net_fd carries one accepted TCP
 * connection's fd from fb-agent.  Only a connected stream socket is handed
 * on (the agent is inside the sandbox: it could send anything); the sandbox is
 * this one because the fd came on this sandbox's channel.  At most
 * NET_BATCH per wakeup, so a flood cannot starve the agent channel. */
#define NET_BATCH 16
static void take_net_conns(fb_sandbox *sb)
{
    for (int i = 0; i < NET_BATCH; i++) {
        char byte;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int) * 4)];
        } u;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                            .msg_controllen = sizeof u.buf};
        ssize_t r = recvmsg(sb->net_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (r <= 0) {
            if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* The agent closed its end: no more connections. */
                close(sb->net_fd);
                sb->net_fd = -1;
            }
            return;
        }
        int fd = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *fds = (int *)(void *)CMSG_DATA(c);
            for (size_t k = 0; k < nfd; k++) {
                if (fd < 0)
                    fd = fds[k];
                else
                    close(fds[k]); /* one fd per message */
            }
        }
        if (fd < 0)
            continue;
        int type = 0, listening = 1;
        socklen_t tl = sizeof type, ll = sizeof listening;
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode) ||
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM ||
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) < 0 || listening ||
            !sb->cfg.net_adopt) {
            close(fd);
            continue;
        }
        /* The proxy's hand-over may wait for its thread: not under mu. */
        io_unlock(sb);
        sb->cfg.net_adopt(sb->cfg.net_ctx, sb->id, fd);
        pthread_mutex_lock(&sb->mu);
        if (sb->stopping || sb->dead || sb->net_fd < 0)
            return;
    }
}

static void *io_main(void *arg)
{
    fb_sandbox *sb = arg;
    enum { MAXFDS = 4 + FB_MAX_EXECS + FB_NET_MAX_STREAMS };
    struct pollfd fds[MAXFDS];
    struct fb_exec *owner[MAXFDS];
    io_of = sb;
    pthread_mutex_lock(&sb->mu);
    while (!sb->stopping && !sb->dead) {
        uint64_t now = fb_now_ns();
        int timeout = check_requests_locked(sb, now, fb_xlog_tick_locked(sb, now));
        if (sb->dead)
            break;
        /* Never asleep for longer than IO_POLL_MAX_MS: a new exec's deadline
         * (its timeout plus EXEC_SLACK_MS, 15 s) is then always later
         * than the end of this poll, and its start needs no wake-up. */
        if (timeout < 0 || timeout > IO_POLL_MAX_MS)
            timeout = IO_POLL_MAX_MS;
        int n = 0;
        fds[n++] = (struct pollfd){.fd = sb->chan_fd,
                                   .events = (short)(POLLIN | (fb_chan_queued(&sb->chan) ? POLLOUT : 0))};
        fds[n++] = (struct pollfd){.fd = sb->wake_fd, .events = POLLIN};
        int con = -1;
        if (sb->console_fd >= 0) {
            con = n;
            fds[n++] = (struct pollfd){.fd = sb->console_fd, .events = POLLIN};
        }
        int net = -1;
        if (sb->net_fd >= 0) {
            net = n;
            fds[n++] = (struct pollfd){.fd = sb->net_fd, .events = POLLIN};
        }
        int first_stream = n, nstreams = 0;
        if (sb->relay) {
            nstreams = (int)fb_relay_pollfds(sb->relay, fds + n, (size_t)(MAXFDS - n),
                                             fb_chan_queued(&sb->chan) < SEND_BACKPRESSURE);
            n += nstreams;
        }
        int first_exec = n;
        if (fb_chan_queued(&sb->chan) < SEND_BACKPRESSURE)
            n += fb_xlog_pollfds_locked(sb, fds + n, MAXFDS - n, owner + n);
        sb->io_wake_ns = now + (uint64_t)timeout * 1000000ull;
        io_unlock(sb);
        int pr = poll(fds, (nfds_t)n, timeout);
        int poll_errno = errno;
        pthread_mutex_lock(&sb->mu);
        if (sb->stopping || sb->dead)
            break;
        if (pr < 0) {
            if (poll_errno == EINTR)
                continue;
            fb_sup_die_locked(sb, FB_E_INTERNAL, "poll failed: %s", strerror(poll_errno));
            break;
        }
        if (fds[1].revents) {
            uint64_t v;
            while (read(sb->wake_fd, &v, sizeof v) > 0)
                ;
        }
        if (con >= 0 && fds[con].revents)
            fb_sup_drain_console(sb);
        if (net >= 0 && fds[net].revents)
            take_net_conns(sb);
        /* Before the channel is read: a frame may end a stream in fds. */
        if (nstreams)
            fb_relay_io(sb->relay, fds + first_stream, (size_t)nstreams);
        /* Stdin before reading the channel: an exit read there may end
         * (and free) an exec whose fd is in fds. */
        for (int i = first_exec; i < n; i++)
            if (fds[i].revents)
                fb_xlog_stdin_ready_locked(sb, owner[i]);
        fb_err err = {{0}};
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
            read_frames_locked(sb);
        if (!sb->dead && fb_chan_queued(&sb->chan) && fb_chan_flush(&sb->chan, &err) < 0)
            fb_sup_die_locked(sb, FB_E_SANDBOX_ENDED, "sandbox %s: %s", sb->id, err.msg);
    }
    io_unlock(sb);
    io_of = NULL;
    return NULL;
}

/* ---- start and stop ------------------------------------------------------------- */

static fb_errc recv_error_code(const fb_sandbox *sb)
{
    if (sb->chan.dec.failed)
        return FB_E_PROTOCOL;
    return sb->chan.eof ? FB_E_SANDBOX_ENDED : FB_E_UNRESPONSIVE;
}

/* Hello and its ready, on the calling thread: nothing else runs yet. */
static fb_errc handshake(fb_sandbox *sb, fb_err *err)
{
    fb_msg_hello hello = {.version = FB_PROTO_VERSION, .workspace_mib = sb->cfg.disk_mib,
                          .tmp_mib = sb->cfg.tmp_mib, .nproc = sb->cfg.pids, .nofile = 1024,
                          .max_output = sb->cfg.max_output, .net = sb->net_fd >= 0 || sb->relay};
    if (sb->ops == &fb_backend_vm) {
        /* Fresh entropy and the clock, for VMs restored from a snapshot
         * (snapshot.h); cold ones take them too. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        fb_random_bytes(hello.seed, sizeof hello.seed);
        hello.has_seed = hello.has_time = true;
        hello.time_sec = (uint64_t)now.tv_sec;
        hello.time_nsec = (uint64_t)now.tv_nsec;
    }
    uint64_t id = sb->next_id++;
    json_t *h = fb_msg_encode_hello(id, &hello, err);
    if (!h)
        return FB_E_BAD_REQUEST;
    int rc = fb_chan_send(&sb->chan, h, NULL, 0, err);
    json_decref(h);
    if (rc < 0)
        return FB_E_INTERNAL;
    int timeout = sb->ops == &fb_backend_vm ? HELLO_TIMEOUT_VM_MS : HELLO_TIMEOUT_JAIL_MS;
    fb_frame f;
    if (fb_chan_recv(&sb->chan, &f, timeout, err) < 0) {
        fb_sup_console_hint(sb, err);
        return recv_error_code(sb);
    }
    fb_msg_type t = fb_msg_type_of(&f);
    fb_errc code = FB_OK;
    fb_msg_ready ready;
    fb_msg_error e;
    const char *m;
    if (t == FB_MSG_FATAL && fb_msg_decode_fatal(&f, &m, err) == 0) {
        fb_fail(err, "sandbox agent failed: %s", m);
        code = FB_E_AGENT_FATAL;
    } else if (t == FB_MSG_ERROR && f.id == id && fb_msg_decode_error(&f, &e, err) == 0) {
        fb_fail(err, "%s (%s)", e.message, fb_errc_name(e.code));
        code = e.code;
    } else if (t != FB_MSG_READY || f.id != id) {
        fb_fail(err, "protocol error: expected \"ready\" for request %llu, got \"%.32s\" for %llu",
                (unsigned long long)id, f.type, (unsigned long long)f.id);
        code = FB_E_PROTOCOL;
    } else if (fb_msg_decode_ready(&f, &ready, err) < 0) {
        fb_fail_prefix(err, "protocol error: bad ready");
        code = FB_E_PROTOCOL;
    } else if (ready.version != FB_PROTO_VERSION) {
        fb_fail(err, "the agent speaks protocol %llu, the host %d", (unsigned long long)ready.version,
                FB_PROTO_VERSION);
        code = FB_E_PROTOCOL;
    } else {
        snprintf(sb->kernel, sizeof sb->kernel, "%s", ready.kernel);
    }
    fb_frame_clear(&f);
    return code;
}

fb_errc fb_sup_start(fb_sandbox *sb, fb_err *err)
{
    fb_chan_init(&sb->chan, sb->chan_fd);
    fb_set_nonblock(sb->chan_fd, true);
    fb_errc code = handshake(sb, err);
    if (code != FB_OK)
        return code;
    /* The I/O thread takes no signal meant for the process (a CLI's
     * SIGINT goes to its main thread). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&sb->io_thread, NULL, io_main, sb);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        fb_fail(err, "cannot start the sandbox's I/O thread: %s", strerror(rc));
        return FB_E_RESOURCE;
    }
    sb->io_started = true;
    return FB_OK;
}

void fb_sup_stop(fb_sandbox *sb)
{
    pthread_mutex_lock(&sb->mu);
    sb->stopping = true;
    fb_sup_wake(sb);
    pthread_mutex_unlock(&sb->mu);
    if (sb->io_started)
        pthread_join(sb->io_thread, NULL);
    sb->io_started = false;
}

void fb_sup_unref_unlock(fb_sandbox *sb)
{
    bool last = --sb->refs == 0;
    pthread_mutex_unlock(&sb->mu);
    if (!last)
        return;
    fb_chan_free(&sb->chan);
    if (sb->relay)
        fb_relay_close_all(sb->relay);
    free(sb->relay);
    if (sb->wake_fd >= 0)
        close(sb->wake_fd);
    pthread_cond_destroy(&sb->cv);
    pthread_mutex_destroy(&sb->mu);
    free(sb);
}

int fb_sandbox_attach_fd(int fd, const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    *out = NULL;
    fb_sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        close(fd);
        return fb_fail(err, "out of memory");
    }
    sb->cfg = *cfg;
    sb->slot = -1;
    sb->slot_fd = sb->console_fd = sb->pidfd = sb->wake_fd = sb->net_fd = -1;
    sb->pid = -1;
    sb->chan_fd = fd;
    snprintf(sb->id, sizeof sb->id, "sb-attached-%d", fd);
    if (fb_sup_init(sb, err) < 0 || fb_sup_start(sb, err) != FB_OK) {
        fb_sandbox_destroy(sb);
        return -1;
    }
    sb->assigned = true;
    *out = sb;
    return 0;
}

void fb_sandbox_set_remote(fb_sandbox *sb, const char *id, const char *isolation,
                           const struct fb_sandbox_remote *ops, void *ctx)
{
    pthread_mutex_lock(&sb->mu);
    snprintf(sb->id, sizeof sb->id, "%s", id);
    snprintf(sb->remote_isolation, sizeof sb->remote_isolation, "%s", isolation);
    sb->remote = ops;
    sb->remote_ctx = ctx;
    pthread_mutex_unlock(&sb->mu);
}
