/*
 * engine.h - the task engine: the loop that lets a model act through tools
 * that run in a sandbox (DESIGN.md, "Task engine"; layer 4).
 *
 * The engine knows providers (src/llm), tools and sandboxes; it knows
 * nothing about teams, keys, the store or HTTP.  Whoever drives it (the
 * task service in src/core, or `forgebox task run` at the shell) gives it
 * a provider, a sandbox, the tools the model may be offered, budgets, and
 * two hooks: one that receives the transcript's events, one that decides
 * every tool call before it runs (policy, approvals and audit live there).
 *
 *     fb_engine_run run = {.provider = p, .model = "m", .tools = set,
 *                          .sandbox = sb, .limits = lim, .usage = &usage,
 *                          .cancel = &cancel, .hooks = {...}};
 *     fb_llm_conv conv;  ... system prompt, the user's prompt ...
 *     fb_engine_outcome out;
 *     fb_engine_loop(&run, &conv, &out);     // until stop, budget, cancel, failure
 *     ... out.state, out.result, out.error ...
 *     fb_engine_outcome_free(&out);
 *
 * One turn: send the conversation (streamed), forward text deltas as
 * "text" events, then for each tool call in order: a "tool_call" event,
 * the authorize hook, the tool in the sandbox (or a refusal), a
 * "tool_result" event, the result appended to the conversation as data.
 * The loop ends when the model stops asking for tools (SUCCEEDED), a
 * budget is reached (BUDGET_EXCEEDED, whatever was in flight is stopped),
 * *cancel becomes true (CANCELLED: the provider call, the tool's command
 * or the approval wait is abandoned within about a second), or the
 * provider fails (FAILED, with the provider's typed error in the message).
 * The conversation keeps everything that happened, so a follow-up message
 * continues it with another fb_engine_loop on the same conv and usage.
 *
 * Tool calls the model makes for a tool not in run->tools are refused by
 * the engine itself even if the hook allowed them (defence in depth), and
 * the hook is still asked, so that the refusal is audited where the hook
 * audits.  A tool's output goes back to the model as a tool result, capped
 * at max_tool_output bytes with an explicit marker: it is data, never
 * instructions the engine follows.
 *
 * Threads: one fb_engine_loop per conversation at a time; hooks run on the
 * loop's thread.
 */
#ifndef FB_ENGINE_H
#define FB_ENGINE_H

/* The output a turn is assumed to be allowed when nothing caps it (the
 * Anthropic adapter's default max_tokens). */
#define FB_ENGINE_DEFAULT_TURN_TOKENS 4096u

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llm/llm.h"
#include "policy/policy.h"
#include "sandbox/sandbox.h"

/* ---- task states (what the API shows) ------------------------------------ */

typedef enum fb_task_state {
    FB_TASK_QUEUED = 0,
    FB_TASK_RUNNING,
    FB_TASK_WAITING_APPROVAL,
    FB_TASK_SUCCEEDED,
    FB_TASK_FAILED,
    FB_TASK_CANCELLED,
    FB_TASK_BUDGET_EXCEEDED,
} fb_task_state;

/* "queued", "running", "waiting_approval", "succeeded", "failed",
 * "cancelled", "budget_exceeded"; NULL when out of range. */
const char *fb_task_state_name(fb_task_state s);
/* The reverse; -1 for anything else. */
int fb_task_state_from_name(const char *name, fb_task_state *out);
/* SUCCEEDED, FAILED, CANCELLED, BUDGET_EXCEEDED. */
bool fb_task_state_final(fb_task_state s);

/* ---- budgets and usage ------------------------------------------------------- */

/* 0 in a field: no limit of that kind (the task service always sets all
 * four, from the request or tasks.* defaults, within the org maxima). */
typedef struct fb_engine_limits {
    uint64_t max_turns;      /* provider calls */
    uint64_t max_tokens;     /* input + output tokens, all turns together */
    uint64_t max_tool_calls; /* tool calls run or refused */
    uint64_t timeout_s;      /* wall time of one fb_engine_loop */
} fb_engine_limits;

typedef struct fb_engine_usage {
    uint64_t input_tokens, output_tokens;
    uint64_t turns, tool_calls;
} fb_engine_usage;

/* ---- hooks -------------------------------------------------------------------------- */

typedef struct fb_engine_hooks {
    void *user;
    /* One transcript event, in order.  type and data (stolen):
     *   "text"        {"delta": s}
     *   "tool_call"   {"call_id": s, "tool": s, "input": object|null}
     *   "tool_result" {"call_id": s, "tool": s, "output": s, "is_error": b}
     *   "usage"       {"input_tokens", "output_tokens", "turns", "tool_calls"} after each turn
     * May be NULL. */
    void (*event)(void *user, const char *type, json_t *data);
    /* Decides one call before it runs.  tool is the fb_tool, or -1 when the
     * model named no tool ForgeBox has.  FB_ALLOW runs it; FB_DENY answers
     * the model with an error result saying `reason`.  May block (a person
     * deciding), but must return within about a second of *run->cancel
     * becoming true or run->deadline_ns passing.  NULL: everything offered
     * is allowed (tests only). */
    fb_verdict (*authorize)(void *user, const fb_llm_tool_call *call, int tool, char *reason, size_t cap);
} fb_engine_hooks;

/* ---- one run ------------------------------------------------------------------------- */

#define FB_ENGINE_TOOL_OUTPUT_DEFAULT (32u * 1024)
#define FB_ENGINE_TOOL_TIMEOUT_DEFAULT_S 120

typedef struct fb_engine_run {
    fb_llm_provider *provider;
    const char *model;
    unsigned max_tokens_per_turn;  /* 0: the provider's default (taken as FB_ENGINE_DEFAULT_TURN_TOKENS
                                      when capping a turn to the token budget left) */
    bool no_stream;                /* true: ask for whole responses */
    fb_toolset tools;              /* offered to the model (web_fetch needs network) */
    fb_sandbox *sandbox;           /* where the tools run (any backend) */
    bool network;                  /* the sandbox has an egress grant */
    size_t max_tool_output;        /* 0: FB_ENGINE_TOOL_OUTPUT_DEFAULT */
    fb_engine_limits limits;
    fb_engine_usage *usage;        /* accumulates across runs of one task; required */
    atomic_bool *cancel;           /* required; the engine sets it itself at the deadline */
    uint64_t deadline_ns;          /* fb_time_monotonic_ns() scale; 0: now + limits.timeout_s
                                      (no deadline when that is 0 too); filled in on entry */
    fb_engine_hooks hooks;
} fb_engine_run;

typedef struct fb_engine_outcome {
    fb_task_state state;  /* SUCCEEDED, FAILED, CANCELLED or BUDGET_EXCEEDED */
    char *result;         /* the model's last text (malloc'd; NULL when none) */
    char error[512];      /* why, for FAILED and BUDGET_EXCEEDED ("max_turns (5) reached",
                             "provider claude: 401 ..."); never holds a provider key */
} fb_engine_outcome;

/* Runs the loop over conv, which must end with a user message.  Returns 0
 * with *out filled whatever the outcome; -1 only for invalid arguments
 * (out->error says which). */
int fb_engine_loop(fb_engine_run *run, fb_llm_conv *conv, fb_engine_outcome *out);
void fb_engine_outcome_free(fb_engine_outcome *o);

/* The system prompt used when a task gives none. */
const char *fb_engine_default_system(void);

/* ---- tools (tools*.c) ------------------------------------------------------------------
 *
 * Each tool is a JSON schema offered to the model and a small program run
 * in the sandbox through the agent protocol, as uid 1000 under all of
 * layer 2, with its arguments passed as argv (never through a shell the
 * model's text could break out of, bash's own command aside):
 *   bash       {command, timeout_s?}          bash -c in /workspace
 *   file_read  {path, offset?, limit?}        lines, numbered
 *   file_write {path, content}
 *   file_edit  {path, old_string, new_string} old_string must match exactly once
 *   glob       {pattern, path?}
 *   grep       {pattern, path?, glob?}
 *   git        {args: [s...]}                 git in /workspace
 *   web_fetch  {url}                          through the sandbox's egress proxy only;
 *                                             refused without a network grant
 * Relative paths are under /workspace. */

typedef struct fb_tool_ctx {
    fb_sandbox *sandbox;
    bool network;
    size_t max_output;         /* 0: FB_ENGINE_TOOL_OUTPUT_DEFAULT */
    const atomic_bool *cancel; /* may be NULL */
    uint64_t deadline_ns;      /* 0: none */
} fb_tool_ctx;

/* The offer to the model: name, description, schema.  Static. */
const fb_llm_tool *fb_engine_tool_spec(fb_tool t);

/* Runs one call.  Returns 0 with *output (malloc'd; at most max_output
 * bytes of the tool's own text, then "\n[output truncated: N of M bytes
 * shown]" when cut) and *is_error (bad input, a non-zero exit, a refused
 * fetch: all told to the model).  Returns -1 when *cancel became true, the
 * deadline passed or the sandbox is gone; *output then says why. */
int fb_engine_tool_run(const fb_tool_ctx *ctx, fb_tool t, const json_t *input, char **output, bool *is_error);

#endif
