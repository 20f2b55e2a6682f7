/*
 * conv.c - the provider-neutral conversation (fb_llm_conv): building it
 * turn by turn, and its neutral JSON form for storing a transcript.
 *
 * The wire formats (openai.c, anthropic.c) translate this one model into
 * their own shapes, so the engine never knows which provider it talks to.
 * An assistant turn keeps each tool call's arguments exactly as the model
 * sent them (raw), because Chat Completions expects its tool_calls back
 * verbatim on the next turn.
 */
#include <stdlib.h>
#include <string.h>

#include "llm/internal.h"

const char *llm_jstr(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

uint64_t llm_juint(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

int llm_encode_tools(json_t *body, const fb_llm_request *rq, json_t *(*shape)(const fb_llm_tool *t))
{
    if (rq->ntools == 0)
        return 0;
    json_t *tools = json_array();
    if (!tools || json_object_set_new(body, "tools", tools) < 0)
        return -1;
    for (size_t i = 0; i < rq->ntools; i++)
        if (json_array_append_new(tools, shape(&rq->tools[i])) < 0)
            return -1;
    return 0;
}

json_t *llm_encode_failed(json_t *body, fb_err *err)
{
    json_decref(body);
    fb_fail_code(err, FB_LLM_EINVAL, "cannot build the request (out of memory, or text that is not UTF-8)");
    return NULL;
}

void llm_call_clear(fb_llm_tool_call *c)
{
    free(c->id);
    free(c->name);
    free(c->raw);
    json_decref(c->input);
    memset(c, 0, sizeof *c);
}

static char *dup_or_null(const char *s, bool *ok)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *ok = false;
    return d;
}

int llm_call_copy(fb_llm_tool_call *dst, const fb_llm_tool_call *src)
{
    bool ok = true;
    memset(dst, 0, sizeof *dst);
    dst->id = dup_or_null(src->id ? src->id : "", &ok);
    dst->name = dup_or_null(src->name ? src->name : "", &ok);
    dst->raw = dup_or_null(src->raw, &ok);
    if (src->input && !(dst->input = json_deep_copy(src->input)))
        ok = false;
    if (!ok) {
        llm_call_clear(dst);
        return -1;
    }
    return 0;
}

void fb_llm_conv_init(fb_llm_conv *conv)
{
    memset(conv, 0, sizeof *conv);
}

static void message_clear(fb_llm_message *m)
{
    free(m->text);
    free(m->call_id);
    for (size_t i = 0; i < m->ncalls; i++)
        llm_call_clear(&m->calls[i]);
    free(m->calls);
    memset(m, 0, sizeof *m);
}

void fb_llm_conv_free(fb_llm_conv *conv)
{
    if (!conv)
        return;
    for (size_t i = 0; i < conv->n; i++)
        message_clear(&conv->msgs[i]);
    free(conv->msgs);
    free(conv->system);
    fb_llm_conv_init(conv);
}

int fb_llm_conv_set_system(fb_llm_conv *conv, const char *text)
{
    bool ok = true;
    char *s = dup_or_null(text, &ok);
    if (!ok)
        return -1;
    free(conv->system);
    conv->system = s;
    return 0;
}

/* A new zeroed message at the end (NULL: out of memory). */
static fb_llm_message *push(fb_llm_conv *conv)
{
    if (conv->n == conv->cap) {
        size_t ncap = conv->cap ? conv->cap * 2 : 8;
        fb_llm_message *nm = realloc(conv->msgs, ncap * sizeof *nm);
        if (!nm)
            return NULL;
        conv->msgs = nm;
        conv->cap = ncap;
    }
    fb_llm_message *m = &conv->msgs[conv->n];
    memset(m, 0, sizeof *m);
    return m;
}

int fb_llm_conv_add_user(fb_llm_conv *conv, const char *text)
{
    fb_llm_message *m = push(conv);
    if (!m || !(m->text = strdup(text ? text : "")))
        return -1;
    m->role = FB_LLM_USER;
    conv->n++;
    return 0;
}

static int add_assistant(fb_llm_conv *conv, const char *text, const fb_llm_tool_call *calls,
                         size_t ncalls)
{
    fb_llm_message *m = push(conv);
    if (!m)
        return -1;
    bool ok = true;
    m->role = FB_LLM_ASSISTANT;
    m->text = dup_or_null(text, &ok);
    if (ncalls && !(m->calls = calloc(ncalls, sizeof *m->calls)))
        ok = false;
    for (size_t i = 0; ok && i < ncalls; i++) {
        if (llm_call_copy(&m->calls[i], &calls[i]) < 0)
            ok = false;
        else
            m->ncalls++;
    }
    if (!ok) {
        message_clear(m);
        return -1;
    }
    conv->n++;
    return 0;
}

int fb_llm_conv_add_assistant(fb_llm_conv *conv, const fb_llm_response *r)
{
    return add_assistant(conv, r->text, r->calls, r->ncalls);
}

int fb_llm_conv_add_tool_result(fb_llm_conv *conv, const char *call_id, const char *content,
                                bool is_error)
{
    fb_llm_message *m = push(conv);
    if (!m)
        return -1;
    m->role = FB_LLM_TOOL_RESULT;
    m->is_error = is_error;
    m->call_id = strdup(call_id ? call_id : "");
    m->text = strdup(content ? content : "");
    if (!m->call_id || !m->text) {
        message_clear(m);
        return -1;
    }
    conv->n++;
    return 0;
}

void fb_llm_response_free(fb_llm_response *r)
{
    if (!r)
        return;
    free(r->text);
    free(r->stop_raw);
    for (size_t i = 0; i < r->ncalls; i++)
        llm_call_clear(&r->calls[i]);
    free(r->calls);
    memset(r, 0, sizeof *r);
}

/* ---- neutral JSON ------------------------------------------------------- */

static json_t *call_to_json(const fb_llm_tool_call *c)
{
    json_t *o = json_pack("{s:s, s:s, s:O?}", "id", c->id ? c->id : "", "name",
                          c->name ? c->name : "", "input", c->input);
    if (o && c->raw && json_object_set_new(o, "raw", json_string(c->raw)) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *message_to_json(const fb_llm_message *m)
{
    switch (m->role) {
    case FB_LLM_USER:
        return json_pack("{s:s, s:s}", "role", "user", "content", m->text ? m->text : "");
    case FB_LLM_TOOL_RESULT:
        return json_pack("{s:s, s:s, s:s, s:b}", "role", "tool", "tool_call_id",
                         m->call_id ? m->call_id : "", "content", m->text ? m->text : "",
                         "is_error", m->is_error);
    case FB_LLM_ASSISTANT:
        break;
    }
    json_t *o = json_pack("{s:s, s:s?}", "role", "assistant", "content", m->text);
    json_t *calls = m->ncalls ? json_array() : NULL;
    if (!o || (m->ncalls && !calls))
        goto fail;
    for (size_t i = 0; i < m->ncalls; i++)
        if (json_array_append_new(calls, call_to_json(&m->calls[i])) < 0)
            goto fail;
    if (calls && json_object_set_new(o, "tool_calls", calls) < 0) {
        calls = NULL;
        goto fail;
    }
    return o;
fail:
    json_decref(calls);
    json_decref(o);
    return NULL;
}

json_t *fb_llm_conv_to_json(const fb_llm_conv *conv)
{
    json_t *msgs = json_array();
    json_t *o = json_pack("{s:s?, s:o}", "system", conv->system, "messages", msgs);
    if (!o)
        return NULL;
    for (size_t i = 0; i < conv->n; i++)
        if (json_array_append_new(msgs, message_to_json(&conv->msgs[i])) < 0) {
            json_decref(o);
            return NULL;
        }
    return o;
}

static int calls_from_json(const json_t *arr, size_t at, fb_llm_tool_call **out, size_t *n,
                           fb_err *err)
{
    if (!json_is_array(arr))
        return fb_fail(err, "messages[%zu].tool_calls: must be a list", at);
    size_t cnt = json_array_size(arr);
    *n = 0;
    *out = cnt ? calloc(cnt, sizeof **out) : NULL;
    if (cnt && !*out)
        return fb_fail(err, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        const json_t *c = json_array_get(arr, i);
        const json_t *input = json_object_get(c, "input");
        const char *raw = llm_jstr(c, "raw");
        if (!llm_jstr(c, "id") || !llm_jstr(c, "name") || (input && !json_is_object(input)))
            return fb_fail(err, "messages[%zu].tool_calls[%zu]: needs id and name (strings) "
                           "and input (an object)", at, i);
        fb_llm_tool_call src = {.id = (char *)llm_jstr(c, "id"), .name = (char *)llm_jstr(c, "name"),
                                .input = (json_t *)input, .raw = (char *)raw};
        if (llm_call_copy(&(*out)[i], &src) < 0)
            return fb_fail(err, "out of memory");
        (*n)++;
    }
    return 0;
}

static int message_from_json(fb_llm_conv *conv, const json_t *m, size_t i, fb_err *err)
{
    const char *role = llm_jstr(m, "role");
    const json_t *content = json_object_get(m, "content");
    if (content && !json_is_string(content) && !json_is_null(content))
        return fb_fail(err, "messages[%zu].content: must be a string", i);
    const char *text = json_string_value(content);
    if (role && strcmp(role, "user") == 0) {
        if (!text)
            return fb_fail(err, "messages[%zu]: a user message needs content", i);
        return fb_llm_conv_add_user(conv, text) < 0 ? fb_fail(err, "out of memory") : 0;
    }
    if (role && strcmp(role, "tool") == 0) {
        const char *id = llm_jstr(m, "tool_call_id");
        if (!id || !text)
            return fb_fail(err, "messages[%zu]: a tool message needs tool_call_id and content", i);
        bool is_error = json_is_true(json_object_get(m, "is_error"));
        return fb_llm_conv_add_tool_result(conv, id, text, is_error) < 0 ? fb_fail(err, "out of memory")
                                                                           : 0;
    }
    if (!role || strcmp(role, "assistant") != 0)
        return fb_fail(err, "messages[%zu].role: must be user, assistant or tool", i);
    fb_llm_tool_call *calls = NULL;
    size_t n = 0;
    const json_t *tc = json_object_get(m, "tool_calls");
    int rc = tc ? calls_from_json(tc, i, &calls, &n, err) : 0;
    if (rc == 0 && add_assistant(conv, text, calls, n) < 0)
        rc = fb_fail(err, "out of memory");
    for (size_t k = 0; k < n; k++)
        llm_call_clear(&calls[k]);
    free(calls);
    return rc;
}

int fb_llm_conv_from_json(fb_llm_conv *conv, const json_t *j, fb_err *err)
{
    const json_t *sys = json_object_get(j, "system");
    const json_t *msgs = json_object_get(j, "messages");
    if (!json_is_object(j) || !json_is_array(msgs))
        return fb_fail(err, "a conversation is an object with a messages list");
    if (sys && !json_is_null(sys)) {
        if (!json_is_string(sys))
            return fb_fail(err, "system: must be a string");
        if (fb_llm_conv_set_system(conv, json_string_value(sys)) < 0)
            return fb_fail(err, "out of memory");
    }
    for (size_t i = 0; i < json_array_size(msgs); i++)
        if (message_from_json(conv, json_array_get(msgs, i), i, err) < 0)
            return -1;
    return 0;
}
