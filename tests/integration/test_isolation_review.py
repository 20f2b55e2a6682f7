"""Regression tests for the runtime findings of the isolation review (issue 6).

Each test attacks one finding from inside a sandbox and shows that the host
and another sandbox are unharmed; each carries a control that runs the
same probe where it must work, so a probe that silently never worked cannot
make a test pass.

1. Per-user kernel counters: a jail's user namespace belongs to its slot's
   host uid, so a jail that uses up its inotify instances, queued signals
   and message queue bytes leaves host root and other jails their share.
2. inotify: nothing a jail can watch (/dev nodes, rootfs files) is an inode
   the host or another sandbox uses.
3. /proc/PID/mem: a process one exec leaves behind cannot read the memory
   of a later exec's processes, nor they its (both backends).
5. /proc shows no host facts (kernel command line, host paths and uids in
   mountinfo, host-wide memory, load, cpu, disk statistics, boot_id).
6. A crash in a jail starts no host core helper even when the host's
   core_pattern is a pipe.
"""
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time

import pytest

from conftest import FORGEBOX, IMAGE, RUN_DIR, forgebox
from gateway_fixtures import Gateway
from test_escape import _wait_line as wait_line

INNER_TIMEOUT = "120"


def jail_popen(state_dir, *cmd, stdin=subprocess.DEVNULL):
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir,
               FORGEBOX_RUN_DIR=RUN_DIR)
    return subprocess.Popen([FORGEBOX, "run", "--backend", "jail", "-q", "--timeout", "900", "--",
                             *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin,
                            env=env)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


# ---------------------------------------------------------------------------
# 1. Per-user counters are the slot's, not host root's
# ---------------------------------------------------------------------------

# Takes every inotify instance, queued real-time signal and message queue
# byte it can get (printing how many, and the refusal), then holds them.
# With "probe" it only checks that one of each is still to be had.
COUNTERS = r'''
import ctypes, errno, json, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
rt = ctypes.CDLL("librt.so.1", use_errno=True)
class mq_attr(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_long), ("maxmsg", ctypes.c_long),
                ("msgsize", ctypes.c_long), ("curmsgs", ctypes.c_long), ("pad", ctypes.c_long * 4)]
rt.mq_open.restype = ctypes.c_int
attr = mq_attr(0, 10, 8192, 0)
sig = signal.SIGRTMIN + 3
signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
tag = sys.argv[2]

def err():
    return errno.errorcode[ctypes.get_errno()]

def take(limit, one):
    n = 0
    while n < limit:
        ctypes.set_errno(0)
        if one(n) < 0:
            return [n, err()]
        n += 1
    return [n, "LIMIT"]

mq = lambda n: rt.mq_open(("/fbx-%s-%d" % (tag, n)).encode(), os.O_CREAT | os.O_RDWR, 0o600,
                          ctypes.byref(attr))
inotify = lambda n: libc.inotify_init1(os.O_CLOEXEC)
queue = lambda n: libc.sigqueue(os.getpid(), sig, ctypes.c_void_p(0))
if sys.argv[1] == "probe":
    print(json.dumps({"inotify": take(1, inotify), "sigqueue": take(1, queue), "mq": take(1, mq)}))
else:
    print(json.dumps({"inotify": take(4096, inotify), "sigqueue": take(500000, queue),
                      "mq": take(4096, mq)}), flush=True)
    time.sleep(900)
'''


def test_per_user_counters_are_the_slots(run, state_dir):
    tag = secrets.token_hex(4)
    with open("/proc/sys/fs/inotify/max_user_instances") as f:
        host_max_inotify = int(f.read())
    hog = jail_popen(state_dir, "python3", "-c", COUNTERS, "hog", tag)
    try:
        line = wait_line(hog, 180)
        assert line, (hog.poll(), hog.stderr.read() if hog.poll() is not None else "")
        took = json.loads(line)
        # The jail gets its own share and no more: 128 inotify instances
        # (the host's per-user limit, charged to the slot uid), 1024 queued
        # signals (RLIMIT_SIGPENDING), three 80 KiB queues in 256 KiB
        # (RLIMIT_MSGQUEUE).
        assert took == {"inotify": [min(128, host_max_inotify), "EMFILE"],
                        "sigqueue": [1024, "EAGAIN"], "mq": [3, "EMFILE"]}, took

        # While it holds all that: a second jail has its full share ...
        r = run("jail", "-q", "--timeout", INNER_TIMEOUT, "--", "python3", "-c", COUNTERS,
                "probe", tag)
        assert (r.rc, r.stderr) == (0, ""), r
        one_each = {"inotify": [1, "LIMIT"], "sigqueue": [1, "LIMIT"], "mq": [1, "LIMIT"]}
        assert json.loads(r.stdout) == one_each, r
        # ... and so does host root (the charge of a root-owned user
        # namespace would have landed here).
        host = subprocess.run(["/usr/bin/python3", "-c", COUNTERS, "probe", "host-" + tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert host.returncode == 0, host
        assert json.loads(host.stdout) == one_each, host
    finally:
        subprocess.run(["/usr/bin/python3", "-c",
                        "import ctypes, sys; rt = ctypes.CDLL('librt.so.1')\n"
                        "[rt.mq_unlink(b'/fbx-host-%s-0' % sys.argv[1].encode())]", tag])
        rc, out, err = stop(hog)
    assert rc == 128 + signal.SIGTERM, (rc, out, err)


# ---------------------------------------------------------------------------
# 2. inotify sees nothing of the host
# ---------------------------------------------------------------------------

WATCHER = r'''
import ctypes, json, os, select, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
IN_ALL_EVENTS = 0xfff
paths = sys.argv[1:]
fd = libc.inotify_init1(os.O_NONBLOCK)
wds = {}
for p in paths:
    wd = libc.inotify_add_watch(fd, p.encode(), IN_ALL_EVENTS)
    assert wd >= 0, (p, ctypes.get_errno())
    wds[wd] = p

def drain(wait):
    seen = set()
    while select.select([fd], [], [], wait)[0]:
        wait = 0.2
        data = os.read(fd, 65536)
        while data:
            wd, mask, cookie, n = struct.unpack_from("iIII", data)
            seen.add(wds[wd])
            data = data[16 + n:]
    return sorted(seen)

print("ready", flush=True)
sys.stdin.readline()            # the host has done its part
out = {"host_phase": drain(0.5)}
with open("/dev/null", "w") as f:
    f.write("x")
with open("/dev/urandom", "rb") as f:
    f.read(1)
with open("/etc/passwd") as f:
    f.read()
out["own_phase"] = drain(2)
print(json.dumps(out))
'''

WATCHED = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/etc/passwd",
           "/etc", "/usr/bin/python3.11", "/usr/lib/python3.11/os.py", "/"]


def test_inotify_sees_no_host_or_other_sandbox_activity(run, state_dir):
    watcher = jail_popen(state_dir, "python3", "-c", WATCHER, *WATCHED, stdin=subprocess.PIPE)
    try:
        assert wait_line(watcher, 180) == b"ready\n", watcher.poll()
        # The host uses its devices ...
        for dev in ("null", "zero", "full", "urandom", "random"):
            with open("/dev/" + dev, "rb") as f:
                f.read(1)
        with open("/dev/null", "w") as f:
            f.write("host")
        # ... and the image's files ...
        rootfs = os.path.join(IMAGE, "rootfs")
        for rel in ("etc/passwd", "usr/bin/python3.11", "usr/lib/python3.11/os.py"):
            with open(os.path.join(rootfs, rel), "rb") as f:
                f.read(4096)
        os.listdir(os.path.join(rootfs, "etc"))
        os.listdir(rootfs)
        for root in ("rootfs.ext4", "rootfs.erofs"):   # whichever the jail mounts
            if os.path.exists(os.path.join(IMAGE, root)):
                with open(os.path.join(IMAGE, root), "rb") as f:
                    f.read(1 << 20)
        # ... and another sandbox runs python and uses the same names.
        r = run("jail", "-q", "--", "python3", "-c",
                "import os; open('/dev/null', 'w').write('x'); open('/etc/passwd').read();"
                "os.listdir('/etc'); open('/dev/urandom', 'rb').read(1); print('other')")
        assert (r.rc, r.stdout) == (0, "other\n"), r
        out, err = watcher.communicate(b"go\n", timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, (out, err)
    got = json.loads(out)
    # Nothing of all that reached the watches.
    assert got["host_phase"] == [], got
    # Control: the very same watches see the sandbox's own use.
    assert got["own_phase"] == ["/dev/null", "/dev/urandom", "/etc", "/etc/passwd"], got


# ---------------------------------------------------------------------------
# 3. /proc/PID/mem across execs
# ---------------------------------------------------------------------------

MEM_HELPERS = r'''
import ctypes, errno, json, os, signal, sys, time
def try_mem(pid):
    try:
        with open("/proc/%d/mem" % pid, "r+b") as f:
            return "OPEN"
    except OSError as e:
        return errno.errorcode[e.errno]
def signal0(pid):
    try:
        os.kill(pid, 0)
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
import socket
def listen_abstract(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(4)
    return s
def connect_abstract(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + name)
        return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        s.close()
def publish(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.rename(path + ".tmp", path)
def await_file(path, seconds):
    for _ in range(int(seconds * 20)):
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        time.sleep(0.05)
    return "TIMEOUT"
'''

# Exec 1 leaves this behind (its own session, so it outlives the exec).
LEFTOVER = MEM_HELPERS + r'''
child = os.fork()
if child == 0:
    time.sleep(900)
    os._exit(0)
ls = listen_abstract("fbx-left")
publish("/workspace/left.json", {"pid": os.getpid(), "own_child": try_mem(child)})
target = await_file("/workspace/target.json", 300)
if target != "TIMEOUT":
    publish("/workspace/left-result.json",
            {"open_mem": try_mem(target["pid"]), "signal0": signal0(target["pid"]),
             "abstract": connect_abstract("fbx-later")})
time.sleep(900)
'''

LATER_EXEC = MEM_HELPERS + r'''
left = await_file("/workspace/left.json", 10)
ls = listen_abstract("fbx-later")
out = {"left_own_child": left["own_child"], "open_mem": try_mem(left["pid"]),
       "signal0": signal0(left["pid"]), "abstract": connect_abstract("fbx-left"),
       "own_abstract": connect_abstract("fbx-later")}
buf = ctypes.create_string_buffer(b"fbx-own-memory")
with open("/proc/self/mem", "rb") as f:
    f.seek(ctypes.addressof(buf))
    out["self_mem"] = f.read(14).decode()
publish("/workspace/target.json", {"pid": os.getpid()})
out["leftover_against_me"] = await_file("/workspace/left-result.json", 30)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def gw():
    g = Gateway(settings=["limits.rate_rps=1000", "limits.rate_burst=1000"])
    g.init()
    g.start()
    yield g
    assert g.stop() == 0, g.read_log()


def host_landlock_abi():
    """landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return max(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)), 0)


@pytest.mark.parametrize("backend", ["jail", "vm"])
def test_proc_mem_of_another_exec_is_out_of_reach(gw, backend):
    c = gw.admin()
    sb = c.create_sandbox(backend=backend)
    try:
        r1 = c.exec(sb["id"], ["sh", "-c",
                               'setsid python3 -c "$0" </dev/null >/dev/null 2>&1 &\n'
                               'for i in $(seq 200); do [ -e /workspace/left.json ] && break; '
                               'sleep 0.05; done; echo started', LEFTOVER])
        assert (r1["exit_code"], r1["stdout"], r1["stderr"]) == (0, "started\n", ""), r1
        r2 = c.exec(sb["id"], ["python3", "-c", LATER_EXEC])
        assert (r2["exit_code"], r2["stderr"]) == (0, ""), r2
        out = json.loads(r2["stdout"])
    finally:
        c.delete_sandbox(sb["id"])
    # The later exec cannot open the leftover's memory: with hidepid=2 its
    # /proc entry does not even exist for it (Landlock puts each exec in a
    # domain of its own) ...
    assert out["open_mem"] == "ENOENT", out
    # ... nor can the leftover open the later exec's, concurrently running.
    # Where the kernel has Landlock ABI 6 (the jail runs on the host's
    # kernel; the VM's guest kernel is 6.1), the domains are also scoped:
    # neither can signal the other or reach its abstract Unix sockets.
    scoped = backend == "jail" and host_landlock_abi() >= 6
    cross = "EPERM" if scoped else "OK"
    assert out["leftover_against_me"] == {"open_mem": "ENOENT", "signal0": cross, "abstract": cross}, out
    assert (out["signal0"], out["abstract"]) == (cross, cross), out
    # Controls: a process reads its own memory and reaches its own exec's
    # socket.  Within one exec a jail's process still reaches its own
    # child's memory; the VM adds Yama's scope 3, under which no process
    # may attach to any other, its children too.
    assert out["own_abstract"] == "OK", out
    assert out["self_mem"] == "fbx-own-memory", out
    assert out["left_own_child"] == {"jail": "OPEN", "vm": "EACCES"}[backend], out


# ---------------------------------------------------------------------------
# 5. /proc shows no host facts
# ---------------------------------------------------------------------------

PROC_PROBE = r'''
import errno, json, os
def rd(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return errno.errorcode[e.errno]
out = {n: rd("/proc/" + n) for n in (
    "cmdline", "meminfo", "loadavg", "stat", "diskstats", "partitions", "vmstat",
    "interrupts", "uptime", "self/mountinfo", "sys/kernel/random/boot_id", "self/stat")}
try:
    out["pressure"] = sorted(os.listdir("/proc/pressure"))
except OSError as e:
    out["pressure"] = errno.errorcode[e.errno]
out["cpu_count"] = os.cpu_count()
out["clk_tck"] = os.sysconf("SC_CLK_TCK")
print(json.dumps(out))
'''


def _host(path):
    with open(path) as f:
        return f.read()


def _meminfo(text):
    return {l.split(":")[0]: int(l.split()[1]) for l in text.splitlines() if l.strip()}


@pytest.mark.parametrize("backend", ["jail", "vm"])
def test_proc_shows_no_host_facts(run, backend):
    r = run(backend, "-q", "--memory", "320", "--vcpus", "2", "--timeout", INNER_TIMEOUT, "--",
            "python3", "-c", PROC_PROBE)
    assert (r.rc, r.stderr) == (0, ""), r
    out = json.loads(r.stdout)
    text = r.stdout
    host_cmdline = _host("/proc/cmdline").strip()
    host_boot_id = _host("/proc/sys/kernel/random/boot_id").strip()
    host_mem = _meminfo(_host("/proc/meminfo"))["MemTotal"]
    assert host_cmdline and host_boot_id  # controls: there is something to leak

    # The kernel command line: empty (the VM's own carries the host's TSC rate).
    assert out["cmdline"] == ""
    assert host_cmdline not in text
    # boot_id: a fresh random one.
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\n",
                        out["sys/kernel/random/boot_id"]), out
    assert host_boot_id not in text
    # mountinfo: no host path, no host uid (the slot's uids are >= 2^30),
    # no host device path.
    mi = out["self/mountinfo"]
    for needle in (os.path.realpath(IMAGE), RUN_DIR, "/dev/loop", "/work/", "/run/"):
        assert needle not in mi, (needle, mi)
    assert [u for u in re.findall(r"[ug]id=(\d+)", mi) if int(u) >= 1 << 30] == [], mi
    root = [l.split() for l in mi.splitlines() if l.split()[4] == "/"]
    assert len(root) == 1 and root[0][3] == "/" and root[0][5].startswith("ro,"), mi
    # Memory: the sandbox's, never the host's.
    mem = _meminfo(out["meminfo"])
    assert mem["MemTotal"] != host_mem
    for field in ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal",
                  "SwapFree", "Shmem", "SReclaimable"):  # what free(1) reads
        assert field in mem, (field, mem)
    # Uptime and process start times are the sandbox's (a time namespace in
    # the jail; the VM has its own kernel): what ps(1) computes from them
    # is sane: a process started moments ago, after boot.
    uptime = float(out["uptime"].split()[0])
    assert 0 < uptime < 120, out["uptime"]
    started = int(out["self/stat"].rsplit(")", 1)[1].split()[19]) / out["clk_tck"]
    assert 0 <= started <= uptime, (started, uptime)
    if backend == "jail":
        # Synthetic: the memory limit, a line per vCPU (os.cpu_count()
        # counts them: there is no /sys), a quiet load.
        assert mem["MemTotal"] == mem["MemAvailable"] == 320 * 1024, mem
        cpus = [l.split()[0] for l in out["stat"].splitlines() if l.startswith("cpu")]
        assert cpus == ["cpu", "cpu0", "cpu1"], out["stat"]
        assert out["cpu_count"] == 2
        btime = int(re.search(r"^btime (\d+)$", out["stat"], re.M).group(1))
        assert abs(btime - (time.time() - uptime)) < 60, (btime, uptime)
        assert out["loadavg"] == "0.00 0.00 0.00 1/1 1\n"
        # Host-wide statistics: empty.
        for name in ("diskstats", "partitions", "vmstat", "interrupts"):
            assert out[name] == "", (name, out[name])
        assert out["pressure"] == [], out["pressure"]
        assert _host("/proc/diskstats") != ""  # control: the host has them
    else:
        # The VM's own kernel: at most the VM's memory, its own CPUs.
        assert mem["MemTotal"] <= 320 * 1024, mem
        assert out["cpu_count"] == 2


CPU_PROBE = r'''
import json, os
def rd(path):
    with open(path) as f:
        return f.read()
print(json.dumps({
    "affinity": sorted(os.sched_getaffinity(0)),
    "cpuinfo": rd("/proc/cpuinfo"),
    "counters": {n: rd("/proc/sys/" + n) for n in (
        "fs/file-nr", "fs/inode-nr", "fs/inode-state", "fs/dentry-state",
        "kernel/random/entropy_avail")},
}))
'''


def test_jail_shows_its_own_cpus_and_no_host_counters(run):
    """A one-vCPU jail on a host with more CPUs: nproc and /proc/cpuinfo
    count one processor (the host's count would tell a tool how big the
    machine under it is), and the host-wide counters under /proc/sys
    (open files, inodes, dentries, entropy) are fixed values, not the
    host's live ones (a cross-tenant activity signal)."""
    host_cpus = len(os.sched_getaffinity(0))
    if host_cpus < 2:
        pytest.skip("needs a host with at least two CPUs")
    r = run("jail", "-q", "--vcpus", "1", "--timeout", INNER_TIMEOUT, "--", "python3", "-c", CPU_PROBE)
    assert (r.rc, r.stderr) == (0, ""), r
    out = json.loads(r.stdout)
    assert len(out["affinity"]) == 1, out["affinity"]
    assert out["affinity"][0] in os.sched_getaffinity(0)
    blocks = [b for b in out["cpuinfo"].split("\n\n") if b.strip()]
    assert len(blocks) == 1, out["cpuinfo"]
    assert blocks[0].startswith("processor\t: 0\n"), blocks[0]
    assert "model name" in blocks[0] and "flags" in blocks[0]
    keys = {l.split(":")[0].strip() for l in blocks[0].splitlines()}
    assert not keys & {"apicid", "initial apicid", "siblings", "cpu cores", "core id", "cpu MHz"}, keys
    assert out["counters"] == {
        "fs/file-nr": "1024\t0\t1048576\n",
        "fs/inode-nr": "1024\t0\n",
        "fs/inode-state": "1024\t0\t0\t0\t0\t0\t0\n",
        "fs/dentry-state": "1024\t0\t45\t0\t0\t0\n",
        "kernel/random/entropy_avail": "256\n",
    }, out["counters"]
    assert _host("/proc/sys/fs/file-nr") != out["counters"]["fs/file-nr"]  # control


# ---------------------------------------------------------------------------
# 6. No host core helper for a crash in a jail
# ---------------------------------------------------------------------------

def _read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@pytest.mark.serial  # rewrites the host's core_pattern for a moment
def test_crash_in_a_jail_starts_no_host_core_helper(run, tmp_path):
    tag = secrets.token_hex(3)
    record = tmp_path / "helper-ran"
    helper = tmp_path / "core-helper"
    helper.write_text(f"#!/bin/sh\necho \"$1 $2\" >> {record}\ncat > /dev/null\n")
    helper.chmod(0o755)
    tmp_path.chmod(0o755)
    host_crasher = tmp_path / f"fbxhost{tag}"
    shutil.copy("/bin/bash", host_crasher)
    script = f'''
cp /bin/bash /workspace/fbxsh{tag} && /workspace/fbxsh{tag} -c 'kill -SEGV $$'
echo segv=$?
cp /usr/bin/python3 /workspace/fbxpy{tag} && /workspace/fbxpy{tag} -c 'import os; os.abort()'
echo abort=$?
ulimit -c 0
echo ulimit=$?
ulimit -c
ls /workspace
'''
    pattern = "/proc/sys/kernel/core_pattern"
    old = _host(pattern)
    try:
        with open(pattern, "w") as f:
            f.write(f"|{helper} %e %P")
        # Control: a host process crashing with RLIMIT_CORE=0 does start
        # the helper: the limit alone does not stop a pipe.
        p = subprocess.run([str(host_crasher), "-c", "ulimit -c 0; kill -SEGV $$"])
        assert p.returncode == -signal.SIGSEGV
        for _ in range(100):
            if any(f"fbxhost{tag}" in l for l in _read_lines(record)):
                break
            time.sleep(0.05)
        r = run("jail", "-q", "--timeout", INNER_TIMEOUT, "--", "bash", "-c", script)
        time.sleep(1)  # a helper, had one started, would have written by now
    finally:
        with open(pattern, "w") as f:
            f.write(old)
    assert _host(pattern) == old
    ours = [l for l in _read_lines(record) if tag in l]
    assert len(ours) == 1 and ours[0].startswith(f"fbxhost{tag} "), ours
    # The crashes happened (128 + SIGSEGV, 128 + SIGABRT), the core limit
    # is 1 byte (bash shows 512-byte blocks: 0) and cannot be lowered to
    # the 0 that would bring a pipe helper back; no core file anywhere.
    assert r.rc == 0, r
    assert r.stdout.splitlines() == ["segv=139", "abort=134", "ulimit=1", "0",
                                     f"fbxpy{tag}", f"fbxsh{tag}"], r
    err = r.stderr.splitlines()
    assert len(err) == 3, r
    assert re.fullmatch(rf"bash: line 2: +\d+ Segmentation fault +/workspace/fbxsh{tag} .*", err[0])
    assert re.fullmatch(rf"bash: line 4: +\d+ Aborted +/workspace/fbxpy{tag} .*", err[1])
    assert err[2] == ("bash: line 6: ulimit: core file size: cannot modify limit: "
                      "Operation not permitted"), r
    assert "core dumped" not in r.stderr


def _has_cap_sys_resource():
    with open("/proc/self/status") as f:
        eff = int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
    return bool(eff & (1 << 24))


@pytest.mark.serial  # rewrites the host's core_pattern for a moment
def test_a_hard_core_limit_of_0_is_refused_only_with_a_pipe(state_dir, tmp_path):
    # A manager whose hard core limit is 0 cannot give tool processes the
    # limit of 1 unless host root may raise it (CAP_SYS_RESOURCE, absent in
    # some containers); then a pipe core_pattern makes the jail refuse.
    argv = ["prlimit", "--core=0:0", FORGEBOX, "run", "--backend", "jail", "-q", "--", "sh", "-c",
            "ulimit -c"]
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir,
               FORGEBOX_RUN_DIR=RUN_DIR)
    pattern = "/proc/sys/kernel/core_pattern"
    old = _host(pattern)
    assert not old.startswith("|"), old  # the control below needs a file pattern
    control = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        with open(pattern, "w") as f:
            f.write(f"|/bin/false {tmp_path}")
        attack = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    finally:
        with open(pattern, "w") as f:
            f.write(old)
    assert _host(pattern) == old
    if _has_cap_sys_resource():
        # Host root raises the limit: both start, with the limit of 1.
        assert (control.returncode, control.stdout) == (0, b"0\n"), control
        assert (attack.returncode, attack.stdout) == (0, b"0\n"), attack
        return
    # A file pattern writes nothing at limit 0: the jail starts (control) ...
    assert (control.returncode, control.stdout, control.stderr) == (0, b"0\n", b""), control
    # ... a pipe would start the host's helper: refused, saying why.
    assert attack.returncode == 125, attack
    assert attack.stdout == b""
    assert attack.stderr.decode() == (
        "forgebox: sandbox failure: sandbox setup failed: the host's core_pattern is a pipe and "
        "the hard core limit is 0, so a crash in the jail would start the host's core helper; "
        "run forgebox with a hard core limit of at least 1 (ulimit -Hc 1)\n"), attack
