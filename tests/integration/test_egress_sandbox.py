"""The egress path end to end: `forgebox run --allow-net`, in both backends.

A tool process reaches a host name only through fb-agent's listener on the
sandbox's own 127.0.0.1:3128, which hands each connection to the host's
egress proxy as that sandbox's (docs/egress.md): as a file descriptor in a
jail, as a stream of net_* frames from a VM.  The "internet"
is a Python HTTP server on the host's 127.0.0.1; forgebox.yaml, written by
each test, maps test names to 127.0.0.1 (network.hosts) and lets the proxy
connect to exactly that address:port (network.allow_private).  Nothing here
connects anywhere but loopback.
"""
import hashlib
import http.server
import os
import socketserver
import threading

import pytest

from conftest import EXIT_USAGE, forgebox

PAGE = b"hello from the simulated internet\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE + f"path={self.path} host={self.headers.get('Host')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        data = b""
        while len(data) < n:
            data += self.rfile.read(n - len(data))
        body = hashlib.sha256(data).hexdigest().encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def web():
    srv = _Server(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def config(tmp_path, web):
    """Writes a forgebox.yaml; extra is appended under network:."""
    def _write(extra="", hosts=None):
        hosts = hosts or {"test.example": "127.0.0.1"}
        lines = ["network:", "  hosts:"]
        lines += [f"    {n}: [{a}]" for n, a in hosts.items()]
        lines += ["  allow_private:", f'    - "127.0.0.1:{web}"']
        path = tmp_path / "forgebox.yaml"
        path.write_text("\n".join(lines) + "\n" + extra)
        return str(path)
    return _write


def py(code):
    return ["--", "python3", "-c", code]


FETCH = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=20)
    print("STATUS", r.status); sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print("STATUS", e.code); sys.stdout.write(e.read().decode())
"""


def fetch(run, cfg, url, *grant, backend="jail"):
    args = []
    for g in grant:
        args += ["--allow-net", g]
    return run(backend, "--config", cfg, *args, "--", "python3", "-c", FETCH, url)


def test_granted_name_gets_the_page_through_the_proxy(run, config, web, backend):
    r = fetch(run, config(), f"http://test.example:{web}/some/path?q=1", f"test.example:{web}",
              backend=backend)
    assert r.rc == 0, r
    assert r.stdout == ("STATUS 200\n" + PAGE.decode() +
                        f"path=/some/path?q=1 host=test.example:{web}\n"), r
    assert "egress" not in r.stderr, r


def test_megabytes_both_ways(run, config, web, backend):
    # Several windows' worth each way (the VM's streams are acknowledged
    # in windows of 256 KiB): every byte arrives, in order.
    code = f"""
import hashlib, os, urllib.request
data = os.urandom(3 * 1024 * 1024 + 17)
print(hashlib.sha256(data).hexdigest())
r = urllib.request.urlopen(urllib.request.Request("http://test.example:{web}/up", data=data), timeout=60)
print(r.read().decode().strip())
"""
    r = run(backend, "--config", config(), "--allow-net", f"test.example:{web}", *py(code))
    assert r.rc == 0, r
    sent, got = r.stdout.split()
    assert sent == got, r


def test_proxy_variables_are_set_with_a_grant(run, config, web):
    r = run("jail", "--config", config(), "--allow-net", f"test.example:{web}", "--", "env")
    assert r.rc == 0, r
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        assert env[k] == "http://127.0.0.1:3128", r
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1", r


def test_connect_tunnel_reaches_the_granted_name(run, config, web, backend):
    code = f"""
import http.client
c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=20)
c.set_tunnel("test.example", {web})
c.request("GET", "/tunnelled")
r = c.getresponse()
print(r.status, r.read().decode().splitlines()[-1])
"""
    r = run(backend, "--config", config(), "--allow-net", f"test.example:{web}", *py(code))
    assert r.rc == 0, r
    assert r.stdout == f"200 path=/tunnelled host=test.example:{web}\n", r


def test_other_name_gets_the_403_body_and_a_line_on_stderr(run, config, web, backend):
    cfg = config(hosts={"test.example": "127.0.0.1", "other.example": "127.0.0.1"})
    r = fetch(run, cfg, f"http://other.example:{web}/", f"test.example:{web}", backend=backend)
    assert r.rc == 0, r
    assert r.stdout == (f"STATUS 403\nForgeBox egress policy: host other.example port {web} refused: "
                        "not in this sandbox's allowlist\n"), r
    assert (f"forgebox: egress denied: other.example port {web}: not in this sandbox's allowlist\n"
            in r.stderr), r


def test_wildcard_covers_subdomains_not_the_apex(run, config, web):
    cfg = config(hosts={"test.example": "127.0.0.1", "a.test.example": "127.0.0.1"})
    code = f"""
import urllib.request, urllib.error
for u in ("http://a.test.example:{web}/", "http://test.example:{web}/"):
    try:
        print(urllib.request.urlopen(u, timeout=20).status)
    except urllib.error.HTTPError as e:
        print(e.code)
"""
    r = run("jail", "--config", cfg, "--allow-net", f"*.test.example:{web}", *py(code))
    assert r.rc == 0, r
    assert r.stdout == "200\n403\n", r


def test_a_grant_without_port_means_80_and_443_only(run, config, web):
    r = fetch(run, config(), f"http://test.example:{web}/", "test.example")
    assert r.rc == 0, r
    assert r.stdout.startswith("STATUS 403\nForgeBox egress policy: host test.example port"), r


def test_name_resolving_to_an_unlisted_private_address_is_refused(run, config, web):
    # blocked.example is granted, but resolves to the host's loopback on a
    # port that network.allow_private does not list.
    cfg = config(hosts={"test.example": "127.0.0.1", "blocked.example": "127.0.0.1"})
    port = web + 1 if web < 65535 else web - 1
    r = fetch(run, cfg, f"http://blocked.example:{port}/", f"blocked.example:{port}")
    assert r.rc == 0, r
    assert r.stdout.startswith("STATUS 403\nForgeBox egress policy: host blocked.example"), r
    assert "loopback" in r.stdout, r


def test_a_flood_of_connections_is_capped_and_the_proxy_survives(run, config, web):
    # 100 idle connections at once: beyond the per-sandbox cap they are
    # refused or closed; once they are gone a request goes through again.
    code = f"""
import socket, urllib.request
held = []
for i in range(100):
    try:
        held.append(socket.create_connection(("127.0.0.1", 3128), timeout=5))
    except OSError:
        pass
c = held[-1]
c.sendall(b"GET http://test.example:{web}/ HTTP/1.1\\r\\n\\r\\n")
try:
    print("last", c.recv(4096).split(b"\\r\\n")[0].decode() or "closed")
except OSError:
    print("last closed")
for h in held:
    h.close()
import time; time.sleep(0.5)
print("after", urllib.request.urlopen("http://test.example:{web}/", timeout=20).status)
"""
    r = run("jail", "--config", config(), "--allow-net", f"test.example:{web}", *py(code))
    assert r.rc == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] in ("last closed", "last HTTP/1.1 429 Too Many Requests"), r
    assert lines[1] == "after 200", r
    assert "forgebox: egress limited:" in r.stderr, r


def test_malformed_head_gets_400(run, config, web):
    code = """
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
s.sendall(b"GET /relative HTTP/1.1\\r\\nHost: test.example\\r\\n\\r\\n")
print(s.recv(4096).split(b"\\r\\n")[0].decode())
"""
    r = run("jail", "--config", config(), "--allow-net", f"test.example:{web}", *py(code))
    assert r.rc == 0, r
    assert r.stdout == "HTTP/1.1 400 Bad Request\n", r


def test_ip_literal_through_the_proxy_is_refused(run, config, web):
    code = f"""
import socket
s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
s.sendall(b"GET http://127.0.0.1:{web}/ HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
print(s.recv(4096).split(b"\\r\\n")[0].decode())
"""
    r = run("jail", "--config", config(), "--allow-net", f"test.example:{web}", *py(code))
    assert r.rc == 0, r
    assert r.stdout == "HTTP/1.1 403 Forbidden\n", r


def test_direct_connect_to_the_host_loopback_fails(run, config, web, backend):
    # The jail's lo is its own: the host's server is not there.
    code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {web}), timeout=10)
    print("CONNECTED")
except OSError as e:
    print(type(e).__name__)
"""
    r = run(backend, "--config", config(), "--allow-net", f"test.example:{web}", *py(code))
    assert r.rc == 0, r
    assert r.stdout == "ConnectionRefusedError\n", r


SOCKETS = """
import socket
for name, args in [("raw", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
                   ("raw6", (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)),
                   ("udp", (socket.AF_INET, socket.SOCK_DGRAM, 0)),
                   ("packet", (socket.AF_PACKET, socket.SOCK_RAW, 0)),
                   ("netlink", (socket.AF_NETLINK, socket.SOCK_RAW, 0)),
                   ("vsock", (40, socket.SOCK_STREAM, 0)),
                   ("tcp", (socket.AF_INET, socket.SOCK_STREAM, 0)),
                   ("tcp6", (socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, 0))]:
    try:
        socket.socket(*args).close()
        print(name, "ok")
    except OSError as e:
        print(name, e.errno)
"""


def test_only_tcp_sockets_are_allowed_with_a_grant(run, config, web, backend):
    r = run(backend, "--config", config(), "--allow-net", f"test.example:{web}", *py(SOCKETS))
    assert r.rc == 0, r
    got = dict(line.split() for line in r.stdout.splitlines())
    assert got["tcp"] == "ok" and got["tcp6"] == "ok", r
    for name in ("raw", "raw6", "udp", "packet", "netlink", "vsock"):
        assert got[name] == "1", (name, r)  # EPERM from the seccomp filter


def test_without_a_grant_nothing_changes(run, config, backend):
    r = run(backend, "--config", config(), *py(SOCKETS + """
import os
print("proxyvars", sorted(k for k in os.environ if "proxy" in k.lower()))
"""))
    assert r.rc == 0, r
    lines = r.stdout.splitlines()
    got = dict(line.split(None, 1) for line in lines)
    for name in ("raw", "raw6", "udp", "packet", "netlink", "vsock", "tcp", "tcp6"):
        assert got[name] == "1", (name, r)
    assert got["proxyvars"] == "[]", r


@pytest.mark.parametrize("entry,why", [
    ("127.0.0.1", "is an IP address"),
    ("*", "'*'"),
    ("http://pypi.org", "'http://pypi.org'"),
    ("pypi.org/simple", "'pypi.org/simple'"),
    ("pypi.org,,", None),
])
def test_bad_allow_net_entries_are_usage_errors(run, entry, why):
    r = run("jail", "--allow-net", entry, "--", "true")
    if why is None:  # empty pieces between commas are skipped; the rest is fine
        assert r.rc == 0, r
        return
    assert r.rc == EXIT_USAGE, r
    assert r.stderr.startswith("forgebox run: --allow-net: "), r
    assert why in r.stderr, r


def test_network_deny_wins_over_the_operator(run, config, web):
    cfg = config("  deny: [test.example]\n")
    r = fetch(run, cfg, f"http://test.example:{web}/", f"test.example:{web}")
    assert r.rc == EXIT_USAGE, r
    assert "network.deny" in r.stderr, r


def test_old_network_internet_key_is_refused(run, config, web):
    cfg = config("  internet: true\n")
    r = fetch(run, cfg, f"http://test.example:{web}/", f"test.example:{web}")
    assert r.rc == EXIT_USAGE, r
    assert "network.internet" in r.stderr and "replaced by network.allow" in r.stderr, r


def test_config_from_the_environment(run, config, web, monkeypatch):
    monkeypatch.setenv("FORGEBOX_CONFIG", config())
    r = run("jail", "--allow-net", f"test.example:{web}", "--", "python3", "-c", FETCH,
            f"http://test.example:{web}/")
    assert r.rc == 0, r
    assert r.stdout.startswith("STATUS 200\n"), r


def test_doctor_warns_while_allow_private_is_set(config, web):
    r = forgebox("doctor", "--config", config())
    assert r.rc == 0, r
    assert "network:     network.allow 0 entries, network.deny 0, network.hosts 1 names\n" in r.stdout, r
    assert (f"warning:     network.allow_private lets sandboxes with a grant reach 127.0.0.1:{web}, "
            "a loopback address\n") in r.stdout, r


def test_doctor_reports_a_bad_network_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("network:\n  internet: true\n")
    r = forgebox("doctor", "--config", str(bad))
    assert r.rc == 1, r
    assert "config:      config: network.internet" in r.stdout, r


def test_git_clones_over_http_through_the_proxy(run, tmp_path, backend):
    # A git-style client: git's dumb HTTP protocol from a host directory,
    # reached only through the proxy (git reads http_proxy itself).
    import functools
    import subprocess
    src = tmp_path / "src"
    src.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run(git + ["init", "-q", str(src)], check=True)
    (src / "README").write_text("cloned through the egress proxy\n")
    subprocess.run(git + ["-C", str(src), "add", "README"], check=True)
    subprocess.run(git + ["-C", str(src), "commit", "-qm", "one"], check=True)
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(git + ["clone", "-q", "--bare", str(src), str(served / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(served / "repo.git"), "update-server-info"], check=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = _Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        cfg = tmp_path / "forgebox.yaml"
        cfg.write_text("network:\n  hosts:\n    git.example: [127.0.0.1]\n"
                       f'  allow_private: ["127.0.0.1:{port}"]\n')
        r = run(backend, "--config", str(cfg), "--allow-net", f"git.example:{port}", "--",
                "sh", "-c", f"git clone -q http://git.example:{port}/repo.git /workspace/r && "
                            "cat /workspace/r/README")
    finally:
        srv.shutdown()
        srv.server_close()
    assert r.rc == 0, r
    assert r.stdout == "cloned through the egress proxy\n", r
