/*
 * server.c - the MCP methods (mcp.h): initialize, ping, tools/list and
 * tools/call, and the JSON-RPC classification of each message.
 *
 * The server offers tools and nothing else (no resources, prompts,
 * logging, sampling or server-initiated requests), so it never sends a
 * request of its own and every answer is the response to one client
 * request: this is what lets the HTTP transport answer each POST with one
 * JSON body and refuse GET (no server-initiated stream).
 *
 * Version negotiation follows the lifecycle specification: a client that
 * asks for a version served gets it; any other gets the newest served, and
 * decides itself whether to go on.  Notifications (initialized, cancelled,
 * anything unknown) are accepted and need no answer; responses are ignored
 * (the server asked nothing).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "mcp/mcp.h"

#define SERVER_NAME "forgebox"
#define SERVER_VERSION "0.1.0"

const char *const fb_mcp_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", NULL};

bool fb_mcp_version_known(const char *v)
{
    for (size_t i = 0; v && fb_mcp_versions[i]; i++)
        if (strcmp(v, fb_mcp_versions[i]) == 0)
            return true;
    return false;
}

bool fb_mcp_version_batches(const char *v)
{
    return v && strcmp(v, "2025-03-26") == 0;
}

static json_t *result_of(const json_t *id, json_t *result)
{
    json_t *idv = json_deep_copy(id);
    return json_pack("{s:s, s:o, s:o}", "jsonrpc", "2.0", "id", idv ? idv : json_null(), "result",
                     result ? result : json_object());
}

static json_t *initialize(fb_mcp_ctx *ctx, const json_t *id, const json_t *params)
{
    const char *want = json_string_value(json_object_get(params, "protocolVersion"));
    if (!want)
        return fb_mcp_error(id, FB_MCP_INVALID_PARAMS, "Invalid params: \"protocolVersion\" must be a string");
    if (ctx->version[0])
        return fb_mcp_error(id, FB_MCP_INVALID_REQUEST, "Invalid Request: the session is initialized already");
    const char *v = fb_mcp_version_known(want) ? want : fb_mcp_versions[0];
    snprintf(ctx->version, sizeof ctx->version, "%s", v);
    return result_of(
        id, json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", v, "capabilities", "tools",
                      "listChanged", 0, "serverInfo", "name", SERVER_NAME, "title", "ForgeBox", "version",
                      SERVER_VERSION, "instructions",
                      "ForgeBox runs code in disposable hardened sandboxes. run_code runs Python or bash in a "
                      "fresh sandbox (or an existing one with sandbox_id); create_sandbox keeps one for several "
                      "calls (exec, read_file, write_file, list_files), kill_sandbox ends it. Paths are under "
                      "/workspace or /tmp."));
}

static json_t *tools_call(fb_mcp_ctx *ctx, const json_t *id, const json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    const json_t *args = json_object_get(params, "arguments");
    if (!name)
        return fb_mcp_error(id, FB_MCP_INVALID_PARAMS, "Invalid params: \"name\" must be a string");
    if (args && !json_is_object(args) && !json_is_null(args))
        return fb_mcp_error(id, FB_MCP_INVALID_PARAMS, "Invalid params: \"arguments\" must be an object");
    json_t *res = fb_mcp_tool_call(ctx, name, json_is_object(args) ? args : NULL);
    if (!res)
        return fb_mcp_error(id, FB_MCP_INVALID_PARAMS, "Unknown tool: %.128s", name);
    return result_of(id, res);
}

static json_t *request(fb_mcp_ctx *ctx, const char *method, const json_t *id, const json_t *params)
{
    if (strcmp(method, "initialize") == 0)
        return initialize(ctx, id, params);
    if (strcmp(method, "ping") == 0)
        return result_of(id, json_object());
    if (!ctx->version[0])
        return fb_mcp_error(id, FB_MCP_INVALID_REQUEST, "Invalid Request: send initialize first");
    if (strcmp(method, "tools/list") == 0)
        return result_of(id, fb_mcp_tools_list());
    if (strcmp(method, "tools/call") == 0)
        return tools_call(ctx, id, params);
    return fb_mcp_error(id, FB_MCP_METHOD_NOT_FOUND, "Method not found: %.128s", method);
}

/* One message: its response, or NULL for a notification or a response. */
static json_t *answer_one(fb_mcp_ctx *ctx, const json_t *msg, bool in_batch)
{
    if (!json_is_object(msg))
        return fb_mcp_error(NULL, FB_MCP_INVALID_REQUEST, "Invalid Request: a message must be a JSON object");
    const json_t *id = json_object_get(msg, "id");
    /* MCP ids are strings or integers, never null. */
    bool id_ok = id && (json_is_string(id) || json_is_integer(id));
    const json_t *reply_id = id_ok ? id : NULL;
    const char *jv = json_string_value(json_object_get(msg, "jsonrpc"));
    if (!jv || strcmp(jv, "2.0") != 0)
        return fb_mcp_error(reply_id, FB_MCP_INVALID_REQUEST, "Invalid Request: \"jsonrpc\" must be \"2.0\"");
    const json_t *m = json_object_get(msg, "method");
    if (!m) {
        /* A response to a request the server never sent: nothing to do. */
        if (id_ok && (json_object_get(msg, "result") || json_object_get(msg, "error")))
            return NULL;
        return fb_mcp_error(reply_id, FB_MCP_INVALID_REQUEST, "Invalid Request: no \"method\"");
    }
    if (!json_is_string(m) || (id && !id_ok))
        return fb_mcp_error(reply_id, FB_MCP_INVALID_REQUEST,
                            "Invalid Request: \"method\" must be a string and \"id\" a string or an integer");
    const json_t *params = json_object_get(msg, "params");
    if (!id)
        return NULL; /* a notification: initialized, cancelled, or one this server does not use */
    if (params && !json_is_object(params))
        return fb_mcp_error(id, FB_MCP_INVALID_PARAMS, "Invalid params: \"params\" must be an object");
    if (in_batch && strcmp(json_string_value(m), "initialize") == 0)
        return fb_mcp_error(id, FB_MCP_INVALID_REQUEST, "Invalid Request: initialize must not be part of a batch");
    return request(ctx, json_string_value(m), id, params);
}

json_t *fb_mcp_answer(fb_mcp_ctx *ctx, const json_t *msg)
{
    if (!json_is_array(msg))
        return answer_one(ctx, msg, false);
    json_t *out = json_array();
    size_t i;
    const json_t *one;
    json_array_foreach(msg, i, one) {
        json_t *r = answer_one(ctx, one, true);
        if (r)
            json_array_append_new(out, r);
    }
    if (json_array_size(out) == 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}
