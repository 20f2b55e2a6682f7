"""The E2B-compatible listener (src/compat/e2b), black-box: the real, pinned
`e2b` and `@e2b/code-interpreter` npm packages (tests/compat/e2b/package.json
and its lockfile), run by Node.js, against a real `forgebox serve` with
`e2b.listen` set and jail sandboxes.  Only the E2B_* environment variables
point the SDKs here, as a user would set them.

Each scenario is one `node tests/compat/e2b/scenario.mjs NAME` that prints
one JSON object of what the SDK returned; the tests check it value by value.
"""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from gateway_fixtures import FIRST_PASSWORD, Gateway, free_port

COMPAT = os.path.join(ROOT, "tests", "compat", "e2b")
SCOPES = ["sandboxes:create", "sandboxes:read", "sandboxes:exec"]


def _npm_ci():
    """node_modules from the lockfile, once (make test runs this too)."""
    if os.path.isdir(os.path.join(COMPAT, "node_modules", "e2b")):
        return
    npm = shutil.which("npm")
    if not npm:
        pytest.fail("npm is missing: run scripts/install-deps.sh")
    p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", COMPAT], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    assert p.returncode == 0, p.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def e2b():
    _npm_ci()
    port = free_port()
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
                          f"e2b.listen=127.0.0.1:{port}"])
    g.init()
    g.start()
    admin = g.admin()
    ta, tb = admin.create_team("e2b-a"), admin.create_team("e2b-b")
    ua = admin.create_user(username="e2b-dev-a", password=FIRST_PASSWORD, team_id=ta["id"], role="developer")
    ub = admin.create_user(username="e2b-dev-b", password=FIRST_PASSWORD, team_id=tb["id"], role="developer")
    g.e2b_url = f"http://127.0.0.1:{port}"
    g.keys = {"a": admin.create_key(name="e2b", scopes=SCOPES, user_id=ua["id"])["key"],
              "b": admin.create_key(name="e2b", scopes=SCOPES, user_id=ub["id"])["key"]}
    yield g
    assert g.stop() == 0, g.read_log()


def scenario(g, name, key, **extra):
    env = dict(os.environ, E2B_API_URL=g.e2b_url, E2B_SANDBOX_URL=g.e2b_url, E2B_API_KEY=key,
               E2B_DOMAIN="forgebox.invalid", **extra)
    env.pop("E2B_DEBUG", None)
    p = subprocess.run(["node", os.path.join(COMPAT, "scenario.mjs"), name], cwd=COMPAT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    out = p.stdout.decode(errors="replace").strip().splitlines()
    assert out, f"no output; stderr: {p.stderr.decode(errors='replace')}\n{g.read_log()[-4000:]}"
    doc = json.loads(out[-1])
    assert "fatal" not in doc, f"{doc}\n{g.read_log()[-6000:]}"
    return doc


def test_sandbox_commands_and_files(e2b):
    r = scenario(e2b, "lifecycle", e2b.keys["a"])
    assert r["info"] == {"templateId": "base", "metadata": {"purpose": "e2b-compat"}, "state": "running",
                         "lifetimeS": 120}
    assert r["listed"] is True and r["notListed"] == 0
    assert 295 <= r["lifetimeAfterSetTimeoutS"] <= 300
    assert r["run"] == {"exitCode": 0, "stdout": "one\nthree\n", "stderr": "two\n",
                        "streamedOut": "one\nthree\n", "streamedErr": "two\n"}
    assert r["exit"] == {"error": "CommandExitError", "isCommandExitError": True, "exitCode": 7,
                         "stderr": "failing\n"}
    assert r["envs"] == "sandbox-env command-env\n/tmp\n"
    assert r["identity"] == "1000\nread-only\n"
    assert r["bgListed"] is True and r["bgKilled"] is True
    assert r["bgWait"]["error"] == "CommandExitError" and r["bgWait"]["exitCode"] != 0
    assert r["bgStdout"] == "started\n"
    assert r["stdin"] == "to stdin\n"
    assert r["connected"] == {"pid": True, "stdout": "late\n"}
    assert r["reconnected"] == "via connect\n"
    assert r["getInfo"] == {"name": "b.bin", "type": "file", "size": 3, "path": "/workspace/b.bin"}
    assert r["read"] == "hello from e2b\n" and r["readViaCommand"] == "hello from e2b\n"
    assert r["bytes"] == [0, 1, 255]
    assert r["octets"] == {"path": "/workspace/deep/er/octets.txt", "name": "octets.txt", "data": "as octets"}
    assert r["madeDir"] is True and r["madeDirAgain"] is False
    assert r["list"] == ["a.txt:file", "b.bin:file", "deep:dir", "newdir:dir", "notes:dir"]
    assert r["existsBefore"] is True and r["existsAfter"] is False
    assert r["moved"] == "hello from e2b\n"
    assert r["readAbsent"] in ("NotFoundError", "FileNotFoundError")
    assert r["running"] is True and r["runningAfterKill"] is False
    assert r["killAgain"] is False
    # Everything went through the service: the audit log holds the
    # sandbox's create, its execs and its files, on the key's behalf.
    entries = e2b.admin().audit(limit=1000)["entries"]
    mine = [(a["event"], a["action"]) for a in entries if a.get("resource") == r["id"]]
    assert ("sandbox", "create") in mine and ("file", "put") in mine and ("file", "get") in mine


def test_code_interpreter_keeps_state_and_reports_errors(e2b):
    r = scenario(e2b, "code", e2b.keys["a"])
    assert r["env"] == "('sandbox-env', 'run-env')" and r["envAfter"] is None
    assert r["first"] == {"text": "42", "stdout": ["side effect\n"], "stderr": [], "error": None, "count": 3}
    assert r["second"] == {"text": "41", "stdout": ["kept 41\n"], "stderr": ["warn\n"], "streamed": ["kept 41\n"],
                           "count": 4}
    assert r["error"]["name"] == "ZeroDivisionError"
    assert r["error"]["value"] == "division by zero"
    assert r["error"]["traceback"].startswith("Traceback (most recent call last):\n")
    assert 'File "<cell>", line 2, in f' in r["error"]["traceback"]
    assert r["error"]["traceback"].endswith("ZeroDivisionError: division by zero\n")
    assert "fb-e2b-repl" not in r["error"]["traceback"]
    assert r["error"]["text"] is None
    assert r["afterError"] == "41"
    assert r["slow"] == {"text": "'slept'", "stdout": ["before\n", "after\n"]}
    assert r["otherContext"] == "5" and r["otherContextSeesX"] == "False"


def test_wrong_key_is_an_authentication_error(e2b):
    r = scenario(e2b, "wrongkey", "fbk_AAAAAAAAAAAAAAAAAAAAAA_" + "B" * 43)
    assert r == {"error": "AuthenticationError", "isAuth": True}
    r = scenario(e2b, "wrongkey", "not-a-key")
    assert r == {"error": "AuthenticationError", "isAuth": True}


def test_another_teams_sandbox_is_not_found(e2b):
    theirs = scenario(e2b, "create", e2b.keys["b"])["id"]
    r = scenario(e2b, "otherteam", e2b.keys["a"], OTHER_SANDBOX_ID=theirs)
    assert r == {"getInfo": "SandboxNotFoundError", "getInfoIsNotFound": True, "kill": False,
                 "connect": "SandboxNotFoundError"}
    # ... and it is still there for its own team.
    mine = scenario(e2b, "otherteam", e2b.keys["b"], OTHER_SANDBOX_ID=theirs)
    assert mine["getInfo"] == "no error" and mine["kill"] is True


# ---- the wire, without the SDK: what a stranger or a misbehaving client gets --------------

def http(g, method, path, body=None, headers=None, raw=None):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", int(g.e2b_url.rsplit(":", 1)[1]), timeout=60)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def envelope(msg, flags=0):
    data = json.dumps(msg).encode()
    return bytes([flags]) + len(data).to_bytes(4, "big") + data


def envelopes(data):
    out = []
    while data:
        n = int.from_bytes(data[1:5], "big")
        out.append((data[0], json.loads(data[5:5 + n])))
        data = data[5 + n:]
    return out


@pytest.fixture(scope="module")
def boxes(e2b):
    """A sandbox of team a and one of team b, with their access tokens."""
    made = {}
    for team in ("a", "b"):
        st, _, body = http(e2b, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 300},
                           {"X-API-Key": e2b.keys[team]})
        assert st == 201, body
        made[team] = json.loads(body)
    yield made
    for team, sb in made.items():
        http(e2b, "DELETE", f"/sandboxes/{sb['sandboxID']}", headers={"X-API-Key": e2b.keys[team]})


def test_create_answers_what_the_sdk_parses(boxes):
    sb = boxes["a"]
    assert set(sb) >= {"sandboxID", "templateID", "clientID", "envdVersion", "envdAccessToken", "startedAt",
                       "endAt", "metadata", "domain"}
    assert sb["templateID"] == "base" and sb["envdVersion"] == "0.5.7" and sb["domain"] is None
    assert len(sb["envdAccessToken"]) == 32 and sb["metadata"] == {}


def test_control_api_refuses_without_a_good_key(e2b, boxes):
    for headers in ({}, {"X-API-Key": "fbk_nope_nope"}, {"Authorization": "Bearer " + e2b.keys["a"]}):
        st, _, body = http(e2b, "GET", "/v2/sandboxes", headers=headers)
        assert (st, json.loads(body)["code"]) == (401, 401)
    st, _, body = http(e2b, "POST", "/v2/sandboxes", {"templateID": "no-such-template"},
                       {"X-API-Key": e2b.keys["a"]})
    assert st == 400 and "templateID" in json.loads(body)["message"]
    # A key without sandboxes:create may not create (the service decides, as for /v1).
    admin = e2b.admin()
    me = [u for u in admin.list_users()["users"] if u["username"] == "e2b-dev-a"][0]
    reader = admin.create_key(name="reader", scopes=["sandboxes:read"], user_id=me["id"])["key"]
    st, _, body = http(e2b, "POST", "/v2/sandboxes", {"templateID": "base"}, {"X-API-Key": reader})
    assert st == 403, body
    st, _, body = http(e2b, "GET", "/v2/sandboxes", headers={"X-API-Key": reader})
    assert st == 200 and boxes["a"]["sandboxID"] in [s["sandboxID"] for s in json.loads(body)]
    assert boxes["b"]["sandboxID"] not in [s["sandboxID"] for s in json.loads(body)]


def test_envd_checks_the_sandboxes_access_token(e2b, boxes):
    a, b = boxes["a"], boxes["b"]
    good = {"E2b-Sandbox-Id": a["sandboxID"], "X-Access-Token": a["envdAccessToken"]}
    assert http(e2b, "GET", "/health", headers=good)[0] == 204
    for headers in ({"E2b-Sandbox-Id": a["sandboxID"]},
                    {"E2b-Sandbox-Id": a["sandboxID"], "X-Access-Token": "0" * 32},
                    {"E2b-Sandbox-Id": a["sandboxID"], "X-Access-Token": b["envdAccessToken"]},
                    {"E2b-Sandbox-Id": b["sandboxID"], "X-Access-Token": a["envdAccessToken"]},
                    {"E2b-Sandbox-Id": a["sandboxID"], "X-Access-Token": a["envdAccessToken"][:31]},
                    {"E2b-Sandbox-Id": "sb-nonexistent", "X-Access-Token": a["envdAccessToken"]}):
        st, _, body = http(e2b, "GET", "/files?path=/etc/hostname", headers=headers)
        assert (st, json.loads(body)["code"]) == (401, 401), headers
        st, _, body = http(e2b, "POST", "/process.Process/List", {}, headers)
        assert st == 401
    # The refusals are audited as failed authentications.
    entries = e2b.admin().audit(outcome="denied", limit=1000)["entries"]
    assert any(x.get("reason") == "wrong envd access token" for x in entries)


def test_a_revoked_key_ends_its_sandboxes_access_tokens(e2b):
    admin = e2b.admin()
    me = [u for u in admin.list_users()["users"] if u["username"] == "e2b-dev-a"][0]
    k = admin.create_key(name="short-lived", scopes=SCOPES, user_id=me["id"])
    st, _, body = http(e2b, "POST", "/v2/sandboxes", {"templateID": "base"}, {"X-API-Key": k["key"]})
    assert st == 201
    sb = json.loads(body)
    h = {"E2b-Sandbox-Id": sb["sandboxID"], "X-Access-Token": sb["envdAccessToken"]}
    assert http(e2b, "POST", "/process.Process/List", {}, h)[:1] == (200,)
    admin.delete_key(k["id"])
    st, _, body = http(e2b, "POST", "/process.Process/List", {}, h)
    assert (st, json.loads(body)) == (401, {"code": 401, "message": "invalid credentials"})
    entries = admin.audit(outcome="denied", limit=1000)["entries"]
    assert any(x.get("reason") == "revoked" for x in entries)
    admin.delete_sandbox(sb["sandboxID"])


def test_connect_rpc_framing_and_errors(e2b, boxes):
    a = boxes["a"]
    h = {"E2b-Sandbox-Id": a["sandboxID"], "X-Access-Token": a["envdAccessToken"],
         "Content-Type": "application/connect+json"}
    start = {"process": {"cmd": "/bin/sh", "args": ["-c", "printf 'x\\377'; echo err >&2; exit 3"]}}
    st, hdrs, body = http(e2b, "POST", "/process.Process/Start", headers=h, raw=envelope(start))
    assert st == 200 and hdrs["Content-Type"] == "application/connect+json"
    frames = envelopes(body)
    assert frames[0] == (0, {"event": {"start": {"pid": 1}}})
    data = [f[1]["event"]["data"] for f in frames[1:-2]]
    assert {"stdout": "eP8="} in data and {"stderr": "ZXJyCg=="} in data  # bytes, not text
    assert frames[-2] == (0, {"event": {"end": {"exitCode": 3, "exited": True, "status": "exit status 3"}}})
    assert frames[-1] == (2, {})
    # A pty is not there: a clean Connect error in the end-of-stream message.
    st, _, body = http(e2b, "POST", "/process.Process/Start", headers=h,
                       raw=envelope({"process": {"cmd": "sh"}, "pty": {"size": {"cols": 80, "rows": 24}}}))
    assert st == 200 and envelopes(body) == [(2, {"error": {"code": "unimplemented",
                                                           "message": "ptys are not supported on this server"}})]
    # Unary JSON: errors are {code, message} with Connect's HTTP statuses.
    uh = dict(h, **{"Content-Type": "application/json"})
    st, _, body = http(e2b, "POST", "/filesystem.Filesystem/WatchDir", {"path": "/workspace"}, uh)
    assert st == 501 and json.loads(body)["code"] == "unimplemented"
    st, _, body = http(e2b, "POST", "/filesystem.Filesystem/Stat", {"path": "/workspace/none"}, uh)
    assert st == 404 and json.loads(body)["code"] == "not_found"
    st, _, body = http(e2b, "POST", "/process.Process/SendSignal", {"process": {"pid": 99}, "signal": 9}, uh)
    assert st == 404 and json.loads(body)["code"] == "not_found"
    # Malformed envelopes: cut short, lying about their length, compressed,
    # not JSON objects: a clean invalid_argument, nothing runs.
    for raw in (envelope(start)[:-1], b"\x00\xff\xff\xff\xff{}", b"\x01" + envelope(start)[1:],
                envelope(start)[:3], b"\x00\x00\x00\x00\x02[]"):
        st, _, body = http(e2b, "POST", "/process.Process/Start", headers=h, raw=raw)
        assert st == 200 and envelopes(body) == [(2, {"error": {
            "code": "invalid_argument", "message": "the body is not a sequence of JSON envelopes"}})], raw
    for raw in (b"{", b"[1]", b'{"path": "/a", "path": "/b"}'):
        st, _, body = http(e2b, "POST", "/filesystem.Filesystem/Stat", headers=uh, raw=raw)
        assert (st, json.loads(body)["code"]) == (400, "invalid_argument"), raw
    st, _, body = http(e2b, "POST", "/process.Process/List", {}, uh)
    assert [p["pid"] for p in json.loads(body)["processes"]] == []
    # A file name with a newline and a tab comes through find -printf whole.
    st, _, body = http(e2b, "POST", "/files?path=/workspace/odd%0Aname%09x", raw=b"odd", headers=dict(
        h, **{"Content-Type": "application/octet-stream"}))
    assert st == 200, body
    st, _, body = http(e2b, "POST", "/filesystem.Filesystem/ListDir", {"path": "/workspace", "depth": 1}, uh)
    names = [e["name"] for e in json.loads(body)["entries"]]
    assert "odd\nname\tx" in names


def test_connect_gives_a_v1_sandbox_a_token(e2b):
    native = e2b.client(e2b.keys["a"]).create_sandbox(backend="jail")
    st, _, body = http(e2b, "POST", f"/v2/sandboxes/{native['id']}/connect", {"timeout": 200},
                       {"X-API-Key": e2b.keys["a"]})
    assert st == 200, body
    sb = json.loads(body)
    assert sb["sandboxID"] == native["id"] and len(sb["envdAccessToken"]) == 32
    h = {"E2b-Sandbox-Id": native["id"], "X-Access-Token": sb["envdAccessToken"],
         "Content-Type": "application/connect+json"}
    st, _, body = http(e2b, "POST", "/process.Process/Start", headers=h,
                       raw=envelope({"process": {"cmd": "echo", "args": ["via e2b"]}}))
    assert {"stdout": "dmlhIGUyYgo="} in [f[1]["event"].get("data") for f in envelopes(body)[:-1]]
    # Team b cannot connect to it (404), and the timeout it set is the sandbox's TTL.
    st, _, _ = http(e2b, "POST", f"/v2/sandboxes/{native['id']}/connect", {}, {"X-API-Key": e2b.keys["b"]})
    assert st == 404
    info = e2b.client(e2b.keys["a"]).get_sandbox(native["id"])
    assert info["expires_at"] == sb["endAt"]
    e2b.client(e2b.keys["a"]).delete_sandbox(native["id"])


def test_set_timeout_is_the_ttl_the_reaper_keeps(e2b):
    import time
    h = {"X-API-Key": e2b.keys["a"]}
    st, _, body = http(e2b, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 600}, h)
    sid = json.loads(body)["sandboxID"]
    assert http(e2b, "POST", f"/sandboxes/{sid}/timeout", {"timeout": 1}, h)[0] == 204
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and http(e2b, "GET", f"/sandboxes/{sid}", headers=h)[0] == 200:
        time.sleep(0.5)
    assert http(e2b, "GET", f"/sandboxes/{sid}", headers=h)[0] == 404
    st, _, other = http(e2b, "POST", "/v2/sandboxes", {"templateID": "base"}, h)
    oid = json.loads(other)["sandboxID"]
    for bad in ({"timeout": 0}, {"timeout": "10"}, {}, {"timeout": 10 ** 9}):
        assert http(e2b, "POST", f"/sandboxes/{oid}/timeout", bad, h)[0] == 400, bad
    http(e2b, "DELETE", f"/sandboxes/{oid}", headers=h)


def test_quota_is_429(e2b):
    port = free_port()
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
                          "quotas.max_sandboxes_per_team=1", f"e2b.listen=127.0.0.1:{port}"])
    g.init()
    g.start()
    try:
        g.e2b_url = f"http://127.0.0.1:{port}"
        h = {"X-API-Key": g.admin_key}
        st, _, first = http(g, "POST", "/v2/sandboxes", {"templateID": "base"}, h)
        assert st == 201
        st, _, body = http(g, "POST", "/v2/sandboxes", {"templateID": "base"}, h)
        assert st == 429 and json.loads(body)["code"] == 429
        http(g, "DELETE", f"/sandboxes/{json.loads(first)['sandboxID']}", headers=h)
    finally:
        assert g.stop() == 0


def test_rate_limits_answer_429(e2b):
    port = free_port()
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1", "limits.rate_burst=2",
                          f"e2b.listen=127.0.0.1:{port}"])
    g.init()
    g.start()
    try:
        g.e2b_url = f"http://127.0.0.1:{port}"
        sts = [http(g, "GET", "/v2/sandboxes", headers={"X-API-Key": g.admin_key}) for _ in range(4)]
        assert [s[0] for s in sts[:2]] == [200, 200]
        assert sts[3][0] == 429 and int(sts[3][1]["Retry-After"]) >= 1
        assert json.loads(sts[3][2]) == {"code": 429, "message": "too many requests for this key"}
    finally:
        assert g.stop() == 0


def test_off_unless_configured(e2b):
    """Without e2b.listen nothing else listens: the gateway's log names no
    E2B listener (the fixture's gateway has one, and says so)."""
    assert "forgebox e2b-compatible listener" in e2b.read_log()
    g = Gateway(settings=["sandbox.backend=jail"])
    g.init()
    g.start()
    try:
        assert "e2b" not in g.read_log().replace('"e2b":{"listen":null}', "")
    finally:
        assert g.stop() == 0
