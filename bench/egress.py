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
tiny response).  Ratios, no thresholds.  Only loopback is used.
"""
import http.server
import json
import os
import socketserver
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

CLIENT = r"""
import json, socket, statistics, sys, time
host, port, size_mib, rounds, proxied = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
dial = ("127.0.0.1", 3128) if proxied else ("127.0.0.1", port)
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


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(SIZE_MIB << 20))
            self.end_headers()
            for _ in range(SIZE_MIB):
                self.wfile.write(CHUNK)
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


def median_run(argv, times, env=None):
    """The median of each figure over several runs (this host is noisy)."""
    runs = [measure(argv, env) for _ in range(times)]
    return {k: statistics.median(r[k] for r in runs) for k in ("mib_s", "latency_ms")}


def main():
    srv = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    tmp = tempfile.mkdtemp(prefix="fbx-bench-egress-")
    cfg = os.path.join(tmp, "forgebox.yaml")
    with open(cfg, "w") as f:
        f.write(f'network:\n  hosts:\n    bench.example: [127.0.0.1]\n  allow_private: ["127.0.0.1:{port}"]\n')
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=os.path.join(tmp, "state"))
    args = ["bench.example", str(port), str(SIZE_MIB), str(ROUNDS)]
    direct = median_run([sys.executable, "-c", CLIENT] + args + ["0"], 5)
    rows = []
    for backend in os.environ.get("FB_BENCH_EGRESS_BACKENDS", "jail vm").split():
        via = median_run([FORGEBOX, "run", "--backend", backend, "--config", cfg, "--allow-net",
                          f"bench.example:{port}", "--timeout", "1200", "--", "python3", "-c", CLIENT] + args +
                         ["1"], 3 if backend == "jail" else 1, env=env)
        rows.append((backend, via))
    srv.shutdown()
    print()
    print(f"egress measurement ({SIZE_MIB} MiB, {ROUNDS} connections)  proxied     direct   ratio")
    for backend, via in rows:
        print(f"{'download throughput, ' + backend:40} {via['mib_s']:7.0f}MiB/s {direct['mib_s']:6.0f}MiB/s "
              f"{via['mib_s'] / direct['mib_s']:6.2f}x")
        print(f"{'connection setup + first byte, ' + backend:40} {via['latency_ms']:9.2f}ms {direct['latency_ms']:7.2f}ms "
              f"{via['latency_ms'] / direct['latency_ms']:6.2f}x")


if __name__ == "__main__":
    main()
