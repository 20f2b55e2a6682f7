/*
 * internal.h - private to src/engine: what the tool runner (tools.c) gives
 * the tools themselves (tools_fs.c): input checks that name the field, one
 * command run to its end in the sandbox, and the output cap.
 */
#ifndef FB_ENGINE_INTERNAL_H
#define FB_ENGINE_INTERNAL_H

#include "engine/engine.h"

/* A tool's answer before it goes back: text (malloc'd, UTF-8), is_error,
 * and rc -1 when the call was abandoned (cancel, deadline, sandbox gone). */
typedef struct tool_answer {
    char *text;
    bool is_error;
} tool_answer;

/* Input fields.  Each returns 0, 1 when an optional field is absent (out
 * untouched), or -1 with a message naming the tool and the field in *a. */
int tool_str(const char *tool, const json_t *in, const char *field, bool required, const char **out,
             tool_answer *a);
int tool_uint(const char *tool, const json_t *in, const char *field, uint64_t min, uint64_t max,
              uint64_t *out, tool_answer *a);
/* Sets *a to an error with a formatted message; returns -1. */
int tool_error(tool_answer *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One command in the sandbox.  stdin_text (may be NULL) is its stdin. */
typedef struct tool_cmd {
    const char *const *argv;
    const fb_env_var *envv;
    size_t nenv;
    const char *stdin_text;
    uint64_t timeout_s;        /* capped by ctx->deadline_ns */
} tool_cmd;

typedef struct tool_output {
    char *text;                /* stdout and stderr as they came, cleaned UTF-8, capped */
    size_t len;
    bool started;              /* false: the program could not be run (code says why) */
    fb_errc code;              /* when !started: FB_E_NOT_FOUND, ... */
    int exit_code, signal;
    bool timed_out;
    uint64_t timeout_s;        /* what the command was given */
} tool_output;

/* Runs cmd to its end, the output capped at ctx->max_output with the
 * marker.  Returns 0 (look at out), 1 when it was refused up front (*a
 * holds the error to give the model), or -1 when abandoned (*a says why). */
int tool_exec(const fb_tool_ctx *ctx, const tool_cmd *cmd, tool_output *out, tool_answer *a);
void tool_output_free(tool_output *o);

/* The tools (tools_fs.c).  Each returns 0 with *a filled, or -1 when
 * abandoned (*a says why). */
int tool_bash(const fb_tool_ctx *ctx, const json_t *in, tool_answer *a);
int tool_python(const fb_tool_ctx *ctx, fb_tool t, const json_t *in, tool_answer *a);
int tool_grep(const fb_tool_ctx *ctx, const json_t *in, tool_answer *a);
int tool_git(const fb_tool_ctx *ctx, const json_t *in, tool_answer *a);

#endif
