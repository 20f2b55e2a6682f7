/*
 * test_policy.c - unit tests for the permission model (src/policy/policy.h).
 *
 * The role table is written out here a second time, as text, independently
 * of policy.c's bit masks, and every role x permission cell is checked
 * through fb_policy_decide: a change to either copy fails the test.  The
 * other tests walk each evaluation step (org, role, key scope, team) and
 * require the exact verdict and reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

static const char *const all_names[] = {
    "tasks:create",     "tasks:read",     "tasks:cancel",   "tools:shell",   "tools:http",
    "network:internet", "admin:users",    "admin:config",   "sandboxes:create",
    "sandboxes:read",   "sandboxes:exec", "audit:read",     "keys:manage",    "tasks:approve",
    "tools:files",      "tools:edit",
};
#define N_NAMES (sizeof all_names / sizeof all_names[0])

/* The header's table: A admin, D developer, O operator, V viewer. */
static const struct {
    const char *perm;
    const char *roles;
} table[] = {
    {"tasks:create", "AD"},      {"tasks:read", "ADOV"},     {"tasks:cancel", "ADO"},
    {"tools:shell", "AD"},       {"tools:http", "AD"},       {"network:internet", "A"},
    {"admin:users", "A"},        {"admin:config", "A"},      {"sandboxes:create", "AD"},
    {"sandboxes:read", "ADOV"},  {"sandboxes:exec", "AD"},   {"audit:read", "AO"},
    {"keys:manage", "ADO"},      {"tasks:approve", "ADO"},   {"tools:files", "AD"},
    {"tools:edit", "AD"},
};

static const struct {
    fb_role role;
    char letter;
    const char *name;
} role_list[] = {
    {FB_ROLE_ADMIN, 'A', "admin"},
    {FB_ROLE_DEVELOPER, 'D', "developer"},
    {FB_ROLE_OPERATOR, 'O', "operator"},
    {FB_ROLE_VIEWER, 'V', "viewer"},
};

static fb_principal principal(fb_role role, const char *team)
{
    fb_principal p;
    memset(&p, 0, sizeof p);
    snprintf(p.user_id, sizeof p.user_id, "us_0123456789abcdef");
    snprintf(p.team_id, sizeof p.team_id, "%s", team);
    p.role = role;
    p.is_admin = role == FB_ROLE_ADMIN;
    p.scopes = FB_PERM_ALL;
    return p;
}

/* ---- names and JSON ------------------------------------------------------------ */

static void test_tools(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        fb_perm perm;
    } want[] = {
        {"bash", FB_PERM_TOOLS_SHELL},      {"file_read", FB_PERM_TOOLS_FILES}, {"file_write", FB_PERM_TOOLS_EDIT},
        {"file_edit", FB_PERM_TOOLS_EDIT},  {"glob", FB_PERM_TOOLS_FILES},      {"grep", FB_PERM_TOOLS_FILES},
        {"git", FB_PERM_TOOLS_SHELL},       {"web_fetch", FB_PERM_TOOLS_HTTP},
    };
    assert_int_equal(sizeof want / sizeof want[0], FB_TOOL_COUNT);
    for (int i = 0; i < FB_TOOL_COUNT; i++) {
        fb_tool t;
        assert_int_equal(fb_tool_from_name(want[i].name, &t), 0);
        assert_int_equal(t, i);
        assert_string_equal(fb_tool_name(t), want[i].name);
        assert_int_equal(fb_tool_perm(t), want[i].perm);
    }
    fb_tool t;
    assert_int_equal(fb_tool_from_name("Bash", &t), -1);
    assert_int_equal(fb_tool_from_name(NULL, &t), -1);
    assert_null(fb_tool_name(FB_TOOL_COUNT));
    assert_int_equal(fb_tool_perm(FB_TOOL_COUNT), 0);

    fb_err err = {0};
    fb_toolset set = 0;
    json_t *a = json_loads("[\"grep\", \"bash\", \"bash\"]", 0, NULL);
    assert_int_equal(fb_toolset_from_json(a, &set, &err), 0);
    assert_int_equal(set, FB_TOOLSET_OF(FB_TOOL_BASH) | FB_TOOLSET_OF(FB_TOOL_GREP));
    json_t *back = fb_toolset_to_json(set);
    char *text = json_dumps(back, JSON_COMPACT);
    assert_string_equal(text, "[\"bash\",\"grep\"]");
    free(text);
    json_decref(back);
    json_decref(a);
    a = json_loads("[\"bash\", \"rm\\u0001-rf\"]", 0, NULL);
    assert_int_equal(fb_toolset_from_json(a, &set, &err), -1);
    assert_string_equal(err.msg, "unknown tool 'rm?-rf'");
    json_decref(a);
    a = json_loads("{\"bash\": 1}", 0, NULL);
    assert_int_equal(fb_toolset_from_json(a, &set, &err), -1);
    json_decref(a);
}

static void test_perm_names(void **state)
{
    (void)state;
    assert_int_equal(N_NAMES, FB_PERM_COUNT);
    fb_perm seen = 0;
    for (size_t i = 0; i < N_NAMES; i++) {
        fb_perm p = fb_perm_from_name(all_names[i]);
        assert_int_not_equal(p, 0);
        assert_int_equal(p & (p - 1), 0); /* one bit */
        assert_int_equal(seen & p, 0);    /* distinct */
        seen |= p;
        assert_string_equal(fb_perm_name(p), all_names[i]);
        assert_int_equal(fb_perm_at(i), p); /* canonical order is the listed order */
    }
    assert_int_equal(seen, FB_PERM_ALL);
    assert_int_equal(fb_perm_at(FB_PERM_COUNT), 0);

    assert_int_equal(fb_perm_from_name(NULL), 0);
    assert_int_equal(fb_perm_from_name(""), 0);
    assert_int_equal(fb_perm_from_name("Tasks:create"), 0);
    assert_int_equal(fb_perm_from_name("tasks:create "), 0);
    assert_int_equal(fb_perm_from_name("tasks:*"), 0);
    assert_int_equal(fb_perm_from_name("admin"), 0);
    assert_null(fb_perm_name(0));
    assert_null(fb_perm_name(FB_PERM_TASKS_READ | FB_PERM_TASKS_CREATE));
    assert_null(fb_perm_name(1u << FB_PERM_COUNT));
    assert_null(fb_perm_name(1u << 31));
}

static void test_role_names(void **state)
{
    (void)state;
    for (size_t r = 0; r < 4; r++) {
        assert_int_equal(fb_role_from_name(role_list[r].name), role_list[r].role);
        assert_string_equal(fb_role_name(role_list[r].role), role_list[r].name);
    }
    assert_int_equal(fb_role_from_name(NULL), FB_ROLE_NONE);
    assert_int_equal(fb_role_from_name("Admin"), FB_ROLE_NONE);
    assert_int_equal(fb_role_from_name("none"), FB_ROLE_NONE);
    assert_int_equal(fb_role_from_name("root"), FB_ROLE_NONE);
    assert_string_equal(fb_role_name(FB_ROLE_NONE), "none");
    assert_string_equal(fb_role_name((fb_role)99), "none");
    assert_int_equal(fb_role_perms(FB_ROLE_NONE), 0);
    assert_int_equal(fb_role_perms((fb_role)99), 0);
    assert_int_equal(fb_role_perms(FB_ROLE_ADMIN), FB_PERM_ALL);
}

static void test_perms_parse_json(void **state)
{
    (void)state;
    fb_perm m = 0xdead;
    fb_err err = {""};
    assert_int_equal(fb_perms_parse_json("[\"sandboxes:exec\",\"tasks:read\"]", &m, &err), 0);
    assert_int_equal(m, FB_PERM_SANDBOXES_EXEC | FB_PERM_TASKS_READ);
    assert_int_equal(fb_perms_parse_json("[]", &m, &err), 0);
    assert_int_equal(m, 0);
    assert_int_equal(fb_perms_parse_json(" [ \"tasks:read\" , \"tasks:read\" ] ", &m, &err), 0);
    assert_int_equal(m, FB_PERM_TASKS_READ);

    /* Unknown names are named in the error, and *out is left alone. */
    m = 0x77;
    assert_int_equal(fb_perms_parse_json("[\"tasks:read\",\"bogus:perm\"]", &m, &err), -1);
    assert_string_equal(err.msg, "unknown permission 'bogus:perm'");
    assert_int_equal(m, 0x77);
    assert_int_equal(fb_perms_parse_json("[\"Tasks:Read\"]", &m, &err), -1);
    assert_string_equal(err.msg, "unknown permission 'Tasks:Read'");
    /* Control characters and long names are sanitised in the message. */
    assert_int_equal(fb_perms_parse_json("[\"a\\nb\\u0007\"]", &m, &err), -1);
    assert_string_equal(err.msg, "unknown permission 'a?b?'");
    char longj[300];
    snprintf(longj, sizeof longj, "[\"%0200d\"]", 7);
    assert_int_equal(fb_perms_parse_json(longj, &m, &err), -1);
    assert_non_null(strstr(err.msg, "unknown permission '000"));
    assert_non_null(strstr(err.msg, "...'"));
    assert_true(strlen(err.msg) < 100);

    assert_int_equal(fb_perms_parse_json("[1]", &m, &err), -1);
    assert_string_equal(err.msg, "permission #1 is not a string");
    assert_int_equal(fb_perms_parse_json("{\"tasks:read\":true}", &m, &err), -1);
    assert_string_equal(err.msg, "permissions must be a JSON array of names");
    assert_int_equal(fb_perms_parse_json("\"tasks:read\"", &m, &err), -1);
    assert_int_equal(fb_perms_parse_json("[\"tasks:read\"", &m, &err), -1);
    assert_non_null(strstr(err.msg, "invalid JSON"));
    assert_int_equal(fb_perms_parse_json("", &m, &err), -1);
    assert_int_equal(fb_perms_parse_json(NULL, &m, &err), -1);
    assert_int_equal(fb_perms_parse_json("[null]", &m, &err), -1);
    assert_int_equal(fb_perms_parse_json("[[\"tasks:read\"]]", &m, &err), -1);
    assert_int_equal(m, 0x77);

    /* Size caps. */
    char big[5000];
    memset(big, ' ', sizeof big);
    big[0] = '[';
    big[sizeof big - 2] = ']';
    big[sizeof big - 1] = '\0';
    assert_int_equal(fb_perms_parse_json(big, &m, &err), -1);
    assert_non_null(strstr(err.msg, "4096"));
    char many[2000] = "[";
    for (int i = 0; i < 65; i++)
        strcat(many, i ? ",\"tasks:read\"" : "\"tasks:read\"");
    strcat(many, "]");
    assert_int_equal(fb_perms_parse_json(many, &m, &err), -1);
    assert_non_null(strstr(err.msg, "too many"));
}

static void test_perms_format_json(void **state)
{
    (void)state;
    char buf[FB_PERMS_JSON_MAX];
    assert_int_equal(fb_perms_format_json(0, buf, sizeof buf), 0);
    assert_string_equal(buf, "[]");
    assert_int_equal(fb_perms_format_json(FB_PERM_SANDBOXES_EXEC | FB_PERM_TASKS_CREATE, buf,
                                          sizeof buf),
                     0);
    assert_string_equal(buf, "[\"tasks:create\",\"sandboxes:exec\"]");

    /* Everything fits in FB_PERMS_JSON_MAX and round-trips. */
    assert_int_equal(fb_perms_format_json(FB_PERM_ALL, buf, sizeof buf), 0);
    fb_perm back = 0;
    assert_int_equal(fb_perms_parse_json(buf, &back, NULL), 0);
    assert_int_equal(back, FB_PERM_ALL);
    for (size_t i = 0; i < N_NAMES; i++)
        assert_non_null(strstr(buf, all_names[i]));

    /* Exactly enough room works, one byte less fails. */
    size_t need = strlen(buf) + 1;
    char exact[FB_PERMS_JSON_MAX];
    assert_int_equal(fb_perms_format_json(FB_PERM_ALL, exact, need), 0);
    assert_string_equal(exact, buf);
    assert_int_equal(fb_perms_format_json(FB_PERM_ALL, exact, need - 1), -1);
    assert_int_equal(fb_perms_format_json(0, exact, 2), -1);
    /* Unknown bits are refused. */
    assert_int_equal(fb_perms_format_json(1u << 20, buf, sizeof buf), -1);

    json_t *a = fb_perms_to_json(FB_PERM_AUDIT_READ | FB_PERM_KEYS_MANAGE);
    assert_non_null(a);
    assert_int_equal(json_array_size(a), 2);
    assert_string_equal(json_string_value(json_array_get(a, 0)), "audit:read");
    assert_string_equal(json_string_value(json_array_get(a, 1)), "keys:manage");
    fb_perm m = 0;
    assert_int_equal(fb_perms_from_json(a, &m, NULL), 0);
    assert_int_equal(m, FB_PERM_AUDIT_READ | FB_PERM_KEYS_MANAGE);
    json_decref(a);
    assert_null(fb_perms_to_json(1u << 30));
}

/* ---- decisions ----------------------------------------------------------------- */

/* Every role x permission cell, against the text table above. */
static void test_role_table(void **state)
{
    (void)state;
    assert_int_equal(sizeof table / sizeof table[0], FB_PERM_COUNT);
    for (size_t r = 0; r < 4; r++) {
        fb_perm expected = 0;
        for (size_t i = 0; i < FB_PERM_COUNT; i++) {
            fb_perm bit = fb_perm_from_name(table[i].perm);
            assert_int_not_equal(bit, 0);
            bool granted = strchr(table[i].roles, role_list[r].letter) != NULL;
            if (granted)
                expected |= bit;

            fb_principal p = principal(role_list[r].role, "tm_aaaaaaaaaaaaaaaa");
            p.org_enabled = FB_PERM_ORG_GATED; /* look at the role alone */
            fb_decision d;
            fb_verdict v = fb_policy_decide(&p, bit, "tm_aaaaaaaaaaaaaaaa", &d);
            assert_int_equal(v, d.verdict);
            if (granted) {
                assert_int_equal(v, FB_ALLOW);
                assert_string_equal(d.reason, "allowed");
            } else {
                char want[128];
                snprintf(want, sizeof want, "role %s lacks %s", role_list[r].name, table[i].perm);
                assert_int_equal(v, FB_DENY);
                assert_string_equal(d.reason, want);
            }
        }
        assert_int_equal(fb_role_perms(role_list[r].role), expected);
    }
}

static void test_org_policy_first(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal admin = principal(FB_ROLE_ADMIN, "tm_aaaaaaaaaaaaaaaa");
    /* Denied org-wide by default, whatever role and scopes say. */
    assert_int_equal(fb_policy_decide(&admin, FB_PERM_NETWORK_INTERNET, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "network:internet is disabled by organisation policy");
    /* Org is checked before role: a developer also gets the org reason. */
    fb_principal dev = principal(FB_ROLE_DEVELOPER, "tm_aaaaaaaaaaaaaaaa");
    assert_int_equal(fb_policy_decide(&dev, FB_PERM_NETWORK_INTERNET, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "network:internet is disabled by organisation policy");
    /* Enabled by config: the admin may, the developer's role still lacks it. */
    admin.org_enabled = FB_PERM_NETWORK_INTERNET;
    dev.org_enabled = FB_PERM_NETWORK_INTERNET;
    assert_int_equal(fb_policy_decide(&admin, FB_PERM_NETWORK_INTERNET, NULL, &d), FB_ALLOW);
    assert_int_equal(fb_policy_decide(&dev, FB_PERM_NETWORK_INTERNET, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "role developer lacks network:internet");
    /* org_enabled cannot enable anything that is not gated, nor add to a role. */
    fb_principal viewer = principal(FB_ROLE_VIEWER, "tm_aaaaaaaaaaaaaaaa");
    viewer.org_enabled = FB_PERM_ALL;
    assert_int_equal(fb_policy_decide(&viewer, FB_PERM_TOOLS_SHELL, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "role viewer lacks tools:shell");
    /* A key scoped to network:internet does not beat the org gate. */
    admin.org_enabled = 0;
    admin.scopes = FB_PERM_NETWORK_INTERNET;
    assert_int_equal(fb_policy_decide(&admin, FB_PERM_NETWORK_INTERNET, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "network:internet is disabled by organisation policy");
}

static void test_key_scopes_narrow(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal p = principal(FB_ROLE_DEVELOPER, "tm_aaaaaaaaaaaaaaaa");
    snprintf(p.key_id, sizeof p.key_id, "key_0123456789ab");
    p.scopes = FB_PERM_SANDBOXES_READ | FB_PERM_TASKS_READ;
    assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, "tm_aaaaaaaaaaaaaaaa", &d),
                     FB_ALLOW);
    assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_EXEC, "tm_aaaaaaaaaaaaaaaa", &d),
                     FB_DENY);
    assert_string_equal(d.reason, "key scope lacks sandboxes:exec");
    assert_int_equal(fb_policy_decide(&p, FB_PERM_TASKS_CREATE, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "key scope lacks tasks:create");

    /* Scopes never add to the role: effective = role ∩ scopes, and the role
     * is checked first. */
    fb_principal v = principal(FB_ROLE_VIEWER, "tm_aaaaaaaaaaaaaaaa");
    v.scopes = FB_PERM_ALL;
    assert_int_equal(fb_policy_decide(&v, FB_PERM_SANDBOXES_EXEC, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "role viewer lacks sandboxes:exec");
    /* A principal without scopes may do nothing. */
    p.scopes = 0;
    for (size_t i = 0; i < FB_PERM_COUNT; i++) {
        fb_perm bit = fb_perm_at(i);
        if (!(bit & fb_role_perms(FB_ROLE_DEVELOPER)))
            continue;
        assert_int_equal(fb_policy_decide(&p, bit, NULL, &d), FB_DENY);
        assert_non_null(strstr(d.reason, "key scope lacks "));
    }
    /* An admin key is narrowed the same way. */
    fb_principal a = principal(FB_ROLE_ADMIN, "tm_aaaaaaaaaaaaaaaa");
    a.scopes = FB_PERM_AUDIT_READ;
    assert_int_equal(fb_policy_decide(&a, FB_PERM_AUDIT_READ, NULL, &d), FB_ALLOW);
    assert_int_equal(fb_policy_decide(&a, FB_PERM_ADMIN_USERS, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "key scope lacks admin:users");
}

static void test_several_bits(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal p = principal(FB_ROLE_OPERATOR, "tm_aaaaaaaaaaaaaaaa");
    assert_int_equal(fb_policy_decide(&p, FB_PERM_TASKS_READ | FB_PERM_AUDIT_READ, NULL, &d),
                     FB_ALLOW);
    /* All bits are needed; the first missing one (canonical order) is named. */
    assert_int_equal(fb_policy_decide(&p, FB_PERM_AUDIT_READ | FB_PERM_SANDBOXES_EXEC |
                                              FB_PERM_TOOLS_SHELL,
                                      NULL, &d),
                     FB_DENY);
    assert_string_equal(d.reason, "role operator lacks tools:shell");
}

static void test_cross_team(void **state)
{
    (void)state;
    const char *mine = "tm_aaaaaaaaaaaaaaaa", *other = "tm_bbbbbbbbbbbbbbbb";
    fb_decision d;
    const fb_role non_admins[] = {FB_ROLE_DEVELOPER, FB_ROLE_OPERATOR, FB_ROLE_VIEWER};
    for (size_t i = 0; i < 3; i++) {
        fb_principal p = principal(non_admins[i], mine);
        assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, mine, &d), FB_ALLOW);
        /* Another team's resource does not exist for them: 404, not 403. */
        assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, other, &d), FB_NOT_FOUND);
        assert_string_equal(d.reason, "resource belongs to another team");
        assert_int_equal(d.verdict, FB_NOT_FOUND);
        /* A prefix or an empty team id is not "the same team". */
        assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, "tm_aaaa", &d),
                         FB_NOT_FOUND);
        assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, "", &d), FB_NOT_FOUND);
        /* Team-less actions are unaffected. */
        assert_int_equal(fb_policy_decide(&p, FB_PERM_SANDBOXES_READ, NULL, &d), FB_ALLOW);
    }
    /* Even a permission the principal lacks, or one the org forbids, is
     * NOT_FOUND on another team's resource: a 403 would confirm that it
     * exists.  On its own team's, it is the ordinary DENY. */
    fb_principal v = principal(FB_ROLE_VIEWER, mine);
    assert_int_equal(fb_policy_decide(&v, FB_PERM_TASKS_CANCEL, other, &d), FB_NOT_FOUND);
    assert_string_equal(d.reason, "resource belongs to another team");
    assert_int_equal(fb_policy_decide(&v, FB_PERM_NETWORK_INTERNET, other, &d), FB_NOT_FOUND);
    v.scopes = 0;
    assert_int_equal(fb_policy_decide(&v, FB_PERM_TASKS_READ, other, &d), FB_NOT_FOUND);
    v.scopes = FB_PERM_ALL;
    assert_int_equal(fb_policy_decide(&v, FB_PERM_TASKS_CANCEL, mine, &d), FB_DENY);
    assert_string_equal(d.reason, "role viewer lacks tasks:cancel");
    fb_principal none = principal(FB_ROLE_NONE, mine);
    assert_int_equal(fb_policy_decide(&none, FB_PERM_TASKS_READ, other, &d), FB_NOT_FOUND);

    /* A principal with no team sees no team's resources. */
    fb_principal noteam = principal(FB_ROLE_DEVELOPER, "");
    assert_int_equal(fb_policy_decide(&noteam, FB_PERM_SANDBOXES_READ, "", &d), FB_NOT_FOUND);

    /* Admins cross teams, still within their scopes. */
    fb_principal a = principal(FB_ROLE_ADMIN, mine);
    assert_int_equal(fb_policy_decide(&a, FB_PERM_SANDBOXES_EXEC, other, &d), FB_ALLOW);
    assert_string_equal(d.reason, "allowed (admin, across teams)");
    assert_int_equal(fb_policy_decide(&a, FB_PERM_SANDBOXES_EXEC, mine, &d), FB_ALLOW);
    assert_string_equal(d.reason, "allowed");
    /* ...and their denials on other teams' resources are ordinary 403s. */
    assert_int_equal(fb_policy_decide(&a, FB_PERM_NETWORK_INTERNET, other, &d), FB_DENY);
    assert_string_equal(d.reason, "network:internet is disabled by organisation policy");
    a.scopes = FB_PERM_SANDBOXES_READ;
    assert_int_equal(fb_policy_decide(&a, FB_PERM_SANDBOXES_EXEC, other, &d), FB_DENY);
    assert_string_equal(d.reason, "key scope lacks sandboxes:exec");
}

static void test_deny_by_default(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal zero;
    memset(&zero, 0, sizeof zero);
    for (size_t i = 0; i < FB_PERM_COUNT; i++) {
        fb_verdict v = fb_policy_decide(&zero, fb_perm_at(i), NULL, &d);
        assert_int_equal(v, FB_DENY);
    }
    assert_int_equal(fb_policy_decide(&zero, FB_PERM_TASKS_READ, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "principal has no role");
    assert_int_equal(fb_policy_effective(&zero), 0);

    assert_int_equal(fb_policy_decide(NULL, FB_PERM_TASKS_READ, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "no principal");
    fb_principal a = principal(FB_ROLE_ADMIN, "tm_aaaaaaaaaaaaaaaa");
    assert_int_equal(fb_policy_decide(&a, 0, NULL, &d), FB_DENY);
    assert_non_null(strstr(d.reason, "invalid permission"));
    assert_int_equal(fb_policy_decide(&a, 1u << 25, NULL, &d), FB_DENY);
    assert_int_equal(fb_policy_decide(&a, FB_PERM_TASKS_READ | (1u << 25), NULL, &d), FB_DENY);
    /* NULL out is allowed; the verdict is still returned. */
    assert_int_equal(fb_policy_decide(&a, FB_PERM_TASKS_READ, NULL, NULL), FB_ALLOW);

    /* is_admin must agree with the role, both ways. */
    fb_principal fake = principal(FB_ROLE_VIEWER, "tm_aaaaaaaaaaaaaaaa");
    fake.is_admin = true;
    assert_int_equal(fb_policy_decide(&fake, FB_PERM_TASKS_READ, "tm_bbbbbbbbbbbbbbbb", &d),
                     FB_DENY);
    assert_non_null(strstr(d.reason, "inconsistent principal"));
    fb_principal half = principal(FB_ROLE_ADMIN, "tm_aaaaaaaaaaaaaaaa");
    half.is_admin = false;
    assert_int_equal(fb_policy_decide(&half, FB_PERM_TASKS_READ, NULL, &d), FB_DENY);
    assert_int_equal(fb_policy_effective(&half), 0);
    fb_principal weird = principal(FB_ROLE_VIEWER, "tm_aaaaaaaaaaaaaaaa");
    weird.role = (fb_role)42;
    assert_int_equal(fb_policy_decide(&weird, FB_PERM_TASKS_READ, NULL, &d), FB_DENY);

    assert_string_equal(fb_verdict_name(FB_ALLOW), "allow");
    assert_string_equal(fb_verdict_name(FB_DENY), "deny");
    assert_string_equal(fb_verdict_name(FB_NOT_FOUND), "not_found");
}

static void test_effective(void **state)
{
    (void)state;
    fb_principal a = principal(FB_ROLE_ADMIN, "tm_aaaaaaaaaaaaaaaa");
    assert_int_equal(fb_policy_effective(&a), FB_PERM_ALL & ~FB_PERM_NETWORK_INTERNET);
    a.org_enabled = FB_PERM_NETWORK_INTERNET;
    assert_int_equal(fb_policy_effective(&a), FB_PERM_ALL);
    a.scopes = FB_PERM_TASKS_READ | FB_PERM_NETWORK_INTERNET;
    assert_int_equal(fb_policy_effective(&a), FB_PERM_TASKS_READ | FB_PERM_NETWORK_INTERNET);
    fb_principal o = principal(FB_ROLE_OPERATOR, "tm_aaaaaaaaaaaaaaaa");
    o.scopes = FB_PERM_AUDIT_READ | FB_PERM_SANDBOXES_EXEC;
    assert_int_equal(fb_policy_effective(&o), FB_PERM_AUDIT_READ);
    assert_int_equal(fb_policy_effective(NULL), 0);
}

/* ---- rules about resources (rules.c) ------------------------------------------ */

static void expect(fb_verdict got, const fb_decision *d, fb_verdict want, const char *reason)
{
    if (got != want || d->verdict != want || strcmp(d->reason, reason) != 0)
        fail_msg("got %s '%s', want %s '%s'", fb_verdict_name(got), d->reason, fb_verdict_name(want), reason);
}

static void test_visibility(void **state)
{
    (void)state;
    fb_principal dev = principal(FB_ROLE_DEVELOPER, "tm_a"), admin = principal(FB_ROLE_ADMIN, "tm_z");
    assert_true(fb_policy_can_see(&dev, "tm_a"));
    assert_false(fb_policy_can_see(&dev, "tm_b"));
    assert_true(fb_policy_can_see(&admin, "tm_b"));
    assert_false(fb_policy_can_see(&dev, ""));
    assert_false(fb_policy_can_see(&admin, NULL));
    assert_false(fb_policy_can_see(NULL, "tm_a"));
    fb_principal liar = dev;
    liar.is_admin = true; /* admin flag without the admin role */
    assert_false(fb_policy_can_see(&liar, "tm_b"));
    fb_principal teamless = principal(FB_ROLE_VIEWER, "");
    assert_false(fb_policy_can_see(&teamless, ""));
}

/* Org gates: what spans every team is for admins, whatever the scopes. */
static void test_org_wide(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal admin = principal(FB_ROLE_ADMIN, "tm_z"), operator = principal(FB_ROLE_OPERATOR, "tm_a");
    expect(fb_policy_org_wide(&admin, "the audit log", &d), &d, FB_ALLOW, "admin");
    expect(fb_policy_org_wide(&operator, "the audit log", &d), &d, FB_DENY,
           "the audit log spans all teams: admins only");
    fb_principal liar = operator;
    liar.is_admin = true; /* admin flag without the admin role */
    expect(fb_policy_org_wide(&liar, "metrics", &d), &d, FB_DENY, "metrics spans all teams: admins only");
    assert_true(fb_policy_sees_all_teams(&admin));
    assert_false(fb_policy_sees_all_teams(&operator));
    assert_false(fb_policy_sees_all_teams(&liar));
    assert_false(fb_policy_sees_all_teams(NULL));
}

/* The owner/ceiling rule, once for creating and revoking keys. */
static void test_key_manage(void **state)
{
    (void)state;
    fb_decision d;
    const char *me = "us_0123456789abcdef", *other = "us_ffffffffffffffff";
    fb_principal dev = principal(FB_ROLE_DEVELOPER, "tm_a");
    expect(fb_policy_key_manage(&dev, me, FB_KEY_CREATE, &d), &d, FB_ALLOW, "allowed (own keys)");
    expect(fb_policy_key_manage(&dev, other, FB_KEY_CREATE, &d), &d, FB_NOT_FOUND, "no such user");
    expect(fb_policy_key_manage(&dev, other, FB_KEY_REVOKE, &d), &d, FB_NOT_FOUND, "no such API key");
    dev.scopes = FB_PERM_SANDBOXES_READ; /* a key without keys:manage */
    expect(fb_policy_key_manage(&dev, me, FB_KEY_CREATE, &d), &d, FB_DENY, "managing your API keys needs keys:manage");
    expect(fb_policy_key_manage(&dev, me, FB_KEY_REVOKE, &d), &d, FB_DENY, "revoking your API keys needs keys:manage");
    fb_principal admin = principal(FB_ROLE_ADMIN, "tm_z");
    expect(fb_policy_key_manage(&admin, other, FB_KEY_REVOKE, &d), &d, FB_ALLOW, "allowed (admin)");
    admin.scopes = FB_PERM_KEYS_MANAGE; /* an admin's key without admin:users */
    expect(fb_policy_key_manage(&admin, other, FB_KEY_CREATE, &d), &d, FB_DENY,
           "managing another user's API keys needs admin:users");
    expect(fb_policy_key_manage(&admin, other, FB_KEY_REVOKE, &d), &d, FB_DENY,
           "revoking another user's API key needs admin:users");
    fb_principal liar = principal(FB_ROLE_VIEWER, "tm_a");
    liar.is_admin = true;
    expect(fb_policy_key_manage(&liar, other, FB_KEY_CREATE, &d), &d, FB_DENY, "inconsistent principal");
    fb_principal anon;
    memset(&anon, 0, sizeof anon);
    expect(fb_policy_key_manage(&anon, "", FB_KEY_CREATE, &d), &d, FB_NOT_FOUND, "no such user");
    assert_int_equal(fb_policy_key_manage(NULL, me, FB_KEY_CREATE, NULL), FB_DENY);
}

static void test_key_strength(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal dev = principal(FB_ROLE_DEVELOPER, "tm_a");
    dev.scopes = FB_PERM_SANDBOXES_READ | FB_PERM_KEYS_MANAGE;
    expect(fb_policy_key_within_actor(&dev, FB_PERM_SANDBOXES_READ, &d), &d, FB_ALLOW, "allowed");
    expect(fb_policy_key_within_actor(&dev, FB_PERM_SANDBOXES_READ | FB_PERM_SANDBOXES_EXEC | FB_PERM_AUDIT_READ, &d),
           &d, FB_DENY, "a new key cannot hold more than the key or user creating it: sandboxes:exec, audit:read");
    expect(fb_policy_key_within_role(FB_ROLE_VIEWER, FB_PERM_TASKS_READ, &d), &d, FB_ALLOW, "allowed");
    expect(fb_policy_key_within_role(FB_ROLE_VIEWER, FB_PERM_TASKS_READ | FB_PERM_ADMIN_USERS, &d), &d, FB_DENY,
           "scopes exceed what role viewer allows: admin:users");
    expect(fb_policy_key_within_role(FB_ROLE_NONE, FB_PERM_TASKS_READ, &d), &d, FB_DENY,
           "scopes exceed what role none allows: tasks:read");
}

/* A key cannot outlive the key that creates it. */
static void test_key_expiry(void **state)
{
    (void)state;
    fb_decision d;
    struct timespec parent = {2000000000, 500}, same = parent, before = {2000000000, 499}, after = {2000000000, 501};
    expect(fb_policy_key_expiry(NULL, NULL, &d), &d, FB_ALLOW, "allowed (the creating key never expires)");
    expect(fb_policy_key_expiry(NULL, &after, &d), &d, FB_ALLOW, "allowed (the creating key never expires)");
    expect(fb_policy_key_expiry(&parent, &before, &d), &d, FB_ALLOW, "allowed");
    expect(fb_policy_key_expiry(&parent, &same, &d), &d, FB_ALLOW, "allowed");
    expect(fb_policy_key_expiry(&parent, &after, &d), &d, FB_DENY, "would outlive the creating key");
    expect(fb_policy_key_expiry(&parent, NULL, &d), &d, FB_DENY, "would outlive the creating key");
    struct timespec next_second = {2000000001, 0};
    expect(fb_policy_key_expiry(&parent, &next_second, &d), &d, FB_DENY, "would outlive the creating key");
}

/* Team quotas count sandboxes, memory and vCPUs (finding 15). */
static void test_quota(void **state)
{
    (void)state;
    fb_decision d;
    fb_quota_limits lim = {10, 8192, 32};
    fb_quota_usage used = {9, 7680, 30}, req = {1, 512, 2};
    expect(fb_policy_quota(&used, &req, &lim, &d), &d, FB_ALLOW, "allowed"); /* exactly full afterwards */
    used.count = 10;
    expect(fb_policy_quota(&used, &req, &lim, &d), &d, FB_DENY, "team quota exceeded: 10 of 10 sandboxes in use");
    used.count = 1;
    req.memory_mib = 513;
    expect(fb_policy_quota(&used, &req, &lim, &d), &d, FB_DENY,
           "team quota exceeded: 7680 of 8192 MiB of memory in use, 513 more asked");
    req.memory_mib = 1;
    req.vcpus = 3;
    expect(fb_policy_quota(&used, &req, &lim, &d), &d, FB_DENY,
           "team quota exceeded: 30 of 32 vCPUs in use, 3 more asked");
    /* 64 vCPUs in one request is refused however empty the team is. */
    fb_quota_usage none = {0, 0, 0}, huge = {1, 512, 64};
    expect(fb_policy_quota(&none, &huge, &lim, &d), &d, FB_DENY,
           "team quota exceeded: 0 of 32 vCPUs in use, 64 more asked");
    /* No wrap-around: an absurd request is a refusal, not an overflow. */
    fb_quota_usage wrap = {1, UINT64_MAX, 1};
    assert_int_equal(fb_policy_quota(&used, &wrap, &lim, &d), FB_DENY);
    fb_quota_usage over = {20, 0, 0};
    assert_int_equal(fb_policy_quota(&over, &none, &lim, &d), FB_DENY);
    assert_int_equal(fb_policy_quota(NULL, &req, &lim, NULL), FB_DENY);
}

static void test_needs_approval_verdict(void **state)
{
    (void)state;
    assert_string_equal(fb_verdict_name(FB_NEEDS_APPROVAL), "needs_approval");
    assert_string_equal(fb_verdict_name(FB_ALLOW), "allow");
    assert_string_equal(fb_verdict_name(FB_DENY), "deny");
    assert_string_equal(fb_verdict_name(FB_NOT_FOUND), "not_found");
    /* A zeroed decision is a denial: deny by default. */
    fb_decision d;
    memset(&d, 0, sizeof d);
    assert_int_equal(d.verdict, FB_DENY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perm_names), cmocka_unit_test(test_tools),       cmocka_unit_test(test_role_names),
        cmocka_unit_test(test_perms_parse_json), cmocka_unit_test(test_perms_format_json),
        cmocka_unit_test(test_role_table),       cmocka_unit_test(test_org_policy_first),
        cmocka_unit_test(test_key_scopes_narrow), cmocka_unit_test(test_several_bits),
        cmocka_unit_test(test_cross_team),       cmocka_unit_test(test_deny_by_default),
        cmocka_unit_test(test_effective),        cmocka_unit_test(test_visibility),
        cmocka_unit_test(test_org_wide),
        cmocka_unit_test(test_key_manage),       cmocka_unit_test(test_key_strength),
        cmocka_unit_test(test_key_expiry),       cmocka_unit_test(test_quota),
        cmocka_unit_test(test_needs_approval_verdict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
