"""Operating the gateway: denial-of-service limits, TTLs, concurrency,
crashes and restarts, shutdown, audit tampering and secret hygiene."""
import concurrent.futures
import json
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import FORGEBOX, RUN_DIR, forgebox
from gateway_fixtures import FIRST_PASSWORD, assert_sandbox_processes_gone, forgebox_client, kill_under_load, start_gateway

ApiError = forgebox_client.ApiError


def started(settings):
    return start_gateway(["sandbox.backend=jail"] + settings)


def test_rate_limit_answers_429_with_retry_after():
    g = started(["limits.rate_rps=1", "limits.rate_burst=3"])
    try:
        c = g.admin()
        statuses = [c.request("GET", "/v1/sandboxes", raw=True) for _ in range(6)]
        codes = [s for s, _, _ in statuses]
        assert codes[:3] == [200, 200, 200]
        assert 429 in codes[3:]
        st, hdr, data = next(x for x in statuses if x[0] == 429)
        assert int({k.lower(): v for k, v in hdr.items()}["retry-after"]) >= 1
        assert json.loads(data)["error"]["code"] == "rate_limited"
        assert g.client().healthz()["status"] == "ok"     # no key, no bucket
    finally:
        g.close()


def test_team_quota_on_concurrent_sandboxes():
    g = started(["quotas.max_sandboxes_per_team=2", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        c = g.admin()
        a, b = c.create_sandbox(), c.create_sandbox()
        with pytest.raises(ApiError) as e:
            c.create_sandbox()
        assert e.value.status == 429 and e.value.code == "quota_exceeded"
        c.delete_sandbox(a["id"])
        d = c.create_sandbox()                           # room again
        for s in (b, d):
            c.delete_sandbox(s["id"])
    finally:
        g.close()


def test_team_quota_on_memory():
    g = started(["sandbox.memory_mib=256", "quotas.max_memory_mib_per_team=300", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        c = g.admin()
        s = c.create_sandbox(memory_mib=256)
        with pytest.raises(ApiError) as e:
            c.create_sandbox(memory_mib=128)
        assert e.value.status == 429
        c.delete_sandbox(s["id"])
    finally:
        g.close()


def test_ttl_reaper_destroys_expired_sandboxes():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        c = g.admin()
        s = c.create_sandbox(ttl_s=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                c.get_sandbox(s["id"])
                time.sleep(0.2)
            except ApiError as e:
                assert e.status == 404
                break
        else:
            pytest.fail("sandbox outlived its TTL")
        entries = c.audit(action="destroy")["entries"]
        assert any(e["resource"] == s["id"] and e["reason"] == "ttl expired" for e in entries)
    finally:
        g.close()


def test_fifty_parallel_clients():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000", "quotas.max_sandboxes_per_team=100",
                 "quotas.max_vcpus_per_team=100"])
    try:
        def one(i):
            c = g.admin()
            s = c.create_sandbox(backend="jail", memory_mib=128)
            r = c.exec(s["id"], ["sh", "-c", f"echo {i}; echo {i} > /workspace/me; cat /workspace/me"])
            c.put_file(s["id"], "/workspace/x", str(i).encode())
            got = c.get_file(s["id"], "/workspace/x")
            c.delete_sandbox(s["id"])
            return i, r["stdout"], r["exit_code"], got

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as ex:
            results = list(ex.map(one, range(50)))
        for i, out, code, got in results:
            assert (out, code, got) == (f"{i}\n{i}\n", 0, str(i).encode())
        assert g.admin().list_sandboxes()["sandboxes"] == []
        v = g.admin().audit_verify()
        assert v["intact"] is True
    finally:
        g.close()
    assert not [d for d in os.listdir(RUN_DIR) if d.startswith("sb-")]


def test_sigterm_destroys_live_sandboxes_and_records_it():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    c = g.admin()
    s = c.create_sandbox()
    assert g.stop() == 0
    r = forgebox("audit", "export", "--state-dir", g.state)
    entries = [json.loads(l) for l in r.stdout.splitlines()]
    assert any(e["resource"] == s["id"] and e["reason"] == "gateway shutdown" for e in entries)
    assert entries[-1]["action"] == "stop"
    assert not os.path.exists(os.path.join(RUN_DIR, s["id"]))


def test_kill9_during_execs_then_restart():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    c = g.admin()
    s = [c.create_sandbox() for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as ex:
        futs = [ex.submit(c.exec, x["id"], ["sleep", "30"]) for x in s]
        time.sleep(1.0)
        g.proc.kill()
        g.proc.wait()
        for f in futs:
            with pytest.raises(Exception):
                f.result(timeout=30)
    # The sandboxes died with the daemon (parent-death signal).
    for x in s:
        assert_sandbox_processes_gone(x["id"])
    g.log.close()
    g.start()
    try:
        r = forgebox("audit", "verify", "--state-dir", g.state)
        assert r.rc == 0, r
        entries = g.admin().audit(action="destroy")["entries"]
        reaped = {e["resource"] for e in entries if "orphan" in e["reason"]}
        assert {x["id"] for x in s} <= reaped
        assert g.admin().list_sandboxes()["sandboxes"] == []
        x = g.admin().create_sandbox()
        assert g.admin().exec(x["id"], ["echo", "alive"])["stdout"] == "alive\n"
        g.admin().delete_sandbox(x["id"])
    finally:
        g.close()
    assert not [d for d in os.listdir(RUN_DIR) if d.startswith("sb-")]


def test_kill9_under_load_loses_no_answered_requests_audit():
    """Audit entries are group-committed (one fsync per batch), but no
    answer leaves before its entries are durable: SIGKILL the gateway in
    the middle of 8 clients' traffic, and every request that was answered
    has its authentication and permission entries in a chain that still
    verifies."""
    g = started(["limits.rate_rps=100000", "limits.rate_burst=100000"])

    def list_sandboxes(c, i):
        status, hdr, _ = c.request("GET", "/v1/sandboxes", raw=True)
        return status, hdr

    answered = kill_under_load(g, list_sandboxes, clients=8, seconds=2.0)
    assert len(answered) > 50, len(answered)
    r = forgebox("audit", "verify", "--state-dir", g.state)
    assert r.rc == 0, r
    r = forgebox("audit", "export", "--state-dir", g.state)
    assert r.rc == 0, r
    seen = {}
    for line in r.stdout.splitlines():
        e = json.loads(line)
        seen.setdefault(e["request_id"], set()).add(e["event"])
    missing = [rid for rid in answered if not {"auth", "permission"} <= seen.get(rid, set())]
    assert missing == [], (len(missing), missing[:5])


@pytest.mark.parametrize("tamper,expect", [
    ("UPDATE audit SET reason = 'nothing to see' WHERE seq = 3", "3"),
    ("DELETE FROM audit WHERE seq = 4", "4"),
    ("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)", "missing"),
    ("UPDATE audit SET seq = seq + 1000 WHERE seq = 2", "2"),
    ("INSERT INTO audit SELECT seq + 100000, ts, event, actor, resource, action, outcome, reason, "
     "source_ip, request_id, prev_hash, hash FROM audit WHERE seq = 1", ""),
])
def test_audit_verify_detects_tampering(tamper, expect):
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    c = g.admin()
    for _ in range(5):
        c.list_sandboxes()
    g.stop()
    assert forgebox("audit", "verify", "--state-dir", g.state).rc == 0
    db = sqlite3.connect(os.path.join(g.state, "forgebox.db"))
    db.execute(tamper)
    db.commit()
    db.close()
    r = forgebox("audit", "verify", "--state-dir", g.state)
    assert r.rc == 1, r
    assert expect in r.stderr


def test_no_secret_reaches_logs_audit_or_responses():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    secrets = [g.admin_key, FIRST_PASSWORD]
    bodies = []
    try:
        c = g.admin()
        t = c.create_team("secret-team")
        pw = "another very secret password"
        secrets.append(pw)
        u = c.create_user(username="secret-user", password=pw, team_id=t["id"], role="developer")
        k = c.create_key(name="k2", scopes=["sandboxes:read"], user_id=u["id"])
        secrets.append(k["key"])
        k2c = g.client(k["key"])
        for call in (lambda: k2c.list_sandboxes(), lambda: c.list_keys(), lambda: c.list_users(),
                     lambda: c.audit(), lambda: c.metrics()):
            bodies.append(json.dumps(call()) if not isinstance(call(), str) else call())
        for bad in ("Bearer " + k["key"] + "x", "Bearer " + k["key"][:-1], k["key"]):
            st, hdr, data = c.request("GET", "/v1/sandboxes", headers={"Authorization": bad}, raw=True)
            bodies.append(data.decode())
        c.delete_key(k["id"])
        st, hdr, data = k2c.request("GET", "/v1/sandboxes", raw=True)
        bodies.append(data.decode())
    finally:
        g.stop()
    export = forgebox("audit", "export", "--state-dir", g.state).stdout
    log = g.read_log()
    with open(os.path.join(g.state, "forgebox.db"), "rb") as f:
        db = f.read()
    for s in secrets:
        secret_part = s[17:] if s.startswith("fbk_") else s
        assert secret_part not in log
        assert secret_part not in export
        assert secret_part.encode() not in db
        assert all(secret_part not in b for b in bodies)
    # The start-up dump hides secret-looking strings but not numbers or
    # nulls under such names: a token budget is not a secret.
    dump = next(json.loads(l)["config"] for l in log.splitlines() if '"config"' in l)
    assert dump["tasks"]["max_tokens"] == 2000000
    assert dump["tls"]["key"] is None


def test_bad_config_stops_startup(tmp_path):
    cfg = tmp_path / "forgebox.yaml"
    cfg.write_text("limits:\n  rate_rps: lots\n")
    p = subprocess.run([FORGEBOX, "serve", "--config", str(cfg), "--state-dir", str(tmp_path / "s")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert "limits.rate_rps" in err and "forgebox.yaml:2" in err


def test_uninitialised_store_refuses_to_serve(tmp_path):
    p = subprocess.run([FORGEBOX, "serve", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 1
    assert b"forgebox admin init" in p.stderr


def test_stalled_client_does_not_hold_up_others():
    import socket
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000", "limits.request_timeout_s=5"])
    try:
        stalled = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", g.port))
            s.sendall(b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            stalled.append(s)            # headers sent, body never finished
        for _ in range(20):
            assert g.admin().list_sandboxes()["sandboxes"] == []
        # ...and a stalled connection is cut off by the idle timeout: the
        # read ends (EOF or an error answer) instead of hanging.
        stalled[0].settimeout(30)
        try:
            stalled[0].recv(100)
        except ConnectionResetError:
            pass
        for s in stalled:
            s.close()
    finally:
        g.close()


def test_oversized_headers_are_refused():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        st, hdr, data = g.admin().request("GET", "/v1/sandboxes", headers={"X-Big": "a" * 100000}, raw=True)
        assert st == 431 or st == 413, st
        assert g.client().healthz()["status"] == "ok"
    finally:
        g.close()


def test_every_response_is_logged_with_its_request_id():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        st, hdr, data = g.admin().request("GET", "/v1/sandboxes", raw=True)
        rid = {k.lower(): v for k, v in hdr.items()}["x-request-id"]
    finally:
        g.close()
    lines = [json.loads(l) for l in g.read_log().splitlines() if l.startswith("{")]
    mine = [l for l in lines if l.get("request_id") == rid]
    assert mine and mine[-1]["msg"] == "request" and mine[-1]["status"] == 200
    assert mine[-1]["route"] == "/v1/sandboxes"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS")).split()[1])


def test_no_body_is_read_before_authentication():
    import socket
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        before = rss_kib(g.proc.pid)
        socks = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", g.port))
            s.sendall(b"PUT /v1/sandboxes/sb-x/files?path=/workspace/a HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 60000000\r\n\r\n")
            socks.append(s)
        for s in socks:
            s.settimeout(30)
            head = s.recv(200)
            assert head.startswith(b"HTTP/1.1 401"), head
            try:
                s.sendall(b"x" * (1 << 20))     # the server is not reading this
            except OSError:
                pass
            s.close()
        assert rss_kib(g.proc.pid) - before < 32 * 1024
    finally:
        g.close()


def test_delete_during_exec_frees_the_quota():
    g = started(["quotas.max_sandboxes_per_team=1", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        c = g.admin()
        s = c.create_sandbox()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
            fut = ex.submit(g.admin().exec, s["id"], ["sleep", "600"], timeout_s=900)
            time.sleep(0.5)
            c.delete_sandbox(s["id"])
            with pytest.raises(ApiError):
                fut.result(timeout=60)        # the exec ended with its sandbox
        s2 = c.create_sandbox()                 # the quota slot is free again
        c.delete_sandbox(s2["id"])
    finally:
        g.close()


def test_ttl_is_enforced_even_while_an_exec_runs():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        c = g.admin()
        s = c.create_sandbox(ttl_s=2)
        with pytest.raises(ApiError):
            c.exec(s["id"], ["sleep", "600"], timeout_s=900)   # cut short by the TTL
        with pytest.raises(ApiError) as e:
            c.get_sandbox(s["id"])
        assert e.value.status == 404
    finally:
        g.close()


def test_abandoned_stream_stops_its_command():
    # An abandoned stream's command runs on for limits.exec_reattach_s (so
    # that its client can come back), then no longer.
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000", "limits.exec_reattach_s=2"])
    try:
        c = g.admin()
        s = c.create_sandbox()
        beat = "echo started; i=0; while :; do i=$((i+1)); echo $i > /workspace/beat; sleep 0.1; done"
        stream = c.exec_stream(s["id"], ["sh", "-c", beat], timeout_s=900)
        assert next(stream)[0] == "stdout"
        stream.close()                           # the client goes away
        t0 = time.monotonic()

        def beating():
            before = c.get_file(s["id"], "/workspace/beat")
            time.sleep(0.6)
            return c.get_file(s["id"], "/workspace/beat") != before

        while beating():
            assert time.monotonic() - t0 < 2 + 5, "the abandoned command runs on"
        assert time.monotonic() - t0 >= 2 - 0.7  # not before the grace period
        assert c.exec_status(s["id"], stream.exec_id)["result"]["signal"] == 9
        quick = g.client(g.admin_key)
        quick.timeout = 60
        assert quick.exec(s["id"], ["echo", "next"])["stdout"] == "next\n"
        c.delete_sandbox(s["id"])
    finally:
        g.close()


def test_audit_log_is_admin_only():
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        a = g.admin()
        t = a.create_team("ops")
        u = a.create_user(username="op", password=FIRST_PASSWORD, team_id=t["id"], role="operator")
        op = g.client(a.create_key(name="op", scopes=["audit:read"], user_id=u["id"])["key"])
        with pytest.raises(ApiError) as e:
            op.audit()
        assert e.value.status == 403
        assert "admins only" in e.value.message
    finally:
        g.close()


def test_a_key_cannot_outlive_its_maker():
    import datetime
    g = started(["limits.rate_rps=1000", "limits.rate_burst=1000"])
    try:
        a = g.admin()
        soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5))
        short = g.client(a.create_key(name="short", scopes=["keys:manage", "sandboxes:read"],
                                      expires_at=soon.strftime("%Y-%m-%dT%H:%M:%SZ"))["key"])
        with pytest.raises(ApiError) as e:
            short.create_key(name="forever", scopes=["sandboxes:read"])
        assert e.value.status == 400
        later = soon + datetime.timedelta(days=1)
        with pytest.raises(ApiError):
            short.create_key(name="later", scopes=["sandboxes:read"],
                             expires_at=later.strftime("%Y-%m-%dT%H:%M:%SZ"))
        ok = short.create_key(name="ok", scopes=["sandboxes:read"],
                              expires_at=(soon - datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert ok["key"].startswith("fbk_")
    finally:
        g.close()


def test_failed_authentications_are_rate_limited_per_address():
    g = started(["limits.rate_rps=2", "limits.rate_burst=5"])
    try:
        c = g.client("fbk_0123456789ab_" + "B" * 43)
        codes = [c.request("GET", "/v1/sandboxes", raw=True)[0] for _ in range(15)]
        assert codes[:5] == [401] * 5
        assert 429 in codes[5:]
    finally:
        g.close()
