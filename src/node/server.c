/*
 * server.c - the node's internal API, /node/v1 (docs/node-api.md), over
 * libmicrohttpd with mutual TLS (internal.h).
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
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "core/core.h"
#include "gateway/listener.h"
#include "gateway/ratelimit.h"
#include "node/internal.h"
#include "store/sandboxes.h"

enum route {
    R_HEALTHZ,
    R_SANDBOXES,     /* GET list, POST create */
    R_SANDBOX,       /* GET, PATCH, DELETE */
    R_EXECS,         /* POST */
    R_EVENTS,        /* GET */
    R_STDIN,         /* POST */
    R_SIGNAL,        /* POST */
    R_FILES,         /* PUT, GET */
};

enum body { B_NONE, B_JSON, B_STDIN, B_FILE };

typedef struct upload {
    int wfd, rfd;
    pthread_t thread;
    bool started;
    fb_sandbox *sb;
    char path[4097];
    unsigned mode;
    uint64_t size;
    bool write_failed;
    fb_errc code;
    fb_err ferr;
} upload;

typedef struct nreq {
    fb_node *n;
    struct MHD_Connection *conn;
    const char *method;
    int route;
    char sid[NODE_SB_ID_MAX];
    uint64_t exec;
    fb_caller caller;        /* request id and source address */
    char actor[96];          /* "gateway:NAME" */
    bool answered;
    enum body body;
    uint64_t cap, received;
    bool too_large;
    char *buf;
    size_t len, bcap;
    node_sb *s;              /* held while the request runs */
    node_exec *e;
    bool stdin_failed;
    fb_errc stdin_code;
    upload *up;
} nreq;

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

static enum MHD_Result queue(nreq *r, int status, struct MHD_Response *resp, const char *type)
{
    r->answered = true;
    fb_log(status >= 500 ? "error" : "info", r->caller.request_id, "node request",
           json_pack("{s:s, s:i, s:i, s:s}", "method", r->method, "route", r->route, "status", status, "ip",
                     r->caller.source_ip));
    return gw_queue_with(r->conn, status, resp, type, r->caller.request_id);
}

static enum MHD_Result send_json(nreq *r, int status, json_t *body /* stolen */)
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
    return queue(r, status, resp, "application/json");
}

static enum MHD_Result send_error(nreq *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(nreq *r, int status, const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg);
    return send_json(r, status, json_pack("{s:{s:s, s:o}}", "error", "code", code, "message", m ? m : json_string("")));
}

static enum MHD_Result send_errc(nreq *r, fb_errc c, const char *msg)
{
    return send_error(r, status_of(c), fb_errc_name(c), "%s", msg);
}

static enum MHD_Result send_empty(nreq *r, int status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    return queue(r, status, resp, NULL);
}

static const char *query(nreq *r, const char *name)
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

static bool method_is(const nreq *r, const char *m)
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
    fb_ca_verdict v = gw_mtls_check(r->n->mtls, r->conn, NULL, &peer, reason, sizeof reason);
    if (v == FB_CA_OK) {
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
    *rc = send_error(r, 403, "forbidden", "%s", line);
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
static bool get_u64(json_t *o, const char *key, uint64_t def, uint64_t min, uint64_t max, uint64_t *out)
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

static const char *get_str(json_t *o, const char *key)
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

static json_t *body_json(nreq *r, const char *const *keys, enum MHD_Result *rc)
{
    json_error_t je;
    json_t *o = json_loadb(r->buf ? r->buf : "", r->len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        json_decref(o);
        *rc = send_error(r, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    const char *stray = NULL;
    if (!only_keys(o, keys, &stray)) {
        *rc = send_error(r, 400, "bad_request", "unknown field \"%.64s\"", stray);
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- sandboxes ------------------------------------------------------------------------- */

static json_t *sandbox_json(fb_node *n, node_sb *s)
{
    pthread_mutex_lock(&n->lock);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", s->id, "isolation", s->isolation, "created_at",
                          s->created_at, "expires_at", s->expires_at, "node", n->name);
    pthread_mutex_unlock(&n->lock);
    fb_errc st = s->sb ? fb_sandbox_state(s->sb) : FB_E_STATE;
    json_object_set_new(o, "state", json_string(st == FB_OK ? "running" : "ended"));
    if (st != FB_OK)
        json_object_set_new(o, "error", json_string(fb_errc_name(st)));
    return o;
}

static enum MHD_Result h_healthz(nreq *r)
{
    fb_node *n = r->n;
    return send_json(r, 200,
                     json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:I, s:I, s:I}}", "status", "ok", "node", "id", n->id,
                               "name", n->name, "backend", fb_backend_name(n->backend), "isolation", n->isolation,
                               "capacity", (json_int_t)n->capacity, "live", (json_int_t)node_sb_count(n),
                               "memory_mib", (json_int_t)n->memory_mib));
}

static enum MHD_Result h_list(nreq *r)
{
    fb_node *n = r->n;
    node_sb **held = NULL;
    size_t k = 0;
    pthread_mutex_lock(&n->lock);
    held = n->count ? calloc(n->count, sizeof *held) : NULL;
    for (node_sb *s = n->sbs; s && held && k < n->count; s = s->next)
        if (s->sb) {
            s->refs++;
            held[k++] = s;
        }
    pthread_mutex_unlock(&n->lock);
    json_t *arr = json_array();
    for (size_t i = 0; i < k; i++) {
        json_array_append_new(arr, sandbox_json(n, held[i]));
        node_sb_put(n, held[i]);
    }
    free(held);
    return send_json(r, 200, json_pack("{s:o}", "sandboxes", arr));
}

static fb_sandbox *boot(fb_node *n, const fb_sandbox_config *sc, fb_err *err)
{
    fb_sandbox *sb = n->pool ? fb_pool_take(n->pool, sc) : NULL;
    if (sb)
        return sb;
    if (fb_sandbox_create(sc, &sb, err) < 0)
        return NULL;
    return sb;
}

static enum MHD_Result h_create(nreq *r)
{
    static const char *const keys[] = {"id", "team_id", "backend", "memory_mib", "vcpus", "disk_mib",
                                       "max_output", "expires_at", NULL};
    fb_node *n = r->n;
    const fb_config *cfg = n->cfg;
    enum MHD_Result rc;
    json_t *o = body_json(r, keys, &rc);
    if (!o)
        return rc;
    const char *id = get_str(o, "id"), *team = get_str(o, "team_id"), *backend = get_str(o, "backend");
    const char *expires_text = get_str(o, "expires_at");
    fb_sandbox_config sc;
    fb_sandbox_config_defaults(&sc);
    sc.backend = n->backend;
    uint64_t min_mem = n->backend == FB_BACKEND_VM ? FB_MIN_VM_MEMORY_MIB : FB_MIN_MEMORY_MIB;
    struct timespec expires, now;
    clock_gettime(CLOCK_REALTIME, &now);
    const char *bad = NULL;
    if (!node_valid_sb_id(id))
        bad = "\"id\" must be 1-63 of A-Z a-z 0-9 _ -, starting with a letter";
    else if (!team || !team[0] || strlen(team) >= FB_ID_MAX)
        bad = "\"team_id\" is required";
    else if (backend && strcmp(backend, fb_backend_name(n->backend)) != 0)
        bad = "this node does not run that backend";
    else if (!get_u64(o, "memory_mib", cfg->sandbox.memory_mib, min_mem, cfg->sandbox.max_memory_mib, &sc.memory_mib))
        bad = "\"memory_mib\" is outside this node's limits";
    else if (!get_u64(o, "vcpus", cfg->sandbox.vcpus, 1, cfg->sandbox.max_vcpus, &sc.vcpus))
        bad = "\"vcpus\" is outside this node's limits";
    else if (!get_u64(o, "disk_mib", cfg->sandbox.disk_mib, 1, FB_MAX_DISK_MIB, &sc.disk_mib))
        bad = "\"disk_mib\" is outside this node's limits";
    else if (!get_u64(o, "max_output", cfg->limits.max_output_bytes, 1, cfg->limits.max_output_bytes,
                      &sc.max_output))
        bad = "\"max_output\" is outside this node's limits";
    else if (!expires_text || fb_time_parse(expires_text, &expires) < 0)
        bad = "\"expires_at\" must be an RFC 3339 time";
    else if (fb_time_cmp(&expires, &now) <= 0)
        bad = "\"expires_at\" is in the past";
    if (bad) {
        rc = send_error(r, 400, "bad_request", "%s", bad);
        json_decref(o);
        return rc;
    }
    sc.image_dir = n->opt->image_dir;
    sc.state_dir = cfg->state_dir;
    sc.run_dir = cfg->run_dir;
    char sid[NODE_SB_ID_MAX], team_id[FB_ID_MAX];
    snprintf(sid, sizeof sid, "%s", id);
    snprintf(team_id, sizeof team_id, "%s", team);
    json_decref(o);

    node_sb *s = NULL;
    fb_errc got = node_sb_reserve(n, sid, team_id, &s);
    if (got == FB_E_EXISTS)
        return send_error(r, 409, "exists", "this node already runs %s", sid);
    if (got == FB_E_BUSY) {
        char why[160];
        snprintf(why, sizeof why, "the node runs %llu sandboxes, its capacity", (unsigned long long)n->capacity);
        node_audit(n, "node", r->actor, sid, "create", "denied", why, r->caller.source_ip, r->caller.request_id);
        return send_error(r, 503, "capacity", "%s", why);
    }
    if (got != FB_OK)
        return send_error(r, 503, "unavailable", "the node is shutting down");
    s->memory_mib = sc.memory_mib;
    s->vcpus = sc.vcpus;
    /* The gateway reserved the record for this node: it must be there. */
    fb_sandbox_row row;
    fb_err err = {{0}};
    int st = fb_store_sandbox_get(n->st, sid, &row, &err);
    const char *refuse = NULL;
    int rstatus = 409;
    if (st == FB_STORE_ENOTFOUND) {
        refuse = "no record of this sandbox in the store";
        rstatus = 404;
    } else if (st < 0) {
        refuse = "the store cannot be read";
        rstatus = 503;
    } else if (strcmp(row.node_id, n->id) != 0) {
        refuse = "the sandbox's record belongs to another node";
    } else if (strcmp(row.state, "creating") != 0) {
        refuse = "the sandbox's record is not \"creating\"";
    } else if (strcmp(row.team_id, team_id) != 0) {
        refuse = "the sandbox's record names another team";
    } else if (strcmp(row.backend, fb_backend_name(n->backend)) != 0) {
        refuse = "the sandbox's record is for another backend";
    }
    if (refuse) {
        node_sb_remove(n, s);
        node_sb_put(n, s);
        if (st < 0 && st != FB_STORE_ENOTFOUND)
            fb_log("error", r->caller.request_id, "cannot read a sandbox record", json_pack("{s:s}", "error", err.msg));
        return send_error(r, rstatus, rstatus == 404 ? "not_found" : rstatus == 503 ? "unavailable" : "bad_state",
                          "%s", refuse);
    }
    fb_sandbox *sb = boot(n, &sc, &err);
    if (!sb) {
        node_sb_remove(n, s);
        node_sb_put(n, s);
        node_record_state(n, sid, "failed", r->caller.request_id);
        node_audit(n, "node", r->actor, sid, "create", "error", err.msg, r->caller.source_ip, r->caller.request_id);
        return send_error(r, 500, "setup_failed", "the sandbox could not be started: %s", err.msg);
    }
    struct timespec created = fb_time_now_ts();
    char created_at[FB_TIME_MAX], expires_at[FB_TIME_MAX];
    fb_time_format(&created, created_at);
    fb_time_format(&expires, expires_at);
    node_sb_activate(n, s, sb, created_at, expires_at, &expires);
    int set = fb_store_sandbox_set_state(n->st, sid, "running", &err);
    pthread_mutex_lock(&n->lock);
    bool gone = s->gone;
    pthread_mutex_unlock(&n->lock);
    if (set < 0 || gone) {
        /* Lost meanwhile (the node was declared down), or unrecordable. */
        node_sb_remove(n, s);
        node_sb_put(n, s);
        if (set < 0 && set != FB_STORE_ECONFLICT)
            node_record_state(n, sid, "failed", r->caller.request_id);
        return send_error(r, 503, "unavailable", "the sandbox could not be recorded as running%s%s",
                          set < 0 ? ": " : "", set < 0 ? err.msg : "");
    }
    json_t *out = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", sid, "isolation", s->isolation, "created_at",
                            created_at, "expires_at", expires_at, "node", n->name);
    node_sb_put(n, s);
    return send_json(r, 201, out);
}

/* The sandbox of the path, held in r->s.  false: answered 404. */
static bool open_sandbox(nreq *r, enum MHD_Result *rc)
{
    r->s = node_sb_get(r->n, r->sid);
    if (!r->s) {
        *rc = send_error(r, 404, "not_found", "this node does not run %s", r->sid);
        return false;
    }
    return true;
}

static enum MHD_Result h_get(nreq *r)
{
    enum MHD_Result rc;
    if (!open_sandbox(r, &rc))
        return rc;
    return send_json(r, 200, sandbox_json(r->n, r->s));
}

static enum MHD_Result h_patch(nreq *r)
{
    static const char *const keys[] = {"expires_at", NULL};
    enum MHD_Result rc;
    json_t *o = body_json(r, keys, &rc);
    if (!o)
        return rc;
    struct timespec t;
    const char *text = get_str(o, "expires_at");
    bool ok = text && fb_time_parse(text, &t) == 0;
    json_decref(o);
    if (!ok)
        return send_error(r, 400, "bad_request", "\"expires_at\" must be an RFC 3339 time");
    if (!open_sandbox(r, &rc))
        return rc;
    fb_node *n = r->n;
    pthread_mutex_lock(&n->lock);
    r->s->expires = t;
    fb_time_format(&t, r->s->expires_at);
    pthread_cond_broadcast(&n->wake);
    pthread_mutex_unlock(&n->lock);
    return send_json(r, 200, sandbox_json(n, r->s));
}

static enum MHD_Result h_delete(nreq *r)
{
    enum MHD_Result rc;
    if (!open_sandbox(r, &rc))
        return rc;
    node_sb *s = r->s;
    r->s = NULL;
    bool removed = node_sb_remove(r->n, s);
    node_sb_put(r->n, s); /* destroyed here unless a transfer still holds it */
    if (!removed)
        return send_error(r, 404, "not_found", "this node does not run %s", r->sid);
    node_record_state(r->n, r->sid, "destroyed", r->caller.request_id);
    return send_empty(r, 204);
}

/* ---- execs ------------------------------------------------------------------------------ */

static enum MHD_Result h_exec(nreq *r)
{
    static const char *const keys[] = {"argv", "env", "cwd", "timeout_ms", "max_output", "stdin", NULL};
    enum MHD_Result rc;
    json_t *o = body_json(r, keys, &rc);
    if (!o)
        return rc;
    json_t *jargv = json_object_get(o, "argv"), *jenv = json_object_get(o, "env");
    json_t *jstdin = json_object_get(o, "stdin");
    const char *cwd = get_str(o, "cwd");
    size_t argc = json_is_array(jargv) ? json_array_size(jargv) : 0;
    size_t nenv = json_is_array(jenv) ? json_array_size(jenv) : 0;
    fb_exec_req req;
    memset(&req, 0, sizeof req);
    const char *bad = NULL;
    if (argc == 0 || argc > 4096)
        bad = "\"argv\" must be an array of 1 to 4096 strings";
    else if (jenv && !json_is_null(jenv) && (!json_is_array(jenv) || nenv > 1024))
        bad = "\"env\" must be an array of at most 1024 [name, value] pairs";
    else if (json_object_get(o, "cwd") && !json_is_null(json_object_get(o, "cwd")) && (!cwd || strlen(cwd) > 4096))
        bad = "\"cwd\" must be a path";
    else if (jstdin && !json_is_boolean(jstdin))
        bad = "\"stdin\" must be a boolean";
    else if (!get_u64(o, "timeout_ms", 60000, 1, FB_MAX_TIMEOUT_MS, &req.timeout_ms))
        bad = "\"timeout_ms\" is out of range";
    else if (!get_u64(o, "max_output", 0, 0, r->n->cfg->limits.max_output_bytes, &req.max_output))
        bad = "\"max_output\" is outside this node's limits";
    const char **argv = bad ? NULL : calloc(argc + 1, sizeof *argv);
    fb_env_var *env = bad || !nenv ? NULL : calloc(nenv, sizeof *env);
    if (!bad && (!argv || (nenv && !env)))
        bad = "out of memory";
    for (size_t i = 0; !bad && i < argc; i++)
        if (!(argv[i] = json_string_value(json_array_get(jargv, i))))
            bad = "\"argv\" must be an array of strings";
    for (size_t i = 0; !bad && i < nenv; i++) {
        json_t *p = json_array_get(jenv, i);
        env[i].key = json_string_value(json_array_get(p, 0));
        env[i].value = json_string_value(json_array_get(p, 1));
        if (!json_is_array(p) || json_array_size(p) != 2 || !env[i].key || !env[i].value)
            bad = "\"env\" must be an array of [name, value] string pairs";
    }
    if (bad) {
        free(argv);
        free(env);
        json_decref(o);
        return send_error(r, 400, "bad_request", "%s", bad);
    }
    if (!open_sandbox(r, &rc)) {
        free(argv);
        free(env);
        json_decref(o);
        return rc;
    }
    int p[2] = {-1, -1};
    bool want_stdin = json_is_true(jstdin);
    if (want_stdin && pipe2(p, O_CLOEXEC) < 0) {
        free(argv);
        free(env);
        json_decref(o);
        return send_error(r, 503, "unavailable", "cannot make the stdin pipe");
    }
    req.argv = argv;
    req.envv = env;
    req.nenv = nenv;
    req.cwd = cwd;
    req.stdin_fd = p[0];
    fb_exec *x = NULL;
    fb_err err = {{0}};
    fb_errc c = fb_exec_start(r->s->sb, &req, &x, &err);
    if (p[0] >= 0)
        close(p[0]); /* fb_exec_start took its own copy */
    free(argv);
    free(env);
    json_decref(o);
    if (c != FB_OK) {
        if (p[1] >= 0)
            close(p[1]);
        return send_errc(r, c, err.msg);
    }
    if (p[1] >= 0)
        fb_set_nonblock(p[1], true);
    node_exec *e = NULL;
    c = node_exec_add(r->n, r->s, x, p[1], &e);
    if (c != FB_OK) {
        fb_exec_cancel(x);
        fb_exec_unref(x);
        if (p[1] >= 0)
            close(p[1]);
        return send_errc(r, c, "this sandbox keeps too many execs that have not ended");
    }
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)e->id);
    node_exec_put(r->n, e);
    return send_json(r, 201, json_pack("{s:s}", "exec", id));
}

/* The exec of the path, held in r->e (and its sandbox in r->s). */
static bool open_exec(nreq *r, enum MHD_Result *rc)
{
    if (!open_sandbox(r, rc))
        return false;
    r->e = node_exec_get(r->n, r->s, r->exec);
    if (!r->e) {
        *rc = send_error(r, 404, "not_found", "no exec %llu in %s", (unsigned long long)r->exec, r->sid);
        return false;
    }
    return true;
}

typedef struct ev_stream {
    fb_exec *x;
    uint64_t pos;
    unsigned quiet_s;
    bool ended;
    char *buf;
    size_t blen, boff;
} ev_stream;

static json_t *result_json(const fb_exec_result *res)
{
    json_t *m = json_string(res->message);
    return json_pack("{s:i, s:i, s:b, s:b, s:b, s:I, s:b, s:s, s:o}", "exit_code", res->exit_code, "signal",
                     res->signal, "timed_out", res->timed_out, "oom", res->oom, "truncated", res->truncated,
                     "duration_ms", (json_int_t)res->duration_ms, "started", res->started, "error", res->error,
                     "message", m ? m : json_string(""));
}

/* One event as a line of NDJSON (malloc'd), or NULL. */
static char *event_line(const fb_exec_event *ev, size_t *len)
{
    json_t *o = NULL;
    switch (ev->kind) {
    case FB_EXEC_EV_STDOUT:
    case FB_EXEC_EV_STDERR: {
        size_t cap = sodium_base64_encoded_len(ev->len, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = malloc(cap);
        if (!b64)
            return NULL;
        sodium_bin2base64(b64, cap, ev->data, ev->len, sodium_base64_VARIANT_ORIGINAL);
        o = json_pack("{s:s, s:I, s:I, s:s}", "kind", ev->kind == FB_EXEC_EV_STDOUT ? "stdout" : "stderr", "pos",
                      (json_int_t)ev->pos, "next", (json_int_t)ev->next, "data", b64);
        free(b64);
        break;
    }
    case FB_EXEC_EV_DROPPED:
        o = json_pack("{s:s, s:I, s:I, s:I}", "kind", "dropped", "pos", (json_int_t)ev->pos, "next",
                      (json_int_t)ev->next, "dropped", (json_int_t)ev->dropped);
        break;
    case FB_EXEC_EV_EXIT:
        o = json_pack("{s:s, s:I, s:I, s:I, s:o}", "kind", "exit", "pos", (json_int_t)ev->pos, "next",
                      (json_int_t)ev->next, "dropped", (json_int_t)ev->dropped, "result", result_json(&ev->result));
        break;
    case FB_EXEC_EV_ERROR: {
        json_t *m = json_string(ev->message);
        o = json_pack("{s:s, s:I, s:I, s:s, s:o}", "kind", "error", "pos", (json_int_t)ev->pos, "next",
                      (json_int_t)ev->next, "code", fb_errc_name(ev->code), "message", m ? m : json_string(""));
        break;
    }
    }
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    *len = n + 1;
    return line;
}

static ssize_t ev_read(void *cls, uint64_t off, char *out, size_t max)
{
    (void)off;
    ev_stream *st = cls;
    while (st->boff == st->blen) {
        free(st->buf);
        st->buf = NULL;
        st->blen = st->boff = 0;
        if (st->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        fb_exec_event ev;
        int got = fb_exec_next(st->x, st->pos, &ev, 1000);
        if (got < 0) {
            st->ended = true;
            continue;
        }
        if (got == 0) {
            if (++st->quiet_s >= NODE_KEEPALIVE_S) {
                st->quiet_s = 0;
                static const char ka[] = "{\"kind\":\"keepalive\"}\n";
                st->buf = strdup(ka);
                if (!st->buf)
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                st->blen = sizeof ka - 1;
            }
            continue;
        }
        st->quiet_s = 0;
        st->buf = event_line(&ev, &st->blen);
        st->pos = ev.next;
        if (ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR)
            st->ended = true;
        fb_exec_event_clear(&ev);
        if (!st->buf)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t k = st->blen - st->boff < max ? st->blen - st->boff : max;
    memcpy(out, st->buf + st->boff, k);
    st->boff += k;
    return (ssize_t)k;
}

static void ev_free(void *cls)
{
    ev_stream *st = cls;
    fb_exec_unref(st->x);
    free(st->buf);
    free(st);
}

static enum MHD_Result h_events(nreq *r)
{
    uint64_t from = 0;
    const char *f = query(r, "from");
    if (f && fb_parse_u64(f, 0, UINT64_MAX >> 1, &from) < 0)
        return send_error(r, 400, "bad_request", "\"from\" must be a position");
    enum MHD_Result rc;
    if (!open_exec(r, &rc))
        return rc;
    fb_exec_event ev;
    int got = fb_exec_next(r->e->x, from, &ev, 0);
    if (got == 1)
        fb_exec_event_clear(&ev);
    if (got < 0)
        return send_error(r, 404, "not_found", "position %llu is past the exec's events", (unsigned long long)from);
    ev_stream *st = calloc(1, sizeof *st);
    if (!st)
        return send_error(r, 503, "unavailable", "out of memory");
    st->x = fb_exec_ref(r->e->x);
    st->pos = from;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, ev_read, st, ev_free);
    if (!resp) {
        ev_free(st);
        return MHD_NO;
    }
    return queue(r, 200, resp, "application/x-ndjson");
}

static const struct {
    const char *name;
    int sig;
} signals[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
               {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}};

static enum MHD_Result h_signal(nreq *r)
{
    static const char *const keys[] = {"signal", NULL};
    enum MHD_Result rc;
    json_t *o = body_json(r, keys, &rc);
    if (!o)
        return rc;
    const char *name = get_str(o, "signal");
    int sig = 0;
    for (size_t i = 0; name && i < sizeof signals / sizeof signals[0]; i++)
        if (strcmp(signals[i].name, name) == 0)
            sig = signals[i].sig;
    json_decref(o);
    if (!sig)
        return send_error(r, 400, "bad_request", "\"signal\" must be one of HUP INT QUIT KILL USR1 USR2 TERM CONT STOP TSTP");
    if (!open_exec(r, &rc))
        return rc;
    fb_err err = {{0}};
    fb_errc c = fb_exec_signal(r->e->x, sig, &err);
    if (c != FB_OK)
        return send_errc(r, c, err.msg);
    return send_empty(r, 204);
}

/* stdin: decided from the headers, then written as the body arrives. */
static enum MHD_Result stdin_begin(nreq *r)
{
    enum MHD_Result rc;
    if (!open_exec(r, &rc))
        return rc;
    pthread_mutex_lock(&r->e->in_lock);
    bool open = r->e->in_fd >= 0;
    pthread_mutex_unlock(&r->e->in_lock);
    if (!open)
        return send_error(r, 409, "bad_state",
                          r->e->had_stdin ? "the exec's stdin is closed" : "the exec has no stdin pipe");
    return MHD_YES;
}

/* Writes all of data to the pipe, waiting at most the request timeout for
 * a command that does not read.  false: closed, or never read. */
static bool stdin_write(nreq *r, const char *data, size_t n)
{
    node_exec *e = r->e;
    int timeout_ms = (int)(r->n->cfg->limits.request_timeout_s * 1000);
    pthread_mutex_lock(&e->in_lock);
    bool ok = e->in_fd >= 0;
    while (ok && n) {
        ssize_t w = write(e->in_fd, data, n);
        if (w > 0) {
            data += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {e->in_fd, POLLOUT, 0};
            int p = poll(&pfd, 1, timeout_ms);
            if (p > 0 && !(pfd.revents & (POLLERR | POLLHUP)))
                continue;
            if (p == 0)
                r->stdin_code = FB_E_BUSY;
        }
        ok = false;
    }
    pthread_mutex_unlock(&e->in_lock);
    return ok;
}

static enum MHD_Result stdin_end(nreq *r)
{
    if (r->stdin_failed)
        return send_error(r, 409, r->stdin_code == FB_E_BUSY ? "busy" : "bad_state",
                          r->stdin_code == FB_E_BUSY ? "the command does not read its stdin"
                                                     : "the exec's stdin is closed (the command ended?)");
    const char *close_q = query(r, "close");
    if (close_q && strcmp(close_q, "0") != 0) {
        pthread_mutex_lock(&r->e->in_lock);
        if (r->e->in_fd >= 0)
            close(r->e->in_fd);
        r->e->in_fd = -1;
        pthread_mutex_unlock(&r->e->in_lock);
    }
    return send_empty(r, 204);
}

/* ---- files ------------------------------------------------------------------------------- */

/* A path under /workspace or /tmp, without "..", "." or empty parts. */
static const char *check_path(const char *p)
{
    if (!p || !p[0])
        return "the \"path\" query parameter is required";
    size_t n = strlen(p);
    if (n > 4096)
        return "\"path\" is too long";
    json_t *s = json_string(p);
    if (!s)
        return "\"path\" is not valid UTF-8";
    json_decref(s);
    if (!(strncmp(p, "/workspace/", 11) == 0 || strncmp(p, "/tmp/", 5) == 0))
        return "\"path\" must be a file under /workspace or /tmp";
    for (const char *c = p + 1; *c;) {
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return "\"path\" may not contain empty, \".\" or \"..\" parts";
        c += len;
        if (*c == '/')
            c++;
    }
    return NULL;
}

static void *upload_main(void *arg)
{
    upload *u = arg;
    u->code = fb_file_put(u->sb, u->path, u->rfd, u->mode, &u->ferr);
    close(u->rfd); /* whatever is left unread is refused: the writer gets EPIPE */
    u->rfd = -1;
    return NULL;
}

static void upload_finish(nreq *r)
{
    upload *u = r->up;
    if (!u)
        return;
    if (u->wfd >= 0)
        close(u->wfd);
    u->wfd = -1;
    if (u->started)
        pthread_join(u->thread, NULL);
    if (u->rfd >= 0)
        close(u->rfd);
    u->rfd = -1;
    u->started = false;
}

static enum MHD_Result put_begin(nreq *r)
{
    const char *path = query(r, "path");
    const char *bad = check_path(path);
    if (bad)
        return send_error(r, 400, "bad_path", "%s", bad);
    uint64_t mode = 0644;
    const char *m = query(r, "mode");
    if (m) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(m, &end, 8);
        if (!m[0] || *end || errno || v > 0777)
            return send_error(r, 400, "bad_request", "\"mode\" must be octal, at most 0777");
        mode = v;
    }
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (!cl)
        return send_error(r, 400, "bad_request", "an upload needs a Content-Length");
    enum MHD_Result rc;
    if (!open_sandbox(r, &rc))
        return rc;
    upload *u = calloc(1, sizeof *u);
    int p[2];
    if (!u || pipe2(p, O_CLOEXEC) < 0) {
        free(u);
        return send_error(r, 503, "unavailable", "cannot stage the file");
    }
    u->rfd = p[0];
    u->wfd = p[1];
    u->sb = r->s->sb;
    u->mode = (unsigned)mode;
    snprintf(u->path, sizeof u->path, "%s", path);
    r->up = u;
    if (pthread_create(&u->thread, NULL, upload_main, u) != 0)
        return send_error(r, 503, "unavailable", "cannot start the transfer");
    u->started = true;
    return MHD_YES;
}

static void put_chunk(nreq *r, const char *data, size_t n)
{
    upload *u = r->up;
    if (u->wfd < 0)
        return;
    if (fb_write_all(u->wfd, data, n) < 0) {
        close(u->wfd);
        u->wfd = -1;
        u->write_failed = true;
        return;
    }
    u->size += n;
}

static enum MHD_Result put_end(nreq *r)
{
    upload *u = r->up;
    upload_finish(r);
    if (u->code != FB_OK)
        return send_errc(r, u->code, u->ferr.msg);
    if (u->write_failed)
        return send_error(r, 500, "io_error", "the sandbox stopped taking the file");
    return send_json(r, 201, json_pack("{s:s, s:I}", "path", u->path, "size", (json_int_t)u->size));
}

/* A download: a thread copies the file into a pipe (fb_file_get), the
 * response reads the other end as the gateway takes it, so memory stays a
 * pipe's worth whatever the size.  The answer's status waits for the
 * first byte or the end: a refusal (missing, too large - decided from the
 * size the agent reports before any byte) is still an error answer. */
typedef struct download {
    fb_node *n;
    node_sb *s;              /* held until the copy ended */
    int rfd, wfd;
    pthread_t thread;
    bool joined;
    char path[4097];
    uint64_t max;
    fb_errc code;
    fb_err ferr;
} download;

static void *download_main(void *arg)
{
    download *d = arg;
    d->code = fb_file_get(d->s->sb, d->path, d->wfd, d->max, &d->ferr);
    close(d->wfd); /* the reader sees the end */
    d->wfd = -1;
    return NULL;
}

static void download_join(download *d)
{
    if (!d->joined)
        pthread_join(d->thread, NULL);
    d->joined = true;
}

static void download_free(void *cls)
{
    download *d = cls;
    if (d->rfd >= 0)
        close(d->rfd); /* a copy still running gets EPIPE and stops */
    d->rfd = -1;
    download_join(d);
    node_sb_put(d->n, d->s);
    free(d);
}

static ssize_t download_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    download *d = cls;
    for (;;) {
        ssize_t k = read(d->rfd, out, max);
        if (k > 0)
            return k;
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        download_join(d);
        /* A copy that failed half-way cuts the response short: the
         * gateway sees a broken body, never a truncated file as whole. */
        return d->code == FB_OK ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static enum MHD_Result h_files_get(nreq *r)
{
    const char *path = query(r, "path");
    const char *bad = check_path(path);
    if (bad)
        return send_error(r, 400, "bad_path", "%s", bad);
    uint64_t max = r->n->cfg->limits.max_file_bytes;
    const char *mq = query(r, "max");
    if (mq && fb_parse_u64(mq, 0, UINT64_MAX >> 1, &max) < 0)
        return send_error(r, 400, "bad_request", "\"max\" must be a byte count");
    if (max > r->n->cfg->limits.max_file_bytes)
        max = r->n->cfg->limits.max_file_bytes;
    enum MHD_Result rc;
    if (!open_sandbox(r, &rc))
        return rc;
    download *d = calloc(1, sizeof *d);
    int p[2];
    if (!d || pipe2(p, O_CLOEXEC) < 0) {
        free(d);
        return send_error(r, 503, "unavailable", "cannot stage the file");
    }
    d->n = r->n;
    d->s = r->s; /* the download holds the request's reference from here */
    r->s = NULL;
    d->rfd = p[0];
    d->wfd = p[1];
    d->max = max;
    snprintf(d->path, sizeof d->path, "%s", path);
    if (pthread_create(&d->thread, NULL, download_main, d) != 0) {
        close(d->wfd);
        d->joined = true;
        download_free(d);
        return send_error(r, 503, "unavailable", "cannot start the transfer");
    }
    struct pollfd pfd = {d->rfd, POLLIN, 0};
    int ready;
    do
        ready = poll(&pfd, 1, (int)(r->n->cfg->limits.request_timeout_s * 1000));
    while (ready < 0 && errno == EINTR);
    int avail = 0;
    if (ready > 0 && ioctl(d->rfd, FIONREAD, &avail) == 0 && avail == 0) {
        /* The end before any byte: an empty file, or a refusal. */
        download_join(d);
        if (d->code != FB_OK) {
            rc = send_errc(r, d->code, d->ferr.msg);
            download_free(d);
            return rc;
        }
    } else if (ready <= 0) {
        download_free(d);
        return send_error(r, 503, "unavailable", "the sandbox did not start sending the file");
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, download_read, d,
                                                                  download_free);
    if (!resp) {
        download_free(d);
        return MHD_NO;
    }
    return queue(r, 200, resp, "application/octet-stream");
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
        return send_error(r, 404, "not_found", "no such path");
    if (found == 400)
        return send_error(r, 400, "bad_request", "a sandbox id is 1-63 of A-Z a-z 0-9 _ -, starting with a letter");
    if (found == 405)
        return send_error(r, 405, "bad_request", "method not allowed on this path");
    if (r->n->stopping)
        return send_error(r, 503, "unavailable", "the node is shutting down");
    bool post_like = method_is(r, "POST") || method_is(r, "PATCH") || method_is(r, "PUT");
    r->body = !post_like ? B_NONE : r->route == R_STDIN ? B_STDIN : r->route == R_FILES ? B_FILE : B_JSON;
    r->cap = r->body == B_FILE ? r->n->cfg->limits.max_file_bytes : r->body == B_STDIN ? NODE_STDIN_MAX : NODE_BODY_MAX;
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    uint64_t declared = 0;
    if (cl && fb_parse_u64(cl, 0, UINT64_MAX >> 1, &declared) < 0)
        return send_error(r, 400, "bad_request", "a bad Content-Length");
    if (declared > r->cap || (r->body == B_NONE && declared > 0 && !method_is(r, "DELETE")))
        return send_error(r, 413, "too_large", "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
    if (r->body == B_STDIN)
        return stdin_begin(r);
    if (r->body == B_FILE)
        return put_begin(r);
    return MHD_YES;
}

static enum MHD_Result take(nreq *r, const char *data, size_t n)
{
    if (r->too_large || r->received + n > r->cap) {
        r->too_large = true; /* dropped; 413 at the end */
        if (r->up && r->up->wfd >= 0) {
            close(r->up->wfd);
            r->up->wfd = -1;
        }
        return MHD_YES;
    }
    r->received += n;
    switch (r->body) {
    case B_JSON:
        return gw_buf_add(&r->buf, &r->len, &r->bcap, data, n) < 0 ? MHD_NO : MHD_YES;
    case B_STDIN:
        if (!r->stdin_failed && !stdin_write(r, data, n))
            r->stdin_failed = true;
        return MHD_YES;
    case B_FILE:
        put_chunk(r, data, n);
        return MHD_YES;
    case B_NONE:
        return MHD_YES;
    }
    return MHD_YES;
}

static enum MHD_Result dispatch(nreq *r)
{
    if (r->too_large) {
        upload_finish(r);
        return send_error(r, 413, "too_large", "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
    }
    if (r->body == B_JSON && !json_content_type(r))
        return send_error(r, 400, "bad_request", "this path takes application/json bodies");
    switch (r->route) {
    case R_HEALTHZ:
        return h_healthz(r);
    case R_SANDBOXES:
        return method_is(r, "POST") ? h_create(r) : h_list(r);
    case R_SANDBOX:
        return method_is(r, "GET") ? h_get(r) : method_is(r, "PATCH") ? h_patch(r) : h_delete(r);
    case R_EXECS:
        return h_exec(r);
    case R_EVENTS:
        return h_events(r);
    case R_STDIN:
        return stdin_end(r);
    case R_SIGNAL:
        return h_signal(r);
    case R_FILES:
        return method_is(r, "PUT") ? put_end(r) : h_files_get(r);
    }
    return send_error(r, 404, "not_found", "no such path");
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
        upload_finish(r); /* a body that never arrived whole */
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
