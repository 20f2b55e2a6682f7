"""Issue 9: what the gateway's speed-ups must not cost.

Verified API keys are remembered for a moment (src/auth/keycache.c), so
every test here first makes a key hot (used several times, so that the
next use is a cache hit) and then attacks the cache: a revoked key, a key
minted by a revoked key and an expired key must be refused on their very
next use.  And a request's authentication entry, now written in the same
commit as its permission entry, must still be there, first, for every
answer - including answers that had no permission entry of their own."""
import datetime
import time

import pytest

from gateway_fixtures import FIRST_PASSWORD, Gateway, forgebox_client

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

