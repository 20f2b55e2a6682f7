"""Issue 9: what the gateway's speed-ups must not cost.

Verified API keys are remembered for a moment (src/auth/keycache.c), so
every test here first makes a key hot (used several times, so that the
next use is a cache hit) and then attacks the cache: a revoked key, a key
minted by a revoked key and an expired key must be refused on their very
next use.  And a request's authentication entry, now written in the same
commit as its permission entry, must still be there, first, for every
answer - including answers that had no permission entry of their own."""
import datetime
import json
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import FORGEBOX
from gateway_fixtures import FIRST_PASSWORD, Gateway, assert_sandbox_processes_gone, forgebox_client, kill_under_load

ApiError = forgebox_client.ApiError
SCOPES = ["sandboxes:read", "keys:manage"]


@pytest.fixture(scope="module")
def env():
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    g.init()
    g.start()
    admin = g.admin()
    team = admin.create_team("perf-t")
    dev = admin.create_user(username="perf-dev", password=FIRST_PASSWORD, team_id=team["id"], role="developer")
    yield {"g": g, "admin": admin, "dev": dev}
    assert g.stop() == 0, g.read_log()


def status_of(client):
    try:
        client.list_sandboxes()
        return 200
    except ApiError as e:
        return e.status


def hot(client):
    for _ in range(5):
        assert client.list_sandboxes() == {"sandboxes": []}


def test_revoked_key_refused_on_its_next_use(env):
    g, admin = env["g"], env["admin"]
    k = admin.create_key(name="hot", scopes=SCOPES, user_id=env["dev"]["id"])
    c = g.client(k["key"])
    hot(c)
    admin.delete_key(k["id"])
    assert status_of(c) == 401
    assert status_of(c) == 401


def test_child_of_revoked_key_refused_on_its_next_use(env):
    g, admin = env["g"], env["admin"]
    parent = admin.create_key(name="parent", scopes=SCOPES, user_id=env["dev"]["id"])
    child = g.client(parent["key"]).create_key(name="child", scopes=["sandboxes:read"])
    cc = g.client(child["key"])
    hot(cc)
    hot(g.client(parent["key"]))
    admin.delete_key(parent["id"])
    assert status_of(cc) == 401
    assert status_of(g.client(parent["key"])) == 401


def test_hot_key_refused_from_the_second_it_expires(env):
    g, admin = env["g"], env["admin"]
    at = int(time.time()) + 3
    stamp = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    k = admin.create_key(name="brief", scopes=SCOPES, user_id=env["dev"]["id"], expires_at=stamp)
    c = g.client(k["key"])
    before = 0
    while True:
        t0 = time.time()
        st = status_of(c)
        t1 = time.time()
        if t0 >= at:
            assert st == 401   # the first request sent at or after the second
            break
        if t1 < at:
            assert st == 200   # answered before the second
            before += 1
        time.sleep(0.02)
    assert before > 10         # the key was hot (remembered) when it expired


def test_auth_and_permission_entries_go_together_and_in_order(env):
    """Every answered request has its auth entry immediately followed by its
    permission entry (one commit), also when the permission is refused
    (unknown sandbox: 404)."""
    g, admin = env["g"], env["admin"]
    k = admin.create_key(name="audited", scopes=SCOPES, user_id=env["dev"]["id"])
    c = g.client(k["key"])
    rids = []
    for path, want in (("/v1/sandboxes", 200), ("/v1/sandboxes/sb_0000000000000000", 404),
                       ("/v1/audit", 403)):
        status, hdr, _ = c.request("GET", path, raw=True)
        assert status == want
        rids.append({h.lower(): v for h, v in hdr.items()}["x-request-id"])
    entries = admin.audit(actor=f"key:{k['id']}")["entries"]
    for rid in rids:
        mine = [e for e in entries if e["request_id"] == rid]
        assert [e["event"] for e in mine][:2] == ["auth", "permission"], mine
        assert mine[0]["outcome"] == "allowed"
        assert mine[1]["seq"] == mine[0]["seq"] + 1
    assert admin.audit_verify()["intact"] is True



# ---- an exec's permission entry becomes durable while its command runs ----------------
#
# The gateway queues an exec's permission entry in the chain before the
# command starts and waits for it after starting the command (docs/audit.md,
# "Exec"): one fsync on the exec's path instead of two.  What must still hold:
# no exec is answered before its auth, permission and end entries are durable
# and in order, and a command whose permission entry cannot be written does
# not go on.

def test_kill9_under_exec_load_every_answered_exec_has_its_entries():
    """SIGKILL the gateway while 6 clients run execs in 3 jails: every exec
    that was answered has its auth, permission and exec (end) entries, auth
    and permission consecutive and the end after them, in a chain that
    verifies; and the sandboxes (whose commands' permission entries may
    not have been durable yet) died with the gateway."""
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000"])
    g.init()
    g.start()
    admin = g.admin()
    boxes = [admin.create_sandbox(backend="jail")["id"] for _ in range(3)]
    def exec_true(c, i):
        status, hdr, body = c.request("POST", f"/v1/sandboxes/{boxes[i % 3]}/exec", body={"cmd": ["/bin/true"]})
        assert status != 200 or body["exit_code"] == 0, body
        return status, hdr

    answered = kill_under_load(g, exec_true, clients=6, seconds=2.5)
    assert len(answered) > 30, len(answered)
    # The sandboxes died with the gateway (parent-death signal): no
    # command outlives the gateway that may not have made its entry durable.
    for sid in boxes:
        assert_sandbox_processes_gone(sid)
    r = subprocess.run([FORGEBOX, "audit", "verify", "--state-dir", g.state], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([FORGEBOX, "audit", "export", "--state-dir", g.state], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    by_rid = {}
    for line in r.stdout.splitlines():
        e = json.loads(line)
        by_rid.setdefault(e["request_id"], []).append(e)
    bad = []
    for rid in answered:
        es = sorted(by_rid.get(rid, []), key=lambda e: e["seq"])
        kinds = [(e["event"], e["outcome"]) for e in es]
        if kinds != [("auth", "allowed"), ("permission", "allowed"), ("exec", "allowed")] \
                or es[1]["seq"] != es[0]["seq"] + 1:
            bad.append((rid, kinds))
    assert bad == [], (len(bad), bad[:3])
    g.start()  # reaps what the killed gateway left (cgroups, run directories)
    assert g.admin().list_sandboxes()["sandboxes"] == []
    assert g.stop() == 0


def test_exec_whose_permission_entry_cannot_be_written_is_refused_and_stopped(env):
    """The command starts while its permission entry is being written; if
    that write fails (here: the audit head was edited behind the gateway's
    back, so every append refuses), the answer is 503 and the command is
    killed before it could finish: its marker file never appears."""
    g, admin = env["g"], env["admin"]
    s = admin.create_sandbox(backend="jail")
    try:
        db = sqlite3.connect(os.path.join(g.state, "forgebox.db"))
        (mac,) = db.execute("SELECT mac FROM audit_head").fetchone()
        db.execute("UPDATE audit_head SET mac = ?", ("0" * 64,))
        db.commit()
        try:
            status, _, body = admin.request("POST", f"/v1/sandboxes/{s['id']}/exec",
                                            body={"cmd": ["sh", "-c", "sleep 1; echo ran > /workspace/ran"]})
            assert status == 503, (status, body)
            assert body["error"]["code"] == "unavailable", body
            time.sleep(2)
        finally:
            db.execute("UPDATE audit_head SET mac = ?", (mac,))
            db.commit()
            db.close()
        assert "does not verify" in g.read_log()
        assert admin.exec(s["id"], ["sh", "-c", "ls /workspace; test ! -e /workspace/ran"])["exit_code"] == 0
    finally:
        admin.delete_sandbox(s["id"])
    assert admin.audit_verify()["intact"] is True
