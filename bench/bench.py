"""ForgeBox benchmarks (see bench/README.md).

Every row compares ForgeBox with a baseline measured in the same run on the
same machine, because absolute timings mean little on a noisy host:

  jail cold start   forgebox run --backend jail -- /bin/true
                    vs bwrap --unshare-all on the same rootfs
  vm cold start     forgebox run --backend vm -- /bin/true
                    vs bare qemu-system-x86_64 -M microvm booting the same
                    kernel and initramfs to an init that powers off
  exec round trip   /bin/true in a live sandbox (fb-bench), per backend
  vm host memory    private memory of the QEMU process beyond guest RAM, idle and busy
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FORGEBOX = os.path.join(ROOT, "build", "forgebox")
FB_BENCH = os.path.join(ROOT, "build", "fb-bench")
IMAGE = os.environ.get("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))
STATE = tempfile.mkdtemp(prefix="fbx-bench-state-")
ENV = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=STATE)


def timed(argv, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=ENV, **kw)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"benchmark command failed ({p.returncode}): {' '.join(argv)}\n"
                 f"{p.stderr.decode(errors='replace')}")
    return dt


def median_of(argv, rounds, warmup=1):
    for _ in range(warmup):
        timed(argv)
    return statistics.median(timed(argv) for _ in range(rounds))


def host_tsc_khz():
    """What the vm backend measured and passes as tsc_early_khz."""
    run_dir = os.environ.get("FORGEBOX_RUN_DIR", "/run/forgebox")
    with open(os.path.join(run_dir, "tsc-khz")) as f:
        return int(f.read().split()[1])


def bare_qemu_argv(mem):
    # The vm backend's machine, accelerator, memory, kernel, initramfs and
    # kernel command line, without ForgeBox: no jail, no root disk, no agent
    # channel, and an init that is busybox powering off at once.
    return ["qemu-system-x86_64", "-machine",
            "microvm,x-option-roms=off,rtc=on,isa-serial=on,acpi=on,pcie=off",
            "-accel", "tcg,tb-size=32", "-cpu", "max", "-m", str(mem), "-smp", "1",
            "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
            "-monitor", "none", "-serial", "none",
            "-kernel", f"{IMAGE}/vmlinuz", "-initrd", f"{IMAGE}/initrd.img",
            "-append", "console=ttyS0 loglevel=0 edd=off cryptomgr.notests panic=-1 reboot=t "
                       f"tsc_early_khz={host_tsc_khz()} rdinit=/bin/busybox -- poweroff -f"]


GUEST_LOOP = ('n=$1; s=$(date +%s%N); i=0; while [ $i -lt $n ]; do /bin/true; i=$((i+1)); done; '
              'e=$(date +%s%N); echo $(( (e - s) / n / 1000 ))')


def guest_spawn_us(backend, n):
    """Microseconds the guest itself takes to spawn /bin/true and wait for
    it (a shell loop inside one sandbox: fork, exec, exit, wait)."""
    out = subprocess.run([FORGEBOX, "run", "-q", "--backend", backend, "--", "sh", "-c", GUEST_LOOP,
                          "loop", str(n)], stdout=subprocess.PIPE, env=ENV, check=True).stdout
    return float(out.decode().split()[-1])


def alternating(argv_a, argv_b, rounds, blocks=5):
    """Medians of two commands timed in alternating blocks (rounds/blocks of
    a, then of b, and again), so that a change in the host's load falls on
    both alike.  Blocks, not single runs: a jail's teardown leaves work to
    the kernel (network namespace, loop device) that would slow a bwrap
    started right after it."""
    timed(argv_a)
    timed(argv_b)
    a, b = [], []
    per = max(1, rounds // blocks)
    for _ in range(blocks):
        a.extend(timed(argv_a) for _ in range(per))
        b.extend(timed(argv_b) for _ in range(per))
    return statistics.median(a), statistics.median(b)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    # FB_BENCH_BACKENDS="jail" measures the jail rows alone (default both).
    backends = os.environ.get("FB_BENCH_BACKENDS", "jail vm").split()
    rows = []
    # Prime the image verification cache so that every round measures the
    # same thing (the first start hashes the whole image once).
    for backend in backends:
        timed([FORGEBOX, "run", "-q", "--backend", backend, "--", "/bin/true"])

    if "jail" in backends:
        jail, bwrap = alternating([FORGEBOX, "run", "-q", "--backend", "jail", "--", "/bin/true"],
                                  ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind",
                                   f"{IMAGE}/rootfs", "/", "--proc", "/proc", "--dev", "/dev",
                                   "--tmpfs", "/workspace", "--tmpfs", "/tmp", "/bin/true"],
                                  rounds * 5)
        rows.append(("jail cold start to first exec result", jail, "bwrap --unshare-all", bwrap, 1.5))

    if "vm" in backends:
        vm = median_of([FORGEBOX, "run", "-q", "--backend", "vm", "--", "/bin/true"], rounds)
        qemu = median_of(bare_qemu_argv(512), rounds)
        rows.append(("vm cold start to first exec result", vm, "bare QEMU microvm boot to poweroff", qemu, 1.15))

    print(f"ForgeBox benchmarks  ({platform.node()}, {os.cpu_count()} CPUs, "
          f"{platform.release()}, {rounds} rounds)")
    print()
    print(f"{'measurement':40} {'forgebox':>10} {'baseline':>10} {'ratio':>7} {'target':>7}  baseline is")
    for name, ours, base_name, base, target in rows:
        print(f"{name:40} {ours*1000:8.1f}ms {base*1000:8.1f}ms {ours/base:6.2f}x {target:6.2f}x  {base_name}")

    for backend in backends:
        out = subprocess.run([FB_BENCH, "exec", backend, str(rounds * 20)], stdout=subprocess.PIPE,
                             env=ENV, check=True).stdout
        r = json.loads(out)
        guest = guest_spawn_us(backend, rounds * 20)
        print(f"{'exec round trip in a live ' + backend:40} {r['median_us']/1000:8.2f}ms "
              f"{guest/1000:8.2f}ms {r['median_us']/guest:6.2f}x {'':>7}  the guest's own fork+exec of "
              f"/bin/true (a loop inside the sandbox); protocol overhead {(r['median_us']-guest)/1000:.2f} ms; "
              f"median of {r['count']} (p90 {r['p90_us']/1000:.2f} ms)")

    if "vm" not in backends:
        return
    # Private memory (anonymous pages beyond guest RAM: heap, translation
    # cache, device state) is what each further VM costs; the PSS of one VM
    # alone also carries QEMU's binary and libraries undivided.
    for state in ("idle", "busy"):
        out = subprocess.run([FB_BENCH, "memory", "vm", "512"] + (["busy"] if state == "busy" else []),
                             stdout=subprocess.PIPE, env=ENV, check=True).stdout
        m = json.loads(out)
        pss_overhead = (m["pss_kib"] - m["guest_ram_rss_kib"]) / 1024
        what = ("after one exec" if state == "idle" else
                "after Python, git and a directory walk (translation cache full)")
        print(f"{'vm host memory beyond guest RAM, ' + state:40} {m['anon_beyond_guest_kib']/1024:8.1f}MiB "
              f"{'':>10} {'':>7} {'30MiB':>7}  private (anonymous) memory {what}; PSS of this one VM "
              f"beyond guest RAM {pss_overhead:.1f} MiB (QEMU's libraries undivided); QEMU RSS "
              f"{m['rss_kib']/1024:.0f} MiB, guest RAM resident {m['guest_ram_rss_kib']/1024:.0f} MiB; "
              f"manager {m['manager_rss_kib']/1024:.1f} MiB")

if __name__ == "__main__":
    main()
