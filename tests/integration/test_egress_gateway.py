"""Network grants through the gateway: POST /v1/sandboxes {"network": {"allow": [...]}}.

A real `forgebox serve` with forgebox.yaml (FORGEBOX_CONFIG) listing the
ceiling (network.allow), a denied name (network.deny), test names mapped to
the host's loopback (network.hosts), the exact loopback address:ports the
proxy may reach (network.allow_private) and a DNS server of our own on
loopback (network.dns_servers).  The "internet" is Python servers on
127.0.0.1 (HTTP, HTTPS with a throwaway CA, a DNS responder whose answer
changes, a TCP server that holds connections open); nothing here connects
anywhere but loopback.  Sandboxes reach them only through the gateway's
egress proxy, and every connection is an `egress.connection` audit entry.
"""
import http.server
import os
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import time

import pytest

from gateway_fixtures import Gateway, forgebox_client
from test_egress_sandbox import FETCH

PAGE = "hello from the simulated internet\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    tag = "page"

    def do_GET(self):
        body = (PAGE + f"{self.tag} path={self.path} host={self.headers.get('Host')}\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hits += 1

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    hits = 0


def _serve(srv):
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class _Dns(threading.Thread):
    """A UDP DNS responder on loopback: rebind.example's A answer is
    127.0.0.1 for the first query and 127.0.0.2 after; AAAA has none."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.a_queries = 0

    def run(self):
        while True:
            try:
                q, peer = self.sock.recvfrom(512)
            except OSError:
                return
            if len(q) < 12:
                continue
            i, labels = 12, []
            while i < len(q) and q[i]:
                labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace").lower())
                i += 1 + q[i]
            qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
            question = q[12:i + 5]
            answers = b""
            if ".".join(labels) == "rebind.example" and qtype == 1:
                self.a_queries += 1
                addr = bytes([127, 0, 0, 1 if self.a_queries == 1 else 2])
                answers = struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + addr
            hdr = q[:2] + struct.pack(">HHHHH", 0x8180, 1, 1 if answers else 0, 0, 0)
            self.sock.sendto(hdr + question + answers, peer)


class _Hold(threading.Thread):
    """A TCP server that keeps every connection open and notes when the
    other side closes it."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.opened = 0
        self.closed = 0

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.opened += 1
            threading.Thread(target=self._wait, args=(c,), daemon=True).start()

    def _wait(self, c):
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        self.closed += 1
        c.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("egress-gw")
    web = _serve(_Server(("127.0.0.1", 0), _Handler))
    port = web.server_address[1]
    wrong_handler = type("Wrong", (_Handler,), {"tag": "WRONG"})
    try:
        wrong = _serve(_Server(("127.0.0.2", port), wrong_handler))
    except OSError:
        wrong = None
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=tls.example",
                    "-addext", "subjectAltName=DNS:tls.example"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tls = _Server(("127.0.0.1", 0), type("Tls", (_Handler,), {"tag": "tls"}))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    _serve(tls)
    tls_port = tls.server_address[1]
    dns = _Dns()
    dns.start()
    hold = _Hold()
    hold.start()
    cfg = d / "forgebox.yaml"
    names = ["test.example", "a.test.example", "other.example", "denied.example", "tls.example",
             "hold.example"]
    cfg.write_text(
        "network:\n"
        f'  allow: ["*.test.example:{port}", "test.example:{port}", "other.example:{port}", '
        f'"rebind.example:{port}", "denied.example:{port}", "tls.example:{tls_port}", '
        f'"hold.example:{hold.port}", "blocked.example:{port + 1}"]\n'
        '  deny: ["denied.example"]\n'
        "  hosts:\n" + "".join(f"    {n}: [127.0.0.1]\n" for n in names + ["blocked.example"]) +
        f'  allow_private: ["127.0.0.1:{port}", "127.0.0.1:{tls_port}", "127.0.0.1:{hold.port}"]\n'
        f'  dns_servers: ["127.0.0.1:{dns.port}"]\n')
    yield {"port": port, "web": web, "wrong": wrong, "tls_port": tls_port, "ca": cert.read_bytes(),
           "dns": dns, "hold": hold, "config": str(cfg)}
    web.shutdown()
    tls.shutdown()
    if wrong:
        wrong.shutdown()
    dns.sock.close()
    hold.sock.close()


SETTINGS = ["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000",
            "quotas.max_sandboxes_per_team=60", "quotas.max_memory_mib_per_team=100000",
            "quotas.max_vcpus_per_team=60"]


def _start(settings, config=None):
    old = os.environ.pop("FORGEBOX_CONFIG", None)
    if config:
        os.environ["FORGEBOX_CONFIG"] = config
    try:
        g = Gateway(settings=settings)
        g.init()
        g.start()
    finally:
        os.environ.pop("FORGEBOX_CONFIG", None)
        if old is not None:
            os.environ["FORGEBOX_CONFIG"] = old
    return g


@pytest.fixture(scope="module")
def gw(net):
    g = _start(SETTINGS, net["config"])
    yield g
    assert g.stop() == 0, g.read_log()


@pytest.fixture
def admin(gw):
    return gw.admin()


@pytest.fixture
def sandboxes(admin):
    made = []

    def _make(allow=None, client=None, **kw):
        body = dict(kw)
        if allow is not None:
            body["network"] = {"allow": allow}
        sb = (client or admin).create_sandbox(**body)
        made.append(sb["id"])
        return sb
    yield _make
    for sid in made:
        try:
            admin.delete_sandbox(sid)
        except forgebox_client.ApiError:
            pass




def fetch(client, sid, url, timeout_s=60):
    r = client.exec(sid, ["python3", "-c", FETCH, url], timeout_s=timeout_s)
    assert r["exit_code"] == 0, r
    return r["stdout"]


def all_entries(client, after=0, **filters):
    """Every matching audit entry with seq > after, page by page."""
    out = []
    while True:
        page = client.audit(limit=1000, after_seq=after, **filters)["entries"]
        out += page
        if len(page) < 1000:
            return out
        after = page[-1]["seq"]


def egress_entries(client, sid, want=1, timeout=10):
    """The egress.connection entries of sandbox sid (written by the
    gateway's drainer thread, so they may trail the response a little)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [e for e in all_entries(client, action="connect")
               if e["event"] == "egress.connection" and e["resource"] == sid]
        if len(got) >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def fields(entry):
    """The key=value items before the reason's ': '."""
    head = entry["reason"].split(": ", 1)[0]
    return dict(item.split("=", 1) for item in head.split())


def test_grant_through_the_api_reaches_the_granted_host_and_is_audited(gw, admin, sandboxes, net):
    port = net["port"]
    sb = sandboxes([f"test.example:{port}"])
    assert sb["network"] == {"allow": [f"test.example:{port}"]}, sb
    assert "task_id" not in sb, sb
    assert admin.get_sandbox(sb["id"])["network"] == {"allow": [f"test.example:{port}"]}
    out = fetch(admin, sb["id"], f"http://test.example:{port}/via/api")
    assert out == f"STATUS 200\n{PAGE}page path=/via/api host=test.example:{port}\n"
    entries = egress_entries(admin, sb["id"])
    assert len(entries) == 1, entries
    e = entries[0]
    assert (e["outcome"], e["action"]) == ("allowed", "connect"), e
    f = fields(e)
    assert f["outcome"] == "allowed" and f["host"] == "test.example" and f["port"] == str(port), e
    assert f["address"] == f"127.0.0.1:{port}" and f["team"] == sb["team_id"], e
    assert int(f["down"]) > len(PAGE) and int(f["up"]) > 0, e
    assert e["reason"].endswith(f": allowed by grant entry 'test.example:{port}'"), e
    assert e["actor"].startswith("key:"), e
    # The creation's own entry names the grant.
    created = [x for x in admin.audit(action="create", limit=1000)["entries"]
               if x["event"] == "sandbox" and x["resource"] == sb["id"]]
    assert created and created[0]["reason"].endswith(f"; network grant: test.example:{port}"), created


def test_https_through_connect_verifies_against_the_test_ca(admin, sandboxes, net):
    tls_port = net["tls_port"]
    sb = sandboxes([f"tls.example:{tls_port}"])
    admin.put_file(sb["id"], "/workspace/ca.pem", net["ca"])
    code = f"""
import ssl, urllib.request
ctx = ssl.create_default_context(cafile="/workspace/ca.pem")
r = urllib.request.urlopen("https://tls.example:{tls_port}/secure", context=ctx, timeout=20)
print(r.status, r.read().decode().splitlines()[-1])
"""
    r = admin.exec(sb["id"], ["python3", "-c", code], timeout_s=60)
    assert r["exit_code"] == 0, r
    assert r["stdout"] == f"200 tls path=/secure host=tls.example:{tls_port}\n", r
    f = fields(egress_entries(admin, sb["id"])[0])
    assert (f["outcome"], f["host"], f["address"]) == ("allowed", "tls.example", f"127.0.0.1:{tls_port}")


def test_a_changing_dns_answer_connects_to_the_checked_address_only(admin, sandboxes, net):
    if net["wrong"] is None:
        pytest.skip("cannot bind 127.0.0.2 here")
    port, dns = net["port"], net["dns"]
    sb = sandboxes([f"rebind.example:{port}"])
    before = dns.a_queries
    wrong_hits = net["wrong"].hits
    first = fetch(admin, sb["id"], f"http://rebind.example:{port}/one")
    # One lookup per connection: the answer checked is the one connected to.
    assert dns.a_queries - before == 1, dns.a_queries
    assert first == f"STATUS 200\n{PAGE}page path=/one host=rebind.example:{port}\n"
    second = fetch(admin, sb["id"], f"http://rebind.example:{port}/two")
    assert second.startswith("STATUS 403\nForgeBox egress policy: host rebind.example"), second
    assert "127.0.0.2" in second and "loopback" in second, second
    assert net["wrong"].hits == wrong_hits  # nothing ever reached the unchecked address
    entries = egress_entries(admin, sb["id"], want=2)
    got = [(e["outcome"], fields(e)["outcome"], fields(e)["address"]) for e in entries]
    assert got == [("allowed", "allowed", f"127.0.0.1:{port}"), ("denied", "denied", f"127.0.0.2:{port}")], got


def test_missing_network_internet_scope_is_403_and_audited(gw, admin, sandboxes, net):
    k = admin.create_key(name="no-net", scopes=["sandboxes:create", "sandboxes:read", "sandboxes:exec"])
    c = gw.client(k["key"])
    with pytest.raises(forgebox_client.ApiError) as ei:
        sandboxes([f"test.example:{net['port']}"], client=c)
    assert ei.value.status == 403, ei.value
    denied = [e for e in admin.audit(outcome="denied", limit=1000)["entries"]
              if e["event"] == "permission" and e["actor"] == f"key:{k['id']}"]
    assert denied and "network:internet" in denied[-1]["reason"], denied
    # Without a grant the same key creates a sandbox with no network.
    sb = sandboxes(None, client=c)
    assert sb["network"] is None, sb


@pytest.mark.parametrize("entry,message", [
    ("outside.example", "network grant entry 'outside.example' is outside network.allow"),
    ("test.example", "network grant entry 'test.example' is outside network.allow"),  # ports 80/443
    ("denied.example:{port}", "network grant entry 'denied.example:{port}' is inside network.deny"),
])
def test_grant_outside_the_ceiling_or_inside_deny_is_403_naming_the_entry(admin, sandboxes, net, entry,
                                                                           message):
    entry, message = entry.format(port=net["port"]), message.format(port=net["port"])
    with pytest.raises(forgebox_client.ApiError) as ei:
        sandboxes([f"test.example:{net['port']}", entry])
    assert (ei.value.status, ei.value.message) == (403, message), ei.value
    refused = [e for e in admin.audit(action="create", outcome="denied", limit=1000)["entries"]
               if e["event"] == "sandbox" and e["reason"] == message]
    assert refused, "the refusal is audited"


@pytest.mark.parametrize("network,message", [
    ({"allow": ["127.0.0.1"]}, "\"network.allow\"[0]: network entry '127.0.0.1' is an IP address; "
                               "name hosts, never addresses"),
    ({"allow": ["ok.example", "*"]}, "\"network.allow\"[1]: network entry '*': '*' alone would allow "
                                     "everything; list domains"),
    ({"allow": ["http://pypi.org"]}, "\"network.allow\"[0]: network entry 'http://pypi.org' is a URL; "
                                     "give a host name (and :port)"),
    ({"allow": [7]}, "\"network.allow\"[0] must be a string"),
    ({"allow": "pypi.org"}, "\"network\" must be an object with exactly one key, \"allow\": an array of "
                            "host names"),
    ({"allow": [], "deny": []}, "\"network\" must be an object with exactly one key, \"allow\": an array "
                                "of host names"),
    ([], "\"network\" must be an object {\"allow\": [host, ...]}"),
])
def test_grammar_errors_are_400_naming_the_entry(admin, network, message):
    with pytest.raises(forgebox_client.ApiError) as ei:
        admin.create_sandbox(network=network)
    assert (ei.value.status, ei.value.message) == (400, message), ei.value


def test_an_empty_ceiling_grants_nothing(net):
    g = _start(SETTINGS)  # no forgebox.yaml: network.allow is empty
    try:
        a = g.admin()
        with pytest.raises(forgebox_client.ApiError) as ei:
            a.create_sandbox(network={"allow": [f"test.example:{net['port']}"]})
        assert ei.value.status == 403, ei.value
        assert "network:internet" in ei.value.message, ei.value
        sb = a.create_sandbox()
        assert sb["network"] is None
        a.delete_sandbox(sb["id"])
    finally:
        assert g.stop() == 0, g.read_log()


def test_denied_host_and_address_are_audited_with_their_outcome(admin, sandboxes, net):
    port = net["port"]
    sb = sandboxes([f"test.example:{port}", f"blocked.example:{port + 1}"])
    out = fetch(admin, sb["id"], f"http://other.example:{port}/")
    assert out == (f"STATUS 403\nForgeBox egress policy: host other.example port {port} refused: "
                   "not in this sandbox's allowlist\n"), out
    out = fetch(admin, sb["id"], f"http://blocked.example:{port + 1}/")
    assert out.startswith("STATUS 403\nForgeBox egress policy: host blocked.example"), out
    entries = egress_entries(admin, sb["id"], want=2)
    got = [(e["outcome"], fields(e)["outcome"], fields(e)["host"], fields(e)["address"]) for e in entries]
    assert got == [("denied", "denied", "other.example", "-"),
                   ("denied", "denied", "blocked.example", f"127.0.0.1:{port + 1}")], got
    assert entries[0]["reason"].endswith(": not in this sandbox's allowlist"), entries[0]
    assert "loopback" in entries[1]["reason"], entries[1]


def test_one_sandbox_cannot_use_another_sandboxs_grant(admin, sandboxes, net):
    port = net["port"]
    a = sandboxes([f"test.example:{port}"])
    b = sandboxes([f"other.example:{port}"])
    assert fetch(admin, a["id"], f"http://test.example:{port}/").startswith("STATUS 200\n")
    assert fetch(admin, b["id"], f"http://other.example:{port}/").startswith("STATUS 200\n")
    assert fetch(admin, a["id"], f"http://other.example:{port}/").startswith("STATUS 403\n")
    assert fetch(admin, b["id"], f"http://test.example:{port}/").startswith("STATUS 403\n")
    hosts_a = [fields(e)["host"] for e in egress_entries(admin, a["id"], want=2)]
    hosts_b = [fields(e)["host"] for e in egress_entries(admin, b["id"], want=2)]
    assert (hosts_a, hosts_b) == (["test.example", "other.example"], ["other.example", "test.example"])


NO_NET = """
import os, socket
print("ifaces", sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
print("proxyvars", sorted(k for k in os.environ if "proxy" in k.lower()))
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(); print("tcp ok")
except OSError as e:
    print("tcp", e.errno)
"""


def test_a_sandbox_without_grant_has_no_network_while_another_has_one(admin, sandboxes, net):
    port = net["port"]
    granted = sandboxes([f"test.example:{port}"])
    plain = sandboxes()
    assert plain["network"] is None, plain
    r = admin.exec(plain["id"], ["python3", "-c", NO_NET])
    assert r["stdout"] == "ifaces ['lo']\nproxyvars []\ntcp 1\n", r
    r = admin.exec(granted["id"], ["python3", "-c", NO_NET])
    assert r["stdout"].startswith("ifaces ['lo']\nproxyvars ['ALL_PROXY', "), r
    assert r["stdout"].endswith("tcp ok\n"), r
    # Nothing listens on the plain sandbox's 127.0.0.1:3128.
    r = admin.exec(plain["id"], ["sh", "-c", "cat /proc/net/tcp | wc -l"])
    assert r["stdout"] == "1\n", r


FLOOD = """
import socket, sys
port = int(sys.argv[1])
held, answers = [], {}
for i in range(150):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
        s.sendall(b"CONNECT test.example:%d HTTP/1.1\\r\\n\\r\\n" % port)
        held.append(s)
    except OSError:
        answers["refused"] = answers.get("refused", 0) + 1
for s in held:
    try:
        line = s.recv(4096).split(b"\\r\\n")[0].decode() or "closed"
    except OSError:
        line = "closed"
    answers[line] = answers.get(line, 0) + 1
print(sorted(answers.items()))
"""


def test_a_flood_of_connects_is_limited_and_the_proxy_and_gateway_survive(gw, admin, sandboxes, net):
    port = net["port"]
    sb = sandboxes([f"test.example:{port}"])
    r = admin.exec(sb["id"], ["python3", "-c", FLOOD, str(port)], timeout_s=120)
    assert r["exit_code"] == 0, r
    answers = dict(eval(r["stdout"]))
    assert answers.get("HTTP/1.1 200 Connection established", 0) >= 1, answers
    assert answers.get("HTTP/1.1 429 Too Many Requests", 0) + answers.get("closed", 0) >= 1, answers
    assert gw.client().healthz()["status"] == "ok"
    time.sleep(0.5)
    assert fetch(admin, sb["id"], f"http://test.example:{port}/after").startswith("STATUS 200\n")
    entries = egress_entries(admin, sb["id"], want=151, timeout=20)
    outcomes = {fields(e)["outcome"] for e in entries}
    assert "limited" in outcomes and "allowed" in outcomes, outcomes
    limited = [e for e in entries if fields(e)["outcome"] == "limited"]
    assert all(e["outcome"] == "denied" for e in limited), limited[:2]


HOLD = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
s.sendall(b"CONNECT hold.example:%s HTTP/1.1\\r\\n\\r\\n" % sys.argv[1].encode())
print(s.recv(4096).split(b"\\r\\n")[0].decode(), flush=True)
time.sleep(120)
"""


def test_deleting_a_sandbox_closes_its_open_tunnels(admin, net):
    hold = net["hold"]
    sb = admin.create_sandbox(network={"allow": [f"hold.example:{hold.port}"]})
    opened, closed = hold.opened, hold.closed
    stream = admin.exec_stream(sb["id"], ["python3", "-c", HOLD, str(hold.port)], timeout_s=200)
    try:
        for ev in stream:
            if ev.event == "stdout":
                break
        deadline = time.monotonic() + 10
        while hold.opened == opened and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hold.opened == opened + 1
        time.sleep(0.3)
        assert hold.closed == closed, "the tunnel is open while the sandbox lives"
        admin.delete_sandbox(sb["id"])
        deadline = time.monotonic() + 10
        while hold.closed == closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hold.closed == closed + 1, "deleting the sandbox closed the tunnel"
    finally:
        stream.close()
    e = egress_entries(admin, sb["id"])[0]
    assert (e["outcome"], fields(e)["host"]) == ("allowed", "hold.example"), e


BURST = """
import socket, sys
for i in range(int(sys.argv[1])):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(b"x\\r\\n\\r\\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 400 "), i
    s.close()
print("done")
"""


def test_every_connection_is_audited_or_counted_as_dropped(admin, sandboxes, net):
    # A burst of connections faster than the log's fsyncs: each one is an
    # entry, or (when the drainer's queue overflowed) counted in a summary
    # entry; none is lost silently.
    n = 1500
    marker = all_entries(admin)[-1]["seq"]
    sb = sandboxes([f"test.example:{net['port']}"])
    r = admin.exec(sb["id"], ["python3", "-c", BURST, str(n)], timeout_s=300)
    assert r["stdout"] == "done\n", r
    deadline = time.monotonic() + 120
    while True:
        mine = [e for e in all_entries(admin, after=marker, action="connect")
                if e["event"] == "egress.connection" and e["resource"] == sb["id"]]
        tallies = [fields(e) for e in mine if "dropped" in fields(e)]
        single = [e for e in mine if "dropped" not in fields(e)]
        dropped = sum(int(t["dropped"]) for t in tallies)
        if len(single) + dropped >= n or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(single) + dropped == n, (len(single), dropped)
    assert all(fields(e)["outcome"] == "failed" and e["outcome"] == "error" for e in single), single[:2]
    assert all(fields(e)["status"] == "400" for e in single), single[:2]
    # A tally says what the dropped connections were, under the sandbox's id.
    for t in tallies:
        assert int(t["failed"]) == int(t["dropped"]) and t["allowed"] == "0", t
        assert t["team"] == sb["team_id"], t


def test_vm_grant_through_the_api(admin, sandboxes, net):
    port = net["port"]
    sb = sandboxes([f"test.example:{port}"], backend="vm")
    # Python under TCG on a loaded host (the sanitized suite) is slow to start.
    out = fetch(admin, sb["id"], f"http://test.example:{port}/vm", timeout_s=300)
    assert out == f"STATUS 200\n{PAGE}page path=/vm host=test.example:{port}\n"
    assert fields(egress_entries(admin, sb["id"])[0])["outcome"] == "allowed"


def test_audit_chain_verifies_after_egress_entries(admin):
    assert admin.audit_verify()["intact"] is True


