"""Density benchmark (issue 9, item 4): many idle sandboxes alive at once.

  bench/density.py [JAILS] [VMS]      (defaults: 100 jails, 10 VMs)

Creates JAILS jail sandboxes and VMS 128 MiB VM sandboxes through one
gateway, all alive at the same time, checks that each answers an exec
(`echo ok`), then reports host memory per sandbox three ways:
  - MemAvailable drop of the host, divided by the number of sandboxes;
  - per jail: its memory cgroup's usage (what the kernel charges to it);
  - per VM: QEMU's RSS and PSS (proportional set size: pages shared between
    the QEMU processes, such as the binary and libraries, counted once
    across them), and the PSS beyond the guest RAM the guest touched.
and how long a round of one exec in every sandbox takes (responsiveness).

The issue's scale (500 jails and 50 VMs on a 24 GiB, 2-core host) is
`bench/density.py 500 50`; it takes several minutes of TCG boots and needs
quotas and the uid slots (1024) to allow it, which this script sets.
"""
import glob
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

from gateway_fixtures import Gateway, qemu_children  # noqa: E402


def mem_available_kib():
    with open("/proc/meminfo") as f:
        return int(re.search(r"MemAvailable:\s+(\d+)", f.read()).group(1))


def rollup(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def guest_ram_rss_kib(pid, guest_bytes):
    """Resident KiB of the one mapping of exactly the guest's RAM size."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                inside = int(m.group(2), 16) - int(m.group(1), 16) == guest_bytes
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def main():
    jails = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    vms = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    n = jails + vms
    g = Gateway(settings=["limits.rate_rps=100000", "limits.rate_burst=100000", "log_level=warn",
                          f"quotas.max_sandboxes_per_team={n + 1}",
                          "quotas.max_memory_mib_per_team=10000000",
                          f"quotas.max_vcpus_per_team={n + 1}", "sandbox.ttl_s=3600"])
    g.init()
    g.start()
    ids = []
    try:
        c = g.admin()
        base = mem_available_kib()
        t0 = time.monotonic()
        for i in range(jails):
            ids.append(c.create_sandbox(backend="jail", memory_mib=128)["id"])
        tj = time.monotonic() - t0
        t0 = time.monotonic()
        for i in range(vms):
            ids.append(c.create_sandbox(backend="vm", memory_mib=128)["id"])
        tv = time.monotonic() - t0
        t0 = time.monotonic()
        rtts = []
        for sid in ids:
            t1 = time.monotonic()
            r = c.exec(sid, ["echo", "ok"])
            rtts.append(time.monotonic() - t1)
            assert r["stdout"] == "ok\n", r
        round_s = time.monotonic() - t0
        time.sleep(2)
        used = base - mem_available_kib()
        cg = [int(open(p).read()) // 1024 for p in
              glob.glob("/sys/fs/cgroup/memory/forgebox/sb-*/memory.usage_in_bytes") +
              glob.glob("/sys/fs/cgroup/forgebox/sb-*/memory.current")]
        qs = qemu_children(g.proc.pid)
        rss = [rollup(p)["Rss"] for p in qs]
        pss = [rollup(p)["Pss"] for p in qs]
        guest = [guest_ram_rss_kib(p, 128 << 20) for p in qs]
        anon = [rollup(p)["Anonymous"] for p in qs]
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    finally:
        for sid in ids:
            try:
                g.admin().delete_sandbox(sid)
            except Exception:
                pass
        g.close()
        shutil.rmtree(g.dir, ignore_errors=True)
    print()
    print(f"density: {jails} jails + {vms} VMs (128 MiB) alive at once, each answered `echo ok`")
    print(f"  created in {tj:.1f} s (jails) + {tv:.1f} s (VMs); one exec in every sandbox: {round_s:.2f} s "
          f"(median {statistics.median(rtts)*1000:.1f} ms, max {max(rtts)*1000:.1f} ms)")
    print(f"  host MemAvailable drop: {used/1024:.0f} MiB, {used/1024/max(n,1):.1f} MiB per sandbox")
    if cg:
        print(f"  memory cgroup per sandbox (jails and VMs' cgroups): median {statistics.median(cg)/1024:.1f} MiB")
    if qs:
        beyond = [p - gr for p, gr in zip(pss, guest)]
        print(f"  QEMU per VM: RSS median {statistics.median(rss)/1024:.1f} MiB, PSS median "
              f"{statistics.median(pss)/1024:.1f} MiB, guest RAM resident {statistics.median(guest)/1024:.1f} MiB, "
              f"PSS beyond guest RAM {statistics.median(beyond)/1024:.1f} MiB, of it QEMU's private "
              f"anonymous memory {statistics.median([a - gr for a, gr in zip(anon, guest)])/1024:.1f} MiB")
    print(f"  load average at the end: {load}")


if __name__ == "__main__":
    main()
