/*
 * test_llm_sse.c - unit tests for the SSE parser (src/llm/sse.c) and the
 * streamed-turn decoding on top of it (openai.c, anthropic.c, turn.c).
 *
 * The network splits a stream anywhere, so every stream here is fed whole,
 * then split at every byte boundary, then one byte at a time, and each
 * must give exactly the same events.
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

/* Events collected as "name|data\n" lines. */
struct sink {
    char buf[8192];
    size_t len;
};

static int collect(void *user, const char *event, const char *data, size_t len, fb_err *err)
{
    (void)err;
    struct sink *s = user;
    assert_int_equal(strlen(data), len);
    int n = snprintf(s->buf + s->len, sizeof s->buf - s->len, "%s|%s\n", event, data);
    assert_true(n > 0 && (size_t)n < sizeof s->buf - s->len);
    s->len += (size_t)n;
    return 0;
}

/* Feeds text in pieces split at cut (0: whole), or byte by byte (cut == SIZE_MAX). */
static int feed(const char *text, size_t cut, size_t max_line, struct sink *out, fb_err *err)
{
    struct llm_sse s;
    llm_sse_init(&s, max_line);
    memset(out, 0, sizeof *out);
    size_t n = strlen(text);
    int rc = 0;
    if (cut == SIZE_MAX) {
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = llm_sse_feed(&s, text + i, 1, collect, out, err);
    } else {
        rc = llm_sse_feed(&s, text, cut, collect, out, err);
        if (rc == 0)
            rc = llm_sse_feed(&s, text + cut, n - cut, collect, out, err);
    }
    llm_sse_free(&s);
    return rc;
}

/* The events of text must be want whatever the split. */
static void assert_events(const char *text, const char *want)
{
    struct sink got;
    fb_err err = {{0}};
    size_t n = strlen(text);
    for (size_t cut = 0; cut <= n; cut++) {
        assert_int_equal(feed(text, cut, 0, &got, &err), 0);
        if (strcmp(got.buf, want) != 0)
            fail_msg("split at %zu: got [%s] want [%s]", cut, got.buf, want);
    }
    assert_int_equal(feed(text, SIZE_MAX, 0, &got, &err), 0);
    assert_string_equal(got.buf, want);
}

static void test_lf_and_crlf_and_cr(void **state)
{
    (void)state;
    assert_events("data: one\n\ndata: two\n\n", "|one\n|two\n");
    assert_events("data: one\r\n\r\ndata: two\r\n\r\n", "|one\n|two\n");
    assert_events("data: one\r\rdata: two\r\r", "|one\n|two\n");
    /* Mixed: CR then LF in the next piece is one line end, not two. */
    assert_events("event: a\r\ndata: x\r\n\ndata: y\n\r\n", "a|x\n|y\n");
}

static void test_fields(void **state)
{
    (void)state;
    /* Comments, id and retry ignored; no space after the colon; a field
     * without a colon; an event without data is not dispatched. */
    assert_events(": keep-alive\n\nid: 7\nretry: 10\ndata:{\"a\":1}\n\n", "|{\"a\":1}\n");
    assert_events("event: ping\n\n", "");
    assert_events("data\n\n", "|\n");
    assert_events("data:  two spaces\n\n", "| two spaces\n");
    /* The event name is reset after each dispatch. */
    assert_events("event: message_start\ndata: 1\n\ndata: 2\n\n", "message_start|1\n|2\n");
}

static void test_multiline_data(void **state)
{
    (void)state;
    assert_events("data: a\ndata: b\ndata:\ndata: c\n\n", "|a\nb\n\nc\n");
    /* An event cut off before its blank line is never dispatched. */
    assert_events("data: done\n\ndata: half", "|done\n");
}

static void test_oversize_and_nul(void **state)
{
    (void)state;
    struct sink got;
    fb_err err = {{0}};
    assert_int_equal(feed("data: 0123456789abcdef\n\n", 0, 16, &got, &err), FB_LLM_EMALFORMED);
    assert_string_equal(err.msg, "event stream: a line is longer than 16 bytes");
    /* Lines within the cap whose data adds up to more than the cap. */
    assert_int_equal(feed("data: 0123456789\ndata: 0123456789\n\n", 0, 16, &got, &err), FB_LLM_EMALFORMED);
    assert_string_equal(err.msg, "event stream: an event's data is larger than 16 bytes");
    assert_int_equal(feed("data: 0123456789\n\n", SIZE_MAX, 16, &got, &err), 0);
    assert_string_equal(got.buf, "|0123456789\n");
    char nul[] = "data: a\0b\n\n";
    struct llm_sse s;
    llm_sse_init(&s, 0);
    assert_int_equal(llm_sse_feed(&s, nul, sizeof nul - 1, collect, &got, &err), FB_LLM_EMALFORMED);
    llm_sse_free(&s);
    char name[200] = "event: ";
    memset(name + 7, 'e', 100);
    strcat(name, "\ndata: x\n\n");
    assert_int_equal(feed(name, 0, 0, &got, &err), FB_LLM_EMALFORMED);
}

/* ---- decoding streamed turns, split everywhere -------------------------- */

static int wire_cb(void *user, const char *event, const char *data, size_t len, fb_err *err)
{
    struct llm_turn *t = user;
    const struct llm_wire *w = t->rq->user;
    return w->event(t, event, data, len, err);
}

/* Decodes a whole stream split at cut; returns the errc and fills r. */
static int decode_stream(const struct llm_wire *w, const char *text, size_t cut, fb_llm_response *r,
                         fb_err *err)
{
    fb_llm_request rq = {.model = "m", .stream = true, .user = (void *)w};
    struct llm_turn t;
    struct llm_sse s;
    llm_turn_init(&t, &rq, 1 << 20);
    llm_sse_init(&s, 0);
    size_t n = strlen(text);
    int rc = llm_sse_feed(&s, text, cut, wire_cb, &t, err);
    if (!rc)
        rc = llm_sse_feed(&s, text + cut, n - cut, wire_cb, &t, err);
    if (!rc && !t.done)
        rc = FB_LLM_ECUT;
    if (!rc)
        rc = llm_turn_result(&t, r, err);
    llm_sse_free(&s);
    llm_turn_free(&t);
    return rc;
}

static const char openai_stream[] =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"He\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"llo\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"function\":"
    "{\"name\":\"grep\",\"arguments\":\"\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":"
    "{\"name\":\"bash\",\"arguments\":\"{\\\"comm\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":"
    "{\"arguments\":\"{}\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
    "{\"arguments\":\"and\\\":\\\"ls\\\"}\"}}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34}}\n\n"
    "data: [DONE]\n\n";

static const char anthropic_stream[] =
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,"
    "\"output_tokens\":1}}}\n\n"
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
    "{\"type\":\"text\",\"text\":\"\"}}\n\n"
    "event: ping\ndata: {\"type\":\"ping\"}\n\n"
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
    "{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":"
    "{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"bash\",\"input\":{}}}\n\n"
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
    "{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"comm\"}}\n\n"
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":"
    "{\"type\":\"input_json_delta\",\"partial_json\":\"and\\\":\\\"ls\\\"}\"}}\n\n"
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
    "\"usage\":{\"output_tokens\":34}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

static void check_turn(const struct llm_wire *w, const char *stream, size_t first_calls)
{
    size_t n = strlen(stream);
    for (size_t cut = 0; cut <= n; cut++) {
        fb_llm_response r;
        fb_err err = {{0}};
        int rc = decode_stream(w, stream, cut, &r, &err);
        if (rc)
            fail_msg("split at %zu: %s", cut, err.msg);
        assert_string_equal(r.text, "Hello");
        assert_int_equal(r.stop, FB_LLM_STOP_TOOL_USE);
        assert_int_equal(r.usage.output_tokens, 34);
        assert_int_equal(r.ncalls, first_calls);
        /* The bash call, wherever it is, has its arguments joined. */
        const fb_llm_tool_call *bash = NULL;
        for (size_t i = 0; i < r.ncalls; i++)
            if (strcmp(r.calls[i].name, "bash") == 0)
                bash = &r.calls[i];
        assert_non_null(bash);
        assert_string_equal(bash->id, "a");
        assert_string_equal(json_string_value(json_object_get(bash->input, "command")), "ls");
        fb_llm_response_free(&r);
    }
}

static void test_openai_stream_split_everywhere(void **state)
{
    (void)state;
    check_turn(&llm_wire_openai, openai_stream, 2);
}

static void test_anthropic_stream_split_everywhere(void **state)
{
    (void)state;
    check_turn(&llm_wire_anthropic, anthropic_stream, 1);
}

static void test_stream_cut_at_every_point_is_an_error(void **state)
{
    (void)state;
    const struct llm_wire *w[] = {&llm_wire_openai, &llm_wire_anthropic};
    const char *s[] = {openai_stream, anthropic_stream};
    for (int k = 0; k < 2; k++) {
        /* Every prefix that stops before the end marker's blank line. */
        size_t n = strlen(s[k]);
        for (size_t len = 0; len + 1 < n; len++) {
            char *prefix = strndup(s[k], len);
            fb_llm_response r;
            fb_err err = {{0}};
            int rc = decode_stream(w[k], prefix, 0, &r, &err);
            if (rc == 0)
                fail_msg("kind %d: a stream cut at %zu decoded as complete", k, len);
            free(prefix);
        }
    }
}

/* Found by fuzz_llm_stream: a tool_use block started again at an index
 * whose call had ended leaked the first input; now it is malformed. */
static void test_anthropic_block_index_reused(void **state)
{
    (void)state;
    static const char again[] =
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"bash\",\"input\":{}}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"bash\",\"input\":{}}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    fb_llm_response r;
    fb_err err = {{0}};
    assert_int_equal(decode_stream(&llm_wire_anthropic, again, 0, &r, &err), FB_LLM_EMALFORMED);
    assert_string_equal(err.msg, "tool_use block 0 without id and name, or twice");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lf_and_crlf_and_cr),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_multiline_data),
        cmocka_unit_test(test_oversize_and_nul),
        cmocka_unit_test(test_openai_stream_split_everywhere),
        cmocka_unit_test(test_anthropic_stream_split_everywhere),
        cmocka_unit_test(test_stream_cut_at_every_point_is_an_error),
        cmocka_unit_test(test_anthropic_block_index_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
