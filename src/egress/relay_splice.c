/*
 * relay_splice.c - the RELAY state's data path: bytes both ways between a
 * sandbox's connection and its destination, as cheaply as the kernel
 * allows (internal.h has the interface, conn.c the rest of a connection).
 *
 * Why not bufferevents: relaying through them copies every byte into user
 * space and out again, and their watermark toggling and FIONREAD calls
 * made the proxy's thread a system-call and scheduler bottleneck (bench/
 * README.md).  Here each direction owns a pipe and moves bytes with
 * splice(2) socket -> pipe -> socket, so they stay in the kernel, driven
 * by plain persistent libevent events.  Where a socket cannot be spliced
 * (or no pipe can be had), that direction falls back to read/write through
 * one buffer of its own.
 *
 * Semantics kept from the bufferevent relay:
 *  - bounded buffering: a direction reads its source only when everything
 *    it read before has been written (at most one pipe, PIPE_BYTES, or one
 *    buffer in flight), so a slow reader stops the other side being read;
 *  - byte budgets cut at the exact byte: each read asks for at most what
 *    the sandbox has left; once nothing is left, a peek tells a source
 *    with more to send (cut) from one that has ended (a normal end);
 *  - half-closes pass on: a source's end shuts the other side's write
 *    half once everything read from it is written; both done ends it;
 *  - every byte moved updates the caller's last-activity time, and the
 *    per-connection and per-sandbox counters.
 * The callback never runs from inside a call into this file; after it
 * has reported an end, the caller frees the relay (or drains it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "egress/internal.h"

#define PIPE_BYTES  (256 * 1024) /* asked of F_SETPIPE_SZ; the default 64 KiB otherwise */
#define PLAIN_BYTES (256 * 1024) /* the read/write fallback's buffer */
#define ROUNDS      16           /* fills per callback, so one busy connection cannot starve others */

enum fill_result { F_MOVED, F_EOF, F_WAIT, F_CUT, F_ERROR };

typedef struct dir {
    struct egress_relay *r;
    int from, to;            /* descriptors (the relay's) */
    struct event *rd, *wr;   /* EV_READ on from, EV_WRITE on to */
    bool rd_on, wr_on;
    int pipe[2];             /* -1 when plain */
    size_t in_pipe, pipe_cap;
    bool plain;              /* read/write through buf instead of splice */
    char *buf;               /* bytes to write before the pipe's (hand-over, or plain) */
    size_t cap, off, len;
    egress_budget b;
    bool eof, shut;
} dir;

struct egress_relay {
    struct event_base *base;
    int cfd, ufd;
    dir up, down; /* up: client -> destination; down: destination -> client */
    bool draining;
    struct timeval *last;
    egress_relay_fn fn;
    void *ctx;
};

static void set_ev(struct event *ev, bool *on, bool want)
{
    if (want && !*on)
        event_add(ev, NULL);
    else if (!want && *on)
        event_del(ev);
    *on = want;
}

/* The end a failing descriptor means: the sandbox's side or the destination's. */
static egress_relay_end side_error(egress_relay *r, int fd)
{
    return fd == r->cfd ? EGRESS_RELAY_CLIENT_ERROR : EGRESS_RELAY_UP_ERROR;
}

/* Writes what d holds. 1: all written; 0: the destination is full; -1: error. */
static int flush(dir *d)
{
    bool moved = false;
    int rc = 1;
    while (d->len) {
        ssize_t n = send(d->to, d->buf + d->off, d->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            rc = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : errno == EINTR ? 1 : -1;
            if (rc != 1)
                goto out;
            continue;
        }
        d->off += (size_t)n;
        d->len -= (size_t)n;
        moved = true;
    }
    while (d->in_pipe) {
        ssize_t n = splice(d->pipe[0], NULL, d->to, NULL, d->in_pipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            rc = (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) ? 0 : -1;
            goto out;
        }
        d->in_pipe -= (size_t)n;
        moved = true;
    }
out:
    if (moved)
        event_base_gettimeofday_cached(d->r->base, d->r->last);
    return rc;
}

/* Switches d to read/write through a buffer of its own (keeping what the
 * buffer still holds to write). */
static bool go_plain(dir *d)
{
    if (d->cap < PLAIN_BYTES) {
        size_t cap = d->len > PLAIN_BYTES ? d->len : PLAIN_BYTES;
        char *b = malloc(cap);
        if (!b)
            return false;
        if (d->len)
            memcpy(b, d->buf + d->off, d->len);
        free(d->buf);
        d->buf = b;
        d->cap = cap;
        d->off = 0;
    }
    d->plain = true;
    return true;
}

/* Reads once from d's source into the empty pipe (or buffer), at most
 * what the budget leaves. */
static enum fill_result fill(dir *d)
{
    uint64_t used = *d->b.sandbox_used, room = used < d->b.cap ? d->b.cap - used : 0;
    if (room == 0) {
        char byte;
        ssize_t n = recv(d->from, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0)
            return F_CUT;
        if (n == 0)
            return F_EOF;
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? F_WAIT : F_ERROR;
    }
    ssize_t n = -1;
    if (!d->plain) {
        size_t want = room < d->pipe_cap ? (size_t)room : d->pipe_cap;
        n = splice(d->from, NULL, d->pipe[1], NULL, want, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) && !go_plain(d))
            return F_ERROR;
        if (n > 0)
            d->in_pipe = (size_t)n;
    }
    if (d->plain) {
        size_t want = room < d->cap ? (size_t)room : d->cap;
        n = recv(d->from, d->buf, want, MSG_DONTWAIT);
        if (n > 0) {
            d->off = 0;
            d->len = (size_t)n;
        }
    }
    if (n == 0)
        return F_EOF;
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? F_WAIT : F_ERROR;
    *d->b.sandbox_used += (uint64_t)n;
    *d->b.conn_bytes += (uint64_t)n;
    event_base_gettimeofday_cached(d->r->base, d->r->last);
    return F_MOVED;
}

/* Moves what it can in direction d; reports an end through the callback
 * (as its last act: the relay may be gone after it). */
static void pump(dir *d)
{
    egress_relay *r = d->r;
    if (r->draining) {
        int f = flush(d);
        set_ev(d->wr, &d->wr_on, f == 0);
        if (f != 0)
            r->fn(r->ctx, f > 0 ? EGRESS_RELAY_DRAINED : EGRESS_RELAY_CLIENT_ERROR);
        return;
    }
    for (int round = 0; round < ROUNDS; round++) {
        int f = flush(d);
        if (f < 0) {
            r->fn(r->ctx, side_error(r, d->to));
            return;
        }
        /* a full destination: stop reading the source until it drains */
        set_ev(d->wr, &d->wr_on, f == 0);
        set_ev(d->rd, &d->rd_on, f == 1 && !d->eof);
        if (f == 0)
            return;
        if (d->eof) {
            if (!d->shut) {
                shutdown(d->to, SHUT_WR);
                d->shut = true;
            }
            if (r->up.shut && r->down.shut)
                r->fn(r->ctx, EGRESS_RELAY_DONE);
            return;
        }
        switch (fill(d)) {
        case F_MOVED: continue;
        case F_WAIT: return;
        case F_EOF:
            d->eof = true;
            set_ev(d->rd, &d->rd_on, false);
            continue;
        case F_CUT:
            r->fn(r->ctx, d == &r->up ? EGRESS_RELAY_CUT_UP : EGRESS_RELAY_CUT_DOWN);
            return;
        case F_ERROR:
            r->fn(r->ctx, side_error(r, d->from));
            return;
        }
    }
    /* more may be waiting: come back after others had their turn */
    set_ev(d->wr, &d->wr_on, true);
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pump(arg);
}

static bool dir_init(egress_relay *r, dir *d, int from, int to, char *pending, size_t n, egress_budget b)
{
    d->r = r;
    d->from = from;
    d->to = to;
    d->b = b;
    d->buf = pending;
    d->cap = d->len = pending ? n : 0;
    d->pipe[0] = d->pipe[1] = -1;
    d->rd = event_new(r->base, from, EV_READ | EV_PERSIST, on_event, d);
    d->wr = event_new(r->base, to, EV_WRITE | EV_PERSIST, on_event, d);
    if (!d->rd || !d->wr)
        return false;
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        d->pipe[0] = d->pipe[1] = -1;
        return go_plain(d);
    }
    fcntl(d->pipe[1], F_SETPIPE_SZ, PIPE_BYTES); /* best effort */
    int sz = fcntl(d->pipe[1], F_GETPIPE_SZ);
    d->pipe_cap = sz > 0 ? (size_t)sz : 65536;
    return true;
}

static void dir_free(dir *d)
{
    if (d->rd)
        event_free(d->rd);
    if (d->wr)
        event_free(d->wr);
    for (int i = 0; i < 2; i++)
        if (d->pipe[i] >= 0)
            close(d->pipe[i]);
    free(d->buf);
}

egress_relay *egress_relay_start(struct event_base *base, int client_fd, int up_fd, char *to_up, size_t n_to_up,
                                 char *to_client, size_t n_to_client, egress_budget up, egress_budget down,
                                 struct timeval *last, egress_relay_fn fn, void *ctx)
{
    egress_relay *r = calloc(1, sizeof *r);
    if (!r) {
        free(to_up);
        free(to_client);
        close(client_fd);
        close(up_fd);
        return NULL;
    }
    r->base = base;
    r->cfd = client_fd;
    r->ufd = up_fd;
    r->last = last;
    r->fn = fn;
    r->ctx = ctx;
    r->up.pipe[0] = r->up.pipe[1] = r->down.pipe[0] = r->down.pipe[1] = -1;
    for (int i = 0; i < 2; i++) {
        int fd = i ? up_fd : client_fd, fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && !(fl & O_NONBLOCK))
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
    bool ok = dir_init(r, &r->up, client_fd, up_fd, to_up, n_to_up, up);
    ok = dir_init(r, &r->down, up_fd, client_fd, to_client, n_to_client, down) && ok;
    if (!ok) {
        egress_relay_free(r);
        return NULL;
    }
    /* the first turn of each direction comes from the loop: write what was
     * handed over (and read) once the descriptors are ready */
    set_ev(r->up.wr, &r->up.wr_on, true);
    set_ev(r->down.wr, &r->down.wr_on, true);
    return r;
}

bool egress_relay_drain(egress_relay *r)
{
    r->draining = true;
    set_ev(r->up.rd, &r->up.rd_on, false);
    set_ev(r->up.wr, &r->up.wr_on, false);
    set_ev(r->down.rd, &r->down.rd_on, false);
    if (r->ufd >= 0) { /* the destination goes at once, as the bufferevent relay's did */
        close(r->ufd);
        r->ufd = -1;
    }
    if (r->down.len == 0 && r->down.in_pipe == 0) {
        set_ev(r->down.wr, &r->down.wr_on, false);
        return true;
    }
    set_ev(r->down.wr, &r->down.wr_on, true);
    return false;
}

void egress_relay_free(egress_relay *r)
{
    if (!r)
        return;
    dir_free(&r->up);
    dir_free(&r->down);
    if (r->cfd >= 0)
        close(r->cfd);
    if (r->ufd >= 0)
        close(r->ufd);
    free(r);
}
