/*
 * test_llm_conv.c - unit tests for the provider-neutral conversation
 * (src/llm/conv.c): building it, its neutral JSON form both ways, and how
 * each wire format encodes the same conversation (exact request bodies).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/internal.h"

static const char neutral[] =
    "{\"system\": \"be brief\", \"messages\": ["
    "{\"role\": \"user\", \"content\": \"list files\"},"
    "{\"role\": \"assistant\", \"content\": \"Looking.\", \"tool_calls\": ["
    "{\"id\": \"c1\", \"name\": \"bash\", \"input\": {\"command\": \"ls\"}, \"raw\": \"{\\\"command\\\": \\\"ls\\\"}\"},"
    "{\"id\": \"c2\", \"name\": \"glob\", \"input\": {\"pattern\": \"*\"}}]},"
    "{\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"a\\n\", \"is_error\": false},"
    "{\"role\": \"tool\", \"tool_call_id\": \"c2\", \"content\": \"denied\", \"is_error\": true},"
    "{\"role\": \"user\", \"content\": \"and now?\"}]}";

static void load(fb_llm_conv *conv, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    fb_err err = {{0}};
    fb_llm_conv_init(conv);
    if (fb_llm_conv_from_json(conv, j, &err) < 0)
        fail_msg("%s", err.msg);
    json_decref(j);
}

static void assert_json(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);
    assert_non_null(want);
    assert_non_null(got);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS);
        fail_msg("got %s", g);
    }
    json_decref(want);
    json_decref(got);
}

static void test_roundtrip(void **state)
{
    (void)state;
    fb_llm_conv conv;
    load(&conv, neutral);
    assert_int_equal(conv.n, 5);
    assert_int_equal(conv.msgs[1].ncalls, 2);
    assert_string_equal(conv.msgs[1].calls[0].raw, "{\"command\": \"ls\"}");
    assert_null(conv.msgs[1].calls[1].raw);
    assert_true(conv.msgs[3].is_error);
    assert_json(fb_llm_conv_to_json(&conv), neutral);
    fb_llm_conv_free(&conv);
}

static void test_from_json_errors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *msg;
    } cases[] = {
        {"[]", "a conversation is an object with a messages list"},
        {"{\"messages\": [{\"role\": \"root\", \"content\": \"x\"}]}", "messages[0].role: must be user, assistant or tool"},
        {"{\"messages\": [{\"role\": \"user\"}]}", "messages[0]: a user message needs content"},
        {"{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "messages[0]: a tool message needs tool_call_id and content"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages[0].content: must be a string"},
        {"{\"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"a\"}]}]}",
         "messages[0].tool_calls[0]: needs id and name (strings) and input (an object)"},
        {"{\"system\": 1, \"messages\": []}", "system: must be a string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = json_loads(cases[i].in, 0, NULL);
        assert_non_null(j);
        fb_llm_conv conv;
        fb_llm_conv_init(&conv);
        fb_err err = {{0}};
        assert_int_equal(fb_llm_conv_from_json(&conv, j, &err), -1);
        assert_string_equal(err.msg, cases[i].msg);
        fb_llm_conv_free(&conv);
        json_decref(j);
    }
}

static json_t *encode(const struct llm_wire *w, const fb_llm_conv *conv, bool stream)
{
    json_t *schema = json_loads("{\"type\": \"object\"}", 0, NULL);
    fb_llm_tool tools[] = {{"bash", "Run", schema}};
    fb_llm_request rq = {.model = "m", .conv = conv, .tools = tools, .ntools = 1, .stream = stream};
    fb_err err = {{0}};
    json_t *body = w->encode(&rq, &err);
    json_decref(schema);
    return body;
}

static void test_openai_encoding(void **state)
{
    (void)state;
    fb_llm_conv conv;
    load(&conv, neutral);
    assert_json(encode(&llm_wire_openai, &conv, true),
                "{\"model\": \"m\", \"stream\": true, \"stream_options\": {\"include_usage\": true},"
                "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"bash\", \"description\": \"Run\","
                "  \"parameters\": {\"type\": \"object\"}}}],"
                "\"messages\": ["
                "{\"role\": \"system\", \"content\": \"be brief\"},"
                "{\"role\": \"user\", \"content\": \"list files\"},"
                "{\"role\": \"assistant\", \"content\": \"Looking.\", \"tool_calls\": ["
                "  {\"id\": \"c1\", \"type\": \"function\", \"function\": {\"name\": \"bash\", \"arguments\": \"{\\\"command\\\": \\\"ls\\\"}\"}},"
                "  {\"id\": \"c2\", \"type\": \"function\", \"function\": {\"name\": \"glob\", \"arguments\": \"{\\\"pattern\\\":\\\"*\\\"}\"}}]},"
                "{\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"a\\n\"},"
                "{\"role\": \"tool\", \"tool_call_id\": \"c2\", \"content\": \"denied\"},"
                "{\"role\": \"user\", \"content\": \"and now?\"}]}");
    fb_llm_conv_free(&conv);
}

static void test_anthropic_encoding(void **state)
{
    (void)state;
    fb_llm_conv conv;
    load(&conv, neutral);
    /* Tool results and the user text after them are one user message. */
    assert_json(encode(&llm_wire_anthropic, &conv, false),
                "{\"model\": \"m\", \"stream\": false, \"max_tokens\": 4096, \"system\": \"be brief\","
                "\"tools\": [{\"name\": \"bash\", \"description\": \"Run\", \"input_schema\": {\"type\": \"object\"}}],"
                "\"messages\": ["
                "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"list files\"}]},"
                "{\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Looking.\"},"
                "  {\"type\": \"tool_use\", \"id\": \"c1\", \"name\": \"bash\", \"input\": {\"command\": \"ls\"}},"
                "  {\"type\": \"tool_use\", \"id\": \"c2\", \"name\": \"glob\", \"input\": {\"pattern\": \"*\"}}]},"
                "{\"role\": \"user\", \"content\": ["
                "  {\"type\": \"tool_result\", \"tool_use_id\": \"c1\", \"content\": \"a\\n\", \"is_error\": false},"
                "  {\"type\": \"tool_result\", \"tool_use_id\": \"c2\", \"content\": \"denied\", \"is_error\": true},"
                "  {\"type\": \"text\", \"text\": \"and now?\"}]}]}");
    fb_llm_conv_free(&conv);
}

static void test_add_assistant_copies_the_turn(void **state)
{
    (void)state;
    fb_llm_tool_call call = {.id = "x1", .name = "bash", .input = json_pack("{s:s}", "command", "pwd"),
                             .raw = "{\"command\":\"pwd\"}"};
    fb_llm_response r = {.text = "ok", .calls = &call, .ncalls = 1};
    fb_llm_conv conv;
    fb_llm_conv_init(&conv);
    assert_int_equal(fb_llm_conv_set_system(&conv, "s"), 0);
    assert_int_equal(fb_llm_conv_add_user(&conv, "u"), 0);
    assert_int_equal(fb_llm_conv_add_assistant(&conv, &r), 0);
    assert_int_equal(fb_llm_conv_add_tool_result(&conv, "x1", "/workspace", false), 0);
    json_decref(call.input); /* the conversation holds its own copy */
    assert_json(fb_llm_conv_to_json(&conv),
                "{\"system\": \"s\", \"messages\": [{\"role\": \"user\", \"content\": \"u\"},"
                "{\"role\": \"assistant\", \"content\": \"ok\", \"tool_calls\": [{\"id\": \"x1\", \"name\": \"bash\","
                "  \"input\": {\"command\": \"pwd\"}, \"raw\": \"{\\\"command\\\":\\\"pwd\\\"}\"}]},"
                "{\"role\": \"tool\", \"tool_call_id\": \"x1\", \"content\": \"/workspace\", \"is_error\": false}]}");
    fb_llm_conv_free(&conv);
    assert_int_equal(conv.n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_from_json_errors),
        cmocka_unit_test(test_openai_encoding),
        cmocka_unit_test(test_anthropic_encoding),
        cmocka_unit_test(test_add_assistant_copies_the_turn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
