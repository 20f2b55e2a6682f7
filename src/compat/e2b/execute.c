/*
 * execute.c - the code interpreter's POST /execute (internal.h), what
 * @e2b/code-interpreter's runCode calls (its "port 49999", which arrives
 * here as E2b-Sandbox-Port: 49999 on the same listener).
 *
 * Request {code, context_id?, language?, env_vars?}; answer NDJSON lines
 * as they come (repl.py's header lists them).  A context is a Python
 * process that keeps its globals: repl.py in "serve" mode, started as a
 * background exec on the context's first run and held by the sandbox's
 * entry (boxes.c), listening on a Unix socket in /tmp.  Each run is a
 * short exec of repl.py in "run" mode with the request on stdin, whose
 * stdout is this answer.  Everything is an exec through the service:
 * the sandbox's hardening, its limits and the audit apply as to any
 * command.  Only Python: other languages are a 400.  A context's process
 * lives as long as the sandbox, at most an hour (the longest exec), after
 * which the next run starts a fresh one.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat/e2b/internal.h"

#define REPL_PATH "/tmp/fb-e2b-repl.py"

/* Puts repl.py into the sandbox (once per sandbox). */
static int ship_repl(e2b_req *r, fb_sb_ref *ref, fb_core_err *err)
{
    if (e2b_box_repl_shipped(r->box, false))
        return 0;
    fb_upload *up = NULL;
    uint64_t size = 0;
    if (fb_core_upload_begin(r->s->sh.core, &r->caller, ref, REPL_PATH, &up, err) < 0)
        return -1;
    if (fb_core_upload_write(up, fb_e2b_repl_py, fb_e2b_repl_py_len, err) < 0) {
        fb_core_upload_abort(up);
        return -1;
    }
    if (fb_core_upload_finish(up, &size, err) < 0)
        return -1;
    e2b_box_repl_shipped(r->box, true);
    return 0;
}

/* The context's interpreter, started unless it runs already. */
static int ensure_server(e2b_req *r, fb_sb_ref *ref, const char *ctx, const char *sock, fb_core_err *err)
{
    e2b_proc *p = e2b_ctx_server(r->box, ctx);
    bool running = p && !fb_core_exec_wait(p->x, 0);
    e2b_proc_put(r->box, p);
    if (running)
        return 0;
    const char *argv[] = {"python3", "-u", REPL_PATH, "serve", sock, NULL};
    json_t *base = e2b_box_env_vars(r->box);
    size_t nenv = 0;
    fb_env_var *env = e2b_env(base, NULL, &nenv);
    fb_core_exec_spec spec = {.argv = argv, .env = env, .nenv = nenv, .timeout_s = FB_EXEC_MAX_TIMEOUT_S};
    fb_core_exec *x = NULL;
    int rc = fb_core_exec_start(r->s->sh.core, &r->caller, ref, &spec, FB_EXEC_STREAM, &x, err);
    free(env);
    json_decref(base);
    if (rc < 0)
        return -1;
    if (e2b_ctx_set_server(r->box, ctx, x) < 0) {
        fb_core_exec_cancel(r->s->sh.core, NULL, x);
        fb_core_exec_release(x);
        return fb_core_fail(err, FB_CORE_CONFLICT, "too many code contexts in this sandbox");
    }
    return 0;
}

static bool fmt(e2b_stream *st, const fb_exec_event *ev)
{
    /* st->ctx is non-NULL while a line is open.  A quiet run gets a line
     * of a type the SDK skips, between lines only: writing it is how a
     * client that went away is noticed. */
    if (!ev) {
        static const char keepalive[] = "{\"type\":\"keepalive\"}\n";
        return st->ctx || e2b_stream_append(st, keepalive, sizeof keepalive - 1) == 0;
    }
    if (ev->kind == FB_EXEC_EV_STDOUT) {
        if (ev->len)
            st->ctx = ev->data[ev->len - 1] == '\n' ? NULL : st;
        return e2b_stream_append(st, ev->data, ev->len) == 0;
    }
    if (ev->kind == FB_EXEC_EV_ERROR || (ev->kind == FB_EXEC_EV_EXIT && !ev->result.started)) {
        json_t *m = json_string(ev->kind == FB_EXEC_EV_ERROR ? ev->message : ev->result.message);
        json_t *line = json_pack("{s:s, s:s, s:o, s:s}", "type", "error", "name", "SandboxError", "value",
                                 m ? m : json_string(""), "traceback", "");
        char *text = json_dumps(line, JSON_COMPACT);
        json_decref(line);
        bool ok = text && e2b_stream_append(st, text, strlen(text)) == 0 && e2b_stream_append(st, "\n", 1) == 0;
        free(text);
        return ok;
    }
    return true;
}

static void release(e2b_stream *st)
{
    fb_core_exec_release(st->x);
}

enum MHD_Result e2b_execute(e2b_req *r, fb_sb_ref *ref)
{
    enum MHD_Result rc;
    json_t *b = e2b_body_json(r, &rc);
    if (!b)
        return rc;
    const char *code = json_string_value(json_object_get(b, "code"));
    const char *lang = json_string_value(json_object_get(b, "language"));
    const char *ctx = json_string_value(json_object_get(b, "context_id"));
    json_t *envs = json_object_get(b, "env_vars");
    const char *bad = !code ? "\"code\" is required"
                      : lang && strcmp(lang, "python") != 0 && strcmp(lang, "py") != 0
                          ? "only python runs on this server"
                      : ctx && !e2b_valid_id(ctx, strlen(ctx), 40)        ? "bad context_id"
                      : envs && !json_is_null(envs) && !json_is_object(envs) ? "\"env_vars\" must be an object"
                                                                              : NULL;
    if (bad) {
        json_decref(b);
        return e2b_send_error(r, 400, bad);
    }
    char sock[96];
    snprintf(sock, sizeof sock, "/tmp/fb-e2b-ctx-%s.sock", ctx ? ctx : "default");
    fb_core_err err = {0};
    if (ship_repl(r, ref, &err) < 0 || ensure_server(r, ref, ctx ? ctx : "default", sock, &err) < 0) {
        json_decref(b);
        return e2b_send_core_error(r, &err);
    }
    json_t *req = json_pack("{s:s, s:O}", "code", code, "env_vars", json_is_object(envs) ? envs : json_null());
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    json_decref(b);
    if (!text)
        return e2b_send_error(r, 503, "out of memory");
    const char *argv[] = {"python3", REPL_PATH, "run", sock, NULL};
    fb_core_exec_spec spec = {
        .argv = argv, .timeout_s = FB_EXEC_MAX_TIMEOUT_S, .stdin_data = text, .stdin_len = strlen(text)};
    fb_core_exec *x = NULL;
    int st = fb_core_exec_start(r->s->sh.core, &r->caller, ref, &spec, FB_EXEC_STREAM, &x, &err);
    free(text);
    if (st < 0)
        return e2b_send_core_error(r, &err);
    e2b_stream *s = calloc(1, sizeof *s);
    if (!s) {
        fb_core_exec_release(x);
        return e2b_send_error(r, 503, "out of memory");
    }
    s->x = x;
    s->idle_ms = 5000;
    s->fmt = fmt;
    s->release = release;
    return e2b_stream_answer(r, s, "application/x-ndjson");
}
