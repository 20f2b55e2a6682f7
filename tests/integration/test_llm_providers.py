"""The provider layer (src/llm) through build/fb-llm-probe against tests/tools/fake_llm.py.

Every case runs for both wire formats (openai, anthropic) and, where it
means something, both modes (streamed SSE and a whole JSON body).  The fake
records each request, so the tests assert what ForgeBox sends (path,
headers, tool schema shapes, the assistant's tool calls echoed verbatim,
tool results) as well as what it makes of each reply.  No sandbox is
involved: these need only the probe binary.
"""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import FORGEBOX

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from fake_llm import FakeLLM  # noqa: E402

PROBE = os.path.join(os.path.dirname(FORGEBOX), "fb-llm-probe")
KEY = "sk-SECRET-4f8a1c9e77d2b6"
KINDS = ["openai", "anthropic"]
MODES = [False, True]
BASH_SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}},
               "required": ["command"]}
TOOLS = [{"name": "bash", "description": "Run a shell command", "input_schema": BASH_SCHEMA}]


@pytest.fixture
def fake():
    with FakeLLM(key=KEY, models={"m1"}) as f:
        yield f


def write_config(tmp_path, kind, url, key=KEY, extra=""):
    base = url + ("/v1" if kind == "openai" else "")
    os.environ["FB_TEST_LLM_KEY"] = key
    cfg = tmp_path / "forgebox.yaml"
    cfg.write_text("providers:\n  p1:\n    kind: %s\n    base_url: %s\n"
                   "    api_key: ${FB_TEST_LLM_KEY}\n%s" % (kind, base, extra))
    return str(cfg)


def probe(cfg, request, stream, *args, timeout=30):
    argv = [PROBE, "--config", cfg, "--provider", "p1", "--retry-base-ms", "50"]
    if stream:
        argv.append("--stream")
    argv += list(args)
    p = subprocess.run(argv, input=json.dumps(request), capture_output=True, text=True,
                       timeout=timeout)
    assert p.stdout.count("\n") == 1, (p.stdout, p.stderr)
    out = json.loads(p.stdout)
    assert KEY not in p.stdout and KEY not in p.stderr
    assert (p.returncode == 0) == out["ok"], (p.returncode, out)
    return out


def simple(text="hi", **kw):
    req = {"model": "m1", "messages": [{"role": "user", "content": text}], "tools": TOOLS}
    req.update(kw)
    return req


params = pytest.mark.parametrize("kind,stream", [(k, s) for k in KINDS for s in MODES])


@params
def test_text_reply_and_request_shape(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "Hello there, world", "usage": [21, 5], "ping": True}]
    out = probe(cfg, simple(system="be brief", max_tokens=99), stream)
    assert out["text"] == "Hello there, world"
    assert out["stop"] == "end_turn"
    assert out["tool_calls"] == []
    assert out["usage"] == {"input_tokens": 21, "output_tokens": 5}
    assert out["attempts"] == 1
    assert out["deltas"] == (["Hel", "lo ", "the", "re,", " wo", "rld"] if stream else [])
    [rq] = fake.requests
    body, h = rq["body"], rq["headers"]
    assert body["model"] == "m1" and body["stream"] is stream and body["max_tokens"] == 99
    if kind == "openai":
        assert rq["path"] == "/v1/chat/completions"
        assert h["authorization"] == "Bearer " + KEY
        assert "x-api-key" not in h
        assert body["messages"] == [{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hi"}]
        assert body["tools"] == [{"type": "function", "function": {
            "name": "bash", "description": "Run a shell command", "parameters": BASH_SCHEMA}}]
        assert body.get("stream_options") == ({"include_usage": True} if stream else None)
    else:
        assert rq["path"] == "/v1/messages"
        assert h["x-api-key"] == KEY and h["anthropic-version"] == "2023-06-01"
        assert "authorization" not in h
        assert body["system"] == "be brief"
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        assert body["tools"] == [{"name": "bash", "description": "Run a shell command",
                                  "input_schema": BASH_SCHEMA}]


@params
def test_tool_calls_split_across_deltas(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    args1 = json.dumps({"command": "ls -la /workspace"})
    args2 = json.dumps({"command": "echo \u00e9t\u00e9 \"q\""})
    fake.script = [{"text": "Let me look.", "pieces": 2, "tool_calls": [
        {"id": "call_1", "name": "bash", "arguments": args1},
        {"id": "call_2", "name": "bash", "arguments": args2}]}]
    out = probe(cfg, simple(), stream)
    assert out["stop"] == "tool_use"
    assert out["text"] == "Let me look."
    assert out["tool_calls"] == [
        {"id": "call_1", "name": "bash", "input": {"command": "ls -la /workspace"}},
        {"id": "call_2", "name": "bash", "input": {"command": "echo \u00e9t\u00e9 \"q\""}}]
    assert out["streamed_calls"] == (["bash", "bash"] if stream else [])
    assert out["stop_raw"] == ("tool_calls" if kind == "openai" else "tool_use")


@params
def test_tool_calls_echoed_verbatim_with_results(fake, tmp_path, kind, stream):
    """The second turn: the assistant's calls go back as they came, then the results."""
    cfg = write_config(tmp_path, kind, fake.url)
    raw = '{"command":  "ls"  }'  # odd spacing: must come back byte for byte (openai)
    req = simple("list files")
    req["messages"] += [
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "call_9", "name": "bash", "input": {"command": "ls"}, "raw": raw},
            {"id": "call_10", "name": "bash", "input": {"command": "false"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "a.txt\n"},
        {"role": "tool", "tool_call_id": "call_10", "content": "exit 1", "is_error": True}]
    fake.script = [{"text": "Done."}]
    out = probe(cfg, req, stream)
    assert out["text"] == "Done."
    msgs = fake.requests[0]["body"]["messages"]
    if kind == "openai":
        assert msgs[1:] == [
            {"role": "assistant", "content": "Looking.", "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "bash", "arguments": raw}},
                {"id": "call_10", "type": "function",
                 "function": {"name": "bash", "arguments": '{"command":"false"}'}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "a.txt\n"},
            {"role": "tool", "tool_call_id": "call_10", "content": "exit 1"}]
    else:
        assert msgs[1:] == [
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "call_9", "name": "bash", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "call_10", "name": "bash", "input": {"command": "false"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_9", "content": "a.txt\n",
                 "is_error": False},
                {"type": "tool_result", "tool_use_id": "call_10", "content": "exit 1",
                 "is_error": True}]}]
    # The probe appended the new turn to the conversation it holds.
    assert out["conversation"]["messages"][-1] == {"role": "assistant", "content": "Done."}


@params
def test_retry_after_429_is_honoured(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"status": 429, "retry_after": 1}, {"text": "ok"}]
    t0 = time.monotonic()
    out = probe(cfg, simple(), stream)
    assert time.monotonic() - t0 >= 1.0
    assert out["text"] == "ok" and out["attempts"] == 2
    assert len(fake.requests) == 2


@params
def test_500_retried_then_success(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"status": 500}, {"status": 503}, {"text": "fine"}]
    out = probe(cfg, simple(), stream)
    assert out["text"] == "fine" and out["attempts"] == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status,errc", [(429, "rate_limited"), (500, "server")])
def test_retries_are_bounded(fake, tmp_path, kind, status, errc):
    cfg = write_config(tmp_path, kind, fake.url, extra="    max_retries: 2\n")
    fake.script = [{"status": status, "message": "busy"}] * 5
    out = probe(cfg, simple(), True)
    assert out["error"] == errc
    assert len(fake.requests) == 3
    assert "after 3 attempts" in out["message"] and "busy" in out["message"]
    assert out["message"].startswith("provider p1: ")


@params
def test_wrong_key_is_auth_and_never_shown(fake, tmp_path, kind, stream):
    wrong = "sk-WRONG-KEY-0123456789abcdef"
    cfg = write_config(tmp_path, kind, fake.url, key=wrong)
    fake.script = [{"text": "never"}]
    argv = [PROBE, "--config", cfg, "--provider", "p1"] + (["--stream"] if stream else [])
    p = subprocess.run(argv, input=json.dumps(simple()), capture_output=True, text=True, timeout=30)
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["error"] == "auth"
    assert "HTTP 401" in out["message"]
    # The fake echoed the key it got in its error message; ForgeBox redacts it.
    assert "Incorrect API key provided: [redacted]" in out["message"]
    assert wrong not in p.stdout and wrong not in p.stderr
    assert len(fake.requests) == 1  # auth failures are not retried


@params
def test_unknown_model_is_bad_request_with_provider_message(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    out = probe(cfg, simple(model="no-such-model"), stream)
    assert out["error"] == "bad_request"
    assert "HTTP 404" in out["message"]
    if kind == "openai":
        assert "The model `no-such-model` does not exist" in out["message"]
    else:
        assert "not_found_error: model: no-such-model" in out["message"]


@params
def test_malformed_json(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "abcdefghijkl", "malformed": True}]
    out = probe(cfg, simple(), stream)
    assert out["error"] == "malformed", out


@params
def test_cut_stream_or_body(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "abcdefghijklmnopqr", "cut": True}]
    out = probe(cfg, simple(), stream)
    assert out["error"] == "cut", out
    assert len(fake.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_slow_stream_hits_idle_timeout(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url, extra="    timeout_s: 1\n")
    fake.script = [{"text": "abcdefghijklmnop", "stall": 6}]
    t0 = time.monotonic()
    out = probe(cfg, simple(), True)
    took = time.monotonic() - t0
    assert out["error"] == "timeout", out
    assert took < 5, took


@pytest.mark.parametrize("kind", KINDS)
def test_slow_but_steady_stream_is_not_cut(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url, extra="    timeout_s: 3\n")
    fake.script = [{"text": "abcdefghijklmnop", "stall": 1}]
    out = probe(cfg, simple(), True)
    assert out["text"] == "abcdefghijklmnop"


@params
def test_response_over_cap_is_too_large(fake, tmp_path, kind, stream):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"big": 300000}] if not stream else [{"text": "y" * 300000, "pieces": 4000}]
    out = probe(cfg, simple(), stream, "--max-response-bytes", "100000")
    assert out["error"] == "too_large", out


@pytest.mark.parametrize("kind", KINDS)
def test_error_event_in_stream(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "partial", "stream_error": "overloaded_error"}]
    out = probe(cfg, simple(), True)
    assert out["error"] == "server"
    assert "scripted" in out["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_crlf_stream(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "line one", "crlf": True, "tool_calls": [
        {"id": "c1", "name": "bash", "arguments": '{"command":"x"}'}]}]
    out = probe(cfg, simple(), True)
    assert out["text"] == "line one"
    assert out["tool_calls"] == [{"id": "c1", "name": "bash", "input": {"command": "x"}}]


@pytest.mark.parametrize("kind", KINDS)
def test_callback_can_cancel(fake, tmp_path, kind):
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"text": "abcdefghijkl"}]
    out = probe(cfg, simple(), True, "--cancel-after-text")
    assert out["error"] == "cancelled"


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_listening_is_transport(tmp_path, kind):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = write_config(tmp_path, kind, "http://127.0.0.1:%d" % port)
    out = probe(cfg, simple(), False)
    assert out["error"] == "transport"


@pytest.mark.parametrize("yaml_text,needle", [
    ("providers:\n  p1:\n    kind: gemini\n    base_url: http://x\n", "providers.p1.kind"),
    ("providers:\n  p1:\n    kind: openai\n    base_url: file:///etc/passwd\n", "providers.p1.base_url"),
    ("providers:\n  p1:\n    kind: openai\n    base_url: ftp://h/\n", "providers.p1.base_url"),
    ("providers:\n  P_1:\n    kind: openai\n    base_url: http://h/\n", "providers.P_1"),
    ("providers:\n  p1:\n    kind: openai\n", "needs base_url"),
    ("providers:\n  p1:\n    kind: openai\n    base_url: http://h\n    colour: red\n",
     "providers.p1.colour"),
    ("providers:\n  p1:\n    kind: openai\n    base_url: http://h\n    timeout_s: 0\n",
     "providers.p1.timeout_s"),
    ("providers: [a, b]\n", "providers (")])
def test_config_errors_name_the_key(tmp_path, yaml_text, needle):
    cfg = tmp_path / "forgebox.yaml"
    cfg.write_text(yaml_text)
    p = subprocess.run([PROBE, "--config", str(cfg), "--provider", "p1"], input="{}",
                       capture_output=True, text=True, timeout=30)
    out = json.loads(p.stdout)
    assert p.returncode == 2 and out["error"] == "config"
    assert needle in out["message"], out["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_redirect_is_not_followed(fake, tmp_path, kind):
    """A Location header must not send the request (and its key) anywhere else."""
    with FakeLLM(key=None, models={"m1"}) as other:
        other.script = [{"text": "stolen"}]
        cfg = write_config(tmp_path, kind, fake.url)
        path = "/v1/chat/completions" if kind == "openai" else "/v1/messages"
        fake.script = [{"status": 307, "location": other.url + path}]
        out = probe(cfg, simple(), False)
        assert out["error"] == "transport" and "307" in out["message"]
        assert other.requests == []


@pytest.mark.parametrize("kind", KINDS)
def test_proxy_environment_is_not_used(fake, tmp_path, kind):
    with FakeLLM(key=None, models={"m1"}) as proxy:
        proxy.script = [{"text": "via proxy"}]
        cfg = write_config(tmp_path, kind, fake.url)
        fake.script = [{"text": "direct"}]
        env = dict(os.environ, http_proxy=proxy.url, HTTP_PROXY=proxy.url, ALL_PROXY=proxy.url,
                   NO_PROXY="", no_proxy="")
        p = subprocess.run([PROBE, "--config", cfg, "--provider", "p1"], input=json.dumps(simple()),
                           capture_output=True, text=True, timeout=30, env=env)
        assert json.loads(p.stdout)["text"] == "direct"
        assert proxy.requests == []


@pytest.mark.parametrize("stream", MODES)
def test_openai_local_server_quirks(fake, tmp_path, stream):
    """No tool call ids (one is made up per index) and arguments as an object."""
    cfg = write_config(tmp_path, "openai", fake.url)
    fake.script = [{"no_ids": True, "args_object": not stream, "tool_calls": [
        {"id": "-", "name": "bash", "arguments": '{"command": "pwd"}'},
        {"id": "-", "name": "glob", "arguments": '{"pattern": "*.c"}'}]}]
    out = probe(cfg, simple(), stream)
    assert out["tool_calls"] == [
        {"id": "call_0", "name": "bash", "input": {"command": "pwd"}},
        {"id": "call_1", "name": "glob", "input": {"pattern": "*.c"}}]


@params
def test_arguments_that_are_not_an_object(fake, tmp_path, kind, stream):
    """The model's mistake is not a transport error: the call comes back with no input."""
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"tool_calls": [{"id": "c1", "name": "bash", "arguments": '["not", "an object"]'}]}]
    out = probe(cfg, simple(), stream)
    assert out["tool_calls"] == [{"id": "c1", "name": "bash", "input": None}]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pad", [0, 250, 290, 300, 310, 320, 380, 395, 420])
def test_echoed_key_is_redacted_wherever_messages_are_cut(fake, tmp_path, kind, pad):
    """No piece of the key survives, whichever length cut the message."""
    cfg = write_config(tmp_path, kind, fake.url)
    fake.script = [{"status": 400, "message": "x" * pad + "bad key {key} end"}]
    out = probe(cfg, simple(), False)
    assert out["error"] == "bad_request"
    text = json.dumps(out)
    for i in range(len(KEY) - 5):
        assert KEY[i:i + 6] not in text, (pad, out["message"])
