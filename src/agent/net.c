/*
 * net.c - fb-agent's side of the egress bridge (docs/egress.md).
 *
 * Only with a network grant (hello's "net"): the agent brings up the
 * sandbox's own loopback (a jail's the host has brought up already: the
 * jail's network namespace belongs to the host's user namespace, where
 * the agent holds no capability; sandbox/netns.c), listens on
 * 127.0.0.1:3128 and hands every
 * accepted TCP connection, as a file descriptor (SCM_RIGHTS), to the host
 * over the bridge channel (--net-fd).  The host gives it to the egress
 * proxy as this sandbox's, because it arrived on this sandbox's channel;
 * nothing a tool process writes can name another sandbox or destination
 * the proxy would not check.  The agent keeps no bytes and no state per
 * connection: the proxy reads and writes the socket itself, and its
 * per-sandbox limits (connections, bytes, timeouts) apply.  The sandbox's
 * network namespace has nothing but lo, so the listener is the only place
 * an AF_INET socket can lead.
 *
 * In a VM descriptors cannot cross the virtio-serial port: there each
 * connection becomes a stream of net_* frames on the agent channel
 * (proto/relay.h), with a window per direction; the host turns each into
 * a socketpair whose other end it gives to the proxy.
 */
#define _GNU_SOURCE
#include "agent/agent.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* At most this many connections handed over per poll wakeup. */
#define NET_BATCH 16

static int lo_up(fb_err *err)
{
    if (fb_loopback_up() < 0)
        return fb_fail_errno(err, "egress bridge: cannot bring lo up");
    return 0;
}

static int relay_send(void *ctx, json_t *h, const void *payload, size_t len)
{
    fb_agent *a = ctx;
    fb_err err = {{0}};
    int rc = fb_chan_send(&a->chan, h, payload, len, &err);
    json_decref(h);
    return rc;
}

int fb_net_start(fb_agent *a, fb_err *err)
{
    if (a->net_fd < 0 && a->mode != FB_MODE_VM)
        return fb_fail(err, "a network grant, but no egress bridge channel (--net-fd)");
    if (a->net_fd < 0) {
        /* A VM: descriptors cannot cross virtio-serial; streams travel
         * as frames on the agent channel (proto/relay.h). */
        fb_relay_init(&a->relay, relay_send, a);
        a->relay_on = true;
    }
    if (lo_up(err) < 0)
        return -1;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return fb_fail_errno(err, "egress bridge: socket");
    int one = 1;
    (void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(FB_NET_PROXY_PORT),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(s, 64) < 0) {
        close(s);
        return fb_fail_errno(err, "egress bridge: cannot listen on 127.0.0.1:%d", FB_NET_PROXY_PORT);
    }
    a->net_listen = s;
    return 0;
}

void fb_net_accept(fb_agent *a)
{
    for (int i = 0; i < NET_BATCH; i++) {
        int c = accept4(a->net_listen, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            return;
        if (a->relay_on) {
            uint64_t id = ++a->relay_next;
            fb_err err = {{0}};
            fb_msg_net m = {.type = FB_MSG_NET_OPEN};
            json_t *h = fb_msg_encode_net(id, &m, &err);
            if (!h || fb_relay_add(&a->relay, id, c) < 0) {
                json_decref(h);
                close(c); /* too many streams: the client sees a reset */
                continue;
            }
            /* Queued for sure: main.c polls the listener only while the
             * channel has room. */
            (void)relay_send(a, h, NULL, 0);
            continue;
        }
        char byte = 'c';
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } u;
        memset(&u, 0, sizeof u);
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                            .msg_controllen = sizeof u.buf};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &c, sizeof c);
        /* A full channel (the host is not keeping up) drops this
         * connection: the client sees a reset, never a hang. */
        (void)sendmsg(a->net_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        close(c);
    }
}

void fb_net_frame(fb_agent *a, const fb_frame *f)
{
    if (a->relay_on)
        fb_relay_frame(&a->relay, f);
}
