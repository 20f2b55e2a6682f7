/*
 * h_execs.c - POST /v1/sandboxes/{id}/exec, answered as one JSON object
 * or, with "Accept: text/event-stream", as server-sent events (gw.h).
 *
 * The command runs as a service-layer exec (src/core/execs.c) that holds
 * the sandbox, not this connection: the connection holds only the exec.
 * A stream reads the exec's bounded event buffer; a reader that stops
 * reading stalls only its own command, and deleting or expiring the
 * sandbox cancels it at once (finding 9 of issue 6).  A plain exec
 * watches its connection while it waits and cancels the command when the
 * client goes away (finding 13).
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"

static const gw_field exec_fields[] = {
    {"cmd", GW_T_ARRAY, true, "\"cmd\" must be a non-empty array of at most 4096 strings"},
    {"stdin", GW_T_STRING, false, "\"stdin\" must be a string"},
    {"env", GW_T_OBJECT, false, "\"env\" must be an object of at most 256 strings"},
    {"cwd", GW_T_STRING, false, "\"cwd\" must be an absolute path"},
    {"timeout_s", GW_T_INT, false, "\"timeout_s\" must be an integer between 1 and 3600"},
    {NULL, 0, false, NULL},
};

/* Copies bytes as UTF-8, replacing invalid sequences with U+FFFD, so that
 * any program output can travel in a JSON string.  (Replaced by the proto
 * module's incremental cleaner when that is merged.) */
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

static json_t *clean_string(const char *s, size_t n)
{
    size_t k;
    char *c = utf8_clean(s, n, &k);
    json_t *j = c ? json_stringn(c, k) : json_string("");
    free(c);
    return j;
}

static json_t *result_json(const fb_exec_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "exit_code", r->started && r->signal == 0 ? json_integer(r->exit_code) : json_null());
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
    return o;
}

/* The request body as the service's exec spec; the strings stay owned by
 * r->json, the arrays are the caller's to free.  NULL msg: fine. */
static const char *spec_from(json_t *body, fb_core_exec_spec *spec, const char ***argv, const char ***names,
                             const char ***values)
{
    memset(spec, 0, sizeof *spec);
    json_t *cmd = json_object_get(body, "cmd");
    size_t argc = json_array_size(cmd);
    if (argc == 0 || argc > FB_EXEC_MAX_ARGS)
        return "\"cmd\" must be a non-empty array of at most 4096 strings";
    json_t *env = json_object_get(body, "env");
    size_t envc = json_object_size(env);
    if (envc > FB_EXEC_MAX_ENV)
        return "\"env\" must be an object of at most 256 strings";
    *argv = calloc(argc + 1, sizeof **argv);
    *names = calloc(envc + 1, sizeof **names);
    *values = calloc(envc + 1, sizeof **values);
    if (!*argv || !*names || !*values)
        return "out of memory";
    for (size_t i = 0; i < argc; i++) {
        json_t *a = json_array_get(cmd, i);
        if (!json_is_string(a))
            return "\"cmd\" must contain only strings";
        (*argv)[i] = json_string_value(a);
    }
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(env, k, v) {
        if (!json_is_string(v))
            return "\"env\" keys must be names and values strings";
        (*names)[i] = k;
        (*values)[i++] = json_string_value(v);
    }
    json_t *to = json_object_get(body, "timeout_s");
    if (to && json_integer_value(to) < 1)
        return "\"timeout_s\" must be an integer between 1 and 3600";
    json_t *in = json_object_get(body, "stdin");
    spec->argv = *argv;
    spec->names = *names;
    spec->values = *values;
    spec->cwd = json_string_value(json_object_get(body, "cwd"));
    spec->timeout_s = to ? (uint64_t)json_integer_value(to) : 0;
    spec->stdin_data = in ? json_string_value(in) : NULL;
    spec->stdin_len = in ? json_string_length(in) : 0;
    return NULL;
}

/* ---- server-sent events ------------------------------------------------------------ */

typedef struct sse_state {
    fb_core_exec *x;
    uint64_t seq;
    char *pending;      /* formatted event not yet handed to MHD */
    size_t plen, poff;
    bool ended;
} sse_state;

static char *format_event(const char *name, json_t *data, size_t *len)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    char *out = NULL;
    int n = text ? asprintf(&out, "event: %s\ndata: %s\n\n", name, text) : -1;
    free(text);
    *len = n > 0 ? (size_t)n : 0;
    return n > 0 ? out : NULL;
}

/* The next event, formatted; NULL at the end. */
static char *next_event(sse_state *st, size_t *len, bool *idle)
{
    fb_core_exec_event ev;
    *idle = false;
    int got = fb_core_exec_next(st->x, st->seq, &ev, 1000);
    if (got == 0) {
        *idle = true;
        return NULL;
    }
    if (got < 0)
        return NULL;
    st->seq = ev.seq;
    char *out;
    if (ev.kind == FB_CORE_EV_EXIT) {
        fb_exec_result res;
        fb_core_err err = {0};
        json_t *j = fb_core_exec_outcome(st->x, &res, &err) < 0 ? json_pack("{s:s}", "error", err.msg)
                                                               : result_json(&res);
        out = format_event("exit", j, len);
        st->ended = true;
    } else {
        out = format_event(ev.kind == FB_CORE_EV_STDOUT ? "stdout" : "stderr",
                           json_pack("{s:o}", "data", clean_string(ev.data ? ev.data : "", ev.len)), len);
    }
    free(ev.data);
    return out;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse_state *st = cls;
    if (st->poff == st->plen) {
        free(st->pending);
        st->pending = NULL;
        st->plen = st->poff = 0;
        if (st->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        bool idle;
        st->pending = next_event(st, &st->plen, &idle);
        if (!st->pending) {
            if (!idle)
                return MHD_CONTENT_READER_END_OF_STREAM;
            /* A quiet command still gets a comment line every second:
             * writing it is how a client that went away is noticed (the
             * write fails, MHD ends the response, sse_free cancels the
             * command) instead of holding the sandbox until the timeout. */
            static const char keepalive[] = ": keepalive\n\n";
            size_t k = sizeof keepalive - 1 < max ? sizeof keepalive - 1 : max;
            memcpy(buf, keepalive, k);
            return (ssize_t)k;
        }
    }
    size_t k = st->plen - st->poff < max ? st->plen - st->poff : max;
    memcpy(buf, st->pending + st->poff, k);
    st->poff += k;
    return (ssize_t)k;
}

static void sse_free(void *cls)
{
    sse_state *st = cls;
    fb_core_exec_release(st->x); /* cancels the command if it still runs */
    free(st->pending);
    free(st);
}

static enum MHD_Result stream(gw_req *r, fb_core_exec *x)
{
    sse_state *st = calloc(1, sizeof *st);
    if (!st) {
        fb_core_exec_release(x);
        return gw_send_error(r, 503, "unavailable", "cannot start the stream");
    }
    st->x = x;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, st, sse_free);
    if (!resp) {
        sse_free(st);
        return MHD_NO;
    }
    return gw_queue(r, 200, resp, "text/event-stream");
}

/* ---- one answer --------------------------------------------------------------------- */

/* Whether the client has closed its side (it cannot be sending: its
 * request is complete, so a readable end-of-stream means it left). */
static bool client_gone(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static enum MHD_Result collect(gw_req *r, fb_core_exec *x)
{
    while (!fb_core_exec_wait(x, 200))
        if (client_gone(r->conn))
            fb_core_exec_cancel(x);
    fb_exec_result res;
    fb_core_err err = {0};
    if (fb_core_exec_outcome(x, &res, &err) < 0) {
        fb_core_exec_release(x);
        return gw_send_core_error(r, &err);
    }
    json_t *o = result_json(&res);
    const char *out, *errs;
    size_t on, en;
    fb_core_exec_output(x, &out, &on, &errs, &en);
    json_object_set_new(o, "stdout", clean_string(out, on));
    json_object_set_new(o, "stderr", clean_string(errs, en));
    fb_core_exec_release(x);
    return gw_send_json(r, 200, o);
}

static enum MHD_Result sandbox_exec(gw_req *r)
{
    fb_core_exec_spec spec;
    const char **argv = NULL, **names = NULL, **values = NULL;
    const char *bad = spec_from(r->json, &spec, &argv, &names, &values);
    fb_core_err err = {0};
    fb_core_exec *x = NULL;
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    bool sse = accept && strstr(accept, "text/event-stream");
    int rc = bad ? fb_core_fail(&err, FB_CORE_BAD_REQUEST, "%s", bad)
                 : fb_core_exec_start(r->g->core, &r->caller, r->ref, &spec, sse ? FB_EXEC_STREAM : FB_EXEC_COLLECT,
                                      &x, &err);
    free(argv);
    free(names);
    free(values);
    /* The exec holds the sandbox now; this request holds only the exec. */
    fb_core_sandbox_put(r->g->core, r->ref);
    r->ref = NULL;
    if (rc < 0)
        return gw_send_core_error(r, &err);
    return sse ? stream(r, x) : collect(r, x);
}

const gw_route gw_routes_execs[] = {
    {.def = {"POST", "/v1/sandboxes/{id}/exec"}, .resolve = GW_RES_SANDBOX, .perm = FB_PERM_SANDBOXES_EXEC,
     .body = GW_BODY_JSON, .fields = exec_fields, .body_required = true, .fn = sandbox_exec},
    {.def = {NULL, NULL}},
};
