/*
 * listener.c - libmicrohttpd daemons, client addresses and request bodies
 * for every HTTP listener of ForgeBox (listener.h).
 *
 * libmicrohttpd runs in thread-per-connection mode: a slow or stalled
 * client holds only its own thread (and is cut off by the connection
 * timeout), never anyone else's.  Each connection's thread waits with
 * poll(2) rather than select(2): a gateway running hundreds of sandboxes
 * holds thousands of descriptors, and select's cost grows with the highest
 * descriptor number while poll's is one entry (bench/README.md).
 */
#define _GNU_SOURCE
#include "gateway/listener.h"

#include <arpa/inet.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

void gw_client_ip(struct MHD_Connection *conn, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, cap, "unknown");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
}

static int listen_addr(const char *listen, const char *setting, struct sockaddr_storage *ss, uint16_t *port,
                       bool *v6, fb_err *err)
{
    char host[256];
    if (fb_config_listen_split(listen, host, sizeof host, port, err) < 0)
        return -1;
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    *v6 = false;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(*port);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(*port);
        *v6 = true;
    } else {
        return fb_fail(err, "config: %s: \"%s\" is not an IP address", setting, host);
    }
    return 0;
}

struct MHD_Daemon *gw_listen(const fb_config *cfg, const char *listen, const char *setting,
                             MHD_AccessHandlerCallback handler, void *cls, MHD_RequestCompletedCallback done,
                             const char *cert, const char *key, fb_err *err)
{
    gw_tls tls = {cert, key, NULL, NULL, NULL, NULL};
    return gw_listen_tls(cfg, listen, setting, handler, cls, done, cert ? &tls : NULL, err);
}

struct MHD_Daemon *gw_listen_tls(const fb_config *cfg, const char *listen, const char *setting,
                                 MHD_AccessHandlerCallback handler, void *cls, MHD_RequestCompletedCallback done,
                                 const gw_tls *t, fb_err *err)
{
    const char *cert = t ? t->cert : NULL;
    struct sockaddr_storage ss;
    uint16_t port;
    bool v6;
    if (listen_addr(listen, setting, &ss, &port, &v6, err) < 0)
        return NULL;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0) | (cert ? MHD_USE_TLS : 0);
    size_t mem_limit = (size_t)cfg->limits.max_header_bytes + 32 * 1024;
    unsigned per_ip = (unsigned)(cfg->limits.max_connections / 4 > 4 ? cfg->limits.max_connections / 4 : 4);
    /* Each option present is one more item; the first absent one ends the
     * list (MHD_OPTION_END), so trust and priorities come only with a cert. */
    struct MHD_OptionItem tls[6] = {{MHD_OPTION_END, 0, NULL}};
    size_t n = 0;
    if (cert) {
        tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cert};
        tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)t->key};
        if (t->trust)
            tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, (void *)t->trust};
        if (t->priorities)
            tls[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)t->priorities};
        if (t->notify)
            tls[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)t->notify, t->notify_cls};
    }
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, port, NULL, NULL, handler, cls, MHD_OPTION_SOCK_ADDR, &ss,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem_limit, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)cfg->limits.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->limits.request_timeout_s,
                         MHD_OPTION_NOTIFY_COMPLETED, done, cls, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!d)
        fb_fail(err, "cannot listen on %s (%s: in use, or not an address of this host?)", listen, setting);
    return d;
}

int gw_buf_add(char **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *nb = realloc(*buf, ncap);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

void gw_caller_init(fb_caller *caller, struct MHD_Connection *conn)
{
    uint8_t b[8];
    char hex[17];
    fb_random_bytes(b, sizeof b);
    fb_hex(b, sizeof b, hex);
    snprintf(caller->request_id, sizeof caller->request_id, "req_%s", hex);
    gw_client_ip(conn, caller->source_ip, sizeof caller->source_ip);
}

enum MHD_Result gw_queue_with(struct MHD_Connection *conn, int status, struct MHD_Response *resp, const char *type,
                              const char *request_id)
{
    if (!resp)
        return MHD_NO;
    if (type)
        MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "X-Request-Id", request_id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

char *gw_pem_read(const char *path, fb_err *err)
{
    char *buf = malloc(1 << 20);
    if (!buf || fb_read_file(path, buf, 1 << 20, err) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

void gw_pem_free_secret(char *pem)
{
    if (pem)
        sodium_memzero(pem, strlen(pem));
    free(pem);
}
