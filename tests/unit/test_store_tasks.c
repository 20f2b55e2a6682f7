/*
 * test_store_tasks.c - unit tests for the task repository (src/store/tasks.h)
 * on a real SQLite store in a temporary state directory: a task's record
 * round-trips whole, updates keep the conversation unless given one, lists
 * are per team and newest first, unfinished tasks are this node's, events
 * are numbered and read after a position, approvals are decided once (a
 * second decision is a conflict, an unknown id not found) and expired in
 * bulk, and the typed errors (ENOTFOUND, ECOLLISION, EINVAL) come back.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_url.h"
#include "store/identity.h"
#include "store/store.h"
#include "store/tasks.h"

static int setup(void **state)
{
    test_store_fx *f = test_store_fx_new(state, "tasks", true);
    fb_err err = {{0}};
    fb_team t2 = {"tm_2", "other", TEST_T0};
    assert_int_equal(fb_store_team_insert(f->st, &t2, &err), FB_STORE_OK);
    return 0;
}

static fb_task_record task(const char *id, const char *team, const char *created, char *state)
{
    fb_task_record r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.team_id, sizeof r.team_id, "%s", team);
    snprintf(r.user_id, sizeof r.user_id, "us_1");
    snprintf(r.key_id, sizeof r.key_id, "key_000000000001");
    snprintf(r.provider, sizeof r.provider, "local");
    snprintf(r.model, sizeof r.model, "m1");
    snprintf(r.backend, sizeof r.backend, "jail");
    snprintf(r.state, sizeof r.state, "%s", state);
    snprintf(r.created_at, sizeof r.created_at, "%s", created);
    r.prompt = "do it";
    r.tools = "[\"bash\"]";
    r.approvals = "[]";
    r.network = "{\"allow\":[\"pypi.org\"]}";
    r.limits = "{\"max_turns\":3}";
    r.usage = "{\"turns\":0}";
    return r;
}

static void test_round_trip(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_task_record r = task("tk_1", "tm_1", "2026-12-01T10:00:00.000000000Z", "queued");
    assert_int_equal(fb_store_task_insert(f->st, &r, &err), FB_STORE_OK);
    assert_int_equal(fb_store_task_insert(f->st, &r, &err), FB_STORE_ECOLLISION);
    fb_task_record bad = task("tk_x", "tm_missing", "2026-12-01T10:00:00.000000000Z", "queued");
    assert_int_equal(fb_store_task_insert(f->st, &bad, &err), FB_STORE_ENOTFOUND);
    bad = task("tk_y", "tm_1", "2026-12-01T10:00:00.000000000Z", "sleeping");
    assert_int_equal(fb_store_task_insert(f->st, &bad, &err), FB_STORE_EINVAL);

    fb_task_record got;
    assert_int_equal(fb_store_task_get(f->st, "tk_1", &got, &err), FB_STORE_OK);
    assert_string_equal(got.state, "queued");
    assert_string_equal(got.provider, "local");
    assert_string_equal(got.key_id, "key_000000000001");
    assert_string_equal(got.network, "{\"allow\":[\"pypi.org\"]}");
    assert_string_equal(got.started_at, "");
    assert_null(got.system);
    assert_null(got.result);
    assert_null(got.conversation);
    fb_task_record_clear(&got);

    /* Running, then done: the conversation is kept when not given again. */
    r.state[0] = '\0';
    snprintf(r.state, sizeof r.state, "running");
    snprintf(r.sandbox_id, sizeof r.sandbox_id, "sb-1");
    snprintf(r.started_at, sizeof r.started_at, "2026-12-01T10:00:01.000000000Z");
    r.conversation = "{\"messages\":[]}";
    assert_int_equal(fb_store_task_update(f->st, &r, &err), FB_STORE_OK);
    snprintf(r.state, sizeof r.state, "succeeded");
    r.conversation = NULL;
    r.result = "done";
    r.usage = "{\"turns\":2}";
    snprintf(r.finished_at, sizeof r.finished_at, "2026-12-01T10:00:09.000000000Z");
    assert_int_equal(fb_store_task_update(f->st, &r, &err), FB_STORE_OK);
    assert_int_equal(fb_store_task_get(f->st, "tk_1", &got, &err), FB_STORE_OK);
    assert_string_equal(got.state, "succeeded");
    assert_string_equal(got.sandbox_id, "sb-1");
    assert_string_equal(got.result, "done");
    assert_string_equal(got.usage, "{\"turns\":2}");
    assert_string_equal(got.conversation, "{\"messages\":[]}");
    assert_string_equal(got.finished_at, "2026-12-01T10:00:09.000000000Z");
    fb_task_record_clear(&got);

    snprintf(r.id, sizeof r.id, "tk_none");
    assert_int_equal(fb_store_task_update(f->st, &r, &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_task_get(f->st, "tk_none", &got, &err), FB_STORE_ENOTFOUND);
}

static void test_lists(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_task_record a = task("tk_a", "tm_1", "2026-12-01T10:00:00.000000000Z", "running");
    fb_task_record b = task("tk_b", "tm_2", "2026-12-01T11:00:00.000000000Z", "waiting_approval");
    fb_task_record c = task("tk_c", "tm_1", "2026-12-01T12:00:00.000000000Z", "failed");
    assert_int_equal(fb_store_task_insert(f->st, &a, &err), 0);
    assert_int_equal(fb_store_task_insert(f->st, &b, &err), 0);
    assert_int_equal(fb_store_task_insert(f->st, &c, &err), 0);
    fb_task_record *recs = NULL;
    size_t n = 0;
    assert_int_equal(fb_store_task_list(f->st, "tm_1", &recs, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(recs[0].id, "tk_c");
    assert_string_equal(recs[1].id, "tk_a");
    assert_null(recs[0].conversation);
    fb_task_records_free(recs, n);
    assert_int_equal(fb_store_task_list(f->st, NULL, &recs, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(recs[1].id, "tk_b");
    fb_task_records_free(recs, n);
    assert_int_equal(fb_store_task_list(f->st, "tm_none", &recs, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_null(recs);

    char (*ids)[FB_ID_MAX] = NULL;
    assert_int_equal(fb_store_task_list_unfinished(f->st, &ids, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], "tk_a");
    assert_string_equal(ids[1], "tk_b");
    free(ids);
}

typedef struct seen {
    uint64_t seq[8];
    char types[8][16];
    char data[8][32];
    size_t n;
} seen;

static int collect(void *ctx, uint64_t seq, const char *type, const char *data, const char *at)
{
    seen *s = ctx;
    assert_string_equal(at, "2026-12-01T10:00:00.000000000Z");
    s->seq[s->n] = seq;
    snprintf(s->types[s->n], sizeof s->types[0], "%s", type);
    snprintf(s->data[s->n], sizeof s->data[0], "%s", data);
    return ++s->n == 2 && seq == 2 ? 1 : 0; /* stop early at seq 2 when reading from the start */
}

static void test_events(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_task_record r = task("tk_e", "tm_1", "2026-12-01T10:00:00.000000000Z", "running");
    assert_int_equal(fb_store_task_insert(f->st, &r, &err), 0);
    const char *at = "2026-12-01T10:00:00.000000000Z";
    uint64_t last = 99;
    assert_int_equal(fb_store_task_event_last(f->st, "tk_e", &last, &err), 0);
    assert_int_equal(last, 0);
    assert_int_equal(fb_store_task_event_append(f->st, "tk_e", 1, "state", "{\"state\":\"running\"}", at, &err), 0);
    assert_int_equal(fb_store_task_event_append(f->st, "tk_e", 2, "text", "{\"delta\":\"hi\"}", at, &err), 0);
    assert_int_equal(fb_store_task_event_append(f->st, "tk_e", 3, "usage", "{}", at, &err), 0);
    assert_int_equal(fb_store_task_event_append(f->st, "tk_e", 3, "usage", "{}", at, &err), FB_STORE_ECOLLISION);
    assert_int_equal(fb_store_task_event_append(f->st, "tk_none", 1, "x", "{}", at, &err), FB_STORE_ENOTFOUND);
    assert_int_equal(fb_store_task_event_append(f->st, "tk_e", 0, "x", "{}", at, &err), FB_STORE_EINVAL);
    assert_int_equal(fb_store_task_event_last(f->st, "tk_e", &last, &err), 0);
    assert_int_equal(last, 3);
    seen s = {0};
    assert_int_equal(fb_store_task_events(f->st, "tk_e", 0, 10, collect, &s, &err), 0);
    assert_int_equal(s.n, 2); /* the callback stopped it */
    assert_string_equal(s.types[1], "text");
    assert_string_equal(s.data[1], "{\"delta\":\"hi\"}");
    memset(&s, 0, sizeof s);
    assert_int_equal(fb_store_task_events(f->st, "tk_e", 2, 10, collect, &s, &err), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seq[0], 3);
    memset(&s, 0, sizeof s);
    assert_int_equal(fb_store_task_events(f->st, "tk_e", 1, 1, collect, &s, &err), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seq[0], 2);
}

static void test_approvals(void **state)
{
    test_store_fx *f = *state;
    fb_err err = {{0}};
    fb_task_record r = task("tk_p", "tm_1", "2026-12-01T10:00:00.000000000Z", "waiting_approval");
    assert_int_equal(fb_store_task_insert(f->st, &r, &err), 0);
    fb_task_approval_record a = {.id = "ap_1", .task_id = "tk_p", .call_id = "call_1", .tool = "bash",
                                 .created_at = "2026-12-01T10:00:01.000000000Z",
                                 .expires_at = "2026-12-01T10:10:01.000000000Z", .input = "{\"command\":\"ls\"}"};
    assert_int_equal(fb_store_task_approval_insert(f->st, &a, &err), 0);
    assert_int_equal(fb_store_task_approval_insert(f->st, &a, &err), FB_STORE_ECOLLISION);
    fb_task_approval_record b = a;
    snprintf(b.id, sizeof b.id, "ap_2");
    snprintf(b.created_at, sizeof b.created_at, "2026-12-01T10:00:02.000000000Z");
    assert_int_equal(fb_store_task_approval_insert(f->st, &b, &err), 0);

    const char *at = "2026-12-01T10:00:05.000000000Z";
    assert_int_equal(fb_store_task_approval_decide(f->st, "tk_p", "ap_1", "approved", "us_1", "looks fine", at, &err),
                     0);
    assert_int_equal(fb_store_task_approval_decide(f->st, "tk_p", "ap_1", "denied", "us_1", NULL, at, &err),
                     FB_STORE_ECONFLICT);
    assert_int_equal(fb_store_task_approval_decide(f->st, "tk_p", "ap_9", "denied", "us_1", NULL, at, &err),
                     FB_STORE_ENOTFOUND);
    /* Another task's id is not this task's approval. */
    assert_int_equal(fb_store_task_approval_decide(f->st, "tk_other", "ap_2", "denied", "us_1", NULL, at, &err),
                     FB_STORE_ECONFLICT);
    assert_int_equal(fb_store_task_approval_decide(f->st, "tk_p", "ap_2", "maybe", "us_1", NULL, at, &err),
                     FB_STORE_EINVAL);
    size_t n = 0;
    assert_int_equal(fb_store_task_approval_expire_all(f->st, "tk_p", at, &n, &err), 0);
    assert_int_equal(n, 1);
    fb_task_approval_record *list = NULL;
    assert_int_equal(fb_store_task_approval_list(f->st, "tk_p", &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "ap_1");
    assert_string_equal(list[0].state, "approved");
    assert_string_equal(list[0].decided_by, "us_1");
    assert_string_equal(list[0].reason, "looks fine");
    assert_string_equal(list[0].input, "{\"command\":\"ls\"}");
    assert_string_equal(list[1].state, "expired");
    assert_string_equal(list[1].decided_by, "");
    assert_null(list[1].reason);
    assert_string_equal(list[1].decided_at, at);
    fb_task_approvals_free(list, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_lists, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_events, setup, test_store_fx_free),
        cmocka_unit_test_setup_teardown(test_approvals, setup, test_store_fx_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
