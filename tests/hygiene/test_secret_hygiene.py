"""Runs once after the whole integration suite (tests/run-integration.sh),
over what every parallel worker saw: no secret created anywhere in the run -
admin keys, API keys, passwords, and the model providers' keys the task
tests configure - appears in any gateway log line, any audit entry, any
store file, or any response body the tests received (task events included:
they carry what every tool printed inside a task's sandbox, and
tests/integration/test_tasks_security.py has a task search its sandbox's
environment and files for the key), except the one response that shows a
new key once (POST /v1/keys, 201) and `admin init`'s own output.  A
provider key (the tests' start with "sk-") must not appear even in part:
any 12 characters of it in a row count as a leak, as a message cut at a
length limit could keep a piece.

Each worker leaves FORGEBOX_EVIDENCE_DIR/evidence-PID.json (see
tests/integration/gateway_fixtures.py) and the gateways' directories; this
check reads them all and then removes the directories."""
import base64
import glob
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from conftest import FORGEBOX  # noqa: E402

EVIDENCE_DIR = os.environ.get("FORGEBOX_EVIDENCE_DIR", "")


def secret_forms(s):
    # A key is "fbk_" + 12 hex (its public id) + "_" + 43 base64url
    # characters of secret (which may themselves contain "_" and "-").
    # The id names the key in audit entries; the secret must never appear.
    if s.startswith("fbk_") and len(s) == 60:
        return [s[17:]]
    if s.startswith("sk-") and len(s) >= 16:
        body = s[3:]
        return [body[i:i + 12] for i in range(len(body) - 11)]
    return [s]


def load_evidence():
    secrets, recorded, gateways = set(), [], []
    for path in sorted(glob.glob(os.path.join(EVIDENCE_DIR, "evidence-*.json"))):
        with open(path) as f:
            doc = json.load(f)
        secrets |= set(doc["secrets"])
        recorded += [(m, p, st, base64.b64decode(b)) for m, p, st, b in doc["recorded"]]
        gateways += doc["gateways"]
    return secrets, recorded, gateways


def test_no_secret_anywhere_in_this_run():
    assert EVIDENCE_DIR, "run through tests/run-integration.sh (FORGEBOX_EVIDENCE_DIR)"
    secrets, recorded, gateways = load_evidence()
    assert len(secrets) > 1, "the gateway tests should have created secrets"
    assert any(s.startswith("sk-") for s in secrets), "the task tests should have configured provider keys"
    assert recorded, "the gateway tests should have made requests"
    haystacks = []
    for method, path, status, body in recorded:
        if method == "POST" and path.startswith("/v1/keys") and status == 201:
            continue   # the one-time display of a new key
        haystacks.append((f"response to {method} {path}", body))
    for g in gateways:
        if os.path.exists(g["log"]):
            with open(g["log"], "rb") as f:
                haystacks.append((f"log {g['log']}", f.read()))
        if os.path.exists(os.path.join(g["state"], "forgebox.db")):
            r = subprocess.run([FORGEBOX, "audit", "export", "--state-dir", g["state"]],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            haystacks.append((f"audit export {g['state']}", r.stdout))
            for name in os.listdir(g["state"]):
                if name.startswith("forgebox.db"):
                    with open(os.path.join(g["state"], name), "rb") as f:
                        haystacks.append((f"store file {name}", f.read()))
    leaks = []
    for secret in secrets:
        for form in secret_forms(secret):
            needle = form.encode()
            # Which secret, by its first characters only (enough to find
            # the test that made it, too few to be one).
            leaks += [f"{where} ({form[:4]}...)" for where, hay in haystacks if needle in hay]
    for g in gateways:
        shutil.rmtree(g["dir"], ignore_errors=True)
    assert not leaks, f"secrets found in: {sorted(set(leaks))}"
