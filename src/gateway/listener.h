/*
 * listener.h - what every libmicrohttpd listener of ForgeBox shares: the
 * native gateway (server.c) and the E2B-compatible listener
 * (src/compat/e2b) start their daemons, name their clients and gather
 * their bodies the same way.
 */
#ifndef FB_GW_LISTENER_H
#define FB_GW_LISTENER_H

#include <microhttpd.h>
#include <stddef.h>

#include "common/util.h"
#include "config/config.h"
#include "core/core.h"

/* The client's address as text ("unknown" when there is none). */
void gw_client_ip(struct MHD_Connection *conn, char *out, size_t cap);

/* A thread-per-connection daemon on `listen` ("HOST:PORT", HOST an IP
 * address; `key` names the setting in messages) with cfg's limits: header
 * memory, connections (at most a quarter per address, so that one slow
 * client cannot take them all) and the connection timeout.  cert/key
 * (PEM text) NULL: plain HTTP.  NULL with err when it cannot listen. */
struct MHD_Daemon *gw_listen(const fb_config *cfg, const char *listen, const char *setting,
                             MHD_AccessHandlerCallback handler, void *cls, MHD_RequestCompletedCallback done,
                             const char *cert, const char *key, fb_err *err);

/* A listener's TLS: cert/key (PEM text; cert NULL: plain HTTP); trust
 * (PEM text of a CA, NULL: none) makes the daemon ask every client for a
 * certificate, which the request handler then decides (gateway/mtls.h);
 * priorities (a GnuTLS priority string, NULL: the library's default). */
typedef struct gw_tls {
    const char *cert;
    const char *key;
    const char *trust;
    const char *priorities;
    MHD_NotifyConnectionCallback notify;  /* NULL: none (gw_mtls_notify: report refused handshakes) */
    void *notify_cls;
} gw_tls;

/* A listener's PEM file (certificate, key or CA; at most 1 MiB) as text,
 * or NULL with err.  Free a key's text with gw_pem_free_secret. */
char *gw_pem_read(const char *path, fb_err *err);
/* Wipes and frees a private key's text (NULL is fine). */
void gw_pem_free_secret(char *pem);

/* gw_listen with a full TLS setting (tls NULL: plain HTTP). */
struct MHD_Daemon *gw_listen_tls(const fb_config *cfg, const char *listen, const char *setting,
                                 MHD_AccessHandlerCallback handler, void *cls, MHD_RequestCompletedCallback done,
                                 const gw_tls *tls, fb_err *err);

/* A new request's caller: a fresh request id ("req_" and 16 hex) and the
 * client's address. */
void gw_caller_init(fb_caller *caller, struct MHD_Connection *conn);

/* Queues resp (taking it) with Content-Type (if type), X-Request-Id and
 * Cache-Control: no-store.  MHD_NO for a NULL resp. */
enum MHD_Result gw_queue_with(struct MHD_Connection *conn, int status, struct MHD_Response *resp, const char *type,
                              const char *request_id);

/* Appends n bytes to a NUL-terminated buffer that grows by doubling.
 * -1: out of memory (the buffer is kept as it was). */
int gw_buf_add(char **buf, size_t *len, size_t *cap, const void *data, size_t n);

#endif
