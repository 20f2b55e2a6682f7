/*
 * client.c - the gateway's side of docs/node-api.md (client.h): its
 * identity toward nodes, every HTTPS call to a node, and the lifecycle of
 * a remote sandbox (create, attach, deadline, delete, health, files).
 *
 * Identity.  libcurl (GnuTLS) presents nodes.tls_cert/key and speaks TLS
 * 1.3 only.  libcurl's own peer check is off: the node's certificate is
 * decided by fb_ca_verify_session (chain to nodes.tls_ca only, the CRL
 * re-read on change, role node, exactly the name the node registered
 * under) in CURLOPT_PREREQFUNCTION, which libcurl calls once the
 * connection is up (handshake done) or reused and before it sends a byte
 * of the request.  So every request - not only every connection - is
 * checked, a refusal names the verdict (revoked, other_ca, wrong_name,
 * ...) for the audit log rather than a generic handshake failure, and no
 * request byte ever reaches a node that is not the one registered.  A
 * chain accepted before for the same name is not verified again while the
 * CA and CRL files are unchanged (verdicts.h): a revocation still refuses
 * the very next request.
 * Connections (and TLS sessions) are shared by every call through one
 * curl share handle: a gateway keeps a warm connection per node.
 *
 * A remote sandbox is an ordinary supervised fb_sandbox built by
 * fb_sandbox_attach_fd around one end of a socketpair; the other end is a
 * translator (client_bridge.c, which says why).  File transfers are the
 * exception: the agent protocol moves files in chunks whose end the
 * receiver cannot see, the node's API moves whole files, so the sandbox's
 * fb_file_put/fb_file_get call the hooks below (sandbox/supervisor.h
 * fb_sandbox_set_remote) and go to the node directly.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ca/ca.h"
#include "node/client_internal.h"
#include "node/verdicts.h"
#include "sandbox/supervisor.h"

#define CONNECT_TIMEOUT_S 5L
#define CALL_TIMEOUT_S 60L
#define CREATE_TIMEOUT_S 300L   /* a VM cold boot under TCG */
#define FILE_TIMEOUT_S 600L
#define SMALL_BODY (1u << 20)

struct fb_node_client {
    CURLSH *share;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    fb_ca_verifier *ver;
    nv_cache *verdicts;             /* node chains accepted (verdicts.h; NULL: none kept) */
    char *cert, *key;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int live;                       /* bridges running */
    fb_node_refusal_fn on_refusal;
    void *refusal_ctx;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
    (void)h;
    (void)a;
    fb_node_client *nc = u;
    pthread_mutex_lock(&nc->share_mu[d < CURL_LOCK_DATA_LAST ? d : 0]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
    (void)h;
    fb_node_client *nc = u;
    pthread_mutex_unlock(&nc->share_mu[d < CURL_LOCK_DATA_LAST ? d : 0]);
}

int fb_node_client_open(const fb_config *cfg, fb_node_client **out, fb_err *err)
{
    *out = NULL;
    if (!cfg->nodes.tls_cert || !cfg->nodes.tls_key || !cfg->nodes.tls_ca)
        return fb_fail(err, "nodes.mode remote needs nodes.tls_cert, nodes.tls_key and nodes.tls_ca "
                            "(the gateway's certificate toward nodes and the organisation CA)");
    pthread_once(&curl_once, curl_init_once);
    fb_node_client *nc = calloc(1, sizeof *nc);
    if (!nc)
        return fb_fail(err, "out of memory");
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&nc->share_mu[i], NULL);
    pthread_mutex_init(&nc->mu, NULL);
    pthread_cond_init(&nc->cv, NULL);
    if (fb_ca_verifier_open(cfg->nodes.tls_ca, cfg->nodes.tls_crl, FB_CA_ROLE_BIT(FB_CA_ROLE_NODE), &nc->ver,
                            err) < 0) {
        fb_fail_prefix(err, "nodes.tls_ca");
        fb_node_client_free(nc);
        return -1;
    }
    nc->verdicts = nv_cache_new(cfg->nodes.tls_ca, cfg->nodes.tls_crl);
    nc->cert = strdup(cfg->nodes.tls_cert);
    nc->key = strdup(cfg->nodes.tls_key);
    nc->share = curl_share_init();
    if (!nc->cert || !nc->key || !nc->share) {
        fb_node_client_free(nc);
        return fb_fail(err, "out of memory");
    }
    if (curl_share_setopt(nc->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
        curl_share_setopt(nc->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
        curl_share_setopt(nc->share, CURLSHOPT_USERDATA, nc) != CURLSHE_OK ||
        curl_share_setopt(nc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
        curl_share_setopt(nc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
        curl_share_setopt(nc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
        fb_node_client_free(nc);
        return fb_fail(err, "libcurl refused to share connections between node calls");
    }
    /* The files must be readable now, not at the first sandbox. */
    if (access(nc->cert, R_OK) < 0 || access(nc->key, R_OK) < 0) {
        fb_fail_errno(err, "cannot read nodes.tls_cert or nodes.tls_key");
        fb_node_client_free(nc);
        return -1;
    }
    *out = nc;
    return 0;
}

void fb_node_client_on_refusal(fb_node_client *nc, fb_node_refusal_fn fn, void *ctx)
{
    nc->on_refusal = fn;
    nc->refusal_ctx = ctx;
}

void nc_live_add(fb_node_client *nc, int delta)
{
    pthread_mutex_lock(&nc->mu);
    nc->live += delta;
    pthread_cond_broadcast(&nc->cv);
    pthread_mutex_unlock(&nc->mu);
}

void fb_node_client_free(fb_node_client *nc)
{
    if (!nc)
        return;
    /* Bridges end when their sandboxes are destroyed (core does that
     * first); give the last ones a bounded moment. */
    pthread_mutex_lock(&nc->mu);
    for (int i = 0; i < 100 && nc->live > 0; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&nc->cv, &nc->mu, &ts);
    }
    bool busy = nc->live > 0;
    pthread_mutex_unlock(&nc->mu);
    if (busy)
        return; /* a bridge still runs: leak rather than free under it */
    if (nc->share)
        curl_share_cleanup(nc->share);
    fb_ca_verifier_free(nc->ver);
    nv_cache_free(nc->verdicts);
    free(nc->cert);
    free(nc->key);
    free(nc);
}

/* ---- one call ---------------------------------------------------------------------- */

void nc_resp_init(nc_resp *r, size_t max)
{
    memset(r, 0, sizeof *r);
    r->max = max;
    r->sink_fd = -1;
}

void nc_resp_free(nc_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->len = r->cap = 0;
}

typedef struct call_ctx {
    fb_node_client *nc;
    CURL *h;
    const nc_target *t;
    const nc_call *call;
    nc_resp *resp;
    bool refused;
    fb_ca_verdict verdict;
    char reason[512];     /* the node name (72), the verdict and the verifier's line (256) */
    bool too_big;
    int body_fd;
} call_ctx;

/* After the handshake (or on a reused connection), before the request:
 * the node must be the one registered under t->name. */
static int prereq(void *u, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    call_ctx *cc = u;
    const struct curl_tlssessioninfo *ti = NULL;
    if (curl_easy_getinfo(cc->h, CURLINFO_TLS_SSL_PTR, &ti) != CURLE_OK || !ti || ti->backend != CURLSSLBACKEND_GNUTLS ||
        !ti->internals) {
        cc->refused = true;
        cc->verdict = FB_CA_BAD_CERT;
        snprintf(cc->reason, sizeof cc->reason, "no GnuTLS session to check the node's certificate on");
        return CURL_PREREQFUNC_ABORT;
    }
    fb_ca_peer peer;
    memset(&peer, 0, sizeof peer);
    char why[256] = "";
    /* A reused connection presents the chain it was accepted with: not
     * verified again while the CA and CRL files are unchanged (verdicts.h). */
    nv_pending pend;
    if (nv_check(cc->nc->verdicts, ti->internals, cc->t->name, &peer, &pend) && peer.role == FB_CA_ROLE_NODE) {
        cc->verdict = FB_CA_OK;
        return CURL_PREREQFUNC_OK;
    }
    cc->verdict = fb_ca_verify_session(cc->nc->ver, ti->internals, cc->t->name, &peer, why, sizeof why);
    if (cc->verdict == FB_CA_OK) {
        nv_put(cc->nc->verdicts, &pend, &peer);
        return CURL_PREREQFUNC_OK;
    }
    cc->refused = true;
    if (cc->verdict == FB_CA_WRONG_NAME && peer.name[0])
        snprintf(cc->reason, sizeof cc->reason, "node %s presented a certificate for %s", cc->t->name, peer.name);
    else
        snprintf(cc->reason, sizeof cc->reason, "node %s presented a certificate refused as %s: %s", cc->t->name,
                 fb_ca_verdict_name(cc->verdict), why);
    return CURL_PREREQFUNC_ABORT;
}

static size_t on_body(char *p, size_t sz, size_t n, void *u)
{
    call_ctx *cc = u;
    size_t len = sz * n;
    nc_resp *r = cc->resp;
    if (r->status == 0)
        curl_easy_getinfo(cc->h, CURLINFO_RESPONSE_CODE, &r->status);
    bool ok = r->status >= 200 && r->status < 300;
    if (ok && cc->call->on_data)
        return cc->call->on_data(cc->call->ctx, p, len) ? len : 0;
    if (ok && r->sink_fd >= 0) {
        if (r->len + len > r->sink_max) {
            r->sink_over = true;
            return 0;
        }
        if (fb_write_all(r->sink_fd, p, len) < 0) {
            r->sink_failed = true;
            return 0;
        }
        r->len += len;
        return len;
    }
    if (r->len + len + 1 > r->max) {
        cc->too_big = true;
        return 0;
    }
    if (r->len + len + 1 > r->cap) {
        size_t ncap = r->cap ? r->cap : 1024;
        while (ncap < r->len + len + 1)
            ncap *= 2;
        char *nb = realloc(r->body, ncap);
        if (!nb)
            return 0;
        r->body = nb;
        r->cap = ncap;
    }
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

static size_t on_read(char *buf, size_t sz, size_t n, void *u)
{
    call_ctx *cc = u;
    ssize_t got;
    do
        got = read(cc->body_fd, buf, sz * n);
    while (got < 0 && errno == EINTR);
    return got < 0 ? CURL_READFUNC_ABORT : (size_t)got;
}

static int on_progress(void *u, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    call_ctx *cc = u;
    if (cc->call->stop && atomic_load(cc->call->stop))
        return 1;
    if (cc->call->watch && fb_sandbox_state(cc->call->watch) != FB_OK)
        return 1;
    return 0;
}

/* The node's {"error":{"code","message"}} into r. */
static void parse_error(nc_resp *r)
{
    if (!r->body)
        return;
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    json_t *e = j ? json_object_get(j, "error") : NULL;
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code)
        snprintf(r->code, sizeof r->code, "%s", code);
    if (msg)
        snprintf(r->message, sizeof r->message, "%s", msg);
    json_decref(j);
}

fb_errc nc_request(fb_node_client *nc, const nc_target *t, const nc_call *call, nc_resp *resp, fb_err *err)
{
    CURL *h = curl_easy_init();
    if (!h) {
        fb_fail(err, "out of memory calling node %s", t->name);
        return FB_E_NOMEM;
    }
    char url[FB_NODE_ADDR_MAX + 4200];
    if (snprintf(url, sizeof url, "https://%s%s", t->address, call->path) >= (int)sizeof url) {
        curl_easy_cleanup(h);
        fb_fail(err, "internal: a node URL too long");
        return FB_E_INTERNAL;
    }
    call_ctx cc = {.nc = nc, .h = h, .t = t, .call = call, .resp = resp, .body_fd = call->body_fd};
    struct curl_slist *hdrs = NULL;
    char ct[128];
    if (call->content_type) {
        snprintf(ct, sizeof ct, "Content-Type: %s", call->content_type);
        hdrs = curl_slist_append(hdrs, ct);
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_SHARE, nc->share);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)(CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_DEFAULT));
    curl_easy_setopt(h, CURLOPT_SSLCERT, nc->cert);
    curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(h, CURLOPT_SSLKEY, nc->key);
    /* The peer is decided in prereq (fb_ca_verify_session), not here. */
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, prereq);
    curl_easy_setopt(h, CURLOPT_PREREQDATA, &cc);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    if (call->timeout_s > 0)
        curl_easy_setopt(h, CURLOPT_TIMEOUT, call->timeout_s);
    /* A node writes a keepalive line every 10 s of a quiet stream: 30 s
     * of nothing at all is a dead node or a cut network. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &cc);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &cc);
    if (strcmp(call->method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(call->method, "PUT") == 0 && call->body_fd >= 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &cc);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)call->body_len);
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, call->method);
        if (call->body || strcmp(call->method, "POST") == 0 || strcmp(call->method, "PATCH") == 0) {
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, call->body ? call->body : "");
        }
    }
    CURLcode rc = curl_easy_perform(h);
    if (resp->status == 0)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (cc.refused) {
        fb_fail(err, "%s (forbidden)", cc.reason);
        if (nc->on_refusal)
            nc->on_refusal(nc->refusal_ctx, t->name, fb_ca_verdict_name(cc.verdict), cc.reason);
        return FB_E_OTHER;
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        fb_fail(err, "the call to node %s was stopped", t->name);
        return FB_E_KILLED;
    }
    if (rc == CURLE_WRITE_ERROR && (cc.too_big || resp->sink_over)) {
        if (resp->sink_over)
            return FB_OK; /* the caller reports the size */
        fb_fail(err, "node %s answered more than %zu bytes", t->name, resp->max);
        return FB_E_PROTOCOL;
    }
    if (rc == CURLE_WRITE_ERROR && resp->sink_failed) {
        fb_fail(err, "cannot write what node %s sent", t->name);
        return FB_E_IO_ERROR;
    }
    if (rc == CURLE_WRITE_ERROR && call->on_data)
        return FB_OK; /* the stream's consumer stopped it */
    if (rc != CURLE_OK) {
        fb_fail(err, "node %s (%s) cannot be reached: %s", t->name, t->address, curl_easy_strerror(rc));
        return FB_E_SANDBOX_ENDED;
    }
    if (resp->status < 200 || resp->status >= 300)
        parse_error(resp);
    return FB_OK;
}

fb_errc nc_status_errc(const nc_target *t, const nc_resp *r, const char *what, fb_err *err)
{
    if (r->status >= 200 && r->status < 300)
        return FB_OK;
    const char *code = r->code[0] ? r->code : "internal";
    const char *msg = r->message[0] ? r->message : "no message";
    fb_errc e = fb_errc_parse(code);
    if (r->status == 404 && !r->code[0])
        e = FB_E_NOT_FOUND;
    /* The node's own codes have no fb_errc: capacity, unavailable, forbidden. */
    if (e == FB_E_OTHER)
        fb_fail(err, "node %s: %s: %s (%s)", t->name, what, msg, code);
    else
        fb_fail(err, "%s", msg);
    return e;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void target_of(const fb_node_record *node, nc_target *t)
{
    snprintf(t->name, sizeof t->name, "%s", node->name);
    snprintf(t->address, sizeof t->address, "%s", node->address);
}

static nc_bridge *bridge_of(fb_sandbox *sb)
{
    return sb->remote_ctx;
}

static fb_errc remote_put(void *ctx, fb_sandbox *sb, const char *remote, int fd, unsigned mode, fb_err *err);
static fb_errc remote_get(void *ctx, fb_sandbox *sb, const char *remote, int fd, uint64_t max, fb_err *err);
static const struct fb_sandbox_remote remote_ops = {.put = remote_put, .get = remote_get};

/* The local handle: a supervised sandbox on one end of a socketpair, the
 * translator on the other. */
static fb_errc make_handle(fb_node_client *nc, const nc_target *t, const char *id, const char *isolation,
                           const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fb_fail_errno(err, "socketpair");
        return FB_E_RESOURCE;
    }
    nc_bridge *b = NULL;
    if (nc_bridge_start(nc, t, id, sv[1], &b, err) < 0) {
        close(sv[0]);
        close(sv[1]);
        return FB_E_RESOURCE;
    }
    fb_sandbox_config c = *cfg;
    c.net_adopt = NULL;
    c.net_ctx = NULL;
    fb_sandbox *sb = NULL;
    if (fb_sandbox_attach_fd(sv[0], &c, &sb, err) < 0)
        return FB_E_INTERNAL; /* the bridge saw its channel close and ended */
    fb_sandbox_set_remote(sb, id, isolation && *isolation ? isolation : "remote", &remote_ops, b);
    *out = sb;
    return FB_OK;
}

fb_errc fb_node_client_create(fb_node_client *nc, const fb_node_record *node, const fb_node_sandbox_req *req,
                              fb_sandbox **out, fb_err *err)
{
    *out = NULL;
    nc_target t;
    target_of(node, &t);
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s}", "id", req->id, "team_id", req->team_id,
                          "backend", fb_backend_name(req->cfg->backend), "memory_mib", (json_int_t)req->cfg->memory_mib,
                          "vcpus", (json_int_t)req->cfg->vcpus, "disk_mib", (json_int_t)req->cfg->disk_mib,
                          "max_output", (json_int_t)req->cfg->max_output, "expires_at", req->expires_at);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body) {
        fb_fail(err, "out of memory");
        return FB_E_NOMEM;
    }
    nc_call call = {.method = "POST", .path = "/node/v1/sandboxes", .body = body, .body_len = strlen(body),
                    .body_fd = -1, .content_type = "application/json", .timeout_s = CREATE_TIMEOUT_S};
    nc_resp r;
    nc_resp_init(&r, SMALL_BODY);
    fb_errc code = nc_request(nc, &t, &call, &r, err);
    free(body);
    if (code == FB_OK)
        code = nc_status_errc(&t, &r, "cannot create the sandbox", err);
    char isolation[16] = "";
    if (code == FB_OK) {
        json_t *a = r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
        const char *iso = json_string_value(json_object_get(a, "isolation"));
        snprintf(isolation, sizeof isolation, "%s", iso ? iso : node->isolation);
        json_decref(a);
    }
    nc_resp_free(&r);
    if (code != FB_OK)
        return code;
    code = make_handle(nc, &t, req->id, isolation, req->cfg, out, err);
    if (code != FB_OK) {
        fb_err ignored;
        nc_call del = {.method = "DELETE", .path = NULL, .body_fd = -1, .timeout_s = CALL_TIMEOUT_S};
        char path[128];
        snprintf(path, sizeof path, "/node/v1/sandboxes/%s", req->id);
        del.path = path;
        nc_resp_init(&r, SMALL_BODY);
        (void)nc_request(nc, &t, &del, &r, &ignored);
        nc_resp_free(&r);
    }
    return code;
}

fb_errc fb_node_client_attach(fb_node_client *nc, const fb_node_record *node, const char *sandbox_id,
                              const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    nc_target t;
    target_of(node, &t);
    return make_handle(nc, &t, sandbox_id, node->isolation, cfg, out, err);
}

/* A sandbox call with a small JSON body (or none). */
static fb_errc sandbox_call(fb_sandbox *sb, const char *method, const char *suffix, const char *json,
                            const char *what, long *status, fb_err *err)
{
    nc_bridge *b = bridge_of(sb);
    if (!b) {
        fb_fail(err, "internal: not a remote sandbox");
        return FB_E_INTERNAL;
    }
    const nc_target *t = nc_bridge_target(b);
    char path[256];
    snprintf(path, sizeof path, "/node/v1/sandboxes/%s%s", nc_bridge_sandbox(b), suffix);
    nc_call call = {.method = method, .path = path, .body = json, .body_len = json ? strlen(json) : 0,
                    .body_fd = -1, .content_type = json ? "application/json" : NULL, .timeout_s = CALL_TIMEOUT_S};
    nc_resp r;
    nc_resp_init(&r, SMALL_BODY);
    fb_errc code = nc_request(nc_bridge_client(b), t, &call, &r, err);
    if (status)
        *status = r.status;
    if (code == FB_OK)
        code = nc_status_errc(t, &r, what, err);
    nc_resp_free(&r);
    return code;
}

fb_errc fb_node_client_set_expiry(fb_sandbox *sb, const char *expires_at, fb_err *err)
{
    json_t *j = json_pack("{s:s}", "expires_at", expires_at);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body) {
        fb_fail(err, "out of memory");
        return FB_E_NOMEM;
    }
    fb_errc code = sandbox_call(sb, "PATCH", "", body, "cannot change the deadline", NULL, err);
    free(body);
    return code;
}

fb_errc fb_node_client_delete(fb_sandbox *sb, fb_err *err)
{
    long status = 0;
    fb_errc code = sandbox_call(sb, "DELETE", "", NULL, "cannot delete the sandbox", &status, err);
    if (code != FB_OK && status == 404)
        return FB_OK; /* already gone */
    return code;
}

const char *fb_node_client_node_name(fb_sandbox *sb)
{
    nc_bridge *b = bridge_of(sb);
    return b ? nc_bridge_target(b)->name : "";
}

fb_errc fb_node_client_health(fb_node_client *nc, const fb_node_record *node, fb_err *err)
{
    nc_target t;
    target_of(node, &t);
    nc_call call = {.method = "GET", .path = "/node/v1/healthz", .body_fd = -1, .timeout_s = 10};
    nc_resp r;
    nc_resp_init(&r, SMALL_BODY);
    fb_errc code = nc_request(nc, &t, &call, &r, err);
    if (code == FB_OK)
        code = nc_status_errc(&t, &r, "health check failed", err);
    nc_resp_free(&r);
    return code;
}

/* ---- files ------------------------------------------------------------------------------ */

/* Percent-encodes a sandbox path for the query; a relative path is
 * relative to /workspace, as the agent has it. */
static void escape_query(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    if (in[0] != '/' && cap > 16)
        k = (size_t)snprintf(out, cap, "%%2Fworkspace%%2F");
    for (const unsigned char *p = (const unsigned char *)in; *p && k + 4 < cap; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
            *p == '_' || *p == '.' || *p == '~' || *p == '/') {
            out[k++] = (char)*p;
        } else {
            out[k++] = '%';
            out[k++] = hex[*p >> 4];
            out[k++] = hex[*p & 15];
        }
    }
    out[k] = '\0';
}

/* The node needs the length up front; the core hands a pipe: spool it
 * to an anonymous file first (bounded by what the core lets through,
 * limits.max_file_bytes). */
static fb_errc remote_put(void *ctx, fb_sandbox *sb, const char *remote, int fd, unsigned mode, fb_err *err)
{
    nc_bridge *b = ctx;
    const nc_target *t = nc_bridge_target(b);
    fb_errc dead = fb_sandbox_state(sb);
    if (dead != FB_OK) {
        fb_fail(err, "sandbox %s is no longer usable", nc_bridge_sandbox(b));
        return dead;
    }
    cleanup_fd int spool = memfd_create("fb-upload", MFD_CLOEXEC);
    if (spool < 0) {
        fb_fail_errno(err, "memfd_create");
        return FB_E_RESOURCE;
    }
    uint8_t buf[65536];
    uint64_t total = 0;
    for (;;) {
        size_t got = 0;
        if (fb_read_up_to(fd, buf, sizeof buf, &got) < 0) {
            fb_fail_errno(err, "cannot read the local file for %s", remote);
            return FB_E_IO_ERROR;
        }
        if (got == 0)
            break;
        if (fb_write_all(spool, buf, got) < 0) {
            fb_fail_errno(err, "cannot spool the upload of %s", remote);
            return FB_E_NO_SPACE;
        }
        total += got;
    }
    if (lseek(spool, 0, SEEK_SET) < 0) {
        fb_fail_errno(err, "lseek");
        return FB_E_IO_ERROR;
    }
    char q[FB_MAX_PATH * 3 + 1], path[FB_MAX_PATH * 3 + 128];
    escape_query(remote, q, sizeof q);
    snprintf(path, sizeof path, "/node/v1/sandboxes/%s/files?path=%s&mode=%04o", nc_bridge_sandbox(b), q,
             mode & 0777);
    nc_call call = {.method = "PUT", .path = path, .body_fd = spool, .body_len = total,
                    .content_type = "application/octet-stream", .timeout_s = FILE_TIMEOUT_S, .watch = sb};
    nc_resp r;
    nc_resp_init(&r, SMALL_BODY);
    fb_errc code = nc_request(nc_bridge_client(b), t, &call, &r, err);
    if (code == FB_OK)
        code = nc_status_errc(t, &r, "cannot put the file", err);
    nc_resp_free(&r);
    return code;
}

static fb_errc remote_get(void *ctx, fb_sandbox *sb, const char *remote, int fd, uint64_t max, fb_err *err)
{
    nc_bridge *b = ctx;
    const nc_target *t = nc_bridge_target(b);
    fb_errc dead = fb_sandbox_state(sb);
    if (dead != FB_OK) {
        fb_fail(err, "sandbox %s is no longer usable", nc_bridge_sandbox(b));
        return dead;
    }
    char q[FB_MAX_PATH * 3 + 1], path[FB_MAX_PATH * 3 + 128];
    escape_query(remote, q, sizeof q);
    snprintf(path, sizeof path, "/node/v1/sandboxes/%s/files?path=%s&max=%llu", nc_bridge_sandbox(b), q,
             (unsigned long long)max);
    nc_call call = {.method = "GET", .path = path, .body_fd = -1, .timeout_s = FILE_TIMEOUT_S, .watch = sb};
    nc_resp r;
    nc_resp_init(&r, SMALL_BODY);
    r.sink_fd = fd;
    r.sink_max = max;
    fb_errc code = nc_request(nc_bridge_client(b), t, &call, &r, err);
    if (code == FB_OK && r.sink_over) {
        fb_fail(err, "cannot get %s: file is larger than the %llu-byte limit", remote, (unsigned long long)max);
        code = FB_E_TOO_LARGE;
    } else if (code == FB_OK) {
        code = nc_status_errc(t, &r, "cannot get the file", err);
    }
    nc_resp_free(&r);
    return code;
}
