/*
 * tools_fs.c - the tools themselves (engine.h): bash, the file tools,
 * glob, grep, git and web_fetch, each a program in the guest image.
 *
 * bash, grep and git are run directly with the model's text as argv
 * elements (bash -c COMMAND is the one place a shell reads it: that is the
 * tool).  file_read, file_write, file_edit, glob and web_fetch are one
 * small Python program (python3 -I: no site, no environment, nothing from
 * /workspace on sys.path, so a planted json.py cannot take it over) that
 * reads its whole request as JSON on stdin - contents of any size and any
 * bytes, no quoting.  It prints the tool's text and exits 0, or 1 with a
 * message for the model.  The image (guest/image.conf) has bash,
 * coreutils, grep, python3 and git.
 *
 * web_fetch goes through the sandbox's egress proxy explicitly (the proxy
 * URL from the environment the agent sets with a grant, used even for
 * names NO_PROXY lists): without a grant there is no proxy and the engine
 * refuses before anything runs.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define MAX_GIT_ARGS 256
#define MAX_LINES_DEFAULT 2000
#define FETCH_BODY_CAP (4u * 1024 * 1024)
#define FETCH_TIMEOUT_S 60

static const char py_tools[] =
    "import glob, json, os, sys\n"
    "a = json.load(sys.stdin)\n"
    "op, p = a['op'], a.get('path')\n"
    "w = sys.stdout.write\n"
    "def fail(m):\n"
    "    w(m); sys.exit(1)\n"
    "def rd(p):\n"
    "    try:\n"
    "        with open(p, 'rb') as f: return f.read()\n"
    "    except OSError as e: fail('cannot read %s: %s' % (p, e.strerror))\n"
    "def wr(p, s, mk):\n"
    "    try:\n"
    "        d = os.path.dirname(p)\n"
    "        if mk and d: os.makedirs(d, exist_ok=True)\n"
    "        with open(p, 'wb') as f: f.write(s.encode())\n"
    "    except OSError as e: fail('cannot write %s: %s' % (p, e.strerror))\n"
    "if op == 'file_read':\n"
    "    off, lim, n = a['offset'], a['limit'], 0\n"
    "    try: f = open(p, 'rb')\n"
    "    except OSError as e: fail('cannot read %s: %s' % (p, e.strerror))\n"
    "    with f:\n"
    "        try:\n"
    "            for n, line in enumerate(f, 1):\n"
    "                if n >= off + lim:\n"
    "                    w('[more lines follow: continue with offset %d]\\n' % n); break\n"
    "                if n >= off: w('%6d\\t%s\\n' % (n, line.rstrip(b'\\n').decode('utf-8', 'replace')))\n"
    "        except OSError as e: fail('cannot read %s: %s' % (p, e.strerror))\n"
    "    if n == 0: w('(empty file)\\n')\n"
    "    elif n < off: w('(%s has %d lines, none from line %d on)\\n' % (p, n, off))\n"
    "elif op == 'file_write':\n"
    "    wr(p, a['content'], True)\n"
    "    w('wrote %d bytes to %s' % (len(a['content'].encode()), p))\n"
    "elif op == 'file_edit':\n"
    "    old = a['old_string']\n"
    "    try: s = rd(p).decode('utf-8')\n"
    "    except UnicodeDecodeError: fail('%s is not UTF-8 text' % p)\n"
    "    n, i = 0, s.find(old)\n"
    "    while i >= 0: n, i = n + 1, s.find(old, i + 1)\n"
    "    if n == 0: fail('old_string not found in %s' % p)\n"
    "    if n > 1: fail('old_string matches %d times in %s; include more of the surrounding text '\n"
    "                   'so that it matches exactly once' % (n, p))\n"
    "    wr(p, s.replace(old, a['new_string'], 1), False)\n"
    "    w('edited %s' % p)\n"
    "elif op == 'glob':\n"
    "    base = p or '.'\n"
    "    if not os.path.isdir(base): fail('%s is not a directory' % base)\n"
    "    r = sorted(glob.glob(a['pattern'], root_dir=base, recursive=True))\n"
    "    w('\\n'.join(r) + '\\n' if r else 'no matches')\n"
    "elif op == 'web_fetch':\n"
    "    import urllib.request, urllib.error\n"
    "    px = os.environ.get('HTTP_PROXY')\n"
    "    if not px: fail('web_fetch is not available: this sandbox has no egress proxy')\n"
    "    o = urllib.request.build_opener(urllib.request.ProxyHandler({'http': px, 'https': px}))\n"
    "    code = 0\n"
    "    try: r = o.open(a['url'], timeout=a['timeout'])\n"
    "    except urllib.error.HTTPError as e: r, code = e, 1\n"
    "    except Exception as e: fail('fetch failed: %s' % getattr(e, 'reason', e))\n"
    "    with r:\n"
    "        try: body = r.read(a['cap'] + 1)\n"
    "        except Exception as e: fail('fetch failed while reading: %s' % e)\n"
    "        w('HTTP %d %s\\ncontent-type: %s\\n\\n' % (r.getcode(), r.reason, r.headers.get('Content-Type', '')))\n"
    "        w(body[:a['cap']].decode('utf-8', 'replace'))\n"
    "        if len(body) > a['cap']: w('\\n[body cut at %d bytes]' % a['cap'])\n"
    "    sys.exit(code)\n";

/* ---- answers ------------------------------------------------------------------ */

static int answer_take(tool_answer *a, char *text, bool is_error)
{
    free(a->text);
    a->text = text;
    a->is_error = is_error;
    return text ? 0 : tool_error(a, "out of memory");
}

/* The output, then a status line: how a command ended is part of its answer. */
static void answer_with_status(const tool_output *o, tool_answer *a)
{
    char status[128];
    if (o->timed_out)
        snprintf(status, sizeof status, "[timed out after %llu s; the command was killed]",
                 (unsigned long long)o->timeout_s);
    else if (o->signal)
        snprintf(status, sizeof status, "[killed by signal %d]", o->signal);
    else
        snprintf(status, sizeof status, "[exit code: %d]", o->exit_code);
    const char *sep = o->len && o->text[o->len - 1] != '\n' ? "\n" : "";
    char *text = NULL;
    if (asprintf(&text, "%s%s%s", o->text, sep, status) < 0)
        text = NULL;
    answer_take(a, text, o->timed_out || o->signal || o->exit_code != 0);
}

/* Runs cmd; 0 with *o to look at, 1 when *a already holds the answer (a
 * refusal), -1 abandoned. */
static int run_cmd(const fb_tool_ctx *ctx, const tool_cmd *cmd, tool_output *o, tool_answer *a)
{
    int rc = tool_exec(ctx, cmd, o, a);
    if (rc != 0)
        tool_output_free(o);
    return rc;
}

/* ---- bash and git -------------------------------------------------------------- */

int tool_bash(const fb_tool_ctx *ctx, const json_t *in, tool_answer *a)
{
    const char *command = NULL;
    uint64_t timeout_s = FB_ENGINE_TOOL_TIMEOUT_DEFAULT_S;
    if (tool_str("bash", in, "command", true, &command, a) < 0 ||
        tool_uint("bash", in, "timeout_s", 1, 3600, &timeout_s, a) < 0)
        return 0;
    const char *argv[] = {"bash", "-c", command, NULL};
    tool_cmd cmd = {.argv = argv, .timeout_s = timeout_s};
    tool_output o;
    int rc = run_cmd(ctx, &cmd, &o, a);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    answer_with_status(&o, a);
    tool_output_free(&o);
    return 0;
}

int tool_git(const fb_tool_ctx *ctx, const json_t *in, tool_answer *a)
{
    const json_t *args = json_object_get(in, "args");
    if (!json_is_array(args) || json_array_size(args) == 0 || json_array_size(args) > MAX_GIT_ARGS) {
        tool_error(a, "git: field \"args\" must be a list of 1 to %d strings", MAX_GIT_ARGS);
        return 0;
    }
    static const char *const pre[] = {"git",       "-c", "safe.directory=*",       "-c",
                                      "core.pager=cat", "-c", "color.ui=false",    "-c",
                                      "user.name=ForgeBox agent", "-c",
                                      "user.email=agent@forgebox.invalid", "--no-pager"};
    size_t npre = sizeof pre / sizeof pre[0];
    const char *argv[sizeof pre / sizeof pre[0] + MAX_GIT_ARGS + 1];
    memcpy(argv, pre, sizeof pre);
    for (size_t i = 0; i < json_array_size(args); i++) {
        const json_t *v = json_array_get(args, i);
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            tool_error(a, "git: args[%zu] must be a string without NUL characters", i);
            return 0;
        }
        argv[npre + i] = json_string_value(v);
    }
    argv[npre + json_array_size(args)] = NULL;
    static const fb_env_var env[] = {{"GIT_TERMINAL_PROMPT", "0"}, {"GIT_PAGER", "cat"}};
    tool_cmd cmd = {.argv = argv, .envv = env, .nenv = 2};
    tool_output o;
    int rc = run_cmd(ctx, &cmd, &o, a);
    if (rc > 0 && o.code == FB_E_NOT_FOUND)
        tool_error(a, "git: git is not installed in this sandbox's image");
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    answer_with_status(&o, a);
    tool_output_free(&o);
    return 0;
}

/* ---- grep ------------------------------------------------------------------------ */

int tool_grep(const fb_tool_ctx *ctx, const json_t *in, tool_answer *a)
{
    const char *pattern = NULL, *path = NULL, *glob = NULL;
    if (tool_str("grep", in, "pattern", true, &pattern, a) < 0 ||
        tool_str("grep", in, "path", false, &path, a) < 0 || tool_str("grep", in, "glob", false, &glob, a) < 0)
        return 0;
    cleanup_free char *include = NULL;
    if (glob && asprintf(&include, "--include=%s", glob) < 0)
        return tool_error(a, "out of memory"), 0;
    /* Without a path operand grep -r searches "." and names files without
     * a "./" in front. */
    const char *argv[10];
    size_t n = 0;
    argv[n++] = "grep";
    argv[n++] = "-rnEI";
    argv[n++] = "--color=never";
    if (include)
        argv[n++] = include;
    argv[n++] = "-e";
    argv[n++] = pattern;
    if (path) {
        argv[n++] = "--";
        argv[n++] = path;
    }
    argv[n] = NULL;
    tool_cmd cmd = {.argv = argv};
    tool_output o;
    int rc = run_cmd(ctx, &cmd, &o, a);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    if (!o.timed_out && !o.signal && o.exit_code == 1 && o.len == 0)
        answer_take(a, strdup("no matches"), false);
    else if (!o.timed_out && !o.signal && o.exit_code == 0)
        answer_take(a, steal_pointer(&o.text), false);
    else
        answer_with_status(&o, a);
    tool_output_free(&o);
    return 0;
}

/* ---- the Python tools ------------------------------------------------------------ */

/* The request the Python program gets: op plus the checked fields. */
static json_t *python_request(const fb_tool_ctx *ctx, fb_tool t, const json_t *in, tool_answer *a)
{
    const char *name = fb_tool_name(t), *s = NULL;
    json_t *rq = json_pack("{ss}", "op", name);
    if (!rq) {
        tool_error(a, "out of memory");
        return NULL;
    }
    static const struct {
        fb_tool t;
        const char *field;
        bool required;
    } fields[] = {
        {FB_TOOL_FILE_READ, "path", true},       {FB_TOOL_FILE_WRITE, "path", true},
        {FB_TOOL_FILE_WRITE, "content", true},   {FB_TOOL_FILE_EDIT, "path", true},
        {FB_TOOL_FILE_EDIT, "old_string", true}, {FB_TOOL_FILE_EDIT, "new_string", true},
        {FB_TOOL_GLOB, "pattern", true},         {FB_TOOL_GLOB, "path", false},
        {FB_TOOL_WEB_FETCH, "url", true},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (fields[i].t != t)
            continue;
        int rc = tool_str(name, in, fields[i].field, fields[i].required, &s, a);
        if (rc < 0 || (rc == 0 && json_object_set_new(rq, fields[i].field, json_string(s)) < 0))
            goto fail;
    }
    const char *p = NULL;
    if (tool_str(name, in, "path", false, &p, a) == 0 && !p[0]) {
        tool_error(a, "%s: field \"path\" must not be empty", name);
        goto fail;
    }
    if (t == FB_TOOL_FILE_EDIT && tool_str(name, in, "old_string", true, &s, a) == 0 && !s[0]) {
        tool_error(a, "file_edit: field \"old_string\" must not be empty");
        goto fail;
    }
    if (t == FB_TOOL_FILE_READ) {
        uint64_t offset = 1, limit = MAX_LINES_DEFAULT;
        if (tool_uint(name, in, "offset", 1, INT64_MAX, &offset, a) < 0 ||
            tool_uint(name, in, "limit", 1, INT64_MAX, &limit, a) < 0)
            goto fail;
        json_object_set_new(rq, "offset", json_integer((json_int_t)offset));
        json_object_set_new(rq, "limit", json_integer((json_int_t)limit));
    }
    if (t == FB_TOOL_WEB_FETCH) {
        if (!ctx->network) {
            tool_error(a, "web_fetch is not available: this task has no network grant");
            goto fail;
        }
        if (!fb_llm_url_allowed(json_string_value(json_object_get(rq, "url")))) {
            tool_error(a, "web_fetch: field \"url\" must be an http:// or https:// URL with a host");
            goto fail;
        }
        json_object_set_new(rq, "timeout", json_integer(FETCH_TIMEOUT_S));
        json_object_set_new(rq, "cap", json_integer(FETCH_BODY_CAP));
    }
    return rq;
fail:
    json_decref(rq);
    return NULL;
}

int tool_python(const fb_tool_ctx *ctx, fb_tool t, const json_t *in, tool_answer *a)
{
    json_t *rq = python_request(ctx, t, in, a);
    if (!rq)
        return 0;
    cleanup_free char *text = json_dumps(rq, JSON_COMPACT);
    json_decref(rq);
    if (!text)
        return tool_error(a, "out of memory"), 0;
    const char *argv[] = {"python3", "-I", "-c", py_tools, NULL};
    tool_cmd cmd = {.argv = argv, .stdin_text = text,
                    .timeout_s = t == FB_TOOL_WEB_FETCH ? FETCH_TIMEOUT_S + 10 : 0};
    tool_output o;
    int rc = run_cmd(ctx, &cmd, &o, a);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    /* 0: the tool's text; 1: its message for the model; else it broke. */
    if (!o.timed_out && !o.signal && (o.exit_code == 0 || o.exit_code == 1))
        answer_take(a, steal_pointer(&o.text), o.exit_code != 0);
    else
        answer_with_status(&o, a);
    tool_output_free(&o);
    return 0;
}
