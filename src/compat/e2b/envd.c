/*
 * envd.c - the in-sandbox API's routes and the helpers its handlers share
 * (internal.h).
 *
 *   GET  /health                       204 while the sandbox runs (502 once gone)
 *   GET  /files?path=                  download (envd_files.c; POST streams there)
 *   POST /process.Process/{method}     process.c
 *   POST /filesystem.Filesystem/{method}  filesystem.c
 *   POST /execute                      the code interpreter (execute.c)
 *   POST /contexts, GET /contexts      code interpreter contexts (ids only)
 *
 * Every route opens the sandbox through the service for the principal
 * behind the access token: sandboxes:exec for anything that runs or moves
 * files, sandboxes:read for /health; decided and audited there.  Paths are
 * E2B's: a relative path and /home/user (E2B's home) live in /workspace,
 * the sandbox's home here.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat/e2b/internal.h"

bool e2b_valid_id(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

bool e2b_path(const char *in, char *out, size_t cap)
{
    static const char home[] = E2B_HOME;
    size_t hl = sizeof home - 1;
    int n;
    if (!in || !in[0] || strcmp(in, "~") == 0)
        n = snprintf(out, cap, "/workspace");
    else if (strncmp(in, home, hl) == 0 && (in[hl] == '\0' || in[hl] == '/'))
        n = snprintf(out, cap, "/workspace%s", in + hl);
    else if (strncmp(in, "~/", 2) == 0)
        n = snprintf(out, cap, "/workspace/%s", in + 2);
    else if (in[0] != '/')
        n = snprintf(out, cap, "/workspace/%s", in);
    else
        n = snprintf(out, cap, "%s", in);
    return n > 0 && (size_t)n < cap;
}

fb_env_var *e2b_env(json_t *base, json_t *extra, size_t *n)
{
    size_t cap = json_object_size(base) + json_object_size(extra);
    *n = 0;
    if (cap == 0)
        return NULL;
    fb_env_var *v = calloc(cap, sizeof *v);
    if (!v)
        return NULL;
    json_t *objs[2] = {base, extra};
    for (int o = 0; o < 2; o++) {
        const char *k;
        json_t *val;
        json_object_foreach(objs[o], k, val) {
            if (!json_is_string(val))
                continue;
            size_t i = 0;
            while (i < *n && strcmp(v[i].key, k) != 0) /* a later value wins */
                i++;
            v[i] = (fb_env_var){.key = k, .value = json_string_value(val)};
            if (i == *n)
                (*n)++;
        }
    }
    return v;
}

int e2b_run(e2b_req *r, fb_sb_ref *ref, const char *const *argv, char **out, size_t *outlen, fb_core_err *err)
{
    fb_core_exec_spec spec = {.argv = argv, .timeout_s = 60};
    fb_core_exec *x = NULL;
    if (fb_core_exec_start(r->s->sh.core, &r->caller, ref, &spec, FB_EXEC_PLAIN, &x, err) < 0)
        return -1;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    uint64_t pos = 0;
    int code = -1;
    fb_exec_event ev;
    for (;;) {
        if (fb_core_exec_next(x, pos, &ev, -1) != 1) {
            fb_core_fail(err, FB_CORE_INTERNAL, "internal: the exec's log ended without its end");
            break;
        }
        if (ev.kind == FB_EXEC_EV_EXIT) {
            code = ev.result.started && ev.result.signal == 0 ? ev.result.exit_code : 128 + ev.result.signal;
            if (!ev.result.started)
                fb_core_fail(err, FB_CORE_SANDBOX_FAILED, "%s", ev.result.message), code = -1;
            break;
        }
        if (ev.kind == FB_EXEC_EV_ERROR) {
            fb_core_fail(err, FB_CORE_SANDBOX_FAILED, "%s", ev.message);
            break;
        }
        pos = ev.next;
        if (ev.kind == FB_EXEC_EV_STDOUT && out && len + ev.len + 1 <= 16u * 1024 * 1024) {
            if (len + ev.len + 1 > cap) {
                size_t ncap = cap ? cap * 2 : 4096;
                while (ncap < len + ev.len + 1)
                    ncap *= 2;
                char *nb = realloc(buf, ncap);
                if (nb) {
                    buf = nb;
                    cap = ncap;
                }
            }
            if (len + ev.len + 1 <= cap) {
                memcpy(buf + len, ev.data, ev.len);
                len += ev.len;
                buf[len] = '\0';
            }
        }
        fb_exec_event_clear(&ev);
    }
    fb_exec_event_clear(&ev);
    fb_core_exec_release(x);
    if (out) {
        *out = buf ? buf : strdup("");
        *outlen = len;
    } else {
        free(buf);
    }
    return code;
}

static enum MHD_Result contexts(e2b_req *r)
{
    if (strcmp(r->method, "GET") == 0)
        return e2b_send_json(r, 200, json_pack("[{s:s, s:s, s:s}]", "id", "default", "language", "python", "cwd",
                                               E2B_HOME));
    enum MHD_Result rc;
    json_t *b = e2b_body_json(r, &rc);
    if (!b)
        return rc;
    const char *lang = json_string_value(json_object_get(b, "language"));
    bool python = !lang || strcmp(lang, "python") == 0;
    json_decref(b);
    if (!python)
        return e2b_send_error(r, 400, "only python contexts are supported on this server");
    uint8_t raw[8];
    char id[17];
    fb_random_bytes(raw, sizeof raw);
    fb_hex(raw, sizeof raw, id);
    return e2b_send_json(r, 200, json_pack("{s:s, s:s, s:s}", "id", id, "language", "python", "cwd", E2B_HOME));
}

enum MHD_Result e2b_envd(e2b_req *r)
{
    const char *u = r->url;
    if (r->anonymous)
        return contexts(r);
    bool health = strcmp(u, "/health") == 0;
    fb_perm perm = health ? FB_PERM_SANDBOXES_READ : FB_PERM_SANDBOXES_EXEC;
    fb_sb_ref *ref = NULL;
    fb_core_err err = {0};
    if (fb_core_sandbox_open(r->s->sh.core, &r->caller, e2b_box_id(r->box), perm, &ref, &err) < 0) {
        if (err.code == FB_CORE_NOT_FOUND) {
            e2b_box_forget(r->s->boxes, e2b_box_id(r->box));
            return e2b_send_error(r, health ? 502 : 404, "the sandbox is not running");
        }
        return e2b_send_core_error(r, &err);
    }
    enum MHD_Result rc;
    static const char proc[] = "/process.Process/", fs[] = "/filesystem.Filesystem/";
    if (health)
        rc = e2b_send_empty(r, 204);
    else if (strcmp(u, "/files") == 0 && strcmp(r->method, "GET") == 0)
        rc = e2b_files_get(r, ref);
    else if (strncmp(u, proc, sizeof proc - 1) == 0 && strcmp(r->method, "POST") == 0)
        rc = e2b_process(r, u + sizeof proc - 1, ref);
    else if (strncmp(u, fs, sizeof fs - 1) == 0 && strcmp(r->method, "POST") == 0)
        rc = e2b_filesystem(r, u + sizeof fs - 1, ref);
    else if (strcmp(u, "/execute") == 0 && strcmp(r->method, "POST") == 0)
        rc = e2b_execute(r, ref);
    else if (strcmp(u, "/contexts") == 0)
        rc = contexts(r);
    else
        rc = e2b_send_error(r, 404, "no such route");
    fb_core_sandbox_put(r->s->sh.core, ref);
    return rc;
}
