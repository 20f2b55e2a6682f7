"""The warm pool (issue 9, item 2): pool.jail.size / pool.vm.size sandboxes
of the default shape booted ahead, handed to a matching POST /v1/sandboxes.

A pooled create is a hit (forgebox_pool_hits_total), the sandbox it gets
carries nothing of an earlier user, another shape misses and boots cold,
the pool refills, waiting sandboxes count against no team, one that dies
while waiting is replaced, and shutdown destroys the pool.  Real `forgebox
serve` processes through the project's Python client."""
import os
import re
import signal
import time

import pytest

from conftest import leftovers, settled_leftovers
from gateway_fixtures import FIRST_PASSWORD, assert_sandbox_processes_gone, finish, forgebox_client, start_gateway

ApiError = forgebox_client.ApiError
BASE = ["limits.rate_rps=1000", "limits.rate_burst=1000", "quotas.max_sandboxes_per_team=20"]
DEV = ["sandboxes:create", "sandboxes:read", "sandboxes:exec"]


def started(settings=()):
    return start_gateway(BASE + list(settings))


def metric(g, name, backend):
    text = g.admin().metrics()
    m = re.search(r'^%s\{backend="%s"\} (\d+)$' % (re.escape(name), backend), text, re.M)
    assert m, f"{name} missing from /metrics:\n{text}"
    return int(m.group(1))


def wait_ready(g, backend, n, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(g, "forgebox_pool_ready", backend) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"the {backend} pool did not reach {n} ready sandboxes "
                         f"(it has {metric(g, 'forgebox_pool_ready', backend)})")


def member(g, team_name, scopes=DEV):
    a = g.admin()
    t = a.create_team(team_name)
    u = a.create_user(username=team_name + "-dev", password=FIRST_PASSWORD, team_id=t["id"],
                      role="developer")
    k = a.create_key(name="dev", scopes=scopes, user_id=u["id"])
    return g.client(k["key"])


PROCS = ["sh", "-c", 'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline; echo; done']


@pytest.fixture
def gw():
    # One per test: a pool's waiting sandboxes are alive for as long as the
    # gateway, and every test must leave the host as it found it.
    g = started(["sandbox.backend=jail", "pool.jail.size=2"])
    yield g
    finish(g)


def test_pooled_create_is_a_hit_and_carries_nothing_of_an_earlier_user(gw):
    c = gw.admin()
    wait_ready(gw, "jail", 2)
    hits, misses = metric(gw, "forgebox_pool_hits_total", "jail"), metric(gw, "forgebox_pool_misses_total", "jail")
    first = c.create_sandbox()
    assert first["backend"] == "jail"
    assert metric(gw, "forgebox_pool_hits_total", "jail") == hits + 1
    assert metric(gw, "forgebox_pool_misses_total", "jail") == misses
    r = c.exec(first["id"], ["sh", "-c", "echo secret > /workspace/mine; echo t > /tmp/t; "
                                         "(sleep 300 &) ; echo started"])
    assert r["exit_code"] == 0 and r["stdout"] == "started\n", r
    c.delete_sandbox(first["id"])

    wait_ready(gw, "jail", 2)
    second = c.create_sandbox()
    assert second["id"] != first["id"]
    assert metric(gw, "forgebox_pool_hits_total", "jail") == hits + 2
    r = c.exec(second["id"], ["sh", "-c", "ls -A /workspace /tmp"])
    assert r["exit_code"] == 0 and r["stdout"] == "/tmp:\n\n/workspace:\n", r
    r = c.exec(second["id"], PROCS)
    assert r["exit_code"] == 0, r
    assert "sleep" not in r["stdout"], r["stdout"]
    c.delete_sandbox(second["id"])


def test_another_shape_misses_and_boots_cold(gw):
    c = gw.admin()
    wait_ready(gw, "jail", 2)
    hits, misses = metric(gw, "forgebox_pool_hits_total", "jail"), metric(gw, "forgebox_pool_misses_total", "jail")
    s = c.create_sandbox(memory_mib=256)
    assert s["memory_mib"] == 256
    assert metric(gw, "forgebox_pool_misses_total", "jail") == misses + 1
    assert metric(gw, "forgebox_pool_hits_total", "jail") == hits
    assert metric(gw, "forgebox_pool_ready", "jail") == 2   # nothing was taken
    r = c.exec(s["id"], ["sh", "-c", "head -1 /proc/meminfo"])
    assert r["stdout"].split()[1] == str(256 * 1024), r
    c.delete_sandbox(s["id"])


def test_the_pool_refills_after_takes(gw):
    c = gw.admin()
    wait_ready(gw, "jail", 2)
    taken = [c.create_sandbox()["id"] for _ in range(2)]
    assert metric(gw, "forgebox_pool_ready", "jail") < 2
    wait_ready(gw, "jail", 2, timeout=60)
    for sid in taken:
        assert c.exec(sid, ["true"])["exit_code"] == 0
        c.delete_sandbox(sid)


def test_a_pooled_sandbox_that_dies_while_waiting_is_replaced(gw):
    wait_ready(gw, "jail", 2)
    # The pool's jails are the gateway's children (their init is fb-agent).
    kids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        if ppid == gw.proc.pid and cmd.startswith(b"fb-agent\0--jail"):
            kids.append(int(pid))
    assert len(kids) == 2, kids
    os.kill(kids[0], signal.SIGKILL)
    c = gw.admin()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:        # the dead one is swept, a new one booted
        alive = [p for p in kids if os.path.exists(f"/proc/{p}")]
        if metric(gw, "forgebox_pool_ready", "jail") == 2 and len(alive) == 1:
            break
        time.sleep(0.1)
    hits = metric(gw, "forgebox_pool_hits_total", "jail")
    for _ in range(2):                        # both waiting ones work
        s = c.create_sandbox()
        assert c.exec(s["id"], ["echo", "ok"])["stdout"] == "ok\n"
        c.delete_sandbox(s["id"])
    assert metric(gw, "forgebox_pool_hits_total", "jail") == hits + 2


def test_waiting_sandboxes_count_against_no_team_and_shutdown_destroys_them():
    before = set(leftovers())
    g = started(["sandbox.backend=jail", "pool.jail.size=3", "quotas.max_sandboxes_per_team=1"])
    try:
        wait_ready(g, "jail", 3)
        dev = member(g, "pooled")
        s = dev.create_sandbox()               # three waiting did not use up the quota of one
        assert metric(g, "forgebox_pool_hits_total", "jail") == 1
        with pytest.raises(ApiError) as e:     # once assigned, the team's quota decides
            dev.create_sandbox()
        assert e.value.status == 429, e.value
        assert metric(g, "forgebox_pool_hits_total", "jail") == 1
        listed = [x["id"] for x in g.admin().list_sandboxes()["sandboxes"]]
        assert listed == [s["id"]], listed       # waiting ones are nobody's sandboxes
    finally:
        finish(g)
    assert settled_leftovers(before) == []


def test_vm_pool_hit_runs_a_command():
    g = started(["sandbox.backend=vm", "sandbox.memory_mib=128", "pool.vm.size=1"])
    try:
        wait_ready(g, "vm", 1, timeout=180)
        c = g.admin()
        s = c.create_sandbox()
        assert s["backend"] == "vm"
        assert metric(g, "forgebox_pool_hits_total", "vm") == 1
        r = c.exec(s["id"], ["sh", "-c", "ls -A /workspace; echo ok"])
        assert r["exit_code"] == 0 and r["stdout"] == "ok\n", r
        c.delete_sandbox(s["id"])
    finally:
        finish(g)


@pytest.mark.parametrize("pool", [1, 0], ids=["pooled", "cold"])
def test_a_create_whose_permission_entry_cannot_be_written_leaves_nothing(pool):
    """A create's permission entry is queued and made durable while a pooled
    sandbox is taken (one commit with the create entry); a cold boot waits
    for it first.  If it cannot be written (the audit head edited behind the
    gateway's back: every append refuses), the create is 503 and no sandbox
    is left, pooled or booted."""
    import sqlite3
    g = started(["sandbox.backend=jail", f"pool.jail.size={pool}"])
    try:
        admin = g.admin()
        if pool:
            wait_ready(g, "jail", 1)
        db = sqlite3.connect(os.path.join(g.state, "forgebox.db"))
        (mac,) = db.execute("SELECT mac FROM audit_head").fetchone()
        db.execute("UPDATE audit_head SET mac = ?", ("0" * 64,))
        db.commit()
        try:
            status, _, body = admin.request("POST", "/v1/sandboxes", body={"backend": "jail"})
            assert status == 503, (status, body)
            assert body["error"]["code"] == "unavailable", body
        finally:
            db.execute("UPDATE audit_head SET mac = ?", (mac,))
            db.commit()
            db.close()
        assert "does not verify" in g.read_log()
        assert admin.list_sandboxes()["sandboxes"] == []
        rows = db_rows(g, "SELECT state FROM sandboxes")
        assert rows and all(r[0] == "failed" for r in rows), rows
        if pool:
            assert metric(g, "forgebox_pool_hits_total", "jail") == 1
        assert admin.audit_verify()["intact"] is True
        # The gateway goes on: the next create works and is recorded.
        s = admin.create_sandbox(backend="jail")
        assert admin.exec(s["id"], ["echo", "ok"])["stdout"] == "ok\n"
        admin.delete_sandbox(s["id"])
    finally:
        finish(g)


def db_rows(g, sql):
    import sqlite3
    db = sqlite3.connect(os.path.join(g.state, "forgebox.db"))
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_records_a_machine_crash_could_lose_are_reaped_and_free_the_quota():
    """A local sandbox's record is written without an fsync of its own and
    made durable by the audit commit after it (docs/audit.md, "Sandbox
    records"): a machine crash can lose its reservation, its activation or
    its end, and takes the sandbox with it.  Whatever the record was left
    at, the next gateway ends it and the team's quota is whole again.  The
    crash: SIGKILL (the sandboxes die with the gateway), then the store is
    set to what a lost write leaves - one record still "creating" under its
    provisional id (its activation lost), one still "running" (its end
    lost), one gone (its reservation lost)."""
    import sqlite3
    before = set(leftovers())
    g = started(["sandbox.backend=jail", "pool.jail.size=2", "quotas.max_sandboxes_per_team=3"])
    try:
        wait_ready(g, "jail", 2)
        dev = member(g, "crashed")
        made = [dev.create_sandbox() for _ in range(3)]   # two pooled, one cold
        with pytest.raises(ApiError) as e:
            dev.create_sandbox()
        assert e.value.status == 429, e.value
        wait_ready(g, "jail", 2)    # no refill booting at the kill: only records are under test
        g.proc.kill()
        g.proc.wait()
        g.log.close()
        for s in made:
            assert_sandbox_processes_gone(s["id"])
        db = sqlite3.connect(os.path.join(g.state, "forgebox.db"))
        with db:
            db.execute("UPDATE sandboxes SET id = 'pending-lostactivation', state = 'creating' WHERE id = ?",
                       (made[0]["id"],))
            db.execute("DELETE FROM sandboxes WHERE id = ?", (made[2]["id"],))
        db.close()
        g.start()
        rows = dict(db_rows(g, "SELECT id, state FROM sandboxes"))
        assert rows == {"pending-lostactivation": "destroyed", made[1]["id"]: "destroyed"}, rows
        reaped = {e["resource"] for e in g.admin().audit(action="destroy", limit=1000)["entries"]
                  if "orphan" in e["reason"]}
        assert {"pending-lostactivation", made[1]["id"]} <= reaped, reaped
        assert g.admin().audit_verify()["intact"] is True
        # The team has its three places back, and no more.
        again = [dev.create_sandbox() for _ in range(3)]
        with pytest.raises(ApiError) as e:
            dev.create_sandbox()
        assert e.value.status == 429, e.value
        for s in again:
            dev.delete_sandbox(s["id"])
    finally:
        finish(g)
    assert settled_leftovers(before) == []
