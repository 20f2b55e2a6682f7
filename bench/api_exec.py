"""The exec round trip through the API against the same exec over the agent
channel, both timed from C (issue 9 item 6: goal 1.3x).

  bench/api_exec.py [ROUNDS] [PER_ROUND]

build/fb-api-bench runs, in one process and in rotating interleaved blocks,
PER_ROUND (default 20) execs of /bin/true over the agent channel of its own
jail and PER_ROUND `POST /v1/sandboxes/{id}/exec` on each gateway below
(keep-alive socket, no library), ROUNDS (default 25) times; medians:

  this build        build/forgebox serve, store on this disk (SQLite,
                    synchronous=FULL): the headline row
  before            FB_BENCH_BASE_BIN (e.g. /work/main/build/forgebox), same
                    settings: the same run's "before" (skipped if unset);
                    several binaries separated by ':' give one row each
                    (at most 3 with the tmpfs row, 4 without)
  tmpfs store       DIAGNOSTIC ONLY, never the headline: this build with its
                    state directory on /dev/shm, where an fsync costs
                    nothing: how much of the gap is the disk's fsync
                    (FB_BENCH_TMPFS=0 skips it)

FB_BENCH_TMPFS_BASE=1 adds the tmpfs row of the first "before" binary too
(this build against it without the disk's noise).  FB_BENCH_PY=0 skips the
Python client rows.  Each C row also gives its gateway's own CPU time per
exec (/proc/PID/stat: all its threads, system time included; clock ticks,
so a row needs some 1,000 execs for a resolution of a few per cent).

Then the Python client row (the project's client, http.client) on the
first two gateways, interleaved, as bench/gateway.py measured it before.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
os.environ.setdefault("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))

import gateway_fixtures  # noqa: E402
from gateway_fixtures import Gateway  # noqa: E402

FAST = ["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000", "log_level=warn"]


class BinGateway(Gateway):
    """A fixture gateway running the given forgebox binary."""

    def __init__(self, binary, **kw):
        super().__init__(settings=FAST, **kw)
        self.binary = binary

    def _with_bin(self, fn):
        saved = gateway_fixtures.FORGEBOX
        gateway_fixtures.FORGEBOX = self.binary
        try:
            return fn()
        finally:
            gateway_fixtures.FORGEBOX = saved

    def init(self):
        return self._with_bin(super().init)

    def start(self):
        return self._with_bin(super().start)


def cpu_s(pid):
    """utime + stime of a process (all its threads, ended ones too: a
    connection's thread ends with its connection), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    rows = [("this build", BinGateway(os.path.join(ROOT, "build", "forgebox")))]
    # One "before" binary, or several separated by ':' (variants measured
    # side by side; the first is the one "this build / before" compares with).
    bases = [b for b in os.environ.get("FB_BENCH_BASE_BIN", "").split(":") if b]
    base = bases[0] if bases else None
    for b in bases:
        rows.append(("before (" + b + ")", BinGateway(b)))
    shms = []  # tmpfs state directories: removed at the end
    if os.environ.get("FB_BENCH_TMPFS", "1") != "0":
        shm = tempfile.mkdtemp(prefix="fbx-bench-", dir="/dev/shm")
        shms.append(shm)
        rows.append(("tmpfs store (diagnostic)", BinGateway(os.path.join(ROOT, "build", "forgebox"),
                                                            state_dir=os.path.join(shm, "state"))))
        if base and os.environ.get("FB_BENCH_TMPFS_BASE", "0") != "0":
            shm = tempfile.mkdtemp(prefix="fbx-bench-", dir="/dev/shm")
            shms.append(shm)
            rows.append(("tmpfs store, before (diagnostic)", BinGateway(base, state_dir=os.path.join(shm, "state"))))
    try:
        args, clients, boxes = [], [], []
        for _, g in rows:
            g.init()
            g.start()
            c = g.admin()
            s = c.create_sandbox(backend="jail")
            c.exec(s["id"], ["/bin/true"])
            clients.append(c)
            boxes.append(s["id"])
            args += [f"127.0.0.1:{g.port}", g.admin_key, s["id"]]
        load0 = os.getloadavg()[0]
        env = dict(os.environ, FORGEBOX_STATE_DIR=tempfile.mkdtemp(prefix="fbx-bench-"))
        cpu0 = [cpu_s(g.proc.pid) for _, g in rows]
        out = json.loads(subprocess.run([os.path.join(ROOT, "build", "fb-api-bench"), str(rounds), str(per), *args],
                                        stdout=subprocess.PIPE, env=env, check=True).stdout)
        # Each gateway's own CPU time (its threads, system time included: the
        # fsync's too) per exec: steadier than latency on a noisy host.
        cpu = [(cpu_s(g.proc.pid) - c0) / (rounds * per) for (_, g), c0 in zip(rows, cpu0)]
        # The Python client, interleaved the same way on the disk-backed gateways.
        py = [[] for _ in rows]
        pyrows = [i for i, (name, _) in enumerate(rows) if not name.startswith("tmpfs")]
        if os.environ.get("FB_BENCH_PY", "1") == "0":
            pyrows = []
        for r in range(rounds):
            for j in range(len(pyrows)):
                i = pyrows[(j + r) % len(pyrows)]
                for _ in range(per):
                    t0 = time.perf_counter()
                    clients[i].exec(boxes[i], ["/bin/true"])
                    py[i].append(time.perf_counter() - t0)
        load1 = os.getloadavg()[0]
        for c, b in zip(clients, boxes):
            c.delete_sandbox(b)
    finally:
        for _, g in rows:
            g.close()
        for shm in shms:
            shutil.rmtree(shm, ignore_errors=True)
    direct = out["direct"]["median_us"]
    print()
    print(f"bench/api_exec.py {rounds} {per}: {rounds * per} execs per row, blocks of {per} interleaved; "
          f"{os.cpu_count()} CPUs, load {load0:.1f} -> {load1:.1f}")
    print(f"{'exec round trip':44} {'median':>9} {'p10':>9} {'p90':>9} {'ratio':>7}  (median of the rounds' ratios)")
    print(f"{'agent channel (fb-api-bench, baseline)':44} {direct/1000:7.3f}ms "
          f"{out['direct']['p10_us']/1000:7.3f}ms {out['direct']['p90_us']/1000:7.3f}ms {1:6.2f}x")
    d_rounds = out["direct"]["rounds_us"]
    for i, (name, _) in enumerate(rows):
        a = out[f"api{i}"]
        # The median over rounds of each round's ratio: load that drifts
        # between rounds falls on both sides of every ratio.
        paired = statistics.median(x / y for x, y in zip(a["rounds_us"], d_rounds))
        print(f"{'API, C client, ' + name:44} {a['median_us']/1000:7.3f}ms {a['p10_us']/1000:7.3f}ms "
              f"{a['p90_us']/1000:7.3f}ms {a['median_us']/direct:6.2f}x  (per round: {paired:.2f}x; "
              f"gateway CPU {cpu[i]*1000:.3f}ms/exec)")
    for i in range(1, 1 + len(bases)):
        paired = statistics.median(x / y for x, y in zip(out["api0"]["rounds_us"], out[f"api{i}"]["rounds_us"]))
        print(f"{'  this build / ' + rows[i][0] + ', per round':44} {paired:6.2f}x")
    if len(rows) >= 2 and rows[-1][0].startswith("tmpfs store, before"):
        t, b = len(rows) - 2, len(rows) - 1
        paired = statistics.median(x / y for x, y in zip(out[f"api{t}"]["rounds_us"], out[f"api{b}"]["rounds_us"]))
        print(f"{'  tmpfs: this build / before, per round':44} {paired:6.2f}x")
    for i in pyrows:
        m = statistics.median(py[i]) * 1e6
        print(f"{'API, Python client, ' + rows[i][0]:44} {m/1000:7.3f}ms {'':>9} {'':>9} {m/direct:6.2f}x")


if __name__ == "__main__":
    main()
