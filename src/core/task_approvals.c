/*
 * task_approvals.c - the decision of every tool call a task's model makes
 * (the engine's authorize hook) and the approvals of held calls (core.h,
 * "tasks").
 *
 * Each call is decided by src/policy (fb_policy_task_call: granted to the
 * task?  held for a person?) and audited as a "task.tool" entry naming the
 * task (resource), the tool (action "tool:NAME") and the call id (reason).
 * A held call becomes an approval: stored pending, announced as an
 * "approval_required" event, the task waiting_approval, and the task's
 * thread waits on the task's condition variable until a person decides
 * (fb_core_task_decide), the task is cancelled, its deadline passes or
 * tasks.approval_timeout_s does (expired: treated as denied).  Deciding
 * and expiring both go through the store's "only while pending" update
 * under the tasks lock, so exactly one of them wins.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "core/internal.h"

/* The tool's name as audit entries show it. */
static void tool_label(int tool, char *out, size_t cap)
{
    const char *n = tool >= 0 ? fb_tool_name((fb_tool)tool) : NULL;
    snprintf(out, cap, "tool:%s", n ? n : "?");
}

static void audit_call(fb_core *c, core_task *t, int tool, const char *call_id, const char *outcome,
                       const char *why)
{
    char action[48], reason[512];
    tool_label(tool, action, sizeof action);
    snprintf(reason, sizeof reason, "call %.120s: %s", call_id ? call_id : "", why);
    fb_core_audit(c, &t->creator, "task.tool", t->id, action, outcome, reason);
}

/* Waits for the approval's end: 1 approved, 2 denied, 3 expired (timeout
 * or deadline), 4 cancelled. */
static int wait_decision(fb_core *c, core_task *t, const char *aid, uint64_t expiry_ns, uint64_t deadline_ns)
{
    int result = 0;
    pthread_mutex_lock(&c->tasks.lock);
    while (!result) {
        uint64_t now = fb_time_monotonic_ns();
        if (t->decision)
            result = t->decision;
        else if (atomic_load(&t->cancel))
            result = 4;
        else if (now >= expiry_ns || (deadline_ns && now >= deadline_ns))
            result = 3;
        if (result)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cond, &c->tasks.lock, &ts);
    }
    if (result >= 3) {
        /* Expired or cancelled: recorded as expired unless a person's
         * decision reached the store first (then it stands). */
        char at[FB_TIME_MAX];
        fb_time_now(at);
        fb_err e = {{0}};
        int rc = fb_store_task_approval_decide(c->store, t->id, aid, "expired", "",
                                               result == 4 ? "the task was cancelled" : "no decision in time", at,
                                               &e);
        if (rc < 0 && t->decision)
            result = t->decision;
    }
    t->waiting[0] = '\0';
    t->decision = 0;
    pthread_mutex_unlock(&c->tasks.lock);
    return result;
}

/* A held call: the approval, the wait, its resolution.  Fills reason when
 * it is not approved. */
static fb_verdict hold(core_task_run *r, const fb_llm_tool_call *call, int tool, char *reason, size_t cap)
{
    fb_core *c = r->c;
    core_task *t = r->t;
    uint64_t timeout = c->cfg->tasks.approval_timeout_s;
    fb_task_approval_record a;
    memset(&a, 0, sizeof a);
    core_new_id("ap_", a.id, sizeof a.id);
    snprintf(a.task_id, sizeof a.task_id, "%s", t->id);
    snprintf(a.call_id, sizeof a.call_id, "%s", call->id ? call->id : "");
    snprintf(a.tool, sizeof a.tool, "%s", fb_tool_name((fb_tool)tool));
    struct timespec now = fb_time_now_ts();
    fb_time_format(&now, a.created_at);
    fb_time_format_after(now, (int64_t)timeout, a.expires_at);
    a.input = call->input ? json_dumps(call->input, JSON_COMPACT) : strdup("null");
    fb_err e = {{0}};
    int rc = a.input ? fb_store_task_approval_insert(c->store, &a, &e) : -1;
    if (rc < 0) {
        free(a.input);
        audit_call(c, t, tool, call->id, "error", "the approval could not be recorded");
        snprintf(reason, cap, "the call needed a person's approval, which could not be recorded");
        return FB_DENY;
    }
    char why[160];
    snprintf(why, sizeof why, "held for a person's approval (approval %s)", a.id);
    audit_call(c, t, tool, call->id, "allowed", why);
    pthread_mutex_lock(&c->tasks.lock);
    snprintf(t->waiting, sizeof t->waiting, "%s", a.id);
    t->decision = 0;
    pthread_mutex_unlock(&c->tasks.lock);
    core_task_set_state(c, t, FB_TASK_WAITING_APPROVAL);
    json_t *input = call->input ? json_deep_copy(call->input) : json_null();
    core_task_emit(c, t, "approval_required",
                   json_pack("{s:s, s:s, s:s, s:o, s:s}", "approval_id", a.id, "call_id", a.call_id, "tool", a.tool,
                             "input", input ? input : json_null(), "expires_at", a.expires_at));
    free(a.input);
    int d = wait_decision(c, t, a.id, fb_time_monotonic_ns() + timeout * 1000000000ull, r->run->deadline_ns);
    static const char *const names[] = {"", "approved", "denied", "expired", "expired"};
    json_t *res = json_pack("{s:s, s:s, s:s}", "approval_id", a.id, "call_id", a.call_id, "decision", names[d]);
    pthread_mutex_lock(&c->tasks.lock);
    char by[FB_ID_MAX], said[256];
    snprintf(by, sizeof by, "%s", t->decided_by);
    snprintf(said, sizeof said, "%s", t->decide_reason);
    t->decided_by[0] = t->decide_reason[0] = '\0';
    pthread_mutex_unlock(&c->tasks.lock);
    if (res && d <= 2 && by[0])
        json_object_set_new(res, "decided_by", json_string(by));
    if (res && said[0])
        json_object_set_new(res, "reason", json_string(said));
    core_task_emit(c, t, "approval_resolved", res);
    if (d != 4)
        core_task_set_state(c, t, FB_TASK_RUNNING);
    if (d == 1) {
        snprintf(why, sizeof why, "approved by %s (approval %s)", by, a.id);
        audit_call(c, t, tool, call->id, "allowed", why);
        return FB_ALLOW;
    }
    if (d == 2)
        snprintf(reason, cap, "a person denied this call%s%s", said[0] ? ": " : "", said);
    else if (d == 3)
        snprintf(reason, cap, "nobody approved this call in time, so it was denied");
    else
        snprintf(reason, cap, "the task was cancelled");
    snprintf(why, sizeof why, "%s (approval %s)", d == 2 ? "denied by a person" : d == 3 ? "approval expired"
                                                                                     : "task cancelled", a.id);
    audit_call(c, t, tool, call->id, "denied", why);
    return FB_DENY;
}

fb_verdict core_task_authorize(void *user, const fb_llm_tool_call *call, int tool, char *reason, size_t cap)
{
    core_task_run *r = user;
    fb_decision d;
    fb_verdict v = fb_policy_task_call(r->t->tools, r->t->held, tool, call->name, &d);
    if (v == FB_NEEDS_APPROVAL)
        return hold(r, call, tool, reason, cap);
    audit_call(r->c, r->t, tool, call->id, v == FB_ALLOW ? "allowed" : "denied", d.reason);
    if (v != FB_ALLOW) {
        snprintf(reason, cap, "%s", d.reason);
        return FB_DENY;
    }
    return FB_ALLOW;
}

/* ---- the routes' side ---------------------------------------------------------------------- */

static json_t *str_or_null(const char *s)
{
    json_t *j = s && s[0] ? json_string(s) : NULL;
    return j ? j : json_null();
}

static json_t *approval_json(const fb_task_approval_record *a)
{
    json_t *input = json_loads(a->input, JSON_DECODE_ANY, NULL);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "id", a->id, "task_id", a->task_id, "call_id",
                          a->call_id, "tool", a->tool, "input", input ? input : json_null(), "state", a->state,
                          "created_at", a->created_at, "expires_at", a->expires_at);
    if (o) {
        json_object_set_new(o, "decided_at", str_or_null(a->decided_at));
        json_object_set_new(o, "decided_by", str_or_null(a->decided_by));
        json_object_set_new(o, "reason", str_or_null(a->reason));
    }
    return o;
}

/* The task's approvals as JSON: all of them, or the one called only
 * (NULL and *found false when there is none). */
static int approvals_json(fb_core *c, const char *task_id, const char *only, json_t **out, fb_core_err *err)
{
    fb_task_approval_record *list = NULL;
    size_t n = 0;
    fb_err e = {{0}};
    *out = NULL;
    if (fb_store_task_approval_list(c->store, task_id, &list, &n, &e) < 0) {
        fb_log("error", NULL, "cannot list approvals", json_pack("{s:s, s:s}", "task", task_id, "error", e.msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n && arr; i++) {
        if (only && strcmp(list[i].id, only) == 0)
            *out = approval_json(&list[i]);
        else if (!only)
            json_array_append_new(arr, approval_json(&list[i]));
    }
    fb_task_approvals_free(list, n);
    if (!only)
        *out = json_pack("{s:o}", "approvals", arr ? arr : json_array());
    else
        json_decref(arr);
    return 0;
}

int fb_core_task_approvals(fb_core *c, fb_caller *caller, fb_task_ref *ref, json_t **out, fb_core_err *err)
{
    (void)caller;
    if (approvals_json(c, ref->id, NULL, out, err) < 0)
        return -1;
    return *out ? 0 : fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
}

int fb_core_task_decide(fb_core *c, fb_caller *caller, fb_task_ref *ref, const char *approval_id, bool approve,
                        const char *reason, json_t **out, fb_core_err *err)
{
    *out = NULL;
    if (!(ref->perm & FB_PERM_TASKS_APPROVE))
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: a decision with a reference not opened for it");
    if (reason && (strlen(reason) > 200 || !fb_utf8_valid(reason, strlen(reason), false)))
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"reason\" must be UTF-8 text of at most 200 bytes");
    fb_decision d;
    if (fb_policy_task_approver(&caller->who, ref->team_id, ref->user_id, c->cfg->tasks.self_approval, &d) !=
        FB_ALLOW) {
        fb_core_audit(c, caller, "task.approval", ref->id, approve ? "approve" : "deny", "denied", d.reason);
        return fb_core_fail(err, FB_CORE_FORBIDDEN, "%s", d.reason);
    }
    char at[FB_TIME_MAX];
    fb_time_now(at);
    fb_err e = {{0}};
    const char *aid = approval_id ? approval_id : "";
    /* Under the tasks lock, so that the waiting thread's expiry and this
     * decision cannot both be recorded. */
    pthread_mutex_lock(&c->tasks.lock);
    int rc = fb_store_task_approval_decide(c->store, ref->id, aid, approve ? "approved" : "denied",
                                           caller->who.user_id, reason && reason[0] ? reason : NULL, at, &e);
    if (rc == 0 && ref->t && strcmp(ref->t->waiting, aid) == 0) {
        ref->t->decision = approve ? 1 : 2;
        snprintf(ref->t->decided_by, sizeof ref->t->decided_by, "%s", caller->who.user_id);
        snprintf(ref->t->decide_reason, sizeof ref->t->decide_reason, "%s", reason ? reason : "");
        pthread_cond_broadcast(&ref->t->cond);
    }
    pthread_mutex_unlock(&c->tasks.lock);
    char why[160];
    snprintf(why, sizeof why, "approval %.40s", aid);
    if (rc == FB_STORE_ENOTFOUND || rc == FB_STORE_ECONFLICT) {
        fb_core_audit(c, caller, "task.approval", ref->id, approve ? "approve" : "deny", "denied",
                      rc == FB_STORE_ENOTFOUND ? "no such approval" : "no longer pending");
        return rc == FB_STORE_ENOTFOUND ? fb_core_fail(err, FB_CORE_NOT_FOUND, "no such approval")
                                        : fb_core_fail(err, FB_CORE_CONFLICT, "the approval is no longer pending");
    }
    if (rc < 0) {
        fb_log("error", caller->request_id, "cannot record a decision", json_pack("{s:s}", "error", e.msg));
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal error (see the server log)");
    }
    fb_core_audit(c, caller, "task.approval", ref->id, approve ? "approve" : "deny", "allowed", why);
    if (approvals_json(c, ref->id, aid, out, err) < 0)
        return -1;
    return *out ? 0 : fb_core_fail(err, FB_CORE_INTERNAL, "the decided approval cannot be read back");
}
