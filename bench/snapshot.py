"""VM snapshot restore against a cold boot and a bare QEMU boot (issue 9
item 3; docs/performance.md "VM snapshots", bench/README.md).

    bench/snapshot.py [ROUNDS]      (as root; default 5 rounds)

Rows, each a median over ROUNDS, the three kinds interleaved round by round
so that the host's load drifts over all of them alike:

  vm start from a snapshot   forgebox run --backend vm -- /bin/true, once a
                             snapshot of the shape exists (the first run of
                             the shape, which makes it, is not counted)
  vm cold start              the same with --no-vm-snapshot
  bare QEMU boot             qemu-system-x86_64 -M microvm with the same
                             kernel, initramfs, memory and command line,
                             init = busybox powering off (bench.py's baseline)

The goal: from a snapshot <= 0.5x the cold start and below the bare boot.
Then the time to make a snapshot (the first VM of a shape) and the host
memory of one idle VM, restored and cold (fb-bench memory: QEMU's RSS and
PSS, its resident guest RAM).
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (FORGEBOX, FB_BENCH, ENV with its own state dir, timed, bare_qemu_argv)

MEM = 512
RUN = [bench.FORGEBOX, "run", "-q", "--backend", "vm", "--memory", str(MEM), "--", "/bin/true"]
COLD = RUN[:-2] + ["--no-vm-snapshot", "--", "/bin/true"]


def traced_make_ms():
    """Runs the first VM of a fresh state dir with FORGEBOX_TRACE: the
    extra time its start spends saving and recording the snapshot."""
    with tempfile.TemporaryDirectory(prefix="fbx-bench-snap-") as state:
        env = dict(bench.ENV, FORGEBOX_STATE_DIR=state, FORGEBOX_TRACE="1")
        # The image check is cached per state dir: warm it with a jail.
        subprocess.run([bench.FORGEBOX, "run", "-q", "--backend", "jail", "--", "/bin/true"], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p = subprocess.run(RUN, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        t = {}
        for line in p.stderr.decode().splitlines():
            m = re.match(r"forgebox: trace \+([0-9.]+) ms (.*)", line)
            if m:
                t.setdefault(m.group(2), float(m.group(1)))
        size = sum(os.path.getsize(os.path.join(state, "vm-snapshots", f))
                   for f in os.listdir(os.path.join(state, "vm-snapshots")) if f.endswith(".snap"))
        return (t["create: snapshot saved, VM continues"] - t["create: agent channel open, saving"],
                t["create: backend started"] - t["create: snapshot saved, VM continues"], size)


def memory(no_snapshot):
    env = dict(bench.ENV)
    if no_snapshot:
        env["FB_BENCH_NO_VM_SNAPSHOT"] = "1"
    out = subprocess.run([bench.FB_BENCH, "memory", "vm", str(MEM)], env=env, stdout=subprocess.PIPE,
                         check=True).stdout
    return json.loads(out)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    bench.timed(RUN)  # the image check's cache, and the snapshot of this shape
    bench.timed(RUN)
    bare = bench.bare_qemu_argv(MEM)
    snap, cold, qemu = [], [], []
    for _ in range(rounds):
        snap.append(bench.timed(RUN))
        cold.append(bench.timed(COLD))
        qemu.append(bench.timed(bare))
    s, c, q = (statistics.median(x) for x in (snap, cold, qemu))
    load = os.getloadavg()[0]
    print(f"VM snapshot restore  ({rounds} rounds, {MEM} MiB guest, load {load:.1f})")
    print(f"{'measurement':44} {'time':>10} {'vs cold':>8} {'vs bare':>8}  goal")
    print(f"{'vm start from a snapshot to first exec':44} {s*1000:8.1f}ms {s/c:7.2f}x {s/q:7.2f}x  "
          f"<= 0.50x cold, < 1.00x bare")
    print(f"{'vm cold start to first exec':44} {c*1000:8.1f}ms {1:7.2f}x {c/q:7.2f}x  (--no-vm-snapshot)")
    print(f"{'bare QEMU microvm boot to poweroff':44} {q*1000:8.1f}ms {q/c:7.2f}x {1:7.2f}x  "
          f"same kernel, initramfs, memory, command line")
    save_ms, record_ms, size = traced_make_ms()
    print(f"making the snapshot (first VM of a shape): save {save_ms:.0f} ms, hash and record "
          f"{record_ms:.0f} ms, {size/1e6:.0f} MB")
    for name, m in (("restored", memory(False)), ("cold", memory(True))):
        print(f"vm host memory, {name:8}: QEMU RSS {m['rss_kib']/1024:.0f} MiB, PSS {m['pss_kib']/1024:.0f} MiB, "
              f"guest RAM resident {m['guest_ram_rss_kib']/1024:.0f} MiB, beyond guest RAM (PSS) "
              f"{(m['pss_kib'] - m['guest_ram_rss_kib'])/1024:.1f} MiB")


if __name__ == "__main__":
    main()
