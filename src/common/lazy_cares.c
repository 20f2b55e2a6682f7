/*
 * lazy_cares.c - c-ares, loaded when the egress proxy first resolves a
 * name (common/lazylib.h says why: only the proxy resolves).  Every c-ares
 * function ForgeBox calls (src/egress/resolve.c) is listed here with its
 * prototype from ares.h.
 */
#include <ares.h>

#include "common/lazylib.h"

fb_lazylib fb_lazy_libcares = FB_LAZYLIB_INIT("libcares.so.2", "the egress proxy's resolver");
#define L fb_lazy_libcares

FB_LAZY_VOID(L, ares_destroy, (ares_channel channel), (channel))
FB_LAZY_VOID(L, ares_freeaddrinfo, (struct ares_addrinfo * ai), (ai))
FB_LAZY_VOID(L, ares_getaddrinfo,
             (ares_channel channel, const char *node, const char *service,
              const struct ares_addrinfo_hints *hints, ares_addrinfo_callback callback, void *arg),
             (channel, node, service, hints, callback, arg))
FB_LAZY_FN(L, int, ares_init_options,
           (ares_channel * channelptr, struct ares_options *options, int optmask),
           (channelptr, options, optmask))
FB_LAZY_FN(L, int, ares_library_init, (int flags), (flags))
FB_LAZY_VOID(L, ares_process_fd, (ares_channel channel, ares_socket_t read_fd, ares_socket_t write_fd),
             (channel, read_fd, write_fd))
FB_LAZY_FN(L, int, ares_set_servers_ports_csv, (ares_channel channel, const char *servers),
           (channel, servers))
FB_LAZY_FN(L, const char *, ares_strerror, (int code), (code))
FB_LAZY_FN(L, struct timeval *, ares_timeout,
           (ares_channel channel, struct timeval *maxtv, struct timeval *tv), (channel, maxtv, tv))
