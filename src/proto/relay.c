/*
 * relay.c - byte streams over the agent channel (relay.h): the egress
 * bridge's transport where file descriptors cannot cross, used alike by
 * fb-agent and by the host's I/O thread.
 */
#define _GNU_SOURCE
#include "proto/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void fb_relay_init(fb_relay *r, fb_relay_send_fn send, void *ctx)
{
    memset(r, 0, sizeof *r);
    r->send = send;
    r->ctx = ctx;
}

static fb_relay_stream *find(fb_relay *r, uint64_t id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->s[i].id == id)
            return &r->s[i];
    return NULL;
}

int fb_relay_add(fb_relay *r, uint64_t id, int fd)
{
    if (r->n >= FB_NET_MAX_STREAMS || find(r, id))
        return -1;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    r->s[r->n++] = (fb_relay_stream){.id = id, .fd = fd};
    return 0;
}

static void send_net(fb_relay *r, fb_relay_stream *s, fb_msg_type t, uint64_t bytes, const void *p, size_t len)
{
    fb_err err = {{0}};
    fb_msg_net m = {.type = t, .bytes = bytes};
    json_t *h = fb_msg_encode_net(s->id, &m, &err);
    if (h)
        (void)r->send(r->ctx, h, p, len);
}

/* This side will send no more. */
static void finish_reading(fb_relay *r, fb_relay_stream *s)
{
    if (s->fd_done)
        return;
    s->fd_done = true;
    send_net(r, s, FB_MSG_NET_CLOSE, 0, NULL, 0);
}

/* The socket is gone for writing: what is buffered, and what comes, is
 * acknowledged and dropped so the peer is never stuck on its window. */
static void break_writing(fb_relay *r, fb_relay_stream *s)
{
    if (s->len)
        send_net(r, s, FB_MSG_NET_ACK, s->len, NULL, 0);
    s->len = 0;
    s->broken = true;
}

size_t fb_relay_pollfds(const fb_relay *r, struct pollfd *fds, size_t cap, bool room)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n && k < cap; i++) {
        const fb_relay_stream *s = &r->s[i];
        short ev = 0;
        if (!s->fd_done && room && s->unacked + FB_NET_CHUNK <= FB_NET_WINDOW)
            ev |= POLLIN;
        if (s->len)
            ev |= POLLOUT;
        fds[k++] = (struct pollfd){.fd = ev ? s->fd : -1, .events = ev};
    }
    return k;
}

static void do_read(fb_relay *r, fb_relay_stream *s)
{
    /* On the caller's stack (the host's I/O thread, the agent's main
     * loop), not thread-local: static TLS is copied into every thread a
     * process starts (sandbox/execlog.c says what that cost). */
    uint8_t buf[FB_NET_CHUNK];
    ssize_t n = read(s->fd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (n < 0)
            break_writing(r, s);
        finish_reading(r, s);
        return;
    }
    s->unacked += (uint64_t)n;
    send_net(r, s, FB_MSG_NET_DATA, 0, buf, (size_t)n);
}

static void do_write(fb_relay *r, fb_relay_stream *s)
{
    while (s->len) {
        ssize_t n = send(s->fd, s->buf, s->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            break_writing(r, s);
            return;
        }
        memmove(s->buf, s->buf + n, s->len - (size_t)n);
        s->len -= (size_t)n;
        send_net(r, s, FB_MSG_NET_ACK, (uint64_t)n, NULL, 0);
    }
}

static void settle(fb_relay_stream *s)
{
    if (s->peer_done && s->len == 0 && !s->shut && !s->broken) {
        (void)shutdown(s->fd, SHUT_WR);
        s->shut = true;
    }
}

/* Streams over on both sides go. */
static void sweep(fb_relay *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        fb_relay_stream *s = &r->s[i];
        if (s->fd_done && s->peer_done && s->len == 0) {
            close(s->fd);
            free(s->buf);
            continue;
        }
        r->s[k++] = *s;
    }
    r->n = k;
}

void fb_relay_io(fb_relay *r, const struct pollfd *fds, size_t n)
{
    for (size_t i = 0; i < n && i < r->n; i++) {
        fb_relay_stream *s = &r->s[i];
        if (fds[i].fd != s->fd || !fds[i].revents)
            continue;
        if (fds[i].revents & POLLOUT)
            do_write(r, s);
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR))
            if (!s->fd_done)
                do_read(r, s);
        settle(s);
    }
    sweep(r);
}

void fb_relay_frame(fb_relay *r, const fb_frame *f)
{
    fb_msg_net m;
    fb_err err = {{0}};
    fb_relay_stream *s = find(r, f->id);
    if (!s || fb_msg_decode_net(f, &m, &err) < 0)
        return;
    switch (m.type) {
    case FB_MSG_NET_ACK:
        s->unacked -= m.bytes < s->unacked ? m.bytes : s->unacked;
        break;
    case FB_MSG_NET_CLOSE:
        s->peer_done = true;
        break;
    case FB_MSG_NET_DATA:
        if (s->peer_done || s->len + f->payload_len > FB_NET_WINDOW) {
            /* Beyond the window or after its close: the peer broke the
             * stream's rules; the stream ends, nothing else does. */
            s->peer_done = true;
            break_writing(r, s);
            finish_reading(r, s);
            break;
        }
        if (s->broken) {
            send_net(r, s, FB_MSG_NET_ACK, f->payload_len, NULL, 0);
            break;
        }
        if (!s->buf && !(s->buf = malloc(FB_NET_WINDOW))) {
            s->peer_done = true;
            break_writing(r, s);
            finish_reading(r, s);
            break;
        }
        memcpy(s->buf + s->len, f->payload, f->payload_len);
        s->len += f->payload_len;
        do_write(r, s);
        break;
    default:
        break;
    }
    settle(s);
    sweep(r);
}

void fb_relay_close_all(fb_relay *r)
{
    for (size_t i = 0; i < r->n; i++) {
        close(r->s[i].fd);
        free(r->s[i].buf);
    }
    r->n = 0;
}
