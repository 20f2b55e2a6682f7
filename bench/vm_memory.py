"""Host memory of N VMs alive at once (issue 9 item 4).

  bench/vm_memory.py [N] [busy|execs]      (default: 4 VMs, idle)

Starts N `build/fb-bench memory vm 128 [MODE]` at once, each keeping its VM
alive after its own figures (FB_BENCH_HOLD), and once all N have answered
reads every QEMU's smaps: its PSS beyond guest RAM (the binary's and the
libraries' pages divided among the QEMUs that map them, which one VM alone
carries undivided) and its private memory beyond guest RAM (what
`fb-bench memory` reports: no other VM shares it).  One JSON line.

FB_BENCH_BIN: another fb-bench (a "before" build, for A/B runs);
FB_BENCH_HOLD: seconds each VM stays (60; raise it for `busy` with many
VMs, so that the first are still alive when the last answer).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GUEST_MIB = 128


def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def qemus_under(roots):
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "qemu-system-x86":
                    continue
        except OSError:
            continue
        a = int(d)
        for _ in range(12):
            a = ppid(a)
            if a in roots:
                found.append(int(d))
                break
            if a <= 1:
                break
    return found


def figures(pid):
    """(PSS beyond guest RAM, private beyond guest RAM) in MiB."""
    guest_rss = guest_pss = 0
    in_guest = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                in_guest = hi - lo == GUEST_MIB << 20
            elif in_guest and head == "Rss:":
                guest_rss += int(line.split()[1])
            elif in_guest and head == "Pss:":
                guest_pss += int(line.split()[1])
    roll = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Pss:", "Anonymous:"):
                roll[parts[0]] = int(parts[1])
    return (roll["Pss:"] - guest_pss) / 1024, (roll["Anonymous:"] - guest_rss) / 1024


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    mode = sys.argv[2:3]
    binary = os.environ.get("FB_BENCH_BIN", os.path.join(ROOT, "build", "fb-bench"))
    env = dict(os.environ, FB_BENCH_HOLD=os.environ.get("FB_BENCH_HOLD", "60"))
    procs = [subprocess.Popen([binary, "memory", "vm", str(GUEST_MIB)] + mode, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=env, cwd=ROOT) for _ in range(n)]
    alone = [json.loads(p.stdout.readline()) for p in procs]
    vals = [figures(q) for q in qemus_under({p.pid for p in procs})]
    for p in procs:
        p.wait()
    print(json.dumps({
        "vms": n, "mode": mode[0] if mode else "idle", "measured": len(vals),
        "pss_beyond_guest_mib": sorted(round(v[0], 2) for v in vals),
        "private_beyond_guest_mib": sorted(round(v[1], 2) for v in vals),
        "private_as_each_printed_mib": sorted(round(a["anon_beyond_guest_kib"] / 1024, 2) for a in alone),
    }))


if __name__ == "__main__":
    main()
