/*
 * tools.c - the tool runner (engine.h): what each tool offers the model,
 * the checks on what the model sends, and one command run in the sandbox
 * with its output capped.
 *
 * Every tool is a program in the sandbox started through the agent
 * protocol (fb_exec_start), so it runs as uid 1000 under everything layer
 * 2 imposes; nothing the model sends is ever put into a shell string:
 * arguments go as argv, and bulk input (file contents, edit strings) as
 * JSON on the program's stdin, from a memfd.  The runner reads the exec's
 * event log with short waits so that a cancel or the deadline stops the
 * command (fb_exec_cancel) within a fraction of a second.
 *
 * Output: stdout and stderr together, in the order they arrived, cleaned
 * to UTF-8 (one cleaner per stream, so a character split across chunks
 * survives), kept up to max_output bytes and counted beyond that; the
 * sandbox itself is asked to stop at EXEC_CAP, past which the total is
 * reported as "more than".  The marker says how much the model saw.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/time.h"
#include "common/utf8.h"
#include "engine/internal.h"

/* The most output a tool's command may produce before the sandbox cuts it. */
#define EXEC_CAP (4u * 1024 * 1024)
#define POLL_MS 100

/* ---- the offers ------------------------------------------------------------- */

static const struct {
    const char *description;
    const char *schema;
} specs_src[FB_TOOL_COUNT] = {
    [FB_TOOL_BASH] = {"Run a bash command in /workspace. Returns stdout and stderr together, then "
                      "the exit code. timeout_s defaults to 120.",
                      "{\"type\":\"object\",\"properties\":{"
                      "\"command\":{\"type\":\"string\",\"description\":\"the command line\"},"
                      "\"timeout_s\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":3600}},"
                      "\"required\":[\"command\"]}"},
    [FB_TOOL_FILE_READ] = {"Read a text file, as numbered lines. offset is the first line (from 1), "
                           "limit the number of lines (default 2000).",
                           "{\"type\":\"object\",\"properties\":{"
                           "\"path\":{\"type\":\"string\"},"
                           "\"offset\":{\"type\":\"integer\",\"minimum\":1},"
                           "\"limit\":{\"type\":\"integer\",\"minimum\":1}},"
                           "\"required\":[\"path\"]}"},
    [FB_TOOL_FILE_WRITE] = {"Write a file (replacing it), creating its parent directories.",
                            "{\"type\":\"object\",\"properties\":{"
                            "\"path\":{\"type\":\"string\"},\"content\":{\"type\":\"string\"}},"
                            "\"required\":[\"path\",\"content\"]}"},
    [FB_TOOL_FILE_EDIT] = {"Replace old_string with new_string in a file. old_string must occur "
                           "exactly once: include enough surrounding text to make it unique.",
                           "{\"type\":\"object\",\"properties\":{"
                           "\"path\":{\"type\":\"string\"},\"old_string\":{\"type\":\"string\"},"
                           "\"new_string\":{\"type\":\"string\"}},"
                           "\"required\":[\"path\",\"old_string\",\"new_string\"]}"},
    [FB_TOOL_GLOB] = {"List the paths matching a glob pattern (** matches directories recursively), "
                      "sorted, relative to path (default /workspace).",
                      "{\"type\":\"object\",\"properties\":{"
                      "\"pattern\":{\"type\":\"string\"},\"path\":{\"type\":\"string\"}},"
                      "\"required\":[\"pattern\"]}"},
    [FB_TOOL_GREP] = {"Search files for an extended regular expression (grep -rnE). Prints "
                      "file:line:text. path defaults to /workspace; glob limits the file names "
                      "searched (e.g. *.py).",
                      "{\"type\":\"object\",\"properties\":{"
                      "\"pattern\":{\"type\":\"string\"},\"path\":{\"type\":\"string\"},"
                      "\"glob\":{\"type\":\"string\"}},"
                      "\"required\":[\"pattern\"]}"},
    [FB_TOOL_GIT] = {"Run git in /workspace with these arguments, e.g. [\"status\"] or "
                     "[\"log\", \"--oneline\", \"-5\"]. Returns the output, then the exit code.",
                     "{\"type\":\"object\",\"properties\":{"
                     "\"args\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
                     "\"required\":[\"args\"]}"},
    [FB_TOOL_WEB_FETCH] = {"Fetch an http(s) URL through the sandbox's egress proxy (only the hosts "
                           "this task was granted). Returns the status line, the content type and "
                           "the body.",
                           "{\"type\":\"object\",\"properties\":{"
                           "\"url\":{\"type\":\"string\"}},"
                           "\"required\":[\"url\"]}"},
};

static fb_llm_tool specs[FB_TOOL_COUNT];
static pthread_once_t specs_once = PTHREAD_ONCE_INIT;

static void specs_init(void)
{
    for (int t = 0; t < FB_TOOL_COUNT; t++) {
        json_error_t je;
        specs[t] = (fb_llm_tool){.name = fb_tool_name((fb_tool)t),
                                 .description = specs_src[t].description,
                                 .schema = json_loads(specs_src[t].schema, 0, &je)};
    }
}

const fb_llm_tool *fb_engine_tool_spec(fb_tool t)
{
    if ((unsigned)t >= FB_TOOL_COUNT)
        return NULL;
    pthread_once(&specs_once, specs_init);
    return specs[t].schema ? &specs[t] : NULL;
}

/* ---- input checks --------------------------------------------------------------- */

int tool_error(tool_answer *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(a->text);
    if (vasprintf(&a->text, fmt, ap) < 0)
        a->text = NULL;
    va_end(ap);
    a->is_error = true;
    return -1;
}

int tool_str(const char *tool, const json_t *in, const char *field, bool required, const char **out,
             tool_answer *a)
{
    const json_t *v = json_object_get(in, field);
    if (!v || json_is_null(v)) {
        if (required)
            return tool_error(a, "%s: missing required field \"%s\"", tool, field);
        return 1;
    }
    if (!json_is_string(v))
        return tool_error(a, "%s: field \"%s\" must be a string", tool, field);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return tool_error(a, "%s: field \"%s\" must not contain NUL characters", tool, field);
    *out = json_string_value(v);
    return 0;
}

int tool_uint(const char *tool, const json_t *in, const char *field, uint64_t min, uint64_t max,
              uint64_t *out, tool_answer *a)
{
    const json_t *v = json_object_get(in, field);
    if (!v || json_is_null(v))
        return 1;
    /* Some models send whole numbers as 10.0. */
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : -1;
    if ((!json_is_integer(v) && !json_is_real(v)) || d != (double)(uint64_t)d || d < (double)min ||
        d > (double)max)
        return tool_error(a, "%s: field \"%s\" must be an integer from %llu to %llu", tool, field,
                          (unsigned long long)min, (unsigned long long)max);
    *out = (uint64_t)d;
    return 0;
}

/* ---- one command ------------------------------------------------------------------- */

struct collect {
    char *buf;
    size_t len, cap;          /* cap: max_output + one UTF-8 character */
    uint64_t total;           /* cleaned bytes produced, kept or not */
    fb_utf8_cleaner cl[2];
};

static int collect_add(struct collect *c, int stream, const void *data, size_t len, bool finish)
{
    size_t bound = finish ? 4 : fb_utf8_clean_bound(len);
    if (bound == SIZE_MAX)
        return -1;
    char *tmp = malloc(bound ? bound : 1);
    if (!tmp)
        return -1;
    fb_utf8_cleaner *cl = &c->cl[stream == FB_STREAM_STDERR];
    size_t n = finish ? fb_utf8_clean_finish(cl, tmp) : fb_utf8_clean_chunk(cl, data, len, tmp);
    c->total += n;
    size_t room = c->cap - c->len;
    size_t keep = n < room ? n : room;
    memcpy(c->buf + c->len, tmp, keep);
    c->len += keep;
    free(tmp);
    return 0;
}

/* Cuts c at max bytes on a character boundary and appends the marker. */
static int collect_finish(struct collect *c, size_t max, bool sandbox_cut, tool_output *out)
{
    size_t shown = c->len;
    if (c->total > max) {
        shown = max < c->len ? max : c->len;
        while (shown > 0 && ((unsigned char)c->buf[shown] & 0xC0) == 0x80)
            shown--;
    }
    char marker[96] = "";
    if (c->total > shown)
        snprintf(marker, sizeof marker, "\n[output truncated: %zu of %s%llu bytes shown]", shown,
                 sandbox_cut ? "more than " : "", (unsigned long long)c->total);
    size_t mlen = strlen(marker);
    char *text = malloc(shown + mlen + 1);
    if (!text)
        return -1;
    memcpy(text, c->buf, shown);
    memcpy(text + shown, marker, mlen + 1);
    out->text = text;
    out->len = shown + mlen;
    return 0;
}

static bool abandoned(const fb_tool_ctx *ctx, tool_answer *a)
{
    if (ctx->cancel && atomic_load(ctx->cancel)) {
        tool_error(a, "the tool call was cancelled");
        return true;
    }
    if (ctx->deadline_ns && fb_time_monotonic_ns() >= ctx->deadline_ns) {
        tool_error(a, "the task's time ran out during the tool call");
        return true;
    }
    return false;
}

static int stdin_memfd(const char *text, tool_answer *a)
{
    int fd = memfd_create("fb-tool-input", MFD_CLOEXEC);
    if (fd < 0) {
        tool_error(a, "cannot prepare the tool's input: %s", strerror(errno));
        return -1;
    }
    if (fb_write_all(fd, text, strlen(text)) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
        tool_error(a, "cannot prepare the tool's input: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Whether a refusal of fb_exec_start leaves the sandbox usable. */
static bool start_refusal_is_local(fb_errc code)
{
    return code == FB_E_BAD_REQUEST || code == FB_E_TOO_LARGE || code == FB_E_BUSY;
}

int tool_exec(const fb_tool_ctx *ctx, const tool_cmd *cmd, tool_output *out, tool_answer *a)
{
    memset(out, 0, sizeof *out);
    if (abandoned(ctx, a))
        return -1;
    uint64_t timeout_s = cmd->timeout_s ? cmd->timeout_s : FB_ENGINE_TOOL_TIMEOUT_DEFAULT_S;
    if (ctx->deadline_ns) {
        uint64_t left_s = (ctx->deadline_ns - fb_time_monotonic_ns() + 999999999ull) / 1000000000ull;
        if (left_s < timeout_s)
            timeout_s = left_s ? left_s : 1;
    }
    out->timeout_s = timeout_s;
    size_t max = ctx->max_output ? ctx->max_output : FB_ENGINE_TOOL_OUTPUT_DEFAULT;
    cleanup_fd int in_fd = -1;
    if (cmd->stdin_text && (in_fd = stdin_memfd(cmd->stdin_text, a)) < 0)
        return 1;
    fb_exec_req req = {.argv = cmd->argv, .envv = cmd->envv, .nenv = cmd->nenv, .cwd = "/workspace",
                       .timeout_ms = timeout_s * 1000, .max_output = EXEC_CAP > max ? EXEC_CAP : max + 1,
                       .stdin_fd = in_fd};
    fb_exec *x = NULL;
    fb_err err = {{0}};
    fb_errc code = fb_exec_start(ctx->sandbox, &req, &x, &err);
    if (code != FB_OK) {
        tool_error(a, "%s: %s", start_refusal_is_local(code) ? "the tool could not start" : "the sandbox failed",
                   err.msg);
        return start_refusal_is_local(code) ? 1 : -1;
    }
    struct collect c = {.cap = max + 4};
    if (!(c.buf = malloc(c.cap))) {
        fb_exec_cancel(x);
        fb_exec_unref(x);
        tool_error(a, "out of memory");
        return 1;
    }
    fb_utf8_cleaner_init(&c.cl[0]);
    fb_utf8_cleaner_init(&c.cl[1]);
    int rc = 1;
    bool sandbox_cut = false;
    uint64_t pos = 0;
    while (rc == 1) {
        if (abandoned(ctx, a)) {
            fb_exec_cancel(x);
            rc = -1;
            break;
        }
        fb_exec_event ev;
        int got = fb_exec_next(x, pos, &ev, POLL_MS);
        if (got == 0)
            continue;
        if (got < 0) {
            rc = tool_error(a, "the sandbox lost the tool's command");
            break;
        }
        pos = ev.next;
        if (ev.kind == FB_EXEC_EV_STDOUT || ev.kind == FB_EXEC_EV_STDERR) {
            if (collect_add(&c, ev.kind, ev.data, ev.len, false) < 0) {
                fb_exec_cancel(x);
                rc = tool_error(a, "out of memory");
            }
        } else if (ev.kind == FB_EXEC_EV_EXIT) {
            out->started = ev.result.started;
            out->code = ev.result.code;
            out->exit_code = ev.result.exit_code;
            out->signal = ev.result.signal;
            out->timed_out = ev.result.timed_out;
            sandbox_cut = ev.result.truncated || ev.dropped;
            if (!ev.result.started)
                tool_error(a, "%s", ev.result.message);
            rc = 0;
        } else if (ev.kind == FB_EXEC_EV_ERROR) {
            rc = tool_error(a, "the sandbox failed: %s", ev.message);
        }
        fb_exec_event_clear(&ev);
    }
    fb_exec_unref(x);
    if (rc == 0 && (collect_add(&c, FB_STREAM_STDOUT, NULL, 0, true) < 0 ||
                    collect_add(&c, FB_STREAM_STDERR, NULL, 0, true) < 0 ||
                    collect_finish(&c, max, sandbox_cut, out) < 0)) {
        tool_error(a, "out of memory");
        rc = 1;
    }
    free(c.buf);
    if (rc == 0 && !out->started)
        return 1;
    return rc;
}

void tool_output_free(tool_output *o)
{
    free(o->text);
    o->text = NULL;
}

/* ---- the entry point -------------------------------------------------------------- */

int fb_engine_tool_run(const fb_tool_ctx *ctx, fb_tool t, const json_t *input, char **output, bool *is_error)
{
    tool_answer a = {0};
    int rc = 0;
    *output = NULL;
    *is_error = true;
    if (!ctx || !ctx->sandbox || (unsigned)t >= FB_TOOL_COUNT) {
        *output = strdup("invalid tool call");
        return -1;
    }
    if (!json_is_object(input)) {
        tool_error(&a, "%s: the arguments must be a JSON object", fb_tool_name(t));
    } else {
        switch (t) {
        case FB_TOOL_BASH:
            rc = tool_bash(ctx, input, &a);
            break;
        case FB_TOOL_GREP:
            rc = tool_grep(ctx, input, &a);
            break;
        case FB_TOOL_GIT:
            rc = tool_git(ctx, input, &a);
            break;
        default:
            rc = tool_python(ctx, t, input, &a);
            break;
        }
    }
    *output = a.text ? a.text : strdup(rc < 0 ? "the tool call was abandoned" : "");
    *is_error = rc < 0 || a.is_error;
    return rc < 0 ? -1 : 0;
}
