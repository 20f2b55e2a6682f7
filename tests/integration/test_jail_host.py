"""What a jail keeps on the host while it runs, and how it ends (issue 9,
item 1: the jail's start and teardown were made cheaper; these tests hold
the promises the cheaper paths must keep).

- The host's runtime directory holds one record file per jail (its uid
  slot, for orphan reaping), nothing else: the jail's mount points and its
  /proc cover files live in a tmpfs of its setup's own mount namespace.
- That tmpfs is read-only (mount and superblock) wherever the jail sees it.
- A jail is ended by SIGKILL of its init, which must take every process
  of the jail with it, including ones that detach and ignore signals.
- Its network and IPC namespaces, made ahead of its spawn on a thread of
  the manager (sandbox/netns.c), are new and its own, with lo down, and
  belong to the host's user namespace, so the jail's root holds no
  capability over them; its other namespaces belong to the jail's own.
"""
import fcntl
import os
import re
import signal
import subprocess
import time

from conftest import FORGEBOX, IMAGE, RUN_DIR

SLOT_DIR = "/run/forgebox-slots"
FB_UID_BASE = 0x40000000


def start(state_dir, script, *args):
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir,
               FORGEBOX_RUN_DIR=RUN_DIR)
    return subprocess.Popen([FORGEBOX, "run", "-q", "--backend", "jail", "--", "sh", "-c", script,
                             *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)


def own_sandboxes():
    return sorted(p for p in os.listdir(RUN_DIR) if p.startswith("sb-")) if os.path.isdir(RUN_DIR) else []


def test_a_running_jail_keeps_only_its_record_on_the_host(state_dir):
    before = own_sandboxes()
    p = start(state_dir, "cat /proc/self/mountinfo; echo up; sleep 300")
    lines = []
    while True:
        line = p.stdout.readline().decode()
        assert line, f"the jail ended early: {p.stderr.read()!r}"
        if line == "up\n":
            break
        lines.append(line)
    try:
        new = [s for s in own_sandboxes() if s not in before]
        assert len(new) == 1, new
        sid = new[0]
        record = os.path.join(RUN_DIR, sid)
        # A regular file holding the slot, and that slot's lock names it.
        assert os.path.isfile(record) and not os.path.islink(record), os.lstat(record)
        slot = open(record).read()
        assert re.fullmatch(r"[0-9]+", slot), slot
        with open(os.path.join(SLOT_DIR, f"{slot}.lock")) as f:
            assert f.read() == sid
        # Nothing else of it under the runtime directory: no root, no stage.
        assert not os.path.exists(os.path.join(RUN_DIR, sid, "root"))
        assert own_sandboxes() == sorted(before + [sid])
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGINT, (p.returncode, err)
    assert not os.path.exists(record)
    # Inside, the /proc cover files come from the setup tmpfs, which is
    # read-only both as mounted and as a filesystem (its superblock, which
    # the jail's root does not own and so cannot remount).
    covers = [l.split() for l in lines if " /proc/" in l and " - tmpfs " in l]
    staged = [f for f in covers if f[3].startswith("/stage/")]
    assert {f[4] for f in staged} >= {"/proc/meminfo", "/proc/stat", "/proc/cpuinfo",
                                      "/proc/cmdline", "/proc/loadavg"}, covers
    for f in staged:
        sep = f.index("-")
        assert "ro" in f[5].split(","), f            # the mount
        assert "ro" in f[sep + 3].split(","), f      # the superblock
    # The host's paths appear nowhere in the jail's view.
    assert not any(RUN_DIR in l for l in lines), lines


DETACHER = r'''
import os, signal, time
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
r, w = os.pipe()
if os.fork():
    os.close(w)
    print(int(os.read(r, 32)), flush=True)   # the grandchild's pid, once it is detached
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
# A grandchild in its own session, reparented to the jail's init,
# ignoring every signal it can, holding none of the exec's pipes.
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
os.write(w, str(os.getpid()).encode())
os.close(w)
time.sleep(300)
'''


def host_pids_with_uid_in_sandbox_range():
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/status") as f:
                st = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except OSError:
            continue
        uid = int(re.search(r"^Uid:\s+(\d+)", st, re.M).group(1))
        if uid >= FB_UID_BASE and argv[:1] == [b"python3"] and argv[-1:] == [b"fbx-detacher"]:
            found[int(d)] = (uid, argv)
    return found


def test_processes_that_detach_and_ignore_signals_end_with_the_jail(state_dir):
    assert host_pids_with_uid_in_sandbox_range() == {}
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir,
               FORGEBOX_RUN_DIR=RUN_DIR)
    r = subprocess.run([FORGEBOX, "run", "-q", "--backend", "jail", "--", "python3", "-c", DETACHER,
                        "fbx-detacher"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, env=env, timeout=120)
    assert r.returncode == 0, r
    assert re.fullmatch(rb"[0-9]+\n", r.stdout), r.stdout
    # `forgebox run` has returned: the detached process is gone already,
    # not merely signalled (the jail's init is reaped only after every
    # process of its pid namespace).
    assert host_pids_with_uid_in_sandbox_range() == {}
    # Control: the same process does outlive the command that started it,
    # inside a jail that is still running.
    p = start(state_dir, 'python3 -c "$0" fbx-detacher; echo up; sleep 300', DETACHER)
    try:
        assert re.fullmatch(rb"[0-9]+\n", p.stdout.readline())
        assert p.stdout.readline() == b"up\n"
        deadline = time.monotonic() + 10
        alive = {}
        while not alive and time.monotonic() < deadline:
            alive = host_pids_with_uid_in_sandbox_range()
            time.sleep(0.05)
        assert len(alive) == 1, alive
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
    assert host_pids_with_uid_in_sandbox_range() == {}


NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1), linux/nsfs.h

def ns_owner_ino(pid, ns):
    """The inode of the user namespace that owns /proc/PID/ns/NS."""
    fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
        try:
            return os.fstat(owner).st_ino
        finally:
            os.close(owner)
    finally:
        os.close(fd)


def test_a_jails_network_and_ipc_namespaces_are_new_and_owned_by_the_host(state_dir):
    host = {ns: os.stat(f"/proc/self/ns/{ns}").st_ino for ns in ("net", "ipc", "user", "uts")}
    p = start(state_dir, 'for n in net ipc user uts; do stat -L -c "$n %i" /proc/self/ns/$n; done; '
                         'echo up; sleep 300')
    inside = {}
    try:
        while True:
            line = p.stdout.readline().decode()
            assert line, f"the jail ended early: {p.stderr.read()!r}"
            if line == "up\n":
                break
            ns, ino = line.split()
            inside[ns] = int(ino)
        # Each of the jail's namespaces is new: none is the host's.
        assert all(inside[ns] != host[ns] for ns in host), (inside, host)
        # The jail's init on the host: the fb-agent in that net namespace.
        agents = []
        for d in os.listdir("/proc"):
            try:
                if (d.isdigit() and open(f"/proc/{d}/comm").read() == "fb-agent\n" and
                        os.stat(f"/proc/{d}/ns/net").st_ino == inside["net"]):
                    agents.append(int(d))
            except OSError:
                continue
        assert len(agents) == 1, agents
        agent = agents[0]
        assert os.stat(f"/proc/{agent}/ns/ipc").st_ino == inside["ipc"]
        # Network and IPC belong to the host's user namespace (no capability
        # of the jail's root reaches them); uts, like the rest, to the jail's.
        assert ns_owner_ino(agent, "net") == host["user"]
        assert ns_owner_ino(agent, "ipc") == host["user"]
        assert ns_owner_ino(agent, "uts") == inside["user"]
        assert ns_owner_ino(agent, "mnt") == inside["user"]
        # Nothing but lo, and lo down: the sandbox has no network grant.
        links = subprocess.run(["nsenter", f"--net=/proc/{agent}/ns/net", "ip", "-o", "link"],
                               stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()
        assert len(links) == 1 and links[0].split()[1] == "lo:", links
        assert "UP" not in links[0].split()[2].strip("<>").split(","), links
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=60)
