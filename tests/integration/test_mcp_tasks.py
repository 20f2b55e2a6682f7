"""MCP's run_task (docs/mcp.md): a task of the task engine started from an
MCP client, against a real gateway (jail) whose provider is the scripted
model (tests/tools/fake_llm.py).  Raw Streamable HTTP, like the protocol
tests of test_mcp.py."""
import json
import os
import sys

import pytest

from gateway_fixtures import FIRST_PASSWORD, SECRETS, Gateway

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from fake_llm import FakeLLM  # noqa: E402

KEY = "sk-MCPTASK-7b1e90c2d4a6f3"
SECRETS.add(KEY)
ACCEPT = "application/json, text/event-stream"


@pytest.fixture(scope="module")
def env():
    with FakeLLM(key=KEY, models={"m1"}) as fake:
        config = ("providers:\n  fake:\n    kind: openai\n    base_url: %s/v1\n"
                  "    api_key: ${FB_TEST_MCP_LLM_KEY}\n    max_retries: 0\n" % fake.url)
        g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
                              "tasks.ttl_s=0"], config=config, env={"FB_TEST_MCP_LLM_KEY": KEY})
        g.init()
        g.start()
        admin = g.admin()
        team = admin.create_team("mcp-tasks")
        user = admin.create_user(username="mcp-tasker", password=FIRST_PASSWORD, team_id=team["id"],
                                 role="developer")

        def key(scopes):
            return admin.create_key(name="k", scopes=scopes, user_id=user["id"])["key"]

        yield {"g": g, "fake": fake, "admin": admin,
               "full": key(["tasks:create", "tasks:read", "tools:shell", "sandboxes:create", "sandboxes:read",
                            "sandboxes:exec"]),
               "no_tasks": key(["sandboxes:create", "sandboxes:read", "sandboxes:exec"])}
        assert g.stop() == 0, g.read_log()


def post(env, key, body, session=None):
    h = {"Content-Type": "application/json", "Accept": ACCEPT}
    if session:
        h["Mcp-Session-Id"] = session
    st, hdr, data = env["g"].client(key).request("POST", "/mcp", body=json.dumps(body), headers=h, raw=True)
    return st, {k.lower(): v for k, v in hdr.items()}, data


def session(env, key):
    st, hdr, data = post(env, key, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                               "clientInfo": {"name": "raw", "version": "1"}}})
    assert st == 200, data
    sid = hdr["mcp-session-id"]
    st, _, _ = post(env, key, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid)
    assert st == 202
    return sid


def call(env, key, name, **arguments):
    sid = session(env, key)
    st, _, data = post(env, key, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                  "params": {"name": name, "arguments": arguments}}, session=sid)
    assert st == 200, data
    return json.loads(data)["result"]


def test_run_task_runs_a_model_through_tools_and_waits_for_the_end(env):
    fake = env["fake"]
    fake.requests.clear()
    fake.script = [{"tool_calls": [{"id": "c1", "name": "bash",
                                    "arguments": json.dumps({"command": "echo from-mcp-task"})}]},
                   {"text": "the task is done"}]
    r = call(env, env["full"], "run_task", prompt="say hello", provider="fake", model="m1", tools=["bash"],
             wait_s=60)
    assert r["isError"] is False, r
    out = r["structuredContent"]
    assert out["state"] == "succeeded" and out["result"] == "the task is done" and out["error"] is None, out
    assert out["usage"]["turns"] == 2 and out["usage"]["tool_calls"] == 1
    tool_msgs = [m for m in fake.requests[1]["body"]["messages"] if m["role"] == "tool"]
    assert "from-mcp-task" in tool_msgs[0]["content"]
    # The same task through the REST API, in the caller's team.
    t = env["g"].client(env["full"]).request("GET", "/v1/tasks/" + out["task_id"]).body
    assert t["state"] == "succeeded" and t["tools"] == ["bash"]
    assert KEY not in json.dumps(r)


def test_run_task_needs_tasks_create_and_is_audited(env):
    r = call(env, env["no_tasks"], "run_task", prompt="x", provider="fake", model="m1", wait_s=0)
    assert r["isError"] is True
    assert r["content"][0]["text"] == "forbidden: key scope lacks tasks:create", r
    denied = env["admin"].audit(event="permission", outcome="denied")["entries"]
    assert any(e["action"] == "MCP tools/call run_task" and "tasks:create" in e["reason"] for e in denied)


def test_run_task_refuses_a_tool_the_key_cannot_grant(env):
    r = call(env, env["full"], "run_task", prompt="x", provider="fake", model="m1", tools=["file_write"],
             wait_s=0)
    assert r["isError"] is True
    assert r["content"][0]["text"].startswith("forbidden: "), r
    assert "file_write" in r["content"][0]["text"]


def test_run_task_unknown_provider_and_bad_tool_names(env):
    r = call(env, env["full"], "run_task", prompt="x", provider="nope", model="m1", wait_s=0)
    assert r["isError"] is True and r["content"][0]["text"].startswith("bad_request: "), r
    assert "nope" in r["content"][0]["text"]
    r = call(env, env["full"], "run_task", prompt="x", provider="fake", model="m1", tools=["rm"], wait_s=0)
    assert r["isError"] is True and r["content"][0]["text"] == "invalid arguments: unknown tool 'rm'", r
