"""A remote exec, two builds side by side (issue 12, item 6's exec row):

  bench/nodes_ab.py OLD_FORGEBOX [ROUNDS]   (as root; ROUNDS default 200)

Starts, on one PostgreSQL, a gateway in nodes.mode remote with one node
from OLD_FORGEBOX (e.g. main's binary copied aside before a change), the
same from this tree's build/forgebox, and a gateway that runs its jails
itself (this tree), then times POST .../exec of /bin/true in a live sandbox
on each, interleaved round by round (the order rotating), so that the three see
the same load.
Prints medians and 25th percentiles and their ratios to the local gateway.
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))

import conftest  # noqa: E402
import gateway_fixtures  # noqa: E402
import node_fixtures  # noqa: E402
import nodes as bn  # noqa: E402
import test_nodes as tn  # noqa: E402
from gateway_fixtures import Gateway  # noqa: E402
from pg_fixture import PgServer  # noqa: E402


def use(binary):
    for m in (conftest, gateway_fixtures, node_fixtures, tn):
        if hasattr(m, "FORGEBOX"):
            m.FORGEBOX = binary


def main():
    old_bin, new_bin = os.path.abspath(sys.argv[1]), os.path.join(ROOT, "build", "forgebox")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    pg = PgServer()
    tmp = tempfile.mkdtemp(prefix="fbx-bench-ab-")
    keys = bn.pki(tmp)
    tn.FAST.extend(bn.QUIET)
    stop = []
    try:
        use(old_bin)
        old = tn.Cluster(pg, keys, nodes=("n1",))
        stop.append(old.close)
        use(new_bin)
        new = tn.Cluster(pg, keys, nodes=("n2",))
        stop.append(new.close)
        url = pg.fresh_database("bench_ab_local")
        lg = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000",
                               *bn.QUIET], env={"FORGEBOX_STORE_URL": url})
        p = tn.run("admin", "init", url=url, state=lg.state)
        assert p.returncode == 0, p.stderr
        lg.admin_key = p.stdout.strip().splitlines()[-1]
        lg.start()
        stop.append(lg.stop)
        cs = {"remote, old build": old.a.admin(), "remote, this build": new.a.admin(), "local": lg.admin()}
        sb = {k: c.create_sandbox(backend="jail", memory_mib=128)["id"] for k, c in cs.items()}
        t = {k: [] for k in cs}
        order = list(cs)
        for i in range(rounds):
            for k in order[i % 3:] + order[:i % 3]:   # each goes first, second, third in turn
                c = cs[k]
                t0 = time.perf_counter()
                c.exec(sb[k], ["/bin/true"])
                t[k].append(time.perf_counter() - t0)
        load = os.getloadavg()[0]
    finally:
        for f in reversed(stop):
            try:
                f()
            except Exception as e:  # noqa: BLE001 - report what was measured anyway
                print(f"warning: cleanup: {e}", file=sys.stderr)
        pg.close()
        shutil.rmtree(tmp, ignore_errors=True)

    def p25(v):
        return sorted(v)[len(v) // 4]
    med = statistics.median
    print(f"\n{'exec round trip (/bin/true)':28} {'median':>9} {'ratio':>6} {'p25':>9} {'ratio':>6}")
    for k, v in t.items():
        print(f"{k:28} {med(v)*1000:7.2f}ms {med(v)/med(t['local']):5.2f}x {p25(v)*1000:7.2f}ms "
              f"{p25(v)/p25(t['local']):5.2f}x")
    print(f"{rounds} rounds interleaved, {os.cpu_count()} CPUs, load {load:.1f}; old: {old_bin}")


if __name__ == "__main__":
    main()
