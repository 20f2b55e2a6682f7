/*
 * anthropic.c - the Messages wire format (kind anthropic).
 *
 * Request: {model, max_tokens, system?, messages, tools?, stream} where
 * every message's content is a list of blocks: text, tool_use {id, name,
 * input} in the assistant's turn, tool_result {tool_use_id, content,
 * is_error} in the user's.  The API wants user and assistant to alternate,
 * so consecutive tool results (and a user text after them) go into one
 * user message.  max_tokens is required by the API: 4096 when unset.
 *
 * Streamed: named events message_start (input usage), content_block_start
 * (a text block, or a tool_use block with id and name), content_block_delta
 * (text_delta, input_json_delta pieces of a tool's input), content_block_stop
 * (the call is complete), message_delta (stop_reason, output usage),
 * message_stop (the end marker); ping is ignored, error ends the call with
 * the provider's error type, and block or delta types we do not know
 * (thinking, signatures) are skipped as the API's versioning policy asks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/internal.h"

#define DEFAULT_MAX_TOKENS 4096

static fb_llm_stop stop_of(const char *r)
{
    if (strcmp(r, "end_turn") == 0)
        return FB_LLM_STOP_END_TURN;
    if (strcmp(r, "tool_use") == 0)
        return FB_LLM_STOP_TOOL_USE;
    if (strcmp(r, "max_tokens") == 0)
        return FB_LLM_STOP_MAX_TOKENS;
    return FB_LLM_STOP_OTHER;
}

/* ---- request ------------------------------------------------------------ */

static json_t *blocks_of(const fb_llm_message *m)
{
    json_t *b = json_array();
    if (!b)
        return NULL;
    bool ok = true;
    if (m->role == FB_LLM_TOOL_RESULT) {
        ok = json_array_append_new(b, json_pack("{s:s, s:s, s:s, s:b}", "type", "tool_result",
                                                "tool_use_id", m->call_id, "content", m->text,
                                                "is_error", m->is_error)) == 0;
    } else if (m->text && m->text[0]) {
        /* The API refuses empty text blocks. */
        ok = json_array_append_new(b, json_pack("{s:s, s:s}", "type", "text", "text", m->text)) == 0;
    }
    for (size_t i = 0; ok && i < m->ncalls; i++) {
        const fb_llm_tool_call *c = &m->calls[i];
        json_t *input = c->input ? json_incref(c->input) : json_object();
        ok = json_array_append_new(b, json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id",
                                                c->id, "name", c->name, "input", input)) == 0;
    }
    if (!ok) {
        json_decref(b);
        return NULL;
    }
    return b;
}

static int messages(json_t *msgs, const fb_llm_conv *conv)
{
    json_t *last = NULL; /* the content list of the last user message */
    for (size_t i = 0; i < conv->n; i++) {
        const fb_llm_message *m = &conv->msgs[i];
        json_t *blocks = blocks_of(m);
        if (!blocks)
            return -1;
        if (m->role != FB_LLM_ASSISTANT && last) {
            int rc = json_array_extend(last, blocks);
            json_decref(blocks);
            if (rc < 0)
                return -1;
            continue;
        }
        const char *role = m->role == FB_LLM_ASSISTANT ? "assistant" : "user";
        if (json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", role, "content", blocks)) < 0)
            return -1;
        last = m->role == FB_LLM_ASSISTANT ? NULL : blocks;
    }
    return 0;
}

static json_t *tool_shape(const fb_llm_tool *t)
{
    return json_pack("{s:s, s:s, s:O}", "name", t->name, "description", t->description ? t->description : "",
                     "input_schema", t->schema);
}

static json_t *encode(const fb_llm_request *rq, fb_err *err)
{
    json_t *msgs = json_array();
    unsigned max = rq->max_tokens ? rq->max_tokens : DEFAULT_MAX_TOKENS;
    json_t *body = json_pack("{s:s, s:I, s:o, s:b}", "model", rq->model, "max_tokens", (json_int_t)max,
                             "messages", msgs, "stream", rq->stream);
    if (!body || messages(msgs, rq->conv) < 0)
        goto oom;
    if (rq->conv->system && json_object_set_new(body, "system", json_string(rq->conv->system)) < 0)
        goto oom;
    if (llm_encode_tools(body, rq, tool_shape) < 0)
        goto oom;
    return body;
oom:
    return llm_encode_failed(body, err);
}

/* ---- response ----------------------------------------------------------- */

static int stop_reason(struct llm_turn *t, const json_t *obj, fb_err *err)
{
    const char *r = llm_jstr(obj, "stop_reason");
    return r ? llm_turn_set_stop(t, r, stop_of(r), err) : 0;
}

/* A tool_use block opened (stream) or whole (not): id, name, input. */
static int tool_use(struct llm_turn *t, long index, const json_t *b, fb_err *err)
{
    struct llm_call_acc *a = llm_turn_call(t, index, err);
    if (!a)
        return FB_LLM_EMALFORMED;
    const char *id = llm_jstr(b, "id"), *name = llm_jstr(b, "name");
    const json_t *input = json_object_get(b, "input");
    if (!id || !name || a->id || a->finished || a->start_input || a->bad_input)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "tool_use block %ld without id and name, or twice", index);
    if (!(a->id = strdup(id)) || !(a->name = strdup(name)))
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
    if (json_is_object(input))
        a->start_input = json_incref((json_t *)input);
    else if (input)
        a->bad_input = true;
    return 0;
}

static int decode(struct llm_turn *t, const json_t *body, fb_err *err)
{
    const json_t *content = json_object_get(body, "content");
    if (!json_is_array(content))
        return fb_fail_code(err, FB_LLM_EMALFORMED, "the response has no content list");
    for (size_t i = 0; i < json_array_size(content); i++) {
        const json_t *b = json_array_get(content, i);
        const char *type = llm_jstr(b, "type");
        int rc = 0;
        if (!type)
            return fb_fail_code(err, FB_LLM_EMALFORMED, "content[%zu] has no type", i);
        if (strcmp(type, "text") == 0) {
            const char *text = llm_jstr(b, "text");
            if (!text)
                return fb_fail_code(err, FB_LLM_EMALFORMED, "content[%zu] text block without text", i);
            rc = llm_turn_text(t, text, strlen(text), err);
        } else if (strcmp(type, "tool_use") == 0) {
            rc = tool_use(t, (long)i, b, err);
        }
        if (rc)
            return rc;
    }
    int rc = stop_reason(t, body, err);
    if (rc)
        return rc;
    if (!t->stop_raw)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "the response has no stop_reason");
    const json_t *u = json_object_get(body, "usage");
    t->input_tokens = llm_juint(u, "input_tokens");
    t->output_tokens = llm_juint(u, "output_tokens");
    t->done = true;
    return 0;
}

static void error_text(const json_t *body, char *out, size_t cap)
{
    const json_t *e = json_object_get(body, "error");
    const char *type = llm_jstr(e, "type"), *msg = llm_jstr(e, "message");
    if (type && msg)
        snprintf(out, cap, "%s: %s", type, msg);
    else
        snprintf(out, cap, "%s", msg ? msg : type ? type : "");
}

static int stream_error(const json_t *ev, fb_err *err)
{
    char msg[300];
    error_text(ev, msg, sizeof msg);
    const char *type = llm_jstr(json_object_get(ev, "error"), "type");
    int code = FB_LLM_ESERVER;
    if (type && strcmp(type, "rate_limit_error") == 0)
        code = FB_LLM_ERATE;
    else if (type && (strcmp(type, "authentication_error") == 0 || strcmp(type, "permission_error") == 0))
        code = FB_LLM_EAUTH;
    else if (type && (strcmp(type, "invalid_request_error") == 0 || strcmp(type, "not_found_error") == 0))
        code = FB_LLM_EBADREQ;
    return fb_fail_code(err, code, "error in the stream: %s", msg[0] ? msg : "(no message)");
}

static int block_delta(struct llm_turn *t, const json_t *ev, fb_err *err)
{
    const json_t *d = json_object_get(ev, "delta");
    const char *type = llm_jstr(d, "type");
    if (!type)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "content_block_delta without a delta type");
    if (strcmp(type, "text_delta") == 0) {
        const char *text = llm_jstr(d, "text");
        return text ? llm_turn_text(t, text, strlen(text), err)
                    : fb_fail_code(err, FB_LLM_EMALFORMED, "text_delta without text");
    }
    if (strcmp(type, "input_json_delta") == 0) {
        const json_t *ix = json_object_get(ev, "index");
        const char *part = llm_jstr(d, "partial_json");
        if (!json_is_integer(ix) || !part)
            return fb_fail_code(err, FB_LLM_EMALFORMED, "input_json_delta without index or partial_json");
        long index = (long)json_integer_value(ix);
        for (size_t i = 0; i < t->nacc; i++)
            if (t->acc[i].index == index)
                return llm_turn_call_args(t, &t->acc[i], part, strlen(part), err);
        return fb_fail_code(err, FB_LLM_EMALFORMED, "input_json_delta for block %ld, not a tool_use", index);
    }
    return 0;
}

static int dispatch(struct llm_turn *t, const char *type, const json_t *ev, fb_err *err)
{
    if (strcmp(type, "ping") == 0)
        return 0;
    if (strcmp(type, "error") == 0)
        return stream_error(ev, err);
    if (strcmp(type, "message_start") == 0) {
        const json_t *u = json_object_get(json_object_get(ev, "message"), "usage");
        t->input_tokens = llm_juint(u, "input_tokens");
        t->output_tokens = llm_juint(u, "output_tokens");
        return 0;
    }
    if (strcmp(type, "content_block_start") == 0) {
        const json_t *b = json_object_get(ev, "content_block");
        const json_t *ix = json_object_get(ev, "index");
        const char *bt = llm_jstr(b, "type");
        if (!bt || !json_is_integer(ix))
            return fb_fail_code(err, FB_LLM_EMALFORMED, "content_block_start without index or type");
        return strcmp(bt, "tool_use") == 0 ? tool_use(t, (long)json_integer_value(ix), b, err) : 0;
    }
    if (strcmp(type, "content_block_delta") == 0)
        return block_delta(t, ev, err);
    if (strcmp(type, "content_block_stop") == 0) {
        long index = (long)json_integer_value(json_object_get(ev, "index"));
        for (size_t i = 0; i < t->nacc; i++)
            if (t->acc[i].index == index)
                return llm_turn_call_finish(t, &t->acc[i], err);
        return 0;
    }
    if (strcmp(type, "message_delta") == 0) {
        const json_t *u = json_object_get(ev, "usage");
        if (json_object_get(u, "output_tokens"))
            t->output_tokens = llm_juint(u, "output_tokens");
        return stop_reason(t, json_object_get(ev, "delta"), err);
    }
    if (strcmp(type, "message_stop") == 0)
        t->done = true;
    return 0;
}

static int event(struct llm_turn *t, const char *name, const char *data, size_t len, fb_err *err)
{
    if (t->done)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "an event after message_stop");
    json_t *ev = json_loadb(data, len, 0, NULL);
    const char *type = llm_jstr(ev, "type");
    if (!type && name[0] && json_is_object(ev))
        type = name;
    int rc = type ? dispatch(t, type, ev, err)
                  : fb_fail_code(err, FB_LLM_EMALFORMED, "a stream event is not a JSON object with a type");
    json_decref(ev);
    return rc;
}

const struct llm_wire llm_wire_anthropic = {
    .path = "/v1/messages",
    .auth_fmt = "x-api-key: %s",
    .extra_header = "anthropic-version: 2023-06-01",
    .encode = encode,
    .decode = decode,
    .event = event,
    .error_text = error_text,
};
