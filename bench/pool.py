"""Warm pool benchmark (issue 9, item 2; bench/run.sh runs it).

  create + first exec, pooled   POST /v1/sandboxes (a pool hit) then
                                POST .../exec of /bin/true, timed together
  baseline                      POST .../exec of /bin/true in a sandbox that
                                is already live, same gateway, same run
  also shown                    the same create + first exec with the pool
                                off (a cold boot), same gateway settings

Usage: bench/pool.py [ROUNDS] [BACKENDS]   (defaults: 10, "jail vm").
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

from gateway_fixtures import Gateway  # noqa: E402

GOAL = {"jail": 2.0, "vm": 3.0}


def ready(g, backend):
    m = re.search(r'^forgebox_pool_ready\{backend="%s"\} (\d+)$' % backend, g.admin().metrics(), re.M)
    return int(m.group(1)) if m else 0


def measure(backend, rounds, pool):
    settings = [f"sandbox.backend={backend}", "limits.rate_rps=100000", "limits.rate_burst=100000",
                "log_level=warn", "quotas.max_sandboxes_per_team=100",
                "quotas.max_memory_mib_per_team=100000", "quotas.max_vcpus_per_team=100"]
    if backend == "vm":
        settings.append("sandbox.memory_mib=128")
    if pool:
        settings.append(f"pool.{backend}.size=2")
    g = Gateway(settings=settings)
    g.init()
    g.start()
    try:
        c = g.admin()
        live = c.create_sandbox()
        c.exec(live["id"], ["/bin/true"])
        execs, creates = [], []
        for _ in range(rounds):
            if pool:
                deadline = time.monotonic() + 300
                while ready(g, backend) < 2 and time.monotonic() < deadline:
                    time.sleep(0.05)
            t0 = time.perf_counter()
            s = c.create_sandbox()
            c.exec(s["id"], ["/bin/true"])
            creates.append(time.perf_counter() - t0)
            c.delete_sandbox(s["id"])
            for _ in range(5):      # interleaved: the baseline sees the same load
                t0 = time.perf_counter()
                c.exec(live["id"], ["/bin/true"])
                execs.append(time.perf_counter() - t0)
        c.delete_sandbox(live["id"])
    finally:
        g.close()
        shutil.rmtree(g.dir, ignore_errors=True)
    return statistics.median(creates), statistics.median(execs)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    backends = (sys.argv[2] if len(sys.argv) > 2 else "jail vm").split()
    print()
    print(f"{'pool measurement':40} {'forgebox':>10} {'baseline':>10} {'ratio':>7} {'target':>7}  baseline is")
    for b in backends:
        hit, live = measure(b, rounds, True)
        cold, live_cold = measure(b, max(3, rounds // 3), False)
        print(f"{'create + first exec, pooled ' + b:40} {hit*1000:8.1f}ms {live*1000:8.2f}ms "
              f"{hit/live:6.2f}x {GOAL[b]:6.2f}x  an exec in a live {b}, same gateway")
        print(f"{'create + first exec, cold ' + b:40} {cold*1000:8.1f}ms {live_cold*1000:8.2f}ms "
              f"{cold/live_cold:6.2f}x {'':>7}  (the pool off)")
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main()
