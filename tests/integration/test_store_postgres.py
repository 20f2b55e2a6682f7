"""The PostgreSQL store engine against a real PostgreSQL (pg_fixture.py):
the store's own unit tests, a gateway on PostgreSQL, two gateways sharing
one database and one audit chain, a database restart under load, and
tampering with the audit table.  One PostgreSQL per module; each test
takes a fresh database of it."""
import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from conftest import FORGEBOX, ROOT
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
    return pg.fresh_database(f"t{os.getpid()}_{_count[0]}")


def run(*args, url=None, state=None):
    env = dict(os.environ, FORGEBOX_FIRST_PASSWORD=FIRST_PASSWORD)
    argv = [FORGEBOX, *args]
    if state:
        argv += ["--state-dir", state]
    if url:
        argv += ["--store", url]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def gateway(url, state=None, init=True):
    """A gateway whose store.url (from FORGEBOX_STORE_URL) is url."""
    g = Gateway(settings=FAST, state_dir=state, env={"FORGEBOX_STORE_URL": url})
    if init:
        p = run("admin", "init", url=url, state=g.state)
        assert p.returncode == 0, p.stderr
        g.admin_key = p.stdout.strip().splitlines()[-1]
        SECRETS.add(g.admin_key)
    return g


def second_gateway(first, url):
    """Another gateway on the same database: its own state directory and
    node id, the first one's key pepper and audit key (docs/deployment.md)."""
    g = gateway(url, init=False)
    os.makedirs(g.state, mode=0o700)
    for name in ("auth.pepper", "audit.key"):
        shutil.copy2(os.path.join(first.state, name), os.path.join(g.state, name))
    g.admin_key = first.admin_key
    return g


@pytest.mark.parametrize("binary", ["test_store_engine", "test_store_tasks", "test_store_sessions",
                                    "test_store_nodes", "test_store_watch"])
def test_store_unit_tests_pass_on_postgres(url, binary):
    path = os.path.join(ROOT, "build", "tests", binary)
    p = subprocess.run([path], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, FORGEBOX_TEST_STORE_URL=url, CMOCKA_MESSAGE_OUTPUT="STDOUT"))
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert "[  PASSED  ]" in out and "FAILED" not in out and "SKIPPED" not in out, out


def test_gateway_on_postgres(pg, url):
    g = gateway(url)
    g.start()
    try:
        c = g.admin()
        team = c.create_team("pgteam")
        user = c.create_user("pguser", "a long enough password 1", team["id"], "developer")
        key = c.create_key("dev", ["sandboxes:create", "sandboxes:read", "sandboxes:exec"],
                           user_id=user["id"])
        dev = g.client(key["key"])
        s = dev.create_sandbox(backend="jail", memory_mib=128)
        assert dev.exec(s["id"], ["echo", "on postgres"])["stdout"] == "on postgres\n"
        with pytest.raises(forgebox_client.ApiError) as e:   # unique name: conflict, as on SQLite
            c.create_team("pgteam")
        assert e.value.status == 409
        dev.delete_sandbox(s["id"])
        assert {t["name"] for t in c.list_teams()["teams"]} >= {"default", "pgteam"}
        assert [u["username"] for u in c.list_users()["users"] if u["id"] == user["id"]] == ["pguser"]
        destroyed = c.audit(action="destroy")["entries"]
        assert [e["resource"] for e in destroyed] == [s['id']]
        # The sandbox row belongs to this gateway's node id.
        node = open(os.path.join(g.state, "node.id")).read()
        assert pg.psql(f"SELECT node_id || ' ' || state FROM sandboxes WHERE id = '{s['id']}'",
                       db=url.rsplit("/", 1)[1]) == f"{node} destroyed"
        # The configuration dump names the database but never its password.
        status, _, data = c.request("GET", "/v1/config", raw=True)
        assert status == 200
        shown = data.decode()
        assert pg.password not in shown
        assert f"postgresql://{pg.user}:[redacted]@127.0.0.1:{pg.port}/" in shown
        assert c.audit_verify()["intact"] is True
    finally:
        g.stop()
    assert pg.password not in g.read_log()
    r = run("audit", "verify", url=url, state=g.state)
    assert r.returncode == 0 and "audit chain intact" in r.stdout, r.stderr
    r = run("audit", "export", url=url, state=g.state)
    assert r.returncode == 0, r.stderr
    assert any(json.loads(line)["action"] == "destroy" for line in r.stdout.splitlines())


def hammer(clients, seconds):
    """Each client in a thread of its own lists sandboxes for `seconds`;
    returns (status, request id) of every answer."""
    out, stop = [], threading.Event()
    lock = threading.Lock()

    def loop(c):
        while not stop.is_set():
            try:
                status, hdr, _ = c.request("GET", "/v1/sandboxes", raw=True)
            except OSError:
                continue
            rid = {k.lower(): v for k, v in hdr.items()}.get("x-request-id")
            with lock:
                out.append((status, rid))

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    return out


def exported_request_ids(url, state):
    r = run("audit", "export", url=url, state=state)
    assert r.returncode == 0, r.stderr
    seen = {}
    for line in r.stdout.splitlines():
        e = json.loads(line)
        seen.setdefault(e["request_id"], set()).add(e["event"])
    return seen


def test_two_gateways_share_one_verifiable_audit_chain(url):
    g1 = gateway(url)
    g1.start()
    g1.admin().list_sandboxes()          # the first entries create the audit key
    g2 = second_gateway(g1, url)
    g2.start()
    try:
        assert open(os.path.join(g1.state, "node.id")).read() != open(os.path.join(g2.state, "node.id")).read()
        answers = hammer([g.admin() for g in (g1, g2) for _ in range(4)], 3.0)
    finally:
        g1.stop()
        g2.stop()
    ok = [rid for status, rid in answers if status == 200]
    assert len(ok) > 100, len(ok)
    r = run("audit", "verify", url=url, state=g2.state)
    assert r.returncode == 0, r.stderr
    seen = exported_request_ids(url, g1.state)
    missing = [rid for rid in ok if not {"auth", "permission"} <= seen.get(rid, set())]
    assert missing == [], (len(missing), missing[:5])


def test_postgres_restart_under_load_loses_nothing_acknowledged(pg, url):
    g = gateway(url)
    g.start()
    try:
        clients = [g.admin() for _ in range(3)]
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("answers", hammer(clients, 6.0)))
        t.start()
        time.sleep(1.5)
        pg.restart(down_seconds=1.5)
        t.join()
        answers = result["answers"]
        statuses = {s for s, _ in answers}
        bad = [line for line in g.read_log().splitlines() if '"status":500' in line or '"error"' in line]
        assert statuses <= {200, 503}, (statuses, bad[:5])  # never a 500 while the database is away
        assert 503 in statuses                          # it was away, and said so
        assert answers[-1][0] == 200                    # reconnected without a restart
        assert g.admin().list_sandboxes() is not None
    finally:
        g.stop()
    ok = [rid for status, rid in answers if status == 200]
    r = run("audit", "verify", url=url, state=g.state)
    assert r.returncode == 0, r.stderr
    seen = exported_request_ids(url, g.state)
    missing = [rid for rid in ok if not {"auth", "permission"} <= seen.get(rid, set())]
    assert missing == [], (len(missing), missing[:5])


@pytest.mark.parametrize("tamper,expect", [
    ("UPDATE audit SET reason = 'nothing to see' WHERE seq = 3", "3"),
    ("DELETE FROM audit WHERE seq = 4", "4"),
    ("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)", "missing"),
])
def test_audit_tampering_in_postgres_is_detected(pg, url, tamper, expect):
    g = gateway(url)
    g.start()
    try:
        for _ in range(5):
            g.admin().list_sandboxes()
    finally:
        g.stop()
    assert run("audit", "verify", url=url, state=g.state).returncode == 0
    pg.psql(tamper, db=url.rsplit("/", 1)[1])
    r = run("audit", "verify", url=url, state=g.state)
    assert r.returncode == 1, r
    assert expect in r.stderr


def test_a_wrong_password_or_url_is_refused_without_echoing_it(pg, url, tmp_path):
    bad = url.replace(pg.password, "wr0ng-pass-w0rd")
    r = run("admin", "init", url=bad, state=str(tmp_path / "s"))
    assert r.returncode == 1
    assert "password authentication failed" in r.stderr and "wr0ng-pass-w0rd" not in r.stderr + r.stdout
    r = run("audit", "verify", url="mysql://u:wr0ng-pass-w0rd@h/db", state=str(tmp_path / "s"))
    assert r.returncode == 1
    assert "unknown scheme" in r.stderr and "wr0ng-pass-w0rd" not in r.stderr
    p = subprocess.run([FORGEBOX, "serve", "--state-dir", str(tmp_path / "s")], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, FORGEBOX_STORE_URL="mysql://u:wr0ng-pass-w0rd@h/db"))
    assert p.returncode != 0
    assert "store.url" in p.stderr and "wr0ng-pass-w0rd" not in p.stderr + p.stdout


def test_pg_build_of_the_repositories_calls_only_libpq():
    """The SQL repositories are compiled twice, the second time with
    pg_names.h renaming every sql.h function to its libpq version.  A
    function added to sql.h without a rename would make the PostgreSQL
    build call the SQLite implementation with a PostgreSQL connection:
    no object of that build may reference an fb_sql_* symbol."""
    objs = sorted(glob.glob(os.path.join(ROOT, "build", "obj", "pg", "*.o")))
    assert objs, "the PostgreSQL build of the repositories is missing"
    out = subprocess.run(["nm", "-u"] + objs, stdout=subprocess.PIPE, check=True, text=True).stdout
    leaked = sorted({l.split()[-1] for l in out.splitlines() if l.split() and l.split()[-1].startswith("fb_sql_")})
    assert leaked == []
