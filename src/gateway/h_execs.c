/*
 * h_execs.c - the exec routes other than the event stream (gw.h):
 *
 *   POST   /v1/sandboxes/{id}/exec                 start a command; one JSON answer at
 *                                                  its end, or (Accept: text/event-stream)
 *                                                  its events as they come (h_exec_events.c)
 *   GET    /v1/sandboxes/{id}/execs/{exec_id}      its state and, once ended, its result
 *   DELETE /v1/sandboxes/{id}/execs/{exec_id}      kill it
 *
 * The command is a service-layer exec (src/core/execs.c) reading the
 * sandbox's own event log; this connection holds only the exec, never the
 * sandbox, so deleting or expiring the sandbox never waits for a client
 * (finding 9 of issue 6).  A plain exec watches its connection while it
 * waits and kills the command when the client goes away (finding 13).  Its
 * output is gathered from the log at the end and cleaned to UTF-8 with one
 * incremental cleaner per stream, so a character that falls across two
 * chunks arrives whole.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "gateway/gw.h"

static const gw_field exec_fields[] = {
    {"cmd", GW_T_ARRAY, true, "\"cmd\" must be a non-empty array of at most 4096 strings"},
    {"stdin", GW_T_STRING, false, "\"stdin\" must be a string"},
    {"env", GW_T_OBJECT, false, "\"env\" must be an object of at most 256 strings"},
    {"cwd", GW_T_STRING, false, "\"cwd\" must be an absolute path"},
    {"timeout_s", GW_T_INT, false, "\"timeout_s\" must be an integer between 1 and 3600"},
    {NULL, 0, false, NULL},
};

json_t *gw_exec_result_json(const fb_exec_result *r, uint64_t dropped)
{
    json_t *o = json_object();
    json_object_set_new(o, "exit_code", r->started && r->signal == 0 ? json_integer(r->exit_code) : json_null());
    json_object_set_new(o, "signal", r->signal ? json_integer(r->signal) : json_null());
    json_object_set_new(o, "duration_ms", json_integer((json_int_t)r->duration_ms));
    /* Output the log could not keep is output the caller did not get. */
    json_object_set_new(o, "truncated", json_boolean(r->truncated || dropped > 0));
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
 * the body, argv and env are the caller's to free.  NULL: fine. */
static const char *spec_from(json_t *body, fb_core_exec_spec *spec, const char ***argv, fb_env_var **env)
{
    memset(spec, 0, sizeof *spec);
    json_t *cmd = json_object_get(body, "cmd");
    size_t argc = json_array_size(cmd);
    if (argc == 0 || argc > FB_EXEC_MAX_ARGS)
        return "\"cmd\" must be a non-empty array of at most 4096 strings";
    json_t *envo = json_object_get(body, "env");
    size_t envc = json_object_size(envo);
    if (envc > FB_EXEC_MAX_ENV)
        return "\"env\" must be an object of at most 256 strings";
    *argv = calloc(argc + 1, sizeof **argv);
    *env = calloc(envc + 1, sizeof **env);
    if (!*argv || !*env)
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
    json_object_foreach(envo, k, v) {
        if (!json_is_string(v))
            return "\"env\" keys must be names and values strings";
        (*env)[i++] = (fb_env_var){.key = k, .value = json_string_value(v)};
    }
    json_t *to = json_object_get(body, "timeout_s");
    if (to && json_integer_value(to) < 1)
        return "\"timeout_s\" must be an integer between 1 and 3600";
    json_t *in = json_object_get(body, "stdin");
    spec->argv = *argv;
    spec->env = *env;
    spec->nenv = envc;
    spec->cwd = json_string_value(json_object_get(body, "cwd"));
    spec->timeout_s = to ? (uint64_t)json_integer_value(to) : 0;
    spec->stdin_data = in ? json_string_value(in) : NULL;
    spec->stdin_len = in ? json_string_length(in) : 0;
    return NULL;
}

/* ---- one answer ------------------------------------------------------------------ */

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

/* One stream's output, cleaned as it is gathered. */
typedef struct text {
    fb_utf8_cleaner cl;
    char *data;
    size_t len, cap;
    bool lost; /* out of memory: said in the answer (truncated), never dropped silently */
} text;

static void text_add(text *t, const void *data, size_t n, bool finish)
{
    size_t need = finish ? 3 : fb_utf8_clean_bound(n);
    if (t->lost || need == SIZE_MAX || t->len + need + 1 < t->len)
        return;
    if (t->len + need + 1 > t->cap) {
        size_t ncap = t->cap ? t->cap : 4096;
        while (ncap < t->len + need + 1)
            ncap *= 2;
        char *nd = realloc(t->data, ncap);
        if (!nd) {
            t->lost = true;
            return;
        }
        t->data = nd;
        t->cap = ncap;
    }
    t->len += finish ? fb_utf8_clean_finish(&t->cl, t->data + t->len)
                     : fb_utf8_clean_chunk(&t->cl, data, n, t->data + t->len);
}

static json_t *text_json(text *t)
{
    text_add(t, NULL, 0, true);
    json_t *j = t->data ? json_stringn(t->data, t->len) : json_string("");
    free(t->data);
    return j ? j : json_string("");
}

/* The whole log of an exec that has ended, as the JSON answer. */
static enum MHD_Result answer_ended(gw_req *r, fb_core_exec *x)
{
    text out = {0}, err = {0};
    fb_utf8_cleaner_init(&out.cl);
    fb_utf8_cleaner_init(&err.cl);
    static const char note[] = "\n[forgebox: output dropped: too many stream switches]\n";
    uint64_t pos = 0;
    fb_exec_event ev;
    for (;;) {
        if (fb_core_exec_next(x, pos, &ev, -1) != 1) {
            ev.kind = FB_EXEC_EV_ERROR;
            ev.code = FB_E_INTERNAL;
            snprintf(ev.message, sizeof ev.message, "internal: the exec's log ended without its end");
            break;
        }
        if (ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR)
            break; /* the terminal event holds no data: kept as it is */
        pos = ev.next;
        if (ev.kind == FB_EXEC_EV_STDOUT || ev.kind == FB_EXEC_EV_STDERR)
            text_add(ev.kind == FB_EXEC_EV_STDOUT ? &out : &err, ev.data, ev.len, false);
        else if (ev.kind == FB_EXEC_EV_DROPPED)
            text_add(&err, note, sizeof note - 1, false);
        fb_exec_event_clear(&ev);
    }
    json_t *so = text_json(&out), *se = text_json(&err);
    if (ev.kind == FB_EXEC_EV_ERROR) {
        json_decref(so);
        json_decref(se);
        fb_core_err e;
        fb_core_fail(&e, ev.code == FB_E_NOMEM ? FB_CORE_UNAVAILABLE
                         : ev.code == FB_E_INTERNAL ? FB_CORE_INTERNAL
                                                    : FB_CORE_SANDBOX_FAILED,
                     "%s", ev.message);
        return gw_send_core_error(r, &e);
    }
    ev.result.truncated |= out.lost || err.lost;
    json_t *o = gw_exec_result_json(&ev.result, ev.dropped);
    json_object_set_new(o, "exec_id", json_string(fb_core_exec_id(x)));
    json_object_set_new(o, "stdout", so);
    json_object_set_new(o, "stderr", se);
    return gw_send_json(r, 200, o);
}

static enum MHD_Result collect(gw_req *r, fb_core_exec *x)
{
    bool cancelled = false;
    while (!fb_core_exec_wait(x, 200))
        if (!cancelled && client_gone(r->conn)) {
            fb_core_exec_cancel(r->g->core, NULL, x);
            cancelled = true;
        }
    enum MHD_Result rc = answer_ended(r, x);
    fb_core_exec_release(x);
    return rc;
}

/* How long a plain exec's permission entry may wait for the command's end
 * entry to share its commit.  Longer than a short command (/bin/true: about
 * 1 ms in a jail), short enough that the entry of a command that runs on is
 * durable within a few milliseconds of its start. */
#define EXEC_AUDIT_GRACE_MS 2

static enum MHD_Result sandbox_exec(gw_req *r)
{
    fb_core_exec_spec spec;
    const char **argv = NULL;
    fb_env_var *env = NULL;
    const char *bad = spec_from(r->json, &spec, &argv, &env);
    fb_core_err err = {0};
    fb_core_exec *x = NULL;
    const char *accept = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Accept");
    bool sse = accept && strstr(accept, "text/event-stream");
    int rc = bad ? fb_core_fail(&err, FB_CORE_BAD_REQUEST, "%s", bad)
                 : fb_core_exec_start(r->g->core, &r->caller, r->ref, &spec, sse ? FB_EXEC_STREAM : FB_EXEC_PLAIN,
                                      &x, &err);
    free(argv);
    free(env);
    /* The exec is the sandbox's now; this request holds only the exec. */
    fb_core_sandbox_put(r->g->core, r->ref);
    r->ref = NULL;
    if (rc < 0)
        return gw_send_core_error(r, &err); /* (gw_queue awaits the permission entry first) */
    /* The permission entry was queued in the chain before the command
     * started (audit_overlap) and is made durable while it runs: a plain
     * command that ends within EXEC_AUDIT_GRACE_MS has its end entry
     * written in the same commit (one fsync for both), any other's is
     * written now.  Either way it is durable before anything of the
     * command is answered, and if it cannot be written the command does
     * not go on (docs/audit.md, "Exec"). */
    if (!sse)
        fb_core_exec_wait(x, EXEC_AUDIT_GRACE_MS);
    if (fb_core_audit_flush(r->g->core, &r->caller) < 0) {
        if (!fb_core_exec_stop(x, 5000))
            fb_log("error", r->caller.request_id, "an exec refused as unaudited did not end when killed",
                   json_pack("{s:s}", "exec", fb_core_exec_id(x)));
        fb_core_exec_release(x);
        fb_core_fail(&err, FB_CORE_UNAVAILABLE, "the audit log cannot be written; refusing to act unaudited");
        return gw_send_core_error(r, &err);
    }
    return sse ? gw_exec_stream(r, x, NULL) : collect(r, x);
}

/* ---- an exec by id ----------------------------------------------------------------- */

/* The {exec_id} exec of the {id} sandbox; NULL: answered (*rc). */
fb_core_exec *gw_exec_open(gw_req *r, bool attach, enum MHD_Result *rc)
{
    fb_core_err err = {0};
    fb_core_exec *x = NULL;
    int st = fb_core_exec_open(r->g->core, &r->caller, r->ref, r->params.v[1], attach, &x, &err);
    /* The exec is all this request needs; the sandbox is not held. */
    fb_core_sandbox_put(r->g->core, r->ref);
    r->ref = NULL;
    if (st < 0)
        *rc = gw_send_core_error(r, &err);
    return x;
}

static enum MHD_Result exec_status(gw_req *r)
{
    enum MHD_Result rc;
    fb_core_exec *x = gw_exec_open(r, false, &rc);
    if (!x)
        return rc;
    fb_core_exec_status st;
    fb_core_exec_status_of(x, &st);
    fb_core_exec_release(x);
    json_t *o = json_pack("{s:s, s:s, s:s}", "id", st.id, "sandbox_id", st.sandbox_id, "started_at", st.started_at);
    if (!st.ended) {
        json_object_set_new(o, "state", json_string("running"));
    } else if (st.code == FB_OK) {
        json_object_set_new(o, "state", json_string("exited"));
        json_object_set_new(o, "result", gw_exec_result_json(&st.result, 0));
    } else {
        json_t *m = json_string(st.message);
        json_object_set_new(o, "state", json_string("failed"));
        json_object_set_new(o, "error", json_pack("{s:s, s:o}", "code", fb_errc_name(st.code), "message",
                                                  m ? m : json_string("")));
    }
    return gw_send_json(r, 200, o);
}

static enum MHD_Result exec_cancel(gw_req *r)
{
    enum MHD_Result rc;
    fb_core_exec *x = gw_exec_open(r, false, &rc);
    if (!x)
        return rc;
    fb_core_exec_cancel(r->g->core, &r->caller, x);
    fb_core_exec_release(x);
    return gw_send_raw(r, 204, "application/json", NULL, 0, MHD_RESPMEM_PERSISTENT);
}

const gw_route gw_routes_execs[] = {
    {.def = {"POST", "/v1/sandboxes/{id}/exec"}, .resolve = GW_RES_SANDBOX, .perm = FB_PERM_SANDBOXES_EXEC,
     .body = GW_BODY_JSON, .fields = exec_fields, .body_required = true, .fn = sandbox_exec,
     .audit_overlap = true},
    {.def = {"GET", "/v1/sandboxes/{id}/execs/{exec_id}"}, .resolve = GW_RES_SANDBOX,
     .perm = FB_PERM_SANDBOXES_EXEC, .fn = exec_status},
    {.def = {"DELETE", "/v1/sandboxes/{id}/execs/{exec_id}"}, .resolve = GW_RES_SANDBOX,
     .perm = FB_PERM_SANDBOXES_EXEC, .fn = exec_cancel},
    {.def = {NULL, NULL}},
};
