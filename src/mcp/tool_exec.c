/*
 * tool_exec.c - the exec and run_code tools (internal.h).
 *
 * A command is a service-layer exec (core.h) started as the caller, so the
 * permission (sandboxes:exec on that sandbox), the limits, the audit entry
 * and the sandbox's own hardening are exactly the REST API's.  The tool
 * waits for the end, then reads the exec's log; what a model gets back is
 * capped (FB_MCP_OUTPUT_CAP bytes per stream, "truncated" says so) and
 * cleaned to UTF-8.  While it waits it polls the transport's `gone`: a
 * client that left has its command killed rather than left running.
 *
 * run_code passes the program as one argument to `python3 -c` or
 * `bash -c` (argv, no shell string is built).  Without a sandbox_id it
 * creates a sandbox for the call (sandboxes:create) and destroys it after,
 * whatever happened.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "mcp/internal.h"

/* One stream's bytes up to the cap; the rest only counted. */
typedef struct capped {
    char *raw;
    size_t len;
    uint64_t over;
} capped;

static void capped_add(capped *c, const uint8_t *data, size_t n)
{
    if (!c->raw)
        c->raw = malloc(FB_MCP_OUTPUT_CAP);
    size_t room = c->raw ? FB_MCP_OUTPUT_CAP - c->len : 0;
    size_t take = n < room ? n : room;
    if (take)
        memcpy(c->raw + c->len, data, take);
    c->len += take;
    c->over += n - take;
}

static json_t *capped_json(capped *c)
{
    size_t n = 0;
    char *clean = fb_utf8_clean(c->raw ? c->raw : "", c->len, &n);
    free(c->raw);
    json_t *j = clean ? json_stringn(clean, n) : NULL;
    free(clean);
    return j ? j : json_string("");
}

/* Starts argv in the sandbox (ref opened for sandboxes:exec, not put back
 * here).  NULL with *x, or a failed result. */
static json_t *exec_begin(fb_mcp_ctx *ctx, fb_sb_ref *ref, const char *const *argv, uint64_t timeout_s,
                          fb_core_exec **x)
{
    fb_core_exec_spec spec = {.argv = argv, .timeout_s = timeout_s};
    fb_core_err err = {0};
    if (fb_core_exec_start(ctx->core, ctx->caller, ref, &spec, FB_EXEC_PLAIN, x, &err) < 0)
        return mcp_fail_core(ctx, &err, "the sandbox");
    return NULL;
}

/* Waits for x's end, reads its log and releases it: the tool result. */
static json_t *exec_collect(fb_mcp_ctx *ctx, fb_core_exec *x)
{
    bool cancelled = false;
    while (!fb_core_exec_wait(x, 200))
        if (!cancelled && ctx->gone && ctx->gone(ctx->gone_arg)) {
            fb_core_exec_cancel(ctx->core, NULL, x);
            cancelled = true;
        }
    capped out = {0}, errs = {0};
    fb_exec_event ev;
    uint64_t pos = 0;
    bool ended = false;
    while (!ended && fb_core_exec_next(x, pos, &ev, -1) == 1) {
        ended = ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR;
        if (ended)
            break;
        if (ev.kind == FB_EXEC_EV_STDOUT || ev.kind == FB_EXEC_EV_STDERR)
            capped_add(ev.kind == FB_EXEC_EV_STDOUT ? &out : &errs, ev.data, ev.len);
        pos = ev.next;
        fb_exec_event_clear(&ev);
    }
    fb_core_exec_release(x);
    json_t *so = capped_json(&out), *se = capped_json(&errs);
    if (!ended || ev.kind == FB_EXEC_EV_ERROR) {
        json_decref(so);
        json_decref(se);
        return mcp_fail("sandbox_failed: %s", ended ? ev.message : "the command's log ended without its end");
    }
    const fb_exec_result *r = &ev.result;
    if (!r->started) {
        json_decref(so);
        json_decref(se);
        return mcp_fail("%s: %s", r->error, r->message);
    }
    bool truncated = r->truncated || ev.dropped > 0 || out.over > 0 || errs.over > 0;
    json_t *o = json_pack("{s:o, s:o, s:b, s:b, s:o, s:o, s:b, s:I}", "exit_code",
                          r->signal ? json_null() : json_integer(r->exit_code), "signal",
                          r->signal ? json_integer(r->signal) : json_null(), "timed_out", r->timed_out, "oom", r->oom,
                          "stdout", so, "stderr", se, "truncated", truncated, "duration_ms",
                          (json_int_t)r->duration_ms);
    return mcp_done(o, r->signal || r->exit_code != 0 || r->timed_out);
}

static json_t *open_sandbox(fb_mcp_ctx *ctx, const char *id, fb_perm perm, fb_sb_ref **ref)
{
    fb_core_err err = {0};
    if (fb_core_sandbox_open(ctx->core, ctx->caller, id, perm, ref, &err) < 0) {
        char what[96];
        snprintf(what, sizeof what, "sandbox %.64s", id);
        return mcp_fail_core(ctx, &err, what);
    }
    return NULL;
}

/* argv in the sandbox named id: the sandbox is held only to start it. */
json_t *mcp_run_named(fb_mcp_ctx *ctx, const char *id, const char *const *argv, uint64_t timeout_s)
{
    fb_sb_ref *ref = NULL;
    fb_core_exec *x = NULL;
    json_t *bad = open_sandbox(ctx, id, FB_PERM_SANDBOXES_EXEC, &ref);
    if (bad)
        return bad;
    bad = exec_begin(ctx, ref, argv, timeout_s, &x);
    fb_core_sandbox_put(ctx->core, ref);
    return bad ? bad : exec_collect(ctx, x);
}

/* Destroys the sandbox id of a call that could not use it. */
static void discard(fb_mcp_ctx *ctx, const char *id)
{
    fb_sb_ref *ref = NULL;
    fb_core_err err = {0};
    if (fb_core_sandbox_open(ctx->core, ctx->caller, id, FB_PERM_SANDBOXES_CREATE, &ref, &err) < 0 ||
        fb_core_sandbox_delete(ctx->core, ctx->caller, ref, &err) < 0)
        fb_log("warn", ctx->caller->request_id, "run_code: cannot destroy the call's sandbox (its TTL will)",
               json_pack("{s:s, s:s}", "sandbox", id, "error", err.msg));
}

/* argv in a sandbox made for it and destroyed after.  sandboxes:exec is
 * decided first, so that a caller who could not run anything in it gets
 * no sandbox made. */
static json_t *run_in_fresh(fb_mcp_ctx *ctx, const char *const *argv, uint64_t timeout_s)
{
    fb_core_err err = {0};
    fb_caller *who = ctx->caller;
    if (fb_core_permit(ctx->core, who, FB_PERM_SANDBOXES_EXEC, "sandboxes", who->who.team_id, &err) < 0)
        return mcp_fail_core(ctx, &err, NULL);
    fb_sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    fb_sandbox_info info;
    if (fb_core_sandbox_create(ctx->core, who, &spec, &info, &err) < 0)
        return mcp_fail_core(ctx, &err, NULL);
    fb_sb_ref *ref = NULL;
    json_t *res = open_sandbox(ctx, info.id, FB_PERM_SANDBOXES_EXEC | FB_PERM_SANDBOXES_CREATE, &ref);
    if (res) {
        discard(ctx, info.id);
        return res;
    }
    fb_core_exec *x = NULL;
    res = exec_begin(ctx, ref, argv, timeout_s, &x);
    if (!res)
        res = exec_collect(ctx, x);
    if (fb_core_sandbox_delete(ctx->core, who, ref, &err) < 0)
        fb_log("warn", who->request_id, "run_code: the call's sandbox was gone already",
               json_pack("{s:s, s:s}", "sandbox", info.id, "error", err.msg));
    return res;
}

json_t *mcp_tool_exec(fb_mcp_ctx *ctx, const json_t *args)
{
    const json_t *cmd = json_object_get(args, "cmd");
    size_t n = json_array_size(cmd);
    const char **argv = calloc(n + 1, sizeof *argv);
    if (!argv)
        return mcp_fail("unavailable: out of memory");
    for (size_t i = 0; i < n; i++)
        argv[i] = json_string_value(json_array_get(cmd, i));
    bool has;
    uint64_t timeout_s;
    mcp_arg_u64(args, "timeout_s", &has, &timeout_s);
    json_t *r = mcp_run_named(ctx, json_string_value(json_object_get(args, "sandbox_id")), argv, timeout_s);
    free(argv);
    return r;
}

json_t *mcp_tool_run_code(fb_mcp_ctx *ctx, const json_t *args)
{
    const char *code = json_string_value(json_object_get(args, "code"));
    bool python = strcmp(json_string_value(json_object_get(args, "language")), "python") == 0;
    const char *argv[] = {python ? "python3" : "bash", "-c", code, NULL};
    bool has;
    uint64_t timeout_s;
    mcp_arg_u64(args, "timeout_s", &has, &timeout_s);
    const char *id = json_string_value(json_object_get(args, "sandbox_id"));
    return id ? mcp_run_named(ctx, id, argv, timeout_s) : run_in_fresh(ctx, argv, timeout_s);
}
