/*
 * server.c - the node's internal API, /node/v1 (docs/node-api.md), over
 * libmicrohttpd with mutual TLS (internal.h): the pipeline every request
 * goes through, the answers, the mutual-TLS screen.  The routes are
 * h_sandboxes.c, h_execs.c and h_files.c (http.h).
 *
 * Every request is decided in this order, before a byte of its body is
 * read: the client's certificate (a gateway's, from the organisation CA,
 * not revoked: gateway/mtls.h; a refusal is a 403 and a `node.tls` audit
 * entry), the route, the method, the ids in the path, the declared size.
 * Then the body: JSON capped at 1 MiB, stdin bytes written to the exec's
 * pipe as they arrive (1 MiB a call), a file streamed through a pipe into
 * fb_file_put (limits.max_file_bytes).  Exec events go out as chunked
 * NDJSON read from the exec's log at the pace the gateway takes them.
 *
 * The node trusts its gateways for who may do what; it checks the shape
 * of everything itself.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "gateway/listener.h"
#include "gateway/ratelimit.h"
#include "node/http.h"

/* ---- answers ------------------------------------------------------------------------- */

static int status_of(fb_errc c)
{
    switch (c) {
    case FB_E_BAD_REQUEST:
    case FB_E_BAD_PATH:
        return 400;
    case FB_E_NOT_FOUND:
        return 404;
    case FB_E_STATE:
    case FB_E_BUSY:
    case FB_E_EXISTS:
        return 409;
    case FB_E_TOO_LARGE:
        return 413;
    case FB_E_KILLED:
    case FB_E_SANDBOX_ENDED:
    case FB_E_UNRESPONSIVE:
    case FB_E_PROTOCOL:
    case FB_E_AGENT_FATAL:
        return 410;
    case FB_E_NO_SPACE:
        return 507;
    default:
        return 500;
    }
}

enum MHD_Result nh_queue(nreq *r, int status, struct MHD_Response *resp, const char *type)
{
    r->answered = true;
    fb_log(status >= 500 ? "error" : "info", r->caller.request_id, "node request",
           json_pack("{s:s, s:i, s:i, s:s}", "method", r->method, "route", r->route, "status", status, "ip",
                     r->caller.source_ip));
    return gw_queue_with(r->conn, status, resp, type, r->caller.request_id);
}

enum MHD_Result nh_json(nreq *r, int status, json_t *body /* stolen */)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    return nh_queue(r, status, resp, "application/json");
}

enum MHD_Result nh_error(nreq *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
enum MHD_Result nh_error(nreq *r, int status, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg);
    return nh_json(r, status, json_pack("{s:{s:s, s:o}}", "error", "code", code, "message", m ? m : json_string("")));
}

enum MHD_Result nh_errc(nreq *r, fb_errc c, const char *msg)
{
    return nh_error(r, status_of(c), fb_errc_name(c), "%s", msg);
}

enum MHD_Result nh_empty(nreq *r, int status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    return nh_queue(r, status, resp, NULL);
}

const char *nh_query(nreq *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* ---- routing ------------------------------------------------------------------------- */

/* Splits the path after /node/v1/ into at most 6 segments.  -1: not ours. */
static int segments(const char *url, char seg[6][NODE_SB_ID_MAX + 1], size_t *n)
{
    static const char prefix[] = "/node/v1/";
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return -1;
    const char *p = url + sizeof prefix - 1;
    *n = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || len > NODE_SB_ID_MAX || *n >= 6)
            return -1;
        memcpy(seg[*n], p, len);
        seg[*n][len] = '\0';
        (*n)++;
        p += len;
        if (*p == '/')
            p++;
        if (slash && !*p)
            return -1; /* a trailing slash */
    }
    return 0;
}

bool nh_method_is(const nreq *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

/* The route and whether the method fits: 0 ok, 404, 405 or 400 (bad id). */
static int route(nreq *r, const char *url)
{
    char seg[6][NODE_SB_ID_MAX + 1];
    size_t n = 0;
    if (segments(url, seg, &n) < 0 || n == 0)
        return 404;
    const char *allowed = NULL;
    if (n == 1 && strcmp(seg[0], "healthz") == 0) {
        r->route = R_HEALTHZ;
        allowed = "GET";
    } else if (strcmp(seg[0], "sandboxes") != 0) {
        return 404;
    } else if (n == 1) {
        r->route = R_SANDBOXES;
        allowed = "GET POST";
    } else {
        if (!node_valid_sb_id(seg[1]))
            return 400;
        memcpy(r->sid, seg[1], strlen(seg[1]) + 1); /* valid: shorter than NODE_SB_ID_MAX */
        if (n == 2) {
            r->route = R_SANDBOX;
            allowed = "GET PATCH DELETE";
        } else if (n == 3 && strcmp(seg[2], "files") == 0) {
            r->route = R_FILES;
            allowed = "GET PUT";
        } else if (n == 3 && strcmp(seg[2], "execs") == 0) {
            r->route = R_EXECS;
            allowed = "POST";
        } else if (n == 5 && strcmp(seg[2], "execs") == 0) {
            if (fb_parse_u64(seg[3], 0, UINT64_MAX, &r->exec) < 0)
                return 404;
            if (strcmp(seg[4], "events") == 0) {
                r->route = R_EVENTS;
                allowed = "GET";
            } else if (strcmp(seg[4], "stdin") == 0) {
                r->route = R_STDIN;
                allowed = "POST";
            } else if (strcmp(seg[4], "signal") == 0) {
                r->route = R_SIGNAL;
                allowed = "POST";
            } else {
                return 404;
            }
        } else {
            return 404;
        }
    }
    /* The method, as a whole word of the allowed list. */
    size_t ml = strlen(r->method);
    for (const char *p = allowed; (p = strstr(p, r->method)) != NULL; p += ml)
        if ((p == allowed || p[-1] == ' ') && (p[ml] == '\0' || p[ml] == ' '))
            return 0;
    return 405;
}

/* ---- mutual TLS ---------------------------------------------------------------------- */

/* false: refused (answered and audited). */
static bool client_certificate(nreq *r, enum MHD_Result *rc)
{
    fb_ca_peer peer;
    memset(&peer, 0, sizeof peer);
    char reason[400];
    /* A chain accepted before under the same CA and CRL files (a
     * kept-alive gateway) is not verified again: verdicts.h. */
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    nv_pending pend;
    if (nv_check(r->n->verdicts, ci ? ci->tls_session : NULL, NULL, &peer, &pend) && peer.role == FB_CA_ROLE_GATEWAY) {
        gw_mtls_mark(r->conn);
        snprintf(r->actor, sizeof r->actor, "gateway:%s", peer.name);
        return true;
    }
    fb_ca_verdict v = gw_mtls_check(r->n->mtls, r->conn, NULL, &peer, reason, sizeof reason);
    if (v == FB_CA_OK) {
        nv_put(r->n->verdicts, &pend, &peer);
        snprintf(r->actor, sizeof r->actor, "gateway:%s", peer.name);
        return true;
    }
    char line[480], actor[96];
    snprintf(line, sizeof line, "%s: %s", fb_ca_verdict_name(v), reason);
    snprintf(actor, sizeof actor, "%s", peer.name[0] ? peer.name : "anonymous");
    /* Strangers may not write the shared chain at will: each source (and
     * everybody together) has a budget of audited refusals; beyond it a
     * refusal is only logged. */
    bool audited = gw_failgate_take(r->n->failgate, r->caller.source_ip) == 0;
    if (audited)
        node_audit(r->n, "node.tls", actor, r->n->name, "client_certificate", "denied", line, r->caller.source_ip,
                   r->caller.request_id);
    fb_log("warn", r->caller.request_id, "client certificate refused",
           json_pack("{s:s, s:s, s:s, s:b}", "verdict", fb_ca_verdict_name(v), "reason", reason, "source_ip",
                     r->caller.source_ip, "audited", audited));
    *rc = nh_error(r, 403, "forbidden", "%s", line);
    return false;
}

static void report_handshake(void *cls, struct MHD_Connection *conn, const char *reason)
{
    fb_node *n = cls;
    fb_caller caller;
    memset(&caller, 0, sizeof caller);
    gw_caller_init(&caller, conn);
    char line[480];
    snprintf(line, sizeof line, "handshake: %s", reason);
    if (gw_failgate_take(n->failgate, caller.source_ip) == 0)
        node_audit(n, "node.tls", "anonymous", n->name, "handshake", "denied", line, caller.source_ip,
                   caller.request_id);
    else
        fb_log("warn", caller.request_id, "handshake refused (not audited: over the source's budget)",
               json_pack("{s:s}", "source_ip", caller.source_ip));
}

/* ---- JSON helpers ---------------------------------------------------------------------- */

/* An optional unsigned field in [min,max] (def when absent).  false: bad. */
bool nh_get_u64(json_t *o, const char *key, uint64_t def, uint64_t min, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    uint64_t x = (uint64_t)json_integer_value(v);
    if (x < min || x > max)
        return false;
    *out = x;
    return true;
}

const char *nh_get_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Only the keys listed (NULL-terminated).  false: names the stray one. */
static bool only_keys(json_t *o, const char *const *keys, const char **stray)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool ok = false;
        for (const char *const *p = keys; *p && !ok; p++)
            ok = strcmp(*p, k) == 0;
        if (!ok) {
            *stray = k;
            return false;
        }
    }
    (void)v;
    return true;
}

json_t *nh_body_json(nreq *r, const char *const *keys, enum MHD_Result *rc)
{
    json_error_t je;
    json_t *o = json_loadb(r->buf ? r->buf : "", r->len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        *rc = nh_error(r, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    const char *stray = NULL;
    if (!only_keys(o, keys, &stray)) {
        *rc = nh_error(r, 400, "bad_request", "unknown field \"%.64s\"", stray);
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- the pipeline -------------------------------------------------------------------------- */

static bool json_content_type(nreq *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    if (!ct)
        return r->len == 0;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Everything the headers decide.  Answers (and returns) on refusal. */
static enum MHD_Result begin(nreq *r, const char *url)
{
    enum MHD_Result rc = MHD_YES;
    if (!client_certificate(r, &rc))
        return rc;
    int found = route(r, url);
    if (found == 404)
        return nh_error(r, 404, "not_found", "no such path");
    if (found == 400)
        return nh_error(r, 400, "bad_request", "a sandbox id is 1-63 of A-Z a-z 0-9 _ -, starting with a letter");
    if (found == 405)
        return nh_error(r, 405, "bad_request", "method not allowed on this path");
    if (r->n->stopping)
        return nh_error(r, 503, "unavailable", "the node is shutting down");
    bool post_like = nh_method_is(r, "POST") || nh_method_is(r, "PATCH") || nh_method_is(r, "PUT");
    r->body = !post_like ? B_NONE : r->route == R_STDIN ? B_STDIN : r->route == R_FILES ? B_FILE : B_JSON;
    r->cap = r->body == B_FILE ? r->n->cfg->limits.max_file_bytes : r->body == B_STDIN ? NODE_STDIN_MAX : NODE_BODY_MAX;
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    uint64_t declared = 0;
    if (cl && fb_parse_u64(cl, 0, UINT64_MAX >> 1, &declared) < 0)
        return nh_error(r, 400, "bad_request", "a bad Content-Length");
    if (declared > r->cap || (r->body == B_NONE && declared > 0 && !nh_method_is(r, "DELETE")))
        return nh_error(r, 413, "too_large", "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
    if (r->body == B_STDIN)
        return nh_stdin_begin(r);
    if (r->body == B_FILE)
        return nh_put_begin(r);
    return MHD_YES;
}

static enum MHD_Result take(nreq *r, const char *data, size_t n)
{
    if (r->too_large || r->received + n > r->cap) {
        r->too_large = true; /* dropped; 413 at the end */
        nh_put_cut(r);
        return MHD_YES;
    }
    r->received += n;
    switch (r->body) {
    case B_JSON:
        return gw_buf_add(&r->buf, &r->len, &r->bcap, data, n) < 0 ? MHD_NO : MHD_YES;
    case B_STDIN:
        if (!r->stdin_failed && !nh_stdin_write(r, data, n))
            r->stdin_failed = true;
        return MHD_YES;
    case B_FILE:
        nh_put_chunk(r, data, n);
        return MHD_YES;
    case B_NONE:
        return MHD_YES;
    }
    return MHD_YES;
}

static enum MHD_Result dispatch(nreq *r)
{
    if (r->too_large) {
        nh_upload_finish(r);
        return nh_error(r, 413, "too_large", "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
    }
    if (r->body == B_JSON && !json_content_type(r))
        return nh_error(r, 400, "bad_request", "this path takes application/json bodies");
    switch (r->route) {
    case R_HEALTHZ:
        return nh_healthz(r);
    case R_SANDBOXES:
        return nh_method_is(r, "POST") ? nh_create(r) : nh_list(r);
    case R_SANDBOX:
        return nh_method_is(r, "GET") ? nh_get(r) : nh_method_is(r, "PATCH") ? nh_patch(r) : nh_delete(r);
    case R_EXECS:
        return nh_exec(r);
    case R_EVENTS:
        return nh_events(r);
    case R_STDIN:
        return nh_stdin_end(r);
    case R_SIGNAL:
        return nh_signal(r);
    case R_FILES:
        return nh_method_is(r, "PUT") ? nh_put_end(r) : nh_files_get(r);
    }
    return nh_error(r, 404, "not_found", "no such path");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    fb_node *n = cls;
    nreq *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->n = n;
        r->conn = conn;
        r->method = method;
        r->route = -1;
        gw_caller_init(&r->caller, conn);
        *con_cls = r;
        return begin(r, url);
    }
    r->conn = conn;
    if (r->answered) {
        *upload_data_size = 0; /* answered already: the body is dropped unread */
        return MHD_YES;
    }
    if (*upload_data_size) {
        enum MHD_Result rc = take(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc;
    }
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    fb_node *n = cls;
    nreq *r = *con_cls;
    if (r) {
        nh_upload_finish(r); /* a body that never arrived whole */
        free(r->up);
        node_exec_put(n, r->e);
        node_sb_put(n, r->s);
        free(r->buf);
        free(r);
    }
    *con_cls = NULL;
}

int node_server_start(fb_node *n, const char *cert_pem, const char *key_pem, fb_err *err)
{
    n->failgate = gw_failgate_new((double)n->cfg->limits.rate_rps, (double)n->cfg->limits.rate_burst);
    if (!n->failgate)
        return fb_fail(err, "out of memory");
    gw_mtls_set_reporter(n->mtls, report_handshake, n);
    gw_tls tls = {cert_pem, key_pem, gw_mtls_trust_pem(n->mtls), FB_CA_TLS_PRIORITY, gw_mtls_notify, n->mtls};
    n->daemon = gw_listen_tls(n->cfg, n->opt->listen, "--listen", on_request, n, on_completed, &tls, err);
    return n->daemon ? 0 : -1;
}

void node_server_quiesce(fb_node *n)
{
    if (n->daemon)
        MHD_quiesce_daemon(n->daemon);
}

void node_server_stop(fb_node *n)
{
    if (n->daemon)
        MHD_stop_daemon(n->daemon);
    n->daemon = NULL;
    gw_failgate_free(n->failgate);
    n->failgate = NULL;
}
