/*
 * fb_llm_probe.c - one provider call (src/llm) from the command line, for
 * tests/integration/test_llm_providers.py against tests/tools/fake_llm.py.
 *
 *   fb-llm-probe --config FORGEBOX_YAML --provider NAME [--stream]
 *                [--max-response-bytes N] [--retry-base-ms N]
 *                [--cancel-after-text] < REQUEST_JSON
 *
 * REQUEST_JSON is {"model", "max_tokens"?, "tools"?: [{name, description,
 * input_schema}], "system"?, "messages": [...]} with messages in the
 * neutral form of fb_llm_conv_from_json.  Prints one JSON line:
 *   {"ok": true, "text", "tool_calls": [{id, name, input}], "stop",
 *    "stop_raw", "usage": {input_tokens, output_tokens}, "attempts",
 *    "deltas": [text pieces as the callback saw them], "streamed_calls":
 *    [names in the order on_tool_call saw them], "conversation": the
 *    conversation after fb_llm_conv_add_assistant}
 * or {"ok": false, "error": errc name, "message"}.  Exit 0, 1 (a typed
 * error) or 2 (bad usage or input).  Uses only llm.h and config.h.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "llm/llm.h"

struct seen {
    json_t *deltas;
    json_t *calls;
    bool cancel_after_text;
};

static int on_text(void *user, const char *delta, size_t len)
{
    struct seen *s = user;
    json_array_append_new(s->deltas, json_stringn(delta, len));
    return s->cancel_after_text ? 1 : 0;
}

static int on_call(void *user, const fb_llm_tool_call *c)
{
    struct seen *s = user;
    json_array_append_new(s->calls, json_string(c->name));
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: fb-llm-probe --config FILE --provider NAME [--stream] [--max-response-bytes N] "
                    "[--retry-base-ms N] [--cancel-after-text] < REQUEST_JSON\n");
    return 2;
}

static void print_line(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
    fflush(stdout);
}

static json_t *result_json(const fb_llm_response *r, struct seen *s, const fb_llm_conv *conv)
{
    json_t *calls = json_array();
    for (size_t i = 0; i < r->ncalls; i++)
        json_array_append_new(calls, json_pack("{s:s, s:s, s:O?}", "id", r->calls[i].id, "name",
                                               r->calls[i].name, "input", r->calls[i].input));
    return json_pack("{s:b, s:s, s:o, s:s, s:s?, s:{s:I, s:I}, s:i, s:O, s:O, s:o}", "ok", 1, "text",
                     r->text, "tool_calls", calls, "stop", fb_llm_stop_name(r->stop), "stop_raw",
                     r->stop_raw, "usage", "input_tokens", (json_int_t)r->usage.input_tokens,
                     "output_tokens", (json_int_t)r->usage.output_tokens, "attempts", (int)r->attempts,
                     "deltas", s->deltas, "streamed_calls", s->calls, "conversation",
                     fb_llm_conv_to_json(conv));
}

int main(int argc, char **argv)
{
    const char *cfg_path = NULL, *name = NULL;
    bool stream = false;
    struct seen seen = {NULL, NULL, false};
    size_t max_resp = 0;
    unsigned retry_base = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            cfg_path = argv[++i];
        else if (strcmp(argv[i], "--provider") == 0 && i + 1 < argc)
            name = argv[++i];
        else if (strcmp(argv[i], "--stream") == 0)
            stream = true;
        else if (strcmp(argv[i], "--cancel-after-text") == 0)
            seen.cancel_after_text = true;
        else if (strcmp(argv[i], "--max-response-bytes") == 0 && i + 1 < argc)
            max_resp = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--retry-base-ms") == 0 && i + 1 < argc)
            retry_base = (unsigned)strtoul(argv[++i], NULL, 10);
        else
            return usage();
    }
    if (!cfg_path || !name)
        return usage();

    fb_err err = {{0}};
    fb_config cfg;
    if (fb_config_defaults(&cfg) < 0 || fb_config_load_file(&cfg, cfg_path, true, &err) < 0) {
        print_line(json_pack("{s:b, s:s, s:s}", "ok", 0, "error", "config", "message", err.msg));
        fb_config_free(&cfg);
        return 2;
    }
    const fb_config_provider *pc = fb_config_provider_find(&cfg, name);
    if (!pc) {
        print_line(json_pack("{s:b, s:s, s:s}", "ok", 0, "error", "config", "message", "no such provider"));
        fb_config_free(&cfg);
        return 2;
    }
    json_error_t jerr;
    json_t *in = json_loadf(stdin, 0, &jerr);
    fb_llm_conv conv;
    fb_llm_conv_init(&conv);
    if (!in || fb_llm_conv_from_json(&conv, in, &err) < 0) {
        fprintf(stderr, "fb-llm-probe: bad request JSON: %s\n", in ? err.msg : jerr.text);
        fb_llm_conv_free(&conv);
        json_decref(in);
        fb_config_free(&cfg);
        return 2;
    }
    const json_t *jt = json_object_get(in, "tools");
    size_t ntools = json_array_size(jt);
    fb_llm_tool *tools = calloc(ntools ? ntools : 1, sizeof *tools);
    for (size_t i = 0; i < ntools; i++) {
        const json_t *t = json_array_get(jt, i);
        tools[i] = (fb_llm_tool){json_string_value(json_object_get(t, "name")),
                                 json_string_value(json_object_get(t, "description")),
                                 json_object_get(t, "input_schema")};
    }

    seen.deltas = json_array();
    seen.calls = json_array();
    fb_llm_provider_opts opts = fb_config_provider_opts(pc);
    opts.max_response_bytes = max_resp;
    opts.retry_base_ms = retry_base;
    fb_llm_provider *p = NULL;
    int rc = fb_llm_provider_new(&opts, &p, &err);
    fb_llm_response r = {0};
    if (rc == FB_LLM_OK) {
        fb_llm_request rq = {
            .model = json_string_value(json_object_get(in, "model")),
            .conv = &conv,
            .tools = tools,
            .ntools = ntools,
            .max_tokens = (unsigned)json_integer_value(json_object_get(in, "max_tokens")),
            .stream = stream,
            .on_text = on_text,
            .on_tool_call = on_call,
            .user = &seen,
        };
        rc = fb_llm_complete(p, &rq, &r, &err);
    }
    if (rc == FB_LLM_OK) {
        if (fb_llm_conv_add_assistant(&conv, &r) < 0)
            return 2;
        print_line(result_json(&r, &seen, &conv));
    } else {
        print_line(json_pack("{s:b, s:s, s:s}", "ok", 0, "error", fb_llm_errc_name(rc), "message", err.msg));
    }
    fb_llm_response_free(&r);
    fb_llm_provider_free(p);
    fb_llm_conv_free(&conv);
    fb_config_free(&cfg);
    free(tools);
    json_decref(in);
    json_decref(seen.deltas);
    json_decref(seen.calls);
    return rc == FB_LLM_OK ? 0 : 1;
}
