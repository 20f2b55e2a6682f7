"""Several hosts, end to end (issue 12, items 2-4): two `forgebox node`s
(jail backend) and two gateways in nodes.mode: remote, on loopback, sharing
one real PostgreSQL (pg_fixture.py), every link between them mutual TLS
with certificates from one `forgebox ca`.

What is checked: placement spreads over the nodes (least loaded) and names
the node in the sandbox's JSON; a sandbox created through one gateway is
used through the other (exec streaming, stdin, files, delete); a node
SIGKILLed mid-exec gives the client a clear error naming it, its sandboxes
become lost (410, one audit entry each), new sandboxes land on the
survivor, and restarting the node does not bring them back; the audit
chain verifies after concurrent writes from both gateways and the nodes;
a node presenting a certificate for another name, from another CA, or a
revoked one is refused before it receives a single byte, and audited; a
gateway presenting a certificate of the wrong role is refused by the node.

Timings are short on purpose (nodes.heartbeat_s 1, nodes.down_after_s 10:
shorter, a heartbeat delayed by a loaded CI machine declared a live node
down mid-test):
what is asserted is outcomes, never durations."""
import base64
import concurrent.futures
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import FORGEBOX
from gateway_fixtures import FIRST_PASSWORD, Gateway, SECRETS, forgebox_client
from gateway_fixtures import pg  # noqa: F401 (the fixture, used by name)
from node_fixtures import CA, Node
from pg_fixture import pg_bindir

pytestmark = pytest.mark.skipif(pg_bindir() is None,
                                reason="PostgreSQL is not installed (apt-get install postgresql)")

HEARTBEAT_S, DOWN_AFTER_S = 1, 10
FAST = ["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000",
        f"nodes.heartbeat_s={HEARTBEAT_S}", f"nodes.down_after_s={DOWN_AFTER_S}"]
_count = [0]


def run(*args, url=None, state=None, check=False):
    env = dict(os.environ, FORGEBOX_FIRST_PASSWORD=FIRST_PASSWORD)
    argv = [FORGEBOX, *map(str, args)]
    if state:
        argv += ["--state-dir", state]
    if url:
        argv += ["--store", url]
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


# ---- the organisation's PKI (node_fixtures.CA) ------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The organisation CA, another organisation's, and the certificates
    the tests present: the gateways' (gw-a, gw-b); n3, a node certificate
    (used as a node of the wrong name, and as a gateway of the wrong role);
    a-impostor from the other CA, revoked, and (issued after the
    revocation) valid."""
    t = tmp_path_factory.mktemp("pki")
    ca, other = CA(t), CA(t / "other", org="evil")
    certs = {name: ca.issue("gateway", name) for name in ("gw-a", "gw-b")}
    certs["n3"] = ca.issue("node", "n3", "--ip", "127.0.0.1")
    certs["foreign"] = other.issue("node", "a-impostor", "--ip", "127.0.0.1")
    certs["revoked"] = ca.issue("node", "a-impostor", "--ip", "127.0.0.1")
    ca.revoke(certs["revoked"][2])
    certs["full"] = ca.issue("node", "a-impostor", "--ip", "127.0.0.1")
    return SimpleNamespace(ca=ca, certs=certs)


# ---- the cluster -------------------------------------------------------------------------


NODE_SETTINGS = [f"nodes.heartbeat_s={HEARTBEAT_S}", f"nodes.down_after_s={DOWN_AFTER_S}"]


def node(pki, url, name, gw_state, backend="jail"):
    """A real `forgebox node` (node_fixtures.Node, its own certificate for
    name) on the shared PostgreSQL, with the chain's audit key."""
    n = Node(pki.ca, name, SimpleNamespace(url=url), state=tempfile.mkdtemp(prefix=f"fbx-{name}-"), backend=backend,
             capacity=8, settings=list(NODE_SETTINGS), copy_secrets_from=gw_state)
    return n.start()


def make_gateway(pki, url, who, state=None, first=None, more=(), config=None, env=None):
    """A gateway in nodes.mode remote on the store at url, with who's
    certificate (more: extra settings; env: extra variables); the first of
    a store runs `admin init`, a later one copies first's secrets."""
    crt, key, _ = pki.certs[who]
    settings = FAST + ["nodes.mode=remote", f"nodes.tls_cert={crt}", f"nodes.tls_key={key}",
                       f"nodes.tls_ca={pki.ca.crt}", f"nodes.tls_crl={pki.ca.crl}"] + list(more)
    g = Gateway(settings=settings, state_dir=state, config=config, env=dict(env or {}, FORGEBOX_STORE_URL=url))
    if first is None:
        p = run("admin", "init", url=url, state=g.state)
        assert p.returncode == 0, p.stderr
        g.admin_key = p.stdout.strip().splitlines()[-1]
        SECRETS.add(g.admin_key)
    else:
        os.makedirs(g.state, mode=0o700)
        for name in ("auth.pepper", "audit.key"):
            shutil.copy2(os.path.join(first.state, name), os.path.join(g.state, name))
        g.admin_key = first.admin_key
    return g


class Cluster:
    """nodes: names of jail nodes, or (name, backend) pairs."""

    def __init__(self, pg, pki, nodes=("n1", "n2")):
        _count[0] += 1
        self.pg, self.pki = pg, pki
        self.db = f"nodes{os.getpid()}_{_count[0]}"
        self.url = pg.fresh_database(self.db)
        self.a = make_gateway(pki, self.url, "gw-a")
        self.a.start()
        self.a.admin().list_sandboxes()   # the first audit entries create the audit key
        self.b = make_gateway(pki, self.url, "gw-b", first=self.a)
        self.b.start()
        self.nodes = {}
        for n in nodes:
            name, backend = (n, "jail") if isinstance(n, str) else n
            self.nodes[name] = node(pki, self.url, name, self.a.state, backend=backend)

    def sql(self, q):
        return self.pg.psql(q, db=self.db)

    def close(self):
        if os.environ.get("FBX_NODES_DEBUG"):
            for n in self.nodes.values():
                print(f"---- node {n.name}\n" + n.log()[-4000:])
            print("---- gateway a\n" + self.a.read_log()[-4000:])
        for g in (self.a, self.b):
            try:
                for s in g.admin().list_sandboxes()["sandboxes"]:
                    try:
                        g.admin().delete_sandbox(s["id"])
                    except forgebox_client.ApiError:
                        pass
            except OSError:
                pass
        for n in self.nodes.values():
            n.stop()
        self.a.stop()
        self.b.stop()

    def audit(self, **filters):
        return self.a.admin().audit(limit=1000, **filters)["entries"]


@pytest.fixture
def cluster(pg, pki):
    c = Cluster(pg, pki)
    yield c
    c.close()


def error_of(fn, *a, **kw):
    with pytest.raises(forgebox_client.ApiError) as e:
        fn(*a, **kw)
    return e.value


def wait_for(pred, seconds=30, step=0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


# ---- placement, and any gateway serving any sandbox ------------------------------------------


def test_placement_spreads_over_the_nodes_and_names_them(cluster):
    c = cluster.a.admin()
    made = [c.create_sandbox(backend="jail", memory_mib=128) for _ in range(4)]
    assert sorted(s["node"] for s in made) == ["n1", "n1", "n2", "n2"]
    for s in made:
        assert s["isolation"] == "namespaces"
        assert c.get_sandbox(s["id"])["node"] == s["node"]
        assert c.exec(s["id"], ["cat", "/etc/hostname"])["exit_code"] == 0
    # Records belong to the node that runs them, not to a gateway.
    ids = {n: cluster.sql(f"SELECT id FROM nodes WHERE name = '{n}'") for n in ("n1", "n2")}
    for s in made:
        assert cluster.sql(f"SELECT node_id || ' ' || state FROM sandboxes WHERE id = '{s['id']}'") == \
            f"{ids[s['node']]} running"
    # Either gateway lists all of them.
    assert {s["id"] for s in cluster.b.admin().list_sandboxes()["sandboxes"]} == {s["id"] for s in made}
    # `forgebox doctor` with the gateway's configuration lists the nodes and calls their healthz.
    crt, key, _ = cluster.pki.certs["gw-a"]
    env = dict(os.environ, FORGEBOX_STORE_URL=cluster.url, FORGEBOX_STATE_DIR=cluster.a.state,
               FORGEBOX_NODES_MODE="remote", FORGEBOX_NODES_TLS_CERT=crt, FORGEBOX_NODES_TLS_KEY=key,
               FORGEBOX_NODES_TLS_CA=cluster.pki.ca.crt)
    out = subprocess.run([FORGEBOX, "doctor"], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "  nodes:       nodes.mode remote, 2 registered, 2 answering\n" in out, out
    for n in ("n1", "n2"):
        assert f"  node:        {n} ({cluster.nodes[n].address}, jail, 2/8 sandboxes): up, healthz ok\n" in out, out
    # Egress grants are not available in remote mode: refused, named, audited.
    e = error_of(c.create_sandbox, backend="jail", memory_mib=128, network={"allow": ["pypi.org"]})
    assert (e.status, e.code) == (400, "bad_request") and "remote_network_unsupported" in e.message
    assert any(x["reason"] == "network grants are not available with nodes.mode remote"
               for x in cluster.audit(action="create") if x["outcome"] == "denied")
    created = [e for e in cluster.audit(action="create") if e["event"] == "sandbox" and e["outcome"] == "allowed"]
    assert sorted(e["reason"] for e in created) == sorted(f"namespaces; node {s['node']}" for s in made)


def test_a_sandbox_created_through_one_gateway_is_used_through_the_other(cluster):
    s = cluster.a.admin().create_sandbox(backend="jail", memory_mib=128)
    b = cluster.b.admin()
    assert b.get_sandbox(s["id"])["node"] == s["node"]
    # Streaming, stdin, files, all through gateway B.
    events = list(b.exec_stream(s["id"], ["sh", "-c", "echo one; sleep 0.2; echo two >&2; exit 7"]))
    assert [(e[0], e[1].get("data")) for e in events[:-1]] == [("stdout", "one\n"), ("stderr", "two\n")]
    assert events[-1][0] == "exit" and events[-1][1]["exit_code"] == 7
    assert b.exec(s["id"], ["cat"], stdin="fed through B\n")["stdout"] == "fed through B\n"
    # The exec's timeout and output cap hold as on a local sandbox.
    r = b.exec(s["id"], ["sleep", "30"], timeout_s=1)
    assert r["timed_out"] is True and r["signal"] == 9
    r = b.exec(s["id"], ["sh", "-c", "head -c 9000000 /dev/zero | tr '\\0' x"])
    assert r["truncated"] is True and r["stdout"].startswith("x" * 8388608)
    assert "[forgebox: output truncated: limit of 8388608 bytes reached]" in r["stdout"]
    blob = bytes(range(256)) * 4096   # 1 MiB, every byte value
    b.put_file(s["id"], "data.bin", blob)
    assert cluster.a.admin().get_file(s["id"], "data.bin") == blob
    assert b.exec(s["id"], ["sha256sum", "data.bin"])["stdout"].split()[0] == \
        __import__("hashlib").sha256(blob).hexdigest()
    e = error_of(b.get_file, s["id"], "missing.txt")
    assert e.status in (400, 404)
    # Delete through B: gone everywhere, on the node too.
    b.delete_sandbox(s["id"])
    assert error_of(cluster.a.admin().get_sandbox, s["id"]).status == 404
    assert cluster.sql(f"SELECT state FROM sandboxes WHERE id = '{s['id']}'") == "destroyed"
    assert cluster.nodes[s["node"]].client(cluster.pki.certs["gw-a"]).get(f"/node/v1/sandboxes/{s['id']}")[0] == 404


def test_a_node_killed_mid_exec_loses_its_sandboxes_for_good(cluster):
    a = cluster.a.admin()
    s = a.create_sandbox(backend="jail", memory_mib=128)
    victim, survivor = s["node"], ("n2" if s["node"] == "n1" else "n1")
    stream = iter(a.exec_stream(s["id"], ["sh", "-c", "echo started; sleep 60"]))
    assert next(stream)[1]["data"] == "started\n"
    cluster.nodes[victim].kill()
    rest = list(stream)   # ends, with an error naming the node: no hang
    assert len(rest) == 1 and rest[0][0] == "exit"
    assert rest[0][1]["code"] == "sandbox_ended"
    assert f"node {victim}" in rest[0][1]["error"]
    # Within down_after_s (plus a reaper round) the sandbox is lost: 410
    # through either gateway, one audit entry in all.
    lost = wait_for(lambda: cluster.sql(f"SELECT state FROM sandboxes WHERE id = '{s['id']}'") == "lost")
    assert lost
    for g in (cluster.a, cluster.b):
        e = error_of(g.admin().get_sandbox, s["id"])
        assert (e.status, e.code) == (410, "lost")
    time.sleep(2 * HEARTBEAT_S)   # both gateways' reapers ran at least once more
    entries = [e for e in cluster.audit(action="lost") if e["resource"] == s["id"]]
    assert len(entries) == 1 and entries[0]["event"] == "sandbox"
    assert cluster.sql(f"SELECT state FROM nodes WHERE name = '{victim}'") == "down"
    # New work lands on the survivor.
    t = a.create_sandbox(backend="jail", memory_mib=128)
    assert t["node"] == survivor
    assert a.exec(t["id"], ["echo", "fine"])["stdout"] == "fine\n"
    # The node comes back (same id, same state directory): nothing resurrects.
    cluster.nodes[victim].start()
    assert cluster.sql(f"SELECT state FROM sandboxes WHERE id = '{s['id']}'") == "lost"
    assert error_of(cluster.b.admin().get_sandbox, s["id"]).status == 410
    assert cluster.sql(f"SELECT state FROM nodes WHERE name = '{victim}'") == "up"


def test_the_audit_chain_verifies_after_concurrent_writes_from_both_gateways(cluster):
    def work(g, i):
        c = g.admin()
        s = c.create_sandbox(backend="jail", memory_mib=128)
        out = c.exec(s["id"], ["echo", str(i)])["stdout"]
        c.delete_sandbox(s["id"])
        return out

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda i: work(cluster.a if i % 2 else cluster.b, i), range(12)))
    assert outs == [f"{i}\n" for i in range(12)]
    r = run("audit", "verify", url=cluster.url, state=cluster.a.state)
    assert r.returncode == 0 and "audit chain intact" in r.stdout, r.stdout + r.stderr
    assert cluster.b.admin().audit_verify()["intact"] is True


def test_a_vm_sandbox_goes_to_the_vm_node(pg, pki):
    cl = Cluster(pg, pki, nodes=("n1", ("n3", "vm")))
    try:
        a = cl.a.admin()
        vm = a.create_sandbox(backend="vm", memory_mib=256)
        jail = a.create_sandbox(backend="jail", memory_mib=128)
        assert (vm["node"], jail["node"]) == ("n3", "n1")
        assert vm["isolation"] in ("kvm", "tcg")
        r = cl.b.admin().exec(vm["id"], ["sh", "-c", "echo in a vm; exit 4"])
        assert (r["stdout"], r["exit_code"]) == ("in a vm\n", 4)
        cl.b.admin().delete_sandbox(vm["id"])
        assert cl.sql(f"SELECT state FROM sandboxes WHERE id = '{vm['id']}'") == "destroyed"
    finally:
        cl.close()


# ---- mutual TLS between gateways and nodes ---------------------------------------------------


class Impostor:
    """A TLS server on loopback presenting `cert`, registered in the store as
    node a-impostor (it sorts first, so placement tries it first).  It
    records every byte a client sends after the handshake."""

    def __init__(self, cluster, cert, answer=None):
        self.cluster, self.received, self.handshakes, self.answer = cluster, bytearray(), 0, answer
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(*cluster.pki.certs[cert][:2])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.ctx = ctx
        self.stop = False
        threading.Thread(target=self.serve, daemon=True).start()
        now = int(time.time())
        cluster.sql("INSERT INTO nodes (id, name, address, backend, isolation, capacity, memory_mib, state, "
                    "registered_at, heartbeat_at, heartbeat_unix) VALUES ('nd_impostor0000001', 'a-impostor', "
                    f"'127.0.0.1:{self.port}', 'jail', 'namespaces', 8, 4096, 'up', "
                    f"'2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z', {now + 3600})")

    def serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as t:
                    self.handshakes += 1
                    t.settimeout(3)
                    while True:
                        d = t.recv(65536)
                        if not d:
                            break
                        self.received += d
                        if self.answer and b"\r\n\r\n" in self.received:
                            head, _, body = bytes(self.received).partition(b"\r\n\r\n")
                            length = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
                                      if l.lower().startswith(b"content-length:")]
                            if len(body) >= (length[0] if length else 0):
                                t.sendall(self.answer)
                                break
            except (OSError, ssl.SSLError):
                pass

    def close(self):
        self.stop = True
        self.sock.close()
        self.cluster.sql("DELETE FROM nodes WHERE id = 'nd_impostor0000001'")


@pytest.mark.parametrize("cert,verdict", [
    ("n3", "wrong_name"),            # a valid node certificate, for another name
    ("foreign", "other_ca"),         # the right name, from another organisation's CA
    ("revoked", "revoked"),          # the right name, revoked
])
def test_a_node_with_the_wrong_certificate_gets_no_request(cluster, cert, verdict):
    imp = Impostor(cluster, cert)
    try:
        a = cluster.a.admin()
        s = a.create_sandbox(backend="jail", memory_mib=128)
        # Refused, and the placement went on to a real node.
        assert s["node"] in ("n1", "n2")
        assert imp.handshakes >= 1
        assert bytes(imp.received) == b""   # not one byte of the request
        refusals = [e for e in cluster.audit() if e["event"] == "node.tls" and e["resource"] == "a-impostor"]
        assert refusals and all(e["outcome"] == "denied" for e in refusals)
        assert refusals[-1]["action"] == "server_certificate"
        assert refusals[-1]["reason"].startswith(verdict + ": ")
        if verdict == "wrong_name":
            assert "node a-impostor presented a certificate for n3" in refusals[-1]["reason"]
        # Nothing of it left in the store as live.
        assert cluster.sql("SELECT count(*) FROM sandboxes WHERE node_id = 'nd_impostor0000001' "
                           "AND state IN ('creating', 'running')") == "0"
        a.delete_sandbox(s["id"])
    finally:
        imp.close()


def test_a_full_node_is_skipped_for_the_next(cluster):
    body = b'{"error":{"code":"capacity","message":"the node runs 8 sandboxes, its capacity"}}'
    imp = Impostor(cluster, "full", answer=b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    try:
        a = cluster.a.admin()
        s = a.create_sandbox(backend="jail", memory_mib=128)
        assert s["node"] in ("n1", "n2")
        assert bytes(imp.received).startswith(b"POST /node/v1/sandboxes HTTP/1.1\r\n")
        # The place reserved on the full node was given back.
        assert cluster.sql("SELECT state FROM sandboxes WHERE node_id = 'nd_impostor0000001'") == "failed"
        assert cluster.sql(f"SELECT state FROM sandboxes WHERE id = '{s['id']}'") == "running"
        a.delete_sandbox(s["id"])
    finally:
        imp.close()


def test_a_sandbox_ends_at_its_deadline_on_its_node(cluster):
    a, b = cluster.a.admin(), cluster.b.admin()
    # Whole-second deadlines, and a loaded machine's create through a node can
    # take a second or two: ttl_s=3 could leave less than a second for the
    # exec below (CI saw its 404 once).
    s = a.create_sandbox(backend="jail", memory_mib=128, ttl_s=8)
    assert b.exec(s["id"], ["true"])["exit_code"] == 0     # cached by both gateways
    assert wait_for(lambda: cluster.sql(f"SELECT state FROM sandboxes WHERE id = '{s['id']}'") == "destroyed")
    for c in (a, b):
        assert error_of(c.get_sandbox, s["id"]).status == 404
    # The node ended it and audited that, once; no gateway destroyed it.
    entries = [e for e in cluster.audit() if e["resource"] == s["id"] and e["action"] in ("expire", "destroy")]
    assert [(e["event"], e["action"], e["outcome"]) for e in entries] == [("node", "expire", "allowed")]


def test_a_gateway_that_restarts_leaves_the_sandboxes_running(cluster):
    s = cluster.a.admin().create_sandbox(backend="jail", memory_mib=128)
    cluster.a.admin().exec(s["id"], ["sh", "-c", "echo kept > kept.txt"])
    assert cluster.a.stop() == 0
    # Still running on its node, served by the other gateway.
    assert cluster.sql(f"SELECT state FROM sandboxes WHERE id = '{s['id']}'") == "running"
    assert cluster.b.admin().exec(s["id"], ["cat", "kept.txt"])["stdout"] == "kept\n"
    cluster.a.start()
    assert cluster.a.admin().exec(s["id"], ["cat", "kept.txt"])["stdout"] == "kept\n"
    assert not [e for e in cluster.audit(action="destroy") if e["resource"] == s["id"]]


def test_a_gateway_with_a_certificate_of_the_wrong_role_is_refused_by_the_node(cluster):
    # A node certificate presented as a gateway's client certificate.
    g = make_gateway(cluster.pki, cluster.url, "n3", first=cluster.a)
    g.start()
    try:
        e = error_of(g.admin().create_sandbox, backend="jail", memory_mib=128)
        assert e.status == 503
        refusals = [x for x in cluster.audit() if x["event"] == "node.tls" and x["outcome"] == "denied"
                    and x["resource"] in ("n1", "n2")]
        assert refusals and "wrong_role" in refusals[-1]["reason"]
        assert cluster.sql("SELECT count(*) FROM sandboxes WHERE state IN ('creating', 'running')") == "0"
    finally:
        g.stop()


def test_a_node_revoked_while_its_connection_is_kept_alive_gets_no_more_requests(cluster):
    """The gateway remembers accepted node chains (src/node/verdicts.h) so
    that a kept-alive connection is not verified on every request; a
    revocation (a new CRL file) must still refuse the very next request."""
    a = cluster.a.admin()
    s = a.create_sandbox(backend="jail", memory_mib=128)
    for _ in range(3):   # the connection to the node is warm, its chain remembered
        assert a.exec(s["id"], ["true"])["exit_code"] == 0
    victim = cluster.nodes[s["node"]]
    cluster.pki.ca.revoke(victim.serial)
    e = error_of(a.exec, s["id"], ["true"])
    assert e.status >= 400
    refusals = [x for x in cluster.audit() if x["event"] == "node.tls" and x["resource"] == victim.name]
    assert refusals and refusals[-1]["action"] == "server_certificate" and refusals[-1]["outcome"] == "denied"
    assert refusals[-1]["reason"].startswith("revoked: ")


# ---- tasks and E2B through remote mode ----------------------------------------------------


def test_a_tasks_tools_run_in_a_sandbox_on_a_node(pg, pki):
    """A task on a gateway in nodes.mode remote: the engine's sandbox is
    placed on a node like any other, its bash tool runs there (one exec
    through the node), and the task's end deletes it on the node."""
    from task_helpers import PROVIDER_KEY, WRONG_KEY, MODEL, call, config_text, events, results, say, tools
    from task_helpers import FakeLLM, wait_state
    db = f"nodes_task{os.getpid()}"
    url = pg.fresh_database(db)
    with FakeLLM(key=PROVIDER_KEY, models={MODEL}) as fake:
        g = make_gateway(pki, url, "gw-a", config=config_text(fake.url),
                         env={"FB_TEST_PROVIDER_KEY": PROVIDER_KEY, "FB_TEST_WRONG_KEY": WRONG_KEY})
        g.start()
        n1 = None
        try:
            admin = g.admin()
            admin.list_sandboxes()   # the first audit entries create the audit key the node copies
            n1 = node(pki, url, "n1", g.state)
            team = admin.create_team("remote-tasks")
            u = admin.create_user(username="remote-dev", password=FIRST_PASSWORD, team_id=team["id"],
                                  role="developer")
            dev = g.client(admin.create_key(name="dev", user_id=u["id"], scopes=[
                "tasks:create", "tasks:read", "sandboxes:create", "sandboxes:read", "sandboxes:exec",
                "tools:shell"])["key"])
            with fake.lock:
                fake.script = [tools(call("bash", {"command": "echo on-node > a.txt; cat a.txt; hostname"}, "c1")),
                               say("done")]
            t = dev.create_task("run it", provider="fake", model=MODEL, backend="jail", tools=["bash"])
            t = wait_state(dev, t["id"], {"succeeded", "failed", "cancelled", "budget_exceeded"}, timeout=60)
            assert t["state"] == "succeeded", t
            assert t["result"] == "done"
            r = results(events(dev, t["id"]))["c1"]
            assert r["is_error"] is False and r["output"].startswith("on-node\n"), r
            # The sandbox was the node's: created there (audited with its
            # name), its record owned by the node's id, and ended there.
            created = [e for e in admin.audit(limit=1000)["entries"]
                       if e["event"] == "sandbox" and e["action"] == "create" and e["outcome"] == "allowed"]
            assert [e["reason"] for e in created] == [f"namespaces; node n1; task {t['id']}"]
            sid = created[0]["resource"]
            assert pg.psql(f"SELECT node_id FROM sandboxes WHERE id = '{sid}'", db=db) == n1.id
            # A succeeded task keeps its sandbox (tasks.ttl_s) - on the node,
            # whose deadline followed the record's (PATCH), not the create's.
            st, on_node, _ = n1.client(pki.certs["gw-a"]).get(f"/node/v1/sandboxes/{sid}")
            assert st == 200 and on_node["state"] == "running"
            rec = pg.psql(f"SELECT state, expires_at FROM sandboxes WHERE id = '{sid}'", db=db).split("|")
            assert rec[0] == "running" and on_node["expires_at"][:19] == rec[1][:19], (on_node, rec)
        finally:
            if n1:
                n1.stop()
            g.stop()


def test_the_e2b_sdk_drives_a_sandbox_on_a_node(pg, pki):
    """The real E2B SDK (tests/compat/e2b, scenario `lifecycle`) against a
    gateway in nodes.mode remote: commands (streamed, stdin, background,
    kill, reconnect), files and the timeout all reach the node's sandbox."""
    import test_e2b_compat as e2b
    from gateway_fixtures import free_port
    e2b._npm_ci()
    db = f"nodes_e2b{os.getpid()}"
    url = pg.fresh_database(db)
    port = free_port()
    g = make_gateway(pki, url, "gw-a", more=[f"e2b.listen=127.0.0.1:{port}"])
    g.start()
    n1 = None
    try:
        admin = g.admin()
        admin.list_sandboxes()   # the first audit entries create the audit key the node copies
        n1 = node(pki, url, "n1", g.state)
        team = admin.create_team("remote-e2b")
        u = admin.create_user(username="remote-e2b", password=FIRST_PASSWORD, team_id=team["id"], role="developer")
        g.e2b_url = f"http://127.0.0.1:{port}"
        r = e2b.scenario(g, "lifecycle", admin.create_key(name="e2b", scopes=e2b.SCOPES, user_id=u["id"])["key"])
        assert r["info"]["state"] == "running"
        assert r["run"] == {"exitCode": 0, "stdout": "one\nthree\n", "stderr": "two\n",
                            "streamedOut": "one\nthree\n", "streamedErr": "two\n"}
        assert r["exit"]["exitCode"] == 7 and r["exit"]["stderr"] == "failing\n"
        assert r["envs"] == "sandbox-env command-env\n/tmp\n"
        assert r["stdin"] == "to stdin\n"
        assert r["bgListed"] is True and r["bgKilled"] is True and r["bgStdout"] == "started\n"
        assert r["connected"] == {"pid": True, "stdout": "late\n"}
        assert r["read"] == "hello from e2b\n" and r["readViaCommand"] == "hello from e2b\n"
        assert r["bytes"] == [0, 1, 255]
        assert 295 <= r["lifetimeAfterSetTimeoutS"] <= 300
        assert r["running"] is True and r["runningAfterKill"] is False
        # It was the node's sandbox, and the kill deleted it there.
        assert pg.psql(f"SELECT node_id, state FROM sandboxes WHERE id = '{r['id']}'", db=db) == f"{n1.id}|destroyed"
        st, _, _ = n1.client(pki.certs["gw-a"]).get(f"/node/v1/sandboxes/{r['id']}")
        assert st == 404
    finally:
        if n1:
            n1.stop()
        g.stop()


class OldNode:
    """A node from before `"stream"` on POST .../execs (it refuses unknown
    fields): a small HTTPS server with a valid node certificate for
    a-impostor, registered in the store, that runs nothing - each exec
    answers `echo`'s arguments.  It records every request line."""

    def __init__(self, cluster):
        import http.server
        self.cluster, self.requests = cluster, []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def answer(self, status, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def do_POST(self):
                b = self.body()
                outer.requests.append(("POST", self.path, b))
                if self.path == "/node/v1/sandboxes":
                    cluster.sql(f"UPDATE sandboxes SET state = 'running' WHERE id = '{b['id']}'")
                    return self.answer(201, {"id": b["id"], "isolation": "namespaces", "node": "a-impostor",
                                             "created_at": b["expires_at"], "expires_at": b["expires_at"]})
                if "stream" in b:
                    return self.answer(400, {"error": {"code": "bad_request", "message": 'unknown field "stream"'}})
                outer.argv = b["argv"]
                return self.answer(201, {"exec": "1"})

            def do_GET(self):
                outer.requests.append(("GET", self.path, None))
                out = (" ".join(outer.argv[1:]) + "\n").encode()
                lines = [{"kind": "stdout", "pos": 0, "next": 1, "data": base64.b64encode(out).decode()},
                         {"kind": "exit", "pos": 1, "next": 2, "dropped": 0,
                          "result": {"exit_code": 0, "signal": 0, "timed_out": False, "oom": False,
                                     "truncated": False, "duration_ms": 1, "started": True, "error": "",
                                     "message": ""}}]
                self.answer(200, "".join(json.dumps(l) + "\n" for l in lines).encode(), "application/x-ndjson")

            def do_DELETE(self):
                outer.requests.append(("DELETE", self.path, None))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(*cluster.pki.certs["full"][:2])
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        now = int(time.time())
        cluster.sql("INSERT INTO nodes (id, name, address, backend, isolation, capacity, memory_mib, state, "
                    "registered_at, heartbeat_at, heartbeat_unix) VALUES ('nd_impostor0000001', 'a-impostor', "
                    f"'127.0.0.1:{self.port}', 'jail', 'namespaces', 8, 4096, 'up', "
                    f"'2026-01-01T00:00:00.000000000Z', '2026-01-01T00:00:00.000000000Z', {now + 3600})")

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.cluster.sql("DELETE FROM nodes WHERE id = 'nd_impostor0000001'")


def test_a_node_that_does_not_know_stream_gets_two_calls(cluster):
    """Rolling upgrades: a gateway that streams execs meets an older node
    that refuses "stream" as an unknown field; the exec still runs (start,
    then GET .../events), and that sandbox's later execs skip the refused
    attempt."""
    old = OldNode(cluster)
    try:
        a = cluster.a.admin()
        s = a.create_sandbox(backend="jail", memory_mib=128)
        assert s["node"] == "a-impostor"
        r = a.exec(s["id"], ["echo", "from", "an", "old", "node"])
        assert r["exit_code"] == 0 and r["stdout"] == "from an old node\n"
        r = a.exec(s["id"], ["echo", "again"])
        assert r["exit_code"] == 0 and r["stdout"] == "again\n"
        ex = f"/node/v1/sandboxes/{s['id']}/execs"
        calls = [(m, p, b.get("stream") if b else None) for m, p, b in old.requests if p.startswith(ex)]
        assert calls == [("POST", ex, True), ("POST", ex, None), ("GET", ex + "/1/events?from=0", None),
                         ("POST", ex, None), ("GET", ex + "/1/events?from=0", None)]
        a.delete_sandbox(s["id"])
    finally:
        old.close()
