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
    assert r["bgListed"] is True and r["bgKilled"] is True
    assert r["bgWait"]["error"] == "CommandExitError" and r["bgWait"]["exitCode"] != 0
    assert r["bgStdout"] == "started\n"
    assert r["stdin"] == "to stdin\n"
    assert r["read"] == "hello from e2b\n" and r["readViaCommand"] == "hello from e2b\n"
    assert r["bytes"] == [0, 1, 255]
    assert r["madeDir"] is True and r["madeDirAgain"] is False
    assert r["list"] == ["a.txt:file", "b.bin:file", "newdir:dir", "notes:dir"]
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
    assert r["first"] == {"text": "42", "stdout": ["side effect\n"], "stderr": [], "error": None, "count": 1}
    assert r["second"] == {"text": "41", "stdout": ["kept 41\n"], "stderr": ["warn\n"], "streamed": ["kept 41\n"],
                           "count": 2}
    assert r["error"]["name"] == "ZeroDivisionError"
    assert r["error"]["value"] == "division by zero"
    assert r["error"]["traceback"].startswith("Traceback (most recent call last):\n")
    assert 'File "<cell>", line 2, in f' in r["error"]["traceback"]
    assert r["error"]["traceback"].endswith("ZeroDivisionError: division by zero\n")
    assert "fb-e2b-repl" not in r["error"]["traceback"]
    assert r["error"]["text"] is None
    assert r["afterError"] == "41"
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
