"""Black-box tests of the egress proxy (src/egress) through build/fb-egress-probe.

The "internet" is simulated on this machine only: HTTP and echo servers on
127.0.0.1 started here, names mapped to loopback addresses with --host
(network.hosts), and loopback address:port pairs let through with
--allow-private.  DNS is off unless a test starts its own DNS server on
127.0.0.1; nothing here sends a packet anywhere else.

Each sandbox is a Unix socket the probe prints; a client talks HTTP to it
exactly as a sandbox's bridged connection would.  The probe prints one
audit event per connection as a JSON line, and the tests check them.
"""
import json
import os
import queue
import shutil
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import FORGEBOX

PROBE = os.path.join(os.path.dirname(FORGEBOX), "fb-egress-probe")


# ---- the simulated internet ------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    seen_hosts = []

    def do_GET(self):
        Handler.seen_hosts.append(self.headers.get("Host"))
        if self.path.startswith("/size/"):
            body = b"x" * int(self.path[6:])
        else:
            body = b"hello from " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


class ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def servers():
    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    http.daemon_threads = True
    echo = ThreadingTCP(("127.0.0.1", 0), Echo)
    for s in (http, echo):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield {"http": http.server_address[1], "echo": echo.server_address[1]}
    http.shutdown()
    echo.shutdown()


# ---- the proxy under test ----------------------------------------------------------

class Probe:
    def __init__(self, args):
        self.dir = tempfile.mkdtemp(prefix="fbx-egress-")
        self.proc = subprocess.Popen([PROBE, "--dir", self.dir] + args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.early = []  # audit events that arrived while a command waited for its answer
        threading.Thread(target=self._read, daemon=True).start()
        self.paths, self.add_errors = {}, {}
        while True:
            msg = self.next(10)
            if "listen" in msg:
                self.paths[msg["listen"]] = msg["path"]
            elif "add_error" in msg:
                self.add_errors[msg["add_error"]] = msg
            elif msg.get("ready"):
                break

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, timeout=10):
        msg = self.lines.get(timeout=timeout)
        assert msg is not None, "probe exited: " + self.proc.stderr.read()
        return msg

    def audit(self, timeout=10):
        """The next audit event (other lines are skipped)."""
        if self.early:
            return self.early.pop(0)
        while True:
            msg = self.next(timeout)
            if "audit" in msg:
                return msg["audit"]

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        while True:
            msg = self.next()
            if "audit" not in msg:
                return msg
            self.early.append(msg["audit"])

    def close(self):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=10)
        assert rc == 0, self.proc.stderr.read()


@pytest.fixture
def probe_factory():
    made = []

    def make(*args):
        p = Probe(list(args))
        made.append(p)
        return p
    yield make
    for p in made:
        if p.proc.poll() is None:
            p.close()
        shutil.rmtree(p.dir, ignore_errors=True)


def dial(path, data=b"", timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    if data:
        s.sendall(data)
    return s


def read_all(s):
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        out += d
    s.close()
    return out


def ask(path, data, timeout=10):
    return read_all(dial(path, data, timeout))


def read_head(s):
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(1)
        assert d, "connection closed inside the response head: %r" % head
        head += d
    return head


def basic(servers, *extra, grant=None):
    """A proxy with one sandbox 'sb' granted api.test and echo.test on the test ports."""
    h, e = servers["http"], servers["echo"]
    grant = grant or f"api.test:{h},echo.test:{e}"
    return ("--sandbox", f"sb={grant}", "--host", "api.test=127.0.0.1", "--host", "echo.test=127.0.0.1",
            "--allow-private", f"127.0.0.1:{h}", "--allow-private", f"127.0.0.1:{e}") + extra


# ---- allowed -------------------------------------------------------------------------

def test_absolute_form_http_reaches_the_granted_host(servers, probe_factory):
    p = probe_factory(*basic(servers))
    port = servers["http"]
    Handler.seen_hosts.clear()
    resp = ask(p.paths["sb"], f"GET http://API.test:{port}/hi HTTP/1.1\r\nHost: evil.example\r\n"
                              f"Proxy-Authorization: x\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.0 200 OK\r\n"), resp
    assert resp.endswith(b"\r\n\r\nhello from /hi")
    # the upstream saw the checked name, never the client's Host header
    assert Handler.seen_hosts == [f"api.test:{port}"]
    ev = p.audit()
    assert ev["sandbox"] == "sb" and ev["host"] == "api.test" and ev["port"] == port
    assert ev["address"] == f"127.0.0.1:{port}"
    assert ev["outcome"] == "allowed"
    assert ev["reason"] == f"allowed by grant entry 'api.test:{port}'"
    assert ev["bytes_down"] == len(resp)
    assert ev["bytes_up"] > 0


def test_connect_tunnel_round_trips_bytes(servers, probe_factory):
    p = probe_factory(*basic(servers))
    s = dial(p.paths["sb"], f"CONNECT echo.test:{servers['echo']} HTTP/1.1\r\n\r\n".encode())
    assert read_head(s) == b"HTTP/1.1 200 Connection established\r\n\r\n"
    blob = os.urandom(300000)
    threading.Thread(target=lambda: (s.sendall(blob), s.shutdown(socket.SHUT_WR)), daemon=True).start()
    assert read_all(s) == blob
    ev = p.audit()
    assert (ev["outcome"], ev["status"], ev["bytes_up"], ev["bytes_down"]) == ("allowed", 200, len(blob), len(blob))


def test_bytes_sent_with_the_connect_head_are_relayed(servers, probe_factory):
    p = probe_factory(*basic(servers))
    s = dial(p.paths["sb"], f"CONNECT echo.test:{servers['echo']} HTTP/1.1\r\n\r\nearly bytes".encode())
    s.shutdown(socket.SHUT_WR)
    assert read_all(s) == b"HTTP/1.1 200 Connection established\r\n\r\nearly bytes"


# ---- refusals --------------------------------------------------------------------------

def refused(p, request, status=403):
    resp = ask(p.paths["sb"], request)
    assert resp.startswith(b"HTTP/1.1 %d " % status), resp
    body = resp.split(b"\r\n\r\n", 1)[1].decode()
    ev = p.audit()
    assert ev["status"] == status
    return body, ev


@pytest.mark.parametrize("target,why", [
    ("other.test:{h}", "not in this sandbox's allowlist"),              # other domain
    ("wild.test:{h}", "not in this sandbox's allowlist"),               # apex of a wildcard
    ("api.test:{e}", "not in this sandbox's allowlist"),                # wrong port
    ("api.test:443", "not in this sandbox's allowlist"),                # default port not granted
    ("127.0.0.1:{h}", "IP literal: name hosts, never addresses"),
    ("2130706433:{h}", "IP literal: name hosts, never addresses"),
    ("0x7f.1:{h}", "IP literal: name hosts, never addresses"),
    ("[::1]:{h}", "IP literal: name hosts, never addresses"),
    ("[::ffff:127.0.0.1]:{h}", "IP literal: name hosts, never addresses"),
])
def test_connect_refused_by_name(servers, probe_factory, target, why):
    h, e = servers["http"], servers["echo"]
    p = probe_factory(*basic(servers, grant=f"api.test:{h},*.wild.test:{h}"))
    t = target.format(h=h, e=e)
    body, ev = refused(p, f"CONNECT {t} HTTP/1.1\r\n\r\n".encode())
    assert body.startswith("ForgeBox egress policy: host ")
    assert why in body
    assert (ev["outcome"], ev["reason"], ev["address"]) == ("denied", why, "")


def test_wildcard_allows_subdomains_only(servers, probe_factory):
    h = servers["http"]
    p = probe_factory(*basic(servers, "--host", "a.wild.test=127.0.0.1", "--host", "wild.test=127.0.0.1",
                             grant=f"*.wild.test:{h}"))
    ok = ask(p.paths["sb"], f"GET http://a.wild.test:{h}/ HTTP/1.1\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.0 200 OK"), ok
    assert p.audit()["outcome"] == "allowed"
    body, ev = refused(p, f"GET http://wild.test:{h}/ HTTP/1.1\r\n\r\n".encode())
    assert body == "ForgeBox egress policy: host wild.test port %d refused: not in this sandbox's allowlist\n" % h


def test_absolute_form_ip_literal_refused(servers, probe_factory):
    p = probe_factory(*basic(servers))
    body, ev = refused(p, f"GET http://127.0.0.1:{servers['http']}/ HTTP/1.1\r\n\r\n".encode())
    assert "IP literal" in body and ev["outcome"] == "denied"


@pytest.mark.parametrize("addrs,klass", [
    ("127.0.0.1", "loopback"),          # allow_private names another port only
    ("127.0.0.2", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),   # the IPv4-mapped spelling
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
])
def test_name_resolving_to_blocked_address_refused(servers, probe_factory, addrs, klass):
    e = servers["echo"]
    # 'sneaky.test' is granted on the echo port but maps to a refused address:port
    p = probe_factory("--sandbox", f"sb=sneaky.test:{e}", "--host", f"sneaky.test={addrs}",
                      "--allow-private", f"127.0.0.1:{servers['http']}")
    body, ev = refused(p, f"CONNECT sneaky.test:{e} HTTP/1.1\r\n\r\n".encode())
    assert "resolves only to refused addresses" in body and f"{klass} address" in body
    assert ev["outcome"] == "denied" and ev["bytes_up"] == 0


def test_only_checked_addresses_are_dialled(servers, probe_factory):
    """A name with a refused and an allowed address connects to the allowed one only."""
    e = servers["echo"]
    p = probe_factory("--sandbox", f"sb=mixed.test:{e}", "--host", "mixed.test=127.0.0.9,127.0.0.1",
                      "--allow-private", f"127.0.0.1:{e}")
    s = dial(p.paths["sb"], f"CONNECT mixed.test:{e} HTTP/1.1\r\n\r\nping".encode())
    s.shutdown(socket.SHUT_WR)
    assert read_all(s).endswith(b"ping")
    assert p.audit()["address"] == f"127.0.0.1:{e}"


def test_deny_beats_allow(servers, probe_factory):
    h = servers["http"]
    p = probe_factory(*basic(servers, "--host", "secret.corp.test=127.0.0.1", "--host", "www.corp.test=127.0.0.1",
                             "--deny", "secret.corp.test", grant=f"*.corp.test:{h}"))
    ok = ask(p.paths["sb"], f"GET http://www.corp.test:{h}/ HTTP/1.1\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.0 200 OK")
    p.audit()
    body, ev = refused(p, f"GET http://secret.corp.test:{h}/ HTTP/1.1\r\n\r\n".encode())
    assert "denied by network.deny" in body and ev["reason"] == "denied by network.deny"


def test_grant_checked_at_creation(servers, probe_factory):
    p = probe_factory("--ceiling", "*.corp.test,pypi.org", "--deny", "bad.corp.test",
                      "--sandbox", "inside=www.corp.test,pypi.org:443",
                      "--sandbox", "outside=www.corp.test,evil.test",
                      "--sandbox", "denied=bad.corp.test",
                      "--sandbox", "literal=127.0.0.1")
    assert set(p.paths) == {"inside"}
    assert p.add_errors["outside"]["rc"] == 2  # FB_EGRESS_RC_POLICY
    assert p.add_errors["outside"]["message"] == "network grant entry 'evil.test' is outside network.allow"
    assert p.add_errors["denied"]["message"] == "network grant entry 'bad.corp.test' is inside network.deny"
    assert p.add_errors["literal"]["rc"] == 1  # FB_EGRESS_RC_INVALID
    assert "is an IP address" in p.add_errors["literal"]["message"]


def test_unknown_name_fails_fast_without_dns(servers, probe_factory):
    p = probe_factory(*basic(servers, grant="nowhere.test"))
    start = time.monotonic()
    body, ev = refused(p, b"CONNECT nowhere.test:443 HTTP/1.1\r\n\r\n", status=502)
    assert time.monotonic() - start < 2
    assert "cannot resolve nowhere.test" in body and ev["outcome"] == "failed"


# ---- one sandbox, one grant ---------------------------------------------------------------

def test_one_sandbox_cannot_use_another_sandboxs_grant(servers, probe_factory):
    h = servers["http"]
    p = probe_factory("--sandbox", f"a=a.test:{h}", "--sandbox", f"b=b.test:{h}", "--host", "a.test=127.0.0.1",
                      "--host", "b.test=127.0.0.1", "--allow-private", f"127.0.0.1:{h}")
    assert ask(p.paths["b"], f"GET http://b.test:{h}/ HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.0 200")
    assert p.audit()["sandbox"] == "b"
    # a header claiming to be b changes nothing: the listener decides
    resp = ask(p.paths["a"], f"GET http://b.test:{h}/ HTTP/1.1\r\nX-Sandbox: b\r\n\r\n".encode())
    assert resp.startswith(b"HTTP/1.1 403")
    ev = p.audit()
    assert (ev["sandbox"], ev["outcome"]) == ("a", "denied")
    assert os.stat(p.paths["a"]).st_mode & 0o777 == 0o600


def test_remove_sandbox_closes_listener_and_connections(servers, probe_factory):
    p = probe_factory(*basic(servers))
    s = dial(p.paths["sb"], f"CONNECT echo.test:{servers['echo']} HTTP/1.1\r\n\r\n".encode())
    assert read_head(s).startswith(b"HTTP/1.1 200")
    assert p.command("remove sb") == {"removed": "sb", "rc": 0}
    assert read_all(s) == b""  # the tunnel was closed
    ev = p.audit()
    assert ev["reason"].endswith("sandbox removed") and ev["outcome"] == "allowed"
    assert not os.path.exists(p.paths["sb"])
    with pytest.raises(OSError):
        dial(p.paths["sb"])
    assert p.command("remove sb") == {"removed": "sb", "rc": 4}  # FB_EGRESS_RC_NOT_FOUND


# ---- limits ------------------------------------------------------------------------------------

def test_byte_cap_down_cuts_at_the_exact_byte(servers, probe_factory):
    p = probe_factory(*basic(servers, "--max-down", "1000"))
    resp = ask(p.paths["sb"], f"GET http://api.test:{servers['http']}/size/5000 HTTP/1.1\r\n\r\n".encode())
    assert len(resp) == 1000
    ev = p.audit()
    assert (ev["outcome"], ev["bytes_down"]) == ("limited", 1000)
    assert "byte cap reached" in ev["reason"]
    # the budget is the sandbox's: the next request is refused up front
    body, ev = refused(p, f"GET http://api.test:{servers['http']}/ HTTP/1.1\r\n\r\n".encode(), status=429)
    assert "byte budget is used up" in body and ev["outcome"] == "limited"


def test_byte_cap_up(servers, probe_factory):
    p = probe_factory(*basic(servers, "--max-up", "5000"))
    s = dial(p.paths["sb"], f"CONNECT echo.test:{servers['echo']} HTTP/1.1\r\n\r\n".encode())
    read_head(s)
    try:
        s.sendall(b"y" * 20000)
    except OSError:
        pass
    got = read_all(s)
    assert len(got) <= 5000
    ev = p.audit()
    assert (ev["outcome"], ev["bytes_up"]) == ("limited", 5000)


def test_connection_cap(servers, probe_factory):
    p = probe_factory(*basic(servers, "--max-conns", "2"))
    e = servers["echo"]
    held = []
    for _ in range(2):
        s = dial(p.paths["sb"], f"CONNECT echo.test:{e} HTTP/1.1\r\n\r\n".encode())
        assert read_head(s).startswith(b"HTTP/1.1 200")
        held.append(s)
    body, ev = refused(p, f"CONNECT echo.test:{e} HTTP/1.1\r\n\r\n".encode(), status=429)
    assert "already has 2 connections open" in body and ev["outcome"] == "limited"
    held.pop().close()
    assert p.audit()["outcome"] == "allowed"
    s = dial(p.paths["sb"], f"CONNECT echo.test:{e} HTTP/1.1\r\n\r\n".encode())
    assert read_head(s).startswith(b"HTTP/1.1 200")
    s.close()
    held[0].close()


def test_idle_client_without_a_head_gets_408(servers, probe_factory):
    p = probe_factory(*basic(servers, "--idle-timeout-ms", "400"))
    start = time.monotonic()
    s = dial(p.paths["sb"], b"CONNECT echo.test:1 HTTP/1.1\r\n")  # never finished
    resp = read_all(s)
    assert 0.3 < time.monotonic() - start < 5
    assert resp.startswith(b"HTTP/1.1 408 ")
    assert p.audit()["outcome"] == "limited"


def test_half_open_tunnel_hits_the_idle_timeout(servers, probe_factory):
    p = probe_factory(*basic(servers, "--idle-timeout-ms", "400"))
    s = dial(p.paths["sb"], f"CONNECT echo.test:{servers['echo']} HTTP/1.1\r\n\r\nabc".encode())
    assert read_head(s).startswith(b"HTTP/1.1 200")
    start = time.monotonic()
    assert read_all(s) == b"abc"  # echoed, then silence until the proxy gives up
    assert 0.3 < time.monotonic() - start < 5
    ev = p.audit()
    assert ev["outcome"] == "limited" and ev["reason"].startswith("idle for 400 ms")


def test_oversized_head_gets_431(servers, probe_factory):
    p = probe_factory(*basic(servers, "--header-max", "1024"))
    body, ev = refused(p, b"GET http://api.test/ HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n", status=431)
    assert "longer than 1024 bytes" in body and ev["outcome"] == "limited"


def test_flood_of_connects_then_service_continues(servers, probe_factory):
    p = probe_factory(*basic(servers, "--max-conns", "8"))
    e, h = servers["echo"], servers["http"]
    socks = []
    for i in range(150):
        target = f"echo.test:{e}" if i % 3 == 0 else ("evil.test:443" if i % 3 == 1 else "x")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(p.paths["sb"])  # blocking: waits while the listen backlog is full
        s.settimeout(5)
        socks.append(s)
        try:
            s.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
        except OSError:
            pass  # closed at once: beyond twice the cap
    statuses = {}
    for s in socks:
        try:
            head = s.recv(64)
        except OSError:
            head = b""
        statuses[head[9:12]] = statuses.get(head[9:12], 0) + 1
        s.close()
    assert statuses.get(b"429", 0) > 0 and statuses.get(b"200", 0) > 0
    # every connection ends in exactly one audit event
    events = [p.audit() for _ in socks]
    assert {ev["outcome"] for ev in events} <= {"allowed", "denied", "limited", "failed"}
    assert sum(1 for ev in events if ev["status"] == 429) == statuses[b"429"]
    assert sum(1 for ev in events if ev["status"] == 200) == statuses[b"200"]
    with pytest.raises(queue.Empty):
        p.audit(timeout=0.5)
    ok = ask(p.paths["sb"], f"GET http://api.test:{h}/after HTTP/1.1\r\n\r\n".encode())
    assert ok.endswith(b"hello from /after")


# ---- garbage --------------------------------------------------------------------------------------

# Fixed bytes (the parallel workers must collect the same test ids).
@pytest.mark.parametrize("junk", [
    b"\x00" * 64 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)) + b"\r\n\r\n",  # TLS hello to a proxy
    b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n",
    b"GET http://api.test/ HTTP/1.1\nHost: x\n\n\r\n\r\n",
    b"CONNECT api.test:80 HTTP/1.1\r\n folded: x\r\n\r\n",
    b"GET http://a@api.test/ HTTP/1.1\r\n\r\n",
    b"GET https://api.test/ HTTP/1.1\r\n\r\n",
], ids=["nul", "tls-hello", "origin-form", "bare-lf", "folded", "userinfo", "https-absolute"])
def test_garbage_gets_400_and_proxy_survives(servers, probe_factory, junk):
    p = probe_factory(*basic(servers))
    body, ev = refused(p, junk, status=400)
    assert body.startswith("ForgeBox egress: malformed request: ")
    assert ev["outcome"] == "failed"
    ok = ask(p.paths["sb"], f"GET http://api.test:{servers['http']}/ HTTP/1.1\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.0 200 OK")


def test_clients_that_vanish_mid_head_and_mid_tunnel(servers, probe_factory):
    p = probe_factory(*basic(servers))
    dial(p.paths["sb"], b"CONNECT echo.te").close()
    ev = p.audit()
    assert (ev["outcome"], ev["reason"]) == ("failed", "client closed before a complete request head")
    s = dial(p.paths["sb"], f"CONNECT echo.test:{servers['echo']} HTTP/1.1\r\n\r\n".encode())
    read_head(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    assert p.audit()["outcome"] == "allowed"
    ok = ask(p.paths["sb"], f"GET http://api.test:{servers['http']}/ HTTP/1.1\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.0 200 OK")


# ---- its own DNS --------------------------------------------------------------------------------------

class TinyDNS:
    """Answers A queries for one name from a list, one answer per query, on 127.0.0.1."""

    def __init__(self, name, answers):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.name, self.answers, self.queries = name, list(answers), []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                q, peer = self.sock.recvfrom(512)
            except OSError:
                return
            qname, i = [], 12
            while q[i]:
                qname.append(q[i + 1:i + 1 + q[i]].decode())
                i += 1 + q[i]
            qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
            question = q[12:i + 5]
            name = ".".join(qname).lower()
            self.queries.append((name, qtype))
            answers = b""
            if name == self.name and qtype == 1:
                addr = self.answers[min(len(self.answers), len([x for x in self.queries if x[1] == 1])) - 1]
                answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + socket.inet_aton(addr)
            flags = 0x8180 if name == self.name else 0x8183
            header = q[:2] + struct.pack(">HHHHH", flags, 1, 1 if answers else 0, 0, 0)
            self.sock.sendto(header + question + answers, peer)

    def close(self):
        self.sock.close()


def test_dns_answer_is_checked_and_used_once(servers, probe_factory):
    """Rebinding: the first answer is allowed, a second would be loopback elsewhere; the
    proxy resolves once per connection and dials the address it checked."""
    e = servers["echo"]
    dns = TinyDNS("rebind.test", ["127.0.0.1", "127.0.0.5"])
    try:
        p = probe_factory("--dns-servers", f"127.0.0.1:{dns.port}", "--sandbox", f"sb=rebind.test:{e},gone.test",
                          "--allow-private", f"127.0.0.1:{e}")
        s = dial(p.paths["sb"], f"CONNECT rebind.test:{e} HTTP/1.1\r\n\r\nonce".encode())
        s.shutdown(socket.SHUT_WR)
        assert read_all(s).endswith(b"once")
        ev = p.audit()
        assert (ev["outcome"], ev["address"]) == ("allowed", f"127.0.0.1:{e}")
        assert [q for q in dns.queries if q[1] == 1] == [("rebind.test", 1)]
        # the second answer (127.0.0.5, not allowed) is checked in its turn and refused
        body, ev = refused(p, f"CONNECT rebind.test:{e} HTTP/1.1\r\n\r\n".encode())
        assert f"127.0.0.5:{e} is a loopback address" in body
        body, ev = refused(p, b"CONNECT gone.test:443 HTTP/1.1\r\n\r\n", status=502)
        assert "cannot resolve gone.test (DNS: " in body
    finally:
        dns.close()


def test_resolution_slower_than_the_connect_timeout_gets_504(servers, probe_factory):
    """A DNS server that never answers: the connect deadline covers resolution, and the
    abandoned lookup finishing later (or at shutdown) touches nothing freed."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        p = probe_factory("--dns-servers", f"127.0.0.1:{silent.getsockname()[1]}", "--connect-timeout-ms", "500",
                          "--sandbox", "sb=slow.test")
        start = time.monotonic()
        body, ev = refused(p, b"CONNECT slow.test:443 HTTP/1.1\r\n\r\n", status=504)
        assert 0.4 < time.monotonic() - start < 3
        assert body.startswith("ForgeBox egress: could not reach slow.test port 443 within 500 ms")
        assert ev["outcome"] == "limited"
        silent.settimeout(5)
        assert b"slow" in silent.recvfrom(512)[0]  # the query went to our server, and only there
    finally:
        silent.close()
