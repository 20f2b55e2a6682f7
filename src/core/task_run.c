/*
 * task_run.c - the thread that runs a task (core.h, "tasks"): it waits
 * for one of tasks.max_running slots, creates the task's sandbox as the
 * task's creator (fb_core_sandbox_create: the creator's permission and
 * quota, the egress grant decided there too), builds the provider from
 * the configuration, runs the engine's loop with the service's hooks, and
 * records the outcome.
 *
 * The provider's key goes from the configuration into the provider object
 * and nowhere else: not into the task, its events, its errors (the
 * provider layer redacts an echoed key) or the sandbox.
 *
 * The sandbox: while a run is in flight the thread holds a registry
 * reference to it and keeps its expiry past the run's deadline; a
 * succeeded task's sandbox stays for tasks.ttl_s (the core reaper then
 * destroys it), for follow-up messages; any other end destroys it at once.
 * A run cancelled because the gateway is stopping records nothing: the
 * task stays unfinished in the store, and the next start-up fails it with
 * the restart's reason.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

typedef struct run_arg {
    fb_core *c;
    core_task *t;
} run_arg;

int core_task_start(fb_core *c, core_task *t, fb_core_err *err)
{
    run_arg *a = malloc(sizeof *a);
    if (!a)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    *a = (run_arg){c, t};
    pthread_mutex_lock(&c->tasks.lock);
    t->thread_done = false;
    t->has_thread = true;
    t->refs++; /* the thread's, dropped as it ends */
    int rc = pthread_create(&t->thread, NULL, core_task_main, a);
    if (rc != 0) {
        t->has_thread = false;
        t->refs--;
        t->state = FB_TASK_FAILED;
        snprintf(t->error, sizeof t->error, "cannot start the task's thread");
    }
    pthread_mutex_unlock(&c->tasks.lock);
    if (rc != 0) {
        free(a);
        core_task_save(c, t, false);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "cannot start the task's thread");
    }
    return 0;
}

/* Moves the sandbox's expiry to now + seconds (registry lock). */
static void sandbox_keep(fb_core *c, core_sandbox *s, uint64_t seconds)
{
    struct timespec now = fb_time_now_ts();
    char at[FB_TIME_MAX];
    fb_time_format_after(now, (int64_t)seconds, at);
    pthread_mutex_lock(&c->reg.lock);
    s->expires_ns = fb_time_monotonic_ns() + seconds * 1000000000ull;
    snprintf(s->expires_at, sizeof s->expires_at, "%s", at);
    pthread_mutex_unlock(&c->reg.lock);
    /* nodes.mode remote: the node destroys it at its own deadline. */
    fb_core_err err;
    if (core_remote(c) && s->sb && core_nodes_set_expiry(c, s, at, &err) < 0)
        fb_log("warn", NULL, "cannot move a task sandbox's deadline on its node",
               json_pack("{s:s, s:s}", "sandbox", s->id, "error", err.msg));
}

/* Waits for a running slot.  false: cancelled while queued. */
static bool take_slot(fb_core *c, core_task *t)
{
    pthread_mutex_lock(&c->tasks.lock);
    while (c->tasks.running >= c->cfg->tasks.max_running && !atomic_load(&t->cancel))
        pthread_cond_wait(&c->tasks.slots, &c->tasks.lock);
    bool ok = !atomic_load(&t->cancel);
    if (ok)
        c->tasks.running++;
    pthread_mutex_unlock(&c->tasks.lock);
    return ok;
}

static void give_slot(fb_core *c)
{
    pthread_mutex_lock(&c->tasks.lock);
    c->tasks.running--;
    pthread_cond_broadcast(&c->tasks.slots);
    pthread_mutex_unlock(&c->tasks.lock);
}

/* The first run's sandbox, created as the creator.  NULL: failed (why). */
static core_sandbox *make_sandbox(fb_core *c, core_task *t, char *why, size_t cap)
{
    fb_sandbox_spec spec = {.has_backend = true, .backend = t->backend, .task_id = t->id,
                            .network = t->has_network ? &t->network : NULL};
    fb_sandbox_info info;
    fb_core_err err = {0};
    if (fb_core_sandbox_create(c, &t->creator, &spec, &info, &err) < 0) {
        snprintf(why, cap, "the task's sandbox could not be created: %.400s", err.msg);
        return NULL;
    }
    core_sandbox *s = core_registry_get(&c->reg, info.id);
    if (!s) {
        snprintf(why, cap, "the task's sandbox was destroyed before the task started");
        return NULL;
    }
    pthread_mutex_lock(&c->tasks.lock);
    snprintf(t->sandbox_id, sizeof t->sandbox_id, "%s", info.id);
    pthread_mutex_unlock(&c->tasks.lock);
    return s;
}

static fb_llm_provider *make_provider(fb_core *c, core_task *t, char *why, size_t cap)
{
    const fb_config_provider *cp = fb_config_provider_find(c->cfg, t->provider);
    if (!cp) {
        snprintf(why, cap, "provider %s is no longer configured", t->provider);
        return NULL;
    }
    fb_llm_provider_opts opts = fb_config_provider_opts(cp);
    fb_llm_provider *p = NULL;
    fb_err e = {{0}};
    if (fb_llm_provider_new(&opts, &p, &e) != FB_LLM_OK) {
        snprintf(why, cap, "provider %s: %.400s", t->provider, e.msg);
        return NULL;
    }
    return p;
}

static void on_event(void *user, const char *type, json_t *data)
{
    core_task_run *r = user;
    core_task_emit(r->c, r->t, type, data);
}

/* One fb_engine_loop over the task's conversation. */
static void run_engine(fb_core *c, core_task *t, core_sandbox *s, fb_llm_provider *p, fb_engine_outcome *out)
{
    fb_engine_run er = {
        .provider = p,
        .model = t->model,
        .tools = t->tools,
        .sandbox = s->sb,
        .network = t->has_network,
        .limits = t->limits,
        .usage = &t->usage,
        .cancel = &t->cancel,
    };
    if (t->limits.timeout_s)
        er.deadline_ns = fb_time_monotonic_ns() + t->limits.timeout_s * 1000000000ull;
    core_task_run ctx = {c, t, &er};
    er.hooks = (fb_engine_hooks){.user = &ctx, .event = on_event, .authorize = core_task_authorize};
    /* The sandbox outlives the run by a minute at least: the reaper must
     * not take it mid-run. */
    sandbox_keep(c, s, t->limits.timeout_s + 60);
    if (fb_engine_loop(&er, &t->conv, out) < 0)
        out->state = FB_TASK_FAILED; /* invalid arguments: out->error says which */
}

/* Records the end of a run: state, result, error, the conversation, a
 * "state" event and the audit entry. */
static void finish(fb_core *c, core_task *t, fb_task_state state, const char *result, const char *error)
{
    char *res = result ? strdup(result) : NULL;
    pthread_mutex_lock(&c->tasks.lock);
    t->state = state;
    free(t->result);
    t->result = res;
    snprintf(t->error, sizeof t->error, "%s", error ? error : "");
    fb_time_now(t->finished_at);
    pthread_mutex_unlock(&c->tasks.lock);
    core_task_save(c, t, true);
    json_t *d = json_pack("{s:s}", "state", fb_task_state_name(state));
    if (d && error && error[0])
        json_object_set_new(d, "error", json_string(error));
    if (d && result)
        json_object_set_new(d, "result", json_string(result));
    core_task_emit(c, t, "state", d);
    fb_core_audit(c, &t->creator, "task", t->id, "finish", state == FB_TASK_SUCCEEDED ? "allowed" : "error",
                  error && error[0] ? error : fb_task_state_name(state));
}

/* After a run: keep a succeeded task's sandbox for follow-ups, destroy
 * any other's. */
static void release_sandbox(fb_core *c, core_task *t, core_sandbox *s, bool keep)
{
    uint64_t ttl = c->cfg->tasks.ttl_s;
    if (keep && ttl > 0) {
        sandbox_keep(c, s, ttl);
        pthread_mutex_lock(&c->tasks.lock);
        t->keep_until_ns = fb_time_monotonic_ns() + ttl * 1000000000ull;
        pthread_mutex_unlock(&c->tasks.lock);
    } else {
        char id[32];
        memcpy(id, s->id, sizeof id);
        if (core_registry_retire(c, s, "destroyed"))
            fb_core_audit(c, NULL, "sandbox", id, "destroy", "allowed", "its task ended");
    }
    core_registry_put(c, s);
}

void *core_task_main(void *arg)
{
    run_arg a = *(run_arg *)arg;
    free(arg);
    fb_core *c = a.c;
    core_task *t = a.t;
    char why[512] = "";
    pthread_mutex_lock(&c->tasks.lock);
    core_sandbox *s = t->sb; /* a follow-up's, handed over by fb_core_task_message */
    t->sb = NULL;
    t->keep_until_ns = 0;
    pthread_mutex_unlock(&c->tasks.lock);
    bool slot = take_slot(c, t);
    fb_engine_outcome out = {.state = FB_TASK_CANCELLED};
    bool ran = false;
    if (slot) {
        pthread_mutex_lock(&c->tasks.lock);
        if (!t->started_at[0])
            fb_time_now(t->started_at);
        pthread_mutex_unlock(&c->tasks.lock);
        core_task_set_state(c, t, FB_TASK_RUNNING);
        if (!s)
            s = make_sandbox(c, t, why, sizeof why);
        fb_llm_provider *p = s && !atomic_load(&t->cancel) ? make_provider(c, t, why, sizeof why) : NULL;
        if (p && t->conv.n == 0 &&
            (fb_llm_conv_set_system(&t->conv, t->system ? t->system : fb_engine_default_system()) < 0 ||
             fb_llm_conv_add_user(&t->conv, t->prompt) < 0))
            snprintf(why, sizeof why, "out of memory");
        else if (p) {
            run_engine(c, t, s, p, &out);
            ran = true;
        }
        fb_llm_provider_free(p);
        give_slot(c);
    }
    pthread_mutex_lock(&c->tasks.lock);
    bool requested = atomic_load(&t->cancel) && t->cancelled_by_request, stopping = c->tasks.stopping;
    pthread_mutex_unlock(&c->tasks.lock);
    if (!ran)
        out.state = atomic_load(&t->cancel) ? FB_TASK_CANCELLED : FB_TASK_FAILED;
    if (stopping && out.state == FB_TASK_CANCELLED && !requested) {
        /* Left unfinished in the store on purpose: see the top comment. */
    } else if (out.state == FB_TASK_CANCELLED) {
        finish(c, t, FB_TASK_CANCELLED, out.result, "cancelled by request");
    } else {
        finish(c, t, out.state, out.result, ran ? out.error : why);
    }
    if (s)
        release_sandbox(c, t, s, out.state == FB_TASK_SUCCEEDED && !stopping);
    if (!s || out.state != FB_TASK_SUCCEEDED) {
        pthread_mutex_lock(&c->tasks.lock);
        t->keep_until_ns = fb_time_monotonic_ns() + 60ull * 1000000000ull;
        pthread_mutex_unlock(&c->tasks.lock);
    }
    if (ran)
        fb_engine_outcome_free(&out);
    pthread_mutex_lock(&c->tasks.lock);
    t->thread_done = true;
    t->refs--;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&c->tasks.lock);
    return NULL;
}
