/*
 * test_mcp.c - unit tests for the MCP server's pure parts (src/mcp/mcp.h):
 * JSON-RPC parsing and classification, initialize and version
 * negotiation, the tool catalogue and argument checks (which refuse
 * before any service is called, so no core is needed), and the session
 * table (owner binding, per-owner cap, a full table).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "mcp/mcp.h"

static fb_caller caller;

static fb_mcp_ctx ctx_new(const char *version)
{
    memset(&caller, 0, sizeof caller);
    fb_mcp_ctx c = {.core = NULL, .caller = &caller};
    snprintf(c.version, sizeof c.version, "%s", version);
    return c;
}

static json_t *load(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    assert_non_null(j);
    return j;
}

/* The error code of a response (0 for a result). */
static int code_of(const json_t *resp)
{
    const json_t *e = json_object_get(resp, "error");
    return e ? (int)json_integer_value(json_object_get(e, "code")) : 0;
}

#define NONE 1

static json_t *answer(fb_mcp_ctx *c, const char *text)
{
    json_t *m = load(text);
    json_t *r = fb_mcp_answer(c, m);
    json_decref(m);
    return r;
}

static void expect_parse_error(const char *text, bool batch, int code)
{
    json_t *err = NULL;
    json_t *m = fb_mcp_parse(text, strlen(text), batch, &err);
    assert_null(m);
    assert_non_null(err);
    assert_int_equal(code_of(err), code);
    assert_true(json_is_null(json_object_get(err, "id")));
    assert_string_equal(json_string_value(json_object_get(err, "jsonrpc")), "2.0");
    json_decref(err);
}

static void test_parse(void **state)
{
    (void)state;
    expect_parse_error("{\"jsonrpc\": ", false, FB_MCP_PARSE_ERROR);
    expect_parse_error("", false, FB_MCP_PARSE_ERROR);
    expect_parse_error("{\"a\":1,\"a\":2}", false, FB_MCP_PARSE_ERROR);
    expect_parse_error("{\"a\":\"\\u0000\"}", false, FB_MCP_PARSE_ERROR);
    expect_parse_error("{} x", false, FB_MCP_PARSE_ERROR);
    expect_parse_error("42", false, FB_MCP_INVALID_REQUEST);
    expect_parse_error("[{}]", false, FB_MCP_INVALID_REQUEST);
    expect_parse_error("[]", true, FB_MCP_INVALID_REQUEST);
    char big[64 * 4 + 16] = "[";
    for (int i = 0; i < 65; i++)
        strcat(big, i ? ",{}" : "{}");
    strcat(big, "]");
    expect_parse_error(big, true, FB_MCP_INVALID_REQUEST);
    json_t *err = NULL;
    json_t *m = fb_mcp_parse("[{},{}]", 7, true, &err);
    assert_non_null(m);
    assert_null(err);
    json_decref(m);
}

static void test_initialize_negotiates(void **state)
{
    (void)state;
    fb_mcp_ctx c = ctx_new("");
    json_t *r = answer(&c, "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"initialize\","
                           "\"params\":{\"protocolVersion\":\"2025-06-18\"}}");
    const json_t *res = json_object_get(r, "result");
    assert_string_equal(json_string_value(json_object_get(res, "protocolVersion")), "2025-06-18");
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "serverInfo"), "name")), "forgebox");
    assert_true(json_is_false(json_object_get(json_object_get(json_object_get(res, "capabilities"), "tools"),
                                              "listChanged")));
    assert_string_equal(json_string_value(json_object_get(r, "id")), "a");
    assert_string_equal(c.version, "2025-06-18");
    json_decref(r);
    /* a second initialize in the session */
    r = answer(&c, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"x\"}}");
    assert_int_equal(code_of(r), FB_MCP_INVALID_REQUEST);
    json_decref(r);
    /* an unknown version gets the newest */
    c = ctx_new("");
    r = answer(&c, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"1.0\"}}");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "result"), "protocolVersion")),
                        "2025-11-25");
    json_decref(r);
    c = ctx_new("");
    r = answer(&c, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"initialize\",\"params\":{}}");
    assert_int_equal(code_of(r), FB_MCP_INVALID_PARAMS);
    assert_string_equal(c.version, "");
    json_decref(r);
    assert_true(fb_mcp_version_known("2024-11-05"));
    assert_false(fb_mcp_version_known("2026-07-28"));
    assert_true(fb_mcp_version_batches("2025-03-26"));
    assert_false(fb_mcp_version_batches("2025-06-18"));
}

static void test_classification(void **state)
{
    (void)state;
    fb_mcp_ctx c = ctx_new("");
    json_t *r = answer(&c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}");
    assert_int_equal(code_of(r), FB_MCP_INVALID_REQUEST); /* before initialize */
    json_decref(r);
    r = answer(&c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    assert_int_equal(code_of(r), 0); /* ping is always answered */
    json_decref(r);
    c = ctx_new("2025-11-25");
    static const struct {
        const char *msg;
        int code; /* NONE: no answer */
    } cases[] = {
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}", FB_MCP_METHOD_NOT_FOUND},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", NONE},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"anything/else\"}", NONE},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}", NONE},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":\"x\"}}", NONE},
        {"{\"jsonrpc\":\"2.0\",\"id\":1}", FB_MCP_INVALID_REQUEST},
        {"{\"id\":1,\"method\":\"ping\"}", FB_MCP_INVALID_REQUEST},
        {"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", FB_MCP_INVALID_REQUEST},
        {"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", FB_MCP_INVALID_REQUEST},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":[]}", FB_MCP_INVALID_REQUEST},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":[]}", FB_MCP_INVALID_PARAMS},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}", FB_MCP_INVALID_PARAMS},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"x\"}}",
         FB_MCP_INVALID_PARAMS},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"exec\",\"arguments\":5}}",
         FB_MCP_INVALID_PARAMS},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        r = answer(&c, cases[i].msg);
        if (cases[i].code == NONE) {
            if (r)
                fail_msg("case %zu (%s) was answered", i, cases[i].msg);
            continue;
        }
        if (!r)
            fail_msg("case %zu (%s) got no answer", i, cases[i].msg);
        assert_int_equal(code_of(r), cases[i].code);
        json_decref(r);
    }
    /* a batch: answers in order, notifications left out, initialize refused */
    r = answer(&c, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},{\"jsonrpc\":\"2.0\",\"method\":\"n\"},"
                   "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"x\"}},5]");
    assert_int_equal(json_array_size(r), 3);
    assert_int_equal(code_of(json_array_get(r, 0)), 0);
    assert_int_equal(code_of(json_array_get(r, 1)), FB_MCP_INVALID_REQUEST);
    assert_int_equal(code_of(json_array_get(r, 2)), FB_MCP_INVALID_REQUEST);
    json_decref(r);
    assert_null(answer(&c, "[{\"jsonrpc\":\"2.0\",\"method\":\"n\"}]"));
}

static void test_tools_list(void **state)
{
    (void)state;
    static const char *const names[] = {"create_sandbox", "run_code",     "exec",    "read_file",
                                        "write_file",     "list_files",   "kill_sandbox", "run_task"};
    json_t *l = fb_mcp_tools_list();
    json_t *tools = json_object_get(l, "tools");
    assert_int_equal(json_array_size(tools), 8);
    for (size_t i = 0; i < 8; i++) {
        json_t *t = json_array_get(tools, i);
        assert_string_equal(json_string_value(json_object_get(t, "name")), names[i]);
        /* every tool but read_file (text) declares what it returns */
        assert_int_equal(json_is_object(json_object_get(t, "outputSchema")), i != 3);
        json_t *s = json_object_get(t, "inputSchema");
        assert_string_equal(json_string_value(json_object_get(s, "type")), "object");
        assert_true(json_is_false(json_object_get(s, "additionalProperties")));
        size_t k;
        json_t *req;
        json_array_foreach(json_object_get(s, "required"), k, req)
            assert_non_null(json_object_get(json_object_get(s, "properties"), json_string_value(req)));
    }
    json_decref(l);
}

/* Arguments that break the schema are refused before any service call. */
static void expect_invalid(const char *tool, const char *args, const char *message)
{
    fb_mcp_ctx c = ctx_new("2025-11-25");
    json_t *a = load(args);
    json_t *r = fb_mcp_tool_call(&c, tool, a);
    json_decref(a);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "isError")));
    const json_t *text = json_object_get(json_array_get(json_object_get(r, "content"), 0), "text");
    assert_string_equal(json_string_value(text), message);
    assert_string_equal(caller.action, ""); /* nothing was asked of a service */
    json_decref(r);
}

static void test_tool_arguments(void **state)
{
    (void)state;
    expect_invalid("exec", "{\"sandbox_id\":\"s\"}", "invalid arguments: \"cmd\" is required");
    expect_invalid("exec", "{\"sandbox_id\":\"s\",\"cmd\":[]}",
                   "invalid arguments: \"cmd\" must be a non-empty array of strings");
    expect_invalid("exec", "{\"sandbox_id\":\"s\",\"cmd\":[\"a\",1]}",
                   "invalid arguments: \"cmd\" must be a non-empty array of strings");
    expect_invalid("exec", "{\"sandbox_id\":1,\"cmd\":[\"a\"]}", "invalid arguments: \"sandbox_id\" must be a string");
    expect_invalid("exec", "{\"sandbox_id\":\"s\",\"cmd\":[\"a\"],\"timeout_s\":3601}",
                   "invalid arguments: \"timeout_s\" must be an integer in the range the schema gives");
    expect_invalid("exec", "{\"sandbox_id\":\"s\",\"cmd\":[\"a\"],\"timeout_s\":1.5}",
                   "invalid arguments: \"timeout_s\" must be an integer in the range the schema gives");
    expect_invalid("run_code", "{\"code\":\"1\",\"language\":\"perl\"}",
                   "invalid arguments: \"language\" must be one of the schema's values");
    expect_invalid("create_sandbox", "{\"backend\":\"docker\"}",
                   "invalid arguments: \"backend\" must be one of the schema's values");
    expect_invalid("create_sandbox", "{\"memory_mib\":-1}",
                   "invalid arguments: \"memory_mib\" must be an integer in the range the schema gives");
    expect_invalid("kill_sandbox", "{}", "invalid arguments: \"sandbox_id\" is required");
    expect_invalid("read_file", "{\"sandbox_id\":\"s\",\"path\":\"/x\",\"mode\":1}",
                   "invalid arguments: read_file takes no \"mode\"");
    expect_invalid("run_task", "{\"prompt\":\"p\",\"provider\":\"f\"}", "invalid arguments: \"model\" is required");
    expect_invalid("run_task", "{\"prompt\":\"p\",\"provider\":\"f\",\"model\":\"m\",\"wait_s\":601}",
                   "invalid arguments: \"wait_s\" must be an integer in the range the schema gives");
    fb_mcp_ctx c = ctx_new("2025-11-25");
    assert_null(fb_mcp_tool_call(&c, "no_such_tool", NULL)); /* not offered: -32602 */
}

static void test_sessions(void **state)
{
    (void)state;
    fb_mcp_sessions *s = fb_mcp_sessions_new();
    assert_non_null(s);
    char id[FB_MCP_SESSION_ID_MAX], v[FB_MCP_VERSION_MAX];
    assert_int_equal(fb_mcp_session_create(s, "key_a", "user_a", "2025-06-18", id), 0);
    assert_int_equal(strlen(id), 37);
    for (const char *p = id; *p; p++)
        assert_true(*p >= 0x21 && *p <= 0x7e);
    assert_true(fb_mcp_session_get(s, id, "key_a", v));
    assert_string_equal(v, "2025-06-18");
    assert_false(fb_mcp_session_get(s, id, "key_b", v)); /* another key's: unknown */
    assert_false(fb_mcp_session_get(s, "mcps_x", "key_a", v));
    assert_false(fb_mcp_session_get(s, "", "key_a", v));
    char prefix[FB_MCP_SESSION_ID_MAX];
    snprintf(prefix, sizeof prefix, "%.20s", id);
    assert_false(fb_mcp_session_get(s, prefix, "key_a", v));
    assert_false(fb_mcp_session_end(s, id, "key_b"));
    assert_true(fb_mcp_session_end(s, id, "key_a"));
    assert_false(fb_mcp_session_end(s, id, "key_a"));
    assert_false(fb_mcp_session_get(s, id, "key_a", v));
    /* one user's sessions beyond the cap, across two keys: the least
     * recently used makes room */
    static char ids[FB_MCP_MAX_SESSIONS_PER_USER][FB_MCP_SESSION_ID_MAX];
    for (int i = 0; i < FB_MCP_MAX_SESSIONS_PER_USER; i++)
        assert_int_equal(fb_mcp_session_create(s, i % 2 ? "key_c" : "key_d", "user_c", "2025-11-25", ids[i]), 0);
    assert_true(fb_mcp_session_get(s, ids[0], "key_d", v)); /* used: now the newest */
    assert_int_equal(fb_mcp_session_create(s, "key_e", "user_c", "2025-11-25", id), 0);
    assert_true(fb_mcp_session_get(s, id, "key_e", v));
    assert_true(fb_mcp_session_get(s, ids[0], "key_d", v));
    assert_false(fb_mcp_session_get(s, ids[1], "key_c", v));
    for (int i = 2; i < FB_MCP_MAX_SESSIONS_PER_USER; i++)
        assert_true(fb_mcp_session_get(s, ids[i], i % 2 ? "key_c" : "key_d", v));
    /* another user is not touched by it */
    assert_int_equal(fb_mcp_session_create(s, "key_f", "user_f", "2025-11-25", id), 0);
    assert_true(fb_mcp_session_get(s, id, "key_f", v));
    /* a full table refuses newcomers, never another owner's session */
    fb_mcp_sessions_free(s);
    s = fb_mcp_sessions_new();
    char owner[32];
    for (int i = 0; i < FB_MCP_MAX_SESSIONS; i++) {
        snprintf(owner, sizeof owner, "key_%d", i);
        assert_int_equal(fb_mcp_session_create(s, owner, owner, "2025-11-25", id), 0);
    }
    assert_int_equal(fb_mcp_session_create(s, "key_new", "user_new", "2025-11-25", id), -1);
    fb_mcp_sessions_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),          cmocka_unit_test(test_initialize_negotiates),
        cmocka_unit_test(test_classification), cmocka_unit_test(test_tools_list),
        cmocka_unit_test(test_tool_arguments), cmocka_unit_test(test_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
