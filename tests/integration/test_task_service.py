"""A compact smoke test of the task service through the gateway (jail
backend): a real `forgebox serve` with a scripted provider (FakeLLM) as the
model.  Covers: a task that makes one bash call and succeeds (checking the
tool result the provider received, the task's JSON, its audit entries),
its transcript replayed over SSE and resumed, an approval approved and
one denied, a restart failing a task left waiting, and another team's
task answering 404 everywhere.  The exhaustive API suite lives elsewhere;
this file is the service's own check.
"""
import json
import os
import signal
import sys
import time

import pytest

from gateway_fixtures import FIRST_PASSWORD, SECRETS, Gateway

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from fake_llm import FakeLLM  # noqa: E402

KEY = "sk-SERVICE-5d2f0a9e81c4b7"
SECRETS.add(KEY)  # the hygiene check then looks for it in every response, log and store


class TaskGateway(Gateway):
    """A gateway started with a forgebox.yaml naming the fake provider."""

    def __init__(self, fake_url, settings=(), state_dir=None):
        super().__init__(settings=settings, state_dir=state_dir)
        self.config = os.path.join(self.dir, "forgebox.yaml")
        with open(self.config, "w") as f:
            f.write("providers:\n  fake:\n    kind: openai\n    base_url: %s/v1\n"
                    "    api_key: ${FB_TEST_SERVICE_LLM_KEY}\n    max_retries: 0\n" % fake_url)

    def start(self):
        saved = {k: os.environ.get(k) for k in ("FORGEBOX_CONFIG", "FB_TEST_SERVICE_LLM_KEY")}
        os.environ["FORGEBOX_CONFIG"] = self.config
        os.environ["FB_TEST_SERVICE_LLM_KEY"] = KEY
        try:
            return super().start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def call(cid, name, **args):
    return {"id": cid, "name": name, "arguments": json.dumps(args)}


def tool_results(req):
    return {m["tool_call_id"]: m["content"] for m in req["body"]["messages"] if m["role"] == "tool"}


def wait_state(c, tid, states, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = c.request("GET", f"/v1/tasks/{tid}").body
        if t["state"] in states:
            return t
        time.sleep(0.1)
    raise AssertionError(f"task {tid} never reached {states}: {t}")


def events(c, tid, headers=None, query=""):
    """The whole SSE transcript of an ended task: [(id, event, data)]."""
    conn, resp = c._open("GET", f"/v1/tasks/{tid}/events{query}", headers=headers, timeout=30)
    try:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        out, cur = [], {}
        for raw in resp.read().decode().split("\n"):
            if raw == "":
                if cur:
                    out.append((int(cur["id"]), cur["event"], json.loads(cur["data"])))
                cur = {}
            elif not raw.startswith(":"):
                k, _, v = raw.partition(": ")
                cur[k] = v
        return out
    finally:
        conn.close()


@pytest.fixture(scope="module")
def env():
    with FakeLLM(key=KEY, models={"m1"}) as fake:
        g = TaskGateway(fake.url, settings=["sandbox.backend=jail", "limits.rate_rps=1000",
                                            "limits.rate_burst=1000", "tasks.approval_timeout_s=30",
                                            "tasks.ttl_s=0"])
        g.init()
        g.start()
        admin = g.admin()
        ta, tb = admin.create_team("tasks-a"), admin.create_team("tasks-b")
        dev = admin.create_user(username="tasks-dev", password=FIRST_PASSWORD, team_id=ta["id"], role="developer")
        op = admin.create_user(username="tasks-op", password=FIRST_PASSWORD, team_id=ta["id"], role="operator")
        other = admin.create_user(username="tasks-other", password=FIRST_PASSWORD, team_id=tb["id"],
                                  role="developer")
        scopes = ["tasks:create", "tasks:read", "tasks:cancel", "tasks:approve", "tools:shell", "tools:files",
                  "tools:edit", "sandboxes:create", "sandboxes:read", "sandboxes:exec"]

        def key(user, sc):
            return g.client(admin.create_key(name="k", scopes=sc, user_id=user["id"])["key"])

        yield {"g": g, "fake": fake, "admin": admin,
               "dev": key(dev, scopes),
               "op": key(op, ["tasks:read", "tasks:approve", "tasks:cancel"]),
               "other": key(other, scopes)}
        g.stop()


def create(c, **body):
    body = dict({"prompt": "list the workspace", "provider": "fake", "model": "m1", "backend": "jail"}, **body)
    r = c.request("POST", "/v1/tasks", body)
    assert r.status == 201, r.body
    return r.body


def test_bash_task_succeeds_and_replays(env):
    fake, dev = env["fake"], env["dev"]
    fake.requests.clear()
    fake.script = [{"tool_calls": [call("c1", "bash", command="echo hi-from-task; id -u")]},
                   {"text": "all done"}]
    t = create(dev, tools=["bash"], limits={"max_turns": 5})
    assert t["state"] in ("queued", "running")
    assert t["tools"] == ["bash"] and t["approvals"] == [] and t["network"] is None
    assert t["limits"] == {"max_turns": 5, "max_tokens": 200000, "max_tool_calls": 50, "timeout_s": 900}
    done = wait_state(dev, t["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    assert done["result"] == "all done" and done["error"] is None
    assert done["usage"]["turns"] == 2 and done["usage"]["tool_calls"] == 1
    assert done["sandbox_id"].startswith("sb-") and done["finished_at"]
    assert len(fake.requests) == 2
    out = tool_results(fake.requests[1])["c1"]
    assert "hi-from-task\n1000" in out
    # Only the granted tool was offered.
    assert [x["function"]["name"] for x in fake.requests[0]["body"]["tools"]] == ["bash"]

    evs = events(dev, t["id"])
    assert [e[0] for e in evs] == list(range(1, len(evs) + 1))
    kinds = [e[1] for e in evs]
    assert kinds[:3] == ["message", "state", "state"]
    assert evs[0][2]["data"] == {"role": "user", "content": "list the workspace"}
    assert "tool_call" in kinds and "tool_result" in kinds
    assert evs[-1][1] == "state" and evs[-1][2]["data"]["state"] == "succeeded"
    for seq, kind, obj in evs:
        assert obj["seq"] == seq and obj["type"] == kind and obj["at"]
    # Resuming after an id sends only what follows; past the end, nothing.
    assert events(dev, t["id"], headers={"Last-Event-ID": "3"}) == evs[3:]
    assert events(dev, t["id"], query="?after=%d" % len(evs)) == []
    r = dev.request("GET", f"/v1/tasks/{t['id']}/events?after=x")
    assert r.status == 400

    listed = dev.request("GET", "/v1/tasks").body["tasks"]
    assert t["id"] in [x["id"] for x in listed]
    audit = env["admin"].audit(action="tool:bash")["entries"]
    assert any(a["resource"] == t["id"] and a["outcome"] == "allowed" and "call c1" in a["reason"] for a in audit)
    # The key of the provider is nowhere in what the API returned.
    assert KEY not in json.dumps(done) and KEY not in json.dumps(evs)


def test_approval_approve_and_deny(env):
    fake, dev, op = env["fake"], env["dev"], env["op"]
    fake.requests.clear()
    fake.script = [{"tool_calls": [call("c1", "bash", command="echo approved-ran")]},
                   {"tool_calls": [call("c2", "bash", command="echo denied-ran")]},
                   {"text": "finished"}]
    t = create(dev, tools=["bash"], approvals=["bash"])
    tid = t["id"]
    wait_state(dev, tid, {"waiting_approval"})
    pending = dev.request("GET", f"/v1/tasks/{tid}/approvals").body["approvals"]
    assert len(pending) == 1 and pending[0]["state"] == "pending" and pending[0]["tool"] == "bash"
    assert pending[0]["input"] == {"command": "echo approved-ran"} and pending[0]["call_id"] == "c1"
    # The creator may not approve its own task's calls.
    r = dev.request("POST", f"/v1/tasks/{tid}/approvals/{pending[0]['id']}", {"decision": "approve"})
    assert r.status == 403, r.body
    r = op.request("POST", f"/v1/tasks/{tid}/approvals/{pending[0]['id']}", {"decision": "maybe"})
    assert r.status == 400
    r = op.request("POST", f"/v1/tasks/{tid}/approvals/ap_0000000000000000", {"decision": "approve"})
    assert r.status == 404
    r = op.request("POST", f"/v1/tasks/{tid}/approvals/{pending[0]['id']}", {"decision": "approve"})
    assert r.status == 200 and r.body["state"] == "approved" and r.body["decided_by"]
    r = op.request("POST", f"/v1/tasks/{tid}/approvals/{pending[0]['id']}", {"decision": "deny"})
    assert r.status == 409

    deadline = time.monotonic() + 30
    while True:
        aps = dev.request("GET", f"/v1/tasks/{tid}/approvals").body["approvals"]
        if len(aps) == 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = op.request("POST", f"/v1/tasks/{tid}/approvals/{aps[1]['id']}", {"decision": "deny", "reason": "no"})
    assert r.status == 200 and r.body["state"] == "denied" and r.body["reason"] == "no"
    done = wait_state(dev, tid, {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    res = tool_results(fake.requests[2])
    assert "approved-ran" in res["c1"]
    assert "denied" in res["c2"] and "denied-ran" not in res["c2"]
    kinds = [e[1] for e in events(dev, tid)]
    assert kinds.count("approval_required") == 2 and kinds.count("approval_resolved") == 2


def test_other_team_sees_nothing(env):
    fake, dev, other = env["fake"], env["dev"], env["other"]
    fake.script = [{"text": "quick"}]
    t = create(dev, tools=["bash"])
    wait_state(dev, t["id"], {"succeeded", "failed"})
    tid = t["id"]
    for method, path, body in [("GET", f"/v1/tasks/{tid}", None), ("GET", f"/v1/tasks/{tid}/events", None),
                               ("GET", f"/v1/tasks/{tid}/approvals", None),
                               ("POST", f"/v1/tasks/{tid}/cancel", None),
                               ("POST", f"/v1/tasks/{tid}/messages", {"content": "x"}),
                               ("POST", f"/v1/tasks/{tid}/approvals/ap_1", {"decision": "approve"}),
                               ("GET", "/v1/tasks/tk_0000000000000000", None)]:
        r = other.request(method, path, body)
        assert r.status == 404, (method, path, r.status, r.body)
    assert tid not in [x["id"] for x in other.request("GET", "/v1/tasks").body["tasks"]]


def test_restart_fails_a_waiting_task(env, tmp_path):
    fake = env["fake"]
    g = TaskGateway(fake.url, settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
                                        "tasks.ttl_s=0"])
    g.init()
    g.start()
    c = g.admin()
    fake.script = [{"tool_calls": [call("c1", "bash", command="true")]}]
    t = create(c, tools=["bash"], approvals=["bash"])
    wait_state(c, t["id"], {"waiting_approval"})
    g.stop(signal.SIGKILL)
    g.start()
    c = g.admin()
    t2 = c.request("GET", f"/v1/tasks/{t['id']}").body
    assert t2["state"] == "failed"
    assert t2["error"] == "the gateway restarted while the task was running"
    aps = c.request("GET", f"/v1/tasks/{t['id']}/approvals").body["approvals"]
    assert [a["state"] for a in aps] == ["expired"]
    evs = events(c, t["id"])
    assert evs[-1][1] == "state" and evs[-1][2]["data"] == {"state": "failed",
                                                             "error": "the gateway restarted while the task was running"}
    # An orderly stop in the middle of a tool call: the task is stopped
    # promptly (not failed by its sandbox going away) and failed on restart.
    fake.script = [{"tool_calls": [call("c1", "bash", command="sleep 60")]}]
    t = create(c, tools=["bash"])
    deadline = time.monotonic() + 30
    while not any(e[1] == "tool_call" for e in events_live(c, t["id"])):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    started = time.monotonic()
    assert g.stop() == 0, g.read_log()
    assert time.monotonic() - started < 20
    g.start()
    t2 = g.admin().request("GET", f"/v1/tasks/{t['id']}").body
    assert t2["state"] == "failed" and t2["error"] == "the gateway restarted while the task was running"
    assert g.stop() == 0, g.read_log()


def test_stored_transcript_is_the_live_one(env):
    """Transcript events reach the store in batches (task_journal.c): a
    task streaming many small text deltas, read live, then the gateway
    stopped and started again - the stored transcript it replays is
    exactly the one seen live, every event, dense and in order."""
    fake = env["fake"]
    g = TaskGateway(fake.url, settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
                                        "tasks.ttl_s=0"])
    g.init()
    g.start()
    try:
        c = g.admin()
        fake.script = [{"text": "streamed in many small pieces " * 20, "pieces": 3,
                        "tool_calls": [call("c1", "bash", command="echo one")]},
                       {"text": "and the end " * 10, "pieces": 2}]
        t = create(c, tools=["bash"])
        wait_state(c, t["id"], {"succeeded", "failed"})
        live = events(c, t["id"])
        assert sum(1 for e in live if e[1] == "text") > 100, len(live)
        assert live[-1][2]["data"]["state"] == "succeeded"
        assert g.stop() == 0, g.read_log()
        g.start()
        stored = events(g.admin(), t["id"])
        assert stored == live
    finally:
        g.stop()


def test_follow_up_message_and_cancel(env):
    """A succeeded task keeps its sandbox for a follow-up (the same files
    are there); cancelling a running one ends it and its sandbox."""
    fake = env["fake"]
    g = TaskGateway(fake.url, settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    g.init()
    g.start()
    c = g.admin()
    fake.requests.clear()
    fake.script = [{"tool_calls": [call("c1", "bash", command="echo kept > /workspace/f")]}, {"text": "one"},
                   {"tool_calls": [call("c2", "bash", command="cat /workspace/f")]}, {"text": "two"}]
    t = create(c, tools=["bash"])
    assert wait_state(c, t["id"], {"succeeded", "failed"})["state"] == "succeeded"
    r = c.request("POST", f"/v1/tasks/{t['id']}/messages", {"content": "and now?"})
    assert r.status == 200, r.body
    done = wait_state(c, t["id"], {"succeeded", "failed"})
    assert done["result"] == "two" and done["usage"]["turns"] == 4
    assert tool_results(fake.requests[3])["c2"].startswith("kept")
    assert fake.requests[2]["body"]["messages"][-1] == {"role": "user", "content": "and now?"}
    r = c.request("POST", f"/v1/tasks/{t['id']}/messages", {"content": "x", "extra": 1})
    assert r.status == 400

    fake.script = [{"tool_calls": [call("c1", "bash", command="sleep 60")]}]
    t = create(c, tools=["bash"])
    wait_state(c, t["id"], {"running"})
    deadline = time.monotonic() + 30
    while not any(e[1] == "tool_call" for e in events_live(c, t["id"])):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = c.request("POST", f"/v1/tasks/{t['id']}/cancel")
    assert r.status == 200 and r.body["state"] == "cancelled", r.body
    assert c.request("POST", f"/v1/tasks/{t['id']}/cancel").status == 409
    sandboxes = [s["id"] for s in c.list_sandboxes()["sandboxes"]]
    assert r.body["sandbox_id"] not in sandboxes
    assert g.stop() == 0, g.read_log()


def events_live(c, tid):
    """The events so far of a running task (reads until the first keepalive)."""
    conn, resp = c._open("GET", f"/v1/tasks/{tid}/events", timeout=30)
    out, cur = [], {}
    try:
        while True:
            line = resp.readline().decode().rstrip("\n")
            if line.startswith(":") or not line and not cur and out:
                return out
            if line == "":
                if cur:
                    out.append((int(cur["id"]), cur["event"], json.loads(cur["data"])))
                cur = {}
            else:
                k, _, v = line.partition(": ")
                cur[k] = v
    finally:
        conn.close()


def test_max_running_queues_the_rest(env):
    """tasks.max_running=1: a second task waits queued while the first
    holds its slot (here: waiting for an approval), and runs once the
    first is cancelled; cancelling a queued task needs no sandbox."""
    fake = env["fake"]
    g = TaskGateway(fake.url, settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
                                        "tasks.max_running=1", "tasks.ttl_s=0"])
    g.init()
    g.start()
    c = g.admin()
    fake.script = [{"tool_calls": [call("c1", "bash", command="true")]}]
    first = create(c, tools=["bash"], approvals=["bash"])
    wait_state(c, first["id"], {"waiting_approval"})
    second = create(c, tools=["bash"])
    third = create(c, tools=["bash"])
    time.sleep(1)
    assert c.request("GET", f"/v1/tasks/{second['id']}").body["state"] == "queued"
    r = c.request("POST", f"/v1/tasks/{third['id']}/cancel")
    assert r.status == 200 and r.body["state"] == "cancelled" and r.body["sandbox_id"] is None
    fake.script = [{"text": "second done"}]
    r = c.request("POST", f"/v1/tasks/{first['id']}/cancel")
    assert r.status == 200 and r.body["state"] == "cancelled"
    assert [a["state"] for a in c.request("GET", f"/v1/tasks/{first['id']}/approvals").body["approvals"]] == \
        ["expired"]
    done = wait_state(c, second["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded" and done["result"] == "second done"
    assert g.stop() == 0, g.read_log()
