/*
 * fuzz_mcp.c - libFuzzer target for the MCP server's message handling
 * (src/mcp/mcp.h): parsing a transport message (batches allowed or not,
 * by the first byte) and answering it in a session not yet initialized,
 * so that no tool reaches a service (initialize, ping and every error
 * path run for real).
 *
 * Checks: a refused message has an error reply with id null; every answer
 * is a JSON-RPC 2.0 response with exactly one of result and error, an
 * integer error code, and never more answers than messages.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mcp/mcp.h"

static void check_response(const json_t *r)
{
    if (!json_is_object(r) || strcmp(json_string_value(json_object_get(r, "jsonrpc")) ?: "", "2.0") != 0)
        abort();
    const json_t *res = json_object_get(r, "result"), *err = json_object_get(r, "error");
    if (!res == !err || (err && !json_is_integer(json_object_get(err, "code"))) ||
        (err && !json_is_string(json_object_get(err, "message"))) || !json_object_get(r, "id"))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool batch = data[0] & 1;
    json_t *bad = NULL;
    json_t *msg = fb_mcp_parse((const char *)data + 1, size - 1, batch, &bad);
    if (!msg) {
        if (!bad || !json_is_null(json_object_get(bad, "id")))
            abort();
        check_response(bad);
        json_decref(bad);
        return 0;
    }
    fb_caller caller;
    memset(&caller, 0, sizeof caller);
    fb_mcp_ctx ctx = {.core = NULL, .caller = &caller};
    json_t *r = fb_mcp_answer(&ctx, msg);
    if (json_is_array(r)) {
        if (!json_is_array(msg) || json_array_size(r) == 0 || json_array_size(r) > json_array_size(msg))
            abort();
        size_t i;
        json_t *one;
        json_array_foreach(r, i, one) check_response(one);
    } else if (r) {
        check_response(r);
    }
    json_decref(r);
    json_decref(msg);
    return 0;
}
