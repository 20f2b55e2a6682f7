/*
 * tools.c - the tool catalogue (mcp.h): each tool's name, description and
 * parameters, its input schema derived from them, the check of a call's
 * arguments against them, and the result helpers the tools share.
 *
 * One declaration per tool is both what tools/list shows (a JSON Schema
 * with additionalProperties false) and what tools/call enforces, so the
 * two cannot drift apart.  Arguments that break the schema are a tool
 * error (isError, "invalid arguments: ..."), as the specification asks
 * for input validation, so that a model can correct itself; an unknown
 * tool is a JSON-RPC error (-32602).
 *
 * run_task starts a task of the task engine (tool_task.c).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mcp/internal.h"

typedef enum ptype { P_STRING, P_INT, P_STRINGS, P_CHOICE } ptype;

typedef struct param {
    const char *name;
    ptype type;
    bool required;
    const char *desc;
    const char *const *choices; /* P_CHOICE, NULL-terminated */
    int64_t min, max;           /* P_INT */
} param;

#define MAX_PARAMS 6

typedef struct tool {
    const char *name, *title, *desc;
    param params[MAX_PARAMS];
    mcp_tool_fn fn;
    const char *output; /* outputSchema as JSON text; NULL: text content only */
} tool;

/* The structuredContent each tool returns when it succeeds (tool_exec.c,
 * tool_files.c build exactly these). */
#define OUT_RUN                                                                                                 \
    "{\"type\":\"object\",\"properties\":{\"exit_code\":{\"type\":[\"integer\",\"null\"]},"                        \
    "\"signal\":{\"type\":[\"integer\",\"null\"]},\"timed_out\":{\"type\":\"boolean\"},\"oom\":{\"type\":\"boolean\"},"   \
    "\"stdout\":{\"type\":\"string\"},\"stderr\":{\"type\":\"string\"},\"truncated\":{\"type\":\"boolean\"},"          \
    "\"duration_ms\":{\"type\":\"integer\"}},\"required\":[\"exit_code\",\"signal\",\"timed_out\",\"oom\",\"stdout\","    \
    "\"stderr\",\"truncated\",\"duration_ms\"]}"
#define OUT_SANDBOX                                                                                             \
    "{\"type\":\"object\",\"properties\":{\"sandbox_id\":{\"type\":\"string\"},\"backend\":{\"type\":\"string\"},"      \
    "\"memory_mib\":{\"type\":\"integer\"},\"vcpus\":{\"type\":\"integer\"},\"disk_mib\":{\"type\":\"integer\"},"       \
    "\"expires_at\":{\"type\":\"string\"}},\"required\":[\"sandbox_id\",\"backend\",\"memory_mib\",\"vcpus\","          \
    "\"disk_mib\",\"expires_at\"]}"
#define OUT_WRITE                                                                                               \
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},\"size\":{\"type\":\"integer\"}},"            \
    "\"required\":[\"path\",\"size\"]}"
#define OUT_LIST                                                                                                \
    "{\"type\":\"object\",\"properties\":{\"path\":{\"type\":\"string\"},\"truncated\":{\"type\":\"boolean\"},"        \
    "\"entries\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"   \
    "\"type\":{\"enum\":[\"file\",\"dir\",\"symlink\",\"other\"]},\"size\":{\"type\":\"integer\"}},"                  \
    "\"required\":[\"name\",\"type\",\"size\"]}}},\"required\":[\"path\",\"truncated\",\"entries\"]}"
#define OUT_KILL                                                                                                \
    "{\"type\":\"object\",\"properties\":{\"sandbox_id\":{\"type\":\"string\"},\"destroyed\":{\"type\":\"boolean\"}},"  \
    "\"required\":[\"sandbox_id\",\"destroyed\"]}"

#define OUT_TASK                                                                                                \
    "{\"type\":\"object\",\"properties\":{\"task_id\":{\"type\":\"string\"},\"state\":{\"type\":\"string\"},"         \
    "\"result\":{\"type\":[\"string\",\"null\"]},\"error\":{\"type\":[\"string\",\"null\"]},"                     \
    "\"usage\":{\"type\":\"object\"}},\"required\":[\"task_id\",\"state\",\"result\",\"error\",\"usage\"]}"

static const char *const backends[] = {"jail", "vm", NULL};
static const char *const languages[] = {"python", "bash", NULL};

#define SANDBOX_ID(req) {"sandbox_id", P_STRING, req, "A sandbox id from create_sandbox", NULL, 0, 0}
#define TIMEOUT {"timeout_s", P_INT, false, "Seconds before the command is killed (default 60)", NULL, 1, 3600}

static const tool tools[] = {
    {"create_sandbox", "Create a sandbox",
     "Creates a sandbox that stays until kill_sandbox or its TTL, for several exec, run_code and file calls. "
     "Returns its id.",
     {{"backend", P_CHOICE, false, "Isolation: jail (namespaces) or vm (microVM); default: the server's",
       backends, 0, 0},
      {"memory_mib", P_INT, false, "Memory in MiB (default: the server's)", NULL, 1, 1 << 20},
      {"ttl_s", P_INT, false, "Seconds before it is destroyed (default: the server's)", NULL, 1, 1 << 30}},
     mcp_tool_create_sandbox, OUT_SANDBOX},
    {"run_code", "Run code",
     "Runs Python 3 or bash code and returns its exit code, stdout and stderr. Without sandbox_id it runs in a "
     "fresh sandbox destroyed afterwards; with one, in that sandbox (files and state kept).",
     {{"code", P_STRING, true, "The program text", NULL, 0, 0},
      {"language", P_CHOICE, true, "python or bash", languages, 0, 0},
      SANDBOX_ID(false),
      TIMEOUT},
     mcp_tool_run_code, OUT_RUN},
    {"exec", "Run a command",
     "Runs a command (an argv array, no shell) in a sandbox and returns its exit code, stdout and stderr.",
     {{"cmd", P_STRINGS, true, "The command and its arguments, e.g. [\"ls\", \"-l\"]", NULL, 0, 0},
      SANDBOX_ID(true),
      TIMEOUT},
     mcp_tool_exec, OUT_RUN},
    {"read_file", "Read a file",
     "Returns a text file of a sandbox (UTF-8, at most 1 MiB).",
     {SANDBOX_ID(true), {"path", P_STRING, true, "Absolute path under /workspace or /tmp", NULL, 0, 0}},
     mcp_tool_read_file, NULL},
    {"write_file", "Write a file",
     "Writes text to a file of a sandbox, replacing it.",
     {SANDBOX_ID(true),
      {"path", P_STRING, true, "Absolute path under /workspace or /tmp", NULL, 0, 0},
      {"content", P_STRING, true, "The file's new content", NULL, 0, 0}},
     mcp_tool_write_file, OUT_WRITE},
    {"list_files", "List a directory",
     "Lists a directory of a sandbox: each entry's name, type (file, dir, symlink, other) and size.",
     {SANDBOX_ID(true), {"path", P_STRING, false, "The directory (default /workspace)", NULL, 0, 0}},
     mcp_tool_list_files, OUT_LIST},
    {"kill_sandbox", "Destroy a sandbox",
     "Destroys a sandbox and everything in it.",
     {SANDBOX_ID(true)},
     mcp_tool_kill_sandbox, OUT_KILL},
    {"run_task", "Run an AI task",
     "Starts a task: a model (a provider configured on the server, and a model name) works on the prompt "
     "through tools that run in a sandbox of the task's own. Waits up to wait_s seconds (default 50) and "
     "returns the task's state, result or error and token usage; a task still running goes on (follow it "
     "through the REST API or the console, where held tool calls are approved).",
     {{"prompt", P_STRING, true, "What the model should do", NULL, 0, 0},
      {"provider", P_STRING, true, "A provider name from the server's configuration", NULL, 0, 0},
      {"model", P_STRING, true, "The model name at that provider", NULL, 0, 0},
      {"tools", P_STRINGS, false, "Tools the model may use (bash, file_read, file_write, file_edit, glob, grep, "
                                  "git, web_fetch); default bash and the file tools your key may grant",
       NULL, 0, 0},
      {"wait_s", P_INT, false, "Seconds to wait for the end (0: answer at once)", NULL, 0, 600}},
     mcp_tool_run_task, OUT_TASK},
};
#define NTOOLS (sizeof tools / sizeof tools[0])

/* ---- results ------------------------------------------------------------------------ */

static json_t *text_result(const char *text, json_t *structured, bool is_error)
{
    json_t *t = json_string(text);
    json_t *r = json_pack("{s:[{s:s, s:o}], s:b}", "content", "type", "text", "text",
                          t ? t : json_string("(not valid UTF-8)"), "isError", is_error);
    if (structured)
        json_object_set_new(r, "structuredContent", structured);
    return r;
}

json_t *mcp_fail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return text_result(msg, NULL, true);
}

json_t *mcp_fail_core(fb_mcp_ctx *ctx, const fb_core_err *err, const char *what)
{
    switch (err->code) {
    case FB_CORE_NOT_FOUND:
        if (what)
            return mcp_fail("not_found: %s does not exist (or is not in your team)", what);
        return mcp_fail("not_found: %s", err->msg);
    case FB_CORE_INTERNAL:
        /* Details go to the log, never to the caller. */
        fb_log("error", ctx->caller->request_id, "internal error", json_pack("{s:s}", "error", err->msg));
        return mcp_fail("internal: internal error (see the server log)");
    default:
        return mcp_fail("%s: %s", fb_core_code_name(err->code), err->msg);
    }
}

json_t *mcp_done(json_t *structured, bool is_error)
{
    char *text = json_dumps(structured, JSON_COMPACT);
    json_t *r = text_result(text ? text : "{}", structured, is_error);
    free(text);
    return r;
}

void mcp_arg_u64(const json_t *args, const char *name, bool *has, uint64_t *v)
{
    const json_t *x = json_object_get(args, name);
    *has = x != NULL;
    *v = x ? (uint64_t)json_integer_value(x) : 0;
}

/* ---- the catalogue --------------------------------------------------------------------- */

static json_t *param_schema(const param *p)
{
    json_t *s = json_object();
    switch (p->type) {
    case P_STRING:
        json_object_set_new(s, "type", json_string("string"));
        break;
    case P_INT:
        json_object_set_new(s, "type", json_string("integer"));
        json_object_set_new(s, "minimum", json_integer(p->min));
        json_object_set_new(s, "maximum", json_integer(p->max));
        break;
    case P_STRINGS:
        json_object_set_new(s, "type", json_string("array"));
        json_object_set_new(s, "items", json_pack("{s:s}", "type", "string"));
        json_object_set_new(s, "minItems", json_integer(1));
        break;
    case P_CHOICE: {
        json_t *e = json_array();
        for (const char *const *c = p->choices; *c; c++)
            json_array_append_new(e, json_string(*c));
        json_object_set_new(s, "type", json_string("string"));
        json_object_set_new(s, "enum", e);
        break;
    }
    }
    json_object_set_new(s, "description", json_string(p->desc));
    return s;
}

json_t *fb_mcp_tools_list(void)
{
    json_t *list = json_array();
    for (size_t i = 0; i < NTOOLS; i++) {
        const tool *t = &tools[i];
        json_t *props = json_object(), *req = json_array();
        for (size_t k = 0; k < MAX_PARAMS && t->params[k].name; k++) {
            json_object_set_new(props, t->params[k].name, param_schema(&t->params[k]));
            if (t->params[k].required)
                json_array_append_new(req, json_string(t->params[k].name));
        }
        json_t *schema = json_pack("{s:s, s:o, s:o, s:b}", "type", "object", "properties", props, "required", req,
                                   "additionalProperties", 0);
        json_t *one = json_pack("{s:s, s:s, s:s, s:o}", "name", t->name, "title", t->title, "description",
                                t->desc, "inputSchema", schema);
        json_error_t je;
        if (t->output)
            json_object_set_new(one, "outputSchema", json_loads(t->output, 0, &je));
        json_array_append_new(list, one);
    }
    return json_pack("{s:o}", "tools", list);
}

/* Why one argument breaks its declaration, or NULL. */
static const char *check_param(const param *p, const json_t *v)
{
    switch (p->type) {
    case P_STRING:
        return json_is_string(v) ? NULL : "must be a string";
    case P_INT:
        if (!json_is_integer(v) || json_integer_value(v) < p->min || json_integer_value(v) > p->max)
            return "must be an integer in the range the schema gives";
        return NULL;
    case P_STRINGS: {
        if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > FB_EXEC_MAX_ARGS)
            return "must be a non-empty array of strings";
        size_t i;
        const json_t *a;
        json_array_foreach(v, i, a) if (!json_is_string(a)) return "must be a non-empty array of strings";
        return NULL;
    }
    case P_CHOICE:
        for (const char *const *c = p->choices; json_is_string(v) && *c; c++)
            if (strcmp(json_string_value(v), *c) == 0)
                return NULL;
        return "must be one of the schema's values";
    }
    return "is not understood";
}

/* The arguments against the tool's parameters: NULL, or a failed result. */
static json_t *check_args(const tool *t, const json_t *args)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)args, key, v) {
        const param *p = NULL;
        for (size_t k = 0; k < MAX_PARAMS && t->params[k].name && !p; k++)
            if (strcmp(t->params[k].name, key) == 0)
                p = &t->params[k];
        if (!p)
            return mcp_fail("invalid arguments: %s takes no \"%.64s\"", t->name, key);
        const char *why = check_param(p, v);
        if (why)
            return mcp_fail("invalid arguments: \"%s\" %s", p->name, why);
    }
    for (size_t k = 0; k < MAX_PARAMS && t->params[k].name; k++)
        if (t->params[k].required && !json_object_get(args, t->params[k].name))
            return mcp_fail("invalid arguments: \"%s\" is required", t->params[k].name);
    return NULL;
}

json_t *fb_mcp_tool_call(fb_mcp_ctx *ctx, const char *name, const json_t *args)
{
    const tool *t = NULL;
    for (size_t i = 0; i < NTOOLS && !t; i++)
        if (strcmp(tools[i].name, name) == 0)
            t = &tools[i];
    if (!t)
        return NULL;
    json_t *empty = NULL;
    if (!args)
        args = empty = json_object();
    json_t *bad = check_args(t, args);
    if (bad) {
        json_decref(empty);
        return bad;
    }
    /* Permission entries name what was asked. */
    snprintf(ctx->caller->action, sizeof ctx->caller->action, "MCP tools/call %s", t->name);
    json_t *r = t->fn(ctx, args);
    json_decref(empty);
    return r;
}
