"""The sandbox stays in charge when its code fights back, and nothing
outlives a manager that is killed.

Uses build/fb-driver to run several commands in one sandbox (forgebox run
runs exactly one)."""
import glob
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import FORGEBOX, IMAGE, RUN_DIR, forgebox, leftovers

DRIVER = os.path.join(os.path.dirname(FORGEBOX), "fb-driver")

# Stops the next pids to be created, over and over: each new command's
# child is caught between its uid change and its exec.
STOPPER = ("import os, signal\n"
           "me = os.getpid()\n"
           "while True:\n"
           "    for p in range(me + 1, me + 64):\n"
           "        try: os.kill(p, signal.SIGSTOP)\n"
           "        except OSError: pass\n")


def drive(backend, timeout_s, *commands, state_dir):
    argv = [DRIVER, backend, str(timeout_s)]
    for i, cmd in enumerate(commands):
        if i:
            argv.append("---")
        argv += cmd
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir,
               FORGEBOX_RUN_DIR=RUN_DIR)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300)
    return p.returncode, [json.loads(l) for l in p.stdout.decode().splitlines()], p.stderr.decode()


def test_stopping_every_process_cannot_freeze_the_agent(backend, state_dir):
    """An escaped process SIGSTOPs everything of the tool user, including
    each new command between its uid change and its exec.  The agent must
    still enforce timeouts and answer every request."""
    rc, results, err = drive(backend, 3,
                             ["sh", "-c", f"setsid python3 -c '{STOPPER}' >/dev/null 2>&1 & sleep 0.5"],
                             ["echo", "second"],
                             ["echo", "third"],
                             state_dir=state_dir)
    assert rc == 0, err
    assert len(results) == 3
    for r in results:
        assert r["rc"] == 0, r               # the sandbox answered
        # each command either ran or was stopped and then killed on time
        assert (r["code"] == 0 and not r["timed_out"]) or r["timed_out"], r


# Stops every process of the tool user, over and over (kill(-1)).
STOP_ALL = ("import os, signal\n"
            "while True:\n"
            "    try: os.kill(-1, signal.SIGSTOP)\n"
            "    except OSError: pass\n")


def test_a_child_stopped_before_its_exec_is_killed_by_its_watchdog(backend, state_dir):
    """Session 8: the agent sleeps while a command's child runs up to its
    execve (vfork).  A leftover stopping every process of the tool user
    catches some children between their uid change and execve; their
    watchdog (5 s, below the commands' 8 s timeout; 0.5 s after a hold)
    kills them and the
    agent answers "stopped before it started"; commands stopped after
    their execve time out.  Without the watchdog the agent would sleep
    until the host gave the sandbox up.  (In a jail on Linux >= 6.12
    Landlock's signal scope keeps the leftover from signalling new
    commands at all: they run.)"""
    rc, results, err = drive(backend, 8,
                             ["sh", "-c", f"setsid python3 -c '{STOP_ALL}' >/dev/null 2>&1 </dev/null & sleep 0.5"],
                             ["python3", "-c", "pass"],
                             ["/bin/true"], ["/bin/true"], ["/bin/true"],
                             state_dir=state_dir)
    assert rc == 0, err
    assert len(results) == 5
    for r in results:
        assert r["rc"] == 0, r               # the sandbox answered
        stopped_before = (not r["started"] and r["code"] == 125
                          and r["error"].startswith("the command was stopped before it started"))
        assert (r["code"] == 0 and not r["timed_out"]) or r["timed_out"] or stopped_before, r


def test_many_commands_in_one_sandbox(state_dir):
    cmds = [["sh", "-c", f"echo {i} > /workspace/f{i}; cat /workspace/f*| wc -l"] for i in range(20)]
    rc, results, err = drive("jail", 10, *cmds, state_dir=state_dir)
    assert rc == 0, err
    assert [r["stdout"] for r in results] == [f"{i + 1}\n" for i in range(20)]


@pytest.mark.parametrize("backend_name", ["jail", "vm"])
def test_killed_manager_leaves_nothing_running(backend_name, state_dir):
    """kill -9 of `forgebox run`: the sandbox dies with it (parent-death
    signal), and the next start cleans up the runtime dir and cgroup the
    dead manager could not."""
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir,
               FORGEBOX_RUN_DIR=RUN_DIR)
    p = subprocess.Popen([FORGEBOX, "run", "-q", "--backend", backend_name, "--", "sh", "-c",
                          "echo up; sleep 300"], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env)
    assert p.stdout.readline() == b"up\n"
    sid = [d for d in os.listdir(RUN_DIR) if d.startswith("sb-")]
    assert len(sid) == 1
    sid = sid[0]
    cg = glob.glob(f"/sys/fs/cgroup/*/forgebox/{sid}") + glob.glob(f"/sys/fs/cgroup/forgebox/{sid}")
    assert cg, "the sandbox has a cgroup"
    p.kill()
    p.wait()
    # Everything in the sandbox's cgroup dies with the manager.
    procs = cg[0] + "/cgroup.procs"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and open(procs).read().strip():
        time.sleep(0.1)
    assert open(procs).read().strip() == "", "sandbox processes outlived their manager"
    # The next sandbox sweeps the orphan's leftovers.
    r = forgebox("run", "--backend", "jail", "--", "true", state=state_dir)
    assert r.rc == 0, r
    assert f"cleaned up orphaned sandbox {sid}" in r.err.decode()
    assert not os.path.exists(os.path.join(RUN_DIR, sid))
    assert not any(os.path.exists(c) for c in cg)
