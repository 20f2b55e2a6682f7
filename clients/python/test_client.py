"""Tests of forgebox_client against a small in-process fake of the gateway.

The fake speaks the formats of docs/openapi.yaml (JSON bodies, the error
envelope, X-Request-Id, raw file bytes, Server-Sent Events over chunked
transfer encoding) and records what it was sent, so these tests check the
client - what goes on the wire and how answers are read - not the gateway.

    /usr/bin/python3 -m pytest clients/python/test_client.py
"""

import http.server
import json
import os
import sys
import threading
import urllib.parse

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from forgebox_client import ApiError, Client  # noqa: E402

KEY = "fbk_test_5ecret_value_0123456789"


class Fake:
    """Shared state of the fake gateway."""

    def __init__(self):
        self.requests = []          # (method, path, headers, body) as received
        self.sandboxes = {}
        self.files = {}
        self.keys = []
        self.users = []
        self.teams = []
        self.counter = 0
        self.stream_plan = None     # list of bytes chunks, or callables, for SSE
        self.execs = {}             # exec id -> its status
        self.rate_limited = False
        self.task_events = []       # event objects {seq, type, at, data} of task tk-1
        self.cut_after = None       # the first events stream breaks after this seq
        self.task_state = None      # what GET /v1/tasks/tk-1 says (None: succeeded after 3 requests)
        self.lock = threading.Lock()

    def next_id(self, prefix):
        with self.lock:
            self.counter += 1
            return "%s%d" % (prefix, self.counter)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake = None  # set per server

    def log_message(self, *args):
        pass

    # ---- helpers ----
    def _rid(self):
        return "req-%d" % (len(self.fake.requests) - 1)

    def _send(self, status, body=b"", ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("X-Request-Id", self._rid())
        if status != 204:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    def _json(self, status, obj, extra=None):
        self._send(status, json.dumps(obj).encode(), extra=extra)

    def _error(self, status, code, message, extra=None):
        self._json(status, {"error": {"code": code, "message": message}}, extra)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self, method):
        u = urllib.parse.urlsplit(self.path)
        path, query = u.path, urllib.parse.parse_qs(u.query, keep_blank_values=True)
        body = self._body()
        self.fake.requests.append((method, self.path, dict(self.headers), body))
        prefix = "/api" if path.startswith("/api/") else ""
        path = path[len(prefix):]

        if path == "/healthz" and method == "GET":
            return self._json(200, {"status": "ok"})
        if path == "/proxy-error":
            return self._send(502, b"<html>Bad Gateway</html>", ctype="text/html")

        if self.headers.get("Authorization") != "Bearer " + KEY:
            return self._error(401, "unauthorized", "missing or invalid API key")
        if self.fake.rate_limited:
            return self._error(429, "rate_limited", "too many requests for this key", {"Retry-After": "3"})

        parts = path.split("/")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        data = None
        if body and ctype == "application/json":
            try:
                data = json.loads(body)
            except ValueError:
                return self._error(400, "bad_request", "malformed JSON")
        elif body and method == "POST":
            return self._error(415, "unsupported_media_type", "send application/json")

        if path == "/metrics" and method == "GET":
            return self._send(200, b"# TYPE forgebox_up gauge\nforgebox_up 1\n",
                              ctype="text/plain; version=0.0.4")
        if path == "/v1/sandboxes":
            if method == "POST":
                data = data or {}
                unknown = set(data) - {"backend", "memory_mib", "vcpus", "disk_mib", "ttl_s"}
                if unknown:
                    return self._error(400, "bad_request", "unknown field \"%s\"" % sorted(unknown)[0])
                sid = self.fake.next_id("sb-")
                sb = {"id": sid, "team_id": "t1", "backend": data.get("backend", "vm"), "state": "running",
                      "memory_mib": data.get("memory_mib", 512), "vcpus": data.get("vcpus", 1),
                      "disk_mib": data.get("disk_mib", 256), "created_at": "2025-01-01T00:00:00Z",
                      "expires_at": "2025-01-01T00:10:00Z"}
                self.fake.sandboxes[sid] = sb
                return self._json(201, sb)
            return self._json(200, {"sandboxes": list(self.fake.sandboxes.values())})
        if len(parts) >= 4 and parts[1] == "v1" and parts[2] == "sandboxes":
            sid = urllib.parse.unquote(parts[3])
            sb = self.fake.sandboxes.get(sid)
            if sb is None:
                return self._error(404, "not_found", "no such resource")
            rest = parts[4] if len(parts) > 4 else None
            if rest is None and method == "GET":
                return self._json(200, sb)
            if rest is None and method == "DELETE":
                del self.fake.sandboxes[sid]
                return self._send(204)
            if rest == "exec" and method == "POST":
                if "text/event-stream" in (self.headers.get("Accept") or ""):
                    return self._stream()
                return self._json(200, {"exit_code": 0, "signal": None, "stdout": json.dumps(data),
                                        "stderr": "", "duration_ms": 5, "truncated": False,
                                        "timed_out": False, "oom": False})
            if rest == "execs" and len(parts) >= 6:
                xid = urllib.parse.unquote(parts[5])
                if xid not in self.fake.execs:
                    return self._error(404, "not_found", "no such exec")
                if len(parts) == 7 and parts[6] == "events" and method == "GET":
                    if self.fake.stream_plan is None:
                        return self._send(204)
                    return self._stream()
                if len(parts) == 6 and method == "GET":
                    return self._json(200, self.fake.execs[xid])
                if len(parts) == 6 and method == "DELETE":
                    self.fake.execs[xid]["state"] = "exited"
                    return self._send(204)
            if rest == "files":
                fpath = query.get("path", [None])[0]
                if not fpath:
                    return self._error(400, "bad_request", "the \"path\" query parameter is required")
                if method == "PUT":
                    if ctype != "application/octet-stream":
                        return self._error(415, "unsupported_media_type", "send application/octet-stream")
                    self.fake.files[(sid, fpath)] = body
                    return self._json(201, {"path": fpath, "size": len(body)})
                if (sid, fpath) not in self.fake.files:
                    return self._error(404, "not_found", "no such file")
                return self._send(200, self.fake.files[(sid, fpath)], ctype="application/octet-stream")
        if path == "/v1/keys":
            if method == "POST":
                k = {"id": self.fake.next_id("k-"), "name": data["name"], "scopes": data["scopes"],
                     "created_at": "2025-01-01T00:00:00Z", "expires_at": data.get("expires_at")}
                self.fake.keys.append(dict(k, revoked_at=None, last_used_at=None))
                return self._json(201, dict(k, key="fbk_new_secret"))
            return self._json(200, {"keys": self.fake.keys})
        if path.startswith("/v1/keys/") and method == "DELETE":
            kid = urllib.parse.unquote(parts[3])
            for k in self.fake.keys:
                if k["id"] == kid:
                    k["revoked_at"] = "2025-01-02T00:00:00Z"
                    return self._send(204)
            return self._error(404, "not_found", "no such resource")
        if path == "/v1/users":
            if method == "POST":
                if any(u["username"] == data["username"] for u in self.fake.users):
                    return self._error(409, "conflict", "username taken")
                u = {"id": self.fake.next_id("u-"), "username": data["username"], "team_id": data["team_id"],
                     "role": data["role"], "created_at": "2025-01-01T00:00:00Z"}
                self.fake.users.append(u)
                return self._json(201, u)
            return self._json(200, {"users": self.fake.users})
        if path == "/v1/teams":
            if method == "POST":
                t = {"id": self.fake.next_id("t-"), "name": data["name"], "created_at": "2025-01-01T00:00:00Z"}
                self.fake.teams.append(t)
                return self._json(201, t)
            return self._json(200, {"teams": self.fake.teams})
        if path == "/v1/audit":
            entry = {"seq": 1, "ts": "2025-01-01T00:00:00.000000001Z", "event": "auth", "actor": "key:k1",
                     "resource": "/v1/audit", "action": "authenticate", "outcome": "allowed",
                     "reason": "api key", "source_ip": "127.0.0.1", "request_id": "req-0",
                     "prev_hash": "00", "hash": "ab", "query": {k: v[0] for k, v in query.items()}}
            return self._json(200, {"entries": [entry]})
        if path == "/v1/tasks" and method == "POST":
            return self._json(201, dict(data, id="tk-1", state="queued"))
        if path == "/v1/tasks" and method == "GET":
            return self._json(200, {"tasks": [{"id": "tk-1", "state": "running"}]})
        if path.startswith("/v1/tasks/"):
            tid = urllib.parse.unquote(parts[3])
            if tid != "tk-1":
                return self._error(404, "not_found", "no such task")
            rest = "/".join(parts[4:])
            if rest == "" and method == "GET":
                state = self.fake.task_state or ("succeeded" if len(self.fake.requests) > 3 else "running")
                return self._json(200, {"id": tid, "state": state})
            if rest == "events" and method == "GET":
                return self._task_stream(int(self.headers.get("Last-Event-ID") or 0))
            if rest == "approvals" and method == "GET":
                return self._json(200, {"approvals": [{"id": "ap-1", "state": "pending"}]})
            if rest.startswith("approvals/") and method == "POST":
                state = {"approve": "approved", "deny": "denied"}[data["decision"]]
                return self._json(200, {"id": urllib.parse.unquote(parts[5]), "state": state})
            if rest == "cancel" and method == "POST":
                return self._json(200, {"id": tid, "state": "cancelled"})
            if rest == "messages" and method == "POST":
                return self._json(200, {"id": tid, "state": "running"})
        if path == "/v1/audit/verify":
            return self._json(200, {"intact": True, "entries": 3, "first_bad_seq": None,
                                    "message": "audit chain intact"})
        return self._error(404, "not_found", "no such route")

    def _stream(self):
        """Sends the planned SSE stream with chunked transfer encoding; a
        callable in the plan runs between chunks (to wait on the test)."""
        self.send_response(200)
        self.send_header("X-Request-Id", self._rid())
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for step in self.fake.stream_plan:
            if callable(step):
                step()
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _task_stream(self, after):
        """The task's events after `after`; the first stream breaks (no
        final chunk) after fake.cut_after."""
        self.send_response(200)
        self.send_header("X-Request-Id", self._rid())
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        for ev in self.fake.task_events:
            if ev["seq"] <= after:
                continue
            frame = ("id: %d\nevent: %s\ndata: %s\n\n" % (ev["seq"], ev["type"], json.dumps(ev))).encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
            if self.fake.cut_after == ev["seq"]:
                self.fake.cut_after = None
                return                          # the connection drops mid-stream
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")


@pytest.fixture
def server():
    fake = Fake()
    handler = type("H", (Handler,), {"fake": fake})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    fake.url = "http://127.0.0.1:%d" % srv.server_address[1]
    yield fake
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    return Client(server.url, api_key=KEY, timeout=10)


def last(server):
    method, path, headers, body = server.requests[-1]
    return method, path, headers, body


# ---- basics -------------------------------------------------------------------


def test_healthz_and_metrics(server, client):
    assert client.healthz() == {"status": "ok"}
    assert "forgebox_up 1" in client.metrics()
    _, path, headers, _ = last(server)
    assert path == "/metrics"
    assert headers["Authorization"] == "Bearer " + KEY


def test_no_key_sends_no_authorization(server):
    c = Client(server.url)
    assert c.healthz() == {"status": "ok"}
    assert "Authorization" not in last(server)[2]
    with pytest.raises(ApiError) as e:
        c.list_sandboxes()
    assert (e.value.status, e.value.code, e.value.message) == (401, "unauthorized", "missing or invalid API key")
    assert e.value.request_id == "req-1"


def test_base_url_with_path_prefix(server):
    c = Client(server.url + "/api/", api_key=KEY)
    assert c.healthz() == {"status": "ok"}
    assert last(server)[1] == "/api/healthz"


def test_bad_construction():
    with pytest.raises(ValueError):
        Client("ftp://x")
    with pytest.raises(ValueError) as e:
        Client("http://x", api_key="abc\r\nX-Evil: 1")
    assert "abc" not in str(e.value)
    Client("http://x", api_key="not a key")  # odd but harmless: the server will say 401
    with pytest.raises(ValueError):
        Client("http://user:pw@x")


# ---- the API key never leaks --------------------------------------------------


def test_key_not_in_repr_attributes_or_errors(server, client):
    assert KEY not in repr(client)
    assert KEY not in str(vars(client))
    assert "<redacted>" in repr(client)
    bad = Client(server.url, api_key="fbk_wrong_key_material")
    with pytest.raises(ApiError) as e:
        bad.get_sandbox("x")
    for text in (str(e.value), repr(e.value), str(e.value.args)):
        assert "fbk_wrong_key_material" not in text
    assert str(e.value) == "401 unauthorized: missing or invalid API key (request req-0)"


# ---- sandboxes ----------------------------------------------------------------


def test_sandbox_lifecycle(server, client):
    sb = client.create_sandbox(memory_mib=1024, ttl_s=None)
    _, path, headers, body = last(server)
    assert path == "/v1/sandboxes"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"memory_mib": 1024}   # None means "server default": not sent
    assert sb["memory_mib"] == 1024 and sb["state"] == "running"
    assert client.get_sandbox(sb["id"]) == sb
    assert client.list_sandboxes() == {"sandboxes": [sb]}
    assert client.delete_sandbox(sb["id"]) is None
    assert last(server)[0] == "DELETE"
    with pytest.raises(ApiError) as e:
        client.get_sandbox(sb["id"])
    assert (e.value.status, e.value.code) == (404, "not_found")


def test_create_sandbox_error_body(server, client):
    with pytest.raises(ApiError) as e:
        client.create_sandbox(memroy_mib=1)
    assert (e.value.status, e.value.code, e.value.message) == (400, "bad_request", 'unknown field "memroy_mib"')


def test_ids_are_escaped(server, client):
    with pytest.raises(ApiError) as e:
        client.get_sandbox("../keys")
    assert e.value.status == 404
    assert last(server)[1] == "/v1/sandboxes/..%2Fkeys"


def test_exec_json(server, client):
    sb = client.create_sandbox()
    r = client.exec(sb["id"], ["python3", "-c", "print(1)"], stdin="in\n", env={"A": "b"}, timeout_s=5)
    assert r["exit_code"] == 0 and r["signal"] is None and r["timed_out"] is False
    _, path, headers, body = last(server)
    assert path == "/v1/sandboxes/%s/exec" % sb["id"]
    assert json.loads(body) == {"cmd": ["python3", "-c", "print(1)"], "stdin": "in\n", "env": {"A": "b"},
                                "timeout_s": 5}
    assert json.loads(r["stdout"]) == json.loads(body)
    client.exec(sb["id"], ["true"])
    assert json.loads(last(server)[3]) == {"cmd": ["true"]}


def test_exec_refuses_shell_strings(client):
    with pytest.raises(TypeError):
        client.exec("sb", "rm -rf /")
    with pytest.raises(TypeError):
        list(client.exec_stream("sb", ["ok", 3]))


def sse(event, obj):
    return ("event: %s\ndata: %s\n\n" % (event, json.dumps(obj))).encode()


def test_exec_stream_is_incremental(server, client):
    sb = client.create_sandbox()
    got_first = threading.Event()
    waited = []
    exit_obj = {"exit_code": 3, "signal": None, "duration_ms": 9, "truncated": False, "timed_out": False,
                "oom": False}
    first = sse("stdout", {"data": "hello\n"})
    server.stream_plan = [
        first[:10], first[10:],                       # a chunk boundary inside a line
        lambda: waited.append(got_first.wait(5)),     # nothing more until the client saw event 1
        b": keep-alive comment\n\n",
        b"event: stderr\r\ndata: {\"data\": \"oops \xc3\xa9\\n\"}\r\n\r\n",  # CRLF lines, UTF-8
        b"event: progress\ndata: line one\ndata: line two\n\n",            # multi-line, not JSON
        sse("exit", exit_obj),
        sse("stdout", {"data": "after exit: never seen"}),
    ]
    events = []
    for event, data in client.exec_stream(sb["id"], ["sh", "-c", "echo hello"]):
        events.append((event, data))
        if len(events) == 1:
            got_first.set()
    assert waited == [True]  # the first event reached the caller before the rest was sent
    assert events == [("stdout", {"data": "hello\n"}), ("stderr", {"data": "oops \u00e9\n"}),
                      ("progress", "line one\nline two"), ("exit", exit_obj)]
    _, _, headers, body = last(server)
    assert headers["Accept"] == "text/event-stream"
    assert json.loads(body) == {"cmd": ["sh", "-c", "echo hello"]}


def test_exec_stream_errors(server, client):
    with pytest.raises(ApiError) as e:
        list(client.exec_stream("nope", ["true"]))
    assert (e.value.status, e.value.code, e.value.request_id) == (404, "not_found", "req-0")

    sb = client.create_sandbox()
    server.stream_plan = [sse("stdout", {"data": "x"})]  # no exit event
    gen = client.exec_stream(sb["id"], ["true"])
    assert next(gen) == ("stdout", {"data": "x"})
    with pytest.raises(ApiError) as e:
        next(gen)
    assert e.value.code == "stream_ended"


def test_exec_stream_early_close(server, client):
    sb = client.create_sandbox()
    server.stream_plan = [sse("stdout", {"data": "1"}), sse("stdout", {"data": "2"}),
                          sse("exit", {"exit_code": 0})]
    gen = client.exec_stream(sb["id"], ["true"])
    assert next(gen) == ("stdout", {"data": "1"})
    gen.close()  # closes the connection; must not hang or raise


def sse_id(event, obj, id):
    return ("id: %s\nevent: %s\ndata: %s\n\n" % (id, event, json.dumps(obj))).encode()


def test_exec_stream_names_the_exec_and_gives_event_ids(server, client):
    sb = client.create_sandbox()
    exit_obj = {"exit_code": 0, "signal": None, "duration_ms": 1, "truncated": False, "timed_out": False,
                "oom": False}
    server.stream_plan = [sse_id("exec", {"exec_id": "x_1", "sandbox_id": sb["id"]}, "0"),
                          sse_id("stdout", {"data": "a"}, "1"),
                          sse("stderr", {"data": "b"}),          # no id: the last one holds (SSE rules)
                          sse_id("stdout", {"data": "\u00e9"}, "5:2"),
                          sse_id("exit", exit_obj, "6")]
    stream = client.exec_stream(sb["id"], ["true"])
    assert (stream.exec_id, stream.sandbox_id, stream.last_id) == ("x_1", sb["id"], "0")
    events = list(stream)
    assert events == [("stdout", {"data": "a"}), ("stderr", {"data": "b"}), ("stdout", {"data": "\u00e9"}),
                      ("exit", exit_obj)]                       # the exec event is not among them
    assert [e.id for e in events] == ["1", "1", "5:2", "6"]
    assert events[0].event == "stdout" and events[0].data == {"data": "a"}
    assert stream.last_id == "6"


def test_resume_exec_sends_the_position(server, client):
    sb = client.create_sandbox()
    server.execs["x_1"] = {"id": "x_1", "sandbox_id": sb["id"], "state": "running",
                           "started_at": "2025-01-01T00:00:00Z"}
    server.stream_plan = [sse_id("exec", {"exec_id": "x_1", "sandbox_id": sb["id"]}, "5:2"),
                          sse_id("stdout", {"data": "rest"}, "9"), sse_id("exit", {"exit_code": 0}, "10")]
    stream = client.resume_exec(sb["id"], "x_1", after="5:2")
    assert stream.exec_id == "x_1" and stream.last_id == "5:2"
    assert [tuple(e) for e in stream] == [("stdout", {"data": "rest"}), ("exit", {"exit_code": 0})]
    method, path, headers, _ = last(server)
    assert (method, path) == ("GET", "/v1/sandboxes/%s/execs/x_1/events?after=5%%3A2" % sb["id"])
    assert headers["Accept"] == "text/event-stream"
    client.resume_exec(sb["id"], "x_1")
    assert last(server)[1] == "/v1/sandboxes/%s/execs/x_1/events" % sb["id"]
    server.stream_plan = None                                  # nothing after that event: 204
    assert list(client.resume_exec(sb["id"], "x_1", after=10)) == []
    with pytest.raises(ApiError) as e:
        client.resume_exec(sb["id"], "x_404")
    assert (e.value.status, e.value.code) == (404, "not_found")


def test_exec_status_and_cancel(server, client):
    sb = client.create_sandbox()
    server.execs["x_1"] = {"id": "x_1", "sandbox_id": sb["id"], "state": "running",
                           "started_at": "2025-01-01T00:00:00Z"}
    assert client.exec_status(sb["id"], "x_1")["state"] == "running"
    assert last(server)[:2] == ("GET", "/v1/sandboxes/%s/execs/x_1" % sb["id"])
    assert client.cancel_exec(sb["id"], "x_1") is None
    assert last(server)[:2] == ("DELETE", "/v1/sandboxes/%s/execs/x_1" % sb["id"])
    assert client.exec_status(sb["id"], "x_1")["state"] == "exited"
    with pytest.raises(ApiError) as e:
        client.cancel_exec(sb["id"], "../x_1")
    assert e.value.status == 404
    assert last(server)[1] == "/v1/sandboxes/%s/execs/..%%2Fx_1" % sb["id"]


# ---- files ---------------------------------------------------------------------


def test_files_roundtrip_binary(server, client):
    sb = client.create_sandbox()
    data = bytes(range(256)) * 3
    path = "/workspace/a b&c=d?.bin"
    assert client.put_file(sb["id"], path, data) == {"path": path, "size": len(data)}
    method, wire_path, headers, body = last(server)
    assert method == "PUT" and body == data
    assert headers["Content-Type"] == "application/octet-stream"
    assert wire_path == "/v1/sandboxes/%s/files?path=%%2Fworkspace%%2Fa+b%%26c%%3Dd%%3F.bin" % sb["id"]
    assert client.get_file(sb["id"], path) == data
    with pytest.raises(ApiError) as e:
        client.get_file(sb["id"], "/workspace/missing")
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(TypeError):
        client.put_file(sb["id"], path, "text is not bytes")


# ---- identity and audit ---------------------------------------------------------


def test_keys(server, client):
    k = client.create_key("ci", ["sandboxes:read"], expires_at="2030-01-01T00:00:00Z")
    assert json.loads(last(server)[3]) == {"name": "ci", "scopes": ["sandboxes:read"],
                                           "expires_at": "2030-01-01T00:00:00Z"}
    assert last(server)[2]["Content-Type"] == "application/json"
    assert k["key"] == "fbk_new_secret"
    client.create_key("plain", [], user_id="u-9")
    assert json.loads(last(server)[3]) == {"name": "plain", "scopes": [], "user_id": "u-9"}
    keys = client.list_keys()["keys"]
    assert [x["name"] for x in keys] == ["ci", "plain"]
    assert all("key" not in x for x in keys)
    assert client.delete_key(k["id"]) is None
    assert client.list_keys()["keys"][0]["revoked_at"] is not None
    with pytest.raises(ApiError) as e:
        client.delete_key("k-none")
    assert e.value.status == 404


def test_users_and_teams(server, client):
    t = client.create_team("red")
    assert client.list_teams() == {"teams": [t]}
    u = client.create_user("ann", "pw-123456", t["id"], "developer")
    assert json.loads(last(server)[3]) == {"username": "ann", "password": "pw-123456", "team_id": t["id"],
                                           "role": "developer"}
    assert "password" not in u
    assert client.list_users() == {"users": [u]}
    with pytest.raises(ApiError) as e:
        client.create_user("ann", "x", t["id"], "viewer")
    assert (e.value.status, e.value.code, e.value.message) == (409, "conflict", "username taken")


def test_audit(server, client):
    entries = client.audit(actor="key:k 1", outcome="denied", limit=5, since=None)["entries"]
    assert last(server)[1] == "/v1/audit?actor=key%3Ak+1&outcome=denied&limit=5"
    assert entries[0]["query"] == {"actor": "key:k 1", "outcome": "denied", "limit": "5"}
    client.audit()
    assert last(server)[1] == "/v1/audit"
    assert client.audit_verify() == {"intact": True, "entries": 3, "first_bad_seq": None,
                                     "message": "audit chain intact"}


# ---- errors and raw access --------------------------------------------------------


def test_rate_limited_has_retry_after(server, client):
    server.rate_limited = True
    with pytest.raises(ApiError) as e:
        client.list_teams()
    assert (e.value.status, e.value.code, e.value.retry_after) == (429, "rate_limited", 3)


def test_non_json_error_body(server, client):
    with pytest.raises(ApiError) as e:
        client._call("GET", "/proxy-error")
    assert (e.value.status, e.value.code) == (502, "http_502")
    assert e.value.message == "HTTP 502: <html>Bad Gateway</html>"


def test_raw_request(server, client):
    status, headers, body = client.request("GET", "/healthz", raw=True)
    assert (status, body) == (200, b'{"status": "ok"}')
    assert headers.get("x-request-id") == "req-0"

    r = client.request("POST", "/v1/sandboxes", body="{not json")
    assert r.status == 400 and r.body == {"error": {"code": "bad_request", "message": "malformed JSON"}}

    # bytes go as they are, as JSON unless told otherwise
    r = client.request("POST", "/v1/sandboxes", body=b'{"vcpus": 2}')
    assert r.status == 201 and r.body["vcpus"] == 2
    assert last(server)[2]["Content-Type"] == "application/json"

    r = client.request("POST", "/v1/sandboxes", body=b"x=1", headers={"Content-Type": "text/plain"})
    assert r.status == 415 and r.body["error"]["code"] == "unsupported_media_type"
    assert last(server)[2]["Content-Type"] == "text/plain"

    r = client.request("GET", "/v1/teams", headers={"Authorization": None})
    assert r.status == 401
    assert "Authorization" not in last(server)[2]

    r = client.request("GET", "/metrics")
    assert r.status == 200 and r.body.startswith(b"# TYPE")


# ---- tasks ----------------------------------------------------------------------


def ev(seq, type_, **data):
    return {"seq": seq, "type": type_, "at": "2026-12-02T00:00:00Z", "data": data}


def test_create_task_sends_only_what_is_given(server, client):
    t = client.create_task("fix it", provider="local", model="m", tools=("bash", "file_read"),
                           approvals=["bash"], network=["pypi.org"], limits={"max_turns": 3})
    _, path, headers, body = last(server)
    assert path == "/v1/tasks" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"prompt": "fix it", "provider": "local", "model": "m",
                                "tools": ["bash", "file_read"], "approvals": ["bash"],
                                "network": {"allow": ["pypi.org"]}, "limits": {"max_turns": 3}}
    assert t["id"] == "tk-1" and t["state"] == "queued"
    client.create_task("p", provider="x", model="y", network={"allow": []}, system="be brief", backend="jail")
    assert json.loads(last(server)[3]) == {"prompt": "p", "provider": "x", "model": "y", "system": "be brief",
                                           "backend": "jail", "network": {"allow": []}}


def test_task_routes(server, client):
    assert client.list_tasks() == {"tasks": [{"id": "tk-1", "state": "running"}]}
    assert client.task_approvals("tk-1")["approvals"][0]["id"] == "ap-1"
    assert client.decide_approval("tk-1", "ap/1", "approve", reason="ok")["state"] == "approved"
    method, path, _, body = last(server)
    assert (method, path) == ("POST", "/v1/tasks/tk-1/approvals/ap%2F1")
    assert json.loads(body) == {"decision": "approve", "reason": "ok"}
    assert client.deny("tk-1", "ap-1")["state"] == "denied"
    assert json.loads(last(server)[3]) == {"decision": "deny"}
    with pytest.raises(ValueError):
        client.decide_approval("tk-1", "ap-1", "maybe")
    assert client.cancel_task("tk-1")["state"] == "cancelled"
    assert last(server)[:2] == ("POST", "/v1/tasks/tk-1/cancel")
    assert client.send_task_message("tk-1", "more")["state"] == "running"
    assert json.loads(last(server)[3]) == {"content": "more"}
    with pytest.raises(ApiError) as e:
        client.get_task("../keys")
    assert e.value.status == 404 and last(server)[1] == "/v1/tasks/..%2Fkeys"


def test_wait_task_polls_until_final(server, client):
    t = client.wait_task("tk-1", timeout=10, poll=0.01)
    assert t["state"] == "succeeded"
    with pytest.raises(TimeoutError):
        Client(server.url, api_key=KEY).wait_task("tk-1", timeout=0, states={"nope"})


def test_task_events_resume_after_a_broken_connection(server, client):
    server.task_events = [ev(1, "state", state="running"), ev(2, "text", delta="hi"),
                          ev(3, "tool_call", call_id="c", tool="bash", input={}),
                          ev(4, "state", state="succeeded", result="hi")]
    server.cut_after = 2
    s = client.task_events("tk-1")
    got = list(s)
    assert [e.data["seq"] for e in got] == [1, 2, 3, 4]
    assert [e.event for e in got] == ["state", "text", "tool_call", "state"]
    assert got[2].id == "3" and s.last_id == "4"
    gets = [r for r in server.requests if r[1] == "/v1/tasks/tk-1/events"]
    assert len(gets) == 2
    assert "Last-Event-ID" not in gets[0][2] and gets[1][2]["Last-Event-ID"] == "2"


def test_task_events_from_a_position_and_errors(server, client):
    server.task_events = [ev(1, "state", state="running"), ev(2, "state", state="failed", error="x")]
    assert [e.data["seq"] for e in client.task_events("tk-1", after=1)] == [2]
    assert last(server)[2]["Last-Event-ID"] == "1"
    with pytest.raises(ApiError) as e:
        client.task_events("tk-2")
    assert e.value.status == 404 and e.value.code == "not_found"


def test_task_events_after_the_last_event_of_an_ended_task(server, client):
    server.task_events = [ev(1, "state", state="running"), ev(2, "state", state="succeeded")]
    for _ in range(4):
        server.requests.append(("pad", "", {}, b""))   # the fake's task is succeeded after 3 requests
    assert list(client.task_events("tk-1", after=2)) == []
    assert [r[1] for r in server.requests[-2:]] == ["/v1/tasks/tk-1/events", "/v1/tasks/tk-1"]


def test_task_events_give_up_when_the_gateway_keeps_ending_early(server, client):
    server.task_events = [ev(1, "state", state="running")]
    server.task_state = "running"
    got = []
    with pytest.raises(ApiError) as e:
        for x in client.task_events("tk-1", reconnect=2):
            got.append(x)
    assert e.value.code == "stream_ended" and "last event 1" in e.value.message
    assert [x.data["seq"] for x in got] == [1]
    assert len([r for r in server.requests if r[1] == "/v1/tasks/tk-1/events"]) == 3
