"""forgebox_client - a Python client for the ForgeBox gateway API.

Standard library only (http.client), so it runs anywhere Python 3 does.  The
API it speaks is docs/openapi.yaml; every method here is one route there.

    from forgebox_client import Client, ApiError

    fb = Client("http://127.0.0.1:8420", api_key="fbk_...")
    sb = fb.create_sandbox(memory_mib=512)
    try:
        r = fb.exec(sb["id"], ["python3", "-c", "print(6*7)"])
        print(r["stdout"])
        for event, data in fb.exec_stream(sb["id"], ["sh", "-c", "echo hi; echo oops >&2"]):
            print(event, data)
        # A stream can be left and resumed: each event has an id.
        stream = fb.exec_stream(sb["id"], ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 1; done"])
        first = next(stream)
        stream.close()
        for ev in fb.resume_exec(sb["id"], stream.exec_id, after=first.id):
            print(ev.event, ev.data, ev.id)
    finally:
        fb.delete_sandbox(sb["id"])

    # A task: a model working through tools in a sandbox of its own.
    t = fb.create_task("List the files", provider="local", model="qwen2.5-coder",
                       tools=["bash", "file_read"], approvals=["bash"],
                       limits={"max_turns": 10})
    for ev in fb.task_events(t["id"]):          # replay, then live, until it ends
        if ev.event == "approval_required":
            fb.decide_approval(t["id"], ev.data["data"]["approval_id"], "approve")
    print(fb.wait_task(t["id"])["result"])

Any answer with a status of 400 or more raises ApiError(status, code,
message, request_id).  The API key is sent in the Authorization header and
appears nowhere else: not in exceptions, reprs or the object's attributes.
"""

import http.client
import json
import ssl
import time
import urllib.parse

__all__ = ["Client", "ApiError", "Response", "Event", "ExecStream", "TaskEventStream", "TASK_FINAL_STATES"]

# Longest SSE line accepted; a stream line longer than this is an error,
# not unbounded memory.
MAX_SSE_LINE = 16 * 1024 * 1024

# The states in which a task has ended (docs/tasks.md).  A succeeded task
# may still take a follow-up message, which runs it again.
TASK_FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "budget_exceeded"})


class ApiError(Exception):
    """An error answer from the gateway ({"error": {"code", "message"}}),
    or a broken stream.  status is the HTTP status (200 for a stream that
    broke after it started), code the stable error code, request_id the
    X-Request-Id to quote in a report, retry_after the Retry-After seconds
    of a 429 (else None)."""

    def __init__(self, status, code, message, request_id=None, retry_after=None):
        super().__init__(status, code, message, request_id)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self):
        s = "%s %s: %s" % (self.status, self.code, self.message)
        if self.request_id:
            s += " (request %s)" % self.request_id
        return s

    def __repr__(self):
        return "ApiError(%r, %r, %r, request_id=%r)" % (
            self.status, self.code, self.message, self.request_id)


class Response(tuple):
    """What Client.request returns: (status, headers, body).  headers is an
    http.client.HTTPMessage (case-insensitive .get)."""

    __slots__ = ()

    def __new__(cls, status, headers, body):
        return tuple.__new__(cls, (status, headers, body))

    status = property(lambda self: self[0])
    headers = property(lambda self: self[1])
    body = property(lambda self: self[2])


class _Secret:
    """Holds the API key so that no repr, vars() or traceback shows it."""

    __slots__ = ("_value",)

    def __init__(self, value):
        self._value = value

    def reveal(self):
        return self._value

    def __repr__(self):
        return "<redacted>"

    __str__ = __repr__


def _quote(segment):
    """One path segment, with every reserved character escaped, so an id
    like "../keys" cannot walk to another route."""
    return urllib.parse.quote(str(segment), safe="")


def _is_json(headers):
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


class Client:
    """A connection-per-request client for one gateway.

    base_url  "http://host:port" or "https://host:port", optionally with a
              path prefix ("https://example.org/forgebox").
    api_key   sent as "Authorization: Bearer <api_key>"; None sends none.
    timeout   seconds for connecting and for each read.
    context   an ssl.SSLContext for https (default: system trust store).
    """

    def __init__(self, base_url, api_key=None, timeout=60, context=None):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("base_url must look like http://host:port, got %r" % (base_url,))
        if u.username or u.password:
            raise ValueError("base_url must not carry credentials; pass api_key")
        if api_key is not None:
            if not isinstance(api_key, str) or any(c in api_key for c in "\r\n\0"):
                # Say what is wrong without echoing the key.
                raise ValueError("api_key must be a string without line breaks or NUL bytes")
        self.base_url = urllib.parse.urlunsplit((u.scheme, u.netloc, u.path.rstrip("/"), "", ""))
        self.timeout = timeout
        self._scheme = u.scheme
        self._host = u.hostname
        self._port = u.port
        self._prefix = u.path.rstrip("/")
        self._key = _Secret(api_key) if api_key is not None else None
        self._context = context

    def __repr__(self):
        return "Client(%r, api_key=%s)" % (self.base_url, "<redacted>" if self._key else None)

    # ---- transport -------------------------------------------------------

    def _connect(self, timeout):
        if self._scheme == "https":
            ctx = self._context or ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _open(self, method, path, body=None, headers=None, timeout=None):
        """Sends a request; returns (connection, response) with the body
        unread.  The caller closes the connection.  A body is sent as
        application/json unless headers say otherwise: bytes and str as they
        are, anything else JSON-encoded."""
        hdrs = {"Accept": "application/json", "User-Agent": "forgebox-client-python/1"}
        if self._key is not None:
            hdrs["Authorization"] = "Bearer " + self._key.reveal()
        data = None
        if body is not None:
            if isinstance(body, (bytes, bytearray, memoryview)):
                data = bytes(body)
            elif isinstance(body, str):
                data = body.encode("utf-8")
            else:
                data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            hdrs["Content-Type"] = "application/json"
        # Caller's headers win; a value of None removes a default header.
        for name, value in (headers or {}).items():
            for existing in [k for k in hdrs if k.lower() == name.lower()]:
                del hdrs[existing]
            if value is not None:
                hdrs[name] = value
        conn = self._connect(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, self._prefix + path, body=data, headers=hdrs)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        return conn, resp

    def request(self, method, path, body=None, headers=None, raw=False):
        """Raw access for tests: sends one request and returns
        Response(status, headers, body) whatever the status (never raises
        ApiError).  body: bytes and str are sent as they are (malformed
        JSON included), anything else JSON-encoded, with Content-Type
        application/json unless headers set another; headers override the
        defaults, and a None value removes one (e.g. {"Authorization":
        None}).  The answer's body is bytes when raw is
        true or it is not JSON, else the decoded JSON (None when empty)."""
        conn, resp = self._open(method, path, body, headers)
        try:
            data = resp.read()
        finally:
            conn.close()
        if raw or not _is_json(resp.headers):
            return Response(resp.status, resp.headers, data)
        return Response(resp.status, resp.headers, json.loads(data) if data else None)

    @staticmethod
    def _error(status, headers, data):
        request_id = headers.get("X-Request-Id")
        retry_after = headers.get("Retry-After")
        try:
            retry_after = int(retry_after) if retry_after is not None else None
        except ValueError:
            retry_after = None
        code, message = "http_%d" % status, None
        try:
            err = json.loads(data)["error"]
            if isinstance(err.get("code"), str) and isinstance(err.get("message"), str):
                code, message = err["code"], err["message"]
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        if message is None:
            text = data[:200].decode("utf-8", "replace").strip()
            message = "HTTP %d%s" % (status, (": " + text) if text else "")
        return ApiError(status, code, message, request_id, retry_after)

    def _call(self, method, path, body=None, headers=None, want="json", timeout=None):
        """Sends a request, raises ApiError on >= 400, returns the decoded
        JSON ("json"), the bytes ("bytes"), the text ("text") or None."""
        conn, resp = self._open(method, path, body, headers, timeout)
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status >= 400:
            raise self._error(resp.status, resp.headers, data)
        if want == "bytes":
            return data
        if want == "text":
            return data.decode("utf-8", "replace")
        if not data:
            return None
        if not _is_json(resp.headers):
            raise ApiError(resp.status, "bad_response",
                           "expected JSON, got %s" % (resp.headers.get("Content-Type") or "no Content-Type"),
                           resp.headers.get("X-Request-Id"))
        return json.loads(data)

    # ---- health ----------------------------------------------------------

    def healthz(self):
        """{"status": "ok"} while the gateway serves requests."""
        return self._call("GET", "/healthz")

    def metrics(self):
        """The Prometheus text (an admin holding audit:read: it spans all teams)."""
        return self._call("GET", "/metrics", headers={"Accept": "text/plain"}, want="text")

    # ---- sandboxes -------------------------------------------------------

    def create_sandbox(self, **opts):
        """Creates a sandbox: backend, memory_mib, vcpus, disk_mib, ttl_s
        (all optional; None means "the server's default")."""
        body = {k: v for k, v in opts.items() if v is not None}
        return self._call("POST", "/v1/sandboxes", body=body)

    def list_sandboxes(self):
        """{"sandboxes": [Sandbox, ...]}"""
        return self._call("GET", "/v1/sandboxes")

    def get_sandbox(self, sandbox_id):
        return self._call("GET", "/v1/sandboxes/" + _quote(sandbox_id))

    def delete_sandbox(self, sandbox_id):
        self._call("DELETE", "/v1/sandboxes/" + _quote(sandbox_id))

    @staticmethod
    def _exec_body(cmd, stdin, env, cwd, timeout_s):
        if isinstance(cmd, (str, bytes)) or not all(isinstance(a, str) for a in cmd):
            raise TypeError("cmd must be a list of strings (an argv), not a shell string")
        body = {"cmd": list(cmd)}
        if stdin is not None:
            body["stdin"] = stdin
        if env is not None:
            body["env"] = dict(env)
        if cwd is not None:
            body["cwd"] = cwd
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        return body

    def _exec_timeout(self, timeout_s):
        # The answer comes when the command ends: wait at least that long.
        if timeout_s is None or self.timeout is None:
            return self.timeout
        return max(self.timeout, timeout_s + 30)

    def exec(self, sandbox_id, cmd, stdin=None, env=None, cwd=None, timeout_s=None):
        """Runs cmd (a list of strings) and returns {exit_code, signal,
        stdout, stderr, duration_ms, truncated, timed_out, oom}.  A failing
        command is not an ApiError: look at exit_code."""
        body = self._exec_body(cmd, stdin, env, cwd, timeout_s)
        return self._call("POST", "/v1/sandboxes/%s/exec" % _quote(sandbox_id), body=body,
                          timeout=self._exec_timeout(timeout_s))

    def exec_stream(self, sandbox_id, cmd, stdin=None, env=None, cwd=None, timeout_s=None):
        """Runs cmd and returns an ExecStream: iterate it for Event(event,
        data) tuples as the output arrives, data being the event's
        JSON-decoded data: ("stdout", {"data": text}), ("stderr", {"data":
        text}), and finally ("exit", {exit_code, signal, duration_ms,
        truncated, timed_out, oom}) - or ("exit", {"error", "code"}) if the
        sandbox failed.  Data that is not JSON is yielded as text.  Each
        event's .id is where to resume after it.

        The stream's exec_id names the command (known once the request is
        answered).  Closing the stream early disconnects; the command runs
        on for the server's limits.exec_reattach_s, during which
        resume_exec(sandbox_id, stream.exec_id, stream.last_id) continues
        exactly where this stream stopped; after that it is killed.  Errors
        before the stream starts raise ApiError as usual; a stream that ends
        without an exit event raises ApiError too."""
        body = self._exec_body(cmd, stdin, env, cwd, timeout_s)
        conn, resp = self._open("POST", "/v1/sandboxes/%s/exec" % _quote(sandbox_id), body,
                                {"Accept": "text/event-stream"}, self._exec_timeout(timeout_s))
        return ExecStream(self, conn, resp)

    def resume_exec(self, sandbox_id, exec_id, after=None):
        """The events of a running or recently finished exec, as an
        ExecStream, from after (an event id from an earlier stream; None:
        from the start).  Nothing left after it (it was the exit event):
        an empty stream."""
        path = "/v1/sandboxes/%s/execs/%s/events" % (_quote(sandbox_id), _quote(exec_id))
        if after is not None:
            path += "?" + urllib.parse.urlencode({"after": str(after)})
        conn, resp = self._open("GET", path, None, {"Accept": "text/event-stream"})
        return ExecStream(self, conn, resp)

    def exec_status(self, sandbox_id, exec_id):
        """{id, sandbox_id, started_at, state} with state "running",
        "exited" (and "result": how it ended) or "failed" (and "error":
        {code, message}: the sandbox failed or was deleted)."""
        return self._call("GET", "/v1/sandboxes/%s/execs/%s" % (_quote(sandbox_id), _quote(exec_id)))

    def cancel_exec(self, sandbox_id, exec_id):
        """Kills a running command (its exit event follows in its stream);
        a no-op for one that has ended."""
        self._call("DELETE", "/v1/sandboxes/%s/execs/%s" % (_quote(sandbox_id), _quote(exec_id)))

    def put_file(self, sandbox_id, path, data):
        """Writes bytes to path inside the sandbox; returns {path, size}."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes")
        q = urllib.parse.urlencode({"path": path})
        return self._call("PUT", "/v1/sandboxes/%s/files?%s" % (_quote(sandbox_id), q), body=data,
                          headers={"Content-Type": "application/octet-stream"})

    def get_file(self, sandbox_id, path):
        """The bytes of path inside the sandbox."""
        q = urllib.parse.urlencode({"path": path})
        return self._call("GET", "/v1/sandboxes/%s/files?%s" % (_quote(sandbox_id), q),
                          headers={"Accept": "application/octet-stream"}, want="bytes")

    # ---- tasks -------------------------------------------------------------

    def create_task(self, prompt, provider, model, system=None, backend=None, tools=None,
                    approvals=None, network=None, limits=None):
        """Creates and starts a task (201): a model (provider, a name under
        the gateway's `providers:`, and model) working on prompt with tools
        (a list of tool names; None: bash and the file tools the key may
        grant) in a sandbox of its own.  approvals: tools whose calls wait
        for a person.  network: a list of hosts (or {"allow": [...]}) the
        task's sandbox may reach through the egress proxy.  limits: {max_turns,
        max_tokens, timeout_s, max_tool_calls} (absent ones: the defaults).
        Returns the Task."""
        body = {"prompt": prompt, "provider": provider, "model": model}
        if system is not None:
            body["system"] = system
        if backend is not None:
            body["backend"] = backend
        if tools is not None:
            body["tools"] = list(tools)
        if approvals is not None:
            body["approvals"] = list(approvals)
        if network is not None:
            body["network"] = dict(network) if isinstance(network, dict) else {"allow": list(network)}
        if limits is not None:
            body["limits"] = dict(limits)
        return self._call("POST", "/v1/tasks", body=body)

    def list_tasks(self):
        """{"tasks": [Task, ...]}: the caller's team's, newest first."""
        return self._call("GET", "/v1/tasks")

    def get_task(self, task_id):
        """The Task: {id, state, result, error, usage, provider, model, ...}."""
        return self._call("GET", "/v1/tasks/" + _quote(task_id))

    def task_events(self, task_id, after=None, reconnect=3):
        """The task's transcript as a TaskEventStream of Event(type, event,
        id): event is the whole event object {seq, type, at, data} and id
        its seq (as text).  From the start (or after the event whose seq is
        `after`), then live, until the task has ended and its last event is
        out.  A connection that breaks before that is resumed where it
        stopped (Last-Event-ID), up to `reconnect` times in a row; then
        ApiError(200, "stream_ended", ...) is raised."""
        return TaskEventStream(self, task_id, after, reconnect)

    def _open_task_events(self, task_id, after):
        headers = {"Accept": "text/event-stream"}
        if after is not None:
            headers["Last-Event-ID"] = str(after)
        # A stream may be quiet for as long as a tool runs or a person
        # decides: no read timeout beyond the client's own.
        return self._open("GET", "/v1/tasks/%s/events" % _quote(task_id), None, headers)

    def task_approvals(self, task_id):
        """{"approvals": [Approval, ...]}: {id, tool, input, state:
        pending|approved|denied|expired, ...}."""
        return self._call("GET", "/v1/tasks/%s/approvals" % _quote(task_id))

    def decide_approval(self, task_id, approval_id, decision, reason=None):
        """Decides a held tool call: decision "approve" or "deny" (also
        True/False).  Returns the Approval as decided."""
        if decision is True:
            decision = "approve"
        elif decision is False:
            decision = "deny"
        if decision not in ("approve", "deny"):
            raise ValueError("decision must be 'approve' or 'deny'")
        body = {"decision": decision}
        if reason is not None:
            body["reason"] = reason
        return self._call("POST", "/v1/tasks/%s/approvals/%s" % (_quote(task_id), _quote(approval_id)),
                          body=body)

    def approve(self, task_id, approval_id, reason=None):
        return self.decide_approval(task_id, approval_id, "approve", reason)

    def deny(self, task_id, approval_id, reason=None):
        return self.decide_approval(task_id, approval_id, "deny", reason)

    def cancel_task(self, task_id):
        """Stops a task that has not ended; returns the Task (cancelled).
        An ended task is 409 conflict."""
        return self._call("POST", "/v1/tasks/%s/cancel" % _quote(task_id))

    def send_task_message(self, task_id, content):
        """A follow-up message to a succeeded task whose sandbox is still
        kept: the same conversation continues in the same sandbox.  Returns
        the Task (running again)."""
        return self._call("POST", "/v1/tasks/%s/messages" % _quote(task_id), body={"content": content})

    def wait_task(self, task_id, timeout=300, states=TASK_FINAL_STATES, poll=0.1):
        """Polls until the task is in one of `states` (default: ended) and
        returns it; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.get_task(task_id)
            if t["state"] in states:
                return t
            if time.monotonic() >= deadline:
                raise TimeoutError("task %s still %s after %ss" % (task_id, t["state"], timeout))
            time.sleep(poll)

    # ---- identity --------------------------------------------------------

    def create_key(self, name, scopes, expires_at=None, user_id=None):
        """Creates an API key (for the caller, or for user_id where the
        gateway allows that); the result's "key" is the secret, shown this
        once."""
        body = {"name": name, "scopes": list(scopes)}
        if expires_at is not None:
            body["expires_at"] = expires_at
        if user_id is not None:
            body["user_id"] = user_id
        return self._call("POST", "/v1/keys", body=body)

    def list_keys(self):
        """{"keys": [...]} (never the secrets)."""
        return self._call("GET", "/v1/keys")

    def delete_key(self, key_id):
        """Revokes a key."""
        self._call("DELETE", "/v1/keys/" + _quote(key_id))

    def create_user(self, username, password, team_id, role):
        return self._call("POST", "/v1/users", body={
            "username": username, "password": password, "team_id": team_id, "role": role})

    def list_users(self):
        """{"users": [...]}"""
        return self._call("GET", "/v1/users")

    def create_team(self, name):
        return self._call("POST", "/v1/teams", body={"name": name})

    def list_teams(self):
        """{"teams": [...]}"""
        return self._call("GET", "/v1/teams")

    # ---- audit -----------------------------------------------------------

    def audit(self, **filters):
        """{"entries": [...]}; filters become query parameters: actor,
        action, outcome, since, until, limit (None values are left out)."""
        q = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
        return self._call("GET", "/v1/audit" + ("?" + q if q else ""))

    def audit_verify(self):
        """{intact, entries, first_bad_seq, message}."""
        return self._call("GET", "/v1/audit/verify")


class Event(tuple):
    """One server-sent event: a tuple (event, data), plus .id, the id to
    resume after it (None if the server sent none)."""

    def __new__(cls, event, data, id=None):
        self = tuple.__new__(cls, (event, data))
        self.id = id
        return self

    event = property(lambda self: self[0])
    data = property(lambda self: self[1])

    def __repr__(self):
        return "Event(%r, %r, id=%r)" % (self[0], self[1], self.id)


class ExecStream:
    """The events of one exec (Client.exec_stream, Client.resume_exec).
    Iterate it for Event tuples; exec_id is the exec's id, last_id the id
    of the last event handed out (pass it to resume_exec to continue after
    it).  close() disconnects (also on leaving a with block)."""

    def __init__(self, client, conn, resp):
        self._conn = conn
        self.exec_id = None
        self.sandbox_id = None
        self.last_id = None
        self.request_id = resp.headers.get("X-Request-Id")
        self._first = None
        self._done = False
        try:
            if resp.status >= 400:
                raise client._error(resp.status, resp.headers, resp.read())
            if resp.status == 204:      # resumed after the end: nothing left
                self._done = True
                conn.close()
                self._events = iter(())
                return
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype != "text/event-stream":
                raise ApiError(resp.status, "bad_response",
                               "expected text/event-stream, got %s" % (ctype or "no Content-Type"),
                               self.request_id)
            self._status = resp.status
            self._events = _sse_events(resp, self.request_id)
            # The first event names the exec; read it now so exec_id is known.
            first = next(self._events, None)
            if first is not None and first[0] == "exec" and isinstance(first[1], dict):
                self.exec_id = first[1].get("exec_id")
                self.sandbox_id = first[1].get("sandbox_id")
                self.last_id = first.id
            else:
                self._first = first
        except BaseException:
            conn.close()
            raise

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        ev, self._first = self._first, None
        if ev is None:
            try:
                ev = next(self._events, None)
            except BaseException:
                self.close()
                raise
        if ev is None:
            self.close()
            raise ApiError(self._status, "stream_ended", "the event stream ended before the exit event",
                           self.request_id)
        if ev.id is not None:
            self.last_id = ev.id
        if ev[0] == "exit":
            self.close()
        return ev

    def close(self):
        self._done = True
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self._conn.close()
        except Exception:
            pass


class TaskEventStream:
    """The events of one task (Client.task_events).  Iterate it for
    Event(type, event, id) tuples, event being the whole event object
    {seq, type, at, data}; last_id is the seq of the last event handed out.
    It ends when the gateway ends the stream and the task has ended (a
    final "state" event went by, or the task says so).  A connection that
    breaks before that is reopened after last_id, up to `reconnect` times in a row; after
    that ApiError("stream_ended").  close() disconnects."""

    def __init__(self, client, task_id, after, reconnect):
        self._client = client
        self.task_id = task_id
        self.last_id = None if after is None else str(after)
        self._reconnect = reconnect
        self._conn = None
        self._events = None
        self._done = False
        self._ended = False     # a final state event was seen
        self.request_id = None
        self._connect()         # errors (401/403/404) are raised here, at once

    def _connect(self):
        conn, resp = self._client._open_task_events(self.task_id, self.last_id)
        self.request_id = resp.headers.get("X-Request-Id")
        try:
            if resp.status >= 400:
                raise self._client._error(resp.status, resp.headers, resp.read())
            if resp.status == 204:      # nothing after last_id: the task has ended
                conn.close()
                self._conn, self._events, self._ended = None, iter(()), True
                return
            ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype != "text/event-stream":
                raise ApiError(resp.status, "bad_response",
                               "expected text/event-stream, got %s" % (ctype or "no Content-Type"),
                               self.request_id)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._events = _sse_events(resp, self.request_id)

    def __iter__(self):
        return self

    def __next__(self):
        failures = 0
        while not self._done:
            broken = False
            try:
                ev = next(self._events, None)
            except (OSError, http.client.HTTPException):
                ev, broken = None, True
                if self._ended:
                    raise
            if ev is not None:
                failures = 0
                if ev.id is not None:
                    self.last_id = ev.id
                if isinstance(ev.data, dict) and ev.data.get("type") == "state":
                    state = (ev.data.get("data") or {}).get("state")
                    self._ended = state in TASK_FINAL_STATES
                return ev
            # The stream ended.  After a final state that is its end; a
            # follow-up message would start a new stream.
            if self._conn is not None:
                self._conn.close()
            if not self._ended and not broken:
                # The gateway ended the stream on purpose without a final
                # state in it (e.g. resumed after the last event): ask.
                self._ended = self._client.get_task(self.task_id)["state"] in TASK_FINAL_STATES
            if self._ended:
                self._done = True
                break
            if failures >= self._reconnect:
                self._done = True
                raise ApiError(200, "stream_ended", "the task's event stream ended %d times in a row before the "
                               "task did (last event %s)" % (failures + 1, self.last_id), self.request_id)
            failures += 1
            self._connect()
        raise StopIteration

    def close(self):
        self._done = True
        if self._conn is not None:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:
            pass


def _sse_events(resp, request_id):
    """Parses a text/event-stream incrementally (as each line arrives) and
    yields Events, data JSON-decoded when it is JSON."""
    event, data, last_id = None, [], None
    while True:
        line = resp.readline(MAX_SSE_LINE + 1)
        if not line:
            return  # end of stream; an event without its blank line is dropped, as the spec says
        if len(line) > MAX_SSE_LINE:
            raise ApiError(200, "bad_stream", "an event-stream line is longer than %d bytes" % MAX_SSE_LINE,
                           request_id)
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text == "":
            if data:
                payload = "\n".join(data)
                try:
                    value = json.loads(payload)
                except ValueError:
                    value = payload
                yield Event(event or "message", value, last_id)
            event, data = None, []
            continue
        if text.startswith(":"):
            continue  # comment / keep-alive
        name, _, value = text.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value   # the spec: the last id seen holds for later events too
        # retry is not used by this API
