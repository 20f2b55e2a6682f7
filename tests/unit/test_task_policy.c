/*
 * test_task_policy.c - unit tests for layer 4's rules (policy.h, "tasks";
 * src/policy/tasks.c): grantable tools per role and key scope, the check of
 * a task request's tools and approvals, the decision for one tool call,
 * who may decide a held call, and budgets against defaults and maxima.
 * Every case asserts the exact verdict and reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "policy/policy.h"

#define T(x) FB_TOOLSET_OF(FB_TOOL_##x)

static fb_principal who(fb_role role, const char *team, const char *user)
{
    fb_principal p;
    memset(&p, 0, sizeof p);
    snprintf(p.user_id, sizeof p.user_id, "%s", user);
    snprintf(p.team_id, sizeof p.team_id, "%s", team);
    p.role = role;
    p.is_admin = role == FB_ROLE_ADMIN;
    p.scopes = FB_PERM_ALL;
    return p;
}

static void test_grantable(void **state)
{
    (void)state;
    fb_principal dev = who(FB_ROLE_DEVELOPER, "tm_a", "us_1");
    assert_int_equal(fb_policy_task_grantable(&dev), FB_TOOLSET_ALL);
    fb_principal op = who(FB_ROLE_OPERATOR, "tm_a", "us_1");
    assert_int_equal(fb_policy_task_grantable(&op), 0);
    /* A key scoped to tools:files only grants the reading tools. */
    dev.scopes = FB_PERM_TASKS_CREATE | FB_PERM_TOOLS_FILES;
    assert_int_equal(fb_policy_task_grantable(&dev), T(FILE_READ) | T(GLOB) | T(GREP));
    assert_int_equal(fb_policy_task_default_tools(&dev), T(FILE_READ) | T(GLOB) | T(GREP));
    dev.scopes = FB_PERM_ALL;
    assert_int_equal(fb_policy_task_default_tools(&dev),
                     T(BASH) | T(FILE_READ) | T(FILE_WRITE) | T(FILE_EDIT) | T(GLOB) | T(GREP));
    /* An inconsistent principal grants nothing. */
    dev.is_admin = true;
    assert_int_equal(fb_policy_task_grantable(&dev), 0);
}

static void test_request_tools(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal dev = who(FB_ROLE_DEVELOPER, "tm_a", "us_1");
    assert_int_equal(fb_policy_task_tools(&dev, T(BASH) | T(WEB_FETCH), T(BASH), &d), FB_ALLOW);
    dev.scopes = FB_PERM_TASKS_CREATE | FB_PERM_TOOLS_FILES;
    assert_int_equal(fb_policy_task_tools(&dev, T(GREP) | T(BASH) | T(FILE_WRITE), 0, &d), FB_DENY);
    assert_string_equal(d.reason, "tool bash needs tools:shell, which this key does not hold");
    /* Approvals name tools too: one the creator cannot grant is refused. */
    assert_int_equal(fb_policy_task_tools(&dev, T(GREP), T(FILE_EDIT), &d), FB_DENY);
    assert_string_equal(d.reason, "tool file_edit needs tools:edit, which this key does not hold");
    fb_principal viewer = who(FB_ROLE_VIEWER, "tm_a", "us_2");
    assert_int_equal(fb_policy_task_tools(&viewer, T(GIT), 0, &d), FB_DENY);
    assert_string_equal(d.reason, "tool git needs tools:shell, which this role does not hold");
    assert_int_equal(fb_policy_task_tools(&viewer, 0, 0, &d), FB_ALLOW);
    assert_int_equal(fb_policy_task_tools(&viewer, 1u << 30, 0, &d), FB_DENY);
    assert_int_equal(fb_policy_task_tools(NULL, 0, 0, &d), FB_DENY);
}

static void test_call(void **state)
{
    (void)state;
    fb_decision d;
    fb_toolset granted = T(BASH) | T(FILE_READ);
    assert_int_equal(fb_policy_task_call(granted, 0, FB_TOOL_BASH, "bash", &d), FB_ALLOW);
    assert_string_equal(d.reason, "tool bash granted");
    assert_int_equal(fb_policy_task_call(granted, 0, FB_TOOL_WEB_FETCH, "web_fetch", &d), FB_DENY);
    assert_string_equal(d.reason, "tool web_fetch was not granted to this task");
    assert_int_equal(fb_policy_task_call(granted, T(BASH), FB_TOOL_BASH, "bash", &d), FB_NEEDS_APPROVAL);
    assert_string_equal(d.reason, "tool bash needs a person's approval");
    /* Held but not granted: refused, never held. */
    assert_int_equal(fb_policy_task_call(granted, T(GIT), FB_TOOL_GIT, "git", &d), FB_DENY);
    assert_int_equal(fb_policy_task_call(granted, 0, -1, "rm\n-rf", &d), FB_DENY);
    assert_string_equal(d.reason, "no tool named 'rm?-rf'");
    assert_int_equal(fb_policy_task_call(granted, 0, FB_TOOL_COUNT, NULL, &d), FB_DENY);
    assert_string_equal(d.reason, "no tool named ''");
}

static void test_approver(void **state)
{
    (void)state;
    fb_decision d;
    fb_principal op = who(FB_ROLE_OPERATOR, "tm_a", "us_op");
    assert_int_equal(fb_policy_task_approver(&op, "tm_a", "us_dev", false, &d), FB_ALLOW);
    /* Another team's task does not exist for a non-admin. */
    assert_int_equal(fb_policy_task_approver(&op, "tm_b", "us_dev", false, &d), FB_NOT_FOUND);
    fb_principal admin = who(FB_ROLE_ADMIN, "tm_x", "us_adm");
    assert_int_equal(fb_policy_task_approver(&admin, "tm_b", "us_dev", false, &d), FB_ALLOW);
    /* The creator, unless self_approval. */
    fb_principal dev = who(FB_ROLE_DEVELOPER, "tm_a", "us_dev");
    assert_int_equal(fb_policy_task_approver(&dev, "tm_a", "us_dev", false, &d), FB_DENY);
    assert_string_equal(d.reason, "the task's creator cannot approve its tool calls (tasks.self_approval is false)");
    assert_int_equal(fb_policy_task_approver(&dev, "tm_a", "us_dev", true, &d), FB_ALLOW);
    fb_principal viewer = who(FB_ROLE_VIEWER, "tm_a", "us_v");
    assert_int_equal(fb_policy_task_approver(&viewer, "tm_a", "us_dev", false, &d), FB_DENY);
    assert_string_equal(d.reason, "role viewer lacks tasks:approve");
    op.scopes = FB_PERM_TASKS_READ;
    assert_int_equal(fb_policy_task_approver(&op, "tm_a", "us_dev", false, &d), FB_DENY);
    assert_string_equal(d.reason, "key scope lacks tasks:approve");
}

static void test_budget(void **state)
{
    (void)state;
    fb_decision d;
    fb_task_budget def = {20, 200000, 50, 900}, max = {100, 1000000, 200, 3600}, out;
    fb_task_budget req = {0};
    assert_int_equal(fb_policy_task_budget(&req, &def, &max, &out, &d), FB_ALLOW);
    assert_true(out.max_turns == 20 && out.max_tokens == 200000 && out.max_tool_calls == 50 && out.timeout_s == 900);
    req = (fb_task_budget){5, 0, 200, 0};
    assert_int_equal(fb_policy_task_budget(&req, &def, &max, &out, &d), FB_ALLOW);
    assert_true(out.max_turns == 5 && out.max_tokens == 200000 && out.max_tool_calls == 200 && out.timeout_s == 900);
    req = (fb_task_budget){0, 0, 0, 3601};
    assert_int_equal(fb_policy_task_budget(&req, &def, &max, &out, &d), FB_DENY);
    assert_string_equal(d.reason, "limits.timeout_s 3601 is above the organisation's maximum of 3600");
    req = (fb_task_budget){101, 0, 0, 0};
    assert_int_equal(fb_policy_task_budget(&req, &def, &max, &out, &d), FB_DENY);
    assert_string_equal(d.reason, "limits.max_turns 101 is above the organisation's maximum of 100");
    /* A default above the maximum is lowered to it. */
    fb_task_budget small = {10, 1000, 5, 60};
    assert_int_equal(fb_policy_task_budget(NULL, &def, &small, &out, &d), FB_ALLOW);
    assert_true(out.max_turns == 10 && out.max_tokens == 1000 && out.max_tool_calls == 5 && out.timeout_s == 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grantable), cmocka_unit_test(test_request_tools), cmocka_unit_test(test_call),
        cmocka_unit_test(test_approver),  cmocka_unit_test(test_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
