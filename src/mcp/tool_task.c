/*
 * tool_task.c - run_task: a model working through tools in a sandbox of
 * its own (the task service, core.h "tasks"), started from an MCP client.
 *
 * The task is created as the caller (tasks:create, the tool classes of the
 * tools it asks for, the team's quota), exactly as POST /v1/tasks would;
 * then the tool follows the task's transcript for up to wait_s seconds
 * (tasks:read) and answers with where the task stands: its id, state,
 * result or error and usage.  A task that is still running (or waiting for
 * a person's approval, which is given through the REST API or the
 * console) keeps running after the answer; nothing here cancels it.
 */
#define _GNU_SOURCE
#include <string.h>

#include "common/time.h"
#include "mcp/internal.h"

#define DEFAULT_WAIT_S 50

/* Follows the task until it ends or the deadline passes, then reads it. */
static json_t *follow(fb_mcp_ctx *ctx, const char *id, uint64_t wait_s)
{
    fb_task_ref *ref = NULL;
    fb_core_err err = {0};
    if (fb_core_task_open(ctx->core, ctx->caller, id, FB_PERM_TASKS_READ, &ref, &err) < 0)
        return NULL;
    uint64_t deadline = fb_time_monotonic_ns() + wait_s * 1000000000ull, after = 0;
    for (;;) {
        uint64_t now = fb_time_monotonic_ns();
        if (now >= deadline)
            break;
        uint64_t left_ms = (deadline - now) / 1000000 + 1;
        json_t *ev = NULL;
        int rc = fb_core_task_events_next(ctx->core, ref, after, &ev, (int)(left_ms < 1000 ? left_ms : 1000));
        if (rc < 0)
            break; /* ended, and every event read */
        if (rc == 1) {
            after = (uint64_t)json_integer_value(json_object_get(ev, "seq"));
            json_decref(ev);
        }
    }
    json_t *task = NULL;
    if (fb_core_task_get(ctx->core, ctx->caller, ref, &task, &err) < 0)
        task = NULL;
    fb_core_task_put(ctx->core, ref);
    return task;
}

json_t *mcp_tool_run_task(fb_mcp_ctx *ctx, const json_t *args)
{
    fb_task_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.prompt = json_string_value(json_object_get(args, "prompt"));
    spec.provider = json_string_value(json_object_get(args, "provider"));
    spec.model = json_string_value(json_object_get(args, "model"));
    const json_t *tools = json_object_get(args, "tools");
    if (tools) {
        fb_err e = {{0}};
        if (fb_toolset_from_json(tools, &spec.tools, &e) < 0)
            return mcp_fail("invalid arguments: %s", e.msg);
        spec.has_tools = true;
    }
    bool has_wait;
    uint64_t wait_s;
    mcp_arg_u64(args, "wait_s", &has_wait, &wait_s);
    if (!has_wait)
        wait_s = DEFAULT_WAIT_S;
    json_t *task = NULL;
    fb_core_err err = {0};
    if (fb_core_task_create(ctx->core, ctx->caller, &spec, &task, &err) < 0)
        return mcp_fail_core(ctx, &err, NULL);
    const char *id = json_string_value(json_object_get(task, "id"));
    json_t *now = wait_s ? follow(ctx, id, wait_s) : NULL;
    if (now) {
        json_decref(task);
        task = now;
    }
    json_t *out = json_pack("{s:O, s:O, s:O, s:O, s:O}", "task_id", json_object_get(task, "id"), "state",
                            json_object_get(task, "state"), "result", json_object_get(task, "result"), "error",
                            json_object_get(task, "error"), "usage", json_object_get(task, "usage"));
    const char *state = json_string_value(json_object_get(task, "state"));
    bool failed = state && (strcmp(state, "failed") == 0 || strcmp(state, "cancelled") == 0 ||
                            strcmp(state, "budget_exceeded") == 0);
    json_decref(task);
    return out ? mcp_done(out, failed) : mcp_fail("unavailable: out of memory");
}
