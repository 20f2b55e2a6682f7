/*
 * internal.h - what the MCP tool files share (not part of mcp.h's face).
 *
 * A tool gets arguments already checked against its declared parameters
 * (tools.c) and returns a CallToolResult built with these helpers.
 */
#ifndef FB_MCP_INTERNAL_H
#define FB_MCP_INTERNAL_H

#include "mcp/mcp.h"

typedef json_t *(*mcp_tool_fn)(fb_mcp_ctx *ctx, const json_t *args);

/* A failed tool: isError true, the message as its text. */
json_t *mcp_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A service's typed refusal as a failed tool; what names the sandbox
 * ("sandbox sb-...") for NOT_FOUND (NULL: the service's own message, for
 * a file). */
json_t *mcp_fail_core(fb_mcp_ctx *ctx, const fb_core_err *err, const char *what);
/* A result: structured (stolen) as structuredContent and, serialised, as
 * the text content (the specification's advice for older clients). */
json_t *mcp_done(json_t *structured, bool is_error);

/* Optional integer argument (already type-checked): *has and its value. */
void mcp_arg_u64(const json_t *args, const char *name, bool *has, uint64_t *v);

/* tool_exec.c */
json_t *mcp_tool_exec(fb_mcp_ctx *ctx, const json_t *args);
json_t *mcp_tool_run_code(fb_mcp_ctx *ctx, const json_t *args);
/* Runs argv in the sandbox `id` (sandboxes:exec), collecting output up to
 * FB_MCP_OUTPUT_CAP per stream: the tool result (structuredContent
 * {exit_code, signal, timed_out, oom, stdout, stderr, truncated,
 * duration_ms}, or a failure without it). */
json_t *mcp_run_named(fb_mcp_ctx *ctx, const char *id, const char *const *argv, uint64_t timeout_s);

/* tool_task.c */
json_t *mcp_tool_run_task(fb_mcp_ctx *ctx, const json_t *args);

/* tool_files.c */
json_t *mcp_tool_create_sandbox(fb_mcp_ctx *ctx, const json_t *args);
json_t *mcp_tool_kill_sandbox(fb_mcp_ctx *ctx, const json_t *args);
json_t *mcp_tool_read_file(fb_mcp_ctx *ctx, const json_t *args);
json_t *mcp_tool_write_file(fb_mcp_ctx *ctx, const json_t *args);
json_t *mcp_tool_list_files(fb_mcp_ctx *ctx, const json_t *args);

#endif
