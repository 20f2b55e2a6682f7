/*
 * relay.h - byte streams carried over the agent channel as net_open /
 * net_data / net_ack / net_close frames (msg.h): the egress bridge where
 * file descriptors cannot cross (a VM's virtio-serial port).  Both ends
 * use this one implementation: fb-agent for the TCP connections accepted
 * on the guest's 127.0.0.1:3128, the host's I/O thread for the socketpair
 * ends it hands to the egress proxy.
 *
 * Flow control is a window per stream and direction, like stdin's: a side
 * reads its socket only while fewer than FB_NET_WINDOW bytes it sent are
 * unacknowledged, and acknowledges bytes once written to its socket, so
 * neither side ever buffers more than FB_NET_WINDOW per stream.  A peer
 * that sends beyond the window, or data for a stream it closed, gets the
 * stream closed (never the sandbox).  Frames for unknown streams are
 * ignored: a close and data may cross.  At most FB_NET_MAX_STREAMS streams.
 *
 * net_close means "I send no more" (half-close): the receiver shuts its
 * socket's write side once what it buffered is written.  A stream goes
 * when both sides have closed and nothing is left to write.
 *
 * Not thread-safe: one loop owns a relay.
 */
#ifndef FB_PROTO_RELAY_H
#define FB_PROTO_RELAY_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/msg.h"

/* Sends one frame (steals hdr); 0, or -1 when it cannot be queued. */
typedef int (*fb_relay_send_fn)(void *ctx, json_t *hdr, const void *payload, size_t len);

typedef struct fb_relay_stream {
    uint64_t id;
    int fd;
    uint8_t *buf;       /* from the peer, not yet written to fd */
    size_t len;
    uint64_t unacked;   /* sent to the peer, not yet acknowledged */
    bool fd_done;       /* fd gave EOF or an error; net_close sent */
    bool peer_done;     /* the peer sent net_close */
    bool broken;        /* fd cannot be written: peer data is acknowledged and dropped */
    bool shut;          /* shutdown(SHUT_WR) done */
} fb_relay_stream;

typedef struct fb_relay {
    fb_relay_stream s[FB_NET_MAX_STREAMS];
    size_t n;
    fb_relay_send_fn send;
    void *ctx;
} fb_relay;

void fb_relay_init(fb_relay *r, fb_relay_send_fn send, void *ctx);
/* Adds a stream on fd (made non-blocking; the relay owns it from now on).
 * -1 (fd left to the caller) when full or id is taken. */
int fb_relay_add(fb_relay *r, uint64_t id, int fd);
/* One pollfd per stream, in order, into fds[0..]; returns how many.
 * room: the channel can take a data frame now. */
size_t fb_relay_pollfds(const fb_relay *r, struct pollfd *fds, size_t cap, bool room);
/* Handles what poll reported for the n pollfds fb_relay_pollfds gave. */
void fb_relay_io(fb_relay *r, const struct pollfd *fds, size_t n);
/* A net_data / net_ack / net_close frame from the peer. */
void fb_relay_frame(fb_relay *r, const fb_frame *f);
/* Closes every stream (no frames sent). */
void fb_relay_close_all(fb_relay *r);

#endif
