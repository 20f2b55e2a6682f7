"""Runs last (file order): no secret created anywhere in this test run -
admin keys, API keys, passwords - appears in any gateway log line, any
audit entry, or any response body the tests received, except the one
response that shows a new key once (POST /v1/keys, 201) and `admin init`'s
own output."""
import os

from conftest import forgebox
from gateway_fixtures import GATEWAYS, RECORDED, SECRETS


def secret_forms(s):
    # A key is "fbk_" + 12 hex (its public id) + "_" + 43 base64url
    # characters of secret (which may themselves contain "_" and "-").
    # The id names the key in audit entries; the secret must never appear.
    if s.startswith("fbk_") and len(s) == 60:
        return [s[17:]]
    return [s]


def test_no_secret_anywhere_in_this_run():
    assert len(SECRETS) > 1, "the gateway tests should have created secrets"
    assert RECORDED, "the gateway tests should have made requests"
    haystacks = []
    for method, path, status, body in RECORDED:
        if method == "POST" and path.startswith("/v1/keys") and status == 201:
            continue   # the one-time display of a new key
        haystacks.append((f"response to {method} {path}", bytes(body)))
    for g in GATEWAYS:
        if os.path.exists(g.log_path):
            with open(g.log_path, "rb") as f:
                haystacks.append((f"log {g.log_path}", f.read()))
        if os.path.exists(os.path.join(g.state, "forgebox.db")):
            r = forgebox("audit", "export", "--state-dir", g.state)
            haystacks.append((f"audit export {g.state}", r.out))
            for name in os.listdir(g.state):
                if name.startswith("forgebox.db"):
                    with open(os.path.join(g.state, name), "rb") as f:
                        haystacks.append((f"store file {name}", f.read()))
    leaks = []
    for secret in SECRETS:
        for form in secret_forms(secret):
            needle = form.encode()
            leaks += [where for where, hay in haystacks if needle in hay]
    for g in GATEWAYS:
        g.stop()
        g.tmp.cleanup()
    assert not leaks, f"secrets found in: {sorted(set(leaks))}"
