/*
 * h_mcp.c - the MCP Streamable HTTP transport (gw.h, mcp.h):
 *
 *   POST   /mcp    one JSON-RPC message (a batch in a 2025-03-26 session);
 *                  the answer as one JSON body, or as one server-sent event
 *                  when the client accepts text/event-stream but not JSON;
 *                  202 with no body when nothing is to be answered
 *   DELETE /mcp    ends the Mcp-Session-Id session
 *   GET    /mcp    405: this server never sends anything unasked, so it
 *                  offers no server-initiated stream (the router answers)
 *
 * The gateway's pipeline authenticates the Bearer key first (401, rate
 * limits, audit); the route itself decides no permission (GW_RES_KEY):
 * each tool calls the service layer, which decides and audits the one it
 * needs.  Before anything else, the Origin header is checked (the
 * specification's DNS-rebinding defence): absent is fine (agents and
 * command-line clients send none); present, it must be this gateway's own
 * origin as its listen address and TLS setting give it (loopback names
 * included when it listens on loopback or on every address), else 403.
 *
 * Sessions: initialize (sent without Mcp-Session-Id) creates one, bound
 * to the key that sent it (to the user, for a caller authenticated
 * without a key), and answers with its id; every later POST must
 * carry it (400 without, 404 for an unknown, ended or expired one, or one
 * of another key).  MCP-Protocol-Version, when sent, must be a version
 * served (400).  Protocol errors that have no request to answer (bytes
 * that are not JSON, a missing session) are JSON-RPC errors with id null
 * in an HTTP error status, as the specification allows.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gateway/gw.h"

static const char *header(gw_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

/* Sends a JSON-RPC message (stolen) as JSON or as one SSE event. */
static enum MHD_Result send_rpc(gw_req *r, int status, json_t *msg, const char *session_id, bool sse)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!text)
        return gw_send_error(r, 503, "unavailable", "out of memory");
    char *body = text;
    if (sse && asprintf(&body, "event: message\ndata: %s\n\n", text) < 0)
        body = NULL;
    if (body != text)
        free(text);
    if (!body)
        return gw_send_error(r, 503, "unavailable", "out of memory");
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (session_id)
        MHD_add_response_header(resp, "Mcp-Session-Id", session_id);
    return gw_queue(r, status, resp, sse ? "text/event-stream" : "application/json");
}

static enum MHD_Result refuse(gw_req *r, int status, int code, const char *msg)
{
    return send_rpc(r, status, fb_mcp_error(NULL, code, "%s", msg), NULL, false);
}

/* ---- Origin ------------------------------------------------------------------------- */

static bool is_loopback_or_any(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 || strcmp(host, "0.0.0.0") == 0 ||
           strcmp(host, "::") == 0;
}

/* Whether origin is scheme://name[:port] for this gateway. */
static bool origin_matches(const char *origin, const char *scheme, const char *name, uint16_t port)
{
    char want[320];
    snprintf(want, sizeof want, "%s://%s:%u", scheme, name, (unsigned)port);
    if (strcasecmp(origin, want) == 0)
        return true;
    /* The default port is left out of an origin. */
    bool dflt = (port == 80 && strcmp(scheme, "http") == 0) || (port == 443 && strcmp(scheme, "https") == 0);
    snprintf(want, sizeof want, "%s://%s", scheme, name);
    return dflt && strcasecmp(origin, want) == 0;
}

static bool own_origin(const fb_config *cfg, const char *origin)
{
    char host[256], name[264];
    uint16_t port;
    fb_err err = {{0}};
    if (fb_config_listen_split(cfg->listen, host, sizeof host, &port, &err) < 0)
        return false;
    const char *scheme = cfg->tls.cert ? "https" : "http";
    snprintf(name, sizeof name, strchr(host, ':') ? "[%s]" : "%s", host);
    if (origin_matches(origin, scheme, name, port))
        return true;
    if (!is_loopback_or_any(host))
        return false;
    static const char *const local[] = {"localhost", "127.0.0.1", "[::1]"};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
        if (origin_matches(origin, scheme, local[i], port))
            return true;
    return false;
}

static bool screen_origin(gw_req *r, enum MHD_Result *rc)
{
    const char *origin = header(r, "Origin");
    if (!origin || own_origin(r->g->cfg, origin))
        return true;
    fb_log("warn", r->caller.request_id, "MCP request from a foreign origin refused",
           json_pack("{s:s, s:s%}", "ip", r->caller.source_ip, "origin", origin, strnlen(origin, 200)));
    *rc = refuse(r, 403, FB_MCP_SERVER_ERROR, "Forbidden: the Origin is not this gateway's");
    return false;
}

/* ---- POST ---------------------------------------------------------------------------- */

/* Whom a session belongs to: the API key, or (a caller authenticated
 * without one) the user. */
static const char *owner_of(gw_req *r, char *buf, size_t cap)
{
    if (r->caller.who.key_id[0])
        return r->caller.who.key_id;
    snprintf(buf, cap, "user:%s", r->caller.who.user_id);
    return buf;
}

/* Whether the client has hung up while its request runs (its request is
 * complete, so a readable end of stream can only mean it left). */
static bool conn_gone(void *arg)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(arg, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p = {.fd = info ? info->connect_fd : -1, .events = POLLRDHUP};
    return info && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* JSON if the client takes it (or says nothing), else SSE; false: neither. */
static bool answer_kind(gw_req *r, bool *sse)
{
    const char *a = header(r, "Accept");
    bool json = !a || strstr(a, "application/json") || strstr(a, "*/*") || strstr(a, "application/*");
    *sse = !json && strstr(a, "text/event-stream");
    return json || *sse;
}

static enum MHD_Result mcp_post(gw_req *r)
{
    bool sse = false;
    if (!answer_kind(r, &sse))
        return refuse(r, 406, FB_MCP_SERVER_ERROR,
                      "Not Acceptable: the client must accept application/json or text/event-stream");
    const char *pv = header(r, "MCP-Protocol-Version");
    if (pv && !fb_mcp_version_known(pv))
        return refuse(r, 400, FB_MCP_SERVER_ERROR,
                      "Bad Request: unsupported MCP-Protocol-Version (supported: 2025-11-25, 2025-06-18, "
                      "2025-03-26, 2024-11-05)");
    const char *sid = header(r, "Mcp-Session-Id");
    char buf[96];
    const char *owner = owner_of(r, buf, sizeof buf);
    fb_mcp_ctx ctx = {.core = r->g->core, .caller = &r->caller, .gone = conn_gone, .gone_arg = r->conn};
    if (sid && !fb_mcp_session_get(r->g->mcp, sid, owner, ctx.version))
        return refuse(r, 404, FB_MCP_SESSION_NOT_FOUND, "Session not found: start a new one with initialize");
    json_t *bad = NULL;
    json_t *msg = fb_mcp_parse(r->body ? r->body : "", r->len, sid && fb_mcp_version_batches(ctx.version), &bad);
    if (!msg)
        return send_rpc(r, 400, bad, NULL, false);
    if (!sid && !fb_mcp_is_initialize(msg)) {
        json_decref(msg);
        return refuse(r, 400, FB_MCP_SERVER_ERROR,
                      "Bad Request: Mcp-Session-Id header is required (send initialize first)");
    }
    json_t *reply = fb_mcp_answer(&ctx, msg);
    json_decref(msg);
    char created[FB_MCP_SESSION_ID_MAX] = "";
    if (!sid && ctx.version[0] &&
        fb_mcp_session_create(r->g->mcp, owner, r->caller.who.user_id, ctx.version, created) < 0) {
        json_decref(reply);
        return refuse(r, 503, FB_MCP_SERVER_ERROR,
                      "Service Unavailable: too many MCP sessions; end unused ones with DELETE /mcp");
    }
    if (created[0])
        fb_core_audit(r->g->core, &r->caller, "mcp", "session", "start", "allowed", ctx.version);
    if (!reply)
        return gw_send_raw(r, 202, NULL, NULL, 0, MHD_RESPMEM_PERSISTENT);
    return send_rpc(r, 200, reply, created[0] ? created : NULL, sse);
}

static enum MHD_Result mcp_delete(gw_req *r)
{
    const char *sid = header(r, "Mcp-Session-Id");
    if (!sid)
        return refuse(r, 400, FB_MCP_SERVER_ERROR, "Bad Request: Mcp-Session-Id header is required");
    char buf[96];
    if (!fb_mcp_session_end(r->g->mcp, sid, owner_of(r, buf, sizeof buf)))
        return refuse(r, 404, FB_MCP_SESSION_NOT_FOUND, "Session not found");
    fb_core_audit(r->g->core, &r->caller, "mcp", "session", "end", "allowed", "DELETE /mcp");
    return gw_send_raw(r, 204, NULL, NULL, 0, MHD_RESPMEM_PERSISTENT);
}

const gw_route gw_routes_mcp[] = {
    {.def = {"POST", "/mcp"}, .resolve = GW_RES_KEY, .body = GW_BODY_RAW, .fn = mcp_post, .screen = screen_origin},
    {.def = {"DELETE", "/mcp"}, .resolve = GW_RES_KEY, .fn = mcp_delete, .screen = screen_origin},
    {.def = {NULL, NULL}},
};
