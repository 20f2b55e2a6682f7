"""Jail cold start against bwrap, run by run (see bench/README.md,
"Session 7: jail cold start").

    bench/jail_ab.py [ROUNDS]

Times `forgebox run -q --backend jail -- /bin/true` (this build), the same
with FB_BENCH_BASE_BIN (a "before" binary, optional) and `bwrap
--unshare-all` running /bin/true on the same rootfs, as single runs in
rotating order (every order of the two or three in turn), ROUNDS rounds
(default 120).  On a host where other work comes and goes, the median of
each round's own ratio moves less than the ratio of the medians; both are
printed.  bench.py times blocks of runs instead (its README says why);
this is for a same-run before/after.

FORGEBOX_IMAGE (default build/image) is this build's image and bwrap's
rootfs; FB_BENCH_BASE_IMAGE (default the same) the before binary's.
"""
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FORGEBOX = os.path.join(ROOT, "build", "forgebox")
IMAGE = os.environ.get("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))
BASE_BIN = os.environ.get("FB_BENCH_BASE_BIN")
BASE_IMAGE = os.environ.get("FB_BENCH_BASE_IMAGE", IMAGE)
STATE = tempfile.mkdtemp(prefix="fbx-bench-state-")


def run_argv(binary):
    return [binary, "run", "-q", "--backend", "jail", "--", "/bin/true"]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 120
    cmds = {"new": (run_argv(FORGEBOX), IMAGE)}
    if BASE_BIN:
        cmds["base"] = (run_argv(BASE_BIN), BASE_IMAGE)
    cmds["bwrap"] = (["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind",
                      f"{IMAGE}/rootfs", "/", "--proc", "/proc", "--dev", "/dev",
                      "--tmpfs", "/workspace", "--tmpfs", "/tmp", "/bin/true"], IMAGE)

    def timed(name):
        argv, image = cmds[name]
        env = dict(os.environ, FORGEBOX_IMAGE=image, FORGEBOX_STATE_DIR=STATE)
        t0 = time.perf_counter()
        p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, env=env)
        dt = (time.perf_counter() - t0) * 1000
        if p.returncode != 0:
            sys.exit(f"{name} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
        return dt

    names = list(cmds)
    for n in names:  # the image checks' caches, the shared roots
        timed(n)
    res = {n: [] for n in names}
    orders = list(itertools.permutations(names))
    for r in range(rounds):
        for n in orders[r % len(orders)]:
            res[n].append(timed(n))
    bwrap = statistics.median(res["bwrap"])
    print(f"jail cold start, {rounds} rounds, load {open('/proc/loadavg').read().split()[0]}")
    for n in names:
        v = sorted(res[n])
        per_round = statistics.median(a / b for a, b in zip(res[n], res["bwrap"]))
        print(f"{n:6} median {statistics.median(v):7.3f} ms  p25 {v[len(v) // 4]:7.3f}  "
              f"p75 {v[3 * len(v) // 4]:7.3f}  ratio {statistics.median(v) / bwrap:.2f}x  "
              f"per round {per_round:.2f}x")
    if BASE_BIN:
        diff = statistics.median(a - b for a, b in zip(res["new"], res["base"]))
        print(f"new - base, per round: median {diff:+.3f} ms")


if __name__ == "__main__":
    main()
