/*
 * gateway.c - the HTTP server, routing, authentication, authorisation and
 * the route handlers (gateway.h, gw.h).
 *
 * Every request goes through the same steps, in this order, each of which
 * can end it: size caps (413), routing (404/405), authentication (401),
 * rate limit (429), permission (403, or 404 for another team's resource),
 * body validation (400), the handler.  Authentication results and every
 * permission decision are audited with the request id and source address;
 * handlers audit what they did.  No response, log line or audit entry ever
 * carries a key, a password or a hash: the one exception is the body of
 * POST /v1/keys, which shows a new key once.
 */
#define _GNU_SOURCE
#include "gateway/gateway.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "gateway/gw.h"
#include "policy/policy.h"
#include "store/sandboxes.h"
#include "store/store.h"

struct fb_gateway {
    const fb_config *cfg;
    const char *image_dir;
    fb_store *store;
    gw_registry reg;
    gw_ratelimit *rl;       /* per API key */
    gw_ratelimit *rl_user;  /* per user, across their keys */
    gw_ratelimit *rl_fail;  /* failed authentications per source address */
    struct MHD_Daemon *daemon;
    pthread_t reaper;
    volatile sig_atomic_t stopping;
};

typedef struct req {
    char id[32];
    char ip[64];
    char *body;
    size_t len;
    size_t cap;
    bool too_large;
    const char *route;   /* pattern, for metrics */
} req;

typedef struct ctx {
    fb_gateway *g;
    struct MHD_Connection *conn;
    req *r;
    const char *method;
    const char *url;
    const char *params[2]; /* {id} values */
    fb_principal who;
    char actor[64];
} ctx;

/* ---- time and ids --------------------------------------------------------- */

static void rfc3339(time_t t, char *out, size_t cap)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void new_id(const char *prefix, char *out, size_t cap)
{
    uint8_t b[8];
    fb_random_bytes(b, sizeof b);
    char hex[17];
    fb_hex(b, sizeof b, hex);
    snprintf(out, cap, "%s%s", prefix, hex);
}

/* ---- responses ------------------------------------------------------------- */

/* Every answer is counted and logged once, with its request id. */
static void note_response(const req *r, const char *method, int status)
{
    const char *route = r->route ? r->route : "unmatched";
    gw_metrics_request(route, status);
    gw_log(status >= 500 ? "error" : "info", r->id, "request",
           json_pack("{s:s, s:s, s:i, s:s}", "method", method, "route", route, "status", status, "ip", r->ip));
}

static enum MHD_Result send_raw(ctx *c, int status, const char *type, void *data, size_t len,
                                enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, mode);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", type);
    MHD_add_response_header(resp, "X-Request-Id", c->r->id);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response(c->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    note_response(c->r, c->method, status);
    return rc;
}

static enum MHD_Result send_json(ctx *c, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    /* One trailing newline makes curl output readable; cheap. */
    char *withnl = realloc(text, n + 2);
    if (withnl) {
        withnl[n] = '\n';
        withnl[n + 1] = '\0';
        text = withnl;
        n++;
    }
    return send_raw(c, status, "application/json", text, n, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result send_error(ctx *c, int status, const char *code, const char *msg)
{
    json_t *m = json_string(msg);
    json_t *body = json_pack("{s:{s:s, s:o}}", "error", "code", code, "message",
                             m ? m : json_string("(message not valid UTF-8)"));
    return send_json(c, status, body);
}

/* ---- audit ---------------------------------------------------------------- */

/* 0, or -1 when the entry could not be written (callers that are about to
 * allow something refuse instead: no unaudited decisions). */
static int audit(ctx *c, const char *event, const char *resource, const char *action,
                 const char *outcome, const char *reason)
{
    fb_audit_event ev = {
        .event = event,
        .actor = c->actor[0] ? c->actor : "anonymous",
        .resource = resource ? resource : "",
        .action = action,
        .outcome = outcome,
        .reason = reason ? reason : "",
        .source_ip = c->r->ip,
        .request_id = c->r->id,
    };
    fb_err err = {{0}};
    if (fb_audit_append(c->g->store, &ev, &err) < 0) {
        gw_log("error", c->r->id, "audit append failed", json_pack("{s:s}", "error", err.msg));
        return -1;
    }
    return 0;
}

static void audit_system(fb_gateway *g, const char *event, const char *resource, const char *action,
                         const char *outcome, const char *reason)
{
    fb_audit_event ev = {.event = event, .actor = "system", .resource = resource ? resource : "",
                         .action = action, .outcome = outcome, .reason = reason ? reason : "",
                         .source_ip = "", .request_id = ""};
    fb_err err = {{0}};
    if (fb_audit_append(g->store, &ev, &err) < 0)
        gw_log("error", NULL, "audit append failed", json_pack("{s:s}", "error", err.msg));
}

/* ---- permission check: decide, audit, answer ------------------------------ */

/* Returns true if allowed; otherwise has queued the 403/404 response. */
static bool permit(ctx *c, fb_perm perm, const char *resource, const char *resource_team,
                   enum MHD_Result *rc)
{
    fb_decision d;
    fb_verdict v = fb_policy_decide(&c->who, perm, resource_team, &d);
    char action[96];
    snprintf(action, sizeof action, "%s %s", c->method, c->r->route);
    int logged = audit(c, "permission", resource, action, v == FB_ALLOW ? "allowed" : "denied", d.reason);
    if (v == FB_ALLOW && logged < 0) {
        *rc = send_error(c, 503, "unavailable", "the audit log cannot be written; refusing to act unaudited");
        return false;
    }
    if (v == FB_ALLOW)
        return true;
    if (v == FB_NOT_FOUND)
        *rc = send_error(c, 404, "not_found", "no such resource");
    else
        *rc = send_error(c, 403, "forbidden", d.reason);
    return false;
}

/* ---- body parsing ---------------------------------------------------------- */

/* Parses the body as a JSON object with only the given fields.  On failure
 * queues a 400 and returns NULL. */
static json_t *json_body(ctx *c, const char *const *fields, bool required, enum MHD_Result *rc)
{
    if (c->r->len == 0 && !required)
        return json_object();
    if (c->r->len == 0) {
        *rc = send_error(c, 400, "bad_request", "a JSON object body is required");
        return NULL;
    }
    if (memchr(c->r->body, '\0', c->r->len)) {
        *rc = send_error(c, 400, "bad_request", "the body contains a NUL byte");
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(c->r->body, c->r->len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        char msg[256];
        snprintf(msg, sizeof msg, "malformed JSON: %s (line %d)", je.text, je.line);
        *rc = send_error(c, 400, "bad_request", msg);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *rc = send_error(c, 400, "bad_request", "the body must be a JSON object");
        return NULL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        bool ok = false;
        for (const char *const *f = fields; *f; f++)
            ok |= strcmp(*f, k) == 0;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown field \"%.64s\"", k);
            json_decref(j);
            *rc = send_error(c, 400, "bad_request", msg);
            return NULL;
        }
    }
    return j;
}

/* Reads an optional integer field in [min, max]; *ok=false and a 400 queued
 * on a wrong type or range. */
static uint64_t int_field(ctx *c, json_t *j, const char *name, uint64_t def, uint64_t min, uint64_t max,
                          bool *ok, enum MHD_Result *rc)
{
    json_t *v = json_object_get(j, name);
    if (!*ok || !v)
        return def;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
        (uint64_t)json_integer_value(v) > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "\"%s\" must be an integer between %llu and %llu", name,
                 (unsigned long long)min, (unsigned long long)max);
        *rc = send_error(c, 400, "bad_request", msg);
        *ok = false;
        return def;
    }
    return (uint64_t)json_integer_value(v);
}

/* ---- sandboxes ------------------------------------------------------------- */

static json_t *sandbox_json(const gw_sandbox *s)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "id", s->id, "team_id",
                     s->team_id, "backend", s->backend, "state", "running", "memory_mib",
                     (json_int_t)s->memory_mib, "vcpus", (json_int_t)s->vcpus, "disk_mib",
                     (json_int_t)s->disk_mib, "created_at", s->created_at, "expires_at", s->expires_at);
}

static void db_sandbox_state(fb_gateway *g, const char *id, const char *state)
{
    (void)fb_store_sandbox_set_state(g->store, id, state, NULL);
}

static int db_sandbox_insert(fb_gateway *g, const gw_sandbox *s)
{
    fb_sandbox_record r = {s->id, s->team_id, s->key_id, s->backend, s->memory_mib, s->vcpus, s->created_at,
                           s->expires_at};
    return fb_store_sandbox_insert(g->store, &r, NULL);
}

static void destroy_entry(fb_gateway *g, gw_sandbox *s, const char *state)
{
    pthread_mutex_lock(&s->use);
    fb_sandbox_destroy(s->sb);
    s->sb = NULL;
    pthread_mutex_unlock(&s->use);
    db_sandbox_state(g, s->id, state);
    pthread_mutex_destroy(&s->use);
    free(s);
}

static enum MHD_Result sandbox_create(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_SANDBOXES_CREATE, "sandboxes", c->who.team_id, &rc))
        return rc;
    static const char *const fields[] = {"backend", "memory_mib", "vcpus", "disk_mib", "ttl_s", NULL};
    json_t *j = json_body(c, fields, false, &rc);
    if (!j)
        return rc;
    const fb_config *cfg = c->g->cfg;
    bool ok = true;
    fb_sandbox_config sc;
    fb_sandbox_config_defaults(&sc);
    sc.backend = cfg->sandbox.backend;
    json_t *b = json_object_get(j, "backend");
    if (b) {
        if (json_is_string(b) && strcmp(json_string_value(b), "vm") == 0)
            sc.backend = FB_BACKEND_VM;
        else if (json_is_string(b) && strcmp(json_string_value(b), "jail") == 0)
            sc.backend = FB_BACKEND_JAIL;
        else {
            json_decref(j);
            return send_error(c, 400, "bad_request", "\"backend\" must be \"vm\" or \"jail\"");
        }
    }
    uint64_t min_mem = sc.backend == FB_BACKEND_VM ? FB_MIN_VM_MEMORY_MIB : FB_MIN_MEMORY_MIB;
    sc.memory_mib = int_field(c, j, "memory_mib", cfg->sandbox.memory_mib, min_mem,
                              cfg->sandbox.max_memory_mib, &ok, &rc);
    sc.vcpus = int_field(c, j, "vcpus", cfg->sandbox.vcpus, 1, FB_MAX_VCPUS, &ok, &rc);
    sc.disk_mib = int_field(c, j, "disk_mib", cfg->sandbox.disk_mib, 1, FB_MAX_DISK_MIB, &ok, &rc);
    uint64_t ttl = int_field(c, j, "ttl_s", cfg->sandbox.ttl_s, 1, cfg->sandbox.max_ttl_s, &ok, &rc);
    json_decref(j);
    if (!ok)
        return rc;
    sc.max_output = cfg->limits.max_output_bytes;
    sc.image_dir = c->g->image_dir;
    sc.state_dir = cfg->state_dir;
    sc.run_dir = cfg->run_dir;

    gw_sandbox *s = calloc(1, sizeof *s);
    if (!s)
        return send_error(c, 503, "unavailable", "out of memory");
    pthread_mutex_init(&s->use, NULL);
    snprintf(s->team_id, sizeof s->team_id, "%s", c->who.team_id);
    snprintf(s->key_id, sizeof s->key_id, "%s", c->who.key_id);
    snprintf(s->backend, sizeof s->backend, "%s", fb_backend_name(sc.backend));
    s->memory_mib = sc.memory_mib;
    s->vcpus = sc.vcpus;
    s->disk_mib = sc.disk_mib;
    new_id("pending-", s->id, sizeof s->id);
    int q = gw_registry_reserve(&c->g->reg, s, cfg->quotas.max_sandboxes_per_team,
                                cfg->quotas.max_memory_mib_per_team);
    if (q != 0) {
        pthread_mutex_destroy(&s->use);
        free(s);
        gw_metrics_sandbox_created("denied");
        audit(c, "sandbox", "sandboxes", "create", "denied", "team quota exceeded");
        return q > 0 ? send_error(c, 429, "quota_exceeded",
                                  "the team's quota of live sandboxes or their memory is used up")
                     : send_error(c, 503, "unavailable", "out of memory");
    }
    fb_sandbox *sb = NULL;
    fb_err err = {{0}};
    uint64_t t0 = fb_now_ns();
    if (gw_spawn_sandbox(&sc, &sb, &err) < 0) {
        gw_registry_drop(&c->g->reg, s);
        pthread_mutex_destroy(&s->use);
        free(s);
        gw_metrics_sandbox_created("error");
        audit(c, "sandbox", "sandboxes", "create", "error", err.msg);
        gw_log("error", c->r->id, "sandbox creation failed", json_pack("{s:s}", "error", err.msg));
        return send_error(c, 503, "sandbox_failed",
                          "the sandbox could not be started (details in the server log)");
    }
    time_t now = time(NULL);
    rfc3339(now, s->created_at, sizeof s->created_at);
    rfc3339(now + (time_t)ttl, s->expires_at, sizeof s->expires_at);
    s->expires_ns = t0 + ttl * 1000000000ull;
    gw_registry_activate(&c->g->reg, s, sb); /* sets s->id under the lock */
    if (db_sandbox_insert(c->g, s) < 0)
        gw_log("error", c->r->id, "cannot record sandbox", json_pack("{s:s}", "sandbox", s->id));
    gw_metrics_sandbox_created("ok");
    audit(c, "sandbox", s->id, "create", "allowed", fb_sandbox_isolation(sb));
    return send_json(c, 201, sandbox_json(s));
}

static enum MHD_Result sandbox_list(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_SANDBOXES_READ, "sandboxes", c->who.team_id, &rc))
        return rc;
    char (*ids)[32] = calloc(4096, 32);
    if (!ids)
        return send_error(c, 503, "unavailable", "out of memory");
    size_t n = gw_registry_ids(&c->g->reg, ids, 4096);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        gw_sandbox *s = gw_registry_get(&c->g->reg, ids[i]);
        if (!s)
            continue;
        if (c->who.is_admin || strcmp(s->team_id, c->who.team_id) == 0)
            json_array_append_new(arr, sandbox_json(s));
        gw_sandbox_put(&c->g->reg, s);
    }
    free(ids);
    return send_json(c, 200, json_pack("{s:o}", "sandboxes", arr));
}

/* Looks the sandbox up and checks the permission against its team.  NULL
 * with a queued 404/403 otherwise; release with gw_sandbox_put. */
static gw_sandbox *sandbox_for(ctx *c, fb_perm perm, enum MHD_Result *rc)
{
    const char *id = c->params[0];
    gw_sandbox *s = id ? gw_registry_get(&c->g->reg, id) : NULL;
    if (!s) {
        /* Unknown ids answer like another team's: audited, 404. */
        char action[96];
        snprintf(action, sizeof action, "%s %s", c->method, c->r->route);
        audit(c, "permission", id ? id : "", action, "denied", "no such sandbox");
        *rc = send_error(c, 404, "not_found", "no such resource");
        return NULL;
    }
    if (!permit(c, perm, s->id, s->team_id, rc)) {
        gw_sandbox_put(&c->g->reg, s);
        return NULL;
    }
    return s;
}

static enum MHD_Result sandbox_get(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    gw_sandbox *s = sandbox_for(c, FB_PERM_SANDBOXES_READ, &rc);
    if (!s)
        return rc;
    json_t *j = sandbox_json(s);
    gw_sandbox_put(&c->g->reg, s);
    return send_json(c, 200, j);
}

static enum MHD_Result sandbox_delete(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    gw_sandbox *s = sandbox_for(c, FB_PERM_SANDBOXES_CREATE, &rc);
    if (!s)
        return rc;
    char id[32];
    memcpy(id, s->id, sizeof id);
    gw_sandbox_put(&c->g->reg, s);
    /* Kill first: an exec in flight must not keep a deleted sandbox (and
     * its quota) alive for the rest of its timeout. */
    gw_sandbox_kill(&c->g->reg, id);
    gw_sandbox *t = gw_registry_take(&c->g->reg, id);
    if (!t)
        return send_error(c, 404, "not_found", "no such resource");
    destroy_entry(c->g, t, "destroyed");
    audit(c, "sandbox", id, "destroy", "allowed", "deleted by request");
    return send_raw(c, 204, "application/json", NULL, 0, MHD_RESPMEM_PERSISTENT);
}

/* ---- exec ------------------------------------------------------------------ */

/* Copies bytes as UTF-8, replacing invalid sequences with U+FFFD, so that
 * any program output can travel in a JSON string. */
static char *utf8_clean(const char *s, size_t n, size_t *out_len)
{
    char *o = malloc(n * 3 + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n;
        for (size_t j = 1; ok && j < len; j++)
            ok = ((unsigned char)s[i + j] >> 6) == 2;
        if (ok && len > 1) {
            uint32_t cp = len == 2 ? (b & 0x1fu) : len == 3 ? (b & 0x0fu) : (b & 0x07u);
            for (size_t j = 1; j < len; j++)
                cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3fu);
            ok = (len == 2 && cp >= 0x80) || (len == 3 && cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff)) ||
                 (len == 4 && cp >= 0x10000 && cp <= 0x10ffff);
        }
        if (ok && !(len == 1 && b == 0)) {
            memcpy(o + k, s + i, len);
            k += len;
            i += len;
        } else {
            /* invalid byte, or NUL: U+FFFD */
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i += 1;
        }
    }
    o[k] = '\0';
    *out_len = k;
    return o;
}

typedef struct outbuf {
    char *data;
    size_t len, cap;
} outbuf;

typedef struct exec_job {
    fb_gateway *g;
    gw_sandbox *s;
    char **argv;
    char **env;
    char *cwd;
    int stdin_fd;
    uint64_t timeout_ms;
    outbuf out, err;
    int pipe_w;                    /* SSE: where events go; -1 for JSON */
    volatile sig_atomic_t cancel;
    fb_exec_result res;
    fb_err ferr;
    int rc;
    char request_id[32];
} exec_job;

static void outbuf_add(outbuf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + len + 1)
            ncap *= 2;
        char *nd = realloc(b->data, ncap);
        if (!nd)
            return;
        b->data = nd;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

static void sse_event(int fd, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text)
        return;
    char head[64];
    int n = snprintf(head, sizeof head, "event: %s\ndata: ", event);
    if (fb_write_all(fd, head, (size_t)n) == 0 && fb_write_all(fd, text, strlen(text)) == 0)
        (void)fb_write_all(fd, "\n\n", 2);
    free(text);
}

static void on_exec_output(void *ctxp, int stream, const void *data, size_t len)
{
    exec_job *j = ctxp;
    if (j->pipe_w < 0) {
        outbuf_add(stream == FB_STREAM_STDOUT ? &j->out : &j->err, data, len);
        return;
    }
    size_t clen;
    char *clean = utf8_clean(data, len, &clen);
    if (!clean)
        return;
    sse_event(j->pipe_w, stream == FB_STREAM_STDOUT ? "stdout" : "stderr",
              json_pack("{s:s%}", "data", clean, clen));
    free(clean);
}

static json_t *exec_result_json(const exec_job *j, bool with_output)
{
    const fb_exec_result *r = &j->res;
    json_t *o = json_object();
    json_object_set_new(o, "exit_code",
                        r->started && r->signal == 0 ? json_integer(r->exit_code) : json_null());
    json_object_set_new(o, "signal", r->signal ? json_integer(r->signal) : json_null());
    json_object_set_new(o, "duration_ms", json_integer((json_int_t)r->duration_ms));
    json_object_set_new(o, "truncated", json_boolean(r->truncated));
    json_object_set_new(o, "timed_out", json_boolean(r->timed_out));
    json_object_set_new(o, "oom", json_boolean(r->oom));
    if (!r->started) {
        json_object_set_new(o, "error", json_string(r->error));
        json_t *m = json_string(r->message);
        json_object_set_new(o, "message", m ? m : json_string(""));
    }
    if (with_output) {
        size_t n;
        char *s = utf8_clean(j->out.data ? j->out.data : "", j->out.len, &n);
        json_object_set_new(o, "stdout", s ? json_stringn(s, n) : json_string(""));
        free(s);
        s = utf8_clean(j->err.data ? j->err.data : "", j->err.len, &n);
        json_object_set_new(o, "stderr", s ? json_stringn(s, n) : json_string(""));
        free(s);
    }
    return o;
}

static void run_exec(exec_job *j)
{
    fb_exec_req xr = {
        .argv = (const char *const *)j->argv,
        .env = (const char *const *)j->env,
        .cwd = j->cwd,
        .timeout_ms = j->timeout_ms,
        .stdin_fd = j->stdin_fd,
        .on_output = on_exec_output,
        .ctx = j,
        .cancel = &j->cancel,
    };
    uint64_t t0 = fb_now_ns();
    pthread_mutex_lock(&j->s->use);
    j->rc = j->s->sb ? fb_sandbox_exec(j->s->sb, &xr, &j->res, &j->ferr)
                     : fb_fail(&j->ferr, "the sandbox is gone");
    pthread_mutex_unlock(&j->s->use);
    gw_metrics_exec_duration((double)(fb_now_ns() - t0) / 1e9);
}

static void exec_job_free(exec_job *j)
{
    for (char **a = j->argv; a && *a; a++)
        free(*a);
    free(j->argv);
    for (char **e = j->env; e && *e; e++)
        free(*e);
    free(j->env);
    free(j->cwd);
    if (j->stdin_fd >= 0)
        close(j->stdin_fd);
    free(j->out.data);
    free(j->err.data);
    free(j);
}

/* Builds the job from the request body; NULL with a queued 400. */
static exec_job *exec_job_from(ctx *c, json_t *body, enum MHD_Result *rc)
{
    exec_job *j = calloc(1, sizeof *j);
    if (!j) {
        *rc = send_error(c, 503, "unavailable", "out of memory");
        return NULL;
    }
    j->stdin_fd = -1;
    j->pipe_w = -1;
    j->g = c->g;
    snprintf(j->request_id, sizeof j->request_id, "%s", c->r->id);
    const char *bad = NULL;
    json_t *cmd = json_object_get(body, "cmd");
    if (!json_is_array(cmd) || json_array_size(cmd) == 0 || json_array_size(cmd) > 4096)
        bad = "\"cmd\" must be a non-empty array of at most 4096 strings";
    if (!bad) {
        j->argv = calloc(json_array_size(cmd) + 1, sizeof *j->argv);
        for (size_t i = 0; j->argv && i < json_array_size(cmd) && !bad; i++) {
            json_t *a = json_array_get(cmd, i);
            if (!json_is_string(a))
                bad = "\"cmd\" must contain only strings";
            else
                j->argv[i] = strdup(json_string_value(a));
        }
        if (!bad && (!j->argv || !j->argv[0] || !j->argv[0][0]))
            bad = "\"cmd\"[0] must be a non-empty string";
    }
    json_t *env = json_object_get(body, "env");
    if (!bad && env) {
        if (!json_is_object(env) || json_object_size(env) > 256)
            bad = "\"env\" must be an object of at most 256 strings";
        else {
            j->env = calloc(json_object_size(env) + 1, sizeof *j->env);
            size_t i = 0;
            const char *k;
            json_t *v;
            json_object_foreach(env, k, v) {
                if (!json_is_string(v) || !k[0] || strchr(k, '=')) {
                    bad = "\"env\" keys must be names and values strings";
                    break;
                }
                if (j->env && asprintf(&j->env[i], "%s=%s", k, json_string_value(v)) >= 0)
                    i++;
            }
        }
    }
    json_t *cwd = json_object_get(body, "cwd");
    if (!bad && cwd) {
        if (!json_is_string(cwd) || json_string_value(cwd)[0] != '/' || json_string_length(cwd) > 4096)
            bad = "\"cwd\" must be an absolute path";
        else
            j->cwd = strdup(json_string_value(cwd));
    }
    json_t *to = json_object_get(body, "timeout_s");
    j->timeout_ms = 60000;
    if (!bad && to) {
        if (!json_is_integer(to) || json_integer_value(to) < 1 || json_integer_value(to) > 3600)
            bad = "\"timeout_s\" must be an integer between 1 and 3600";
        else
            j->timeout_ms = (uint64_t)json_integer_value(to) * 1000;
    }
    json_t *in = json_object_get(body, "stdin");
    if (!bad && in) {
        if (!json_is_string(in))
            bad = "\"stdin\" must be a string";
        else {
            /* A memfd holding the bytes: read to EOF like a file. */
            j->stdin_fd = memfd_create("fb-stdin", MFD_CLOEXEC);
            if (j->stdin_fd < 0 ||
                fb_write_all(j->stdin_fd, json_string_value(in), json_string_length(in)) < 0 ||
                lseek(j->stdin_fd, 0, SEEK_SET) < 0)
                bad = "cannot stage stdin";
        }
    }
    if (bad) {
        exec_job_free(j);
        *rc = send_error(c, 400, "bad_request", bad);
        return NULL;
    }
    return j;
}

typedef struct sse_state {
    exec_job *job;
    int pipe_r;
    pthread_t thread;
    ctx audit_ctx;        /* copy of what the audit needs */
    req audit_req;
} sse_state;

static void *sse_thread(void *arg)
{
    sse_state *st = arg;
    exec_job *j = st->job;
    run_exec(j);
    json_t *end = j->rc < 0 ? json_pack("{s:s}", "error", j->ferr.msg) : exec_result_json(j, false);
    sse_event(j->pipe_w, "exit", end);
    close(j->pipe_w);
    j->pipe_w = -1;
    return NULL;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse_state *st = cls;
    /* A quiet command still gets a comment line every second: writing it
     * is how a client that went away is noticed (the write fails, MHD ends
     * the response, sse_free cancels the command) instead of holding the
     * sandbox until the command's timeout. */
    struct pollfd p = {.fd = st->pipe_r, .events = POLLIN};
    int pr;
    do
        pr = poll(&p, 1, 1000);
    while (pr < 0 && errno == EINTR);
    if (pr == 0) {
        static const char keepalive[] = ": keepalive\n\n";
        size_t k = sizeof keepalive - 1 < max ? sizeof keepalive - 1 : max;
        memcpy(buf, keepalive, k);
        return (ssize_t)k;
    }
    ssize_t n;
    do
        n = read(st->pipe_r, buf, max);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return n;
}

static void sse_free(void *cls)
{
    sse_state *st = cls;
    /* The client may have gone: stop the command, then wait for it. */
    st->job->cancel = 1;
    close(st->pipe_r);
    pthread_join(st->thread, NULL);
    ctx *c = &st->audit_ctx;
    c->r = &st->audit_req;
    exec_job *j = st->job;
    audit(c, "exec", j->s->id, "exec", j->rc < 0 ? "error" : "allowed",
          j->rc < 0 ? j->ferr.msg : (j->res.timed_out ? "timed out" : "completed"));
    gw_sandbox_put(&j->g->reg, j->s);
    exec_job_free(j);
    free(st);
}

static enum MHD_Result sandbox_exec(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    gw_sandbox *s = sandbox_for(c, FB_PERM_SANDBOXES_EXEC, &rc);
    if (!s)
        return rc;
    static const char *const fields[] = {"cmd", "stdin", "env", "cwd", "timeout_s", NULL};
    json_t *body = json_body(c, fields, true, &rc);
    if (!body) {
        gw_sandbox_put(&c->g->reg, s);
        return rc;
    }
    exec_job *j = exec_job_from(c, body, &rc);
    json_decref(body);
    if (!j) {
        gw_sandbox_put(&c->g->reg, s);
        return rc;
    }
    j->s = s;
    const char *accept = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Accept");
    if (accept && strstr(accept, "text/event-stream")) {
        int p[2];
        sse_state *st = calloc(1, sizeof *st);
        if (!st || pipe2(p, O_CLOEXEC) < 0) {
            free(st);
            gw_sandbox_put(&c->g->reg, s);
            exec_job_free(j);
            return send_error(c, 503, "unavailable", "cannot start the stream");
        }
        st->job = j;
        st->pipe_r = p[0];
        j->pipe_w = p[1];
        st->audit_ctx = *c;
        st->audit_req = *c->r;
        st->audit_req.body = NULL;
        if (pthread_create(&st->thread, NULL, sse_thread, st) != 0) {
            close(p[0]);
            close(p[1]);
            free(st);
            gw_sandbox_put(&c->g->reg, s);
            exec_job_free(j);
            return send_error(c, 503, "unavailable", "cannot start the stream");
        }
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, st, sse_free);
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        MHD_add_response_header(resp, "X-Request-Id", c->r->id);
        rc = MHD_queue_response(c->conn, 200, resp);
        MHD_destroy_response(resp);
        note_response(c->r, c->method, 200);
        return rc;
    }
    run_exec(j);
    if (j->rc < 0) {
        audit(c, "exec", s->id, "exec", "error", j->ferr.msg);
        rc = send_error(c, 503, "sandbox_failed", j->ferr.msg);
    } else {
        audit(c, "exec", s->id, "exec", "allowed", j->res.timed_out ? "timed out" : "completed");
        rc = send_json(c, 200, exec_result_json(j, true));
    }
    gw_sandbox_put(&c->g->reg, s);
    exec_job_free(j);
    return rc;
}

/* ---- files ------------------------------------------------------------------ */

static enum MHD_Result sandbox_file(ctx *c, bool put)
{
    enum MHD_Result rc = MHD_NO;
    const char *path = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "path");
    gw_sandbox *s = sandbox_for(c, FB_PERM_SANDBOXES_EXEC, &rc);
    if (!s)
        return rc;
    if (!path || !path[0] || strlen(path) > 4096) {
        gw_sandbox_put(&c->g->reg, s);
        return send_error(c, 400, "bad_request", "the \"path\" query parameter is required");
    }
    size_t plen;
    char *clean = utf8_clean(path, strlen(path), &plen);
    bool valid = clean && plen == strlen(path) && strcmp(clean, path) == 0;
    free(clean);
    if (!valid) {
        gw_sandbox_put(&c->g->reg, s);
        return send_error(c, 400, "bad_request", "\"path\" is not valid UTF-8");
    }
    int fd = memfd_create("fb-file", MFD_CLOEXEC);
    fb_err err = {{0}};
    int r;
    if (fd < 0) {
        gw_sandbox_put(&c->g->reg, s);
        return send_error(c, 503, "unavailable", "cannot stage the file");
    }
    if (put) {
        if (fb_write_all(fd, c->r->body ? c->r->body : "", c->r->len) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
            close(fd);
            gw_sandbox_put(&c->g->reg, s);
            return send_error(c, 503, "unavailable", "cannot stage the file");
        }
        pthread_mutex_lock(&s->use);
        r = s->sb ? fb_sandbox_put(s->sb, path, fd, 0644, &err) : fb_fail(&err, "the sandbox is gone");
        pthread_mutex_unlock(&s->use);
        close(fd);
        audit(c, "file", s->id, "put", r < 0 ? "error" : "allowed", r < 0 ? err.msg : path);
        gw_sandbox_put(&c->g->reg, s);
        if (r < 0)
            return send_error(c, strstr(err.msg, "(not_found)") ? 404 : 400, "file_error", err.msg);
        return send_json(c, 201, json_pack("{s:s, s:I}", "path", path, "size", (json_int_t)c->r->len));
    }
    pthread_mutex_lock(&s->use);
    r = s->sb ? fb_sandbox_get(s->sb, path, fd, c->g->cfg->limits.max_file_bytes, &err)
              : fb_fail(&err, "the sandbox is gone");
    pthread_mutex_unlock(&s->use);
    audit(c, "file", s->id, "get", r < 0 ? "error" : "allowed", r < 0 ? err.msg : path);
    gw_sandbox_put(&c->g->reg, s);
    if (r < 0) {
        close(fd);
        int status = strstr(err.msg, "(not_found)") ? 404 : strstr(err.msg, "limit") ? 413 : 400;
        return send_error(c, status, status == 404 ? "not_found" : status == 413 ? "too_large" : "file_error",
                          err.msg);
    }
    off_t size = lseek(fd, 0, SEEK_END);
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64((uint64_t)size, fd, 0);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
    MHD_add_response_header(resp, "X-Request-Id", c->r->id);
    rc = MHD_queue_response(c->conn, 200, resp);
    MHD_destroy_response(resp);
    note_response(c->r, c->method, 200);
    return rc;
}

/* ---- identity: keys, users, teams ------------------------------------------- */

static int auth_status_http(int st, const char **code)
{
    switch (st) {
    case FB_AUTH_EINVAL: *code = "bad_request"; return 400;
    case FB_AUTH_ENOTFOUND: *code = "not_found"; return 404;
    case FB_AUTH_EEXISTS: *code = "conflict"; return 409;
    case FB_AUTH_EDENIED: *code = "forbidden"; return 403;
    default: *code = "internal"; return 500;
    }
}

static enum MHD_Result auth_error(ctx *c, int st, fb_err *err)
{
    const char *code;
    int status = auth_status_http(st, &code);
    return send_error(c, status, code, status == 500 ? "internal error (see the server log)" : err->msg);
}

static json_t *key_json(const fb_api_key_info *k)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s}", "id", k->id, "user_id", k->user_id, "name",
                          k->name, "scopes", fb_perms_to_json(k->scopes), "created_at", k->created_at);
    json_object_set_new(o, "expires_at", k->expires_at[0] ? json_string(k->expires_at) : json_null());
    json_object_set_new(o, "revoked_at", k->revoked_at[0] ? json_string(k->revoked_at) : json_null());
    json_object_set_new(o, "last_used_at", k->last_used_at[0] ? json_string(k->last_used_at) : json_null());
    return o;
}

static enum MHD_Result keys_create(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_KEYS_MANAGE, "keys", c->who.team_id, &rc))
        return rc;
    static const char *const fields[] = {"name", "scopes", "expires_at", "user_id", NULL};
    json_t *j = json_body(c, fields, true, &rc);
    if (!j)
        return rc;
    json_t *name = json_object_get(j, "name"), *exp = json_object_get(j, "expires_at");
    json_t *owner = json_object_get(j, "user_id"); /* admins may make keys for others */
    if (owner && !json_is_string(owner)) {
        json_decref(j);
        return send_error(c, 400, "bad_request", "\"user_id\" must be a string");
    }
    fb_perm scopes = 0;
    fb_err err = {{0}};
    if (!json_is_string(name) || (exp && !json_is_string(exp) && !json_is_null(exp)) ||
        fb_perms_from_json(json_object_get(j, "scopes"), &scopes, &err) < 0) {
        json_decref(j);
        return send_error(c, 400, "bad_request",
                          err.msg[0] ? err.msg
                                     : "\"name\" must be a string and \"expires_at\" an RFC 3339 time");
    }
    /* A key can never outlive the key that creates it. */
    if (c->who.key_id[0]) {
        fb_api_key_info parent;
        memset(&parent, 0, sizeof parent);
        if (fb_auth_key_get(c->g->store, c->who.key_id, &parent, &err) == FB_AUTH_OK && parent.expires_at[0]) {
            struct timespec pe, ce;
            bool child_ok = json_is_string(exp) &&
                            fb_auth_time_parse(json_string_value(exp), &ce) == 0 &&
                            fb_auth_time_parse(parent.expires_at, &pe) == 0 &&
                            (ce.tv_sec < pe.tv_sec || (ce.tv_sec == pe.tv_sec && ce.tv_nsec <= pe.tv_nsec));
            if (!child_ok) {
                json_decref(j);
                audit(c, "admin", "keys", "create key", "denied", "would outlive the creating key");
                return send_error(c, 400, "bad_request",
                                  "\"expires_at\" must be set and no later than the expiry of the key making it");
            }
        }
    }
    char key[FB_AUTH_KEY_TEXT_MAX], key_id[FB_ID_MAX];
    int st = fb_auth_key_create_as(c->g->store, &c->who, owner ? json_string_value(owner) : c->who.user_id,
                                   json_string_value(name), scopes,
                                   json_is_string(exp) ? json_string_value(exp) : NULL, key, key_id, &err);
    json_decref(j);
    if (st != FB_AUTH_OK) {
        audit(c, "admin", "keys", "create key", st == FB_AUTH_EDENIED ? "denied" : "error", err.msg);
        return auth_error(c, st, &err);
    }
    fb_api_key_info info;
    memset(&info, 0, sizeof info);
    fb_auth_key_get(c->g->store, key_id, &info, &err);
    audit(c, "admin", key_id, "create key", "allowed", "");
    json_t *o = key_json(&info);
    /* The only place a key is ever shown: once, here. */
    json_object_set_new(o, "key", json_string(key));
    sodium_memzero(key, sizeof key);
    return send_json(c, 201, o);
}

static enum MHD_Result keys_list(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_KEYS_MANAGE, "keys", c->who.team_id, &rc))
        return rc;
    fb_api_key_info *keys = NULL;
    size_t n = 0;
    fb_err err = {{0}};
    int st = fb_auth_key_list(c->g->store, c->who.user_id, &keys, &n, &err);
    if (st != FB_AUTH_OK)
        return auth_error(c, st, &err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, key_json(&keys[i]));
    free(keys);
    return send_json(c, 200, json_pack("{s:o}", "keys", arr));
}

static enum MHD_Result keys_delete(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_KEYS_MANAGE, c->params[0], c->who.team_id, &rc))
        return rc;
    fb_err err = {{0}};
    int st = fb_auth_key_revoke(c->g->store, &c->who, c->params[0], &err);
    audit(c, "admin", c->params[0], "revoke key", st == FB_AUTH_OK ? "allowed" : "denied",
          st == FB_AUTH_OK ? "" : err.msg);
    if (st != FB_AUTH_OK)
        return auth_error(c, st, &err);
    return send_raw(c, 204, "application/json", NULL, 0, MHD_RESPMEM_PERSISTENT);
}

static json_t *user_json(const fb_user *u)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "id", u->id, "username", u->username, "team_id",
                     u->team_id, "role", fb_role_name(u->role), "created_at", u->created_at, "disabled",
                     u->disabled);
}

static enum MHD_Result users_create(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_ADMIN_USERS, "users", c->who.team_id, &rc))
        return rc;
    static const char *const fields[] = {"username", "password", "team_id", "role", NULL};
    json_t *j = json_body(c, fields, true, &rc);
    if (!j)
        return rc;
    json_t *un = json_object_get(j, "username"), *pw = json_object_get(j, "password"),
           *tm = json_object_get(j, "team_id"), *ro = json_object_get(j, "role");
    if (!json_is_string(un) || !json_is_string(pw) || !json_is_string(tm) || !json_is_string(ro) ||
        fb_role_from_name(json_string_value(ro)) == FB_ROLE_NONE) {
        json_decref(j);
        return send_error(c, 400, "bad_request",
                          "\"username\", \"password\", \"team_id\" must be strings and \"role\" one of "
                          "admin, developer, operator, viewer");
    }
    fb_user u;
    fb_err err = {{0}};
    int st = fb_auth_user_create(c->g->store, json_string_value(un), json_string_value(tm),
                                 fb_role_from_name(json_string_value(ro)), json_string_value(pw), &u, &err);
    json_decref(j);
    audit(c, "admin", st == FB_AUTH_OK ? u.id : "users", "create user", st == FB_AUTH_OK ? "allowed" : "error",
          st == FB_AUTH_OK ? "" : err.msg);
    if (st != FB_AUTH_OK)
        return auth_error(c, st, &err);
    return send_json(c, 201, user_json(&u));
}

static enum MHD_Result users_list(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_ADMIN_USERS, "users", c->who.team_id, &rc))
        return rc;
    fb_user *users = NULL;
    size_t n = 0;
    fb_err err = {{0}};
    int st = fb_auth_user_list(c->g->store, c->who.is_admin ? NULL : c->who.team_id, &users, &n, &err);
    if (st != FB_AUTH_OK)
        return auth_error(c, st, &err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, user_json(&users[i]));
    free(users);
    return send_json(c, 200, json_pack("{s:o}", "users", arr));
}

static enum MHD_Result teams_create(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_ADMIN_USERS, "teams", c->who.team_id, &rc))
        return rc;
    static const char *const fields[] = {"name", NULL};
    json_t *j = json_body(c, fields, true, &rc);
    if (!j)
        return rc;
    json_t *name = json_object_get(j, "name");
    if (!json_is_string(name)) {
        json_decref(j);
        return send_error(c, 400, "bad_request", "\"name\" must be a string");
    }
    fb_team t;
    fb_err err = {{0}};
    int st = fb_auth_team_create(c->g->store, json_string_value(name), &t, &err);
    json_decref(j);
    audit(c, "admin", st == FB_AUTH_OK ? t.id : "teams", "create team", st == FB_AUTH_OK ? "allowed" : "error",
          st == FB_AUTH_OK ? "" : err.msg);
    if (st != FB_AUTH_OK)
        return auth_error(c, st, &err);
    return send_json(c, 201, json_pack("{s:s, s:s, s:s}", "id", t.id, "name", t.name, "created_at", t.created_at));
}

static enum MHD_Result teams_list(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_ADMIN_USERS, "teams", c->who.team_id, &rc))
        return rc;
    fb_team *teams = NULL;
    size_t n = 0;
    fb_err err = {{0}};
    int st = fb_auth_team_list(c->g->store, &teams, &n, &err);
    if (st != FB_AUTH_OK)
        return auth_error(c, st, &err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (c->who.is_admin || strcmp(teams[i].id, c->who.team_id) == 0)
            json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "id", teams[i].id, "name", teams[i].name,
                                                 "created_at", teams[i].created_at));
    free(teams);
    return send_json(c, 200, json_pack("{s:o}", "teams", arr));
}

/* ---- audit, metrics, health ------------------------------------------------- */

/* The log is organisation-wide: every team's actions are in it, and
 * nobody reads across teams unless an admin.  So reading it takes
 * audit:read and an admin; either refusal is audited as such. */
static bool permit_audit_reader(ctx *c, enum MHD_Result *rc)
{
    if (!c->who.is_admin) {
        char action[96];
        snprintf(action, sizeof action, "%s %s", c->method, c->r->route);
        audit(c, "permission", "audit", action, "denied", "the audit log spans all teams: admins only");
        *rc = send_error(c, 403, "forbidden", "the audit log spans all teams: admins only");
        return false;
    }
    return permit(c, FB_PERM_AUDIT_READ, "audit", c->who.team_id, rc);
}

static enum MHD_Result audit_list(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit_audit_reader(c, &rc))
        return rc;
    fb_audit_filter f = {0};
    f.actor = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "actor");
    f.action = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "action");
    f.outcome = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "outcome");
    f.since = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "since");
    f.until = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "until");
    const char *limit = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *after = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "after_seq");
    uint64_t v;
    if (limit) {
        if (fb_parse_u64(limit, 1, FB_AUDIT_QUERY_MAX, &v) < 0)
            return send_error(c, 400, "bad_request", "\"limit\" must be between 1 and 1000");
        f.limit = (unsigned)v;
    }
    if (after) {
        if (fb_parse_u64(after, 0, UINT64_MAX >> 1, &v) < 0)
            return send_error(c, 400, "bad_request", "\"after_seq\" must be a non-negative integer");
        f.after_seq = v;
    }
    json_t *out = NULL;
    fb_err err = {{0}};
    if (fb_audit_query(c->g->store, &f, &out, &err) < 0)
        return send_error(c, 400, "bad_request", err.msg);
    return send_json(c, 200, json_pack("{s:o}", "entries", out));
}

static enum MHD_Result audit_verify(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit_audit_reader(c, &rc))
        return rc;
    uint64_t entries = 0, bad = 0;
    fb_err err = {{0}};
    int r = fb_audit_verify(c->g->store, &entries, &bad, &err);
    json_t *o = json_pack("{s:b, s:I, s:s}", "intact", r == 0, "entries", (json_int_t)entries, "message",
                          r == 0 ? "audit chain intact" : err.msg);
    json_object_set_new(o, "first_bad_seq", r == 0 ? json_null() : json_integer((json_int_t)bad));
    return send_json(c, 200, o);
}

static enum MHD_Result metrics(ctx *c)
{
    enum MHD_Result rc = MHD_NO;
    if (!permit(c, FB_PERM_AUDIT_READ, "metrics", c->who.team_id, &rc))
        return rc;
    char *text = gw_metrics_render(&c->g->reg);
    if (!text)
        return send_error(c, 503, "unavailable", "out of memory");
    return send_raw(c, 200, "text/plain; version=0.0.4", text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result healthz(ctx *c)
{
    return send_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

/* ---- routing ---------------------------------------------------------------- */

typedef enum MHD_Result (*handler_fn)(ctx *c);

static enum MHD_Result files_put(ctx *c) { return sandbox_file(c, true); }
static enum MHD_Result files_get(ctx *c) { return sandbox_file(c, false); }

static const struct route {
    const char *method;
    const char *pattern;
    handler_fn fn;
    bool auth;
    bool big_body; /* file uploads: limits.max_file_bytes instead of max_body_bytes */
} routes[] = {
    {"GET", "/healthz", healthz, false, false},
    {"GET", "/metrics", metrics, true, false},
    {"POST", "/v1/sandboxes", sandbox_create, true, false},
    {"GET", "/v1/sandboxes", sandbox_list, true, false},
    {"GET", "/v1/sandboxes/{id}", sandbox_get, true, false},
    {"DELETE", "/v1/sandboxes/{id}", sandbox_delete, true, false},
    {"POST", "/v1/sandboxes/{id}/exec", sandbox_exec, true, false},
    {"PUT", "/v1/sandboxes/{id}/files", files_put, true, true},
    {"GET", "/v1/sandboxes/{id}/files", files_get, true, false},
    {"POST", "/v1/keys", keys_create, true, false},
    {"GET", "/v1/keys", keys_list, true, false},
    {"DELETE", "/v1/keys/{id}", keys_delete, true, false},
    {"POST", "/v1/users", users_create, true, false},
    {"GET", "/v1/users", users_list, true, false},
    {"POST", "/v1/teams", teams_create, true, false},
    {"GET", "/v1/teams", teams_list, true, false},
    {"GET", "/v1/audit", audit_list, true, false},
    {"GET", "/v1/audit/verify", audit_verify, true, false},
};
#define NROUTES (sizeof routes / sizeof routes[0])

const char *const *fb_gateway_routes(void)
{
    static char text[NROUTES][96];
    static const char *list[NROUTES + 1];
    for (size_t i = 0; i < NROUTES; i++) {
        snprintf(text[i], sizeof text[i], "%s %s", routes[i].method, routes[i].pattern);
        list[i] = text[i];
    }
    list[NROUTES] = NULL;
    return list;
}

static bool id_segment(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* Matches url against pattern; fills up to one {id} parameter. */
static bool match(const char *pattern, const char *url, char *param, size_t pcap)
{
    const char *p = pattern, *u = url;
    while (*p && *u) {
        if (strncmp(p, "{id}", 4) == 0) {
            size_t n = strcspn(u, "/");
            if (!id_segment(u, n) || n >= pcap)
                return false;
            memcpy(param, u, n);
            param[n] = '\0';
            p += 4;
            u += n;
            continue;
        }
        if (*p != *u)
            return false;
        p++;
        u++;
    }
    return *p == '\0' && *u == '\0';
}

typedef struct conn_state {
    req r;
    int route;          /* index, or -1 unmatched, -2 method not allowed */
    char param[72];
    uint64_t cap;
    bool answered;      /* a response was queued before the body was read */
    bool authed;
    fb_principal who;
    char actor[64];
} conn_state;

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

static enum MHD_Result send_429(struct MHD_Connection *conn, conn_state *cs, const char *method, int wait,
                                const char *why)
{
    char ra[16];
    snprintf(ra, sizeof ra, "%d", wait);
    json_t *body = json_pack("{s:{s:s, s:s}}", "error", "code", "rate_limited", "message", why);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct MHD_Response *resp = MHD_create_response_from_buffer(text ? strlen(text) : 0, text,
                                                                MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Retry-After", ra);
    MHD_add_response_header(resp, "X-Request-Id", cs->r.id);
    enum MHD_Result rc = MHD_queue_response(conn, 429, resp);
    MHD_destroy_response(resp);
    note_response(&cs->r, method, 429);
    return rc;
}

/* Everything that can be decided from the request line and headers alone,
 * decided before a single byte of body is read: routing, the size cap,
 * authentication and rate limits.  A stranger can therefore never make the
 * gateway buffer a body.  Returns true when the request may proceed;
 * otherwise a response has been queued (*rc). */
static bool gate(fb_gateway *g, struct MHD_Connection *conn, const char *method, const char *url,
                 conn_state *cs, enum MHD_Result *rc)
{
    ctx c = {.g = g, .conn = conn, .r = &cs->r, .method = method, .url = url};
    if (cs->route == -1) {
        *rc = send_error(&c, 404, "not_found", "no such route");
        return false;
    }
    if (cs->route == -2) {
        *rc = send_error(&c, 405, "method_not_allowed", "method not allowed on this route");
        return false;
    }
    const struct route *rt = &routes[cs->route];
    if (rt->auth) {
        /* Counted lookup: a NUL inside the header must not cut it short. */
        const char *h = NULL;
        size_t hlen = 0;
        if (MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND, "Authorization", 13, &h, &hlen) != MHD_YES)
            h = NULL;
        fb_auth_fail why = FB_AUTH_FAIL_NONE;
        fb_err err = {{0}};
        int st = h ? fb_auth_key_authenticate_n(g->store, h, hlen, &c.who, &why, &err)
                   : fb_auth_key_authenticate(g->store, NULL, &c.who, &why, &err);
        if (st != FB_AUTH_OK || why != FB_AUTH_FAIL_NONE) {
            gw_metrics_auth_failure();
            /* Failures are audited, but a source that keeps failing is
             * slowed down first, so that nobody can flood the log (and the
             * disk) without a key: beyond the budget, 429 and a log line. */
            char ipkey[80];
            snprintf(ipkey, sizeof ipkey, "ip:%s", cs->r.ip);
            int wait = gw_ratelimit_take(g->rl_fail, ipkey);
            if (wait > 0) {
                gw_log("warn", cs->r.id, "authentication failures rate-limited",
                       json_pack("{s:s, s:s}", "ip", cs->r.ip, "reason", fb_auth_fail_name(why)));
                *rc = send_429(conn, cs, method, wait, "too many failed authentications from this address");
                return false;
            }
            audit(&c, "auth", rt->pattern, "authenticate", why == FB_AUTH_FAIL_ERROR ? "error" : "denied",
                  fb_auth_fail_name(why));
            if (why == FB_AUTH_FAIL_ERROR)
                *rc = send_error(&c, 500, "internal", "internal error (see the server log)");
            else
                *rc = send_error(&c, 401, "unauthorized", "missing or invalid API key");
            return false;
        }
        c.who.org_enabled = g->cfg->network.internet ? FB_PERM_NETWORK_INTERNET : 0;
        snprintf(c.actor, sizeof c.actor, "key:%s", c.who.key_id);
        /* One bucket per key, and a wider one per user, so that minting
         * more keys does not buy more requests. */
        char ukey[80];
        snprintf(ukey, sizeof ukey, "user:%s", c.who.user_id);
        int wait = gw_ratelimit_take(g->rl, c.who.key_id);
        if (wait == 0)
            wait = gw_ratelimit_take(g->rl_user, ukey);
        if (wait > 0) {
            *rc = send_429(conn, cs, method, wait, "too many requests for this key");
            return false;
        }
        if (audit(&c, "auth", rt->pattern, "authenticate", "allowed", "api key") < 0) {
            *rc = send_error(&c, 503, "unavailable", "the audit log cannot be written; refusing to act unaudited");
            return false;
        }
        cs->who = c.who;
        memcpy(cs->actor, c.actor, sizeof cs->actor);
        cs->authed = true;
    }
    if (cs->r.too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "the body exceeds the %llu-byte limit", (unsigned long long)cs->cap);
        *rc = send_error(&c, 413, "too_large", msg);
        return false;
    }
    return true;
}

static enum MHD_Result dispatch(fb_gateway *g, struct MHD_Connection *conn, const char *method,
                                const char *url, conn_state *cs)
{
    ctx c = {.g = g, .conn = conn, .r = &cs->r, .method = method, .url = url};
    c.params[0] = cs->param[0] ? cs->param : NULL;
    const struct route *rt = &routes[cs->route];
    if (cs->r.too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "the body exceeds the %llu-byte limit", (unsigned long long)cs->cap);
        return send_error(&c, 413, "too_large", msg);
    }
    if (cs->authed) {
        c.who = cs->who;
        memcpy(c.actor, cs->actor, sizeof c.actor);
    }
    return rt->fn(&c);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    fb_gateway *g = cls;
    conn_state *cs = *con_cls;
    if (!cs) {
        cs = calloc(1, sizeof *cs);
        if (!cs)
            return MHD_NO;
        new_id("req_", cs->r.id, sizeof cs->r.id);
        client_ip(conn, cs->r.ip, sizeof cs->r.ip);
        cs->route = -1;
        for (size_t i = 0; i < NROUTES; i++) {
            char param[72] = "";
            if (!match(routes[i].pattern, url, param, sizeof param))
                continue;
            if (strcmp(routes[i].method, method) == 0) {
                cs->route = (int)i;
                memcpy(cs->param, param, sizeof param);
                break;
            }
            cs->route = -2;
        }
        if (cs->route >= 0)
            cs->r.route = routes[cs->route].pattern;
        cs->cap = cs->route >= 0 && routes[cs->route].big_body ? g->cfg->limits.max_file_bytes
                                                                : g->cfg->limits.max_body_bytes;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        uint64_t n;
        if (cl && (fb_parse_u64(cl, 0, UINT64_MAX >> 1, &n) < 0 || n > cs->cap))
            cs->r.too_large = true;
        *con_cls = cs;
        enum MHD_Result rc = MHD_YES;
        if (!gate(g, conn, method, url, cs, &rc))
            cs->answered = true;
        return rc;
    }
    if (cs->answered) {
        *upload_data_size = 0; /* answered already: the body is dropped unread */
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (!cs->r.too_large && cs->r.len + n <= cs->cap && cs->route >= 0) {
            if (cs->r.len + n + 1 > cs->r.cap) {
                size_t ncap = cs->r.cap ? cs->r.cap : 4096;
                while (ncap < cs->r.len + n + 1)
                    ncap *= 2;
                char *nb = realloc(cs->r.body, ncap);
                if (!nb)
                    return MHD_NO;
                cs->r.body = nb;
                cs->r.cap = ncap;
            }
            memcpy(cs->r.body + cs->r.len, upload_data, n);
            cs->r.len += n;
            cs->r.body[cs->r.len] = '\0';
        } else if (cs->r.len + n > cs->cap) {
            cs->r.too_large = true; /* keep reading and dropping */
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return dispatch(g, conn, method, url, cs);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    conn_state *cs = *con_cls;
    if (cs) {
        free(cs->r.body);
        free(cs);
    }
    *con_cls = NULL;
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void *reaper_main(void *arg)
{
    fb_gateway *g = arg;
    char ids[64][32];
    while (!g->stopping) {
        size_t n = gw_registry_expired(&g->reg, fb_now_ns(), ids, 64);
        for (size_t i = 0; i < n; i++) {
            gw_sandbox_kill(&g->reg, ids[i]);
            gw_sandbox *s = gw_registry_take(&g->reg, ids[i]);
            if (!s)
                continue;
            destroy_entry(g, s, "destroyed");
            audit_system(g, "sandbox", ids[i], "destroy", "allowed", "ttl expired");
            gw_log("info", NULL, "sandbox expired", json_pack("{s:s}", "sandbox", ids[i]));
        }
        for (int t = 0; t < 5 && !g->stopping; t++)
            usleep(100000);
    }
    return NULL;
}

/* Sandboxes a crashed predecessor left in the store: their processes died
 * with it (parent-death signal); their records and leftovers go now. */
static void reap_previous(fb_gateway *g)
{
    fb_sandbox_reap_orphans(g->cfg->run_dir);
    char (*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    fb_err err = {{0}};
    if (fb_store_sandbox_list_live(g->store, &ids, &n, &err) < 0)
        gw_log("error", NULL, "cannot list this node's sandbox records", json_pack("{s:s}", "error", err.msg));
    for (size_t i = 0; i < n; i++) {
        db_sandbox_state(g, ids[i], "destroyed");
        audit_system(g, "sandbox", ids[i], "destroy", "allowed", "orphan of a previous gateway reaped at start-up");
        gw_log("warn", NULL, "reaped orphaned sandbox", json_pack("{s:s}", "sandbox", ids[i]));
    }
    free(ids);
}

static void shutdown_sandboxes(fb_gateway *g)
{
    char (*ids)[32] = calloc(4096, 32);
    if (!ids)
        return;
    size_t n = gw_registry_ids(&g->reg, ids, 4096);
    /* Kill first, so that execs in flight end now and let go. */
    for (size_t i = 0; i < n; i++)
        gw_sandbox_kill(&g->reg, ids[i]);
    for (size_t i = 0; i < n; i++) {
        gw_sandbox *s = gw_registry_take(&g->reg, ids[i]);
        if (!s)
            continue;
        destroy_entry(g, s, "destroyed");
        audit_system(g, "sandbox", ids[i], "destroy", "allowed", "gateway shutdown");
    }
    free(ids);
}

static char *read_small_file(const char *path, fb_err *err)
{
    char *buf = malloc(1 << 20);
    if (!buf || fb_read_file(path, buf, 1 << 20, err) < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

int fb_gateway_run(const fb_config *cfg, const char *image_dir, fb_err *err)
{
    fb_gateway g;
    memset(&g, 0, sizeof g);
    g.cfg = cfg;
    g.image_dir = image_dir;
    gw_log_set_level(fb_log_level_name(cfg->log_level));

    char host[256];
    uint16_t port;
    if (fb_config_listen_split(cfg->listen, host, sizeof host, &port, err) < 0)
        return -1;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    bool v6 = false;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        v6 = true;
    } else {
        return fb_fail(err, "config: listen: \"%s\" is not an IP address", host);
    }

    if (fb_store_open(cfg->state_dir, &g.store, err) < 0)
        return -1;
    bool initialised = false;
    char org[160] = "";
    if (fb_auth_org_get(g.store, &initialised, org, err) != FB_AUTH_OK || !initialised) {
        fb_store_close(g.store);
        return fb_fail(err, "the store in %s is not initialised: run `forgebox admin init --state-dir %s` first",
                       cfg->state_dir, cfg->state_dir);
    }
    uint64_t entries = 0, bad = 0;
    fb_err verr = {{0}};
    if (fb_audit_verify(g.store, &entries, &bad, &verr) < 0)
        gw_log("error", NULL, "the audit chain does not verify", json_pack("{s:s}", "error", verr.msg));

    /* Signals are taken by sigwait on this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    gw_registry_init(&g.reg);
    g.rl = gw_ratelimit_new((double)cfg->limits.rate_rps, (double)cfg->limits.rate_burst);
    g.rl_user = gw_ratelimit_new(4.0 * (double)cfg->limits.rate_rps, 4.0 * (double)cfg->limits.rate_burst);
    /* Failed authentications per address: the same budget as one key. */
    g.rl_fail = gw_ratelimit_new((double)cfg->limits.rate_rps, (double)cfg->limits.rate_burst);
    reap_previous(&g);
    if (!g.rl || !g.rl_user || !g.rl_fail || gw_spawner_start() < 0 || pthread_create(&g.reaper, NULL, reaper_main, &g) != 0) {
        fb_store_close(g.store);
        return fb_fail(err, "cannot start the gateway's threads");
    }

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0);
    char *cert = NULL, *key = NULL;
    if (cfg->tls.cert && cfg->tls.key) {
        cert = read_small_file(cfg->tls.cert, err);
        key = cert ? read_small_file(cfg->tls.key, err) : NULL;
        if (!key) {
            free(cert);
            g.stopping = 1;
            gw_spawner_stop();
            pthread_join(g.reaper, NULL);
            fb_store_close(g.store);
            return -1;
        }
        flags |= MHD_USE_TLS;
    }
    size_t mem_limit = (size_t)cfg->limits.max_header_bytes + 32 * 1024;
    /* One address can hold at most a quarter of the connections: a single
     * slow client (slowloris) cannot take them all. */
    unsigned per_ip = (unsigned)(cfg->limits.max_connections / 4 > 4 ? cfg->limits.max_connections / 4 : 4);
    if (cert)
        g.daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, &g, MHD_OPTION_SOCK_ADDR, &ss,
                                    MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem_limit,
                                    MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->limits.max_connections,
                                    MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                                    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->limits.request_timeout_s,
                                    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                    MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_HTTPS_MEM_KEY, key,
                                    MHD_OPTION_END);
    else
        g.daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, &g, MHD_OPTION_SOCK_ADDR, &ss,
                                    MHD_OPTION_CONNECTION_MEMORY_LIMIT, mem_limit,
                                    MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->limits.max_connections,
                                    MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
                                    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->limits.request_timeout_s,
                                    MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    if (!g.daemon) {
        if (key)
            sodium_memzero(key, strlen(key));
        free(cert);
        free(key);
        g.stopping = 1;
        gw_spawner_stop();
        pthread_join(g.reaper, NULL);
        fb_store_close(g.store);
        return fb_fail(err, "cannot listen on %s (in use, or not an address of this host?)", cfg->listen);
    }
    audit_system(&g, "config", "gateway", "start", "allowed", cfg->listen);
    char *dump = fb_config_dump_json(cfg);
    json_error_t je;
    json_t *cj = dump ? json_loads(dump, 0, &je) : NULL;
    free(dump);
    gw_log("info", NULL, "forgebox gateway listening",
           json_pack("{s:s, s:s, s:o}", "listen", cfg->listen, "org", org, "config", cj ? cj : json_null()));

    int sig = 0;
    sigwait(&sigs, &sig);
    gw_log("info", NULL, "shutting down", json_pack("{s:i}", "signal", sig));
    g.stopping = 1;
    MHD_quiesce_daemon(g.daemon);
    shutdown_sandboxes(&g);
    MHD_stop_daemon(g.daemon);
    gw_spawner_stop();
    pthread_join(g.reaper, NULL);
    shutdown_sandboxes(&g); /* anything created while we were stopping */
    audit_system(&g, "config", "gateway", "stop", "allowed", "signal");
    gw_ratelimit_free(g.rl);
    gw_ratelimit_free(g.rl_user);
    gw_ratelimit_free(g.rl_fail);
    fb_store_close(g.store);
    if (key)
        sodium_memzero(key, strlen(key));
    free(cert);
    free(key);
    return 0;
}
