"""Regression tests for the gateway findings of issue 6 (7, 8, 9, 10, 11,
12, 13, 15, 16): each one attacks the gateway the way the review did and
asserts the exact outcome.  Real `forgebox serve` processes, jail sandboxes,
the project's client, or raw sockets where the client would not send the
bad thing.

Test 7 (the create/reaper race) is meant to run under a sanitizer build of
the gateway too (`make sanitize-integration` points FORGEBOX_BIN at it);
every test here fails if the gateway's log shows a sanitizer report."""
import concurrent.futures
import datetime
import http.client
import json
import socket
import threading
import time

import pytest

from gateway_fixtures import FIRST_PASSWORD, Gateway, finish, forgebox_client, start_gateway

ApiError = forgebox_client.ApiError
FAST = ["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000"]


def started(settings=()):
    return start_gateway(FAST + list(settings))


def member(g, team_name, role, scopes):
    """A user of a new team with a key of the given scopes: (client, team)."""
    a = g.admin()
    t = a.create_team(team_name)
    u = a.create_user(username=team_name + "-" + role, password=FIRST_PASSWORD, team_id=t["id"], role=role)
    k = a.create_key(name=role, scopes=scopes, user_id=u["id"])
    return g.client(k["key"]), t, k["key"]


DEV = ["sandboxes:create", "sandboxes:read", "sandboxes:exec"]


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith(field + ":")).split()[1])


def sanitized(pid):
    """A sanitizer build keeps freed memory in quarantine: RSS bounds do not apply."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def raw_request(port, head, body=b"", source="127.0.0.1"):
    s = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    s.sendall(head + body)
    return s


def gone_within(client, sid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            client.get_sandbox(sid)
        except ApiError as e:
            assert e.status == 404
            return True
        time.sleep(0.2)
    return False


def rfc3339_seconds(text):
    """Seconds since the epoch of an RFC 3339 UTC time with 0-9 fraction digits."""
    whole, _, frac = text.rstrip("Z").partition(".")
    t = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0)


# ---- 7: sandbox_create raced the TTL reaper (use-after-free) -------------------------

def test_short_ttl_creates_race_the_reaper_and_audit_readers():
    g = started(["quotas.max_sandboxes_per_team=64", "quotas.max_memory_mib_per_team=100000"])
    stop = threading.Event()
    try:
        def read_audit():
            a = g.admin()
            n = 0
            while not stop.is_set():
                a.audit(limit=1000)
                n += 1
            return n

        def create(_):
            s = g.admin().create_sandbox(ttl_s=1, memory_mib=128)
            return s["id"], rfc3339_seconds(s["expires_at"]) - rfc3339_seconds(s["created_at"])

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
            readers = [ex.submit(read_audit) for _ in range(4)]
            try:
                made = list(ex.map(create, range(24)))
            finally:
                stop.set()   # else a failed create leaves the readers running for ever
            assert all(r.result(timeout=60) > 0 for r in readers)
        assert [d for _, d in made] == [1.0] * 24
        a = g.admin()
        deadline = time.monotonic() + 60
        while a.list_sandboxes()["sandboxes"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert a.list_sandboxes()["sandboxes"] == []
        def ts(e):
            return datetime.datetime.fromisoformat(e["ts"][:26].rstrip("Z") if "." in e["ts"] else e["ts"][:19])

        reaped = {e["resource"]: ts(e) for e in a.audit(action="destroy", limit=1000)["entries"]
                  if e["reason"] == "ttl expired"}
        born = {e["resource"]: ts(e) for e in a.audit(action="create", outcome="allowed", limit=1000)["entries"]}
        assert {sid for sid, _ in made} <= set(reaped)
        # The clock starts when the sandbox is up, not when it was asked for:
        # one queued behind other boots still lives its whole second (the
        # "create" entry itself is written a little after the clock starts,
        # later still when audit readers hold the store, hence the margins;
        # before the fix most of these lived 0.0-0.3 s).
        lived = sorted((reaped[sid] - born[sid]).total_seconds() for sid, _ in made)
        assert lived[0] >= 0.5, lived
        assert lived[len(lived) // 4] >= 0.9, lived
        assert a.audit_verify()["intact"] is True
    finally:
        stop.set()
        finish(g)


# ---- 8: bodies were buffered before any permission check ----------------------------------

def test_upload_to_absent_sandbox_is_refused_before_the_body():
    g = started(["limits.max_connections=256"])
    try:
        viewer, _, key = member(g, "viewers", "viewer", ["sandboxes:read"])
        before = status(g.proc.pid, "VmRSS")
        head = (b"PUT /v1/sandboxes/sb-0123456789abcdef/files?path=/workspace/a HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + key.encode() + b"\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 67108864\r\n\r\n")
        t0 = time.monotonic()
        socks = [raw_request(g.port, head, b"x" * 65536) for _ in range(48)]
        for s in socks:
            s.settimeout(30)
            assert s.recv(200).startswith(b"HTTP/1.1 404"), "no early 404"
        elapsed = time.monotonic() - t0
        for s in socks:
            s.close()
        assert elapsed < 20
        assert status(g.proc.pid, "VmRSS") - before < 32 * 1024
    finally:
        finish(g)


def test_uploads_stream_into_the_sandbox_in_bounded_memory():
    g = started(["limits.max_file_bytes=256MiB"])
    try:
        a = g.admin()
        s = a.create_sandbox(memory_mib=256, disk_mib=512)
        hwm_before = status(g.proc.pid, "VmHWM")
        size = 96 << 20
        chunk = bytes(range(256)) * 4096           # 1 MiB
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=300)
        conn.putrequest("PUT", f"/v1/sandboxes/{s['id']}/files?path=/workspace/big")
        conn.putheader("Authorization", "Bearer " + g.admin_key)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        for _ in range(size // len(chunk)):
            conn.send(chunk)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 201, body
        assert body == {"path": "/workspace/big", "size": size}
        grew = status(g.proc.pid, "VmHWM") - hwm_before
        if not sanitized(g.proc.pid):
            assert grew < 32 * 1024, f"peak RSS grew by {grew} KiB for a {size >> 20} MiB upload"
        r = a.exec(s["id"], ["sh", "-c", "wc -c < /workspace/big; md5sum < /workspace/big"])
        import hashlib
        assert r["stdout"].split() == [str(size), hashlib.md5(chunk * (size // len(chunk))).hexdigest(), "-"]
        a.delete_sandbox(s["id"])
    finally:
        finish(g)


# ---- 9: one slow stream reader stalled the reaper, DELETE and shutdown ---------------------

def stalled_stream(g, key, sid):
    body = json.dumps({"cmd": ["sh", "-c", "while :; do echo 0123456789012345678901234567890123456789; done"],
                       "timeout_s": 600}).encode()
    head = (f"POST /v1/sandboxes/{sid}/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Accept: text/event-stream\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    s = raw_request(g.port, head, body)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    assert s.recv(64).startswith(b"HTTP/1.1 200")
    return s                                  # and never read again


def test_a_stalled_stream_reader_does_not_stall_the_reaper_or_delete():
    g = started(["quotas.max_sandboxes_per_team=10"])
    socks = []
    try:
        a_dev, _, a_key = member(g, "slow", "developer", DEV)
        b_dev, _, _ = member(g, "other", "developer", DEV)
        expiring = a_dev.create_sandbox(ttl_s=4)
        kept = a_dev.create_sandbox()
        socks.append(stalled_stream(g, a_key, expiring["id"]))
        socks.append(stalled_stream(g, a_key, kept["id"]))
        time.sleep(3)                         # buffers fill up; the commands block
        victim = b_dev.create_sandbox(ttl_s=2)
        assert gone_within(b_dev, victim["id"], 15), "another team's sandbox outlived its TTL"
        assert gone_within(a_dev, expiring["id"], 15), "the streamed sandbox outlived its TTL"
        t0 = time.monotonic()
        a_dev.delete_sandbox(kept["id"])
        assert time.monotonic() - t0 < 10
        with pytest.raises(ApiError) as e:
            a_dev.get_sandbox(kept["id"])
        assert e.value.status == 404
    finally:
        t0 = time.monotonic()
        finish(g)                             # shutdown is not held up either
        assert time.monotonic() - t0 < 60
        for s in socks:
            s.close()


# ---- 10: a schema-valid exec the protocol cannot carry bricked the sandbox -----------------

@pytest.mark.parametrize("kind", ["env", "argv"])
def test_oversized_exec_is_400_and_the_sandbox_stays_usable(kind):
    g = started()
    try:
        a = g.admin()
        s = a.create_sandbox()
        if kind == "env":
            kw = {"cmd": ["true"], "env": {f"V{i}": "x" * 1000 for i in range(70)}}
        else:
            kw = {"cmd": ["echo", "y" * (70 * 1024)]}
        st, _, data = a.request("POST", f"/v1/sandboxes/{s['id']}/exec", body=kw, raw=True)
        assert st == 400, data
        err = json.loads(data)["error"]
        assert err["code"] == "bad_request" and "bytes encoded" in err["message"]
        assert a.exec(s["id"], ["echo", "still here"])["stdout"] == "still here\n"
        assert a.get_sandbox(s["id"])["state"] == "running"
        a.delete_sandbox(s["id"])
    finally:
        finish(g)


# ---- 11: Content-Type was never checked ------------------------------------------------------

@pytest.mark.parametrize("ctype,expect", [
    ("text/plain", 415),
    ("application/x-www-form-urlencoded", 415),
    ("multipart/form-data; boundary=xyz", 415),
    ("application/json; charset=utf-8", 201),
    ("Application/JSON", 201),
])
def test_json_routes_check_the_content_type(ctype, expect):
    g = started()
    try:
        a = g.admin()
        st, _, data = a.request("POST", "/v1/teams", body=b'{"name": "ct-team"}',
                                headers={"Content-Type": ctype}, raw=True)
        assert st == expect, data
        if expect == 415:
            assert json.loads(data)["error"]["code"] == "unsupported_media_type"
            assert "ct-team" not in [t["name"] for t in a.list_teams()["teams"]]
        st, _, _ = a.request("POST", "/v1/teams", body=b'{"name": "x"}', headers={"Content-Type": None}, raw=True)
        assert st == 415
    finally:
        finish(g)


def test_file_uploads_take_octet_stream_only():
    g = started()
    try:
        a = g.admin()
        s = a.create_sandbox()
        path = f"/v1/sandboxes/{s['id']}/files?path=/workspace/f"
        for ctype in ("application/json", "text/plain", "multipart/form-data; boundary=b"):
            st, _, data = a.request("PUT", path, body=b"data", headers={"Content-Type": ctype}, raw=True)
            assert st == 415, data
        with pytest.raises(ApiError) as e:
            a.get_file(s["id"], "/workspace/f")
        assert e.value.status == 404
        assert a.put_file(s["id"], "/workspace/f", b"data") == {"path": "/workspace/f", "size": 4}
        a.delete_sandbox(s["id"])
    finally:
        finish(g)


# ---- 12: /metrics leaked other teams' activity to operators ----------------------------------

def test_metrics_are_for_admins_only():
    g = started()
    try:
        op, _, _ = member(g, "ops", "operator", ["audit:read"])
        with pytest.raises(ApiError) as e:
            op.metrics()
        assert e.value.status == 403 and "admins only" in e.value.message
        assert "forgebox_sandboxes_active" in g.admin().metrics()
    finally:
        finish(g)


# ---- 13: a plain exec was not cancelled when its client went away ----------------------------

def test_plain_exec_is_cancelled_when_the_client_disconnects():
    g = started()
    try:
        a = g.admin()
        s = a.create_sandbox()
        # The command bumps a counter in a file: its life shows from outside.
        beat = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /workspace/beat; sleep 0.1; done"]
        body = json.dumps({"cmd": beat, "timeout_s": 120}).encode()
        head = (f"POST /v1/sandboxes/{s['id']}/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {g.admin_key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        sock = raw_request(g.port, head, body)
        time.sleep(1.5)                       # the command is running

        def beating():
            before = a.get_file(s["id"], "/workspace/beat")
            time.sleep(0.6)
            return a.get_file(s["id"], "/workspace/beat") != before

        assert beating()
        sock.close()
        # Commands run side by side now, so "the next one runs" shows nothing:
        # the counter must stop, promptly (it would run for 120 s otherwise).
        deadline = time.monotonic() + 5
        while beating():
            assert time.monotonic() < deadline, "the command runs on after its client left"
        quick = g.client(g.admin_key)
        assert quick.exec(s["id"], ["echo", "next"])["stdout"] == "next\n"
        a.delete_sandbox(s["id"])
    finally:
        finish(g)


# ---- 15: no server-side cap on vcpus ---------------------------------------------------------

def test_vcpus_are_capped_and_counted():
    probe = Gateway(settings=FAST + ["sandbox.max_vcpus=2", "quotas.max_vcpus_per_team=3"])
    probe.init()
    try:
        probe.start()
    except AssertionError:
        pytest.skip("sandbox.max_vcpus / quotas.max_vcpus_per_team arrive with the store helper's config "
                    "change (TODO seam in src/core/seams.c)")
    try:
        a = probe.admin()
        st, _, data = a.request("POST", "/v1/sandboxes", body={"vcpus": 3}, raw=True)
        assert st == 400 and "\"vcpus\"" in json.loads(data)["error"]["message"]
        s = a.create_sandbox(vcpus=2)
        with pytest.raises(ApiError) as e:
            a.create_sandbox(vcpus=2)           # 4 > the team's 3
        assert e.value.status == 429
        a.delete_sandbox(s["id"])
    finally:
        finish(probe)


def test_vcpus_above_the_ceiling_are_400_today():
    g = started()
    try:
        st, _, data = g.admin().request("POST", "/v1/sandboxes", body={"vcpus": 65}, raw=True)
        assert st == 400 and "\"vcpus\" must be an integer between 1 and" in json.loads(data)["error"]["message"]
    finally:
        finish(g)


# ---- 16: rotating source addresses wrote unlimited anonymous audit entries --------------------

def test_failed_authentications_are_limited_globally_across_addresses():
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1", "limits.rate_burst=4"])
    g.init()
    g.start()
    try:
        codes = []
        t0 = time.monotonic()
        for i in range(80):                   # a new source address every time
            conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30,
                                              source_address=(f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
            conn.request("GET", "/v1/sandboxes", headers={"Authorization": "Bearer fbk_0123456789ab_" + "C" * 43})
            codes.append(conn.getresponse().status)
            conn.close()
        assert set(codes) == {401, 429}
        # Each address stayed within its own budget; the global one (8 sources' worth) refused the rest.
        elapsed = time.monotonic() - t0
        assert codes.count(401) <= 4 * 8 + 8 * elapsed + 1, (codes.count(401), elapsed)
        denied = [e for e in g.admin().audit(action="authenticate", outcome="denied", limit=1000)["entries"]]
        assert len(denied) == codes.count(401)
    finally:
        finish(g)
