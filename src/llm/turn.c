/*
 * turn.c - one assistant turn being received: text arriving in deltas,
 * tool calls whose arguments arrive in pieces keyed by the provider's
 * index, the stop reason and usage.  Both wire formats, streamed or not,
 * fill the same accumulator, so what the caller gets (and when its
 * callbacks run) does not depend on the provider.
 *
 * The accumulator keeps at most `cap` bytes of text and arguments (the
 * response size cap), so a model that never stops cannot grow memory
 * without bound even when the HTTP layer's count is per attempt.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/internal.h"

/* More tool calls than this in one turn is malformed. */
#define LLM_MAX_CALLS 256

void llm_turn_init(struct llm_turn *t, const fb_llm_request *rq, size_t cap)
{
    memset(t, 0, sizeof *t);
    t->rq = rq;
    t->cap = cap;
    t->stop = FB_LLM_STOP_OTHER;
}

void llm_turn_free(struct llm_turn *t)
{
    free(t->text);
    for (size_t i = 0; i < t->nacc; i++) {
        free(t->acc[i].id);
        free(t->acc[i].name);
        free(t->acc[i].args);
        json_decref(t->acc[i].start_input);
    }
    free(t->acc);
    for (size_t i = 0; i < t->ncalls; i++)
        llm_call_clear(&t->calls[i]);
    free(t->calls);
    free(t->stop_raw);
    memset(t, 0, sizeof *t);
}

static int append(struct llm_turn *t, char **buf, size_t *len, size_t *cap, const char *s, size_t n,
                  fb_err *err)
{
    if (n > t->cap - t->kept)
        return fb_fail_code(err, FB_LLM_ETOOLARGE, "the response is larger than %zu bytes", t->cap);
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 256;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *nb = realloc(*buf, ncap);
        if (!nb)
            return fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    t->kept += n;
    return 0;
}

int llm_turn_text(struct llm_turn *t, const char *s, size_t len, fb_err *err)
{
    if (len == 0)
        return 0;
    int rc = append(t, &t->text, &t->tlen, &t->tcap, s, len, err);
    if (rc)
        return rc;
    if (t->rq->stream && t->rq->on_text) {
        t->delivered = true;
        if (t->rq->on_text(t->rq->user, s, len))
            return fb_fail_code(err, FB_LLM_ECANCELLED, "cancelled by the caller");
    }
    return 0;
}

struct llm_call_acc *llm_turn_call(struct llm_turn *t, long index, fb_err *err)
{
    for (size_t i = 0; i < t->nacc; i++)
        if (t->acc[i].index == index)
            return &t->acc[i];
    if (t->nacc == LLM_MAX_CALLS) {
        fb_fail_code(err, FB_LLM_EMALFORMED, "more than %d tool calls in one turn", LLM_MAX_CALLS);
        return NULL;
    }
    struct llm_call_acc *na = realloc(t->acc, (t->nacc + 1) * sizeof *na);
    if (!na) {
        fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
        return NULL;
    }
    t->acc = na;
    struct llm_call_acc *a = &t->acc[t->nacc++];
    memset(a, 0, sizeof *a);
    a->index = index;
    return a;
}

int llm_turn_call_args(struct llm_turn *t, struct llm_call_acc *a, const char *s, size_t len, fb_err *err)
{
    if (a->finished)
        return fb_fail_code(err, FB_LLM_EMALFORMED, "arguments for tool call %ld after it ended", a->index);
    return append(t, &a->args, &a->alen, &a->acap, s, len, err);
}

int llm_turn_call_finish(struct llm_turn *t, struct llm_call_acc *a, fb_err *err)
{
    if (a->finished)
        return 0;
    a->finished = true;
    if (!a->name || !a->name[0])
        return fb_fail_code(err, FB_LLM_EMALFORMED, "tool call %ld has no name", a->index);
    if (!a->id || !a->id[0]) {
        /* Some local servers give no ids; the call still needs one for its
         * result, and such a server does not check what comes back. */
        free(a->id);
        if (asprintf(&a->id, "call_%ld", a->index) < 0) {
            a->id = NULL;
            return fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
        }
    }
    fb_llm_tool_call *nc = realloc(t->calls, (t->ncalls + 1) * sizeof *nc);
    if (!nc)
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
    t->calls = nc;
    fb_llm_tool_call *c = &t->calls[t->ncalls++];
    memset(c, 0, sizeof *c);
    c->id = steal_pointer(&a->id);
    c->name = steal_pointer(&a->name);
    if (a->bad_input && a->alen == 0) {
        c->input = NULL;
    } else if (a->alen > 0 || !a->start_input) {
        /* Arguments that are not a JSON object stay NULL in input: the
         * model's mistake, answered by the engine with an error result. */
        json_t *in = json_loadb(a->args ? a->args : "", a->alen, JSON_REJECT_DUPLICATES, NULL);
        if (a->alen == 0 && !in)
            in = json_object(); /* "no arguments" is {} */
        if (in && !json_is_object(in)) {
            json_decref(in);
            in = NULL;
        }
        c->input = in;
    } else {
        c->input = steal_pointer(&a->start_input);
    }
    if (t->rq->stream && t->rq->on_tool_call) {
        t->delivered = true;
        if (t->rq->on_tool_call(t->rq->user, c))
            return fb_fail_code(err, FB_LLM_ECANCELLED, "cancelled by the caller");
    }
    return 0;
}

int llm_turn_set_stop(struct llm_turn *t, const char *raw, fb_llm_stop stop, fb_err *err)
{
    char *r = strdup(raw);
    if (!r)
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
    free(t->stop_raw);
    t->stop_raw = r;
    t->stop = stop;
    return 0;
}

int llm_turn_result(struct llm_turn *t, fb_llm_response *r, fb_err *err)
{
    for (size_t i = 0; i < t->nacc; i++) {
        int rc = llm_turn_call_finish(t, &t->acc[i], err);
        if (rc)
            return rc;
    }
    memset(r, 0, sizeof *r);
    r->text = t->text ? steal_pointer(&t->text) : strdup("");
    if (!r->text)
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory receiving a response");
    r->calls = steal_pointer(&t->calls);
    r->ncalls = t->ncalls;
    t->ncalls = 0;
    r->stop = t->stop;
    r->stop_raw = steal_pointer(&t->stop_raw);
    r->usage.input_tokens = t->input_tokens;
    r->usage.output_tokens = t->output_tokens;
    return 0;
}
