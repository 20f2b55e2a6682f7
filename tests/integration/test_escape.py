"""The escape suite: code inside a sandbox attacks layers 1-2, in both backends.

Every test plays the attacker from inside a fresh sandbox (uid 1000, no
capabilities, no_new_privs, seccomp allowlist, read-only root, hidepid=2
/proc, minimal /dev, no /sys, no NIC) and asserts the exact refusal: an
errno name or the exact error text.  Each one also carries a control that
runs the very same probe against something the sandbox may reach, so a
probe that silently never worked cannot make a test pass: if the attack had
succeeded, the probe would have said so.

Sandbox boots are the cost (about 5 s per VM under TCG), so each test groups
its related probes into one sandbox run, and the syscall/socket probe runs
once per backend and is shared by the parametrized tests below it.

Backend differences that are expected, not weaknesses, are spelled out
where they occur (the jail shares the host's kernel; the VM has its own).
"""
import errno
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess

import pytest

from conftest import FORGEBOX, IMAGE, forgebox

INNER_TIMEOUT = "120"  # seconds the sandboxed command may take (--timeout)


def probe(run, backend, code, *args, flags=(), input=None):
    """Runs `python3 -c code args...` in a fresh sandbox and returns (Result, parsed JSON)."""
    r = run(backend, "-q", "--timeout", INNER_TIMEOUT, *flags, "--", "python3", "-c", code, *args,
            input=input)
    assert r.rc == 0, r
    assert r.stderr == "", r
    return r, json.loads(r.stdout)


def bash(run, backend, script, *flags):
    return run(backend, "-q", "--timeout", INNER_TIMEOUT, *flags, "--", "bash", "-c", script)


def line_of(script, text):
    """The line number bash reports for the (unique) script line containing text."""
    hits = [i for i, l in enumerate(script.split("\n"), 1) if text in l]
    assert len(hits) == 1, (text, hits)
    return hits[0]


# ---------------------------------------------------------------------------
# 1. Reading host files
# ---------------------------------------------------------------------------

HOST_FILES_PROBE = r'''
import errno, json, os, stat, sys
canary_token, targets = sys.argv[1], sys.argv[2:]

def attempt(path):
    try:
        with open(path, "rb") as f:
            return "READ:" + f.read(4096).decode("latin-1")
    except OSError as e:
        return errno.errorcode[e.errno]

def stat_of(path):
    try:
        st = os.lstat(path)
    except OSError as e:
        return errno.errorcode[e.errno]
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "chr" if stat.S_ISCHR(st.st_mode) else "blk"
        return "%s %d:%d" % (kind, os.major(st.st_rdev), os.minor(st.st_rdev))
    return "mode %o" % st.st_mode

canary = "/workspace/fbx-canary"
with open(canary, "w") as f:
    f.write(canary_token)

pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
up = "/.." * 16  # more than enough to climb to the root of whatever fs a link lands in

def variants(path, tag):
    v = {
        "direct": path,
        "dotdot": up + path,
        "proc1_root": "/proc/1/root" + path,
        "proc1_cwd": "/proc/1/cwd" + up + path,
        "self_root": "/proc/self/root" + path,
        "self_cwd": "/proc/self/cwd" + up + path,
        "thread_self_root": "/proc/thread-self/root" + path,
    }
    for pid in pids:  # every process this sandbox can see
        v["pid_root:%d" % pid] = "/proc/%d/root%s" % (pid, path)
        v["pid_cwd:%d" % pid] = "/proc/%d/cwd%s%s" % (pid, up, path)
    link = "/workspace/link-" + tag
    os.symlink(path, link)
    v["symlink"] = link
    return {label: attempt(p) for label, p in v.items()}

out = {"pids": pids, "self": os.getpid()}
out["canary"] = variants(canary, "canary")
out["targets"] = {t: variants(t, "t%d" % i) for i, t in enumerate(targets)}

out["proc1"] = {n: attempt("/proc/1/" + n) for n in ("environ", "cmdline", "status", "maps")}
out["self_environ"] = attempt("/proc/self/environ")
out["self_cmdline"] = attempt("/proc/self/cmdline")

out["dev"] = sorted(os.listdir("/dev"))
out["dev_nodes"] = {p: stat_of(p) for p in (
    "/dev/vda", "/dev/vdb", "/dev/sda", "/dev/nvme0n1", "/dev/loop0", "/dev/mem", "/dev/kmem",
    "/dev/port", "/dev/kmsg", "/dev/kvm", "/dev/vsock", "/dev/vhost-vsock", "/dev/vhost-net",
    "/dev/hvc0", "/dev/vport0p1", "/dev/vport1p1", "/dev/ttyS0", "/dev/console",
    "/dev/net/tun", "/dev/fuse", "/dev/urandom", "/dev/null")}
try:
    os.mknod("/workspace/vda", 0o600 | stat.S_IFBLK, os.makedev(254, 0))
    out["mknod_blk"] = "CREATED"
except OSError as e:
    out["mknod_blk"] = errno.errorcode[e.errno]
out["sys"] = os.listdir("/sys") if os.path.isdir("/sys") else "absent"

fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError as e:  # the fd listdir itself used, closed by now
        fds[fd] = errno.errorcode[e.errno]
out["fds"] = fds

found = []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
    found += [os.path.join(root, n) for n in dirs + files if n.startswith("fbx-")]
out["fbx_names"] = sorted(found)
print(json.dumps(out))
'''


@pytest.fixture
def host_secrets():
    """A random secret in root-only and world-readable host files."""
    secret = "fbx-secret-value-" + secrets.token_hex(16)
    tag = secrets.token_hex(6)
    paths = [f"/root/fbx-secret-{tag}", f"/tmp/fbx-secret-{tag}"]
    for p, mode in zip(paths, (0o600, 0o644)):
        with open(p, "w") as f:
            f.write(secret)
        os.chmod(p, mode)
    try:
        yield secret, paths
    finally:
        for p in paths:
            os.unlink(p)


def test_host_files_are_unreachable(backend, state_dir, host_secrets):
    secret, (root_file, tmp_file) = host_secrets
    token = "canary-" + secrets.token_hex(8)
    passed = "passed-" + secrets.token_hex(8)
    # The secret also sits in the forgebox process's own environment: a
    # sandbox's environment starts empty, so it must not arrive inside.
    r = forgebox("run", "--backend", backend, "-q", "--timeout", INNER_TIMEOUT,
                 "--env", f"FBX_PASSED={passed}", "--",
                 "python3", "-c", HOST_FILES_PROBE, token, root_file, tmp_file,
                 env={"FBX_HOST_SECRET": secret}, state=state_dir)
    assert r.rc == 0, r
    assert r.stderr == "", r
    # The one assertion that matters most: the secret never shows up.
    assert secret.encode() not in r.out + r.err
    out = json.loads(r.stdout)

    labels = set(out["canary"])
    hidden = {l for l in labels if l.startswith("proc1_")}  # pid 1 is the agent: hidepid=2
    assert hidden == {"proc1_root", "proc1_cwd"}
    # Our own processes are visible, and the per-pid variants cover them.
    assert out["self"] in out["pids"]
    assert f"pid_root:{out['self']}" in labels

    # Control: the same reader, through the same paths, reads a file that is
    # in reach.  Had the host files been reachable the same way, it would
    # have read them.
    assert {l: out["canary"][l] for l in labels - hidden} == \
        {l: "READ:" + token for l in labels - hidden}
    assert {l: out["canary"][l] for l in hidden} == {l: "ENOENT" for l in hidden}

    # /root/... lands on the guest's own /root (0700 root): EACCES; pid 1's
    # links are invisible: ENOENT.  /tmp/... lands on the sandbox's own
    # empty tmpfs: ENOENT.
    got_root = out["targets"][root_file]
    assert got_root == {l: ("ENOENT" if l in hidden else "EACCES") for l in labels}
    got_tmp = out["targets"][tmp_file]
    assert got_tmp == {l: "ENOENT" for l in labels}

    # The agent (pid 1) is hidden: hidepid=2.  Control: our own are readable.
    assert out["proc1"] == {"environ": "ENOENT", "cmdline": "ENOENT", "status": "ENOENT",
                            "maps": "ENOENT"}
    assert out["self_environ"].startswith("READ:")
    assert f"FBX_PASSED={passed}" in out["self_environ"]
    assert "FBX_HOST_SECRET" not in out["self_environ"]
    assert out["self_cmdline"].startswith("READ:python3\0-c\0")

    # /dev holds only the harmless nodes; no disk, memory, console or
    # hypervisor device.  Control: /dev/urandom and /dev/null are there.
    assert out["dev"] == ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout",
                          "tty", "urandom", "zero"]
    nodes = dict(out["dev_nodes"])
    assert nodes.pop("/dev/urandom") == "chr 1:9"
    assert nodes.pop("/dev/null") == "chr 1:3"
    assert nodes == {p: "ENOENT" for p in nodes}
    # And no way to make one: mknod needs CAP_MKNOD.
    assert out["mknod_blk"] == "EPERM"
    # /sys is never mounted: the rootfs's empty mount point.
    assert out["sys"] == []

    # No host file descriptor leaked in: only stdio, plus the fd listdir used.
    fds = out["fds"]
    assert sorted(fds) == ["0", "1", "2", "3"], fds
    assert fds["3"] == "ENOENT"
    for fd in ("0", "1", "2"):
        assert fds[fd].startswith("pipe:[") or fds[fd] == "/dev/null", fds

    # Walking the whole sandbox filesystem finds no fbx-* host file.  Control:
    # it does find the canary and the links planted in /workspace.
    assert out["fbx_names"] == ["/workspace/fbx-canary"]


# ---------------------------------------------------------------------------
# 2. Writing the rootfs
# ---------------------------------------------------------------------------

def test_rootfs_is_read_only_and_scratch_is_writable(run, backend):
    script = r'''
touch /usr/bin/evil
echo pwned >> /etc/passwd
mkdir /opt/x
rm -f /usr/bin/ls
ln -s /workspace/evil /etc/evil
mv /etc/hostname /etc/hostname.old
mkdir /dev/x
echo --controls--
echo w1 > /workspace/w && cat /workspace/w
echo w2 > /tmp/w && cat /tmp/w
echo w3 > /dev/shm/w && cat /dev/shm/w
echo --package-managers--
for c in apt apt-get dpkg pip pip3 python3; do command -v $c; done
python3 -m pip --version
python3 -c '
import os
for line in open("/proc/self/mountinfo"):
    f = line.split()
    if f[4] == "/":
        print("root mount:", f[5].split(",")[0])
'
'''
    r = bash(run, backend, script)
    # rc is python3's: the last command.
    assert r.rc == 0, r
    # Appending to a file the tool user does not own: both roots are an
    # ext4 mounted read-only (the jail's through a loop device of its own),
    # so EROFS comes before the permission check.
    passwd = "Read-only file system"
    assert r.stderr.splitlines() == [
        "touch: cannot touch '/usr/bin/evil': Read-only file system",
        f"bash: line {line_of(script, '/etc/passwd')}: /etc/passwd: {passwd}",
        "mkdir: cannot create directory ‘/opt/x’: Read-only file system",
        "rm: cannot remove '/usr/bin/ls': Read-only file system",
        "ln: failed to create symbolic link '/etc/evil': Read-only file system",
        "mv: cannot move '/etc/hostname' to '/etc/hostname.old': Read-only file system",
        "mkdir: cannot create directory ‘/dev/x’: Read-only file system",
        "/usr/bin/python3: No module named pip",
    ], r
    assert r.stdout.splitlines() == [
        "--controls--", "w1", "w2", "w3",
        "--package-managers--", "/usr/bin/python3",  # command -v works; the others are absent
        "root mount: ro",
    ], r


# ---------------------------------------------------------------------------
# 3-4. Syscalls and sockets (one probe per backend, shared)
# ---------------------------------------------------------------------------

# Each call runs in a forked child (so a call that went through cannot
# change what the next one sees) and reports [return value, errno].
# Arguments are harmless and, where the kernel allows, chosen so that the
# call would NOT fail with EPERM if the filter let it through: a missing
# path (ENOENT), a bad fd (EBADF), a NULL struct (EFAULT/EINVAL), or a call
# an unprivileged process may make (ptrace(TRACEME), process_vm_readv on
# itself, unshare(CLONE_NEWUSER), add_key, userfaultfd, quotactl(Q_SYNC)).
# test_probe_detects_unfiltered_calls runs the same probe on the host
# without the filter to show that.
KERNEL_PROBE = r'''
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
L, P, S = ctypes.c_long, ctypes.c_void_p, ctypes.c_char_p
NULL = P(0)

def arg(a):
    return a if isinstance(a, (P, S)) else L(a)

def sc(nr, *args):
    return lambda: libc.syscall(L(nr), *[arg(a) for a in args])

class iovec(ctypes.Structure):
    _fields_ = [("base", P), ("len", ctypes.c_size_t)]
src = ctypes.create_string_buffer(b"fbx-probe-buffer", 64)
dst = ctypes.create_string_buffer(64)
local, remote = iovec(ctypes.cast(dst, P), 16), iovec(ctypes.cast(src, P), 16)
lp, rp = ctypes.cast(ctypes.pointer(local), P), ctypes.cast(ctypes.pointer(remote), P)
timex = ctypes.create_string_buffer(256)  # modes = 0: a pure query
SIGCHLD, NEWUSER, NEWNET, NEWNS = 17, 0x10000000, 0x40000000, 0x00020000
MISSING = S(b"/fbx-nonexistent")

SYSCALLS = {
    "mount": sc(165, S(b"none"), MISSING, S(b"tmpfs"), 0, NULL),
    "umount2": sc(166, MISSING, 0),
    "pivot_root": sc(155, MISSING, MISSING),
    "chroot": sc(161, MISSING),
    "reboot": sc(169, 0xfee1dead, 672274793, 0, NULL),  # LINUX_REBOOT_CMD_CAD_OFF
    "kexec_load": sc(246, 0, 0, NULL, 0),
    "kexec_file_load": sc(320, -1, -1, 0, NULL, 0),
    "init_module": sc(175, NULL, 0, S(b"")),
    "finit_module": sc(313, -1, S(b""), 0),
    "delete_module": sc(176, S(b"fbx_nonexistent"), os.O_NONBLOCK),
    "ptrace": sc(101, 0, 0, NULL, NULL),  # PTRACE_TRACEME
    "process_vm_readv": lambda: libc.syscall(L(310), L(os.getpid()), lp, L(1), rp, L(1), L(0)),
    "process_vm_writev": lambda: libc.syscall(L(311), L(os.getpid()), lp, L(1), rp, L(1), L(0)),
    "unshare": sc(272, NEWUSER),
    "setns": sc(308, -1, 0),
    "bpf": sc(321, 0, NULL, 0),
    "perf_event_open": sc(298, NULL, 0, -1, -1, 0),
    "keyctl": sc(250, 0, -3, 0),  # KEYCTL_GET_KEYRING_ID(session)
    "add_key": sc(248, S(b"user"), S(b"fbx"), S(b"x"), 1, -2),  # into the process keyring
    "request_key": sc(249, S(b"user"), S(b"fbx-none"), NULL, 0),
    "userfaultfd": sc(323, 0o2000000 | 1),  # O_CLOEXEC | UFFD_USER_MODE_ONLY
    "open_by_handle_at": sc(304, -1, NULL, 0),
    "swapon": sc(167, MISSING, 0),
    "swapoff": sc(168, MISSING),
    "acct": sc(163, MISSING),
    "quotactl": sc(179, 0x800001 << 8, NULL, 0, NULL),  # Q_SYNC, all filesystems
    # more of the same family
    "unshare(CLONE_NEWNET)": sc(272, NEWNET),
    "unshare(CLONE_NEWNS)": sc(272, NEWNS),
    "unshare(CLONE_NEWUSER|CLONE_NEWNET)": sc(272, NEWUSER | NEWNET),
    "clone(CLONE_NEWUSER)": sc(56, NEWUSER | SIGCHLD, 0, 0, 0, 0),
    "clone(CLONE_NEWNET)": sc(56, NEWNET | SIGCHLD, 0, 0, 0, 0),
    "clone(CLONE_NEWUSER|CLONE_NEWNET)": sc(56, NEWUSER | NEWNET | SIGCHLD, 0, 0, 0, 0),
    "io_uring_setup": sc(425, 1, NULL),
    "fsopen": sc(430, S(b"tmpfs"), 0),
    "open_tree": sc(428, -100, S(b"/"), 1),  # OPEN_TREE_CLONE
    "move_mount": sc(429, -1, S(b""), -1, S(b""), 0),
    "syslog": sc(103, 10, NULL, 0),  # SYSLOG_ACTION_SIZE_BUFFER
    "iopl": sc(172, 3),
    "ioperm": sc(173, 0x80, 1, 1),
    "personality(ADDR_NO_RANDOMIZE)": sc(135, 0x0040000),
    "ioctl(TIOCSTI)": lambda: libc.syscall(L(16), L(0), L(0x5412), S(b"x")),
    # The kernel reads the request as 32 bits: high bits must not slip past.
    "ioctl(TIOCSTI|1<<32)": lambda: libc.syscall(L(16), L(0), L(0x100005412), S(b"x")),
    "ioctl(TIOCLINUX|1<<32)": lambda: libc.syscall(L(16), L(0), L(0x10000541C), S(b"x")),
    "pidfd_getfd": sc(438, -1, 0, 0),
    "kcmp": sc(312, os.getpid(), os.getpid(), 0, 0, 0),
    "adjtimex": lambda: libc.syscall(L(159), timex),
    # the odd ones out and the controls
    "clone3": sc(435, NULL, 0),
    "getpid": sc(39),
    "close(-1)": sc(3, -1),
    "clone(SIGCHLD)": sc(56, SIGCHLD, 0, 0, 0, 0),
    "personality(query)": sc(135, 0xffffffff),
}

def in_child(name, fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        me = os.getpid()
        ctypes.set_errno(0)
        ret = fn()
        e = ctypes.get_errno() if ret == -1 else 0
        if os.getpid() != me:
            os._exit(0)  # the new process of a clone that went through
        if name.startswith("clone") and ret > 0:
            os.waitpid(ret, 0)
        os.write(w, json.dumps([ret, e]).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)

out = {"pid": os.getpid(), "syscalls": {n: in_child(n, f) for n, f in SYSCALLS.items()}}

SOCKETS = {
    "AF_INET/SOCK_STREAM": (2, 1, 0),
    "AF_INET/SOCK_DGRAM": (2, 2, 0),
    "AF_INET6/SOCK_STREAM": (10, 1, 0),
    "AF_INET/SOCK_RAW": (2, 3, 1),  # IPPROTO_ICMP
    "AF_PACKET": (17, 3, 0x0300),  # htons(ETH_P_ALL)
    "AF_NETLINK": (16, 3, 0),  # NETLINK_ROUTE
    "AF_VSOCK": (40, 1, 0),
    "AF_ALG": (38, 5, 0),
    "AF_KEY": (15, 3, 2),
    "AF_XDP": (44, 3, 0),
    "AF_UNIX/SOCK_STREAM": (1, 1, 0),  # control
    "AF_UNIX/SOCK_DGRAM": (1, 2, 0),  # control
}
socks = {}
for name, (fam, typ, proto) in SOCKETS.items():
    ctypes.set_errno(0)
    fd = libc.socket(fam, typ, proto)
    socks[name] = [1 if fd >= 0 else -1, ctypes.get_errno() if fd < 0 else 0]
    if fd >= 0:
        os.close(fd)
pair = (ctypes.c_int * 2)()
for name, fam in (("socketpair(AF_INET)", 2), ("socketpair(AF_UNIX)", 1)):
    ctypes.set_errno(0)
    rc = libc.socketpair(fam, 1, 0, pair)
    socks[name] = [rc, ctypes.get_errno() if rc < 0 else 0]
    if rc == 0:
        os.close(pair[0]); os.close(pair[1])
out["sockets"] = socks

# Control: AF_UNIX really works end to end, abstract namespace included.
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind("\0fbx-probe-%d" % os.getpid())
srv.listen(1)
cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
cli.connect("\0fbx-probe-%d" % os.getpid())
conn, _ = srv.accept()
cli.sendall(b"ping")
out["unix_roundtrip"] = conn.recv(4).decode()

def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError as e:
        return errno.errorcode[e.errno]
dev = lines("/proc/net/dev")
out["net_dev_header"] = dev[:2] if isinstance(dev, list) else dev
out["net_ifaces"] = [l.split(":")[0].strip() for l in dev[2:]] if isinstance(dev, list) else dev
route = lines("/proc/net/route")
out["net_routes"] = route[1:] if isinstance(route, list) else route
out["net_routes_header"] = route[:1] if isinstance(route, list) else route
try:
    out["sys_class_net"] = os.listdir("/sys/class/net")
except OSError as e:
    out["sys_class_net"] = errno.errorcode[e.errno]
print(json.dumps(out))
'''

# The syscalls the contract names, plus their siblings; all refused with EPERM.
REFUSED_SYSCALLS = [
    "mount", "umount2", "pivot_root", "chroot", "reboot", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "ptrace", "process_vm_readv",
    "process_vm_writev", "unshare", "setns", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "userfaultfd", "open_by_handle_at", "swapon", "swapoff", "acct", "quotactl",
    "unshare(CLONE_NEWNET)", "unshare(CLONE_NEWNS)", "unshare(CLONE_NEWUSER|CLONE_NEWNET)",
    "clone(CLONE_NEWUSER)", "clone(CLONE_NEWNET)", "clone(CLONE_NEWUSER|CLONE_NEWNET)",
    "io_uring_setup", "fsopen", "open_tree", "move_mount", "syslog", "iopl", "ioperm",
    "personality(ADDR_NO_RANDOMIZE)", "ioctl(TIOCSTI)", "ioctl(TIOCSTI|1<<32)",
    "ioctl(TIOCLINUX|1<<32)", "pidfd_getfd", "kcmp", "adjtimex",
]

REFUSED_SOCKETS = [
    "AF_INET/SOCK_STREAM", "AF_INET/SOCK_DGRAM", "AF_INET6/SOCK_STREAM", "AF_INET/SOCK_RAW",
    "AF_PACKET", "AF_NETLINK", "AF_VSOCK", "AF_ALG", "AF_KEY", "AF_XDP", "socketpair(AF_INET)",
]

_kernel_probe_cache = {}


@pytest.fixture(scope="module")
def kernel_probe(state_dir):
    """kernel_probe(backend) -> the probe's JSON; one sandbox per backend per module."""
    def get(backend):
        if backend not in _kernel_probe_cache:
            r = forgebox("run", "--backend", backend, "-q", "--timeout", INNER_TIMEOUT, "--",
                         "python3", "-c", KERNEL_PROBE, state=state_dir)
            assert r.rc == 0, r
            assert r.stderr == "", r
            _kernel_probe_cache[backend] = json.loads(r.stdout)
        return _kernel_probe_cache[backend]
    return get


@pytest.mark.parametrize("name", REFUSED_SYSCALLS)
def test_syscall_is_refused(kernel_probe, backend, name):
    ret, err = kernel_probe(backend)["syscalls"][name]
    assert (ret, errno.errorcode.get(err, err)) == (-1, "EPERM")


def test_syscall_probe_controls(kernel_probe, backend):
    calls = kernel_probe(backend)["syscalls"]
    assert set(calls) == set(REFUSED_SYSCALLS) | {"clone3", "getpid", "close(-1)",
                                                  "clone(SIGCHLD)", "personality(query)"}
    # clone3 answers ENOSYS so that glibc falls back to clone, whose flags
    # the filter can see.
    assert calls["clone3"] == [-1, errno.ENOSYS]
    # Allowed calls go through and their errors come back as themselves:
    # the probe reports what the kernel said, not a constant EPERM.
    ret, err = calls["getpid"]
    assert ret > 0 and err == 0
    assert calls["close(-1)"] == [-1, errno.EBADF]
    # clone without namespace flags (fork) is allowed: the refusals above
    # are about the CLONE_NEW* flags.
    ret, err = calls["clone(SIGCHLD)"]
    assert ret > 0 and err == 0
    assert calls["personality(query)"][1] == 0


def test_probe_detects_unfiltered_calls():
    """The same probe on the host, as an unprivileged user and without the
    filter, gets answers other than EPERM: so EPERM inside is the filter."""
    r = subprocess.run(["/usr/bin/python3", "-c", KERNEL_PROBE], user=65534, group=65534,
                       extra_groups=[], cwd="/", stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r
    out = json.loads(r.stdout)
    calls, socks = out["syscalls"], out["sockets"]
    assert calls["setns"] == [-1, errno.EBADF]
    assert calls["clone3"] == [-1, errno.EINVAL]
    assert calls["ptrace"] == [0, 0]
    assert calls["process_vm_readv"] == [16, 0]
    assert calls["ioctl(TIOCSTI)"] == [-1, errno.ENOTTY]
    assert calls["ioctl(TIOCSTI|1<<32)"] == [-1, errno.ENOTTY]
    assert calls["mount"] == [-1, errno.ENOENT]
    assert socks["AF_INET/SOCK_STREAM"] == [1, 0]
    assert socks["socketpair(AF_INET)"] == [-1, errno.EOPNOTSUPP]


@pytest.mark.parametrize("name", REFUSED_SOCKETS)
def test_socket_family_is_refused(kernel_probe, backend, name):
    ret, err = kernel_probe(backend)["sockets"][name]
    assert (ret, errno.errorcode.get(err, err)) == (-1, "EPERM")


def test_unix_sockets_work_and_there_is_no_nic(kernel_probe, backend):
    out = kernel_probe(backend)
    socks = out["sockets"]
    # Control: AF_UNIX is allowed, so the refusals above are per family.
    assert socks["AF_UNIX/SOCK_STREAM"] == [1, 0]
    assert socks["AF_UNIX/SOCK_DGRAM"] == [1, 0]
    assert socks["socketpair(AF_UNIX)"] == [0, 0]
    assert out["unix_roundtrip"] == "ping"
    # No network interface but loopback (jail: an empty net namespace; vm:
    # no NIC), no route, and no /sys to look in.  Control: the interface
    # table itself is readable, so an extra NIC would show.
    assert out["net_dev_header"][0].startswith("Inter-|")
    assert out["net_ifaces"] == ["lo"]
    # /proc/net/route: no route at all (an empty table may print no header).
    assert [l for l in out["net_routes_header"] + out["net_routes"]
            if not l.startswith("Iface\t")] == []
    assert out["sys_class_net"] == "ENOENT"


# ---------------------------------------------------------------------------
# 5. Seeing host processes
# ---------------------------------------------------------------------------

PROC_SCAN = r'''
import json, os, sys
procs = {}
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        with open("/proc/%s/status" % p) as f:
            status = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        with open("/proc/%s/cmdline" % p, "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        continue  # exited while we looked
    procs[p] = {"uid": status["Uid"].split(), "comm": status["Name"].strip(), "cmdline": cmdline}
out = {"self": os.getpid(), "procs": procs, "probes": {}}
for pid in sys.argv[2:]:
    try:
        os.stat("/proc/" + pid)
        out["probes"][pid] = "visible"
    except OSError as e:
        out["probes"][pid] = os.strerror(e.errno)
print(json.dumps(out))
'''

HOST_NAMES = ("qemu", "forgebox", "systemd", "sshd", "pytest", "containerd", "dockerd")


def test_host_processes_are_invisible(run, backend):
    marker = "fbx-hostproc-" + secrets.token_hex(6)
    host_proc = subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(300)", marker])
    try:
        # Control: the scanner, run on the host, sees the host process and
        # this test runner.
        host = json.loads(subprocess.run(["/usr/bin/python3", "-c", PROC_SCAN, "self-host"],
                                         stdout=subprocess.PIPE, check=True).stdout)
        assert any(marker in p["cmdline"] for p in host["procs"].values())
        assert str(os.getpid()) in host["procs"]

        self_marker = "fbx-self-" + secrets.token_hex(6)
        _, out = probe(run, backend, PROC_SCAN, self_marker,
                       str(host_proc.pid), str(os.getpid()), "1")
    finally:
        host_proc.kill()
        host_proc.wait()
    procs = out["procs"]
    # Control: the scanner sees itself inside.
    me = procs[str(out["self"])]
    assert me["comm"] == "python3" and self_marker in me["cmdline"]
    # Only the sandbox's own processes: all uid 1000, very few of them,
    # nothing of the host's, not the agent.
    assert 1 <= len(procs) <= 3, procs
    assert all(p["uid"] == ["1000"] * 4 for p in procs.values()), procs
    for p in procs.values():
        text = (p["comm"] + " " + p["cmdline"]).lower()
        assert not any(n in text for n in HOST_NAMES), p
        assert marker not in text and "fb-agent" not in text, p
    # The host's pids and pid 1 (the agent) are not there to look at.
    assert out["probes"] == {str(host_proc.pid): "No such file or directory",
                             str(os.getpid()): "No such file or directory",
                             "1": "No such file or directory"}


# ---------------------------------------------------------------------------
# 6. setuid
# ---------------------------------------------------------------------------

def test_setuid_gives_nothing(run, backend, tmp_path):
    # A setuid-root copy of bash offered through the file API: the put keeps
    # only the permission bits and the tool user owns what it writes.
    local = tmp_path / "suid-bash"
    local.write_bytes(open("/bin/bash", "rb").read())
    os.chown(local, 0, 0)
    os.chmod(local, 0o4755)
    script = r'''
echo "--find-rootfs--"
find / -xdev -perm /6000 -type f 2>&1 | grep -v '^find: .*: Permission denied$'
echo "--find-workspace--"
cp /bin/bash /workspace/sh && chmod u+s,g+s /workspace/sh && echo chmod-ok
find /workspace -perm /6000 -type f | sort
stat -c '%a %u %g %n' /workspace/sh /workspace/suid-bash
echo "--run--"
/workspace/sh -p -c 'echo $(id -u) $(id -ru) $(id -g)'
/workspace/suid-bash -p -c 'echo $(id -u) $(id -ru) $(id -g)'
echo "--chown--"
chown 0 /workspace/sh
chown 0:0 /workspace/suid-bash
chown 1001 /workspace/sh
chgrp 0 /workspace/sh
echo "--setuid--"
python3 -c '
import os
for name, f in (("setuid", lambda: os.setuid(0)), ("setresuid", lambda: os.setresuid(0, 0, 0)),
                ("setgid", lambda: os.setgid(0)), ("setgroups", lambda: os.setgroups([0]))):
    try:
        f(); print(name, "OK")
    except OSError as e:
        print(name, e.strerror)
for line in open("/proc/self/mountinfo"):
    f = line.split()
    mnt, opts = f[4], f[5].split(",")
    if os.path.isdir(mnt) and "nosuid" not in opts:
        print("suid-capable mount:", mnt)
'
'''
    # find runs as uid 1000, so it skips the root-only (0700) directories,
    # from which uid 1000 could not execute anything anyway; the host-side
    # scan of the image covers those too.
    image_rootfs = os.path.join(IMAGE, "rootfs")
    assert os.path.isdir(os.path.join(image_rootfs, "usr/bin"))
    suid = [os.path.join(d, n) for d, _, files in os.walk(image_rootfs) for n in files
            if not os.path.islink(os.path.join(d, n))
            and os.lstat(os.path.join(d, n)).st_mode & 0o6000]
    assert suid == []
    r = bash(run, backend, script, "--put", f"{local}:/workspace/suid-bash")
    assert r.rc == 0, r
    assert r.stdout.splitlines() == [
        "--find-rootfs--",  # no setuid or setgid file anywhere in the image
        "--find-workspace--",
        "chmod-ok",
        "/workspace/sh",  # control: find does see a setuid file
        "6755 1000 1000 /workspace/sh",
        "755 1000 1000 /workspace/suid-bash",  # the put dropped setuid and root
        "--run--",
        "1000 1000 1000",  # nosuid mount + no_new_privs: bash -p stays uid 1000
        "1000 1000 1000",
        "--chown--",
        "--setuid--",
        "setuid Operation not permitted",
        "setresuid Operation not permitted",
        "setgid Operation not permitted",
        "setgroups Operation not permitted",
        # and no mount a binary could be run from with setuid effect
    ], r
    assert r.stderr.splitlines() == [
        "chown: changing ownership of '/workspace/sh': Operation not permitted",
        "chown: changing ownership of '/workspace/suid-bash': Operation not permitted",
        "chown: changing ownership of '/workspace/sh': Operation not permitted",
        "chgrp: changing group of '/workspace/sh': Operation not permitted",
    ], r


# ---------------------------------------------------------------------------
# 7. /proc/sys and /proc/sysrq-trigger
# ---------------------------------------------------------------------------

MASKED = ("/proc/sysrq-trigger", "/proc/kcore", "/proc/kmsg", "/proc/keys", "/proc/timer_list",
          "/proc/kallsyms")


def _host_read(path):
    with open(path) as f:
        return f.read()


def test_proc_sys_is_read_only_and_sysrq_is_masked(run, backend):
    host_before = {p: _host_read(p) for p in ("/proc/sys/kernel/hostname",
                                             "/proc/sys/kernel/core_pattern")}
    script = r"""
echo fbx > /proc/sys/kernel/hostname
echo 3 > /proc/sys/vm/drop_caches
echo '|/workspace/x' > /proc/sys/kernel/core_pattern
echo --controls--
cat /proc/sys/kernel/hostname
grep -c workspace /proc/sys/kernel/core_pattern
echo --masked--
for f in MASKED; do
    if [ -e $f ]; then stat -c "%n %F %t:%T" $f; else echo "$f absent"; fi
done
echo --sysrq--
echo b > /proc/sysrq-trigger
echo "sysrq rc=$?"
echo still-here
""".replace("MASKED", " ".join(MASKED))
    r = bash(run, backend, script)
    assert r.rc == 0, r
    before, rest = r.stdout.split("--masked--\n")
    masked, sysrq = rest.split("--sysrq--\n")
    # Controls: /proc/sys is readable, so a changed value would show.
    # (The jail's uts namespace is named "forgebox"; the VM's kernel keeps
    # its default.)
    hostname = {"jail": "forgebox", "vm": "(none)"}[backend]
    assert before.splitlines() == ["--controls--", hostname, "0"], r

    # Files a container runtime masks are /dev/null (char 1:3) where the
    # kernel has them.  The VM's Debian kernel has all six; the jail sees
    # the host's kernel, which may lack some (then they are simply absent).
    def expect(path):
        if backend == "jail" and not os.path.exists(path):
            return f"{path} absent"
        return f"{path} character special file 1:3"
    assert masked.splitlines() == [expect(p) for p in MASKED], r
    sysrq_masked = expect("/proc/sysrq-trigger").endswith("1:3")
    # 'b' (reboot now) goes into /dev/null, or finds no file to write; either
    # way the sandbox carries on and returns.
    assert sysrq.splitlines() == ["sysrq rc=0" if sysrq_masked else "sysrq rc=1", "still-here"], r
    errors = [f"bash: line {line_of(script, '> ' + p)}: {p}: Read-only file system"
              for p in ("/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches",
                        "/proc/sys/kernel/core_pattern")]
    if not sysrq_masked:
        errors.append(f"bash: line {line_of(script, '> /proc/sysrq-trigger')}: "
                      "/proc/sysrq-trigger: No such file or directory")
    assert r.stderr.splitlines() == errors, r

    # The host is untouched and still runs sandboxes.
    assert {p: _host_read(p) for p in host_before} == host_before
    r2 = run(backend, "-q", "--", "echo", "second sandbox")
    assert (r2.rc, r2.stdout) == (0, "second sandbox\n"), r2


# ---------------------------------------------------------------------------
# 8. Capabilities and the process's security state
# ---------------------------------------------------------------------------

def test_no_capabilities_no_new_privs_seccomp(run, backend):
    # Read both by the shell's child (cat, after an execve) and by python.
    script = r'''
grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status
echo --
python3 -c '
import ctypes
libc = ctypes.CDLL(None)
# PR_CAPBSET_READ, PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP, PR_CAP_AMBIENT_IS_SET(CAP_SYS_ADMIN)
print(libc.prctl(23, 21, 0, 0, 0), libc.prctl(39, 0, 0, 0, 0), libc.prctl(21, 0, 0, 0, 0),
      libc.prctl(47, 1, 21, 0, 0))
'
'''
    r = bash(run, backend, script)
    assert r.rc == 0, r
    status, prctl = r.stdout.split("--\n")
    fields = dict(l.split(":", 1) for l in status.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields == {
        "Uid": "1000\t1000\t1000\t1000",
        "Gid": "1000\t1000\t1000\t1000",
        "Groups": "",
        "CapInh": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "CapAmb": "0000000000000000",
        "NoNewPrivs": "1",
        "Seccomp": "2",
    }, r
    # CAP_SYS_ADMIN not in the bounding set; no_new_privs 1; seccomp mode 2
    # (filter); CAP_SYS_ADMIN not ambient.
    assert prctl == "0 1 2 0\n", r


# ---------------------------------------------------------------------------
# 9. Reaching another sandbox
# ---------------------------------------------------------------------------

SANDBOX_A = r'''
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
for p in ("/workspace/a-marker", "/tmp/a-marker", "/dev/shm/a-marker"):
    with open(p, "w") as f:
        f.write("a")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind("\0fbx-a")
srv.listen(8)
shmid = libc.shmget(0xfb0a, 4096, 0o1000 | 0o666)  # IPC_CREAT
assert shmid >= 0, ctypes.get_errno()
libc.mq_open.restype = ctypes.c_int
mq = libc.mq_open(b"/fbx-a", os.O_CREAT | os.O_RDWR, 0o666, None)
assert mq >= 0, ctypes.get_errno()
print("ready", flush=True)
time.sleep(600)
'''

SANDBOX_B = r'''
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
host_socket = sys.argv[2]
out = {}
for p in ("/workspace/b-marker", "/tmp/b-marker", "/dev/shm/b-marker"):
    with open(p, "w") as f:
        f.write("b")
found = []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
    found += [os.path.join(root, n) for n in files if n.endswith("-marker")]
out["markers"] = sorted(found)

def connect(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(name)
        return "CONNECTED"
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        s.close()
mine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
mine.bind("\0fbx-b")
mine.listen(1)
out["connect"] = {"a": connect("\0fbx-a"), "host": connect("\0" + host_socket),
                  "own": connect("\0fbx-b")}

ctypes.set_errno(0)
out["shmget_a"] = errno.errorcode.get(ctypes.get_errno()) if libc.shmget(0xfb0a, 0, 0) < 0 else "FOUND"
own = libc.shmget(0xfb0b, 4096, 0o1000 | 0o600)
with open("/proc/sysvipc/shm") as f:
    out["shm_keys"] = sorted(int(l.split()[0]) for l in f.read().splitlines()[1:])
libc.shmctl(own, 0, None)  # IPC_RMID
ctypes.set_errno(0)
mq = libc.mq_open(b"/fbx-a", os.O_RDWR)
out["mq_a"] = errno.errorcode.get(ctypes.get_errno()) if mq < 0 else "FOUND"
mq = libc.mq_open(b"/fbx-b", os.O_CREAT | os.O_RDWR, 0o600, None)
out["mq_own"] = "OK" if mq >= 0 else errno.errorcode.get(ctypes.get_errno())

cmdlines = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmdlines.append(f.read().replace(b"\0", b" ").decode())
        except OSError:
            pass
out["cmdlines"] = cmdlines
print(json.dumps(out))
'''


KILL_ALL = r'''
import os, signal, time
child = os.fork()
if child == 0:
    time.sleep(600)
    os._exit(0)
os.kill(-1, signal.SIGKILL)
_, status = os.waitpid(child, 0)
print("sent child-status=%d" % os.WTERMSIG(status))
'''


def _wait_line(proc, timeout):
    """First stdout line of proc, or b'' if none came within timeout."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return b""
        return proc.stdout.readline()
    finally:
        sel.close()


def test_sandboxes_cannot_reach_each_other(run, backend, state_dir):
    tag = secrets.token_hex(6)
    a_marker = f"fbx-sandbox-a-{tag}"
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir)
    # A host-side abstract socket too: the jail shares the host kernel, and
    # abstract unix sockets are scoped by network namespace only.
    host_name = f"fbx-host-{tag}"
    host_srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host_srv.bind("\0" + host_name)
    host_srv.listen(1)
    a = subprocess.Popen([FORGEBOX, "run", "--backend", backend, "-q", "--timeout", "900", "--",
                          "python3", "-c", SANDBOX_A, a_marker],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env)
    try:
        line = _wait_line(a, 180)
        assert line == b"ready\n", (line, a.poll())

        b_marker = f"fbx-sandbox-b-{tag}"
        _, out = probe(run, backend, SANDBOX_B, b_marker, host_name)
        # Files: A's markers are nowhere; control: B's own are found.
        assert out["markers"] == ["/dev/shm/b-marker", "/tmp/b-marker", "/workspace/b-marker"]
        # Abstract unix sockets: A's and the host's are not there; control:
        # B's own accepts.
        assert out["connect"] == {"a": "ECONNREFUSED", "host": "ECONNREFUSED",
                                  "own": "CONNECTED"}
        # SysV shared memory and POSIX message queues: A's do not exist for
        # B; control: B's own shows up in the same listing.
        assert out["shmget_a"] == "ENOENT"
        assert out["shm_keys"] == [0xfb0b]
        assert out["mq_a"] == "ENOENT"
        assert out["mq_own"] == "OK"
        # Processes: none of A's; control: B sees itself.
        assert not any(a_marker in c for c in out["cmdlines"]), out["cmdlines"]
        assert any(b_marker in c for c in out["cmdlines"]), out["cmdlines"]

        # Nor does the host see A's IPC objects or socket (its own namespaces).
        with open("/proc/sysvipc/shm") as f:
            assert not any(l.split()[0] == str(0xfb0a) for l in f.read().splitlines()[1:])
        with open("/proc/net/unix") as f:
            assert "@fbx-a\n" not in f.read()

        # B signals everything it may (kill -1): A survives.
        # Control: kill -1 does reach B's own child.
        r = run(backend, "-q", "--timeout", INNER_TIMEOUT, "--", "python3", "-c", KILL_ALL)
        assert (r.rc, r.stdout) == (0, "sent child-status=9\n"), r
        assert a.poll() is None, "sandbox A died when B signalled everything"

        # Ending A's forgebox process ends A and cleans it up (no_leftovers
        # checks the host afterwards).
        a.send_signal(signal.SIGTERM)
        a_out, a_err = a.communicate(timeout=120)
        assert a.returncode == 128 + signal.SIGTERM, (a.returncode, a_out, a_err)
        assert a_out == b""
    finally:
        host_srv.close()
        if a.poll() is None:
            a.kill()
            a.wait(timeout=120)
