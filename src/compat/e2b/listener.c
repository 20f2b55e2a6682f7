/*
 * listener.c - the E2B-compatible listener's daemon and request pipeline
 * (e2b.h, internal.h).
 *
 * One libmicrohttpd daemon, thread per connection like the native
 * gateway's, on e2b.listen.  The SDKs send two kinds of requests to it
 * (E2B_API_URL and E2B_SANDBOX_URL both point here):
 *
 * - control requests carry the ForgeBox API key in X-API-Key; they pass
 *   the same gate as the native API (gateway/authgate.h: authentication,
 *   the failure gate, the key's and user's budgets, all audited, with the
 *   gateway's own rate limiters), then the service decides and audits
 *   each permission;
 * - in-sandbox ("envd" and code interpreter) requests name their sandbox
 *   in E2b-Sandbox-Id and carry its envd access token in X-Access-Token.
 *   The token stands for the key that created the sandbox (boxes.c),
 *   checked as that key stands at each request (revoked, expired, owner
 *   disabled: the token is dead too); a wrong or missing token is a 401
 *   charged to the source's failure budget like a bad key, a good one
 *   charges that key's request budget, and the
 *   service opens the sandbox for the key's principal, deciding and
 *   auditing the permission against the sandbox's team as for the native
 *   API.  (E2B's other form, the sandbox in the host name, is not used
 *   when E2B_SANDBOX_URL is set, and is not served.)
 *
 * As in the gateway, everything that can be decided from the headers is
 * decided before the body is read; bodies are capped (limits.max_body_bytes,
 * or limits.max_file_bytes for uploads, which stream into the sandbox).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "compat/e2b/internal.h"
#include "gateway/listener.h"

/* A failed credential: audited unless the source is over its budget. */
static enum MHD_Result refuse(e2b_req *r, const char *why)
{
    int wait = gw_failgate_take(r->s->sh.fails, r->caller.source_ip);
    if (wait > 0)
        return e2b_send_429(r, wait, "too many failed authentications from this address");
    fb_core_metrics_auth_failure();
    fb_core_audit_auth(r->s->sh.core, &r->caller, r->api == E2B_API_ENVD ? "e2b envd" : "e2b control", "denied",
                       why);
    return e2b_send_error(r, 401, "invalid credentials");
}

/* Control API: X-API-Key through the gateway's gate.  false: answered. */
static bool gate_control(e2b_req *r, enum MHD_Result *rc)
{
    const char *key = NULL;
    size_t klen = 0;
    if (MHD_lookup_connection_value_n(r->conn, MHD_HEADER_KIND, "X-API-Key", 9, &key, &klen) != MHD_YES)
        key = NULL;
    char hdr[512];
    size_t hlen = 0;
    if (key && klen < sizeof hdr - 8) {
        memcpy(hdr, "Bearer ", 7);
        memcpy(hdr + 7, key, klen);
        hlen = 7 + klen;
    }
    int wait = 0;
    const char *why = "";
    fb_core_err err = {0};
    gw_gate_result g = gw_auth_gate(&r->s->sh, &r->caller, hlen ? hdr : NULL, hlen, "e2b control", &wait, &why, &err);
    sodium_memzero(hdr, sizeof hdr);
    if (g == GW_GATE_OK)
        return true;
    *rc = g == GW_GATE_DENIED    ? e2b_send_core_error(r, &err)
          : g == GW_GATE_LIMITED ? e2b_send_429(r, wait, why)
                                 : e2b_send_error(r, 503, why); /* the audit log cannot be written */
    return false;
}

/* envd: the sandbox's access token.  false: answered. */
static bool gate_envd(e2b_req *r, const char *sandbox_id, enum MHD_Result *rc)
{
    r->box = e2b_box_get(r->s->boxes, sandbox_id);
    const char *token = e2b_header(r, "X-Access-Token");
    /* @e2b/code-interpreter creates and lists contexts without the
     * token.  Those two calls only name a context (envd.c: nothing runs,
     * nothing is read); every run in it needs the token. */
    if (r->box && !token && strcmp(r->url, "/contexts") == 0) {
        r->caller.who.team_id[0] = '\0';
        r->anonymous = true;
        return true;
    }
    if (!r->box) {
        /* Unknown here: a sandbox this listener did not hand out, or one
         * that is gone.  The SDK reads 502 on /health as "not running". */
        if (strcmp(r->url, "/health") == 0) {
            *rc = e2b_send_error(r, 502, "the sandbox is not running");
            return false;
        }
        *rc = refuse(r, "unknown sandbox or access token");
        return false;
    }
    if (!e2b_box_token_ok(r->box, token)) {
        *rc = refuse(r, "wrong envd access token");
        return false;
    }
    /* The token stands for its key, checked as the key stands now: a
     * revoked or expired key, or a disabled owner, ends its tokens too. */
    const char *why = "";
    fb_core_err err = {0};
    if (fb_core_authenticate_key_id(r->s->sh.core, &r->caller, e2b_box_key_id(r->box), &why, &err) < 0) {
        *rc = err.code == FB_CORE_INTERNAL ? e2b_send_core_error(r, &err) : refuse(r, why);
        return false;
    }
    char ukey[80];
    snprintf(ukey, sizeof ukey, "user:%s", r->caller.who.user_id);
    int wait = gw_ratelimit_take(r->s->sh.rl, r->caller.who.key_id);
    if (wait == 0)
        wait = gw_ratelimit_take(r->s->sh.rl_user, ukey);
    if (wait > 0) {
        *rc = e2b_send_429(r, wait, "too many requests for this key");
        return false;
    }
    if (fb_core_audit_auth(r->s->sh.core, &r->caller, "e2b envd", "allowed", "envd access token") < 0) {
        *rc = e2b_send_error(r, 503, "the audit log cannot be written; refusing to act unaudited");
        return false;
    }
    return true;
}

static e2b_req *req_new(e2b_srv *s, struct MHD_Connection *conn, const char *method, const char *url)
{
    e2b_req *r = calloc(1, sizeof *r);
    if (r) {
        *r = (e2b_req){.s = s, .conn = conn, .method = method, .url = url};
        gw_caller_init(&r->caller, conn);
        snprintf(r->caller.action, sizeof r->caller.action, "%s %.60s (e2b)", method, url);
    }
    return r;
}

/* Everything before the body.  false: answered. */
static bool gate(e2b_req *r, enum MHD_Result *rc)
{
    const fb_config *cfg = r->s->sh.cfg;
    const char *sid = e2b_header(r, "E2b-Sandbox-Id");
    r->api = sid ? E2B_API_ENVD : E2B_API_CONTROL;
    if (r->api == E2B_API_ENVD ? !gate_envd(r, sid, rc) : !gate_control(r, rc))
        return false;
    r->cap = e2b_files_streams(r) ? cfg->limits.max_file_bytes : cfg->limits.max_body_bytes;
    const char *cl = e2b_header(r, "Content-Length");
    uint64_t n;
    if (cl && (fb_parse_u64(cl, 0, UINT64_MAX >> 1, &n) < 0 || n > r->cap)) {
        char msg[96];
        snprintf(msg, sizeof msg, "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
        *rc = e2b_send_error(r, 413, msg);
        return false;
    }
    if (e2b_files_streams(r)) {
        bool answered = false;
        *rc = e2b_files_begin(r, &answered);
        return !answered;
    }
    return true;
}

static enum MHD_Result take_body(e2b_req *r, const char *data, size_t n)
{
    if (r->too_large || r->received + n > r->cap) {
        if (!r->too_large && r->upload)
            e2b_files_abort(r);
        r->too_large = true;
        return MHD_YES;
    }
    r->received += n;
    if (r->upload) {
        e2b_files_chunk(r, data, n);
        return MHD_YES;
    }
    if (e2b_files_streams(r))
        return MHD_YES;
    return gw_buf_add(&r->body, &r->len, &r->bufcap, data, n) < 0 ? MHD_NO : MHD_YES;
}

static enum MHD_Result dispatch(e2b_req *r)
{
    if (r->too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "the body exceeds the %llu-byte limit", (unsigned long long)r->cap);
        return e2b_send_error(r, 413, msg);
    }
    if (e2b_files_streams(r))
        return e2b_files_end(r);
    return r->api == E2B_API_ENVD ? e2b_envd(r) : e2b_control(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    e2b_req *r = *con_cls;
    if (!r) {
        r = req_new(cls, conn, method, url);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        enum MHD_Result rc = MHD_YES;
        gate(r, &rc);
        return rc;
    }
    r->conn = conn;
    if (!*upload_data_size)
        return r->answered ? MHD_YES : dispatch(r);
    /* A piece of body: dropped unread once answered. */
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    return r->answered ? MHD_YES : take_body(r, upload_data, n);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    e2b_srv *s = cls;
    e2b_req *r = *con_cls;
    if (r) {
        if (r->upload)
            e2b_files_abort(r);
        e2b_box_put(s->boxes, r->box);
        free(r->body);
        free(r);
    }
    *con_cls = NULL;
}

static int e2b_start(const struct fb_gateway_shared *sh, void **state, fb_err *err)
{
    const fb_config *cfg = sh->cfg;
    e2b_srv *s = calloc(1, sizeof *s);
    if (!s || !(s->boxes = e2b_boxes_new())) {
        free(s);
        return fb_fail(err, "out of memory");
    }
    s->sh = *sh;
    /* TLS as the gateway's: the same certificate when tls.* is set. */
    s->daemon = gw_listen(cfg, cfg->e2b.listen, "e2b.listen", on_request, s, on_completed, sh->tls_cert,
                          sh->tls_key, err);
    if (!s->daemon) {
        e2b_boxes_free(s->boxes);
        free(s);
        return -1;
    }
    fb_core_audit(sh->core, NULL, "config", "e2b", "start", "allowed", cfg->e2b.listen);
    fb_log("info", NULL, "forgebox e2b-compatible listener", json_pack("{s:s}", "listen", cfg->e2b.listen));
    *state = s;
    return 0;
}

static void e2b_quiesce(void *state)
{
    e2b_srv *s = state;
    MHD_quiesce_daemon(s->daemon);
}

static void e2b_stop(void *state)
{
    e2b_srv *s = state;
    MHD_stop_daemon(s->daemon);
    e2b_boxes_free(s->boxes);
    free(s);
}

const fb_gateway_companion fb_e2b_companion = {e2b_start, e2b_quiesce, e2b_stop};
