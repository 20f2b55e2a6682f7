"""What the task tests share: a real gateway (jail backend) whose
forgebox.yaml points its providers at a scripted model (tests/tools/fake_llm.py),
the identities the tests act as, and small helpers to script the model and
read what a task did.

The model is scripted per test: `env.fake.script` is the list of replies the
model gives, in order (fake_llm.py's top comment has the shapes); every
request the gateway's engine sent is in `env.fake.requests`.  The fake checks
the provider key on every request, so a task that reaches the model at all
proves the key was sent; the key itself must appear nowhere else
(tests/hygiene/test_secret_hygiene.py, test_tasks_security.py).
"""
import json
import os
import sys
import time

import pytest

from gateway_fixtures import FIRST_PASSWORD, Gateway, forgebox_client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from fake_llm import FakeLLM  # noqa: E402

ApiError = forgebox_client.ApiError

# Provider keys start with "sk-": the hygiene check looks for any 12
# characters of them in a row.
PROVIDER_KEY = "sk-fbtest-PROVIDER-7d41c09be2a6f35e"
WRONG_KEY = "sk-fbtest-WRONGKEY-50e8b7a1c3d94f62"
MODEL = "m1"
ORG_MAX = {"max_turns": 20, "max_tokens": 100000, "max_tool_calls": 40, "timeout_s": 120}
APPROVAL_TIMEOUT_S = 4

ALL_TOOLS_SCOPES = ["tools:shell", "tools:files", "tools:edit", "tools:http"]
DEV_SCOPES = ["tasks:create", "tasks:read", "tasks:cancel", "tasks:approve", "sandboxes:create",
              "sandboxes:read", "sandboxes:exec"] + ALL_TOOLS_SCOPES


def config_text(fake_url, extra=""):
    return f"""\
providers:
  fake:
    kind: openai
    base_url: {fake_url}/v1
    api_key: ${{FB_TEST_PROVIDER_KEY}}
    max_retries: 0
    timeout_s: 10
  fake_anthropic:
    kind: anthropic
    base_url: {fake_url}
    api_key: ${{FB_TEST_PROVIDER_KEY}}
    max_retries: 0
    timeout_s: 10
  wrongkey:
    kind: openai
    base_url: {fake_url}/v1
    api_key: ${{FB_TEST_WRONG_KEY}}
    max_retries: 0
tasks:
  default_max_turns: 10
  default_max_tokens: 50000
  default_max_tool_calls: 20
  default_timeout_s: 60
  max_turns: {ORG_MAX["max_turns"]}
  max_tokens: {ORG_MAX["max_tokens"]}
  max_tool_calls: {ORG_MAX["max_tool_calls"]}
  max_timeout_s: {ORG_MAX["timeout_s"]}
  require_approval: [git]
  self_approval: false
  approval_timeout_s: {APPROVAL_TIMEOUT_S}
  ttl_s: 60
network:
  allow: [allowed.example]
{extra}"""


SETTINGS = ["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
            "quotas.max_sandboxes_per_team=50", "quotas.max_memory_mib_per_team=65536"]


def make_gateway(fake, extra_config="", state_dir=None):
    return Gateway(settings=SETTINGS, state_dir=state_dir, config=config_text(fake.url, extra_config),
                   env={"FB_TEST_PROVIDER_KEY": PROVIDER_KEY, "FB_TEST_WRONG_KEY": WRONG_KEY})


class Env:
    """One gateway, one scripted model, two teams and the people in them."""

    def __init__(self, extra_config=""):
        self.fake = FakeLLM(key=PROVIDER_KEY, models={MODEL}).__enter__()
        self.g = make_gateway(self.fake, extra_config)
        self.g.init()
        self.g.start()
        self.admin = self.g.admin()
        admin = self.admin
        ta, tb = admin.create_team("tasks-a"), admin.create_team("tasks-b")
        self.team_a, self.team_b = ta["id"], tb["id"]

        def person(name, team, role, scopes):
            u = admin.create_user(username=name, password=FIRST_PASSWORD, team_id=team["id"], role=role)
            k = admin.create_key(name=name, scopes=scopes, user_id=u["id"])
            c = self.g.client(k["key"])
            c.user_id = u["id"]
            c.key_id = k["id"]
            return c

        self.dev = person("dev-a", ta, "developer", DEV_SCOPES)
        self.dev2 = person("dev2-a", ta, "developer", DEV_SCOPES)        # approves dev's calls
        self.operator = person("op-a", ta, "operator", ["tasks:read", "tasks:approve", "tasks:cancel"])
        self.viewer = person("viewer-a", ta, "viewer", ["tasks:read"])
        self.noshell = person("noshell-a", ta, "developer",
                              [s for s in DEV_SCOPES if s != "tools:shell"])
        self.readonly = person("reader-a", ta, "developer", ["tasks:read"])
        self.other = person("dev-b", tb, "developer", DEV_SCOPES)
        self.other_op = person("op-b", tb, "operator", ["tasks:read", "tasks:approve", "tasks:cancel"])
        self.created = []

    def close(self):
        code = self.g.stop()
        self.fake.__exit__(None, None, None)
        return code

    # ---- scripting the model ---------------------------------------------

    def script(self, *replies):
        with self.fake.lock:
            self.fake.script = list(replies)
            self.fake.requests.clear()

    def create(self, client=None, prompt="do the thing", provider="fake", **kw):
        c = client or self.dev
        kw.setdefault("backend", "jail")
        t = c.create_task(prompt, provider=provider, model=kw.pop("model", MODEL), **kw)
        self.created.append(t["id"])
        return t

    def cleanup(self):
        """Ends what a test left running and drops kept sandboxes, so that
        the next test's script is not eaten by a straggler and the leak
        check finds nothing."""
        for tid in self.created:
            try:
                t = self.admin.get_task(tid)
            except ApiError:
                continue
            if t["state"] not in forgebox_client.TASK_FINAL_STATES:
                try:
                    self.admin.cancel_task(tid)
                except ApiError:
                    pass
                try:
                    t = self.admin.wait_task(tid, timeout=30)
                except TimeoutError:
                    pass
            if t.get("sandbox_id"):
                try:
                    self.admin.delete_sandbox(t["sandbox_id"])
                except ApiError:
                    pass
        self.created = []
        self.script()


def env_fixtures():
    """The fixtures of a module that shares one Env: `env, clean =
    env_fixtures()` at its top; clean runs around each test and leaves no
    task or sandbox to the next."""
    @pytest.fixture(scope="module")
    def env():
        e = Env()
        yield e
        e.cleanup()
        assert e.close() == 0, e.g.read_log()[-4000:]

    @pytest.fixture(autouse=True)
    def clean(env):
        env.cleanup()
        yield
        env.cleanup()

    return env, clean


def call(name, args, cid=None):
    """One tool call of a scripted model turn."""
    call.n += 1
    return {"id": cid or f"call_{call.n}", "name": name, "arguments": json.dumps(args)}


call.n = 0


def tools(*calls, text=None, usage=None):
    r = {"tool_calls": list(calls)}
    if text is not None:
        r["text"] = text
    if usage is not None:
        r["usage"] = usage
    return r


def say(text, usage=None):
    r = {"text": text}
    if usage is not None:
        r["usage"] = usage
    return r


def events(client, tid, after=None):
    """Every event of an ended task (the stream ends after the last)."""
    with client.task_events(tid, after=after) as s:
        return [ev.data for ev in s]


def of_type(evs, *types):
    return [e for e in evs if e["type"] in types]


def results(evs):
    """tool_result data by call id."""
    return {e["data"]["call_id"]: e["data"] for e in evs if e["type"] == "tool_result"}


def wait_for_event(client, tid, etype, timeout=30):
    """Follows the live stream until an event of etype; returns it."""
    deadline = time.monotonic() + timeout
    with client.task_events(tid) as s:
        for ev in s:
            if ev.data["type"] == etype:
                return ev.data
            assert time.monotonic() < deadline, f"no {etype} event within {timeout}s"
    raise AssertionError(f"the task ended without a {etype} event")


def wait_state(client, tid, states, timeout=30):
    if isinstance(states, str):
        states = {states}
    return client.wait_task(tid, timeout=timeout, states=set(states))


def audit_entries(admin, **filters):
    found, after = [], 0
    while True:
        page = admin.audit(after_seq=after, limit=1000, **filters)["entries"]
        found += page
        if len(page) < 1000:
            return found
        after = page[-1]["seq"]


def audit_mentioning(admin, *needles, outcome=None):
    """Audit entries whose text contains every needle (and the outcome)."""
    out = []
    for e in audit_entries(admin):
        text = json.dumps(e)
        if all(n in text for n in needles) and (outcome is None or e.get("outcome") == outcome):
            out.append(e)
    return out


def tool_refusals(admin, task_id):
    """The audit entries of the task's tool calls a policy refused:
    {call_id: (action, reason)}."""
    out = {}
    for e in audit_entries(admin):
        if e["event"] == "task.tool" and e["resource"] == task_id and e["outcome"] == "denied":
            call_id = e["reason"].split(":", 1)[0].replace("call ", "", 1)
            out[call_id] = (e["action"], e["reason"])
    return out


def tool_messages(request):
    """The tool results a provider request carried (openai format)."""
    return [m for m in request["body"]["messages"] if m.get("role") == "tool"]


def expect_error(fn, status, code=None):
    try:
        fn()
    except ApiError as e:
        assert e.status == status, (e.status, e.code, e.message)
        if code is not None:
            assert e.code == code, (e.code, e.message)
        return e
    raise AssertionError(f"expected {status}, the call succeeded")
