"""Limits end cleanly: memory, processes, disk, output and wall clock.

Each limit is hit on purpose; the test asserts the exact outcome (exit code
and one-line reason), that a sandbox running alongside is unaffected, and
(through conftest's autouse fixture) that nothing is left on the host.
"""
import os
import subprocess

import pytest

from conftest import EXIT_OOM, EXIT_TIMEOUT, FORGEBOX, IMAGE

HOG = ("x = []\n"
       "while True:\n"
       "    x.append(bytearray(8 << 20))\n")


def start_bystander(state_dir, backend="jail"):
    """A sandbox doing honest work while another one misbehaves."""
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir)
    return subprocess.Popen([FORGEBOX, "run", "-q", "--backend", backend, "--", "sh", "-c",
                             "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)


def assert_bystander_ok(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out == b"".join(b"tick %d\n" % i for i in range(1, 7))


def test_memory_hog_is_oom_killed(run, backend, state_dir):
    other = start_bystander(state_dir)
    r = run(backend, "--memory", "256", "--", "python3", "-c", HOG)
    assert r.rc == EXIT_OOM, r
    assert r.stderr == "forgebox: out of memory: the command was killed at the 256 MiB limit\n"
    assert_bystander_ok(other)
    # The same backend serves the next sandbox normally.
    assert run(backend, "--", "echo", "after").stdout == "after\n"


def test_oom_in_a_child_is_not_the_whole_story(run):
    """A hog killed inside a shell script: the script goes on and exits 0,
    so the outcome is the script's, not an OOM verdict."""
    r = run("jail", "--memory", "256", "--", "sh", "-c",
            f"python3 -c '{HOG}'; echo survived $?")
    assert r.rc == 0, r
    assert r.stdout == "survived 137\n"


def test_fork_bomb_stops_at_pids_limit(run, backend):
    code = ("import os, time\n"
            "n = 0\n"
            "try:\n"
            "    while True:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(60)\n"
            "            os._exit(0)\n"
            "        n += 1\n"
            "except OSError as e:\n"
            "    print('stopped', e.errno, n < 64)\n")
    r = run(backend, "--pids", "64", "--", "python3", "-c", code)
    assert r.rc == 0, r
    assert r.stdout == "stopped 11 True\n"   # EAGAIN, below the limit


def test_shell_fork_bomb_is_contained(run, backend, state_dir):
    other = start_bystander(state_dir)
    r = run(backend, "--pids", "64", "--timeout", "5", "--", "bash", "-c",
            "bomb() { bomb | bomb & }; bomb; sleep 30")
    # Either the wall clock or the shell giving up ends it; never the host.
    assert r.rc in (EXIT_TIMEOUT, 0, 1, 2, 126, 128 + 9), r
    assert_bystander_ok(other)
    assert run(backend, "--", "echo", "after").stdout == "after\n"


def test_disk_fill_stops_at_workspace_size(run, backend):
    r = run(backend, "--disk", "16", "--", "sh", "-c",
            "dd if=/dev/zero of=/workspace/fill bs=1M count=100 2>&1 | grep -o 'No space left on device'; "
            "du -m /workspace/fill | cut -f1")
    assert r.rc == 0, r
    lines = r.stdout.split()
    assert lines[0:5] == ["No", "space", "left", "on", "device"]
    assert 14 <= int(lines[5]) <= 16


def test_tmp_is_size_limited_too(run):
    r = run("jail", "--", "sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1 | grep -o 'No space left on device' >&2; "
            "du -m /tmp/fill | cut -f1")
    assert "No space left on device" in r.stderr
    assert int(r.stdout) <= 64


def test_output_flood_is_cut_with_marker(run, backend):
    r = run(backend, "--max-output", "100000", "--", "sh", "-c",
            "head -c 5000000 /dev/zero | tr '\\0' a; echo done >&2")
    assert r.rc == 0, r
    marker = b"\n[forgebox: output truncated: limit of 100000 bytes reached]\n"
    assert r.out == b"a" * 100000 + marker
    # The cap covers both streams: nothing after it, not even stderr.
    assert r.stderr == ""


def test_endless_output_is_cut_and_timed_out(run):
    r = run("jail", "--max-output", "4096", "--timeout", "3", "--", "yes")
    assert r.rc == EXIT_TIMEOUT, r
    assert r.out.startswith(b"y\n" * 2048)
    assert r.out.endswith(b"[forgebox: output truncated: limit of 4096 bytes reached]\n")
    assert len(r.out) < 4096 + 100


def test_wall_clock_overrun_is_killed(run, backend):
    r = run(backend, "--timeout", "2", "--", "sh", "-c", "echo begin; sleep 100 & sleep 100")
    assert r.rc == EXIT_TIMEOUT, r
    assert r.stdout == "begin\n"
    assert r.stderr == "forgebox: timed out: the command ran longer than 2 s and was killed\n"


def test_background_children_die_with_the_command(run):
    # The command returns at once; its background child must not keep the
    # exec (and its pipes) alive.
    r = run("jail", "--timeout", "60", "--", "sh", "-c", "sleep 50 & echo parent-done")
    assert r.rc == 0, r
    assert r.stdout == "parent-done\n"
