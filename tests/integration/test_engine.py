"""The task engine (src/engine) end to end through `forgebox task run`.

A scripted provider (tests/tools/fake_llm.py) plays the model: each test
gives it the turns to answer with, runs `forgebox task run` against it in
a real jail sandbox, and then asserts what the engine SENT back: the exact
tool results in the next request (openai `role: tool` messages, anthropic
`tool_result` blocks with is_error), plus the exit code and what the
operator saw on stdout/stderr.  Both wire formats, streamed and not; the
fake splits text and tool arguments into 3-character deltas by default.
"""
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import FORGEBOX, IMAGE, RUN_DIR, EXIT_USAGE, forgebox

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from fake_llm import FakeLLM  # noqa: E402

KEY = "sk-ENGINE-7c1e55d0a9b3f2"
KINDS = ["openai", "anthropic"]
DEFAULT_TOOLS = ["bash", "file_read", "file_write", "file_edit", "glob", "grep"]
EXIT_FAILED, EXIT_BUDGET, EXIT_CANCELLED = 1, 3, 130


@pytest.fixture
def fake():
    with FakeLLM(key=KEY, models={"m1"}) as f:
        yield f


def write_config(tmp_path, kind, url, extra=""):
    base = url + ("/v1" if kind == "openai" else "")
    cfg = tmp_path / "forgebox.yaml"
    cfg.write_text("providers:\n  p1:\n    kind: %s\n    base_url: %s\n"
                   "    api_key: ${FB_TEST_LLM_KEY}\n    max_retries: 0\n%s" % (kind, base, extra))
    return str(cfg)


def task(cfg, *args, prompt="do the task", input=None, key=KEY, timeout=60, backend="jail"):
    return forgebox("task", "run", "--backend", backend, "--config", cfg, "--provider", "p1",
                    "--model", "m1", *args, prompt, input=input, timeout=timeout,
                    env={"FB_TEST_LLM_KEY": key})


def call(cid, name, **args):
    return {"id": cid, "name": name, "arguments": json.dumps(args)}


def results(req):
    """{call_id: (content, is_error or None)} of every tool result in a request."""
    out = {}
    for m in req["body"]["messages"]:
        if m["role"] == "tool":
            out[m["tool_call_id"]] = (m["content"], None)
        elif m["role"] == "user" and isinstance(m["content"], list):
            for b in m["content"]:
                if b["type"] == "tool_result":
                    out[b["tool_use_id"]] = (b["content"], b["is_error"])
    return out


def check(req, kind, expected):
    """expected: {call_id: (content, is_error)}; openai has no is_error on the wire."""
    got = results(req)
    if kind == "openai":
        expected = {k: (v[0], None) for k, v in expected.items()}
    assert got == expected


def offered(req, kind):
    tools = req["body"].get("tools", [])
    return [t["function"]["name"] if kind == "openai" else t["name"] for t in tools]


# ---- the loop ----------------------------------------------------------------------


@pytest.mark.parametrize("kind,stream", [(k, s) for k in KINDS for s in (True, False)])
def test_multi_tool_loop(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [
        {"text": "I will write the file.", "usage": [100, 10],
         "tool_calls": [call("c1", "file_write", path="d/a.txt", content="hello\nworld\n"),
                        call("c2", "bash", command="cat d/a.txt; exit 3")]},
        {"usage": [200, 20], "pieces": 1,
         "tool_calls": [call("c3", "file_read", path="d/a.txt"),
                        call("c4", "file_edit", path="d/a.txt", old_string="world", new_string="there"),
                        call("c5", "grep", pattern="th.re"),
                        call("c6", "glob", pattern="**/*.txt"),
                        call("c7", "bash", command="cat /workspace/d/a.txt; echo oops >&2")]},
        {"text": "All done: a.txt says hello there.", "usage": [300, 30]},
    ]
    r = task(cfg, *([] if stream else ["--no-stream"]))
    assert r.rc == 0, r
    assert r.stdout == "I will write the file.\nAll done: a.txt says hello there.\n"
    assert ("forgebox: task succeeded (3 turns, 7 tool calls, 600 input tokens, 60 output tokens)"
            in r.stderr), r
    assert len(fake.requests) == 3
    first = fake.requests[0]["body"]
    assert first["stream"] is stream if "stream" in first else not stream
    assert offered(fake.requests[0], kind) == DEFAULT_TOOLS
    system = first["system"] if kind == "anthropic" else first["messages"][0]["content"]
    assert system.startswith("You are an agent working inside a ForgeBox sandbox")
    check(fake.requests[1], kind, {
        "c1": ("wrote 12 bytes to d/a.txt", False),
        "c2": ("hello\nworld\n[exit code: 3]", True),
    })
    check(fake.requests[2], kind, {
        "c1": ("wrote 12 bytes to d/a.txt", False),
        "c2": ("hello\nworld\n[exit code: 3]", True),
        "c3": ("     1\thello\n     2\tworld\n", False),
        "c4": ("edited d/a.txt", False),
        "c5": ("d/a.txt:2:there\n", False),
        "c6": ("d/a.txt\n", False),
        "c7": ("hello\nthere\noops\n[exit code: 0]", False),
    })
    # The operator saw each call and its result on stderr.
    assert '[tool] file_write {"path":"d/a.txt","content":"hello\\nworld\\n"}' in r.stderr
    assert "[result] bash (error)\n    hello\n    world\n    [exit code: 3]\n" in r.stderr


def test_git_runs_in_workspace(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [
        {"tool_calls": [call("g1", "git", args=["init", "-q", "-b", "main"]),
                        call("g2", "file_write", path="f.txt", content="x\n"),
                        call("g3", "git", args=["add", "f.txt"]),
                        call("g4", "git", args=["commit", "-q", "-m", "first; $(touch /tmp/pwned)"]),
                        call("g5", "git", args=["log", "--format=%s|%an"]),
                        call("g6", "bash", command="ls /tmp/pwned 2>&1; true"),
                        call("g7", "git", args="status")]},
        {"text": "ok"},
    ]
    r = task(cfg, "--tool", "git", "--tool", "file_write", "--tool", "bash")
    assert r.rc == 0, r
    got = results(fake.requests[1])
    assert got["g1"][0] == "[exit code: 0]"
    assert got["g4"][0] == "[exit code: 0]"
    # The message went to git as one argv element, never through a shell.
    assert got["g5"][0] == "first; $(touch /tmp/pwned)|ForgeBox agent\n[exit code: 0]"
    assert got["g6"][0] == ("ls: cannot access '/tmp/pwned': No such file or directory\n"
                            "[exit code: 0]")
    assert got["g7"][0] == 'git: field "args" must be a list of 1 to 256 strings'


def test_vm_backend_has_the_tools_programs(fake, tmp_path):
    # The same tools in a microVM: python3 (file tools, glob), grep, git.
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [
        {"tool_calls": [call("v1", "file_write", path="src/m.py", content="print('vm')\n"),
                        call("v2", "glob", pattern="**/*.py"),
                        call("v3", "grep", pattern="vm", glob="*.py"),
                        call("v4", "git", args=["--version"]),
                        call("v5", "bash", command="python3 src/m.py; id -u")]},
        {"text": "ok"},
    ]
    r = task(cfg, "--tool", "file_write", "--tool", "glob", "--tool", "grep", "--tool", "git",
             "--tool", "bash", backend="vm", timeout=180)
    assert r.rc == 0, r
    got = results(fake.requests[1])
    assert got["v1"][0] == "wrote 12 bytes to src/m.py"
    assert got["v2"][0] == "src/m.py\n"
    assert got["v3"][0] == "src/m.py:1:print('vm')\n"
    assert got["v4"][0].startswith("git version 2.39."), got["v4"]
    assert got["v5"][0] == "vm\n1000\n[exit code: 0]"


def test_provider_key_never_reaches_the_sandbox(fake, tmp_path):
    # forgebox's own environment holds the key (forgebox.yaml reads it from
    # ${FB_TEST_LLM_KEY}); the sandbox's commands must see neither.
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [
        {"tool_calls": [call("k1", "bash", command="env; cat /proc/self/environ | tr '\\0' '\\n'"),
                        call("k2", "bash", command="grep -rs -l -e " + KEY + " / --exclude-dir=proc "
                                                   "--exclude-dir=sys | head -5; true")]},
        {"text": "ok"},
    ]
    r = task(cfg)
    assert r.rc == 0, r
    got = results(fake.requests[1])
    assert "PATH=" in got["k1"][0] and "HOME=/workspace" in got["k1"][0], got["k1"]
    assert KEY not in got["k1"][0] and "FB_TEST_LLM_KEY" not in got["k1"][0], got["k1"]
    # Nothing but the command line of this very grep holds it.
    assert got["k2"][0] == "[exit code: 0]", got["k2"]
    assert KEY not in r.stderr.replace("grep -rs -l -e " + KEY, "")


# ---- budgets, cancel ------------------------------------------------------------------


def test_max_turns_ends_as_budget_exceeded(fake, tmp_path):
    cfg = write_config(tmp_path, "anthropic", fake.url)
    fake.script = [{"tool_calls": [call("t%d" % i, "bash", command="true")]} for i in range(5)]
    r = task(cfg, "--max-turns", "2")
    assert r.rc == EXIT_BUDGET, r
    assert "forgebox: task budget_exceeded: max_turns (2) reached (2 turns, 2 tool calls" in r.stderr
    assert len(fake.requests) == 2


def test_max_tool_calls_skips_the_rest(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"tool_calls": [call("b%d" % i, "bash", command="echo %d" % i) for i in range(3)]}]
    r = task(cfg, "--max-tool-calls", "2")
    assert r.rc == EXIT_BUDGET, r
    assert "task budget_exceeded: max_tool_calls (2) reached (1 turns, 2 tool calls" in r.stderr
    assert r.stderr.count("[tool] bash") == 2
    assert len(fake.requests) == 1


def test_max_tokens_checked_after_each_turn(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"usage": [90, 20], "tool_calls": [call("k1", "bash", command="echo hi")]}]
    r = task(cfg, "--max-tokens", "100")
    assert r.rc == EXIT_BUDGET, r
    assert "task budget_exceeded: max_tokens (100) reached: 110 used" in r.stderr
    assert "[tool]" not in r.stderr


def test_max_tokens_caps_each_turn_and_a_final_answer_past_it(fake, tmp_path):
    """A turn may write only what is left of the budget (the request says
    so), and a final answer that still goes past it ends the task
    budget_exceeded, its text kept as the result."""
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"usage": [60, 10], "tool_calls": [call("k1", "bash", command="echo hi")]},
                   {"usage": [25, 20], "text": "the answer"}]
    r = task(cfg, "--max-tokens", "100")
    assert r.rc == EXIT_BUDGET, r
    assert "task budget_exceeded: max_tokens (100) exceeded by the final answer: 115 used" in r.stderr
    assert "the answer" in r.stdout
    assert fake.requests[0]["body"]["max_tokens"] == 100
    assert fake.requests[1]["body"]["max_tokens"] == 30


def test_timeout_during_a_slow_command(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"tool_calls": [call("s1", "bash", command="sleep 60")]}]
    start = time.monotonic()
    r = task(cfg, "--timeout", "2")
    took = time.monotonic() - start
    assert r.rc == EXIT_BUDGET, r
    assert "task budget_exceeded: timeout_s (2) reached" in r.stderr
    assert took < 20, took


def spawn_task(cfg, tmp_path, *args):
    """`forgebox task run` in the background, stdin an open pipe nobody writes
    to, stderr in a file: (process, stderr path)."""
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_RUN_DIR=RUN_DIR, FB_TEST_LLM_KEY=KEY)
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        p = subprocess.Popen([FORGEBOX, "task", "run", "--backend", "jail", "--config", cfg,
                              "--provider", "p1", "--model", "m1", *args, "go"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=f, env=env)
    return p, err


def wait_for(path, text, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError("never saw %r in %r" % (text, path.read_text()))


def finish(p, timeout=15):
    # wait, not communicate: stdin stays open (closing it answers approvals).
    try:
        p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
        p.stdout.close()
    return p.returncode


def sandboxes():
    return [n for n in os.listdir(RUN_DIR) if n.startswith("sb-")] if os.path.isdir(RUN_DIR) else []


def test_sigint_during_a_command_cancels_and_destroys_the_sandbox(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"tool_calls": [call("s1", "bash", command="sleep 60")]}]
    p, err = spawn_task(cfg, tmp_path)
    wait_for(err, "[tool] bash")
    time.sleep(0.5)  # the command is running by now
    start = time.monotonic()
    p.send_signal(signal.SIGINT)
    assert finish(p) == 128 + signal.SIGINT, err.read_text()
    assert time.monotonic() - start < 5
    assert "forgebox: task cancelled: cancelled (1 turns, 1 tool calls" in err.read_text()
    assert sandboxes() == []


def test_sigint_during_an_approval_wait(fake, tmp_path):
    # The hook is waiting for the terminal; the cancel reaches it.
    cfg = write_config(tmp_path, "anthropic", fake.url)
    fake.script = [{"tool_calls": [call("s1", "bash", command="echo hi")]}]
    p, err = spawn_task(cfg, tmp_path, "--approve", "bash")
    wait_for(err, "? [y/N] ")
    p.send_signal(signal.SIGINT)
    assert finish(p) == 128 + signal.SIGINT, err.read_text()
    assert "forgebox: task cancelled: cancelled" in err.read_text()
    assert "[result] bash (error)\n    not run: the task ended\n" in err.read_text()


def test_sigint_during_a_provider_call(fake, tmp_path):
    cfg = write_config(tmp_path, "anthropic", fake.url)
    fake.script = [{"text": "a long and slow answer", "stall": 30}]
    p, err = spawn_task(cfg, tmp_path)
    deadline = time.monotonic() + 20
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the stream has started and stalls
    start = time.monotonic()
    p.send_signal(signal.SIGINT)
    assert finish(p) == 128 + signal.SIGINT, err.read_text()
    assert time.monotonic() - start < 5
    assert "forgebox: task cancelled: cancelled (0 turns, 0 tool calls" in err.read_text()


def test_timeout_during_an_approval_wait(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"tool_calls": [call("s1", "bash", command="echo hi")]}]
    p, err = spawn_task(cfg, tmp_path, "--approve", "bash", "--timeout", "2")
    assert finish(p, timeout=20) == EXIT_BUDGET, err.read_text()
    assert "forgebox: task budget_exceeded: timeout_s (2) reached" in err.read_text()


# ---- provider failures -----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_key_fails_clearly_without_the_key(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url)
    wrong = "sk-WRONG-19d2e8a7b6c5"
    r = task(cfg, key=wrong)
    assert r.rc == EXIT_FAILED, r
    assert "forgebox: task failed: provider p1: auth: " in r.stderr, r
    assert wrong not in r.stderr and wrong not in r.stdout
    assert KEY not in r.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_stream_fails(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "some text before it breaks", "malformed": True}]
    r = task(cfg)
    assert r.rc == EXIT_FAILED, r
    assert "forgebox: task failed: provider p1: malformed: " in r.stderr, r


# ---- refusals and tool errors -------------------------------------------------------------


def test_tools_not_offered_and_bad_arguments(fake, tmp_path):
    cfg = write_config(tmp_path, "anthropic", fake.url)
    fake.script = [
        {"tool_calls": [call("n1", "git", args=["status"]),
                        call("n2", "rm_everything"),
                        {"id": "n3", "name": "bash", "arguments": "{\"command\": \"echo"},
                        call("n4", "bash", command=5),
                        call("n5", "file_read", path="a", offset=0),
                        call("n6", "bash", comand="typo")]},
        {"text": "ok"},
    ]
    r = task(cfg, "--tool", "bash", "--tool", "file_read")
    assert r.rc == 0, r
    assert offered(fake.requests[0], "anthropic") == ["bash", "file_read"]
    check(fake.requests[1], "anthropic", {
        "n1": ('tool "git" is not available to this task (available: bash, file_read)', True),
        "n2": ('tool "rm_everything" is not available to this task (available: bash, file_read)', True),
        "n3": ("bash: the arguments are not a JSON object; call the tool again with valid JSON "
               "arguments", True),
        "n4": ('bash: field "command" must be a string', True),
        "n5": ('file_read: field "offset" must be an integer from 1 to 9223372036854775807', True),
        "n6": ('bash: missing required field "command"', True),
    })


def test_file_edit_must_match_once(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [
        {"tool_calls": [call("e1", "file_write", path="x.py", content="a = 1\na = 1\n"),
                        call("e2", "file_edit", path="x.py", old_string="a = 1", new_string="b"),
                        call("e3", "file_edit", path="x.py", old_string="zzz", new_string="b"),
                        call("e4", "file_edit", path="nope.py", old_string="a", new_string="b"),
                        call("e5", "file_edit", path="x.py", old_string="", new_string="b"),
                        call("e6", "file_read", path="x.py")]},
        {"text": "ok"},
    ]
    r = task(cfg)
    assert r.rc == 0, r
    got = results(fake.requests[1])
    assert got["e2"][0] == ("old_string matches 2 times in x.py; include more of the surrounding "
                            "text so that it matches exactly once")
    assert got["e3"][0] == "old_string not found in x.py"
    assert got["e4"][0] == "cannot read nope.py: No such file or directory"
    assert got["e5"][0] == 'file_edit: field "old_string" must not be empty'
    assert got["e6"][0] == "     1\ta = 1\n     2\ta = 1\n"


def test_output_truncation_and_bash_timeout(fake, tmp_path):
    cfg = write_config(tmp_path, "anthropic", fake.url)
    fake.script = [
        {"tool_calls": [call("o1", "bash", command="head -c 1000 /dev/zero | tr '\\0' a"),
                        call("o2", "bash", command="echo before; sleep 30", timeout_s=1),
                        call("o3", "file_read", path="/etc/os-release", limit=1)]},
        {"text": "ok"},
    ]
    r = task(cfg, "--max-output", "100")
    assert r.rc == 0, r
    check(fake.requests[1], "anthropic", {
        "o1": ("a" * 100 + "\n[output truncated: 100 of 1000 bytes shown]\n[exit code: 0]", False),
        "o2": ("before\n[timed out after 1 s; the command was killed]", True),
        "o3": ('     1\tPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
               "[more lines follow: continue with offset 2]\n", False),
    })


# ---- approvals ---------------------------------------------------------------------------


@pytest.mark.parametrize("answer,expected", [
    (b"n\n", ("tool call refused: the operator denied this call at the terminal", True)),
    (None, ("tool call refused: no one approved it: the terminal gave no answer (stdin is closed)",
            True)),
    (b"y\n", ("approved\n[exit code: 0]", False)),
])
def test_approval_on_the_terminal(fake, tmp_path, answer, expected):
    cfg = write_config(tmp_path, "anthropic", fake.url)
    fake.script = [{"tool_calls": [call("a1", "bash", command="echo approved"),
                                   call("a2", "file_read", path="missing.txt")]},
                   {"text": "ok"}]
    r = task(cfg, "--approve", "bash", input=answer)
    assert r.rc == 0, r
    shown = {b"n\n": "n\n", None: "\n", b"y\n": "y\n"}[answer]
    assert '[tool] bash {"command":"echo approved"}\napprove bash {"command":"echo approved"}? [y/N] ' \
        + shown + "[result] bash" in r.stderr
    check(fake.requests[1], "anthropic", {
        "a1": expected,
        # Only the --approve tool asks.
        "a2": ("cannot read missing.txt: No such file or directory", True),
    })


# ---- web_fetch ------------------------------------------------------------------------------


def test_web_fetch_without_grant_is_refused(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"tool_calls": [call("w1", "web_fetch", url="http://example.com/")]},
                   {"text": "ok"}]
    r = task(cfg, "--tool", "web_fetch")
    assert r.rc == 0, r
    assert results(fake.requests[1]) == {
        "w1": ("web_fetch is not available: this task has no network grant", None)}


def test_usage_errors():
    r = forgebox("task", "frobnicate")
    assert r.rc == EXIT_USAGE
    assert "unknown task command 'frobnicate'" in r.stderr
    r = forgebox("task", "run", "--provider", "p1", "--model", "m1", "--tool", "sudo", "x")
    assert r.rc == EXIT_USAGE
    assert "--tool: unknown tool 'sudo'" in r.stderr
    r = forgebox("task", "run", "--provider", "p1", "--model", "m1", "--approve", "git", "x")
    assert r.rc == EXIT_USAGE
    assert "--approve git: that tool is not offered" in r.stderr


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("page at %s for %s\n" % (self.path, self.headers.get("Host"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_web_fetch_through_the_egress_proxy(fake, tmp_path, web):
    # test.example is answered from network.hosts (loopback), and the proxy
    # may connect to exactly the test server (network.allow_private).
    net = ("network:\n  hosts:\n    test.example: [127.0.0.1]\n    other.example: [127.0.0.1]\n"
           '  allow_private:\n    - "127.0.0.1:%d"\n' % web)
    cfg = write_config(tmp_path, "anthropic", fake.url, extra=net)
    fake.script = [{"tool_calls": [
        call("w1", "web_fetch", url="http://test.example:%d/docs?q=1" % web),
        call("w2", "web_fetch", url="http://other.example:%d/" % web),
        call("w3", "web_fetch", url="file:///etc/passwd"),
        call("w4", "bash", command="python3 -c 'import urllib.request as u; "
                                   "print(u.urlopen(\"http://test.example:%d/b\").read().decode())'" % web)]},
        {"text": "ok"}]
    r = task(cfg, "--allow-net", "test.example:%d" % web)
    assert r.rc == 0, r
    assert offered(fake.requests[0], "anthropic") == DEFAULT_TOOLS + ["web_fetch"]
    got = results(fake.requests[1])
    assert got["w1"] == ("HTTP 200 OK\ncontent-type: text/plain\n\n"
                         "page at /docs?q=1 for test.example:%d\n" % web, False)
    assert got["w2"][1] is True and got["w2"][0].startswith("HTTP 403 "), got["w2"]
    assert got["w3"] == ('web_fetch: field "url" must be an http:// or https:// URL with a host', True)
    # The same grant holds for the task's own commands.
    assert got["w4"] == ("page at /b for test.example:%d\n\n[exit code: 0]" % web, False)


@pytest.mark.parametrize("kind", KINDS)
def test_timeout_interrupts_a_stalled_provider(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "thinking very slowly", "stall": 30}]
    start = time.monotonic()
    r = task(cfg, "--timeout", "2")
    took = time.monotonic() - start
    assert r.rc == EXIT_BUDGET, r
    assert "task budget_exceeded: timeout_s (2) reached (0 turns" in r.stderr, r
    assert took < 15, took


def test_prompt_before_options_and_after_double_dash(fake, tmp_path):
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"text": "first"}, {"text": "second"}]
    env = {"FB_TEST_LLM_KEY": KEY}
    r = forgebox("task", "run", "fix the bug", "--backend", "jail", "--config", cfg,
                 "--provider", "p1", "--model", "m1", env=env)
    assert r.rc == 0, r
    r = forgebox("task", "run", "--backend", "jail", "--config", cfg, "--provider", "p1",
                 "--model", "m1", "--", "-v is broken", env=env)
    assert r.rc == 0, r
    assert [q["body"]["messages"][-1]["content"] for q in fake.requests] == ["fix the bug",
                                                                             "-v is broken"]


@pytest.mark.parametrize("stream", [True, False])
def test_event_stream(fake, tmp_path, stream):
    # What a host of the engine receives, in order (--events writes it out).
    cfg = write_config(tmp_path, "anthropic", fake.url)
    fake.script = [{"text": "Hi", "pieces": 1, "usage": [5, 3],
                    "tool_calls": [call("c1", "bash", command="echo x")]},
                   {"text": "Bye", "pieces": 2, "usage": [8, 2]}]
    events = tmp_path / "events.jsonl"
    r = task(cfg, "--events", str(events), *([] if stream else ["--no-stream"]))
    assert r.rc == 0, r
    got = [json.loads(line) for line in events.read_text().splitlines()]
    texts = (["H", "i"], ["By", "e"]) if stream else (["Hi"], ["Bye"])
    assert got == (
        [{"type": "text", "data": {"delta": d}} for d in texts[0]] +
        [{"type": "tool_call", "data": {"call_id": "c1", "tool": "bash", "input": {"command": "echo x"}}},
         {"type": "tool_result", "data": {"call_id": "c1", "tool": "bash", "output": "x\n[exit code: 0]",
                                          "is_error": False}},
         {"type": "usage", "data": {"input_tokens": 5, "output_tokens": 3, "turns": 1, "tool_calls": 1}}] +
        [{"type": "text", "data": {"delta": d}} for d in texts[1]] +
        [{"type": "usage", "data": {"input_tokens": 13, "output_tokens": 5, "turns": 2, "tool_calls": 1}}])


def test_terminal_escapes_in_tool_output_are_shown_not_obeyed(fake, tmp_path):
    # A file planted by a prompt injection: the operator's terminal must not
    # execute its escape sequences (set the title, write the clipboard); the
    # model still gets the bytes as they are.
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"tool_calls": [call("t1", "bash", command="printf 'a\\033]52;c;cHduZWQ=\\007b\\302\\233c'")]},
                   {"text": "ok"}]
    r = task(cfg)
    assert r.rc == 0, r
    assert results(fake.requests[1])["t1"][0] == "a\x1b]52;c;cHduZWQ=\x07b\x9bc\n[exit code: 0]"
    assert "[result] bash\n    a\\x1b]52;c;cHduZWQ=\\x07b\\u009bc\n" in r.stderr, r
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "\x9b" not in r.stderr
