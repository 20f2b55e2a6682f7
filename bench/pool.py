"""Warm pool benchmark (issue 9, item 2; bench/run.sh runs it).

  create + first exec, pooled   POST /v1/sandboxes (a pool hit) then
                                POST .../exec of /bin/true, timed together
  baseline                      POST .../exec of /bin/true in a sandbox that
                                is already live, same gateway, same run
  also shown                    the same create + first exec with the pool
                                off (a cold boot), same gateway settings

Usage: bench/pool.py [ROUNDS] [BACKENDS]   (defaults: 10, "jail vm").
FB_BENCH_BASE_BIN=/path/to/forgebox (a "before" build): a second gateway
of that binary runs beside this build's, rounds alternated, and each row
is printed for both.
Goals (the issue's): jail 2x, vm 3x.  Rounds wait for the pool to refill
between creates, so each one measures a hit.
"""
import os
import re
import shutil
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
os.environ.setdefault("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))

import gateway_fixtures  # noqa: E402
from gateway_fixtures import Gateway  # noqa: E402

GOAL = {"jail": 2.0, "vm": 3.0}


def ready(g, backend):
    m = re.search(r'^forgebox_pool_ready\{backend="%s"\} (\d+)$' % backend, g.admin().metrics(), re.M)
    return int(m.group(1)) if m else 0


class Side:
    """One gateway (one binary) with a live sandbox, measured round by round."""

    def __init__(self, backend, pool, binary=None):
        settings = [f"sandbox.backend={backend}", "limits.rate_rps=100000", "limits.rate_burst=100000",
                    "log_level=warn", "quotas.max_sandboxes_per_team=100",
                    "quotas.max_memory_mib_per_team=100000", "quotas.max_vcpus_per_team=100"]
        if backend == "vm":
            settings.append("sandbox.memory_mib=128")
        if pool:
            settings.append(f"pool.{backend}.size=2")
        self.backend, self.pool = backend, pool
        saved = gateway_fixtures.FORGEBOX
        gateway_fixtures.FORGEBOX = binary or saved   # read when the daemon starts
        try:
            self.g = Gateway(settings=settings)
            self.g.init()
            self.g.start()
        finally:
            gateway_fixtures.FORGEBOX = saved
        self.c = self.g.admin()
        self.live = self.c.create_sandbox()
        self.c.exec(self.live["id"], ["/bin/true"])
        self.execs, self.creates = [], []

    def round(self):
        c = self.c
        if self.pool:
            deadline = time.monotonic() + 300
            while ready(self.g, self.backend) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        t0 = time.perf_counter()
        s = c.create_sandbox()
        c.exec(s["id"], ["/bin/true"])
        self.creates.append(time.perf_counter() - t0)
        c.delete_sandbox(s["id"])
        for _ in range(5):      # interleaved: the baseline sees the same load
            t0 = time.perf_counter()
            c.exec(self.live["id"], ["/bin/true"])
            self.execs.append(time.perf_counter() - t0)

    def close(self):
        try:
            self.c.delete_sandbox(self.live["id"])
        finally:
            self.g.close()
            shutil.rmtree(self.g.dir, ignore_errors=True)

    def result(self):
        return statistics.median(self.creates), statistics.median(self.execs)


def measure(backend, rounds, pool, base_bin=None):
    """Medians (create + first exec, live exec) for this build, and for
    base_bin (a "before" binary) when given: two gateways at once, their
    rounds alternated, so that both see the same load."""
    sides = [Side(backend, pool)]
    try:
        if base_bin:
            sides.append(Side(backend, pool, base_bin))
        for r in range(rounds):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                side.round()
    finally:
        for side in sides:
            side.close()
    return [side.result() for side in sides]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    backends = (sys.argv[2] if len(sys.argv) > 2 else "jail vm").split()
    print()
    print(f"{'pool measurement':40} {'forgebox':>10} {'baseline':>10} {'ratio':>7} {'target':>7}  baseline is")
    base = os.environ.get("FB_BENCH_BASE_BIN")
    for b in backends:
        pooled = measure(b, rounds, True, base)
        cold = measure(b, max(3, rounds // 3), False, base)
        for (hit, live), (cold_t, live_cold), who in zip(pooled, cold, ["", " (FB_BENCH_BASE_BIN)"]):
            print(f"{'create + first exec, pooled ' + b:40} {hit*1000:8.1f}ms {live*1000:8.2f}ms "
                  f"{hit/live:6.2f}x {GOAL[b]:6.2f}x  an exec in a live {b}, same gateway{who}")
            print(f"{'create + first exec, cold ' + b:40} {cold_t*1000:8.1f}ms {live_cold*1000:8.2f}ms "
                  f"{cold_t/live_cold:6.2f}x {'':>7}  (the pool off){who}")
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main()
