"""Tasks through the API (docs/tasks.md, docs/openapi.yaml): the whole loop -
gateway, task service, engine, provider layer, jail sandbox - driven through
the Python client against a scripted model (tests/tools/fake_llm.py).

Each test scripts the model's replies, creates a task and asserts exactly
how it ended: its state, result or error, usage, the events it streamed,
what the engine sent back to the model, and where it matters the audit log
and the sandbox.  The attacks (prompt injection, provider keys inside the
sandbox, tools not granted) are in test_tasks_security.py.
"""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import FORGEBOX
from gateway_fixtures import declared_too_large

from task_helpers import (APPROVAL_TIMEOUT_S, MODEL, ORG_MAX, PROVIDER_KEY, WRONG_KEY, env_fixtures,
                          call, events, expect_error, make_gateway, of_type, results,
                          say, tool_messages, tools, wait_for_event, wait_state)

FINAL = {"succeeded", "failed", "cancelled", "budget_exceeded"}

env, clean = env_fixtures()


def no_key(text):
    assert PROVIDER_KEY not in text and WRONG_KEY not in text
    for k in (PROVIDER_KEY, WRONG_KEY):
        body = k[3:]
        for i in range(len(body) - 11):
            assert body[i:i + 12] not in text, text


# ---- the states ---------------------------------------------------------------


@pytest.mark.parametrize("provider", ["fake", "fake_anthropic"])
def test_succeeded_runs_a_tool_and_reports_everything(env, provider):
    env.script(tools(call("bash", {"command": "echo hello > a.txt; cat /workspace/a.txt; id -u"}, "c1"),
                     text="Let me run it.", usage=[100, 20]),
               say("All done: hello.", usage=[150, 10]))
    t = env.create(prompt="write hello", provider=provider, tools=["bash"])
    assert t["state"] in ("queued", "running")
    assert t["provider"] == provider and t["model"] == MODEL and t["prompt"] == "write hello"
    assert t["tools"] == ["bash"] and t["backend"] == "jail"
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "succeeded", t
    assert t["result"] == "All done: hello."
    assert t["error"] is None
    assert t["usage"] == {"input_tokens": 250, "output_tokens": 30, "turns": 2, "tool_calls": 1}
    assert t["finished_at"] and t["created_at"] and t["team_id"] == env.team_a
    assert t["created_by"] == env.dev.user_id
    evs = events(env.dev, t["id"])
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e["type"] for e in of_type(evs, "tool_call", "tool_result")] == ["tool_call", "tool_result"]
    tc = of_type(evs, "tool_call")[0]["data"]
    assert tc == {"call_id": "c1", "tool": "bash",
                  "input": {"command": "echo hello > a.txt; cat /workspace/a.txt; id -u"}}
    r = results(evs)["c1"]
    assert r["output"].startswith("hello\n1000") and r["is_error"] is False
    assert "".join(e["data"]["delta"] for e in of_type(evs, "text")) == "Let me run it.All done: hello."
    assert [e["data"]["state"] for e in of_type(evs, "state")] == ["queued", "running", "succeeded"]
    assert evs[0]["type"] == "message" and evs[0]["data"] == {"role": "user", "content": "write hello"}
    assert [e["data"] for e in of_type(evs, "usage")][-1] == t["usage"]
    # The model was offered exactly the tool granted, and got the output back as a tool result.
    first, second = env.fake.requests
    offered = [x.get("name") or x["function"]["name"] for x in first["body"]["tools"]]
    assert offered == ["bash"]
    if provider == "fake":
        assert tool_messages(second)[0]["tool_call_id"] == "c1"
        assert tool_messages(second)[0]["content"].startswith("hello\n1000")
    else:
        last = second["body"]["messages"][-1]["content"][0]
        assert last["type"] == "tool_result" and last["tool_use_id"] == "c1"
    listed = env.dev.list_tasks()["tasks"]
    assert listed[0]["id"] == t["id"]


def test_failed_on_wrong_provider_key_says_401_without_the_key(env):
    env.script(say("never reached"))
    t = env.create(provider="wrongkey")
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "failed"
    assert "wrongkey" in t["error"] and "401" in t["error"], t["error"]
    no_key(json.dumps(t))
    no_key(json.dumps(events(env.dev, t["id"])))
    assert len(env.fake.requests) == 1 and env.fake.script == [say("never reached")]


@pytest.mark.parametrize("reply,word", [({"text": "abcdefghijkl", "malformed": True}, "malformed"),
                                         ({"text": "abcdefghijklmnopqrstuvwx", "cut": True}, "cut"),
                                         ({"status": 500, "message": "boom"}, "500")])
def test_failed_on_a_broken_provider_reply(env, reply, word):
    env.script(reply)
    t = env.create()
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "failed", t
    assert t["error"].startswith("provider fake: "), t["error"]
    assert word in t["error"] or (word == "cut" and "ended before" in t["error"]), t["error"]
    no_key(t["error"])
    evs = events(env.dev, t["id"])
    assert evs[-1]["type"] == "state" and evs[-1]["data"]["state"] == "failed"
    assert evs[-1]["data"]["error"] == t["error"]


def test_failed_on_unknown_model(env):
    env.script()
    t = env.create(model="no-such-model")
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "failed" and "no-such-model" in t["error"], t["error"]


def test_cancel_during_a_running_bash_tool_destroys_the_sandbox(env):
    env.script(tools(call("bash", {"command": "echo started; sleep 60"}, "c1")), say("unreachable"))
    t = env.create(tools=["bash"])
    wait_for_event(env.dev, t["id"], "tool_call")
    time.sleep(0.5)      # the command is running in the sandbox now
    sid = env.dev.get_task(t["id"])["sandbox_id"]
    assert sid and env.dev.get_sandbox(sid)["id"] == sid
    t0 = time.monotonic()
    c = env.dev.cancel_task(t["id"])
    assert c["state"] == "cancelled"
    t = wait_state(env.dev, t["id"], FINAL, timeout=15)
    assert time.monotonic() - t0 < 10
    assert t["state"] == "cancelled" and t["finished_at"]
    expect_error(lambda: env.dev.get_sandbox(sid), 404, "not_found")
    assert sid not in [s["id"] for s in env.dev.list_sandboxes()["sandboxes"]]
    evs = events(env.dev, t["id"])
    assert evs[-1]["type"] == "state" and evs[-1]["data"]["state"] == "cancelled"
    assert len(env.fake.requests) == 1      # the model was not asked again
    # Cancelling an ended task is a conflict.
    expect_error(lambda: env.dev.cancel_task(t["id"]), 409, "conflict")


# ---- budgets --------------------------------------------------------------------


def bash_turn(i):
    return tools(call("bash", {"command": f"echo turn{i}"}, f"c{i}"))


def test_budget_max_turns(env):
    env.script(*[bash_turn(i) for i in range(5)])
    t = env.create(tools=["bash"], limits={"max_turns": 2})
    assert t["limits"]["max_turns"] == 2
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "budget_exceeded", t
    assert "max_turns" in t["error"] and "2" in t["error"]
    assert t["usage"]["turns"] == 2
    assert len(env.fake.requests) == 2


def test_budget_max_tool_calls(env):
    env.script(tools(call("bash", {"command": "echo a"}, "a1"), call("bash", {"command": "echo b"}, "a2"),
                     call("bash", {"command": "echo c > c.txt"}, "a3")),
               tools(call("bash", {"command": "echo d"}, "a4")), say("done"))
    t = env.create(tools=["bash"], limits={"max_tool_calls": 2})
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "budget_exceeded", t
    assert "max_tool_calls" in t["error"]
    assert t["usage"]["tool_calls"] == 2
    assert set(results(events(env.dev, t["id"]))) == {"a1", "a2"}


def test_budget_max_tokens(env):
    env.script(*[tools(call("bash", {"command": "true"}, f"k{i}"), usage=[11, 7]) for i in range(5)])
    t = env.create(tools=["bash"], limits={"max_tokens": 30})
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "budget_exceeded", t
    assert "max_tokens" in t["error"]
    assert t["usage"]["input_tokens"] + t["usage"]["output_tokens"] == 36   # the second turn crossed it
    assert t["usage"]["turns"] == 2


def test_budget_timeout_stops_a_running_tool(env):
    env.script(tools(call("bash", {"command": "sleep 60"}, "s1")), say("unreachable"))
    t0 = time.monotonic()
    t = env.create(tools=["bash"], limits={"timeout_s": 2})
    t = wait_state(env.dev, t["id"], FINAL, timeout=30)
    assert time.monotonic() - t0 < 15
    assert t["state"] == "budget_exceeded", t
    assert "timeout_s" in t["error"]


@pytest.mark.parametrize("field", sorted(ORG_MAX))
def test_limits_above_org_maxima_are_400(env, field):
    e = expect_error(lambda: env.create(limits={field: ORG_MAX[field] + 1}), 400, "bad_request")
    assert field in e.message


# ---- approvals ------------------------------------------------------------------


def held_task(env, command="echo approved-ran > ran.txt; echo ok", **kw):
    env.script(tools(call("bash", {"command": command}, "h1")),
               tools(call("glob", {"pattern": "*"}, "g1")), say("finished"))
    t = env.create(tools=["bash", "glob"], approvals=["bash"], **kw)
    assert "bash" in t["approvals"]
    ev = wait_for_event(env.dev, t["id"], "approval_required")
    assert ev["data"]["tool"] == "bash" and ev["data"]["call_id"] == "h1"
    assert ev["data"]["input"] == {"command": command}
    assert wait_state(env.dev, t["id"], "waiting_approval")["state"] == "waiting_approval"
    [a] = env.dev.task_approvals(t["id"])["approvals"]
    assert a["state"] == "pending" and a["tool"] == "bash" and a["input"] == {"command": command}
    assert a["id"] == ev["data"]["approval_id"] and a["task_id"] == t["id"]
    return t, a


def test_approve_runs_the_held_call(env):
    t, a = held_task(env)
    d = env.dev2.decide_approval(t["id"], a["id"], "approve", reason="looks fine")
    assert d["state"] == "approved" and d["decided_by"] == env.dev2.user_id
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "succeeded" and t["result"] == "finished"
    evs = events(env.dev, t["id"])
    assert [e["data"]["state"] for e in of_type(evs, "state")] == ["queued", "running", "waiting_approval",
                                                                    "running", "succeeded"]
    assert results(evs)["h1"] == {"call_id": "h1", "tool": "bash", "output": "ok\n[exit code: 0]",
                                  "is_error": False}
    assert "ran.txt" in results(evs)["g1"]["output"]
    [res] = of_type(evs, "approval_resolved")
    assert res["data"]["decision"] == "approved" and res["data"]["approval_id"] == a["id"]
    assert res["data"]["decided_by"] == env.dev2.user_id
    [a2] = env.dev.task_approvals(t["id"])["approvals"]
    assert a2["state"] == "approved" and a2["reason"] == "looks fine" and a2["decided_at"]
    # Decided once: a second decision is a conflict.
    expect_error(lambda: env.dev2.decide_approval(t["id"], a["id"], "deny"), 409, "conflict")


def test_an_operator_may_approve(env):
    t, a = held_task(env)
    assert env.operator.decide_approval(t["id"], a["id"], "approve")["state"] == "approved"
    assert wait_state(env.dev, t["id"], FINAL)["state"] == "succeeded"


def test_deny_tells_the_model_and_runs_nothing(env):
    t, a = held_task(env)
    d = env.dev2.decide_approval(t["id"], a["id"], "deny", reason="not today")
    assert d["state"] == "denied"
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "succeeded"
    r = results(events(env.dev, t["id"]))
    assert r["h1"]["is_error"] is True and "denied" in r["h1"]["output"]
    assert "not today" in r["h1"]["output"]        # the denier's reason reaches the model
    assert "ran.txt" not in r["g1"]["output"]      # the held command never ran
    told = tool_messages(env.fake.requests[1])
    assert told[0]["tool_call_id"] == "h1" and "denied" in told[0]["content"]


def test_undecided_approval_expires_and_is_denied(env):
    t, a = held_task(env)
    t = wait_state(env.dev, t["id"], FINAL, timeout=APPROVAL_TIMEOUT_S + 20)
    assert t["state"] == "succeeded"
    [a2] = env.dev.task_approvals(t["id"])["approvals"]
    assert a2["state"] == "expired"
    evs = events(env.dev, t["id"])
    [res] = of_type(evs, "approval_resolved")
    assert res["data"]["decision"] == "expired"
    assert results(evs)["h1"]["is_error"] is True and "in time" in results(evs)["h1"]["output"]
    assert "ran.txt" not in results(evs)["g1"]["output"]


def test_self_approval_is_refused(env):
    t, a = held_task(env)
    expect_error(lambda: env.dev.decide_approval(t["id"], a["id"], "approve"), 403, "forbidden")
    assert env.dev.task_approvals(t["id"])["approvals"][0]["state"] == "pending"
    env.dev2.decide_approval(t["id"], a["id"], "deny")


def test_a_viewer_cannot_decide(env):
    t, a = held_task(env)
    expect_error(lambda: env.viewer.decide_approval(t["id"], a["id"], "approve"), 403, "forbidden")
    # ...but may read the task and its approvals.
    assert env.viewer.task_approvals(t["id"])["approvals"][0]["state"] == "pending"
    env.dev2.decide_approval(t["id"], a["id"], "deny")


def test_another_teams_approver_gets_404(env):
    t, a = held_task(env)
    expect_error(lambda: env.other_op.decide_approval(t["id"], a["id"], "approve"), 404, "not_found")
    expect_error(lambda: env.other_op.task_approvals(t["id"]), 404, "not_found")
    assert env.dev.task_approvals(t["id"])["approvals"][0]["state"] == "pending"
    env.dev2.decide_approval(t["id"], a["id"], "deny")


def test_unknown_approval_is_404_and_bad_decision_400(env):
    t, a = held_task(env)
    expect_error(lambda: env.dev2.decide_approval(t["id"], "ap-doesnotexist", "approve"), 404, "not_found")
    st, _, body = env.dev2.request("POST", f"/v1/tasks/{t['id']}/approvals/{a['id']}",
                                   body={"decision": "maybe"})
    assert st == 400 and body["error"]["code"] == "bad_request"
    env.dev2.decide_approval(t["id"], a["id"], "deny")


def test_org_policy_forces_an_approval_the_request_did_not_ask(env):
    """forgebox.yaml: tasks.require_approval: [git]."""
    env.script(tools(call("git", {"args": ["init", "-q"]}, "git1")), say("inited"))
    t = env.create(tools=["git"], approvals=[])
    ev = wait_for_event(env.dev, t["id"], "approval_required")
    assert ev["data"]["tool"] == "git"
    env.dev2.decide_approval(t["id"], ev["data"]["approval_id"], "approve")
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "succeeded"
    assert results(events(env.dev, t["id"]))["git1"]["is_error"] is False
    assert [a["state"] for a in env.dev.task_approvals(t["id"])["approvals"]] == ["approved"]


def test_the_task_shows_the_approvals_org_policy_forces(env):
    env.script(say("nothing to do"))
    t = env.create(tools=["git", "bash"], approvals=["bash"])
    assert t["approvals"] == ["bash", "git"]
    assert env.dev.get_task(t["id"])["approvals"] == ["bash", "git"]


# ---- validation and permissions at creation ---------------------------------------


def raw_create(client, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.request("POST", "/v1/tasks", body=data, **kw)


GOOD = {"prompt": "p", "provider": "fake", "model": MODEL, "backend": "jail"}


@pytest.mark.parametrize("body,needle", [
    (b'{"prompt": "p", "provider": ', None),
    (b'["not an object"]', None),
    (dict(GOOD, colour="red"), "colour"),
    (dict(GOOD, prompt=""), "prompt"),
    ({"provider": "fake", "model": MODEL}, "prompt"),
    (dict(GOOD, provider="nosuch"), "nosuch"),
    (dict(GOOD, model=""), "model"),
    (dict(GOOD, tools=["bash", "teleport"]), "teleport"),
    (dict(GOOD, tools="bash"), "tools"),
    (dict(GOOD, approvals=["teleport"]), "teleport"),
    (dict(GOOD, backend="cloud"), "backend"),
    (dict(GOOD, limits={"max_turns": -1}), "max_turns"),
    (dict(GOOD, limits={"max_turns": "5"}), "max_turns"),
    (dict(GOOD, limits={"max_steps": 5}), "max_steps"),
])
def test_bad_create_requests_are_400(env, body, needle):
    env.script()
    st, _, data = raw_create(env.dev, body)
    assert st == 400, data
    assert data["error"]["code"] == "bad_request"
    if needle:
        assert needle in data["error"]["message"], data
    assert env.fake.requests == []


def test_statuses_are_the_documented_ones(env):
    """Each answer's status is one docs/openapi.yaml lists for its route."""
    import yaml
    doc = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.yaml")))

    def check(method, route, st):
        assert str(st) in doc["paths"][route][method.lower()]["responses"], (method, route, st)

    env.script(tools(call("bash", {"command": "sleep 30"}, "s1")))
    st, _, t = raw_create(env.dev, dict(GOOD, tools=["bash"]))
    assert st == 201
    check("POST", "/v1/tasks", st)
    tid = t["id"]
    wait_for_event(env.dev, tid, "tool_call")
    for method, path, route, body, want in [
            ("GET", "/v1/tasks", "/v1/tasks", None, 200),
            ("GET", f"/v1/tasks/{tid}", "/v1/tasks/{id}", None, 200),
            ("GET", f"/v1/tasks/{tid}/approvals", "/v1/tasks/{id}/approvals", None, 200),
            ("POST", f"/v1/tasks/{tid}/approvals/ap_0000000000000000", "/v1/tasks/{id}/approvals/{aid}",
             {"decision": "approve"}, 404),
            ("POST", f"/v1/tasks/{tid}/messages", "/v1/tasks/{id}/messages", {"content": "x"}, 409),
            ("POST", f"/v1/tasks/{tid}/cancel", "/v1/tasks/{id}/cancel", None, 200),
            ("POST", f"/v1/tasks/{tid}/cancel", "/v1/tasks/{id}/cancel", None, 409),
            ("GET", f"/v1/tasks/{tid}/events?after=x", "/v1/tasks/{id}/events", None, 400)]:
        who = env.dev2 if "/approvals/" in path else env.dev     # the creator may not decide at all
        st, _, _ = who.request(method, path, body=json.dumps(body) if body else None, raw=True)
        assert st == want, (method, path, st)
        check(method, route, st)


def test_oversized_prompt_is_400_and_oversized_body_413(env):
    st, _, data = raw_create(env.dev, dict(GOOD, prompt="x" * (256 * 1024 + 1)))
    assert st == 400 and data["error"]["code"] == "bad_request", data
    assert "prompt" in data["error"]["message"]
    # A 2 MiB body: refused from its headers (a raw socket: see declared_too_large).
    head, body = declared_too_large(env.dev, "POST", "/v1/tasks")
    assert head.startswith(b"HTTP/1.1 413 ") and b'"too_large"' in body, (head, body[:300])
    # Exactly the maximum is fine.
    env.script(say("ok"))
    t = env.create(prompt="x" * (256 * 1024))
    assert wait_state(env.dev, t["id"], FINAL)["state"] == "succeeded"


def test_no_key_is_401(env):
    st, _, data = raw_create(env.g.client(None), GOOD)
    assert st == 401 and data["error"]["code"] == "unauthorized"
    st, _, data = env.g.client(None).request("GET", "/v1/tasks")
    assert st == 401


def test_missing_tasks_create_scope_is_403(env):
    st, _, data = raw_create(env.readonly, GOOD)
    assert st == 403 and data["error"]["code"] == "forbidden"
    assert "tasks:create" in data["error"]["message"]
    # A viewer's role lacks it too.
    st, _, data = raw_create(env.viewer, GOOD)
    assert st == 403


def test_a_tool_the_key_cannot_grant_is_403_at_creation(env):
    env.script()
    e = expect_error(lambda: env.create(client=env.noshell, tools=["bash"]), 403, "forbidden")
    assert "bash" in e.message or "tools:shell" in e.message
    e = expect_error(lambda: env.create(client=env.noshell, tools=["file_read", "git"]), 403, "forbidden")
    assert env.fake.requests == []
    # What it may grant is fine, and the default leaves out what it may not.
    env.script(say("ok"))
    t = env.create(client=env.noshell)
    assert "bash" not in t["tools"] and "git" not in t["tools"] and "file_read" in t["tools"]
    assert wait_state(env.noshell, t["id"], FINAL)["state"] == "succeeded"


def test_network_grant_needs_network_internet(env):
    """A developer's role lacks network:internet (only admins hold it)."""
    e = expect_error(lambda: env.create(tools=["web_fetch"], network=["allowed.example"]), 403, "forbidden")
    assert "network:internet" in e.message
    # An admin holds it, but a grant must still be one the organisation allows.
    e = expect_error(lambda: env.create(client=env.admin, tools=["web_fetch"], network=["*"]), 400,
                     "bad_request")
    e = expect_error(lambda: env.create(client=env.admin, tools=["web_fetch"], network=["other.example"]),
                     403, "forbidden")


# ---- another team ---------------------------------------------------------------------


def test_another_teams_task_is_404_on_every_route(env):
    t, a = held_task(env)
    tid = t["id"]
    o = env.other
    expect_error(lambda: o.get_task(tid), 404, "not_found")
    expect_error(lambda: o.task_events(tid), 404, "not_found")
    expect_error(lambda: o.task_approvals(tid), 404, "not_found")
    expect_error(lambda: o.decide_approval(tid, a["id"], "approve"), 404, "not_found")
    expect_error(lambda: o.cancel_task(tid), 404, "not_found")
    expect_error(lambda: o.send_task_message(tid, "hi"), 404, "not_found")
    assert tid not in [x["id"] for x in o.list_tasks()["tasks"]]
    # And an id that exists nowhere answers the same.
    expect_error(lambda: o.get_task("tk-0000000000000000"), 404, "not_found")
    assert env.dev.get_task(tid)["state"] == "waiting_approval"
    # The admin sees across teams.
    assert tid in [x["id"] for x in env.admin.list_tasks()["tasks"]]
    env.dev2.decide_approval(tid, a["id"], "deny")


# ---- follow-ups ---------------------------------------------------------------------------


def test_follow_up_continues_in_the_same_sandbox(env):
    env.script(tools(call("file_write", {"path": "notes.txt", "content": "remember 42\n"}, "w1")),
               say("Saved."),
               tools(call("file_read", {"path": "/workspace/notes.txt"}, "r1")),
               say("It says 42."))
    t = env.create(tools=["file_write", "file_read"])
    t = wait_state(env.dev, t["id"], FINAL)
    assert t["state"] == "succeeded" and t["result"] == "Saved."
    sid = t["sandbox_id"]
    m = env.dev.send_task_message(t["id"], "What did you save?")
    assert m["id"] == t["id"] and m["state"] in ("queued", "running")
    t2 = wait_state(env.dev, t["id"], FINAL)
    assert t2["state"] == "succeeded" and t2["result"] == "It says 42."
    assert t2["sandbox_id"] == sid
    assert t2["usage"]["turns"] == 4 and t2["usage"]["tool_calls"] == 2
    evs = events(env.dev, t["id"])
    assert "remember 42" in results(evs)["r1"]["output"] and results(evs)["r1"]["is_error"] is False
    # The follow-up went to the model with the whole conversation before it.
    msgs = env.fake.requests[2]["body"]["messages"]
    assert msgs[-1] == {"role": "user", "content": "What did you save?"}
    assert any(m.get("role") == "tool" and m.get("tool_call_id") == "w1" for m in msgs)
    users = of_type(evs, "message")
    assert [u["data"]["content"] for u in users if u["data"]["role"] == "user"][-1] == "What did you save?"


def test_follow_up_to_a_task_that_is_not_succeeded_is_409(env):
    env.script({"status": 500, "message": "down"})
    t = env.create()
    assert wait_state(env.dev, t["id"], FINAL)["state"] == "failed"
    expect_error(lambda: env.dev.send_task_message(t["id"], "again"), 409, "conflict")


def test_follow_up_needs_tasks_create(env):
    env.script(say("ok"))
    t = env.create()
    wait_state(env.dev, t["id"], FINAL)
    expect_error(lambda: env.viewer.send_task_message(t["id"], "more"), 403, "forbidden")
    st, _, data = env.dev.request("POST", f"/v1/tasks/{t['id']}/messages", body={"content": "x", "extra": 1})
    assert st == 400


# ---- the event stream ------------------------------------------------------------------------


def test_events_replay_and_resume(env):
    env.script(tools(call("bash", {"command": "echo one"}, "e1"), text="abc def ghi"),
               tools(call("bash", {"command": "echo two"}, "e2")), say("end of it"))
    t = env.create(tools=["bash"])
    wait_state(env.dev, t["id"], FINAL)
    full = events(env.dev, t["id"])
    n = len(full)
    assert n >= 8
    assert [e["seq"] for e in full] == list(range(1, n + 1))
    assert all(set(e) == {"seq", "type", "at", "data"} for e in full)
    # A second replay is the same transcript.
    assert events(env.dev, t["id"]) == full
    # Last-Event-ID resumes after that event.
    k = n // 2
    assert events(env.dev, t["id"], after=k) == full[k:]
    # ?after=N does the same, and the SSE frames carry id and event.
    st, hdr, raw = env.dev.request("GET", f"/v1/tasks/{t['id']}/events?after={k}",
                                   headers={"Accept": "text/event-stream"}, raw=True)
    assert st == 200 and hdr["Content-Type"].startswith("text/event-stream")
    frames = [f for f in raw.decode().split("\n\n") if f.strip() and not f.startswith(":")]
    assert len(frames) == n - k
    first = dict(line.split(": ", 1) for line in frames[0].splitlines())
    assert first["id"] == str(k + 1) and first["event"] == full[k]["type"]
    assert json.loads(first["data"]) == full[k]
    # After the last event nothing is left.
    assert events(env.dev, t["id"], after=n) == []


def test_events_follow_a_running_task_live(env):
    t, a = held_task(env)
    got = []
    with env.dev.task_events(t["id"]) as s:
        for ev in s:
            got.append(ev.data)
            if ev.data["type"] == "approval_required":
                env.dev2.decide_approval(t["id"], a["id"], "approve")
    assert got[-1]["type"] == "state" and got[-1]["data"]["state"] == "succeeded"
    assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
    types = [e["type"] for e in got]
    assert types.index("approval_required") < types.index("approval_resolved") < types.index("tool_result")


def test_a_stream_left_mid_task_resumes_exactly_where_it_stopped(env):
    t, a = held_task(env)
    with env.dev.task_events(t["id"]) as s:
        first = []
        for ev in s:
            first.append(ev.data)
            if ev.data["type"] == "approval_required":
                break
        last_id = s.last_id
    assert last_id == str(first[-1]["seq"])
    env.dev2.decide_approval(t["id"], a["id"], "approve")
    rest = events(env.dev, t["id"], after=int(last_id))
    assert rest[0]["seq"] == first[-1]["seq"] + 1
    assert first + rest == events(env.dev, t["id"])
    assert rest[-1]["data"]["state"] == "succeeded"


def test_bad_last_event_id_is_400(env):
    env.script(say("ok"))
    t = env.create()
    wait_state(env.dev, t["id"], FINAL)
    st, _, _ = env.dev.request("GET", f"/v1/tasks/{t['id']}/events",
                               headers={"Accept": "text/event-stream", "Last-Event-ID": "x1"}, raw=True)
    assert st == 400


# ---- restart ---------------------------------------------------------------------------------


def test_gateway_restart_marks_a_running_task_failed(env):
    g = make_gateway(env.fake)
    g.init()
    g.start()
    try:
        admin = g.admin()
        env.script(tools(call("bash", {"command": "sleep 120"}, "z1")))
        t = admin.create_task("sleep", provider="fake", model=MODEL, tools=["bash"], backend="jail")
        wait_for_event(admin, t["id"], "tool_call")
        g.stop(signal.SIGKILL)
        g.start()
        t = admin.get_task(t["id"])
        assert t["state"] == "failed", t
        assert "restarted" in t["error"], t["error"]
        assert t["finished_at"]
        evs = events(admin, t["id"])
        assert evs[-1]["type"] == "state" and evs[-1]["data"]["state"] == "failed"
        if t.get("sandbox_id"):
            expect_error(lambda: admin.get_sandbox(t["sandbox_id"]), 404, "not_found")
    finally:
        assert g.stop() == 0


# ---- the CLI against the gateway (forgebox task ...) ------------------------------------


def cli(env, client, *args, key_file=None):
    """forgebox task ARGS with the client's key in FORGEBOX_API_KEY (or a key file)."""
    key = client._key.reveal()
    e = {"FORGEBOX_URL": env.g.url}
    if key_file is None:
        e["FORGEBOX_API_KEY"] = key
    p = subprocess.run([FORGEBOX, "task", *args], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **e))
    assert key not in p.stdout and key not in p.stderr
    return p


def test_cli_list_show_and_events(env):
    env.script(tools(call("bash", {"command": "printf 'out\\033]0;title\\007\\n'"}, "c1")), say("cli done"))
    t = env.create(prompt="cli prompt", tools=["bash"])
    wait_state(env.dev, t["id"], FINAL)
    p = cli(env, env.dev, "list")
    assert p.returncode == 0, p.stderr
    header, *rows = p.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "PROVIDER/MODEL"]
    row = [r for r in rows if r.startswith(t["id"])]
    assert len(row) == 1 and "succeeded" in row[0] and "fake/m1" in row[0] and "cli prompt" in row[0]
    p = cli(env, env.dev, "list", "--json")
    assert p.returncode == 0 and t["id"] in [x["id"] for x in json.loads(p.stdout)["tasks"]]
    p = cli(env, env.dev, "show", t["id"])
    assert p.returncode == 0, p.stderr
    assert "state        succeeded" in p.stdout and "cli done" in p.stdout
    assert json.loads(cli(env, env.dev, "show", t["id"], "--json").stdout)["id"] == t["id"]
    p = cli(env, env.dev, "events", t["id"])
    assert p.returncode == 0, p.stderr
    assert '-> bash {"command":' in p.stdout and "== succeeded" in p.stdout
    assert "\033" not in p.stdout and "\007" not in p.stdout     # the tool's escape codes are defused
    p = cli(env, env.dev, "events", t["id"], "--json", "--after", "2")
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines == events(env.dev, t["id"], after=2)


def test_cli_approve_deny_cancel(env):
    t, a = held_task(env)
    p = cli(env, env.dev, "approve", t["id"], a["id"])          # the creator: refused
    assert p.returncode == 1 and "403 forbidden" in p.stderr, p.stderr
    p = cli(env, env.dev2, "deny", t["id"], a["id"], "--reason", "no thanks")
    assert p.returncode == 0, p.stderr
    assert "denied" in p.stdout
    assert wait_state(env.dev, t["id"], FINAL)["state"] == "succeeded"
    assert env.dev.task_approvals(t["id"])["approvals"][0]["reason"] == "no thanks"
    env.script(tools(call("bash", {"command": "sleep 60"}, "s1")))
    t = env.create(tools=["bash"])
    wait_for_event(env.dev, t["id"], "tool_call")
    p = cli(env, env.dev, "cancel", t["id"])
    assert p.returncode == 0 and "cancelled" in p.stdout, (p.stdout, p.stderr)
    p = cli(env, env.dev, "cancel", t["id"])
    assert p.returncode == 1 and "409 conflict" in p.stderr


def test_cli_errors_name_the_gateways_code(env, tmp_path):
    p = cli(env, env.other, "show", "tk-0000000000000000")
    assert p.returncode == 1 and "404 not_found" in p.stderr and "(request " in p.stderr
    keyfile = tmp_path / "key"
    keyfile.write_text(env.readonly._key.reveal() + "\n")
    p = cli(env, env.readonly, "list", "--key-file", str(keyfile), key_file=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([FORGEBOX, "task", "list", "--key", "fbk_x"], capture_output=True, text=True,
                       env=dict(os.environ, FORGEBOX_URL=env.g.url))
    assert p.returncode == 2 and "never taken as an argument" in p.stderr and "fbk_x" not in p.stderr
    p = subprocess.run([FORGEBOX, "task", "list"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k not in ("FORGEBOX_URL", "FORGEBOX_API_KEY")})
    assert p.returncode == 2 and "FORGEBOX_URL" in p.stderr
    p = subprocess.run([FORGEBOX, "task", "list", "--url", env.g.url], capture_output=True, text=True,
                       env=dict(os.environ, FORGEBOX_API_KEY="fbk_0123456789ab_" + "A" * 43))
    assert p.returncode == 1 and "401 unauthorized" in p.stderr
