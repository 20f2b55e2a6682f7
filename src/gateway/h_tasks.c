/*
 * h_tasks.c - the task routes (gw.h; the service is core.h's "tasks"):
 *
 *   POST /v1/tasks                          create and start (201, the task)
 *   GET  /v1/tasks                          {"tasks": [...]}
 *   GET  /v1/tasks/{id}                     the task
 *   GET  /v1/tasks/{id}/events              the transcript as server-sent events
 *   GET  /v1/tasks/{id}/approvals           {"approvals": [...]}
 *   POST /v1/tasks/{id}/approvals/{aid}     {decision: approve|deny, reason?} -> the approval
 *   POST /v1/tasks/{id}/cancel              -> the task (cancelled)
 *   POST /v1/tasks/{id}/messages            {content} -> the task (running again)
 *
 * Bodies are checked strictly here (unknown fields, nested ones included,
 * are 400), values' rules by the service.  The event stream replays from
 * the start (or after Last-Event-ID / ?after=N, a sequence number) and
 * follows a live task, one event per message:
 *
 *   id: 7
 *   event: tool_call
 *   data: {"seq":7,"type":"tool_call","at":"...","data":{"call_id":...}}
 *
 * with a ": keepalive" comment every second of silence; it ends after the
 * last event of a task that has ended.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"

static const gw_field create_fields[] = {
    {"prompt", GW_T_STRING, true, "\"prompt\" must be a string"},
    {"provider", GW_T_STRING, true, "\"provider\" must be the name of a configured provider"},
    {"model", GW_T_STRING, true, "\"model\" must be a string"},
    {"system", GW_T_STRING, false, "\"system\" must be a string"},
    {"backend", GW_T_STRING, false, "\"backend\" must be \"vm\" or \"jail\""},
    {"tools", GW_T_ARRAY, false, "\"tools\" must be an array of tool names"},
    {"approvals", GW_T_ARRAY, false, "\"approvals\" must be an array of tool names"},
    {"network", GW_T_OBJECT, false, "\"network\" must be an object {\"allow\": [...]}"},
    {"limits", GW_T_OBJECT, false, "\"limits\" must be an object"},
    {NULL, 0, false, NULL},
};

static const gw_field decide_fields[] = {
    {"decision", GW_T_STRING, true, "\"decision\" must be \"approve\" or \"deny\""},
    {"reason", GW_T_STRING, false, "\"reason\" must be a string"},
    {NULL, 0, false, NULL},
};

static const gw_field message_fields[] = {
    {"content", GW_T_STRING, true, "\"content\" must be a string"},
    {NULL, 0, false, NULL},
};

/* ---- the create body -------------------------------------------------------------- */

static const char *toolset_field(json_t *body, const char *name, fb_toolset *out, bool *has, char *msg, size_t cap)
{
    json_t *a = json_object_get(body, name);
    *has = a != NULL;
    *out = 0;
    if (!a)
        return NULL;
    fb_err e = {{0}};
    if (fb_toolset_from_json(a, out, &e) < 0) {
        snprintf(msg, cap, "\"%s\": %.300s", name, e.msg);
        return msg;
    }
    return NULL;
}

static const char *limits_field(json_t *body, fb_engine_limits *l, char *msg, size_t cap)
{
    static const char *const names[] = {"max_turns", "max_tokens", "max_tool_calls", "timeout_s"};
    uint64_t *slots[] = {&l->max_turns, &l->max_tokens, &l->max_tool_calls, &l->timeout_s};
    json_t *o = json_object_get(body, "limits");
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        size_t i = 0;
        while (i < 4 && strcmp(k, names[i]) != 0)
            i++;
        if (i == 4) {
            snprintf(msg, cap, "\"limits\" has no field \"%.40s\" (max_turns, max_tokens, max_tool_calls, "
                               "timeout_s)", k);
            return msg;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            snprintf(msg, cap, "\"limits.%s\" must be a non-negative integer (0: the default)", names[i]);
            return msg;
        }
        *slots[i] = (uint64_t)json_integer_value(v);
    }
    return NULL;
}

static const char *network_field(json_t *body, fb_egress_list *list, bool *has, char *msg, size_t cap)
{
    json_t *o = json_object_get(body, "network");
    *has = false;
    if (!o || json_is_null(o))
        return NULL;
    json_t *allow = json_object_get(o, "allow");
    if (json_object_size(o) != 1 || !json_is_array(allow) || json_array_size(allow) > FB_EGRESS_MAX_ENTRIES)
        return "\"network\" must be {\"allow\": [host names]} with at most 64 entries";
    const char *texts[FB_EGRESS_MAX_ENTRIES];
    for (size_t i = 0; i < json_array_size(allow); i++) {
        texts[i] = json_string_value(json_array_get(allow, i));
        if (!texts[i])
            return "\"network.allow\" must be an array of host names";
    }
    fb_err e = {{0}};
    if (fb_egress_list_parse(texts, json_array_size(allow), list, &e) != FB_EGRESS_OK) {
        snprintf(msg, cap, "\"network.allow\": %.300s", e.msg);
        return msg;
    }
    *has = true;
    return NULL;
}

static enum MHD_Result task_create(gw_req *r)
{
    fb_task_spec spec;
    memset(&spec, 0, sizeof spec);
    fb_egress_list *net = calloc(1, sizeof *net);
    if (!net)
        return gw_send_error(r, 503, "unavailable", "out of memory");
    char msg[400];
    const char *bad = NULL;
    bool has_approvals, has_net;
    spec.prompt = json_string_value(json_object_get(r->json, "prompt"));
    spec.provider = json_string_value(json_object_get(r->json, "provider"));
    spec.model = json_string_value(json_object_get(r->json, "model"));
    spec.system = json_string_value(json_object_get(r->json, "system"));
    const char *backend = json_string_value(json_object_get(r->json, "backend"));
    if (backend) {
        spec.has_backend = true;
        if (strcmp(backend, "vm") == 0)
            spec.backend = FB_BACKEND_VM;
        else if (strcmp(backend, "jail") == 0)
            spec.backend = FB_BACKEND_JAIL;
        else
            bad = "\"backend\" must be \"vm\" or \"jail\"";
    }
    if (!bad)
        bad = toolset_field(r->json, "tools", &spec.tools, &spec.has_tools, msg, sizeof msg);
    if (!bad)
        bad = toolset_field(r->json, "approvals", &spec.approvals, &has_approvals, msg, sizeof msg);
    if (!bad)
        bad = limits_field(r->json, &spec.limits, msg, sizeof msg);
    if (!bad)
        bad = network_field(r->json, net, &has_net, msg, sizeof msg);
    if (bad) {
        free(net);
        return gw_send_error(r, 400, "bad_request", bad);
    }
    spec.network = has_net ? net : NULL;
    json_t *out = NULL;
    fb_core_err err = {0};
    int rc = fb_core_task_create(r->g->core, &r->caller, &spec, &out, &err);
    free(net);
    if (rc < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 201, out);
}

/* ---- reads and actions ------------------------------------------------------------------ */

/* Answers a service call's outcome: status with out, or the error. */
static enum MHD_Result answer(gw_req *r, int rc, int status, json_t *out, const fb_core_err *err)
{
    if (rc < 0) {
        json_decref(out);
        return gw_send_core_error(r, err);
    }
    return gw_send_json(r, status, out);
}

static enum MHD_Result task_list(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    int rc = fb_core_task_list(r->g->core, &r->caller, &out, &err);
    return answer(r, rc, 200, out, &err);
}

static enum MHD_Result task_get(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    int rc = fb_core_task_get(r->g->core, &r->caller, r->task, &out, &err);
    return answer(r, rc, 200, out, &err);
}

static enum MHD_Result task_approvals(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    int rc = fb_core_task_approvals(r->g->core, &r->caller, r->task, &out, &err);
    return answer(r, rc, 200, out, &err);
}

static enum MHD_Result task_decide(gw_req *r)
{
    const char *d = json_string_value(json_object_get(r->json, "decision"));
    bool approve = d && strcmp(d, "approve") == 0;
    if (!approve && !(d && strcmp(d, "deny") == 0))
        return gw_send_error(r, 400, "bad_request", "\"decision\" must be \"approve\" or \"deny\"");
    const char *reason = json_string_value(json_object_get(r->json, "reason"));
    json_t *out = NULL;
    fb_core_err err = {0};
    int rc = fb_core_task_decide(r->g->core, &r->caller, r->task, r->params.v[1], approve, reason, &out, &err);
    return answer(r, rc, 200, out, &err);
}

static enum MHD_Result task_cancel(gw_req *r)
{
    json_t *out = NULL;
    fb_core_err err = {0};
    int rc = fb_core_task_cancel(r->g->core, &r->caller, r->task, &out, &err);
    return answer(r, rc, 200, out, &err);
}

static enum MHD_Result task_message(gw_req *r)
{
    const char *content = json_string_value(json_object_get(r->json, "content"));
    json_t *out = NULL;
    fb_core_err err = {0};
    int rc = fb_core_task_message(r->g->core, &r->caller, r->task, content, &out, &err);
    return answer(r, rc, 200, out, &err);
}

/* ---- the event stream -------------------------------------------------------------------- */

typedef struct task_sse {
    fb_core *core;
    fb_task_ref *ref;
    uint64_t after;
    char *buf;
    size_t len, off;
    bool ended;
} task_sse;

static bool sse_fill(task_sse *st)
{
    json_t *ev = NULL;
    int got = fb_core_task_events_next(st->core, st->ref, st->after, &ev, 1000);
    free(st->buf);
    st->buf = NULL;
    st->len = st->off = 0;
    if (got < 0) {
        st->ended = true;
        return true;
    }
    if (got == 0) {
        st->buf = strdup(": keepalive\n\n");
        st->len = st->buf ? strlen(st->buf) : 0;
        return st->buf != NULL;
    }
    json_int_t seq = json_integer_value(json_object_get(ev, "seq"));
    char *data = json_dumps(ev, JSON_COMPACT);
    const char *type = json_string_value(json_object_get(ev, "type"));
    int n = data ? asprintf(&st->buf, "id: %lld\nevent: %s\ndata: %s\n\n", (long long)seq, type ? type : "event",
                            data)
                 : -1;
    free(data);
    json_decref(ev);
    if (n < 0) {
        st->buf = NULL;
        return false;
    }
    st->len = (size_t)n;
    st->after = (uint64_t)seq;
    return true;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    task_sse *st = cls;
    while (st->off == st->len) {
        if (st->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!sse_fill(st))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t k = st->len - st->off < max ? st->len - st->off : max;
    memcpy(buf, st->buf + st->off, k);
    st->off += k;
    return (ssize_t)k;
}

static void sse_free(void *cls)
{
    task_sse *st = cls;
    fb_core_task_put(st->core, st->ref);
    free(st->buf);
    free(st);
}

static enum MHD_Result task_events(gw_req *r)
{
    const char *from = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (!from || !from[0])
        from = gw_query(r, "after");
    uint64_t after = 0;
    if (from && fb_parse_u64(from, 0, INT64_MAX, &after) < 0)
        return gw_send_error(r, 400, "bad_request",
                             "the resume position (Last-Event-ID or \"after\") must be an event's sequence number");
    task_sse *st = calloc(1, sizeof *st);
    if (!st)
        return gw_send_error(r, 503, "unavailable", "out of memory");
    st->core = r->g->core;
    st->ref = r->task;
    st->after = after;
    r->task = NULL; /* the stream holds it now */
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, st, sse_free);
    if (!resp) {
        sse_free(st);
        return MHD_NO;
    }
    return gw_queue(r, 200, resp, "text/event-stream");
}

const gw_route gw_routes_tasks[] = {
    {.def = {"POST", "/v1/tasks"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_TASKS_CREATE, .resource = "tasks",
     .body = GW_BODY_JSON, .fields = create_fields, .body_required = true, .fn = task_create},
    {.def = {"GET", "/v1/tasks"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_TASKS_READ, .resource = "tasks",
     .fn = task_list},
    {.def = {"GET", "/v1/tasks/{id}"}, .resolve = GW_RES_TASK, .perm = FB_PERM_TASKS_READ, .fn = task_get},
    {.def = {"GET", "/v1/tasks/{id}/events"}, .resolve = GW_RES_TASK, .perm = FB_PERM_TASKS_READ,
     .fn = task_events},
    {.def = {"GET", "/v1/tasks/{id}/approvals"}, .resolve = GW_RES_TASK, .perm = FB_PERM_TASKS_READ,
     .fn = task_approvals},
    {.def = {"POST", "/v1/tasks/{id}/approvals/{aid}"}, .resolve = GW_RES_TASK, .perm = FB_PERM_TASKS_APPROVE,
     .body = GW_BODY_JSON, .fields = decide_fields, .body_required = true, .fn = task_decide},
    {.def = {"POST", "/v1/tasks/{id}/cancel"}, .resolve = GW_RES_TASK, .perm = FB_PERM_TASKS_CANCEL,
     .fn = task_cancel},
    {.def = {"POST", "/v1/tasks/{id}/messages"}, .resolve = GW_RES_TASK, .perm = FB_PERM_TASKS_CREATE,
     .body = GW_BODY_JSON, .fields = message_fields, .body_required = true, .fn = task_message},
    {.def = {NULL, NULL}},
};
