/*
 * tool_files.c - the sandbox and file tools (internal.h): create_sandbox,
 * kill_sandbox, read_file, write_file, list_files.
 *
 * Each is the REST route's service call made as the caller: creating
 * needs sandboxes:create (and counts in the team's quota), destroying
 * sandboxes:create on that sandbox, files sandboxes:exec; another team's
 * sandbox is "not found" exactly like an id that never existed.
 *
 * read_file returns text: a file that is not UTF-8, or larger than
 * FB_MCP_FILE_CAP, is a tool error that says so (the REST API serves any
 * bytes).  list_files runs a small Python program in the sandbox (the
 * service has no directory listing of its own), which prints the entries
 * as JSON within a byte budget, so that odd names (newlines, bytes that
 * are not UTF-8) arrive intact or replaced, never misparsed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/utf8.h"
#include "mcp/internal.h"

static json_t *open_ref(fb_mcp_ctx *ctx, const json_t *args, fb_perm perm, fb_sb_ref **ref)
{
    const char *id = json_string_value(json_object_get(args, "sandbox_id"));
    fb_core_err err = {0};
    if (fb_core_sandbox_open(ctx->core, ctx->caller, id, perm, ref, &err) == 0)
        return NULL;
    char what[96];
    snprintf(what, sizeof what, "sandbox %.64s", id);
    return mcp_fail_core(ctx, &err, what);
}

json_t *mcp_tool_create_sandbox(fb_mcp_ctx *ctx, const json_t *args)
{
    fb_sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    const char *b = json_string_value(json_object_get(args, "backend"));
    if (b) {
        spec.has_backend = true;
        spec.backend = strcmp(b, "vm") == 0 ? FB_BACKEND_VM : FB_BACKEND_JAIL;
    }
    mcp_arg_u64(args, "memory_mib", &spec.has_memory, &spec.memory_mib);
    mcp_arg_u64(args, "ttl_s", &spec.has_ttl, &spec.ttl_s);
    fb_sandbox_info info;
    fb_core_err err = {0};
    if (fb_core_sandbox_create(ctx->core, ctx->caller, &spec, &info, &err) < 0)
        return mcp_fail_core(ctx, &err, NULL);
    return mcp_done(json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "sandbox_id", info.id, "backend", info.backend,
                              "memory_mib", (json_int_t)info.memory_mib, "vcpus", (json_int_t)info.vcpus, "disk_mib",
                              (json_int_t)info.disk_mib, "expires_at", info.expires_at),
                    false);
}

json_t *mcp_tool_kill_sandbox(fb_mcp_ctx *ctx, const json_t *args)
{
    fb_sb_ref *ref = NULL;
    json_t *bad = open_ref(ctx, args, FB_PERM_SANDBOXES_CREATE, &ref);
    if (bad)
        return bad;
    fb_sandbox_info info;
    fb_core_sandbox_info(ref, &info);
    fb_core_err err = {0};
    if (fb_core_sandbox_delete(ctx->core, ctx->caller, ref, &err) < 0)
        return mcp_fail_core(ctx, &err, "the sandbox");
    return mcp_done(json_pack("{s:s, s:b}", "sandbox_id", info.id, "destroyed", 1), false);
}

/* The staged file's bytes (at most FB_MCP_FILE_CAP): a result text, or a
 * failure. */
static json_t *file_text(int fd, const char *path)
{
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0)
        return mcp_fail("unavailable: cannot read the staged file");
    if ((uint64_t)size > FB_MCP_FILE_CAP)
        return mcp_fail("too_large: %.512s is %lld bytes; read_file returns at most %u (use exec with head, or "
                        "the REST API)",
                        path, (long long)size, FB_MCP_FILE_CAP);
    char *buf = malloc((size_t)size + 1);
    size_t got = 0;
    if (!buf || lseek(fd, 0, SEEK_SET) < 0 || fb_read_up_to(fd, buf, (size_t)size, &got) < 0 ||
        got != (size_t)size) {
        free(buf);
        return mcp_fail("unavailable: cannot read the staged file");
    }
    json_t *r = NULL;
    json_t *text = fb_utf8_valid(buf, got, false) ? json_stringn(buf, got) : NULL;
    if (text)
        r = json_pack("{s:[{s:s, s:o}], s:b}", "content", "type", "text", "text", text, "isError", 0);
    else
        r = mcp_fail("not_text: %.512s is not UTF-8 text (%zu bytes); read_file returns text only", path, got);
    free(buf);
    return r;
}

json_t *mcp_tool_read_file(fb_mcp_ctx *ctx, const json_t *args)
{
    const char *path = json_string_value(json_object_get(args, "path"));
    fb_sb_ref *ref = NULL;
    json_t *bad = open_ref(ctx, args, FB_PERM_SANDBOXES_EXEC, &ref);
    if (bad)
        return bad;
    int fd = memfd_create("fb-mcp-file", MFD_CLOEXEC);
    fb_core_err err = {0};
    json_t *r = NULL;
    if (fd < 0)
        r = mcp_fail("unavailable: cannot stage the file");
    else if (fb_core_file_get(ctx->core, ctx->caller, ref, path, fd, &err) < 0)
        r = mcp_fail_core(ctx, &err, NULL);
    fb_core_sandbox_put(ctx->core, ref);
    if (!r)
        r = file_text(fd, path);
    if (fd >= 0)
        close(fd);
    return r;
}

json_t *mcp_tool_write_file(fb_mcp_ctx *ctx, const json_t *args)
{
    const char *path = json_string_value(json_object_get(args, "path"));
    const json_t *content = json_object_get(args, "content");
    fb_sb_ref *ref = NULL;
    json_t *bad = open_ref(ctx, args, FB_PERM_SANDBOXES_EXEC, &ref);
    if (bad)
        return bad;
    fb_upload *up = NULL;
    fb_core_err err = {0};
    int rc = fb_core_upload_begin(ctx->core, ctx->caller, ref, path, &up, &err);
    /* The upload holds its own reference to the sandbox. */
    fb_core_sandbox_put(ctx->core, ref);
    if (rc < 0)
        return mcp_fail_core(ctx, &err, NULL);
    uint64_t size = 0;
    if (fb_core_upload_write(up, json_string_value(content), json_string_length(content), &err) < 0) {
        fb_core_err ignored = {0};
        fb_core_upload_finish(up, &size, &ignored);
        return mcp_fail_core(ctx, &err, NULL);
    }
    if (fb_core_upload_finish(up, &size, &err) < 0)
        return mcp_fail_core(ctx, &err, NULL);
    return mcp_done(json_pack("{s:s, s:I}", "path", path, "size", (json_int_t)size), false);
}

/* Lists argv[1] as {"entries": [{name, type, size}], "truncated"}, names
 * sorted, within ~60 KB of output (under FB_MCP_OUTPUT_CAP). */
static const char list_program[] =
    "import json, os, stat, sys\n"
    "p = sys.argv[1]\n"
    "try:\n"
    "    names = sorted(os.listdir(p))\n"
    "except OSError as e:\n"
    "    sys.stderr.write('%s: %s' % (p, e.strerror)); sys.exit(1)\n"
    "out, used, cut = [], 0, False\n"
    "for n in names:\n"
    "    try:\n"
    "        st = os.lstat(os.path.join(p, n))\n"
    "    except OSError:\n"
    "        continue\n"
    "    m = st.st_mode\n"
    "    t = 'dir' if stat.S_ISDIR(m) else 'file' if stat.S_ISREG(m) else 'symlink' if stat.S_ISLNK(m) "
    "else 'other'\n"
    "    e = {'name': n.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace'), 'type': t, "
    "'size': st.st_size}\n"
    "    used += len(json.dumps(e, ensure_ascii=False).encode()) + 1\n"
    "    if used > 60000:\n"
    "        cut = True; break\n"
    "    out.append(e)\n"
    "sys.stdout.write(json.dumps({'entries': out, 'truncated': cut}, ensure_ascii=False))\n";

json_t *mcp_tool_list_files(fb_mcp_ctx *ctx, const json_t *args)
{
    const char *path = json_string_value(json_object_get(args, "path"));
    if (!path)
        path = "/workspace";
    const char *argv[] = {"python3", "-c", list_program, path, NULL};
    json_t *run = mcp_run_named(ctx, json_string_value(json_object_get(args, "sandbox_id")), argv, 30);
    json_t *sc = json_object_get(run, "structuredContent");
    if (!sc)
        return run; /* the sandbox refused or failed: its message */
    const json_t *code = json_object_get(sc, "exit_code");
    if (!json_is_integer(code) || json_integer_value(code) != 0) {
        json_t *r = mcp_fail("list_files: %.900s", json_string_value(json_object_get(sc, "stderr")));
        json_decref(run);
        return r;
    }
    const char *text = json_string_value(json_object_get(sc, "stdout"));
    json_error_t je;
    json_t *listing = text ? json_loads(text, JSON_REJECT_DUPLICATES, &je) : NULL;
    json_decref(run);
    if (!json_is_object(listing)) {
        json_decref(listing);
        return mcp_fail("list_files: the sandbox gave no listing for %.512s", path);
    }
    json_object_set_new(listing, "path", json_string(path));
    return mcp_done(listing, false);
}
