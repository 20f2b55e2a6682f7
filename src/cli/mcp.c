/*
 * mcp.c - `forgebox mcp`: the MCP stdio transport, as a bridge to a
 * gateway's POST /mcp.
 *
 * An MCP client (Claude Desktop, an IDE, the SDK's StdioClientTransport)
 * starts this command and writes newline-delimited JSON-RPC on its stdin;
 * each line goes, unchanged, to $FORGEBOX_URL/mcp with the Bearer key of
 * $FORGEBOX_API_KEY, and each answer comes back as one line on stdout.
 * stdout carries nothing else; notes go to stderr.  Doing it this way
 * keeps one MCP server (src/mcp, inside the gateway) with one set of
 * permissions, quotas and audit, and needs no state directory, sandbox
 * rights or image on the client's machine: the key alone decides what the
 * client may do, exactly as over HTTP.
 *
 * The bridge keeps the Mcp-Session-Id that initialize returned and the
 * negotiated version, sends both on every later line, and ends the
 * session (DELETE) at end of input.  A session that expired while the
 * client was idle is started again transparently (the initialize the
 * client sent is replayed, once per message).  What the gateway refuses
 * outside JSON-RPC (401, 429, 413, an unreachable gateway) is answered to
 * a request as a JSON-RPC error with the request's id and the reason.
 * Lines are handled one at a time, in order.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "ca/ca.h"
#include "cli/cli.h"
#include "common/util.h"

/* Longest line taken from the client, and longest answer taken from the
 * gateway (its request and output caps are far below). */
#define LINE_MAX_BYTES (64u << 20)
#define ANSWER_MAX_BYTES (64u << 20)

typedef struct bridge {
    CURL *curl;
    char url[2048];
    char *auth;                 /* "Authorization: Bearer ..." (wiped at exit) */
    char session[128];
    char version[32];
    char *init_line;            /* the client's initialize, for a replay */
    fb_ca_client tls;           /* FORGEBOX_CLIENT_*: mutual TLS (src/ca/client.c) */
} bridge;

typedef struct answer {
    long status;
    char *body;
    size_t len;
    bool too_big;
    char session[128];
} answer;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("forgebox mcp: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    answer *a = arg;
    size_t len = size * n;
    if (a->too_big || a->len + len > ANSWER_MAX_BYTES) {
        a->too_big = true;
        return 0;
    }
    char *nb = realloc(a->body, a->len + len + 1);
    if (!nb)
        return 0;
    memcpy(nb + a->len, data, len);
    a->body = nb;
    a->len += len;
    a->body[a->len] = '\0';
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    answer *a = arg;
    size_t len = size * n;
    static const char name[] = "mcp-session-id:";
    if (len > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        const char *v = data + sizeof name - 1;
        size_t vl = len - (sizeof name - 1);
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl < sizeof a->session)
            snprintf(a->session, sizeof a->session, "%.*s", (int)vl, v);
    }
    return len;
}

/* One exchange with the gateway.  -1: no HTTP answer (err says why). */
static int exchange(bridge *b, const char *method, const char *body, size_t len, answer *a, char *err, size_t cap)
{
    memset(a, 0, sizeof *a);
    struct curl_slist *h = NULL;
    char sess[160], ver[64];
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json, text/event-stream");
    h = curl_slist_append(h, b->auth);
    if (b->session[0]) {
        snprintf(sess, sizeof sess, "Mcp-Session-Id: %s", b->session);
        h = curl_slist_append(h, sess);
    }
    if (b->version[0]) {
        snprintf(ver, sizeof ver, "MCP-Protocol-Version: %s", b->version);
        h = curl_slist_append(h, ver);
    }
    CURL *c = b->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, b->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, a);
    fb_ca_client_apply(&b->tls, c, NULL); /* checked once at start-up (fb_cmd_mcp) */
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, cap, "%s", a->too_big ? "the answer is too large" : curl_easy_strerror(rc));
        free(a->body);
        a->body = NULL;
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
    return 0;
}

static void emit(json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return;
    if (fb_write_all(1, text, strlen(text)) < 0 || fb_write_all(1, "\n", 1) < 0)
        note("cannot write to stdout");
    free(text);
}

static json_t *rpc_error(const json_t *id, const char *msg)
{
    json_t *m = json_string(msg);
    return json_pack("{s:s, s:O, s:{s:i, s:o}}", "jsonrpc", "2.0", "id", id, "error", "code", -32000, "message",
                     m ? m : json_string("the gateway refused the request"));
}

/* An SSE answer (one "data:" line per message) as JSON, or NULL. */
static json_t *parse_answer(const answer *a)
{
    json_error_t je;
    const char *d = a->body ? strstr(a->body, "data: ") : NULL;
    if (a->body && a->body[0] != '{' && a->body[0] != '[' && d)
        return json_loadb(d + 6, strcspn(d + 6, "\r\n"), 0, &je);
    return a->body ? json_loadb(a->body, a->len, 0, &je) : NULL;
}

/* Sends one line; writes the answer a request needs (id: the request's;
 * NULL for a notification, or for a line that is no message, whose error
 * is answered with id null as JSON-RPC says).  Returns the HTTP status (0:
 * none). */
static long forward(bridge *b, const char *line, size_t len, const json_t *id, bool is_message,
                    bool answer_errors)
{
    answer a;
    char err[256];
    if (exchange(b, "POST", line, len, &a, err, sizeof err) < 0) {
        note("cannot reach the gateway at %s: %s", b->url, err);
        if (id) {
            char msg[400];
            snprintf(msg, sizeof msg, "cannot reach the ForgeBox gateway: %s", err);
            emit(rpc_error(id, msg));
        }
        return 0;
    }
    if (a.session[0])
        snprintf(b->session, sizeof b->session, "%s", a.session);
    json_t *msg = parse_answer(&a);
    bool is_rpc = json_is_array(msg) || json_object_get(msg, "jsonrpc");
    if (a.status == 404 && b->session[0] && !answer_errors) {
        json_decref(msg);
        free(a.body);
        return a.status; /* the caller starts a new session and retries */
    }
    if (a.status == 200 && is_rpc) {
        json_t *res = json_object_get(msg, "result");
        const char *v = json_string_value(json_object_get(res, "protocolVersion"));
        if (v && strlen(v) < sizeof b->version)
            snprintf(b->version, sizeof b->version, "%s", v);
        emit(json_incref(msg));
    } else if (a.status >= 400) {
        /* A JSON-RPC error without the request's id, or the gateway's own
         * {"error": {code, message}}: the request's answer either way. */
        json_t *ge = json_object_get(msg, "error");
        const char *m = json_string_value(json_object_get(ge, "message"));
        const char *gcode = json_string_value(json_object_get(ge, "code"));
        char text[700];
        if (is_rpc)
            snprintf(text, sizeof text, "%.500s (HTTP %ld)", m ? m : "no reason given", a.status);
        else
            snprintf(text, sizeof text, "gateway: %.64s: %.500s (HTTP %ld)", gcode ? gcode : "error",
                     m ? m : "no reason given", a.status);
        note("%s", text);
        if (id && is_rpc && json_is_integer(json_object_get(ge, "code"))) {
            json_object_set(msg, "id", (json_t *)id);
            emit(json_incref(msg));
        } else if (id) {
            emit(rpc_error(id, text));
        } else if (!is_message && is_rpc) {
            emit(json_incref(msg)); /* e.g. -32700 for a line that is not JSON */
        }
    }
    json_decref(msg);
    free(a.body);
    return a.status;
}

/* The client's initialize again, then notifications/initialized: a new
 * session for a client whose session expired. */
static bool restart_session(bridge *b)
{
    b->session[0] = b->version[0] = '\0';
    if (!b->init_line)
        return false;
    answer a;
    char err[256];
    if (exchange(b, "POST", b->init_line, strlen(b->init_line), &a, err, sizeof err) < 0)
        return false;
    json_t *ans = a.status == 200 ? parse_answer(&a) : NULL;
    const char *v = json_string_value(json_object_get(json_object_get(ans, "result"), "protocolVersion"));
    if (v && strlen(v) < sizeof b->version)
        snprintf(b->version, sizeof b->version, "%s", v);
    json_decref(ans);
    free(a.body);
    if (a.status != 200 || !a.session[0])
        return false;
    snprintf(b->session, sizeof b->session, "%s", a.session);
    static const char done[] = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";
    if (exchange(b, "POST", done, sizeof done - 1, &a, err, sizeof err) == 0)
        free(a.body);
    note("the session had expired: started a new one");
    return true;
}

static void end_session(bridge *b);

static void handle_line(bridge *b, const char *line, size_t len)
{
    json_error_t je;
    json_t *msg = json_loadb(line, len, 0, &je);
    const json_t *id = json_object_get(msg, "id");
    const char *method = json_string_value(json_object_get(msg, "method"));
    bool init = method && strcmp(method, "initialize") == 0;
    if (init) {
        /* A new initialize starts a new session; the old one is ended. */
        end_session(b);
        free(b->init_line);
        b->init_line = strndup(line, len);
        b->session[0] = b->version[0] = '\0';
    }
    bool is_message = json_is_object(msg) && (method || id);
    long st = forward(b, line, len, id, is_message, init || !b->session[0]);
    if (st == 404 && !init) {
        if (restart_session(b))
            forward(b, line, len, id, is_message, true);
        else if (id)
            emit(rpc_error(id, "the MCP session expired and a new one could not be started: initialize again"));
    }
    json_decref(msg);
}

static void end_session(bridge *b)
{
    if (!b->session[0])
        return;
    answer a;
    char err[256];
    if (exchange(b, "DELETE", NULL, 0, &a, err, sizeof err) == 0)
        free(a.body);
}

int fb_cmd_mcp(int argc, char **argv)
{
    if (argc > 1) {
        bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
        fprintf(help ? stdout : stderr,
                "usage: forgebox mcp\n"
                "Serves MCP on stdin/stdout (newline-delimited JSON-RPC), forwarding to the gateway at\n"
                "$FORGEBOX_URL (default http://127.0.0.1:8420) with the API key in $FORGEBOX_API_KEY.\n"
                "Mutual TLS: $FORGEBOX_CLIENT_CERT, _KEY, _CA, _CRL (docs/certificates.md).\n"
                "See docs/mcp.md.\n");
        return help ? 0 : FB_EXIT_USAGE;
    }
    const char *key = getenv("FORGEBOX_API_KEY");
    const char *base = getenv("FORGEBOX_URL");
    if (!key || !*key) {
        note("FORGEBOX_API_KEY is not set: give it a ForgeBox API key (docs/mcp.md)");
        return FB_EXIT_USAGE;
    }
    if (!base || !*base)
        base = "http://127.0.0.1:8420";
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    if ((strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) || bl > 2000) {
        note("FORGEBOX_URL must be an http:// or https:// URL");
        return FB_EXIT_USAGE;
    }
    bridge b;
    memset(&b, 0, sizeof b);
    snprintf(b.url, sizeof b.url, "%.*s/mcp", (int)bl, base);
    fb_err terr = {{0}};
    if (fb_ca_client_from_env(&b.tls, &terr) < 0) {
        note("%s", terr.msg);
        return FB_EXIT_USAGE;
    }
    if (asprintf(&b.auth, "Authorization: Bearer %s", key) < 0)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    b.curl = curl_easy_init();
    if (!b.curl) {
        note("cannot start libcurl");
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        if (n == 0)
            continue;
        if ((size_t)n > LINE_MAX_BYTES) {
            note("a message of %zd bytes is over the %u-byte limit: dropped", n, LINE_MAX_BYTES);
            continue;
        }
        handle_line(&b, line, (size_t)n);
    }
    free(line);
    end_session(&b);
    curl_easy_cleanup(b.curl);
    curl_global_cleanup();
    sodium_memzero(b.auth, strlen(b.auth));
    free(b.auth);
    free(b.init_line);
    return 0;
}
