/*
 * server.c - libmicrohttpd glue and the request pipeline (gateway.h, gw.h).
 *
 * Everything that can be decided from the request line and the headers is
 * decided before a single byte of body is read: the route, the caller,
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

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include "gateway/gw.h"

static void client_ip(struct MHD_Connection *conn, char *out, size_t cap)
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

/* Authentication and the rate limits.  false: answered. */
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
    const char *why = "";
    fb_core_err err = {0};
    if (fb_core_authenticate(g->core, &r->caller, h, hlen, &why, &err) < 0) {
        /* Failures are audited, but a source (an address, an IPv6 /64)
         * that keeps failing is slowed down first, and so is everybody
         * at once beyond a global budget: nobody can flood the log (and
         * the disk) without a key.  Beyond the budget: 429, a log line. */
        int wait = gw_failgate_take(g->fails, r->caller.source_ip);
        if (wait > 0) {
            fb_log("warn", r->caller.request_id, "authentication failures rate-limited",
                   json_pack("{s:s, s:s}", "ip", r->caller.source_ip, "reason", why));
            *rc = gw_send_429(r, wait, "too many failed authentications from this address");
            return false;
        }
        fb_core_audit_auth(g->core, &r->caller, r->rt->def.pattern,
                           err.code == FB_CORE_INTERNAL ? "error" : "denied", why);
        *rc = gw_send_core_error(r, &err);
        return false;
    }
    /* One bucket per key, and a wider one per user, so that minting more
     * keys does not buy more requests. */
    char ukey[80];
    snprintf(ukey, sizeof ukey, "user:%s", r->caller.who.user_id);
    int wait = gw_ratelimit_take(g->rl, r->caller.who.key_id);
    if (wait == 0)
        wait = gw_ratelimit_take(g->rl_user, ukey);
    if (wait > 0) {
        *rc = gw_send_429(r, wait, "too many requests for this key");
        return false;
    }
    if (fb_core_audit_auth(g->core, &r->caller, r->rt->def.pattern, "allowed", "api key") < 0) {
        *rc = gw_send_error(r, 503, "unavailable", "the audit log cannot be written; refusing to act unaudited");
        return false;
    }
    return true;
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
    case GW_RES_SELF:
        return true;
    case GW_RES_TEAM:
        ok = fb_core_permit(core, &r->caller, rt->perm, rt->resource, r->caller.who.team_id, &err);
        break;
    case GW_RES_PARAM:
        ok = fb_core_permit(core, &r->caller, rt->perm, r->params.v[0], r->caller.who.team_id, &err);
        break;
    case GW_RES_ADMIN:
        ok = fb_core_permit_admin(core, &r->caller, rt->perm, rt->resource, rt->what, &err);
        break;
    case GW_RES_SANDBOX:
        ok = fb_core_sandbox_open(core, &r->caller, r->params.v[0], rt->perm, &r->ref, &err);
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
    if (rt->resolve != GW_RES_PUBLIC && !authenticate(r, rc))
        return false;
    if (!authorise(r, rc))
        return false;
    if (rt->body != GW_BODY_NONE && has_body(r)) {
        const char *want = rt->body == GW_BODY_JSON ? GW_MEDIA_JSON : GW_MEDIA_OCTETS;
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
    uint8_t b[8];
    char hex[17];
    fb_random_bytes(b, sizeof b);
    fb_hex(b, sizeof b, hex);
    snprintf(r->caller.request_id, sizeof r->caller.request_id, "req_%s", hex);
    client_ip(conn, r->caller.source_ip, sizeof r->caller.source_ip);
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
    if (r->len + n + 1 > r->bufcap) {
        size_t ncap = r->bufcap ? r->bufcap : 4096;
        while (ncap < r->len + n + 1)
            ncap *= 2;
        char *nb = realloc(r->body, ncap);
        if (!nb)
            return MHD_NO;
        r->body = nb;
        r->bufcap = ncap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return MHD_YES;
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
        fb_core_sandbox_put(g->core, r->ref);
        fb_core_task_put(g->core, r->task);
        json_decref(r->json);
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
}

/* ---- start-up and shutdown -------------------------------------------------------- */

static char *read_small_file(const char *path, fb_err *err)
{
    char *buf = malloc(1 << 20);
    if (!buf || fb_read_file(path, buf, 1 << 20, err) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int listen_addr(const fb_config *cfg, struct sockaddr_storage *ss, uint16_t *port, bool *v6, fb_err *err)
{
    char host[256];
    if (fb_config_listen_split(cfg->listen, host, sizeof host, port, err) < 0)
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
        return fb_fail(err, "config: listen: \"%s\" is not an IP address", host);
    }
    return 0;
}

static struct MHD_Daemon *start_daemon(fb_gateway *g, const struct sockaddr_storage *ss, uint16_t port, bool v6,
                                       const char *cert, const char *key)
{
    const fb_config *cfg = g->cfg;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0) | (cert ? MHD_USE_TLS : 0);
    size_t mem_limit = (size_t)cfg->limits.max_header_bytes + 32 * 1024;
    /* One address can hold at most a quarter of the connections: a single
     * slow client (slowloris) cannot take them all. */
    unsigned per_ip = (unsigned)(cfg->limits.max_connections / 4 > 4 ? cfg->limits.max_connections / 4 : 4);
    struct MHD_OptionItem tls[] = {
        {cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)key},
        {MHD_OPTION_END, 0, NULL},
    };
    return MHD_start_daemon(flags, port, NULL, NULL, on_request, g, MHD_OPTION_SOCK_ADDR, ss,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem_limit, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)cfg->limits.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->limits.request_timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
}

static void free_secret_text(char *key)
{
    if (key)
        sodium_memzero(key, strlen(key));
    free(key);
}

int fb_gateway_run(const fb_config *cfg, const char *image_dir, fb_err *err)
{
    fb_gateway g;
    memset(&g, 0, sizeof g);
    g.cfg = cfg;
    fb_log_set_level(fb_log_level_name(cfg->log_level));
    struct sockaddr_storage ss;
    uint16_t port;
    bool v6;
    if (listen_addr(cfg, &ss, &port, &v6, err) < 0)
        return -1;
    char *cert = NULL, *key = NULL;
    if (cfg->tls.cert && cfg->tls.key) {
        cert = read_small_file(cfg->tls.cert, err);
        key = cert ? read_small_file(cfg->tls.key, err) : NULL;
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

    g.rl = gw_ratelimit_new((double)cfg->limits.rate_rps, (double)cfg->limits.rate_burst);
    g.rl_user = gw_ratelimit_new(4.0 * (double)cfg->limits.rate_rps, 4.0 * (double)cfg->limits.rate_burst);
    /* Failed authentications per source: the same budget as one key. */
    g.fails = gw_failgate_new((double)cfg->limits.rate_rps, (double)cfg->limits.rate_burst);
    int rc = -1;
    if (!g.rl || !g.rl_user || !g.fails) {
        fb_fail(err, "out of memory");
        goto out;
    }
    if (fb_core_open(cfg, image_dir, &g.core, err) < 0)
        goto out;
    g.daemon = start_daemon(&g, &ss, port, v6, cert, key);
    if (!g.daemon) {
        fb_fail(err, "cannot listen on %s (in use, or not an address of this host?)", cfg->listen);
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
    fb_core_shutdown_sandboxes(g.core, "gateway shutdown");
    MHD_stop_daemon(g.daemon);
    fb_core_shutdown_sandboxes(g.core, "gateway shutdown");
    fb_core_audit(g.core, NULL, "config", "gateway", "stop", "allowed", "signal");
    fb_core_close(g.core);
    rc = 0;
out:
    gw_ratelimit_free(g.rl);
    gw_ratelimit_free(g.rl_user);
    gw_failgate_free(g.fails);
    free_secret_text(key);
    free(cert);
    return rc;
}
