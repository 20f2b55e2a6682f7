/*
 * filesystem.c - envd's filesystem.Filesystem over Connect-RPC JSON
 * (internal.h): Stat, ListDir, MakeDir, Move, Remove.
 *
 * Each is a few execs of the sandbox's own tools (find, mkdir, mv, rm)
 * through the service, with the user's paths as argv elements, never in a
 * shell string, so they run as the sandbox user, under its hardening and
 * audit, exactly as a command would.  find -printf describes entries
 * NUL-separated, so any byte a file name may hold comes through.
 * WatchDir and the watcher methods answer "unimplemented".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compat/e2b/internal.h"

/* type, size, mode (octal), permissions, owner, group, mtime, link target, path */
#define ENTRY_FORMAT "%y\\t%s\\t%m\\t%M\\t%u\\t%g\\t%T@\\t%l\\t%p\\0"
#define MAX_DEPTH 32

static json_t *entry_json(char *line)
{
    char *f[9];
    for (int i = 0; i < 8; i++) {
        f[i] = line;
        char *tab = strchr(line, '\t');
        if (!tab)
            return NULL;
        *tab = '\0';
        line = tab + 1;
    }
    f[8] = line;
    const char *type = f[0][0] == 'd' ? "FILE_TYPE_DIRECTORY" : "FILE_TYPE_FILE";
    unsigned long mode = strtoul(f[2], NULL, 8);
    if (f[0][0] == 'd')
        mode |= 1ul << 31; /* as envd reports Go's os.ModeDir */
    time_t secs = (time_t)strtoll(f[6], NULL, 10);
    struct tm tm;
    char when[40] = "1970-01-01T00:00:00Z";
    if (gmtime_r(&secs, &tm))
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *slash = strrchr(f[8], '/');
    const char *name = slash && slash[1] ? slash + 1 : f[8];
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:s}", "name", name, "type", type, "path",
                          f[8], "size", (json_int_t)strtoll(f[1], NULL, 10), "mode", (json_int_t)mode,
                          "permissions", f[3], "owner", f[4], "group", f[5], "modifiedTime", when);
    if (o && f[0][0] == 'l')
        json_object_set_new(o, "symlinkTarget", json_string(f[7]));
    return o;
}

/* Entries of find over path (depth -1: the path itself).  NULL with
 * *code: 1 when find found nothing there (no such path), -1 on failure. */
static json_t *find_entries(e2b_req *r, fb_sb_ref *ref, const char *path, int depth, fb_core_err *err)
{
    char d[16];
    snprintf(d, sizeof d, "%d", depth < 0 ? 0 : depth);
    const char *argv[] = {"find", path, depth < 0 ? "-maxdepth" : "-mindepth", depth < 0 ? "0" : "1",
                          "-maxdepth", d, "-printf", ENTRY_FORMAT, NULL};
    if (depth < 0) {
        argv[4] = "-printf";
        argv[5] = ENTRY_FORMAT;
        argv[6] = NULL;
    }
    char *out = NULL;
    size_t len = 0;
    int code = e2b_run(r, ref, argv, &out, &len, err);
    if (code < 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t off = 0; off < len;) {
        char *line = out + off;
        size_t n = strnlen(line, len - off);
        json_t *e = n ? entry_json(line) : NULL;
        if (e)
            json_array_append_new(arr, e);
        off += n + 1;
    }
    free(out);
    if (code != 0 && json_array_size(arr) == 0) {
        json_decref(arr);
        fb_core_fail(err, FB_CORE_NOT_FOUND, "no such file or directory: %s", path);
        return NULL;
    }
    return arr;
}

static json_t *stat_entry(e2b_req *r, fb_sb_ref *ref, const char *path, fb_core_err *err)
{
    json_t *arr = find_entries(r, ref, path, -1, err);
    json_t *e = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if (arr && !e)
        fb_core_fail(err, FB_CORE_NOT_FOUND, "no such file or directory: %s", path);
    return e;
}

static int run_ok(e2b_req *r, fb_sb_ref *ref, const char *const *argv, fb_core_err *err)
{
    int code = e2b_run(r, ref, argv, NULL, NULL, err);
    if (code > 0)
        return fb_core_fail(err, FB_CORE_FILE_ERROR, "%s failed (exit status %d)", argv[0], code);
    return code;
}

static enum MHD_Result fs_error(e2b_req *r, const fb_core_err *err)
{
    return e2b_rpc_core_error(r, err);
}

enum MHD_Result e2b_filesystem(e2b_req *r, const char *method, fb_sb_ref *ref)
{
    static const char *const known[] = {"Stat", "ListDir", "MakeDir", "Move", "Remove"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok = ok || strcmp(method, known[i]) == 0;
    if (!ok)
        return e2b_rpc_error(r, E2B_RPC_UNIMPLEMENTED, "watching directories is not supported on this server");
    enum MHD_Result rc;
    json_t *req = e2b_rpc_request(r, &rc);
    if (!req)
        return rc;
    bool move = strcmp(method, "Move") == 0;
    char path[4096], dest[4096];
    fb_core_err err = {0};
    if (!e2b_path(json_string_value(json_object_get(req, move ? "source" : "path")), path, sizeof path) ||
        (move && !e2b_path(json_string_value(json_object_get(req, "destination")), dest, sizeof dest))) {
        json_decref(req);
        return e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "the path is too long");
    }
    json_int_t depth = json_integer_value(json_object_get(req, "depth"));
    json_decref(req);
    json_t *e = NULL;
    if (strcmp(method, "Stat") == 0) {
        e = stat_entry(r, ref, path, &err);
        return e ? e2b_rpc_reply(r, json_pack("{s:o}", "entry", e)) : fs_error(r, &err);
    }
    if (strcmp(method, "ListDir") == 0) {
        e = stat_entry(r, ref, path, &err);
        if (!e)
            return fs_error(r, &err);
        bool dir = strcmp(json_string_value(json_object_get(e, "type")), "FILE_TYPE_DIRECTORY") == 0;
        json_decref(e);
        if (!dir)
            return e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "the path is not a directory");
        json_t *arr = find_entries(r, ref, path, depth < 1 ? 1 : depth > MAX_DEPTH ? MAX_DEPTH : (int)depth, &err);
        return arr ? e2b_rpc_reply(r, json_pack("{s:o}", "entries", arr)) : fs_error(r, &err);
    }
    if (strcmp(method, "MakeDir") == 0) {
        if ((e = stat_entry(r, ref, path, &err))) {
            json_decref(e);
            return e2b_rpc_error(r, E2B_RPC_ALREADY_EXISTS, "the directory exists already");
        }
        const char *argv[] = {"mkdir", "-p", "--", path, NULL};
        if (err.code != FB_CORE_NOT_FOUND || run_ok(r, ref, argv, &err) < 0 || !(e = stat_entry(r, ref, path, &err)))
            return fs_error(r, &err);
        return e2b_rpc_reply(r, json_pack("{s:o}", "entry", e));
    }
    if (!(e = stat_entry(r, ref, path, &err)))
        return fs_error(r, &err);
    json_decref(e);
    if (move) {
        char parent[4096];
        snprintf(parent, sizeof parent, "%s", dest);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent)
            *slash = '\0';
        const char *mk[] = {"mkdir", "-p", "--", parent, NULL};
        const char *mv[] = {"mv", "-T", "--", path, dest, NULL};
        if (run_ok(r, ref, mk, &err) < 0 || run_ok(r, ref, mv, &err) < 0 || !(e = stat_entry(r, ref, dest, &err)))
            return fs_error(r, &err);
        return e2b_rpc_reply(r, json_pack("{s:o}", "entry", e));
    }
    const char *rm[] = {"rm", "-rf", "--", path, NULL};
    if (run_ok(r, ref, rm, &err) < 0)
        return fs_error(r, &err);
    return e2b_rpc_reply(r, json_object());
}
