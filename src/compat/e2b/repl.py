# repl.py - the code interpreter's Python contexts inside a sandbox, for
# ForgeBox's E2B-compatible listener (src/compat/e2b/execute.c).
#
# The binary carries this file (the Makefile turns it into bytes) and
# uploads it into a sandbox on the first POST /execute.  Two modes:
#
#   serve SOCKET  one context: a long-lived interpreter (a background exec
#                 the listener holds) that keeps its globals between runs.
#                 It listens on a Unix socket in /tmp; each connection is
#                 one run: a JSON request {code, env_vars} in, NDJSON out,
#                 the shapes @e2b/code-interpreter reads: {"type": "stdout"
#                 | "stderr", "text"}, {"type": "result", "text": repr,
#                 "is_main_result": true} for a last expression that is not
#                 None, {"type": "error", "name", "value", "traceback"},
#                 and {"type": "number_of_executions", "execution_count"}.
#   run SOCKET    one run: the request on stdin, relayed to the context,
#                 its answer copied to stdout as it comes (the listener
#                 streams this exec's stdout to the client).
#
# Runs one at a time per context, like a notebook kernel.
import ast
import io
import json
import os
import socket
import sys
import time
import traceback

HERE = os.path.abspath(__file__)


class Lines(io.TextIOBase):
    """A stdout/stderr that sends whole lines (and the rest at the end)."""

    def __init__(self, send, kind):
        self.send, self.kind, self.buf = send, kind, ""

    def writable(self):
        return True

    def write(self, s):
        self.buf += s
        if "\n" in self.buf:
            head, _, self.buf = self.buf.rpartition("\n")
            self.send({"type": self.kind, "text": head + "\n"})
        return len(s)

    def flush(self):
        if self.buf:
            self.send({"type": self.kind, "text": self.buf})
            self.buf = ""


def user_frames(tb):
    """The traceback without this file's own frames."""
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) == HERE:
        tb = tb.tb_next
    return tb


def execute(req, ns, send):
    code = req.get("code") or ""
    envs = req.get("env_vars") or {}
    saved = {k: os.environ.get(k) for k in envs}
    os.environ.update({str(k): str(v) for k, v in envs.items()})
    out, err = Lines(send, "stdout"), Lines(send, "stderr")
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<cell>", "exec"), ns)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), ns)
            if value is not None:
                out.flush()
                send({"type": "result", "text": repr(value), "is_main_result": True})
    except BaseException as e:  # the user's error, reported like a kernel does
        out.flush()
        err.flush()
        tb = "".join(traceback.format_exception(type(e), e, user_frames(e.__traceback__)))
        send({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": tb})
    finally:
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = old
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def serve(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(8)
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    count = 0
    while True:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk

            def send(msg):
                try:
                    conn.sendall((json.dumps(msg) + "\n").encode())
                except OSError:
                    pass

            try:
                req = json.loads(data or b"{}")
            except ValueError as e:
                send({"type": "error", "name": "ValueError", "value": "bad request: %s" % e, "traceback": ""})
                continue
            count += 1
            execute(req, ns, send)
            send({"type": "number_of_executions", "execution_count": count})


def run(path):
    req = sys.stdin.buffer.read()
    deadline = time.monotonic() + 20
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                msg = {"type": "error", "name": "ContextError", "value": "the code context did not start",
                       "traceback": ""}
                sys.stdout.write(json.dumps(msg) + "\n")
                return 1
            time.sleep(0.05)
    s.sendall(req)
    s.shutdown(socket.SHUT_WR)
    out = sys.stdout.buffer
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out.write(chunk)
        out.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("serve", "run"):
        sys.stderr.write("usage: repl.py serve|run SOCKET\n")
        sys.exit(2)
    sys.exit(serve(sys.argv[2]) if sys.argv[1] == "serve" else run(sys.argv[2]))
