"""Gateway benchmarks (bench/run.sh runs this after the sandbox table).

  exec round trip through the API   POST /v1/sandboxes/{id}/exec of /bin/true
                                    vs the same exec over the agent channel
                                    directly (fb-bench), in a live jail sandbox
  authenticated requests per second GET /v1/sandboxes with wrk, on loopback
"""
import json
import os
import platform
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

from gateway_fixtures import Gateway  # noqa: E402


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000",
                          "log_level=warn"])
    g.init()
    g.start()
    try:
        c = g.admin()
        s = c.create_sandbox(backend="jail")
        c.exec(s["id"], ["/bin/true"])
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            c.exec(s["id"], ["/bin/true"])
            times.append(time.perf_counter() - t0)
        api = statistics.median(times)
        c.delete_sandbox(s["id"])
        env = dict(os.environ, FORGEBOX_STATE_DIR=tempfile.mkdtemp())
        direct = json.loads(subprocess.run([os.path.join(ROOT, "build", "fb-bench"), "exec", "jail",
                                            str(rounds)], stdout=subprocess.PIPE, env=env,
                                           check=True).stdout)["median_us"] / 1e6
        script = os.path.join(tempfile.mkdtemp(), "auth.lua")
        with open(script, "w") as f:
            f.write(f'wrk.headers["Authorization"] = "Bearer {g.admin_key}"\n')
        out = subprocess.run(["wrk", "-t2", "-c16", "-d5s", "-s", script, f"{g.url}/v1/sandboxes"],
                             stdout=subprocess.PIPE, check=True).stdout.decode()
        rps = next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1]
        non2xx = [l for l in out.splitlines() if "Non-2xx" in l]
    finally:
        g.close()
        shutil.rmtree(g.dir, ignore_errors=True)
    print()
    print(f"{'gateway measurement':40} {'forgebox':>10} {'baseline':>10} {'ratio':>7}  baseline is")
    print(f"{'exec round trip through the API':40} {api*1000:8.2f}ms {direct*1000:8.2f}ms "
          f"{api/direct:6.2f}x  the same exec over the agent channel (fb-bench)")
    print(f"{'authenticated GET /v1/sandboxes':40} {float(rps):7.0f}/s  {'':>10} {'':>7}  wrk -t2 -c16 -d5s "
          f"on loopback, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
          + (f"; {non2xx[0].strip()}" if non2xx else ""))


if __name__ == "__main__":
    main()
