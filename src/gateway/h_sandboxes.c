/*
 * h_sandboxes.c - POST and GET /v1/sandboxes, GET and DELETE
 * /v1/sandboxes/{id} (gw.h).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"

static const gw_field create_fields[] = {
    {"backend", GW_T_STRING, false, "\"backend\" must be \"vm\" or \"jail\""},
    {"memory_mib", GW_T_INT, false, NULL},
    {"vcpus", GW_T_INT, false, NULL},
    {"disk_mib", GW_T_INT, false, NULL},
    {"ttl_s", GW_T_INT, false, NULL},
    {"network", GW_T_OBJECT, false, "\"network\" must be an object {\"allow\": [host, ...]}"},
    {NULL, 0, false, NULL},
};

static json_t *sandbox_json(const fb_sandbox_info *s)
{
    json_t *net = json_null();
    if (s->has_network) {
        json_t *allow = json_array();
        for (size_t i = 0; i < s->network.count; i++) {
            char text[FB_EGRESS_HOST_MAX + 16];
            fb_egress_entry_format(&s->network.entries[i], text, sizeof text);
            json_array_append_new(allow, json_string(text));
        }
        net = json_pack("{s:o}", "allow", allow);
    }
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:o}", "id", s->id, "team_id", s->team_id,
                          "backend", s->backend, "state", "running", "memory_mib", (json_int_t)s->memory_mib,
                          "vcpus", (json_int_t)s->vcpus, "disk_mib", (json_int_t)s->disk_mib, "created_at",
                          s->created_at, "expires_at", s->expires_at, "network", net);
    if (j && s->task_id[0])
        json_object_set_new(j, "task_id", json_string(s->task_id));
    /* The isolation actually in force ("kvm", "tcg", "userns", ...), as
     * the backend reports it. */
    if (j && s->isolation[0])
        json_object_set_new(j, "isolation", json_string(s->isolation));
    /* nodes.mode remote: the node that runs it. */
    if (j && s->node[0])
        json_object_set_new(j, "node", json_string(s->node));
    return j;
}

/* "network": {"allow": [entry, ...]}, exactly: each entry in the egress
 * grammar (policy.h), a refusal naming it. */
static int network_field(json_t *net, fb_egress_list *out, char *why, size_t cap)
{
    memset(out, 0, sizeof *out);
    json_t *allow = json_object_get(net, "allow");
    if (json_object_size(net) != 1 || !json_is_array(allow)) {
        snprintf(why, cap, "\"network\" must be an object with exactly one key, \"allow\": an array of host names");
        return -1;
    }
    if (json_array_size(allow) > FB_EGRESS_MAX_ENTRIES) {
        snprintf(why, cap, "\"network.allow\" has more than %d entries", FB_EGRESS_MAX_ENTRIES);
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(allow, i, v) {
        fb_err e = {{0}};
        if (!json_is_string(v)) {
            snprintf(why, cap, "\"network.allow\"[%zu] must be a string", i);
            return -1;
        }
        if (fb_egress_list_add(out, json_string_value(v), &e) != FB_EGRESS_OK) {
            snprintf(why, cap, "\"network.allow\"[%zu]: %.400s", i, e.msg);
            return -1;
        }
    }
    return 0;
}

/* An integer field as the service's (has, value); a negative number is
 * passed as 0, which every range refuses with the same message. */
static void int_field(json_t *j, const char *name, bool *has, uint64_t *v)
{
    json_t *x = json_object_get(j, name);
    *has = x != NULL;
    *v = x && json_integer_value(x) > 0 ? (uint64_t)json_integer_value(x) : 0;
}

static enum MHD_Result sandbox_create(gw_req *r)
{
    fb_sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    json_t *b = json_object_get(r->json, "backend");
    if (b) {
        spec.has_backend = true;
        if (strcmp(json_string_value(b), "vm") == 0)
            spec.backend = FB_BACKEND_VM;
        else if (strcmp(json_string_value(b), "jail") == 0)
            spec.backend = FB_BACKEND_JAIL;
        else
            return gw_send_error(r, 400, "bad_request", "\"backend\" must be \"vm\" or \"jail\"");
    }
    int_field(r->json, "memory_mib", &spec.has_memory, &spec.memory_mib);
    int_field(r->json, "vcpus", &spec.has_vcpus, &spec.vcpus);
    int_field(r->json, "disk_mib", &spec.has_disk, &spec.disk_mib);
    int_field(r->json, "ttl_s", &spec.has_ttl, &spec.ttl_s);
    json_t *net = json_object_get(r->json, "network");
    fb_egress_list grant;
    if (net) {
        char why[512];
        if (network_field(net, &grant, why, sizeof why) < 0)
            return gw_send_error(r, 400, "bad_request", why);
        spec.network = &grant;
    }
    fb_sandbox_info info;
    fb_core_err err = {0};
    if (fb_core_sandbox_create(r->g->core, &r->caller, &spec, &info, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_json(r, 201, sandbox_json(&info));
}

static enum MHD_Result sandbox_list(gw_req *r)
{
    fb_sandbox_info *all = NULL;
    size_t n = 0;
    fb_core_err err = {0};
    if (fb_core_sandbox_list(r->g->core, &r->caller, &all, &n, &err) < 0)
        return gw_send_core_error(r, &err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, sandbox_json(&all[i]));
    free(all);
    return gw_send_json(r, 200, json_pack("{s:o}", "sandboxes", arr));
}

static enum MHD_Result sandbox_get(gw_req *r)
{
    fb_sandbox_info info;
    fb_core_sandbox_info(r->ref, &info);
    return gw_send_json(r, 200, sandbox_json(&info));
}

static enum MHD_Result sandbox_delete(gw_req *r)
{
    fb_sb_ref *ref = r->ref;
    r->ref = NULL; /* the service consumes it */
    fb_core_err err = {0};
    if (fb_core_sandbox_delete(r->g->core, &r->caller, ref, &err) < 0)
        return gw_send_core_error(r, &err);
    return gw_send_raw(r, 204, "application/json", NULL, 0, MHD_RESPMEM_PERSISTENT);
}

const gw_route gw_routes_sandboxes[] = {
    {.def = {"POST", "/v1/sandboxes"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_SANDBOXES_CREATE,
     .resource = "sandboxes", .body = GW_BODY_JSON, .fields = create_fields, .fn = sandbox_create,
     .audit_overlap = true},
    {.def = {"GET", "/v1/sandboxes"}, .resolve = GW_RES_TEAM, .perm = FB_PERM_SANDBOXES_READ,
     .resource = "sandboxes", .fn = sandbox_list},
    {.def = {"GET", "/v1/sandboxes/{id}"}, .resolve = GW_RES_SANDBOX, .perm = FB_PERM_SANDBOXES_READ,
     .fn = sandbox_get},
    {.def = {"DELETE", "/v1/sandboxes/{id}"}, .resolve = GW_RES_SANDBOX, .perm = FB_PERM_SANDBOXES_CREATE,
     .fn = sandbox_delete},
    {.def = {NULL, NULL}},
};
