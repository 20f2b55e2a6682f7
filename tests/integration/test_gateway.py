"""The gateway, black-box: a real `forgebox serve` with a real store,
driven through the project's Python client."""
import json
import os
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import FORGEBOX, forgebox
from gateway_fixtures import FIRST_PASSWORD, Gateway, declared_too_large, forgebox_client

ApiError = forgebox_client.ApiError


@pytest.fixture(scope="module")
def gw():
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
                          "quotas.max_sandboxes_per_team=60", "quotas.max_memory_mib_per_team=100000",
                          "quotas.max_vcpus_per_team=60"])
    g.init()
    g.start()
    yield g
    assert g.stop() == 0, g.read_log()


@pytest.fixture(scope="module")
def world(gw):
    """Two teams, a developer in each, a viewer, and keys of every kind."""
    admin = gw.admin()
    ta = admin.create_team("team-a")
    tb = admin.create_team("team-b")
    users = {}
    for name, team, role in [("dev-a", ta, "developer"), ("dev-b", tb, "developer"),
                             ("view-a", ta, "viewer")]:
        users[name] = admin.create_user(username=name, password=FIRST_PASSWORD, team_id=team["id"],
                                        role=role)
    return {"teams": {"a": ta, "b": tb}, "users": users}


def test_healthz_needs_no_key(gw):
    assert gw.client().healthz() == {"status": "ok"}


def test_admin_init_refuses_twice(gw):
    p = subprocess.run([FORGEBOX, "admin", "init", "--state-dir", gw.state], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 1
    assert b"already initialised" in p.stderr


def test_admin_key_is_last_line_and_works(gw):
    assert gw.admin_key.startswith("fbk_")
    keys = gw.admin().list_keys()["keys"]
    assert len(keys) >= 1
    assert all("key" not in k and "key_hash" not in k for k in keys)


def test_sandbox_lifecycle(gw):
    c = gw.admin()
    sb = c.create_sandbox(backend="jail", memory_mib=256)
    assert sb["backend"] == "jail" and sb["state"] == "running"
    assert sb["isolation"] == "namespaces"          # what is in force, as the backend says
    assert c.get_sandbox(sb["id"])["isolation"] == "namespaces"
    assert sb["id"] in [s["id"] for s in c.list_sandboxes()["sandboxes"]]
    r = c.exec(sb["id"], ["sh", "-c", "echo hi; echo err >&2; exit 3"])
    assert (r["exit_code"], r["stdout"], r["stderr"]) == (3, "hi\n", "err\n")
    assert r["timed_out"] is False and r["truncated"] is False
    c.put_file(sb["id"], "/workspace/data.bin", b"\x00\x01binary\xff")
    assert c.get_file(sb["id"], "/workspace/data.bin") == b"\x00\x01binary\xff"
    r = c.exec(sb["id"], ["python3", "-c", "import sys; print(sys.stdin.read().upper())"], stdin="abc")
    assert r["stdout"] == "ABC\n"
    r = c.exec(sb["id"], ["sleep", "30"], timeout_s=1)
    assert r["timed_out"] is True and r["exit_code"] is None
    assert c.get_sandbox(sb["id"])["id"] == sb["id"]
    c.delete_sandbox(sb["id"])
    with pytest.raises(ApiError) as e:
        c.get_sandbox(sb["id"])
    assert e.value.status == 404


def test_exec_streams_as_server_sent_events(gw):
    c = gw.admin()
    sb = c.create_sandbox(backend="jail")
    try:
        events = list(c.exec_stream(sb["id"], ["sh", "-c", "echo one; sleep 1; echo two >&2; exit 4"]))
    finally:
        c.delete_sandbox(sb["id"])
    kinds = [e for e, _ in events]
    assert kinds[-1] == "exit"
    out = "".join(d["data"] for e, d in events if e == "stdout")
    err = "".join(d["data"] for e, d in events if e == "stderr")
    assert (out, err) == ("one\n", "two\n")
    assert events[-1][1]["exit_code"] == 4


def test_non_utf8_output_is_replaced_not_lost(gw):
    c = gw.admin()
    sb = c.create_sandbox(backend="jail")
    try:
        r = c.exec(sb["id"], ["printf", "a\\377b"])
    finally:
        c.delete_sandbox(sb["id"])
    assert r["stdout"] == "a\ufffdb"


# ---- bad input ----------------------------------------------------------------

@pytest.mark.parametrize("body,message", [
    (b"{", "malformed JSON"),
    (b"[]", "must be a JSON object"),
    (b'{"backend": 7}', "\"backend\" must be"),
    (b'{"memory_mib": "lots"}', "\"memory_mib\" must be an integer"),
    (b'{"memory_mib": 99999999999}', "\"memory_mib\" must be an integer"),
    (b'{"vcpus": -1}', "\"vcpus\" must be an integer"),
    (b'{"ttl_s": 0}', "\"ttl_s\" must be an integer"),
    (b'{"colour": "blue"}', "unknown field \"colour\""),
    (b'{"backend": "jail"}\x00', "NUL"),
    (b'{"backend": "\xff"}', "malformed JSON"),
    (b'{"backend": "jail", "backend": "vm"}', "malformed JSON"),
])
def test_bad_create_bodies(gw, body, message):
    st, hdr, data = gw.admin().request("POST", "/v1/sandboxes", body=body, raw=True)
    assert st == 400, data
    err = json.loads(data)["error"]
    assert err["code"] == "bad_request" and message in err["message"]


def test_huge_body_is_refused_and_server_lives(gw):
    """A body declared larger than limits.max_body_bytes is refused with
    413 from its headers alone: the answer comes while the client has sent
    only a little of it (a raw socket, since a client that insists on
    sending all 2 MiB first may meet a closed connection instead)."""
    head, body = declared_too_large(gw.admin(), "POST", "/v1/sandboxes")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b'"too_large"' in body, body[:600]
    assert gw.client().healthz()["status"] == "ok"


@pytest.mark.parametrize("body,message", [
    ({"cmd": []}, "\"cmd\" must be a non-empty array"),
    ({"cmd": "ls"}, "\"cmd\" must be a non-empty array"),
    ({"cmd": ["ls", 3]}, "only strings"),
    ({"cmd": ["ls"], "timeout_s": 99999}, "\"timeout_s\""),
    ({"cmd": ["ls"], "env": {"A": 1}}, "\"env\""),
    ({"cmd": ["ls"], "cwd": "relative"}, "\"cwd\""),
    ({"cmd": ["ls"], "shell": True}, "unknown field"),
])
def test_bad_exec_bodies(gw, body, message):
    c = gw.admin()
    sb = c.create_sandbox(backend="jail")
    try:
        st, hdr, data = c.request("POST", f"/v1/sandboxes/{sb['id']}/exec",
                                  body=json.dumps(body).encode(), raw=True)
    finally:
        c.delete_sandbox(sb["id"])
    assert st == 400, data
    assert message in json.loads(data)["error"]["message"]


@pytest.mark.parametrize("path", ["/etc/passwd", "/workspace/../etc/shadow", "../../root",
                                  "/proc/self/environ", "/workspace/link"])
def test_files_api_refuses_escapes(gw, path):
    c = gw.admin()
    sb = c.create_sandbox(backend="jail")
    try:
        c.exec(sb["id"], ["ln", "-s", "/etc/passwd", "/workspace/link"])
        with pytest.raises(ApiError) as e:
            c.get_file(sb["id"], path)
        with pytest.raises(ApiError) as e2:
            c.put_file(sb["id"], path, b"pwned")
    finally:
        c.delete_sandbox(sb["id"])
    assert e.value.status in (400, 404) and e2.value.status in (400, 404)
    assert "pwned" not in open("/etc/passwd").read()


def test_unknown_route_and_method(gw):
    st, _, data = gw.admin().request("GET", "/v1/nothing", raw=True)
    assert st == 404 and json.loads(data)["error"]["code"] == "not_found"
    st, _, data = gw.admin().request("PATCH", "/v1/sandboxes", raw=True)
    assert st == 405


def test_routes_match_openapi():
    import yaml
    doc = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.yaml")))
    documented = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops
                  if m in ("get", "post", "put", "delete", "patch")}
    r = forgebox("routes")
    assert r.rc == 0
    served = set(r.stdout.split("\n")) - {""}
    assert served == documented
