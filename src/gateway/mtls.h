/*
 * mtls.h - the mutual-TLS screen of a libmicrohttpd listener: the gateway
 * today (tls.client_ca), a node's internal API next.  It loads the client
 * CA for the daemon (MHD_OPTION_HTTPS_MEM_TRUST asks every client for a
 * certificate) and decides each request's peer with src/ca's verifier
 * before anything else runs.
 */
#ifndef FB_GW_MTLS_H
#define FB_GW_MTLS_H

#include <microhttpd.h>

#include "ca/ca.h"
#include "common/util.h"

typedef struct gw_mtls gw_mtls;

/* A screen for clients of the roles in role_set signed by the CA in
 * ca_path, checked against crl_path (NULL: none). */
int gw_mtls_open(const char *ca_path, const char *crl_path, unsigned role_set, gw_mtls **out, fb_err *err);
void gw_mtls_free(gw_mtls *m);
/* The CA's PEM text, for gw_tls.trust. */
const char *gw_mtls_trust_pem(const gw_mtls *m);

/* Called for a connection that closed without a single request: its TLS
 * handshake was refused (a TLS 1.2 client, no common cipher) or abandoned.
 * The listener's audit sink; conn still answers MHD_get_connection_info. */
typedef void (*gw_mtls_report_fn)(void *cls, struct MHD_Connection *conn, const char *reason);
void gw_mtls_set_reporter(gw_mtls *m, gw_mtls_report_fn fn, void *cls);
/* An MHD_NotifyConnectionCallback (cls: the gw_mtls) for gw_tls.notify:
 * tracks whether each connection carried a request (gw_mtls_check marks
 * it) and reports the ones that closed without. */
void gw_mtls_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                    enum MHD_ConnectionNotificationCode toe);

/* Decides the connection's client certificate (want_name non-NULL: the
 * peer must carry that name); reason: a line for the audit log. */
fb_ca_verdict gw_mtls_check(gw_mtls *m, struct MHD_Connection *conn, const char *want_name, fb_ca_peer *peer,
                            char *reason, size_t reason_cap);
/* Marks the connection as having carried a request, as gw_mtls_check
 * does (for a caller that decided the certificate another way, e.g. from
 * a verdict it remembered: src/node/verdicts.h). */
void gw_mtls_mark(struct MHD_Connection *conn);

#endif
