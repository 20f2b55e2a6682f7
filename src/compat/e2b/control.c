/*
 * control.c - E2B's control API on the sandbox service (internal.h):
 *
 *   POST   /sandboxes, /v2/sandboxes             create
 *   GET    /sandboxes, /v2/sandboxes             list (?metadata=, ?state=)
 *   GET    /sandboxes/{id}                       detail
 *   DELETE /sandboxes/{id}                       kill
 *   POST   /sandboxes/{id}/timeout               set the timeout, from now
 *   POST   /sandboxes/{id}/refreshes             the same ({duration})
 *   POST   /sandboxes/{id}/connect, /v2/..., /sandboxes/{id}/resume
 *                                                connect (the sandbox is running)
 *   POST   /sandboxes/{id}/pause                 400: sandboxes cannot be paused here
 *
 * Templates map to a backend and shape: "base", "code-interpreter-v1",
 * "code-interpreter" (and no template) take the configured default
 * backend and shape; "jail" and "vm" name a backend.  Anything else is a
 * 400 that names them.  timeout (seconds) is the sandbox's TTL, within
 * sandbox.max_ttl_s; envVars are kept and given to every command and code
 * context; metadata is kept and returned.  The service decides and audits
 * every permission (sandboxes:create, sandboxes:read) and quota.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat/e2b/internal.h"

#define CLIENT_ID "forgebox"

/* The sandbox JSON the SDK parses (Sandbox, ListedSandbox, SandboxDetail). */
static json_t *sandbox_json(e2b_srv *s, const fb_sandbox_info *info, bool with_token)
{
    char tmpl[64];
    json_t *meta = e2b_boxes_metadata_of(s->boxes, info->id, tmpl, sizeof tmpl);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:s, s:n}", "sandboxID", info->id,
                          "templateID", tmpl, "alias", tmpl, "clientID", CLIENT_ID, "startedAt", info->created_at,
                          "endAt", info->expires_at, "cpuCount", (json_int_t)info->vcpus, "memoryMB",
                          (json_int_t)info->memory_mib, "diskSizeMB", (json_int_t)info->disk_mib, "metadata", meta,
                          "state", "running", "domain");
    json_object_set_new(o, "envdVersion", json_string(E2B_ENVD_VERSION));
    if (with_token) {
        e2b_box *box = e2b_box_get(s->boxes, info->id);
        if (box)
            json_object_set_new(o, "envdAccessToken", json_string(e2b_box_token(box)));
        e2b_box_put(s->boxes, box);
    }
    return o;
}

static int template_spec(const char *t, fb_sandbox_spec *spec)
{
    static const char *const defaults[] = {"base", "code-interpreter-v1", "code-interpreter", ""};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (strcmp(t, defaults[i]) == 0)
            return 0;
    if (strcmp(t, "jail") == 0 || strcmp(t, "vm") == 0) {
        spec->has_backend = true;
        spec->backend = t[0] == 'j' ? FB_BACKEND_JAIL : FB_BACKEND_VM;
        return 0;
    }
    return -1;
}

/* Checks envVars/metadata: an object of strings (or absent). */
static bool strings_object(json_t *j)
{
    if (!j || json_is_null(j))
        return true;
    if (!json_is_object(j) || json_object_size(j) > FB_EXEC_MAX_ENV)
        return false;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) if (!json_is_string(v)) return false;
    return true;
}

static enum MHD_Result create(e2b_req *r)
{
    enum MHD_Result rc;
    json_t *b = e2b_body_json(r, &rc);
    if (!b)
        return rc;
    const char *tmpl = json_string_value(json_object_get(b, "templateID"));
    json_t *timeout = json_object_get(b, "timeout");
    json_t *meta = json_object_get(b, "metadata"), *envs = json_object_get(b, "envVars");
    fb_sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    const char *bad = NULL;
    if (!tmpl)
        tmpl = "base";
    if (strlen(tmpl) >= 64 || template_spec(tmpl, &spec) < 0)
        bad = "unknown templateID: this server has \"base\", \"code-interpreter-v1\", \"code-interpreter\", "
              "\"jail\" and \"vm\"";
    else if (timeout && (!json_is_integer(timeout) || json_integer_value(timeout) < 1))
        bad = "\"timeout\" must be a positive number of seconds";
    else if (!strings_object(meta) || !strings_object(envs))
        bad = "\"metadata\" and \"envVars\" must be objects of strings";
    if (bad) {
        json_decref(b);
        return e2b_send_error(r, 400, bad);
    }
    if (timeout) {
        spec.has_ttl = true;
        spec.ttl_s = (uint64_t)json_integer_value(timeout);
    }
    fb_sandbox_info info;
    fb_core_err err = {0};
    if (fb_core_sandbox_create(r->s->sh.core, &r->caller, &spec, &info, &err) < 0) {
        json_decref(b);
        return e2b_send_core_error(r, &err);
    }
    char token[E2B_TOKEN_LEN + 1];
    int added = e2b_box_add(r->s->boxes, &info, &r->caller, tmpl, meta, envs, token);
    json_decref(b);
    if (added < 0) {
        /* Not reachable through envd: do not leave it running. */
        fb_sb_ref *ref = NULL;
        if (fb_core_sandbox_open(r->s->sh.core, &r->caller, info.id, FB_PERM_SANDBOXES_CREATE, &ref, &err) == 0)
            fb_core_sandbox_delete(r->s->sh.core, &r->caller, ref, &err);
        return e2b_send_error(r, 503, "too many sandboxes for the e2b listener");
    }
    return e2b_send_json(r, 201, sandbox_json(r->s, &info, true));
}

/* One key=value pair of ?metadata= (each side percent-encoded once more). */
static void percent_decode(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%' && p[1] && p[2]) {
            char hx[3] = {p[1], p[2], 0};
            char *end;
            long v = strtol(hx, &end, 16);
            if (*end == '\0' && v > 0) {
                *o++ = (char)v;
                p += 2;
                continue;
            }
        }
        *o++ = *p == '+' ? ' ' : *p;
    }
    *o = '\0';
}

static bool metadata_matches(json_t *meta, const char *query)
{
    if (!query || !query[0])
        return true;
    char *q = strdup(query);
    if (!q)
        return false;
    bool ok = true;
    char *save = NULL;
    for (char *pair = strtok_r(q, "&", &save); pair && ok; pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (!eq)
            continue;
        *eq = '\0';
        percent_decode(pair);
        percent_decode(eq + 1);
        const char *have = json_string_value(json_object_get(meta, pair));
        ok = have && strcmp(have, eq + 1) == 0;
    }
    free(q);
    return ok;
}

static enum MHD_Result list(e2b_req *r)
{
    const char *state = e2b_query(r, "state");
    const char *mq = e2b_query(r, "metadata");
    fb_sandbox_info *all = NULL;
    size_t n = 0;
    fb_core_err err = {0};
    if (fb_core_sandbox_list(r->s->sh.core, &r->caller, &all, &n, &err) < 0)
        return e2b_send_core_error(r, &err);
    json_t *arr = json_array();
    /* Every sandbox here is running; a filter for paused ones only finds none. */
    bool running = !state || !state[0] || strstr(state, "running");
    for (size_t i = 0; running && i < n; i++) {
        json_t *o = sandbox_json(r->s, &all[i], false);
        if (metadata_matches(json_object_get(o, "metadata"), mq))
            json_array_append_new(arr, o);
        else
            json_decref(o);
    }
    free(all);
    return e2b_send_json(r, 200, arr);
}

/* The {id} sandbox opened for perm; NULL: answered. */
static fb_sb_ref *open_box(e2b_req *r, const char *id, fb_perm perm, enum MHD_Result *rc)
{
    fb_sb_ref *ref = NULL;
    fb_core_err err = {0};
    if (fb_core_sandbox_open(r->s->sh.core, &r->caller, id, perm, &ref, &err) < 0) {
        if (err.code == FB_CORE_NOT_FOUND)
            e2b_box_forget(r->s->boxes, id);
        *rc = err.code == FB_CORE_NOT_FOUND ? e2b_send_error(r, 404, "sandbox not found")
                                            : e2b_send_core_error(r, &err);
        return NULL;
    }
    return ref;
}

static enum MHD_Result detail(e2b_req *r, const char *id)
{
    enum MHD_Result rc;
    fb_sb_ref *ref = open_box(r, id, FB_PERM_SANDBOXES_READ, &rc);
    if (!ref)
        return rc;
    fb_sandbox_info info;
    fb_core_sandbox_info(ref, &info);
    fb_core_sandbox_put(r->s->sh.core, ref);
    return e2b_send_json(r, 200, sandbox_json(r->s, &info, true));
}

static enum MHD_Result kill_box(e2b_req *r, const char *id)
{
    enum MHD_Result rc;
    fb_sb_ref *ref = open_box(r, id, FB_PERM_SANDBOXES_CREATE, &rc);
    if (!ref)
        return rc;
    fb_core_err err = {0};
    int st = fb_core_sandbox_delete(r->s->sh.core, &r->caller, ref, &err);
    e2b_box_forget(r->s->boxes, id);
    return st < 0 ? e2b_send_core_error(r, &err) : e2b_send_empty(r, 204);
}

/* timeout, refreshes and connect: a new TTL from now (field: its name). */
static enum MHD_Result retime(e2b_req *r, const char *id, const char *field, bool answer_sandbox)
{
    enum MHD_Result rc;
    json_t *b = e2b_body_json(r, &rc);
    if (!b)
        return rc;
    json_t *t = json_object_get(b, field);
    bool has = t && !json_is_null(t), integer = json_is_integer(t);
    json_int_t secs = json_integer_value(t);
    json_decref(b);
    if (has && (!integer || secs < 1))
        return e2b_send_error(r, 400, "the timeout must be a positive number of seconds");
    if (!has && !answer_sandbox)
        return e2b_send_error(r, 400, "the timeout is missing");
    fb_sb_ref *ref = open_box(r, id, has ? FB_PERM_SANDBOXES_CREATE : FB_PERM_SANDBOXES_READ, &rc);
    if (!ref)
        return rc;
    fb_core_err err = {0};
    fb_sandbox_info info;
    fb_core_sandbox_info(ref, &info);
    int st = has ? fb_core_sandbox_set_ttl(r->s->sh.core, &r->caller, ref, (uint64_t)secs, &info, &err) : 0;
    fb_core_sandbox_put(r->s->sh.core, ref);
    if (st < 0)
        return e2b_send_core_error(r, &err);
    e2b_box_set_expiry(r->s->boxes, id, info.expires_at);
    if (!answer_sandbox)
        return e2b_send_empty(r, 204);
    /* A sandbox created through the native API gets its entry (and
     * envd access token) on first connect, held for this caller. */
    e2b_box *box = e2b_box_get(r->s->boxes, id);
    char token[E2B_TOKEN_LEN + 1];
    if (!box && e2b_box_add(r->s->boxes, &info, &r->caller, "base", NULL, NULL, token) < 0)
        return e2b_send_error(r, 503, "too many sandboxes for the e2b listener");
    e2b_box_put(r->s->boxes, box);
    return e2b_send_json(r, 200, sandbox_json(r->s, &info, true));
}

enum MHD_Result e2b_control(e2b_req *r)
{
    const char *p = r->url;
    if (strncmp(p, "/v2/", 4) == 0)
        p += 3;
    if (strcmp(p, "/sandboxes") == 0) {
        if (strcmp(r->method, "POST") == 0)
            return create(r);
        if (strcmp(r->method, "GET") == 0)
            return list(r);
        return e2b_send_error(r, 405, "method not allowed");
    }
    if (strncmp(p, "/sandboxes/", 11) != 0)
        return e2b_send_error(r, 404, "no such route");
    const char *id = p + 11;
    const char *slash = strchr(id, '/');
    size_t idlen = slash ? (size_t)(slash - id) : strlen(id);
    if (!e2b_valid_id(id, idlen, 31))
        return e2b_send_error(r, 404, "sandbox not found");
    char sid[32];
    memcpy(sid, id, idlen);
    sid[idlen] = '\0';
    const char *sub = slash ? slash + 1 : "";
    bool post = strcmp(r->method, "POST") == 0;
    if (!sub[0] && strcmp(r->method, "GET") == 0)
        return detail(r, sid);
    if (!sub[0] && strcmp(r->method, "DELETE") == 0)
        return kill_box(r, sid);
    if (post && strcmp(sub, "timeout") == 0)
        return retime(r, sid, "timeout", false);
    if (post && strcmp(sub, "refreshes") == 0)
        return retime(r, sid, "duration", false);
    if (post && (strcmp(sub, "connect") == 0 || strcmp(sub, "resume") == 0))
        return retime(r, sid, "timeout", true);
    if (post && strcmp(sub, "pause") == 0)
        return e2b_send_error(r, 400, "sandboxes cannot be paused on this server");
    return e2b_send_error(r, 404, "no such route");
}
