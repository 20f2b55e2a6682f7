"""Attacks on the paths the agent's exec fast path changed (session 5).

The seccomp program is now compiled at build time and loaded as ONE filter
per exec (the TIOCSTI/TIOCLINUX/RLIMIT_CORE refinements jump into the
allowlist instead of being a second stacked filter); the capability
bounding set is emptied once in the agent instead of in every child; each
exec's Landlock domain comes from one ruleset built at hello; a child
resets only the signals the agent does not leave at SIG_DFL.  Each test
attacks one of those from inside a sandbox and asserts the exact refusal,
with a control that shows the probe would have seen a success.
Session 7: the child is a plain clone(SIGCHLD), writes its OOM score
itself and searches the default PATH without writing `environ`; its
score, limits, ids and the PATH search are checked as the command sees
them.
Session 8: the child is clone(CLONE_VM | CLONE_VFORK), posix_spawn's way;
what must stay its own, and its watchdog's end, are checked too.
"""
import ctypes
import errno
import json
import os
import subprocess

import pytest

from conftest import FORGEBOX, IMAGE, RUN_DIR

INNER_TIMEOUT = "120"

# Every call in a forked child; [return value, errno name].
REFINEMENT_PROBE = r'''
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
L, P = ctypes.c_long, ctypes.c_void_p

def call(*args):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        ret = libc.syscall(*[a if isinstance(a, P) else L(a) for a in args])
        e = ctypes.get_errno() if ret < 0 else 0
        os.write(w, json.dumps([ret, errno.errorcode.get(e, e) if e else 0]).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 200)
    os.waitpid(pid, 0)
    os.close(r)
    return json.loads(data)

rl = (ctypes.c_uint64 * 2)(0, 0)
old = (ctypes.c_uint64 * 2)(7, 7)
x = ctypes.create_string_buffer(b"x")
pr, pw = os.pipe()
SIGCHLD, NEWUSER, NEWNS, NEWTIME = 17, 0x10000000, 0x00020000, 0x80
out = {
    "ioctl(TIOCSTI)": call(16, 0, 0x5412, P(ctypes.addressof(x))),
    "ioctl(TIOCSTI|ffffffff<<32)": call(16, 0, 0xffffffff00005412 - (1 << 64), P(ctypes.addressof(x))),
    "ioctl(TIOCLINUX)": call(16, 0, 0x541C, P(ctypes.addressof(x))),
    "ioctl(TIOCLINUX|1<<32)": call(16, 0, 0x10000541C, P(ctypes.addressof(x))),
    "ioctl(TCGETS) on a pipe": call(16, pr, 0x5401, P(ctypes.addressof(rl))),
    "setrlimit(CORE, 0)": call(160, 4, P(ctypes.addressof(rl))),
    "setrlimit(CORE|1<<32, 0)": call(160, 4 | (1 << 32), P(ctypes.addressof(rl))),
    "prlimit64(CORE, new 0)": call(302, 0, 4, P(ctypes.addressof(rl)), P(0)),
    "prlimit64(CORE|1<<32, new 0)": call(302, 0, 4 | (1 << 32), P(ctypes.addressof(rl)), P(0)),
    "prlimit64(CORE, query)": call(302, 0, 4, P(0), P(ctypes.addressof(old))),
    "clone(CLONE_NEWUSER|CLONE_NEWNS)": call(56, NEWUSER | NEWNS | SIGCHLD, 0, 0, 0, 0),
    "clone(CLONE_NEWTIME)": call(56, NEWTIME | SIGCHLD, 0, 0, 0, 0),
    "clone3": call(435, P(0), 0),
    "socket(AF_INET6, SOCK_DGRAM)": call(41, 10, 2, 0),
    "socket(AF_NETLINK)": call(41, 16, 3, 0),
    "socket(AF_VSOCK)": call(41, 40, 1, 0),
}
import resource
out["core_limit"] = list(resource.getrlimit(resource.RLIMIT_CORE))
rl[0] = rl[1] = 64
out["setrlimit(NOFILE, 64)"] = call(160, 7, P(ctypes.addressof(rl)))
fds = (ctypes.c_int * 2)()
out["socketpair(AF_UNIX)"] = call(53, 1, 1, 0, P(ctypes.addressof(fds)))
print(json.dumps(out))
'''


def test_one_filter_keeps_every_refinement(run, backend):
    r = run(backend, "-q", "--timeout", INNER_TIMEOUT, "--", "python3", "-c", REFINEMENT_PROBE)
    assert r.rc == 0 and r.stderr == "", r
    got = json.loads(r.stdout)
    for name in ("ioctl(TIOCSTI)", "ioctl(TIOCSTI|ffffffff<<32)", "ioctl(TIOCLINUX)",
                 "ioctl(TIOCLINUX|1<<32)", "setrlimit(CORE, 0)", "setrlimit(CORE|1<<32, 0)",
                 "prlimit64(CORE, new 0)", "prlimit64(CORE|1<<32, new 0)",
                 "clone(CLONE_NEWUSER|CLONE_NEWNS)", "clone(CLONE_NEWTIME)",
                 "socket(AF_INET6, SOCK_DGRAM)", "socket(AF_NETLINK)", "socket(AF_VSOCK)"):
        assert got[name] == [-1, "EPERM"], (name, got)
    assert got["clone3"] == [-1, "ENOSYS"], got
    # Controls: the same calls with other arguments reach the kernel.
    assert got["ioctl(TCGETS) on a pipe"] == [-1, "ENOTTY"], got
    assert got["prlimit64(CORE, query)"] == [0, 0], got
    assert got["core_limit"] == [1, 1], got
    assert got["setrlimit(NOFILE, 64)"] == [0, 0], got
    assert got["socketpair(AF_UNIX)"] == [0, 0], got


def test_a_tool_process_has_one_filter_no_caps_and_default_signals(run, backend):
    # cat is the exec itself (no shell, no python that would set its own
    # handlers): what it reports is what the agent's child handed it.
    r = run(backend, "-q", "--", "cat", "/proc/self/status")
    assert r.rc == 0, r
    fields = {k: v.strip() for k, v in (l.split(":", 1) for l in r.stdout.splitlines() if ":" in l)}
    assert {k: fields.get(k) for k in ("Seccomp", "Seccomp_filters", "NoNewPrivs", "CapBnd",
                                       "CapPrm", "CapEff", "CapInh", "CapAmb", "SigIgn",
                                       "SigCgt", "SigBlk")} == {
        "Seccomp": "2", "Seccomp_filters": "1", "NoNewPrivs": "1",
        "CapBnd": "0000000000000000", "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000", "CapInh": "0000000000000000",
        "CapAmb": "0000000000000000",
        # The agent ignores SIGPIPE; its children must not inherit that.
        "SigIgn": "0000000000000000", "SigCgt": "0000000000000000",
        "SigBlk": "0000000000000000",
    }, r.stdout
    # Control: the same read shows a non-zero mask where one is set.
    r = run(backend, "-q", "--", "bash", "-c", "trap '' PIPE; grep SigIgn /proc/self/status")
    assert r.rc == 0 and r.stdout == "SigIgn:\t0000000000001000\n", r


def test_a_tool_process_is_the_oom_killers_first_pick_with_its_limits(run, backend):
    """The child writes its own OOM score and limits before its execve
    (session 7: a plain clone(SIGCHLD) and the score written without
    fb_write_file); the command must see them, and the uid change."""
    r = run(backend, "-q", "--", "cat", "/proc/self/oom_score_adj", "/proc/self/limits",
            "/proc/self/status")
    assert r.rc == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "1000", r.stdout
    limits = {l[:26].strip(): l[26:].split()[:2] for l in lines[1:] if l.startswith("Max ")}
    assert limits["Max core file size"] == ["1", "1"], limits
    assert limits["Max pending signals"] == ["1024", "1024"], limits
    uid = next(l for l in lines if l.startswith("Uid:")).split()[1:]
    assert uid == ["1000"] * 4, uid
    # 1000 is the child's write (a jail) or the agent's own score that the
    # child inherited (a VM, session 8); what the command starts inherits it.
    r = run(backend, "-q", "--", "sh", "-c", "cat /proc/self/oom_score_adj; sh -c 'cat /proc/self/oom_score_adj'")
    assert r.rc == 0 and r.stdout == "1000\n1000\n", r


def test_the_spawned_child_leaves_the_agent_its_own_oom_score_and_no_watchdog(run, backend):
    """Session 8: the child runs in the agent's memory until its execve
    (clone(CLONE_VM | CLONE_VFORK)).  Its OOM score of 1000 must stay its
    own (the kernel spreads a write to every process sharing the memory
    unless the writer is a vfork child), and the watchdog timer it arms
    before its uid change must be gone with the execve: a command that
    outlives the watchdog (5 s) is not killed, and holds no POSIX timer."""
    r = run(backend, "-q", "--", "cat", "/proc/self/oom_score_adj")
    assert r.rc == 0 and r.stdout == "1000\n", r
    r = run(backend, "-q", "--", "cat", "/proc/self/timers")
    assert r.rc == 0 and r.stdout == "", r
    r = run(backend, "-q", "--timeout", "30", "--", "sleep", "6")
    assert r.rc == 0 and r.stderr == "", r


def test_a_tool_process_cannot_lower_its_oom_score(run, backend):
    """The score of 1000 is also the floor: set by root, it cannot be
    lowered without CAP_SYS_RESOURCE.  Session 8 (second round): a VM's
    child no longer writes it; the agent takes 1000 itself around the
    clone and the child inherits score and floor.  Lowering must still be
    refused, in the command and in what it starts.  In a jail the floor
    is not 1000 (docs/security-model.md, "OOM order in a jail": no
    CAP_SYS_RESOURCE in the host's user namespace); a command there can
    lower its score, but -1000 stays refused (the jail is unchanged)."""
    r = run(backend, "-q", "--", "sh", "-c",
            "echo 999 > /proc/self/oom_score_adj && echo lowered; "
            "sh -c 'echo -1000 > /proc/self/oom_score_adj && echo to-agents'; cat /proc/self/oom_score_adj")
    assert "to-agents" not in r.stdout, r
    if backend == "vm":
        assert "lowered" not in r.stdout, r
        assert r.stdout.splitlines()[-1:] == ["1000"], r


def _descendants(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def test_a_jail_agent_keeps_its_oom_score_after_spawning(state_dir):
    """The agent's own score is not the child's: a child sharing the
    agent's memory that wrote 1000 would have given the agent 1000 too,
    had it not been a vfork child (a VM's agent, the guest's init, is
    spared by the kernel anyway).  Read from the host, where the jail's
    agent is visible, while its first command runs."""
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_RUN_DIR=RUN_DIR, FORGEBOX_STATE_DIR=state_dir)
    p = subprocess.Popen([FORGEBOX, "run", "--backend", "jail", "-q", "--", "sh", "-c",
                          "cat /proc/self/oom_score_adj; exec sleep 2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert p.stdout.readline() == b"1000\n"
        agents = [k for k in _descendants(p.pid)
                  if open(f"/proc/{k}/comm").read().strip() == "fb-agent"]
        assert len(agents) == 1, agents
        with open(f"/proc/{agents[0]}/oom_score_adj") as f:
            assert f.read().strip() in ("-1000", "0")
    finally:
        p.communicate(timeout=120)


def test_the_command_is_searched_on_the_path_it_gets(run, backend):
    """Session 7: with the default PATH the child searches the agent's own
    environment (the same PATH) and hands the command its env; a request's
    own PATH is searched instead.  nologin is only in /usr/sbin, which
    glibc's fallback (/bin:/usr/bin) would miss."""
    r = run(backend, "-q", "--", "nologin")
    assert r.rc == 1 and "not available" in r.stdout, r
    r = run(backend, "-q", "--", "sh", "-c", 'echo "$PATH"')
    assert r.stdout == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", r
    r = run(backend, "-q", "--env", "PATH=/nowhere", "--", "true")
    assert r.rc == 127 and "command not found" in r.stderr, r
    r = run(backend, "-q", "--env", "PATH=/usr/sbin", "--", "nologin")
    assert r.rc == 1 and "not available" in r.stdout, r
    r = run(backend, "-q", "--env", "PATH=/nowhere", "--", "/bin/sh", "-c", 'echo "$PATH"')
    assert r.rc == 0 and r.stdout == "/nowhere\n", r


def _ignore_signals_raw(*sigs):
    """preexec_fn: the given signals ignored through the system call itself
    (glibc, and so Python, refuse its own 32 and 33)."""
    def _pre():
        libc = ctypes.CDLL(None, use_errno=True)

        class KSigaction(ctypes.Structure):
            _fields_ = [("handler", ctypes.c_ulong), ("flags", ctypes.c_ulong),
                        ("restorer", ctypes.c_ulong), ("mask", ctypes.c_uint64)]
        ign = KSigaction(1, 0, 0, 0)  # SIG_IGN
        for s in sigs:
            if libc.syscall(ctypes.c_long(13), ctypes.c_long(s), ctypes.byref(ign),  # rt_sigaction
                            ctypes.c_void_p(0), ctypes.c_long(8)) != 0:
                os._exit(99)
    return _pre


def test_signals_the_manager_inherited_ignored_reach_no_command(state_dir):
    # execve keeps SIG_IGN: a `forgebox run` started by something that
    # ignores signals (here SIGUSR1, SIGPIPE and glibc's own 32 and 33, which
    # libc's signal() cannot reset) hands that to the jail's agent, which
    # must not hand it on to the command.
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_RUN_DIR=RUN_DIR, FORGEBOX_STATE_DIR=state_dir)
    p = subprocess.run([FORGEBOX, "run", "--backend", "jail", "-q", "--", "grep", "SigIgn", "/proc/self/status"],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                       preexec_fn=_ignore_signals_raw(10, 13, 32, 33))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "SigIgn:\t0000000000000000\n", p.stdout
    # Control: the launcher really ignored them (a process it starts directly shows it).
    p = subprocess.run(["grep", "SigIgn", "/proc/self/status"], capture_output=True, text=True,
                       preexec_fn=_ignore_signals_raw(10, 13, 32, 33))
    # (whatever this test's own runner ignores - nohup's SIGHUP, a shell's
    # background SIGINT and SIGQUIT - is inherited too: only ours are checked)
    ours = 0x180001200
    assert p.stdout.startswith("SigIgn:\t") and int(p.stdout.split()[1], 16) & ours == ours, p.stdout


def test_vm_bpf_jit_is_off_only_under_tcg(run):
    # Under TCG the agent turns the guest's BPF JIT off (each exec's filter
    # then runs in the interpreter instead of new JIT code TCG translates
    # again); under KVM it stays on.  The filter still refuses (above, and
    # the escape suite's VM half runs with this setting).
    r = run("vm", "-q", "--", "sh", "-c",
            "grep -m1 '^model name' /proc/cpuinfo; cat /proc/sys/net/core/bpf_jit_enable")
    assert r.rc == 0, r
    model, jit = r.stdout.splitlines()
    tcg = model.split(":", 1)[1].strip().startswith("QEMU TCG CPU ")
    assert jit == ("0" if tcg else "1"), r.stdout
    # The sysctl cannot be turned back on from inside (read-only /proc/sys).
    r = run("vm", "-q", "--", "sh", "-c", "echo 1 > /proc/sys/net/core/bpf_jit_enable")
    assert r.rc != 0 and "Read-only file system" in r.stderr, r


def test_vm_processes_keep_their_addresses_only_under_tcg(run):
    # Under TCG the guest kernel runs with norandmaps (src/sandbox/vm.c):
    # QEMU 7.2 finds translated code by its virtual address, so with ASLR
    # every new process's libc, ld.so and program were translated anew.
    # Two processes then map libc at the same address; under KVM the guest
    # keeps ASLR and they do not.
    r = run("vm", "-q", "--", "sh", "-c",
            "grep -m1 '^model name' /proc/cpuinfo; cat /proc/sys/kernel/randomize_va_space; "
            "for i in 1 2 3; do grep -m1 'libc.so' /proc/self/maps | cut -d- -f1; done")
    assert r.rc == 0, r
    model, aslr, *libc = r.stdout.splitlines()
    assert len(libc) == 3, r.stdout
    tcg = model.split(":", 1)[1].strip().startswith("QEMU TCG CPU ")
    assert aslr == ("0" if tcg else "2"), r.stdout
    assert len(set(libc)) == (1 if tcg else 3), r.stdout


def test_a_script_without_an_interpreter_line_runs_with_sh(run, backend, tmp_path):
    """Session 7 (fb-agent on musl): a file the kernel cannot execute
    (ENOEXEC: a script with no "#!" line) is run by /bin/sh, found by path
    or on PATH, as glibc's execvp does; musl's does not, so the agent built
    with musl searches PATH itself (exec.c, exec_search).  The search's
    other answers are kept: EACCES for a file that is not executable, 127
    for one found nowhere."""
    script = tmp_path / "noshebang"
    script.write_text('echo "ran by $0 with $1 $2"\n')
    script.chmod(0o755)
    plain = tmp_path / "plain"
    plain.write_text("echo no\n")
    plain.chmod(0o644)
    puts = ["--put", f"{script}:/workspace/noshebang", "--put", f"{plain}:/workspace/plain"]
    r = run(backend, "-q", *puts, "--", "/workspace/noshebang", "a", "b")
    assert r.rc == 0 and r.stdout == "ran by /workspace/noshebang with a b\n", r
    # The longest argv (FB_MAX_ARGV) through /bin/sh: the spawned child
    # builds sh's argv on its own stack (session 8).
    r = run(backend, "-q", *puts, "--", "/workspace/noshebang", *(["a"] * 4095))
    assert r.rc == 0 and r.stdout == "ran by /workspace/noshebang with a a\n", r
    r = run(backend, "-q", *puts, "--env", "PATH=/nowhere:/workspace", "--", "noshebang", "x", "y")
    assert r.rc == 0 and r.stdout == "ran by /workspace/noshebang with x y\n", r
    r = run(backend, "-q", *puts, "--env", "PATH=/workspace", "--", "plain")
    assert r.rc == 126 and "Permission denied" in r.stderr, r
    r = run(backend, "-q", *puts, "--env", "PATH=/workspace:/nowhere", "--", "absent")
    assert r.rc == 127 and "command not found" in r.stderr, r
