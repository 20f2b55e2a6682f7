/*
 * tasks.c - the task service's front (core.h, "tasks"): creating a task
 * (every check made before anything is stored or started), listing,
 * opening and reading tasks, cancelling them, follow-up messages, and the
 * tasks' life with the service's (start-up recovery, shutdown).
 *
 * A task's truth is its record in the store; while the task is in memory
 * (core_task, internal.h) its live fields are fresher, and every answer is
 * built from a record made from them (core_task_record), so a live task
 * and a stored one look the same.  The thread that runs a task is
 * task_run.c's, its transcript task_events.c's, its approvals
 * task_approvals.c's.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/utf8.h"
#include "core/internal.h"


void core_tasks_init(core_tasks *ts)
{
    memset(ts, 0, sizeof *ts);
    pthread_mutex_init(&ts->lock, NULL);
    pthread_cond_init(&ts->slots, NULL);
}

/* ---- records and JSON ----------------------------------------------------------------- */

static char *dump(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

static json_t *limits_json(const fb_engine_limits *l)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "max_turns", (json_int_t)l->max_turns, "max_tokens",
                     (json_int_t)l->max_tokens, "max_tool_calls", (json_int_t)l->max_tool_calls, "timeout_s",
                     (json_int_t)l->timeout_s);
}

static json_t *usage_json(const fb_engine_usage *u)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)u->input_tokens, "output_tokens",
                     (json_int_t)u->output_tokens, "turns", (json_int_t)u->turns, "tool_calls",
                     (json_int_t)u->tool_calls);
}

static json_t *network_json(const fb_egress_list *l)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < l->count; i++) {
        char text[FB_EGRESS_HOST_MAX + 16];
        fb_egress_entry_format(&l->entries[i], text, sizeof text);
        json_array_append_new(a, json_string(text));
    }
    return json_pack("{s:o}", "allow", a);
}

int core_task_record(const core_task *t, fb_task_record *r)
{
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "%s", t->id);
    snprintf(r->team_id, sizeof r->team_id, "%s", t->team_id);
    snprintf(r->user_id, sizeof r->user_id, "%s", t->user_id);
    snprintf(r->key_id, sizeof r->key_id, "%s", t->key_id);
    snprintf(r->provider, sizeof r->provider, "%s", t->provider);
    snprintf(r->model, sizeof r->model, "%s", t->model);
    snprintf(r->backend, sizeof r->backend, "%s", fb_backend_name(t->backend));
    snprintf(r->state, sizeof r->state, "%s", fb_task_state_name(t->state));
    snprintf(r->sandbox_id, sizeof r->sandbox_id, "%s", t->sandbox_id);
    snprintf(r->created_at, sizeof r->created_at, "%s", t->created_at);
    snprintf(r->started_at, sizeof r->started_at, "%s", t->started_at);
    snprintf(r->finished_at, sizeof r->finished_at, "%s", t->finished_at);
    r->prompt = strdup(t->prompt);
    r->system = t->system ? strdup(t->system) : NULL;
    r->tools = dump(fb_toolset_to_json(t->tools));
    r->approvals = dump(fb_toolset_to_json(t->held)); /* what is held: the org's forced ones too */
    r->network = t->has_network ? dump(network_json(&t->network)) : NULL;
    r->limits = dump(limits_json(&t->limits));
    r->usage = dump(usage_json(&t->usage));
    r->result = t->result ? strdup(t->result) : NULL;
    r->error = t->error[0] ? strdup(t->error) : NULL;
    if (!r->prompt || !r->tools || !r->approvals || !r->limits || !r->usage || (t->has_network && !r->network)) {
        fb_task_record_clear(r);
        return -1;
    }
    return 0;
}

void core_task_save(fb_core *c, core_task *t, bool with_conv)
{
    fb_task_record r;
    pthread_mutex_lock(&c->tasks.lock);
    int rc = core_task_record(t, &r);
    pthread_mutex_unlock(&c->tasks.lock);
    fb_err e = {{0}};
    if (rc == 0 && with_conv)
        r.conversation = dump(fb_llm_conv_to_json(&t->conv));
    if (rc < 0 || fb_store_task_update(c->store, &r, &e) < 0)
        fb_log("error", NULL, "cannot record the task", json_pack("{s:s, s:s}", "task", t->id,
                                                                 "error", rc < 0 ? "out of memory" : e.msg));
    if (rc == 0)
        fb_task_record_clear(&r);
}

static json_t *text_or_null(const char *s)
{
    json_t *j = s && s[0] ? json_string(s) : NULL;
    return j ? j : json_null();
}

static json_t *parsed_or(const char *text, json_t *fallback)
{
    json_t *j = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (j) {
        json_decref(fallback);
        return j;
    }
    return fallback;
}

/* The task JSON of core.h from a record. */
static json_t *task_json(const fb_task_record *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(r->id));
    json_object_set_new(o, "state", json_string(r->state));
    json_object_set_new(o, "prompt", text_or_null(r->prompt));
    json_object_set_new(o, "provider", json_string(r->provider));
    json_object_set_new(o, "model", text_or_null(r->model));
    json_object_set_new(o, "backend", json_string(r->backend));
    json_object_set_new(o, "sandbox_id", text_or_null(r->sandbox_id));
    json_object_set_new(o, "team_id", json_string(r->team_id));
    json_object_set_new(o, "created_by", json_string(r->user_id));
    json_object_set_new(o, "tools", parsed_or(r->tools, json_array()));
    json_object_set_new(o, "approvals", parsed_or(r->approvals, json_array()));
    json_object_set_new(o, "network", parsed_or(r->network, json_null()));
    json_object_set_new(o, "limits", parsed_or(r->limits, json_object()));
    json_object_set_new(o, "usage", parsed_or(r->usage, json_object()));
    json_object_set_new(o, "result", text_or_null(r->result));
    json_object_set_new(o, "error", text_or_null(r->error));
    json_object_set_new(o, "created_at", json_string(r->created_at));
    json_object_set_new(o, "started_at", text_or_null(r->started_at));
    json_object_set_new(o, "finished_at", text_or_null(r->finished_at));
    return o;
}

static json_t *live_json(fb_core *c, core_task *t)
{
    fb_task_record r;
    pthread_mutex_lock(&c->tasks.lock);
    int rc = core_task_record(t, &r);
    pthread_mutex_unlock(&c->tasks.lock);
    if (rc < 0)
        return NULL;
    json_t *j = task_json(&r);
    fb_task_record_clear(&r);
    return j;
}

/* ---- the live table ---------------------------------------------------------------------- */

static void task_free(core_task *t)
{
    for (size_t i = 0; i < t->nev; i++)
        json_decref(t->events[i]);
    free(t->events);
    free(t->prompt);
    free(t->system);
    free(t->result);
    fb_llm_conv_free(&t->conv);
    pthread_cond_destroy(&t->cond);
    free(t);
}

/* A live task by id, with a reference (lock held). */
static core_task *find_locked(core_tasks *ts, const char *id)
{
    for (size_t i = 0; i < ts->n; i++)
        if (strcmp(ts->items[i]->id, id) == 0) {
            ts->items[i]->refs++;
            return ts->items[i];
        }
    return NULL;
}

void core_task_put(fb_core *c, core_task *t)
{
    pthread_mutex_lock(&c->tasks.lock);
    t->refs--;
    pthread_mutex_unlock(&c->tasks.lock);
}

/* Lets go of tasks that have ended and whose keep time has passed: joined,
 * freed; the store answers for them from now on. */
static bool sweepable(const core_task *t, uint64_t now)
{
    return t->refs == 0 && fb_task_state_final(t->state) && (!t->has_thread || t->thread_done) && !t->sb &&
           now >= t->keep_until_ns;
}

static void sweep(fb_core *c)
{
    uint64_t now = fb_time_monotonic_ns();
    core_task *gone[16];
    size_t ngone = 0;
    bool any = false;
    pthread_mutex_lock(&c->tasks.lock);
    for (size_t i = 0; i < c->tasks.n && !any; i++)
        any = sweepable(c->tasks.items[i], now);
    pthread_mutex_unlock(&c->tasks.lock);
    if (!any)
        return;
    /* Readers of a task that has left memory read the store: everything
     * an ended task emitted must be written first. */
    core_journal_flush(c);
    pthread_mutex_lock(&c->tasks.lock);
    for (size_t i = 0; i < c->tasks.n && ngone < 16;) {
        core_task *t = c->tasks.items[i];
        if (sweepable(t, now)) {
            gone[ngone++] = t;
            c->tasks.items[i] = c->tasks.items[--c->tasks.n];
            continue;
        }
        i++;
    }
    pthread_mutex_unlock(&c->tasks.lock);
    for (size_t i = 0; i < ngone; i++) {
        if (gone[i]->has_thread)
            pthread_join(gone[i]->thread, NULL);
        task_free(gone[i]);
    }
}

/* ---- create ------------------------------------------------------------------------------- */

static int check_text(const char *name, const char *s, size_t max, bool required, fb_core_err *err)
{
    if (!s)
        return required ? fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"%s\" is required", name) : 0;
    size_t n = strlen(s);
    if ((required && n == 0) || n > max)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"%s\" must be 1 to %zu bytes", name, max);
    if (!fb_utf8_valid(s, n, false))
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"%s\" must be UTF-8 text", name);
    return 0;
}

static int check_model(const char *m, fb_core_err *err)
{
    size_t n = m ? strlen(m) : 0;
    if (n == 0 || n >= FB_TASK_MODEL_MAX)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"model\" must be 1 to %d bytes", FB_TASK_MODEL_MAX - 1);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)m[i] < 0x20 || m[i] == 0x7f)
            return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"model\" must not contain control characters");
    return 0;
}

/* Everything about the request that needs no decision. */
static int check_spec(fb_core *c, const fb_task_spec *spec, fb_core_err *err)
{
    if (check_text("prompt", spec->prompt, FB_TASK_PROMPT_MAX, true, err) < 0 ||
        check_text("system", spec->system, FB_TASK_PROMPT_MAX, false, err) < 0 || check_model(spec->model, err) < 0)
        return -1;
    if (!spec->provider || !spec->provider[0])
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"provider\" is required");
    if (!fb_config_provider_find(c->cfg, spec->provider)) {
        char shown[72];
        size_t i = 0;
        for (; spec->provider[i] && i < 64; i++)
            shown[i] = (unsigned char)spec->provider[i] >= 0x20 && spec->provider[i] != 0x7f ? spec->provider[i] : '?';
        shown[i] = '\0';
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "unknown provider '%s' (providers: in forgebox.yaml names them)",
                            shown);
    }
    return 0;
}

/* The decisions: tools and approvals within the creator's grants, budgets
 * within the maxima, the network grant.  Fills t's grant fields. */
static int decide_spec(fb_core *c, fb_caller *caller, const fb_task_spec *spec, core_task *t, fb_core_err *err)
{
    const fb_config *cfg = c->cfg;
    fb_decision d;
    t->tools = spec->has_tools ? spec->tools : fb_policy_task_default_tools(&caller->who);
    t->approvals = spec->approvals;
    if (fb_policy_task_tools(&caller->who, t->tools, t->approvals, &d) != FB_ALLOW) {
        fb_core_audit(c, caller, "permission", "tasks", caller->action, "denied", d.reason);
        return fb_core_fail(err, FB_CORE_FORBIDDEN, "%s", d.reason);
    }
    t->held = (t->approvals | cfg->tasks.require_approval) & t->tools;
    fb_task_budget req = {spec->limits.max_turns, spec->limits.max_tokens, spec->limits.max_tool_calls,
                          spec->limits.timeout_s};
    fb_task_budget def = {cfg->tasks.default_max_turns, cfg->tasks.default_max_tokens,
                          cfg->tasks.default_max_tool_calls, cfg->tasks.default_timeout_s};
    fb_task_budget max = {cfg->tasks.max_turns, cfg->tasks.max_tokens, cfg->tasks.max_tool_calls,
                          cfg->tasks.max_timeout_s};
    fb_task_budget out;
    if (fb_policy_task_budget(&req, &def, &max, &out, &d) != FB_ALLOW)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "%s", d.reason);
    t->limits = (fb_engine_limits){out.max_turns, out.max_tokens, out.max_tool_calls, out.timeout_s};
    if (spec->network) {
        if (fb_core_permit(c, caller, FB_PERM_NETWORK_INTERNET, "tasks", caller->who.team_id, err) < 0)
            return -1;
        if (fb_egress_grant_check(spec->network, &cfg->network.allow, &cfg->network.deny, &d) != FB_ALLOW) {
            fb_core_audit(c, caller, "network", "tasks", "grant", "denied", d.reason);
            return fb_core_fail(err, FB_CORE_FORBIDDEN, "%s", d.reason);
        }
        t->has_network = true;
        t->network = *spec->network;
    }
    return 0;
}

static core_task *task_new(fb_caller *caller, const fb_task_spec *spec, const fb_config *cfg)
{
    core_task *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    core_new_id("tk_", t->id, sizeof t->id);
    snprintf(t->team_id, sizeof t->team_id, "%s", caller->who.team_id);
    snprintf(t->user_id, sizeof t->user_id, "%s", caller->who.user_id);
    snprintf(t->key_id, sizeof t->key_id, "%s", caller->who.key_id);
    t->creator = *caller;
    snprintf(t->creator.action, sizeof t->creator.action, "task %s", t->id);
    snprintf(t->provider, sizeof t->provider, "%s", spec->provider);
    snprintf(t->model, sizeof t->model, "%s", spec->model);
    t->has_backend = spec->has_backend;
    t->backend = spec->has_backend ? spec->backend : cfg->sandbox.backend;
    t->prompt = strdup(spec->prompt);
    t->system = spec->system ? strdup(spec->system) : NULL;
    fb_time_now(t->created_at);
    t->state = FB_TASK_QUEUED;
    fb_llm_conv_init(&t->conv);
    pthread_cond_init(&t->cond, NULL);
    atomic_init(&t->cancel, false);
    if (!t->prompt || (spec->system && !t->system)) {
        task_free(t);
        return NULL;
    }
    return t;
}

int fb_core_task_create(fb_core *c, fb_caller *caller, const fb_task_spec *spec, json_t **out, fb_core_err *err)
{
    *out = NULL;
    if (fb_core_permit(c, caller, FB_PERM_TASKS_CREATE, "tasks", caller->who.team_id, err) < 0 ||
        fb_core_permit(c, caller, FB_PERM_SANDBOXES_CREATE, "tasks", caller->who.team_id, err) < 0 ||
        check_spec(c, spec, err) < 0)
        return -1;
    if (c->stopping || c->tasks.stopping)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the gateway is shutting down");
    core_task *t = task_new(caller, spec, c->cfg);
    if (!t)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    if (decide_spec(c, caller, spec, t, err) < 0) {
        task_free(t);
        return -1;
    }
    sweep(c);
    fb_task_record r;
    fb_err e = {{0}};
    if (core_task_record(t, &r) < 0) {
        task_free(t);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    }
    int rc = fb_store_task_insert(c->store, &r, &e);
    fb_task_record_clear(&r);
    if (rc < 0) {
        task_free(t);
        fb_log("error", caller->request_id, "cannot record a task", json_pack("{s:s}", "error", e.msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    if (fb_core_audit(c, caller, "task", t->id, "create", "allowed", t->provider) < 0) {
        t->state = FB_TASK_FAILED;
        snprintf(t->error, sizeof t->error, "the audit log cannot be written");
        fb_task_record fr;
        if (core_task_record(t, &fr) == 0) {
            fb_store_task_update(c->store, &fr, &e);
            fb_task_record_clear(&fr);
        }
        task_free(t);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "the audit log cannot be written; refusing to act unaudited");
    }
    pthread_mutex_lock(&c->tasks.lock);
    if (c->tasks.n == c->tasks.cap) {
        size_t ncap = c->tasks.cap ? c->tasks.cap * 2 : 16;
        core_task **ni = realloc(c->tasks.items, ncap * sizeof *ni);
        if (!ni) {
            pthread_mutex_unlock(&c->tasks.lock);
            task_free(t);
            return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
        }
        c->tasks.items = ni;
        c->tasks.cap = ncap;
    }
    c->tasks.items[c->tasks.n++] = t;
    t->refs++; /* ours, until the answer is written */
    pthread_mutex_unlock(&c->tasks.lock);
    core_task_emit(c, t, "message", json_pack("{s:s, s:s}", "role", "user", "content", t->prompt));
    core_task_emit(c, t, "state", json_pack("{s:s}", "state", "queued"));
    if (core_task_start(c, t, err) < 0) {
        core_task_put(c, t);
        return -1;
    }
    *out = live_json(c, t);
    core_task_put(c, t);
    return *out ? 0 : fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
}

/* ---- list, open, get ------------------------------------------------------------------------ */

int fb_core_task_list(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err)
{
    *out = NULL;
    if (fb_core_permit(c, caller, FB_PERM_TASKS_READ, "tasks", caller->who.team_id, err) < 0)
        return -1;
    sweep(c);
    fb_task_record *recs = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    if (fb_store_task_list(c->store, fb_policy_sees_all_teams(&caller->who) ? NULL : caller->who.team_id, &recs, &n,
                           &e) < 0) {
        fb_log("error", caller->request_id, "cannot list tasks", json_pack("{s:s}", "error", e.msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        pthread_mutex_lock(&c->tasks.lock);
        core_task *t = find_locked(&c->tasks, recs[i].id);
        pthread_mutex_unlock(&c->tasks.lock);
        json_t *j = t ? live_json(c, t) : task_json(&recs[i]);
        if (t)
            core_task_put(c, t);
        if (j)
            json_array_append_new(arr, j);
    }
    fb_task_records_free(recs, n);
    *out = json_pack("{s:o}", "tasks", arr ? arr : json_array());
    return *out ? 0 : fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
}

int fb_core_task_open(fb_core *c, fb_caller *caller, const char *id, fb_perm perm, fb_task_ref **out,
                      fb_core_err *err)
{
    *out = NULL;
    fb_task_ref *ref = calloc(1, sizeof *ref);
    if (!ref)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    bool known = false;
    if (id && strlen(id) < sizeof ref->id) {
        pthread_mutex_lock(&c->tasks.lock);
        ref->t = find_locked(&c->tasks, id);
        if (ref->t) {
            snprintf(ref->team_id, sizeof ref->team_id, "%s", ref->t->team_id);
            snprintf(ref->user_id, sizeof ref->user_id, "%s", ref->t->user_id);
        }
        pthread_mutex_unlock(&c->tasks.lock);
        fb_task_record r;
        fb_err e = {{0}};
        if (ref->t) {
            known = true;
        } else if (fb_store_task_get(c->store, id, &r, &e) == 0) {
            known = true;
            snprintf(ref->team_id, sizeof ref->team_id, "%s", r.team_id);
            snprintf(ref->user_id, sizeof ref->user_id, "%s", r.user_id);
            fb_task_record_clear(&r);
        }
        snprintf(ref->id, sizeof ref->id, "%s", id);
    }
    if (!known) {
        free(ref);
        fb_core_audit(c, caller, "permission", id ? id : "", caller->action, "denied", "no such task");
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    }
    /* A task decision is about this task: never a standing grant. */
    fb_perm saved = caller->granted;
    caller->granted = 0;
    int rc = fb_core_permit(c, caller, perm, ref->id, ref->team_id, err);
    caller->granted = saved;
    if (rc < 0) {
        fb_core_task_put(c, ref);
        return -1;
    }
    ref->perm = perm;
    *out = ref;
    return 0;
}

void fb_core_task_put(fb_core *c, fb_task_ref *ref)
{
    if (!ref)
        return;
    if (ref->t)
        core_task_put(c, ref->t);
    free(ref);
}

int fb_core_task_get(fb_core *c, fb_caller *caller, fb_task_ref *ref, json_t **out, fb_core_err *err)
{
    (void)caller;
    *out = NULL;
    if (ref->t) {
        *out = live_json(c, ref->t);
    } else {
        fb_task_record r;
        fb_err e = {{0}};
        if (fb_store_task_get(c->store, ref->id, &r, &e) < 0) {
            fb_log("error", NULL, "cannot read a task", json_pack("{s:s, s:s}", "task", ref->id, "error", e.msg));
            return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
        }
        *out = task_json(&r);
        fb_task_record_clear(&r);
    }
    return *out ? 0 : fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
}

/* ---- cancel, follow-up -------------------------------------------------------------------------- */

/* Waits (bounded) until t's thread has recorded the end of its run. */
static void wait_ended(fb_core *c, core_task *t, int seconds)
{
    uint64_t until = fb_time_monotonic_ns() + (uint64_t)seconds * 1000000000ull;
    pthread_mutex_lock(&c->tasks.lock);
    while (!(fb_task_state_final(t->state) && t->thread_done) && fb_time_monotonic_ns() < until) {
        core_task_timedwait(c, t, 100);
    }
    pthread_mutex_unlock(&c->tasks.lock);
}

int fb_core_task_cancel(fb_core *c, fb_caller *caller, fb_task_ref *ref, json_t **out, fb_core_err *err)
{
    *out = NULL;
    core_task *t = ref->t;
    bool running = false;
    char state[24] = "";
    if (t) {
        pthread_mutex_lock(&c->tasks.lock);
        running = !fb_task_state_final(t->state) || !t->thread_done;
        snprintf(state, sizeof state, "%s", fb_task_state_name(t->state));
        if (running) {
            t->cancelled_by_request = true;
            atomic_store(&t->cancel, true);
            pthread_cond_broadcast(&t->cond);
            pthread_cond_broadcast(&c->tasks.slots);
        }
        pthread_mutex_unlock(&c->tasks.lock);
    }
    if (!running) {
        fb_core_audit(c, caller, "task", ref->id, "cancel", "denied", "the task has already ended");
        return fb_core_fail(err, FB_CORE_CONFLICT, "the task has already ended%s%s%s", state[0] ? " (" : "", state,
                            state[0] ? ")" : "");
    }
    fb_core_audit(c, caller, "task", ref->id, "cancel", "allowed", "cancelled by request");
    /* Killing the sandbox ends a tool call in flight at once. */
    pthread_mutex_lock(&c->tasks.lock);
    char sbid[32];
    snprintf(sbid, sizeof sbid, "%s", t->sandbox_id);
    pthread_mutex_unlock(&c->tasks.lock);
    core_sandbox *s = sbid[0] ? core_registry_get(&c->reg, sbid) : NULL;
    if (s) {
        if (core_registry_retire(c, s, "destroyed"))
            fb_core_audit(c, caller, "sandbox", sbid, "destroy", "allowed", "its task was cancelled");
        core_registry_put(c, s);
    }
    wait_ended(c, t, 10);
    return fb_core_task_get(c, caller, ref, out, err);
}

int fb_core_task_message(fb_core *c, fb_caller *caller, fb_task_ref *ref, const char *content, json_t **out,
                         fb_core_err *err)
{
    *out = NULL;
    if (!(ref->perm & FB_PERM_TASKS_CREATE))
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: a follow-up with a reference not opened for it");
    if (check_text("content", content, FB_TASK_PROMPT_MAX, true, err) < 0)
        return -1;
    core_task *t = ref->t;
    const char *why = NULL;
    core_sandbox *s = NULL;
    if (t) {
        /* Claimed under the lock (QUEUED), so that two follow-ups cannot
         * both start a run, nor the sweep let the task go meanwhile. */
        pthread_mutex_lock(&c->tasks.lock);
        /* A task shows succeeded as soon as its outcome is recorded; its
         * thread then hands the sandbox back and ends.  A follow-up sent
         * in between waits for that (bounded) rather than being refused. */
        uint64_t until = fb_time_monotonic_ns() + 10ull * 1000000000ull;
        while (t->state == FB_TASK_SUCCEEDED && !t->thread_done && fb_time_monotonic_ns() < until)
            core_task_timedwait(c, t, 100);
        if (t->state != FB_TASK_SUCCEEDED || !t->thread_done)
            why = t->state == FB_TASK_SUCCEEDED || !fb_task_state_final(t->state)
                      ? "the task is still running"
                      : "only a succeeded task takes follow-up messages";
        else
            t->state = FB_TASK_QUEUED;
        pthread_mutex_unlock(&c->tasks.lock);
        if (!why && !(s = core_registry_get(&c->reg, t->sandbox_id))) {
            why = "the task's sandbox is gone (tasks.ttl_s has passed)";
            pthread_mutex_lock(&c->tasks.lock);
            t->state = FB_TASK_SUCCEEDED;
            pthread_mutex_unlock(&c->tasks.lock);
        }
    } else {
        why = "the task's sandbox is gone (tasks.ttl_s has passed)";
    }
    if (why) {
        fb_core_audit(c, caller, "task", ref->id, "message", "denied", why);
        return fb_core_fail(err, FB_CORE_CONFLICT, "%s", why);
    }
    if (t->has_thread)
        pthread_join(t->thread, NULL);
    pthread_mutex_lock(&c->tasks.lock);
    t->has_thread = false;
    int added = fb_llm_conv_add_user(&t->conv, content);
    if (added == 0) {
        t->sb = s;
        t->error[0] = '\0';
        t->finished_at[0] = '\0';
        free(t->result);
        t->result = NULL;
        atomic_store(&t->cancel, false);
        t->cancelled_by_request = false;
    } else {
        t->state = FB_TASK_SUCCEEDED;
    }
    pthread_mutex_unlock(&c->tasks.lock);
    if (added < 0) {
        core_registry_put(c, s);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    }
    fb_core_audit(c, caller, "task", ref->id, "message", "allowed", "follow-up message");
    core_task_emit(c, t, "message", json_pack("{s:s, s:s}", "role", "user", "content", content));
    if (core_task_start(c, t, err) < 0)
        return -1;
    return fb_core_task_get(c, caller, ref, out, err);
}

/* ---- life ---------------------------------------------------------------------------------------- */

void core_tasks_recover(fb_core *c)
{
    static const char reason[] = "the gateway restarted while the task was running";
    char (*ids)[FB_ID_MAX] = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    if (fb_store_task_list_unfinished(c->store, &ids, &n, &e) < 0) {
        fb_log("error", NULL, "cannot list this node's unfinished tasks", json_pack("{s:s}", "error", e.msg));
        return;
    }
    char now[FB_TIME_MAX];
    fb_time_now(now);
    for (size_t i = 0; i < n; i++) {
        fb_task_record r;
        if (fb_store_task_get(c->store, ids[i], &r, &e) < 0)
            continue;
        size_t expired = 0;
        fb_store_task_approval_expire_all(c->store, r.id, now, &expired, &e);
        snprintf(r.state, sizeof r.state, "failed");
        snprintf(r.finished_at, sizeof r.finished_at, "%s", now);
        free(r.error);
        r.error = strdup(reason);
        free(r.conversation);
        r.conversation = NULL;
        if (fb_store_task_update(c->store, &r, &e) < 0)
            fb_log("error", NULL, "cannot fail a task", json_pack("{s:s, s:s}", "task", r.id, "error", e.msg));
        core_task_emit_stored(c, r.id, "state", json_pack("{s:s, s:s}", "state", "failed", "error", reason));
        fb_core_audit(c, NULL, "task", r.id, "fail", "allowed", reason);
        fb_log("warn", NULL, "failed a task left running", json_pack("{s:s}", "task", r.id));
        fb_task_record_clear(&r);
    }
    free(ids);
}

void core_tasks_shutdown(fb_core *c)
{
    pthread_mutex_lock(&c->tasks.lock);
    c->tasks.stopping = true;
    for (size_t i = 0; i < c->tasks.n; i++) {
        atomic_store(&c->tasks.items[i]->cancel, true);
        pthread_cond_broadcast(&c->tasks.items[i]->cond);
    }
    pthread_cond_broadcast(&c->tasks.slots);
    pthread_mutex_unlock(&c->tasks.lock);
    /* The engine gives up within about a second of a cancel; give threads
     * (a sandbox booting, say) up to 30 s, then leave the stragglers. */
    for (int round = 0; round < 300; round++) {
        bool busy = false;
        pthread_mutex_lock(&c->tasks.lock);
        for (size_t i = 0; i < c->tasks.n; i++)
            busy |= c->tasks.items[i]->has_thread && !c->tasks.items[i]->thread_done;
        pthread_mutex_unlock(&c->tasks.lock);
        if (!busy)
            break;
        usleep(100000);
    }
    pthread_mutex_lock(&c->tasks.lock);
    for (size_t i = 0; i < c->tasks.n; i++) {
        core_task *t = c->tasks.items[i];
        if (t->has_thread && t->thread_done) {
            pthread_join(t->thread, NULL);
            t->has_thread = false;
        }
        if (t->sb) {
            core_sandbox *s = t->sb;
            t->sb = NULL;
            pthread_mutex_unlock(&c->tasks.lock);
            core_registry_put(c, s);
            pthread_mutex_lock(&c->tasks.lock);
        }
    }
    pthread_mutex_unlock(&c->tasks.lock);
}

void core_tasks_free(core_tasks *ts)
{
    for (size_t i = 0; i < ts->n; i++)
        if (!ts->items[i]->has_thread) /* a straggler still runs: leave it its memory */
            task_free(ts->items[i]);
    free(ts->items);
    ts->items = NULL;
    ts->n = 0;
}
