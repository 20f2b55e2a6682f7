/*
 * rules.c - the rules about particular resources (policy.h, "rules about
 * resources"): who sees what, who may act on whose API keys and with what
 * scopes and lifetime, and whether a team's sandboxes fit its quota.
 *
 * Like policy.c these are pure functions of their arguments: the callers
 * (auth, the gateway's services) read what the rule needs from the store
 * and hand it over, so each rule is written once and unit-tested alone.
 * The reasons are the messages callers show and audit, worded as before
 * the rules moved here.
 */
#include <stdio.h>
#include <string.h>

#include "policy/policy.h"
#include "policy/say.h"

bool fb_policy_can_see(const fb_principal *p, const char *team_id)
{
    if (!p || !fb_policy_consistent(p) || !team_id || !team_id[0])
        return false;
    return p->is_admin || (p->team_id[0] && strcmp(p->team_id, team_id) == 0);
}

bool fb_policy_sees_all_teams(const fb_principal *p)
{
    return p && fb_policy_consistent(p) && p->is_admin;
}

fb_verdict fb_policy_org_wide(const fb_principal *p, const char *what, fb_decision *out)
{
    if (!fb_policy_sees_all_teams(p))
        return fb_policy_say(out, FB_DENY, "%s spans all teams: admins only", what);
    return fb_policy_say(out, FB_ALLOW, "admin");
}

/* Lists the names of the bits in mask, comma-separated. */
static void perm_list(fb_perm mask, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < FB_PERM_COUNT; i++) {
        if (!(mask & fb_perm_at(i)))
            continue;
        int n = snprintf(out + o, cap - o, "%s%s", o ? ", " : "", fb_perm_name(fb_perm_at(i)));
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
}

static fb_perm ceiling(const fb_principal *p)
{
    return fb_role_perms(p->role) & p->scopes;
}

fb_verdict fb_policy_key_manage(const fb_principal *actor, const char *owner_user_id, fb_key_action action,
                                fb_decision *out)
{
    fb_decision scratch;
    if (!out)
        out = &scratch;
    if (!actor || !fb_policy_consistent(actor))
        return fb_policy_say(out, FB_DENY, "inconsistent principal");
    bool create = action == FB_KEY_CREATE;
    bool owner = actor->user_id[0] && owner_user_id && strcmp(actor->user_id, owner_user_id) == 0;
    fb_perm c = ceiling(actor);
    if (owner && !(c & FB_PERM_KEYS_MANAGE))
        return fb_policy_say(out, FB_DENY, "%s your API keys needs keys:manage", create ? "managing" : "revoking");
    if (!owner && !actor->is_admin)
        return fb_policy_say(out, FB_NOT_FOUND, create ? "no such user" : "no such API key");
    if (!owner && !(c & FB_PERM_ADMIN_USERS))
        return fb_policy_say(out, FB_DENY, "%s needs admin:users",
                             create ? "managing another user's API keys" : "revoking another user's API key");
    return fb_policy_say(out, FB_ALLOW, owner ? "allowed (own keys)" : "allowed (admin)");
}

static fb_verdict within(fb_perm allowed, fb_perm requested, const char *what, fb_decision *out)
{
    fb_perm excess = requested & ~allowed;
    if (!excess)
        return fb_policy_say(out, FB_ALLOW, "allowed");
    char names[FB_PERMS_JSON_MAX];
    perm_list(excess, names, sizeof names);
    return fb_policy_say(out, FB_DENY, "%s: %s", what, names);
}

fb_verdict fb_policy_key_within_actor(const fb_principal *actor, fb_perm requested, fb_decision *out)
{
    fb_decision scratch;
    if (!out)
        out = &scratch;
    if (!actor || !fb_policy_consistent(actor))
        return fb_policy_say(out, FB_DENY, "inconsistent principal");
    return within(ceiling(actor), requested, "a new key cannot hold more than the key or user creating it", out);
}

fb_verdict fb_policy_key_within_role(fb_role owner_role, fb_perm requested, fb_decision *out)
{
    fb_decision scratch;
    if (!out)
        out = &scratch;
    char what[64];
    snprintf(what, sizeof what, "scopes exceed what role %s allows", fb_role_name(owner_role));
    return within(fb_role_perms(owner_role), requested, what, out);
}

fb_verdict fb_policy_key_expiry(const struct timespec *parent_expires, const struct timespec *child_expires,
                                fb_decision *out)
{
    fb_decision scratch;
    if (!out)
        out = &scratch;
    if (!parent_expires)
        return fb_policy_say(out, FB_ALLOW, "allowed (the creating key never expires)");
    bool later = child_expires && (child_expires->tv_sec > parent_expires->tv_sec ||
                                   (child_expires->tv_sec == parent_expires->tv_sec &&
                                    child_expires->tv_nsec > parent_expires->tv_nsec));
    if (!child_expires || later)
        return fb_policy_say(out, FB_DENY, "would outlive the creating key");
    return fb_policy_say(out, FB_ALLOW, "allowed");
}

/* used + want <= max, without overflow. */
static bool fits(uint64_t used, uint64_t want, uint64_t max)
{
    return used <= max && want <= max - used;
}

fb_verdict fb_policy_quota(const fb_quota_usage *usage, const fb_quota_usage *request,
                           const fb_quota_limits *limits, fb_decision *out)
{
    fb_decision scratch;
    if (!out)
        out = &scratch;
    if (!usage || !request || !limits)
        return fb_policy_say(out, FB_DENY, "internal: no usage, request or limits");
    if (!fits(usage->count, 1, limits->max_count))
        return fb_policy_say(out, FB_DENY, "team quota exceeded: %llu of %llu sandboxes in use",
                             (unsigned long long)usage->count, (unsigned long long)limits->max_count);
    if (!fits(usage->memory_mib, request->memory_mib, limits->max_memory_mib))
        return fb_policy_say(out, FB_DENY, "team quota exceeded: %llu of %llu MiB of memory in use, %llu more asked",
                             (unsigned long long)usage->memory_mib, (unsigned long long)limits->max_memory_mib,
                             (unsigned long long)request->memory_mib);
    if (!fits(usage->vcpus, request->vcpus, limits->max_vcpus))
        return fb_policy_say(out, FB_DENY, "team quota exceeded: %llu of %llu vCPUs in use, %llu more asked",
                             (unsigned long long)usage->vcpus, (unsigned long long)limits->max_vcpus,
                             (unsigned long long)request->vcpus);
    return fb_policy_say(out, FB_ALLOW, "allowed");
}
