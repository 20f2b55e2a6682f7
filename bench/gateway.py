"""Gateway benchmarks (bench/run.sh runs this after the sandbox table).

  exec round trip through the API   POST /v1/sandboxes/{id}/exec of /bin/true
                                    vs the same exec over the agent channel
                                    directly (fb-bench), in a live jail sandbox
  authenticated requests per second GET /v1/sandboxes with wrk -t2 -c32, on
                                    loopback, vs GET /healthz (no key, no audit)
                                    on the same gateway in the same run: what
                                    HTTP alone allows here
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

        def wrk(path, *extra):
            out = subprocess.run(["wrk", "-t2", "-c32", "-d5s", *extra, f"{g.url}{path}"],
                                 stdout=subprocess.PIPE, check=True).stdout.decode()
            bad = [l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
            return float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1]), bad

        wrk_rounds = int(os.environ.get("FB_BENCH_WRK_ROUNDS", "3"))
        auth = [wrk("/v1/sandboxes", "-s", script) for _ in range(wrk_rounds)]
        plain = [wrk("/healthz") for _ in range(wrk_rounds)]
        rps = statistics.median(r for r, _ in auth)
        base = statistics.median(r for r, _ in plain)
        non2xx = [b for _, bad in auth for b in bad]
        load = os.getloadavg()[0]
    finally:
        g.close()
        shutil.rmtree(g.dir, ignore_errors=True)
    print()
    print(f"{'gateway measurement':40} {'forgebox':>10} {'baseline':>10} {'ratio':>7}  baseline is")
    print(f"{'exec round trip through the API':40} {api*1000:8.2f}ms {direct*1000:8.2f}ms "
          f"{api/direct:6.2f}x  the same exec over the agent channel (fb-bench)")
    print(f"{'authenticated GET /v1/sandboxes':40} {rps:7.0f}/s {base:7.0f}/s  {rps/base:6.2f}x  GET /healthz "
          f"(no key, no audit), wrk -t2 -c32 -d5s, median of {wrk_rounds}, {os.cpu_count()} CPUs, "
          f"load {load:.1f}; goal 20000/s" + (f"; {non2xx[0]}" if non2xx else ""))


if __name__ == "__main__":
    main()
