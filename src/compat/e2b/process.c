/*
 * process.c - envd's process.Process over Connect-RPC JSON (internal.h).
 *
 *   Start       (server stream) a command as a service exec, STREAM mode;
 *               the entry of its sandbox (boxes.c) holds one attached
 *               handle, so the command runs to its end whether or not
 *               anyone is connected (background commands), and gets an
 *               E2B pid.  Events: start {pid} first, data {stdout|stderr:
 *               base64}, keepalive while quiet, end {exitCode, exited,
 *               status[, error]}.
 *   Connect     (server stream) the same events of a command by pid or
 *               tag, from its first output (the log is replayed).
 *   List        the running commands with their configuration.
 *   SendInput, StreamInput, CloseStdin   stdin of a command started with
 *               stdin: true (a pipe kept open by the service).
 *   SendSignal  SIGKILL (and SIGTERM, which kills the same way here).
 *   Update      (pty resize) unimplemented: there are no ptys.
 *
 * The command is argv as given (the SDK sends /bin/bash -l -c CMD: the
 * command line is the user's own, run by their shell in their sandbox;
 * this adapter never builds a shell string).  cwd is mapped like every
 * E2B path; the sandbox's envVars come first, the request's envs win.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "compat/e2b/internal.h"

#define KEEPALIVE_MS 5000

typedef struct pctx {
    e2b_boxes *boxes;
    e2b_box *box;
    e2b_proc *proc;
    uint32_t pid;
    bool start_sent;
} pctx;

static bool emit(e2b_stream *st, unsigned flags, json_t *msg)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    bool ok = e2b_rpc_frame(&buf, &len, &cap, flags, msg) == 0 && e2b_stream_append(st, buf, len) == 0;
    free(buf);
    return ok;
}

static bool emit_event(e2b_stream *st, json_t *event)
{
    return event && emit(st, 0, json_pack("{s:o}", "event", event));
}

static json_t *end_event(const fb_exec_event *ev)
{
    if (ev->kind == FB_EXEC_EV_ERROR) {
        json_t *m = json_string(ev->message);
        return json_pack("{s:{s:i, s:b, s:s, s:o}}", "end", "exitCode", -1, "exited", 0, "status", "error",
                         "error", m ? m : json_string("the command failed"));
    }
    const fb_exec_result *res = &ev->result;
    char status[64];
    if (!res->started) {
        json_t *m = json_string(res->message);
        return json_pack("{s:{s:i, s:b, s:s, s:o}}", "end", "exitCode", 127, "exited", 0, "status", "error",
                         "error", m ? m : json_string("the command could not be started"));
    }
    if (res->signal) {
        snprintf(status, sizeof status, "signal: %s", strsignal(res->signal));
        return json_pack("{s:{s:i, s:b, s:s}}", "end", "exitCode", -1, "exited", 0, "status", status);
    }
    snprintf(status, sizeof status, "exit status %d", res->exit_code);
    json_t *end = json_pack("{s:i, s:b, s:s}", "exitCode", res->exit_code, "exited", 1, "status", status);
    if (res->timed_out)
        json_object_set_new(end, "error", json_string("the command timed out"));
    return json_pack("{s:o}", "end", end);
}

static bool fmt(e2b_stream *st, const fb_exec_event *ev)
{
    pctx *c = st->ctx;
    if (!c->start_sent) {
        c->start_sent = true;
        if (!emit_event(st, json_pack("{s:{s:i}}", "start", "pid", (json_int_t)c->pid)))
            return false;
    }
    if (!ev)
        return emit_event(st, json_pack("{s:{}}", "keepalive"));
    switch (ev->kind) {
    case FB_EXEC_EV_STDOUT:
    case FB_EXEC_EV_STDERR: {
        size_t b64len = sodium_base64_encoded_len(ev->len, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = malloc(b64len);
        if (!b64)
            return false;
        sodium_bin2base64(b64, b64len, ev->data, ev->len, sodium_base64_VARIANT_ORIGINAL);
        json_t *d = json_pack("{s:{s:s}}", "data", ev->kind == FB_EXEC_EV_STDOUT ? "stdout" : "stderr", b64);
        free(b64);
        return emit_event(st, d);
    }
    case FB_EXEC_EV_DROPPED:
        return true;
    case FB_EXEC_EV_EXIT:
    case FB_EXEC_EV_ERROR:
        return emit_event(st, end_event(ev));
    }
    return true;
}

static bool finish(e2b_stream *st)
{
    return emit(st, 2, json_object());
}

static void release(e2b_stream *st)
{
    pctx *c = st->ctx;
    e2b_proc_put(c->box, c->proc);
    e2b_box_put(c->boxes, c->box);
    free(c);
}

/* Streams p's events (the stream takes a box and a proc reference). */
static enum MHD_Result stream_proc(e2b_req *r, e2b_proc *p)
{
    e2b_stream *st = calloc(1, sizeof *st);
    pctx *c = calloc(1, sizeof *c);
    e2b_box *box = e2b_box_get(r->s->boxes, e2b_box_id(r->box));
    if (!st || !c || !box) {
        free(st);
        free(c);
        e2b_box_put(r->s->boxes, box);
        e2b_proc_put(r->box, p);
        return e2b_rpc_error(r, E2B_RPC_UNAVAILABLE, "out of memory");
    }
    *c = (pctx){.boxes = r->s->boxes, .box = box, .proc = p, .pid = p->pid};
    st->x = p->x;
    st->idle_ms = KEEPALIVE_MS;
    st->fmt = fmt;
    st->finish = finish;
    st->release = release;
    st->ctx = c;
    return e2b_stream_answer(r, st, "application/connect+json");
}

static enum MHD_Result start(e2b_req *r, json_t *req, fb_sb_ref *ref)
{
    json_t *pc = json_object_get(req, "process");
    const char *cmd = json_string_value(json_object_get(pc, "cmd"));
    json_t *args = json_object_get(pc, "args"), *envs = json_object_get(pc, "envs");
    const char *cwd_in = json_string_value(json_object_get(pc, "cwd"));
    json_t *pty = json_object_get(req, "pty");
    if (pty && !json_is_null(pty))
        return e2b_rpc_error(r, E2B_RPC_UNIMPLEMENTED, "ptys are not supported on this server");
    if (!cmd || !cmd[0] || (args && !json_is_array(args)) || (envs && !json_is_object(envs)) ||
        json_array_size(args) >= FB_EXEC_MAX_ARGS)
        return e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "process.cmd is required; args is a list, envs a map");
    char cwd[4096];
    if (!e2b_path(cwd_in, cwd, sizeof cwd))
        return e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "process.cwd is too long");
    size_t argc = json_array_size(args);
    const char **argv = calloc(argc + 2, sizeof *argv);
    json_t *base = e2b_box_env_vars(r->box);
    size_t nenv = 0;
    fb_env_var *env = e2b_env(base, envs, &nenv);
    if (!argv) {
        json_decref(base);
        free(env);
        return e2b_rpc_error(r, E2B_RPC_UNAVAILABLE, "out of memory");
    }
    argv[0] = cmd;
    for (size_t i = 0; i < argc; i++)
        if (!(argv[i + 1] = json_string_value(json_array_get(args, i))))
            argv[i + 1] = "";
    fb_core_exec_spec spec = {
        .argv = argv,
        .env = env,
        .nenv = nenv,
        .cwd = cwd,
        .timeout_s = FB_EXEC_MAX_TIMEOUT_S,
        .stdin_pipe = json_is_true(json_object_get(req, "stdin")),
    };
    fb_core_exec *x = NULL;
    fb_core_err err = {0};
    int st = fb_core_exec_start(r->s->sh.core, &r->caller, ref, &spec, FB_EXEC_STREAM, &x, &err);
    free(argv);
    free(env);
    json_decref(base);
    if (st < 0)
        return e2b_rpc_core_error(r, &err);
    json_t *config = json_pack("{s:s, s:O, s:O, s:s}", "cmd", cmd, "args", args ? args : json_array(), "envs",
                               envs ? envs : json_object(), "cwd", cwd);
    e2b_proc *p = e2b_proc_add(r->box, x, config, json_string_value(json_object_get(req, "tag")));
    if (!p) {
        fb_core_exec_cancel(r->s->sh.core, NULL, x);
        fb_core_exec_release(x);
        return e2b_rpc_error(r, E2B_RPC_RESOURCE_EXHAUSTED, "too many commands in this sandbox");
    }
    return stream_proc(r, p);
}

/* The command a request's {process: {pid | tag}} names (a reference). */
static e2b_proc *selected(e2b_req *r, json_t *req)
{
    json_t *sel = json_object_get(req, "process");
    json_t *pid = json_object_get(sel, "pid");
    const char *tag = json_string_value(json_object_get(sel, "tag"));
    json_int_t n = json_is_integer(pid) ? json_integer_value(pid) : json_is_string(pid) ? atoll(json_string_value(pid)) : 0;
    if (n <= 0 && !tag)
        return NULL;
    return e2b_proc_find(r->box, (uint32_t)n, tag);
}

/* base64 stdin bytes (standard alphabet, with or without padding). */
static enum MHD_Result write_input(e2b_req *r, e2b_proc *p, json_t *input)
{
    const char *b64 = json_string_value(json_object_get(input, "stdin"));
    if (!b64)
        return e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "input.stdin is required (ptys are not supported)");
    size_t n = strlen(b64), got = 0;
    unsigned char *bin = malloc(n + 1);
    if (!bin)
        return e2b_rpc_error(r, E2B_RPC_UNAVAILABLE, "out of memory");
    if (sodium_base642bin(bin, n + 1, b64, n, NULL, &got, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 &&
        sodium_base642bin(bin, n + 1, b64, n, NULL, &got, NULL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0) {
        free(bin);
        return e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "input.stdin is not base64");
    }
    fb_core_err err = {0};
    int st = fb_core_exec_has_stdin(p->x) ? fb_core_exec_write_stdin(p->x, bin, got, 10000, &err)
                                          : fb_core_fail(&err, FB_CORE_CONFLICT, "the command's stdin is not open "
                                                                                 "(start it with stdin: true)");
    free(bin);
    return st < 0 ? e2b_rpc_core_error(r, &err) : MHD_YES;
}

static enum MHD_Result on_proc(e2b_req *r, const char *method, json_t *req)
{
    e2b_proc *p = selected(r, req);
    if (!p)
        return e2b_rpc_error(r, E2B_RPC_NOT_FOUND, "no such process");
    enum MHD_Result rc = MHD_YES;
    if (strcmp(method, "Connect") == 0)
        return stream_proc(r, p); /* takes p */
    if (strcmp(method, "SendInput") == 0) {
        rc = write_input(r, p, json_object_get(req, "input"));
        if (!r->answered)
            rc = e2b_rpc_reply(r, json_object());
    } else if (strcmp(method, "CloseStdin") == 0) {
        fb_core_exec_close_stdin(p->x);
        rc = e2b_rpc_reply(r, json_object());
    } else { /* SendSignal */
        json_t *sig = json_object_get(req, "signal");
        const char *name = json_string_value(sig);
        json_int_t num = json_integer_value(sig);
        bool known = (name && (strcmp(name, "SIGNAL_SIGKILL") == 0 || strcmp(name, "SIGNAL_SIGTERM") == 0)) ||
                     num == SIGKILL || num == SIGTERM;
        if (!known) {
            rc = e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "signal must be SIGNAL_SIGKILL or SIGNAL_SIGTERM");
        } else {
            fb_core_exec_cancel(r->s->sh.core, &r->caller, p->x);
            rc = e2b_rpc_reply(r, json_object());
        }
    }
    e2b_proc_put(r->box, p);
    return rc;
}

/* StreamInput: {start: {process}}, then {data: {input}} and keepalives. */
static enum MHD_Result stream_input(e2b_req *r)
{
    enum MHD_Result rc = MHD_YES;
    json_t *all = e2b_rpc_messages(r, &rc);
    if (!all)
        return rc;
    e2b_proc *p = selected(r, json_object_get(json_array_get(all, 0), "start"));
    if (!p) {
        json_decref(all);
        return e2b_rpc_error(r, E2B_RPC_NOT_FOUND, "no such process");
    }
    for (size_t i = 1; i < json_array_size(all) && !r->answered; i++) {
        json_t *d = json_object_get(json_array_get(all, i), "data");
        if (d)
            write_input(r, p, json_object_get(d, "input"));
    }
    e2b_proc_put(r->box, p);
    json_decref(all);
    return r->answered ? MHD_YES : e2b_rpc_reply(r, json_object());
}

enum MHD_Result e2b_process(e2b_req *r, const char *method, fb_sb_ref *ref)
{
    if (strcmp(method, "StreamInput") == 0)
        return stream_input(r);
    if (strcmp(method, "Update") == 0)
        return e2b_rpc_error(r, E2B_RPC_UNIMPLEMENTED, "ptys are not supported on this server");
    static const char *const known[] = {"Start", "Connect", "List", "SendInput", "SendSignal", "CloseStdin"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok = ok || strcmp(method, known[i]) == 0;
    if (!ok)
        return e2b_rpc_error(r, E2B_RPC_UNIMPLEMENTED, "no such method");
    enum MHD_Result rc;
    json_t *req = e2b_rpc_request(r, &rc);
    if (!req)
        return rc;
    if (strcmp(method, "Start") == 0)
        rc = start(r, req, ref);
    else if (strcmp(method, "List") == 0)
        rc = e2b_rpc_reply(r, e2b_proc_list(r->box));
    else
        rc = on_proc(r, method, req);
    json_decref(req);
    return rc;
}
