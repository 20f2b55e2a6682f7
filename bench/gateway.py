"""Gateway benchmarks (bench/run.sh runs this after the sandbox table).

  exec round trip through the API   POST /v1/sandboxes/{id}/exec of /bin/true
                                    vs the same exec over the agent channel
                                    directly (fb-bench), in a live jail sandbox
  authenticated requests per second GET /v1/sandboxes with wrk -t2 -c32, on
                                    loopback, vs GET /healthz (no key, no audit)
                                    on the same gateway in the same run: what
                                    HTTP alone allows here

  bench/gateway.py stores [ROUNDS]  the authenticated request rate on PostgreSQL
                                    vs SQLite, same run, rounds interleaved
                                    (median of ROUNDS, default 3): PostgreSQL
                                    with fsync on (durable like SQLite's
                                    synchronous=FULL) and, as a second row, the
                                    test fixture's fsync=off; goal within 2x
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

from gateway_fixtures import FIRST_PASSWORD, Gateway  # noqa: E402

FAST = ["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000", "log_level=warn"]


def wrk_rate(g, path, seconds=5):
    """Requests/s of wrk -t2 -c32 on g's path with g's admin key, and the
    lines that report errors or non-2xx answers."""
    script = os.path.join(g.dir, "auth.lua")
    with open(script, "w") as f:
        f.write(f'wrk.headers["Authorization"] = "Bearer {g.admin_key}"\n')
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", script, f"{g.url}{path}"],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    bad = [l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    return float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1]), bad


def pg_gateway(url):
    """A gateway whose store is the PostgreSQL database at url."""
    from conftest import FORGEBOX
    g = Gateway(settings=FAST, env={"FORGEBOX_STORE_URL": url})
    p = subprocess.run([FORGEBOX, "admin", "init", "--state-dir", g.state, "--store", url], capture_output=True,
                       text=True, env=dict(os.environ, FORGEBOX_FIRST_PASSWORD=FIRST_PASSWORD), timeout=60)
    assert p.returncode == 0, p.stderr
    g.admin_key = p.stdout.strip().splitlines()[-1]
    return g


def stores(rounds):
    """SQLite vs PostgreSQL (fsync on, then off), one run, interleaved."""
    from pg_fixture import PgServer

    class Pg(PgServer):
        fsync = "on"

        def start(self):   # pg_fixture's server, with fsync as chosen
            opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.sock} "
                    f"-c fsync={self.fsync} -c max_connections=50")
            self._run("pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.tmp, "log"), "-w", "start")

    pg = Pg()
    gws = []
    try:
        sg = Gateway(settings=FAST)
        sg.init()
        sg.start()
        gws.append(sg)
        pgw = pg_gateway(pg.url)
        pgw.start()
        gws.append(pgw)
        res = {"sqlite": [], "on": [], "off": []}
        for mode in ("on", "off"):
            if pg.fsync != mode:
                pg.fsync = mode
                pg.restart()
                deadline = time.monotonic() + 30
                while pgw.admin().request("GET", "/v1/sandboxes", raw=True)[0] != 200:   # reconnecting
                    assert time.monotonic() < deadline, "the gateway did not reconnect to PostgreSQL"
                    time.sleep(0.3)
                wrk_rate(pgw, "/v1/sandboxes", seconds=1)   # not counted: whatever else still reconnects
            for _ in range(rounds):
                res["sqlite"].append(wrk_rate(sg, "/v1/sandboxes"))
                res[mode].append(wrk_rate(pgw, "/v1/sandboxes"))
        load = os.getloadavg()[0]
    finally:
        for g in gws:
            g.close()
            shutil.rmtree(g.dir, ignore_errors=True)
        pg.close()
    med = statistics.median
    sq = med(r for r, _ in res["sqlite"])
    bad = [b for v in res.values() for _, bb in v for b in bb]
    print()
    print(f"{'store measurement':40} {'measured':>10} {'baseline':>10} {'ratio':>7}  goal  baseline is")
    for mode in ("on", "off"):
        pq = med(r for r, _ in res[mode])
        print(f"{'authenticated GET /v1/sandboxes, PG':36}{'fsync ' + mode:>4} {pq:7.0f}/s {sq:7.0f}/s  "
              f"{sq/pq:6.2f}x  2.0x  SQLite (synchronous=FULL), same gateway build; ratio SQLite/PostgreSQL; "
              f"wrk -t2 -c32 -d5s, median of {rounds}, interleaved; {os.cpu_count()} CPUs, load {load:.1f}"
              + (f"; {bad[0]}" if bad else ""))
    print(f"{'  (each round, SQLite)':40} " + " ".join(f"{r:.0f}" for r, _ in res["sqlite"]))
    for mode in ("on", "off"):
        print(f"{'  (each round, PostgreSQL fsync ' + mode + ')':40} " + " ".join(f"{r:.0f}" for r, _ in res[mode]))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "stores":
        return stores(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
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
