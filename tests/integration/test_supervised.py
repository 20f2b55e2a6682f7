"""Supervised sandboxes in real jails: several execs at once in one sandbox,
and a kill that ends every exec in flight with its typed error.

Uses build/fb-driver --parallel (the async exec API of src/sandbox)."""
import json
import os
import subprocess
import time

from conftest import FORGEBOX, IMAGE, RUN_DIR, leftovers, settled_leftovers

DRIVER = os.path.join(os.path.dirname(FORGEBOX), "fb-driver")


def drive(*flags, commands, timeout_s=20, state_dir):
    argv = [DRIVER, *flags, "jail", str(timeout_s)]
    for i, cmd in enumerate(commands):
        if i:
            argv.append("---")
        argv += cmd
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir,
               FORGEBOX_RUN_DIR=RUN_DIR)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
    return p.returncode, [json.loads(l) for l in p.stdout.decode().splitlines()], p.stderr.decode()


def test_execs_run_at_the_same_time(state_dir):
    # The first command waits for a file only the second creates: run one
    # after the other, the first would time out.
    wait_for_b = "for i in $(seq 100); do [ -e /tmp/b ] && { echo a-saw-b; exit 0; }; sleep 0.05; done; exit 9"
    rc, results, err = drive("--parallel", state_dir=state_dir, timeout_s=10, commands=[
        ["sh", "-c", wait_for_b],
        ["sh", "-c", "touch /tmp/b; echo b"],
        ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x | wc -c"],
    ])
    assert rc == 0, err
    assert [r["code"] for r in results] == [0, 0, 0], results
    assert results[0]["stdout"] == "a-saw-b\n"
    assert results[1]["stdout"] == "b\n"
    assert results[2]["stdout"].strip() == "3000000"


def test_kill_ends_every_exec_in_flight(state_dir):
    before = leftovers()  # another manager's on this host are not this test's
    t0 = time.monotonic()
    rc, results, err = drive("--parallel", "--kill-after", "500", state_dir=state_dir, timeout_s=60,
                             commands=[["sleep", "50"], ["sh", "-c", "echo started; sleep 50"],
                                       ["sleep", "50"]])
    assert time.monotonic() - t0 < 20
    assert rc == 1, err
    assert len(results) == 3
    for r in results:
        assert r["rc"] == -1, r
        assert r["errc"] == "killed", r
        assert "was killed" in r["error"], r
    assert settled_leftovers(before) == []
