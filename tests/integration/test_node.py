"""`forgebox node`: a host that runs sandboxes for gateways (issue 12,
items 2 and 3, docs/node-api.md, docs/node.md).

Every test runs a real node (jail backend) on loopback with a real
certificate from a real `forgebox ca`, sharing a SQLite store with the
test, which plays the gateway: it reserves records the way
fb_store_sandbox_reserve does and calls /node/v1 over HTTPS with a gateway
certificate through Python's ssl module.  Outcomes are asserted exactly:
status, error code, the store's records, the audit entries.
"""
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import FORGEBOX, RUN_DIR, leftovers, settled_leftovers
from node_fixtures import CA, Node, NodeClient, PgStore, SqliteStore, fbx
from pg_fixture import PgServer, pg_bindir


@pytest.fixture
def env(tmp_path):
    ca = CA(tmp_path)
    store = SqliteStore(tmp_path / "state")
    gw = ca.issue("gateway", "gw-1")
    return ca, store, gw


@pytest.fixture
def node(env):
    ca, store, gw = env
    n = Node(ca, "node-1", store, capacity=2).start()
    yield n
    n.stop()


def wait_for(pred, timeout=30, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def new_sandbox(node, store, c, sid, **kw):
    store.reserve(sid, node.id)
    st, body, _ = c.create(sid, **kw)
    assert st == 201, body
    return body


def run(c, sid, argv, stdin=False, **kw):
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs", dict({"argv": argv, "stdin": stdin}, **kw))
    assert st == 201, body
    return body["exec"]


def output(lines, kind="stdout"):
    return b"".join(base64.b64decode(l["data"]) for l in lines if l["kind"] == kind)


def headers_only(c, request_line, length, ctype="application/octet-stream"):
    """Sends only the headers of a request declaring length bytes; the whole answer."""
    s = socket.create_connection(("127.0.0.1", c.node.port))
    with c.ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        t.sendall(f"{request_line} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode())
        resp = b""
        while chunk := t.recv(4096):
            resp += chunk
    return resp.decode()


# ---- registration, healthz ----------------------------------------------------------


def test_registers_and_healthz(env, node):
    ca, store, gw = env
    row = store.node("node-1")
    assert row["state"] == "up" and row["address"] == node.address and row["backend"] == "jail"
    assert row["capacity"] == 2 and row["id"] == node.id and row["isolation"] == "namespaces"
    # Its SQLite store's write-ahead log is preallocated to its steady size
    # (fb_store_preallocate_log, as `forgebox serve` does): no gateway runs
    # on this store, and a few commits alone leave it a few pages long.
    assert os.path.getsize(os.path.join(store.state, "forgebox.db-wal")) >= 4 * 1024 * 1024
    st, body, _ = node.client(gw).get("/node/v1/healthz")
    assert st == 200, body
    assert body == {"status": "ok", "node": {"id": node.id, "name": "node-1", "backend": "jail",
                                             "isolation": "namespaces", "capacity": 2, "live": 0,
                                             "memory_mib": row["memory_mib"]}}
    # The heartbeat moves.
    first = row["heartbeat_unix"]
    assert wait_for(lambda: store.node("node-1")["heartbeat_unix"] > first, timeout=15)
    reg = store.audit("node", "register")
    assert len(reg) == 1 and reg[0][4] == "allowed" and "registered: 127.0.0.1" in reg[0][5]
    # forgebox node list shows it.
    p = fbx("node", "list", "--state-dir", store.state, "--store", store.url)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATE", "BACK", "LIVE/CAP", "HEARTBEAT"]
    assert lines[1].split()[:5] == ["node-1", node.address, "up", "jail", "0/2"]
    p = fbx("node", "list", "--state-dir", store.state, "--store", store.url, "--json")
    j = json.loads(p.stdout)
    assert [(x["name"], x["state"], x["live"], x["capacity"]) for x in j] == [("node-1", "up", 0, 2)]


def test_unknown_paths_and_methods(env, node):
    ca, store, gw = env
    c = node.client(gw)
    st, body, _ = c.get("/node/v1/nothing")
    assert st == 404 and body["error"]["code"] == "not_found"
    st, body, _ = c.get("/v1/sandboxes")
    assert st == 404 and body["error"]["code"] == "not_found"
    st, body, _ = c.request("DELETE", "/node/v1/healthz")
    assert st == 405 and body["error"]["code"] == "bad_request"
    st, body, _ = c.get("/node/v1/sandboxes/..%2f..")
    assert st == 400 and body["error"]["code"] == "bad_request"
    st, body, _ = c.get("/node/v1/sandboxes/sb_nothere")
    assert st == 404 and body["error"]["code"] == "not_found"


# ---- mutual TLS ---------------------------------------------------------------------


def tls_refusals(store):
    return [(r[1], r[5].split(":", 1)[0]) for r in store.audit("node.tls", "client_certificate")]


def test_mtls_refusals_audited(env, node, tmp_path):
    ca, store, gw = env
    # No certificate.
    st, body, _ = NodeClient(node, None).get("/node/v1/healthz")
    assert st == 403 and body["error"]["code"] == "forbidden"
    assert body["error"]["message"].startswith("no_certificate: ")
    # Another CA's gateway certificate.
    other = CA(tmp_path / "other", org="evil")
    st, body, _ = node.client(other.issue("gateway", "gw-1")).get("/node/v1/healthz")
    assert st == 403 and body["error"]["message"].startswith("other_ca: ")
    # Expired, not yet valid.
    st, body, _ = node.client(ca.issue("gateway", "gw-old", "--backdate-days", "30", "--days", "10")).get(
        "/node/v1/healthz")
    assert st == 403 and body["error"]["message"].startswith("expired: ")
    st, body, _ = node.client(ca.issue("gateway", "gw-new", "--postdate-days", "10")).get("/node/v1/healthz")
    assert st == 403 and body["error"]["message"].startswith("not_yet_valid: ")
    # The wrong role: a node's certificate calling a node.
    st, body, _ = node.client(ca.issue("node", "node-2")).get("/node/v1/healthz")
    assert st == 403 and body["error"]["message"].startswith("wrong_role: ")
    # Revoked: `forgebox ca revoke` re-signs the CRL, which the node re-reads.
    victim = ca.issue("gateway", "gw-2")
    st, body, _ = node.client(victim).get("/node/v1/healthz")
    assert st == 200, body
    ca.revoke(victim[2])
    st, body, _ = node.client(victim).get("/node/v1/healthz")
    assert st == 403 and body["error"]["message"].startswith("revoked: ")
    # A refused client cannot reach anything else either.
    st, body, _ = NodeClient(node, None).post("/node/v1/sandboxes", {"id": "sb_x"})
    assert st == 403 and body["error"]["code"] == "forbidden"
    # The actor is the certificate's name only once the chain verified (a
    # wrong role): an unverified certificate's name is not believed.
    assert tls_refusals(store) == [("anonymous", "no_certificate"), ("anonymous", "other_ca"),
                                   ("anonymous", "expired"), ("anonymous", "not_yet_valid"),
                                   ("node-2", "wrong_role"), ("anonymous", "revoked"),
                                   ("anonymous", "no_certificate")]
    assert all(r[4] == "denied" and r[2] == "node-1" for r in store.audit("node.tls"))
    # A good gateway is still served, and TLS 1.2 is refused in the handshake.
    st, body, _ = node.client(gw).get("/node/v1/healthz")
    assert st == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        NodeClient(node, gw[:2], tls12=True).get("/node/v1/healthz")
    assert wait_for(lambda: store.audit("node.tls", "handshake"), timeout=10)
    # The chain still verifies with the node's entries in it.
    p = fbx("audit", "verify", "--state-dir", store.state)
    assert p.returncode == 0, p.stdout + p.stderr


def test_refusals_flood_is_not_all_audited(env):
    """A stranger cannot write the shared chain at will: refusals beyond a
    source's budget (limits.rate_rps / rate_burst) are answered the same
    but only logged."""
    ca, store, gw = env
    n = Node(ca, "node-1", store, settings=["limits.rate_rps=1", "limits.rate_burst=5"]).start()
    try:
        stranger = NodeClient(n, None)
        statuses = [stranger.get("/node/v1/healthz")[0] for _ in range(40)]
        assert statuses == [403] * 40
        audited = len(store.audit("node.tls", "client_certificate"))
        # The burst, plus at most one a second for as long as the flood took.
        assert 5 <= audited < 40, audited
        assert n.log().count('"audited":false') == 40 - audited
        st, _, _ = n.client(gw).get("/node/v1/healthz")
        assert st == 200
    finally:
        n.stop()


def test_refuses_a_request_timeout_below_the_keepalive(env):
    ca, store, gw = env
    n = Node(ca, "node-1", store, settings=["limits.request_timeout_s=10"])
    n.start(wait=False)
    assert n.proc.wait(timeout=60) == 1
    assert "limits.request_timeout_s must be above 10 s on a node" in n.log(), n.log()
    n.stop()
    assert store.node("node-1") is None


def forged(ca, tmp_path, name, san):
    """A certificate signed by the CA's own key with openssl, outside
    `forgebox ca issue`: OU=gateway, the given subjectAltName."""
    d = tmp_path / f"forged-{name}"
    d.mkdir()
    run_ok = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run_ok("openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", d / "k.pem")
    run_ok("openssl", "req", "-new", "-key", d / "k.pem", "-subj", f"/OU=gateway/CN={name}", "-out", d / "r.csr")
    (d / "ext.cnf").write_text("keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth,serverAuth\n"
                               f"subjectAltName={san}\n")
    run_ok("openssl", "x509", "-req", "-in", d / "r.csr", "-CA", ca.crt, "-CAkey", os.path.join(ca.dir, "ca.key"),
           "-set_serial", "0x" + os.urandom(16).hex(), "-days", "10", "-out", d / "c.pem", "-extfile", d / "ext.cnf")
    return str(d / "c.pem"), str(d / "k.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed (forges the certificates)")
def test_certificates_without_one_identity_are_refused(env, node, tmp_path):
    ca, store, gw = env
    for name, san in [("gw-x", "DNS:gw-x"),
                      ("gw-y", "URI:forgebox://gateway/gw-y,URI:forgebox://gateway/gw-z")]:
        st, body, _ = node.client(forged(ca, tmp_path, name, san)).get("/node/v1/healthz")
        assert st == 403 and body["error"]["message"].startswith("bad_certificate: "), body
    # The same forging with one proper identity passes: the test's certificates are what they claim.
    st, body, _ = node.client(forged(ca, tmp_path, "gw-w", "URI:forgebox://gateway/gw-w")).get("/node/v1/healthz")
    assert st == 200, body
    assert [r[1] for r in tls_refusals(store)] == ["bad_certificate", "bad_certificate"]


def test_refuses_to_start_with_a_certificate_of_another_name(env, tmp_path):
    ca, store, gw = env
    n = Node(ca, "node-1", store)
    n.crt, n.key, _ = ca.issue("node", "node-9", "--ip", "127.0.0.1")
    n.start(wait=False)
    assert n.proc.wait(timeout=60) == 1
    assert "wrong_name" in n.log() and "node-9" in n.log()
    n.stop()
    assert store.node("node-1") is None


# ---- sandboxes, execs, files ----------------------------------------------------------


def test_create_exec_stdin_signal_files_delete(env, node):
    ca, store, gw = env
    c = node.client(gw)
    sid = "sb_alpha1"
    # No record reserved: refused, nothing boots.
    st, body, _ = c.create(sid)
    assert st == 404 and body["error"]["code"] == "not_found"
    store.reserve(sid, node.id)
    st, body, _ = c.create(sid)
    assert st == 201, body
    assert body["id"] == sid and body["isolation"] == "namespaces" and body["node"] == "node-1"
    assert store.sandbox_state(sid) == "running"
    # Duplicate id.
    st, body, _ = c.create(sid)
    assert st == 409 and body["error"]["code"] == "exists"
    st, body, _ = c.get(f"/node/v1/sandboxes/{sid}")
    assert st == 200 and body["state"] == "running" and body["id"] == sid
    st, body, _ = c.get("/node/v1/sandboxes")
    assert [s["id"] for s in body["sandboxes"]] == [sid]

    # An exec streamed to its exit.
    x = run(c, sid, ["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    st, lines = c.events(sid, x)
    assert st == 200
    assert output(lines) == b"hello\n" and output(lines, "stderr") == b"oops\n"
    end = lines[-1]
    assert end["kind"] == "exit" and end["result"]["exit_code"] == 3 and end["result"]["started"] is True
    # Positions: every line's next is the following line's pos; resume from the middle.
    assert all(a["next"] == b["pos"] for a, b in zip(lines, lines[1:]))
    st, again = c.events(sid, x, start=lines[1]["pos"])
    assert again == lines[1:]
    st, body = c.events(sid, x, start=end["next"] + 5)
    assert st == 404 and body["error"]["code"] == "not_found"
    st, body = c.events(sid, "999")
    assert st == 404

    # env and cwd as given.
    x = run(c, sid, ["sh", "-c", 'echo "$GREETING"; pwd'], env=[["GREETING", "hi there"]], cwd="/tmp")
    assert output(c.events(sid, x)[1]) == b"hi there\n/tmp\n"
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs", {"argv": ["true"], "env": [["A"]]})
    assert st == 400 and body["error"]["code"] == "bad_request"

    # stdin through the pipe, closed at the end.
    x = run(c, sid, ["sh", "-c", "tr a-z A-Z"], stdin=True)
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x}/stdin", b"hello ",
                         headers={"Content-Type": "application/octet-stream"})
    assert st == 204, body
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x}/stdin?close=1", b"node\n",
                         headers={"Content-Type": "application/octet-stream"})
    assert st == 204, body
    st, lines = c.events(sid, x)
    assert output(lines) == b"HELLO NODE\n" and lines[-1]["result"]["exit_code"] == 0
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x}/stdin", b"more",
                         headers={"Content-Type": "application/octet-stream"})
    assert st == 409 and body["error"]["code"] == "bad_state"
    x2 = run(c, sid, ["true"])
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x2}/stdin", b"more")
    assert st == 409 and body["error"]["code"] == "bad_state"

    # A signal ends a sleeper.
    x = run(c, sid, ["sh", "-c", "echo ready; exec sleep 600"])
    conn = c.conn()
    conn.request("GET", f"/node/v1/sandboxes/{sid}/execs/{x}/events")
    r = conn.getresponse()
    first = json.loads(r.readline())
    assert first["kind"] == "stdout" and base64.b64decode(first["data"]) == b"ready\n"
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x}/signal", {"signal": "TERM"})
    assert st == 204, body
    rest = [json.loads(l) for l in r.read().splitlines()]
    conn.close()
    assert rest[-1]["kind"] == "exit" and rest[-1]["result"]["signal"] == signal.SIGTERM, rest
    assert rest[-1]["result"]["timed_out"] is False
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x}/signal", {"signal": "SEGV"})
    assert st == 400 and body["error"]["code"] == "bad_request"
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs", {"argv": []})
    assert st == 400 and body["error"]["code"] == "bad_request"
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs", {"argv": ["true"], "rm": "-rf"})
    assert st == 400 and body["error"]["message"] == 'unknown field "rm"'

    # Files: put, get, too large, traversal.
    data = os.urandom(200 * 1024)
    st, body, _ = c.request("PUT", f"/node/v1/sandboxes/{sid}/files?path=/workspace/blob.bin&mode=0600", data,
                            headers={"Content-Type": "application/octet-stream"})
    assert st == 201 and body == {"path": "/workspace/blob.bin", "size": len(data)}, body
    st, got, h = c.get(f"/node/v1/sandboxes/{sid}/files?path=/workspace/blob.bin", raw=True)
    assert st == 200 and got == data and h["Content-Type"] == "application/octet-stream"
    st, body, _ = c.get(f"/node/v1/sandboxes/{sid}/files?path=/workspace/blob.bin&max=1000")
    assert st == 413 and body["error"]["code"] == "too_large"
    # Bigger than a pipe and a protocol chunk both ways; and an empty file.
    big = os.urandom(5 * 1024 * 1024 + 17)
    st, body, _ = c.request("PUT", f"/node/v1/sandboxes/{sid}/files?path=/tmp/big.bin", big)
    assert st == 201 and body["size"] == len(big), body
    st, got, _ = c.get(f"/node/v1/sandboxes/{sid}/files?path=/tmp/big.bin", raw=True)
    assert st == 200 and got == big
    st, body, _ = c.request("PUT", f"/node/v1/sandboxes/{sid}/files?path=/workspace/empty", b"")
    assert st == 201 and body["size"] == 0, body
    st, got, _ = c.get(f"/node/v1/sandboxes/{sid}/files?path=/workspace/empty", raw=True)
    assert st == 200 and got == b""
    x = run(c, sid, ["stat", "-c", "%a %s", "/workspace/blob.bin"])
    assert output(c.events(sid, x)[1]) == f"600 {len(data)}\n".encode()
    for bad in ("/workspace/../etc/passwd", "/etc/passwd", "workspace/x", "/workspace/./x", "/tmp//x", ""):
        st, body, _ = c.request("PUT", f"/node/v1/sandboxes/{sid}/files?path={bad}", b"x")
        assert st == 400 and body["error"]["code"] == "bad_path", (bad, body)
        st, body, _ = c.get(f"/node/v1/sandboxes/{sid}/files?path={bad}")
        assert st == 400 and body["error"]["code"] == "bad_path", (bad, body)
    st, body, _ = c.get(f"/node/v1/sandboxes/{sid}/files?path=/workspace/none")
    assert st == 404 and body["error"]["code"] == "not_found"
    # A body over limits.max_file_bytes is refused from its Content-Length.
    resp = headers_only(c, f"PUT /node/v1/sandboxes/{sid}/files?path=/workspace/big", 200 * 1024 * 1024 * 1024)
    assert resp.startswith("HTTP/1.1 413"), resp
    assert '"code":"too_large"' in resp

    # Delete: destroyed, record destroyed, 404 after.
    st, body, _ = c.request("DELETE", f"/node/v1/sandboxes/{sid}")
    assert st == 204
    assert store.sandbox_state(sid) == "destroyed"
    st, body, _ = c.request("DELETE", f"/node/v1/sandboxes/{sid}")
    assert st == 404 and body["error"]["code"] == "not_found"
    st, body, _ = c.get("/node/v1/healthz")
    assert body["node"]["live"] == 0


def test_exec_with_stream_answers_with_its_events(env, node):
    """POST .../execs {"stream": true}: one round trip - the answer is the
    exec's event stream, its first line naming the exec; the exec is an
    ordinary one (GET .../events replays it, stdin and signals reach it)."""
    ca, store, gw = env
    c = node.client(gw)
    sid = "sb_str1"
    new_sandbox(node, store, c, sid)
    st, (resp, conn) = c.exec_stream(sid, {"argv": ["sh", "-c", "echo hello; echo oops >&2; exit 3"]})
    try:
        assert st == 201
        lines = c.lines(resp)
    finally:
        conn.close()
    first, rest = lines[0], lines[1:]
    assert first["kind"] == "started" and first["exec"].isdigit()
    assert output(rest) == b"hello\n" and output(rest, "stderr") == b"oops\n"
    assert rest[-1]["kind"] == "exit" and rest[-1]["result"]["exit_code"] == 3
    assert rest[0]["pos"] == 0 and all(a["next"] == b["pos"] for a, b in zip(rest, rest[1:]))
    # The same events for any other reader, from the start or a position.
    assert c.events(sid, first["exec"]) == (200, rest)
    assert c.events(sid, first["exec"], start=rest[1]["pos"]) == (200, rest[1:])

    # stdin and a signal while the stream is open.
    st, (resp, conn) = c.exec_stream(sid, {"argv": ["sh", "-c", "tr a-z A-Z; exec sleep 600"], "stdin": True})
    try:
        assert st == 201
        [first] = c.lines(resp, 1)
        x = first["exec"]
        st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x}/stdin?close=1", b"streamed\n",
                             headers={"Content-Type": "application/octet-stream"})
        assert st == 204, body
        [out] = c.lines(resp, 1)
        assert out["kind"] == "stdout" and base64.b64decode(out["data"]) == b"STREAMED\n"
        st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs/{x}/signal", {"signal": "KILL"})
        assert st == 204, body
        end = c.lines(resp)
        assert [l["kind"] for l in end] == ["exit"] and end[0]["result"]["signal"] == 9
    finally:
        conn.close()

    # "stream": false (and no "stream") keep the plain answer.
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs", {"argv": ["true"], "stream": False})
    assert st == 201 and body["exec"].isdigit()
    st, lines = c.events(sid, body["exec"])
    assert lines[-1]["kind"] == "exit" and lines[-1]["result"]["exit_code"] == 0
    # Refusals come before any stream: a JSON error, no exec.
    st, body = c.exec_stream(sid, {"argv": []})
    assert st == 400 and body["error"]["code"] == "bad_request"
    st, body, _ = c.post(f"/node/v1/sandboxes/{sid}/execs", {"argv": ["true"], "stream": "yes"})
    assert st == 400 and body["error"]["message"] == '"stream" must be a boolean'
    st, body = c.exec_stream("sb_nope1", {"argv": ["true"]})
    assert st == 404 and body["error"]["code"] == "not_found"


def test_create_validation(env, node):
    ca, store, gw = env
    c = node.client(gw)
    store.reserve("sb_v1", node.id)
    for fields, msg in [({"backend": "vm"}, "this node does not run that backend"),
                        ({"memory_mib": 1}, '"memory_mib" is outside this node\'s limits'),
                        ({"vcpus": 0}, '"vcpus" is outside this node\'s limits'),
                        ({"expires_at": "yesterday"}, '"expires_at" must be an RFC 3339 time'),
                        ({"expires_at": "2001-01-01T00:00:00Z"}, '"expires_at" is in the past'),
                        ({"id": "../x"}, '"id" must be 1-63 of A-Z a-z 0-9 _ -, starting with a letter')]:
        st, body, _ = c.create("sb_v1", **fields)
        assert st == 400 and body["error"] == {"code": "bad_request", "message": msg}, (fields, body)
    # A record of another node, or not "creating", is refused.
    store.reserve("sb_v2", "nd_0000000000000000")
    st, body, _ = c.create("sb_v2")
    assert st == 409 and body["error"] == {"code": "bad_state",
                                           "message": "the sandbox's record belongs to another node"}
    store.reserve("sb_v3", node.id, backend="vm")
    st, body, _ = c.create("sb_v3")
    assert st == 409 and body["error"]["message"] == "the sandbox's record is for another backend"
    store.execute("UPDATE sandboxes SET state = 'lost' WHERE id = 'sb_v3'")
    st, body, _ = c.create("sb_v3")
    assert st == 409 and body["error"]["message"] == 'the sandbox\'s record is not "creating"'
    assert store.sandbox_state("sb_v3") == "lost"
    st, body, _ = c.post("/node/v1/sandboxes", b"{not json", headers={"Content-Type": "application/json"})
    assert st == 400 and body["error"]["code"] == "bad_request"
    st, body, _ = c.post("/node/v1/sandboxes", b"{}", headers={"Content-Type": "text/plain"})
    assert st == 400
    resp = headers_only(c, "POST /node/v1/sandboxes", 1024 * 1024 + 1, "application/json")
    assert resp.startswith("HTTP/1.1 413") and '"code":"too_large"' in resp, resp
    resp = headers_only(c, "POST /node/v1/sandboxes/sb_v1/execs/1/stdin", 1024 * 1024 + 1)
    assert resp.startswith("HTTP/1.1 413") and '"code":"too_large"' in resp, resp
    assert store.sandbox_state("sb_v1") == "creating"


def test_capacity(env, node):
    ca, store, gw = env
    c = node.client(gw)
    new_sandbox(node, store, c, "sb_c1")
    new_sandbox(node, store, c, "sb_c2")
    store.reserve("sb_c3", node.id)
    st, body, _ = c.create("sb_c3")
    assert st == 503 and body["error"]["code"] == "capacity"
    assert store.sandbox_state("sb_c3") == "creating"  # the gateway gives it back, not the node
    denied = store.audit("node", "create")
    assert [(r[1], r[2], r[4]) for r in denied] == [("gateway:gw-1", "sb_c3", "denied")]
    assert store.node("node-1")["capacity"] == 2
    st, body, _ = c.request("DELETE", "/node/v1/sandboxes/sb_c1")
    assert st == 204
    st, body, _ = c.create("sb_c3")
    assert st == 201, body


def test_expiry_destroys_and_records(env, node):
    ca, store, gw = env
    c = node.client(gw)
    # Deadlines far enough that a loaded machine's boot cannot pass them (a
    # sandbox whose deadline passes while it boots is expired at once, and
    # its create answered 503): whole seconds, so ttl_s=3 could be 2.01 s.
    new_sandbox(node, store, c, "sb_e1", ttl_s=8)
    new_sandbox(node, store, c, "sb_e2", ttl_s=600)
    # PATCH moves a deadline closer.
    exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    st, body, _ = c.request("PATCH", "/node/v1/sandboxes/sb_e2", {"expires_at": exp})
    assert st == 200 and body["id"] == "sb_e2"
    assert wait_for(lambda: store.sandbox_state("sb_e1") == "destroyed" and
                    store.sandbox_state("sb_e2") == "destroyed", timeout=30)
    st, body, _ = c.get("/node/v1/sandboxes/sb_e1")
    assert st == 404
    assert sorted(r[2] for r in store.audit("node", "expire")) == ["sb_e1", "sb_e2"]


def test_declared_down_destroys_and_reregisters(env, node):
    ca, store, gw = env
    c = node.client(gw)
    new_sandbox(node, store, c, "sb_d1")
    x = run(c, "sb_d1", ["sleep", "600"])
    store.declare_down(node.id)
    assert store.sandbox_state("sb_d1") == "lost"
    # The next heartbeat finds the node down: it destroys what it runs and registers again.
    assert wait_for(lambda: len(store.audit("node", "register")) == 2, timeout=30)
    assert store.node("node-1")["state"] == "up"
    st, body, _ = c.get("/node/v1/sandboxes/sb_d1")
    assert st == 404
    st, lines = c.events("sb_d1", x)
    assert st == 404
    assert store.sandbox_state("sb_d1") == "lost"  # never brought back
    # Whoever declared it down audited the loss (here: nobody - the test
    # did); registering again finds nothing live left to mark.
    assert store.audit("sandbox", "lost") == []
    destroyed = store.audit("node", "destroy")
    assert [(r[2], r[4]) for r in destroyed] == [("sb_d1", "allowed")]
    assert "declared down" in destroyed[0][5]
    # It takes new work.
    new_sandbox(node, store, c, "sb_d2")


def test_sigkill_restart_marks_lost_and_reaps(env):
    ca, store, gw = env
    before = set(leftovers())
    n = Node(ca, "node-1", store, capacity=4).start()
    c = n.client(gw)
    new_sandbox(n, store, c, "sb_k1")
    new_sandbox(n, store, c, "sb_k3")
    x = run(c, "sb_k1", ["sleep", "600"])
    assert n.kill() == -signal.SIGKILL
    assert store.sandbox_state("sb_k1") == "running"
    # Back faster than nodes.down_after_s: no gateway expired it, so the
    # node itself marks its records lost - and audits each of them.
    n2 = Node(ca, "node-1", store, capacity=4)
    n2.start()
    try:
        assert store.sandbox_state("sb_k1") == "lost" and store.sandbox_state("sb_k3") == "lost"
        reg = store.audit("node", "register")
        assert len(reg) == 2 and "2 live record(s) of this node marked lost" in reg[1][5]
        lost = store.audit("sandbox", "lost")
        assert [(r[1], r[2], r[4]) for r in lost] == [("system", "sb_k1", "error"), ("system", "sb_k3", "error")]
        assert all("its node restarted" in r[5] for r in lost)
        c2 = n2.client(gw)
        st, body, _ = c2.get("/node/v1/sandboxes/sb_k1")
        assert st == 404
        # Leftovers of the killed process are reaped at start.
        assert settled_leftovers(before) == []
        new_sandbox(n2, store, c2, "sb_k2")
    finally:
        assert n2.stop() == 0
    assert store.sandbox_state("sb_k2") == "destroyed"
    assert store.node("node-1")["state"] == "stopped"


# ---- PostgreSQL: the store a fleet shares -----------------------------------------------


@pytest.mark.skipif(pg_bindir() is None, reason="PostgreSQL is not installed")
def test_node_on_postgresql(tmp_path):
    pg = PgServer()
    try:
        ca = CA(tmp_path)
        gw = ca.issue("gateway", "gw-1")
        store = PgStore(pg, tmp_path / "gw-state")
        # Without the gateways' audit key the node refuses to start.
        bare = Node(ca, "node-pg", store, state=tmp_path / "bare")
        os.makedirs(bare.state, mode=0o700)
        bare.start(wait=False)
        assert bare.proc.wait(timeout=60) == 1
        assert "no audit key at" in bare.log() and "docs/node.md" in bare.log(), bare.log()
        bare.stop()
        n = Node(ca, "node-pg", store, state=tmp_path / "node-state", capacity=3,
                 copy_secrets_from=store.state).start()
        try:
            assert n.id != open(os.path.join(store.state, "node.id")).read().strip()
            # Another node (another id) cannot take a live node's name.
            twin = Node(ca, "node-pg", store, state=tmp_path / "twin-state", copy_secrets_from=store.state)
            twin.start(wait=False)
            assert twin.proc.wait(timeout=60) == 1
            assert f"node name node-pg is held by node {n.id}, which is up" in twin.log(), twin.log()
            twin.stop()
            assert store.node("node-pg")["id"] == n.id
            row = store.node("node-pg")
            assert row["state"] == "up" and row["capacity"] == 3 and row["address"] == n.address
            c = n.client(gw)
            new_sandbox(n, store, c, "sb_pg1")
            assert store.sandbox_state("sb_pg1") == "running"
            x = run(c, "sb_pg1", ["sh", "-c", "echo on-pg"])
            st, lines = c.events("sb_pg1", x)
            assert output(lines) == b"on-pg\n"
            new_sandbox(n, store, c, "sb_pg2")
            # The store goes away and comes back: the node keeps serving, its heartbeat resumes.
            pg.stop()
            x = run(c, "sb_pg1", ["echo", "store down"])
            assert output(c.events("sb_pg1", x)[1]) == b"store down\n"
            pg.start()
            beat = store.node("node-pg")["heartbeat_unix"]
            assert wait_for(lambda: store.node("node-pg")["heartbeat_unix"] > beat, timeout=30)
            assert store.node("node-pg")["state"] == "up"
            store.declare_down(n.id)
            assert wait_for(lambda: len(store.audit("node", "register")) == 2, timeout=30)
            assert store.sandbox_state("sb_pg2") == "lost" and store.sandbox_state("sb_pg1") == "lost"
            st, body, _ = c.get("/node/v1/sandboxes")
            assert body == {"sandboxes": []}
            new_sandbox(n, store, c, "sb_pg3")
            st, _, _ = c.request("DELETE", "/node/v1/sandboxes/sb_pg3")
            assert st == 204 and store.sandbox_state("sb_pg3") == "destroyed"
        finally:
            assert n.stop() == 0
        assert store.node("node-pg")["state"] == "stopped"
        # The node's entries sit in the one chain, which verifies with the gateways' key.
        p = fbx("audit", "verify", "--state-dir", store.state, "--store", store.url)
        assert p.returncode == 0, p.stdout + p.stderr
        assert [r[3] for r in store.audit("node")] == ["register", "destroy", "destroy", "register", "stop"], \
            store.audit("node")
    finally:
        pg.close()


# ---- one VM --------------------------------------------------------------------------------


def test_vm_node_create_exec_delete(env):
    ca, store, gw = env
    n = Node(ca, "node-vm", store, backend="vm", capacity=1).start()
    try:
        row = store.node("node-vm")
        assert row["backend"] == "vm" and row["isolation"] in ("kvm", "tcg")
        c = n.client(gw)
        store.reserve("sb_vm1", n.id, backend="vm")
        st, body, _ = c.create("sb_vm1")
        assert st == 201, body
        assert body["isolation"] == row["isolation"]
        x = run(c, "sb_vm1", ["uname", "-s"])
        st, lines = c.events("sb_vm1", x)
        assert output(lines) == b"Linux\n" and lines[-1]["result"]["exit_code"] == 0
        st, _, _ = c.request("DELETE", "/node/v1/sandboxes/sb_vm1")
        assert st == 204 and store.sandbox_state("sb_vm1") == "destroyed"
    finally:
        assert n.stop() == 0


def test_delete_ends_a_running_exec_and_its_stream(env, node):
    ca, store, gw = env
    c = node.client(gw)
    new_sandbox(node, store, c, "sb_s1")
    x = run(c, "sb_s1", ["sh", "-c", "echo started; exec sleep 600"])
    conn = c.conn()
    conn.request("GET", f"/node/v1/sandboxes/sb_s1/execs/{x}/events")
    r = conn.getresponse()
    assert json.loads(r.readline())["kind"] == "stdout"
    st, _, _ = c.request("DELETE", "/node/v1/sandboxes/sb_s1")
    assert st == 204
    rest = [json.loads(l) for l in r.read().splitlines()]
    conn.close()
    assert rest[-1]["kind"] == "error" and rest[-1]["code"] == "killed", rest
    assert store.sandbox_state("sb_s1") == "destroyed"
    st, body, _ = c.get("/node/v1/healthz")
    assert body["node"]["live"] == 0


def test_warm_pool(env):
    ca, store, gw = env
    n = Node(ca, "node-pool", store, capacity=2, settings=["pool.jail.size=1"]).start()
    try:
        c = n.client(gw)
        # The default shape (no sizes given) is the pool's.
        store.reserve("sb_p1", n.id)
        st, body, _ = c.create("sb_p1", memory_mib=None, vcpus=None)
        assert st == 201, body
        x = run(c, "sb_p1", ["echo", "warm"])
        assert output(c.events("sb_p1", x)[1]) == b"warm\n"
        new_sandbox(n, store, c, "sb_p2")  # another shape boots cold
    finally:
        assert n.stop() == 0  # destroys both and the pool's replacement
    assert store.sandbox_state("sb_p1") == "destroyed" and store.sandbox_state("sb_p2") == "destroyed"
