"""fake_llm.py - a scripted model provider for the tests (standard library only).

Speaks both wire formats ForgeBox uses, streamed (SSE) and not:
  POST /chat/completions (and /v1/chat/completions)  -> OpenAI Chat Completions
  POST /v1/messages                                   -> Anthropic Messages
on 127.0.0.1, an ephemeral port, in a thread of the test process:

    with FakeLLM(key="sk-test", models={"m1"}) as fake:
        fake.script = [{"text": "hello"}, {"status": 429, "retry_after": 1}, ...]
        ... base_url = fake.url ("http://127.0.0.1:PORT") ...
        fake.requests  # every request: {"method", "path", "headers", "body"}

Each request takes the next reply from the script (a request that finds the
script empty gets 500 "script exhausted", so a test cannot pass by accident).
A reply is a dict:
  {"text": "...", "tool_calls": [{"id", "name", "arguments": "<json text>"}],
   "stop": raw stop reason (default per format), "usage": [in, out],
   "pieces": N (split text and arguments into N-character deltas),
   "crlf": True (stream lines end with CRLF), "ping": True (anthropic ping)}
  {"status": 429|500|..., "retry_after": S, "message": "..."}  an error reply
                           ("{key}" in the message: the key the request carried)
  {"malformed": True}      a body (or a stream chunk) that is not JSON
  {"cut": True, ...}       the stream (or body) stops half way, then the
                           connection closes
  {"stall": S, ...}        after the first part of a stream, S seconds of silence
  {"big": N}               a well-formed body of about N bytes
  {"stream_error": "overloaded_error"}  an error event inside a stream
  {"status": 307, "location": URL}       a redirect
  "no_ids": True / "args_object": True   (openai) tool calls without ids /
                           with arguments as an object, as some local servers send
Before the script, every request is checked as a real provider would: the
key (Authorization: Bearer / x-api-key; a wrong one gets 401 in the
provider's error shape, ECHOING the key it got, as some providers do), the
anthropic-version header, and the model (unknown: 404 in the provider's
shape).  Those checks do not consume the script.
"""

import http.server
import json
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # ---- plumbing ---------------------------------------------------------

    def _send(self, status, obj=None, raw=None, headers=None, length=None):
        data = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length if length is not None else len(data)))
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    def _error(self, status, kind, message, headers=None):
        if self.anthropic:
            body = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        self._send(status, body, headers=headers)

    def _start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _event(self, data, name=None, eol="\n"):
        out = ""
        if name:
            out += "event: " + name + eol
        out += "data: " + (data if isinstance(data, str) else json.dumps(data)) + eol + eol
        self.wfile.write(out.encode())
        self.wfile.flush()

    # ---- the request ------------------------------------------------------

    def do_POST(self):
        fake = self.server.fake
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.anthropic = self.path == "/v1/messages"
        with fake.lock:
            fake.requests.append({"method": "POST", "path": self.path,
                                  "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "body": body})
        if self.path not in ("/v1/messages", "/chat/completions", "/v1/chat/completions"):
            return self._send(404, {"error": "no such path " + self.path})
        if not isinstance(body, dict):
            return self._error(400, "invalid_request_error", "body is not JSON")
        if self.anthropic:
            got = self.headers.get("x-api-key")
            if self.headers.get("anthropic-version") != "2023-06-01":
                return self._error(400, "invalid_request_error", "anthropic-version missing")
        else:
            auth = self.headers.get("Authorization", "")
            got = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        self.got_key = got or ""
        if fake.key is not None and got != fake.key:
            kind = "authentication_error" if self.anthropic else "invalid_request_error"
            return self._error(401, kind, "Incorrect API key provided: %s" % got)
        if body.get("model") not in fake.models:
            if self.anthropic:
                return self._error(404, "not_found_error", "model: %s" % body.get("model"))
            return self._error(404, "invalid_request_error",
                               "The model `%s` does not exist" % body.get("model"))
        with fake.lock:
            reply = fake.script.pop(0) if fake.script else {"status": 500, "message": "script exhausted"}
        self.reply(reply, bool(body.get("stream")))

    def reply(self, r, stream):
        if "status" in r:
            headers = {}
            if "retry_after" in r:
                headers["Retry-After"] = str(r["retry_after"])
            if "location" in r:
                headers["Location"] = r["location"]
            kind = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}.get(
                r["status"], "invalid_request_error")
            msg = r.get("message", "scripted error").replace("{key}", self.got_key)
            return self._error(r["status"], kind, msg, headers)
        if r.get("malformed") and not stream:
            return self._send(200, raw=b'{"id": "x", "choices": [ {"message": ')
        if r.get("big"):
            return self._send(200, self.whole({"text": "x" * r["big"]}))
        if not stream:
            whole = json.dumps(self.whole(r)).encode()
            if r.get("cut"):
                return self._send(200, raw=whole[: len(whole) // 2], length=len(whole))
            return self._send(200, raw=whole)
        self._start_stream()
        events = self.anthropic_events(r) if self.anthropic else self.openai_events(r)
        eol = "\r\n" if r.get("crlf") else "\n"
        half = len(events) // 2
        for i, (name, data) in enumerate(events):
            if r.get("cut") and i == half:
                return
            if r.get("stall") and i == 2:
                time.sleep(r["stall"])
            if r.get("malformed") and i == half:
                self.wfile.write(b"data: {not json\n\n")
                self.wfile.flush()
                return
            self._event(data, name, eol)

    # ---- shapes -----------------------------------------------------------

    @staticmethod
    def pieces(s, n):
        if not n or not s:
            return [s] if s else []
        return [s[i:i + n] for i in range(0, len(s), n)]

    def whole(self, r):
        calls = r.get("tool_calls", [])
        u = r.get("usage", [11, 7])
        if self.anthropic:
            content = ([{"type": "text", "text": r["text"]}] if r.get("text") else [])
            content += [{"type": "tool_use", "id": c["id"], "name": c["name"],
                         "input": json.loads(c["arguments"])} for c in calls]
            return {"id": "msg_1", "type": "message", "role": "assistant", "model": "m1",
                    "content": content,
                    "stop_reason": r.get("stop", "tool_use" if calls else "end_turn"),
                    "stop_sequence": None,
                    "usage": {"input_tokens": u[0], "output_tokens": u[1]}}
        msg = {"role": "assistant", "content": r.get("text")}
        if calls:
            msg["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}}
                                 for c in calls]
            for tc in msg["tool_calls"]:
                if r.get("no_ids"):
                    del tc["id"]
                if r.get("args_object"):
                    tc["function"]["arguments"] = json.loads(tc["function"]["arguments"])
        return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m1",
                "choices": [{"index": 0, "message": msg,
                             "finish_reason": r.get("stop", "tool_calls" if calls else "stop")}],
                "usage": {"prompt_tokens": u[0], "completion_tokens": u[1],
                          "total_tokens": u[0] + u[1]}}

    def openai_events(self, r):
        n = r.get("pieces", 3)
        u = r.get("usage", [11, 7])

        def chunk(delta, finish=None):
            return (None, {"id": "c1", "object": "chat.completion.chunk", "model": "m1",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        ev = [chunk({"role": "assistant", "content": ""})]
        ev += [chunk({"content": p}) for p in self.pieces(r.get("text", ""), n)]
        for i, c in enumerate(r.get("tool_calls", [])):
            first = {"index": i, "id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": ""}}
            if r.get("no_ids"):
                del first["id"]
            ev.append(chunk({"tool_calls": [first]}))
            ev += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                   for p in self.pieces(c["arguments"], n)]
        if r.get("stream_error"):
            ev.append((None, {"error": {"message": "scripted " + r["stream_error"],
                                        "type": r["stream_error"]}}))
        ev.append(chunk({}, r.get("stop", "tool_calls" if r.get("tool_calls") else "stop")))
        ev.append((None, {"id": "c1", "object": "chat.completion.chunk", "choices": [],
                          "usage": {"prompt_tokens": u[0], "completion_tokens": u[1]}}))
        ev.append((None, "[DONE]"))
        return ev

    def anthropic_events(self, r):
        n = r.get("pieces", 3)
        u = r.get("usage", [11, 7])
        ev = [("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m1",
            "stop_reason": None, "usage": {"input_tokens": u[0], "output_tokens": 1}}})]
        idx = 0
        if r.get("text"):
            ev.append(("content_block_start", {"type": "content_block_start", "index": idx,
                                               "content_block": {"type": "text", "text": ""}}))
            if r.get("ping"):
                ev.append(("ping", {"type": "ping"}))
            ev += [("content_block_delta", {"type": "content_block_delta", "index": idx,
                                            "delta": {"type": "text_delta", "text": p}})
                   for p in self.pieces(r["text"], n)]
            ev.append(("content_block_stop", {"type": "content_block_stop", "index": idx}))
            idx += 1
        for c in r.get("tool_calls", []):
            ev.append(("content_block_start", {"type": "content_block_start", "index": idx,
                                               "content_block": {"type": "tool_use", "id": c["id"],
                                                                 "name": c["name"], "input": {}}}))
            ev += [("content_block_delta", {"type": "content_block_delta", "index": idx,
                                            "delta": {"type": "input_json_delta", "partial_json": p}})
                   for p in self.pieces(c["arguments"], n)]
            ev.append(("content_block_stop", {"type": "content_block_stop", "index": idx}))
            idx += 1
        if r.get("stream_error"):
            ev.append(("error", {"type": "error", "error": {"type": r["stream_error"],
                                                            "message": "scripted error"}}))
        ev.append(("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": r.get("stop", "tool_use" if r.get("tool_calls") else "end_turn"),
            "stop_sequence": None}, "usage": {"output_tokens": u[1]}}))
        ev.append(("message_stop", {"type": "message_stop"}))
        return ev


class FakeLLM:
    def __init__(self, key="sk-test-key", models=("m1",)):
        self.key = key
        self.models = set(models)
        self.script = []
        self.requests = []
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    # Standalone: python3 fake_llm.py SCRIPT.json -> prints the URL, serves until killed.
    import sys
    fake = FakeLLM()
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            fake.script = json.load(f)
    print(fake.url, flush=True)
    fake.httpd.serve_forever()
