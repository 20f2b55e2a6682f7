"""Several gateways on one PostgreSQL database (pg_fixture.PgServer), each
with its own state directory (docs/deployment.md: a copy of the first
one's key pepper and audit key, its own node id), jail backend:

- a team's quota is reserved in the shared store, so gateways racing for
  the team's last slots grant exactly the quota between them, refuse the
  rest as a single gateway does (429 quota_exceeded), audit every answer,
  and a slot freed on one gateway is free on the other;
- a key revoked or a user disabled through one gateway is refused at once
  by another whose key cache still held it (PostgreSQL LISTEN/NOTIFY), not
  after the cache's lifetime, which the test sets to 60 s."""
import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import FORGEBOX
from gateway_fixtures import FIRST_PASSWORD, Gateway, SECRETS, forgebox_client
from gateway_fixtures import pg  # noqa: F401 (the fixture, used by name)
from pg_fixture import pg_bindir

pytestmark = pytest.mark.skipif(pg_bindir() is None,
                                reason="PostgreSQL is not installed (apt-get install postgresql)")

FAST = ["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000"]
_count = [0]


@pytest.fixture
def url(pg):
    _count[0] += 1
    return pg.fresh_database(f"mg{os.getpid()}_{_count[0]}")


def first_gateway(url, settings=(), env=None):
    g = Gateway(settings=FAST + list(settings), env=dict(env or {}, FORGEBOX_STORE_URL=url))
    p = subprocess.run([FORGEBOX, "admin", "init", "--state-dir", g.state, "--store", url], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, FORGEBOX_FIRST_PASSWORD=FIRST_PASSWORD))
    assert p.returncode == 0, p.stderr
    g.admin_key = p.stdout.strip().splitlines()[-1]
    SECRETS.add(g.admin_key)
    return g


def more_gateway(first, url, settings=(), env=None):
    """Another gateway on the same database: its own state directory and
    node id, the first one's pepper and audit key (docs/deployment.md)."""
    g = Gateway(settings=FAST + list(settings), env=dict(env or {}, FORGEBOX_STORE_URL=url))
    os.makedirs(g.state, mode=0o700)
    for name in ("auth.pepper", "audit.key"):
        shutil.copy2(os.path.join(first.state, name), os.path.join(g.state, name))
    g.admin_key = first.admin_key
    return g


def developer(admin, team_name, scopes=("sandboxes:create", "sandboxes:read", "sandboxes:exec")):
    team = admin.create_team(team_name)
    user = admin.create_user(team_name + "-dev", "a long enough password 1", team["id"], "developer")
    key = admin.create_key("dev", list(scopes), user_id=user["id"])
    SECRETS.add(key["key"])
    return team, user, key


def test_two_gateways_racing_for_a_teams_last_slots_grant_exactly_the_quota(url):
    quota = ["quotas.max_sandboxes_per_team=4", "quotas.max_memory_mib_per_team=100000"]
    g1 = first_gateway(url, quota)
    g1.start()
    g1.admin().list_sandboxes()          # the first entries create the audit key
    g2 = more_gateway(g1, url, quota)
    g2.start()
    try:
        admin = g1.admin()
        team, _, key = developer(admin, "racers")
        c1, c2 = g1.client(key["key"]), g2.client(key["key"])
        first = c1.create_sandbox(backend="jail", memory_mib=128)   # one of four taken
        # Eight creates at once, four through each gateway, for the last three.
        clients = [c1, c2] * 4
        results = [None] * len(clients)
        go = threading.Barrier(len(clients))

        def create(i):
            go.wait()
            try:
                results[i] = ("ok", clients[i].create_sandbox(backend="jail", memory_mib=128))
            except forgebox_client.ApiError as e:
                results[i] = ("refused", e)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        won = [r[1] for r in results if r and r[0] == "ok"]
        refused = [r[1] for r in results if r and r[0] == "refused"]
        assert len(won) == 3, results
        assert len(refused) == 5, results
        for e in refused:
            assert (e.status, e.code) == (429, "quota_exceeded"), (e.status, e.code, e.message)
            assert "team quota exceeded: 4 of 4 sandboxes in use" in e.message
        # Each gateway runs (and lists) the ones it created; together, four.
        mine = {s["id"] for s in c1.list_sandboxes()["sandboxes"]} | \
               {s["id"] for s in c2.list_sandboxes()["sandboxes"]}
        assert mine == {first["id"]} | {s["id"] for s in won}
        # Every answer is audited, in the one chain both gateways write.
        creates = admin.audit(action="create", limit=1000)["entries"]
        allowed = sorted(e["resource"] for e in creates if e["event"] == "sandbox" and e["outcome"] == "allowed")
        denied = [e for e in creates if e["event"] == "sandbox" and e["outcome"] == "denied"]
        assert allowed == sorted([first["id"]] + [s["id"] for s in won])
        assert len(denied) == 5
        assert all("team quota exceeded: 4 of 4 sandboxes in use" in e["reason"] for e in denied)
        assert all(e["actor"] == "key:" + key["id"] for e in denied)
        # A slot freed through one gateway is free on the other at once.
        with pytest.raises(forgebox_client.ApiError) as e:
            c2.create_sandbox(backend="jail", memory_mib=128)
        assert e.value.status == 429
        c1.delete_sandbox(first["id"])
        again = c2.create_sandbox(backend="jail", memory_mib=128)
        assert c2.exec(again["id"], ["echo", "placed"])["stdout"] == "placed\n"
        assert admin.audit_verify()["intact"] is True
    finally:
        g1.stop()
        g2.stop()


LONG_CACHE = {"FORGEBOX_KEYCACHE_TTL_MS": "60000"}   # the TTL alone would keep a revoked key for 60 s


def refused_within(client, seconds=10.0):
    """Polls GET /v1/sandboxes until it is answered 401: the statuses seen
    and the request id of the last answer."""
    seen, rid = [], None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, hdr, _ = client.request("GET", "/v1/sandboxes", raw=True)
        seen.append(status)
        rid = {k.lower(): v for k, v in hdr.items()}.get("x-request-id")
        if status == 401:
            break
        time.sleep(0.05)
    return seen, rid


def warm(client):
    """Two answers 200: the key is verified and remembered."""
    for _ in range(2):
        status, _, _ = client.request("GET", "/v1/sandboxes", raw=True)
        assert status == 200


def hand_revoke(pg, url, key_id):
    """Revokes a key in the database behind every gateway's back: nothing
    announces it, so only the key caches' TTL lets it show."""
    pg.psql(f"UPDATE api_keys SET revoked_at = '2026-01-01T00:00:00.000000000Z' WHERE id = '{key_id}'",
            db=url.rsplit("/", 1)[1])


def test_a_key_revoked_on_one_gateway_is_refused_at_once_by_another(pg, url):
    g1 = first_gateway(url, env=LONG_CACHE)
    g1.start()
    g1.admin().list_sandboxes()
    g2 = more_gateway(g1, url, env=LONG_CACHE)
    g2.start()
    try:
        admin = g1.admin()
        _, _, key = developer(admin, "revokers")
        _, _, control = developer(admin, "controls")
        _, _, bystander = developer(admin, "bystanders")
        b, b_control, b_bystander = (g2.client(k["key"]) for k in (key, control, bystander))
        for c in (b, b_control, b_bystander):
            warm(c)
        # The control key, revoked by hand, keeps working on B from its
        # cache for seconds: the 60 s TTL is in force, so the TTL cannot be
        # what refuses the revoked key below.
        hand_revoke(pg, url, control["id"])
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            status, _, _ = b_control.request("GET", "/v1/sandboxes", raw=True)
            assert status == 200
            time.sleep(0.1)
        # Revoked through A: B refuses it within the polling bound ...
        admin.delete_key(key["id"])
        seen, rid = refused_within(b)
        assert seen[-1] == 401, seen
        # ... because B forgot every cached key: the control's hand
        # revocation shows at the same moment.
        status, _, _ = b_control.request("GET", "/v1/sandboxes", raw=True)
        assert status == 401
        status, _, _ = b_bystander.request("GET", "/v1/sandboxes", raw=True)
        assert status == 200
        # B's refusal is audited with the reason.
        denied = [(e["event"], e["reason"]) for e in admin.audit(outcome="denied", limit=1000)["entries"]
                  if e["request_id"] == rid]
        assert denied == [("auth", "revoked")], denied
    finally:
        g1.stop()
        g2.stop()


def wait_for_log(g, text, count, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if g.read_log().count(text) >= count:
            return True
        time.sleep(0.1)
    return False


def test_the_identity_watch_listens_again_after_a_postgres_restart(pg, url):
    g1 = first_gateway(url, env=LONG_CACHE)
    g1.start()
    g1.admin().list_sandboxes()
    g2 = more_gateway(g1, url, env=LONG_CACHE)
    g2.start()
    listening = '"msg":"identity watch listening"'
    try:
        assert wait_for_log(g2, listening, 1)
        admin = g1.admin()
        _, _, key = developer(admin, "revokers")
        _, _, control = developer(admin, "controls")
        b, b_control = g2.client(key["key"]), g2.client(control["key"])
        warm(b)
        pg.restart(down_seconds=1.5)
        # B's listener noticed, and listens again on a new connection.
        assert wait_for_log(g2, '"msg":"identity watch lost its connection', 1)
        assert wait_for_log(g2, listening, 2), g2.read_log()[-2000:]
        deadline = time.monotonic() + 30
        for c in (b, admin):        # both gateways' store connections are back too
            while c.request("GET", "/v1/sandboxes", raw=True)[0] != 200:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        warm(b)
        warm(b_control)
        hand_revoke(pg, url, control["id"])
        assert b_control.request("GET", "/v1/sandboxes", raw=True)[0] == 200   # from B's cache
        admin.delete_key(key["id"])
        seen, _ = refused_within(b)
        assert seen[-1] == 401, seen
        assert b_control.request("GET", "/v1/sandboxes", raw=True)[0] == 401   # the whole cache went
    finally:
        g1.stop()
        g2.stop()
