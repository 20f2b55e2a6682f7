/*
 * openai.c - the Chat Completions wire format (kind openai), the one
 * OpenAI, Ollama, vLLM, llama.cpp's server and LM Studio all speak.
 *
 * Request: {model, messages, tools?, max_tokens?, stream, stream_options}
 * with the system prompt as the first message, an assistant turn as
 * {role: assistant, content, tool_calls: [{id, type: function, function:
 * {name, arguments}}]} where arguments is the text the model produced,
 * sent back verbatim, and one {role: tool, tool_call_id, content} per
 * result.  Chat Completions has no error flag on a tool message, so a
 * failed call's content is what tells the model (the engine words it).
 *
 * Streamed: "data: {chunk}" events, tool calls in choices[0].delta.
 * tool_calls keyed by index (id and name in the first piece, arguments in
 * any number of pieces), usage in a last chunk with no choices (asked for
 * with stream_options.include_usage), and "data: [DONE]" as the end marker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/internal.h"

static fb_llm_stop stop_of(const char *r)
{
    if (strcmp(r, "stop") == 0)
        return FB_LLM_STOP_END_TURN;
    if (strcmp(r, "tool_calls") == 0 || strcmp(r, "function_call") == 0)
        return FB_LLM_STOP_TOOL_USE;
    if (strcmp(r, "length") == 0)
        return FB_LLM_STOP_MAX_TOKENS;
    return FB_LLM_STOP_OTHER;
}

/* ---- request ------------------------------------------------------------ */

static json_t *assistant_json(const fb_llm_message *m)
{
    json_t *o = json_pack("{s:s, s:s?}", "role", "assistant", "content", m->text);
    if (!o || m->ncalls == 0)
        return o;
    json_t *calls = json_array();
    if (!calls || json_object_set_new(o, "tool_calls", calls) < 0) {
        json_decref(o);
        return NULL;
    }
    for (size_t i = 0; i < m->ncalls; i++) {
        const fb_llm_tool_call *c = &m->calls[i];
        char *args = c->raw || !c->input ? NULL : json_dumps(c->input, JSON_COMPACT);
        json_t *one = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", c->id, "type", "function",
                                "function", "name", c->name, "arguments",
                                c->raw ? c->raw : args ? args : "{}");
        free(args);
        if (json_array_append_new(calls, one) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *message_json(const fb_llm_message *m)
{
    switch (m->role) {
    case FB_LLM_USER:
        return json_pack("{s:s, s:s}", "role", "user", "content", m->text);
    case FB_LLM_TOOL_RESULT:
        return json_pack("{s:s, s:s, s:s}", "role", "tool", "tool_call_id", m->call_id, "content",
                         m->text);
    case FB_LLM_ASSISTANT:
        return assistant_json(m);
    }
    return NULL;
}

static json_t *tool_shape(const fb_llm_tool *t)
{
    return json_pack("{s:s, s:{s:s, s:s, s:O}}", "type", "function", "function", "name", t->name,
                     "description", t->description ? t->description : "", "parameters", t->schema);
}

static json_t *encode(const fb_llm_request *rq, fb_err *err)
{
    json_t *msgs = json_array();
    json_t *body = json_pack("{s:s, s:o, s:b}", "model", rq->model, "messages", msgs, "stream",
                             rq->stream);
    if (!body)
        goto oom;
    if (rq->conv->system &&
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content",
                                              rq->conv->system)) < 0)
        goto oom;
    for (size_t i = 0; i < rq->conv->n; i++)
        if (json_array_append_new(msgs, message_json(&rq->conv->msgs[i])) < 0)
            goto oom;
    if (llm_encode_tools(body, rq, tool_shape) < 0)
        goto oom;
    if (rq->max_tokens && json_object_set_new(body, "max_tokens", json_integer(rq->max_tokens)) < 0)
        goto oom;
    if (rq->stream &&
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1)) < 0)
        goto oom;
    return body;
oom:
    return llm_encode_failed(body, err);
}

/* ---- response ----------------------------------------------------------- */

static void usage_of(struct llm_turn *t, const json_t *obj)
{
    const json_t *u = json_object_get(obj, "usage");
    if (json_is_object(u)) {
        t->input_tokens = llm_juint(u, "prompt_tokens");
        t->output_tokens = llm_juint(u, "completion_tokens");
    }
}

static int set_str(char **slot, const char *v, fb_err *err)
{
    if (!v || *slot)
        return 0; /* the first piece names the call; later ones repeat or omit it */
    if (!(*slot = strdup(v)))
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
    return 0;
}

/* tool_calls of a message (whole) or of a delta (a piece): same shape. */
static int tool_calls(struct llm_turn *t, const json_t *arr, fb_err *err)
{
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return fb_fail_code(err, FB_LLM_EMALFORMED, "tool_calls is not a list");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *tc = json_array_get(arr, i);
        const json_t *ix = json_object_get(tc, "index");
        const json_t *fn = json_object_get(tc, "function");
        if (!json_is_object(tc) || (fn && !json_is_object(fn)))
            return fb_fail_code(err, FB_LLM_EMALFORMED, "tool_calls[%zu] is not an object", i);
        long index = json_is_integer(ix) ? (long)json_integer_value(ix) : (long)i;
        struct llm_call_acc *a = llm_turn_call(t, index, err);
        if (!a)
            return FB_LLM_EMALFORMED;
        const json_t *jargs = json_object_get(fn, "arguments");
        /* Some servers send the arguments as an object, not its text. */
        char *dumped = json_is_object(jargs) ? json_dumps(jargs, JSON_COMPACT) : NULL;
        const char *args = dumped ? dumped : json_string_value(jargs);
        int rc = set_str(&a->id, llm_jstr(tc, "id"), err);
        if (!rc)
            rc = set_str(&a->name, llm_jstr(fn, "name"), err);
        if (!rc && args)
            rc = llm_turn_call_args(t, a, args, strlen(args), err);
        free(dumped);
        if (rc)
            return rc;
    }
    return 0;
}

static int choice(struct llm_turn *t, const json_t *obj, const char *what, fb_err *err)
{
    const json_t *choices = json_object_get(obj, "choices");
    if (!json_is_array(choices))
        return fb_fail_code(err, FB_LLM_EMALFORMED, "the response has no choices");
    if (json_array_size(choices) == 0)
        return 0; /* the usage chunk */
    const json_t *c = json_array_get(choices, 0);
    const json_t *m = json_object_get(c, what);
    /* A last chunk with only finish_reason may leave delta out or null. */
    bool optional = strcmp(what, "delta") == 0 && (!m || json_is_null(m));
    if (!json_is_object(m) && !optional)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "choices[0] has no %s", what);
    const json_t *content = json_object_get(m, "content");
    if (content && !json_is_null(content) && !json_is_string(content))
        return fb_fail_code(err, FB_LLM_EMALFORMED, "choices[0].%s.content is not text", what);
    int rc = llm_turn_text(t, json_string_value(content), json_string_length(content), err);
    if (!rc)
        rc = tool_calls(t, json_object_get(m, "tool_calls"), err);
    const char *fr = llm_jstr(c, "finish_reason");
    if (!rc && fr)
        rc = llm_turn_set_stop(t, fr, stop_of(fr), err);
    return rc;
}

static int decode(struct llm_turn *t, const json_t *body, fb_err *err)
{
    int rc = choice(t, body, "message", err);
    if (rc)
        return rc;
    if (!t->stop_raw)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "the response has no finish_reason");
    usage_of(t, body);
    t->done = true;
    return 0;
}

static void error_text(const json_t *body, char *out, size_t cap)
{
    const json_t *e = json_object_get(body, "error");
    const char *msg = json_is_string(e) ? json_string_value(e) : llm_jstr(e, "message");
    snprintf(out, cap, "%s", msg ? msg : "");
}

static int event(struct llm_turn *t, const char *name, const char *data, size_t len, fb_err *err)
{
    (void)name;
    if (t->done)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "data after [DONE]");
    if (strcmp(data, "[DONE]") == 0) {
        t->done = true;
        return 0;
    }
    json_t *chunk = json_loadb(data, len, 0, NULL);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return fb_fail_code(err, FB_LLM_EMALFORMED, "a stream chunk is not a JSON object");
    }
    int rc;
    if (json_object_get(chunk, "error")) {
        char msg[300];
        error_text(chunk, msg, sizeof msg);
        rc = fb_fail_code(err, FB_LLM_ESERVER, "error in the stream: %s", msg[0] ? msg : "(no message)");
    } else {
        rc = choice(t, chunk, "delta", err);
        usage_of(t, chunk);
    }
    json_decref(chunk);
    return rc;
}

const struct llm_wire llm_wire_openai = {
    .path = "/chat/completions",
    .auth_fmt = "Authorization: Bearer %s",
    .extra_header = NULL,
    .encode = encode,
    .decode = decode,
    .event = event,
    .error_text = error_text,
};
