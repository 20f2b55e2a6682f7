/*
 * lazy_event.c - libevent, loaded when the egress proxy first builds its
 * event loop (common/lazylib.h says why: `forgebox run` with the jail
 * starts no proxy).  Every libevent function ForgeBox calls (src/egress)
 * is listed here with its prototype from the event2 headers.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <stdarg.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_libevent = FB_LAZYLIB_INIT("libevent-2.1.so.7", "the egress proxy");
#define L fb_lazy_libevent

/* event.h */
FB_LAZY_FN(L, struct event_base *, event_base_new, (void), ())
FB_LAZY_VOID(L, event_base_free, (struct event_base * base), (base))
FB_LAZY_FN(L, int, event_base_dispatch, (struct event_base * base), (base))
FB_LAZY_FN(L, int, event_base_loopbreak, (struct event_base * base), (base))
FB_LAZY_FN(L, int, event_base_gettimeofday_cached, (struct event_base * base, struct timeval *tv),
           (base, tv))
FB_LAZY_FN(L, int, event_base_once,
           (struct event_base * base, evutil_socket_t fd, short what, event_callback_fn cb,
            void *arg, const struct timeval *tv),
           (base, fd, what, cb, arg, tv))
FB_LAZY_FN(L, struct event *, event_new,
           (struct event_base * base, evutil_socket_t fd, short what, event_callback_fn cb,
            void *arg),
           (base, fd, what, cb, arg))
FB_LAZY_FN(L, int, event_add, (struct event * ev, const struct timeval *tv), (ev, tv))
FB_LAZY_FN(L, int, event_del, (struct event * ev), (ev))
FB_LAZY_VOID(L, event_free, (struct event * ev), (ev))

/* util.h */
FB_LAZY_FN(L, int, evutil_closesocket, (evutil_socket_t fd), (fd))
FB_LAZY_FN(L, int, evutil_make_socket_nonblocking, (evutil_socket_t fd), (fd))

/* bufferevent.h */
FB_LAZY_FN(L, struct bufferevent *, bufferevent_socket_new,
           (struct event_base * base, evutil_socket_t fd, int options), (base, fd, options))
FB_LAZY_FN(L, int, bufferevent_socket_connect,
           (struct bufferevent * bev, const struct sockaddr *sa, int len), (bev, sa, len))
FB_LAZY_VOID(L, bufferevent_free, (struct bufferevent * bev), (bev))
FB_LAZY_VOID(L, bufferevent_setcb,
             (struct bufferevent * bev, bufferevent_data_cb readcb, bufferevent_data_cb writecb,
              bufferevent_event_cb eventcb, void *arg),
             (bev, readcb, writecb, eventcb, arg))
FB_LAZY_FN(L, int, bufferevent_setfd, (struct bufferevent * bev, evutil_socket_t fd), (bev, fd))
FB_LAZY_FN(L, evutil_socket_t, bufferevent_getfd, (struct bufferevent * bev), (bev))
FB_LAZY_FN(L, int, bufferevent_enable, (struct bufferevent * bev, short what), (bev, what))
FB_LAZY_FN(L, int, bufferevent_disable, (struct bufferevent * bev, short what), (bev, what))
FB_LAZY_FN(L, struct evbuffer *, bufferevent_get_input, (struct bufferevent * bev), (bev))
FB_LAZY_FN(L, struct evbuffer *, bufferevent_get_output, (struct bufferevent * bev), (bev))

/* buffer.h */
FB_LAZY_FN(L, size_t, evbuffer_get_length, (const struct evbuffer *buf), (buf))
FB_LAZY_FN(L, ev_ssize_t, evbuffer_copyout, (struct evbuffer * buf, void *out, size_t len),
           (buf, out, len))
FB_LAZY_FN(L, int, evbuffer_drain, (struct evbuffer * buf, size_t len), (buf, len))
FB_LAZY_FN(L, unsigned char *, evbuffer_pullup, (struct evbuffer * buf, ev_ssize_t size),
           (buf, size))
FB_LAZY_FN(L, int, evbuffer_add_vprintf, (struct evbuffer * buf, const char *fmt, va_list ap),
           (buf, fmt, ap))

/* evbuffer_add_printf is variadic: it forwards to evbuffer_add_vprintf,
 * as libevent's own does. */
int evbuffer_add_printf(struct evbuffer *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = evbuffer_add_vprintf(buf, fmt, ap);
    va_end(ap);
    return n;
}

/* listener.h */
FB_LAZY_FN(L, struct evconnlistener *, evconnlistener_new,
           (struct event_base * base, evconnlistener_cb cb, void *arg, unsigned flags, int backlog,
            evutil_socket_t fd),
           (base, cb, arg, flags, backlog, fd))
FB_LAZY_FN(L, int, evconnlistener_enable, (struct evconnlistener * lev), (lev))
FB_LAZY_FN(L, int, evconnlistener_disable, (struct evconnlistener * lev), (lev))
FB_LAZY_VOID(L, evconnlistener_free, (struct evconnlistener * lev), (lev))
FB_LAZY_VOID(L, evconnlistener_set_error_cb,
             (struct evconnlistener * lev, evconnlistener_errorcb errorcb), (lev, errorcb))
