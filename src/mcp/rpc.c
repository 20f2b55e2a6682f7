/*
 * rpc.c - JSON-RPC 2.0 framing for MCP (mcp.h): parsing a transport
 * message and building error responses.
 *
 * Parsing is strict where being lenient would make two readers disagree:
 * duplicate keys are refused (which value would count?), so are NUL bytes
 * inside strings (jansson's default) and anything after the value.  The
 * classification of each message (request, notification, response,
 * invalid) is server.c's, because an invalid message still gets an answer
 * carrying its id when the id can be read.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mcp/mcp.h"

json_t *fb_mcp_error(const json_t *id, int code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg);
    if (!m)
        m = json_string("(message not valid UTF-8)");
    json_t *idv = id ? json_deep_copy(id) : json_null();
    return json_pack("{s:s, s:o, s:{s:i, s:o}}", "jsonrpc", "2.0", "id", idv ? idv : json_null(), "error", "code",
                     code, "message", m);
}

json_t *fb_mcp_parse(const char *text, size_t len, bool allow_batch, json_t **error_reply)
{
    *error_reply = NULL;
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!v) {
        *error_reply = fb_mcp_error(NULL, FB_MCP_PARSE_ERROR, "Parse error: %s (line %d, column %d)", je.text,
                                    je.line, je.column);
        return NULL;
    }
    if (json_is_object(v))
        return v;
    const char *why = NULL;
    if (!json_is_array(v))
        why = "Invalid Request: a message must be a JSON object";
    else if (!allow_batch)
        why = "Invalid Request: batches are not supported in this protocol version (one message per request)";
    else if (json_array_size(v) == 0)
        why = "Invalid Request: an empty batch";
    else if (json_array_size(v) > FB_MCP_MAX_BATCH)
        why = "Invalid Request: more than 64 messages in one batch";
    if (why) {
        json_decref(v);
        *error_reply = fb_mcp_error(NULL, FB_MCP_INVALID_REQUEST, "%s", why);
        return NULL;
    }
    return v;
}

bool fb_mcp_is_initialize(const json_t *msg)
{
    const char *m = json_string_value(json_object_get(msg, "method"));
    return json_is_object(msg) && m && strcmp(m, "initialize") == 0 && json_object_get(msg, "id");
}
