"""Egress benchmark (see bench/README.md): the host-side proxy's cost.

One HTTP server on the host's 127.0.0.1 serves SIZE MiB (default 200) and a
tiny page.  The same Python client script runs twice in one run:

  direct   on the host, straight to 127.0.0.1:PORT (the baseline)
  proxied  inside `forgebox run --allow-net bench.example:PORT`, through
           fb-agent's 127.0.0.1:3128, the bridge and the egress proxy
           (network.hosts maps bench.example to 127.0.0.1 and
           network.allow_private lets the proxy connect there)

and reports download throughput (MiB/s) and connection-setup latency (the
median, over ROUNDS new connections, of connect + request + first byte of a
tiny response).  Ratios, no thresholds.  Only loopback is used.  The two
runs alternate PAIRS (5; 1 for the VM) times; each side's figure is its
median and the ratio the median of the pairs' ratios (session 6: the
direct runs used to come first, all five, then the proxied ones).

Two more rows (added in session 5; the two above are unchanged) look at
transfers as a user's tools make them, each against its own direct
baseline, runs interleaved (direct, proxied, direct, ...):

  https    the same SIZE MiB over TLS (a second server on the host, with a
           certificate made for bench.example by `openssl req` at start):
           through the proxy a CONNECT tunnel, the way pip, git and curl
           reach an https:// URL; direct, the same TLS client straight to
           the server.  Both sides pay for TLS in both runs.
  parallel SIZE MiB in PARALLEL (4) concurrent absolute-form downloads of
           SIZE/PARALLEL each, total bytes over the time the last ends.

And one row (session 7) with the server behind a link instead of on
loopback, the way a sandbox's traffic leaves a real host:

  link     the first row's download, but the server runs in a network
           namespace this script creates (fbx-bench-link), reached over a
           veth pair whose server end is shaped by a tbf qdisc to
           FB_BENCH_EGRESS_LINK (1gbit; empty skips the row); direct on the
           host to the namespace's address, proxied as above with
           network.hosts pointing there.  Needs `ip` and `tc` (iproute2).
           The addresses (10.213.7.0/30) exist only on that veth pair.
"""
import http.server
import json
import os
import socketserver
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FORGEBOX = os.path.join(ROOT, "build", "forgebox")
IMAGE = os.environ.get("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))
SIZE_MIB = int(os.environ.get("FB_BENCH_EGRESS_MIB", "200"))
ROUNDS = int(os.environ.get("FB_BENCH_EGRESS_ROUNDS", "50"))
CHUNK = b"\xa5" * (1 << 20)
PARALLEL = int(os.environ.get("FB_BENCH_EGRESS_PARALLEL", "4"))
EXTRA_RUNS = int(os.environ.get("FB_BENCH_EGRESS_EXTRA_RUNS", "3"))
PAIRS = int(os.environ.get("FB_BENCH_EGRESS_PAIRS", "5"))

CLIENT = r"""
import json, socket, statistics, sys, time
host, port, size_mib, rounds, proxied = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
direct_addr = sys.argv[6] if len(sys.argv) > 6 else "127.0.0.1"
dial = ("127.0.0.1", 3128) if proxied else (direct_addr, port)
target = f"http://{host}:{port}" if proxied else ""

def get(path, sink):
    s = socket.create_connection(dial, timeout=60)
    s.sendall(f"GET {target}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    first = s.recv(65536)
    t_first = time.perf_counter()
    n = len(first)
    if sink:
        buf = bytearray(1 << 20)
        while True:
            k = s.recv_into(buf)
            if not k:
                break
            n += k
    s.close()
    return t_first, n

lat = []
for _ in range(rounds):
    t0 = time.perf_counter()
    t1, _ = get("/tiny", False)
    lat.append(t1 - t0)
t0 = time.perf_counter()
_, n = get("/big", True)
dt = time.perf_counter() - t0
assert n > size_mib << 20, n
print(json.dumps({"latency_ms": statistics.median(lat) * 1000, "mib_s": (n / (1 << 20)) / dt, "bytes": n}))
"""


# The session-5 rows.  argv: host port size_mib proxied mode parallel [ca_pem]
# mode "https": one TLS download (CONNECT through the proxy); mode
# "parallel": `parallel` concurrent plain downloads of size_mib/parallel.
CLIENT_MORE = r"""
import json, socket, ssl, sys, threading, time
host, port, size_mib, proxied, mode, par = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1",
                                             sys.argv[5], int(sys.argv[6]))
dial = ("127.0.0.1", 3128) if proxied else ("127.0.0.1", port)

def drain(s, want):
    buf, n = bytearray(1 << 20), 0
    while True:
        k = s.recv_into(buf)
        if not k:
            break
        n += k
    assert n > want, (n, want)
    return n

def plain(path, want, out, i):
    s = socket.create_connection(dial, timeout=120)
    target = f"http://{host}:{port}" if proxied else ""
    s.sendall(f"GET {target}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    out[i] = drain(s, want)
    s.close()

def tls(want):
    s = socket.create_connection(dial, timeout=120)
    if proxied:
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            k = s.recv(1)
            assert k, head
            head += k
        assert head.startswith(b"HTTP/1.1 200"), head
    ctx = ssl.create_default_context(cadata=sys.argv[7])
    t = ctx.wrap_socket(s, server_hostname=host)
    t.sendall(f"GET /big HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
    n = drain(t, want)
    t.close()
    return n

t0 = time.perf_counter()
if mode == "https":
    n = tls(size_mib << 20)
else:
    out = [0] * par
    ts = [threading.Thread(target=plain, args=(f"/part{par}", (size_mib << 20) // par, out, i)) for i in range(par)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(out), out
    n = sum(out)
dt = time.perf_counter() - t0
print(json.dumps({"mib_s": (n / (1 << 20)) / dt, "bytes": n}))
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(SIZE_MIB << 20))
            self.end_headers()
            for _ in range(SIZE_MIB):
                self.wfile.write(CHUNK)
        elif self.path.startswith("/part"):
            n = (SIZE_MIB << 20) // int(self.path[5:])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n:
                k = min(n, len(CHUNK))
                self.wfile.write(CHUNK[:k])
                n -= k
        else:
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def measure(argv, env=None):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       env=env, timeout=1800)
    if p.returncode != 0:
        sys.exit(f"egress benchmark failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def paired_runs(direct_argv, via_argv, pairs, env):
    """PAIRS interleaved runs (direct, proxied, direct, ...): the median of
    each figure on each side, and the median of the pairs' own ratios, so
    that a change in the host's load falls on both sides of a ratio (this
    host is noisy: one-sided blocks of runs moved the ratio 0.56-1.17x)."""
    direct, via = [], []
    for _ in range(pairs):
        direct.append(measure(direct_argv))
        via.append(measure(via_argv, env))
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    ratios = {k: statistics.median(v[k] / d[k] for d, v in zip(direct, via)) for k in ("mib_s", "latency_ms")}
    return ({k: med(direct, k) for k in ratios}, {k: med(via, k) for k in ratios}, ratios)


class _TLSServer(_Server):
    """The same server over TLS (the certificate is for bench.example)."""

    def __init__(self, addr, handler, ctx):
        self.ctx = ctx
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = super().get_request()
        return self.ctx.wrap_socket(sock, server_side=True), addr


def _tls_server(tmp):
    """A TLS server and its certificate's PEM, or (None, None) without openssl."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None, None
    key, crt = os.path.join(tmp, "bench.key"), os.path.join(tmp, "bench.crt")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=bench.example", "-addext", "subjectAltName=DNS:bench.example",
                    "-keyout", key, "-out", crt], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    srv = _TLSServer(("127.0.0.1", 0), _Handler, ctx)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with open(crt) as f:
        return srv, f.read()


def extra_rows(backend, run_via, port, tls_port, pem):
    """The session-5 rows for one backend: (name, proxied MiB/s, direct MiB/s), each the median of
    EXTRA_RUNS interleaved runs (direct, proxied, direct, ...)."""
    rows = []
    cases = [("download via CONNECT, TLS", tls_port, "https", [pem])] if pem else []
    cases.append((f"download, {PARALLEL} connections", port, "parallel", []))
    runs = EXTRA_RUNS if backend == "jail" else min(EXTRA_RUNS, 1)
    if not runs:
        return rows
    for name, p, mode, tail in cases:
        args = ["bench.example", str(p), str(SIZE_MIB)]
        direct, via = [], []
        for _ in range(runs):
            direct.append(measure([sys.executable, "-c", CLIENT_MORE] + args + ["0", mode, str(PARALLEL)] + tail)["mib_s"])
            via.append(run_via([CLIENT_MORE] + args + ["1", mode, str(PARALLEL)] + tail)["mib_s"])
        rows.append((f"{name}, {backend}", statistics.median(via), statistics.median(direct)))
    return rows


LINK = os.environ.get("FB_BENCH_EGRESS_LINK", "1gbit")
LINK_NS, LINK_HOST_IF, LINK_NS_IF = "fbx-bench-link", "fbxbl-h", "fbxbl-s"
LINK_HOST_ADDR, LINK_NS_ADDR = "10.213.7.1", "10.213.7.2"


def _ip(*argv, ns=None):
    """`ip ARGV...` (or `tc ...` when ARGV starts with "tc"), in namespace NS if given."""
    argv = list(argv) if argv[0] == "tc" else ["ip"] + list(argv)
    pre = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run(pre + argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _link_down():
    subprocess.run(["ip", "netns", "del", LINK_NS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "del", LINK_HOST_IF], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def link_row(tmp, env):
    """The first row's download from a server behind a shaped veth link (a
    network namespace of this script's own).  Returns (name, direct, via,
    ratios) or None when the row is skipped (no LINK, no iproute2)."""
    if not LINK or not (shutil.which("ip") and shutil.which("tc")):
        return None
    _link_down()
    server = None
    try:
        _ip("netns", "add", LINK_NS)
        _ip("link", "add", LINK_HOST_IF, "type", "veth", "peer", "name", LINK_NS_IF)
        _ip("link", "set", LINK_NS_IF, "netns", LINK_NS)
        _ip("addr", "add", LINK_HOST_ADDR + "/30", "dev", LINK_HOST_IF)
        _ip("link", "set", LINK_HOST_IF, "up")
        _ip("addr", "add", LINK_NS_ADDR + "/30", "dev", LINK_NS_IF, ns=LINK_NS)
        _ip("link", "set", LINK_NS_IF, "up", ns=LINK_NS)
        _ip("link", "set", "lo", "up", ns=LINK_NS)
        # The download's direction: the server's end sends.
        _ip("tc", "qdisc", "add", "dev", LINK_NS_IF, "root", "tbf", "rate", LINK, "burst", "1mb",
            "latency", "50ms", ns=LINK_NS)
        server = subprocess.Popen(["ip", "netns", "exec", LINK_NS, sys.executable, os.path.abspath(__file__),
                                   "--serve", LINK_NS_ADDR], stdout=subprocess.PIPE, env=dict(os.environ))
        port = int(server.stdout.readline())
        cfg = os.path.join(tmp, "forgebox-link.yaml")
        with open(cfg, "w") as f:
            f.write(f'network:\n  hosts:\n    bench.example: [{LINK_NS_ADDR}]\n'
                    f'  allow_private: ["{LINK_NS_ADDR}:{port}"]\n')
        args = ["bench.example", str(port), str(SIZE_MIB), str(min(ROUNDS, 20))]
        direct_argv = [sys.executable, "-c", CLIENT] + args + ["0", LINK_NS_ADDR]
        via_argv = [FORGEBOX, "run", "--backend", "jail", "--config", cfg, "--allow-net", f"bench.example:{port}",
                    "--timeout", "1200", "--", "python3", "-c", CLIENT] + args + ["1"]
        return (f"jail, {LINK} link",) + paired_runs(direct_argv, via_argv, min(PAIRS, 3), env)
    except subprocess.CalledProcessError as e:
        print(f"(the {LINK} link row was skipped: {' '.join(e.cmd)}: {e.stderr.decode(errors='replace').strip()})")
        return None
    finally:
        if server:
            server.kill()
            server.wait()
        _link_down()


def serve(addr):
    """`egress.py --serve ADDR`: the benchmark's server on ADDR, its port
    on stdout (run inside the link row's namespace)."""
    srv = _Server((addr, 0), _Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


def main():
    srv = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    tmp = tempfile.mkdtemp(prefix="fbx-bench-egress-")
    tls_srv, pem = _tls_server(tmp)
    tls_port = tls_srv.server_address[1] if tls_srv else port
    cfg = os.path.join(tmp, "forgebox.yaml")
    with open(cfg, "w") as f:
        f.write(f'network:\n  hosts:\n    bench.example: [127.0.0.1]\n'
                f'  allow_private: ["127.0.0.1:{port}", "127.0.0.1:{tls_port}"]\n')
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=os.path.join(tmp, "state"))
    args = ["bench.example", str(port), str(SIZE_MIB), str(ROUNDS)]
    direct_argv = [sys.executable, "-c", CLIENT] + args + ["0"]
    rows = []
    for backend in os.environ.get("FB_BENCH_EGRESS_BACKENDS", "jail vm").split():
        via_argv = [FORGEBOX, "run", "--backend", backend, "--config", cfg, "--allow-net", f"bench.example:{port}",
                    "--timeout", "1200", "--", "python3", "-c", CLIENT] + args + ["1"]
        rows.append((backend,) + paired_runs(direct_argv, via_argv, PAIRS if backend == "jail" else 1, env))
    more = []
    for backend in os.environ.get("FB_BENCH_EGRESS_BACKENDS", "jail vm").split():
        def run_via(script_args, backend=backend):
            return measure([FORGEBOX, "run", "--backend", backend, "--config", cfg, "--allow-net",
                            f"bench.example:{port},bench.example:{tls_port}", "--timeout", "1200", "--", "python3",
                            "-c"] + script_args, env=env)
        more += extra_rows(backend, run_via, port, tls_port, pem)
    if "jail" in os.environ.get("FB_BENCH_EGRESS_BACKENDS", "jail vm").split():
        linked = link_row(tmp, env)
        if linked:
            rows.append(linked)
    srv.shutdown()
    if tls_srv:
        tls_srv.shutdown()
    print()
    print(f"egress measurement ({SIZE_MIB} MiB, {ROUNDS} connections)  proxied     direct   ratio")
    for backend, direct, via, ratio in rows:
        print(f"{'download throughput, ' + backend:40} {via['mib_s']:7.0f}MiB/s {direct['mib_s']:6.0f}MiB/s "
              f"{ratio['mib_s']:6.2f}x")
        print(f"{'connection setup + first byte, ' + backend:40} {via['latency_ms']:9.2f}ms {direct['latency_ms']:7.2f}ms "
              f"{ratio['latency_ms']:6.2f}x")
    for name, via, direct in more:
        print(f"{name:40} {via:7.0f}MiB/s {direct:6.0f}MiB/s {via / direct:6.2f}x")
    if not pem:
        print("(no openssl: the TLS rows were skipped)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        main()
