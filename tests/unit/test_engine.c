/*
 * test_engine.c - unit tests for the task engine's fixed parts
 * (src/engine): state names, the tool offers, the loop's argument checks,
 * and the input checks that refuse a call before anything reaches a
 * sandbox.  The loop and the tools themselves run against real sandboxes
 * and a scripted provider in tests/integration/test_engine.py.
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

#include "engine/engine.h"

static void test_state_names(void **state)
{
    (void)state;
    static const char *const names[] = {"queued", "running", "waiting_approval", "succeeded",
                                        "failed", "cancelled", "budget_exceeded"};
    for (int i = 0; i < 7; i++) {
        assert_string_equal(fb_task_state_name((fb_task_state)i), names[i]);
        fb_task_state s = FB_TASK_QUEUED;
        assert_int_equal(fb_task_state_from_name(names[i], &s), 0);
        assert_int_equal(s, i);
        assert_int_equal(fb_task_state_final((fb_task_state)i), i >= FB_TASK_SUCCEEDED);
    }
    fb_task_state s = FB_TASK_RUNNING;
    assert_null(fb_task_state_name((fb_task_state)7));
    assert_int_equal(fb_task_state_from_name("Running", &s), -1);
    assert_int_equal(fb_task_state_from_name(NULL, &s), -1);
    assert_int_equal(s, FB_TASK_RUNNING);
}

static void test_tool_specs(void **state)
{
    (void)state;
    static const char *const required[FB_TOOL_COUNT] = {
        "[\"command\"]", "[\"path\"]", "[\"path\", \"content\"]", "[\"path\", \"old_string\", \"new_string\"]",
        "[\"pattern\"]", "[\"pattern\"]", "[\"args\"]", "[\"url\"]",
    };
    for (int t = 0; t < FB_TOOL_COUNT; t++) {
        const fb_llm_tool *spec = fb_engine_tool_spec((fb_tool)t);
        assert_non_null(spec);
        assert_string_equal(spec->name, fb_tool_name((fb_tool)t));
        assert_true(strlen(spec->description) > 20);
        assert_string_equal(json_string_value(json_object_get(spec->schema, "type")), "object");
        json_t *want = json_loads(required[t], 0, NULL);
        assert_true(json_equal(json_object_get(spec->schema, "required"), want));
        json_decref(want);
    }
    assert_null(fb_engine_tool_spec(FB_TOOL_COUNT));
    assert_true(strstr(fb_engine_default_system(), "/workspace") != NULL);
}

static void test_loop_arguments(void **state)
{
    (void)state;
    fb_engine_outcome out;
    atomic_bool cancel = false;
    fb_engine_usage usage = {0};
    fb_llm_conv conv;
    fb_llm_conv_init(&conv);
    fb_engine_run run = {.model = "m", .usage = &usage, .cancel = &cancel};
    assert_int_equal(fb_engine_loop(&run, &conv, &out), -1);
    assert_string_equal(out.error, "fb_engine_loop: no provider");
    assert_int_equal(out.state, FB_TASK_FAILED);
    assert_null(out.result);
    run.provider = (fb_llm_provider *)&run; /* never called: the checks come first */
    assert_int_equal(fb_engine_loop(&run, &conv, &out), -1);
    assert_string_equal(out.error, "fb_engine_loop: the conversation must end with a user message");
    run.cancel = NULL;
    assert_int_equal(fb_llm_conv_add_user(&conv, "hi"), 0);
    assert_int_equal(fb_engine_loop(&run, &conv, &out), -1);
    assert_string_equal(out.error, "fb_engine_loop: no cancel flag");
    assert_int_equal(fb_engine_loop(&run, &conv, NULL), -1);
    fb_llm_conv_free(&conv);
}

/* Refusals that must happen before the sandbox is touched: the sandbox
 * pointer is a dummy that would crash if it were used. */
static void expect_refusal(bool network, fb_tool t, const char *input, const char *message)
{
    fb_tool_ctx ctx = {.sandbox = (fb_sandbox *)&ctx, .network = network};
    json_t *in = json_loads(input, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(in);
    char *output = NULL;
    bool is_error = false;
    assert_int_equal(fb_engine_tool_run(&ctx, t, in, &output, &is_error), 0);
    assert_true(is_error);
    assert_string_equal(output, message);
    free(output);
    json_decref(in);
}

static void test_input_checks(void **state)
{
    (void)state;
    expect_refusal(false, FB_TOOL_BASH, "{}", "bash: missing required field \"command\"");
    expect_refusal(false, FB_TOOL_BASH, "{\"command\": [\"ls\"]}", "bash: field \"command\" must be a string");
    expect_refusal(false, FB_TOOL_BASH, "{\"command\": \"a\\u0000b\"}",
                   "bash: field \"command\" must not contain NUL characters");
    expect_refusal(false, FB_TOOL_BASH, "{\"command\": \"ls\", \"timeout_s\": 0}",
                   "bash: field \"timeout_s\" must be an integer from 1 to 3600");
    expect_refusal(false, FB_TOOL_BASH, "{\"command\": \"ls\", \"timeout_s\": 1.5}",
                   "bash: field \"timeout_s\" must be an integer from 1 to 3600");
    expect_refusal(false, FB_TOOL_BASH, "[\"ls\"]", "bash: the arguments must be a JSON object");
    expect_refusal(false, FB_TOOL_FILE_READ, "{\"path\": \"\"}", "file_read: field \"path\" must not be empty");
    expect_refusal(false, FB_TOOL_FILE_READ, "{\"path\": \"a\", \"limit\": \"5\"}",
                   "file_read: field \"limit\" must be an integer from 1 to 9223372036854775807");
    expect_refusal(false, FB_TOOL_FILE_WRITE, "{\"path\": \"a\"}", "file_write: missing required field \"content\"");
    expect_refusal(false, FB_TOOL_FILE_EDIT, "{\"path\": \"a\", \"old_string\": \"\", \"new_string\": \"b\"}",
                   "file_edit: field \"old_string\" must not be empty");
    expect_refusal(false, FB_TOOL_GLOB, "{\"pattern\": 7}", "glob: field \"pattern\" must be a string");
    expect_refusal(false, FB_TOOL_GREP, "{\"pattern\": \"x\", \"glob\": false}", "grep: field \"glob\" must be a string");
    expect_refusal(false, FB_TOOL_GIT, "{\"args\": []}", "git: field \"args\" must be a list of 1 to 256 strings");
    expect_refusal(false, FB_TOOL_GIT, "{\"args\": [\"log\", 3]}", "git: args[1] must be a string without NUL characters");
    expect_refusal(false, FB_TOOL_WEB_FETCH, "{\"url\": \"http://example.com/\"}",
                   "web_fetch is not available: this task has no network grant");
    expect_refusal(true, FB_TOOL_WEB_FETCH, "{\"url\": \"ftp://example.com/\"}",
                   "web_fetch: field \"url\" must be an http:// or https:// URL with a host");
    expect_refusal(true, FB_TOOL_WEB_FETCH, "{\"url\": \"http://a b/\"}",
                   "web_fetch: field \"url\" must be an http:// or https:// URL with a host");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_tool_specs),
        cmocka_unit_test(test_loop_arguments),
        cmocka_unit_test(test_input_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
