/*
 * server.c - libmicrohttpd glue and the request pipeline (gateway.h, gw.h).
 *
 * Everything that can be decided from the request line and the headers is
 * decided before a single byte of body is read: the route, the route's own
 * screen (MCP's Origin check, before anything else), the caller,
 * the rate limits, the permission on the resolved resource, the
 * Content-Type and the declared size.  So neither a stranger nor a caller
 * without the permission can make the gateway hold a body (finding 8 of
 * issue 6), and a refusal is answered at once.  Then a JSON body is read
 * into a buffer capped at limits.max_body_bytes and parsed against the
 * route's field list, or a file body is streamed to the sandbox as it
 * arrives; then the handler runs.
 *
 * Authentication results and every permission decision are audited with
 * the request id and the source address; services audit what they did.
 * No response, log line or audit entry ever carries a key, a password or
 * a hash: the one exception is the body of POST /v1/keys, which shows a
 * new key once.
 */
#define _GNU_SOURCE
#include "gateway/gateway.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gateway/authgate.h"
#include "gateway/gw.h"
#include "gateway/listener.h"
#include "gateway/mtls.h"

/* Authentication and the rate limits (authgate.c).  false: answered. */
static bool authenticate(gw_req *r, enum MHD_Result *rc)
{
    fb_gateway *g = r->g;
    /* Counted lookup: a NUL inside the header must not cut it short. */
    const char *h = NULL;
    size_t hlen = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_HEADER_KIND, "Authorization", 13, &h, &hlen) != MHD_YES)
        h = NULL;
    int by_session = h ? 0 : gw_session_authenticate(r, rc); /* the console's cookie */
    if (by_session != 0)
        return by_session > 0;
    int wait = 0;
    const char *why = "";
    fb_core_err err = {0};
    switch (gw_auth_gate_deferred(&g->sh, &r->caller, h, hlen, r->rt->def.pattern, &wait, &why, &err)) {
    case GW_GATE_OK:
        return true;
    case GW_GATE_DENIED:
        *rc = gw_send_core_error(r, &err);
        return false;
    case GW_GATE_LIMITED:
        *rc = gw_send_429(r, wait, why);
        return false;
    case GW_GATE_UNAUDITED:
        break;
    }
    *rc = gw_send_error(r, 503, "unavailable", why);
    return false;
}

/* The route's permission on its resource.  false: answered. */
static bool authorise(gw_req *r, enum MHD_Result *rc)
{
    const gw_route *rt = r->rt;
    fb_core *core = r->g->core;
    fb_core_err err = {0};
    int ok = 0;
    snprintf(r->caller.action, sizeof r->caller.action, "%s %s", r->method, rt->def.pattern);
    switch (rt->resolve) {
    case GW_RES_PUBLIC:
    case GW_RES_KEY:
    case GW_RES_SELF:
        return true;
    case GW_RES_TEAM:
        r->caller.audit_overlap = rt->audit_overlap;
        ok = fb_core_permit(core, &r->caller, rt->perm, rt->resource, r->caller.who.team_id, &err);
        r->caller.audit_overlap = false;
        break;
    case GW_RES_PARAM:
        ok = fb_core_permit(core, &r->caller, rt->perm, r->params.v[0], r->caller.who.team_id, &err);
        break;
    case GW_RES_ADMIN:
        ok = fb_core_permit_admin(core, &r->caller, rt->perm, rt->resource, rt->what, &err);
        break;
    case GW_RES_SANDBOX:
        r->caller.audit_overlap = rt->audit_overlap;
        ok = fb_core_sandbox_open(core, &r->caller, r->params.v[0], rt->perm, &r->ref, &err);
        r->caller.audit_overlap = false;
        break;
    case GW_RES_TASK:
        ok = fb_core_task_open(core, &r->caller, r->params.v[0], rt->perm, &r->task, &err);
        break;
    }
    if (ok < 0) {
        *rc = gw_send_core_error(r, &err);
        return false;
    }
    return true;
}

/* Whether the request announces a body (a length above 0, or chunks). */
static bool has_body(gw_req *r)
{
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Transfer-Encoding");
    return te || (cl && strcmp(cl, "0") != 0);
}

/* The whole pipeline up to the body.  false: answered. */
static bool gate(gw_req *r, int found, enum MHD_Result *rc)
{
    if (found == GW_ROUTE_NONE) {
        *rc = gw_send_error(r, 404, "not_found", "no such route");
        return false;
    }
    if (found == GW_ROUTE_BAD_METHOD) {
        *rc = gw_send_error(r, 405, "method_not_allowed", "method not allowed on this route");
        return false;
    }
    const gw_route *rt = r->rt;
    if (rt->screen && !rt->screen(r, rc))
        return false;
    if (rt->resolve != GW_RES_PUBLIC && !authenticate(r, rc))
        return false;
    if (!authorise(r, rc))
        return false;
    if (rt->body != GW_BODY_NONE && has_body(r)) {
        const char *want = rt->body == GW_BODY_STREAM ? GW_MEDIA_OCTETS : GW_MEDIA_JSON;
        const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
        if (!gw_content_type_is(ct, want)) {
            char msg[128];
            snprintf(msg, sizeof msg, "this route takes %s bodies", want);
            *rc = gw_send_error(r, 415, "unsupported_media_type", msg);
            return false;
        }
    }
    if (r->too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
        *rc = gw_send_error(r, 413, "too_large", msg);
        return false;
    }
    if (rt->body == GW_BODY_STREAM) {
        bool answered = false;
        *rc = rt->stream->begin(r, &answered);
        return !answered;
    }
    return true;
}

static gw_req *req_new(fb_gateway *g, struct MHD_Connection *conn, const char *method, const char *url)
{
    gw_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->g = g;
    r->conn = conn;
    r->method = method;
    gw_caller_init(&r->caller, conn);
    int found = gw_route_find(gw_route_defs(), gw_routes_count(), method, url, &r->params);
    r->rt = found >= 0 ? gw_route_at((size_t)found) : NULL;
    const fb_config *cfg = g->cfg;
    r->cap = r->rt && r->rt->body == GW_BODY_STREAM ? cfg->limits.max_file_bytes : cfg->limits.max_body_bytes;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    uint64_t n;
    if (cl && (fb_parse_u64(cl, 0, UINT64_MAX >> 1, &n) < 0 || n > r->cap))
        r->too_large = true;
    return r;
}

/* A piece of body: kept (JSON), passed on (streams) or dropped. */
static enum MHD_Result take_body(gw_req *r, const char *data, size_t n)
{
    if (r->too_large || r->received + n > r->cap) {
        r->too_large = true; /* keep reading and dropping; 413 at the end */
        if (r->rt && r->rt->body == GW_BODY_STREAM && r->stream_state)
            r->rt->stream->abort(r);
        return MHD_YES;
    }
    r->received += n;
    if (!r->rt || r->rt->body == GW_BODY_NONE)
        return MHD_YES;
    if (r->rt->body == GW_BODY_STREAM) {
        if (r->stream_state && !r->rt->stream->chunk(r, data, n))
            r->received = r->received; /* the error is kept for the end; drain the rest */
        return MHD_YES;
    }
    return gw_buf_add(&r->body, &r->len, &r->bufcap, data, n) < 0 ? MHD_NO : MHD_YES;
}

static enum MHD_Result dispatch(gw_req *r)
{
    const gw_route *rt = r->rt;
    if (r->too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
        return gw_send_error(r, 413, "too_large", msg);
    }
    if (rt->body == GW_BODY_STREAM)
        return rt->stream->end(r);
    if (rt->body == GW_BODY_JSON) {
        char msg[256];
        r->json = gw_body_json(r->body ? r->body : "", r->len, rt->fields, rt->body_required, msg, sizeof msg);
        if (!r->json)
            return gw_send_error(r, 400, "bad_request", msg);
    }
    return rt->fn(r);
}

/* With tls.client_ca, the client certificate before anything else (the
 * console's files included); a refusal is a 403 and an audit entry
 * (event tls).  false: answered. */
static bool client_certificate(gw_req *r, enum MHD_Result *rc)
{
    if (!r->g->mtls)
        return true;
    fb_ca_peer peer;
    char reason[400];
    fb_ca_verdict v = gw_mtls_check(r->g->mtls, r->conn, NULL, &peer, reason, sizeof reason);
    if (v == FB_CA_OK)
        return true;
    char line[480];
    snprintf(line, sizeof line, "%s: %s", fb_ca_verdict_name(v), reason);
    fb_core_audit(r->g->core, &r->caller, "tls", peer.name[0] ? peer.name : "-", "client_certificate", "denied",
                  line);
    fb_log("warn", r->caller.request_id, "client certificate refused",
           json_pack("{s:s, s:s, s:s}", "verdict", fb_ca_verdict_name(v), "reason", reason, "source_ip",
                     r->caller.source_ip));
    *rc = gw_send_error(r, 403, "client_certificate", line);
    return false;
}

/* A connection that closed without a request on the mutual-TLS listener. */
static void report_handshake(void *cls, struct MHD_Connection *conn, const char *reason)
{
    fb_gateway *g = cls;
    fb_caller caller;
    memset(&caller, 0, sizeof caller);
    gw_caller_init(&caller, conn);
    fb_core_audit(g->core, &caller, "tls", "-", "handshake", "denied", reason);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    fb_gateway *g = cls;
    gw_req *r = *con_cls;
    if (!r) {
        r = req_new(g, conn, method, url);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        enum MHD_Result crc = MHD_YES;
        if (!client_certificate(r, &crc))
            return crc;
        if (gw_console_path(url)) /* the console's static files (h_console.c) */
            return gw_console_serve(r, url);
        int found = r->rt ? 0 : gw_route_find(gw_route_defs(), gw_routes_count(), method, url, &r->params);
        enum MHD_Result rc = MHD_YES;
        gate(r, found, &rc);
        return rc;
    }
    r->conn = conn;
    r->method = method;
    if (r->answered) {
        *upload_data_size = 0; /* answered already: the body is dropped unread */
        return MHD_YES;
    }
    if (*upload_data_size) {
        enum MHD_Result rc = take_body(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc;
    }
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    fb_gateway *g = cls;
    gw_req *r = *con_cls;
    if (r) {
        if (r->stream_state && r->rt && r->rt->stream)
            r->rt->stream->abort(r); /* the body never arrived whole */
        if (r->caller.audit_inflight) /* never answered: its queued entry is still awaited */
            fb_core_audit_flush(g->core, &r->caller);
        fb_core_sandbox_put(g->core, r->ref);
        fb_core_task_put(g->core, r->task);
        json_decref(r->json);
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
}

/* ---- start-up and shutdown -------------------------------------------------------- */

int fb_gateway_run(const fb_config *cfg, const char *image_dir, fb_err *err)
{
    return fb_gateway_run_with(cfg, image_dir, NULL, err);
}

int fb_gateway_run_with(const fb_config *cfg, const char *image_dir, const fb_gateway_companion *comp, fb_err *err)
{
    fb_gateway g;
    memset(&g, 0, sizeof g);
    g.cfg = cfg;
    fb_log_set_level(fb_log_level_name(cfg->log_level));
    char *cert = NULL, *key = NULL;
    if (cfg->tls.cert && cfg->tls.key) {
        cert = gw_pem_read(cfg->tls.cert, err);
        key = cert ? gw_pem_read(cfg->tls.key, err) : NULL;
        if (!key) {
            free(cert);
            return -1;
        }
    }
    /* Signals are taken by sigwait on this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    g.sh.rl = gw_ratelimit_new((double)cfg->limits.rate_rps, (double)cfg->limits.rate_burst);
    g.sh.rl_user = gw_ratelimit_new(4.0 * (double)cfg->limits.rate_rps, 4.0 * (double)cfg->limits.rate_burst);
    /* Failed authentications per source: the same budget as one key. */
    g.sh.fails = gw_failgate_new((double)cfg->limits.rate_rps, (double)cfg->limits.rate_burst);
    g.mcp = fb_mcp_sessions_new();
    int rc = -1;
    if (!g.sh.rl || !g.sh.rl_user || !g.sh.fails || !g.mcp) {
        fb_fail(err, "out of memory");
        goto out;
    }
    if (fb_core_open(cfg, image_dir, &g.core, err) < 0)
        goto out;
    if (cfg->tls.client_ca &&
        gw_mtls_open(cfg->tls.client_ca, cfg->tls.client_crl, (unsigned)cfg->tls.client_roles, &g.mtls, err) < 0) {
        fb_core_close(g.core);
        goto out;
    }
    /* Mutual TLS is TLS 1.3 only: no renegotiation, the client's
     * certificate encrypted in the handshake. */
    gw_tls tls = {cert, key, NULL, NULL, NULL, NULL};
    if (g.mtls) {
        gw_mtls_set_reporter(g.mtls, report_handshake, &g);
        tls = (gw_tls){cert, key, gw_mtls_trust_pem(g.mtls), FB_CA_TLS_PRIORITY, gw_mtls_notify, g.mtls};
    }
    g.daemon = gw_listen_tls(cfg, cfg->listen, "listen", on_request, &g, on_completed, cert ? &tls : NULL, err);
    if (!g.daemon) {
        fb_core_close(g.core);
        goto out;
    }
    /* A companion listener shares the service and the rate limits. */
    g.sh.core = g.core;
    g.sh.cfg = cfg;
    g.sh.tls_cert = cert;
    g.sh.tls_key = key;
    void *cstate = NULL;
    if (comp && comp->start(&g.sh, &cstate, err) < 0) {
        MHD_stop_daemon(g.daemon);
        fb_core_close(g.core);
        goto out;
    }
    fb_core_audit(g.core, NULL, "config", "gateway", "start", "allowed", cfg->listen);
    char *dump = fb_config_dump_json(cfg);
    json_error_t je;
    json_t *cj = dump ? json_loads(dump, 0, &je) : NULL;
    free(dump);
    fb_log("info", NULL, "forgebox gateway listening",
           json_pack("{s:s, s:s, s:o}", "listen", cfg->listen, "org", fb_core_org(g.core), "config",
                     cj ? cj : json_null()));

    int sig = 0;
    sigwait(&sigs, &sig);
    fb_log("info", NULL, "shutting down", json_pack("{s:i}", "signal", sig));
    MHD_quiesce_daemon(g.daemon);
    if (comp)
        comp->quiesce(cstate);
    fb_core_shutdown_sandboxes(g.core, "gateway shutdown");
    MHD_stop_daemon(g.daemon);
    if (comp)
        comp->stop(cstate); /* puts back what it holds of the service */
    fb_core_shutdown_sandboxes(g.core, "gateway shutdown");
    fb_core_audit(g.core, NULL, "config", "gateway", "stop", "allowed", "signal");
    fb_core_close(g.core);
    rc = 0;
out:
    gw_ratelimit_free(g.sh.rl);
    gw_ratelimit_free(g.sh.rl_user);
    gw_failgate_free(g.sh.fails);
    fb_mcp_sessions_free(g.mcp);
    gw_mtls_free(g.mtls);
    gw_pem_free_secret(key);
    free(cert);
    return rc;
}
