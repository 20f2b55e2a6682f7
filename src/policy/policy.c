/*
 * policy.c - see policy.h.  Tables, not branches: the permission names and
 * the role table are arrays indexed by bit, so the header's table, this
 * file and the tests can be compared line by line.  The decision walks the
 * steps in the documented order and stops at the first "no", naming the
 * first missing permission in canonical order - except that another
 * team's resource is NOT_FOUND for a non-admin before anything else.
 */
#include "policy.h"
#include "policy/say.h"

#include <stdio.h>
#include <string.h>

static const char *const perm_names[FB_PERM_COUNT] = {
    "tasks:create",     "tasks:read",     "tasks:cancel",   "tools:shell",
    "tools:http",       "network:internet", "admin:users",  "admin:config",
    "sandboxes:create", "sandboxes:read", "sandboxes:exec", "audit:read",
    "keys:manage",      "tasks:approve",  "tools:files",  "tools:edit",
};

_Static_assert(FB_PERM_COUNT <= 32, "fb_perm is 32 bits");
_Static_assert(FB_PERM_TOOLS_EDIT == 1u << (FB_PERM_COUNT - 1), "FB_PERM_COUNT is stale");

#define DEVELOPER_PERMS                                                                            \
    (FB_PERM_TASKS_CREATE | FB_PERM_TASKS_READ | FB_PERM_TASKS_CANCEL | FB_PERM_TOOLS_SHELL |      \
     FB_PERM_TOOLS_HTTP | FB_PERM_SANDBOXES_CREATE | FB_PERM_SANDBOXES_READ |                      \
     FB_PERM_SANDBOXES_EXEC | FB_PERM_KEYS_MANAGE | FB_PERM_TASKS_APPROVE | FB_PERM_TOOLS_FILES |  \
     FB_PERM_TOOLS_EDIT)
#define OPERATOR_PERMS                                                                             \
    (FB_PERM_TASKS_READ | FB_PERM_TASKS_CANCEL | FB_PERM_SANDBOXES_READ | FB_PERM_AUDIT_READ |     \
     FB_PERM_KEYS_MANAGE | FB_PERM_TASKS_APPROVE)
#define VIEWER_PERMS (FB_PERM_TASKS_READ | FB_PERM_SANDBOXES_READ)

static const struct {
    const char *name;
    fb_perm perms;
} roles[] = {
    [FB_ROLE_NONE] = {"none", 0},
    [FB_ROLE_ADMIN] = {"admin", FB_PERM_ALL},
    [FB_ROLE_DEVELOPER] = {"developer", DEVELOPER_PERMS},
    [FB_ROLE_OPERATOR] = {"operator", OPERATOR_PERMS},
    [FB_ROLE_VIEWER] = {"viewer", VIEWER_PERMS},
};
#define ROLE_COUNT (sizeof roles / sizeof roles[0])

/* ---- tools ------------------------------------------------------------------ */

static const struct {
    const char *name;
    fb_perm perm;
} tools[FB_TOOL_COUNT] = {
    [FB_TOOL_BASH] = {"bash", FB_PERM_TOOLS_SHELL},
    [FB_TOOL_FILE_READ] = {"file_read", FB_PERM_TOOLS_FILES},
    [FB_TOOL_FILE_WRITE] = {"file_write", FB_PERM_TOOLS_EDIT},
    [FB_TOOL_FILE_EDIT] = {"file_edit", FB_PERM_TOOLS_EDIT},
    [FB_TOOL_GLOB] = {"glob", FB_PERM_TOOLS_FILES},
    [FB_TOOL_GREP] = {"grep", FB_PERM_TOOLS_FILES},
    [FB_TOOL_GIT] = {"git", FB_PERM_TOOLS_SHELL},
    [FB_TOOL_WEB_FETCH] = {"web_fetch", FB_PERM_TOOLS_HTTP},
};

int fb_tool_from_name(const char *name, fb_tool *out)
{
    if (!name)
        return -1;
    for (int i = 0; i < FB_TOOL_COUNT; i++)
        if (strcmp(name, tools[i].name) == 0) {
            *out = (fb_tool)i;
            return 0;
        }
    return -1;
}

const char *fb_tool_name(fb_tool t)
{
    return (unsigned)t < FB_TOOL_COUNT ? tools[t].name : NULL;
}

fb_perm fb_tool_perm(fb_tool t)
{
    return (unsigned)t < FB_TOOL_COUNT ? tools[t].perm : 0;
}

static void sanitise(const char *in, char *out, size_t cap);

int fb_toolset_from_json(const json_t *array, fb_toolset *out, fb_err *err)
{
    if (!json_is_array(array))
        return fb_fail(err, "tools must be a JSON array of tool names");
    if (json_array_size(array) > 64)
        return fb_fail(err, "too many tools (at most 64 names)");
    fb_toolset set = 0;
    for (size_t i = 0; i < json_array_size(array); i++) {
        const json_t *v = json_array_get(array, i);
        fb_tool t;
        if (!json_is_string(v))
            return fb_fail(err, "tool #%zu is not a string", i + 1);
        if (fb_tool_from_name(json_string_value(v), &t) != 0) {
            char shown[64];
            sanitise(json_string_value(v), shown, sizeof shown);
            return fb_fail(err, "unknown tool '%s'", shown);
        }
        set |= FB_TOOLSET_OF(t);
    }
    *out = set;
    return 0;
}

json_t *fb_toolset_to_json(fb_toolset set)
{
    json_t *a = json_array();
    for (int i = 0; a && i < FB_TOOL_COUNT; i++)
        if ((set & FB_TOOLSET_OF(i)) && json_array_append_new(a, json_string(tools[i].name)) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/* ---- permissions ----------------------------------------------------------- */

fb_perm fb_perm_from_name(const char *name)
{
    if (!name)
        return 0;
    for (size_t i = 0; i < FB_PERM_COUNT; i++)
        if (strcmp(name, perm_names[i]) == 0)
            return (fb_perm)1u << i;
    return 0;
}

const char *fb_perm_name(fb_perm one)
{
    if (one == 0 || (one & (one - 1)) != 0 || (one & ~FB_PERM_ALL) != 0)
        return NULL;
    return perm_names[__builtin_ctz(one)];
}

fb_perm fb_perm_at(size_t i)
{
    return i < FB_PERM_COUNT ? (fb_perm)1u << i : 0;
}

/* The lowest bit of a non-zero mask: the first missing permission. */
static fb_perm first_bit(fb_perm mask)
{
    return mask & (~mask + 1u);
}

/* Copies untrusted text for an error message: printable ASCII only, at most
 * 48 characters, with "..." when cut. */
static void sanitise(const char *in, char *out, size_t cap)
{
    size_t o = 0, i = 0;
    for (; in[i] && o + 4 < cap && i < 48; i++)
        out[o++] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
    if (in[i] && o + 4 <= cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

int fb_perms_from_json(const json_t *array, fb_perm *out, fb_err *err)
{
    if (!json_is_array(array))
        return fb_fail(err, "permissions must be a JSON array of names");
    if (json_array_size(array) > 64)
        return fb_fail(err, "too many permissions (at most 64 names)");
    fb_perm mask = 0;
    for (size_t i = 0; i < json_array_size(array); i++) {
        const json_t *v = json_array_get(array, i);
        if (!json_is_string(v))
            return fb_fail(err, "permission #%zu is not a string", i + 1);
        fb_perm bit = fb_perm_from_name(json_string_value(v));
        if (!bit) {
            char shown[64];
            sanitise(json_string_value(v), shown, sizeof shown);
            return fb_fail(err, "unknown permission '%s'", shown);
        }
        mask |= bit;
    }
    *out = mask;
    return 0;
}

int fb_perms_parse_json(const char *text, fb_perm *out, fb_err *err)
{
    if (!text)
        return fb_fail(err, "permissions: no JSON text");
    size_t len = strnlen(text, 4097);
    if (len > 4096)
        return fb_fail(err, "permissions: JSON text longer than 4096 bytes");
    json_error_t jerr;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!v)
        return fb_fail(err, "permissions: invalid JSON at column %d: %s", jerr.column, jerr.text);
    int rc = fb_perms_from_json(v, out, err);
    json_decref(v);
    return rc;
}

int fb_perms_format_json(fb_perm mask, char *out, size_t cap)
{
    if ((mask & ~FB_PERM_ALL) != 0 || cap < 3)
        return -1;
    size_t o = 0;
    out[o++] = '[';
    for (size_t i = 0; i < FB_PERM_COUNT; i++) {
        if (!(mask & (1u << i)))
            continue;
        size_t n = strlen(perm_names[i]);
        /* separator + two quotes + name, and room for "]\0" */
        if (o + (o > 1) + n + 2 + 2 > cap)
            return -1;
        if (o > 1)
            out[o++] = ',';
        out[o++] = '"';
        memcpy(out + o, perm_names[i], n);
        o += n;
        out[o++] = '"';
    }
    out[o++] = ']';
    out[o] = '\0';
    return 0;
}

json_t *fb_perms_to_json(fb_perm mask)
{
    if ((mask & ~FB_PERM_ALL) != 0)
        return NULL;
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < FB_PERM_COUNT; i++) {
        if ((mask & (1u << i)) && json_array_append_new(a, json_string(perm_names[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* ---- roles ------------------------------------------------------------------ */

fb_role fb_role_from_name(const char *name)
{
    if (!name)
        return FB_ROLE_NONE;
    for (size_t r = 1; r < ROLE_COUNT; r++)
        if (strcmp(name, roles[r].name) == 0)
            return (fb_role)r;
    return FB_ROLE_NONE;
}

const char *fb_role_name(fb_role role)
{
    return (size_t)role < ROLE_COUNT ? roles[role].name : "none";
}

fb_perm fb_role_perms(fb_role role)
{
    return (size_t)role < ROLE_COUNT ? roles[role].perms : 0;
}

/* ---- decisions ----------------------------------------------------------------- */

const char *fb_verdict_name(fb_verdict v)
{
    switch (v) {
    case FB_ALLOW:
        return "allow";
    case FB_NOT_FOUND:
        return "not_found";
    case FB_NEEDS_APPROVAL:
        return "needs_approval";
    case FB_DENY:
        break;
    }
    return "deny";
}

fb_verdict fb_policy_say(fb_decision *out, fb_verdict v, const char *fmt, ...)
{
    out->verdict = v;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
    return v;
}

bool fb_policy_consistent(const fb_principal *p)
{
    return (size_t)p->role < ROLE_COUNT && p->is_admin == (p->role == FB_ROLE_ADMIN);
}

fb_perm fb_policy_effective(const fb_principal *p)
{
    if (!p || !fb_policy_consistent(p))
        return 0;
    fb_perm org = (FB_PERM_ALL & ~FB_PERM_ORG_GATED) | (p->org_enabled & FB_PERM_ORG_GATED);
    return org & fb_role_perms(p->role) & p->scopes;
}

fb_verdict fb_policy_decide(const fb_principal *p, fb_perm needed, const char *resource_team_id,
                            fb_decision *out)
{
    fb_decision scratch;
    if (!out)
        out = &scratch;
    if (!p)
        return fb_policy_say(out, FB_DENY, "no principal");
    if (needed == 0 || (needed & ~FB_PERM_ALL) != 0)
        return fb_policy_say(out, FB_DENY, "internal: invalid permission mask 0x%x", (unsigned)needed);
    if (!fb_policy_consistent(p))
        return fb_policy_say(out, FB_DENY, "inconsistent principal (role %s, admin flag %s)",
                      fb_role_name(p->role), p->is_admin ? "set" : "clear");

    /* Another team's resource does not exist for a non-admin, whatever the
     * steps below would say (see policy.h): checked first so that no 403
     * can confirm it exists.  An empty team id never matches anything. */
    bool same_team = resource_team_id && p->team_id[0] != '\0' &&
                     strcmp(resource_team_id, p->team_id) == 0;
    if (resource_team_id && !same_team && !p->is_admin)
        return fb_policy_say(out, FB_NOT_FOUND, "resource belongs to another team");

    /* 1. org policy: cannot be overridden by anything below. */
    fb_perm gated = needed & FB_PERM_ORG_GATED & ~p->org_enabled;
    if (gated)
        return fb_policy_say(out, FB_DENY, "%s is disabled by organisation policy",
                      fb_perm_name(first_bit(gated)));

    /* 2. role. */
    if (p->role == FB_ROLE_NONE)
        return fb_policy_say(out, FB_DENY, "principal has no role");
    fb_perm lacking = needed & ~fb_role_perms(p->role);
    if (lacking)
        return fb_policy_say(out, FB_DENY, "role %s lacks %s", fb_role_name(p->role),
                      fb_perm_name(first_bit(lacking)));

    /* 3. key scope: effective = role ∩ scopes. */
    lacking = needed & ~p->scopes;
    if (lacking)
        return fb_policy_say(out, FB_DENY, "key scope lacks %s", fb_perm_name(first_bit(lacking)));

    /* 4. resource team: non-admins were handled above; admins cross. */
    if (resource_team_id && !same_team)
        return fb_policy_say(out, FB_ALLOW, "allowed (admin, across teams)");
    return fb_policy_say(out, FB_ALLOW, "allowed");
}
