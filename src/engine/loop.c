/*
 * loop.c - the task loop (engine.h): ask the model, run what it asks for,
 * give it the results, until it stops or something ends the task.
 *
 * Budgets are checked where they can be known: max_turns before each
 * provider call, max_tokens after each turn (from the provider's usage),
 * max_tool_calls before each call, the deadline all the time.  The
 * deadline is enforced by a watchdog thread per loop that sets *cancel
 * when it passes, so that the one flag every blocking step already
 * watches (the provider call, the tool's command, the approval wait in the
 * hook) also ends the task on time; the loop tells a timeout from an
 * outside cancel by who set the flag first.
 *
 * The conversation stays well formed whatever happens: every tool call the
 * model made gets exactly one result, also the calls that were not run
 * because the task ended first ("not run: ..."), so a follow-up message
 * can continue it on any provider.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/time.h"
#include "common/utf8.h"
#include "engine/internal.h"

/* ---- the watchdog ------------------------------------------------------------- */

struct watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, stop;
    atomic_bool fired;        /* the deadline set *cancel (not someone else) */
    atomic_bool *cancel;
    uint64_t deadline_ns;
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        uint64_t now = fb_time_monotonic_ns();
        if (now >= w->deadline_ns) {
            /* An outside cancel that came first stays a cancel. */
            if (!atomic_load(w->cancel)) {
                atomic_store(&w->fired, true);
                atomic_store(w->cancel, true);
            }
            break;
        }
        uint64_t wait = w->deadline_ns - now;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += (time_t)(wait / 1000000000ull);
        ts.tv_nsec += (long)(wait % 1000000000ull);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void watchdog_start(struct watchdog *w, atomic_bool *cancel, uint64_t deadline_ns)
{
    memset(w, 0, sizeof *w);
    w->cancel = cancel;
    w->deadline_ns = deadline_ns;
    atomic_init(&w->fired, false);
    if (!deadline_ns)
        return;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    w->running = pthread_create(&w->thread, NULL, watchdog_main, w) == 0;
    if (!w->running) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
}

static void watchdog_stop(struct watchdog *w)
{
    if (!w->running)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w->running = false;
}

/* ---- one loop's state ---------------------------------------------------------- */

struct loop {
    fb_engine_run *run;
    fb_llm_conv *conv;
    fb_engine_outcome *out;
    struct watchdog wd;
    fb_llm_tool offer[FB_TOOL_COUNT];
    size_t noffer;
    bool ended;
};

static void emit(struct loop *l, const char *type, json_t *data)
{
    if (l->run->hooks.event && data)
        l->run->hooks.event(l->run->hooks.user, type, data);
    else
        json_decref(data);
}

/* A JSON string from text that may not be clean UTF-8. */
static json_t *jstr(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j)
        return j;
    size_t n = 0;
    cleanup_free char *clean = fb_utf8_clean(s, len, &n);
    return clean ? json_stringn(clean, n) : NULL;
}

static int on_text(void *user, const char *delta, size_t len)
{
    struct loop *l = user;
    if (len)
        emit(l, "text", json_pack("{so}", "delta", jstr(delta, len)));
    return 0;
}

static void emit_usage(struct loop *l)
{
    const fb_engine_usage *u = l->run->usage;
    emit(l, "usage", json_pack("{sIsIsIsI}", "input_tokens", (json_int_t)u->input_tokens, "output_tokens",
                               (json_int_t)u->output_tokens, "turns", (json_int_t)u->turns, "tool_calls",
                               (json_int_t)u->tool_calls));
}

static void end(struct loop *l, fb_task_state state, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void end(struct loop *l, fb_task_state state, const char *fmt, ...)
{
    if (l->ended)
        return;
    l->ended = true;
    l->out->state = state;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->out->error, sizeof l->out->error, fmt, ap);
        va_end(ap);
    }
}

/* *cancel is set: a timeout if the watchdog set it, else a cancel. */
static void end_cancelled(struct loop *l)
{
    if (atomic_load(&l->wd.fired)) {
        if (l->run->limits.timeout_s)
            end(l, FB_TASK_BUDGET_EXCEEDED, "timeout_s (%llu) reached",
                (unsigned long long)l->run->limits.timeout_s);
        else
            end(l, FB_TASK_BUDGET_EXCEEDED, "the task's deadline passed");
    } else {
        end(l, FB_TASK_CANCELLED, "cancelled");
    }
}

static bool cancelled(struct loop *l)
{
    return atomic_load(l->run->cancel);
}

/* One result, as an event and in the conversation. */
static int give_result(struct loop *l, const fb_llm_tool_call *c, const char *output, bool is_error)
{
    emit(l, "tool_result", json_pack("{sssssosb}", "call_id", c->id ? c->id : "", "tool", c->name ? c->name : "",
                                     "output", jstr(output, strlen(output)), "is_error", is_error));
    if (fb_llm_conv_add_tool_result(l->conv, c->id ? c->id : "", output, is_error) < 0) {
        end(l, FB_TASK_FAILED, "out of memory");
        return -1;
    }
    return 0;
}

/* Answers calls [from, n) that will not run. */
static void skip_calls(struct loop *l, const fb_llm_response *r, size_t from, const char *why)
{
    char msg[256];
    snprintf(msg, sizeof msg, "not run: %s", why);
    for (size_t i = from; i < r->ncalls; i++)
        (void)fb_llm_conv_add_tool_result(l->conv, r->calls[i].id ? r->calls[i].id : "", msg, true);
}

static bool offered(const struct loop *l, int tool)
{
    return tool >= 0 && (l->run->tools & FB_TOOLSET_OF(tool));
}

/* The names offered, for the refusal of a call to anything else. */
static void offered_names(const struct loop *l, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < l->noffer && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", l->offer[i].name);
    if (!l->noffer)
        snprintf(buf, cap, "none");
}

/* One call: event, hook, tool or refusal, result.  -1 when the task ended. */
static int one_call(struct loop *l, const fb_llm_tool_call *c)
{
    fb_engine_run *run = l->run;
    json_t *input = c->input ? json_incref(c->input) : json_null();
    emit(l, "tool_call", json_pack("{sssssO}", "call_id", c->id ? c->id : "", "tool", c->name ? c->name : "",
                                   "input", input));
    json_decref(input);
    fb_tool t;
    int tool = fb_tool_from_name(c->name, &t) == 0 ? (int)t : -1;
    char reason[512] = "";
    fb_verdict v = FB_ALLOW;
    if (run->hooks.authorize)
        v = run->hooks.authorize(run->hooks.user, c, tool, reason, sizeof reason);
    if (cancelled(l)) {
        give_result(l, c, "not run: the task ended", true);
        end_cancelled(l);
        return -1;
    }
    char msg[1024];
    if (v != FB_ALLOW) {
        snprintf(msg, sizeof msg, "tool call refused: %s", reason[0] ? reason : "not allowed");
        return give_result(l, c, msg, true);
    }
    if (!offered(l, tool)) {
        char names[256];
        offered_names(l, names, sizeof names);
        snprintf(msg, sizeof msg, "tool \"%.100s\" is not available to this task (available: %s)",
                 c->name ? c->name : "", names);
        return give_result(l, c, msg, true);
    }
    if (!c->input) {
        snprintf(msg, sizeof msg, "%s: the arguments are not a JSON object; call the tool again with valid "
                                  "JSON arguments", c->name);
        return give_result(l, c, msg, true);
    }
    fb_tool_ctx ctx = {.sandbox = run->sandbox, .network = run->network, .max_output = run->max_tool_output,
                       .cancel = run->cancel, .deadline_ns = run->deadline_ns};
    char *output = NULL;
    bool is_error = true;
    int rc = fb_engine_tool_run(&ctx, t, c->input, &output, &is_error);
    int given = give_result(l, c, output ? output : "", is_error);
    if (rc < 0) {
        if (cancelled(l))
            end_cancelled(l);
        else
            end(l, FB_TASK_FAILED, "sandbox: %s", output ? output : "failed");
    }
    free(output);
    return rc < 0 || given < 0 ? -1 : 0;
}

/* "provider NAME: message" becomes "provider NAME: errc: message". */
static void end_provider_error(struct loop *l, int rc, const fb_err *err)
{
    const char *msg = err->msg;
    const char *colon = strncmp(msg, "provider ", 9) == 0 ? strstr(msg, ": ") : NULL;
    if (colon)
        end(l, FB_TASK_FAILED, "%.*s: %s: %s", (int)(colon - msg), msg, fb_llm_errc_name(rc), colon + 2);
    else
        end(l, FB_TASK_FAILED, "provider: %s: %s", fb_llm_errc_name(rc), msg);
}

static void set_result(struct loop *l, const char *text)
{
    if (!text || !text[0])
        return;
    char *copy = strdup(text);
    if (!copy)
        return;
    free(l->out->result);
    l->out->result = copy;
}

/* One turn.  Returns 1 to go on, 0 when the loop ended. */
static int one_turn(struct loop *l)
{
    fb_engine_run *run = l->run;
    if (cancelled(l)) {
        end_cancelled(l);
        return 0;
    }
    if (run->limits.max_turns && run->usage->turns >= run->limits.max_turns) {
        end(l, FB_TASK_BUDGET_EXCEEDED, "max_turns (%llu) reached", (unsigned long long)run->limits.max_turns);
        return 0;
    }
    /* A turn may not write past the token budget: its output is capped to
     * what is left of it (input tokens cannot be capped; they are counted
     * after the turn like the rest). */
    unsigned turn_max = run->max_tokens_per_turn;
    if (run->limits.max_tokens) {
        uint64_t used = run->usage->input_tokens + run->usage->output_tokens;
        uint64_t left = used < run->limits.max_tokens ? run->limits.max_tokens - used : 1;
        if (left < (turn_max ? turn_max : FB_ENGINE_DEFAULT_TURN_TOKENS))
            turn_max = (unsigned)left;
    }
    fb_llm_request rq = {.model = run->model, .conv = l->conv, .tools = l->offer, .ntools = l->noffer,
                         .max_tokens = turn_max, .stream = !run->no_stream,
                         .on_text = on_text, .user = l, .cancel = run->cancel};
    fb_llm_response r;
    fb_err err = {{0}};
    int rc = fb_llm_complete(run->provider, &rq, &r, &err);
    if (rc != FB_LLM_OK) {
        if (rc == FB_LLM_ECANCELLED && cancelled(l))
            end_cancelled(l);
        else
            end_provider_error(l, rc, &err);
        return 0;
    }
    run->usage->turns++;
    run->usage->input_tokens += r.usage.input_tokens;
    run->usage->output_tokens += r.usage.output_tokens;
    if (run->no_stream && r.text && r.text[0])
        on_text(l, r.text, strlen(r.text));
    set_result(l, r.text);
    if (fb_llm_conv_add_assistant(l->conv, &r) < 0) {
        fb_llm_response_free(&r);
        end(l, FB_TASK_FAILED, "out of memory");
        return 0;
    }
    uint64_t tokens = run->usage->input_tokens + run->usage->output_tokens;
    int go_on = 1;
    if (r.ncalls == 0 && run->limits.max_tokens && tokens > run->limits.max_tokens) {
        /* The answer is kept as the result, but the task went past its budget. */
        end(l, FB_TASK_BUDGET_EXCEEDED, "max_tokens (%llu) exceeded by the final answer: %llu used",
            (unsigned long long)run->limits.max_tokens, (unsigned long long)tokens);
        go_on = 0;
    } else if (r.ncalls == 0) {
        end(l, FB_TASK_SUCCEEDED, NULL);
        go_on = 0;
    } else if (run->limits.max_tokens && tokens >= run->limits.max_tokens) {
        skip_calls(l, &r, 0, "the task's token budget is spent");
        end(l, FB_TASK_BUDGET_EXCEEDED, "max_tokens (%llu) reached: %llu used",
            (unsigned long long)run->limits.max_tokens, (unsigned long long)tokens);
        go_on = 0;
    }
    for (size_t i = 0; go_on && i < r.ncalls; i++) {
        if (cancelled(l)) {
            skip_calls(l, &r, i, "the task ended");
            end_cancelled(l);
            go_on = 0;
        } else if (run->limits.max_tool_calls && run->usage->tool_calls >= run->limits.max_tool_calls) {
            skip_calls(l, &r, i, "the task's tool call budget is spent");
            end(l, FB_TASK_BUDGET_EXCEEDED, "max_tool_calls (%llu) reached",
                (unsigned long long)run->limits.max_tool_calls);
            go_on = 0;
        } else {
            run->usage->tool_calls++;
            if (one_call(l, &r.calls[i]) < 0) {
                skip_calls(l, &r, i + 1, "the task ended");
                go_on = 0;
            }
        }
    }
    emit_usage(l);
    fb_llm_response_free(&r);
    return go_on;
}

int fb_engine_loop(fb_engine_run *run, fb_llm_conv *conv, fb_engine_outcome *out)
{
    if (!out)
        return -1;
    memset(out, 0, sizeof *out);
    out->state = FB_TASK_FAILED;
    const char *bad = !run ? "no run" : !run->provider ? "no provider" : !run->model || !run->model[0] ? "no model"
                      : !run->usage ? "no usage" : !run->cancel ? "no cancel flag" : !conv ? "no conversation"
                      : !conv->n || conv->msgs[conv->n - 1].role == FB_LLM_ASSISTANT
                          ? "the conversation must end with a user message"
                          : NULL;
    if (bad) {
        snprintf(out->error, sizeof out->error, "fb_engine_loop: %s", bad);
        return -1;
    }
    if (!run->deadline_ns && run->limits.timeout_s)
        run->deadline_ns = fb_time_monotonic_ns() + run->limits.timeout_s * 1000000000ull;
    struct loop l = {.run = run, .conv = conv, .out = out};
    for (int t = 0; t < FB_TOOL_COUNT; t++)
        if ((run->tools & FB_TOOLSET_OF(t)) && fb_engine_tool_spec((fb_tool)t))
            l.offer[l.noffer++] = *fb_engine_tool_spec((fb_tool)t);
    watchdog_start(&l.wd, run->cancel, run->deadline_ns);
    while (one_turn(&l))
        ;
    watchdog_stop(&l.wd);
    return 0;
}
