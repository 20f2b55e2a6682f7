/*
 * tasks.c - the rules of layer 4 (policy.h, "tasks"): which tools a
 * creator may give a task, how each tool call the model makes is decided,
 * who may decide a held call, and the budgets a task runs with.
 *
 * Pure functions of their arguments like the rest of src/policy: the task
 * service (src/core/tasks*.c) hands over the principal, the task's grant
 * and the organisation's settings, audits what these return and acts on
 * it.  A task's grant can only narrow what its creator holds, and nothing
 * the model says reaches these rules except the tool name it asked for,
 * which is only compared and shown sanitised.
 */
#include <stdio.h>
#include <string.h>

#include "policy/policy.h"
#include "policy/say.h"

fb_toolset fb_policy_task_grantable(const fb_principal *p)
{
    fb_perm eff = fb_policy_effective(p);
    fb_toolset set = 0;
    for (int t = 0; t < FB_TOOL_COUNT; t++)
        if ((eff & fb_tool_perm((fb_tool)t)) == fb_tool_perm((fb_tool)t))
            set |= FB_TOOLSET_OF(t);
    return set;
}

fb_toolset fb_policy_task_default_tools(const fb_principal *p)
{
    const fb_toolset wanted = FB_TOOLSET_OF(FB_TOOL_BASH) | FB_TOOLSET_OF(FB_TOOL_FILE_READ) |
                              FB_TOOLSET_OF(FB_TOOL_FILE_WRITE) | FB_TOOLSET_OF(FB_TOOL_FILE_EDIT) |
                              FB_TOOLSET_OF(FB_TOOL_GLOB) | FB_TOOLSET_OF(FB_TOOL_GREP);
    return wanted & fb_policy_task_grantable(p);
}

fb_verdict fb_policy_task_tools(const fb_principal *p, fb_toolset tools, fb_toolset approvals, fb_decision *out)
{
    if (!p || !fb_policy_consistent(p))
        return fb_policy_say(out, FB_DENY, "inconsistent principal");
    fb_toolset asked = tools | approvals;
    if (asked & ~FB_TOOLSET_ALL)
        return fb_policy_say(out, FB_DENY, "unknown tool in the request");
    fb_toolset may = fb_policy_task_grantable(p);
    for (int t = 0; t < FB_TOOL_COUNT; t++) {
        if (!(asked & FB_TOOLSET_OF(t)) || (may & FB_TOOLSET_OF(t)))
            continue;
        fb_perm need = fb_tool_perm((fb_tool)t);
        bool role_has = (fb_role_perms(p->role) & need) == need;
        return fb_policy_say(out, FB_DENY, "tool %s needs %s, which this %s does not hold", fb_tool_name((fb_tool)t),
                             fb_perm_name(need), role_has ? "key" : "role");
    }
    return fb_policy_say(out, FB_ALLOW, "allowed");
}

/* A model's tool name as reasons show it: printable ASCII, at most 48. */
static void shown_name(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; in && in[i] && o + 1 < cap && i < 48; i++)
        out[o++] = (unsigned char)in[i] >= 0x20 && (unsigned char)in[i] < 0x7f ? in[i] : '?';
    out[o] = '\0';
}

fb_verdict fb_policy_task_call(fb_toolset granted, fb_toolset held, int tool, const char *name, fb_decision *out)
{
    if (tool < 0 || tool >= FB_TOOL_COUNT) {
        char shown[52];
        shown_name(name, shown, sizeof shown);
        return fb_policy_say(out, FB_DENY, "no tool named '%s'", shown);
    }
    const char *tn = fb_tool_name((fb_tool)tool);
    if (!(granted & FB_TOOLSET_OF(tool)))
        return fb_policy_say(out, FB_DENY, "tool %s was not granted to this task", tn);
    if (held & FB_TOOLSET_OF(tool))
        return fb_policy_say(out, FB_NEEDS_APPROVAL, "tool %s needs a person's approval", tn);
    return fb_policy_say(out, FB_ALLOW, "tool %s granted", tn);
}

fb_verdict fb_policy_task_approver(const fb_principal *p, const char *task_team, const char *creator_user_id,
                                   bool self_approval, fb_decision *out)
{
    fb_verdict v = fb_policy_decide(p, FB_PERM_TASKS_APPROVE, task_team, out);
    if (v != FB_ALLOW)
        return v;
    if (!self_approval && creator_user_id && strcmp(p->user_id, creator_user_id) == 0)
        return fb_policy_say(out, FB_DENY,
                             "the task's creator cannot approve its tool calls (tasks.self_approval is false)");
    return v;
}

static fb_verdict one_budget(const char *name, uint64_t req, uint64_t def, uint64_t max, uint64_t *out,
                             fb_decision *d)
{
    if (req > max)
        return fb_policy_say(d, FB_DENY, "limits.%s %llu is above the organisation's maximum of %llu", name,
                             (unsigned long long)req, (unsigned long long)max);
    *out = req ? req : def < max ? def : max;
    return FB_ALLOW;
}

fb_verdict fb_policy_task_budget(const fb_task_budget *requested, const fb_task_budget *defaults,
                                 const fb_task_budget *maxima, fb_task_budget *out, fb_decision *d)
{
    fb_task_budget r = requested ? *requested : (fb_task_budget){0};
    if (one_budget("max_turns", r.max_turns, defaults->max_turns, maxima->max_turns, &out->max_turns, d) != FB_ALLOW ||
        one_budget("max_tokens", r.max_tokens, defaults->max_tokens, maxima->max_tokens, &out->max_tokens, d) !=
            FB_ALLOW ||
        one_budget("max_tool_calls", r.max_tool_calls, defaults->max_tool_calls, maxima->max_tool_calls,
                   &out->max_tool_calls, d) != FB_ALLOW ||
        one_budget("timeout_s", r.timeout_s, defaults->timeout_s, maxima->timeout_s, &out->timeout_s, d) != FB_ALLOW)
        return FB_DENY;
    return fb_policy_say(d, FB_ALLOW, "within the organisation's maxima");
}
