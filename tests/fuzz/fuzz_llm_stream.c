/*
 * fuzz_llm_stream.c - libFuzzer target for what a model provider sends
 * back (src/llm): the SSE parser and both wire formats' stream and whole-
 * body decoders, which take bytes from a server we do not control.
 *
 * The first byte picks the format (bit 0), the mode (bit 1: stream) and
 * where the stream is split (the rest of the byte); the rest is the body.
 * Checks: no crash, leak or sanitizer report; a turn that decodes is
 * consistent (every call has an id and a name, input NULL or an object,
 * text NUL-terminated).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm/internal.h"

static int on_event(void *user, const char *event, const char *data, size_t len, fb_err *err)
{
    struct llm_turn *t = user;
    const struct llm_wire *w = t->rq->user;
    return w->event(t, event, data, len, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct llm_wire *w = data[0] & 1 ? &llm_wire_anthropic : &llm_wire_openai;
    bool stream = data[0] & 2;
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    size_t cut = n ? (size_t)(data[0] >> 2) % (n + 1) : 0;

    fb_llm_request rq = {.model = "m", .stream = stream, .user = (void *)w};
    struct llm_turn t;
    llm_turn_init(&t, &rq, 1 << 16);
    fb_err err = {{0}};
    int rc;
    if (stream) {
        struct llm_sse s;
        llm_sse_init(&s, 4096);
        rc = llm_sse_feed(&s, body, cut, on_event, &t, &err);
        if (!rc)
            rc = llm_sse_feed(&s, body + cut, n - cut, on_event, &t, &err);
        llm_sse_free(&s);
        if (!rc && !t.done)
            rc = fb_fail_code(&err, FB_LLM_ECUT, "no end marker");
    } else {
        json_t *j = json_loadb(body, n, 0, NULL);
        rc = json_is_object(j) ? w->decode(&t, j, &err)
                               : fb_fail_code(&err, FB_LLM_EMALFORMED, "not a JSON object");
        json_decref(j);
    }
    fb_llm_response r;
    if (!rc && llm_turn_result(&t, &r, &err) == 0) {
        if (strlen(r.text) > (1 << 16))
            abort();
        for (size_t i = 0; i < r.ncalls; i++)
            if (!r.calls[i].id || !r.calls[i].name || (r.calls[i].input && !json_is_object(r.calls[i].input)))
                abort();
        fb_llm_response_free(&r);
    } else if (!rc) {
        /* llm_turn_result failed: nothing to free in r */
    } else if (err.msg[0] == '\0') {
        abort(); /* every failure says why */
    }
    llm_turn_free(&t);
    return 0;
}
