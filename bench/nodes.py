"""Several hosts (issue 12, item 6), all on this machine, in one run:

  sandbox create + first exec      POST /v1/sandboxes then POST .../exec of
                                   /bin/true through a gateway in
                                   nodes.mode remote (one `forgebox node`,
                                   jail, mutual TLS) vs the same through a
                                   gateway that runs the jail itself; both
                                   gateways on the same PostgreSQL; rounds
                                   interleaved; goal <= 1.3x
  exec round trip                  POST .../exec of /bin/true in a live
                                   sandbox, remote vs local, interleaved
  authenticated requests per       GET /v1/sandboxes with wrk -t2 -c32 on a
  second, PostgreSQL vs SQLite     gateway whose store is PostgreSQL vs one
                                   on SQLite (bench/gateway.py's measure);
                                   goal PostgreSQL within 2x of SQLite

  bench/nodes.py [ROUNDS]   (as root; ROUNDS default 20)
"""
import os
import pathlib
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

import test_nodes as tn  # noqa: E402
from gateway_fixtures import Gateway  # noqa: E402
from pg_fixture import PgServer  # noqa: E402

QUIET = ["log_level=warn"]


def pki(tmp):
    t = pathlib.Path(tmp)

    class Factory:
        def mktemp(self, _name):
            return t
    return tn.pki.__wrapped__(Factory())


def wrk(g, path, script, seconds=5):
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", script, f"{g.url}{path}"],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    bad = [l.strip() for l in out.splitlines() if "Non-2xx" in l or "Socket errors" in l]
    return float(next(l for l in out.splitlines() if l.startswith("Requests/sec")).split()[1]), bad


def auth_script(g):
    script = os.path.join(tempfile.mkdtemp(), "auth.lua")
    with open(script, "w") as f:
        f.write(f'wrk.headers["Authorization"] = "Bearer {g.admin_key}"\n')
    return script


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    pg = PgServer()
    tmp = tempfile.mkdtemp(prefix="fbx-bench-nodes-")
    keys = pki(tmp)
    stop = []
    try:
        # Remote: a gateway in nodes.mode remote and one node, on PostgreSQL.
        tn.FAST.extend(QUIET)
        tn.NODE_SETTINGS.extend(QUIET)   # the node logs as little as the gateways
        cl = tn.Cluster(pg, keys, nodes=("n1",))
        stop.append(cl.close)
        remote = cl.a.admin()
        # Local: a gateway that runs its jails itself, on a database of the same server.
        url = pg.fresh_database("bench_local")
        lg = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000",
                               *QUIET], env={"FORGEBOX_STORE_URL": url})
        p = tn.run("admin", "init", url=url, state=lg.state)
        assert p.returncode == 0, p.stderr
        lg.admin_key = p.stdout.strip().splitlines()[-1]
        lg.start()
        stop.append(lg.stop)
        local = lg.admin()
        # SQLite: the same gateway, its default store.
        sg = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000",
                               *QUIET])
        sg.init()
        sg.start()
        stop.append(sg.stop)

        def create_first_exec(c):
            t0 = time.perf_counter()
            s = c.create_sandbox(backend="jail", memory_mib=128)
            c.exec(s["id"], ["/bin/true"])
            dt = time.perf_counter() - t0
            c.delete_sandbox(s["id"])
            return dt

        for c in (remote, local):     # warm both paths once
            create_first_exec(c)
        cr, cl_ = [], []
        for _ in range(rounds):
            cr.append(create_first_exec(remote))
            cl_.append(create_first_exec(local))
        rs = remote.create_sandbox(backend="jail", memory_mib=128)
        ls = local.create_sandbox(backend="jail", memory_mib=128)
        er, el = [], []
        for _ in range(rounds * 5):
            t0 = time.perf_counter()
            remote.exec(rs["id"], ["/bin/true"])
            er.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            local.exec(ls["id"], ["/bin/true"])
            el.append(time.perf_counter() - t0)
        remote.delete_sandbox(rs["id"])
        local.delete_sandbox(ls["id"])
        wrk_rounds = int(os.environ.get("FB_BENCH_WRK_ROUNDS", "3"))
        on_pg, on_sqlite = [], []
        for _ in range(wrk_rounds):     # interleaved: the host's load drifts
            on_pg.append(wrk(lg, "/v1/sandboxes", auth_script(lg)))
            on_sqlite.append(wrk(sg, "/v1/sandboxes", auth_script(sg)))
        load = os.getloadavg()[0]
    finally:
        for f in reversed(stop):
            try:
                f()
            except Exception as e:  # noqa: BLE001 - a benchmark reports what it measured anyway
                print(f"warning: cleanup: {e}", file=sys.stderr)
        pg.close()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    rps_pg, rps_sq = med(r for r, _ in on_pg), med(r for r, _ in on_sqlite)
    bad = [b for _, bb in on_pg + on_sqlite for b in bb]
    print()
    print(f"{'several hosts':40} {'measured':>10} {'baseline':>10} {'ratio':>7}  goal  baseline is")
    print(f"{'create + first exec, remote node (jail)':40} {med(cr)*1000:8.2f}ms {med(cl_)*1000:8.2f}ms "
          f"{med(cr)/med(cl_):6.2f}x  1.3x  the same on a gateway running the jail itself (PostgreSQL both), "
          f"median of {rounds}")
    print(f"{'exec round trip, remote node (jail)':40} {med(er)*1000:8.2f}ms {med(el)*1000:8.2f}ms "
          f"{med(er)/med(el):6.2f}x  1.3x  the same exec on a local jail, median of {rounds * 5}")
    print(f"{'authenticated GET /v1/sandboxes, PG':40} {rps_pg:7.0f}/s {rps_sq:7.0f}/s  {rps_sq/rps_pg:6.2f}x  2.0x  "
          f"the same gateway on SQLite (ratio: SQLite/PostgreSQL; PostgreSQL with the test fixture's fsync=off, "
          f"`bench/gateway.py stores` also measures fsync on), wrk -t2 -c32 -d5s, median of {wrk_rounds}, interleaved, "
          f"{os.cpu_count()} CPUs, load {load:.1f}" + (f"; {bad[0]}" if bad else ""))


if __name__ == "__main__":
    main()
