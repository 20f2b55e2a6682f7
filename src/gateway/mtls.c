/*
 * mtls.c - the mutual-TLS screen of a listener (mtls.h).
 *
 * libmicrohttpd asks for a client certificate (GNUTLS_CERT_REQUEST) but
 * decides nothing about it: the handshake completes whatever the client
 * sent, and the first request on the connection is where the verdict is
 * taken, from the GnuTLS session MHD exposes.  Deciding on every request,
 * not once per connection, makes a revocation reach keep-alive
 * connections too (the CRL check is a stat and, when the file changed, a
 * reload).
 */
#define _GNU_SOURCE
#include "gateway/mtls.h"

#include <stdlib.h>
#include <string.h>

struct gw_mtls {
    fb_ca_verifier *v;
    char *trust_pem;
    gw_mtls_report_fn report;
    void *report_cls;
};

/* The per-connection mark behind MHD's socket context: any request seen. */
struct conn_mark {
    bool requested;
};

int gw_mtls_open(const char *ca_path, const char *crl_path, unsigned role_set, gw_mtls **out, fb_err *err)
{
    gw_mtls *m = calloc(1, sizeof *m);
    if (!m)
        return fb_fail(err, "out of memory");
    size_t cap = 1 << 20;
    m->trust_pem = malloc(cap);
    if (!m->trust_pem || fb_read_file(ca_path, m->trust_pem, cap, err) < 0 ||
        fb_ca_verifier_open(ca_path, crl_path, role_set, &m->v, err) < 0) {
        gw_mtls_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void gw_mtls_free(gw_mtls *m)
{
    if (!m)
        return;
    fb_ca_verifier_free(m->v);
    free(m->trust_pem);
    free(m);
}

void gw_mtls_set_reporter(gw_mtls *m, gw_mtls_report_fn fn, void *cls)
{
    m->report = fn;
    m->report_cls = cls;
}

void gw_mtls_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                    enum MHD_ConnectionNotificationCode toe)
{
    gw_mtls *m = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = calloc(1, sizeof(struct conn_mark)); /* NULL: simply not reported */
        return;
    }
    struct conn_mark *mark = *socket_context;
    *socket_context = NULL;
    if (mark && !mark->requested && m->report)
        m->report(m->report_cls, conn,
                  "the connection closed before any request: the TLS handshake was refused or abandoned "
                  "(mutual TLS takes TLS 1.3 only)");
    free(mark);
}

const char *gw_mtls_trust_pem(const gw_mtls *m)
{
    return m->trust_pem;
}

void gw_mtls_mark(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *sc = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (sc && sc->socket_context)
        ((struct conn_mark *)sc->socket_context)->requested = true;
}

fb_ca_verdict gw_mtls_check(gw_mtls *m, struct MHD_Connection *conn, const char *want_name, fb_ca_peer *peer,
                            char *reason, size_t reason_cap)
{
    const union MHD_ConnectionInfo *sc = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (sc && sc->socket_context)
        ((struct conn_mark *)sc->socket_context)->requested = true;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    void *session = ci ? ci->tls_session : NULL;
    return fb_ca_verify_session(m->v, session, want_name, peer, reason, reason_cap);
}
