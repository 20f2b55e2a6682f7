"""The MCP server (docs/mcp.md) against real clients and a real gateway.

The SDK tests run the real, pinned @modelcontextprotocol/sdk client
(tests/compat/mcp/client.mjs, with Debian's Node.js) over both transports:
StreamableHTTPClientTransport against POST /mcp of a real `forgebox serve`
(jail backend), and StdioClientTransport spawning `forgebox mcp`, which
forwards to that gateway.  The raw tests speak HTTP directly for the
protocol's edge cases (errors, sessions, Origin, batches, SSE).
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import FORGEBOX
from gateway_fixtures import FIRST_PASSWORD, Gateway

COMPAT = os.path.join(os.path.dirname(__file__), "..", "compat", "mcp")
TOOLS = ["create_sandbox", "run_code", "exec", "read_file", "write_file", "list_files", "kill_sandbox",
         "run_task"]
REQUIRED = {"create_sandbox": [], "run_code": ["code", "language"], "exec": ["cmd", "sandbox_id"],
            "read_file": ["sandbox_id", "path"], "write_file": ["sandbox_id", "path", "content"],
            "list_files": ["sandbox_id"], "kill_sandbox": ["sandbox_id"],
            "run_task": ["prompt", "provider", "model"]}
FULL = ["sandboxes:create", "sandboxes:read", "sandboxes:exec"]


@pytest.fixture(scope="module")
def sdk_installed():
    """The pinned SDK (package-lock.json), installed once when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are required (scripts/install-deps.sh installs them)")
    if not os.path.isdir(os.path.join(COMPAT, "node_modules", "@modelcontextprotocol", "sdk")):
        subprocess.run(["npm", "ci", "--prefix", COMPAT, "--no-audit", "--no-fund"], check=True, timeout=600)


@pytest.fixture(scope="module")
def env(sdk_installed):
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    g.init()
    g.start()
    admin = g.admin()
    ta, tb = admin.create_team("mcp-a"), admin.create_team("mcp-b")
    ua = admin.create_user(username="mcp-dev-a", password=FIRST_PASSWORD, team_id=ta["id"], role="developer")
    ub = admin.create_user(username="mcp-dev-b", password=FIRST_PASSWORD, team_id=tb["id"], role="developer")

    def key(user, scopes):
        return admin.create_key(name="mcp", scopes=scopes, user_id=user["id"])

    keys = {"a": key(ua, FULL), "a2": key(ua, FULL), "noexec": key(ua, ["sandboxes:create", "sandboxes:read"]),
            "b": key(ub, FULL)}
    yield {"g": g, "admin": admin, "keys": keys}
    assert g.stop() == 0, g.read_log()


def sdk(env, mode, key, steps, timeout=300):
    g = env["g"]
    if mode == "http":
        argv = ["node", "client.mjs", "http", g.url, key or ""]
    else:
        argv = ["node", "client.mjs", "stdio", FORGEBOX, g.url, key or ""]
    p = subprocess.run(argv, cwd=COMPAT, input=json.dumps(steps).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def call(name, **arguments):
    return {"op": "callTool", "name": name, "arguments": arguments}


def structured(step):
    r = step["ok"]
    assert r["isError"] is False, r
    assert json.loads(r["content"][0]["text"]) == r["structuredContent"]
    return r["structuredContent"]


def failed(step):
    r = step["ok"]
    assert r["isError"] is True, r
    assert "structuredContent" not in r
    return r["content"][0]["text"]


def live_sandboxes(env):
    return {s["id"] for s in env["admin"].list_sandboxes()["sandboxes"]}


# ---- the SDK over Streamable HTTP ------------------------------------------------------------

def test_initialize_and_list_tools(env):
    out = sdk(env, "http", env["keys"]["a"]["key"], [{"op": "listTools"}, {"op": "ping"}, {"op": "terminate"}])
    c = out["connect"]
    assert c["ok"] is True, c
    assert c["server"] == {"name": "forgebox", "title": "ForgeBox", "version": "0.1.0"}
    assert c["capabilities"] == {"tools": {"listChanged": False}}
    assert c["protocolVersion"] == "2025-11-25"
    assert c["sessionId"].startswith("mcps_") and len(c["sessionId"]) == 37
    assert c["tools"] == 8
    tools = out["steps"][0]["ok"]["tools"]
    assert [t["name"] for t in tools] == TOOLS
    for t in tools:
        s = t["inputSchema"]
        assert s["type"] == "object" and s["additionalProperties"] is False
        assert s["required"] == REQUIRED[t["name"]], t["name"]
        assert set(REQUIRED[t["name"]]) <= set(s["properties"])
        assert t["description"]
    assert [t["name"] for t in tools if "outputSchema" not in t] == ["read_file"]
    run_code = next(t for t in tools if t["name"] == "run_code")["inputSchema"]["properties"]
    assert run_code["language"]["enum"] == ["python", "bash"]
    assert out["steps"][1] == {"ok": {}}
    assert out["steps"][2] == {"ok": {"terminated": True}}


def test_every_tool(env):
    before = live_sandboxes(env)
    out = sdk(env, "http", env["keys"]["a"]["key"], [call("create_sandbox", backend="jail", ttl_s=600)])
    sb = structured(out["steps"][0])
    sid = sb["sandbox_id"]
    assert sb["backend"] == "jail" and sid.startswith("sb")
    assert set(sb) == {"sandbox_id", "backend", "memory_mib", "vcpus", "disk_mib", "expires_at"}
    steps = [
        call("write_file", sandbox_id=sid, path="/workspace/hello.txt", content="héllo\nworld\n"),
        call("read_file", sandbox_id=sid, path="/workspace/hello.txt"),
        call("exec", sandbox_id=sid, cmd=["mkdir", "/workspace/sub"]),
        call("list_files", sandbox_id=sid),
        call("exec", sandbox_id=sid, cmd=["sh", "-c", "echo out; echo err >&2"]),
        call("exec", sandbox_id=sid, cmd=["sh", "-c", "echo partial; exit 3"]),
        call("run_code", sandbox_id=sid, language="python",
             code="print(open('/workspace/hello.txt').read().upper(), end='')"),
        call("run_code", sandbox_id=sid, language="bash", code="cd /workspace && ls | tr '\\n' ,"),
        call("exec", sandbox_id=sid, cmd=["sleep", "5"], timeout_s=1),
        call("exec", sandbox_id=sid, cmd=["/no/such/program"]),
        call("read_file", sandbox_id=sid, path="/workspace/missing"),
        call("list_files", sandbox_id=sid, path="/workspace/hello.txt"),
        call("kill_sandbox", sandbox_id=sid),
        call("exec", sandbox_id=sid, cmd=["true"]),
    ]
    s = sdk(env, "http", env["keys"]["a"]["key"], steps)["steps"]
    assert structured(s[0]) == {"path": "/workspace/hello.txt", "size": 13}
    assert s[1]["ok"] == {"content": [{"type": "text", "text": "héllo\nworld\n"}], "isError": False}
    assert structured(s[2])["exit_code"] == 0
    assert structured(s[3]) == {"path": "/workspace", "truncated": False, "entries": [
        {"name": "hello.txt", "type": "file", "size": 13}, {"name": "sub", "type": "dir",
                                                             "size": s[3]["ok"]["structuredContent"]["entries"][1]["size"]}]}
    r = structured(s[4])
    assert (r["exit_code"], r["stdout"], r["stderr"], r["signal"], r["timed_out"], r["truncated"]) == \
        (0, "out\n", "err\n", None, False, False)
    r = s[5]["ok"]
    assert r["isError"] is True
    assert (r["structuredContent"]["exit_code"], r["structuredContent"]["stdout"]) == (3, "partial\n")
    assert structured(s[6])["stdout"] == "HÉLLO\nWORLD\n"
    assert structured(s[7])["stdout"] == "hello.txt,sub,"
    r = s[8]["ok"]
    assert r["isError"] is True and r["structuredContent"]["timed_out"] is True
    assert failed(s[9]).startswith("not_found: ")
    assert failed(s[10]) == ("not_found: cannot get /workspace/missing: cannot read /workspace/missing: "
                             "No such file or directory (not_found)")
    assert failed(s[11]).startswith("list_files: /workspace/hello.txt: Not a directory")
    assert structured(s[12]) == {"sandbox_id": sid, "destroyed": True}
    assert failed(s[13]) == f"not_found: sandbox {sid} does not exist (or is not in your team)"
    assert live_sandboxes(env) == before


def test_run_code_in_a_fresh_sandbox_each_time(env):
    before = live_sandboxes(env)
    steps = [call("run_code", language="python", code="import sys; print(6*7); print('e', file=sys.stderr)"),
             call("run_code", language="bash", code="echo $((6*7)); touch /workspace/x; ls /workspace"),
             call("run_code", language="bash", code="ls /workspace; exit 4"),
             call("run_code", language="python", code="print('x' * 100000)")]
    s = sdk(env, "http", env["keys"]["a"]["key"], steps)["steps"]
    r = structured(s[0])
    assert (r["exit_code"], r["stdout"], r["stderr"]) == (0, "42\n", "e\n")
    assert structured(s[1])["stdout"] == "42\nx\n"
    r = s[2]["ok"]   # a fresh sandbox: the file of the call before is not there
    assert r["isError"] is True and (r["structuredContent"]["exit_code"], r["structuredContent"]["stdout"]) == (4, "")
    r = structured(s[3])   # output is capped
    assert r["stdout"] == "x" * 65536 and r["truncated"] is True
    assert live_sandboxes(env) == before


def test_invalid_arguments_are_tool_errors(env):
    steps = [call("exec", sandbox_id="sb-x"),
             call("exec", sandbox_id="sb-x", cmd=[]),
             call("run_code", code="1", language="ruby"),
             call("kill_sandbox", sandbox_id="sb-x", force=True),
             call("exec", sandbox_id="sb-x", cmd=["true"], timeout_s=0),
             call("no_such_tool")]
    s = sdk(env, "http", env["keys"]["a"]["key"], steps)["steps"]
    assert failed(s[0]) == 'invalid arguments: "cmd" is required'
    assert failed(s[1]) == 'invalid arguments: "cmd" must be a non-empty array of strings'
    assert failed(s[2]) == 'invalid arguments: "language" must be one of the schema\'s values'
    assert failed(s[3]) == 'invalid arguments: kill_sandbox takes no "force"'
    assert failed(s[4]) == 'invalid arguments: "timeout_s" must be an integer in the range the schema gives'
    assert s[5]["error"]["code"] == -32602 and "Unknown tool: no_such_tool" in s[5]["error"]["message"]


def test_missing_permission_is_a_tool_error_and_audited(env):
    a = env["g"].client(env["keys"]["a"]["key"])
    sb = a.create_sandbox(backend="jail")
    try:
        k = env["keys"]["noexec"]
        s = sdk(env, "http", k["key"], [call("exec", sandbox_id=sb["id"], cmd=["true"]),
                                        call("run_code", language="bash", code="true"),
                                        call("kill_sandbox", sandbox_id=sb["id"])])["steps"]
        assert failed(s[0]) == "forbidden: key scope lacks sandboxes:exec"
        assert failed(s[1]) == "forbidden: key scope lacks sandboxes:exec"
        assert structured(s[2]) == {"sandbox_id": sb["id"], "destroyed": True}
        entries = env["admin"].audit(actor="key:" + k["id"], action="MCP tools/call exec")["entries"]
        assert [(e["resource"], e["outcome"], e["reason"]) for e in entries] == \
            [(sb["id"], "denied", "key scope lacks sandboxes:exec")]
        # run_code is refused before it makes a sandbox for the call
        entries = env["admin"].audit(actor="key:" + k["id"], action="MCP tools/call run_code")["entries"]
        assert [(e["event"], e["resource"], e["outcome"]) for e in entries] == \
            [("permission", "sandboxes", "denied")]
    finally:
        assert sb["id"] not in live_sandboxes(env)


def test_another_teams_sandbox_is_not_found(env):
    a = env["g"].client(env["keys"]["a"]["key"])
    sb = a.create_sandbox(backend="jail")
    try:
        s = sdk(env, "http", env["keys"]["b"]["key"], [
            call("exec", sandbox_id=sb["id"], cmd=["true"]),
            call("read_file", sandbox_id=sb["id"], path="/workspace/x"),
            call("kill_sandbox", sandbox_id=sb["id"]),
            call("exec", sandbox_id="sb-0000000000000000", cmd=["true"])])["steps"]
        for i in range(3):
            assert failed(s[i]) == f"not_found: sandbox {sb['id']} does not exist (or is not in your team)"
        assert failed(s[3]) == "not_found: sandbox sb-0000000000000000 does not exist (or is not in your team)"
        assert sb["id"] in live_sandboxes(env)
    finally:
        a.delete_sandbox(sb["id"])


def test_no_key_is_401(env):
    out = sdk(env, "http", None, [])
    assert out["connect"]["ok"] is False
    assert out["connect"]["error"]["code"] == 401


# ---- the SDK over stdio (forgebox mcp) ------------------------------------------------------------

def test_stdio_transport(env):
    before = live_sandboxes(env)
    out = sdk(env, "stdio", env["keys"]["a"]["key"], [
        {"op": "listTools"},
        call("run_code", language="python", code="print(6*7)"),
        call("create_sandbox", backend="jail")])
    assert out["connect"]["ok"] is True, out
    assert out["connect"]["server"]["name"] == "forgebox"
    assert [t["name"] for t in out["steps"][0]["ok"]["tools"]] == TOOLS
    assert structured(out["steps"][1])["stdout"] == "42\n"
    sid = structured(out["steps"][2])["sandbox_id"]
    s = sdk(env, "stdio", env["keys"]["a"]["key"], [
        call("exec", sandbox_id=sid, cmd=["sh", "-c", "echo ok; exit 1"]),
        call("kill_sandbox", sandbox_id=sid)])["steps"]
    assert s[0]["ok"]["isError"] is True and s[0]["ok"]["structuredContent"]["stdout"] == "ok\n"
    assert structured(s[1])["destroyed"] is True
    assert live_sandboxes(env) == before


def test_stdio_wrong_key(env):
    out = sdk(env, "stdio", "fbk_0123456789ab_" + "A" * 43, [])
    assert out["connect"]["ok"] is False
    assert "gateway: unauthorized" in out["connect"]["error"]["message"]
    assert "(HTTP 401)" in out["connect"]["error"]["message"]


def test_stdio_without_key_exits_with_usage(env):
    p = subprocess.run([FORGEBOX, "mcp"], input=b"", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env={"PATH": os.environ["PATH"], "FORGEBOX_URL": env["g"].url}, timeout=30)
    assert p.returncode == 2 and p.stdout == b""
    assert b"FORGEBOX_API_KEY is not set" in p.stderr


# ---- the protocol's edge cases, over raw HTTP ---------------------------------------------------

ACCEPT_BOTH = "application/json, text/event-stream"


def post(env, key, body, session=None, **headers):
    h = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH}
    if session:
        h["Mcp-Session-Id"] = session
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    st, hdr, data = env["g"].client(key).request("POST", "/mcp", body=body, headers=h, raw=True)
    return st, {k.lower(): v for k, v in hdr.items()}, data


def rpc(method, id=1, **params):
    m = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        m["id"] = id
    return m


def start(env, key, version="2025-11-25"):
    st, hdr, data = post(env, key, rpc("initialize", protocolVersion=version, capabilities={},
                                       clientInfo={"name": "raw", "version": "1"}))
    assert st == 200, data
    sid = hdr["mcp-session-id"]
    st, _, data = post(env, key, rpc("notifications/initialized", id=None), session=sid)
    assert (st, data) == (202, b"")
    return sid


def error_of(data):
    d = json.loads(data)
    assert d["jsonrpc"] == "2.0" and "result" not in d
    return d["id"], d["error"]["code"], d["error"]["message"]


@pytest.fixture(scope="module")
def key(env):
    return env["keys"]["a"]["key"]


def test_version_negotiation(env, key):
    for asked, got in [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"),
                       ("2024-11-05", "2024-11-05"), ("2099-01-01", "2025-11-25")]:
        st, hdr, data = post(env, key, rpc("initialize", id="init", protocolVersion=asked, capabilities={},
                                           clientInfo={"name": "raw", "version": "1"}))
        d = json.loads(data)
        assert (st, d["id"], d["result"]["protocolVersion"]) == (200, "init", got)
        assert hdr["content-type"] == "application/json"


def test_malformed_json_is_parse_error(env, key):
    sid = start(env, key)
    st, _, data = post(env, key, b'{"jsonrpc": "2.0", "id": 1, "method": ', session=sid)
    assert st == 400
    i, code, msg = error_of(data)
    assert (i, code) == (None, -32700) and msg.startswith("Parse error")
    st, _, data = post(env, key, b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}', session=sid)
    assert st == 400 and error_of(data)[1] == -32700   # duplicate keys are refused


def test_unknown_method_and_invalid_requests(env, key):
    sid = start(env, key)
    st, _, data = post(env, key, rpc("resources/list", id=7), session=sid)
    assert st == 200 and error_of(data) == (7, -32601, "Method not found: resources/list")
    st, _, data = post(env, key, {"jsonrpc": "1.0", "id": 8, "method": "ping"}, session=sid)
    assert error_of(data) == (8, -32600, 'Invalid Request: "jsonrpc" must be "2.0"')
    st, _, data = post(env, key, {"jsonrpc": "2.0", "id": 9, "method": 5}, session=sid)
    assert error_of(data)[:2] == (9, -32600)
    st, _, data = post(env, key, {"jsonrpc": "2.0", "id": None, "method": "ping"}, session=sid)
    assert error_of(data)[:2] == (None, -32600)
    st, _, data = post(env, key, {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": [1]}, session=sid)
    assert error_of(data)[:2] == (10, -32602)
    st, _, data = post(env, key, rpc("tools/call", id=11, arguments={}), session=sid)
    assert error_of(data) == (11, -32602, 'Invalid params: "name" must be a string')
    st, _, data = post(env, key, rpc("tools/call", id=12, name="nope"), session=sid)
    assert error_of(data) == (12, -32602, "Unknown tool: nope")
    st, _, data = post(env, key, rpc("initialize", id=13, protocolVersion="2025-11-25"), session=sid)
    assert error_of(data) == (13, -32600, "Invalid Request: the session is initialized already")
    st, _, data = post(env, key, b"42", session=sid)
    assert st == 400 and error_of(data)[:2] == (None, -32600)
    # a response to nothing, and an unknown notification: accepted, nothing to answer
    assert post(env, key, {"jsonrpc": "2.0", "id": 5, "result": {}}, session=sid)[:3:2] == (202, b"")
    assert post(env, key, rpc("notifications/cancelled", id=None, requestId=3), session=sid)[:3:2] == (202, b"")


def test_sessions(env, key):
    sid = start(env, key)
    # no session: only initialize is taken
    st, _, data = post(env, key, rpc("tools/list"))
    assert st == 400 and error_of(data)[:2] == (None, -32000)
    assert "Mcp-Session-Id header is required" in error_of(data)[2]
    # an unknown session id, and another key's (same user) session: 404
    st, _, data = post(env, key, rpc("tools/list"), session="mcps_" + "0" * 32)
    assert st == 404 and error_of(data)[:2] == (None, -32001)
    st, _, data = post(env, env["keys"]["a2"]["key"], rpc("tools/list"), session=sid)
    assert st == 404 and error_of(data)[:2] == (None, -32001)
    st, _, data = post(env, key, rpc("tools/list"), session=sid)
    assert st == 200 and len(json.loads(data)["result"]["tools"]) == 8
    # another key cannot end it; its own key can, once
    c2 = env["g"].client(env["keys"]["a2"]["key"])
    assert c2.request("DELETE", "/mcp", headers={"Mcp-Session-Id": sid}, raw=True)[0] == 404
    c = env["g"].client(key)
    assert c.request("DELETE", "/mcp", headers={"Mcp-Session-Id": sid}, raw=True)[0] == 204
    assert c.request("DELETE", "/mcp", headers={"Mcp-Session-Id": sid}, raw=True)[0] == 404
    assert c.request("DELETE", "/mcp", raw=True)[0] == 400
    st, _, data = post(env, key, rpc("tools/list"), session=sid)
    assert st == 404 and error_of(data)[:2] == (None, -32001)
    # no server-initiated stream
    assert c.request("GET", "/mcp", headers={"Accept": "text/event-stream"}, raw=True)[0] == 405


def test_headers(env, key):
    sid = start(env, key)
    st, _, data = post(env, key, rpc("ping"), session=sid, MCP_Protocol_Version="1999-01-01")
    assert st == 400 and "unsupported MCP-Protocol-Version" in error_of(data)[2]
    st, _, data = post(env, key, rpc("ping"), session=sid, MCP_Protocol_Version="2025-06-18")
    assert (st, json.loads(data)) == (200, {"jsonrpc": "2.0", "id": 1, "result": {}})
    st, _, data = post(env, key, rpc("ping"), session=sid, Accept="text/html")
    assert st == 406 and error_of(data)[1] == -32000
    # a client that takes only SSE gets the answer as one event
    st, hdr, data = post(env, key, rpc("ping", id=3), session=sid, Accept="text/event-stream")
    assert st == 200 and hdr["content-type"] == "text/event-stream"
    assert data == b'event: message\ndata: {"jsonrpc":"2.0","id":3,"result":{}}\n\n'
    st, _, data = post(env, key, rpc("ping"), session=sid, Content_Type="text/plain")
    assert st == 415


def test_origin_is_checked_before_authentication(env, key):
    port = env["g"].port
    for good in [f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"HTTP://LOCALHOST:{port}"]:
        st, _, _ = post(env, key, rpc("initialize", protocolVersion="2025-11-25"), Origin=good)
        assert st == 200, good
    for bad in ["http://evil.example", f"http://evil.example:{port}", f"https://127.0.0.1:{port}",
                f"http://127.0.0.1:{port + 1}", "null", f"http://127.0.0.1:{port}.evil.example"]:
        for k in (key, None):
            st, _, data = post(env, k, rpc("initialize", protocolVersion="2025-11-25"), Origin=bad)
            assert st == 403, (bad, k)
            assert error_of(data) == (None, -32000, "Forbidden: the Origin is not this gateway's")
    c = env["g"].client(None)
    assert c.request("DELETE", "/mcp", headers={"Origin": "http://evil.example"}, raw=True)[0] == 403


def test_no_key_is_401(env):
    st, _, data = post(env, None, rpc("initialize", protocolVersion="2025-11-25"))
    assert st == 401 and json.loads(data)["error"]["code"] == "unauthorized"


def test_batches_only_in_2025_03_26(env, key):
    sid = start(env, key)
    st, _, data = post(env, key, [rpc("ping", id=1), rpc("tools/list", id=2)], session=sid)
    assert st == 400 and error_of(data)[:2] == (None, -32600)
    sid = start(env, key, version="2025-03-26")
    st, _, data = post(env, key, [rpc("ping", id=1), rpc("notifications/x", id=None), rpc("nope", id="b"),
                                  rpc("initialize", id=4, protocolVersion="2025-03-26")], session=sid)
    d = json.loads(data)
    assert st == 200 and [m["id"] for m in d] == [1, "b", 4]
    assert d[0]["result"] == {} and d[1]["error"]["code"] == -32601 and d[2]["error"]["code"] == -32600
    st, _, data = post(env, key, [], session=sid)
    assert st == 400 and error_of(data)[:2] == (None, -32600)
    st, _, data = post(env, key, [rpc("notifications/x", id=None)], session=sid)
    assert (st, data) == (202, b"")


def test_tool_call_audited_with_its_action(env, key):
    sid = start(env, key)
    st, hdr, data = post(env, key, rpc("tools/call", id=1, name="exec",
                                       arguments={"sandbox_id": "sb-0000000000000001", "cmd": ["true"]}),
                         session=sid)
    r = json.loads(data)["result"]
    assert r["isError"] is True
    entries = [e for e in env["admin"].audit(action="MCP tools/call exec")["entries"]
               if e["request_id"] == hdr["x-request-id"]]
    assert [(e["resource"], e["outcome"], e["reason"]) for e in entries] == \
        [("sb-0000000000000001", "denied", "no such sandbox")]


def test_a_client_that_leaves_has_its_command_killed(env, key):
    """Each exec has its own process namespace, so the command shows it is
    alive by counting in a file; once its client hangs up the count stops."""
    import socket
    import time
    a = env["g"].client(key)
    sb = a.create_sandbox(backend="jail")

    def ticks():
        st, _, data = a.request("GET", f"/v1/sandboxes/{sb['id']}/files?path=/workspace/tick", raw=True)
        return data if st == 200 else None

    try:
        sid = start(env, key)
        body = json.dumps(rpc("tools/call", id=1, name="exec", arguments={
            "sandbox_id": sb["id"], "timeout_s": 300,
            "cmd": ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /workspace/tick; sleep 0.1; done"]}))
        s = socket.create_connection(("127.0.0.1", env["g"].port))
        s.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key.encode() +
                  b"\r\nContent-Type: application/json\r\nAccept: application/json\r\nMcp-Session-Id: " +
                  sid.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" +
                  body.encode())
        deadline = time.monotonic() + 30
        while ticks() is None:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.2)
        first = ticks()
        time.sleep(1)
        assert ticks() != first   # running while its client waits
        s.close()
        time.sleep(2)   # the gateway polls for a client gone every 200 ms
        last = ticks()
        time.sleep(1.5)
        assert ticks() == last, "the command outlived its client"
    finally:
        a.delete_sandbox(sb["id"])


def bridge(env, key, url=None):
    return subprocess.Popen([FORGEBOX, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={"PATH": os.environ["PATH"], "FORGEBOX_URL": url or env["g"].url,
                                 "FORGEBOX_API_KEY": key})


def say(p, msg):
    p.stdin.write((msg if isinstance(msg, bytes) else json.dumps(msg).encode()) + b"\n")
    p.stdin.flush()


def hear(p, timeout=60):
    import select
    if not select.select([p.stdout], [], [], timeout)[0]:
        raise AssertionError("forgebox mcp wrote no answer")
    line = p.stdout.readline()
    assert line.endswith(b"\n"), line
    return json.loads(line)


def test_stdio_raw_lines(env, key):
    p = bridge(env, key)
    try:
        say(p, rpc("initialize", id=1, protocolVersion="2025-06-18", capabilities={},
                   clientInfo={"name": "raw", "version": "1"}))
        assert hear(p)["result"]["protocolVersion"] == "2025-06-18"
        say(p, rpc("notifications/initialized", id=None))
        say(p, b"")   # blank lines are skipped
        say(p, b'{"jsonrpc": "2.0", "id": 2, "method": ')
        r = hear(p)
        assert (r["id"], r["error"]["code"]) == (None, -32700)
        say(p, rpc("nope/nope", id="x"))
        assert hear(p) == {"jsonrpc": "2.0", "id": "x",
                           "error": {"code": -32601, "message": "Method not found: nope/nope"}}
        say(p, rpc("tools/list", id=3))
        assert [t["name"] for t in hear(p)["result"]["tools"]] == TOOLS
        p.stdin.close()
        assert p.wait(timeout=30) == 0
        assert p.stdout.read() == b""
    finally:
        if p.poll() is None:
            p.kill()
    # the session was ended at end of input
    ends = env["admin"].audit(actor="key:" + env["keys"]["a"]["id"], action="end")["entries"]
    assert ends and ends[-1]["event"] == "mcp" and ends[-1]["reason"] == "DELETE /mcp"


def test_stdio_restarts_an_expired_session(env):
    g = Gateway(settings=["sandbox.backend=jail"])
    g.init()
    g.start()
    p = bridge(env, g.admin_key, url=g.url)
    try:
        say(p, rpc("initialize", id=1, protocolVersion="2025-11-25", capabilities={},
                   clientInfo={"name": "raw", "version": "1"}))
        assert hear(p)["result"]["protocolVersion"] == "2025-11-25"
        say(p, rpc("notifications/initialized", id=None))
        say(p, rpc("ping", id=2))
        assert hear(p) == {"jsonrpc": "2.0", "id": 2, "result": {}}
        g.stop()   # sessions live in the gateway's memory: a restart ends them
        g.start()
        say(p, rpc("tools/list", id=3))
        r = hear(p)
        assert r["id"] == 3 and [t["name"] for t in r["result"]["tools"]] == TOOLS
        g.stop()   # an unreachable gateway: the request is answered with the reason
        say(p, rpc("ping", id=4))
        r = hear(p)
        assert r["id"] == 4 and r["error"]["code"] == -32000
        assert r["error"]["message"].startswith("cannot reach the ForgeBox gateway: ")
        p.stdin.close()
        assert p.wait(timeout=30) == 0
        assert b"the session had expired: started a new one" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
        g.close()
